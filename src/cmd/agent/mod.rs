//! `locksmith agent`: the endpoint agent's process. The logic is the phase-1 core
//! (`locksmith_agent`): here only its wiring —
//!
//! - `settings`: the command line and the agent file;
//! - `apply`: the thread that runs the synchronous `Driver` (and the crash test hook);
//! - `session_sink`: the apply thread's end of the network side (`locksmith_sim::net`: register,
//!   the desired stream with reconnects, heartbeats, fetches, reports);
//! - `probe`: the ghost prober.

mod apply;
mod probe;
mod session_sink;
mod settings;

use std::time::Duration;

use anyhow::Context as _;
use locksmith_api::agents::RegisterAgentRequest;
use locksmith_host::verdict::Here;
use locksmith_sim::net as session;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::cli::{AgentArgs, Global};
use crate::exit::Exit;
use crate::failure::{Context, Failure};

pub use settings::parse_labels;

/// How long a stop waits for an apply under way (its hooks have their own timeouts).
const STOP_GRACE: Duration = Duration::from_secs(60);

pub async fn agent(global: &Global, args: AgentArgs) -> anyhow::Result<Exit> {
    let node = super::this_node(global).map_err(|e| {
        Failure::new(
            Exit::Other,
            "locksmith agent",
            "cannot name this node",
            &e,
            "pass --node NAME (the name its node token is bound to)",
        )
    })?;
    let ctx = Context {
        subject: &node,
        wait_flag: "--wait",
    };
    let settings = settings::Settings::from_args(&args).map_err(|e| {
        Failure::new(
            Exit::Usage,
            "locksmith agent",
            "cannot start",
            &e,
            "fix the flag or the agent file (see docs/agent.md)",
        )
    })?;
    let client = super::client(global, ctx)?;
    let boot_id = locksmith_host::boot_id().unwrap_or_default();
    let here = Here::detect(Some(&node));
    let who = session::Identity {
        node: node.clone(),
        register: RegisterAgentRequest {
            labels: settings.labels.clone(),
            boot_id,
            version: env!("CARGO_PKG_VERSION").to_string(),
            configs: settings
                .spec
                .configs
                .iter()
                .map(|c| c.name.clone())
                .collect(),
        },
    };
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch for SIGINT")?;

    let (events, events_rx) = apply::Events::channel();
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let thread = apply::start(settings.spec.clone(), events_rx, out_tx).map_err(|e| {
        Failure::new(
            Exit::Other,
            &settings.spec.state_dir.display().to_string(),
            "cannot open the agent's state",
            format!("{e:#}"),
            "check the state directory's permissions (--state-dir)",
        )
    })?;
    let (online_tx, online_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let inline = session::Inline::default();
    tasks.spawn(session::serve(
        client.clone(),
        node.clone(),
        out_rx,
        events.clone(),
        online_rx.clone(),
        inline.clone(),
    ));
    tasks.spawn(session::heartbeat(
        client.clone(),
        node.clone(),
        settings.heartbeat_interval,
        online_rx,
    ));
    tasks.spawn(session::stream_forever(
        client.clone(),
        who,
        events.clone(),
        online_tx,
        settings.max_backoff,
        inline,
    ));
    if !settings.probe_interval.is_zero() {
        match here {
            Ok(here) => {
                tasks.spawn(probe::probe_forever(
                    client.clone(),
                    here,
                    settings.probe_interval,
                ));
            }
            Err(e) => tracing::warn!("ghost prober off: cannot tell this node's identity: {e}"),
        }
    }
    eprintln!(
        "locksmith agent {node}: applying {} config(s) from {}",
        settings.spec.configs.len(),
        client.base()
    );
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    // Stop: the apply under way finishes (or rolls back) first; nothing new starts.
    tasks.abort_all();
    events.stop();
    let joined = tokio::task::spawn_blocking(move || thread.join());
    let _ = tokio::time::timeout(STOP_GRACE, joined).await;
    Ok(Exit::Ok)
}
