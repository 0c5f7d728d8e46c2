//! TLS and mutual TLS (issue 17), on a real server on 127.0.0.1:0 with certificates made in
//! the test: HTTP and the wire protocol over TLS, trusted through the CA and refused without
//! it; a client certificate required and its node bound; plain clients answered, not hung;
//! a handshake bounded by the header timeout.

use std::time::{Duration, Instant};

mod common;

use common::{TestServer, req};
use locksmith_client::api::{ErrorCode, LivenessReport};
use locksmith_client::{Client, ClientError, TlsOptions, WireClient};
use locksmith_core::Owner;
use locksmith_etcd::testing::{CertFiles, TestPki};
use locksmith_server::ServerConfig;
use locksmith_server::tls::TlsConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a refused or answered connection may take to end: far more than it needs.
const PROMPT: Duration = Duration::from_secs(5);

/// A server whose listeners (HTTP and wire) speak TLS with a certificate of `pki`, requiring
/// client certificates of `client_ca` when given.
async fn tls_server(pki: &TestPki, client_ca: Option<&TestPki>) -> TestServer {
    let cert = pki.server();
    let client_ca = client_ca.map(|ca| ca.ca_file().to_path_buf());
    TestServer::start_tweaked(move |c: &mut ServerConfig| {
        c.wire_listen = Some("127.0.0.1:0".parse().expect("addr"));
        c.tls = Some(TlsConfig {
            cert: cert.cert,
            key: cert.key,
            client_ca,
        });
    })
    .await
}

/// Trusting `pki`'s CA, showing `cert` if given.
fn trusting(pki: &TestPki, cert: Option<&CertFiles>) -> TlsOptions {
    TlsOptions {
        ca_file: Some(pki.ca_file().to_path_buf()),
        cert: cert.map(|c| c.cert.clone()),
        key: cert.map(|c| c.key.clone()),
    }
}

fn owned_by(node: &str) -> Owner {
    Owner {
        node: node.to_owned(),
        ..common::owner(4242)
    }
}

fn report(node: &str) -> LivenessReport {
    LivenessReport {
        node: node.to_owned(),
        boot_id: format!("boot-of-{node}"),
        pid_ns: None,
        reported_by: format!("agent@{node}"),
        dead: Vec::new(),
    }
}

/// The reason of a TLS failure, or a panic naming what came instead.
fn tls_reason<T: std::fmt::Debug>(result: Result<T, ClientError>) -> String {
    match result {
        Err(ClientError::Tls { reason, .. }) => reason,
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}

/// HTTP over TLS: an `https://` server answers a client that trusts its CA, and a client that
/// does not is told the certificate's issuer is unknown and to pass `--ca-file`.
#[tokio::test]
async fn https_works_with_the_ca_and_names_the_unknown_issuer_without_it() {
    let pki = TestPki::new("server CA");
    let server = tls_server(&pki, None).await;
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );

    let trusted = Client::with_tls(&server.url, &trusting(&pki, None)).expect("client");
    let health = trusted.health().await.expect("health over TLS");
    assert_eq!(health.status, locksmith_client::api::HealthStatus::Ok);
    let lease = trusted.acquire(&req("tls/http", 1)).await.expect("acquire");
    trusted
        .release(lease.lease, Some(lease.token))
        .await
        .expect("release");

    // The system's roots do not include a CA made in this test.
    let why = tls_reason(Client::new(&server.url).expect("client").health().await);
    assert!(why.contains("unknown issuer"), "{why}");
    assert!(why.contains("--ca-file"), "{why}");

    // Another CA's certificate is no better.
    let other = TestPki::new("another CA");
    let why = tls_reason(
        Client::with_tls(&server.url, &trusting(&other, None))
            .expect("client")
            .health()
            .await,
    );
    assert!(why.contains("unknown issuer"), "{why}");
    server.stop().await;
}

/// The wire protocol over TLS: the same calls, in a TLS session; without the CA the connect
/// fails as a TLS failure that names the fix.
#[tokio::test]
async fn the_wire_protocol_works_over_tls() {
    let pki = TestPki::new("server CA");
    let server = tls_server(&pki, None).await;
    let addr = server.wire.clone().expect("wire listener");
    let wire = WireClient::with_tls(&addr, &trusting(&pki, None)).expect("wire client");
    let lease = wire.acquire(&req("tls/wire", 1)).await.expect("acquire");
    // Pipelined calls share the session.
    let renewals = (0..32).map(|_| wire.renew(lease.lease, Some(lease.token)));
    for renewed in futures_util::future::join_all(renewals).await {
        assert_eq!(renewed.expect("renew").lease, lease.lease);
    }
    wire.check_fence("tls/wire", lease.token)
        .await
        .expect("fence check");
    wire.release(lease.lease, Some(lease.token))
        .await
        .expect("release");

    let untrusting = WireClient::with_tls(&addr, &TlsOptions::default()).expect("wire client");
    let why = tls_reason(untrusting.connect().await);
    assert!(why.contains("unknown issuer"), "{why}");
    server.stop().await;
}

/// Mutual TLS: without a client certificate — or with one of another CA — the server takes no
/// request, over HTTP or the wire; with one, it serves.
#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate_of_its_ca() {
    let pki = TestPki::new("server and client CA");
    let server = tls_server(&pki, Some(&pki)).await;
    let addr = server.wire.clone().expect("wire listener");

    let anonymous = Client::with_tls(&server.url, &trusting(&pki, None)).expect("client");
    let why = tls_reason(anonymous.health().await);
    assert!(why.contains("--cert"), "{why}");
    let anonymous_wire = WireClient::with_tls(&addr, &trusting(&pki, None)).expect("wire");
    let why = tls_reason(anonymous_wire.connect().await);
    assert!(why.contains("--cert"), "{why}");

    let stranger_ca = TestPki::new("a stranger's CA");
    let stranger = stranger_ca.client("node-a");
    let why = tls_reason(
        Client::with_tls(&server.url, &trusting(&pki, Some(&stranger)))
            .expect("client")
            .health()
            .await,
    );
    assert!(why.contains("--cert"), "{why}");

    let node_a = pki.client("node-a");
    let known = Client::with_tls(&server.url, &trusting(&pki, Some(&node_a))).expect("client");
    known
        .health()
        .await
        .expect("health with a client certificate");
    server.stop().await;
}

/// The certificate's name binds the node: a client whose certificate names node-a acquires as
/// node-a and reports liveness for node-a, and is refused (403 `forbidden`, naming both nodes)
/// acquiring as node-b or reporting for node-b — over HTTP and over the wire.
#[tokio::test]
async fn a_certificate_naming_node_a_may_act_only_as_node_a() {
    let pki = TestPki::new("fleet CA");
    let server = tls_server(&pki, Some(&pki)).await;
    let node_a = pki.client("node-a");
    let http = Client::with_tls(&server.url, &trusting(&pki, Some(&node_a))).expect("client");
    let addr = server.wire.clone().expect("wire listener");
    let wire = WireClient::with_tls(&addr, &trusting(&pki, Some(&node_a))).expect("wire");

    let mut as_a = req("tls/bound", 1);
    as_a.owner = owned_by("node-a");
    let lease = http
        .acquire(&as_a)
        .await
        .expect("node-a acquires as node-a");
    http.release(lease.lease, Some(lease.token))
        .await
        .expect("release");
    let lease = wire
        .acquire(&as_a)
        .await
        .expect("node-a acquires as node-a");
    wire.release(lease.lease, Some(lease.token))
        .await
        .expect("release");
    http.report_liveness(&report("node-a"))
        .await
        .expect("node-a reports for node-a");

    let mut as_b = req("tls/bound", 2);
    as_b.owner = owned_by("node-b");
    for refused in [
        http.acquire(&as_b).await.map(drop),
        wire.acquire(&as_b).await.map(drop),
        http.report_liveness(&report("node-b")).await.map(drop),
    ] {
        let Err(ClientError::Api { status, body }) = refused else {
            panic!("node-a acted as node-b: {refused:?}");
        };
        assert_eq!(
            (status, body.error),
            (403, ErrorCode::Forbidden),
            "{body:?}"
        );
        assert!(body.message.contains("\"node-a\""), "{}", body.message);
        assert!(body.message.contains("\"node-b\""), "{}", body.message);
    }
    // Nothing was granted to node-b.
    let lock = http.lock("tls/bound").await.expect("lock");
    assert!(lock.lock.holders.is_empty(), "{lock:?}");
    server.stop().await;
}

/// A plain client against a TLS server gets a clear answer at once, not a hang: HTTP a `400`
/// saying to use `https://`, the wire protocol an error saying the port speaks only TLS.
#[tokio::test]
async fn a_plain_client_of_a_tls_server_is_told_to_use_tls_not_left_hanging() {
    let pki = TestPki::new("server CA");
    let server = tls_server(&pki, None).await;
    let started = Instant::now();
    let plain_url = server.url.replacen("https://", "http://", 1);
    let answer = Client::new(&plain_url).expect("client").health().await;
    let Err(ClientError::Api { status, body }) = answer else {
        panic!("a plain request to a TLS server: {answer:?}");
    };
    assert_eq!((status, body.error), (400, ErrorCode::InvalidRequest));
    assert!(body.message.contains("https://"), "{}", body.message);

    let addr = server.wire.clone().expect("wire listener");
    let plain_wire = WireClient::new(addr);
    let answer = plain_wire.acquire(&req("tls/plain", 1)).await;
    let Err(ClientError::Transport { reason, .. }) = answer else {
        panic!("a plain wire client of a TLS port: {answer:?}");
    };
    assert!(reason.contains("only TLS"), "{reason}");
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());

    // The server serves TLS clients as before.
    let trusted = Client::with_tls(&server.url, &trusting(&pki, None)).expect("client");
    trusted.health().await.expect("health");
    server.stop().await;
}

/// The header timeout bounds the handshake: a client that starts one and goes silent is closed
/// within it, and the server goes on serving.
#[tokio::test]
async fn a_stalled_handshake_is_closed_within_the_header_timeout() {
    let pki = TestPki::new("server CA");
    let cert = pki.server();
    let server = TestServer::start_tweaked(move |c: &mut ServerConfig| {
        c.header_timeout = Duration::from_millis(300);
        c.tls = Some(TlsConfig {
            cert: cert.cert,
            key: cert.key,
            client_ca: None,
        });
    })
    .await;
    let mut stalled = TcpStream::connect(server.addr()).await.expect("connect");
    // The first bytes of a TLS record header, then nothing.
    stalled.write_all(&[0x16, 0x03, 0x01]).await.expect("write");
    let started = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(PROMPT, stalled.read_to_end(&mut rest))
        .await
        .expect("closed, not left open")
        .ok();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        started.elapsed()
    );
    let trusted = Client::with_tls(&server.url, &trusting(&pki, None)).expect("client");
    trusted.health().await.expect("still serving");
    server.stop().await;
}

/// A certificate that cannot be used stops the start, naming the file, before the store is
/// touched.
#[tokio::test]
async fn a_bad_certificate_or_key_refuses_the_start_naming_the_file() {
    let pki = TestPki::new("server CA");
    let good = pki.server();
    let other = pki.server();
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.pem");
    let cases = [
        (missing.clone(), good.key.clone(), "missing.pem"),
        (good.key.clone(), good.key.clone(), "no PEM certificate"),
        // The key of another certificate.
        (good.cert.clone(), other.key.clone(), "--tls-key"),
    ];
    for (cert, key, says) in cases {
        let mut config = common::config(dir.path());
        config.tls = Some(TlsConfig {
            cert,
            key,
            client_ca: None,
        });
        match locksmith_server::Server::bind(config).await {
            Err(e) => assert!(e.to_string().contains(says), "{e} (wanted {says:?})"),
            Ok(_) => panic!("started with a bad TLS setting ({says})"),
        }
    }
    assert!(
        !dir.path().join("locksmith.redb").exists(),
        "the store was opened"
    );
}

/// The other way round: a TLS client of a plain server is told the server does not speak TLS,
/// over HTTP and the wire — not a bare "corrupt message".
#[tokio::test]
async fn a_tls_client_of_a_plain_server_is_told_it_does_not_speak_tls() {
    let pki = TestPki::new("client CA");
    let (server, _) = common::wire_server().await;
    let https = server.url.replacen("http://", "https://", 1);
    let why = tls_reason(
        Client::with_tls(&https, &trusting(&pki, None))
            .expect("client")
            .health()
            .await,
    );
    assert!(why.contains("did not answer in TLS"), "{why}");
    let addr = server.wire.clone().expect("wire listener");
    let wire = WireClient::with_tls(&addr, &trusting(&pki, None)).expect("wire");
    let why = tls_reason(wire.connect().await);
    assert!(why.contains("did not answer in TLS"), "{why}");
    server.stop().await;
}

/// Past `--max-connections`, a TLS listener's refusal comes inside a TLS session, so the
/// client reads `too_many_connections` where it reads its first answer — not a broken
/// handshake.
#[tokio::test]
async fn a_tls_connection_over_the_cap_reads_too_many_connections() {
    let pki = TestPki::new("server CA");
    let cert = pki.server();
    let server = TestServer::start_tweaked(move |c: &mut ServerConfig| {
        c.wire_listen = Some("127.0.0.1:0".parse().expect("addr"));
        c.max_connections = 1;
        c.tls = Some(TlsConfig {
            cert: cert.cert,
            key: cert.key,
            client_ca: None,
        });
    })
    .await;
    let addr = server.wire.clone().expect("wire listener");
    let first = WireClient::with_tls(&addr, &trusting(&pki, None)).expect("wire");
    first.connect().await.expect("the one connection");
    let second = WireClient::with_tls(&addr, &trusting(&pki, None)).expect("wire");
    let refused = second.acquire(&req("tls/cap", 1)).await;
    let Err(ClientError::Transport { reason, .. }) = refused else {
        panic!("a connection over the cap: {refused:?}");
    };
    assert!(reason.contains("too_many_connections"), "{reason}");

    let held = Client::with_tls(&server.url, &trusting(&pki, None)).expect("client");
    held.health().await.expect("the one HTTP connection");
    let over = Client::with_tls(&server.url, &trusting(&pki, None)).expect("client");
    let refused = over.health().await;
    let Err(ClientError::Api { status, body }) = refused else {
        panic!("an HTTP connection over the cap: {refused:?}");
    };
    assert_eq!((status, body.error), (503, ErrorCode::TooManyConnections));
    drop(first);
    server.stop().await;
}
