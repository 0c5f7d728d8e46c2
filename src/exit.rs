//! Exit codes: every outcome of the CLI maps to one here, and nowhere else.

use locksmith_api::ErrorCode;
use locksmith_client::ClientError;

/// How `locksmith` exits. `run` passes its child's status through instead, unless the lock
/// could not be taken or was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done.
    Ok,
    /// 1: any other error: invalid request or input, unexpected answer, or an operator action
    /// the server refused (unknown hold, acknowledging one's own hold or one already in force,
    /// nothing to break).
    Other,
    /// 2: usage error, reported by clap itself (listed here for the help text).
    Usage,
    /// 3: the lock cannot be had now: HOT (held by someone else, the wait timed out, slots
    /// mismatch, or already held by this process with another TTL), FROZEN (an operator's hold)
    /// or DELAYED (lock-delay after a failed holder).
    Hot,
    /// 4: the lease was lost or has ended (expired, released, never granted, stale token,
    /// broken by an operator).
    LeaseLost,
    /// 5: the server is unreachable or unavailable (storage failed, shutting down, TLS handshake
    /// failed, cannot start).
    Unavailable,
    /// 6: `status` found problems (each is listed with its next step).
    Problems,
    /// 7: access denied — no token, or one the server does not accept (401 `unauthenticated`:
    /// malformed, unknown, revoked, expired), or one whose role, prefixes or node do not allow
    /// the request (403 `forbidden`); also a token file that cannot be read. Retrying will not
    /// help: a script should stop and say which token to fix.
    Denied,
    /// 8: `rollout status --watch` followed a rollout to an end other than success: rolled
    /// back, frozen, aborted, or cancelled while queued. The outcome lists where every endpoint
    /// was left.
    RolloutNotSucceeded,
    /// 126: `run` found the command but could not execute it.
    CannotExecute,
    /// 127: `run` could not find the command.
    CommandNotFound,
    /// `run` passes its command's status through: its exit code, or 128+N if killed by signal N.
    Child(u8),
}

/// The exit-code table printed at the end of `locksmith --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  ok (`status`: ALL CLEAR)
  1  other error (invalid request or input; refused operator action: unknown hold, own-hold ack,
     ack of a hold already in force, nothing to break)
  2  usage error
  3  HOT: the lock is held by someone else, the wait timed out, or --slots mismatch (or --ttl
     mismatch with this process's own lease); also FROZEN (an operator's hold is in force) and
     DELAYED (lock-delay after a failed holder)
  4  lease lost or ended (expired, released, unknown lease, stale token, broken by an operator,
     or lost during `run`)
  5  server unreachable or unavailable (storage failed, shutting down, no leader, too many
     connections, TLS handshake failed, server cannot start)
  6  `status` found problems (each printed with its next step)
  7  access denied: no token or one the server refuses (unauthenticated: malformed, unknown,
     revoked, expired), one whose role, prefixes or node do not allow this (forbidden), or a
     token file that cannot be read
  8  `rollout status --watch`: the rollout ended without succeeding (rolled back, frozen,
     aborted or cancelled); the landing revision of every endpoint is listed
`run` exits with its command's status (128+N if killed by signal N; 126/127 if it cannot be
executed or found), or with 3, 4, 5 or 7 when the lock could not be taken or was lost.";

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Other => 1,
            Exit::Usage => 2,
            Exit::Hot => 3,
            Exit::LeaseLost => 4,
            Exit::Unavailable => 5,
            Exit::Problems => 6,
            Exit::Denied => 7,
            Exit::RolloutNotSucceeded => 8,
            Exit::CannotExecute => 126,
            Exit::CommandNotFound => 127,
            Exit::Child(code) => code,
        }
    }

    /// The exit that passes a finished child's status through, as shells report it.
    pub fn for_child(status: std::process::ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        Exit::for_child_parts(status.code(), status.signal())
    }

    /// [`Exit::for_child`] from the parts of a status: its exit code, or the signal that
    /// killed it (128+N).
    pub fn for_child_parts(code: Option<i32>, signal: Option<i32>) -> Exit {
        let code = match (code, signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            // Neither exited nor killed (stopped): cannot happen for a reaped child.
            (None, None) => 1,
        };
        Exit::Child(u8::try_from(code & 0xff).unwrap_or(1))
    }

    /// The exit for an error code the server answered with.
    pub fn for_code(code: ErrorCode) -> Exit {
        match code {
            ErrorCode::Hot
            | ErrorCode::SlotsMismatch
            | ErrorCode::TtlMismatch
            | ErrorCode::Frozen
            | ErrorCode::LockDelay => Exit::Hot,
            ErrorCode::LeaseExpired
            | ErrorCode::NotHolder
            | ErrorCode::StaleToken
            | ErrorCode::Broken => Exit::LeaseLost,
            ErrorCode::StorageFailed
            | ErrorCode::ShuttingDown
            | ErrorCode::NoLeader
            | ErrorCode::TooManyConnections => Exit::Unavailable,
            ErrorCode::Unauthenticated | ErrorCode::Forbidden => Exit::Denied,
            ErrorCode::HoldNotFound
            | ErrorCode::SameOperator
            | ErrorCode::AlreadyAcknowledged
            | ErrorCode::AckNotRequired
            | ErrorCode::NotHeld
            | ErrorCode::NotSameNode
            | ErrorCode::WrongProcess
            | ErrorCode::HolderAlive
            | ErrorCode::TooManyRequests
            | ErrorCode::InvalidJson
            | ErrorCode::InvalidRequest
            | ErrorCode::NotFound
            | ErrorCode::MethodNotAllowed
            | ErrorCode::PayloadTooLarge
            | ErrorCode::TokenNotFound
            | ErrorCode::AlreadyRevoked
            | ErrorCode::InvalidConfig
            | ErrorCode::ConfigNotFound
            | ErrorCode::RevisionNotFound
            | ErrorCode::ConfigTooLarge
            | ErrorCode::NotADraft
            | ErrorCode::AgentNotFound
            | ErrorCode::RolloutNotFound
            | ErrorCode::InvalidRollout
            | ErrorCode::RolloutRefused
            | ErrorCode::NoEndpoints
            | ErrorCode::GatesUnavailable
            | ErrorCode::Internal => Exit::Other,
        }
    }

    /// The exit for a failed call.
    pub fn for_client(e: &ClientError) -> Exit {
        match e {
            ClientError::Api { body, .. } => Exit::for_code(body.error),
            ClientError::InvalidUrl { .. } => Exit::Usage,
            ClientError::InvalidToken { .. } => Exit::Denied,
            ClientError::Transport { .. } | ClientError::Tls { .. } => Exit::Unavailable,
            ClientError::TlsSetup(_)
            | ClientError::InvalidConfigName(_)
            | ClientError::InvalidNode { .. }
            | ClientError::InvalidRolloutId { .. } => Exit::Other,
            ClientError::Decode { .. } => Exit::Other,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use locksmith_api::ErrorBody;

    #[test]
    fn server_verdicts_map_to_documented_codes() {
        let api = |code: ErrorCode| ClientError::Api {
            status: code.http_status(),
            body: Box::new(ErrorBody::new(code, "x")),
        };
        assert_eq!(Exit::for_client(&api(ErrorCode::Hot)).code(), 3);
        assert_eq!(Exit::for_client(&api(ErrorCode::SlotsMismatch)).code(), 3);
        assert_eq!(Exit::for_client(&api(ErrorCode::TtlMismatch)).code(), 3);
        assert_eq!(Exit::for_client(&api(ErrorCode::LeaseExpired)).code(), 4);
        assert_eq!(Exit::for_client(&api(ErrorCode::NotHolder)).code(), 4);
        assert_eq!(Exit::for_client(&api(ErrorCode::StaleToken)).code(), 4);
        assert_eq!(Exit::for_client(&api(ErrorCode::Frozen)).code(), 3);
        assert_eq!(Exit::for_client(&api(ErrorCode::LockDelay)).code(), 3);
        assert_eq!(Exit::for_client(&api(ErrorCode::Broken)).code(), 4);
        assert_eq!(Exit::for_client(&api(ErrorCode::SameOperator)).code(), 1);
        assert_eq!(
            Exit::for_client(&api(ErrorCode::AlreadyAcknowledged)).code(),
            1
        );
        assert_eq!(Exit::for_client(&api(ErrorCode::AckNotRequired)).code(), 1);
        assert_eq!(Exit::for_client(&api(ErrorCode::HoldNotFound)).code(), 1);
        assert_eq!(Exit::for_client(&api(ErrorCode::NotHeld)).code(), 1);
        assert_eq!(Exit::for_client(&api(ErrorCode::StorageFailed)).code(), 5);
        assert_eq!(Exit::for_client(&api(ErrorCode::InvalidRequest)).code(), 1);
        assert_eq!(Exit::for_client(&api(ErrorCode::Unauthenticated)).code(), 7);
        assert_eq!(Exit::for_client(&api(ErrorCode::Forbidden)).code(), 7);
        assert_eq!(Exit::for_client(&api(ErrorCode::TokenNotFound)).code(), 1);
        assert_eq!(Exit::for_client(&api(ErrorCode::AlreadyRevoked)).code(), 1);
        for config in [
            ErrorCode::InvalidConfig,
            ErrorCode::ConfigNotFound,
            ErrorCode::RevisionNotFound,
            ErrorCode::ConfigTooLarge,
            ErrorCode::NotADraft,
            ErrorCode::AgentNotFound,
        ] {
            assert_eq!(Exit::for_client(&api(config)).code(), 1, "{config:?}");
        }
        let bad_name = locksmith_config::validate_name("..").expect_err("refused");
        assert_eq!(
            Exit::for_client(&ClientError::InvalidConfigName(bad_name)).code(),
            1
        );
        let down = ClientError::Transport {
            server: "http://127.0.0.1:1".into(),
            reason: "refused".into(),
        };
        assert_eq!(Exit::for_client(&down).code(), 5);
    }

    #[test]
    fn child_status_passes_through_like_a_shell() {
        use std::os::unix::process::ExitStatusExt;
        use std::process::ExitStatus;
        assert_eq!(Exit::for_child(ExitStatus::from_raw(7 << 8)).code(), 7);
        assert_eq!(Exit::for_child(ExitStatus::from_raw(0)).code(), 0);
        assert_eq!(Exit::for_child(ExitStatus::from_raw(9)).code(), 137);
        assert_eq!(Exit::for_child(ExitStatus::from_raw(15)).code(), 143);
    }

    #[test]
    fn help_lists_every_cli_code() {
        for exit in [
            Exit::Ok,
            Exit::Other,
            Exit::Usage,
            Exit::Hot,
            Exit::LeaseLost,
            Exit::Unavailable,
            Exit::Problems,
            Exit::Denied,
            Exit::RolloutNotSucceeded,
            Exit::CannotExecute,
            Exit::CommandNotFound,
        ] {
            assert!(
                EXIT_CODES_HELP.contains(&exit.code().to_string()),
                "{exit:?} missing from the help"
            );
        }
    }
}
