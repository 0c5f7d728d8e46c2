//! The apply thread: copies batches that are already durable in the write-ahead log into the
//! redb tables, off the commit path.
//!
//! It takes every batch queued since its last pass — passes are at least [`PASS_INTERVAL`]
//! apart unless a reader is waiting — and applies them in one redb transaction with
//! `Durability::None` (no fsync: the log already made them durable), so under load many commits
//! share one B-tree update. When the log has sealed a segment, the pass is a checkpoint
//! instead — `Durability::Immediate`, which makes this and every earlier pass durable in redb —
//! and afterwards the sealed segments are deleted. A pass is also a checkpoint once
//! [`CHECKPOINT_BYTES`] of batches have been applied since the last one, so that what recovery
//! replays after a crash (everything above redb's last durable pass) stays small whatever the
//! segment size. Each pass records the highest batch sequence
//! number it applied in redb's `meta` table, in the same transaction, so recovery knows which
//! frames of the log redb already has.
//!
//! Readers (audit queries) call [`Applier::wait_applied`] to see every committed batch.
//! A failed pass latches: the store then refuses commits (the committer's fail-stop).
//!
//! The thread runs at the lowest CPU priority ([`super::priority`]): under load it takes the
//! cores only when requests leave them idle. So that it can never fall behind without bound,
//! [`Applier::batch`] blocks the commit thread while the queued batches hold more than
//! [`MAX_BACKLOG_BYTES`], until the thread has taken them: requests then wait, the cores go
//! idle, and the apply thread gets them.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use redb::{Database, Durability};

use super::tables;
use super::wal;
use crate::StoreError;

const THREAD_NAME: &str = "locksmith-apply";

/// Longest a durable batch waits before a pass copies it into redb, unless a reader waits for
/// it ([`Applier::wait_applied`]) or a checkpoint is due. At 20 ms a busy server makes at most 50
/// passes a second, each covering hundreds of batches.
const PASS_INTERVAL: Duration = Duration::from_millis(20);

/// Most bytes of batch payload queued for the apply thread before the commit thread waits for
/// it to take them: a few seconds of the heaviest load the benchmarks make, and the memory
/// the queue can hold.
pub(super) const MAX_BACKLOG_BYTES: usize = 64 * 1024 * 1024;

/// Most bytes of batch payload applied without a checkpoint: after a crash, recovery replays
/// the log above redb's last durable pass, so this bounds that replay. Measured on a 1 M-lease
/// restart after `kill -9` under writes: ≈ 0.08 s of boot per MiB replayed, so at most ≈ 0.7 s
/// here, where a whole 16 MiB segment could add ≈ 1.3 s to a restart that must stay under 2 s.
/// 4 MiB measured ≈ 5 % fewer cycles/s at 64 clients (a checkpoint's fsync competes with the
/// log's writes); 8 MiB, no difference within the spread.
pub(super) const CHECKPOINT_BYTES: usize = 8 * 1024 * 1024;

/// What the store hands the thread, and what the thread reports back, under one lock.
///
/// Batches are queued here rather than sent over a channel so that queueing one does not wake
/// the thread: a commit thread making thousands of commits a second would otherwise switch to
/// it and back for every one, only for it to go back to sleep until the pass interval is over.
/// Only what cannot wait for the interval wakes it: the first batch after an idle spell, a
/// sealed segment, a waiting reader, shutdown.
#[derive(Default)]
struct State {
    /// Batches durable in the log, not yet applied: `(seq, binary payload)`.
    batches: Vec<(u64, Vec<u8>)>,
    /// The payload bytes in `batches`.
    queued_bytes: usize,
    /// The bound on `queued_bytes` past which [`Applier::batch`] waits.
    max_backlog: usize,
    /// Payload bytes applied past which a pass is a checkpoint ([`CHECKPOINT_BYTES`]).
    checkpoint_bytes: usize,
    /// Checkpoints made so far.
    checkpoints: u64,
    /// Segments whose frames all have `seq <= last_seq`; delete them after the next checkpoint.
    sealed: Vec<PathBuf>,
    /// A reader is waiting: apply what is queued now.
    flush: bool,
    shutdown: bool,
    /// The highest sequence number in redb.
    applied: u64,
    failure: Option<String>,
    exited: bool,
}

impl State {
    /// Something is queued that must not wait for the pass interval.
    fn urgent(&self) -> bool {
        self.flush || self.shutdown || !self.sealed.is_empty() || self.backlogged()
    }

    /// The queue is over its bound: the commit thread waits for the apply thread.
    fn backlogged(&self) -> bool {
        self.queued_bytes >= self.max_backlog
    }
}

struct Shared {
    state: Mutex<State>,
    /// Signalled to the thread (work it must not sleep through) and by it (a pass finished).
    changed: Condvar,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(state)
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A handle to the apply thread.
pub(super) struct Applier {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

impl Applier {
    /// Starts the thread; `applied` is the highest sequence number redb already has.
    pub(super) fn spawn(
        db: Arc<Database>,
        dir: Arc<wal::Directory>,
        retention: usize,
        applied: u64,
    ) -> Result<Self, StoreError> {
        Self::spawn_with_limits(
            db,
            dir,
            retention,
            applied,
            MAX_BACKLOG_BYTES,
            CHECKPOINT_BYTES,
        )
    }

    /// [`spawn`](Self::spawn) with other bounds than [`MAX_BACKLOG_BYTES`] on the queue and
    /// [`CHECKPOINT_BYTES`] between checkpoints.
    pub(super) fn spawn_with_limits(
        db: Arc<Database>,
        dir: Arc<wal::Directory>,
        retention: usize,
        applied: u64,
        max_backlog: usize,
        checkpoint_bytes: usize,
    ) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                applied,
                max_backlog,
                checkpoint_bytes,
                ..State::default()
            }),
            changed: Condvar::new(),
        });
        let worker = Worker {
            db,
            dir,
            retention,
            shared: Arc::clone(&shared),
        };
        let handle = thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || worker.run())
            .map_err(|e| StoreError::Io(format!("cannot start the apply thread: {e}")))?;
        Ok(Self {
            shared,
            handle: Some(handle),
        })
    }

    /// Checkpoints (durable passes) made since the thread started.
    #[cfg(test)]
    pub(super) fn checkpoints(&self) -> u64 {
        self.shared.state().checkpoints
    }

    /// The latched failure of an earlier pass, if any.
    pub(super) fn check(&self) -> Result<(), StoreError> {
        Self::failed(&self.shared.state())
    }

    fn failed(state: &State) -> Result<(), StoreError> {
        match &state.failure {
            Some(reason) => Err(StoreError::Failed(reason.clone())),
            None if state.exited => Err(StoreError::Failed(
                "the apply thread has stopped".to_owned(),
            )),
            None => Ok(()),
        }
    }

    /// Queues a batch that is durable in the log under `seq`, as its binary payload: the
    /// records it holds are written to redb as they are, never decoded and encoded again.
    ///
    /// While the queue is over its bound, this waits for the thread to take it (or to fail).
    pub(super) fn batch(&self, seq: u64, batch: Vec<u8>) -> Result<(), StoreError> {
        let mut state = self.shared.state();
        loop {
            Self::failed(&state)?;
            if !state.backlogged() {
                break;
            }
            // `urgent()` is true now: the thread does not sleep out the pass interval.
            self.shared.changed.notify_all();
            state = self.shared.wait(state);
        }
        let idle = state.batches.is_empty();
        state.queued_bytes += batch.len();
        state.batches.push((seq, batch));
        let backlogged = state.backlogged();
        drop(state);
        if idle || backlogged {
            // The thread may be asleep with nothing to do; from now on it sleeps out the
            // interval and takes whatever has queued meanwhile.
            self.shared.changed.notify_all();
        }
        Ok(())
    }

    /// Queues the deletion of a sealed segment, after the next checkpoint.
    pub(super) fn sealed(&self, path: PathBuf) -> Result<(), StoreError> {
        let mut state = self.shared.state();
        Self::failed(&state)?;
        state.sealed.push(path);
        drop(state);
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Blocks until every batch up to `seq` is in redb (visible to readers, not necessarily
    /// durable there), or the thread failed.
    pub(super) fn wait_applied(&self, seq: u64) -> Result<(), StoreError> {
        let mut state = self.shared.state();
        loop {
            if let Some(reason) = &state.failure {
                return Err(StoreError::Failed(reason.clone()));
            }
            if state.applied >= seq {
                return Ok(());
            }
            if state.exited {
                return Err(StoreError::Closed);
            }
            state.flush = true;
            self.shared.changed.notify_all();
            state = self.shared.wait(state);
        }
    }

    /// Applies everything queued, checkpoints (redb durable), and stops the thread. Returns
    /// the latched failure, if a pass ever failed.
    pub(super) fn shutdown(&mut self) -> Result<(), StoreError> {
        self.shared.state().shutdown = true;
        self.shared.changed.notify_all();
        if let Some(handle) = self.handle.take()
            && handle.join().is_err()
        {
            return Err(StoreError::Failed("the apply thread panicked".to_owned()));
        }
        match &self.shared.state().failure {
            Some(reason) => Err(StoreError::Failed(reason.clone())),
            None => Ok(()),
        }
    }
}

impl Drop for Applier {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

struct Worker {
    db: Arc<Database>,
    /// The data directory, kept open: deleting a segment needs no new file descriptor.
    dir: Arc<wal::Directory>,
    retention: usize,
    shared: Arc<Shared>,
}

impl Worker {
    fn run(self) {
        super::priority::run_in_background(THREAD_NAME);
        let mut last_pass = Instant::now();
        // Payload bytes applied since the last checkpoint.
        let mut unchecked = 0usize;
        loop {
            let mut state = self.shared.state();
            // Idle: sleep until something is queued.
            while state.batches.is_empty() && !state.urgent() {
                state = self.shared.wait(state);
            }
            // Unless a reader waits, a checkpoint is due or the store closes, let batches
            // collect until the pass interval is over: each pass rewrites the B-tree pages it
            // touches, so one pass per interval touches each page once for many batches.
            while !state.urgent() {
                let left = PASS_INTERVAL.saturating_sub(last_pass.elapsed());
                if left.is_zero() {
                    break;
                }
                state = self
                    .shared
                    .changed
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            let batches = std::mem::take(&mut state.batches);
            let taken_bytes = std::mem::take(&mut state.queued_bytes);
            let released = taken_bytes >= state.max_backlog;
            let sealed = std::mem::take(&mut state.sealed);
            let stop = state.shutdown;
            let checkpoint_bytes = state.checkpoint_bytes;
            state.flush = false;
            drop(state);
            if released {
                // The commit thread may be waiting for the queue to empty; it is.
                self.shared.changed.notify_all();
            }

            unchecked += taken_bytes;
            let checkpoint = stop || !sealed.is_empty() || unchecked >= checkpoint_bytes;
            if !batches.is_empty() || checkpoint {
                let durability = if checkpoint {
                    Durability::Immediate
                } else {
                    Durability::None
                };
                last_pass = Instant::now();
                let applied = tables::guard("apply", || {
                    tables::apply(&self.db, &batches, durability, self.retention)
                });
                let mut state = self.shared.state();
                match applied {
                    Ok(()) => {
                        if let Some((seq, _)) = batches.last() {
                            state.applied = state.applied.max(*seq);
                        }
                        if checkpoint {
                            unchecked = 0;
                            state.checkpoints += 1;
                        }
                    }
                    Err(error) => {
                        tracing::error!(%error, "applying committed batches to the database failed");
                        state.failure = Some(error.to_string());
                        state.exited = true;
                        drop(state);
                        self.shared.changed.notify_all();
                        return;
                    }
                }
                drop(state);
                self.shared.changed.notify_all();
                if checkpoint && !sealed.is_empty() {
                    self.delete(sealed);
                }
            }
            if stop {
                break;
            }
        }
        self.shared.state().exited = true;
        self.shared.changed.notify_all();
    }

    /// Deletes sealed segments that the last checkpoint made redundant. A segment that cannot
    /// be deleted is only wasted space: recovery skips frames redb already has.
    fn delete(&self, sealed: Vec<PathBuf>) {
        for path in sealed {
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "cannot delete a checkpointed log segment");
            }
        }
        if let Err(error) = self.dir.sync() {
            tracing::warn!(%error, "cannot sync the data directory after deleting log segments");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use locksmith_core::{LeaseId, Mutation};

    use super::super::priority::BACKGROUND_NICE;
    use super::*;
    use crate::codec::encode_batch_into;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn payload(id: u64) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        encode_batch_into(&[Mutation::DeleteLease(LeaseId(id))], &mut out)?;
        Ok(out)
    }

    /// The apply thread runs at the lowest priority, so under sustained load it could fall
    /// behind for good and the queue would grow until memory ran out. Past its bound, queueing
    /// a batch waits until the thread has taken the queue.
    #[test]
    fn the_commit_thread_waits_while_the_apply_queue_is_over_its_bound() -> TestResult {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("test.redb");
        let (db, _) = tables::open_database(dir.path(), &file, tables::Verify::IfUnclean)?;
        let db = Arc::new(db);
        let len = payload(1)?.len();
        // Two batches reach the bound.
        let applier = Arc::new(Applier::spawn_with_limits(
            Arc::clone(&db),
            Arc::new(wal::Directory::open(dir.path())?),
            1_000,
            0,
            2 * len,
            CHECKPOINT_BYTES,
        )?);
        // Holding redb's one write transaction stalls the thread inside its next pass.
        let stall = db.begin_write()?;
        // 1 and 2 reach the bound; the thread takes them and stalls; 3 and 4 reach it again.
        for seq in 1..=4 {
            applier.batch(seq, payload(seq)?)?;
        }
        let (done_tx, done) = mpsc::channel();
        let queueing = Arc::clone(&applier);
        let fifth = thread::spawn(move || {
            let queued = payload(5).and_then(|p| queueing.batch(5, p));
            let _ = done_tx.send(queued);
        });
        assert!(
            done.recv_timeout(Duration::from_millis(300)).is_err(),
            "a batch was queued past the bound while the apply thread was stalled"
        );
        drop(stall);
        done.recv_timeout(Duration::from_secs(10))??;
        fifth.join().map_err(|_| "queueing thread panicked")?;
        applier.wait_applied(5)?;
        Ok(())
    }

    /// Bug pinned: a checkpoint came only when a 16 MiB segment was sealed, so a crash just
    /// before one made recovery replay the whole segment (up to ≈ 1.3 s more on a 1 M-lease
    /// restart that must stay under 2 s). Now every `checkpoint_bytes` applied make one.
    #[test]
    fn a_checkpoint_follows_every_checkpoint_bytes_applied_without_a_sealed_segment() -> TestResult
    {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("test.redb");
        let (db, _) = tables::open_database(dir.path(), &file, tables::Verify::IfUnclean)?;
        let len = payload(1)?.len();
        let applier = Applier::spawn_with_limits(
            Arc::new(db),
            Arc::new(wal::Directory::open(dir.path())?),
            1_000,
            0,
            MAX_BACKLOG_BYTES,
            3 * len,
        )?;
        // One pass per batch (a reader waits after each): 3 batches' bytes per checkpoint.
        for seq in 1..=10 {
            applier.batch(seq, payload(seq)?)?;
            applier.wait_applied(seq)?;
        }
        assert_eq!(applier.checkpoints(), 3);
        Ok(())
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_apply_thread_runs_at_the_lowest_cpu_priority() -> TestResult {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("test.redb");
        let (db, _) = tables::open_database(dir.path(), &file, tables::Verify::IfUnclean)?;
        let _applier = Applier::spawn(
            Arc::new(db),
            Arc::new(wal::Directory::open(dir.path())?),
            1_000,
            0,
        )?;
        // The thread lowers its priority as it starts; find it (and those of other tests
        // running in this process) by name and read their nice values.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let nices = nice_of_threads_named(THREAD_NAME)?;
            if !nices.is_empty() && nices.iter().all(|&n| n == BACKGROUND_NICE) {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "apply threads' nice values: {nices:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The nice value of every thread of this process named `name` (`/proc/self/task`).
    #[cfg(target_os = "linux")]
    fn nice_of_threads_named(name: &str) -> Result<Vec<i32>, Box<dyn std::error::Error>> {
        let mut nices = Vec::new();
        for task in std::fs::read_dir("/proc/self/task")? {
            let path = task?.path();
            let (Ok(comm), Ok(stat)) = (
                std::fs::read_to_string(path.join("comm")),
                std::fs::read_to_string(path.join("stat")),
            ) else {
                continue; // the thread ended meanwhile
            };
            if comm.trim_end() != name {
                continue;
            }
            // Fields after the parenthesised name: state is field 3, nice field 19.
            let after_name = stat.rsplit_once(')').ok_or("bad stat")?.1;
            let nice = after_name
                .split_whitespace()
                .nth(19 - 3)
                .ok_or("short stat")?
                .parse()?;
            nices.push(nice);
        }
        Ok(nices)
    }
}
