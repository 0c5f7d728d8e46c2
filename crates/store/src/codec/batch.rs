//! The binary form of a batch of mutations: the payload of one write-ahead-log frame.
//!
//! Every durable request appends one, on the commit thread, between two fsyncs: whatever it
//! costs delays every request in the next group. JSON cost ≈ 550 bytes per mutation and was
//! the commit thread's largest CPU item after the fsync itself; this form is about a third of
//! the bytes, written without a serializer. Integers little-endian:
//!
//! ```text
//! u8 version = 1, u32 count
//! count × (u8 tag, then by tag:
//!   1 PutLease:       u32 length + the binary lease (`super::encode_lease`)
//!   2 DeleteLease:    u64 lease
//!   3 PutHold:        u32 length + the hold as JSON (rare; an operator's act)
//!   4 DeleteHold:     u64 hold
//!   5 AppendAudit:    u32 length + the binary audit record (`super::audit`)
//!   6 FenceHighWater: u64
//!   7 PutRecord:      text space, text key, u32 length + the value's bytes
//!   8 DeleteRecord:   text space, text key)
//! ```
//!
//! A text is a `u32` length + UTF-8. A record's value is carried as it is: the store never
//! decodes it, and the apply thread writes those very bytes into its table.

use locksmith_core::{HoldId, HoldRecord, LeaseId, Mutation};

use super::audit::{AUDIT_V1, audit_resource_after_times, encode_audit_into};
use super::{LEASE_V1, LEASE_V2, Reader, Writer, decode_audit, decode_lease, encode_lease_into};
use crate::StoreError;

const BATCH_V1: u8 = 1;

const PUT_LEASE: u8 = 1;
const DELETE_LEASE: u8 = 2;
const PUT_HOLD: u8 = 3;
const DELETE_HOLD: u8 = 4;
const APPEND_AUDIT: u8 = 5;
const FENCE_HIGH_WATER: u8 = 6;
const PUT_RECORD: u8 = 7;
const DELETE_RECORD: u8 = 8;

/// Encodes `batch` in the binary form into `out` (cleared first, its capacity reused).
pub fn encode_batch_into(batch: &[Mutation], out: &mut Vec<u8>) -> Result<(), StoreError> {
    out.clear();
    let mut w = Writer::new(out, || "a batch".to_owned());
    w.u8(BATCH_V1);
    w.len(batch.len())?;
    for mutation in batch {
        match mutation {
            Mutation::PutLease(record) => {
                w.u8(PUT_LEASE);
                w.nested(|out| encode_lease_into(record, out))?;
            }
            Mutation::DeleteLease(lease) => {
                w.u8(DELETE_LEASE);
                w.u64(lease.0);
            }
            Mutation::PutHold(record) => {
                w.u8(PUT_HOLD);
                w.nested(|out| {
                    serde_json::to_writer(out, record).map_err(|e| {
                        StoreError::Io(format!("cannot encode hold {}: {e}", record.hold))
                    })
                })?;
            }
            Mutation::DeleteHold(hold) => {
                w.u8(DELETE_HOLD);
                w.u64(hold.0);
            }
            Mutation::AppendAudit(record) => {
                w.u8(APPEND_AUDIT);
                w.nested(|out| encode_audit_into(record, out))?;
            }
            Mutation::FenceHighWater(n) => {
                w.u8(FENCE_HIGH_WATER);
                w.u64(*n);
            }
            Mutation::PutRecord { space, key, value } => {
                w.u8(PUT_RECORD);
                w.text(space)?;
                w.text(key)?;
                w.len(value.len())?;
                w.out.extend_from_slice(value);
            }
            Mutation::DeleteRecord { space, key } => {
                w.u8(DELETE_RECORD);
                w.text(space)?;
                w.text(key)?;
            }
        }
    }
    Ok(())
}

/// Decodes a batch in the binary form. `Err(Corrupt)` names what is wrong; the caller adds
/// where.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Mutation>, StoreError> {
    match bytes.first() {
        Some(&BATCH_V1) => decode_v1(&bytes[1..]),
        Some(other) => Err(StoreError::Corrupt(format!(
            "a batch of unknown format {other} (not a binary batch)"
        ))),
        None => Err(StoreError::Corrupt("an empty batch".to_owned())),
    }
}

fn decode_v1(bytes: &[u8]) -> Result<Vec<Mutation>, StoreError> {
    let truncated = || StoreError::Corrupt("a truncated batch".to_owned());
    let mut r = Reader(bytes);
    let count = usize::try_from(r.u32().ok_or_else(truncated)?).map_err(|_| truncated())?;
    // Every mutation takes at least 9 bytes: a damaged count cannot make this allocate much.
    let mut batch = Vec::with_capacity(count.min(bytes.len() / 9));
    for _ in 0..count {
        let tag = r.u8().ok_or_else(truncated)?;
        let mutation = match tag {
            PUT_LEASE => {
                let bytes = r.bytes().ok_or_else(truncated)?;
                let (id, _) = lease_head(bytes).ok_or_else(not_binary)?;
                Mutation::PutLease(decode_lease(id, bytes)?)
            }
            DELETE_LEASE => Mutation::DeleteLease(LeaseId(r.u64().ok_or_else(truncated)?)),
            PUT_HOLD => {
                let bytes = r.bytes().ok_or_else(truncated)?;
                let record: HoldRecord = serde_json::from_slice(bytes)
                    .map_err(|e| StoreError::Corrupt(format!("a hold in a batch: {e}")))?;
                Mutation::PutHold(record)
            }
            DELETE_HOLD => Mutation::DeleteHold(HoldId(r.u64().ok_or_else(truncated)?)),
            APPEND_AUDIT => {
                let bytes = r.bytes().ok_or_else(truncated)?;
                let (seq, _, _) = audit_head(bytes).ok_or_else(not_binary)?;
                Mutation::AppendAudit(decode_audit(seq, bytes)?)
            }
            FENCE_HIGH_WATER => Mutation::FenceHighWater(r.u64().ok_or_else(truncated)?),
            PUT_RECORD => Mutation::PutRecord {
                space: r.text().ok_or_else(truncated)?,
                key: r.text().ok_or_else(truncated)?,
                value: r.bytes().ok_or_else(truncated)?.to_vec(),
            },
            DELETE_RECORD => Mutation::DeleteRecord {
                space: r.text().ok_or_else(truncated)?,
                key: r.text().ok_or_else(truncated)?,
            },
            other => {
                return Err(StoreError::Corrupt(format!(
                    "a batch with an unknown mutation {other}"
                )));
            }
        };
        batch.push(mutation);
    }
    if !r.0.is_empty() {
        return Err(StoreError::Corrupt(
            "a batch with bytes after its last mutation".to_owned(),
        ));
    }
    Ok(batch)
}

/// One mutation of a binary batch, not decoded: the stored form of a lease, hold or audit record
/// is exactly the bytes the batch carries for it, so the apply thread writes those as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawMutation<'a> {
    /// A binary lease; `fence` is the larger of its id and token.
    PutLease {
        id: u64,
        fence: u64,
        bytes: &'a [u8],
    },
    DeleteLease(u64),
    /// A hold as JSON.
    PutHold {
        id: u64,
        bytes: &'a [u8],
    },
    DeleteHold(u64),
    /// A binary audit record and the fields its index entries need.
    AppendAudit {
        seq: u64,
        at_ms: u64,
        resource: &'a str,
        bytes: &'a [u8],
    },
    FenceHighWater(u64),
    /// A domain's record, its value as the batch carries it.
    PutRecord {
        space: &'a str,
        key: &'a str,
        value: &'a [u8],
    },
    DeleteRecord {
        space: &'a str,
        key: &'a str,
    },
}

/// The mutations of a batch in the binary form, borrowed from it. Checks what the stored
/// records' keys and index entries are taken from.
pub(crate) fn raw_mutations(payload: &[u8]) -> Result<Vec<RawMutation<'_>>, StoreError> {
    let truncated = || StoreError::Corrupt("a truncated batch".to_owned());
    let Some((&BATCH_V1, rest)) = payload.split_first() else {
        return Err(StoreError::Corrupt(
            "not a batch in the binary form".to_owned(),
        ));
    };
    let mut r = Reader(rest);
    let count = usize::try_from(r.u32().ok_or_else(truncated)?).map_err(|_| truncated())?;
    let mut raw = Vec::with_capacity(count.min(rest.len() / 9));
    for _ in 0..count {
        let mutation = match r.u8().ok_or_else(truncated)? {
            PUT_LEASE => {
                let bytes = r.bytes().ok_or_else(truncated)?;
                let (id, token) = lease_head(bytes).ok_or_else(not_binary)?;
                RawMutation::PutLease {
                    id,
                    fence: id.max(token),
                    bytes,
                }
            }
            DELETE_LEASE => RawMutation::DeleteLease(r.u64().ok_or_else(truncated)?),
            PUT_HOLD => {
                let bytes = r.bytes().ok_or_else(truncated)?;
                let record: HoldRecord = serde_json::from_slice(bytes)
                    .map_err(|e| StoreError::Corrupt(format!("a hold in a batch: {e}")))?;
                RawMutation::PutHold {
                    id: record.hold.0,
                    bytes,
                }
            }
            DELETE_HOLD => RawMutation::DeleteHold(r.u64().ok_or_else(truncated)?),
            APPEND_AUDIT => {
                let bytes = r.bytes().ok_or_else(truncated)?;
                let (seq, at_ms, resource) = audit_head(bytes).ok_or_else(not_binary)?;
                RawMutation::AppendAudit {
                    seq,
                    at_ms,
                    resource,
                    bytes,
                }
            }
            FENCE_HIGH_WATER => RawMutation::FenceHighWater(r.u64().ok_or_else(truncated)?),
            PUT_RECORD => RawMutation::PutRecord {
                space: r.str().ok_or_else(truncated)?,
                key: r.str().ok_or_else(truncated)?,
                value: r.bytes().ok_or_else(truncated)?,
            },
            DELETE_RECORD => RawMutation::DeleteRecord {
                space: r.str().ok_or_else(truncated)?,
                key: r.str().ok_or_else(truncated)?,
            },
            other => {
                return Err(StoreError::Corrupt(format!(
                    "a batch with an unknown mutation {other}"
                )));
            }
        };
        raw.push(mutation);
    }
    if !r.0.is_empty() {
        return Err(StoreError::Corrupt(
            "a batch with bytes after its last mutation".to_owned(),
        ));
    }
    Ok(raw)
}

/// A binary lease's id and token.
fn lease_head(bytes: &[u8]) -> Option<(u64, u64)> {
    let (&(LEASE_V1 | LEASE_V2), rest) = bytes.split_first()? else {
        return None;
    };
    let mut r = Reader(rest);
    Some((r.u64()?, r.u64()?))
}

/// A binary audit record's seq, time and resource.
fn audit_head(bytes: &[u8]) -> Option<(u64, u64, &str)> {
    let (&AUDIT_V1, rest) = bytes.split_first()? else {
        return None;
    };
    let mut r = Reader(rest);
    let (seq, at_ms) = (r.u64()?, r.u64()?);
    let resource = audit_resource_after_times(&mut r)?;
    Some((seq, at_ms, resource))
}

fn not_binary() -> StoreError {
    StoreError::Corrupt("a record in a batch is truncated or not in the binary form".to_owned())
}

#[cfg(test)]
mod tests {
    use locksmith_core::{
        AuditKind, AuditRecord, DomainEvent, EndCause, FenceToken, HoldId, HoldRecord, LeaseId,
        LeaseRecord, Mutation, Owner,
    };
    use proptest::prelude::*;

    use super::{RawMutation, decode_batch, encode_batch_into, raw_mutations};
    use crate::StoreError;
    use crate::codec::{
        decode_audit, decode_audit_resource, decode_hold, decode_lease, encode_audit,
    };

    fn text() -> impl Strategy<Value = String> {
        // Empty, ASCII, and multi-byte UTF-8 (lengths are bytes, not chars).
        prop_oneof![Just(String::new()), "[a-z/._-]{1,24}", "\\PC{0,12}"]
    }

    fn owner() -> impl Strategy<Value = Owner> {
        // A namespace, when recorded, is never empty (`Owner::validate`): the lease form writes
        // an empty text for none.
        let pid_ns = proptest::option::of("pid:\\[[0-9]{1,10}\\]|\\PC{1,12}");
        (
            (text(), any::<u32>(), any::<u64>(), text()),
            (text(), text(), pid_ns),
        )
            .prop_map(
                |((node, pid, start_time, boot_id), (user, purpose, pid_ns))| Owner {
                    node,
                    pid,
                    start_time,
                    boot_id,
                    user,
                    purpose,
                    pid_ns,
                },
            )
    }

    fn cause() -> impl Strategy<Value = EndCause> {
        prop_oneof![
            Just(EndCause::Released),
            Just(EndCause::Expired),
            text().prop_map(|new_boot_id| EndCause::NodeRebooted { new_boot_id }),
            text().prop_map(|reported_by| EndCause::ProcessDied { reported_by }),
            (text(), text()).prop_map(|(by, reason)| EndCause::Broken { by, reason }),
            Just(EndCause::Unknown),
        ]
    }

    fn kind() -> impl Strategy<Value = AuditKind> {
        prop_oneof![
            Just(AuditKind::Granted),
            cause().prop_map(|cause| AuditKind::Ended { cause }),
            Just(AuditKind::HoldPlaced),
            Just(AuditKind::HoldAcked),
            Just(AuditKind::HoldLifted),
            Just(AuditKind::HoldExpired),
            Just(AuditKind::Broke),
            (
                "[a-z][a-z0-9_]{0,20}",
                prop_oneof![
                    Just(serde_json::Value::Null),
                    (text(), any::<u64>())
                        .prop_map(|(s, n)| serde_json::json!({"text": s, "n": n})),
                ],
            )
                .prop_map(|(kind, detail)| AuditKind::Domain(DomainEvent { kind, detail })),
        ]
    }

    prop_compose! {
        fn audit()(
            seq in any::<u64>(),
            at_ms in any::<u64>(),
            resource in text(),
            kind in kind(),
            lease in proptest::option::of(any::<u64>()),
            token in proptest::option::of(any::<u64>()),
            owner in proptest::option::of(owner()),
            hold in proptest::option::of(any::<u64>()),
            operator in proptest::option::of(text()),
            reason in proptest::option::of(text()),
            principal in proptest::option::of((text(), text())),
        ) -> AuditRecord {
            AuditRecord {
                seq,
                at_ms,
                resource,
                kind,
                lease: lease.map(LeaseId),
                token: token.map(FenceToken),
                owner,
                hold: hold.map(HoldId),
                operator,
                reason,
                principal: principal.map(|(token, name)| locksmith_core::AuditPrincipal { token, name }),
            }
        }
    }

    prop_compose! {
        fn lease()(
            lease in any::<u64>(),
            resource in text(),
            owner in owner(),
            token in any::<u64>(),
            ttl_ms in any::<u64>(),
            slots in any::<u32>(),
            granted_at_ms in any::<u64>(),
            lock_delay_ms in any::<u64>(),
        ) -> LeaseRecord {
            LeaseRecord {
                lease: LeaseId(lease),
                resource,
                owner,
                token: FenceToken(token),
                ttl_ms,
                slots,
                granted_at_ms,
                lock_delay_ms,
            }
        }
    }

    prop_compose! {
        fn hold()(
            hold in any::<u64>(),
            resource in text(),
            reason in text(),
            by in text(),
            placed_at_ms in any::<u64>(),
            duration_ms in any::<u64>(),
            require_ack in any::<bool>(),
            acked_by in proptest::option::of(text()),
            active_since_ms in proptest::option::of(any::<u64>()),
        ) -> HoldRecord {
            HoldRecord {
                hold: HoldId(hold),
                resource,
                reason,
                by,
                placed_at_ms,
                duration_ms,
                require_ack,
                acked_by,
                active_since_ms,
            }
        }
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            lease().prop_map(Mutation::PutLease),
            any::<u64>().prop_map(|id| Mutation::DeleteLease(LeaseId(id))),
            hold().prop_map(Mutation::PutHold),
            any::<u64>().prop_map(|id| Mutation::DeleteHold(HoldId(id))),
            audit().prop_map(Mutation::AppendAudit),
            any::<u64>().prop_map(Mutation::FenceHighWater),
            (
                "[a-z][a-z0-9_]{0,31}",
                text(),
                proptest::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(space, key, value)| Mutation::PutRecord {
                    space,
                    key,
                    value
                }),
            ("[a-z][a-z0-9_]{0,31}", text())
                .prop_map(|(space, key)| Mutation::DeleteRecord { space, key }),
        ]
    }

    fn encoded(batch: &[Mutation]) -> Result<Vec<u8>, StoreError> {
        let mut out = vec![0xAA; 3]; // cleared first: leftovers must not leak into the frame
        encode_batch_into(batch, &mut out)?;
        Ok(out)
    }

    proptest! {
        #[test]
        fn every_audit_record_round_trips(record in audit()) {
            let bytes = encode_audit(&record).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back = decode_audit(record.seq, &bytes)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, record);
        }

        #[test]
        fn every_batch_round_trips(batch in proptest::collection::vec(mutation(), 0..12)) {
            let bytes = encoded(&batch).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back = decode_batch(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, batch);
        }

        /// The apply thread stores the bytes a batch carries as they are: they must decode to
        /// exactly the logged records, under the keys and index fields read from their heads.
        #[test]
        fn raw_mutations_carry_exactly_the_stored_records(
            batch in proptest::collection::vec(mutation(), 0..12),
        ) {
            let bytes = encoded(&batch).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let raw = raw_mutations(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(raw.len(), batch.len());
            for (raw, mutation) in raw.into_iter().zip(&batch) {
                let fail = |e: StoreError| TestCaseError::fail(e.to_string());
                match (raw, mutation) {
                    (RawMutation::PutLease { id, fence, bytes }, Mutation::PutLease(record)) => {
                        prop_assert_eq!(id, record.lease.0);
                        prop_assert_eq!(fence, record.lease.0.max(record.token.0));
                        prop_assert_eq!(&decode_lease(id, bytes).map_err(fail)?, record);
                    }
                    (RawMutation::PutHold { id, bytes }, Mutation::PutHold(record)) => {
                        prop_assert_eq!(id, record.hold.0);
                        prop_assert_eq!(&decode_hold(id, bytes).map_err(fail)?, record);
                    }
                    (
                        RawMutation::AppendAudit { seq, at_ms, resource, bytes },
                        Mutation::AppendAudit(record),
                    ) => {
                        prop_assert_eq!(seq, record.seq);
                        prop_assert_eq!(at_ms, record.at_ms);
                        prop_assert_eq!(resource, record.resource.as_str());
                        prop_assert_eq!(&decode_audit(seq, bytes).map_err(fail)?, record);
                        prop_assert_eq!(
                            decode_audit_resource(seq, bytes).map_err(fail)?,
                            record.resource.clone()
                        );
                    }
                    (RawMutation::DeleteLease(id), Mutation::DeleteLease(want)) => {
                        prop_assert_eq!(id, want.0);
                    }
                    (RawMutation::DeleteHold(id), Mutation::DeleteHold(want)) => {
                        prop_assert_eq!(id, want.0);
                    }
                    (RawMutation::FenceHighWater(n), Mutation::FenceHighWater(want)) => {
                        prop_assert_eq!(n, *want);
                    }
                    (
                        RawMutation::PutRecord { space, key, value },
                        Mutation::PutRecord { space: s, key: k, value: v },
                    ) => {
                        prop_assert_eq!((space, key, value), (s.as_str(), k.as_str(), v.as_slice()));
                    }
                    (
                        RawMutation::DeleteRecord { space, key },
                        Mutation::DeleteRecord { space: s, key: k },
                    ) => {
                        prop_assert_eq!((space, key), (s.as_str(), k.as_str()));
                    }
                    (raw, mutation) => {
                        return Err(TestCaseError::fail(format!("{raw:?} for {mutation:?}")));
                    }
                }
            }
        }

        /// A frame cut short (a crash mid-append the checksum did not catch, or damage) is
        /// refused as corrupt at every length, never read as a shorter batch and never a panic.
        #[test]
        fn a_truncated_batch_is_corrupt_at_every_length(
            batch in proptest::collection::vec(mutation(), 1..6),
        ) {
            let bytes = encoded(&batch).map_err(|e| TestCaseError::fail(e.to_string()))?;
            for len in 0..bytes.len() {
                prop_assert!(
                    matches!(decode_batch(&bytes[..len]), Err(StoreError::Corrupt(_))),
                    "a batch cut to {} of {} bytes was accepted", len, bytes.len()
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert!(matches!(decode_batch(&longer), Err(StoreError::Corrupt(_))));
        }
    }

    fn sample() -> Vec<Mutation> {
        let owner = Owner {
            node: "node-1".to_owned(),
            pid: 4121,
            start_time: 99,
            boot_id: "b00t".to_owned(),
            user: "svc".to_owned(),
            purpose: "deploy".to_owned(),
            pid_ns: None,
        };
        let mut granted = AuditRecord::new("fleet/a.conf", AuditKind::Granted);
        granted.seq = 5;
        granted.at_ms = 1_700_000_000_000;
        granted.lease = Some(LeaseId(7));
        granted.token = Some(FenceToken(7));
        granted.owner = Some(owner.clone());
        vec![
            Mutation::FenceHighWater(7),
            Mutation::PutLease(LeaseRecord {
                lease: LeaseId(7),
                resource: "fleet/a.conf".to_owned(),
                owner,
                token: FenceToken(7),
                ttl_ms: 15_000,
                slots: 1,
                granted_at_ms: 1_700_000_000_000,
                lock_delay_ms: 0,
            }),
            Mutation::AppendAudit(granted),
            Mutation::DeleteLease(LeaseId(3)),
        ]
    }

    /// 0.1.0 is unreleased, so no log holds the JSON batches the binary form replaced: a
    /// frame that is not a binary batch is damage, never replayed as an older format.
    #[test]
    fn a_json_batch_is_corrupt() -> Result<(), StoreError> {
        let json = br#"[{"FenceHighWater":7},{"DeleteLease":3}]"#;
        assert!(matches!(decode_batch(json), Err(StoreError::Corrupt(_))));
        assert!(matches!(raw_mutations(json), Err(StoreError::Corrupt(_))));
        Ok(())
    }

    #[test]
    fn unknown_formats_tags_and_kinds_are_corrupt_not_guessed() -> Result<(), StoreError> {
        let bytes = encoded(&sample())?;
        let mut newer = bytes.clone();
        newer[0] = 2;
        let mut unknown_tag = bytes.clone();
        unknown_tag[5] = 9; // the first mutation's tag, one past the last known
        for damaged in [&newer[..], &unknown_tag[..], &[][..]] {
            assert!(
                matches!(decode_batch(damaged), Err(StoreError::Corrupt(_))),
                "{damaged:?}"
            );
        }
        let Some(Mutation::AppendAudit(record)) = sample().into_iter().nth(2) else {
            return Err(StoreError::Io("the sample has no audit record".to_owned()));
        };
        let audit = encode_audit(&record)?;
        let mut unknown_kind = audit.clone();
        unknown_kind[17] = 7; // after version, seq, at_ms
        let mut unknown_bit = audit.clone();
        unknown_bit[18] |= 1 << 7;
        for damaged in [&unknown_kind[..], &unknown_bit[..]] {
            assert!(matches!(
                decode_audit(record.seq, damaged),
                Err(StoreError::Corrupt(_))
            ));
        }
        assert!(matches!(
            decode_audit(record.seq + 1, &audit),
            Err(StoreError::Corrupt(_))
        ));
        Ok(())
    }
}
