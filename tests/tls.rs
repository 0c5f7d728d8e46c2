//! TLS end to end (issue 17): the real `locksmith server` with `--tls-cert`/`--tls-key` (and
//! `--tls-client-ca`), the real CLI with `https://`, `--ca-file`, `--cert`, `--key`, and
//! certificates made in the test. In cluster mode: etcd over TLS with a client certificate,
//! Locksmith's listeners over TLS, and a follower forwarding to the leader's `https://` URL.

mod common;

use std::path::Path;

use common::{ServerProc, code, describe, one_error_line, stdout};
use locksmith_etcd::testing::{CertFiles, TestPki};

/// A server whose listeners speak TLS with a certificate of `pki` (mutual TLS with
/// `client_ca`), in a fresh directory.
fn tls_server(pki: &TestPki, client_ca: Option<&Path>) -> (tempfile::TempDir, ServerProc) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = pki.server();
    let mut extra = vec![
        "--tls-cert".to_owned(),
        path(&cert.cert),
        "--tls-key".to_owned(),
        path(&cert.key),
        "--probe-interval".to_owned(),
        "0s".to_owned(),
    ];
    if let Some(ca) = client_ca {
        extra.extend(["--tls-client-ca".to_owned(), path(ca)]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let server = ServerProc::start_with(&dir.path().join("data"), &extra);
    (dir, server)
}

fn path(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

/// `--ca-file CA` and, with `cert`, `--cert`/`--key`, then `args`.
fn with_tls(pki: &TestPki, cert: Option<&CertFiles>, args: &[&str]) -> Vec<String> {
    let mut all = vec!["--ca-file".to_owned(), path(pki.ca_file())];
    if let Some(cert) = cert {
        all.extend([
            "--cert".to_owned(),
            path(&cert.cert),
            "--key".to_owned(),
            path(&cert.key),
        ]);
    }
    all.extend(args.iter().map(|&a| a.to_owned()));
    all
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The server announces an `https://` URL; the CLI reaches it with `--ca-file` (or
/// `LOCKSMITH_CA_FILE`), and without it exits 5 with one line naming the unknown issuer and
/// `--ca-file`.
#[test]
fn the_cli_speaks_https_with_ca_file_and_names_the_unknown_issuer_without_it() {
    let pki = TestPki::new("cli test CA");
    let (_dir, server) = tls_server(&pki, None);
    assert!(
        server.url().starts_with("https://127.0.0.1:"),
        "{}",
        server.url()
    );

    let args = with_tls(&pki, None, &["acquire", "tls/cli", "--ttl", "30s"]);
    let out = server.cli(&strs(&args));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let out = server.cli(&strs(&with_tls(
        &pki,
        None,
        &["locks", "tls/cli", "-o", "state"],
    )));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(stdout(&out).contains("HOT"), "{}", describe(&out));

    let mut by_env = server.command(&["status"]);
    by_env.env("LOCKSMITH_CA_FILE", pki.ca_file());
    let out = common::output_within(by_env, common::CALL_TIMEOUT);
    // ALL CLEAR, or problems of the server's own (exit 6): either way it was reached.
    assert!(matches!(code(&out), 0 | 6), "{}", describe(&out));

    let out = server.cli(&["locks"]);
    assert_eq!(code(&out), 5, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(line.contains("unknown issuer"), "{line}");
    assert!(line.contains("--ca-file"), "{line}");
    assert!(!line.contains("start it with"), "{line}");
}

/// A CA file that cannot be read is refused before any call, naming the file (exit 1); a
/// plain `http://` URL to the TLS server gets the server's answer to use `https://`.
#[test]
fn a_bad_ca_file_or_a_plain_url_is_one_clear_line() {
    let pki = TestPki::new("cli test CA");
    let (dir, server) = tls_server(&pki, None);
    let missing = dir.path().join("no-such-ca.pem");
    let out = server.cli(&["--ca-file", &path(&missing), "locks"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(line.contains("no-such-ca.pem"), "{line}");

    let plain = server.url().replacen("https://", "http://", 1);
    let out = common::locksmith(&["--server", &plain, "locks"]);
    assert_ne!(code(&out), 0, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(line.contains("https://"), "{line}");
}

/// Mutual TLS through the CLI: without `--cert` the server refuses the handshake (exit 5,
/// naming `--cert`); with a certificate naming node-a, `--node node-a` acquires and
/// `--node node-b` is FORBIDDEN (exit 1) — the certificate, not the flag, says who you are.
#[test]
fn with_mutual_tls_the_certificate_decides_which_node_the_cli_acts_as() {
    let pki = TestPki::new("fleet CA");
    let (_dir, server) = tls_server(&pki, Some(pki.ca_file()));

    let out = server.cli(&strs(&with_tls(&pki, None, &["locks"])));
    assert_eq!(code(&out), 5, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(line.contains("--cert"), "{line}");

    let node_a = pki.client("node-a");
    let as_a = with_tls(
        &pki,
        Some(&node_a),
        &["--node", "node-a", "acquire", "tls/mutual", "--ttl", "30s"],
    );
    let out = server.cli(&strs(&as_a));
    assert_eq!(code(&out), 0, "{}", describe(&out));

    let as_b = with_tls(
        &pki,
        Some(&node_a),
        &["--node", "node-b", "acquire", "tls/other", "--ttl", "30s"],
    );
    let out = server.cli(&strs(&as_b));
    // Denied (7): the certificate binds the admin token's principal to node-a.
    assert_eq!(code(&out), 7, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(line.contains("FORBIDDEN"), "{line}");
    assert!(line.contains("\"node-a\""), "{line}");
    assert!(line.contains("\"node-b\""), "{line}");
}

/// `--tls-cert` without `--tls-key` is a usage error; a key that is not the certificate's
/// stops the start with one line naming the files.
#[test]
fn tls_flags_that_do_not_fit_refuse_the_start() {
    let pki = TestPki::new("server CA");
    let cert = pki.server();
    let other = pki.server();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = path(&dir.path().join("data"));
    let out = common::locksmith(&["server", "--data", &data, "--tls-cert", &path(&cert.cert)]);
    assert_eq!(code(&out), 2, "{}", describe(&out));

    let out = common::locksmith(&[
        "server",
        "--data",
        &data,
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &path(&cert.cert),
        "--tls-key",
        &path(&other.key),
    ]);
    assert_eq!(code(&out), 5, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(line.contains("--tls-key"), "{line}");
}

/// Cluster mode over TLS end to end: etcd serves only TLS and requires a client certificate
/// (`--etcd-ca-file`, `--etcd-cert`, `--etcd-key`); the Locksmith servers listen with
/// `--tls-cert`; a follower forwards to the leader's `https://` URL, trusting `--ca-file`.
#[cfg(feature = "etcd")]
#[test]
fn cluster_mode_reaches_etcd_over_tls_and_forwards_to_the_leader_over_https() {
    use locksmith_etcd::testing::{EtcdCluster, EtcdServerTls};
    use std::time::{Duration, Instant};

    let pki = TestPki::new("cluster CA");
    let etcd_cert = pki.server();
    let etcd = EtcdCluster::start_tls(
        1,
        EtcdServerTls {
            cert: etcd_cert.cert,
            key: etcd_cert.key,
            client_ca: pki.ca_file().to_path_buf(),
        },
    );
    let etcd_client = pki.client("locksmith-server");
    let listener = pki.server();
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = [
        "--etcd".to_owned(),
        etcd.endpoints().join(","),
        "--etcd-ca-file".to_owned(),
        path(pki.ca_file()),
        "--etcd-cert".to_owned(),
        path(&etcd_client.cert),
        "--etcd-key".to_owned(),
        path(&etcd_client.key),
        "--tls-cert".to_owned(),
        path(&listener.cert),
        "--tls-key".to_owned(),
        path(&listener.key),
        "--ca-file".to_owned(),
        path(pki.ca_file()),
        "--election-ttl".to_owned(),
        "2s".to_owned(),
        "--probe-interval".to_owned(),
        "0s".to_owned(),
    ];
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let servers: Vec<ServerProc> = (0..2)
        .map(|i| ServerProc::start_with(&dir.path().join(format!("server{i}")), &extra))
        .collect();
    for s in &servers {
        assert!(s.url().starts_with("https://"), "{}", s.url());
    }

    // The leader, once elected over TLS to etcd, writes the admin token in its own data
    // directory (cluster mode: one token for the cluster); every server takes it.
    let admin = || {
        servers
            .iter()
            .find_map(|s| s.admin_token())
            .filter(|t| !t.is_empty())
    };
    let role = |s: &ServerProc| {
        let Some(admin) = admin() else {
            return false;
        };
        let out = s.cli_as(&admin, &strs(&with_tls(&pki, None, &["status", "--json"])));
        code(&out) == 0 || code(&out) == 6
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !servers.iter().all(role) {
        assert!(
            Instant::now() < deadline,
            "the cluster did not serve over TLS; logs:\n{}\n{}",
            servers[0].log(),
            servers[1].log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Through both servers — one of them a follower, which forwards over https.
    for (i, s) in servers.iter().enumerate() {
        let resource = format!("tls/cluster-{i}");
        let admin = admin().expect("the leader's admin token");
        let out = s.cli_as(
            &admin,
            &strs(&with_tls(
                &pki,
                None,
                &["acquire", &resource, "--ttl", "30s"],
            )),
        );
        assert_eq!(code(&out), 0, "{}\nlog:\n{}", describe(&out), s.log());
    }
}
