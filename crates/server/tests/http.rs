//! The HTTP API and its lock semantics against a real server on 127.0.0.1:0, run twice: over
//! the real embedded store and over a real etcd (the same tests, via `lock_semantics!`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod common;

use common::{Backend, Storage, TestServer, next_event, on_virtual_time, req};
use locksmith_client::api::{AcquireRequest, ErrorCode};
use locksmith_core::EndCause;
use locksmith_server::clock::ManualClock;
use serde_json::{Value, json};

async fn raw(url: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let http = reqwest::Client::new();
    let mut rb = http.request(method.parse().expect("method"), format!("{url}{path}"));
    if let Some(b) = body {
        rb = rb.body(b.to_string());
    }
    let resp = rb.send().await.expect("send");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("text");
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    (status, value)
}

macro_rules! lock_semantics {
    ($backend:expr) => {
        #[tokio::test]
        async fn acquire_renew_release_roundtrip() {
            let s = TestServer::start_on($backend).await;
            let c = s.client();
            let lease = c
                .acquire(&req("configs/aim.conf", 10))
                .await
                .expect("acquire");
            assert_eq!(lease.resource, "configs/aim.conf");
            assert!(lease.token.0 >= 1);
            let renewed = c
                .renew(lease.lease, Some(lease.token))
                .await
                .expect("renew");
            assert_eq!(renewed.token, lease.token);
            let view = c.lock("configs/aim.conf").await.expect("lock");
            assert_eq!(view.lock.holders.len(), 1);
            assert_eq!(view.lock.holders[0].owner.pid, 10);
            c.release(lease.lease, None).await.expect("release");
            let view = c.lock("configs/aim.conf").await.expect("lock");
            assert!(view.lock.holders.is_empty());
            s.stop().await;
        }

        #[tokio::test]
        async fn hot_refusal_names_the_holder() {
            let s = TestServer::start_on($backend).await;
            let c = s.client();
            c.acquire(&req("aim_lock_config.conf", 4121))
                .await
                .expect("first");
            let err = c
                .acquire(&req("aim_lock_config.conf", 99))
                .await
                .expect_err("second must be refused");
            let body = err.body().expect("api error");
            assert_eq!(body.error, ErrorCode::Hot);
            assert_eq!(body.holders.len(), 1);
            assert_eq!(body.holders[0].owner.pid, 4121);
            assert!(
                body.message
                    .starts_with("aim_lock_config.conf: HOT — held by orchestrator@node-7 (pid 4121)"),
                "{}",
                body.message
            );
            s.stop().await;
        }

        #[tokio::test]
        async fn every_bad_input_is_a_json_4xx_with_a_stable_code() {
            let s = TestServer::start_on($backend).await;
            let good_owner =
                json!({"node":"n","pid":5,"start_time":9,"boot_id":"b","user":"u","purpose":"p"});
            let cases: Vec<(&str, &str, Option<String>, u16, &str)> = vec![
                ("POST", "/v1/acquire", Some("{not json".into()), 400, "invalid_json"),
                ("POST", "/v1/acquire", Some(json!({"resource":"r"}).to_string()), 400, "invalid_json"),
                (
                    "POST",
                    "/v1/acquire",
                    Some(json!({"resource":"r","owner":good_owner,"ttl":5}).to_string()),
                    400,
                    "invalid_json",
                ),
                (
                    "POST",
                    "/v1/acquire",
                    Some(json!({"resource":"","owner":good_owner}).to_string()),
                    400,
                    "invalid_request",
                ),
                (
                    "POST",
                    "/v1/acquire",
                    Some(json!({"resource":"r","owner":{"node":"n","pid":0,"start_time":9,"boot_id":"b","user":"u","purpose":"p"}}).to_string()),
                    400,
                    "invalid_request",
                ),
                (
                    "POST",
                    "/v1/acquire",
                    Some(json!({"resource":"r","owner":good_owner,"ttl_ms":1}).to_string()),
                    400,
                    "invalid_request",
                ),
                (
                    "POST",
                    "/v1/acquire",
                    Some(json!({"resource":"r","owner":good_owner,"ttl_ms":u64::MAX}).to_string()),
                    400,
                    "invalid_request",
                ),
                (
                    "POST",
                    "/v1/acquire",
                    Some(json!({"resource":"r","owner":good_owner,"slots":0}).to_string()),
                    400,
                    "invalid_request",
                ),
                ("POST", "/v1/acquire", Some("[]".into()), 400, "invalid_json"),
                ("POST", "/v1/acquire", Some(String::new()), 400, "invalid_json"),
                ("POST", "/v1/leases/abc/renew", None, 400, "invalid_request"),
                ("POST", "/v1/leases/0/release", None, 400, "invalid_request"),
                ("POST", "/v1/leases/424242/renew", None, 404, "not_holder"),
                ("POST", "/v1/leases/1/renew", Some("{\"token\":\"x\"}".into()), 400, "invalid_json"),
                ("GET", "/v1/acquire", None, 405, "method_not_allowed"),
                ("GET", "/v1/nope", None, 404, "not_found"),
                ("GET", "/v1/locks/a//b", None, 400, "invalid_request"),
                ("POST", "/v1/fence/check", Some(json!({"resource":"r","token":3}).to_string()), 409, "stale_token"),
                (
                    "POST",
                    "/v1/acquire",
                    Some(format!("{{\"resource\":\"{}\"}}", "x".repeat(100_000))),
                    413,
                    "payload_too_large",
                ),
            ];
            for (method, path, body, status, code) in cases {
                let (got, value) = raw(&s.url, method, path, body.as_deref()).await;
                assert_eq!(got, status, "{method} {path} {body:?} → {value}");
                assert_eq!(value["error"], code, "{method} {path} {body:?} → {value}");
                assert!(
                    value["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{value}"
                );
            }
            // Nothing was granted by any of that.
            let (_, locks) = raw(&s.url, "GET", "/v1/locks", None).await;
            assert_eq!(locks["locks"], json!([]));
            s.stop().await;
        }

        #[tokio::test]
        async fn a_waiter_is_woken_when_the_holder_releases() {
            let s = TestServer::start_on($backend).await;
            let c = s.client();
            let first = c.acquire(&req("r", 1)).await.expect("first");
            let c2 = c.clone();
            let waiter = tokio::spawn(async move {
                let mut r = req("r", 2);
                r.wait_ms = Some(30_000);
                c2.acquire(&r).await
            });
            // Let the waiter queue, then release: the waiter must get the lock without polling.
            for _ in 0..200 {
                if !c.lock("r").await.expect("lock").lock.waiters.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            c.release(first.lease, None).await.expect("release");
            let second = waiter.await.expect("join").expect("waiter granted");
            assert!(second.token > first.token);
            assert_eq!(second.owner.pid, 2);
            s.stop().await;
        }

        #[tokio::test]
        async fn a_waiter_that_disconnects_leaves_the_queue() {
            let s = TestServer::start_on($backend).await;
            let c = s.client();
            c.acquire(&req("r", 1)).await.expect("first");
            let mut r = req("r", 2);
            r.wait_ms = Some(60_000);
            let _ = tokio::time::timeout(Duration::from_millis(300), c.acquire(&r)).await;
            let mut queued = usize::MAX;
            for _ in 0..200 {
                queued = c.lock("r").await.expect("lock").lock.waiters.len();
                if queued == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(queued, 0, "a gone client must not stay queued");
            s.stop().await;
        }

        /// Many clients hammer one lock; each increments a shared counter non-atomically (read, yield,
        /// write) and the fenced register refuses any write whose token is older than one already seen.
        /// Mutual exclusion holds iff no increment is lost and no fenced write is refused.
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn many_concurrent_clients_never_overlap() {
            let s = TestServer::start_on($backend).await;
            let counter = Arc::new(AtomicU64::new(0));
            let fence = Arc::new(AtomicU64::new(0));
            let clients = 16;
            let rounds = 15;
            let mut tasks = Vec::new();
            for i in 0..clients {
                let c = s.client();
                let counter = counter.clone();
                let fence = fence.clone();
                tasks.push(tokio::spawn(async move {
                    for _ in 0..rounds {
                        let mut r = req("counter", 100 + i);
                        r.wait_ms = Some(60_000);
                        let lease = c.acquire(&r).await.expect("acquire");
                        let prev = fence.fetch_max(lease.token.0, Ordering::SeqCst);
                        assert!(prev < lease.token.0, "token {} after {prev}", lease.token);
                        let v = counter.load(Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        counter.store(v + 1, Ordering::SeqCst);
                        c.release(lease.lease, Some(lease.token))
                            .await
                            .expect("release");
                    }
                }));
            }
            for t in tasks {
                t.await.expect("client task");
            }
            assert_eq!(counter.load(Ordering::SeqCst), u64::from(clients * rounds));
            s.stop().await;
        }

        #[tokio::test]
        async fn state_and_fence_survive_a_restart() {
            let storage = Storage::fresh($backend);
            let s = TestServer::on(&storage).await;
            let c = s.client();
            let held = c.acquire(&req("held", 1)).await.expect("held");
            let gone = c.acquire(&req("gone", 2)).await.expect("gone");
            c.release(gone.lease, None).await.expect("release");
            s.stop().await;

            let s = TestServer::on(&storage).await;
            let c = s.client();
            let view = c.lock("held").await.expect("lock");
            assert_eq!(view.lock.holders.len(), 1, "acknowledged grant survives");
            assert_eq!(view.lock.holders[0].token, held.token);
            assert!(c.lock("gone").await.expect("lock").lock.holders.is_empty());
            // The holder keeps its lease across the restart...
            c.renew(held.lease, Some(held.token))
                .await
                .expect("renew after restart");
            // ...and tokens keep increasing, never reused.
            let next = c.acquire(&req("other", 3)).await.expect("next");
            assert!(next.token > gone.token);
            // A lease released before the restart is reported as released, not "ended, cause
            // unknown" (the restarted server read the end from the audit log), and a release
            // retried after the restart is the idempotent success it was before it.
            let err = c.renew(gone.lease, None).await.expect_err("ended");
            assert_eq!(err.code(), Some(ErrorCode::LeaseExpired));
            assert_eq!(
                err.body().and_then(|b| b.cause.clone()),
                Some(EndCause::Released),
                "{err:?}"
            );
            let retried = c
                .release(gone.lease, None)
                .await
                .expect("a release retried after the restart");
            assert!(retried.already_released, "{retried:?}");
            s.stop().await;
        }

        #[tokio::test]
        async fn a_reacquire_by_the_holder_with_another_ttl_or_slot_count_is_refused() {
            let s = TestServer::start_on($backend).await;
            let c = s.client();
            let held = c.acquire(&req("r", 1)).await.expect("first");
            let again = c.acquire(&req("r", 1)).await.expect("the same ask again");
            assert!(again.reacquired);
            assert_eq!(again.lease, held.lease);
            let longer = AcquireRequest {
                ttl_ms: Some(60_000),
                ..req("r", 1)
            };
            let err = c.acquire(&longer).await.expect_err("another TTL");
            let body = err.body().expect("api error");
            assert_eq!(body.error, ErrorCode::TtlMismatch, "{body:?}");
            assert_eq!(body.error.http_status(), 409);
            assert_eq!(body.lease, Some(held.lease));
            assert!(
                body.message.contains("with a TTL of 5s, asked for 1m"),
                "{}",
                body.message
            );
            let wider = AcquireRequest {
                slots: Some(2),
                ..req("r", 1)
            };
            let err = c.acquire(&wider).await.expect_err("another slot count");
            assert_eq!(err.code(), Some(ErrorCode::SlotsMismatch), "{err:?}");
            // Neither refusal touched the lease.
            let view = c.lock("r").await.expect("lock").lock;
            assert_eq!(view.slots, 1);
            assert_eq!(view.holders.len(), 1);
            assert_eq!(view.holders[0].lease, held.lease);
            assert_eq!(view.holders[0].ttl_ms, 5_000);
            s.stop().await;
        }

        /// On virtual time (issue 16, deliverable 2): the test moves the server's clock past
        /// the TTL instead of sleeping through it (it slept a second, polling every 50 ms).
        /// Nobody asks the server anything, so only the reaper — woken by the clock — can end
        /// the lease; a server that slept on the real clock fails this in seconds.
        #[tokio::test]
        async fn an_unrenewed_lease_is_reclaimed_by_the_reaper_when_its_ttl_runs_out() {
            let clock = Arc::new(ManualClock::new());
            let s = TestServer::start_on_tweaked($backend, on_virtual_time(&clock)).await;
            let c = s.client();
            let mut events = c.events(Some("short")).await.expect("events");
            let mut r = req("short", 1);
            r.ttl_ms = Some(60_000);
            let lease = c.acquire(&r).await.expect("acquire");
            assert_eq!(next_event(&mut events).await.label(), "granted");
            clock.advance(Duration::from_millis(59_999));
            let view = c.lock("short").await.expect("lock").lock;
            assert_eq!(view.holders.len(), 1, "held until its TTL runs out");
            assert_eq!(view.holders[0].ttl_left_ms, 1);

            clock.advance(Duration::from_millis(2));
            let ended = next_event(&mut events).await;
            assert_eq!((ended.label(), ended.lease), ("expired", Some(lease.lease)));
            assert!(c.lock("short").await.expect("lock").lock.holders.is_empty());
            let err = c.renew(lease.lease, None).await.expect_err("expired");
            assert_eq!(err.code(), Some(ErrorCode::LeaseExpired));
            s.stop().await;
        }

        #[tokio::test]
        async fn locks_are_listed_in_pages_by_name_and_prefix() {
            let s = TestServer::start_on($backend).await;
            let c = s.client();
            for (i, name) in ["fleet/b", "fleet/a", "other/x", "fleet/d", "fleet/c"]
                .iter()
                .enumerate()
            {
                c.acquire(&req(name, 200 + i as u32)).await.expect("acquire");
            }
            let names = |page: &Value| -> Vec<String> {
                page["locks"]
                    .as_array()
                    .expect("locks")
                    .iter()
                    .map(|l| l["resource"].as_str().expect("name").to_string())
                    .collect()
            };
            let (status, first) =
                raw(&s.url, "GET", "/v1/locks?prefix=fleet/&limit=2", None).await;
            assert_eq!(status, 200, "{first}");
            assert_eq!(names(&first), ["fleet/a", "fleet/b"]);
            assert_eq!(first["next"], "fleet/b");
            let (_, second) = raw(&s.url, "GET", "/v1/locks?prefix=fleet/&limit=2&after=fleet/b", None).await;
            assert_eq!(names(&second), ["fleet/c", "fleet/d"]);
            // The page that happens to end at the last match says no more follow.
            assert!(second.get("next").is_none(), "{second}");
            let (_, all) = raw(&s.url, "GET", "/v1/locks", None).await;
            assert_eq!(names(&all).len(), 5);
            assert!(all.get("next").is_none());
            // The client follows the pages.
            let listed = c.locks_matching(Some("fleet/")).await.expect("locks");
            assert_eq!(listed.locks.len(), 4);
            assert_eq!(listed.next, None);
            // By holder node: every holder here runs on node-7.
            let (_, here) = raw(&s.url, "GET", "/v1/locks?node=node-7&limit=3", None).await;
            assert_eq!(names(&here), ["fleet/a", "fleet/b", "fleet/c"]);
            assert_eq!(here["next"], "fleet/c");
            let (_, elsewhere) = raw(&s.url, "GET", "/v1/locks?node=node-8", None).await;
            assert_eq!(names(&elsewhere).len(), 0);
            assert_eq!(c.locks_on_node("node-7").await.expect("locks").locks.len(), 5);
            for bad in ["limit=0", "limit=10001", "limit=many", "colour=red"] {
                let (status, body) = raw(&s.url, "GET", &format!("/v1/locks?{bad}"), None).await;
                assert_eq!(status, 400, "{bad}: {body}");
                assert_eq!(body["error"], "invalid_request", "{bad}: {body}");
                assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
            }
            s.stop().await;
        }
    };
}

mod embedded {
    use super::*;
    lock_semantics!(Backend::Embedded);
}

mod etcd {
    use super::*;
    lock_semantics!(Backend::Etcd);
}

/// A server whose header timeout is `header` and idle timeout `idle`.
async fn timed_server(header: Duration, idle: Duration) -> TestServer {
    TestServer::start_tweaked(|c| {
        c.header_timeout = header;
        c.idle_timeout = idle;
    })
    .await
}

/// A raw TCP connection to the server's HTTP port.
async fn raw_tcp(s: &TestServer) -> tokio::net::TcpStream {
    let addr = s.addr();
    tokio::net::TcpStream::connect(addr).await.expect("connect")
}

/// Reads until the server closes the connection (within `limit`); how long that took, and
/// what came before the close.
async fn closed_within(
    tcp: &mut tokio::net::TcpStream,
    limit: Duration,
) -> Option<(Duration, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| (started.elapsed(), seen))
}

/// Sends one complete keep-alive request and reads its whole response (a `/healthz` JSON).
async fn healthz_on(tcp: &mut tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: locksmith\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // The JSON body ends with `}`; the answer is small and comes in one or two reads.
    while !seen.ends_with(b"}") {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(n > 0, "closed before the answer: {seen:?}");
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
}

/// Bug pinned (issue 15, item 15): connections stuck mid-headers, or never sending anything,
/// were never closed — enough of them under a descriptor limit and every new client hung. A
/// request head must now be complete within the header timeout.
#[tokio::test]
async fn a_half_sent_or_silent_http_connection_is_closed_after_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let header = Duration::from_millis(300);
    let s = timed_server(header, Duration::from_secs(60)).await;

    let connected = std::time::Instant::now();
    let mut half = raw_tcp(&s).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nhost: locksmith\r\nx-slow: ")
        .await
        .expect("write");
    let mut silent = raw_tcp(&s).await;
    for tcp in [&mut half, &mut silent] {
        let (_, seen) = closed_within(tcp, Duration::from_secs(10))
            .await
            .expect("closed by the server within the header timeout");
        let took = connected.elapsed();
        assert!(
            took >= header / 2,
            "closed after {took:?}, before the timeout"
        );
        assert!(seen.is_empty(), "no answer to a half-sent head: {seen:?}");
    }

    // After a complete request, a later head gets the header timeout from its first byte.
    let mut kept = raw_tcp(&s).await;
    healthz_on(&mut kept).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("write");
    closed_within(&mut kept, Duration::from_secs(10))
        .await
        .expect("a stalled second head is closed too");

    // The server still serves.
    s.client().health().await.expect("healthz");
    s.stop().await;
}

/// A keep-alive connection may wait between requests longer than the header timeout, up to the
/// idle timeout — and is closed after that.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let header = Duration::from_millis(200);
    let idle = Duration::from_millis(1_500);
    let s = timed_server(header, idle).await;
    let mut tcp = raw_tcp(&s).await;
    healthz_on(&mut tcp).await;
    tokio::time::sleep(header * 3).await;
    healthz_on(&mut tcp).await;
    let (took, seen) = closed_within(&mut tcp, Duration::from_secs(10))
        .await
        .expect("closed by the server after the idle timeout");
    assert!(
        took >= idle / 2,
        "closed after {took:?}, before the idle timeout"
    );
    assert!(seen.is_empty(), "{seen:?}");
    s.stop().await;
}

/// The timeouts apply only while the server waits for a request: an event stream, or an
/// acquire waiting in the queue, outlives both.
#[tokio::test]
async fn event_streams_and_waiting_acquires_outlive_the_header_and_idle_timeouts() {
    let s = timed_server(Duration::from_millis(200), Duration::from_millis(300)).await;
    let c = s.client();
    let mut events = c.events(Some("long/lived")).await.expect("event stream");
    let held = c.acquire(&req("long/lived", 1)).await.expect("acquire");
    let mut queued = req("long/lived", 2);
    queued.wait_ms = Some(30_000);
    let waiter = tokio::spawn({
        let c = s.client();
        async move { c.acquire(&queued).await }
    });
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(!waiter.is_finished(), "still waiting");
    c.release(held.lease, None).await.expect("release");
    let granted = waiter
        .await
        .expect("task")
        .expect("granted after 1 s in the queue");
    assert_eq!(granted.owner.pid, 2);
    let mut labels = Vec::new();
    while labels.len() < 3 {
        let record = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("the stream still delivers")
            .expect("event")
            .expect("not closed");
        labels.push(record.label().to_string());
    }
    assert_eq!(labels, ["granted", "released", "granted"]);
    s.stop().await;
}

/// On virtual time the whole server runs on the one clock: a HOT refusal's "last heartbeat …
/// ago" and a listing's `server_time_ms` are read from it, not from the machine's wall clock
/// (which would make every age on a simulated fleet nonsense).
#[tokio::test]
async fn a_server_on_virtual_time_measures_ages_and_server_time_on_its_clock() {
    let clock = Arc::new(ManualClock::new());
    let s = TestServer::start_tweaked(on_virtual_time(&clock)).await;
    let c = s.client();
    let mut held = req("virtual/ages", 1);
    held.ttl_ms = Some(600_000);
    c.acquire(&held).await.expect("acquire");
    clock.advance(Duration::from_secs(42));
    let err = c.acquire(&req("virtual/ages", 2)).await.expect_err("HOT");
    assert_eq!(err.code(), Some(ErrorCode::Hot), "{err}");
    assert!(err.to_string().contains("last heartbeat 42s ago"), "{err}");
    let listing = c.locks().await.expect("locks");
    assert_eq!(
        listing.server_time_ms,
        locksmith_server::clock::Clock::now(clock.as_ref()).wall_ms
    );
    s.stop().await;
}
