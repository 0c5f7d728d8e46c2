//! The config store over HTTP (issue 18), against a real server on 127.0.0.1:0 with
//! authentication on, on the embedded store and on a real etcd: fenced writes racing across
//! lock tenures, a broken holder's write, validation (schema, parse, names, size, UTF-8),
//! stale tokens after a restart, drafts and promotion, rollback, permissions, and the audit
//! trail and event stream of every change.

mod common;

use std::time::Duration;

use common::{Api, Backend, Storage, TestServer};
use locksmith_server::{AuthMode, ServerConfig};
use serde_json::{Value, json};

impl Api {
    /// Acquires `resource` as process `pid` (waiting up to 10 s); `(lease, token)`.
    async fn acquire(&self, resource: &str, pid: u32) -> (u64, u64) {
        let (status, lease) = self
            .call("POST", "/v1/acquire", Some(acquire_body(resource, pid)))
            .await;
        assert_eq!(status, 200, "{lease}");
        (
            lease["lease"].as_u64().expect("lease"),
            lease["token"].as_u64().expect("token"),
        )
    }

    async fn release(&self, lease: u64) {
        let (status, body) = self
            .call("POST", &format!("/v1/leases/{lease}/release"), None)
            .await;
        assert_eq!(status, 200, "{body}");
    }

    async fn put(
        &self,
        name: &str,
        fence: (u64, u64),
        format: &str,
        content: &str,
    ) -> (u16, Value) {
        self.call(
            "PUT",
            &format!("/v1/configs/{}", enc(name)),
            Some(json!({"lease": fence.0, "token": fence.1, "format": format,
                        "content": content, "message": "test write"})),
        )
        .await
    }

    async fn history(&self, name: &str) -> (u16, Value) {
        self.call("GET", &format!("/v1/configs/{}/revisions", enc(name)), None)
            .await
    }

    /// How many revisions `name` has (0 if it does not exist).
    async fn latest(&self, name: &str) -> u64 {
        let (status, history) = self.history(name).await;
        if status == 404 {
            return 0;
        }
        history["head"]["latest"].as_u64().expect("latest")
    }

    async fn make_token(&self, body: Value) -> String {
        let (status, made) = self.call("POST", "/v1/tokens", Some(body)).await;
        assert_eq!(status, 200, "{made}");
        made["token"].as_str().expect("secret").to_owned()
    }
}

/// A name as one path segment.
fn enc(name: &str) -> String {
    name.replace('/', "%2F")
}

fn acquire_body(resource: &str, pid: u32) -> Value {
    json!({
        "resource": resource,
        "owner": {"node": "node-7", "pid": pid, "start_time": 1000 + pid, "boot_id": "boot-a",
                  "user": "tester", "purpose": "config test"},
        "ttl_ms": 30_000,
        "wait_ms": 10_000,
    })
}

fn secured(c: &mut ServerConfig) {
    c.auth = AuthMode::On;
}

fn admin_secret(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("admin.token"))
        .expect("admin.token")
        .trim()
        .to_owned()
}

/// A secured server on fresh storage of `backend`, its storage, and an admin [`Api`].
async fn server(
    backend: Backend,
    tweak: impl FnOnce(&mut ServerConfig),
) -> (TestServer, Storage, Api) {
    let storage = Storage::fresh(backend);
    let s = TestServer::on_tweaked(&storage, |c| {
        secured(c);
        tweak(c);
    })
    .await;
    let api = Api::new(&s.url, &admin_secret(storage.dir()));
    (s, storage, api)
}

/// Two writers race on one config across many lock tenures: in each tenure both fire a write
/// at once — the holder with its token, the other with the token of its last tenure — and
/// exactly one revision lands, written under the tenure's token; the other is refused.
async fn racing_writers_land_exactly_one_revision_per_tenure(backend: Backend) {
    let (_s, _storage, api) = server(backend, |_| {}).await;
    let name = "fleet/aim_lock_config.conf";
    let resource = format!("configs/{name}");
    let mut last: [Option<(u64, u64)>; 2] = [None, None];
    const TENURES: u64 = 8;
    for tenure in 0..TENURES {
        let holder = (tenure % 2) as usize;
        let fence = api.acquire(&resource, 100 + holder as u32).await;
        last[holder] = Some(fence);
        let stale = last[1 - holder];
        let content = format!("tenure = {tenure}\n");
        let mine = api.put(name, fence, "conf", &content);
        let theirs = async {
            match stale {
                Some(f) => Some(api.put(name, f, "conf", "stale = true\n").await),
                None => None,
            }
        };
        let ((status, landed), refused) = tokio::join!(mine, theirs);
        assert_eq!(status, 200, "tenure {tenure}: {landed}");
        assert_eq!(landed["rev"], tenure + 1, "{landed}");
        assert_eq!(landed["token"], fence.1, "{landed}");
        if let Some((status, refused)) = refused {
            assert_eq!(status, 410, "tenure {tenure}: {refused}");
            assert_eq!(refused["error"], "lease_expired", "{refused}");
            assert_eq!(refused["cause"]["cause"], "released", "{refused}");
        }
        api.release(fence.0).await;
    }
    let (_, history) = api.history(name).await;
    let revisions = history["revisions"].as_array().expect("revisions");
    assert_eq!(revisions.len() as u64, TENURES, "{history}");
    let tokens: std::collections::HashSet<_> = revisions.iter().map(|r| &r["token"]).collect();
    assert_eq!(
        tokens.len() as u64,
        TENURES,
        "one revision per tenure: {history}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_land_exactly_one_revision_per_tenure_embedded() {
    racing_writers_land_exactly_one_revision_per_tenure(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_land_exactly_one_revision_per_tenure_on_etcd() {
    racing_writers_land_exactly_one_revision_per_tenure(Backend::Etcd).await;
}

/// Two holders of the same slot cannot exist, but two writers can race with the *same*
/// token: both land (the lock, not the store, serialises a holder's own writes), as
/// consecutive revisions — none lost, none duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_of_one_holder_are_consecutive_revisions() {
    let (_s, _storage, api) = server(Backend::Embedded, |_| {}).await;
    let fence = api.acquire("configs/app.json", 1).await;
    let writes = (0..16).map(|i| {
        let api = api.clone();
        async move {
            api.put("app.json", fence, "json", &format!("{{\"n\": {i}}}"))
                .await
        }
    });
    let answers = futures_util::future::join_all(writes).await;
    let mut revs: Vec<u64> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200, "{body}");
            body["rev"].as_u64().expect("rev")
        })
        .collect();
    revs.sort_unstable();
    assert_eq!(revs, (1..=16).collect::<Vec<_>>());
}

/// A holder whose lease an operator broke writes with its old token: `broken`, naming the
/// operator and the reason; nothing is stored; the audit trail shows the break and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_holder_is_refused_with_who_and_why_and_nothing_is_stored() {
    let (_s, _storage, api) = server(Backend::Embedded, |_| {}).await;
    let fence = api.acquire("configs/db.conf", 1).await;
    let (status, first) = api.put("db.conf", fence, "conf", "a = 1\n").await;
    assert_eq!(status, 200, "{first}");
    let (status, broke) = api
        .call(
            "POST",
            "/v1/break",
            Some(
                json!({"resource": "configs/db.conf", "reason": "holder hung during the incident"}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{broke}");

    let (status, refused) = api.put("db.conf", fence, "conf", "a = 2\n").await;
    assert_eq!(status, 410, "{refused}");
    assert_eq!(refused["error"], "broken", "{refused}");
    assert_eq!(
        refused["reason"], "holder hung during the incident",
        "{refused}"
    );
    assert!(
        refused["by"].as_str().is_some_and(|b| !b.is_empty()),
        "{refused}"
    );
    assert!(
        refused["message"].as_str().unwrap_or("").contains("BROKEN"),
        "{refused}"
    );
    assert_eq!(api.latest("db.conf").await, 1, "nothing stored");

    let (status, audit) = api
        .call("GET", "/v1/audit?resource=configs%2Fdb.conf", None)
        .await;
    assert_eq!(status, 200, "{audit}");
    let records = audit["records"].as_array().expect("records");
    let kinds: Vec<&str> = records.iter().filter_map(|r| r["kind"].as_str()).collect();
    assert!(kinds.contains(&"config_written"), "{audit}");
    let ended = records
        .iter()
        .find(|r| r["lease"] == fence.0 && r["kind"] == "ended")
        .unwrap_or_else(|| panic!("the break's end record: {audit}"));
    assert_eq!(ended["cause"], "broken", "{ended}");
    assert_eq!(
        ended["reason"], "holder hung during the incident",
        "{ended}"
    );
}

/// Refusals of content and names: each line-precise where it can be, none stores anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_content_and_names_are_refused_precisely_and_store_nothing() {
    let (_s, _storage, api) = server(Backend::Embedded, |c| c.max_config_bytes = 1024).await;
    let fence = api.acquire("configs/aim.conf", 1).await;
    let (status, schema) = api
        .call(
            "PUT",
            "/v1/configs/aim.conf/schema",
            Some(json!({"schema": {"type": "object", "properties": {
                "safety_threshold": {"type": "number", "maximum": 1}}}})),
        )
        .await;
    assert_eq!(status, 200, "{schema}");

    let body = "# aim lock\nname = \"aim\"\nretries = 3\nsafety_threshold = 1.7\n";
    let (status, refused) = api.put("aim.conf", fence, "conf", body).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"], "invalid_config");
    assert_eq!(
        refused["violations"][0]["path"], "safety_threshold",
        "{refused}"
    );
    assert_eq!(refused["violations"][0]["line"], 4, "{refused}");
    let message = refused["message"].as_str().unwrap_or("");
    assert!(message.contains("aim.conf"), "{message}");
    assert!(
        message.contains("greater than the maximum of 1 (line 4)"),
        "{message}"
    );

    let (status, refused) = api
        .put("aim.conf", fence, "conf", "a = 1\nb = fast\n")
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["parse_error"]["line"], 2, "{refused}");
    assert!(
        refused["parse_error"]["column"].as_u64().is_some(),
        "{refused}"
    );

    // Not UTF-8, in conf: refused at the byte's line.
    let bytes = api.acquire("configs/bytes.conf", 2).await;
    let (status, refused) = api
        .call(
            "PUT",
            "/v1/configs/bytes.conf",
            Some(json!({"lease": bytes.0, "token": bytes.1, "format": "conf",
                        "content_base64": "YSA9IDEKYiA9IP8K"})),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["parse_error"]["kind"], "not_utf8", "{refused}");
    assert_eq!(refused["parse_error"]["line"], 2, "{refused}");

    let big = "x = 1\n".repeat(200);
    let (status, refused) = api.put("aim.conf", fence, "conf", &big).await;
    assert_eq!(status, 413, "{refused}");
    assert_eq!(refused["error"], "config_too_large", "{refused}");

    for bad in ["../etc/passwd", "/abs", "a//b", "a/./b", "sp ace", "a/"] {
        let (status, refused) = api.put(bad, fence, "conf", "a = 1\n").await;
        assert_eq!(status, 400, "{bad}: {refused}");
        assert_eq!(refused["field"], "name", "{bad}: {refused}");
    }
    assert_eq!(api.latest("aim.conf").await, 0, "nothing stored");
    assert_eq!(api.latest("bytes.conf").await, 0, "nothing stored");

    // What passes is stored; validate runs the same checks without storing.
    let (status, valid) = api
        .call(
            "POST",
            "/v1/configs/aim.conf/validate",
            Some(json!({"format": "conf", "content": "safety_threshold = 0.5\n"})),
        )
        .await;
    assert_eq!(status, 200, "{valid}");
    assert_eq!(valid["schema_checked"], true, "{valid}");
    assert_eq!(api.latest("aim.conf").await, 0, "validate stores nothing");
    let (status, stored) = api
        .put("aim.conf", fence, "conf", "safety_threshold = 0.5\n")
        .await;
    assert_eq!(status, 200, "{stored}");
}

/// After a restart, a token whose lease was released before it is refused (`lease_expired`,
/// released); a token that is not the holder's is `stale_token` naming the current holder;
/// the current holder writes on; history survived.
async fn stale_tokens_are_refused_after_a_restart(backend: Backend) {
    let (s, storage, api) = server(backend, |_| {}).await;
    let first = api.acquire("configs/svc.toml", 1).await;
    let (status, rev1) = api.put("svc.toml", first, "toml", "port = 80\n").await;
    assert_eq!(status, 200, "{rev1}");
    api.release(first.0).await;
    let second = api.acquire("configs/svc.toml", 2).await;
    s.stop().await;

    let s = TestServer::on_tweaked(&storage, secured).await;
    let api = api.as_token(&api.token).with_url(&s.url);
    let (status, refused) = api.put("svc.toml", first, "toml", "port = 81\n").await;
    assert_eq!(status, 410, "{refused}");
    assert_eq!(refused["error"], "lease_expired", "{refused}");
    let (status, refused) = api
        .put(
            "svc.toml",
            (second.0, second.1 + 1000),
            "toml",
            "port = 82\n",
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"], "stale_token", "{refused}");
    assert_eq!(refused["holders"][0]["token"], second.1, "{refused}");
    assert_eq!(api.latest("svc.toml").await, 1);
    let (status, rev2) = api.put("svc.toml", second, "toml", "port = 83\n").await;
    assert_eq!(status, 200, "{rev2}");
    assert_eq!(rev2["rev"], 2);
    let (status, current) = api.call("GET", "/v1/configs/svc.toml", None).await;
    assert_eq!(status, 200, "{current}");
    assert_eq!(current["content"], "port = 83\n");
    assert_eq!(current["sha256"], rev2["sha256"]);
    s.stop().await;
}

impl Api {
    fn with_url(mut self, url: &str) -> Self {
        url.clone_into(&mut self.url);
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_tokens_are_refused_after_a_restart_embedded() {
    stale_tokens_are_refused_after_a_restart(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_tokens_are_refused_after_a_restart_on_etcd() {
    stale_tokens_are_refused_after_a_restart(Backend::Etcd).await;
}

/// A draft is readable and diffable but not current; promotion makes it current as a new
/// revision; promoting it again is `not_a_draft`; a rollback makes old content current again;
/// stamped reads carry the provenance line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_promote_and_rollback_make_new_revisions() {
    let (_s, _storage, api) = server(Backend::Embedded, |_| {}).await;
    let fence = api.acquire("configs/fleet/app.conf", 1).await;
    let name = "fleet/app.conf";
    let (status, _) = api.put(name, fence, "conf", "replicas = 3\n").await;
    assert_eq!(status, 200);
    let (status, draft) = api
        .call(
            "PUT",
            "/v1/configs/fleet%2Fapp.conf",
            Some(json!({"lease": fence.0, "token": fence.1, "format": "conf",
                        "content": "replicas = 5\n", "draft": true, "message": "canary"})),
        )
        .await;
    assert_eq!(status, 200, "{draft}");
    assert_eq!(draft["draft"], true);
    assert_eq!(draft["current"], false);

    let (_, current) = api.call("GET", "/v1/configs/fleet%2Fapp.conf", None).await;
    assert_eq!(current["rev"], 1, "a draft is not current: {current}");
    let (status, diff) = api
        .call("GET", "/v1/configs/fleet%2Fapp.conf/diff?from=1&to=2", None)
        .await;
    assert_eq!(status, 200, "{diff}");
    let text = diff["diff"].as_str().unwrap_or("");
    assert!(
        text.contains("-replicas = 3") && text.contains("+replicas = 5"),
        "{text}"
    );

    let promote = json!({"lease": fence.0, "token": fence.1, "rev": 2, "message": "canary ok"});
    let (status, promoted) = api
        .call(
            "POST",
            "/v1/configs/fleet%2Fapp.conf/promote",
            Some(promote.clone()),
        )
        .await;
    assert_eq!(status, 200, "{promoted}");
    assert_eq!(promoted["rev"], 3);
    assert_eq!(promoted["current"], true);
    assert_eq!(promoted["content"], "replicas = 5\n");
    assert!(
        promoted["message"]
            .as_str()
            .unwrap_or("")
            .contains("canary ok"),
        "{promoted}"
    );
    let (status, again) = api
        .call(
            "POST",
            "/v1/configs/fleet%2Fapp.conf/promote",
            Some(promote),
        )
        .await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["error"], "not_a_draft", "{again}");

    let (status, rolled) = api
        .call(
            "POST",
            "/v1/configs/fleet%2Fapp.conf/rollback",
            Some(json!({"lease": fence.0, "token": fence.1, "to": 1})),
        )
        .await;
    assert_eq!(status, 200, "{rolled}");
    assert_eq!(rolled["rev"], 4);
    assert_eq!(rolled["content"], "replicas = 3\n");
    assert_eq!(rolled["kind"], "rolled_back", "{rolled}");
    assert_eq!(rolled["from"], 1, "{rolled}");

    let (status, stamped) = api
        .call(
            "GET",
            "/v1/configs/fleet%2Fapp.conf/revisions/4?stamp=true",
            None,
        )
        .await;
    assert_eq!(status, 200, "{stamped}");
    let content = stamped["content"].as_str().unwrap_or("");
    assert!(
        content.starts_with("# locksmith: fleet/app.conf rev 4 by admin@node-7 ")
            && content.ends_with("\nreplicas = 3\n"),
        "{content}"
    );
    let (status, listed) = api.call("GET", "/v1/configs", None).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["configs"][0]["name"], name, "{listed}");
    assert_eq!(listed["configs"][0]["current"], 4, "{listed}");

    // The history (served from the engine's state, not the records) keeps the promotion's
    // message: it was once added to the answer and the record only, and lost until a restart.
    let (status, history) = api
        .call("GET", "/v1/configs/fleet%2Fapp.conf/revisions", None)
        .await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(
        history["revisions"][2]["message"], "promote draft 2: canary ok",
        "{history}"
    );
    assert_eq!(
        history["revisions"][3]["message"], "roll back to rev 1",
        "{history}"
    );
}

/// A reader reads but cannot write; a client writes only configs under its prefixes; an
/// operator sets schemas, a client cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_readers_read_and_clients_write_only_under_their_prefixes() {
    let (_s, _storage, admin) = server(Backend::Embedded, |_| {}).await;
    let reader = admin.as_token(
        &admin
            .make_token(json!({"name": "dash", "role": "reader"}))
            .await,
    );
    let app_ci = admin.as_token(
        &admin
            .make_token(json!({"name": "ci", "role": "client", "prefixes": ["configs/app/"]}))
            .await,
    );
    let fence = admin.acquire("configs/db.conf", 1).await;
    let (status, _) = admin.put("db.conf", fence, "conf", "a = 1\n").await;
    assert_eq!(status, 200);

    let (status, read) = reader.call("GET", "/v1/configs/db.conf", None).await;
    assert_eq!(status, 200, "{read}");
    let (status, refused) = reader.put("db.conf", fence, "conf", "a = 2\n").await;
    assert_eq!(status, 403, "{refused}");

    // Outside its prefixes: forbidden even with the holder's token in hand.
    let (status, refused) = app_ci.put("db.conf", fence, "conf", "a = 3\n").await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"], "forbidden");
    let (status, refused) = app_ci
        .call(
            "PUT",
            "/v1/configs/app%2Fx.conf/schema",
            Some(json!({"schema": {}})),
        )
        .await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(admin.latest("db.conf").await, 1);

    let mine = app_ci.acquire("configs/app/x.conf", 2).await;
    let (status, written) = app_ci.put("app/x.conf", mine, "conf", "a = 4\n").await;
    assert_eq!(status, 200, "{written}");
    assert_eq!(written["author"]["name"], "ci", "{written}");
}

/// Every change is in the audit log and on the event stream, named by its principal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_reach_the_audit_log_and_the_event_stream() {
    let (s, storage, api) = server(Backend::Embedded, |_| {}).await;
    let client = locksmith_client::Client::new(s.url.clone())
        .expect("client")
        .with_token(&admin_secret(storage.dir()))
        .expect("token");
    let mut events = client
        .events(Some("configs/ev.json"))
        .await
        .expect("events");
    let fence = api.acquire("configs/ev.json", 1).await;
    let (status, _) = api.put("ev.json", fence, "json", "{\"a\": 1}").await;
    assert_eq!(status, 200);
    let mut seen = Vec::new();
    while !seen.contains(&"config_written".to_owned()) {
        let record = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("an event, promptly")
            .expect("stream open")
            .expect("event");
        if record.label() == "config_written" {
            assert_eq!(record.resource, "configs/ev.json");
            assert_eq!(
                record.principal.as_ref().map(|p| p.name.as_str()),
                Some("admin")
            );
            assert_eq!(record.token.map(|t| t.0), Some(fence.1));
        }
        seen.push(record.label().to_owned());
    }
    let (status, metrics) = {
        let resp = reqwest::get(format!("{}/metrics", s.url))
            .await
            .expect("metrics");
        (
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        )
    };
    assert_eq!(status, 200);
    assert!(
        metrics.contains("locksmith_domain_events_total{event=\"config_written\"} 1"),
        "{metrics}"
    );
}
