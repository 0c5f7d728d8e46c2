//! What the table asks storage to make durable, and what storage hands back at boot.
//!
//! Only what must survive a crash is here: live leases, holds, the audit trail, the fencing
//! high-water mark, and the records of other domains (generic, opaque bytes in a keyspace of
//! their own: see [`crate::keyspace`]). The lock table keeps its own typed mutations — its fast
//! path, a compact binary form in the store — while a new domain adds a record kind with no
//! change to the store, the codec or any backend.
//! Heartbeat times and waiters are deliberately absent — after a restart every surviving lease
//! is treated as renewed at recovery time, and waiters are connections that died with the server.

use serde::{Deserialize, Serialize};

use crate::audit::AuditRecord;
use crate::error::InvalidRequest;
use crate::hold::{HoldId, HoldRecord};
use crate::ids::{FenceToken, LeaseId};
use crate::keyspace::{validate_record_key, validate_record_value};
use crate::owner::Owner;

/// A granted lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The lease id.
    pub lease: LeaseId,
    /// Its resource.
    pub resource: String,
    /// Its holder.
    pub owner: Owner,
    /// Its fencing token.
    pub token: FenceToken,
    /// Its TTL in milliseconds.
    pub ttl_ms: u64,
    /// Slot count of the resource when granted.
    pub slots: u32,
    /// Wall-clock grant time, Unix ms (display only).
    pub granted_at_ms: u64,
    /// Lock-delay after this holder fails (expiry, ghost reclaim, break), ms.
    #[serde(default)]
    pub lock_delay_ms: u64,
}

/// One change to durable state. A batch of mutations is applied atomically and in order.
///
/// Not serde: every store encodes it its own way (`locksmith_store::codec`), and a JSON form
/// would write a record's bytes as an array of numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Insert or replace a lease.
    PutLease(LeaseRecord),
    /// Remove a lease (release, expiry, reclaim).
    DeleteLease(LeaseId),
    /// Insert or replace a hold.
    PutHold(HoldRecord),
    /// Remove a hold (lifted or expired).
    DeleteHold(HoldId),
    /// Append an audit record (its `seq` is strictly greater than every earlier one).
    AppendAudit(AuditRecord),
    /// Raise the fencing high-water mark: every token and lease id at or below it was issued.
    /// Storage keeps the maximum ever written, so the sequence never goes backwards.
    FenceHighWater(u64),
    /// Insert or replace the record `key` of `space` with `value`, whole. The store never
    /// decodes `value`; the domain that owns `space` does. Limits: [`Mutation::validate`].
    PutRecord {
        /// The domain's keyspace, e.g. `configs`.
        space: String,
        /// The record's key within it.
        key: String,
        /// The record, encoded by its domain.
        value: Vec<u8>,
    },
    /// Remove the record `key` of `space` (a missing record is a no-op).
    DeleteRecord {
        /// The domain's keyspace.
        space: String,
        /// The record's key within it.
        key: String,
    },
}

impl Mutation {
    /// Checks what a store checks before writing a batch: a record's space, key and value are
    /// within the limits of [`crate::keyspace`]. The lock table's own mutations are always
    /// accepted (the table validated them). A domain calls this (or the `keyspace` checks)
    /// before it submits, so that a bad record is the client's 400 and never a store refusal.
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        match self {
            Mutation::PutRecord { space, key, value } => {
                validate_record_key(space, key)?;
                validate_record_value(value)
            }
            Mutation::DeleteRecord { space, key } => validate_record_key(space, key),
            Mutation::PutLease(_)
            | Mutation::DeleteLease(_)
            | Mutation::PutHold(_)
            | Mutation::DeleteHold(_)
            | Mutation::AppendAudit(_)
            | Mutation::FenceHighWater(_) => Ok(()),
        }
    }
}

/// Everything storage hands back at boot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every lease that was durably granted and not durably ended.
    pub leases: Vec<LeaseRecord>,
    /// Every hold placed and not lifted or expired.
    pub holds: Vec<HoldRecord>,
    /// The highest fencing token / lease id ever durably issued (0 if none).
    pub fence_high_water: u64,
    /// The highest audit sequence number stored (0 if none).
    pub audit_seq: u64,
}

/// A stored lease, borrowed: what a [`LeaseChunk`] hands out, and what
/// [`RestoreBuilder`](crate::table::RestoreBuilder) takes. Its fields are those of
/// [`LeaseRecord`], the owner's strings borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRef<'a> {
    /// The lease id.
    pub lease: LeaseId,
    /// Its resource.
    pub resource: &'a str,
    /// Its holder.
    pub owner: OwnerRef<'a>,
    /// Its fencing token.
    pub token: FenceToken,
    /// Its TTL in milliseconds.
    pub ttl_ms: u64,
    /// Slot count of the resource when granted.
    pub slots: u32,
    /// Wall-clock grant time, Unix ms (display only).
    pub granted_at_ms: u64,
    /// Lock-delay after this holder fails, ms.
    pub lock_delay_ms: u64,
}

/// An [`Owner`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerRef<'a> {
    /// Node (host) name.
    pub node: &'a str,
    /// Process id of the holder on that node.
    pub pid: u32,
    /// Process start time on that node, clock ticks since boot.
    pub start_time: u64,
    /// The node's boot id.
    pub boot_id: &'a str,
    /// The user the holder runs as.
    pub user: &'a str,
    /// Why the lock is held.
    pub purpose: &'a str,
    /// The PID namespace the pid is numbered in, if the owner recorded it.
    pub pid_ns: Option<&'a str>,
}

impl<'a> From<&'a LeaseRecord> for LeaseRef<'a> {
    fn from(r: &'a LeaseRecord) -> Self {
        LeaseRef {
            lease: r.lease,
            resource: &r.resource,
            owner: OwnerRef {
                node: &r.owner.node,
                pid: r.owner.pid,
                start_time: r.owner.start_time,
                boot_id: &r.owner.boot_id,
                user: &r.owner.user,
                purpose: &r.owner.purpose,
                pid_ns: r.owner.pid_ns.as_deref(),
            },
            token: r.token,
            ttl_ms: r.ttl_ms,
            slots: r.slots,
            granted_at_ms: r.granted_at_ms,
            lock_delay_ms: r.lock_delay_ms,
        }
    }
}

impl LeaseRef<'_> {
    /// An owned copy.
    pub fn to_record(&self) -> LeaseRecord {
        let o = &self.owner;
        LeaseRecord {
            lease: self.lease,
            resource: self.resource.to_owned(),
            owner: Owner {
                node: o.node.to_owned(),
                pid: o.pid,
                start_time: o.start_time,
                boot_id: o.boot_id.to_owned(),
                user: o.user.to_owned(),
                purpose: o.purpose.to_owned(),
                pid_ns: o.pid_ns.map(str::to_owned),
            },
            token: self.token,
            ttl_ms: self.ttl_ms,
            slots: self.slots,
            granted_at_ms: self.granted_at_ms,
            lock_delay_ms: self.lock_delay_ms,
        }
    }
}

/// Stored leases in one buffer, as a store hands them over at boot: every string of every
/// lease in one `String`, the numbers in one `Vec`.
///
/// Why not a `Vec<LeaseRecord>`: that is five allocations per lease, made by the thread that
/// reads the store and, once the table has copied or interned what it keeps, freed by the
/// thread that builds the table. At a million leases that was most of a restart: the records
/// alone touched ~190 MB the table never kept, and every cross-thread free has a price. A
/// chunk is two allocations for thousands of leases, and is reused once emptied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseChunk {
    text: String,
    leases: Vec<Packed>,
}

/// A lease in a chunk: its numbers, and where its strings end in the chunk's text (each starts
/// where the one before it ends, the first where the previous lease's last one ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed {
    lease: LeaseId,
    token: FenceToken,
    ttl_ms: u64,
    granted_at_ms: u64,
    lock_delay_ms: u64,
    start_time: u64,
    slots: u32,
    pid: u32,
    /// Ends of resource, node, boot id, user, purpose, PID namespace (empty when none was
    /// recorded: an owner's namespace is never empty).
    ends: [usize; 6],
}

impl LeaseChunk {
    /// An empty chunk with room for `leases` leases and `text` bytes of their strings.
    pub fn with_capacity(leases: usize, text: usize) -> Self {
        Self {
            text: String::with_capacity(text),
            leases: Vec::with_capacity(leases),
        }
    }

    /// Appends a copy of `lease`.
    pub fn push(&mut self, lease: LeaseRef<'_>) {
        let o = &lease.owner;
        let mut ends = [0; 6];
        let pid_ns = o.pid_ns.unwrap_or_default();
        for (end, text) in
            ends.iter_mut()
                .zip([lease.resource, o.node, o.boot_id, o.user, o.purpose, pid_ns])
        {
            self.text.push_str(text);
            *end = self.text.len();
        }
        self.leases.push(Packed {
            lease: lease.lease,
            token: lease.token,
            ttl_ms: lease.ttl_ms,
            granted_at_ms: lease.granted_at_ms,
            lock_delay_ms: lease.lock_delay_ms,
            start_time: o.start_time,
            slots: lease.slots,
            pid: o.pid,
            ends,
        });
    }

    /// How many leases it holds.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Bytes of strings it holds.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Empties it, keeping its memory for the next leases.
    pub fn clear(&mut self) {
        self.text.clear();
        self.leases.clear();
    }

    /// The leases, in the order they were pushed.
    pub fn iter(&self) -> impl Iterator<Item = LeaseRef<'_>> {
        let mut start = 0;
        self.leases.iter().map(move |p| {
            let [resource, node, boot_id, user, purpose, pid_ns] = p.ends.map(|end| {
                // Ends only ever grow and are char boundaries (each is where a pushed `&str`
                // ended), so `get` always finds the text; `unwrap_or_default` never fires.
                let text = self.text.get(start..end).unwrap_or_default();
                start = end;
                text
            });
            LeaseRef {
                lease: p.lease,
                resource,
                owner: OwnerRef {
                    node,
                    pid: p.pid,
                    start_time: p.start_time,
                    boot_id,
                    user,
                    purpose,
                    pid_ns: (!pid_ns.is_empty()).then_some(pid_ns),
                },
                token: p.token,
                ttl_ms: p.ttl_ms,
                slots: p.slots,
                granted_at_ms: p.granted_at_ms,
                lock_delay_ms: p.lock_delay_ms,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u64, purpose: &str) -> LeaseRecord {
        LeaseRecord {
            lease: LeaseId(i),
            resource: format!("fleet/ünï/{i}"),
            owner: Owner {
                node: format!("node-{}", i % 3),
                pid: 100 + i as u32,
                start_time: 7 * i,
                boot_id: format!("boot-{}", i % 2),
                user: "svc".into(),
                purpose: purpose.into(),
                pid_ns: (i % 3 != 0).then(|| format!("pid:[{}]", 4_026_531_836 + i)),
            },
            token: FenceToken(i + 1),
            ttl_ms: 1_000 * i,
            slots: 1 + i as u32,
            granted_at_ms: 99 + i,
            lock_delay_ms: i,
        }
    }

    #[test]
    fn a_chunk_gives_back_what_was_pushed_and_is_reusable() {
        let records: Vec<LeaseRecord> = (0..10)
            .map(|i| record(i, if i % 2 == 0 { "" } else { "deploy ✓" }))
            .collect();
        let mut chunk = LeaseChunk::with_capacity(4, 16);
        for r in &records {
            chunk.push(r.into());
        }
        assert_eq!(chunk.len(), 10);
        let back: Vec<LeaseRecord> = chunk.iter().map(|r| r.to_record()).collect();
        assert_eq!(back, records);
        chunk.clear();
        assert!(chunk.is_empty() && chunk.text_len() == 0);
        chunk.push((&records[3]).into());
        assert_eq!(
            chunk.iter().map(|r| r.to_record()).collect::<Vec<_>>(),
            [records[3].clone()]
        );
    }
}
