//! Running hooks: `sh -c COMMAND` with a timeout, keeping the tail of the output (and, for the
//! health hook, the `metric` lines of all of it).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::core::types::{HookKind, HookResult, HookStatus};
use crate::metrics::MetricLines;

/// How much of a hook's output is kept: its last 4 KiB.
pub const TAIL_BYTES: usize = 4096;

/// One hook to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRun {
    /// Which hook.
    pub kind: HookKind,
    /// The shell command.
    pub command: String,
    /// Killed after this long.
    pub timeout_ms: u64,
    /// `LOCKSMITH_CONFIG`.
    pub config: String,
    /// `LOCKSMITH_REV`.
    pub rev: u64,
    /// `LOCKSMITH_FILE`.
    pub file: PathBuf,
}

/// Runs hooks. [`ShellHooks`] runs them for real; tests script the results.
pub trait Hooks {
    /// Runs `run` to its end or its timeout.
    fn run(&mut self, run: &HookRun) -> HookResult;
}

/// Runs each hook as `sh -c COMMAND` in its own process group, stderr merged into stdout,
/// with `LOCKSMITH_CONFIG`, `LOCKSMITH_REV` and `LOCKSMITH_FILE` set. At the timeout the
/// whole group is killed (SIGKILL), so a hook's children do not outlive it. The health hook's
/// `metric NAME=VALUE` lines become [`HookResult::metrics`]; malformed ones are logged (warn)
/// and ignored.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShellHooks;

impl Hooks for ShellHooks {
    fn run(&mut self, run: &HookRun) -> HookResult {
        let mut child = match Command::new("sh")
            .arg("-c")
            // `exec 2>&1` first: one stream, in the order the hook wrote it.
            .arg(format!("exec 2>&1\n{}", run.command))
            .env("LOCKSMITH_CONFIG", &run.config)
            .env("LOCKSMITH_REV", run.rev.to_string())
            .env("LOCKSMITH_FILE", &run.file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                return HookResult {
                    status: HookStatus::NotStarted {
                        error: e.to_string(),
                    },
                    tail: String::new(),
                    metrics: BTreeMap::new(),
                };
            }
        };
        let (done, finished) = mpsc::channel::<()>();
        let output = Arc::new(Mutex::new(Output {
            tail: Tail::default(),
            // Only the health hook's metrics are reported: other hooks' output is not parsed.
            metrics: (run.kind == HookKind::Health).then(MetricLines::default),
        }));
        if let Some(mut out) = child.stdout.take() {
            let output = Arc::clone(&output);
            thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    output
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(&buf[..n]);
                }
                let _ = done.send(());
            });
        }
        let deadline = Instant::now() + Duration::from_millis(run.timeout_ms);
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() >= deadline => break None,
                Ok(None) => thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    return HookResult {
                        status: HookStatus::NotStarted {
                            error: e.to_string(),
                        },
                        tail: String::new(),
                        metrics: BTreeMap::new(),
                    };
                }
            }
        };
        let status = match status {
            Some(s) => match (s.code(), s.signal()) {
                (Some(0), _) => HookStatus::Ok,
                (Some(code), _) => HookStatus::Exit { code },
                (None, Some(signal)) => HookStatus::Signal { signal },
                (None, None) => HookStatus::Exit { code: -1 },
            },
            None => {
                let pgid = i32::try_from(child.id()).map(Pid::from_raw);
                if let Ok(pgid) = pgid {
                    let _ = killpg(pgid, Signal::SIGKILL);
                }
                let _ = child.wait();
                HookStatus::TimedOut {
                    after_ms: run.timeout_ms,
                }
            }
        };
        // A child the hook left running may hold the pipe open: wait for the output briefly.
        let _ = finished.recv_timeout(Duration::from_millis(200));
        let mut output = output.lock().unwrap_or_else(|e| e.into_inner());
        let metrics = match output.metrics.take() {
            Some(lines) => {
                let (metrics, malformed) = lines.finish();
                for m in malformed {
                    tracing::warn!(
                        config = %run.config,
                        rev = run.rev,
                        "health hook: ignoring {:?}: {}",
                        m.line,
                        m.error
                    );
                }
                metrics
            }
            None => BTreeMap::new(),
        };
        HookResult {
            status,
            tail: String::from_utf8_lossy(&output.tail.0).into_owned(),
            metrics,
        }
    }
}

/// What is kept of a hook's output as it is read.
#[derive(Debug)]
struct Output {
    tail: Tail,
    metrics: Option<MetricLines>,
}

impl Output {
    fn push(&mut self, bytes: &[u8]) {
        self.tail.push(bytes);
        if let Some(m) = &mut self.metrics {
            m.push(bytes);
        }
    }
}

/// The last [`TAIL_BYTES`] of a stream.
#[derive(Debug, Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
        if self.0.len() > TAIL_BYTES {
            let cut = self.0.len() - TAIL_BYTES;
            self.0.drain(..cut);
        }
    }
}
