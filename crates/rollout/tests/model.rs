//! Property test: random fleets, specs and endpoint behaviour (failing, silent, offline and
//! coming back), driven by a closed-loop simulator of the server and the agents, with the
//! planner killed at every event index and restored from its last persisted record.
//!
//! After every run, against a simple model:
//! - no endpoint applies a revision twice or out of order (its applies are a subsequence of
//!   `[rev, its last-known-good]`);
//! - from one persisted state the planner never tells a node the same revision twice;
//! - a wave is passed (the next wave's first endpoint is sent, or the rollout succeeds) only
//!   when the last result of every gate for it was an effective `pass`, none of its sent
//!   endpoints is silent, and its failures are within its allowance;
//! - a run killed at any event index — its commands lost with its record, or run and then
//!   the record lost — ends exactly as the run that was never killed.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use common::{Fleet, T0};
use locksmith_rollout::gate::effective;
use locksmith_rollout::{
    Budget, Canary, Command, Endpoint, Event, Gate, HoldAfter, OnFailure, OutcomeKind, Percent,
    Rollout, RolloutSpec, State, Verdict, Waves,
};
use proptest::prelude::*;

const REV: u64 = 7;

#[derive(Debug, Clone)]
struct Scenario {
    endpoints: Vec<Endpoint>,
    fails: BTreeSet<String>,
    silent: BTreeSet<String>,
    /// Offline nodes come back after this many events.
    back_after: usize,
    spec: RolloutSpec,
    verdicts: Vec<(Verdict, u64)>,
    resumes: usize,
    abort_rollback: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Crash {
    /// The event's commands and record are lost together (the engine's one batch).
    Together,
    /// The commands ran; the record was lost.
    AfterCommands,
}

/// Each endpoint's node, the revision it is left on, and whether it confirmed it.
type Landings = Vec<(String, u64, bool)>;

#[derive(Debug, PartialEq)]
struct RunResult {
    outcome: Option<(OutcomeKind, Landings)>,
    applies: BTreeMap<String, Vec<u64>>,
    events: usize,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        1usize..8,
        prop::collection::vec((1u64..4, any::<bool>(), 0u8..10), 8),
        0usize..40,
        (
            prop_oneof![Just(Canary::None), (1u32..4).prop_map(Canary::Count)],
            prop_oneof![
                Just(Waves::Steps(vec![Percent(5_000), Percent::ALL])),
                Just(Waves::Steps(vec![Percent::ALL])),
                (1u32..6).prop_map(|p| Waves::Linear(Percent(p * 2_000))),
                Just(Waves::Exponential { factor: 200 }),
            ],
            prop_oneof![
                (0u32..3).prop_map(Budget::Count),
                (1u32..6).prop_map(|p| Budget::Percent(Percent(p * 1_000)))
            ],
            0u8..3,
            prop_oneof![
                Just(OnFailure::Rollback),
                Just(OnFailure::Freeze),
                Just(OnFailure::Pause)
            ],
        ),
        (any::<bool>(), any::<bool>(), any::<bool>(), 0u32..3),
        prop::collection::vec(
            (
                prop_oneof![
                    4 => Just(Verdict::Pass),
                    1 => Just(Verdict::Fail),
                    1 => Just(Verdict::Inconclusive)
                ],
                0u64..6,
            ),
            1..6,
        ),
        (0usize..3, any::<bool>()),
    )
        .prop_map(
            |(
                n,
                nodes,
                back_after,
                (canary, waves, budget, hold, on_failure),
                flags,
                verdicts,
                (resumes, abort_rollback),
            )| {
                let (gated, draft, urgent, min_samples) = flags;
                let mut endpoints = Vec::new();
                let (mut fails, mut silent) = (BTreeSet::new(), BTreeSet::new());
                for (i, (lkg, online, behaviour)) in nodes.into_iter().take(n).enumerate() {
                    let node = format!("n{i}");
                    match behaviour {
                        0 => {
                            fails.insert(node.clone());
                        }
                        1 => {
                            silent.insert(node.clone());
                        }
                        _ => {}
                    }
                    endpoints.push(Endpoint {
                        node,
                        labels: BTreeMap::new(),
                        online: online || behaviour > 4,
                        applied_rev: lkg,
                        last_known_good: lkg,
                    });
                }
                let mut spec = RolloutSpec::new("c.conf", REV, "alice");
                spec.draft = draft;
                spec.urgent = urgent;
                spec.canary = canary.clone();
                spec.waves = waves;
                spec.max_failures = budget;
                spec.on_failure = on_failure;
                spec.bake_ms = 10 * 60_000;
                spec.deadline_ms = 5 * 60_000;
                spec.min_samples = min_samples;
                spec.hold_after = match hold {
                    1 if canary != Canary::None => HoldAfter::Canary,
                    2 => HoldAfter::EachWave,
                    _ => HoldAfter::None,
                };
                spec.approvals = if spec.hold_after == HoldAfter::None {
                    0
                } else {
                    2
                };
                if gated {
                    spec.gates = vec![Gate::Prometheus {
                        name: "prom".into(),
                        query: "q".into(),
                        op: locksmith_rollout::Comparison::Lt,
                        threshold: 1.0,
                    }];
                }
                Scenario {
                    endpoints,
                    fails,
                    silent,
                    back_after,
                    spec,
                    verdicts,
                    resumes,
                    abort_rollback,
                }
            },
        )
}

/// Runs the scenario; with `crash`, the planner is killed at that event index.
fn run(scn: &Scenario, crash: Option<(usize, Crash)>) -> RunResult {
    let mut rollout = Rollout::new(scn.spec.clone(), &scn.endpoints).expect("valid");
    let mut record = rollout.to_record();
    let mut fleet = Fleet::new(&scn.endpoints);
    for (name, agent) in fleet.agents.iter_mut() {
        if scn.fails.contains(name) {
            agent.fails = Some(REV);
        }
        agent.silent = scn.silent.contains(name);
    }
    let plan = rollout.plan().clone();
    let mut now = T0;
    let mut queue = VecDeque::from([Event::Started]);
    let mut index = 0;
    let (mut gate_runs, mut resumes) = (0usize, 0usize);
    let mut told: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut last_result: BTreeMap<usize, (Verdict, u64)> = BTreeMap::new();
    let mut checked: BTreeSet<usize> = BTreeSet::new();
    let mut came_back = false;
    let mut lost_reports = Vec::new();

    while index < 400 {
        if index >= scn.back_after && !came_back {
            came_back = true;
            for e in scn.endpoints.iter().filter(|e| !e.online) {
                queue.extend(fleet.come_online(&e.node));
            }
        }
        let Some(event) = queue.pop_front() else {
            let state = rollout.state().clone();
            if state.is_terminal() {
                break;
            }
            let next = match state {
                State::Paused { .. } if resumes < scn.resumes => {
                    resumes += 1;
                    Event::Resume {
                        principal: "bob".into(),
                    }
                }
                State::Paused { .. } => Event::Abort {
                    principal: "bob".into(),
                    rollback: scn.abort_rollback,
                },
                State::AwaitingApproval { .. } => {
                    for p in ["alice", "bob", "bob", "carol"] {
                        queue.push_back(Event::Approval {
                            principal: p.into(),
                        });
                    }
                    continue;
                }
                _ => {
                    now = rollout
                        .next_deadline(now)
                        .map_or(now + 60_000, |d| d.max(now));
                    Event::Tick
                }
            };
            queue.push_back(next);
            continue;
        };
        // What the endpoints were told before this event: a kill after the commands ran lets
        // the lost run's commands reach the fleet, and the restored machine's batch says the
        // same again — a wave's pass is judged on what was sent before the batch that passes
        // it (an endpoint sent the revision in that batch answers after).
        let fleet_before = fleet.clone();
        let mut result = rollout.handle(now, event.clone());
        if crash.map(|(k, _)| k) == Some(index) {
            let mode = crash.map(|(_, m)| m);
            if mode == Some(Crash::AfterCommands)
                && let Ok(cmds) = &result
            {
                // The endpoints' answers come after the restored run's batch, where they
                // would come had nothing been killed (the same command again is no news to
                // an endpoint that has it).
                lost_reports = fleet.run(cmds);
            }
            // Killed: the machine is gone; restore from the last persisted record and
            // deliver the event again (the driver re-derives it, or the agent re-reports).
            rollout = Rollout::from_record(&record).expect("restores");
            result = rollout.handle(now, event.clone());
        }
        record = rollout.to_record();
        assert_eq!(Rollout::from_record(&record).expect("restores"), rollout);
        index += 1;
        if let Event::GateResult {
            wave,
            verdict,
            samples,
            ..
        } = &event
            && result.is_ok()
        {
            last_result.insert(*wave, (*verdict, *samples));
        }
        let Ok(cmds) = result else {
            queue.extend(std::mem::take(&mut lost_reports));
            continue;
        };
        for (node, rev) in told_by(&cmds) {
            assert!(told.insert((node.clone(), rev)), "{node} told {rev} twice");
        }
        for cmd in &cmds {
            // The batch in which a wave passes holds its hold point, the next wave's first
            // endpoint, or the success: check the wave then, once.
            let passing: Vec<usize> = match cmd {
                Command::SetDesired { nodes, .. } => nodes
                    .iter()
                    .filter_map(|n| plan.wave_of(n))
                    .filter(|w| *w > 0)
                    .map(|w| w - 1)
                    .collect(),
                Command::WaitForApproval { wave, .. } => vec![*wave],
                Command::Finished(o) if o.kind == OutcomeKind::Succeeded => {
                    vec![plan.waves.len() - 1]
                }
                _ => vec![],
            };
            let passing: Vec<usize> = passing.into_iter().filter(|w| checked.insert(*w)).collect();
            for w in passing {
                check_wave_passed(
                    scn,
                    &plan.waves[w].nodes,
                    plan.waves[w].allowed_failures,
                    &fleet_before,
                    last_result.get(&w),
                    w,
                );
            }
            if let Command::RunGate { wave, gates, .. } = cmd {
                for gate in gates {
                    let (verdict, samples) = scn.verdicts[gate_runs % scn.verdicts.len()];
                    gate_runs += 1;
                    queue.push_back(Event::GateResult {
                        wave: *wave,
                        gate: gate.clone(),
                        verdict,
                        samples,
                    });
                }
            }
        }
        queue.extend(fleet.run(&cmds));
        queue.extend(std::mem::take(&mut lost_reports));
    }
    // Every run ends: a deadline in the past that changes nothing would spin here.
    assert!(
        rollout.state().is_terminal(),
        "stuck: {:?}",
        rollout.state()
    );
    RunResult {
        outcome: fleet.finished.last().map(|o| {
            let landings = o
                .endpoints
                .iter()
                .map(|l| (l.node.clone(), l.rev, l.confirmed))
                .collect();
            (o.kind, landings)
        }),
        applies: fleet
            .agents
            .iter()
            .map(|(n, a)| (n.clone(), a.applies.clone()))
            .collect(),
        events: index,
    }
}

fn told_by(cmds: &[Command]) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for cmd in cmds {
        match cmd {
            Command::SetDesired { rev, nodes } => {
                out.extend(nodes.iter().map(|n| (n.clone(), *rev)));
            }
            Command::Restore { node, rev } => out.push((node.clone(), *rev)),
            _ => {}
        }
    }
    out
}

fn check_wave_passed(
    scn: &Scenario,
    nodes: &[String],
    allowed: usize,
    fleet: &Fleet,
    last: Option<&(Verdict, u64)>,
    wave: usize,
) {
    if !scn.spec.gates.is_empty() {
        let (verdict, samples) =
            *last.unwrap_or_else(|| panic!("wave {wave} passed without a gate result"));
        assert_eq!(
            effective(
                verdict,
                samples,
                scn.spec.min_samples,
                scn.spec.must_have_data
            ),
            Verdict::Pass,
            "wave {wave} passed on {verdict:?} with {samples} samples"
        );
    }
    let sent: Vec<&String> = nodes
        .iter()
        .filter(|n| fleet.agents[n.as_str()].desired == Some(REV))
        .collect();
    let failed = sent
        .iter()
        .filter(|n| scn.fails.contains(n.as_str()))
        .count();
    assert!(
        failed <= allowed,
        "wave {wave} passed with {failed} failures, {allowed} allowed"
    );
    assert!(
        sent.iter().all(|n| !scn.silent.contains(n.as_str())),
        "wave {wave} passed with a silent endpoint"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn killed_at_every_event_the_rollout_ends_as_if_never_killed(scn in scenario()) {
        let reference = run(&scn, None);
        // Applies are checked against each node's own last-known-good.
        for e in &scn.endpoints {
            let applies = &reference.applies[&e.node];
            let ok = match applies.as_slice() {
                [] => true,
                [x] => *x == REV || *x == e.last_known_good,
                [x, y] => *x == REV && *y == e.last_known_good,
                _ => false,
            };
            prop_assert!(ok, "{} applied {:?}", e.node, applies);
        }
        for k in 0..reference.events {
            for mode in [Crash::Together, Crash::AfterCommands] {
                let crashed = run(&scn, Some((k, mode)));
                prop_assert_eq!(&crashed, &reference, "killed at event {} ({:?})", k, mode);
            }
        }
    }
}
