//! One job on one config: an apply, a shadow apply or a restart's recovery, as a plan of
//! operations. Each operation becomes at most one action; its outcome either moves the plan on
//! or replaces the rest of it with the cleanup that failure needs.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::types::{Desired, HookKind, JobId};
use crate::state::InFlight;

/// What a job is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Apply,
    Shadow,
    Recover,
    /// The periodic health check of the applied revision: the health hook alone.
    Check,
}

/// One operation of a plan. The apply plan is, in order:
/// `Fetch, Adopt, PersistIntent, Stage, Validate, Rename, FsyncDir, Reload, Health, SaveLkg,
/// Commit, RemoveOldLkg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Fetch,
    /// Copy the target as found to the state directory (first apply only).
    Adopt,
    /// Persist the intent (`in_flight`) before anything is staged.
    PersistIntent,
    Stage,
    Validate,
    Rename,
    FsyncDir,
    Reload,
    Health,
    SaveLkg,
    /// Persist the applied revision: the commit point.
    Commit,
    RemoveOldLkg,
    // Cleanup before the rename: the target was never touched.
    RemoveStaged,
    // Rollback after the rename.
    RestoreLkg,
    ReloadRestored,
    /// Persist that no apply is in flight any more.
    PersistAbort,
    // Shadow.
    ReadApplied,
    StageShadow,
    ValidateShadow,
    RemoveShadow,
    // Recovery at start.
    RemoveGarbage,
    HashTarget,
}

impl Op {
    /// Whether the op comes before the rename: failing there leaves the target untouched.
    pub(crate) fn before_rename(self) -> bool {
        matches!(
            self,
            Op::Fetch | Op::Adopt | Op::PersistIntent | Op::Stage | Op::Validate
        )
    }

    /// The hook an op runs, if any.
    pub(crate) fn hook(self) -> Option<HookKind> {
        match self {
            Op::Validate | Op::ValidateShadow => Some(HookKind::Validate),
            Op::Reload | Op::ReloadRestored => Some(HookKind::Reload),
            Op::Health => Some(HookKind::Health),
            _ => None,
        }
    }
}

/// A job in progress.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: JobId,
    pub(crate) kind: Kind,
    /// The revision (none for a recovery).
    pub(crate) desired: Option<Desired>,
    pub(crate) received_ms: u64,
    pub(crate) current: Option<Op>,
    pub(crate) plan: VecDeque<Op>,
    pub(crate) content: Option<Arc<[u8]>>,
    /// The applied content, for a shadow's diff.
    pub(crate) applied_content: Option<Vec<u8>>,
    /// The first failure, in words: the report's error.
    pub(crate) error: Option<String>,
    /// A newer revision replaced this one before its rename: no report.
    pub(crate) superseded: bool,
    /// Whether the intent was persisted (so aborting must persist its end).
    pub(crate) intent_persisted: bool,
    /// Whether restoring last-known-good failed (the in-flight record must stay).
    pub(crate) restore_failed: bool,
    /// For a recovery: the apply the restart interrupted.
    pub(crate) interrupted: Option<InFlight>,
    /// For a recovery: whether the target was put back.
    pub(crate) restored: bool,
    /// What the health hook reported (`metric NAME=VALUE` lines), for the job's report.
    pub(crate) metrics: BTreeMap<String, f64>,
    /// Fetch retries so far, and whether a fetch is outstanding.
    pub(crate) fetch_attempts: u32,
    pub(crate) fetch_outstanding: bool,
    pub(crate) retry_at: Option<u64>,
}

impl Job {
    pub(crate) fn new(id: JobId, kind: Kind, desired: Option<Desired>, received_ms: u64) -> Self {
        let plan: VecDeque<Op> = match kind {
            Kind::Apply => [
                Op::Fetch,
                Op::Adopt,
                Op::PersistIntent,
                Op::Stage,
                Op::Validate,
                Op::Rename,
                Op::FsyncDir,
                Op::Reload,
                Op::Health,
                Op::SaveLkg,
                Op::Commit,
                Op::RemoveOldLkg,
            ]
            .into(),
            Kind::Shadow => [
                Op::Fetch,
                Op::ReadApplied,
                Op::StageShadow,
                Op::ValidateShadow,
                Op::RemoveShadow,
            ]
            .into(),
            Kind::Recover => [
                Op::RemoveStaged,
                Op::RemoveShadow,
                Op::RemoveGarbage,
                Op::HashTarget,
            ]
            .into(),
            Kind::Check => [Op::Health].into(),
        };
        Self {
            id,
            kind,
            desired,
            received_ms,
            current: None,
            plan,
            content: None,
            applied_content: None,
            error: None,
            superseded: false,
            intent_persisted: false,
            restore_failed: false,
            interrupted: None,
            restored: false,
            metrics: BTreeMap::new(),
            fetch_attempts: 0,
            fetch_outstanding: false,
            retry_at: None,
        }
    }

    /// The revision the job is about (0 for a recovery with nothing in flight).
    pub(crate) fn rev(&self) -> u64 {
        self.desired.as_ref().map_or(0, |d| d.rev)
    }

    /// Records the first failure.
    pub(crate) fn fail(&mut self, error: String) {
        if self.error.is_none() {
            self.error = Some(error);
        }
    }

    /// Replaces the rest of the plan with the cleanup of a failure (or a supersession) at `op`.
    pub(crate) fn clean_up_after(&mut self, op: Op) {
        self.plan = match self.kind {
            Kind::Shadow => [Op::RemoveShadow].into(),
            Kind::Recover if op == Op::HashTarget => VecDeque::new(),
            Kind::Recover => self.plan.clone(),
            // A failing check touches nothing: it is reported, never rolled back.
            Kind::Check => VecDeque::new(),
            Kind::Apply if op.before_rename() => {
                let mut plan = VecDeque::from([Op::RemoveStaged]);
                if self.intent_persisted {
                    plan.push_back(Op::PersistAbort);
                }
                plan
            }
            Kind::Apply => [Op::RestoreLkg, Op::ReloadRestored, Op::PersistAbort].into(),
        };
    }
}

/// Fetch retry backoff: 1 s, 2 s, 4 s … at most 30 s.
pub(crate) fn backoff_ms(attempts: u32) -> u64 {
    1_000u64
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(5))
        .min(30_000)
}
