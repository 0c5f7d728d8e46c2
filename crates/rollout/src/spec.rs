//! What a rollout is asked to do: [`RolloutSpec`] and its parts.
//!
//! Every value here is already checked: the CLI syntaxes are parsed by [`crate::parse`], and
//! [`RolloutSpec::validate`] refuses combinations that cannot run (a hold point nobody can
//! acknowledge, waves that never reach 100 %).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A percentage in hundredths of a percent (basis points): `10%` is 1,000, `0.5%` is 50,
/// `100%` is 10,000. Integer, so wave and budget arithmetic is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Percent(pub u32);

impl Percent {
    /// All of it.
    pub const ALL: Percent = Percent(10_000);

    /// `ceil(n × self)`: how many of `n` endpoints a cumulative wave reaches. Rounding up means
    /// a wave with a non-zero percentage is never empty while endpoints remain.
    pub fn of_ceil(self, n: usize) -> usize {
        let scaled = n as u128 * u128::from(self.0);
        scaled.div_ceil(10_000) as usize
    }

    /// `floor(n × self)`: how many failures of `n` a percentage budget tolerates. Rounding
    /// down means a tolerance is never larger than asked.
    pub fn of_floor(self, n: usize) -> usize {
        (n as u128 * u128::from(self.0) / 10_000) as usize
    }
}

impl std::fmt::Display for Percent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (whole, frac) = (self.0 / 100, self.0 % 100);
        match frac {
            0 => write!(f, "{whole}%"),
            x if x % 10 == 0 => write!(f, "{whole}.{}%", x / 10),
            x => write!(f, "{whole}.{x:02}%"),
        }
    }
}

/// The first wave: nobody, a count of endpoints, or named nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Canary {
    None,
    /// `--canary 3`: the first N endpoints by node name, online ones first.
    Count(u32),
    /// `--canary-nodes a,b,c`: exactly these (each must be selected).
    Nodes(Vec<String>),
}

/// How the waves after the canary grow. Percentages are cumulative, of the whole selected
/// fleet (canary included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Waves {
    /// `--waves 10%,50%,100%`: strictly increasing, the last one 100 %.
    Steps(Vec<Percent>),
    /// `--linear 20%`: 20 %, 40 %, … 100 %.
    Linear(Percent),
    /// `--exponential 2x`: each wave reaches `factor ×` the endpoints reached before it
    /// (starting from the canary's size, or 1). Factor in hundredths: 200 is `2x`.
    Exponential { factor: u32 },
}

/// How many failed endpoints a wave tolerates. A wave fails when its failures are MORE than
/// the allowance: exactly at it still passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    /// `--max-failures 2`.
    Count(u32),
    /// `--max-failures 5%`: `floor(wave size × p)` failures.
    Percent(Percent),
}

impl Budget {
    /// The failures a wave of `wave_size` endpoints tolerates.
    pub fn allowed(self, wave_size: usize) -> usize {
        match self {
            Budget::Count(n) => n as usize,
            Budget::Percent(p) => p.of_floor(wave_size),
        }
    }
}

/// Where the rollout stops for acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HoldAfter {
    None,
    /// After the canary wave passes.
    Canary,
    /// After every wave but the last passes.
    EachWave,
}

/// What a failed wave does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Every touched endpoint back to its own last-known-good revision.
    Rollback,
    /// Stop, and place a FROZEN hold on the config with the reason.
    Freeze,
    /// Wait for a person (resume re-checks; abort ends).
    Pause,
}

/// An update window: endpoints with `label` (equal to `value`, when given; every endpoint
/// when there is no label) are updated only between `start_min` and `end_min` minutes after
/// midnight UTC. `end < start` spans midnight; `start == end` is refused at parse. An
/// endpoint that several windows match may be updated inside any of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Window {
    pub label: Option<String>,
    pub value: Option<String>,
    pub start_min: u16,
    pub end_min: u16,
}

const MINUTE_MS: u64 = 60_000;
const DAY_MIN: u64 = 1_440;

impl Window {
    /// Whether this window's rule applies to an endpoint with these labels.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let Some(label) = &self.label else {
            return true;
        };
        match (labels.get(label), &self.value) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(v), Some(want)) => v == want,
        }
    }

    /// Whether `now_ms` (wall clock, ms since the epoch, UTC) is inside the window.
    pub fn contains(&self, now_ms: u64) -> bool {
        let m = (now_ms / MINUTE_MS) % DAY_MIN;
        let (s, e) = (u64::from(self.start_min), u64::from(self.end_min));
        if s <= e {
            s <= m && m < e
        } else {
            m >= s || m < e
        }
    }

    /// The next instant at or after `now_ms` when the window is open.
    pub fn next_open_ms(&self, now_ms: u64) -> u64 {
        if self.contains(now_ms) {
            return now_ms;
        }
        let day_start = now_ms - now_ms % (DAY_MIN * MINUTE_MS);
        let today = day_start + u64::from(self.start_min) * MINUTE_MS;
        if today > now_ms {
            today
        } else {
            today + DAY_MIN * MINUTE_MS
        }
    }
}

/// A comparison in a metric gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Comparison {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
}

impl Comparison {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Lt => value < threshold,
            Comparison::Le => value <= threshold,
            Comparison::Gt => value > threshold,
            Comparison::Ge => value >= threshold,
        }
    }
}

/// A health gate beyond the apply state (which every wave checks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// `--gate 'error_rate < 0.01'` over agent-reported metrics; evaluate with
    /// [`crate::gate::evaluate_metric`].
    Metric {
        metric: String,
        op: Comparison,
        threshold: f64,
    },
    /// `--gate 'prom:QUERY < 0.01'`: a Prometheus instant query the driver runs at the end of
    /// the bake; every series it returns is a sample checked against the threshold, and no
    /// series at all is no data. Only its verdict reaches the planner.
    Prometheus {
        /// `prom:QUERY`, as the gate's results and status name it.
        name: String,
        query: String,
        op: Comparison,
        threshold: f64,
    },
}

impl Gate {
    /// The name a [`crate::Event::GateResult`] carries for this gate.
    pub fn name(&self) -> &str {
        match self {
            Gate::Metric { metric, .. } => metric,
            Gate::Prometheus { name, .. } => name,
        }
    }
}

/// A rollout request, parsed and validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutSpec {
    /// The config's name.
    pub config: String,
    /// The revision rolled out.
    pub rev: u64,
    /// The revision is a draft: it is promoted as the last step, after the last wave passed.
    /// When it is not (it is the config's current revision already), the planner pins every
    /// endpoint not yet reached to its own last-known-good at start.
    pub draft: bool,
    /// The principal that started it (its own approval never counts).
    pub starter: String,
    /// Label pairs an endpoint must all have to be selected (empty: every endpoint).
    pub selector: BTreeMap<String, String>,
    pub canary: Canary,
    pub waves: Waves,
    /// How long a wave's gates observe it after every endpoint reported, ms.
    pub bake_ms: u64,
    pub max_failures: Budget,
    pub hold_after: HoldAfter,
    /// Distinct principals (the starter excluded) that must approve each hold point.
    pub approvals: u32,
    pub on_failure: OnFailure,
    pub windows: Vec<Window>,
    /// How long an endpoint may stay silent after it was sent the revision, and how long gate
    /// results may lag the end of the bake, ms. Past it the wave is inconclusive.
    pub deadline_ms: u64,
    /// Skips windows and bake; never validation, gates, budgets or hold points.
    pub urgent: bool,
    pub gates: Vec<Gate>,
    /// A gate verdict (or a wave's apply state) backed by fewer samples is inconclusive.
    pub min_samples: u32,
    /// No data at all is inconclusive (otherwise it passes, by explicit choice).
    pub must_have_data: bool,
}

/// A spec that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    #[error("--hold-after needs --approvals of at least 1 (a second person acknowledges a hold)")]
    HoldWithoutApprovals,
    #[error(
        "--approvals {approvals} has no hold point to approve; add --hold-after canary or each-wave"
    )]
    ApprovalsWithoutHold { approvals: u32 },
    #[error("--hold-after canary needs a canary (--canary N or --canary-nodes)")]
    HoldAfterCanaryWithoutCanary,
    #[error("--waves must increase strictly and end at 100% (got {got})")]
    WavesNotIncreasing { got: String },
    #[error("--linear must be more than 0%")]
    ZeroLinear,
    #[error("--exponential must grow by more than 1x")]
    FactorTooSmall,
    #[error("--canary 0 is no canary; leave it out")]
    ZeroCanary,
    #[error("--deadline must be more than 0")]
    ZeroDeadline,
    #[error("revision 0 does not exist; revisions count from 1")]
    ZeroRevision,
}

impl RolloutSpec {
    /// A spec with the defaults: no canary, one wave of 100 %, no bake, no failures tolerated,
    /// no hold, rollback on failure, a 30-minute deadline, one sample, must-have-data.
    pub fn new(config: &str, rev: u64, starter: &str) -> RolloutSpec {
        RolloutSpec {
            config: config.to_owned(),
            rev,
            draft: false,
            starter: starter.to_owned(),
            selector: BTreeMap::new(),
            canary: Canary::None,
            waves: Waves::Steps(vec![Percent::ALL]),
            bake_ms: 0,
            max_failures: Budget::Count(0),
            hold_after: HoldAfter::None,
            approvals: 0,
            on_failure: OnFailure::Rollback,
            windows: Vec::new(),
            deadline_ms: 30 * 60_000,
            urgent: false,
            gates: Vec::new(),
            min_samples: 1,
            must_have_data: true,
        }
    }

    /// Refuses what cannot run.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.rev == 0 {
            return Err(SpecError::ZeroRevision);
        }
        if self.deadline_ms == 0 {
            return Err(SpecError::ZeroDeadline);
        }
        match (self.hold_after, self.approvals) {
            (HoldAfter::None, 0) => {}
            (HoldAfter::None, approvals) => {
                return Err(SpecError::ApprovalsWithoutHold { approvals });
            }
            (_, 0) => return Err(SpecError::HoldWithoutApprovals),
            _ => {}
        }
        if self.hold_after == HoldAfter::Canary && self.canary == Canary::None {
            return Err(SpecError::HoldAfterCanaryWithoutCanary);
        }
        if self.canary == Canary::Count(0) {
            return Err(SpecError::ZeroCanary);
        }
        match &self.waves {
            Waves::Steps(steps) => {
                let increasing = steps.windows(2).all(|w| w[0] < w[1]);
                let ends = steps.last() == Some(&Percent::ALL);
                let positive = steps.first().is_some_and(|p| p.0 > 0);
                if !(increasing && ends && positive) {
                    let got = steps.iter().map(|p| p.to_string()).collect::<Vec<_>>();
                    return Err(SpecError::WavesNotIncreasing { got: got.join(",") });
                }
            }
            Waves::Linear(p) if p.0 == 0 => return Err(SpecError::ZeroLinear),
            Waves::Exponential { factor } if *factor <= 100 => {
                return Err(SpecError::FactorTooSmall);
            }
            _ => {}
        }
        Ok(())
    }
}
