//! The HTTP/JSON surface under `/v1`: routing, body parsing and error mapping. Handlers are thin:
//! parse, call the engine, map the answer.

mod error;
mod events;
pub(crate) mod extract;
mod ops;
pub(crate) mod routes;
mod serve;

pub use error::ApiError;
pub(crate) use serve::serve;

use std::time::Duration;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::{get, post};

use crate::engine::Engine;

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The engine.
    pub engine: Engine,
    /// The reaper's GC interval (status judges its heartbeat by it).
    pub gc_interval: Duration,
    /// Lock-delay for acquires that name none, ms.
    pub default_lock_delay_ms: u64,
    /// FleetLock's settings and runtime group sizes.
    pub fleetlock: crate::fleetlock::FleetLock,
    /// This server's node and boot id: claims about its own node are checked against them.
    pub(crate) own: std::sync::Arc<crate::NodeIdentity>,
}

impl FromRef<AppState> for Engine {
    fn from_ref(app: &AppState) -> Engine {
        app.engine.clone()
    }
}

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The `/v1` router plus `/healthz` and `/metrics`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(routes::health))
        .route("/metrics", get(ops::metrics))
        .route("/v1/status", get(ops::status))
        .route("/v1/holds", get(ops::holds).post(ops::place_hold))
        .route("/v1/holds/{id}/ack", post(ops::ack_hold))
        .route("/v1/holds/{id}/lift", post(ops::lift_hold))
        .route("/v1/break", post(ops::break_lock))
        .route("/v1/liveness", post(ops::liveness))
        .route("/v1/audit", get(ops::audit))
        .route("/v1/events", get(events::stream))
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
        .merge(crate::fleetlock::router(&state.fleetlock))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panic_response,
        ))
        .with_state(state)
}
