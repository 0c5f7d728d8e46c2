//! Request and response bodies of the `/v1` API.

use locksmith_core::{
    AuditRecord, FenceToken, HoldView, HolderView, LeaseId, LockState, Owner, ResourceView,
};
use serde::{Deserialize, Serialize};

pub use locksmith_core::LeaseView;

/// Default lease TTL when a request names none: 15 s.
pub const DEFAULT_TTL_MS: u64 = 15_000;

/// `POST /v1/acquire`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Lock-delay if this holder fails (expiry, ghost reclaim, break), ms (default: the
    /// server's `--lock-delay`, itself 0 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_delay_ms: Option<u64>,
}

/// Optional body of `POST /v1/leases/{id}/renew` and `/release`: with a token, the server also
/// checks the caller's fencing token is the lease's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LeaseOpRequest {
    /// The fencing token the caller believes it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<FenceToken>,
}

/// Reply to a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseResponse {
    /// The lease released.
    pub lease: LeaseId,
    /// Its resource.
    pub resource: String,
    /// True when it had already been released (release is idempotent).
    pub already_released: bool,
}

/// How many locks one `GET /v1/locks` page holds unless `limit` says otherwise.
pub const LOCKS_DEFAULT_LIMIT: usize = 1_000;
/// The largest `limit` a `GET /v1/locks` page accepts.
pub const LOCKS_MAX_LIMIT: usize = 10_000;

/// `GET /v1/locks` query string: one page of the held or awaited resources.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
#[serde(deny_unknown_fields)]
pub struct LocksQuery {
    /// Only resources whose names start with this (e.g. `fleet/drones/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Only resources whose names sort after this one: the previous page's `next`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// At most this many resources ([`LOCKS_DEFAULT_LIMIT`] if absent, at most
    /// [`LOCKS_MAX_LIMIT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Only resources with a holder on this node (any boot id): what a node's own checks need,
    /// found through the server's node index rather than a pass over every lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// `GET /v1/locks`: one page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LocksResponse {
    /// The server's wall clock, Unix ms, for computing ages.
    pub server_time_ms: u64,
    /// Held or awaited resources, sorted by name: one page of them.
    pub locks: Vec<ResourceView>,
    /// More follow: pass this as `after` for the next page. Absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `GET /v1/locks/{resource}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LockResponse {
    /// The server's wall clock, Unix ms.
    pub server_time_ms: u64,
    /// The resource (FREE when nobody holds it).
    #[serde(flatten)]
    pub lock: ResourceView,
}

/// `POST /v1/fence/check`: is this token the token of a live lease on this resource?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FenceCheckRequest {
    /// The resource the write is for.
    pub resource: String,
    /// The token the writer carries.
    pub token: FenceToken,
}

/// Reply to a successful fence check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FenceCheckResponse {
    /// The resource.
    pub resource: String,
    /// The holder the token belongs to.
    pub holder: HolderView,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthResponse {
    /// `ok`, or `failed` when storage refused a write (then the status is 503).
    pub status: HealthStatus,
    /// Server version.
    pub version: String,
    /// Storage backend, e.g. `embedded:./locksmith-data`.
    pub store: String,
    /// Storage error, when failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
    /// Group-commit counters since the server started.
    pub commits: CommitCounters,
    /// Live leases (0 once storage has failed: the table is not shown then).
    pub leases: u64,
    /// Queued waiters (0 once storage has failed).
    pub waiters: u64,
    /// Highest fencing token durably issued.
    pub fence_high_water: u64,
    /// Milliseconds since the server started.
    pub uptime_ms: u64,
    /// The server's wall clock, Unix ms.
    pub server_time_ms: u64,
}

/// The server's verdict on itself in `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Serving.
    Ok,
    /// Storage refused a write: the server refuses writes (and lock reads) until restarted.
    Failed,
}

impl HealthStatus {
    /// The status as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Ok => "ok",
            HealthStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Short upper-case name of a state, as listings print it.
pub fn state_name(state: LockState) -> &'static str {
    match state {
        LockState::Free => "FREE",
        LockState::Hot => "HOT",
        LockState::Stale => "STALE",
        LockState::Frozen => "FROZEN",
        LockState::Delayed => "DELAYED",
    }
}

/// Group-commit counters, for `/healthz` and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// `POST /v1/holds`: freeze a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    /// The resource to freeze.
    pub resource: String,
    /// Who places it, with `--auth off` only (the CLI sends `user@node`, or `--operator`).
    /// With authentication on it is ignored: the hold is placed by the token's name.
    #[serde(default)]
    pub operator: String,
    /// Why: required.
    pub reason: String,
    /// How long the hold stays in force once active, ms.
    pub duration_ms: u64,
    /// True when a different operator must acknowledge it before it takes effect.
    #[serde(default)]
    pub require_ack: bool,
}

/// `POST /v1/holds/{id}/ack` and `/lift` (the body may be empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OperatorRequest {
    /// Who acts, with `--auth off` only; with authentication on it is ignored: the token's
    /// name acts.
    #[serde(default)]
    pub operator: String,
}

/// `GET /v1/holds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HoldsResponse {
    /// Every hold, active or pending acknowledgement.
    pub holds: Vec<HoldView>,
}

/// `POST /v1/break`: the safe bypass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BreakRequest {
    /// The resource whose lock to break.
    pub resource: String,
    /// Break only this lease (e.g. one semaphore slot); default: every holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseId>,
    /// Who breaks it, with `--auth off` only; with authentication on it is ignored: the
    /// token's name breaks it.
    #[serde(default)]
    pub operator: String,
    /// Why: required.
    pub reason: String,
    /// Freeze the resource for this long, ms, so nothing re-grabs it mid-operation
    /// (default 30 000; 0 for no freeze).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_ms: Option<u64>,
}

/// Default freeze placed by a break: 30 s.
pub const DEFAULT_BREAK_FREEZE_MS: u64 = 30_000;

/// Reply to a break.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BreakResponse {
    /// The resource.
    pub resource: String,
    /// The leases revoked, as they were just before.
    pub revoked: Vec<HolderView>,
    /// The fence after the break: every token below it is dead.
    pub fence: FenceToken,
    /// The freeze placed with the break.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldView>,
}

/// One process a node reports dead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeadHolder {
    /// The lease whose holder died.
    pub lease: LeaseId,
    /// The holder's pid, as recorded on the lease.
    pub pid: u32,
    /// The holder's start time, as recorded on the lease.
    pub start_time: u64,
}

/// `POST /v1/liveness`: a node reports which local holders are dead. Any report also tells the
/// server the node's current boot id, so leases from an older boot are reclaimed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LivenessReport {
    /// The reporting node (must be the holders' node).
    pub node: String,
    /// The reporting node's current boot id.
    pub boot_id: String,
    /// The PID namespace whose `/proc` the reporter read (`/proc/self/ns/pid`, e.g.
    /// `pid:[4026531836]`). A dead holder is accepted only from its own namespace; a report
    /// without one can still end the leases of an older boot of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<String>,
    /// Who reports (e.g. `locksmith why` as `user@node`).
    pub reported_by: String,
    /// The dead holders found.
    #[serde(default)]
    pub dead: Vec<DeadHolder>,
}

/// Reply to a liveness report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LivenessResponse {
    /// Leases reclaimed because of this report (dead holders and older-boot leases).
    pub reclaimed: Vec<LeaseId>,
    /// Reports refused, each with its error.
    pub refused: Vec<crate::ErrorBody>,
}

/// `GET /v1/audit` query string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Only records at or after this wall-clock time, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// Only records with a larger sequence number (for paging).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<u64>,
    /// At most this many records (default 100, max 10 000), newest last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// `GET /v1/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditResponse {
    /// Matching records, oldest first.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub records: Vec<AuditRecord>,
}

/// One problem `status` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// What kind of problem: clients match on it, never on the message.
    pub kind: ProblemKind,
    /// The resource concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// What is wrong.
    pub message: String,
    /// The safe next step.
    pub next_step: String,
}

/// The stable kind of a [`Problem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// Storage refused a write: the server refuses writes until restarted.
    StorageFailed,
    /// Storage has not confirmed a write for a while: the locks are not shown.
    StorageStalled,
    /// The server's own heartbeat (the reaper) has not run for too long.
    ReaperStalled,
    /// A holder's heartbeat is overdue.
    StaleLock,
    /// An operator's hold is in force.
    Frozen,
    /// A hold waits for a second operator's acknowledgement.
    HoldPendingAck,
    /// A resource is in its lock-delay after a holder failed.
    LockDelay,
    /// An acquire has waited in a queue for long.
    LongWait,
    /// A holder's process is dead (found by the CLI's checks on the holder's node).
    DeadHolder,
    /// The server runs with `--auth off`: anyone who reaches its port may do anything.
    AuthOff,
    /// A kind this client does not know (sent by a newer server); its message says what.
    #[serde(other)]
    Other,
}

impl ProblemKind {
    /// The kind as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::StorageFailed => "storage_failed",
            ProblemKind::StorageStalled => "storage_stalled",
            ProblemKind::ReaperStalled => "reaper_stalled",
            ProblemKind::StaleLock => "stale_lock",
            ProblemKind::Frozen => "frozen",
            ProblemKind::HoldPendingAck => "hold_pending_ack",
            ProblemKind::LockDelay => "lock_delay",
            ProblemKind::LongWait => "long_wait",
            ProblemKind::DeadHolder => "dead_holder",
            ProblemKind::AuthOff => "auth_off",
            ProblemKind::Other => "other",
        }
    }
}

impl std::fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts of resources by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StateCounts {
    /// Held, heartbeats on time.
    pub hot: u64,
    /// Held, heartbeat overdue.
    pub stale: u64,
    /// A hold in force.
    pub frozen: u64,
    /// In lock-delay.
    pub delayed: u64,
    /// Queued waiters.
    pub waiters: u64,
    /// Holds waiting for acknowledgement.
    pub holds_pending_ack: u64,
}

/// `GET /v1/status`: is everything healthy, and if not, what exactly is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusResponse {
    /// True when there are no problems.
    pub all_clear: bool,
    /// The server's health.
    pub health: HealthResponse,
    /// Milliseconds since the reaper's last run (the server's own heartbeat).
    pub heartbeat_age_ms: u64,
    /// Resources by state.
    pub counts: StateCounts,
    /// Every problem found.
    pub problems: Vec<Problem>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The enums that replaced strings keep the JSON clients already read.
    #[test]
    fn health_status_and_problem_kinds_keep_their_wire_names() {
        for status in [HealthStatus::Ok, HealthStatus::Failed] {
            let json = serde_json::to_string(&status).expect("serialize");
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        for kind in [
            ProblemKind::StorageFailed,
            ProblemKind::StorageStalled,
            ProblemKind::ReaperStalled,
            ProblemKind::StaleLock,
            ProblemKind::Frozen,
            ProblemKind::HoldPendingAck,
            ProblemKind::LockDelay,
            ProblemKind::LongWait,
            ProblemKind::DeadHolder,
        ] {
            let json = serde_json::to_string(&kind).expect("serialize");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<ProblemKind>(&json).ok(), Some(kind));
        }
        // A newer server's kind still parses, so the rest of its report can be shown.
        assert_eq!(
            serde_json::from_str::<ProblemKind>("\"disk_nearly_full\"").ok(),
            Some(ProblemKind::Other)
        );
    }
}
