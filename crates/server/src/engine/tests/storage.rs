//! What an engine does when storage fails: it shows nothing the disk may lack, and answers
//! what it cannot know as unknown.

use std::sync::atomic::Ordering;
use std::time::Duration;

use locksmith_core::{FenceToken, LeaseId};
use locksmith_store::StoreError;

use super::{acquire, engine_with_faults, lock, restarted, tokens_in};
use crate::engine::EngineError;

/// Bug pinned (issue 15, item 4a): after a commit failed, the table kept its change, so
/// listings showed the refused requester as the holder, a fence check passed its token,
/// and after a restart that token was issued again ("2142 seen, then 2137 issued"). Now the
/// failed commit's answer says its outcome is unknown, nothing of the table is shown or
/// vouched for until a restart, and no token seen before the restart is issued after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_shows_nothing_it_did_and_no_token_seen_is_issued_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, faults) = engine_with_faults(dir.path());
    let mut seen = Vec::new();
    let held = engine.acquire(acquire("cfg/a", 1, 0)).await.expect("held");
    seen.extend([held.token.0, held.lease.0]);
    seen.extend(tokens_in(&engine.resource("cfg/a").await.expect("view")));

    faults.fail_next.store(true, Ordering::SeqCst);
    match engine.acquire(acquire("cfg/b", 2, 0)).await {
        Err(EngineError::Storage(StoreError::Unknown(cause))) => {
            assert!(cause.contains("No space left"), "{cause}");
        }
        other => panic!("the failed commit's outcome is unknown, got {other:?}"),
    }
    // The refused grant is in the table, and must never be shown or vouched for.
    let refused = FenceToken(held.token.0 + 1);
    assert!(matches!(
        engine.resource("cfg/b").await,
        Err(StoreError::Failed(_))
    ));
    assert!(engine.resources().await.is_err());
    assert!(engine.resources_page("", None, 100, None).await.is_err());
    assert!(engine.census().await.is_err());
    assert!(engine.holds().await.is_err());
    assert!(engine.lease(LeaseId(refused.0)).await.is_err());
    assert!(matches!(
        engine.check_fence("cfg/b", refused).await,
        Err(EngineError::Storage(_))
    ));
    // Everything else is refused too: the table may be ahead of the disk.
    assert!(matches!(
        engine.check_fence("cfg/a", held.token).await,
        Err(EngineError::Storage(_))
    ));
    assert!(matches!(
        engine.renew(held.lease, None).await,
        Err(EngineError::Storage(_))
    ));
    assert!(matches!(
        engine.acquire(acquire("cfg/c", 3, 0)).await,
        Err(EngineError::Storage(StoreError::Failed(_)))
    ));
    let health = engine.health();
    assert_eq!(health.status, locksmith_api::HealthStatus::Failed);
    assert_eq!((health.leases, health.waiters), (0, 0));
    assert_eq!(
        health.fence_high_water, held.token.0,
        "only what is durable"
    );
    seen.push(health.fence_high_water);
    let _ = engine.close();
    drop(engine);

    let engine = restarted(dir.path()).await;
    let next = engine
        .acquire(acquire("cfg/b", 4, 0))
        .await
        .expect("granted");
    let max_seen = seen.iter().copied().max().unwrap_or(0);
    assert!(
        next.token.0 > max_seen,
        "token {} issued after the restart, {max_seen} seen before it",
        next.token
    );
    assert_eq!(
        engine.resource("cfg/a").await.expect("view").holders[0].lease,
        held.lease,
        "the durable grant survived"
    );
    engine.close().expect("close");
}

/// Bug pinned (issue 15, item 4a, the race): a fence check read the table without waiting
/// for the disk, so it passed the token of a grant whose commit was still under way — and
/// then failed. A check (like a listing) answers only once what it saw is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_check_never_passes_a_token_whose_grant_is_not_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, faults) = engine_with_faults(dir.path());
    let (release, gate) = std::sync::mpsc::channel();
    *lock(&faults.gate) = Some(gate);
    faults.fail_next.store(true, Ordering::SeqCst);

    // Granted in the table, its commit held at the gate (and about to fail).
    let acquiring = tokio::spawn({
        let engine = engine.clone();
        async move { engine.acquire(acquire("cfg/r", 1, 0)).await }
    });
    let token = loop {
        if let Some(h) = engine.peek("cfg/r").holders.first() {
            break h.token;
        }
        tokio::task::yield_now().await;
    };
    let check = tokio::spawn({
        let engine = engine.clone();
        async move { engine.check_fence("cfg/r", token).await }
    });
    let listing = tokio::spawn({
        let engine = engine.clone();
        async move { engine.resource("cfg/r").await }
    });
    drop(release);
    *lock(&faults.gate) = None;

    let checked = check.await.expect("task");
    assert!(
        matches!(checked, Err(EngineError::Storage(_))),
        "a token whose grant never reached the disk passed: {checked:?}"
    );
    let listed = listing.await.expect("task");
    assert!(
        listed.is_err(),
        "a grant that never reached the disk was listed: {listed:?}"
    );
    assert!(matches!(
        acquiring.await.expect("task"),
        Err(EngineError::Storage(StoreError::Unknown(_)))
    ));
    let _ = engine.close();
}

/// Bug pinned (issue 15, item 4b): a batch durable in the log was answered 503 "nothing was
/// changed" when the store failed after its append, and after a restart its lease was held
/// by a client told it failed — a ghost for its TTL. The answer follows the durability.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_durable_before_the_store_fails_is_answered_and_survives_the_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, faults) = engine_with_faults(dir.path());
    faults.fail_after_next.store(true, Ordering::SeqCst);
    let granted = engine
        .acquire(acquire("cfg/d", 1, 0))
        .await
        .expect("durable, so granted");
    // The failure latched with it: everything after is refused, unwritten.
    assert_eq!(engine.health().status, locksmith_api::HealthStatus::Failed);
    assert!(matches!(
        engine.acquire(acquire("cfg/e", 2, 0)).await,
        Err(EngineError::Storage(StoreError::Failed(_)))
    ));
    let _ = engine.close();
    drop(engine);

    let engine = restarted(dir.path()).await;
    let held = engine.resource("cfg/d").await.expect("view").holders;
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].lease, held[0].token),
        (granted.lease, granted.token)
    );
    assert!(
        engine
            .resource("cfg/e")
            .await
            .expect("view")
            .holders
            .is_empty(),
        "the refused acquire left nothing"
    );
    engine.close().expect("close");
}

/// A waiter queued when storage fails could never be granted (no commit can be made), and
/// was left waiting for its whole wait. It is answered at once that its outcome is unknown
/// (it may have been granted by the very commit that failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_queued_when_storage_fails_is_answered_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, faults) = engine_with_faults(dir.path());
    let holder = engine.acquire(acquire("cfg/w", 1, 0)).await.expect("held");
    let waiting = tokio::spawn({
        let engine = engine.clone();
        async move { engine.acquire(acquire("cfg/w", 2, 600_000)).await }
    });
    while engine.peek("cfg/w").waiters.is_empty() {
        tokio::task::yield_now().await;
    }
    faults.fail_next.store(true, Ordering::SeqCst);
    assert!(engine.release(holder.lease, None).await.is_err());
    let answer = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiter is answered, not left waiting")
        .expect("task");
    assert!(
        matches!(answer, Err(EngineError::Storage(StoreError::Unknown(_)))),
        "{answer:?}"
    );
    let _ = engine.close();
}
