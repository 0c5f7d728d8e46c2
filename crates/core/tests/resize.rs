//! Resizing a semaphore at runtime (`LockTable::resize`, and `Trusted::resize` acquires) and the
//! other trusted-acquire powers: a TTL that never expires in practice, and synthetic owners.
//!
//! The change must take effect: growing hands free slots to the queue at once; shrinking revokes
//! nobody but grants nothing while the holders are as many as the new size. A property test
//! checks, over random mixes of acquires, releases, waits, expiries and resizes, that no grant is
//! ever made while the holders are at least the size in force, and that the holders never exceed
//! the larger of the old and new size.

use locksmith_core::{
    Acquire, AcquireError, AcquireOutcome, Effect, Effects, EndCause, LeaseRecord, LeaseView,
    LockTable, Mutation, NO_EXPIRY_TTL_MS, Now, Owner, Snapshot, TableConfig, Trusted, WaiterId,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

mod common;

use common::{assert_audited, check_audit, granted, queued, table};

const WALL0: u64 = 1_700_000_000_000;
const TTL: u64 = 10_000;
const RES: &str = "reboot/default";

fn t(ms: u64) -> Now {
    Now::at(ms, WALL0 + ms)
}

fn owner(n: u32) -> Owner {
    Owner {
        node: format!("node-{n}"),
        pid: 1_000 + n,
        start_time: 50_000 + u64::from(n),
        boot_id: format!("boot-{n}"),
        user: "ops".to_string(),
        purpose: format!("test owner {n}"),
        pid_ns: None,
    }
}

/// A FleetLock-style owner: the node is a client id, the rest fixed labels.
fn synthetic(id: &str) -> Owner {
    Owner {
        node: id.to_string(),
        pid: 1,
        start_time: 1,
        boot_id: "fleetlock".to_string(),
        user: "fleetlock".to_string(),
        purpose: "fleetlock reboot group default".to_string(),
        pid_ns: None,
    }
}

fn req(owner: Owner, slots: u32, wait_ms: u64) -> Acquire {
    Acquire {
        resource: RES.to_string(),
        owner,
        ttl_ms: TTL,
        slots,
        wait_ms,
        lock_delay_ms: 0,
        trusted: Trusted::NONE,
    }
}

/// An acquire that resizes the semaphore to `slots` first.
fn sized(owner: Owner, slots: u32) -> Acquire {
    Acquire {
        trusted: Trusted {
            resize: true,
            ..Trusted::NONE
        },
        ..req(owner, slots, 0)
    }
}

/// What the FleetLock front end asks for: resize, no expiry, synthetic owner.
fn fleetlock(id: &str, slots: u32) -> Acquire {
    Acquire {
        ttl_ms: NO_EXPIRY_TTL_MS,
        trusted: Trusted {
            resize: true,
            long_ttl: true,
            synthetic_owner: true,
        },
        ..req(synthetic(id), slots, 0)
    }
}

fn hot(outcome: Result<AcquireOutcome, AcquireError>) {
    match outcome {
        Err(AcquireError::Hot { .. }) => {}
        other => panic!("expected HOT, got {other:?}"),
    }
}

fn grants(fx: &Effects) -> Vec<WaiterId> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Granted { waiter, .. } => Some(*waiter),
            _ => None,
        })
        .collect()
}

fn holders(table: &LockTable, now: Now) -> usize {
    table.resource(RES, now).holders.len()
}

fn release(table: &mut LockTable, lease: &LeaseView, now: Now, fx: &mut Effects) {
    table
        .release(lease.lease, Some(lease.token), now, fx)
        .expect("release");
}

// ---- resize ----------------------------------------------------------------------------------

#[test]
fn growing_hands_free_slots_to_the_queue_at_once() {
    let mut table = table();
    let mut fx = Effects::new();
    granted(table.acquire(req(owner(1), 1, 0), t(0), &mut fx));
    let w2 = queued(table.acquire(req(owner(2), 1, 60_000), t(1), &mut fx));
    let w3 = queued(table.acquire(req(owner(3), 1, 60_000), t(2), &mut fx));
    let w4 = queued(table.acquire(req(owner(4), 1, 60_000), t(3), &mut fx));

    let mut fx = Effects::new();
    assert_eq!(table.resize(RES, 3, t(10), &mut fx), Ok(Some(1)));
    // Two free slots, served first come first served; the third waiter still waits.
    assert_eq!(grants(&fx), vec![w2, w3]);
    assert_audited(&fx);
    let view = table.resource(RES, t(10));
    assert_eq!(view.slots, 3);
    assert_eq!(view.holders.len(), 3);
    assert_eq!(view.waiters.len(), 1);
    // Every lease, old and new, reports the new size.
    for h in &view.holders {
        assert_eq!(table.lease(h.lease).map(|l| l.slots), Some(3));
    }
    // The last waiter asked for 1 slot; it now waits for the resized semaphore and is served
    // when a slot frees.
    let first = table.lease(view.holders[0].lease).expect("live");
    let mut fx = Effects::new();
    release(&mut table, &first, t(20), &mut fx);
    assert_eq!(grants(&fx), vec![w4]);
}

#[test]
fn shrinking_keeps_every_holder_and_grants_nothing_until_they_are_fewer_than_the_new_size() {
    let mut table = table();
    let mut fx = Effects::new();
    let leases: Vec<LeaseView> = (1..=3)
        .map(|n| granted(table.acquire(req(owner(n), 3, 0), t(0), &mut fx)))
        .collect();
    let waiter = queued(table.acquire(req(owner(9), 3, 60_000), t(1), &mut fx));

    let mut fx = Effects::new();
    assert_eq!(table.resize(RES, 1, t(2), &mut fx), Ok(Some(3)));
    assert!(fx.is_empty(), "a shrink revokes and grants nothing: {fx:?}");
    assert_eq!(holders(&table, t(2)), 3);
    assert_eq!(table.resource(RES, t(2)).slots, 1);
    // A newcomer asking for the new size is refused (the queue is not empty either); the old
    // size is now a mismatch.
    hot(table.acquire(req(owner(5), 1, 0), t(3), &mut fx));
    assert!(matches!(
        table.acquire(req(owner(6), 3, 0), t(3), &mut fx),
        Err(AcquireError::SlotsMismatch {
            held_slots: 1,
            asked_slots: 3,
            ..
        })
    ));
    // Two leave: one holder is as many as one slot, so still nothing is granted.
    for lease in &leases[..2] {
        let mut fx = Effects::new();
        release(&mut table, lease, t(4), &mut fx);
        assert!(grants(&fx).is_empty(), "granted at {fx:?}");
    }
    assert_eq!(holders(&table, t(4)), 1);
    // The last leaves: the waiter gets the one slot, and only it.
    let mut fx = Effects::new();
    release(&mut table, &leases[2], t(5), &mut fx);
    assert_eq!(grants(&fx), vec![waiter]);
    hot(table.acquire(req(owner(7), 1, 0), t(6), &mut fx));
    assert_eq!(holders(&table, t(6)), 1);
}

#[test]
fn resize_of_an_unknown_resource_changes_nothing_and_bad_sizes_are_refused() {
    let mut table = table();
    let mut fx = Effects::new();
    assert_eq!(table.resize(RES, 2, t(0), &mut fx), Ok(None));
    assert!(fx.is_empty());
    assert_eq!(table.resources(t(0)), Vec::new());
    for bad in [0, TableConfig::default().max_slots + 1] {
        let err = table.resize(RES, bad, t(0), &mut fx).expect_err("invalid");
        assert_eq!(err.field, "slots");
    }
    let err = table.resize("/bad", 1, t(0), &mut fx).expect_err("invalid");
    assert_eq!(err.field, "resource");
}

#[test]
fn resize_persists_nothing_and_restore_takes_the_newest_lease_size() {
    let mut table = table();
    let mut fx = Effects::new();
    granted(table.acquire(req(owner(1), 1, 0), t(0), &mut fx));
    let mut fx = Effects::new();
    assert_eq!(table.resize(RES, 2, t(1), &mut fx), Ok(Some(1)));
    assert!(fx.is_empty(), "{fx:?}");
    // A grant under the new size stores it; a restore takes the newest lease's size.
    let mut log = Effects::new();
    granted(table.acquire(req(owner(2), 2, 0), t(2), &mut log));
    let records: Vec<LeaseRecord> = [LeaseRecord {
        lease: locksmith_core::LeaseId(1),
        resource: RES.to_string(),
        owner: owner(1),
        token: locksmith_core::FenceToken(1),
        ttl_ms: TTL,
        slots: 1,
        granted_at_ms: WALL0,
        lock_delay_ms: 0,
    }]
    .into_iter()
    .chain(log.iter().filter_map(|e| match e {
        Effect::Persist(Mutation::PutLease(r)) => Some(r.clone()),
        _ => None,
    }))
    .collect();
    assert_eq!(records[1].slots, 2);
    let restored = LockTable::restore(
        TableConfig::default(),
        Snapshot {
            leases: records,
            fence_high_water: 2,
            ..Snapshot::default()
        },
        t(0),
    );
    assert_eq!(restored.resource(RES, t(0)).slots, 2);
}

#[test]
fn a_public_acquire_of_another_size_is_still_refused_but_a_trusted_one_resizes() {
    let mut table = table();
    let mut fx = Effects::new();
    let first = granted(table.acquire(req(owner(1), 1, 0), t(0), &mut fx));
    assert!(matches!(
        table.acquire(req(owner(2), 2, 0), t(1), &mut fx),
        Err(AcquireError::SlotsMismatch { .. })
    ));
    let mut fx = Effects::new();
    let second = granted(table.acquire(sized(owner(2), 2), t(2), &mut fx));
    assert_audited(&fx);
    assert_eq!(second.slots, 2);
    assert_eq!(table.lease(first.lease).map(|l| l.slots), Some(2));
    // Same process again: the same lease (recursive), no second slot.
    let again = granted(table.acquire(sized(owner(2), 2), t(3), &mut fx));
    assert!(again.reacquired);
    assert_eq!(again.lease, second.lease);
    assert_eq!(holders(&table, t(3)), 2);
    // Shrunk by the next trusted acquire: it is refused, both holders stay.
    hot(table.acquire(sized(owner(3), 1), t(4), &mut fx));
    assert_eq!(holders(&table, t(4)), 2);
    assert_eq!(table.resource(RES, t(4)).slots, 1);
    // A holder re-acquiring under the smaller size keeps its lease.
    let kept = granted(table.acquire(sized(owner(1), 1), t(5), &mut fx));
    assert!(kept.reacquired);
    assert_eq!(kept.lease, first.lease);
    assert_eq!(kept.slots, 1);
}

// ---- long TTLs and synthetic owners -----------------------------------------------------------

#[test]
fn only_a_trusted_acquire_may_ask_for_a_ttl_that_never_expires() {
    let mut table = table();
    let mut fx = Effects::new();
    let public = Acquire {
        ttl_ms: NO_EXPIRY_TTL_MS,
        ..req(owner(1), 1, 0)
    };
    match table.acquire(public, t(0), &mut fx) {
        Err(AcquireError::Invalid(e)) => assert_eq!(e.field, "ttl_ms"),
        other => panic!("expected ttl_ms to be refused, got {other:?}"),
    }
    let too_long = Acquire {
        ttl_ms: NO_EXPIRY_TTL_MS + 1,
        ..fleetlock("c0ffee", 1)
    };
    match table.acquire(too_long, t(0), &mut fx) {
        Err(AcquireError::Invalid(e)) => assert_eq!(e.field, "ttl_ms"),
        other => panic!("expected ttl_ms to be refused, got {other:?}"),
    }
    let lease = granted(table.acquire(fleetlock("c0ffee", 1), t(0), &mut fx));
    assert_eq!(lease.ttl_ms, NO_EXPIRY_TTL_MS);
    // A year later, no heartbeat: still held, not even STALE.
    let year = 365 * 24 * 3600 * 1000;
    let mut fx = Effects::new();
    assert_eq!(table.advance(t(year), &mut fx), 0);
    let view = table.resource(RES, t(year));
    assert_eq!(view.holders.len(), 1);
    assert!(!view.holders[0].stale);
    // Survives a restart the same way, and still ends by release.
    let restored = LockTable::restore(
        TableConfig::default(),
        Snapshot {
            leases: vec![LeaseRecord {
                lease: lease.lease,
                resource: RES.to_string(),
                owner: lease.owner.clone(),
                token: lease.token,
                ttl_ms: lease.ttl_ms,
                slots: 1,
                granted_at_ms: lease.granted_at_ms,
                lock_delay_ms: 0,
            }],
            fence_high_water: lease.token.0,
            ..Snapshot::default()
        },
        t(0),
    );
    let mut restored = restored;
    assert_eq!(restored.advance(t(year), &mut fx), 0);
    let mut fx = Effects::new();
    release(&mut restored, &lease, t(year + 1), &mut fx);
    assert!(restored.resources(t(year + 1)).is_empty());
}

#[test]
fn a_synthetic_owner_is_no_news_of_its_nodes_boot() {
    let mut table = table();
    let mut fx = Effects::new();
    // A real process on host `node-1` holds a lock.
    let real = granted(table.acquire(
        Acquire {
            resource: "configs/app.conf".to_string(),
            ..req(owner(1), 1, 0)
        },
        t(0),
        &mut fx,
    ));
    // A FleetLock client whose id happens to be that host's name takes a reboot slot: its boot
    // id is a label, not a new boot of `node-1`, so the real lock is not reclaimed.
    let mut fx = Effects::new();
    granted(table.acquire(fleetlock("node-1", 1), t(1), &mut fx));
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::Ended { .. })),
        "{fx:?}"
    );
    assert!(table.lease(real.lease).is_some());
    // Without the flag the same request would have been read as a reboot of node-1.
    let mut fx = Effects::new();
    let untrusted = Acquire {
        resource: "other".to_string(),
        ..req(synthetic("node-1"), 1, 0)
    };
    granted(table.acquire(untrusted, t(2), &mut fx));
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Ended {
            cause: EndCause::NodeRebooted { .. },
            ..
        }
    )));
}

// ---- property: no grant while the holders are at least the size in force ---------------------

#[derive(Debug, Clone)]
enum Op {
    /// Acquire as `owner`: with `resize`, a trusted acquire that sets the size to `size`;
    /// otherwise a public one of the size in force, waiting if `wait`.
    Acquire {
        owner: u32,
        resize: Option<u32>,
        wait: bool,
    },
    /// Release `owner`'s lease, if it holds one.
    Release { owner: u32 },
    /// Resize to `size`.
    Resize { size: u32 },
    /// Move the clock (leases expire after `TTL`, waits after `WAIT`).
    Advance { ms: u64 },
}

const OWNERS: u32 = 7;
const WAIT: u64 = 15_000;

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..OWNERS, proptest::option::weighted(0.4, 1..=4u32), any::<bool>())
            .prop_map(|(owner, resize, wait)| Op::Acquire { owner, resize, wait }),
        3 => (0..OWNERS).prop_map(|owner| Op::Release { owner }),
        2 => (1..=4u32).prop_map(|size| Op::Resize { size }),
        2 => (0..6_000u64).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn run(initial: u32, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut table = table();
    let mut size = initial;
    let mut now = 0;
    for op in ops {
        let before = holders(&table, t(now));
        let mut fx = Effects::new();
        match *op {
            Op::Acquire {
                owner: o,
                resize,
                wait,
            } => {
                let wait_ms = if wait { WAIT } else { 0 };
                let r = match resize {
                    Some(n) => {
                        size = n;
                        Acquire {
                            wait_ms,
                            ..sized(owner(o), n)
                        }
                    }
                    None => req(owner(o), size, wait_ms),
                };
                match table.acquire(r, t(now), &mut fx) {
                    Ok(_) | Err(AcquireError::Hot { .. }) => {}
                    Err(e) => prop_assert!(false, "unexpected refusal {e:?}"),
                }
            }
            Op::Release { owner: o } => {
                let lease = table
                    .resource(RES, t(now))
                    .holders
                    .iter()
                    .find(|h| h.owner == owner(o))
                    .map(|h| (h.lease, h.token));
                if let Some((lease, token)) = lease {
                    table
                        .release(lease, Some(token), t(now), &mut fx)
                        .map_err(|e| TestCaseError::fail(format!("release: {e}")))?;
                }
            }
            Op::Resize { size: n } => {
                let old = size;
                size = n;
                table
                    .resize(RES, n, t(now), &mut fx)
                    .map_err(|e| TestCaseError::fail(format!("resize: {e}")))?;
                let after = holders(&table, t(now));
                prop_assert!(
                    after <= before.max(old as usize).max(n as usize),
                    "{after} holders after resize {old} -> {n} (had {before})"
                );
            }
            Op::Advance { ms } => {
                now += ms;
                table.advance(t(now), &mut fx);
            }
        }
        check_audit(&fx).map_err(TestCaseError::fail)?;
        // Replay the operation's effects: every grant must find fewer holders than the size.
        let mut count = before;
        for e in &fx {
            match e {
                Effect::Ended { resource, .. } if resource == RES => {
                    count = count.checked_sub(1).ok_or_else(|| {
                        TestCaseError::fail(format!("more ends than holders: {fx:?}"))
                    })?;
                }
                Effect::Persist(Mutation::PutLease(r)) if r.resource == RES => {
                    prop_assert!(
                        count < size as usize,
                        "granted with {count} holders at size {size}: {op:?} {fx:?}"
                    );
                    prop_assert_eq!(r.slots, size);
                    count += 1;
                }
                _ => {}
            }
        }
        let view = table.resource(RES, t(now));
        prop_assert_eq!(count, view.holders.len(), "effects disagree with the table");
        prop_assert!(view.holders.len() <= before.max(size as usize));
        if !view.holders.is_empty() {
            prop_assert_eq!(view.slots, size);
        }
        // Nobody waits behind a free slot.
        if !view.waiters.is_empty() {
            prop_assert!(view.holders.len() >= size as usize, "{view:?}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// Over random acquires, releases, waits, expiries and resizes: no grant is made while the
    /// holders are at least the size in force, a resize never lifts the holders above the larger
    /// of the old and new size, and no waiter is left behind a free slot.
    #[test]
    fn no_grant_while_holders_are_at_least_the_size_in_force(
        initial in 1..=4u32,
        ops in proptest::collection::vec(op_strategy(), 1..80),
    ) {
        run(initial, &ops)?;
    }
}
