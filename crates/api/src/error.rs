//! Stable error codes. Each code maps to exactly one HTTP status, here and nowhere else.

use locksmith_core::{
    AcquireError, BreakError, BrokenInvariant, EndCause, FenceError, HoldError, HoldId, HoldView,
    HolderView, InvalidRequest, LeaseError, LeaseId, ReportError,
};
use serde::{Deserialize, Serialize};

use crate::human::{format_age, frozen_line, hot_line};

/// A stable, machine-readable error code: clients match on these, never on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not valid JSON of the expected shape (missing or unknown field, wrong type).
    InvalidJson,
    /// The request is well-formed but a value is unacceptable (empty name, pid 0, absurd TTL).
    InvalidRequest,
    /// Every slot of the resource is held.
    Hot,
    /// An operator's hold is in force on the resource: no new grants.
    Frozen,
    /// The resource is in its lock-delay after a holder failed.
    LockDelay,
    /// An operator broke the caller's lease.
    Broken,
    /// No such hold (lifted, expired, or never placed).
    HoldNotFound,
    /// The operator who placed a hold tried to acknowledge it: a second operator must.
    SameOperator,
    /// The hold was acknowledged already (and is in force): nothing to acknowledge.
    AlreadyAcknowledged,
    /// The hold was placed without `require_ack` (and is in force): nothing to acknowledge.
    AckNotRequired,
    /// A break found nothing to break.
    NotHeld,
    /// A liveness report came from another node than the holder's.
    NotSameNode,
    /// A liveness report named another process incarnation than the holder's.
    WrongProcess,
    /// A liveness report called a holder on the server's own node dead, and the server sees its
    /// process alive in its own `/proc`.
    HolderAlive,
    /// The resource is held as a semaphore of a different size.
    SlotsMismatch,
    /// The caller already holds the resource under a lease with a different TTL.
    TtlMismatch,
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
    /// A wire-protocol connection already has as many acquires under way as it may have: this
    /// one was refused (the others, and the connection, are unaffected).
    TooManyRequests,
    /// The listener already serves as many connections as it may (`--max-connections`): this
    /// one was answered with this error and closed.
    TooManyConnections,
    /// Storage refused a write; the server serves no writes until restarted.
    StorageFailed,
    /// The server is shutting down.
    ShuttingDown,
    /// Cluster mode: no leader is serving (election in progress, or the leader unreachable).
    NoLeader,
    /// A bug, never the request's fault: the server caught a panic, or found one of its own
    /// invariants broken.
    Internal,
    /// No token, or one that authenticates nobody (malformed, unknown, revoked, expired).
    Unauthenticated,
    /// The token is valid but may not do this: its role, prefixes or node (its own, or the one
    /// a mutual-TLS client certificate names) do not allow it. The message names what is
    /// missing.
    Forbidden,
    /// No token has that id.
    TokenNotFound,
    /// The token was revoked already.
    AlreadyRevoked,
    /// Config content that does not parse in its format or fails the config's schema; nothing
    /// was stored. `parse_error` or `violations` say where (line, column, key path).
    InvalidConfig,
    /// No config has that name.
    ConfigNotFound,
    /// The config has no revision with that number.
    RevisionNotFound,
    /// The content is larger than the server accepts (`--max-config-bytes`).
    ConfigTooLarge,
    /// A promotion named a revision that is not a draft, or a draft that another revision has
    /// since replaced as current.
    NotADraft,
    /// No agent has registered under that node name.
    AgentNotFound,
    /// No rollout has that id.
    RolloutNotFound,
    /// A rollout flag's value does not parse, or the flags cannot run together; the message
    /// names the flag and the form it wants.
    InvalidRollout,
    /// The rollout cannot take this now: an approval by its starter or a second one by the same
    /// operator, a resume of a rollout that is not paused, a cancel of one that started, any
    /// event after it ended. The message says why and what to do.
    RolloutRefused,
    /// The rollout's selector matches no endpoint that applies the config.
    NoEndpoints,
    /// A `prom:` gate on a server started without `--prometheus-url`.
    GatesUnavailable,
}

impl ErrorCode {
    /// The HTTP status for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidJson | ErrorCode::InvalidRequest | ErrorCode::InvalidRollout => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::NotSameNode | ErrorCode::Forbidden => 403,
            ErrorCode::NotHolder
            | ErrorCode::NotFound
            | ErrorCode::HoldNotFound
            | ErrorCode::TokenNotFound
            | ErrorCode::ConfigNotFound
            | ErrorCode::RevisionNotFound
            | ErrorCode::AgentNotFound
            | ErrorCode::RolloutNotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Hot
            | ErrorCode::SlotsMismatch
            | ErrorCode::TtlMismatch
            | ErrorCode::StaleToken
            | ErrorCode::Frozen
            | ErrorCode::LockDelay
            | ErrorCode::SameOperator
            | ErrorCode::AlreadyAcknowledged
            | ErrorCode::AckNotRequired
            | ErrorCode::NotHeld
            | ErrorCode::WrongProcess
            | ErrorCode::HolderAlive
            | ErrorCode::AlreadyRevoked
            | ErrorCode::NotADraft
            | ErrorCode::RolloutRefused
            | ErrorCode::NoEndpoints
            | ErrorCode::GatesUnavailable => 409,
            ErrorCode::LeaseExpired | ErrorCode::Broken => 410,
            ErrorCode::PayloadTooLarge | ErrorCode::ConfigTooLarge => 413,
            ErrorCode::InvalidConfig => 422,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::Internal => 500,
            ErrorCode::TooManyConnections
            | ErrorCode::StorageFailed
            | ErrorCode::ShuttingDown
            | ErrorCode::NoLeader => 503,
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Hot => "hot",
            ErrorCode::Frozen => "frozen",
            ErrorCode::LockDelay => "lock_delay",
            ErrorCode::Broken => "broken",
            ErrorCode::HoldNotFound => "hold_not_found",
            ErrorCode::SameOperator => "same_operator",
            ErrorCode::AlreadyAcknowledged => "already_acknowledged",
            ErrorCode::AckNotRequired => "ack_not_required",
            ErrorCode::NotHeld => "not_held",
            ErrorCode::NotSameNode => "not_same_node",
            ErrorCode::WrongProcess => "wrong_process",
            ErrorCode::HolderAlive => "holder_alive",
            ErrorCode::SlotsMismatch => "slots_mismatch",
            ErrorCode::TtlMismatch => "ttl_mismatch",
            ErrorCode::NotHolder => "not_holder",
            ErrorCode::LeaseExpired => "lease_expired",
            ErrorCode::StaleToken => "stale_token",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::StorageFailed => "storage_failed",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::NoLeader => "no_leader",
            ErrorCode::Internal => "internal",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TokenNotFound => "token_not_found",
            ErrorCode::AlreadyRevoked => "already_revoked",
            ErrorCode::InvalidConfig => "invalid_config",
            ErrorCode::ConfigNotFound => "config_not_found",
            ErrorCode::RevisionNotFound => "revision_not_found",
            ErrorCode::ConfigTooLarge => "config_too_large",
            ErrorCode::NotADraft => "not_a_draft",
            ErrorCode::AgentNotFound => "agent_not_found",
            ErrorCode::RolloutNotFound => "rollout_not_found",
            ErrorCode::InvalidRollout => "invalid_rollout",
            ErrorCode::RolloutRefused => "rollout_refused",
            ErrorCode::NoEndpoints => "no_endpoints",
            ErrorCode::GatesUnavailable => "gates_unavailable",
        }
    }
}

/// Every API error body: `{ "error": "<code>", "message": "...", ...details }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The holds in force, for `frozen`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<HoldView>,
    /// Who acted, for `broken`, `same_operator` and `already_acknowledged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Their reason, for `broken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Milliseconds of lock-delay left, for `lock_delay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_left_ms: Option<u64>,
    /// The hold concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldId>,
    /// Where config content fails to parse, for `invalid_config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub parse_error: Option<locksmith_config::ParseError>,
    /// How config content fails its schema, for `invalid_config`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub violations: Vec<locksmith_config::Violation>,
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
            holds: Vec::new(),
            by: None,
            reason: None,
            delay_left_ms: None,
            hold: None,
            parse_error: None,
            violations: Vec::new(),
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
            AcquireError::TtlMismatch {
                resource,
                lease,
                held_ttl_ms,
                asked_ttl_ms,
            } => Self {
                resource: Some(resource.clone()),
                lease: Some(*lease),
                ..Self::new(
                    ErrorCode::TtlMismatch,
                    format!(
                        "this process already holds lease {lease} on {resource} with a TTL of \
                         {}, asked for {}; a lease keeps the TTL it was granted with — renew it \
                         as it is ('locksmith renew {lease}'), or release it and acquire again \
                         with the new TTL",
                        format_age(*held_ttl_ms),
                        format_age(*asked_ttl_ms)
                    ),
                )
            },
            AcquireError::Frozen { resource, holds } => Self {
                resource: Some(resource.clone()),
                holds: holds.clone(),
                ..Self::new(ErrorCode::Frozen, frozen_line(resource, holds))
            },
            AcquireError::LockDelay { resource, left_ms } => Self {
                resource: Some(resource.clone()),
                delay_left_ms: Some(*left_ms),
                ..Self::new(
                    ErrorCode::LockDelay,
                    format!(
                        "{resource}: in lock-delay for {} after a holder failed; retry with --wait",
                        format_age(*left_ms)
                    ),
                )
            },
            AcquireError::Invalid(inv) => Self::from_invalid(inv),
            AcquireError::Internal(bug) => Self::from_bug(bug),
        }
    }

    /// An `internal` (500) for a broken invariant of the table: a bug, which no change to the
    /// request would avoid and no field of it caused.
    pub fn from_bug(bug: &BrokenInvariant) -> Self {
        Self::new(
            ErrorCode::Internal,
            format!("{bug}; the request may not have been applied — report it with the server log"),
        )
    }

    /// An `invalid_request` from the table's validation.
    pub fn from_invalid(inv: &InvalidRequest) -> Self {
        Self {
            field: Some(inv.field.clone()),
            ..Self::new(ErrorCode::InvalidRequest, inv.to_string())
        }
    }

    /// The body for a refused hold operation.
    pub fn from_hold(e: &HoldError) -> Self {
        match e {
            HoldError::NotFound { hold } => Self {
                hold: Some(*hold),
                ..Self::new(
                    ErrorCode::HoldNotFound,
                    format!("{e}; list holds with 'locksmith locks' or GET /v1/holds"),
                )
            },
            HoldError::SameOperator { hold, by } => Self {
                hold: Some(*hold),
                by: Some(by.clone()),
                ..Self::new(
                    ErrorCode::SameOperator,
                    format!(
                        "{e} (run 'locksmith ack {hold}' as another operator, --operator NAME)"
                    ),
                )
            },
            HoldError::AlreadyAcknowledged { hold, by, .. } => Self {
                hold: Some(*hold),
                by: Some(by.clone()),
                ..Self::new(
                    ErrorCode::AlreadyAcknowledged,
                    format!("{e}; nothing changed (lift it early with 'locksmith unhold {hold}')"),
                )
            },
            HoldError::AckNotRequired { hold, .. } => Self {
                hold: Some(*hold),
                ..Self::new(
                    ErrorCode::AckNotRequired,
                    format!("{e}; nothing changed (lift it early with 'locksmith unhold {hold}')"),
                )
            },
            HoldError::Invalid(inv) => Self::from_invalid(inv),
        }
    }

    /// The body for a refused break.
    pub fn from_break(e: &BreakError) -> Self {
        match e {
            BreakError::NotHeld { resource, lease } => Self {
                resource: Some(resource.clone()),
                lease: *lease,
                ..Self::new(
                    ErrorCode::NotHeld,
                    format!("{e}; to stop new grants use 'locksmith hold {resource}'"),
                )
            },
            BreakError::Invalid(inv) => Self::from_invalid(inv),
        }
    }

    /// The body for a refused liveness report.
    pub fn from_report(e: &ReportError) -> Self {
        match e {
            ReportError::NotSameNode { lease, .. } => Self {
                lease: Some(*lease),
                ..Self::new(
                    ErrorCode::NotSameNode,
                    format!("{e}; run the check on that node"),
                )
            },
            // The same code as another node's report: the reporter is not where the holder's
            // pid means anything (node, boot and PID namespace together are that place).
            ReportError::NotSamePidNamespace { lease, .. } => Self {
                lease: Some(*lease),
                ..Self::new(
                    ErrorCode::NotSameNode,
                    format!("{e}; run the check inside the holder's PID namespace"),
                )
            },
            ReportError::WrongProcess { lease, .. } => Self {
                lease: Some(*lease),
                ..Self::new(ErrorCode::WrongProcess, e.to_string())
            },
            ReportError::Lease(l) => Self::from_lease(l),
            ReportError::Invalid(inv) => Self::from_invalid(inv),
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
                    EndCause::Released => "was released".to_string(),
                    EndCause::Expired => "expired (no heartbeat within its TTL)".to_string(),
                    EndCause::NodeRebooted { .. } => {
                        "was reclaimed: its node rebooted (new boot id)".to_string()
                    }
                    EndCause::ProcessDied { reported_by } => {
                        format!(
                            "was reclaimed: its holder process died (reported by {reported_by})"
                        )
                    }
                    EndCause::Broken { by, reason } => format!("was broken by {by}: {reason}"),
                    EndCause::Unknown => "has ended".to_string(),
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
            LeaseError::Broken {
                lease,
                resource,
                by,
                reason,
            } => Self {
                lease: Some(*lease),
                resource: Some(resource.clone()),
                by: Some(by.clone()),
                reason: Some(reason.clone()),
                cause: Some(EndCause::Broken {
                    by: by.clone(),
                    reason: reason.clone(),
                }),
                ..Self::new(
                    ErrorCode::Broken,
                    format!(
                        "{resource}: lease {lease} was BROKEN by {by}: {reason}; stop writing — you no longer hold the lock"
                    ),
                )
            },
            LeaseError::StaleToken { lease, .. } => Self {
                lease: Some(*lease),
                ..Self::new(
                    ErrorCode::StaleToken,
                    format!("{e}; use the token returned with the lease"),
                )
            },
            LeaseError::Internal(bug) => Self::from_bug(bug),
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
            FenceError::Invalid(inv) => Self::from_invalid(inv),
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
            ErrorCode::TooManyConnections,
            ErrorCode::Forbidden,
        ] {
            let json = serde_json::to_string(&code).expect("serialize");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    /// Bug pinned (issue 16, item 3): the table's "holder without lease" inconsistency was an
    /// `invalid_request` (400) blaming the caller's `resource` field. A broken invariant is a
    /// bug: 500 `internal`, naming no field.
    #[test]
    fn a_broken_invariant_is_a_500_internal_that_blames_no_field() {
        let bug = BrokenInvariant::new("cfg/a: holder 7 has no lease");
        for body in [
            ErrorBody::from_acquire(&AcquireError::Internal(bug.clone()), 0),
            ErrorBody::from_lease(&LeaseError::Internal(bug.clone())),
            ErrorBody::from_report(&ReportError::Lease(LeaseError::Internal(bug))),
        ] {
            assert_eq!(body.error, ErrorCode::Internal, "{body:?}");
            assert_eq!(body.error.http_status(), 500);
            assert_eq!(body.field, None);
            assert!(
                body.message.contains("holder 7 has no lease"),
                "{}",
                body.message
            );
        }
    }
}
