//! Power loss at every file operation of an apply (MemFs), and a property test of random
//! applies, hook failures, shadows and crashes against a model: after any crash and restart
//! the target is the old file or the new one, whole, and it is exactly the last-known-good the
//! state file names.

mod common;

use common::{NAME, Rig, content, desired, shadow, state_dir, target};
use locksmith_agent::{HookKind, ReportState, load_state};
use proptest::prelude::*;

/// After a restart: no apply in flight, the target is the committed last-known-good, whole,
/// its copy is in the state directory, and no staged file is left. Returns the applied rev.
fn assert_recovered(rig: &Rig, original: Option<&[u8]>) -> u64 {
    let state = load_state(&rig.fs, &rig.spec).expect("state file");
    let cs = state.configs.get(NAME).cloned().unwrap_or_default();
    assert!(
        cs.in_flight.is_none(),
        "nothing in flight after recovery: {cs:?}"
    );
    let target = rig.target();
    match &cs.lkg {
        None => assert_eq!(
            target.as_deref(),
            original,
            "never applied: the file as found"
        ),
        Some(lkg) => {
            let want = if lkg.rev == 0 {
                original.map(<[u8]>::to_vec)
            } else {
                Some(content(lkg.rev))
            };
            assert_eq!(target, want, "target is the committed revision {}", lkg.rev);
            assert_eq!(
                target.as_ref().map(|t| locksmith_config::sha256_hex(t)),
                lkg.sha256
            );
            if lkg.sha256.is_some() {
                assert_eq!(rig.file(&state_dir().join(&lkg.file)), target, "LKG copy");
            }
            assert_eq!(cs.fence.applied_rev, lkg.rev);
        }
    }
    let left: Vec<_> = rig
        .fs
        .paths()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".locksmith-"))
        .collect();
    assert!(left.is_empty(), "staged files left: {left:?}");
    cs.fence.applied_rev
}

/// Runs `scenario` once to count its file operations, then again crashing after each.
fn every_fault_point(
    setup: impl Fn(&mut Rig),
    scenario: impl Fn(&mut Rig),
    original: Option<&[u8]>,
    allowed: &[Option<Vec<u8>>],
) {
    let mut rig = Rig::new(true);
    setup(&mut rig);
    let before = rig.fs.ops();
    scenario(&mut rig);
    let total = rig.fs.ops() - before;
    assert!(total > 10, "the scenario does IO ({total} ops)");
    let mut seen = Vec::new();
    for k in 0..=total {
        let mut rig = Rig::new(true);
        setup(&mut rig);
        rig.fs.fail_after(k);
        scenario(&mut rig);
        rig.driver = None;
        rig.fs.power_cycle();
        let t = rig.target();
        assert!(allowed.contains(&t), "crash after op {k}: target is {t:?}");
        if !seen.contains(&t) {
            seen.push(t);
        }
        rig.boot();
        assert_recovered(&rig, original);
        // And a crash during the recovery itself, at each of its first operations.
        for j in 0..6 {
            let mut again = Rig::with(rig.fs.clone(), rig.spec.clone());
            again.fs.fail_after(j);
            again.crash_and_boot();
            assert_recovered(&again, original);
        }
        // The revision is applied normally afterwards.
        rig.desire(desired(2, 1, 1));
        assert_eq!(
            rig.last().state,
            ReportState::Applied,
            "after crash at op {k}"
        );
        assert_eq!(rig.target(), Some(content(2)));
    }
    assert_eq!(
        seen.len(),
        allowed.len(),
        "crashes left each allowed target: {seen:?}"
    );
}

#[test]
fn crash_at_every_step_of_an_apply() {
    every_fault_point(
        |rig| rig.desire(desired(1, 1, 1)),
        |rig| rig.desire(desired(2, 1, 1)),
        None,
        &[Some(content(1)), Some(content(2))],
    );
}

#[test]
fn crash_at_every_step_of_a_rollback() {
    every_fault_point(
        |rig| rig.desire(desired(1, 1, 1)),
        |rig| {
            rig.script.fail(HookKind::Health, 1, "unhealthy");
            rig.desire(desired(2, 1, 1));
            rig.script.inner.lock().expect("hooks").next.clear();
        },
        None,
        &[Some(content(1)), Some(content(2))],
    );
}

#[test]
fn crash_at_every_step_of_a_first_apply_over_a_file_found() {
    let original = b"found before the agent\n".to_vec();
    every_fault_point(
        |rig| rig.fs.put_durable(&target(), &original),
        |rig| rig.desire(desired(1, 1, 1)),
        Some(&original),
        &[Some(original.clone()), Some(content(1))],
    );
}

#[test]
fn crash_at_every_step_of_a_first_apply_with_no_file() {
    every_fault_point(
        |_| {},
        |rig| rig.desire(desired(1, 1, 1)),
        None,
        &[None, Some(content(1))],
    );
}

#[derive(Debug, Clone)]
enum Op {
    Apply(Option<HookKind>),
    CrashDuring(u8),
    Shadow,
    Restart,
    NewHolder,
    Stale,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop_oneof![
            Just(None),
            Just(Some(HookKind::Validate)),
            Just(Some(HookKind::Reload)),
            Just(Some(HookKind::Health)),
        ]
        .prop_map(Op::Apply),
        3 => (0u8..40).prop_map(Op::CrashDuring),
        1 => Just(Op::Shadow),
        1 => Just(Op::Restart),
        1 => Just(Op::NewHolder),
        1 => Just(Op::Stale),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn model(ops in prop::collection::vec(op(), 1..20)) {
        let mut rig = Rig::new(true);
        let mut next_rev = 1u64;
        let mut token = 1u64;
        // The model: the applied revision (0: none) and the highest token applied.
        let mut applied = 0u64;
        let mut high = 0u64;
        let mut told = locksmith_agent::FenceState::default();
        for op in ops {
            rig.script.inner.lock().expect("hooks").next.clear();
            match op {
                Op::Apply(fail) => {
                    let rev = next_rev;
                    next_rev += 1;
                    if let Some(kind) = fail {
                        rig.script.fail(kind, 1, "scripted");
                    }
                    told.tell(token, rev);
                    rig.desire(desired(rev, token, token));
                    if fail.is_none() {
                        prop_assert_eq!(rig.last().state, ReportState::Applied);
                        applied = rev;
                        high = token;
                    } else {
                        prop_assert_eq!(rig.last().state, ReportState::Failed);
                    }
                }
                Op::CrashDuring(k) => {
                    let rev = next_rev;
                    next_rev += 1;
                    rig.fs.fail_after(u64::from(k));
                    told.tell(token, rev);
                    rig.desire(desired(rev, token, token));
                    rig.crash_and_boot();
                    let now = assert_recovered(&rig, None);
                    prop_assert!(now == applied || now == rev, "applied {now}, expected {applied} or {rev}");
                    if now == rev {
                        applied = rev;
                        high = token;
                    }
                    // A crash before the first state write loses the newest tell: the server
                    // tells it again with the next desired revision.
                    let state = rig.driver.as_ref().expect("running").agent().state();
                    let fence = state.configs[NAME].fence;
                    told.told_fence = fence.told_fence;
                    told.told_fence_rev = fence.told_fence_rev;
                }
                Op::Shadow => {
                    rig.desire(shadow(next_rev, token, token));
                    next_rev += 1;
                    prop_assert_eq!(rig.last().state, ReportState::ShadowOk);
                }
                Op::Restart => rig.crash_and_boot(),
                Op::NewHolder => token += 1,
                Op::Stale if token > 1 => {
                    // Written under the previous holder's token, told with the current fence:
                    // refused iff the rule says so (the fence may be news coming with it).
                    let rev = next_rev;
                    next_rev += 1;
                    told.tell(token, rev);
                    let refused = token - 1 < high || (rev > told.told_fence_rev && token - 1 < told.told_fence);
                    rig.desire(desired(rev, token - 1, token));
                    if refused {
                        prop_assert_eq!(rig.last().state, ReportState::Refused);
                    } else {
                        prop_assert_eq!(rig.last().state, ReportState::Applied);
                        applied = rev;
                        high = high.max(token - 1);
                    }
                }
                Op::Stale => {}
            }
            let want = (applied > 0).then(|| content(applied));
            prop_assert_eq!(rig.target(), want, "target is the applied revision {}", applied);
            let state = rig.driver.as_ref().expect("running").agent().state();
            let fence = state.configs[NAME].fence;
            prop_assert_eq!(fence.applied_rev, applied);
            prop_assert_eq!(fence.applied_token, high);
        }
        rig.crash_and_boot();
        assert_recovered(&rig, None);
    }
}
