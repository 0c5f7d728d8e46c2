//! A rollout's beginning: queued when asked for, started when its config's lock is free and
//! nothing older of the config waits; or cancelled while queued.

use locksmith_config::{WriteRequest, Writer, resource_of};
use locksmith_core::{Acquire, AcquireOutcome, Effect, Effects, Now, Trusted};
use locksmith_rollout::{Event, Gate, Rollout, RolloutSpec};
use serde_json::json;

use super::{LEASE_TTL_MS, RolloutRefusal, audit, author, feed, owner};
use crate::domains::rollouts::model::{Entry, RolloutLock, StoredRollout};
use crate::engine::State;
use crate::engine::configs::{FenceArg, persist};

/// Queues a new rollout of `spec`; returns its id. Refuses what cannot run: an unknown config
/// or revision, a plan that cannot be made, a selector that selects nobody, a Prometheus gate
/// on a server that has no Prometheus (`prometheus` says whether it has).
pub fn create(
    state: &mut State,
    spec: RolloutSpec,
    prometheus: bool,
    now: Now,
    fx: &mut Effects,
) -> Result<String, RolloutRefusal> {
    if !prometheus
        && let Some(gate) = spec
            .gates
            .iter()
            .find(|g| matches!(g, Gate::Prometheus { .. }))
    {
        return Err(RolloutRefusal::GatesUnavailable(gate.name().to_owned()));
    }
    check(state, &spec, now)?;
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
            sent_ms: Default::default(),
            applied_ms: Default::default(),
            errors: Default::default(),
            gate_run: None,
            ended_ms: None,
            not_promoted: None,
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

/// The config and revision exist and the plan can be made over the endpoints now: the
/// rollout as it would start now, with the endpoints it was planned over.
pub fn check(
    state: &State,
    spec: &RolloutSpec,
    now: Now,
) -> Result<(Rollout, Vec<locksmith_rollout::Endpoint>), RolloutRefusal> {
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
    let rollout = Rollout::new(spec.clone(), &endpoints).map_err(RolloutRefusal::New)?;
    Ok((rollout, endpoints))
}

/// Starts rollout `id` if it is the oldest queued one of its config, nothing else of the config
/// runs, and the lock is free: takes the lock, re-writes `content` (revision `spec.rev`'s) as a
/// draft under it, plans over the endpoints now, and sends `Started`. Otherwise it stays queued.
pub fn try_start(
    state: &mut State,
    id: &str,
    content: Vec<u8>,
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
    let Some(lock) = acquire(state, id, &resource, now, fx) else {
        // Someone else holds the config (an operator's write): it stays queued, and the
        // driver tries again.
        return Ok(false);
    };
    let writer = Writer {
        author: author(&spec),
        owner: owner(id),
        token: lock.token,
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
            let _ = state.locks.release(lock.lease, Some(lock.token), now, fx);
            return Ok(false);
        }
    };
    let fence = FenceArg {
        lease: lock.lease,
        token: lock.token,
    };
    let draft = persist(applied, &resource, Some(fence), now, fx);
    let rolled = RolloutSpec {
        rev: draft.rev,
        draft: true,
        ..spec.clone()
    };
    let planner = Rollout::new(rolled, &endpoints).map_err(RolloutRefusal::New)?;
    let Some(entry) = state.rollouts.get(id) else {
        return Err(RolloutRefusal::NotFound(id.to_owned()));
    };
    let mut entry = entry.clone();
    entry.planner = Some(planner);
    entry.stored.rolled_rev = Some(draft.rev);
    entry.stored.lock = Some(lock);
    state.rollouts.insert(entry);
    audit(
        &resource,
        "rollout_started",
        json!({"rollout": id, "rev": spec.rev, "draft": draft.rev, "token": lock.token.0}),
        now,
        fx,
    );
    feed(state, id, Event::Started, now, fx)?;
    Ok(true)
}

/// Takes `configs/NAME` for rollout `id` with the server as its owner, if it is free now.
pub(super) fn acquire(
    state: &mut State,
    id: &str,
    resource: &str,
    now: Now,
    fx: &mut Effects,
) -> Option<RolloutLock> {
    let acquire = Acquire {
        resource: resource.to_owned(),
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
    match state.locks.acquire(acquire, now, fx) {
        Ok(AcquireOutcome::Granted(view)) => Some(RolloutLock {
            lease: view.lease,
            token: view.token,
        }),
        Ok(AcquireOutcome::Queued(_)) | Err(_) => None,
    }
}

/// Cancels rollout `id` while it is queued (it never started, so nothing else changes).
pub fn cancel(
    state: &mut State,
    id: &str,
    principal: &str,
    now: Now,
    fx: &mut Effects,
) -> Result<(), RolloutRefusal> {
    let entry = state
        .rollouts
        .get_mut(id)
        .ok_or_else(|| RolloutRefusal::NotFound(id.to_owned()))?;
    if !entry.queued() {
        return Err(RolloutRefusal::NotQueued(id.to_owned()));
    }
    entry.stored.cancelled = true;
    entry.stored.ended_ms = Some(now.wall_ms);
    fx.push(Effect::Persist(entry.record()));
    let resource = resource_of(&entry.stored.spec.config);
    audit(
        &resource,
        "rollout_cancelled",
        json!({"rollout": id, "by": principal}),
        now,
        fx,
    );
    Ok(())
}
