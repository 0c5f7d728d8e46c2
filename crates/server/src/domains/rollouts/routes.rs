//! The rollouts' HTTP routes (`/v1/rollouts…`).

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::{Extension, Json};
use futures_util::stream::Stream;
use locksmith_api::ErrorBody;
use locksmith_api::rollouts::{
    AbortRolloutRequest, RolloutList, RolloutPlan, RolloutView, StartRolloutRequest,
};
use locksmith_auth::{Permission, Principal};
use serde::Deserialize;

use super::ops::{self, Act};
use super::stream;
use crate::app::App;
use crate::http::extract::JsonBody;
use crate::request::ApiError;
use crate::routing::Route;

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The rollouts' routes.
pub(crate) fn routes() -> Vec<Route> {
    vec![
        Route::new(__path_start, Permission::Operate, start),
        Route::new(__path_plan, Permission::Read, plan),
        Route::new(__path_list, Permission::Read, list),
        Route::new(__path_show, Permission::Read, show),
        Route::new(__path_events, Permission::Read, events),
        Route::new(__path_approve, Permission::Operate, approve),
        Route::new(__path_pause, Permission::Operate, pause),
        Route::new(__path_resume, Permission::Operate, resume),
        Route::new(__path_abort, Permission::Operate, abort),
        Route::new(__path_cancel, Permission::Operate, cancel),
    ]
}

/// `?config=NAME&all=true`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this config's rollouts.
    #[serde(default)]
    pub config: Option<String>,
    /// Ended and cancelled ones too.
    #[serde(default)]
    pub all: bool,
}

/// Queue a rollout of a config's revision; it starts at once when nothing else of the config
/// runs and its lock is free. It holds `configs/NAME` for its whole run.
#[utoipa::path(
    post,
    path = "/v1/rollouts",
    tag = "rollouts",
    request_body = StartRolloutRequest,
    responses(
        (status = 201, description = "Queued or started, durably", body = RolloutView),
        (status = 400, description = "`invalid_rollout`: a flag's value (named) or flags that cannot run together", body = ErrorBody),
        (status = 403, description = "`forbidden`: the token may not hold configs/NAME", body = ErrorBody),
        (status = 404, description = "`config_not_found`, `revision_not_found`", body = ErrorBody),
        (status = 409, description = "`no_endpoints`: the selector matches nothing; `gates_unavailable`: a prom: gate without --prometheus-url", body = ErrorBody),
    )
)]
async fn start(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    JsonBody(req): JsonBody<StartRolloutRequest>,
) -> Result<(StatusCode, Json<RolloutView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(ops::start(&app, &who, req).await?),
    ))
}

/// A dry run: the waves with their endpoints, and the diff each endpoint would get. Nothing is
/// stored.
#[utoipa::path(
    post,
    path = "/v1/rollouts/plan",
    tag = "rollouts",
    request_body = StartRolloutRequest,
    responses(
        (status = 200, description = "The plan", body = RolloutPlan),
        (status = 400, description = "`invalid_rollout`", body = ErrorBody),
        (status = 404, description = "`config_not_found`, `revision_not_found`", body = ErrorBody),
        (status = 409, description = "`no_endpoints`", body = ErrorBody),
    )
)]
async fn plan(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    JsonBody(req): JsonBody<StartRolloutRequest>,
) -> ApiResult<RolloutPlan> {
    Ok(Json(ops::plan(&app, &who, req).await?))
}

/// Rollouts, newest first: running and queued ones (`all`: ended and cancelled too).
#[utoipa::path(
    get,
    path = "/v1/rollouts",
    tag = "rollouts",
    params(ListQuery),
    responses((status = 200, description = "The rollouts", body = RolloutList))
)]
async fn list(State(app): State<App>, Query(q): Query<ListQuery>) -> ApiResult<RolloutList> {
    Ok(Json(ops::list(&app, q.config.as_deref(), q.all).await?))
}

/// One rollout: its state, waves, every endpoint's part, latency and outcome.
#[utoipa::path(
    get,
    path = "/v1/rollouts/{id}",
    tag = "rollouts",
    params(("id" = String, Path, description = "The rollout (ro-N)")),
    responses(
        (status = 200, description = "The rollout", body = RolloutView),
        (status = 404, description = "`rollout_not_found`", body = ErrorBody),
    )
)]
async fn show(State(app): State<App>, Path(id): Path<String>) -> ApiResult<RolloutView> {
    Ok(Json(ops::get(&app, &id).await?))
}

/// The rollout as server-sent events (`event: rollout`, data a `RolloutView`): one now, then
/// one per change; the stream ends after the event that shows it ended.
#[utoipa::path(
    get,
    path = "/v1/rollouts/{id}/events",
    tag = "rollouts",
    params(("id" = String, Path, description = "The rollout (ro-N)")),
    responses(
        (status = 200, description = "The stream", content_type = "text/event-stream", body = String),
        (status = 404, description = "`rollout_not_found`", body = ErrorBody),
    )
)]
async fn events(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    stream::open(&app, who, id).await
}

/// Approve the hold point the rollout waits at. The starter's approval does not count; one
/// principal counts once.
#[utoipa::path(
    post,
    path = "/v1/rollouts/{id}/approve",
    tag = "rollouts",
    params(("id" = String, Path, description = "The rollout (ro-N)")),
    responses(
        (status = 200, description = "Counted, durably", body = RolloutView),
        (status = 404, description = "`rollout_not_found`", body = ErrorBody),
        (status = 409, description = "`rollout_refused`: by the starter, twice by one operator, or not at a hold point", body = ErrorBody),
    )
)]
async fn approve(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<RolloutView> {
    Ok(Json(ops::act(&app, &who, &id, Act::Approve).await?))
}

/// Pause the rollout where it is: nothing more is sent until it is resumed.
#[utoipa::path(
    post,
    path = "/v1/rollouts/{id}/pause",
    tag = "rollouts",
    params(("id" = String, Path, description = "The rollout (ro-N)")),
    responses(
        (status = 200, description = "Paused, durably", body = RolloutView),
        (status = 404, description = "`rollout_not_found`", body = ErrorBody),
        (status = 409, description = "`rollout_refused`: already paused, not started, ended", body = ErrorBody),
    )
)]
async fn pause(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<RolloutView> {
    Ok(Json(ops::act(&app, &who, &id, Act::Pause).await?))
}

/// Resume a paused rollout in the phase it paused in; its checks run again (nothing is passed
/// by resuming). After the lock was lost it takes the lock again first.
#[utoipa::path(
    post,
    path = "/v1/rollouts/{id}/resume",
    tag = "rollouts",
    params(("id" = String, Path, description = "The rollout (ro-N)")),
    responses(
        (status = 200, description = "Resumed, durably", body = RolloutView),
        (status = 404, description = "`rollout_not_found`", body = ErrorBody),
        (status = 409, description = "`rollout_refused`: not paused, or the lock is held by someone else", body = ErrorBody),
    )
)]
async fn resume(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<RolloutView> {
    Ok(Json(ops::act(&app, &who, &id, Act::Resume).await?))
}

/// End the rollout now. With `rollback`, every touched endpoint returns to its own
/// last-known-good; without, endpoints confirmed on the new revision stay and the others go
/// back. The outcome lists every endpoint's revision.
#[utoipa::path(
    post,
    path = "/v1/rollouts/{id}/abort",
    tag = "rollouts",
    params(("id" = String, Path, description = "The rollout (ro-N)")),
    request_body = AbortRolloutRequest,
    responses(
        (status = 200, description = "Aborted, durably", body = RolloutView),
        (status = 404, description = "`rollout_not_found`", body = ErrorBody),
        (status = 409, description = "`rollout_refused`: not started or ended", body = ErrorBody),
    )
)]
async fn abort(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<AbortRolloutRequest>,
) -> ApiResult<RolloutView> {
    Ok(Json(ops::abort(&app, &who, &id, req).await?))
}

/// Withdraw a queued rollout (one that has not started).
#[utoipa::path(
    post,
    path = "/v1/rollouts/{id}/cancel",
    tag = "rollouts",
    params(("id" = String, Path, description = "The rollout (ro-N)")),
    responses(
        (status = 200, description = "Cancelled, durably", body = RolloutView),
        (status = 404, description = "`rollout_not_found`", body = ErrorBody),
        (status = 409, description = "`rollout_refused`: it started", body = ErrorBody),
    )
)]
async fn cancel(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<RolloutView> {
    Ok(Json(ops::cancel(&app, &who, &id).await?))
}
