//! The leases' request functions, for HTTP and the wire protocol alike.

use locksmith_api::frame::LeaseOp;
use locksmith_api::{
    AcquireRequest, DEFAULT_TTL_MS, ErrorBody, ErrorCode, FenceCheckRequest, FenceCheckResponse,
    LOCKS_DEFAULT_LIMIT, LOCKS_MAX_LIMIT, LeaseView, LivenessReport, LivenessResponse,
    LockResponse, LocksQuery, LocksResponse, ReleaseResponse,
};
use locksmith_core::{
    Acquire, DeadProcess, LeaseId, Trusted, Vantage, validate_reporter, validate_resource,
};

use crate::app::App;
use crate::request::{ApiError, page_limit, valid_id};
use crate::tls::PeerIdentity;

/// Acquires a lock, waiting in its queue as long as asked; answers once the grant is durable.
/// Dropping the future withdraws the acquire (see `Engine::acquire`). A connection whose
/// client certificate names a node acquires only as that node (`owner.node`).
pub async fn acquire(
    app: &App,
    peer: &PeerIdentity,
    req: AcquireRequest,
) -> Result<LeaseView, ApiError> {
    peer.may_act_as("owner.node", &req.owner.node)?;
    let acquire = acquire_of(app, req)?;
    let refused_at = |e| ApiError::engine_at(e, app.engine.clock().now().wall_ms);
    app.engine.acquire(acquire).await.map_err(refused_at)
}

/// A public acquire request as the table sees it, with the API's defaults filled in. Refused if
/// its owner claims this server's own node under another boot id: that would reclaim every
/// lease of the node as a ghost of a reboot that never happened (see `crate::own_node`).
fn acquire_of(app: &App, req: AcquireRequest) -> Result<Acquire, ApiError> {
    app.own
        .check_boot("owner.boot_id", &req.owner.node, &req.owner.boot_id)?;
    Ok(Acquire {
        resource: req.resource,
        owner: req.owner,
        ttl_ms: req.ttl_ms.unwrap_or(DEFAULT_TTL_MS),
        slots: req.slots.unwrap_or(1),
        wait_ms: req.wait_ms.unwrap_or(0),
        lock_delay_ms: req
            .lock_delay_ms
            .unwrap_or(app.settings.default_lock_delay_ms),
        trusted: Trusted::NONE,
    })
}

/// Renews a lease; with a token, also checks it is the lease's.
pub async fn renew(app: &App, op: LeaseOp) -> Result<LeaseView, ApiError> {
    let lease = valid_lease(op.lease)?;
    Ok(app.engine.renew(lease, op.token).await?)
}

/// Releases a lease (idempotent); with a token, also checks it is the lease's.
pub async fn release(app: &App, op: LeaseOp) -> Result<ReleaseResponse, ApiError> {
    let lease = valid_lease(op.lease)?;
    let released = app.engine.release(lease, op.token).await?;
    Ok(ReleaseResponse {
        lease,
        resource: released.resource,
        already_released: released.already,
    })
}

/// A live lease, without renewing it.
pub async fn lease(app: &App, lease: LeaseId) -> Result<LeaseView, ApiError> {
    let lease = valid_lease(lease)?;
    app.engine.lease(lease).await?.ok_or_else(|| {
        ApiError::from(ErrorBody {
            lease: Some(lease),
            ..ErrorBody::new(
                ErrorCode::NotHolder,
                format!("lease {lease} is not live (released, expired, or never granted)"),
            )
        })
    })
}

/// One page of the held or awaited resources, sorted by name; `next` names the `after` of the
/// following page. Paged so that no listing holds the table for more than one pass over the
/// names (0.155 s at a million locks), or, with `node`, over that node's leases.
pub async fn locks(app: &App, q: LocksQuery) -> Result<LocksResponse, ApiError> {
    let limit = page_limit(q.limit, LOCKS_DEFAULT_LIMIT, LOCKS_MAX_LIMIT)?;
    let (locks, more) = app
        .engine
        .resources_page(
            q.prefix.as_deref().unwrap_or(""),
            q.after.as_deref(),
            limit,
            q.node.as_deref(),
        )
        .await?;
    let next = more
        .then(|| locks.last().map(|l| l.resource.clone()))
        .flatten();
    Ok(LocksResponse {
        server_time_ms: app.engine.clock().now().wall_ms,
        locks,
        next,
    })
}

/// One resource, FREE when nobody holds it.
pub async fn lock(app: &App, resource: &str) -> Result<LockResponse, ApiError> {
    validate_resource(resource)?;
    Ok(LockResponse {
        server_time_ms: app.engine.clock().now().wall_ms,
        lock: app.engine.resource(resource).await?,
    })
}

/// Whether a token is the token of a live lease on the resource.
pub async fn check_fence(
    app: &App,
    req: FenceCheckRequest,
) -> Result<FenceCheckResponse, ApiError> {
    let holder = app.engine.check_fence(&req.resource, req.token).await?;
    Ok(FenceCheckResponse {
        resource: req.resource,
        holder,
    })
}

/// A node's liveness report. Who sends it is checked before anything is taken from it: its boot
/// id alone reclaims the node's older-boot leases; a connection whose client certificate names
/// a node reports only for that node. About this server's own node the server trusts its own
/// eyes first (see `crate::own_node`).
pub async fn liveness(
    app: &App,
    peer: &PeerIdentity,
    req: LivenessReport,
) -> Result<LivenessResponse, ApiError> {
    peer.may_act_as("node", &req.node)?;
    validate_reporter(&req.node, &req.boot_id, &req.reported_by)?;
    app.own.check_boot("boot_id", &req.node, &req.boot_id)?;
    let dead = req
        .dead
        .into_iter()
        .map(|d| DeadProcess {
            lease: d.lease,
            pid: d.pid,
            start_time: d.start_time,
        })
        .collect();
    let from = Vantage {
        node: &req.node,
        boot_id: &req.boot_id,
        pid_ns: req.pid_ns.as_deref(),
    };
    let (dead, alive) = app.own.vet_report(&app.engine, from, dead).await;
    let (reclaimed, refused) = app
        .engine
        .report_liveness(from, &req.reported_by, dead)
        .await?;
    Ok(LivenessResponse {
        reclaimed,
        refused: alive
            .into_iter()
            .chain(refused.iter().map(ErrorBody::from_report))
            .collect(),
    })
}

/// `lease` if it can name a lease (ids start at 1).
fn valid_lease(lease: LeaseId) -> Result<LeaseId, ApiError> {
    valid_id("lease", lease.0).map(LeaseId)
}
