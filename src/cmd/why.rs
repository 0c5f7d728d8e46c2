//! `locksmith why RESOURCE`: one screen that explains a lock — its state, each holder (and
//! whether it is alive, checked and reported from here when it runs on this node), the queue,
//! the holds, the lock-delay, recent history, and the exact safe next step.

use locksmith_api::{
    AuditQuery, LivenessResponse, expires, fleetlock, format_age, format_wall, owner_name,
    state_name,
};
use locksmith_core::{AuditRecord, HoldState, HolderView, LockState, ResourceView};
use serde::Serialize;

use super::liveness::{self, Check, Verdict};
use crate::cli::{Global, WhyArgs};
use crate::exit::Exit;
use crate::failure::{Context, Failure, describe_hold};
use crate::output::{audit_line, out, out_json};

/// How many audit records `why` shows.
const HISTORY: usize = 10;
/// How many waiters the screen lists (the queue can be thousands long; `--json` has them all).
const WAITERS_SHOWN: usize = 10;

/// Everything `why` found, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Why {
    /// The server's wall clock, Unix ms.
    server_time_ms: u64,
    /// The resource as it is now (after any reclaim).
    lock: ResourceView,
    /// Its state before the liveness checks, when they changed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    was: Option<LockState>,
    /// The holders as first seen, each checked from this node.
    checks: Vec<Check>,
    /// The server's answer to the liveness report, if one was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<LivenessResponse>,
    /// The last audit records of the resource, oldest first.
    history: Vec<AuditRecord>,
    /// Why the history could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    history_error: Option<String>,
    /// The safe next step.
    next_step: String,
}

pub async fn why(global: &Global, args: WhyArgs) -> anyhow::Result<Exit> {
    let resource = args.resource.as_str();
    super::check_resource(resource)?;
    let ctx = Context {
        subject: resource,
        wait_flag: "--wait",
    };
    let client = super::client(global, ctx)?;
    let first = client
        .lock(resource)
        .await
        .map_err(|e| Failure::from_client(&e, ctx))?;

    let here = liveness::here(global);
    let mut checks = liveness::check(&here, std::slice::from_ref(&first.lock));
    let operator = super::operator(global).map_err(|f| f.line);
    let report = liveness::report(&client, &here, operator, &mut checks).await;
    let now = if report.is_some() {
        client
            .lock(resource)
            .await
            .map_err(|e| Failure::from_client(&e, ctx))?
    } else {
        first.clone()
    };

    let query = AuditQuery {
        resource: Some(resource.to_string()),
        limit: Some(HISTORY),
        ..AuditQuery::default()
    };
    let (history, history_error) = match client.audit(&query).await {
        Ok(h) => (h.records, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let why = Why {
        server_time_ms: now.server_time_ms,
        next_step: next_step(&now.lock, &checks),
        was: (first.lock.state != now.lock.state).then_some(first.lock.state),
        lock: now.lock,
        checks,
        report,
        history,
        history_error,
    };
    if args.json {
        out_json(&why)?;
    } else {
        out(&render(&why, &first.lock))?;
    }
    Ok(Exit::Ok)
}

/// The screen.
fn render(why: &Why, first: &ResourceView) -> String {
    let now_ms = why.server_time_ms;
    let view = &why.lock;
    let mut lines = Vec::new();
    let was = why
        .was
        .map(|s| format!(" (was {})", state_name(s)))
        .unwrap_or_default();
    lines.push(format!(
        "{}: {}{was} — {}/{} slot(s) held",
        view.resource,
        state_name(view.state),
        view.holders.len(),
        view.slots
    ));

    // Holders as first seen, with what this node found out about each.
    for h in &first.holders {
        let check = why.checks.iter().find(|c| c.lease == h.lease);
        let gone = check.is_some_and(Check::reclaimed);
        lines.extend(holder_block(h, now_ms, check, gone));
    }
    // Anyone granted since (a waiter served after a reclaim).
    for h in view
        .holders
        .iter()
        .filter(|h| !first.holders.iter().any(|f| f.lease == h.lease))
    {
        lines.extend(holder_block(h, now_ms, None, false));
    }
    if first.holders.is_empty() && view.holders.is_empty() {
        lines.push("holders         none".to_string());
    }

    if view.waiters.is_empty() {
        lines.push("waiters         none".to_string());
    } else {
        lines.push(format!(
            "waiters         {} (served in this order)",
            view.waiters.len()
        ));
        for (i, w) in view.waiters.iter().take(WAITERS_SHOWN).enumerate() {
            lines.push(format!(
                "  {}. {} — {:?}, waiting {}",
                i + 1,
                w.owner,
                w.owner.purpose,
                format_age(now_ms.saturating_sub(w.waiting_since_ms))
            ));
        }
        if let Some(more) = view
            .waiters
            .len()
            .checked_sub(WAITERS_SHOWN)
            .filter(|n| *n > 0)
        {
            lines.push(format!(
                "  … and {more} more (locksmith locks {} --json for all)",
                view.resource
            ));
        }
    }
    if view.holds.is_empty() {
        lines.push("holds           none".to_string());
    } else {
        lines.push("holds".to_string());
        for h in &view.holds {
            lines.push(format!("  {}", describe_hold(h)));
        }
    }
    lines.push(if view.delay_left_ms > 0 {
        format!(
            "lock-delay      {} left (no grants until it ends: a holder failed)",
            format_age(view.delay_left_ms)
        )
    } else {
        "lock-delay      none".to_string()
    });

    match &why.history_error {
        Some(e) => lines.push(format!("recent history  unavailable: {e}")),
        None if why.history.is_empty() => lines.push("recent history  none".to_string()),
        None => {
            lines.push(format!("recent history  (last {HISTORY}, oldest first)"));
            lines.extend(why.history.iter().map(|r| format!("  {}", audit_line(r))));
        }
    }
    lines.push(format!("next step: {}", why.next_step));
    lines.join("\n")
}

/// One holder: who, lease and token, since when, heartbeat, TTL, and whether it is alive.
fn holder_block(
    h: &HolderView,
    now_ms: u64,
    check: Option<&Check>,
    reclaimed: bool,
) -> Vec<String> {
    // A FleetLock client is no process: it sends no heartbeats, and its slot has no TTL unless
    // the server's --fleetlock-stale-after gives it one (then each pre-reboot renews it).
    let fleetlock = fleetlock::is_client(&h.owner);
    let health = if reclaimed {
        "reclaimed"
    } else if h.stale {
        "STALE: heartbeat overdue"
    } else if fleetlock {
        "a FleetLock reboot slot, held until the client reports steady state"
    } else {
        "heartbeats on time"
    };
    let heartbeat = if fleetlock && !expires(h) {
        "  heartbeat     none: FleetLock clients send none, and the slot has no TTL — it is held \
         until the client reports steady state (or an operator breaks it)"
            .to_string()
    } else if fleetlock {
        format!(
            "  heartbeat     last asked {} ago; reclaimed if it does not ask again within {} \
             (stale after {})",
            format_age(now_ms.saturating_sub(h.last_heartbeat_ms)),
            format_age(h.ttl_left_ms),
            format_age(h.ttl_ms)
        )
    } else {
        format!(
            "  heartbeat     last {} ago; TTL left {} of {}",
            format_age(now_ms.saturating_sub(h.last_heartbeat_ms)),
            format_age(h.ttl_left_ms),
            format_age(h.ttl_ms)
        )
    };
    let mut lines = vec![
        format!(
            "holder          {} — lease {}, token {} ({health})",
            owner_name(&h.owner),
            h.lease,
            h.token
        ),
        format!("  purpose       {:?}", h.owner.purpose),
        format!(
            "  since         {} ({} ago)",
            format_wall(h.granted_at_ms),
            format_age(now_ms.saturating_sub(h.granted_at_ms))
        ),
        heartbeat,
    ];
    if let Some(c) = check {
        lines.push(format!("  alive?        {}", liveness::describe(c)));
    }
    lines
}

/// The exact safe next step, chosen from the situation.
fn next_step(view: &ResourceView, checks: &[Check]) -> String {
    let res = &view.resource;
    let active = view.holds.iter().find(|h| h.state == HoldState::Active);
    let pending = view.holds.iter().find(|h| h.state == HoldState::PendingAck);
    if let Some(h) = active.filter(|_| view.state == LockState::Frozen) {
        return format!(
            "wait for hold {} ({} left) or locksmith unhold {}",
            h.record.hold,
            format_age(h.ends_in_ms),
            h.record.hold
        );
    }
    if let Some(h) = pending {
        return format!(
            "locksmith ack {} (as a different operator: --operator NAME) to put the hold in \
             force, or locksmith unhold {} to drop it",
            h.record.hold, h.record.hold
        );
    }
    let holder = |c: &Check| view.holders.iter().find(|h| h.lease == c.lease);
    if let Some((c, h)) = checks
        .iter()
        .filter(|c| c.dead_but_held())
        .find_map(|c| holder(c).map(|h| (c, h)))
    {
        return format!(
            "its holder is dead but still holds the lock ({}); {}",
            liveness::describe(c),
            liveness::dead_but_held_step(c, Some(h.ttl_left_ms))
        );
    }
    match view.state {
        LockState::Free => {
            format!("free: locksmith acquire {res}, or locksmith run {res} -- CMD")
        }
        LockState::Delayed => format!(
            "wait {}: the lock-delay after a failed holder ends by itself (locksmith run -w 1m \
             {res} -- CMD waits for it)",
            format_age(view.delay_left_ms)
        ),
        LockState::Stale => {
            let h = view
                .holders
                .iter()
                .find(|h| h.stale)
                .or(view.holders.first());
            let ttl = h.map_or_else(|| "its TTL".to_string(), |h| format_age(h.ttl_left_ms));
            let check = h.and_then(|h| checks.iter().find(|c| c.lease == h.lease));
            let elsewhere = match check.map(|c| (&c.verdict, &c.owner)) {
                Some((Verdict::Remote, o)) => Some(format!("on {}", o.node)),
                Some((
                    Verdict::OtherPidNamespace {
                        holder_pid_ns: Some(ns),
                    },
                    o,
                )) => Some(format!("inside PID namespace {ns} on {}", o.node)),
                _ => None,
            };
            match elsewhere {
                Some(place) => format!(
                    "it will be reclaimed in {ttl} unless it heartbeats; nothing to do (to check \
                     its process, run 'locksmith why {res}' {place})"
                ),
                None => {
                    format!("it will be reclaimed in {ttl} unless it heartbeats; nothing to do")
                }
            }
        }
        // HOT (or FROZEN without an active hold in view, which cannot last).
        LockState::Hot | LockState::Frozen => match view.holders.first() {
            Some(h) if fleetlock::is_client(&h.owner) => format!(
                "wait: FleetLock client {} frees its slot when it reports steady state after its \
                 reboot (locksmith run -w 1h {res} -- CMD waits for it); if that node never \
                 comes back: locksmith break {res} --lease {} --reason \"…\" (add --freeze 0 \
                 to let the next node reboot at once)",
                h.owner.node, h.lease
            ),
            Some(h) => format!(
                "wait (locksmith run -w 5m {res} -- CMD) or ask {}@{} (pid {}) to finish; if it \
                 is truly stuck: locksmith hold {res} --for 90s --reason \"…\" then locksmith \
                 break {res} --reason \"…\"",
                h.owner.user, h.owner.node, h.owner.pid
            ),
            None => format!(
                "every slot is promised to queued waiters: wait (locksmith run -w 5m {res} -- CMD)"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use locksmith_core::{FenceToken, HoldId, HoldRecord, HoldView, LeaseId, Owner};

    use super::liveness::Reported;

    fn owner() -> Owner {
        Owner {
            node: "node-7".into(),
            pid: 4121,
            start_time: 1,
            boot_id: "b".into(),
            user: "orchestrator".into(),
            purpose: "update".into(),
            pid_ns: None,
        }
    }

    fn holder(stale: bool) -> HolderView {
        HolderView {
            lease: LeaseId(7),
            token: FenceToken(7),
            owner: owner(),
            granted_at_ms: 0,
            last_heartbeat_ms: 0,
            ttl_ms: 15_000,
            ttl_left_ms: 4_000,
            stale,
        }
    }

    fn view(state: LockState, holders: Vec<HolderView>) -> ResourceView {
        ResourceView {
            resource: "res".into(),
            state,
            slots: 1,
            holders,
            waiters: vec![],
            holds: vec![],
            delay_left_ms: 0,
        }
    }

    fn check(verdict: Verdict, reported: Reported) -> Check {
        Check {
            resource: "res".into(),
            lease: LeaseId(7),
            owner: owner(),
            verdict,
            reported,
        }
    }

    fn hold(state: HoldState) -> HoldView {
        HoldView {
            record: HoldRecord {
                hold: HoldId(12),
                resource: "res".into(),
                reason: "r".into(),
                by: "alice".into(),
                placed_at_ms: 0,
                duration_ms: 90_000,
                require_ack: false,
                acked_by: None,
                active_since_ms: None,
            },
            state,
            ends_in_ms: 60_000,
        }
    }

    #[test]
    fn next_steps_follow_the_situation() {
        let remote = [check(Verdict::Remote, Reported::NotNeeded)];
        let hot = next_step(&view(LockState::Hot, vec![holder(false)]), &remote);
        assert!(
            hot.starts_with(
                "wait (locksmith run -w 5m res -- CMD) or ask orchestrator@node-7 (pid 4121) to \
                 finish; if it is truly stuck: locksmith hold res --for 90s"
            ),
            "{hot}"
        );
        assert!(hot.contains("then locksmith break res --reason"), "{hot}");

        let stale = next_step(&view(LockState::Stale, vec![holder(true)]), &remote);
        assert!(
            stale.starts_with("it will be reclaimed in 4s unless it heartbeats; nothing to do"),
            "{stale}"
        );
        assert!(stale.contains("on node-7"), "{stale}");

        let mut frozen = view(LockState::Frozen, vec![]);
        frozen.holds = vec![hold(HoldState::Active)];
        assert_eq!(
            next_step(&frozen, &[]),
            "wait for hold 12 (1m00s left) or locksmith unhold 12"
        );

        let mut pending = view(LockState::Hot, vec![holder(false)]);
        pending.holds = vec![hold(HoldState::PendingAck)];
        assert!(
            next_step(&pending, &remote).starts_with("locksmith ack 12 (as a different operator")
        );

        assert_eq!(
            next_step(&view(LockState::Free, vec![]), &[]),
            "free: locksmith acquire res, or locksmith run res -- CMD"
        );

        let refused = [check(Verdict::Gone, Reported::Refused("no".into()))];
        let dead = next_step(&view(LockState::Hot, vec![holder(false)]), &refused);
        assert!(dead.contains("locksmith break res --lease 7"), "{dead}");
    }

    /// Issue 15 item 14: 10,000 waiters printed 10,000 lines (570 KB) instead of one screen.
    #[test]
    fn a_long_queue_is_cut_to_a_screen_and_says_how_many_more() {
        let mut lock = view(LockState::Hot, vec![holder(false)]);
        lock.waiters = (0..10_000u64)
            .map(|i| locksmith_core::WaiterView {
                owner: Owner {
                    pid: 10_000 + u32::try_from(i).expect("small"),
                    ..owner()
                },
                waiting_since_ms: i,
            })
            .collect();
        let why = Why {
            server_time_ms: 20_000,
            lock: lock.clone(),
            was: None,
            checks: vec![],
            report: None,
            history: vec![],
            history_error: None,
            next_step: "wait".into(),
        };
        let text = render(&why, &lock);
        assert!(text.lines().count() < 40, "{text}");
        assert!(
            text.contains("waiters         10000 (served in this order)"),
            "{text}"
        );
        assert!(
            text.contains("  10. orchestrator@node-7 (pid 10009)"),
            "{text}"
        );
        assert!(!text.contains("  11. "), "{text}");
        assert!(
            text.contains("  … and 9990 more (locksmith locks res --json for all)"),
            "{text}"
        );
    }

    #[test]
    fn the_screen_says_a_dead_holder_was_reclaimed() {
        let first = view(LockState::Hot, vec![holder(false)]);
        let why = Why {
            server_time_ms: 10_000,
            lock: view(LockState::Free, vec![]),
            was: Some(LockState::Hot),
            checks: vec![check(Verdict::Gone, Reported::Reclaimed)],
            report: None,
            history: vec![],
            history_error: None,
            next_step: "free: …".into(),
        };
        let text = render(&why, &first);
        assert!(
            text.starts_with("res: FREE (was HOT) — 0/1 slot(s) held"),
            "{text}"
        );
        assert!(
            text.contains("alive?        holder pid 4121 is gone — reported; lock reclaimed"),
            "{text}"
        );
        assert!(text.ends_with("next step: free: …"), "{text}");
    }

    /// Bug pinned (issue 15, item 16): a FleetLock holder read as `fleetlock@ID (pid 1)` with
    /// "heartbeats on time" and a TTL of 36499d23h — a process with a century-long lease.
    #[test]
    fn a_fleetlock_holder_reads_as_a_client_holding_a_slot_until_steady_state() {
        let mut slot = holder(false);
        slot.owner = fleetlock::owner("c0ffee", "default");
        slot.ttl_ms = locksmith_core::NO_EXPIRY_TTL_MS;
        slot.ttl_left_ms = locksmith_core::NO_EXPIRY_TTL_MS - 1_000;
        let first = view(LockState::Hot, vec![slot.clone()]);
        let mut c = check(Verdict::FleetLock, Reported::NotNeeded);
        c.owner = slot.owner.clone();
        let why = Why {
            server_time_ms: 10_000,
            lock: first.clone(),
            was: None,
            checks: vec![c.clone()],
            report: None,
            history: vec![],
            history_error: None,
            next_step: next_step(&first, &[c]),
        };
        let text = render(&why, &first);
        for wrong in ["(pid 1)", "heartbeats on time", "36499d", "TTL left"] {
            assert!(!text.contains(wrong), "{wrong:?} in:\n{text}");
        }
        for right in [
            "holder          FleetLock client c0ffee — lease 7, token 7 (a FleetLock reboot \
             slot, held until the client reports steady state)",
            "heartbeat     none: FleetLock clients send none, and the slot has no TTL",
            "alive?        not a process — FleetLock client c0ffee holds a reboot slot",
            "next step: wait: FleetLock client c0ffee frees its slot when it reports steady state",
            "locksmith break res --lease 7",
        ] {
            assert!(text.contains(right), "{right:?} not in:\n{text}");
        }
    }
}
