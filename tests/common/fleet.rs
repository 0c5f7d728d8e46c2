//! A fleet for rollout tests: a real server (auth on) on a fixed port, so agents find it again
//! after a restart, and `n` real `locksmith agent` processes `drone-0..n` applying one config
//! to files — with a health hook that fails on a revision containing "broken" and a reload
//! hook that logs every revision each endpoint activates.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ServerProc;

pub const CONFIG: &str = "aim.conf";
pub const LIMIT: Duration = Duration::from_secs(40);
/// Healthy unless the applied file says "broken".
/// It also prints the file's `error_rate = X` line, if it has one, as the metric
/// `error_rate` (the agent reports it with the revision, for `--gate 'error_rate < N'`).
pub const HEALTH: &str = "r=$(sed -n 's/^error_rate = //p' \"$LOCKSMITH_FILE\"); \
    if [ -n \"$r\" ]; then echo \"metric error_rate=$r\"; fi; \
    ! grep -q broken \"$LOCKSMITH_FILE\" || { echo aim unstable; exit 3; }";

/// An agent process, killed (SIGKILL) and reaped on drop.
pub struct AgentProc(pub Child);

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server on a fixed port (so agents find it again after a restart) and `n` agents
/// `drone-0..n`.
pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub server: Option<ServerProc>,
    pub port: u16,
    pub agents: Vec<AgentProc>,
    pub nodes: Vec<String>,
    pub http: reqwest::blocking::Client,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn blocking_as(token: &str) -> reqwest::blocking::Client {
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
    pub fn new(n: usize, labels: impl Fn(usize) -> String) -> Fleet {
        Self::with_server_args(n, labels, &[])
    }

    /// [`Fleet::new`], its server started with `extra` options too (`--prometheus-url …`).
    pub fn with_server_args(n: usize, labels: impl Fn(usize) -> String, extra: &[&str]) -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let server = Self::start_server_with(dir.path(), port, extra);
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

    /// Without the wire protocol: its default port (`--listen`'s + 1) is not reserved by
    /// [`free_port`], so another fleet's server could take it first and this one would not start.
    pub fn start_server(dir: &Path, port: u16) -> ServerProc {
        Self::start_server_with(dir, port, &[])
    }

    /// [`Fleet::start_server`] with `extra` options.
    pub fn start_server_with(dir: &Path, port: u16, extra: &[&str]) -> ServerProc {
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["--listen", listen.as_str(), "--wire-listen", "off"];
        args.extend_from_slice(extra);
        ServerProc::start_with(&dir.join("data"), &args)
    }

    pub fn server(&self) -> &ServerProc {
        self.server.as_ref().expect("server running")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn target(&self, node: &str) -> PathBuf {
        self.path(&format!("{node}/etc/aim.conf"))
    }

    pub fn reloads(&self, node: &str) -> Vec<u64> {
        std::fs::read_to_string(self.path(&format!("{node}/reloads")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    pub fn agent(&self, i: usize, labels: &str) -> AgentProc {
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
        let mut cmd = super::command(&["--server", &self.url()]);
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
    pub fn put(&self, content: &str, draft: bool) -> u64 {
        let extra: &[&str] = if draft { &["--draft"] } else { &[] };
        self.server()
            .put_config(CONFIG, &self.path("put.conf"), content, extra)
    }

    pub fn call(
        &self,
        client: &reqwest::blocking::Client,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let resp = client
            .post(format!("{}{path}", self.url()))
            .json(&body)
            .send()
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    pub fn start(&self, client: &reqwest::blocking::Client, body: Value) -> String {
        let (status, v) = self.call(client, "/v1/rollouts", body);
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().expect("id").to_owned()
    }

    pub fn rollout(&self, id: &str) -> Value {
        rollout_at(&self.http, &self.url(), id)
    }

    pub fn wait_rollout(&self, id: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        wait_rollout_at(&self.http, &self.url(), id, what, ok)
    }

    pub fn config_current(&self) -> u64 {
        self.http
            .get(format!("{}/v1/configs/{CONFIG}", self.url()))
            .send()
            .and_then(|r| r.json::<Value>())
            .ok()
            .and_then(|v| v["head"]["current"].as_u64().or(v["rev"].as_u64()))
            .unwrap_or(0)
    }

    pub fn wait_report(&self, node: &str, rev: u64, state: &str) {
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

/// Rollout `id` as `GET /v1/rollouts/{id}` on the server at `base` shows it (`null` if it
/// cannot be read).
pub fn rollout_at(http: &reqwest::blocking::Client, base: &str, id: &str) -> Value {
    http.get(format!("{base}/v1/rollouts/{id}"))
        .send()
        .and_then(|r| r.json())
        .unwrap_or(Value::Null)
}

/// Polls rollout `id` on the server at `base` until `ok` holds of it, within [`LIMIT`].
pub fn wait_rollout_at(
    http: &reqwest::blocking::Client,
    base: &str,
    id: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + LIMIT;
    loop {
        let v = rollout_at(http, base, id);
        if ok(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "rollout {id}: never {what}; last {v:#}"
        );
        thread::sleep(Duration::from_millis(25));
    }
}
