//! The server's clock: the only place the lock service reads time.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use locksmith_core::{Mono, Now};

/// Monotonic milliseconds since the server started, paired with the wall clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// A clock that started `ago` ago (or now, if the monotonic clock is younger): for tests
    /// that need a past on it.
    #[cfg(test)]
    pub(crate) fn started_ago(ago: std::time::Duration) -> Self {
        Self {
            start: Instant::now().checked_sub(ago).unwrap_or_else(Instant::now),
        }
    }

    /// The current time for the lock table.
    pub fn now(&self) -> Now {
        Now {
            mono: Mono(self.start.elapsed().as_millis() as u64),
            wall_ms: wall_ms(),
        }
    }

    /// The tokio instant of a monotonic engine time.
    pub fn instant_of(&self, at: Mono) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.start + std::time::Duration::from_millis(at.0))
    }
}

/// Wall-clock Unix milliseconds.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
