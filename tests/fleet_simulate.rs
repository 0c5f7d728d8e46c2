//! `locksmith fleet simulate`, the real binary against a real server (auth on): the simulated
//! agents register and apply a new revision but for the ones `--fail-rate` picked, and the same
//! `--seed` picks the same ones in another run; a `--config` not written yet is applied when it
//! is; bad rates, no config at all, an unreachable server and a token that may not make node
//! tokens are refused with one line and its exit code before anything is made; SIGINT and
//! SIGTERM stop it with exit 0.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::fleet::{blocking_as, free_port};
use common::{Proc, ServerProc, code, describe, one_error_line, stderr};
use locksmith_sim::{Behaviour, Rates};
use nix::sys::signal::Signal;
use serde_json::Value;

const CONFIG: &str = "aim.conf";
/// Far longer than 60 simulated agents take on loopback, even on a busy machine.
const LIMIT: Duration = Duration::from_secs(30);

/// A running `fleet simulate`, its output collected as it comes.
struct Sim {
    proc: Proc,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<String>>,
}

impl Sim {
    /// `locksmith fleet simulate --config aim.conf --every 100ms ARGS` as the admin.
    fn start(server: &ServerProc, args: &[&str]) -> Sim {
        let mut all = vec!["fleet", "simulate", "--config", CONFIG, "--every", "100ms"];
        all.extend_from_slice(args);
        let mut proc = server.spawn(&all);
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(String::new()));
        let stdout = proc.child.stdout.take().expect("stdout piped");
        let lines = Arc::clone(&out);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let mut stderr = proc.child.stderr.take().expect("stderr piped");
        let text = Arc::clone(&err);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    return;
                }
                let chunk = String::from_utf8_lossy(&buf[..n]).into_owned();
                text.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&chunk);
            }
        });
        Sim { proc, out, err }
    }

    fn last_line(&self) -> String {
        let lines = self.out.lock().unwrap_or_else(|e| e.into_inner());
        lines.last().cloned().unwrap_or_default()
    }

    fn stderr(&self) -> String {
        self.err.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until its status line reads `want`.
    fn wait_line(&mut self, want: &str) {
        let deadline = Instant::now() + LIMIT;
        while self.last_line() != want {
            if let Some(status) = self.proc.child.try_wait().expect("try_wait") {
                panic!(
                    "exited ({status}) before {want:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "never {want:?}; last {:?}",
                self.last_line()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `sig` and returns its exit code.
    fn stop_with(&mut self, sig: Signal) -> i32 {
        common::signal(self.proc.pid(), sig);
        let status = self.proc.wait_within(LIMIT);
        status.code().unwrap_or_else(|| {
            panic!(
                "killed by {status} instead of stopping on {sig:?}; stderr:\n{}",
                self.stderr()
            )
        })
    }
}

/// `GET PATH` as `client`, as JSON.
fn get(client: &reqwest::blocking::Client, server: &ServerProc, path: &str) -> Value {
    client
        .get(format!("{}{path}", server.url()))
        .send()
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Per node with `prefix`: its online flag and its last report of [`CONFIG`] (`Null` if none).
fn endpoints(
    http: &reqwest::blocking::Client,
    server: &ServerProc,
    prefix: &str,
) -> BTreeMap<String, (bool, Value)> {
    let fleet = get(http, server, "/v1/fleet");
    fleet["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter(|a| a["node"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .map(|a| {
            let report = a["configs"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["config"] == CONFIG))
                .map(|c| c["report"].clone())
                .unwrap_or(Value::Null);
            (
                a["node"].as_str().unwrap_or_default().to_string(),
                (a["online"] == true, report),
            )
        })
        .collect()
}

/// Waits until the server sees `agents` nodes `PREFIX-…`, all online, each of whose last report
/// of revision `rev` says applied or failed; returns the indices of the failed ones.
fn wait_settled(
    http: &reqwest::blocking::Client,
    server: &ServerProc,
    prefix: &str,
    agents: usize,
    rev: u64,
) -> Vec<usize> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let seen = endpoints(http, server, &format!("{prefix}-"));
        let settled = seen.len() == agents
            && seen.values().all(|(online, r)| {
                *online && r["rev"] == rev && (r["state"] == "applied" || r["state"] == "failed")
            });
        if settled {
            return seen
                .iter()
                .filter(|(_, (_, r))| r["state"] == "failed")
                .map(|(node, _)| {
                    node.rsplit_once('-')
                        .and_then(|(_, i)| i.parse().ok())
                        .expect("PREFIX-NNNNN")
                })
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "{prefix}: never {agents} online agents settled on r{rev}; saw {} {seen:?}",
            seen.len()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The agents `--fail-rate 0.1 --seed SEED` picks, as the simulator's library draws them.
fn drawn(seed: u64, agents: usize) -> Vec<usize> {
    let rates = Rates {
        fail: 0.1,
        ..Rates::default()
    };
    (0..agents)
        .filter(|&i| Behaviour::draw(seed, i, &rates).fails)
        .collect()
}

fn put(server: &ServerProc, dir: &Path, content: &str) -> u64 {
    server.put_config(CONFIG, &dir.join("put.conf"), content, &[])
}

#[test]
fn sixty_simulated_agents_register_the_fail_rate_picks_the_same_agents_for_the_same_seed_and_the_rest_apply_the_new_revision()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start(&dir.path().join("data"));
    let http = blocking_as(&server.admin_token().expect("admin token"));
    let r1 = put(&server, dir.path(), "threshold = 1\n");

    // Run A: seed 7. Every agent comes up healthy on r1 (its first revision)…
    let mut a = Sim::start(
        &server,
        &[
            "--agents",
            "60",
            "--seed",
            "7",
            "--fail-rate",
            "0.1",
            "--prefix",
            "a",
        ],
    );
    a.wait_line(&format!(
        "agents 60 online 60 offline 0 failed 0 | {CONFIG} r{r1} 60"
    ));
    assert_eq!(
        wait_settled(&http, &server, "a", 60, r1),
        Vec::<usize>::new()
    );
    // …and the seed's tenth fails its health hook on r2 and goes back to r1.
    let r2 = put(&server, dir.path(), "threshold = 2\n");
    let failing = wait_settled(&http, &server, "a", 60, r2);
    assert_eq!(
        failing,
        drawn(7, 60),
        "the agents seed 7 draws are the ones that fail"
    );
    assert!(
        !failing.is_empty() && failing.len() < 60,
        "a tenth of 60 fails: {failing:?}"
    );
    let n = failing.len();
    a.wait_line(&format!(
        "agents 60 online 60 offline 0 failed {n} | {CONFIG} r{r2} {} r{r1} {n}",
        60 - n
    ));
    for (node, (_, report)) in endpoints(&http, &server, "a-") {
        let failed = report["state"] == "failed";
        let landed = if failed { r1 } else { r2 };
        assert_eq!(report["applied_rev"], landed, "{node}: {report}");
    }
    assert_eq!(a.stop_with(Signal::SIGINT), 0, "SIGINT: exit 0");

    // Run B, seed 7 again (another process, other node names), beside run C on seed 8.
    let mut b = Sim::start(
        &server,
        &[
            "--agents",
            "60",
            "--seed",
            "7",
            "--fail-rate",
            "0.1",
            "--prefix",
            "b",
        ],
    );
    let mut c = Sim::start(
        &server,
        &[
            "--agents",
            "60",
            "--seed",
            "8",
            "--fail-rate",
            "0.1",
            "--prefix",
            "c",
        ],
    );
    wait_settled(&http, &server, "b", 60, r2);
    wait_settled(&http, &server, "c", 60, r2);
    let r3 = put(&server, dir.path(), "threshold = 3\n");
    assert_eq!(
        wait_settled(&http, &server, "b", 60, r3),
        failing,
        "the same seed, the same failing agents"
    );
    // Another seed draws its own agents (the contract promises nothing more about them).
    assert_eq!(wait_settled(&http, &server, "c", 60, r3), drawn(8, 60));
    assert_eq!(b.stop_with(Signal::SIGTERM), 0, "SIGTERM: exit 0");
    assert_eq!(c.stop_with(Signal::SIGINT), 0);
    for sim in [&a, &b, &c] {
        let err = sim.stderr();
        assert!(!err.contains("ERROR") && !err.contains("panic"), "{err}");
    }
}

/// `fleet simulate --agents 5 EXTRA`.
fn sim<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["fleet", "simulate", "--agents", "5"];
    args.extend_from_slice(extra);
    args
}

/// Node tokens `sim@…` on the server, and endpoints registered.
fn made_on_server(server: &ServerProc) -> (usize, usize) {
    let http = blocking_as(&server.admin_token().expect("admin token"));
    let tokens = get(&http, server, "/v1/tokens");
    let sim_tokens = tokens["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .filter(|t| t["name"].as_str().is_some_and(|n| n.starts_with("sim@")))
        .count();
    let agents = get(&http, server, "/v1/fleet")["agents"]
        .as_array()
        .expect("agents")
        .len();
    (sim_tokens, agents)
}

#[test]
fn fleet_simulate_refuses_a_bad_rate_no_config_an_unreachable_server_and_a_bad_token_with_one_line_before_making_anything()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start(&dir.path().join("data"));

    // No --config, and the server has none: nothing to apply (usage, 2).
    let out = server.cli(&sim(&[]));
    assert_eq!(code(&out), 2, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(
        line.contains("nothing to apply") && line.contains("--config NAME"),
        "{line}"
    );
    put(&server, dir.path(), "threshold = 1\n");

    // A rate outside 0..1: usage (2), naming the flag, checked before any call.
    for (flag, args) in [
        (
            "--fail-rate",
            sim(&["--config", CONFIG, "--fail-rate", "1.5"]),
        ),
        (
            "--offline-rate",
            sim(&["--config", CONFIG, "--offline-rate=-0.1"]),
        ),
        (
            "--slow-rate",
            sim(&["--config", CONFIG, "--slow-rate", "NaN"]),
        ),
        (
            "--reboot-rate",
            sim(&["--config", CONFIG, "--reboot-rate", "2"]),
        ),
    ] {
        let out = server.cli(&args);
        assert_eq!(code(&out), 2, "{}", describe(&out));
        let line = one_error_line(&out);
        assert!(
            line.contains(&format!("invalid {flag}")) && line.contains("between 0 and 1"),
            "{line}"
        );
    }

    // An unreachable server: exit 5, naming it and how to start one.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let admin = server.admin_token().expect("admin token");
    let mut cmd = common::command(&["--server", &dead]);
    cmd.args(sim(&["--config", CONFIG]))
        .env("LOCKSMITH_TOKEN", &admin);
    let out = common::output_within(cmd, LIMIT);
    assert_eq!(code(&out), 5, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(
        line.contains(&dead) && line.contains("locksmith server"),
        "{line}"
    );

    // A revoked token: exit 7, before anything is made.
    let out = server.cli(&[
        "token", "create", "--name", "gone", "--role", "operator", "--json",
    ]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let made: Value = serde_json::from_slice(&out.stdout).expect("token JSON");
    let revoked = made["token"].as_str().expect("secret").to_string();
    let out = server.cli(&["token", "revoke", made["id"].as_str().expect("id")]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let out = server.cli_as(&revoked, &sim(&["--config", CONFIG]));
    assert_eq!(code(&out), 7, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(line.contains("NOT AUTHENTICATED"), "{line}");

    // An operator's token reads configs but may not make node tokens: exit 7, say so.
    let operator = server.make_token("alice", "operator", &[]);
    let out = server.cli_as(&operator, &sim(&["--config", CONFIG]));
    assert_eq!(code(&out), 7, "{}", describe(&out));
    let err = stderr(&out);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains("node tokens") && errors[0].contains("admin token"),
        "{err}"
    );

    assert_eq!(
        made_on_server(&server),
        (0, 0),
        "nothing made on the server"
    );
}

/// `locksmith demo` starts its fleet before the orchestrator writes the config: like real
/// agents, simulated ones wait for a config's first revision and apply it when it is written.
#[test]
fn fleet_simulate_started_before_its_config_exists_applies_the_first_revision_when_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start(&dir.path().join("data"));
    let http = blocking_as(&server.admin_token().expect("admin token"));
    let mut fleet = Sim::start(&server, &["--agents", "5", "--prefix", "early"]);
    fleet.wait_line(&format!(
        "agents 5 online 5 offline 0 failed 0 | {CONFIG} none 5"
    ));
    assert!(
        fleet
            .stderr()
            .contains(&format!("{CONFIG} has no revision yet")),
        "{}",
        fleet.stderr()
    );
    let r1 = put(&server, dir.path(), "threshold = 1\n");
    assert_eq!(
        wait_settled(&http, &server, "early", 5, r1),
        Vec::<usize>::new()
    );
    fleet.wait_line(&format!(
        "agents 5 online 5 offline 0 failed 0 | {CONFIG} r{r1} 5"
    ));
    assert_eq!(fleet.stop_with(Signal::SIGTERM), 0);
}
