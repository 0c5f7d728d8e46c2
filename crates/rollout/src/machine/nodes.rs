//! Endpoints: sending the revision (once per node and revision), their reports, and their
//! coming and going.

use super::types::{Command, NodeStatus, ReportState, State};
use super::{Node, Rollout};

impl Rollout {
    /// `Started`: pin the endpoints not reached yet when the revision is already current,
    /// then the first wave.
    pub(super) fn start(&mut self, now_ms: u64, cmds: &mut Vec<Command>) {
        if !self.spec.draft {
            let mut pins = Vec::new();
            for (name, node) in self.nodes.iter_mut() {
                if node.wave > 0 && node.pinned.is_none() {
                    node.pinned = Some(node.applied_rev);
                    pins.push((name.clone(), node.applied_rev));
                }
            }
            if !pins.is_empty() {
                cmds.push(Command::Pin { nodes: pins });
            }
        }
        self.enter_wave(0, now_ms, cmds);
    }

    /// Whether the node may be updated now: urgent, no window applies to it, or one of the
    /// windows that apply is open.
    pub(super) fn in_window(&self, node: &Node, now_ms: u64) -> bool {
        if self.spec.urgent {
            return true;
        }
        let mut applying = self
            .spec
            .windows
            .iter()
            .filter(|w| w.matches(&node.labels))
            .peekable();
        applying.peek().is_none() || applying.any(|w| w.contains(now_ms))
    }

    /// When one of the node's windows next opens.
    pub(super) fn window_opens(&self, node: &Node, now_ms: u64) -> u64 {
        self.spec
            .windows
            .iter()
            .filter(|w| w.matches(&node.labels))
            .map(|w| w.next_open_ms(now_ms))
            .min()
            .unwrap_or(now_ms)
    }

    /// Sends the revision to these nodes if they are online and inside a window; records
    /// why not otherwise. One `SetDesired` for all of them.
    pub(super) fn dispatch(&mut self, names: &[String], now_ms: u64, cmds: &mut Vec<Command>) {
        let rev = self.spec.rev;
        let mut sent = Vec::new();
        for name in names {
            let Some(node) = self.nodes.get(name) else {
                continue;
            };
            if !node.issued.is_empty() {
                continue;
            }
            let status = if !node.online {
                NodeStatus::Offline
            } else if !self.in_window(node, now_ms) {
                NodeStatus::WaitingWindow
            } else if node.applied_rev == rev {
                NodeStatus::Applied
            } else {
                NodeStatus::Sent
            };
            let Some(node) = self.nodes.get_mut(name) else {
                continue;
            };
            if matches!(status, NodeStatus::Sent | NodeStatus::Applied) {
                // Sent even to a node already on the revision: the override keeps it there.
                node.issued.push(rev);
                node.sent_at_ms = now_ms;
                sent.push(name.clone());
            }
            node.status = status;
        }
        if !sent.is_empty() {
            cmds.push(Command::SetDesired { rev, nodes: sent });
        }
    }

    /// The nodes of waves up to `upto` that were never sent the revision and could take it
    /// now (back online, or their window opened).
    pub(super) fn catch_up(&mut self, upto: usize, now_ms: u64, cmds: &mut Vec<Command>) {
        let names: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| {
                n.wave <= upto
                    && n.issued.is_empty()
                    && matches!(n.status, NodeStatus::Offline | NodeStatus::WaitingWindow)
                    && n.online
            })
            .map(|(name, _)| name.clone())
            .collect();
        let ready: Vec<String> = names
            .into_iter()
            .filter(|name| {
                self.nodes
                    .get(name)
                    .is_some_and(|n| self.in_window(n, now_ms))
            })
            .collect();
        self.dispatch(&ready, now_ms, cmds);
    }

    pub(super) fn on_report(
        &mut self,
        _now_ms: u64,
        name: &str,
        rev: u64,
        state: ReportState,
        applied_rev: u64,
    ) {
        let target_rev = self.spec.rev;
        let Some(node) = self.nodes.get_mut(name) else {
            return;
        };
        if matches!(state, ReportState::ShadowOk | ReportState::ShadowFailed) {
            return;
        }
        node.applied_rev = applied_rev;
        let Some(&told) = node.issued.last() else {
            return;
        };
        let restoring = told != target_rev || node.issued.len() > 1;
        if rev == told {
            node.status = match (state, restoring) {
                (ReportState::Applied, false) => NodeStatus::Applied,
                (ReportState::Applied, true) => NodeStatus::Restored,
                (ReportState::Failed, _) => NodeStatus::Failed { refused: false },
                (ReportState::Refused, _) => NodeStatus::Failed { refused: true },
                (ReportState::Deferred, _) => NodeStatus::Deferred,
                _ => node.status.clone(),
            };
        } else if restoring && applied_rev == told {
            node.status = NodeStatus::Restored;
        } else if !restoring && applied_rev == told && node.status == NodeStatus::Sent {
            node.status = NodeStatus::Applied;
        }
    }

    pub(super) fn on_online(
        &mut self,
        now_ms: u64,
        name: &str,
        online: bool,
        cmds: &mut Vec<Command>,
    ) {
        let Some(node) = self.nodes.get_mut(name) else {
            return;
        };
        node.online = online;
        if !online {
            // Gone before it answered: reported apart, never a failure; its override stands.
            if matches!(
                node.status,
                NodeStatus::Sent | NodeStatus::Deferred | NodeStatus::WaitingWindow
            ) {
                node.status = NodeStatus::Offline;
            }
            return;
        }
        if node.status != NodeStatus::Offline {
            return;
        }
        if let Some(&told) = node.issued.last() {
            // It was told before it went away: wait for its report again, afresh.
            node.status = if told == self.spec.rev && node.issued.len() == 1 {
                NodeStatus::Sent
            } else {
                NodeStatus::Restoring
            };
            node.sent_at_ms = now_ms;
            return;
        }
        // Never told: it takes the revision if its wave is being applied, or once the
        // revision has passed a gate (the newest that did) and its wave has been reached.
        let wave = node.wave;
        let current = self.current_wave();
        let eligible = match self.state {
            State::Applying { .. } | State::WaitingWindow { .. } => {
                wave == current || (wave < current && self.passed_any())
            }
            State::Baking { .. } | State::AwaitingApproval { .. } => {
                wave <= current && self.passed_any()
            }
            _ => false,
        };
        if eligible {
            self.dispatch(&[name.to_owned()], now_ms, cmds);
        }
    }

    /// Some wave's gates passed.
    pub(super) fn passed_any(&self) -> bool {
        self.waves.iter().any(|w| w.passed)
    }
}
