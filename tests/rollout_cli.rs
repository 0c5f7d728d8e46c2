//! `locksmith rollout …` end to end: the real binary against a real server (auth on) and a
//! fleet of real `locksmith agent` processes (tests/common/fleet.rs). Pins: a bad flag value
//! fails before any call, naming the flag; `--dry-run` prints each wave's endpoints and the
//! diff they would get and stores nothing; start → status --json → the starter's own approval
//! refused in one line → a second operator approves → `status --watch` follows it to its end
//! and exits 0; a second start of the config is queued and `rollout cancel` withdraws it;
//! `abort` lists where every endpoint is left; a canary that fails its health hook rolls back,
//! named in the outcome, and `status --watch` of a rollout that did not succeed exits 8.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::fleet::{CONFIG, Fleet, LIMIT, free_port};
use common::{ServerProc, code, describe, locksmith, one_error_line, stdout};
use serde_json::Value;

/// `rollout status ID --json` as the admin.
fn status_json(server: &ServerProc, id: &str) -> Value {
    let out = server.cli(&["rollout", "status", id, "--json"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    serde_json::from_slice(&out.stdout).expect("RolloutView JSON")
}

/// Polls `rollout status ID --json` until `ok` holds (failing after [`LIMIT`]).
fn wait_status(server: &ServerProc, id: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + LIMIT;
    loop {
        let v = status_json(server, id);
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{id}: never {what}; last {v:#}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn awaiting_approval(v: &Value) -> bool {
    v["state"]["awaiting_approval"].is_object()
}

/// Runs a CLI command that must succeed and returns its stdout.
fn ok(out: Output) -> String {
    assert_eq!(code(&out), 0, "{}", describe(&out));
    stdout(&out)
}

/// Each whitespace run as one space, per line: comfy-table pads columns.
fn squeezed(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// A `locksmith` process whose stdout lines arrive over a channel as it prints them.
struct Following {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Following {
    fn start(server: &ServerProc, args: &[&str]) -> Following {
        let mut child = server
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn locksmith");
        let out = child.stdout.take().expect("stdout piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Following { child, lines }
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(LIMIT)
            .expect("a line from the following process")
    }

    /// Every line until it exits, and its exit code.
    fn finish(mut self) -> (Vec<String>, i32) {
        let rest: Vec<String> =
            std::iter::from_fn(|| self.lines.recv_timeout(LIMIT).ok()).collect();
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (rest, status.code().expect("exited"));
            }
            assert!(
                Instant::now() < deadline,
                "still running after its stdout closed"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_bad_wave_list_fails_before_any_call_naming_the_flag() {
    // Nothing listens there: a call would fail `cannot reach` with exit 5.
    let server = format!("http://127.0.0.1:{}", free_port());
    let out = locksmith(&[
        "--server", &server, "rollout", "start", CONFIG, "--rev", "2", "--waves", "50%,10%",
    ]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(
        line.starts_with("ERROR: aim.conf: invalid rollout — --waves \"50%,10%\""),
        "{line}"
    );
    assert!(line.contains("locksmith rollout start --help"), "{line}");
    let both = locksmith(&[
        "--server",
        &server,
        "rollout",
        "start",
        CONFIG,
        "--rev",
        "2",
        "--canary",
        "1",
        "--canary-nodes",
        "a",
    ]);
    assert_eq!(code(&both), 1, "{}", describe(&both));
    assert!(one_error_line(&both).contains("--canary and --canary-nodes exclude each other"));
}

#[test]
fn the_rollout_commands_are_in_the_completions() {
    let script = ok(locksmith(&["completions", "bash"]));
    for word in [
        "rollout",
        "approve",
        "--canary-nodes",
        "--hold-after",
        "--dry-run",
    ] {
        assert!(
            script.contains(word),
            "{word} missing from the bash completions"
        );
    }
}

#[test]
fn dry_run_prints_each_waves_endpoints_and_the_diff_they_would_get_and_stores_nothing() {
    let fleet = Fleet::new(3, |_| "role=drone".into());
    let draft = fleet.put("threshold = 2\n", true);
    let rev = draft.to_string();
    let text = ok(fleet.server().cli(&[
        "rollout",
        "start",
        CONFIG,
        "--rev",
        &rev,
        "--select",
        "role=drone",
        "--canary",
        "1",
        "--dry-run",
    ]));
    let lines = squeezed(&text);
    let at = |want: &str| {
        lines
            .iter()
            .position(|l| l == want)
            .unwrap_or_else(|| panic!("no line {want:?} in:\n{text}"))
    };
    assert!(
        lines[0].starts_with(&format!(
            "dry run: aim.conf revision {rev} to 3 endpoints (selector role=drone) in 2 waves"
        )),
        "{text}"
    );
    let canary = at("wave 1 of 2 (canary): 1 endpoint, 0 failures allowed");
    assert_eq!(lines[canary + 2], "drone-0 online 1", "{text}");
    let wave = at("wave 2 of 2 (wave): 2 endpoints, 0 failures allowed");
    assert_eq!(lines[wave + 2], "drone-1 online 1", "{text}");
    assert_eq!(lines[wave + 3], "drone-2 online 1", "{text}");
    let diff = at("endpoints on rev 1 (drone-0, drone-1, drone-2) get:");
    assert!(
        lines[diff..].contains(&"-threshold = 1".to_string()),
        "{text}"
    );
    assert!(
        lines[diff..].contains(&"+threshold = 2".to_string()),
        "{text}"
    );
    at("queue: none — it would start at once (no other rollout of aim.conf)");
    // Nothing was stored: no rollout, ended or not.
    let list: Value = serde_json::from_str(&ok(fleet
        .server()
        .cli(&["rollout", "ls", "--all", "--json"])))
    .expect("json");
    assert_eq!(list["rollouts"], serde_json::json!([]), "{list}");
}

#[test]
fn the_starters_approval_is_refused_in_one_line_and_a_second_operators_lets_watch_end_with_exit_0()
{
    let fleet = Fleet::new(3, |_| "role=drone".into());
    let server = fleet.server();
    let alice = server.make_token("alice", "operator", &[]);
    let bob = server.make_token("bob", "operator", &[]);
    let draft = fleet.put("threshold = 2\n", true).to_string();
    let started: Value = serde_json::from_str(&ok(server.cli_as(
        &alice,
        &[
            "rollout",
            "start",
            CONFIG,
            "--rev",
            &draft,
            "--canary",
            "1",
            "--hold-after",
            "canary",
            "--approvals",
            "1",
            "--json",
        ],
    )))
    .expect("RolloutView JSON");
    let id = started["id"].as_str().expect("id").to_owned();
    assert_eq!(started["starter"], "alice");
    let v = wait_status(server, &id, "at its hold point", awaiting_approval);
    assert_eq!(v["approvals_needed"], 1, "{v:#}");

    let header = ok(server.cli(&["rollout", "status", &id]));
    assert!(
        header.starts_with(&format!("{id}: aim.conf revision {draft}")),
        "{header}"
    );
    assert!(header.contains("started by alice"), "{header}");
    assert!(
        header.contains(&format!(
            "approvals:  0 of 1 (none yet); another operator than alice approves: locksmith \
             rollout approve {id}"
        )),
        "{header}"
    );
    assert!(
        header.contains("wave 1 of 2 (canary): 1/1 applied"),
        "{header}"
    );
    assert!(
        header.contains("wave 2 of 2 (wave): 0/2 applied"),
        "{header}"
    );

    let refused = server.cli_as(&alice, &["rollout", "approve", &id]);
    assert_eq!(code(&refused), 1, "{}", describe(&refused));
    let line = one_error_line(&refused);
    assert!(
        line.starts_with(&format!(
            "ERROR: {id}: alice started this rollout; their own approval does not count"
        )),
        "{line}"
    );
    assert!(
        line.contains(&format!("locksmith rollout approve {id}' with their token")),
        "{line}"
    );

    // Following before the approval: its first line is where the rollout waits.
    let watch = Following::start(server, &["rollout", "status", &id, "--watch"]);
    let first = watch.next_line();
    assert!(
        first.starts_with(&format!("{id} running — hold point after wave 1 of 2")),
        "{first}"
    );
    let approved = ok(server.cli_as(&bob, &["rollout", "approve", &id]));
    assert!(
        approved.starts_with(&format!("{id}: approved — ")),
        "{approved}"
    );
    let (lines, exit) = watch.finish();
    assert_eq!(exit, 0, "{lines:#?}");
    let text = lines.join("\n");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  wave 2 of 2 (wave): 2/2 applied")),
        "{text}"
    );
    let outcome = lines
        .iter()
        .position(|l| l.starts_with(&format!("{id}: aim.conf revision {draft}")))
        .unwrap_or_else(|| panic!("no outcome line in:\n{text}"));
    assert!(lines[outcome].contains("SUCCEEDED"), "{text}");
    let rolled = status_json(server, &id)["rolled_rev"]
        .as_u64()
        .expect("rolled rev");
    let landings = squeezed(&lines[outcome..].join("\n"));
    for node in &fleet.nodes {
        assert!(
            landings.contains(&format!("{node} {rolled} yes applied")),
            "{node} not listed on {rolled}:\n{text}"
        );
    }

    // Over: --watch --json prints the ended view as one line and exits 0 at once.
    let out = server.cli(&["rollout", "status", &id, "--watch", "--json"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let last: Value = serde_json::from_str(stdout(&out).lines().last().expect("a line"))
        .expect("one JSON view per line");
    assert_eq!(last["outcome"]["kind"], "succeeded", "{last:#}");
    let history = squeezed(&ok(server.cli(&["rollout", "history", CONFIG])));
    assert_eq!(history[0], "ID REV STARTER STARTED OUTCOME WHY");
    assert!(
        history[1].starts_with(&format!("{id} {draft} alice ")) && history[1].contains("SUCCEEDED"),
        "{history:?}"
    );
}

#[test]
fn a_second_start_of_one_config_is_queued_cancel_withdraws_it_and_abort_lists_the_landings() {
    let fleet = Fleet::new(2, |_| "role=drone".into());
    let server = fleet.server();
    let draft = fleet.put("threshold = 2\n", true).to_string();
    let first = ok(server.cli(&[
        "rollout",
        "start",
        CONFIG,
        "--rev",
        &draft,
        "--canary",
        "1",
        "--hold-after",
        "canary",
        "--approvals",
        "1",
    ]));
    let first_id = first.split(':').next().expect("id").to_owned();
    assert!(
        first.contains(&format!(
            "follow it: locksmith rollout status {first_id} --watch"
        )),
        "{first}"
    );
    wait_status(server, &first_id, "at its hold point", awaiting_approval);
    let second = ok(server.cli(&["rollout", "start", CONFIG, "--rev", &draft]));
    let second_id = second.split(':').next().expect("id").to_owned();
    assert!(
        second.starts_with(&format!(
            "{second_id}: queued aim.conf revision {draft} behind {first_id} — "
        )),
        "{second}"
    );
    assert!(
        second.contains(&format!(
            "cancel it with: locksmith rollout cancel {second_id}"
        )),
        "{second}"
    );
    let ls = squeezed(&ok(server.cli(&["rollout", "ls", CONFIG])));
    assert_eq!(ls[0], "ID CONFIG REV STATE SUMMARY STARTER AGE");
    assert!(
        ls[1].starts_with(&format!("{second_id} aim.conf {draft} queued")),
        "{ls:?}"
    );
    assert!(
        ls[2].starts_with(&format!("{first_id} aim.conf {draft} running")),
        "{ls:?}"
    );

    // A running rollout is not cancelled: one line saying what ends it.
    let refused = server.cli(&["rollout", "cancel", &first_id]);
    assert_eq!(code(&refused), 1, "{}", describe(&refused));
    let line = one_error_line(&refused);
    assert!(line.contains("cannot be cancelled"), "{line}");
    assert!(
        line.contains(&format!("locksmith rollout abort {first_id}")),
        "{line}"
    );
    let cancelled = ok(server.cli(&["rollout", "cancel", &second_id]));
    assert!(
        cancelled.starts_with(&format!("{second_id}: cancelled — cancelled")),
        "{cancelled}"
    );
    // A cancelled rollout never succeeded: --watch says so with exit 8.
    let watched = server.cli(&["rollout", "status", &second_id, "--watch"]);
    assert_eq!(code(&watched), 8, "{}", describe(&watched));

    let aborted = ok(server.cli(&["rollout", "abort", &first_id, "--rollback"]));
    let lines = squeezed(&aborted);
    assert!(
        lines[0].starts_with(&format!("{first_id}: aim.conf revision {draft}"))
            && lines[0].contains("ABORTED"),
        "{aborted}"
    );
    assert_eq!(lines[1], "every endpoint and the revision it is left on:");
    assert_eq!(lines[2], "NODE REV CONFIRMED STATUS");
    // Both go back to (or stay on) revision 1: the canary is restored, the other untouched.
    for node in &fleet.nodes {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{node} 1 "))),
            "{node} not left on 1:\n{aborted}"
        );
    }
    let watched = server.cli(&["rollout", "status", &first_id, "--watch"]);
    assert_eq!(code(&watched), 8, "{}", describe(&watched));
    assert!(
        stdout(&watched).contains("ABORTED"),
        "{}",
        describe(&watched)
    );
}

#[test]
fn a_failed_canary_is_named_in_the_outcome_and_watch_of_the_rolled_back_rollout_exits_8() {
    let fleet = Fleet::new(2, |_| "role=drone".into());
    let server = fleet.server();
    let bad = fleet.put("threshold = \"broken\"\n", true).to_string();
    let started = ok(server.cli(&["rollout", "start", CONFIG, "--rev", &bad, "--canary", "1"]));
    let id = started.split(':').next().expect("id").to_owned();
    let watched = server.cli(&["rollout", "status", &id, "--watch"]);
    assert_eq!(code(&watched), 8, "{}", describe(&watched));
    let text = stdout(&watched);
    let lines = squeezed(&text);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{id}: aim.conf revision {bad}"))
                && l.contains("ROLLED BACK")),
        "{text}"
    );
    // The canary is back on revision 1, confirmed; the other never left it.
    assert!(
        lines.iter().any(|l| l.starts_with("drone-0 1 yes ")),
        "{text}"
    );
    assert!(lines.iter().any(|l| l.starts_with("drone-1 1 ")), "{text}");

    let status = ok(server.cli(&["rollout", "status", &id]));
    assert!(status.contains("ROLLED BACK"), "{status}");
    // Why: the outcome names the failed wave and its node, and the endpoint's row keeps the
    // hook's own error after the restore's `applied` report replaced it.
    assert!(
        status.contains("endpoints failed (drone-0)"),
        "the failed canary is not named:\n{status}"
    );
    let rows = squeezed(&status);
    assert!(
        rows.iter()
            .any(|l| l.starts_with("drone-0 1 restored 1 - health hook exited with status 3")),
        "{status}"
    );
    assert!(
        rows.iter().any(|l| l == "drone-1 2 planned - - -"),
        "{status}"
    );
    let history = ok(server.cli(&["rollout", "history", CONFIG]));
    assert!(
        squeezed(&history)
            .iter()
            .any(|l| l.starts_with(&format!("{id} {bad} admin ")) && l.contains("ROLLED BACK")),
        "{history}"
    );
}
