//! What goes in and out of a [`crate::Rollout`]: events, commands, states, refusals.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::gate::Verdict;

/// What an endpoint reported about the rolled-out config (the agent's report states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReportState {
    Applied,
    Failed,
    Refused,
    Deferred,
    ShadowOk,
    ShadowFailed,
}

/// Something that happened. The driver feeds these with `now_ms` (wall clock, ms, UTC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The rollout got the config's lock (it was `Pending` behind another one until now).
    Started,
    /// An agent's report for this config.
    Report {
        node: String,
        /// The revision the report is about.
        rev: u64,
        state: ReportState,
        /// The revision the endpoint has applied now.
        applied_rev: u64,
    },
    Online {
        node: String,
    },
    Offline {
        node: String,
    },
    /// One gate's verdict for a wave, over the bake asked by [`Command::RunGate`].
    GateResult {
        wave: usize,
        gate: String,
        verdict: Verdict,
        samples: u64,
    },
    Approval {
        principal: String,
    },
    Pause {
        principal: String,
    },
    /// Continue from where it paused. After `LockLost`, send only once the lock is held again.
    Resume {
        principal: String,
    },
    /// End now. `rollback`: every touched endpoint back to its last-known-good; otherwise
    /// endpoints confirmed on the revision stay and the others go back.
    Abort {
        principal: String,
        rollback: bool,
    },
    /// Time passed; deadlines, bake ends and windows are checked.
    Tick,
    /// The config lock's lease was lost: no command until resumed.
    LockLost,
}

/// Something the driver must do. Every command is idempotent: the planner issues a
/// `(node, revision)` at most once from one persisted state, and setting a node's desired
/// revision to the one it already has changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Override these nodes' desired revision of the config.
    SetDesired { rev: u64, nodes: Vec<String> },
    /// Keep these endpoints, which the rollout has not reached, on their own revision while
    /// the rolled-out revision is already the config's current one (`draft: false`).
    Pin { nodes: Vec<(String, u64)> },
    /// Return a touched endpoint to its own last-known-good revision (override to `rev`).
    Restore { node: String, rev: u64 },
    /// Drop the overrides: the config's current revision is what they should run now.
    ClearOverrides { nodes: Vec<String> },
    /// Place a FROZEN hold on `configs/NAME` with the reason.
    Freeze { reason: String },
    /// Evaluate the gates over `[from_ms, until_ms]` and send one `GateResult` per gate.
    RunGate {
        wave: usize,
        gates: Vec<String>,
        from_ms: u64,
        until_ms: u64,
    },
    /// The rollout holds after `wave` until `needed` distinct principals approve.
    WaitForApproval { wave: usize, needed: u32 },
    /// Promote the draft revision (after the last wave passed).
    PromoteDraft { rev: u64 },
    /// Release the config's lock.
    ReleaseLock,
    /// The state changed; show it.
    Progress(Progress),
    /// The rollout ended.
    Finished(Outcome),
}

/// Why a rollout is paused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    Operator {
        principal: String,
    },
    /// Endpoints sent the revision stayed silent (or deferred) past the deadline.
    Silent {
        nodes: Vec<String>,
    },
    /// No endpoint of the wave applied it (all offline) and data is required.
    NoData,
    /// A gate was inconclusive (too few samples, no data) or did not answer in time.
    GateInconclusive {
        gates: Vec<String>,
    },
    /// The wave failed and `--on-failure pause`.
    Failed {
        why: String,
    },
    LockLost,
}

/// Where a paused rollout goes back to on resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Apply,
    Bake,
    Approval,
}

/// The rollout's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Queued behind another rollout of the same config.
    Pending,
    /// The wave's endpoints are all outside their update windows.
    WaitingWindow {
        wave: usize,
    },
    Applying {
        wave: usize,
    },
    Baking {
        wave: usize,
        from_ms: u64,
        until_ms: u64,
    },
    AwaitingApproval {
        wave: usize,
    },
    Paused {
        wave: usize,
        phase: Phase,
        reason: PauseReason,
    },
    RollingBack {
        why: String,
        deadline_ms: u64,
    },
    Frozen {
        reason: String,
    },
    Aborted,
    Succeeded,
    Failed {
        why: String,
    },
}

impl State {
    /// No event changes it any more.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            State::Frozen { .. } | State::Aborted | State::Succeeded | State::Failed { .. }
        )
    }
}

/// One endpoint's part in the rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Its wave has not started.
    Planned,
    /// Its wave started; it is outside its update window.
    WaitingWindow,
    /// Its wave started while it was offline (or it went offline before it reported).
    Offline,
    /// Sent the revision; no answer yet.
    Sent,
    Deferred,
    Applied,
    Failed {
        refused: bool,
    },
    /// Sent back to its last-known-good; not confirmed yet.
    Restoring,
    Restored,
}

/// One endpoint's part in a rollout, as [`crate::Rollout::endpoints`] shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndpointState {
    pub node: String,
    pub wave: usize,
    pub status: NodeStatus,
    /// As the rollout last heard.
    pub online: bool,
    /// The revision it reported applied last (0: none).
    pub applied_rev: u64,
    /// Where a rollback returns it.
    pub last_known_good: u64,
    /// The revisions it was told, in order (the rolled-out one, then perhaps its
    /// last-known-good).
    pub told: Vec<u64>,
    /// When the last of them was sent, Unix ms.
    pub sent_at_ms: Option<u64>,
}

/// Where an endpoint is left when the rollout ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Landing {
    pub node: String,
    /// The revision it runs, or will run when it comes back or finishes applying.
    pub rev: u64,
    /// It reported running `rev`.
    pub confirmed: bool,
    pub status: NodeStatus,
}

/// How a rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    Succeeded,
    RolledBack,
    Frozen,
    Aborted,
}

/// How a rollout ended, and where every selected endpoint is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Outcome {
    pub kind: OutcomeKind,
    pub why: Option<String>,
    pub endpoints: Vec<Landing>,
}

/// A summary for `rollout status` and the event stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Progress {
    pub state: State,
    pub waves: usize,
    pub applied: usize,
    pub failed: usize,
    pub offline: usize,
    pub waiting_window: usize,
    pub pending: usize,
}

/// An operator event the rollout refuses; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error(
        "{principal} started this rollout; their own approval does not count — another operator must approve"
    )]
    ApprovalByStarter { principal: String },
    #[error(
        "{principal} already approved this hold point; approvals must come from distinct operators"
    )]
    DuplicateApproval { principal: String },
    #[error("the rollout is not waiting for approval (state: {state}); nothing to approve")]
    NotAwaitingApproval { state: String },
    #[error("the rollout is not paused (state: {state}); nothing to resume")]
    NotPaused { state: String },
    #[error("the rollout is already paused")]
    AlreadyPaused,
    #[error("the rollout has ended ({state}); it takes no more events")]
    Ended { state: String },
    #[error("the rollout is not started yet (pending behind another rollout of the config)")]
    NotStarted,
    #[error("the rollout has already started")]
    AlreadyStarted,
    #[error("gate result for wave {wave} ignored: the rollout is not baking that wave")]
    NotBaking { wave: usize },
    #[error("gate result for {gate:?} ignored: the rollout has no such gate")]
    UnknownGate { gate: String },
}

/// A rollout that cannot be created.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NewError {
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    #[error("the selector matches no endpoint; nothing to roll out — check --select")]
    NoEndpoints,
}

/// A record that does not restore.
#[derive(Debug, Error)]
#[error("rollout record does not decode: {0}")]
pub struct RecordError(pub String);
