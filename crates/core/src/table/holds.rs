//! Holds ("hold points"): place, acknowledge, lift, expire, restore. Lock-delay ends live here
//! too: both are "no new grants until …" and both hand the resource to its queue when they end.

use super::{Hold, LockTable, Timer};
use crate::audit::{AuditKind, AuditRecord};
use crate::effect::{Effect, Effects};
use crate::error::{HoldError, InvalidRequest};
use crate::hold::{HoldId, HoldRecord, HoldState, HoldView};
use crate::ids::LeaseId;
use crate::operator::same_operator;
use crate::record::Mutation;
use crate::resource::validate_resource;
use crate::time::Now;

/// A request to freeze a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceHold {
    /// The resource to freeze.
    pub resource: String,
    /// Who places the hold (`user@node`, or a name the operator chose).
    pub operator: String,
    /// Why: required, shown to everyone who is refused.
    pub reason: String,
    /// How long the hold stays in force once active, ms.
    pub duration_ms: u64,
    /// True when a different operator must acknowledge it before it takes effect.
    pub require_ack: bool,
}

pub(super) fn require_text(field: &str, value: &str) -> Result<(), InvalidRequest> {
    if value.trim().is_empty() {
        return Err(InvalidRequest::new(field, "must not be empty"));
    }
    if value.len() > 1024 || value.chars().any(char::is_control) {
        return Err(InvalidRequest::new(
            field,
            "must be at most 1024 bytes with no control characters",
        ));
    }
    Ok(())
}

impl LockTable {
    /// Places a hold. Without `require_ack` it is in force at once; with it, it takes effect
    /// only when a different operator acknowledges it, and lapses if nobody does within its
    /// duration.
    pub fn place_hold(
        &mut self,
        req: PlaceHold,
        now: Now,
        fx: &mut Effects,
    ) -> Result<HoldView, HoldError> {
        validate_resource(&req.resource)?;
        require_text("operator", &req.operator)?;
        require_text("reason", &req.reason)?;
        let max = self.config.max_hold_ms;
        if req.duration_ms < 1_000 || req.duration_ms > max {
            return Err(InvalidRequest::new(
                "duration_ms",
                format!(
                    "must be between 1000 and {max} ms (got {})",
                    req.duration_ms
                ),
            )
            .into());
        }
        self.advance(now, fx);
        Ok(self.add_hold(req, now, fx))
    }

    /// Places a hold without validation (callers validated). Returns its view.
    pub(super) fn add_hold(&mut self, req: PlaceHold, now: Now, fx: &mut Effects) -> HoldView {
        self.last_seq += 1;
        let id = HoldId(self.last_seq);
        let active = !req.require_ack;
        let record = HoldRecord {
            hold: id,
            resource: req.resource,
            reason: req.reason,
            by: req.operator,
            placed_at_ms: now.wall_ms,
            duration_ms: req.duration_ms,
            require_ack: req.require_ack,
            acked_by: None,
            active_since_ms: active.then_some(now.wall_ms),
        };
        let deadline = now.mono.plus_ms(req.duration_ms);
        self.timers.insert((deadline, Timer::Hold(id)));
        self.resource_entry(&record.resource)
            .1
            .busy()
            .holds
            .push(id);
        fx.push(Effect::Persist(Mutation::FenceHighWater(self.last_seq)));
        fx.push(Effect::Persist(Mutation::PutHold(record.clone())));
        self.audit(
            AuditRecord {
                hold: Some(id),
                operator: Some(record.by.clone()),
                reason: Some(record.reason.clone()),
                ..AuditRecord::new(&record.resource, AuditKind::HoldPlaced)
            },
            now,
            fx,
        );
        let state = if active {
            HoldState::Active
        } else {
            HoldState::PendingAck
        };
        let view = HoldView {
            record: record.clone(),
            state,
            ends_in_ms: record.duration_ms,
        };
        self.holds.insert(
            id,
            Hold {
                record,
                state,
                deadline,
            },
        );
        view
    }

    /// Acknowledges a pending hold: it takes effect now, for its full duration. The placing
    /// operator cannot acknowledge their own hold (names compared as [`same_operator`] does). A
    /// hold already in force is refused — acknowledged before ([`HoldError::AlreadyAcknowledged`],
    /// naming who) or never needing it ([`HoldError::AckNotRequired`]) — so that nobody is told
    /// they acknowledged a hold when nothing changed.
    pub fn ack_hold(
        &mut self,
        hold: HoldId,
        operator: &str,
        now: Now,
        fx: &mut Effects,
    ) -> Result<HoldView, HoldError> {
        require_text("operator", operator)?;
        self.advance(now, fx);
        let h = self
            .holds
            .get_mut(&hold)
            .ok_or(HoldError::NotFound { hold })?;
        if h.state == HoldState::Active {
            let resource = h.record.resource.clone();
            return Err(match &h.record.acked_by {
                Some(by) => HoldError::AlreadyAcknowledged {
                    hold,
                    resource,
                    by: by.clone(),
                },
                None => HoldError::AckNotRequired { hold, resource },
            });
        }
        if same_operator(&h.record.by, operator) {
            return Err(HoldError::SameOperator {
                hold,
                by: h.record.by.clone(),
            });
        }
        self.timers.remove(&(h.deadline, Timer::Hold(hold)));
        h.state = HoldState::Active;
        h.deadline = now.mono.plus_ms(h.record.duration_ms);
        h.record.acked_by = Some(operator.to_string());
        h.record.active_since_ms = Some(now.wall_ms);
        self.timers.insert((h.deadline, Timer::Hold(hold)));
        let record = h.record.clone();
        fx.push(Effect::Persist(Mutation::PutHold(record.clone())));
        self.audit(
            AuditRecord {
                hold: Some(hold),
                operator: Some(operator.to_string()),
                reason: Some(record.reason.clone()),
                ..AuditRecord::new(&record.resource, AuditKind::HoldAcked)
            },
            now,
            fx,
        );
        // In force from now for its whole duration.
        Ok(HoldView {
            ends_in_ms: record.duration_ms,
            record,
            state: HoldState::Active,
        })
    }

    /// Lifts a hold before it ends; grants resume (the queue is served first).
    pub fn lift_hold(
        &mut self,
        hold: HoldId,
        operator: &str,
        now: Now,
        fx: &mut Effects,
    ) -> Result<HoldView, HoldError> {
        require_text("operator", operator)?;
        self.advance(now, fx);
        let view = self
            .hold_view(hold, now)
            .ok_or(HoldError::NotFound { hold })?;
        self.end_hold(hold, AuditKind::HoldLifted, Some(operator), now, fx);
        Ok(view)
    }

    pub(super) fn expire_hold(&mut self, hold: HoldId, now: Now, fx: &mut Effects) {
        self.end_hold(hold, AuditKind::HoldExpired, None, now, fx);
    }

    fn end_hold(
        &mut self,
        hold: HoldId,
        kind: AuditKind,
        operator: Option<&str>,
        now: Now,
        fx: &mut Effects,
    ) {
        let Some(h) = self.holds.remove(&hold) else {
            return;
        };
        self.timers.remove(&(h.deadline, Timer::Hold(hold)));
        let resource = h.record.resource;
        if let Some(res) = self.resources.get_mut(resource.as_str()) {
            if let Some(busy) = res.busy_if_any() {
                busy.holds.retain(|id| *id != hold);
            }
            res.tidy();
        }
        fx.push(Effect::Persist(Mutation::DeleteHold(hold)));
        self.audit(
            AuditRecord {
                hold: Some(hold),
                operator: operator.map(str::to_string),
                reason: Some(h.record.reason),
                ..AuditRecord::new(&resource, kind)
            },
            now,
            fx,
        );
        self.wake(&resource, now, fx);
        self.drop_if_idle(&resource);
    }

    /// Rebuilds a stored hold at boot with its remaining wall-clock time (clamped to its
    /// duration; a hold whose time ran out while the server was down ends at the first
    /// `advance`).
    pub(super) fn restore_hold(&mut self, record: HoldRecord, now: Now) {
        let (state, since) = match record.active_since_ms {
            Some(t) => (HoldState::Active, t),
            None => (HoldState::PendingAck, record.placed_at_ms),
        };
        let elapsed = now.wall_ms.saturating_sub(since).min(record.duration_ms);
        let deadline = now.mono.plus_ms(record.duration_ms - elapsed);
        let id = record.hold;
        self.timers.insert((deadline, Timer::Hold(id)));
        self.resource_entry(&record.resource)
            .1
            .busy()
            .holds
            .push(id);
        self.holds.insert(
            id,
            Hold {
                record,
                state,
                deadline,
            },
        );
    }

    /// A lock-delay ran out: grants resume.
    pub(super) fn end_delay(&mut self, key: LeaseId, now: Now, fx: &mut Effects) {
        let Some(resource) = self.delays.remove(&key) else {
            return;
        };
        if let Some(res) = self.resources.get_mut(&resource) {
            if let Some(busy) = res.busy_if_any() {
                if busy.delay.is_some_and(|(_, k)| k == key) {
                    busy.delay = None;
                }
            }
            res.tidy();
        }
        self.wake(&resource, now, fx);
        self.drop_if_idle(&resource);
    }
}
