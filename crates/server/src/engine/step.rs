//! The engine's deterministic step: an operation on the [`State`] at a given `now`, and what the
//! driver must do about it. No IO, no clock, no locks: the same state, operation and `now` give
//! the same [`Stepped`] every time, so a sequence of operations can be checked without a server
//! (see the tests below) and a simulator can run thousands of agents on it.

use std::sync::Arc;

use locksmith_core::{AuditKind, AuditPrincipal, Effect, Effects, LeaseId, Mutation, Now};

use super::{Actor, State};

/// What one step did, for the driver to carry out.
#[derive(Debug, PartialEq, Eq)]
pub struct Stepped<T> {
    /// The operation's answer to its caller: sent only once `batch` is durable.
    pub reply: T,
    /// The changes to make durable, atomically and in this order; audit records numbered.
    pub batch: Vec<Mutation>,
    /// Everything else, in order: grants and timeouts for queued waiters (delivered once
    /// `batch` is durable), leases that ended.
    pub deliveries: Effects,
}

/// Runs `op` on `state` at `now` and seals what it emitted: the mutations become the batch, in
/// order, each audit record numbered from [`State::audit_seq`] in batch order — one sequence
/// for every domain — and the rest become the deliveries.
///
/// `op` is a closure rather than a boxed command: each call site is compiled to a direct call,
/// and the step allocates nothing but what the operation emits (see [`seal`]).
pub fn step<T>(
    state: &mut State,
    now: Now,
    op: impl FnOnce(&mut State, Now, &mut Effects) -> T,
) -> Stepped<T> {
    step_as(state, now, None, op)
}

/// [`step`] for a request made by `by`: each audit record the step writes names its principal
/// — but a grant handed to a queued waiter names the waiter's, who asked for it — and the
/// acquirers of leases follow the step's grants and ends (see `Acquirers::settle`).
pub fn step_as<T>(
    state: &mut State,
    now: Now,
    by: Option<&Actor>,
    op: impl FnOnce(&mut State, Now, &mut Effects) -> T,
) -> Stepped<T> {
    let mut fx = Effects::new();
    let reply = op(state, now, &mut fx);
    let from_queue = state.acquirers.settle(&fx);
    let stamp = Stamp {
        by: by.map(|a| &a.audit),
        from_queue: &from_queue,
    };
    let (batch, deliveries) = seal(fx, &mut state.audit_seq, &stamp);
    Stepped {
        reply,
        batch,
        deliveries,
    }
}

/// Who the audit records of a step name.
struct Stamp<'a> {
    /// The request's principal.
    by: Option<&'a AuditPrincipal>,
    /// Leases granted from a queue in the step, with their waiter's acquirer.
    from_queue: &'a [(LeaseId, Arc<Actor>)],
}

impl Stamp<'_> {
    fn principal(&self, record: &locksmith_core::AuditRecord) -> Option<AuditPrincipal> {
        if record.principal.is_some() {
            return record.principal.clone();
        }
        let waiter = match (&record.kind, record.lease) {
            (AuditKind::Granted, Some(lease)) => self
                .from_queue
                .iter()
                .find(|(l, _)| *l == lease)
                .map(|(_, by)| &by.audit),
            _ => None,
        };
        waiter.or(self.by).cloned()
    }
}

/// Splits `fx` into the batch and the deliveries, numbering each audit record after
/// `audit_seq` and naming its principal (`stamp`). Neither vector allocates when it stays
/// empty (a renewal, a refusal), and a batch is allocated once.
fn seal(fx: Effects, audit_seq: &mut u64, stamp: &Stamp<'_>) -> (Vec<Mutation>, Effects) {
    let persisted = fx
        .iter()
        .filter(|effect| matches!(effect, Effect::Persist(_)))
        .count();
    let mut batch = Vec::with_capacity(persisted);
    let mut deliveries = Vec::new();
    for effect in fx {
        match effect {
            Effect::Persist(mut mutation) => {
                if let Mutation::AppendAudit(record) = &mut mutation {
                    *audit_seq += 1;
                    record.seq = *audit_seq;
                    record.principal = stamp.principal(record);
                }
                batch.push(mutation);
            }
            other => deliveries.push(other),
        }
    }
    (batch, deliveries)
}

#[cfg(test)]
mod tests;
