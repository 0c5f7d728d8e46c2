//! The step without IO: a sequence of operations at chosen `now`s, and exactly what each must
//! answer, write and deliver.

use locksmith_core::{
    Acquire, AcquireOutcome, AuditKind, AuditRecord, Effect, EndCause, FenceToken, HoldId, LeaseId,
    LeaseRecord, LockTable, Mutation, Now, Owner, TableConfig, Trusted,
};

use super::step;
use crate::engine::State;

const WALL0: u64 = 1_700_000_000_000;
const TTL: u64 = 60_000;

/// `ms` into the run, on both clocks.
fn at(ms: u64) -> Now {
    Now::at(ms, WALL0 + ms)
}

fn owner(pid: u32) -> Owner {
    Owner {
        node: "node-1".into(),
        pid,
        start_time: 7,
        boot_id: "boot-1".into(),
        user: "ops".into(),
        purpose: format!("holder {pid}"),
        pid_ns: None,
    }
}

fn acquire(resource: &str, pid: u32, wait_ms: u64) -> Acquire {
    Acquire {
        resource: resource.to_string(),
        owner: owner(pid),
        ttl_ms: TTL,
        slots: 1,
        wait_ms,
        lock_delay_ms: 0,
        trusted: Trusted::NONE,
    }
}

/// The kind of each mutation of a batch, in order.
fn kinds(batch: &[Mutation]) -> Vec<&'static str> {
    batch
        .iter()
        .map(|m| match m {
            Mutation::PutLease(_) => "put_lease",
            Mutation::DeleteLease(_) => "delete_lease",
            Mutation::PutHold(_) => "put_hold",
            Mutation::DeleteHold(_) => "delete_hold",
            Mutation::AppendAudit(_) => "append_audit",
            Mutation::FenceHighWater(_) => "fence_high_water",
            Mutation::PutRecord { .. } => "put_record",
            Mutation::DeleteRecord { .. } => "delete_record",
        })
        .collect()
}

/// The batch's audit records as (seq, label), in batch order.
fn audited(batch: &[Mutation]) -> Vec<(u64, &str)> {
    batch
        .iter()
        .filter_map(|m| match m {
            Mutation::AppendAudit(r) => Some((r.seq, r.label())),
            _ => None,
        })
        .collect()
}

/// Deliverable 2 of issue 16: the engine's step is a pure function of the state, the operation
/// and `now`. A grant, a queued acquire, a renewal, a break with a freeze and the freeze running
/// out, each at a chosen time: the replies, the batches — audit records numbered by the step
/// in batch order, one sequence across lease and hold records, on from the stored 500 — and
/// the deliveries are exactly these, and the same run again gives the same steps.
#[test]
fn a_sequence_of_operations_steps_to_exactly_these_replies_batches_and_deliveries() {
    let run = || {
        let mut seen = Vec::new();
        // A store whose audit log ends at seq 500.
        let mut state = State::new(LockTable::new(TableConfig::default()), 500);

        // t=0: holder 1 takes cfg/a.
        let s = step(&mut state, at(0), |s, now, fx| {
            s.locks.acquire(acquire("cfg/a", 1, 0), now, fx)
        });
        let Ok(AcquireOutcome::Granted(first)) = &s.reply else {
            panic!("granted: {:?}", s.reply);
        };
        assert_eq!((first.lease, first.token), (LeaseId(1), FenceToken(1)));
        assert_eq!(
            s.batch,
            vec![
                Mutation::FenceHighWater(1),
                Mutation::PutLease(LeaseRecord {
                    lease: LeaseId(1),
                    resource: "cfg/a".into(),
                    owner: owner(1),
                    token: FenceToken(1),
                    ttl_ms: TTL,
                    slots: 1,
                    granted_at_ms: WALL0,
                    lock_delay_ms: 0,
                }),
                Mutation::AppendAudit(AuditRecord {
                    seq: 501,
                    at_ms: WALL0,
                    lease: Some(LeaseId(1)),
                    token: Some(FenceToken(1)),
                    owner: Some(owner(1)),
                    ..AuditRecord::new("cfg/a", AuditKind::Granted)
                }),
            ]
        );
        assert_eq!(s.deliveries, vec![]);
        seen.push(format!("{s:?}"));

        // t=10: holder 2 queues for it: nothing to write or deliver yet, no seq used.
        let s = step(&mut state, at(10), |s, now, fx| {
            s.locks.acquire(acquire("cfg/a", 2, 60_000), now, fx)
        });
        let Ok(AcquireOutcome::Queued(waiter)) = s.reply else {
            panic!("queued: {:?}", s.reply);
        };
        assert_eq!((s.batch.len(), s.deliveries.len()), (0, 0));
        assert_eq!(state.audit_seq, 501);
        seen.push(format!("{s:?}"));

        // t=20: holder 1 renews: still nothing to write.
        let s = step(&mut state, at(20), |s, now, fx| {
            s.locks.renew(LeaseId(1), Some(FenceToken(1)), now, fx)
        });
        assert_eq!(s.reply.map(|v| v.lease), Ok(LeaseId(1)));
        assert_eq!((s.batch.len(), s.deliveries.len()), (0, 0));

        // t=30: an operator breaks it with a 5 s freeze. Hold and lease records in one batch,
        // numbered in batch order; the waiter is not granted (frozen); the end is delivered.
        let s = step(&mut state, at(30), |s, now, fx| {
            s.locks
                .break_lock("cfg/a", None, "alice", "stuck", 5_000, now, fx)
        });
        let broke = s.reply.as_ref().expect("broken");
        assert_eq!(broke.fence, FenceToken(3));
        assert_eq!(broke.hold.as_ref().map(|h| h.record.hold), Some(HoldId(2)));
        assert_eq!(
            kinds(&s.batch),
            [
                "fence_high_water",
                "put_hold",
                "append_audit",
                "fence_high_water",
                "delete_lease",
                "append_audit",
                "append_audit"
            ]
        );
        assert_eq!(
            audited(&s.batch),
            [(502, "hold_placed"), (503, "broken"), (504, "broke")]
        );
        assert!(matches!(
            s.deliveries.as_slice(),
            [Effect::Ended { lease: LeaseId(1), cause: EndCause::Broken { by, .. }, .. }]
                if by == "alice"
        ));
        seen.push(format!("{s:?}"));

        // 1 ms before the freeze ends, stepping the clock does nothing.
        let s = step(&mut state, at(5_029), |s, now, fx| s.advance(now, fx));
        assert_eq!((s.reply, s.batch.len(), s.deliveries.len()), (0, 0, 0));

        // At its end: the hold expires and the waiter is granted, in one batch; the grant is
        // delivered to it.
        let s = step(&mut state, at(5_030), |s, now, fx| s.advance(now, fx));
        assert_eq!(
            kinds(&s.batch),
            [
                "delete_hold",
                "append_audit",
                "fence_high_water",
                "put_lease",
                "append_audit"
            ]
        );
        assert_eq!(audited(&s.batch), [(505, "hold_expired"), (506, "granted")]);
        let [Effect::Granted { waiter: to, lease }] = s.deliveries.as_slice() else {
            panic!("one grant: {:?}", s.deliveries);
        };
        assert_eq!(*to, waiter);
        assert_eq!((lease.lease, lease.owner.pid), (LeaseId(4), 2));
        assert_eq!(state.audit_seq, 506);
        seen.push(format!("{s:?}"));
        seen
    };
    assert_eq!(run(), run(), "the same steps from the same state");
}

/// A step that writes nothing takes no audit seq, and a refusal writes nothing.
#[test]
fn a_refusal_or_a_read_writes_nothing_and_takes_no_seq() {
    let mut state = State::new(LockTable::new(TableConfig::default()), 7);
    let s = step(&mut state, at(0), |s, now, fx| {
        s.locks.acquire(acquire("cfg/a", 1, 0), now, fx)
    });
    assert_eq!(audited(&s.batch), [(8, "granted")]);
    let s = step(&mut state, at(1), |s, now, fx| {
        s.locks.acquire(acquire("cfg/a", 2, 0), now, fx)
    });
    assert!(s.reply.is_err(), "HOT");
    let fenced = step(&mut state, at(2), |s, now, fx| {
        s.locks.check_fence("cfg/a", FenceToken(1), now, fx)
    });
    assert!(fenced.reply.is_ok());
    assert_eq!((s.batch.len(), fenced.batch.len()), (0, 0));
    assert_eq!(state.audit_seq, 8);
}

/// One audit sequence for every domain: a step in which the lock table grants and another
/// domain writes its own record and audit event (what a fenced config write will do) numbers
/// both kinds of record in batch order, in one batch, and the record rides in the same batch.
#[test]
fn a_domains_record_and_audit_event_share_the_batch_and_the_sequence_with_the_locks() {
    let mut state = State::new(LockTable::new(TableConfig::default()), 41);
    let s = step(&mut state, at(0), |s, now, fx| {
        let granted = s.locks.acquire(acquire("configs/app.conf", 1, 0), now, fx);
        fx.push(Effect::Persist(Mutation::PutRecord {
            space: "config_revs".into(),
            key: "app.conf/1".into(),
            value: b"threshold = 0.5".to_vec(),
        }));
        let event =
            locksmith_core::DomainEvent::new("config_written", serde_json::json!({"rev": 1}))
                .expect("a domain kind");
        fx.push(Effect::Persist(Mutation::AppendAudit(AuditRecord::new(
            "configs/app.conf",
            AuditKind::Domain(event),
        ))));
        granted
    });
    assert!(s.reply.is_ok());
    assert_eq!(
        kinds(&s.batch),
        [
            "fence_high_water",
            "put_lease",
            "append_audit",
            "put_record",
            "append_audit"
        ]
    );
    assert_eq!(audited(&s.batch), [(42, "granted"), (43, "config_written")]);
    assert_eq!(state.audit_seq, 43);
}
