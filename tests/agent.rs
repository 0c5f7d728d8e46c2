//! `locksmith agent` as real processes against a real server (auth on): it applies configs to
//! files end to end, survives kill -9 at every apply step, restores last-known-good when a
//! hook fails, refuses a stale fence with the `lock mismatch` line, keeps its state across
//! restarts, catches up after being offline, stays within its node, reclaims dead local lock
//! holders, defers while the apply-lock exists, and reports its health hook's metrics (again
//! every `--health-interval`).

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{ServerProc, code, describe, stdout};
use serde_json::Value;

const NODE: &str = "drone-1";
const CONFIG: &str = "aim.conf";
/// How long a convergence may take before the test fails.
const LIMIT: Duration = Duration::from_secs(30);

/// A server, a node token for [`NODE`], and a directory for targets and state.
struct Env {
    dir: tempfile::TempDir,
    server: ServerProc,
    token: String,
}

impl Env {
    fn new() -> Env {
        Self::with(&[])
    }

    fn with(server_args: &[&str]) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = ServerProc::start_with(&dir.path().join("data"), server_args);
        let token = server.make_token(NODE, "node", &["--node", NODE]);
        Env { dir, server, token }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn target(&self) -> PathBuf {
        self.path("etc/aim.conf")
    }

    /// `config put CONFIG` with `content` as the admin (the command takes the lock itself).
    fn put(&self, content: &str, extra: &[&str]) -> u64 {
        self.server
            .put_config(CONFIG, &self.path("put.conf"), content, extra)
    }

    /// Starts the agent for [`NODE`] on [`CONFIG`] → [`Env::target`], with `extra` flags and
    /// `env` variables; its stderr goes to `agent.log`.
    fn agent(&self, extra: &[&str], env: &[(&str, &str)]) -> AgentProc {
        self.agent_via(self.server.url(), extra, env)
    }

    /// [`Env::agent`], reaching the server at `url`.
    fn agent_via(&self, url: &str, extra: &[&str], env: &[(&str, &str)]) -> AgentProc {
        std::fs::create_dir_all(self.target().parent().expect("dir")).expect("mkdir");
        let config = format!("{CONFIG}={}", self.target().display());
        let state = self.path("state");
        let mut args = vec![
            "agent",
            "--node",
            NODE,
            "--labels",
            "role=drone,site=hangar-2",
            "--config",
            &config,
            "--state-dir",
            state.to_str().expect("utf-8"),
            "--probe-interval",
            "1s",
            "--reconnect-max",
            "1s",
        ];
        args.extend_from_slice(extra);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.path("agent.log"))
            .expect("log");
        let mut cmd = common::command(&["--server", url]);
        cmd.args(&args)
            .env("LOCKSMITH_TOKEN", &self.token)
            .env("RUST_LOG", "info,locksmith=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        for (k, v) in env {
            cmd.env(k, v);
        }
        AgentProc(cmd.spawn().expect("spawn agent"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("agent.log")).unwrap_or_default()
    }

    /// `fleet show NODE --json` as the admin.
    fn node(&self) -> Value {
        let out = self.server.cli(&["fleet", "show", NODE, "--json"]);
        if code(&out) != 0 {
            return Value::Null;
        }
        serde_json::from_slice(&out.stdout).expect("json")
    }

    /// [`CONFIG`]'s last report on [`NODE`] (`report`: what it runs; `shadow_report`: the
    /// last shadow's outcome).
    fn report_of(&self, field: &str) -> Value {
        self.node()["configs"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["config"] == CONFIG))
            .map(|c| c[field].clone())
            .unwrap_or(Value::Null)
    }

    fn report(&self) -> Value {
        self.report_of("report")
    }

    /// Polls the report until `ok` holds of it (a deterministic wait: the report is what the
    /// agent posts when it is done).
    fn wait_report(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        self.wait_for("report", what, ok)
    }

    /// Polls the last shadow's report until `ok` holds of it.
    fn wait_shadow_report(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        self.wait_for("shadow_report", what, ok)
    }

    fn wait_for(&self, field: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + LIMIT;
        loop {
            let r = self.report_of(field);
            if ok(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no report where {what}; last {r}; target {:?}\nagent log:\n{}",
                read(&self.target()),
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_applied(&self, rev: u64) -> Value {
        self.wait_report(&format!("revision {rev} is applied"), |r| {
            r["state"] == "applied" && r["applied_rev"] == rev
        })
    }
}

/// An agent process, killed (SIGKILL) and reaped on drop.
struct AgentProc(Child);

impl AgentProc {
    fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Waits for the agent to end by itself (the crash hook's SIGKILL).
    fn wait_killed(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the agent did not crash");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

#[test]
fn an_agent_applies_a_new_revision_to_its_file_reports_it_and_fleet_ls_shows_it() {
    let env = Env::new();
    let rev = env.put("threshold = 1\n", &[]);
    let _agent = env.agent(&[], &[]);
    let r = env.wait_applied(rev);
    assert_eq!(read(&env.target()).as_deref(), Some("threshold = 1\n"));
    assert!(r["received_to_applied_ms"].is_u64(), "{r}");
    // A new current revision reaches the running agent over its stream.
    let rev2 = env.put("threshold = 2\n", &[]);
    env.wait_applied(rev2);
    assert_eq!(read(&env.target()).as_deref(), Some("threshold = 2\n"));
    let out = env.server.cli(&["fleet", "ls", "--selector", "role=drone"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    let row = text.lines().find(|l| l.contains(NODE)).expect("a row");
    assert!(row.contains("online"), "{text}");
    assert!(row.contains("role=drone,site=hangar-2"), "{text}");
    assert!(row.contains(&format!("{CONFIG}@{rev2} applied")), "{text}");
    let none = env.server.cli(&["fleet", "ls", "--selector", "role=arm"]);
    assert!(!stdout(&none).contains(NODE), "{}", stdout(&none));
}

#[test]
fn kill_9_at_every_apply_step_leaves_the_old_or_new_file_whole_and_a_restart_converges() {
    let env = Env::new();
    let old = "threshold = 1\n";
    let rev1 = env.put(old, &[]);
    {
        let _agent = env.agent(
            &["--reload", "true", "--health", "true", "--validate", "true"],
            &[],
        );
        env.wait_applied(rev1);
    }
    let mut previous = (rev1, old.to_string());
    for (i, step) in [
        "persist-intent",
        "stage",
        "validate",
        "rename",
        "fsync-dir",
        "reload",
        "health",
        "save-lkg",
        "commit",
        "remove-old-lkg",
    ]
    .into_iter()
    .enumerate()
    {
        let new = format!("threshold = {}\n", i + 10);
        let rev = env.put(&new, &[]);
        let hooks = ["--reload", "true", "--health", "true", "--validate", "true"];
        let mut crashing = env.agent(&hooks, &[("LOCKSMITH_AGENT_CRASH_AT", step)]);
        let status = crashing.wait_killed();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "{step}: {status:?}\n{}",
            env.log()
        );
        let on_disk = read(&env.target()).expect("the target exists");
        assert!(
            on_disk == previous.1 || on_disk == new,
            "{step}: the target is neither the old nor the new file: {on_disk:?}"
        );
        drop(crashing);
        let _agent = env.agent(&hooks, &[]);
        env.wait_applied(rev);
        assert_eq!(read(&env.target()).as_deref(), Some(new.as_str()), "{step}");
        let dir = env.target().parent().expect("dir").to_path_buf();
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("locksmith-"))
            .collect();
        assert!(leftovers.is_empty(), "{step}: {leftovers:?}");
        previous = (rev, new);
    }
}

#[test]
fn a_failing_health_hook_restores_last_known_good_and_reports_failed_then_the_next_revision_applies()
 {
    let env = Env::new();
    let rev1 = env.put("threshold = 1\n", &[]);
    // Healthy unless the file says "broken".
    let health = "! grep -q broken \"$LOCKSMITH_FILE\" || { echo service down; exit 3; }";
    let _agent = env.agent(&["--health", health], &[]);
    env.wait_applied(rev1);
    let rev2 = env.put("threshold = \"broken\"\n", &[]);
    let r = env.wait_report("revision 2 failed", |r| {
        r["state"] == "failed" && r["rev"] == rev2
    });
    assert_eq!(r["applied_rev"], rev1, "{r}");
    let error = r["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("health hook exited with status 3"),
        "{error}"
    );
    assert!(error.contains("service down"), "{error}");
    assert_eq!(read(&env.target()).as_deref(), Some("threshold = 1\n"));
    // Not wedged: the next revision is tried normally.
    let rev3 = env.put("threshold = 3\n", &[]);
    env.wait_applied(rev3);
    assert_eq!(read(&env.target()).as_deref(), Some("threshold = 3\n"));
}

#[test]
fn the_health_hooks_metric_lines_reach_the_fleet_view_in_the_configs_report() {
    let env = Env::new();
    // The service's "error rate" is the file's `rate`; one malformed metric line is ignored.
    let health = "sed -n 's/^rate = /metric error_rate=/p' \"$LOCKSMITH_FILE\"; \
                  echo 'metric p99_ms=12'; echo 'metric broken'; echo done";
    let _agent = env.agent(&["--health", health], &[]);
    let rev1 = env.put("rate = 0.002\n", &[]);
    let r = env.wait_applied(rev1);
    assert_eq!(r["metrics"]["error_rate"], 0.002, "{r}");
    assert_eq!(r["metrics"]["p99_ms"], 12.0, "{r}");
    assert_eq!(r["metrics"].as_object().map(|m| m.len()), Some(2), "{r}");
    // The next revision's report has that revision's numbers.
    let rev2 = env.put("rate = 0.25\n", &[]);
    let r = env.wait_applied(rev2);
    assert_eq!(r["metrics"]["error_rate"], 0.25, "{r}");
    let log = env.log();
    assert!(
        log.contains("metric broken") && log.contains("no `=`"),
        "the malformed line is logged:\n{log}"
    );
}

#[test]
fn with_a_health_interval_the_agent_reports_fresh_metrics_and_a_failing_check_without_rolling_back()
{
    let env = Env::new();
    let rate = env.path("rate");
    std::fs::write(&rate, "0.002").expect("write");
    let health = format!(
        "r=$(cat {}); [ \"$r\" != down ] || {{ echo service down; exit 1; }}; echo \"metric error_rate=$r\"",
        rate.display()
    );
    let _agent = env.agent(&["--health", &health, "--health-interval", "1s"], &[]);
    let rev = env.put("threshold = 1\n", &[]);
    env.wait_report("applied with error_rate 0.002", |r| {
        r["state"] == "applied" && r["applied_rev"] == rev && r["metrics"]["error_rate"] == 0.002
    });
    // The service changes; the next check reports it, about the same revision.
    std::fs::write(&rate, "0.3").expect("write");
    let r = env.wait_report("a check with error_rate 0.3", |r| {
        r["state"] == "applied" && r["metrics"]["error_rate"] == 0.3
    });
    assert_eq!(
        (r["rev"].as_u64(), r["applied_rev"].as_u64()),
        (Some(rev), Some(rev))
    );
    // A failing check is reported failed, and the file stays: nothing is rolled back.
    std::fs::write(&rate, "down").expect("write");
    let r = env.wait_report("a failed check", |r| r["state"] == "failed");
    assert_eq!(
        (r["rev"].as_u64(), r["applied_rev"].as_u64()),
        (Some(rev), Some(rev))
    );
    let error = r["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("periodic health check of applied revision")
            && error.contains("service down"),
        "{error}"
    );
    assert_eq!(read(&env.target()).as_deref(), Some("threshold = 1\n"));
    std::fs::write(&rate, "0.001").expect("write");
    env.wait_report("healthy again", |r| {
        r["state"] == "applied" && r["metrics"]["error_rate"] == 0.001
    });
}

#[test]
fn a_revision_under_an_older_token_is_refused_with_lock_mismatch_and_a_restart_keeps_the_high_water()
 {
    let env = Env::new();
    // A draft written under the first holder's token, then a revision under a later one.
    let draft = env.put("threshold = \"old-draft\"\n", &["--draft"]);
    let rev = env.put("threshold = 2\n", &[]);
    let mut agent = env.agent(&[], &[]);
    let applied = env.wait_applied(rev);
    let high_water = applied["applied_token"].as_u64().expect("token");
    let shadow = |env: &Env| {
        let out = env.server.cli(&[
            "config",
            "shadow",
            CONFIG,
            "--rev",
            &draft.to_string(),
            "--nodes",
            NODE,
        ]);
        assert_eq!(code(&out), 0, "{}", describe(&out));
    };
    shadow(&env);
    let r = env.wait_shadow_report("the draft is refused", |r| {
        r["state"] == "refused" && r["rev"] == draft
    });
    let line = r["error"].as_str().unwrap_or_default();
    assert!(
        line.starts_with(&format!(
            "lock mismatch: {CONFIG} HOT — revision {draft} was written under token"
        )),
        "{line}"
    );
    assert!(
        line.contains(&format!("applied under token {high_water}")),
        "{line}"
    );
    assert_eq!(read(&env.target()).as_deref(), Some("threshold = 2\n"));
    // The shadow's refusal is kept apart: the endpoint's report still says what it runs.
    let runs = env.report();
    assert_eq!(runs["state"], "applied", "{runs}");
    assert_eq!(runs["applied_rev"], rev, "{runs}");

    // kill -9 and restart: last-known-good and the token high-water are kept. The server
    // still sends the shadow to the node, so the restarted agent refuses it again (its
    // registration clears the shadow outcomes it reported before).
    let registered = env.node()["registered_at_ms"].as_u64().unwrap_or(0);
    agent.kill9();
    std::fs::write(env.target(), "tampered\n").expect("tamper");
    let _agent = env.agent(&[], &[]);
    let r = env.wait_shadow_report("the draft is refused again after the restart", |r| {
        r["state"] == "refused"
            && r["rev"] == draft
            && env.node()["registered_at_ms"].as_u64().unwrap_or(0) > registered
    });
    let line = r["error"].as_str().unwrap_or_default();
    assert!(
        line.contains(&format!("applied under token {high_water}")),
        "{r}"
    );
    assert_eq!(r["applied_rev"], rev, "{r}");
    // Recovery put last-known-good back over the tampered file.
    assert_eq!(read(&env.target()).as_deref(), Some("threshold = 2\n"));
}

#[test]
fn a_node_token_cannot_register_report_stream_or_read_another_node() {
    let env = Env::new();
    let other = "drone-2";
    let out = env.server.cli_as(&env.token, &["fleet", "show", other]);
    assert_eq!(code(&out), 7, "refused as forbidden: {}", describe(&out));
    // Every agent route for another node is refused.
    let http = common::http_as(Some(&env.token));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let base = env.server.url();
        let register = serde_json::json!({"boot_id": "b", "version": "t", "configs": [CONFIG]});
        for (method, path, body) in [
            ("POST", "register", Some(register.clone())),
            ("POST", "heartbeat", None),
            ("POST", "reports", Some(serde_json::json!({"config": CONFIG, "rev": 1, "state": "applied", "applied_rev": 1, "applied_token": 1}))),
            ("GET", "desired", None),
        ] {
            let url = format!("{base}/v1/agents/{other}/{path}");
            let rb = if method == "GET" { http.get(&url) } else { http.post(&url) };
            let rb = match &body {
                Some(b) => rb.json(b),
                None => rb,
            };
            let resp = rb.send().await.expect("send");
            assert_eq!(resp.status().as_u16(), 403, "{method} {path}");
        }
        // Its own node it may register; the fleet it sees is only itself.
        let own = http
            .post(format!("{base}/v1/agents/{NODE}/register"))
            .json(&register)
            .send()
            .await
            .expect("send");
        assert_eq!(own.status().as_u16(), 200);
    });
    let out = env.server.cli_as(&env.token, &["fleet", "ls", "--json"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let fleet: Value = serde_json::from_slice(&out.stdout).expect("json");
    let nodes: Vec<&str> = fleet["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| a["node"].as_str())
        .collect();
    assert_eq!(nodes, [NODE]);
}

#[test]
fn a_killed_lock_holder_on_the_agents_node_is_reclaimed_within_one_probe_interval() {
    // The server's own probe is off: only the agent's reports can reclaim the holder early.
    let env = Env::with(&["--probe-interval", "0"]);
    env.put("threshold = 1\n", &[]);
    let _agent = env.agent(&[], &[]); // --probe-interval 1s
    let mut holder = Command::new("sleep")
        .arg("300")
        .spawn()
        .expect("spawn sleep");
    let out = env.server.cli(&[
        "--node",
        NODE,
        "acquire",
        "robots/arm-1",
        "--ttl",
        "10m",
        "--pid",
        &holder.id().to_string(),
    ]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(env.server.state_unchecked("robots/arm-1"), "HOT");
    holder.kill().expect("kill");
    holder.wait().expect("reap");
    let killed = Instant::now();
    loop {
        if env.server.state_unchecked("robots/arm-1") == "FREE" {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "not reclaimed within one probe interval (1 s, plus slack)\n{}",
            env.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
    // One interval, plus one probe's round trips.
    assert!(
        killed.elapsed() < Duration::from_millis(2_500),
        "{:?}",
        killed.elapsed()
    );
}

#[test]
fn the_agent_defers_while_the_apply_lock_exists_and_applies_once_it_is_gone() {
    let env = Env::new();
    let rev1 = env.put("threshold = 1\n", &[]);
    let lock = env.path("mid-task");
    let lock_arg = lock.to_str().expect("utf-8").to_string();
    let _agent = env.agent(&["--apply-lock", &lock_arg], &[]);
    env.wait_applied(rev1);
    std::fs::write(&lock, "").expect("apply-lock");
    let rev2 = env.put("threshold = 2\n", &[]);
    let r = env.wait_report("deferred", |r| r["state"] == "deferred" && r["rev"] == rev2);
    assert!(
        r["error"]
            .as_str()
            .unwrap_or_default()
            .contains("apply-lock"),
        "{r}"
    );
    assert_eq!(read(&env.target()).as_deref(), Some("threshold = 1\n"));
    std::fs::remove_file(&lock).expect("remove");
    env.wait_applied(rev2);
    assert_eq!(read(&env.target()).as_deref(), Some("threshold = 2\n"));
}

/// A loopback TCP proxy the test can cut (every connection closed, new ones refused) and
/// restore: the agent's network going away while the server stays up.
struct Proxy {
    addr: String,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let upstream = upstream.to_string();
        let (c, o) = (cut.clone(), open.clone());
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                if c.load(Ordering::SeqCst) {
                    let _ = conn.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(up) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let mut guard = o.lock().expect("lock");
                for s in [&conn, &up] {
                    if let Ok(s) = s.try_clone() {
                        guard.push(s);
                    }
                }
                drop(guard);
                pipe(
                    conn.try_clone().expect("clone"),
                    up.try_clone().expect("clone"),
                );
                pipe(up, conn);
            }
        });
        Proxy { addr, cut, open }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().expect("lock").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

#[test]
fn an_offline_agent_keeps_last_known_good_and_jumps_to_the_newest_revision_when_it_returns() {
    let env = Env::new();
    let proxy = Proxy::start(env.server.url().trim_start_matches("http://"));
    let rev1 = env.put("threshold = 1\n", &[]);
    // The reload hook logs every revision the agent activates.
    let seen = env.path("reloads");
    let reload = format!("echo $LOCKSMITH_REV >> '{}'", seen.display());
    let proxy_url = proxy.url();
    let _agent = env.agent_via(&proxy_url, &["--reload", &reload], &[]);
    env.wait_applied(rev1);
    proxy.cut();
    // Offline once the stream is gone and nothing was heard for the server's online window
    // (30 s after the last heartbeat): wait that long, and the usual limit on top.
    let deadline = Instant::now() + Duration::from_secs(30) + LIMIT;
    while env.node()["online"] != false {
        assert!(Instant::now() < deadline, "still online: {}", env.node());
        thread::sleep(Duration::from_millis(50));
    }
    let mut last = rev1;
    for i in 2..=4 {
        last = env.put(&format!("threshold = {i}\n"), &[]);
    }
    // Offline: last-known-good keeps running.
    assert_eq!(read(&env.target()).as_deref(), Some("threshold = 1\n"));
    proxy.restore();
    env.wait_applied(last);
    assert_eq!(read(&env.target()).as_deref(), Some("threshold = 4\n"));
    let reloads: Vec<u64> = read(&seen)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(
        reloads,
        [rev1, last],
        "no intermediate revision is replayed"
    );
}
