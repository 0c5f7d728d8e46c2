//! Scenarios at fleet scale: the real `locksmith server` binary (auth on, on a fixed port so
//! the fleet finds it again after a restart) and 200 simulated agents in this process
//! (`locksmith_sim::Fleet`: the real agent core over an in-memory file system, each with its
//! own node token, speaking HTTP to the server).

mod common;

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use common::ServerProc;
use common::fleet::{Fleet as Harness, blocking_as, free_port, wait_rollout_at};
use locksmith_sim::{Fleet, FleetSpec};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const CONFIG: &str = "aim.conf";
const AGENTS: usize = 200;
const LIMIT: Duration = Duration::from_secs(40);

/// The server on `port`, its data in `dir`, and an admin HTTP client.
struct Server {
    proc: Option<ServerProc>,
    dir: tempfile::TempDir,
    port: u16,
    http: reqwest::blocking::Client,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let proc = Harness::start_server(dir.path(), port);
        let http = blocking_as(&proc.admin_token().expect("admin token"));
        Server {
            proc: Some(proc),
            dir,
            port,
            http,
        }
    }

    fn proc(&self) -> &ServerProc {
        self.proc.as_ref().expect("server running")
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// kill -9, then a new server on the same data directory and port.
    fn kill_9_and_restart(&mut self) {
        let old = self.proc.take().expect("server running");
        common::signal(old.pid(), Signal::SIGKILL);
        common::wait_exited(old.pid(), LIMIT);
        drop(old);
        self.proc = Some(Harness::start_server(self.dir.path(), self.port));
    }

    fn put(&self, content: &str, draft: bool) -> u64 {
        let extra: &[&str] = if draft { &["--draft"] } else { &[] };
        self.proc()
            .put_config(CONFIG, &self.dir.path().join("put.conf"), content, extra)
    }

    fn post(&self, client: &reqwest::blocking::Client, path: &str, body: Value) -> (u16, Value) {
        let resp = client
            .post(self.url(path))
            .json(&body)
            .send()
            .expect("request");
        (resp.status().as_u16(), resp.json().unwrap_or(Value::Null))
    }

    fn wait_rollout(&self, id: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        wait_rollout_at(&self.http, &self.url(""), id, what, ok)
    }
}

/// Waits until `done` holds.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done() {
        assert!(Instant::now() < deadline, "not within {LIMIT:?}: {what}");
        thread::sleep(Duration::from_millis(25));
    }
}

/// Per node: the revision of [`CONFIG`] it applied and when it became so (its own clock).
fn applied(fleet: &Fleet) -> BTreeMap<String, (u64, u64)> {
    fleet
        .agents()
        .iter()
        .map(|a| (a.identity().node.clone(), a.applied(CONFIG)))
        .collect()
}

/// Per endpoint of the rollout: when the server sent it the revision.
fn sent_at(v: &Value) -> BTreeMap<String, Value> {
    v["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| {
            (
                e["node"].as_str().unwrap_or_default().to_string(),
                e["sent_at_ms"].clone(),
            )
        })
        .collect()
}

/// kill -9 of the server twice — at the hold point after the canary, then while the last wave
/// bakes — and the rollout resumes from where it was each time and succeeds; every one of 200
/// simulated endpoints applies the revision exactly once (none is sent it again, none leaves it
/// and comes back), and the config's lock is FREE after.
#[test]
fn kill_9_of_the_server_at_a_hold_point_and_mid_wave_resumes_and_each_of_200_simulated_endpoints_applies_the_revision_once()
 {
    let started = Instant::now();
    let mut server = Server::start();
    let bob = blocking_as(&server.proc().make_token("bob", "operator", &[]));
    let r1 = server.put("threshold = 1\n", false);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let spec = FleetSpec {
        agents: AGENTS,
        seed: 21,
        configs: vec![CONFIG.into()],
        prefix: "sim".into(),
        ..FleetSpec::default()
    };
    let fleet = rt
        .block_on(Fleet::start_with(&server.proc().client(), spec))
        .expect("the fleet starts");
    until("200 agents apply r1", || {
        fleet.applied(CONFIG, r1) == AGENTS
    });

    let r2 = server.put("threshold = 2\n", true);
    let (status, v) = server.post(
        &server.http,
        "/v1/rollouts",
        json!({"config": CONFIG, "rev": r2, "canary": "10", "waves": "50%,100%",
               "hold_after": "canary", "approvals": 1, "bake": "2s"}),
    );
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    let v = server.wait_rollout(&id, "at the hold point after the canary", |v| {
        v["state"]["awaiting_approval"]["wave"] == 0
    });
    let rolled = v["rolled_rev"].as_u64().expect("rolled_rev");
    let canary: Vec<String> = applied(&fleet)
        .into_iter()
        .filter(|(_, (rev, _))| *rev == rolled)
        .map(|(node, _)| node)
        .collect();
    assert_eq!(canary.len(), 10, "only the canary applied it: {canary:?}");
    let before = applied(&fleet);
    let sent_before = sent_at(&v);

    // kill -9 at the hold point: the restarted server is at the same hold point, and the
    // canary is not sent the revision again.
    server.kill_9_and_restart();
    let v = server.wait_rollout(&id, "restored at its hold point", |v| {
        v["state"]["awaiting_approval"]["wave"] == 0
    });
    assert_eq!(v["rolled_rev"], rolled);
    for node in &canary {
        assert_eq!(
            sent_at(&v)[node],
            sent_before[node],
            "{node} was sent it again"
        );
    }
    until("the fleet is back online", || {
        fleet.status(&[CONFIG.into()]).online == AGENTS
    });
    let (status, e) = server.post(&bob, &format!("/v1/rollouts/{id}/approve"), json!({}));
    assert_eq!(status, 200, "{e}");

    // kill -9 again while a wave bakes: every endpoint sent so far stays as it is.
    let v = server.wait_rollout(&id, "baking a wave after the canary", |v| {
        v["state"]["baking"]["wave"]
            .as_u64()
            .is_some_and(|w| w >= 1)
    });
    let mid = applied(&fleet);
    let sent_mid = sent_at(&v);
    server.kill_9_and_restart();
    let v = server.wait_rollout(&id, "ended", |v| v["phase"] == "ended");
    assert_eq!(v["outcome"]["kind"], "succeeded", "{}", v["summary"]);

    // Each endpoint applied the rolled revision once: it holds it since the moment it first
    // did (the canary since before the first kill, the baking wave since before the second),
    // it never applied another, and the server sent it once.
    let after = applied(&fleet);
    let sent_after = sent_at(&v);
    for a in fleet.agents() {
        let node = &a.identity().node;
        let (rev, at) = after[node];
        assert_eq!(rev, rolled, "{node} ends on the rolled revision");
        for earlier in [&before, &mid] {
            if earlier[node].0 == rolled {
                assert_eq!(earlier[node].1, at, "{node} applied r{rolled} again");
            }
        }
        for other in (r1 + 1..=rolled + 2).filter(|&r| r != rolled) {
            assert!(!a.ever_applied(CONFIG, other), "{node} applied r{other}");
        }
        assert!(!a.ever_failed(CONFIG, rolled), "{node} failed r{rolled}");
        if sent_mid[node].is_u64() {
            assert_eq!(sent_after[node], sent_mid[node], "{node} was sent it again");
        }
    }
    assert!(
        v["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .all(|e| e["status"] == "applied"),
        "{v:#}"
    );
    assert!(
        server
            .proc()
            .wait_for_state(&format!("configs/{CONFIG}"), "FREE", LIMIT),
        "the rollout's lock was not released"
    );
    fleet.stop();
    eprintln!("took {:?}", started.elapsed());
}

/// A `--bake` without gates ends when the bake does: the server's driver ticks a rollout only
/// when its deadline is due, and the planner used to move a bake's deadline past its end to the
/// gates' results deadline (`--deadline`, 30 minutes by default) once it had ended — so every
/// wave of a gateless rollout baked for half an hour.
#[test]
fn a_bake_without_gates_ends_on_time_on_the_real_server() {
    let server = Server::start();
    let r1 = server.put("threshold = 1\n", false);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let spec = FleetSpec {
        agents: 20,
        seed: 5,
        configs: vec![CONFIG.into()],
        prefix: "bake".into(),
        ..FleetSpec::default()
    };
    let fleet = rt
        .block_on(Fleet::start_with(&server.proc().client(), spec))
        .expect("the fleet starts");
    until("20 agents apply r1", || fleet.applied(CONFIG, r1) == 20);
    let r2 = server.put("threshold = 2\n", true);
    let started = Instant::now();
    let (status, v) = server.post(
        &server.http,
        "/v1/rollouts",
        json!({"config": CONFIG, "rev": r2, "canary": "2", "waves": "100%", "bake": "1s"}),
    );
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    let v = server.wait_rollout(&id, "ended", |v| v["phase"] == "ended");
    assert_eq!(v["outcome"]["kind"], "succeeded", "{}", v["summary"]);
    // Two bakes of 1 s each, and the applies: far less than the 40 s the wait allows.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    fleet.stop();
}
