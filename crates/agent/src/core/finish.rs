//! How a job ends: its report.

use std::sync::Arc;

use locksmith_config::diff;

use super::check::check_report;
use super::job::{Job, Kind};
use super::types::{Action, Report, ReportState};
use super::{Agent, Slot, report};

impl Agent {
    /// Ends `name`'s job with its report.
    pub(super) fn finish(&mut self, name: &str, now_ms: u64, out: &mut Vec<Action>) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        let Some(mut job) = slot.job.take() else {
            return;
        };
        if job.superseded {
            return;
        }
        let rev = job.rev();
        let r = match job.kind {
            Kind::Apply => match job.error.take() {
                None => {
                    slot.failed = None;
                    slot.check_error = None;
                    // The applied revision's newest metrics: every `applied` report of it
                    // (a reconnect's too) carries them.
                    slot.metrics = std::mem::take(&mut job.metrics);
                    let mut r = report(slot, rev, ReportState::Applied, None);
                    r.received_to_applied_ms = Some(now_ms.saturating_sub(job.received_ms));
                    slot.last_report = Some(r.clone());
                    r
                }
                Some(e) => {
                    if let Some(d) = &job.desired {
                        slot.failed = Some((d.rev, d.sha256.clone()));
                    }
                    let why = if job.restored {
                        format!(
                            "{e}; restored last-known-good revision {}",
                            slot.state.fence.applied_rev
                        )
                    } else {
                        e
                    };
                    let mut r = report(slot, rev, ReportState::Failed, Some(why));
                    r.metrics = std::mem::take(&mut job.metrics);
                    slot.last_report = Some(r.clone());
                    r
                }
            },
            Kind::Shadow => shadow_report(slot, &mut job),
            Kind::Check => check_report(slot, &mut job),
            Kind::Recover => match job.error.take() {
                Some(e) => {
                    let rev = job
                        .interrupted
                        .as_ref()
                        .map_or(slot.state.fence.applied_rev, |f| f.rev);
                    report(slot, rev, ReportState::Failed, Some(e))
                }
                None => return,
            },
        };
        // A new applied revision, or a check done: the next check is an interval away.
        let reschedule = match job.kind {
            Kind::Apply => r.state == ReportState::Applied,
            Kind::Check => true,
            Kind::Shadow | Kind::Recover => false,
        };
        out.push(Action::Report(r));
        if reschedule {
            self.schedule_check(name, now_ms, out);
        }
    }
}

/// The shadow's report: ok with the diff it would make, or failed with why.
fn shadow_report(slot: &mut Slot, job: &mut Job) -> Report {
    let rev = job.rev();
    match job.error.take() {
        Some(e) => {
            // A shadow never changes what is reported as the config's state.
            let keep = slot.last_report.clone();
            let r = report(slot, rev, ReportState::ShadowFailed, Some(e));
            slot.last_report = keep;
            r
        }
        None => {
            let applied = job.applied_content.take().unwrap_or_default();
            let new = job.content.clone().unwrap_or_else(|| Arc::from(Vec::new()));
            let a = format!("{}@{}", slot.spec.name, slot.state.fence.applied_rev);
            let b = format!("{}@{rev}", slot.spec.name);
            let keep = slot.last_report.clone();
            let mut r = report(slot, rev, ReportState::ShadowOk, None);
            slot.last_report = keep;
            r.diff = Some(diff(&a, &applied, &b, &new));
            r
        }
    }
}
