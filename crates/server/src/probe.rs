//! The local liveness probe: the server checks holders on its own node itself.
//!
//! A lease whose owner is on this server's node, under this node's current boot id, and in the
//! PID namespace this server runs in, names a process the server can see in `/proc`. Holders in
//! other namespaces of the same machine (containers sharing the host's network or UTS
//! namespace) are not its to judge: there their pid is absent, or another process. Every probe interval the server checks each such
//! `(pid, start time)`; a holder that is gone (or whose pid now belongs to another process) is
//! reclaimed at once with cause `process_died` — a `kill -9`'d holder frees its lock within one
//! interval instead of one TTL. Holders on other nodes are left to their TTL, or to a liveness
//! report from their own node (`locksmith why`/`locks`/`status` run there).

use std::time::Duration;

use locksmith_core::Vantage;
use locksmith_host::liveness;
use tokio::sync::watch;

use crate::engine::Engine;

/// Where the probe runs: the holders it may judge are those recorded with exactly these.
#[derive(Debug, Clone)]
pub struct Local {
    /// This server's node name.
    pub node: String,
    /// This node's current boot id.
    pub boot_id: String,
    /// The PID namespace this server runs in (and whose `/proc` it reads).
    pub pid_ns: String,
}

/// Probes local holders every `interval` until `shutdown` flips to true.
pub async fn run(
    engine: Engine,
    here: Local,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let from = Vantage {
        node: &here.node,
        boot_id: &here.boot_id,
        pid_ns: Some(&here.pid_ns),
    };
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
        let local = engine.local_leases(&here.node, &here.boot_id, &here.pid_ns);
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
        match engine.report_liveness(from, "server-probe", dead).await {
            Ok((reclaimed, _)) if !reclaimed.is_empty() => {
                tracing::info!(?reclaimed, "probe reclaimed leases of dead local holders");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "probe could not persist reclaims"),
        }
    }
}
