//! Checks for holds: stored like leases, in their own keyspace, raising the shared fence.

use locksmith_core::{HoldId, LeaseId, Mutation};

use super::checks::{commit, fresh_loaded, reload};
use super::{Harness, sample_hold, sample_lease};

/// Holds are put, overwritten (a pending hold acknowledged) and deleted, in and across batches.
pub fn holds_put_delete_overwrite(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    let mut pending = sample_hold(2);
    pending.require_ack = true;
    pending.active_since_ms = None;
    commit(
        &mut store,
        &[
            Mutation::PutHold(sample_hold(1)),
            Mutation::PutHold(pending.clone()),
            Mutation::PutHold(sample_hold(3)),
            Mutation::DeleteHold(HoldId(3)), // put then delete in one batch: absent
            Mutation::DeleteHold(HoldId(99)), // absent: a no-op
        ],
    );
    let (mut store, snapshot) = reload(h, store);
    assert_eq!(snapshot.holds, vec![sample_hold(1), pending.clone()]);

    let mut acked = pending;
    acked.acked_by = Some("bob".to_owned());
    acked.active_since_ms = Some(1_700_000_100_000);
    commit(
        &mut store,
        &[
            Mutation::PutHold(acked.clone()),
            Mutation::DeleteHold(HoldId(1)),
        ],
    );
    let (_, snapshot) = reload(h, store);
    assert_eq!(snapshot.holds, vec![acked]);
}

/// Holds survive several reopens with writes in between, and a reopen alone changes nothing.
pub fn holds_survive_reopens(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    let mut odd = sample_hold(5);
    odd.reason = "gel vor dem Release — 凍結 🔒".to_owned();
    odd.duration_ms = u64::MAX;
    odd.placed_at_ms = 0;
    commit(&mut store, &[Mutation::PutHold(odd.clone())]);
    let (mut store, snapshot) = reload(h, store);
    assert_eq!(snapshot.holds, vec![odd.clone()]);

    commit(&mut store, &[Mutation::PutHold(sample_hold(6))]);
    let (store, snapshot) = reload(h, store);
    assert_eq!(snapshot.holds, vec![odd, sample_hold(6)]);
    let (_, again) = reload(h, store);
    assert_eq!(again, snapshot);
}

/// A lease and a hold with the same number are different records: deleting one leaves the
/// other.
pub fn holds_and_leases_are_separate(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    commit(
        &mut store,
        &[
            Mutation::PutLease(sample_lease(4, 4)),
            Mutation::PutHold(sample_hold(4)),
            Mutation::PutLease(sample_lease(8, 8)),
            Mutation::PutHold(sample_hold(8)),
        ],
    );
    commit(
        &mut store,
        &[
            Mutation::DeleteLease(LeaseId(4)),
            Mutation::DeleteHold(HoldId(8)),
        ],
    );
    let (_, snapshot) = reload(h, store);
    assert_eq!(snapshot.leases, vec![sample_lease(8, 8)]);
    assert_eq!(snapshot.holds, vec![sample_hold(4)]);
}

/// Hold ids come from the fencing sequence: a stored hold holds the high-water up, and so
/// does a deleted one once its id was committed with `FenceHighWater`.
pub fn hold_ids_raise_the_fence(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    commit(&mut store, &[Mutation::PutHold(sample_hold(30))]);
    let (mut store, snapshot) = reload(h, store);
    assert!(
        snapshot.fence_high_water >= 30,
        "high-water {} is below a stored hold id 30",
        snapshot.fence_high_water
    );
    commit(
        &mut store,
        &[
            Mutation::PutHold(sample_hold(31)),
            Mutation::FenceHighWater(31),
        ],
    );
    commit(
        &mut store,
        &[
            Mutation::DeleteHold(HoldId(30)),
            Mutation::DeleteHold(HoldId(31)),
        ],
    );
    let (_, snapshot) = reload(h, store);
    assert!(snapshot.holds.is_empty());
    assert_eq!(snapshot.fence_high_water, 31);
}
