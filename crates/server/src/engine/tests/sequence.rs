//! The one audit sequence, as the step numbers it, across a restart.

use locksmith_core::PlaceHold;
use locksmith_store::{AuditQuery, EmbeddedStore};

use super::{acquire, engine_over, restarted};

/// The lock table numbered its audit records itself, so no other domain's records could share
/// the sequence (issue 16). The step numbers them now, in batch order, on from what the store
/// holds: lease and hold records carry one strictly increasing seq across a restart, and the
/// events published carry the seqs stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_are_numbered_on_from_the_store_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine_over(EmbeddedStore::open(dir.path()).expect("open"));
    let mut events = engine.subscribe();
    let held = engine.acquire(acquire("cfg/a", 1, 0)).await.expect("held");
    engine
        .place_hold(PlaceHold {
            resource: "cfg/b".into(),
            operator: "alice".into(),
            reason: "change freeze".into(),
            duration_ms: 60_000,
            require_ack: false,
        })
        .await
        .expect("hold");
    engine.release(held.lease, None).await.expect("release");
    let mut published = Vec::new();
    for _ in 0..3 {
        let record = events.recv().await.expect("event");
        published.push((record.seq, record.label().to_string()));
    }
    assert_eq!(
        published,
        [
            (1, "granted".to_string()),
            (2, "hold_placed".to_string()),
            (3, "released".to_string())
        ]
    );
    engine.close().expect("close");
    drop(engine);

    let engine = restarted(dir.path()).await;
    let mut events = engine.subscribe();
    engine.acquire(acquire("cfg/c", 2, 0)).await.expect("held");
    assert_eq!(events.recv().await.expect("event").seq, 4);
    let stored: Vec<u64> = engine
        .audit(AuditQuery::default())
        .await
        .expect("audit")
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(stored, [1, 2, 3, 4]);
    engine.close().expect("close");
}
