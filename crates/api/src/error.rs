//! Stable error codes. Each code maps to exactly one HTTP status, here and nowhere else.

use locksmith_core::{AcquireError, EndCause, FenceError, HolderView, LeaseError, LeaseId};
use serde::{Deserialize, Serialize};

use crate::human::hot_line;

/// A stable, machine-readable error code: clients match on these, never on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not valid JSON of the expected shape (missing or unknown field, wrong type).
    InvalidJson,
    /// The request is well-formed but a value is unacceptable (empty name, pid 0, absurd TTL).
    InvalidRequest,
    /// Every slot of the resource is held.
    Hot,
    /// The resource is held as a semaphore of a different size.
    SlotsMismatch,
    /// No such lease was ever granted.
    NotHolder,
    /// The lease has ended (released, expired or reclaimed): the caller no longer holds the lock.
    LeaseExpired,
    /// The presented fencing token is not (or no longer) the holder's.
    StaleToken,
    /// No such route.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// The body is too large.
    PayloadTooLarge,
    /// Storage refused a write; the server serves no writes until restarted.
    StorageFailed,
    /// The server is shutting down.
    ShuttingDown,
    /// A bug: the server caught a panic.
    Internal,
}

impl ErrorCode {
    /// The HTTP status for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidJson | ErrorCode::InvalidRequest => 400,
            ErrorCode::NotHolder | ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Hot | ErrorCode::SlotsMismatch | ErrorCode::StaleToken => 409,
            ErrorCode::LeaseExpired => 410,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::Internal => 500,
            ErrorCode::StorageFailed | ErrorCode::ShuttingDown => 503,
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Hot => "hot",
            ErrorCode::SlotsMismatch => "slots_mismatch",
            ErrorCode::NotHolder => "not_holder",
            ErrorCode::LeaseExpired => "lease_expired",
            ErrorCode::StaleToken => "stale_token",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::StorageFailed => "storage_failed",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
        }
    }
}

/// Every API error body: `{ "error": "<code>", "message": "...", ...details }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The stable code.
    pub error: ErrorCode,
    /// A human sentence naming the resource, the holder and the next step.
    pub message: String,
    /// The resource concerned, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The offending field, for `invalid_request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The lease concerned, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseId>,
    /// Why the lease ended, for `lease_expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<EndCause>,
    /// The current holders, for `hot` and `stale_token`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<HolderView>,
}

impl ErrorBody {
    /// A bare error with a code and message.
    pub fn new(error: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error,
            message: message.into(),
            resource: None,
            field: None,
            lease: None,
            cause: None,
            holders: Vec::new(),
        }
    }

    /// The body for a refused acquire; `now_ms` is the wall clock used to phrase ages.
    pub fn from_acquire(e: &AcquireError, now_ms: u64) -> Self {
        match e {
            AcquireError::Hot { resource, holders } => Self {
                resource: Some(resource.clone()),
                holders: holders.clone(),
                ..Self::new(ErrorCode::Hot, hot_line(resource, holders, now_ms))
            },
            AcquireError::SlotsMismatch { resource, .. } => Self {
                resource: Some(resource.clone()),
                ..Self::new(
                    ErrorCode::SlotsMismatch,
                    format!("{e}; ask with the same --slots as the current holders"),
                )
            },
            AcquireError::Invalid(inv) => Self {
                field: Some(inv.field.clone()),
                ..Self::new(ErrorCode::InvalidRequest, inv.to_string())
            },
        }
    }

    /// The body for a refused renew or release.
    pub fn from_lease(e: &LeaseError) -> Self {
        match e {
            LeaseError::NotHolder { lease } => Self {
                lease: Some(*lease),
                ..Self::new(
                    ErrorCode::NotHolder,
                    format!(
                        "lease {lease} was never granted by this server; acquire the lock first"
                    ),
                )
            },
            LeaseError::LeaseExpired {
                lease,
                resource,
                cause,
            } => {
                let why = match cause {
                    EndCause::Released => "was released",
                    EndCause::Expired => "expired (no heartbeat within its TTL)",
                    EndCause::Unknown => "has ended",
                };
                let on = if resource.is_empty() {
                    String::new()
                } else {
                    format!(" on {resource}")
                };
                Self {
                    lease: Some(*lease),
                    resource: (!resource.is_empty()).then(|| resource.clone()),
                    cause: Some(cause.clone()),
                    ..Self::new(
                        ErrorCode::LeaseExpired,
                        format!(
                            "lease {lease}{on} {why}; you no longer hold the lock — acquire it again before writing"
                        ),
                    )
                }
            }
            LeaseError::StaleToken { lease, .. } => Self {
                lease: Some(*lease),
                ..Self::new(
                    ErrorCode::StaleToken,
                    format!("{e}; use the token returned with the lease"),
                )
            },
        }
    }

    /// The body for a failed fence check.
    pub fn from_fence(e: &FenceError) -> Self {
        match e {
            FenceError::StaleToken { resource, .. } => Self {
                resource: Some(resource.clone()),
                ..Self::new(
                    ErrorCode::StaleToken,
                    format!("{e}; the writer no longer holds the lock and must not write"),
                )
            },
            FenceError::Invalid(inv) => Self {
                field: Some(inv.field.clone()),
                ..Self::new(ErrorCode::InvalidRequest, inv.to_string())
            },
        }
    }

    /// An `invalid_request` naming a field.
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Self {
            field: Some(field.to_string()),
            ..Self::new(ErrorCode::InvalidRequest, format!("{field} {reason}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_stable_names() {
        for code in [
            ErrorCode::InvalidJson,
            ErrorCode::Hot,
            ErrorCode::LeaseExpired,
            ErrorCode::StorageFailed,
        ] {
            let json = serde_json::to_string(&code).expect("serialize");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
