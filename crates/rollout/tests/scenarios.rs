//! The rollout's behaviours, each named after what it pins (and the bug it keeps away).

mod common;

use common::{Harness, T0, assert_applies_in_order, fleet, spec};
use locksmith_rollout::{
    Budget, Canary, Command, Event, Gate, HoldAfter, NodeStatus, OnFailure, OutcomeKind,
    PauseReason, Percent, Refusal, Rollout, State, Verdict, Waves, Window,
};

const MIN: u64 = 60_000;

fn restores(h: &Harness) -> Vec<(String, u64)> {
    h.log
        .iter()
        .filter_map(|c| match c {
            Command::Restore { node, rev } => Some((node.clone(), *rev)),
            _ => None,
        })
        .collect()
}

fn status(h: &Harness, node: &str) -> NodeStatus {
    h.rollout
        .node_statuses()
        .into_iter()
        .find(|(n, _)| n == node)
        .map(|(_, s)| s)
        .expect("a node of the rollout")
}

/// flagger#1931, argo-rollouts#1297: the rollback target is each endpoint's OWN
/// last-known-good, and endpoints the rollout never reached are not touched.
#[test]
fn canary_catches_a_bad_revision_and_rollback_restores_each_endpoints_own_last_known_good() {
    let mut endpoints = fleet(10, 3);
    for (i, e) in endpoints.iter_mut().enumerate() {
        e.applied_rev = 3 + i as u64 % 3;
        e.last_known_good = e.applied_rev;
    }
    let mut s = spec(9);
    s.canary = Canary::Count(3);
    s.waves = Waves::Steps(vec![Percent(5_000), Percent::ALL]);
    let mut h = Harness::new(s, &endpoints);
    h.fleet.agents.get_mut("n01").expect("n01").fails = Some(9);
    h.start();
    assert!(matches!(h.rollout.state(), State::Failed { .. }));
    assert_eq!(
        restores(&h),
        [("n00".into(), 3), ("n01".into(), 4), ("n02".into(), 5)]
    );
    for (name, agent) in &h.fleet.agents {
        let lkg = endpoints
            .iter()
            .find(|e| &e.node == name)
            .expect("e")
            .last_known_good;
        assert_eq!(agent.applied, lkg, "{name} back on its own last-known-good");
        if name.as_str() > "n02" {
            assert!(
                agent.applies.is_empty() && agent.desired.is_none(),
                "{name} untouched"
            );
        }
    }
    let outcome = h.outcome().expect("finished");
    assert_eq!(outcome.kind, OutcomeKind::RolledBack);
    assert!(outcome.endpoints.iter().all(|l| l.confirmed), "{outcome:?}");
    assert_eq!(h.fleet.released, 1);
    assert!(
        h.fleet.promoted.is_empty(),
        "a failed rollout never promotes"
    );
    assert_eq!(
        h.send(Event::Tick),
        Err(Refusal::Ended {
            state: "failed".into()
        })
    );
}

/// argo-rollouts#3850: an agent that stays silent is inconclusive, which pauses; the
/// rollout never moves on because time passed.
#[test]
fn a_silent_endpoint_pauses_the_rollout_and_it_never_promotes_on_a_timeout() {
    let mut s = spec(2);
    s.canary = Canary::Count(2);
    s.deadline_ms = 5 * MIN;
    let mut h = Harness::new(s, &fleet(6, 1));
    h.fleet.agents.get_mut("n01").expect("n01").silent = true;
    h.start();
    assert_eq!(status(&h, "n01"), NodeStatus::Sent);
    assert_eq!(h.rollout.next_deadline(h.now), Some(T0 + 5 * MIN));
    h.advance(5 * MIN - 1);
    assert_eq!(h.rollout.state(), &State::Applying { wave: 0 });
    h.advance(1);
    let State::Paused { reason, .. } = h.rollout.state() else {
        panic!("paused, not {:?}", h.rollout.state());
    };
    assert_eq!(
        reason,
        &PauseReason::Silent {
            nodes: vec!["n01".into()]
        }
    );
    for _ in 0..10 {
        h.advance(60 * MIN);
    }
    assert_eq!(h.sent(2), ["n00", "n01"], "nothing past the canary");
    assert!(h.fleet.promoted.is_empty() && h.fleet.finished.is_empty());
    // Resuming waits afresh; still silent, it pauses again.
    h.send(Event::Resume {
        principal: "bob".into(),
    })
    .expect("resumes");
    assert_eq!(h.rollout.state(), &State::Applying { wave: 0 });
    h.advance(5 * MIN);
    assert!(matches!(h.rollout.state(), State::Paused { .. }));
    assert_eq!(h.sent(2), ["n00", "n01"], "n01 was not told twice");
}

/// flagger#1035, kayenta#377: too few samples, or no answer, is inconclusive — a pause, not
/// a pass; a resume runs the gate again and only its `pass` moves on.
#[test]
fn an_inconclusive_gate_pauses_and_only_a_pass_moves_on() {
    let mut s = spec(2);
    s.canary = Canary::Count(1);
    s.bake_ms = 10 * MIN;
    s.deadline_ms = 5 * MIN;
    s.min_samples = 5;
    s.gates = vec![Gate::Metric {
        metric: "error_rate".into(),
        op: locksmith_rollout::Comparison::Lt,
        threshold: 0.01,
    }];
    let mut h = Harness::new(s, &fleet(4, 1));
    let cmds = h.start();
    assert!(cmds.iter().any(|c| matches!(c,
        Command::RunGate { wave: 0, until_ms, .. } if *until_ms == T0 + 10 * MIN)));
    // A pass on 2 samples is not a pass.
    h.gate(0, "error_rate", Verdict::Pass, 2).expect("taken");
    h.advance(10 * MIN);
    assert!(matches!(
        h.rollout.state(),
        State::Paused {
            reason: PauseReason::GateInconclusive { .. },
            ..
        }
    ));
    // Resume: the bake starts over; this time no result arrives at all.
    h.send(Event::Resume {
        principal: "bob".into(),
    })
    .expect("resumes");
    h.advance(10 * MIN);
    assert!(
        matches!(h.rollout.state(), State::Baking { .. }),
        "waits for the result"
    );
    h.advance(5 * MIN);
    assert!(matches!(
        h.rollout.state(),
        State::Paused {
            reason: PauseReason::GateInconclusive { .. },
            ..
        }
    ));
    assert_eq!(h.sent(2), ["n00"]);
    // A stale result for the wave is refused while paused.
    assert_eq!(
        h.gate(0, "error_rate", Verdict::Pass, 50),
        Err(Refusal::NotBaking { wave: 0 })
    );
    h.send(Event::Resume {
        principal: "bob".into(),
    })
    .expect("resumes");
    h.gate(0, "error_rate", Verdict::Pass, 50).expect("taken");
    h.advance(10 * MIN);
    assert_eq!(h.sent(2), ["n00", "n01", "n02", "n03"]);
    assert!(matches!(h.rollout.state(), State::Baking { wave: 1, .. }));
}

/// A gate's Fail ends the wave at once, even during the bake.
#[test]
fn a_failing_gate_rolls_back_without_waiting_for_the_bake() {
    let mut s = spec(2);
    s.canary = Canary::Count(2);
    s.bake_ms = 60 * MIN;
    s.gates = vec![Gate::Prometheus {
        name: "prom".into(),
        query: "up".into(),
        op: locksmith_rollout::Comparison::Lt,
        threshold: 1.0,
    }];
    let mut h = Harness::new(s, &fleet(5, 1));
    h.start();
    h.gate(0, "prom", Verdict::Fail, 30).expect("taken");
    assert!(matches!(h.rollout.state(), State::Failed { .. }));
    assert_eq!(restores(&h), [("n00".into(), 1), ("n01".into(), 1)]);
    assert_applies_in_order(&h.fleet, 2, 1);
    assert_eq!(
        h.gate(0, "nope", Verdict::Pass, 1)
            .err()
            .map(|e| e.to_string()),
        Some("the rollout has ended (failed); it takes no more events".into())
    );
}

#[test]
fn approvals_count_distinct_principals_and_never_the_starter() {
    let mut s = spec(2);
    s.canary = Canary::Count(1);
    s.hold_after = HoldAfter::Canary;
    s.approvals = 2;
    let mut h = Harness::new(s, &fleet(3, 1));
    let cmds = h.start();
    assert!(cmds.contains(&Command::WaitForApproval { wave: 0, needed: 2 }));
    let approve = |h: &mut Harness, p: &str| {
        h.send(Event::Approval {
            principal: p.into(),
        })
    };
    assert_eq!(
        approve(&mut h, "alice"),
        Err(Refusal::ApprovalByStarter {
            principal: "alice".into()
        })
    );
    approve(&mut h, "bob").expect("counts");
    assert_eq!(
        approve(&mut h, "bob"),
        Err(Refusal::DuplicateApproval {
            principal: "bob".into()
        })
    );
    assert_eq!(h.rollout.state(), &State::AwaitingApproval { wave: 0 });
    assert_eq!(h.sent(2), ["n00"]);
    approve(&mut h, "carol").expect("counts");
    assert_eq!(h.sent(2), ["n00", "n01", "n02"]);
    assert_eq!(h.rollout.state(), &State::Succeeded);
    assert_eq!(
        h.fleet.promoted,
        [2],
        "the draft is promoted as the last step"
    );
    assert_eq!(
        approve(&mut h, "dave"),
        Err(Refusal::Ended {
            state: "succeeded".into()
        })
    );
}

#[test]
fn endpoints_wait_for_their_window_and_an_urgent_rollout_skips_windows_and_bake() {
    let day = 86_400_000;
    let one_am = 20_000 * day + 60 * MIN;
    let mut endpoints = fleet(4, 1);
    endpoints[2].labels.insert("site".into(), "eu".into());
    endpoints[3].labels.insert("site".into(), "eu".into());
    let mut s = spec(2);
    s.windows = vec![Window {
        label: Some("site".into()),
        value: Some("eu".into()),
        start_min: 120,
        end_min: 240,
    }];
    s.bake_ms = 60 * MIN;
    let mut h = Harness::new(s.clone(), &endpoints);
    h.now = one_am;
    h.start();
    assert_eq!(h.sent(2), ["n00", "n01"], "outside its window, eu waits");
    assert_eq!(status(&h, "n02"), NodeStatus::WaitingWindow);
    assert_eq!(h.rollout.progress().waiting_window, 2);
    assert_eq!(h.rollout.next_deadline(h.now), Some(one_am + 60 * MIN));
    h.advance(59 * MIN);
    assert_eq!(h.sent(2), ["n00", "n01"]);
    h.advance(MIN);
    assert_eq!(
        h.sent(2),
        ["n00", "n01", "n02", "n03"],
        "02:00: the window opened"
    );
    assert!(matches!(h.rollout.state(), State::Baking { .. }));

    s.urgent = true;
    let mut h = Harness::new(s, &endpoints);
    h.now = one_am;
    h.start();
    assert_eq!(h.sent(2).len(), 4, "urgent: no window");
    assert_eq!(h.rollout.state(), &State::Succeeded, "urgent: no bake");
}

/// Offline endpoints are not failures, are reported apart, and when back go straight to the
/// revision that passed its gates.
#[test]
fn offline_endpoints_are_not_failures_and_catch_up_when_back() {
    let mut endpoints = fleet(4, 1);
    endpoints[1].online = false;
    let mut s = spec(2);
    s.waves = Waves::Steps(vec![Percent(5_000), Percent::ALL]);
    s.hold_after = HoldAfter::EachWave;
    s.approvals = 1;
    let mut h = Harness::new(s, &endpoints);
    h.start();
    assert_eq!(h.sent(2), ["n00"]);
    assert_eq!(h.rollout.state(), &State::AwaitingApproval { wave: 0 });
    let p = h.rollout.progress();
    assert_eq!((p.applied, p.failed, p.offline), (1, 0, 1));
    h.online("n01");
    assert_eq!(
        h.sent(2),
        ["n00", "n01"],
        "back: straight to the passed revision"
    );
    assert_eq!(h.fleet.agents["n01"].applied, 2);
    // A node that goes away mid-wave is not a failure either.
    h.send(Event::Approval {
        principal: "bob".into(),
    })
    .expect("ok");
    assert_eq!(h.rollout.state(), &State::Succeeded);
}

#[test]
fn an_offline_canary_endpoint_waits_until_the_revision_passed_its_gates() {
    let mut endpoints = fleet(3, 1);
    endpoints[0].online = false;
    endpoints[1].online = false;
    let mut s = spec(2);
    s.canary = Canary::Nodes(vec!["n00".into(), "n02".into()]);
    s.bake_ms = 10 * MIN;
    let mut h = Harness::new(s, &endpoints);
    h.start();
    assert_eq!(h.sent(2), ["n02"]);
    assert!(matches!(h.rollout.state(), State::Baking { wave: 0, .. }));
    h.online("n00");
    assert_eq!(h.sent(2), ["n02"], "no gate has passed yet: n00 waits");
    h.advance(10 * MIN);
    assert_eq!(
        h.sent(2),
        ["n02", "n00"],
        "the canary passed: n00 catches up"
    );
}

#[test]
fn a_wave_of_only_offline_endpoints_has_no_data_and_pauses() {
    let mut endpoints = fleet(2, 1);
    endpoints[0].online = false;
    let mut s = spec(2);
    s.canary = Canary::Nodes(vec!["n00".into()]);
    let mut h = Harness::new(s, &endpoints);
    h.start();
    assert!(matches!(
        h.rollout.state(),
        State::Paused {
            reason: PauseReason::NoData,
            ..
        }
    ));
    assert!(h.sent(2).is_empty());
}

/// ansible#32255, flagger#189: at the allowance a wave passes; one over, it fails.
#[test]
fn failure_budget_exactly_at_passes_and_one_over_fails() {
    for (budget, failing, passes) in [
        (Budget::Count(0), 0, true),
        (Budget::Count(0), 1, false),
        (Budget::Count(2), 2, true),
        (Budget::Count(2), 3, false),
        (Budget::Percent(Percent(1_000)), 1, true),
        (Budget::Percent(Percent(1_000)), 2, false),
        (Budget::Percent(Percent(500)), 1, false),
    ] {
        let mut s = spec(2);
        s.max_failures = budget;
        s.on_failure = OnFailure::Pause;
        let mut h = Harness::new(s, &fleet(10, 1));
        for i in 0..failing {
            h.fleet
                .agents
                .get_mut(&format!("n{i:02}"))
                .expect("node")
                .fails = Some(2);
        }
        h.start();
        let state = h.rollout.state().clone();
        if passes {
            assert_eq!(state, State::Succeeded, "{budget:?} with {failing} failing");
        } else {
            assert!(
                matches!(
                    state,
                    State::Paused {
                        reason: PauseReason::Failed { .. },
                        ..
                    }
                ),
                "{budget:?} with {failing} failing: {state:?}"
            );
        }
    }
}

#[test]
fn pause_on_failure_never_passes_by_resuming() {
    let mut s = spec(2);
    s.on_failure = OnFailure::Pause;
    s.canary = Canary::Count(1);
    let mut h = Harness::new(s, &fleet(3, 1));
    h.fleet.agents.get_mut("n00").expect("n00").fails = Some(2);
    h.start();
    for _ in 0..3 {
        assert!(matches!(
            h.rollout.state(),
            State::Paused {
                reason: PauseReason::Failed { .. },
                ..
            }
        ));
        h.send(Event::Resume {
            principal: "bob".into(),
        })
        .expect("resumes");
    }
    assert_eq!(h.sent(2), ["n00"]);
}

#[test]
fn freeze_places_a_hold_with_the_reason_and_leaves_endpoints_where_they_are() {
    let mut s = spec(2);
    s.on_failure = OnFailure::Freeze;
    let mut h = Harness::new(s, &fleet(3, 1));
    h.fleet.agents.get_mut("n01").expect("n01").fails = Some(2);
    h.start();
    assert!(matches!(h.rollout.state(), State::Frozen { .. }));
    assert_eq!(h.fleet.frozen.len(), 1);
    assert!(
        h.fleet.frozen[0].contains("1 of 3 endpoints failed (n01), 0 allowed"),
        "{}",
        h.fleet.frozen[0]
    );
    assert!(restores(&h).is_empty());
    assert_eq!(h.outcome().expect("ended").kind, OutcomeKind::Frozen);
    assert_eq!(h.fleet.released, 1);
}

/// Abort leaves every endpoint on a revision it names: confirmed ones stay (or go back, with
/// rollback), in-flight ones go back to their own last-known-good, untouched ones stay.
#[test]
fn abort_leaves_every_endpoint_on_a_known_revision() {
    for rollback in [false, true] {
        let mut s = spec(2);
        s.waves = Waves::Steps(vec![Percent(5_000), Percent::ALL]);
        let mut h = Harness::new(s, &fleet(4, 1));
        h.fleet.agents.get_mut("n01").expect("n01").silent = true;
        h.start();
        h.send(Event::Abort {
            principal: "bob".into(),
            rollback,
        })
        .expect("aborts");
        assert_eq!(h.rollout.state(), &State::Aborted);
        let outcome = h.outcome().expect("ended").clone();
        assert_eq!(outcome.kind, OutcomeKind::Aborted);
        let on: Vec<(String, u64)> = outcome
            .endpoints
            .iter()
            .map(|l| (l.node.clone(), l.rev))
            .collect();
        let n00 = if rollback { 1 } else { 2 };
        assert_eq!(
            on,
            [
                ("n00".into(), n00),
                ("n01".into(), 1),
                ("n02".into(), 1),
                ("n03".into(), 1)
            ]
        );
        let want: Vec<(String, u64)> = if rollback {
            vec![("n00".into(), 1), ("n01".into(), 1)]
        } else {
            vec![("n01".into(), 1)]
        };
        assert_eq!(restores(&h), want);
        assert_eq!(h.fleet.released, 1);
        assert_applies_in_order(&h.fleet, 2, 1);
    }
    // A pending rollout holds no lock: nothing to release, nothing touched.
    let mut h = Harness::new(spec(2), &fleet(2, 1));
    h.send(Event::Abort {
        principal: "bob".into(),
        rollback: true,
    })
    .expect("aborts");
    assert_eq!(h.fleet.released, 0);
    assert!(
        h.log
            .iter()
            .all(|c| !matches!(c, Command::SetDesired { .. } | Command::Restore { .. }))
    );
}

#[test]
fn pending_rollouts_wait_for_started_and_a_lost_lock_pauses() {
    let mut s = spec(2);
    s.waves = Waves::Steps(vec![Percent(5_000), Percent::ALL]);
    s.hold_after = HoldAfter::EachWave;
    s.approvals = 1;
    let mut h = Harness::new(s, &fleet(4, 1));
    assert_eq!(h.rollout.state(), &State::Pending);
    assert_eq!(
        h.send(Event::Pause {
            principal: "bob".into()
        }),
        Err(Refusal::NotStarted)
    );
    h.start();
    assert_eq!(h.send(Event::Started), Err(Refusal::AlreadyStarted));
    h.send(Event::LockLost).expect("taken");
    assert!(matches!(
        h.rollout.state(),
        State::Paused {
            reason: PauseReason::LockLost,
            ..
        }
    ));
    assert_eq!(
        h.send(Event::Approval {
            principal: "bob".into()
        }),
        Err(Refusal::NotAwaitingApproval {
            state: "paused at wave 1".into()
        })
    );
    h.send(Event::Resume {
        principal: "bob".into(),
    })
    .expect("resumes");
    h.send(Event::Approval {
        principal: "bob".into(),
    })
    .expect("counts");
    assert_eq!(h.rollout.state(), &State::Succeeded);
}

/// Not a draft: the revision is current already, so the endpoints not reached are pinned to
/// their own revision at start, and a rollback leaves them there.
#[test]
fn a_current_revision_pins_the_endpoints_not_reached() {
    let mut s = spec(2);
    s.draft = false;
    s.canary = Canary::Count(1);
    let mut h = Harness::new(s, &fleet(3, 1));
    h.fleet.agents.get_mut("n00").expect("n00").fails = Some(2);
    let cmds = h.start();
    assert_eq!(
        cmds[0],
        Command::Pin {
            nodes: vec![("n01".into(), 1), ("n02".into(), 1)]
        }
    );
    assert!(matches!(h.rollout.state(), State::Failed { .. }));
    assert!(h.fleet.promoted.is_empty());
    let outcome = h.outcome().expect("ended");
    assert!(outcome.endpoints.iter().all(|l| l.rev == 1 && l.confirmed));
}

#[test]
fn the_record_restores_the_same_rollout() {
    let mut s = spec(2);
    s.canary = Canary::Count(1);
    s.bake_ms = MIN;
    let mut h = Harness::new(s, &fleet(3, 1));
    h.start();
    let restored = Rollout::from_record(&h.record).expect("restores");
    assert_eq!(restored, h.rollout);
    let mut bad = String::from_utf8(h.record.clone()).expect("json");
    bad = bad.replacen("\"version\":1", "\"version\":9", 1);
    assert!(Rollout::from_record(bad.as_bytes()).is_err());
    assert!(Rollout::from_record(b"{").is_err());
}

/// An endpoint back online mid-bake is sent the revision and must answer before the wave
/// passes; silent past its deadline it pauses the rollout, bake or no bake (the model test
/// found the planner spinning on that deadline).
#[test]
fn an_endpoint_sent_the_revision_mid_bake_must_answer_before_the_wave_passes() {
    let mut endpoints = fleet(4, 1);
    endpoints[3].online = false;
    let mut s = spec(2);
    s.waves = Waves::Steps(vec![Percent(5_000), Percent::ALL]);
    s.bake_ms = 10 * MIN;
    s.deadline_ms = 5 * MIN;
    let mut h = Harness::new(s, &endpoints);
    h.fleet.agents.get_mut("n03").expect("n03").silent = true;
    h.start();
    h.advance(10 * MIN);
    assert!(matches!(h.rollout.state(), State::Baking { wave: 1, .. }));
    h.online("n03");
    assert_eq!(h.sent(2), ["n00", "n01", "n02", "n03"]);
    assert_eq!(h.rollout.next_deadline(h.now), Some(h.now + 5 * MIN));
    h.advance(5 * MIN);
    assert_eq!(
        h.rollout.state(),
        &State::Paused {
            wave: 1,
            phase: locksmith_rollout::Phase::Apply,
            reason: PauseReason::Silent {
                nodes: vec!["n03".into()]
            }
        }
    );
    assert!(h.fleet.promoted.is_empty());
}

/// The server ticks a rollout only when `next_deadline(now) <= now` (its reaper wakes just
/// after the deadline and asks again). A bake without gates is due at its end and stays due
/// after it: the deadline used to move on to the gates' results deadline the moment the bake
/// ended, so the server, asking 1 ms after, found nothing due and the wave baked until
/// `--deadline` (30 minutes by default) — found by `tests/fleet_scenarios.rs`.
#[test]
fn a_bake_without_gates_stays_due_after_its_end_for_a_driver_that_ticks_only_what_is_due() {
    let mut s = spec(2);
    s.waves = Waves::Steps(vec![Percent(5_000), Percent::ALL]);
    s.bake_ms = MIN;
    let mut h = Harness::new(s, &fleet(4, 1));
    h.start();
    let State::Baking {
        wave: 0, until_ms, ..
    } = *h.rollout.state()
    else {
        panic!("baking wave 0, not {:?}", h.rollout.state());
    };
    assert_eq!(h.rollout.next_deadline(h.now), Some(until_ms));
    // The driver wakes just after the deadline and ticks only if it is due.
    h.now = until_ms + 1;
    let due = h.rollout.next_deadline(h.now);
    assert!(due.is_some_and(|at| at <= h.now), "nothing due: {due:?}");
    h.send(Event::Tick).expect("a tick");
    assert!(
        matches!(h.rollout.state(), State::Baking { wave: 1, .. }),
        "{:?}",
        h.rollout.state()
    );
    // With a gate that has not answered, the end is not due again until the deadline: no
    // spinning on a deadline that passed.
    let mut s = spec(2);
    s.bake_ms = MIN;
    s.gates = vec![Gate::Prometheus {
        name: "prom:up".into(),
        query: "up".into(),
        op: locksmith_rollout::Comparison::Gt,
        threshold: 0.0,
    }];
    let mut h = Harness::new(s, &fleet(2, 1));
    h.start();
    let State::Baking { until_ms, .. } = *h.rollout.state() else {
        panic!("baking, not {:?}", h.rollout.state());
    };
    h.now = until_ms + 1;
    assert_eq!(
        h.rollout.next_deadline(h.now),
        Some(until_ms + h.rollout.spec().deadline_ms)
    );
}
