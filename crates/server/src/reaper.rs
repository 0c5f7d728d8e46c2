//! The reaper: one background task that expires leases and waits when they are due.
//!
//! It sleeps until the table's next deadline — or the GC interval, whichever comes first, as a
//! sweep that does not trust the deadline bookkeeping alone — and is woken early when an
//! operation sets an earlier deadline. It runs once immediately at boot: that is the watchdog
//! that reclaims whatever recovery left due.

use std::time::Duration;

use tokio::sync::watch;

use crate::engine::Engine;

/// Runs until `shutdown` flips to true.
pub async fn run(engine: Engine, gc_interval: Duration, mut shutdown: watch::Receiver<bool>) {
    // A failed store refuses every run until a restart: say so once, not every interval.
    let mut failed = false;
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
        let sweep = tokio::time::Instant::now() + gc_interval;
        let wake = engine
            .next_deadline()
            // +1 ms: the engine clock counts whole milliseconds, so wake just after the deadline.
            .map(|at| engine.clock().instant_of(at.plus_ms(1)).min(sweep))
            .unwrap_or(sweep);
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = engine.deadline_changed() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
