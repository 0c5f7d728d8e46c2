//! `locksmith server`: run the lock server until SIGTERM or Ctrl-C, then shut down gracefully.

use std::collections::BTreeMap;

use anyhow::Context as _;
use locksmith_server::fleetlock::FleetLockConfig;
use locksmith_server::{Server, ServerConfig, ServerError};
use locksmith_store::StoreError;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{AuthSwitch, Global, ServerArgs, WireListen};
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
    let fleetlock = fleetlock_config(&args)?;
    raise_open_file_limit();
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
        wire_listen: WireListen::resolve(args.wire_listen, args.listen),
        data_dir: args.data.clone(),
        gc_interval: args.gc_interval,
        probe_interval: args.probe_interval,
        node: global.node.clone(),
        default_lock_delay: args.lock_delay,
        fleetlock,
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections,
        store: locksmith_store::StoreOptions {
            log_segment_bytes: args.log_segment_bytes,
            ..locksmith_store::StoreOptions::default()
        },
        clock: None,
        auth: match args.auth {
            AuthSwitch::On => locksmith_server::AuthMode::On,
            AuthSwitch::Off => locksmith_server::AuthMode::Off,
        },
        metrics_auth: args.metrics_auth,
        max_config_bytes: args.max_config_bytes,
        prometheus_url: args.prometheus_url.clone(),

        tls: args.tls.listeners(),
    };
    if !args.etcd.is_empty() {
        if let Some(WireListen::At(addr)) = args.wire_listen {
            return Err(Failure::invalid(
                SUBJECT,
                "--wire-listen",
                format!("{addr}: cluster mode (--etcd) serves the HTTP API only"),
                "drop --wire-listen, or run without --etcd",
            )
            .into());
        }
        return cluster(global, args, config, shutdown).await;
    }
    // --- TLS (issue 17) ---
    if args.tls.etcd_files() {
        return Err(Failure::invalid(
            SUBJECT,
            "--etcd-ca-file/--etcd-cert/--etcd-key",
            "they are for cluster mode, and --etcd is not given",
            "add --etcd https://… or drop them",
        )
        .into());
    }
    if args.verify_store {
        verify_store(&args.data).await?;
    }
    let server = Server::bind(config).await.map_err(|e| {
        Failure::new(
            Exit::Unavailable,
            SUBJECT,
            "cannot start",
            format!("listen {} data {}: {e}", args.listen, args.data.display()),
            &start_next_step(&e, &args.data),
        )
    })?;
    let wire = server.wire_addr();
    announce_and_serve(server.url(), wire, server.serve(shutdown)).await
}

/// What to do about a failed start, by what failed.
fn start_next_step(error: &ServerError, data: &std::path::Path) -> String {
    const MIB: u64 = 1024 * 1024;
    match error {
        ServerError::Store(StoreError::NoSpace {
            needed, available, ..
        }) => format!(
            "free at least {} MiB more on the filesystem of {}, then start it again",
            needed.saturating_sub(*available).div_ceil(MIB),
            data.display(),
        ),
        ServerError::Store(StoreError::Corrupt(_)) => {
            "restore the data directory from a backup, or move it aside to start empty".to_owned()
        }
        ServerError::Store(StoreError::Open { .. }) => format!(
            "check that {} is writable and that no other server uses it",
            data.display()
        ),
        ServerError::Store(_) => format!(
            "check the disk of {} (free space, dmesg) and the log above, then start it again",
            data.display()
        ),
        ServerError::Bind { .. } => {
            "check that the addresses (--listen, --wire-listen) are free".to_owned()
        }

        ServerError::Tls(_) => {
            "check the file named above (--tls-cert, --tls-key, --tls-client-ca: PEM, the key \
             the certificate's)"
                .to_owned()
        }
        _ => "see the log above, then start it again".to_owned(),
    }
}

/// Raises the soft limit on open files to the hard limit. A server holds a descriptor per
/// client connection, and the soft limit (often 1,024) is a default for interactive shells,
/// not a choice made for it; running out fails accepts (and, before the next log segment was
/// opened ahead, failed storage). The hard limit is the administrator's choice, and is kept.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(
                from = soft,
                to = hard,
                "raised the open-file limit to its hard limit"
            ),
            Err(error) => {
                tracing::warn!(%error, soft, hard, "cannot raise the open-file limit to its hard limit")
            }
        },
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read the open-file limit"),
    }
}

/// `--verify-store`: reads every page of the database file and checks its checksum.
async fn verify_store(data: &std::path::Path) -> Result<(), Failure> {
    let dir = data.to_path_buf();
    let checked = tokio::task::spawn_blocking(move || locksmith_store::EmbeddedStore::check(&dir))
        .await
        .map_err(|e| locksmith_store::StoreError::Io(e.to_string()));
    match checked.and_then(|r| r) {
        Ok(()) => {
            tracing::info!(data = %data.display(), "--verify-store: every page checked");
            Ok(())
        }
        // Nothing to verify yet: a fresh data directory.
        Err(locksmith_store::StoreError::Open { .. })
            if !data
                .join(locksmith_store::EmbeddedStore::FILE_NAME)
                .exists() =>
        {
            Ok(())
        }
        Err(e) => Err(Failure::new(
            Exit::Unavailable,
            SUBJECT,
            "store verification failed",
            format!("data {}: {e}", data.display()),
            "restore the data directory from a backup, or move it aside to start empty",
        )),
    }
}

/// The FleetLock settings from the flags, checked.
fn fleetlock_config(args: &ServerArgs) -> Result<FleetLockConfig, Failure> {
    let mut config = FleetLockConfig {
        prefix: args.fleetlock_prefix.clone(),
        default_slots: args.fleetlock_slots,
        group_slots: BTreeMap::new(),
        stale_after: args.fleetlock_stale_after,
    };
    for g in &args.fleetlock_group_slots {
        if config
            .group_slots
            .insert(g.group.clone(), g.slots)
            .is_some()
        {
            return Err(Failure::invalid(
                SUBJECT,
                "--fleetlock-group-slots",
                format!("group {} is given more than once", g.group),
                "give each group once",
            ));
        }
    }
    config.validate().map_err(|e| {
        Failure::invalid(
            SUBJECT,
            "FleetLock flags",
            e,
            "see `locksmith server --help` (--fleetlock-*)",
        )
    })?;
    Ok(config)
}

#[cfg(feature = "etcd")]
async fn cluster(
    global: &Global,
    args: ServerArgs,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Exit> {
    use locksmith_server::cluster::{ClusterConfig, ClusterServer};
    let endpoints = args.etcd.join(",");
    let mut cluster = ClusterConfig::new(args.etcd.clone());
    cluster.prefix = args.etcd_prefix.clone();
    cluster.advertise = args.advertise.clone();
    cluster.election_ttl = args.election_ttl;
    // --- TLS (issue 17) ---
    cluster.etcd_tls = args.tls.etcd_files().then(|| locksmith_etcd_tls(&args));
    cluster.peer_tls = global.tls.options();
    let server = ClusterServer::bind(config, cluster).await.map_err(|e| {
        Failure::new(
            Exit::Unavailable,
            SUBJECT,
            "cannot start",
            format!("listen {} etcd {endpoints}: {e}", args.listen),
            "check that the address is free and etcd is reachable",
        )
    })?;
    announce_and_serve(server.url(), None, server.serve(shutdown)).await
}

/// The etcd TLS files of the flags.
#[cfg(feature = "etcd")]
fn locksmith_etcd_tls(args: &ServerArgs) -> locksmith_server::cluster::EtcdTls {
    locksmith_server::cluster::EtcdTls {
        ca_file: args.tls.etcd_ca_file.clone(),
        cert: args.tls.etcd_cert.clone(),
        key: args.tls.etcd_key.clone(),
    }
}

#[cfg(not(feature = "etcd"))]
async fn cluster(
    _global: &Global,
    _args: ServerArgs,
    _config: ServerConfig,
    _shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Exit> {
    Err(Failure::invalid(
        SUBJECT,
        "--etcd",
        "this build has no cluster mode",
        "rebuild with `cargo build --release --features etcd` (needs protoc)",
    )
    .into())
}

/// Prints the `locksmith listening on URL` line (tests and scripts read it to learn the port;
/// the URL is `https://` with TLS) and, if there is one, the wire protocol's `locksmith wire
/// protocol on` line; then serves until `serve` ends.
async fn announce_and_serve(
    url: String,
    wire: Option<std::net::SocketAddr>,
    serve: impl std::future::Future<Output = Result<(), locksmith_server::ServerError>>,
) -> anyhow::Result<Exit> {
    out(&format!("locksmith listening on {url}"))?;
    if let Some(wire) = wire {
        out(&format!("locksmith wire protocol on {wire}"))?;
    }
    serve.await.map_err(|e| {
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
