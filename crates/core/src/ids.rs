//! Identifiers handed out by the lock table.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A fencing token: strictly increasing across every grant the table ever makes, never reused,
/// and carried across restarts by the persisted high-water mark. A protected write carries it;
/// a write with a token older than the newest one seen for the resource is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct FenceToken(pub u64);

/// Identifies a lease. Lease ids come from the same never-reused sequence as fencing tokens, so a
/// lease id is unique for the lifetime of the data directory and tells, by itself, whether it was
/// ever issued (ids at or below the high-water mark were).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct LeaseId(pub u64);

/// Identifies a queued acquire request while it waits. Not persisted: a waiter is a live
/// connection, and it is gone when the server restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WaiterId(pub u64);

impl fmt::Display for FenceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for WaiterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
