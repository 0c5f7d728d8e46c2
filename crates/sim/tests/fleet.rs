//! Simulated fleets against a real server on 127.0.0.1:0 (in-process, authentication on):
//! every agent has its own node token, made through the API, and speaks HTTP to the server.

use std::time::{Duration, Instant};

use locksmith_api::agents::ApplyState;
use locksmith_api::rollouts::OutcomeKind;
use locksmith_api::rollouts::{RolloutPhase, RolloutView, StartRolloutRequest};
use locksmith_client::Client;
use locksmith_sim::ops::write_revision;
use locksmith_sim::{Behaviour, Fleet, FleetSpec, Rates, Time, World};

const CONFIG: &str = "aim_lock_config.conf";

/// Far longer than a fleet of a few hundred agents takes on loopback.
const WITHIN: Duration = Duration::from_secs(20);

/// The server of these tests: in-process, authentication on, on the real clock (the fleet is
/// measured in real time; `tests/scenarios.rs` runs on virtual time).
async fn server() -> World {
    World::start_on(Time::Real)
        .await
        .expect("the server starts")
}

/// Stops `fleet`, then the server.
async fn stop(s: World, fleet: Option<Fleet>) {
    if let Some(fleet) = fleet {
        fleet.stop();
    }
    s.stop().await.expect("the server stops cleanly");
}

fn spec(agents: usize, seed: u64, fail_rate: f64, prefix: &str) -> FleetSpec {
    FleetSpec {
        agents,
        seed,
        fail_rate,
        configs: vec![CONFIG.into()],
        prefix: prefix.into(),
        ..FleetSpec::default()
    }
}

/// Waits until `done` holds, checking every 20 ms, for at most [`WITHIN`].
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WITHIN, "not within {WITHIN:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many endpoints the server says applied `rev` (their reports, `GET /v1/fleet`).
async fn applied_at_server(admin: &Client, rev: u64) -> usize {
    let fleet = admin.fleet("").await.expect("fleet");
    fleet
        .agents
        .iter()
        .flat_map(|a| &a.configs)
        .filter(|c| {
            c.report
                .as_ref()
                .is_some_and(|r| r.state == ApplyState::Applied && r.applied_rev == rev)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_200_simulated_agents_applies_a_new_current_revision() {
    let s = server().await;
    let r1 = write_revision(s.admin(), CONFIG, "hot = 1\n", false)
        .await
        .expect("r1")
        .rev;
    let fleet = Fleet::start_with(s.admin(), spec(200, 1, 0.0, "sim"))
        .await
        .expect("fleet");
    until("200 agents apply the first revision", || {
        fleet.applied(CONFIG, r1) == 200
    })
    .await;
    let r2 = write_revision(s.admin(), CONFIG, "hot = 2\n", false)
        .await
        .expect("r2")
        .rev;
    until("200 agents apply the new current revision", || {
        fleet.applied(CONFIG, r2) == 200
    })
    .await;
    // The server has every report too.
    let start = Instant::now();
    while applied_at_server(s.admin(), r2).await < 200 {
        assert!(start.elapsed() < WITHIN, "the server never saw 200 reports");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fleet.status(&[CONFIG.into()]).online, 200);
    stop(s, Some(fleet)).await;
}

/// With every agent's health failing on a new revision, a canary of three catches it: the
/// rollout rolls back, the canaries that tried it restore last-known-good, and no agent ever
/// commits it. (This also pins the server forwarding a repeated report to the rollout: a
/// canary sent its last-known-good before it applied the revision answers `applied` on it
/// exactly as before the rollout, and the rollback waited for that answer for ever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_of_three_catches_a_failing_revision_and_the_rest_never_apply_it() {
    let s = server().await;
    let r1 = write_revision(s.admin(), CONFIG, "hot = 1\n", false)
        .await
        .expect("r1")
        .rev;
    let fleet = Fleet::start_with(s.admin(), spec(30, 9, 1.0, "sim"))
        .await
        .expect("fleet");
    until("30 agents apply the first revision", || {
        fleet.applied(CONFIG, r1) == 30
    })
    .await;
    let r2 = write_revision(s.admin(), CONFIG, "hot = 2\n", true)
        .await
        .expect("r2")
        .rev;
    let started: RolloutView = s
        .admin()
        .start_rollout(&StartRolloutRequest {
            config: CONFIG.into(),
            rev: r2,
            canary: Some("3".into()),
            ..StartRolloutRequest::default()
        })
        .await
        .expect("start the rollout");
    let start = Instant::now();
    let view = loop {
        let view = s.admin().rollout(&started.id).await.expect("rollout");
        if view.phase == RolloutPhase::Ended && view.outcome.is_some() {
            break view;
        }
        if start.elapsed() > WITHIN {
            for a in &fleet.agents()[..3] {
                let node = &a.identity().node;
                let seen = s.admin().fleet_node(node).await.expect("node");
                eprintln!(
                    "{node}: applied {:?} failed r{} {} | server {}",
                    a.applied(CONFIG),
                    r2 + 1,
                    a.ever_failed(CONFIG, r2 + 1),
                    serde_json::to_string(&seen).unwrap_or_default()
                );
            }
            panic!("never ended: {}", view.summary);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let outcome = view.outcome.as_ref().expect("outcome");
    assert_eq!(outcome.kind, OutcomeKind::RolledBack, "{}", view.summary);
    let revs: Vec<u64> = [Some(r2), view.rolled_rev].into_iter().flatten().collect();
    let canaries: Vec<&str> = view
        .endpoints
        .iter()
        .filter(|e| e.wave == 0)
        .map(|e| e.node.as_str())
        .collect();
    assert_eq!(canaries.len(), 3, "{canaries:?}");
    // The first canary to fail starts the rollback; the others fail too, or are sent their
    // last-known-good before they apply it.
    let failed: Vec<&str> = fleet
        .agents()
        .iter()
        .filter(|a| revs.iter().any(|&rev| a.ever_failed(CONFIG, rev)))
        .map(|a| a.identity().node.as_str())
        .collect();
    assert!(
        !failed.is_empty() && failed.iter().all(|n| canaries.contains(n)),
        "failed {failed:?}, canaries {canaries:?}"
    );
    for a in fleet.agents() {
        assert_eq!(
            a.applied(CONFIG).0,
            r1,
            "{} is back on r1",
            a.identity().node
        );
        for &rev in &revs {
            assert!(
                !a.ever_applied(CONFIG, rev),
                "{} applied {rev} (committed): only the canaries tried it, and rolled back",
                a.identity().node
            );
        }
    }
    stop(s, Some(fleet)).await;
}

/// Two fleets drawn with the same seed fail on the same agents (by index), as the seed says;
/// another seed picks others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_picks_the_same_failing_agents_twice() {
    let s = server().await;
    let rates = Rates {
        fail: 0.3,
        ..Rates::default()
    };
    let mut runs = Vec::new();
    for (run, prefix) in ["a", "b"].into_iter().enumerate() {
        let first = write_revision(
            s.admin(),
            CONFIG,
            &format!("hot = {}\n", 10 + run * 2),
            false,
        )
        .await
        .expect("first")
        .rev;
        let fleet = Fleet::start_with(s.admin(), spec(40, 42, 0.3, prefix))
            .await
            .expect("fleet");
        until("every agent applies the first revision", || {
            fleet.applied(CONFIG, first) == 40
        })
        .await;
        let bad = write_revision(
            s.admin(),
            CONFIG,
            &format!("hot = {}\n", 11 + run * 2),
            false,
        )
        .await
        .expect("bad")
        .rev;
        until("every agent applies or fails the new revision", || {
            fleet
                .agents()
                .iter()
                .all(|a| a.applied(CONFIG).0 == bad || a.ever_failed(CONFIG, bad))
        })
        .await;
        let failing: Vec<usize> = (0..40)
            .filter(|&i| fleet.agents()[i].ever_failed(CONFIG, bad))
            .collect();
        fleet.stop();
        runs.push(failing);
    }
    assert_eq!(runs[0], runs[1], "the same seed, the same failing agents");
    let drawn: Vec<usize> = (0..40)
        .filter(|&i| Behaviour::draw(42, i, &rates).fails)
        .collect();
    assert_eq!(runs[0], drawn);
    assert!(!drawn.is_empty() && drawn.len() < 40, "{drawn:?}");
    let other: Vec<usize> = (0..40)
        .filter(|&i| Behaviour::draw(43, i, &rates).fails)
        .collect();
    assert_ne!(drawn, other, "another seed picks other agents");
    stop(s, None).await;
}
