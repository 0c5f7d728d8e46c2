//! What the CLI prints on stdout: the lslocks-like table, ages, and the `out` helper.

use std::io::{self, Write};

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
use locksmith_api::{format_age, state_name};
use locksmith_core::{HolderView, ResourceView};
use serde::Serialize;

/// Writes `text` and a newline to stdout, and flushes (tests and scripts read it at once).
pub fn out(text: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{text}")?;
    stdout.flush()
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
}

impl Column {
    /// Every column, in the order `--help` lists them.
    pub const ALL: [Column; 13] = [
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
                _ => "-".to_string(),
            };
        };
        match self {
            Column::Resource => view.resource.clone(),
            Column::State => if h.stale { "STALE" } else { "HOT" }.to_string(),
            Column::Owner => h.owner.user.clone(),
            Column::Node => h.owner.node.clone(),
            Column::Pid => h.owner.pid.to_string(),
            Column::Token => h.token.to_string(),
            Column::Age => format_age(now_ms.saturating_sub(h.granted_at_ms)),
            Column::TtlLeft => format_age(h.ttl_left_ms),
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

#[cfg(test)]
mod tests {
    use super::*;
    use locksmith_core::{FenceToken, LeaseId, LockState, Owner, WaiterView};

    const NOW: u64 = 1_000_000_000;

    fn owner(user: &str, pid: u32) -> Owner {
        Owner {
            node: "node-7".into(),
            pid,
            start_time: 1,
            boot_id: "b".into(),
            user: user.into(),
            purpose: "deploy".into(),
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
        }
    }

    fn free() -> ResourceView {
        ResourceView {
            resource: "aim_lock_config.conf".into(),
            state: LockState::Free,
            slots: 1,
            holders: vec![],
            waiters: vec![],
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
}
