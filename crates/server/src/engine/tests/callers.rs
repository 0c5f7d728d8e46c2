//! Callers that go away mid-operation, and the order answers go out in.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use locksmith_store::EmbeddedStore;

use super::{Engine, acquire, engine_over, engine_with_slow_commits, lock};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_caller_goes_away_before_it_is_durable_still_hands_the_lock_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine_with_slow_commits(dir.path());

    let first = engine.acquire(acquire("cfg/a", 1, 0)).await.expect("first");
    let waiting = tokio::spawn({
        let engine = engine.clone();
        async move { engine.acquire(acquire("cfg/a", 2, 30_000)).await }
    });
    while engine.peek("cfg/a").waiters.is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The release runs on the table and is submitted, then its caller goes away (a client
    // that disconnects, a handler future dropped) while the commit is still 200 ms out.
    let release = engine.release(first.lease, Some(first.token));
    assert!(
        release.now_or_never().is_none(),
        "the release cannot be durable before its commit's delay"
    );

    // Before the fix the grant was delivered by the dropped future, so the waiter only
    // learnt it (by its lease expiring) a TTL later.
    let second = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiter gets the lock once the release is durable")
        .expect("task")
        .expect("granted");
    assert_eq!(second.resource, "cfg/a");
    assert!(second.token > first.token);
    assert_eq!(second.owner.pid, 2);
    let holders = engine.resource("cfg/a").await.expect("view").holders;
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].lease, second.lease);
    engine.close().expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_whose_caller_goes_away_before_its_grant_is_durable_leaves_no_ghost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine_with_slow_commits(dir.path());

    // Granted on the table and submitted; then the caller goes away (a client that
    // disconnects, a withdrawn wire request) while the commit is still 200 ms out.
    let acquire_then_leave = engine.acquire(acquire("cfg/g", 1, 0));
    assert!(
        acquire_then_leave.now_or_never().is_none(),
        "the grant cannot be durable before its commit's delay"
    );

    // Before the fix the lease stayed until its TTL (60 s here), held by nobody who knew.
    let next = tokio::time::timeout(
        Duration::from_secs(10),
        engine.acquire(acquire("cfg/g", 2, 30_000)),
    )
    .await
    .expect("the next caller gets the lock once the abandoned grant is released")
    .expect("granted");
    assert_eq!(next.owner.pid, 2);

    // A re-acquire is the caller's own lease from before: going away does not release it.
    // (With another grant's commit in flight, so that the re-acquire waits for the log.)
    let other = tokio::spawn({
        let engine = engine.clone();
        async move { engine.acquire(acquire("cfg/other", 3, 0)).await }
    });
    while engine.peek("cfg/other").holders.is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let again = engine.acquire(acquire("cfg/g", 2, 0));
    assert!(
        again.now_or_never().is_none(),
        "queued behind the other commit"
    );
    other.await.expect("task").expect("other granted");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let holders = engine.resource("cfg/g").await.expect("view").holders;
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].lease, next.lease);
    engine.close().expect("close");
}

/// Order of completion, as the tasks saw it.
type Log = Arc<Mutex<Vec<&'static str>>>;

fn waiter(engine: &Engine, pid: u32, log: &Log, name: &'static str) -> tokio::task::JoinHandle<()> {
    let (engine, log) = (engine.clone(), log.clone());
    tokio::spawn(async move {
        engine
            .acquire(acquire("cfg/q", pid, 30_000))
            .await
            .expect("granted");
        lock(&log).push(name);
    })
}

/// On one thread, with others still queued, the new holder's task runs before the
/// releaser's gets its answer: the grant is sent first. With nobody left waiting the
/// releaser answers first (it may be the next to ask).
#[tokio::test(flavor = "current_thread")]
async fn a_grant_goes_out_before_the_release_answer_while_others_still_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine_over(EmbeddedStore::open(dir.path()).expect("open"));
    let log: Log = Arc::default();
    let holder = engine
        .acquire(acquire("cfg/q", 1, 0))
        .await
        .expect("holder");
    let second = waiter(&engine, 2, &log, "second granted");
    while engine.peek("cfg/q").waiters.is_empty() {
        tokio::task::yield_now().await;
    }
    let third = waiter(&engine, 3, &log, "third granted");
    while engine.peek("cfg/q").waiters.len() < 2 {
        tokio::task::yield_now().await;
    }

    // The third still waits after this grant.
    engine.release(holder.lease, None).await.expect("release");
    lock(&log).push("first released");
    second.await.expect("second");
    assert_eq!(*lock(&log), ["second granted", "first released"]);

    // Nobody waits after this one.
    lock(&log).clear();
    let lease = engine
        .resource("cfg/q")
        .await
        .expect("view")
        .holders
        .first()
        .map(|h| h.lease)
        .expect("second holds");
    engine.release(lease, None).await.expect("release");
    lock(&log).push("second released");
    third.await.expect("third");
    assert_eq!(*lock(&log), ["second released", "third granted"]);
    engine.close().expect("close");
}
