//! The periodic health check (`--health-interval`): the health hook runs again on the applied
//! revision every interval, so a rollout's metric gates see fresh numbers while the revision
//! bakes. A passing check is reported `applied` with its metrics; a failing one `failed`, with
//! why, about the applied revision — and nothing is rolled back: deciding what a failing
//! endpoint means is the rollout's job (its on-failure policy), not the agent's.
//!
//! Scheduling: a config's next check is set an interval after its revision was applied, after
//! each check, and after a restart. A check due while a job runs or an apply waits runs once the
//! config is idle again (a new apply runs the health hook anyway, and reschedules).

use super::job::{Job, Kind};
use super::types::{Action, Report, ReportState};
use super::{Agent, Slot, report};

impl Agent {
    /// Sets `name`'s next check an interval from `now_ms` and asks for a wake-up then; clears
    /// it when checks are off or there is nothing to check (no health hook, nothing applied).
    pub(super) fn schedule_check(&mut self, name: &str, now_ms: u64, out: &mut Vec<Action>) {
        let every = self.spec.health_interval_ms.filter(|ms| *ms > 0);
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        slot.next_check_ms = match every {
            Some(every) if slot.spec.health.is_some() && slot.state.fence.applied_rev > 0 => {
                let at = now_ms.saturating_add(every);
                out.push(Action::Wake { at_ms: at });
                Some(at)
            }
            _ => None,
        };
    }

    /// The configs whose check is due at `now_ms`.
    pub(super) fn checks_due(&self, now_ms: u64) -> Vec<String> {
        self.slots
            .iter()
            .filter(|(_, s)| s.next_check_ms.is_some_and(|at| at <= now_ms))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Starts `name`'s check if it is due and the config is idle.
    pub(super) fn start_due_check(&mut self, name: &str, now_ms: u64, out: &mut Vec<Action>) {
        let id = self.next_job;
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        let due = slot.next_check_ms.is_some_and(|at| at <= now_ms);
        if !due || slot.job.is_some() || slot.pending.is_some() || slot.pending_shadow.is_some() {
            return;
        }
        slot.next_check_ms = None;
        self.next_job += 1;
        slot.job = Some(Job::new(id, Kind::Check, None, now_ms));
        self.advance(name, now_ms, out);
    }
}

/// A check's report: `applied` with its metrics, or `failed` with why — about the applied
/// revision, which stays.
pub(super) fn check_report(slot: &mut Slot, job: &mut Job) -> Report {
    let rev = slot.state.fence.applied_rev;
    let metrics = std::mem::take(&mut job.metrics);
    match job.error.take() {
        None => {
            slot.check_error = None;
            slot.metrics = metrics;
            report(slot, rev, ReportState::Applied, None)
        }
        Some(e) => {
            let why = format!(
                "periodic health check of applied revision {rev}: {e}; revision {rev} stays applied"
            );
            slot.check_error = Some(why.clone());
            let mut r = report(slot, rev, ReportState::Failed, Some(why));
            r.metrics = metrics;
            slot.last_report = Some(r.clone());
            r
        }
    }
}
