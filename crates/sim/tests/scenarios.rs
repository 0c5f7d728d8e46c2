//! The incident's scenarios, each on a whole server in this process on virtual time
//! ([`World`]) with a simulated fleet speaking HTTP to it: nothing expires unless the scenario
//! advances the clock, so each outcome is the scenario's doing, in the same order every run.
//!
//! Waits poll what the agents or the server say (every 20 ms, for at most [`WITHIN`]); none
//! is a sleep standing in for an event.

use std::future::Future;
use std::time::{Duration, Instant};

use locksmith_api::agents::{AgentReport, ApplyState, ShadowRequest};
use locksmith_api::rollouts::{OutcomeKind, RolloutPhase, RolloutView, StartRolloutRequest};
use locksmith_api::{AcquireRequest, AuditQuery, ErrorCode, LeaseView};
use locksmith_client::Client;
use locksmith_core::{AuditKind, AuditRecord, EndCause, Owner};
use locksmith_server::clock::Clock as _;
use locksmith_sim::ops::{write_revision, write_under};
use locksmith_sim::{Fleet, FleetSpec, World};

const CONFIG: &str = "aim_lock_config.conf";
const RESOURCE: &str = "configs/aim_lock_config.conf";

/// Far longer than a fleet of a hundred agents takes on loopback; far shorter than any TTL or
/// bake of these scenarios, which pass only on the virtual clock.
const WITHIN: Duration = Duration::from_secs(20);

async fn world_with_fleet(agents: usize, seed: u64) -> (World, Fleet, u64) {
    let w = World::start().await.expect("the server starts");
    let r1 = write_revision(w.admin(), CONFIG, "hot = 1\n", false)
        .await
        .expect("r1")
        .rev;
    let spec = FleetSpec {
        agents,
        seed,
        configs: vec![CONFIG.into()],
        ..FleetSpec::default()
    };
    let fleet = Fleet::start_with(w.admin(), spec).await.expect("fleet");
    until("every agent applies the first revision", || {
        fleet.applied(CONFIG, r1) == agents
    })
    .await;
    (w, fleet, r1)
}

async fn stop(w: World, fleet: Fleet) {
    fleet.stop();
    w.stop().await.expect("the server stops cleanly");
}

/// Waits until `done` holds, for at most [`WITHIN`].
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WITHIN, "not within {WITHIN:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the server says `done`, for at most [`WITHIN`].
async fn until_server<F: Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < WITHIN, "not within {WITHIN:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn owner(node: &str, boot_id: &str, pid: u32, purpose: &str) -> Owner {
    Owner {
        node: node.into(),
        pid,
        start_time: 1_000 + u64::from(pid),
        boot_id: boot_id.into(),
        user: "ops".into(),
        purpose: purpose.into(),
        pid_ns: None,
    }
}

async fn acquire(client: &Client, resource: &str, owner: Owner, ttl: Duration) -> LeaseView {
    client
        .acquire(&AcquireRequest {
            resource: resource.into(),
            owner,
            ttl_ms: Some(u64::try_from(ttl.as_millis()).expect("ttl")),
            wait_ms: None,
            slots: None,
            lock_delay_ms: None,
        })
        .await
        .expect("acquire")
}

async fn audit_of(client: &Client, resource: &str) -> Vec<AuditRecord> {
    client
        .audit(&AuditQuery {
            resource: Some(resource.into()),
            ..AuditQuery::default()
        })
        .await
        .expect("audit")
        .records
}

/// How `lease` ended, as the audit log of `resource` says (none: it has not).
async fn end_of(client: &Client, resource: &str, lease: &LeaseView) -> Option<EndCause> {
    audit_of(client, resource)
        .await
        .into_iter()
        .filter(|r| r.lease == Some(lease.lease))
        .find_map(|r| match r.kind {
            AuditKind::Ended { cause } => Some(cause),
            _ => None,
        })
}

async fn is_free(client: &Client, resource: &str) -> bool {
    client
        .lock(resource)
        .await
        .expect("lock")
        .lock
        .holders
        .is_empty()
}

/// The server's virtual wall clock, Unix ms.
fn virtual_now(w: &World) -> u64 {
    w.clock().expect("virtual time").now().wall_ms
}

/// When the holder of the config's lock last renewed it, Unix ms (0: free).
async fn renewed_ms(client: &Client) -> u64 {
    let lock = client.lock(RESOURCE).await.expect("lock").lock;
    lock.holders.first().map_or(0, |h| h.last_heartbeat_ms)
}

/// Moves the clock half of `bake` on, and waits for the reaper to renew the rollout's lease
/// there: the next jump starts from a fresh lease.
async fn halfway_through(w: &World, bake: Duration) {
    w.advance(bake / 2);
    let half = virtual_now(w);
    until_server("the reaper renews the rollout's lease halfway", || async {
        renewed_ms(w.admin()).await >= half
    })
    .await;
}

/// A tenth of the fleet is offline while two revisions are written: back, each jumps straight
/// to the newer one — its stream sends what it should run now, not what it missed — and never
/// applies the one in between, which the rest of the fleet applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_endpoints_return_and_jump_to_the_newest_revision_skipping_the_one_they_missed() {
    let (w, fleet, _) = world_with_fleet(100, 21).await;
    let away: Vec<usize> = (0..100).filter(|i| i % 10 == 3).collect();
    fleet.go_offline(&away).await;
    assert_eq!(fleet.status(&[CONFIG.into()]).online, 90);
    let r2 = write_revision(w.admin(), CONFIG, "hot = 2\n", false)
        .await
        .expect("r2")
        .rev;
    until("the 90 online agents apply r2", || {
        fleet.applied(CONFIG, r2) == 90
    })
    .await;
    let r3 = write_revision(w.admin(), CONFIG, "hot = 3\n", false)
        .await
        .expect("r3")
        .rev;
    until("the 90 online agents apply r3", || {
        fleet.applied(CONFIG, r3) == 90
    })
    .await;
    fleet.come_back(&away);
    until("all 100 run r3", || fleet.applied(CONFIG, r3) == 100).await;
    for (i, a) in fleet.agents().iter().enumerate() {
        let node = &a.identity().node;
        assert_eq!(
            a.ever_applied(CONFIG, r2),
            !away.contains(&i),
            "{node}: only the agents that stayed online applied r2"
        );
    }
    stop(w, fleet).await;
}

/// The orchestrator crashes holding `configs/NAME` (a 5-minute lease) after writing a revision
/// the fleet applied. Nobody else can write; once the virtual clock passes its TTL the reaper
/// reclaims the ghost (audited as expired), the next writer gets a higher fencing token, and
/// every endpoint applies its revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_crashing_with_the_config_lock_is_reclaimed_at_its_ttl_and_the_next_writer_reaches_everyone()
 {
    let (w, fleet, _) = world_with_fleet(100, 22).await;
    let ttl = Duration::from_secs(300);
    let crashed = acquire(
        w.admin(),
        RESOURCE,
        owner("node-7", "boot-7", 77, "orchestrator update cycle"),
        ttl,
    )
    .await;
    let r2 = write_under(w.admin(), CONFIG, &crashed, "hot = 2\n", false)
        .await
        .expect("the orchestrator's write")
        .rev;
    until("every agent applies the orchestrator's revision", || {
        fleet.applied(CONFIG, r2) == 100
    })
    .await;
    // It crashed: nothing renews its lease, and the lock stays HOT.
    let refused = w
        .admin()
        .acquire(&AcquireRequest {
            resource: RESOURCE.into(),
            owner: owner("ops-1", "boot-ops", 5, "hotfix"),
            ttl_ms: Some(30_000),
            wait_ms: None,
            slots: None,
            lock_delay_ms: None,
        })
        .await
        .expect_err("HOT while the ghost holds it");
    assert_eq!(refused.code(), Some(ErrorCode::Hot), "{refused}");
    w.advance(ttl - Duration::from_secs(1));
    assert!(!is_free(w.admin(), RESOURCE).await, "not before its TTL");
    w.advance(Duration::from_secs(2));
    until_server("the reaper reclaims the ghost", || {
        is_free(w.admin(), RESOURCE)
    })
    .await;
    assert_eq!(
        end_of(w.admin(), RESOURCE, &crashed).await,
        Some(EndCause::Expired)
    );
    let r3 = write_revision(w.admin(), CONFIG, "hot = 3\n", false)
        .await
        .expect("the next writer");
    assert!(
        r3.token > crashed.token,
        "{:?} > {:?}",
        r3.token,
        crashed.token
    );
    until("every agent applies the next writer's revision", || {
        fleet.applied(CONFIG, r3.rev) == 100
    })
    .await;
    stop(w, fleet).await;
}

/// A revision written under a fencing token older than the one the endpoints applied — a
/// stale writer's — sent as a shadow to the whole fleet is refused by every endpoint with
/// `lock mismatch`, and nobody's applied revision changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_writers_revision_is_refused_by_every_endpoint_with_lock_mismatch() {
    let (w, fleet, _) = world_with_fleet(100, 23).await;
    let stale = write_revision(w.admin(), CONFIG, "hot = 9\n", true)
        .await
        .expect("the stale draft");
    let current = write_revision(w.admin(), CONFIG, "hot = 3\n", false)
        .await
        .expect("the current revision");
    assert!(stale.token < current.token);
    until("every agent applies the current revision", || {
        fleet.applied(CONFIG, current.rev) == 100
    })
    .await;
    let sent = w
        .admin()
        .shadow_config(
            CONFIG,
            &ShadowRequest {
                rev: stale.rev,
                selector: String::new(),
                nodes: Vec::new(),
            },
        )
        .await
        .expect("shadow to the whole fleet");
    assert_eq!(sent.nodes.len(), 100, "{sent:?}");
    let start = Instant::now();
    let refusals = loop {
        let seen = w.admin().fleet("").await.expect("fleet");
        let answers: Vec<AgentReport> = seen
            .agents
            .iter()
            .filter_map(|a| a.configs.first()?.shadow_report.clone())
            .filter(|r| r.rev == stale.rev)
            .collect();
        if answers.len() == 100 {
            break answers;
        }
        assert!(
            start.elapsed() < WITHIN,
            "{} of 100 answered the shadow",
            answers.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for r in &refusals {
        assert_eq!(r.state, ApplyState::Refused, "{r:?}");
        let error = r.error.as_deref().unwrap_or_default();
        assert!(error.contains("lock mismatch"), "{error}");
        assert_eq!(r.applied_rev, current.rev, "{r:?}");
    }
    for a in fleet.agents() {
        assert_eq!(a.applied(CONFIG).0, current.rev, "{}", a.identity().node);
        assert!(!a.ever_applied(CONFIG, stale.rev));
    }
    stop(w, fleet).await;
}

/// Five endpoints' nodes hold leases under their current boot; they reboot. Each agent's
/// registration under its new boot id is the node's first contact, and reclaims its node's
/// lease at once — the virtual clock never moves — as `node_rebooted`; five other nodes'
/// leases are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebooted_nodes_leases_are_reclaimed_on_first_contact_without_waiting_for_their_ttl() {
    let (w, fleet, _) = world_with_fleet(50, 24).await;
    let mut leases = Vec::new();
    for a in &fleet.agents()[..10] {
        let node = &a.identity().node;
        let resource = format!("work/{node}");
        let who = owner(node, &a.boot_id(), 100, "local recalibration");
        let lease = acquire(w.admin(), &resource, who, Duration::from_secs(600)).await;
        leases.push((resource, lease));
    }
    let (rebooting, staying) = leases.split_at(5);
    for a in &fleet.agents()[..5] {
        a.reboot();
    }
    until("the five rebooted agents are back online", || {
        fleet.agents()[..5]
            .iter()
            .all(|a| a.boots() == 2 && a.is_online())
    })
    .await;
    for (resource, lease) in rebooting {
        until_server("the rebooted node's lease is reclaimed", || {
            is_free(w.admin(), resource)
        })
        .await;
        let cause = end_of(w.admin(), resource, lease).await;
        assert!(
            matches!(cause, Some(EndCause::NodeRebooted { ref new_boot_id })
                if new_boot_id.ends_with("-boot-2")),
            "{resource}: {cause:?}"
        );
    }
    for (resource, lease) in staying {
        assert!(!is_free(w.admin(), resource).await, "{resource} still held");
        assert_eq!(end_of(w.admin(), resource, lease).await, None);
    }
    stop(w, fleet).await;
}

/// A rollout with a canary and a 10-minute bake runs on the server's clock: the canary
/// applies, and the rest of the fleet is not sent the revision until the virtual clock has
/// passed the bake; then every endpoint applies it and the rollout succeeds.
///
/// The clock moves in two jumps, each shorter than the rollout's 10-minute lease on the config,
/// and the rollout keeps that lease through the bake: the reaper wakes to renew it whatever
/// the GC interval (one jump past the TTL would be a server frozen that long).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollouts_bake_passes_only_when_the_virtual_clock_does() {
    let (w, fleet, _) = world_with_fleet(50, 25).await;
    let r2 = write_revision(w.admin(), CONFIG, "hot = 2\n", true)
        .await
        .expect("r2")
        .rev;
    let started: RolloutView = w
        .admin()
        .start_rollout(&StartRolloutRequest {
            config: CONFIG.into(),
            rev: r2,
            canary: Some("1".into()),
            bake: Some("10m".into()),
            ..StartRolloutRequest::default()
        })
        .await
        .expect("start the rollout");
    let rollout = || {
        let admin = w.admin().clone();
        let id = started.id.clone();
        async move { admin.rollout(&id).await.expect("rollout") }
    };
    const BAKE: Duration = Duration::from_secs(600);
    let rolled = rollout().await.rolled_rev.expect("started");
    until("the canary applies the rolled revision", || {
        fleet.applied(CONFIG, rolled) == 1
    })
    .await;
    until_server("the server has the canary's report", || async {
        rollout()
            .await
            .waves
            .first()
            .is_some_and(|w| w.applied == 1)
    })
    .await;
    let baking = rollout().await;
    let sent = baking
        .endpoints
        .iter()
        .filter(|e| e.sent_at_ms.is_some())
        .count();
    assert_eq!(
        sent, 1,
        "only the canary, while it bakes: {}",
        baking.summary
    );
    assert_eq!(baking.phase, RolloutPhase::Running);
    halfway_through(&w, BAKE).await;
    assert_eq!(rollout().await.state, baking.state, "still baking halfway");
    w.advance(BAKE / 2 + Duration::from_secs(1));
    let start = Instant::now();
    while fleet.applied(CONFIG, rolled) < 50 {
        if start.elapsed() > WITHIN {
            let view = rollout().await;
            panic!(
                "{} of 50 applied the rolled revision after the bake: {} {}",
                fleet.applied(CONFIG, rolled),
                view.summary,
                serde_json::to_string(&view.state).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The last wave bakes too before the rollout ends.
    let mut view = rollout().await;
    if view.phase != RolloutPhase::Ended {
        until_server("the server has every report", || async {
            rollout()
                .await
                .waves
                .iter()
                .map(|w| w.applied)
                .sum::<usize>()
                == 50
        })
        .await;
        halfway_through(&w, BAKE).await;
        w.advance(BAKE / 2 + Duration::from_secs(1));
        until_server("the rollout ends", || async {
            rollout().await.phase == RolloutPhase::Ended
        })
        .await;
        view = rollout().await;
    }
    let outcome = view.outcome.expect("outcome");
    assert_eq!(outcome.kind, OutcomeKind::Succeeded, "{}", view.summary);
    stop(w, fleet).await;
}
