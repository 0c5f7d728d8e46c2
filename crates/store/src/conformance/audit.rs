//! Checks for the audit log: appends, queries (filters, newest-`limit`, paging), the audit
//! high-water, and retention.

use locksmith_core::{AuditKind, AuditRecord, EndCause, Mutation, Snapshot};

use super::checks::{commit, fresh_loaded, reload};
use super::{Harness, sample_audit, sample_lease};
use crate::{AuditQuery, Store, StoreOptions};

fn append(records: &[AuditRecord]) -> Vec<Mutation> {
    records.iter().cloned().map(Mutation::AppendAudit).collect()
}

fn query(store: &mut Box<dyn Store>, query: &AuditQuery) -> Vec<AuditRecord> {
    store
        .audit(query)
        .unwrap_or_else(|e| panic!("audit query {query:?} failed: {e}"))
}

fn all(store: &mut Box<dyn Store>) -> Vec<AuditRecord> {
    query(store, &AuditQuery::default())
}

fn seqs(records: &[AuditRecord]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

/// What the contract says a query over `log` (every stored record) returns.
fn expected(log: &[AuditRecord], q: &AuditQuery) -> Vec<AuditRecord> {
    let mut matching: Vec<_> = log
        .iter()
        .filter(|r| q.resource.as_ref().is_none_or(|res| r.resource == *res))
        .filter(|r| q.since_ms.is_none_or(|since| r.at_ms >= since))
        .filter(|r| q.after_seq.is_none_or(|after| r.seq > after))
        .cloned()
        .collect();
    matching.sort_by_key(|r| r.seq);
    let skip = matching.len().saturating_sub(q.limit);
    matching.split_off(skip)
}

fn ask(
    resource: Option<&str>,
    since_ms: Option<u64>,
    after_seq: Option<u64>,
    limit: usize,
) -> AuditQuery {
    AuditQuery {
        resource: resource.map(str::to_owned),
        since_ms,
        after_seq,
        limit,
    }
}

/// Records committed (with other mutations) are visible to queries at once, oldest first, and
/// after a reopen; the snapshot's `audit_seq` is the highest seq.
pub fn audit_append_then_query(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    assert!(
        all(&mut store).is_empty(),
        "a fresh store has no audit records"
    );

    let first: Vec<_> = (1..=3)
        .map(|seq| sample_audit(seq, 1_000 * seq, "db/primary"))
        .collect();
    let mut batch = vec![
        Mutation::PutLease(sample_lease(1, 1)),
        Mutation::FenceHighWater(1),
    ];
    batch.extend(append(&first));
    commit(&mut store, &batch);
    assert_eq!(all(&mut store), first, "a query sees the committed batch");

    let second: Vec<_> = (4..=5)
        .map(|seq| sample_audit(seq, 1_000 * seq, "db/replica"))
        .collect();
    commit(&mut store, &append(&second));
    let everything: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert_eq!(all(&mut store), everything);

    let (mut store, snapshot) = reload(h, store);
    assert_eq!(snapshot.audit_seq, 5);
    assert_eq!(snapshot.leases, vec![sample_lease(1, 1)]);
    assert_eq!(
        all(&mut store),
        everything,
        "audit records survive a reopen"
    );
}

/// Every kind of record, with every optional field set or not and non-ASCII text, comes back
/// exactly.
pub fn audit_records_round_trip_every_kind(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    let mut records: Vec<_> = (1..=12)
        .map(|seq| sample_audit(seq, 1_700_000_000_000 + seq, "configs/ключ/設定/🔒.conf"))
        .collect();
    let kinds = [
        AuditKind::Ended {
            cause: EndCause::Expired,
        },
        AuditKind::Ended {
            cause: EndCause::NodeRebooted {
                new_boot_id: "b".repeat(255),
            },
        },
        AuditKind::Ended {
            cause: EndCause::Unknown,
        },
        AuditKind::HoldAcked,
        AuditKind::HoldLifted,
        AuditKind::HoldExpired,
    ];
    for (seq, kind) in (13..).zip(kinds) {
        let mut record = AuditRecord::new("reboot", kind);
        record.seq = seq;
        record.at_ms = u64::MAX - seq;
        record.reason = Some(r#"sh -c 'echo "a\b" \u0000 {"json": [1]}'"#.to_owned());
        records.push(record);
    }
    commit(&mut store, &append(&records));
    let (mut store, snapshot) = reload(h, store);
    assert_eq!(snapshot.audit_seq, 18);
    assert_eq!(all(&mut store), records);
}

/// The audit record of a broken lease round-trips, with and without the record's own
/// `reason` (pins the key collision between the flattened `EndCause::Broken { reason, .. }`
/// and the record's own reason, now serialized as `note`).
pub fn audit_broken_lease_record_round_trips(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    let cause = EndCause::Broken {
        by: "bob".to_owned(),
        reason: "stuck deploy".to_owned(),
    };
    let mut plain = AuditRecord::new(
        "db",
        AuditKind::Ended {
            cause: cause.clone(),
        },
    );
    plain.seq = 1;
    plain.at_ms = 10;
    plain.lease = Some(locksmith_core::LeaseId(7));
    let mut annotated = AuditRecord::new("db", AuditKind::Ended { cause });
    annotated.seq = 2;
    annotated.at_ms = 11;
    annotated.reason = Some("operator note".to_owned());
    let records = vec![plain, annotated];
    commit(&mut store, &append(&records));
    let (mut store, _) = reload(h, store);
    assert_eq!(all(&mut store), records);
}

/// `resource` is exact equality, `since_ms` is `at_ms >= since_ms`, `after_seq` is
/// `seq > after_seq`, and they combine.
pub fn audit_query_filters(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    let resources = ["app/a", "app/ab", "app/a/b"];
    let log: Vec<_> = (1..=30)
        .map(|seq| sample_audit(seq, 10_000 + 100 * seq, resources[(seq % 3) as usize]))
        .collect();
    commit(&mut store, &append(&log[..15]));
    commit(&mut store, &append(&log[15..]));
    let (mut store, _) = reload(h, store);

    let cases = [
        ask(Some("app/a"), None, None, usize::MAX),
        ask(Some("app/ab"), None, None, usize::MAX),
        ask(Some("app/a/b"), None, None, usize::MAX),
        ask(Some("app"), None, None, usize::MAX),
        ask(Some(""), None, None, usize::MAX),
        ask(None, Some(12_000), None, usize::MAX),
        ask(None, Some(12_001), None, usize::MAX),
        ask(None, Some(0), None, usize::MAX),
        ask(None, Some(u64::MAX), None, usize::MAX),
        ask(None, None, Some(20), usize::MAX),
        ask(None, None, Some(0), usize::MAX),
        ask(None, None, Some(30), usize::MAX),
        ask(None, None, Some(u64::MAX), usize::MAX),
        ask(Some("app/ab"), Some(11_000), Some(25), usize::MAX),
        ask(Some("app/a/b"), Some(12_500), None, usize::MAX),
        ask(Some("app/a"), None, Some(9), usize::MAX),
    ];
    for q in &cases {
        assert_eq!(query(&mut store, q), expected(&log, q), "query {q:?}");
    }
    // Spot-check the model against hand-computed answers.
    assert_eq!(
        seqs(&query(&mut store, &cases[0])),
        vec![3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
    );
    assert_eq!(
        seqs(&query(&mut store, &cases[5])),
        (20..=30).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(&query(&mut store, &cases[9])),
        (21..=30).collect::<Vec<_>>()
    );
    assert!(
        query(&mut store, &cases[3]).is_empty(),
        "a prefix is not a match"
    );
}

/// `limit` keeps the newest matching records and returns them oldest first; `0` returns none.
pub fn audit_limit_returns_newest_ascending(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    let log: Vec<_> = (1..=20)
        .map(|seq| sample_audit(seq, 5_000 + seq, if seq % 2 == 0 { "even" } else { "odd" }))
        .collect();
    commit(&mut store, &append(&log));
    let (mut store, _) = reload(h, store);

    assert_eq!(
        seqs(&query(&mut store, &AuditQuery::recent(5))),
        vec![16, 17, 18, 19, 20]
    );
    assert_eq!(seqs(&query(&mut store, &AuditQuery::recent(1))), vec![20]);
    assert_eq!(
        seqs(&query(&mut store, &ask(Some("odd"), None, None, 3))),
        vec![15, 17, 19]
    );
    assert_eq!(
        seqs(&query(
            &mut store,
            &ask(Some("even"), Some(5_004), Some(2), 100)
        )),
        vec![4, 6, 8, 10, 12, 14, 16, 18, 20]
    );
    assert_eq!(
        seqs(&query(&mut store, &ask(None, Some(5_010), Some(3), 4))),
        vec![17, 18, 19, 20]
    );
    assert_eq!(query(&mut store, &AuditQuery::recent(100)), log);
    assert!(query(&mut store, &AuditQuery::recent(0)).is_empty());
    assert!(query(&mut store, &ask(Some("odd"), None, None, 0)).is_empty());
}

/// A reader tailing the log with `after_seq` = the last seq it saw gets exactly the records
/// committed since, as long as its `limit` covers them.
pub fn audit_after_seq_paging(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    let mut seen = Vec::new();
    let mut last = 0;
    let mut next = 1;
    for batch_size in [1, 4, 0, 7, 2, 30] {
        let batch: Vec<_> = (next..next + batch_size)
            .map(|seq| sample_audit(seq, 1_000 + seq, "tail"))
            .collect();
        next += batch_size;
        commit(&mut store, &append(&batch));
        let page = query(&mut store, &ask(None, None, Some(last), 50));
        assert_eq!(page, batch, "page after seq {last}");
        if let Some(record) = page.last() {
            last = record.seq;
        }
        seen.extend(page);
    }
    assert_eq!(seqs(&seen), (1..next).collect::<Vec<_>>());
    assert!(query(&mut store, &ask(None, None, Some(last), 50)).is_empty());
    assert!(query(&mut store, &ask(Some("tail"), None, Some(u64::MAX), 50)).is_empty());

    // The cursor survives a reopen, and works per resource.
    let (mut store, _) = reload(h, store);
    let more = [
        sample_audit(next, 5_000, "other"),
        sample_audit(next + 1, 5_001, "tail"),
    ];
    commit(&mut store, &append(&more));
    assert_eq!(
        query(&mut store, &ask(Some("tail"), None, Some(last), 50)),
        vec![more[1].clone()]
    );

    // More new records than `limit`: the newest `limit` of them, as the contract says (the
    // cursor then jumps; a tailing reader must keep `limit` above what arrives per poll).
    let burst: Vec<_> = (next + 2..next + 12)
        .map(|seq| sample_audit(seq, 6_000 + seq, "tail"))
        .collect();
    commit(&mut store, &append(&burst));
    let page = query(&mut store, &ask(None, None, Some(next + 1), 4));
    assert_eq!(page, burst[6..]);
}

/// A deterministic pseudo-random sequence (64-bit LCG), so that the model check is
/// reproducible.
pub(super) struct Lcg(pub(super) u64);

impl Lcg {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// 600 records over four resources, with a wall clock that mostly advances but sometimes steps
/// backwards, committed in uneven batches; hundreds of filter combinations must each return
/// exactly what the contract says, before and after a reopen.
pub fn audit_queries_match_a_model(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    let resources = ["r/one", "r/two", "r/three", "r/four"];
    let mut rng = Lcg(0x5eed);
    let mut clock: u64 = 1_000_000;
    let mut log = Vec::new();
    let mut seq = 0;
    while seq < 600 {
        let size = 1 + rng.next() % 40;
        let mut batch = Vec::new();
        for _ in 0..size {
            seq += 1;
            // Mostly forward by up to a second; one in 25 steps back by up to a minute.
            if rng.next() % 25 == 0 {
                clock = clock.saturating_sub(rng.next() % 60_000);
            } else {
                clock += rng.next() % 1_000;
            }
            // One resource is much rarer than the others.
            let resource = match rng.next() % 10 {
                0 => resources[3],
                n => resources[(n % 3) as usize],
            };
            batch.push(sample_audit(seq, clock, resource));
        }
        commit(&mut store, &append(&batch));
        log.extend(batch);
    }
    let mut times: Vec<_> = log.iter().map(|r| r.at_ms).collect();
    times.sort_unstable();
    let since_values = [
        None,
        Some(0),
        Some(times[0]),
        Some(times[times.len() / 4]),
        Some(times[times.len() / 2]),
        Some(times[times.len() * 9 / 10]),
        Some(times[times.len() - 1]),
        Some(times[times.len() - 1] + 1),
    ];
    let resource_values = [None, Some("r/one"), Some("r/four"), Some("r/absent")];
    let after_values = [None, Some(0), Some(100), Some(599), Some(600)];
    let limits = [1, 7, 64, usize::MAX];

    for pass in ["before reopen", "after reopen"] {
        for resource in resource_values {
            for since in since_values {
                for after in after_values {
                    for limit in limits {
                        let q = ask(resource, since, after, limit);
                        let got = query(&mut store, &q);
                        assert!(
                            got == expected(&log, &q),
                            "{pass}: query {q:?} returned seqs {:?}, expected {:?}",
                            seqs(&got),
                            seqs(&expected(&log, &q))
                        );
                    }
                }
            }
        }
        store = reload(h, store).0;
    }
}

/// `audit_seq` is the highest seq ever appended: it survives reopens, is not lowered by
/// batches without audit records, and follows gaps in the sequence.
pub fn audit_seq_survives_reopen_and_never_goes_backwards(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    commit(
        &mut store,
        &append(
            &(1..=3)
                .map(|seq| sample_audit(seq, seq, "x"))
                .collect::<Vec<_>>(),
        ),
    );
    let (mut store, snapshot) = reload(h, store);
    assert_eq!(snapshot.audit_seq, 3);

    commit(&mut store, &[Mutation::PutLease(sample_lease(1, 1))]);
    let (mut store, snapshot) = reload(h, store);
    assert_eq!(
        snapshot.audit_seq, 3,
        "a batch without audit records keeps it"
    );

    commit(&mut store, &append(&[sample_audit(10, 10, "x")]));
    let (mut store, snapshot) = reload(h, store);
    assert_eq!(snapshot.audit_seq, 10);

    // A (buggy) lower seq appended later does not lower it.
    commit(&mut store, &append(&[sample_audit(7, 11, "x")]));
    let (mut store, snapshot) = reload(h, store);
    assert_eq!(
        snapshot.audit_seq, 10,
        "a lower seq must not lower audit_seq"
    );
    assert_eq!(seqs(&all(&mut store)), vec![1, 2, 3, 7, 10]);
}

/// Appending a seq that is already stored replaces that record (and its resource) in every
/// query; the audit high-water stays.
pub fn audit_rewritten_seq_is_replaced(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    let log: Vec<_> = (1..=5)
        .map(|seq| sample_audit(seq, 100 * seq, "a"))
        .collect();
    commit(&mut store, &append(&log));
    // Later than every record after it: a `since_ms` query must still find it.
    let rewritten = sample_audit(3, 10_000, "b");
    commit(&mut store, &append(std::slice::from_ref(&rewritten)));
    let (mut store, snapshot) = reload(h, store);
    assert_eq!(snapshot.audit_seq, 5);
    let mut model = log;
    model[2] = rewritten.clone();
    assert_eq!(all(&mut store), model);
    assert_eq!(
        seqs(&query(&mut store, &ask(Some("a"), None, None, 10))),
        vec![1, 2, 4, 5]
    );
    assert_eq!(
        query(&mut store, &ask(Some("b"), None, None, 10)),
        vec![rewritten]
    );
    for since in [0, 100, 101, 500, 501, 10_000, 10_001] {
        for resource in [None, Some("a"), Some("b")] {
            let q = ask(resource, Some(since), None, usize::MAX);
            assert_eq!(query(&mut store, &q), expected(&model, &q), "{q:?}");
        }
    }
    // And after more appends on top of the rewrite.
    let later: Vec<_> = (6..=8)
        .map(|seq| sample_audit(seq, 600 + seq, "b"))
        .collect();
    commit(&mut store, &append(&later));
    model.extend(later);
    for since in [0, 606, 607, 700, 10_000, 10_001] {
        let q = ask(None, Some(since), None, usize::MAX);
        assert_eq!(query(&mut store, &q), expected(&model, &q), "{q:?}");
    }
}

/// With a retention of 5, each commit deletes the oldest records beyond 5 — in every query,
/// per-resource ones included — while `audit_seq` keeps the highest seq.
pub fn audit_retention_deletes_the_oldest(h: &mut dyn Harness) {
    let mut store = h.fresh_with(StoreOptions {
        audit_retention: 5,
        ..StoreOptions::default()
    });
    assert_eq!(store.load().expect("load"), Snapshot::default());
    let mut log = Vec::new();
    let mut next = 1;
    for size in [1, 4, 7, 2, 0, 9] {
        let batch: Vec<_> = (next..next + size)
            .map(|seq| sample_audit(seq, 1_000 + seq, if seq % 2 == 0 { "even" } else { "odd" }))
            .collect();
        next += size;
        let mut mutations = append(&batch);
        mutations.push(Mutation::PutLease(sample_lease(next, next)));
        commit(&mut store, &mutations);
        log.extend(batch);
        let kept = &log[log.len().saturating_sub(5)..];
        assert_eq!(all(&mut store), kept, "after {} records", log.len());
        for resource in ["even", "odd"] {
            let q = ask(Some(resource), None, None, usize::MAX);
            assert_eq!(query(&mut store, &q), expected(kept, &q), "{resource}");
        }
    }
    let (mut store, snapshot) = reload(h, store);
    assert_eq!(snapshot.audit_seq, 23);
    assert_eq!(seqs(&all(&mut store)), vec![19, 20, 21, 22, 23]);

    // A batch without audit records leaves a full log alone.
    commit(&mut store, &[Mutation::FenceHighWater(100)]);
    assert_eq!(seqs(&all(&mut store)), vec![19, 20, 21, 22, 23]);
}

/// A retention of 0 keeps no record, but `audit_seq` still advances.
pub fn audit_retention_zero_keeps_nothing(h: &mut dyn Harness) {
    let mut store = h.fresh_with(StoreOptions {
        audit_retention: 0,
        ..StoreOptions::default()
    });
    assert_eq!(store.load().expect("load"), Snapshot::default());
    commit(
        &mut store,
        &append(
            &(1..=3)
                .map(|seq| sample_audit(seq, seq, "z"))
                .collect::<Vec<_>>(),
        ),
    );
    assert!(all(&mut store).is_empty());
    assert!(query(&mut store, &ask(Some("z"), None, None, 10)).is_empty());
    let (mut store, snapshot) = reload(h, store);
    assert_eq!(snapshot.audit_seq, 3);
    commit(&mut store, &append(&[sample_audit(4, 4, "z")]));
    let (mut store, snapshot) = reload(h, store);
    assert_eq!(snapshot.audit_seq, 4);
    assert!(all(&mut store).is_empty());
}

/// After the retention is lowered, the log shrinks to it within a few commits, always by
/// deleting the oldest records, and never below the retention.
pub fn audit_lowered_retention_catches_up(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    let log: Vec<_> = (1..=3_000)
        .map(|seq| sample_audit(seq, seq, if seq % 3 == 0 { "three" } else { "other" }))
        .collect();
    for chunk in log.chunks(500) {
        commit(&mut store, &append(chunk));
    }
    let mut store = h.reopen_with(
        store,
        StoreOptions {
            audit_retention: 100,
            ..StoreOptions::default()
        },
    );
    assert_eq!(store.load().expect("load").audit_seq, 3_000);
    assert_eq!(
        all(&mut store).len(),
        3_000,
        "opening alone deletes nothing"
    );

    let mut log = log;
    let mut converged = false;
    for round in 1..=10 {
        let seq = 3_000 + round;
        let record = sample_audit(seq, seq, "other");
        commit(&mut store, &append(std::slice::from_ref(&record)));
        log.push(record);
        let kept = all(&mut store);
        assert!(
            kept.len() >= 100,
            "round {round}: trimmed below the retention"
        );
        assert_eq!(
            kept,
            log[log.len() - kept.len()..],
            "round {round}: not the newest"
        );
        let q = ask(Some("three"), None, None, usize::MAX);
        assert_eq!(query(&mut store, &q), expected(&kept, &q), "round {round}");
        if kept.len() == 100 {
            converged = true;
            break;
        }
    }
    assert!(converged, "the log never shrank to the lowered retention");
    let (mut store, snapshot) = reload(h, store);
    assert_eq!(snapshot.audit_seq, log.last().map_or(0, |r| r.seq));
    assert_eq!(all(&mut store).len(), 100);
}
