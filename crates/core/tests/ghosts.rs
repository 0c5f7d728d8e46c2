//! Focused tests of holds, breaks, ghost reclaim, lock-delay and the audit trail, one behaviour
//! per test, on a fake clock: `t(ms)` is the monotonic instant `ms` with the wall clock running
//! alongside at an offset (so wall-clock durations equal monotonic ones unless a test says not).

mod common;

use common::{assert_audited, audits, granted, queued, slots_mismatch, table};
use locksmith_core::{
    Acquire, AcquireError, AcquireOutcome, AuditKind, BreakError, DeadProcess, Effect, Effects,
    EndCause, FenceError, FenceToken, HoldError, HoldId, HoldRecord, HoldState, HoldView,
    LeaseError, LeaseId, LeaseView, LockState, LockTable, Mutation, Now, Owner, PlaceHold,
    ReportError, Snapshot, TableConfig, Trusted, Vantage, WaiterId,
};

const WALL0: u64 = 1_700_000_000_000;
/// The PID namespace every test process runs in, unless a test says otherwise.
const NS: &str = "pid:[4026531836]";
const TTL: u64 = 10_000;

/// A report's vantage: `node` under `boot`, reading `/proc` in [`NS`].
fn at<'a>(node: &'a str, boot: &'a str) -> Vantage<'a> {
    Vantage {
        node,
        boot_id: boot,
        pid_ns: Some(NS),
    }
}

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
        pid_ns: Some(NS.to_string()),
    }
}

/// A process `pid` on node `node` under boot `boot`.
fn proc_on(node: &str, boot: &str, pid: u32) -> Owner {
    Owner {
        node: node.to_string(),
        pid,
        start_time: 7_000 + u64::from(pid),
        boot_id: boot.to_string(),
        user: "ops".to_string(),
        purpose: format!("pid {pid} on {node}"),
        pid_ns: Some(NS.to_string()),
    }
}

fn req(resource: &str, owner: Owner, wait_ms: u64) -> Acquire {
    Acquire {
        resource: resource.to_string(),
        owner,
        ttl_ms: TTL,
        slots: 1,
        wait_ms,
        lock_delay_ms: 0,
        trusted: Trusted::NONE,
    }
}

fn lock(table: &mut LockTable, resource: &str, owner: Owner, now: Now) -> LeaseView {
    let mut fx = Effects::new();
    let lease = granted(table.acquire(req(resource, owner, 0), now, &mut fx));
    assert_audited(&fx);
    lease
}

fn hold_req(resource: &str, operator: &str, duration_ms: u64, require_ack: bool) -> PlaceHold {
    PlaceHold {
        resource: resource.to_string(),
        operator: operator.to_string(),
        reason: "stopping the orchestrator for 90 s to clear a stale lock".to_string(),
        duration_ms,
        require_ack,
    }
}

fn place(table: &mut LockTable, resource: &str, duration_ms: u64, now: Now) -> HoldView {
    let mut fx = Effects::new();
    table
        .place_hold(
            hold_req(resource, "alice", duration_ms, false),
            now,
            &mut fx,
        )
        .expect("a valid hold")
}

fn grants(fx: &Effects) -> Vec<(WaiterId, LeaseView)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Granted { waiter, lease } => Some((*waiter, lease.clone())),
            _ => None,
        })
        .collect()
}

fn ended(fx: &Effects) -> Vec<(LeaseId, EndCause)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Ended { lease, cause, .. } => Some((*lease, cause.clone())),
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

fn frozen_holds(outcome: Result<AcquireOutcome, AcquireError>) -> Vec<HoldId> {
    match outcome {
        Err(AcquireError::Frozen { holds, .. }) => holds.iter().map(|h| h.record.hold).collect(),
        other => panic!("expected FROZEN, got {other:?}"),
    }
}

fn hold_invalid_field(outcome: Result<HoldView, HoldError>) -> String {
    match outcome {
        Err(HoldError::Invalid(e)) => e.field,
        other => panic!("expected an invalid hold request, got {other:?}"),
    }
}

fn broken(by: &str, reason: &str) -> EndCause {
    EndCause::Broken {
        by: by.to_string(),
        reason: reason.to_string(),
    }
}

/// Every audit label in `fx`, in order.
fn labels(fx: &Effects) -> Vec<&str> {
    audits(fx)
        .into_iter()
        .map(locksmith_core::AuditRecord::label)
        .collect()
}

// ---- holds ------------------------------------------------------------------------------------

#[test]
fn hold_is_active_at_once_and_acquire_is_refused_frozen_naming_the_hold() {
    let mut table = table();
    let mut fx = Effects::new();
    let hold = table
        .place_hold(
            hold_req("cfg/aim.conf", "alice", 90_000, false),
            t(100),
            &mut fx,
        )
        .expect("hold");
    assert_eq!(hold.state, HoldState::Active);
    assert_eq!(hold.ends_in_ms, 90_000);
    assert_eq!(hold.record.by, "alice");
    assert_eq!(hold.record.placed_at_ms, WALL0 + 100);
    assert_eq!(hold.record.active_since_ms, Some(WALL0 + 100));
    assert!(!hold.record.require_ack);
    // Durable, and audited as placed by alice with her reason.
    assert!(fx.contains(&Effect::Persist(Mutation::PutHold(hold.record.clone()))));
    let placed = audits(&fx);
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].kind, AuditKind::HoldPlaced);
    assert_eq!(placed[0].hold, Some(hold.record.hold));
    assert_eq!(placed[0].operator.as_deref(), Some("alice"));
    assert_eq!(
        placed[0].reason.as_deref(),
        Some(hold.record.reason.as_str())
    );

    let mut fx = Effects::new();
    match table.acquire(req("cfg/aim.conf", owner(1), 0), t(200), &mut fx) {
        Err(AcquireError::Frozen { resource, holds }) => {
            assert_eq!(resource, "cfg/aim.conf");
            assert_eq!(holds.len(), 1);
            assert_eq!(holds[0].record, hold.record);
            assert_eq!(holds[0].state, HoldState::Active);
            assert_eq!(holds[0].ends_in_ms, 90_000 - 100);
        }
        other => panic!("expected FROZEN, got {other:?}"),
    }
    assert!(fx.is_empty(), "a refusal changes nothing: {fx:?}");
    assert_eq!(table.lease_count(), 0);
}

#[test]
fn existing_holder_keeps_its_lease_through_a_hold_and_can_renew_and_release() {
    let mut table = table();
    let held = lock(&mut table, "r", owner(1), t(0));
    place(&mut table, "r", 60_000, t(1_000));
    let mut fx = Effects::new();
    // Renewals well past the first TTL: the hold does not touch the holder's lease.
    for at in [5_000, 14_000, 23_000] {
        let renewed = table
            .renew(held.lease, Some(held.token), t(at), &mut fx)
            .expect("a holder renews through a hold");
        assert_eq!(renewed.token, held.token);
    }
    assert!(fx.is_empty(), "{fx:?}");
    let view = table.resource("r", t(23_000));
    assert_eq!(view.state, LockState::Frozen);
    assert_eq!(view.holders.len(), 1);
    assert_eq!(view.holders[0].lease, held.lease);
    // Re-acquire by the same process is its own lease, not a new grant: allowed.
    let again = granted(table.acquire(req("r", owner(1), 0), t(23_001), &mut fx));
    assert!(again.reacquired);
    assert_eq!(again.lease, held.lease);

    let released = table
        .release(held.lease, Some(held.token), t(24_000), &mut fx)
        .expect("a holder releases through a hold");
    assert!(!released.already);
    assert_audited(&fx);
    assert!(grants(&fx).is_empty());
    // Still frozen with nobody holding it.
    let view = table.resource("r", t(24_000));
    assert_eq!(view.state, LockState::Frozen);
    assert!(view.holders.is_empty());
}

#[test]
fn waiter_queued_during_a_hold_is_granted_when_the_hold_expires_by_itself() {
    let mut table = table();
    let hold = place(&mut table, "r", 5_000, t(0));
    let mut fx = Effects::new();
    let waiter = queued(table.acquire(req("r", owner(1), 60_000), t(10), &mut fx));
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(table.next_deadline().map(|m| m.0), Some(5_000));

    let mut fx = Effects::new();
    table.advance(t(4_999), &mut fx);
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(table.resource("r", t(4_999)).state, LockState::Frozen);

    table.advance(t(5_000), &mut fx);
    let got = grants(&fx);
    assert_eq!(got.len(), 1, "{fx:?}");
    assert_eq!(got[0].0, waiter);
    assert_eq!(got[0].1.owner, owner(1));
    assert!(got[0].1.token.0 > hold.record.hold.0);
    assert!(fx.contains(&Effect::Persist(Mutation::DeleteHold(hold.record.hold))));
    assert_eq!(labels(&fx), vec!["hold_expired", "granted"]);
    let expired = audits(&fx)[0].clone();
    assert_eq!(expired.hold, Some(hold.record.hold));
    assert_eq!(expired.operator, None, "nobody lifted it");
    assert_audited(&fx);
    // Everything is persisted before the grant is delivered.
    let at = fx
        .iter()
        .position(|e| matches!(e, Effect::Granted { .. }))
        .expect("granted");
    assert!(
        fx[at + 1..]
            .iter()
            .all(|e| !matches!(e, Effect::Persist(_)))
    );

    let view = table.resource("r", t(5_000));
    assert_eq!(view.state, LockState::Hot);
    assert!(view.holds.is_empty());
    assert!(table.holds(t(5_000)).is_empty());
}

#[test]
fn waiter_queued_during_a_hold_is_granted_when_the_hold_is_lifted() {
    let mut table = table();
    let held = lock(&mut table, "r", owner(1), t(0));
    let hold = place(&mut table, "r", 60_000, t(1));
    let mut fx = Effects::new();
    let w2 = queued(table.acquire(req("r", owner(2), 60_000), t(2), &mut fx));
    let w3 = queued(table.acquire(req("r", owner(3), 60_000), t(3), &mut fx));
    // The holder leaves during the hold: nobody is granted.
    table
        .release(held.lease, None, t(4), &mut fx)
        .expect("release");
    assert!(grants(&fx).is_empty(), "{fx:?}");
    assert_eq!(table.waiter_count(), 2);

    let mut fx = Effects::new();
    let lifted = table
        .lift_hold(hold.record.hold, "bob", t(5), &mut fx)
        .expect("lift");
    assert_eq!(lifted.record.hold, hold.record.hold);
    let got = grants(&fx);
    assert_eq!(got.len(), 1, "exclusive: only the first waiter: {fx:?}");
    assert_eq!(got[0].0, w2);
    assert_eq!(labels(&fx), vec!["hold_lifted", "granted"]);
    assert_eq!(audits(&fx)[0].operator.as_deref(), Some("bob"));
    assert!(fx.contains(&Effect::Persist(Mutation::DeleteHold(hold.record.hold))));
    assert_eq!(
        table.resource("r", t(5)).waiters[0].owner,
        owner(3),
        "{w3} still queued"
    );
    // Lifting again: it is gone.
    let mut fx = Effects::new();
    assert_eq!(
        table.lift_hold(hold.record.hold, "bob", t(6), &mut fx),
        Err(HoldError::NotFound {
            hold: hold.record.hold
        })
    );
    assert!(fx.is_empty());
}

/// Regression: while a hold (or a lock-delay) kept a resource unheld, `SlotsMismatch` was only
/// checked against holders — there were none — so waiters of different sizes queued together.
/// After the hold, a 2-slot semaphore could sit with one holder, a free slot and a 2-slot waiter
/// stuck behind a 1-slot one. A mismatch is never queued: the queue's size counts.
#[test]
fn a_waiter_of_another_size_is_refused_while_a_frozen_resource_has_only_a_queue() {
    let mut table = table();
    let hold = place(&mut table, "sem", 5_000, t(0));
    let mut fx = Effects::new();
    let sem = |n, slots| Acquire {
        slots,
        wait_ms: 60_000,
        ..req("sem", owner(n), 0)
    };
    let w1 = queued(table.acquire(sem(1, 2), t(1), &mut fx));
    assert_eq!(
        table.acquire(sem(2, 1), t(2), &mut fx),
        slots_mismatch("sem", 2, 1)
    );
    let w3 = queued(table.acquire(sem(3, 2), t(3), &mut fx));
    let mut fx = Effects::new();
    table
        .lift_hold(hold.record.hold, "bob", t(4), &mut fx)
        .expect("lift");
    let got: Vec<WaiterId> = grants(&fx).into_iter().map(|(w, _)| w).collect();
    assert_eq!(got, vec![w1, w3], "both slots of the semaphore handed out");
    let view = table.resource("sem", t(4));
    assert_eq!((view.holders.len(), view.slots), (2, 2));
}

#[test]
fn hold_requiring_ack_does_not_freeze_until_acked() {
    let mut table = table();
    let mut fx = Effects::new();
    let pending = table
        .place_hold(hold_req("r", "alice", 30_000, true), t(0), &mut fx)
        .expect("hold");
    assert_eq!(pending.state, HoldState::PendingAck);
    assert_eq!(pending.record.active_since_ms, None);
    assert_eq!(labels(&fx), vec!["hold_placed"]);

    // Pending: grants go on, and the resource is not FROZEN (but lists the pending hold).
    let first = lock(&mut table, "r", owner(1), t(1_000));
    let view = table.resource("r", t(1_000));
    assert_eq!(view.state, LockState::Hot);
    assert_eq!(view.holds.len(), 1);
    assert_eq!(view.holds[0].state, HoldState::PendingAck);
    let mut fx = Effects::new();
    table
        .release(first.lease, None, t(1_500), &mut fx)
        .expect("release");
    assert_eq!(table.resource("r", t(1_500)).state, LockState::Free);

    let mut fx = Effects::new();
    let active = table
        .ack_hold(pending.record.hold, "bob", t(2_000), &mut fx)
        .expect("ack by a second operator");
    assert_eq!(active.state, HoldState::Active);
    assert_eq!(labels(&fx), vec!["hold_acked"]);
    assert_eq!(audits(&fx)[0].operator.as_deref(), Some("bob"));
    assert!(fx.contains(&Effect::Persist(Mutation::PutHold(active.record.clone()))));
    assert_eq!(
        frozen_holds(table.acquire(req("r", owner(2), 0), t(2_001), &mut fx)),
        vec![pending.record.hold]
    );
    assert_eq!(table.resource("r", t(2_001)).state, LockState::Frozen);
}

#[test]
fn ack_by_the_placing_operator_is_same_operator_and_changes_nothing() {
    let mut table = table();
    let mut fx = Effects::new();
    let pending = table
        .place_hold(hold_req("r", "alice", 30_000, true), t(0), &mut fx)
        .expect("hold");
    let mut fx = Effects::new();
    assert_eq!(
        table.ack_hold(pending.record.hold, "alice", t(1_000), &mut fx),
        Err(HoldError::SameOperator {
            hold: pending.record.hold,
            by: "alice".to_string(),
        })
    );
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(table.holds(t(1_000))[0].state, HoldState::PendingAck);
    lock(&mut table, "r", owner(1), t(1_001));
}

#[test]
fn ack_by_the_placing_operator_spelt_otherwise_is_still_same_operator() {
    let mut table = table();
    let mut fx = Effects::new();
    let pending = table
        .place_hold(hold_req("r", "alice@ops", 30_000, true), t(0), &mut fx)
        .expect("hold");
    for spelling in ["ALICE@OPS", "alice@ops ", " Alice@Ops", "Alice@OPS"] {
        let mut fx = Effects::new();
        assert_eq!(
            table.ack_hold(pending.record.hold, spelling, t(1_000), &mut fx),
            Err(HoldError::SameOperator {
                hold: pending.record.hold,
                by: "alice@ops".to_string(),
            }),
            "{spelling:?}"
        );
        assert!(fx.is_empty(), "{fx:?}");
    }
    assert_eq!(table.holds(t(1_000))[0].state, HoldState::PendingAck);
}

#[test]
fn ack_of_a_hold_that_needed_none_is_refused_and_changes_nothing() {
    let mut table = table();
    let active = place(&mut table, "r", 10_000, t(0));
    let mut fx = Effects::new();
    assert_eq!(
        table.ack_hold(active.record.hold, "bob", t(1_000), &mut fx),
        Err(HoldError::AckNotRequired {
            hold: active.record.hold,
            resource: "r".to_string(),
        })
    );
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(table.holds(t(1_000))[0].record.acked_by, None);
}

#[test]
fn ack_by_another_operator_makes_the_hold_active_for_its_full_duration_from_the_ack() {
    let mut table = table();
    let mut fx = Effects::new();
    let pending = table
        .place_hold(hold_req("r", "alice", 10_000, true), t(0), &mut fx)
        .expect("hold");
    let id = pending.record.hold;
    let active = table.ack_hold(id, "bob", t(7_000), &mut fx).expect("ack");
    assert_eq!(active.state, HoldState::Active);
    assert_eq!(active.ends_in_ms, 10_000, "full duration from the ack");
    assert_eq!(active.record.acked_by.as_deref(), Some("bob"));
    assert_eq!(active.record.active_since_ms, Some(WALL0 + 7_000));
    assert_eq!(active.record.placed_at_ms, WALL0);
    // A second acknowledgement is refused, naming who gave the first, and changes nothing.
    for second in ["carol", "alice", "bob"] {
        let mut fx = Effects::new();
        assert_eq!(
            table.ack_hold(id, second, t(8_000), &mut fx),
            Err(HoldError::AlreadyAcknowledged {
                hold: id,
                resource: "r".to_string(),
                by: "bob".to_string(),
            })
        );
        assert!(fx.is_empty(), "{fx:?}");
    }
    assert_eq!(table.holds(t(8_000))[0].record, active.record);

    let mut fx = Effects::new();
    table.advance(t(16_999), &mut fx);
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(
        frozen_holds(table.acquire(req("r", owner(1), 0), t(16_999), &mut fx)),
        vec![id]
    );
    table.advance(t(17_000), &mut fx);
    assert_eq!(labels(&fx), vec!["hold_expired"]);
    lock(&mut table, "r", owner(1), t(17_000));
}

#[test]
fn pending_hold_lapses_unacked_after_its_duration() {
    let mut table = table();
    let mut fx = Effects::new();
    let pending = table
        .place_hold(hold_req("r", "alice", 5_000, true), t(0), &mut fx)
        .expect("hold");
    let id = pending.record.hold;
    assert_eq!(table.next_deadline().map(|m| m.0), Some(5_000));
    let mut fx = Effects::new();
    table.advance(t(4_999), &mut fx);
    assert!(fx.is_empty());
    table.advance(t(5_000), &mut fx);
    assert_eq!(labels(&fx), vec!["hold_expired"]);
    assert!(fx.contains(&Effect::Persist(Mutation::DeleteHold(id))));
    assert!(table.holds(t(5_000)).is_empty());
    assert!(table.resources(t(5_000)).is_empty(), "nothing left to list");
    // Too late to acknowledge.
    let mut fx = Effects::new();
    assert_eq!(
        table.ack_hold(id, "bob", t(5_000), &mut fx),
        Err(HoldError::NotFound { hold: id })
    );
    // A late ack without an advance in between finds it lapsed too.
    let mut fx = Effects::new();
    let late = table
        .place_hold(hold_req("r", "alice", 5_000, true), t(10_000), &mut fx)
        .expect("hold");
    let mut fx = Effects::new();
    assert_eq!(
        table.ack_hold(late.record.hold, "bob", t(15_000), &mut fx),
        Err(HoldError::NotFound {
            hold: late.record.hold
        })
    );
    assert_eq!(labels(&fx), vec!["hold_expired"]);
}

#[test]
fn lift_or_ack_of_an_unknown_hold_is_not_found() {
    let mut table = table();
    let mut fx = Effects::new();
    for id in [HoldId(0), HoldId(1), HoldId(u64::MAX)] {
        assert_eq!(
            table.lift_hold(id, "bob", t(0), &mut fx),
            Err(HoldError::NotFound { hold: id })
        );
        assert_eq!(
            table.ack_hold(id, "bob", t(0), &mut fx),
            Err(HoldError::NotFound { hold: id })
        );
    }
    // A lease id is not a hold id.
    let lease = lock(&mut table, "r", owner(1), t(0));
    let as_hold = HoldId(lease.lease.0);
    assert_eq!(
        table.lift_hold(as_hold, "bob", t(0), &mut fx),
        Err(HoldError::NotFound { hold: as_hold })
    );
    assert!(fx.is_empty());
}

#[test]
fn hold_validation_refuses_empty_reason_or_operator_and_durations_out_of_range() {
    let mut table = table();
    let max = table.config().max_hold_ms;
    let mut fx = Effects::new();
    let cases: Vec<(&str, PlaceHold)> = vec![
        (
            "reason",
            PlaceHold {
                reason: String::new(),
                ..hold_req("r", "alice", 5_000, false)
            },
        ),
        (
            "reason",
            PlaceHold {
                reason: "   ".to_string(),
                ..hold_req("r", "alice", 5_000, false)
            },
        ),
        ("operator", hold_req("r", "", 5_000, false)),
        ("operator", hold_req("r", " \t", 5_000, true)),
        ("duration_ms", hold_req("r", "alice", 0, false)),
        ("duration_ms", hold_req("r", "alice", 999, false)),
        ("duration_ms", hold_req("r", "alice", max + 1, false)),
        ("resource", hold_req("../etc", "alice", 5_000, false)),
    ];
    for (field, bad) in cases {
        assert_eq!(
            hold_invalid_field(table.place_hold(bad.clone(), t(0), &mut fx)),
            field,
            "{bad:?}"
        );
    }
    assert!(fx.is_empty(), "{fx:?}");
    assert!(table.holds(t(0)).is_empty());
    // The bounds themselves are accepted.
    for (name, duration) in [("a", 1_000), ("b", max)] {
        table
            .place_hold(hold_req(name, "alice", duration, false), t(0), &mut fx)
            .expect("in range");
    }
    // Ack and lift need an operator too.
    let id = table.holds(t(0))[0].record.hold;
    let mut fx = Effects::new();
    assert_eq!(
        hold_invalid_field(table.ack_hold(id, "", t(0), &mut fx)),
        "operator"
    );
    assert_eq!(
        hold_invalid_field(table.lift_hold(id, " ", t(0), &mut fx)),
        "operator"
    );
    assert!(fx.is_empty());
}

fn stored_hold(id: u64, since_wall: u64, duration_ms: u64, active: bool) -> HoldRecord {
    HoldRecord {
        hold: HoldId(id),
        resource: "cfg/aim.conf".to_string(),
        reason: "hold point".to_string(),
        by: "alice".to_string(),
        placed_at_ms: since_wall,
        duration_ms,
        require_ack: !active,
        acked_by: None,
        active_since_ms: active.then_some(since_wall),
    }
}

#[test]
fn restored_hold_keeps_its_remaining_wall_clock_time_and_expires_then() {
    // Placed at wall W for 90 s; the server restarts 20 s (wall) later with a fresh monotonic
    // clock at 5: 70 s are left, counted on the new monotonic clock.
    let snapshot = Snapshot {
        holds: vec![stored_hold(7, WALL0, 90_000, true)],
        fence_high_water: 7,
        audit_seq: 3,
        ..Snapshot::default()
    };
    let restart = Now::at(5, WALL0 + 20_000);
    let at = |mono: u64| Now::at(mono, WALL0 + 20_000 + (mono - 5));
    let mut table = LockTable::restore(TableConfig::default(), snapshot, restart);
    let holds = table.holds(restart);
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0].state, HoldState::Active);
    assert_eq!(holds[0].ends_in_ms, 70_000);
    let view = table.resource("cfg/aim.conf", restart);
    assert_eq!(view.state, LockState::Frozen);
    let mut fx = Effects::new();
    assert_eq!(
        frozen_holds(table.acquire(req("cfg/aim.conf", owner(1), 0), at(6), &mut fx)),
        vec![HoldId(7)]
    );
    let waiter = queued(table.acquire(req("cfg/aim.conf", owner(1), 120_000), at(6), &mut fx));
    assert_eq!(table.next_deadline(), Some(restart.mono.plus_ms(70_000)));

    let mut fx = Effects::new();
    table.advance(at(5 + 69_999), &mut fx);
    assert!(fx.is_empty(), "{fx:?}");
    table.advance(at(5 + 70_000), &mut fx);
    assert_eq!(labels(&fx), vec!["hold_expired", "granted"]);
    let got = grants(&fx);
    assert_eq!(got[0].0, waiter);
    assert_eq!(
        got[0].1.token,
        FenceToken(8),
        "above the hold id and high water"
    );
}

#[test]
fn restored_holds_pending_clamped_and_ran_out_while_down() {
    let snapshot = Snapshot {
        holds: vec![
            // Pending since W, 60 s to be acknowledged: 45 s left after 15 s down.
            stored_hold(3, WALL0, 60_000, false),
            // Active, but its time ran out while the server was down: ends at the first advance.
            HoldRecord {
                resource: "b".to_string(),
                ..stored_hold(4, WALL0 - 120_000, 60_000, true)
            },
            // Active "in the future" (the wall clock stepped back): never more than its duration.
            HoldRecord {
                resource: "c".to_string(),
                ..stored_hold(5, WALL0 + 3_600_000, 60_000, true)
            },
        ],
        fence_high_water: 2,
        ..Snapshot::default()
    };
    let restart = Now::at(0, WALL0 + 15_000);
    let mut table = LockTable::restore(TableConfig::default(), snapshot, restart);
    let ends: Vec<(u64, HoldState, u64)> = table
        .holds(restart)
        .iter()
        .map(|h| (h.record.hold.0, h.state, h.ends_in_ms))
        .collect();
    assert_eq!(
        ends,
        vec![
            (3, HoldState::PendingAck, 45_000),
            (4, HoldState::Active, 0),
            (5, HoldState::Active, 60_000),
        ]
    );
    // Hold ids are from the token sequence: the next grant is above them all.
    assert_eq!(table.fence_high_water(), 5);
    let mut fx = Effects::new();
    let lease = granted(table.acquire(req("b", owner(1), 0), restart, &mut fx));
    assert_eq!(labels(&fx), vec!["hold_expired", "granted"]);
    assert_eq!(lease.token, FenceToken(6));
    // The restored pending hold can still be acknowledged, by someone else than alice.
    let mut fx = Effects::new();
    assert!(matches!(
        table.ack_hold(HoldId(3), "alice", t(1), &mut fx),
        Err(HoldError::SameOperator { .. })
    ));
    let acked = table
        .ack_hold(HoldId(3), "bob", Now::at(1_000, WALL0 + 16_000), &mut fx)
        .expect("ack");
    assert_eq!(acked.ends_in_ms, 60_000);
}

#[test]
fn resource_view_is_frozen_and_lists_the_hold() {
    let mut table = table();
    let held = lock(&mut table, "cfg/aim.conf", owner(1), t(0));
    let hold = place(&mut table, "cfg/aim.conf", 90_000, t(1_000));
    let view = table.resource("cfg/aim.conf", t(31_000));
    assert_eq!(view.state, LockState::Frozen);
    assert_eq!(view.holders[0].lease, held.lease);
    assert_eq!(view.holds.len(), 1);
    assert_eq!(view.holds[0].record, hold.record);
    assert_eq!(view.holds[0].state, HoldState::Active);
    assert_eq!(view.holds[0].ends_in_ms, 60_000);
    // A frozen resource nobody holds is still listed.
    place(&mut table, "cfg/free.conf", 5_000, t(2_000));
    let listed: Vec<(String, LockState)> = table
        .resources(t(2_000))
        .into_iter()
        .map(|v| (v.resource, v.state))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("cfg/aim.conf".to_string(), LockState::Frozen),
            ("cfg/free.conf".to_string(), LockState::Frozen),
        ]
    );
    assert_eq!(table.holds(t(2_000)).len(), 2);
}

// ---- break ------------------------------------------------------------------------------------

#[test]
fn break_revokes_a_heartbeating_holder_whose_next_renew_and_release_are_broken() {
    let mut table = table();
    let held = lock(&mut table, "cfg/aim.conf", owner(1), t(0));
    let mut fx = Effects::new();
    for at in [3_000, 6_000, 9_000] {
        table
            .renew(held.lease, Some(held.token), t(at), &mut fx)
            .expect("heartbeat");
    }
    let mut fx = Effects::new();
    let out = table
        .break_lock(
            "cfg/aim.conf",
            None,
            "alice",
            "orchestrator hung",
            90_000,
            t(9_500),
            &mut fx,
        )
        .expect("break");
    assert_eq!(out.revoked.len(), 1);
    assert_eq!(out.revoked[0].lease, held.lease);
    assert_eq!(out.revoked[0].owner, owner(1));
    assert_eq!(out.revoked[0].last_heartbeat_ms, WALL0 + 9_000);
    assert_eq!(
        ended(&fx),
        vec![(held.lease, broken("alice", "orchestrator hung"))]
    );
    assert!(fx.contains(&Effect::Persist(Mutation::DeleteLease(held.lease))));

    let broken_err = LeaseError::Broken {
        lease: held.lease,
        resource: "cfg/aim.conf".to_string(),
        by: "alice".to_string(),
        reason: "orchestrator hung".to_string(),
    };
    let mut fx = Effects::new();
    for at in [10_000, 12_000] {
        assert_eq!(
            table.renew(held.lease, Some(held.token), t(at), &mut fx),
            Err(broken_err.clone()),
            "the next heartbeat learns it was broken"
        );
    }
    assert_eq!(
        table.renew(held.lease, None, t(12_500), &mut fx),
        Err(broken_err.clone())
    );
    assert_eq!(
        table.release(held.lease, Some(held.token), t(13_000), &mut fx),
        Err(broken_err.clone()),
        "a broken lease is not quietly released"
    );
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(
        broken_err.to_string(),
        format!(
            "lease {} on cfg/aim.conf was broken by alice: orchestrator hung",
            held.lease
        )
    );
}

#[test]
fn after_a_break_the_old_token_fails_check_fence_and_the_next_grant_is_above_the_fence() {
    let mut table = table();
    let held = lock(&mut table, "cfg/aim.conf", owner(1), t(0));
    let mut fx = Effects::new();
    let out = table
        .break_lock(
            "cfg/aim.conf",
            None,
            "alice",
            "stuck",
            5_000,
            t(100),
            &mut fx,
        )
        .expect("break");
    assert!(out.fence > held.token);
    assert!(fx.contains(&Effect::Persist(Mutation::FenceHighWater(out.fence.0))));
    assert_eq!(table.fence_high_water(), out.fence.0);
    assert_eq!(
        table.check_fence("cfg/aim.conf", held.token, t(200), &mut fx),
        Err(FenceError::StaleToken {
            resource: "cfg/aim.conf".to_string(),
            presented: held.token,
            newest: FenceToken(0),
        })
    );
    let next = lock(&mut table, "cfg/aim.conf", owner(2), t(5_100));
    assert!(
        next.token > out.fence,
        "{} vs fence {}",
        next.token,
        out.fence
    );
    assert!(matches!(
        table.check_fence("cfg/aim.conf", held.token, t(5_200), &mut fx),
        Err(FenceError::StaleToken { newest, .. }) if newest == next.token
    ));
    table
        .check_fence("cfg/aim.conf", next.token, t(5_200), &mut fx)
        .expect("the new holder's token is current");
}

#[test]
fn break_freeze_blocks_new_grants_and_queued_waiters_until_it_ends() {
    let mut table = table();
    lock(&mut table, "r", owner(1), t(0));
    let mut fx = Effects::new();
    let waiter = queued(table.acquire(req("r", owner(2), 60_000), t(10), &mut fx));
    let mut fx = Effects::new();
    let out = table
        .break_lock("r", None, "alice", "stuck", 5_000, t(100), &mut fx)
        .expect("break");
    assert!(grants(&fx).is_empty(), "the freeze holds the queue: {fx:?}");
    let hold = out.hold.expect("a freeze was asked for");
    assert_eq!(hold.state, HoldState::Active);
    assert_eq!(hold.ends_in_ms, 5_000);
    assert_eq!(hold.record.by, "alice");
    assert_eq!(hold.record.reason, "break: stuck");
    assert_eq!(table.resource("r", t(100)).state, LockState::Frozen);
    let mut fx = Effects::new();
    assert_eq!(
        frozen_holds(table.acquire(req("r", owner(3), 0), t(200), &mut fx)),
        vec![hold.record.hold]
    );
    table.advance(t(5_099), &mut fx);
    assert!(grants(&fx).is_empty());

    let mut fx = Effects::new();
    table.advance(t(5_100), &mut fx);
    let got = grants(&fx);
    assert_eq!(got.len(), 1, "{fx:?}");
    assert_eq!(got[0].0, waiter);
    assert!(got[0].1.token > out.fence);
}

/// Regression: without a freeze the freed slot went to the queue before the fence advanced, so
/// the new holder's token was *below* the fence the break returned (and recorded in the audit):
/// an endpoint that learned the fence would have refused the legitimate new holder.
#[test]
fn break_without_freeze_hands_the_lock_straight_to_the_queue_above_the_fence() {
    let mut table = table();
    let held = lock(&mut table, "r", owner(1), t(0));
    let mut fx = Effects::new();
    let waiter = queued(table.acquire(req("r", owner(2), 60_000), t(10), &mut fx));
    let mut fx = Effects::new();
    let out = table
        .break_lock("r", None, "alice", "stuck", 0, t(100), &mut fx)
        .expect("break");
    assert!(out.hold.is_none());
    assert!(table.holds(t(100)).is_empty());
    let got = grants(&fx);
    assert_eq!(got.len(), 1, "{fx:?}");
    assert_eq!(got[0].0, waiter);
    assert!(out.fence > held.token);
    assert!(
        got[0].1.token > out.fence,
        "new holder's token {} must be above the fence {}",
        got[0].1.token,
        out.fence
    );
    let broke = audits(&fx)
        .into_iter()
        .find(|a| a.kind == AuditKind::Broke)
        .cloned()
        .expect("Broke audited");
    assert_eq!(broke.token, Some(out.fence));
    assert_eq!(table.resource("r", t(100)).state, LockState::Hot);
    table
        .check_fence("r", got[0].1.token, t(101), &mut fx)
        .expect("the new holder passes the fence check");
}

#[test]
fn break_with_no_reason_or_operator_or_a_bad_freeze_is_invalid_and_changes_nothing() {
    let mut table = table();
    let held = lock(&mut table, "r", owner(1), t(0));
    let max = table.config().max_hold_ms;
    let mut fx = Effects::new();
    let cases: [(&str, &str, &str, u64); 6] = [
        ("reason", "alice", "", 0),
        ("reason", "alice", "  ", 5_000),
        ("operator", "", "stuck", 0),
        ("freeze_ms", "alice", "stuck", 1),
        ("freeze_ms", "alice", "stuck", 999),
        ("freeze_ms", "alice", "stuck", max + 1),
    ];
    for (field, operator, reason, freeze) in cases {
        match table.break_lock("r", None, operator, reason, freeze, t(1), &mut fx) {
            Err(BreakError::Invalid(e)) => assert_eq!(e.field, field),
            other => panic!("expected invalid {field}, got {other:?}"),
        }
    }
    assert!(matches!(
        table.break_lock("a//b", None, "alice", "stuck", 0, t(1), &mut fx),
        Err(BreakError::Invalid(e)) if e.field == "resource"
    ));
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(holder_leases(&table, "r", t(1)), vec![held.lease]);
    assert_eq!(table.fence_high_water(), held.token.0);
}

#[test]
fn break_of_a_free_resource_or_a_lease_that_does_not_hold_it_is_not_held() {
    let mut table = table();
    let mut fx = Effects::new();
    assert_eq!(
        table.break_lock("r", None, "alice", "stuck", 5_000, t(0), &mut fx),
        Err(BreakError::NotHeld {
            resource: "r".to_string(),
            lease: None,
        })
    );
    let other = lock(&mut table, "other", owner(1), t(0));
    let held = lock(&mut table, "r", owner(2), t(0));
    let high = table.fence_high_water();
    let mut fx = Effects::new();
    for lease in [other.lease, LeaseId(999)] {
        assert_eq!(
            table.break_lock("r", Some(lease), "alice", "stuck", 5_000, t(1), &mut fx),
            Err(BreakError::NotHeld {
                resource: "r".to_string(),
                lease: Some(lease),
            })
        );
    }
    assert!(fx.is_empty(), "a refused break freezes nothing: {fx:?}");
    assert!(table.holds(t(1)).is_empty());
    assert_eq!(table.fence_high_water(), high);
    assert_eq!(holder_leases(&table, "r", t(1)), vec![held.lease]);
    assert_eq!(holder_leases(&table, "other", t(1)), vec![other.lease]);
}

#[test]
fn break_of_one_semaphore_lease_revokes_only_that_one() {
    let mut table = table();
    let mut fx = Effects::new();
    let sem = |n| Acquire {
        slots: 3,
        ..req("reboot/default", owner(n), 0)
    };
    let leases: Vec<LeaseView> = (1..=3)
        .map(|n| granted(table.acquire(sem(n), t(0), &mut fx)))
        .collect();
    let waiter = queued(table.acquire(
        Acquire {
            wait_ms: 60_000,
            ..sem(4)
        },
        t(1),
        &mut fx,
    ));
    let mut fx = Effects::new();
    let out = table
        .break_lock(
            "reboot/default",
            Some(leases[1].lease),
            "alice",
            "node-2 wedged",
            0,
            t(2),
            &mut fx,
        )
        .expect("break one");
    assert_eq!(out.revoked.len(), 1);
    assert_eq!(out.revoked[0].lease, leases[1].lease);
    assert_eq!(
        ended(&fx),
        vec![(leases[1].lease, broken("alice", "node-2 wedged"))]
    );
    let got = grants(&fx);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, waiter);
    assert_audited(&fx);
    // The others are untouched.
    for kept in [&leases[0], &leases[2]] {
        table
            .renew(kept.lease, Some(kept.token), t(3), &mut fx)
            .expect("the other holders keep their leases");
    }
    assert_eq!(
        holder_leases(&table, "reboot/default", t(3)),
        vec![leases[0].lease, leases[2].lease, got[0].1.lease]
    );
}

#[test]
fn break_is_audited_with_ended_broken_and_broke_naming_operator_and_reason() {
    let mut table = table();
    let held = lock(&mut table, "cfg/aim.conf", owner(1), t(0));
    let mut fx = Effects::new();
    let out = table
        .break_lock(
            "cfg/aim.conf",
            None,
            "alice",
            "clear stale lock",
            90_000,
            t(50),
            &mut fx,
        )
        .expect("break");
    assert_audited(&fx);
    assert_eq!(labels(&fx), vec!["hold_placed", "broken", "broke"]);
    let records = audits(&fx);
    let hold = out.hold.expect("freeze");
    assert_eq!(records[0].hold, Some(hold.record.hold));
    assert_eq!(records[0].operator.as_deref(), Some("alice"));
    let end = records[1];
    assert_eq!(
        end.kind,
        AuditKind::Ended {
            cause: broken("alice", "clear stale lock")
        }
    );
    assert_eq!(end.lease, Some(held.lease));
    assert_eq!(end.token, Some(held.token));
    assert_eq!(end.owner.as_ref(), Some(&owner(1)));
    assert_eq!(end.at_ms, WALL0 + 50);
    let broke = records[2];
    assert_eq!(broke.kind, AuditKind::Broke);
    assert_eq!(broke.resource, "cfg/aim.conf");
    assert_eq!(broke.operator.as_deref(), Some("alice"));
    assert_eq!(broke.reason.as_deref(), Some("clear stale lock"));
    assert_eq!(broke.token, Some(out.fence));
    assert_eq!(broke.hold, Some(hold.record.hold));
    assert_eq!(broke.lease, None, "no particular lease was named");
}

// ---- ghosts: node reboot ---------------------------------------------------------------------

#[test]
fn acquire_from_a_new_boot_of_the_node_reclaims_its_old_boot_leases_at_once() {
    let mut table = table();
    let a1 = lock(&mut table, "r1", proc_on("node-a", "b1", 11), t(0));
    let a2 = lock(&mut table, "r2", proc_on("node-a", "b1", 12), t(0));
    let b = lock(&mut table, "r3", proc_on("node-b", "b1", 11), t(0));
    let mut fx = Effects::new();
    let waiter =
        queued(table.acquire(req("r1", proc_on("node-c", "c1", 5), 60_000), t(1), &mut fx));

    // Any resource: node-a is back under boot b2 and asks for something unrelated.
    let mut fx = Effects::new();
    let fresh = granted(table.acquire(
        req("unrelated", proc_on("node-a", "b2", 11), 0),
        t(2),
        &mut fx,
    ));
    let rebooted = EndCause::NodeRebooted {
        new_boot_id: "b2".to_string(),
    };
    assert_eq!(
        ended(&fx),
        vec![(a1.lease, rebooted.clone()), (a2.lease, rebooted.clone())]
    );
    assert_audited(&fx);
    assert_eq!(
        labels(&fx),
        vec!["node_rebooted", "granted", "node_rebooted", "granted"],
        "r1 handed to its waiter, then the requester's own grant"
    );
    let got = grants(&fx);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, waiter);
    assert!(fx.contains(&Effect::Persist(Mutation::DeleteLease(a1.lease))));
    assert!(fx.contains(&Effect::Persist(Mutation::DeleteLease(a2.lease))));
    // The other node is untouched; r2 is free.
    assert_eq!(holder_leases(&table, "r3", t(2)), vec![b.lease]);
    assert_eq!(table.resource("r2", t(2)).state, LockState::Free);
    assert!(fresh.token > a2.token);
    // Late callers from the dead boot learn why.
    let mut fx = Effects::new();
    assert_eq!(
        table.renew(a1.lease, None, t(3), &mut fx),
        Err(LeaseError::LeaseExpired {
            lease: a1.lease,
            resource: "r1".to_string(),
            cause: rebooted,
        })
    );
    assert_eq!(table.local_leases("node-a", "b1", NS), vec![]);
    assert_eq!(
        table.local_leases("node-a", "b2", NS),
        vec![DeadProcess {
            lease: fresh.lease,
            pid: 11,
            start_time: 7_011,
        }]
    );
}

#[test]
fn a_process_on_the_same_boot_reacquiring_reclaims_nothing() {
    let mut table = table();
    let mine = lock(&mut table, "r1", proc_on("node-a", "b1", 11), t(0));
    let sibling = lock(&mut table, "r2", proc_on("node-a", "b1", 12), t(0));
    let mut fx = Effects::new();
    // The same process again: its own lease back.
    let again = granted(table.acquire(req("r1", proc_on("node-a", "b1", 11), 0), t(1), &mut fx));
    assert!(again.reacquired);
    assert_eq!(again.lease, mine.lease);
    // Another process on the same boot: refused HOT, nothing reclaimed.
    assert!(matches!(
        table.acquire(req("r2", proc_on("node-a", "b1", 13), 0), t(2), &mut fx),
        Err(AcquireError::Hot { .. })
    ));
    lock(&mut table, "r3", proc_on("node-a", "b1", 13), t(3));
    assert!(ended(&fx).is_empty(), "{fx:?}");
    assert_eq!(holder_leases(&table, "r1", t(3)), vec![mine.lease]);
    assert_eq!(holder_leases(&table, "r2", t(3)), vec![sibling.lease]);
    assert_eq!(table.local_leases("node-a", "b1", NS).len(), 3);
    // An explicit observation of the same boot is a no-op too.
    assert_eq!(table.observe_boot("node-a", "b1", t(4), &mut fx), vec![]);
    assert!(fx.is_empty());
}

/// Regression: the node index assumed one boot id per node. A waiter queued under the old boot
/// and granted after the new boot was seen was filed under the new boot, so later requests from
/// the new boot never reclaimed it (and the new boot's prober could not see it): a known ghost
/// lived until its TTL ran out.
#[test]
fn waiter_queued_under_the_old_boot_and_granted_after_the_reboot_is_reclaimed_too() {
    let mut table = table();
    let held = lock(&mut table, "r", proc_on("node-b", "bb", 1), t(0));
    let mut fx = Effects::new();
    // node-a/b1 queues for r, then node-a reboots into b2 and takes something else.
    queued(table.acquire(req("r", proc_on("node-a", "b1", 7), 60_000), t(1), &mut fx));
    let fresh = lock(&mut table, "other", proc_on("node-a", "b2", 8), t(2));
    // node-b leaves: the stale b1 waiter (its connection not yet noticed dead) gets r.
    let mut fx = Effects::new();
    table
        .release(held.lease, None, t(3), &mut fx)
        .expect("release");
    let ghost = grants(&fx)[0].1.clone();
    assert_eq!(ghost.owner.boot_id, "b1");

    // The next request from node-a/b2 reclaims it at once, and only it.
    let mut fx = Effects::new();
    assert_eq!(
        table.observe_boot("node-a", "b2", t(4), &mut fx),
        vec![ghost.lease]
    );
    assert_eq!(
        ended(&fx),
        vec![(
            ghost.lease,
            EndCause::NodeRebooted {
                new_boot_id: "b2".to_string()
            }
        )]
    );
    assert_eq!(holder_leases(&table, "other", t(4)), vec![fresh.lease]);
    assert_eq!(table.resource("r", t(4)).state, LockState::Free);
    assert_eq!(table.local_leases("node-a", "b1", NS), vec![]);
}

#[test]
fn reclaim_on_reboot_also_reclaims_a_ghost_waiter_granted_by_the_reclaim_itself() {
    let mut table = table();
    let old = lock(&mut table, "r", proc_on("node-a", "b1", 7), t(0));
    let mut fx = Effects::new();
    let stale = queued(table.acquire(req("r", proc_on("node-a", "b1", 8), 60_000), t(1), &mut fx));
    let live = queued(table.acquire(req("r", proc_on("node-c", "c1", 9), 60_000), t(2), &mut fx));
    // node-a/b2 shows up: its old holder goes, the old-boot waiter it hands r to is a ghost
    // too and goes at once, and r ends with the live waiter.
    let mut fx = Effects::new();
    let reclaimed = table.observe_boot("node-a", "b2", t(3), &mut fx);
    let got = grants(&fx);
    assert_eq!(
        got.iter().map(|(w, _)| *w).collect::<Vec<_>>(),
        vec![stale, live]
    );
    let ends: Vec<LeaseId> = ended(&fx).into_iter().map(|(l, _)| l).collect();
    assert_eq!(ends, vec![old.lease, got[0].1.lease]);
    assert_eq!(reclaimed, ends, "it says what it reclaimed");
    assert_audited(&fx);
    assert_eq!(holder_leases(&table, "r", t(3)), vec![got[1].1.lease]);
}

// ---- ghosts: a process reported dead ---------------------------------------------------------

fn evidence(lease: &LeaseView) -> DeadProcess {
    DeadProcess {
        lease: lease.lease,
        pid: lease.owner.pid,
        start_time: lease.owner.start_time,
    }
}

#[test]
fn report_dead_from_the_holders_node_and_boot_reclaims_and_hands_the_slot_on() {
    let mut table = table();
    let held = lock(&mut table, "r", proc_on("node-a", "b1", 11), t(0));
    let mut fx = Effects::new();
    let waiter = queued(table.acquire(req("r", owner(2), 60_000), t(1), &mut fx));
    assert_eq!(
        table.local_leases("node-a", "b1", NS),
        vec![evidence(&held)]
    );

    let mut fx = Effects::new();
    let reclaimed = table
        .report_dead(
            at("node-a", "b1"),
            "probe@node-a",
            evidence(&held),
            t(2),
            &mut fx,
        )
        .expect("accepted");
    assert_eq!(reclaimed.holder.lease, held.lease);
    assert_eq!(reclaimed.ghosts, vec![]);
    let died = EndCause::ProcessDied {
        reported_by: "probe@node-a".to_string(),
    };
    assert_eq!(ended(&fx), vec![(held.lease, died.clone())]);
    assert_audited(&fx);
    assert_eq!(labels(&fx), vec!["process_died", "granted"]);
    let got = grants(&fx);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, waiter);
    assert_eq!(holder_leases(&table, "r", t(2)), vec![got[0].1.lease]);
    assert!(table.local_leases("node-a", "b1", NS).is_empty());
    let mut fx = Effects::new();
    assert_eq!(
        table.release(held.lease, None, t(3), &mut fx),
        Err(LeaseError::LeaseExpired {
            lease: held.lease,
            resource: "r".to_string(),
            cause: died,
        })
    );
}

/// Bug pinned (issue 16, item 3): the engine learnt which leases a liveness report reclaimed by
/// digging through the audit records it emitted. The table says what it did: every lease the
/// report ended — the node's leases from older boots first, then each holder proved dead — and
/// every piece of evidence it refused.
#[test]
fn a_liveness_report_returns_every_lease_it_reclaimed_and_every_refusal() {
    let (mut table, ghost, dead, elsewhere) = a_ghost_beside_a_holder_of_the_new_boot();
    let mut fx = Effects::new();
    let report = table.report_liveness(
        at("node-a", "b2"),
        "probe@node-a",
        [evidence(&dead), evidence(&elsewhere)],
        t(4),
        &mut fx,
    );
    assert_eq!(report.reclaimed, vec![ghost, dead.lease]);
    assert_eq!(
        report.refused,
        vec![ReportError::NotSameNode {
            lease: elsewhere.lease,
            owner_node: "node-c".to_string(),
        }]
    );
    let ends: Vec<LeaseId> = ended(&fx).into_iter().map(|(l, _)| l).collect();
    assert_eq!(ends, report.reclaimed);
    assert_audited(&fx);

    // One report of a dead holder says which older-boot ghosts went with it.
    let (mut table, ghost, dead, _) = a_ghost_beside_a_holder_of_the_new_boot();
    let reclaimed = table
        .report_dead(at("node-a", "b2"), "probe", evidence(&dead), t(4), &mut fx)
        .expect("accepted");
    assert_eq!(reclaimed.holder.lease, dead.lease);
    assert_eq!(reclaimed.ghosts, vec![ghost]);

    // Evidence refused does not hide what the report's boot id reclaimed.
    let mut table = self::table();
    let old = lock(&mut table, "r", proc_on("node-a", "b1", 1), t(0));
    let unknown = DeadProcess {
        lease: LeaseId(99),
        pid: 1,
        start_time: 1,
    };
    let mut fx = Effects::new();
    let report = table.report_liveness(at("node-a", "b2"), "probe", [unknown], t(1), &mut fx);
    assert_eq!(report.reclaimed, vec![old.lease]);
    assert_eq!(
        report.refused,
        vec![ReportError::Lease(LeaseError::NotHolder {
            lease: LeaseId(99)
        })]
    );
}

/// node-a/b1 queues for `r`; node-a reboots into b2 and takes `other`; `r` then goes to the b1
/// waiter — a ghost of an older boot — beside node-c's lease on `u`. Returns the table, the
/// ghost, the b2 lease and node-c's.
fn a_ghost_beside_a_holder_of_the_new_boot() -> (LockTable, LeaseId, LeaseView, LeaseView) {
    let mut table = table();
    let held = lock(&mut table, "r", proc_on("node-b", "bb", 1), t(0));
    let mut fx = Effects::new();
    queued(table.acquire(req("r", proc_on("node-a", "b1", 7), 60_000), t(1), &mut fx));
    let fresh = lock(&mut table, "other", proc_on("node-a", "b2", 8), t(2));
    let elsewhere = lock(&mut table, "u", proc_on("node-c", "c1", 9), t(2));
    table
        .release(held.lease, None, t(3), &mut fx)
        .expect("release");
    let ghost = grants(&fx)[0].1.lease;
    (table, ghost, fresh, elsewhere)
}

#[test]
fn report_dead_from_another_node_is_not_same_node_and_changes_nothing() {
    let mut table = table();
    let held = lock(&mut table, "r", proc_on("node-a", "b1", 11), t(0));
    let mut fx = Effects::new();
    assert_eq!(
        table.report_dead(
            at("node-b", "b1"),
            "probe@node-b",
            evidence(&held),
            t(1),
            &mut fx
        ),
        Err(ReportError::NotSameNode {
            lease: held.lease,
            owner_node: "node-a".to_string(),
        })
    );
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(holder_leases(&table, "r", t(1)), vec![held.lease]);
}

/// Issue 15 item 3: node name and boot id are shared by every PID namespace of a machine, and
/// from another namespace a live holder's pid looks gone. A report from another namespace, from
/// a reporter that names none, or about a holder that recorded none, changes nothing.
#[test]
fn report_dead_from_another_pid_namespace_or_without_one_is_refused_and_changes_nothing() {
    let mut table = table();
    let held = lock(&mut table, "r", proc_on("node-a", "b1", 11), t(0));
    let unrecorded = lock(
        &mut table,
        "s",
        Owner {
            pid_ns: None,
            ..proc_on("node-a", "b1", 12)
        },
        t(0),
    );
    let pod = "pid:[4026532175]";
    let cases = [
        (&held, Some(pod), Some(NS), Some(pod)),
        (&held, None, Some(NS), None),
        (&unrecorded, Some(NS), None, Some(NS)),
        (&unrecorded, None, None, None),
    ];
    for (lease, reporter, holder_ns, reporter_ns) in cases {
        let mut fx = Effects::new();
        let from = Vantage {
            node: "node-a",
            boot_id: "b1",
            pid_ns: reporter,
        };
        let refused = table.report_dead(from, "probe@node-a", evidence(lease), t(1), &mut fx);
        assert_eq!(
            refused,
            Err(ReportError::NotSamePidNamespace {
                lease: lease.lease,
                pid: lease.owner.pid,
                holder_pid_ns: holder_ns.map(str::to_string),
                reporter_pid_ns: reporter_ns.map(str::to_string),
            })
        );
        assert!(fx.is_empty(), "{fx:?}");
    }
    assert_eq!(holder_leases(&table, "r", t(1)), vec![held.lease]);
    assert_eq!(holder_leases(&table, "s", t(1)), vec![unrecorded.lease]);
    // Only the namespace's own prober is shown the holder; nobody is shown the unrecorded one.
    assert_eq!(
        table.local_leases("node-a", "b1", NS),
        vec![evidence(&held)]
    );
    assert_eq!(table.local_leases("node-a", "b1", pod), vec![]);
    // A reboot still ends both: the boot id is the machine's, whatever the namespace.
    let mut fx = Effects::new();
    assert_eq!(
        table.observe_boot("node-a", "b2", t(2), &mut fx),
        vec![held.lease, unrecorded.lease]
    );
}

/// The same pid and start time in another PID namespace is another process: not a re-acquire.
#[test]
fn the_same_pid_in_another_pid_namespace_is_another_owner() {
    let mut table = table();
    let host = lock(&mut table, "r", proc_on("node-a", "b1", 11), t(0));
    let pod = Owner {
        pid_ns: Some("pid:[4026532175]".to_string()),
        ..proc_on("node-a", "b1", 11)
    };
    assert!(!pod.same_process(&host.owner));
    let mut fx = Effects::new();
    assert!(matches!(
        table.acquire(req("r", pod, 0), t(1), &mut fx),
        Err(AcquireError::Hot { .. })
    ));
}

/// A report from the holder's node name under another boot id is not accepted as evidence of a
/// process death (`NotSameNode` is what the check alone would say) — but it is proof the node
/// rebooted, which is stronger: `observe_boot` reclaims the lease first, with `NodeRebooted`,
/// and the report is told the lease has ended and why. The pinned outcome: the holder is gone
/// (its node rebooted), the cause on record is the reboot, not the reporter's claim.
#[test]
fn report_dead_from_another_boot_of_the_same_node_reclaims_it_as_node_rebooted() {
    let mut table = table();
    let held = lock(&mut table, "r", proc_on("node-a", "b1", 11), t(0));
    let mut fx = Effects::new();
    let waiter = queued(table.acquire(req("r", owner(2), 60_000), t(1), &mut fx));
    let mut fx = Effects::new();
    let rebooted = EndCause::NodeRebooted {
        new_boot_id: "b2".to_string(),
    };
    assert_eq!(
        table.report_dead(
            at("node-a", "b2"),
            "probe@node-a",
            evidence(&held),
            t(2),
            &mut fx
        ),
        Err(ReportError::Lease(LeaseError::LeaseExpired {
            lease: held.lease,
            resource: "r".to_string(),
            cause: rebooted.clone(),
        }))
    );
    assert_eq!(ended(&fx), vec![(held.lease, rebooted)]);
    assert_audited(&fx);
    assert_eq!(grants(&fx)[0].0, waiter);
}

#[test]
fn report_dead_about_another_pid_or_start_time_is_wrong_process() {
    let mut table = table();
    let held = lock(&mut table, "r", proc_on("node-a", "b1", 11), t(0));
    let mut fx = Effects::new();
    for (pid, start_time) in [
        (held.owner.pid + 1, held.owner.start_time),
        (held.owner.pid, held.owner.start_time + 1),
    ] {
        assert_eq!(
            table.report_dead(
                at("node-a", "b1"),
                "probe@node-a",
                DeadProcess {
                    lease: held.lease,
                    pid,
                    start_time,
                },
                t(1),
                &mut fx,
            ),
            Err(ReportError::WrongProcess {
                lease: held.lease,
                pid: held.owner.pid,
                start_time: held.owner.start_time,
            })
        );
    }
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(holder_leases(&table, "r", t(1)), vec![held.lease]);
}

#[test]
fn report_dead_on_an_ended_or_unknown_lease_is_a_lease_error() {
    let mut table = table();
    let released = lock(&mut table, "r1", proc_on("node-a", "b1", 11), t(0));
    let expired = lock(&mut table, "r2", proc_on("node-a", "b1", 12), t(0));
    let mut fx = Effects::new();
    table
        .release(released.lease, None, t(1), &mut fx)
        .expect("release");
    let mut fx = Effects::new();
    for (lease, cause) in [
        (&released, EndCause::Released),
        (&expired, EndCause::Expired),
    ] {
        assert_eq!(
            table.report_dead(
                at("node-a", "b1"),
                "probe",
                evidence(lease),
                t(TTL),
                &mut fx
            ),
            Err(ReportError::Lease(LeaseError::LeaseExpired {
                lease: lease.lease,
                resource: lease.resource.clone(),
                cause,
            }))
        );
    }
    let never = DeadProcess {
        lease: LeaseId(999),
        pid: 11,
        start_time: 7_011,
    };
    assert_eq!(
        table.report_dead(at("node-a", "b1"), "probe", never, t(TTL), &mut fx),
        Err(ReportError::Lease(LeaseError::NotHolder {
            lease: LeaseId(999)
        }))
    );
    assert_eq!(labels(&fx), vec!["expired"], "only r2's own expiry");
    // Validation: every field of the report is required.
    for (node, boot, by) in [("", "b1", "p"), ("node-a", " ", "p"), ("node-a", "b1", "")] {
        assert!(matches!(
            table.report_dead(at(node, boot), by, evidence(&expired), t(TTL), &mut fx),
            Err(ReportError::Invalid(_))
        ));
    }
}

// ---- lock-delay -------------------------------------------------------------------------------

fn delayed_req(resource: &str, owner: Owner, lock_delay_ms: u64) -> Acquire {
    Acquire {
        lock_delay_ms,
        ..req(resource, owner, 0)
    }
}

#[test]
fn expiry_with_lock_delay_makes_the_resource_delayed_and_refuses_wait_zero() {
    let mut table = table();
    let mut fx = Effects::new();
    let held = granted(table.acquire(delayed_req("r", owner(1), 5_000), t(0), &mut fx));
    let mut fx = Effects::new();
    assert_eq!(table.advance(t(TTL), &mut fx), 1);
    assert_eq!(ended(&fx), vec![(held.lease, EndCause::Expired)]);
    let view = table.resource("r", t(TTL));
    assert_eq!(view.state, LockState::Delayed);
    assert!(view.holders.is_empty());
    assert_eq!(view.delay_left_ms, 5_000);
    assert_eq!(table.next_deadline().map(|m| m.0), Some(TTL + 5_000));
    let mut fx = Effects::new();
    assert_eq!(
        table.acquire(req("r", owner(2), 0), t(TTL + 2_000), &mut fx),
        Err(AcquireError::LockDelay {
            resource: "r".to_string(),
            left_ms: 3_000,
        })
    );
    assert!(fx.is_empty());
    // Ends exactly on time, without an explicit advance.
    lock(&mut table, "r", owner(2), t(TTL + 5_000));
}

#[test]
fn waiter_is_granted_exactly_when_the_lock_delay_ends() {
    let mut table = table();
    let mut fx = Effects::new();
    granted(table.acquire(delayed_req("r", owner(1), 5_000), t(0), &mut fx));
    let waiter = queued(table.acquire(req("r", owner(2), 60_000), t(1), &mut fx));
    let mut fx = Effects::new();
    table.advance(t(TTL), &mut fx);
    assert!(
        grants(&fx).is_empty(),
        "the waiter waits out the delay: {fx:?}"
    );
    let view = table.resource("r", t(TTL));
    assert_eq!(view.state, LockState::Delayed);
    assert_eq!(view.waiters.len(), 1);
    table.advance(t(TTL + 4_999), &mut fx);
    assert!(grants(&fx).is_empty());
    let mut fx = Effects::new();
    table.advance(t(TTL + 5_000), &mut fx);
    let got = grants(&fx);
    assert_eq!(got.len(), 1, "{fx:?}");
    assert_eq!(got[0].0, waiter);
    assert_eq!(got[0].1.granted_at_ms, WALL0 + TTL + 5_000);
    // A waiter whose wait runs out during a delay is told about the delay.
    let mut table = self::table();
    let mut fx = Effects::new();
    granted(table.acquire(delayed_req("r", owner(1), 5_000), t(0), &mut fx));
    let short = queued(table.acquire(req("r", owner(2), TTL + 1_000), t(0), &mut fx));
    let mut fx = Effects::new();
    table.advance(t(TTL + 1_000), &mut fx);
    assert_eq!(
        fx.last(),
        Some(&Effect::WaitTimedOut {
            waiter: short,
            error: AcquireError::LockDelay {
                resource: "r".to_string(),
                left_ms: 4_000,
            },
        })
    );
}

/// Regression: the delay ran from whenever the expiry was *processed*, so a reaper that woke
/// late (or no reaper, and a request long after) stretched it. The lease failed at its deadline.
#[test]
fn lock_delay_runs_from_the_lease_deadline_even_when_the_expiry_is_noticed_late() {
    // Noticed 3 s late: 2 s of the 5 s delay are left, not 5.
    let mut table = table();
    let mut fx = Effects::new();
    granted(table.acquire(delayed_req("r", owner(1), 5_000), t(0), &mut fx));
    let mut fx = Effects::new();
    assert_eq!(
        table.acquire(req("r", owner(2), 0), t(TTL + 3_000), &mut fx),
        Err(AcquireError::LockDelay {
            resource: "r".to_string(),
            left_ms: 2_000,
        })
    );
    assert_eq!(table.next_deadline().map(|m| m.0), Some(TTL + 5_000));
    lock(&mut table, "r", owner(2), t(TTL + 5_000));

    // Noticed after the delay would have ended: no delay at all, granted at once.
    let mut table = self::table();
    let mut fx = Effects::new();
    let held = granted(table.acquire(delayed_req("r", owner(1), 5_000), t(0), &mut fx));
    let mut fx = Effects::new();
    let next = granted(table.acquire(req("r", owner(2), 0), t(TTL + 6_000), &mut fx));
    assert_eq!(ended(&fx), vec![(held.lease, EndCause::Expired)]);
    assert!(next.token > held.token);
    assert_eq!(table.resource("r", t(TTL + 6_000)).delay_left_ms, 0);
}

#[test]
fn clean_release_starts_no_lock_delay() {
    let mut table = table();
    let mut fx = Effects::new();
    let held = granted(table.acquire(delayed_req("r", owner(1), 5_000), t(0), &mut fx));
    let waiter = queued(table.acquire(req("r", owner(2), 60_000), t(1), &mut fx));
    let mut fx = Effects::new();
    table
        .release(held.lease, None, t(2), &mut fx)
        .expect("release");
    assert_eq!(grants(&fx)[0].0, waiter, "handed on at once");
    assert_eq!(table.resource("r", t(2)).delay_left_ms, 0);
    // And with nobody waiting, the next acquirer gets it at once.
    let mut fx = Effects::new();
    let held = granted(table.acquire(delayed_req("s", owner(1), 5_000), t(0), &mut fx));
    table
        .release(held.lease, None, t(3), &mut fx)
        .expect("release");
    assert_eq!(table.resource("s", t(3)).state, LockState::Free);
    lock(&mut table, "s", owner(2), t(3));
}

#[test]
fn break_starts_the_lock_delay() {
    let mut table = table();
    let mut fx = Effects::new();
    granted(table.acquire(delayed_req("r", owner(1), 5_000), t(0), &mut fx));
    let waiter = queued(table.acquire(req("r", owner(2), 60_000), t(1), &mut fx));
    let mut fx = Effects::new();
    table
        .break_lock("r", None, "alice", "stuck", 0, t(100), &mut fx)
        .expect("break");
    assert!(grants(&fx).is_empty(), "{fx:?}");
    let view = table.resource("r", t(100));
    assert_eq!(view.state, LockState::Delayed);
    assert_eq!(view.delay_left_ms, 5_000);
    let mut fx = Effects::new();
    table.advance(t(5_100), &mut fx);
    assert_eq!(grants(&fx)[0].0, waiter);

    // With a freeze longer than the delay, the freeze decides; with a shorter one, the delay.
    for (freeze, free_at) in [(8_000, 8_100), (2_000, 5_100)] {
        let mut table = self::table();
        let mut fx = Effects::new();
        granted(table.acquire(delayed_req("r", owner(1), 5_000), t(0), &mut fx));
        queued(table.acquire(req("r", owner(2), 60_000), t(1), &mut fx));
        table
            .break_lock("r", None, "alice", "stuck", freeze, t(100), &mut fx)
            .expect("break");
        let mut fx = Effects::new();
        table.advance(t(free_at - 1), &mut fx);
        assert!(grants(&fx).is_empty(), "freeze {freeze}: {fx:?}");
        table.advance(t(free_at), &mut fx);
        assert_eq!(grants(&fx).len(), 1, "freeze {freeze}: {fx:?}");
    }
}

#[test]
fn ghost_reclaim_starts_the_lock_delay() {
    // Reboot.
    let mut table = table();
    let mut fx = Effects::new();
    granted(table.acquire(
        delayed_req("r", proc_on("node-a", "b1", 1), 5_000),
        t(0),
        &mut fx,
    ));
    let mut fx = Effects::new();
    assert_eq!(table.observe_boot("node-a", "b2", t(10), &mut fx).len(), 1);
    assert_eq!(table.resource("r", t(10)).state, LockState::Delayed);
    // The rebooted node's own acquire waits the delay out like anyone else.
    assert!(matches!(
        table.acquire(req("r", proc_on("node-a", "b2", 1), 0), t(11), &mut fx),
        Err(AcquireError::LockDelay { left_ms: 4_999, .. })
    ));

    // Reported dead.
    let mut table = self::table();
    let mut fx = Effects::new();
    let held = granted(table.acquire(
        delayed_req("r", proc_on("node-a", "b1", 1), 5_000),
        t(0),
        &mut fx,
    ));
    table
        .report_dead(at("node-a", "b1"), "probe", evidence(&held), t(10), &mut fx)
        .expect("accepted");
    let view = table.resource("r", t(10));
    assert_eq!(view.state, LockState::Delayed);
    assert_eq!(view.delay_left_ms, 5_000);
}

#[test]
fn lock_delay_above_the_maximum_is_invalid() {
    let mut table = table();
    let max = table.config().max_hold_ms;
    let mut fx = Effects::new();
    assert!(matches!(
        table.acquire(delayed_req("r", owner(1), max + 1), t(0), &mut fx),
        Err(AcquireError::Invalid(e)) if e.field == "lock_delay_ms"
    ));
    granted(table.acquire(delayed_req("r", owner(1), max), t(0), &mut fx));
}

// ---- the audit trail -------------------------------------------------------------------------

/// Every kind of operation audits what it did, unnumbered (`seq` 0: the server's engine step
/// numbers records from the one sequence every domain shares) and stamped with its wall time.
#[test]
fn every_kind_of_operation_audits_unnumbered_records_stamped_with_its_wall_time() {
    let mut table = table();
    let mut all = Effects::new();
    let mut fx = Effects::new();
    granted(table.acquire(req("r", proc_on("node-a", "b1", 1), 0), t(0), &mut fx));
    granted(table.acquire(req("s", proc_on("node-b", "b1", 2), 0), t(0), &mut fx));
    granted(table.acquire(req("u", proc_on("node-b", "b1", 3), 0), t(0), &mut fx));
    let h1 = table
        .place_hold(hold_req("v", "alice", 5_000, true), t(1), &mut fx)
        .expect("hold");
    table
        .ack_hold(h1.record.hold, "bob", t(2), &mut fx)
        .expect("ack");
    let h2 = place(&mut table, "w", 60_000, t(3));
    table
        .lift_hold(h2.record.hold, "bob", t(4), &mut fx)
        .expect("lift");
    table.advance(t(5_002), &mut fx); // h1 expires
    table
        .break_lock("r", None, "alice", "stuck", 1_000, t(5_003), &mut fx)
        .expect("break");
    table.observe_boot("node-b", "b2", t(5_004), &mut fx); // b and c
    let d = lock(&mut table, "s", owner(4), t(5_005));
    table
        .release(d.lease, None, t(5_006), &mut fx)
        .expect("release");
    let e = lock(&mut table, "x", proc_on("node-e", "e1", 5), t(5_007));
    table
        .report_dead(at("node-e", "e1"), "probe", evidence(&e), t(5_008), &mut fx)
        .expect("dead");
    lock(&mut table, "y", owner(6), t(5_009));
    table.advance(t(5_009 + TTL), &mut fx); // expiry, and the break's freeze ran out long ago
    all.append(&mut fx);

    assert_audited(&all);
    let mut kinds: Vec<&str> = labels(&all);
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(
        kinds,
        vec![
            "broke",
            "broken",
            "expired",
            "granted",
            "hold_acked",
            "hold_expired",
            "hold_lifted",
            "hold_placed",
            "node_rebooted",
            "process_died",
            "released",
        ]
    );
    // Every record carries the wall time of the operation that wrote it.
    assert!(audits(&all).iter().all(|r| r.at_ms >= WALL0));
}

// ---- renewal vs reclaim ---------------------------------------------------------------------

#[test]
fn renew_exactly_at_the_deadline_fails_and_one_ms_before_succeeds() {
    // One millisecond before: still held, and the deadline moves a full TTL on.
    let mut table = table();
    let held = lock(&mut table, "r", owner(1), t(0));
    let mut fx = Effects::new();
    let renewed = table
        .renew(held.lease, Some(held.token), t(TTL - 1), &mut fx)
        .expect("1 ms before the deadline wins");
    assert_eq!(renewed.token, held.token);
    assert!(fx.is_empty());
    assert_eq!(table.next_deadline().map(|m| m.0), Some(2 * TTL - 1));

    // Exactly at the deadline: the reclaim wins, even though nobody called advance.
    let mut table = self::table();
    let held = lock(&mut table, "r", owner(1), t(0));
    let mut fx = Effects::new();
    assert_eq!(
        table.renew(held.lease, Some(held.token), t(TTL), &mut fx),
        Err(LeaseError::LeaseExpired {
            lease: held.lease,
            resource: "r".to_string(),
            cause: EndCause::Expired,
        })
    );
    assert_eq!(ended(&fx), vec![(held.lease, EndCause::Expired)]);
    assert_audited(&fx);
    // Also with a lock-delay: the failed renewal started the delay at the deadline.
    let mut table = self::table();
    let mut fx = Effects::new();
    let held = granted(table.acquire(delayed_req("r", owner(1), 3_000), t(0), &mut fx));
    assert!(table.renew(held.lease, None, t(TTL), &mut fx).is_err());
    assert_eq!(table.resource("r", t(TTL)).delay_left_ms, 3_000);
}
