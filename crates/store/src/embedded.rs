//! The default backend: one redb file, `locksmith.redb`, in the data directory.
//!
//! Why redb: it is a single-file, copy-on-write B-tree whose commit is atomic by construction
//! (two commit slots and a checksummed header flip), so a batch is all-or-nothing after a crash
//! without a write-ahead log of our own, and `Durability::Immediate` makes a commit durable with
//! one `fdatasync` before it returns. That is exactly the [`Store`](crate::Store) contract.
//!
//! Layout:
//! - `leases`: lease id → JSON of the [`LeaseRecord`]. JSON, not a compact binary form, because
//!   the table holds at most a few thousand small records, is read once at boot, and stays
//!   inspectable with any redb tool; the key is checked against the record on load so a
//!   misfiled record reads as corruption rather than as a silently wrong lease.
//! - `meta`: `"fence_high_water"` → the highest fencing token / lease id ever committed. The
//!   commit writes `max(stored, batch)`, so a lower value (a replayed or reordered batch) can
//!   never lower it. Every `PutLease` also raises it to the lease's token and id: the fence then
//!   survives even if the lease is deleted later and the caller forgot `FenceHighWater`.
//!
//! Every redb error is mapped to a [`StoreError`]; nothing here panics on bad input or bad disks.

use std::fmt;
use std::path::{Path, PathBuf};

use locksmith_core::{LeaseRecord, Mutation, Snapshot};
use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition,
    TableError,
};

use crate::{Store, StoreError};

const LEASES: TableDefinition<u64, &[u8]> = TableDefinition::new("leases");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const FENCE_HIGH_WATER: &str = "fence_high_water";

/// redb's page cache is an upper bound, not an allocation; the lock table is small and read in
/// full only at boot, so a modest cap keeps a long-running server's memory predictable.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The embedded, crash-safe store: one redb file in a data directory.
pub struct EmbeddedStore {
    db: Database,
    dir: PathBuf,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.dir)
            .finish()
    }
}

impl EmbeddedStore {
    /// The database file inside the data directory.
    pub const FILE_NAME: &'static str = "locksmith.redb";

    /// Opens (creating if missing) `dir` and `dir/locksmith.redb`.
    ///
    /// The whole file is checksum-verified on every open (redb's `check_integrity_on_open`):
    /// the file is small, and a file damaged outside redb then fails with
    /// [`StoreError::Corrupt`] instead of panicking inside redb. A file left by a crash is
    /// repaired to its last durable commit. A second process opening the same directory gets
    /// [`StoreError::Open`]: redb locks the file.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let open_error = |reason: String| StoreError::Open {
            path: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| open_error(format!("cannot create directory: {e}")))?;
        let file = dir.join(Self::FILE_NAME);
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create(&file)
            .map_err(|e| match e {
                DatabaseError::DatabaseAlreadyOpen => open_error(format!(
                    "{} is in use by another process \
                     (is another locksmith server running on this directory?)",
                    Self::FILE_NAME
                )),
                DatabaseError::Storage(redb::StorageError::Corrupted(msg)) => {
                    StoreError::Corrupt(format!("{}: {msg}", file.display()))
                }
                other => open_error(other.to_string()),
            })?;
        Ok(Self {
            db,
            dir: dir.to_path_buf(),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Store for EmbeddedStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| redb_error("begin read", e))?;
        let mut snapshot = Snapshot::default();

        match txn.open_table(META) {
            Ok(meta) => {
                if let Some(value) = meta
                    .get(FENCE_HIGH_WATER)
                    .map_err(|e| redb_error("read fence high-water", e))?
                {
                    snapshot.fence_high_water = value.value();
                }
            }
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(redb_error("open meta table", e)),
        }

        match txn.open_table(LEASES) {
            Ok(leases) => {
                for entry in leases.iter().map_err(|e| redb_error("scan leases", e))? {
                    let (key, value) = entry.map_err(|e| redb_error("scan leases", e))?;
                    let record = decode(key.value(), value.value())?;
                    snapshot.fence_high_water = snapshot
                        .fence_high_water
                        .max(record.token.0)
                        .max(record.lease.0);
                    snapshot.leases.push(record);
                }
            }
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(redb_error("open leases table", e)),
        }
        Ok(snapshot)
    }

    fn commit(&mut self, batch: &[Mutation]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // Encode first, so that a record that cannot be encoded fails before any write begins.
        let writes = batch
            .iter()
            .map(Write::plan)
            .collect::<Result<Vec<_>, _>>()?;

        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| redb_error("begin write", e))?;
        // Immediate is redb's default; set it anyway, because this line is the contract.
        txn.set_durability(Durability::Immediate)
            .map_err(|e| redb_error("set durability", e))?;
        {
            let mut leases = txn
                .open_table(LEASES)
                .map_err(|e| redb_error("open leases table", e))?;
            let mut meta = txn
                .open_table(META)
                .map_err(|e| redb_error("open meta table", e))?;
            let stored = meta
                .get(FENCE_HIGH_WATER)
                .map_err(|e| redb_error("read fence high-water", e))?
                .map(|v| v.value())
                .unwrap_or(0);
            let mut high_water = stored;
            for write in writes {
                match write {
                    Write::Put { id, bytes, fence } => {
                        leases
                            .insert(id, bytes.as_slice())
                            .map_err(|e| redb_error("write lease", e))?;
                        high_water = high_water.max(fence);
                    }
                    Write::Delete(id) => {
                        leases
                            .remove(id)
                            .map_err(|e| redb_error("delete lease", e))?;
                    }
                    Write::Raise(value) => high_water = high_water.max(value),
                }
            }
            if high_water > stored {
                meta.insert(FENCE_HIGH_WATER, high_water)
                    .map_err(|e| redb_error("write fence high-water", e))?;
            }
        }
        // On error the transaction is dropped, which aborts it; redb then refuses further writes
        // until reopened, which matches the fail-stop contract.
        txn.commit().map_err(|e| redb_error("commit", e))
    }

    fn describe(&self) -> String {
        format!("embedded:{}", self.dir.display())
    }
}

/// One mutation, encoded and ready to write.
enum Write {
    Put { id: u64, bytes: Vec<u8>, fence: u64 },
    Delete(u64),
    Raise(u64),
}

impl Write {
    fn plan(mutation: &Mutation) -> Result<Self, StoreError> {
        Ok(match mutation {
            Mutation::PutLease(record) => Write::Put {
                id: record.lease.0,
                bytes: encode(record)?,
                fence: record.token.0.max(record.lease.0),
            },
            Mutation::DeleteLease(id) => Write::Delete(id.0),
            Mutation::FenceHighWater(value) => Write::Raise(*value),
        })
    }
}

fn encode(record: &LeaseRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record)
        .map_err(|e| StoreError::Io(format!("cannot encode lease {}: {e}", record.lease)))
}

fn decode(key: u64, bytes: &[u8]) -> Result<LeaseRecord, StoreError> {
    let record: LeaseRecord = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("lease {key}: {e}")))?;
    if record.lease.0 != key {
        return Err(StoreError::Corrupt(format!(
            "lease {key}: record is stored under the wrong key (it names lease {})",
            record.lease
        )));
    }
    Ok(record)
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
