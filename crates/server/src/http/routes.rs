//! Route handlers.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use locksmith_api::{
    AcquireRequest, DEFAULT_TTL_MS, ErrorBody, ErrorCode, FenceCheckRequest, FenceCheckResponse,
    LOCKS_DEFAULT_LIMIT, LOCKS_MAX_LIMIT, LeaseOpRequest, LeaseView, LockResponse, LocksQuery,
    LocksResponse, ReleaseResponse,
};
use locksmith_core::{Acquire, LeaseId, validate_resource};

use super::extract::{self, JsonBody, OptionalJson};
use super::{ApiError, AppState};
use crate::clock::wall_ms;
use crate::engine::Engine;

type ApiResult<T> = Result<Json<T>, ApiError>;

pub async fn health(State(engine): State<Engine>) -> Response {
    let h = engine.health();
    let status = if h.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(h)).into_response()
}

pub async fn acquire(
    State(app): State<AppState>,
    JsonBody(req): JsonBody<AcquireRequest>,
) -> ApiResult<LeaseView> {
    let acquire = acquire_of(&app, req)?;
    Ok(Json(app.engine.acquire(acquire).await?))
}

/// A public acquire request as the table sees it, with the API's defaults filled in. Refused if
/// its owner claims this server's own node under another boot id: that would reclaim every
/// lease of the node as a ghost of a reboot that never happened (see `crate::own_node`).
pub(crate) fn acquire_of(app: &AppState, req: AcquireRequest) -> Result<Acquire, ApiError> {
    app.own
        .check_boot("owner.boot_id", &req.owner.node, &req.owner.boot_id)?;
    Ok(Acquire {
        resource: req.resource,
        owner: req.owner,
        ttl_ms: req.ttl_ms.unwrap_or(DEFAULT_TTL_MS),
        slots: req.slots.unwrap_or(1),
        wait_ms: req.wait_ms.unwrap_or(0),
        lock_delay_ms: req.lock_delay_ms.unwrap_or(app.default_lock_delay_ms),
        trusted: locksmith_core::Trusted::NONE,
    })
}

pub async fn renew(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<LeaseOpRequest>,
) -> ApiResult<LeaseView> {
    let lease = parse_lease(&id)?;
    Ok(Json(engine.renew(lease, body.token).await?))
}

pub async fn release(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<LeaseOpRequest>,
) -> ApiResult<ReleaseResponse> {
    let lease = parse_lease(&id)?;
    let released = engine.release(lease, body.token).await?;
    Ok(Json(ReleaseResponse {
        lease,
        resource: released.resource,
        already_released: released.already,
    }))
}

pub async fn get_lease(
    State(engine): State<Engine>,
    Path(id): Path<String>,
) -> ApiResult<LeaseView> {
    let lease = parse_lease(&id)?;
    // A read-only look: renewing with no token would extend it, so ask the table directly.
    engine.lease(lease).await?.map(Json).ok_or_else(|| {
        ApiError::from(ErrorBody {
            lease: Some(lease),
            ..ErrorBody::new(
                ErrorCode::NotHolder,
                format!("lease {lease} is not live (released, expired, or never granted)"),
            )
        })
    })
}

/// One page of the held or awaited resources (`?prefix=&after=&limit=&node=`), sorted by name;
/// `next` names the `after` of the following page. Paged so that no listing holds the table
/// for more than one pass over the names (0.155 s at a million locks), or, with `node`, over
/// that node's leases.
pub async fn locks(
    State(engine): State<Engine>,
    query: Result<Query<LocksQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<LocksResponse> {
    let q = extract::query(query)?;
    let limit = extract::page_limit(q.limit, LOCKS_DEFAULT_LIMIT, LOCKS_MAX_LIMIT)?;
    let (locks, more) = engine
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
    Ok(Json(LocksResponse {
        server_time_ms: wall_ms(),
        locks,
        next,
    }))
}

pub async fn lock(
    State(engine): State<Engine>,
    Path(resource): Path<String>,
) -> ApiResult<LockResponse> {
    validate_resource(&resource)
        .map_err(|e| ApiError::from(ErrorBody::invalid(&e.field, e.reason)))?;
    Ok(Json(LockResponse {
        server_time_ms: wall_ms(),
        lock: engine.resource(&resource).await?,
    }))
}

pub async fn check_fence(
    State(engine): State<Engine>,
    JsonBody(req): JsonBody<FenceCheckRequest>,
) -> ApiResult<FenceCheckResponse> {
    let holder = engine.check_fence(&req.resource, req.token).await?;
    Ok(Json(FenceCheckResponse {
        resource: req.resource,
        holder,
    }))
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::from(ErrorBody::new(
        ErrorCode::NotFound,
        format!(
            "no such endpoint: {}; the API lives under /v1 (see the README)",
            uri.path()
        ),
    ))
}

pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::from(ErrorBody::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    ))
}

pub(super) fn parse_lease(id: &str) -> Result<LeaseId, ApiError> {
    id.parse::<u64>()
        .ok()
        .and_then(|n| valid_lease(LeaseId(n)).ok())
        .ok_or_else(|| {
            ApiError::from(ErrorBody::invalid(
                "lease",
                format!("{id:?} is not a lease id (a positive integer)"),
            ))
        })
}

/// `lease` if it can name a lease (ids start at 1).
pub(crate) fn valid_lease(lease: LeaseId) -> Result<LeaseId, ApiError> {
    if lease.0 > 0 {
        Ok(lease)
    } else {
        Err(ApiError::from(ErrorBody::invalid(
            "lease",
            "0 is not a lease id (a positive integer)",
        )))
    }
}
