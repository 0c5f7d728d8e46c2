//! Gate runs: the agent-metric gates are judged inside the step from the endpoints' last
//! reports; the Prometheus gates are queried by the driver, which feeds their results back.

use locksmith_api::agents::ApplyState;
use locksmith_core::Now;
use locksmith_rollout::{Event, Gate, evaluate_metric};

use super::State;

/// The results of rollout `id`'s agent-metric gates whose bake has ended: each over the
/// metric as the wave's endpoints last reported it with the rolled-out revision applied (one
/// sample per endpoint that reported the metric; an endpoint that did not is no sample, so
/// too few samples is inconclusive, never a pass).
pub fn due_metric_results(state: &State, id: &str, now: Now) -> Vec<Event> {
    let Some(entry) = state.rollouts.get(id) else {
        return Vec::new();
    };
    let (Some(run), Some(planner), Some(rolled)) = (
        &entry.stored.gate_run,
        &entry.planner,
        entry.stored.rolled_rev,
    ) else {
        return Vec::new();
    };
    if now.wall_ms < run.until_ms {
        return Vec::new();
    }
    let spec = planner.spec();
    let Some(wave) = planner.plan().waves.get(run.wave) else {
        return Vec::new();
    };
    let mut results = Vec::new();
    for gate in &spec.gates {
        let Gate::Metric {
            metric,
            op,
            threshold,
        } = gate
        else {
            continue;
        };
        if !run.gates.iter().any(|g| g == metric) {
            continue;
        }
        let samples: Vec<f64> = wave
            .nodes
            .iter()
            .filter_map(|node| state.agents.last_report(node, &spec.config))
            .filter(|r| r.report.state == ApplyState::Applied && r.report.applied_rev == rolled)
            .filter_map(|r| r.report.metrics.get(metric).copied())
            .collect();
        let verdict = evaluate_metric(
            *op,
            *threshold,
            &samples,
            spec.min_samples,
            spec.must_have_data,
        );
        results.push(Event::GateResult {
            wave: run.wave,
            gate: metric.clone(),
            verdict,
            samples: samples.len() as u64,
        });
    }
    results
}

/// A Prometheus gate the driver must query now: its bake has ended and it has not answered.
#[derive(Debug, Clone, PartialEq)]
pub struct PromQuery {
    /// The rollout.
    pub rollout: String,
    pub wave: usize,
    /// The gate's name (`prom:QUERY`).
    pub gate: String,
    pub query: String,
    pub op: locksmith_rollout::Comparison,
    pub threshold: f64,
    /// Evaluate at the end of the bake, Unix ms.
    pub at_ms: u64,
    pub min_samples: u32,
    pub must_have_data: bool,
}

/// Every Prometheus gate of every running rollout that is due at `now`.
pub fn prometheus_due(state: &State, now: Now) -> Vec<PromQuery> {
    let mut due = Vec::new();
    for entry in state.rollouts.all().filter(|e| e.running()) {
        let (Some(run), Some(planner)) = (&entry.stored.gate_run, &entry.planner) else {
            continue;
        };
        if now.wall_ms < run.until_ms {
            continue;
        }
        let spec = planner.spec();
        for gate in &spec.gates {
            if let Gate::Prometheus {
                name,
                query,
                op,
                threshold,
            } = gate
                && run.gates.iter().any(|g| g == name)
            {
                due.push(PromQuery {
                    rollout: entry.stored.id.clone(),
                    wave: run.wave,
                    gate: name.clone(),
                    query: query.clone(),
                    op: *op,
                    threshold: *threshold,
                    at_ms: run.until_ms,
                    min_samples: spec.min_samples,
                    must_have_data: spec.must_have_data,
                });
            }
        }
    }
    due
}
