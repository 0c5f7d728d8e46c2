//! The tokens' HTTP routes (admin only).

use axum::extract::{Path, State};
use axum::{Extension, Json};
use locksmith_api::{CreateTokenRequest, CreatedToken, ErrorBody, TokensResponse};
use locksmith_auth::{Permission, Principal, TokenView};

use super::ops;
use crate::app::App;
use crate::http::extract::JsonBody;
use crate::request::ApiError;
use crate::routing::Route;

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The tokens' routes.
pub(crate) fn routes() -> Vec<Route> {
    vec![
        Route::new(__path_create, Permission::Admin, create),
        Route::new(__path_list, Permission::Admin, list),
        Route::new(__path_revoke, Permission::Admin, revoke),
    ]
}

/// Make a token. The answer carries its secret, this once: the server keeps only its hash.
#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "tokens",
    request_body = CreateTokenRequest,
    responses(
        (status = 200, description = "Made, durably; `token` is the secret", body = CreatedToken),
        (status = 400, description = "`invalid_request` naming the field", body = ErrorBody),
    )
)]
async fn create(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    JsonBody(req): JsonBody<CreateTokenRequest>,
) -> ApiResult<CreatedToken> {
    Ok(Json(ops::create(&app, &who, req).await?))
}

/// List every token, revoked ones included (never a secret).
#[utoipa::path(
    get,
    path = "/v1/tokens",
    tag = "tokens",
    responses((status = 200, description = "Every token, by id", body = TokensResponse))
)]
async fn list(State(app): State<App>) -> ApiResult<TokensResponse> {
    Ok(Json(ops::list(&app).await?))
}

/// Revoke a token: it stops working at once; event streams and wire connections opened with it
/// close within a second.
#[utoipa::path(
    post,
    path = "/v1/tokens/{id}/revoke",
    tag = "tokens",
    params(("id" = String, Path, description = "The token id (`tok-3`)")),
    responses(
        (status = 200, description = "Revoked, durably", body = TokenView),
        (status = 404, description = "`token_not_found`", body = ErrorBody),
        (status = 409, description = "`already_revoked`", body = ErrorBody),
    )
)]
async fn revoke(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<TokenView> {
    Ok(Json(ops::revoke(&app, &who, &id).await?))
}
