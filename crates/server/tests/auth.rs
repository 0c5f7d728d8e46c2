//! Identity and access (issue 17) against a real server on 127.0.0.1:0 with authentication
//! on: the role × route matrix built from the route table, node-bound and prefix-bound tokens,
//! operators named by their token, the acquirer rule, revocation of a live event stream, bad
//! tokens, the audit trail's principal, the first admin token, and `--auth off`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::TestServer;
use futures_util::StreamExt as _;
use locksmith_auth::Permission;
use locksmith_server::{AuthMode, Server};
use serde_json::{Value, json};

/// A server with authentication on in `dir`, and the secret of its first admin token.
async fn secured(
    dir: &Path,
    tweak: impl FnOnce(&mut locksmith_server::ServerConfig),
) -> (TestServer, String) {
    let s = TestServer::start_with(dir, |c| {
        c.auth = AuthMode::On;
        tweak(c);
    })
    .await;
    let admin = admin_secret(dir);
    (s, admin)
}

fn admin_secret(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("admin.token"))
        .expect("admin.token written at first start")
        .trim()
        .to_owned()
}

/// One HTTP call: `(status, body as JSON or Null)`.
async fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let http = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = http.request(method, url);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Makes a token with the admin secret; returns `(id, secret)`.
async fn token(s: &TestServer, admin: &str, body: Value) -> (String, String) {
    let (status, made) = call(
        "POST",
        &format!("{}/v1/tokens", s.url),
        Some(admin),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{made}");
    (
        made["id"].as_str().expect("id").to_owned(),
        made["token"].as_str().expect("secret").to_owned(),
    )
}

fn acquire_body(resource: &str, node: &str, pid: u32) -> Value {
    json!({
        "resource": resource,
        "owner": {"node": node, "pid": pid, "start_time": 1000 + pid, "boot_id": "boot-a",
                  "user": "tester", "purpose": "auth test"},
        "ttl_ms": 30_000,
    })
}

/// What each route must need, written out here rather than read from the server: a route
/// added without a line here, or declared with another permission, fails
/// [`every_route_needs_exactly_the_permission_of_its_role_table`].
fn expected(method: &str, path: &str) -> Option<Permission> {
    use Permission as P;
    Some(match (method, path) {
        ("GET", "/healthz" | "/metrics" | "/v1/openapi.json") => P::Anonymous,
        ("POST", "/fleetlock/v1/pre-reboot" | "/fleetlock/v1/steady-state") => P::Anonymous,
        ("GET", "/v1/tokens") | ("POST", "/v1/tokens" | "/v1/tokens/{id}/revoke") => P::Admin,
        (
            "GET",
            "/v1/locks"
            | "/v1/locks/{*resource}"
            | "/v1/leases/{id}"
            | "/v1/holds"
            | "/v1/audit"
            | "/v1/events"
            | "/v1/status"
            | "/v1/fleetlock/groups"
            | "/v1/fleetlock/groups/{group}"
            | "/v1/configs"
            | "/v1/configs/{name}"
            | "/v1/configs/{name}/revisions"
            | "/v1/configs/{name}/revisions/{rev}"
            | "/v1/configs/{name}/diff"
            | "/v1/configs/{name}/schema"
            | "/v1/agents/{node}/desired"
            | "/v1/fleet"
            | "/v1/fleet/{node}"
            | "/v1/rollouts"
            | "/v1/rollouts/{id}"
            | "/v1/rollouts/{id}/events",
        ) => P::Read,
        ("POST", "/v1/rollouts/plan") => P::Read,
        (
            "POST",
            "/v1/rollouts"
            | "/v1/rollouts/{id}/approve"
            | "/v1/rollouts/{id}/pause"
            | "/v1/rollouts/{id}/resume"
            | "/v1/rollouts/{id}/abort"
            | "/v1/rollouts/{id}/cancel",
        ) => P::Operate,
        (
            "POST",
            "/v1/agents/{node}/register"
            | "/v1/agents/{node}/heartbeat"
            | "/v1/agents/{node}/reports",
        ) => P::Report,
        ("POST", "/v1/configs/{name}/shadow") => P::Operate,
        ("POST", "/v1/configs/{name}/validate") => P::Read,
        ("PUT", "/v1/configs/{name}")
        | ("POST", "/v1/configs/{name}/promote" | "/v1/configs/{name}/rollback") => P::Lease,
        ("PUT", "/v1/configs/{name}/schema") => P::Operate,
        ("POST", "/v1/acquire" | "/v1/leases/{id}/renew" | "/v1/leases/{id}/release")
        | ("POST", "/v1/fence/check")
        | ("DELETE", "/v1/leases/{id}") => P::Lease,
        ("POST", "/v1/liveness") => P::Report,
        ("POST", "/v1/holds" | "/v1/holds/{id}/ack" | "/v1/holds/{id}/lift" | "/v1/break")
        | ("PUT", "/v1/fleetlock/groups/{group}") => P::Operate,
        _ => return None,
    })
}

/// The roles that may use a route needing `permission`, as issue 17 lists them.
fn roles_allowed(permission: Permission) -> &'static [&'static str] {
    match permission {
        Permission::Anonymous | Permission::Read => {
            &["reader", "client", "node", "operator", "admin"]
        }
        Permission::Lease => &["client", "node", "operator", "admin"],
        Permission::Report => &["node", "operator", "admin"],
        Permission::Operate => &["operator", "admin"],
        Permission::Admin => &["admin"],
    }
}

fn concrete(path: &str) -> String {
    path.replace("{*resource}", "matrix/x")
        .replace("{id}", "1")
        .replace("{group}", "default")
        .replace("{name}", "matrix.conf")
        .replace("{rev}", "1")
        .replace("{node}", "node-7")
}

/// The role × route matrix, built from the router's own table: every route declares the
/// permission its row of [`expected`] names; each role is refused (403) exactly the routes its
/// role may not use and answered something other than 401/403 on the others; without a token
/// every route but the anonymous ones answers 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_exactly_the_permission_of_its_role_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = common::config(dir.path());
    config.auth = AuthMode::On;
    let server = Server::bind(config).await.expect("bind");
    let table = server.route_permissions();
    let s = TestServer::serving(server);
    let admin = admin_secret(dir.path());

    let mut wrong = Vec::new();
    for (method, path, declared) in &table {
        match expected(method, path) {
            Some(want) if want == *declared => {}
            want => wrong.push(format!(
                "{method} {path}: declares {declared:?}, expected {want:?}"
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "routes with the wrong permission:\n{}",
        wrong.join("\n")
    );

    let mut secrets = vec![("admin".to_owned(), admin.clone())];
    for (role, extra) in [
        ("reader", json!({})),
        ("client", json!({})),
        ("node", json!({"node": "node-7"})),
        ("operator", json!({})),
    ] {
        let mut body = json!({"name": format!("matrix-{role}"), "role": role});
        if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
            b.extend(extra);
        }
        secrets.push((role.to_owned(), token(&s, &admin, body).await.1));
    }

    let mut failures = Vec::new();
    for (method, path, permission) in &table {
        let url = format!("{}{}", s.url, concrete(path));
        // A body the handlers refuse (400) once past the check: nothing in the matrix changes
        // the server, and an allowed call is told about its body, not its token.
        let body = (*method != "GET").then(|| json!({"matrix": true}));
        if *path == "/v1/events" {
            // A stream: only its status matters, read from the head.
            for (role, secret) in std::iter::once(("none".to_owned(), None))
                .chain(secrets.iter().map(|(r, t)| (r.clone(), Some(t.as_str()))))
            {
                let mut req = reqwest::Client::new().get(&url);
                if let Some(t) = secret {
                    req = req.bearer_auth(t);
                }
                let status = req.send().await.expect("events").status().as_u16();
                let want = if secret.is_none() { 401 } else { 200 };
                if status != want {
                    failures.push(format!("{role} GET {path}: {status}, expected {want}"));
                }
            }
            continue;
        }
        let (status, answer) = call(method, &url, None, body.clone()).await;
        let anonymous = *permission == Permission::Anonymous;
        if anonymous == (status == 401) {
            failures.push(format!("no token {method} {path}: {status} {answer}"));
        }
        if !anonymous && answer["error"] != "unauthenticated" {
            failures.push(format!("no token {method} {path}: {answer}"));
        }
        for (role, secret) in &secrets {
            let (status, answer) = call(method, &url, Some(secret), body.clone()).await;
            let allowed = roles_allowed(*permission).contains(&role.as_str());
            let refused = status == 401 || status == 403;
            if allowed == refused || (!allowed && answer["error"] != "forbidden") {
                failures.push(format!("{role} {method} {path}: {status} {answer}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    s.stop().await;
}

/// `--metrics-auth`: `/healthz` and `/metrics` need a token of any role; the OpenAPI document
/// and FleetLock's protocol stay anonymous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_auth_closes_the_probes_to_anonymous_callers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin) = secured(dir.path(), |c| c.metrics_auth = true).await;
    let (_, reader) = token(&s, &admin, json!({"name": "prometheus", "role": "reader"})).await;
    for path in ["/healthz", "/metrics"] {
        let url = format!("{}{path}", s.url);
        assert_eq!(call("GET", &url, None, None).await.0, 401, "{path}");
        assert_eq!(
            call("GET", &url, Some(&reader), None).await.0,
            200,
            "{path}"
        );
    }
    let (status, _) = call("GET", &format!("{}/v1/openapi.json", s.url), None, None).await;
    assert_eq!(status, 200);
    s.stop().await;
}

/// A node token acquires only as its node and reports liveness only for its node: a forged
/// report for another node is refused (403) and reclaims nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_token_cannot_acquire_or_report_for_another_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin) = secured(dir.path(), |_| {}).await;
    let (_, agent) = token(
        &s,
        &admin,
        json!({"name": "agent@node-7", "role": "node", "node": "node-7"}),
    )
    .await;
    let acquire = format!("{}/v1/acquire", s.url);

    let (status, refused) = call(
        "POST",
        &acquire,
        Some(&agent),
        Some(acquire_body("cfg/a", "node-8", 10)),
    )
    .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (403, Some("forbidden")),
        "{refused}"
    );
    assert!(
        refused["message"].as_str().unwrap_or("").contains("node-8"),
        "{refused}"
    );
    let (status, own) = call(
        "POST",
        &acquire,
        Some(&agent),
        Some(acquire_body("cfg/a", "node-7", 10)),
    )
    .await;
    assert_eq!(status, 200, "{own}");

    // A victim on node-8 holds a lock; the node-7 agent forges node-8's reboot.
    let (status, victim) = call(
        "POST",
        &acquire,
        Some(&admin),
        Some(acquire_body("cfg/b", "node-8", 11)),
    )
    .await;
    assert_eq!(status, 200, "{victim}");
    let forged = json!({"node": "node-8", "boot_id": "boot-z", "reported_by": "agent", "dead": []});
    let (status, refused) = call(
        "POST",
        &format!("{}/v1/liveness", s.url),
        Some(&agent),
        Some(forged),
    )
    .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (403, Some("forbidden")),
        "{refused}"
    );
    let (_, lock) = call(
        "GET",
        &format!("{}/v1/locks/cfg/b", s.url),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(lock["holders"][0]["lease"], victim["lease"], "{lock}");

    let honest = json!({"node": "node-7", "boot_id": "boot-a", "reported_by": "agent", "dead": []});
    let (status, answer) = call(
        "POST",
        &format!("{}/v1/liveness", s.url),
        Some(&agent),
        Some(honest),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    s.stop().await;
}

/// A client token locks only under its prefixes, and renews or releases only the leases it
/// acquired: another client's lease under the same prefix is refused (403) by id, with or
/// without its fencing token (which equals its id); an operator may end it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_token_touches_only_its_prefixes_and_its_own_leases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin) = secured(dir.path(), |_| {}).await;
    let (_, ci) = token(
        &s,
        &admin,
        json!({"name": "ci", "role": "client", "prefixes": ["ci/"]}),
    )
    .await;
    let (_, other) = token(
        &s,
        &admin,
        json!({"name": "other-ci", "role": "client", "prefixes": ["ci/"]}),
    )
    .await;
    let (_, ops) = token(&s, &admin, json!({"name": "alice", "role": "operator"})).await;
    let acquire = format!("{}/v1/acquire", s.url);

    let (status, refused) = call(
        "POST",
        &acquire,
        Some(&ci),
        Some(acquire_body("prod/db", "node-1", 1)),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["message"].as_str().unwrap_or("").contains("ci/"),
        "{refused}"
    );

    // A lease outside the prefixes cannot be renewed or released by id either.
    let (_, prod) = call(
        "POST",
        &acquire,
        Some(&admin),
        Some(acquire_body("prod/db", "node-1", 2)),
    )
    .await;
    let prod_id = prod["lease"].as_u64().expect("lease");
    for op in ["renew", "release"] {
        let url = format!("{}/v1/leases/{prod_id}/{op}", s.url);
        let (status, answer) = call("POST", &url, Some(&ci), None).await;
        assert_eq!(status, 403, "{op}: {answer}");
    }
    let (status, _) = call(
        "POST",
        &format!("{}/v1/fence/check", s.url),
        Some(&ci),
        Some(json!({"resource": "prod/db", "token": prod_id})),
    )
    .await;
    assert_eq!(status, 403);

    // Same prefix, another token's lease: refused with the token and without.
    let (_, mine) = call(
        "POST",
        &acquire,
        Some(&ci),
        Some(acquire_body("ci/build", "node-1", 3)),
    )
    .await;
    let id = mine["lease"].as_u64().expect("lease");
    for body in [None, Some(json!({"token": id}))] {
        for op in ["renew", "release"] {
            let url = format!("{}/v1/leases/{id}/{op}", s.url);
            let (status, answer) = call("POST", &url, Some(&other), body.clone()).await;
            assert_eq!(
                (status, answer["error"].as_str()),
                (403, Some("forbidden")),
                "{op}: {answer}"
            );
            assert!(
                answer["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("ci (tok-"),
                "{answer}"
            );
        }
    }
    // Nor does the other token get it back by claiming to be its process.
    let (status, answer) = call(
        "POST",
        &acquire,
        Some(&other),
        Some(acquire_body("ci/build", "node-1", 3)),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    // Its own token renews it; an operator releases it.
    let (status, _) = call(
        "POST",
        &format!("{}/v1/leases/{id}/renew", s.url),
        Some(&ci),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, released) = call(
        "POST",
        &format!("{}/v1/leases/{id}/release", s.url),
        Some(&ops),
        None,
    )
    .await;
    assert_eq!(status, 200, "{released}");
    s.stop().await;
}

/// The operator of a hold, an acknowledgement, a lift and a break is the token's name, whatever
/// the body says; the placer's token cannot acknowledge its own hold under another name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_acknowledgement_is_refused_whatever_operator_is_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin) = secured(dir.path(), |_| {}).await;
    let (_, alice) = token(&s, &admin, json!({"name": "alice", "role": "operator"})).await;
    let (_, alice2) = token(&s, &admin, json!({"name": "Alice ", "role": "operator"})).await;
    let (_, bob) = token(&s, &admin, json!({"name": "bob", "role": "operator"})).await;
    let hold = json!({"resource": "db/primary", "operator": "someone-else", "reason": "failover",
                      "duration_ms": 60_000, "require_ack": true});
    let (status, placed) = call(
        "POST",
        &format!("{}/v1/holds", s.url),
        Some(&alice),
        Some(hold),
    )
    .await;
    assert_eq!(status, 200, "{placed}");
    assert_eq!(placed["by"], "alice", "{placed}");
    let id = placed["hold"].as_u64().expect("hold id");
    let ack = format!("{}/v1/holds/{id}/ack", s.url);
    for (who, body) in [
        (&alice, Some(json!({"operator": "bob"}))),
        (&alice, Some(json!({"operator": "carol"}))),
        (&alice, None),
        // Another token carrying the same name (normalized) is the same operator.
        (&alice2, Some(json!({"operator": "bob"}))),
    ] {
        let (status, refused) = call("POST", &ack, Some(who), body).await;
        assert_eq!(
            (status, refused["error"].as_str()),
            (409, Some("same_operator")),
            "{refused}"
        );
    }
    let (status, acked) = call("POST", &ack, Some(&bob), Some(json!({"operator": "alice"}))).await;
    assert_eq!(status, 200, "{acked}");
    assert_eq!(acked["acked_by"], "bob", "{acked}");
    s.stop().await;
}

/// A revoked token's event stream ends within a second of the revocation, and the token is
/// refused from the revocation's answer on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_closes_its_live_event_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin) = secured(dir.path(), |_| {}).await;
    let (id, watcher) = token(&s, &admin, json!({"name": "dashboard", "role": "reader"})).await;
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/events", s.url))
        .bearer_auth(&watcher)
        .send()
        .await
        .expect("events");
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    // The stream is live: an event reaches it.
    let (status, _) = call(
        "POST",
        &format!("{}/v1/acquire", s.url),
        Some(&admin),
        Some(acquire_body("ev/a", "node-1", 5)),
    )
    .await;
    assert_eq!(status, 200);
    let first = tokio::time::timeout(common::PROMPTLY, body.next())
        .await
        .expect("an event")
        .expect("a chunk");
    assert!(String::from_utf8_lossy(&first.expect("bytes")).contains("granted"));

    let (status, revoked) = call(
        "POST",
        &format!("{}/v1/tokens/{id}/revoke", s.url),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["live"], false);
    let revoked_at = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream stayed open after its token was revoked"
    );
    assert!(
        revoked_at.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        revoked_at.elapsed()
    );
    let (status, refused) = call("GET", &format!("{}/v1/locks", s.url), Some(&watcher), None).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (401, Some("unauthenticated"))
    );
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or("")
            .contains("revoked"),
        "{refused}"
    );
    s.stop().await;
}

/// Bad tokens — empty, truncated, another prefix, 10 KB, unknown, another scheme — are 401
/// `unauthenticated`, and the request changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin) = secured(dir.path(), |_| {}).await;
    let (_, before) = call("GET", &format!("{}/v1/audit", s.url), Some(&admin), None).await;
    let unknown = format!("lsm_{}", "A".repeat(43));
    let long = format!("lsm_{}", "a".repeat(10 * 1024));
    let bad: Vec<String> = vec![
        String::new(),
        admin[..admin.len() - 3].to_owned(),
        admin.replacen("lsm_", "ghp_", 1),
        long,
        unknown,
    ];
    let acquire = format!("{}/v1/acquire", s.url);
    for token in &bad {
        let (status, refused) = call(
            "POST",
            &acquire,
            Some(token),
            Some(acquire_body("bad/x", "node-1", 9)),
        )
        .await;
        assert_eq!(
            (status, refused["error"].as_str()),
            (401, Some("unauthenticated")),
            "{refused}"
        );
    }
    // Another scheme, and the token in the wrong header.
    let http = reqwest::Client::new();
    for (name, value) in [
        ("authorization", format!("Basic {admin}")),
        ("x-token", admin.clone()),
    ] {
        let resp = http
            .post(&acquire)
            .header(name, value)
            .json(&acquire_body("bad/x", "node-1", 9))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 401);
        assert!(resp.headers().get("www-authenticate").is_some());
    }
    let (_, lock) = call(
        "GET",
        &format!("{}/v1/locks/bad/x", s.url),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(lock["state"], "FREE", "{lock}");
    let (_, after) = call("GET", &format!("{}/v1/audit", s.url), Some(&admin), None).await;
    assert_eq!(before["records"], after["records"]);
    s.stop().await;
}

/// Every record an authenticated request causes names its principal: a grant, a release,
/// a hold, a token's creation — and a grant from the queue names its waiter, not the releaser
/// whose release handed it on. What the server does alone (expiry) names nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_name_the_principal_that_caused_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin) = secured(dir.path(), |_| {}).await;
    let (ci_id, ci) = token(&s, &admin, json!({"name": "ci", "role": "client"})).await;
    let (_, waiter) = token(&s, &admin, json!({"name": "waiter", "role": "client"})).await;
    let acquire = format!("{}/v1/acquire", s.url);
    let (_, held) = call(
        "POST",
        &acquire,
        Some(&ci),
        Some(acquire_body("au/a", "node-1", 1)),
    )
    .await;
    let lease = held["lease"].as_u64().expect("lease");
    let queued = {
        let url = acquire.clone();
        let waiter = waiter.clone();
        tokio::spawn(async move {
            let mut body = acquire_body("au/a", "node-2", 2);
            body["wait_ms"] = json!(10_000);
            call("POST", &url, Some(&waiter), Some(body)).await
        })
    };
    // Wait until it is queued, then release: the grant goes to the waiter.
    let deadline = Instant::now() + common::PROMPTLY;
    loop {
        let (_, lock) = call(
            "GET",
            &format!("{}/v1/locks/au/a", s.url),
            Some(&admin),
            None,
        )
        .await;
        if lock["waiters"].as_array().is_some_and(|w| !w.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "the waiter never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = call(
        "POST",
        &format!("{}/v1/leases/{lease}/release", s.url),
        Some(&ci),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, granted) = queued.await.expect("waiter");
    assert_eq!(status, 200, "{granted}");

    let (_, audit) = call(
        "GET",
        &format!("{}/v1/audit?resource=au/a", s.url),
        Some(&admin),
        None,
    )
    .await;
    let by: Vec<(String, String)> = audit["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| {
            let label = r["cause"]
                .as_str()
                .unwrap_or(r["kind"].as_str().unwrap_or(""))
                .to_owned();
            (
                label,
                r["principal"]["name"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> =
        [("granted", "ci"), ("released", "ci"), ("granted", "waiter")]
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
    assert_eq!(by, want);
    assert_eq!(audit["records"][0]["principal"]["token"], ci_id.as_str());

    let (_, audit) = call(
        "GET",
        &format!("{}/v1/audit?resource=tokens/{ci_id}", s.url),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(audit["records"][0]["kind"], "token_created", "{audit}");
    assert_eq!(audit["records"][0]["principal"]["name"], "admin", "{audit}");
    assert_eq!(audit["records"][0]["detail"]["role"], "client", "{audit}");
    s.stop().await;
}

/// The first start with authentication on writes an admin token to `DATA/admin.token`, mode
/// 0600, that works; a restart finds the token and writes none; tokens made and revoked before
/// the restart are as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_admin_token_is_private_and_tokens_survive_a_restart() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin) = secured(dir.path(), |_| {}).await;
    let mode = std::fs::metadata(dir.path().join("admin.token"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(admin.starts_with("lsm_") && admin.len() == 47, "{admin}");
    let (_, kept) = token(&s, &admin, json!({"name": "kept", "role": "reader"})).await;
    let (gone_id, gone) = token(&s, &admin, json!({"name": "gone", "role": "reader"})).await;
    let (status, _) = call(
        "POST",
        &format!("{}/v1/tokens/{gone_id}/revoke", s.url),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200);
    s.stop().await;

    let (s, again) = secured(dir.path(), |_| {}).await;
    assert_eq!(again, admin, "admin.token was rewritten at a restart");
    let locks = format!("{}/v1/locks", s.url);
    assert_eq!(call("GET", &locks, Some(&admin), None).await.0, 200);
    assert_eq!(call("GET", &locks, Some(&kept), None).await.0, 200);
    assert_eq!(call("GET", &locks, Some(&gone), None).await.0, 401);
    let (_, listed) = call("GET", &format!("{}/v1/tokens", s.url), Some(&admin), None).await;
    assert_eq!(
        listed["tokens"].as_array().map(Vec::len),
        Some(3),
        "{listed}"
    );
    let (_, next) = token(&s, &admin, json!({"name": "next", "role": "reader"})).await;
    assert!(!next.is_empty());
    let (_, listed) = call("GET", &format!("{}/v1/tokens", s.url), Some(&admin), None).await;
    assert_eq!(
        listed["tokens"][3]["id"], "tok-4",
        "ids go on after a restart: {listed}"
    );
    s.stop().await;
}

/// Token requests are checked (400 naming the field), and revoking twice or an unknown id are
/// their own errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_requests_are_validated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin) = secured(dir.path(), |_| {}).await;
    let url = format!("{}/v1/tokens", s.url);
    for (body, field) in [
        (json!({"name": "", "role": "reader"}), "name"),
        (json!({"name": "n", "role": "node"}), "node"),
        (
            json!({"name": "n", "role": "operator", "prefixes": ["a/"]}),
            "prefix",
        ),
        (json!({"name": "n", "role": "reader", "ttl_ms": 0}), "ttl"),
    ] {
        let (status, refused) = call("POST", &url, Some(&admin), Some(body)).await;
        assert_eq!(
            (status, refused["field"].as_str()),
            (400, Some(field)),
            "{refused}"
        );
    }
    let (status, refused) = call(
        "POST",
        &url,
        Some(&admin),
        Some(json!({"name": "n", "role": "root"})),
    )
    .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("invalid_json")),
        "{refused}"
    );
    let (status, refused) = call("POST", &format!("{url}/tok-99/revoke"), Some(&admin), None).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (404, Some("token_not_found")),
        "{refused}"
    );
    let (status, _) = call("POST", &format!("{url}/tok-1/revoke"), Some(&admin), None).await;
    assert_eq!(status, 200);
    // The admin token revoked itself: it is refused now.
    let (status, _) = call("POST", &format!("{url}/tok-1/revoke"), Some(&admin), None).await;
    assert_eq!(status, 401);
    s.stop().await;
}

/// `--auth off`: no token needed, every act by `anonymous` (or the operator sent), and
/// `status` lists it as a problem with its next step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_off_needs_no_token_and_status_says_so() {
    let s = TestServer::start().await;
    let (status, _) = call(
        "POST",
        &format!("{}/v1/acquire", s.url),
        None,
        Some(acquire_body("lab/a", "node-1", 1)),
    )
    .await;
    assert_eq!(status, 200);
    let (_, report) = call("GET", &format!("{}/v1/status", s.url), None, None).await;
    let problems = report["problems"].as_array().expect("problems");
    let off = problems
        .iter()
        .find(|p| p["kind"] == "auth_off")
        .expect("auth_off listed");
    assert!(
        off["next_step"]
            .as_str()
            .unwrap_or("")
            .contains("without --auth off"),
        "{off}"
    );
    s.stop().await;
}

/// docs/security.md's table of every route and what it needs is the route table's (with
/// `--metrics-auth` off): a route added, removed or given another permission fails here until
/// the page says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_permission_table_of_security_md_is_the_route_tables() {
    let page = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/security.md"),
    )
    .expect("docs/security.md");
    let mut documented: Vec<(String, String)> = page
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("| `")?;
            let (route, rest) = rest.split_once("` | ")?;
            let needs = rest.trim_end_matches(" |").split(' ').next()?.to_owned();
            route.contains(' ').then(|| (route.to_owned(), needs))
        })
        .collect();
    documented.sort();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::bind(common::config(dir.path()))
        .await
        .expect("bind");
    let mut served: Vec<(String, String)> = server
        .route_permissions()
        .into_iter()
        .map(|(method, path, needs)| {
            (
                format!("{method} {}", path.replace("{*", "{")),
                needs.to_string(),
            )
        })
        .collect();
    served.sort();
    assert_eq!(documented, served);
}

/// The OpenAPI document says which operations need a bearer token (and which permission), and
/// that the anonymous ones do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_names_the_bearer_scheme_on_every_non_anonymous_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, _) = secured(dir.path(), |_| {}).await;
    let (status, doc) = call("GET", &format!("{}/v1/openapi.json", s.url), None, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer",
        "{}",
        doc["components"]["securitySchemes"]
    );
    let acquire = &doc["paths"]["/v1/acquire"]["post"];
    assert_eq!(acquire["security"][0]["bearer"], json!([]), "{acquire}");
    assert!(
        acquire["description"]
            .as_str()
            .unwrap_or("")
            .contains("`lease` permission"),
        "{acquire}"
    );
    for (path, method) in [("/healthz", "get"), ("/fleetlock/v1/pre-reboot", "post")] {
        assert!(doc["paths"][path][method]["security"].is_null(), "{path}");
    }
    s.stop().await;
}

/// FleetLock's protocol needs no token with authentication on (Zincati sends none), and can
/// only ever name a `reboot/` group: a group that is not one path segment of
/// `[a-zA-Z0-9.-]` is refused, whatever it tries to reach; its records name no principal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleetlock_stays_anonymous_and_reaches_only_reboot_groups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, admin) = secured(dir.path(), |_| {}).await;
    let http = reqwest::Client::new();
    let slot = |group: &str| {
        http.post(format!("{}/fleetlock/v1/pre-reboot", s.url))
            .header("fleet-lock-protocol", "true")
            .json(&json!({"client_params": {"id": "node-a", "group": group}}))
            .send()
    };
    assert_eq!(slot("workers").await.expect("pre-reboot").status(), 200);
    for bad in ["../prod/db", "a/b", "prod db", ""] {
        assert_eq!(
            slot(bad).await.expect("pre-reboot").status(),
            400,
            "{bad:?}"
        );
    }
    let (_, lock) = call(
        "GET",
        &format!("{}/v1/locks/reboot/workers", s.url),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(lock["holders"][0]["owner"]["node"], "node-a", "{lock}");
    let (_, audit) = call(
        "GET",
        &format!("{}/v1/audit?resource=reboot/workers", s.url),
        Some(&admin),
        None,
    )
    .await;
    assert!(audit["records"][0]["principal"].is_null(), "{audit}");
    let (status, _) = call(
        "PUT",
        &format!("{}/v1/fleetlock/groups/workers", s.url),
        None,
        Some(json!({"slots": 3})),
    )
    .await;
    assert_eq!(status, 401);
    s.stop().await;
}
