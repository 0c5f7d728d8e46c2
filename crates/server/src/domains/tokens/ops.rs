//! The tokens' request functions.

use locksmith_api::{CreateTokenRequest, CreatedToken, ErrorBody, ErrorCode, TokensResponse};
use locksmith_auth::{CreateToken, Principal, TokenView};

use crate::app::App;
use crate::request::ApiError;

/// Makes a token; the answer is the only place its secret ever appears.
pub async fn create(
    app: &App,
    who: &Principal,
    req: CreateTokenRequest,
) -> Result<CreatedToken, ApiError> {
    let random = random_secret()?;
    let (record, secret) = app
        .engine_for(who)
        .create_token(
            CreateToken {
                name: req.name,
                role: req.role,
                node: req.node,
                prefixes: req.prefixes,
                ttl_ms: req.ttl_ms,
                created_by: who.name.clone(),
            },
            random,
        )
        .await?;
    tracing::info!(id = %record.id, name = %record.name, role = %record.role, by = %who.name,
        "token created");
    Ok(CreatedToken {
        id: record.id,
        name: record.name,
        role: record.role,
        node: record.node,
        prefixes: record.prefixes,
        token: secret.expose().to_owned(),
        created_at_ms: record.created_at_ms,
        created_by: record.created_by,
        expires_at_ms: record.expires_at_ms,
    })
}

/// Every token, revoked ones included (no secrets, no hashes).
pub async fn list(app: &App) -> Result<TokensResponse, ApiError> {
    Ok(TokensResponse {
        tokens: app.engine.token_list().await?,
    })
}

/// Revokes a token: it authenticates nobody from the answer on, and streams and connections
/// opened with it close within a second.
pub async fn revoke(app: &App, who: &Principal, id: &str) -> Result<TokenView, ApiError> {
    let record = app.engine_for(who).revoke_token(id).await?;
    tracing::info!(id = %record.id, name = %record.name, by = %who.name, "token revoked");
    Ok(record.view(app.engine.clock().now().wall_ms))
}

/// 32 bytes from the operating system's random source: a new token's secret.
pub(crate) fn random_secret() -> Result<[u8; 32], ApiError> {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|e| {
        ApiError::from(ErrorBody::new(
            ErrorCode::Internal,
            format!("the operating system's random source failed ({e}); no token was made"),
        ))
    })?;
    Ok(random)
}
