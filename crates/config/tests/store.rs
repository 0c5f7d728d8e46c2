//! The revision store: numbering, records and events, content addressing, formats, refusals
//! that change nothing, and restore.

mod common;

use common::{Records, T0, request, writer};
use locksmith_config::store::{BLOBS, HEADS, REVISIONS, revision_key};
use locksmith_config::{Configs, Format, RevisionKind, SetSchemaError, WriteError, sha256_hex};
use locksmith_core::{DomainEvent, FenceToken};

const NAME: &str = "aim_lock_config.conf";
const SCHEMA: &[u8] = br#"{"properties": {"aim_sensitivity": {"type": "number", "maximum": 1}}}"#;

/// Writes and persists; returns the new revision number.
fn write(configs: &mut Configs, records: &mut Records, content: &str, draft: bool) -> u64 {
    let applied = configs
        .write(request(NAME, Format::Conf, content, draft), T0)
        .expect("written");
    records.apply(&applied.mutations);
    applied.value.rev
}

#[test]
fn revisions_are_numbered_1_2_3_and_current_follows() {
    let mut configs = Configs::new();
    let mut records = Records::default();
    for (i, v) in ["0.1", "0.2", "0.3"].iter().enumerate() {
        let rev = write(
            &mut configs,
            &mut records,
            &format!("aim_sensitivity = {v}\n"),
            false,
        );
        assert_eq!(rev, i as u64 + 1);
        let head = configs.head(NAME).expect("a head");
        assert_eq!((head.current, head.latest), (Some(rev), rev));
    }
    let revs: Vec<u64> = configs.revisions(NAME).iter().map(|m| m.rev).collect();
    assert_eq!(revs, [1, 2, 3]);
    let meta = configs.current(NAME).expect("current");
    assert_eq!(meta.token, FenceToken(4_701));
    assert_eq!(meta.owner, "user1@node-1 (pid 101)");
    assert_eq!(meta.owner_node, "node-1");
    assert_eq!(meta.author.name, "user1");
    assert_eq!(meta.at_ms, T0);
    assert_eq!(meta.kind, RevisionKind::Written);
    assert_eq!(meta.size, 22);
    assert!(records.get(REVISIONS, &revision_key(NAME, 3)).is_some());
    assert_eq!(
        revision_key(NAME, 3),
        "aim_lock_config.conf#00000000000000000003"
    );
}

#[test]
fn a_write_emits_blob_revision_and_head_records_and_one_event() {
    let mut configs = Configs::new();
    let applied = configs
        .write(request(NAME, Format::Conf, "a = 1\n", false), T0)
        .expect("written");
    let spaces: Vec<&str> = applied
        .mutations
        .iter()
        .map(|m| match m {
            locksmith_core::Mutation::PutRecord { space, .. } => space.as_str(),
            _ => "other",
        })
        .collect();
    assert_eq!(spaces, [BLOBS, REVISIONS, HEADS]);
    assert_eq!(applied.event.kind, "config_written");
    assert_eq!(applied.event.detail["rev"], 1);
    assert_eq!(applied.event.detail["sha256"], sha256_hex(b"a = 1\n"));
    for kind in [
        "config_written",
        "config_promoted",
        "config_rolled_back",
        "config_schema_set",
    ] {
        assert!(
            DomainEvent::new(kind, serde_json::Value::Null).is_ok(),
            "{kind}"
        );
    }
}

#[test]
fn content_is_stored_once_per_sha256() {
    let mut configs = Configs::new();
    let mut records = Records::default();
    let first = configs
        .write(request(NAME, Format::Conf, "a = 1\n", false), T0)
        .expect("written");
    records.apply(&first.mutations);
    assert_eq!(first.mutations.len(), 3, "blob, revision, head");
    let second = configs
        .write(request(NAME, Format::Conf, "a = 1\n", false), T0)
        .expect("written");
    records.apply(&second.mutations);
    assert_eq!(
        second.value.rev, 2,
        "identical content is still a new revision"
    );
    assert_eq!(second.mutations.len(), 2, "no second blob record");
    // The same content in another config shares the blob too.
    let other = configs
        .write(request("other.conf", Format::Conf, "a = 1\n", false), T0)
        .expect("written");
    assert_eq!(other.mutations.len(), 2);
    records.apply(&other.mutations);
    assert_eq!(records.count(BLOBS), 1);
    assert!(configs.has_blob(&sha256_hex(b"a = 1\n")));
}

#[test]
fn raw_content_and_schemas_do_not_mix() {
    let mut configs = Configs::new();
    let mut records = Records::default();
    let mut raw = request("blob.bin", Format::Raw, "", false);
    raw.content = vec![0xff, 0x00, 0xfe];
    records.apply(
        &configs
            .write(raw.clone(), T0)
            .expect("raw is any bytes")
            .mutations,
    );
    assert_eq!(
        configs.set_schema("blob.bin", SCHEMA, None, &writer(1).author, T0),
        Err(SetSchemaError::RawConfig {
            name: "blob.bin".to_owned()
        })
    );
    configs
        .set_schema(NAME, SCHEMA, None, &writer(1).author, T0)
        .expect("set");
    let mut raw_for_schema = raw;
    raw_for_schema.name = NAME.to_owned();
    assert_eq!(
        configs.write(raw_for_schema, T0),
        Err(WriteError::RawWithSchema {
            name: NAME.to_owned()
        })
    );
}

#[test]
fn a_config_keeps_its_format() {
    let mut configs = Configs::new();
    let mut records = Records::default();
    write(&mut configs, &mut records, "a = 1\n", false);
    assert_eq!(
        configs.write(request(NAME, Format::Json, "{}", false), T0),
        Err(WriteError::FormatMismatch {
            name: NAME.to_owned(),
            format: Format::Conf,
            given: Format::Json
        })
    );
}

#[test]
fn bad_writes_are_refused_before_anything_changes() {
    let mut configs = Configs::new();
    type Expected = fn(&WriteError) -> bool;
    let cases: Vec<(locksmith_config::WriteRequest, Expected)> = vec![
        (request("/abs", Format::Conf, "a = 1", false), |e| {
            matches!(e, WriteError::InvalidName(_))
        }),
        (
            {
                let mut r = request(NAME, Format::Conf, "a = 1", false);
                r.max_bytes = 4;
                r
            },
            |e| matches!(e, WriteError::TooLarge { size: 5, max: 4 }),
        ),
        (
            {
                let mut r = request(NAME, Format::Conf, "a = 1", false);
                r.message = "m".repeat(4097);
                r
            },
            |e| matches!(e, WriteError::MessageTooLong { .. }),
        ),
        (
            {
                let mut r = request(NAME, Format::Conf, "", false);
                r.content = b"a = \"\xff\"".to_vec();
                r
            },
            |e| matches!(e, WriteError::NotUtf8 { line: 1, column: 6 }),
        ),
        (
            request(NAME, Format::Conf, "a = on", false),
            |e| matches!(e, WriteError::Parse(p) if p.line == 1 && p.column == 5),
        ),
    ];
    for (req, expected) in cases {
        let e = configs.write(req, T0).expect_err("refused");
        assert!(expected(&e), "{e:?}");
        assert_eq!(configs, Configs::new());
    }
    let big = "#".repeat(locksmith_config::DEFAULT_MAX_BYTES + 1);
    assert!(matches!(
        configs.validate(
            NAME,
            Format::Conf,
            big.as_bytes(),
            locksmith_config::DEFAULT_MAX_BYTES
        ),
        Err(WriteError::TooLarge { .. })
    ));
    // No limit may exceed what one record holds.
    let huge = vec![b'#'; locksmith_core::keyspace::MAX_RECORD_VALUE_LEN + 1];
    assert!(matches!(
        configs.validate(NAME, Format::Conf, &huge, usize::MAX),
        Err(WriteError::TooLarge { .. })
    ));
}

#[test]
fn validate_runs_the_same_checks_without_writing() {
    let mut configs = Configs::new();
    let mut records = Records::default();
    records.apply(
        &configs
            .set_schema(NAME, SCHEMA, None, &writer(1).author, T0)
            .expect("set")
            .mutations,
    );
    let doc = configs
        .validate(NAME, Format::Conf, b"aim_sensitivity = 0.3", 1024)
        .expect("valid")
        .expect("a document");
    assert_eq!(doc.value["aim_sensitivity"], 0.3);
    assert!(matches!(
        configs.validate(NAME, Format::Conf, b"aim_sensitivity = 1.3", 1024),
        Err(WriteError::Schema(_))
    ));
    assert_eq!(
        configs.validate("new.bin", Format::Raw, b"\xff", 1024),
        Ok(None)
    );
    assert_eq!(configs.revisions(NAME).len(), 0);
}

#[test]
fn restore_of_the_persisted_records_is_the_state() {
    let mut configs = Configs::new();
    let mut records = Records::default();
    write(&mut configs, &mut records, "aim_sensitivity = 0.1\n", false);
    records.apply(
        &configs
            .set_schema(
                NAME,
                SCHEMA,
                Some(b"aim_sensitivity = 0.1\n"),
                &writer(1).author,
                T0,
            )
            .expect("set")
            .mutations,
    );
    write(&mut configs, &mut records, "aim_sensitivity = 0.2\n", true);
    let mut raw = request("raw/x", Format::Raw, "", false);
    raw.content = vec![1, 2, 3];
    records.apply(&configs.write(raw, T0).expect("written").mutations);
    records.apply(
        &configs
            .set_schema("later.toml", b"{}", None, &writer(2).author, T0)
            .expect("set")
            .mutations,
    );
    let restored = records.restore();
    assert_eq!(restored, configs);
    assert_eq!(restored.list().count(), 3);
    assert_eq!(
        restored.schema(NAME).map(|s| s.sha256().to_owned()),
        Some(sha256_hex(SCHEMA))
    );
    assert_eq!(restored.head("later.toml").and_then(|h| h.format), None);

    // Blobs may be left out; a revision without its head may not.
    let without_blobs = Configs::restore(
        records
            .map
            .iter()
            .filter(|((s, _), _)| s != BLOBS)
            .map(|((s, k), v)| (s.as_str(), k.as_str(), v.as_slice())),
    )
    .expect("restores");
    assert_eq!(without_blobs, configs);
    let headless = Configs::restore(
        records
            .map
            .iter()
            .filter(|((s, k), _)| !(s == HEADS && k == NAME))
            .map(|((s, k), v)| (s.as_str(), k.as_str(), v.as_slice())),
    );
    assert!(headless.is_err());
    let gap = Configs::restore(
        records
            .map
            .iter()
            .filter(|((s, k), _)| !(s == REVISIONS && *k == revision_key(NAME, 1)))
            .map(|((s, k), v)| (s.as_str(), k.as_str(), v.as_slice())),
    );
    let e = gap.expect_err("a gap in the history is refused");
    assert!(e.to_string().contains("latest is 2"), "{e}");
}
