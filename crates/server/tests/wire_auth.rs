//! Authentication over the binary wire protocol, against a real server (embedded store, wire
//! and HTTP listeners on 127.0.0.1:0) with authentication on: the auth frame (op 6) right after
//! the preamble, what a connection may do as its token, and the connection closed once its
//! token is revoked or expires. Raw frames where the typed `WireClient` would hide what the
//! server sent.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{TestServer, on_virtual_time, req};
use locksmith_api::frame::{self, Op, PREAMBLE};
use locksmith_auth::{CreateToken, Role};
use locksmith_client::api::{ErrorCode, FenceCheckRequest};
use locksmith_client::{Client, ClientError, WireClient};
use locksmith_core::{FenceToken, LockState};
use locksmith_server::AuthMode;
use locksmith_server::clock::ManualClock;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a revoked or expired token's connection may stay open: a second, plus scheduling.
const CLOSED_WITHIN: Duration = Duration::from_millis(1_500);

/// A server with authentication on and a wire listener.
async fn auth_server() -> TestServer {
    TestServer::start_tweaked(|c| {
        c.auth = AuthMode::On;
        c.wire_listen = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await
}

/// A token made on `s` (its id and secret); `seed` makes its secret.
async fn token(
    s: &TestServer,
    name: &str,
    role: Role,
    node: Option<&str>,
    ttl_ms: Option<u64>,
    seed: u8,
) -> (String, String) {
    let (record, secret) = s
        .engine
        .create_token(
            CreateToken {
                name: name.into(),
                role,
                node: node.map(str::to_string),
                prefixes: Vec::new(),
                ttl_ms,
                created_by: "test".into(),
            },
            [seed; 32],
        )
        .await
        .expect("token");
    (record.id, secret.expose().to_string())
}

/// An HTTP client of `s` acting as an admin token of its own.
async fn admin_http(s: &TestServer) -> Client {
    let (_, secret) = token(s, "test-admin", Role::Admin, None, None, 200).await;
    Client::new(&s.url)
        .expect("client")
        .with_token(&secret)
        .expect("token")
}

fn wire_of(s: &TestServer) -> String {
    s.wire.clone().expect("wire listener")
}

/// A raw connection that has exchanged preambles.
async fn raw_conn(s: &TestServer) -> TcpStream {
    let mut tcp = TcpStream::connect(wire_of(s)).await.expect("connect");
    tcp.write_all(PREAMBLE).await.expect("preamble");
    let mut theirs = [0u8; 12];
    tcp.read_exact(&mut theirs).await.expect("server preamble");
    assert_eq!(&theirs, PREAMBLE);
    tcp
}

/// Sends one frame with a JSON body.
async fn send(tcp: &mut TcpStream, id: u64, op: Op, body: &impl serde::Serialize) {
    let mut out = Vec::new();
    frame::encode(&mut out, id, op as u16, body).expect("encode");
    tcp.write_all(&out).await.expect("send");
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

/// Asserts the server closes `tcp` (end of stream, nothing more) within `limit`.
async fn closed_within(tcp: &mut TcpStream, limit: Duration) {
    let mut rest = Vec::new();
    tokio::time::timeout(limit, tcp.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection")
        .expect("read");
    assert!(rest.is_empty(), "more after the close: {rest:?}");
}

/// A fence check of a token nobody holds (answered `stale_token`).
fn check(resource: &str) -> FenceCheckRequest {
    FenceCheckRequest {
        resource: resource.into(),
        token: FenceToken(999_999),
    }
}

async fn state(http: &Client, resource: &str) -> LockState {
    http.lock(resource).await.expect("lock view").lock.state
}

#[tokio::test]
async fn an_auth_frame_names_the_principal_every_request_of_the_connection_then_acts_as() {
    let s = auth_server().await;
    let (id, secret) = token(&s, "ci", Role::Client, None, None, 1).await;
    let mut tcp = raw_conn(&s).await;
    send(
        &mut tcp,
        1,
        Op::Auth,
        &serde_json::json!({ "token": secret }),
    )
    .await;
    let (answer_id, status, body) = read_answer(&mut tcp).await;
    assert_eq!((answer_id, status), (1, 200), "{body}");
    assert_eq!(body["principal"]["token"], id.as_str(), "{body}");
    assert_eq!(body["principal"]["name"], "ci", "{body}");
    assert_eq!(body["principal"]["role"], "client", "{body}");

    send(&mut tcp, 2, Op::Acquire, &req("wire/auth", 1)).await;
    let (answer_id, status, lease) = read_answer(&mut tcp).await;
    assert_eq!((answer_id, status), (2, 200), "{lease}");

    // A second auth frame is refused, and the connection goes on as it was.
    send(
        &mut tcp,
        3,
        Op::Auth,
        &serde_json::json!({ "token": secret }),
    )
    .await;
    let (answer_id, status, body) = read_answer(&mut tcp).await;
    assert_eq!((answer_id, status), (3, 400), "{body}");
    assert_eq!(body["error"], "invalid_request", "{body}");
    send(&mut tcp, 4, Op::CheckFence, &check("wire/auth")).await;
    let (answer_id, status, body) = read_answer(&mut tcp).await;
    assert_eq!((answer_id, status), (4, 409), "{body}");
    assert_eq!(body["error"], "stale_token", "{body}");

    // The typed client authenticates with its token, and is answered as HTTP would.
    let wire = WireClient::new(wire_of(&s)).with_token(&secret);
    let lease = wire.acquire(&req("wire/typed", 2)).await.expect("acquire");
    wire.release(lease.lease, Some(lease.token))
        .await
        .expect("release");
    s.stop().await;
}

#[tokio::test]
async fn with_auth_on_a_frame_before_the_auth_frame_is_refused_401_and_the_connection_closed() {
    let s = auth_server().await;
    let mut tcp = raw_conn(&s).await;
    send(&mut tcp, 1, Op::CheckFence, &check("wire/early")).await;
    let (answer_id, status, body) = read_answer(&mut tcp).await;
    assert_eq!((answer_id, status), (1, 401), "{body}");
    assert_eq!(body["error"], "unauthenticated", "{body}");
    // Then the word about the connection itself, and the close.
    let (answer_id, status, _) = read_answer(&mut tcp).await;
    assert_eq!((answer_id, status), (0, 401));
    closed_within(&mut tcp, Duration::from_secs(5)).await;

    // A client without a token is told so, as an API error (not a broken connection).
    let wire = WireClient::new(wire_of(&s));
    match wire.acquire(&req("wire/early", 1)).await {
        Err(ClientError::Api { body, .. }) => assert_eq!(body.error, ErrorCode::Unauthenticated),
        other => panic!("expected unauthenticated, got {other:?}"),
    }
    let http = admin_http(&s).await;
    assert_eq!(state(&http, "wire/early").await, LockState::Free);
    s.stop().await;
}

/// Empty, truncated, with another prefix, 10 KB long: each is answered 401 and the connection
/// closed, and nothing changes — no lock taken, no token made.
#[tokio::test]
async fn bad_tokens_over_the_wire_get_401_and_the_connection_closed_and_nothing_changes() {
    let s = auth_server().await;
    let (_, good) = token(&s, "ci", Role::Client, None, None, 1).await;
    let http = admin_http(&s).await;
    let tokens_before = s.engine.tokens().len();
    let bad = [
        String::new(),
        good[..good.len() - 1].to_string(),
        good.replacen("lsm_", "lsk_", 1),
        format!("lsm_{}", "A".repeat(10 * 1024)),
    ];
    for (i, secret) in bad.iter().enumerate() {
        let mut tcp = raw_conn(&s).await;
        send(
            &mut tcp,
            1,
            Op::Auth,
            &serde_json::json!({ "token": secret }),
        )
        .await;
        // Sent right behind it: never carried out.
        send(&mut tcp, 2, Op::Acquire, &req("wire/bad", 1)).await;
        let (answer_id, status, body) = read_answer(&mut tcp).await;
        assert_eq!((answer_id, status), (1, 401), "token {i}: {body}");
        assert_eq!(body["error"], "unauthenticated", "token {i}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.len() < 200,
            "token {i}: the message echoes it: {body}"
        );
        let (answer_id, status, _) = read_answer(&mut tcp).await;
        assert_eq!((answer_id, status), (0, 401), "token {i}");
        closed_within(&mut tcp, Duration::from_secs(5)).await;

        let wire = WireClient::new(wire_of(&s)).with_token(secret);
        match wire.acquire(&req("wire/bad", 2)).await {
            Err(ClientError::Api { body, .. }) => {
                assert_eq!(body.error, ErrorCode::Unauthenticated, "token {i}")
            }
            other => panic!("token {i}: expected unauthenticated, got {other:?}"),
        }
    }
    assert_eq!(state(&http, "wire/bad").await, LockState::Free);
    assert_eq!(s.engine.tokens().len(), tokens_before);
    s.stop().await;
}

#[tokio::test]
async fn a_node_token_cannot_acquire_as_another_node_over_the_wire() {
    let s = auth_server().await;
    let (_, secret) = token(&s, "agent-7", Role::Node, Some("node-7"), None, 1).await;
    let http = admin_http(&s).await;
    let wire = WireClient::new(wire_of(&s)).with_token(&secret);
    let mut elsewhere = req("wire/node", 1);
    elsewhere.owner.node = "node-8".into();
    match wire.acquire(&elsewhere).await {
        Err(ClientError::Api { body, .. }) => {
            assert_eq!(body.error, ErrorCode::Forbidden);
            assert!(body.message.contains("node-7"), "{}", body.message);
            assert!(body.message.contains("node-8"), "{}", body.message);
        }
        other => panic!("expected forbidden, got {other:?}"),
    }
    assert_eq!(state(&http, "wire/node").await, LockState::Free);
    // As its own node it may; the connection is still open and authenticated.
    let lease = wire.acquire(&req("wire/node", 1)).await.expect("own node");
    assert_eq!(lease.resource, "wire/node");
    s.stop().await;
}

/// Revoking a token closes its wire connections within a second: a connection with an acquire
/// waiting in a queue has it answered 401 and withdrawn (it is never granted), an idle one is
/// sent the 401 under id 0 and closed, and the client's next call is refused.
#[tokio::test]
async fn revoking_a_token_closes_its_wire_connections_within_a_second_and_withdraws_their_waits() {
    let s = auth_server().await;
    let http = admin_http(&s).await;
    let (_, admin) = token(&s, "holder", Role::Admin, None, None, 2).await;
    let (id, secret) = token(&s, "ci", Role::Client, None, None, 1).await;
    let holder = WireClient::new(wire_of(&s)).with_token(&admin);
    let held = holder.acquire(&req("wire/revoke", 1)).await.expect("held");

    let waiter = WireClient::new(wire_of(&s)).with_token(&secret);
    let mut waiting = req("wire/revoke", 2);
    waiting.wait_ms = Some(30_000);
    let wait = tokio::spawn({
        let waiter = waiter.clone();
        async move {
            let outcome = waiter.acquire(&waiting).await;
            (outcome, Instant::now())
        }
    });
    let mut idle = raw_conn(&s).await;
    send(
        &mut idle,
        1,
        Op::Auth,
        &serde_json::json!({ "token": secret }),
    )
    .await;
    assert_eq!(read_answer(&mut idle).await.1, 200);
    for _ in 0..200 {
        if !http
            .lock("wire/revoke")
            .await
            .expect("view")
            .lock
            .waiters
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let revoked_at = Instant::now();
    http.revoke_token(&id).await.expect("revoke");
    let (outcome, answered_at) = wait.await.expect("waiter task");
    match outcome {
        Err(ClientError::Api { body, .. }) => {
            assert_eq!(body.error, ErrorCode::Unauthenticated);
            assert!(body.message.contains("revoked"), "{}", body.message);
        }
        other => panic!("expected unauthenticated, got {other:?}"),
    }
    assert!(
        answered_at.duration_since(revoked_at) < CLOSED_WITHIN,
        "answered {:?} after the revocation",
        answered_at.duration_since(revoked_at)
    );
    let (answer_id, status, body) = read_answer(&mut idle).await;
    assert_eq!((answer_id, status), (0, 401), "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("revoked"),
        "{body}"
    );
    closed_within(&mut idle, CLOSED_WITHIN).await;

    // The next call reconnects and is refused.
    match waiter.check_fence("wire/revoke", held.token).await {
        Err(ClientError::Api { body, .. }) => assert_eq!(body.error, ErrorCode::Unauthenticated),
        other => panic!("expected unauthenticated, got {other:?}"),
    }
    // The wait was withdrawn: released, the lock goes to nobody.
    let view = http.lock("wire/revoke").await.expect("view").lock;
    assert!(view.waiters.is_empty(), "{view:?}");
    holder
        .release(held.lease, Some(held.token))
        .await
        .expect("release");
    assert_eq!(state(&http, "wire/revoke").await, LockState::Free);
    s.stop().await;
}

/// A token that expires closes its connection within about a second of its expiry (the server
/// looks once a second), on the server's clock.
#[tokio::test]
async fn an_expired_token_closes_its_wire_connection() {
    let clock = Arc::new(ManualClock::new());
    let virtual_time = on_virtual_time(&clock);
    let s = TestServer::start_tweaked(|c| {
        virtual_time(c);
        c.auth = AuthMode::On;
        c.wire_listen = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await;
    let (_, secret) = token(&s, "short", Role::Client, None, Some(60_000), 1).await;
    let mut tcp = raw_conn(&s).await;
    send(
        &mut tcp,
        1,
        Op::Auth,
        &serde_json::json!({ "token": secret }),
    )
    .await;
    assert_eq!(read_answer(&mut tcp).await.1, 200);
    send(&mut tcp, 2, Op::CheckFence, &check("wire/expiry")).await;
    assert_eq!(read_answer(&mut tcp).await.0, 2);

    clock.advance(Duration::from_secs(61));
    let expired_at = Instant::now();
    let (answer_id, status, body) =
        tokio::time::timeout(Duration::from_secs(5), read_answer(&mut tcp))
            .await
            .expect("the 401, within a few seconds");
    assert_eq!((answer_id, status), (0, 401), "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("expired"),
        "{body}"
    );
    assert!(
        expired_at.elapsed() < CLOSED_WITHIN,
        "{:?}",
        expired_at.elapsed()
    );
    closed_within(&mut tcp, Duration::from_secs(5)).await;
    s.stop().await;
}

#[tokio::test]
async fn with_auth_off_no_auth_frame_is_needed_and_one_is_answered_and_changes_nothing() {
    let s =
        TestServer::start_tweaked(|c| c.wire_listen = Some("127.0.0.1:0".parse().expect("addr")))
            .await;
    let mut tcp = raw_conn(&s).await;
    send(
        &mut tcp,
        1,
        Op::Auth,
        &serde_json::json!({ "token": "lsm_whatever" }),
    )
    .await;
    let (answer_id, status, body) = read_answer(&mut tcp).await;
    assert_eq!((answer_id, status), (1, 200), "{body}");
    assert_eq!(body["principal"]["name"], "anonymous", "{body}");
    send(&mut tcp, 2, Op::Acquire, &req("wire/off", 1)).await;
    assert_eq!(read_answer(&mut tcp).await.1, 200);

    let wire = WireClient::new(wire_of(&s));
    wire.acquire(&req("wire/off-typed", 2))
        .await
        .expect("no token needed");
    let with_one = WireClient::new(wire_of(&s)).with_token("lsm_ignored");
    with_one
        .acquire(&req("wire/off-typed-2", 3))
        .await
        .expect("a token is ignored");
    s.stop().await;
}
