//! The connection cap (`--max-connections`) of both listeners, against a real server on
//! 127.0.0.1:0: N connections are served, the N+1st is answered `too_many_connections` (503)
//! and closed, and once one of the N closes a new one is served again.

use std::time::{Duration, Instant};

use locksmith_api::frame::{self, PREAMBLE};
use locksmith_client::{ClientError, WireClient};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

use common::TestServer;

const CAP: usize = 3;

/// A server whose listeners (HTTP and wire) each serve at most [`CAP`] connections.
async fn capped() -> TestServer {
    TestServer::start_tweaked(|c| {
        c.wire_listen = Some("127.0.0.1:0".parse().expect("addr"));
        c.max_connections = CAP;
    })
    .await
}

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: locksmith\r\n\r\n";

/// Sends `GET /healthz` on `tcp` (kept alive) and reads the response's head and body.
async fn health_on(tcp: &mut TcpStream) -> String {
    tcp.write_all(HEALTH).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // The body is JSON: complete once its braces balance.
    loop {
        let n = tcp.read(&mut buf).await.expect("read");
        assert!(
            n > 0,
            "closed mid-response: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((_, body)) = text.split_once("\r\n\r\n") {
            if serde_json::from_str::<Value>(body).is_ok() {
                return text.into_owned();
            }
        }
    }
}

/// Sends `GET /healthz` on a new connection and reads until the server closes it: the whole
/// exchange as the client saw it.
async fn one_shot(addr: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(HEALTH).await.expect("write");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got))
        .await
        .expect("the server closes a refused connection");
    String::from_utf8_lossy(&got).into_owned()
}

/// Bug pinned (issue 16, item 6): the HTTP listener took every connection it was offered, so
/// a flood of clients could take every descriptor the server had. Past `--max-connections`
/// a new connection now gets a 503 whose body is the JSON error `too_many_connections`, and is
/// closed; a connection that ends makes room for the next.
#[tokio::test]
async fn http_refuses_the_connection_past_its_cap_with_a_json_503_and_serves_again_after() {
    let s = capped().await;
    let http = s.addr();
    // CAP connections, each answered once, so each is surely accepted and counted.
    let mut open = Vec::new();
    for _ in 0..CAP {
        let mut tcp = TcpStream::connect(http).await.expect("connect");
        let answer = health_on(&mut tcp).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        open.push(tcp);
    }

    let refused = one_shot(http).await;
    assert!(
        refused.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{refused}"
    );
    assert!(refused.contains("connection: close"), "{refused}");
    let (_, body) = refused.split_once("\r\n\r\n").expect("a head and a body");
    let body: Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(body["error"], "too_many_connections", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("{CAP} HTTP connections")),
        "{message}"
    );
    // The served connections go on being served.
    let answer = health_on(&mut open[0]).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // One closes: once the server has seen it go, a new connection is served.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = one_shot_keepalive(http).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(
            Instant::now() < deadline,
            "no room after a connection closed"
        );
        tokio::task::yield_now().await;
    }
    drop(open);
    s.stop().await;
}

/// Like [`one_shot`], but reads only the first response (a served connection stays open).
async fn one_shot_keepalive(addr: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(HEALTH).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tcp.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((_, body)) = text.split_once("\r\n\r\n")
            && serde_json::from_str::<Value>(body).is_ok()
        {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Bug pinned (issue 16, item 6), the wire protocol's listener: past `--max-connections` a new
/// connection is sent the preamble and then, under request id 0, an error frame
/// `too_many_connections` (503), and is closed. A `WireClient` reports that error; the served
/// connections are unaffected.
#[tokio::test]
async fn the_wire_protocol_refuses_the_connection_past_its_cap_with_an_error_frame() {
    let s = capped().await;
    let wire = s.wire.clone().expect("wire listener");
    // A connect completes the preamble exchange: the server has accepted the connection.
    let mut served = Vec::new();
    for _ in 0..CAP {
        let client = WireClient::new(&wire);
        client.connect().await.expect("served");
        served.push(client);
    }

    let mut tcp = TcpStream::connect(&wire).await.expect("connect");
    tcp.write_all(PREAMBLE).await.expect("preamble");
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got))
        .await
        .expect("the server closes a refused connection")
        .expect("read");
    assert!(got.starts_with(PREAMBLE), "{got:?}");
    let (answer, len) = frame::decode(&got[PREAMBLE.len()..])
        .expect("a frame")
        .expect("a whole frame");
    assert_eq!(PREAMBLE.len() + len, got.len(), "one frame, then the close");
    assert_eq!((answer.id, answer.code), (0, 503));
    let body: Value = serde_json::from_slice(answer.body).expect("JSON");
    assert_eq!(body["error"], "too_many_connections", "{body}");

    // A client meeting the cap says why.
    let refused = WireClient::new(&wire);
    let (resource, token) = ("wire/cap", locksmith_core::FenceToken(1));
    match refused.check_fence(resource, token).await {
        Err(ClientError::Transport { reason, .. }) => {
            assert!(reason.starts_with("too_many_connections: "), "{reason}");
        }
        other => panic!("expected the cap's error, got {other:?}"),
    }
    // The served connections are still served (a fence check on a free resource is refused
    // by the table, not by the listener).
    match served[0].check_fence(resource, token).await {
        Err(ClientError::Api { body, .. }) => {
            assert_eq!(body.error, locksmith_api::ErrorCode::StaleToken)
        }
        other => panic!("expected stale_token, got {other:?}"),
    }
    drop(served);
    s.stop().await;
}
