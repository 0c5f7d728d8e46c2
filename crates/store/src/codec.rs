//! How records are encoded in a store: JSON, and on decode the key a record is stored under
//! must match the id it names (a mismatch is corruption, not a record to trust). Shared by every
//! backend so they agree byte for byte.

use locksmith_core::{AuditRecord, HoldRecord, LeaseRecord};

use crate::StoreError;

/// Encodes a record; `what` names it in the error.
pub fn encode<T: serde::Serialize>(
    record: &T,
    what: impl FnOnce() -> String,
) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record).map_err(|e| StoreError::Io(format!("cannot encode {}: {e}", what())))
}

/// Decodes a record stored under `key`, checking the key matches the id it names.
pub fn decode_lease(key: u64, bytes: &[u8]) -> Result<LeaseRecord, StoreError> {
    let record: LeaseRecord = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("lease {key}: {e}")))?;
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
