//! Checks for the generic layer a domain builds on: records under `(space, key)` — put,
//! replace, delete, atomic with the lock table's mutations, durable, scanned by prefix in key
//! order — the limits a store enforces, and domain events in the one audit log.

use std::collections::BTreeMap;

use locksmith_core::keyspace::{MAX_RECORD_KEY_LEN, MAX_RECORD_VALUE_LEN};
use locksmith_core::{AuditKind, AuditRecord, DomainEvent, Mutation};

use super::audit::Lcg;
use super::checks::{commit, fresh_loaded, reload};
use super::{Harness, sample_audit, sample_lease};
use crate::{AuditQuery, Store, StoreError};

fn put(space: &str, key: &str, value: &[u8]) -> Mutation {
    Mutation::PutRecord {
        space: space.to_owned(),
        key: key.to_owned(),
        value: value.to_vec(),
    }
}

fn delete(space: &str, key: &str) -> Mutation {
    Mutation::DeleteRecord {
        space: space.to_owned(),
        key: key.to_owned(),
    }
}

fn get(store: &mut Box<dyn Store>, space: &str, key: &str) -> Option<Vec<u8>> {
    store
        .record(space, key)
        .unwrap_or_else(|e| panic!("read of record {space}/{key} failed: {e}"))
}

fn scan(
    store: &mut Box<dyn Store>,
    space: &str,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Vec<(String, Vec<u8>)> {
    store
        .records(space, prefix, after, limit)
        .unwrap_or_else(|e| panic!("scan of {space}/{prefix}* after {after:?} failed: {e}"))
}

fn owned(records: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    records
        .iter()
        .map(|(key, value)| ((*key).to_owned(), value.to_vec()))
        .collect()
}

/// A put stores the value byte for byte, a second put replaces it, a delete removes it (a
/// missing record is a no-op), and each space is its own keyspace — read at once, and after a
/// reopen.
pub fn records_put_replace_delete(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    let binary: Vec<u8> = (0..=255).collect();
    commit(
        &mut store,
        &[
            put("configs", "fleet/app.conf", b"v1"),
            put("configs", "fleet/db.conf", &binary),
            put("agents", "fleet/app.conf", b"another space"),
            put("configs", "empty", b""),
        ],
    );
    assert_eq!(
        get(&mut store, "configs", "fleet/app.conf"),
        Some(b"v1".to_vec())
    );
    commit(
        &mut store,
        &[
            put("configs", "fleet/app.conf", b"v2"),
            delete("configs", "fleet/db.conf"),
            delete("configs", "never/written"),
            delete("rollouts", "fleet/app.conf"),
        ],
    );
    let (mut store, _) = reload(h, store);
    assert_eq!(
        get(&mut store, "configs", "fleet/app.conf"),
        Some(b"v2".to_vec())
    );
    assert_eq!(get(&mut store, "configs", "fleet/db.conf"), None);
    assert_eq!(get(&mut store, "configs", "empty"), Some(Vec::new()));
    assert_eq!(
        get(&mut store, "agents", "fleet/app.conf"),
        Some(b"another space".to_vec())
    );
    assert_eq!(get(&mut store, "rollouts", "fleet/app.conf"), None);
    assert_eq!(
        scan(&mut store, "configs", "", None, 10),
        owned(&[("empty", b""), ("fleet/app.conf", b"v2")])
    );
    // Writing back what was read, and a delete of it, round-trip too.
    commit(&mut store, &[put("configs", "fleet/db.conf", &binary)]);
    let (mut store, _) = reload(h, store);
    assert_eq!(get(&mut store, "configs", "fleet/db.conf"), Some(binary));
}

/// Records ride in the same batches as the lock table's mutations: within one batch the later
/// mutation of a record wins, a mixed batch applies whole, and a batch refused for one bad
/// record writes none of its lease, audit or record mutations.
pub fn records_are_atomic_with_leases(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    commit(
        &mut store,
        &[
            put("configs", "a", b"put then delete"),
            delete("configs", "a"),
            delete("configs", "b"),
            put("configs", "b", b"delete then put"),
            put("configs", "c", b"first"),
            put("configs", "c", b"second"),
            Mutation::PutLease(sample_lease(1, 1)),
            Mutation::AppendAudit(sample_audit(1, 1_000, "configs/c")),
            Mutation::FenceHighWater(1),
        ],
    );
    let refused = store.commit(&[
        Mutation::PutLease(sample_lease(2, 2)),
        Mutation::AppendAudit(sample_audit(2, 2_000, "configs/c")),
        put("configs", "c", b"never"),
        put("configs", "d", b"never"),
        put("Configs", "d", b"a bad space fails the whole batch"),
        Mutation::FenceHighWater(2),
    ]);
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "a batch with a bad record must be refused as Invalid, got {refused:?}"
    );
    let (mut store, snapshot) = reload(h, store);
    assert_eq!(snapshot.leases, vec![sample_lease(1, 1)]);
    assert_eq!(snapshot.fence_high_water, 1);
    assert_eq!(snapshot.audit_seq, 1);
    assert_eq!(
        scan(&mut store, "configs", "", None, 10),
        owned(&[("b", b"delete then put"), ("c", b"second")])
    );
}

/// Records survive several close/reopen cycles, with writes in between, and a reopen with no
/// writes changes nothing.
pub fn records_survive_reopens(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    commit(
        &mut store,
        &[put("agents", "node-1", b"1"), put("agents", "node-2", b"2")],
    );
    let (mut store, _) = reload(h, store);
    commit(
        &mut store,
        &[delete("agents", "node-1"), put("agents", "node-3", b"3")],
    );
    let (store, _) = reload(h, store);
    let (mut store, _) = reload(h, store);
    assert_eq!(
        scan(&mut store, "agents", "", None, 10),
        owned(&[("node-2", b"2"), ("node-3", b"3")])
    );
}

/// A scan returns the records of one space whose keys start with the prefix, after `after`, at
/// most `limit`, in ascending byte order of the keys — and paging by the last key returned
/// walks a space exactly once. Neighbouring spaces (`a`, `ab`) and keys (`x`, `x/`, `x0`) never
/// leak into each other.
pub fn records_prefix_scan_and_paging(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    let keys = [
        "x",
        "x/",
        "x/1",
        "x/10",
        "x/2",
        "x0",
        "xa",
        "y",
        "é",
        "ключ/1",
        "ключ/2",
        "🔒",
    ];
    let mut batch: Vec<_> = keys.iter().map(|k| put("a", k, k.as_bytes())).collect();
    batch.extend(keys.iter().map(|k| put("ab", k, b"other space")));
    batch.push(put("b", "x/1", b"other space"));
    commit(&mut store, &batch);
    let (mut store, _) = reload(h, store);

    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort_unstable(); // `str` order is byte order
    let want = |pred: &dyn Fn(&str) -> bool| -> Vec<(String, Vec<u8>)> {
        sorted
            .iter()
            .filter(|k| pred(k))
            .map(|k| ((*k).to_owned(), k.as_bytes().to_vec()))
            .collect()
    };
    assert_eq!(scan(&mut store, "a", "", None, 100), want(&|_| true));
    assert_eq!(
        scan(&mut store, "a", "x/", None, 100),
        want(&|k| k.starts_with("x/"))
    );
    assert_eq!(
        scan(&mut store, "a", "x", None, 100),
        want(&|k| k.starts_with('x'))
    );
    assert_eq!(
        scan(&mut store, "a", "ключ/", None, 100),
        want(&|k| k.starts_with("ключ/"))
    );
    assert_eq!(
        scan(&mut store, "a", "x/1", Some("x/1"), 100),
        want(&|k| k == "x/10")
    );
    assert_eq!(
        scan(&mut store, "a", "x/", Some("a"), 100),
        want(&|k| k.starts_with("x/"))
    );
    assert_eq!(scan(&mut store, "a", "x/", Some("x0"), 100), Vec::new());
    assert_eq!(scan(&mut store, "a", "", None, 0), Vec::new());
    assert_eq!(scan(&mut store, "a", "nothing", None, 10), Vec::new());
    assert_eq!(scan(&mut store, "c", "", None, 10), Vec::new());
    assert_eq!(
        scan(&mut store, "a", "", None, 3),
        want(&|_| true)[..3].to_vec()
    );

    for limit in [1, 2, 5] {
        let mut paged = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = scan(&mut store, "a", "", after.as_deref(), limit);
            assert!(page.len() <= limit);
            let done = page.len() < limit;
            after = page.last().map(|(k, _)| k.clone()).or(after);
            paged.extend(page);
            if done {
                break;
            }
        }
        assert_eq!(paged, want(&|_| true), "paging by {limit}");
    }
}

/// Scans and reads match a model (a sorted map per space) over a random history of puts and
/// deletes in uneven batches, for every prefix, `after` and `limit` combination tried.
pub fn records_match_a_model(h: &mut dyn Harness) {
    const ALPHABET: &[&str] = &["a", "b", "/", "ä"];
    let mut rng = Lcg(0x7ec0);
    let key = |rng: &mut Lcg| -> String {
        let len = 1 + rng.next() % 3;
        (0..len)
            .map(|_| ALPHABET[(rng.next() % ALPHABET.len() as u64) as usize])
            .collect()
    };
    let mut store = fresh_loaded(h);
    let mut model: BTreeMap<(&str, String), Vec<u8>> = BTreeMap::new();
    for round in 0..30u64 {
        let size = 1 + rng.next() % 12;
        let mut batch = Vec::new();
        for i in 0..size {
            let space = if rng.next() % 4 == 0 { "s2" } else { "s1" };
            let k = key(&mut rng);
            if rng.next() % 3 == 0 {
                batch.push(delete(space, &k));
                model.remove(&(space, k));
            } else {
                let value = format!("{round}.{i}").into_bytes();
                batch.push(put(space, &k, &value));
                model.insert((space, k), value);
            }
        }
        commit(&mut store, &batch);
    }
    let (mut store, _) = reload(h, store);
    let prefixes = ["", "a", "ab", "/", "ä", "b/", "zz"];
    let afters = [
        None,
        Some("a"),
        Some("a/"),
        Some("b"),
        Some("ä"),
        Some("ää"),
    ];
    for space in ["s1", "s2"] {
        for prefix in prefixes {
            for after in afters {
                for limit in [1, 3, 100] {
                    let want: Vec<(String, Vec<u8>)> = model
                        .iter()
                        .filter(|((s, k), _)| {
                            *s == space
                                && k.starts_with(prefix)
                                && after.is_none_or(|a| k.as_str() > a)
                        })
                        .take(limit)
                        .map(|((_, k), v)| (k.clone(), v.clone()))
                        .collect();
                    assert_eq!(
                        scan(&mut store, space, prefix, after, limit),
                        want,
                        "{space}: prefix {prefix:?}, after {after:?}, limit {limit}"
                    );
                }
            }
        }
        for k in ["a", "ab", "a/ä", "b", "zz"] {
            assert_eq!(
                get(&mut store, space, k),
                model.get(&(space, k.to_owned())).cloned(),
                "{space}/{k}"
            );
        }
    }
}

/// A record at the limits is taken; one past them (a bad space name, an empty or over-long key,
/// a value over 16 MiB) is refused as [`StoreError::Invalid`] before anything of its batch is
/// written, and the store keeps working.
pub fn records_limits_are_refused_cleanly(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    let longest_key = "k".repeat(MAX_RECORD_KEY_LEN);
    let longest_space = "s".repeat(32);
    let config = vec![0xC5; 1024 * 1024];
    commit(
        &mut store,
        &[
            put(&longest_space, &longest_key, b"at the limits"),
            put("configs", "big", &config),
        ],
    );
    let too_long_key = "k".repeat(MAX_RECORD_KEY_LEN + 1);
    let too_big = vec![0; MAX_RECORD_VALUE_LEN + 1];
    let bad = [
        put("", "k", b"no space"),
        put("Configs", "k", b"uppercase"),
        put("con/figs", "k", b"a slash would collide on etcd"),
        put(&"s".repeat(33), "k", b"too long a space"),
        put("configs", "", b"empty key"),
        put("configs", &too_long_key, b"too long a key"),
        delete("configs", ""),
        delete("a-b", "k"),
        put("configs", "huge", &too_big),
    ];
    for mutation in bad {
        let what = match &mutation {
            Mutation::PutRecord { space, key, value } => {
                format!(
                    "put {space:?}/{} bytes of key, {} of value",
                    key.len(),
                    value.len()
                )
            }
            other => format!("{other:?}"),
        };
        let answer = store.commit(&[Mutation::PutLease(sample_lease(9, 9)), mutation]);
        assert!(
            matches!(answer, Err(StoreError::Invalid(_))),
            "{what}: expected Invalid, got {answer:?}"
        );
    }
    // Still working: a later commit lands.
    commit(&mut store, &[put("configs", "after", b"still writable")]);
    let (mut store, snapshot) = reload(h, store);
    assert!(
        snapshot.leases.is_empty(),
        "a refused batch wrote its lease"
    );
    assert_eq!(
        get(&mut store, &longest_space, &longest_key),
        Some(b"at the limits".to_vec())
    );
    assert_eq!(get(&mut store, "configs", "big"), Some(config));
    assert_eq!(
        get(&mut store, "configs", "after"),
        Some(b"still writable".to_vec())
    );
    assert_eq!(get(&mut store, "configs", "huge"), None);
}

/// A domain's audit events share the one log and its seqs with the lock table's, come back
/// exactly (kind, detail and the common fields), and are found by resource.
pub fn domain_audit_events_round_trip(h: &mut dyn Harness) {
    let mut store = fresh_loaded(h);
    let event = |seq: u64, resource: &str, kind: &str, detail: serde_json::Value| {
        let event = DomainEvent::new(kind, detail).expect("a valid domain kind");
        let mut record = AuditRecord::new(resource, AuditKind::Domain(event));
        record.seq = seq;
        record.at_ms = 1_700_000_000_000 + seq;
        record
    };
    let mut written = event(
        2,
        "fleet/app.conf",
        "config_written",
        serde_json::json!({"revision": 7, "sha256": "ab12", "note": "ünïcode ✓", "big": u64::MAX}),
    );
    written.operator = Some("alice".to_owned());
    written.reason = Some("raise the pool size".to_owned());
    let records = vec![
        sample_audit(1, 1_700_000_000_001, "fleet/app.conf"),
        written,
        event(
            3,
            "fleet/db.conf",
            "config_written",
            serde_json::json!({"revision": 1}),
        ),
        event(4, "wave-1", "rollout_started", serde_json::Value::Null),
        sample_audit(5, 1_700_000_000_005, "fleet/app.conf"),
        event(
            6,
            "fleet/app.conf",
            "config_rolled_back",
            serde_json::json!([1, "two", null]),
        ),
    ];
    let mut batch: Vec<_> = records.iter().cloned().map(Mutation::AppendAudit).collect();
    batch.push(put("configs", "fleet/app.conf@7", b"pool = 8"));
    commit(&mut store, &batch);
    let (mut store, snapshot) = reload(h, store);
    assert_eq!(snapshot.audit_seq, 6);
    let everything = store.audit(&AuditQuery::default()).expect("audit query");
    assert_eq!(everything, records);
    let app = store
        .audit(&AuditQuery {
            resource: Some("fleet/app.conf".to_owned()),
            ..AuditQuery::default()
        })
        .expect("audit query by resource");
    let want: Vec<_> = records
        .iter()
        .filter(|r| r.resource == "fleet/app.conf")
        .cloned()
        .collect();
    assert_eq!(app, want);
    assert_eq!(
        app.iter().map(AuditRecord::label).collect::<Vec<_>>(),
        [
            records[0].label(),
            "config_written",
            records[4].label(),
            "config_rolled_back"
        ]
    );
    let rollout = store
        .audit(&AuditQuery {
            resource: Some("wave-1".to_owned()),
            ..AuditQuery::default()
        })
        .expect("audit query by resource");
    assert_eq!(rollout, [records[3].clone()]);
}

/// Thousands of records under one prefix, as a domain keeps them (the config store: one
/// revision record per `NAME/REV`, 100 revisions × many configs; one blob per SHA-256 of up to
/// a megabyte), paged through the way a server restores them (pages of 1,000 after the last
/// key): every record comes back once, in key order, after a reopen — none skipped at a page
/// boundary, none from a neighbouring prefix — and a large value comes back whole.
pub fn records_many_keys_per_prefix_page_completely(h: &mut dyn Harness) {
    const CONFIGS: usize = 25;
    const REVS: usize = 100;
    let mut store = fresh_loaded(h);
    let mut want = Vec::new();
    for config in 0..CONFIGS {
        // Names that are prefixes of each other: `c1/` must not match `c10/`.
        let batch: Vec<Mutation> = (1..=REVS)
            .map(|rev| {
                let key = format!("c{config}/{rev:020}");
                let value = format!("{{\"rev\": {rev}, \"config\": {config}}}");
                want.push((key.clone(), value.clone().into_bytes()));
                put("config_revs", &key, value.as_bytes())
            })
            .collect();
        commit(&mut store, &batch);
    }
    let big: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    commit(&mut store, &[put("config_blobs", "big", &big)]);
    want.sort();
    let (mut store, _) = reload(h, store);

    let mut got = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = scan(&mut store, "config_revs", "", after.as_deref(), 1_000);
        let full = page.len() == 1_000;
        after = page.last().map(|(k, _)| k.clone()).or(after);
        got.extend(page);
        if !full {
            break;
        }
    }
    assert_eq!(got.len(), CONFIGS * REVS, "every record, once");
    assert_eq!(got, want, "in key order, byte for byte");

    let one: Vec<_> = scan(&mut store, "config_revs", "c1/", None, 10_000);
    assert_eq!(one.len(), REVS, "c1/ matches none of c10/..c19/");
    assert!(one.iter().all(|(k, _)| k.starts_with("c1/")));
    assert_eq!(
        get(&mut store, "config_blobs", "big"),
        Some(big),
        "a 1 MiB value, whole"
    );
}
