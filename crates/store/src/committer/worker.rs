//! A commit turn: the only code that touches the store after boot.
//!
//! Why an OS thread and not a tokio task: `Store::commit` blocks on fsync for up to
//! milliseconds, so only a lone, fast commit is ever made on a runtime thread (see
//! `committer.rs`); one turn at a time taking the queue in order is what makes "batches are
//! durable in submission order" true.
//!
//! Why groups: while one commit is in its fsync, new jobs queue up; the next turn takes all of
//! them at once and pays one fsync for the lot. Under load the group grows by itself, with no
//! timer adding latency when the server is idle.
//!
//! Who runs a turn: the commit thread, or — for a store that
//! [`commits_inline`](crate::Store::commits_inline) — a task waiting on its ticket when nobody
//! else is committing (the queue in `committer.rs` decides; [`Worker::process`] is the same
//! either way, and only one turn runs at a time).
//!
//! Queries (audit, records) share the queue: a query splits the group, so that the batches
//! queued before it are committed first and it sees exactly them.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use locksmith_core::{AuditRecord, Mutation};
use tokio::sync::oneshot;

use super::stats::StatsCell;
use crate::{AuditQuery, Store, StoreError};

/// What a job's waiter receives.
pub(crate) type Reply = Result<(), StoreError>;

/// What a query's waiter receives.
pub(crate) type QueryReply<T> = Result<T, StoreError>;

/// What a record scan returns: `(key, value)`s in ascending key order.
pub(crate) type Scanned = Vec<(String, Vec<u8>)>;

/// What follows a job's commit ([`Committer::submit_then`](super::Committer::submit_then)).
pub(crate) type Callback = Box<dyn FnOnce() + Send>;

/// What a job's ticket receives: after a successful commit, the job's callback (if any), to
/// run in the task that waits; otherwise the error.
pub(crate) type Answer = Result<Option<AfterCommit>, StoreError>;

/// A committed job's callback, handed to whoever ends up holding it: run by the waiting task
/// ([`AfterCommit::run`]), or, if nobody waits any more, when dropped — by the commit thread
/// when the ticket was already gone, or by the task that drops an answered ticket. So it runs
/// exactly once, and without an extra thread hop when its caller is still there.
pub(crate) struct AfterCommit(Option<Callback>);

impl AfterCommit {
    /// Runs the callback now (it runs on drop; this names the intent at the call site).
    pub(crate) fn run(self) {
        drop(self);
    }
}

impl std::fmt::Debug for AfterCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "AfterCommit(pending)"
        } else {
            "AfterCommit(done)"
        })
    }
}

impl Drop for AfterCommit {
    fn drop(&mut self) {
        if let Some(callback) = self.0.take() {
            run_caught(callback);
        }
    }
}

/// Runs a callback; a panic in it is logged, and takes down neither the thread it runs on nor
/// the commit (already durable).
fn run_caught(callback: Callback) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(callback)) {
        tracing::error!(
            panic = %payload_text(payload.as_ref()),
            "an after-commit callback panicked; its batch is committed"
        );
    }
}

/// One submitted batch, what follows its commit, and the channel that acknowledges it.
pub(crate) struct Job {
    pub(crate) batch: Vec<Mutation>,
    pub(crate) then: Option<Callback>,
    pub(crate) done: oneshot::Sender<Answer>,
}

/// One read and the channel that answers it.
pub(crate) enum Query {
    Audit {
        query: AuditQuery,
        done: oneshot::Sender<QueryReply<Vec<AuditRecord>>>,
    },
    Record {
        space: String,
        key: String,
        done: oneshot::Sender<QueryReply<Option<Vec<u8>>>>,
    },
    Records {
        space: String,
        prefix: String,
        after: Option<String>,
        limit: usize,
        done: oneshot::Sender<QueryReply<Scanned>>,
    },
}

pub(crate) enum Message {
    Job(Job),
    Query(Query),
    /// Finish every job queued before this one, then exit.
    Shutdown,
}

pub(crate) struct Worker {
    pub(crate) store: Box<dyn Store>,
    /// `store.describe()`, taken at spawn so that logging never calls into a failed store.
    pub(crate) describe: String,
    pub(crate) stats: Arc<StatsCell>,
    /// The cause of the first failure (a failed commit, or one the store reported after a
    /// durable commit), set once; from then on every job is refused with it.
    pub(crate) failure: Arc<OnceLock<String>>,
    /// `store.max_batch_mutations()`, taken at spawn.
    pub(crate) max_batch: Option<usize>,
    /// `store.max_batch_bytes()`, taken at spawn.
    pub(crate) max_bytes: Option<usize>,
}

impl Worker {
    /// Carries out `messages`, taken from the queue in submission order: the jobs in one group
    /// (split by queries, which see the jobs before them committed). True when one of them was
    /// [`Message::Shutdown`]: the jobs before it are done, the messages after it are dropped
    /// (their tickets resolve [`StoreError::Closed`]).
    pub(crate) fn process(&mut self, messages: Vec<Message>) -> bool {
        let mut group = Vec::new();
        for message in messages {
            match message {
                Message::Job(job) => group.push(job),
                Message::Query(query) => {
                    self.complete(std::mem::take(&mut group));
                    self.answer(query);
                }
                Message::Shutdown => {
                    self.complete(group);
                    return true;
                }
            }
        }
        self.complete(group);
        false
    }

    /// Runs one query.
    fn answer(&mut self, query: Query) {
        match query {
            Query::Audit { query, done } => {
                self.read("audit query", done, |store| store.audit(&query));
            }
            Query::Record { space, key, done } => {
                self.read("record read", done, |store| store.record(&space, &key));
            }
            Query::Records {
                space,
                prefix,
                after,
                limit,
                done,
            } => self.read("record scan", done, |store| {
                store.records(&space, &prefix, after.as_deref(), limit)
            }),
        }
    }

    /// Answers `done` with `read`, unless a commit has failed or nobody waits for the answer
    /// any more. A failed or panicking read latches nothing: it did not write.
    fn read<T>(
        &mut self,
        what: &str,
        done: oneshot::Sender<QueryReply<T>>,
        read: impl FnOnce(&mut dyn Store) -> Result<T, StoreError>,
    ) {
        if done.is_closed() {
            return;
        }
        let reply = match self.failure.get() {
            Some(reason) => Err(StoreError::Failed(reason.clone())),
            None => {
                let reply = catch_unwind(AssertUnwindSafe(|| read(self.store.as_mut())))
                    .unwrap_or_else(|payload| {
                        Err(StoreError::Io(format!(
                            "store panicked during a {what}: {}",
                            payload_text(payload.as_ref())
                        )))
                    });
                if let Err(error) = &reply {
                    tracing::warn!(store = %self.describe, %error, "{what} failed");
                }
                reply
            }
        };
        let _ = done.send(reply);
    }

    /// Commits a drained group: in one commit, or — when the store bounds its commits
    /// ([`Store::max_batch_mutations`], [`Store::max_batch_bytes`]) — in several, split at job
    /// boundaries and made in order.
    fn complete(&mut self, group: Vec<Job>) {
        if self.max_batch.is_none() && self.max_bytes.is_none() {
            return self.complete_chunk(group);
        }
        let limits = Limits {
            mutations: self.max_batch.unwrap_or(usize::MAX),
            bytes: self.max_bytes.unwrap_or(usize::MAX),
        };
        for chunk in split_at_jobs(group, limits) {
            self.complete_chunk(chunk);
        }
    }

    fn complete_chunk(&mut self, group: Vec<Job>) {
        if group.is_empty() {
            return;
        }
        let jobs = group.len() as u64;
        let total = group.iter().map(|job| job.batch.len()).sum();
        let mut batch = Vec::with_capacity(total);
        let mut waiters = Vec::with_capacity(group.len());
        for job in group {
            batch.extend(job.batch);
            waiters.push((job.then, job.done));
        }

        let reply = self.commit(&batch);
        if reply.is_ok() {
            self.stats.record_jobs(jobs);
        }
        for (then, waiter) in waiters {
            let answer = match &reply {
                Ok(()) => Ok(then.map(|callback| AfterCommit(Some(callback)))),
                // Not committed: the callback is dropped unrun.
                Err(error) => Err(error.clone()),
            };
            // A waiter that stopped listening is fine: its batch is durable (or refused) either
            // way, and nobody is left to tell; the answer comes back and is dropped here, which
            // runs its callback.
            let _ = waiter.send(answer);
        }
    }

    /// Commits the concatenated group, or refuses it if an earlier commit failed. An empty group
    /// (barrier jobs only) needs no commit: every earlier group was committed before this loop
    /// turn began.
    ///
    /// The answer follows the batch's durability: `Ok` once it is durable — even when the store
    /// then reports a failure of the work after it ([`Store::failure`]), which latches for the
    /// batches after it; [`StoreError::Failed`] when nothing of it was written (refused after
    /// an earlier failure, by the committer or by the store); [`StoreError::Unknown`] when its
    /// own commit failed some other way, so it may or may not be durable.
    fn commit(&mut self, batch: &[Mutation]) -> Reply {
        if let Some(cause) = self.failure.get() {
            return Err(StoreError::Failed(cause.clone()));
        }
        if batch.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        // A panicking backend must not take the thread down with it: waiters would then see
        // `Closed` and the server would not know the store is failed. Catch and latch instead;
        // the store is never called again, so its possibly broken state is never observed.
        let result = catch_unwind(AssertUnwindSafe(|| self.store.commit(batch)))
            .unwrap_or_else(|payload| Err(StoreError::Io(panic_message(payload.as_ref()))));
        match result {
            Ok(()) => {
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.stats.record_commit(batch.len() as u64, micros);
                let after = catch_unwind(AssertUnwindSafe(|| self.store.failure())).unwrap_or_else(
                    |payload| Some(StoreError::Io(panic_message(payload.as_ref()))),
                );
                if let Some(error) = after {
                    self.latch(
                        &error,
                        "storage failed after a durable commit (that commit stands); refusing \
                         all further writes until restart",
                    );
                }
                Ok(())
            }
            Err(StoreError::Invalid(invalid)) => {
                // Refused unwritten, and the store goes on (its contract): nothing to latch.
                tracing::warn!(store = %self.describe, %invalid, "storage refused a commit");
                Err(StoreError::Invalid(invalid))
            }
            Err(error) => {
                let cause = self.latch(
                    &error,
                    "storage commit failed; refusing all further writes until restart",
                );
                Err(match error {
                    // The store refused it unwritten.
                    StoreError::Failed(_) => StoreError::Failed(cause),
                    _ => StoreError::Unknown(cause),
                })
            }
        }
    }

    /// Latches `error`'s cause as the store's failure (the first one wins) and returns the
    /// latched cause.
    fn latch(&self, error: &StoreError, what: &str) -> String {
        let cause = error.cause();
        tracing::error!(store = %self.describe, reason = %cause, "{what}");
        self.failure.get_or_init(|| cause).clone()
    }
}

/// What one commit may carry.
#[derive(Debug, Clone, Copy)]
struct Limits {
    mutations: usize,
    /// As [`crate::mutation_bytes`] counts them.
    bytes: usize,
}

/// Splits `group` into runs of consecutive jobs within `limits` each; a job beyond them forms a
/// run of its own. Order is kept, and an empty group gives no runs.
fn split_at_jobs(group: Vec<Job>, limits: Limits) -> Vec<Vec<Job>> {
    let mut chunks = Vec::new();
    let mut chunk: Vec<Job> = Vec::new();
    let (mut size, mut bytes) = (0usize, 0usize);
    for job in group {
        let len = job.batch.len();
        let job_bytes = if limits.bytes == usize::MAX {
            0
        } else {
            job.batch.iter().map(crate::mutation_bytes).sum()
        };
        if !chunk.is_empty()
            && (size.saturating_add(len) > limits.mutations
                || bytes.saturating_add(job_bytes) > limits.bytes)
        {
            chunks.push(std::mem::take(&mut chunk));
            (size, bytes) = (0, 0);
        }
        size = size.saturating_add(len);
        bytes = bytes.saturating_add(job_bytes);
        chunk.push(job);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    format!("store panicked during commit: {}", payload_text(payload))
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}
