//! The store conformance suite — the same checks the embedded store passes — against a real,
//! single-member etcd started for this test binary. The checks run concurrently, each with its
//! own key prefix; a failure names every check that failed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use locksmith_etcd::testing::{EtcdCluster, EtcdHarness};
use locksmith_store::conformance::CHECKS;

#[test]
fn every_conformance_check_passes_on_etcd() {
    let cluster = EtcdCluster::start(1);
    let endpoints = cluster.endpoints();
    let started = Instant::now();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let runs: Vec<_> = CHECKS
            .iter()
            .map(|&(name, check)| {
                let endpoints = endpoints.clone();
                let handle = scope.spawn(move || {
                    let mut harness = EtcdHarness::new(endpoints, &format!("/conformance/{name}/"));
                    let began = Instant::now();
                    let outcome = catch_unwind(AssertUnwindSafe(|| check(&mut harness)));
                    (outcome, began.elapsed())
                });
                (name, handle)
            })
            .collect();
        runs.into_iter()
            .filter_map(|(name, handle)| {
                let (outcome, took) = match handle.join() {
                    Ok(result) => result,
                    Err(_) => return Some(format!("{name}: the check's thread died")),
                };
                eprintln!(
                    "{name}: {} in {took:.2?}",
                    if outcome.is_ok() { "ok" } else { "FAILED" }
                );
                outcome.err().map(|panic| {
                    let detail = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_else(|| "unknown panic".to_owned());
                    format!("{name}: {detail}")
                })
            })
            .collect()
    });
    eprintln!("{} checks in {:.2?}", CHECKS.len(), started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {} store conformance checks failed on etcd:\n{}",
        failures.len(),
        CHECKS.len(),
        failures.join("\n")
    );
}
