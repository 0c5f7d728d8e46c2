//! The default backend: a write-ahead log in front of one redb file, in one data directory.
//!
//! - **Commit** = one frame appended to the log (`wal-<generation>.log`) and one `fdatasync`:
//!   a sequential write of the batch, which is what makes it durable and acknowledged. A redb
//!   commit with `Durability::Immediate` costs several page writes plus the sync (≈ 0.45 ms per
//!   batch against ≈ 0.2 ms for an append and sync on the reference machine, see
//!   `docs/journal/2026-12-03-where-the-time-goes.md`), and it sat on every request's path.
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
mod preparer;
mod priority;
mod tables;
mod wal;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use locksmith_core::{AuditRecord, Mutation, Snapshot};
use redb::{Database, Durability};

use crate::codec::{decode_batch, encode_batch_into};
use crate::{AuditQuery, LeaseSink, Store, StoreError, StoreOptions};
use applier::Applier;
use preparer::Preparer;
use tables::Verify;
use wal::{Directory, Segment};

#[cfg(feature = "conformance")]
pub(crate) use tables::write_raw_lease;

/// The embedded, crash-safe store: a write-ahead log and one redb file in a data directory.
pub struct EmbeddedStore {
    db: Arc<Database>,
    /// The data directory, kept open (see [`Directory`]).
    dir: Arc<Directory>,
    options: StoreOptions,
    /// [`StoreOptions::log_segment_bytes`], at least [`Self::MIN_SEGMENT_BYTES`].
    segment_bytes: u64,
    segment: Option<Segment>,
    /// The next segment, being prepared on a helper thread (see [`preparer`]).
    next_segment: Preparer,
    /// The current segment is full but the next one was not ready: said once in the log.
    overfull: bool,
    /// The sequence number of the last batch appended to the log.
    last_seq: u64,
    applier: Applier,
    /// The cause of the first failure, set once: an append failed (the log may end in a
    /// partial frame), or work after a durable append did (the apply thread, a segment
    /// switch). Nothing more may be appended (fail-stop).
    failed: Option<String>,
    /// The frame payload being encoded.
    payload: Vec<u8>,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.dir.path())
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

    /// The default size at which the log moves to a new segment and the old one is
    /// checkpointed into redb ([`StoreOptions::log_segment_bytes`]): what bounds both the log's
    /// disk use and the replay at boot after a crash.
    pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

    /// The smallest segment size honoured; a smaller [`StoreOptions::log_segment_bytes`] is
    /// raised to it.
    pub const MIN_SEGMENT_BYTES: u64 = 64 * 1024;

    /// [`open_with`](Self::open_with) the default [`StoreOptions`].
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens (creating if missing) `dir`, its redb file and its log, and recovers: every batch
    /// the log holds beyond redb's last durable commit is replayed into redb before this
    /// returns. A second process opening the same directory gets [`StoreError::Open`] (redb
    /// locks the file) before anything is read or written.
    ///
    /// Opening needs free space: to replay the log into the database, and then for two log
    /// segments (the one in use and the next, made ahead; the old log is deleted once
    /// replayed). With less, this fails with [`StoreError::NoSpace`], saying how much is
    /// needed, before it writes anything: a start on a full disk neither grows the database
    /// nor leaves a partial segment behind.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let open_error = |reason: String| StoreError::Open {
            path: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| open_error(format!("cannot create directory: {e}")))?;
        let file = dir.join(Self::FILE_NAME);
        let fresh = !file.exists();
        let (db, repaired) = tables::open_database(dir, &file, Verify::IfUnclean)?;
        if repaired {
            tracing::warn!(file = %file.display(), "the database was not closed cleanly; redb verified and repaired it");
        }
        let segment_bytes = options.log_segment_bytes.max(Self::MIN_SEGMENT_BYTES);
        let directory = Directory::open(dir)
            .map_err(|e| open_error(format!("cannot open the directory: {e}")))?;
        let log = tables::guard("recover", || read_log(&db, dir))?;
        // Checked before anything is written: a start that would run out of space half-way
        // (and leave the database grown, or a partial segment) is not begun.
        let replay_estimate = log.replay_bytes().saturating_mul(REPLAY_SPACE_FACTOR);
        if let Err(error) = check_space(dir, segment_bytes, replay_estimate) {
            if fresh {
                // Ours, just made, and empty: leave nothing.
                drop(db);
                let _ = std::fs::remove_file(&file);
            }
            return Err(error);
        }
        // Should the estimate fall short, a replay that fails leaves the committed database as
        // it was; short of space, the error still says how much is needed.
        tables::guard("recover", || replay_log(&db, &log, options)).map_err(|error| {
            let estimate = replay_estimate.saturating_mul(2);
            match (&error, check_space(dir, segment_bytes, estimate)) {
                (StoreError::Io(_), Err(no_space)) => no_space,
                _ => error,
            }
        })?;
        let Log {
            last_seq,
            next_generation,
            ..
        } = log;
        // Durable in redb now: the log is done with.
        wal::remove_all(&directory).map_err(|e| log_error("delete the replayed log", e))?;
        let segment = Segment::create(&directory, next_generation, segment_bytes)
            .map_err(|e| segment_error(dir, segment_bytes, e))?;
        tracing::debug!(
            direct = segment.is_direct(),
            "log appends are {}",
            if segment.is_direct() {
                "direct writes (O_DIRECT | O_DSYNC)"
            } else {
                "page-cache writes and fdatasync"
            }
        );
        let next_segment = Preparer::start(dir, next_generation + 1, segment_bytes);
        let db = Arc::new(db);
        let directory = Arc::new(directory);
        let applier = Applier::spawn(
            Arc::clone(&db),
            Arc::clone(&directory),
            options.audit_retention,
            last_seq,
        )?;
        Ok(Self {
            db,
            dir: directory,
            options,
            segment_bytes,
            segment: Some(segment),
            next_segment,
            overfull: false,
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
        self.dir.path()
    }

    /// The options it was opened with.
    pub fn options(&self) -> StoreOptions {
        self.options
    }

    fn append(&mut self, batch: &[Mutation]) -> Result<(), StoreError> {
        if let Some(cause) = &self.failed {
            return Err(StoreError::Failed(cause.clone()));
        }
        self.applier.check()?;
        encode_batch_into(batch, &mut self.payload)?;
        let seq = self.last_seq + 1;
        let segment = self.segment.as_mut().ok_or(StoreError::Closed)?;
        if let Err(e) = segment.append(seq, &self.payload) {
            let error = log_error("append to the log", e);
            self.failed = Some(error.cause());
            return Err(error);
        }
        self.last_seq = seq;
        // The batch is durable: what fails from here on fails the batches after it, not this
        // one (see `Store::failure`).
        if let Err(error) = self.after_append(seq) {
            tracing::error!(%error, "storage failed after a durable commit; refusing later commits");
            self.failed = Some(error.cause());
        }
        Ok(())
    }

    /// Hands a durable batch to the apply thread, and moves to the next segment if this one is
    /// full.
    fn after_append(&mut self, seq: u64) -> Result<(), StoreError> {
        // The payload itself goes to the apply thread; the next batch gets a new buffer.
        self.applier.batch(seq, std::mem::take(&mut self.payload))?;
        if self
            .segment
            .as_ref()
            .is_some_and(|segment| segment.len() >= self.segment_bytes)
        {
            self.rotate()?;
        }
        Ok(())
    }

    /// Seals the current segment (every frame in it is durable) and starts the next, prepared
    /// ahead; the apply thread deletes the sealed one after its next checkpoint. If the next
    /// segment is not ready — its helper is still writing it, or retrying after a passing
    /// failure (no file descriptor, a full disk) — the log goes on in the current segment past
    /// its size (appends then grow the file: correct, only slower) and the switch is tried
    /// again at the next append.
    fn rotate(&mut self) -> Result<(), StoreError> {
        let Some(prepared) = self.next_segment.take_ready() else {
            if !self.overfull {
                self.overfull = true;
                tracing::warn!(
                    generation = self.next_segment.generation(),
                    "the log segment is full and the next one is not prepared yet; appending \
                     to the current one until it is"
                );
            }
            return Ok(());
        };
        let old = self.segment.take().ok_or(StoreError::Closed)?;
        let generation = prepared.generation();
        let next = Segment::install(&self.dir, prepared)
            .map_err(|e| log_error("switch to the next log segment", e))?;
        self.segment = Some(next);
        self.overfull = false;
        self.next_segment = Preparer::start(self.dir.path(), generation + 1, self.segment_bytes);
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
        crate::validate_batch(batch)?;
        self.append(batch)
    }

    fn audit(&mut self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.applier.wait_applied(self.last_seq)?;
        tables::guard("audit query", || tables::query(&self.db, query))
    }

    fn record(&mut self, space: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.applier.wait_applied(self.last_seq)?;
        tables::guard("record read", || tables::record(&self.db, space, key))
    }

    fn records(
        &mut self,
        space: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.applier.wait_applied(self.last_seq)?;
        tables::guard("record scan", || {
            tables::records(&self.db, space, prefix, after, limit)
        })
    }

    fn failure(&self) -> Option<StoreError> {
        self.failed.clone().map(StoreError::Failed)
    }

    fn commits_inline(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("embedded:{}", self.dir.path().display())
    }
}

impl Drop for EmbeddedStore {
    /// A clean close: apply and checkpoint everything, then delete every log segment (redb
    /// has it all, durably). If anything failed, the segments stay for the next open's
    /// recovery.
    fn drop(&mut self) {
        let segment = self.segment.take();
        // Before the log is deleted: a preparation finishing later would leave its file.
        self.next_segment.stop();
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

/// What the log holds beyond redb's last durable commit (see [`read_log`]).
struct Log {
    /// The frames to replay: `(seq, binary payload)`.
    replay: Vec<(u64, Vec<u8>)>,
    /// The highest sequence number redb has.
    applied: u64,
    /// The sequence number of the last frame (or `applied`, with none to replay).
    last_seq: u64,
    /// The generation for the next segment.
    next_generation: u64,
    /// There is a log at all (a clean close leaves none).
    found: bool,
}

impl Log {
    /// Payload bytes to replay.
    fn replay_bytes(&self) -> u64 {
        self.replay.iter().map(|(_, p)| p.len() as u64).sum()
    }
}

/// Reads the log segments in `dir`: the frames above redb's `wal_applied_seq`, checked (see
/// the module docs). Writes nothing.
fn read_log(db: &Database, dir: &Path) -> Result<Log, StoreError> {
    let applied = tables::applied_seq(db)?;
    let segments = wal::segments(dir).map_err(|e| log_error("list the log segments", e))?;
    let Some(newest) = segments.last().map(|s| s.generation) else {
        return Ok(Log {
            replay: Vec::new(),
            applied,
            last_seq: applied,
            next_generation: 0,
            found: false,
        });
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
            // through the replay.
            decode_batch(&frame.payload).map_err(|e| match e {
                StoreError::Corrupt(what) => {
                    StoreError::Corrupt(format!("{name}: frame {}: {what}", frame.seq))
                }
                other => other,
            })?;
            replay.push((frame.seq, frame.payload));
            last_seq = frame.seq;
        }
    }
    Ok(Log {
        replay,
        applied,
        last_seq,
        next_generation: newest + 1,
        found: true,
    })
}

/// Replays the log into redb, durably (see the module docs); the caller then deletes it.
fn replay_log(db: &Database, log: &Log, options: StoreOptions) -> Result<(), StoreError> {
    if !log.found {
        return Ok(());
    }
    if !log.replay.is_empty() {
        tracing::info!(
            batches = log.replay.len(),
            from = log.applied + 1,
            to = log.last_seq,
            "replaying the log into the database"
        );
    }
    // Durable before the caller deletes the segments, even when there was nothing to replay.
    tables::apply(
        db,
        &log.replay,
        Durability::Immediate,
        options.audit_retention,
    )
}

/// About how much database space replaying a byte of log payload takes, with a margin: the
/// records in their tables, the audit log's indexes, and the B-tree pages they split.
/// Measured: replaying 8.0 MiB of payload (3,840 grants with 1 KB purposes) grew the file by
/// 10.4 MiB.
const REPLAY_SPACE_FACTOR: u64 = 2;

/// Fails with [`StoreError::NoSpace`] unless the filesystem of `dir` has room to open the
/// store: `replay` bytes to replay the log into the database, then — the old log deleted —
/// two log segments of `segment_bytes` (the one in use and the next, made ahead). Where free
/// space cannot be read, it says nothing: what runs out then fails by itself.
fn check_space(dir: &Path, segment_bytes: u64, replay: u64) -> Result<(), StoreError> {
    let Some(free) = free_bytes(dir) else {
        return Ok(());
    };
    let segments = segment_bytes.saturating_mul(2);
    let old_log = wal::bytes_on_disk(dir).unwrap_or(0);
    let needed = replay.saturating_add(segments.saturating_sub(old_log));
    if free >= needed {
        return Ok(());
    }
    Err(StoreError::NoSpace {
        path: dir.display().to_string(),
        needed,
        available: free,
        segment: segment_bytes,
        replay,
    })
}

/// Bytes an unprivileged writer may still use on the filesystem of `dir`.
#[cfg(target_os = "linux")]
fn free_bytes(dir: &Path) -> Option<u64> {
    rustix::fs::statvfs(dir)
        .map(|fs| fs.f_bavail.saturating_mul(fs.f_frsize))
        .map_err(|error| tracing::debug!(%error, "cannot read the data directory's free space"))
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn free_bytes(_dir: &Path) -> Option<u64> {
    None
}

/// The error for a segment that could not be created at open: a full disk says how much
/// space is needed.
fn segment_error(dir: &Path, segment_bytes: u64, error: std::io::Error) -> StoreError {
    if matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) {
        return StoreError::NoSpace {
            path: dir.display().to_string(),
            needed: segment_bytes.saturating_mul(2),
            available: free_bytes(dir).unwrap_or(0),
            segment: segment_bytes,
            replay: 0,
        };
    }
    log_error("create a log segment", error)
}

fn log_error(context: &str, error: std::io::Error) -> StoreError {
    StoreError::Io(format!("{context}: {error}"))
}

#[cfg(test)]
mod tests;
