//! Rollouts end to end: a real server (auth on) and a fleet of real `locksmith agent`
//! processes applying a config to files, with a health hook that fails on a bad revision and a
//! reload hook that logs every revision each endpoint activates. Pins: a canary catches a bad
//! revision and the rollback leaves the canary on its own last-known-good and everyone else
//! untouched; a silent endpoint pauses the rollout and nothing is ever promoted on a timeout;
//! approvals by the starter or twice by one operator are refused; two rollouts of one config
//! queue; kill -9 of the server mid-rollout resumes without telling any endpoint twice; an
//! endpoint outside its update window waits; gates on agent-reported metrics and on a real
//! Prometheus (Debian's) fail a wave over their threshold, pause without data, pass under it.

mod common;
#[path = "../crates/server/tests/common/prometheus.rs"]
mod prometheus;

use std::thread;
use std::time::{Duration, Instant};

use common::fleet::{CONFIG, Fleet, LIMIT, blocking_as};
use serde_json::{Value, json};

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
        // Why it failed stays with the rollout after the restore replaced its report.
        let e = v["endpoints"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["node"] == node.as_str()))
            .map(|e| e["error"].clone())
            .unwrap_or(Value::Null);
        assert!(
            e.as_str().is_some_and(|e| e.contains("aim unstable")),
            "{node}: {e}"
        );
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

#[test]
fn a_gate_on_agent_metrics_fails_a_wave_over_its_threshold_pauses_without_data_and_passes_under_it()
{
    let fleet = Fleet::new(3, |_| "role=drone".into());
    let gate = json!(["error_rate < 0.01"]);
    // Healthy by its hook, but the canary reports error_rate 0.5: the gate fails the wave
    // and the canary goes back to revision 1; the others are never sent it.
    let noisy = fleet.put("threshold = 2\nerror_rate = 0.5\n", true);
    let id = fleet.start(
        &fleet.http,
        json!({"config": CONFIG, "rev": noisy, "canary": "1", "gates": gate}),
    );
    let v = fleet.wait_rollout(&id, "ended", ended);
    assert_eq!(v["outcome"]["kind"], "rolled_back", "{v:#}");
    let why = v["outcome"]["why"].as_str().unwrap_or_default();
    assert!(why.contains("error_rate"), "{why}");
    assert_eq!(landing(&v, "drone-0")["rev"], 1, "{v:#}");
    for node in &fleet.nodes[1..] {
        assert_eq!(fleet.reloads(node), [1], "{node} was touched");
    }
    // No endpoint reports the metric: no data is inconclusive, and it pauses — never passes.
    let silent = fleet.put("threshold = 3\n", true);
    let id = fleet.start(
        &fleet.http,
        json!({"config": CONFIG, "rev": silent, "canary": "1", "gates": gate}),
    );
    let v = fleet.wait_rollout(&id, "paused", |v| v["state"]["paused"].is_object());
    assert_eq!(
        v["state"]["paused"]["reason"]["gate_inconclusive"]["gates"],
        json!(["error_rate"]),
        "{v:#}"
    );
    let (status, _) = fleet.call(
        &fleet.http,
        &format!("/v1/rollouts/{id}/abort"),
        json!({"rollback": true}),
    );
    assert_eq!(status, 200);
    fleet.wait_rollout(&id, "ended", ended);
    // Under the threshold on every endpoint: it passes each wave and is promoted.
    let good = fleet.put("threshold = 4\nerror_rate = 0.001\n", true);
    let id = fleet.start(
        &fleet.http,
        json!({"config": CONFIG, "rev": good, "canary": "1", "gates": gate}),
    );
    let v = fleet.wait_rollout(&id, "ended", ended);
    assert_eq!(v["outcome"]["kind"], "succeeded", "{v:#}");
}

#[test]
fn a_prometheus_gate_on_a_real_prometheus_fails_the_wave_over_its_threshold_and_passes_under_it() {
    let exporter = prometheus::Exporter::start();
    exporter.set("fleet_errors_ratio", 0.5);
    let prom = prometheus::Prometheus::start(&[("fleet", exporter.addr())]);
    prom.wait_targets_up(1);
    prom.wait_for("fleet_errors_ratio", "the exporter's value", |s| {
        !s.is_empty()
    });
    let url = prom.url();
    let fleet = Fleet::with_server_args(2, |_| "role=drone".into(), &["--prometheus-url", &url]);
    let gate = json!(["prom:max(fleet_errors_ratio) < 0.1"]);
    let r2 = fleet.put("threshold = 2\n", true);
    let id = fleet.start(
        &fleet.http,
        json!({"config": CONFIG, "rev": r2, "canary": "1", "gates": gate}),
    );
    let v = fleet.wait_rollout(&id, "ended", ended);
    assert_eq!(v["outcome"]["kind"], "rolled_back", "{v:#}");
    assert!(
        v["outcome"]["why"]
            .as_str()
            .unwrap_or_default()
            .contains("prom:max(fleet_errors_ratio)"),
        "{v:#}"
    );
    assert_eq!(fleet.reloads("drone-1"), [1], "the second wave was sent");
    // The errors stop; the next rollout passes the same gate.
    exporter.set("fleet_errors_ratio", 0.0);
    prom.wait_for("fleet_errors_ratio", "the new value", |s| {
        s.first().is_some_and(|(_, v)| *v == 0.0)
    });
    let r3 = fleet.put("threshold = 3\n", true);
    let id = fleet.start(
        &fleet.http,
        json!({"config": CONFIG, "rev": r3, "canary": "1", "gates": gate}),
    );
    let v = fleet.wait_rollout(&id, "ended", ended);
    assert_eq!(v["outcome"]["kind"], "succeeded", "{v:#}");
}
