//! The engine: the thin driver that runs the sans-IO lock table.
//!
//! Every operation follows one path: lock the table (a `std::sync::Mutex` — the critical section
//! is a few hash-map operations and never awaits), apply the operation with the current time,
//! hand the resulting mutations to the group committer *while still holding the lock* (so the
//! durable log has exactly the table's order), release the lock, wait for the commit, and reply.
//! The other effects (audit events, grants to queued waiters, timeouts) ride with the commit
//! (`Committer::submit_then`): delivered by the waiting caller as its wait ends, or, if the
//! caller has gone away, by whoever drops the answer (usually the commit thread). Nothing leaves
//! the server before the state that produced it is durable.
//!
//! The same holds for what the server *shows*: the table may be ahead of the disk (a grant on
//! its way to it), so a read of the table — a listing, one resource, a lease, the holds, a
//! fence check — passes the committer after it (an empty batch, submitted under the table lock:
//! an ordering barrier behind every batch that made the state it read) and is answered only
//! once that is durable. And once storage has failed the table is never shown again: its
//! changes since the last durable commit may never reach the disk, so every operation and
//! every read is refused with the failure until a restart recovers from the disk's truth. So no
//! client is ever shown, or vouched for, a lease or a token the disk may not have — which a
//! restart could issue again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use std::sync::atomic::{AtomicU64, Ordering};

use locksmith_api::HealthResponse;
use locksmith_core::{
    Acquire, AcquireError, AcquireOutcome, AuditRecord, BreakError, BreakOutcome, DeadProcess,
    Effect, Effects, FenceError, FenceToken, HoldError, HoldId, HoldView, HolderView, LeaseError,
    LeaseId, LeaseView, LockTable, Mutation, PlaceHold, Released, ReportError, ResourceView,
    Vantage, WaiterId,
};
use locksmith_store::{AuditQuery, CommitTicket, Committer, StoreError};
use tokio::sync::{Notify, broadcast, oneshot};

use crate::clock::{Clock, wall_ms};
use crate::metrics::Metrics;

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
    /// Storage failed while it waited: no grant can become durable any more.
    Storage(StoreError),
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
    /// Durable audit records, as they become durable: the event stream.
    events: broadcast::Sender<Arc<AuditRecord>>,
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
}

/// What an operation's caller finishes with (see [`Engine::finish`]).
#[must_use]
enum Pending {
    /// Its batch's commit, whose callback publishes the audit records and delivers the other
    /// effects once it is durable — even if the caller goes away. `hands_on`: the effects grant
    /// the lock to a waiter, and others still wait.
    Commit {
        ticket: CommitTicket,
        hands_on: bool,
    },
    /// Nothing to commit: effects to deliver at once.
    Deliver(Effects),
}

impl Engine {
    /// An engine over a restored table and a running committer.
    pub fn new(table: LockTable, committer: Committer, clock: Clock) -> Self {
        let (events, _) = broadcast::channel(4096);
        // Recovered from the store: durable.
        let durable_fence = AtomicU64::new(table.fence_high_water());
        Self {
            inner: Arc::new(Inner {
                table: Mutex::new(table),
                committer,
                waiters: Mutex::new(HashMap::new()),
                reaper: Notify::new(),
                clock,
                events,
                metrics: Metrics::default(),
                last_reap_ms: AtomicU64::new(wall_ms()),
                last_reap_mono: AtomicU64::new(clock.now().mono.0),
                durable_fence,
                closing: tokio::sync::watch::channel(false).0,
                runtime: tokio::runtime::Handle::try_current().ok(),
            }),
        }
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
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Acquires a lock, waiting in the FIFO queue if asked to. Returns only once the grant is
    /// durable. If the caller goes away while queued (the future is dropped), the wait is
    /// withdrawn; if the grant raced with that, the undeliverable lease is released — and so is
    /// a lease granted at once whose caller goes away before it is durable.
    pub async fn acquire(&self, req: Acquire) -> Result<LeaseView, EngineError<AcquireError>> {
        // Pass the committer even with nothing to write: a re-acquire must not be answered
        // before the grant it returns is durable, nor a refusal before the grant it names. A
        // queued acquire needs no barrier: its answer is a later grant, committed after every
        // batch before it (an empty job here would only take a turn of the committer, and
        // under contention keep the next release's commit off the fast inline path).
        let started = std::time::Instant::now();
        let barrier = |(result, _): &(Result<AcquireOutcome, _>, _)| {
            !matches!(result, Ok(AcquireOutcome::Queued(_)))
        };
        let (result, pending) = self.with_table(barrier, |t, now, fx| {
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
                Some(guard) => guard.wait().await,
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
    pub async fn renew(
        &self,
        lease: LeaseId,
        token: Option<FenceToken>,
    ) -> Result<LeaseView, EngineError<LeaseError>> {
        self.run(|t, now, fx| t.renew(lease, token, now, fx)).await
    }

    /// Releases a lease; durable before it returns.
    pub async fn release(
        &self,
        lease: LeaseId,
        token: Option<FenceToken>,
    ) -> Result<Released, EngineError<LeaseError>> {
        self.run(|t, now, fx| t.release(lease, token, now, fx))
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
        let (result, pending) = self.with_table(
            |_| true,
            |t, now, fx| t.check_fence(resource, token, now, fx),
        )?;
        self.finish(pending).await?;
        result.map_err(EngineError::Refused)
    }

    /// Expires every lease and wait that is due; durable before it returns. Called by the
    /// reaper; returns how many leases expired.
    pub async fn reap(&self) -> Result<usize, StoreError> {
        let (expired, pending) = self.with_table(|_| false, |t, now, fx| t.advance(now, fx))?;
        self.finish(pending).await?;
        self.inner.last_reap_ms.store(wall_ms(), Ordering::Relaxed);
        self.inner
            .last_reap_mono
            .store(self.inner.clock.now().mono.0, Ordering::Relaxed);
        Ok(expired)
    }

    /// Reads the table, and answers once everything the read saw is durable (see the module
    /// docs): `read` runs under the table lock, an empty batch is submitted before the lock
    /// is let go, and the answer waits for it. Refused once storage has failed — or if it
    /// fails before the barrier is through: what was read may then never reach the disk.
    pub async fn view<T>(
        &self,
        read: impl FnOnce(&LockTable, locksmith_core::Now) -> T,
    ) -> Result<T, StoreError> {
        let (seen, ticket) = {
            let t = lock(&self.inner.table);
            if let Some(failure) = self.refusal() {
                return Err(failure);
            }
            let seen = read(&t, self.inner.clock.now());
            (seen, self.inner.committer.submit(Vec::new()))
        };
        match ticket.wait().await {
            Ok(()) => Ok(seen),
            // Whatever this barrier was answered, the latched failure is what the read meets.
            Err(error) => Err(self.refusal().unwrap_or(error)),
        }
    }

    /// Every held or awaited resource; durable (see [`view`](Self::view)).
    pub async fn resources(&self) -> Result<Vec<ResourceView>, StoreError> {
        self.view(|t, now| t.resources(now)).await
    }

    /// One page of [`resources`](Self::resources) (see `LockTable::resources_page`): the table
    /// is held for one pass over the names, and only the page's views are built.
    pub async fn resources_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        node: Option<&str>,
    ) -> Result<(Vec<ResourceView>, bool), StoreError> {
        self.view(|t, now| t.resources_page(now, prefix, after, limit, node))
            .await
    }

    /// The plainly HOT resources counted, every other one's view, and every hold: what
    /// `/v1/status` and the metrics need, in one pass under the table lock that builds nothing
    /// for the HOT ones, and one barrier.
    pub async fn census(&self) -> Result<(locksmith_core::Census, Vec<HoldView>), StoreError> {
        self.view(|t, now| (t.census(now), t.holds(now))).await
    }

    /// One resource; durable (see [`view`](Self::view)).
    pub async fn resource(&self, name: &str) -> Result<ResourceView, StoreError> {
        self.view(|t, now| t.resource(name, now)).await
    }

    /// A live lease, without renewing it; durable (see [`view`](Self::view)).
    pub async fn lease(&self, lease: LeaseId) -> Result<Option<LeaseView>, StoreError> {
        self.view(|t, _| t.lease(lease)).await
    }

    /// When the reaper must next run, as a monotonic instant on the engine clock.
    pub fn next_deadline(&self) -> Option<locksmith_core::Mono> {
        lock(&self.inner.table).next_deadline()
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
                let t = lock(&self.inner.table);
                (t.lease_count(), t.waiter_count())
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
    /// When `barrier` holds for its result, an empty batch is submitted too, so the reply waits
    /// for every earlier batch to be durable. Refused, without touching the table, once storage
    /// has failed.
    ///
    /// Lock order, everywhere: table, then waiters.
    fn with_table<T>(
        &self,
        barrier: impl FnOnce(&T) -> bool,
        op: impl FnOnce(&mut LockTable, locksmith_core::Now, &mut Effects) -> T,
    ) -> Result<(T, Pending), StoreError> {
        let mut fx = Effects::new();
        let mut t = lock(&self.inner.table);
        if let Some(failure) = self.refusal() {
            return Err(failure);
        }
        let before = t.next_deadline();
        let now = self.inner.clock.now();
        let out = op(&mut t, now, &mut fx);
        let (mutations, rest) = locksmith_core::effect::split(fx);
        let pending = if !mutations.is_empty() || barrier(&out) {
            let mut fence = 0;
            let audits: Vec<AuditRecord> = mutations
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
            let hands_on = t.waiter_count() > 0
                && rest
                    .iter()
                    .any(|effect| matches!(effect, Effect::Granted { .. }));
            // Runs once the batch is durable, whether or not this caller is still there to
            // wait for it: a release whose client disconnects mid-commit still hands the lock
            // to the next waiter.
            let engine = self.clone();
            Pending::Commit {
                ticket: self
                    .inner
                    .committer
                    .submit_then(mutations, move || engine.publish(fence, audits, rest)),
                hands_on,
            }
        } else {
            Pending::Deliver(rest)
        };
        let after = t.next_deadline();
        drop(t);
        if after.is_some() && (before.is_none() || after < before) {
            self.inner.reaper.notify_one();
        }
        Ok((out, pending))
    }

    /// Waits for the operation's batch to be durable — by then its audit records are
    /// published and its effects delivered ([`publish`](Self::publish), run by the ticket) —
    /// or, with nothing to commit, delivers its effects now.
    async fn finish(&self, pending: Pending) -> Result<(), StoreError> {
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

    /// After a batch is durable: counts and publishes its audit records, then delivers its
    /// other effects. Run by the commit's ticket: in the waiting task, or on the commit thread
    /// if the caller went away — so it never blocks and never awaits.
    fn publish(&self, fence: u64, audits: Vec<AuditRecord>, rest: Effects) {
        self.inner.durable_fence.fetch_max(fence, Ordering::AcqRel);
        for record in audits {
            self.inner.metrics.count(&record);
            // No subscribers is fine: the record is durable in the audit log regardless.
            let _ = self.inner.events.send(Arc::new(record));
        }
        self.deliver(rest);
    }

    /// Runs a table operation that needs no special driver handling, durably.
    async fn run<T, E>(
        &self,
        op: impl FnOnce(&mut LockTable, locksmith_core::Now, &mut Effects) -> Result<T, E>,
    ) -> Result<T, EngineError<E>> {
        let (result, pending) = self.with_table(|_| false, op)?;
        self.finish(pending).await?;
        result.map_err(EngineError::Refused)
    }

    /// Places a hold.
    pub async fn place_hold(&self, req: PlaceHold) -> Result<HoldView, EngineError<HoldError>> {
        self.run(|t, now, fx| t.place_hold(req, now, fx)).await
    }

    /// Acknowledges a pending hold.
    pub async fn ack_hold(
        &self,
        hold: HoldId,
        operator: &str,
    ) -> Result<HoldView, EngineError<HoldError>> {
        self.run(|t, now, fx| t.ack_hold(hold, operator, now, fx))
            .await
    }

    /// Lifts a hold.
    pub async fn lift_hold(
        &self,
        hold: HoldId,
        operator: &str,
    ) -> Result<HoldView, EngineError<HoldError>> {
        self.run(|t, now, fx| t.lift_hold(hold, operator, now, fx))
            .await
    }

    /// Resizes a semaphore now (growing hands free slots to the queue at once; shrinking keeps
    /// every holder and grants nothing until they are fewer than the new size). Returns the old
    /// size, or `None` if the resource was neither held nor awaited.
    pub async fn resize(
        &self,
        resource: &str,
        slots: u32,
    ) -> Result<Option<u32>, EngineError<locksmith_core::InvalidRequest>> {
        self.run(|t, now, fx| t.resize(resource, slots, now, fx))
            .await
    }

    /// Every hold; durable (see [`view`](Self::view)).
    pub async fn holds(&self) -> Result<Vec<HoldView>, StoreError> {
        self.view(|t, now| t.holds(now)).await
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
        self.run(|t, now, fx| t.break_lock(resource, lease, operator, reason, freeze_ms, now, fx))
            .await
    }

    /// Applies a liveness report made `from` a node: its boot id first (older-boot leases of the
    /// node are reclaimed), then each dead holder (accepted only from the holder's own node,
    /// boot and PID namespace). Returns the reclaimed leases and the refused reports.
    pub async fn report_liveness(
        &self,
        from: Vantage<'_>,
        reported_by: &str,
        dead: Vec<DeadProcess>,
    ) -> Result<(Vec<LeaseId>, Vec<ReportError>), StoreError> {
        let ((refused, reclaimed), pending) = self.with_table(
            |_| false,
            |t, now, fx| {
                t.observe_boot(from.node, from.boot_id, now, fx);
                let refused = dead
                    .into_iter()
                    .filter_map(|d| t.report_dead(from, reported_by, d, now, fx).err())
                    .collect::<Vec<_>>();
                // Whatever this report ended — older-boot ghosts and dead holders — is in its audit.
                let reclaimed: Vec<LeaseId> = fx
                    .iter()
                    .filter_map(|effect| match effect {
                        Effect::Persist(Mutation::AppendAudit(r)) => Some(r),
                        _ => None,
                    })
                    .filter(|r| {
                        matches!(
                            &r.kind,
                            locksmith_core::AuditKind::Ended {
                                cause: locksmith_core::EndCause::NodeRebooted { .. }
                                    | locksmith_core::EndCause::ProcessDied { .. }
                            }
                        )
                    })
                    .filter_map(|r| r.lease)
                    .collect();
                (refused, reclaimed)
            },
        )?;
        self.finish(pending).await?;
        Ok((reclaimed, refused))
    }

    /// The live leases held on `node` under `boot_id` in PID namespace `pid_ns` (what a local
    /// prober there checks; it shows them to nobody, so no barrier). None once storage has
    /// failed.
    pub fn local_leases(&self, node: &str, boot_id: &str, pid_ns: &str) -> Vec<DeadProcess> {
        let t = lock(&self.inner.table);
        if self.inner.committer.failure().is_some() {
            return Vec::new();
        }
        t.local_leases(node, boot_id, pid_ns)
    }

    /// Queries the durable audit log (ordered after every earlier commit).
    pub async fn audit(&self, query: AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.committer.query_audit(query).wait().await
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
    fn release_abandoned(&self, lease: LeaseView, why: &'static str) {
        tracing::info!(lease = %lease.lease, resource = %lease.resource, why,
            "nobody is left to receive a grant; releasing it");
        let engine = self.clone();
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
            Ok(Err(WaitEnd::Storage(e))) => Err(EngineError::Storage(e)),
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
            self.engine
                .release_abandoned(lease, "the waiter went away as its grant arrived");
        }
    }
}

/// An acquire granted at once, until its grant is durable and the caller has it. Dropped armed
/// (the caller went away mid-commit), it releases the lease, fenced by its token: the release
/// commits after the grant, so the lock goes to the next waiter instead of lingering a TTL.
/// It borrows the grant, so that the common case — the caller stays — copies nothing.
struct GrantGuard<'a> {
    engine: &'a Engine,
    lease: Option<&'a LeaseView>,
}

impl GrantGuard<'_> {
    /// The grant is durable and goes to the caller (or the commit failed): nothing to release.
    fn disarm(mut self) {
        self.lease = None;
    }
}

impl Drop for GrantGuard<'_> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.engine.release_abandoned(
                lease.clone(),
                "the caller went away before its grant was durable",
            );
        }
    }
}

/// Locks a mutex, recovering from poisoning: every critical section leaves the table
/// consistent before anything that could panic, so a poisoned lock carries no torn state.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::FutureExt;
    use locksmith_core::{Acquire, Owner, Snapshot, TableConfig, Trusted};
    use locksmith_store::{EmbeddedStore, Store};

    use super::*;

    impl Engine {
        /// One resource as the table has it now, durable or not: for tests that watch a grant
        /// on its way to disk.
        fn peek(&self, name: &str) -> ResourceView {
            lock(&self.inner.table).resource(name, self.inner.clock.now())
        }
    }

    /// The real embedded store, with every commit taking at least `delay` more: a window in
    /// which a caller can go away while its batch is on its way to disk.
    struct SlowCommits {
        store: EmbeddedStore,
        delay: Duration,
    }

    impl Store for SlowCommits {
        fn load(&mut self) -> Result<Snapshot, StoreError> {
            self.store.load()
        }
        fn commit(&mut self, batch: &[Mutation]) -> Result<(), StoreError> {
            std::thread::sleep(self.delay);
            self.store.commit(batch)
        }
        fn audit(&mut self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
            self.store.audit(query)
        }
        fn describe(&self) -> String {
            format!("slow {}", self.store.describe())
        }
    }

    /// Faults a [`Faulty`] store is told to make, shared with the test.
    #[derive(Default)]
    struct Faults {
        /// The next commit fails before writing anything (a full disk, a dead device).
        fail_next: std::sync::atomic::AtomicBool,
        /// The next commit is made — durable — and then the store fails (its apply, its
        /// segment switch).
        fail_after_next: std::sync::atomic::AtomicBool,
        /// While set, every commit waits here until the test lets it go.
        gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    }

    /// The real embedded store, with failures injected on demand.
    struct Faulty {
        store: EmbeddedStore,
        faults: Arc<Faults>,
        failed: Option<String>,
    }

    impl Store for Faulty {
        fn load(&mut self) -> Result<Snapshot, StoreError> {
            self.store.load()
        }
        fn commit(&mut self, batch: &[Mutation]) -> Result<(), StoreError> {
            if let Some(gate) = lock(&self.faults.gate).as_ref() {
                let _ = gate.recv_timeout(Duration::from_secs(10));
            }
            if let Some(cause) = &self.failed {
                return Err(StoreError::Failed(cause.clone()));
            }
            if self.faults.fail_next.swap(false, Ordering::SeqCst) {
                return Err(StoreError::Io(
                    "append to the log: No space left on device (injected)".into(),
                ));
            }
            self.store.commit(batch)?;
            if self.faults.fail_after_next.swap(false, Ordering::SeqCst) {
                self.failed = Some("apply: No space left on device (injected)".into());
            }
            Ok(())
        }
        fn failure(&self) -> Option<StoreError> {
            self.failed.clone().map(StoreError::Failed)
        }
        fn audit(&mut self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
            self.store.audit(query)
        }
        fn describe(&self) -> String {
            format!("faulty {}", self.store.describe())
        }
    }

    /// An engine over the embedded store in `dir`, with the handle that injects its faults.
    fn engine_with_faults(dir: &std::path::Path) -> (Engine, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        let engine = engine_over(Faulty {
            store: EmbeddedStore::open(dir).expect("open"),
            faults: Arc::clone(&faults),
            failed: None,
        });
        (engine, faults)
    }

    /// A server's restart on `dir`: the table recovered from what the disk has.
    async fn restarted(dir: &std::path::Path) -> Engine {
        let identity = crate::NodeIdentity {
            node: "server-node".into(),
            boot_id: "server-boot".into(),
            pid_ns: None,
        };
        let store = EmbeddedStore::open(dir).expect("reopen");
        crate::recover(Box::new(store), &identity)
            .await
            .expect("recover")
    }

    /// Every token and lease id an answer shows.
    fn tokens_in(view: &ResourceView) -> Vec<u64> {
        view.holders
            .iter()
            .flat_map(|h| [h.token.0, h.lease.0])
            .collect()
    }

    /// Bug pinned (issue 15, item 4a): after a commit failed, the table kept its change, so
    /// listings showed the refused requester as the holder, a fence check passed its token,
    /// and after a restart that token was issued again ("2142 seen, then 2137 issued"). Now the
    /// failed commit's answer says its outcome is unknown, nothing of the table is shown or
    /// vouched for until a restart, and no token seen before the restart is issued after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_shows_nothing_it_did_and_no_token_seen_is_issued_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (engine, faults) = engine_with_faults(dir.path());
        let mut seen = Vec::new();
        let held = engine.acquire(acquire("cfg/a", 1, 0)).await.expect("held");
        seen.extend([held.token.0, held.lease.0]);
        seen.extend(tokens_in(&engine.resource("cfg/a").await.expect("view")));

        faults.fail_next.store(true, Ordering::SeqCst);
        match engine.acquire(acquire("cfg/b", 2, 0)).await {
            Err(EngineError::Storage(StoreError::Unknown(cause))) => {
                assert!(cause.contains("No space left"), "{cause}");
            }
            other => panic!("the failed commit's outcome is unknown, got {other:?}"),
        }
        // The refused grant is in the table, and must never be shown or vouched for.
        let refused = FenceToken(held.token.0 + 1);
        assert!(matches!(
            engine.resource("cfg/b").await,
            Err(StoreError::Failed(_))
        ));
        assert!(engine.resources().await.is_err());
        assert!(engine.resources_page("", None, 100, None).await.is_err());
        assert!(engine.census().await.is_err());
        assert!(engine.holds().await.is_err());
        assert!(engine.lease(LeaseId(refused.0)).await.is_err());
        assert!(matches!(
            engine.check_fence("cfg/b", refused).await,
            Err(EngineError::Storage(_))
        ));
        // Everything else is refused too: the table may be ahead of the disk.
        assert!(matches!(
            engine.check_fence("cfg/a", held.token).await,
            Err(EngineError::Storage(_))
        ));
        assert!(matches!(
            engine.renew(held.lease, None).await,
            Err(EngineError::Storage(_))
        ));
        assert!(matches!(
            engine.acquire(acquire("cfg/c", 3, 0)).await,
            Err(EngineError::Storage(StoreError::Failed(_)))
        ));
        let health = engine.health();
        assert_eq!(health.status, locksmith_api::HealthStatus::Failed);
        assert_eq!((health.leases, health.waiters), (0, 0));
        assert_eq!(
            health.fence_high_water, held.token.0,
            "only what is durable"
        );
        seen.push(health.fence_high_water);
        let _ = engine.close();
        drop(engine);

        let engine = restarted(dir.path()).await;
        let next = engine
            .acquire(acquire("cfg/b", 4, 0))
            .await
            .expect("granted");
        let max_seen = seen.iter().copied().max().unwrap_or(0);
        assert!(
            next.token.0 > max_seen,
            "token {} issued after the restart, {max_seen} seen before it",
            next.token
        );
        assert_eq!(
            engine.resource("cfg/a").await.expect("view").holders[0].lease,
            held.lease,
            "the durable grant survived"
        );
        engine.close().expect("close");
    }

    /// Bug pinned (issue 15, item 4a, the race): a fence check read the table without waiting
    /// for the disk, so it passed the token of a grant whose commit was still under way — and
    /// then failed. A check (like a listing) answers only once what it saw is durable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fence_check_never_passes_a_token_whose_grant_is_not_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (engine, faults) = engine_with_faults(dir.path());
        let (release, gate) = std::sync::mpsc::channel();
        *lock(&faults.gate) = Some(gate);
        faults.fail_next.store(true, Ordering::SeqCst);

        // Granted in the table, its commit held at the gate (and about to fail).
        let acquiring = tokio::spawn({
            let engine = engine.clone();
            async move { engine.acquire(acquire("cfg/r", 1, 0)).await }
        });
        let token = loop {
            if let Some(h) = engine.peek("cfg/r").holders.first() {
                break h.token;
            }
            tokio::task::yield_now().await;
        };
        let check = tokio::spawn({
            let engine = engine.clone();
            async move { engine.check_fence("cfg/r", token).await }
        });
        let listing = tokio::spawn({
            let engine = engine.clone();
            async move { engine.resource("cfg/r").await }
        });
        drop(release);
        *lock(&faults.gate) = None;

        let checked = check.await.expect("task");
        assert!(
            matches!(checked, Err(EngineError::Storage(_))),
            "a token whose grant never reached the disk passed: {checked:?}"
        );
        let listed = listing.await.expect("task");
        assert!(
            listed.is_err(),
            "a grant that never reached the disk was listed: {listed:?}"
        );
        assert!(matches!(
            acquiring.await.expect("task"),
            Err(EngineError::Storage(StoreError::Unknown(_)))
        ));
        let _ = engine.close();
    }

    /// Bug pinned (issue 15, item 4b): a batch durable in the log was answered 503 "nothing was
    /// changed" when the store failed after its append, and after a restart its lease was held
    /// by a client told it failed — a ghost for its TTL. The answer follows the durability.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_grant_durable_before_the_store_fails_is_answered_and_survives_the_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (engine, faults) = engine_with_faults(dir.path());
        faults.fail_after_next.store(true, Ordering::SeqCst);
        let granted = engine
            .acquire(acquire("cfg/d", 1, 0))
            .await
            .expect("durable, so granted");
        // The failure latched with it: everything after is refused, unwritten.
        assert_eq!(engine.health().status, locksmith_api::HealthStatus::Failed);
        assert!(matches!(
            engine.acquire(acquire("cfg/e", 2, 0)).await,
            Err(EngineError::Storage(StoreError::Failed(_)))
        ));
        let _ = engine.close();
        drop(engine);

        let engine = restarted(dir.path()).await;
        let held = engine.resource("cfg/d").await.expect("view").holders;
        assert_eq!(held.len(), 1);
        assert_eq!(
            (held[0].lease, held[0].token),
            (granted.lease, granted.token)
        );
        assert!(
            engine
                .resource("cfg/e")
                .await
                .expect("view")
                .holders
                .is_empty(),
            "the refused acquire left nothing"
        );
        engine.close().expect("close");
    }

    /// A waiter queued when storage fails could never be granted (no commit can be made), and
    /// was left waiting for its whole wait. It is answered at once that its outcome is unknown
    /// (it may have been granted by the very commit that failed).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_queued_when_storage_fails_is_answered_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (engine, faults) = engine_with_faults(dir.path());
        let holder = engine.acquire(acquire("cfg/w", 1, 0)).await.expect("held");
        let waiting = tokio::spawn({
            let engine = engine.clone();
            async move { engine.acquire(acquire("cfg/w", 2, 600_000)).await }
        });
        while engine.peek("cfg/w").waiters.is_empty() {
            tokio::task::yield_now().await;
        }
        faults.fail_next.store(true, Ordering::SeqCst);
        assert!(engine.release(holder.lease, None).await.is_err());
        let answer = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiter is answered, not left waiting")
            .expect("task");
        assert!(
            matches!(answer, Err(EngineError::Storage(StoreError::Unknown(_)))),
            "{answer:?}"
        );
        let _ = engine.close();
    }

    /// An engine with an empty table over `store` (loaded, as a server boots).
    fn engine_over(mut store: impl Store + 'static) -> Engine {
        store.load().expect("load");
        let committer = Committer::spawn(Box::new(store)).expect("committer");
        Engine::new(
            LockTable::new(TableConfig::default()),
            committer,
            Clock::start(),
        )
    }

    /// An engine over the embedded store in `dir` whose every commit takes 200 ms more: a
    /// caller can go away while its batch is on its way to disk.
    fn engine_with_slow_commits(dir: &std::path::Path) -> Engine {
        engine_over(SlowCommits {
            store: EmbeddedStore::open(dir).expect("open"),
            delay: Duration::from_millis(200),
        })
    }

    fn acquire(resource: &str, pid: u32, wait_ms: u64) -> Acquire {
        Acquire {
            resource: resource.to_string(),
            owner: Owner {
                node: "node-1".into(),
                pid,
                start_time: 1,
                boot_id: "boot-1".into(),
                user: "ops".into(),
                purpose: format!("test holder {pid}"),
                pid_ns: None,
            },
            ttl_ms: 60_000,
            slots: 1,
            wait_ms,
            lock_delay_ms: 0,
            trusted: Trusted::NONE,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_release_whose_caller_goes_away_before_it_is_durable_still_hands_the_lock_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_with_slow_commits(dir.path());

        let first = engine.acquire(acquire("cfg/a", 1, 0)).await.expect("first");
        let waiting = tokio::spawn({
            let engine = engine.clone();
            async move { engine.acquire(acquire("cfg/a", 2, 30_000)).await }
        });
        while engine.peek("cfg/a").waiters.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        // The release runs on the table and is submitted, then its caller goes away (a client
        // that disconnects, a handler future dropped) while the commit is still 200 ms out.
        let release = engine.release(first.lease, Some(first.token));
        assert!(
            release.now_or_never().is_none(),
            "the release cannot be durable before its commit's delay"
        );

        // Before the fix the grant was delivered by the dropped future, so the waiter only
        // learnt it (by its lease expiring) a TTL later.
        let second = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiter gets the lock once the release is durable")
            .expect("task")
            .expect("granted");
        assert_eq!(second.resource, "cfg/a");
        assert!(second.token > first.token);
        assert_eq!(second.owner.pid, 2);
        let holders = engine.resource("cfg/a").await.expect("view").holders;
        assert_eq!(holders.len(), 1);
        assert_eq!(holders[0].lease, second.lease);
        engine.close().expect("close");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_acquire_whose_caller_goes_away_before_its_grant_is_durable_leaves_no_ghost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_with_slow_commits(dir.path());

        // Granted on the table and submitted; then the caller goes away (a client that
        // disconnects, a withdrawn wire request) while the commit is still 200 ms out.
        let acquire_then_leave = engine.acquire(acquire("cfg/g", 1, 0));
        assert!(
            acquire_then_leave.now_or_never().is_none(),
            "the grant cannot be durable before its commit's delay"
        );

        // Before the fix the lease stayed until its TTL (60 s here), held by nobody who knew.
        let next = tokio::time::timeout(
            Duration::from_secs(10),
            engine.acquire(acquire("cfg/g", 2, 30_000)),
        )
        .await
        .expect("the next caller gets the lock once the abandoned grant is released")
        .expect("granted");
        assert_eq!(next.owner.pid, 2);

        // A re-acquire is the caller's own lease from before: going away does not release it.
        // (With another grant's commit in flight, so that the re-acquire waits for the log.)
        let other = tokio::spawn({
            let engine = engine.clone();
            async move { engine.acquire(acquire("cfg/other", 3, 0)).await }
        });
        while engine.peek("cfg/other").holders.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let again = engine.acquire(acquire("cfg/g", 2, 0));
        assert!(
            again.now_or_never().is_none(),
            "queued behind the other commit"
        );
        other.await.expect("task").expect("other granted");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let holders = engine.resource("cfg/g").await.expect("view").holders;
        assert_eq!(holders.len(), 1);
        assert_eq!(holders[0].lease, next.lease);
        engine.close().expect("close");
    }

    /// Order of completion, as the tasks saw it.
    type Log = Arc<Mutex<Vec<&'static str>>>;

    fn waiter(
        engine: &Engine,
        pid: u32,
        log: &Log,
        name: &'static str,
    ) -> tokio::task::JoinHandle<()> {
        let (engine, log) = (engine.clone(), log.clone());
        tokio::spawn(async move {
            engine
                .acquire(acquire("cfg/q", pid, 30_000))
                .await
                .expect("granted");
            lock(&log).push(name);
        })
    }

    /// On one thread, with others still queued, the new holder's task runs before the
    /// releaser's gets its answer: the grant is sent first. With nobody left waiting the
    /// releaser answers first (it may be the next to ask).
    #[tokio::test(flavor = "current_thread")]
    async fn a_grant_goes_out_before_the_release_answer_while_others_still_wait() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_over(EmbeddedStore::open(dir.path()).expect("open"));
        let log: Log = Arc::default();
        let holder = engine
            .acquire(acquire("cfg/q", 1, 0))
            .await
            .expect("holder");
        let second = waiter(&engine, 2, &log, "second granted");
        while engine.peek("cfg/q").waiters.is_empty() {
            tokio::task::yield_now().await;
        }
        let third = waiter(&engine, 3, &log, "third granted");
        while engine.peek("cfg/q").waiters.len() < 2 {
            tokio::task::yield_now().await;
        }

        // The third still waits after this grant.
        engine.release(holder.lease, None).await.expect("release");
        lock(&log).push("first released");
        second.await.expect("second");
        assert_eq!(*lock(&log), ["second granted", "first released"]);

        // Nobody waits after this one.
        lock(&log).clear();
        let lease = engine
            .resource("cfg/q")
            .await
            .expect("view")
            .holders
            .first()
            .map(|h| h.lease)
            .expect("second holds");
        engine.release(lease, None).await.expect("release");
        lock(&log).push("second released");
        third.await.expect("third");
        assert_eq!(*lock(&log), ["second released", "third granted"]);
        engine.close().expect("close");
    }
}
