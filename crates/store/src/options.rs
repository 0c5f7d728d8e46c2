//! Knobs of a store and the shape of an audit query: plain data, shared by every backend.

/// How a store is opened. Every backend honours every field, except those that name a part
/// only one backend has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// How many audit records to keep. When a commit takes the log above this, the oldest
    /// records are deleted in that same commit (see [`Store`](crate::Store) for the bound on
    /// how many one commit deletes). `0` keeps none; [`Snapshot::audit_seq`] still advances.
    ///
    /// [`Snapshot::audit_seq`]: locksmith_core::Snapshot::audit_seq
    pub audit_retention: usize,
    /// The embedded store's write-ahead log segment size (default
    /// [`EmbeddedStore::SEGMENT_BYTES`](crate::EmbeddedStore::SEGMENT_BYTES), at least
    /// [`EmbeddedStore::MIN_SEGMENT_BYTES`](crate::EmbeddedStore::MIN_SEGMENT_BYTES)): the log
    /// takes two of them on disk. Other backends have no such log and ignore it. Smaller
    /// segments switch more often; tests use them to reach a switch quickly.
    pub log_segment_bytes: u64,
}

impl StoreOptions {
    /// The default [`audit_retention`](Self::audit_retention): one million records, a few
    /// hundred megabytes of JSON on disk.
    pub const DEFAULT_AUDIT_RETENTION: usize = 1_000_000;
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            audit_retention: Self::DEFAULT_AUDIT_RETENTION,
            log_segment_bytes: crate::EmbeddedStore::SEGMENT_BYTES,
        }
    }
}

/// Which audit records [`Store::audit`](crate::Store::audit) returns. Every filter that is set
/// must hold; the answer is the **newest** `limit` matching records, in ascending `seq` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only records whose `resource` equals this exactly.
    pub resource: Option<String>,
    /// Only records with `at_ms >= since_ms`.
    pub since_ms: Option<u64>,
    /// Only records with `seq > after_seq`.
    pub after_seq: Option<u64>,
    /// At most this many records: the newest matching ones. `0` returns none.
    pub limit: usize,
}

impl Default for AuditQuery {
    /// No filters and no limit: every stored record.
    fn default() -> Self {
        Self {
            resource: None,
            since_ms: None,
            after_seq: None,
            limit: usize::MAX,
        }
    }
}

impl AuditQuery {
    /// The newest `limit` records, unfiltered.
    pub fn recent(limit: usize) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }
}
