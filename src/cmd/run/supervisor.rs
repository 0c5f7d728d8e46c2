//! The supervisor of `run`'s command: the process that owns the lock, starts the command, and
//! makes sure nothing the command started outlives the lock.
//!
//! `run` starts it (its own binary again, `locksmith run-supervisor`) before acquiring, and
//! acquires *as the supervisor's pid*. The supervisor is a child subreaper: every process the
//! command starts that is orphaned — a background job whose shell exited, a daemon that forked
//! twice — becomes its child, so all of them stay in reach, whatever process group or session
//! they move to. Then:
//!
//! - When `run` goes away — closes the control socket, or dies, even by SIGKILL — it kills every
//!   process left (SIGKILL, again and again until none is left) and only then exits. The server
//!   reclaims the lock once its owner, the supervisor, is gone: after the command, never before.
//! - When the command exits, it waits for whatever the command left running (the lock stays
//!   held meanwhile, as flock(1)'s lock stays with a descriptor a background job inherited),
//!   reports the command's status, and waits for `run` to release the lock and close the socket.
//! - Signals sent to it by a process (`run` forwards SIGTERM and SIGINT) go to the command and
//!   every process it started, as the terminal's Ctrl-C goes to a whole job. Signals from the
//!   terminal are not forwarded: the terminal sent them to the whole process group already.
//! - If the supervisor itself is killed, the command dies with it (`PR_SET_PDEATHSIG`, set from
//!   the supervisor's only thread).
//!
//! It stays in `run`'s process group, so the command is part of the shell's job: it can read
//! the terminal, and Ctrl-C and Ctrl-Z reach it as they would without `run`.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::prctl;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpid, getppid};

use super::control::{Report, Spawn, line};
use crate::exit::Exit;
use crate::failure::Failure;

/// `si_code` of a signal sent by a process with `kill()` (not by the kernel or the terminal).
const SI_USER: i32 = 0;

/// Runs the supervisor on the control socket `run` passed as descriptor `control_fd`, and
/// returns its exit code (the command's status; nobody relies on it but a human).
pub fn supervise(control_fd: RawFd) -> ExitCode {
    match Supervisor::start(control_fd).and_then(Supervisor::run) {
        Ok(code) => code,
        Err(e) => {
            // Whatever is left must not outlive the lock.
            kill_all();
            eprintln!("ERROR: locksmith run: the command's supervisor failed: {e}");
            ExitCode::from(Exit::Other.code())
        }
    }
}

struct Supervisor {
    control: UnixStream,
    signals: SignalFd,
    /// The command, while it runs.
    command: Option<Pid>,
    /// Its status, once it has exited.
    status: Option<WaitStatus>,
    /// Whether the last reap found no child at all (the command and all it left are gone).
    none_left: bool,
    /// Whether the note about processes left running was printed.
    warned: bool,
    /// Whether a signal that ends processes (SIGTERM, SIGINT, SIGHUP, SIGQUIT) was passed on:
    /// the command is being stopped (`run` lost its lease, or was told to stop), so what it
    /// left running is being stopped too, not keeping the lock.
    stopping: bool,
    spawn: Option<Spawn>,
}

impl Supervisor {
    fn start(control_fd: RawFd) -> io::Result<Self> {
        // Only `run` starts us, but a person might too: check the descriptor is an open socket
        // before taking ownership of it.
        let what = fs::read_link(format!("/proc/self/fd/{control_fd}"))?;
        if control_fd <= 2 || !what.to_string_lossy().starts_with("socket:") {
            return Err(io::Error::other(format!(
                "descriptor {control_fd} is {}, not the control socket `locksmith run` passes",
                what.display()
            )));
        }
        #[allow(unsafe_code)]
        // SAFETY: an open socket, passed by `run` on our command line for us alone (checked just
        // above); nothing else in this single-threaded, just started process owns or closes it.
        let control = UnixStream::from(unsafe { OwnedFd::from_raw_fd(control_fd) });
        // The command must not inherit it: its end-of-file means `run` is gone.
        fcntl(control.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        prctl::set_child_subreaper(true)?;
        // Before any thread or child exists: a blocked signal waits for the signalfd. (The
        // command gets the empty mask back before it execs: see `start_command`.)
        let mut mask = SigSet::empty();
        for sig in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGQUIT,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
        ] {
            mask.add(sig);
        }
        mask.thread_block()?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Self {
            control,
            signals,
            command: None,
            status: None,
            none_left: false,
            warned: false,
            stopping: false,
            spawn: None,
        })
    }

    fn run(mut self) -> io::Result<ExitCode> {
        // Nothing to do until the lock is held; end-of-file first means `run` gave up.
        let mut request = String::new();
        if BufReader::new(&self.control).read_line(&mut request)? == 0 {
            return Ok(ExitCode::SUCCESS);
        }
        let spawn: Spawn = serde_json::from_str(request.trim_end())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        // Signals that came while we waited for the lock were for no command: `run` forwards
        // only from now on.
        while self.signals.read_signal()?.is_some() {}
        match start_command(&spawn) {
            Ok(pid) => {
                self.command = Some(pid);
                let pid = u32::try_from(pid.as_raw()).unwrap_or_default();
                if self.report(&Report::Started { pid }).is_err() {
                    // `run` is gone already.
                    kill_all();
                    return Ok(self.exit_code());
                }
            }
            Err(e) => {
                let failed = Report::Failed {
                    errno: e.raw_os_error(),
                    message: e.to_string(),
                };
                if self.report(&failed).is_ok() {
                    self.until_closed();
                }
                return Ok(ExitCode::SUCCESS);
            }
        }
        self.spawn = Some(spawn);
        loop {
            let (control, signals) = self.wait_for_news()?;
            if control {
                // `run` is gone, or tells us to stop everything now.
                kill_all();
                return Ok(self.exit_code());
            }
            if signals {
                self.take_signals()?;
            }
            if let Some(status) = self.status {
                if self.none_left {
                    let (code, signal) = match status {
                        WaitStatus::Exited(_, code) => (Some(code), None),
                        WaitStatus::Signaled(_, sig, _) => (None, Some(sig as i32)),
                        _ => (Some(1), None),
                    };
                    // Stay the lock's live owner until `run` has released it (if `run` is
                    // gone, there is nobody to wait for).
                    if self.report(&Report::Exited { code, signal }).is_ok() {
                        self.until_closed();
                    }
                    return Ok(self.exit_code());
                }
                self.warn_left_running();
            }
        }
    }

    /// Blocks until the control socket or the signalfd is readable; says which.
    fn wait_for_news(&self) -> io::Result<(bool, bool)> {
        let mut fds = [
            PollFd::new(self.control.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
        ];
        loop {
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => break,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        let control = ready(&fds[0]) && self.control_closed();
        Ok((control, ready(&fds[1])))
    }

    /// True once `run` has closed its end (or died); anything it writes is ignored.
    fn control_closed(&self) -> bool {
        let mut buf = [0u8; 64];
        !matches!((&self.control).read(&mut buf), Ok(n) if n > 0)
    }

    /// Waits for `run` to close the control socket (or die).
    fn until_closed(&self) {
        while !self.control_closed() {}
    }

    fn take_signals(&mut self) -> io::Result<()> {
        while let Some(info) = self.signals.read_signal()? {
            let Ok(sig) = Signal::try_from(i32::try_from(info.ssi_signo).unwrap_or_default())
            else {
                continue;
            };
            if sig == Signal::SIGCHLD {
                self.reap();
            } else if info.ssi_code == SI_USER {
                self.stopping |= matches!(
                    sig,
                    Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP | Signal::SIGQUIT
                );
                self.forward(sig);
            }
        }
        // Children that ended while the signal was already pending.
        self.reap();
        Ok(())
    }

    /// Reaps every child that has ended, noting the command's status and whether any child is
    /// left.
    fn reap(&mut self) {
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {
                    self.none_left = false;
                    return;
                }
                Err(Errno::ECHILD) => {
                    self.none_left = true;
                    return;
                }
                Ok(status) => {
                    let ended = matches!(status, WaitStatus::Exited(..) | WaitStatus::Signaled(..));
                    if ended && status.pid().is_some() && status.pid() == self.command {
                        self.status = Some(status);
                        self.command = None;
                    }
                }
                Err(Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    }

    /// Passes `sig` to the command and every process it started.
    fn forward(&self, sig: Signal) {
        for pid in descendants() {
            let _ = kill(pid, sig);
        }
    }

    /// Says once that the command exited but left processes running, which keep the lock.
    fn warn_left_running(&mut self) {
        if self.warned {
            return;
        }
        let left = children();
        if left.is_empty() {
            return;
        }
        self.warned = true;
        let (resource, shown) = self.spawn.as_ref().map_or(("locksmith run", ""), |s| {
            (s.resource.as_str(), s.shown.as_str())
        });
        let pids: Vec<String> = left.iter().map(|p| p.to_string()).collect();
        Failure::new(
            Exit::Other,
            resource,
            "still running",
            format!(
                "'{shown}' exited, leaving {} of its processes (pid {})",
                pids.len(),
                pids.join(", ")
            ),
            if self.stopping {
                "they are being stopped too (SIGKILL if they outlast the grace period)"
            } else {
                "the lock is held until they end"
            },
        )
        .warn();
    }

    fn report(&self, report: &Report) -> io::Result<()> {
        (&self.control).write_all(line(report).as_bytes())
    }

    fn exit_code(&self) -> ExitCode {
        let code = match self.status {
            Some(WaitStatus::Exited(_, code)) => code,
            Some(WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
            _ => 128 + Signal::SIGKILL as i32,
        };
        ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1))
    }
}

/// Starts the command as our child, to die with us.
fn start_command(spawn: &Spawn) -> io::Result<Pid> {
    let me = getpid();
    let mut command = Command::new(&spawn.program);
    command.args(&spawn.args).envs(spawn.env.iter().cloned());
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked child before exec and makes only async-signal-safe
    // system calls (sigprocmask, prctl, getppid); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            // The mask is inherited across exec: unblock what we block for our signalfd.
            SigSet::empty().thread_set_mask()?;
            // We are single-threaded, so "the parent thread" that PDEATHSIG watches is all of us.
            prctl::set_pdeathsig(Signal::SIGKILL)?;
            // If we died between the fork and the prctl, the signal will never come.
            if getppid() != me {
                return Err(io::Error::other("the supervisor is gone"));
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    // Reaped with waitpid(-1) like every other child; the handle is not needed.
    Ok(Pid::from_raw(i32::try_from(child.id()).unwrap_or_default()))
}

/// Kills every process below us — the command, everything it started, and what it left, which
/// as orphans became ours — until none is left. A process forked between the look and the
/// kill becomes ours when its parent dies, so it looks again after every reap.
fn kill_all() {
    loop {
        for pid in descendants() {
            let _ = kill(pid, Signal::SIGKILL);
        }
        match waitpid(None::<Pid>, None) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Our children, found in `/proc` (every process whose parent is us).
fn children() -> BTreeSet<Pid> {
    let me = getpid().as_raw();
    parents()
        .into_iter()
        .filter(|(_, parent)| *parent == me)
        .map(|(pid, _)| Pid::from_raw(pid))
        .collect()
}

/// Every process below us (children, their children, …), found in `/proc`.
fn descendants() -> BTreeSet<Pid> {
    let parents = parents();
    let mut below = BTreeSet::from([getpid().as_raw()]);
    // Parents before children is not the order /proc lists them in: repeat until nothing new.
    loop {
        let before = below.len();
        for (pid, parent) in &parents {
            if below.contains(parent) {
                below.insert(*pid);
            }
        }
        if below.len() == before {
            break;
        }
    }
    below.remove(&getpid().as_raw());
    below.into_iter().map(Pid::from_raw).collect()
}

/// `(pid, parent pid)` of every process in `/proc`.
fn parents() -> Vec<(i32, i32)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect()
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}
