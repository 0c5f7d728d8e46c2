//! # locksmith-api
//!
//! The wire contract between Locksmith servers and clients: request and response bodies, the
//! stable error codes with their one HTTP status each, and the human phrasing of a refusal
//! (`aim_lock_config.conf: HOT — held by …`) shared by the server's messages and the CLI.
//!
//! What it is not: an HTTP server or client — just types and pure functions, so both sides and
//! third-party clients agree on one definition.

pub mod agents;
pub mod configs;
mod error;
pub mod fleetlock;
pub mod frame;
mod human;
pub mod rollouts;
mod tokens;
mod wire;

pub use error::{ErrorBody, ErrorCode};
pub use human::{
    describe_holder, expires, format_age, format_wall, hot_line, owner_name, ttl_left,
};
pub use tokens::*;
pub use wire::*;
