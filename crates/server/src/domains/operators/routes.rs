//! The operators' HTTP routes: extract, call [`ops`](super::ops), answer.

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, Sse};
use axum::{Extension, Json};
use futures_util::stream::Stream;
use locksmith_api::{
    AuditQuery, AuditResponse, BreakRequest, BreakResponse, ErrorBody, HoldRequest, HoldsResponse,
    OperatorRequest,
};
use locksmith_auth::{Permission, Principal};
use locksmith_core::{HoldId, HoldView};

use super::events::{self, EventsQuery};
use super::ops;
use crate::app::App;
use crate::http::extract::{self, JsonBody, OptionalJson};
use crate::request::ApiError;
use crate::routing::Route;

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The operators' routes.
pub(crate) fn routes() -> Vec<Route> {
    vec![
        Route::new(__path_holds, Permission::Read, holds),
        Route::new(__path_place_hold, Permission::Operate, place_hold),
        Route::new(__path_ack_hold, Permission::Operate, ack_hold),
        Route::new(__path_lift_hold, Permission::Operate, lift_hold),
        Route::new(__path_break_lock, Permission::Operate, break_lock),
        Route::new(__path_audit, Permission::Read, audit),
        Route::new(__path_events, Permission::Read, events),
    ]
}

/// List every hold, active or pending acknowledgement.
#[utoipa::path(
    get,
    path = "/v1/holds",
    tag = "operators",
    responses((status = 200, description = "Every hold", body = HoldsResponse))
)]
async fn holds(State(app): State<App>) -> ApiResult<HoldsResponse> {
    Ok(Json(ops::holds(&app).await?))
}

/// Place a hold: freeze a resource (no new grants) for a while, optionally only once a second
/// operator acknowledges it.
#[utoipa::path(
    post,
    path = "/v1/holds",
    tag = "operators",
    request_body = HoldRequest,
    responses((status = 200, description = "The hold placed", body = HoldView))
)]
async fn place_hold(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    JsonBody(req): JsonBody<HoldRequest>,
) -> ApiResult<HoldView> {
    Ok(Json(ops::place_hold(&app, &who, req).await?))
}

/// Acknowledge a hold (a different operator than the one who placed it): it takes effect.
#[utoipa::path(
    post,
    path = "/v1/holds/{id}/ack",
    tag = "operators",
    params(("id" = u64, Path, description = "The hold id")),
    request_body(content = Option<OperatorRequest>, description = "Optional: the operator, with `--auth off` only"),
    responses(
        (status = 200, description = "The hold, now in force", body = HoldView),
        (status = 409, description = "`same_operator`, `already_acknowledged` or \
            `ack_not_required`", body = ErrorBody),
    )
)]
async fn ack_hold(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<OperatorRequest>,
) -> ApiResult<HoldView> {
    let hold = HoldId(extract::path_id("hold", &id)?);
    Ok(Json(ops::ack_hold(&app, &who, hold, &req.operator).await?))
}

/// Lift a hold early.
#[utoipa::path(
    post,
    path = "/v1/holds/{id}/lift",
    tag = "operators",
    params(("id" = u64, Path, description = "The hold id")),
    request_body(content = Option<OperatorRequest>, description = "Optional: the operator, with `--auth off` only"),
    responses(
        (status = 200, description = "The hold lifted", body = HoldView),
        (status = 404, description = "`hold_not_found`", body = ErrorBody),
    )
)]
async fn lift_hold(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<OperatorRequest>,
) -> ApiResult<HoldView> {
    let hold = HoldId(extract::path_id("hold", &id)?);
    Ok(Json(ops::lift_hold(&app, &who, hold, &req.operator).await?))
}

/// Break a lock: revoke its leases (or one), advance the fence past their tokens, and freeze
/// the resource (30 s by default) so nothing re-grabs it mid-operation.
#[utoipa::path(
    post,
    path = "/v1/break",
    tag = "operators",
    request_body = BreakRequest,
    responses(
        (status = 200, description = "Broken", body = BreakResponse),
        (status = 409, description = "`not_held`", body = ErrorBody),
    )
)]
async fn break_lock(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    JsonBody(req): JsonBody<BreakRequest>,
) -> ApiResult<BreakResponse> {
    Ok(Json(ops::break_lock(&app, &who, req).await?))
}

/// Query the audit trail: durable records of every grant, end, hold and break, oldest first.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "operators",
    params(AuditQuery),
    responses((status = 200, description = "The matching records", body = AuditResponse))
)]
async fn audit(
    State(app): State<App>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<AuditResponse> {
    Ok(Json(ops::audit(&app, extract::query(query)?).await?))
}

/// Follow the audit trail live: each durable record as a server-sent event (`event:` its kind,
/// `id:` its sequence number, `data:` the record as JSON).
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "operators",
    params(EventsQuery),
    responses((status = 200, description = "The event stream", content_type = "text/event-stream", body = String))
)]
async fn events(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    Ok(events::stream(&app, who, extract::query(query)?))
}
