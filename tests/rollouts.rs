//! Rollouts end to end: a real server (auth on) and a fleet of real `locksmith agent`
//! processes applying a config to files, with a health hook that fails on a bad revision and a
//! reload hook that logs every revision each endpoint activates. Pins: a canary catches a bad
//! revision and the rollback leaves the canary on its own last-known-good and everyone else
//! untouched; a silent endpoint pauses the rollout and nothing is ever promoted on a timeout;
//! approvals by the starter or twice by one operator are refused; two rollouts of one config
//! queue; kill -9 of the server mid-rollout resumes without telling any endpoint twice; an
//! endpoint outside its update window waits.

mod common;

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{ServerProc, code, describe};
use serde_json::{Value, json};

const CONFIG: &str = "aim.conf";
const LIMIT: Duration = Duration::from_secs(40);
/// Healthy unless the applied file says "broken".
const HEALTH: &str = "! grep -q broken \"$LOCKSMITH_FILE\" || { echo aim unstable; exit 3; }";

/// An agent process, killed (SIGKILL) and reaped on drop.
struct AgentProc(Child);

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server on a fixed port (so agents find it again after a restart) and `n` agents
/// `drone-0..n`.
struct Fleet {
    dir: tempfile::TempDir,
    server: Option<ServerProc>,
    port: u16,
    agents: Vec<AgentProc>,
    nodes: Vec<String>,
    http: reqwest::blocking::Client,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn blocking_as(token: &str) -> reqwest::blocking::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = format!("Bearer {token}").parse().expect("header");
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::blocking::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

impl Fleet {
    fn new(n: usize, labels: impl Fn(usize) -> String) -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let server = Self::start_server(dir.path(), port);
        let admin = server.admin_token().expect("admin token");
        let mut fleet = Fleet {
            http: blocking_as(&admin),
            dir,
            server: Some(server),
            port,
            agents: Vec::new(),
            nodes: (0..n).map(|i| format!("drone-{i}")).collect(),
        };
        let rev1 = fleet.put("threshold = 1\n", false);
        for i in 0..n {
            let agent = fleet.agent(i, &labels(i));
            fleet.agents.push(agent);
        }
        for node in fleet.nodes.clone() {
            fleet.wait_report(&node, rev1, "applied");
        }
        fleet
    }

    fn start_server(dir: &Path, port: u16) -> ServerProc {
        let listen = format!("127.0.0.1:{port}");
        ServerProc::start_with(&dir.join("data"), &["--listen", &listen])
    }

    fn server(&self) -> &ServerProc {
        self.server.as_ref().expect("server running")
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn target(&self, node: &str) -> PathBuf {
        self.path(&format!("{node}/etc/aim.conf"))
    }

    fn reloads(&self, node: &str) -> Vec<u64> {
        std::fs::read_to_string(self.path(&format!("{node}/reloads")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn agent(&self, i: usize, labels: &str) -> AgentProc {
        let node = &self.nodes[i];
        let token = self.server().make_token(node, "node", &["--node", node]);
        let target = self.target(node);
        std::fs::create_dir_all(target.parent().expect("dir")).expect("mkdir");
        let config = format!("{CONFIG}={}", target.display());
        let state = self.path(&format!("{node}/state"));
        let reload = format!(
            "echo $LOCKSMITH_REV >> '{}'",
            self.path(&format!("{node}/reloads")).display()
        );
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.path(&format!("{node}.log")))
            .expect("log");
        let mut cmd = common::command(&["--server", &self.url()]);
        cmd.args([
            "agent",
            "--node",
            node,
            "--labels",
            labels,
            "--config",
            &config,
            "--state-dir",
            state.to_str().expect("utf-8"),
            "--health",
            HEALTH,
            "--reload",
            &reload,
            "--reconnect-max",
            "1s",
        ])
        .env("LOCKSMITH_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
        AgentProc(cmd.spawn().expect("spawn agent"))
    }

    /// `config put` as the admin; a draft with `draft`. Returns the revision.
    fn put(&self, content: &str, draft: bool) -> u64 {
        let file = self.path("put.conf");
        std::fs::write(&file, content).expect("write");
        let mut args = vec![
            "config",
            "put",
            CONFIG,
            file.to_str().expect("utf-8"),
            "--json",
        ];
        if draft {
            args.push("--draft");
        }
        let out = self.server().cli(&args);
        assert_eq!(code(&out), 0, "{}", describe(&out));
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        v["rev"].as_u64().expect("rev")
    }

    fn call(&self, client: &reqwest::blocking::Client, path: &str, body: Value) -> (u16, Value) {
        let resp = client
            .post(format!("{}{path}", self.url()))
            .json(&body)
            .send()
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    fn start(&self, client: &reqwest::blocking::Client, body: Value) -> String {
        let (status, v) = self.call(client, "/v1/rollouts", body);
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().expect("id").to_owned()
    }

    fn rollout(&self, id: &str) -> Value {
        self.http
            .get(format!("{}/v1/rollouts/{id}", self.url()))
            .send()
            .and_then(|r| r.json())
            .unwrap_or(Value::Null)
    }

    fn wait_rollout(&self, id: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + LIMIT;
        loop {
            let v = self.rollout(id);
            if ok(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "rollout {id}: never {what}; last {v:#}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn config_current(&self) -> u64 {
        self.http
            .get(format!("{}/v1/configs/{CONFIG}", self.url()))
            .send()
            .and_then(|r| r.json::<Value>())
            .ok()
            .and_then(|v| v["head"]["current"].as_u64().or(v["rev"].as_u64()))
            .unwrap_or(0)
    }

    fn wait_report(&self, node: &str, rev: u64, state: &str) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let v: Value = self
                .http
                .get(format!("{}/v1/fleet/{node}", self.url()))
                .send()
                .and_then(|r| r.json())
                .unwrap_or(Value::Null);
            let r = v["configs"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["config"] == CONFIG))
                .map(|c| c["report"].clone())
                .unwrap_or(Value::Null);
            if r["state"] == state && (r["rev"] == rev || r["applied_rev"] == rev) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{node}: no {state} report for {rev}; last {r}\n{}",
                std::fs::read_to_string(self.path(&format!("{node}.log"))).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn ended(v: &Value) -> bool {
    v["phase"] == "ended"
}

fn landing(v: &Value, node: &str) -> Value {
    v["outcome"]["endpoints"]
        .as_array()
        .and_then(|a| a.iter().find(|l| l["node"] == node))
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn a_canary_catches_a_bad_revision_and_rollback_leaves_the_canary_on_its_last_known_good_and_the_rest_untouched()
 {
    let fleet = Fleet::new(5, |_| "role=drone".into());
    let bad = fleet.put("threshold = \"broken\"\n", true);
    let id = fleet.start(
        &fleet.http,
        json!({"config": CONFIG, "rev": bad, "selector": "role=drone", "canary": "2",
               "waves": "50%,100%", "on_failure": "rollback"}),
    );
    let v = fleet.wait_rollout(&id, "ended", ended);
    assert_eq!(v["outcome"]["kind"], "rolled_back", "{v:#}");
    // The canary (drone-0, drone-1) tried the revision, failed its health hook, and is back on
    // revision 1; the three others never heard of it.
    for node in &fleet.nodes[..2] {
        let l = landing(&v, node);
        assert_eq!(l["rev"], 1, "{node}: {l}");
        assert_eq!(
            std::fs::read_to_string(fleet.target(node)).ok().as_deref(),
            Some("threshold = 1\n")
        );
    }
    for node in &fleet.nodes[2..] {
        assert_eq!(fleet.reloads(node), [1], "{node} was touched");
        assert_eq!(landing(&v, node)["rev"], 1, "{v:#}");
    }
    assert_eq!(
        fleet.config_current(),
        1,
        "a rolled-back draft is never promoted"
    );
    // The lock is released.
    assert!(
        fleet
            .server()
            .wait_for_state("configs/aim.conf", "FREE", LIMIT),
        "the rollout's lock was not released"
    );
}

#[test]
fn approvals_by_the_starter_or_twice_by_one_operator_are_refused_and_two_others_pass_the_hold_point()
 {
    let fleet = Fleet::new(3, |_| "role=drone".into());
    let alice = blocking_as(&fleet.server().make_token("alice", "operator", &[]));
    let bob = blocking_as(&fleet.server().make_token("bob", "operator", &[]));
    let carol = blocking_as(&fleet.server().make_token("carol", "operator", &[]));
    let good = fleet.put("threshold = 2\n", true);
    let id = fleet.start(
        &alice,
        json!({"config": CONFIG, "rev": good, "canary": "1", "hold_after": "canary",
               "approvals": 2}),
    );
    let v = fleet.wait_rollout(&id, "at its hold point", |v| {
        v["state"]["awaiting_approval"].is_object()
    });
    assert_eq!(v["starter"], "alice");
    let approve = format!("/v1/rollouts/{id}/approve");
    let (status, e) = fleet.call(&alice, &approve, json!({}));
    assert_eq!(
        (status, e["error"].as_str()),
        (409, Some("rollout_refused")),
        "{e}"
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("does not count"),
        "{e}"
    );
    let (status, _) = fleet.call(&bob, &approve, json!({}));
    assert_eq!(status, 200);
    let (status, e) = fleet.call(&bob, &approve, json!({}));
    assert_eq!(
        (status, e["error"].as_str()),
        (409, Some("rollout_refused")),
        "{e}"
    );
    // One distinct approval of two: still holding, nobody but the canary has it.
    let v = fleet.rollout(&id);
    assert!(v["state"]["awaiting_approval"].is_object(), "{v:#}");
    assert_eq!(v["approved_by"], json!(["bob"]));
    for node in &fleet.nodes[1..] {
        assert_eq!(fleet.reloads(node), [1]);
    }
    let (status, _) = fleet.call(&carol, &approve, json!({}));
    assert_eq!(status, 200);
    let v = fleet.wait_rollout(&id, "ended", |v| ended(v) && v["summary"] != "");
    assert_eq!(v["outcome"]["kind"], "succeeded", "{v:#}");
    // Every endpoint applied it once; the draft became the config's current revision.
    let rolled = v["rolled_rev"].as_u64().expect("rolled rev");
    for node in &fleet.nodes {
        assert_eq!(fleet.reloads(node), [1, rolled], "{node}");
    }
    // Promoted: a new current revision with the draft's content, which the endpoints
    // already run — none applies it again.
    let deadline = Instant::now() + LIMIT;
    while fleet.config_current() <= rolled {
        assert!(Instant::now() < deadline, "never promoted");
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_secs(1));
    for node in &fleet.nodes {
        assert_eq!(
            fleet.reloads(node),
            [1, rolled],
            "{node} re-applied the promotion"
        );
    }
    assert!(v["latency"]["count"].as_u64() == Some(3), "{v:#}");
}

#[test]
fn two_rollouts_of_one_config_queue_and_the_second_starts_when_the_first_ends() {
    let fleet = Fleet::new(2, |_| "role=drone".into());
    let bob = blocking_as(&fleet.server().make_token("bob", "operator", &[]));
    let r2 = fleet.put("threshold = 2\n", true);
    let first = fleet.start(
        &fleet.http,
        json!({"config": CONFIG, "rev": r2, "canary": "1", "hold_after": "canary",
               "approvals": 1}),
    );
    fleet.wait_rollout(&first, "at its hold point", |v| {
        v["state"]["awaiting_approval"].is_object()
    });
    let second = fleet.start(&fleet.http, json!({"config": CONFIG, "rev": r2}));
    let third = fleet.start(&fleet.http, json!({"config": CONFIG, "rev": r2}));
    let v = fleet.rollout(&second);
    assert_eq!(v["phase"], "queued", "{v:#}");
    assert_eq!(v["queued_behind"], json!([first.clone()]));
    assert_eq!(
        fleet.rollout(&third)["queued_behind"],
        json!([first.clone(), second.clone()])
    );
    // A queued one can be withdrawn; a running one cannot be cancelled.
    let (status, _) = fleet.call(
        &fleet.http,
        &format!("/v1/rollouts/{third}/cancel"),
        json!({}),
    );
    assert_eq!(status, 200);
    let (status, e) = fleet.call(
        &fleet.http,
        &format!("/v1/rollouts/{first}/cancel"),
        json!({}),
    );
    assert_eq!(
        (status, e["error"].as_str()),
        (409, Some("rollout_refused")),
        "{e}"
    );
    let (status, _) = fleet.call(&bob, &format!("/v1/rollouts/{first}/approve"), json!({}));
    assert_eq!(status, 200);
    fleet.wait_rollout(&first, "ended", ended);
    let v = fleet.wait_rollout(&second, "ended", ended);
    assert_eq!(v["outcome"]["kind"], "succeeded", "{v:#}");
    assert_eq!(fleet.rollout(&third)["phase"], "cancelled");
}

#[test]
fn a_silent_endpoint_is_inconclusive_pauses_the_rollout_and_nothing_is_promoted_on_a_timeout() {
    let fleet = Fleet::new(2, |_| "role=drone".into());
    // drone-1 stays connected but stops answering: SIGSTOP keeps its stream open.
    let pid = fleet.agents[1].0.id();
    common::signal(pid, nix::sys::signal::Signal::SIGSTOP);
    let r2 = fleet.put("threshold = 2\n", true);
    let id = fleet.start(
        &fleet.http,
        json!({"config": CONFIG, "rev": r2, "deadline": "2s"}),
    );
    let v = fleet.wait_rollout(&id, "paused", |v| v["state"]["paused"].is_object());
    assert!(
        v["state"]["paused"]["reason"]["silent"]["nodes"] == json!(["drone-1"]),
        "{v:#}"
    );
    // Well past the deadline: still paused, nothing promoted.
    thread::sleep(Duration::from_secs(3));
    let v = fleet.rollout(&id);
    assert!(v["state"]["paused"].is_object(), "{v:#}");
    assert_eq!(fleet.config_current(), 1);
    common::signal(pid, nix::sys::signal::Signal::SIGCONT);
    let (status, _) = fleet.call(
        &fleet.http,
        &format!("/v1/rollouts/{id}/abort"),
        json!({"rollback": true}),
    );
    assert_eq!(status, 200);
    let v = fleet.wait_rollout(&id, "ended", ended);
    assert_eq!(v["outcome"]["kind"], "aborted", "{v:#}");
    assert_eq!(landing(&v, "drone-0")["rev"], 1, "{v:#}");
}

#[test]
fn kill_9_of_the_server_mid_rollout_resumes_and_no_endpoint_is_told_twice() {
    let mut fleet = Fleet::new(4, |_| "role=drone".into());
    let bob = blocking_as(&fleet.server().make_token("bob", "operator", &[]));
    let r2 = fleet.put("threshold = 2\n", true);
    let id = fleet.start(
        &fleet.http,
        json!({"config": CONFIG, "rev": r2, "waves": "50%,100%", "hold_after": "each-wave",
               "approvals": 1}),
    );
    let v = fleet.wait_rollout(&id, "at the first hold point", |v| {
        v["state"]["awaiting_approval"]["wave"] == 0
    });
    let rolled = v["rolled_rev"].as_u64().expect("rolled");
    let server = fleet.server.take().expect("server");
    common::signal(server.pid(), nix::sys::signal::Signal::SIGKILL);
    common::wait_exited(server.pid(), LIMIT);
    drop(server);
    fleet.server = Some(Fleet::start_server(fleet.dir.path(), fleet.port));
    let v = fleet.wait_rollout(&id, "restored at its hold point", |v| {
        v["state"]["awaiting_approval"]["wave"] == 0
    });
    assert_eq!(v["rolled_rev"], rolled);
    let approve = format!("/v1/rollouts/{id}/approve");
    let (status, e) = fleet.call(&bob, &approve, json!({}));
    assert_eq!(status, 200, "{e}");
    // The last wave has no hold point after it: it ends.
    let v = fleet.wait_rollout(&id, "ended", ended);
    assert_eq!(v["outcome"]["kind"], "succeeded", "{v:#}");
    for node in &fleet.nodes {
        assert_eq!(
            fleet.reloads(node),
            [1, rolled],
            "{node}: applied twice or out of order"
        );
    }
}

#[test]
fn an_endpoint_outside_its_update_window_waits_and_is_reported_waiting() {
    // drone-1 is at a site whose window is the hour that is furthest from now.
    let fleet = Fleet::new(2, |i| format!("role=drone,site=site-{i}"));
    let hour = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 3600)
        .unwrap_or(0)
        + 12)
        % 24;
    let window = format!("site=site-1@{hour:02}:00-{hour:02}:30");
    let open = "site=site-0@00:00-23:59".to_string();
    let r2 = fleet.put("threshold = 2\n", true);
    let id = fleet.start(
        &fleet.http,
        json!({"config": CONFIG, "rev": r2, "windows": [open, window]}),
    );
    let v = fleet.wait_rollout(&id, "waiting for drone-1's window", |v| {
        v["waves"][0]["waiting_window"] == 1 && v["waves"][0]["applied"] == 1
    });
    let e = v["endpoints"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["node"] == "drone-1"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(e["status"], "waiting_window", "{v:#}");
    assert_eq!(fleet.reloads("drone-1"), [1], "sent outside its window");
    let (status, _) = fleet.call(&fleet.http, &format!("/v1/rollouts/{id}/abort"), json!({}));
    assert_eq!(status, 200);
}
