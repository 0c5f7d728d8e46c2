//! A JSON body extractor whose every failure is an [`ApiError`] with a stable code.
//!
//! Unlike `axum::Json` it does not insist on a `Content-Type` header (curl users and some
//! agents omit it) and it reports serde's precise reason ("missing field `owner`",
//! "unknown field `ttl`") in the message.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use locksmith_api::{ErrorBody, ErrorCode};
use serde::de::DeserializeOwned;

use crate::request::{ApiError, decode, not_an_id};

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
                    "request body is too large (most routes take up to {} bytes; a config's \
                     routes take content up to --max-config-bytes)",
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

/// The id of a `what` (`lease`, `hold`) from a URL path segment: a positive integer, or
/// `invalid_request` on the field `what`, quoting the segment as sent.
pub fn path_id(what: &str, segment: &str) -> Result<u64, ApiError> {
    segment
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| not_an_id(what, format!("{segment:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::valid_id;

    fn refusal(r: Result<u64, ApiError>) -> (Option<String>, String) {
        let body = r.expect_err("refused").0;
        (body.field, body.message)
    }

    /// A path segment is quoted as sent; an id from a decoded body is shown as the number.
    #[test]
    fn an_id_that_names_nothing_is_refused_on_its_field() {
        assert_eq!(path_id("lease", "42").ok(), Some(42));
        let want = |field: &str, message: &str| (Some(field.to_owned()), message.to_owned());
        assert_eq!(
            refusal(path_id("lease", "abc")),
            want(
                "lease",
                r#"lease "abc" is not a lease id (a positive integer)"#
            )
        );
        assert_eq!(
            refusal(path_id("hold", "0")),
            want("hold", r#"hold "0" is not a hold id (a positive integer)"#)
        );
        assert_eq!(
            refusal(valid_id("lease", 0)),
            want("lease", "lease 0 is not a lease id (a positive integer)")
        );
        assert_eq!(valid_id("hold", 7).ok(), Some(7));
    }
}
