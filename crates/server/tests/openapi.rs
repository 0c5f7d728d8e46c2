//! `/v1/openapi.json` against a real server on 127.0.0.1:0: served, valid, and describing
//! exactly the routes the router serves — no route without its description, no description
//! without its route.

use std::collections::BTreeSet;

use locksmith_server::fleetlock::FleetLockConfig;
use locksmith_server::{Server, ServerConfig};
use serde_json::Value;

mod common;

use common::TestServer;

/// A bound server (not yet serving) whose FleetLock endpoints live under `/zincati`, so that
/// the test also sees the document follow a prefix chosen at start.
async fn bound(dir: &std::path::Path) -> Server {
    let config = ServerConfig {
        fleetlock: FleetLockConfig {
            prefix: "/zincati".into(),
            ..FleetLockConfig::default()
        },
        ..common::config(dir)
    };
    Server::bind(config).await.expect("bind")
}

/// A documented path with a value in each of its parameters.
fn filled(path: &str) -> String {
    path.replace("{id}", "1")
        .replace("{resource}", "openapi/probe.conf")
        .replace("{group}", "probe")
}

async fn document(url: &str) -> Value {
    let resp = reqwest::get(format!("{url}/v1/openapi.json"))
        .await
        .expect("GET /v1/openapi.json");
    assert_eq!(resp.status(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let text = resp.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Every `$ref` in `value`, as the schema name it points at.
fn refs(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    if let Some(r) = v.as_str() {
                        out.insert(r.trim_start_matches("#/components/schemas/").to_string());
                    }
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// The OpenAPI document is served at `/v1/openapi.json`, parses, and is whole: every schema
/// an operation refers to is in its components.
#[tokio::test]
async fn the_openapi_document_is_served_and_every_schema_it_names_is_in_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::serving(bound(dir.path()).await);
    let doc = document(&s.url).await;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Locksmith");
    let schemas = doc["components"]["schemas"]
        .as_object()
        .expect("components.schemas");
    for name in [
        "ErrorBody",
        "ErrorCode",
        "AcquireRequest",
        "LeaseView",
        "Owner",
        "LocksResponse",
        "ResourceView",
        "StatusResponse",
        "HealthStatus",
        "ProblemKind",
        "GroupsView",
    ] {
        assert!(schemas.contains_key(name), "no schema {name}");
    }
    let mut named = BTreeSet::new();
    refs(&doc, &mut named);
    let missing: Vec<&String> = named.iter().filter(|n| !schemas.contains_key(*n)).collect();
    assert!(
        missing.is_empty(),
        "referred to, not in components: {missing:?}"
    );
    // The API's own errors are described: every operation says what a refusal looks like.
    let acquire = &doc["paths"]["/v1/acquire"]["post"];
    assert_eq!(
        acquire["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );
    s.stop().await;
}

/// The route table the router is built from, and the document: each (method, path) of one is
/// in the other; every documented operation is answered by its route — not by the router's
/// `not_found` / `method_not_allowed` fallback (a path template the router reads otherwise, a
/// method it does not serve there); and no documented path answers a method the document does
/// not give it.
#[tokio::test]
async fn every_route_of_the_router_is_in_the_openapi_document_and_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = bound(dir.path()).await;
    let routes: BTreeSet<(String, String)> = server
        .routes()
        .into_iter()
        // OpenAPI writes axum's catch-all `{*resource}` as `{resource}`.
        .map(|(m, p)| (m.to_string(), p.replace("{*", "{")))
        .collect();
    assert!(routes.contains(&("POST".into(), "/zincati/v1/pre-reboot".into())));
    let s = TestServer::serving(server);
    let (url, doc) = (&s.url, document(&s.url).await);
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ]
            .contains(&method.as_str())
            {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served, not documented: {undocumented:?}"
    );
    let unserved: Vec<_> = documented.difference(&routes).collect();
    assert!(unserved.is_empty(), "documented, not served: {unserved:?}");

    let http = reqwest::Client::new();
    for (method, path) in &documented {
        let concrete = filled(path);
        let resp = http
            .request(method.parse().expect("method"), format!("{url}{concrete}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {concrete}: {e}"));
        let status = resp.status().as_u16();
        // The event stream never ends: its headers are the answer.
        if concrete.starts_with("/v1/events") {
            assert_eq!(status, 200, "{method} {concrete}");
            continue;
        }
        let body = resp.text().await.expect("body");
        let code = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string));
        assert!(
            !matches!(code.as_deref(), Some("not_found" | "method_not_allowed")),
            "{method} {concrete} fell through to the router's fallback: {status} {body}"
        );
    }
    // And no path answers a method the document does not give it.
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        let concrete = filled(path);
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if documented.contains(&(method.to_string(), path.clone())) {
                continue;
            }
            let resp = http
                .request(method.parse().expect("method"), format!("{url}{concrete}"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {concrete}: {e}"));
            assert_eq!(
                resp.status().as_u16(),
                405,
                "{method} {concrete} is served but not documented"
            );
        }
    }
    s.stop().await;
}
