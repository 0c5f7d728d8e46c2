//! # locksmith-store
//!
//! Durable storage for the lock table — leases, holds, the fencing high-water mark and the
//! audit log — and for the records of every other domain (opaque bytes under `(space, key)`):
//! the [`Store`] trait and its durability contract, the embedded [`redb`] backend (the default:
//! one file, no setup), the group-commit [`Committer`] that lets concurrent requests share one
//! fsync (and answers audit and record queries in order with the commits), and a conformance
//! suite ([`conformance`], behind the `conformance` feature) that every backend must pass.
//!
//! What it is not: a lock table, nor a config store. It stores what `locksmith-core` and the
//! domains tell it to and hands it back; it makes no decisions about leases, and never decodes
//! a domain's record.

pub mod codec;
mod committer;
#[cfg(feature = "conformance")]
pub mod conformance;
mod embedded;
mod error;
mod limits;
mod options;

pub use committer::{
    AuditTicket, CommitStats, CommitTicket, Committer, QueryTicket, RecordTicket, RecordsTicket,
};
pub use embedded::EmbeddedStore;
pub use error::StoreError;
pub use limits::{mutation_bytes, validate_batch};
pub use options::{AuditQuery, StoreOptions};

use std::path::Path;

use locksmith_core::{AuditRecord, LeaseChunk, Mutation, Snapshot};

/// Opens the embedded store in `dir` (created if missing), loads it, and starts its committer:
/// everything a server needs at boot, in the order the [`Store`] contract requires.
pub fn open_embedded(dir: &Path) -> Result<(Snapshot, Committer), StoreError> {
    open_embedded_with(dir, StoreOptions::default())
}

/// [`open_embedded`] with explicit [`StoreOptions`].
pub fn open_embedded_with(
    dir: &Path,
    options: StoreOptions,
) -> Result<(Snapshot, Committer), StoreError> {
    let mut store = EmbeddedStore::open_with(dir, options)?;
    let snapshot = store.load()?;
    let committer = Committer::spawn(Box::new(store))?;
    Ok((snapshot, committer))
}

/// How many leases a store puts in a chunk for a [`LeaseSink`] (the last may have fewer):
/// a few hundred KB, so handing one over costs nothing next to reading it, and the chunks in
/// flight between two threads stay small.
pub const LEASE_CHUNK: usize = 4_096;

/// Where [`Store::load_streaming`] hands the stored leases.
pub trait LeaseSink {
    /// How many leases will follow, when the store knows: called at most once, before any
    /// chunk. A capacity hint, nothing more.
    fn expect(&mut self, _leases: usize) {}

    /// Takes the leases in `chunk`. The store clears the chunk afterwards and fills it again,
    /// so a sink that keeps the leases swaps it for an empty one (`std::mem::take`). An error
    /// stops the load, which returns it.
    fn leases(&mut self, chunk: &mut LeaseChunk) -> Result<(), StoreError>;
}

/// A durable home for the lock table's state — leases, holds, the fence high-water mark, the
/// audit log — and for the records of every other domain.
///
/// # Durability contract
///
/// - [`Store::commit`] applies the whole batch atomically — after a crash at any instant, either
///   every mutation of the batch is visible to [`Store::load`] (and [`Store::audit`]) or none
///   is — and in order (a later mutation of the same lease or hold wins).
/// - When `commit` returns `Ok`, the batch is durable: it survives `kill -9` of the process and
///   the loss of power of the machine (the data is fsynced to stable storage).
/// - Batches are durable in the order they were committed: if batch N is visible after a crash,
///   every batch before N is too.
/// - The fence high-water mark never goes backwards: `load` returns the maximum
///   `FenceHighWater` ever committed, and at least every stored lease's token and id and every
///   stored hold's id (holds draw from the same sequence).
/// - Holds behave like leases: `PutHold` inserts or replaces by id, `DeleteHold` removes (a
///   missing id is a no-op), `load` returns every stored hold.
/// - `AppendAudit` stores the record under its `seq` (an existing `seq` is replaced; the table
///   never does that). `load` returns as `audit_seq` the highest `seq` ever appended, which
///   never goes backwards — not even when retention has deleted that record.
/// - Retention: when a commit takes the log above
///   [`StoreOptions::audit_retention`] records, the oldest records are deleted in the same
///   commit, at most (records appended by the commit + 1,024) of them. In steady state the log
///   never exceeds the retention; after the retention is lowered, the following commits trim
///   the excess bit by bit rather than in one long commit.
/// - What a failed `commit` means, by its error: [`StoreError::Failed`] — the batch was
///   refused before any of it was written (an earlier failure, or a write the store must not
///   make, as a deposed etcd leader's); any other error — the batch may or may not be durable.
///   Either way the caller must stop writing (the [`Committer`] latches the failure and refuses
///   all later batches) rather than guess. A new process must `load` to learn what survived.
/// - A commit that returns `Ok` is durable even if work that follows it in the store fails
///   (the embedded store's copy into redb, its switch to the next log segment): the store then
///   returns `Ok`, reports the failure in [`Store::failure`], and refuses every later commit
///   with [`StoreError::Failed`].
/// - Records: `PutRecord { space, key, value }` inserts or replaces the record `(space, key)`
///   with `value`, byte for byte (the store never decodes it); `DeleteRecord` removes it (a
///   missing record is a no-op). They are part of the batch like any other mutation: atomic with
///   the lease and audit mutations beside them, in order. Each space is its own keyspace: the
///   same key in two spaces names two records. They are read with [`Store::record`] and
///   [`Store::records`], not at `load`.
/// - A batch holding a record outside the limits of `locksmith_core::keyspace` (a bad space
///   name, an empty or over-long key, a value over 16 MiB) is refused with
///   [`StoreError::Invalid`] before any of it is written; unlike every other error it leaves
///   the store working (see [`validate_batch`]). Domains validate first, so a store never sees
///   one. A backend may refuse the same way a batch too large for it to take at once (etcd's
///   request size), unwritten and still working; see [`Store::max_batch_bytes`].
/// - `load` — or [`Store::load_streaming`], which reads the same state — is called once, before
///   any `commit`, and returns exactly the durable state.
pub trait Store: Send + 'static {
    /// Reads the durable state.
    fn load(&mut self) -> Result<Snapshot, StoreError>;

    /// Reads the durable state like [`Store::load`], but hands the leases to `sink` a chunk at
    /// a time as they are read, instead of in the snapshot: the snapshot returned has no
    /// leases, and everything else as `load` would return it (its `fence_high_water` still
    /// covers every lease). Every lease `load` would return reaches the sink exactly once,
    /// before this returns; the order is not part of the contract (the stores here go by id).
    ///
    /// What a server does at boot: a million leases then never exist as a million records, and
    /// the lock table is built from the first chunks while the store still reads the next ones
    /// (see `locksmith-server`'s `recover`). An error from the sink stops the read and is
    /// returned. The default calls `load` and hands its leases over; a backend that can decode
    /// straight into chunks overrides it (the embedded store does).
    fn load_streaming(&mut self, sink: &mut dyn LeaseSink) -> Result<Snapshot, StoreError> {
        let mut snapshot = self.load()?;
        let leases = std::mem::take(&mut snapshot.leases);
        sink.expect(leases.len());
        let mut chunk = LeaseChunk::default();
        for part in leases.chunks(LEASE_CHUNK) {
            for record in part {
                chunk.push(record.into());
            }
            sink.leases(&mut chunk)?;
            chunk.clear();
        }
        Ok(snapshot)
    }

    /// Applies `batch` atomically and durably (see the trait docs).
    fn commit(&mut self, batch: &[Mutation]) -> Result<(), StoreError>;

    /// A failure the store latched after a commit that was nonetheless durable (see the trait
    /// docs): `Some` from then on, and every later `commit` is refused. The [`Committer`] asks
    /// after each successful commit, so that the failure is known at once — not only when the
    /// next batch is refused. The default, for a store with no work after its commit: `None`.
    fn failure(&self) -> Option<StoreError> {
        None
    }

    /// Reads audit records. May be called at any time after `load`, between commits.
    ///
    /// - Sees exactly the records of every committed batch (minus those retention deleted),
    ///   never part of a batch.
    /// - Filters ([`AuditQuery`]): `resource` equality, `at_ms >= since_ms`,
    ///   `seq > after_seq`; all that are set must hold.
    /// - Returns the **newest** `limit` matching records, oldest first (ascending `seq`): the
    ///   "recent history" a listing wants. So with `after_seq`, a caller that receives exactly
    ///   `limit` records may have missed older ones between `after_seq` and the first returned;
    ///   to page without gaps, keep `limit` above what can arrive between two polls.
    /// - A backend may bound the work of one query (the embedded store examines at most
    ///   1,000,000 records; see [`EmbeddedStore`]) and must document when that bound can cut
    ///   an answer short.
    /// - A failed query does not affect durable state; the caller may keep committing.
    fn audit(&mut self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;

    /// Reads the record `key` of `space`: its value as last committed, or `None`. May be called
    /// at any time after `load`, between commits.
    ///
    /// - Sees every committed batch, never part of one.
    /// - A failed read does not affect durable state; the caller may keep committing.
    ///
    /// Every backend of this crate and of `locksmith-etcd` implements it; the default, for test
    /// doubles that keep only the lock table, refuses with [`StoreError::Io`].
    fn record(&mut self, space: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let _ = (space, key);
        Err(StoreError::Io(format!(
            "{} keeps no records",
            self.describe()
        )))
    }

    /// Reads the records of `space` whose keys start with `prefix` (`""` for all) and, when
    /// `after` is given, sort strictly after it: the first `limit` of them, as `(key, value)` in
    /// ascending key order (byte order of the UTF-8 keys). To page, pass the last key returned
    /// as the next `after`; to load a whole space at boot, page until fewer than `limit` come
    /// back. May be called at any time after `load`, between commits.
    ///
    /// - Sees every committed batch, never part of one.
    /// - A failed read does not affect durable state; the caller may keep committing.
    /// - Every value is returned whole, so `limit` bounds the answer's size at `limit` × 16 MiB:
    ///   page modestly through large records.
    ///
    /// The default, for test doubles that keep only the lock table, refuses with
    /// [`StoreError::Io`] (see [`Store::record`]).
    fn records(
        &mut self,
        space: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let _ = (space, prefix, after, limit);
        Err(StoreError::Io(format!(
            "{} keeps no records",
            self.describe()
        )))
    }

    /// A short name for logs and health output, e.g. `embedded:/var/lib/locksmith`.
    fn describe(&self) -> String;

    /// The most mutations one [`commit`](Store::commit) should carry, or `None` (the default)
    /// for no limit. A backend whose transactions are bounded (etcd's `--max-txn-ops`) says so
    /// here, and the [`Committer`] then splits a group of queued jobs into several commits at
    /// job boundaries, each at or under the limit — in order, so its guarantees hold unchanged.
    /// A single job larger than the limit is still committed alone, in one commit: a job's
    /// atomicity comes first, and the backend must take it or fail.
    fn max_batch_mutations(&self) -> Option<usize> {
        None
    }

    /// The most bytes one [`commit`](Store::commit) should carry, as [`mutation_bytes`]
    /// estimates them, or `None` (the default) for no limit. A backend whose requests are
    /// bounded in size (etcd's `--max-request-bytes`) says so here, and the [`Committer`] splits
    /// a group of queued jobs into commits at or under it, as for
    /// [`max_batch_mutations`](Store::max_batch_mutations): two 1 MiB config writes queued
    /// together must not make one request etcd refuses. A single larger job is still committed
    /// alone; a backend that refuses it unwritten answers [`StoreError::Invalid`].
    fn max_batch_bytes(&self) -> Option<usize> {
        None
    }

    /// Whether a commit may run on the thread of a task that waits for it, instead of only on
    /// the commit thread: true for a backend whose commit is a short blocking write (the embedded
    /// store's log append), so that a commit nobody else is making costs no thread hand-offs. A
    /// backend that drives its own async runtime inside `commit` (etcd) must say false, the
    /// default. See [`Committer`] for when the waiting task leads.
    fn commits_inline(&self) -> bool {
        false
    }
}
