//! The engine: the thin driver that runs the sans-IO lock table.
//!
//! Every operation follows one path: lock the table (a `std::sync::Mutex` — the critical section
//! is a few hash-map operations and never awaits), apply the operation with the current time,
//! hand the resulting mutations to the group committer *while still holding the lock* (so the
//! durable log has exactly the table's order), release the lock, wait for the commit, then
//! deliver the other effects (grants to queued waiters, timeouts) and reply. Nothing leaves the
//! server before the state that produced it is durable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use locksmith_api::HealthResponse;
use locksmith_core::{
    Acquire, AcquireError, AcquireOutcome, Effect, Effects, FenceError, FenceToken, HolderView,
    LeaseError, LeaseId, LeaseView, LockTable, Released, ResourceView, WaiterId,
};
use locksmith_store::{CommitTicket, Committer, StoreError};
use tokio::sync::{Notify, oneshot};

use crate::clock::Clock;

/// The outcome of an engine operation: the operation's own refusal, or a server-side failure.
#[derive(Debug)]
pub enum EngineError<E> {
    /// The lock table refused (HOT, expired lease, …): an expected outcome.
    Refused(E),
    /// Storage failed; the server refuses writes from now on.
    Storage(StoreError),
    /// The server is shutting down and dropped a queued request.
    ShuttingDown,
}

impl<E> From<StoreError> for EngineError<E> {
    fn from(e: StoreError) -> Self {
        EngineError::Storage(e)
    }
}

/// How a queued waiter's wait ends.
type WaitResult = Result<LeaseView, WaitEnd>;

#[derive(Debug)]
enum WaitEnd {
    Refused(AcquireError),
    ShuttingDown,
}

/// Shared engine state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    table: Mutex<LockTable>,
    committer: Committer,
    waiters: Mutex<HashMap<WaiterId, oneshot::Sender<WaitResult>>>,
    /// Wakes the reaper when a deadline earlier than the one it sleeps towards appears.
    reaper: Notify,
    clock: Clock,
}

impl Engine {
    /// An engine over a restored table and a running committer.
    pub fn new(table: LockTable, committer: Committer, clock: Clock) -> Self {
        Self {
            inner: Arc::new(Inner {
                table: Mutex::new(table),
                committer,
                waiters: Mutex::new(HashMap::new()),
                reaper: Notify::new(),
                clock,
            }),
        }
    }

    /// The clock the engine runs on.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Acquires a lock, waiting in the FIFO queue if asked to. Returns only once the grant is
    /// durable. If the caller goes away while queued (the future is dropped), the wait is
    /// withdrawn; if the grant raced with that, the undeliverable lease is released.
    pub async fn acquire(&self, req: Acquire) -> Result<LeaseView, EngineError<AcquireError>> {
        // Always pass the committer, even with nothing to write: a re-acquire must not be
        // answered before the grant it returns is durable.
        let (result, rest, ticket) = self.with_table(true, |t, now, fx| {
            let result = t.acquire(req, now, fx);
            let rx = match &result {
                Ok(AcquireOutcome::Queued(id)) => {
                    let (tx, rx) = oneshot::channel();
                    lock(&self.inner.waiters).insert(*id, tx);
                    Some((*id, rx))
                }
                _ => None,
            };
            (result, rx)
        });
        let (result, rx) = result;
        // Armed before the first await, so a caller that goes away is withdrawn from the queue.
        let guard = rx.map(|(waiter, rx)| WaitGuard {
            engine: self.clone(),
            waiter,
            rx: Some(rx),
        });
        self.finish(rest, ticket).await?;
        match result {
            Ok(AcquireOutcome::Granted(view)) => Ok(view),
            Ok(AcquireOutcome::Queued(_)) => match guard {
                Some(guard) => guard.wait().await,
                None => Err(EngineError::ShuttingDown),
            },
            Err(e) => Err(EngineError::Refused(e)),
        }
    }

    /// Renews a lease. Renewals are not persisted (recovery treats every lease as renewed), so
    /// this never waits for storage unless the clock expired something on the way.
    pub async fn renew(
        &self,
        lease: LeaseId,
        token: Option<FenceToken>,
    ) -> Result<LeaseView, EngineError<LeaseError>> {
        let (result, rest, ticket) =
            self.with_table(false, |t, now, fx| t.renew(lease, token, now, fx));
        self.finish(rest, ticket).await?;
        result.map_err(EngineError::Refused)
    }

    /// Releases a lease; durable before it returns.
    pub async fn release(
        &self,
        lease: LeaseId,
        token: Option<FenceToken>,
    ) -> Result<Released, EngineError<LeaseError>> {
        let (result, rest, ticket) =
            self.with_table(false, |t, now, fx| t.release(lease, token, now, fx));
        self.finish(rest, ticket).await?;
        result.map_err(EngineError::Refused)
    }

    /// Checks a fencing token against the live holders of `resource`.
    pub async fn check_fence(
        &self,
        resource: &str,
        token: FenceToken,
    ) -> Result<HolderView, EngineError<FenceError>> {
        let (result, rest, ticket) =
            self.with_table(false, |t, now, fx| t.check_fence(resource, token, now, fx));
        self.finish(rest, ticket).await?;
        result.map_err(EngineError::Refused)
    }

    /// Expires every lease and wait that is due; durable before it returns. Called by the
    /// reaper; returns how many leases expired.
    pub async fn reap(&self) -> Result<usize, StoreError> {
        let (expired, rest, ticket) = self.with_table(false, |t, now, fx| t.advance(now, fx));
        self.finish(rest, ticket).await?;
        Ok(expired)
    }

    /// Every held or awaited resource.
    pub fn resources(&self) -> Vec<ResourceView> {
        let now = self.inner.clock.now();
        lock(&self.inner.table).resources(now)
    }

    /// One resource.
    pub fn resource(&self, name: &str) -> ResourceView {
        let now = self.inner.clock.now();
        lock(&self.inner.table).resource(name, now)
    }

    /// A live lease, without renewing it.
    pub fn lease(&self, lease: LeaseId) -> Option<LeaseView> {
        lock(&self.inner.table).lease(lease)
    }

    /// When the reaper must next run, as a monotonic instant on the engine clock.
    pub fn next_deadline(&self) -> Option<locksmith_core::Mono> {
        lock(&self.inner.table).next_deadline()
    }

    /// Resolves when a new, possibly earlier deadline was set.
    pub async fn deadline_changed(&self) {
        self.inner.reaper.notified().await;
    }

    /// Health and counters for `/healthz`.
    pub fn health(&self) -> HealthResponse {
        let now = self.inner.clock.now();
        let (leases, waiters, fence) = {
            let t = lock(&self.inner.table);
            (t.lease_count(), t.waiter_count(), t.fence_high_water())
        };
        let failure = self.inner.committer.failure();
        let stats = self.inner.committer.stats();
        HealthResponse {
            status: if failure.is_some() { "failed" } else { "ok" }.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            store: self.inner.committer.describe().to_string(),
            store_error: failure.map(|e| e.to_string()),
            commits: locksmith_api::CommitCounters {
                batches: stats.batches,
                jobs: stats.jobs,
                mutations: stats.mutations,
                mean_commit_us: stats.total_commit_micros / stats.batches.max(1),
                last_commit_us: stats.last_commit_micros,
            },
            leases: leases as u64,
            waiters: waiters as u64,
            fence_high_water: fence,
            uptime_ms: now.mono.0,
            server_time_ms: now.wall_ms,
        }
    }

    /// Answers every queued waiter with "shutting down" so that graceful shutdown does not wait
    /// for long polls to time out.
    pub fn shut_down_waiters(&self) {
        let mut t = lock(&self.inner.table);
        let drained: Vec<_> = lock(&self.inner.waiters).drain().collect();
        for (id, tx) in drained {
            t.cancel_wait(id);
            let _ = tx.send(Err(WaitEnd::ShuttingDown));
        }
    }

    /// Stops the committer after every queued batch is durable, and waits for the store to
    /// close. Blocks: call it from `spawn_blocking`.
    pub fn close(&self) -> Result<(), StoreError> {
        self.inner.committer.join()
    }

    /// Runs `op` on the table at the current time and submits its mutations, in table order.
    /// With `barrier`, an empty batch is submitted too, so the reply waits for every earlier
    /// batch to be durable.
    ///
    /// Lock order, everywhere: table, then waiters.
    fn with_table<T>(
        &self,
        barrier: bool,
        op: impl FnOnce(&mut LockTable, locksmith_core::Now, &mut Effects) -> T,
    ) -> (T, Effects, Option<CommitTicket>) {
        let mut fx = Effects::new();
        let mut t = lock(&self.inner.table);
        let before = t.next_deadline();
        let now = self.inner.clock.now();
        let out = op(&mut t, now, &mut fx);
        let (mutations, rest) = locksmith_core::effect::split(fx);
        let ticket =
            (barrier || !mutations.is_empty()).then(|| self.inner.committer.submit(mutations));
        let after = t.next_deadline();
        drop(t);
        if after.is_some() && (before.is_none() || after < before) {
            self.inner.reaper.notify_one();
        }
        (out, rest, ticket)
    }

    /// Waits for the operation's batch to be durable, then delivers its other effects.
    async fn finish(&self, rest: Effects, ticket: Option<CommitTicket>) -> Result<(), StoreError> {
        if let Some(ticket) = ticket {
            ticket.wait().await?;
        }
        self.deliver(rest);
        Ok(())
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
                        self.release_abandoned(lease);
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

    fn release_abandoned(&self, lease: LeaseView) {
        tracing::info!(lease = %lease.lease, resource = %lease.resource,
            "waiter went away before its grant arrived; releasing");
        let engine = self.clone();
        tokio::spawn(async move {
            if let Err(e) = engine.release(lease.lease, Some(lease.token)).await {
                tracing::warn!(lease = %lease.lease, error = ?e, "could not release abandoned grant");
            }
        });
    }
}

/// A queued acquire. Dropping it before the wait ends (the client disconnected) withdraws the
/// wait; a grant that raced with the withdrawal is released, never left to expire.
struct WaitGuard {
    engine: Engine,
    waiter: WaiterId,
    rx: Option<oneshot::Receiver<WaitResult>>,
}

impl WaitGuard {
    async fn wait(mut self) -> Result<LeaseView, EngineError<AcquireError>> {
        let Some(rx) = self.rx.as_mut() else {
            return Err(EngineError::ShuttingDown);
        };
        let outcome = rx.await;
        self.rx = None;
        match outcome {
            Ok(Ok(view)) => Ok(view),
            Ok(Err(WaitEnd::Refused(e))) => Err(EngineError::Refused(e)),
            Ok(Err(WaitEnd::ShuttingDown)) | Err(_) => Err(EngineError::ShuttingDown),
        }
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        let inner = &self.engine.inner;
        {
            let mut t = lock(&inner.table);
            t.cancel_wait(self.waiter);
            lock(&inner.waiters).remove(&self.waiter);
        }
        // After close() no grant can arrive; one that already did is released.
        rx.close();
        if let Ok(Ok(lease)) = rx.try_recv() {
            self.engine.release_abandoned(lease);
        }
    }
}

/// Locks a mutex, recovering from poisoning: every critical section leaves the table
/// consistent before anything that could panic, so a poisoned lock carries no torn state.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
