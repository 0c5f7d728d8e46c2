//! The server's clock: the only place the lock service reads time, injected so that a whole
//! server can run on virtual time.
//!
//! The engine asks its [`Clock`] for `now` before every step, and the reaper sleeps on it until
//! the table's next deadline. [`SystemClock`] is the real one; [`ManualClock`] moves only when
//! told to ([`ManualClock::advance`]), so tests of TTLs, lock-delays and holds — and a fleet
//! simulator — run without sleeping, in the same order every time.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use locksmith_core::{Mono, Now};
use tokio::sync::watch;

/// Where the engine gets its time from.
pub trait Clock: Debug + Send + Sync + 'static {
    /// The current time for the lock table: monotonic ms since the clock started, and the wall
    /// clock.
    fn now(&self) -> Now;

    /// Resolves once [`now`](Self::now)`.mono` has reached `at` (at once if it has).
    fn sleep_until(&self, at: Mono) -> BoxFuture<'static, ()>;
}

/// The real clocks: `Instant` for the monotonic count, `SystemTime` for the wall.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    /// A clock starting now.
    pub fn start() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// The clock as the engine takes it.
    pub fn shared() -> Arc<dyn Clock> {
        Arc::new(Self::start())
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Now {
        Now {
            mono: Mono(self.start.elapsed().as_millis() as u64),
            wall_ms: wall_ms(),
        }
    }

    fn sleep_until(&self, at: Mono) -> BoxFuture<'static, ()> {
        let deadline = tokio::time::Instant::from_std(self.start + Duration::from_millis(at.0));
        Box::pin(tokio::time::sleep_until(deadline))
    }
}

/// A clock that moves only when [`advance`](Self::advance)d: virtual time for tests and
/// simulations. Both of its clocks move together.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<Now>,
}

/// Where a [`ManualClock::new`] starts its wall clock: 2023-11-14T22:13:20Z, a fixed instant so
/// that runs are the same every time.
pub const MANUAL_EPOCH_MS: u64 = 1_700_000_000_000;

impl ManualClock {
    /// A clock at monotonic 0 and wall [`MANUAL_EPOCH_MS`].
    pub fn new() -> Self {
        Self::at(Now::at(0, MANUAL_EPOCH_MS))
    }

    /// A clock at `now`.
    pub fn at(now: Now) -> Self {
        Self {
            now: watch::Sender::new(now),
        }
    }

    /// Moves both clocks `by` forward (whole milliseconds), and wakes every sleeper whose
    /// instant has come — before any later `advance` can be observed, so none is skipped.
    pub fn advance(&self, by: Duration) {
        let ms = by.as_millis() as u64;
        self.now.send_modify(|now| {
            now.mono = now.mono.plus_ms(ms);
            now.wall_ms = now.wall_ms.saturating_add(ms);
        });
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Now {
        *self.now.borrow()
    }

    fn sleep_until(&self, at: Mono) -> BoxFuture<'static, ()> {
        let mut now = self.now.subscribe();
        Box::pin(async move {
            if now.wait_for(|now| now.mono >= at).await.is_err() {
                // The clock is gone, and with it every future instant: never wake.
                std::future::pending::<()>().await;
            }
        })
    }
}

/// Wall-clock Unix milliseconds, from the system clock: for what is not the engine's time
/// (e.g. when a response was made).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_exactly_the_sleepers_whose_instant_has_come() {
        let clock = ManualClock::new();
        let mut early = clock.sleep_until(Mono(1_000));
        let mut late = clock.sleep_until(Mono(5_000));
        let mut past = clock.sleep_until(Mono(0));
        assert!((&mut past).now_or_never().is_some(), "due already");
        clock.advance(Duration::from_millis(999));
        assert!((&mut early).now_or_never().is_none());
        clock.advance(Duration::from_millis(1));
        assert!((&mut early).now_or_never().is_some());
        assert!((&mut late).now_or_never().is_none());
        assert_eq!(clock.now(), Now::at(1_000, MANUAL_EPOCH_MS + 1_000));
        clock.advance(Duration::from_secs(10));
        assert!((&mut late).now_or_never().is_some());
    }
}
