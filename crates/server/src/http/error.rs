//! Every API error is a JSON [`ErrorBody`] with a stable code; the HTTP status comes from the
//! code (see `ErrorCode::http_status`) and nowhere else.

use std::any::Any;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use locksmith_api::{ErrorBody, ErrorCode};
use locksmith_core::{AcquireError, BreakError, FenceError, HoldError, InvalidRequest, LeaseError};
use locksmith_store::StoreError;

use crate::clock::wall_ms;
use crate::engine::EngineError;

/// An API error, ready to be sent.
#[derive(Debug)]
pub struct ApiError(pub Box<ErrorBody>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.error.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(*self.0)).into_response()
    }
}

impl From<ErrorBody> for ApiError {
    fn from(b: ErrorBody) -> Self {
        ApiError(Box::new(b))
    }
}

/// Storage failed: the message says what is known of this request's outcome.
fn storage(e: &StoreError) -> ErrorBody {
    let message = match e {
        // Its own commit failed part-way.
        StoreError::Unknown(_) => format!(
            "{e}: this request may or may not have taken effect, and the server answers no \
             request until it is restarted — check the server's disk and logs, restart it, \
             then look at the lock before retrying"
        ),
        // Refused before anything of it was written (or a read).
        _ => format!("{e}; nothing was changed by this request — check the server's disk and logs"),
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

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::from(storage(&e))
    }
}

/// A caught panic becomes a JSON 500, never a dropped connection.
pub fn panic_response(_err: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked; answering 500");
    ApiError::from(ErrorBody::new(
        ErrorCode::Internal,
        "internal error (a bug): the request may not have been applied; check the server log",
    ))
    .into_response()
}
