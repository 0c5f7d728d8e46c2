//! Request and response bodies of the `/v1` API.

use locksmith_core::{FenceToken, HolderView, LeaseId, LockState, Owner, ResourceView};
use serde::{Deserialize, Serialize};

pub use locksmith_core::LeaseView;

/// Default lease TTL when a request names none: 15 s.
pub const DEFAULT_TTL_MS: u64 = 15_000;

/// `POST /v1/acquire`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireRequest {
    /// Resource to lock, e.g. `configs/aim_lock_config.conf`.
    pub resource: String,
    /// Who asks: every field is required.
    pub owner: Owner,
    /// Lease TTL in ms (default 15 000, minimum 1 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// How long to wait in the FIFO queue, ms (default 0: fail at once when HOT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// Slot count: 1 (default) for an exclusive lock, N for an N-slot semaphore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
}

/// Optional body of `POST /v1/leases/{id}/renew` and `/release`: with a token, the server also
/// checks the caller's fencing token is the lease's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseOpRequest {
    /// The fencing token the caller believes it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<FenceToken>,
}

/// Reply to a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseResponse {
    /// The lease released.
    pub lease: LeaseId,
    /// Its resource.
    pub resource: String,
    /// True when it had already been released (release is idempotent).
    pub already_released: bool,
}

/// `GET /v1/locks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocksResponse {
    /// The server's wall clock, Unix ms, for computing ages.
    pub server_time_ms: u64,
    /// Every held or awaited resource, sorted by name.
    pub locks: Vec<ResourceView>,
}

/// `GET /v1/locks/{resource}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockResponse {
    /// The server's wall clock, Unix ms.
    pub server_time_ms: u64,
    /// The resource (FREE when nobody holds it).
    #[serde(flatten)]
    pub lock: ResourceView,
}

/// `POST /v1/fence/check`: is this token the token of a live lease on this resource?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceCheckRequest {
    /// The resource the write is for.
    pub resource: String,
    /// The token the writer carries.
    pub token: FenceToken,
}

/// Reply to a successful fence check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceCheckResponse {
    /// The resource.
    pub resource: String,
    /// The holder the token belongs to.
    pub holder: HolderView,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// `ok`, or `failed` when storage refused a write (then the status is 503).
    pub status: String,
    /// Server version.
    pub version: String,
    /// Storage backend, e.g. `embedded:./locksmith-data`.
    pub store: String,
    /// Storage error, when failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
    /// Group-commit counters since the server started.
    pub commits: CommitCounters,
    /// Live leases.
    pub leases: u64,
    /// Queued waiters.
    pub waiters: u64,
    /// Highest fencing token issued.
    pub fence_high_water: u64,
    /// Milliseconds since the server started.
    pub uptime_ms: u64,
    /// The server's wall clock, Unix ms.
    pub server_time_ms: u64,
}

/// Short upper-case name of a state, as listings print it.
pub fn state_name(state: LockState) -> &'static str {
    match state {
        LockState::Free => "FREE",
        LockState::Hot => "HOT",
        LockState::Stale => "STALE",
    }
}

/// Group-commit counters, for `/healthz` and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitCounters {
    /// Durable batches written (each one transaction, one fsync).
    pub batches: u64,
    /// Requests acknowledged by those batches.
    pub jobs: u64,
    /// Mutations written.
    pub mutations: u64,
    /// Mean time of one batch commit, µs.
    pub mean_commit_us: u64,
    /// Time of the last batch commit, µs.
    pub last_commit_us: u64,
}
