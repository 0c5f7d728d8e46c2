//! The sans-IO agent: events in, actions out, no clock and no IO.
//!
//! Each config has a slot: its persisted state, at most one job in progress, and the newest
//! desired revision and shadow revision waiting behind it. Invariants:
//! - at most one job per config runs; a newer desired revision waits in `pending`, replacing
//!   any older one there (latest wins, nothing is replayed);
//! - a job before its rename is abandoned for a newer revision (its staged file removed); from
//!   the rename on it finishes or rolls back first;
//! - the fence check runs when a revision arrives and again when its job starts, before any
//!   action touches anything;
//! - no apply starts without an answer "absent" to [`Action::CheckApplyLock`] in the same
//!   step (when an apply-lock is configured);
//! - a job that fails ends like any other: the next desired revision starts normally.

mod check;
mod finish;
mod job;
mod ops;
pub mod types;

use std::collections::BTreeMap;

use job::{Job, Kind};
use types::{Action, Desired, Event, JobId, Report, ReportState};

use crate::spec::{AgentSpec, ConfigSpec};
use crate::state::{AgentState, ConfigState};

/// A desired revision waiting to start.
#[derive(Debug, Clone)]
struct Queued {
    desired: Desired,
    received_ms: u64,
}

/// One config's slot.
#[derive(Debug)]
struct Slot {
    spec: ConfigSpec,
    state: ConfigState,
    /// The state a commit in progress will leave (what snapshots persist meanwhile).
    committing: Option<ConfigState>,
    job: Option<Job>,
    pending: Option<Queued>,
    pending_shadow: Option<Queued>,
    /// The revision (and SHA-256) whose apply failed last: re-sent, it is not tried again.
    failed: Option<(u64, String)>,
    /// The revision last reported `deferred`.
    deferred: Option<u64>,
    /// What the health hook last reported of the applied revision (in memory only: empty
    /// after a restart until the hook runs again).
    metrics: BTreeMap<String, f64>,
    /// When the applied revision's next periodic health check is due (`--health-interval`).
    next_check_ms: Option<u64>,
    /// Why the applied revision's last periodic health check failed (cleared by a passing
    /// check or a new apply): a re-sent desired revision is reported `failed` with it.
    check_error: Option<String>,
    last_report: Option<Report>,
}

/// The endpoint agent's state machine.
#[derive(Debug)]
pub struct Agent {
    spec: AgentSpec,
    slots: BTreeMap<String, Slot>,
    next_job: JobId,
    connected: bool,
    /// A [`Action::CheckApplyLock`] is outstanding.
    lock_query: bool,
    /// The apply-lock was just seen absent: applies may start in this step.
    lock_clear: bool,
}

impl Agent {
    /// An agent starting from `state` (the state file as read; default if there was none).
    /// Returns the recovery actions: for every config with a last-known-good copy, leftovers
    /// are removed and the target is compared with it (see the crate docs' recovery rule).
    pub fn restore(spec: AgentSpec, mut state: AgentState, now_ms: u64) -> (Agent, Vec<Action>) {
        let mut slots = BTreeMap::new();
        for c in &spec.configs {
            let cs = state.configs.remove(&c.name).unwrap_or_default();
            let last_report = (cs.fence.applied_rev > 0).then(|| Report {
                config: c.name.clone(),
                rev: cs.fence.applied_rev,
                state: ReportState::Applied,
                applied_rev: cs.fence.applied_rev,
                applied_token: cs.fence.applied_token,
                error: None,
                received_to_applied_ms: None,
                diff: None,
                metrics: BTreeMap::new(),
            });
            slots.insert(
                c.name.clone(),
                Slot {
                    spec: c.clone(),
                    state: cs,
                    committing: None,
                    job: None,
                    pending: None,
                    pending_shadow: None,
                    failed: None,
                    deferred: None,
                    metrics: BTreeMap::new(),
                    next_check_ms: None,
                    check_error: None,
                    last_report,
                },
            );
        }
        let mut agent = Agent {
            spec,
            slots,
            next_job: 1,
            connected: false,
            lock_query: false,
            lock_clear: false,
        };
        let mut out = Vec::new();
        let names: Vec<String> = agent.slots.keys().cloned().collect();
        for name in names {
            let id = agent.job_id();
            if let Some(slot) = agent.slots.get_mut(&name) {
                let mut job = Job::new(id, Kind::Recover, None, now_ms);
                job.interrupted = slot.state.in_flight.clone();
                if slot.state.lkg.is_none() {
                    // Never applied: only leftovers to remove.
                    job.plan
                        .retain(|op| *op != job::Op::HashTarget && *op != job::Op::RemoveGarbage);
                }
                slot.job = Some(job);
            }
            agent.advance(&name, now_ms, &mut out);
            agent.schedule_check(&name, now_ms, &mut out);
        }
        (agent, out)
    }

    /// Feeds one event; returns what to do, in order.
    pub fn handle(&mut self, now_ms: u64, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Desired(d) => self.on_desired(now_ms, d, &mut out),
            Event::Fetched {
                config,
                rev,
                content,
            } => self.on_fetched(&config, rev, content, now_ms, &mut out),
            Event::FetchFailed { config, rev, error } => {
                self.on_fetch_failed(&config, rev, error, now_ms, &mut out)
            }
            Event::Step {
                config,
                job,
                outcome,
            } => self.on_step(&config, job, outcome, now_ms, &mut out),
            Event::ApplyLock { present } => self.on_apply_lock(present, now_ms, &mut out),
            Event::Tick => self.on_tick(now_ms, &mut out),
            Event::Connected => {
                self.connected = true;
                for slot in self.slots.values() {
                    if let Some(r) = &slot.last_report {
                        out.push(Action::Report(r.clone()));
                    }
                }
                self.retry_fetches(now_ms, true, &mut out);
            }
            Event::Disconnected => self.connected = false,
        }
        out
    }

    /// The persisted state as the agent holds it now.
    pub fn state(&self) -> AgentState {
        AgentState {
            configs: self
                .slots
                .iter()
                .map(|(k, s)| (k.clone(), s.committing.as_ref().unwrap_or(&s.state).clone()))
                .collect(),
            ..AgentState::default()
        }
    }

    /// The newest report per config (what to send after a reconnect).
    pub fn reports(&self) -> Vec<Report> {
        self.slots
            .values()
            .filter_map(|s| s.last_report.clone())
            .collect()
    }

    /// Whether no job runs and nothing waits (a simulator's quiescence check).
    pub fn is_idle(&self) -> bool {
        self.slots
            .values()
            .all(|s| s.job.is_none() && s.pending.is_none() && s.pending_shadow.is_none())
    }

    /// The spec the agent runs with.
    pub fn spec(&self) -> &AgentSpec {
        &self.spec
    }

    fn job_id(&mut self) -> JobId {
        let id = self.next_job;
        self.next_job += 1;
        id
    }

    fn on_desired(&mut self, now_ms: u64, d: Desired, out: &mut Vec<Action>) {
        let name = d.config.clone();
        let Some(slot) = self.slots.get_mut(&name) else {
            return; // not managed here
        };
        if !d.shadow && slot.state.fence.tell(d.fence, d.rev) {
            out.push(self.persist_action(&name, 0));
        }
        let Some(slot) = self.slots.get_mut(&name) else {
            return;
        };
        if let Err(refusal) = slot.state.fence.check(&name, d.rev, d.token) {
            let r = report(slot, d.rev, ReportState::Refused, Some(refusal.to_string()));
            out.push(Action::Report(r));
            return;
        }
        let queued = Queued {
            desired: d,
            received_ms: now_ms,
        };
        if queued.desired.shadow {
            slot.pending_shadow = Some(queued);
        } else {
            slot.pending = Some(queued);
            slot.deferred = None;
            // A job still fetching has touched nothing: drop it now.
            if let Some(job) = &slot.job
                && job.kind == Kind::Apply
                && job.current == Some(job::Op::Fetch)
            {
                slot.job = None;
            }
        }
        self.try_start(&name, now_ms, out);
    }

    /// Starts the next job on `name` if it is idle: the pending apply first, then the shadow.
    fn try_start(&mut self, name: &str, now_ms: u64, out: &mut Vec<Action>) {
        let id = self.next_job;
        let apply_lock = self.spec.apply_lock.is_some();
        let lock_clear = self.lock_clear;
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        if slot.job.is_some() {
            return;
        }
        if let Some(q) = slot.pending.take() {
            let d = &q.desired;
            if let Err(refusal) = slot.state.fence.check(name, d.rev, d.token) {
                let r = report(slot, d.rev, ReportState::Refused, Some(refusal.to_string()));
                out.push(Action::Report(r));
            } else if d.rev == slot.state.fence.applied_rev
                && slot.state.lkg.as_ref().and_then(|l| l.sha256.as_deref()) == Some(&d.sha256)
            {
                // Applied already; a failing periodic check still stands.
                let r = match slot.check_error.clone() {
                    Some(why) => report(slot, d.rev, ReportState::Failed, Some(why)),
                    None => report(slot, d.rev, ReportState::Applied, None),
                };
                out.push(Action::Report(r));
            } else if slot.failed.as_ref() == Some(&(d.rev, d.sha256.clone())) {
                // Failed already; the report stands until another revision is desired.
            } else if apply_lock && !lock_clear {
                slot.pending = Some(q);
                if !self.lock_query {
                    self.lock_query = true;
                    out.push(Action::CheckApplyLock);
                }
                return;
            } else {
                self.next_job += 1;
                slot.job = Some(Job::new(id, Kind::Apply, Some(q.desired), q.received_ms));
                return self.advance(name, now_ms, out);
            }
        }
        if let Some(q) = slot.pending_shadow.take() {
            self.next_job += 1;
            slot.job = Some(Job::new(id, Kind::Shadow, Some(q.desired), q.received_ms));
            return self.advance(name, now_ms, out);
        }
        self.start_due_check(name, now_ms, out);
    }

    fn on_apply_lock(&mut self, present: bool, now_ms: u64, out: &mut Vec<Action>) {
        self.lock_query = false;
        let names: Vec<String> = self.slots.keys().cloned().collect();
        if present {
            let mut waiting = false;
            for slot in self.slots.values_mut() {
                let Some(q) = &slot.pending else { continue };
                if slot.job.is_some() {
                    continue;
                }
                waiting = true;
                let rev = q.desired.rev;
                if slot.deferred != Some(rev) {
                    slot.deferred = Some(rev);
                    let lock = self
                        .spec
                        .apply_lock
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    let why = format!(
                        "apply-lock {lock} exists: revision {rev} waits until it is removed"
                    );
                    out.push(Action::Report(report(
                        slot,
                        rev,
                        ReportState::Deferred,
                        Some(why),
                    )));
                }
            }
            if waiting {
                out.push(Action::Wake {
                    at_ms: now_ms + self.spec.defer_poll_ms,
                });
            }
            // Shadows do not wait for the apply-lock.
            for name in names {
                if let Some(slot) = self.slots.get_mut(&name)
                    && slot.job.is_none()
                    && slot.pending_shadow.is_some()
                {
                    let held = slot.pending.take();
                    self.try_start(&name, now_ms, out);
                    if let Some(slot) = self.slots.get_mut(&name) {
                        slot.pending = held;
                    }
                }
            }
        } else {
            self.lock_clear = true;
            for name in names {
                self.try_start(&name, now_ms, out);
            }
            self.lock_clear = false;
        }
    }

    fn on_tick(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        let deferred = self
            .slots
            .values()
            .any(|s| s.job.is_none() && s.pending.is_some());
        if deferred && !self.lock_query && self.spec.apply_lock.is_some() {
            self.lock_query = true;
            out.push(Action::CheckApplyLock);
        }
        self.retry_fetches(now_ms, false, out);
        for name in self.checks_due(now_ms) {
            self.start_due_check(&name, now_ms, out);
        }
    }
}

/// A report for `slot` about revision `rev`, remembered as its newest. An `applied` report of
/// the applied revision carries the health hook's latest metrics of it.
fn report(slot: &mut Slot, rev: u64, state: ReportState, error: Option<String>) -> Report {
    let applied = state == ReportState::Applied && rev == slot.state.fence.applied_rev;
    let r = Report {
        config: slot.spec.name.clone(),
        rev,
        state,
        applied_rev: slot.state.fence.applied_rev,
        applied_token: slot.state.fence.applied_token,
        error,
        received_to_applied_ms: None,
        diff: None,
        metrics: if applied {
            slot.metrics.clone()
        } else {
            BTreeMap::new()
        },
    };
    slot.last_report = Some(r.clone());
    r
}
