//! Helpers shared by the integration tests: a fresh table, unwrapping acquire outcomes, and
//! checks of the audit trail the table emits with its effects.
//!
//! Every grant (a `PutLease`) and every end (an `Effect::Ended`) must come with exactly one
//! `AppendAudit` describing it — same resource, lease, token and owner, and for an end the same
//! cause — and every record leaves the table unnumbered (`seq` 0: the driver's step numbers
//! them, from the one sequence every domain shares).

#![allow(dead_code)] // each test crate uses its own subset

use locksmith_core::{
    AcquireError, AcquireOutcome, AuditKind, AuditRecord, Effect, Effects, LeaseView, LockTable,
    Mutation, TableConfig, WaiterId,
};

/// A fresh table with the default limits.
pub fn table() -> LockTable {
    LockTable::new(TableConfig::default())
}

/// The refusal of an acquire asking for `asked` slots of `resource`, held with `held`.
pub fn slots_mismatch(
    resource: &str,
    held: u32,
    asked: u32,
) -> Result<AcquireOutcome, AcquireError> {
    Err(AcquireError::SlotsMismatch {
        resource: resource.to_string(),
        held_slots: held,
        asked_slots: asked,
    })
}

/// The lease of an acquire that must have been granted at once.
pub fn granted(outcome: Result<AcquireOutcome, AcquireError>) -> LeaseView {
    match outcome {
        Ok(AcquireOutcome::Granted(view)) => view,
        other => panic!("expected a grant, got {other:?}"),
    }
}

/// The waiter of an acquire that must have been queued.
pub fn queued(outcome: Result<AcquireOutcome, AcquireError>) -> WaiterId {
    match outcome {
        Ok(AcquireOutcome::Queued(id)) => id,
        other => panic!("expected to be queued, got {other:?}"),
    }
}

/// The audit records among `fx`, in order.
pub fn audits(fx: &Effects) -> Vec<&AuditRecord> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Persist(Mutation::AppendAudit(a)) => Some(a),
            _ => None,
        })
        .collect()
}

/// `fx` without its audit records (for exact comparisons written before the audit trail).
pub fn without_audit(fx: &Effects) -> Effects {
    fx.iter()
        .filter(|e| !matches!(e, Effect::Persist(Mutation::AppendAudit(_))))
        .cloned()
        .collect()
}

/// Checks every grant and every end in `fx` has exactly one matching audit record, that there
/// are no Granted/Ended records without a grant/end, and that every record is unnumbered.
pub fn check_audit(fx: &Effects) -> Result<(), String> {
    let all = audits(fx);
    if let Some(a) = all.iter().find(|a| a.seq != 0) {
        return Err(format!(
            "audit record numbered {} by the table (the driver numbers them): {fx:?}",
            a.seq
        ));
    }
    let mut granted_records = 0;
    let mut ended_records = 0;
    for a in &all {
        match a.kind {
            AuditKind::Granted => granted_records += 1,
            AuditKind::Ended { .. } => ended_records += 1,
            _ => {}
        }
    }
    let mut grants = 0;
    let mut ends = 0;
    for (i, e) in fx.iter().enumerate() {
        match e {
            Effect::Persist(Mutation::PutLease(r)) => {
                grants += 1;
                let matching = all
                    .iter()
                    .filter(|a| {
                        a.kind == AuditKind::Granted
                            && a.lease == Some(r.lease)
                            && a.token == Some(r.token)
                            && a.owner.as_ref() == Some(&r.owner)
                            && a.resource == r.resource
                    })
                    .count();
                if matching != 1 {
                    return Err(format!(
                        "grant of lease {} has {matching} audit records: {fx:?}",
                        r.lease
                    ));
                }
            }
            Effect::Ended {
                lease,
                resource,
                owner,
                token,
                cause,
            } => {
                ends += 1;
                let matching: Vec<usize> = fx[..i]
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| {
                        matches!(p, Effect::Persist(Mutation::AppendAudit(a))
                            if a.kind == AuditKind::Ended { cause: cause.clone() }
                                && a.lease == Some(*lease)
                                && a.token == Some(*token)
                                && a.owner.as_ref() == Some(owner)
                                && &a.resource == resource)
                    })
                    .map(|(j, _)| j)
                    .collect();
                if matching.len() != 1 {
                    return Err(format!(
                        "end of lease {lease} has {} audit records before it: {fx:?}",
                        matching.len()
                    ));
                }
                if fx.iter().skip(i + 1).any(|p| {
                    matches!(p, Effect::Persist(Mutation::AppendAudit(a))
                        if matches!(a.kind, AuditKind::Ended { .. }) && a.lease == Some(*lease))
                }) {
                    return Err(format!("lease {lease} audited as ended twice: {fx:?}"));
                }
            }
            _ => {}
        }
    }
    if granted_records != grants {
        return Err(format!(
            "{granted_records} Granted audit records for {grants} grants: {fx:?}"
        ));
    }
    if ended_records != ends {
        return Err(format!(
            "{ended_records} Ended audit records for {ends} ends: {fx:?}"
        ));
    }
    Ok(())
}

/// [`check_audit`], panicking on failure (for focused tests).
pub fn assert_audited(fx: &Effects) {
    if let Err(e) = check_audit(fx) {
        panic!("{e}");
    }
}
