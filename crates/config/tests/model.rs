//! Property test: the revision store against a simple reference model.
//!
//! Random sequences of writes (drafts among them; content that passes, fails a schema, or does
//! not parse; the same bytes in several configs and formats), promotions, rollbacks, schema
//! changes (valid, permissive, strict, invalid) and restarts (the store rebuilt from the
//! records its operations emitted, applied as a store applies them) run over three configs.
//! After every step the store must agree with the model (outcome, revisions, current, schema)
//! and keep the invariants in `store/mod.rs`'s module docs, checked on the records it emitted:
//! revisions numbered 1, 2, 3… with no gap or reuse; a revision's record written once and its
//! metadata never changed; current never a draft and passing the schema in force; every
//! revision's content stored under its SHA-256, each blob written once; a refusal emitting
//! nothing and changing nothing; and restore(records) == state.

mod common;

use std::collections::BTreeMap;

use common::{Records, T0, writer};
use locksmith_config::store::{BLOBS, REVISIONS, revision_key};
use locksmith_config::{
    Configs, Format, PromoteError, RevisionKind, RevisionMeta, RollbackError, Schema,
    SetSchemaError, WriteError, WriteRequest, parse, sha256_hex,
};
use proptest::prelude::*;

/// The configs: two conf, one TOML (whose `v = 0.5` is the same bytes as conf's).
const CONFIGS: [(&str, Format); 3] = [
    ("aim_lock_config.conf", Format::Conf),
    ("fleet/eu/limits.conf", Format::Conf),
    ("fleet/eu/limits.toml", Format::Toml),
];

/// Values written as `v = VALUE`; `None` is content that does not parse.
const VALUES: [Option<f64>; 4] = [Some(0.5), Some(2.0), Some(7.0), None];

/// Schemas: `None` does not compile; `Some(max)` is a maximum for `v` (`f64::MAX`: anything).
const SCHEMAS: [Option<f64>; 4] = [Some(f64::MAX), Some(1.0), Some(5.0), None];

fn content(value: usize) -> Vec<u8> {
    match VALUES[value] {
        Some(v) => format!("v = {v:?}\n").into_bytes(),
        None => b"v = = broken\n".to_vec(),
    }
}

fn schema_bytes(schema: usize) -> Vec<u8> {
    match SCHEMAS[schema] {
        Some(max) if max == f64::MAX => b"{}".to_vec(),
        Some(max) => format!(r#"{{"properties": {{"v": {{"maximum": {max:?}}}}}}}"#).into_bytes(),
        None => br#"{"properties": {"v": {"maximum": "one"}}}"#.to_vec(),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        cfg: usize,
        value: usize,
        draft: bool,
        who: u64,
    },
    Promote {
        cfg: usize,
        pick: u64,
    },
    Rollback {
        cfg: usize,
        pick: u64,
    },
    SetSchema {
        cfg: usize,
        schema: usize,
    },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..3usize, 0..4usize, any::<bool>(), 1..4u64)
            .prop_map(|(cfg, value, draft, who)| Op::Write { cfg, value, draft, who }),
        2 => (0..3usize, 1..8u64).prop_map(|(cfg, pick)| Op::Promote { cfg, pick }),
        2 => (0..3usize, 1..8u64).prop_map(|(cfg, pick)| Op::Rollback { cfg, pick }),
        1 => (0..3usize, 0..4usize).prop_map(|(cfg, schema)| Op::SetSchema { cfg, schema }),
        1 => Just(Op::Restart),
    ]
}

/// A revision as the model keeps it.
#[derive(Debug, Clone, PartialEq)]
struct Rev {
    value: f64,
    draft: bool,
    base: Option<u64>,
    kind: RevisionKind,
}

/// A config as the model keeps it.
#[derive(Debug, Clone, Default)]
struct ModelConfig {
    /// Revision n at n - 1.
    revs: Vec<Rev>,
    current: Option<u64>,
    /// The schema's maximum for `v`, if a schema is set.
    max: Option<f64>,
}

impl ModelConfig {
    /// Whether the store has it: it has a revision or a schema.
    fn exists(&self) -> bool {
        !self.revs.is_empty() || self.max.is_some()
    }
}

#[derive(Debug, Clone, Default)]
struct Model {
    configs: BTreeMap<usize, ModelConfig>,
}

fn passes(value: f64, max: Option<f64>) -> bool {
    max.is_none_or(|m| value <= m)
}

/// What the model expects of an operation: `Ok` or the refusal's name.
type Expect = Result<(), &'static str>;

impl Model {
    fn write(&mut self, cfg: usize, value: usize, draft: bool) -> Expect {
        let entry = self.configs.entry(cfg).or_default();
        let Some(v) = VALUES[value] else {
            return Err("parse");
        };
        if !passes(v, entry.max) {
            return Err("schema");
        }
        let rev = entry.revs.len() as u64 + 1;
        let base = if draft { entry.current } else { None };
        entry.revs.push(Rev {
            value: v,
            draft,
            base,
            kind: RevisionKind::Written,
        });
        if !draft {
            entry.current = Some(rev);
        }
        Ok(())
    }

    fn promote(&mut self, cfg: usize, rev: u64) -> Expect {
        let Some(entry) = self.configs.get_mut(&cfg).filter(|e| e.exists()) else {
            return Err("no_config");
        };
        let Some(draft) = entry.revs.get((rev - 1) as usize).cloned() else {
            return Err("no_revision");
        };
        if !draft.draft {
            return Err("not_a_draft");
        }
        if let Some(current) = entry.current {
            if entry.revs[(current - 1) as usize].kind == (RevisionKind::Promoted { from: rev }) {
                return Err("already_promoted");
            }
            if Some(current) != draft.base {
                return Err("outdated");
            }
        }
        if !passes(draft.value, entry.max) {
            return Err("schema");
        }
        entry.revs.push(Rev {
            value: draft.value,
            draft: false,
            base: None,
            kind: RevisionKind::Promoted { from: rev },
        });
        entry.current = Some(entry.revs.len() as u64);
        Ok(())
    }

    fn rollback(&mut self, cfg: usize, to: u64) -> Expect {
        let Some(entry) = self.configs.get_mut(&cfg).filter(|e| e.exists()) else {
            return Err("no_config");
        };
        let Some(target) = entry.revs.get((to - 1) as usize).cloned() else {
            return Err("no_revision");
        };
        if target.draft {
            return Err("is_a_draft");
        }
        if !passes(target.value, entry.max) {
            return Err("schema");
        }
        entry.revs.push(Rev {
            value: target.value,
            draft: false,
            base: None,
            kind: RevisionKind::RolledBack { from: to },
        });
        entry.current = Some(entry.revs.len() as u64);
        Ok(())
    }

    fn set_schema(&mut self, cfg: usize, schema: usize) -> Expect {
        let Some(max) = SCHEMAS[schema] else {
            return Err("invalid");
        };
        let entry = self.configs.entry(cfg).or_default();
        if let Some(current) = entry.current {
            if !passes(entry.revs[(current - 1) as usize].value, Some(max)) {
                return Err("current_fails");
            }
        }
        entry.max = Some(max);
        Ok(())
    }
}

fn write_error(e: &WriteError) -> &'static str {
    match e {
        WriteError::Parse(_) => "parse",
        WriteError::Schema(_) => "schema",
        other => panic!("unexpected refusal {other:?}"),
    }
}

fn promote_error(e: &PromoteError) -> &'static str {
    match e {
        PromoteError::NoSuchConfig { .. } => "no_config",
        PromoteError::NoSuchRevision { .. } => "no_revision",
        PromoteError::NotADraft { .. } => "not_a_draft",
        PromoteError::AlreadyPromoted { .. } => "already_promoted",
        PromoteError::DraftOutdated { .. } => "outdated",
        PromoteError::Schema { .. } => "schema",
        other => panic!("unexpected refusal {other:?}"),
    }
}

fn rollback_error(e: &RollbackError) -> &'static str {
    match e {
        RollbackError::NoSuchConfig { .. } => "no_config",
        RollbackError::NoSuchRevision { .. } => "no_revision",
        RollbackError::IsADraft { .. } => "is_a_draft",
        RollbackError::Schema { .. } => "schema",
        other => panic!("unexpected refusal {other:?}"),
    }
}

fn set_schema_error(e: &SetSchemaError) -> &'static str {
    match e {
        SetSchemaError::Invalid(_) => "invalid",
        SetSchemaError::CurrentFails { .. } => "current_fails",
        other => panic!("unexpected refusal {other:?}"),
    }
}

/// The system under test, its emitted records, and every revision's metadata as first written.
struct World {
    configs: Configs,
    records: Records,
    written: BTreeMap<(String, u64), RevisionMeta>,
}

impl World {
    /// The content of `name` rev `rev` as the server would read it (or any bytes when there is
    /// no such revision: the operation must refuse before it looks).
    fn content(&self, name: &str, rev: u64) -> Vec<u8> {
        self.configs
            .revision(name, rev)
            .map(|_| self.records.content(&self.configs, name, rev))
            .unwrap_or_default()
    }

    fn run(&mut self, op: &Op, model: &mut Model) {
        let before = self.configs.clone();
        let (expected, outcome) = match *op {
            Op::Write {
                cfg,
                value,
                draft,
                who,
            } => {
                let (name, format) = CONFIGS[cfg];
                let request = WriteRequest {
                    name: name.to_owned(),
                    format,
                    content: content(value),
                    message: "model".to_owned(),
                    draft,
                    writer: writer(who),
                    max_bytes: 1024,
                };
                let got = self.configs.write(request, T0);
                (
                    model.write(cfg, value, draft),
                    got.map(|a| (a.mutations, Some(a.value)))
                        .map_err(|e| write_error(&e)),
                )
            }
            Op::Promote { cfg, pick } => {
                let name = CONFIGS[cfg].0;
                let content = self.content(name, pick);
                let got = self.configs.promote(name, pick, &content, &writer(1), T0);
                (
                    model.promote(cfg, pick),
                    got.map(|a| (a.mutations, Some(a.value)))
                        .map_err(|e| promote_error(&e)),
                )
            }
            Op::Rollback { cfg, pick } => {
                let name = CONFIGS[cfg].0;
                let content = self.content(name, pick);
                let got = self.configs.rollback(name, pick, &content, &writer(2), T0);
                (
                    model.rollback(cfg, pick),
                    got.map(|a| (a.mutations, Some(a.value)))
                        .map_err(|e| rollback_error(&e)),
                )
            }
            Op::SetSchema { cfg, schema } => {
                let name = CONFIGS[cfg].0;
                let current = self.configs.current(name).map(|m| m.rev);
                let content = current.map(|rev| self.content(name, rev));
                let got = self.configs.set_schema(
                    name,
                    &schema_bytes(schema),
                    content.as_deref(),
                    &writer(3).author,
                    T0,
                );
                (
                    model.set_schema(cfg, schema),
                    got.map(|a| (a.mutations, None))
                        .map_err(|e| set_schema_error(&e)),
                )
            }
            Op::Restart => {
                let restored = self.records.restore();
                assert_eq!(restored, self.configs, "restore(records) == state");
                self.configs = restored;
                return;
            }
        };
        match outcome {
            Ok((mutations, meta)) => {
                assert_eq!(
                    expected,
                    Ok(()),
                    "{op:?}: the store accepted what the model refuses"
                );
                self.records.apply(&mutations);
                if let Some(meta) = meta {
                    let key = (meta.name.clone(), meta.rev);
                    assert!(
                        self.written.insert(key, meta).is_none(),
                        "a revision number reused"
                    );
                }
            }
            Err(refusal) => {
                assert_eq!(expected, Err(refusal), "{op:?}");
                assert_eq!(self.configs, before, "{op:?}: a refusal changed the state");
            }
        }
    }

    fn check(&self, model: &Model) {
        for (cfg, (name, format)) in CONFIGS.iter().enumerate() {
            let revisions = self.configs.revisions(name);
            let ModelConfig { revs, current, max } =
                model.configs.get(&cfg).cloned().unwrap_or_default();
            let head = self.configs.head(name);
            assert_eq!(
                head.map(|h| h.latest).unwrap_or_default(),
                revs.len() as u64,
                "{name}: latest"
            );
            assert_eq!(head.and_then(|h| h.current), current, "{name}: current");
            assert_eq!(
                self.configs.schema(name).is_some(),
                max.is_some(),
                "{name}: schema"
            );
            for (i, (meta, rev)) in revisions.iter().zip(&revs).enumerate() {
                // Numbered 1, 2, 3… with no gap, as the model has them.
                assert_eq!(meta.rev, i as u64 + 1, "{name}: numbering");
                assert_eq!(
                    (meta.draft, meta.base, meta.kind),
                    (rev.draft, rev.base, rev.kind),
                    "{name} rev {}",
                    meta.rev
                );
                assert_eq!(meta.format, *format);
                // Never changed since it was written, and its record written once.
                assert_eq!(
                    Some(meta),
                    self.written.get(&(name.to_string(), meta.rev)),
                    "{name} rev {} changed",
                    meta.rev
                );
                let key = (REVISIONS.to_owned(), revision_key(name, meta.rev));
                assert_eq!(
                    self.records.writes.get(&key),
                    Some(&1),
                    "{name} rev {}: record rewritten",
                    meta.rev
                );
                // Its content stored under its SHA-256, that blob written once.
                let blob = self
                    .records
                    .get(BLOBS, &meta.sha256)
                    .expect("every revision's blob is stored");
                assert_eq!(sha256_hex(blob), meta.sha256);
                assert_eq!(blob, content_of(rev.value).as_slice());
                assert_eq!(
                    self.records
                        .writes
                        .get(&(BLOBS.to_owned(), meta.sha256.clone())),
                    Some(&1)
                );
            }
            assert_eq!(revisions.len(), revs.len(), "{name}: revision count");
            // Current is no draft and passes the schema in force.
            if let Some(meta) = self.configs.current(name) {
                assert!(!meta.draft, "{name}: current is a draft");
                if let Some(schema) = self.configs.schema(name) {
                    let blob = self.records.get(BLOBS, &meta.sha256).expect("stored");
                    let doc = parse(meta.format, blob)
                        .expect("parses")
                        .expect("a document");
                    assert!(
                        Schema::check(schema, &doc).is_empty(),
                        "{name}: current fails its schema"
                    );
                }
            }
        }
    }
}

fn content_of(value: f64) -> Vec<u8> {
    format!("v = {value:?}\n").into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_store_agrees_with_the_model_and_keeps_its_invariants(ops in prop::collection::vec(op(), 1..60)) {
        let mut model = Model::default();
        let mut world = World { configs: Configs::new(), records: Records::default(), written: BTreeMap::new() };
        for op in &ops {
            world.run(op, &mut model);
            world.check(&model);
        }
        prop_assert_eq!(world.records.restore(), world.configs);
    }
}
