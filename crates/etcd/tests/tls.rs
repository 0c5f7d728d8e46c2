//! `EtcdStore` and `connect` over TLS, against a real etcd that serves clients only over TLS
//! and requires a client certificate (`--client-cert-auth`), with certificates made in the
//! test: the store opens and commits with the CA and a client certificate, and refuses to go
//! on without them.

use std::sync::OnceLock;
use std::time::Duration;

use locksmith_core::{FenceToken, LeaseId, LeaseRecord, Mutation, Owner};
use locksmith_etcd::testing::{EtcdCluster, EtcdServerTls, TEST_MAX_TXN_OPS, TestPki};
use locksmith_etcd::{EtcdOptions, EtcdStore, EtcdTls, connect};
use locksmith_store::{Store, StoreError};

/// The CA that signs etcd's certificate and the clients', and the cluster.
fn etcd() -> &'static (TestPki, EtcdCluster) {
    static ETCD: OnceLock<(TestPki, EtcdCluster)> = OnceLock::new();
    ETCD.get_or_init(|| {
        let pki = TestPki::new("locksmith etcd test CA");
        let server = pki.server();
        let cluster = EtcdCluster::start_tls(
            1,
            EtcdServerTls {
                cert: server.cert,
                key: server.key,
                client_ca: pki.ca_file().to_path_buf(),
            },
        );
        (pki, cluster)
    })
}

/// Options with `tls`; a short retry, so that a refusal is seen quickly.
fn options(tls: EtcdTls) -> EtcdOptions {
    EtcdOptions {
        max_txn_ops: TEST_MAX_TXN_OPS,
        retry_for: Duration::from_secs(2),
        tls: Some(tls),
        ..EtcdOptions::default()
    }
}

/// The CA and a client certificate from the test CA.
fn trusted() -> EtcdTls {
    let (pki, _) = etcd();
    let client = pki.client("locksmith-server");
    EtcdTls {
        ca_file: Some(pki.ca_file().to_path_buf()),
        cert: Some(client.cert),
        key: Some(client.key),
    }
}

fn lease(id: u64) -> LeaseRecord {
    LeaseRecord {
        lease: LeaseId(id),
        resource: format!("tls/slot-{id}"),
        owner: Owner {
            node: "node-7".to_owned(),
            pid: 4121,
            start_time: 987_654,
            boot_id: "0b2c5d1e-8f7a-4c3b-9e2d-1a0f6b5c4d3e".to_owned(),
            user: "orchestrator".to_owned(),
            purpose: format!("job {id}"),
            pid_ns: None,
        },
        token: FenceToken(id),
        ttl_ms: 30_000,
        slots: 1,
        granted_at_ms: 1_700_000_000_000,
        lock_delay_ms: 0,
    }
}

/// The point of `--etcd-ca-file`, `--etcd-cert`, `--etcd-key`: a store reaches an etcd that
/// speaks only TLS and checks client certificates, and what it commits is there when it is
/// opened again.
#[test]
fn a_store_opens_and_commits_over_tls_with_a_client_certificate() {
    let (_, cluster) = etcd();
    let endpoints = cluster.endpoints();
    assert!(endpoints[0].starts_with("https://"), "{endpoints:?}");
    let mut store =
        EtcdStore::open_with(&endpoints, "/t/tls/commit/", None, options(trusted())).expect("open");
    store.load().expect("load over TLS");
    store
        .commit(&[Mutation::FenceHighWater(7), Mutation::PutLease(lease(7))])
        .expect("commit over TLS");
    drop(store);
    let mut again = EtcdStore::open_with(&endpoints, "/t/tls/commit/", None, options(trusted()))
        .expect("reopen");
    let snapshot = again.load().expect("load again");
    assert_eq!(snapshot.leases.len(), 1);
    assert_eq!(snapshot.fence_high_water, 7);
}

/// Without the CA the client does not trust etcd's certificate (a test CA is not among the
/// system's roots), and without a client certificate etcd does not take the client: either
/// way nothing is read or written, and the error says it was TLS.
#[test]
fn without_the_ca_or_a_client_certificate_the_store_reaches_nothing() {
    let (pki, cluster) = etcd();
    let endpoints = cluster.endpoints();
    let client = pki.client("locksmith-server");
    let no_ca = EtcdTls {
        ca_file: None,
        cert: Some(client.cert.clone()),
        key: Some(client.key.clone()),
    };
    let no_cert = EtcdTls {
        ca_file: Some(pki.ca_file().to_path_buf()),
        cert: None,
        key: None,
    };
    for (case, tls) in [("no CA", no_ca), ("no client certificate", no_cert)] {
        let mut store = EtcdStore::open_with(&endpoints, "/t/tls/refused/", None, options(tls))
            .expect("open does not contact etcd");
        match store.load() {
            // "invalid peer certificate: UnknownIssuer", "received fatal alert: BadCertificate".
            // Under TLS 1.3 the client's handshake is done before the server checks its
            // certificate, so the server's refusal of a missing client certificate reaches the
            // client as whatever the closed connection looks like then — the alert, "operation
            // was canceled", a broken pipe: reached nothing all the same. Without the CA, the
            // client itself refuses the server's certificate and says so.
            Err(StoreError::Io(reason)) => {
                if case == "no CA" {
                    assert!(
                        reason.to_lowercase().contains("certificate"),
                        "{case}: {reason}"
                    );
                }
            }
            other => panic!("{case}: etcd over TLS was reached: {:?}", other.map(|_| ())),
        }
    }
}

/// TLS files with plain `http://` endpoints are refused before anything is sent: the operator
/// meant TLS, and would otherwise get plain text.
#[tokio::test]
async fn tls_files_with_plain_endpoints_are_refused() {
    let plain = vec!["http://127.0.0.1:2379".to_owned()];
    let err = EtcdStore::open_with(&plain, "/t/", None, options(trusted()))
        .expect_err("TLS files for http://");
    assert!(err.to_string().contains("not https://"), "{err}");
    match connect(&plain, Duration::from_secs(1), Some(&trusted())).await {
        Err(err) => assert!(err.to_string().contains("not https://"), "{err}"),
        Ok(_) => panic!("TLS files for http:// endpoints were taken"),
    }
}
