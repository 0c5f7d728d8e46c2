//! Waves: apply, bake, hold — and the rule that a wave is passed only on every gate's `pass`.

use super::Rollout;
use super::types::{Command, NodeStatus, PauseReason, Phase, Refusal, State};
use crate::gate::{Verdict, effective};
use crate::spec::OnFailure;

impl Rollout {
    pub(super) fn enter_wave(&mut self, wave: usize, now_ms: u64, cmds: &mut Vec<Command>) {
        self.state = State::Applying { wave };
        let names = self.plan.waves[wave].nodes.clone();
        self.dispatch(&names, now_ms, cmds);
    }

    /// Moves the rollout forward as far as what it knows allows. Runs after every event.
    pub(super) fn step(&mut self, now_ms: u64, cmds: &mut Vec<Command>) {
        // Each pass either settles or changes the state; a state is entered at most once per
        // wave, so this ends.
        for _ in 0..=(4 * self.plan.waves.len() + 4) {
            let before = self.state.clone();
            self.step_once(now_ms, cmds);
            if self.state == before {
                return;
            }
        }
    }

    fn step_once(&mut self, now_ms: u64, cmds: &mut Vec<Command>) {
        if self.active() {
            // Endpoints whose window opened (or that came back) in waves already reached.
            let reached = self.current_wave();
            let upto = if self.passed_any() { reached } else { 0 };
            self.catch_up_current(reached, now_ms, cmds);
            if upto > 0 {
                self.catch_up(upto, now_ms, cmds);
            }
            if let Some(why) = self.over_budget() {
                return self.fail_wave(why, now_ms, cmds);
            }
        }
        match self.state.clone() {
            State::Applying { wave } | State::WaitingWindow { wave } => {
                self.check_apply(wave, now_ms, cmds);
            }
            State::Baking {
                wave,
                from_ms: _,
                until_ms,
            } => self.check_bake(wave, until_ms, now_ms, cmds),
            State::AwaitingApproval { wave }
                if self.waves[wave].approvals.len() >= self.spec.approvals as usize =>
            {
                self.enter_wave(wave + 1, now_ms, cmds);
            }
            State::RollingBack { deadline_ms, .. } => {
                let waiting = self
                    .nodes
                    .values()
                    .any(|n| n.online && n.status == NodeStatus::Restoring);
                if !waiting || now_ms >= deadline_ms {
                    self.finish_rollback(cmds);
                }
            }
            _ => {}
        }
    }

    /// The current wave's own endpoints whose window has opened.
    fn catch_up_current(&mut self, wave: usize, now_ms: u64, cmds: &mut Vec<Command>) {
        let names: Vec<String> = self.plan.waves[wave]
            .nodes
            .iter()
            .filter(|n| {
                self.nodes.get(*n).is_some_and(|node| {
                    node.status == NodeStatus::WaitingWindow && self.in_window(node, now_ms)
                })
            })
            .cloned()
            .collect();
        self.dispatch(&names, now_ms, cmds);
    }

    /// The first reached wave whose failures exceed its allowance.
    fn over_budget(&self) -> Option<String> {
        let reached = self.current_wave();
        for (i, wave) in self.plan.waves.iter().enumerate().take(reached + 1) {
            let failed: Vec<&String> = wave
                .nodes
                .iter()
                .filter(|n| {
                    self.nodes
                        .get(*n)
                        .is_some_and(|n| matches!(n.status, NodeStatus::Failed { .. }))
                })
                .collect();
            if failed.len() > wave.allowed_failures {
                let names: Vec<&str> = failed.iter().map(|s| s.as_str()).collect();
                return Some(format!(
                    "wave {}: {} of {} endpoints failed ({}), {} allowed",
                    i + 1,
                    failed.len(),
                    wave.nodes.len(),
                    names.join(", "),
                    wave.allowed_failures
                ));
            }
        }
        None
    }

    fn check_apply(&mut self, wave: usize, now_ms: u64, cmds: &mut Vec<Command>) {
        let nodes: Vec<&super::Node> = self.plan.waves[wave]
            .nodes
            .iter()
            .filter_map(|n| self.nodes.get(n))
            .collect();
        let silent = self.silent_nodes(wave, now_ms);
        if !silent.is_empty() {
            // Silence is not success: never promote on a timeout.
            return self.pause(Phase::Apply, PauseReason::Silent { nodes: silent });
        }
        let in_flight = nodes
            .iter()
            .any(|n| matches!(n.status, NodeStatus::Sent | NodeStatus::Deferred));
        let windowed = nodes.iter().any(|n| n.status == NodeStatus::WaitingWindow);
        if in_flight || windowed {
            self.state = if in_flight {
                State::Applying { wave }
            } else {
                State::WaitingWindow { wave }
            };
            return;
        }
        let applied = nodes
            .iter()
            .filter(|n| n.status == NodeStatus::Applied)
            .count() as u64;
        // The apply state is a gate too: a wave nobody applied (all offline) has no data.
        if effective(Verdict::Pass, applied, 0, self.spec.must_have_data) != Verdict::Pass {
            return self.pause(Phase::Apply, PauseReason::NoData);
        }
        self.start_bake(wave, now_ms, cmds);
    }

    /// The wave's endpoints sent the revision that have not answered within the deadline.
    fn silent_nodes(&self, wave: usize, now_ms: u64) -> Vec<String> {
        self.plan.waves[wave]
            .nodes
            .iter()
            .filter(|n| {
                self.nodes.get(*n).is_some_and(|node| {
                    matches!(node.status, NodeStatus::Sent | NodeStatus::Deferred)
                        && now_ms >= node.sent_at_ms.saturating_add(self.spec.deadline_ms)
                })
            })
            .cloned()
            .collect()
    }

    /// Whether an endpoint of the wave was sent the revision and has not answered yet.
    fn in_flight(&self, wave: usize) -> bool {
        self.plan.waves[wave].nodes.iter().any(|n| {
            self.nodes
                .get(n)
                .is_some_and(|node| matches!(node.status, NodeStatus::Sent | NodeStatus::Deferred))
        })
    }

    fn start_bake(&mut self, wave: usize, now_ms: u64, cmds: &mut Vec<Command>) {
        let bake = if self.spec.urgent {
            0
        } else {
            self.spec.bake_ms
        };
        let until_ms = now_ms.saturating_add(bake);
        self.waves[wave].results.clear();
        self.state = State::Baking {
            wave,
            from_ms: now_ms,
            until_ms,
        };
        if !self.spec.gates.is_empty() {
            cmds.push(Command::RunGate {
                wave,
                gates: self
                    .spec
                    .gates
                    .iter()
                    .map(|g| g.name().to_owned())
                    .collect(),
                from_ms: now_ms,
                until_ms,
            });
        }
    }

    fn check_bake(&mut self, wave: usize, until_ms: u64, now_ms: u64, cmds: &mut Vec<Command>) {
        let (min, must) = (self.spec.min_samples, self.spec.must_have_data);
        let mut missing = Vec::new();
        let mut inconclusive = Vec::new();
        for gate in &self.spec.gates {
            match self.waves[wave].results.get(gate.name()) {
                None => missing.push(gate.name().to_owned()),
                Some(&(verdict, samples)) => match effective(verdict, samples, min, must) {
                    Verdict::Fail => {
                        let why = format!(
                            "wave {}: gate {} failed ({samples} samples)",
                            wave + 1,
                            gate.name()
                        );
                        return self.fail_wave(why, now_ms, cmds);
                    }
                    Verdict::Inconclusive => inconclusive.push(gate.name().to_owned()),
                    Verdict::Pass => {}
                },
            }
        }
        // An endpoint of the wave sent the revision during the bake (back online) must answer
        // too before the wave passes; silent past its deadline, it pauses even mid-bake.
        let silent = self.silent_nodes(wave, now_ms);
        if !silent.is_empty() {
            return self.pause(Phase::Apply, PauseReason::Silent { nodes: silent });
        }
        if now_ms < until_ms || self.in_flight(wave) {
            return;
        }
        if !missing.is_empty() {
            if now_ms >= until_ms.saturating_add(self.spec.deadline_ms) {
                let reason = PauseReason::GateInconclusive { gates: missing };
                self.pause(Phase::Bake, reason);
            }
            return;
        }
        if !inconclusive.is_empty() {
            let reason = PauseReason::GateInconclusive {
                gates: inconclusive,
            };
            return self.pause(Phase::Bake, reason);
        }
        self.pass_wave(wave, now_ms, cmds);
    }

    /// Every gate said pass: the next wave, a hold point, or the end.
    fn pass_wave(&mut self, wave: usize, now_ms: u64, cmds: &mut Vec<Command>) {
        self.waves[wave].passed = true;
        self.catch_up(wave, now_ms, cmds);
        if wave + 1 == self.plan.waves.len() {
            return self.succeed(cmds);
        }
        if self.hold_after(wave) {
            self.state = State::AwaitingApproval { wave };
            cmds.push(Command::WaitForApproval {
                wave,
                needed: self.spec.approvals,
            });
            return;
        }
        self.enter_wave(wave + 1, now_ms, cmds);
    }

    pub(super) fn fail_wave(&mut self, why: String, now_ms: u64, cmds: &mut Vec<Command>) {
        match self.spec.on_failure {
            OnFailure::Rollback => self.rollback(why, now_ms, cmds),
            OnFailure::Freeze => self.freeze(why, cmds),
            OnFailure::Pause => {
                let phase = match self.state {
                    State::Baking { .. } => Phase::Bake,
                    State::AwaitingApproval { .. } => Phase::Approval,
                    _ => Phase::Apply,
                };
                self.pause(phase, PauseReason::Failed { why });
            }
        }
    }

    /// `Resume`: back to the phase it paused in, with fresh deadlines; a bake starts over and
    /// its gates run again. Nothing is passed by resuming: the wave's checks run again.
    pub(super) fn resume(&mut self, now_ms: u64, cmds: &mut Vec<Command>) -> Result<(), Refusal> {
        let State::Paused { wave, phase, .. } = self.state.clone() else {
            return Err(Refusal::NotPaused {
                state: super::state_name(&self.state),
            });
        };
        for name in &self.plan.waves[wave].nodes {
            if let Some(node) = self.nodes.get_mut(name)
                && matches!(node.status, NodeStatus::Sent | NodeStatus::Deferred)
            {
                node.sent_at_ms = now_ms;
            }
        }
        match phase {
            Phase::Apply => {
                self.state = State::Applying { wave };
                self.catch_up(wave, now_ms, cmds);
            }
            Phase::Bake => self.start_bake(wave, now_ms, cmds),
            Phase::Approval => {
                self.state = State::AwaitingApproval { wave };
                cmds.push(Command::WaitForApproval {
                    wave,
                    needed: self.spec.approvals,
                });
            }
        }
        Ok(())
    }
}
