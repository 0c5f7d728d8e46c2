//! Bodies of the rollouts API (`/v1/rollouts`): one revision of one config rolled out to the
//! endpoints a selector picks — a canary, then waves — gated on the endpoints' health, with
//! hold points a second operator approves, and rollback, freeze or pause on failure.
//!
//! | route | body → answer | permission |
//! |---|---|---|
//! | `POST /v1/rollouts` | [`StartRolloutRequest`] → [`RolloutView`] (201: queued or started) | operate |
//! | `POST /v1/rollouts/plan` | [`StartRolloutRequest`] → [`RolloutPlan`] (a dry run: nothing is stored) | read |
//! | `GET /v1/rollouts?config=NAME&all=true` | → [`RolloutList`] (active and queued ones; `all`: ended ones too) | read |
//! | `GET /v1/rollouts/{id}` | → [`RolloutView`] | read |
//! | `GET /v1/rollouts/{id}/events` | server-sent events, `rollout` → [`RolloutView`] on each change, the last when it ends | read |
//! | `POST /v1/rollouts/{id}/approve` | — → [`RolloutView`] | operate |
//! | `POST /v1/rollouts/{id}/pause` | — → [`RolloutView`] | operate |
//! | `POST /v1/rollouts/{id}/resume` | — → [`RolloutView`] | operate |
//! | `POST /v1/rollouts/{id}/abort` | [`AbortRolloutRequest`] → [`RolloutView`] | operate |
//! | `POST /v1/rollouts/{id}/cancel` | — → [`RolloutView`] (a queued rollout only) | operate |
//!
//! The principal of an approval, a pause, a resume or an abort is the request's token; the
//! starter's own approval never counts, and one principal counts once per hold point.
//!
//! The flags' values travel as the CLI's text (`"10%,50%,100%"`, `"60s"`, `"5%"`) and are
//! parsed by [`StartRolloutRequest::to_spec`] on the server — one parser, so a bad value gets
//! the same error (naming the flag) from the CLI and from any other client.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use locksmith_rollout::parse::{self, ParseError};
pub use locksmith_rollout::{
    Budget, Canary, Comparison, Gate, HoldAfter, Landing, NodeStatus, OnFailure, Outcome,
    OutcomeKind, PauseReason, Percent, Phase, PlannedWave, RolloutSpec, SpecError, State, WaveKind,
    Waves, Window,
};

/// `POST /v1/rollouts` (and `/v1/rollouts/plan`): roll revision `rev` of `config` out.
///
/// Every field but `config` and `rev` has the CLI's default when left out: no canary, one
/// wave of 100 %, no bake, no failure tolerated, no hold point, `--on-failure rollback`,
/// a 30-minute deadline, one sample, data required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StartRolloutRequest {
    /// The config.
    pub config: String,
    /// The revision to roll out (a draft's revision is allowed: it is promoted as the last
    /// step, after the last wave passed).
    pub rev: u64,
    /// `--select role=drone,site=hangar-2`: every pair must match; empty: every endpoint that
    /// applies the config.
    #[serde(default)]
    pub selector: String,
    /// `--canary 3`: the first N selected endpoints (online ones first), by node name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    /// `--canary-nodes a,b,c`: exactly these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_nodes: Option<String>,
    /// `--waves 10%,50%,100%`: cumulative shares of the selected endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waves: Option<String>,
    /// `--linear 20%`: 20 %, 40 %, … 100 %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear: Option<String>,
    /// `--exponential 2x`: each wave twice the one before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exponential: Option<String>,
    /// `--bake 60s`: how long the gates observe a wave after its endpoints reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<String>,
    /// `--max-failures 0 | 5%`: failures each wave tolerates (a share rounds down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<String>,
    /// `--hold-after canary | each-wave`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_after: Option<String>,
    /// `--approvals 2`: distinct operators (the starter excluded) each hold point needs.
    #[serde(default)]
    pub approvals: u32,
    /// `--on-failure rollback | freeze | pause`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<String>,
    /// `--window [LABEL[=VALUE]@]HH:MM-HH:MM` (UTC), once per window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<String>,
    /// `--deadline 30m`: how long a sent endpoint may stay silent, and gate results lag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// `--urgent`: skips windows and bake, never validation, gates, budgets or hold points.
    #[serde(default)]
    pub urgent: bool,
    /// `--gate 'error_rate < 0.01'` (agent-reported metric) or `--gate 'prom:QUERY < 0.01'`
    /// (a Prometheus query; the server needs `--prometheus-url`), once per gate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<String>,
    /// `--min-samples N`: a gate (or a wave's apply state) backed by fewer is inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u32>,
    /// `--allow-no-data`: a gate with no data at all passes instead of pausing.
    #[serde(default)]
    pub allow_no_data: bool,
}

/// Why a [`StartRolloutRequest`] does not make a spec. Each names the flag and what it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// A value does not parse.
    Parse(ParseError),
    /// The values parse but cannot run together.
    Spec(SpecError),
    /// Two flags that exclude each other.
    Conflict(&'static str),
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Parse(e) => e.fmt(f),
            RequestError::Spec(e) => e.fmt(f),
            RequestError::Conflict(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for RequestError {}

impl StartRolloutRequest {
    /// The spec this request asks for, started by `starter`; validated.
    pub fn to_spec(&self, starter: &str) -> Result<RolloutSpec, RequestError> {
        let p = RequestError::Parse;
        let mut spec = RolloutSpec::new(&self.config, self.rev, starter);
        if !self.selector.trim().is_empty() {
            spec.selector = parse::parse_selector(&self.selector).map_err(p)?;
        }
        spec.canary = match (&self.canary, &self.canary_nodes) {
            (Some(_), Some(_)) => {
                return Err(RequestError::Conflict(
                    "--canary and --canary-nodes exclude each other; give one",
                ));
            }
            (Some(n), None) => parse::parse_canary_count(n).map_err(p)?,
            (None, Some(nodes)) => parse::parse_canary_nodes(nodes).map_err(p)?,
            (None, None) => Canary::None,
        };
        spec.waves = match (&self.waves, &self.linear, &self.exponential) {
            (None, None, None) => spec.waves,
            (Some(w), None, None) => parse::parse_waves(w).map_err(p)?,
            (None, Some(l), None) => parse::parse_linear(l).map_err(p)?,
            (None, None, Some(x)) => parse::parse_exponential(x).map_err(p)?,
            _ => {
                return Err(RequestError::Conflict(
                    "--waves, --linear and --exponential exclude each other; give one",
                ));
            }
        };
        if let Some(bake) = &self.bake {
            spec.bake_ms = parse::parse_duration_ms("--bake", bake).map_err(p)?;
        }
        if let Some(budget) = &self.max_failures {
            spec.max_failures = parse::parse_budget(budget).map_err(p)?;
        }
        if let Some(hold) = &self.hold_after {
            spec.hold_after = parse::parse_hold_after(hold).map_err(p)?;
        }
        spec.approvals = self.approvals;
        if let Some(on) = &self.on_failure {
            spec.on_failure = parse::parse_on_failure(on).map_err(p)?;
        }
        spec.windows = self
            .windows
            .iter()
            .map(|w| parse::parse_window(w))
            .collect::<Result<_, _>>()
            .map_err(p)?;
        if let Some(deadline) = &self.deadline {
            spec.deadline_ms = parse::parse_duration_ms("--deadline", deadline).map_err(p)?;
        }
        spec.urgent = self.urgent;
        spec.gates = self
            .gates
            .iter()
            .map(|g| parse::parse_gate(g))
            .collect::<Result<_, _>>()
            .map_err(p)?;
        if let Some(min) = self.min_samples {
            spec.min_samples = min;
        }
        spec.must_have_data = !self.allow_no_data;
        spec.validate().map_err(RequestError::Spec)?;
        Ok(spec)
    }
}

/// `POST /v1/rollouts/{id}/abort`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AbortRolloutRequest {
    /// Return every touched endpoint to its own last-known-good. Without it, endpoints
    /// confirmed on the new revision stay on it and the others go back.
    #[serde(default)]
    pub rollback: bool,
}

/// Where a rollout is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RolloutPhase {
    /// Waiting behind another rollout of the config (or for its lock).
    Queued,
    /// Holds the config's lock and runs (including paused and awaiting approval).
    Running,
    /// Ended: succeeded, rolled back, frozen or aborted (see `outcome`).
    Ended,
    /// Cancelled while queued; it never started.
    Cancelled,
}

/// Commit → applied latency over a set of endpoints: from the step that set an endpoint's
/// desired revision (durable) to its `applied` report reaching the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Latency {
    /// Endpoints measured.
    pub count: u64,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

/// One wave's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaveView {
    /// 0-based; the canary, when there is one, is wave 0.
    pub index: usize,
    pub kind: WaveKind,
    /// Its endpoints.
    pub size: usize,
    /// Failures it tolerates.
    pub allowed_failures: usize,
    pub applied: usize,
    pub failed: usize,
    /// Offline when sent (or gone before answering): reported apart, never failures.
    pub offline: usize,
    /// Outside their update window.
    pub waiting_window: usize,
    /// Restoring or restored to their last-known-good.
    pub restored: usize,
    /// Not started, or sent and not answered yet.
    pub pending: usize,
    /// Commit → applied over this wave's endpoints that applied it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
}

/// One endpoint's part in a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutEndpoint {
    pub node: String,
    /// Its wave.
    pub wave: usize,
    pub status: NodeStatus,
    /// The revision the rollout wants it on now (its override), if it set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_rev: Option<u64>,
    /// When its desired revision was set, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at_ms: Option<u64>,
    /// When it reported the rolled-out revision applied, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at_ms: Option<u64>,
    /// Why it failed or refused the rolled-out revision (a failed hook, a `lock mismatch`),
    /// kept after it was restored; else its agent's last error about the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A rollout, as `rollout status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutView {
    /// `ro-N`.
    pub id: String,
    pub config: String,
    /// The revision asked for.
    pub rev: u64,
    /// The revision sent to endpoints: `rev`'s content re-written as a draft under the
    /// rollout's own lease when it started (so it carries the rollout's fencing token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_rev: Option<u64>,
    /// Who started it.
    pub starter: String,
    pub created_ms: u64,
    pub phase: RolloutPhase,
    /// The planner's state (absent while queued or cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    /// The state in words: `queued behind ro-3`, `applying wave 2 of 4`, `paused: …`.
    pub summary: String,
    /// While queued: the rollouts of the config ahead of it, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queued_behind: Vec<String>,
    /// The lease on `configs/NAME` it holds, while it holds one, and its fencing token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
    /// While awaiting approval: who approved this hold point so far, and how many it needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approved_by: Vec<String>,
    pub approvals_needed: u32,
    pub spec: RolloutSpec,
    pub waves: Vec<WaveView>,
    /// Every selected endpoint, by node.
    pub endpoints: Vec<RolloutEndpoint>,
    /// The selector matched them, and the plan left them out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_selected: Vec<String>,
    /// Commit → applied over every endpoint that applied the revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// How it ended, once it did: every selected endpoint with the revision it is left on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// When it ended, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
}

/// `GET /v1/rollouts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutList {
    /// Newest first.
    pub rollouts: Vec<RolloutView>,
}

/// One wave of a dry run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanWave {
    pub index: usize,
    pub kind: WaveKind,
    pub allowed_failures: usize,
    /// Its endpoints, by node, with the revision each runs now.
    pub endpoints: Vec<PlanEndpoint>,
}

/// An endpoint in a dry run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanEndpoint {
    pub node: String,
    pub online: bool,
    /// The revision it has applied (0: none yet).
    pub applied_rev: u64,
}

/// `POST /v1/rollouts/plan`: what a rollout would do, nothing stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutPlan {
    pub spec: RolloutSpec,
    pub waves: Vec<PlanWave>,
    pub not_selected: Vec<String>,
    /// The unified diff each endpoint would get, keyed by the revision it runs now
    /// (`"3"`: from revision 3 to the rolled-out one); endpoints on the same revision share one.
    pub diffs: BTreeMap<String, String>,
    /// The rollouts of the config it would queue behind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queued_behind: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> StartRolloutRequest {
        StartRolloutRequest {
            config: "aim.conf".into(),
            rev: 4,
            ..Default::default()
        }
    }

    #[test]
    fn the_defaults_make_the_crates_default_spec() {
        let spec = req().to_spec("alice").expect("valid");
        assert_eq!(spec, RolloutSpec::new("aim.conf", 4, "alice"));
    }

    #[test]
    fn every_flag_reaches_the_spec() {
        let r = StartRolloutRequest {
            selector: "role=drone".into(),
            canary: Some("3".into()),
            waves: Some("10%,50%,100%".into()),
            bake: Some("60s".into()),
            max_failures: Some("5%".into()),
            hold_after: Some("canary".into()),
            approvals: 2,
            on_failure: Some("freeze".into()),
            windows: vec!["02:00-04:00".into()],
            deadline: Some("30m".into()),
            urgent: true,
            gates: vec!["error_rate < 0.01".into()],
            min_samples: Some(3),
            allow_no_data: true,
            ..req()
        };
        let spec = r.to_spec("alice").expect("valid");
        assert_eq!(spec.canary, Canary::Count(3));
        assert_eq!(spec.bake_ms, 60_000);
        assert_eq!(spec.approvals, 2);
        assert_eq!(spec.on_failure, OnFailure::Freeze);
        assert_eq!(spec.windows.len(), 1);
        assert!(spec.urgent && !spec.must_have_data);
        assert_eq!(spec.min_samples, 3);
        assert_eq!(spec.gates.len(), 1);
    }

    #[test]
    fn conflicting_flags_and_bad_values_name_the_flag() {
        let both = StartRolloutRequest {
            waves: Some("50%,100%".into()),
            linear: Some("20%".into()),
            ..req()
        };
        let err = both.to_spec("a").expect_err("conflict").to_string();
        assert!(err.contains("--linear"), "{err}");
        let bad = StartRolloutRequest {
            bake: Some("soon".into()),
            ..req()
        };
        assert!(
            bad.to_spec("a")
                .expect_err("bad")
                .to_string()
                .contains("--bake")
        );
        let hold = StartRolloutRequest {
            hold_after: Some("each-wave".into()),
            ..req()
        };
        assert!(matches!(
            hold.to_spec("a"),
            Err(RequestError::Spec(SpecError::HoldWithoutApprovals))
        ));
    }
}
