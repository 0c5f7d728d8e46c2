//! Expected outcomes of lock-table operations, as values. Each operation has its own enum so the
//! caller's `match` lists exactly what can happen; HTTP statuses and CLI exit codes are mapped
//! from these in one place each (crates/api and the binary).

use serde::{Deserialize, Serialize};
use thiserror::Error;

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
    /// The request is malformed.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
}

/// How a lease ended, remembered for a while so that a late renew or release is told why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "cause")]
pub enum EndCause {
    /// The holder released it.
    Released,
    /// No heartbeat arrived within the TTL.
    Expired,
    /// Ended before this server's memory of it (e.g. before a restart); the exact cause is gone.
    Unknown,
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
