//! The rollouts driver: what a rollout needs between steps, done by a task beside the engine
//! (like the reaper). Every [`SWEEP`] it reads the rollouts and
//! - promotes the draft of a rollout whose last wave passed, reading the draft's content
//!   first (the step never waits for the disk), then releases its lock;
//! - starts the oldest queued rollout of a config once nothing of the config runs and its lock
//!   is free (an operator's write may hold it);
//! - tells running rollouts which endpoints came online or went offline;
//! - runs the Prometheus gates whose bake has ended and feeds their verdicts back.
//!
//! Everything it does is a step of the engine and so durable, and re-derived from the state
//! after a restart (or on a new leader): a promotion or a query it had not finished is simply
//! done again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use locksmith_rollout::Verdict;

use crate::engine::{Engine, PromQuery, prometheus_due};

/// How often the driver looks.
pub const SWEEP: Duration = Duration::from_millis(100);

/// What one look found to do.
#[derive(Debug, Default)]
struct Work {
    finalize: Vec<String>,
    kick: Vec<String>,
    online_changed: bool,
    queries: Vec<PromQuery>,
}

/// Runs until `stop` turns true. `prometheus`: `--prometheus-url`.
pub async fn run(
    engine: Engine,
    prometheus: Option<String>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .ok();
    let inflight: Arc<Mutex<HashSet<(String, usize, String)>>> = Arc::default();
    let mut tick = tokio::time::interval(SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        if *stop.borrow() {
            return;
        }
        let Ok(work) = engine
            .rollouts(|rollouts, state, now| {
                let mut work = Work::default();
                for e in rollouts.all() {
                    if e.stored.promote.is_some() {
                        work.finalize.push(e.stored.id.clone());
                    }
                    if e.queued()
                        && rollouts.running(&e.stored.spec.config).is_none()
                        && !work.kick.contains(&e.stored.spec.config)
                    {
                        work.kick.push(e.stored.spec.config.clone());
                    }
                    if e.running()
                        && let Some(p) = &e.planner
                        && !p.state().is_terminal()
                    {
                        work.online_changed |= p
                            .endpoints()
                            .iter()
                            .any(|n| state.agents.is_online(&n.node, now.wall_ms) != n.online);
                    }
                }
                work.queries = prometheus_due(state, now);
                work
            })
            .await
        else {
            continue;
        };
        for id in &work.finalize {
            if let Err(e) = engine.rollout_finalize(id).await {
                tracing::warn!(rollout = %id, error = ?e, "could not promote the rollout's draft yet");
            }
        }
        for config in &work.kick {
            if let Err(e) = engine.rollout_kick(config).await {
                tracing::warn!(config = %config, error = ?e, "could not start the queued rollout");
            }
        }
        if work.online_changed {
            let _ = engine.rollout_sync_online().await;
        }
        for q in work.queries {
            let key = (q.rollout.clone(), q.wave, q.gate.clone());
            let fresh = inflight.lock().is_ok_and(|mut set| set.insert(key.clone()));
            if !fresh {
                continue;
            }
            let (engine, inflight) = (engine.clone(), inflight.clone());
            let (client, url) = (client.clone(), prometheus.clone());
            tokio::spawn(async move {
                let (verdict, samples) = query(client.as_ref(), url.as_deref(), &q).await;
                if let Err(e) = engine
                    .rollout_gate_result(&q.rollout, q.wave, q.gate.clone(), verdict, samples)
                    .await
                {
                    tracing::warn!(rollout = %q.rollout, gate = %q.gate, error = ?e, "gate result not taken");
                }
                if let Ok(mut set) = inflight.lock() {
                    set.remove(&key);
                }
            });
        }
    }
}

/// A Prometheus gate's verdict and sample count. A query that fails (Prometheus unreachable,
/// an error, a result it cannot judge) is inconclusive with no samples: the rollout pauses and
/// says so, it never passes.
async fn query(
    client: Option<&reqwest::Client>,
    url: Option<&str>,
    q: &PromQuery,
) -> (Verdict, u64) {
    let (Some(client), Some(url)) = (client, url) else {
        return (Verdict::Inconclusive, 0);
    };
    match super::prometheus::instant_query(client, url, &q.query, q.at_ms).await {
        Ok(samples) => {
            let verdict = locksmith_rollout::evaluate_metric(
                q.op,
                q.threshold,
                &samples,
                q.min_samples,
                q.must_have_data,
            );
            (verdict, samples.len() as u64)
        }
        Err(e) => {
            tracing::warn!(gate = %q.gate, error = %e, "the Prometheus gate's query failed: inconclusive");
            (Verdict::Inconclusive, 0)
        }
    }
}
