//! Client errors: either the server said no (with its stable code), or we could not talk to it.

use locksmith_api::{ErrorBody, ErrorCode};
use thiserror::Error;

/// What went wrong with a call.
#[derive(Debug, Clone, Error)]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{}", body.message)]
    Api {
        /// HTTP status.
        status: u16,
        /// The error body, with its stable code and details.
        body: Box<ErrorBody>,
    },
    /// The server's address is not an `http://` or `https://` URL with a host: no call was made.
    #[error("--server {server:?} is not a Locksmith server URL: {reason}")]
    InvalidUrl {
        /// The address given.
        server: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The token given to the client cannot be sent: no call was made. The reason never
    /// quotes the token.
    #[error("the token is not a Locksmith token: {reason}")]
    InvalidToken {
        /// What is wrong with it.
        reason: String,
    },
    /// A config name the server would refuse (the config store's rule): no call was made.
    #[error("{0}")]
    InvalidConfigName(#[from] locksmith_config::InvalidName),
    /// A node name no URL can carry as one path segment (empty, `.` or `..`): no call was made.
    #[error("node name {node:?} cannot be used: it must not be empty, `.` or `..`")]
    InvalidNode {
        /// The name given.
        node: String,
    },
    /// A rollout id no URL can carry as one path segment (empty, `.` or `..`): no call was
    /// made.
    #[error("rollout id {id:?} cannot be used: rollout ids look like ro-4")]
    InvalidRolloutId {
        /// The id given.
        id: String,
    },
    /// The server could not be reached or the connection failed mid-call.
    #[error("cannot reach the Locksmith server at {server}: {reason}")]
    Transport {
        /// The server's base URL.
        server: String,
        /// What failed.
        reason: String,
    },
    /// TLS with the server failed: its certificate is not trusted (no `--ca-file`, or the
    /// wrong one) or names another host, it refused this client's certificate, or it does not
    /// speak TLS. The reason says which, and what to do.
    #[error("TLS with the Locksmith server at {server} failed: {reason}")]
    Tls {
        /// The server's base URL (or wire address).
        server: String,
        /// What failed, and the next step.
        reason: String,
    },
    /// The TLS settings (`--ca-file`, `--cert`, `--key`) cannot be used: no call was made.
    #[error("cannot use the TLS settings: {0}")]
    TlsSetup(#[from] crate::tls::TlsSetupError),
    /// The server's answer could not be decoded.
    #[error("unexpected answer from {server}: {reason}")]
    Decode {
        /// The server's base URL.
        server: String,
        /// What failed.
        reason: String,
    },
}

impl ClientError {
    /// The server's error code, if the server answered.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { body, .. } => Some(body.error),
            _ => None,
        }
    }

    /// The error body, if the server answered.
    pub fn body(&self) -> Option<&ErrorBody> {
        match self {
            ClientError::Api { body, .. } => Some(body),
            _ => None,
        }
    }
}
