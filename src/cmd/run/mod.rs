//! `locksmith run RESOURCE -- CMD…`: run a command while holding a lock, like flock(1).
//!
//! The command must never run unprotected, so it never outlives the lock:
//!
//! - `run` first starts a supervisor (`supervisor`), and acquires the lock *as the supervisor's
//!   pid*; a [`LeaseGuard`] in `run` keeps the lease alive. The supervisor starts the command
//!   once the lock is held, and kills everything the command started when `run` goes away —
//!   even by SIGKILL — before it exits itself. The server's probe reclaims the lock once its
//!   owner is gone, so that is always after the command is gone, never before.
//! - If the lease is lost (expired, broken, released by someone else), the command is stopped
//!   at once (SIGTERM, then SIGKILL of everything it started): its writes are no longer
//!   protected.
//! - When the command exits, the lock is released once nothing it started is left running.

mod control;
pub mod supervisor;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use locksmith_api::{LeaseView, format_age};
use locksmith_client::{LeaseGuard, LeaseLost, ReleaseError};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::{Child, Command};
use tokio::signal::unix::{Signal as UnixSignal, SignalKind, signal};

use self::control::{Report, Spawn, line};
use crate::cli::{Global, RunArgs};
use crate::exit::Exit;
use crate::failure::{Context, Failure};

/// How long to wait without `-n`/`-w`: the server's maximum wait, 24 h.
const DEFAULT_WAIT: Duration = Duration::from_secs(24 * 3600);
/// How long a command gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The hidden subcommand that runs the supervisor (see `cli::Command::RunSupervisor`).
pub const SUPERVISOR_COMMAND: &str = "run-supervisor";

/// How the command's run ended.
enum Ending {
    Exited(Exit),
    Lost(LeaseLost),
}

pub async fn run(global: &Global, args: RunArgs) -> anyhow::Result<Exit> {
    let wait = if args.no_wait {
        Duration::ZERO
    } else {
        args.wait.unwrap_or(DEFAULT_WAIT)
    };
    let resource = args.resource.as_str();
    super::check_resource(resource)?;
    let shown_cmd = locksmith_host::clean_purpose(&args.command.join(" "));
    let ctx = Context {
        subject: resource,
        wait_flag: "-w",
    };
    let client = super::client(global, ctx)?;
    let mut sup = Supervisor::start().map_err(|e| {
        Failure::new(
            Exit::Other,
            resource,
            "cannot start the command's supervisor",
            e,
            "`run` re-executes itself from /proc/self/exe: check that /proc is mounted",
        )
    })?;
    let req = match super::acquire_request(global, resource, &args.lock, sup.pid, wait, || {
        shown_cmd.clone()
    }) {
        Ok(req) => req,
        Err(f) => {
            sup.finish().await;
            return Err(f.into());
        }
    };
    // Until the lock is granted, SIGTERM and SIGINT keep their default action: they end the
    // wait, the server drops a waiter whose connection closes, and the supervisor exits.
    let lease = match client.acquire(&req).await {
        Ok(lease) => lease,
        Err(e) => {
            sup.finish().await;
            return Err(Failure::from_client(&e, ctx).into());
        }
    };
    let guard = LeaseGuard::start(client.clone(), lease.clone());

    let started = start(&mut sup, &args.command, &lease, client.base(), &shown_cmd).await;
    let (mut sigterm, mut sigint, child_pid) = match started {
        Ok(started) => started,
        Err(e) => {
            release_quietly(guard).await;
            sup.finish().await;
            return Err(e);
        }
    };

    // Once SIGTERM or SIGINT has been passed on, what the command left running gets
    // [`STOP_GRACE`] to end too; then everything left is killed (a process that ignores SIGTERM
    // must not keep the lock, and `run`, forever).
    let mut kill_at: Option<tokio::time::Instant> = None;
    let ending = loop {
        let grace_over = async {
            match kill_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            report = sup.next() => match report {
                Some(Report::Exited { code, signal }) => {
                    break Ending::Exited(Exit::for_child_parts(code, signal));
                }
                Some(_) => {}
                // The supervisor died without a word (killed): its status is what there is.
                None => break Ending::Exited(sup.status().await),
            },
            lost = guard.lost() => break Ending::Lost(lost),
            Some(()) = sigterm.recv() => {
                sup.signal(Signal::SIGTERM);
                kill_at.get_or_insert_with(|| tokio::time::Instant::now() + STOP_GRACE);
            }
            Some(()) = sigint.recv() => {
                sup.signal(Signal::SIGINT);
                kill_at.get_or_insert_with(|| tokio::time::Instant::now() + STOP_GRACE);
            }
            () = grace_over => {
                kill_at = None;
                sup.kill_everything();
            }
        }
    };

    match ending {
        Ending::Exited(exit) => {
            // Released while the supervisor — the lock's owner — still runs, then let it go.
            let result = finish(guard, &lease, &shown_cmd, exit).await;
            sup.finish().await;
            result
        }
        Ending::Lost(why) => {
            match &why {
                // The safe bypass: name who broke it and why, then stop the command.
                LeaseLost::Broken { by, reason } => Failure::new(
                    Exit::LeaseLost,
                    resource,
                    &format!("lease BROKEN by {by}: {reason}"),
                    format!("stopping '{shown_cmd}' (pid {child_pid})"),
                    "its writes are no longer protected by the lock",
                ),
                LeaseLost::Ended(_) | LeaseLost::Unreachable(_) => Failure::new(
                    Exit::LeaseLost,
                    resource,
                    "LEASE LOST",
                    &why,
                    &format!(
                        "stopping '{shown_cmd}' (pid {child_pid}): its writes are no longer \
                         protected by the lock"
                    ),
                ),
            }
            .report();
            sup.stop().await;
            release_quietly(guard).await;
            sup.finish().await;
            Ok(Exit::LeaseLost)
        }
    }
}

/// From here on SIGTERM and SIGINT are forwarded to the command, which the supervisor starts.
/// Returns the signal streams and the command's pid.
async fn start(
    sup: &mut Supervisor,
    command: &[String],
    lease: &LeaseView,
    server: &str,
    shown_cmd: &str,
) -> anyhow::Result<(UnixSignal, UnixSignal, u32)> {
    let sigterm = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let sigint = signal(SignalKind::interrupt()).context("cannot watch for SIGINT")?;
    let (program, args) = command
        .split_first()
        .ok_or_else(|| spawn_failure(&lease.resource, command, None, "no command given"))?;
    let spawn = Spawn {
        program: program.clone(),
        args: args.to_vec(),
        env: vec![
            // Not LOCKSMITH_TOKEN: that is the API token the command's own `locksmith` calls
            // send (inherited, like the rest of the environment).
            ("LOCKSMITH_FENCE_TOKEN".into(), lease.token.to_string()),
            ("LOCKSMITH_LEASE".into(), lease.lease.to_string()),
            ("LOCKSMITH_RESOURCE".into(), lease.resource.clone()),
            ("LOCKSMITH_SERVER".into(), server.to_string()),
        ],
        resource: lease.resource.clone(),
        shown: shown_cmd.to_string(),
    };
    match sup.spawn(&spawn).await {
        Some(Report::Started { pid }) => Ok((sigterm, sigint, pid)),
        Some(Report::Failed { errno, message }) => {
            Err(spawn_failure(&lease.resource, command, errno, &message).into())
        }
        Some(Report::Exited { .. }) | None => Err(spawn_failure(
            &lease.resource,
            command,
            None,
            "its supervisor ended before starting it",
        )
        .into()),
    }
}

fn spawn_failure(resource: &str, command: &[String], errno: Option<i32>, why: &str) -> Failure {
    let program = command.first().map_or("", String::as_str);
    let kind = errno.map(|n| io::Error::from_raw_os_error(n).kind());
    let (exit, next) = match kind {
        Some(io::ErrorKind::NotFound) => (Exit::CommandNotFound, "check the command name and PATH"),
        _ => (
            Exit::CannotExecute,
            "check that the command is an executable file",
        ),
    };
    Failure::new(
        exit,
        resource,
        &format!("cannot run '{program}'"),
        why,
        &format!("{next}; the lock was released"),
    )
}

/// Releases the lock after the command exited and passes its status through — unless the lease
/// had ended meanwhile: then the command's last writes may not have been protected.
async fn finish(
    guard: LeaseGuard,
    lease: &LeaseView,
    shown_cmd: &str,
    exit: Exit,
) -> anyhow::Result<Exit> {
    match guard.release().await {
        Ok(()) => Ok(exit),
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
            Ok(exit)
        }
    }
}

/// Best-effort release once the outcome is already decided (it may have ended server-side).
async fn release_quietly(guard: LeaseGuard) {
    let _ = tokio::time::timeout(Duration::from_secs(2), guard.release()).await;
}

/// `run`'s side of the supervisor: the process, and the control socket to it.
struct Supervisor {
    child: Child,
    pid: u32,
    reports: Option<Lines<BufReader<OwnedReadHalf>>>,
    requests: Option<OwnedWriteHalf>,
}

impl Supervisor {
    /// Starts `locksmith run-supervisor` (this very binary, even if it was replaced on disk
    /// since) with one end of a socket pair; `run` keeps the other, and nothing else has it.
    fn start() -> io::Result<Supervisor> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let theirs = OwnedFd::from(theirs);
        // Inherited by the supervisor alone: `run` starts no other process, and the command is
        // started by the supervisor after it has closed this on exec again.
        fcntl(&theirs, FcntlArg::F_SETFD(FdFlag::empty()))?;
        let child = Command::new("/proc/self/exe")
            .arg0("locksmith")
            .arg(SUPERVISOR_COMMAND)
            .arg(theirs.as_raw_fd().to_string())
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()?;
        drop(theirs);
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("the supervisor exited at once"))?;
        ours.set_nonblocking(true)?;
        let (read, write) = UnixStream::from_std(ours)?.into_split();
        Ok(Supervisor {
            child,
            pid,
            reports: Some(BufReader::new(read).lines()),
            requests: Some(write),
        })
    }

    /// Asks it to start the command and returns its answer (`None`: it is gone).
    async fn spawn(&mut self, spawn: &Spawn) -> Option<Report> {
        let requests = self.requests.as_mut()?;
        requests.write_all(line(spawn).as_bytes()).await.ok()?;
        self.next().await
    }

    /// Its next report; `None` once it has closed the socket (exited). Cancel-safe.
    async fn next(&mut self) -> Option<Report> {
        let reports = self.reports.as_mut()?;
        loop {
            match reports.next_line().await {
                Ok(Some(text)) => match serde_json::from_str(&text) {
                    Ok(report) => return Some(report),
                    Err(e) => tracing::warn!(error = %e, "unreadable report from the supervisor"),
                },
                Ok(None) | Err(_) => {
                    self.reports = None;
                    return None;
                }
            }
        }
    }

    /// Passes a signal on (it forwards it to the command).
    fn signal(&self, sig: Signal) {
        let Ok(pid) = i32::try_from(self.pid) else {
            return;
        };
        if let Err(e) = kill(Pid::from_raw(pid), sig) {
            tracing::warn!(pid, signal = %sig, error = %e, "could not signal the supervisor");
        }
    }

    /// SIGTERM to the command, up to [`STOP_GRACE`] for it (and whatever it started) to end,
    /// then SIGKILL for everything left: closing the socket tells the supervisor.
    async fn stop(&mut self) {
        self.signal(Signal::SIGTERM);
        let ended = async {
            while let Some(report) = self.next().await {
                if matches!(report, Report::Exited { .. }) {
                    return;
                }
            }
        };
        if tokio::time::timeout(STOP_GRACE, ended).await.is_err() {
            self.requests = None;
        }
    }

    /// Kills the command and everything it left at once: closing the socket tells the
    /// supervisor, which then exits (its status is what `status` returns).
    fn kill_everything(&mut self) {
        self.requests = None;
    }

    /// The command's status when the supervisor died without reporting it (so it was killed,
    /// and the command with it).
    async fn status(&mut self) -> Exit {
        match self.child.wait().await {
            Ok(status) => Exit::for_child(status),
            Err(_) => Exit::Child(128 + Signal::SIGKILL as u8),
        }
    }

    /// Lets it go: closing the socket makes it kill whatever is left and exit; waits for that.
    async fn finish(mut self) {
        self.requests = None;
        self.reports = None;
        if let Err(e) = self.child.wait().await {
            tracing::warn!(error = %e, "could not wait for the command's supervisor");
        }
    }
}
