//! # locksmith-agent
//!
//! The endpoint agent's logic: it applies configs to files atomically, checked, with
//! last-known-good, and refuses locally a revision that was not written under the config
//! lock's current holder. [`Agent`] is a sans-IO state machine (events and `now_ms` in,
//! [`Action`]s out); [`Driver`] runs it against a file system ([`Fs`]: [`RealFs`], or
//! [`MemFs`] that can lose power) and hooks ([`Hooks`]: [`ShellHooks`]).
//!
//! ## The local fence rule
//!
//! Per config the agent persists `applied_rev`, `applied_token` (the highest fencing token of
//! any revision it applied), and `told_fence` with `told_fence_rev`: the newest fence of
//! `configs/NAME` the server told it of, and the revision that came with that fence when it
//! was first told. Every non-shadow desired revision first folds its fence in: if
//! `fence > told_fence`, then `told_fence = fence` and `told_fence_rev = rev` (the same fence
//! told again keeps its first revision). A shadow message never changes this record.
//!
//! A desired revision R (shadow or not) is accepted iff
//!
//! ```text
//! R.token >= applied_token  AND  (R.rev <= told_fence_rev  OR  R.token >= told_fence)
//! ```
//!
//! — a revision newer than the one that was current when the agent learned of fence F must
//! have been written under F or later. Otherwise it is refused before anything is touched,
//! reported `refused` with the line
//!
//! ```text
//! lock mismatch: NAME HOT — revision R was written under token T, but token F holds configs/NAME (told with revision Q); refusing it
//! lock mismatch: NAME HOT — revision R was written under token T, but revision A was applied under token U; refusing it
//! ```
//!
//! (the second when the token is older than an applied one). The check runs when the
//! revision arrives and again when its apply starts. `applied_token` is persisted in the same
//! write as the applied revision, so it never goes back; a new tell is written at once, and a
//! crash before that write loses only the tell, which the server repeats with every desired
//! revision.
//!
//! ## Applying
//!
//! One job per config at a time. An apply runs: fetch the content → verify its size and
//! SHA-256 and parse it as its format → on the first apply only, keep the target as found
//! (or that there was none) as last-known-good revision 0 → persist the intent → write the
//! staged file `.FILE.locksmith-staged` beside the target and fsync it → validate hook on the
//! staged file → rename over the target → fsync the directory → reload hook → health hook →
//! save the last-known-good copy → persist the applied revision (the commit point) → remove
//! the previous copy. A failure before the rename removes the staged file: the target was
//! never touched. A failure from the rename on restores last-known-good (copy, fsync, rename,
//! fsync the directory; or remove the target when there was none) and runs the reload hook
//! again. Either way the job ends, reported `failed` with why (a hook's output tail
//! included), and the next desired revision is tried normally; the failed revision itself is
//! not retried until another one is desired (or the agent restarts).
//!
//! **Latest wins**: a newer desired revision replaces one waiting; a job that has not reached
//! its rename is abandoned for it (staged file removed, no report); from the rename on the job
//! finishes or rolls back first. Nothing in between is replayed. **Defer**: while the
//! apply-lock file exists no apply starts; the revision is reported `deferred` once and
//! starts when a tick finds the file gone. **Shadow**: fetch, verify, parse, validate hook on
//! `.FILE.locksmith-shadow`, remove it, report `shadow_ok` with the diff from the applied
//! content, or `shadow_failed`; never renamed, never reloaded, and the config's own reported
//! state does not change.
//!
//! ## Health metrics
//!
//! The health hook's output lines `metric NAME=VALUE` become the report's `metrics`, for
//! rollout gates (format and bounds in [`metrics`]); with
//! [`AgentSpec::health_interval_ms`] the health hook also re-runs on the applied revision every
//! interval, reported `applied` with fresh metrics or `failed` — never rolled back.
//!
//! ## Crash recovery
//!
//! **The state file is the commit point**: a revision is applied once the state file says so,
//! and the file it names as last-known-good is then the target's content. At start, for every
//! config with a last-known-good copy, the agent removes the staged and shadow files and any
//! copy the state does not reference, then hashes the target: equal to the last-known-good
//! SHA-256 (absent when there was no file), nothing is done; different, last-known-good is
//! restored (copy, fsync, rename, fsync the directory) and the reload hook runs, reported
//! `failed` ("the agent stopped while applying revision R; restored last-known-good revision
//! Q", or that the file was changed outside the agent). The interrupted revision is applied
//! again when it is desired again. Since the target only ever changes by renaming a fsynced
//! file over it, after a kill at any step it holds the old file or the new one, whole, and
//! after recovery exactly the committed one.
//!
//! What it is not: a network client, a server or a CLI. The `locksmith agent` command feeds it
//! the server's desired revisions and content and sends its reports.

pub mod core;
mod driver;
mod fence;
pub mod fs;
mod hooks;
pub mod metrics;
mod spec;
mod state;

pub use crate::core::Agent;
pub use crate::core::types::{
    Action, Desired, Event, HookKind, HookResult, HookStatus, JobId, Report, ReportState, Step,
    StepOutcome,
};
pub use driver::{Clock, Driver, ManualClock, OpenError, StepObserver, SystemClock, load_state};
pub use fence::{FenceState, Refusal};
pub use fs::{Fs, MemFs, RealFs};
pub use hooks::{HookRun, Hooks, ShellHooks, TAIL_BYTES};
pub use spec::{
    AgentSpec, ConfigSpec, DEFAULT_DEFER_POLL_MS, DEFAULT_HOOK_TIMEOUT_MS, Hook, STATE_FILE,
    lkg_file,
};
pub use state::{AgentState, ConfigState, InFlight, Lkg, STATE_VERSION};
