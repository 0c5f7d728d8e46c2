//! Which endpoints go in which wave: [`plan`], a pure function of the spec and the fleet.
//!
//! Deterministic: the selected endpoints are ordered by node name; a `--canary N` takes the
//! first N online ones (then offline ones, if too few are online), `--canary-nodes` exactly
//! those. Every later wave is a cumulative target over the whole selected fleet `n` (canary
//! included): `ceil(n × p)` endpoints reached, and at least one more than the wave before
//! while any remain — so no wave is empty, the last reaches everyone, and a canary as large
//! as the fleet leaves no other wave.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::spec::{Canary, Percent, RolloutSpec, Waves};

/// An endpoint as the server knows it when the rollout starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Endpoint {
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub online: bool,
    /// The revision of this config the endpoint has applied (0: none).
    pub applied_rev: u64,
    /// Its own last-known-good revision: where a rollback returns it (0: the file as the
    /// agent first found it).
    pub last_known_good: u64,
}

/// Whether a wave is the canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WaveKind {
    Canary,
    Wave,
}

/// One wave of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlannedWave {
    pub kind: WaveKind,
    /// Endpoints reached once this wave is done, counting earlier waves.
    pub cumulative: usize,
    /// This wave's endpoints, by node name.
    pub nodes: Vec<String>,
    /// Failures this wave tolerates (`--max-failures` over its size).
    pub allowed_failures: usize,
}

/// The waves, and the endpoints the selector left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Plan {
    pub waves: Vec<PlannedWave>,
    /// Selected endpoints, by node.
    pub selected: usize,
    pub not_selected: Vec<String>,
}

impl Plan {
    /// The wave a node is in.
    pub fn wave_of(&self, node: &str) -> Option<usize> {
        self.waves
            .iter()
            .position(|w| w.nodes.iter().any(|n| n == node))
    }
}

/// A plan that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    #[error(
        "--canary-nodes names {node}, which the selector does not select (or no such endpoint); pick selected nodes or widen --select"
    )]
    CanaryNotSelected { node: String },
    #[error("endpoint {node} is listed twice; endpoints must be unique by node")]
    DuplicateNode { node: String },
}

/// Whether an endpoint's labels match every pair of the selector.
pub fn selected(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The waves for `spec` over `endpoints`.
pub fn plan(spec: &RolloutSpec, endpoints: &[Endpoint]) -> Result<Plan, PlanError> {
    let mut seen = BTreeSet::new();
    for e in endpoints {
        if !seen.insert(e.node.as_str()) {
            return Err(PlanError::DuplicateNode {
                node: e.node.clone(),
            });
        }
    }
    let mut chosen: Vec<&Endpoint> = Vec::new();
    let mut not_selected = Vec::new();
    for e in endpoints {
        if selected(&spec.selector, &e.labels) {
            chosen.push(e);
        } else {
            not_selected.push(e.node.clone());
        }
    }
    chosen.sort_by(|a, b| a.node.cmp(&b.node));
    not_selected.sort();
    let n = chosen.len();

    let canary: Vec<String> = match &spec.canary {
        Canary::None => Vec::new(),
        Canary::Count(c) => {
            let c = (*c as usize).min(n);
            let online = chosen.iter().filter(|e| e.online);
            let offline = chosen.iter().filter(|e| !e.online);
            let mut picked: Vec<String> = online
                .chain(offline)
                .take(c)
                .map(|e| e.node.clone())
                .collect();
            picked.sort();
            picked
        }
        Canary::Nodes(nodes) => {
            for node in nodes {
                if !chosen.iter().any(|e| &e.node == node) {
                    return Err(PlanError::CanaryNotSelected { node: node.clone() });
                }
            }
            let mut picked = nodes.clone();
            picked.sort();
            picked
        }
    };
    let in_canary: BTreeSet<&str> = canary.iter().map(String::as_str).collect();
    let rest: Vec<String> = chosen
        .iter()
        .filter(|e| !in_canary.contains(e.node.as_str()))
        .map(|e| e.node.clone())
        .collect();

    let mut waves = Vec::new();
    let mut reached = canary.len();
    if !canary.is_empty() {
        waves.push(PlannedWave {
            kind: WaveKind::Canary,
            cumulative: reached,
            allowed_failures: spec.max_failures.allowed(canary.len()),
            nodes: canary,
        });
    }
    let mut rest = rest.into_iter();
    for target in targets(&spec.waves, n, reached) {
        if reached >= n {
            break;
        }
        let next = target.max(reached + 1).min(n);
        let nodes: Vec<String> = rest.by_ref().take(next - reached).collect();
        reached = next;
        waves.push(PlannedWave {
            kind: WaveKind::Wave,
            cumulative: reached,
            allowed_failures: spec.max_failures.allowed(nodes.len()),
            nodes,
        });
    }
    Ok(Plan {
        waves,
        selected: n,
        not_selected,
    })
}

/// The cumulative endpoint counts the waves aim at, ending with `n`. The caller raises each
/// to at least one more than reached and stops at `n`.
fn targets(waves: &Waves, n: usize, canary: usize) -> Vec<usize> {
    let mut out = Vec::new();
    match waves {
        Waves::Steps(steps) => out.extend(steps.iter().map(|p| p.of_ceil(n))),
        Waves::Linear(step) => {
            let mut p = 0u32;
            while p < Percent::ALL.0 && step.0 > 0 {
                p = (p + step.0).min(Percent::ALL.0);
                out.push(Percent(p).of_ceil(n));
            }
        }
        Waves::Exponential { factor } => {
            let mut at = canary.max(1);
            if canary == 0 {
                out.push(1);
            }
            while at < n {
                let grown = (at as u128 * u128::from(*factor)).div_ceil(100) as usize;
                at = grown.max(at + 1).min(n);
                out.push(at);
            }
        }
    }
    out.push(n);
    out
}
