//! The health hook's `metric NAME=VALUE` lines: parsed from the real hook's whole output, and
//! carried by the core into the `applied` (or `failed`) report of the revision.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{Rig, desired};
use locksmith_agent::{HookKind, HookResult, HookRun, HookStatus, Hooks, ReportState, ShellHooks};

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
