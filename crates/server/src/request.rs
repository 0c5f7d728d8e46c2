//! The transport-neutral request layer's common parts: the error every request function
//! returns ([`ApiError`]), how engine and storage outcomes become one, and the checks and
//! decoding both transports share. The request functions themselves are each domain's `ops`
//! (`crate::domains::*::ops`); HTTP routes and the wire protocol only extract and call them.
//!
//! Every API error is a JSON [`ErrorBody`] with a stable code; the HTTP status (or the wire
//! frame's status) comes from the code (see `ErrorCode::http_status`) and nowhere else.

use locksmith_api::{ErrorBody, ErrorCode};
use locksmith_core::{AcquireError, BreakError, FenceError, HoldError, InvalidRequest, LeaseError};
use locksmith_store::StoreError;
use serde::de::DeserializeOwned;

use crate::clock::wall_ms;
use crate::engine::EngineError;

/// An API error, ready to be sent by either transport.
#[derive(Debug)]
pub struct ApiError(pub Box<ErrorBody>);

impl From<ErrorBody> for ApiError {
    fn from(b: ErrorBody) -> Self {
        ApiError(Box::new(b))
    }
}

/// Storage failed: the message says what is known of this request's outcome, and what the
/// server does from now on. Only a request whose own commit failed part-way
/// ([`StoreError::Unknown`]) has an unknown outcome; every other failure refused the request
/// before anything of it was written.
pub(crate) fn storage(e: &StoreError) -> ErrorBody {
    let message = match e {
        StoreError::Unknown(_) => format!(
            "{e}: this request may or may not have taken effect, and the server refuses every \
             write and lock read until it is restarted — check the server's disk and logs, \
             restart it, then look at the lock before retrying"
        ),
        StoreError::Failed(_) => format!(
            "{e}; this request was refused before anything of it was written, as is every write \
             and lock read until the server restarts — check the server's disk and logs, then \
             restart it"
        ),
        StoreError::Closed => "the server's storage has shut down (the server is stopping); \
             this request was refused before anything of it was written — retry against a \
             running server"
            .to_owned(),
        // A read that failed (the audit log), or an open: no write of this request's.
        _ => format!("{e}; this request changed nothing — check the server's disk and logs"),
    };
    ErrorBody::new(ErrorCode::StorageFailed, message)
}

fn shutting_down() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::ShuttingDown,
        "the server is shutting down; retry against a running server",
    )
}

/// A table refusal that has an API error body.
pub trait Refusal {
    /// The body to answer with.
    fn body(&self) -> ErrorBody;
}

impl Refusal for AcquireError {
    fn body(&self) -> ErrorBody {
        ErrorBody::from_acquire(self, wall_ms())
    }
}

impl Refusal for LeaseError {
    fn body(&self) -> ErrorBody {
        ErrorBody::from_lease(self)
    }
}

impl Refusal for FenceError {
    fn body(&self) -> ErrorBody {
        ErrorBody::from_fence(self)
    }
}

impl Refusal for HoldError {
    fn body(&self) -> ErrorBody {
        ErrorBody::from_hold(self)
    }
}

impl Refusal for BreakError {
    fn body(&self) -> ErrorBody {
        ErrorBody::from_break(self)
    }
}

impl Refusal for locksmith_auth::InvalidToken {
    fn body(&self) -> ErrorBody {
        ErrorBody::invalid(self.field, &self.reason)
    }
}

impl Refusal for locksmith_auth::RevokeError {
    fn body(&self) -> ErrorBody {
        let code = match self {
            locksmith_auth::RevokeError::NotFound(_) => ErrorCode::TokenNotFound,
            locksmith_auth::RevokeError::AlreadyRevoked { .. } => ErrorCode::AlreadyRevoked,
        };
        let next = match self {
            locksmith_auth::RevokeError::NotFound(_) => "; 'locksmith token ls' lists them",
            locksmith_auth::RevokeError::AlreadyRevoked { .. } => ": nothing to do",
        };
        ErrorBody::new(code, format!("{self}{next}"))
    }
}

impl<E: Refusal> Refusal for crate::engine::Denied<E> {
    fn body(&self) -> ErrorBody {
        match self {
            crate::engine::Denied::Forbidden(why) => {
                ErrorBody::new(ErrorCode::Forbidden, why.to_string())
            }
            crate::engine::Denied::Refused(e) => e.body(),
        }
    }
}

/// 401 `unauthenticated`: the request names no principal (`why` says how).
pub fn unauthenticated(why: &locksmith_auth::AuthError) -> ApiError {
    ApiError::from(ErrorBody::new(ErrorCode::Unauthenticated, why.to_string()))
}

/// 403 `forbidden`: the principal may not do this (`why` names what is missing).
pub fn forbidden(why: &locksmith_auth::Forbidden) -> ApiError {
    ApiError::from(ErrorBody::new(ErrorCode::Forbidden, why.to_string()))
}

impl Refusal for InvalidRequest {
    fn body(&self) -> ErrorBody {
        ErrorBody::from_invalid(self)
    }
}

/// Every engine outcome maps the same way: the refusal's own body, or storage / shutdown.
impl<E: Refusal> From<EngineError<E>> for ApiError {
    fn from(e: EngineError<E>) -> Self {
        ApiError::from(match e {
            EngineError::Refused(e) => e.body(),
            EngineError::Storage(s) => storage(&s),
            EngineError::ShuttingDown => shutting_down(),
        })
    }
}

impl ApiError {
    /// An engine's answer to an acquire, with the ages in a refusal ("last heartbeat 2s ago")
    /// measured at `now_ms` on the engine's own wall clock — on a server running on virtual
    /// time, that is the virtual one.
    pub fn engine_at(e: EngineError<crate::engine::Denied<AcquireError>>, now_ms: u64) -> Self {
        match e {
            EngineError::Refused(crate::engine::Denied::Refused(e)) => {
                ApiError::from(ErrorBody::from_acquire(&e, now_ms))
            }
            other => ApiError::from(other),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::from(storage(&e))
    }
}

impl From<InvalidRequest> for ApiError {
    fn from(e: InvalidRequest) -> Self {
        ApiError::from(ErrorBody::from_invalid(&e))
    }
}

/// Decodes a JSON request body; a bad one is `invalid_json`, with serde's precise reason
/// ("missing field `owner`", "unknown field `ttl`").
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::from(ErrorBody::new(
            ErrorCode::InvalidJson,
            format!("request body is not valid: {e}"),
        ))
    })
}

/// `id` if it can name a `what` (`lease`, `hold`): ids start at 1.
pub(crate) fn valid_id(what: &str, id: u64) -> Result<u64, ApiError> {
    if id > 0 {
        Ok(id)
    } else {
        Err(not_an_id(what, id))
    }
}

/// The refusal of `shown` as the id of a `what`: `invalid_request` on the field `what`.
pub(crate) fn not_an_id(what: &str, shown: impl std::fmt::Display) -> ApiError {
    ApiError::from(ErrorBody::invalid(
        what,
        format!("{shown} is not a {what} id (a positive integer)"),
    ))
}

/// A page size: `limit`, or `default` if absent; `invalid_request` naming `limit` unless it is
/// between 1 and `max`.
pub(crate) fn page_limit(
    limit: Option<usize>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(default);
    if limit == 0 || limit > max {
        return Err(ApiError::from(ErrorBody::invalid(
            "limit",
            format!("must be between 1 and {max} (got {limit})"),
        )));
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug pinned (issue 16, item 8): after a failed commit the answer said the server "answers
    /// no request until it is restarted" (its health, status and metrics still answer), and
    /// the FleetLock answers said "nothing was granted" / "try again" whatever the outcome.
    /// Each storage answer now says what is known of the outcome and that writes are refused
    /// until a restart.
    #[test]
    fn storage_answers_say_what_is_known_of_the_outcome() {
        let unknown = storage(&StoreError::Unknown("disk full".into())).message;
        assert!(
            unknown.contains("may or may not have taken effect"),
            "{unknown}"
        );
        assert!(unknown.contains("refuses every write"), "{unknown}");
        assert!(!unknown.contains("nothing"), "{unknown}");
        assert!(!unknown.contains("answers no request"), "{unknown}");

        let failed = storage(&StoreError::Failed("disk full".into())).message;
        assert!(
            failed.contains("before anything of it was written"),
            "{failed}"
        );
        assert!(failed.contains("until the server restarts"), "{failed}");

        let read = storage(&StoreError::Io("EIO".into())).message;
        assert!(read.contains("changed nothing"), "{read}");
    }
}
