//! `EtcdStore` beyond the conformance suite — durability through the committer, the commit
//! marker, the leadership guard, batch limits — and the leader election, against a real etcd
//! shared by this test binary (each test under its own prefix).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use locksmith_core::{FenceToken, LeaseId, LeaseRecord, Mutation, Owner, Snapshot};
use locksmith_etcd::testing::{EtcdCluster, TEST_MAX_TXN_OPS};
use locksmith_etcd::{
    EtcdOptions, EtcdStore, Guard, boot_clock, campaign, connect, current_leader, leader_key,
    open_etcd,
};
use locksmith_store::{Store, StoreError};

fn cluster() -> &'static EtcdCluster {
    static CLUSTER: OnceLock<EtcdCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| EtcdCluster::start(1))
}

fn options() -> EtcdOptions {
    EtcdOptions {
        max_txn_ops: TEST_MAX_TXN_OPS,
        ..EtcdOptions::default()
    }
}

fn open(prefix: &str, guard: Option<Guard>) -> EtcdStore {
    EtcdStore::open_with(&cluster().endpoints(), prefix, guard, options()).expect("open")
}

fn lease(id: u64) -> LeaseRecord {
    LeaseRecord {
        lease: LeaseId(id),
        resource: format!("reboot/slot-{id}"),
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

fn grant(id: u64) -> Vec<Mutation> {
    vec![Mutation::FenceHighWater(id), Mutation::PutLease(lease(id))]
}

fn lease_ids(snapshot: &Snapshot) -> Vec<u64> {
    let mut ids: Vec<u64> = snapshot.leases.iter().map(|l| l.lease.0).collect();
    ids.sort_unstable();
    ids
}

async fn client() -> locksmith_etcd::etcd_client::Client {
    connect(&cluster().endpoints(), Duration::from_secs(5), None)
        .await
        .expect("connect")
}

#[test]
fn describe_names_the_endpoints_and_limits_follow_max_txn_ops() {
    let store = open("/t/describe/", None);
    assert_eq!(store.describe(), format!("etcd:{}", cluster().endpoint(0)));
    assert_eq!(store.prefix(), "/t/describe/");
    assert_eq!(store.max_batch_mutations(), Some(TEST_MAX_TXN_OPS - 4));
    let default = EtcdStore::open(&cluster().endpoints(), "/t/describe", None).expect("open");
    assert_eq!(default.prefix(), "/t/describe/", "a slash is appended");
    assert_eq!(default.max_batch_mutations(), Some(124));
    assert!(EtcdStore::open(&[], "/t/", None).is_err());
}

#[test]
fn an_unreachable_etcd_fails_load_with_io_not_a_panic() {
    // A port nothing listens on (taken, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let options = EtcdOptions {
        request_timeout: Duration::from_millis(300),
        retry_for: Duration::from_millis(600),
        ..options()
    };
    let mut store =
        EtcdStore::open_with(&[format!("http://127.0.0.1:{port}")], "/t/", None, options)
            .expect("open does not contact etcd");
    match store.load() {
        Err(StoreError::Io(reason)) => assert!(reason.contains("etcd"), "{reason}"),
        other => panic!("expected Io, got {other:?}"),
    }
}

/// Every acknowledged job of many concurrent ones is in a new store's load: the committer,
/// group commit and `EtcdStore` together.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_commits_survive_a_reopen() {
    let prefix = "/t/reopen/";
    let (snapshot, committer) =
        open_etcd(&cluster().endpoints(), prefix, None, options()).expect("open");
    assert_eq!(snapshot, Snapshot::default());
    let tasks: Vec<_> = (1..=200)
        .map(|id| {
            let committer = committer.clone();
            tokio::spawn(async move { committer.submit(grant(id)).wait().await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("commit");
    }
    let release: Vec<_> = (1..=200)
        .filter(|id| id % 2 == 1)
        .map(|id| Mutation::DeleteLease(LeaseId(id)))
        .collect();
    committer.submit(release).wait().await.expect("release");
    let stats = committer.stats();
    eprintln!(
        "200 concurrent grants + 1 release: {} etcd commits, mean {} µs",
        stats.batches,
        stats.total_commit_micros / stats.batches.max(1)
    );
    tokio::task::spawn_blocking(move || committer.join())
        .await
        .expect("join")
        .expect("clean close");

    let mut store = open(prefix, None);
    let snapshot = store.load().expect("load");
    assert_eq!(
        lease_ids(&snapshot),
        (1..=200).filter(|id| id % 2 == 0).collect::<Vec<_>>()
    );
    assert_eq!(snapshot.fence_high_water, 200);
}

/// Two stores on one prefix: the first to commit wins; the other's commits are refused with
/// `Failed` and write nothing (the commit marker), so a misconfigured second server cannot
/// corrupt the first one's state.
#[test]
fn a_second_writer_on_the_same_prefix_is_refused() {
    let prefix = "/t/two-writers/";
    let mut first = open(prefix, None);
    let mut second = open(prefix, None);
    first.load().expect("load");
    second.load().expect("load");
    first.commit(&grant(1)).expect("first writer");
    first.commit(&grant(2)).expect("first writer again");
    match second.commit(&grant(3)) {
        Err(StoreError::Failed(reason)) => {
            assert!(reason.contains("another writer"), "{reason}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    let snapshot = open(prefix, None).load().expect("load");
    assert_eq!(lease_ids(&snapshot), vec![1, 2]);
    assert_eq!(snapshot.fence_high_water, 2);
}

/// A store whose guard is stale — another contender has won since — cannot write a byte, and
/// cannot even load; the new leader's store writes normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_guard_fails_with_lost_leadership_and_writes_nothing() {
    let prefix = "/t/guard/";
    let client = client().await;
    let first = campaign(&client, prefix, "http://first", 5)
        .await
        .expect("first wins");
    let guard = first.guard();
    assert_eq!(guard.key, leader_key(prefix));

    let mut old = open(prefix, Some(guard.clone()));
    old.load().expect("load under a current guard");
    old.commit(&grant(1)).expect("commit under a current guard");

    first.resign().await.expect("resign");
    let second = campaign(&client, prefix, "http://second", 5)
        .await
        .expect("second wins");
    assert_ne!(second.create_revision, guard.create_revision);

    match old.commit(&grant(2)) {
        Err(StoreError::Failed(reason)) => assert!(reason.contains("lost leadership"), "{reason}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    match open(prefix, Some(guard)).load() {
        Err(StoreError::Failed(reason)) => assert!(reason.contains("lost leadership"), "{reason}"),
        other => panic!("expected Failed at load, got {other:?}"),
    }

    let mut new = open(prefix, Some(second.guard()));
    let snapshot = new.load().expect("load under the new guard");
    assert_eq!(
        lease_ids(&snapshot),
        vec![1],
        "the stale commit wrote nothing"
    );
    new.commit(&grant(3)).expect("the new leader writes");
    let snapshot = open(prefix, None).load().expect("load");
    assert_eq!(lease_ids(&snapshot), vec![1, 3]);
    second.resign().await.expect("resign");
}

/// One contender leads at a time; the next one wins as soon as the leader resigns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_contender_wins_when_the_leader_resigns() {
    let prefix = "/t/resign/";
    let client = client().await;
    assert_eq!(current_leader(&client, prefix).await.expect("read"), None);
    let first = campaign(&client, prefix, "http://first", 5)
        .await
        .expect("first wins");
    assert_eq!(
        current_leader(&client, prefix).await.expect("read"),
        Some("http://first".to_owned())
    );

    let contender = {
        let client = client.clone();
        tokio::spawn(async move { campaign(&client, prefix, "http://second", 5).await })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !contender.is_finished(),
        "nobody wins while the leader leads"
    );
    assert!(!first.is_lost());

    let resigned = Instant::now();
    first.resign().await.expect("resign");
    let second = tokio::time::timeout(Duration::from_secs(5), contender)
        .await
        .expect("the contender wins soon after the resignation")
        .expect("task")
        .expect("campaign");
    eprintln!("handover after resign: {:?}", resigned.elapsed());
    assert!(
        resigned.elapsed() < Duration::from_secs(2),
        "{:?}",
        resigned.elapsed()
    );
    assert_eq!(
        current_leader(&client, prefix).await.expect("read"),
        Some("http://second".to_owned())
    );
    second.resign().await.expect("resign");
    assert_eq!(current_leader(&client, prefix).await.expect("read"), None);
}

/// A leader that stops renewing (its process froze or died: here the keep-alive is dropped)
/// loses the key one TTL later, and the waiting contender wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_contender_wins_when_the_leader_lease_expires() {
    let prefix = "/t/expire/";
    let client = client().await;
    let first = campaign(&client, prefix, "http://first", 2)
        .await
        .expect("first wins");
    let contender = {
        let client = client.clone();
        tokio::spawn(async move { campaign(&client, prefix, "http://second", 2).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!contender.is_finished());

    let stopped = Instant::now();
    drop(first); // stops the keep-alive, does not revoke
    let second = tokio::time::timeout(Duration::from_secs(10), contender)
        .await
        .expect("the contender wins after the TTL")
        .expect("task")
        .expect("campaign");
    let waited = stopped.elapsed();
    eprintln!("handover after the leader stopped renewing: {waited:?}");
    assert!(
        waited >= Duration::from_millis(1_000),
        "won too early: {waited:?}"
    );
    assert_eq!(
        current_leader(&client, prefix).await.expect("read"),
        Some("http://second".to_owned())
    );
    second.resign().await.expect("resign");
}

/// `lost` flips when etcd drops the leader's lease (here: revoked behind its back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_flips_when_the_lease_is_gone() {
    let prefix = "/t/lost/";
    let mut client = client().await;
    let leader = campaign(&client, prefix, "http://leader", 3)
        .await
        .expect("wins");
    let mut lost = leader.lost.clone();
    assert!(!*lost.borrow());
    client.lease_revoke(leader.lease_id).await.expect("revoke");
    tokio::time::timeout(Duration::from_secs(5), lost.wait_for(|&lost| lost))
        .await
        .expect("lost flips within the TTL")
        .expect("the keep-alive task reports");
    assert!(leader.is_lost());
    assert_eq!(current_leader(&client, prefix).await.expect("read"), None);
}

/// The tenure — what a leader asks before every answer — is extended by each answered
/// keep-alive (so it outlasts the first TTL of a leader that keeps renewing), never reaches past
/// the last renewal's send time plus the TTL less the margin, and ends when `lost` flips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenure_is_extended_by_renewals_and_ends_when_lost_flips() {
    let prefix = "/t/tenure/";
    let mut client = client().await;
    let leader = campaign(&client, prefix, "http://leader", 2)
        .await
        .expect("wins");
    let tenure = leader.tenure.clone();
    assert!(tenure.holds());
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let left = tenure
        .left_at(boot_clock())
        .expect("renewals extended the tenure");
    assert!(
        left <= tenure.rule().ttl() - tenure.rule().margin(),
        "{left:?}"
    );

    let mut lost = leader.lost.clone();
    client.lease_revoke(leader.lease_id).await.expect("revoke");
    tokio::time::timeout(Duration::from_secs(5), lost.wait_for(|&lost| lost))
        .await
        .expect("lost flips")
        .expect("the keep-alive task reports");
    assert!(!tenure.holds(), "the tenure ends when lost flips");
}

/// With etcd's default `--max-txn-ops 128`: one oversized commit is refused by etcd, but the
/// committer — told the limit by `max_batch_mutations` — splits a large group of queued jobs
/// into transactions that fit, and every job lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_committer_fits_groups_into_etcds_default_txn_limit() {
    let strict = EtcdCluster::start_with_args(1, &["--max-txn-ops", "128"]);
    let endpoints = strict.endpoints();
    let defaults = EtcdOptions::default();
    assert_eq!(defaults.max_txn_ops, 128);

    let oversized: Vec<Mutation> = (1..=200).map(|id| Mutation::PutLease(lease(id))).collect();
    let refused = {
        let (endpoints, defaults) = (endpoints.clone(), defaults.clone());
        tokio::task::spawn_blocking(move || {
            let mut store = EtcdStore::open_with(&endpoints, "/t/big/", None, defaults)?;
            store.load()?;
            store.commit(&oversized)
        })
        .await
        .expect("task")
    };
    match refused {
        Err(StoreError::Io(reason)) => assert!(reason.contains("too many operations"), "{reason}"),
        other => panic!("etcd should refuse 200 operations in one txn, got {other:?}"),
    }

    let (_, committer) = open_etcd(&endpoints, "/t/split/", None, defaults.clone()).expect("open");
    // Submitted back to back, so they queue while earlier commits run and form large groups.
    let tickets: Vec<_> = (1..=400).map(|id| committer.submit(grant(id))).collect();
    for ticket in tickets {
        ticket.wait().await.expect("every job lands");
    }
    let stats = committer.stats();
    eprintln!(
        "400 jobs of 2 mutations under max-txn-ops 128: {} commits",
        stats.batches
    );
    assert_eq!(stats.jobs, 400);
    assert!(stats.batches >= 7, "at most 62 jobs fit one txn: {stats:?}");
    tokio::task::spawn_blocking(move || committer.join())
        .await
        .expect("join")
        .expect("clean close");

    let snapshot = tokio::task::spawn_blocking(move || {
        EtcdStore::open_with(&endpoints, "/t/split/", None, defaults)?.load()
    })
    .await
    .expect("task")
    .expect("load");
    assert_eq!(lease_ids(&snapshot), (1..=400).collect::<Vec<_>>());
    assert_eq!(snapshot.fence_high_water, 400);
}

/// The audit walk over many windows — dense runs, a long sparse stretch, a dense run below it
/// (which forces a too-wide window to narrow) — answers every query exactly as the contract's
/// model does, before and after retention trims the oldest records.
#[test]
fn audit_queries_across_many_windows_match_a_model() {
    use locksmith_core::AuditRecord;
    use locksmith_store::conformance::sample_audit;
    use locksmith_store::{AuditQuery, StoreOptions};

    let seqs: Vec<u64> = (1..=1_500)
        .chain((1..=200).map(|k| 1_500 + k * 997))
        .chain((1..=1_000).map(|k| 1_500 + 200 * 997 + k))
        .collect();
    let resources = ["a", "b", "c", "rare"];
    let mut log: Vec<AuditRecord> = seqs
        .iter()
        .map(|&seq| {
            let resource = if seq % 97 == 0 {
                "rare"
            } else {
                resources[(seq % 3) as usize]
            };
            sample_audit(seq, 1_000_000 + seq / 3, resource)
        })
        .collect();
    let prefix = "/t/windows/";
    let mut store = open(prefix, None);
    store.load().expect("load");
    for chunk in log.chunks(700) {
        let batch: Vec<_> = chunk.iter().cloned().map(Mutation::AppendAudit).collect();
        store.commit(&batch).expect("append");
    }

    let expected = |log: &[AuditRecord], q: &AuditQuery| -> Vec<u64> {
        let mut matching: Vec<u64> = log
            .iter()
            .filter(|r| q.resource.as_ref().is_none_or(|res| r.resource == *res))
            .filter(|r| q.since_ms.is_none_or(|since| r.at_ms >= since))
            .filter(|r| q.after_seq.is_none_or(|after| r.seq > after))
            .map(|r| r.seq)
            .collect();
        matching.sort_unstable();
        let skip = matching.len().saturating_sub(q.limit);
        matching.split_off(skip)
    };
    let check_all = |store: &mut EtcdStore, log: &[AuditRecord], pass: &str| {
        let top = log.iter().map(|r| r.seq).max().unwrap_or(0);
        for resource in [None, Some("rare"), Some("absent")] {
            for since in [None, Some(1_000_000 + 50_000)] {
                for after in [None, Some(1_000), Some(1_600), Some(150_000), Some(top - 5)] {
                    for limit in [1, 1_200, usize::MAX] {
                        let q = AuditQuery {
                            resource: resource.map(str::to_owned),
                            since_ms: since,
                            after_seq: after,
                            limit,
                        };
                        let got: Vec<u64> = store
                            .audit(&q)
                            .unwrap_or_else(|e| panic!("{pass}: {q:?}: {e}"))
                            .iter()
                            .map(|r| r.seq)
                            .collect();
                        assert!(
                            got == expected(log, &q),
                            "{pass}: {q:?}: got {} records",
                            got.len()
                        );
                    }
                }
            }
        }
    };
    let started = Instant::now();
    check_all(&mut store, &log, "full log");
    eprintln!(
        "90 queries over {} records: {:?}",
        log.len(),
        started.elapsed()
    );

    // Lower the retention: the oldest go, a bounded number per commit, until 3,000 are left.
    drop(store);
    let mut store = EtcdStore::open_with(
        &cluster().endpoints(),
        prefix,
        None,
        EtcdOptions {
            store: StoreOptions {
                audit_retention: 2_000,
                ..StoreOptions::default()
            },
            ..options()
        },
    )
    .expect("reopen");
    store.load().expect("load");
    let mut next = log.last().map_or(0, |r| r.seq) + 1;
    while log.len() > 2_000 {
        let record = sample_audit(next, 2_000_000 + next, "a");
        next += 1;
        store
            .commit(&[Mutation::AppendAudit(record.clone())])
            .expect("append");
        log.push(record);
        let drop = (log.len() - 2_000).min(1_025);
        log.drain(..drop);
    }
    check_all(&mut store, &log, "after retention");
    let mut reopened = open(prefix, None);
    assert_eq!(reopened.load().expect("load").audit_seq, next - 1);
    let all = reopened.audit(&AuditQuery::default()).expect("query");
    assert_eq!(all, log, "after reopen");
}

/// A domain's records are up to 16 MiB, and one etcd response at most 64 MiB: a scan whose page
/// would be larger than one response (here 8 × 9 MiB) is read in smaller pages instead of
/// failing, and returns every record whole, in key order.
#[test]
fn a_record_scan_larger_than_one_response_is_read_in_smaller_pages() {
    const MIB: usize = 1024 * 1024;
    let mut store = open("/records-large/", None);
    store.load().expect("load");
    for i in 0..8u8 {
        let value = vec![i; 9 * MIB];
        store
            .commit(&[Mutation::PutRecord {
                space: "configs".to_owned(),
                key: format!("big/{i}"),
                value,
            }])
            .expect("commit a 9 MiB record");
    }
    let found = store.records("configs", "big/", None, 100).expect("scan");
    assert_eq!(
        found.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        (0..8).map(|i| format!("big/{i}")).collect::<Vec<_>>()
    );
    for (i, (_, value)) in (0u8..).zip(&found) {
        assert!(
            value.len() == 9 * MIB && value.iter().all(|&b| b == i),
            "record {i}"
        );
    }
}

/// With etcd's default `--max-request-bytes` (1.5 MiB): 1 MiB config records queued together
/// are split into requests that fit — none is refused for its neighbours' size — and a 2 MiB
/// record, too large alone, is refused unwritten as `Invalid` without failing the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_committer_fits_large_records_into_etcds_default_request_size() {
    const MIB: usize = 1024 * 1024;
    let default_bytes = EtcdOptions::ETCD_DEFAULT_MAX_REQUEST_BYTES.to_string();
    let strict = EtcdCluster::start_with_args(1, &["--max-request-bytes", &default_bytes]);
    let endpoints = strict.endpoints();
    let config = |key: String, size: usize| {
        vec![Mutation::PutRecord {
            space: "configs".to_owned(),
            key,
            value: vec![b'c'; size],
        }]
    };
    let (_, committer) =
        open_etcd(&endpoints, "/t/records/", None, EtcdOptions::default()).expect("open");
    // Submitted back to back, so they queue while earlier commits run and form groups.
    let tickets: Vec<_> = (0..6)
        .map(|i| committer.submit(config(format!("app-{i}"), MIB)))
        .collect();
    for ticket in tickets {
        ticket.wait().await.expect("every 1 MiB record lands");
    }
    match committer
        .submit(config("huge".to_owned(), 2 * MIB))
        .wait()
        .await
    {
        Err(StoreError::Invalid(invalid)) => {
            assert!(invalid.reason.contains("max-request-bytes"), "{invalid}");
        }
        other => panic!("a 2 MiB record cannot fit; expected Invalid, got {other:?}"),
    }
    assert!(
        committer.failure().is_none(),
        "a refused record latches nothing"
    );
    committer
        .submit(config("after".to_owned(), 10))
        .wait()
        .await
        .expect("the store still takes writes");
    let keys: Vec<String> = committer
        .query_records("configs", "", None, 100)
        .wait()
        .await
        .expect("scan")
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(
        keys,
        [
            "after", "app-0", "app-1", "app-2", "app-3", "app-4", "app-5"
        ]
    );
    tokio::task::spawn_blocking(move || committer.join())
        .await
        .expect("join")
        .expect("clean close");
}
