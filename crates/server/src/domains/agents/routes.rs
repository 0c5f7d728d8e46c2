//! The agents' and the fleet's HTTP routes (`/v1/agents/{node}/…`, `/v1/fleet`,
//! `/v1/configs/{name}/shadow`).

use std::convert::Infallible;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::response::sse::{Event, Sse};
use axum::{Extension, Json};
use futures_util::stream::Stream;
use locksmith_api::ErrorBody;
use locksmith_api::agents::{
    AgentReport, AgentView, FleetResponse, RegisterAgentRequest, ShadowRequest, ShadowResponse,
};
use locksmith_auth::{Permission, Principal};
use serde::Deserialize;

use super::{ops, stream};
use crate::app::{App, Settings};
use crate::http::extract::{self, JsonBody};
use crate::request::ApiError;
use crate::routing::Route;

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The agents' routes.
pub(crate) fn routes(settings: &Settings) -> Vec<Route> {
    // A shadow report carries a diff, which may be as large as a config.
    let limit = crate::domains::configs::routes::body_limit(settings.max_config_bytes);
    vec![
        Route::new(__path_register, Permission::Report, register),
        Route::new(__path_heartbeat, Permission::Report, heartbeat),
        Route::new(__path_desired, Permission::Read, desired),
        Route::new(__path_report, Permission::Report, report)
            .map_handler(|h| h.layer(DefaultBodyLimit::max(limit))),
        Route::new(__path_shadow, Permission::Operate, shadow),
        Route::new(__path_fleet, Permission::Read, fleet),
        Route::new(__path_show, Permission::Read, show),
    ]
}

/// `?selector=k=v,k2=v2`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FleetQuery {
    /// Label selector: every `k=v` pair must match; empty: every agent.
    #[serde(default)]
    pub selector: String,
}

/// Register an agent (again: a restart, a reboot, new labels or configs replace the
/// registration). A node token registers only its own node.
#[utoipa::path(
    post,
    path = "/v1/agents/{node}/register",
    tag = "agents",
    params(("node" = String, Path, description = "The node")),
    request_body = RegisterAgentRequest,
    responses(
        (status = 200, description = "Registered, durably", body = AgentView),
        (status = 400, description = "`invalid_request` (node, labels, configs, boot_id, version)", body = ErrorBody),
        (status = 403, description = "`forbidden`: a token bound to another node", body = ErrorBody),
    )
)]
async fn register(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(node): Path<String>,
    JsonBody(req): JsonBody<RegisterAgentRequest>,
) -> ApiResult<AgentView> {
    Ok(Json(ops::register(&app, &who, &node, req).await?))
}

/// The agent is alive (last seen, in memory only: a heartbeat writes nothing).
#[utoipa::path(
    post,
    path = "/v1/agents/{node}/heartbeat",
    tag = "agents",
    params(("node" = String, Path, description = "The node")),
    responses(
        (status = 200, description = "The agent", body = AgentView),
        (status = 403, description = "`forbidden`: a token bound to another node", body = ErrorBody),
        (status = 404, description = "`agent_not_found`: register first", body = ErrorBody),
    )
)]
async fn heartbeat(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(node): Path<String>,
) -> ApiResult<AgentView> {
    Ok(Json(ops::heartbeat(&app, &who, &node).await?))
}

/// The node's desired revisions as server-sent events (`event: desired`, data a
/// `DesiredRevision`): one per registered config on connect, then one per change; keep-alive
/// comments every 15 s. The node is online while it is open.
#[utoipa::path(
    get,
    path = "/v1/agents/{node}/desired",
    tag = "agents",
    params(("node" = String, Path, description = "The node")),
    responses(
        (status = 200, description = "The stream", content_type = "text/event-stream", body = String),
        (status = 403, description = "`forbidden`: a token bound to another node", body = ErrorBody),
        (status = 404, description = "`agent_not_found`: register first", body = ErrorBody),
    )
)]
async fn desired(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(node): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    ops::may_act_for(&who, &node)?;
    stream::open(&app, who, node).await
}

/// What happened to one config on the node (applied, failed, refused, deferred, shadow-ok,
/// shadow-failed). Stored durably as its last report; audited when its state changes.
#[utoipa::path(
    post,
    path = "/v1/agents/{node}/reports",
    tag = "agents",
    params(("node" = String, Path, description = "The node")),
    request_body = AgentReport,
    responses(
        (status = 200, description = "Stored, durably", body = AgentView),
        (status = 400, description = "`invalid_request`: not a config the node registered", body = ErrorBody),
        (status = 403, description = "`forbidden`: a token bound to another node", body = ErrorBody),
        (status = 404, description = "`agent_not_found`: register first", body = ErrorBody),
    )
)]
async fn report(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(node): Path<String>,
    JsonBody(req): JsonBody<AgentReport>,
) -> ApiResult<AgentView> {
    Ok(Json(ops::report(&app, &who, &node, req).await?))
}

/// Send a revision (usually a draft) to some of the config's agents as a shadow: each
/// validates it and reports the diff it would make, and activates nothing. Ends when another
/// revision becomes current.
#[utoipa::path(
    post,
    path = "/v1/configs/{name}/shadow",
    tag = "agents",
    params(("name" = String, Path, description = "The config (`/` written `%2F`)")),
    request_body = ShadowRequest,
    responses(
        (status = 200, description = "Sent", body = ShadowResponse),
        (status = 400, description = "`invalid_request` (selector, nodes; a node that does not apply the config)", body = ErrorBody),
        (status = 404, description = "`config_not_found`, `revision_not_found` or `agent_not_found`", body = ErrorBody),
    )
)]
async fn shadow(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<ShadowRequest>,
) -> ApiResult<ShadowResponse> {
    Ok(Json(ops::shadow(&app, &who, &name, req).await?))
}

/// The fleet: every registered agent whose labels match, with what it runs and reported. A
/// node token sees only its own node.
#[utoipa::path(
    get,
    path = "/v1/fleet",
    tag = "agents",
    params(FleetQuery),
    responses(
        (status = 200, description = "The agents, by node", body = FleetResponse),
        (status = 400, description = "`invalid_request`: the selector", body = ErrorBody),
    )
)]
async fn fleet(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    query: Result<Query<FleetQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<FleetResponse> {
    let q = extract::query(query)?;
    Ok(Json(ops::fleet(&app, &who, &q.selector).await?))
}

/// One agent.
#[utoipa::path(
    get,
    path = "/v1/fleet/{node}",
    tag = "agents",
    params(("node" = String, Path, description = "The node")),
    responses(
        (status = 200, description = "The agent", body = AgentView),
        (status = 403, description = "`forbidden`: a token bound to another node", body = ErrorBody),
        (status = 404, description = "`agent_not_found`", body = ErrorBody),
    )
)]
async fn show(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(node): Path<String>,
) -> ApiResult<AgentView> {
    Ok(Json(ops::show(&app, &who, &node).await?))
}
