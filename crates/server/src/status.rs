//! `GET /v1/status`: the server's verdict on itself — ALL CLEAR, or each problem with its safe
//! next step.

use std::time::Duration;

use locksmith_api::{Problem, StateCounts, StatusResponse, format_age};
use locksmith_core::{HoldState, LockState};

use crate::clock::wall_ms;
use crate::engine::Engine;

/// A waiter queued longer than this is reported.
const LONG_WAIT_MS: u64 = 60_000;

/// Builds the status report. `gc_interval` tells how stale the reaper's heartbeat may be.
pub fn status(engine: &Engine, gc_interval: Duration) -> StatusResponse {
    let health = engine.health();
    // Not `engine.resources()`: at a million leases that built a million views under the table
    // lock, and every other request waited seconds for it.
    let census = engine.census();
    let holds = engine.holds();
    let now = wall_ms();
    let heartbeat_age_ms = now.saturating_sub(engine.last_reap_ms());
    let mut problems = Vec::new();
    let mut counts = StateCounts {
        hot: census.hot,
        ..StateCounts::default()
    };

    if let Some(e) = &health.store_error {
        problems.push(Problem {
            kind: "storage_failed".into(),
            resource: None,
            message: format!("storage refused a write: {e}"),
            next_step: "check the disk and the server log, then restart the server".into(),
        });
    }
    let allowed = 3 * gc_interval.as_millis() as u64 + 2_000;
    if heartbeat_age_ms > allowed {
        problems.push(Problem {
            kind: "reaper_stalled".into(),
            resource: None,
            message: format!(
                "the server's own heartbeat (reaper) last ran {} ago",
                format_age(heartbeat_age_ms)
            ),
            next_step: "leases are not being reclaimed: check the server log and restart it".into(),
        });
    }
    for r in &census.notable {
        counts.waiters += r.waiters.len() as u64;
        match r.state {
            LockState::Hot => counts.hot += 1,
            LockState::Stale => {
                counts.stale += 1;
                for h in r.holders.iter().filter(|h| h.stale) {
                    problems.push(Problem {
                        kind: "stale_lock".into(),
                        resource: Some(r.resource.clone()),
                        message: format!(
                            "{}: STALE — held by {}, last heartbeat {} ago",
                            r.resource,
                            h.owner,
                            format_age(now.saturating_sub(h.last_heartbeat_ms))
                        ),
                        next_step: format!(
                            "it is reclaimed in {} unless it heartbeats; to check the holder run 'locksmith why {}' on {}",
                            format_age(h.ttl_left_ms),
                            r.resource,
                            h.owner.node
                        ),
                    });
                }
            }
            LockState::Frozen => counts.frozen += 1,
            LockState::Delayed => {
                counts.delayed += 1;
                problems.push(Problem {
                    kind: "lock_delay".into(),
                    resource: Some(r.resource.clone()),
                    message: format!(
                        "{}: DELAYED — lock-delay after a failed holder, {} left",
                        r.resource,
                        format_age(r.delay_left_ms)
                    ),
                    next_step: "nothing to do: grants resume when the delay ends".into(),
                });
            }
            LockState::Free => {}
        }
        if let Some(w) = r
            .waiters
            .iter()
            .find(|w| now.saturating_sub(w.waiting_since_ms) > LONG_WAIT_MS)
        {
            problems.push(Problem {
                kind: "long_wait".into(),
                resource: Some(r.resource.clone()),
                message: format!(
                    "{}: {} has waited {}",
                    r.resource,
                    w.owner,
                    format_age(now.saturating_sub(w.waiting_since_ms))
                ),
                next_step: format!("run 'locksmith why {}' to see who holds it", r.resource),
            });
        }
    }
    for h in &holds {
        let rec = &h.record;
        match h.state {
            HoldState::Active => problems.push(Problem {
                kind: "frozen".into(),
                resource: Some(rec.resource.clone()),
                message: format!(
                    "{}: FROZEN by {} ({} left): {}",
                    rec.resource,
                    rec.by,
                    format_age(h.ends_in_ms),
                    rec.reason
                ),
                next_step: format!(
                    "wait for it to end, or lift it: 'locksmith unhold {}'",
                    rec.hold
                ),
            }),
            HoldState::PendingAck => {
                counts.holds_pending_ack += 1;
                problems.push(Problem {
                    kind: "hold_pending_ack".into(),
                    resource: Some(rec.resource.clone()),
                    message: format!(
                        "{}: hold {} by {} awaits acknowledgement ({} left): {}",
                        rec.resource,
                        rec.hold,
                        rec.by,
                        format_age(h.ends_in_ms),
                        rec.reason
                    ),
                    next_step: format!(
                        "a different operator runs 'locksmith ack {}', or 'locksmith unhold {}'",
                        rec.hold, rec.hold
                    ),
                });
            }
        }
    }
    StatusResponse {
        all_clear: problems.is_empty(),
        health,
        heartbeat_age_ms,
        counts,
        problems,
    }
}
