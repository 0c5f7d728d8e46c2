//! [`EtcdStore`]: the [`Store`] contract on etcd v3 (see the crate docs for the layout).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, Compare, CompareOp, DeleteOptions, Txn, TxnOp, TxnOpResponse};
use locksmith_core::{AuditRecord, InvalidRequest, Mutation, Snapshot};
use locksmith_store::codec::{decode_audit_json, decode_hold, decode_lease_json, encode};
use locksmith_store::{AuditQuery, Store, StoreError, StoreOptions};
use tokio::runtime::Runtime;

use crate::keys::{Keys, parse_id, range_end};
use crate::remote::{self, Bounds, PAGE, Read, Remote, header_revision, unexpected_key};

/// The single-writer guard of cluster mode: the election key this server won, and the
/// revision at which it created it. While set, every commit carries the compare
/// `create_revision(key) == create_revision`, so a server that lost its leadership — its key
/// expired or was taken over, even if it does not know yet — cannot write a single byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// The election key, e.g. `/locksmith/leader`.
    pub key: String,
    /// The key's `create_revision` when this server won it.
    pub create_revision: i64,
}

/// How an [`EtcdStore`] is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// The backend-independent options (audit retention).
    pub store: StoreOptions,
    /// The etcd cluster's `--max-txn-ops` (etcd's default: 128). Every commit is one
    /// transaction of at most (mutations + 4) operations; [`Store::max_batch_mutations`]
    /// reports `max_txn_ops - 4`, so that the committer splits groups to fit. Run etcd with a
    /// much larger value (e.g. `--max-txn-ops 100000`) and set it here: one job (a break, a
    /// big release) must still fit in one transaction.
    pub max_txn_ops: usize,
    /// The etcd cluster's `--max-request-bytes` (etcd's default: 1.5 MiB). Every commit is one
    /// request; [`Store::max_batch_bytes`] reports this less a margin for the transaction's
    /// own operations, so that the committer splits groups to fit. A single job larger than
    /// etcd takes (a record near 16 MiB on a default cluster) is refused unwritten with
    /// [`StoreError::Invalid`], and the store goes on working.
    pub max_request_bytes: usize,
    /// Timeout of one etcd request (and of connecting to a member).
    pub request_timeout: Duration,
    /// How long one store call keeps retrying requests that failed transiently (a member
    /// down, no leader during an election) before it gives up with [`StoreError::Io`].
    pub retry_for: Duration,
    /// TLS for `https://` endpoints: the CA to trust and this client's certificate (see
    /// [`EtcdTls`](crate::EtcdTls)); `None`: the system's roots, no certificate.
    pub tls: Option<crate::EtcdTls>,
}

impl EtcdOptions {
    /// etcd's own default for `--max-txn-ops`.
    pub const ETCD_DEFAULT_MAX_TXN_OPS: usize = 128;

    /// etcd's own default for `--max-request-bytes`: 1.5 MiB.
    pub const ETCD_DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            store: StoreOptions::default(),
            max_txn_ops: Self::ETCD_DEFAULT_MAX_TXN_OPS,
            max_request_bytes: Self::ETCD_DEFAULT_MAX_REQUEST_BYTES,
            request_timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(15),
            tls: None,
        }
    }
}

/// Operations a commit adds to its mutations: the commit marker, two meta values, and one
/// range delete for retention.
const OVERHEAD_OPS: usize = 4;

/// Bytes of a request left for a commit's own operations (the compares, the marker, the meta
/// values, the retention delete) beside its mutations.
const OVERHEAD_BYTES: usize = 64 * 1024;

/// Beyond the records a commit appends, how many more old records it may delete (the same
/// bound as the embedded store's).
const RETENTION_SLACK: u64 = 1_024;

/// The [`Store`] on etcd v3. See the crate docs for the key layout, the commit transaction and
/// the single-writer guard.
///
/// The trait is synchronous and etcd-client is async: each store owns a small current-thread
/// tokio runtime and blocks on it. Call it from a plain thread — the
/// [`Committer`](locksmith_store::Committer)'s commit thread is one. Called from inside a
/// tokio runtime it still works (the request runs on a helper thread) but blocks that worker
/// for the whole request, so async code should use `spawn_blocking` or the committer.
pub struct EtcdStore {
    runtime: Option<Runtime>,
    remote: Remote,
    endpoints: Vec<String>,
    guard: Option<Guard>,
    options: EtcdOptions,
    /// Names this store's commits in the commit marker; unique per open.
    writer: String,
    /// Known after `load`.
    state: Option<State>,
}

/// What the store knows about its keyspace between commits. It stays true because the commit
/// marker's compare refuses every commit after any other writer's (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    /// `mod_revision` of `meta/commit` after this store's latest commit (0: absent).
    marker_revision: i64,
    /// Commits made since load, for the marker's value.
    commits: u64,
    /// The stored `meta/fence_high_water`.
    fence: u64,
    /// The stored `meta/audit_seq` (at least every stored record's seq).
    audit_seq: u64,
    /// How many audit records are stored.
    audit_count: u64,
    /// No audit record is stored below this seq (`u64::MAX` when none is).
    audit_low: u64,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.remote.keys.prefix())
            .field("guard", &self.guard)
            .field("options", &self.options)
            .field("state", &self.state)
            .finish()
    }
}

impl EtcdStore {
    /// The default key prefix.
    pub const DEFAULT_PREFIX: &'static str = "/locksmith/";

    /// The most records one [`Store::audit`] query examines. A query whose filters reject
    /// more records than that (a rare resource, or a `since_ms` in the future, over a log
    /// larger than the cap) returns what it found so far, with a warning in the log.
    pub const AUDIT_SCAN_CAP: usize = 1_000_000;

    /// [`open_with`](Self::open_with) the default [`EtcdOptions`].
    pub fn open(
        endpoints: &[String],
        prefix: &str,
        guard: Option<Guard>,
    ) -> Result<Self, StoreError> {
        Self::open_with(endpoints, prefix, guard, EtcdOptions::default())
    }

    /// Prepares a store over the keys under `prefix` (a `/` is appended if it does not end in
    /// one) of the etcd cluster at `endpoints` (`http://host:port`, one or more members).
    /// Does not contact etcd: the first request is [`Store::load`]'s, which fails with
    /// [`StoreError::Io`] if no member answers within [`EtcdOptions::retry_for`].
    pub fn open_with(
        endpoints: &[String],
        prefix: &str,
        guard: Option<Guard>,
        options: EtcdOptions,
    ) -> Result<Self, StoreError> {
        let open_error = |reason: String| StoreError::Open {
            path: format!("etcd:{}", endpoints.join(",")),
            reason,
        };
        if endpoints.is_empty() {
            return Err(open_error("no etcd endpoints given".to_owned()));
        }
        if prefix.is_empty() {
            return Err(open_error("the key prefix is empty".to_owned()));
        }
        // Before the runtime: a runtime dropped on an error here would panic when the caller
        // is itself async.
        let connect_options =
            remote::connect_options(options.request_timeout, endpoints, options.tls.as_ref())
                .map_err(open_error)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("locksmith-etcd")
            .build()
            .map_err(|e| open_error(format!("cannot start the etcd client runtime: {e}")))?;
        let client = match block_on(
            &runtime,
            Client::connect(endpoints.to_vec(), Some(connect_options)),
        ) {
            Ok(client) => client,
            Err(e) => {
                runtime.shutdown_background();
                return Err(open_error(e.to_string()));
            }
        };
        Ok(Self {
            runtime: Some(runtime),
            remote: Remote {
                client,
                keys: Keys::new(prefix),
                retry_for: options.retry_for,
            },
            endpoints: endpoints.to_vec(),
            guard,
            options,
            writer: writer_id(),
            state: None,
        })
    }

    /// The key prefix, ending in `/`.
    pub fn prefix(&self) -> &str {
        self.remote.keys.prefix()
    }

    /// The endpoints it was opened with.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The options it was opened with.
    pub fn options(&self) -> &EtcdOptions {
        &self.options
    }

    /// The guard every commit carries, if any.
    pub fn guard(&self) -> Option<&Guard> {
        self.guard.as_ref()
    }

    fn run<F>(&self, future: F) -> Result<F::Output, StoreError>
    where
        F: Future + Send,
        F::Output: Send,
    {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| StoreError::Io("the etcd client runtime is gone".to_owned()))?;
        Ok(block_on(runtime, future))
    }

    /// Puts `bytes` under `key`, bypassing every check: how tests plant a record the store
    /// would never write.
    #[cfg(feature = "testing")]
    pub(crate) fn put_raw(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let key = key.to_owned();
        let mut kv = self.remote.kv();
        self.run(async move { kv.put(key, bytes.to_vec(), None).await })?
            .map(|_| ())
            .map_err(|e| remote::io("raw put", e))
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // Dropping a runtime inside another runtime's context panics; this never blocks.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs `future` to completion on `runtime`: here, or — when the caller is itself inside a
/// tokio runtime, where blocking on another is refused — on a scoped helper thread.
fn block_on<F>(runtime: &Runtime, future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return runtime.block_on(future);
    }
    std::thread::scope(
        |scope| match scope.spawn(|| runtime.block_on(future)).join() {
            Ok(output) => output,
            Err(panic) => std::panic::resume_unwind(panic),
        },
    )
}

/// A name for this process's commits: pid, open time and a counter.
fn writer_id() -> String {
    static OPENS: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        OPENS.fetch_add(1, Ordering::Relaxed)
    )
}

impl Store for EtcdStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let remote = self.remote.clone();
        let guard = self.guard.clone();
        let (snapshot, state) = self.run(async move { load(&remote, guard.as_ref()).await })??;
        self.state = Some(state);
        Ok(snapshot)
    }

    fn commit(&mut self, batch: &[Mutation]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let state = self
            .state
            .ok_or_else(|| StoreError::Io("commit called before load".to_owned()))?;
        locksmith_store::validate_batch(batch)?;
        let plan = Plan::new(&self.remote.keys, batch)?;
        let remote = self.remote.clone();
        let guard = self.guard.clone();
        let writer = self.writer.clone();
        let retention = u64::try_from(self.options.store.audit_retention).unwrap_or(u64::MAX);
        let state = self.run(async move {
            commit(
                &remote,
                Commit {
                    plan,
                    state,
                    guard: guard.as_ref(),
                    writer: &writer,
                    retention,
                },
            )
            .await
        })??;
        self.state = Some(state);
        Ok(())
    }

    fn audit(&mut self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let floor = match query.after_seq {
            None => 0,
            Some(after) => match after.checked_add(1) {
                Some(floor) => floor,
                None => return Ok(Vec::new()),
            },
        };
        let remote = self.remote.clone();
        let state = self.state;
        let query = query.clone();
        self.run(async move {
            let (top, low) = match state {
                Some(state) => (state.audit_seq, state.audit_low),
                None => audit_bounds(&remote).await?,
            };
            let unfiltered = query.resource.is_none() && query.since_ms.is_none();
            let bounds = Bounds {
                floor,
                low,
                top,
                first_span: if unfiltered {
                    u64::try_from(query.limit).unwrap_or(PAGE)
                } else {
                    PAGE
                },
            };
            let mut found = Vec::new();
            let mut examined = 0usize;
            let dir = remote.keys.audit_dir();
            remote
                .walk_audit_down(bounds, |seq, bytes| {
                    examined += 1;
                    // Filters look at two fields; the whole record (whose flattened `kind`
                    // makes it the slow part) is decoded only once they match.
                    let matches = |resource: &str, at_ms: u64| {
                        query.resource.as_ref().is_none_or(|r| resource == r)
                            && query.since_ms.is_none_or(|since| at_ms >= since)
                    };
                    let skip = !unfiltered
                        && serde_json::from_slice::<Head<'_>>(bytes)
                            .is_ok_and(|head| !matches(&head.resource, head.at_ms));
                    if !skip {
                        let record = decode_audit_json(seq, bytes)?;
                        if matches(&record.resource, record.at_ms) {
                            found.push(record);
                            if found.len() >= query.limit {
                                return Ok(true);
                            }
                        }
                    }
                    if examined >= EtcdStore::AUDIT_SCAN_CAP {
                        tracing::warn!(
                            cap = EtcdStore::AUDIT_SCAN_CAP,
                            found = found.len(),
                            prefix = %dir,
                            "audit query stopped at its scan cap; the answer may miss older matches"
                        );
                        return Ok(true);
                    }
                    Ok(false)
                })
                .await?;
            found.reverse();
            Ok(found)
        })?
    }

    fn record(&mut self, space: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let remote = self.remote.clone();
        let key = remote.keys.record(space, key);
        self.run(async move {
            let (kv, _) = remote.get(&key, 0).await?;
            Ok(kv.map(|kv| kv.value().to_vec()))
        })?
    }

    fn records(
        &mut self,
        space: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let remote = self.remote.clone();
        self.run(async move { remote.records(space, prefix, after, limit).await })?
    }

    fn describe(&self) -> String {
        format!("etcd:{}", self.endpoints.join(","))
    }

    fn max_batch_mutations(&self) -> Option<usize> {
        Some(self.options.max_txn_ops.saturating_sub(OVERHEAD_OPS).max(1))
    }

    fn max_batch_bytes(&self) -> Option<usize> {
        Some(
            self.options
                .max_request_bytes
                .saturating_sub(OVERHEAD_BYTES)
                .max(1),
        )
    }
}

/// Reads the whole durable state at one revision.
async fn load(remote: &Remote, guard: Option<&Guard>) -> Result<(Snapshot, State), StoreError> {
    let keys = &remote.keys;
    let meta_dir = keys.meta_dir();
    let meta = remote
        .range(
            meta_dir.as_bytes(),
            range_end(&meta_dir).as_bytes(),
            Read::default(),
        )
        .await?;
    let revision = header_revision(&meta)?;
    let mut snapshot = Snapshot::default();
    let mut state = State {
        marker_revision: 0,
        commits: 0,
        fence: 0,
        audit_seq: 0,
        audit_count: 0,
        audit_low: u64::MAX,
    };
    for kv in meta.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        if key == keys.fence_high_water() {
            state.fence = decode_u64(&key, kv.value())?;
        } else if key == keys.audit_seq() {
            state.audit_seq = decode_u64(&key, kv.value())?;
        } else if key == keys.commit_marker() {
            state.marker_revision = kv.mod_revision();
        }
    }

    if let Some(guard) = guard {
        let (kv, _) = remote.get(&guard.key, revision).await?;
        check_guard(guard, kv.as_ref())?;
    }

    let leases_dir = keys.leases_dir();
    remote
        .scan_dir(&leases_dir, revision, false, |kv| {
            let id = parse_id(&leases_dir, kv.key()).ok_or_else(|| unexpected_key(kv.key()))?;
            snapshot.leases.push(decode_lease_json(id, kv.value())?);
            Ok(())
        })
        .await?;
    let holds_dir = keys.holds_dir();
    remote
        .scan_dir(&holds_dir, revision, false, |kv| {
            let id = parse_id(&holds_dir, kv.key()).ok_or_else(|| unexpected_key(kv.key()))?;
            snapshot.holds.push(decode_hold(id, kv.value())?);
            Ok(())
        })
        .await?;

    // The audit log: how many records, the lowest, and any stored above `meta/audit_seq`
    // (none, unless something other than this crate wrote there).
    let audit_dir = keys.audit_dir();
    let audit_end = range_end(&audit_dir);
    let count = remote
        .range(
            audit_dir.as_bytes(),
            audit_end.as_bytes(),
            Read {
                revision,
                count_only: true,
                ..Read::default()
            },
        )
        .await?;
    state.audit_count = u64::try_from(count.count()).unwrap_or(0);
    let lowest = remote
        .range(
            audit_dir.as_bytes(),
            audit_end.as_bytes(),
            Read {
                revision,
                limit: 1,
                keys_only: true,
                count_only: false,
            },
        )
        .await?;
    if let Some(kv) = lowest.kvs().first() {
        state.audit_low = parse_id(&audit_dir, kv.key()).ok_or_else(|| unexpected_key(kv.key()))?;
        let above = keys.audit_after(state.audit_seq);
        let mut highest = state.audit_seq;
        let mut start = above.into_bytes();
        loop {
            let page = remote
                .range(
                    &start,
                    audit_end.as_bytes(),
                    Read {
                        revision,
                        limit: PAGE,
                        keys_only: true,
                        count_only: false,
                    },
                )
                .await?;
            for kv in page.kvs() {
                let seq = parse_id(&audit_dir, kv.key()).ok_or_else(|| unexpected_key(kv.key()))?;
                highest = highest.max(seq);
            }
            match page.kvs().last() {
                Some(last) if page.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        state.audit_seq = highest;
    }

    snapshot.fence_high_water = snapshot
        .leases
        .iter()
        .map(|lease| lease.token.0.max(lease.lease.0))
        .chain(snapshot.holds.iter().map(|hold| hold.hold.0))
        .fold(state.fence, u64::max);
    snapshot.audit_seq = state.audit_seq;
    Ok((snapshot, state))
}

/// `top` and `low` of the audit log, for a query made before `load` (which the contract does
/// not promise to be cheap): a whole load, without the guard, whose snapshot is dropped.
async fn audit_bounds(remote: &Remote) -> Result<(u64, u64), StoreError> {
    let (_, state) = load(remote, None).await?;
    Ok((state.audit_seq, state.audit_low))
}

fn check_guard(guard: &Guard, kv: Option<&etcd_client::KeyValue>) -> Result<(), StoreError> {
    let now = kv.map(etcd_client::KeyValue::create_revision);
    if now == Some(guard.create_revision) {
        return Ok(());
    }
    Err(StoreError::Failed(format!(
        "lost leadership: the election key {} {} (this server won it at revision {}); \
         refusing to write",
        guard.key,
        now.map_or_else(
            || "no longer exists".to_owned(),
            |rev| format!("was created again at revision {rev}")
        ),
        guard.create_revision
    )))
}

/// One batch, encoded and collapsed so that each key appears once (etcd refuses a
/// transaction that names a key twice): the last write of a key wins, which is the order the
/// contract asks for.
#[derive(Debug)]
struct Plan {
    /// Lease, hold and record keys → the new value, or `None` to delete.
    writes: BTreeMap<String, Option<Vec<u8>>>,
    /// Audit seq → record JSON.
    appends: BTreeMap<u64, Vec<u8>>,
    /// The highest fencing value in the batch: `FenceHighWater` values, lease tokens and ids,
    /// hold ids.
    fence: u64,
    /// The highest appended seq (0 if none).
    audit_seq: u64,
}

impl Plan {
    fn new(keys: &Keys, batch: &[Mutation]) -> Result<Self, StoreError> {
        let mut plan = Plan {
            writes: BTreeMap::new(),
            appends: BTreeMap::new(),
            fence: 0,
            audit_seq: 0,
        };
        for mutation in batch {
            match mutation {
                Mutation::PutLease(record) => {
                    let bytes = encode(record, || format!("lease {}", record.lease))?;
                    plan.writes.insert(keys.lease(record.lease.0), Some(bytes));
                    plan.fence = plan.fence.max(record.token.0).max(record.lease.0);
                }
                Mutation::DeleteLease(id) => {
                    plan.writes.insert(keys.lease(id.0), None);
                }
                Mutation::PutHold(record) => {
                    let bytes = encode(record, || format!("hold {}", record.hold))?;
                    plan.writes.insert(keys.hold(record.hold.0), Some(bytes));
                    plan.fence = plan.fence.max(record.hold.0);
                }
                Mutation::DeleteHold(id) => {
                    plan.writes.insert(keys.hold(id.0), None);
                }
                Mutation::AppendAudit(record) => {
                    let bytes = encode(record, || format!("audit record {}", record.seq))?;
                    plan.appends.insert(record.seq, bytes);
                    plan.audit_seq = plan.audit_seq.max(record.seq);
                }
                Mutation::FenceHighWater(value) => plan.fence = plan.fence.max(*value),
                Mutation::PutRecord { space, key, value } => {
                    plan.writes
                        .insert(keys.record(space, key), Some(value.clone()));
                }
                Mutation::DeleteRecord { space, key } => {
                    plan.writes.insert(keys.record(space, key), None);
                }
            }
        }
        Ok(plan)
    }
}

struct Commit<'a> {
    plan: Plan,
    state: State,
    guard: Option<&'a Guard>,
    writer: &'a str,
    retention: u64,
}

/// Builds the batch's transaction, sends it (retrying transient failures), and returns the
/// state after it.
async fn commit(remote: &Remote, commit: Commit<'_>) -> Result<State, StoreError> {
    let Commit {
        mut plan,
        state,
        guard,
        writer,
        retention,
    } = commit;
    let keys = &remote.keys;
    let mut next = state;

    // Which appends add a record rather than replace one: only a seq at or below the
    // high-water can be stored already (the lock table never does that; the contract allows
    // it).
    let mut added = 0u64;
    for &seq in plan.appends.keys() {
        let stored = seq <= state.audit_seq && {
            let (kv, _) = remote.get(&keys.audit(seq), 0).await?;
            kv.is_some()
        };
        if !stored {
            added += 1;
        }
    }

    // Retention: the oldest records beyond it go, at most (added + slack) of them, in this
    // same transaction. Appends among the oldest are simply not written; stored ones go in
    // one range delete, which covers exactly them (every stored record below the highest one
    // deleted is itself among the oldest).
    let excess = (state.audit_count + added).saturating_sub(retention);
    let trim = excess.min(added.saturating_add(RETENTION_SLACK));
    let mut delete_range = None;
    if trim > 0 {
        let stored = remote
            .lowest_audit_seqs(state.audit_low, state.audit_seq, trim)
            .await?;
        let oldest: Vec<u64> = stored
            .iter()
            .copied()
            .chain(plan.appends.keys().copied())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .take(usize::try_from(trim).unwrap_or(usize::MAX))
            .collect();
        let stored: BTreeSet<u64> = stored.into_iter().collect();
        let mut highest_stored = None;
        for &seq in &oldest {
            plan.appends.remove(&seq);
            if stored.contains(&seq) {
                highest_stored = Some(seq);
            }
        }
        if let (Some(&first), Some(last)) = (stored.first(), highest_stored) {
            delete_range = Some((keys.audit(first), keys.audit_after(last)));
        }
        next.audit_count = (state.audit_count + added).saturating_sub(oldest.len() as u64);
        if let Some(&last) = oldest.last() {
            next.audit_low = next.audit_low.max(last.saturating_add(1));
        }
    } else {
        next.audit_count = state.audit_count + added;
    }
    if let Some(&lowest) = plan.appends.keys().next() {
        next.audit_low = next.audit_low.min(lowest);
    }

    let mut ops: Vec<TxnOp> = Vec::with_capacity(plan.writes.len() + plan.appends.len() + 4);
    for (key, value) in std::mem::take(&mut plan.writes) {
        ops.push(match value {
            Some(bytes) => TxnOp::put(key, bytes, None),
            None => TxnOp::delete(key, None),
        });
    }
    for (seq, bytes) in std::mem::take(&mut plan.appends) {
        ops.push(TxnOp::put(keys.audit(seq), bytes, None));
    }
    if let Some((start, end)) = delete_range {
        ops.push(TxnOp::delete(
            start,
            Some(DeleteOptions::new().with_range(end)),
        ));
    }
    if plan.fence > state.fence {
        ops.push(TxnOp::put(
            keys.fence_high_water(),
            plan.fence.to_string(),
            None,
        ));
        next.fence = plan.fence;
    }
    if plan.audit_seq > state.audit_seq {
        ops.push(TxnOp::put(
            keys.audit_seq(),
            plan.audit_seq.to_string(),
            None,
        ));
        next.audit_seq = plan.audit_seq;
    }
    if ops.is_empty() {
        // Nothing to write (e.g. only a fence value below the stored one).
        return Ok(state);
    }
    next.commits = state.commits + 1;
    let marker = format!("{writer}#{}", next.commits);
    ops.push(TxnOp::put(keys.commit_marker(), marker.clone(), None));

    let mut compares = vec![Compare::mod_revision(
        keys.commit_marker(),
        CompareOp::Equal,
        state.marker_revision,
    )];
    let mut failure_ops = vec![TxnOp::get(keys.commit_marker(), None)];
    if let Some(guard) = guard {
        compares.push(Compare::create_revision(
            guard.key.clone(),
            CompareOp::Equal,
            guard.create_revision,
        ));
        failure_ops.push(TxnOp::get(guard.key.clone(), None));
    }
    let txn = Txn::new().when(compares).and_then(ops).or_else(failure_ops);

    // Safe to resend: the marker compare lets at most one copy apply, and a copy that finds
    // the marker already naming this commit learns that an earlier copy did.
    let kv = remote.kv();
    let started = Instant::now();
    let response = remote::retry(remote.deadline(), "commit", || {
        let mut kv = kv.clone();
        let txn = txn.clone();
        async move { kv.txn(txn).await }
    })
    .await
    .map_err(|e| {
        if remote::too_large(&e) {
            // etcd (or gRPC before it) refused the request for its size: nothing was written.
            return StoreError::Invalid(InvalidRequest::new(
                "batch",
                format!(
                    "is too large for one etcd request ({e}); raise etcd's --max-request-bytes \
                     and EtcdOptions::max_request_bytes above the largest record"
                ),
            ));
        }
        remote::io("commit", e)
    })?;
    tracing::trace!(elapsed = ?started.elapsed(), "etcd commit");

    if response.succeeded() {
        next.marker_revision = response
            .header()
            .map(etcd_client::ResponseHeader::revision)
            .ok_or_else(|| StoreError::Io("etcd answered without a response header".to_owned()))?;
        return Ok(next);
    }
    // The compare failed: find out why from the failure branch's reads.
    let mut reads = response.op_responses().into_iter().map(|op| match op {
        TxnOpResponse::Get(get) => get.kvs().first().cloned(),
        _ => None,
    });
    let stored_marker = reads.next().flatten();
    let guard_kv = reads.next().flatten();
    if let Some(kv) = &stored_marker
        && kv.value() == marker.as_bytes()
    {
        // An earlier copy of this transaction applied (its answer was lost).
        next.marker_revision = kv.mod_revision();
        return Ok(next);
    }
    if let Some(guard) = guard {
        check_guard(guard, guard_kv.as_ref())?;
    }
    Err(StoreError::Failed(format!(
        "another writer committed to {} since this store loaded (commit marker now {:?}); \
         refusing to write",
        keys.prefix(),
        stored_marker
            .as_ref()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
    )))
}

fn decode_u64(key: &str, bytes: &[u8]) -> Result<u64, StoreError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "{key}: {:?} is not a decimal u64",
                String::from_utf8_lossy(bytes)
            ))
        })
}

/// The fields of a stored audit record that query filters look at.
#[derive(serde::Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    resource: std::borrow::Cow<'a, str>,
    at_ms: u64,
}
