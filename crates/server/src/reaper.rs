//! The reaper: one background task that runs out whatever is due — leases, waits, lock-delays,
//! holds — when it is due.
//!
//! It sleeps on the engine's clock until the state's next deadline — or the GC interval,
//! whichever comes first, as a sweep that does not trust the deadline bookkeeping alone — and
//! is woken early when an operation sets an earlier deadline. Both are instants on the engine's
//! clock, so on a [`ManualClock`](crate::clock::ManualClock) the reaper runs exactly when the
//! test moves time past them. It runs once immediately at boot: that is the watchdog that
//! reclaims whatever recovery left due.

use std::time::Duration;

use tokio::sync::watch;

use crate::engine::Engine;

/// Runs until `shutdown` flips to true.
pub async fn run(engine: Engine, gc_interval: Duration, mut shutdown: watch::Receiver<bool>) {
    // A failed store refuses every run until a restart: say so once, not every interval.
    let mut failed = false;
    let gc_ms = u64::try_from(gc_interval.as_millis()).unwrap_or(u64::MAX);
    loop {
        match engine.reap().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "reaper reclaimed expired leases"),
            Err(e) if !failed => {
                failed = true;
                tracing::error!(error = %e, "reaper could not persist expiries; storage failed");
            }
            Err(_) => {}
        }
        let sweep = engine.clock().now().mono.plus_ms(gc_ms);
        let wake = engine
            .next_deadline()
            // +1 ms: the engine clock counts whole milliseconds, so wake just after the deadline.
            .map(|at| at.plus_ms(1).min(sweep))
            .unwrap_or(sweep);
        tokio::select! {
            _ = engine.clock().sleep_until(wake) => {}
            _ = engine.deadline_changed() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
