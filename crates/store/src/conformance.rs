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

use locksmith_core::{FenceToken, LeaseId, LeaseRecord, Owner};
use tempfile::TempDir;

use crate::{EmbeddedStore, Store};

mod checks;

pub use checks::*;

/// How the suite gets stores of a backend.
pub trait Harness {
    /// A store over new, empty storage. Not yet loaded.
    fn fresh(&mut self) -> Box<dyn Store>;

    /// Closes `store` (drop it) and opens the same storage again. Not yet loaded.
    fn reopen(&mut self, store: Box<dyn Store>) -> Box<dyn Store>;
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
    ("durable_across_reopens", durable_across_reopens),
    (
        "unicode_and_long_fields_round_trip",
        unicode_and_long_fields_round_trip,
    ),
    ("extreme_values_round_trip", extreme_values_round_trip),
    ("delete_absent_is_a_no_op", delete_absent_is_a_no_op),
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
    current: Option<PathBuf>,
}

impl EmbeddedHarness {
    /// A harness with no stores yet.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Harness for EmbeddedHarness {
    fn fresh(&mut self) -> Box<dyn Store> {
        let dir = TempDir::new().expect("create a temporary directory");
        let path = dir.path().join("data");
        self.dirs.push(dir);
        self.current = Some(path.clone());
        Box::new(EmbeddedStore::open(&path).expect("open a fresh embedded store"))
    }

    fn reopen(&mut self, store: Box<dyn Store>) -> Box<dyn Store> {
        drop(store);
        let path = self.current.as_ref().expect("reopen is called after fresh");
        Box::new(EmbeddedStore::open(path).expect("reopen the embedded store"))
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
        },
        token: FenceToken(token),
        ttl_ms: 30_000,
        slots: 1,
        granted_at_ms: id.wrapping_add(1_700_000_000_000),
    }
}
