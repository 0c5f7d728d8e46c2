//! The local liveness probe: the server checks holders on its own node itself.
//!
//! A lease whose owner is on this server's node, under this node's current boot id, names a
//! process the server can see in `/proc`. Every probe interval the server checks each such
//! `(pid, start time)`; a holder that is gone (or whose pid now belongs to another process) is
//! reclaimed at once with cause `process_died` — a `kill -9`'d holder frees its lock within one
//! interval instead of one TTL. Holders on other nodes are left to their TTL, or to a liveness
//! report from their own node (`locksmith why`/`locks`/`status` run there).

use std::time::Duration;

use locksmith_host::liveness;
use tokio::sync::watch;

use crate::engine::Engine;

/// Probes local holders every `interval` until `shutdown` flips to true.
pub async fn run(
    engine: Engine,
    node: String,
    boot_id: String,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let local = engine.local_leases(&node, &boot_id);
        if local.is_empty() {
            continue;
        }
        // /proc reads are cheap but blocking: keep them off the async workers.
        let dead = tokio::task::spawn_blocking(move || {
            local
                .into_iter()
                .filter(|d| liveness(d.pid, d.start_time).is_dead())
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        if dead.is_empty() {
            continue;
        }
        match engine
            .report_liveness(&node, &boot_id, "server-probe", dead)
            .await
        {
            Ok((reclaimed, _)) if !reclaimed.is_empty() => {
                tracing::info!(?reclaimed, "probe reclaimed leases of dead local holders");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "probe could not persist reclaims"),
        }
    }
}
