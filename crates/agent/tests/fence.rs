//! The local fence rule: accept iff token >= applied_token and (rev <= told_fence_rev or
//! token >= told_fence); refusals are the exact `lock mismatch` line, before anything is
//! touched.

mod common;

use common::{NAME, Rig, desired, shadow};
use locksmith_agent::{FenceState, ReportState};

fn state(applied_rev: u64, applied_token: u64, told_fence: u64, told_fence_rev: u64) -> FenceState {
    FenceState {
        applied_rev,
        applied_token,
        told_fence,
        told_fence_rev,
    }
}

#[test]
fn rule_table() {
    // (state, rev, token, accepted)
    let cases = [
        (state(0, 0, 0, 0), 1, 1, true),
        // the applied token is a floor
        (state(5, 7, 7, 5), 6, 7, true),
        (state(5, 7, 7, 5), 6, 6, false),
        (state(5, 7, 7, 5), 4, 6, false),
        // revisions up to the one told with the fence may be older tokens' writes
        (state(3, 5, 8, 10), 10, 5, true),
        (state(3, 5, 8, 10), 9, 6, true),
        // newer than that, the told fence or later
        (state(3, 5, 8, 10), 11, 7, false),
        (state(3, 5, 8, 10), 11, 8, true),
        (state(3, 5, 8, 10), 11, 9, true),
    ];
    for (s, rev, token, ok) in cases {
        assert_eq!(
            s.check(NAME, rev, token).is_ok(),
            ok,
            "{s:?} rev {rev} token {token}"
        );
    }
}

#[test]
fn tell_moves_up_only_and_keeps_the_first_revision() {
    let mut s = FenceState::default();
    assert!(s.tell(8, 10));
    assert!(!s.tell(8, 12), "the same fence keeps its first revision");
    assert_eq!((s.told_fence, s.told_fence_rev), (8, 10));
    assert!(!s.tell(7, 20), "never down");
    assert!(s.tell(9, 13));
    assert_eq!((s.told_fence, s.told_fence_rev), (9, 13));
}

#[test]
fn the_exact_lines() {
    let s = state(5, 7, 9, 12);
    assert_eq!(
        s.check(NAME, 13, 8).expect_err("refused").to_string(),
        "lock mismatch: aim_lock_config.conf HOT — revision 13 was written under token 8, but token 9 holds configs/aim_lock_config.conf (told with revision 12); refusing it"
    );
    assert_eq!(
        s.check(NAME, 13, 6).expect_err("refused").to_string(),
        "lock mismatch: aim_lock_config.conf HOT — revision 13 was written under token 6, but revision 5 was applied under token 7; refusing it"
    );
}

#[test]
fn a_current_revision_under_an_older_token_is_accepted_when_told_with_it() {
    // The holder of token 7 wrote revision 12 and released; token 8 was granted with no write.
    let mut rig = Rig::new(false);
    rig.desire(desired(12, 7, 8));
    assert_eq!(rig.last().state, ReportState::Applied);
    // A revision after 12 under token 7 is not the current holder's.
    rig.desire(desired(13, 7, 8));
    let r = rig.last();
    assert_eq!(r.state, ReportState::Refused);
    assert_eq!(
        r.error.as_deref(),
        Some(
            "lock mismatch: aim_lock_config.conf HOT — revision 13 was written under token 7, but token 8 holds configs/aim_lock_config.conf (told with revision 12); refusing it"
        )
    );
    assert_eq!(rig.target(), Some(common::content(12)), "nothing touched");
}

#[test]
fn refused_before_anything_is_touched() {
    let mut rig = Rig::new(true);
    rig.desire(desired(2, 5, 5));
    let ops = rig.fs.ops();
    let runs = rig.script.runs().len();
    rig.desire(desired(3, 4, 5));
    assert_eq!(rig.last().state, ReportState::Refused);
    assert_eq!(rig.fs.ops(), ops, "no file operation");
    assert_eq!(rig.script.runs().len(), runs, "no hook");
}

#[test]
fn a_shadow_under_an_old_token_is_refused_and_moves_nothing() {
    let mut rig = Rig::new(false);
    rig.desire(desired(4, 6, 6));
    rig.desire(shadow(5, 5, 9));
    let r = rig.last();
    assert_eq!(r.state, ReportState::Refused);
    assert!(r.error.as_deref().unwrap_or("").starts_with(
        "lock mismatch: aim_lock_config.conf HOT — revision 5 was written under token 5"
    ));
    // The shadow's fence 9 was not folded in: revision 5 under token 6 is still fine.
    let s = rig.driver.as_ref().expect("running").agent().state();
    assert_eq!(s.configs[NAME].fence, state(4, 6, 6, 4));
}

#[test]
fn the_token_high_water_survives_a_restart() {
    let mut rig = Rig::new(false);
    rig.desire(desired(3, 9, 9));
    rig.crash_and_boot();
    rig.desire(desired(4, 8, 8));
    assert_eq!(rig.last().state, ReportState::Refused);
    assert_eq!(rig.last().applied_token, 9);
}
