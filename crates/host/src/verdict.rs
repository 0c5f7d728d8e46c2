//! What this node can tell about a lock's holders: for each, is its process still alive?
//!
//! A holder is judged only from where its pid means something: its own node ([`Here`]), under
//! the node's current boot id, in the PID namespace the holder recorded. There its
//! `(pid, start time)` is looked up in `/proc`: a missing pid, or a pid now owned by a process
//! with another start time, proves the holder dead. A holder recorded under another boot id of
//! this node died with that boot. Holders on other nodes, in other PID namespaces of this one
//! (another container sharing its host name and boot id), or with no namespace recorded cannot
//! be judged from here: their pid means nothing in our `/proc`.
//!
//! The dead are then reported to the server ([`liveness_report`], `POST /v1/liveness`), which
//! reclaims their leases at once instead of one TTL later; [`record_answer`] notes on each
//! [`Check`] what came of it. The CLI (`why`, `locks`, `status`) and the endpoint agent send the
//! report and print the outcome their own way.

use locksmith_api::{DeadHolder, ErrorCode, LivenessReport, LivenessResponse};
use locksmith_core::{LeaseId, Owner, ResourceView, Vantage};
use serde::Serialize;

use crate::{IdentityError, Liveness, boot_id, hostname, liveness, pid_namespace};

/// This node, as the checks need it: where a verdict is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Here {
    /// Its name (`--node` or the host name).
    pub node: String,
    /// Its current boot id.
    pub boot_id: String,
    /// The PID namespace this process runs in (and whose `/proc` it reads), if it has one.
    pub pid_ns: Option<String>,
}

impl Here {
    /// Reads this node's boot id and PID namespace; `node` overrides the host name. The error
    /// says why holders cannot be checked (a `/proc` of another namespace is such a reason:
    /// pids read there mean nothing).
    pub fn detect(node: Option<&str>) -> Result<Here, IdentityError> {
        let node = match node {
            Some(n) => n.to_string(),
            None => hostname()?,
        };
        Ok(Here {
            node,
            boot_id: boot_id()?,
            pid_ns: pid_namespace()?,
        })
    }

    /// The same, as a liveness report names where it comes from.
    pub fn vantage(&self) -> Vantage<'_> {
        Vantage {
            node: &self.node,
            boot_id: &self.boot_id,
            pid_ns: self.pid_ns.as_deref(),
        }
    }

    /// What this node can tell about `owner`'s process (`/proc` is read only when the owner's
    /// pid is numbered in this process's own PID namespace).
    pub fn verdict(&self, owner: &Owner) -> Verdict {
        // Before the node check: a FleetLock client id may well equal a host name, and its
        // placeholder boot id would read as a reboot of this node.
        if locksmith_api::fleetlock::is_client(owner) {
            return Verdict::FleetLock;
        }
        if owner.node != self.node {
            return Verdict::Remote;
        }
        if owner.boot_id != self.boot_id {
            // The boot id is the machine's, whatever the namespace: a reboot ended every
            // process.
            return Verdict::Rebooted;
        }
        if owner.pid_ns.is_none() || owner.pid_ns != self.pid_ns {
            return Verdict::OtherPidNamespace {
                holder_pid_ns: owner.pid_ns.clone(),
            };
        }
        match liveness(owner.pid, owner.start_time) {
            Liveness::Alive => Verdict::Alive,
            Liveness::Gone => Verdict::Gone,
            Liveness::PidReused { now_started } => Verdict::PidReused { now_started },
            Liveness::Unknown(why) => Verdict::Unknown { why },
        }
    }
}

/// What this node can tell about one holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Verdict {
    /// Its process runs, with the start time it had when granted.
    Alive,
    /// Its process is gone.
    Gone,
    /// Its pid now belongs to another process (another start time): the holder is gone.
    PidReused {
        /// The start time of the process that has the pid now.
        now_started: u64,
    },
    /// It was granted under another boot of this node: it died with that boot.
    Rebooted,
    /// `/proc` (or this node's identity) could not be read: nothing can be concluded.
    Unknown {
        /// Why.
        why: String,
    },
    /// It runs on another node: only that node can check it.
    Remote,
    /// It is a FleetLock client, not a process: there is nothing to check.
    FleetLock,
    /// It runs on this node, but its pid is numbered in another PID namespace than ours (or in
    /// one it did not record): only a process in that namespace can check it.
    OtherPidNamespace {
        /// The holder's namespace, if recorded.
        holder_pid_ns: Option<String>,
    },
}

impl Verdict {
    /// True when the holder is known dead, so the server should be told.
    pub fn is_dead(&self) -> bool {
        matches!(
            self,
            Verdict::Gone | Verdict::PidReused { .. } | Verdict::Rebooted
        )
    }
}

/// What came of reporting a dead holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "detail")]
pub enum Reported {
    /// Nothing to report: the holder is alive, unknown or remote.
    NotNeeded,
    /// The server reclaimed the lease.
    Reclaimed,
    /// The lease had already ended (released or reclaimed meanwhile).
    AlreadyEnded,
    /// The server accepted the report but did not reclaim this lease.
    NotReclaimed,
    /// The server refused the report for this lease, with its message.
    Refused(String),
    /// The report could not be sent.
    Failed(String),
}

impl Reported {
    /// What the server's answer to a liveness report says of `lease`.
    pub fn from_answer(answer: &LivenessResponse, lease: LeaseId) -> Reported {
        if answer.reclaimed.contains(&lease) {
            return Reported::Reclaimed;
        }
        match answer.refused.iter().find(|r| r.lease == Some(lease)) {
            Some(r) if matches!(r.error, ErrorCode::LeaseExpired | ErrorCode::NotHolder) => {
                Reported::AlreadyEnded
            }
            Some(r) => Reported::Refused(r.message.clone()),
            None => Reported::NotReclaimed,
        }
    }
}

/// One holder, checked.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// The resource held.
    pub resource: String,
    /// The lease.
    pub lease: LeaseId,
    /// Its owner, as the lease records it.
    pub owner: Owner,
    /// What this node can tell.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// What came of reporting it.
    pub reported: Reported,
}

impl Check {
    /// True when the holder is dead and the server did not free its lease: an operator must act
    /// (or wait for the TTL).
    pub fn dead_but_held(&self) -> bool {
        self.verdict.is_dead()
            && matches!(
                self.reported,
                Reported::NotNeeded
                    | Reported::NotReclaimed
                    | Reported::Refused(_)
                    | Reported::Failed(_)
            )
    }

    /// True when this check freed the lock.
    pub fn reclaimed(&self) -> bool {
        self.reported == Reported::Reclaimed
    }
}

/// Checks every holder of `views` (`here` is this node, or why it could not be read: then
/// every verdict is [`Verdict::Unknown`]).
pub fn check(here: &Result<Here, String>, views: &[ResourceView]) -> Vec<Check> {
    views
        .iter()
        .flat_map(|v| v.holders.iter().map(move |h| (v, h)))
        .map(|(v, h)| Check {
            resource: v.resource.clone(),
            lease: h.lease,
            owner: h.owner.clone(),
            verdict: match here {
                Ok(here) => here.verdict(&h.owner),
                Err(why) => Verdict::Unknown {
                    why: format!("cannot read this node's identity: {why}"),
                },
            },
            reported: Reported::NotNeeded,
        })
        .collect()
}

/// True when some holder among `checks` is known dead: the server should be told.
pub fn any_dead(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.verdict.is_dead())
}

/// The liveness report that tells the server of the dead holders among `checks`, sent as
/// `reported_by` from `here`; `None` when none is dead.
pub fn liveness_report(
    here: &Here,
    reported_by: impl Into<String>,
    checks: &[Check],
) -> Option<LivenessReport> {
    if !any_dead(checks) {
        return None;
    }
    // Holders from an older boot need no entry: the report's boot id is what reclaims them.
    let dead = checks
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Gone | Verdict::PidReused { .. }))
        .map(|c| DeadHolder {
            lease: c.lease,
            pid: c.owner.pid,
            start_time: c.owner.start_time,
        })
        .collect();
    Some(LivenessReport {
        node: here.node.clone(),
        boot_id: here.boot_id.clone(),
        pid_ns: here.pid_ns.clone(),
        reported_by: reported_by.into(),
        dead,
    })
}

/// Notes on each dead holder among `checks` what the server's answer says of its lease.
pub fn record_answer(checks: &mut [Check], answer: &LivenessResponse) {
    for c in checks.iter_mut().filter(|c| c.verdict.is_dead()) {
        c.reported = Reported::from_answer(answer, c.lease);
    }
}

/// Notes on each dead holder among `checks` that the report could not be made, and why.
pub fn record_failure(checks: &mut [Check], why: &str) {
    for c in checks.iter_mut().filter(|c| c.verdict.is_dead()) {
        c.reported = Reported::Failed(why.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process_start_time;
    use locksmith_api::ErrorBody;
    use locksmith_core::{FenceToken, HolderView, LockState};

    const NS: &str = "pid:[4026531836]";

    fn holder(node: &str, boot_id: &str, pid: u32, start_time: u64) -> HolderView {
        HolderView {
            lease: LeaseId(7),
            token: FenceToken(7),
            owner: Owner {
                node: node.into(),
                pid,
                start_time,
                boot_id: boot_id.into(),
                user: "tester".into(),
                purpose: "p".into(),
                pid_ns: Some(NS.into()),
            },
            granted_at_ms: 0,
            last_heartbeat_ms: 0,
            ttl_ms: 60_000,
            ttl_left_ms: 60_000,
            stale: false,
        }
    }

    fn view(holders: Vec<HolderView>) -> ResourceView {
        ResourceView {
            resource: "res".into(),
            state: LockState::Hot,
            slots: 1,
            holders,
            waiters: vec![],
            holds: vec![],
            delay_left_ms: 0,
        }
    }

    fn node_1() -> Here {
        Here {
            node: "node-1".into(),
            boot_id: "boot-a".into(),
            pid_ns: Some(NS.into()),
        }
    }

    #[test]
    fn verdicts_follow_node_boot_and_process() {
        let me = std::process::id();
        let started = process_start_time(me).expect("own start time");
        let here = Ok(node_1());
        let in_ns = |ns: Option<&str>, mut h: HolderView| {
            h.owner.pid_ns = ns.map(str::to_string);
            h
        };
        let views = [view(vec![
            holder("node-1", "boot-a", me, started),
            holder("node-1", "boot-a", me, started + 1),
            holder("node-1", "boot-a", u32::MAX - 1, 1),
            holder("node-1", "boot-old", me, started),
            holder("node-7", "boot-a", me, started),
            in_ns(
                Some("pid:[4026532175]"),
                holder("node-1", "boot-a", u32::MAX - 1, 1),
            ),
            in_ns(None, holder("node-1", "boot-a", u32::MAX - 1, 1)),
            in_ns(None, holder("node-1", "boot-old", me, started)),
        ])];
        let verdicts: Vec<Verdict> = check(&here, &views)
            .into_iter()
            .map(|c| c.verdict)
            .collect();
        assert_eq!(verdicts[0], Verdict::Alive);
        assert!(matches!(verdicts[1], Verdict::PidReused { .. }));
        assert_eq!(verdicts[2], Verdict::Gone);
        assert_eq!(verdicts[3], Verdict::Rebooted);
        assert_eq!(verdicts[4], Verdict::Remote);
        // Issue 15 item 3: a pid absent from our /proc but numbered in another namespace (or in
        // one nobody recorded) proves nothing; an older boot still does, whatever the namespace.
        assert_eq!(
            verdicts[5],
            Verdict::OtherPidNamespace {
                holder_pid_ns: Some("pid:[4026532175]".into())
            }
        );
        assert_eq!(
            verdicts[6],
            Verdict::OtherPidNamespace {
                holder_pid_ns: None
            }
        );
        assert!(!verdicts[5].is_dead() && !verdicts[6].is_dead());
        assert_eq!(verdicts[7], Verdict::Rebooted);

        // A FleetLock client named like this node is not a ghost of an older boot of it.
        let mut slot = holder("node-1", "boot-a", 1, 1);
        slot.owner = locksmith_api::fleetlock::owner("node-1", "default");
        let verdicts: Vec<Verdict> = check(&here, &[view(vec![slot])])
            .into_iter()
            .map(|c| c.verdict)
            .collect();
        assert_eq!(verdicts, [Verdict::FleetLock]);

        let unknown = check(&Err("no /proc".into()), &views);
        assert!(
            unknown
                .iter()
                .all(|c| matches!(c.verdict, Verdict::Unknown { .. }))
        );
    }

    #[test]
    fn this_process_judged_from_here_is_alive() {
        let here = Here::detect(Some("node-1")).expect("this node");
        assert_eq!(here.node, "node-1");
        let me = crate::owner(Some("node-1"), std::process::id(), Some("p"), String::new)
            .expect("own owner");
        assert_eq!(here.verdict(&me), Verdict::Alive);
        assert_eq!(here.vantage().pid_ns, here.pid_ns.as_deref());
    }

    #[test]
    fn the_report_names_the_gone_and_the_reused_but_not_the_rebooted() {
        let me = std::process::id();
        let started = process_start_time(me).expect("own start time");
        let mut views = view(vec![
            holder("node-1", "boot-a", me, started),
            holder("node-1", "boot-a", u32::MAX - 1, 1),
            holder("node-1", "boot-a", me, started + 1),
            holder("node-1", "boot-old", me, started),
        ]);
        for (i, h) in views.holders.iter_mut().enumerate() {
            h.lease = LeaseId(10 + i as u64);
        }
        let here = node_1();
        let mut checks = check(&Ok(here.clone()), &[views]);
        let report = liveness_report(&here, "ops@node-1", &checks).expect("some are dead");
        assert_eq!(
            (report.node.as_str(), report.boot_id.as_str()),
            ("node-1", "boot-a")
        );
        assert_eq!(report.pid_ns.as_deref(), Some(NS));
        assert_eq!(report.reported_by, "ops@node-1");
        let named: Vec<LeaseId> = report.dead.iter().map(|d| d.lease).collect();
        assert_eq!(named, [LeaseId(11), LeaseId(12)]);
        assert!(liveness_report(&here, "ops", &checks[..1]).is_none());

        let answer = LivenessResponse {
            reclaimed: vec![LeaseId(11), LeaseId(13)],
            refused: vec![],
        };
        record_answer(&mut checks, &answer);
        let reported: Vec<&Reported> = checks.iter().map(|c| &c.reported).collect();
        assert_eq!(
            reported,
            [
                &Reported::NotNeeded,
                &Reported::Reclaimed,
                &Reported::NotReclaimed,
                &Reported::Reclaimed
            ]
        );
        assert!(checks[2].dead_but_held() && checks[1].reclaimed());
        record_failure(&mut checks, "down");
        assert_eq!(checks[1].reported, Reported::Failed("down".into()));
        assert_eq!(checks[0].reported, Reported::NotNeeded);
    }

    #[test]
    fn outcomes_come_from_the_answer() {
        let resp = LivenessResponse {
            reclaimed: vec![LeaseId(1)],
            refused: vec![
                ErrorBody {
                    lease: Some(LeaseId(2)),
                    ..ErrorBody::new(ErrorCode::WrongProcess, "not that one")
                },
                ErrorBody {
                    lease: Some(LeaseId(3)),
                    ..ErrorBody::new(ErrorCode::LeaseExpired, "gone")
                },
            ],
        };
        let of = |l| Reported::from_answer(&resp, LeaseId(l));
        assert_eq!(of(1), Reported::Reclaimed);
        assert_eq!(of(2), Reported::Refused("not that one".into()));
        assert_eq!(of(3), Reported::AlreadyEnded);
        assert_eq!(of(4), Reported::NotReclaimed);
    }
}
