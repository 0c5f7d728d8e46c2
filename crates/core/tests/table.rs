//! Focused tests of the lock table, one behaviour (or one bug) per test, on a fake clock.
//!
//! Every operation gets `t(ms)`: a monotonic instant of `ms` and a wall clock offset from it, so
//! tests never read a real clock and are deterministic.

use locksmith_core::{
    Acquire, AcquireError, AcquireOutcome, AuditKind, AuditRecord, Effect, Effects, EndCause,
    FenceError, FenceToken, LeaseError, LeaseId, LeaseRecord, LeaseView, LockState, LockTable,
    Mutation, Now, Owner, Released, Snapshot, TableConfig, Trusted, WaiterId,
};

mod common;

use common::{assert_audited, granted, queued, slots_mismatch, table};

const WALL0: u64 = 1_700_000_000_000;
const TTL: u64 = 10_000;

/// The instant `ms` on the fake clock (the wall clock runs alongside, offset).
fn t(ms: u64) -> Now {
    Now::at(ms, WALL0 + ms)
}

/// A distinct, complete process identity per `n`.
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

fn req(resource: &str, owner: Owner, slots: u32, wait_ms: u64) -> Acquire {
    Acquire {
        resource: resource.to_string(),
        owner,
        ttl_ms: TTL,
        slots,
        wait_ms,
        lock_delay_ms: 0,
        trusted: Trusted::NONE,
    }
}

/// Grants `resource` (exclusive) to `owner(n)` at `now`, expecting an immediate grant.
fn lock(table: &mut LockTable, resource: &str, n: u32, now: Now) -> LeaseView {
    let mut fx = Effects::new();
    granted(table.acquire(req(resource, owner(n), 1, 0), now, &mut fx))
}

/// The waiters granted by these effects, in order, with their leases.
fn grants(fx: &Effects) -> Vec<(WaiterId, LeaseView)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Granted { waiter, lease } => Some((*waiter, lease.clone())),
            _ => None,
        })
        .collect()
}

fn holder_leases(table: &LockTable, resource: &str, now: Now) -> Vec<LeaseId> {
    table
        .resource(resource, now)
        .holders
        .iter()
        .map(|h| h.lease)
        .collect()
}

fn invalid_field(outcome: Result<AcquireOutcome, AcquireError>) -> String {
    match outcome {
        Err(AcquireError::Invalid(e)) => e.field,
        other => panic!("expected an invalid request, got {other:?}"),
    }
}

// ---- grants and tokens ------------------------------------------------------------------------

#[test]
fn grants_return_strictly_increasing_tokens() {
    let mut table = table();
    let mut last = 0;
    for (i, name) in ["a", "b", "c", "d"].into_iter().enumerate() {
        let n = u32::try_from(i).expect("small index");
        let lease = lock(&mut table, name, n, t(0));
        assert!(lease.token.0 > last, "token {} after {last}", lease.token);
        assert!(!lease.reacquired);
        last = lease.token.0;
    }
    // Releasing and granting again never reuses a token.
    let mut fx = Effects::new();
    let first = table.lease(LeaseId(1)).expect("lease 1 is live");
    table
        .release(first.lease, Some(first.token), t(1), &mut fx)
        .expect("release");
    let again = lock(&mut table, "a", 9, t(2));
    assert!(again.token.0 > last);
    assert_eq!(table.fence_high_water(), again.token.0);
}

#[test]
fn grant_persists_high_water_and_lease_record() {
    let mut table = table();
    let mut fx = Effects::new();
    let lease = granted(table.acquire(req("cfg/a.conf", owner(1), 1, 0), t(5), &mut fx));
    assert_eq!(
        fx,
        vec![
            Effect::Persist(Mutation::FenceHighWater(lease.token.0)),
            Effect::Persist(Mutation::PutLease(LeaseRecord {
                lease: lease.lease,
                resource: "cfg/a.conf".to_string(),
                owner: owner(1),
                token: lease.token,
                ttl_ms: TTL,
                slots: 1,
                granted_at_ms: WALL0 + 5,
                lock_delay_ms: 0,
            })),
            Effect::Persist(Mutation::AppendAudit(AuditRecord {
                seq: 0,
                at_ms: WALL0 + 5,
                lease: Some(lease.lease),
                token: Some(lease.token),
                owner: Some(owner(1)),
                ..AuditRecord::new("cfg/a.conf", AuditKind::Granted)
            })),
        ]
    );
}

#[test]
fn every_grant_and_end_emits_exactly_one_matching_audit_record_left_for_the_driver_to_number() {
    let mut table = table();
    let mut all = Effects::new();
    let mut fx = Effects::new();
    // A direct grant, a queued grant handed over on release, an expiry, a reclaim on reboot.
    let a = granted(table.acquire(req("r", owner(1), 1, 0), t(0), &mut fx));
    queued(table.acquire(req("r", owner(2), 1, 60_000), t(1), &mut fx));
    table
        .release(a.lease, Some(a.token), t(2), &mut fx)
        .expect("release");
    assert_eq!(grants(&fx).len(), 1);
    all.append(&mut fx);
    table.advance(t(2 + TTL), &mut fx);
    assert_eq!(table.lease_count(), 0, "the handed-over lease expired");
    all.append(&mut fx);
    granted(table.acquire(req("s", owner(3), 1, 0), t(3 + TTL), &mut fx));
    let rebooted = Owner {
        boot_id: "boot-3b".to_string(),
        ..owner(3)
    };
    granted(table.acquire(req("s", rebooted, 1, 0), t(4 + TTL), &mut fx));
    all.append(&mut fx);
    assert_audited(&all);
    let labels: Vec<&str> = common::audits(&all).iter().map(|a| a.label()).collect();
    assert_eq!(
        labels,
        vec![
            "granted",
            "released",
            "granted",
            "expired",
            "granted",
            "node_rebooted",
            "granted"
        ]
    );
    // Numbered by the driver as it seals each batch (one sequence for every domain), not here.
    let seqs: Vec<u64> = common::audits(&all).iter().map(|a| a.seq).collect();
    assert_eq!(seqs, vec![0; 7]);
    // Refusals, renewals and queueing write nothing to the audit trail.
    let mut fx = Effects::new();
    let _ = table.acquire(req("s", owner(5), 1, 0), t(5 + TTL), &mut fx);
    queued(table.acquire(req("s", owner(6), 1, 60_000), t(5 + TTL), &mut fx));
    let live = table.resource("s", t(5 + TTL)).holders[0].lease;
    table.renew(live, None, t(6 + TTL), &mut fx).expect("renew");
    assert!(fx.is_empty(), "{fx:?}");
}

#[test]
fn exclusive_lock_refuses_second_owner_with_hot_naming_the_holder() {
    let mut table = table();
    let held = lock(&mut table, "cfg/aim.conf", 1, t(0));
    let mut fx = Effects::new();
    match table.acquire(req("cfg/aim.conf", owner(2), 1, 0), t(100), &mut fx) {
        Err(AcquireError::Hot { resource, holders }) => {
            assert_eq!(resource, "cfg/aim.conf");
            assert_eq!(holders.len(), 1);
            assert_eq!(holders[0].lease, held.lease);
            assert_eq!(holders[0].token, held.token);
            assert_eq!(holders[0].owner, owner(1));
            assert_eq!(holders[0].granted_at_ms, WALL0);
        }
        other => panic!("expected HOT, got {other:?}"),
    }
    assert!(fx.is_empty(), "a refusal changes nothing: {fx:?}");
}

#[test]
fn wait_zero_fails_at_once_and_does_not_queue() {
    let mut table = table();
    lock(&mut table, "r", 1, t(0));
    let mut fx = Effects::new();
    let refused = table.acquire(req("r", owner(2), 1, 0), t(0), &mut fx);
    assert!(
        matches!(refused, Err(AcquireError::Hot { .. })),
        "{refused:?}"
    );
    assert_eq!(table.waiter_count(), 0);
    assert!(table.resource("r", t(0)).waiters.is_empty());
}

// ---- the queue ---------------------------------------------------------------------------------

#[test]
fn waiter_is_granted_on_release_and_persist_effects_precede_granted() {
    let mut table = table();
    let held = lock(&mut table, "r", 1, t(0));
    let mut fx = Effects::new();
    let waiter = queued(table.acquire(req("r", owner(2), 1, 60_000), t(10), &mut fx));
    assert!(fx.is_empty(), "queueing persists nothing: {fx:?}");
    assert_eq!(table.waiter_count(), 1);

    let mut fx = Effects::new();
    let released = table
        .release(held.lease, Some(held.token), t(20), &mut fx)
        .expect("release");
    assert!(!released.already);
    assert_eq!(released.token, held.token);

    assert_audited(&fx);
    let got = grants(&fx);
    assert_eq!(got.len(), 1, "{fx:?}");
    let (who, lease) = &got[0];
    assert_eq!(*who, waiter);
    assert_eq!(lease.owner, owner(2));
    assert!(lease.token > held.token);
    assert_eq!(table.waiter_count(), 0);
    assert_eq!(holder_leases(&table, "r", t(20)), vec![lease.lease]);

    // Every Persist of this operation comes before the Granted delivery, and it includes the
    // deletion of the old lease and the new lease's record and high-water mark.
    let granted_at = fx
        .iter()
        .position(|e| matches!(e, Effect::Granted { .. }))
        .expect("a Granted effect");
    let last_persist = fx
        .iter()
        .rposition(|e| matches!(e, Effect::Persist(_)))
        .expect("persist effects");
    assert!(last_persist < granted_at, "{fx:?}");
    assert!(fx.contains(&Effect::Persist(Mutation::DeleteLease(held.lease))));
    assert!(fx.contains(&Effect::Persist(Mutation::FenceHighWater(lease.token.0))));
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Persist(Mutation::PutLease(r)) if r.lease == lease.lease && r.token == lease.token
    )));
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Ended { lease, cause: EndCause::Released, .. } if *lease == held.lease
    )));
}

#[test]
fn three_waiters_are_granted_first_in_first_out() {
    let mut table = table();
    let mut current = lock(&mut table, "r", 0, t(0));
    let mut fx = Effects::new();
    let waiters: Vec<WaiterId> = (1..=3)
        .map(|n| queued(table.acquire(req("r", owner(n), 1, 60_000), t(u64::from(n)), &mut fx)))
        .collect();
    let owners: Vec<Owner> = table
        .resource("r", t(5))
        .waiters
        .iter()
        .map(|w| w.owner.clone())
        .collect();
    assert_eq!(owners, vec![owner(1), owner(2), owner(3)]);

    for (i, expected) in waiters.iter().enumerate() {
        let mut fx = Effects::new();
        table
            .release(
                current.lease,
                Some(current.token),
                t(100 + i as u64),
                &mut fx,
            )
            .expect("release");
        assert_audited(&fx);
        let got = grants(&fx);
        assert_eq!(got.len(), 1, "{fx:?}");
        assert_eq!(got[0].0, *expected, "waiter {i} served out of order");
        assert!(got[0].1.token > current.token);
        current = got[0].1.clone();
    }
    assert_eq!(table.waiter_count(), 0);
}

#[test]
fn no_barging_a_freed_slot_goes_to_the_queued_waiter_not_a_new_acquirer() {
    let mut table = table();
    let mut fx = Effects::new();
    // A 2-slot semaphore, full, with one waiter.
    let a = granted(table.acquire(req("sem", owner(1), 2, 0), t(0), &mut fx));
    granted(table.acquire(req("sem", owner(2), 2, 0), t(0), &mut fx));
    let waiter = queued(table.acquire(req("sem", owner(3), 2, 60_000), t(1), &mut fx));

    // Even with a wait=0 newcomer arriving in the same instant the slot frees, the waiter wins.
    let mut fx = Effects::new();
    table
        .release(a.lease, Some(a.token), t(10), &mut fx)
        .expect("release");
    let got = grants(&fx);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, waiter);
    let refused = table.acquire(req("sem", owner(4), 2, 0), t(10), &mut fx);
    assert!(
        matches!(refused, Err(AcquireError::Hot { .. })),
        "{refused:?}"
    );

    // And while a waiter is queued, a newcomer may not take a slot that is free "on paper":
    // queue a waiter behind the now-full semaphore, then check a newcomer is refused.
    let queued_second = queued(table.acquire(req("sem", owner(5), 2, 60_000), t(11), &mut fx));
    let refused = table.acquire(req("sem", owner(6), 2, 0), t(12), &mut fx);
    assert!(
        matches!(refused, Err(AcquireError::Hot { .. })),
        "{refused:?}"
    );
    let late = queued(table.acquire(req("sem", owner(7), 2, 60_000), t(13), &mut fx));
    assert!(late > queued_second);
    let owners: Vec<Owner> = table
        .resource("sem", t(13))
        .waiters
        .iter()
        .map(|w| w.owner.clone())
        .collect();
    assert_eq!(owners, vec![owner(5), owner(7)], "newcomers queue behind");
}

#[test]
fn waiter_timeout_produces_wait_timed_out_with_hot_error() {
    let mut table = table();
    let held = lock(&mut table, "r", 1, t(0));
    let mut fx = Effects::new();
    let waiter = queued(table.acquire(req("r", owner(2), 1, 3_000), t(1_000), &mut fx));

    let mut fx = Effects::new();
    table.advance(t(3_999), &mut fx);
    assert!(fx.is_empty(), "still within the wait: {fx:?}");
    assert_eq!(table.waiter_count(), 1);

    table.advance(t(4_000), &mut fx);
    assert_eq!(fx.len(), 1, "{fx:?}");
    match &fx[0] {
        Effect::WaitTimedOut {
            waiter: w,
            error: AcquireError::Hot { resource, holders },
        } => {
            assert_eq!(*w, waiter);
            assert_eq!(resource, "r");
            assert_eq!(holders.len(), 1);
            assert_eq!(holders[0].lease, held.lease);
            assert_eq!(holders[0].owner, owner(1));
        }
        other => panic!("expected WaitTimedOut with HOT, got {other:?}"),
    }
    assert_eq!(table.waiter_count(), 0);
    assert!(table.resource("r", t(4_000)).waiters.is_empty());

    // The timed-out waiter gets nothing when the holder leaves later.
    let mut fx = Effects::new();
    table
        .release(held.lease, None, t(5_000), &mut fx)
        .expect("release");
    assert!(grants(&fx).is_empty(), "{fx:?}");
    assert_eq!(table.resource("r", t(5_000)).state, LockState::Free);
}

#[test]
fn cancel_wait_withdraws_the_waiter_and_reports_false_when_not_queued() {
    let mut table = table();
    let held = lock(&mut table, "r", 1, t(0));
    let mut fx = Effects::new();
    let w2 = queued(table.acquire(req("r", owner(2), 1, 60_000), t(1), &mut fx));
    let w3 = queued(table.acquire(req("r", owner(3), 1, 60_000), t(2), &mut fx));

    assert!(table.cancel_wait(w2));
    assert!(!table.cancel_wait(w2), "a second cancel finds nothing");
    assert!(!table.cancel_wait(WaiterId(999)), "never queued");
    assert_eq!(table.waiter_count(), 1);

    // The next release skips the cancelled waiter.
    let mut fx = Effects::new();
    table
        .release(held.lease, None, t(10), &mut fx)
        .expect("release");
    let got = grants(&fx);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, w3);
    // Once granted, it is no longer queued: the driver must release what it cannot deliver.
    assert!(!table.cancel_wait(w3));

    // A cancelled waiter's timer is gone too: nothing fires at its old deadline.
    let mut fx = Effects::new();
    table.advance(t(60_001), &mut fx);
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::WaitTimedOut { .. })),
        "{fx:?}"
    );
}

#[test]
fn cancel_wait_clears_the_waiters_timer() {
    let mut table = table();
    lock(&mut table, "r", 1, t(0));
    let mut fx = Effects::new();
    let waiter = queued(table.acquire(req("r", owner(2), 1, 1_000), t(1), &mut fx));
    assert_eq!(
        table.next_deadline().map(|m| m.0),
        Some(1_001),
        "the wait runs out first"
    );
    assert!(table.cancel_wait(waiter));
    assert_eq!(
        table.next_deadline().map(|m| m.0),
        Some(TTL),
        "only the lease's deadline is left to wake the driver for"
    );
}

// ---- semaphores ----------------------------------------------------------------------------------

#[test]
fn semaphore_of_n_slots_admits_n_and_refuses_n_plus_one() {
    for n in 1..=4u32 {
        let mut table = table();
        let mut fx = Effects::new();
        for i in 0..n {
            let lease =
                granted(table.acquire(req("reboot/default", owner(i), n, 0), t(0), &mut fx));
            assert_eq!(lease.slots, n);
        }
        let view = table.resource("reboot/default", t(0));
        assert_eq!(view.holders.len(), n as usize);
        assert_eq!(view.slots, n);
        assert_eq!(view.state, LockState::Hot);
        match table.acquire(req("reboot/default", owner(n), n, 0), t(0), &mut fx) {
            Err(AcquireError::Hot { holders, .. }) => assert_eq!(holders.len(), n as usize),
            other => panic!("slot {} of {n} should be refused, got {other:?}", n + 1),
        }
    }
}

#[test]
fn slots_mismatch_is_refused_while_held_with_another_size() {
    let mut table = table();
    let mut fx = Effects::new();
    granted(table.acquire(req("sem", owner(1), 3, 0), t(0), &mut fx));
    assert_eq!(
        table.acquire(req("sem", owner(2), 2, 0), t(0), &mut fx),
        slots_mismatch("sem", 3, 2)
    );
    // Also when the caller would wait: a mismatch is never queued.
    let waited = table.acquire(req("sem", owner(2), 1, 60_000), t(0), &mut fx);
    assert!(
        matches!(waited, Err(AcquireError::SlotsMismatch { .. })),
        "{waited:?}"
    );
    assert_eq!(table.waiter_count(), 0);
}

// ---- owners and idempotent re-acquire -------------------------------------------------------------

#[test]
fn reacquire_by_the_same_process_returns_the_same_lease_without_a_new_token() {
    let mut table = table();
    let first = lock(&mut table, "r", 1, t(0));
    let mut fx = Effects::new();
    // User and purpose are descriptive, not identity.
    let mut same = owner(1);
    same.purpose = "retry after a timeout".to_string();
    same.user = "root".to_string();
    let again = granted(table.acquire(req("r", same, 1, 0), t(6_000), &mut fx));
    assert!(again.reacquired);
    assert_eq!(again.lease, first.lease);
    assert_eq!(again.token, first.token);
    assert_eq!(
        table.fence_high_water(),
        first.token.0,
        "no new token issued"
    );
    assert!(fx.is_empty(), "nothing to persist: {fx:?}");
    // The re-acquire counts as a heartbeat: the lease now runs until 6 000 + TTL.
    table.advance(t(TTL + 1), &mut fx);
    assert_eq!(holder_leases(&table, "r", t(TTL + 1)), vec![first.lease]);
}

#[test]
fn reacquire_by_the_holder_with_another_slot_count_is_slots_mismatch_not_its_lease() {
    let mut table = table();
    let mut fx = Effects::new();
    let held = granted(table.acquire(req("sem", owner(1), 2, 0), t(0), &mut fx));
    let mut fx = Effects::new();
    assert_eq!(
        table.acquire(req("sem", owner(1), 3, 0), t(5_000), &mut fx),
        slots_mismatch("sem", 2, 3)
    );
    assert!(fx.is_empty(), "a refusal changes nothing: {fx:?}");
    // Not even a heartbeat: the lease still ends one TTL after its grant.
    assert_eq!(table.advance(t(TTL), &mut fx), 1);
    assert!(table.lease(held.lease).is_none());
}

#[test]
fn reacquire_by_the_holder_with_another_ttl_is_ttl_mismatch_and_renews_nothing() {
    let mut table = table();
    let held = lock(&mut table, "r", 1, t(0));
    let mut fx = Effects::new();
    let longer = Acquire {
        ttl_ms: 6 * TTL,
        ..req("r", owner(1), 1, 0)
    };
    assert_eq!(
        table.acquire(longer, t(5_000), &mut fx),
        Err(AcquireError::TtlMismatch {
            resource: "r".to_string(),
            lease: held.lease,
            held_ttl_ms: TTL,
            asked_ttl_ms: 6 * TTL,
        })
    );
    assert!(fx.is_empty(), "a refusal changes nothing: {fx:?}");
    assert_eq!(table.lease(held.lease).map(|l| l.ttl_ms), Some(TTL));
    // The lease was not renewed by the refused re-acquire: it ends one TTL after its grant.
    assert_eq!(table.advance(t(TTL - 1), &mut fx), 0);
    assert_eq!(table.advance(t(TTL), &mut fx), 1);

    // A trusted long-TTL caller (FleetLock: the TTL is the server's setting) keeps its lease
    // when the setting changed since its grant.
    let mut table = table_with_fleet_lease();
    let mut fx = Effects::new();
    let again = granted(table.acquire(fleet_req(2 * TTL), t(1), &mut fx));
    assert!(again.reacquired);
    assert_eq!(again.ttl_ms, TTL);
}

fn fleet_req(ttl_ms: u64) -> Acquire {
    Acquire {
        ttl_ms,
        trusted: Trusted {
            resize: true,
            long_ttl: true,
            synthetic_owner: true,
        },
        ..req("reboot/g", owner(9), 1, 0)
    }
}

fn table_with_fleet_lease() -> LockTable {
    let mut table = table();
    let mut fx = Effects::new();
    granted(table.acquire(fleet_req(TTL), t(0), &mut fx));
    table
}

#[test]
fn different_pid_start_time_or_boot_id_on_the_same_node_is_a_different_owner() {
    let base = owner(1);
    let variants = [
        Owner {
            pid: base.pid + 1,
            ..base.clone()
        },
        Owner {
            start_time: base.start_time + 1,
            ..base.clone()
        },
    ];
    for other in variants {
        let mut table = table();
        let held = lock(&mut table, "r", 1, t(0));
        let mut fx = Effects::new();
        match table.acquire(req("r", other.clone(), 1, 0), t(1), &mut fx) {
            Err(AcquireError::Hot { holders, .. }) => {
                assert_eq!(holders.len(), 1);
                assert_eq!(holders[0].lease, held.lease);
            }
            outcome => panic!("{other:?} must not get {base:?}'s lease: {outcome:?}"),
        }
    }

    // Another boot id of the same node is a different owner too: it never gets the old lease.
    // Since ghost reclaim, it does not see HOT either: the node rebooted, so the old holder
    // cannot be alive, its lease is reclaimed (NodeRebooted) and the newcomer gets a new one.
    let rebooted = Owner {
        boot_id: "boot-after-reboot".to_string(),
        ..base.clone()
    };
    let mut table = table();
    let held = lock(&mut table, "r", 1, t(0));
    let mut fx = Effects::new();
    let new = granted(table.acquire(req("r", rebooted.clone(), 1, 0), t(1), &mut fx));
    assert!(
        !new.reacquired,
        "{rebooted:?} must not get {base:?}'s lease"
    );
    assert_ne!(new.lease, held.lease);
    assert!(new.token > held.token);
    assert_eq!(new.owner, rebooted);
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Ended { lease, cause: EndCause::NodeRebooted { new_boot_id }, .. }
            if *lease == held.lease && new_boot_id == "boot-after-reboot"
    )));
    assert_audited(&fx);
    assert_eq!(holder_leases(&table, "r", t(1)), vec![new.lease]);
}

// ---- lease lifetime --------------------------------------------------------------------------------

#[test]
fn lease_expires_exactly_at_ttl_and_its_slot_goes_to_the_next_waiter() {
    let mut table = table();
    let held = lock(&mut table, "r", 1, t(1_000));
    let mut fx = Effects::new();
    let waiter = queued(table.acquire(req("r", owner(2), 1, 60_000), t(2_000), &mut fx));
    assert_eq!(table.next_deadline().map(|m| m.0), Some(1_000 + TTL));

    let mut fx = Effects::new();
    assert_eq!(table.advance(t(1_000 + TTL - 1), &mut fx), 0);
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(
        holder_leases(&table, "r", t(1_000 + TTL - 1)),
        vec![held.lease]
    );

    assert_eq!(table.advance(t(1_000 + TTL), &mut fx), 1);
    assert_audited(&fx);
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Ended { lease, cause: EndCause::Expired, .. } if *lease == held.lease
    )));
    assert!(fx.contains(&Effect::Persist(Mutation::DeleteLease(held.lease))));
    let got = grants(&fx);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, waiter);
    assert!(got[0].1.token > held.token);
    assert_eq!(
        holder_leases(&table, "r", t(1_000 + TTL)),
        vec![got[0].1.lease]
    );
}

#[test]
fn renew_extends_the_deadline_by_a_full_ttl() {
    let mut table = table();
    let held = lock(&mut table, "r", 1, t(0));
    let mut fx = Effects::new();
    let renewed = table
        .renew(held.lease, Some(held.token), t(8_000), &mut fx)
        .expect("renew within TTL");
    assert_eq!(renewed.lease, held.lease);
    assert_eq!(renewed.token, held.token, "renewal keeps the token");
    assert!(fx.is_empty(), "renewals are not persisted: {fx:?}");
    assert_eq!(table.next_deadline().map(|m| m.0), Some(8_000 + TTL));

    // Past the original deadline, still held.
    assert_eq!(table.advance(t(TTL + 1), &mut fx), 0);
    let view = table.resource("r", t(TTL + 1));
    assert_eq!(view.holders.len(), 1);
    assert_eq!(view.holders[0].ttl_left_ms, 8_000 + TTL - (TTL + 1));
    assert_eq!(view.holders[0].last_heartbeat_ms, WALL0 + 8_000);
    // Until the new one.
    assert_eq!(table.advance(t(8_000 + TTL), &mut fx), 1);
}

/// The incident's race: a reaper that has not woken yet must not let a late heartbeat "win".
/// A renewal at or after the deadline fails even though `advance` was never called.
#[test]
fn renew_after_the_deadline_fails_with_lease_expired_even_without_advance() {
    for late in [TTL, TTL + 1, 3 * TTL] {
        let mut table = table();
        let held = lock(&mut table, "r", 1, t(0));
        let mut fx = Effects::new();
        match table.renew(held.lease, Some(held.token), t(late), &mut fx) {
            Err(locksmith_core::LeaseError::LeaseExpired {
                lease,
                resource,
                cause,
            }) => {
                assert_eq!(lease, held.lease);
                assert_eq!(resource, "r");
                assert_eq!(cause, EndCause::Expired);
            }
            other => panic!("renew at {late} ms must fail, got {other:?}"),
        }
        // The renew's own call ran the reclaim: deletion persisted, lease gone.
        assert_audited(&fx);
        assert!(fx.contains(&Effect::Persist(Mutation::DeleteLease(held.lease))));
        assert!(table.lease(held.lease).is_none());
        assert_eq!(table.resource("r", t(late)).state, LockState::Free);
    }
}

#[test]
fn reacquire_after_the_deadline_without_advance_gets_a_new_lease_and_token() {
    let mut table = table();
    let held = lock(&mut table, "r", 1, t(0));
    let again = lock(&mut table, "r", 1, t(TTL));
    assert!(!again.reacquired, "the old lease had ended");
    assert_ne!(again.lease, held.lease);
    assert!(again.token > held.token);
}

#[test]
fn release_is_idempotent_for_a_released_lease() {
    let mut table = table();
    let held = lock(&mut table, "r", 1, t(0));
    let mut fx = Effects::new();
    let first = table
        .release(held.lease, Some(held.token), t(1), &mut fx)
        .expect("release");
    assert!(!first.already);
    let mut fx = Effects::new();
    let second = table
        .release(held.lease, Some(held.token), t(2), &mut fx)
        .expect("a second release succeeds");
    assert!(second.already);
    assert_eq!(second.resource, "r");
    assert_eq!(second.token, held.token);
    assert!(fx.is_empty(), "nothing more to persist: {fx:?}");
}

#[test]
fn release_of_an_expired_lease_is_lease_expired() {
    let mut table = table();
    let held = lock(&mut table, "r", 1, t(0));
    let mut fx = Effects::new();
    // Without advance: the release's own clock check reclaims it first.
    match table.release(held.lease, Some(held.token), t(TTL + 5), &mut fx) {
        Err(locksmith_core::LeaseError::LeaseExpired {
            lease,
            resource,
            cause,
        }) => {
            assert_eq!(lease, held.lease);
            assert_eq!(resource, "r");
            assert_eq!(cause, EndCause::Expired);
        }
        other => panic!("expected LeaseExpired, got {other:?}"),
    }
    // And it stays an error: an expiry is never turned into a successful release.
    let again = table.release(held.lease, None, t(TTL + 6), &mut fx);
    assert!(
        matches!(
            again,
            Err(locksmith_core::LeaseError::LeaseExpired {
                cause: EndCause::Expired,
                ..
            })
        ),
        "{again:?}"
    );
}

#[test]
fn release_or_renew_of_a_never_issued_lease_is_not_holder() {
    let mut table = table();
    let held = lock(&mut table, "r", 1, t(0));
    let mut fx = Effects::new();
    for id in [LeaseId(0), LeaseId(held.lease.0 + 1), LeaseId(u64::MAX)] {
        assert_eq!(
            table.release(id, None, t(1), &mut fx),
            Err(locksmith_core::LeaseError::NotHolder { lease: id })
        );
        assert_eq!(
            table.renew(id, None, t(1), &mut fx),
            Err(locksmith_core::LeaseError::NotHolder { lease: id })
        );
    }
    assert!(fx.is_empty());
    assert_eq!(holder_leases(&table, "r", t(1)), vec![held.lease]);
}

#[test]
fn renew_or_release_with_the_wrong_token_is_stale_token_and_changes_nothing() {
    let mut table = table();
    let held = lock(&mut table, "r", 1, t(0));
    let wrong = FenceToken(held.token.0 + 7);
    let mut fx = Effects::new();
    let stale = locksmith_core::LeaseError::StaleToken {
        lease: held.lease,
        presented: wrong,
        current: held.token,
    };
    assert_eq!(
        table.renew(held.lease, Some(wrong), t(5_000), &mut fx),
        Err(stale.clone())
    );
    assert_eq!(
        table.release(held.lease, Some(wrong), t(5_000), &mut fx),
        Err(stale)
    );
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(holder_leases(&table, "r", t(5_000)), vec![held.lease]);
    // The failed renewal was not a heartbeat: the lease still ends at its first deadline.
    assert_eq!(table.next_deadline().map(|m| m.0), Some(TTL));
}

#[test]
fn check_fence_accepts_the_holders_token_and_refuses_an_old_one_after_a_new_grant() {
    let mut table = table();
    let mut fx = Effects::new();
    let old = lock(&mut table, "cfg/aim.conf", 1, t(0));
    let holder = table
        .check_fence("cfg/aim.conf", old.token, t(1), &mut fx)
        .expect("the holder's token is current");
    assert_eq!(holder.lease, old.lease);
    assert_eq!(holder.owner, owner(1));

    // The old holder goes silent and expires; someone else gets the lock.
    let new = lock(&mut table, "cfg/aim.conf", 2, t(TTL));
    assert!(new.token > old.token);
    assert_eq!(
        table.check_fence("cfg/aim.conf", old.token, t(TTL + 1), &mut fx),
        Err(FenceError::StaleToken {
            resource: "cfg/aim.conf".to_string(),
            presented: old.token,
            newest: new.token,
        })
    );
    let holder = table
        .check_fence("cfg/aim.conf", new.token, t(TTL + 1), &mut fx)
        .expect("the new holder's token is current");
    assert_eq!(holder.lease, new.lease);

    // A token on another resource does not count here, and a bad name is invalid.
    let other = lock(&mut table, "cfg/other.conf", 3, t(TTL + 2));
    assert!(
        table
            .check_fence("cfg/aim.conf", other.token, t(TTL + 2), &mut fx)
            .is_err()
    );
    assert!(matches!(
        table.check_fence("../etc", new.token, t(TTL + 2), &mut fx),
        Err(FenceError::Invalid(_))
    ));
}

// ---- recovery ---------------------------------------------------------------------------------

fn record(lease: u64, resource: &str, n: u32, ttl_ms: u64) -> LeaseRecord {
    LeaseRecord {
        lease: LeaseId(lease),
        resource: resource.to_string(),
        owner: owner(n),
        token: FenceToken(lease),
        ttl_ms,
        slots: 1,
        granted_at_ms: WALL0 - 3_600_000,
        lock_delay_ms: 0,
    }
}

#[test]
fn restore_continues_tokens_above_the_high_water_mark() {
    // Leases 1..=41 ended before the crash; 42 survives. Tokens up to 57 were issued (some
    // grants were persisted and then deleted), so the next grant must be 58, never a reuse.
    let snapshot = Snapshot {
        leases: vec![record(42, "a", 1, TTL)],
        fence_high_water: 57,
        ..Snapshot::default()
    };
    let mut table = LockTable::restore(TableConfig::default(), snapshot, t(500_000));
    assert_eq!(table.fence_high_water(), 57);
    let next = lock(&mut table, "b", 2, t(500_001));
    assert_eq!(next.token, FenceToken(58));
    assert_eq!(next.lease, LeaseId(58));

    // A lease record above a stale high-water mark still raises it.
    let snapshot = Snapshot {
        leases: vec![record(80, "a", 1, TTL)],
        fence_high_water: 57,
        ..Snapshot::default()
    };
    let mut table = LockTable::restore(TableConfig::default(), snapshot, t(0));
    assert_eq!(lock(&mut table, "b", 2, t(1)).token, FenceToken(81));
}

#[test]
fn restore_gives_surviving_leases_a_full_ttl_from_restore_time() {
    let restored_at = 900_000;
    let snapshot = Snapshot {
        leases: vec![record(3, "a", 1, TTL), record(5, "b", 2, 2 * TTL)],
        fence_high_water: 5,
        ..Snapshot::default()
    };
    let mut table = LockTable::restore(TableConfig::default(), snapshot, t(restored_at));
    assert_eq!(table.lease_count(), 2);
    let a = table.resource("a", t(restored_at));
    assert_eq!(a.state, LockState::Hot, "treated as renewed at recovery");
    assert_eq!(a.holders[0].ttl_left_ms, TTL);
    assert_eq!(a.holders[0].last_heartbeat_ms, WALL0 + restored_at);
    assert_eq!(
        a.holders[0].granted_at_ms,
        WALL0 - 3_600_000,
        "grant time kept"
    );
    assert_eq!(
        table.resource("b", t(restored_at)).holders[0].ttl_left_ms,
        2 * TTL
    );

    // A live holder's next heartbeat lands in time and keeps its token.
    let mut fx = Effects::new();
    let renewed = table
        .renew(
            LeaseId(3),
            Some(FenceToken(3)),
            t(restored_at + TTL - 1),
            &mut fx,
        )
        .expect("a live holder keeps its lock across the restart");
    assert_eq!(renewed.token, FenceToken(3));
    // Nothing was reclaimed by the restore itself.
    assert!(fx.is_empty(), "{fx:?}");
}

#[test]
fn restored_lease_expires_one_ttl_after_restore_if_not_renewed() {
    let restored_at = 900_000;
    let snapshot = Snapshot {
        leases: vec![record(3, "a", 1, TTL)],
        fence_high_water: 3,
        ..Snapshot::default()
    };
    let mut table = LockTable::restore(TableConfig::default(), snapshot, t(restored_at));
    let mut fx = Effects::new();
    assert_eq!(table.advance(t(restored_at + TTL - 1), &mut fx), 0);
    assert_eq!(table.lease_count(), 1);
    assert_eq!(table.advance(t(restored_at + TTL), &mut fx), 1);
    assert_audited(&fx);
    assert!(fx.contains(&Effect::Persist(Mutation::DeleteLease(LeaseId(3)))));
    assert_eq!(
        table.resource("a", t(restored_at + TTL)).state,
        LockState::Free
    );
}

#[test]
fn after_restore_an_issued_but_forgotten_lease_is_lease_expired_with_unknown_cause() {
    let snapshot = Snapshot {
        leases: vec![record(3, "a", 1, TTL)],
        fence_high_water: 9,
        ..Snapshot::default()
    };
    let mut table = LockTable::restore(TableConfig::default(), snapshot, t(0));
    let mut fx = Effects::new();
    assert_eq!(
        table.renew(LeaseId(7), None, t(1), &mut fx),
        Err(locksmith_core::LeaseError::LeaseExpired {
            lease: LeaseId(7),
            resource: String::new(),
            cause: EndCause::Unknown,
        })
    );
    assert_eq!(
        table.release(LeaseId(10), None, t(1), &mut fx),
        Err(locksmith_core::LeaseError::NotHolder { lease: LeaseId(10) })
    );
}

/// What a lease's end looks like in the durable audit log.
fn ended_record(seq: u64, lease: u64, resource: &str, cause: EndCause) -> AuditRecord {
    AuditRecord {
        seq,
        at_ms: WALL0 + seq,
        lease: Some(LeaseId(lease)),
        token: Some(FenceToken(lease)),
        owner: Some(owner(1)),
        ..AuditRecord::new(resource, AuditKind::Ended { cause })
    }
}

#[test]
fn after_restore_told_the_audit_log_a_retried_release_is_already_released_and_a_broken_lease_broken()
 {
    let snapshot = Snapshot {
        leases: vec![record(3, "a", 1, TTL)],
        fence_high_water: 9,
        audit_seq: 20,
        ..Snapshot::default()
    };
    let log = [
        AuditRecord {
            seq: 10,
            lease: Some(LeaseId(4)),
            ..AuditRecord::new("b", AuditKind::Granted)
        },
        ended_record(11, 4, "b", EndCause::Released),
        ended_record(
            12,
            5,
            "c",
            EndCause::Broken {
                by: "alice@ops".to_string(),
                reason: "stuck since 03:12".to_string(),
            },
        ),
        ended_record(13, 6, "d", EndCause::Expired),
        // A live lease's record (cannot happen with a store's log; skipped if it did).
        ended_record(14, 3, "a", EndCause::Released),
    ];
    let mut table = LockTable::restore(TableConfig::default(), snapshot, t(0));
    table.remember_ended(&log);
    let mut fx = Effects::new();
    assert_eq!(
        table.release(LeaseId(4), None, t(1), &mut fx),
        Ok(Released {
            resource: "b".to_string(),
            token: FenceToken(4),
            already: true,
        })
    );
    let broken = Err(LeaseError::Broken {
        lease: LeaseId(5),
        resource: "c".to_string(),
        by: "alice@ops".to_string(),
        reason: "stuck since 03:12".to_string(),
    });
    assert_eq!(table.renew(LeaseId(5), None, t(1), &mut fx), broken);
    assert_eq!(
        table.release(LeaseId(5), None, t(1), &mut fx).map(|_| ()),
        broken.map(|_| ())
    );
    assert_eq!(
        table.renew(LeaseId(6), None, t(1), &mut fx),
        Err(LeaseError::LeaseExpired {
            lease: LeaseId(6),
            resource: "d".to_string(),
            cause: EndCause::Expired,
        })
    );
    // Forgotten (no record): still "ended, cause unknown"; the live lease is untouched.
    assert!(matches!(
        table.renew(LeaseId(7), None, t(1), &mut fx),
        Err(LeaseError::LeaseExpired {
            cause: EndCause::Unknown,
            ..
        })
    ));
    assert!(table.renew(LeaseId(3), None, t(1), &mut fx).is_ok());
    assert!(fx.is_empty(), "remembering changes nothing durable: {fx:?}");
}

#[test]
fn remembered_ends_keep_the_memory_bound_newest_first() {
    let config = TableConfig {
        ended_memory: 2,
        ..TableConfig::default()
    };
    let snapshot = Snapshot {
        fence_high_water: 9,
        ..Snapshot::default()
    };
    let mut table = LockTable::restore(config, snapshot, t(0));
    let log: Vec<AuditRecord> = (1..=3)
        .map(|lease| ended_record(lease, lease, "r", EndCause::Released))
        .collect();
    table.remember_ended(&log);
    let mut fx = Effects::new();
    assert!(matches!(
        table.release(LeaseId(1), None, t(1), &mut fx),
        Err(LeaseError::LeaseExpired {
            cause: EndCause::Unknown,
            ..
        })
    ));
    for lease in [2, 3] {
        assert!(
            table
                .release(LeaseId(lease), None, t(1), &mut fx)
                .is_ok_and(|r| r.already),
            "lease {lease}"
        );
    }
}

// ---- validation ------------------------------------------------------------------------------

#[test]
fn owner_with_an_empty_field_is_invalid_naming_the_field() {
    type Spoil = fn(&mut Owner);
    let cases: [(&str, Spoil); 4] = [
        ("owner.node", |o| o.node = String::new()),
        ("owner.boot_id", |o| o.boot_id = "  ".to_string()),
        ("owner.user", |o| o.user = String::new()),
        ("owner.purpose", |o| o.purpose = String::new()),
    ];
    for (field, spoil) in cases {
        let mut table = table();
        let mut bad = owner(1);
        spoil(&mut bad);
        let mut fx = Effects::new();
        assert_eq!(
            invalid_field(table.acquire(req("r", bad, 1, 0), t(0), &mut fx)),
            field
        );
        assert!(fx.is_empty());
        assert_eq!(table.lease_count(), 0);
    }
}

#[test]
fn pid_zero_is_invalid_the_incidents_ghost_owner() {
    let mut table = table();
    let ghost = Owner { pid: 0, ..owner(1) };
    let mut fx = Effects::new();
    assert_eq!(
        invalid_field(table.acquire(req("r", ghost, 1, 0), t(0), &mut fx)),
        "owner.pid"
    );
}

#[test]
fn start_time_zero_is_invalid() {
    let mut table = table();
    let bad = Owner {
        start_time: 0,
        ..owner(1)
    };
    let mut fx = Effects::new();
    assert_eq!(
        invalid_field(table.acquire(req("r", bad, 1, 0), t(0), &mut fx)),
        "owner.start_time"
    );
}

#[test]
fn ttl_below_the_minimum_or_above_the_maximum_is_invalid() {
    let mut table = table();
    let max = table.config().max_ttl_ms;
    let mut fx = Effects::new();
    for ttl_ms in [0, 999, max + 1] {
        let r = Acquire {
            ttl_ms,
            ..req("r", owner(1), 1, 0)
        };
        assert_eq!(
            invalid_field(table.acquire(r, t(0), &mut fx)),
            "ttl_ms",
            "{ttl_ms}"
        );
    }
    for ttl_ms in [1_000, max] {
        let r = Acquire {
            ttl_ms,
            ..req(&format!("ok{ttl_ms}"), owner(1), 1, 0)
        };
        granted(table.acquire(r, t(0), &mut fx));
    }
}

#[test]
fn zero_or_too_many_slots_and_too_long_a_wait_are_invalid() {
    let mut table = table();
    let max_slots = table.config().max_slots;
    let max_wait = table.config().max_wait_ms;
    let mut fx = Effects::new();
    for slots in [0, max_slots + 1] {
        assert_eq!(
            invalid_field(table.acquire(req("r", owner(1), slots, 0), t(0), &mut fx)),
            "slots"
        );
    }
    assert_eq!(
        invalid_field(table.acquire(req("r", owner(1), 1, max_wait + 1), t(0), &mut fx)),
        "wait_ms"
    );
}

#[test]
fn bad_resource_names_are_invalid() {
    let mut table = table();
    let long = "x".repeat(256);
    let mut fx = Effects::new();
    for name in [
        "",
        "a b",
        "/abs",
        "trail/",
        "a//b",
        "a/../b",
        "é",
        long.as_str(),
    ] {
        assert_eq!(
            invalid_field(table.acquire(req(name, owner(1), 1, 0), t(0), &mut fx)),
            "resource",
            "{name:?}"
        );
    }
    assert!(fx.is_empty());
}

// ---- what operators see -----------------------------------------------------------------------

#[test]
fn resource_view_is_free_then_hot_then_stale_after_half_the_ttl_without_heartbeat() {
    let mut table = table();
    assert_eq!(table.resource("r", t(0)).state, LockState::Free);
    assert!(table.resources(t(0)).is_empty());

    let held = lock(&mut table, "r", 1, t(0));
    assert_eq!(table.resource("r", t(0)).state, LockState::Hot);
    assert_eq!(
        table.resource("r", t(TTL / 2)).state,
        LockState::Hot,
        "exactly half"
    );
    let stale = table.resource("r", t(TTL / 2 + 1));
    assert_eq!(stale.state, LockState::Stale);
    assert!(stale.holders[0].stale);

    // A heartbeat makes it HOT again.
    let mut fx = Effects::new();
    table
        .renew(held.lease, None, t(TTL / 2 + 1), &mut fx)
        .expect("renew");
    assert_eq!(table.resource("r", t(TTL / 2 + 1)).state, LockState::Hot);

    // In a semaphore, one overdue holder makes the resource STALE.
    let mut fx = Effects::new();
    granted(table.acquire(req("sem", owner(1), 2, 0), t(0), &mut fx));
    granted(table.acquire(req("sem", owner(2), 2, 0), t(4_000), &mut fx));
    let view = table.resource("sem", t(TTL / 2 + 1));
    assert_eq!(view.state, LockState::Stale);
    assert_eq!(
        view.holders.iter().map(|h| h.stale).collect::<Vec<_>>(),
        vec![true, false],
        "holders listed oldest grant first"
    );

    // Released: FREE again and gone from listings.
    let mut fx = Effects::new();
    table
        .release(held.lease, None, t(TTL / 2 + 2), &mut fx)
        .expect("release");
    assert_eq!(table.resource("r", t(TTL / 2 + 2)).state, LockState::Free);
    let names: Vec<String> = table
        .resources(t(TTL / 2 + 2))
        .into_iter()
        .map(|v| v.resource)
        .collect();
    assert_eq!(names, vec!["sem".to_string()]);
}

/// The census counts plainly HOT resources and gives exactly the other views `resources()`
/// gives, in the same order.
#[test]
fn census_counts_plain_hot_resources_and_lists_the_rest() {
    let mut table = table();
    let mut fx = Effects::new();
    lock(&mut table, "a/quiet", 1, t(0));
    lock(&mut table, "b/waited", 2, t(0));
    queued(table.acquire(req("b/waited", owner(3), 1, 60_000), t(0), &mut fx));
    lock(&mut table, "c/stale", 4, t(0));
    lock(&mut table, "d/quiet", 5, t(0));
    let renewed = lock(&mut table, "e/renewed", 6, t(0));
    // Past half the TTL: every holder that did not renew is stale.
    let now = t(TTL / 2 + 1);
    table
        .renew(renewed.lease, Some(renewed.token), now, &mut fx)
        .expect("renew");
    let all = table.resources(now);
    let census = table.census(now);
    let notable: Vec<_> = all
        .iter()
        .filter(|r| r.state != LockState::Hot || !r.waiters.is_empty())
        .cloned()
        .collect();
    assert_eq!(census.notable, notable);
    assert_eq!(census.hot as usize + census.notable.len(), all.len());
    assert_eq!(census.hot, 1, "{census:?}");

    let fresh = table.census(t(1));
    assert_eq!(fresh.hot, 4);
    assert_eq!(fresh.notable.len(), 1);
    assert_eq!(fresh.notable[0].resource, "b/waited");
}
