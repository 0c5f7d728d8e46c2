//! The server's HTTP routes.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use locksmith_api::{HealthResponse, HealthStatus, StatusResponse};
use locksmith_auth::Permission;

use super::ops;
use crate::app::{App, Settings};
use crate::routing::{OpenApiDoc, Route};

/// The server's routes. `/healthz` and `/metrics` are for load balancers and Prometheus, which
/// usually send no token: anonymous unless `--metrics-auth`. The OpenAPI document describes the
/// API, not its data: anonymous.
pub(crate) fn routes(settings: &Settings) -> Vec<Route> {
    let probes = if settings.metrics_auth {
        Permission::Read
    } else {
        Permission::Anonymous
    };
    vec![
        Route::new(__path_health, probes, health),
        Route::new(__path_status, Permission::Read, status),
        Route::new(__path_metrics, probes, metrics),
        Route::new(__path_openapi, Permission::Anonymous, openapi),
    ]
}

/// Health: 200 while the server serves, 503 once storage has failed.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "server",
    responses(
        (status = 200, description = "Serving", body = HealthResponse),
        (status = 503, description = "Storage failed: restart the server", body = HealthResponse),
    )
)]
async fn health(State(app): State<App>) -> Response {
    let h = ops::health(&app);
    let status = match h.status {
        HealthStatus::Ok => StatusCode::OK,
        HealthStatus::Failed => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(h)).into_response()
}

/// The server's verdict on itself: ALL CLEAR, or each problem with its safe next step.
#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "server",
    responses((status = 200, description = "The report", body = StatusResponse))
)]
async fn status(State(app): State<App>) -> Json<StatusResponse> {
    Json(ops::status(&app).await)
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "server",
    responses((status = 200, description = "The text exposition format", content_type = "text/plain", body = String))
)]
async fn metrics(State(app): State<App>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        ops::metrics(&app).await,
    )
}

/// This document: the OpenAPI 3.1 description of every route.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "server",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object))
)]
async fn openapi(Extension(doc): Extension<OpenApiDoc>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], doc.0)
}
