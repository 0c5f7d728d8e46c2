//! # locksmith-client
//!
//! A typed async client for the Locksmith `/v1` API, a [`WireClient`] for the hot operations
//! (acquire, renew, release, fence check) over the binary wire protocol, the [`LeaseApi`] trait
//! both implement (as does the server's in-process transport), and a [`LeaseGuard`] that keeps
//! a lease alive over any of them by heartbeating at a third of its TTL and tells its owner the
//! moment the lease is lost. Both transports speak TLS ([`TlsOptions`]: `https://` URLs,
//! [`WireClient::with_tls`]), with a client certificate for servers that ask for one.
//!
//! What it is not: a retry policy for acquire (the caller decides whether to wait, via
//! `wait_ms`) or a cache; every call goes to the server.
//!
//! The config store's calls (`Client::configs`, `Client::write_config`, …) are in [`configs`],
//! with the content codec (text, or base64 for bytes that are not UTF-8); the agents and fleet
//! calls (`Client::register_agent`, `Client::desired_stream`, `Client::fleet`, …) in `agents`;
//! the rollouts calls (`Client::start_rollout`, `Client::rollout_events`, …) in `rollouts`.

mod agents;
mod client;
pub mod configs;
mod error;
pub mod events;
mod guard;
mod rollouts;
pub mod tls;
mod transport;
mod wire;

pub use client::{Client, check_base_url};
pub use error::ClientError;
pub use guard::{LeaseGuard, LeaseLost, ReleaseError};
pub use locksmith_api as api;
pub use tls::TlsOptions;
pub use transport::LeaseApi;
pub use wire::WireClient;
