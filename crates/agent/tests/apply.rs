//! Applying: the happy path, hook failures and last-known-good, defer, shadow, latest wins,
//! restarts.

mod common;

use common::{NAME, Rig, apply_lock, content, desired, shadow, state_dir, target};
use locksmith_agent::{Event, HookKind, HookResult, HookStatus, ReportState, lkg_file};

#[test]
fn applies_with_hooks_in_order_and_keeps_lkg() {
    let mut rig = Rig::new(true);
    rig.fs.put_durable(&target(), b"original\n");
    rig.desire(desired(1, 3, 3));
    let r = rig.last().clone();
    assert_eq!(r.state, ReportState::Applied, "{r:?}");
    assert_eq!((r.rev, r.applied_rev, r.applied_token), (1, 1, 3));
    assert_eq!(r.received_to_applied_ms, Some(0));
    assert_eq!(rig.target(), Some(content(1)));
    assert_eq!(
        rig.script.runs(),
        vec![
            (HookKind::Validate, 1),
            (HookKind::Reload, 1),
            (HookKind::Health, 1)
        ]
    );
    // Validate saw the whole new file, staged beside the target.
    assert_eq!(
        rig.script.inner.lock().expect("hooks lock").validated,
        vec![Some(content(1))]
    );
    assert_eq!(
        rig.file(&state_dir().join(lkg_file(NAME, 1))),
        Some(content(1))
    );
    // The adopted original is gone once revision 1 is the last-known-good.
    assert_eq!(rig.file(&state_dir().join(lkg_file(NAME, 0))), None);
    let staged: Vec<_> = rig
        .fs
        .paths()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("locksmith-"))
        .collect();
    assert!(staged.is_empty(), "no staged file left: {staged:?}");
}

#[test]
fn health_failure_restores_lkg_and_reports_failed() {
    let mut rig = Rig::new(true);
    rig.desire(desired(1, 3, 3));
    rig.script
        .fail(HookKind::Health, 1, "service answered 503\n");
    rig.desire(desired(2, 3, 3));
    let r = rig.last().clone();
    assert_eq!(r.state, ReportState::Failed);
    assert_eq!(r.rev, 2);
    assert_eq!(r.applied_rev, 1);
    assert_eq!(
        r.error.as_deref(),
        Some(
            "health hook exited with status 1: service answered 503; restored last-known-good revision 1"
        )
    );
    assert_eq!(rig.target(), Some(content(1)));
    // The reload ran again after the restore, for revision 1.
    assert_eq!(rig.script.runs().last(), Some(&(HookKind::Reload, 1)));
    // Not wedged: the next revision applies normally.
    rig.desire(desired(3, 3, 3));
    assert_eq!(rig.last().state, ReportState::Applied);
    assert_eq!(rig.target(), Some(content(3)));
}

#[test]
fn failing_first_apply_restores_the_file_as_found_or_its_absence() {
    let mut rig = Rig::new(true);
    rig.fs.put_durable(&target(), b"hand-written\n");
    rig.script.fail(HookKind::Reload, 2, "");
    rig.desire(desired(1, 1, 1));
    assert_eq!(rig.last().state, ReportState::Failed);
    assert_eq!(rig.target(), Some(b"hand-written\n".to_vec()));

    let mut rig = Rig::new(true);
    rig.script.fail(HookKind::Health, 2, "");
    rig.desire(desired(1, 1, 1));
    assert_eq!(rig.last().state, ReportState::Failed);
    assert_eq!(rig.target(), None, "there was no file: there is none again");
}

#[test]
fn failing_validate_never_touches_the_target() {
    let mut rig = Rig::new(true);
    rig.desire(desired(1, 1, 1));
    rig.script
        .fail(HookKind::Validate, 1, "line 2: bad threshold\n");
    rig.desire(desired(2, 1, 1));
    let r = rig.last().clone();
    assert_eq!(r.state, ReportState::Failed);
    assert_eq!(
        r.error.as_deref(),
        Some("validate hook exited with status 1: line 2: bad threshold")
    );
    assert_eq!(rig.target(), Some(content(1)), "whole, and the old one");
    assert_eq!(
        rig.script.runs().len(),
        3 + 1,
        "no reload after a failed validate"
    );
    // Re-sent, the failed revision is not tried again; the next one is.
    rig.desire(desired(2, 1, 1));
    assert_eq!(rig.script.runs().len(), 4);
    rig.desire(desired(3, 1, 1));
    assert_eq!(rig.last().state, ReportState::Applied);
}

#[test]
fn empty_or_corrupt_content_is_never_written() {
    // consul-template#727: an empty answer must not become an empty file.
    let mut rig = Rig::new(false);
    rig.desire(desired(1, 1, 1));
    rig.server.insert(2, Vec::new());
    rig.desire(desired(2, 1, 1));
    let r = rig.last().clone();
    assert_eq!(r.state, ReportState::Failed);
    assert!(r.error.expect("why").contains("does not match"));
    assert_eq!(rig.target(), Some(content(1)));
    // Content that is not valid conf.
    let bad = b"mode = fast\n".to_vec();
    rig.server.insert(3, bad.clone());
    let mut d = desired(3, 1, 1);
    d.sha256 = locksmith_config::sha256_hex(&bad);
    d.size = bad.len() as u64;
    rig.desire(d);
    assert_eq!(rig.last().state, ReportState::Failed);
    assert!(
        rig.last()
            .error
            .as_deref()
            .unwrap_or("")
            .contains("not valid conf")
    );
    assert_eq!(rig.target(), Some(content(1)));
}

#[test]
fn defers_while_the_apply_lock_exists() {
    let mut rig = Rig::new(false);
    rig.fs.put_durable(&apply_lock(), b"");
    rig.desire(desired(1, 1, 1));
    let r = rig.last().clone();
    assert_eq!(r.state, ReportState::Deferred);
    assert!(
        r.error
            .expect("why")
            .contains("/run/drone/apply.lock exists")
    );
    assert_eq!(rig.target(), None);
    assert_eq!(rig.wakes.len(), 1);
    // Still there at the tick: nothing new reported.
    let n = rig.reports.len();
    rig.clock.advance(1_000);
    rig.send(Event::Tick);
    assert_eq!(rig.reports.len(), n);
    // A newer revision while deferred replaces the waiting one.
    rig.desire(desired(2, 1, 1));
    assert_eq!(rig.last().state, ReportState::Deferred);
    assert_eq!(rig.last().rev, 2);
    // Gone: the next tick applies the newest.
    use locksmith_agent::Fs;
    rig.fs.remove(&apply_lock()).expect("remove");
    rig.clock.advance(1_000);
    rig.send(Event::Tick);
    assert_eq!(rig.last().state, ReportState::Applied);
    assert_eq!(rig.last().rev, 2);
    assert_eq!(rig.last().received_to_applied_ms, Some(1_000));
    assert_eq!(rig.target(), Some(content(2)));
}

#[test]
fn shadow_validates_and_diffs_but_never_activates() {
    let mut rig = Rig::new(true);
    rig.desire(desired(1, 2, 2));
    let runs = rig.script.runs().len();
    rig.desire(shadow(2, 2, 2));
    let r = rig.last().clone();
    assert_eq!(r.state, ReportState::ShadowOk);
    let diff = r.diff.expect("a diff");
    assert!(diff.contains("-safety_threshold = 0.1"), "{diff}");
    assert!(diff.contains("+safety_threshold = 0.2"), "{diff}");
    assert_eq!(rig.target(), Some(content(1)));
    assert_eq!(
        rig.script.runs()[runs..],
        [(HookKind::Validate, 2)],
        "validate only"
    );
    // A failing shadow is reported, and the config's own state stays applied.
    rig.script.fail(HookKind::Validate, 3, "nope");
    rig.desire(shadow(3, 2, 2));
    assert_eq!(rig.last().state, ReportState::ShadowFailed);
    let agent_reports = rig.driver.as_ref().expect("running").agent().reports();
    assert_eq!(agent_reports[0].state, ReportState::Applied);
    assert_eq!(rig.target(), Some(content(1)));
    assert_eq!(
        rig.file(&common::target().with_file_name(".aim.conf.locksmith-shadow")),
        None
    );
    // The shadow's revision is never the applied one.
    assert_eq!(
        rig.driver
            .as_ref()
            .expect("running")
            .agent()
            .state()
            .configs[NAME]
            .fence
            .applied_rev,
        1
    );
}

#[test]
fn offline_agent_jumps_to_the_newest_revision() {
    let mut rig = Rig::new(true);
    rig.desire(desired(1, 1, 1));
    rig.online = false;
    rig.send(Event::Disconnected);
    // Desired revisions arrive but content cannot be fetched.
    for rev in 2..=5 {
        rig.desire(desired(rev, 1, 1));
    }
    assert_eq!(
        rig.target(),
        Some(content(1)),
        "keeps running last-known-good"
    );
    rig.online = true;
    rig.send(Event::Connected);
    assert_eq!(rig.target(), Some(content(5)));
    let applied: Vec<u64> = rig
        .reports
        .iter()
        .filter(|r| r.state == ReportState::Applied)
        .map(|r| r.rev)
        .collect();
    assert_eq!(
        applied,
        vec![1, 1, 5],
        "1, re-sent on connect, then 5: nothing between"
    );
    let validated: Vec<u64> = rig
        .script
        .runs()
        .into_iter()
        .filter(|(k, _)| *k == HookKind::Validate)
        .map(|(_, r)| r)
        .collect();
    assert_eq!(validated, vec![1, 5]);
}

#[test]
fn fetch_failures_retry_with_backoff() {
    let mut rig = Rig::new(false);
    rig.server.remove(&1);
    rig.desire(desired(1, 1, 1));
    assert_eq!(rig.wakes, vec![1_000]);
    rig.server.insert(1, content(1));
    rig.clock.advance(1_000);
    rig.send(Event::Tick);
    assert_eq!(rig.last().state, ReportState::Applied);
    assert_eq!(rig.last().received_to_applied_ms, Some(1_000));
}

#[test]
fn a_timed_out_reload_is_a_failure_with_its_output() {
    let mut rig = Rig::new(true);
    rig.desire(desired(1, 1, 1));
    rig.script.push(
        HookKind::Reload,
        HookResult {
            status: HookStatus::TimedOut { after_ms: 30_000 },
            tail: "waiting for pid\n".into(),
            ..HookResult::ok()
        },
    );
    rig.desire(desired(2, 1, 1));
    assert_eq!(
        rig.last().error.as_deref(),
        Some(
            "reload hook timed out after 30000 ms and was killed: waiting for pid; restored last-known-good revision 1"
        )
    );
    assert_eq!(rig.target(), Some(content(1)));
}

#[test]
fn restart_keeps_lkg_and_reports_it() {
    let mut rig = Rig::new(true);
    rig.desire(desired(7, 4, 4));
    let before = rig.reports.len();
    rig.crash_and_boot();
    assert_eq!(rig.target(), Some(content(7)));
    assert_eq!(
        rig.file(&state_dir().join(lkg_file(NAME, 7))),
        Some(content(7))
    );
    // Connected: the applied state is reported again, and nothing was re-run.
    let r = &rig.reports[before..];
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].state, r[0].applied_rev, r[0].applied_token),
        (ReportState::Applied, 7, 4)
    );
    rig.desire(desired(7, 4, 4));
    assert_eq!(rig.last().state, ReportState::Applied);
    assert_eq!(
        rig.script.runs().len(),
        3,
        "the same revision is not applied twice"
    );
}

#[test]
fn a_target_changed_by_hand_is_put_back_at_start() {
    let mut rig = Rig::new(false);
    rig.desire(desired(1, 1, 1));
    rig.driver = None;
    rig.fs.put_durable(&target(), b"edited\n");
    rig.boot();
    assert_eq!(rig.target(), Some(content(1)));
    let r = rig
        .reports
        .iter()
        .find(|r| r.state == ReportState::Failed)
        .expect("a failed report");
    assert_eq!(
        r.error.as_deref(),
        Some(
            "/etc/drone/aim.conf was changed outside the agent; restored last-known-good revision 1"
        )
    );
}
