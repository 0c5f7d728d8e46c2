//! The audit trail: one append-only record per grant, release, expiry, reclaim, hold, ack and
//! break. The table emits them as mutations (so they are durable in the same batch as the change
//! they describe); the server also streams them as events and counts them as metrics.

use serde::{Deserialize, Serialize};

use crate::error::EndCause;
use crate::hold::HoldId;
use crate::ids::{FenceToken, LeaseId};
use crate::owner::Owner;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AuditKind {
    /// A lease was granted.
    Granted,
    /// A lease ended (released, expired, reclaimed as a ghost, or broken).
    Ended {
        /// Why.
        #[serde(flatten)]
        cause: EndCause,
    },
    /// A hold was placed (active at once, or pending acknowledgement).
    HoldPlaced,
    /// A pending hold was acknowledged and took effect.
    HoldAcked,
    /// A hold was lifted by an operator.
    HoldLifted,
    /// A hold ran out (or lapsed unacknowledged).
    HoldExpired,
    /// An operator broke the lock: the fence advanced to `token`.
    Broke,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the log: strictly increasing, never reused.
    pub seq: u64,
    /// Wall-clock time, Unix ms.
    pub at_ms: u64,
    /// The resource concerned.
    pub resource: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: AuditKind,
    /// The lease concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseId>,
    /// The fencing token concerned (for a break: the advanced fence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<FenceToken>,
    /// The lease's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// The hold concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldId>,
    /// The operator who acted (hold, ack, lift, break).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// The operator's reason (for holds and breaks). Serialized as `note`, because an ended
    /// lease's cause (flattened into the same object) may carry a `reason` of its own.
    #[serde(default, rename = "note", skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl AuditRecord {
    /// A short label: `granted`, `released`, `expired`, `node_rebooted`, `process_died`,
    /// `broken`, `hold_placed`, `hold_acked`, `hold_lifted`, `hold_expired`, `broke`.
    pub fn label(&self) -> &'static str {
        match &self.kind {
            AuditKind::Granted => "granted",
            AuditKind::Ended { cause } => cause.label(),
            AuditKind::HoldPlaced => "hold_placed",
            AuditKind::HoldAcked => "hold_acked",
            AuditKind::HoldLifted => "hold_lifted",
            AuditKind::HoldExpired => "hold_expired",
            AuditKind::Broke => "broke",
        }
    }
}

impl AuditRecord {
    /// A record about `resource`; `at_ms` is filled in by the table when appended, `seq` by the
    /// driver as it seals the batch (one sequence for every domain).
    pub fn new(resource: &str, kind: AuditKind) -> Self {
        Self {
            seq: 0,
            at_ms: 0,
            resource: resource.to_string(),
            kind,
            lease: None,
            token: None,
            owner: None,
            hold: None,
            operator: None,
            reason: None,
        }
    }
}
