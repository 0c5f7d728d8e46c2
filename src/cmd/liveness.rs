//! The CLI as a liveness prober: for holders on this node, is their process still alive?
//!
//! `why`, `locks` and `status` check every holder whose node is this node (`--node` or the
//! host name). Under this node's boot id, and in this process's PID namespace, the holder's
//! `(pid, start time)` is looked up in `/proc`: a missing pid, or a pid now owned by a process
//! with another start time, proves the holder dead. A holder recorded under another boot id of
//! this node died with that boot. Either is reported to the server (`POST /v1/liveness`), which
//! reclaims the lease at once instead of one TTL later. Holders on other nodes, in other PID
//! namespaces of this one (another container sharing its host name and boot id), or with no
//! namespace recorded cannot be checked from here: their pid means nothing in our `/proc`.

use locksmith_api::{DeadHolder, ErrorCode, LivenessReport, LivenessResponse, format_age};
use locksmith_client::Client;
use locksmith_core::{HolderView, LeaseId, Owner, ResourceView};
use locksmith_host::Liveness;
use serde::Serialize;

use crate::cli::Global;
use crate::identity;

/// This node, as the checks need it.
#[derive(Debug, Clone)]
pub struct Here {
    /// Its name (`--node` or the host name).
    pub node: String,
    /// Its current boot id.
    pub boot_id: String,
    /// The PID namespace this process runs in (and whose `/proc` it reads), if it has one.
    pub pid_ns: Option<String>,
}

impl Here {
    /// Reads this node's name, boot id and PID namespace; the error says why holders cannot be
    /// checked (a `/proc` of another namespace is such a reason: pids read there mean nothing).
    pub fn detect(global: &Global) -> Result<Here, String> {
        let node = super::this_node(global).map_err(|e| e.to_string())?;
        let boot_id = identity::boot_id().map_err(|e| e.to_string())?;
        let pid_ns = identity::pid_namespace().map_err(|e| e.to_string())?;
        Ok(Here {
            node,
            boot_id,
            pid_ns,
        })
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

    /// One phrase: `alive — …`, `holder pid 4121 is gone — reported; lock reclaimed`, …
    pub fn describe(&self) -> String {
        let pid = self.owner.pid;
        let what = match &self.verdict {
            Verdict::Alive => {
                return format!(
                    "alive — pid {pid} still runs with the start time it had when granted \
                     (checked on this node)"
                );
            }
            Verdict::Unknown { why } => return format!("cannot tell — {why}"),
            Verdict::Remote => {
                return format!("not checkable from here (holder on {})", self.owner.node);
            }
            Verdict::FleetLock => {
                return format!(
                    "not a process — FleetLock client {} holds a reboot slot until it reports \
                     steady state",
                    self.owner.node
                );
            }
            Verdict::OtherPidNamespace { holder_pid_ns } => {
                return match holder_pid_ns {
                    Some(ns) => format!(
                        "not checkable from here (holder pid {pid} is in PID namespace {ns}; run \
                         the check there)"
                    ),
                    None => format!(
                        "not checkable by pid (holder pid {pid} recorded no PID namespace: its \
                         TTL, a reboot or a break ends it)"
                    ),
                };
            }
            Verdict::Gone => format!("holder pid {pid} is gone"),
            Verdict::PidReused { .. } => {
                format!("holder pid {pid} is gone (the pid now belongs to another process)")
            }
            Verdict::Rebooted => format!(
                "node rebooted since the grant (holder pid {pid} died with boot {})",
                short_boot(&self.owner.boot_id)
            ),
        };
        let outcome = match &self.reported {
            Reported::Reclaimed => "reported; lock reclaimed".to_string(),
            Reported::AlreadyEnded => "its lease had already ended".to_string(),
            Reported::NotReclaimed => "reported, but the server did not reclaim it".to_string(),
            Reported::Refused(msg) => format!("report refused: {msg}"),
            Reported::Failed(msg) => format!("could not report it: {msg}"),
            Reported::NotNeeded => "not reported".to_string(),
        };
        format!("{what} — {outcome}")
    }
}

fn short_boot(boot_id: &str) -> &str {
    boot_id.get(..8).unwrap_or(boot_id)
}

/// Checks every holder of `views` (`here` is this node, or why it could not be read).
pub fn check(here: &Result<Here, String>, views: &[ResourceView]) -> Vec<Check> {
    views
        .iter()
        .flat_map(|v| v.holders.iter().map(move |h| (v, h)))
        .map(|(v, h)| Check {
            resource: v.resource.clone(),
            lease: h.lease,
            owner: h.owner.clone(),
            verdict: verdict(here, h),
            reported: Reported::NotNeeded,
        })
        .collect()
}

fn verdict(here: &Result<Here, String>, h: &HolderView) -> Verdict {
    let here = match here {
        Ok(here) => here,
        Err(why) => {
            return Verdict::Unknown {
                why: format!("cannot read this node's identity: {why}"),
            };
        }
    };
    // Before the node check: a FleetLock client id may well equal a host name, and its
    // placeholder boot id would read as a reboot of this node.
    if locksmith_api::fleetlock::is_client(&h.owner) {
        return Verdict::FleetLock;
    }
    if h.owner.node != here.node {
        return Verdict::Remote;
    }
    if h.owner.boot_id != here.boot_id {
        // The boot id is the machine's, whatever the namespace: a reboot ended every process.
        return Verdict::Rebooted;
    }
    if h.owner.pid_ns.is_none() || h.owner.pid_ns != here.pid_ns {
        return Verdict::OtherPidNamespace {
            holder_pid_ns: h.owner.pid_ns.clone(),
        };
    }
    match locksmith_host::liveness(h.owner.pid, h.owner.start_time) {
        Liveness::Alive => Verdict::Alive,
        Liveness::Gone => Verdict::Gone,
        Liveness::PidReused { now_started } => Verdict::PidReused { now_started },
        Liveness::Unknown(why) => Verdict::Unknown { why },
    }
}

/// Reports the dead holders among `checks` (if any) and records the outcome on each. Returns
/// the server's answer, or `None` when nothing needed reporting or the report failed.
pub async fn report(
    client: &Client,
    here: &Result<Here, String>,
    operator: Result<String, String>,
    checks: &mut [Check],
) -> Option<LivenessResponse> {
    let Ok(here) = here else {
        return None;
    };
    if !checks.iter().any(|c| c.verdict.is_dead()) {
        return None;
    }
    let operator = match operator {
        Ok(op) => op,
        Err(why) => {
            mark_dead(checks, &Reported::Failed(why));
            return None;
        }
    };
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
    let req = LivenessReport {
        node: here.node.clone(),
        boot_id: here.boot_id.clone(),
        pid_ns: here.pid_ns.clone(),
        reported_by: operator,
        dead,
    };
    match client.report_liveness(&req).await {
        Ok(resp) => {
            for c in checks.iter_mut().filter(|c| c.verdict.is_dead()) {
                c.reported = outcome(&resp, c.lease);
            }
            Some(resp)
        }
        Err(e) => {
            mark_dead(checks, &Reported::Failed(e.to_string()));
            None
        }
    }
}

fn mark_dead(checks: &mut [Check], reported: &Reported) {
    for c in checks.iter_mut().filter(|c| c.verdict.is_dead()) {
        c.reported = reported.clone();
    }
}

fn outcome(resp: &LivenessResponse, lease: LeaseId) -> Reported {
    if resp.reclaimed.contains(&lease) {
        return Reported::Reclaimed;
    }
    match resp.refused.iter().find(|r| r.lease == Some(lease)) {
        Some(r) if matches!(r.error, ErrorCode::LeaseExpired | ErrorCode::NotHolder) => {
            Reported::AlreadyEnded
        }
        Some(r) => Reported::Refused(r.message.clone()),
        None => Reported::NotReclaimed,
    }
}

/// The next step for a dead holder whose lease the server did not free.
pub fn dead_but_held_step(c: &Check, ttl_left_ms: Option<u64>) -> String {
    let when = ttl_left_ms.map_or_else(
        || "when its TTL runs out".to_string(),
        |ms| format!("in {} when its TTL runs out", format_age(ms)),
    );
    format!(
        "it is reclaimed {when}; to free it now: locksmith break {} --lease {} --reason \
         \"holder pid {} on {} is dead\"",
        c.resource, c.lease, c.owner.pid, c.owner.node
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use locksmith_core::{FenceToken, LockState};

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

    #[test]
    fn verdicts_follow_node_boot_and_process() {
        let me = std::process::id();
        let started = identity::process_start_time(me).expect("own start time");
        let here = Ok(Here {
            node: "node-1".into(),
            boot_id: "boot-a".into(),
            pid_ns: Some(NS.into()),
        });
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
    fn descriptions_say_what_was_found_and_done() {
        let mut c = check(
            &Ok(Here {
                node: "node-1".into(),
                boot_id: "boot-a".into(),
                pid_ns: Some(NS.into()),
            }),
            &[view(vec![holder("node-1", "boot-a", u32::MAX - 1, 1)])],
        )
        .remove(0);
        c.reported = Reported::Reclaimed;
        assert_eq!(
            c.describe(),
            format!(
                "holder pid {} is gone — reported; lock reclaimed",
                u32::MAX - 1
            )
        );
        c.owner.node = "node-7".into();
        c.verdict = Verdict::Remote;
        assert_eq!(c.describe(), "not checkable from here (holder on node-7)");
    }

    #[test]
    fn outcomes_come_from_the_answer() {
        let resp = LivenessResponse {
            reclaimed: vec![LeaseId(1)],
            refused: vec![
                locksmith_api::ErrorBody {
                    lease: Some(LeaseId(2)),
                    ..locksmith_api::ErrorBody::new(ErrorCode::WrongProcess, "not that one")
                },
                locksmith_api::ErrorBody {
                    lease: Some(LeaseId(3)),
                    ..locksmith_api::ErrorBody::new(ErrorCode::LeaseExpired, "gone")
                },
            ],
        };
        assert_eq!(outcome(&resp, LeaseId(1)), Reported::Reclaimed);
        assert_eq!(
            outcome(&resp, LeaseId(2)),
            Reported::Refused("not that one".into())
        );
        assert_eq!(outcome(&resp, LeaseId(3)), Reported::AlreadyEnded);
        assert_eq!(outcome(&resp, LeaseId(4)), Reported::NotReclaimed);
    }
}
