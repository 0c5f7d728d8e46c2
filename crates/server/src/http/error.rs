//! How an [`ApiError`] goes out over HTTP: its body as JSON, under the status its code maps to
//! (see `ErrorCode::http_status`) and nowhere else; and the answers to what no route serves.

use std::any::Any;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use locksmith_api::{ErrorBody, ErrorCode};

use crate::request::ApiError;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.error.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if self.0.error == ErrorCode::Unauthenticated {
            // RFC 6750: a 401 names the scheme it wants.
            let challenge = [(
                axum::http::header::WWW_AUTHENTICATE,
                "Bearer realm=\"locksmith\"",
            )];
            return (status, challenge, Json(*self.0)).into_response();
        }
        (status, Json(*self.0)).into_response()
    }
}

/// A caught panic becomes a JSON 500, never a dropped connection.
pub(super) fn panic_response(_err: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked; answering 500");
    ApiError::from(ErrorBody::new(
        ErrorCode::Internal,
        "internal error (a bug): the request may not have been applied; check the server log",
    ))
    .into_response()
}

/// A path no route serves.
pub(super) async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::from(ErrorBody::new(
        ErrorCode::NotFound,
        format!(
            "no such endpoint: {}; the API lives under /v1 (see /v1/openapi.json)",
            uri.path()
        ),
    ))
}

/// A route's path with a method it does not serve.
pub(super) async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> ApiError {
    ApiError::from(ErrorBody::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    ))
}
