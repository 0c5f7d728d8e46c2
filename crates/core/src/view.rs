//! What the table shows of itself: read-only views handed to the API and the CLI.

use serde::{Deserialize, Serialize};

use crate::hold::HoldView;
use crate::ids::{FenceToken, LeaseId};
use crate::owner::Owner;

/// The state an operator sees for a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LockState {
    /// Nobody holds it.
    Free,
    /// Held, and every holder's heartbeats are on time.
    Hot,
    /// Held, but a holder's heartbeat is overdue (more than half its TTL since the last one):
    /// it will be reclaimed when the TTL runs out unless it renews.
    Stale,
    /// An operator's hold is in force: no new grants (existing holders keep their leases).
    Frozen,
    /// Not held, but in its lock-delay after a holder failed: no grants until it ends.
    Delayed,
}

/// A lease as its holder sees it, returned by acquire and renew.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseView {
    /// The lease id, for renew and release.
    pub lease: LeaseId,
    /// The fencing token: carry it on every protected write.
    pub token: FenceToken,
    /// The resource held.
    pub resource: String,
    /// Lease TTL in milliseconds: renew well within it.
    pub ttl_ms: u64,
    /// Slot count of the resource (1 = exclusive).
    pub slots: u32,
    /// Who holds it.
    pub owner: Owner,
    /// Wall-clock grant time, Unix ms.
    pub granted_at_ms: u64,
    /// True when this acquire found the same process already holding the lease and returned it.
    pub reacquired: bool,
}

/// One holder of a resource, as listings show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HolderView {
    /// The lease id.
    pub lease: LeaseId,
    /// Its fencing token.
    pub token: FenceToken,
    /// Who holds it.
    pub owner: Owner,
    /// Wall-clock grant time, Unix ms.
    pub granted_at_ms: u64,
    /// Wall-clock time of the last heartbeat (or grant, or server recovery), Unix ms.
    pub last_heartbeat_ms: u64,
    /// Lease TTL in milliseconds.
    pub ttl_ms: u64,
    /// Milliseconds until the lease expires without a heartbeat.
    pub ttl_left_ms: u64,
    /// True when the heartbeat is overdue (see [`LockState::Stale`]).
    pub stale: bool,
}

/// One queued acquire request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaiterView {
    /// Who is waiting.
    pub owner: Owner,
    /// Wall-clock time it started waiting, Unix ms.
    pub waiting_since_ms: u64,
}

/// A resource and everything about it that an operator needs to decide what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResourceView {
    /// The resource name.
    pub resource: String,
    /// FREE, HOT or STALE.
    pub state: LockState,
    /// Slot count (1 = exclusive).
    pub slots: u32,
    /// Current holders, oldest grant first.
    pub holders: Vec<HolderView>,
    /// Queued acquirers, in the order they will be served.
    pub waiters: Vec<WaiterView>,
    /// Holds placed on the resource (active or pending acknowledgement).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<HoldView>,
    /// Milliseconds of lock-delay left (0 when none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay_left_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
