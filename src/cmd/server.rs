//! `locksmith server`: run the lock server until SIGTERM or Ctrl-C, then shut down gracefully.

use anyhow::Context as _;
use locksmith_server::{Server, ServerConfig};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{Global, ServerArgs};
use crate::exit::Exit;
use crate::failure::Failure;
use crate::output::out;

const SUBJECT: &str = "locksmith server";

pub async fn server(global: &Global, args: ServerArgs) -> anyhow::Result<Exit> {
    if args.gc_interval.is_zero() {
        return Err(Failure::invalid(
            SUBJECT,
            "--gc-interval",
            "must be more than 0",
            "pass e.g. --gc-interval 1s",
        )
        .into());
    }
    // Watch for signals before announcing the address: whoever reads the line may stop us.
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch for SIGINT")?;
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = sigint.recv() => tracing::info!("interrupted: shutting down"),
        }
    };
    let config = ServerConfig {
        listen: args.listen,
        data_dir: args.data.clone(),
        gc_interval: args.gc_interval,
        probe_interval: args.probe_interval,
        node: global.node.clone(),
        default_lock_delay: args.lock_delay,
    };
    let server = Server::bind(config).await.map_err(|e| {
        Failure::new(
            Exit::Unavailable,
            SUBJECT,
            "cannot start",
            format!("listen {} data {}: {e}", args.listen, args.data.display()),
            "check that the address is free and the data directory is writable",
        )
    })?;
    out(&format!(
        "locksmith listening on http://{}",
        server.local_addr()
    ))?;
    server.serve(shutdown).await.map_err(|e| {
        Failure::new(
            Exit::Unavailable,
            SUBJECT,
            "stopped",
            e,
            "see the log above, then restart it",
        )
    })?;
    Ok(Exit::Ok)
}
