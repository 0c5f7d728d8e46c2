//! A `LeaseGuard` over each transport of `LeaseApi`, against a real server (embedded store,
//! 127.0.0.1:0): the binary wire protocol, and the in-process engine (`local::LocalClient`) the
//! fleet simulator runs on. Each keeps a 1 s lease alive by its heartbeats across three TTLs —
//! while the server's reaper would reclaim it one TTL after the last renewal — and reports the
//! moment an operator breaks it. The in-process transport answers refusals with the very error
//! bodies the HTTP API sends.

use std::time::Duration;

mod common;

use common::{TestServer, req, wire_server};
use locksmith_client::api::{AcquireRequest, BreakRequest, ErrorCode};
use locksmith_client::{Client, ClientError, LeaseApi, LeaseGuard, LeaseLost, ReleaseError};
use locksmith_core::{FenceToken, LeaseId, LockState};

/// The shortest TTL the server grants.
const TTL_MS: u64 = 1_000;
/// Longest a guard may take to notice a break: its next renewal, a third of a TTL away.
const NOTICE: Duration = Duration::from_secs(10);

fn short(resource: &str, pid: u32) -> AcquireRequest {
    AcquireRequest {
        ttl_ms: Some(TTL_MS),
        ..req(resource, pid)
    }
}

/// Acquires `resource` through `api`, guards the lease for three TTLs and a half, and checks the
/// server still has it, renewed, then releases it as the guard's own.
async fn kept_alive_across_three_ttls<T: LeaseApi + 'static>(
    api: T,
    http: &Client,
    resource: &str,
) {
    let lease = api.acquire(&short(resource, 4121)).await.expect("granted");
    let (id, token) = (lease.lease, lease.token);
    let guard = LeaseGuard::start(api, lease);
    tokio::time::sleep(Duration::from_millis(3 * TTL_MS + TTL_MS / 2)).await;
    assert!(!guard.is_lost(), "{:?}", guard.lost().await);

    let now = http.lock(resource).await.expect("lock").lock;
    assert_eq!(now.state, LockState::Hot);
    let holder = &now.holders[0];
    assert_eq!((holder.lease, holder.token), (id, token));
    assert!(
        holder.last_heartbeat_ms >= holder.granted_at_ms + 3 * TTL_MS,
        "no heartbeat reached the server: {holder:?}"
    );
    http.check_fence(resource, token)
        .await
        .expect("still fenced in");

    guard.release().await.expect("released as the guard's own");
    assert_eq!(
        http.lock(resource).await.expect("lock").lock.state,
        LockState::Free
    );
}

/// Acquires `resource` through `api`, guards it, breaks it over HTTP, and checks the guard says
/// who broke it and why — and that its release does not pass for a success.
async fn reports_a_break<T: LeaseApi + 'static>(api: T, http: &Client, resource: &str) {
    let lease = api.acquire(&short(resource, 4122)).await.expect("granted");
    let id = lease.lease;
    let guard = LeaseGuard::start(api, lease);
    http.break_lock(&BreakRequest {
        resource: resource.into(),
        lease: Some(id),
        operator: "alice@ops".into(),
        reason: "clearing a stuck deploy".into(),
        freeze_ms: Some(0),
    })
    .await
    .expect("broken");
    let lost = tokio::time::timeout(NOTICE, guard.lost())
        .await
        .expect("the guard noticed the break");
    let broken = LeaseLost::Broken {
        by: "alice@ops".into(),
        reason: "clearing a stuck deploy".into(),
    };
    assert_eq!(lost, broken);
    assert!(guard.is_lost());
    match guard.release().await {
        Err(ReleaseError::Lost(l)) => assert_eq!(l, broken),
        other => panic!("a broken lease's release passed for {other:?}"),
    }
}

#[tokio::test]
async fn a_guard_over_the_wire_keeps_its_lease_alive_across_three_ttls() {
    let (s, wire) = wire_server().await;
    kept_alive_across_three_ttls(wire, &s.client(), "guard/wire/kept").await;
    s.stop().await;
}

#[tokio::test]
async fn a_guard_over_the_wire_reports_its_lease_broken() {
    let (s, wire) = wire_server().await;
    reports_a_break(wire, &s.client(), "guard/wire/broken").await;
    s.stop().await;
}

#[tokio::test]
async fn a_guard_in_process_keeps_its_lease_alive_across_three_ttls() {
    let s = TestServer::start().await;
    kept_alive_across_three_ttls(s.local(), &s.client(), "guard/local/kept").await;
    s.stop().await;
}

#[tokio::test]
async fn a_guard_in_process_reports_its_lease_broken() {
    let s = TestServer::start().await;
    reports_a_break(s.local(), &s.client(), "guard/local/broken").await;
    s.stop().await;
}

/// Both transports' answer to the same refused call, on the same server.
fn same_refusal<T: std::fmt::Debug>(
    what: &str,
    http: Result<T, ClientError>,
    local: Result<T, ClientError>,
) -> ErrorCode {
    let (Err(ClientError::Api { status, body }), Err(ClientError::Api { status: s, body: b })) =
        (http, local)
    else {
        panic!("{what}: not refused by both");
    };
    assert_eq!((status, &body), (s, &b), "{what}");
    body.error
}

/// The in-process transport answers with the server's one error mapping: the same code,
/// status and body as the HTTP API for the same refusal.
#[tokio::test]
async fn in_process_refusals_are_the_http_api_s_errors() {
    let s = TestServer::start().await;
    let local = s.local();
    let http = &s.client();
    let held = local
        .acquire(&req("guard/refusals", 1))
        .await
        .expect("granted");

    // HTTP quotes the path segment it could not take (`"0"`), the other transports the id:
    // the same code, status and field.
    let (Err(h), Err(l)) = (
        http.renew(LeaseId(0), None).await,
        local.renew(LeaseId(0), None).await,
    ) else {
        panic!("lease 0 was renewed");
    };
    let fields = |e: &ClientError| {
        let body = e.body().expect("an API error");
        (body.error, body.error.http_status(), body.field.clone())
    };
    assert_eq!(fields(&h), fields(&l));
    assert_eq!(l.code(), Some(ErrorCode::InvalidRequest));
    let unknown = LeaseId(held.lease.0 + 1000);
    let code = same_refusal(
        "unknown lease",
        http.renew(unknown, None).await,
        local.renew(unknown, None).await,
    );
    assert_eq!(code, ErrorCode::NotHolder);
    let wrong = Some(FenceToken(held.token.0 + 1));
    let code = same_refusal(
        "wrong token",
        http.release(held.lease, wrong).await,
        local.release(held.lease, wrong).await,
    );
    assert_eq!(code, ErrorCode::StaleToken);
    let stale = FenceToken(held.token.0 + 1000);
    same_refusal(
        "fence check",
        http.check_fence("guard/refusals", stale).await,
        local.check_fence("guard/refusals", stale).await,
    );
    let bad = AcquireRequest {
        ttl_ms: Some(1),
        ..req("guard/refusals", 2)
    };
    let code = same_refusal("ttl", http.acquire(&bad).await, local.acquire(&bad).await);
    assert_eq!(code, ErrorCode::InvalidRequest);

    // And a taken lock is refused alike (its message counts time, so the code and status).
    let other = req("guard/refusals", 3);
    let (Err(h), Err(l)) = (http.acquire(&other).await, local.acquire(&other).await) else {
        panic!("a held lock was granted again");
    };
    assert_eq!(
        (h.code(), l.code()),
        (Some(ErrorCode::Hot), Some(ErrorCode::Hot))
    );
    assert!(matches!(l, ClientError::Api { status: 409, .. }), "{l:?}");

    let released = local
        .release(held.lease, Some(held.token))
        .await
        .expect("released");
    assert!(!released.already_released);
    s.stop().await;
}

/// The in-process transport calls the same acquire as HTTP: an owner that names the server's
/// own node under another boot id is refused alike (granted, it would end every lease of that
/// node as a ghost of a reboot that never happened). A simulation's nodes never name it.
#[tokio::test]
async fn in_process_acquires_check_the_servers_own_node_as_http_does() {
    let s = TestServer::start_tweaked(|c| c.node = Some("node-7".into())).await;
    let (local, http) = (s.local(), s.client());
    // `req`'s owner runs on node-7 under boot id `boot-a`, which is not this machine's.
    let forged = req("guard/own-node", 1);
    let code = same_refusal(
        "own node, another boot",
        http.acquire(&forged).await,
        local.acquire(&forged).await,
    );
    assert_eq!(code, ErrorCode::InvalidRequest);
    let simulated = AcquireRequest {
        owner: locksmith_core::Owner {
            node: "sim-node-1".into(),
            ..forged.owner.clone()
        },
        ..forged
    };
    local.acquire(&simulated).await.expect("granted");
    s.stop().await;
}
