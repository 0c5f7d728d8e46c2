//! What is specific to the embedded backend, beyond the conformance suite: its files, its
//! refusal to share a directory, and its reaction to damaged data.

mod common;

use std::fs;

use common::lease;
use locksmith_core::{LeaseId, Mutation};
use locksmith_store::{EmbeddedStore, Store, StoreError};
use redb::{Database, TableDefinition};

const LEASES: TableDefinition<u64, &[u8]> = TableDefinition::new("leases");

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

fn write_raw(dir: &std::path::Path, key: u64, bytes: &[u8]) {
    let db = Database::create(dir.join("locksmith.redb")).expect("create");
    let txn = db.begin_write().expect("begin");
    {
        let mut table = txn.open_table(LEASES).expect("table");
        table.insert(key, bytes).expect("insert");
    }
    txn.commit().expect("commit");
}
