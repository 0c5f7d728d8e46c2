//! How records are encoded in a store, shared by every backend so they agree byte for byte. On
//! decode the key a record is stored under must match the id it names (a mismatch is corruption,
//! not a record to trust).
//!
//! The embedded store keeps leases and audit records in a compact binary form
//! ([`encode_lease`], [`encode_audit`]): a server holding a million leases decodes them all at
//! boot (JSON took 1.5–1.9 s of it), and every grant and end appends an audit record. Its
//! write-ahead log holds whole batches in a binary form ([`encode_batch_into`],
//! [`decode_batch`]; see `batch`). A binary form starts with a version byte; anything else —
//! JSON included — is [`StoreError::Corrupt`], never guessed at.
//!
//! Holds are JSON everywhere (rare: an operator's act). The etcd backend keeps leases and audit
//! records as JSON too, readable with `etcdctl` ([`encode`], [`decode_lease_json`],
//! [`decode_audit_json`]). A domain's records ([`Mutation::PutRecord`]) are opaque bytes in
//! every backend: the store never decodes them.
//!
//! [`Mutation::PutRecord`]: locksmith_core::Mutation::PutRecord
//!
//! Binary lease, version 2, integers little-endian:
//!
//! ```text
//! u8 version = 2
//! u64 lease, u64 token, u64 ttl_ms, u32 slots, u64 granted_at_ms, u64 lock_delay_ms,
//! u32 owner.pid, u64 owner.start_time,
//! then resource, owner.node, owner.boot_id, owner.user, owner.purpose, owner.pid_ns (empty when
//! the owner recorded none): each u32 length + UTF-8
//! ```
//!
//! Version 1 is the same without `owner.pid_ns`; it is still read (as an owner that recorded no
//! PID namespace).

mod audit;
mod batch;

use locksmith_core::{
    AuditRecord, FenceToken, HoldRecord, LeaseChunk, LeaseId, LeaseRecord, LeaseRef, OwnerRef,
};

use crate::StoreError;

pub(crate) use batch::{RawMutation, raw_mutations};
pub use batch::{decode_batch, encode_batch_into};

/// Encodes a record; `what` names it in the error.
pub fn encode<T: serde::Serialize>(
    record: &T,
    what: impl FnOnce() -> String,
) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record).map_err(|e| StoreError::Io(format!("cannot encode {}: {e}", what())))
}

/// The version bytes of the binary lease forms (see the module docs): `LEASE_V2` is written,
/// both are read.
const LEASE_V1: u8 = 1;
const LEASE_V2: u8 = 2;

/// Encodes a lease in the binary form (see the module docs).
pub fn encode_lease(record: &LeaseRecord) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(
        61 + 4 * 6
            + record.resource.len()
            + record.owner.node.len()
            + record.owner.boot_id.len()
            + record.owner.user.len()
            + record.owner.purpose.len()
            + record.owner.pid_ns.as_ref().map_or(0, String::len),
    );
    encode_lease_into(record, &mut out)?;
    Ok(out)
}

/// Appends a lease in the binary form to `out`.
fn encode_lease_into(record: &LeaseRecord, out: &mut Vec<u8>) -> Result<(), StoreError> {
    let owner = &record.owner;
    let mut w = Writer::new(out, || format!("lease {}", record.lease));
    w.u8(LEASE_V2);
    for n in [record.lease.0, record.token.0, record.ttl_ms] {
        w.u64(n);
    }
    w.u32(record.slots);
    for n in [record.granted_at_ms, record.lock_delay_ms] {
        w.u64(n);
    }
    w.u32(owner.pid);
    w.u64(owner.start_time);
    for text in [
        record.resource.as_str(),
        &owner.node,
        &owner.boot_id,
        &owner.user,
        &owner.purpose,
        owner.pid_ns.as_deref().unwrap_or_default(),
    ] {
        w.text(text)?;
    }
    Ok(())
}

/// Encodes an audit record in the binary form (see `audit`).
pub fn encode_audit(record: &AuditRecord) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(128);
    audit::encode_audit_into(record, &mut out)?;
    Ok(out)
}

/// Decodes a binary lease stored under `key`, checking the key matches the id it names.
pub fn decode_lease(key: u64, bytes: &[u8]) -> Result<LeaseRecord, StoreError> {
    let record = lease_binary(key, bytes)?;
    check_lease_key(key, record.lease)?;
    Ok(record.to_record())
}

/// [`decode_lease`] into `chunk`, for a load that hands leases over in chunks: the lease is
/// copied straight from `bytes`, with no allocation of its own. Returns the lease's id and
/// token.
pub fn decode_lease_into(
    key: u64,
    bytes: &[u8],
    chunk: &mut LeaseChunk,
) -> Result<(LeaseId, FenceToken), StoreError> {
    let lease = lease_binary(key, bytes)?;
    check_lease_key(key, lease.lease)?;
    chunk.push(lease);
    Ok((lease.lease, lease.token))
}

/// Decodes a lease stored under `key` as JSON (the etcd backend's form), checking the key
/// matches the id it names.
pub fn decode_lease_json(key: u64, bytes: &[u8]) -> Result<LeaseRecord, StoreError> {
    let record: LeaseRecord = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("lease {key}: {e}")))?;
    check_lease_key(key, record.lease)?;
    Ok(record)
}

/// A binary lease of either version (version byte included), borrowed from `bytes`.
fn lease_binary(key: u64, bytes: &[u8]) -> Result<LeaseRef<'_>, StoreError> {
    match bytes.split_first() {
        Some((&version @ (LEASE_V1 | LEASE_V2), rest)) => decode_lease_binary(version, rest)
            .ok_or_else(|| StoreError::Corrupt(format!("lease {key}: truncated or not UTF-8"))),
        Some((other, _)) => Err(StoreError::Corrupt(format!(
            "lease {key}: unknown format {other} (not a binary lease)"
        ))),
        None => Err(StoreError::Corrupt(format!("lease {key}: empty record"))),
    }
}

fn check_lease_key(key: u64, lease: LeaseId) -> Result<(), StoreError> {
    if lease.0 != key {
        return Err(StoreError::Corrupt(format!(
            "lease {key}: record is stored under the wrong key (it names lease {lease})"
        )));
    }
    Ok(())
}

/// Decodes a record stored under `key`, checking the key matches the id it names.
pub fn decode_hold(key: u64, bytes: &[u8]) -> Result<HoldRecord, StoreError> {
    let record: HoldRecord = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("hold {key}: {e}")))?;
    if record.hold.0 != key {
        return Err(StoreError::Corrupt(format!(
            "hold {key}: record is stored under the wrong key (it names hold {})",
            record.hold
        )));
    }
    Ok(record)
}

/// The resource of the binary audit record stored under `key`, without decoding the rest of
/// it.
pub fn decode_audit_resource(key: u64, bytes: &[u8]) -> Result<String, StoreError> {
    audit_binary(key, bytes)?;
    audit::audit_resource_v1(&bytes[1..])
        .ok_or_else(|| StoreError::Corrupt(format!("audit record {key}: truncated")))
}

/// Decodes a binary audit record stored under `key`, checking the key matches the seq it names.
pub fn decode_audit(key: u64, bytes: &[u8]) -> Result<AuditRecord, StoreError> {
    audit_binary(key, bytes)?;
    let record = audit::decode_audit_v1(&bytes[1..]).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "audit record {key}: truncated, not UTF-8, or of an unknown kind"
        ))
    })?;
    check_audit_key(key, record)
}

/// Decodes an audit record stored under `key` as JSON (the etcd backend's form), checking the
/// key matches the seq it names.
pub fn decode_audit_json(key: u64, bytes: &[u8]) -> Result<AuditRecord, StoreError> {
    let record: AuditRecord = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("audit record {key}: {e}")))?;
    check_audit_key(key, record)
}

/// Refuses anything but the binary audit form's version byte.
fn audit_binary(key: u64, bytes: &[u8]) -> Result<(), StoreError> {
    match bytes.first() {
        Some(&audit::AUDIT_V1) => Ok(()),
        Some(other) => Err(StoreError::Corrupt(format!(
            "audit record {key}: unknown format {other} (not a binary audit record)"
        ))),
        None => Err(StoreError::Corrupt(format!(
            "audit record {key}: empty record"
        ))),
    }
}

fn check_audit_key(key: u64, record: AuditRecord) -> Result<AuditRecord, StoreError> {
    if record.seq != key {
        return Err(StoreError::Corrupt(format!(
            "audit record {key}: record is stored under the wrong key (it names seq {})",
            record.seq
        )));
    }
    Ok(record)
}

/// The binary form of `version` after its version byte; `None` if it is truncated, has bytes
/// left over, or holds a text that is not UTF-8.
fn decode_lease_binary(version: u8, bytes: &[u8]) -> Option<LeaseRef<'_>> {
    let mut r = Reader(bytes);
    let (lease, token, ttl_ms) = (r.u64()?, r.u64()?, r.u64()?);
    let slots = r.u32()?;
    let (granted_at_ms, lock_delay_ms) = (r.u64()?, r.u64()?);
    let (pid, start_time) = (r.u32()?, r.u64()?);
    let record = LeaseRef {
        lease: LeaseId(lease),
        resource: r.str()?,
        owner: OwnerRef {
            node: r.str()?,
            pid,
            start_time,
            boot_id: r.str()?,
            user: r.str()?,
            purpose: r.str()?,
            pid_ns: match version {
                LEASE_V1 => None,
                _ => Some(r.str()?).filter(|ns| !ns.is_empty()),
            },
        },
        token: FenceToken(token),
        ttl_ms,
        slots,
        granted_at_ms,
        lock_delay_ms,
    };
    r.0.is_empty().then_some(record)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take().map(u8::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }

    /// A `u32` length and that many bytes.
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        let (bytes, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        Some(bytes)
    }

    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    fn text(&mut self) -> Option<String> {
        self.str().map(str::to_owned)
    }
}

/// Appends the binary forms' fields to a buffer; `what` names the record in an error.
struct Writer<'a, F: Fn() -> String> {
    out: &'a mut Vec<u8>,
    what: F,
}

impl<'a, F: Fn() -> String> Writer<'a, F> {
    fn new(out: &'a mut Vec<u8>, what: F) -> Self {
        Self { out, what }
    }

    fn u8(&mut self, n: u8) {
        self.out.push(n);
    }

    fn u32(&mut self, n: u32) {
        self.out.extend_from_slice(&n.to_le_bytes());
    }

    fn u64(&mut self, n: u64) {
        self.out.extend_from_slice(&n.to_le_bytes());
    }

    /// A length as a `u32`; over 4 GiB is an error, not a truncation.
    fn len(&mut self, len: usize) -> Result<(), StoreError> {
        let len = u32::try_from(len).map_err(|_| {
            StoreError::Io(format!(
                "cannot encode {}: a field is over 4 GiB",
                (self.what)()
            ))
        })?;
        self.u32(len);
        Ok(())
    }

    fn text(&mut self, text: &str) -> Result<(), StoreError> {
        self.len(text.len())?;
        self.out.extend_from_slice(text.as_bytes());
        Ok(())
    }

    /// Whatever `write` appends, preceded by its length as a `u32`.
    fn nested(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let at = self.out.len();
        self.u32(0);
        write(self.out)?;
        let len = self.out.len() - at - 4;
        let len = u32::try_from(len).map_err(|_| {
            StoreError::Io(format!(
                "cannot encode {}: a field is over 4 GiB",
                (self.what)()
            ))
        })?;
        self.out[at..at + 4].copy_from_slice(&len.to_le_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use locksmith_core::Owner;

    fn lease() -> LeaseRecord {
        LeaseRecord {
            lease: LeaseId(7),
            resource: "fleet/node-1/config.conf".to_owned(),
            owner: Owner {
                node: "node-1".to_owned(),
                pid: 4121,
                start_time: 99,
                boot_id: "b00t-ïd".to_owned(),
                user: "svc".to_owned(),
                purpose: "deploy".to_owned(),
                pid_ns: Some("pid:[4026531836]".to_owned()),
            },
            token: FenceToken(8),
            ttl_ms: 15_000,
            slots: 3,
            granted_at_ms: 1_700_000_000_000,
            lock_delay_ms: 500,
        }
    }

    #[test]
    fn a_binary_lease_round_trips() -> Result<(), StoreError> {
        let bytes = encode_lease(&lease())?;
        assert_eq!(bytes[0], LEASE_V2);
        assert_eq!(decode_lease(7, &bytes)?, lease());
        let mut unrecorded = lease();
        unrecorded.owner.pid_ns = None;
        assert_eq!(decode_lease(7, &encode_lease(&unrecorded)?)?, unrecorded);
        Ok(())
    }

    /// Issue 15 item 3 made the PID namespace part of an owner: a lease written in version 1,
    /// before it was, still opens, as an owner that recorded no namespace.
    #[test]
    fn a_version_1_lease_still_decodes_with_no_pid_namespace() -> Result<(), StoreError> {
        let mut unrecorded = lease();
        unrecorded.owner.pid_ns = None;
        let v2 = encode_lease(&unrecorded)?;
        // Version 1 is version 2 without the trailing (here empty) namespace text.
        let mut v1 = v2[..v2.len() - 4].to_vec();
        v1[0] = LEASE_V1;
        assert_eq!(decode_lease(7, &v1)?, unrecorded);
        let mut chunk = LeaseChunk::default();
        decode_lease_into(7, &v1, &mut chunk)?;
        assert_eq!(
            chunk.iter().map(|l| l.to_record()).collect::<Vec<_>>(),
            [unrecorded]
        );
        Ok(())
    }

    #[test]
    fn leases_decode_into_a_chunk() -> Result<(), StoreError> {
        let mut chunk = LeaseChunk::default();
        let binary = encode_lease(&lease())?;
        for _ in 0..2 {
            assert_eq!(
                decode_lease_into(7, &binary, &mut chunk)?,
                (LeaseId(7), FenceToken(8))
            );
        }
        let back: Vec<LeaseRecord> = chunk.iter().map(|l| l.to_record()).collect();
        assert_eq!(back, [lease(), lease()]);
        let json = encode(&lease(), || "lease".to_owned())?;
        for bad in [&binary[..binary.len() - 1], &[][..], &json[..]] {
            assert!(matches!(
                decode_lease_into(7, bad, &mut chunk),
                Err(StoreError::Corrupt(_))
            ));
        }
        assert!(matches!(
            decode_lease_into(6, &binary, &mut chunk),
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(chunk.len(), 2, "nothing is pushed for a bad record");
        Ok(())
    }

    /// 0.1.0 is unreleased: no embedded store holds the JSON records the first binary forms
    /// replaced, so JSON where a binary form belongs is damage, not an old record to read.
    #[test]
    fn json_is_corrupt_where_a_binary_form_belongs() -> Result<(), StoreError> {
        let json = encode(&lease(), || "lease".to_owned())?;
        assert!(matches!(
            decode_lease(7, &json),
            Err(StoreError::Corrupt(_))
        ));
        let mut record = AuditRecord::new("r", locksmith_core::AuditKind::Granted);
        record.seq = 3;
        let json = encode(&record, || "audit record".to_owned())?;
        assert!(matches!(
            decode_audit(3, &json),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            decode_audit_resource(3, &json),
            Err(StoreError::Corrupt(_))
        ));
        Ok(())
    }

    /// The etcd backend's JSON forms read back, under the key they name only; a lease written
    /// before `pid_ns` and `lock_delay_ms` existed has neither key.
    #[test]
    fn json_leases_and_audit_records_round_trip() -> Result<(), StoreError> {
        let json = encode(&lease(), || "lease".to_owned())?;
        assert_eq!(decode_lease_json(7, &json)?, lease());
        assert!(matches!(
            decode_lease_json(8, &json),
            Err(StoreError::Corrupt(_))
        ));
        let short = br#"{"lease":7,"resource":"r","owner":{"node":"n","pid":1,"start_time":2,"boot_id":"b","user":"u","purpose":"p"},"token":7,"ttl_ms":1000,"slots":1,"granted_at_ms":0}"#;
        let read = decode_lease_json(7, short)?;
        assert_eq!((read.owner.pid_ns, read.lock_delay_ms), (None, 0));
        let mut record = AuditRecord::new("r", locksmith_core::AuditKind::Broke);
        record.seq = 3;
        let json = encode(&record, || "audit record".to_owned())?;
        assert_eq!(decode_audit_json(3, &json)?, record);
        assert!(matches!(
            decode_audit_json(4, &json),
            Err(StoreError::Corrupt(_))
        ));
        Ok(())
    }

    #[test]
    fn damaged_binary_leases_are_corrupt() -> Result<(), StoreError> {
        let bytes = encode_lease(&lease())?;
        let mut extra = bytes.clone();
        extra.push(0);
        let mut not_utf8 = bytes.clone();
        let at = bytes.len() - 1;
        not_utf8[at] = 0xFF;
        let mut newer = bytes.clone();
        newer[0] = 3;
        for damaged in [
            &bytes[..bytes.len() - 1],
            &bytes[..20],
            &extra[..],
            &not_utf8[..],
            &newer[..],
            &[][..],
        ] {
            assert!(
                matches!(decode_lease(7, damaged), Err(StoreError::Corrupt(_))),
                "{damaged:?}"
            );
        }
        assert!(matches!(
            decode_lease(6, &bytes),
            Err(StoreError::Corrupt(_))
        ));
        Ok(())
    }
}
