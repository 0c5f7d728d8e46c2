//! Ghosts and the safe bypass, end to end: the real `locksmith` binary against a real server.
//! Holds (`hold`, `ack`, `unhold`), the audited break, `why` proving a local holder dead, `status`
//! ending in ALL CLEAR or naming each problem, `audit`, `watch`, and lock-delay.
//!
//! Node reboots (a new boot id) cannot be faked from the CLI: the server's tests cover them.

mod common;

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::Duration;

use common::{Killer, Proc, ServerProc, code, describe, locksmith, one_error_line, signal, stdout};
use nix::sys::signal::Signal;

fn server() -> (tempfile::TempDir, ServerProc) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start(&dir.path().join("data"));
    (dir, server)
}

/// A `status` that ends in ALL CLEAR (exit 0): the CLI tests' servers run with authentication
/// on (tests/common), so no problem of their own is listed.
fn all_clear(out: &std::process::Output) -> bool {
    code(out) == 0 && stdout(out).lines().last() == Some("ALL CLEAR")
}

/// A server whose own liveness probe is off: only the CLI's reports can reclaim a dead holder
/// before its TTL.
fn server_without_probe() -> (tempfile::TempDir, ServerProc) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start_with(&dir.path().join("data"), &["--probe-interval", "0"]);
    (dir, server)
}

/// A process that is not this test: another owner for the same resource.
fn other_process() -> Proc {
    let child = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    Proc { child }
}

fn ok(out: &Output) -> String {
    assert_eq!(code(out), 0, "{}", describe(out));
    stdout(out)
}

/// `lease <id> token <token> on …` → lease id.
fn lease_of(out: &Output) -> String {
    let text = ok(out);
    let words: Vec<&str> = text.split_whitespace().collect();
    assert!(words.len() > 2 && words[0] == "lease", "{}", describe(out));
    words[1].to_string()
}

/// `hold <id> on …` → hold id.
fn hold_of(out: &Output) -> String {
    let text = ok(out);
    let words: Vec<&str> = text.split_whitespace().collect();
    assert!(words.len() > 2 && words[0] == "hold", "{}", describe(out));
    words[1].to_string()
}

/// Rows of `locks RESOURCE --no-check -o COLS`, split into cells.
fn rows(server: &ServerProc, resource: &str, cols: &str) -> Vec<Vec<String>> {
    let out = server.cli(&["locks", resource, "--no-check", "-o", cols]);
    ok(&out)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// The pid that owns `resource`'s (only) lease: for a `run` holder, `run`'s supervisor, which
/// outlives the command it supervises by the time it takes to kill it.
fn holder_pid(server: &ServerProc, resource: &str) -> u32 {
    let rows = rows(server, resource, "pid");
    rows.first()
        .and_then(|r| r.first())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no holder of {resource}: {rows:?}"))
}

/// Starts `locksmith run RESOURCE --ttl TTL -- sh -c 'echo $$; exec sleep 30'` and returns it
/// with its command's pid (killed with the test).
fn run_holder(server: &ServerProc, resource: &str, ttl: &str) -> (Proc, u32, Killer) {
    let mut run = server.spawn(&[
        "run",
        resource,
        "--ttl",
        ttl,
        "--",
        "sh",
        "-c",
        "echo $$; exec sleep 30",
    ]);
    let child: u32 = run.read_line().parse().expect("child pid");
    let reap = Killer::new(child);
    (run, child, reap)
}

/// The holder of `resource` keeps its lease (`lease`, as [`rows`] showed it), and its `run`
/// is still running its command.
fn still_held(server: &ServerProc, resource: &str, lease: &[Vec<String>], run: &mut Proc) {
    assert_eq!(server.state_unchecked(resource), "HOT", "{}", server.log());
    assert_eq!(rows(server, resource, "lease"), lease);
    assert!(
        run.child.try_wait().expect("try_wait").is_none(),
        "{}",
        run.stderr()
    );
}

#[test]
fn a_hold_freezes_new_grants_the_holder_keeps_its_lease_and_unhold_restores() {
    let (_dir, server) = server();
    let res = "configs/aim_lock_config.conf";
    let lease = lease_of(&server.cli(&["acquire", res, "--ttl", "30s"]));

    let out = server.cli(&[
        "hold",
        res,
        "--for",
        "90s",
        "--reason",
        "clearing a stale lock",
    ]);
    let hold = hold_of(&out);
    assert_eq!(
        stdout(&out),
        format!("hold {hold} on {res}: FROZEN for 1m30s — \"clearing a stale lock\"\n")
    );

    // Nobody new gets it: one line naming the hold, its operator and reason.
    let other = other_process();
    let out = server.cli(&["acquire", res, "--pid", &other.pid().to_string()]);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(
        // Placed with the admin token: the hold is the token's name's.
        line.starts_with(&format!("ERROR: {res}: FROZEN — hold {hold} by admin: ")),
        "{line}"
    );
    assert!(line.contains("\"clearing a stale lock\""), "{line}");
    assert!(line.contains(&format!("locksmith unhold {hold}")), "{line}");

    // The existing holder keeps its lease: it still renews.
    ok(&server.cli(&["renew", &lease]));
    assert_eq!(
        rows(&server, res, "state,lease,hold"),
        [["FROZEN", lease.as_str(), hold.as_str()]]
    );

    // Released, the frozen resource still shows one row, FROZEN.
    ok(&server.cli(&["release", &lease]));
    assert_eq!(
        rows(&server, res, "resource,state,slots"),
        [[res, "FROZEN", "0/1"]]
    );

    // Lifted: grants resume.
    let out = server.cli(&["unhold", &hold]);
    assert!(
        ok(&out).starts_with(&format!("hold {hold} on {res}: lifted (placed by admin: ")),
        "{}",
        describe(&out)
    );
    ok(&server.cli(&["acquire", res, "--pid", &other.pid().to_string()]));
    assert_eq!(server.state(res), "HOT");

    // --json gives the hold as the server sent it.
    let out = server.cli(&["hold", "other", "--for", "5s", "--reason", "r", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&ok(&out)).expect("hold json");
    assert_eq!(json["resource"], "other");
    assert_eq!(json["state"], "active");
    assert_eq!(json["reason"], "r");
}

/// Operator tokens named `alice@ops`, `bob@ops` and `carol@ops`: who acts is the token's name,
/// whatever `--operator` says.
struct Operators {
    alice: String,
    bob: String,
    carol: String,
}

fn operators(server: &ServerProc) -> Operators {
    Operators {
        alice: server.make_token("alice@ops", "operator", &[]),
        bob: server.make_token("bob@ops", "operator", &[]),
        carol: server.make_token("carol@ops", "operator", &[]),
    }
}

/// `alice@ops` holds `res` for 60 s with `reason`, once another operator acknowledges it.
fn hold_pending_ack(server: &ServerProc, ops: &Operators, res: &str, reason: &str) -> Output {
    server.cli_as(
        &ops.alice,
        &[
            "hold",
            res,
            "--for",
            "60s",
            "--reason",
            reason,
            "--require-ack",
        ],
    )
}

#[test]
fn a_hold_that_requires_an_ack_freezes_only_once_another_operator_acks() {
    let (_dir, server) = server();
    let ops = operators(&server);
    let res = "aim_lock_config.conf";
    let out = hold_pending_ack(&server, &ops, res, "stopping the orchestrator for 90 s");
    let hold = hold_of(&out);
    assert_eq!(
        stdout(&out),
        format!(
            "hold {hold} on {res}: PENDING ACK — run 'locksmith ack {hold}' as a different \
             operator\n"
        )
    );
    assert_eq!(
        rows(&server, res, "state,hold"),
        [["FREE".to_string(), format!("{hold}(pending)")]]
    );

    // Not in force yet: a grant goes through.
    let lease = lease_of(&server.cli(&["acquire", res]));
    ok(&server.cli(&["release", &lease]));

    // The operator who placed it cannot acknowledge it, whatever --operator says.
    let out = server.cli_as(&ops.alice, &["--operator", "bob@ops", "ack", &hold]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(line.contains("SAME OPERATOR"), "{line}");

    // A second operator can; from then on it is in force.
    let out = server.cli_as(&ops.bob, &["ack", &hold]);
    let text = ok(&out);
    assert!(
        text.starts_with(&format!(
            "hold {hold} on {res}: acknowledged by bob@ops — FROZEN for "
        )),
        "{text}"
    );
    let out = server.cli(&["acquire", res]);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    assert!(one_error_line(&out).starts_with(&format!("ERROR: {res}: FROZEN — ")));

    // A third operator lifts it.
    let out = server.cli_as(&ops.carol, &["unhold", &hold]);
    assert!(
        ok(&out).contains("lifted (placed by alice@ops: "),
        "{}",
        describe(&out)
    );

    // No such hold: one line, exit 1.
    let out = server.cli(&["ack", "999999"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert!(one_error_line(&out).contains("NO SUCH HOLD"));
}

/// Issue 15 items 11 and 12: a second `ack` printed "acknowledged by carol" and exited 0 though
/// nothing changed, and the placer acknowledged their own hold by typing their name in capitals.
/// (With authentication on, the placer's token acts whatever `--operator` says.)
#[test]
fn a_second_ack_or_one_by_the_placer_spelt_otherwise_is_refused_with_one_line_and_exit_1() {
    let (_dir, server) = server();
    let ops = operators(&server);
    let res = "cfg/second-ack.conf";
    let out = hold_pending_ack(&server, &ops, res, "maintenance");
    let hold = hold_of(&out);

    for spelling in ["ALICE@OPS", "Alice@Ops ", " alice@ops", "bob@ops"] {
        let out = server.cli_as(&ops.alice, &["--operator", spelling, "ack", &hold]);
        assert_eq!(code(&out), 1, "{spelling:?}: {}", describe(&out));
        assert!(
            one_error_line(&out).contains("SAME OPERATOR"),
            "{spelling:?}: {}",
            describe(&out)
        );
    }

    ok(&server.cli_as(&ops.bob, &["ack", &hold]));
    let out = server.cli_as(&ops.carol, &["ack", &hold]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert!(stdout(&out).is_empty(), "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(
        line.starts_with(&format!("ERROR: hold {hold}: ALREADY IN FORCE — hold {hold} on {res} was already acknowledged by bob@ops")),
        "{line}"
    );
    assert!(line.contains(&format!("locksmith unhold {hold}")), "{line}");

    // Nothing changed: still acknowledged by bob, and one ack in the audit trail.
    let out = server.cli(&["audit", "--resource", res, "--json"]);
    let acks = ok(&out).matches("\"hold_acked\"").count();
    assert_eq!(acks, 1, "{}", describe(&out));
}

#[test]
fn holds_and_breaks_refuse_to_act_without_a_reason() {
    let (_dir, server) = server();
    for args in [
        &["hold", "res", "--for", "60s", "--reason", ""][..],
        &["hold", "res", "--for", "60s", "--reason", "   "][..],
        &["break", "res", "--reason", ""][..],
    ] {
        let out = server.cli(args);
        assert_eq!(code(&out), 1, "{args:?}: {}", describe(&out));
        let line = one_error_line(&out);
        assert!(
            line.starts_with("ERROR: res: invalid --reason — must not be empty"),
            "{line}"
        );
    }
    // Missing altogether: a usage error, reported by clap.
    for args in [&["hold", "res", "--for", "60s"][..], &["break", "res"][..]] {
        let out = server.cli(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", describe(&out));
    }
    // Nothing to break: one line, exit 1.
    let out = server.cli(&["break", "res", "--reason", "x"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert!(one_error_line(&out).starts_with("ERROR: res: NOT HELD — "));
    assert_eq!(server.state("res"), "FREE");
}

#[test]
fn break_stops_the_running_holder_freezes_the_resource_and_is_audited() {
    let (_dir, server) = server();
    let res = "configs/aim_lock_config.conf";
    // A short TTL: `run` heartbeats every second, so it learns of the break within one.
    let (mut run, child, reap) = run_holder(&server, res, "3s");
    assert_eq!(server.state(res), "HOT");
    let holder_pid_before_break = holder_pid(&server, res);

    let alice = server.make_token("alice@ops", "operator", &[]);
    let out = server.cli_as(
        &alice,
        &[
            "break",
            res,
            "--reason",
            "orchestrator stuck since 03:12",
            "--freeze",
            "60s",
        ],
    );
    let text = ok(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{}", describe(&out));
    assert!(
        lines[0].starts_with(&format!("broke {res}: revoked lease ")),
        "{text}"
    );
    let holder = holder_pid_before_break;
    assert!(lines[0].contains(&format!("(pid {holder})")), "{text}");
    assert!(lines[1].starts_with("fence is now "), "{text}");
    let hold = lines[2]
        .strip_prefix("frozen by hold ")
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no hold line: {text}"))
        .to_string();
    assert!(
        lines[2].ends_with(&format!("lift it early with 'locksmith unhold {hold}'")),
        "{text}"
    );

    // `run` stops its command and exits 4, naming who broke it and why.
    let status = run.wait_within(Duration::from_secs(20));
    reap.disarm(); // `run` reaped it
    let err = run.stderr();
    assert_eq!(status.code(), Some(4), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with(&format!(
            "ERROR: {res}: lease BROKEN by alice@ops: orchestrator stuck since 03:12 — stopping \
             'sh -c echo $$; exec sleep 30'"
        )),
        "{err}"
    );
    let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
    assert!(!stat.contains("(sleep)"), "child still running: {stat}");

    // Frozen: nobody re-grabs it mid-operation.
    assert_eq!(
        rows(&server, res, "state,hold"),
        [["FROZEN", hold.as_str()]]
    );

    // The audit trail names the operator and the reason.
    let out = server.cli(&["audit", "--resource", res]);
    let text = ok(&out);
    let header: Vec<&str> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "TIME",
            "EVENT",
            "RESOURCE",
            "LEASE",
            "TOKEN",
            "OWNER/OPERATOR",
            "BY",
            "REASON/CAUSE"
        ]
    );
    let broke = text
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("broke"))
        .unwrap_or_else(|| panic!("no break in the audit: {text}"));
    assert!(broke.contains("alice@ops"), "{broke}");
    assert!(broke.contains("orchestrator stuck since 03:12"), "{broke}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().nth(1) == Some("granted")),
        "{text}"
    );

    // --json, --limit and --since.
    let out = server.cli(&["audit", "--resource", res, "--limit", "1", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&ok(&out)).expect("audit json");
    assert_eq!(json["records"].as_array().map(Vec::len), Some(1), "{json}");
    let out = server.cli(&["audit", "--since", "10m", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&ok(&out)).expect("audit json");
    assert!(
        json["records"].as_array().is_some_and(|r| r.len() >= 3),
        "{json}"
    );
    let out = server.cli(&["audit", "--since", "2999-01-01T00:00:00Z", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&ok(&out)).expect("audit json");
    assert_eq!(json["records"].as_array().map(Vec::len), Some(0), "{json}");
}

/// Issue 15 item 9: in `L=$(locksmith acquire R --json | jq .lease)` the owner was the
/// command substitution's subshell, which exits with the pipeline; the server's probe then
/// reclaimed the lock within 250 ms while the script went on working under it.
#[test]
fn the_script_pattern_l_equals_acquire_piped_to_jq_keeps_the_lock() {
    let (_dir, server) = server();
    let script = format!(
        "L=$('{bin}' --server {url} acquire res --json | jq -r .lease); echo \"$$ $L\"; \
         exec sleep 60",
        bin = common::bin(),
        url = server.url()
    );
    let mut bash = Proc {
        child: Command::new("bash")
            .args(["-c", &script])
            .env("USER", "tester")
            .env("LOCKSMITH_TOKEN", server.admin_token().unwrap_or_default())
            .env_remove("LOCKSMITH_TOKEN_FILE")
            .env_remove("LOCKSMITH_NODE")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("bash"),
    };
    let line = bash.read_line();
    let (shell, lease) = line.split_once(' ').expect("pid and lease");
    assert!(lease.parse::<u64>().is_ok(), "{line}");
    // The script (its pid stays with `exec sleep`) owns the lease, not the `$(…)` subshell.
    assert_eq!(rows(&server, "res", "pid,lease"), [[shell, lease]]);
    // Four probe intervals later the lock is still the script's.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(server.state_unchecked("res"), "HOT");
    assert_eq!(server.state("res"), "HOT", "a check from here must agree");
    assert_eq!(rows(&server, "res", "pid,lease"), [[shell, lease]]);
}

#[test]
fn why_reports_a_sigkilled_holder_on_this_node_and_the_lock_is_free_at_once() {
    let (_dir, server) = server_without_probe();
    let res = "aim_lock_config.conf";
    // TTL 60 s: the TTL cannot be what frees it within this test.
    let (mut run, _child, _orphan) = run_holder(&server, res, "60s");
    let holder = holder_pid(&server, res);
    signal(run.pid(), Signal::SIGKILL);
    run.wait_within(Duration::from_secs(5));
    // `run`'s supervisor, the lock's owner, kills the command and exits.
    common::wait_exited(holder, Duration::from_secs(5));
    assert_eq!(server.state_unchecked(res), "HOT");

    let out = server.cli(&["why", res]);
    let text = ok(&out);
    assert!(
        text.starts_with(&format!("{res}: FREE (was HOT)")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "holder pid {holder} is gone — reported; lock reclaimed"
        )),
        "{text}"
    );
    assert!(text.contains("process_died"), "history: {text}");
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.starts_with("next step: free: locksmith acquire")),
        "{text}"
    );
    assert_eq!(server.state_unchecked(res), "FREE");
}

/// `locksmith ARGS` (against `server`) run as pid 1 of a new PID namespace with its own `/proc`:
/// same host name, boot id and network as the test.
fn cli_in_new_pid_namespace(server: &ServerProc, args: &[&str]) -> Output {
    let mut cmd = Command::new(common::IN_NEW_PID_NAMESPACE[0]);
    cmd.args(&common::IN_NEW_PID_NAMESPACE[1..])
        .args([common::bin(), "--server", server.url()])
        .args(args)
        .env("USER", "tester")
        .env("LOCKSMITH_TOKEN", server.admin_token().unwrap_or_default())
        .env_remove("LOCKSMITH_TOKEN_FILE")
        .env_remove("LOCKSMITH_NODE")
        .env_remove("LOCKSMITH_SERVER")
        .stdin(std::process::Stdio::null());
    common::output_within(cmd, common::CALL_TIMEOUT)
}

/// Issue 15 item 3: `status` run in another PID namespace of the same machine (same host name
/// and boot id: a `hostNetwork` pod) did not find the live `run`'s pid in its `/proc`, reported
/// it dead — `holder pid … is gone — reported; lock reclaimed`, `ALL CLEAR` — and the server
/// took the lease from the live holder.
#[test]
fn status_and_why_from_another_pid_namespace_leave_a_live_holder_alone() {
    if !common::pid_namespaces_available() {
        return;
    }
    let (_dir, server) = server_without_probe();
    let (mut run, _child, _reap) = run_holder(&server, "res", "60s");
    let lease = rows(&server, "res", "lease");
    let holder = holder_pid(&server, "res");

    let out = cli_in_new_pid_namespace(&server, &["status"]);
    let text = stdout(&out);
    assert!(!text.contains("reclaimed"), "{text}");
    assert!(all_clear(&out), "{}", describe(&out));
    let out = cli_in_new_pid_namespace(&server, &["why", "res"]);
    let text = ok(&out);
    assert!(
        text.contains(&format!(
            "alive?        not checkable from here (holder pid {holder} is in PID namespace pid:["
        )),
        "{text}"
    );
    let out = cli_in_new_pid_namespace(&server, &["locks", "res"]);
    ok(&out);

    still_held(&server, "res", &lease, &mut run);
}

/// Issue 15 item 3: a server started in another PID namespace of the same machine freed every
/// holder of the host within 1.5 s (its probe did not find their pids in its `/proc`).
#[test]
fn a_server_in_another_pid_namespace_does_not_probe_the_hosts_holders() {
    if !common::pid_namespaces_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start_under(
        &common::IN_NEW_PID_NAMESPACE,
        &dir.path().join("data"),
        &["--probe-interval", "50ms"],
    );
    let (mut run, _child, _reap) = run_holder(&server, "res", "60s");
    let lease = rows(&server, "res", "lease");
    // Twenty probe intervals: long enough for any probe to have judged the holder.
    std::thread::sleep(Duration::from_secs(1));
    still_held(&server, "res", &lease, &mut run);
}

/// Issue 15 item 3: a process in a PID namespace without its own `/proc` reads another
/// namespace's processes under its pids; the owner it named (here pid 1's start time, from the
/// host's `/proc`) was accepted. It is refused, and says what to do.
#[test]
fn acquire_under_a_proc_of_another_pid_namespace_is_refused() {
    if !common::pid_namespaces_available() {
        return;
    }
    let (_dir, server) = server();
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child", common::bin(), "--server"])
        .args([server.url(), "acquire", "res", "--pid", "1"])
        .env("USER", "tester")
        .stdin(std::process::Stdio::null());
    let out = common::output_within(cmd, common::CALL_TIMEOUT);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(
        line.contains("cannot name the lock owner — /proc shows another PID namespace"),
        "{line}"
    );
    assert!(
        line.ends_with("(e.g. unshare --pid --fork --mount-proc)"),
        "{line}"
    );
    assert_eq!(server.state_unchecked("res"), "FREE");
}

#[test]
fn locks_and_status_reclaim_dead_holders_on_this_node_unless_told_not_to() {
    let (_dir, server) = server_without_probe();
    let (mut a, _a_child, _a_orphan) = run_holder(&server, "res/a", "60s");
    let (mut b, _b_child, _b_orphan) = run_holder(&server, "res/b", "60s");
    let holders = [holder_pid(&server, "res/a"), holder_pid(&server, "res/b")];
    for run in [&mut a, &mut b] {
        signal(run.pid(), Signal::SIGKILL);
        run.wait_within(Duration::from_secs(5));
    }
    for holder in holders {
        common::wait_exited(holder, Duration::from_secs(5));
    }
    // --no-check leaves them alone.
    assert_eq!(server.state_unchecked("res/a"), "HOT");

    // `locks` checks quietly, then lists: the ghost is gone.
    let out = server.cli(&["locks", "res/a", "-o", "resource,state"]);
    assert_eq!(
        ok(&out)
            .lines()
            .nth(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["res/a", "FREE"]),
        "{}",
        describe(&out)
    );

    // `status` fixes the other one, says so, and is then all clear.
    let out = server.cli(&["status"]);
    let text = stdout(&out);
    let fixed = text
        .lines()
        .find(|l| l.starts_with("fixed [dead_holder] res/b: "))
        .unwrap_or_else(|| panic!("no fixed line: {text}"));
    assert!(
        fixed.contains(&format!(
            "holder pid {} is gone — reported; lock reclaimed",
            holders[1]
        )),
        "{fixed}"
    );
    assert!(all_clear(&out), "{}", describe(&out));
    assert_eq!(server.state_unchecked("res/b"), "FREE");
}

#[test]
fn why_explains_a_live_holder_and_one_on_another_node() {
    let (_dir, server) = server();
    let me = std::process::id();
    ok(&server.cli(&[
        "acquire",
        "here",
        "--ttl",
        "30s",
        "--purpose",
        "nightly update",
    ]));
    let out = server.cli(&["why", "here"]);
    let text = ok(&out);
    assert!(text.starts_with("here: HOT — 1/1 slot(s) held"), "{text}");
    assert!(text.contains(&format!("(pid {me})")), "{text}");
    assert!(text.contains("\"nightly update\""), "{text}");
    assert!(
        text.contains(&format!("alive — pid {me} still runs")),
        "{text}"
    );
    assert!(text.contains("granted"), "history: {text}");
    let next = text.lines().last().unwrap_or_default();
    assert!(
        next.starts_with("next step: wait (locksmith run -w "),
        "{text}"
    );
    assert!(
        next.contains("locksmith hold here --for 90s --reason")
            && next.contains("then locksmith break here --reason"),
        "{next}"
    );

    ok(&server.cli(&["--node", "node-7", "acquire", "there", "--ttl", "30s"]));
    let text = ok(&server.cli(&["why", "there"]));
    assert!(
        text.contains("not checkable from here (holder on node-7)"),
        "{text}"
    );
    assert_eq!(server.state("there"), "HOT");

    // A frozen resource: the next step is the hold.
    let hold = hold_of(&server.cli(&["hold", "there", "--for", "90s", "--reason", "r"]));
    let text = ok(&server.cli(&["why", "there"]));
    assert!(
        text.lines().last().is_some_and(|l| l
            .starts_with(&format!("next step: wait for hold {hold} ("))
            && l.ends_with(&format!("or locksmith unhold {hold}"))),
        "{text}"
    );

    // --json carries the checks and the next step.
    let out = server.cli(&["why", "here", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&ok(&out)).expect("why json");
    assert_eq!(json["lock"]["state"], "HOT");
    assert_eq!(json["checks"][0]["verdict"], "alive");
    assert!(
        json["next_step"]
            .as_str()
            .is_some_and(|s| s.starts_with("wait"))
    );

    let text = ok(&server.cli(&["why", "nobody/holds/this"]));
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.starts_with("next step: free: ")),
        "{text}"
    );
}

#[test]
fn status_is_all_clear_on_a_clean_server_and_names_each_problem_otherwise() {
    let (_dir, server) = server();
    let out = server.cli(&["status"]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with(&format!("server {}: ok — locksmith ", server.url())),
        "{text}"
    );
    assert_eq!(lines[1], "HOT 0  STALE 0  FROZEN 0  DELAYED 0  WAITERS 0");
    assert!(all_clear(&out), "{}", describe(&out));

    let hold = hold_of(&server.cli(&[
        "hold",
        "configs/aim_lock_config.conf",
        "--for",
        "90s",
        "--reason",
        "clearing a stale lock",
    ]));
    let out = server.cli(&["status"]);
    assert_eq!(code(&out), 6, "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with("HOT 0  STALE 0  FROZEN 1  DELAYED 0  WAITERS 0")),
        "{text}"
    );
    let problem = text
        .lines()
        .find(|l| l.starts_with("[frozen] configs/aim_lock_config.conf"))
        .unwrap_or_else(|| panic!("no frozen problem: {text}"));
    assert!(problem.contains("clearing a stale lock"), "{problem}");
    assert!(
        problem.contains(&format!("locksmith unhold {hold}")),
        "{problem}"
    );
    assert!(!text.contains("ALL CLEAR"), "{text}");

    let out = server.cli(&["status", "--json"]);
    assert_eq!(code(&out), 6, "{}", describe(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(json["all_clear"], false);
    assert_eq!(json["problems"][0]["kind"], "frozen");

    ok(&server.cli(&["unhold", &hold]));
    let out = server.cli(&["status"]);
    assert!(all_clear(&out), "{}", describe(&out));

    // Unreachable stays 5.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = locksmith(&["--server", &url, "status"]);
    assert_eq!(code(&out), 5, "{}", describe(&out));
    one_error_line(&out);
}

#[test]
fn watch_prints_one_line_per_event() {
    let (_dir, server) = server();
    let mut watch = server.spawn(&["watch", "jobs/nightly"]);
    // Once this is printed the subscription is in place.
    let note = watch.read_stderr_line();
    assert!(
        note.starts_with("watching events on jobs/nightly at "),
        "{note}"
    );
    ok(&server.cli(&["acquire", "unrelated"]));
    let lease = lease_of(&server.cli(&["acquire", "jobs/nightly"]));
    let line = watch.read_line();
    let cells: Vec<&str> = line.split("  ").collect();
    let lease_cell = format!("lease {lease}");
    assert_eq!(
        cells.get(1..4),
        Some(&["granted", "jobs/nightly", lease_cell.as_str()][..]),
        "{line}"
    );
    assert!(line.contains("tester@"), "{line}");

    signal(watch.pid(), Signal::SIGINT);
    let status = watch.wait_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));

    // --json: one JSON record per line.
    let mut watch = server.spawn(&["watch", "--json"]);
    watch.read_stderr_line();
    ok(&server.cli(&["release", &lease]));
    let record: serde_json::Value = serde_json::from_str(&watch.read_line()).expect("json line");
    assert_eq!(record["kind"], "ended");
    assert_eq!(record["cause"], "released");
    assert_eq!(record["resource"], "jobs/nightly");
}

#[test]
fn a_lock_delay_keeps_a_broken_lock_from_being_regrabbed_at_once() {
    let (_dir, server) = server();
    let other = other_process();
    let pid = other.pid().to_string();
    ok(&server.cli(&["acquire", "res", "--pid", &pid, "--lock-delay", "30s"]));
    ok(&server.cli(&["break", "res", "--reason", "test", "--freeze", "0"]));
    let out = server.cli(&["acquire", "res"]);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(
        line.starts_with("ERROR: res: DELAYED — in lock-delay for "),
        "{line}"
    );
    assert_eq!(server.state("res"), "DELAYED");
    let text = ok(&server.cli(&["why", "res"]));
    assert!(text.contains("lock-delay      "), "{text}");
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.starts_with("next step: wait ")),
        "{text}"
    );
}

/// Bug pinned (issue 15, item 16): a FleetLock holder (Zincati's reboot slot) showed in `locks`
/// as `PID 1`, `TTL LEFT 36499d23h` and a heartbeat age, and in `why` as `fleetlock@ID (pid 1)`
/// with "heartbeats on time": a process with a century-long lease, which it is not.
#[test]
fn a_fleetlock_holder_shows_as_a_client_holding_a_slot_in_locks_and_why() {
    let (_dir, server) = server();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{}/fleetlock/v1/pre-reboot", server.url()))
            .header("fleet-lock-protocol", "true")
            .body(r#"{"client_params":{"id":"c0ffee","group":"default"}}"#)
            .send()
            .await
            .expect("pre-reboot")
            .status()
    });
    assert_eq!(status.as_u16(), 200);

    let text = ok(&server.cli(&["locks", "reboot/default"]));
    let header: Vec<&str> = text.lines().next().unwrap_or("").split("  ").collect();
    assert!(header[0].starts_with("RESOURCE"), "{text}");
    let row = text.lines().nth(1).expect("a row");
    assert!(!row.contains("36499d"), "{row}");
    let cells: Vec<&str> = row.split_whitespace().collect();
    // RESOURCE STATE OWNER NODE PID TOKEN AGE TTL-LEFT LAST-HEARTBEAT WAITERS SLOTS
    assert_eq!(
        cells[..5],
        ["reboot/default", "HOT", "fleetlock", "c0ffee", "-"],
        "{row}"
    );
    assert_eq!(cells[7..9], ["-", "-"], "no TTL left, no heartbeat: {row}");

    let text = ok(&server.cli(&["why", "reboot/default"]));
    for wrong in ["(pid 1)", "heartbeats on time", "36499d", "TTL left"] {
        assert!(!text.contains(wrong), "{wrong:?} in:\n{text}");
    }
    for right in [
        "holder          FleetLock client c0ffee",
        "held until the client reports steady state",
        "alive?        not a process",
        "next step: wait: FleetLock client c0ffee frees its slot",
    ] {
        assert!(text.contains(right), "{right:?} not in:\n{text}");
    }
}
