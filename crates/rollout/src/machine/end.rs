//! How a rollout ends: success, rollback, freeze, abort — each leaving every endpoint on a
//! revision it can name.

use super::Rollout;
use super::types::{Command, Landing, NodeStatus, Outcome, OutcomeKind, State};

impl Rollout {
    /// Last wave passed: promote the draft, drop the overrides (the config's current revision
    /// is now the rolled-out one), release the lock.
    pub(super) fn succeed(&mut self, cmds: &mut Vec<Command>) {
        if self.spec.draft {
            cmds.push(Command::PromoteDraft { rev: self.spec.rev });
        }
        let overridden: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.issued.is_empty() || n.pinned.is_some())
            .map(|(name, _)| name.clone())
            .collect();
        if !overridden.is_empty() {
            cmds.push(Command::ClearOverrides { nodes: overridden });
        }
        self.state = State::Succeeded;
        self.end(OutcomeKind::Succeeded, None, true, cmds);
    }

    /// Every touched endpoint (told the revision) back to its OWN last-known-good; the ones
    /// never told are left alone.
    pub(super) fn rollback(&mut self, why: String, now_ms: u64, cmds: &mut Vec<Command>) {
        self.restore_touched(|_| true, now_ms, cmds);
        self.state = State::RollingBack {
            why,
            deadline_ms: now_ms.saturating_add(self.spec.deadline_ms),
        };
    }

    pub(super) fn finish_rollback(&mut self, cmds: &mut Vec<Command>) {
        let why = match &self.state {
            State::RollingBack { why, .. } => why.clone(),
            _ => String::new(),
        };
        self.state = State::Failed { why: why.clone() };
        self.end(OutcomeKind::RolledBack, Some(why), true, cmds);
    }

    /// Stop where it is and freeze the config with the reason. In-flight endpoints keep the
    /// revision they were told; the outcome lists which are confirmed.
    pub(super) fn freeze(&mut self, why: String, cmds: &mut Vec<Command>) {
        cmds.push(Command::Freeze {
            reason: format!(
                "rollout of {} revision {} stopped: {why}",
                self.spec.config, self.spec.rev
            ),
        });
        self.state = State::Frozen {
            reason: why.clone(),
        };
        self.end(OutcomeKind::Frozen, Some(why), true, cmds);
    }

    /// End now. With `rollback`, every touched endpoint goes back to its last-known-good;
    /// without, the ones confirmed on the revision stay and every other touched one goes
    /// back — so each ends on a revision the outcome names.
    pub(super) fn abort(&mut self, now_ms: u64, rollback: bool, cmds: &mut Vec<Command>) {
        let held_lock = self.state != State::Pending;
        if rollback {
            self.restore_touched(|_| true, now_ms, cmds);
        } else {
            self.restore_touched(|s| *s != NodeStatus::Applied, now_ms, cmds);
        }
        self.state = State::Aborted;
        self.end(OutcomeKind::Aborted, None, held_lock, cmds);
    }

    /// `Restore` each touched node that `which` picks, once.
    fn restore_touched(
        &mut self,
        which: impl Fn(&NodeStatus) -> bool,
        now_ms: u64,
        cmds: &mut Vec<Command>,
    ) {
        let rev = self.spec.rev;
        for (name, node) in self.nodes.iter_mut() {
            let touched = node.issued.first() == Some(&rev) && node.issued.len() == 1;
            if !touched || !which(&node.status) {
                continue;
            }
            if node.lkg == rev {
                // Its last-known-good is this revision: it is already where it belongs.
                continue;
            }
            node.issued.push(node.lkg);
            node.sent_at_ms = now_ms;
            // Only a node that reported failing is known to be back already (the agent
            // restored its last-known-good itself); any other may have applied meanwhile.
            let back =
                matches!(node.status, NodeStatus::Failed { .. }) && node.applied_rev == node.lkg;
            node.status = if back {
                NodeStatus::Restored
            } else {
                NodeStatus::Restoring
            };
            cmds.push(Command::Restore {
                node: name.clone(),
                rev: node.lkg,
            });
        }
    }

    fn end(
        &mut self,
        kind: OutcomeKind,
        why: Option<String>,
        release: bool,
        cmds: &mut Vec<Command>,
    ) {
        if release {
            cmds.push(Command::ReleaseLock);
        }
        cmds.push(Command::Finished(Outcome {
            kind,
            why,
            endpoints: self.landings(),
        }));
    }

    /// Where every selected endpoint is left: the last revision it was told (or pinned to,
    /// or runs), and whether it reported running it.
    pub fn landings(&self) -> Vec<Landing> {
        let succeeded = self.state == State::Succeeded;
        self.nodes
            .iter()
            .map(|(name, node)| {
                let rev = match (node.issued.last(), node.pinned) {
                    _ if succeeded => self.spec.rev,
                    (Some(&told), _) => told,
                    (None, Some(pin)) => pin,
                    (None, None) => node.applied_rev,
                };
                Landing {
                    node: name.clone(),
                    rev,
                    confirmed: node.applied_rev == rev,
                    status: node.status.clone(),
                }
            })
            .collect()
    }
}
