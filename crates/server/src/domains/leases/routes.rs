//! The leases' HTTP routes: extract, call [`ops`](super::ops), answer.

use axum::Json;
use axum::extract::{Path, Query, State};
use locksmith_api::frame::LeaseOp;
use locksmith_api::{
    AcquireRequest, ErrorBody, FenceCheckRequest, FenceCheckResponse, LeaseOpRequest, LeaseView,
    LivenessReport, LivenessResponse, LockResponse, LocksQuery, LocksResponse, ReleaseResponse,
};
use locksmith_core::LeaseId;

use super::ops;
use crate::app::App;
use crate::http::extract::{self, JsonBody, OptionalJson};
use crate::request::ApiError;
use crate::routing::Route;
use crate::tls::PeerIdentity;

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The leases' routes.
pub(crate) fn routes() -> Vec<Route> {
    vec![
        Route::new(__path_acquire, acquire),
        Route::new(__path_get_lease, get_lease),
        Route::new(__path_delete_lease, delete_lease),
        Route::new(__path_renew, renew),
        Route::new(__path_release, release),
        Route::new(__path_locks, locks),
        Route::new(__path_lock, lock),
        Route::new(__path_check_fence, check_fence),
        Route::new(__path_liveness, liveness),
    ]
}

/// Acquire a lock.
///
/// Waits in the resource's FIFO queue up to `wait_ms`; answers once the grant is durable. A
/// process that already holds the lease gets it back (`reacquired`). Closing the connection
/// while queued withdraws the request.
#[utoipa::path(
    post,
    path = "/v1/acquire",
    tag = "leases",
    request_body = AcquireRequest,
    responses(
        (status = 200, description = "Granted, durably", body = LeaseView),
        (status = 409, description = "`hot`, `frozen`, `lock_delay`, `slots_mismatch` or \
            `ttl_mismatch`", body = ErrorBody),
    )
)]
async fn acquire(
    State(app): State<App>,
    peer: PeerIdentity,
    JsonBody(req): JsonBody<AcquireRequest>,
) -> ApiResult<LeaseView> {
    Ok(Json(ops::acquire(&app, &peer, req).await?))
}

/// Look at a live lease, without renewing it.
#[utoipa::path(
    get,
    path = "/v1/leases/{id}",
    tag = "leases",
    params(("id" = u64, Path, description = "The lease id")),
    responses(
        (status = 200, description = "The lease", body = LeaseView),
        (status = 404, description = "`not_holder`: not live", body = ErrorBody),
    )
)]
async fn get_lease(State(app): State<App>, Path(id): Path<String>) -> ApiResult<LeaseView> {
    let lease = LeaseId(extract::path_id("lease", &id)?);
    Ok(Json(ops::lease(&app, lease).await?))
}

/// Release a lease (idempotent); the same as `POST /v1/leases/{id}/release`.
#[utoipa::path(
    delete,
    path = "/v1/leases/{id}",
    tag = "leases",
    params(("id" = u64, Path, description = "The lease id")),
    request_body(content = Option<LeaseOpRequest>, description = "Optional: the token, to check"),
    responses(
        (status = 200, description = "Released (or already released)", body = ReleaseResponse),
        (status = 409, description = "`stale_token`", body = ErrorBody),
    )
)]
async fn delete_lease(
    state: State<App>,
    id: Path<String>,
    body: OptionalJson<LeaseOpRequest>,
) -> ApiResult<ReleaseResponse> {
    release(state, id, body).await
}

/// Renew a lease: a heartbeat. With a token, also checks it is the lease's.
#[utoipa::path(
    post,
    path = "/v1/leases/{id}/renew",
    tag = "leases",
    params(("id" = u64, Path, description = "The lease id")),
    request_body(content = Option<LeaseOpRequest>, description = "Optional: the token, to check"),
    responses(
        (status = 200, description = "Renewed", body = LeaseView),
        (status = 410, description = "`lease_expired` or `broken`: stop writing", body = ErrorBody),
    )
)]
async fn renew(
    State(app): State<App>,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<LeaseOpRequest>,
) -> ApiResult<LeaseView> {
    Ok(Json(ops::renew(&app, lease_op(&id, body)?).await?))
}

/// Release a lease (idempotent). With a token, also checks it is the lease's.
#[utoipa::path(
    post,
    path = "/v1/leases/{id}/release",
    tag = "leases",
    params(("id" = u64, Path, description = "The lease id")),
    request_body(content = Option<LeaseOpRequest>, description = "Optional: the token, to check"),
    responses(
        (status = 200, description = "Released (or already released)", body = ReleaseResponse),
        (status = 409, description = "`stale_token`", body = ErrorBody),
    )
)]
async fn release(
    State(app): State<App>,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<LeaseOpRequest>,
) -> ApiResult<ReleaseResponse> {
    Ok(Json(ops::release(&app, lease_op(&id, body)?).await?))
}

/// List the held or awaited resources, one page at a time, sorted by name.
#[utoipa::path(
    get,
    path = "/v1/locks",
    tag = "leases",
    params(LocksQuery),
    responses((status = 200, description = "One page; `next` is the next page's `after`", body = LocksResponse))
)]
async fn locks(
    State(app): State<App>,
    query: Result<Query<LocksQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<LocksResponse> {
    Ok(Json(ops::locks(&app, extract::query(query)?).await?))
}

/// One resource: its state, holders, waiters and holds (FREE when nobody holds it).
#[utoipa::path(
    get,
    path = "/v1/locks/{*resource}",
    tag = "leases",
    params(("resource" = String, Path, description = "The resource; may contain `/`")),
    responses((status = 200, description = "The resource", body = LockResponse))
)]
async fn lock(State(app): State<App>, Path(resource): Path<String>) -> ApiResult<LockResponse> {
    Ok(Json(ops::lock(&app, &resource).await?))
}

/// Check a fencing token: is it the token of a live lease on the resource?
#[utoipa::path(
    post,
    path = "/v1/fence/check",
    tag = "leases",
    request_body = FenceCheckRequest,
    responses(
        (status = 200, description = "Valid: the holder it belongs to", body = FenceCheckResponse),
        (status = 409, description = "`stale_token`: the writer must not write", body = ErrorBody),
    )
)]
async fn check_fence(
    State(app): State<App>,
    JsonBody(req): JsonBody<FenceCheckRequest>,
) -> ApiResult<FenceCheckResponse> {
    Ok(Json(ops::check_fence(&app, req).await?))
}

/// Report a node's dead holders (and its current boot id: leases of older boots end).
#[utoipa::path(
    post,
    path = "/v1/liveness",
    tag = "leases",
    request_body = LivenessReport,
    responses((status = 200, description = "What was reclaimed, and each entry refused", body = LivenessResponse))
)]
async fn liveness(
    State(app): State<App>,
    peer: PeerIdentity,
    JsonBody(req): JsonBody<LivenessReport>,
) -> ApiResult<LivenessResponse> {
    Ok(Json(ops::liveness(&app, &peer, req).await?))
}

/// A renew or release of the lease `id` names (from the URL path), with the body's token.
fn lease_op(id: &str, body: LeaseOpRequest) -> Result<LeaseOp, ApiError> {
    Ok(LeaseOp {
        lease: LeaseId(extract::path_id("lease", id)?),
        token: body.token,
    })
}
