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
    streaming_load_matches_load,
    streaming_load_stops_on_a_sink_error,
    durable_across_reopens,
    unicode_and_long_fields_round_trip,
    extreme_values_round_trip,
    delete_absent_is_a_no_op,
    lock_delay_round_trips,
    a_damaged_lease_fails_the_load,
    holds_put_delete_overwrite,
    holds_survive_reopens,
    holds_and_leases_are_separate,
    hold_ids_raise_the_fence,
    audit_append_then_query,
    audit_records_round_trip_every_kind,
    audit_query_filters,
    audit_limit_returns_newest_ascending,
    audit_after_seq_paging,
    audit_queries_match_a_model,
    audit_seq_survives_reopen_and_never_goes_backwards,
    audit_rewritten_seq_is_replaced,
    audit_retention_deletes_the_oldest,
    audit_retention_zero_keeps_nothing,
    audit_lowered_retention_catches_up,
    audit_broken_lease_record_round_trips,
    records_put_replace_delete,
    records_are_atomic_with_leases,
    records_survive_reopens,
    records_prefix_scan_and_paging,
    records_match_a_model,
    records_many_keys_per_prefix_page_completely,
    records_limits_are_refused_cleanly,
    domain_audit_events_round_trip,
);

#[test]
fn run_all_passes() {
    conformance::run_all(&mut EmbeddedHarness::new());
}
