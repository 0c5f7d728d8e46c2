//! The committer's promises: group commit, submission order, empty-batch barriers, fail-stop
//! latching, clean shutdown, and audit queries ordered among the batches. Nothing here asserts
//! timing.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{FakeStore, lease, put};
use locksmith_core::{AuditKind, AuditRecord, LeaseId, Mutation};
use locksmith_store::{AuditQuery, Committer, EmbeddedStore, Store, StoreError, open_embedded};

fn spawn(store: FakeStore) -> Committer {
    Committer::spawn(Box::new(store)).expect("spawn the committer")
}

#[test]
fn committer_is_cloneable_send_and_sync() {
    fn assert_handle<T: Clone + Send + Sync + 'static>() {}
    assert_handle::<Committer>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_jobs_are_all_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (snapshot, committer) = open_embedded(dir.path()).expect("open");
    assert!(snapshot.leases.is_empty());

    let tasks: Vec<_> = (1..=100)
        .map(|id| {
            let committer = committer.clone();
            tokio::spawn(async move {
                committer
                    .submit(vec![put(id), Mutation::FenceHighWater(id)])
                    .wait()
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("commit");
    }

    let stats = committer.stats();
    assert_eq!(stats.jobs, 100);
    assert_eq!(stats.mutations, 200);
    assert!(stats.batches >= 1 && stats.batches <= 100, "{stats:?}");
    eprintln!("100 concurrent jobs took {} store commits", stats.batches);
    committer.join().expect("clean close");

    let (snapshot, _committer) = open_embedded(dir.path()).expect("reopen");
    let ids: BTreeSet<_> = snapshot.leases.iter().map(|r| r.lease.0).collect();
    assert_eq!(ids, (1..=100).collect());
    assert_eq!(snapshot.fence_high_water, 100);
}

#[tokio::test]
async fn jobs_queued_during_a_commit_share_the_next_one_in_order() {
    let (store, probe) = FakeStore::new();
    let (store, gate) = store.gated();
    let committer = spawn(store);

    let first = committer.submit(vec![put(1)]);
    gate.wait_entered();
    let queued: Vec<_> = (2..=11).map(|id| committer.submit(vec![put(id)])).collect();
    gate.release_one();
    gate.release_one();

    first.wait().await.expect("first");
    for ticket in queued {
        ticket.wait().await.expect("queued");
    }
    let expected: Vec<_> = (2..=11).map(put).collect();
    assert_eq!(probe.commits(), vec![vec![put(1)], expected]);
    let stats = committer.stats();
    assert_eq!((stats.batches, stats.mutations, stats.jobs), (2, 11, 11));
    assert!(stats.total_commit_micros >= stats.last_commit_micros);
}

/// Jobs of `sizes` mutations each, with consecutive lease ids starting at `first`.
fn jobs_of(first: u64, sizes: &[u64]) -> Vec<Vec<Mutation>> {
    let mut next = first;
    sizes
        .iter()
        .map(|&size| {
            let job = (next..next + size).map(put).collect();
            next += size;
            job
        })
        .collect()
}

#[tokio::test]
async fn a_bounded_store_gets_a_group_split_at_job_boundaries() {
    let (store, probe) = FakeStore::new();
    let (store, gate) = store.max_batch(4).gated();
    let committer = spawn(store);

    let first = committer.submit(vec![put(100)]);
    gate.wait_entered();
    // Queued during the first commit, so drained as one group: 2+2 | 1 | 5 (alone, though
    // above the limit) | 0 (a barrier) +1+3 | 4.
    let jobs = jobs_of(1, &[2, 2, 1, 5, 0, 1, 3, 4]);
    let tickets: Vec<_> = jobs
        .iter()
        .map(|job| committer.submit(job.clone()))
        .collect();
    for _ in 0..6 {
        gate.release_one();
    }
    first.wait().await.expect("first");
    for ticket in tickets {
        ticket.wait().await.expect("queued");
    }
    let expected = vec![
        vec![put(100)],
        [jobs[0].clone(), jobs[1].clone()].concat(),
        jobs[2].clone(),
        jobs[3].clone(),
        [jobs[4].clone(), jobs[5].clone(), jobs[6].clone()].concat(),
        jobs[7].clone(),
    ];
    assert_eq!(probe.commits(), expected);
    let stats = committer.stats();
    assert_eq!((stats.batches, stats.mutations, stats.jobs), (6, 19, 9));
}

#[tokio::test]
async fn a_failed_split_commit_fails_the_rest_of_its_group() {
    let (store, probe) = FakeStore::new();
    let (store, gate) = store.max_batch(2).fail_on_call(3).gated();
    let committer = spawn(store);

    let first = committer.submit(vec![put(100)]);
    gate.wait_entered();
    // One group, three commits: [1,2] succeeds, [3,4] fails, [5] is refused unseen.
    let jobs = jobs_of(1, &[2, 2, 1]);
    let tickets: Vec<_> = jobs
        .iter()
        .map(|job| committer.submit(job.clone()))
        .collect();
    for _ in 0..3 {
        gate.release_one();
    }
    first.wait().await.expect("first");
    let replies: Vec<_> = wait_all(tickets).await;
    assert!(replies[0].is_ok(), "{replies:?}");
    // Its own commit failed: maybe durable, maybe not.
    assert!(
        matches!(replies[1], Err(StoreError::Unknown(_))),
        "{replies:?}"
    );
    // Never written.
    assert!(
        matches!(replies[2], Err(StoreError::Failed(_))),
        "{replies:?}"
    );
    assert_eq!(probe.calls(), 3);
    assert_eq!(probe.commits(), vec![vec![put(100)], jobs[0].clone()]);
}

async fn wait_all(tickets: Vec<locksmith_store::CommitTicket>) -> Vec<Result<(), StoreError>> {
    let mut replies = Vec::new();
    for ticket in tickets {
        replies.push(ticket.wait().await);
    }
    replies
}

#[tokio::test]
async fn a_later_batch_wins_over_an_earlier_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, committer) = open_embedded(dir.path()).expect("open");
    // Submitted back to back without waiting, so they may land in one group or several.
    let tickets = vec![
        committer.submit(vec![Mutation::PutLease(lease(1, "first"))]),
        committer.submit(vec![Mutation::PutLease(lease(2, "doomed"))]),
        committer.submit(vec![Mutation::PutLease(lease(1, "second"))]),
        committer.submit(vec![Mutation::DeleteLease(LeaseId(2))]),
        committer.submit(vec![Mutation::DeleteLease(LeaseId(3))]),
        committer.submit(vec![Mutation::PutLease(lease(3, "last"))]),
    ];
    for ticket in tickets {
        ticket.wait().await.expect("commit");
    }
    committer.join().expect("close");

    let mut store = EmbeddedStore::open(dir.path()).expect("reopen");
    let mut snapshot = store.load().expect("load");
    snapshot.leases.sort_by_key(|r| r.lease);
    assert_eq!(snapshot.leases, vec![lease(1, "second"), lease(3, "last")]);
}

#[tokio::test]
async fn an_empty_batch_waits_for_every_earlier_batch() {
    let (store, probe) = FakeStore::new();
    let (store, gate) = store.gated();
    let committer = spawn(store);

    let earlier = tokio::spawn(committer.submit(vec![put(1)]).wait());
    gate.wait_entered();
    let barrier = tokio::spawn(committer.submit(Vec::new()).wait());

    // The earlier commit is held inside the store, so the barrier cannot have resolved.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !barrier.is_finished(),
        "barrier acknowledged before earlier batch was durable"
    );
    assert!(!earlier.is_finished());

    gate.release_one();
    earlier.await.expect("task").expect("earlier");
    barrier.await.expect("task").expect("barrier");
    assert_eq!(
        probe.commits(),
        vec![vec![put(1)]],
        "the barrier caused no commit"
    );
    assert_eq!(probe.calls(), 1);
}

#[tokio::test]
async fn empty_batches_alone_never_touch_the_store() {
    let (store, probe) = FakeStore::new();
    let committer = spawn(store);
    for _ in 0..3 {
        committer.submit(Vec::new()).wait().await.expect("barrier");
    }
    assert_eq!(probe.calls(), 0);
    let stats = committer.stats();
    assert_eq!((stats.batches, stats.jobs, stats.mutations), (0, 3, 0));
}

#[tokio::test]
async fn a_failed_commit_latches_for_that_group_and_every_later_job() {
    let (store, probe) = FakeStore::new();
    let (store, gate) = store.fail_on_call(2).gated();
    let committer = spawn(store);

    let first = committer.submit(vec![put(1)]);
    gate.wait_entered();
    // These two form the second group, whose commit fails.
    let second = committer.submit(vec![put(2)]);
    let third = committer.submit(vec![put(3)]);
    gate.release_one();
    gate.release_one();

    first.wait().await.expect("first commit succeeds");
    // The failed commit's outcome is unknown: it says so, not that nothing was written.
    for ticket in [second, third] {
        match ticket.wait().await {
            Err(StoreError::Unknown(reason)) => assert!(reason.contains("injected"), "{reason}"),
            other => panic!("expected Unknown, got {other:?}"),
        }
    }
    // Later jobs, empty ones included, are refused without calling the store.
    for batch in [vec![put(4)], Vec::new()] {
        assert!(matches!(
            committer.submit(batch).wait().await,
            Err(StoreError::Failed(_))
        ));
    }
    assert_eq!(probe.calls(), 2);
    assert_eq!(probe.commits(), vec![vec![put(1)]]);
    assert!(matches!(committer.failure(), Some(StoreError::Failed(_))));
    assert_eq!(committer.stats().jobs, 1);
    assert!(matches!(committer.join(), Err(StoreError::Failed(_))));
}

#[tokio::test]
async fn a_panicking_store_latches_instead_of_closing() {
    let (store, probe) = FakeStore::new();
    let committer = spawn(store.panic_on_call(1));
    match committer.submit(vec![put(1)]).wait().await {
        Err(StoreError::Unknown(reason)) => assert!(reason.contains("panicked"), "{reason}"),
        other => panic!("expected Unknown, got {other:?}"),
    }
    assert!(matches!(
        committer.submit(vec![put(2)]).wait().await,
        Err(StoreError::Failed(_))
    ));
    assert_eq!(probe.calls(), 1);
}

/// Bug pinned (issue 15, item 4b): a batch durable in the store was answered failed when work
/// after its commit failed (the embedded store's apply, its segment switch), so its client was
/// told "nothing was changed" of a lease it then held after a restart. The answer follows the
/// durability: that batch — and the jobs grouped with it — `Ok`, with its callbacks run; the
/// failure latches at once and refuses every later job unwritten.
#[tokio::test]
async fn a_batch_durable_before_the_store_fails_is_answered_ok_and_later_ones_refused() {
    let (store, probe) = FakeStore::new();
    let (store, gate) = store.fail_after_call(2).gated();
    let committer = spawn(store);
    let log = recorder();

    let first = committer.submit(vec![put(1)]);
    gate.wait_entered();
    // One group, whose commit is durable; the store fails right after it.
    let second = committer.submit_then(vec![put(2)], record_into(&log, 2));
    let third = committer.submit(vec![put(3)]);
    gate.release_one();
    gate.release_one();
    first.wait().await.expect("first");
    second.wait().await.expect("durable, so answered Ok");
    third.wait().await.expect("in the same durable commit");
    assert_eq!(*log.lock().expect("log"), vec![2], "its callback ran");

    match committer.failure() {
        Some(StoreError::Failed(cause)) => assert!(cause.contains("injected"), "{cause}"),
        other => panic!("the failure is latched at once, got {other:?}"),
    }
    match committer.submit(vec![put(4)]).wait().await {
        Err(StoreError::Failed(cause)) => assert!(cause.contains("after commit call 2")),
        other => panic!("expected Failed (unwritten), got {other:?}"),
    }
    assert_eq!(probe.calls(), 2, "the store is not called again");
    assert_eq!(committer.stats().jobs, 3);
}

/// Bug pinned (issue 15, item 18): a store that refuses a batch after its own earlier failure
/// answers `Failed`, and the committer latched that error's whole text as its cause, so every
/// later answer read "storage is failed after an earlier error (storage is failed after an
/// earlier error (…))". A refused batch is also known unwritten: `Failed`, not `Unknown`.
#[tokio::test]
async fn a_refused_batch_is_answered_failed_and_later_refusals_name_the_cause_once() {
    let (store, _probe) = FakeStore::new();
    let committer = spawn(store.refuse_on_call(1));
    let refused = committer.submit(vec![put(1)]).wait().await;
    assert!(matches!(refused, Err(StoreError::Failed(_))), "{refused:?}");
    let later = committer.submit(vec![put(2)]).wait().await;
    for error in [
        refused.err(),
        later.err(),
        committer.failure(),
        committer.join().err(),
    ] {
        let text = error.map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(text.matches("storage is failed").count(), 1, "{text}");
        assert!(text.contains("injected apply failure"), "{text}");
    }
}

#[tokio::test]
async fn shutdown_finishes_queued_jobs_then_refuses() {
    let (store, probe) = FakeStore::new();
    let (store, gate) = store.gated();
    let committer = spawn(store);

    let first = committer.submit(vec![put(1)]);
    gate.wait_entered();
    let queued = committer.submit(vec![put(2)]);
    committer.shutdown();
    let late = committer.submit(vec![put(3)]);
    gate.release_one();
    gate.release_one();

    first.wait().await.expect("first");
    queued.wait().await.expect("queued before shutdown");
    assert!(matches!(late.wait().await, Err(StoreError::Closed)));
    committer.join().expect("clean close");
    assert!(probe.dropped(), "join returns after the store is closed");
    assert_eq!(probe.commits(), vec![vec![put(1)], vec![put(2)]]);

    // join is idempotent, and a closed committer refuses work.
    committer.join().expect("second join");
    assert!(matches!(
        committer.submit(Vec::new()).wait().await,
        Err(StoreError::Closed)
    ));
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_store() {
    let (store, probe) = FakeStore::new();
    let committer = spawn(store);
    let clone = committer.clone();
    assert_eq!(clone.describe(), "fake:test");

    let ticket = committer.submit(vec![put(1)]);
    drop(committer);
    drop(clone);
    ticket
        .wait()
        .await
        .expect("a job queued before the drop still commits");

    for _ in 0..500 {
        if probe.dropped() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        probe.dropped(),
        "the commit thread should exit and close the store"
    );
    assert_eq!(probe.commits(), vec![vec![put(1)]]);
}

fn query_all() -> AuditQuery {
    AuditQuery::default()
}

#[tokio::test]
async fn a_query_sees_exactly_the_batches_submitted_before_it() {
    let (store, _probe) = FakeStore::new();
    let (store, gate) = store.gated();
    let committer = spawn(store);

    // The first batch is held inside the store; everything else queues behind it.
    let first = committer.submit(vec![put(1)]);
    gate.wait_entered();
    let second = committer.submit(vec![put(2), put(3)]);
    let query = committer.query_audit(query_all());
    let third = committer.submit(vec![put(4)]);
    for _ in 0..3 {
        gate.release_one();
    }
    first.wait().await.expect("first");
    second.wait().await.expect("second");
    third.wait().await.expect("third");
    let seen = query.wait().await.expect("query");
    assert_eq!(
        seen.len(),
        3,
        "the query runs after the 3 mutations submitted before it and before the later one"
    );
    // The batches on either side of the query were committed separately.
    assert_eq!(committer.stats().batches, 3);
}

#[tokio::test]
async fn a_query_after_an_acknowledged_commit_sees_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, committer) = open_embedded(dir.path()).expect("open");
    let record = |seq: u64, resource: &str| {
        let mut record = AuditRecord::new(resource, AuditKind::Granted);
        record.seq = seq;
        record.at_ms = 1_000 + seq;
        record
    };
    committer
        .submit(vec![
            Mutation::PutLease(lease(1, "audited")),
            Mutation::AppendAudit(record(1, "a")),
        ])
        .wait()
        .await
        .expect("commit");
    let seen = committer
        .query_audit(query_all())
        .wait()
        .await
        .expect("query");
    assert_eq!(seen, vec![record(1, "a")]);

    // Submitted without waiting for the commit: still ordered after it.
    let ticket = committer.submit(vec![
        Mutation::AppendAudit(record(2, "b")),
        Mutation::AppendAudit(record(3, "a")),
    ]);
    let query = committer.query_audit(AuditQuery {
        resource: Some("a".to_owned()),
        ..AuditQuery::recent(10)
    });
    assert_eq!(
        query.wait().await.expect("query"),
        vec![record(1, "a"), record(3, "a")]
    );
    ticket.wait().await.expect("commit");
    committer.join().expect("close");
}

#[tokio::test]
async fn a_failed_or_panicking_query_latches_nothing() {
    let (store, probe) = FakeStore::new();
    let committer = spawn(store);
    let failing = AuditQuery {
        resource: Some("fail".to_owned()),
        ..query_all()
    };
    assert!(matches!(
        committer.query_audit(failing).wait().await,
        Err(StoreError::Io(reason)) if reason.contains("injected")
    ));
    let panicking = AuditQuery {
        resource: Some("panic".to_owned()),
        ..query_all()
    };
    match committer.query_audit(panicking).wait().await {
        Err(StoreError::Io(reason)) => assert!(reason.contains("panicked"), "{reason}"),
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(committer.failure().is_none());
    committer
        .submit(vec![put(1)])
        .wait()
        .await
        .expect("commits still work");
    assert_eq!(
        committer
            .query_audit(query_all())
            .wait()
            .await
            .expect("query")
            .len(),
        1
    );
    assert_eq!(probe.calls(), 1);
}

#[tokio::test]
async fn queries_after_a_failed_commit_get_the_latched_error() {
    let (store, _probe) = FakeStore::new();
    let committer = spawn(store.fail_on_call(1));
    assert!(committer.submit(vec![put(1)]).wait().await.is_err());
    match committer.query_audit(query_all()).wait().await {
        Err(StoreError::Failed(reason)) => assert!(reason.contains("injected"), "{reason}"),
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn queries_after_shutdown_are_closed() {
    let (store, _probe) = FakeStore::new();
    let committer = spawn(store);
    let before = committer.query_audit(query_all());
    committer.shutdown();
    let after = committer.query_audit(query_all());
    assert!(
        before
            .wait()
            .await
            .expect("queued before shutdown")
            .is_empty()
    );
    assert!(matches!(after.wait().await, Err(StoreError::Closed)));
    committer.join().expect("clean close");
}

fn put_record(key: &str, value: &[u8]) -> Mutation {
    Mutation::PutRecord {
        space: "configs".to_owned(),
        key: key.to_owned(),
        value: value.to_vec(),
    }
}

/// Record reads are ordered among the batches like audit queries: a read sees every batch
/// submitted before it — acknowledged or not — and none after it.
#[tokio::test]
async fn record_reads_see_exactly_the_batches_submitted_before_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, committer) = open_embedded(dir.path()).expect("open");
    let first = committer.submit(vec![put_record("a/1", b"one"), put_record("a/2", b"two")]);
    let read = committer.query_record("configs", "a/1");
    let scan = committer.query_records("configs", "a/", None, 10);
    let second = committer.submit(vec![
        put_record("a/1", b"replaced"),
        Mutation::DeleteRecord {
            space: "configs".to_owned(),
            key: "a/2".to_owned(),
        },
    ]);
    let later = committer.query_records("configs", "a/", None, 10);
    let page = committer.query_records("configs", "", Some("a/0"), 1);
    assert_eq!(read.wait().await.expect("read"), Some(b"one".to_vec()));
    assert_eq!(
        scan.wait().await.expect("scan"),
        vec![
            ("a/1".to_owned(), b"one".to_vec()),
            ("a/2".to_owned(), b"two".to_vec())
        ]
    );
    assert_eq!(
        later.wait().await.expect("scan"),
        vec![("a/1".to_owned(), b"replaced".to_vec())]
    );
    assert_eq!(
        page.wait().await.expect("scan"),
        vec![("a/1".to_owned(), b"replaced".to_vec())]
    );
    first.wait().await.expect("first");
    second.wait().await.expect("second");
    assert_eq!(
        committer
            .query_record("configs", "a/2")
            .wait()
            .await
            .expect("read"),
        None
    );
    committer.join().expect("close");
}

/// A job holding a record the store would refuse is answered `Invalid` at submission: never
/// queued, it reaches no store, fails no other job and latches nothing.
#[tokio::test]
async fn a_job_with_an_invalid_record_is_refused_at_submission_and_latches_nothing() {
    let (store, probe) = FakeStore::new();
    let committer = spawn(store);
    let bad = committer.submit(vec![put(1), put_record("", b"no key")]);
    let good = committer.submit(vec![put(2)]);
    match bad.wait().await {
        Err(StoreError::Invalid(invalid)) => assert_eq!(invalid.field, "key"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    good.wait().await.expect("the next job commits");
    assert!(committer.failure().is_none());
    assert_eq!(probe.commits(), vec![vec![put(2)]]);
}

/// A store whose requests are bounded in bytes (etcd's `--max-request-bytes`) gets a group of
/// large jobs split so each commit fits: two 1 MiB config writes queued together must not
/// make one request the backend refuses. A job too large alone is still sent alone; the
/// store's `Invalid` answer reaches only that job and latches nothing.
#[tokio::test]
async fn a_group_is_split_to_fit_the_stores_request_size() {
    const MIB: usize = 1024 * 1024;
    let (store, probe) = FakeStore::new();
    let limit = 3 * MIB / 2;
    let (store, gate) = store.max_bytes(limit).refuse_above_bytes(limit).gated();
    let committer = spawn(store);

    let first = committer.submit(vec![put(100)]);
    gate.wait_entered();
    // Queued during the first commit, so drained as one group.
    let config = |key: &str, size: usize| vec![put_record(key, &vec![b'c'; size])];
    let small = committer.submit(vec![put(1), put(2)]);
    let a = committer.submit(config("a", MIB));
    let b = committer.submit(config("b", MIB));
    let huge = committer.submit(config("huge", 2 * MIB));
    let c = committer.submit(config("c", MIB / 4));
    for _ in 0..5 {
        gate.release_one();
    }
    first.wait().await.expect("first");
    small.wait().await.expect("small");
    a.wait()
        .await
        .expect("a: alone with the small job, under the limit");
    b.wait().await.expect("b: in a commit of its own");
    match huge.wait().await {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("the store refused the 2 MiB job; expected Invalid, got {other:?}"),
    }
    c.wait()
        .await
        .expect("c: after the refused job, nothing latched");
    assert!(committer.failure().is_none());
    let keys: Vec<Vec<String>> = probe
        .commits()
        .iter()
        .map(|batch| {
            batch
                .iter()
                .map(|m| match m {
                    Mutation::PutRecord { key, .. } => key.clone(),
                    Mutation::PutLease(l) => l.lease.0.to_string(),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .collect();
    assert_eq!(
        keys,
        [vec!["100"], vec!["1", "2", "a"], vec!["b"], vec!["c"]]
    );
}

/// What `submit_then` callbacks record, in the order they ran.
fn recorder() -> std::sync::Arc<std::sync::Mutex<Vec<u64>>> {
    std::sync::Arc::new(std::sync::Mutex::new(Vec::new()))
}

fn record_into(
    log: &std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    id: u64,
) -> impl FnOnce() + Send + 'static {
    let log = std::sync::Arc::clone(log);
    move || log.lock().expect("log").push(id)
}

#[tokio::test]
async fn an_after_commit_callback_runs_once_its_batch_is_durable_and_before_wait_returns() {
    let (store, probe) = FakeStore::new();
    let (store, gate) = store.gated();
    let committer = spawn(store);
    let log = recorder();

    let ticket = committer.submit_then(vec![put(1)], record_into(&log, 1));
    gate.wait_entered();
    // Not durable yet, so not run yet.
    assert!(log.lock().expect("log").is_empty());
    gate.release_one();
    ticket.wait().await.expect("committed");
    assert_eq!(*log.lock().expect("log"), vec![1]);
    assert_eq!(probe.commits(), vec![vec![put(1)]]);
}

#[tokio::test]
async fn an_after_commit_callback_runs_even_if_its_ticket_was_dropped_before_the_commit() {
    let (store, probe) = FakeStore::new();
    let (store, gate) = store.gated();
    let committer = spawn(store);
    let log = recorder();

    let first = committer.submit(vec![put(1)]);
    gate.wait_entered();
    // Queued behind the commit in progress; its caller goes away before it is durable.
    drop(committer.submit_then(vec![put(2)], record_into(&log, 2)));
    let later = committer.submit(vec![put(3)]);
    gate.release_one();
    gate.release_one();
    first.wait().await.expect("first");
    // The commit thread answered the dropped ticket before the later one, and ran its callback.
    later.wait().await.expect("later");
    assert_eq!(*log.lock().expect("log"), vec![2]);
    assert_eq!(probe.commits(), vec![vec![put(1)], vec![put(2), put(3)]]);
}

#[tokio::test]
async fn an_after_commit_callback_runs_when_an_answered_ticket_is_dropped_unread() {
    let (store, _probe) = FakeStore::new();
    let committer = spawn(store);
    let log = recorder();

    let ticket = committer.submit_then(vec![put(1)], record_into(&log, 1));
    // Once a later barrier is answered, the first answer is sitting in its ticket, unread.
    committer.submit(Vec::new()).wait().await.expect("barrier");
    assert!(log.lock().expect("log").is_empty());
    drop(ticket);
    assert_eq!(*log.lock().expect("log"), vec![1]);
}

#[tokio::test]
async fn after_commit_callbacks_do_not_run_when_the_commit_fails() {
    let (store, _probe) = FakeStore::new();
    let committer = spawn(store.fail_on_call(1));
    let log = recorder();
    let ticket = committer.submit_then(vec![put(1)], record_into(&log, 1));
    assert!(matches!(ticket.wait().await, Err(StoreError::Unknown(_))));
    let later = committer.submit_then(vec![put(2)], record_into(&log, 2));
    assert!(matches!(later.wait().await, Err(StoreError::Failed(_))));
    assert!(log.lock().expect("log").is_empty());
}

#[tokio::test]
async fn a_panicking_after_commit_callback_leaves_the_commit_and_the_thread_alone() {
    let (store, probe) = FakeStore::new();
    let committer = spawn(store);
    let log = recorder();
    let ticket = committer.submit_then(vec![put(1)], || panic!("callback bug"));
    ticket.wait().await.expect("the batch is committed");
    committer
        .submit_then(vec![put(2)], record_into(&log, 2))
        .wait()
        .await
        .expect("the thread still commits");
    assert_eq!(*log.lock().expect("log"), vec![2]);
    assert_eq!(probe.commits(), vec![vec![put(1)], vec![put(2)]]);
    assert!(committer.failure().is_none());
}

// A store that commits inline (`Store::commits_inline`): who takes the commit turn.

const COMMIT_THREAD: &str = "locksmith-commit";

/// Commits one put per id, each waited for before the next is submitted: a lone job each time.
async fn commit_one_by_one(committer: &Committer, ids: std::ops::RangeInclusive<u64>) {
    for id in ids {
        committer
            .submit(vec![put(id)])
            .wait()
            .await
            .expect("durable");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncontended_commit_runs_in_the_task_waiting_for_it() {
    let (store, probe) = FakeStore::new();
    let committer = spawn(store.inline());
    commit_one_by_one(&committer, 1..=20).await;
    let expected: Vec<_> = (1..=20).map(|id| vec![put(id)]).collect();
    assert_eq!(probe.commits(), expected);
    // The commit thread may take a job queued while it starts or ends a turn, but once it
    // sleeps nothing wakes it: every lone job after that is committed by its waiter.
    let threads = probe.threads();
    assert!(
        threads[10..].iter().all(|t| t != COMMIT_THREAD),
        "no hand-off to the commit thread: {threads:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_does_not_commit_inline_is_only_committed_by_the_commit_thread() {
    let (store, probe) = FakeStore::new();
    let committer = spawn(store);
    commit_one_by_one(&committer, 1..=3).await;
    assert_eq!(probe.threads(), vec![COMMIT_THREAD; 3]);
}

#[tokio::test]
async fn on_a_current_thread_runtime_the_commit_thread_commits_for_an_inline_store() {
    let (store, probe) = FakeStore::new();
    let committer = spawn(store.inline());
    commit_one_by_one(&committer, 1..=1).await;
    assert_eq!(probe.threads(), vec![COMMIT_THREAD]);
}

/// Bug pinned: with one runtime worker (the server binary on a 1-CPU machine), every waiting
/// task made its own commit while the only worker could serve nothing else, so under load no
/// commit was ever grouped: 16 clients fell from 10.8 k to 2.5 k cycles/s.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn with_a_single_runtime_worker_the_commit_thread_commits_for_an_inline_store() {
    let (store, probe) = FakeStore::new();
    let committer = spawn(store.inline());
    commit_one_by_one(&committer, 1..=3).await;
    assert_eq!(probe.threads(), vec![COMMIT_THREAD; 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_store_job_whose_ticket_is_dropped_unawaited_still_commits_and_calls_back() {
    let (store, probe) = FakeStore::new();
    let committer = spawn(store.inline());
    let (done_tx, done) = tokio::sync::oneshot::channel();
    drop(committer.submit_then(vec![put(1)], move || {
        let _ = done_tx.send(());
    }));
    tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .expect("the commit thread took the job nobody waits for")
        .expect("callback ran");
    assert_eq!(probe.commits(), vec![vec![put(1)]]);
    assert_eq!(probe.threads(), vec![COMMIT_THREAD]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_queued_behind_a_waiting_task_commit_go_to_the_thread_in_order_then_inline_again() {
    let (store, probe) = FakeStore::new();
    let (store, gate) = store.inline().gated();
    let committer = spawn(store);

    // A task takes the first commit and is held inside it.
    let first = tokio::spawn(committer.submit(vec![put(1)]).wait());
    gate.wait_entered();
    let queued: Vec<_> = (2..=5).map(|id| committer.submit(vec![put(id)])).collect();
    gate.release_one();
    // The task ends its turn with jobs left: the commit thread takes all of them in one.
    gate.wait_entered();
    gate.release_one();
    first.await.expect("task").expect("first");
    for result in wait_all(queued).await {
        result.expect("queued job");
    }
    // The last turn was shared, so the next lone job still goes to the thread; once turns are
    // uncontended again, waiting tasks take the commits.
    for id in 6..=15 {
        let next = tokio::spawn(committer.submit(vec![put(id)]).wait());
        gate.wait_entered();
        gate.release_one();
        next.await.expect("task").expect("lone job");
    }

    let mut expected = vec![vec![put(1)], vec![put(2), put(3), put(4), put(5)]];
    expected.extend((6..=15).map(|id| vec![put(id)]));
    assert_eq!(probe.commits(), expected);
    let threads = probe.threads();
    assert_eq!(threads[1], COMMIT_THREAD, "{threads:?}");
    assert_eq!(threads[2], COMMIT_THREAD, "{threads:?}");
    assert_ne!(threads[11], COMMIT_THREAD, "{threads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_store_closes_after_its_queued_jobs_when_the_last_handle_goes() {
    let (store, probe) = FakeStore::new();
    let committer = spawn(store.inline());
    let tickets: Vec<_> = (1..=3).map(|id| committer.submit(vec![put(id)])).collect();
    drop(committer);
    for result in wait_all(tickets).await {
        result.expect("queued before the drop");
    }
    for _ in 0..500 {
        if probe.dropped() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(probe.dropped(), "the store is closed");
    assert_eq!(probe.commits(), vec![vec![put(1), put(2), put(3)]]);
}
