//! The engine's rollout operations: the planner of `locksmith-rollout` driven through the
//! step. Each planner event runs in one step, and the step's batch holds the rollout's new
//! record — the planner's state together with what its commands changed (overrides, a
//! pending promotion) — and the records of the commands that touch other domains (a FROZEN
//! hold, the lease's release, the draft's re-write), so a restart resumes from a state whose
//! commands all took effect and tells no endpoint twice.
//!
//! A rollout holds `configs/NAME` with a lease owned by the server for its whole run. It
//! starts by re-writing the revision it rolls out as a new draft under that lease: the agent
//! refuses a revision newer than the one current when it learned a fence unless it was written
//! under at least that fence, so every revision a rollout sends must carry its own token.

use locksmith_api::agents::ApplyState;
use locksmith_config::{Author, WriteRequest, Writer, resource_of};
use locksmith_core::{
    Acquire, AcquireOutcome, AuditKind, AuditRecord, DomainEvent, Effect, Effects, Mutation, Now,
    Owner, PlaceHold, Trusted,
};
use locksmith_rollout::{Command, Event, NewError, Refusal, ReportState, Rollout, RolloutSpec};
use serde_json::json;

use super::{Engine, EngineError, State};
use crate::domains::rollouts::model::{Entry, RolloutLock, StoredRollout};

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
    /// Metric and query gates need agent metrics, which agents do not report yet.
    GatesNotSupported,
    /// The planner refused the event.
    Planner(Refusal),
    /// Only a queued rollout can be cancelled.
    NotQueued(String),
}

fn audit(resource: &str, kind: &str, detail: serde_json::Value, now: Now, fx: &mut Effects) {
    // The kinds are constants of this module, valid by construction.
    if let Ok(event) = DomainEvent::new(kind, detail) {
        fx.push(Effect::Persist(Mutation::AppendAudit(AuditRecord {
            at_ms: now.wall_ms,
            ..AuditRecord::new(resource, AuditKind::Domain(event))
        })));
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

/// Feeds `event` to rollout `id`'s planner and carries out its commands; pushes the rollout's
/// record. A refusal changes nothing.
pub fn feed(
    state: &mut State,
    id: &str,
    event: Event,
    now: Now,
    fx: &mut Effects,
) -> Result<(), RolloutRefusal> {
    state.rollouts.seen(now);
    let entry = state
        .rollouts
        .get_mut(id)
        .ok_or_else(|| RolloutRefusal::NotFound(id.to_owned()))?;
    let planner = entry
        .planner
        .as_mut()
        .ok_or(RolloutRefusal::Planner(Refusal::NotStarted))?;
    let commands = planner
        .handle(now.wall_ms, event)
        .map_err(RolloutRefusal::Planner)?;
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
    let mut desired_changed = Vec::new();
    let mut hold = None;
    let mut release = false;
    for command in commands {
        match command {
            Command::SetDesired { rev, nodes } => {
                for node in nodes {
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
            Command::ClearOverrides { nodes } => {
                for node in nodes {
                    entry.stored.overrides.remove(&node);
                    desired_changed.push((node, 0));
                }
            }
            Command::Freeze { reason } => hold = Some(reason),
            // Metric and query gates are refused at start (no agent metrics yet): the apply
            // state, which the planner checks itself, is the only gate that runs.
            Command::RunGate { .. } => {}
            Command::WaitForApproval { wave, needed } => audit(
                &resource,
                "rollout_hold_point",
                json!({"rollout": id, "wave": wave, "needed": needed}),
                now,
                fx,
            ),
            Command::PromoteDraft { rev } => entry.stored.promote = Some(rev),
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
    let ending = entry.stored.outcome.is_some() && entry.stored.ended_current.is_none();
    let reason_id = entry.stored.id.clone();
    if ending {
        entry.stored.ended_current = Some(state.configs.current(&config).map(|m| m.rev));
    }
    let entry = state.rollouts.get_mut(id).expect("present above");
    let record = entry.record();
    if let Some(reason) = hold {
        let req = PlaceHold {
            resource: resource.clone(),
            operator: format!("rollout {reason_id}"),
            reason,
            duration_ms: state.locks.config().max_hold_ms,
            require_ack: false,
        };
        if let Err(e) = state.locks.place_hold(req, now, fx) {
            tracing::error!(rollout = %reason_id, error = ?e, "could not place the rollout's FROZEN hold");
        }
    }
    if let Some(lock) = lock
        && let Err(e) = state.locks.release(lock.lease, Some(lock.token), now, fx)
    {
        tracing::warn!(rollout = %reason_id, error = ?e, "the rollout's lease was already gone");
    }
    fx.push(Effect::Persist(record));
}

/// Starts rollout `id` if it is the oldest queued one of its config, nothing else of the config
/// runs, and the lock is free: takes the lock, re-writes `content` (revision `spec.rev`'s) as a
/// draft under it, plans over the endpoints now, and sends `Started`. Otherwise it stays queued.
pub fn try_start(
    state: &mut State,
    id: &str,
    content: Vec<u8>,
    author: Author,
    now: Now,
    fx: &mut Effects,
) -> Result<bool, RolloutRefusal> {
    let Some(entry) = state.rollouts.get(id) else {
        return Err(RolloutRefusal::NotFound(id.to_owned()));
    };
    let spec = entry.stored.spec.clone();
    let config = spec.config.clone();
    if !entry.queued()
        || state.rollouts.running(&config).is_some()
        || state
            .rollouts
            .next_queued(&config)
            .map(|e| e.stored.id.as_str())
            != Some(id)
    {
        return Ok(false);
    }
    let meta = state
        .configs
        .revision(&config, spec.rev)
        .ok_or_else(|| RolloutRefusal::RevisionNotFound(config.clone(), spec.rev))?
        .clone();
    let endpoints = state.agents.endpoints(&config, now.wall_ms);
    // Checked before the lock is taken, so a plan that cannot run holds nothing.
    Rollout::new(spec.clone(), &endpoints).map_err(RolloutRefusal::New)?;
    let resource = resource_of(&config);
    let acquire = Acquire {
        resource: resource.clone(),
        owner: owner(id),
        ttl_ms: LEASE_TTL_MS,
        slots: 1,
        wait_ms: 0,
        lock_delay_ms: 0,
        trusted: Trusted {
            resize: false,
            long_ttl: true,
            synthetic_owner: true,
        },
    };
    let view = match state.locks.acquire(acquire, now, fx) {
        Ok(AcquireOutcome::Granted(view)) => view,
        // Someone else holds the config (an operator's write): it stays queued, and the
        // engine's tick tries again.
        Ok(AcquireOutcome::Queued(_)) | Err(_) => return Ok(false),
    };
    let writer = Writer {
        author,
        owner: view.owner.clone(),
        token: view.token,
    };
    let request = WriteRequest {
        name: config.clone(),
        format: meta.format,
        content,
        message: format!("rollout {id} of revision {}", spec.rev),
        draft: true,
        writer,
        max_bytes: usize::MAX,
    };
    let applied = match state.configs.write(request, now.wall_ms) {
        Ok(applied) => applied,
        Err(e) => {
            tracing::error!(rollout = %id, error = ?e, "the rollout's draft was refused");
            let _ = state.locks.release(view.lease, Some(view.token), now, fx);
            return Ok(false);
        }
    };
    let fence = super::FenceArg {
        lease: view.lease,
        token: view.token,
    };
    let draft = super::configs::persist(applied, &resource, Some(fence), now, fx);
    let rolled = RolloutSpec {
        rev: draft.rev,
        draft: true,
        ..spec
    };
    let planner = Rollout::new(rolled, &endpoints).map_err(RolloutRefusal::New)?;
    let mut entry = state.rollouts.get(id).expect("checked above").clone();
    entry.planner = Some(planner);
    entry.stored.rolled_rev = Some(draft.rev);
    entry.stored.lock = Some(RolloutLock {
        lease: view.lease,
        token: view.token,
    });
    state.rollouts.insert(entry);
    audit(
        &resource,
        "rollout_started",
        json!({"rollout": id, "rev": spec_rev(state, id), "draft": draft.rev, "token": view.token}),
        now,
        fx,
    );
    feed(state, id, Event::Started, now, fx)?;
    Ok(true)
}

fn spec_rev(state: &State, id: &str) -> u64 {
    state.rollouts.get(id).map_or(0, |e| e.stored.spec.rev)
}

/// Queues a new rollout of `spec`; returns its id. Refuses what cannot run.
pub fn create(
    state: &mut State,
    spec: RolloutSpec,
    now: Now,
    fx: &mut Effects,
) -> Result<String, RolloutRefusal> {
    if !spec.gates.is_empty() {
        return Err(RolloutRefusal::GatesNotSupported);
    }
    if state.configs.head(&spec.config).is_none() {
        return Err(RolloutRefusal::ConfigNotFound(spec.config.clone()));
    }
    if state.configs.revision(&spec.config, spec.rev).is_none() {
        return Err(RolloutRefusal::RevisionNotFound(
            spec.config.clone(),
            spec.rev,
        ));
    }
    let endpoints = state.agents.endpoints(&spec.config, now.wall_ms);
    Rollout::new(spec.clone(), &endpoints).map_err(RolloutRefusal::New)?;
    let (id, seq) = state.rollouts.next_id();
    let mut entry = Entry {
        stored: StoredRollout {
            id: id.clone(),
            seq,
            spec,
            created_ms: now.wall_ms,
            rolled_rev: None,
            planner: None,
            lock: None,
            overrides: Default::default(),
            promote: None,
            release: false,
            cancelled: false,
            outcome: None,
            ended_current: None,
        },
        planner: None,
    };
    fx.push(Effect::Persist(entry.record()));
    audit(
        &resource_of(&entry.stored.spec.config),
        "rollout_created",
        json!({"rollout": id, "spec": entry.stored.spec}),
        now,
        fx,
    );
    state.rollouts.insert(entry);
    Ok(id)
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

/// Sends `Tick` to every running rollout whose planner deadline has come, and renews the
/// leases of the running ones.
pub fn advance(state: &mut State, now: Now, fx: &mut Effects) {
    state.rollouts.seen(now);
    for id in state.rollouts.running_ids() {
        let Some(entry) = state.rollouts.get(&id) else {
            continue;
        };
        if let Some(lock) = entry.stored.lock {
            let _ = state.locks.renew(lock.lease, Some(lock.token), now, fx);
        }
        let due = entry
            .planner
            .as_ref()
            .and_then(|p| p.next_deadline(now.wall_ms))
            .is_some_and(|at| at <= now.wall_ms);
        if due {
            let _ = feed(state, &id, Event::Tick, now, fx);
        }
    }
}

impl Engine {
    /// Who a rollout's draft is written by.
    fn rollout_author(&self) -> Author {
        match &self.actor {
            Some(actor) => Author {
                token: actor.principal.token.clone(),
                name: actor.principal.name.clone(),
            },
            None => Author {
                token: String::new(),
                name: crate::app::lab_principal().name,
            },
        }
    }

    /// Queues a rollout and starts it if nothing else of its config runs; durable before it
    /// returns. Returns its id.
    pub async fn rollout_start(
        &self,
        spec: RolloutSpec,
    ) -> Result<String, EngineError<RolloutRefusal>> {
        let config = spec.config.clone();
        let id = self
            .run(move |state, now, fx| create(state, spec, now, fx))
            .await?;
        self.rollout_kick(&config).await?;
        Ok(id)
    }

    /// Starts the oldest queued rollout of `config` if it can start now (reads its revision's
    /// content first: the step never waits for the disk).
    pub async fn rollout_kick(&self, config: &str) -> Result<(), EngineError<RolloutRefusal>> {
        let next = self
            .read(|state, _| {
                let e = state.rollouts.next_queued(config)?;
                let meta = state.configs.revision(config, e.stored.spec.rev)?;
                Some((e.stored.id.clone(), meta.sha256.clone()))
            })
            .await?;
        let Some((id, sha)) = next else {
            return Ok(());
        };
        let Some(content) = self.config_blob(&sha).await? else {
            return Ok(());
        };
        let author = self.rollout_author();
        self.run(move |state, now, fx| try_start(state, &id, content, author, now, fx))
            .await?;
        Ok(())
    }

    /// Feeds an operator's event (approve, pause, resume, abort) to rollout `id`; durable
    /// before it returns.
    pub async fn rollout_event(
        &self,
        id: &str,
        event: Event,
    ) -> Result<(), EngineError<RolloutRefusal>> {
        self.run(move |state, now, fx| feed(state, id, event, now, fx))
            .await
    }
}
