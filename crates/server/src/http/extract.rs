//! A JSON body extractor whose every failure is an [`ApiError`] with a stable code.
//!
//! Unlike `axum::Json` it does not insist on a `Content-Type` header (curl users and some
//! agents omit it) and it reports serde's precise reason ("missing field `owner`",
//! "unknown field `ttl`") in the message.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use locksmith_api::{ErrorBody, ErrorCode};
use serde::de::DeserializeOwned;

use crate::request::{ApiError, decode};

/// A JSON request body. An empty body parses as `T::default()` only through [`OptionalJson`].
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// A JSON body that may be absent (empty body → `T::default()`).
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        let too_large = e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE;
        ApiError::from(if too_large {
            ErrorBody::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "request body is larger than {} bytes",
                    crate::http::MAX_BODY_BYTES
                ),
            )
        } else {
            ErrorBody::new(
                ErrorCode::InvalidJson,
                format!("cannot read request body: {e}"),
            )
        })
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        decode(&bytes).map(JsonBody)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        decode(&bytes).map(OptionalJson)
    }
}

/// A parsed query string, or an `invalid_request` naming the query and serde's reason.
pub fn query<T>(
    parsed: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    parsed
        .map(|axum::extract::Query(q)| q)
        .map_err(|e| ApiError::from(ErrorBody::invalid("query", format!("is not valid: {e}"))))
}
