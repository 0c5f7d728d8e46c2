//! How records are encoded in a store, shared by every backend so they agree byte for byte. On
//! decode the key a record is stored under must match the id it names (a mismatch is corruption,
//! not a record to trust).
//!
//! Holds and audit records are JSON. Leases may also be in a compact binary form
//! ([`encode_lease`]), because a server holding a million of them decodes them all at boot —
//! JSON took 1.5–1.9 s of it. The binary form starts with a version byte that JSON can never
//! start with (JSON lease records start with `{`), so [`decode_lease`] reads both: data written
//! before the binary form existed still opens.
//!
//! Binary lease, version 1, integers little-endian:
//!
//! ```text
//! u8 version = 1
//! u64 lease, u64 token, u64 ttl_ms, u32 slots, u64 granted_at_ms, u64 lock_delay_ms,
//! u32 owner.pid, u64 owner.start_time,
//! then resource, owner.node, owner.boot_id, owner.user, owner.purpose: each u32 length + UTF-8
//! ```

use locksmith_core::{AuditRecord, FenceToken, HoldRecord, LeaseId, LeaseRecord, Owner};

use crate::StoreError;

/// Encodes a record; `what` names it in the error.
pub fn encode<T: serde::Serialize>(
    record: &T,
    what: impl FnOnce() -> String,
) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record).map_err(|e| StoreError::Io(format!("cannot encode {}: {e}", what())))
}

/// The version byte of the binary lease form (see the module docs).
const LEASE_V1: u8 = 1;

/// Encodes a lease in the binary form (see the module docs).
pub fn encode_lease(record: &LeaseRecord) -> Result<Vec<u8>, StoreError> {
    let owner = &record.owner;
    let texts = [
        record.resource.as_str(),
        &owner.node,
        &owner.boot_id,
        &owner.user,
        &owner.purpose,
    ];
    let mut out = Vec::with_capacity(61 + texts.iter().map(|t| 4 + t.len()).sum::<usize>());
    out.push(LEASE_V1);
    for n in [record.lease.0, record.token.0, record.ttl_ms] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&record.slots.to_le_bytes());
    for n in [record.granted_at_ms, record.lock_delay_ms] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&owner.pid.to_le_bytes());
    out.extend_from_slice(&owner.start_time.to_le_bytes());
    for text in texts {
        let len = u32::try_from(text.len()).map_err(|_| {
            StoreError::Io(format!(
                "cannot encode lease {}: a field is over 4 GiB",
                record.lease
            ))
        })?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    Ok(out)
}

/// Decodes a lease stored under `key`, in either form, checking the key matches the id it names.
pub fn decode_lease(key: u64, bytes: &[u8]) -> Result<LeaseRecord, StoreError> {
    let record = match bytes.first() {
        Some(&LEASE_V1) => decode_lease_v1(&bytes[1..])
            .ok_or_else(|| StoreError::Corrupt(format!("lease {key}: truncated or not UTF-8")))?,
        Some(b'{') => serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Corrupt(format!("lease {key}: {e}")))?,
        Some(other) => {
            return Err(StoreError::Corrupt(format!(
                "lease {key}: unknown format {other} (written by a newer version?)"
            )));
        }
        None => return Err(StoreError::Corrupt(format!("lease {key}: empty record"))),
    };
    if record.lease.0 != key {
        return Err(StoreError::Corrupt(format!(
            "lease {key}: record is stored under the wrong key (it names lease {})",
            record.lease
        )));
    }
    Ok(record)
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

/// Decodes a record stored under `key`, checking the key matches the id it names.
pub fn decode_audit(key: u64, bytes: &[u8]) -> Result<AuditRecord, StoreError> {
    let record: AuditRecord = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("audit record {key}: {e}")))?;
    if record.seq != key {
        return Err(StoreError::Corrupt(format!(
            "audit record {key}: record is stored under the wrong key (it names seq {})",
            record.seq
        )));
    }
    Ok(record)
}

/// The binary form after its version byte; `None` if it is truncated, has bytes left over, or
/// holds a text that is not UTF-8.
fn decode_lease_v1(bytes: &[u8]) -> Option<LeaseRecord> {
    let mut r = Reader(bytes);
    let (lease, token, ttl_ms) = (r.u64()?, r.u64()?, r.u64()?);
    let slots = r.u32()?;
    let (granted_at_ms, lock_delay_ms) = (r.u64()?, r.u64()?);
    let (pid, start_time) = (r.u32()?, r.u64()?);
    let record = LeaseRecord {
        lease: LeaseId(lease),
        resource: r.text()?,
        owner: Owner {
            node: r.text()?,
            pid,
            start_time,
            boot_id: r.text()?,
            user: r.text()?,
            purpose: r.text()?,
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

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }

    fn text(&mut self) -> Option<String> {
        let len = usize::try_from(self.u32()?).ok()?;
        let (text, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        String::from_utf8(text.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(bytes[0], LEASE_V1);
        assert_eq!(decode_lease(7, &bytes)?, lease());
        Ok(())
    }

    #[test]
    fn a_json_lease_written_before_the_binary_form_still_decodes() -> Result<(), StoreError> {
        let json = encode(&lease(), || "lease".to_owned())?;
        assert_eq!(decode_lease(7, &json)?, lease());
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
        newer[0] = 2;
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
