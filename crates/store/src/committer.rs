//! Group commit: many concurrent requests, one fsync.
//!
//! A durable commit costs an fsync (≈0.1–0.4 ms here) whatever its size, so committing each
//! request on its own caps the server at a few thousand writes per second and makes them queue
//! on a lock. Instead every request hands its batch to one commit thread ([`worker`]) and waits
//! on a [`CommitTicket`]; the thread commits everything queued so far in one
//! [`Store::commit`](crate::Store::commit) and then answers every ticket.
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
//! - Audit queries ([`Committer::query_audit`]) run on the same thread, in submission order
//!   relative to batches: a query sees every batch submitted before it (committed first) and
//!   none submitted after it.
//! - A store that bounds its commits
//!   ([`Store::max_batch_mutations`](crate::Store::max_batch_mutations)) gets a group in several
//!   commits, split at job boundaries and made in order; a job is never split.
//! - Fail-stop: after one failed commit, the jobs of that commit and every later job get
//!   [`StoreError::Failed`]; the store is never written again by this process. Later audit
//!   queries get the same error. A failed query latches nothing.
//! - [`Committer::shutdown`] finishes the jobs queued before it; later ones get
//!   [`StoreError::Closed`]. Dropping the last handle does the same, without waiting.

mod stats;
mod worker;

use std::fmt;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::{self, JoinHandle};

use locksmith_core::{AuditRecord, Mutation};
use tokio::sync::oneshot;

pub use stats::CommitStats;
use stats::StatsCell;
use worker::{Answer, Callback, Job, Message, Query, QueryReply, Reply, Worker};

use crate::{AuditQuery, Store, StoreError};

/// The name of the commit thread, as seen in `top -H` and debuggers.
const THREAD_NAME: &str = "locksmith-commit";

/// A cloneable handle to the commit thread. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Committer {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Message>,
    stats: Arc<StatsCell>,
    failure: Arc<OnceLock<String>>,
    describe: String,
    thread: Mutex<ThreadState>,
}

enum ThreadState {
    Running(JoinHandle<()>),
    Joined(Reply),
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
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(StatsCell::default());
        let failure = Arc::new(OnceLock::new());
        let describe = store.describe();
        let max_batch = store.max_batch_mutations();
        let worker = Worker {
            store,
            describe: describe.clone(),
            rx,
            stats: Arc::clone(&stats),
            failure: Arc::clone(&failure),
            max_batch,
        };
        let handle = thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || worker.run())
            .map_err(|e| StoreError::Io(format!("cannot start the commit thread: {e}")))?;
        Ok(Committer {
            inner: Arc::new(Inner {
                tx,
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
        // If the thread has exited, the message and `done` are dropped here and the ticket
        // resolves to `Closed`.
        let _ = self.inner.tx.send(Message::Job(Job { batch, then, done }));
        CommitTicket { rx }
    }

    /// Queues an audit query and returns at once; await the ticket for the answer. The query
    /// runs on the commit thread after every batch submitted before it has been committed, so
    /// it sees them all — in particular every batch whose ticket already resolved `Ok`. It
    /// waits for those commits, and later batches wait for it: keep `limit` modest.
    pub fn query_audit(&self, query: AuditQuery) -> AuditTicket {
        let (done, rx) = oneshot::channel();
        let _ = self.inner.tx.send(Message::Query(Query { query, done }));
        AuditTicket { rx }
    }

    /// Asks the thread to finish every job queued so far, then exit (closing the store).
    /// Returns at once; idempotent. Jobs submitted afterwards get [`StoreError::Closed`].
    pub fn shutdown(&self) {
        let _ = self.inner.tx.send(Message::Shutdown);
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

    /// The latched failure, if a commit has failed: the store refuses writes from then on.
    /// For health checks.
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
#[derive(Debug)]
#[must_use = "a batch is only known durable once its ticket resolves Ok"]
pub struct CommitTicket {
    rx: oneshot::Receiver<Answer>,
}

impl CommitTicket {
    /// Resolves when the batch (and every batch submitted before it) is durable — having run
    /// its [`submit_then`](Committer::submit_then) callback, if any — or with the error that
    /// stopped it: [`StoreError::Failed`] after a failed commit, [`StoreError::Closed`] if the
    /// committer shut down first.
    pub async fn wait(self) -> Result<(), StoreError> {
        match self.rx.await {
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

/// The answer to one [`Committer::query_audit`].
#[derive(Debug)]
#[must_use = "a query does nothing useful unless its ticket is awaited"]
pub struct AuditTicket {
    rx: oneshot::Receiver<QueryReply>,
}

impl AuditTicket {
    /// Resolves with the matching records (see [`Store::audit`](crate::Store::audit)), or with
    /// the query's error, [`StoreError::Failed`] if a commit has failed, or
    /// [`StoreError::Closed`] if the committer shut down first.
    pub async fn wait(self) -> Result<Vec<AuditRecord>, StoreError> {
        self.rx.await.unwrap_or(Err(StoreError::Closed))
    }
}
