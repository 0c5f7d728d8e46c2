//! Running a job's plan: each operation's action, and what each outcome does to the plan.

use std::sync::Arc;

use locksmith_config::{parse, sha256_hex};

use super::Agent;
use super::job::{Kind, Op, backoff_ms};
use super::types::{Action, JobId, Step, StepOutcome};
use crate::spec::lkg_file;
use crate::state::{ConfigState, InFlight, Lkg};

impl Agent {
    /// A [`Step::Persist`] of the whole state as the agent holds it now (a commit in
    /// progress included: a later snapshot must never write it back out).
    pub(super) fn persist_action(&self, name: &str, job: JobId) -> Action {
        Action::Step {
            config: name.to_owned(),
            job,
            step: Step::Persist(Box::new(self.state())),
        }
    }

    /// Moves `name`'s job to its next operation that has something to do, emitting its action;
    /// finishes the job when the plan is done and starts the next.
    pub(super) fn advance(&mut self, name: &str, now_ms: u64, out: &mut Vec<Action>) {
        loop {
            let Some(slot) = self.slots.get_mut(name) else {
                return;
            };
            let Some(job) = slot.job.as_mut() else {
                return;
            };
            let Some(op) = job.plan.pop_front() else {
                self.finish(name, now_ms, out);
                return self.try_start(name, now_ms, out);
            };
            job.current = Some(op);
            if let Some(action) = self.action_for(name, op) {
                out.push(action);
                return;
            }
        }
    }

    /// The action for `op` of `name`'s job, or `None` when it has nothing to do.
    fn action_for(&mut self, name: &str, op: Op) -> Option<Action> {
        let state_dir_lkg = |file: &str| self.spec.lkg_path(file);
        let slot = self.slots.get(name)?;
        let job = slot.job.as_ref()?;
        let spec = &slot.spec;
        let d = job.desired.as_ref();
        let step = |step: Step| {
            Some(Action::Step {
                config: name.to_owned(),
                job: job.id,
                step,
            })
        };
        let hook = |file| {
            let kind = op.hook()?;
            let h = match kind {
                super::types::HookKind::Validate => spec.validate.as_ref(),
                super::types::HookKind::Reload => spec.reload.as_ref(),
                super::types::HookKind::Health => spec.health.as_ref(),
            }?;
            step(Step::RunHook {
                kind,
                command: h.command.clone(),
                timeout_ms: h.timeout_ms,
                config: name.to_owned(),
                rev: if op == Op::ReloadRestored || job.kind == Kind::Check {
                    slot.state.fence.applied_rev
                } else {
                    job.rev()
                },
                file,
            })
        };
        let lkg_path = slot.state.lkg.as_ref().map(|l| state_dir_lkg(&l.file));
        match op {
            Op::Fetch => {
                let d = d?;
                Some(Action::Fetch {
                    config: name.to_owned(),
                    rev: d.rev,
                    sha256: d.sha256.clone(),
                })
            }
            Op::Adopt if slot.state.lkg.is_none() => step(Step::AdoptOriginal {
                target: spec.target.clone(),
                lkg: state_dir_lkg(&lkg_file(name, 0)),
            }),
            Op::Adopt => None,
            Op::PersistIntent => {
                let d = d?;
                let in_flight = InFlight {
                    rev: d.rev,
                    sha256: d.sha256.clone(),
                    lkg_file: lkg_file(name, d.rev),
                };
                let id = job.id;
                // The intent is in memory at once: every later persist carries it.
                let slot = self.slots.get_mut(name)?;
                slot.state.in_flight = Some(in_flight);
                if let Some(job) = slot.job.as_mut() {
                    job.intent_persisted = true;
                }
                Some(self.persist_action(name, id))
            }
            Op::Stage => step(Step::Stage {
                path: spec.staged(),
                content: job.content.clone()?,
            }),
            Op::Validate => hook(spec.staged()),
            Op::Rename => step(Step::Rename {
                from: spec.staged(),
                to: spec.target.clone(),
            }),
            Op::FsyncDir => step(Step::FsyncDir { dir: spec.dir() }),
            Op::Reload | Op::Health | Op::ReloadRestored => hook(spec.target.clone()),
            Op::SaveLkg => step(Step::SaveLkg {
                path: state_dir_lkg(&lkg_file(name, d?.rev)),
                content: job.content.clone()?,
            }),
            Op::Commit => {
                let d = d?.clone();
                let id = job.id;
                let slot = self.slots.get_mut(name)?;
                let mut next = slot.state.clone();
                commit(&mut next, name, &d);
                slot.committing = Some(next);
                Some(self.persist_action(name, id))
            }
            Op::RemoveOldLkg => {
                let stale = slot.state.stale_lkg.as_ref()?;
                step(Step::Remove {
                    path: state_dir_lkg(stale),
                })
            }
            Op::RemoveStaged => step(Step::Remove {
                path: spec.staged(),
            }),
            Op::RestoreLkg => step(Step::RestoreLkg {
                lkg: match &slot.state.lkg {
                    Some(l) if l.sha256.is_some() => lkg_path,
                    _ => None,
                },
                staged: spec.staged(),
                target: spec.target.clone(),
            }),
            Op::PersistAbort => {
                let (id, keep) = (job.id, job.restore_failed);
                let slot = self.slots.get_mut(name)?;
                if !keep {
                    slot.state.in_flight = None;
                }
                Some(self.persist_action(name, id))
            }
            Op::ReadApplied => step(Step::ReadLkg { lkg: lkg_path }),
            Op::StageShadow => step(Step::Stage {
                path: spec.shadow(),
                content: job.content.clone()?,
            }),
            Op::ValidateShadow => hook(spec.shadow()),
            Op::RemoveShadow => step(Step::Remove {
                path: spec.shadow(),
            }),
            Op::RemoveGarbage => {
                let keep = slot.state.lkg.as_ref().map(|l| l.file.as_str());
                let garbage = slot
                    .state
                    .stale_lkg
                    .as_deref()
                    .or(slot.state.in_flight.as_ref().map(|f| f.lkg_file.as_str()))
                    .filter(|g| Some(*g) != keep)?;
                step(Step::Remove {
                    path: state_dir_lkg(garbage),
                })
            }
            Op::HashTarget => step(Step::HashTarget {
                target: spec.target.clone(),
            }),
        }
    }

    pub(super) fn on_fetched(
        &mut self,
        name: &str,
        rev: u64,
        content: Vec<u8>,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        let Some(job) = self.slots.get_mut(name).and_then(|s| s.job.as_mut()) else {
            return;
        };
        if job.current != Some(Op::Fetch) || job.rev() != rev {
            return; // an answer for a job that is gone
        }
        job.fetch_outstanding = false;
        if let Some(d) = &job.desired {
            let sha = sha256_hex(&content);
            if content.len() as u64 != d.size || sha != d.sha256 {
                job.fail(format!(
                    "content of revision {rev} does not match: {} bytes with sha256 {sha}, expected {} bytes with sha256 {}; nothing was touched",
                    content.len(),
                    d.size,
                    d.sha256
                ));
            } else if let Err(e) = parse(d.format, &content) {
                job.fail(format!(
                    "revision {rev} is not valid {}: {e}; nothing was touched",
                    d.format
                ));
            }
        }
        if job.error.is_some() {
            job.clean_up_after(Op::Fetch);
            if job.kind == Kind::Apply {
                job.plan.clear(); // nothing staged, nothing persisted
            }
        } else {
            job.content = Some(Arc::from(content));
        }
        self.advance(name, now_ms, out);
    }

    pub(super) fn on_fetch_failed(
        &mut self,
        name: &str,
        rev: u64,
        error: String,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        let connected = self.connected;
        let Some(job) = self.slots.get_mut(name).and_then(|s| s.job.as_mut()) else {
            return;
        };
        if job.current != Some(Op::Fetch) || job.rev() != rev {
            return;
        }
        let _ = error; // retried: the content exists on the server
        job.fetch_outstanding = false;
        job.fetch_attempts += 1;
        if connected {
            let at_ms = now_ms + backoff_ms(job.fetch_attempts);
            job.retry_at = Some(at_ms);
            out.push(Action::Wake { at_ms });
        }
    }

    /// Re-sends fetches that are due (or all of them, after a reconnect).
    pub(super) fn retry_fetches(&mut self, now_ms: u64, all: bool, out: &mut Vec<Action>) {
        for (name, slot) in &mut self.slots {
            let Some(job) = slot.job.as_mut() else {
                continue;
            };
            let due =
                job.retry_at.is_some_and(|at| at <= now_ms) || (all && job.fetch_attempts > 0);
            if job.current == Some(Op::Fetch) && !job.fetch_outstanding && due {
                job.retry_at = None;
                job.fetch_outstanding = true;
                if let Some(d) = &job.desired {
                    out.push(Action::Fetch {
                        config: name.clone(),
                        rev: d.rev,
                        sha256: d.sha256.clone(),
                    });
                }
            }
        }
    }

    pub(super) fn on_step(
        &mut self,
        name: &str,
        id: JobId,
        outcome: StepOutcome,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        let Some(job) = slot.job.as_mut().filter(|j| j.id == id) else {
            return; // a standalone persist, or a job that is gone
        };
        let Some(op) = job.current else {
            return;
        };
        // The health hook's metrics go into the report whether it passed or failed.
        if op == Op::Health
            && let StepOutcome::Hook(h) = &outcome
        {
            job.metrics.clone_from(&h.metrics);
        }
        let failure = match &outcome {
            StepOutcome::Failed(e) => Some(format!("{}: {e}", describe(op))),
            StepOutcome::Hook(h) if !h.is_ok() => op.hook().map(|k| h.describe(k)),
            _ => None,
        };
        if let Some(why) = failure {
            match op {
                Op::RestoreLkg => {
                    job.restore_failed = true;
                    job.fail(why.clone());
                    let error = job.error.take().unwrap_or_default();
                    job.error = Some(format!("{error}; restoring last-known-good failed: {why}"));
                }
                Op::ReloadRestored => {
                    let error = job.error.take().unwrap_or_default();
                    job.error = Some(format!("{error}; after restoring, {why}"));
                }
                Op::RemoveStaged | Op::RemoveShadow | Op::RemoveOldLkg | Op::RemoveGarbage => {}
                Op::PersistAbort => {}
                _ => {
                    if op == Op::Commit {
                        slot.committing = None;
                    }
                    job.fail(why);
                    job.clean_up_after(op);
                }
            }
            return self.advance(name, now_ms, out);
        }
        match (op, outcome) {
            (Op::Adopt, StepOutcome::Sha256(sha256)) => {
                slot.state.lkg = Some(Lkg {
                    rev: 0,
                    token: 0,
                    file: lkg_file(name, 0),
                    sha256,
                });
            }
            (Op::Commit, _) => {
                if let Some(next) = slot.committing.take() {
                    slot.state = next;
                }
            }
            (Op::RemoveOldLkg, _) => slot.state.stale_lkg = None,
            (Op::RemoveGarbage, _) => {
                slot.state.stale_lkg = None;
            }
            (Op::ReadApplied, StepOutcome::Content(c)) => job.applied_content = c,
            (Op::RestoreLkg, _) => job.restored = true,
            (Op::HashTarget, StepOutcome::Sha256(found)) => {
                let lkg = slot.state.lkg.as_ref();
                if lkg.map(|l| &l.sha256) == Some(&found) {
                    if job.interrupted.is_some() {
                        job.plan = [Op::PersistAbort].into();
                    }
                } else {
                    let q = slot.state.fence.applied_rev;
                    job.error = Some(match &job.interrupted {
                        Some(f) => format!(
                            "the agent stopped while applying revision {}; restored last-known-good revision {q}",
                            f.rev
                        ),
                        None => format!(
                            "{} was changed outside the agent; restored last-known-good revision {q}",
                            slot.spec.target.display()
                        ),
                    });
                    job.plan = [Op::RestoreLkg, Op::ReloadRestored, Op::PersistAbort].into();
                }
            }
            _ => {}
        }
        // Latest wins: before the rename, a newer desired revision replaces this one.
        if job.kind == Kind::Apply
            && op.before_rename()
            && slot.pending.is_some()
            && job.error.is_none()
        {
            job.superseded = true;
            job.clean_up_after(op);
        }
        self.advance(name, now_ms, out);
    }
}

/// What committing revision `d` does to a config's state.
fn commit(cs: &mut ConfigState, name: &str, d: &super::types::Desired) {
    cs.fence.applied(d.rev, d.token);
    let new = lkg_file(name, d.rev);
    cs.stale_lkg = cs.lkg.take().map(|l| l.file).filter(|f| *f != new);
    cs.lkg = Some(Lkg {
        rev: d.rev,
        token: d.token,
        file: new,
        sha256: Some(d.sha256.clone()),
    });
    cs.in_flight = None;
}

/// An operation, in words, for error messages.
fn describe(op: Op) -> &'static str {
    match op {
        Op::Fetch => "fetching the content",
        Op::Adopt => "keeping the target as found",
        Op::PersistIntent | Op::Commit | Op::PersistAbort => "writing the state file",
        Op::Stage | Op::StageShadow => "writing the staged file",
        Op::Rename => "renaming the staged file over the target",
        Op::FsyncDir => "syncing the target's directory",
        Op::SaveLkg => "saving the last-known-good copy",
        Op::RemoveOldLkg | Op::RemoveGarbage => "removing an old last-known-good copy",
        Op::RemoveStaged | Op::RemoveShadow => "removing the staged file",
        Op::RestoreLkg => "restoring last-known-good",
        Op::ReadApplied => "reading the applied content",
        Op::HashTarget => "reading the target",
        Op::Validate | Op::ValidateShadow | Op::Reload | Op::Health | Op::ReloadRestored => {
            "running a hook"
        }
    }
}
