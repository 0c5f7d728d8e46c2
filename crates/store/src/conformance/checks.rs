//! The checks of the suite, one contract promise (or one edge of it) each.

use locksmith_core::{LeaseChunk, LeaseId, LeaseRecord, Mutation, Snapshot};

use super::{Harness, sample_audit, sample_hold, sample_lease};
use crate::{LeaseSink, Store, StoreError};

pub(super) fn fresh_loaded(h: &mut dyn Harness) -> Box<dyn Store> {
    let mut store = h.fresh();
    let snapshot = store.load().expect("load a fresh store");
    assert_eq!(
        snapshot,
        Snapshot::default(),
        "a fresh store must load empty"
    );
    store
}

pub(super) fn commit(store: &mut Box<dyn Store>, batch: &[Mutation]) {
    store.commit(batch).expect("commit");
}

/// Reopens and loads, returning the new instance and its state with leases and holds sorted by
/// id.
pub(super) fn reload(h: &mut dyn Harness, store: Box<dyn Store>) -> (Box<dyn Store>, Snapshot) {
    let mut store = h.reopen(store);
    let mut snapshot = store.load().expect("load after reopen");
    snapshot.leases.sort_by_key(|record| record.lease);
    snapshot.holds.sort_by_key(|record| record.hold);
    (store, snapshot)
}

fn put(record: &LeaseRecord) -> Mutation {
    Mutation::PutLease(record.clone())
}

fn delete(id: u64) -> Mutation {
    Mutation::DeleteLease(LeaseId(id))
}

/// A fresh store loads empty with high-water 0.
pub fn empty_store_loads_empty(h: &mut dyn Harness) {
    let store = fresh_loaded(h);
    let (_, snapshot) = reload(h, store);
    assert_eq!(snapshot, Snapshot::default());
}

/// A committed lease comes back exactly.
pub fn put_then_load(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    let record = sample_lease(1, 1);
    commit(&mut store, &[put(&record), Mutation::FenceHighWater(1)]);
    let (_, snapshot) = reload(h, store);
    assert_eq!(snapshot.leases, vec![record]);
    assert_eq!(snapshot.fence_high_water, 1);
}

/// A deleted lease is gone; the others stay.
pub fn delete_removes_lease(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    let (a, b) = (sample_lease(1, 1), sample_lease(2, 2));
    commit(&mut store, &[put(&a), put(&b), Mutation::FenceHighWater(2)]);
    commit(&mut store, &[delete(1)]);
    let (_, snapshot) = reload(h, store);
    assert_eq!(snapshot.leases, vec![b]);
    assert_eq!(
        snapshot.fence_high_water, 2,
        "a delete must not lower the fence"
    );
}

/// Within one batch, the later mutation of a lease wins.
pub fn order_within_batch_wins(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    let first = sample_lease(3, 3);
    let mut second = sample_lease(3, 3);
    second.owner.purpose = "second put wins".to_owned();
    commit(
        &mut store,
        &[
            put(&sample_lease(1, 1)),
            delete(1), // put then delete: absent
            delete(2),
            put(&sample_lease(2, 2)), // delete then put: present
            put(&first),
            put(&second), // put then put: the second
            Mutation::FenceHighWater(3),
        ],
    );
    let (_, snapshot) = reload(h, store);
    assert_eq!(snapshot.leases, vec![sample_lease(2, 2), second]);
}

/// A put of an existing lease replaces it, across batches.
pub fn overwrite_replaces_record(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    commit(&mut store, &[put(&sample_lease(5, 5))]);
    let mut renewed = sample_lease(5, 5);
    renewed.ttl_ms = 90_000;
    renewed.owner.purpose = "renewed with a longer ttl".to_owned();
    commit(&mut store, &[put(&renewed)]);
    let (_, snapshot) = reload(h, store);
    assert_eq!(snapshot.leases, vec![renewed]);
}

/// The fence high-water is the maximum ever committed: writing 10 then 5 leaves 10, also
/// across reopens and within one batch.
pub fn high_water_never_goes_backwards(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    commit(&mut store, &[Mutation::FenceHighWater(10)]);
    commit(&mut store, &[Mutation::FenceHighWater(5)]);
    let (mut store, snapshot) = reload(h, store);
    assert_eq!(snapshot.fence_high_water, 10, "10 then 5 must leave 10");

    commit(&mut store, &[Mutation::FenceHighWater(7)]);
    commit(
        &mut store,
        &[Mutation::FenceHighWater(12), Mutation::FenceHighWater(11)],
    );
    let (mut store, snapshot) = reload(h, store);
    assert_eq!(
        snapshot.fence_high_water, 12,
        "12 then 11 in one batch must leave 12"
    );

    commit(&mut store, &[Mutation::FenceHighWater(13)]);
    let (_, snapshot) = reload(h, store);
    assert_eq!(
        snapshot.fence_high_water, 13,
        "a higher value must raise it"
    );
}

/// The high-water is at least every stored lease's token (and id, from the same sequence), even
/// when no `FenceHighWater` was ever written.
pub fn high_water_covers_stored_leases(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    commit(
        &mut store,
        &[put(&sample_lease(7, 42)), put(&sample_lease(9, 3))],
    );
    let (_, snapshot) = reload(h, store);
    assert!(
        snapshot.fence_high_water >= 42,
        "high-water {} is below a stored token 42",
        snapshot.fence_high_water
    );
}

/// A batch mixing puts, deletes and a fence raise is applied as a whole.
pub fn multi_mutation_batch_applies_whole(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    commit(
        &mut store,
        &[
            put(&sample_lease(1, 1)),
            put(&sample_lease(2, 2)),
            Mutation::FenceHighWater(2),
        ],
    );
    // A break, as the lock table emits it: revoke, regrant, advance the fence.
    commit(
        &mut store,
        &[
            delete(1),
            put(&sample_lease(3, 3)),
            put(&sample_lease(4, 4)),
            delete(2),
            Mutation::FenceHighWater(4),
        ],
    );
    let (_, snapshot) = reload(h, store);
    assert_eq!(
        snapshot.leases,
        vec![sample_lease(3, 3), sample_lease(4, 4)]
    );
    assert_eq!(snapshot.fence_high_water, 4);
}

/// Committing an empty batch succeeds and changes nothing.
pub fn empty_batch_is_a_no_op(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    commit(
        &mut store,
        &[put(&sample_lease(1, 1)), Mutation::FenceHighWater(1)],
    );
    commit(&mut store, &[]);
    let (_, snapshot) = reload(h, store);
    assert_eq!(snapshot.leases, vec![sample_lease(1, 1)]);
    assert_eq!(snapshot.fence_high_water, 1);
}

/// One batch of 1,000 mutations — the committer concatenates concurrent jobs, so a backend
/// must take large batches, atomically.
pub fn large_batch_round_trips(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    let records: Vec<_> = (1..=1_000).map(|id| sample_lease(id, id)).collect();
    let mut batch: Vec<_> = records.iter().map(put).collect();
    batch.push(Mutation::FenceHighWater(1_000));
    commit(&mut store, &batch);
    let (_, snapshot) = reload(h, store);
    assert_eq!(snapshot.leases, records);
    assert_eq!(snapshot.fence_high_water, 1_000);
}

/// 10,000 leases in batches of 100, half of them deleted again, round-trip.
pub fn many_leases_round_trip(h: &mut dyn Harness) {
    const LEASES: u64 = 10_000;
    const BATCH: u64 = 100;
    let mut store = fresh_loaded(h);
    for start in (1..=LEASES).step_by(BATCH as usize) {
        let end = start + BATCH - 1;
        let mut batch: Vec<_> = (start..=end).map(|id| put(&sample_lease(id, id))).collect();
        batch.push(Mutation::FenceHighWater(end));
        commit(&mut store, &batch);
    }
    for start in (1..=LEASES).step_by(BATCH as usize) {
        let odd: Vec<_> = (start..start + BATCH)
            .filter(|id| id % 2 == 1)
            .map(delete)
            .collect();
        commit(&mut store, &odd);
    }
    let (_, snapshot) = reload(h, store);
    let expected: Vec<_> = (1..=LEASES)
        .filter(|id| id % 2 == 0)
        .map(|id| sample_lease(id, id))
        .collect();
    assert_eq!(snapshot.leases.len(), expected.len());
    assert!(
        snapshot.leases == expected,
        "10,000-lease round trip differs"
    );
    assert_eq!(snapshot.fence_high_water, LEASES);
}

/// State survives several close/reopen cycles, with writes in between.
pub fn durable_across_reopens(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    commit(
        &mut store,
        &[put(&sample_lease(1, 1)), Mutation::FenceHighWater(1)],
    );
    commit(
        &mut store,
        &[put(&sample_lease(2, 2)), Mutation::FenceHighWater(2)],
    );
    let (mut store, snapshot) = reload(h, store);
    assert_eq!(
        snapshot.leases,
        vec![sample_lease(1, 1), sample_lease(2, 2)]
    );

    commit(
        &mut store,
        &[
            delete(1),
            put(&sample_lease(3, 3)),
            Mutation::FenceHighWater(3),
        ],
    );
    let (store, snapshot) = reload(h, store);
    assert_eq!(
        snapshot.leases,
        vec![sample_lease(2, 2), sample_lease(3, 3)]
    );
    assert_eq!(snapshot.fence_high_water, 3);

    // A reopen with no writes in between changes nothing.
    let (_, again) = reload(h, store);
    assert_eq!(again, snapshot);
}

/// Owner fields with non-ASCII text and at their maximum lengths come back byte for byte.
pub fn unicode_and_long_fields_round_trip(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    let mut record = sample_lease(1, 1);
    record.resource = "configs/ключ/設定/🔒-aim_lock_config.conf".to_owned();
    record.owner.node = "ノード-7.example.com".to_owned();
    record.owner.user = "josé".to_owned();
    record.owner.boot_id = "b".repeat(255);
    record.owner.purpose = truncate_to(&"déploiement «vague 2» 🚀 ".repeat(60), 1024);
    let mut quoted = sample_lease(2, 2);
    quoted.owner.purpose = r#"sh -c 'echo "a\b" \u0000 {"json": [1]}'"#.to_owned();
    commit(&mut store, &[put(&record), put(&quoted)]);
    let (_, snapshot) = reload(h, store);
    assert_eq!(snapshot.leases, vec![record, quoted]);
}

/// Field values at the edges of their types round-trip.
pub fn extreme_values_round_trip(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    let mut record = sample_lease(u64::MAX - 1, u64::MAX - 1);
    record.ttl_ms = u64::MAX;
    record.slots = u32::MAX;
    record.granted_at_ms = 0;
    record.owner.pid = u32::MAX;
    record.owner.start_time = u64::MAX;
    commit(
        &mut store,
        &[put(&record), Mutation::FenceHighWater(u64::MAX - 1)],
    );
    let (_, snapshot) = reload(h, store);
    assert_eq!(snapshot.leases, vec![record]);
    assert_eq!(snapshot.fence_high_water, u64::MAX - 1);
}

/// Deleting a lease that is not there succeeds and changes nothing.
pub fn delete_absent_is_a_no_op(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    commit(&mut store, &[delete(999)]);
    commit(
        &mut store,
        &[put(&sample_lease(1, 1)), Mutation::FenceHighWater(1)],
    );
    commit(&mut store, &[delete(2), delete(999)]);
    let (_, snapshot) = reload(h, store);
    assert_eq!(snapshot.leases, vec![sample_lease(1, 1)]);
    assert_eq!(snapshot.fence_high_water, 1);
}

/// `lock_delay_ms` round-trips, at zero, a typical value and the edge of its type.
pub fn lock_delay_round_trips(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    let records: Vec<_> = [(1, 0), (2, 15_000), (3, u64::MAX)]
        .into_iter()
        .map(|(id, delay)| LeaseRecord {
            lock_delay_ms: delay,
            ..sample_lease(id, id)
        })
        .collect();
    commit(&mut store, &records.iter().map(put).collect::<Vec<_>>());
    let (_, snapshot) = reload(h, store);
    assert_eq!(snapshot.leases, records);
}

/// A stored lease that is damaged (bytes no version of the store writes) fails the load as
/// [`StoreError::Corrupt`]: never skipped, never guessed at — a lease lost silently would let
/// its resource be granted twice.
pub fn a_damaged_lease_fails_the_load(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    commit(
        &mut store,
        &[put(&sample_lease(7, 7)), Mutation::FenceHighWater(40)],
    );
    let mut store = h.write_raw_lease(store, 41, b"\xff\x00 not a lease");
    match store.load() {
        Err(StoreError::Corrupt(what)) => assert!(what.contains("41"), "{what}"),
        other => panic!("expected the load to fail as Corrupt, got {other:?}"),
    }
}

/// Records what a streaming load hands over, and when.
#[derive(Default)]
struct Recorder {
    expected: Vec<usize>,
    chunks: usize,
    leases: Vec<LeaseRecord>,
    /// Fail on this chunk (1-based).
    fail_at: Option<usize>,
}

impl LeaseSink for Recorder {
    fn expect(&mut self, leases: usize) {
        assert_eq!(self.chunks, 0, "`expect` must come before any chunk");
        self.expected.push(leases);
    }

    fn leases(&mut self, chunk: &mut LeaseChunk) -> Result<(), StoreError> {
        self.chunks += 1;
        if self.fail_at == Some(self.chunks) {
            return Err(StoreError::Io("the sink gave up".to_owned()));
        }
        self.leases
            .extend(chunk.iter().map(|lease| lease.to_record()));
        // Swapped out, as a sink that keeps chunks does: the store must carry on regardless.
        std::mem::take(chunk);
        Ok(())
    }
}

/// `load_streaming` hands every lease `load` returns to the sink exactly once (over several
/// chunks) and returns the rest of the same state.
pub fn streaming_load_matches_load(h: &mut dyn Harness) {
    const LEASES: u64 = 4_200;
    const BATCH: u64 = 100;
    let mut store = fresh_loaded(h);
    for start in (1..=LEASES).step_by(BATCH as usize) {
        let end = start + BATCH - 1;
        let mut batch: Vec<_> = (start..=end).map(|id| put(&sample_lease(id, id))).collect();
        batch.push(Mutation::FenceHighWater(end));
        commit(&mut store, &batch);
    }
    commit(
        &mut store,
        &[
            delete(17),
            Mutation::PutHold(sample_hold(LEASES + 1)),
            Mutation::AppendAudit(sample_audit(9, 1_000, "configs/resource-1.conf")),
            Mutation::FenceHighWater(LEASES + 10),
        ],
    );
    let mut store = h.reopen(store);
    let mut sink = Recorder::default();
    let mut streamed = store.load_streaming(&mut sink).expect("load_streaming");
    assert!(
        streamed.leases.is_empty(),
        "streamed leases go to the sink, not the snapshot"
    );
    let (_, mut loaded) = reload(h, store);
    assert_eq!(
        loaded.leases.len() as u64,
        LEASES - 1,
        "every lease but the deleted one"
    );
    assert!(sink.expected.len() <= 1);
    if let Some(&expected) = sink.expected.first() {
        assert_eq!(
            expected,
            loaded.leases.len(),
            "`expect` must be the lease count"
        );
    }
    sink.leases.sort_by_key(|record| record.lease);
    assert!(
        sink.leases == loaded.leases,
        "streamed leases differ from loaded ones"
    );
    streamed.holds.sort_by_key(|record| record.hold);
    loaded.leases.clear();
    assert_eq!(streamed, loaded);
    assert!(streamed.fence_high_water >= LEASES + 10);
}

/// An error from the sink stops a streaming load, which returns it.
pub fn streaming_load_stops_on_a_sink_error(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    let batch: Vec<_> = (1..=50).map(|id| put(&sample_lease(id, id))).collect();
    commit(&mut store, &batch);
    let mut store = h.reopen(store);
    let mut sink = Recorder {
        fail_at: Some(1),
        ..Recorder::default()
    };
    match store.load_streaming(&mut sink) {
        Err(StoreError::Io(reason)) => assert!(reason.contains("gave up"), "{reason}"),
        other => panic!("expected the sink's error, got {other:?}"),
    }
    assert_eq!(sink.chunks, 1, "no chunk after the failing one");
}

/// The longest prefix of `text` that fits in `max` bytes without splitting a character.
fn truncate_to(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(max);
    for c in text.chars() {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}
