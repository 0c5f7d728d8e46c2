//! What is specific to the embedded backend, beyond the conformance suite: its files, its
//! refusal to share a directory, and its reaction to damaged data.

mod common;

use std::fs;

use common::lease;
use locksmith_core::{AuditKind, AuditRecord, LeaseId, Mutation};
use locksmith_store::{AuditQuery, EmbeddedStore, Store, StoreError, StoreOptions};
use redb::{Database, ReadableDatabase, TableDefinition};

const LEASES: TableDefinition<u64, &[u8]> = TableDefinition::new("leases");
const HOLDS: TableDefinition<u64, &[u8]> = TableDefinition::new("holds");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const AUDIT_BY_RESOURCE: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("audit_by_resource");
const AUDIT_TIME: TableDefinition<u64, (u64, u64)> = TableDefinition::new("audit_time");

fn audit(seq: u64, resource: &str) -> AuditRecord {
    let mut record = AuditRecord::new(resource, AuditKind::Granted);
    record.seq = seq;
    record.at_ms = 1_000 + seq;
    record
}

#[test]
fn open_creates_the_directory_and_file() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("nested/locksmith-data");
    let mut store = EmbeddedStore::open(&dir).expect("open");
    assert!(dir.join("locksmith.redb").is_file());
    assert_eq!(store.describe(), format!("embedded:{}", dir.display()));
    assert_eq!(store.dir(), dir);
    assert_eq!(store.load().expect("load"), Default::default());
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = EmbeddedStore::open(dir.path()).expect("open");
    match EmbeddedStore::open(dir.path()) {
        Err(StoreError::Open { reason, .. }) => assert!(reason.contains("in use"), "{reason}"),
        other => panic!("expected Open error, got {other:?}"),
    }
}

#[test]
fn a_directory_path_that_is_a_file_is_an_open_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"x").expect("write");
    assert!(matches!(
        EmbeddedStore::open(&file),
        Err(StoreError::Open { .. })
    ));
}

#[test]
fn a_file_that_is_not_a_database_is_refused_without_panicking() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("locksmith.redb"), vec![0xA5; 64 * 1024]).expect("write");
    let result = EmbeddedStore::open(dir.path());
    assert!(
        matches!(
            result,
            Err(StoreError::Open { .. } | StoreError::Corrupt(_))
        ),
        "{result:?}"
    );
}

#[test]
fn an_undecodable_record_loads_as_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_raw(dir.path(), 7, b"{not json");
    let mut store = EmbeddedStore::open(dir.path()).expect("open");
    match store.load() {
        Err(StoreError::Corrupt(reason)) => assert!(reason.contains("lease 7"), "{reason}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_record_under_the_wrong_key_loads_as_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = serde_json::to_vec(&lease(8, "misfiled")).expect("encode");
    write_raw(dir.path(), 9, &bytes);
    let mut store = EmbeddedStore::open(dir.path()).expect("open");
    assert!(matches!(store.load(), Err(StoreError::Corrupt(_))));
}

/// The fence survives the deletion of the lease that carried it, even when the caller never
/// wrote `FenceHighWater`: a put raises the stored high-water by itself.
#[test]
fn a_deleted_lease_still_holds_the_fence_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = EmbeddedStore::open(dir.path()).expect("open");
    store.load().expect("load");
    let mut record = lease(50, "gone soon");
    record.token.0 = 60;
    store
        .commit(&[Mutation::PutLease(record)])
        .expect("commit put");
    store
        .commit(&[Mutation::DeleteLease(LeaseId(50))])
        .expect("commit delete");
    drop(store);

    let mut store = EmbeddedStore::open(dir.path()).expect("reopen");
    let snapshot = store.load().expect("load");
    assert!(snapshot.leases.is_empty());
    assert_eq!(snapshot.fence_high_water, 60);
}

#[test]
fn an_undecodable_hold_loads_as_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_raw_in(dir.path(), HOLDS, 3, b"[]");
    let mut store = EmbeddedStore::open(dir.path()).expect("open");
    match store.load() {
        Err(StoreError::Corrupt(reason)) => assert!(reason.contains("hold 3"), "{reason}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn open_with_keeps_its_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions {
        audit_retention: 7,
        ..StoreOptions::default()
    };
    let store = EmbeddedStore::open_with(dir.path(), options).expect("open");
    assert_eq!(store.options(), options);
    assert_eq!(
        EmbeddedStore::open(tempfile::tempdir().expect("tempdir").path())
            .expect("open")
            .options()
            .audit_retention,
        1_000_000
    );
}

/// An undecodable audit record fails the queries that reach it, but never a commit: retention
/// still deletes it, and the index entry it leaves behind is skipped.
#[test]
fn an_undecodable_audit_record_is_trimmed_without_failing_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_raw_in(dir.path(), AUDIT, 1, b"{not json");
    {
        let db = Database::create(dir.path().join("locksmith.redb")).expect("create");
        let txn = db.begin_write().expect("begin");
        txn.open_table(AUDIT_BY_RESOURCE)
            .expect("table")
            .insert(("x", 1), ())
            .expect("insert");
        txn.open_table(AUDIT_TIME)
            .expect("table")
            .insert(1, (1_001, 1_001))
            .expect("insert");
        txn.commit().expect("commit");
    }
    let options = StoreOptions {
        audit_retention: 2,
        ..StoreOptions::default()
    };
    let mut store = EmbeddedStore::open_with(dir.path(), options).expect("open");
    assert_eq!(store.load().expect("load").audit_seq, 1);
    match store.audit(&AuditQuery::default()) {
        Err(StoreError::Corrupt(reason)) => assert!(reason.contains("audit record 1"), "{reason}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Newest-first with a limit never reaches it.
    store
        .commit(&[Mutation::AppendAudit(audit(2, "x"))])
        .expect("commit");
    assert_eq!(
        store.audit(&AuditQuery::recent(1)).expect("query"),
        vec![audit(2, "x")]
    );
    store
        .commit(&[Mutation::AppendAudit(audit(3, "x"))])
        .expect("a commit that trims the undecodable record succeeds");
    let x = AuditQuery {
        resource: Some("x".to_owned()),
        ..AuditQuery::default()
    };
    assert_eq!(
        store.audit(&x).expect("query"),
        vec![audit(2, "x"), audit(3, "x")]
    );
    assert_eq!(store.audit(&AuditQuery::default()).expect("query").len(), 2);
}

/// A store file without the later tables (only `leases`: no holds, audit log or records yet)
/// loads, and answers queries and record reads with nothing.
#[test]
fn a_store_without_the_new_tables_loads_and_answers_queries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = locksmith_store::codec::encode_lease(&lease(4, "old")).expect("encode");
    write_raw(dir.path(), 4, &bytes);
    let mut store = EmbeddedStore::open(dir.path()).expect("open");
    let snapshot = store.load().expect("load");
    assert_eq!(snapshot.leases, vec![lease(4, "old")]);
    assert!(snapshot.holds.is_empty());
    assert_eq!(snapshot.audit_seq, 0);
    assert!(
        store
            .audit(&AuditQuery::default())
            .expect("query")
            .is_empty()
    );
    let by_resource = AuditQuery {
        resource: Some("x".to_owned()),
        ..AuditQuery::default()
    };
    assert!(store.audit(&by_resource).expect("query").is_empty());
    assert_eq!(store.record("configs", "a").expect("read"), None);
    assert!(
        store
            .records("configs", "", None, 10)
            .expect("scan")
            .is_empty()
    );
}

fn write_raw(dir: &std::path::Path, key: u64, bytes: &[u8]) {
    write_raw_in(dir, LEASES, key, bytes);
}

fn write_raw_in(dir: &std::path::Path, table: TableDefinition<u64, &[u8]>, key: u64, bytes: &[u8]) {
    let db = Database::create(dir.join("locksmith.redb")).expect("create");
    let txn = db.begin_write().expect("begin");
    {
        let mut table = txn.open_table(table).expect("table");
        table.insert(key, bytes).expect("insert");
    }
    txn.commit().expect("commit");
}

/// A cleanly closed file is not verified page by page at open (that is what made boot slow),
/// so damage done to it outside redb must still come out as `Corrupt` — at open or at load,
/// never as a panic — and the explicit check finds it.
#[test]
fn a_file_damaged_after_a_clean_close_reads_as_corrupt_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut store = EmbeddedStore::open(dir.path()).expect("open");
        for id in 1..=2_000 {
            store
                .commit(&[Mutation::PutLease(lease(id, "to be damaged"))])
                .expect("commit");
        }
    }
    EmbeddedStore::check(dir.path()).expect("an undamaged file checks clean");
    let path = dir.path().join("locksmith.redb");
    let pristine = fs::read(&path).expect("read");
    let mut corrupt_at_boot = 0;
    for tenth in 1..10 {
        let mut bytes = pristine.clone();
        let page = (bytes.len() * tenth / 10) & !4095;
        for byte in &mut bytes[page..page + 4096] {
            *byte ^= 0x5A;
        }
        fs::write(&path, &bytes).expect("write");
        let booted = EmbeddedStore::open(dir.path()).and_then(|mut store| store.load());
        match booted {
            // The damage hit pages boot does not read (the audit tables, free pages).
            Ok(snapshot) => assert_eq!(snapshot.leases.len(), 2_000),
            Err(StoreError::Corrupt(_)) => {
                corrupt_at_boot += 1;
                assert!(
                    matches!(
                        EmbeddedStore::check(dir.path()),
                        Err(StoreError::Corrupt(_))
                    ),
                    "the check misses damage boot found at {page}"
                );
            }
            Err(other) => panic!("damage at {page}: expected Corrupt, got {other:?}"),
        }
    }
    assert!(corrupt_at_boot > 0, "no damage reached the leases");
}

#[test]
fn the_check_of_a_missing_database_is_an_open_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        EmbeddedStore::check(dir.path()),
        Err(StoreError::Open { .. })
    ));
}

/// Leases are stored in the binary form. 0.1.0 is unreleased, so no directory holds the JSON
/// leases of the first versions: one found is damage, and the load fails naming it rather
/// than reading a format nothing writes.
#[test]
fn leases_are_binary_and_a_json_lease_is_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut store = EmbeddedStore::open(dir.path()).expect("open");
        store
            .commit(&[Mutation::PutLease(lease(1, "new"))])
            .expect("commit");
    }
    {
        let db = Database::create(dir.path().join("locksmith.redb")).expect("open");
        let txn = db.begin_read().expect("begin");
        let leases = txn.open_table(LEASES).expect("table");
        let new = leases.get(1).expect("get").expect("lease 1");
        assert_eq!(new.value()[0], 2, "lease 1 is in binary form, version 2");
    }
    let old = serde_json::to_vec(&lease(2, "old")).expect("encode");
    write_raw(dir.path(), 2, &old);
    let mut store = EmbeddedStore::open(dir.path()).expect("open");
    match store.load() {
        Err(StoreError::Corrupt(what)) => assert!(what.contains("lease 2"), "{what}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
