//! `locksmith status`: is everything healthy? The server's own verdict (`GET /v1/status`) plus
//! this node's liveness checks of local holders. Ends in `ALL CLEAR` (exit 0), or lists each
//! problem with its safe next step (exit 6).

use locksmith_api::{Problem, ProblemKind, StatusResponse, format_age};
use serde::Serialize;

use super::liveness::{self, Check};
use crate::cli::{Global, StatusArgs};
use crate::exit::Exit;
use crate::failure::{Context, Failure};
use crate::output::{out, out_json};

/// What `status --json` prints: the server's status, with this node's findings merged in.
#[derive(Debug, Serialize)]
struct Report {
    /// The server's status; `all_clear` and `problems` include this node's findings.
    #[serde(flatten)]
    status: StatusResponse,
    /// Problems this run fixed (dead local holders reported and reclaimed).
    fixed: Vec<Problem>,
}

pub async fn status(global: &Global, args: StatusArgs) -> anyhow::Result<Exit> {
    let ctx = Context {
        subject: "status",
        wait_flag: "--wait",
    };
    let client = super::client(global, ctx)?;
    let fail = |e: locksmith_client::ClientError| Failure::from_client(&e, ctx);
    let mut status = client.status().await.map_err(fail)?;
    if status.health.store_error.is_some() {
        // A failed server shows no locks (they may be ahead of its disk): its report, with the
        // storage problem, is all there is to say.
        return finish(
            Report {
                status,
                fixed: Vec::new(),
            },
            args.json,
            client.base(),
        );
    }
    let here = liveness::here(global);
    // Only this node's holders can be checked here: ask for just the locks they hold (the
    // server's node index), not every lock in the fleet.
    let locks = match &here {
        Ok(here) => client.locks_on_node(&here.node).await,
        Err(_) => client.locks().await,
    }
    .map_err(fail)?;

    let mut checks = liveness::check(&here, &locks.locks);
    let operator = super::operator(global).map_err(|f| f.line);
    let report = liveness::report(&client, &here, operator, &mut checks).await;
    if report.is_some() {
        // The reclaims may have cleared problems the first answer listed: ask again.
        status = client.status().await.map_err(fail)?;
    }
    let fixed: Vec<Problem> = checks
        .iter()
        .filter(|c| c.reclaimed())
        .map(|c| dead_holder(c, None))
        .collect();
    let local: Vec<Problem> = checks
        .iter()
        .filter(|c| c.dead_but_held())
        .map(|c| {
            let ttl = locks
                .locks
                .iter()
                .flat_map(|v| &v.holders)
                .find(|h| h.lease == c.lease)
                .map(|h| h.ttl_left_ms);
            dead_holder(c, Some(liveness::dead_but_held_step(c, ttl)))
        })
        .collect();
    status.problems.extend(local);
    finish(Report { status, fixed }, args.json, client.base())
}

/// Prints the report; exits 0 when all is clear, else with the problems' code.
fn finish(mut report: Report, json: bool, base: &str) -> anyhow::Result<Exit> {
    report.status.all_clear = report.status.problems.is_empty();
    let exit = if report.status.all_clear {
        Exit::Ok
    } else {
        Exit::Problems
    };
    if json {
        out_json(&report)?;
    } else {
        out(&render(&report, base))?;
    }
    Ok(exit)
}

/// A dead local holder as a problem: fixed (`next` is `None`), or still to fix.
fn dead_holder(c: &Check, next: Option<String>) -> Problem {
    Problem {
        kind: ProblemKind::DeadHolder,
        resource: Some(c.resource.clone()),
        message: format!("{}: {} — {}", c.resource, c.owner, liveness::describe(c)),
        next_step: next.unwrap_or_else(|| "nothing: the lock was reclaimed".to_string()),
    }
}

fn render(report: &Report, server: &str) -> String {
    let s = &report.status;
    let h = &s.health;
    let mut lines = vec![
        format!(
            "server {server}: {} — locksmith {}, store {}, up {}, heartbeat {} ago",
            h.status,
            h.version,
            h.store,
            format_age(h.uptime_ms),
            format_age(s.heartbeat_age_ms)
        ),
        format!(
            "HOT {}  STALE {}  FROZEN {}  DELAYED {}  WAITERS {}",
            s.counts.hot, s.counts.stale, s.counts.frozen, s.counts.delayed, s.counts.waiters
        ),
    ];
    for f in &report.fixed {
        lines.push(format!("fixed [{}] {}", f.kind, f.message));
    }
    for p in &s.problems {
        lines.push(problem_line(p));
    }
    lines.push(match s.problems.len() {
        0 => "ALL CLEAR".to_string(),
        1 => "1 problem".to_string(),
        n => format!("{n} problems"),
    });
    lines.join("\n")
}

/// `[frozen] res: FROZEN by alice (1m29s left): reason — next: wait for it to end, …`
fn problem_line(p: &Problem) -> String {
    let message = match &p.resource {
        Some(r) if !p.message.contains(r.as_str()) => format!("{r}: {}", p.message),
        _ => p.message.clone(),
    };
    format!("[{}] {message} — next: {}", p.kind, p.next_step)
}

#[cfg(test)]
mod tests {
    use super::*;
    use locksmith_api::{CommitCounters, HealthResponse, HealthStatus, StateCounts};

    fn status(problems: Vec<Problem>) -> StatusResponse {
        StatusResponse {
            all_clear: problems.is_empty(),
            health: HealthResponse {
                status: HealthStatus::Ok,
                version: "0.1.0".into(),
                store: "embedded:./data".into(),
                store_error: None,
                commits: CommitCounters::default(),
                leases: 0,
                waiters: 0,
                fence_high_water: 0,
                uptime_ms: 300_000,
                server_time_ms: 0,
            },
            heartbeat_age_ms: 300,
            counts: StateCounts {
                frozen: 1,
                ..StateCounts::default()
            },
            problems,
        }
    }

    #[test]
    fn a_clean_status_ends_in_all_clear() {
        let text = render(
            &Report {
                status: status(vec![]),
                fixed: vec![],
            },
            "http://127.0.0.1:7400",
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "server http://127.0.0.1:7400: ok — locksmith 0.1.0, store embedded:./data, up \
                 5m00s, heartbeat 300ms ago",
                "HOT 0  STALE 0  FROZEN 1  DELAYED 0  WAITERS 0",
                "ALL CLEAR"
            ]
        );
    }

    #[test]
    fn each_problem_is_one_line_with_its_next_step() {
        let frozen = Problem {
            kind: ProblemKind::Frozen,
            resource: Some("res".into()),
            message: "res: FROZEN by alice (1m29s left): r".into(),
            next_step: "wait for it to end, or lift it: 'locksmith unhold 12'".into(),
        };
        let stalled = Problem {
            kind: ProblemKind::ReaperStalled,
            resource: None,
            message: "the reaper last ran 9s ago".into(),
            next_step: "restart it".into(),
        };
        let text = render(
            &Report {
                status: status(vec![frozen, stalled]),
                fixed: vec![],
            },
            "u",
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[2],
            "[frozen] res: FROZEN by alice (1m29s left): r — next: wait for it to end, or lift \
             it: 'locksmith unhold 12'"
        );
        assert_eq!(
            lines[3],
            "[reaper_stalled] the reaper last ran 9s ago — next: restart it"
        );
        assert_eq!(lines[4], "2 problems");
        assert!(!text.contains("ALL CLEAR"));
    }
}
