//! `GET /v1/status`: the server's verdict on itself — ALL CLEAR, or each problem with its safe
//! next step.

use std::time::Duration;

use locksmith_api::{Problem, ProblemKind, StateCounts, StatusResponse, format_age};
use locksmith_core::{HoldState, LockState};

use crate::engine::Engine;

/// A waiter queued longer than this is reported.
const LONG_WAIT_MS: u64 = 60_000;

/// Longest the status (and a metrics scrape) waits for the table's view to be durable (see
/// `Engine::view`). Past it the store is stalling: that is the problem to report, and the
/// table is not shown.
pub(crate) const TABLE_WAIT: Duration = Duration::from_secs(2);

/// Builds the status report. `gc_interval` tells how stale the reaper's heartbeat may be;
/// `auth_off`, that the server runs with `--auth off` (a problem of its own).
///
/// The table is shown only once durable, and not at all once storage has failed (see
/// `Engine::view`): the report then says what failed, and nothing more.
pub async fn status(engine: &Engine, gc_interval: Duration, auth_off: bool) -> StatusResponse {
    let health = engine.health();
    // Not `engine.resources()`: at a million leases that built a million views under the table
    // lock, and every other request waited seconds for it.
    let table = match health.store_error {
        Some(_) => None,
        None => Some(tokio::time::timeout(TABLE_WAIT, engine.census()).await),
    };
    // The engine's clock, as the table's own ages are: virtual time runs the whole server.
    let now = engine.clock().now().wall_ms;
    // On the monotonic clock: a step of the wall clock is no stalled reaper.
    let heartbeat_age_ms = engine.heartbeat_age_ms();
    let mut problems = Vec::new();
    let mut counts = StateCounts::default();
    let failure = match &table {
        Some(Ok(Err(e))) => Some(e.to_string()),
        _ => health.store_error.clone(),
    };
    if let Some(e) = failure {
        problems.push(Problem {
            kind: ProblemKind::StorageFailed,
            resource: None,
            message: format!("storage refused a write: {e}"),
            next_step: "check the disk and the server log, then restart the server".into(),
        });
    }
    if let Some(Err(_)) = &table {
        problems.push(Problem {
            kind: ProblemKind::StorageStalled,
            resource: None,
            message: format!(
                "storage has not confirmed a write for over {}; the locks are not shown until it \
                 does",
                format_age(TABLE_WAIT.as_millis() as u64)
            ),
            next_step: "check the data directory's disk (dmesg, iostat) and the server log".into(),
        });
    }
    let allowed = 3 * gc_interval.as_millis() as u64 + 2_000;
    if heartbeat_age_ms > allowed {
        problems.push(Problem {
            kind: ProblemKind::ReaperStalled,
            resource: None,
            message: format!(
                "the server's own heartbeat (reaper) last ran {} ago",
                format_age(heartbeat_age_ms)
            ),
            next_step: "leases are not being reclaimed: check the server log and restart it".into(),
        });
    }
    let (census, holds) = match table {
        Some(Ok(Ok((census, holds)))) => (census, holds),
        _ => {
            if auth_off {
                problems.push(auth_off_problem());
            }
            return StatusResponse {
                all_clear: problems.is_empty(),
                health: engine.health(),
                heartbeat_age_ms,
                counts,
                problems,
            };
        }
    };
    counts.hot = census.hot;
    for r in &census.notable {
        counts.waiters += r.waiters.len() as u64;
        match r.state {
            LockState::Hot => counts.hot += 1,
            LockState::Stale => {
                counts.stale += 1;
                for h in r.holders.iter().filter(|h| h.stale) {
                    problems.push(Problem {
                        kind: ProblemKind::StaleLock,
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
                    kind: ProblemKind::LockDelay,
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
                kind: ProblemKind::LongWait,
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
                kind: ProblemKind::Frozen,
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
                    kind: ProblemKind::HoldPendingAck,
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
    // Last: the table's problems keep their places in the list.
    if auth_off {
        problems.push(auth_off_problem());
    }
    StatusResponse {
        all_clear: problems.is_empty(),
        health,
        heartbeat_age_ms,
        counts,
        problems,
    }
}

/// The problem of a server run with `--auth off`.
fn auth_off_problem() -> Problem {
    Problem {
        kind: ProblemKind::AuthOff,
        resource: None,
        message: "authentication is off (--auth off): anyone who reaches the server may take, \
                  break and hold any lock and read everything"
            .into(),
        next_step: "restart without --auth off (the first start with authentication on writes \
                    an admin token to DATA/admin.token)"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use locksmith_core::{LockTable, Now, TableConfig};
    use locksmith_store::{Committer, EmbeddedStore, Store};

    use super::*;
    use crate::clock::ManualClock;
    use crate::engine::State;

    fn kinds(status: &StatusResponse) -> Vec<ProblemKind> {
        status.problems.iter().map(|p| p.kind).collect()
    }

    /// Bug pinned (issue 15, item 18): the heartbeat's age was wall-clock arithmetic, so for
    /// about a second after the wall clock stepped forward (until the reaper's next run)
    /// `status` reported `reaper_stalled`. The age is on the monotonic clock now; a reaper
    /// that really stops running is still reported.
    #[tokio::test]
    async fn a_step_of_the_wall_clock_is_no_stalled_reaper() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = EmbeddedStore::open(dir.path()).expect("open");
        store.load().expect("load");
        let committer = Committer::spawn(Box::new(store)).expect("committer");
        // Ten minutes into the server's life, so that there is a past to backdate into.
        let clock = Arc::new(ManualClock::at(Now::at(600_000, crate::clock::wall_ms())));
        let state = State::new(LockTable::new(TableConfig::default()), 0);
        let engine = Engine::new(state, committer, clock);
        engine.reap().await.expect("reap");
        let gc = Duration::from_secs(1);
        assert!(status(&engine, gc, false).await.all_clear);

        // The wall clock jumps an hour forward right after the reaper ran.
        engine.backdate_heartbeat(3_600_000, 0);
        let after_jump = status(&engine, gc, false).await;
        assert!(after_jump.all_clear, "{:?}", kinds(&after_jump));
        assert!(after_jump.heartbeat_age_ms < 5_000);

        // The reaper has not run for a minute.
        engine.backdate_heartbeat(0, 60_000);
        let stalled = status(&engine, gc, false).await;
        assert_eq!(kinds(&stalled), vec![ProblemKind::ReaperStalled]);
        engine.close().expect("close");
    }
}
