//! The agents' server side (issue 19) against a real server on 127.0.0.1:0 with
//! authentication on: registration and the desired stream (the current revision on connect,
//! each new one after, nothing for a draft), node scoping of node tokens, reports in the fleet
//! and across a restart, presence with the stream, shadows to selected nodes only, and a
//! revoked token's stream closing.

mod common;

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Api, Backend, PROMPTLY, Storage, TestServer};
use futures_util::{Stream, StreamExt as _};
use locksmith_server::AuthMode;
use locksmith_server::clock::{Clock as _, ManualClock};
use serde_json::{Value, json};

const CONFIG: &str = "aim_lock_config.conf";

impl Api {
    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.call(method, path, body).await;
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer
    }

    /// A token of `role` (bound to `node`, if any); `(id, secret)`.
    async fn token(&self, name: &str, role: &str, node: Option<&str>) -> (String, String) {
        let mut body = json!({"name": name, "role": role});
        if let Some(node) = node {
            body["node"] = json!(node);
        }
        let made = self.ok("POST", "/v1/tokens", Some(body)).await;
        (
            made["id"].as_str().expect("id").to_owned(),
            made["token"].as_str().expect("secret").to_owned(),
        )
    }

    /// Holds `configs/CONFIG`; `(lease, token)`.
    async fn hold_config(&self) -> (u64, u64) {
        let lease = self
            .ok(
                "POST",
                "/v1/acquire",
                Some(json!({
                    "resource": format!("configs/{CONFIG}"),
                    "owner": {"node": "ops-1", "pid": 41, "start_time": 1041, "boot_id": "boot-a",
                              "user": "ops", "purpose": "config update"},
                    "ttl_ms": 600_000,
                })),
            )
            .await;
        (
            lease["lease"].as_u64().expect("lease"),
            lease["token"].as_u64().expect("token"),
        )
    }

    /// Writes a revision of CONFIG under `fence`; its number.
    async fn write(&self, fence: (u64, u64), content: &str, draft: bool) -> u64 {
        let written = self
            .ok(
                "PUT",
                &format!("/v1/configs/{CONFIG}"),
                Some(json!({"lease": fence.0, "token": fence.1, "format": "conf",
                            "content": content, "message": "agents test", "draft": draft})),
            )
            .await;
        written["rev"].as_u64().expect("rev")
    }

    /// Revision 1 of the config current and revision 2 a draft, the lock released, and
    /// `nodes` registered as drones reporting revision 1 applied; `(r1, r2)`.
    async fn drones_on_r1_with_a_draft(&self, nodes: &[&str]) -> (u64, u64) {
        let fence = self.hold_config().await;
        let r1 = self.write(fence, "hot = 1\n", false).await;
        let r2 = self.write(fence, "hot = 2\n", true).await;
        self.ok(
            "POST",
            &format!("/v1/leases/{}/release", fence.0),
            Some(json!({})),
        )
        .await;
        for node in nodes {
            assert_eq!(self.register(node, json!({"role": "drone"})).await.0, 200);
            assert_eq!(self.report(node, r1, "applied").await.0, 200);
        }
        (r1, r2)
    }

    /// Starts the rollout `body` asks for; `(id, rolled_rev)`.
    async fn start_rollout(&self, body: Value) -> (String, u64) {
        let (status, started) = self.call("POST", "/v1/rollouts", Some(body)).await;
        assert_eq!(status, 201, "{started}");
        (
            started["id"].as_str().expect("id").to_owned(),
            started["rolled_rev"].as_u64().expect("started"),
        )
    }

    async fn register(&self, node: &str, labels: Value) -> (u16, Value) {
        self.call(
            "POST",
            &format!("/v1/agents/{node}/register"),
            Some(
                json!({"labels": labels, "boot_id": "boot-a", "version": "0.1.0",
                        "configs": [CONFIG]}),
            ),
        )
        .await
    }

    async fn report(&self, node: &str, rev: u64, state: &str) -> (u16, Value) {
        self.call(
            "POST",
            &format!("/v1/agents/{node}/reports"),
            Some(
                json!({"config": CONFIG, "rev": rev, "state": state, "applied_rev": rev,
                        "applied_token": 3, "received_to_applied_ms": 12}),
            ),
        )
        .await
    }

    async fn agent(&self, node: &str) -> Value {
        self.ok("GET", &format!("/v1/fleet/{node}"), None).await
    }

    /// Opens `node`'s desired stream: the stream, or the refusal.
    async fn desired(&self, node: &str) -> Result<Desired, (u16, Value)> {
        let resp = self
            .http
            .get(format!("{}/v1/agents/{node}/desired", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("desired");
        let status = resp.status().as_u16();
        if status != 200 {
            let text = resp.text().await.unwrap_or_default();
            return Err((status, serde_json::from_str(&text).unwrap_or(Value::Null)));
        }
        Ok(Desired {
            body: Box::pin(resp.bytes_stream().map(|r| r.map(|b| b.to_vec()))),
            buf: String::new(),
        })
    }
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Vec<u8>>> + Send>>;

/// A desired stream as the agent reads it.
struct Desired {
    body: Body,
    buf: String,
}

impl Desired {
    /// The next `desired` event's data, within [`PROMPTLY`].
    async fn next(&mut self) -> Value {
        tokio::time::timeout(PROMPTLY, async {
            loop {
                if let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    let mut event = None;
                    let mut data = String::new();
                    for line in block.lines() {
                        if let Some(e) = line.strip_prefix("event:") {
                            event = Some(e.trim().to_owned());
                        } else if let Some(d) = line.strip_prefix("data:") {
                            data.push_str(d.trim_start());
                        }
                    }
                    if event.as_deref() == Some("desired") {
                        return serde_json::from_str(&data).expect("desired JSON");
                    }
                    continue;
                }
                let chunk = self.body.next().await.expect("stream open").expect("bytes");
                self.buf.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .expect("a desired event, promptly")
    }

    /// Whether the stream ends within `within`.
    async fn ends_within(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, async {
            while let Some(chunk) = self.body.next().await {
                if chunk.is_err() {
                    break;
                }
            }
        })
        .await
        .is_ok()
    }
}

fn admin_secret(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("admin.token"))
        .expect("admin.token")
        .trim()
        .to_owned()
}

/// A server with authentication on over `storage`, and an admin [`Api`].
async fn secured(
    storage: &Storage,
    tweak: impl FnOnce(&mut locksmith_server::ServerConfig),
) -> (TestServer, Api) {
    let s = TestServer::on_tweaked(storage, |c| {
        c.auth = AuthMode::On;
        tweak(c);
    })
    .await;
    let api = Api::new(&s.url, &admin_secret(storage.dir()));
    (s, api)
}

/// A registered agent's stream sends the current revision on connect, with the token it was
/// written under and the fence of `configs/NAME`, then each new current revision; a draft
/// sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_sends_the_current_revision_on_connect_and_each_new_one() {
    let storage = Storage::fresh(Backend::Embedded);
    let (s, admin) = secured(&storage, |_| {}).await;
    let fence = admin.hold_config().await;
    let r1 = admin.write(fence, "hot = 1\n", false).await;
    let (_, secret) = admin.token("agent@d1", "node", Some("d1")).await;
    let agent = admin.as_token(&secret);
    let (status, view) = agent.register("d1", json!({"role": "drone"})).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["configs"][0]["desired_rev"], r1, "{view}");

    let mut stream = agent.desired("d1").await.expect("stream");
    let first = stream.next().await;
    assert_eq!(first["config"], CONFIG);
    assert_eq!(first["rev"], r1);
    assert_eq!(first["token"], fence.1);
    assert_eq!(first["fence"], fence.1, "the holder's token is the fence");
    assert_eq!(first["shadow"], false);
    assert_eq!(first["size"], 8);

    let _draft = admin.write(fence, "hot = 2\n", true).await;
    let r3 = admin.write(fence, "hot = 3\n", false).await;
    let next = stream.next().await;
    assert_eq!(next["rev"], r3, "the draft sent nothing: {next}");
    s.stop().await;
}

/// A small revision rides in its desired event, so an endpoint needs no fetch; one over the
/// inline limit does not, and the agent fetches it as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_revision_comes_inline_in_its_desired_event_and_a_large_one_is_left_to_fetch() {
    let storage = Storage::fresh(Backend::Embedded);
    let (s, admin) = secured(&storage, |_| {}).await;
    let fence = admin.hold_config().await;
    admin.write(fence, "hot = 1\n", false).await;
    let (_, secret) = admin.token("agent@d1", "node", Some("d1")).await;
    let agent = admin.as_token(&secret);
    assert_eq!(agent.register("d1", json!({})).await.0, 200);
    let mut stream = agent.desired("d1").await.expect("stream");
    let first = stream.next().await;
    assert_eq!(first["content"]["content"], "hot = 1\n", "{first}");

    let limit = usize::try_from(locksmith_api::agents::INLINE_CONTENT_MAX).expect("limit");
    let large = format!("# {}\nhot = 2\n", "x".repeat(limit));
    let r2 = admin.write(fence, &large, false).await;
    let next = stream.next().await;
    assert_eq!(next["rev"], r2);
    assert!(
        next.get("content").is_none(),
        "{} bytes came inline",
        large.len()
    );
    s.stop().await;
}

/// A node token registers, reports, streams and sees only its own node: another node's routes
/// are 403 and the fleet shows it only itself; an operator sees every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_token_cannot_register_report_stream_or_see_another_node() {
    let storage = Storage::fresh(Backend::Embedded);
    let (s, admin) = secured(&storage, |_| {}).await;
    let (_, d1) = admin.token("agent@d1", "node", Some("d1")).await;
    let (_, d2) = admin.token("agent@d2", "node", Some("d2")).await;
    let (d1, d2) = (admin.as_token(&d1), admin.as_token(&d2));
    assert_eq!(d1.register("d1", json!({})).await.0, 200);
    assert_eq!(d2.register("d2", json!({})).await.0, 200);

    let forbidden = |(status, body): (u16, Value)| {
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("forbidden")),
            "{body}"
        );
    };
    forbidden(d1.register("d2", json!({})).await);
    forbidden(d1.report("d2", 1, "applied").await);
    forbidden(d1.call("POST", "/v1/agents/d2/heartbeat", None).await);
    forbidden(d1.call("GET", "/v1/fleet/d2", None).await);
    forbidden(d1.desired("d2").await.err().expect("refused"));

    let fleet = d1.ok("GET", "/v1/fleet", None).await;
    let nodes: Vec<&str> = fleet["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| a["node"].as_str())
        .collect();
    assert_eq!(nodes, ["d1"]);
    let fleet = admin.ok("GET", "/v1/fleet", None).await;
    assert_eq!(fleet["agents"].as_array().map(Vec::len), Some(2), "{fleet}");
    let (status, missing) = admin.call("GET", "/v1/fleet/d9", None).await;
    assert_eq!(
        (status, missing["error"].as_str()),
        (404, Some("agent_not_found"))
    );
    s.stop().await;
}

/// Reports show in the fleet with their state, error and timing, are audited only when the
/// state changes, and — with the registration — survive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_update_the_fleet_and_survive_a_restart() {
    let storage = Storage::fresh(Backend::Embedded);
    let (s, admin) = secured(&storage, |_| {}).await;
    let fence = admin.hold_config().await;
    let r1 = admin.write(fence, "hot = 1\n", false).await;
    let (_, secret) = admin.token("agent@d1", "node", Some("d1")).await;
    let agent = admin.as_token(&secret);
    assert_eq!(agent.register("d1", json!({"role": "drone"})).await.0, 200);
    for _ in 0..3 {
        let (status, view) = agent.report("d1", r1, "applied").await;
        assert_eq!(status, 200, "{view}");
    }
    let (status, view) = agent
        .call(
            "POST",
            "/v1/agents/d1/reports",
            Some(
                json!({"config": CONFIG, "rev": r1 + 1, "state": "refused", "applied_rev": r1,
                        "applied_token": fence.1,
                        "error": "lock mismatch: aim_lock_config.conf HOT — test"}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{view}");
    let (status, other) = agent
        .call(
            "POST",
            "/v1/agents/d1/reports",
            Some(
                json!({"config": "other.conf", "rev": 1, "state": "applied", "applied_rev": 1,
                        "applied_token": 1}),
            ),
        )
        .await;
    assert_eq!(
        (status, other["field"].as_str()),
        (400, Some("config")),
        "{other}"
    );

    let audit = admin.ok("GET", "/v1/audit?resource=agents/d1", None).await;
    let kinds: Vec<&str> = audit["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        ["agent_registered", "agent_applied", "agent_refused"]
    );

    let before = admin.agent("d1").await;
    assert_eq!(
        before["configs"][0]["report"]["state"], "refused",
        "{before}"
    );
    s.stop().await;

    let (s, admin) = secured(&storage, |_| {}).await;
    let after = admin.agent("d1").await;
    assert_eq!(after["labels"], json!({"role": "drone"}));
    assert_eq!(after["configs"], before["configs"], "{after}");
    assert!(
        after["configs"][0]["report"]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("lock mismatch")),
        "{after}"
    );
    s.stop().await;
}

/// A node is online while its stream is open, however long, and offline once the stream is
/// gone and it has not been heard from for the window; a heartbeat brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_follows_the_stream_and_the_heartbeat() {
    let clock = Arc::new(ManualClock::new());
    let storage = Storage::fresh(Backend::Embedded);
    let (s, admin) = secured(&storage, common::on_virtual_time(&clock)).await;
    let (_, secret) = admin.token("agent@d1", "node", Some("d1")).await;
    let agent = admin.as_token(&secret);
    assert_eq!(agent.register("d1", json!({})).await.0, 200);
    let stream = agent.desired("d1").await.expect("stream");
    clock.advance(Duration::from_secs(600));
    assert_eq!(admin.agent("d1").await["online"], true);
    let metrics = reqwest::get(format!("{}/metrics", s.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("locksmith_agents_online 1"), "{metrics}");

    drop(stream);
    let started = Instant::now();
    loop {
        clock.advance(Duration::from_secs(31));
        if admin.agent("d1").await["online"] == false {
            break;
        }
        assert!(
            started.elapsed() < PROMPTLY,
            "still online after its stream closed"
        );
        tokio::task::yield_now().await;
    }
    let beat = agent.ok("POST", "/v1/agents/d1/heartbeat", None).await;
    assert_eq!(beat["online"], true, "{beat}");
    s.stop().await;
}

/// A shadow reaches only the nodes its selector matches, marked `shadow` with the draft's base;
/// the others hear nothing; a new current revision ends it, and every node is sent that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_reaches_only_the_selected_nodes() {
    let storage = Storage::fresh(Backend::Embedded);
    let (s, admin) = secured(&storage, |_| {}).await;
    let fence = admin.hold_config().await;
    let r1 = admin.write(fence, "hot = 1\n", false).await;
    let mut streams = Vec::new();
    for (node, role) in [("d1", "drone"), ("d2", "drone"), ("a1", "arm")] {
        let (_, secret) = admin
            .token(&format!("agent@{node}"), "node", Some(node))
            .await;
        let agent = admin.as_token(&secret);
        assert_eq!(agent.register(node, json!({"role": role})).await.0, 200);
        let mut stream = agent.desired(node).await.expect("stream");
        assert_eq!(stream.next().await["rev"], r1);
        streams.push(stream);
    }
    let draft = admin.write(fence, "hot = 2\n", true).await;
    let (_, operator) = admin.token("ops", "operator", None).await;
    let sent = admin
        .as_token(&operator)
        .ok(
            "POST",
            &format!("/v1/configs/{CONFIG}/shadow"),
            Some(json!({"rev": draft, "selector": "role=drone"})),
        )
        .await;
    assert_eq!(sent["nodes"], json!(["d1", "d2"]), "{sent}");
    for stream in &mut streams[..2] {
        let shadow = stream.next().await;
        assert_eq!(
            (&shadow["rev"], &shadow["shadow"], &shadow["base_rev"]),
            (&json!(draft), &json!(true), &json!(r1)),
            "{shadow}"
        );
    }
    let r3 = admin.write(fence, "hot = 3\n", false).await;
    for stream in &mut streams {
        let next = stream.next().await;
        assert_eq!(
            (&next["rev"], &next["shadow"]),
            (&json!(r3), &json!(false)),
            "{next}"
        );
    }
    let (status, refused) = admin
        .call(
            "POST",
            &format!("/v1/configs/{CONFIG}/shadow"),
            Some(json!({"rev": draft, "nodes": ["d9"]})),
        )
        .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (404, Some("agent_not_found"))
    );
    s.stop().await;
}

/// Revoking the node token closes its open desired stream within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_node_token_closes_its_desired_stream() {
    let storage = Storage::fresh(Backend::Embedded);
    let (s, admin) = secured(&storage, |_| {}).await;
    let fence = admin.hold_config().await;
    admin.write(fence, "hot = 1\n", false).await;
    let (id, secret) = admin.token("agent@d1", "node", Some("d1")).await;
    let agent = admin.as_token(&secret);
    assert_eq!(agent.register("d1", json!({})).await.0, 200);
    let mut stream = agent.desired("d1").await.expect("stream");
    stream.next().await;
    admin
        .ok("POST", &format!("/v1/tokens/{id}/revoke"), None)
        .await;
    let revoked_at = Instant::now();
    assert!(
        stream.ends_within(Duration::from_secs(3)).await,
        "still open"
    );
    assert!(
        revoked_at.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        revoked_at.elapsed()
    );
    s.stop().await;
}

/// A rollout reports an endpoint that is offline apart from failed ones, and once it is back
/// (its presence, on the server's virtual clock) while its wave is applied, the driver tells
/// the planner, which sends it the revision; then the rollout ends with it applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_reports_an_offline_endpoint_apart_and_sends_it_the_revision_when_back() {
    let clock = Arc::new(ManualClock::new());
    let storage = Storage::fresh(Backend::Embedded);
    let (s, admin) = secured(&storage, common::on_virtual_time(&clock)).await;
    let (r1, r2) = admin.drones_on_r1_with_a_draft(&["n0", "n1", "n2"]).await;
    // n1 falls silent past the online window; n0 and n2 keep heartbeating.
    clock.advance(Duration::from_secs(31));
    for node in ["n0", "n2"] {
        admin
            .ok("POST", &format!("/v1/agents/{node}/heartbeat"), None)
            .await;
    }
    assert_eq!(admin.agent("n1").await["online"], false);
    let (id, rolled) = admin
        .start_rollout(json!({"config": CONFIG, "rev": r2, "canary": "1", "deadline": "10m"}))
        .await;
    let path = format!("/v1/rollouts/{id}");
    let rollout = || admin.ok("GET", &path, None);
    let status = |view: &Value, node: &str| {
        view["endpoints"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["node"] == node))
            .map(|e| e["status"].clone())
            .unwrap_or(Value::Null)
    };
    // The canary (n0) passes; the second wave sends n2 and finds n1 offline.
    assert_eq!(admin.report("n0", rolled, "applied").await.0, 200);
    let view = rollout().await;
    assert_eq!(status(&view, "n1"), "offline", "{view:#}");
    assert_eq!(status(&view, "n2"), "sent", "{view:#}");
    assert_eq!(
        (&view["waves"][1]["failed"], &view["waves"][1]["offline"]),
        (&json!(0), &json!(1))
    );
    assert_eq!(admin.agent("n1").await["configs"][0]["desired_rev"], r1);
    // Back while its wave is applied: it is sent the revision, before the rollout ends.
    admin.ok("POST", "/v1/agents/n1/heartbeat", None).await;
    let start = Instant::now();
    loop {
        let view = rollout().await;
        if status(&view, "n1") == "sent" {
            assert_eq!(view["phase"], "running", "{view:#}");
            break;
        }
        assert!(
            start.elapsed() < PROMPTLY,
            "n1 never sent the revision: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(admin.agent("n1").await["configs"][0]["desired_rev"], rolled);
    for node in ["n1", "n2"] {
        assert_eq!(admin.report(node, rolled, "applied").await.0, 200);
    }
    let view = rollout().await;
    assert_eq!(view["outcome"]["kind"], "succeeded", "{view:#}");
    s.stop().await;
}

/// A canary told the rolled revision and then, before it applied it, its last-known-good
/// again (a rollback another canary started) answers `applied` on that revision: the very
/// report it sent before the rollout. The rollout takes that repeat as the endpoint restored
/// and ends — it used to be dropped as unchanged, and the rollback waited out its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_ends_on_a_canary_repeating_its_report_of_the_last_known_good() {
    let storage = Storage::fresh(Backend::Embedded);
    let (s, admin) = secured(&storage, |_| {}).await;
    let (r1, r2) = admin.drones_on_r1_with_a_draft(&["n0", "n1"]).await;
    let (id, rolled) = admin
        .start_rollout(json!({"config": CONFIG, "rev": r2, "canary": "2", "deadline": "10m"}))
        .await;
    // n0 fails the revision (and restored r1 itself): the rollback sends both back to r1.
    let failed = admin
        .call(
            "POST",
            "/v1/agents/n0/reports",
            Some(json!({"config": CONFIG, "rev": rolled, "state": "failed",
                        "applied_rev": r1, "applied_token": 3, "error": "health"})),
        )
        .await;
    assert_eq!(failed.0, 200, "{}", failed.1);
    assert_eq!(admin.agent("n1").await["configs"][0]["desired_rev"], r1);
    // n1 never applied the rolled revision: it answers r1 applied, as before the rollout.
    assert_eq!(admin.report("n1", r1, "applied").await.0, 200);
    let path = format!("/v1/rollouts/{id}");
    let start = Instant::now();
    loop {
        let view = admin.ok("GET", &path, None).await;
        if view["phase"] == "ended" {
            assert_eq!(view["outcome"]["kind"], "rolled_back", "{view:#}");
            break;
        }
        assert!(
            start.elapsed() < PROMPTLY,
            "the rollback never ended: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.stop().await;
}

/// A rebooted node's agent registers under its new boot id: that registration is the node's
/// first contact, and reclaims at once — the virtual clock never moves, so no TTL runs out —
/// every lease the node held under its old boot (audited as `node_rebooted`), in the same
/// step; another node's lease is untouched, and registering under the same boot reclaims
/// nothing. The next holder of a reclaimed lock is granted above the ghost's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_under_a_new_boot_id_reclaims_the_nodes_older_boot_leases_at_once() {
    let clock = Arc::new(ManualClock::new());
    let storage = Storage::fresh(Backend::Embedded);
    let (s, admin) = secured(&storage, common::on_virtual_time(&clock)).await;
    let acquire = |resource: &str, node: &str, boot: &str| {
        let body = json!({
            "resource": resource,
            "owner": {"node": node, "pid": 7, "start_time": 1007, "boot_id": boot,
                      "user": "ops", "purpose": "reboot test"},
            "ttl_ms": 600_000,
        });
        let admin = &admin;
        async move {
            let lease = admin.ok("POST", "/v1/acquire", Some(body)).await;
            (
                lease["lease"].as_u64().expect("lease"),
                lease["token"].as_u64().expect("token"),
            )
        }
    };
    let (ghost, ghost_token) = acquire("work/d1", "d1", "boot-a").await;
    let (other, _) = acquire("work/d2", "d2", "boot-a").await;
    let (_, secret) = admin.token("agent@d1", "node", Some("d1")).await;
    let agent = admin.as_token(&secret);
    // Registering under the boot the lease was granted in: the holder may be alive.
    assert_eq!(agent.register("d1", json!({})).await.0, 200);
    let lease = |id: u64| {
        let admin = &admin;
        async move { admin.call("GET", &format!("/v1/leases/{id}"), None).await }
    };
    assert_eq!(lease(ghost).await.0, 200, "the same boot reclaims nothing");

    let (status, view) = agent
        .call(
            "POST",
            "/v1/agents/d1/register",
            Some(json!({"boot_id": "boot-b", "version": "0.1.0", "configs": [CONFIG]})),
        )
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        lease(ghost).await.0,
        404,
        "the old boot's lease is reclaimed"
    );
    assert_eq!(
        lease(other).await.0,
        200,
        "another node's lease is untouched"
    );
    let audit = admin.ok("GET", "/v1/audit?resource=work/d1", None).await;
    let ended: Vec<&Value> = audit["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["lease"] == ghost && r["kind"] != "granted")
        .collect();
    assert_eq!(ended.len(), 1, "{audit:#}");
    assert_eq!(
        (
            &ended[0]["kind"],
            &ended[0]["cause"],
            &ended[0]["new_boot_id"]
        ),
        (&json!("ended"), &json!("node_rebooted"), &json!("boot-b")),
        "{audit:#}"
    );
    let (_, next_token) = acquire("work/d1", "d3", "boot-a").await;
    assert!(next_token > ghost_token, "{next_token} > {ghost_token}");
    s.stop().await;
}

/// A rollout's bake runs out on the server's clock with nothing else happening — no report,
/// no endpoint going offline, no GC sweep (virtual time: the sweep is an hour away) — and the
/// rollout keeps its 10-minute lease on the config through a 10-minute bake: the reaper wakes
/// to renew it halfway, and at the bake's end sends the next wave. (The bake used to end only
/// on the next report, a presence change or the gates' deadline 30 minutes on, and the lease
/// lapsed with no sweep.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_bake_ends_on_time_and_the_rollout_keeps_its_lease_through_it() {
    let clock = Arc::new(ManualClock::new());
    let storage = Storage::fresh(Backend::Embedded);
    let (s, admin) = secured(&storage, common::on_virtual_time(&clock)).await;
    let (r1, r2) = admin.drones_on_r1_with_a_draft(&["n0", "n1"]).await;
    // Both stay online through the bake (their streams are open): no presence change prompts
    // the planner either.
    let mut streams = Vec::new();
    for node in ["n0", "n1"] {
        streams.push(admin.desired(node).await.map_err(|e| e.1).expect("stream"));
    }
    let (id, rolled) = admin
        .start_rollout(json!({"config": CONFIG, "rev": r2, "canary": "1", "bake": "10m"}))
        .await;
    let path = format!("/v1/rollouts/{id}");
    let view = admin.ok("GET", &path, None).await;
    let canary = view["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["wave"] == 0))
        .and_then(|e| e["node"].as_str())
        .expect("a canary")
        .to_owned();
    let other = if canary == "n0" { "n1" } else { "n0" };
    assert_eq!(admin.report(&canary, rolled, "applied").await.0, 200);
    assert_eq!(admin.agent(other).await["configs"][0]["desired_rev"], r1);
    let lock_path = format!("/v1/locks/configs/{CONFIG}");
    let renewed = || async {
        let lock = admin.ok("GET", &lock_path, None).await;
        lock["holders"][0]["last_heartbeat_ms"]
            .as_u64()
            .unwrap_or(0)
    };
    // Halfway: nothing has asked anything, yet the lease is renewed, and the bake goes on.
    clock.advance(Duration::from_secs(300));
    let halfway = clock.now().wall_ms;
    let start = Instant::now();
    while renewed().await < halfway {
        assert!(
            start.elapsed() < PROMPTLY,
            "the rollout's lease was not renewed halfway through the bake"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(admin.agent(other).await["configs"][0]["desired_rev"], r1);
    // The bake's end: the next wave is sent, with no report to prompt it.
    clock.advance(Duration::from_secs(301));
    let start = Instant::now();
    loop {
        if admin.agent(other).await["configs"][0]["desired_rev"] == rolled {
            break;
        }
        let view = admin.ok("GET", &path, None).await;
        assert!(
            start.elapsed() < PROMPTLY,
            "the bake never ended: {}",
            view["summary"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let view = admin.ok("GET", &path, None).await;
    assert_eq!(view["phase"], "running", "{view:#}");
    assert!(
        view["lease"].is_u64(),
        "the rollout holds its lease: {view:#}"
    );
    s.stop().await;
}

/// A registration naming the server's own node under another boot id than the server's would
/// end the node's live leases as ghosts of a reboot that never happened: it is refused
/// (`boot_id`), and the lease of a holder there lives on; under the real boot id it registers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_naming_the_servers_own_node_under_a_forged_boot_id_is_refused() {
    let storage = Storage::fresh(Backend::Embedded);
    let (s, admin) = secured(&storage, |_| {}).await;
    let node = locksmith_host::hostname().expect("hostname");
    let boot_id = locksmith_host::boot_id().expect("boot id");
    let held = admin
        .ok(
            "POST",
            "/v1/acquire",
            Some(json!({
                "resource": "work/local",
                "owner": {"node": node, "pid": 7, "start_time": 1007, "boot_id": boot_id,
                          "user": "ops", "purpose": "forged boot test"},
                "ttl_ms": 600_000,
            })),
        )
        .await;
    let lease = held["lease"].as_u64().expect("lease");
    let register = |boot: &str| {
        let (admin, path) = (&admin, format!("/v1/agents/{node}/register"));
        let body = json!({"boot_id": boot, "version": "0.1.0", "configs": [CONFIG]});
        async move { admin.call("POST", &path, Some(body)).await }
    };
    let (status, body) = register("00000000-0000-0000-0000-000000000000").await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("boot_id")),
        "{body}"
    );
    let (status, _) = admin
        .call("GET", &format!("/v1/leases/{lease}"), None)
        .await;
    assert_eq!(status, 200, "the local holder keeps its lease");
    let (status, body) = register(&boot_id).await;
    assert_eq!(status, 200, "{body}");
    s.stop().await;
}
