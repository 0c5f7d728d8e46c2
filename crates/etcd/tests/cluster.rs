//! A three-member etcd cluster under the store: commits keep being acknowledged through the
//! committer while the etcd leader is killed with SIGKILL, and everything acknowledged survives
//! `kill -9` of every member and a restart.

use std::time::{Duration, Instant};

use locksmith_core::{AuditKind, AuditRecord, FenceToken, LeaseId, LeaseRecord, Mutation, Owner};
use locksmith_etcd::testing::{EtcdCluster, TEST_MAX_TXN_OPS};
use locksmith_etcd::{EtcdOptions, EtcdStore, connect, open_etcd};
use locksmith_store::{AuditQuery, Store};

fn options() -> EtcdOptions {
    EtcdOptions {
        max_txn_ops: TEST_MAX_TXN_OPS,
        ..EtcdOptions::default()
    }
}

fn grant(id: u64) -> Vec<Mutation> {
    let mut audit = AuditRecord::new(&format!("reboot/slot-{id}"), AuditKind::Granted);
    audit.seq = id;
    audit.at_ms = 1_700_000_000_000 + id;
    vec![
        Mutation::FenceHighWater(id),
        Mutation::PutLease(LeaseRecord {
            lease: LeaseId(id),
            resource: format!("reboot/slot-{id}"),
            owner: Owner {
                node: format!("node-{}", id % 5),
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
        }),
        Mutation::AppendAudit(audit),
    ]
}

/// The index of the member that currently leads the etcd cluster.
async fn etcd_leader(cluster: &EtcdCluster) -> usize {
    for i in 0..cluster.members() {
        let Ok(mut client) = connect(&[cluster.endpoint(i)], Duration::from_secs(2), None).await
        else {
            continue;
        };
        if let Ok(status) = client.status().await {
            let member = status.header().map(|h| h.member_id());
            if member == Some(status.leader()) {
                return i;
            }
        }
    }
    panic!("no etcd member reports itself leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commits_survive_a_killed_leader_and_a_full_restart() {
    let cluster = EtcdCluster::start(3);
    let endpoints = cluster.endpoints();
    let prefix = "/cluster/";
    let (snapshot, committer) = open_etcd(&endpoints, prefix, None, options()).expect("open");
    assert!(snapshot.leases.is_empty());

    let mut next = 1;
    let mut submit_round = |count: u64| {
        let tickets: Vec<_> = (next..next + count)
            .map(|id| committer.submit(grant(id)))
            .collect();
        next += count;
        tickets
    };
    for ticket in submit_round(50) {
        ticket.wait().await.expect("commit before the kill");
    }

    let leader = etcd_leader(&cluster).await;
    let killed = Instant::now();
    cluster.kill_member(leader);
    // Jobs submitted right after the kill: the first requests fail or hang until a new leader
    // is elected; the store retries them, and every job is acknowledged.
    for ticket in submit_round(50) {
        ticket
            .wait()
            .await
            .expect("commit while the etcd leader is down");
    }
    eprintln!(
        "50 jobs acknowledged {:?} after kill -9 of the etcd leader (member {leader})",
        killed.elapsed()
    );
    for ticket in submit_round(50) {
        ticket.wait().await.expect("commit with two members");
    }
    assert!(committer.failure().is_none());
    let stats = committer.stats();
    eprintln!("{} jobs in {} etcd commits", stats.jobs, stats.batches);

    // The killed member comes back and catches up; then every member is killed at once.
    cluster.restart_member(leader);
    tokio::task::spawn_blocking(move || committer.join())
        .await
        .expect("join")
        .expect("clean close");
    cluster.stop_all();
    cluster.restart_all();

    let endpoints = cluster.endpoints();
    let (snapshot, records) = tokio::task::spawn_blocking(move || {
        let mut store = EtcdStore::open_with(&endpoints, prefix, None, options())?;
        let snapshot = store.load()?;
        let records = store.audit(&AuditQuery::default())?;
        Ok::<_, locksmith_store::StoreError>((snapshot, records))
    })
    .await
    .expect("task")
    .expect("load after restarting every member");
    let mut ids: Vec<u64> = snapshot.leases.iter().map(|l| l.lease.0).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=150).collect::<Vec<_>>());
    assert_eq!(snapshot.fence_high_water, 150);
    assert_eq!(snapshot.audit_seq, 150);
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=150).collect::<Vec<_>>()
    );
}
