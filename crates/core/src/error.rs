//! Expected outcomes of lock-table operations, as values. Each operation has its own enum so the
//! caller's `match` lists exactly what can happen; HTTP statuses and CLI exit codes are mapped
//! from these in one place each (crates/api and the binary).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::hold::{HoldId, HoldView};
use crate::ids::{FenceToken, LeaseId};
use crate::view::HolderView;

/// A request that can never succeed as sent: names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[error("{field} {reason}")]
pub struct InvalidRequest {
    /// The field at fault, e.g. `owner.pid` or `ttl_ms`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl InvalidRequest {
    /// A new invalid-request error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A broken invariant of the table: a bug in Locksmith, never the caller's fault. Drivers answer
/// it as a server fault (HTTP 500 `internal`), not as a refusal of the request: nothing the caller
/// changes makes the request succeed, and no field of it is to blame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("internal error (a bug): {what}")]
pub struct BrokenInvariant {
    /// Which invariant, and where.
    pub what: String,
}

impl BrokenInvariant {
    /// A broken invariant, described.
    pub fn new(what: impl Into<String>) -> Self {
        Self { what: what.into() }
    }
}

/// Why an acquire was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AcquireError {
    /// Every slot is held (and the caller would not wait, or waited in vain).
    #[error("{resource}: HOT")]
    Hot {
        /// The resource asked for.
        resource: String,
        /// Who holds it now.
        holders: Vec<HolderView>,
    },
    /// The resource is held as a semaphore of a different size than the caller asked for.
    #[error("{resource}: held with {held_slots} slot(s), asked for {asked_slots}")]
    SlotsMismatch {
        /// The resource asked for.
        resource: String,
        /// Slot count of the current holders.
        held_slots: u32,
        /// Slot count in the request.
        asked_slots: u32,
    },
    /// The caller already holds the resource under a lease granted with another TTL. A lease
    /// keeps the TTL it was granted with for its whole life (as an etcd lease or a Consul
    /// session does): a re-acquire returns the lease only when it asks for the same TTL.
    #[error(
        "{resource}: this process already holds lease {lease} with a TTL of {held_ttl_ms} ms, asked for {asked_ttl_ms} ms"
    )]
    TtlMismatch {
        /// The resource asked for.
        resource: String,
        /// The caller's lease on it.
        lease: LeaseId,
        /// The TTL the lease was granted with, ms.
        held_ttl_ms: u64,
        /// The TTL in the request, ms.
        asked_ttl_ms: u64,
    },
    /// An operator's hold is in force on the resource: no new grants until it ends.
    #[error("{resource}: FROZEN")]
    Frozen {
        /// The resource asked for.
        resource: String,
        /// The hold(s) in force.
        holds: Vec<HoldView>,
    },
    /// The resource is in its lock-delay after a holder failed: no grants until it ends.
    #[error("{resource}: in lock-delay for {left_ms} ms after a failed holder")]
    LockDelay {
        /// The resource asked for.
        resource: String,
        /// Milliseconds until grants resume.
        left_ms: u64,
    },
    /// The request is malformed.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// The table found itself inconsistent: a bug, not a refusal (see [`BrokenInvariant`]).
    #[error(transparent)]
    Internal(#[from] BrokenInvariant),
}

/// How a lease ended, remembered for a while so that a late renew or release is told why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", tag = "cause")]
pub enum EndCause {
    /// The holder released it.
    Released,
    /// No heartbeat arrived within the TTL.
    Expired,
    /// The holder's node came back with a new boot id: the holder cannot be alive.
    NodeRebooted {
        /// The node's new boot id.
        new_boot_id: String,
    },
    /// A process on the holder's node proved the holder's process is gone (pid absent, or the
    /// pid reused by a process with another start time).
    ProcessDied {
        /// Who proved it (`server` for the server's own probe, else the reporting client).
        reported_by: String,
    },
    /// An operator broke the lock.
    Broken {
        /// The operator.
        by: String,
        /// Their reason.
        reason: String,
    },
    /// Ended before this server's memory of it: longer ago than the newest ends it remembers
    /// (`TableConfig::ended_memory`, and across a restart the audit records read back at
    /// boot); the exact cause is gone.
    Unknown,
}

impl EndCause {
    /// True when the holder failed (everything but a clean release): such an end may be
    /// followed by a lock-delay.
    pub fn is_failure(&self) -> bool {
        !matches!(self, EndCause::Released)
    }

    /// A short stable label for metrics and listings: `released`, `expired`, `node_rebooted`,
    /// `process_died`, `broken`, `unknown`.
    pub fn label(&self) -> &'static str {
        match self {
            EndCause::Released => "released",
            EndCause::Expired => "expired",
            EndCause::NodeRebooted { .. } => "node_rebooted",
            EndCause::ProcessDied { .. } => "process_died",
            EndCause::Broken { .. } => "broken",
            EndCause::Unknown => "unknown",
        }
    }
}

/// Why a renew or release was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LeaseError {
    /// No such lease was ever issued.
    #[error("lease {lease} is not held (no such lease was ever granted)")]
    NotHolder {
        /// The lease asked about.
        lease: LeaseId,
    },
    /// The lease existed but has ended; the caller no longer holds the lock.
    #[error("lease {lease} on {resource} has ended ({cause:?})")]
    LeaseExpired {
        /// The lease asked about.
        lease: LeaseId,
        /// Its resource, when still remembered (empty otherwise).
        resource: String,
        /// Why it ended.
        cause: EndCause,
    },
    /// An operator broke the lease: the caller no longer holds the lock.
    #[error("lease {lease} on {resource} was broken by {by}: {reason}")]
    Broken {
        /// The lease asked about.
        lease: LeaseId,
        /// Its resource.
        resource: String,
        /// The operator who broke it.
        by: String,
        /// Their reason.
        reason: String,
    },
    /// The caller presented a fencing token that is not this lease's.
    #[error("token {presented} is not the token of lease {lease} (current {current})")]
    StaleToken {
        /// The lease asked about.
        lease: LeaseId,
        /// The token the caller sent.
        presented: FenceToken,
        /// The lease's token.
        current: FenceToken,
    },
    /// The table found itself inconsistent: a bug, not a refusal (see [`BrokenInvariant`]).
    #[error(transparent)]
    Internal(#[from] BrokenInvariant),
}

/// Why a fence check failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FenceError {
    /// The token is older than the newest token granted on the resource, or its lease has ended.
    #[error("{resource}: token {presented} is stale (newest {newest})")]
    StaleToken {
        /// The resource checked.
        resource: String,
        /// The token presented.
        presented: FenceToken,
        /// The newest token granted on the resource (0 if none remembered).
        newest: FenceToken,
    },
    /// The request is malformed.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
}

/// Why a fenced write was refused (see `LockTable::check_writer`): the writer does not hold
/// the lock now, and must not write.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WriterError {
    /// The lease is not live: never granted, ended, or broken — as a renew would be told.
    #[error(transparent)]
    Lease(LeaseError),
    /// The lease is live but the token is not its, or it holds another resource: the token is
    /// not the current holder's. `holders` are the resource's current holders.
    #[error("{fence}")]
    Stale {
        /// The refusal as a fence check phrases it (`StaleToken`, or `Invalid` resource).
        fence: FenceError,
        /// The current holders of the resource.
        holders: Vec<crate::view::HolderView>,
    },
}

/// Why a hold operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HoldError {
    /// No such hold is in force or pending.
    #[error("hold {hold} is not in force (lifted, expired, or never placed)")]
    NotFound {
        /// The hold asked about.
        hold: HoldId,
    },
    /// The operator who placed a hold cannot acknowledge it: a second person must.
    #[error("hold {hold} was placed by {by}; a different operator must acknowledge it")]
    SameOperator {
        /// The hold.
        hold: HoldId,
        /// Who placed it.
        by: String,
    },
    /// The hold was acknowledged already and is in force: another acknowledgement would change
    /// nothing, so it is refused rather than reported as if it had been given.
    #[error("hold {hold} on {resource} was already acknowledged by {by} and is in force")]
    AlreadyAcknowledged {
        /// The hold.
        hold: HoldId,
        /// Its resource.
        resource: String,
        /// Who acknowledged it.
        by: String,
    },
    /// The hold was placed without `require_ack`: it has been in force since it was placed and
    /// there is nothing to acknowledge.
    #[error(
        "hold {hold} on {resource} needs no acknowledgement: it has been in force since it was placed"
    )]
    AckNotRequired {
        /// The hold.
        hold: HoldId,
        /// Its resource.
        resource: String,
    },
    /// The request is malformed.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
}

/// Why a break was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BreakError {
    /// Nobody holds the resource (or the named lease is not one of its holders).
    #[error("{resource}: nothing to break (not held{})", lease.map(|l| format!(" by lease {l}")).unwrap_or_default())]
    NotHeld {
        /// The resource.
        resource: String,
        /// The lease named, if any.
        lease: Option<LeaseId>,
    },
    /// The request is malformed (e.g. no reason given).
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
}

/// Why a liveness report was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReportError {
    /// Only a process on the holder's own node (same node name and boot id) may report it dead.
    #[error("lease {lease} is held on {owner_node}; only that node may report its holder dead")]
    NotSameNode {
        /// The lease.
        lease: LeaseId,
        /// The holder's node.
        owner_node: String,
    },
    /// Only a process in the holder's own PID namespace can tell from `/proc` whether its pid
    /// still runs: from any other the pid is absent, or another process. A holder that recorded
    /// no namespace cannot be judged by pid at all.
    #[error(
        "lease {lease} is held by pid {pid} in {}; this report comes from {}: only a process in \
         the holder's own PID namespace can tell whether it runs",
        holder_pid_ns.as_deref().unwrap_or("a PID namespace it did not record"),
        reporter_pid_ns.as_deref().unwrap_or("a reporter that named no PID namespace")
    )]
    NotSamePidNamespace {
        /// The lease.
        lease: LeaseId,
        /// The holder's pid (in its own namespace).
        pid: u32,
        /// The holder's PID namespace, if recorded.
        holder_pid_ns: Option<String>,
        /// The reporter's PID namespace, if it named one.
        reporter_pid_ns: Option<String>,
    },
    /// The report's evidence names another process incarnation than the holder's.
    #[error(
        "lease {lease} is held by pid {pid} started at {start_time}; the report is about another process"
    )]
    WrongProcess {
        /// The lease.
        lease: LeaseId,
        /// The holder's pid.
        pid: u32,
        /// The holder's start time.
        start_time: u64,
    },
    /// The lease is not live.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The request is malformed.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
}
