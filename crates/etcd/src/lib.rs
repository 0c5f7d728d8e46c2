//! # locksmith-etcd
//!
//! The etcd v3 backend of the Locksmith store — [`EtcdStore`], which keeps the
//! [`Store`] contract and passes the same conformance suite as the
//! embedded store — and the leader election of cluster mode ([`campaign`], [`Leadership`],
//! [`current_leader`]), whose [`Guard`] makes sure only the current leader's commits land.
//!
//! What it is not: a lock service on etcd's own locks or leases. The lock table stays in the
//! leader's memory (`locksmith-core`); etcd is only its durable, replicated disk. Nor does it
//! decide when a server leads: the server campaigns, opens its store with the guard, answers
//! as leader only while [`Leadership::tenure`] holds (see [`Tenure`]), and steps down when
//! [`Leadership::lost`] flips.
//!
//! ## Key layout
//!
//! Under a prefix (default [`EtcdStore::DEFAULT_PREFIX`], `/locksmith/`); ids and seqs are
//! 20-digit zero-padded decimals, so byte order is numeric order:
//!
//! | key | value |
//! |---|---|
//! | `leases/<id>` | JSON of the `LeaseRecord` |
//! | `holds/<id>` | JSON of the `HoldRecord` |
//! | `audit/<seq>` | JSON of the `AuditRecord` |
//! | `records/<space>/<key>` | a domain's record: the bytes of its `PutRecord`, as they are |
//! | `meta/fence_high_water` | decimal u64: the highest fencing value committed |
//! | `meta/audit_seq` | decimal u64: the highest audit seq ever appended |
//! | `meta/commit` | the commit marker: `<writer>#<n>`, rewritten by every commit |
//! | `leader` | the election key: the leader's advertised URL, on the leader's etcd lease |
//!
//! A key is checked against its record on load (a misfiled record reads as
//! [`StoreError::Corrupt`]); `load` raises the fence to
//! every stored lease's token and id and every hold's id, as the contract asks. Records are not
//! read at load: [`Store::records`] is one ascending range over `records/<space>/<prefix>` at
//! one revision, in pages of up to 256 keys — fewer when a page would not fit in one response
//! (64 MiB; a record is up to 16 MiB). A space is `[a-z][a-z0-9_]*`, so no two records share
//! a key.
//!
//! ## One commit, one transaction
//!
//! [`Store::commit`] sends the whole batch as **one** etcd
//! transaction, so it is atomic, and durable when it returns: etcd acknowledges a transaction
//! only after a majority of members has appended it to their write-ahead log and fsynced it,
//! so a batch survives `kill -9` of any member — of all of them, too — and the loss of a
//! minority of machines. Commits are applied in order (one commit thread, one transaction at
//! a time), which gives "if batch N survived, every batch before it did".
//!
//! - etcd refuses a transaction that names a key twice, so the batch is collapsed first: the
//!   last write of each key wins — exactly the contract's "a later mutation wins".
//! - `meta/fence_high_water` and `meta/audit_seq` are written only when the batch's maximum is
//!   above what this store last wrote (it remembers), so they never go backwards.
//! - Retention deletes the oldest audit records in the same transaction, with one range
//!   delete; appends that would be deleted at once are simply not written. Which records are
//!   the oldest is read just before the transaction.
//! - **The commit marker.** Every transaction compares `mod_revision(meta/commit)` with the
//!   revision of this store's previous commit (or what `load` saw) and rewrites the marker.
//!   So if anything else committed under the prefix since — a second server pointed at the
//!   same prefix by mistake, a deposed leader — the commit fails with
//!   [`StoreError::Failed`] and writes nothing, and
//!   nothing this store remembers (the meta values, the audit count) can be stale. It also
//!   makes commits safe to resend: a transaction whose answer was lost (a member died) is
//!   sent again, and the copy either applies or finds the marker already naming this commit.
//!   Transient failures (member unreachable, no leader during an election) are retried for
//!   [`EtcdOptions::retry_for`]; only then does the commit fail.
//! - **The guard.** A store opened with a [`Guard`] adds `create_revision(guard.key) ==
//!   guard.create_revision` to every transaction (and checks it at `load`): once another
//!   server has won the election, this one cannot write, even before it learns it lost. The
//!   commit then fails with `Failed("lost leadership …")`.
//!
//! ## Reading the audit log
//!
//! etcd 3.4 serves any *sorted* range request by reading the whole range and sorting it, so a
//! "newest 50 records" query cannot ask for a descending range without reading the entire log.
//! Instead [`Store::audit`] walks windows of seqs from the
//! newest down — ascending range requests over `[seq - span, seq]`, which read only that
//! window — widening windows where seqs are sparse and narrowing any that hold more than a
//! page (1,000 records). An unfiltered query reads about `limit` records; a query filtered by
//! resource or `since_ms` reads records until `limit` matched, at most
//! [`EtcdStore::AUDIT_SCAN_CAP`] of them (there is no per-resource index: the log is bounded
//! by retention, and listings ask for recent records).
//!
//! ## Sync trait, async client
//!
//! The `Store` trait is synchronous (the committer calls it from its own OS thread) and
//! etcd-client is async: each `EtcdStore` owns a small current-thread tokio runtime, created
//! by `open`, and blocks on it for every call. It never touches the caller's runtime; called
//! from inside one it runs the request on a helper thread rather than panicking, but it still
//! blocks that thread.
//!
//! ## Running etcd for Locksmith (production)
//!
//! - `--max-txn-ops`: etcd's default of 128 operations per transaction is too small for some
//!   single jobs (a break, a mass release, a catching-up retention trim takes up to 1,024 +
//!   appended). Run etcd with e.g. `--max-txn-ops 100000` and pass the same value in
//!   [`EtcdOptions::max_txn_ops`]; the committer then packs groups of jobs up to it.
//! - `--max-request-bytes`: the default of 1.5 MiB caps one commit's size; 10 MiB
//!   (`--max-request-bytes 10485760`) leaves room for large groups and large records. Pass the
//!   same value in [`EtcdOptions::max_request_bytes`]: the committer then splits groups of
//!   large records to fit, and a single record too large for one request is refused unwritten
//!   with [`StoreError::Invalid`] instead of failing the store.
//! - Compaction: etcd keeps every old revision until compacted; run it with
//!   `--auto-compaction-mode periodic --auto-compaction-retention 1h` (or revision-based), or
//!   the database grows until it hits its quota and refuses writes.
//! - Latency: a commit costs a consensus round and an fsync on a majority — milliseconds, not
//!   the embedded store's fraction of one. Group commit amortizes it under load.
//!
//! ## TLS
//!
//! `https://` endpoints are reached over TLS ([`EtcdTls`], in [`EtcdOptions::tls`] and
//! [`connect`]): trusting a CA file or the system's roots, with a client certificate for a
//! cluster run with `--client-cert-auth`. TLS files with `http://` endpoints are refused, as
//! is a list that mixes the two.
//!
//! ## Tests
//!
//! With the `testing` feature, [`testing::EtcdCluster`] runs real `etcd` processes (Debian's
//! `etcd-server`) on loopback ports, and [`testing::EtcdHarness`] plugs them into the
//! conformance suite.

mod election;
mod keys;
mod remote;
mod store;
mod tenure;
#[cfg(feature = "testing")]
mod test_pki;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;

pub use election::{ElectionError, Leadership, campaign, connect, current_leader, leader_key};
pub use store::{EtcdOptions, EtcdStore, Guard};
pub use tenure::{Tenure, TenureRule, boot_clock};
pub use tls::EtcdTls;

/// The etcd client this crate is built on, re-exported so that callers use the same version.
pub use etcd_client;

use locksmith_core::Snapshot;
use locksmith_store::{Committer, Store, StoreError};

/// Opens an [`EtcdStore`], loads it, and starts its committer: everything a server needs at
/// boot, in the order the [`Store`] contract requires (like `locksmith_store::open_embedded`).
pub fn open_etcd(
    endpoints: &[String],
    prefix: &str,
    guard: Option<Guard>,
    options: EtcdOptions,
) -> Result<(Snapshot, Committer), StoreError> {
    let mut store = EtcdStore::open_with(endpoints, prefix, guard, options)?;
    let snapshot = store.load()?;
    let committer = Committer::spawn(Box::new(store))?;
    Ok((snapshot, committer))
}
