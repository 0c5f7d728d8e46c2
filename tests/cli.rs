//! The `locksmith` binary end to end: the real CLI against a real `locksmith server` process.

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::{Killer, Proc, ServerProc, code, describe, locksmith, one_error_line, signal, stdout};
use nix::sys::signal::Signal;

fn server() -> (tempfile::TempDir, ServerProc) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start(&dir.path().join("data"));
    (dir, server)
}

/// `lease <id> token <token> on <resource> (ttl …)` → (id, token).
fn lease_and_token(out: &std::process::Output) -> (String, String) {
    let text = stdout(out);
    let words: Vec<&str> = text.split_whitespace().collect();
    assert!(
        words.len() >= 6 && words[0] == "lease" && words[2] == "token" && words[4] == "on",
        "{}",
        describe(out)
    );
    (words[1].to_string(), words[3].to_string())
}

/// A process that is not this test: another owner for the same resource.
fn other_process() -> Proc {
    let child = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    Proc { child }
}

/// Rows of `locks RESOURCE -o COLS`, split into cells.
fn rows(server: &ServerProc, resource: &str, cols: &str) -> Vec<Vec<String>> {
    let out = server.cli(&["locks", resource, "-o", cols]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    stdout(&out)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn acquire_shows_hot_with_owner_then_release_frees() {
    let (_dir, server) = server();
    let res = "configs/aim_lock_config.conf";
    let out = server.cli(&["acquire", res, "--ttl", "30s"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(
        stdout(&out).ends_with(&format!("on {res} (ttl 30s)\n")),
        "{}",
        describe(&out)
    );
    let (lease, token) = lease_and_token(&out);

    // The owner is the process that ran the CLI: this test.
    let me = std::process::id().to_string();
    let hot = rows(&server, res, "resource,state,owner,pid,token,lease,slots");
    assert_eq!(
        hot,
        [[
            res,
            "HOT",
            "tester",
            me.as_str(),
            token.as_str(),
            lease.as_str(),
            "1/1"
        ]],
    );

    // The default table has the lslocks-like header.
    let out = server.cli(&["locks"]);
    let header: Vec<String> = stdout(&out)
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(
        header,
        [
            "RESOURCE",
            "STATE",
            "OWNER",
            "NODE",
            "PID",
            "TOKEN",
            "AGE",
            "TTL",
            "LEFT",
            "LAST",
            "HEARTBEAT",
            "WAITERS",
            "SLOTS"
        ]
    );

    let out = server.cli(&["release", &lease, "--fence-token", &token]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(stdout(&out), format!("lease {lease} on {res} released\n"));
    assert_eq!(
        rows(&server, res, "resource,state,slots"),
        [[res, "FREE", "0/1"]]
    );

    // The lease is gone for good: renewing it is a lost lease (4).
    let out = server.cli(&["renew", &lease]);
    assert_eq!(code(&out), 4, "{}", describe(&out));
    one_error_line(&out);
}

/// Issue 15 item 14: the README's tour showed a second `acquire` from the same shell failing
/// HOT; it returns the shell's own lease, renewed (re-acquire is recursive), with exit 0.
#[test]
fn acquiring_again_from_the_same_shell_returns_its_own_lease() {
    let (_dir, server) = server();
    let first = server.cli(&["acquire", "res", "--ttl", "60s"]);
    assert_eq!(code(&first), 0, "{}", describe(&first));
    let again = server.cli(&["acquire", "res", "--ttl", "60s"]);
    assert_eq!(code(&again), 0, "{}", describe(&again));
    assert_eq!(lease_and_token(&first), lease_and_token(&again));
}

#[test]
fn a_second_owner_is_refused_hot_with_one_line_naming_the_holder() {
    let (_dir, server) = server();
    let res = "aim_lock_config.conf";
    let out = server.cli(&["acquire", res]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let (lease, token) = lease_and_token(&out);

    let other = other_process();
    let out = server.cli(&["acquire", res, "--pid", &other.pid().to_string()]);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    let line = one_error_line(&out);
    let me = std::process::id();
    assert!(
        line.starts_with(&format!("ERROR: {res}: HOT — held by tester@")),
        "{line}"
    );
    assert!(line.contains(&format!("(pid {me})")), "{line}");
    assert!(
        line.contains(&format!("lease {lease} token {token}")),
        "{line}"
    );
    assert!(line.contains("last heartbeat"), "{line}");
    assert!(
        line.contains(&format!("; run 'locksmith locks {res}'")),
        "{line}"
    );
    assert!(stdout(&out).is_empty(), "{}", describe(&out));

    // --json gives the lease as JSON.
    let out = server.cli(&["renew", &lease, "--fence-token", &token, "--json"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["resource"], res);
    assert_eq!(json["token"].to_string(), token);

    // A wrong token is refused as a lost lease (4).
    let out = server.cli(&["renew", &lease, "--fence-token", "999999"]);
    assert_eq!(code(&out), 4, "{}", describe(&out));
    one_error_line(&out);
}

/// Issue 15 item 13: a second `acquire` by the same process with another `--ttl` or `--slots`
/// was handed its old lease, the new TTL and size silently ignored.
#[test]
fn a_reacquire_with_another_ttl_or_slot_count_exits_3_with_one_line_and_keeps_the_lease() {
    let (_dir, server) = server();
    let res = "cfg/reacquire.conf";
    let out = server.cli(&["acquire", res, "--ttl", "15s"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let (lease, _) = lease_and_token(&out);
    // The same ask again: the same lease.
    let out = server.cli(&["acquire", res, "--ttl", "15s"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(lease_and_token(&out).0, lease);

    let out = server.cli(&["acquire", res, "--ttl", "60s"]);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    assert!(stdout(&out).is_empty(), "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(
        line.starts_with(&format!(
            "ERROR: {res}: TTL MISMATCH — this process already holds lease {lease} on {res} \
             with a TTL of 15s, asked for 1m"
        )),
        "{line}"
    );
    assert!(line.contains(&format!("locksmith renew {lease}")), "{line}");

    let out = server.cli(&["acquire", res, "--ttl", "15s", "--slots", "2"]);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    assert!(
        one_error_line(&out).contains("SLOTS MISMATCH"),
        "{}",
        describe(&out)
    );

    assert_eq!(
        rows(&server, res, "lease,slots"),
        [[lease.clone(), "1/1".to_string()]]
    );
}

#[test]
fn bad_input_exits_1_with_one_line_naming_the_field() {
    let (_dir, server) = server();
    let out = server.cli(&["acquire", "res", "--ttl", "0s"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(line.starts_with("ERROR: res: invalid ttl_ms — "), "{line}");
    assert!(line.contains("--ttl"), "{line}");

    let out = server.cli(&["acquire", ""]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(
        line.contains("invalid resource name — must not be empty"),
        "{line}"
    );

    let out = server.cli(&["run", "a b", "--", "true"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert!(one_error_line(&out).contains("invalid resource name"));

    // A missing argument is a usage error, reported by clap (2).
    let out = server.cli(&["acquire"]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    // An unknown --output column too.
    let out = server.cli(&["locks", "-o", "resource,size"]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
}

#[test]
fn locks_prefix_lists_only_the_matching_resources() {
    let (_dir, server) = server();
    for res in [
        "fleet/drone-1.conf",
        "fleet/drone-2.conf",
        "factory/arm.conf",
    ] {
        let out = server.cli(&["acquire", res, "--ttl", "30s"]);
        assert_eq!(code(&out), 0, "{}", describe(&out));
    }
    let out = server.cli(&["locks", "--prefix", "fleet/", "-o", "resource,state"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let listed: Vec<String> = stdout(&out).lines().skip(1).map(str::to_string).collect();
    let names: Vec<&str> = listed
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["fleet/drone-1.conf", "fleet/drone-2.conf"]);
    // A prefix and a resource together are a usage error.
    let out = server.cli(&["locks", "fleet/drone-1.conf", "--prefix", "fleet/"]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
}

#[test]
fn an_unreachable_server_exits_5() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["locks"],
        vec!["acquire", "res"],
        vec!["run", "res", "--", "true"],
    ] {
        let mut full = vec!["--server", url.as_str()];
        full.extend(args);
        let out = locksmith(&full);
        assert_eq!(code(&out), 5, "{}", describe(&out));
        let line = one_error_line(&out);
        assert!(
            line.starts_with(&format!(
                "ERROR: cannot reach the Locksmith server at {url}"
            )),
            "{line}"
        );
        assert!(
            line.ends_with("; start it with 'locksmith server' or set --server/LOCKSMITH_SERVER"),
            "{line}"
        );
    }
}

/// Issue 15 item 14: `--server notaurl` exited 5 ("cannot reach the server"), as if a server
/// were down, instead of 2 (a usage error).
#[test]
fn a_server_address_that_is_not_a_url_is_a_usage_error() {
    for bad in ["notaurl", "ftp://127.0.0.1:7400", "http://"] {
        for args in [
            vec!["--server", bad, "locks"],
            vec!["--server", bad, "why", "res"],
        ] {
            let out = locksmith(&args);
            assert_eq!(code(&out), 2, "{bad}: {}", describe(&out));
            assert!(
                common::stderr(&out).contains("--server"),
                "{bad}: {}",
                describe(&out)
            );
        }
    }
    let mut cmd = common::command(&["acquire", "res"]);
    cmd.env("LOCKSMITH_SERVER", "notaurl");
    let out = common::output_within(cmd, common::CALL_TIMEOUT);
    assert_eq!(code(&out), 2, "{}", describe(&out));
}

#[test]
fn run_exports_the_lease_and_passes_the_exit_status_through() {
    let (_dir, server) = server();
    let out = server.cli(&[
        "run",
        "jobs/nightly",
        "--",
        "sh",
        "-c",
        "echo \"$LOCKSMITH_FENCE_TOKEN $LOCKSMITH_LEASE $LOCKSMITH_RESOURCE $LOCKSMITH_SERVER\"; exit 7",
    ]);
    assert_eq!(code(&out), 7, "{}", describe(&out));
    let text = stdout(&out);
    let env: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(env.len(), 4, "{}", describe(&out));
    assert!(
        env[0].parse::<u64>().is_ok_and(|t| t > 0),
        "token: {}",
        describe(&out)
    );
    assert!(env[1].parse::<u64>().is_ok(), "lease: {}", describe(&out));
    assert_eq!(env[2..], ["jobs/nightly", server.url()]);
    // Released when the command exited.
    assert_eq!(server.state("jobs/nightly"), "FREE");

    let out = server.cli(&["run", "jobs/nightly", "--", "true"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let out = server.cli(&["run", "jobs/nightly", "--", "no-such-command-anywhere"]);
    assert_eq!(code(&out), 127, "{}", describe(&out));
    assert!(one_error_line(&out).contains("cannot run 'no-such-command-anywhere'"));
    assert_eq!(server.state("jobs/nightly"), "FREE");
}

#[test]
fn run_nonblocking_on_a_hot_lock_exits_3_without_running() {
    let (_dir, server) = server();
    let out = server.cli(&["acquire", "deploy", "--ttl", "30s"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    let out = server.cli(&["run", "deploy", "-n", "--", "sh", "-c", &touch]);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(
        line.starts_with("ERROR: deploy: HOT — held by tester@"),
        "{line}"
    );
    assert!(line.ends_with("or retry with -w"), "{line}");
    assert!(!marker.exists(), "the command ran without the lock");

    // -w waits, in vain here, then gives up HOT too.
    let out = server.cli(&["run", "deploy", "-w", "1", "--", "sh", "-c", &touch]);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    assert!(!marker.exists(), "the command ran without the lock");
}

#[test]
fn run_releases_the_lock_when_its_child_is_killed() {
    let (_dir, server) = server();
    let mut run = server.spawn(&["run", "res", "--", "sh", "-c", "echo $$; exec sleep 30"]);
    let child: u32 = run.read_line().parse().expect("child pid");
    let reap = Killer::new(child);
    assert_eq!(server.state("res"), "HOT");
    signal(child, Signal::SIGKILL);
    let status = run.wait_within(Duration::from_secs(15));
    reap.disarm(); // `run` reaped it: the pid may be reused now
    assert_eq!(status.code(), Some(137), "{}", run.stderr());
    assert_eq!(server.state("res"), "FREE");
}

/// Issue 15 item 8: a lease released by someone else (by its id) while `run`'s command ran, and
/// taken by a third owner, ended in exit 0 when the command finished before the next heartbeat:
/// the final release's "already released" answer was taken as success.
#[test]
fn run_exits_4_when_its_lease_was_released_by_someone_else() {
    let (_dir, server) = server();
    let dir = tempfile::tempdir().expect("tempdir");
    let go = dir.path().join("go");
    // The default TTL (15 s): the next heartbeat is 5 s away, after the command has finished.
    let script = format!(
        "echo $LOCKSMITH_LEASE; while [ ! -e {} ]; do sleep 0.02; done",
        go.display()
    );
    let mut run = server.spawn(&["run", "res", "--", "sh", "-c", &script]);
    let lease = run.read_line();
    let out = server.cli(&["release", &lease]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let third = other_process();
    let out = server.cli(&["acquire", "res", "--pid", &third.pid().to_string()]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    std::fs::write(&go, "").expect("let the command finish");

    let status = run.wait_within(Duration::from_secs(15));
    let err = run.stderr();
    assert_eq!(status.code(), Some(4), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("ERROR: res: LEASE LOST — "), "{err}");
    assert!(lines[0].contains("released by someone else"), "{err}");
    // The third owner's lease is untouched.
    assert_eq!(server.state("res"), "HOT");
}

/// Field 22 of `/proc/PID/stat`, the start time: with the pid it names one process.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(22 - 3).map(str::to_string)
}

/// Whether the process that was `pid`, started at `started`, still runs (a zombie does not).
fn still_runs(pid: u32, started: &str) -> bool {
    !common::exited(pid) && start_time(pid).as_deref() == Some(started)
}

/// Issue 15 item 2: `kill -9` of `run` freed the lock (the server's probe found its pid gone)
/// while its command, reparented to pid 1, kept working unprotected. The command — its
/// children, an orphaned grandchild, and one that moved to a session of its own — must be gone
/// by the time the lock is free.
#[test]
fn kill_9_of_run_kills_its_command_and_everything_it_started_before_the_lock_is_free() {
    let (_dir, server) = server();
    let script = "sleep 300 & a=$!; \
                  b=$(sh -c 'sleep 300 >/dev/null 2>&1 & echo $!'); \
                  setsid sleep 300 & c=$!; \
                  echo $$ $a $b $c; wait";
    let mut run = server.spawn(&["run", "--ttl", "60s", "res", "--", "sh", "-c", script]);
    let line = run.read_line();
    let pids: Vec<u32> = line
        .split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect();
    assert_eq!(pids.len(), 4, "{line}");
    let _reap: Vec<Killer> = pids.iter().map(|p| Killer::new(*p)).collect();
    let started: Vec<String> = pids
        .iter()
        .map(|p| start_time(*p).expect("running"))
        .collect();
    assert_eq!(server.state_unchecked("res"), "HOT");

    signal(run.pid(), Signal::SIGKILL);
    run.wait_within(Duration::from_secs(5));
    // TTL 60 s: only the probe (250 ms) frees it. Whenever it is seen free, every process of
    // the command must already be gone: looked at after the state, a process seen alive was
    // alive when the lock was free.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let free = server.state_unchecked("res") == "FREE";
        let alive: Vec<u32> = pids
            .iter()
            .zip(&started)
            .filter(|(p, t)| still_runs(**p, t))
            .map(|(p, _)| *p)
            .collect();
        if free {
            assert!(
                alive.is_empty(),
                "lock free while {alive:?} of {line} still run"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still held: {}",
            describe(&server.cli(&["locks", "res"]))
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a command leaves running when it exits still works under the lock: `run` keeps the lock
/// (and says so) until those processes have ended, then releases it and exits with the
/// command's status.
#[test]
fn run_holds_the_lock_until_what_its_command_left_running_has_ended() {
    let (_dir, server) = server();
    let dir = tempfile::tempdir().expect("tempdir");
    let go = dir.path().join("go");
    let script = format!(
        "(while [ ! -e {} ]; do sleep 0.02; done) >/dev/null 2>&1 & echo $!; exit 3",
        go.display()
    );
    let mut run = server.spawn(&["run", "res", "--", "sh", "-c", &script]);
    let left: u32 = run.read_line().parse().expect("pid");
    let _reap = Killer::new(left);
    let warning = run.read_stderr_line();
    assert!(
        warning.starts_with("WARNING: res: still running — 'sh -c ")
            && warning.contains(&format!("exited, leaving 1 of its processes (pid {left})"))
            && warning.ends_with("; the lock is held until they end"),
        "{warning}"
    );
    assert_eq!(server.state("res"), "HOT");
    assert!(run.child.try_wait().expect("try_wait").is_none());
    std::fs::write(&go, "").expect("let it end");
    let status = run.wait_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(3));
    assert_eq!(server.state("res"), "FREE");
}

/// SIGTERM to `run` (what `timeout`, systemd or `kill` send) stops the command and everything it
/// started, as Ctrl-C stops a whole job — not only the command's first process, leaving its
/// children to work on after the lock is released.
#[test]
fn sigterm_to_run_stops_its_command_and_everything_it_started() {
    let (_dir, server) = server();
    let mut run = server.spawn(&["run", "res", "--", "sh", "-c", "sleep 300 & echo $!; wait"]);
    let grandchild: u32 = run.read_line().parse().expect("pid");
    let _reap = Killer::new(grandchild);
    let started = start_time(grandchild).expect("running");
    signal(run.pid(), Signal::SIGTERM);
    let status = run.wait_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(128 + 15), "{}", run.stderr());
    assert!(!still_runs(grandchild, &started), "sleep outlived the lock");
    assert_eq!(server.state_unchecked("res"), "FREE");
}

/// Bug pinned: after SIGTERM, a process the command left behind that ignores SIGTERM kept `run`
/// (and the lock) waiting forever, and the warning said the lock was held until it ended. It
/// gets the grace period, then SIGKILL; the warning says it is being stopped.
#[test]
fn sigterm_to_run_kills_what_ignores_it_after_the_grace_period() {
    let (_dir, server) = server();
    let script = "(trap '' TERM; exec sleep 300) & echo $!; wait";
    let mut run = server.spawn(&["run", "res", "--", "sh", "-c", script]);
    let stubborn: u32 = run.read_line().parse().expect("pid");
    let _reap = Killer::new(stubborn);
    // Only once it is `sleep` has it ignored SIGTERM (the trap runs before the exec).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let comm = || std::fs::read_to_string(format!("/proc/{stubborn}/comm")).unwrap_or_default();
    while comm().trim() != "sleep" {
        assert!(std::time::Instant::now() < deadline, "never became sleep");
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = start_time(stubborn).expect("running");
    signal(run.pid(), Signal::SIGTERM);
    let warning = run.read_stderr_line();
    assert!(
        warning.contains("they are being stopped too") && !warning.contains("lock is held"),
        "{warning}"
    );
    let status = run.wait_within(Duration::from_secs(20));
    assert_eq!(status.code(), Some(128 + 15), "{}", run.stderr());
    assert!(
        !still_runs(stubborn, &started),
        "what ignored SIGTERM outlived run"
    );
    assert_eq!(server.state_unchecked("res"), "FREE");
}

/// Without the server's probe, the lock of a `kill -9`'d `run` is freed by its TTL; its command
/// is gone long before.
#[test]
fn kill_9_of_run_frees_the_lock_within_its_ttl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start_with(&dir.path().join("data"), &["--probe-interval", "0"]);
    let mut run = server.spawn(&[
        "run",
        "res",
        "--ttl",
        "2s",
        "--",
        "sh",
        "-c",
        "echo $$; exec sleep 30",
    ]);
    let child: u32 = run.read_line().parse().expect("child pid");
    let _reap = Killer::new(child);
    assert_eq!(server.state("res"), "HOT");
    signal(run.pid(), Signal::SIGKILL);
    run.wait_within(Duration::from_secs(5));
    common::wait_exited(child, Duration::from_secs(5));
    // TTL 2s, plus the reaper's interval and slack for a loaded machine.
    assert!(
        server.wait_for_state("res", "FREE", Duration::from_secs(2 + 8)),
        "still held: {}",
        describe(&server.cli(&["locks", "res"]))
    );
}

#[test]
fn run_stops_its_child_and_exits_4_when_the_lease_expires() {
    let (_dir, server) = server();
    let mut run = server.spawn(&[
        "run",
        "res",
        "--ttl",
        "1s",
        "--",
        "sh",
        "-c",
        "echo $$; exec sleep 30",
    ]);
    let child: u32 = run.read_line().parse().expect("child pid");
    let reap = Killer::new(child);
    assert_eq!(server.state("res"), "HOT");

    // Freeze `run` past its TTL: its heartbeats stop and the server reclaims the lease.
    signal(run.pid(), Signal::SIGSTOP);
    std::thread::sleep(Duration::from_secs(3));
    signal(run.pid(), Signal::SIGCONT);

    let status = run.wait_within(Duration::from_secs(20));
    reap.disarm(); // `run` reaped it: the pid may be reused now
    let err = run.stderr();
    assert_eq!(status.code(), Some(4), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("ERROR: res: LEASE LOST — "), "{err}");
    assert!(
        lines[0].contains("stopping 'sh -c echo $$; exec sleep 30'"),
        "{err}"
    );
    // `run` reaped its child before exiting: the pid is gone (or, at worst, reused by another).
    let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
    assert!(!stat.contains("(sleep)"), "child still running: {stat}");
}

#[test]
fn locks_json_and_completions() {
    let (_dir, server) = server();
    let out = server.cli(&["acquire", "reboot/default", "--slots", "2", "--json"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let lease: serde_json::Value = serde_json::from_slice(&out.stdout).expect("lease json");
    assert_eq!(lease["slots"], 2);

    let out = server.cli(&["locks", "--json"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("locks json");
    assert!(all["server_time_ms"].as_u64().is_some_and(|t| t > 0));
    assert_eq!(all["locks"][0]["resource"], "reboot/default");
    assert_eq!(all["locks"][0]["state"], "HOT");

    let out = locksmith(&["completions", "bash"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(stdout(&out).contains("locksmith"), "{}", describe(&out));
}

#[test]
fn the_server_stops_gracefully_on_sigterm() {
    let (_dir, mut server) = server();
    let out = server.cli(&["locks"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let status = server.terminate(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log());
}

/// Starts `locksmith server --listen 127.0.0.1:0 --data DIR EXTRA…` and hands back every line
/// it prints on stdout (the channel closes when the process does).
fn server_lines(
    dir: &std::path::Path,
    extra: &[&str],
) -> (Proc, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    let data = dir.to_str().expect("utf-8");
    let mut args = vec!["server", "--listen", "127.0.0.1:0", "--data", data];
    args.extend_from_slice(extra);
    let mut child = common::command(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn server");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (Proc { child }, rx)
}

#[test]
fn the_server_announces_its_wire_port_and_a_wire_client_locks_through_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, lines) = server_lines(&dir.path().join("data"), &[]);
    let first = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("announce line");
    let url = first
        .strip_prefix("locksmith listening on ")
        .expect("HTTP line first")
        .to_string();
    let second = lines
        .recv_timeout(Duration::from_secs(5))
        .expect("wire line");
    let wire = second
        .strip_prefix("locksmith wire protocol on 127.0.0.1:")
        .map(|port| format!("127.0.0.1:{port}"))
        .unwrap_or_else(|| panic!("wire line: {second:?}"));

    // Authentication is on: the first start wrote the admin token, which the wire client sends
    // right after the preamble, and the CLI reads with --token-file.
    let token_file = dir.path().join("data").join("admin.token");
    let token = std::fs::read_to_string(&token_file).expect("admin.token");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let lease = rt.block_on(async {
        let client = locksmith_client::WireClient::new(wire).with_token(&token);
        client
            .acquire(&locksmith_client::api::AcquireRequest {
                resource: "fleet/wire.conf".into(),
                owner: locksmith_core::Owner {
                    node: "wire-node".into(),
                    pid: 4242,
                    start_time: 1,
                    boot_id: "wire-boot".into(),
                    user: "tester".into(),
                    purpose: "wire test".into(),
                    pid_ns: None,
                },
                ttl_ms: Some(30_000),
                wait_ms: None,
                slots: None,
                lock_delay_ms: None,
            })
            .await
            .expect("acquire over the wire")
    });
    let token_file = token_file.to_str().expect("utf-8");
    let out = locksmith(&[
        "--server",
        &url,
        "--token-file",
        token_file,
        "locks",
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("fleet/wire.conf"), "{text}");
    assert!(
        text.contains(&format!("\"token\": {}", lease.token.0))
            || text.contains(&format!("\"token\":{}", lease.token.0)),
        "{text}"
    );
}

#[test]
fn wire_listen_off_announces_no_wire_port_and_a_bad_value_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let out = locksmith(&[
        "server",
        "--listen",
        "127.0.0.1:0",
        "--data",
        data,
        "--wire-listen",
        "nowhere",
    ]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--wire-listen") && err.contains("or off"),
        "{err}"
    );

    let (server, lines) = server_lines(&dir.path().join("off"), &["--wire-listen", "off"]);
    let first = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("announce line");
    assert!(first.starts_with("locksmith listening on "), "{first}");
    signal(server.pid(), Signal::SIGTERM);
    // Everything else it printed before exiting: no wire line.
    let rest: Vec<String> = lines.iter().collect();
    assert!(rest.iter().all(|l| !l.contains("wire")), "{rest:?}");
}

#[test]
fn verify_store_passes_a_sound_file_and_refuses_a_damaged_one_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // A fresh directory has nothing to verify.
    let mut server = ServerProc::start_with(&data, &["--verify-store"]);
    let out = server.cli(&["acquire", "fleet/verify.conf", "--ttl", "60s"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(server.terminate(Duration::from_secs(15)).code(), Some(0));
    // A cleanly closed, sound file verifies and serves.
    let mut server = ServerProc::start_with(&data, &["--verify-store"]);
    assert!(
        server.log().contains("every page checked"),
        "{}",
        server.log()
    );
    assert_eq!(server.terminate(Duration::from_secs(15)).code(), Some(0));

    // Damage every page after the first.
    let file = data.join("locksmith.redb");
    let mut bytes = std::fs::read(&file).expect("read");
    for b in bytes.iter_mut().skip(4096) {
        *b ^= 0x5A;
    }
    std::fs::write(&file, &bytes).expect("write");
    let d = data.to_str().expect("utf-8");
    let out = locksmith(&[
        "server",
        "--listen",
        "127.0.0.1:0",
        "--data",
        d,
        "--verify-store",
    ]);
    assert_ne!(code(&out), 0, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(line.contains("store verification failed"), "{line}");
    assert!(line.contains(d), "{line}");
}
