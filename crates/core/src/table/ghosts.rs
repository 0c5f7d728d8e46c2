//! Ghosts and the safe bypass: leases whose holder cannot be alive are reclaimed at once, and an
//! operator can break a lock — freeze, revoke, advance the fence, audit — in one step.
//!
//! A holder is known dead when its node comes back with a new boot id, or when a process on its
//! own node (same node name and boot id) *and in its own PID namespace* proves its pid is gone
//! or now belongs to a process with another start time — node name and boot id are shared by
//! every PID namespace of a machine, and from another namespace a live holder's pid looks gone.
//! The table cannot look at `/proc` itself (it does no IO); the server's probe and the CLI do,
//! and report here.

use super::{LockTable, holds::require_text};
use crate::audit::{AuditKind, AuditRecord};
use crate::effect::{Effect, Effects};
use crate::error::{BreakError, EndCause, InvalidRequest, ReportError};
use crate::hold::HoldView;
use crate::ids::{FenceToken, LeaseId};
use crate::record::Mutation;
use crate::resource::validate_resource;
use crate::table::PlaceHold;
use crate::time::Now;
use crate::view::HolderView;

/// Evidence that a lease's holder process is gone, from a process on the holder's node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadProcess {
    /// The lease whose holder died.
    pub lease: LeaseId,
    /// The holder's pid, as recorded on the lease.
    pub pid: u32,
    /// The holder's start time, as recorded on the lease.
    pub start_time: u64,
}

/// Where a liveness verdict was reached: the node, its current boot, and the PID namespace
/// whose `/proc` was read (`None` if the reporter could not name it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vantage<'a> {
    /// The node's name.
    pub node: &'a str,
    /// The node's current boot id.
    pub boot_id: &'a str,
    /// The reporter's PID namespace (`/proc/self/ns/pid`, e.g. `pid:[4026531836]`).
    pub pid_ns: Option<&'a str>,
}

/// What a break did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakOutcome {
    /// The leases revoked, as they were just before.
    pub revoked: Vec<HolderView>,
    /// The fence after the break: every token below it is dead.
    pub fence: FenceToken,
    /// The freeze placed with the break, if any.
    pub hold: Option<HoldView>,
}

/// What a dead holder's report reclaimed ([`LockTable::report_dead`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reclaimed {
    /// The dead holder's lease, as it was just before.
    pub holder: HolderView,
    /// Leases the reporter's node held under an older boot, reclaimed first: a report's boot id
    /// is news of its node's boot ([`LockTable::observe_boot`]).
    pub ghosts: Vec<LeaseId>,
}

/// What a liveness report did ([`LockTable::report_liveness`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LivenessReport {
    /// Every lease the report ended, in the order it ended them: the node's leases from older
    /// boots, and the holders it proved dead.
    pub reclaimed: Vec<LeaseId>,
    /// The evidence it refused, with why.
    pub refused: Vec<ReportError>,
}

/// Checks who a liveness report says it comes from: a node, its boot id and a reporter, none
/// empty. A report's boot id is news of its node's boot ([`LockTable::observe_boot`]), so an
/// empty one would reclaim every lease of the node as a ghost of an older boot: check before
/// anything is taken from the report.
pub fn validate_reporter(
    node: &str,
    boot_id: &str,
    reported_by: &str,
) -> Result<(), InvalidRequest> {
    require_text("node", node)?;
    require_text("boot_id", boot_id)?;
    require_text("reported_by", reported_by)
}

impl LockTable {
    /// A request arrived from `node` running under `boot_id`. If the node's leases were granted
    /// under another boot id, the node rebooted and their holders cannot be alive: they are
    /// reclaimed now. Returns the leases it reclaimed, in the order it ended them.
    pub fn observe_boot(
        &mut self,
        node: &str,
        boot_id: &str,
        now: Now,
        fx: &mut Effects,
    ) -> Vec<LeaseId> {
        let mut reclaimed = Vec::new();
        self.reclaim_older_boots(node, boot_id, now, fx, &mut reclaimed);
        reclaimed
    }

    /// [`observe_boot`](Self::observe_boot), adding the leases it reclaims to `reclaimed`.
    fn reclaim_older_boots(
        &mut self,
        node: &str,
        boot_id: &str,
        now: Now,
        fx: &mut Effects,
        reclaimed: &mut Vec<LeaseId>,
    ) {
        // The common case — a request from a node with no lease of an older boot — allocates
        // nothing (acquire asks on every call).
        if !self
            .nodes
            .get(node)
            .is_some_and(|known| known.iter().any(|(boot, _)| &**boot != boot_id))
        {
            return;
        }
        let cause = EndCause::NodeRebooted {
            new_boot_id: boot_id.to_string(),
        };
        // Ending a ghost hands its slot on, possibly to a waiter queued under the old boot: that
        // grant is a ghost too, so look again until only leases of `boot_id` are left.
        loop {
            let Some(known) = self.nodes.get(node) else {
                return;
            };
            let mut ghosts: Vec<LeaseId> = known
                .iter()
                .filter(|(boot, _)| &***boot != boot_id)
                .flat_map(|(_, boot)| boot.leases.iter().copied())
                .collect();
            if ghosts.is_empty() {
                return;
            }
            ghosts.sort();
            for id in ghosts {
                if self.end_lease(id, cause.clone(), now, fx).is_some() {
                    reclaimed.push(id);
                }
            }
        }
    }

    /// A process at `from` (a node, booted as its boot id, reading `/proc` in its PID namespace)
    /// reports a lease's holder dead. Accepted only from the holder's own node, boot and PID
    /// namespace — a holder that recorded no namespace is never judged by pid — and only about
    /// the holder's exact process incarnation; the lease is then reclaimed at once.
    ///
    /// The report is news of its node's boot too, so the node's leases from older boots are
    /// reclaimed first — even when the evidence is then refused. [`report_liveness`] says
    /// which leases a report ended in every case.
    ///
    /// [`report_liveness`]: Self::report_liveness
    pub fn report_dead(
        &mut self,
        from: Vantage<'_>,
        reported_by: &str,
        dead: DeadProcess,
        now: Now,
        fx: &mut Effects,
    ) -> Result<Reclaimed, ReportError> {
        let mut ghosts = Vec::new();
        let holder = self.judge_dead(from, reported_by, dead, now, fx, &mut ghosts)?;
        // The holder's own lease went last.
        ghosts.pop();
        Ok(Reclaimed { holder, ghosts })
    }

    /// A liveness report from `from`: its boot id first (the node's leases from older boots
    /// are reclaimed), then each dead holder ([`report_dead`](Self::report_dead)). Returns
    /// every lease it ended and every piece of evidence it refused.
    pub fn report_liveness(
        &mut self,
        from: Vantage<'_>,
        reported_by: &str,
        dead: impl IntoIterator<Item = DeadProcess>,
        now: Now,
        fx: &mut Effects,
    ) -> LivenessReport {
        let mut report = LivenessReport::default();
        self.reclaim_older_boots(from.node, from.boot_id, now, fx, &mut report.reclaimed);
        for evidence in dead {
            if let Err(refused) =
                self.judge_dead(from, reported_by, evidence, now, fx, &mut report.reclaimed)
            {
                report.refused.push(refused);
            }
        }
        report
    }

    /// [`report_dead`](Self::report_dead), adding every lease it ends to `reclaimed` (the dead
    /// holder's last).
    fn judge_dead(
        &mut self,
        from: Vantage<'_>,
        reported_by: &str,
        dead: DeadProcess,
        now: Now,
        fx: &mut Effects,
        reclaimed: &mut Vec<LeaseId>,
    ) -> Result<HolderView, ReportError> {
        validate_reporter(from.node, from.boot_id, reported_by)?;
        self.advance(now, fx);
        self.reclaim_older_boots(from.node, from.boot_id, now, fx, reclaimed);
        let lease = dead.lease;
        let Some(l) = self.leases.get(&lease) else {
            return Err(ReportError::Lease(self.ended_error(lease)));
        };
        if *l.origin.node != *from.node || *l.origin.boot_id != *from.boot_id {
            return Err(ReportError::NotSameNode {
                lease,
                owner_node: l.origin.node.to_string(),
            });
        }
        match (l.origin.pid_ns.as_deref(), from.pid_ns) {
            (Some(holder), Some(reporter)) if holder == reporter => {}
            (holder, reporter) => {
                return Err(ReportError::NotSamePidNamespace {
                    lease,
                    pid: l.pid,
                    holder_pid_ns: holder.map(str::to_string),
                    reporter_pid_ns: reporter.map(str::to_string),
                });
            }
        }
        if l.pid != dead.pid || l.start_time != dead.start_time {
            return Err(ReportError::WrongProcess {
                lease,
                pid: l.pid,
                start_time: l.start_time,
            });
        }
        let view = self.holder_view(l, now);
        let cause = EndCause::ProcessDied {
            reported_by: reported_by.to_string(),
        };
        self.end_lease(lease, cause, now, fx);
        reclaimed.push(lease);
        Ok(view)
    }

    /// The live leases held on `node` under `boot_id` in PID namespace `pid_ns`, as (lease,
    /// pid, start time): what a prober there should check. Holders in other namespaces, or
    /// with none recorded, are not its to judge.
    pub fn local_leases(&self, node: &str, boot_id: &str, pid_ns: &str) -> Vec<DeadProcess> {
        let Some(known) = self.nodes.get(node).and_then(|n| n.get(boot_id)) else {
            return Vec::new();
        };
        let mut out: Vec<DeadProcess> = known
            .leases
            .iter()
            .filter_map(|id| self.leases.get(id))
            .filter(|l| l.origin.pid_ns.as_deref() == Some(pid_ns))
            .map(|l| DeadProcess {
                lease: l.id,
                pid: l.pid,
                start_time: l.start_time,
            })
            .collect();
        out.sort_by_key(|d| d.lease);
        out
    }

    /// Breaks the lock on `resource`: in one step, freezes it for `freeze_ms` (if non-zero) so
    /// nothing re-grabs it mid-operation, revokes the current lease (or only `lease`), advances
    /// the fence so the old holder's writes bounce, and records who did it and why.
    // One argument per field of the operator's command; a request struct would be churn for the
    // callers (server, CLI) with nothing to gain in a sans-IO core.
    #[allow(clippy::too_many_arguments)]
    pub fn break_lock(
        &mut self,
        resource: &str,
        lease: Option<LeaseId>,
        operator: &str,
        reason: &str,
        freeze_ms: u64,
        now: Now,
        fx: &mut Effects,
    ) -> Result<BreakOutcome, BreakError> {
        validate_resource(resource)?;
        require_text("operator", operator)?;
        require_text("reason", reason)?;
        if freeze_ms > self.config.max_hold_ms || (freeze_ms > 0 && freeze_ms < 1_000) {
            return Err(InvalidRequest::new(
                "freeze_ms",
                format!(
                    "must be 0 or between 1000 and {} ms (got {freeze_ms})",
                    self.config.max_hold_ms
                ),
            )
            .into());
        }
        self.advance(now, fx);
        let holders: Vec<LeaseId> = self
            .resources
            .get(resource)
            .map(|r| r.holders.as_slice().to_vec())
            .unwrap_or_default();
        let victims: Vec<LeaseId> = match lease {
            Some(id) => holders.into_iter().filter(|h| *h == id).collect(),
            None => holders,
        };
        if victims.is_empty() {
            return Err(BreakError::NotHeld {
                resource: resource.to_string(),
                lease,
            });
        }
        // Freeze first, so the slots freed below are not handed to the queue.
        let hold = (freeze_ms > 0).then(|| {
            self.add_hold(
                PlaceHold {
                    resource: resource.to_string(),
                    operator: operator.to_string(),
                    reason: format!("break: {reason}"),
                    duration_ms: freeze_ms,
                    require_ack: false,
                },
                now,
                fx,
            )
        });
        // Advance the fence before revoking: without a freeze, a freed slot goes straight to the
        // next waiter, and its token must be above the fence or fenced writers would refuse it.
        self.last_seq += 1;
        let fence = FenceToken(self.last_seq);
        fx.push(Effect::Persist(Mutation::FenceHighWater(self.last_seq)));
        let cause = EndCause::Broken {
            by: operator.to_string(),
            reason: reason.to_string(),
        };
        let mut revoked = Vec::new();
        for id in victims {
            if let Some(l) = self.leases.get(&id) {
                revoked.push(self.holder_view(l, now));
            }
            self.end_lease(id, cause.clone(), now, fx);
        }
        self.audit(
            AuditRecord {
                lease,
                token: Some(fence),
                operator: Some(operator.to_string()),
                reason: Some(reason.to_string()),
                hold: hold.as_ref().map(|h| h.record.hold),
                ..AuditRecord::new(resource, AuditKind::Broke)
            },
            now,
            fx,
        );
        Ok(BreakOutcome {
            revoked,
            fence,
            hold,
        })
    }
}
