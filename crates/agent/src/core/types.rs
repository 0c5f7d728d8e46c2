//! What goes into the core (events) and what comes out (actions, reports).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::state::AgentState;

/// Identifies one job (an apply, a shadow apply or a recovery) so late outcomes are ignored.
pub type JobId = u64;

/// A desired revision for one config, as the server sends it: the API's type itself.
pub use locksmith_api::agents::DesiredRevision as Desired;

/// An input to [`Agent::handle`](crate::Agent::handle).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A desired revision arrived.
    Desired(Desired),
    /// The content of a revision asked for by [`Action::Fetch`].
    Fetched {
        /// The config.
        config: String,
        /// The revision.
        rev: u64,
        /// Its bytes.
        content: Vec<u8>,
    },
    /// [`Action::Fetch`] failed (network, server): retried with backoff while connected.
    FetchFailed {
        /// The config.
        config: String,
        /// The revision.
        rev: u64,
        /// Why.
        error: String,
    },
    /// The outcome of an [`Action::Step`].
    Step {
        /// The config.
        config: String,
        /// The job the step belongs to.
        job: JobId,
        /// What happened.
        outcome: StepOutcome,
    },
    /// The answer to [`Action::CheckApplyLock`].
    ApplyLock {
        /// Whether the apply-lock file exists.
        present: bool,
    },
    /// A timer fired (see [`Action::Wake`]).
    Tick,
    /// The stream to the server is up.
    Connected,
    /// The stream to the server is down.
    Disconnected,
}

/// How one [`Step`] went.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// Done.
    Done,
    /// [`Step::AdoptOriginal`] / [`Step::HashTarget`]: the file's SHA-256, `None` if absent.
    Sha256(Option<String>),
    /// [`Step::ReadLkg`]: the content, `None` if there is none.
    Content(Option<Vec<u8>>),
    /// [`Step::RunHook`]: the hook's result.
    Hook(HookResult),
    /// The step failed (an IO error, in words).
    Failed(String),
}

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    /// Checks the staged file.
    Validate,
    /// Makes the service read the target.
    Reload,
    /// Confirms the service is healthy.
    Health,
}

impl HookKind {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::Validate => "validate",
            HookKind::Reload => "reload",
            HookKind::Health => "health",
        }
    }
}

/// How a hook ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum HookStatus {
    /// Exit status 0.
    Ok,
    /// Another exit status.
    Exit {
        /// The status.
        code: i32,
    },
    /// Killed by a signal it did not ask for.
    Signal {
        /// The signal's number.
        signal: i32,
    },
    /// Ran past its timeout; its process group was killed.
    TimedOut {
        /// The timeout.
        after_ms: u64,
    },
    /// Could not be started.
    NotStarted {
        /// Why.
        error: String,
    },
}

/// A hook's result: its status, the tail of its output (stdout and stderr, ~4 KiB) and, for
/// the health hook, the metrics its whole output reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookResult {
    /// How it ended.
    pub status: HookStatus,
    /// The last bytes of its output, lossily decoded.
    pub tail: String,
    /// For the health hook: its `metric NAME=VALUE` lines (see [`crate::metrics`]), which
    /// become the report's metrics, whether the hook passed or failed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

impl HookResult {
    /// A hook that succeeded with no output.
    pub fn ok() -> Self {
        Self {
            status: HookStatus::Ok,
            tail: String::new(),
            metrics: BTreeMap::new(),
        }
    }

    /// Whether it succeeded.
    pub fn is_ok(&self) -> bool {
        self.status == HookStatus::Ok
    }

    /// `validate hook exited with status 2: <tail>`.
    pub fn describe(&self, kind: HookKind) -> String {
        let how = match &self.status {
            HookStatus::Ok => "succeeded".to_owned(),
            HookStatus::Exit { code } => format!("exited with status {code}"),
            HookStatus::Signal { signal } => format!("was killed by signal {signal}"),
            HookStatus::TimedOut { after_ms } => {
                format!("timed out after {after_ms} ms and was killed")
            }
            HookStatus::NotStarted { error } => format!("could not start: {error}"),
        };
        let tail = self.tail.trim_end();
        if tail.is_empty() {
            format!("{} hook {how}", kind.as_str())
        } else {
            format!("{} hook {how}: {tail}", kind.as_str())
        }
    }
}

/// One piece of IO for the driver; its outcome comes back as [`Event::Step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Copy the target, if it exists, to `lkg` in the state directory atomically (temp, fsync,
    /// rename, fsync dir); answer its SHA-256 ([`StepOutcome::Sha256`]).
    AdoptOriginal {
        /// The target.
        target: PathBuf,
        /// The copy's path.
        lkg: PathBuf,
    },
    /// Persist the state file atomically (temp, fsync, rename, fsync dir).
    Persist(Box<AgentState>),
    /// Write `content` to `path` (created or truncated) and fsync it.
    Stage {
        /// The staged file.
        path: PathBuf,
        /// The bytes.
        content: Arc<[u8]>,
    },
    /// Run a hook.
    RunHook {
        /// Which.
        kind: HookKind,
        /// `sh -c COMMAND`.
        command: String,
        /// Killed after this long.
        timeout_ms: u64,
        /// `LOCKSMITH_CONFIG`.
        config: String,
        /// `LOCKSMITH_REV`.
        rev: u64,
        /// `LOCKSMITH_FILE`: the staged file for validate, the target otherwise.
        file: PathBuf,
    },
    /// Rename `from` over `to` (same directory).
    Rename {
        /// The staged file.
        from: PathBuf,
        /// The target.
        to: PathBuf,
    },
    /// Fsync a directory.
    FsyncDir {
        /// The directory.
        dir: PathBuf,
    },
    /// Remove a file; absent is fine.
    Remove {
        /// The file.
        path: PathBuf,
    },
    /// Write a last-known-good copy atomically (temp, fsync, rename, fsync dir).
    SaveLkg {
        /// The copy's path.
        path: PathBuf,
        /// The bytes.
        content: Arc<[u8]>,
    },
    /// Put the last-known-good back: copy `lkg` to `staged`, fsync, rename over `target`,
    /// fsync the directory; with `lkg: None` (there was no file) remove the target and fsync.
    RestoreLkg {
        /// The copy, or none.
        lkg: Option<PathBuf>,
        /// The staged file.
        staged: PathBuf,
        /// The target.
        target: PathBuf,
    },
    /// Read a last-known-good copy ([`StepOutcome::Content`]).
    ReadLkg {
        /// The copy, or none (answer `Content(None)`).
        lkg: Option<PathBuf>,
    },
    /// The target's SHA-256 ([`StepOutcome::Sha256`]).
    HashTarget {
        /// The target.
        target: PathBuf,
    },
}

impl Step {
    /// A short name for logs and fault injection: `adopt`, `persist`, `stage`, `validate`,
    /// `reload`, `health`, `rename`, `fsync-dir`, `remove`, `save-lkg`, `restore-lkg`,
    /// `read-lkg`, `hash-target`.
    pub fn name(&self) -> &'static str {
        match self {
            Step::AdoptOriginal { .. } => "adopt",
            Step::Persist(_) => "persist",
            Step::Stage { .. } => "stage",
            Step::RunHook { kind, .. } => kind.as_str(),
            Step::Rename { .. } => "rename",
            Step::FsyncDir { .. } => "fsync-dir",
            Step::Remove { .. } => "remove",
            Step::SaveLkg { .. } => "save-lkg",
            Step::RestoreLkg { .. } => "restore-lkg",
            Step::ReadLkg { .. } => "read-lkg",
            Step::HashTarget { .. } => "hash-target",
        }
    }
}

/// What the core asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Fetch a revision's content; answer [`Event::Fetched`] or [`Event::FetchFailed`].
    Fetch {
        /// The config.
        config: String,
        /// The revision.
        rev: u64,
        /// Its expected SHA-256.
        sha256: String,
    },
    /// Local IO; answer [`Event::Step`] with the same config and job.
    Step {
        /// The config.
        config: String,
        /// The job.
        job: JobId,
        /// What to do.
        step: Step,
    },
    /// Look whether the apply-lock file exists; answer [`Event::ApplyLock`].
    CheckApplyLock,
    /// Send a report to the server (or keep the newest per config while offline).
    Report(Report),
    /// Deliver [`Event::Tick`] at this time (the earliest asked for wins; ticks early are fine).
    Wake {
        /// When, on the caller's clock.
        at_ms: u64,
    },
}

/// A config's state as reported, and what the agent tells the server about one config: the
/// API's types themselves, so the core's reports go out as they are.
pub use locksmith_api::agents::{AgentReport as Report, ApplyState as ReportState};
