//! FleetLock conformance: the protocol Zincati speaks, against a real server on 127.0.0.1:0 with
//! the real embedded store.
//!
//! Spec: <https://coreos.github.io/zincati/development/fleetlock/protocol/>. Every test checks,
//! besides the status, that a 2xx pre-reboot is only ever answered while the id holds a slot of
//! `reboot/<group>` in the lock table (`GET /v1/locks`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod common;

use common::{TestServer, on_virtual_time};
use locksmith_core::{
    AuditRecord, FenceToken, LeaseId, LeaseRecord, Mutation, NO_EXPIRY_TTL_MS, Owner, Snapshot,
};
use locksmith_server::clock::ManualClock;
use locksmith_server::fleetlock::FleetLockConfig;
use locksmith_server::{Server, ServerConfig, ServerError};
use locksmith_store::{AuditQuery, EmbeddedStore, LeaseSink, Store, StoreError};
use serde_json::{Value, json};

/// Every `kind` the server may answer with (documented in the README).
const KINDS: [&str; 7] = [
    "failed_lock_semaphore_full",
    "failed_lock_frozen",
    "failed_lock",
    "failed_unlock",
    "invalid_request",
    "protocol_error",
    "internal_error",
];

const PRE: &str = "/fleetlock/v1/pre-reboot";
const STEADY: &str = "/fleetlock/v1/steady-state";

fn body(id: &str, group: &str) -> String {
    json!({"client_params": {"id": id, "group": group}}).to_string()
}

/// A raw request: status and JSON body.
async fn send(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> (u16, Value) {
    let http = reqwest::Client::new();
    let mut rb = http.request(method.parse().expect("method"), format!("{url}{path}"));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    if let Some(b) = body {
        rb = rb.body(b);
    }
    let resp = rb.send().await.expect("send");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("text");
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    (status, value)
}

/// A protocol request as a well-behaved client sends it.
async fn fleet(url: &str, path: &str, id: &str, group: &str) -> (u16, Value) {
    send(
        url,
        "POST",
        path,
        &[("fleet-lock-protocol", "true")],
        Some(body(id, group)),
    )
    .await
}

/// `pre-reboot` for `id` in `group`; a 200 is checked against the lock table.
async fn lock(url: &str, id: &str, group: &str) -> (u16, Value) {
    let (status, v) = fleet(url, PRE, id, group).await;
    if (200..300).contains(&status) {
        assert_eq!(status, 200, "{v}");
        assert!(
            holders(url, group).await.iter().any(|h| h == id),
            "2xx for {id} in {group} but it holds no slot: {v}"
        );
    } else {
        assert_refusal(status, &v);
    }
    (status, v)
}

async fn unlock(url: &str, id: &str, group: &str) -> (u16, Value) {
    fleet(url, STEADY, id, group).await
}

/// A FleetLock error: non-2xx, `{"kind","value"}` with a documented kind and a message.
fn assert_refusal(status: u16, v: &Value) {
    assert!(!(200..300).contains(&status), "{status} {v}");
    let kind = v["kind"].as_str().unwrap_or_else(|| panic!("no kind: {v}"));
    assert!(KINDS.contains(&kind), "undocumented kind {kind}");
    let value = v["value"]
        .as_str()
        .unwrap_or_else(|| panic!("no value: {v}"));
    assert!(!value.is_empty());
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or_default()
}

/// The resource view of `reboot/<group>` from `GET /v1/locks/...`.
async fn view(url: &str, group: &str) -> Value {
    let (status, v) = send(url, "GET", &format!("/v1/locks/reboot/{group}"), &[], None).await;
    assert_eq!(status, 200, "{v}");
    v
}

/// The ids holding a slot of `group`, oldest first.
async fn holders(url: &str, group: &str) -> Vec<String> {
    view(url, group).await["holders"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .filter_map(|h| h["owner"]["node"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn set_slots(url: &str, group: &str, slots: u32) -> (u16, Value) {
    send(
        url,
        "PUT",
        &format!("/v1/fleetlock/groups/{group}"),
        &[("content-type", "application/json")],
        Some(json!({ "slots": slots }).to_string()),
    )
    .await
}

fn with_fleetlock(f: impl FnOnce(&mut FleetLockConfig)) -> impl FnOnce(&mut ServerConfig) {
    move |c: &mut ServerConfig| f(&mut c.fleetlock)
}

// ---- the protocol -----------------------------------------------------------------------------

#[tokio::test]
async fn the_protocol_header_is_required() {
    let s = TestServer::start().await;
    for path in [PRE, STEADY] {
        for headers in [
            &[][..],
            &[("fleet-lock-protocol", "false")][..],
            &[("fleet-lock-protocol", "")][..],
            &[("fleet-lock-protocol", "yes")][..],
        ] {
            let (status, v) = send(
                &s.url,
                "POST",
                path,
                headers,
                Some(body("node-a", "default")),
            )
            .await;
            assert_eq!(status, 400, "{path} {headers:?}: {v}");
            assert_refusal(status, &v);
            assert_eq!(kind(&v), "protocol_error", "{v}");
        }
    }
    // Nothing was taken.
    assert!(holders(&s.url, "default").await.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn the_body_needs_a_non_empty_id_and_a_valid_group() {
    let s = TestServer::start().await;
    let long_group = "g".repeat(249);
    let bad = [
        "".to_string(),
        "not json".to_string(),
        "{}".to_string(),
        json!({"client_params": {}}).to_string(),
        json!({"client_params": {"id": "a"}}).to_string(),
        json!({"client_params": {"group": "default"}}).to_string(),
        json!({"client_params": {"id": 7, "group": "default"}}).to_string(),
        json!({"client_params": {"id": "", "group": "default"}}).to_string(),
        json!({"client_params": {"id": "   ", "group": "default"}}).to_string(),
        json!({"client_params": {"id": "a\nb", "group": "default"}}).to_string(),
        json!({"client_params": {"id": "a", "group": ""}}).to_string(),
        json!({"client_params": {"id": "a", "group": "a b"}}).to_string(),
        json!({"client_params": {"id": "a", "group": "a_b"}}).to_string(),
        json!({"client_params": {"id": "a", "group": "a/b"}}).to_string(),
        json!({"client_params": {"id": "a", "group": ".."}}).to_string(),
        json!({"client_params": {"id": "a", "group": long_group}}).to_string(),
    ];
    for path in [PRE, STEADY] {
        for b in &bad {
            let (status, v) = send(
                &s.url,
                "POST",
                path,
                &[("fleet-lock-protocol", "true")],
                Some(b.clone()),
            )
            .await;
            assert_eq!(status, 400, "{path} {b}: {v}");
            assert_refusal(status, &v);
            assert_eq!(kind(&v), "invalid_request", "{b}: {v}");
        }
    }
    let (status, v) = send(&s.url, "GET", "/v1/locks", &[], None).await;
    assert_eq!(status, 200);
    assert_eq!(v["locks"], json!([]), "nothing may be held: {v}");
    // Groups with dots and dashes are fine; unknown extra fields are ignored.
    let extra = json!({"client_params": {"id": "a", "group": "db-1.eu", "x": 1}, "y": 2});
    let (status, v) = send(
        &s.url,
        "POST",
        PRE,
        &[("fleet-lock-protocol", "true")],
        Some(extra.to_string()),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    s.stop().await;
}

#[tokio::test]
async fn the_lock_is_recursive_and_a_full_group_refuses_a_new_id() {
    let s = TestServer::start().await;
    let (status, first) = lock(&s.url, "node-a", "default").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["reacquired"], json!(false));
    let (status, again) = lock(&s.url, "node-a", "default").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["reacquired"], json!(true));
    assert_eq!(
        again["lease"], first["lease"],
        "the same slot, not a second one"
    );
    assert_eq!(holders(&s.url, "default").await, ["node-a"]);

    let (status, v) = lock(&s.url, "node-b", "default").await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(kind(&v), "failed_lock_semaphore_full");
    assert!(
        v["value"].as_str().unwrap_or_default().contains("node-a"),
        "the refusal names the holder: {v}"
    );
    assert_eq!(holders(&s.url, "default").await, ["node-a"]);
    s.stop().await;
}

#[tokio::test]
async fn steady_state_frees_only_the_callers_own_slot_and_is_idempotent() {
    let s = TestServer::start().await;
    assert_eq!(lock(&s.url, "node-a", "default").await.0, 200);
    let lease = view(&s.url, "default").await["holders"][0]["lease"].clone();

    // A non-holder: 200, and the holder is untouched.
    let (status, v) = unlock(&s.url, "node-b", "default").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["released"], json!(false));
    let after = view(&s.url, "default").await;
    assert_eq!(after["holders"][0]["lease"], lease);
    assert_eq!(after["holders"].as_array().map(Vec::len), Some(1));

    // The holder: freed; again: still 200.
    let (status, v) = unlock(&s.url, "node-a", "default").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["released"], json!(true));
    assert!(holders(&s.url, "default").await.is_empty());
    let (status, v) = unlock(&s.url, "node-a", "default").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["released"], json!(false));

    // The slot is free for someone else.
    assert_eq!(lock(&s.url, "node-b", "default").await.0, 200);
    s.stop().await;
}

#[tokio::test]
async fn groups_are_isolated() {
    let s = TestServer::start().await;
    assert_eq!(lock(&s.url, "node-a", "workers").await.0, 200);
    assert_eq!(lock(&s.url, "node-b", "db").await.0, 200);
    // Each group has its own single slot.
    assert_eq!(lock(&s.url, "node-c", "workers").await.0, 409);
    assert_eq!(lock(&s.url, "node-c", "db").await.0, 409);
    // The same id may hold a slot in two groups.
    assert_eq!(lock(&s.url, "node-a", "canary").await.0, 200);
    // Unlocking in one group leaves the others alone.
    assert_eq!(unlock(&s.url, "node-a", "db").await.0, 200);
    assert_eq!(holders(&s.url, "workers").await, ["node-a"]);
    assert_eq!(holders(&s.url, "canary").await, ["node-a"]);
    assert_eq!(holders(&s.url, "db").await, ["node-b"]);
    s.stop().await;
}

#[tokio::test]
async fn a_request_shaped_like_zincatis_is_accepted() {
    let s = TestServer::start().await;
    // Zincati's body is pretty-printed JSON, sent with no Content-Type.
    let pretty = "{\n  \"client_params\": {\n    \"id\": \"c988d2509fdf4cdcbed39037c56406fb\",\n    \"group\": \"default\"\n  }\n}";
    for path in [PRE, STEADY] {
        let http = reqwest::Client::new();
        let resp = http
            .post(format!("{}{path}", s.url))
            .header("fleet-lock-protocol", "true")
            .header("accept", "*/*")
            .body(pretty)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        if path == PRE {
            assert_eq!(
                holders(&s.url, "default").await,
                ["c988d2509fdf4cdcbed39037c56406fb"]
            );
        }
    }
    assert!(holders(&s.url, "default").await.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn methods_other_than_post_get_405_with_a_fleetlock_body() {
    let s = TestServer::start().await;
    for path in [PRE, STEADY] {
        for method in ["GET", "PUT", "DELETE", "PATCH"] {
            let (status, v) = send(
                &s.url,
                method,
                path,
                &[("fleet-lock-protocol", "true")],
                Some(body("node-a", "default")),
            )
            .await;
            assert_eq!(status, 405, "{method} {path}: {v}");
            assert_refusal(status, &v);
            assert_eq!(kind(&v), "protocol_error");
        }
    }
    assert!(holders(&s.url, "default").await.is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn n_ids_racing_for_k_slots_exactly_k_win() {
    const K: u32 = 3;
    const N: usize = 24;
    let s = TestServer::start_tweaked(with_fleetlock(|f| {
        f.group_slots.insert("race".to_string(), K);
    }))
    .await;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let url = s.url.clone();
            tokio::spawn(async move {
                let id = format!("node-{i:02}");
                let (status, v) = fleet(&url, PRE, &id, "race").await;
                (id, status, v)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (id, status, v) = t.await.expect("task");
        if status == 200 {
            winners.push(id);
        } else {
            assert_refusal(status, &v);
            assert_eq!(kind(&v), "failed_lock_semaphore_full", "{v}");
        }
    }
    winners.sort();
    assert_eq!(winners.len(), K as usize, "{winners:?}");
    let mut held = holders(&s.url, "race").await;
    held.sort();
    assert_eq!(held, winners, "every winner, and only winners, hold a slot");
    s.stop().await;
}

#[tokio::test]
async fn holders_persist_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start_in(dir.path()).await;
    assert_eq!(lock(&s.url, "node-a", "default").await.0, 200);
    let lease = view(&s.url, "default").await["holders"][0]["lease"].clone();
    s.stop().await;

    let s = TestServer::start_in(dir.path()).await;
    assert_eq!(holders(&s.url, "default").await, ["node-a"]);
    let (status, v) = lock(&s.url, "node-b", "default").await;
    assert_eq!(status, 409, "{v}");
    // The holder is still recognised as itself: the same slot comes back.
    let (status, v) = lock(&s.url, "node-a", "default").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["reacquired"], json!(true));
    assert_eq!(v["lease"], lease);
    assert_eq!(unlock(&s.url, "node-a", "default").await.0, 200);
    assert_eq!(lock(&s.url, "node-b", "default").await.0, 200);
    s.stop().await;
}

#[tokio::test]
async fn a_2xx_only_ever_comes_with_a_held_slot() {
    let s = TestServer::start_tweaked(with_fleetlock(|f| f.default_slots = 2)).await;
    // A fixed, shuffled-looking script of locks and unlocks by five ids: every 200 is checked
    // against the table (in `lock`), and the group never has more than two holders.
    let script = [
        (0, true),
        (1, true),
        (2, true),
        (0, true),
        (3, true),
        (1, false),
        (2, true),
        (3, true),
        (4, false),
        (0, false),
        (3, true),
        (4, true),
        (2, false),
        (4, true),
        (3, false),
        (1, true),
    ];
    for (n, take) in script {
        let id = format!("node-{n}");
        let before = holders(&s.url, "default").await;
        if take {
            let (status, v) = lock(&s.url, &id, "default").await;
            let expect_ok = before.contains(&id) || before.len() < 2;
            assert_eq!(status == 200, expect_ok, "{id} with {before:?}: {v}");
        } else {
            assert_eq!(unlock(&s.url, &id, "default").await.0, 200);
            assert!(!holders(&s.url, "default").await.contains(&id));
        }
        assert!(holders(&s.url, "default").await.len() <= 2);
    }
    s.stop().await;
}

// ---- slots at runtime --------------------------------------------------------------------------

#[tokio::test]
async fn growing_a_group_at_runtime_lets_the_next_id_in_at_once() {
    let s = TestServer::start().await;
    assert_eq!(lock(&s.url, "node-a", "default").await.0, 200);
    assert_eq!(lock(&s.url, "node-b", "default").await.0, 409);

    let (status, v) = set_slots(&s.url, "default", 2).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["slots"], json!(2));
    assert_eq!(v["source"], json!("runtime"));
    assert_eq!(v["holders"], json!(["node-a"]));

    assert_eq!(lock(&s.url, "node-b", "default").await.0, 200);
    assert_eq!(view(&s.url, "default").await["slots"], json!(2));
    let (status, v) = lock(&s.url, "node-c", "default").await;
    assert_eq!((status, kind(&v)), (409, "failed_lock_semaphore_full"));

    let (status, v) = send(&s.url, "GET", "/v1/fleetlock/groups", &[], None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["prefix"], json!("/fleetlock"));
    assert_eq!(v["default_slots"], json!(1));
    assert_eq!(
        v["groups"],
        json!([{
            "group": "default",
            "resource": "reboot/default",
            "slots": 2,
            "source": "runtime",
            "holders": ["node-a", "node-b"],
        }])
    );
    s.stop().await;
}

#[tokio::test]
async fn shrinking_a_group_keeps_its_holders_and_admits_nobody_until_they_are_fewer() {
    let s = TestServer::start_tweaked(with_fleetlock(|f| {
        f.group_slots.insert("default".to_string(), 2);
    }))
    .await;
    assert_eq!(lock(&s.url, "node-a", "default").await.0, 200);
    assert_eq!(lock(&s.url, "node-b", "default").await.0, 200);

    let (status, v) = set_slots(&s.url, "default", 1).await;
    assert_eq!(status, 200, "{v}");
    // Nobody is revoked, and holders may still ask again.
    assert_eq!(holders(&s.url, "default").await, ["node-a", "node-b"]);
    assert_eq!(lock(&s.url, "node-b", "default").await.0, 200);
    assert_eq!(holders(&s.url, "default").await.len(), 2);
    // A newcomer waits until both have left.
    assert_eq!(lock(&s.url, "node-c", "default").await.0, 409);
    assert_eq!(unlock(&s.url, "node-a", "default").await.0, 200);
    assert_eq!(lock(&s.url, "node-c", "default").await.0, 409);
    assert_eq!(unlock(&s.url, "node-b", "default").await.0, 200);
    assert_eq!(lock(&s.url, "node-c", "default").await.0, 200);
    // …and then only one at a time.
    assert_eq!(lock(&s.url, "node-d", "default").await.0, 409);
    assert_eq!(view(&s.url, "default").await["slots"], json!(1));
    s.stop().await;
}

#[tokio::test]
async fn the_group_endpoints_validate_their_input() {
    let s = TestServer::start().await;
    for (group, body) in [
        ("default", json!({"slots": 0}).to_string()),
        ("default", json!({"slots": 10_001}).to_string()),
        ("default", json!({"slots": "two"}).to_string()),
        ("default", json!({"slot": 2}).to_string()),
        ("default", "not json".to_string()),
        ("a_b", json!({"slots": 2}).to_string()),
    ] {
        let (status, v) = send(
            &s.url,
            "PUT",
            &format!("/v1/fleetlock/groups/{group}"),
            &[],
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 400, "{group} {body}: {v}");
        assert!(v["error"].is_string(), "a Locksmith API error: {v}");
    }
    let (status, v) = send(&s.url, "GET", "/v1/fleetlock/groups/workers", &[], None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["slots"], json!(1));
    assert_eq!(v["source"], json!("default"));
    let (status, v) = send(&s.url, "POST", "/v1/fleetlock/groups/workers", &[], None).await;
    assert_eq!(status, 405, "{v}");
    s.stop().await;
}

// ---- FleetLock holders are ordinary locks -------------------------------------------------------

#[tokio::test]
async fn holders_are_listed_like_any_lock_and_do_not_expire_by_default() {
    let s = TestServer::start().await;
    assert_eq!(lock(&s.url, "node-a", "workers").await.0, 200);
    let (status, v) = send(&s.url, "GET", "/v1/locks", &[], None).await;
    assert_eq!(status, 200);
    let locks = v["locks"].as_array().expect("locks");
    assert_eq!(locks.len(), 1, "{v}");
    assert_eq!(locks[0]["resource"], json!("reboot/workers"));
    let holder = &locks[0]["holders"][0];
    assert_eq!(holder["owner"]["node"], json!("node-a"));
    assert_eq!(holder["owner"]["user"], json!("fleetlock"));
    assert_eq!(holder["owner"]["pid"], json!(1));
    assert_eq!(holder["owner"]["boot_id"], json!("fleetlock"));
    assert_eq!(
        holder["owner"]["purpose"],
        json!("fleetlock reboot group workers")
    );
    assert_eq!(holder["ttl_ms"], json!(NO_EXPIRY_TTL_MS));
    assert_eq!(holder["stale"], json!(false));
    s.stop().await;
}

#[tokio::test]
async fn an_operator_can_break_a_slot_and_the_id_can_take_it_again() {
    let s = TestServer::start().await;
    assert_eq!(lock(&s.url, "node-a", "default").await.0, 200);
    let lease = view(&s.url, "default").await["holders"][0]["lease"].clone();
    let (status, v) = send(
        &s.url,
        "POST",
        "/v1/break",
        &[("content-type", "application/json")],
        Some(
            json!({
                "resource": "reboot/default",
                "operator": "alice",
                "reason": "node-a died mid-update",
                "freeze_ms": 0,
            })
            .to_string(),
        ),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["revoked"][0]["owner"]["node"], json!("node-a"));
    assert!(holders(&s.url, "default").await.is_empty());
    // The broken id asking again gets a new slot, not its revoked one.
    let (status, v) = lock(&s.url, "node-a", "default").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["reacquired"], json!(false));
    assert_ne!(v["lease"], lease);
    s.stop().await;
}

#[tokio::test]
async fn a_frozen_group_refuses_with_failed_lock_frozen() {
    let s = TestServer::start().await;
    let (status, v) = send(
        &s.url,
        "POST",
        "/v1/holds",
        &[("content-type", "application/json")],
        Some(
            json!({
                "resource": "reboot/default",
                "operator": "alice",
                "reason": "change freeze",
                "duration_ms": 60_000,
            })
            .to_string(),
        ),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = lock(&s.url, "node-a", "default").await;
    assert_eq!((status, kind(&v)), (409, "failed_lock_frozen"), "{v}");
    assert!(
        v["value"]
            .as_str()
            .unwrap_or_default()
            .contains("change freeze")
    );
    s.stop().await;
}

/// On virtual time (issue 16, deliverable 2): the slot goes stale when the server's clock
/// passes `stale_after` — to the millisecond — instead of after a 1.5 s sleep.
#[tokio::test]
async fn with_stale_after_an_abandoned_slot_is_reclaimed() {
    let clock = Arc::new(ManualClock::new());
    let on_clock = on_virtual_time(&clock);
    let s = TestServer::start_tweaked(|c| {
        on_clock(c);
        with_fleetlock(|f| f.stale_after = Some(Duration::from_secs(60)))(c);
    })
    .await;
    assert_eq!(lock(&s.url, "node-a", "default").await.0, 200);
    assert_eq!(
        view(&s.url, "default").await["holders"][0]["ttl_ms"],
        json!(60_000)
    );
    assert_eq!(lock(&s.url, "node-b", "default").await.0, 409);
    clock.advance(Duration::from_millis(59_999));
    assert_eq!(
        lock(&s.url, "node-b", "default").await.0,
        409,
        "not stale yet"
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(lock(&s.url, "node-b", "default").await.0, 200);
    assert_eq!(holders(&s.url, "default").await, ["node-b"]);
    s.stop().await;
}

#[tokio::test]
async fn the_prefix_is_configurable() {
    let s = TestServer::start_tweaked(with_fleetlock(|f| {
        f.prefix = "/reboots/fl/".to_string();
        f.group_slots = BTreeMap::from([("default".to_string(), 1)]);
    }))
    .await;
    let (status, v) = fleet(&s.url, "/reboots/fl/v1/pre-reboot", "node-a", "default").await;
    assert_eq!(status, 200, "{v}");
    let (status, _) = fleet(&s.url, PRE, "node-b", "default").await;
    assert_eq!(status, 404);
    let (status, v) = fleet(&s.url, "/reboots/fl/v1/steady-state", "node-a", "default").await;
    assert_eq!(status, 200, "{v}");
    assert!(holders(&s.url, "default").await.is_empty());
    s.stop().await;
}

// ---- settings, listings at scale, and storage failures -----------------------------------------

/// Bug pinned (issue 16, item 8): `FleetLock::new` quietly repaired settings that validation
/// refuses, so a server embedded without the CLI's checks started with other settings than
/// it was given (here 1 slot per group instead of 0). It now refuses to start, naming them.
#[tokio::test]
async fn a_server_with_invalid_fleetlock_settings_does_not_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_path_buf(),
        fleetlock: FleetLockConfig {
            default_slots: 0,
            ..FleetLockConfig::default()
        },
        auth: locksmith_server::AuthMode::Off,
        ..ServerConfig::default()
    };
    match Server::bind(config).await {
        Err(ServerError::Settings(e)) => {
            let e = e.to_string();
            assert!(e.contains("default slots"), "{e}");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("started with settings its validation refuses"),
    }
    // Refused before the store was touched.
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
}

/// Seeds `dir`'s embedded store with `n` leases on `fill/<i>`, held by processes of a node that
/// is not the server's.
fn seed(dir: &std::path::Path, n: u64) {
    let mut store = EmbeddedStore::open(dir).expect("open");
    store.load().expect("load");
    let mut batch: Vec<Mutation> = (1..=n)
        .map(|i| {
            Mutation::PutLease(LeaseRecord {
                lease: LeaseId(i),
                resource: format!("fill/{i:06}"),
                owner: Owner {
                    node: format!("seed-{}", i % 97),
                    pid: 1_000 + (i % 1_000) as u32,
                    start_time: 7,
                    boot_id: "seed-boot".into(),
                    user: "svc".into(),
                    purpose: "fills the table".into(),
                    pid_ns: None,
                },
                token: FenceToken(i),
                ttl_ms: 3_600_000,
                slots: 1,
                granted_at_ms: 1_700_000_000_000,
                lock_delay_ms: 0,
            })
        })
        .collect();
    batch.push(Mutation::FenceHighWater(n));
    store.commit(&batch).expect("seed");
}

/// Bug pinned (issue 16, item 8): `GET /v1/fleetlock/groups` built the view of every lock in
/// the table under the table's mutex (what `status` and `locks` stopped doing), then looked
/// the groups up one by one: at a million leases every request waited seconds behind it. It
/// now walks the `reboot/` names a page at a time and builds the groups' views only: listing
/// the groups costs a small part of building every lock's view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_the_groups_builds_no_view_of_the_other_locks() {
    const LEASES: u64 = 60_000;
    let dir = tempfile::tempdir().expect("tempdir");
    seed(dir.path(), LEASES);
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_path_buf(),
        probe_interval: Duration::ZERO,
        fleetlock: FleetLockConfig {
            group_slots: BTreeMap::from([("configured".to_string(), 2)]),
            ..FleetLockConfig::default()
        },
        auth: locksmith_server::AuthMode::Off,
        ..ServerConfig::default()
    };
    let s = TestServer::serving(Server::bind(config).await.expect("bind"));
    for (id, group) in [("n1", "workers"), ("n2", "db"), ("n3", "workers")] {
        let (status, v) = lock(&s.url, id, group).await;
        assert!(
            status == 200 || kind(&v) == "failed_lock_semaphore_full",
            "{v}"
        );
    }
    let (status, listed) = send(&s.url, "GET", "/v1/fleetlock/groups", &[], None).await;
    assert_eq!(status, 200, "{listed}");
    let groups: Vec<(&str, Vec<&str>)> = listed["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            let holders = g["holders"].as_array().expect("holders");
            (
                g["group"].as_str().unwrap_or_default(),
                holders.iter().filter_map(Value::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            ("configured", vec![]),
            ("db", vec!["n2"]),
            ("workers", vec!["n1"])
        ]
    );

    // The fastest of a few runs of each, so that a busy machine's pauses do not decide.
    let mut every_view = Duration::MAX;
    let mut listing = Duration::MAX;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let all = s.engine.resources().await.expect("resources");
        every_view = every_view.min(started.elapsed());
        assert_eq!(all.len() as u64, LEASES + 2);
        let started = std::time::Instant::now();
        let (status, _) = send(&s.url, "GET", "/v1/fleetlock/groups", &[], None).await;
        listing = listing.min(started.elapsed());
        assert_eq!(status, 200);
    }
    assert!(
        listing * 5 < every_view,
        "listing {} groups took {listing:?}; building every lock's view takes {every_view:?}",
        groups.len()
    );
    s.stop().await;
}

/// An embedded store whose commits fail from the moment `fail` is set, writing nothing.
struct Failing {
    store: EmbeddedStore,
    fail: Arc<AtomicBool>,
}

impl Store for Failing {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        self.store.load()
    }

    fn load_streaming(&mut self, sink: &mut dyn LeaseSink) -> Result<Snapshot, StoreError> {
        self.store.load_streaming(sink)
    }

    fn commit(&mut self, batch: &[Mutation]) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Io("injected: the disk is gone".into()));
        }
        self.store.commit(batch)
    }

    fn audit(&mut self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.store.audit(query)
    }

    fn records(
        &mut self,
        space: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.store.records(space, prefix, after, limit)
    }

    fn describe(&self) -> String {
        "failing".into()
    }
}

/// Bug pinned (issue 16, item 8): after a failed commit FleetLock said "nothing was granted"
/// whatever became of the slot, and a steady-state said "the slot may still be held — try
/// again" although the server refuses every write until it is restarted. The answers now say
/// whether the outcome is unknown, and that only a restart ends the refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_commit_the_answers_say_what_is_known_and_that_a_restart_is_needed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fail = Arc::new(AtomicBool::new(false));
    let store = Failing {
        store: EmbeddedStore::open(dir.path()).expect("open"),
        fail: Arc::clone(&fail),
    };
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_path_buf(),
        probe_interval: Duration::ZERO,
        auth: locksmith_server::AuthMode::Off,
        ..ServerConfig::default()
    };
    let server = Server::bind_with_store(config, Box::new(store))
        .await
        .expect("bind");
    let url = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let (status, v) = lock(&url, "held", "workers").await;
    assert_eq!(status, 200, "{v}");

    // The commit of this grant fails: whether it was made is unknown.
    fail.store(true, Ordering::SeqCst);
    let (status, v) = fleet(&url, PRE, "unknown", "db").await;
    assert_eq!((status, kind(&v)), (503, "failed_lock"), "{v}");
    let value = v["value"].as_str().unwrap_or_default();
    assert!(
        value.contains("whether it was granted is unknown"),
        "{value}"
    );
    assert!(value.contains("refuses writes"), "{value}");
    assert!(!value.contains("nothing was granted"), "{value}");

    // Everything after is refused unwritten, until a restart: no point trying again before.
    let (status, v) = fleet(&url, STEADY, "held", "workers").await;
    assert_eq!((status, kind(&v)), (503, "failed_unlock"), "{v}");
    let value = v["value"].as_str().unwrap_or_default();
    assert!(value.contains("until it is restarted"), "{value}");
    assert!(!value.contains("try again"), "{value}");
    let (status, v) = fleet(&url, PRE, "later", "db").await;
    assert_eq!((status, kind(&v)), (503, "failed_lock"), "{v}");
    let value = v["value"].as_str().unwrap_or_default();
    assert!(value.contains("until it is restarted"), "{value}");

    // The lock API says the same.
    let (status, v) = send(
        &url,
        "POST",
        "/v1/acquire",
        &[],
        Some(json!({"resource": "after/failure", "owner": common::owner(7)}).to_string()),
    )
    .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (503, Some("storage_failed")),
        "{v}"
    );
    let message = v["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("before anything of it was written"),
        "{message}"
    );
    assert!(message.contains("until the server restarts"), "{message}");
    let _ = stop.send(());
    // The server stops, and says its storage failed.
    let served = serving.await.expect("server task");
    assert!(matches!(served, Err(ServerError::Store(_))), "{served:?}");
}
