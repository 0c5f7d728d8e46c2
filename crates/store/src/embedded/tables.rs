//! The redb side of the embedded store: the tables, how a batch of mutations is applied to them,
//! how the state is loaded at boot, and how audit queries walk them.
//!
//! Why redb: a single-file, copy-on-write B-tree whose commit is atomic by construction (two
//! commit slots and a checksummed header flip), so a batch is all-or-nothing after a crash
//! across every table below. Batches reach these tables from the write-ahead log (see
//! `super`), several per transaction, with `Durability::None` between checkpoints; a checkpoint
//! commits with `Durability::Immediate`, which makes it and every earlier transaction durable.
//!
//! Layout:
//! - `leases`: lease id → the [`LeaseRecord`] in the compact binary form of
//!   [`crate::codec::encode_lease`]: a server may hold a million leases, and boot decodes them
//!   all. The key is checked against the record on load so a misfiled record reads as
//!   corruption rather than as a silently wrong lease.
//! - `holds`: hold id → JSON of the [`HoldRecord`], checked against its key the same way.
//! - `records`: `(space, key)` → a domain's record, the bytes of its `PutRecord` as they are
//!   (never decoded here). One table for every space: a domain adds a space, not a table, and
//!   a space's keys are contiguous in it, which is what a prefix scan walks.
//! - `audit`: seq → the [`AuditRecord`] in the binary form of [`crate::codec::encode_audit`].
//!   Not read at boot (only its last key is).
//! - `audit_time`: seq → `(at_ms, max_at_ms)`, where `max_at_ms` is the highest `at_ms` of any
//!   record appended up to and including this one: what lets a `since_ms` query stop early
//!   (below) without decoding a record.
//! - `audit_by_resource`: `(resource, seq)` → `()`, the index that makes a query for one
//!   resource cost what it returns rather than a scan of the whole log.
//!
//!   The three audit tables are written and trimmed in the same transaction, so they never
//!   disagree after a crash.
//! - `meta`, all `u64`:
//!   - `fence_high_water`: the highest fencing token / lease id / hold id ever committed. The
//!     commit writes `max(stored, batch)`, so a lower value (a replayed or reordered batch) can
//!     never lower it. Every `PutLease` and `PutHold` also raises it to the ids they carry: the
//!     fence then survives even if the record is deleted later and the caller forgot
//!     `FenceHighWater`.
//!   - `audit_seq`: the highest audit seq ever appended, kept here because retention deletes
//!     records and the log's last key alone could then go backwards.
//!   - `audit_max_at_ms`: the highest `at_ms` ever appended (the running maximum above).
//!   - `audit_rewrite_seq`: see below.
//!   - `wal_applied_seq`: the highest write-ahead-log sequence number applied here, written in
//!     the same transaction as the batches: recovery replays only the frames above it.
//!
//! Retention: the number of audit records is the `audit` table's length, which redb keeps in
//! the table's root (O(1)), so no separate counter can drift from it. A commit that leaves more
//! than [`StoreOptions::audit_retention`](crate::StoreOptions::audit_retention) records pops the oldest, at most
//! (records it appended + 1,024) of them, with their time and index entries.
//!
//! Audit queries walk `audit_time` (or, with a resource, the index) from the newest record
//! backwards, decode a record only once it matched, and stop when `limit` records matched
//! — so an unfiltered or per-resource query reads about `limit` entries. `after_seq` is a range
//! bound and costs nothing. `since_ms` needs care, because `at_ms` is wall-clock time and may
//! step backwards: the walk stops at the first record whose running maximum `max_at_ms` is
//! below `since_ms`, since no record at or before it can be that recent. After the wall clock
//! steps back by Δ, the records written in the following Δ of clock time are walked over
//! (cheaply) instead of ending the walk. Rewriting an existing seq (which the lock table never
//! does) could leave later running maxima too low, so it sets `audit_rewrite_seq` to the top
//! of the log, and the early stop applies only above it. Every query examines at most
//! [`EmbeddedStore::AUDIT_SCAN_CAP`](super::EmbeddedStore::AUDIT_SCAN_CAP) entries; that cap can only cut an answer short when
//! `limit` exceeds it, or when `since_ms` rejects that many records while walking — i.e.
//! after a huge backwards step of the wall clock or a rewrite.
//!
//! Every redb error is mapped to a [`StoreError`]; nothing here panics on bad input or bad disks.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use locksmith_core::{AuditRecord, LeaseChunk, LeaseRecord, Snapshot};
use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    Table, TableDefinition, TableError,
};

use super::EmbeddedStore;
use crate::codec::{
    RawMutation, decode_audit, decode_audit_resource, decode_hold, decode_lease_into, raw_mutations,
};
use crate::{AuditQuery, LEASE_CHUNK, LeaseSink, StoreError};

const LEASES: TableDefinition<u64, &[u8]> = TableDefinition::new("leases");
const HOLDS: TableDefinition<u64, &[u8]> = TableDefinition::new("holds");
const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const AUDIT_BY_RESOURCE: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("audit_by_resource");
/// seq → (`at_ms`, the highest `at_ms` appended up to and including this record).
const AUDIT_TIME: TableDefinition<u64, (u64, u64)> = TableDefinition::new("audit_time");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const FENCE_HIGH_WATER: &str = "fence_high_water";
const AUDIT_SEQ: &str = "audit_seq";
const AUDIT_MAX_AT_MS: &str = "audit_max_at_ms";
const AUDIT_REWRITE_SEQ: &str = "audit_rewrite_seq";
const WAL_APPLIED: &str = "wal_applied_seq";

/// Beyond the records a commit appends, how many more old records it may delete: what lets a
/// lowered retention catch up, a bounded step per commit.
const RETENTION_SLACK: u64 = 1_024;

/// redb's page cache is an upper bound, not an allocation; the lock table is small and read in
/// full only at boot, so a modest cap keeps a long-running server's memory predictable.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// How [`open_database`] treats the file's integrity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verify {
    /// Trust a file that was closed cleanly or checkpointed (redb recorded its allocator state in
    /// its last durable commit); redb verifies every page only when it has to repair the file.
    /// What boot does.
    IfUnclean,
    /// Verify the checksum of every page, whatever the last shutdown was: the explicit check.
    Always,
}

/// Opens (creating if missing) the database file `file`.
///
/// Boot does not verify the whole file: that read every page (1.5 s for 1 GB, most of it the
/// audit log) on every start. redb verifies every page's checksum itself whenever it must
/// repair the file, i.e. when its last durable commit did not record its allocator state. A
/// clean close records it, and so does every checkpoint (`set_quick_repair` in [`apply`]), so a
/// `kill -9` opens as fast as a clean stop. A file damaged *outside* redb is therefore not
/// verified at open: reading a damaged page makes redb panic, which [`guard`] turns into
/// [`StoreError::Corrupt`], and [`Verify::Always`] (the explicit
/// [`EmbeddedStore::check`](super::EmbeddedStore::check)) finds damage anywhere. A second
/// process opening the same file gets [`StoreError::Open`]: redb locks the file.
///
/// Returns the database and whether redb repaired (and so verified) it.
pub(super) fn open_database(
    dir: &Path,
    file: &Path,
    verify: Verify,
) -> Result<(Database, bool), StoreError> {
    let open_error = |reason: String| StoreError::Open {
        path: dir.display().to_string(),
        reason,
    };
    let repaired = Arc::new(AtomicBool::new(false));
    let noted = Arc::clone(&repaired);
    let db = guard(&format!("open {}", file.display()), || {
        Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(verify == Verify::Always)
            .set_repair_callback(move |_| noted.store(true, Ordering::Relaxed))
            .create(file)
            .map_err(|e| match e {
                DatabaseError::DatabaseAlreadyOpen => open_error(format!(
                    "{} is in use by another process \
                     (is another locksmith server running on this directory?)",
                    EmbeddedStore::FILE_NAME
                )),
                DatabaseError::Storage(redb::StorageError::Corrupted(msg)) => {
                    StoreError::Corrupt(format!("{}: {msg}", file.display()))
                }
                other => open_error(other.to_string()),
            })
    })?;
    Ok((db, repaired.load(Ordering::Relaxed)))
}

/// Runs `read`, turning a panic inside redb — how it reacts to a page damaged outside it when
/// the file was not verified at open (see [`open_database`]) — into [`StoreError::Corrupt`].
/// redb is built to be unwound through (a transaction dropped by a panic leaks its pages, and
/// the next open repairs them), and every caller treats `Corrupt` as fatal.
pub(super) fn guard<T>(
    context: &str,
    read: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(StoreError::Corrupt(format!(
            "{context}: the database file is damaged (redb: {message}); \
             check it (`EmbeddedStore::check`) and restore it from a backup"
        )))
    })
}

/// The highest write-ahead-log sequence number whose batch the database already has.
pub(super) fn applied_seq(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_read().map_err(|e| redb_error("begin read", e))?;
    match open_read(&txn, META, "meta")? {
        Some(meta) => Ok(Meta::read(&meta)?.wal_applied),
        None => Ok(0),
    }
}

/// Reads the whole lock-table state.
pub(super) fn load(db: &Database) -> Result<Snapshot, StoreError> {
    /// Collects the leases as records, for a caller that wants them all at once.
    struct Collect(Vec<LeaseRecord>);

    impl LeaseSink for Collect {
        fn expect(&mut self, leases: usize) {
            // Sized once: growing a vector of a million records by doubling copies (and first
            // touches) twice the memory.
            self.0.reserve_exact(leases);
        }

        fn leases(&mut self, chunk: &mut LeaseChunk) -> Result<(), StoreError> {
            self.0.extend(chunk.iter().map(|lease| lease.to_record()));
            Ok(())
        }
    }

    let mut leases = Collect(Vec::new());
    let mut snapshot = load_streaming(db, &mut leases)?;
    snapshot.leases = leases.0;
    Ok(snapshot)
}

/// Reads the whole lock-table state, handing the leases to `sink` in chunks of
/// [`LEASE_CHUNK`] as they are decoded (see [`crate::Store::load_streaming`]): a lease in the
/// binary form goes from redb's page into the chunk without an allocation of its own.
pub(super) fn load_streaming(
    db: &Database,
    sink: &mut dyn LeaseSink,
) -> Result<Snapshot, StoreError> {
    let txn = db.begin_read().map_err(|e| redb_error("begin read", e))?;
    let mut snapshot = Snapshot::default();

    match txn.open_table(META) {
        Ok(meta) => {
            let meta = Meta::read(&meta)?;
            snapshot.fence_high_water = meta.fence_high_water;
            snapshot.audit_seq = meta.audit_seq;
        }
        Err(TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(redb_error("open meta table", e)),
    }

    if let Some(leases) = open_read(&txn, LEASES, "leases")? {
        let count = leases.len().map_err(|e| redb_error("count leases", e))?;
        sink.expect(usize::try_from(count).unwrap_or(0));
        // Room for a chunk of typical leases (about 100 bytes of strings each); it grows if
        // they are longer, and is reused for every chunk.
        let mut chunk = LeaseChunk::with_capacity(LEASE_CHUNK, LEASE_CHUNK * 128);
        for entry in leases.iter().map_err(|e| redb_error("scan leases", e))? {
            let (key, value) = entry.map_err(|e| redb_error("scan leases", e))?;
            let (lease, token) = decode_lease_into(key.value(), value.value(), &mut chunk)?;
            snapshot.fence_high_water = snapshot.fence_high_water.max(token.0).max(lease.0);
            if chunk.len() >= LEASE_CHUNK {
                sink.leases(&mut chunk)?;
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            sink.leases(&mut chunk)?;
        }
    }

    if let Some(holds) = open_read(&txn, HOLDS, "holds")? {
        for entry in holds.iter().map_err(|e| redb_error("scan holds", e))? {
            let (key, value) = entry.map_err(|e| redb_error("scan holds", e))?;
            let record = decode_hold(key.value(), value.value())?;
            snapshot.fence_high_water = snapshot.fence_high_water.max(record.hold.0);
            snapshot.holds.push(record);
        }
    }

    if let Some(audit) = open_read(&txn, AUDIT, "audit")?
        && let Some((last, _)) = audit.last().map_err(|e| redb_error("read audit log", e))?
    {
        snapshot.audit_seq = snapshot.audit_seq.max(last.value());
    }
    Ok(snapshot)
}

/// Applies `batches` (binary batch payloads, each under its log sequence number, ascending) in one transaction of the
/// given durability, trims the audit log to `retention`, and records the last sequence number
/// as applied. With no batches and `Durability::Immediate` it still commits: that makes every
/// earlier `Durability::None` transaction durable (a checkpoint).
pub(super) fn apply(
    db: &Database,
    batches: &[(u64, Vec<u8>)],
    durability: Durability,
    retention: usize,
) -> Result<(), StoreError> {
    // Parse first, so that a damaged batch fails before any write begins.
    let mut writes = Vec::new();
    for (_, payload) in batches {
        writes.extend(raw_mutations(payload)?);
    }
    let mut txn = db.begin_write().map_err(|e| redb_error("begin write", e))?;
    txn.set_durability(durability)
        .map_err(|e| redb_error("set durability", e))?;
    // A durable commit records redb's allocator state, so that the next open after a crash
    // loads it instead of walking (and verifying) the whole file; see `open_database`.
    txn.set_quick_repair(matches!(durability, Durability::Immediate));
    {
        let mut tables = WriteTables {
            leases: open_write(&txn, LEASES, "leases")?,
            holds: open_write(&txn, HOLDS, "holds")?,
            records: open_write(&txn, RECORDS, "records")?,
            audit: open_write(&txn, AUDIT, "audit")?,
            times: open_write(&txn, AUDIT_TIME, "audit_time")?,
            index: open_write(&txn, AUDIT_BY_RESOURCE, "audit_by_resource")?,
        };
        let mut meta_table = open_write(&txn, META, "meta")?;
        let stored = Meta::read(&meta_table)?;
        let mut meta = stored;
        let mut appended = 0u64;
        // A lease (or hold, or record) written more than once in one pass — granted and
        // released between two passes, the common case under load — needs only its last
        // write: the earlier ones would be B-tree inserts that the last one undoes.
        let mut last = HashMap::new();
        for (i, write) in writes.iter().enumerate() {
            if let Some(key) = key(write) {
                last.insert(key, i);
            }
        }
        for (i, write) in writes.into_iter().enumerate() {
            match key(&write) {
                Some(key) if last.get(&key) != Some(&i) => skip(write, &mut meta),
                _ => tables.apply(write, &mut meta, &mut appended)?,
            }
        }
        if appended > 0 || batches.is_empty() {
            tables.trim_audit(retention, appended)?;
        }
        if let Some((seq, _)) = batches.last() {
            meta.wal_applied = meta.wal_applied.max(*seq);
        }
        meta.write_changes(&stored, &mut meta_table)?;
    }
    // On error the transaction is dropped, which aborts it; redb then refuses further writes
    // until reopened, which matches the fail-stop contract.
    txn.commit().map_err(|e| redb_error("commit", e))
}

/// The record `key` of `space`, if stored.
pub(super) fn record(db: &Database, space: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let txn = db.begin_read().map_err(|e| redb_error("begin read", e))?;
    let Some(records) = open_read(&txn, RECORDS, "records")? else {
        return Ok(None);
    };
    let value = records
        .get((space, key))
        .map_err(|e| redb_error("read record", e))?;
    Ok(value.map(|v| v.value().to_vec()))
}

/// The first `limit` records of `space` whose keys start with `prefix` and, with `after`, sort
/// after it, in ascending key order (see [`crate::Store::records`]).
pub(super) fn records(
    db: &Database,
    space: &str,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let txn = db.begin_read().map_err(|e| redb_error("begin read", e))?;
    let Some(records) = open_read(&txn, RECORDS, "records")? else {
        return Ok(Vec::new());
    };
    // The prefix's keys are contiguous from `(space, prefix)` on: start there, or past
    // `after` when that is further, and stop at the first key outside the prefix.
    let start = match after {
        Some(after) if after >= prefix => Bound::Excluded((space, after)),
        _ => Bound::Included((space, prefix)),
    };
    let range = records
        .range::<(&str, &str)>((start, Bound::Unbounded))
        .map_err(|e| redb_error("scan records", e))?;
    let mut found = Vec::new();
    for entry in range {
        let (stored, value) = entry.map_err(|e| redb_error("scan records", e))?;
        let (in_space, key) = stored.value();
        if in_space != space || !key.starts_with(prefix) {
            break;
        }
        found.push((key.to_owned(), value.value().to_vec()));
        if found.len() >= limit {
            break;
        }
    }
    Ok(found)
}

/// Answers an audit query from the tables (see the module docs).
pub(super) fn query(db: &Database, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
    if query.limit == 0 {
        return Ok(Vec::new());
    }
    let first_seq = match query.after_seq {
        None => 0,
        Some(after) => match after.checked_add(1) {
            Some(first) => first,
            None => return Ok(Vec::new()),
        },
    };
    let txn = db.begin_read().map_err(|e| redb_error("begin read", e))?;
    let (Some(audit), Some(times)) = (
        open_read(&txn, AUDIT, "audit")?,
        open_read(&txn, AUDIT_TIME, "audit_time")?,
    ) else {
        return Ok(Vec::new());
    };
    let rewrite_seq = match open_read(&txn, META, "meta")? {
        Some(meta) => Meta::read(&meta)?.rewrite_seq,
        None => 0,
    };
    let mut scan = Scan {
        query,
        audit: &audit,
        rewrite_seq,
        examined: 0,
        found: Vec::new(),
    };

    match &query.resource {
        Some(resource) => {
            let Some(index) = open_read(&txn, AUDIT_BY_RESOURCE, "audit_by_resource")? else {
                return Ok(Vec::new());
            };
            let range = index
                .range((resource.as_str(), first_seq)..=(resource.as_str(), u64::MAX))
                .map_err(|e| redb_error("scan audit index", e))?;
            for entry in range.rev() {
                let (key, _) = entry.map_err(|e| redb_error("scan audit index", e))?;
                let seq = key.value().1;
                // An entry whose record is gone can only be left behind by an undecodable
                // record (see `trim_audit`); skip it.
                let Some(time) = times
                    .get(seq)
                    .map_err(|e| redb_error("read audit time", e))?
                else {
                    continue;
                };
                if scan.offer(seq, time.value(), Some(resource))? {
                    break;
                }
            }
        }
        None => {
            let range = times
                .range(first_seq..)
                .map_err(|e| redb_error("scan audit log", e))?;
            for entry in range.rev() {
                let (key, time) = entry.map_err(|e| redb_error("scan audit log", e))?;
                if scan.offer(key.value(), time.value(), None)? {
                    break;
                }
            }
        }
    }
    let mut found = scan.found;
    found.reverse();
    Ok(found)
}

/// One query's walk from the newest record backwards, over `audit_time` entries; a record is
/// decoded only once its time (and resource) matched.
struct Scan<'q> {
    query: &'q AuditQuery,
    audit: &'q redb::ReadOnlyTable<u64, &'static [u8]>,
    rewrite_seq: u64,
    examined: usize,
    found: Vec<AuditRecord>,
}

impl Scan<'_> {
    /// Takes the next older candidate, already known to be in the `after_seq` range (and, when
    /// `resource` is given, indexed under it); returns true when the walk should stop.
    fn offer(
        &mut self,
        seq: u64,
        (at_ms, max_at_ms): (u64, u64),
        resource: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.examined += 1;
        if let Some(since) = self.query.since_ms {
            if max_at_ms < since && seq > self.rewrite_seq {
                // Neither this record nor any older one is that recent.
                return Ok(true);
            }
            if at_ms < since {
                return Ok(self.capped());
            }
        }
        let bytes = self
            .audit
            .get(seq)
            .map_err(|e| redb_error("read audit record", e))?
            .ok_or_else(|| {
                StoreError::Corrupt(format!("audit record {seq}: its time entry has no record"))
            })?;
        let record = decode_audit(seq, bytes.value())?;
        // An index entry for another resource can only be left behind by an undecodable record
        // that was rewritten; skip it.
        if resource.is_none_or(|resource| record.resource == resource) {
            self.found.push(record);
            if self.found.len() >= self.query.limit {
                return Ok(true);
            }
        }
        Ok(self.capped())
    }

    fn capped(&self) -> bool {
        let capped = self.examined >= EmbeddedStore::AUDIT_SCAN_CAP;
        if capped {
            tracing::warn!(
                cap = EmbeddedStore::AUDIT_SCAN_CAP,
                found = self.found.len(),
                "audit query stopped at its scan cap; the answer may miss older matches"
            );
        }
        capped
    }
}

/// The write transaction's data tables.
struct WriteTables<'txn> {
    leases: Table<'txn, u64, &'static [u8]>,
    holds: Table<'txn, u64, &'static [u8]>,
    records: Table<'txn, (&'static str, &'static str), &'static [u8]>,
    audit: Table<'txn, u64, &'static [u8]>,
    times: Table<'txn, u64, (u64, u64)>,
    index: Table<'txn, (&'static str, u64), ()>,
}

impl WriteTables<'_> {
    fn apply(
        &mut self,
        write: Write,
        meta: &mut Meta,
        appended: &mut u64,
    ) -> Result<(), StoreError> {
        match write {
            Write::PutLease { id, bytes, fence } => {
                self.leases
                    .insert(id, bytes)
                    .map_err(|e| redb_error("write lease", e))?;
                meta.raise_fence(fence);
            }
            Write::DeleteLease(id) => {
                self.leases
                    .remove(id)
                    .map_err(|e| redb_error("delete lease", e))?;
            }
            Write::PutHold { id, bytes } => {
                self.holds
                    .insert(id, bytes)
                    .map_err(|e| redb_error("write hold", e))?;
                meta.raise_fence(id);
            }
            Write::DeleteHold(id) => {
                self.holds
                    .remove(id)
                    .map_err(|e| redb_error("delete hold", e))?;
            }
            Write::AppendAudit {
                seq,
                at_ms,
                resource,
                bytes,
            } => {
                let replaced = self
                    .audit
                    .insert(seq, bytes)
                    .map_err(|e| redb_error("append audit record", e))?
                    .map(|old| audit_resource(seq, old.value()));
                match replaced {
                    None => *appended += 1,
                    Some(Some(old)) => {
                        self.index
                            .remove((old.as_str(), seq))
                            .map_err(|e| redb_error("update audit index", e))?;
                    }
                    Some(None) => {}
                }
                self.index
                    .insert((resource, seq), ())
                    .map_err(|e| redb_error("write audit index", e))?;
                meta.note_append(seq, at_ms);
                self.times
                    .insert(seq, (at_ms, meta.max_at_ms))
                    .map_err(|e| redb_error("write audit time", e))?;
            }
            Write::FenceHighWater(value) => meta.raise_fence(value),
            Write::PutRecord { space, key, value } => {
                self.records
                    .insert((space, key), value)
                    .map_err(|e| redb_error("write record", e))?;
            }
            Write::DeleteRecord { space, key } => {
                self.records
                    .remove((space, key))
                    .map_err(|e| redb_error("delete record", e))?;
            }
        }
        Ok(())
    }

    /// Deletes the oldest audit records beyond `retention`, at most `appended + 1,024` of them.
    fn trim_audit(&mut self, retention: usize, appended: u64) -> Result<(), StoreError> {
        let len = self
            .audit
            .len()
            .map_err(|e| redb_error("count audit records", e))?;
        let retention = u64::try_from(retention).unwrap_or(u64::MAX);
        let excess = len.saturating_sub(retention);
        for _ in 0..excess.min(appended.saturating_add(RETENTION_SLACK)) {
            let popped = self
                .audit
                .pop_first()
                .map_err(|e| redb_error("delete old audit record", e))?
                .map(|(key, value)| {
                    let seq = key.value();
                    (seq, audit_resource(seq, value.value()))
                });
            if let Some((seq, _)) = &popped {
                self.times
                    .remove(*seq)
                    .map_err(|e| redb_error("delete old audit time", e))?;
            }
            match popped {
                None => break,
                Some((seq, Some(resource))) => {
                    self.index
                        .remove((resource.as_str(), seq))
                        .map_err(|e| redb_error("delete old audit index entry", e))?;
                }
                // Its index entry, if any, stays behind; queries skip it.
                Some((_, None)) => {}
            }
        }
        Ok(())
    }
}

/// The `meta` table's values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Meta {
    fence_high_water: u64,
    audit_seq: u64,
    max_at_ms: u64,
    rewrite_seq: u64,
    wal_applied: u64,
}

impl Meta {
    fn read(table: &impl ReadableTable<&'static str, u64>) -> Result<Self, StoreError> {
        let get = |key: &str| -> Result<u64, StoreError> {
            Ok(table
                .get(key)
                .map_err(|e| redb_error("read meta", e))?
                .map_or(0, |v| v.value()))
        };
        Ok(Self {
            fence_high_water: get(FENCE_HIGH_WATER)?,
            audit_seq: get(AUDIT_SEQ)?,
            max_at_ms: get(AUDIT_MAX_AT_MS)?,
            rewrite_seq: get(AUDIT_REWRITE_SEQ)?,
            wal_applied: get(WAL_APPLIED)?,
        })
    }

    fn raise_fence(&mut self, value: u64) {
        self.fence_high_water = self.fence_high_water.max(value);
    }

    /// Keeps the audit high-waters and the rewrite mark (see the module docs) up to date.
    fn note_append(&mut self, seq: u64, at_ms: u64) {
        if seq <= self.audit_seq {
            // Rewriting (or backfilling) inside the log: the later records' running maxima may
            // now be too low.
            self.rewrite_seq = self.rewrite_seq.max(self.audit_seq);
        }
        self.max_at_ms = self.max_at_ms.max(at_ms);
        self.audit_seq = self.audit_seq.max(seq);
    }

    /// Writes the values that changed. Every value only ever grows.
    fn write_changes(
        &self,
        stored: &Meta,
        table: &mut Table<'_, &'static str, u64>,
    ) -> Result<(), StoreError> {
        for (key, old, new) in [
            (
                FENCE_HIGH_WATER,
                stored.fence_high_water,
                self.fence_high_water,
            ),
            (AUDIT_SEQ, stored.audit_seq, self.audit_seq),
            (AUDIT_MAX_AT_MS, stored.max_at_ms, self.max_at_ms),
            (AUDIT_REWRITE_SEQ, stored.rewrite_seq, self.rewrite_seq),
            (WAL_APPLIED, stored.wal_applied, self.wal_applied),
        ] {
            if new > old {
                table
                    .insert(key, new)
                    .map_err(|e| redb_error("write meta", e))?;
            }
        }
        Ok(())
    }
}

/// One mutation, ready to write: the stored records are the batch's bytes (see
/// [`RawMutation`]).
type Write<'a> = RawMutation<'a>;

/// What a write replaces or deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slot<'a> {
    Lease(u64),
    Hold(u64),
    Record(&'a str, &'a str),
}

/// The lease, hold or record `write` replaces or deletes (audit appends and fence raises have
/// none: each is its own record).
fn key<'a>(write: &Write<'a>) -> Option<Slot<'a>> {
    match *write {
        Write::PutLease { id, .. } | Write::DeleteLease(id) => Some(Slot::Lease(id)),
        Write::PutHold { id, .. } | Write::DeleteHold(id) => Some(Slot::Hold(id)),
        Write::PutRecord { space, key, .. } | Write::DeleteRecord { space, key } => {
            Some(Slot::Record(space, key))
        }
        Write::AppendAudit { .. } | Write::FenceHighWater(_) => None,
    }
}

/// Leaves out a write that a later one in the same pass supersedes, keeping its effect on the
/// fence high-water mark.
fn skip(write: Write<'_>, meta: &mut Meta) {
    match write {
        Write::PutLease { fence, .. } => meta.raise_fence(fence),
        Write::PutHold { id, .. } => meta.raise_fence(id),
        _ => {}
    }
}

/// The resource of a stored audit record, for its index entry; `None` (logged) if the record
/// cannot be decoded — deleting or replacing it must not fail a commit.
fn audit_resource(seq: u64, bytes: &[u8]) -> Option<String> {
    match decode_audit_resource(seq, bytes) {
        Ok(resource) => Some(resource),
        Err(error) => {
            tracing::warn!(seq, %error, "undecodable audit record; its index entry is left behind");
            None
        }
    }
}

fn open_read<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    table: TableDefinition<K, V>,
    name: &str,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
    match txn.open_table(table) {
        Ok(table) => Ok(Some(table)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(redb_error(&format!("open {name} table"), e)),
    }
}

fn open_write<'txn, K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &'txn redb::WriteTransaction,
    table: TableDefinition<K, V>,
    name: &str,
) -> Result<Table<'txn, K, V>, StoreError> {
    txn.open_table(table)
        .map_err(|e| redb_error(&format!("open {name} table"), e))
}

/// Writes `bytes` as lease `id` straight into the database in `dir`, bypassing every check:
/// how tests plant a record the store would never write.
#[cfg(feature = "conformance")]
pub(crate) fn write_raw_lease(dir: &Path, id: u64, bytes: &[u8]) -> Result<(), StoreError> {
    let db = Database::create(dir.join(EmbeddedStore::FILE_NAME))
        .map_err(|e| redb_error("open for a raw write", e))?;
    let txn = db.begin_write().map_err(|e| redb_error("begin write", e))?;
    {
        let mut leases = open_write(&txn, LEASES, "leases")?;
        leases
            .insert(id, bytes)
            .map_err(|e| redb_error("write raw lease", e))?;
    }
    txn.commit().map_err(|e| redb_error("commit", e))
}

/// Maps any redb error: checksum or structure damage is [`StoreError::Corrupt`], the rest is
/// [`StoreError::Io`] (disk errors, a poisoned transaction, a database refusing writes after an
/// earlier failure).
fn redb_error(context: &str, error: impl Into<redb::Error>) -> StoreError {
    match error.into() {
        redb::Error::Corrupted(msg) => StoreError::Corrupt(format!("{context}: {msg}")),
        other => StoreError::Io(format!("{context}: {other}")),
    }
}
