//! The CLI syntaxes: what parses to what, and what is refused with which error.

mod common;

use locksmith_rollout::parse::*;
use locksmith_rollout::{
    Budget, Canary, Comparison, Gate, HoldAfter, OnFailure, Percent, SpecError, Waves, Window,
};

#[test]
fn percentages_and_waves() {
    assert_eq!(parse_percent("--linear", "10%"), Ok(Percent(1_000)));
    assert_eq!(parse_percent("--linear", "2.5%"), Ok(Percent(250)));
    assert_eq!(parse_percent("--linear", "0.25%"), Ok(Percent(25)));
    assert_eq!(parse_percent("--linear", "100%"), Ok(Percent(10_000)));
    for bad in [
        "0%", "101%", "10", "%", "1.234%", "-5%", "ten%", ".5%", "5.%",
    ] {
        assert!(parse_percent("--linear", bad).is_err(), "{bad}");
    }
    assert_eq!(
        parse_waves("10%,50%,100%"),
        Ok(Waves::Steps(vec![
            Percent(1_000),
            Percent(5_000),
            Percent(10_000)
        ]))
    );
    assert_eq!(parse_waves("100%"), Ok(Waves::Steps(vec![Percent(10_000)])));
    for bad in ["10%,50%", "50%,10%,100%", "10%,10%,100%", "", "10%,,100%"] {
        assert_eq!(
            parse_waves(bad),
            Err(ParseError::Waves { text: bad.into() }),
            "{bad}"
        );
    }
    assert_eq!(parse_linear("20%"), Ok(Waves::Linear(Percent(2_000))));
    assert_eq!(
        parse_exponential("2x"),
        Ok(Waves::Exponential { factor: 200 })
    );
    assert_eq!(
        parse_exponential("1.5x"),
        Ok(Waves::Exponential { factor: 150 })
    );
    assert_eq!(
        parse_exponential("3"),
        Ok(Waves::Exponential { factor: 300 })
    );
    for bad in ["1x", "0.5x", "x", "2y", ""] {
        assert!(
            matches!(parse_exponential(bad), Err(ParseError::Factor { .. })),
            "{bad}"
        );
    }
}

#[test]
fn budgets_canaries_durations_choices() {
    assert_eq!(parse_budget("0"), Ok(Budget::Count(0)));
    assert_eq!(parse_budget("5%"), Ok(Budget::Percent(Percent(500))));
    assert!(matches!(parse_budget("-1"), Err(ParseError::Count { .. })));
    assert!(matches!(
        parse_budget("0%"),
        Err(ParseError::Percent { .. })
    ));
    assert_eq!(parse_canary_count("3"), Ok(Canary::Count(3)));
    assert_eq!(
        parse_canary_nodes("a,b,c"),
        Ok(Canary::Nodes(vec!["a".into(), "b".into(), "c".into()]))
    );
    assert!(parse_canary_nodes("a,a").is_err());
    assert!(parse_canary_nodes("a,,b").is_err());
    assert_eq!(parse_duration_ms("--bake", "60s"), Ok(60_000));
    assert_eq!(parse_duration_ms("--bake", "30m"), Ok(1_800_000));
    assert_eq!(parse_duration_ms("--bake", "2h"), Ok(7_200_000));
    assert_eq!(parse_duration_ms("--bake", "500ms"), Ok(500));
    assert_eq!(parse_duration_ms("--bake", "0"), Ok(0));
    for bad in ["60", "s", "5d", "1.5s", ""] {
        assert!(parse_duration_ms("--bake", bad).is_err(), "{bad}");
    }
    assert_eq!(parse_hold_after("canary"), Ok(HoldAfter::Canary));
    assert_eq!(parse_hold_after("each-wave"), Ok(HoldAfter::EachWave));
    assert!(parse_hold_after("always").is_err());
    assert_eq!(parse_on_failure("freeze"), Ok(OnFailure::Freeze));
    let err = parse_on_failure("panic").expect_err("refused");
    assert_eq!(
        err.to_string(),
        "--on-failure \"panic\": expected one of rollback, freeze, pause"
    );
    let sel = parse_selector("role=drone,site=eu").expect("parses");
    assert_eq!(sel.get("site").map(String::as_str), Some("eu"));
    assert!(parse_selector("role").is_err());
    assert!(parse_selector("role=a,role=b").is_err());
}

#[test]
fn windows() {
    assert_eq!(
        parse_window("02:00-04:00"),
        Ok(Window {
            label: None,
            value: None,
            start_min: 120,
            end_min: 240
        })
    );
    let w = parse_window("site=eu@22:30-01:00").expect("parses");
    assert_eq!(w.label.as_deref(), Some("site"));
    assert_eq!(w.value.as_deref(), Some("eu"));
    assert_eq!((w.start_min, w.end_min), (1350, 60));
    let w = parse_window("site@02:00-04:00").expect("parses");
    assert_eq!((w.label.as_deref(), w.value), (Some("site"), None));
    for bad in [
        "02:00-02:00",
        "2:00-04:00",
        "24:00-01:00",
        "02:60-03:00",
        "@02:00-03:00",
        "=x@02:00-03:00",
        "02:00",
    ] {
        assert!(parse_window(bad).is_err(), "{bad}");
    }
    // Contains, across midnight too; next opening.
    let day = 86_400_000u64;
    let at = |h: u64, m: u64| 20_000 * day + (h * 60 + m) * 60_000;
    let w = parse_window("02:00-04:00").expect("parses");
    assert!(!w.contains(at(1, 59)));
    assert!(w.contains(at(2, 0)));
    assert!(w.contains(at(3, 59)));
    assert!(!w.contains(at(4, 0)));
    assert_eq!(w.next_open_ms(at(1, 0)), at(2, 0));
    assert_eq!(w.next_open_ms(at(5, 0)), at(2, 0) + day);
    let night = parse_window("22:00-02:00").expect("parses");
    assert!(night.contains(at(23, 0)) && night.contains(at(1, 0)));
    assert!(!night.contains(at(12, 0)));
}

#[test]
fn gates() {
    assert_eq!(
        parse_gate("error_rate < 0.01"),
        Ok(Gate::Metric {
            metric: "error_rate".into(),
            op: Comparison::Lt,
            threshold: 0.01
        })
    );
    assert!(matches!(
        parse_gate("p99_ms<=250"),
        Ok(Gate::Metric {
            op: Comparison::Le,
            ..
        })
    ));
    assert!(matches!(
        parse_gate("uptime >= 0.999"),
        Ok(Gate::Metric {
            op: Comparison::Ge,
            ..
        })
    ));
    for bad in [
        "error_rate",
        "< 1",
        "error rate < 1",
        "x < y",
        "x = 1",
        "x < NaN",
        "x < inf",
    ] {
        assert!(
            matches!(parse_gate(bad), Err(ParseError::Gate { .. })),
            "{bad}"
        );
    }
}

#[test]
fn spec_validation() {
    let ok = common::spec(2);
    assert_eq!(ok.validate(), Ok(()));
    let mut s = ok.clone();
    s.hold_after = HoldAfter::EachWave;
    assert_eq!(s.validate(), Err(SpecError::HoldWithoutApprovals));
    s.approvals = 2;
    assert_eq!(s.validate(), Ok(()));
    s.hold_after = HoldAfter::Canary;
    assert_eq!(s.validate(), Err(SpecError::HoldAfterCanaryWithoutCanary));
    let mut s = ok.clone();
    s.approvals = 1;
    assert_eq!(
        s.validate(),
        Err(SpecError::ApprovalsWithoutHold { approvals: 1 })
    );
    let mut s = ok.clone();
    s.waves = Waves::Steps(vec![Percent(5_000)]);
    assert!(matches!(
        s.validate(),
        Err(SpecError::WavesNotIncreasing { .. })
    ));
    let mut s = ok;
    s.rev = 0;
    assert_eq!(s.validate(), Err(SpecError::ZeroRevision));
}

#[test]
fn a_prometheus_gate_takes_the_last_comparison_so_the_query_may_compare_too() {
    let gate = parse_gate("prom:sum(rate(errors_total[1m])) > 0 < 0.01").expect("parses");
    assert_eq!(
        gate,
        Gate::Prometheus {
            name: "prom:sum(rate(errors_total[1m])) > 0".into(),
            query: "sum(rate(errors_total[1m])) > 0".into(),
            op: Comparison::Lt,
            threshold: 0.01,
        }
    );
    assert!(matches!(
        parse_gate("prom:up >= 1"),
        Ok(Gate::Prometheus {
            op: Comparison::Ge,
            ..
        })
    ));
    assert!(parse_gate("prom: < 1").is_err());
    assert!(parse_gate("prom:up").is_err());
}
