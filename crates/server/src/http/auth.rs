//! Authentication and authorization of HTTP requests: each route's [`Permission`] is checked
//! by a layer on that route, before its handler runs (see `crate::routing`).
//!
//! The bearer token comes from `Authorization: Bearer lsm_…`; the TLS peer's identity, when
//! mutual TLS gave one, from the request's extensions. A request that passes carries its
//! [`Principal`] in its extensions, for the handler (`Extension<Principal>`) to hand to its
//! domain's request functions, which check what it touches (prefixes, node) and name it in
//! the audit trail.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use locksmith_auth::{AuthError, Permission};

use crate::app::App;
use crate::request::{ApiError, forbidden, unauthenticated};
use crate::tls::PeerIdentity;

/// Authenticates the request, checks its principal has `permission`, and passes it on with the
/// principal in its extensions; else answers 401 or 403.
pub(super) async fn authorize(
    State((app, permission)): State<(App, Permission)>,
    mut req: Request,
    next: Next,
) -> Response {
    let principal = match bearer(&req)
        .and_then(|token| app.authenticate(token, req.extensions().get::<PeerIdentity>()))
    {
        Ok(principal) => principal,
        Err(refused) => return refused.into_response(),
    };
    if let Err(missing) = principal.allows(permission) {
        return forbidden(&missing).into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// The bearer token of `req`: `None` without an `Authorization` header, 401 for one that is
/// not `Bearer <token>`.
fn bearer(req: &Request) -> Result<Option<&str>, ApiError> {
    let Some(value) = req.headers().get(AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| unauthenticated(&AuthError::Malformed))?;
    let (scheme, token) = text.trim().split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthenticated(&AuthError::Malformed));
    }
    Ok(Some(token.trim()))
}
