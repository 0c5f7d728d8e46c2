//! The binary form of an audit record, version 1. Every grant and every end appends one, so
//! both the write-ahead log and the apply thread encode one per change; JSON cost several times
//! the bytes and the CPU. Integers are little-endian; a text is a `u32` length + UTF-8.
//!
//! ```text
//! u8 version = 1
//! u64 seq, u64 at_ms
//! u8 kind: 0 granted, 1 ended, 2 hold_placed, 3 hold_acked, 4 hold_lifted, 5 hold_expired,
//!          6 broke, 7 domain
//!   ended: u8 cause: 0 released, 1 expired, 2 node_rebooted (text new_boot_id),
//!          3 process_died (text reported_by), 4 broken (text by, text reason), 5 unknown
//!   domain: text kind, text detail (compact JSON; `null` when none)
//! u8 present: bit 0 lease, 1 token, 2 owner, 3 hold, 4 operator, 5 reason, 6 owner.pid_ns,
//!            7 principal
//! text resource
//! then, each only when present: u64 lease, u64 token,
//!   owner (u32 pid, u64 start_time, text node, text boot_id, text user, text purpose,
//!          then text pid_ns if bit 6),
//!   u64 hold, text operator, text reason, principal (text token id, text name)
//!
//! Bit 6 came with the PID namespace in an owner (issue 15); records written before have it
//! clear and read as owners that recorded none. Bit 7 came with authentication (issue 17):
//! records written before read as caused by nobody authenticated. (A server older than that
//! refuses a record with bit 7 set as unreadable: downgrading past it needs the log trimmed.)
//! ```
//!
//! A domain event's detail is the one JSON left in the form: a domain defines it, and it is
//! small and rare next to the lock table's records.

use locksmith_core::{
    AuditKind, AuditPrincipal, AuditRecord, DomainEvent, EndCause, FenceToken, HoldId, LeaseId,
    Owner,
};

use super::{Reader, Writer};
use crate::StoreError;

/// The version byte.
pub(super) const AUDIT_V1: u8 = 1;

/// The kind byte of a domain event.
const DOMAIN: u8 = 7;

const LEASE: u8 = 1;
const TOKEN: u8 = 1 << 1;
const OWNER: u8 = 1 << 2;
const HOLD: u8 = 1 << 3;
const OPERATOR: u8 = 1 << 4;
const REASON: u8 = 1 << 5;
const OWNER_PID_NS: u8 = 1 << 6;
const PRINCIPAL: u8 = 1 << 7;

/// Appends `record` in the binary form to `out`.
pub(crate) fn encode_audit_into(record: &AuditRecord, out: &mut Vec<u8>) -> Result<(), StoreError> {
    let mut w = Writer::new(out, || format!("audit record {}", record.seq));
    w.u8(AUDIT_V1);
    w.u64(record.seq);
    w.u64(record.at_ms);
    match &record.kind {
        AuditKind::Granted => w.u8(0),
        AuditKind::Ended { cause } => {
            w.u8(1);
            match cause {
                EndCause::Released => w.u8(0),
                EndCause::Expired => w.u8(1),
                EndCause::NodeRebooted { new_boot_id } => {
                    w.u8(2);
                    w.text(new_boot_id)?;
                }
                EndCause::ProcessDied { reported_by } => {
                    w.u8(3);
                    w.text(reported_by)?;
                }
                EndCause::Broken { by, reason } => {
                    w.u8(4);
                    w.text(by)?;
                    w.text(reason)?;
                }
                EndCause::Unknown => w.u8(5),
            }
        }
        AuditKind::HoldPlaced => w.u8(2),
        AuditKind::HoldAcked => w.u8(3),
        AuditKind::HoldLifted => w.u8(4),
        AuditKind::HoldExpired => w.u8(5),
        AuditKind::Broke => w.u8(6),
        AuditKind::Domain(event) => {
            w.u8(DOMAIN);
            w.text(&event.kind)?;
            let detail = serde_json::to_string(&event.detail).map_err(|e| {
                StoreError::Io(format!(
                    "cannot encode audit record {}: its detail: {e}",
                    record.seq
                ))
            })?;
            w.text(&detail)?;
        }
    }
    let present = [
        (record.lease.is_some(), LEASE),
        (record.token.is_some(), TOKEN),
        (record.owner.is_some(), OWNER),
        (record.hold.is_some(), HOLD),
        (record.operator.is_some(), OPERATOR),
        (record.reason.is_some(), REASON),
        (
            record.owner.as_ref().is_some_and(|o| o.pid_ns.is_some()),
            OWNER_PID_NS,
        ),
        (record.principal.is_some(), PRINCIPAL),
    ]
    .iter()
    .filter(|(set, _)| *set)
    .fold(0, |bits, (_, bit)| bits | bit);
    w.u8(present);
    w.text(&record.resource)?;
    if let Some(lease) = record.lease {
        w.u64(lease.0);
    }
    if let Some(token) = record.token {
        w.u64(token.0);
    }
    if let Some(owner) = &record.owner {
        w.u32(owner.pid);
        w.u64(owner.start_time);
        for text in [&owner.node, &owner.boot_id, &owner.user, &owner.purpose] {
            w.text(text)?;
        }
        if let Some(pid_ns) = &owner.pid_ns {
            w.text(pid_ns)?;
        }
    }
    if let Some(hold) = record.hold {
        w.u64(hold.0);
    }
    if let Some(operator) = &record.operator {
        w.text(operator)?;
    }
    if let Some(reason) = &record.reason {
        w.text(reason)?;
    }
    if let Some(principal) = &record.principal {
        w.text(&principal.token)?;
        w.text(&principal.name)?;
    }
    Ok(())
}

/// The resource a binary record (after its version byte) names, read without building the
/// rest: what trimming the log needs to find a record's index entry.
pub(super) fn audit_resource_v1(bytes: &[u8]) -> Option<String> {
    let mut r = Reader(bytes);
    r.u64()?;
    r.u64()?;
    audit_resource_after_times(&mut r).map(str::to_owned)
}

/// Reads past the kind to the resource; `r` stands after `seq` and `at_ms`.
pub(super) fn audit_resource_after_times<'a>(r: &mut Reader<'a>) -> Option<&'a str> {
    let texts = match r.u8()? {
        1 => match r.u8()? {
            2 | 3 => 1,
            4 => 2,
            _ => 0,
        },
        DOMAIN => 2,
        _ => 0,
    };
    for _ in 0..texts {
        r.bytes()?;
    }
    r.u8()?;
    std::str::from_utf8(r.bytes()?).ok()
}

/// Reads a binary record (after its version byte); `None` if it is truncated, has bytes left
/// over, holds a text that is not UTF-8, or names a kind this version does not know.
pub(super) fn decode_audit_v1(bytes: &[u8]) -> Option<AuditRecord> {
    let mut r = Reader(bytes);
    let (seq, at_ms) = (r.u64()?, r.u64()?);
    let kind = match r.u8()? {
        0 => AuditKind::Granted,
        1 => AuditKind::Ended {
            cause: match r.u8()? {
                0 => EndCause::Released,
                1 => EndCause::Expired,
                2 => EndCause::NodeRebooted {
                    new_boot_id: r.text()?,
                },
                3 => EndCause::ProcessDied {
                    reported_by: r.text()?,
                },
                4 => EndCause::Broken {
                    by: r.text()?,
                    reason: r.text()?,
                },
                5 => EndCause::Unknown,
                _ => return None,
            },
        },
        2 => AuditKind::HoldPlaced,
        3 => AuditKind::HoldAcked,
        4 => AuditKind::HoldLifted,
        5 => AuditKind::HoldExpired,
        6 => AuditKind::Broke,
        DOMAIN => AuditKind::Domain(DomainEvent {
            kind: r.text()?,
            detail: serde_json::from_str(r.str()?).ok()?,
        }),
        _ => return None,
    };
    let present = r.u8()?;
    // Every bit of `present` has a meaning now (bit 7: the principal), so none is unknown.
    let resource = r.text()?;
    let has = |bit: u8| present & bit != 0;
    let lease = if has(LEASE) {
        Some(LeaseId(r.u64()?))
    } else {
        None
    };
    let token = if has(TOKEN) {
        Some(FenceToken(r.u64()?))
    } else {
        None
    };
    let owner = if has(OWNER) {
        let (pid, start_time) = (r.u32()?, r.u64()?);
        Some(Owner {
            node: r.text()?,
            pid,
            start_time,
            boot_id: r.text()?,
            user: r.text()?,
            purpose: r.text()?,
            pid_ns: if has(OWNER_PID_NS) {
                Some(r.text()?)
            } else {
                None
            },
        })
    } else {
        None
    };
    let hold = if has(HOLD) {
        Some(HoldId(r.u64()?))
    } else {
        None
    };
    let operator = if has(OPERATOR) { Some(r.text()?) } else { None };
    let reason = if has(REASON) { Some(r.text()?) } else { None };
    let principal = if has(PRINCIPAL) {
        Some(AuditPrincipal {
            token: r.text()?,
            name: r.text()?,
        })
    } else {
        None
    };
    let record = AuditRecord {
        seq,
        at_ms,
        resource,
        kind,
        lease,
        token,
        owner,
        hold,
        operator,
        reason,
        principal,
    };
    r.0.is_empty().then_some(record)
}
