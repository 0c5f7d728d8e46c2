//! The rollout state machine: [`Rollout::handle`] takes `now_ms` and an [`Event`] and returns
//! the [`Command`]s to run. No IO, no clock; the whole state is one serde record.

mod end;
mod nodes;
pub mod types;
mod wave;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::gate::Verdict;
use crate::plan::{Endpoint, Plan, plan};
use crate::spec::{HoldAfter, RolloutSpec};
use types::{
    Command, EndpointState, Event, NewError, NodeStatus, PauseReason, Phase, Progress, RecordError,
    Refusal, State,
};

/// The record format's version; `from_record` refuses any other.
pub const RECORD_VERSION: u32 = 1;

/// One endpoint's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Node {
    pub wave: usize,
    pub labels: BTreeMap<String, String>,
    pub online: bool,
    pub applied_rev: u64,
    pub lkg: u64,
    /// Pinned to this revision at start (`draft: false`), if it was.
    pub pinned: Option<u64>,
    /// The revisions this node was told, in order: empty, `[rev]`, or `[rev, lkg]` (or
    /// `[lkg]` when an abort made the desired revision explicit). Never sent twice.
    pub issued: Vec<u64>,
    /// When the last one was sent (for the silence deadline).
    pub sent_at_ms: u64,
    pub status: NodeStatus,
}

/// A wave's gate results and approvals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct WaveTrack {
    pub results: BTreeMap<String, (Verdict, u64)>,
    pub approvals: BTreeSet<String>,
    pub passed: bool,
}

/// A rollout of one revision of one config over the endpoints its selector chose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub(crate) spec: RolloutSpec,
    pub(crate) plan: Plan,
    pub(crate) state: State,
    pub(crate) nodes: BTreeMap<String, Node>,
    pub(crate) waves: Vec<WaveTrack>,
}

#[derive(Serialize, Deserialize)]
struct Record {
    version: u32,
    rollout: Rollout,
}

impl Rollout {
    /// A rollout in `Pending` (it has not got the config lock yet); send [`Event::Started`]
    /// once it has. Refuses a spec that cannot run and a selector that selects nobody.
    pub fn new(spec: RolloutSpec, endpoints: &[Endpoint]) -> Result<Rollout, NewError> {
        spec.validate()?;
        let plan = plan(&spec, endpoints)?;
        if plan.selected == 0 {
            return Err(NewError::NoEndpoints);
        }
        let mut nodes = BTreeMap::new();
        for e in endpoints {
            if let Some(wave) = plan.wave_of(&e.node) {
                nodes.insert(
                    e.node.clone(),
                    Node {
                        wave,
                        labels: e.labels.clone(),
                        online: e.online,
                        applied_rev: e.applied_rev,
                        lkg: e.last_known_good,
                        pinned: None,
                        issued: Vec::new(),
                        sent_at_ms: 0,
                        status: NodeStatus::Planned,
                    },
                );
            }
        }
        let waves = vec![WaveTrack::default(); plan.waves.len()];
        Ok(Rollout {
            spec,
            plan,
            state: State::Pending,
            nodes,
            waves,
        })
    }

    pub fn spec(&self) -> &RolloutSpec {
        &self.spec
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Each selected node's status, by node.
    pub fn node_statuses(&self) -> Vec<(String, NodeStatus)> {
        self.nodes
            .iter()
            .map(|(n, node)| (n.clone(), node.status.clone()))
            .collect()
    }

    /// Every selected endpoint's part, by node.
    pub fn endpoints(&self) -> Vec<EndpointState> {
        self.nodes
            .iter()
            .map(|(n, node)| EndpointState {
                node: n.clone(),
                wave: node.wave,
                status: node.status.clone(),
                online: node.online,
                applied_rev: node.applied_rev,
                last_known_good: node.lkg,
                told: node.issued.clone(),
                sent_at_ms: (!node.issued.is_empty()).then_some(node.sent_at_ms),
            })
            .collect()
    }

    /// Whether the rollout believes `node` online (`None`: not selected).
    pub fn node_online(&self, node: &str) -> Option<bool> {
        self.nodes.get(node).map(|n| n.online)
    }

    /// The principals that approved hold point `wave` so far.
    pub fn approvals(&self, wave: usize) -> Vec<String> {
        self.waves
            .get(wave)
            .map(|w| w.approvals.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The whole state, to persist after every `handle` (in the same batch as what its
    /// commands change).
    pub fn to_record(&self) -> Vec<u8> {
        let record = Record {
            version: RECORD_VERSION,
            rollout: self.clone(),
        };
        // Serializing plain structs with string keys cannot fail.
        serde_json::to_vec(&record).unwrap_or_default()
    }

    /// The rollout a record holds.
    pub fn from_record(bytes: &[u8]) -> Result<Rollout, RecordError> {
        let record: Record =
            serde_json::from_slice(bytes).map_err(|e| RecordError(e.to_string()))?;
        if record.version != RECORD_VERSION {
            return Err(RecordError(format!(
                "version {} (this build reads {RECORD_VERSION})",
                record.version
            )));
        }
        Ok(record.rollout)
    }

    /// When to send the next [`Event::Tick`]: a silence deadline, a bake end, a gate-result
    /// deadline, a window opening, the end of a rollback's wait.
    pub fn next_deadline(&self, now_ms: u64) -> Option<u64> {
        let mut next: Option<u64> = None;
        let mut at = |t: u64| next = Some(next.map_or(t, |n| n.min(t)));
        match &self.state {
            State::Applying { wave } | State::WaitingWindow { wave } => {
                for node in self.nodes.values().filter(|n| n.wave == *wave) {
                    if matches!(node.status, NodeStatus::Sent | NodeStatus::Deferred) {
                        at(node.sent_at_ms.saturating_add(self.spec.deadline_ms));
                    }
                }
            }
            State::Baking { wave, until_ms, .. } => {
                let mut in_flight = false;
                for node in self.nodes.values().filter(|n| n.wave == *wave) {
                    if matches!(node.status, NodeStatus::Sent | NodeStatus::Deferred) {
                        in_flight = true;
                        at(node.sent_at_ms.saturating_add(self.spec.deadline_ms));
                    }
                }
                let judged = self
                    .spec
                    .gates
                    .iter()
                    .all(|g| self.waves[*wave].results.contains_key(g.name()));
                // The bake's end stays due once it has passed while the wave can be judged
                // (every gate answered, or none): a driver that ticks only what is due at the
                // moment it asks — the server's — would otherwise never end a bake without
                // gates. Otherwise the gates' results are awaited until the deadline; an
                // endpoint still in flight has its own deadline above (and its report ticks).
                if now_ms < *until_ms || (judged && !in_flight) {
                    at(*until_ms);
                } else {
                    at(until_ms.saturating_add(self.spec.deadline_ms));
                }
            }
            State::RollingBack { deadline_ms, .. } => at(*deadline_ms),
            _ => {}
        }
        if self.active() {
            for node in self.nodes.values() {
                if node.status == NodeStatus::WaitingWindow {
                    at(self.window_opens(node, now_ms));
                }
            }
        }
        next
    }

    /// A summary of where it is.
    pub fn progress(&self) -> Progress {
        let count =
            |f: &dyn Fn(&NodeStatus) -> bool| self.nodes.values().filter(|n| f(&n.status)).count();
        Progress {
            state: self.state.clone(),
            waves: self.plan.waves.len(),
            applied: count(&|s| *s == NodeStatus::Applied),
            failed: count(&|s| matches!(s, NodeStatus::Failed { .. })),
            offline: count(&|s| *s == NodeStatus::Offline),
            waiting_window: count(&|s| *s == NodeStatus::WaitingWindow),
            pending: count(&|s| {
                matches!(
                    s,
                    NodeStatus::Planned | NodeStatus::Sent | NodeStatus::Deferred
                )
            }),
        }
    }

    /// Feeds one event. An operator event the rollout cannot take is refused with a reason
    /// and changes nothing; an event about a node outside the rollout is ignored.
    pub fn handle(&mut self, now_ms: u64, event: Event) -> Result<Vec<Command>, Refusal> {
        if self.state.is_terminal() {
            return Err(Refusal::Ended {
                state: state_name(&self.state),
            });
        }
        let before = self.state.clone();
        let mut cmds = Vec::new();
        match event {
            Event::Started => {
                if self.state != State::Pending {
                    return Err(Refusal::AlreadyStarted);
                }
                self.start(now_ms, &mut cmds);
            }
            Event::Report {
                node,
                rev,
                state,
                applied_rev,
            } => self.on_report(now_ms, &node, rev, state, applied_rev),
            Event::Online { node } => self.on_online(now_ms, &node, true, &mut cmds),
            Event::Offline { node } => self.on_online(now_ms, &node, false, &mut cmds),
            Event::GateResult {
                wave,
                gate,
                verdict,
                samples,
            } => self.on_gate(wave, gate, verdict, samples)?,
            Event::Approval { principal } => self.on_approval(principal)?,
            Event::Pause { principal } => {
                self.pause_by_operator(principal)?;
            }
            Event::Resume { .. } => self.resume(now_ms, &mut cmds)?,
            Event::Abort { rollback, .. } => self.abort(now_ms, rollback, &mut cmds),
            Event::Tick => {}
            Event::LockLost => self.lock_lost(),
        }
        self.step(now_ms, &mut cmds);
        if self.state != before && !self.state.is_terminal() {
            cmds.push(Command::Progress(self.progress()));
        }
        Ok(cmds)
    }

    /// Running waves: neither pending, paused, rolling back nor ended.
    fn active(&self) -> bool {
        matches!(
            self.state,
            State::Applying { .. }
                | State::WaitingWindow { .. }
                | State::Baking { .. }
                | State::AwaitingApproval { .. }
        )
    }

    /// The wave the rollout is at (0 before it started).
    pub fn current_wave(&self) -> usize {
        match &self.state {
            State::WaitingWindow { wave }
            | State::Applying { wave }
            | State::Baking { wave, .. }
            | State::AwaitingApproval { wave }
            | State::Paused { wave, .. } => *wave,
            _ => 0,
        }
    }

    fn hold_after(&self, wave: usize) -> bool {
        match self.spec.hold_after {
            HoldAfter::None => false,
            HoldAfter::Canary => self.plan.waves[wave].kind == crate::plan::WaveKind::Canary,
            HoldAfter::EachWave => true,
        }
    }

    fn on_gate(
        &mut self,
        wave: usize,
        gate: String,
        verdict: Verdict,
        samples: u64,
    ) -> Result<(), Refusal> {
        let baking = matches!(self.state, State::Baking { wave: w, .. } if w == wave);
        if !baking {
            return Err(Refusal::NotBaking { wave });
        }
        if !self.spec.gates.iter().any(|g| g.name() == gate) {
            return Err(Refusal::UnknownGate { gate });
        }
        self.waves[wave].results.insert(gate, (verdict, samples));
        Ok(())
    }

    fn on_approval(&mut self, principal: String) -> Result<(), Refusal> {
        let State::AwaitingApproval { wave } = self.state else {
            return Err(Refusal::NotAwaitingApproval {
                state: state_name(&self.state),
            });
        };
        if principal == self.spec.starter {
            return Err(Refusal::ApprovalByStarter { principal });
        }
        if !self.waves[wave].approvals.insert(principal.clone()) {
            return Err(Refusal::DuplicateApproval { principal });
        }
        Ok(())
    }

    fn pause_by_operator(&mut self, principal: String) -> Result<(), Refusal> {
        let phase = match self.state {
            State::Pending => return Err(Refusal::NotStarted),
            State::Paused { .. } => return Err(Refusal::AlreadyPaused),
            State::RollingBack { .. } => {
                return Err(Refusal::NotPaused {
                    state: state_name(&self.state),
                });
            }
            State::Baking { .. } => Phase::Bake,
            State::AwaitingApproval { .. } => Phase::Approval,
            _ => Phase::Apply,
        };
        self.pause(phase, PauseReason::Operator { principal });
        Ok(())
    }

    fn lock_lost(&mut self) {
        let phase = match self.state {
            State::Baking { .. } => Phase::Bake,
            State::AwaitingApproval { .. } => Phase::Approval,
            State::Applying { .. } | State::WaitingWindow { .. } => Phase::Apply,
            State::Paused { phase, .. } => phase,
            // Pending holds no lock; a rollback's commands are already out.
            _ => return,
        };
        self.pause(phase, PauseReason::LockLost);
    }

    fn pause(&mut self, phase: Phase, reason: PauseReason) {
        self.state = State::Paused {
            wave: self.current_wave(),
            phase,
            reason,
        };
    }
}

/// A state's name, for messages: waves count from 1 there (the first wave, or the canary,
/// is "wave 1"), as people count them; the records and the API keep 0-based indexes.
pub fn state_name(state: &State) -> String {
    match state {
        State::Pending => "pending".into(),
        State::WaitingWindow { wave } => format!("waiting for a window (wave {})", wave + 1),
        State::Applying { wave } => format!("applying wave {}", wave + 1),
        State::Baking { wave, .. } => format!("baking wave {}", wave + 1),
        State::AwaitingApproval { wave } => {
            format!("awaiting approval after wave {}", wave + 1)
        }
        State::Paused { wave, .. } => format!("paused at wave {}", wave + 1),
        State::RollingBack { .. } => "rolling back".into(),
        State::Frozen { .. } => "frozen".into(),
        State::Aborted => "aborted".into(),
        State::Succeeded => "succeeded".into(),
        State::Failed { .. } => "failed".into(),
    }
}
