//! The conformance suite: the [`Store`] contract as executable checks, run against every
//! backend (the embedded store here, etcd in its own crate).
//!
//! Why a suite and not per-backend tests: the lock table's safety rests on the contract, not on
//! a backend, so a new backend is done when it passes the same checks the old one does (the
//! shape of openraft's `Suite::test_all`).
//!
//! Every check reads back through [`Harness::reopen`], never through a second `load` on the
//! same instance: the contract only promises `load` once, before any commit, and reading after
//! a reopen is what proves the data reached the backend's durable state. Crash atomicity cannot
//! be checked without killing a process; each backend adds a crash test for that (see
//! `tests/crash.rs`).
//!
//! Checks panic with a message on failure, like any test assertion.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::PathBuf;

use locksmith_core::{
    AuditKind, AuditRecord, EndCause, FenceToken, HoldId, HoldRecord, LeaseId, LeaseRecord, Owner,
};
use tempfile::TempDir;

use crate::{EmbeddedStore, Store, StoreOptions};

mod audit;
mod checks;
mod holds;
mod records;

pub use audit::*;
pub use checks::*;
pub use holds::*;
pub use records::*;

/// How the suite gets stores of a backend.
pub trait Harness {
    /// A store over new, empty storage, with default options. Not yet loaded.
    fn fresh(&mut self) -> Box<dyn Store> {
        self.fresh_with(StoreOptions::default())
    }

    /// A store over new, empty storage, opened with `options`. Not yet loaded.
    fn fresh_with(&mut self, options: StoreOptions) -> Box<dyn Store>;

    /// Closes `store` (drop it) and opens the same storage again, with the options it was
    /// created with. Not yet loaded.
    fn reopen(&mut self, store: Box<dyn Store>) -> Box<dyn Store>;

    /// Like [`reopen`](Self::reopen), but with new options, which later reopens keep (an
    /// operator changed the configuration and restarted).
    fn reopen_with(&mut self, store: Box<dyn Store>, options: StoreOptions) -> Box<dyn Store>;

    /// Closes `store`, writes `bytes` directly into its storage as the stored form of lease `id`,
    /// bypassing `commit`, and opens the storage again. Not yet loaded. This is how the suite
    /// proves that damaged records are refused, never guessed at.
    fn write_raw_lease(&mut self, store: Box<dyn Store>, id: u64, bytes: &[u8]) -> Box<dyn Store>;
}

/// One check of the suite.
pub type Check = fn(&mut dyn Harness);

/// Every check, by name. [`run_all`] runs them in this order.
pub const CHECKS: &[(&str, Check)] = &[
    ("empty_store_loads_empty", empty_store_loads_empty),
    ("put_then_load", put_then_load),
    ("delete_removes_lease", delete_removes_lease),
    ("order_within_batch_wins", order_within_batch_wins),
    ("overwrite_replaces_record", overwrite_replaces_record),
    (
        "high_water_never_goes_backwards",
        high_water_never_goes_backwards,
    ),
    (
        "high_water_covers_stored_leases",
        high_water_covers_stored_leases,
    ),
    (
        "multi_mutation_batch_applies_whole",
        multi_mutation_batch_applies_whole,
    ),
    ("empty_batch_is_a_no_op", empty_batch_is_a_no_op),
    ("large_batch_round_trips", large_batch_round_trips),
    ("many_leases_round_trip", many_leases_round_trip),
    ("streaming_load_matches_load", streaming_load_matches_load),
    (
        "streaming_load_stops_on_a_sink_error",
        streaming_load_stops_on_a_sink_error,
    ),
    ("durable_across_reopens", durable_across_reopens),
    (
        "unicode_and_long_fields_round_trip",
        unicode_and_long_fields_round_trip,
    ),
    ("extreme_values_round_trip", extreme_values_round_trip),
    ("delete_absent_is_a_no_op", delete_absent_is_a_no_op),
    ("lock_delay_round_trips", lock_delay_round_trips),
    (
        "a_damaged_lease_fails_the_load",
        a_damaged_lease_fails_the_load,
    ),
    ("holds_put_delete_overwrite", holds_put_delete_overwrite),
    ("holds_survive_reopens", holds_survive_reopens),
    (
        "holds_and_leases_are_separate",
        holds_and_leases_are_separate,
    ),
    ("hold_ids_raise_the_fence", hold_ids_raise_the_fence),
    ("audit_append_then_query", audit_append_then_query),
    (
        "audit_records_round_trip_every_kind",
        audit_records_round_trip_every_kind,
    ),
    ("audit_query_filters", audit_query_filters),
    (
        "audit_limit_returns_newest_ascending",
        audit_limit_returns_newest_ascending,
    ),
    ("audit_after_seq_paging", audit_after_seq_paging),
    ("audit_queries_match_a_model", audit_queries_match_a_model),
    (
        "audit_seq_survives_reopen_and_never_goes_backwards",
        audit_seq_survives_reopen_and_never_goes_backwards,
    ),
    (
        "audit_rewritten_seq_is_replaced",
        audit_rewritten_seq_is_replaced,
    ),
    (
        "audit_retention_deletes_the_oldest",
        audit_retention_deletes_the_oldest,
    ),
    (
        "audit_retention_zero_keeps_nothing",
        audit_retention_zero_keeps_nothing,
    ),
    (
        "audit_lowered_retention_catches_up",
        audit_lowered_retention_catches_up,
    ),
    (
        "audit_broken_lease_record_round_trips",
        audit_broken_lease_record_round_trips,
    ),
    ("records_put_replace_delete", records_put_replace_delete),
    (
        "records_are_atomic_with_leases",
        records_are_atomic_with_leases,
    ),
    ("records_survive_reopens", records_survive_reopens),
    (
        "records_prefix_scan_and_paging",
        records_prefix_scan_and_paging,
    ),
    ("records_match_a_model", records_match_a_model),
    (
        "records_many_keys_per_prefix_page_completely",
        records_many_keys_per_prefix_page_completely,
    ),
    (
        "records_limits_are_refused_cleanly",
        records_limits_are_refused_cleanly,
    ),
    (
        "domain_audit_events_round_trip",
        domain_audit_events_round_trip,
    ),
];

/// Runs every check in [`CHECKS`]; a failure names the check.
pub fn run_all(harness: &mut dyn Harness) {
    for (name, check) in CHECKS {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(harness))) {
            let detail = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()));
            match detail {
                Some(detail) => panic!("store conformance check `{name}` failed: {detail}"),
                None => resume_unwind(panic),
            }
        }
    }
}

/// A store over a fresh temporary directory per [`Harness::fresh`]; the directories live as
/// long as the harness.
#[derive(Debug, Default)]
pub struct EmbeddedHarness {
    dirs: Vec<TempDir>,
    current: Option<(PathBuf, StoreOptions)>,
}

impl EmbeddedHarness {
    /// A harness with no stores yet.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Harness for EmbeddedHarness {
    fn fresh_with(&mut self, options: StoreOptions) -> Box<dyn Store> {
        let dir = TempDir::new().expect("create a temporary directory");
        let path = dir.path().join("data");
        self.dirs.push(dir);
        self.current = Some((path.clone(), options));
        Box::new(EmbeddedStore::open_with(&path, options).expect("open a fresh embedded store"))
    }

    fn reopen(&mut self, store: Box<dyn Store>) -> Box<dyn Store> {
        drop(store);
        let (path, options) = self.current.as_ref().expect("reopen is called after fresh");
        Box::new(EmbeddedStore::open_with(path, *options).expect("reopen the embedded store"))
    }

    fn reopen_with(&mut self, store: Box<dyn Store>, options: StoreOptions) -> Box<dyn Store> {
        drop(store);
        let (path, current) = self.current.as_mut().expect("reopen is called after fresh");
        *current = options;
        Box::new(EmbeddedStore::open_with(path, options).expect("reopen the embedded store"))
    }

    fn write_raw_lease(&mut self, store: Box<dyn Store>, id: u64, bytes: &[u8]) -> Box<dyn Store> {
        drop(store);
        let (path, options) = self
            .current
            .as_ref()
            .expect("write_raw_lease is called after fresh");
        crate::embedded::write_raw_lease(path, id, bytes).expect("write a raw lease");
        Box::new(EmbeddedStore::open_with(path, *options).expect("reopen the embedded store"))
    }
}

/// A complete lease record with a plausible owner.
pub fn sample_lease(id: u64, token: u64) -> LeaseRecord {
    LeaseRecord {
        lease: LeaseId(id),
        resource: format!("configs/resource-{}.conf", id % 17),
        owner: Owner {
            node: format!("node-{}", id % 7),
            pid: 1000 + (id % 30_000) as u32,
            start_time: id.wrapping_add(4_200),
            boot_id: "7d9d1c8e-9d2b-4b8e-9a51-3f0e6c2b1a77".to_owned(),
            user: "deploy".to_owned(),
            purpose: format!("rollout wave {}", id % 5),
            // Owners in PID namespaces, and owners that recorded none: both must round-trip.
            pid_ns: (id % 2 == 1).then(|| format!("pid:[{}]", 4_026_531_836 + id % 3)),
        },
        token: FenceToken(token),
        ttl_ms: 30_000,
        slots: 1,
        granted_at_ms: id.wrapping_add(1_700_000_000_000),
        lock_delay_ms: 0,
    }
}

/// A complete, active hold.
pub fn sample_hold(id: u64) -> HoldRecord {
    HoldRecord {
        hold: HoldId(id),
        resource: format!("configs/resource-{}.conf", id % 17),
        reason: format!("change freeze #{id}"),
        by: "alice".to_owned(),
        placed_at_ms: 1_700_000_000_000 + id,
        duration_ms: 3_600_000,
        require_ack: false,
        acked_by: None,
        active_since_ms: Some(1_700_000_000_000 + id),
    }
}

/// An audit record with the given position, time and resource; its kind and optional fields
/// vary with `seq` so that every shape gets stored.
pub fn sample_audit(seq: u64, at_ms: u64, resource: &str) -> AuditRecord {
    let kind = match seq % 6 {
        0 => AuditKind::Granted,
        1 => AuditKind::Ended {
            cause: EndCause::Released,
        },
        2 => AuditKind::Ended {
            cause: EndCause::ProcessDied {
                reported_by: "node-3".to_owned(),
            },
        },
        3 => AuditKind::HoldPlaced,
        // Not `EndCause::Broken`: see `audit_broken_lease_record_round_trips`.
        4 => AuditKind::Ended {
            cause: EndCause::NodeRebooted {
                new_boot_id: "5f0c1a2b-3d4e-4f60-8a9b-0c1d2e3f4a5b".to_owned(),
            },
        },
        _ => AuditKind::Broke,
    };
    let mut record = AuditRecord::new(resource, kind);
    record.seq = seq;
    record.at_ms = at_ms;
    if seq % 2 == 0 {
        record.lease = Some(LeaseId(seq + 100));
        record.token = Some(FenceToken(seq + 100));
        record.owner = Some(sample_lease(seq + 100, seq + 100).owner);
    } else {
        record.hold = Some(HoldId(seq + 200));
        record.operator = Some("carol".to_owned());
        record.reason = Some(format!("reason {seq}"));
    }
    record
}
