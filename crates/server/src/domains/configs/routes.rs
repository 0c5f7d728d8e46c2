//! The configs' HTTP routes (`/v1/configs`). A config's name is one path segment, each `/`
//! written `%2F`.

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::{Extension, Json};
use locksmith_api::ErrorBody;
use locksmith_api::configs::{
    ConfigsResponse, DiffResponse, HistoryResponse, PromoteConfigRequest, RevisionView,
    RollbackConfigRequest, SchemaView, SetSchemaRequest, ValidateConfigRequest,
    ValidateConfigResponse, WriteConfigRequest,
};
use locksmith_auth::{Permission, Principal};
use serde::Deserialize;

use super::ops;
use crate::app::{App, Settings};
use crate::http::extract::{self, JsonBody, path_id};
use crate::request::ApiError;
use crate::routing::Route;

type ApiResult<T> = Result<Json<T>, ApiError>;
type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// The largest body a route carrying content accepts: the content at `--max-config-bytes`
/// in the costliest JSON spelling (a control byte escaped as `\u00XX` is 6 bytes; base64 is
/// 4/3), plus room for the other fields. So content the server would store is never refused as
/// too large a body: larger content gets `config_too_large`, which names the limit.
pub fn body_limit(max_config_bytes: usize) -> usize {
    max_config_bytes
        .saturating_mul(6)
        .saturating_add(crate::http::MAX_BODY_BYTES)
}

/// The configs' routes.
pub(crate) fn routes(settings: &Settings) -> Vec<Route> {
    let limit = body_limit(settings.max_config_bytes);
    let content = move |r: Route| r.map_handler(|h| h.layer(DefaultBodyLimit::max(limit)));
    vec![
        Route::new(__path_list, Permission::Read, list),
        Route::new(__path_get, Permission::Read, get),
        content(Route::new(__path_put, Permission::Lease, put)),
        Route::new(__path_history, Permission::Read, history),
        Route::new(__path_revision, Permission::Read, revision),
        Route::new(__path_diff, Permission::Read, diff),
        content(Route::new(__path_validate, Permission::Read, validate)),
        Route::new(__path_promote, Permission::Lease, promote),
        Route::new(__path_rollback, Permission::Lease, rollback),
        Route::new(__path_schema, Permission::Read, schema),
        content(Route::new(
            __path_set_schema,
            Permission::Operate,
            set_schema,
        )),
    ]
}

/// `?stamp=true`: the provenance line first (formats with comments).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StampQuery {
    /// Put the provenance comment line first (`# locksmith: NAME rev N by …`); ignored for
    /// JSON and raw, which have no comments.
    #[serde(default)]
    pub stamp: bool,
}

/// `?from=A&to=B`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// The older revision.
    pub from: u64,
    /// The newer revision.
    pub to: u64,
}

/// Every config: its head and current revision's metadata.
#[utoipa::path(
    get,
    path = "/v1/configs",
    tag = "configs",
    responses((status = 200, description = "Every config, by name", body = ConfigsResponse))
)]
async fn list(State(app): State<App>) -> ApiResult<ConfigsResponse> {
    Ok(Json(ops::list(&app).await?))
}

/// A config's current revision, with its content.
#[utoipa::path(
    get,
    path = "/v1/configs/{name}",
    tag = "configs",
    params(("name" = String, Path, description = "The config (`/` written `%2F`)"), StampQuery),
    responses(
        (status = 200, description = "The current revision", body = RevisionView),
        (status = 404, description = "`config_not_found`, or `revision_not_found` (no current revision yet)", body = ErrorBody),
    )
)]
async fn get(
    State(app): State<App>,
    Path(name): Path<String>,
    query: QueryResult<StampQuery>,
) -> ApiResult<RevisionView> {
    let q = extract::query(query)?;
    Ok(Json(ops::get(&app, &name, None, q.stamp).await?))
}

/// Write a revision (or a draft) under the lease on `configs/NAME` and its token: it lands only
/// if that token is the current holder's when it commits.
#[utoipa::path(
    put,
    path = "/v1/configs/{name}",
    tag = "configs",
    params(("name" = String, Path, description = "The config (`/` written `%2F`)")),
    request_body = WriteConfigRequest,
    responses(
        (status = 200, description = "Stored, durably", body = RevisionView),
        (status = 400, description = "`invalid_request` (name, format, message, content)", body = ErrorBody),
        (status = 403, description = "`forbidden`: outside the token's prefixes", body = ErrorBody),
        (status = 404, description = "`not_holder`: no such lease", body = ErrorBody),
        (status = 409, description = "`stale_token`: not the current holder's token", body = ErrorBody),
        (status = 410, description = "`broken` or `lease_expired`: the lease has ended", body = ErrorBody),
        (status = 413, description = "`config_too_large`", body = ErrorBody),
        (status = 422, description = "`invalid_config`: `parse_error` or `violations`", body = ErrorBody),
    )
)]
async fn put(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<WriteConfigRequest>,
) -> ApiResult<RevisionView> {
    Ok(Json(ops::put(&app, &who, &name, req).await?))
}

/// A config's history: its head and every revision's metadata, oldest first.
#[utoipa::path(
    get,
    path = "/v1/configs/{name}/revisions",
    tag = "configs",
    params(("name" = String, Path, description = "The config (`/` written `%2F`)")),
    responses(
        (status = 200, description = "The history", body = HistoryResponse),
        (status = 404, description = "`config_not_found`", body = ErrorBody),
    )
)]
async fn history(State(app): State<App>, Path(name): Path<String>) -> ApiResult<HistoryResponse> {
    Ok(Json(ops::history(&app, &name).await?))
}

/// One revision (a draft too), with its content.
#[utoipa::path(
    get,
    path = "/v1/configs/{name}/revisions/{rev}",
    tag = "configs",
    params(
        ("name" = String, Path, description = "The config (`/` written `%2F`)"),
        ("rev" = u64, Path, description = "The revision number"),
        StampQuery,
    ),
    responses(
        (status = 200, description = "The revision", body = RevisionView),
        (status = 404, description = "`config_not_found` or `revision_not_found`", body = ErrorBody),
    )
)]
async fn revision(
    State(app): State<App>,
    Path((name, rev)): Path<(String, String)>,
    query: QueryResult<StampQuery>,
) -> ApiResult<RevisionView> {
    let rev = path_id("rev", &rev)?;
    let q = extract::query(query)?;
    Ok(Json(ops::get(&app, &name, Some(rev), q.stamp).await?))
}

/// A unified diff of two revisions.
#[utoipa::path(
    get,
    path = "/v1/configs/{name}/diff",
    tag = "configs",
    params(("name" = String, Path, description = "The config (`/` written `%2F`)"), DiffQuery),
    responses(
        (status = 200, description = "The diff (empty when equal)", body = DiffResponse),
        (status = 404, description = "`config_not_found` or `revision_not_found`", body = ErrorBody),
    )
)]
async fn diff(
    State(app): State<App>,
    Path(name): Path<String>,
    query: QueryResult<DiffQuery>,
) -> ApiResult<DiffResponse> {
    let q = extract::query(query)?;
    Ok(Json(ops::diff(&app, &name, q.from, q.to).await?))
}

/// Run a write's checks (name, size, format, parse, schema) without writing.
#[utoipa::path(
    post,
    path = "/v1/configs/{name}/validate",
    tag = "configs",
    params(("name" = String, Path, description = "The config (`/` written `%2F`)")),
    request_body = ValidateConfigRequest,
    responses(
        (status = 200, description = "It would be accepted", body = ValidateConfigResponse),
        (status = 413, description = "`config_too_large`", body = ErrorBody),
        (status = 422, description = "`invalid_config`: `parse_error` or `violations`", body = ErrorBody),
    )
)]
async fn validate(
    State(app): State<App>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<ValidateConfigRequest>,
) -> ApiResult<ValidateConfigResponse> {
    Ok(Json(ops::validate(&app, &name, req).await?))
}

/// Make a draft current (a new revision with its content, re-checked against the schema),
/// under the lease on `configs/NAME` and its token.
#[utoipa::path(
    post,
    path = "/v1/configs/{name}/promote",
    tag = "configs",
    params(("name" = String, Path, description = "The config (`/` written `%2F`)")),
    request_body = PromoteConfigRequest,
    responses(
        (status = 200, description = "Promoted, durably", body = RevisionView),
        (status = 404, description = "`config_not_found`, `revision_not_found` or `not_holder`", body = ErrorBody),
        (status = 409, description = "`not_a_draft` or `stale_token`", body = ErrorBody),
        (status = 410, description = "`broken` or `lease_expired`", body = ErrorBody),
        (status = 422, description = "`invalid_config`: fails the schema in force", body = ErrorBody),
    )
)]
async fn promote(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<PromoteConfigRequest>,
) -> ApiResult<RevisionView> {
    Ok(Json(ops::promote(&app, &who, &name, req).await?))
}

/// Make an older revision's content current again (a new revision), under the lease on
/// `configs/NAME` and its token.
#[utoipa::path(
    post,
    path = "/v1/configs/{name}/rollback",
    tag = "configs",
    params(("name" = String, Path, description = "The config (`/` written `%2F`)")),
    request_body = RollbackConfigRequest,
    responses(
        (status = 200, description = "Rolled back, durably", body = RevisionView),
        (status = 400, description = "`invalid_request`: the target is a draft", body = ErrorBody),
        (status = 404, description = "`config_not_found`, `revision_not_found` or `not_holder`", body = ErrorBody),
        (status = 409, description = "`stale_token`", body = ErrorBody),
        (status = 410, description = "`broken` or `lease_expired`", body = ErrorBody),
        (status = 422, description = "`invalid_config`: fails the schema in force", body = ErrorBody),
    )
)]
async fn rollback(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<RollbackConfigRequest>,
) -> ApiResult<RevisionView> {
    Ok(Json(ops::rollback(&app, &who, &name, req).await?))
}

/// The JSON Schema in force for a config.
#[utoipa::path(
    get,
    path = "/v1/configs/{name}/schema",
    tag = "configs",
    params(("name" = String, Path, description = "The config (`/` written `%2F`)")),
    responses(
        (status = 200, description = "The schema", body = SchemaView),
        (status = 404, description = "`config_not_found`: no such config, or it has no schema", body = ErrorBody),
    )
)]
async fn schema(State(app): State<App>, Path(name): Path<String>) -> ApiResult<SchemaView> {
    Ok(Json(ops::schema(&app, &name).await?))
}

/// Set a config's JSON Schema: every later revision must pass it (refused, with the
/// violations, if the current revision does not).
#[utoipa::path(
    put,
    path = "/v1/configs/{name}/schema",
    tag = "configs",
    params(("name" = String, Path, description = "The config (`/` written `%2F`)")),
    request_body = SetSchemaRequest,
    responses(
        (status = 200, description = "Set, durably", body = SchemaView),
        (status = 400, description = "`invalid_request`: the schema is not usable", body = ErrorBody),
        (status = 422, description = "`invalid_config`: the current revision fails it", body = ErrorBody),
    )
)]
async fn set_schema(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<SetSchemaRequest>,
) -> ApiResult<SchemaView> {
    Ok(Json(ops::set_schema(&app, &who, &name, req).await?))
}
