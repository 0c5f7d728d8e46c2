//! The binary wire protocol against a real server (embedded store, 127.0.0.1:0): the typed
//! `WireClient`, and raw frames for what a well-behaved client never sends.

use std::time::Duration;

mod common;

use common::{TestServer, req, wire_server};
use locksmith_api::frame::{self, LeaseOp, Op, PREAMBLE};
use locksmith_client::WireClient;
use locksmith_client::api::{ErrorCode, FenceCheckRequest};
use locksmith_core::LockState;
use locksmith_core::{FenceToken, LeaseId};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw connection that has exchanged preambles.
async fn raw_conn(s: &TestServer) -> TcpStream {
    let mut tcp = TcpStream::connect(s.wire.as_deref().expect("wire"))
        .await
        .expect("connect");
    tcp.write_all(PREAMBLE).await.expect("preamble");
    let mut theirs = [0u8; 12];
    tcp.read_exact(&mut theirs).await.expect("server preamble");
    assert_eq!(&theirs, PREAMBLE);
    tcp
}

/// Reads one answer frame: (id, status, JSON body).
async fn read_answer(tcp: &mut TcpStream) -> (u64, u16, Value) {
    let mut len = [0u8; 4];
    tcp.read_exact(&mut len).await.expect("length");
    let mut rest = vec![0u8; u32::from_be_bytes(len) as usize];
    tcp.read_exact(&mut rest).await.expect("frame");
    let mut whole = len.to_vec();
    whole.extend(rest);
    let (f, used) = frame::decode(&whole).expect("valid").expect("whole frame");
    assert_eq!(used, whole.len());
    (
        f.id,
        f.code,
        serde_json::from_slice(f.body).expect("JSON body"),
    )
}

/// Polls `resource` (up to about a second) until its queue is non-empty (`queued`) or empty;
/// whether it got there.
async fn queue_is(http: &locksmith_client::Client, resource: &str, queued: bool) -> bool {
    for _ in 0..200 {
        let waiters = http.lock(resource).await.expect("view").lock.waiters;
        if waiters.is_empty() != queued {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

fn raw_frame(id: u64, code: u16, body: &[u8]) -> Vec<u8> {
    let mut out = ((10 + body.len()) as u32).to_be_bytes().to_vec();
    out.extend(id.to_be_bytes());
    out.extend(code.to_be_bytes());
    out.extend(body);
    out
}

#[tokio::test]
async fn acquire_renew_check_release_over_the_wire_agree_with_http() {
    let (s, wire) = wire_server().await;
    let http = s.client();
    let lease = wire
        .acquire(&req("fleet/a.conf", 10))
        .await
        .expect("acquire");
    assert_eq!(lease.resource, "fleet/a.conf");
    // The same table: HTTP sees the lease the wire granted.
    let seen = http
        .lock("fleet/a.conf")
        .await
        .expect("lock over HTTP")
        .lock;
    assert_eq!(seen.holders.len(), 1);
    assert_eq!(
        (seen.holders[0].lease, seen.holders[0].token),
        (lease.lease, lease.token)
    );

    let renewed = wire
        .renew(lease.lease, Some(lease.token))
        .await
        .expect("renew");
    assert_eq!(renewed.token, lease.token);
    let check = wire
        .check_fence("fleet/a.conf", lease.token)
        .await
        .expect("fence check");
    assert_eq!(check.holder.lease, lease.lease);

    let released = wire
        .release(lease.lease, Some(lease.token))
        .await
        .expect("release");
    assert!(!released.already_released);
    assert_eq!(released.resource, "fleet/a.conf");
    let again = wire.release(lease.lease, None).await.expect("idempotent");
    assert!(again.already_released);
    let view = http.lock("fleet/a.conf").await.expect("lock view");
    assert_eq!(view.lock.state, LockState::Free);
    s.stop().await;
}

#[tokio::test]
async fn refusals_carry_the_same_codes_and_statuses_as_http() {
    let (s, wire) = wire_server().await;
    let held = wire
        .acquire(&req("fleet/hot.conf", 10))
        .await
        .expect("acquire");

    let hot = wire
        .acquire(&req("fleet/hot.conf", 11))
        .await
        .expect_err("hot");
    assert_eq!(hot.code(), Some(ErrorCode::Hot));
    let body = hot.body().expect("body");
    assert_eq!(body.holders.len(), 1, "{body:?}");
    assert!(
        matches!(hot, locksmith_client::ClientError::Api { status: 409, .. }),
        "{hot:?}"
    );

    let stale = wire
        .renew(held.lease, Some(FenceToken(held.token.0 + 100)))
        .await
        .expect_err("stale token");
    assert_eq!(stale.code(), Some(ErrorCode::StaleToken));

    let unknown = wire
        .renew(LeaseId(999_999), None)
        .await
        .expect_err("no lease");
    assert_eq!(unknown.code(), Some(ErrorCode::NotHolder));

    let zero = wire.release(LeaseId(0), None).await.expect_err("lease 0");
    assert_eq!(zero.code(), Some(ErrorCode::InvalidRequest));

    let mut bad = req("", 12);
    bad.ttl_ms = Some(5_000);
    let invalid = wire.acquire(&bad).await.expect_err("empty resource");
    assert_eq!(invalid.code(), Some(ErrorCode::InvalidRequest));
    s.stop().await;
}

#[tokio::test]
async fn malformed_bodies_and_unknown_ops_are_answered_and_the_connection_stays_usable() {
    let (s, _wire) = wire_server().await;
    let mut tcp = raw_conn(&s).await;
    tcp.write_all(&raw_frame(1, Op::Renew as u16, b"{not json"))
        .await
        .expect("write");
    tcp.write_all(&raw_frame(2, 77, b"{}"))
        .await
        .expect("write");
    let body = serde_json::to_vec(&LeaseOp {
        lease: LeaseId(5),
        token: None,
    })
    .expect("encode");
    tcp.write_all(&raw_frame(3, Op::Renew as u16, &body))
        .await
        .expect("write");
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(read_answer(&mut tcp).await);
    }
    answers.sort_by_key(|a| a.0);
    assert_eq!(
        (answers[0].1, &answers[0].2["error"]),
        (400, &Value::from("invalid_json"))
    );
    assert_eq!(
        (answers[1].1, &answers[1].2["error"]),
        (404, &Value::from("not_found"))
    );
    assert!(
        answers[1].2["message"]
            .as_str()
            .expect("message")
            .contains("77")
    );
    // Still in sync: the third frame was read and answered on its own.
    assert_eq!(
        (answers[2].1, &answers[2].2["error"]),
        (404, &Value::from("not_holder"))
    );
    s.stop().await;
}

#[tokio::test]
async fn an_oversized_frame_is_answered_then_the_connection_closes() {
    let (s, _wire) = wire_server().await;
    let mut tcp = raw_conn(&s).await;
    let huge = (frame::MAX_FRAME as u32 + 1).to_be_bytes();
    tcp.write_all(&huge).await.expect("write");
    let (id, status, body) = read_answer(&mut tcp).await;
    assert_eq!((id, status), (0, 400));
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("maximum")
    );
    let mut rest = Vec::new();
    tcp.read_to_end(&mut rest).await.expect("closed cleanly");
    assert!(rest.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn an_http_client_on_the_wire_port_gets_a_json_400_naming_the_right_port() {
    let (s, _wire) = wire_server().await;
    let url = format!("http://{}/v1/locks", s.wire.as_deref().expect("wire"));
    let resp = reqwest::get(&url).await.expect("an HTTP answer");
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("--listen")
    );
    // And the wire client pointed at the HTTP port says so instead of hanging.
    let wrong = WireClient::new(s.addr());
    let err = wrong
        .acquire(&req("x", 1))
        .await
        .expect_err("not a wire port");
    assert!(
        err.to_string()
            .contains("not a Locksmith wire-protocol port"),
        "{err}"
    );
    s.stop().await;
}

#[tokio::test]
async fn many_tasks_share_one_connection_and_each_gets_its_own_answer() {
    let (s, wire) = wire_server().await;
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let wire = wire.clone();
        tasks.push(tokio::spawn(async move {
            let resource = format!("fleet/many/{i}.conf");
            let lease = wire
                .acquire(&req(&resource, 100 + i))
                .await
                .expect("acquire");
            assert_eq!(lease.resource, resource);
            let renewed = wire
                .renew(lease.lease, Some(lease.token))
                .await
                .expect("renew");
            assert_eq!(renewed.lease, lease.lease);
            wire.release(lease.lease, Some(lease.token))
                .await
                .expect("release");
            lease.token.0
        }));
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.expect("task"));
    }
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 200, "every grant has its own token");
    s.stop().await;
}

#[tokio::test]
async fn a_queued_acquire_does_not_hold_up_renewals_behind_it_on_the_same_connection() {
    let (s, wire) = wire_server().await;
    let held = wire
        .acquire(&req("fleet/q.conf", 10))
        .await
        .expect("acquire");
    let mut waiting = req("fleet/q.conf", 11);
    waiting.wait_ms = Some(10_000);
    let queued = tokio::spawn({
        let wire = wire.clone();
        async move { wire.acquire(&waiting).await }
    });
    // Wait until the acquire is in the queue.
    let http = s.client();
    queue_is(&http, "fleet/q.conf", true).await;
    for _ in 0..20 {
        wire.renew(held.lease, Some(held.token))
            .await
            .expect("renew while queued");
    }
    assert!(!queued.is_finished());
    wire.release(held.lease, None).await.expect("release");
    let next = queued.await.expect("task").expect("granted after release");
    assert!(next.token > held.token);
    s.stop().await;
}

/// Bug pinned: an acquire whose caller gave up (dropped future, timeout) while it queued was
/// still granted when the lock came free, and nobody released the lease: the next waiter
/// waited out the whole TTL behind a holder that did not exist. (The first fix released such a
/// grant once it arrived; the client now withdraws the acquire, so it is never granted.)
#[tokio::test]
async fn an_acquire_whose_caller_gave_up_leaves_the_queue_at_once() {
    let (s, wire) = wire_server().await;
    let resource = "fleet/gave-up.conf";
    let held = wire.acquire(&req(resource, 10)).await.expect("acquire");
    let mut abandoned = req(resource, 11);
    abandoned.wait_ms = Some(30_000);
    abandoned.ttl_ms = Some(60_000);
    let http = s.client();
    // One caller times out while its acquire is queued; another's future is dropped.
    let gave_up = tokio::time::timeout(Duration::from_millis(300), wire.acquire(&abandoned)).await;
    assert!(
        gave_up.is_err(),
        "the lock is held: the acquire must still be waiting"
    );
    assert!(
        queue_is(&http, resource, false).await,
        "withdrawn from the server's queue while the lock is still held"
    );
    let mut dropped = req(resource, 12);
    dropped.wait_ms = Some(30_000);
    let waiting = tokio::spawn({
        let wire = wire.clone();
        async move { wire.acquire(&dropped).await }
    });
    assert!(
        queue_is(&http, resource, true).await,
        "the second one queued"
    );
    waiting.abort();
    assert!(
        queue_is(&http, resource, false).await,
        "a dropped acquire is withdrawn too"
    );

    // The lock comes free: the next caller gets it, and nobody was granted in between.
    wire.release(held.lease, Some(held.token))
        .await
        .expect("release");
    let mut next = req(resource, 13);
    next.wait_ms = Some(5_000);
    let lease = wire.acquire(&next).await.expect("the lock is free");
    assert_eq!(lease.token.0, held.token.0 + 1, "no grant in between");
    let view = http.lock(resource).await.expect("view");
    assert_eq!(view.lock.holders.len(), 1, "only the live caller holds it");
    // The connection still serves the same client.
    wire.release(lease.lease, Some(lease.token))
        .await
        .expect("release");
    s.stop().await;
}

/// Many callers on one connection giving up at random moments — while queued, as the grant
/// races the withdraw, mid-commit — must leave nobody holding the lock: every grant is either
/// answered (and released by its caller), withdrawn before it was made, or released by the
/// server or the client as nobody's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_giving_up_at_random_moments_under_contention_leave_no_holder() {
    let (s, wire) = wire_server().await;
    let resource = "fleet/storm.conf";
    let mut tasks = Vec::new();
    for i in 0..16u32 {
        let wire = wire.clone();
        tasks.push(tokio::spawn(async move {
            let (mut granted, mut gave_up) = (0u32, 0u32);
            for round in 0..40u32 {
                let mut ask = req(resource, 100 + i);
                ask.wait_ms = Some(30_000);
                // 0–1.5 ms of patience: some give up while queued, some as they are granted.
                let patience = Duration::from_micros(u64::from((i * 37 + round * 101) % 1_500));
                match tokio::time::timeout(patience, wire.acquire(&ask)).await {
                    Ok(lease) => {
                        let lease = lease.expect("granted");
                        granted += 1;
                        wire.release(lease.lease, Some(lease.token))
                            .await
                            .expect("release");
                    }
                    Err(_) => gave_up += 1,
                }
            }
            (granted, gave_up)
        }));
    }
    let (mut granted, mut gave_up) = (0, 0);
    for t in tasks {
        let (g, u) = t.await.expect("task");
        (granted, gave_up) = (granted + g, gave_up + u);
    }
    assert!(gave_up > 0, "some callers gave up ({granted} granted)");
    // Whatever was granted to a caller that had gone is released within a few round trips.
    let http = s.client();
    let mut view = http.lock(resource).await.expect("view").lock;
    for _ in 0..400 {
        if view.holders.is_empty() && view.waiters.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        view = http.lock(resource).await.expect("view").lock;
    }
    assert!(
        view.holders.is_empty() && view.waiters.is_empty(),
        "{granted} grants answered; left behind: {view:?}"
    );
    // And the connection still serves: the lock is free for the next caller at once.
    let mut next = req(resource, 200);
    next.wait_ms = Some(0);
    let lease = wire.acquire(&next).await.expect("free");
    wire.release(lease.lease, Some(lease.token))
        .await
        .expect("release");
    s.stop().await;
}

#[tokio::test]
async fn a_withdraw_takes_a_queued_acquire_out_and_answers_for_it() {
    let (s, wire) = wire_server().await;
    let resource = "fleet/withdraw.conf";
    let held = wire.acquire(&req(resource, 10)).await.expect("acquire");
    let mut tcp = raw_conn(&s).await;
    let mut waiting = req(resource, 11);
    waiting.wait_ms = Some(30_000);
    let body = serde_json::to_vec(&waiting).expect("encode");
    tcp.write_all(&raw_frame(1, Op::Acquire as u16, &body))
        .await
        .expect("write");
    let http = s.client();
    assert!(
        queue_is(&http, resource, true).await,
        "the raw acquire queued"
    );

    let withdraw = |request: u64| serde_json::to_vec(&frame::Withdraw { request }).expect("encode");
    tcp.write_all(&raw_frame(2, Op::Withdraw as u16, &withdraw(1)))
        .await
        .expect("write");
    let (id, status, body) = read_answer(&mut tcp).await;
    assert_eq!((id, status), (2, 200));
    assert_eq!(body, serde_json::json!({"request": 1, "withdrawn": true}));
    assert!(queue_is(&http, resource, false).await, "out of the queue");

    // Again: nothing left to withdraw. An acquire already answered is not withdrawn either.
    tcp.write_all(&raw_frame(3, Op::Withdraw as u16, &withdraw(1)))
        .await
        .expect("write");
    let body = serde_json::to_vec(&req("fleet/free.conf", 12)).expect("encode");
    tcp.write_all(&raw_frame(4, Op::Acquire as u16, &body))
        .await
        .expect("write");
    let (id, status, body) = read_answer(&mut tcp).await;
    assert_eq!((id, status), (3, 200));
    assert_eq!(body, serde_json::json!({"request": 1, "withdrawn": false}));
    let (id, status, granted) = read_answer(&mut tcp).await;
    assert_eq!((id, status), (4, 200), "granted: {granted}");
    tcp.write_all(&raw_frame(5, Op::Withdraw as u16, &withdraw(4)))
        .await
        .expect("write");
    let (id, _, body) = read_answer(&mut tcp).await;
    assert_eq!(id, 5);
    assert_eq!(body, serde_json::json!({"request": 4, "withdrawn": false}));
    let free = http.lock("fleet/free.conf").await.expect("view");
    assert_eq!(free.lock.holders.len(), 1, "an answered grant stays held");

    // The withdrawn acquire never gets an answer, not even when the lock comes free.
    wire.release(held.lease, Some(held.token))
        .await
        .expect("release");
    let body = serde_json::to_vec(&FenceCheckRequest {
        resource: resource.into(),
        token: held.token,
    })
    .expect("encode");
    tcp.write_all(&raw_frame(6, Op::CheckFence as u16, &body))
        .await
        .expect("write");
    let (id, _, _) = read_answer(&mut tcp).await;
    assert_eq!(
        id, 6,
        "the next answer is the fence check's, not the withdrawn acquire's"
    );
    let view = http.lock(resource).await.expect("view");
    assert!(view.lock.holders.is_empty(), "nobody was granted");
    s.stop().await;
}

#[tokio::test]
async fn closing_the_connection_withdraws_its_queued_acquire() {
    let (s, wire) = wire_server().await;
    let held = wire
        .acquire(&req("fleet/w.conf", 10))
        .await
        .expect("acquire");
    let mut tcp = raw_conn(&s).await;
    let mut waiting = req("fleet/w.conf", 11);
    waiting.wait_ms = Some(30_000);
    let body = serde_json::to_vec(&waiting).expect("encode");
    tcp.write_all(&raw_frame(1, Op::Acquire as u16, &body))
        .await
        .expect("write");
    let http = s.client();
    let queued = queue_is(&http, "fleet/w.conf", true).await;
    assert!(queued, "the raw acquire should have queued");
    drop(tcp);
    let withdrawn = queue_is(&http, "fleet/w.conf", false).await;
    assert!(
        withdrawn,
        "the gone client's acquire should leave the queue"
    );
    wire.release(held.lease, None).await.expect("release");
    let view = http.lock("fleet/w.conf").await.expect("view");
    assert_eq!(
        view.lock.state,
        LockState::Free,
        "nobody inherits a gone waiter's grant"
    );
    s.stop().await;
}

#[tokio::test]
async fn shutdown_answers_queued_wire_acquires_and_later_calls_fail_cleanly() {
    let (s, wire) = wire_server().await;
    let _held = wire
        .acquire(&req("fleet/s.conf", 10))
        .await
        .expect("acquire");
    let mut waiting = req("fleet/s.conf", 11);
    waiting.wait_ms = Some(30_000);
    let queued = tokio::spawn({
        let wire = wire.clone();
        async move { wire.acquire(&waiting).await }
    });
    let http = s.client();
    queue_is(&http, "fleet/s.conf", true).await;
    s.stop().await;
    let answer = queued
        .await
        .expect("task")
        .expect_err("no grant during shutdown");
    assert_eq!(answer.code(), Some(ErrorCode::ShuttingDown), "{answer:?}");
    let after = wire.renew(LeaseId(1), None).await.expect_err("server gone");
    assert!(
        matches!(after, locksmith_client::ClientError::Transport { .. }),
        "{after:?}"
    );
}

#[tokio::test]
async fn a_bad_length_behind_a_good_frame_in_one_write_answers_both_then_closes() {
    let (s, _wire) = wire_server().await;
    let mut tcp = raw_conn(&s).await;
    let body = serde_json::to_vec(&LeaseOp {
        lease: LeaseId(5),
        token: None,
    })
    .expect("encode");
    let mut bytes = raw_frame(7, Op::Renew as u16, &body);
    bytes.extend(3u32.to_be_bytes());
    tcp.write_all(&bytes).await.expect("write");
    let mut answers = [read_answer(&mut tcp).await, read_answer(&mut tcp).await];
    answers.sort_by_key(|a| a.0);
    assert_eq!((answers[0].0, answers[0].1), (0, 400));
    assert!(
        answers[0].2["message"]
            .as_str()
            .expect("message")
            .contains("minimum")
    );
    assert_eq!(
        (answers[1].0, answers[1].1),
        (7, 404),
        "the good frame is answered"
    );
    let mut rest = Vec::new();
    tcp.read_to_end(&mut rest).await.expect("closed cleanly");
    assert!(rest.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn a_connection_that_never_sends_its_preamble_does_not_hold_up_shutdown() {
    let (s, wire) = wire_server().await;
    // Idle after the handshake, and silent before it: neither may keep the server up.
    let lease = wire
        .acquire(&req("fleet/idle.conf", 10))
        .await
        .expect("acquire");
    assert!(lease.token.0 > 0);
    let _silent = TcpStream::connect(s.wire.as_deref().expect("wire"))
        .await
        .expect("connect");
    tokio::time::sleep(Duration::from_millis(50)).await;
    tokio::time::timeout(Duration::from_secs(5), s.stop())
        .await
        .expect("the server stops although a connection never said hello");
}

#[tokio::test]
async fn connect_opens_one_connection_before_the_first_call_and_names_an_unreachable_server() {
    // A stand-in server that records what each connection sends before it answers anything.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut theirs = [0u8; 12];
            tcp.read_exact(&mut theirs).await.expect("client preamble");
            tcp.write_all(PREAMBLE).await.expect("answer the preamble");
            let _ = seen_tx.send(theirs);
            // Keep the connection open for the rest of the test.
            tokio::spawn(async move {
                let mut rest = Vec::new();
                let _ = tcp.read_to_end(&mut rest).await;
            });
        }
    });
    let wire = WireClient::new(addr);
    wire.connect().await.expect("connect");
    assert_eq!(&seen.recv().await.expect("a connection"), PREAMBLE);
    // Connected already: no second connection.
    wire.connect().await.expect("connect again");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), seen.recv())
            .await
            .is_err(),
        "a second connect opened a second connection"
    );

    // Nothing listens on a port that was just free.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let nowhere = WireClient::new(format!("127.0.0.1:{port}"));
    match nowhere.connect().await {
        Err(locksmith_client::ClientError::Transport { server, .. }) => {
            assert_eq!(server, format!("127.0.0.1:{port}"));
        }
        other => panic!("expected a transport error naming the server, got {other:?}"),
    }
}

/// Polls `resource` (up to about ten seconds) until exactly `n` acquires wait for it; whether it
/// got there.
async fn waiters_are(http: &locksmith_client::Client, resource: &str, n: usize) -> bool {
    for _ in 0..1_000 {
        if http.lock(resource).await.expect("view").lock.waiters.len() == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Bug pinned (issue 15, item 7): with 1,024 acquires queued on one connection the server
/// stopped reading it — renewals sent behind them were never answered (the lease expired), and
/// the connection's close went unseen, so its waiters stayed queued and the lock went to a dead
/// connection's waiter for its whole TTL. Now the connection keeps reading: acquires past the
/// limit are refused (`too_many_requests`), the renewal is answered, and the close withdraws
/// every waiter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_1024_queued_acquires_neither_stall_renewals_nor_outlive_the_connection() {
    let (s, wire) = wire_server().await;
    let resource = "fleet/busy.conf";
    let http = s.client();
    let mut tcp = raw_conn(&s).await;
    let mut holder = req(resource, 10);
    holder.ttl_ms = Some(60_000);
    let body = serde_json::to_vec(&holder).expect("encode");
    tcp.write_all(&raw_frame(1, Op::Acquire as u16, &body))
        .await
        .expect("write");
    let (id, status, lease) = read_answer(&mut tcp).await;
    assert_eq!((id, status), (1, 200), "{lease}");
    let held = LeaseId(lease["lease"].as_u64().expect("lease id"));

    // 1,100 acquires that queue behind the holder, then a renewal of its lease.
    let queued = 1_100u64;
    let mut bytes = Vec::new();
    for i in 0..queued {
        let mut waiting = req(resource, 1_000 + i as u32);
        waiting.wait_ms = Some(60_000);
        waiting.ttl_ms = Some(60_000);
        let body = serde_json::to_vec(&waiting).expect("encode");
        bytes.extend(raw_frame(2 + i, Op::Acquire as u16, &body));
    }
    let renew = serde_json::to_vec(&LeaseOp {
        lease: held,
        token: None,
    })
    .expect("encode");
    let renew_id = 5_000;
    bytes.extend(raw_frame(renew_id, Op::Renew as u16, &renew));
    let (mut read_half, mut write_half) = tcp.into_split();
    let writer = tokio::spawn(async move {
        write_half.write_all(&bytes).await.expect("write");
        write_half
    });

    // Before the renewal's answer: a refusal for each acquire past the limit.
    let mut refused = 0;
    let answered = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let mut len = [0u8; 4];
            read_half.read_exact(&mut len).await.expect("length");
            let mut rest = vec![0u8; u32::from_be_bytes(len) as usize];
            read_half.read_exact(&mut rest).await.expect("frame");
            let mut whole = len.to_vec();
            whole.extend(rest);
            let (f, _) = frame::decode(&whole).expect("valid").expect("whole frame");
            let body: Value = serde_json::from_slice(f.body).expect("JSON");
            if f.id == renew_id {
                return (f.code, body);
            }
            assert_eq!(f.code, 429, "only refusals come before the renewal: {body}");
            assert_eq!(body["error"], "too_many_requests", "{body}");
            assert!(
                body["message"].as_str().is_some_and(|m| m.contains("1024")),
                "names the limit: {body}"
            );
            refused += 1;
        }
    })
    .await;
    let (code, body) = answered.expect("the renewal is answered despite the queued acquires");
    assert_eq!(code, 200, "{body}");
    assert_eq!(refused, queued - 1_024);
    assert!(
        waiters_are(&http, resource, 1_024).await,
        "the first 1,024 queued"
    );

    // A live waiter on another connection, behind the dead-to-be ones.
    let mut live = req(resource, 99);
    live.wait_ms = Some(60_000);
    let live_waiter = tokio::spawn({
        let wire = wire.clone();
        async move { wire.acquire(&live).await }
    });
    assert!(
        waiters_are(&http, resource, 1_025).await,
        "the live one queued"
    );

    // Close the connection: its 1,024 waiters leave the queue; the lock goes to the live one.
    let write_half = writer.await.expect("writer");
    drop((read_half, write_half));
    assert!(
        waiters_are(&http, resource, 1).await,
        "the closed connection's waiters are withdrawn"
    );
    http.release(held, None).await.expect("release");
    let granted = tokio::time::timeout(Duration::from_secs(10), live_waiter)
        .await
        .expect("the live waiter is served at once")
        .expect("task")
        .expect("granted");
    assert_eq!(granted.owner.pid, 99);
    s.stop().await;
}

/// A wire server whose idle timeout is `idle`.
async fn idle_wire_server(idle: Duration) -> TestServer {
    TestServer::start_tweaked(|c| {
        c.wire_listen = Some("127.0.0.1:0".parse().expect("addr"));
        c.idle_timeout = idle;
    })
    .await
}

/// Bug pinned (issue 15, item 15): a wire connection past its preamble that sent nothing more
/// was never closed. It is now closed after the idle timeout — but one with an acquire waiting
/// in the queue is not idle, however long it waits.
#[tokio::test]
async fn an_idle_wire_connection_is_closed_but_one_with_a_queued_acquire_is_not() {
    let idle = Duration::from_millis(300);
    let s = idle_wire_server(idle).await;
    let mut silent = raw_conn(&s).await;
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut rest))
        .await
        .expect("closed by the server after the idle timeout")
        .expect("a clean close");
    assert!(started.elapsed() >= idle / 2, "{:?}", started.elapsed());
    assert!(rest.is_empty(), "{rest:?}");

    // A connection whose acquire waits in the queue for longer than the idle timeout.
    let http = s.client();
    let held = http
        .acquire(&req("fleet/idle.conf", 10))
        .await
        .expect("held");
    let mut waiting = raw_conn(&s).await;
    let mut queued = req("fleet/idle.conf", 11);
    queued.wait_ms = Some(30_000);
    let body = serde_json::to_vec(&queued).expect("encode");
    waiting
        .write_all(&raw_frame(1, Op::Acquire as u16, &body))
        .await
        .expect("write");
    assert!(queue_is(&http, "fleet/idle.conf", true).await);
    tokio::time::sleep(idle * 4).await;
    http.release(held.lease, None).await.expect("release");
    let (id, status, granted) =
        tokio::time::timeout(Duration::from_secs(5), read_answer(&mut waiting))
            .await
            .expect("the queued acquire is answered on its still-open connection");
    assert_eq!((id, status), (1, 200), "{granted}");
    s.stop().await;
}
