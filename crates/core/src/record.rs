//! What the table asks storage to make durable, and what storage hands back at boot.
//!
//! Only what must survive a crash is here: live leases, holds, the audit trail and the fencing
//! high-water mark.
//! Heartbeat times and waiters are deliberately absent — after a restart every surviving lease
//! is treated as renewed at recovery time, and waiters are connections that died with the server.

use serde::{Deserialize, Serialize};

use crate::audit::AuditRecord;
use crate::hold::{HoldId, HoldRecord};
use crate::ids::{FenceToken, LeaseId};
use crate::owner::Owner;

/// A granted lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The lease id.
    pub lease: LeaseId,
    /// Its resource.
    pub resource: String,
    /// Its holder.
    pub owner: Owner,
    /// Its fencing token.
    pub token: FenceToken,
    /// Its TTL in milliseconds.
    pub ttl_ms: u64,
    /// Slot count of the resource when granted.
    pub slots: u32,
    /// Wall-clock grant time, Unix ms (display only).
    pub granted_at_ms: u64,
    /// Lock-delay after this holder fails (expiry, ghost reclaim, break), ms.
    #[serde(default)]
    pub lock_delay_ms: u64,
}

/// One change to durable state. A batch of mutations is applied atomically and in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mutation {
    /// Insert or replace a lease.
    PutLease(LeaseRecord),
    /// Remove a lease (release, expiry, reclaim).
    DeleteLease(LeaseId),
    /// Insert or replace a hold.
    PutHold(HoldRecord),
    /// Remove a hold (lifted or expired).
    DeleteHold(HoldId),
    /// Append an audit record (its `seq` is strictly greater than every earlier one).
    AppendAudit(AuditRecord),
    /// Raise the fencing high-water mark: every token and lease id at or below it was issued.
    /// Storage keeps the maximum ever written, so the sequence never goes backwards.
    FenceHighWater(u64),
}

/// Everything storage hands back at boot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every lease that was durably granted and not durably ended.
    pub leases: Vec<LeaseRecord>,
    /// Every hold placed and not lifted or expired.
    pub holds: Vec<HoldRecord>,
    /// The highest fencing token / lease id ever durably issued (0 if none).
    pub fence_high_water: u64,
    /// The highest audit sequence number stored (0 if none).
    pub audit_seq: u64,
}
