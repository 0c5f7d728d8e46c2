//! The ghost prober: every probe interval, the agent checks this node's lock holders with
//! `locksmith_host`'s verdicts (the ones `why`, `locks` and `status` use) and reports the dead
//! (`POST /v1/liveness`), so a holder killed on the endpoint frees its lock within one
//! interval, with no CLI run there.

use std::time::Duration;

use locksmith_client::Client;
use locksmith_host::Verdict;
use locksmith_host::verdict::{self, Here};

/// Probes every `every` for as long as the agent runs.
pub async fn probe_forever(client: Client, here: Here, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = probe_once(&client, &here).await {
            tracing::debug!("ghost probe: {e}");
        }
    }
}

/// One probe: list the locks held on this node, check each holder, report the dead.
async fn probe_once(client: &Client, here: &Here) -> Result<(), locksmith_client::ClientError> {
    let locks = client.locks_on_node(&here.node).await?;
    let checks = verdict::check(&Ok(here.clone()), &locks.locks);
    let reporter = format!("locksmith-agent@{}", here.node);
    let Some(report) = verdict::liveness_report(here, reporter, &checks) else {
        return Ok(());
    };
    let answer = client.report_liveness(&report).await?;
    for c in checks.iter().filter(|c| c.verdict.is_dead()) {
        let how = match &c.verdict {
            Verdict::Rebooted => "died with an earlier boot",
            Verdict::PidReused { .. } => "is gone (its pid was reused)",
            _ => "is gone",
        };
        tracing::info!(
            resource = %c.resource,
            lease = %c.lease,
            "holder pid {} {how}: reported ({:?})",
            c.owner.pid,
            verdict::Reported::from_answer(&answer, c.lease)
        );
    }
    Ok(())
}
