//! The apply thread: copies batches that are already durable in the write-ahead log into the
//! redb tables, off the commit path.
//!
//! It takes every batch queued since its last pass — passes are at least [`PASS_INTERVAL`]
//! apart unless a reader is waiting — and applies them in one redb transaction with
//! `Durability::None` (no fsync: the log already made them durable), so under load many commits
//! share one B-tree update. When the log has sealed a segment, the pass is a checkpoint
//! instead — `Durability::Immediate`, which makes this and every earlier pass durable in redb —
//! and afterwards the sealed segments are deleted. Each pass records the highest batch sequence
//! number it applied in redb's `meta` table, in the same transaction, so recovery knows which
//! frames of the log redb already has.
//!
//! Readers (audit queries) call [`Applier::wait_applied`] to see every committed batch.
//! A failed pass latches: the store then refuses commits (the committer's fail-stop).

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
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

enum Message {
    /// A batch's binary payload (see [`crate::codec::encode_batch_into`]).
    Batch(u64, Vec<u8>),
    /// A segment whose frames all have `seq <= last_seq`; delete it after the next checkpoint.
    Sealed(PathBuf),
    /// A reader is waiting: apply what is queued now.
    Flush,
    Shutdown,
}

#[derive(Default)]
struct State {
    applied: u64,
    failure: Option<String>,
    exited: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A handle to the apply thread.
pub(super) struct Applier {
    tx: mpsc::Sender<Message>,
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

impl Applier {
    /// Starts the thread; `applied` is the highest sequence number redb already has.
    pub(super) fn spawn(
        db: Arc<Database>,
        dir: PathBuf,
        retention: usize,
        applied: u64,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                applied,
                ..State::default()
            }),
            changed: Condvar::new(),
        });
        let worker = Worker {
            db,
            dir,
            retention,
            rx,
            shared: Arc::clone(&shared),
        };
        let handle = thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || worker.run())
            .map_err(|e| StoreError::Io(format!("cannot start the apply thread: {e}")))?;
        Ok(Self {
            tx,
            shared,
            handle: Some(handle),
        })
    }

    /// The latched failure of an earlier pass, if any.
    pub(super) fn check(&self) -> Result<(), StoreError> {
        match &self.shared.state().failure {
            Some(reason) => Err(StoreError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    /// Queues a batch that is durable in the log under `seq`, as its binary payload: the
    /// records it holds are written to redb as they are, never decoded and encoded again.
    pub(super) fn batch(&self, seq: u64, batch: Vec<u8>) -> Result<(), StoreError> {
        self.send(Message::Batch(seq, batch))
    }

    /// Queues the deletion of a sealed segment, after the next checkpoint.
    pub(super) fn sealed(&self, path: PathBuf) -> Result<(), StoreError> {
        self.send(Message::Sealed(path))
    }

    /// Blocks until every batch up to `seq` is in redb (visible to readers, not necessarily
    /// durable there), or the thread failed.
    pub(super) fn wait_applied(&self, seq: u64) -> Result<(), StoreError> {
        let mut state = self.shared.state();
        if state.applied >= seq {
            return Ok(());
        }
        self.send(Message::Flush)?;
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
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Applies everything queued, checkpoints (redb durable), and stops the thread. Returns
    /// the latched failure, if a pass ever failed.
    pub(super) fn shutdown(&mut self) -> Result<(), StoreError> {
        let _ = self.tx.send(Message::Shutdown);
        if let Some(handle) = self.handle.take()
            && handle.join().is_err()
        {
            return Err(StoreError::Failed("the apply thread panicked".to_owned()));
        }
        self.check()
    }

    fn send(&self, message: Message) -> Result<(), StoreError> {
        self.tx.send(message).map_err(|_| {
            self.check()
                .err()
                .unwrap_or_else(|| StoreError::Failed("the apply thread has stopped".to_owned()))
        })
    }
}

impl Drop for Applier {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

struct Worker {
    db: Arc<Database>,
    dir: PathBuf,
    retention: usize,
    rx: mpsc::Receiver<Message>,
    shared: Arc<Shared>,
}

impl Worker {
    fn run(self) {
        let mut batches: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut sealed: Vec<PathBuf> = Vec::new();
        let mut stop = false;
        let mut last_pass = Instant::now();
        while !stop {
            // Block for the first message (a closed channel means the store is gone), then take
            // whatever else is queued: one pass for all of it.
            let mut flush = false;
            let mut next = self.rx.recv().ok();
            if next.is_none() {
                stop = true;
            }
            loop {
                while let Some(message) = next {
                    match message {
                        Message::Batch(seq, batch) => batches.push((seq, batch)),
                        Message::Sealed(path) => sealed.push(path),
                        Message::Flush => flush = true,
                        Message::Shutdown => stop = true,
                    }
                    next = self.rx.try_recv().ok();
                }
                // Unless a reader waits or a checkpoint is due, keep collecting until the pass
                // interval is over: each pass rewrites the B-tree pages it touches, so one pass
                // per interval touches each page once for many batches.
                let left = PASS_INTERVAL.saturating_sub(last_pass.elapsed());
                if stop || flush || !sealed.is_empty() || batches.is_empty() || left.is_zero() {
                    break;
                }
                match self.rx.recv_timeout(left) {
                    Ok(message) => next = Some(message),
                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                    Err(mpsc::RecvTimeoutError::Disconnected) => stop = true,
                }
            }
            let checkpoint = stop || !sealed.is_empty();
            if batches.is_empty() && !checkpoint {
                continue;
            }
            let durability = if checkpoint {
                Durability::Immediate
            } else {
                Durability::None
            };
            last_pass = Instant::now();
            match tables::guard("apply", || {
                tables::apply(&self.db, &batches, durability, self.retention)
            }) {
                Ok(()) => {
                    let mut state = self.shared.state();
                    if let Some((seq, _)) = batches.last() {
                        state.applied = state.applied.max(*seq);
                    }
                    drop(state);
                    self.shared.changed.notify_all();
                    batches.clear();
                }
                Err(error) => {
                    tracing::error!(%error, "applying committed batches to the database failed");
                    self.shared.state().failure = Some(error.to_string());
                    break;
                }
            }
            if checkpoint && !sealed.is_empty() {
                self.delete(&mut sealed);
            }
        }
        self.shared.state().exited = true;
        self.shared.changed.notify_all();
    }

    /// Deletes sealed segments that the last checkpoint made redundant. A segment that cannot
    /// be deleted is only wasted space: recovery skips frames redb already has.
    fn delete(&self, sealed: &mut Vec<PathBuf>) {
        for path in sealed.drain(..) {
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "cannot delete a checkpointed log segment");
            }
        }
        if let Err(error) = wal::sync_dir(&self.dir) {
            tracing::warn!(%error, "cannot sync the data directory after deleting log segments");
        }
    }
}
