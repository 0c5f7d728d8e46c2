//! The thin driver: executes the core's local actions against an [`Fs`], [`Hooks`] and a
//! [`Clock`], feeding each outcome straight back, and hands the rest (fetches, reports,
//! wake-ups) to its caller.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use locksmith_config::sha256_hex;
use thiserror::Error;

use crate::core::Agent;
use crate::core::types::{Action, Event, Step, StepOutcome};
use crate::fs::{Fs, parent, write_atomic};
use crate::hooks::{HookRun, Hooks};
use crate::spec::AgentSpec;
use crate::state::{AgentState, STATE_VERSION};

/// Milliseconds on a monotonic clock.
pub trait Clock {
    /// Now.
    fn now_ms(&self) -> u64;
}

/// Milliseconds since the clock was made, from [`Instant`].
#[derive(Debug, Clone, Copy)]
pub struct SystemClock(Instant);

impl Default for SystemClock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A clock tests move by hand; clones share it.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// Moves it forward.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Why the agent could not start.
#[derive(Debug, Error)]
pub enum OpenError {
    /// The state directory could not be made.
    #[error("cannot create the state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The state file could not be read.
    #[error("cannot read the state file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The state file is not the agent's JSON.
    #[error(
        "the state file {path} is damaged ({source}); move it away to start over (last-known-good copies stay in the state directory)"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// Written by another version of the agent.
    #[error("the state file {path} has version {found}; this agent reads version {STATE_VERSION}")]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
}

/// Called with each step's config and the step just before the driver executes it: a
/// process's fault injection (`locksmith agent` kills itself at a named step in its tests)
/// and tracing. `Send`, so that a driver can move between a runtime's workers (the fleet
/// simulator runs thousands of drivers on tokio tasks).
pub struct StepObserver(Box<ObserveFn>);

/// What a [`StepObserver`] calls: the config and the step.
type ObserveFn = dyn FnMut(&str, &Step) + Send;

impl StepObserver {
    /// Wraps `f`.
    pub fn new(f: impl FnMut(&str, &Step) + Send + 'static) -> Self {
        Self(Box::new(f))
    }
}

impl std::fmt::Debug for StepObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StepObserver")
    }
}

/// Runs an [`Agent`] against real (or simulated) IO.
#[derive(Debug)]
pub struct Driver<F, H, C> {
    agent: Agent,
    fs: F,
    hooks: H,
    clock: C,
    observer: Option<StepObserver>,
}

/// Reads the state file (default when absent).
pub fn load_state(fs: &dyn Fs, spec: &AgentSpec) -> Result<AgentState, OpenError> {
    let path = spec.state_file();
    let bytes = fs.read(&path).map_err(|source| OpenError::Read {
        path: path.clone(),
        source,
    })?;
    let Some(bytes) = bytes else {
        return Ok(AgentState::default());
    };
    let state: AgentState =
        serde_json::from_slice(&bytes).map_err(|source| OpenError::Damaged {
            path: path.clone(),
            source,
        })?;
    if state.version != STATE_VERSION {
        return Err(OpenError::Version {
            path,
            found: state.version,
        });
    }
    Ok(state)
}

impl<F: Fs, H: Hooks, C: Clock> Driver<F, H, C> {
    /// Opens the state directory, restores the agent and runs its recovery. Returns the driver
    /// and the actions for the caller (recovery reports).
    pub fn open(
        spec: AgentSpec,
        fs: F,
        hooks: H,
        clock: C,
    ) -> Result<(Self, Vec<Action>), OpenError> {
        Self::open_observed(spec, fs, hooks, clock, None)
    }

    /// [`Driver::open`], with `observer` seeing every step before it runs (recovery's too).
    pub fn open_observed(
        spec: AgentSpec,
        fs: F,
        hooks: H,
        clock: C,
        observer: Option<StepObserver>,
    ) -> Result<(Self, Vec<Action>), OpenError> {
        fs.create_dir_all(&spec.state_dir)
            .map_err(|source| OpenError::StateDir {
                path: spec.state_dir.clone(),
                source,
            })?;
        let state = load_state(&fs, &spec)?;
        let (agent, actions) = Agent::restore(spec, state, clock.now_ms());
        let mut driver = Driver {
            agent,
            fs,
            hooks,
            clock,
            observer,
        };
        let out = driver.run(actions);
        Ok((driver, out))
    }

    /// Feeds `event` and runs every local action it leads to; returns the rest: fetches,
    /// reports and wake-ups.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let actions = self.agent.handle(self.clock.now_ms(), event);
        self.run(actions)
    }

    /// The agent.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// The file system.
    pub fn fs(&self) -> &F {
        &self.fs
    }

    /// The hooks.
    pub fn hooks_mut(&mut self) -> &mut H {
        &mut self.hooks
    }

    fn run(&mut self, actions: Vec<Action>) -> Vec<Action> {
        let mut queue: VecDeque<Action> = actions.into();
        let mut out = Vec::new();
        while let Some(action) = queue.pop_front() {
            let event = match action {
                Action::Step { config, job, step } => {
                    if let Some(observer) = &mut self.observer {
                        (observer.0)(&config, &step);
                    }
                    let outcome = self.execute(&step);
                    Event::Step {
                        config,
                        job,
                        outcome,
                    }
                }
                Action::CheckApplyLock => {
                    let present = match &self.agent.spec().apply_lock {
                        // An apply-lock that cannot be looked at is treated as present.
                        Some(p) => self.fs.exists(p).unwrap_or(true),
                        None => false,
                    };
                    Event::ApplyLock { present }
                }
                other => {
                    out.push(other);
                    continue;
                }
            };
            let now = self.clock.now_ms();
            queue.extend(self.agent.handle(now, event));
        }
        out
    }

    fn execute(&mut self, step: &Step) -> StepOutcome {
        let done = |r: io::Result<()>| match r {
            Ok(()) => StepOutcome::Done,
            Err(e) => StepOutcome::Failed(e.to_string()),
        };
        match step {
            Step::AdoptOriginal { target, lkg } => match self.adopt(target, lkg) {
                Ok(sha) => StepOutcome::Sha256(sha),
                Err(e) => StepOutcome::Failed(e.to_string()),
            },
            Step::Persist(state) => done(self.persist(state)),
            Step::Stage { path, content } => done(
                self.fs
                    .write(path, content)
                    .and_then(|()| self.fs.fsync(path)),
            ),
            Step::RunHook {
                kind,
                command,
                timeout_ms,
                config,
                rev,
                file,
            } => StepOutcome::Hook(self.hooks.run(&HookRun {
                kind: *kind,
                command: command.clone(),
                timeout_ms: *timeout_ms,
                config: config.clone(),
                rev: *rev,
                file: file.clone(),
            })),
            Step::Rename { from, to } => done(self.fs.rename(from, to)),
            Step::FsyncDir { dir } => done(self.fs.fsync_dir(dir)),
            Step::Remove { path } => done(self.fs.remove(path)),
            Step::SaveLkg { path, content } => done(write_atomic(&self.fs, path, content)),
            Step::RestoreLkg {
                lkg,
                staged,
                target,
            } => done(self.restore(lkg.as_deref(), staged, target)),
            Step::ReadLkg { lkg } => match lkg {
                None => StepOutcome::Content(None),
                Some(p) => match self.fs.read(p) {
                    Ok(c) => StepOutcome::Content(c),
                    Err(e) => StepOutcome::Failed(e.to_string()),
                },
            },
            Step::HashTarget { target } => match self.fs.read(target) {
                Ok(c) => StepOutcome::Sha256(c.map(|c| sha256_hex(&c))),
                Err(e) => StepOutcome::Failed(e.to_string()),
            },
        }
    }

    fn persist(&self, state: &AgentState) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        write_atomic(&self.fs, &self.agent.spec().state_file(), &bytes)
    }

    /// Keeps the target as found (its bytes, or that there was none) as the first
    /// last-known-good copy.
    fn adopt(&self, target: &Path, lkg: &Path) -> io::Result<Option<String>> {
        match self.fs.read(target)? {
            None => Ok(None),
            Some(bytes) => {
                write_atomic(&self.fs, lkg, &bytes)?;
                Ok(Some(sha256_hex(&bytes)))
            }
        }
    }

    fn restore(&self, lkg: Option<&Path>, staged: &Path, target: &Path) -> io::Result<()> {
        match lkg {
            None => self.fs.remove(target)?,
            Some(lkg) => {
                self.fs.copy(lkg, staged)?;
                self.fs.fsync(staged)?;
                self.fs.rename(staged, target)?;
            }
        }
        self.fs.fsync_dir(parent(target))
    }
}
