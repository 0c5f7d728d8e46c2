//! Recovery from the write-ahead log, with log files written frame by frame the way a crash
//! leaves them. (The kill -9 test in `tests/crash.rs` covers the same path end to end.)

use std::path::{Path, PathBuf};

use locksmith_core::{FenceToken, LeaseId, LeaseRecord, Mutation, Owner};

use super::wal::{self, Segment};
use super::{EmbeddedStore, tables};
use crate::codec::encode_batch_into;
use crate::{AuditQuery, Store, StoreError};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn lease(id: u64, purpose: &str) -> LeaseRecord {
    LeaseRecord {
        lease: LeaseId(id),
        resource: format!("configs/{id}"),
        owner: Owner {
            node: "node-1".to_owned(),
            pid: 100,
            start_time: 7,
            boot_id: "boot".to_owned(),
            user: "ops".to_owned(),
            purpose: purpose.to_owned(),
            pid_ns: None,
        },
        token: FenceToken(id),
        ttl_ms: 15_000,
        slots: 1,
        granted_at_ms: 1_700_000_000_000,
        lock_delay_ms: 0,
    }
}

fn leases_in(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut store = EmbeddedStore::open(dir)?;
    Ok(store.load()?.leases.iter().map(|l| l.lease.0).collect())
}

/// A store holding lease 1, cleanly closed; returns the log sequence number redb has.
fn closed_store_with_lease_1(dir: &Path) -> Result<u64, Box<dyn std::error::Error>> {
    let mut store = EmbeddedStore::open(dir)?;
    store.commit(&[Mutation::PutLease(lease(1, "first"))])?;
    drop(store);
    assert!(
        wal::segments(dir)?.is_empty(),
        "a clean close leaves no log"
    );
    let (db, _) = tables::open_database(
        dir,
        &dir.join(EmbeddedStore::FILE_NAME),
        tables::Verify::IfUnclean,
    )?;
    Ok(tables::applied_seq(&db)?)
}

/// A log segment, as a process that died before redb had them leaves it: one frame per
/// `(seq, mutation)`. Returns its path and where each frame ends.
fn write_log(
    dir: &Path,
    generation: u64,
    frames: &[(u64, Mutation)],
) -> Result<(PathBuf, Vec<usize>), Box<dyn std::error::Error>> {
    let mut segment = Segment::create(&wal::Directory::open(dir)?, generation, 4096)?;
    let mut ends = Vec::new();
    let mut payload = Vec::new();
    for (seq, mutation) in frames {
        encode_batch_into(std::slice::from_ref(mutation), &mut payload)?;
        segment.append(*seq, &payload)?;
        ends.push(usize::try_from(segment.len())?);
    }
    Ok((segment.path().to_path_buf(), ends))
}

fn put(id: u64) -> Mutation {
    Mutation::PutLease(lease(id, "replayed"))
}

#[test]
fn acknowledged_batches_missing_from_the_database_are_replayed_at_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    let applied = closed_store_with_lease_1(dir.path())?;
    write_log(
        dir.path(),
        5,
        &[
            (applied + 1, put(2)),
            (applied + 2, Mutation::DeleteLease(LeaseId(1))),
        ],
    )?;

    assert_eq!(leases_in(dir.path())?, vec![2]);
    // Replayed into redb durably and deleted: a second open sees the same without a log.
    assert_eq!(leases_in(dir.path())?, vec![2]);
    assert!(wal::segments(dir.path())?.is_empty());
    Ok(())
}

/// 0.1.0 is unreleased: no log holds the JSON batches of the first versions, so a whole,
/// checksummed frame holding one is damage — the open refuses it, naming the frame, rather than
/// replaying a format nothing writes.
/// A record of the largest size a domain may write (16 MiB, a segment's default size) goes
/// through the log and into the database: appended, replayed from a log a crash left, and read
/// back whole beside a neighbour, after a clean close too.
#[test]
fn a_record_of_the_largest_size_is_appended_replayed_and_read_back() -> TestResult {
    let big = |fill: u8| Mutation::PutRecord {
        space: "configs".to_owned(),
        key: format!("big-{fill}"),
        value: vec![fill; locksmith_core::keyspace::MAX_RECORD_VALUE_LEN],
    };
    let dir = tempfile::tempdir()?;
    let applied = closed_store_with_lease_1(dir.path())?;
    write_log(dir.path(), 5, &[(applied + 1, big(1))])?;
    let mut store = EmbeddedStore::open(dir.path())?;
    store.load()?;
    store.commit(&[big(2), put(3)])?;
    drop(store);
    let mut store = EmbeddedStore::open(dir.path())?;
    assert_eq!(store.load()?.leases.len(), 2);
    let found = store.records("configs", "big-", None, 10)?;
    assert_eq!(found.len(), 2);
    for ((key, value), fill) in found.iter().zip(1u8..) {
        assert_eq!(key, &format!("big-{fill}"));
        assert!(value.len() == locksmith_core::keyspace::MAX_RECORD_VALUE_LEN);
        assert!(value.iter().all(|&b| b == fill), "{key} came back damaged");
    }
    Ok(())
}

#[test]
fn a_json_frame_in_the_log_is_corruption_not_replayed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let applied = closed_store_with_lease_1(dir.path())?;
    let mut segment = Segment::create(&wal::Directory::open(dir.path())?, 5, 4096)?;
    let json = br#"[{"DeleteLease":1}]"#;
    segment.append(applied + 1, json)?;
    drop(segment);

    match EmbeddedStore::open(dir.path()) {
        Err(StoreError::Corrupt(what)) => {
            assert!(what.contains(&format!("frame {}", applied + 1)), "{what}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    Ok(())
}

#[test]
fn a_torn_last_frame_is_dropped_and_the_frames_before_it_kept() -> TestResult {
    let dir = tempfile::tempdir()?;
    let applied = closed_store_with_lease_1(dir.path())?;
    let (path, ends) = write_log(
        dir.path(),
        0,
        &[(applied + 1, put(2)), (applied + 2, put(3))],
    )?;
    let bytes = std::fs::read(&path)?;
    std::fs::write(&path, &bytes[..ends[0] + 20])?;

    assert_eq!(leases_in(dir.path())?, vec![1, 2]);
    // The next commit continues after the last good frame and survives a reopen.
    let mut store = EmbeddedStore::open(dir.path())?;
    store.commit(&[Mutation::PutLease(lease(4, "z"))])?;
    drop(store);
    assert_eq!(leases_in(dir.path())?, vec![1, 2, 4]);
    Ok(())
}

#[test]
fn a_damaged_frame_in_a_sealed_segment_is_corruption() -> TestResult {
    let dir = tempfile::tempdir()?;
    let applied = closed_store_with_lease_1(dir.path())?;
    let (old_path, ends) = write_log(dir.path(), 1, &[(applied + 1, put(2))])?;
    write_log(dir.path(), 2, &[(applied + 2, put(3))])?;
    let mut bytes = std::fs::read(&old_path)?;
    bytes[ends[0] - 2] ^= 0x40;
    std::fs::write(&old_path, &bytes)?;

    match EmbeddedStore::open(dir.path()) {
        Err(StoreError::Corrupt(message)) => assert!(message.contains("sealed"), "{message}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Nothing was deleted: the evidence stays for an operator.
    assert_eq!(wal::segments(dir.path())?.len(), 2);
    Ok(())
}

#[test]
fn frames_the_database_already_has_are_not_replayed_again() -> TestResult {
    let dir = tempfile::tempdir()?;
    let applied = closed_store_with_lease_1(dir.path())?;
    // An old frame (already applied, its segment not yet deleted when the process died).
    write_log(
        dir.path(),
        0,
        &[
            (applied, Mutation::DeleteLease(LeaseId(1))),
            (applied + 1, put(2)),
        ],
    )?;
    assert_eq!(leases_in(dir.path())?, vec![1, 2]);
    Ok(())
}

#[test]
fn a_gap_in_the_log_is_corruption() -> TestResult {
    let dir = tempfile::tempdir()?;
    let applied = closed_store_with_lease_1(dir.path())?;
    write_log(
        dir.path(),
        0,
        &[(applied + 1, put(2)), (applied + 3, put(3))],
    )?;
    assert!(matches!(
        EmbeddedStore::open(dir.path()),
        Err(StoreError::Corrupt(_))
    ));
    Ok(())
}

#[test]
fn the_log_rotates_and_sealed_segments_are_deleted_after_a_checkpoint() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = EmbeddedStore::open(dir.path())?;
    let padding = "p".repeat(1_000);
    let per_batch = 50u64;
    let mut id = 0;
    // Enough batches for two segments.
    let batches = (EmbeddedStore::SEGMENT_BYTES / (per_batch * 1_000)) * 2 + 1;
    for _ in 0..batches {
        let batch: Vec<Mutation> = (0..per_batch)
            .map(|_| {
                id += 1;
                Mutation::PutLease(lease(id, &padding))
            })
            .collect();
        store.commit(&batch)?;
    }
    // A query waits for the apply thread; the deletion follows its checkpoint.
    store.audit(&AuditQuery::recent(1))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while wal::segments(dir.path())?.len() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "sealed segments were never deleted: {:?}",
            wal::segments(dir.path())?
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(wal::segments(dir.path())?[0].generation >= 2);
    drop(store);
    assert!(wal::segments(dir.path())?.is_empty());
    let loaded = leases_in(dir.path())?;
    assert_eq!(loaded.len() as u64, id);
    Ok(())
}

#[test]
fn a_lease_granted_and_released_within_one_pass_is_skipped_but_raises_the_fence() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (db, _) = tables::open_database(
        dir.path(),
        &dir.path().join(EmbeddedStore::FILE_NAME),
        tables::Verify::IfUnclean,
    )?;
    let mut renewed = lease(3, "rewritten");
    renewed.ttl_ms = 60_000;
    let batches = vec![
        (1, vec![put(1), put(2)]),
        (2, vec![Mutation::DeleteLease(LeaseId(1)), put(3)]),
        // Lease 9 never outlives the pass; lease 3 is written twice, the last write wins.
        (3, vec![put(9), Mutation::DeleteLease(LeaseId(9))]),
        (4, vec![Mutation::PutLease(renewed)]),
    ];
    let mut payloads = Vec::new();
    for (seq, batch) in batches {
        let mut payload = Vec::new();
        encode_batch_into(&batch, &mut payload)?;
        payloads.push((seq, payload));
    }
    tables::apply(&db, &payloads, redb::Durability::Immediate, 100)?;
    let snapshot = tables::load(&db)?;
    let mut ids: Vec<u64> = snapshot.leases.iter().map(|l| l.lease.0).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![2, 3]);
    let three = snapshot
        .leases
        .iter()
        .find(|l| l.lease.0 == 3)
        .ok_or("lease 3 missing")?;
    assert_eq!(
        three.ttl_ms, 60_000,
        "the last write of a lease is the one kept"
    );
    assert_eq!(
        snapshot.fence_high_water, 9,
        "a skipped grant still raised the fence"
    );
    assert_eq!(tables::applied_seq(&db)?, 4);
    Ok(())
}

/// A store with the smallest segments, so that a few dozen commits fill one.
fn small_segments(dir: &Path) -> Result<EmbeddedStore, StoreError> {
    EmbeddedStore::open_with(
        dir,
        crate::StoreOptions {
            log_segment_bytes: EmbeddedStore::MIN_SEGMENT_BYTES,
            ..crate::StoreOptions::default()
        },
    )
}

/// Commits one lease (of about 2 KiB) a batch until the current segment is full; returns the
/// ids committed. The last commit is the one that switches segments.
fn fill_segment(store: &mut EmbeddedStore, first: u64) -> Result<Vec<u64>, StoreError> {
    let padding = "p".repeat(2_000);
    let mut ids = Vec::new();
    let mut id = first;
    loop {
        store.commit(&[Mutation::PutLease(lease(id, &padding))])?;
        ids.push(id);
        id += 1;
        let full = store
            .segment
            .as_ref()
            .is_none_or(|s| s.len() >= store.segment_bytes);
        if full || ids.len() > 1_000 {
            return Ok(ids);
        }
    }
}

/// Bug pinned (issue 15, item 4b): a batch durable in the log was answered as failed when the
/// switch to the next segment failed after its append, and its lease came back at the next
/// start — held by a client told it failed. The append is what makes a batch durable: that
/// commit is answered `Ok`, the failure is reported by `failure()` and refuses the next one.
#[test]
fn a_commit_whose_segment_switch_fails_after_the_append_is_durable_and_answered_ok() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = small_segments(dir.path())?;
    // The next segment is made ahead; take its file away, so that switching to it fails.
    store.next_segment.wait_exited();
    let next = wal::prepared_path(dir.path(), store.next_segment.generation());
    std::fs::remove_file(&next)?;

    let committed = fill_segment(&mut store, 1)?;
    let failure = store.failure().ok_or("the failed switch is reported")?;
    assert!(
        failure
            .to_string()
            .contains("switch to the next log segment"),
        "{failure}"
    );
    match store.commit(&[put(5_000)]) {
        Err(StoreError::Failed(cause)) => assert!(cause.contains("switch"), "{cause}"),
        other => panic!("the next commit must be refused unwritten, got {other:?}"),
    }
    drop(store);
    let mut loaded = leases_in(dir.path())?;
    loaded.sort_unstable();
    assert_eq!(
        loaded, committed,
        "every commit answered Ok is there, and only those"
    );
    Ok(())
}

/// Bug pinned (issue 15, item 5): a failure to prepare the next segment (the process out of
/// file descriptors, here a directory in the file's way) failed the store for good at the
/// switch. Now the log goes on in the full segment and switches once a retry succeeds.
#[test]
fn a_failed_preparation_of_the_next_segment_is_retried_and_fails_no_commit() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = small_segments(dir.path())?;
    store.next_segment.wait_exited();
    let generation = store.next_segment.generation();
    // Replace the prepared segment with something it cannot be made over, and have it made
    // again: every try fails until the obstacle goes.
    let next = wal::prepared_path(dir.path(), generation);
    std::fs::remove_file(&next)?;
    std::fs::create_dir(&next)?;
    store.next_segment = super::Preparer::start(dir.path(), generation, store.segment_bytes);

    let mut committed = fill_segment(&mut store, 1)?;
    // Past the segment's size, still in it.
    committed.extend(fill_segment(&mut store, 10_000)?);
    assert!(store.failure().is_none(), "{:?}", store.failure());
    assert_eq!(wal::segments(dir.path())?.len(), 1, "no switch yet");

    std::fs::remove_dir(&next)?;
    store.next_segment.wait_exited();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut id = 20_000;
    while wal::segments(dir.path())?
        .iter()
        .all(|s| s.generation != generation)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the log never moved to the retried segment"
        );
        store.commit(&[put(id)])?;
        committed.push(id);
        id += 1;
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(store.failure().is_none(), "{:?}", store.failure());
    drop(store);
    let mut loaded = leases_in(dir.path())?;
    loaded.sort_unstable();
    committed.sort_unstable();
    assert_eq!(loaded, committed);
    Ok(())
}
