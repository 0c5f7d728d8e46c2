//! Tri-state gate verdicts: pass, fail, or inconclusive — and inconclusive never promotes.

use serde::{Deserialize, Serialize};

use crate::spec::Comparison;

/// A gate's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Too few samples, no data when data is required, a value that is not a number, or no
    /// answer in time. Pauses the rollout.
    Inconclusive,
}

/// The verdict a gate's result stands for once the sample rule is applied, in this order:
/// no samples at all is inconclusive when `must_have_data`, and passes when it is not (the
/// operator said so explicitly — whatever the gate answered, since it had nothing to judge);
/// fewer than `min_samples` samples is inconclusive, a `Fail` too (too little to judge either
/// way: pause, and a person looks); otherwise the verdict stands.
pub fn effective(
    verdict: Verdict,
    samples: u64,
    min_samples: u32,
    must_have_data: bool,
) -> Verdict {
    if samples == 0 {
        return if must_have_data {
            Verdict::Inconclusive
        } else {
            Verdict::Pass
        };
    }
    if samples < u64::from(min_samples) {
        return Verdict::Inconclusive;
    }
    verdict
}

/// A metric threshold over agent-reported samples (one per endpoint, or several): it passes
/// when EVERY sample meets the threshold and fails when any does not — after the sample rule
/// of [`effective`]; a NaN sample makes it inconclusive.
pub fn evaluate_metric(
    op: Comparison,
    threshold: f64,
    samples: &[f64],
    min_samples: u32,
    must_have_data: bool,
) -> Verdict {
    if samples.iter().any(|s| s.is_nan()) {
        return Verdict::Inconclusive;
    }
    let verdict = if samples.iter().all(|s| op.holds(*s, threshold)) {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    effective(verdict, samples.len() as u64, min_samples, must_have_data)
}
