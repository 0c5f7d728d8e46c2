//! The store conformance suite against the embedded (redb) backend, one test per check so that
//! a failure names it.
#![cfg(feature = "conformance")]

use locksmith_store::conformance::{self, EmbeddedHarness};

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                conformance::$name(&mut EmbeddedHarness::new());
            }
        )*

        /// Guards against a check added to the suite but not listed here.
        #[test]
        fn every_check_is_listed() {
            let listed = [$(stringify!($name)),*];
            let suite: Vec<_> = conformance::CHECKS.iter().map(|(name, _)| *name).collect();
            assert_eq!(suite, listed);
        }
    };
}

checks!(
    empty_store_loads_empty,
    put_then_load,
    delete_removes_lease,
    order_within_batch_wins,
    overwrite_replaces_record,
    high_water_never_goes_backwards,
    high_water_covers_stored_leases,
    multi_mutation_batch_applies_whole,
    empty_batch_is_a_no_op,
    large_batch_round_trips,
    many_leases_round_trip,
    durable_across_reopens,
    unicode_and_long_fields_round_trip,
    extreme_values_round_trip,
    delete_absent_is_a_no_op,
);

#[test]
fn run_all_passes() {
    conformance::run_all(&mut EmbeddedHarness::new());
}
