//! What the agent is told to manage: its configs, their targets and hooks.

use std::path::PathBuf;

/// Default timeout of each hook, in milliseconds.
pub const DEFAULT_HOOK_TIMEOUT_MS: u64 = 30_000;
/// How often a deferred apply looks for the apply-lock file again, in milliseconds.
pub const DEFAULT_DEFER_POLL_MS: u64 = 1_000;

/// A hook: a shell command and how long it may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// Run as `sh -c COMMAND`.
    pub command: String,
    /// Killed (its whole process group) after this many milliseconds.
    pub timeout_ms: u64,
}

impl Hook {
    /// A hook with the default timeout.
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            timeout_ms: DEFAULT_HOOK_TIMEOUT_MS,
        }
    }
}

/// One managed config: `--config NAME=PATH [--validate CMD] [--reload CMD] [--health CMD]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSpec {
    /// The config's name in the store.
    pub name: String,
    /// The file it is applied to.
    pub target: PathBuf,
    /// Checks the staged file (`LOCKSMITH_FILE`) before it replaces the target.
    pub validate: Option<Hook>,
    /// Makes the service read the new file.
    pub reload: Option<Hook>,
    /// Confirms the service is healthy on the new file; failing restores last-known-good.
    pub health: Option<Hook>,
}

impl ConfigSpec {
    /// A config applied to `target`, with no hooks.
    pub fn new(name: impl Into<String>, target: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            target: target.into(),
            validate: None,
            reload: None,
            health: None,
        }
    }

    /// The directory of the target (where staged files are written, so the rename is atomic).
    pub fn dir(&self) -> PathBuf {
        match self.target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// The staged file: `DIR/.FILE.locksmith-staged`, beside the target.
    pub fn staged(&self) -> PathBuf {
        self.beside("staged")
    }

    /// The shadow apply's staged file: `DIR/.FILE.locksmith-shadow`.
    pub fn shadow(&self) -> PathBuf {
        self.beside("shadow")
    }

    fn beside(&self, what: &str) -> PathBuf {
        let file = self
            .target
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.dir().join(format!(".{file}.locksmith-{what}"))
    }
}

/// The whole agent: its configs, state directory and apply-lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSpec {
    /// The managed configs (names are unique).
    pub configs: Vec<ConfigSpec>,
    /// Where the state file and the last-known-good copies live.
    pub state_dir: PathBuf,
    /// While this file exists no apply starts (shadow applies still run).
    pub apply_lock: Option<PathBuf>,
    /// How often a deferred apply checks the apply-lock again.
    pub defer_poll_ms: u64,
    /// How often the health hook runs again on the applied revision of each config that has
    /// one (`--health-interval`), for fresh metrics; `None`: only as an apply's step.
    pub health_interval_ms: Option<u64>,
}

impl AgentSpec {
    /// An agent keeping its state in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            configs: Vec::new(),
            state_dir: state_dir.into(),
            apply_lock: None,
            defer_poll_ms: DEFAULT_DEFER_POLL_MS,
            health_interval_ms: None,
        }
    }

    /// The state file: `STATE_DIR/agent-state.json`.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join(STATE_FILE)
    }

    /// A last-known-good copy's path in the state directory.
    pub fn lkg_path(&self, file: &str) -> PathBuf {
        self.state_dir.join(file)
    }
}

/// The state file's name in the state directory.
pub const STATE_FILE: &str = "agent-state.json";

/// The file name of config `name`'s last-known-good copy of revision `rev`: `lkg.NAME@REV`,
/// with `/` written `%` (neither `%` nor `@` can be in a config name, so no two collide).
pub fn lkg_file(name: &str, rev: u64) -> String {
    format!("lkg.{}@{rev}", name.replace('/', "%"))
}
