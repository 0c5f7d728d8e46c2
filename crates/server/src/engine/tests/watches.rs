//! Watches on resources: woken by durable records about what they name, and nothing else —
//! the desired streams' fan-out at fleet scale rests on it.

use std::time::Duration;

use futures_util::FutureExt;
use locksmith_store::EmbeddedStore;

use super::{acquire, engine_over};

/// Far longer than a commit on loopback takes.
const PROMPTLY: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_about_another_resource_does_not_wake_a_watch_and_one_about_its_own_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine_over(EmbeddedStore::open(dir.path()).expect("open"));
    let watch = engine.watch(&["cfg/a".to_owned()]);
    let other = engine.watch(&["cfg/b".to_owned()]);
    assert_eq!(engine.watching("cfg/a"), 1);

    engine.acquire(acquire("cfg/b", 1, 0)).await.expect("b");
    // Published: cfg/b's own watch is woken.
    tokio::time::timeout(PROMPTLY, other.changed())
        .await
        .expect("the grant on cfg/b wakes its watch");
    assert!(
        watch.changed().now_or_never().is_none(),
        "a record about cfg/b woke the watch on cfg/a (every stream woken by every report)"
    );

    engine.acquire(acquire("cfg/a", 2, 0)).await.expect("a");
    tokio::time::timeout(PROMPTLY, watch.changed())
        .await
        .expect("the grant on cfg/a wakes its watch");
    // Many records, or one, are one wake-up: nothing is left over.
    assert!(watch.changed().now_or_never().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_moved_to_other_resources_is_woken_once_at_once_and_then_only_by_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine_over(EmbeddedStore::open(dir.path()).expect("open"));
    let mut watch = engine.watch(&["cfg/a".to_owned()]);

    watch.set(&["cfg/b".to_owned()]);
    // Newly watched: a record between the read that named cfg/b and this call was not seen.
    assert!(watch.changed().now_or_never().is_some());
    assert_eq!(engine.watching("cfg/a"), 0, "the old resource is let go");

    let other = engine.watch(&["cfg/a".to_owned()]);
    engine.acquire(acquire("cfg/a", 1, 0)).await.expect("a");
    tokio::time::timeout(PROMPTLY, other.changed())
        .await
        .expect("published");
    assert!(watch.changed().now_or_never().is_none());
    engine.acquire(acquire("cfg/b", 2, 0)).await.expect("b");
    tokio::time::timeout(PROMPTLY, watch.changed())
        .await
        .expect("cfg/b's grant wakes it");

    drop(watch);
    assert_eq!(
        engine.watching("cfg/b"),
        0,
        "a dropped watch leaves the index"
    );
}
