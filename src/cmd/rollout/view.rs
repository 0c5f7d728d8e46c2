//! How a rollout reads: the words for its phase, outcome and endpoint states, the summary
//! header of `rollout status`, the per-endpoint table, and the landing list (where every
//! endpoint is left) that `abort` and the end of `status --watch` print.

use std::fmt::Write as _;

use comfy_table::{ContentArrangement, Table, presets};
use locksmith_api::format_age;
use locksmith_api::rollouts::{
    HoldAfter, Landing, NodeStatus, Outcome, OutcomeKind, RolloutEndpoint, RolloutPhase,
    RolloutView,
};

/// Up to this many endpoints, `status` lists them all; past it, only those not `applied`
/// (`--all`: all), so a large fleet's table shows what needs a look.
pub const FULL_TABLE_UP_TO: usize = 20;

pub fn phase_word(phase: RolloutPhase) -> &'static str {
    match phase {
        RolloutPhase::Queued => "queued",
        RolloutPhase::Running => "running",
        RolloutPhase::Ended => "ended",
        RolloutPhase::Cancelled => "cancelled",
    }
}

pub fn outcome_word(kind: OutcomeKind) -> &'static str {
    match kind {
        OutcomeKind::Succeeded => "SUCCEEDED",
        OutcomeKind::RolledBack => "ROLLED BACK",
        OutcomeKind::Frozen => "FROZEN",
        OutcomeKind::Aborted => "ABORTED",
    }
}

pub fn status_word(status: &NodeStatus) -> &'static str {
    match status {
        NodeStatus::Planned => "planned",
        NodeStatus::WaitingWindow => "waiting-window",
        NodeStatus::Offline => "offline",
        NodeStatus::Sent => "sent",
        NodeStatus::Deferred => "deferred",
        NodeStatus::Applied => "applied",
        NodeStatus::Failed { refused: false } => "failed",
        NodeStatus::Failed { refused: true } => "refused",
        NodeStatus::Restoring => "restoring",
        NodeStatus::Restored => "restored",
    }
}

/// `queued`, `running`, `cancelled`, or the outcome once it ended (`ROLLED BACK`).
pub fn state_cell(view: &RolloutView) -> String {
    match (&view.outcome, view.phase) {
        (Some(o), RolloutPhase::Ended) => outcome_word(o.kind).to_string(),
        (_, phase) => phase_word(phase).to_string(),
    }
}

/// `revision 4` or `revision 4 (sent as 7)`: the rolled revision is `rev` re-written under
/// the rollout's own lease, so its fencing token is the rollout's.
pub fn revision(view: &RolloutView) -> String {
    match view.rolled_rev {
        Some(rolled) if rolled != view.rev => format!("revision {} (sent as {rolled})", view.rev),
        _ => format!("revision {}", view.rev),
    }
}

/// The summary at the top of `rollout status`.
pub fn header(view: &RolloutView, now_ms: u64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: {} {}, started by {} {} ago",
        view.id,
        view.config,
        revision(view),
        view.starter,
        format_age(now_ms.saturating_sub(view.created_ms))
    );
    let _ = writeln!(s, "  state:      {} — {}", state_cell(view), view.summary);
    if !view.queued_behind.is_empty() {
        let _ = writeln!(
            s,
            "  queued behind: {} (cancel this one: locksmith rollout cancel {})",
            view.queued_behind.join(", "),
            view.id
        );
    }
    if let Some(lease) = view.lease {
        let token = view.token.map_or(String::new(), |t| format!(", token {t}"));
        let _ = writeln!(
            s,
            "  lock:       configs/{} under lease {lease}{token}",
            view.config
        );
    }
    if let Some(line) = approvals_line(view) {
        let _ = writeln!(s, "  approvals:  {line}");
    }
    if let Some(o) = &view.outcome {
        let why = o.why.as_deref().map_or(String::new(), |w| format!(": {w}"));
        let _ = writeln!(s, "  outcome:    {}{why}", outcome_word(o.kind));
    }
    if let Some(l) = &view.latency {
        let _ = writeln!(
            s,
            "  commit → applied: p50 {} ms, p99 {} ms, max {} ms over {} endpoints",
            l.p50_ms, l.p99_ms, l.max_ms, l.count
        );
    }
    if !view.not_selected.is_empty() {
        let _ = writeln!(
            s,
            "  not selected: {} (matched, left out by the plan)",
            view.not_selected.join(", ")
        );
    }
    s
}

/// `1 of 2 (bob); approve: locksmith rollout approve ro-4` while it waits for approvals, or
/// where it will hold; `None` when it never holds.
fn approvals_line(view: &RolloutView) -> Option<String> {
    if view.approvals_needed > 0 {
        let by = if view.approved_by.is_empty() {
            "none yet".to_string()
        } else {
            format!("by {}", view.approved_by.join(", "))
        };
        return Some(format!(
            "{} of {} ({by}); another operator than {} approves: locksmith rollout approve {}",
            view.approved_by.len(),
            view.approvals_needed,
            view.starter,
            view.id
        ));
    }
    let at = match view.spec.hold_after {
        HoldAfter::None => return None,
        HoldAfter::Canary => "after the canary",
        HoldAfter::EachWave => "after each wave",
    };
    Some(format!("{} needed {at}", view.spec.approvals))
}

/// The per-endpoint table: NODE, WAVE, STATUS, DESIRED, LATENCY MS, ERROR. Past
/// [`FULL_TABLE_UP_TO`] endpoints (unless `all`), the applied ones are counted, not listed.
pub fn endpoints_table(view: &RolloutView, all: bool) -> String {
    let terse = !all && view.endpoints.len() > FULL_TABLE_UP_TO;
    let shown: Vec<&RolloutEndpoint> = view
        .endpoints
        .iter()
        .filter(|e| !(terse && e.status == NodeStatus::Applied))
        .collect();
    let hidden = view.endpoints.len() - shown.len();
    let mut s = String::new();
    if !shown.is_empty() {
        let mut table = plain_table(["NODE", "WAVE", "STATUS", "DESIRED", "LATENCY MS", "ERROR"]);
        for e in &shown {
            table.add_row([
                e.node.clone(),
                e.wave.to_string(),
                status_word(&e.status).to_string(),
                e.desired_rev.map_or("-".into(), |r| r.to_string()),
                latency_ms(e).map_or("-".into(), |ms| ms.to_string()),
                e.error.as_deref().map_or("-".into(), one_line),
            ]);
        }
        s.push_str(&table.trim_fmt());
        s.push('\n');
    }
    if hidden > 0 {
        let _ = writeln!(
            s,
            "{hidden} more endpoint{} applied {} (--all lists them)",
            if hidden == 1 { "" } else { "s" },
            revision(view)
        );
    }
    s
}

/// Commit → applied for one endpoint, when it applied.
fn latency_ms(e: &RolloutEndpoint) -> Option<u64> {
    Some(e.applied_at_ms?.saturating_sub(e.sent_at_ms?))
}

/// Where every endpoint is left: the outcome's landings when it ended, else (an abort still
/// restoring) each endpoint's desired revision as it stands.
pub fn landing_text(view: &RolloutView) -> String {
    let mut s = String::new();
    match &view.outcome {
        Some(outcome) => {
            let why = outcome
                .why
                .as_deref()
                .map_or(String::new(), |w| format!(": {w}"));
            let _ = writeln!(
                s,
                "{}: {} {} {}{why}",
                view.id,
                view.config,
                revision(view),
                outcome_word(outcome.kind)
            );
            let _ = writeln!(s, "every endpoint and the revision it is left on:");
            s.push_str(&landings_table(outcome));
        }
        None => {
            let _ = writeln!(s, "{}: {} — {}", view.id, state_cell(view), view.summary);
            let _ = writeln!(
                s,
                "where each endpoint stands now (follow it: locksmith rollout status {} --watch):",
                view.id
            );
            s.push_str(&endpoints_table(view, true));
        }
    }
    s
}

/// NODE, REV, CONFIRMED, STATUS: one row per selected endpoint.
fn landings_table(outcome: &Outcome) -> String {
    if outcome.endpoints.is_empty() {
        return "(no endpoint)\n".to_string();
    }
    let mut table = plain_table(["NODE", "REV", "CONFIRMED", "STATUS"]);
    for Landing {
        node,
        rev,
        confirmed,
        status,
    } in &outcome.endpoints
    {
        table.add_row([
            node.clone(),
            rev.to_string(),
            if *confirmed { "yes" } else { "not yet" }.to_string(),
            status_word(status).to_string(),
        ]);
    }
    let mut s = table.trim_fmt();
    s.push('\n');
    s
}

/// A table without borders, columns two spaces apart, never wrapped (scripts cut columns).
pub fn plain_table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
}

/// An agent's error on one line (a hook's output tail has several).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use locksmith_api::rollouts::{Latency, RolloutSpec, State, WaveKind, WaveView};

    /// A rollout of aim.conf rev 4 (sent as 7) to `n` drones: a canary of 3, then one wave;
    /// drone-02 failed its health hook, drone-07 is offline, the rest applied.
    pub fn view(n: usize) -> RolloutView {
        let endpoints: Vec<RolloutEndpoint> = (1..=n)
            .map(|i| {
                let node = format!("drone-{i:02}");
                let status = match i {
                    2 => NodeStatus::Failed { refused: false },
                    7 => NodeStatus::Offline,
                    _ => NodeStatus::Applied,
                };
                let applied = status == NodeStatus::Applied;
                RolloutEndpoint {
                    node,
                    wave: usize::from(i > 3),
                    error: (i == 2).then(|| "health hook failed:\n  exit 1".to_string()),
                    status,
                    desired_rev: Some(7),
                    sent_at_ms: Some(1_000),
                    applied_at_ms: applied.then_some(1_000 + 10 * i as u64),
                }
            })
            .collect();
        let wave = |index: usize, kind, range: std::ops::RangeInclusive<usize>| {
            let mine: Vec<&RolloutEndpoint> = endpoints
                .iter()
                .filter(|e| e.wave == index && range.contains(&e.node[6..].parse().unwrap_or(0)))
                .collect();
            let count = |s: &NodeStatus| mine.iter().filter(|e| &e.status == s).count();
            WaveView {
                index,
                kind,
                size: mine.len(),
                allowed_failures: 1,
                applied: count(&NodeStatus::Applied),
                failed: count(&NodeStatus::Failed { refused: false }),
                offline: count(&NodeStatus::Offline),
                waiting_window: 0,
                restored: 0,
                pending: 0,
                latency: Some(Latency {
                    count: 2,
                    p50_ms: 20,
                    p99_ms: 30,
                    max_ms: 30,
                }),
            }
        };
        let mut spec = RolloutSpec::new("aim.conf", 4, "alice");
        spec.hold_after = HoldAfter::Canary;
        spec.approvals = 2;
        RolloutView {
            id: "ro-4".into(),
            config: "aim.conf".into(),
            rev: 4,
            rolled_rev: Some(7),
            starter: "alice".into(),
            created_ms: 0,
            phase: RolloutPhase::Running,
            state: Some(State::AwaitingApproval { wave: 0 }),
            summary: "awaiting approval after wave 0 (1 of 2)".into(),
            queued_behind: Vec::new(),
            lease: Some(12),
            token: Some(34),
            approved_by: vec!["bob".into()],
            approvals_needed: 2,
            spec,
            waves: vec![
                wave(0, WaveKind::Canary, 1..=3),
                wave(1, WaveKind::Wave, 4..=n),
            ],
            endpoints,
            not_selected: vec!["drone-99".into()],
            latency: Some(Latency {
                count: 3,
                p50_ms: 20,
                p99_ms: 40,
                max_ms: 41,
            }),
            outcome: None,
            ended_ms: None,
        }
    }

    #[test]
    fn the_header_names_revision_starter_state_lock_and_approvals() {
        let text = header(&view(5), 120_000);
        assert!(
            text.starts_with("ro-4: aim.conf revision 4 (sent as 7), started by alice 2m00s ago\n"),
            "{text}"
        );
        assert!(
            text.contains("state:      running — awaiting approval after wave 0 (1 of 2)"),
            "{text}"
        );
        assert!(
            text.contains("configs/aim.conf under lease 12, token 34"),
            "{text}"
        );
        assert!(
            text.contains("approvals:  1 of 2 (by bob); another operator than alice approves: locksmith rollout approve ro-4"),
            "{text}"
        );
        assert!(text.contains("p50 20 ms, p99 40 ms"), "{text}");
        assert!(text.contains("not selected: drone-99"), "{text}");
    }

    #[test]
    fn a_small_rollout_lists_every_endpoint_with_the_failed_ones_error() {
        let text = endpoints_table(&view(5), false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        for col in ["NODE", "WAVE", "STATUS", "DESIRED", "LATENCY MS", "ERROR"] {
            assert!(lines[0].contains(col), "{text}");
        }
        let failed = lines
            .iter()
            .find(|l| l.starts_with("drone-02"))
            .expect("drone-02");
        assert!(failed.contains("failed"), "{failed}");
        assert!(failed.contains("health hook failed: exit 1"), "{failed}");
        let applied = lines
            .iter()
            .find(|l| l.starts_with("drone-05"))
            .expect("drone-05");
        assert!(
            applied.contains("applied") && applied.contains("50"),
            "{applied}"
        );
    }

    #[test]
    fn a_big_rollout_lists_what_is_not_applied_and_counts_the_applied_ones() {
        let v = view(30);
        let text = endpoints_table(&v, false);
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert!(
            rows[0].starts_with("drone-02") && rows[0].contains("failed"),
            "{text}"
        );
        assert!(
            rows[1].starts_with("drone-07") && rows[1].contains("offline"),
            "{text}"
        );
        assert_eq!(
            rows[2], "28 more endpoints applied revision 4 (sent as 7) (--all lists them)",
            "{text}"
        );
        assert_eq!(rows.len(), 3, "{text}");
        let all = endpoints_table(&v, true);
        assert_eq!(all.lines().count(), 31, "{all}");
    }

    #[test]
    fn the_landing_list_names_every_endpoints_revision_and_whether_it_confirmed() {
        let mut v = view(3);
        v.phase = RolloutPhase::Ended;
        v.outcome = Some(Outcome {
            kind: OutcomeKind::Aborted,
            why: Some("aborted by bob".into()),
            endpoints: vec![
                Landing {
                    node: "drone-01".into(),
                    rev: 7,
                    confirmed: true,
                    status: NodeStatus::Applied,
                },
                Landing {
                    node: "drone-02".into(),
                    rev: 3,
                    confirmed: false,
                    status: NodeStatus::Restoring,
                },
            ],
        });
        let text = landing_text(&v);
        assert!(
            text.starts_with("ro-4: aim.conf revision 4 (sent as 7) ABORTED: aborted by bob\n"),
            "{text}"
        );
        let row = |node: &str| {
            text.lines()
                .find(|l| l.starts_with(node))
                .unwrap_or_else(|| panic!("{node} missing: {text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(row("drone-01"), "drone-01 7 yes applied");
        assert_eq!(row("drone-02"), "drone-02 3 not yet restoring");
        assert_eq!(state_cell(&v), "ABORTED");
    }
}
