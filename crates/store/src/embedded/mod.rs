//! The default backend: a write-ahead log in front of one redb file, in one data directory.
//!
//! - **Commit** = one frame appended to the log (`wal-<generation>.log`) and one `fdatasync`:
//!   a sequential write of the batch, which is what makes it durable and acknowledged. A redb
//!   commit with `Durability::Immediate` costs several page writes plus the sync (≈ 0.45 ms per
//!   batch against ≈ 0.2 ms for an append and sync on the reference machine, see
//!   `docs/PERFORMANCE.md`), and it sat on every request's path.
//! - **Apply**: an apply thread ([`applier`]) then copies the batches into the redb tables
//!   ([`tables`]) off the request path, many batches per transaction, without syncing; redb
//!   serves boot-time loads and audit queries. A query first waits until every batch committed
//!   before it is applied, so it sees exactly what the committer's contract promises.
//! - **Checkpoint**: every `applier::CHECKPOINT_BYTES` applied, an apply pass commits redb
//!   with `Durability::Immediate`, which bounds the replay after a crash; when a segment reaches
//!   [`EmbeddedStore::SEGMENT_BYTES`] the log moves to a new one, and the next apply pass is a
//!   checkpoint that also deletes the sealed segment. A clean close checkpoints and deletes every segment, leaving just the redb
//!   file.
//! - **Recovery** (on open): redb returns to its last durable commit, which records the last
//!   log sequence number it contains; the frames above it are replayed from the segments, in
//!   one durable redb transaction, and the segments deleted. A torn frame at the end of the
//!   newest segment (a crash mid-append: never acknowledged) ends the replay; damage anywhere
//!   else is [`StoreError::Corrupt`].
//!
//! Why both: the log alone would make boot replay grow without bound and make audit queries
//! scan; redb alone puts a B-tree commit on every request. Together the request path pays one
//! append and one sync, and the B-tree work is batched in the background.

mod applier;
mod priority;
mod tables;
mod wal;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use locksmith_core::{AuditRecord, Mutation, Snapshot};
use redb::{Database, Durability};

use crate::codec::{decode_batch, encode_batch_into};
use crate::{AuditQuery, LeaseSink, Store, StoreError, StoreOptions};
use applier::Applier;
use tables::Verify;
use wal::Segment;

#[cfg(feature = "conformance")]
pub(crate) use tables::write_raw_lease;

/// The embedded, crash-safe store: a write-ahead log and one redb file in a data directory.
pub struct EmbeddedStore {
    db: Arc<Database>,
    dir: PathBuf,
    options: StoreOptions,
    segment: Option<Segment>,
    /// The next segment, being preallocated on a helper thread (see [`wal`]).
    next_segment: Option<JoinHandle<std::io::Result<PathBuf>>>,
    /// The sequence number of the last batch appended to the log.
    last_seq: u64,
    applier: Applier,
    /// Set once a log append failed: the log may end in a partial frame, so nothing more may
    /// be appended (fail-stop).
    failed: Option<String>,
    /// The frame payload being encoded.
    payload: Vec<u8>,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .field("last_seq", &self.last_seq)
            .finish()
    }
}

impl EmbeddedStore {
    /// The database file inside the data directory.
    pub const FILE_NAME: &'static str = "locksmith.redb";

    /// The most records one [`Store::audit`] query examines (see the `tables` module docs for when
    /// it can cut an answer short).
    pub const AUDIT_SCAN_CAP: usize = 1_000_000;

    /// The size at which the log moves to a new segment and the old one is checkpointed into
    /// redb: what bounds both the log's disk use and the replay at boot after a crash.
    pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

    /// [`open_with`](Self::open_with) the default [`StoreOptions`].
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens (creating if missing) `dir`, its redb file and its log, and recovers: every batch
    /// the log holds beyond redb's last durable commit is replayed into redb before this
    /// returns. A second process opening the same directory gets [`StoreError::Open`] (redb
    /// locks the file) before anything is read or written.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let open_error = |reason: String| StoreError::Open {
            path: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| open_error(format!("cannot create directory: {e}")))?;
        let file = dir.join(Self::FILE_NAME);
        let (db, repaired) = tables::open_database(dir, &file, Verify::IfUnclean)?;
        if repaired {
            tracing::warn!(file = %file.display(), "the database was not closed cleanly; redb verified and repaired it");
        }
        let (last_seq, next_generation) = tables::guard("recover", || recover(&db, dir, options))?;
        // Durable in redb now: the log is done with.
        wal::remove_all(dir).map_err(|e| log_error("delete the replayed log", e))?;
        let segment = Segment::create(dir, next_generation, Self::SEGMENT_BYTES)
            .map_err(|e| log_error("create a log segment", e))?;
        tracing::debug!(
            direct = segment.is_direct(),
            "log appends are {}",
            if segment.is_direct() {
                "direct writes (O_DIRECT | O_DSYNC)"
            } else {
                "page-cache writes and fdatasync"
            }
        );
        let next_segment = Some(prepare_in_background(dir, next_generation + 1));
        let db = Arc::new(db);
        let applier = Applier::spawn(
            Arc::clone(&db),
            dir.to_path_buf(),
            options.audit_retention,
            last_seq,
        )?;
        Ok(Self {
            db,
            dir: dir.to_path_buf(),
            options,
            segment: Some(segment),
            next_segment,
            last_seq,
            applier,
            failed: None,
            payload: Vec::new(),
        })
    }

    /// Verifies the checksum of every page of the database file in `dir` (and repairs what a
    /// crash left, as any open does): what an open skips when the last close was clean. Fails
    /// with [`StoreError::Corrupt`] if the file is damaged, and with [`StoreError::Open`] while
    /// a server has the directory open. The log is left alone. Reads the whole file: about 1.5 s
    /// per GB on the reference machine.
    pub fn check(dir: &Path) -> Result<(), StoreError> {
        let file = dir.join(Self::FILE_NAME);
        if !file.is_file() {
            return Err(StoreError::Open {
                path: dir.display().to_string(),
                reason: format!("{} does not exist", Self::FILE_NAME),
            });
        }
        tables::open_database(dir, &file, Verify::Always).map(|_| ())
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options it was opened with.
    pub fn options(&self) -> StoreOptions {
        self.options
    }

    fn append(&mut self, batch: &[Mutation]) -> Result<(), StoreError> {
        if let Some(reason) = &self.failed {
            return Err(StoreError::Failed(reason.clone()));
        }
        self.applier.check()?;
        encode_batch_into(batch, &mut self.payload)?;
        let seq = self.last_seq + 1;
        let segment = self.segment.as_mut().ok_or(StoreError::Closed)?;
        if let Err(e) = segment.append(seq, &self.payload) {
            let error = log_error("append to the log", e);
            self.failed = Some(error.to_string());
            return Err(error);
        }
        self.last_seq = seq;
        // The payload itself goes to the apply thread; the next batch gets a new buffer.
        self.applier.batch(seq, std::mem::take(&mut self.payload))?;
        if segment.len() >= Self::SEGMENT_BYTES {
            self.rotate()?;
        }
        Ok(())
    }

    /// Seals the current segment (every frame in it is durable) and starts the next; the
    /// apply thread deletes the sealed one after its next checkpoint.
    fn rotate(&mut self) -> Result<(), StoreError> {
        let Some(old) = self.segment.take() else {
            return Err(StoreError::Closed);
        };
        let generation = old.generation() + 1;
        // Normally prepared long ago; if the helper failed, prepare here (slower, still correct).
        let prepared = match self.next_segment.take().map(JoinHandle::join) {
            Some(Ok(Ok(path))) => Ok(path),
            _ => wal::prepare(&self.dir, generation, Self::SEGMENT_BYTES),
        };
        let next = prepared
            .and_then(|path| Segment::open(&self.dir, generation, &path))
            .map_err(|e| {
                let error = log_error("create a log segment", e);
                self.failed = Some(error.to_string());
                error
            })?;
        self.segment = Some(next);
        self.next_segment = Some(prepare_in_background(&self.dir, generation + 1));
        self.applier.sealed(old.path().to_path_buf())
    }
}

impl Store for EmbeddedStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        self.applier.wait_applied(self.last_seq)?;
        tables::guard("load", || tables::load(&self.db))
    }

    fn load_streaming(&mut self, sink: &mut dyn LeaseSink) -> Result<Snapshot, StoreError> {
        self.applier.wait_applied(self.last_seq)?;
        tables::guard("load", || tables::load_streaming(&self.db, sink))
    }

    fn commit(&mut self, batch: &[Mutation]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.append(batch)
    }

    fn audit(&mut self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.applier.wait_applied(self.last_seq)?;
        tables::guard("audit query", || tables::query(&self.db, query))
    }

    fn commits_inline(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("embedded:{}", self.dir.display())
    }
}

impl Drop for EmbeddedStore {
    /// A clean close: apply and checkpoint everything, then delete every log segment (redb
    /// has it all, durably). If anything failed, the segments stay for the next open's
    /// recovery.
    fn drop(&mut self) {
        let segment = self.segment.take();
        if let Some(preparing) = self.next_segment.take() {
            let _ = preparing.join();
        }
        let checkpointed = self.applier.shutdown();
        if self.failed.is_some() || checkpointed.is_err() {
            return;
        }
        drop(segment);
        // Left behind, a segment is only replayed (its frames skipped) at the next open.
        if let Err(error) = wal::remove_all(&self.dir) {
            tracing::warn!(%error, "cannot delete the log after a clean close");
        }
    }
}

/// Replays the log into redb, durably (see the module docs); the caller then deletes it.
/// Returns the last sequence number and the generation for the next segment.
fn recover(db: &Database, dir: &Path, options: StoreOptions) -> Result<(u64, u64), StoreError> {
    let applied = tables::applied_seq(db)?;
    let segments = wal::segments(dir).map_err(|e| log_error("list the log segments", e))?;
    let Some(newest) = segments.last().map(|s| s.generation) else {
        return Ok((applied, 0));
    };
    let mut replay: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut last_seq = applied;
    for segment in &segments {
        let name = segment.path.display();
        let read = wal::read(&segment.path).map_err(|e| log_error("read the log", e))?;
        if let Some(at) = read.bad_at {
            if segment.generation != newest {
                return Err(StoreError::Corrupt(format!(
                    "{name}: damaged frame at byte {at} of a sealed log segment"
                )));
            }
            tracing::warn!(segment = %name, at, "log ends in an incomplete frame (a crash mid-commit); it was never acknowledged and is dropped");
        }
        for frame in read.frames {
            if frame.seq <= applied {
                continue;
            }
            if frame.seq != last_seq + 1 {
                return Err(StoreError::Corrupt(format!(
                    "{name}: log frame {} follows frame {last_seq}",
                    frame.seq
                )));
            }
            // Decoded in full, so that damage inside a record is found here and not half-way
            // through the replay; re-encoded, so that a JSON frame (older logs) replays the same
            // way as a binary one.
            let mut payload = Vec::new();
            decode_batch(&frame.payload)
                .and_then(|batch| encode_batch_into(&batch, &mut payload))
                .map_err(|e| match e {
                    StoreError::Corrupt(what) => {
                        StoreError::Corrupt(format!("{name}: frame {}: {what}", frame.seq))
                    }
                    other => other,
                })?;
            replay.push((frame.seq, payload));
            last_seq = frame.seq;
        }
    }
    if !replay.is_empty() {
        tracing::info!(
            batches = replay.len(),
            from = applied + 1,
            to = last_seq,
            "replaying the log into the database"
        );
    }
    // Durable before the caller deletes the segments, even when there was nothing to replay.
    tables::apply(db, &replay, Durability::Immediate, options.audit_retention)?;
    Ok((last_seq, newest + 1))
}

/// Preallocates segment `generation` on a helper thread, off the commit path.
fn prepare_in_background(dir: &Path, generation: u64) -> JoinHandle<std::io::Result<PathBuf>> {
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        priority::run_in_background("segment preparer");
        wal::prepare(&dir, generation, EmbeddedStore::SEGMENT_BYTES)
    })
}

fn log_error(context: &str, error: std::io::Error) -> StoreError {
    StoreError::Io(format!("{context}: {error}"))
}

#[cfg(test)]
mod tests;
