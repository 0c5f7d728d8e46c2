//! Time as the lock table sees it: the caller passes `now`, the table never reads a clock.
//!
//! Two clocks travel together. `mono` is a monotonic millisecond count chosen by the driver
//! (it never goes backwards and is meaningless across restarts — which is why no monotonic
//! deadline is ever persisted): every lease, wait, lock-delay and hold runs out on it while the
//! table runs. `wall_ms` is Unix time in milliseconds: what is shown ("since 03:12", "last
//! heartbeat 31m ago") and stamped on stored records (grants, holds, audit), and it decides one
//! thing — across a restart, when the monotonic clock starts over, a stored hold keeps its
//! remaining wall-clock time (an operator's promise in human time; see [`crate::hold`]). A
//! lease's TTL never depends on it: a restored lease counts as renewed at recovery.

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
    /// Wall clock, Unix milliseconds: shown, stamped on stored records, and what a restored
    /// hold's remaining time is counted on (see the module docs).
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
