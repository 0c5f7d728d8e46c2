//! Time as the lock table sees it: the caller passes `now`, the table never reads a clock.
//!
//! Two clocks travel together. `mono` is a monotonic millisecond count chosen by the driver
//! (it never goes backwards and is meaningless across restarts — which is why no monotonic
//! deadline is ever persisted). `wall` is Unix time in milliseconds, used only for display
//! ("since 03:12", "last heartbeat 31m ago"), never for deciding anything.

use serde::{Deserialize, Serialize};

/// A monotonic instant in milliseconds on the driver's clock.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Mono(pub u64);

impl Mono {
    /// The instant `ms` milliseconds later, saturating.
    pub fn plus_ms(self, ms: u64) -> Mono {
        Mono(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn ms_since(self, earlier: Mono) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// The current time, as handed to every lock-table operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Now {
    /// Monotonic clock: leases and waits are decided on this.
    pub mono: Mono,
    /// Wall clock, Unix milliseconds: for display and audit only.
    pub wall_ms: u64,
}

impl Now {
    /// A `Now` with both clocks at the given millisecond counts (handy in tests and simulations).
    pub fn at(mono_ms: u64, wall_ms: u64) -> Now {
        Now {
            mono: Mono(mono_ms),
            wall_ms,
        }
    }
}
