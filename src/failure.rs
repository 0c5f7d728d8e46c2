//! How a failure reads: exactly one line on stderr,
//! `ERROR: <resource>: <what> — <details>; <next step>`, and an exit code.

use std::fmt;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use locksmith_api::{ErrorBody, ErrorCode, format_age, hot_line};
use locksmith_client::ClientError;
use locksmith_core::{HoldState, HoldView};

use crate::exit::Exit;

/// A failure the CLI reports as one `ERROR:` line, with its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// How the process exits.
    pub exit: Exit,
    /// The line, without the `ERROR: ` prefix.
    pub line: String,
}

impl std::error::Error for Failure {}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line)
    }
}

/// What a failed call was about, to phrase its line.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The resource (or `lease N`) the call was about.
    pub subject: &'a str,
    /// The flag that makes the command wait for a HOT lock (`--wait` or `-w`).
    pub wait_flag: &'a str,
}

impl Failure {
    /// `<subject>: <what> — <details>; <next>`.
    pub fn new(
        exit: Exit,
        subject: &str,
        what: &str,
        details: impl fmt::Display,
        next: &str,
    ) -> Self {
        Self {
            exit,
            line: format!("{}: {what} — {details}; {next}", shown(subject)),
        }
    }

    /// An invalid value given on the command line (exit 1), naming the flag.
    pub fn invalid(subject: &str, flag: &str, details: impl fmt::Display, next: &str) -> Self {
        Self::new(
            Exit::Other,
            subject,
            &format!("invalid {flag}"),
            details,
            next,
        )
    }

    /// The line for a failed call to the server.
    pub fn from_client(e: &ClientError, ctx: Context<'_>) -> Self {
        let exit = Exit::for_client(e);
        let line = match e {
            ClientError::InvalidUrl { .. } => {
                format!("{e}; pass --server http://HOST:PORT (or set LOCKSMITH_SERVER)")
            }
            ClientError::InvalidToken { reason } => format!(
                "{}: NOT AUTHENTICATED — {}",
                shown(ctx.subject),
                crate::credentials::unauthenticated(
                    &format!("it is not a Locksmith token: {reason}"),
                    crate::credentials::found()
                )
            ),
            ClientError::Transport { .. } => {
                format!("{e}; start it with 'locksmith server' or set --server/LOCKSMITH_SERVER")
            }
            // The reason already says what to do (which flag to pass).
            ClientError::Tls { .. } => e.to_string(),
            ClientError::TlsSetup(_) => format!(
                "{e}; fix the file or the flag (--ca-file, --cert, --key or their LOCKSMITH_* \
                 variables)"
            ),
            ClientError::InvalidConfigName(reason) => format!(
                "{}: invalid config name — {reason}; name it like a relative path, e.g. \
                 fleet/aim_lock_config.conf",
                shown(ctx.subject)
            ),
            ClientError::InvalidNode { .. } => format!(
                "{}: {e}; pass the node's name, e.g. --node drone-7",
                shown(ctx.subject)
            ),
            ClientError::InvalidRolloutId { .. } => format!(
                "{}: {e}; list them with 'locksmith rollout ls --all'",
                shown(ctx.subject)
            ),
            ClientError::Decode { .. } => format!(
                "{}: unexpected answer — {e}; check that --server points at a Locksmith server",
                shown(ctx.subject)
            ),
            ClientError::Api { body, .. } => api_line(body, ctx),
        };
        Self { exit, line }
    }

    /// Writes `ERROR: <line>` to stderr, as one line whatever the line contains.
    pub fn report(&self) {
        self.write_as("ERROR");
    }

    /// Writes `WARNING: <line>`: for a failure that does not decide the exit code.
    pub fn warn(&self) {
        self.write_as("WARNING");
    }

    fn write_as(&self, level: &str) {
        let line = self.line.replace(['\n', '\r'], " ");
        // Nothing sensible is left to do if stderr itself is gone.
        let _ = writeln!(std::io::stderr().lock(), "{level}: {line}");
    }
}

fn api_line(body: &ErrorBody, ctx: Context<'_>) -> String {
    let subject = body.resource.as_deref().unwrap_or(ctx.subject);
    let msg = &body.message;
    match body.error {
        ErrorCode::Hot => {
            let next = if body.holders.is_empty() {
                format!("run 'locksmith locks {subject}' to see the queue")
            } else {
                format!(
                    "run 'locksmith locks {subject}' to inspect, or retry with {}",
                    ctx.wait_flag
                )
            };
            format!(
                "{}; {next}",
                hot_line(subject, &body.holders, wall_now_ms())
            )
        }
        ErrorCode::SlotsMismatch => {
            let details = msg
                .strip_prefix(subject)
                .and_then(|m| m.strip_prefix(": "))
                .unwrap_or(msg);
            format!("{}: SLOTS MISMATCH — {details}", shown(subject))
        }
        ErrorCode::TtlMismatch => format!("{}: TTL MISMATCH — {msg}", shown(subject)),
        ErrorCode::InvalidRequest | ErrorCode::InvalidJson => match body.field.as_deref() {
            Some(field) => format!(
                "{}: invalid {field} — {msg}; fix {} and retry",
                shown(subject),
                flag_for_field(field, ctx.wait_flag)
            ),
            None => format!(
                "{}: invalid request — {msg}; check the arguments (see --help)",
                shown(subject)
            ),
        },
        ErrorCode::Frozen => frozen_line(subject, &body.holds, msg, ctx.wait_flag),
        ErrorCode::LockDelay => {
            let left = body
                .delay_left_ms
                .map_or_else(|| "a while".to_string(), format_age);
            format!(
                "{}: DELAYED — in lock-delay for {left} after a holder failed; retry with {} \
                 (grants resume when the delay ends)",
                shown(subject),
                ctx.wait_flag
            )
        }
        ErrorCode::Broken => match (&body.by, &body.reason) {
            (Some(by), Some(reason)) => format!(
                "{}: lease BROKEN by {by}: {reason} — you no longer hold the lock; acquire it \
                 again before writing",
                shown(subject)
            ),
            _ => format!("{}: BROKEN — {msg}", shown(subject)),
        },
        ErrorCode::HoldNotFound => format!("{}: NO SUCH HOLD — {msg}", shown(subject)),
        ErrorCode::SameOperator => format!("{}: SAME OPERATOR — {msg}", shown(subject)),
        ErrorCode::AlreadyAcknowledged | ErrorCode::AckNotRequired => {
            format!("{}: ALREADY IN FORCE — {msg}", shown(subject))
        }
        ErrorCode::NotHeld => format!("{}: NOT HELD — {msg}", shown(subject)),
        ErrorCode::NotSameNode | ErrorCode::WrongProcess | ErrorCode::HolderAlive => {
            format!("{}: REPORT REFUSED — {msg}", shown(subject))
        }
        // Only a wire-protocol client pipelining past its connection's limit meets this.
        ErrorCode::TooManyRequests => format!("{}: TOO MANY REQUESTS — {msg}", shown(subject)),
        ErrorCode::LeaseExpired => format!("{}: LEASE ENDED — {msg}", shown(subject)),
        ErrorCode::NotHolder => format!("{}: NO SUCH LEASE — {msg}", shown(subject)),
        ErrorCode::StaleToken => format!("{}: STALE TOKEN — {msg}", shown(subject)),
        // The server's message says what is known of the outcome and what to do: storage
        // failures need a restart, not a retry.
        ErrorCode::StorageFailed => format!("{}: SERVER UNAVAILABLE — {msg}", shown(subject)),
        ErrorCode::ShuttingDown => format!(
            "{}: SERVER UNAVAILABLE — {msg}; check the server's log, then restart it or retry",
            shown(subject)
        ),
        ErrorCode::TooManyConnections => format!("{}: SERVER BUSY — {msg}", shown(subject)),
        ErrorCode::NoLeader => format!(
            "{}: NO LEADER — {msg} (cluster election in progress)",
            shown(subject)
        ),
        ErrorCode::Unauthenticated => format!(
            "{}: NOT AUTHENTICATED — {}",
            shown(subject),
            crate::credentials::unauthenticated(msg, crate::credentials::found())
        ),
        ErrorCode::Forbidden => format!(
            "{}: FORBIDDEN — {msg}; {}",
            shown(subject),
            crate::credentials::forbidden_next(crate::credentials::found())
        ),
        ErrorCode::TokenNotFound => format!("{}: NO SUCH TOKEN — {msg}", shown(subject)),
        ErrorCode::AlreadyRevoked => format!("{}: ALREADY REVOKED — {msg}", shown(subject)),
        ErrorCode::InvalidConfig => format!("{}: INVALID — {msg}", shown(subject)),
        ErrorCode::ConfigNotFound | ErrorCode::RevisionNotFound => {
            format!("{}: NOT FOUND — {msg}", shown(subject))
        }
        ErrorCode::ConfigTooLarge => format!("{}: TOO LARGE — {msg}", shown(subject)),
        ErrorCode::NotADraft => format!("{}: NOT A DRAFT — {msg}", shown(subject)),
        ErrorCode::AgentNotFound => format!("{}: NO SUCH AGENT — {msg}", shown(subject)),
        ErrorCode::RolloutNotFound => format!("{}: NO SUCH ROLLOUT — {msg}", shown(subject)),
        ErrorCode::InvalidRollout => format!("{}: INVALID ROLLOUT — {msg}", shown(subject)),
        ErrorCode::RolloutRefused => format!("{}: REFUSED — {msg}", shown(subject)),
        ErrorCode::NoEndpoints => format!("{}: NO ENDPOINTS — {msg}", shown(subject)),
        ErrorCode::GatesUnavailable => {
            format!("{}: GATES UNAVAILABLE — {msg}", shown(subject))
        }
        ErrorCode::NotFound
        | ErrorCode::MethodNotAllowed
        | ErrorCode::PayloadTooLarge
        | ErrorCode::Internal => format!(
            "{}: server error {} — {msg}; check the server's log and that --server points at a \
             Locksmith server of this version",
            shown(subject),
            body.error.as_str()
        ),
    }
}

/// `res: FROZEN — hold 12 by alice@ops: "clearing a stale lock" (1m29s left); …next step`.
fn frozen_line(subject: &str, holds: &[HoldView], msg: &str, wait_flag: &str) -> String {
    let active: Vec<&HoldView> = holds
        .iter()
        .filter(|h| h.state == HoldState::Active)
        .collect();
    let Some(first) = active.first() else {
        // No details: the server's own sentence already names the resource and the hold.
        return if msg.starts_with(subject) {
            msg.to_string()
        } else {
            format!("{}: FROZEN — {msg}", shown(subject))
        };
    };
    let held: Vec<String> = active.iter().map(|h| describe_hold(h)).collect();
    format!(
        "{}: FROZEN — {}; no new grants until it ends: wait for it (retry with {wait_flag}) or lift \
         it early with 'locksmith unhold {}'",
        shown(subject),
        held.join("; "),
        first.record.hold
    )
}

/// `hold 12 by alice@ops: "clearing a stale lock" (1m29s left)`, or `… (pending ack, …)`.
pub fn describe_hold(h: &HoldView) -> String {
    let state = match h.state {
        HoldState::Active => format!("{} left", format_age(h.ends_in_ms)),
        HoldState::PendingAck => format!(
            "PENDING ACK, lapses in {} unless acknowledged",
            format_age(h.ends_in_ms)
        ),
    };
    format!(
        "hold {} by {}: {:?} ({state})",
        h.record.hold, h.record.by, h.record.reason
    )
}

/// The command-line flag behind a request field the server refused.
fn flag_for_field<'a>(field: &'a str, wait_flag: &'a str) -> &'a str {
    match field {
        "resource" => "the resource name",
        "ttl_ms" => "--ttl",
        "wait_ms" => wait_flag,
        "slots" => "--slots",
        "owner.node" => "--node",
        "owner.pid" | "owner.start_time" => "--pid",
        "owner.purpose" => "--purpose",
        "owner.user" => "$USER",
        "operator" | "reported_by" => "--operator",
        "reason" => "--reason",
        "duration_ms" => "--for",
        "freeze_ms" => "--freeze",
        "lock_delay_ms" => "--lock-delay",
        "lease" => "--lease",
        "name" => "--name",
        "role" => "--role",
        "node" => "--node",
        "prefixes" | "prefix" => "--prefix",
        "ttl" => "--ttl",
        other => other,
    }
}

/// A subject as printed: quoted when it would not read as a name (empty, padded, odd bytes).
fn shown(subject: &str) -> String {
    let plain = !subject.is_empty()
        && subject.trim() == subject
        && !subject
            .chars()
            .any(|c| c.is_control() || c == '"' || c == '\\');
    if plain {
        subject.to_string()
    } else {
        format!("{subject:?}")
    }
}

/// The local wall clock, Unix ms: only for phrasing ages.
pub fn wall_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use locksmith_core::{FenceToken, HolderView, LeaseId, Owner};

    const CTX: Context<'static> = Context {
        subject: "aim_lock_config.conf",
        wait_flag: "--wait",
    };

    fn api(body: ErrorBody) -> ClientError {
        ClientError::Api {
            status: body.error.http_status(),
            body: Box::new(body),
        }
    }

    #[test]
    fn hot_names_the_holder_and_the_next_step() {
        let now = wall_now_ms();
        let holder = HolderView {
            lease: LeaseId(7),
            token: FenceToken(42),
            owner: Owner {
                node: "node-7".into(),
                pid: 4121,
                start_time: 99,
                boot_id: "b".into(),
                user: "orchestrator".into(),
                purpose: "update".into(),
                pid_ns: None,
            },
            granted_at_ms: now - 60_000,
            last_heartbeat_ms: now - 2_000,
            ttl_ms: 15_000,
            ttl_left_ms: 13_000,
            stale: false,
        };
        let body = ErrorBody {
            resource: Some("aim_lock_config.conf".into()),
            holders: vec![holder],
            ..ErrorBody::new(ErrorCode::Hot, "server phrasing")
        };
        let f = Failure::from_client(&api(body), CTX);
        assert_eq!(f.exit, Exit::Hot);
        assert!(
            f.line.starts_with(
                "aim_lock_config.conf: HOT — held by orchestrator@node-7 (pid 4121) since "
            ),
            "{}",
            f.line
        );
        assert!(f.line.contains("last heartbeat 2s ago"), "{}", f.line);
        assert!(
            f.line.ends_with(
                "; run 'locksmith locks aim_lock_config.conf' to inspect, or retry with --wait"
            ),
            "{}",
            f.line
        );
    }

    #[test]
    fn invalid_requests_name_the_field_and_its_flag() {
        let body = ErrorBody::invalid("ttl_ms", "must be between 1000 and 86400000 ms (got 0)");
        let f = Failure::from_client(&api(body), CTX);
        assert_eq!(f.exit, Exit::Other);
        assert_eq!(
            f.line,
            "aim_lock_config.conf: invalid ttl_ms — ttl_ms must be between 1000 and 86400000 ms \
             (got 0); fix --ttl and retry"
        );
    }

    #[test]
    fn unreachable_server_says_how_to_start_one() {
        let e = ClientError::Transport {
            server: "http://127.0.0.1:1".into(),
            reason: "connection refused".into(),
        };
        let f = Failure::from_client(&e, CTX);
        assert_eq!(f.exit, Exit::Unavailable);
        assert_eq!(
            f.line,
            "cannot reach the Locksmith server at http://127.0.0.1:1: connection refused; start \
             it with 'locksmith server' or set --server/LOCKSMITH_SERVER"
        );
    }

    #[test]
    fn odd_subjects_are_quoted() {
        let f = Failure::invalid("", "resource", "must not be empty", "name the lock");
        assert_eq!(
            f.line,
            "\"\": invalid resource — must not be empty; name the lock"
        );
    }
}
