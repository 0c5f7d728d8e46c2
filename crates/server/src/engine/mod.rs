//! The engine: a deterministic step over the server's state, and the thin async driver that
//! runs it.
//!
//! The [`step`](step()) is pure: it takes the [`State`] (every domain's state: the lock table
//! now), an operation and `now`, and returns the reply, the durable batch (audit records
//! numbered, one sequence for every domain) and the deliveries ([`Stepped`]). The driver —
//! [`Engine`] — owns everything around it: the mutex, the clock, the group committer, the
//! queued waiters, the reaper's wake-ups and the event stream.
//!
//! Every operation follows one path: lock the state (a `std::sync::Mutex` — the critical
//! section is a few hash-map operations and never awaits), step with the clock's `now`, hand
//! the batch to the group committer *while still holding the lock* (so the durable log has
//! exactly the state's order), release the lock, wait for the commit, and reply. The
//! deliveries (grants to queued waiters, timeouts) and the audit events ride with the commit
//! (`Committer::submit_then`): delivered by the waiting caller as its wait ends, or, if the
//! caller has gone away, by whoever drops the answer (usually the commit thread). Nothing leaves
//! the server before the state that produced it is durable.
//!
//! The same holds for what the server *shows*: the state may be ahead of the disk (a grant on
//! its way to it), so a read of it — a listing, one resource, a lease, the holds, a fence check
//! — passes the committer after it (an empty batch, submitted under the lock: an ordering
//! barrier behind every batch that made the state it read) and is answered only once that is
//! durable. And once storage has failed the state is never shown again: its changes since the
//! last durable commit may never reach the disk, so every operation and every read is refused
//! with the failure until a restart recovers from the disk's truth. So no client is ever shown,
//! or vouched for, a lease or a token the disk may not have — which a restart could issue
//! again.

mod acquirers;
mod agents;
mod configs;
mod driver;
mod ops;
mod reads;
mod rollouts;
mod state;
mod step;
mod tokens;
mod waiters;
mod watches;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use locksmith_api::HealthResponse;
use locksmith_core::{AuditRecord, WaiterId};
use locksmith_store::{Committer, StoreError};
use tokio::sync::{Notify, broadcast, oneshot};

pub use acquirers::Acquirers;
pub use agents::{
    AgentRefusal, EVENT_REGISTERED, EVENT_SHADOWED, Targets, agent_resource, report_event,
};
pub use configs::{ConfigWrite, FenceArg, Fenced};
pub use rollouts::{PromQuery, RolloutRefusal, check_rollout, prometheus_due, report_state};
pub use state::State;
pub use step::{Stepped, step, step_as};
pub use tokens::Published;
pub use watches::{ResourceWatch, desired_key};

use crate::clock::Clock;
use crate::metrics::Metrics;
use waiters::{WaitEnd, WaitResult};

/// A refusal of an operation made for an [`Actor`]: it may not touch the lease (`Forbidden`),
/// or the table refused (`Refused`).
#[derive(Debug)]
pub enum Denied<E> {
    /// The actor may not touch it: outside its prefixes or node, or another token's lease.
    Forbidden(locksmith_auth::Forbidden),
    /// The table's own refusal.
    Refused(E),
}

impl<E> From<E> for Denied<E> {
    fn from(e: E) -> Self {
        Denied::Refused(e)
    }
}

/// The outcome of an engine operation: the operation's own refusal, or a server-side failure.
#[derive(Debug)]
pub enum EngineError<E> {
    /// The lock table refused (HOT, expired lease, …): an expected outcome. (Or, in an
    /// `Internal` variant of `E`, found itself inconsistent: a bug, answered 500.)
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

/// Shared engine state. Cheap to clone.
///
/// A handle may act for someone ([`Engine::acting_as`]): the audit records its operations
/// write name that principal, and its renewals and releases are refused for leases outside
/// the principal's prefixes and node, or acquired with another token.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
    actor: Option<Arc<Actor>>,
}

/// Who an engine handle acts for: an authenticated request's principal.
#[derive(Debug)]
pub struct Actor {
    /// The principal, whose prefixes and node bound the leases it renews and releases.
    pub principal: locksmith_auth::Principal,
    /// How audit records name it.
    pub audit: locksmith_core::AuditPrincipal,
    /// May renew and release leases acquired with other tokens (an operator's).
    pub any_lease: bool,
}

impl Actor {
    /// An actor for `principal`; `any_lease` if it may renew and release leases acquired
    /// with other tokens.
    pub fn new(principal: locksmith_auth::Principal, any_lease: bool) -> Self {
        let audit = locksmith_core::AuditPrincipal {
            token: principal.token.clone(),
            name: principal.name.clone(),
        };
        Self {
            principal,
            audit,
            any_lease,
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    committer: Committer,
    waiters: Mutex<HashMap<WaiterId, oneshot::Sender<WaitResult>>>,
    /// Wakes the reaper when a deadline earlier than the one it sleeps towards appears.
    reaper: Notify,
    clock: Arc<dyn Clock>,
    /// Durable audit records, as they become durable: the event stream.
    events: broadcast::Sender<Arc<AuditRecord>>,
    /// The same records, waking only the watches on their resource (see [`watches`]).
    watches: watches::Watches,
    /// Config contents read lately (immutable, by SHA-256).
    blobs: configs::BlobCache,
    metrics: Metrics,
    /// Wall time of the reaper's last completed run: the server's own heartbeat, as a
    /// timestamp (for metrics).
    last_reap_ms: AtomicU64,
    /// The same on the engine's monotonic clock: what the heartbeat's age is measured on, so
    /// that a wall-clock step makes no heartbeat look late.
    last_reap_mono: AtomicU64,
    /// The highest fencing token (or hold id: one sequence) whose batch is durable: what the
    /// server may say it has issued. Raised as batches become durable.
    durable_fence: AtomicU64,
    /// Flips to true when shutdown begins: long-lived responses (event streams) end on it.
    closing: tokio::sync::watch::Sender<bool>,
    /// The runtime the engine was made on, for work started on the commit thread.
    runtime: Option<tokio::runtime::Handle>,
    /// The token table as last made durable: what requests are authenticated against, read
    /// without the state lock (a request's authentication never waits for another's step).
    /// Replaced — never changed in place — once a change to the tokens is durable.
    tokens: RwLock<Arc<tokens::Published>>,
    /// The revision of [`tokens`](Inner::tokens), sent on every change: long-lived responses
    /// (event streams, wire connections) re-check their token on it.
    token_changes: tokio::sync::watch::Sender<u64>,
}

impl Engine {
    /// An engine over a restored state and a running committer, on `clock`.
    pub fn new(state: State, committer: Committer, clock: Arc<dyn Clock>) -> Self {
        let (events, _) = broadcast::channel(4096);
        // Recovered from the store: durable.
        let durable_fence = AtomicU64::new(state.locks.fence_high_water());
        let tokens = Arc::new(tokens::Published::new(state.tokens.clone()));
        let token_changes = tokio::sync::watch::channel(tokens.revision()).0;
        let now = clock.now();
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                committer,
                waiters: Mutex::new(HashMap::new()),
                reaper: Notify::new(),
                clock,
                events,
                watches: watches::Watches::default(),
                blobs: configs::BlobCache::default(),
                metrics: Metrics::default(),
                last_reap_ms: AtomicU64::new(now.wall_ms),
                last_reap_mono: AtomicU64::new(now.mono.0),
                durable_fence,
                closing: tokio::sync::watch::channel(false).0,
                runtime: tokio::runtime::Handle::try_current().ok(),
                tokens: RwLock::new(tokens),
                token_changes,
            }),
            actor: None,
        }
    }

    /// This engine, acting for `actor` (see [`Engine`]).
    pub fn acting_as(&self, actor: Arc<Actor>) -> Engine {
        Engine {
            inner: Arc::clone(&self.inner),
            actor: Some(actor),
        }
    }

    /// This engine acting for nobody: the server's own work (releasing an abandoned grant).
    pub(crate) fn as_server(&self) -> Engine {
        Engine {
            inner: Arc::clone(&self.inner),
            actor: None,
        }
    }

    /// Who this handle acts for, if anyone.
    pub fn actor(&self) -> Option<&Arc<Actor>> {
        self.actor.as_ref()
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Subscribes to durable audit records as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AuditRecord>> {
        self.inner.events.subscribe()
    }

    /// Wall time of the reaper's last completed run, Unix ms.
    pub fn last_reap_ms(&self) -> u64 {
        self.inner.last_reap_ms.load(Ordering::Relaxed)
    }

    /// How long ago the reaper last completed a run, on the monotonic clock: the age of the
    /// server's own heartbeat, unmoved by steps of the wall clock.
    pub fn heartbeat_age_ms(&self) -> u64 {
        let now = self.inner.clock.now().mono.0;
        now.saturating_sub(self.inner.last_reap_mono.load(Ordering::Relaxed))
    }

    /// Moves the reaper's last run back by `wall_ms` on the wall clock and `mono_ms` on the
    /// monotonic one: what a step of the wall clock (or a stalled reaper) looks like.
    #[cfg(test)]
    pub(crate) fn backdate_heartbeat(&self, wall_ms: u64, mono_ms: u64) {
        self.inner
            .last_reap_ms
            .fetch_sub(wall_ms, Ordering::Relaxed);
        self.inner
            .last_reap_mono
            .fetch_sub(mono_ms, Ordering::Relaxed);
    }

    /// The latched storage failure, if any: from then on the engine refuses everything.
    pub fn failure(&self) -> Option<StoreError> {
        self.inner.committer.failure()
    }

    /// The latched storage failure, if any, having answered every queued waiter with it: no
    /// grant can become durable any more, so their waits could end no other way. They are told
    /// their outcome is unknown — one of them may have been granted in the very commit that
    /// failed.
    fn refusal(&self) -> Option<StoreError> {
        let failure = self.failure()?;
        let drained: Vec<_> = lock(&self.inner.waiters).drain().collect();
        for (_, tx) in drained {
            let _ = tx.send(Err(WaitEnd::Storage(StoreError::Unknown(failure.cause()))));
        }
        Some(failure)
    }

    /// The clock the engine runs on.
    pub fn clock(&self) -> &dyn Clock {
        &*self.inner.clock
    }

    /// When the reaper must next run, as a monotonic instant on the engine clock.
    pub fn next_deadline(&self) -> Option<locksmith_core::Mono> {
        lock(&self.inner.state).next_deadline()
    }

    /// Resolves when a new, possibly earlier deadline was set.
    pub async fn deadline_changed(&self) {
        self.inner.reaper.notified().await;
    }

    /// Health and counters for `/healthz`. Never waits for storage (a stalled disk must not
    /// stall the health check): the fence is the highest one durable, and the counts are the
    /// table's — none once storage has failed, when the table is not shown.
    pub fn health(&self) -> HealthResponse {
        let now = self.inner.clock.now();
        let failure = self.inner.committer.failure();
        let (leases, waiters) = match failure {
            Some(_) => (0, 0),
            None => {
                let state = lock(&self.inner.state);
                (state.locks.lease_count(), state.locks.waiter_count())
            }
        };
        let fence = self.inner.durable_fence.load(Ordering::Acquire);
        let stats = self.inner.committer.stats();
        HealthResponse {
            status: if failure.is_some() {
                locksmith_api::HealthStatus::Failed
            } else {
                locksmith_api::HealthStatus::Ok
            },
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

    /// Resolves-on-change receiver that reads true once shutdown has begun.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }

    /// Begins shutdown: ends event streams and answers every queued waiter with "shutting
    /// down", so that graceful shutdown waits for neither long polls nor streams.
    pub fn shut_down_waiters(&self) {
        self.inner.closing.send_replace(true);
        let mut state = lock(&self.inner.state);
        let drained: Vec<_> = lock(&self.inner.waiters).drain().collect();
        for (id, tx) in drained {
            state.locks.cancel_wait(id);
            state.acquirers.withdrawn(id);
            let _ = tx.send(Err(WaitEnd::ShuttingDown));
        }
    }

    /// Stops the committer after every queued batch is durable, and waits for the store to
    /// close. Blocks: call it from `spawn_blocking`.
    pub fn close(&self) -> Result<(), StoreError> {
        self.inner.committer.join()
    }
}

/// Locks a mutex, recovering from poisoning: every critical section leaves the state
/// consistent before anything that could panic, so a poisoned lock carries no torn state.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
