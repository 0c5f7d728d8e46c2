//! # locksmith-auth
//!
//! Who may do what, as a plain state machine: API tokens (their secrets, hashes and records),
//! the roles they carry, the permission every route declares, and the check that a principal
//! may act on a resource or for a node. Like `locksmith-core` it does no IO and reads no clock:
//! callers pass `now` and the random bytes of a new secret, and persist what it returns.
//!
//! What it is not: a transport. The server extracts a bearer token (HTTP) or an auth frame
//! (wire protocol), asks [`TokenTable::authenticate`] for the [`Principal`], and checks the
//! route's [`Permission`] with [`Principal::allows`] and the request's target with
//! [`Principal::may`].
//!
//! Invariants:
//! - a secret is never stored: only its SHA-256, compared in constant time;
//! - a revoked or expired token authenticates nobody, from the instant the table knows it;
//! - every role's powers are listed in one place ([`Role::grants`]); a node-bound principal
//!   acts only as its node.

mod access;
mod secret;
mod token;

pub use access::{Access, Forbidden, Permission, Role};
pub use secret::{SECRET_PREFIX, Secret, SecretHash, hash_secret};
pub use token::{
    AuthError, CreateToken, InvalidToken, Principal, RevokeError, TOKEN_SPACE, TokenRecord,
    TokenTable, TokenView,
};
