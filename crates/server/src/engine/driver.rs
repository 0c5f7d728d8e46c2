//! The driver's one path for every operation: step under the lock, submit the batch, wait for
//! it, deliver (see the module docs of [`super`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use locksmith_core::{AuditRecord, Effect, Effects, LeaseView, Mutation, Now};
use locksmith_store::{CommitTicket, StoreError};

use super::waiters::WaitEnd;
use super::{Engine, EngineError, State, Stepped, lock, step_as};

/// What an operation's caller finishes with (see [`Engine::finish`]).
#[must_use]
pub(super) enum Pending {
    /// Its batch's commit, whose callback publishes the audit records and delivers the rest
    /// once it is durable — even if the caller goes away. `hands_on`: the deliveries grant the
    /// lock to a waiter, and others still wait.
    Commit {
        ticket: CommitTicket,
        hands_on: bool,
    },
    /// Nothing to commit: deliveries to make at once.
    Deliver(Effects),
}

impl Engine {
    /// Steps `op` on the state at the clock's `now` and submits the batch, in state order.
    /// When `barrier` holds for the reply, an empty batch is submitted too, so the reply waits
    /// for every earlier batch to be durable. Refused, without touching the state, once
    /// storage has failed.
    ///
    /// Lock order, everywhere: state, then waiters.
    pub(super) fn with_state<T>(
        &self,
        barrier: impl FnOnce(&T) -> bool,
        op: impl FnOnce(&mut State, Now, &mut Effects) -> T,
    ) -> Result<(T, Pending), StoreError> {
        let mut state = lock(&self.inner.state);
        if let Some(failure) = self.refusal() {
            return Err(failure);
        }
        let before = state.next_deadline();
        let tokens_before = state.tokens.revision();
        let Stepped {
            reply,
            batch,
            deliveries,
        } = step_as(
            &mut state,
            self.inner.clock.now(),
            self.actor.as_deref(),
            op,
        );
        // A change to the tokens is published once durable, as its audit records are.
        let tokens = (state.tokens.revision() != tokens_before).then(|| state.tokens.clone());
        let pending = if !batch.is_empty() || barrier(&reply) {
            let mut fence = 0;
            let audits: Vec<AuditRecord> = batch
                .iter()
                .filter_map(|m| match m {
                    Mutation::AppendAudit(r) => Some(r.clone()),
                    Mutation::FenceHighWater(f) => {
                        fence = fence.max(*f);
                        None
                    }
                    _ => None,
                })
                .collect();
            // A grant while others still wait: a busy queue, where the next handoff depends on
            // the new holder hearing of its grant, not on this caller's answer.
            let hands_on = state.locks.waiter_count() > 0
                && deliveries
                    .iter()
                    .any(|effect| matches!(effect, Effect::Granted { .. }));
            // Runs once the batch is durable, whether or not this caller is still there to
            // wait for it: a release whose client disconnects mid-commit still hands the lock
            // to the next waiter.
            let engine = self.clone();
            Pending::Commit {
                ticket: self.inner.committer.submit_then(batch, move || {
                    engine.publish(fence, audits, deliveries, tokens)
                }),
                hands_on,
            }
        } else {
            Pending::Deliver(deliveries)
        };
        let after = state.next_deadline();
        drop(state);
        if after.is_some() && (before.is_none() || after < before) {
            self.inner.reaper.notify_one();
        }
        Ok((reply, pending))
    }

    /// Waits for the operation's batch to be durable — by then its audit records are
    /// published and its deliveries made ([`publish`](Self::publish), run by the ticket) —
    /// or, with nothing to commit, delivers now.
    pub(super) async fn finish(&self, pending: Pending) -> Result<(), StoreError> {
        match pending {
            Pending::Commit { ticket, hands_on } => {
                let started = std::time::Instant::now();
                if let Err(error) = ticket.wait().await {
                    let _ = self.refusal();
                    return Err(error);
                }
                self.inner.metrics.observe_commit(started.elapsed());
                if hands_on {
                    // The grant just woke the new holder's task. Let it run before this one
                    // answers its own caller (the releaser, usually), so the grant goes out
                    // first: with others queued, the next handoff waits for the grant, not for
                    // the release's answer. (With nobody else queued the releaser may be the
                    // next to ask, and delaying its answer measured 13 % fewer handoffs at 2
                    // clients.)
                    tokio::task::yield_now().await;
                }
            }
            Pending::Deliver(effects) => self.deliver(effects),
        }
        Ok(())
    }

    /// Runs an operation that needs no special driver handling, durably.
    pub(super) async fn run<T, E>(
        &self,
        op: impl FnOnce(&mut State, Now, &mut Effects) -> Result<T, E>,
    ) -> Result<T, EngineError<E>> {
        let (result, pending) = self.with_state(|_| false, op)?;
        self.finish(pending).await?;
        result.map_err(EngineError::Refused)
    }

    /// After a batch is durable: counts and publishes its audit records, then makes its
    /// deliveries. Run by the commit's ticket: in the waiting task, or on the commit thread if
    /// the caller went away — so it never blocks and never awaits.
    fn publish(
        &self,
        fence: u64,
        audits: Vec<AuditRecord>,
        deliveries: Effects,
        tokens: Option<locksmith_auth::TokenTable>,
    ) {
        self.inner.durable_fence.fetch_max(fence, Ordering::AcqRel);
        if let Some(tokens) = tokens {
            self.publish_tokens(tokens);
        }
        for record in audits {
            self.inner.metrics.count(&record);
            self.inner.watches.published(&record);
            // No subscribers is fine: the record is durable in the audit log regardless.
            let _ = self.inner.events.send(Arc::new(record));
        }
        self.deliver(deliveries);
    }

    /// Delivers grants and timeouts to queued waiters. A grant whose waiter has gone away is
    /// released at once, so an abandoned wait never holds a lock.
    fn deliver(&self, effects: Effects) {
        for effect in effects {
            match effect {
                Effect::Granted { waiter, lease } => {
                    let tx = lock(&self.inner.waiters).remove(&waiter);
                    let undelivered = match tx {
                        Some(tx) => tx.send(Ok(lease)).err().and_then(|r| r.ok()),
                        None => Some(lease),
                    };
                    if let Some(lease) = undelivered {
                        self.release_abandoned(lease, "the waiter went away before its grant");
                    }
                }
                Effect::WaitTimedOut { waiter, error } => {
                    if let Some(tx) = lock(&self.inner.waiters).remove(&waiter) {
                        let _ = tx.send(Err(WaitEnd::Refused(error)));
                    }
                }
                Effect::Ended { .. } | Effect::Persist(_) => {}
            }
        }
    }

    /// Releases a grant nobody is left to receive. Called on the commit thread too (from
    /// [`publish`](Self::publish)), where there is no runtime context: the release is spawned on
    /// the runtime the engine was made on.
    pub(super) fn release_abandoned(&self, lease: LeaseView, why: &'static str) {
        tracing::info!(lease = %lease.lease, resource = %lease.resource, why,
            "nobody is left to receive a grant; releasing it");
        // The server releases it, for nobody: not as whoever's step made the grant.
        let engine = self.as_server();
        let (id, token) = (lease.lease, lease.token);
        let release = async move {
            if let Err(e) = engine.release(id, Some(token)).await {
                tracing::warn!(lease = %id, error = ?e, "could not release abandoned grant");
            }
        };
        match tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| self.inner.runtime.clone())
        {
            Some(runtime) => drop(runtime.spawn(release)),
            None => tracing::warn!(lease = %id,
                "no runtime to release the abandoned grant on; it expires with its lease"),
        }
    }
}
