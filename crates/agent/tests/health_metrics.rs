//! The health hook's `metric NAME=VALUE` lines: parsed from the real hook's whole output, and
//! carried by the core into the `applied` (or `failed`) report of the revision.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{Rig, desired};
use locksmith_agent::{
    Clock, HookKind, HookResult, HookRun, HookStatus, Hooks, ReportState, ShellHooks,
};

fn metrics(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

fn health(status: HookStatus, pairs: &[(&str, f64)]) -> HookResult {
    HookResult {
        status,
        tail: String::new(),
        metrics: metrics(pairs),
    }
}

#[test]
fn the_applied_report_carries_the_health_hooks_metrics() {
    let mut rig = Rig::new(true);
    rig.script.push(
        HookKind::Health,
        health(HookStatus::Ok, &[("error_rate", 0.002), ("p99_ms", 41.0)]),
    );
    rig.desire(desired(1, 1, 1));
    let r = rig.last().clone();
    assert_eq!(r.state, ReportState::Applied, "{r:?}");
    assert_eq!(
        r.metrics,
        metrics(&[("error_rate", 0.002), ("p99_ms", 41.0)])
    );
}

#[test]
fn a_failed_health_check_reports_its_metrics_with_the_failure_and_keeps_the_applied_ones() {
    let mut rig = Rig::new(true);
    rig.script.push(
        HookKind::Health,
        health(HookStatus::Ok, &[("error_rate", 0.001)]),
    );
    rig.desire(desired(1, 1, 1));
    rig.script.push(
        HookKind::Health,
        health(HookStatus::Exit { code: 1 }, &[("error_rate", 0.3)]),
    );
    rig.desire(desired(2, 1, 1));
    let r = rig.last().clone();
    assert_eq!((r.state, r.rev, r.applied_rev), (ReportState::Failed, 2, 1));
    assert_eq!(r.metrics, metrics(&[("error_rate", 0.3)]));
    // Revision 1 runs again; desired again (a reconnect), its applied report has its metrics.
    rig.desire(desired(1, 1, 1));
    let r = rig.last().clone();
    assert_eq!((r.state, r.rev), (ReportState::Applied, 1));
    assert_eq!(r.metrics, metrics(&[("error_rate", 0.001)]));
}

#[test]
fn a_health_hook_that_prints_no_metric_gives_a_report_without_metrics() {
    let mut rig = Rig::new(true);
    rig.desire(desired(1, 1, 1));
    assert_eq!(rig.last().state, ReportState::Applied);
    assert!(rig.last().metrics.is_empty());
    // And the report's JSON has no `metrics` key then.
    let json = serde_json::to_value(rig.last()).expect("json");
    assert!(json.get("metrics").is_none(), "{json}");
}

fn run(kind: HookKind, command: &str) -> HookResult {
    ShellHooks.run(&HookRun {
        kind,
        command: command.into(),
        timeout_ms: 10_000,
        config: "app.conf".into(),
        rev: 3,
        file: Path::new("/tmp/x").to_path_buf(),
    })
}

#[test]
fn the_real_health_hooks_metric_lines_are_read_from_its_whole_output_past_the_tail() {
    // The metric comes first, then 100 KiB of noise: it is far outside the 4 KiB tail.
    let r = run(
        HookKind::Health,
        "echo 'metric error_rate=0.002'; echo 'metric bad value'; \
         head -c 100000 /dev/zero | tr '\\0' a; echo; echo 'metric p99_ms=12' >&2; exit 1",
    );
    assert_eq!(r.status, HookStatus::Exit { code: 1 });
    assert_eq!(
        r.metrics,
        metrics(&[("error_rate", 0.002), ("p99_ms", 12.0)])
    );
    assert!(!r.tail.contains("error_rate"));
}

#[test]
fn only_the_health_hooks_output_is_read_for_metrics() {
    for kind in [HookKind::Validate, HookKind::Reload] {
        let r = run(kind, "echo 'metric error_rate=0.002'");
        assert!(r.is_ok());
        assert!(r.metrics.is_empty(), "{kind:?}: {:?}", r.metrics);
    }
}

/// A rig whose agent re-runs the health hook every 10 s.
fn checking_rig() -> Rig {
    let mut spec = common::spec(true);
    spec.health_interval_ms = Some(10_000);
    Rig::with(locksmith_agent::MemFs::new(), spec)
}

fn health_runs(rig: &Rig) -> usize {
    rig.script
        .runs()
        .iter()
        .filter(|(k, _)| *k == HookKind::Health)
        .count()
}

#[test]
fn the_periodic_health_check_reports_fresh_metrics_of_the_applied_revision_when_due() {
    let mut rig = checking_rig();
    rig.script.push(
        HookKind::Health,
        health(HookStatus::Ok, &[("error_rate", 0.001)]),
    );
    rig.desire(desired(1, 1, 1));
    assert_eq!(rig.last().metrics, metrics(&[("error_rate", 0.001)]));
    assert_eq!(
        rig.wakes.last(),
        Some(&10_000),
        "the first check is an interval away"
    );
    // A tick before it is due runs nothing.
    rig.clock.advance(5_000);
    rig.send(locksmith_agent::Event::Tick);
    assert_eq!(health_runs(&rig), 1);
    let before = rig.reports.len();
    rig.clock.advance(5_000);
    rig.script.push(
        HookKind::Health,
        health(HookStatus::Ok, &[("error_rate", 0.004)]),
    );
    rig.send(locksmith_agent::Event::Tick);
    assert_eq!(rig.script.runs().last(), Some(&(HookKind::Health, 1)));
    let r = &rig.reports[before..];
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (r[0].state, r[0].rev, r[0].applied_rev),
        (ReportState::Applied, 1, 1)
    );
    assert_eq!(r[0].metrics, metrics(&[("error_rate", 0.004)]));
    assert_eq!(
        r[0].received_to_applied_ms, None,
        "nothing was applied again"
    );
    assert_eq!(
        rig.wakes.last(),
        Some(&20_000),
        "and the next one is scheduled"
    );
}

#[test]
fn a_failing_periodic_check_reports_failed_and_rolls_nothing_back() {
    let mut rig = checking_rig();
    rig.desire(desired(1, 1, 1));
    let runs = rig.script.runs().len();
    rig.script.push(
        HookKind::Health,
        HookResult {
            status: HookStatus::Exit { code: 2 },
            tail: "503 from /health\n".into(),
            metrics: metrics(&[("error_rate", 0.2)]),
        },
    );
    rig.clock.advance(10_000);
    rig.send(locksmith_agent::Event::Tick);
    let r = rig.last().clone();
    assert_eq!((r.state, r.rev, r.applied_rev), (ReportState::Failed, 1, 1));
    assert_eq!(
        r.error.as_deref(),
        Some(
            "periodic health check of applied revision 1: health hook exited with status 2: 503 from /health; revision 1 stays applied"
        )
    );
    assert_eq!(r.metrics, metrics(&[("error_rate", 0.2)]));
    // Only the health hook ran: no restore, no reload; the file is revision 1's.
    assert_eq!(rig.script.runs()[runs..], [(HookKind::Health, 1)]);
    assert_eq!(rig.target(), Some(common::content(1)));
    // Desired again (a reconnect), the failure still stands…
    rig.desire(desired(1, 1, 1));
    assert_eq!(rig.last().state, ReportState::Failed);
    // …until a check passes.
    rig.clock.advance(10_000);
    rig.send(locksmith_agent::Event::Tick);
    assert_eq!(rig.last().state, ReportState::Applied);
    assert_eq!(rig.last().error, None);
    rig.desire(desired(1, 1, 1));
    assert_eq!(rig.last().state, ReportState::Applied);
}

#[test]
fn without_an_interval_or_a_health_hook_nothing_is_checked_again() {
    let mut rig = Rig::new(true);
    rig.desire(desired(1, 1, 1));
    assert!(rig.wakes.is_empty(), "{:?}", rig.wakes);
    let mut spec = common::spec(false);
    spec.health_interval_ms = Some(10_000);
    let mut rig = Rig::with(locksmith_agent::MemFs::new(), spec);
    rig.desire(desired(1, 1, 1));
    assert!(rig.wakes.is_empty(), "{:?}", rig.wakes);
}

#[test]
fn after_a_restart_the_applied_revision_is_checked_an_interval_later() {
    let mut rig = checking_rig();
    rig.desire(desired(1, 1, 1));
    rig.crash_and_boot();
    let runs = health_runs(&rig);
    let due = rig.clock.now_ms() + 10_000;
    assert!(rig.wakes.contains(&due), "{:?}", rig.wakes);
    rig.clock.advance(10_000);
    rig.script.push(
        HookKind::Health,
        health(HookStatus::Ok, &[("error_rate", 0.003)]),
    );
    rig.send(locksmith_agent::Event::Tick);
    assert_eq!(health_runs(&rig), runs + 1);
    assert_eq!(rig.last().metrics, metrics(&[("error_rate", 0.003)]));
}
