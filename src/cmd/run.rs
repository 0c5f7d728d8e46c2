//! `locksmith run RESOURCE -- CMD…`: run a command while holding a lock, like flock(1).
//!
//! The lease is owned by this `run` process and kept alive by a [`LeaseGuard`]. If the lease
//! is lost, the command is stopped at once: its writes are no longer protected. If `run` itself
//! dies (even by SIGKILL), its heartbeats stop and the server reclaims the lock after the TTL.

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context as _;
use locksmith_api::{LeaseView, format_age};
use locksmith_client::{LeaseGuard, LeaseLost, ReleaseError};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::signal::unix::{Signal as UnixSignal, SignalKind, signal};

use crate::cli::{Global, RunArgs};
use crate::exit::Exit;
use crate::failure::{Context, Failure};
use crate::identity;

/// How long to wait without `-n`/`-w`: the server's maximum wait, 24 h.
const DEFAULT_WAIT: Duration = Duration::from_secs(24 * 3600);
/// How long a command gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How the command's run ended.
enum Ending {
    Exited(ExitStatus),
    Lost(LeaseLost),
}

pub async fn run(global: &Global, args: RunArgs) -> anyhow::Result<Exit> {
    let wait = if args.no_wait {
        Duration::ZERO
    } else {
        args.wait.unwrap_or(DEFAULT_WAIT)
    };
    let resource = args.resource.as_str();
    let shown_cmd = identity::clean_purpose(&args.command.join(" "));
    let req = super::acquire_request(
        global,
        resource,
        &args.lock,
        std::process::id(),
        wait,
        || shown_cmd.clone(),
    )?;
    let ctx = Context {
        subject: resource,
        wait_flag: "-w",
    };
    let client = super::client(global, ctx)?;
    // Until the lock is granted, SIGTERM and SIGINT keep their default action: they end the
    // wait, and the server drops a waiter whose connection closes.
    let lease = client
        .acquire(&req)
        .await
        .map_err(|e| Failure::from_client(&e, ctx))?;
    let guard = LeaseGuard::start(client.clone(), lease.clone());

    let (mut sigterm, mut sigint, mut child) = match start(&args.command, &lease, client.base()) {
        Ok(started) => started,
        Err(e) => {
            release_quietly(guard).await;
            return Err(e);
        }
    };
    let child_pid = child.id();

    let ending = loop {
        tokio::select! {
            status = child.wait() => break Ending::Exited(status.context("waiting for the command")?),
            lost = guard.lost() => break Ending::Lost(lost),
            Some(()) = sigterm.recv() => forward(child_pid, Signal::SIGTERM),
            Some(()) = sigint.recv() => forward(child_pid, Signal::SIGINT),
        }
    };

    match ending {
        Ending::Exited(status) => finish(guard, &lease, &shown_cmd, status).await,
        Ending::Lost(why) => {
            let pid = child_pid.unwrap_or_default();
            match &why {
                // The safe bypass: name who broke it and why, then stop the command.
                LeaseLost::Broken { by, reason } => Failure::new(
                    Exit::LeaseLost,
                    resource,
                    &format!("lease BROKEN by {by}: {reason}"),
                    format!("stopping '{shown_cmd}' (pid {pid})"),
                    "its writes are no longer protected by the lock",
                ),
                LeaseLost::Ended(_) | LeaseLost::Unreachable(_) => Failure::new(
                    Exit::LeaseLost,
                    resource,
                    "LEASE LOST",
                    &why,
                    &format!(
                        "stopping '{shown_cmd}' (pid {pid}): its writes are no longer protected \
                         by the lock"
                    ),
                ),
            }
            .report();
            stop(&mut child).await;
            release_quietly(guard).await;
            Ok(Exit::LeaseLost)
        }
    }
}

/// From here on SIGTERM and SIGINT are forwarded to the command, which is spawned.
fn start(
    command: &[String],
    lease: &LeaseView,
    server: &str,
) -> anyhow::Result<(UnixSignal, UnixSignal, Child)> {
    let sigterm = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let sigint = signal(SignalKind::interrupt()).context("cannot watch for SIGINT")?;
    let child =
        spawn(command, lease, server).map_err(|e| spawn_failure(&lease.resource, command, &e))?;
    Ok((sigterm, sigint, child))
}

fn spawn(command: &[String], lease: &LeaseView, server: &str) -> io::Result<Child> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no command given"))?;
    Command::new(program)
        .args(args)
        .env("LOCKSMITH_TOKEN", lease.token.to_string())
        .env("LOCKSMITH_LEASE", lease.lease.to_string())
        .env("LOCKSMITH_RESOURCE", &lease.resource)
        .env("LOCKSMITH_SERVER", server)
        .spawn()
}

fn spawn_failure(resource: &str, command: &[String], e: &io::Error) -> Failure {
    let program = command.first().map_or("", String::as_str);
    let (exit, next) = match e.kind() {
        io::ErrorKind::NotFound => (Exit::CommandNotFound, "check the command name and PATH"),
        _ => (
            Exit::CannotExecute,
            "check that the command is an executable file",
        ),
    };
    Failure::new(
        exit,
        resource,
        &format!("cannot run '{program}'"),
        e,
        &format!("{next}; the lock was released"),
    )
}

/// Releases the lock after the command exited and passes its status through — unless the lease
/// had ended meanwhile: then the command's last writes may not have been protected.
async fn finish(
    guard: LeaseGuard,
    lease: &LeaseView,
    shown_cmd: &str,
    status: ExitStatus,
) -> anyhow::Result<Exit> {
    match guard.release().await {
        Ok(()) => Ok(Exit::for_child(status)),
        Err(ReleaseError::Lost(lost)) => {
            let next = "its last writes may not have been protected by the lock; check them";
            let failure = match lost {
                LeaseLost::Broken { by, reason } => Failure::new(
                    Exit::LeaseLost,
                    &lease.resource,
                    &format!("lease BROKEN by {by}: {reason}"),
                    format!("it was broken before '{shown_cmd}' exited"),
                    next,
                ),
                LeaseLost::Ended(_) | LeaseLost::Unreachable(_) => Failure::new(
                    Exit::LeaseLost,
                    &lease.resource,
                    "LEASE LOST",
                    format!("the lease ended before '{shown_cmd}' exited ({lost})"),
                    next,
                ),
            };
            Err(failure.into())
        }
        Err(ReleaseError::Failed(e)) => {
            // Not an error of the command's: say so once, and pass its status through.
            Failure::new(
                Exit::for_client(&e),
                &lease.resource,
                "not released",
                e,
                &format!(
                    "the server reclaims lease {} when its TTL ({}) runs out",
                    lease.lease,
                    format_age(lease.ttl_ms)
                ),
            )
            .warn();
            Ok(Exit::for_child(status))
        }
    }
}

/// Best-effort release once the outcome is already decided (it may have ended server-side).
async fn release_quietly(guard: LeaseGuard) {
    let _ = tokio::time::timeout(Duration::from_secs(2), guard.release()).await;
}

fn forward(pid: Option<u32>, sig: Signal) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    if let Err(e) = kill(Pid::from_raw(pid), sig) {
        tracing::warn!(pid, signal = %sig, error = %e, "could not forward signal to the command");
    }
}

/// SIGTERM, up to [`STOP_GRACE`] to exit, then SIGKILL.
async fn stop(child: &mut Child) {
    forward(child.id(), Signal::SIGTERM);
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        if let Err(e) = child.kill().await {
            tracing::warn!(error = %e, "could not kill the command");
        }
    }
}
