//! Ghosts and the safe bypass over HTTP, against a real server: reboot and dead-process
//! reclaim, the server's own probe, holds, break, lock-delay, audit, events, status, metrics.

mod common;

use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{PROMPTLY, TestServer, next_event, on_virtual_time, req};
use locksmith_client::ClientError;
use locksmith_client::api::{
    AuditQuery, BreakRequest, DeadHolder, ErrorCode, HoldRequest, LeaseView, LivenessReport,
};
use locksmith_core::{AuditKind, EndCause, HoldState, LockState, Owner};
use locksmith_server::ServerConfig;
use locksmith_server::clock::ManualClock;

fn no_probe() -> impl FnOnce(&mut locksmith_server::ServerConfig) {
    |c| c.probe_interval = Duration::ZERO
}

/// A real process on this node, and the owner identity naming it.
fn local_process() -> (Child, Owner) {
    let child = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    let pid = child.id();
    let owner = Owner {
        node: locksmith_host::hostname().expect("hostname"),
        pid,
        start_time: locksmith_host::process_start_time(pid).expect("start time"),
        boot_id: locksmith_host::boot_id().expect("boot id"),
        user: "tester".into(),
        purpose: "ghost test".into(),
        pid_ns: locksmith_host::pid_namespace().expect("our PID namespace"),
    };
    (child, owner)
}

async fn wait_free(s: &TestServer, resource: &str, limit: Duration) -> Option<Duration> {
    let c = s.client();
    let start = Instant::now();
    while start.elapsed() < limit {
        if c.lock(resource)
            .await
            .expect("lock")
            .lock
            .holders
            .is_empty()
        {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test]
async fn a_request_from_a_rebooted_node_frees_its_old_leases_at_once() {
    let s = TestServer::start_tweaked(no_probe()).await;
    let c = s.client();
    let mut old = req("configs/aim.conf", 4121);
    old.owner.boot_id = "boot-before".into();
    let ghost = c.acquire(&old).await.expect("old boot grant");
    let mut other_node = req("other", 7);
    other_node.owner.node = "node-8".into();
    let survivor = c.acquire(&other_node).await.expect("other node");

    // node-7 comes back with a new boot id and asks for anything at all.
    let mut fresh = req("unrelated", 10);
    fresh.owner.boot_id = "boot-after".into();
    c.acquire(&fresh).await.expect("new boot grant");

    assert!(
        c.lock("configs/aim.conf")
            .await
            .expect("lock")
            .lock
            .holders
            .is_empty()
    );
    let err = c.renew(ghost.lease, None).await.expect_err("ghost is gone");
    assert_eq!(err.code(), Some(ErrorCode::LeaseExpired));
    assert!(matches!(
        err.body().and_then(|b| b.cause.clone()),
        Some(EndCause::NodeRebooted { .. })
    ));
    c.renew(survivor.lease, None)
        .await
        .expect("other nodes untouched");
    s.stop().await;
}

#[tokio::test]
async fn a_dead_holder_reported_from_its_own_node_is_reclaimed_and_others_are_refused() {
    let s = TestServer::start_tweaked(no_probe()).await;
    let c = s.client();
    let (mut child, who) = local_process();
    let mut r = req("res", 1);
    r.owner = who.clone();
    r.ttl_ms = Some(60_000);
    let lease = c.acquire(&r).await.expect("acquire");
    let report_from = |node: &str, pid_ns: Option<&str>, pid: u32| LivenessReport {
        node: node.to_string(),
        boot_id: who.boot_id.clone(),
        pid_ns: pid_ns.map(str::to_string),
        reported_by: "tester@here".into(),
        dead: vec![DeadHolder {
            lease: lease.lease,
            pid,
            start_time: who.start_time,
        }],
    };
    let report = |node: &str, pid: u32| report_from(node, who.pid_ns.as_deref(), pid);
    // From another node: refused, nothing reclaimed.
    let out = c
        .report_liveness(&report("elsewhere", who.pid))
        .await
        .expect("report");
    assert!(out.reclaimed.is_empty());
    assert_eq!(out.refused[0].error, ErrorCode::NotSameNode);
    // About another process: refused.
    let out = c
        .report_liveness(&report(&who.node, who.pid + 1))
        .await
        .expect("report");
    assert_eq!(out.refused[0].error, ErrorCode::WrongProcess);
    // Issue 15 item 3: from another PID namespace of the same node (a container sharing its
    // host name and boot id), or from a reporter naming none: refused, whatever it saw.
    child.kill().expect("kill");
    child.wait().expect("reap");
    for pid_ns in [Some("pid:[1]"), None] {
        let out = c
            .report_liveness(&report_from(&who.node, pid_ns, who.pid))
            .await
            .expect("report");
        assert!(out.reclaimed.is_empty(), "{pid_ns:?}: {out:?}");
        assert_eq!(out.refused[0].error, ErrorCode::NotSameNode);
        assert!(
            out.refused[0].message.contains("PID namespace"),
            "{}",
            out.refused[0].message
        );
    }
    assert_eq!(c.lock("res").await.expect("lock").lock.holders.len(), 1);
    // From the holder's node and namespace, about its exact process: reclaimed at once.
    let out = c
        .report_liveness(&report(&who.node, who.pid))
        .await
        .expect("report");
    assert_eq!(out.reclaimed, vec![lease.lease]);
    assert!(c.lock("res").await.expect("lock").lock.holders.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn the_servers_probe_frees_a_killed_local_holder_long_before_its_ttl() {
    let s = TestServer::start_tweaked(|c| c.probe_interval = Duration::from_millis(100)).await;
    let c = s.client();
    let (mut child, who) = local_process();
    let mut r = req("probed", 1);
    r.owner = who;
    r.ttl_ms = Some(60_000);
    c.acquire(&r).await.expect("acquire");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        c.lock("probed").await.expect("lock").lock.holders.len(),
        1,
        "alive: kept"
    );
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let freed = wait_free(&s, "probed", Duration::from_secs(20)).await;
    assert!(
        freed.is_some(),
        "a dead local holder must not wait out its 60 s TTL"
    );
    let audit = c
        .audit(&AuditQuery {
            resource: Some("probed".into()),
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    assert!(audit.records.iter().any(|r| matches!(
        &r.kind,
        AuditKind::Ended { cause: EndCause::ProcessDied { reported_by } } if reported_by == "server-probe"
    )));
    s.stop().await;
}

fn hold_req(resource: &str, by: &str, require_ack: bool) -> HoldRequest {
    HoldRequest {
        resource: resource.into(),
        operator: by.into(),
        reason: "stopping the orchestrator for 90 s to clear a stale lock".into(),
        duration_ms: 90_000,
        require_ack,
    }
}

#[tokio::test]
async fn a_hold_freezes_new_grants_but_keeps_the_holder_and_ends_on_unhold() {
    let s = TestServer::start_tweaked(no_probe()).await;
    let c = s.client();
    let held = c.acquire(&req("cfg", 1)).await.expect("holder");
    let hold = c
        .hold(&hold_req("cfg", "alice@ops", false))
        .await
        .expect("hold");
    assert_eq!(hold.state, HoldState::Active);
    c.release(held.lease, None)
        .await
        .expect("holder may release");
    let err = c.acquire(&req("cfg", 2)).await.expect_err("frozen");
    assert_eq!(err.code(), Some(ErrorCode::Frozen));
    assert!(err.to_string().contains("FROZEN"), "{err}");
    assert_eq!(
        c.lock("cfg").await.expect("lock").lock.state,
        LockState::Frozen
    );
    c.lift_hold(hold.record.hold, "alice@ops")
        .await
        .expect("unhold");
    c.acquire(&req("cfg", 2)).await.expect("grants resume");
    s.stop().await;
}

#[tokio::test]
async fn a_hold_that_requires_ack_freezes_only_after_a_second_operator_acks() {
    let s = TestServer::start_tweaked(no_probe()).await;
    let c = s.client();
    let hold = c
        .hold(&hold_req("cfg", "alice@ops", true))
        .await
        .expect("hold");
    assert_eq!(hold.state, HoldState::PendingAck);
    let l = c.acquire(&req("cfg", 1)).await.expect("not frozen yet");
    c.release(l.lease, None).await.expect("release");
    // The placer under any spelling of their name is still the placer.
    for spelling in ["alice@ops", "ALICE@OPS", "alice@ops ", " Alice@Ops"] {
        let err = c
            .ack_hold(hold.record.hold, spelling)
            .await
            .expect_err("self-ack");
        assert_eq!(err.code(), Some(ErrorCode::SameOperator), "{spelling:?}");
    }
    let acked = c
        .ack_hold(hold.record.hold, "bob@oncall")
        .await
        .expect("ack");
    assert_eq!(acked.state, HoldState::Active);
    assert_eq!(acked.record.acked_by.as_deref(), Some("bob@oncall"));
    let err = c.acquire(&req("cfg", 1)).await.expect_err("frozen now");
    assert_eq!(err.code(), Some(ErrorCode::Frozen));
    // A second acknowledgement changes nothing and says so: 409, naming who acknowledged it.
    let err = c
        .ack_hold(hold.record.hold, "carol@oncall")
        .await
        .expect_err("second ack");
    let body = err.body().expect("api error");
    assert_eq!(body.error, ErrorCode::AlreadyAcknowledged, "{body:?}");
    assert_eq!(body.error.http_status(), 409);
    assert_eq!(body.by.as_deref(), Some("bob@oncall"));
    assert_eq!(body.hold, Some(hold.record.hold));
    let holds = c.holds().await.expect("holds").holds;
    assert_eq!(holds[0].record.acked_by.as_deref(), Some("bob@oncall"));
    let acks = c
        .audit(&AuditQuery {
            resource: Some("cfg".into()),
            ..AuditQuery::default()
        })
        .await
        .expect("audit")
        .records
        .into_iter()
        .filter(|r| r.kind == AuditKind::HoldAcked)
        .count();
    assert_eq!(acks, 1, "one ack, one audit record");
    // A hold that needed no acknowledgement refuses one too.
    let plain = c
        .hold(&hold_req("other", "alice@ops", false))
        .await
        .expect("hold");
    let err = c
        .ack_hold(plain.record.hold, "bob@oncall")
        .await
        .expect_err("nothing to acknowledge");
    assert_eq!(err.code(), Some(ErrorCode::AckNotRequired), "{err:?}");
    s.stop().await;
}

#[tokio::test]
async fn break_while_the_holder_heartbeats_revokes_it_fences_it_out_and_audits() {
    let s = TestServer::start_tweaked(no_probe()).await;
    let c = s.client();
    let victim = c
        .acquire(&req("aim_lock_config.conf", 4121))
        .await
        .expect("holder");
    // The holder heartbeats in the background all along.
    let hb = s.client();
    let beating = tokio::spawn(async move {
        loop {
            if let Err(e) = hb.renew(victim.lease, Some(victim.token)).await {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = c
        .break_lock(&BreakRequest {
            resource: "aim_lock_config.conf".into(),
            lease: None,
            operator: "alice@ops".into(),
            reason: String::new(),
            freeze_ms: None,
        })
        .await
        .expect_err("a break needs a reason");
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest));
    let out = c
        .break_lock(&BreakRequest {
            resource: "aim_lock_config.conf".into(),
            lease: None,
            operator: "alice@ops".into(),
            reason: "ghost from node-7".into(),
            freeze_ms: Some(60_000),
        })
        .await
        .expect("break");
    assert_eq!(out.revoked.len(), 1);
    assert!(out.fence > victim.token);
    let lost = tokio::time::timeout(Duration::from_secs(10), beating)
        .await
        .expect("holder notices")
        .expect("join");
    assert_eq!(lost.code(), Some(ErrorCode::Broken));
    let body = lost.body().expect("body");
    assert_eq!(body.by.as_deref(), Some("alice@ops"));
    assert_eq!(body.reason.as_deref(), Some("ghost from node-7"));
    // Its fenced write is refused.
    let fenced = c
        .check_fence("aim_lock_config.conf", victim.token)
        .await
        .expect_err("stale");
    assert_eq!(fenced.code(), Some(ErrorCode::StaleToken));
    // Frozen: nothing re-grabs it mid-operation.
    let err = c
        .acquire(&req("aim_lock_config.conf", 5))
        .await
        .expect_err("frozen");
    assert_eq!(err.code(), Some(ErrorCode::Frozen));
    // Audited: who, why, which lease.
    let audit = c
        .audit(&AuditQuery {
            resource: Some("aim_lock_config.conf".into()),
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    let broke = audit
        .records
        .iter()
        .find(|r| r.kind == AuditKind::Broke)
        .expect("break audited");
    assert_eq!(broke.operator.as_deref(), Some("alice@ops"));
    assert_eq!(broke.reason.as_deref(), Some("ghost from node-7"));
    assert!(audit.records.iter().any(|r| r.lease == Some(victim.lease)
        && matches!(
            &r.kind,
            AuditKind::Ended {
                cause: EndCause::Broken { .. }
            }
        )));
    s.stop().await;
}

/// A server on virtual time (`clock`), without the probe.
fn virtual_time(clock: &Arc<ManualClock>) -> impl FnOnce(&mut ServerConfig) + use<> {
    let on_clock = on_virtual_time(clock);
    move |c: &mut ServerConfig| {
        no_probe()(c);
        on_clock(c);
    }
}

/// On virtual time (issue 16, deliverable 2): the holder's TTL and its lock-delay run out when
/// the test moves the server's clock — to the millisecond — instead of during a sleep (it
/// polled every 50 ms for up to 5 s). The expiry comes from the reaper alone, woken by the
/// clock: a server that slept on the real clock fails this in seconds.
#[tokio::test]
async fn lock_delay_follows_a_failed_holder_but_not_a_release() {
    let clock = Arc::new(ManualClock::new());
    let s = TestServer::start_tweaked(virtual_time(&clock)).await;
    let c = s.client();
    let mut r = req("delayed", 1);
    r.ttl_ms = Some(60_000);
    r.lock_delay_ms = Some(30_000);
    let l = c.acquire(&r).await.expect("acquire");
    c.release(l.lease, None).await.expect("clean release");
    let next = c
        .acquire(&req("delayed", 2))
        .await
        .expect("no delay after a clean release");
    // Released too: no deadline but the one under test may wake the reaper.
    c.release(next.lease, None).await.expect("release");

    // Now let a holder with a lock-delay expire, at t = 60 s.
    let mut events = c.events(Some("failing")).await.expect("events");
    r.resource = "failing".into();
    let failing = c.acquire(&r).await.expect("acquire");
    assert_eq!(next_event(&mut events).await.label(), "granted");
    clock.advance(Duration::from_millis(60_001));
    let expired = next_event(&mut events).await;
    assert_eq!(
        (expired.label(), expired.lease),
        ("expired", Some(failing.lease))
    );
    let view = c.lock("failing").await.expect("lock").lock;
    assert_eq!(view.state, LockState::Delayed);
    // From the deadline, not from when the reaper got to it.
    assert_eq!(view.delay_left_ms, 29_999);
    let err = c
        .acquire(&req("failing", 2))
        .await
        .expect_err("in lock-delay");
    assert_eq!(err.code(), Some(ErrorCode::LockDelay));
    assert_eq!(err.body().and_then(|b| b.delay_left_ms), Some(29_999));
    clock.advance(Duration::from_millis(29_998));
    let err = c
        .acquire(&req("failing", 2))
        .await
        .expect_err("a millisecond left");
    assert_eq!(err.body().and_then(|b| b.delay_left_ms), Some(1));
    clock.advance(Duration::from_millis(1));
    c.acquire(&req("failing", 2))
        .await
        .expect("the lock-delay is over");
    s.stop().await;
}

/// On virtual time (issue 16, deliverable 2): a hold runs out when the server's clock passes
/// its duration, and the reaper — with nobody asking — ends it and hands the lock to the
/// acquire queued behind it. A server that slept on the real clock would keep the 90 s hold
/// for 90 s; the test gives it a few.
#[tokio::test]
async fn a_hold_runs_out_on_the_servers_clock_and_the_waiter_behind_it_is_granted() {
    let clock = Arc::new(ManualClock::new());
    let s = TestServer::start_tweaked(virtual_time(&clock)).await;
    let c = s.client();
    let mut events = c.events(Some("cfg")).await.expect("events");
    let hold = c
        .hold(&hold_req("cfg", "alice@ops", false))
        .await
        .expect("hold");
    assert_eq!(hold.ends_in_ms, 90_000);
    assert_eq!(next_event(&mut events).await.label(), "hold_placed");
    let mut queued = req("cfg", 2);
    queued.wait_ms = Some(600_000);
    let waiter = tokio::spawn({
        let c = s.client();
        async move { c.acquire(&queued).await }
    });
    while c.lock("cfg").await.expect("lock").lock.waiters.is_empty() {
        tokio::task::yield_now().await;
    }
    clock.advance(Duration::from_millis(89_999));
    let view = c.lock("cfg").await.expect("lock").lock;
    assert_eq!(view.state, LockState::Frozen, "1 ms before the hold ends");
    assert_eq!(view.waiters.len(), 1);

    clock.advance(Duration::from_millis(2));
    let expired = next_event(&mut events).await;
    assert_eq!(
        (expired.label(), expired.hold),
        ("hold_expired", Some(hold.record.hold))
    );
    let granted = tokio::time::timeout(PROMPTLY, waiter)
        .await
        .expect("granted promptly")
        .expect("task")
        .expect("granted");
    assert_eq!(granted.owner.pid, 2);
    assert_eq!(next_event(&mut events).await.label(), "granted");
    assert!(c.holds().await.expect("holds").holds.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn status_is_all_clear_on_a_clean_server_and_names_each_problem_otherwise() {
    let s = TestServer::start_tweaked(no_probe()).await;
    let c = s.client();
    // The test servers run with --auth off, a problem of its own (listed last; see
    // tests/auth.rs): a clean server lists that one only.
    let only_auth_off = |st: &locksmith_client::api::StatusResponse| {
        st.problems
            .iter()
            .map(|p| p.kind.as_str())
            .collect::<Vec<_>>()
            == ["auth_off"]
    };
    let st = c.status().await.expect("status");
    assert!(only_auth_off(&st), "{st:?}");
    c.acquire(&req("busy", 1))
        .await
        .expect("hot is not a problem");
    assert!(only_auth_off(&c.status().await.expect("status")));
    c.hold(&hold_req("cfg", "alice@ops", false))
        .await
        .expect("hold");
    c.hold(&hold_req("other", "alice@ops", true))
        .await
        .expect("pending");
    let st = c.status().await.expect("status");
    assert!(!st.all_clear);
    let kinds: Vec<&str> = st.problems.iter().map(|p| p.kind.as_str()).collect();
    assert!(kinds.contains(&"frozen"), "{kinds:?}");
    assert!(kinds.contains(&"hold_pending_ack"), "{kinds:?}");
    assert!(st.problems.iter().all(|p| !p.next_step.is_empty()));
    assert_eq!(st.counts.frozen, 1);
    assert_eq!(st.counts.hot, 1);
    s.stop().await;
}

#[tokio::test]
async fn events_stream_durable_audit_records() {
    let s = TestServer::start_tweaked(no_probe()).await;
    let c = s.client();
    let mut events = c.events(Some("watched")).await.expect("events");
    c.acquire(&req("unwatched", 1)).await.expect("acquire");
    let l = c.acquire(&req("watched", 2)).await.expect("acquire");
    let first = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("event in time")
        .expect("stream")
        .expect("record");
    assert_eq!(first.resource, "watched");
    assert_eq!(first.kind, AuditKind::Granted);
    assert_eq!(first.lease, Some(l.lease));
    s.stop().await;
}

#[tokio::test]
async fn metrics_expose_counters_gauges_and_the_servers_own_heartbeat() {
    let s = TestServer::start_tweaked(no_probe()).await;
    let c = s.client();
    let l = c.acquire(&req("m", 1)).await.expect("acquire");
    c.release(l.lease, None).await.expect("release");
    let text = scrape(&s).await;
    for needle in [
        "locksmith_grants_total 1",
        "locksmith_lease_ends_total{cause=\"released\"} 1",
        "locksmith_heartbeat_timestamp_seconds",
        "locksmith_grant_latency_seconds_bucket",
        "locksmith_store_commit_seconds_count",
        "locksmith_locks{state=\"HOT\"} 0",
        "locksmith_waiters 0",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    s.stop().await;
}

#[tokio::test]
async fn metrics_count_plainly_held_locks_and_those_with_waiters_as_hot() {
    let s = TestServer::start_tweaked(no_probe()).await;
    let c = s.client();
    c.acquire(&req("plain-1", 1)).await.expect("acquire");
    c.acquire(&req("plain-2", 2)).await.expect("acquire");
    c.acquire(&req("contended", 3)).await.expect("acquire");
    let waiter = queue_acquire(&s, "contended", 4);
    let mut text = String::new();
    for _ in 0..100 {
        text = scrape(&s).await;
        if text.contains("locksmith_waiters 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for needle in [
        "locksmith_locks{state=\"HOT\"} 3",
        "locksmith_locks{state=\"STALE\"} 0",
        "locksmith_waiters 1",
        "locksmith_leases 3",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    waiter.abort();
    s.stop().await;
}

/// A metrics scrape's text.
/// An acquire of `resource` by `pid` that waits up to 30 s in the queue, in its own task.
fn queue_acquire(
    s: &TestServer,
    resource: &str,
    pid: u32,
) -> tokio::task::JoinHandle<Result<LeaseView, ClientError>> {
    let c = s.client();
    let mut queued = req(resource, pid);
    queued.wait_ms = Some(30_000);
    tokio::spawn(async move { c.acquire(&queued).await })
}

async fn scrape(s: &TestServer) -> String {
    reqwest::get(format!("{}/metrics", s.url))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body")
}

/// The number after `name ` in a metrics scrape.
async fn scraped(s: &TestServer, name: &str) -> f64 {
    let text = scrape(s).await;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// A queued acquire used to submit an empty batch as a barrier, a committer turn for nothing:
/// its answer is a later grant, durable in the release's own commit.
#[tokio::test]
async fn a_queued_acquire_takes_no_turn_of_the_committer() {
    let s = TestServer::start_tweaked(no_probe()).await;
    let c = s.client();
    let held = c.acquire(&req("contended", 1)).await.expect("acquire");
    let waiter = queue_acquire(&s, "contended", 2);
    for _ in 0..250 {
        if scraped(&s, "locksmith_waiters").await == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        scraped(&s, "locksmith_waiters").await,
        1.0,
        "the waiter queued"
    );
    // A commit after the queued acquire: the committer works in order, so any batch the queued
    // acquire had submitted is durable (and its wait counted) by the time this one answers.
    let other = c.acquire(&req("other", 1)).await.expect("acquire");
    c.release(other.lease, None).await.expect("release");
    // Three grants and releases so far (contended, other, other), and nothing for the queue.
    assert_eq!(
        scraped(&s, "locksmith_store_commit_seconds_count").await,
        3.0
    );
    c.release(held.lease, None).await.expect("release");
    let granted = waiter
        .await
        .expect("join")
        .expect("granted after the release");
    assert_eq!(granted.resource, "contended");
    // The release's one commit carried the grant.
    assert_eq!(
        scraped(&s, "locksmith_store_commit_seconds_count").await,
        4.0
    );
    s.stop().await;
}

#[tokio::test]
async fn holds_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start_with(dir.path(), no_probe()).await;
    let hold = s
        .client()
        .hold(&hold_req("cfg", "alice@ops", false))
        .await
        .expect("hold");
    s.stop().await;
    let s = TestServer::start_with(dir.path(), no_probe()).await;
    let c = s.client();
    let holds = c.holds().await.expect("holds").holds;
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0].record.hold, hold.record.hold);
    let err = c.acquire(&req("cfg", 1)).await.expect_err("still frozen");
    assert_eq!(err.code(), Some(ErrorCode::Frozen));
    s.stop().await;
}

/// Whether any audit record says a lease ended because its node rebooted.
async fn any_reboot_reclaim(s: &TestServer) -> bool {
    let audit = s
        .client()
        .audit(&AuditQuery::default())
        .await
        .expect("audit");
    audit.records.iter().any(|r| {
        matches!(
            &r.kind,
            AuditKind::Ended {
                cause: EndCause::NodeRebooted { .. }
            }
        )
    })
}

/// Bug pinned (issue 15, item 6): one acquire naming the server's own node under a made-up boot
/// id ended every live lease of that node as `node_rebooted`. The server knows its own boot id:
/// it refuses the acquire, over HTTP and over the wire, and reclaims nothing.
#[tokio::test]
async fn an_acquire_naming_the_servers_own_node_under_a_forged_boot_id_is_refused() {
    let s = TestServer::start_tweaked(|c| {
        c.wire_listen = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await;
    let c = s.client();
    let (mut child, who) = local_process();
    let mut live = req("own/live", 1);
    live.owner = who.clone();
    live.ttl_ms = Some(60_000);
    let lease = c.acquire(&live).await.expect("a live local holder");

    let mut forged = req("own/forged", 2);
    forged.owner.node = who.node.clone();
    forged.owner.boot_id = "00000000-0000-0000-0000-000000000000".into();
    let err = c.acquire(&forged).await.expect_err("forged boot id");
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
    let body = err.body().expect("body");
    assert_eq!(body.field.as_deref(), Some("owner.boot_id"));
    assert!(
        body.message.contains(&who.boot_id) && body.message.contains("--node"),
        "names the node's real boot id and the fix: {}",
        body.message
    );
    let wire = locksmith_client::WireClient::new(s.wire.clone().expect("wire"));
    let err = wire
        .acquire(&forged)
        .await
        .expect_err("forged over the wire");
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");

    c.renew(lease.lease, Some(lease.token))
        .await
        .expect("the live holder keeps its lease");
    assert!(!any_reboot_reclaim(&s).await, "nothing ended as a reboot");
    assert!(
        c.lock("own/forged")
            .await
            .expect("lock")
            .lock
            .holders
            .is_empty()
    );
    // Another node's boot ids are still news of its reboots.
    let mut other = req("other/boot", 3);
    other.owner.boot_id = "boot-before".into();
    let ghost = c.acquire(&other).await.expect("another node");
    other.owner.boot_id = "boot-after".into();
    other.resource = "other/after".into();
    c.acquire(&other).await.expect("that node rebooted");
    let err = c.renew(ghost.lease, None).await.expect_err("reclaimed");
    assert_eq!(err.code(), Some(ErrorCode::LeaseExpired));
    child.kill().expect("kill");
    child.wait().expect("reap");
    s.stop().await;
}

/// Bug pinned (issue 15, item 6): a liveness report naming a live holder on the server's own
/// node (everything it needs is published by `GET /v1/locks`) was accepted and freed the lock.
/// The server sees its own processes: it refuses the entry with `holder_alive`, and a report
/// claiming another boot of its node outright.
#[tokio::test]
async fn a_liveness_report_calling_a_live_holder_on_the_servers_own_node_dead_is_refused() {
    let s = TestServer::start_tweaked(no_probe()).await;
    let c = s.client();
    let (mut child, who) = local_process();
    let mut live = req("own/report", 1);
    live.owner = who.clone();
    live.ttl_ms = Some(60_000);
    let lease = c.acquire(&live).await.expect("a live local holder");
    let forged = |boot_id: &str| LivenessReport {
        node: who.node.clone(),
        boot_id: boot_id.to_string(),
        pid_ns: who.pid_ns.clone(),
        reported_by: "mallory@elsewhere".into(),
        dead: vec![DeadHolder {
            lease: lease.lease,
            pid: who.pid,
            start_time: who.start_time,
        }],
    };

    let out = c
        .report_liveness(&forged(&who.boot_id))
        .await
        .expect("answered");
    assert!(out.reclaimed.is_empty(), "{out:?}");
    assert_eq!(out.refused.len(), 1, "{out:?}");
    assert_eq!(out.refused[0].error, ErrorCode::HolderAlive);
    assert_eq!(out.refused[0].lease, Some(lease.lease));
    assert!(
        out.refused[0].message.contains("alive"),
        "{}",
        out.refused[0].message
    );

    let err = c
        .report_liveness(&forged("00000000-0000-0000-0000-000000000000"))
        .await
        .expect_err("another boot of the server's own node");
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
    assert_eq!(err.body().and_then(|b| b.field.as_deref()), Some("boot_id"));

    c.renew(lease.lease, Some(lease.token))
        .await
        .expect("the live holder keeps its lease");
    assert!(!any_reboot_reclaim(&s).await);

    // Once its process is gone, the same report is accepted.
    child.kill().expect("kill");
    child.wait().expect("reap");
    let out = c
        .report_liveness(&forged(&who.boot_id))
        .await
        .expect("answered");
    assert_eq!(out.reclaimed, vec![lease.lease]);
    s.stop().await;
}

/// Bug pinned (issue 15, item 16): `/v1/liveness` accepted an empty `node`, `boot_id` or
/// `reported_by` — and an empty boot id, taken as news of the node's boot, ended every lease
/// of the node as a ghost of a reboot.
#[tokio::test]
async fn a_liveness_report_with_an_empty_node_boot_id_or_reporter_is_refused() {
    let s = TestServer::start_tweaked(no_probe()).await;
    let c = s.client();
    let held = c.acquire(&req("empty/report", 1)).await.expect("acquire");
    let good = LivenessReport {
        node: held.owner.node.clone(),
        boot_id: held.owner.boot_id.clone(),
        pid_ns: held.owner.pid_ns.clone(),
        reported_by: "tester@node-7".into(),
        dead: Vec::new(),
    };
    for field in ["node", "boot_id", "reported_by"] {
        for empty in ["", "  "] {
            let mut report = good.clone();
            match field {
                "node" => report.node = empty.into(),
                "boot_id" => report.boot_id = empty.into(),
                _ => report.reported_by = empty.into(),
            }
            let err = c
                .report_liveness(&report)
                .await
                .expect_err("an empty field");
            assert_eq!(
                err.code(),
                Some(ErrorCode::InvalidRequest),
                "{field}: {err}"
            );
            assert_eq!(err.body().and_then(|b| b.field.as_deref()), Some(field));
        }
    }
    c.renew(held.lease, Some(held.token))
        .await
        .expect("nothing was reclaimed");
    assert!(!any_reboot_reclaim(&s).await);
    c.report_liveness(&good).await.expect("a complete report");
    s.stop().await;
}
