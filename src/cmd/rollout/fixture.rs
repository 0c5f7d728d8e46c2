//! A hand-built rollout for the renderers' tests: no server, every field chosen.

use locksmith_api::rollouts::{
    HoldAfter, Latency, NodeStatus, RolloutEndpoint, RolloutPhase, RolloutSpec, RolloutView, State,
    WaveKind, WaveView,
};

/// A rollout of aim.conf rev 4 (sent as 7) to `n` drones: a canary of 3, then one wave;
/// drone-02 failed its health hook, drone-07 is offline, the rest applied.
pub fn view(n: usize) -> RolloutView {
    let endpoints: Vec<RolloutEndpoint> = (1..=n)
        .map(|i| {
            let node = format!("drone-{i:02}");
            let status = match i {
                2 => NodeStatus::Failed { refused: false },
                7 => NodeStatus::Offline,
                _ => NodeStatus::Applied,
            };
            let applied = status == NodeStatus::Applied;
            RolloutEndpoint {
                node,
                wave: usize::from(i > 3),
                error: (i == 2).then(|| "health hook failed:\n  exit 1".to_string()),
                status,
                desired_rev: Some(7),
                sent_at_ms: Some(1_000),
                applied_at_ms: applied.then_some(1_000 + 10 * i as u64),
            }
        })
        .collect();
    let wave = |index: usize, kind, range: std::ops::RangeInclusive<usize>| {
        let mine: Vec<&RolloutEndpoint> = endpoints
            .iter()
            .filter(|e| e.wave == index && range.contains(&e.node[6..].parse().unwrap_or(0)))
            .collect();
        let count = |s: &NodeStatus| mine.iter().filter(|e| &e.status == s).count();
        WaveView {
            index,
            kind,
            size: mine.len(),
            allowed_failures: 1,
            applied: count(&NodeStatus::Applied),
            failed: count(&NodeStatus::Failed { refused: false }),
            offline: count(&NodeStatus::Offline),
            waiting_window: 0,
            restored: 0,
            pending: 0,
            latency: Some(Latency {
                count: 2,
                p50_ms: 20,
                p99_ms: 30,
                max_ms: 30,
            }),
        }
    };
    let mut spec = RolloutSpec::new("aim.conf", 4, "alice");
    spec.hold_after = HoldAfter::Canary;
    spec.approvals = 2;
    RolloutView {
        id: "ro-4".into(),
        config: "aim.conf".into(),
        rev: 4,
        rolled_rev: Some(7),
        starter: "alice".into(),
        created_ms: 0,
        phase: RolloutPhase::Running,
        state: Some(State::AwaitingApproval { wave: 0 }),
        summary: "hold point after wave 1 of 2: waiting for 2 approval(s)".into(),
        queued_behind: Vec::new(),
        lease: Some(12),
        token: Some(34),
        approved_by: vec!["bob".into()],
        approvals_needed: 2,
        spec,
        waves: vec![
            wave(0, WaveKind::Canary, 1..=3),
            wave(1, WaveKind::Wave, 4..=n),
        ],
        endpoints,
        not_selected: vec!["drone-99".into()],
        latency: Some(Latency {
            count: 3,
            p50_ms: 20,
            p99_ms: 40,
            max_ms: 41,
        }),
        outcome: None,
        ended_ms: None,
    }
}
