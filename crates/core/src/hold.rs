//! Holds: an operator's bounded freeze on a resource ("hold point"). While a hold is in force no
//! new grant is made; existing holders keep their leases. A hold may require acknowledgement by
//! a second operator before it takes effect, and it always ends by itself.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies a hold. Drawn from the same never-reused sequence as leases and tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct HoldId(pub u64);

impl fmt::Display for HoldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Whether a hold is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    /// Placed with `require_ack`, waiting for a second operator: not yet in force.
    PendingAck,
    /// In force: no new grants.
    Active,
}

/// A hold as stored. Times are wall-clock: a hold is an operator's promise in human time, and
/// across a restart it keeps its remaining wall-clock time (clamped to its duration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HoldRecord {
    /// The hold id.
    pub hold: HoldId,
    /// The resource frozen.
    pub resource: String,
    /// Why.
    pub reason: String,
    /// The operator who placed it.
    pub by: String,
    /// When it was placed, Unix ms.
    pub placed_at_ms: u64,
    /// How long it stays in force once active (and how long a pending one waits for its ack).
    pub duration_ms: u64,
    /// True when a second operator must acknowledge it before it takes effect.
    pub require_ack: bool,
    /// The operator who acknowledged it.
    #[serde(default)]
    pub acked_by: Option<String>,
    /// When it took effect, Unix ms (`None` while pending).
    #[serde(default)]
    pub active_since_ms: Option<u64>,
}

/// A hold as listings show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HoldView {
    /// The stored hold.
    #[serde(flatten)]
    pub record: HoldRecord,
    /// Pending or active.
    pub state: HoldState,
    /// Milliseconds until it ends (or, while pending, until it lapses unacknowledged).
    pub ends_in_ms: u64,
}
