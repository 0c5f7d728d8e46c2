//! Group commit: many concurrent requests, one fsync.
//!
//! A durable commit costs an fsync (≈0.1–0.4 ms here) whatever its size, so committing each
//! request on its own caps the server at a few thousand writes per second and makes them queue
//! on a lock. Instead every request queues its batch and waits on a [`CommitTicket`]; one turn
//! at a time ([`worker`]) takes everything queued so far, commits it in one
//! [`Store::commit`](crate::Store::commit) and then answers every ticket.
//!
//! Who takes a turn: the commit thread — or, for a store that
//! [`commits_inline`](crate::Store::commits_inline), the task awaiting a ticket, on a
//! multi-threaded tokio runtime with more than one worker (so that another serves meanwhile),
//! when nobody else is committing, its job is the only one
//! queued, and the last turn was neither shared nor slower than [`SLOW_TURN`] (a stalling
//! disk). That task blocks its runtime thread for the one append (the runtime's other threads
//! steal its queued tasks meanwhile), and in exchange the commit costs no thread hand-offs (the
//! wake-up of the commit thread, and its wake-up of the waiting task). Under load, while a turn
//! runs, new jobs queue, and whoever ends a turn with jobs left wakes the commit thread for the
//! next one. With such a store a submission does not wake the commit thread by itself: the
//! ticket's waiter leads, or wakes the thread when it may not (another kind of runtime, a query
//! queued, contention), and a ticket dropped unawaited wakes it too.
//!
//! Guarantees a caller can build on:
//! - A ticket resolves `Ok` only after its batch, and every batch submitted before it, is
//!   durable. Batches are applied in submission order, so a later batch's mutation of a lease
//!   wins over an earlier one's.
//! - A job's after-commit callback ([`Committer::submit_then`]) runs exactly once after its
//!   batch is durable: as its ticket resolves, or, if nobody waits on the ticket any more,
//!   wherever the answer is dropped (the commit thread, or the task dropping the ticket).
//! - An empty batch is an ordering barrier: it is acknowledged after every earlier batch is
//!   durable, without a commit of its own.
//! - Queries ([`Committer::query_audit`], [`Committer::query_record`],
//!   [`Committer::query_records`]) run on the same thread, in submission order relative to
//!   batches: a query sees every batch submitted before it (committed first) and none submitted
//!   after it.
//! - A batch holding a record outside the keyspace limits ([`crate::validate_batch`]) is
//!   refused at submission with [`StoreError::Invalid`]: never queued, it fails nothing else
//!   and latches nothing.
//! - A store that bounds its commits
//!   ([`Store::max_batch_mutations`](crate::Store::max_batch_mutations),
//!   [`Store::max_batch_bytes`](crate::Store::max_batch_bytes)) gets a group in several commits,
//!   split at job boundaries and made in order; a job is never split.
//! - An answer follows its batch's durability. Fail-stop: after one failed commit, the jobs of
//!   that commit get [`StoreError::Unknown`] (their batch may or may not be durable) — or
//!   [`StoreError::Failed`] if the store refused it unwritten — and every later job gets
//!   [`StoreError::Failed`] (nothing of it written); the store is never written again by this
//!   process. A commit that is durable but after which the store failed
//!   ([`Store::failure`](crate::Store::failure)) is answered `Ok`, and latches the failure for
//!   the jobs after it. Later queries get [`StoreError::Failed`]. A failed query latches
//!   nothing. Nor does a commit the store refused as [`StoreError::Invalid`] (unwritten, the
//!   store working: a job too large for the backend's requests): its jobs get that answer.
//! - [`Committer::shutdown`] finishes the jobs queued before it; later ones get
//!   [`StoreError::Closed`]. Dropping the last handle does the same, without waiting.

mod stats;
mod worker;

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, JoinHandle};

use locksmith_core::{AuditRecord, Mutation};
use tokio::sync::oneshot;

pub use stats::CommitStats;
use stats::StatsCell;
use worker::{Answer, Callback, Job, Message, Query, QueryReply, Reply, Worker};

/// The answer to one [`Committer::query_audit`].
pub type AuditTicket = QueryTicket<Vec<AuditRecord>>;

/// The answer to one [`Committer::query_record`]: the record's value, or `None`.
pub type RecordTicket = QueryTicket<Option<Vec<u8>>>;

/// The answer to one [`Committer::query_records`]: `(key, value)`s in ascending key order.
pub type RecordsTicket = QueryTicket<Vec<(String, Vec<u8>)>>;

use crate::{AuditQuery, Store, StoreError};

/// The name of the commit thread, as seen in `top -H` and debuggers.
const THREAD_NAME: &str = "locksmith-commit";

/// A cloneable handle to the commit thread. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Committer {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    stats: Arc<StatsCell>,
    failure: Arc<OnceLock<String>>,
    describe: String,
    thread: Mutex<ThreadState>,
}

enum ThreadState {
    Running(JoinHandle<()>),
    Joined(Reply),
}

impl Drop for Inner {
    /// The last handle is gone: the thread finishes what is queued, closes the store and exits.
    fn drop(&mut self) {
        self.shared.push(Message::Shutdown);
    }
}

/// The queue of submitted messages and the worker that carries them out, shared by the handles,
/// the tickets (whose waiters may take a turn) and the commit thread.
pub(crate) struct Shared {
    queue: Mutex<Queue>,
    /// The commit thread waits here for messages while nobody else takes a turn.
    wake: Condvar,
    /// Taken out (and so the store closed) when the thread exits after a shutdown.
    worker: Mutex<Option<Worker>>,
    /// [`Store::commits_inline`](crate::Store::commits_inline), taken at spawn.
    inline: bool,
}

#[derive(Default)]
struct Queue {
    messages: Vec<Message>,
    /// A turn is under way (on the thread or in a waiting task).
    busy: bool,
    /// Shut down: nothing more is taken.
    closed: bool,
    /// Messages the latest turn took: more than one means commits are contended, and the
    /// commit thread, not a waiting task, takes the next turn.
    last_turn: usize,
    /// The latest turn took longer than [`SLOW_TURN`]: the disk is stalling, and a waiting task
    /// would block its runtime thread for as long, so the commit thread takes the next turn.
    slow: bool,
}

impl Queue {
    /// Ends a turn that began at `started`.
    fn end_turn(&mut self, started: std::time::Instant) {
        self.busy = false;
        self.slow = started.elapsed() > SLOW_TURN;
    }

    /// Closes the queue; what is still queued is handed back, to be dropped outside the lock
    /// (its tickets then resolve `Closed`).
    fn close(&mut self) -> Vec<Message> {
        self.closed = true;
        std::mem::take(&mut self.messages)
    }
}

/// A commit turn slower than this keeps the next one on the commit thread (an append takes
/// ≈ 0.1–0.3 ms on the machines measured; a stalling disk, far longer).
const SLOW_TURN: std::time::Duration = std::time::Duration::from_millis(5);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Queues a message, waking the commit thread unless it is a job a waiter may commit
    /// itself. Refused (the message is dropped, so its ticket resolves `Closed`) after shutdown.
    fn push(&self, message: Message) {
        let wake = !(self.inline && matches!(message, Message::Job(_)));
        let mut queue = lock(&self.queue);
        if queue.closed {
            return;
        }
        queue.messages.push(message);
        drop(queue);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Wakes the commit thread to take a turn if there is work and nobody is on it.
    fn nudge(&self) {
        let queue = lock(&self.queue);
        let idle_with_work = !queue.busy && !queue.messages.is_empty();
        drop(queue);
        if idle_with_work {
            self.wake.notify_one();
        }
    }

    /// The commit thread: takes turns until a shutdown, then closes the store.
    fn run_thread(&self) {
        let _closes = CloseOnPanic(self);
        loop {
            let messages = {
                let mut queue = lock(&self.queue);
                while queue.busy || queue.messages.is_empty() {
                    queue = self
                        .wake
                        .wait(queue)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                queue.busy = true;
                queue.last_turn = queue.messages.len();
                std::mem::take(&mut queue.messages)
            };
            let started = std::time::Instant::now();
            let stop = lock(&self.worker)
                .as_mut()
                .is_none_or(|worker| worker.process(messages));
            let mut queue = lock(&self.queue);
            queue.end_turn(started);
            if stop {
                let refused = queue.close();
                drop(queue);
                drop(refused);
                drop(lock(&self.worker).take());
                return;
            }
        }
    }

    /// Called by a task about to wait for its ticket: takes a turn itself if it may (see the
    /// module docs), else makes sure the commit thread will.
    fn lead_or_nudge(&self) {
        // Only where another runtime thread serves the other requests meanwhile. With one (a
        // current-thread runtime, or a multi-thread one on a single CPU) the write would stop
        // all serving, and under load every commit would look lone — none would be grouped.
        let spare_worker = tokio::runtime::Handle::try_current().is_ok_and(|h| {
            h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
                && h.metrics().num_workers() > 1
        });
        if !spare_worker {
            return self.nudge();
        }
        let messages = {
            let mut queue = lock(&self.queue);
            if queue.busy || queue.closed || queue.messages.is_empty() {
                // Someone is on it (and wakes the thread if work is left when done), or the
                // job is gone already.
                return;
            }
            // Only an uncontended commit is worth taking here: with several jobs queued (or
            // queued last time), the tokio worker would stall for their commit while the
            // others' requests wait for it, and the thread groups them just as well.
            let contended = queue.messages.len() > 1 || queue.last_turn > 1;
            if contended || queue.slow || !matches!(queue.messages.first(), Some(Message::Job(_))) {
                drop(queue);
                return self.wake.notify_one();
            }
            queue.busy = true;
            queue.last_turn = 1;
            std::mem::take(&mut queue.messages)
        };
        // Ends the turn even if `process` unwinds (a bug: store panics are caught inside it),
        // so the queue is never left busy with nobody on it.
        let _turn = InlineTurn {
            shared: self,
            started: std::time::Instant::now(),
        };
        if let Some(worker) = lock(&self.worker).as_mut() {
            worker.process(messages);
        }
    }
}

/// Should the commit thread ever unwind (store and callback panics are caught, so only a bug
/// could), the queue closes and what is queued is dropped: every waiting ticket resolves
/// `Closed` instead of waiting forever, as when the thread's channel was dropped.
struct CloseOnPanic<'a>(&'a Shared);

impl Drop for CloseOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            let mut queue = lock(&self.0.queue);
            queue.busy = false;
            let refused = queue.close();
            drop(queue);
            drop(refused);
        }
    }
}

/// A commit turn taken by a waiting task; dropping it ends the turn and hands what queued
/// meanwhile to the commit thread.
struct InlineTurn<'a> {
    shared: &'a Shared,
    started: std::time::Instant,
}

impl Drop for InlineTurn<'_> {
    fn drop(&mut self) {
        let mut queue = lock(&self.shared.queue);
        queue.end_turn(self.started);
        let more = !queue.messages.is_empty();
        drop(queue);
        if more {
            self.shared.wake.notify_one();
        }
    }
}

impl fmt::Debug for Committer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Committer")
            .field("store", &self.inner.describe)
            .field("failure", &self.inner.failure.get())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Committer {
    /// Starts the commit thread, which takes ownership of `store`.
    ///
    /// The store must already have been [`load`](crate::Store::load)ed: the contract says load
    /// comes before any commit, and only the caller can hand the snapshot to the lock table.
    /// Fails only if the OS refuses to start a thread.
    pub fn spawn(store: Box<dyn Store>) -> Result<Committer, StoreError> {
        let stats = Arc::new(StatsCell::default());
        let failure = Arc::new(OnceLock::new());
        let describe = store.describe();
        let max_batch = store.max_batch_mutations();
        let max_bytes = store.max_batch_bytes();
        let inline = store.commits_inline();
        let worker = Worker {
            store,
            describe: describe.clone(),
            stats: Arc::clone(&stats),
            failure: Arc::clone(&failure),
            max_batch,
            max_bytes,
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            worker: Mutex::new(Some(worker)),
            inline,
        });
        let thread_shared = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || thread_shared.run_thread())
            .map_err(|e| StoreError::Io(format!("cannot start the commit thread: {e}")))?;
        Ok(Committer {
            inner: Arc::new(Inner {
                shared,
                stats,
                failure,
                describe,
                thread: Mutex::new(ThreadState::Running(handle)),
            }),
        })
    }

    /// Queues `batch` for commit and returns at once; await the ticket to learn when it is
    /// durable. Never blocks, so it may be called while holding the lock table's mutex — which
    /// is how callers keep submission order equal to the order the table decided things in.
    pub fn submit(&self, batch: Vec<Mutation>) -> CommitTicket {
        self.send_job(batch, None)
    }

    /// [`submit`](Self::submit), and once the batch is durable run `then` exactly once, whether
    /// or not anybody still waits on the ticket. For what must follow a durable batch even if
    /// its caller goes away (handing a released lock to the next waiter).
    ///
    /// Where it runs: in the task awaiting [`CommitTicket::wait`], just before `wait` returns
    /// `Ok` (no extra thread hop on the caller's path); if the ticket was dropped before the
    /// answer came, on the commit thread as it answers; if it was dropped after, in the task
    /// that dropped it. So keep it short and never block in it. It runs only if the batch was
    /// committed (not after a failed commit, nor if the committer shut down first). A panic in
    /// it is caught and logged; the batch stays committed and the ticket resolves `Ok`.
    pub fn submit_then(
        &self,
        batch: Vec<Mutation>,
        then: impl FnOnce() + Send + 'static,
    ) -> CommitTicket {
        self.send_job(batch, Some(Box::new(then)))
    }

    fn send_job(&self, batch: Vec<Mutation>, then: Option<Callback>) -> CommitTicket {
        let (done, rx) = oneshot::channel();
        if let Err(invalid) = crate::validate_batch(&batch) {
            // Never queued: the other jobs, and the store, are untouched.
            let _ = done.send(Err(invalid));
            return CommitTicket { rx, lead: None };
        }
        // After shutdown, the message and `done` are dropped here and the ticket resolves to
        // `Closed`.
        let shared = &self.inner.shared;
        shared.push(Message::Job(Job { batch, then, done }));
        CommitTicket {
            rx,
            lead: shared.inline.then(|| Arc::clone(shared)),
        }
    }

    /// Queues an audit query and returns at once; await the ticket for the answer. The query
    /// runs on the commit thread after every batch submitted before it has been committed, so
    /// it sees them all — in particular every batch whose ticket already resolved `Ok`. It
    /// waits for those commits, and later batches wait for it: keep `limit` modest.
    pub fn query_audit(&self, query: AuditQuery) -> AuditTicket {
        let (done, rx) = oneshot::channel();
        self.query(Query::Audit { query, done });
        QueryTicket { rx }
    }

    /// Queues a read of the record `key` of `space` ([`Store::record`](crate::Store::record))
    /// and returns at once; await the ticket for the value. Ordered like
    /// [`query_audit`](Self::query_audit): it sees every batch submitted before it, and none
    /// after — so a domain that submitted a write and then reads gets what it wrote.
    pub fn query_record(&self, space: &str, key: &str) -> RecordTicket {
        let (done, rx) = oneshot::channel();
        self.query(Query::Record {
            space: space.to_owned(),
            key: key.to_owned(),
            done,
        });
        QueryTicket { rx }
    }

    /// Queues a prefix scan of `space` ([`Store::records`](crate::Store::records): at most
    /// `limit` records whose keys start with `prefix` and sort after `after`, ascending) and
    /// returns at once; await the ticket for them. Ordered like
    /// [`query_audit`](Self::query_audit). Later batches wait for it: page through a large
    /// space with a modest `limit`.
    pub fn query_records(
        &self,
        space: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> RecordsTicket {
        let (done, rx) = oneshot::channel();
        self.query(Query::Records {
            space: space.to_owned(),
            prefix: prefix.to_owned(),
            after: after.map(str::to_owned),
            limit,
            done,
        });
        QueryTicket { rx }
    }

    fn query(&self, query: Query) {
        self.inner.shared.push(Message::Query(query));
    }

    /// Asks the thread to finish every job queued so far, then exit (closing the store).
    /// Returns at once; idempotent. Jobs submitted afterwards get [`StoreError::Closed`].
    pub fn shutdown(&self) {
        self.inner.shared.push(Message::Shutdown);
    }

    /// [`shutdown`](Self::shutdown), then blocks until the thread has exited and the store is
    /// closed. Returns the latched failure if a commit ever failed, so that the server can exit
    /// non-zero. Blocks the calling thread: from async code, call it in `spawn_blocking`.
    pub fn join(&self) -> Result<(), StoreError> {
        self.shutdown();
        let mut state = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let reply = match std::mem::replace(&mut *state, ThreadState::Joined(Ok(()))) {
            ThreadState::Running(handle) => match handle.join() {
                Ok(()) => self.failure().map_or(Ok(()), Err),
                Err(_) => Err(StoreError::Failed(
                    "the commit thread panicked while closing the store".to_owned(),
                )),
            },
            ThreadState::Joined(reply) => reply,
        };
        *state = ThreadState::Joined(reply.clone());
        reply
    }

    /// The latched failure, if a commit has failed (or the store failed after one): the store
    /// refuses writes from then on. For health checks, and for callers that must show nothing
    /// the disk may not have.
    pub fn failure(&self) -> Option<StoreError> {
        self.inner
            .failure
            .get()
            .map(|reason| StoreError::Failed(reason.clone()))
    }

    /// Counters since spawn.
    pub fn stats(&self) -> CommitStats {
        self.inner.stats.snapshot()
    }

    /// The store's [`describe`](crate::Store::describe), taken at spawn.
    pub fn describe(&self) -> &str {
        &self.inner.describe
    }
}

/// The answer to one [`Committer::submit`].
#[must_use = "a batch is only known durable once its ticket resolves Ok"]
pub struct CommitTicket {
    rx: oneshot::Receiver<Answer>,
    /// With a store that commits inline: the queue, for the waiter to take a turn on (or, if
    /// the ticket is dropped unawaited, to wake the commit thread). Taken when used.
    lead: Option<Arc<Shared>>,
}

impl fmt::Debug for CommitTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommitTicket")
            .field("may_lead", &self.lead.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for CommitTicket {
    fn drop(&mut self) {
        // Nobody will wait on this one: the commit thread must take its job.
        if let Some(shared) = self.lead.take() {
            shared.nudge();
        }
    }
}

impl CommitTicket {
    /// Resolves when the batch (and every batch submitted before it) is durable — having run
    /// its [`submit_then`](Committer::submit_then) callback, if any — or with the error that
    /// stopped it: [`StoreError::Unknown`] if its own commit failed (it may or may not be
    /// durable), [`StoreError::Failed`] if it was refused unwritten after an earlier failure,
    /// [`StoreError::Closed`] if the committer shut down first (unwritten). With a store that commits inline, the commit may run right
    /// here, blocking this thread for it (see the module docs).
    pub async fn wait(mut self) -> Result<(), StoreError> {
        if let Some(shared) = self.lead.take() {
            shared.lead_or_nudge();
        }
        match (&mut self.rx).await {
            Ok(Ok(then)) => {
                if let Some(then) = then {
                    then.run();
                }
                Ok(())
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(StoreError::Closed),
        }
    }
}

/// The answer to one query of the [`Committer`]: [`AuditTicket`], [`RecordTicket`],
/// [`RecordsTicket`].
#[derive(Debug)]
#[must_use = "a query does nothing useful unless its ticket is awaited"]
pub struct QueryTicket<T> {
    rx: oneshot::Receiver<QueryReply<T>>,
}

impl<T> QueryTicket<T> {
    /// Resolves with the answer (see [`Store::audit`](crate::Store::audit),
    /// [`Store::record`](crate::Store::record), [`Store::records`](crate::Store::records)), or
    /// with the query's error, [`StoreError::Failed`] if a commit has failed, or
    /// [`StoreError::Closed`] if the committer shut down first.
    pub async fn wait(self) -> Result<T, StoreError> {
        self.rx.await.unwrap_or(Err(StoreError::Closed))
    }
}

#[cfg(test)]
mod tests {
    //! Who takes a commit turn when a task waits on its ticket, decided without a commit thread
    //! (the `Shared` here has none), so nothing races the decision. The promises with the
    //! thread running are in `tests/committer.rs`.

    use super::*;
    use locksmith_core::Snapshot;

    /// A store that records the size of each commit.
    struct Sizes(Arc<Mutex<Vec<usize>>>);

    impl Store for Sizes {
        fn load(&mut self) -> Result<Snapshot, StoreError> {
            Ok(Snapshot::default())
        }
        fn commit(&mut self, batch: &[Mutation]) -> Result<(), StoreError> {
            lock(&self.0).push(batch.len());
            Ok(())
        }
        fn audit(&mut self, _: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn describe(&self) -> String {
            "sizes".into()
        }
    }

    fn threadless(inline: bool) -> (Shared, Arc<Mutex<Vec<usize>>>) {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let worker = Worker {
            store: Box::new(Sizes(Arc::clone(&sizes))),
            describe: "sizes".into(),
            stats: Arc::default(),
            failure: Arc::default(),
            max_batch: None,
            max_bytes: None,
        };
        let shared = Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            worker: Mutex::new(Some(worker)),
            inline,
        };
        (shared, sizes)
    }

    fn push_job(shared: &Shared, mutations: usize) -> oneshot::Receiver<Answer> {
        let (done, rx) = oneshot::channel();
        let batch = vec![Mutation::FenceHighWater(1); mutations];
        shared.push(Message::Job(Job {
            batch,
            then: None,
            done,
        }));
        rx
    }

    fn queued(shared: &Shared) -> usize {
        lock(&shared.queue).messages.len()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_task_commits_a_lone_job_itself() {
        let (shared, sizes) = threadless(true);
        let mut answer = push_job(&shared, 2);
        shared.lead_or_nudge();
        assert_eq!(*lock(&sizes), vec![2]);
        assert!(answer.try_recv().is_ok_and(|a| a.is_ok()), "answered");
        assert_eq!(queued(&shared), 0);
        assert!(!lock(&shared.queue).busy);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn contended_commits_are_left_to_the_commit_thread() {
        // Two jobs queued: a waiting task would stall its runtime thread for both.
        let (shared, sizes) = threadless(true);
        let _a = push_job(&shared, 1);
        let _b = push_job(&shared, 1);
        shared.lead_or_nudge();
        assert!(lock(&sizes).is_empty());
        assert_eq!(queued(&shared), 2);

        // One job, but the last turn was shared: load is still there.
        let (shared, sizes) = threadless(true);
        lock(&shared.queue).last_turn = 4;
        let _c = push_job(&shared, 1);
        shared.lead_or_nudge();
        assert!(lock(&sizes).is_empty());

        // One job, but the last turn was slow (a stalling disk): not on a runtime thread.
        let (shared, sizes) = threadless(true);
        lock(&shared.queue).slow = true;
        let _s = push_job(&shared, 1);
        shared.lead_or_nudge();
        assert!(lock(&sizes).is_empty());

        // A turn under way: its leader (or the thread) takes what queued meanwhile.
        let (shared, sizes) = threadless(true);
        lock(&shared.queue).busy = true;
        let _d = push_job(&shared, 1);
        shared.lead_or_nudge();
        assert!(lock(&sizes).is_empty());
        assert_eq!(queued(&shared), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_query_in_the_queue_is_left_to_the_commit_thread() {
        let (shared, sizes) = threadless(true);
        let (done, _rx) = oneshot::channel();
        shared.push(Message::Query(Query::Audit {
            query: AuditQuery::default(),
            done,
        }));
        shared.lead_or_nudge();
        assert!(lock(&sizes).is_empty());
        assert_eq!(queued(&shared), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn on_a_current_thread_runtime_a_waiting_task_never_blocks_it_with_a_commit() {
        let (shared, sizes) = threadless(true);
        let _a = push_job(&shared, 1);
        shared.lead_or_nudge();
        assert!(lock(&sizes).is_empty());
        assert_eq!(queued(&shared), 1);
    }
}
