//! Wave arithmetic and failure budgets at their edges, as tables.

mod common;

use common::{fleet, spec};
use locksmith_rollout::{
    Budget, Canary, NewError, Percent, PlanError, Rollout, WaveKind, Waves, plan,
};

/// Wave sizes for `n` endpoints.
fn sizes(n: usize, canary: Canary, waves: Waves) -> Vec<usize> {
    let mut s = spec(2);
    s.canary = canary;
    s.waves = waves;
    plan(&s, &fleet(n, 1))
        .expect("plans")
        .waves
        .iter()
        .map(|w| w.nodes.len())
        .collect()
}

fn steps(p: &[u32]) -> Waves {
    Waves::Steps(p.iter().map(|x| Percent(x * 100)).collect())
}

#[test]
fn wave_sizes_at_the_edges() {
    use Canary::{Count, None as NoCanary};
    let table: Vec<(usize, Canary, Waves, Vec<usize>)> = vec![
        // Nobody: no wave at all.
        (0, NoCanary, steps(&[10, 50, 100]), vec![]),
        (0, Count(3), steps(&[100]), vec![]),
        // One endpoint: one wave (10% of 1 rounds up to 1; the rest have nobody left).
        (1, NoCanary, steps(&[10, 50, 100]), vec![1]),
        (1, Count(3), steps(&[10, 50, 100]), vec![1]),
        // ceil: 10% of 10 = 1, 50% = 5, 100% = 10.
        (10, NoCanary, steps(&[10, 50, 100]), vec![1, 4, 5]),
        // ceil: 10% of 11 = 1.1 → 2; 50% = 5.5 → 6.
        (11, NoCanary, steps(&[10, 50, 100]), vec![2, 4, 5]),
        // A canary of 3 already covers 10% of 20 (=2): the wave still takes one more.
        (20, Count(3), steps(&[10, 50, 100]), vec![3, 1, 6, 10]),
        // Canary larger than the fleet: everyone in the canary, nothing after.
        (2, Count(5), steps(&[10, 100]), vec![2]),
        (3, Count(3), steps(&[50, 100]), vec![3]),
        // Linear 20% of 10: 2 each.
        (
            10,
            NoCanary,
            Waves::Linear(Percent(2_000)),
            vec![2, 2, 2, 2, 2],
        ),
        // Linear 30% of 10: 3, 6, 9, 10 (the last step is capped at 100%).
        (
            10,
            NoCanary,
            Waves::Linear(Percent(3_000)),
            vec![3, 3, 3, 1],
        ),
        // Linear 1% of 3: every step reaches at least one more.
        (3, NoCanary, Waves::Linear(Percent(100)), vec![1, 1, 1]),
        // Exponential 2x, no canary: 1, 2, 4, 8, 10.
        (
            10,
            NoCanary,
            Waves::Exponential { factor: 200 },
            vec![1, 1, 2, 4, 2],
        ),
        // Exponential 2x after a canary of 3: 3 → 6 → 12 → 20.
        (
            20,
            Count(3),
            Waves::Exponential { factor: 200 },
            vec![3, 3, 6, 8],
        ),
        // 1.5x from 1: 1 → 2 (ceil 1.5) → 3 → 5 (ceil 4.5) → 6.
        (
            6,
            NoCanary,
            Waves::Exponential { factor: 150 },
            vec![1, 1, 1, 2, 1],
        ),
    ];
    for (n, canary, waves, want) in table {
        let got = sizes(n, canary.clone(), waves.clone());
        assert_eq!(got, want, "n={n} canary={canary:?} waves={waves:?}");
        // 100% always includes everyone, exactly once.
        assert_eq!(got.iter().sum::<usize>(), n, "n={n} {waves:?}");
        assert!(got.iter().all(|s| *s > 0), "no empty wave: {got:?}");
    }
}

#[test]
fn plan_is_sorted_by_node_and_the_canary_prefers_online_endpoints() {
    let mut endpoints = fleet(6, 1);
    endpoints.reverse();
    endpoints
        .iter_mut()
        .find(|e| e.node == "n00")
        .expect("n00")
        .online = false;
    let mut s = spec(2);
    s.canary = Canary::Count(2);
    s.waves = steps(&[50, 100]);
    let p = plan(&s, &endpoints).expect("plans");
    assert_eq!(p.waves[0].kind, WaveKind::Canary);
    assert_eq!(p.waves[0].nodes, ["n01", "n02"]);
    assert_eq!(p.waves[1].nodes, ["n00"]);
    assert_eq!(p.waves[2].nodes, ["n03", "n04", "n05"]);
    assert_eq!(plan(&s, &endpoints), plan(&s, &endpoints), "deterministic");
}

#[test]
fn selector_and_named_canary() {
    let mut endpoints = fleet(4, 1);
    endpoints[3].labels.insert("role".into(), "tower".into());
    let mut s = spec(2);
    s.selector.insert("role".into(), "drone".into());
    s.canary = Canary::Nodes(vec!["n02".into()]);
    let p = plan(&s, &endpoints).expect("plans");
    assert_eq!(p.not_selected, ["n03"]);
    assert_eq!(p.waves[0].nodes, ["n02"]);
    assert_eq!(p.waves[1].nodes, ["n00", "n01"]);

    s.canary = Canary::Nodes(vec!["n03".into()]);
    assert_eq!(
        plan(&s, &endpoints),
        Err(PlanError::CanaryNotSelected { node: "n03".into() })
    );
    let mut dup = fleet(2, 1);
    dup[1].node = "n00".into();
    assert!(matches!(
        plan(&spec(2), &dup),
        Err(PlanError::DuplicateNode { .. })
    ));
}

#[test]
fn a_rollout_that_selects_nobody_is_refused() {
    assert_eq!(
        Rollout::new(spec(2), &[]).err(),
        Some(NewError::NoEndpoints)
    );
}

/// `(budget, wave size, failures tolerated)`: counts as given; percentages rounded DOWN.
#[test]
fn failure_budget_allowance() {
    let table = [
        (Budget::Count(0), 10, 0),
        (Budget::Count(2), 10, 2),
        (Budget::Count(5), 3, 5),
        (Budget::Percent(Percent(1_000)), 10, 1),
        (Budget::Percent(Percent(1_000)), 9, 0),
        (Budget::Percent(Percent(1_000)), 19, 1),
        (Budget::Percent(Percent(1_000)), 20, 2),
        (Budget::Percent(Percent(500)), 10, 0),
        (Budget::Percent(Percent(500)), 20, 1),
        (Budget::Percent(Percent(250)), 40, 1),
        (Budget::Percent(Percent(10_000)), 7, 7),
        (Budget::Percent(Percent(3_333)), 3, 0),
        (Budget::Percent(Percent(3_334)), 3, 1),
        (Budget::Percent(Percent(1_000)), 0, 0),
    ];
    for (budget, size, allowed) in table {
        assert_eq!(budget.allowed(size), allowed, "{budget:?} of {size}");
    }
}

#[test]
fn percent_rounding_helpers() {
    assert_eq!(Percent(1_000).of_ceil(11), 2);
    assert_eq!(Percent(1_000).of_floor(11), 1);
    assert_eq!(Percent(1).of_ceil(1), 1);
    assert_eq!(
        Percent(10_000).of_ceil(usize::MAX / 20_000),
        usize::MAX / 20_000
    );
    assert_eq!(Percent(250).to_string(), "2.5%");
    assert_eq!(Percent(25).to_string(), "0.25%");
    assert_eq!(Percent(10_000).to_string(), "100%");
}
