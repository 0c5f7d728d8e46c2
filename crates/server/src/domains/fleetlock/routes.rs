//! FleetLock's HTTP routes: the protocol endpoints under the configured prefix, and the
//! operator endpoints under `/v1/fleetlock`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use locksmith_api::{ErrorBody, ErrorCode};
use locksmith_auth::{Permission, Principal};
use serde::Deserialize;

use super::ops::{
    self, GroupView, GroupsView, LockReply, Refusal, RefusalBody, SlotRequest, UnlockReply,
};
use super::{ErrorKind, FleetLock, PROTOCOL_HEADER};
use crate::app::App;
use crate::request::ApiError;
use crate::routing::Route;

/// FleetLock's routes; the protocol endpoints under `fleetlock`'s prefix.
///
/// The protocol endpoints are anonymous: Zincati sends no credentials. They can only ever take
/// or give back a slot of a `reboot/<group>` semaphore (see `ops::SlotRequest`: a group name
/// is `^[a-zA-Z0-9.-]+$`, so the resource is always `reboot/` and one path segment) held by the
/// synthetic FleetLock owner of the id sent — never another resource, never another owner's
/// lease. The group administration routes need a token.
pub(crate) fn routes(fleetlock: &FleetLock) -> Vec<Route> {
    let prefix = fleetlock.prefix();
    let protocol = |route: Route, endpoint: &str| {
        route
            .at(format!("{prefix}{endpoint}"))
            .map_handler(|handler| handler.fallback(method_not_allowed))
    };
    vec![
        protocol(
            Route::new(__path_pre_reboot, Permission::Anonymous, pre_reboot),
            "/v1/pre-reboot",
        ),
        protocol(
            Route::new(__path_steady_state, Permission::Anonymous, steady_state),
            "/v1/steady-state",
        ),
        Route::new(__path_list_groups, Permission::Read, list_groups),
        Route::new(__path_get_group, Permission::Read, get_group),
        Route::new(__path_put_group, Permission::Operate, put_group),
    ]
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

#[derive(Debug, Deserialize)]
struct ProtocolRequest {
    client_params: ClientParams,
}

#[derive(Debug, Deserialize)]
struct ClientParams {
    id: String,
    group: String,
}

/// The protocol's request: the header must be there, the body well-formed.
fn parse(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<SlotRequest, Refusal> {
    let header = headers
        .get(PROTOCOL_HEADER)
        .map(|v| v.to_str().map(str::trim).unwrap_or_default());
    match header {
        Some(v) if v.eq_ignore_ascii_case("true") => {}
        Some(v) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::ProtocolError,
                format!("header `{PROTOCOL_HEADER}` must be `true` (got {v:?})"),
            ));
        }
        None => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::ProtocolError,
                format!("missing header `{PROTOCOL_HEADER}: true`"),
            ));
        }
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorKind::InvalidRequest,
                format!(
                    "request body is larger than {} bytes",
                    crate::http::MAX_BODY_BYTES
                ),
            )
        } else {
            Refusal::invalid(format!("cannot read the request body: {e}"))
        }
    })?;
    let req: ProtocolRequest = serde_json::from_slice(&body).map_err(|e| {
        Refusal::invalid(format!(
            "body must be {{\"client_params\":{{\"id\":\"…\",\"group\":\"…\"}}}}: {e}"
        ))
    })?;
    let ClientParams { id, group } = req.client_params;
    SlotRequest::new(id, group)
}

/// FleetLock pre-reboot: take a reboot slot in the client's group (recursive: the id that holds
/// one gets it back). Served under the `--fleetlock-prefix` (`/fleetlock` by default).
#[utoipa::path(
    post,
    path = "/fleetlock/v1/pre-reboot",
    tag = "fleetlock",
    params(("fleet-lock-protocol" = String, Header, description = "Must be `true`")),
    request_body(content = Object, description = "`{\"client_params\":{\"id\":…,\"group\":…}}`"),
    responses(
        (status = 200, description = "The slot is the client's", body = LockReply),
        (status = "default", description = "Refused: a FleetLock error", body = RefusalBody),
    )
)]
async fn pre_reboot(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<LockReply>, Refusal> {
    Ok(Json(ops::lock(&app, parse(&headers, body)?).await?))
}

/// FleetLock steady-state: give back the client's reboot slot, if it holds one. Served under
/// the `--fleetlock-prefix` (`/fleetlock` by default).
#[utoipa::path(
    post,
    path = "/fleetlock/v1/steady-state",
    tag = "fleetlock",
    params(("fleet-lock-protocol" = String, Header, description = "Must be `true`")),
    request_body(content = Object, description = "`{\"client_params\":{\"id\":…,\"group\":…}}`"),
    responses(
        (status = 200, description = "The client holds no slot now", body = UnlockReply),
        (status = "default", description = "Refused: a FleetLock error", body = RefusalBody),
    )
)]
async fn steady_state(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UnlockReply>, Refusal> {
    Ok(Json(ops::unlock(&app, parse(&headers, body)?).await?))
}

/// Any method but POST on a protocol endpoint.
async fn method_not_allowed(method: axum::http::Method) -> Refusal {
    Refusal::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::ProtocolError,
        format!("{method} is not allowed; FleetLock requests are POSTs"),
    )
}

/// List FleetLock's reboot groups: each with a size of its own or a holder.
#[utoipa::path(
    get,
    path = "/v1/fleetlock/groups",
    tag = "fleetlock",
    responses((status = 200, description = "The groups, by name", body = GroupsView))
)]
async fn list_groups(State(app): State<App>) -> Result<Json<GroupsView>, ApiError> {
    Ok(Json(ops::groups(&app).await?))
}

/// One reboot group: its size, where the size comes from, and its holders.
#[utoipa::path(
    get,
    path = "/v1/fleetlock/groups/{group}",
    tag = "fleetlock",
    params(("group" = String, Path, description = "The group")),
    responses((status = 200, description = "The group", body = GroupView))
)]
async fn get_group(
    State(app): State<App>,
    Path(group): Path<String>,
) -> Result<Json<GroupView>, ApiError> {
    Ok(Json(ops::group(&app, &group).await?))
}

/// `PUT /v1/fleetlock/groups/{group}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SetSlots {
    /// The group's size from now on.
    slots: u32,
}

/// Resize a reboot group from now on (until the server restarts: then the flags apply again).
#[utoipa::path(
    put,
    path = "/v1/fleetlock/groups/{group}",
    tag = "fleetlock",
    params(("group" = String, Path, description = "The group")),
    request_body = SetSlots,
    responses((status = 200, description = "The group, resized", body = GroupView))
)]
async fn put_group(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(group): Path<String>,
    body: Bytes,
) -> Result<Json<GroupView>, ApiError> {
    ops::checked_group(&group)?;
    let SetSlots { slots } = serde_json::from_slice(&body).map_err(|e| {
        ApiError::from(ErrorBody::new(
            ErrorCode::InvalidJson,
            format!("body must be {{\"slots\": N}}: {e}"),
        ))
    })?;
    Ok(Json(ops::set_slots(&app, &who, &group, slots).await?))
}
