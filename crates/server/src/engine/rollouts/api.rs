//! The engine's async rollout operations: each a step (or a read) of the functions beside it.

use locksmith_config::resource_of;
use locksmith_rollout::{Event, Refusal, RolloutSpec, Verdict};
use locksmith_store::StoreError;

use super::start::acquire;
use super::{RolloutRefusal, cancel, create, feed, finalize, sync_online, try_start};
use crate::domains::rollouts::model::Rollouts;
use crate::engine::{Engine, EngineError, State};

impl Engine {
    /// Queues a rollout and starts it if nothing else of its config runs and its lock is free;
    /// durable before it returns. `prometheus`: the server can run `prom:` gates.
    pub async fn rollout_start(
        &self,
        spec: RolloutSpec,
        prometheus: bool,
    ) -> Result<String, EngineError<RolloutRefusal>> {
        let config = spec.config.clone();
        let id = self
            .run(move |state, now, fx| create(state, spec, prometheus, now, fx))
            .await?;
        self.rollout_kick(&config).await?;
        Ok(id)
    }

    /// Starts the oldest queued rollout of `config` if it can start now (reads its revision's
    /// content first: the step never waits for the disk). Returns whether one started.
    pub async fn rollout_kick(&self, config: &str) -> Result<bool, EngineError<RolloutRefusal>> {
        let next = self
            .read(|state, now| {
                if state.rollouts.running(config).is_some() {
                    return None;
                }
                // Held by someone else (an operator's write): no use reading the content.
                if !state
                    .locks
                    .resource(&resource_of(config), now)
                    .holders
                    .is_empty()
                {
                    return None;
                }
                let e = state.rollouts.next_queued(config)?;
                let meta = state.configs.revision(config, e.stored.spec.rev)?;
                Some((e.stored.id.clone(), meta.sha256.clone()))
            })
            .await?;
        let Some((id, sha)) = next else {
            return Ok(false);
        };
        let Some(content) = self.config_blob(&sha).await? else {
            return Ok(false);
        };
        self.run(move |state, now, fx| try_start(state, &id, content, now, fx))
            .await
    }

    /// Feeds an operator's event (approve, pause, resume, abort) to rollout `id`; durable
    /// before it returns. A resume after the lock was lost takes the lock again first (and is
    /// refused, changing nothing, while someone else holds it).
    pub async fn rollout_event(
        &self,
        id: &str,
        event: Event,
    ) -> Result<(), EngineError<RolloutRefusal>> {
        self.run(move |state, now, fx| {
            let entry = state
                .rollouts
                .get(id)
                .ok_or_else(|| RolloutRefusal::NotFound(id.to_owned()))?;
            let relock = matches!(event, Event::Resume { .. })
                && entry.stored.lock.is_none()
                && entry.planner.as_ref().is_some_and(|p| {
                    matches!(
                        p.state(),
                        locksmith_rollout::State::Paused {
                            reason: locksmith_rollout::PauseReason::LockLost,
                            ..
                        }
                    )
                });
            if relock {
                let resource = resource_of(&entry.stored.spec.config);
                let Some(lock) = acquire(state, id, &resource, now, fx) else {
                    let holders = state.locks.resource(&resource, now).holders;
                    let line = locksmith_api::hot_line(&resource, &holders, now.wall_ms);
                    return Err(RolloutRefusal::LockHeld {
                        id: id.to_owned(),
                        line,
                    });
                };
                if let Some(entry) = state.rollouts.get_mut(id) {
                    entry.stored.lock = Some(lock);
                }
            }
            feed(state, id, event, now, fx)
        })
        .await
    }

    /// Cancels a queued rollout; durable before it returns.
    pub async fn rollout_cancel(
        &self,
        id: &str,
        principal: &str,
    ) -> Result<(), EngineError<RolloutRefusal>> {
        self.run(move |state, now, fx| cancel(state, id, principal, now, fx))
            .await
    }

    /// Promotes rollout `id`'s pending draft and releases its lock, if it has one pending.
    pub async fn rollout_finalize(&self, id: &str) -> Result<(), EngineError<RolloutRefusal>> {
        let pending = self
            .read(|state, _| {
                let e = state.rollouts.get(id)?;
                let rev = e.stored.promote?;
                let meta = state.configs.revision(&e.stored.spec.config, rev)?;
                Some(meta.sha256.clone())
            })
            .await?;
        let Some(sha) = pending else {
            return Ok(());
        };
        let content = self.config_blob(&sha).await?.unwrap_or_default();
        self.run(move |state, now, fx| {
            finalize(state, id, &content, now, fx);
            Ok(())
        })
        .await
    }

    /// Tells running rollouts about endpoints that came online or went offline.
    pub async fn rollout_sync_online(&self) -> Result<(), EngineError<RolloutRefusal>> {
        self.run(|state, now, fx| {
            sync_online(state, now, fx);
            Ok(())
        })
        .await
    }

    /// Feeds a Prometheus gate's verdict to rollout `id`.
    pub async fn rollout_gate_result(
        &self,
        id: &str,
        wave: usize,
        gate: String,
        verdict: Verdict,
        samples: u64,
    ) -> Result<(), EngineError<RolloutRefusal>> {
        let event = Event::GateResult {
            wave,
            gate,
            verdict,
            samples,
        };
        self.run(
            move |state, now, fx| match feed(state, id, event, now, fx) {
                // The wave is no longer baking (paused, failed, aborted meanwhile): nothing to do.
                Err(RolloutRefusal::Planner {
                    refusal: Refusal::NotBaking { .. },
                    ..
                }) => Ok(()),
                other => other,
            },
        )
        .await
    }

    /// Reads the rollouts (with the rest of the state, for views), durable.
    pub async fn rollouts<T>(
        &self,
        read: impl FnOnce(&Rollouts, &State, locksmith_core::Now) -> T,
    ) -> Result<T, StoreError> {
        self.read(|state, now| read(&state.rollouts, state, now))
            .await
    }
}
