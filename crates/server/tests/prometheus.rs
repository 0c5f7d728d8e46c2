//! The Prometheus query gate against a real Prometheus (Debian's `prometheus`) that the test
//! starts on loopback, scraping a real server's `/metrics` and an exporter serving numbers the
//! test sets: pass and fail at the right thresholds, a `NaN` and no series inconclusive, a
//! malformed query named with Prometheus' error, the result types a gate cannot judge, and
//! each way of not getting an answer.

mod common;

use std::net::TcpListener;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::TestServer;
use common::prometheus::{Exporter, Prometheus};
use locksmith_rollout::{Comparison, Verdict};
use locksmith_server::domains::rollouts::prometheus::{
    PromError, instant_query, instant_query_within, verdict,
};

fn now_ms() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    u64::try_from(d.as_millis()).expect("ms")
}

/// Sorted, so a test can compare them (Prometheus orders series as it likes).
fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// A real Prometheus scraping `server` and `exporter` every second, both targets up.
fn prometheus_scraping(server: &TestServer, exporter: &Exporter) -> Prometheus {
    let prom = Prometheus::start(&[("locksmith", server.addr()), ("canary", exporter.addr())]);
    prom.wait_targets_up(2);
    prom
}

// Multi-thread: the helper's waits block this thread while the in-process server answers the
// scrapes on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_gate_passes_and_fails_at_its_threshold_over_every_series_of_a_real_prometheus() {
    let server = TestServer::start().await;
    let exporter = Exporter::start();
    exporter.set(r#"canary_error_rate{node="drone-1"}"#, 0.002);
    exporter.set(r#"canary_error_rate{node="drone-2"}"#, 0.004);
    let prom = prometheus_scraping(&server, &exporter);
    let http = reqwest::Client::new();
    let url = prom.url();
    prom.wait_for("canary_error_rate", "both series", |s| s.len() == 2);

    let samples = instant_query(&http, &url, "canary_error_rate", now_ms())
        .await
        .expect("query");
    assert_eq!(sorted(samples.clone()), vec![0.002, 0.004]);
    // Every series must hold: one over the threshold fails the gate.
    assert_eq!(
        verdict(Comparison::Lt, 0.01, &samples, 1, true),
        Verdict::Pass
    );
    assert_eq!(
        verdict(Comparison::Lt, 0.004, &samples, 1, true),
        Verdict::Fail
    );
    assert_eq!(
        verdict(Comparison::Le, 0.004, &samples, 1, true),
        Verdict::Pass
    );
    assert_eq!(
        verdict(Comparison::Gt, 0.002, &samples, 1, true),
        Verdict::Fail
    );
    assert_eq!(
        verdict(Comparison::Lt, 0.01, &samples, 3, true),
        Verdict::Inconclusive,
        "two series are fewer than --min-samples 3"
    );

    // The endpoint gets worse: the same gate fails once Prometheus has scraped it.
    exporter.set(r#"canary_error_rate{node="drone-2"}"#, 0.05);
    prom.wait_for("max(canary_error_rate)", "the new value", |s| {
        s.first().is_some_and(|(_, v)| *v == 0.05)
    });
    let samples = instant_query(&http, &url, "canary_error_rate", now_ms())
        .await
        .expect("query");
    assert_eq!(sorted(samples.clone()), vec![0.002, 0.05]);
    assert_eq!(
        verdict(Comparison::Lt, 0.01, &samples, 1, true),
        Verdict::Fail
    );

    // An aggregate is one series; a scalar is one sample.
    let max = instant_query(&http, &url, "max(canary_error_rate)", now_ms())
        .await
        .expect("query");
    assert_eq!(max, vec![0.05]);
    let scalar = instant_query(&http, &url, "scalar(min(canary_error_rate))", now_ms())
        .await
        .expect("query");
    assert_eq!(scalar, vec![0.002]);
    assert_eq!(
        verdict(Comparison::Lt, 0.01, &scalar, 1, true),
        Verdict::Pass
    );

    // A NaN is returned as NaN, and the gate is inconclusive (never a pass on 0/0).
    let nan = instant_query(&http, &url, "0/0", now_ms())
        .await
        .expect("query");
    assert!(nan.len() == 1 && nan[0].is_nan(), "{nan:?}");
    assert_eq!(
        verdict(Comparison::Lt, 0.01, &nan, 1, true),
        Verdict::Inconclusive
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_the_servers_own_metrics_follows_what_the_server_does() {
    let server = TestServer::start().await;
    let exporter = Exporter::start();
    let prom = prometheus_scraping(&server, &exporter);
    let http = reqwest::Client::new();
    let client = server.client();
    for pid in 1..=3 {
        let mut r = common::req(&format!("gate/{pid}"), pid);
        r.ttl_ms = Some(600_000);
        client.acquire(&r).await.expect("acquire");
    }
    prom.wait_for("locksmith_leases", "3 leases", |s| {
        s.first().is_some_and(|(_, v)| *v == 3.0)
    });
    let samples = instant_query(&http, &prom.url(), "locksmith_leases", now_ms())
        .await
        .expect("query");
    assert_eq!(samples, vec![3.0]);
    assert_eq!(
        verdict(Comparison::Le, 3.0, &samples, 1, true),
        Verdict::Pass
    );
    assert_eq!(
        verdict(Comparison::Lt, 3.0, &samples, 1, true),
        Verdict::Fail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_series_malformed_queries_and_unjudgeable_results_are_told_apart() {
    let server = TestServer::start().await;
    let exporter = Exporter::start();
    exporter.set("canary_error_rate", 0.002);
    let prom = prometheus_scraping(&server, &exporter);
    let http = reqwest::Client::new();
    let url = prom.url();

    // Nothing matches: no samples — inconclusive when data is required, a pass when not.
    let none = instant_query(&http, &url, "no_such_metric{node=\"x\"}", now_ms())
        .await
        .expect("an empty vector is an answer");
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(
        verdict(Comparison::Lt, 0.01, &none, 1, true),
        Verdict::Inconclusive
    );
    assert_eq!(
        verdict(Comparison::Lt, 0.01, &none, 1, false),
        Verdict::Pass
    );

    // Malformed PromQL: Prometheus' own error, named.
    match instant_query(&http, &url, "sum(canary_error_rate", now_ms()).await {
        Err(PromError::Query { error_type, error }) => {
            assert_eq!(error_type, "bad_data");
            assert!(error.contains("parse error"), "{error}");
        }
        other => panic!("expected PromError::Query, got {other:?}"),
    }

    // A range vector or a string cannot be compared with a threshold.
    for (query, kind) in [("canary_error_rate[1m]", "matrix"), ("\"hello\"", "string")] {
        match instant_query(&http, &url, query, now_ms()).await {
            Err(e @ PromError::Unsupported { .. }) => {
                assert!(e.to_string().contains(kind), "{e}");
            }
            other => panic!("{query}: expected PromError::Unsupported, got {other:?}"),
        }
    }

    // A wrong path prefix: Prometheus' 404, not its API.
    match instant_query(&http, &format!("{url}/nope"), "up", now_ms()).await {
        Err(PromError::Status { status: 404, .. }) => {}
        other => panic!("expected PromError::Status 404, got {other:?}"),
    }

    // Something that is not Prometheus (the exporter answers its text on every path).
    let not_prom = format!("http://{}", exporter.addr());
    match instant_query(&http, &not_prom, "up", now_ms()).await {
        Err(e @ PromError::Decode { .. }) => {
            assert!(e.to_string().contains(&not_prom), "{e}");
        }
        other => panic!("expected PromError::Decode, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_or_silent_prometheus_is_an_error_naming_its_url() {
    let http = reqwest::Client::new();
    // A port nobody listens on: bound, then closed.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}");
    match instant_query(&http, &url, "up", now_ms()).await {
        Err(e @ PromError::Unreachable { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&format!("{url}/api/v1/query")), "{text}");
            assert!(text.contains("unreachable"), "{text}");
        }
        other => panic!("expected PromError::Unreachable, got {other:?}"),
    }

    // A listener that accepts and never answers: the timeout, not a hang.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", silent.local_addr().expect("addr"));
    let started = std::time::Instant::now();
    let limit = Duration::from_millis(300);
    match instant_query_within(&http, &url, "up", now_ms(), limit).await {
        Err(PromError::TimedOut { after, .. }) => assert_eq!(after, limit),
        other => panic!("expected PromError::TimedOut, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
