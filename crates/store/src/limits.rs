//! What one commit may hold: the records a store takes at all ([`validate_batch`]), and how
//! large a batch is for a backend whose requests are bounded ([`mutation_bytes`], which
//! [`Store::max_batch_bytes`](crate::Store::max_batch_bytes) is measured in).

use locksmith_core::{AuditKind, Mutation, Owner};

use crate::StoreError;

/// About how many bytes `mutation` takes in a backend's commit request, generously: its strings
/// and a record's value, plus room for the numbers, field names and key a JSON form carries
/// (the etcd backend's). What [`Store::max_batch_bytes`](crate::Store::max_batch_bytes) is
/// measured in.
pub fn mutation_bytes(mutation: &Mutation) -> usize {
    /// Numbers, field names, the key and the request's framing, per mutation.
    const OVERHEAD: usize = 512;
    let owner = |o: &Owner| {
        o.node.len()
            + o.boot_id.len()
            + o.user.len()
            + o.purpose.len()
            + o.pid_ns.as_ref().map_or(0, String::len)
    };
    OVERHEAD
        + match mutation {
            Mutation::PutLease(lease) => lease.resource.len() + owner(&lease.owner),
            Mutation::PutHold(hold) => {
                hold.resource.len()
                    + hold.reason.len()
                    + hold.by.len()
                    + hold.acked_by.as_ref().map_or(0, String::len)
            }
            Mutation::AppendAudit(record) => {
                let kind = match &record.kind {
                    AuditKind::Domain(event) => event.kind.len() + json_len(&event.detail),
                    // An ended lease's cause: at most two short strings.
                    _ => 512,
                };
                record.resource.len()
                    + kind
                    + record.owner.as_ref().map_or(0, owner)
                    + record.operator.as_ref().map_or(0, String::len)
                    + record.reason.as_ref().map_or(0, String::len)
            }
            Mutation::PutRecord { space, key, value } => space.len() + key.len() + value.len(),
            Mutation::DeleteRecord { space, key } => space.len() + key.len(),
            Mutation::DeleteLease(_) | Mutation::DeleteHold(_) | Mutation::FenceHighWater(_) => 0,
        }
}

/// The length of `value` as compact JSON, counted without building it.
fn json_len(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail; a value that could not be written costs nothing.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Checks every record of `batch` against the limits of `locksmith_core::keyspace`
/// ([`Mutation::validate`]): what a store and the [`Committer`](crate::Committer) check before taking a batch.
/// The first bad record's problem, as [`StoreError::Invalid`].
pub fn validate_batch(batch: &[Mutation]) -> Result<(), StoreError> {
    batch
        .iter()
        .try_for_each(Mutation::validate)
        .map_err(StoreError::Invalid)
}
