//! # locksmith-rollout
//!
//! The rollout planner: it rolls one revision of one config out to the endpoints a selector
//! picks — a canary, then waves — checking tri-state health gates after each, holding for
//! acknowledgement where asked, and rolling back, freezing or pausing on failure. It is a
//! sans-IO state machine like the lock table and the agent core: [`Rollout::handle`] takes
//! `now_ms` (wall clock, ms, UTC) and an [`Event`] and returns [`Command`]s; it reads no
//! clock, does no IO, and its whole state is one serde record ([`Rollout::to_record`]).
//!
//! ## Invariants
//!
//! Each is pinned by a test in `tests/` (the proptest model in `tests/model.rs` checks the
//! first four after every event, across a restore from the record at every event index):
//!
//! - a wave is passed only when every endpoint of it that was sent the revision answered,
//!   its failures are within its allowance, and EVERY gate's result is `pass` with enough
//!   samples: silence, missing results, too few samples and no data are inconclusive and
//!   pause; nothing is ever passed on a timeout, by a resume, or by an urgent rollout;
//! - a node is told a revision at most once, and in order: the rolled-out revision, then (on
//!   rollback or abort) its own last-known-good — never back to the new one; replaying from a
//!   persisted record issues nothing again for a node already told;
//! - a rollback (and an abort) touches only endpoints that were told the revision, and sends
//!   each to ITS OWN last-known-good, never "whatever is current";
//! - an offline endpoint is never counted as failed; when it is back it is sent the revision
//!   only if its wave is being applied or the revision has passed a gate;
//! - an approval counts once per principal per hold point, never the starter's own;
//! - outside its update window an endpoint is not sent anything, unless the rollout is urgent;
//! - every end lists every selected endpoint with the revision it is left on.
//!
//! See the crate README for the states, the gate semantics and the budget arithmetic.

pub mod gate;
pub mod machine;
pub mod parse;
pub mod plan;
pub mod spec;

pub use gate::{Verdict, evaluate_metric};
pub use machine::types::{
    Command, EndpointState, Event, Landing, NewError, NodeStatus, Outcome, OutcomeKind,
    PauseReason, Phase, Progress, RecordError, Refusal, ReportState, State,
};
pub use machine::{RECORD_VERSION, Rollout, state_name};
pub use parse::ParseError;
pub use plan::{Endpoint, Plan, PlanError, PlannedWave, WaveKind, plan};
pub use spec::{
    Budget, Canary, Comparison, Gate, HoldAfter, OnFailure, Percent, RolloutSpec, SpecError, Waves,
    Window,
};
