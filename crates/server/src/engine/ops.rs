//! The engine's operations: each a step on the state, made durable before it answers.

use std::sync::atomic::Ordering;

use locksmith_core::{
    Acquire, AcquireError, AcquireOutcome, BreakError, BreakOutcome, DeadProcess, FenceError,
    FenceToken, HoldError, HoldId, HoldView, HolderView, InvalidRequest, LeaseError, LeaseId,
    LeaseView, PlaceHold, Released, ReportError, Vantage,
};
use locksmith_store::StoreError;
use tokio::sync::oneshot;

use std::sync::Arc;

use locksmith_auth::{Access, Forbidden};

use super::waiters::{GrantGuard, WaitGuard};
use super::{Actor, Denied, Engine, EngineError, State, lock};

impl Engine {
    /// Acquires a lock, waiting in the FIFO queue if asked to. Returns only once the grant is
    /// durable. If the caller goes away while queued (the future is dropped), the wait is
    /// withdrawn; if the grant raced with that, the undeliverable lease is released — and so is
    /// a lease granted at once whose caller goes away before it is durable.
    ///
    /// Made for an [`Actor`], the lease is that actor's: its token alone renews and releases it
    /// (see `Acquirers`). A process that holds a lease acquired with another token does not get
    /// it back for this one (403): its holder's token must ask.
    pub async fn acquire(
        &self,
        req: Acquire,
    ) -> Result<LeaseView, EngineError<Denied<AcquireError>>> {
        // Pass the committer even with nothing to write: a re-acquire must not be answered
        // before the grant it returns is durable, nor a refusal before the grant it names. A
        // queued acquire needs no barrier: its answer is a later grant, committed after every
        // batch before it (an empty job here would only take a turn of the committer, and
        // under contention keep the next release's commit off the fast inline path).
        let started = std::time::Instant::now();
        let barrier = |(result, _): &(Result<AcquireOutcome, _>, _)| {
            !matches!(result, Ok(AcquireOutcome::Queued(_)))
        };
        let actor = self.actor.clone();
        let (result, pending) = self.with_state(barrier, |state, now, fx| {
            let result = state.locks.acquire(req, now, fx);
            let result = match (result, &actor) {
                (Ok(outcome), Some(actor)) => own(state, actor, outcome),
                (result, _) => result.map_err(Denied::Refused),
            };
            // Registered under the state lock, before any grant to it can be delivered.
            let rx = match &result {
                Ok(AcquireOutcome::Queued(id)) => {
                    let (tx, rx) = oneshot::channel();
                    lock(&self.inner.waiters).insert(*id, tx);
                    Some((*id, rx))
                }
                _ => None,
            };
            (result, rx)
        })?;
        let (result, rx) = result;
        // Armed before the first await, so a caller that goes away is withdrawn from the queue.
        let guard = rx.map(|(waiter, rx)| WaitGuard {
            engine: self.clone(),
            waiter,
            rx: Some(rx),
        });
        // Likewise a grant made now: a caller that goes away while it is on its way to disk
        // (a client that disconnects, a withdrawn wire request) would otherwise leave a lease
        // nobody knows of until its TTL. Not a re-acquire: the caller held that lease before.
        let granted = GrantGuard {
            engine: self,
            lease: match &result {
                Ok(AcquireOutcome::Granted(view)) if !view.reacquired => Some(view),
                _ => None,
            },
        };
        let finished = self.finish(pending).await;
        granted.disarm();
        finished?;
        let outcome = match result {
            Ok(AcquireOutcome::Granted(view)) => Ok(view),
            Ok(AcquireOutcome::Queued(_)) => match guard {
                Some(guard) => guard.wait().await.map_err(|e| match e {
                    EngineError::Refused(e) => EngineError::Refused(Denied::Refused(e)),
                    EngineError::Storage(e) => EngineError::Storage(e),
                    EngineError::ShuttingDown => EngineError::ShuttingDown,
                }),
                None => Err(EngineError::ShuttingDown),
            },
            Err(e) => Err(EngineError::Refused(e)),
        };
        if outcome.is_ok() {
            self.inner.metrics.observe_grant(started.elapsed());
        }
        outcome
    }

    /// Renews a lease. Renewals are not persisted (recovery treats every lease as renewed), so
    /// this never waits for storage unless the clock expired something on the way.
    ///
    /// No barrier, unlike a fence check: a renewal writes nothing and vouches for nothing its
    /// caller did not already have. The lease id it names was learnt from a grant's answer,
    /// sent only once that grant was durable (or from a listing, likewise), so renewing it
    /// shows its caller nothing the disk may lack; and a renewal raced by a failing commit is
    /// refused by the next request anyway. (A caller guessing ids could renew a grant still on
    /// its way to disk, and would learn its token — which equals the id it guessed.)
    ///
    /// Made for an [`Actor`], refused (403) for a lease outside its prefixes or node, or
    /// acquired with another token unless it may operate; a lease whose acquirer is unknown
    /// (granted before this server started) becomes the actor's (see `Acquirers`).
    pub async fn renew(
        &self,
        lease: LeaseId,
        token: Option<FenceToken>,
    ) -> Result<LeaseView, EngineError<Denied<LeaseError>>> {
        let actor = self.actor.clone();
        self.run(|state, now, fx| {
            if let Some(actor) = &actor {
                may_touch(state, actor, lease, Claim::IfUnknown).map_err(Denied::Forbidden)?;
            }
            Ok(state.locks.renew(lease, token, now, fx)?)
        })
        .await
    }

    /// Releases a lease; durable before it returns. Made for an [`Actor`], refused as a
    /// renewal is (a lease whose acquirer is unknown is not claimed: it ends).
    pub async fn release(
        &self,
        lease: LeaseId,
        token: Option<FenceToken>,
    ) -> Result<Released, EngineError<Denied<LeaseError>>> {
        let actor = self.actor.clone();
        self.run(|state, now, fx| {
            if let Some(actor) = &actor {
                may_touch(state, actor, lease, Claim::No).map_err(Denied::Forbidden)?;
            }
            Ok(state.locks.release(lease, token, now, fx)?)
        })
        .await
    }

    /// Checks a fencing token against the live holders of `resource`. A pass answers only
    /// once the grant it vouches for is durable (a barrier follows the check): a token whose
    /// grant is still on its way to disk — and might never reach it — is never vouched for.
    pub async fn check_fence(
        &self,
        resource: &str,
        token: FenceToken,
    ) -> Result<HolderView, EngineError<FenceError>> {
        let (result, pending) = self.with_state(
            |_| true,
            |state, now, fx| state.locks.check_fence(resource, token, now, fx),
        )?;
        self.finish(pending).await?;
        result.map_err(EngineError::Refused)
    }

    /// Runs out whatever is due (leases, waits, lock-delays, holds); durable before it
    /// returns. Called by the reaper; returns how many leases expired.
    pub async fn reap(&self) -> Result<usize, StoreError> {
        let (expired, pending) =
            self.with_state(|_| false, |state, now, fx| state.advance(now, fx))?;
        self.finish(pending).await?;
        let now = self.inner.clock.now();
        self.inner
            .last_reap_ms
            .store(now.wall_ms, Ordering::Relaxed);
        self.inner
            .last_reap_mono
            .store(now.mono.0, Ordering::Relaxed);
        Ok(expired)
    }

    /// Places a hold.
    pub async fn place_hold(&self, req: PlaceHold) -> Result<HoldView, EngineError<HoldError>> {
        self.run(|state, now, fx| state.locks.place_hold(req, now, fx))
            .await
    }

    /// Acknowledges a pending hold.
    pub async fn ack_hold(
        &self,
        hold: HoldId,
        operator: &str,
    ) -> Result<HoldView, EngineError<HoldError>> {
        self.run(|state, now, fx| state.locks.ack_hold(hold, operator, now, fx))
            .await
    }

    /// Lifts a hold.
    pub async fn lift_hold(
        &self,
        hold: HoldId,
        operator: &str,
    ) -> Result<HoldView, EngineError<HoldError>> {
        self.run(|state, now, fx| state.locks.lift_hold(hold, operator, now, fx))
            .await
    }

    /// Resizes a semaphore now (growing hands free slots to the queue at once; shrinking keeps
    /// every holder and grants nothing until they are fewer than the new size). Returns the old
    /// size, or `None` if the resource was neither held nor awaited.
    pub async fn resize(
        &self,
        resource: &str,
        slots: u32,
    ) -> Result<Option<u32>, EngineError<InvalidRequest>> {
        self.run(|state, now, fx| state.locks.resize(resource, slots, now, fx))
            .await
    }

    /// Breaks a lock.
    pub async fn break_lock(
        &self,
        resource: &str,
        lease: Option<LeaseId>,
        operator: &str,
        reason: &str,
        freeze_ms: u64,
    ) -> Result<BreakOutcome, EngineError<BreakError>> {
        self.run(|state, now, fx| {
            state
                .locks
                .break_lock(resource, lease, operator, reason, freeze_ms, now, fx)
        })
        .await
    }

    /// Applies a liveness report made `from` a node: its boot id first (older-boot leases of the
    /// node are reclaimed), then each dead holder (accepted only from the holder's own node,
    /// boot and PID namespace). Returns every lease the report reclaimed, as the table says
    /// (`LockTable::report_liveness`), and the refused evidence.
    pub async fn report_liveness(
        &self,
        from: Vantage<'_>,
        reported_by: &str,
        dead: Vec<DeadProcess>,
    ) -> Result<(Vec<LeaseId>, Vec<ReportError>), StoreError> {
        let (report, pending) = self.with_state(
            |_| false,
            |state, now, fx| {
                state
                    .locks
                    .report_liveness(from, reported_by, dead, now, fx)
            },
        )?;
        self.finish(pending).await?;
        Ok((report.reclaimed, report.refused))
    }
}

/// Whether a renewal makes its actor the acquirer of a lease whose acquirer is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    IfUnknown,
    No,
}

/// Checks `actor` may renew or release `lease`: within its prefixes and node, and acquired with
/// its token (or by nobody known), unless it may touch any lease. A lease that is not live
/// passes: the table says what became of it.
fn may_touch(
    state: &mut State,
    actor: &Arc<Actor>,
    lease: LeaseId,
    claim: Claim,
) -> Result<(), Forbidden> {
    let Some((resource, node)) = state.locks.lease_scope(lease) else {
        return Ok(());
    };
    actor.principal.may(Access::Lease {
        resource,
        owner_node: Some(node),
    })?;
    if actor.any_lease {
        return Ok(());
    }
    match state.acquirers.of(lease) {
        Some(by) if by.audit.token != actor.audit.token => Err(Forbidden::NotAcquirer {
            name: actor.principal.name.clone(),
            lease: lease.0,
            acquired_by: by.audit.to_string(),
        }),
        Some(_) => Ok(()),
        None => {
            if claim == Claim::IfUnknown {
                state.acquirers.granted(lease, Arc::clone(actor));
            }
            Ok(())
        }
    }
}

/// An acquire's outcome made for `actor`: a grant is the actor's, a queued waiter's grant will
/// be; a lease handed back to its process (`reacquired`) is refused if another token acquired
/// it, unless the actor may touch any lease.
fn own(
    state: &mut State,
    actor: &Arc<Actor>,
    outcome: AcquireOutcome,
) -> Result<AcquireOutcome, Denied<AcquireError>> {
    match &outcome {
        AcquireOutcome::Granted(view) => {
            if view.reacquired && !actor.any_lease {
                if let Some(by) = state.acquirers.of(view.lease) {
                    if by.audit.token != actor.audit.token {
                        return Err(Denied::Forbidden(Forbidden::NotAcquirer {
                            name: actor.principal.name.clone(),
                            lease: view.lease.0,
                            acquired_by: by.audit.to_string(),
                        }));
                    }
                }
            }
            state.acquirers.granted(view.lease, Arc::clone(actor));
        }
        AcquireOutcome::Queued(waiter) => state.acquirers.queued(*waiter, Arc::clone(actor)),
    }
    Ok(outcome)
}
