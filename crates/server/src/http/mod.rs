//! The HTTP/JSON surface under `/v1`: routing, body parsing and error mapping. Handlers are thin:
//! parse, call the engine, map the answer.

mod error;
mod extract;
mod routes;

pub use error::ApiError;

use axum::Router;
use axum::routing::{get, post};

use crate::engine::Engine;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The `/v1` router plus `/healthz`.
pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/healthz", get(routes::health))
        .route("/v1/acquire", post(routes::acquire))
        .route(
            "/v1/leases/{id}",
            get(routes::get_lease).delete(routes::release),
        )
        .route("/v1/leases/{id}/renew", post(routes::renew))
        .route("/v1/leases/{id}/release", post(routes::release))
        .route("/v1/locks", get(routes::locks))
        .route("/v1/locks/{*resource}", get(routes::lock))
        .route("/v1/fence/check", post(routes::check_fence))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panic_response,
        ))
        .with_state(engine)
}
