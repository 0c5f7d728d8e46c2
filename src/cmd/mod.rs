//! One module per command; `main::dispatch` calls them. Shared here: how a lock request and a
//! client are built from the command line.

pub mod acquire;
pub mod agent;
pub mod audit;
pub mod completions;
pub mod config;
pub mod demo;
pub mod fleet;
pub mod holds;
pub mod lease;
pub mod liveness;
pub mod locks;
pub mod rollout;
pub mod run;
pub mod server;
pub mod status;
pub mod token;
pub mod watch;
pub mod why;

use std::time::Duration;

use locksmith_api::AcquireRequest;
use locksmith_client::Client;
use locksmith_core::validate_resource;

use crate::cli::{Global, LockOptions};
use crate::exit::Exit;
use crate::failure::{Context, Failure};
use locksmith_host::IdentityError;

/// A client for `--server` (TLS to an https:// one as --ca-file, --cert and --key say),
/// sending the token discovery finds (see `crate::credentials`).
pub fn client(global: &Global, ctx: Context<'_>) -> Result<Client, Failure> {
    let client = Client::with_tls(global.server.as_str(), &global.tls.options())
        .map_err(|e| Failure::from_client(&e, ctx))?;
    let found = crate::credentials::discover(global.token.as_ref(), global.token_file.as_deref())?;
    match &found.token {
        Some((secret, _)) => client
            .with_token(secret.expose())
            .map_err(|e| Failure::from_client(&e, ctx)),
        None => Ok(client),
    }
}

/// Refuses a bad resource name before any round trip, with the same rule the server applies.
pub fn check_resource(name: &str) -> Result<(), Failure> {
    validate_resource(name).map_err(|e| {
        Failure::invalid(
            name,
            "resource name",
            e.reason,
            "name the lock like a path, e.g. configs/aim_lock_config.conf",
        )
    })
}

/// The acquire request for `resource`, owned by process `pid` on this node.
pub fn acquire_request(
    global: &Global,
    resource: &str,
    lock: &LockOptions,
    pid: u32,
    wait: Duration,
    default_purpose: impl FnOnce() -> String,
) -> Result<AcquireRequest, Failure> {
    check_resource(resource)?;
    let owner = locksmith_host::owner(
        global.node.as_deref(),
        pid,
        lock.purpose.as_deref(),
        default_purpose,
    )
    .map_err(|e| {
        Failure::new(
            Exit::Other,
            resource,
            "cannot name the lock owner",
            &e,
            e.next_step(),
        )
    })?;
    Ok(AcquireRequest {
        resource: resource.to_string(),
        owner,
        ttl_ms: Some(millis(lock.ttl)),
        wait_ms: Some(millis(wait)),
        slots: Some(lock.slots),
        lock_delay_ms: lock.lock_delay.map(millis),
    })
}

/// This node's name: `--node`, else the host name.
pub fn this_node(global: &Global) -> Result<String, IdentityError> {
    match &global.node {
        Some(n) => Ok(n.clone()),
        None => locksmith_host::hostname(),
    }
}

/// Who acts, for holds, acknowledgements, breaks and liveness reports: `--operator`, else
/// `USER@NODE`.
pub fn operator(global: &Global) -> Result<String, Failure> {
    if let Some(op) = &global.operator {
        if op.trim().is_empty() {
            return Err(Failure::invalid(
                "locksmith",
                "--operator",
                "must not be empty",
                "name yourself, e.g. --operator alice@ops (or unset LOCKSMITH_OPERATOR)",
            ));
        }
        return Ok(op.clone());
    }
    let node = this_node(global).map_err(|e| {
        Failure::new(
            Exit::Other,
            "locksmith",
            "cannot name the operator",
            &e,
            "pass --operator NAME or set LOCKSMITH_OPERATOR",
        )
    })?;
    Ok(format!("{}@{node}", locksmith_host::user()))
}

/// A reason an operator must give: refused when empty, before any round trip.
pub fn require_reason(subject: &str, reason: &str) -> Result<String, Failure> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(Failure::invalid(
            subject,
            "--reason",
            "must not be empty: it is recorded in the audit trail and shown to whoever is refused",
            "say why, e.g. --reason \"stopping the orchestrator for 90 s to clear a stale lock\"",
        ));
    }
    Ok(reason.to_string())
}

/// A duration in whole milliseconds, as the API counts them.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
