//! The CLI as a liveness prober: for holders on this node, is their process still alive?
//!
//! `why`, `locks` and `status` check every holder whose node is this node (`--node` or the
//! host name), with the verdicts of `locksmith_host::verdict` (alive, gone, pid reused,
//! rebooted, not checkable from here), and report the dead to the server
//! (`POST /v1/liveness`), which reclaims their leases at once instead of one TTL later. Here:
//! only the HTTP call and how a verdict reads on screen.

use locksmith_api::{LivenessResponse, format_age};
use locksmith_client::Client;
use locksmith_host::verdict;
pub use locksmith_host::verdict::{Check, Here, Reported, Verdict, check};

use crate::cli::Global;

/// This node as `--node` (or the host name) names it, or why holders cannot be checked from
/// here.
pub fn here(global: &Global) -> Result<Here, String> {
    Here::detect(global.node.as_deref()).map_err(|e| e.to_string())
}

/// One phrase for a check: `alive — …`, `holder pid 4121 is gone — reported; lock reclaimed`, …
pub fn describe(c: &Check) -> String {
    let pid = c.owner.pid;
    let what = match &c.verdict {
        Verdict::Alive => {
            return format!(
                "alive — pid {pid} still runs with the start time it had when granted \
                 (checked on this node)"
            );
        }
        Verdict::Unknown { why } => return format!("cannot tell — {why}"),
        Verdict::Remote => {
            return format!("not checkable from here (holder on {})", c.owner.node);
        }
        Verdict::FleetLock => {
            return format!(
                "not a process — FleetLock client {} holds a reboot slot until it reports \
                 steady state",
                c.owner.node
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
            short_boot(&c.owner.boot_id)
        ),
    };
    let outcome = match &c.reported {
        Reported::Reclaimed => "reported; lock reclaimed".to_string(),
        Reported::AlreadyEnded => "its lease had already ended".to_string(),
        Reported::NotReclaimed => "reported, but the server did not reclaim it".to_string(),
        Reported::Refused(msg) => format!("report refused: {msg}"),
        Reported::Failed(msg) => format!("could not report it: {msg}"),
        Reported::NotNeeded => "not reported".to_string(),
    };
    format!("{what} — {outcome}")
}

fn short_boot(boot_id: &str) -> &str {
    boot_id.get(..8).unwrap_or(boot_id)
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
    if !verdict::any_dead(checks) {
        return None;
    }
    let operator = match operator {
        Ok(op) => op,
        Err(why) => {
            verdict::record_failure(checks, &why);
            return None;
        }
    };
    let req = verdict::liveness_report(here, operator, checks)?;
    match client.report_liveness(&req).await {
        Ok(answer) => {
            verdict::record_answer(checks, &answer);
            Some(answer)
        }
        Err(e) => {
            verdict::record_failure(checks, &e.to_string());
            None
        }
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
    use locksmith_core::{FenceToken, HolderView, LeaseId, LockState, Owner, ResourceView};

    #[test]
    fn descriptions_say_what_was_found_and_done() {
        let holder = HolderView {
            lease: LeaseId(7),
            token: FenceToken(7),
            owner: Owner {
                node: "node-1".into(),
                pid: u32::MAX - 1,
                start_time: 1,
                boot_id: "boot-a".into(),
                user: "tester".into(),
                purpose: "p".into(),
                pid_ns: Some("pid:[4026531836]".into()),
            },
            granted_at_ms: 0,
            last_heartbeat_ms: 0,
            ttl_ms: 60_000,
            ttl_left_ms: 60_000,
            stale: false,
        };
        let view = ResourceView {
            resource: "res".into(),
            state: LockState::Hot,
            slots: 1,
            holders: vec![holder],
            waiters: vec![],
            holds: vec![],
            delay_left_ms: 0,
        };
        let here = Here {
            node: "node-1".into(),
            boot_id: "boot-a".into(),
            pid_ns: Some("pid:[4026531836]".into()),
        };
        let mut c = check(&Ok(here), &[view]).remove(0);
        c.reported = Reported::Reclaimed;
        assert_eq!(
            describe(&c),
            format!(
                "holder pid {} is gone — reported; lock reclaimed",
                u32::MAX - 1
            )
        );
        c.owner.node = "node-7".into();
        c.verdict = Verdict::Remote;
        assert_eq!(describe(&c), "not checkable from here (holder on node-7)");
    }
}
