//! What the CLI prints on stdout: the lslocks-like table, ages, and the `out` helper.

use std::io::{self, Write};

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
use locksmith_api::{
    expires, fleetlock, format_age, format_wall, owner_name, state_name, ttl_left,
};
use locksmith_core::{
    AuditKind, AuditRecord, EndCause, HoldState, HolderView, LockState, ResourceView,
};
use serde::Serialize;

/// Writes `text` and a newline to stdout, and flushes (tests and scripts read it at once).
pub fn out(text: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{text}")?;
    stdout.flush()
}

/// Writes `text` and a newline to stderr: a progress note that is not the command's answer.
pub fn note(text: &str) -> io::Result<()> {
    let mut stderr = io::stderr().lock();
    writeln!(stderr, "{text}")?;
    stderr.flush()
}

/// Writes `value` as pretty JSON to stdout.
pub fn out_json(value: &impl Serialize) -> anyhow::Result<()> {
    out(&serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// A column of `locksmith locks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Resource,
    State,
    Owner,
    Node,
    Pid,
    Token,
    Age,
    TtlLeft,
    LastHeartbeat,
    Waiters,
    Slots,
    Lease,
    Purpose,
    Hold,
}

impl Column {
    /// Every column, in the order `--help` lists them.
    pub const ALL: [Column; 14] = [
        Column::Resource,
        Column::State,
        Column::Owner,
        Column::Node,
        Column::Pid,
        Column::Token,
        Column::Age,
        Column::TtlLeft,
        Column::LastHeartbeat,
        Column::Waiters,
        Column::Slots,
        Column::Lease,
        Column::Purpose,
        Column::Hold,
    ];

    /// The columns shown without `--output`.
    pub const DEFAULT: [Column; 11] = [
        Column::Resource,
        Column::State,
        Column::Owner,
        Column::Node,
        Column::Pid,
        Column::Token,
        Column::Age,
        Column::TtlLeft,
        Column::LastHeartbeat,
        Column::Waiters,
        Column::Slots,
    ];

    /// The header, which is also the name `--output` takes.
    pub fn header(self) -> &'static str {
        match self {
            Column::Resource => "RESOURCE",
            Column::State => "STATE",
            Column::Owner => "OWNER",
            Column::Node => "NODE",
            Column::Pid => "PID",
            Column::Token => "TOKEN",
            Column::Age => "AGE",
            Column::TtlLeft => "TTL LEFT",
            Column::LastHeartbeat => "LAST HEARTBEAT",
            Column::Waiters => "WAITERS",
            Column::Slots => "SLOTS",
            Column::Lease => "LEASE",
            Column::Purpose => "PURPOSE",
            Column::Hold => "HOLD",
        }
    }

    fn numeric(self) -> bool {
        matches!(
            self,
            Column::Pid | Column::Token | Column::Waiters | Column::Slots | Column::Lease
        )
    }

    /// One cell: `holder` is `None` on the row of a resource nobody holds.
    fn cell(self, view: &ResourceView, holder: Option<&HolderView>, now_ms: u64) -> String {
        let Some(h) = holder else {
            return match self {
                Column::Resource => view.resource.clone(),
                Column::State => state_name(view.state).to_string(),
                Column::Waiters => view.waiters.len().to_string(),
                Column::Slots => format!("0/{}", view.slots),
                Column::Hold => holds_cell(view),
                _ => "-".to_string(),
            };
        };
        match self {
            Column::Resource => view.resource.clone(),
            // A hold in force is what an acquirer runs into first, whatever the holder's health.
            Column::State if view.state == LockState::Frozen => "FROZEN".to_string(),
            Column::State => if h.stale { "STALE" } else { "HOT" }.to_string(),
            Column::Hold => holds_cell(view),
            Column::Owner => h.owner.user.clone(),
            Column::Node => h.owner.node.clone(),
            // A FleetLock holder is a client id, not a process: its pid is a placeholder.
            Column::Pid if fleetlock::is_client(&h.owner) => "-".to_string(),
            Column::Pid => h.owner.pid.to_string(),
            Column::Token => h.token.to_string(),
            Column::Age => format_age(now_ms.saturating_sub(h.granted_at_ms)),
            Column::TtlLeft => ttl_left(h),
            // Nor does it heartbeat: with no TTL, the time it last asked tells nothing.
            Column::LastHeartbeat if fleetlock::is_client(&h.owner) && !expires(h) => {
                "-".to_string()
            }
            Column::LastHeartbeat => {
                format!(
                    "{} ago",
                    format_age(now_ms.saturating_sub(h.last_heartbeat_ms))
                )
            }
            Column::Waiters => view.waiters.len().to_string(),
            Column::Slots => format!("{}/{}", view.holders.len(), view.slots),
            Column::Lease => h.lease.to_string(),
            Column::Purpose => h.owner.purpose.clone(),
        }
    }
}

/// The HOLD cell: `12`, `12(pending)`, `12,13(pending)`, or `-`.
fn holds_cell(view: &ResourceView) -> String {
    if view.holds.is_empty() {
        return "-".to_string();
    }
    view.holds
        .iter()
        .map(|h| match h.state {
            HoldState::Active => h.record.hold.to_string(),
            HoldState::PendingAck => format!("{}(pending)", h.record.hold),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses one `--output` column name, case-insensitively; `-`, `_` and spaces are alike
/// (`ttl-left`, `TTL_LEFT` and `"ttl left"` all name TTL LEFT).
pub fn parse_column(name: &str) -> Result<Column, String> {
    let wanted = normalize(name);
    Column::ALL
        .into_iter()
        .find(|c| normalize(c.header()) == wanted)
        .ok_or_else(|| {
            let known: Vec<&str> = Column::ALL.iter().map(|c| c.header()).collect();
            format!(
                "unknown column {name:?}; known columns: {}",
                known.join(", ")
            )
        })
}

fn normalize(name: &str) -> String {
    name.trim()
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// The table of `locksmith locks`: one row per holder (a semaphore with three holders has three
/// rows), one row for a resource nobody holds. Ages are computed against `now_ms`, the server's
/// clock, so they do not depend on this machine's.
pub fn locks_table(views: &[ResourceView], now_ms: u64, columns: &[Column]) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(columns.iter().map(|c| c.header()));
    for view in views {
        let holders: Vec<Option<&HolderView>> = if view.holders.is_empty() {
            vec![None]
        } else {
            view.holders.iter().map(Some).collect()
        };
        for holder in holders {
            table.add_row(columns.iter().map(|c| c.cell(view, holder, now_ms)));
        }
    }
    for (column, kind) in table.column_iter_mut().zip(columns) {
        // lslocks style: no left margin, two spaces between columns, numbers right-aligned.
        column.set_padding((0, 2));
        if kind.numeric() {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table.trim_fmt()
}

/// The columns of `locksmith audit`. `BY` is the authenticated principal whose request caused
/// the record (`alice (tok-3)`); `-` for what the server did on its own or with `--auth off`.
const AUDIT_HEADER: [&str; 8] = [
    "TIME",
    "EVENT",
    "RESOURCE",
    "LEASE",
    "TOKEN",
    "OWNER/OPERATOR",
    "BY",
    "REASON/CAUSE",
];

/// The cells of one audit record, in [`AUDIT_HEADER`] order.
fn audit_cells(r: &AuditRecord) -> [String; 8] {
    [
        format_wall(r.at_ms),
        r.label().to_string(),
        r.resource.clone(),
        r.lease.map_or_else(|| "-".to_string(), |l| l.to_string()),
        r.token.map_or_else(|| "-".to_string(), |t| t.to_string()),
        who(r),
        r.principal
            .as_ref()
            .map_or_else(|| "-".to_string(), ToString::to_string),
        why(r),
    ]
}

/// Who acted: the operator for holds and breaks, else the lease's owner.
pub fn who(r: &AuditRecord) -> String {
    match (&r.operator, &r.owner) {
        (Some(op), _) => op.clone(),
        (None, Some(owner)) => owner_name(owner),
        (None, None) => "-".to_string(),
    }
}

/// Why: the operator's reason, else what ended the lease, with the hold concerned.
pub fn why(r: &AuditRecord) -> String {
    let mut parts = Vec::new();
    if let Some(hold) = r.hold {
        parts.push(format!("hold {hold}"));
    }
    if let Some(reason) = &r.reason {
        parts.push(format!("{reason:?}"));
    } else if let AuditKind::Ended { cause } = &r.kind {
        match cause {
            EndCause::Expired => parts.push("no heartbeat within its TTL".to_string()),
            EndCause::NodeRebooted { new_boot_id } => {
                parts.push(format!("node rebooted (new boot id {new_boot_id})"));
            }
            EndCause::ProcessDied { reported_by } => {
                parts.push(format!("holder process died (reported by {reported_by})"));
            }
            EndCause::Broken { by, reason } => parts.push(format!("broken by {by}: {reason:?}")),
            EndCause::Released | EndCause::Unknown => {}
        }
    } else if let AuditKind::Domain(event) = &r.kind {
        if let Some(detail) = compact_detail(&event.detail) {
            parts.push(detail);
        }
    }
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(" ")
    }
}

/// A domain event's detail on one line: its compact JSON, cut at 100 characters; `None` when
/// there is none (`null`, `{}`).
fn compact_detail(detail: &serde_json::Value) -> Option<String> {
    const MAX: usize = 100;
    match detail {
        serde_json::Value::Null => return None,
        serde_json::Value::Object(fields) if fields.is_empty() => return None,
        _ => {}
    }
    let text = detail.to_string();
    Some(match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    })
}

/// The table of `locksmith audit`, oldest first.
pub fn audit_table(records: &[AuditRecord]) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(AUDIT_HEADER);
    for r in records {
        table.add_row(audit_cells(r));
    }
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, 2));
        if matches!(i, 3 | 4) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table.trim_fmt()
}

/// One audit record on one line, for `watch` and `why`'s history:
/// `2026-11-23T03:12:00Z  broke  res  lease 7  token 43  alice  by alice (tok-3)  "clearing"`.
pub fn audit_line(r: &AuditRecord) -> String {
    let mut parts = vec![
        format_wall(r.at_ms),
        r.label().to_string(),
        r.resource.clone(),
    ];
    if let Some(l) = r.lease {
        parts.push(format!("lease {l}"));
    }
    if let Some(t) = r.token {
        parts.push(format!("token {t}"));
    }
    parts.push(who(r));
    if let Some(by) = &r.principal {
        parts.push(format!("by {by}"));
    }
    let why = why(r);
    if why != "-" {
        parts.push(why);
    }
    parts.join("  ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use locksmith_core::{FenceToken, HoldId, HoldRecord, HoldView, LeaseId, Owner, WaiterView};

    const NOW: u64 = 1_000_000_000;

    fn owner(user: &str, pid: u32) -> Owner {
        Owner {
            node: "node-7".into(),
            pid,
            start_time: 1,
            boot_id: "b".into(),
            user: user.into(),
            purpose: "deploy".into(),
            pid_ns: None,
        }
    }

    fn holder(user: &str, pid: u32, token: u64) -> HolderView {
        HolderView {
            lease: LeaseId(token),
            token: FenceToken(token),
            owner: owner(user, pid),
            granted_at_ms: NOW - 90_000,
            last_heartbeat_ms: NOW - 2_000,
            ttl_ms: 15_000,
            ttl_left_ms: 13_000,
            stale: false,
        }
    }

    fn semaphore() -> ResourceView {
        ResourceView {
            resource: "reboot/default".into(),
            state: LockState::Hot,
            slots: 3,
            holders: vec![holder("a", 10, 1), holder("b", 11, 2), holder("c", 12, 3)],
            waiters: vec![WaiterView {
                owner: owner("d", 13),
                waiting_since_ms: NOW,
            }],
            holds: vec![],
            delay_left_ms: 0,
        }
    }

    fn free() -> ResourceView {
        ResourceView {
            resource: "aim_lock_config.conf".into(),
            state: LockState::Free,
            slots: 1,
            holders: vec![],
            waiters: vec![],
            holds: vec![],
            delay_left_ms: 0,
        }
    }

    fn hold(id: u64, state: HoldState) -> HoldView {
        HoldView {
            record: HoldRecord {
                hold: HoldId(id),
                resource: "aim_lock_config.conf".into(),
                reason: "clearing a stale lock".into(),
                by: "alice@ops".into(),
                placed_at_ms: NOW,
                duration_ms: 90_000,
                require_ack: state == HoldState::PendingAck,
                acked_by: None,
                active_since_ms: (state == HoldState::Active).then_some(NOW),
            },
            state,
            ends_in_ms: 90_000,
        }
    }

    #[test]
    fn columns_parse_case_insensitively_with_any_separator() {
        assert_eq!(parse_column("pid"), Ok(Column::Pid));
        assert_eq!(parse_column("Resource"), Ok(Column::Resource));
        assert_eq!(parse_column("ttl-left"), Ok(Column::TtlLeft));
        assert_eq!(parse_column("TTL_LEFT"), Ok(Column::TtlLeft));
        assert_eq!(parse_column("last heartbeat"), Ok(Column::LastHeartbeat));
        let err = parse_column("size").expect_err("unknown");
        assert!(err.contains("RESOURCE, STATE"), "{err}");
    }

    #[test]
    fn a_semaphore_shows_one_row_per_holder() {
        let text = locks_table(&[semaphore()], NOW, &Column::DEFAULT);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("RESOURCE"), "{text}");
        for (line, user) in lines[1..].iter().zip(["a", "b", "c"]) {
            let cells: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cells[0], "reboot/default");
            assert_eq!(cells[1], "HOT");
            assert_eq!(cells[2], user);
            assert!(line.contains("1m30s"), "age: {line}");
            assert!(line.contains("2s ago"), "heartbeat: {line}");
            assert_eq!(
                cells[cells.len() - 2..],
                ["1", "3/3"],
                "waiters, slots: {line}"
            );
        }
    }

    #[test]
    fn a_free_resource_shows_one_free_row() {
        let text = locks_table(&[free()], NOW, &Column::DEFAULT);
        let row = text.lines().nth(1).expect("a row");
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[..3], ["aim_lock_config.conf", "FREE", "-"]);
        assert!(row.ends_with("0/1"), "{row}");
    }

    #[test]
    fn output_picks_and_orders_columns() {
        let cols: Vec<Column> = ["pid", "Resource", "token"]
            .iter()
            .map(|c| parse_column(c).expect("column"))
            .collect();
        let text = locks_table(&[semaphore()], NOW, &cols);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[0], ["PID", "RESOURCE", "TOKEN"]);
        assert_eq!(lines[1], ["10", "reboot/default", "1"]);
        assert_eq!(lines[3], ["12", "reboot/default", "3"]);
    }

    /// Bug pinned (issue 15, item 16): a FleetLock holder showed `TTL LEFT 36499d23h`, pid 1
    /// and a heartbeat age, as if it were a process with a century-long lease.
    #[test]
    fn a_fleetlock_holder_shows_no_pid_ttl_or_heartbeat() {
        let mut view = semaphore();
        view.holders.truncate(1);
        view.holders[0].owner = fleetlock::owner("c0ffee", "default");
        view.holders[0].ttl_ms = locksmith_core::NO_EXPIRY_TTL_MS;
        view.holders[0].ttl_left_ms = locksmith_core::NO_EXPIRY_TTL_MS - 90_000;
        let text = locks_table(&[view.clone()], NOW, &Column::DEFAULT);
        let row = text.lines().nth(1).expect("a row");
        let cells: Vec<&str> = row.split_whitespace().collect();
        // RESOURCE STATE OWNER NODE PID TOKEN AGE TTL-LEFT LAST-HEARTBEAT WAITERS SLOTS
        assert_eq!(
            cells,
            [
                "reboot/default",
                "HOT",
                "fleetlock",
                "c0ffee",
                "-",
                "1",
                "1m30s",
                "-",
                "-",
                "1",
                "1/3"
            ],
            "{text}"
        );
        // With --fleetlock-stale-after the slot has a TTL, shown like any other.
        view.holders[0].ttl_ms = 7_200_000;
        view.holders[0].ttl_left_ms = 3_600_000;
        let text = locks_table(
            &[view],
            NOW,
            &[Column::Pid, Column::TtlLeft, Column::LastHeartbeat],
        );
        assert_eq!(
            text.lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>()),
            Some(vec!["-", "1h00m", "2s", "ago"])
        );
    }

    #[test]
    fn a_stale_holder_reads_stale() {
        let mut view = semaphore();
        view.holders[1].stale = true;
        let text = locks_table(&[view], NOW, &[Column::Owner, Column::State]);
        let states: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
            .collect();
        assert_eq!(states, ["HOT", "STALE", "HOT"]);
    }

    #[test]
    fn a_frozen_resource_reads_frozen_and_shows_its_holds() {
        let mut view = free();
        view.state = LockState::Frozen;
        view.holds = vec![hold(12, HoldState::Active), hold(13, HoldState::PendingAck)];
        let text = locks_table(
            &[view.clone()],
            NOW,
            &[Column::Resource, Column::State, Column::Hold],
        );
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0], ["RESOURCE", "STATE", "HOLD"]);
        assert_eq!(
            rows[1],
            ["aim_lock_config.conf", "FROZEN", "12,13(pending)"]
        );
        assert_eq!(rows.len(), 2, "{text}");

        // Its holder keeps the lease, and its row reads FROZEN too.
        view.holders = vec![holder("a", 10, 1)];
        let text = locks_table(&[view], NOW, &[Column::State, Column::Owner]);
        assert_eq!(
            text.lines()
                .nth(1)
                .map(str::split_whitespace)
                .map(Iterator::collect::<Vec<_>>),
            Some(vec!["FROZEN", "a"])
        );

        // HOLD is not in the default set.
        assert!(!Column::DEFAULT.contains(&Column::Hold));
        assert_eq!(parse_column("hold"), Ok(Column::Hold));
    }

    #[test]
    fn a_delayed_resource_reads_delayed() {
        let mut view = free();
        view.state = LockState::Delayed;
        view.delay_left_ms = 3_000;
        let text = locks_table(&[view], NOW, &[Column::State]);
        assert_eq!(text.lines().nth(1), Some("DELAYED"));
    }

    #[test]
    fn audit_rows_name_who_and_why() {
        let broke = AuditRecord {
            seq: 9,
            at_ms: 0,
            lease: Some(LeaseId(7)),
            token: Some(FenceToken(43)),
            operator: Some("alice@ops".into()),
            reason: Some("clearing a stale lock".into()),
            hold: Some(HoldId(12)),
            ..AuditRecord::new("res", AuditKind::Broke)
        };
        assert_eq!(
            audit_line(&broke),
            "1970-01-01T00:00:00Z  broke  res  lease 7  token 43  alice@ops  hold 12 \"clearing a stale lock\""
        );
        let died = AuditRecord {
            lease: Some(LeaseId(7)),
            owner: Some(owner("tester", 4121)),
            ..AuditRecord::new(
                "res",
                AuditKind::Ended {
                    cause: EndCause::ProcessDied {
                        reported_by: "bob".into(),
                    },
                },
            )
        };
        assert_eq!(
            audit_line(&died),
            "1970-01-01T00:00:00Z  process_died  res  lease 7  tester@node-7 (pid 4121)  holder process died (reported by bob)"
        );
        let table = audit_table(&[broke, died]);
        let header: Vec<&str> = table
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        assert_eq!(
            header,
            [
                "TIME",
                "EVENT",
                "RESOURCE",
                "LEASE",
                "TOKEN",
                "OWNER/OPERATOR",
                "BY",
                "REASON/CAUSE"
            ]
        );
        assert_eq!(table.lines().count(), 3, "{table}");
    }

    /// Issue 17: `audit` and `watch` name the authenticated principal that caused a record.
    #[test]
    fn audit_rows_name_the_principal_that_caused_them() {
        let held = AuditRecord {
            lease: Some(LeaseId(7)),
            owner: Some(owner("tester", 4121)),
            principal: Some(locksmith_core::AuditPrincipal {
                token: "tok-3".into(),
                name: "ci-runner".into(),
            }),
            ..AuditRecord::new("res", AuditKind::Granted)
        };
        assert_eq!(
            audit_line(&held),
            "1970-01-01T00:00:00Z  granted  res  lease 7  tester@node-7 (pid 4121)  by ci-runner (tok-3)"
        );
        let table = audit_table(&[held]);
        let row = table.lines().nth(1).unwrap_or("");
        assert!(row.contains("ci-runner (tok-3)"), "{table}");
    }

    /// `audit` and `watch` show another domain's event by its kind, with its detail compact.
    #[test]
    fn a_domain_event_shows_its_kind_and_compact_detail() {
        let event = |detail: serde_json::Value| {
            let event = locksmith_core::DomainEvent::new("config_written", detail)
                .unwrap_or_else(|e| panic!("{e}"));
            AuditRecord {
                operator: Some("alice".into()),
                ..AuditRecord::new("fleet/app.conf", AuditKind::Domain(event))
            }
        };
        assert_eq!(
            audit_line(&event(serde_json::json!({"revision": 4}))),
            "1970-01-01T00:00:00Z  config_written  fleet/app.conf  alice  {\"revision\":4}"
        );
        assert_eq!(
            audit_line(&event(serde_json::Value::Null)),
            "1970-01-01T00:00:00Z  config_written  fleet/app.conf  alice"
        );
        let long = why(&event(serde_json::json!({"text": "é".repeat(200)})));
        assert_eq!(long.chars().count(), 101, "{long}");
        assert!(long.ends_with('…'));
    }
}
