//! The engine's rollout operations: the planner of `locksmith-rollout` driven through the
//! step. Each planner event runs in one step, and the step's batch holds the rollout's new
//! record — the planner's state together with what its commands changed (overrides, a
//! pending promotion, a gate run) — and the records of the commands that touch other domains
//! (a FROZEN hold, the lease's release, the draft's re-write), so a restart resumes from a
//! state whose commands all took effect and tells no endpoint twice.
//!
//! A rollout holds `configs/NAME` with a lease owned by the server for its whole run. It
//! starts by re-writing the revision it rolls out as a new draft under that lease: the agent
//! refuses a revision newer than the one current when it learned a fence unless it was written
//! under at least that fence, so every revision a rollout sends must carry its own token.
//!
//! What needs IO outside a step — reading the draft's content to promote it, a Prometheus
//! query, starting the next queued rollout — is done by the rollouts driver
//! (`domains::rollouts::driver`), which then runs the step.

mod api;
mod finish;
mod gates;
mod start;

pub use finish::finalize;
pub use gates::{PromQuery, due_metric_results, prometheus_due};
pub use start::{cancel, check as check_rollout, create, try_start};

use locksmith_api::agents::ApplyState;
use locksmith_config::{Author, resource_of};
use locksmith_core::{AuditKind, AuditRecord, DomainEvent, Effect, Effects, Now, Owner, PlaceHold};
use locksmith_rollout::{Command, Event, NewError, OutcomeKind, Refusal, ReportState, RolloutSpec};
use serde_json::json;

use super::State;
use crate::domains::rollouts::model::GateRun;

/// The TTL of a rollout's lease; every rollout step and the engine's tick renew it.
pub const LEASE_TTL_MS: u64 = 10 * 60_000;

/// Why a rollout operation was refused; nothing was stored.
#[derive(Debug)]
pub enum RolloutRefusal {
    /// No such config.
    ConfigNotFound(String),
    /// The config has no such revision.
    RevisionNotFound(String, u64),
    /// No such rollout.
    NotFound(String),
    /// The spec or its plan cannot run.
    New(NewError),
    /// A `prom:` gate, and the server has no `--prometheus-url`.
    GatesUnavailable(String),
    /// The planner of rollout `id` refused the event.
    Planner { id: String, refusal: Refusal },
    /// Only a queued rollout can be cancelled.
    NotQueued(String),
    /// Resuming rollout `id` after its lock was lost needs the lock again; someone else
    /// holds it (`line` says who).
    LockHeld { id: String, line: String },
}

fn audit(resource: &str, kind: &str, detail: serde_json::Value, now: Now, fx: &mut Effects) {
    // The kinds are constants of this module, valid by construction.
    if let Ok(event) = DomainEvent::new(kind, detail) {
        fx.push(Effect::Persist(locksmith_core::Mutation::AppendAudit(
            AuditRecord {
                at_ms: now.wall_ms,
                ..AuditRecord::new(resource, AuditKind::Domain(event))
            },
        )));
    }
}

/// The planner's view of an agent's report state.
pub fn report_state(state: ApplyState) -> ReportState {
    match state {
        ApplyState::Applied => ReportState::Applied,
        ApplyState::Failed => ReportState::Failed,
        ApplyState::Refused => ReportState::Refused,
        ApplyState::Deferred => ReportState::Deferred,
        ApplyState::ShadowOk => ReportState::ShadowOk,
        ApplyState::ShadowFailed => ReportState::ShadowFailed,
    }
}

/// The server's own owner of a rollout's lease.
fn owner(id: &str) -> Owner {
    Owner {
        node: "locksmith-server".into(),
        pid: 1,
        start_time: 1,
        boot_id: "rollouts".into(),
        user: "rollout".into(),
        purpose: format!("rollout {id}"),
        pid_ns: None,
    }
}

/// Who a rollout's own writes (its draft, its promotion) are by: its starter.
fn author(spec: &RolloutSpec) -> Author {
    Author {
        token: String::new(),
        name: spec.starter.clone(),
    }
}

/// Feeds `event` to rollout `id`'s planner and carries out its commands, then judges the
/// agent-metric gates that are due (a zero bake judges them in this same step); pushes the
/// rollout's record. A refusal changes nothing.
pub fn feed(
    state: &mut State,
    id: &str,
    event: Event,
    now: Now,
    fx: &mut Effects,
) -> Result<(), RolloutRefusal> {
    feed_one(state, id, event, now, fx)?;
    // Each round answers every due metric gate of the run; a new run (the next wave's bake)
    // can become due at once only with a zero bake, and there are as many as waves.
    for _ in 0..64 {
        let results = due_metric_results(state, id, now);
        if results.is_empty() {
            break;
        }
        for result in results {
            // A result the planner no longer wants (it paused or failed meanwhile) is
            // dropped: the run is cleared either way.
            let _ = feed_one(state, id, result, now, fx);
        }
    }
    Ok(())
}

fn feed_one(
    state: &mut State,
    id: &str,
    event: Event,
    now: Now,
    fx: &mut Effects,
) -> Result<(), RolloutRefusal> {
    state.rollouts.seen(now);
    // Why an endpoint failed or refused the rolled-out revision, from the report this step
    // stored: kept with the rollout, since the endpoint's next report (its restore) replaces it.
    let failure = match &event {
        Event::Report {
            node,
            rev,
            state: ReportState::Failed | ReportState::Refused,
            ..
        } => state.rollouts.get(id).and_then(|e| {
            let config = &e.stored.spec.config;
            (Some(*rev) == e.stored.rolled_rev)
                .then(|| state.agents.last_report(node, config))
                .flatten()
                .and_then(|r| r.report.error.clone())
                .map(|error| (node.clone(), error))
        }),
        _ => None,
    };
    let entry = state
        .rollouts
        .get_mut(id)
        .ok_or_else(|| RolloutRefusal::NotFound(id.to_owned()))?;
    if let Some((node, error)) = failure {
        entry.stored.errors.insert(node, error);
    }
    if let Event::GateResult { gate, .. } = &event
        && let Some(run) = &mut entry.stored.gate_run
    {
        run.gates.retain(|g| g != gate);
        if run.gates.is_empty() {
            entry.stored.gate_run = None;
        }
    }
    let rolled = entry.stored.rolled_rev;
    if let Event::Report {
        node,
        rev,
        state: ReportState::Applied,
        ..
    } = &event
        && Some(*rev) == rolled
        && entry.stored.sent_ms.contains_key(node)
    {
        entry
            .stored
            .applied_ms
            .entry(node.clone())
            .or_insert(now.wall_ms);
    }
    let planner = entry
        .planner
        .as_mut()
        .ok_or_else(|| RolloutRefusal::Planner {
            id: id.to_owned(),
            refusal: Refusal::NotStarted,
        })?;
    let commands =
        planner
            .handle(now.wall_ms, event)
            .map_err(|refusal| RolloutRefusal::Planner {
                id: id.to_owned(),
                refusal,
            })?;
    carry_out(state, id, commands, now, fx);
    Ok(())
}

/// Runs the planner's commands for rollout `id` and pushes its record last, in the same batch.
fn carry_out(state: &mut State, id: &str, commands: Vec<Command>, now: Now, fx: &mut Effects) {
    let Some(entry) = state.rollouts.get_mut(id) else {
        return;
    };
    let config = entry.stored.spec.config.clone();
    let resource = resource_of(&config);
    let rolled = entry.stored.rolled_rev;
    let mut desired_changed = Vec::new();
    let mut hold = None;
    let mut release = false;
    for command in commands {
        match command {
            Command::SetDesired { rev, nodes } => {
                for node in nodes {
                    if Some(rev) == rolled {
                        entry
                            .stored
                            .sent_ms
                            .entry(node.clone())
                            .or_insert(now.wall_ms);
                    }
                    entry.stored.overrides.insert(node.clone(), rev);
                    desired_changed.push((node, rev));
                }
            }
            Command::Pin { nodes } => {
                for (node, rev) in nodes {
                    entry.stored.overrides.insert(node.clone(), rev);
                    desired_changed.push((node, rev));
                }
            }
            Command::Restore { node, rev } => {
                entry.stored.overrides.insert(node.clone(), rev);
                desired_changed.push((node, rev));
            }
            // At success, after `PromoteDraft`: the promotion makes a new revision number
            // with the draft's content, which the endpoints already run — the overrides stay
            // (and count while that revision is current) so none applies the same bytes again;
            // a draft left unpromoted keeps them too.
            Command::ClearOverrides { .. }
                if entry.stored.promote.is_some() || entry.stored.not_promoted.is_some() => {}
            Command::ClearOverrides { nodes } => {
                for node in nodes {
                    entry.stored.overrides.remove(&node);
                    desired_changed.push((node, 0));
                }
            }
            Command::Freeze { reason } => hold = Some(reason),
            Command::RunGate {
                wave,
                gates,
                from_ms,
                until_ms,
            } => {
                entry.stored.gate_run = Some(GateRun {
                    wave,
                    gates,
                    from_ms,
                    until_ms,
                });
            }
            Command::WaitForApproval { wave, needed } => audit(
                &resource,
                "rollout_hold_point",
                json!({"rollout": id, "wave": wave, "needed": needed}),
                now,
                fx,
            ),
            Command::PromoteDraft { rev } => {
                let left_out = entry
                    .planner
                    .as_ref()
                    .map_or(0, |p| p.plan().not_selected.len());
                if left_out == 0 {
                    entry.stored.promote = Some(rev);
                } else {
                    // Promoting makes it every endpoint's revision, the ones the selector
                    // left out too: it stays a draft, and the rollout's overrides keep the
                    // selected endpoints on it.
                    entry.stored.not_promoted = Some(format!(
                        "{left_out} endpoints outside the selector apply {config}; revision {rev} stays a draft so they keep theirs (promote it with `locksmith config promote {config} {rev}` to make it everyone's)"
                    ));
                }
            }
            Command::ReleaseLock => release = true,
            Command::Progress(progress) => audit(
                &resource,
                "rollout_progress",
                json!({"rollout": id, "progress": progress}),
                now,
                fx,
            ),
            Command::Finished(outcome) => {
                audit(
                    &resource,
                    "rollout_finished",
                    json!({"rollout": id, "outcome": outcome}),
                    now,
                    fx,
                );
                if outcome.kind != OutcomeKind::Succeeded {
                    entry.stored.promote = None;
                }
                entry.stored.gate_run = None;
                entry.stored.ended_ms = Some(now.wall_ms);
                entry.stored.outcome = Some(outcome);
            }
        }
    }
    if !desired_changed.is_empty() {
        // The agents' streams follow audit records of `configs/NAME`: this one makes them ask
        // `desired` again once the override is durable.
        audit(
            &resource,
            "rollout_desired",
            json!({"rollout": id, "nodes": desired_changed}),
            now,
            fx,
        );
    }
    // A promotion is made after this step (it needs the draft's content, read from the
    // store); the lock is released only once it is done.
    if release && entry.stored.promote.is_some() {
        entry.stored.release = true;
        release = false;
    }
    let lock = if release {
        entry.stored.lock.take()
    } else {
        None
    };
    if entry.stored.outcome.is_some() && entry.stored.ended_current.is_none() {
        entry.stored.ended_current = Some(state.configs.current(&config).map(|m| m.rev));
    }
    let Some(entry) = state.rollouts.get_mut(id) else {
        return;
    };
    let record = entry.record();
    if let Some(reason) = hold {
        let req = PlaceHold {
            resource: resource.clone(),
            operator: format!("rollout {id}"),
            reason,
            duration_ms: state.locks.config().max_hold_ms,
            require_ack: false,
        };
        if let Err(e) = state.locks.place_hold(req, now, fx) {
            tracing::error!(rollout = %id, error = ?e, "could not place the rollout's FROZEN hold");
        }
    }
    if let Some(lock) = lock
        && let Err(e) = state.locks.release(lock.lease, Some(lock.token), now, fx)
    {
        tracing::warn!(rollout = %id, error = ?e, "the rollout's lease was already gone");
    }
    fx.push(Effect::Persist(record));
}

/// Feeds a report (an [`Event::Report`]) about `config` to the running rollout of the config,
/// if any.
pub fn on_report(state: &mut State, config: &str, report: Event, now: Now, fx: &mut Effects) {
    let Some(id) = state.rollouts.running(config).map(|e| e.stored.id.clone()) else {
        return;
    };
    // A report about a node outside the rollout is ignored by the planner; an ended one
    // refuses: neither is the reporter's concern.
    let _ = feed(state, &id, report, now, fx);
}

/// Renews the running rollouts' leases (a lease that is gone pauses its rollout:
/// `LockLost`), and sends `Tick` to every one whose planner deadline has come.
pub fn advance(state: &mut State, now: Now, fx: &mut Effects) {
    state.rollouts.seen(now);
    // Every running rollout's lease is renewed below and every due planner ticked; the reaper
    // wakes for the next of either (`Rollouts::renewal_due`, `Rollouts::next_deadline`).
    state.rollouts.reaped(now);
    for id in state.rollouts.running_ids() {
        let Some(entry) = state.rollouts.get(&id) else {
            continue;
        };
        if let Some(lock) = entry.stored.lock
            && state
                .locks
                .renew(lock.lease, Some(lock.token), now, fx)
                .is_err()
        {
            if let Some(entry) = state.rollouts.get_mut(&id) {
                entry.stored.lock = None;
            }
            audit(
                &resource_of(&entry_config(state, &id)),
                "rollout_lock_lost",
                json!({"rollout": id, "lease": lock.lease, "token": lock.token}),
                now,
                fx,
            );
            if feed(state, &id, Event::LockLost, now, fx).is_err() {
                // Ended already (a promotion was pending): the record still says so.
                if let Some(entry) = state.rollouts.get_mut(&id) {
                    fx.push(Effect::Persist(entry.record()));
                }
            }
            continue;
        }
        let due = state
            .rollouts
            .get(&id)
            .and_then(|e| e.planner.as_ref())
            .and_then(|p| p.next_deadline(now.wall_ms))
            .is_some_and(|at| at <= now.wall_ms);
        let gates_due = !due_metric_results(state, &id, now).is_empty();
        if due || gates_due {
            let _ = feed(state, &id, Event::Tick, now, fx);
        }
    }
}

fn entry_config(state: &State, id: &str) -> String {
    state
        .rollouts
        .get(id)
        .map(|e| e.stored.spec.config.clone())
        .unwrap_or_default()
}

/// Tells every running rollout which of its endpoints came online or went offline since it
/// last heard (the agents' presence: an open desired stream, or heard from lately).
pub fn sync_online(state: &mut State, now: Now, fx: &mut Effects) {
    for id in state.rollouts.running_ids() {
        let changes: Vec<Event> = state
            .rollouts
            .get(&id)
            .and_then(|e| e.planner.as_ref())
            .map(|p| {
                p.endpoints()
                    .into_iter()
                    .filter_map(|e| {
                        let online = state.agents.is_online(&e.node, now.wall_ms);
                        (online != e.online).then_some(if online {
                            Event::Online { node: e.node }
                        } else {
                            Event::Offline { node: e.node }
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        for event in changes {
            let _ = feed(state, &id, event, now, fx);
        }
    }
}
