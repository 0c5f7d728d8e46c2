//! A rollout as the API shows it ([`RolloutView`]): its planner's state and plan, each
//! endpoint's part, per-wave progress and commit → applied latency.

use locksmith_api::rollouts::{
    Latency, NodeStatus, RolloutEndpoint, RolloutPhase, RolloutView, WaveView,
};
use locksmith_rollout::{State as PlannerState, state_name};

use super::model::{Entry, Rollouts};
use crate::engine::State;

/// p50/p99/max of `samples` (ms), or `None` for none.
pub fn latency(mut samples: Vec<u64>) -> Option<Latency> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64) * q).ceil() as usize;
        samples[i.clamp(1, samples.len()) - 1]
    };
    Some(Latency {
        count: samples.len() as u64,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: samples[samples.len() - 1],
    })
}

fn phase(entry: &Entry) -> RolloutPhase {
    if entry.stored.cancelled {
        RolloutPhase::Cancelled
    } else if entry.planner.is_none() {
        RolloutPhase::Queued
    } else if entry.running() {
        RolloutPhase::Running
    } else {
        RolloutPhase::Ended
    }
}

/// The rollouts of the same config queued before `entry`, oldest first.
fn ahead(rollouts: &Rollouts, entry: &Entry) -> Vec<String> {
    let config = &entry.stored.spec.config;
    let mut ahead: Vec<&Entry> = rollouts
        .all()
        .filter(|e| &e.stored.spec.config == config && e.stored.seq < entry.stored.seq)
        .filter(|e| e.queued() || e.running())
        .collect();
    ahead.sort_by_key(|e| e.stored.seq);
    ahead.iter().map(|e| e.stored.id.clone()).collect()
}

fn summary(entry: &Entry, queued_behind: &[String]) -> String {
    if entry.stored.cancelled {
        return "cancelled before it started".into();
    }
    let Some(planner) = &entry.planner else {
        return if queued_behind.is_empty() {
            "queued: waiting for the config's lock".into()
        } else {
            format!("queued behind {}", queued_behind.join(", "))
        };
    };
    let waves = planner.plan().waves.len();
    let mut line = match planner.state() {
        PlannerState::Applying { wave } => format!("applying wave {} of {waves}", wave + 1),
        PlannerState::Baking { wave, .. } => format!("baking wave {} of {waves}", wave + 1),
        PlannerState::WaitingWindow { wave } => {
            format!("wave {} of {waves}: waiting for update windows", wave + 1)
        }
        PlannerState::AwaitingApproval { wave } => format!(
            "hold point after wave {} of {waves}: waiting for {} approval(s)",
            wave + 1,
            entry.stored.spec.approvals
        ),
        PlannerState::Paused { wave, reason, .. } => {
            format!(
                "paused at wave {} of {waves}: {}",
                wave + 1,
                pause_words(reason)
            )
        }
        PlannerState::RollingBack { why, .. } => format!("rolling back: {why}"),
        PlannerState::Frozen { reason } => format!("frozen: {reason}"),
        PlannerState::Failed { why } => format!("failed: {why}"),
        other => state_name(other),
    };
    if let Some(why) = &entry.stored.not_promoted {
        line.push_str(&format!(" (not promoted: {why})"));
    } else if entry.stored.promote.is_some() {
        line.push_str(" (promoting the draft)");
    }
    line
}

fn pause_words(reason: &locksmith_rollout::PauseReason) -> String {
    use locksmith_rollout::PauseReason as R;
    match reason {
        R::Operator { principal } => format!("paused by {principal}"),
        R::Silent { nodes } => format!(
            "{} endpoint(s) sent the revision stayed silent past the deadline ({}) — inconclusive, never promoted on a timeout; resume to wait again or abort",
            nodes.len(),
            nodes.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        ),
        R::NoData => {
            "no endpoint of the wave could report (all offline) and data is required".into()
        }
        R::GateInconclusive { gates } => format!(
            "gate(s) {} inconclusive (too few samples or no data) — resume to judge again or abort",
            gates.join(", ")
        ),
        R::Failed { why } => format!("{why} (--on-failure pause)"),
        R::LockLost => "the rollout lost its lock on the config; resume takes it again".into(),
    }
}

/// The view of `entry`.
pub fn view(state: &State, entry: &Entry) -> RolloutView {
    let stored = &entry.stored;
    let queued_behind = if entry.queued() {
        ahead(&state.rollouts, entry)
    } else {
        Vec::new()
    };
    let config = &stored.spec.config;
    let mut waves = Vec::new();
    let mut endpoints = Vec::new();
    let mut all_latencies = Vec::new();
    let mut approved_by = Vec::new();
    let mut not_selected = Vec::new();
    if let Some(planner) = &entry.planner {
        let states = planner.endpoints();
        for (index, wave) in planner.plan().waves.iter().enumerate() {
            let members: Vec<_> = states.iter().filter(|e| e.wave == index).collect();
            let count =
                |f: &dyn Fn(&NodeStatus) -> bool| members.iter().filter(|e| f(&e.status)).count();
            let lat: Vec<u64> = members
                .iter()
                .filter_map(|e| {
                    let sent = stored.sent_ms.get(&e.node)?;
                    let applied = stored.applied_ms.get(&e.node)?;
                    Some(applied.saturating_sub(*sent))
                })
                .collect();
            all_latencies.extend(lat.iter().copied());
            waves.push(WaveView {
                index,
                kind: wave.kind,
                size: wave.nodes.len(),
                allowed_failures: wave.allowed_failures,
                applied: count(&|s| *s == NodeStatus::Applied),
                failed: count(&|s| matches!(s, NodeStatus::Failed { .. })),
                offline: count(&|s| *s == NodeStatus::Offline),
                waiting_window: count(&|s| *s == NodeStatus::WaitingWindow),
                restored: count(&|s| matches!(s, NodeStatus::Restoring | NodeStatus::Restored)),
                pending: count(&|s| {
                    matches!(
                        s,
                        NodeStatus::Planned | NodeStatus::Sent | NodeStatus::Deferred
                    )
                }),
                latency: latency(lat),
            });
        }
        for e in states {
            let report = state.agents.last_report(&e.node, config);
            endpoints.push(RolloutEndpoint {
                desired_rev: stored.overrides.get(&e.node).copied(),
                sent_at_ms: stored.sent_ms.get(&e.node).copied(),
                applied_at_ms: stored.applied_ms.get(&e.node).copied(),
                // Why it failed the rolled-out revision, else its agent's latest error.
                error: stored
                    .errors
                    .get(&e.node)
                    .cloned()
                    .or_else(|| report.and_then(|r| r.report.error.clone())),
                node: e.node,
                wave: e.wave,
                status: e.status,
            });
        }
        if let PlannerState::AwaitingApproval { wave } = planner.state() {
            approved_by = planner.approvals(*wave);
        }
        not_selected = planner.plan().not_selected.clone();
    }
    RolloutView {
        id: stored.id.clone(),
        config: config.clone(),
        rev: stored.spec.rev,
        rolled_rev: stored.rolled_rev,
        starter: stored.spec.starter.clone(),
        created_ms: stored.created_ms,
        phase: phase(entry),
        state: entry.planner.as_ref().map(|p| p.state().clone()),
        summary: summary(entry, &queued_behind),
        queued_behind,
        lease: stored.lock.map(|l| l.lease.0),
        token: stored.lock.map(|l| l.token.0),
        approved_by,
        approvals_needed: stored.spec.approvals,
        spec: stored.spec.clone(),
        waves,
        endpoints,
        not_selected,
        latency: latency(all_latencies),
        outcome: stored.outcome.clone(),
        ended_ms: stored.ended_ms,
    }
}
