//! The operations: write (or draft), validate, promote, roll back, set a schema.

use locksmith_core::keyspace::MAX_RECORD_VALUE_LEN;
use locksmith_core::{DomainEvent, Mutation};

use super::error::{PromoteError, RollbackError, SetSchemaError, WriteError, WrongContent};
use super::records::{
    Author, BLOBS, HEADS, Head, REVISIONS, RevisionKind, RevisionMeta, SCHEMAS, SchemaRef, Writer,
    encode, revision_key,
};
use super::{Applied, Config, Configs, MAX_MESSAGE_LEN};
use crate::digest::sha256_hex;
use crate::document::Document;
use crate::format::{Format, parse};
use crate::name::validate_name;
use crate::schema::{Schema, Violation};

/// Audit event kind of a write (draft or not).
pub const EVENT_WRITTEN: &str = "config_written";
/// Audit event kind of a promotion.
pub const EVENT_PROMOTED: &str = "config_promoted";
/// Audit event kind of a rollback.
pub const EVENT_ROLLED_BACK: &str = "config_rolled_back";
/// Audit event kind of a schema set.
pub const EVENT_SCHEMA_SET: &str = "config_schema_set";

/// Largest schema, in bytes.
pub const MAX_SCHEMA_BYTES: usize = 1024 * 1024;

/// A write of new content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRequest {
    /// The config.
    pub name: String,
    /// The content's format (the config's, if it exists).
    pub format: Format,
    /// The content.
    pub content: Vec<u8>,
    /// Why.
    pub message: String,
    /// Store it as a draft: not current until promoted.
    pub draft: bool,
    /// Who writes, verified by the caller.
    pub writer: Writer,
    /// Largest content accepted (`--max-config-bytes`; never above what one record holds).
    pub max_bytes: usize,
}

fn put(space: &str, key: String, value: Vec<u8>) -> Mutation {
    Mutation::PutRecord {
        space: space.to_owned(),
        key,
        value,
    }
}

/// A domain event of one of this module's kinds (all valid, so no check can fail).
fn event(kind: &str, detail: serde_json::Value) -> DomainEvent {
    DomainEvent {
        kind: kind.to_owned(),
        detail,
    }
}

/// Checks stored content of `format` against `schema`: a revision that parsed when written
/// parses now, unless the parser grew stricter since — then that is the one violation.
fn check_stored(schema: &Schema, format: Format, content: &[u8]) -> Vec<Violation> {
    match parse(format, content) {
        Ok(Some(document)) => schema.check(&document),
        Ok(None) => Vec::new(),
        Err(e) => vec![Violation {
            path: String::new(),
            message: format!("no longer parses as {format}: {e}"),
            line: Some(e.line),
        }],
    }
}

/// Checks that `content` is that of `meta`.
fn verify(meta: &RevisionMeta, content: &[u8]) -> Result<(), WrongContent> {
    let given = sha256_hex(content);
    if given == meta.sha256 {
        Ok(())
    } else {
        Err(WrongContent {
            name: meta.name.clone(),
            rev: meta.rev,
            expected: meta.sha256.clone(),
            given,
        })
    }
}

impl Configs {
    /// Runs every check of a write — name, size, format, parse, schema — without writing:
    /// the parsed document (`None` for raw) or why the write would be refused.
    pub fn validate(
        &self,
        name: &str,
        format: Format,
        content: &[u8],
        max_bytes: usize,
    ) -> Result<Option<Document>, WriteError> {
        validate_name(name)?;
        let max = max_bytes.min(MAX_RECORD_VALUE_LEN);
        if content.len() > max {
            return Err(WriteError::TooLarge {
                size: content.len(),
                max,
            });
        }
        let config = self.configs.get(name);
        if let Some(existing) = config.and_then(|c| c.head.format) {
            if existing != format {
                return Err(WriteError::FormatMismatch {
                    name: name.to_owned(),
                    format: existing,
                    given: format,
                });
            }
        }
        let schema = config.and_then(|c| c.schema.as_ref());
        if format == Format::Raw && schema.is_some() {
            return Err(WriteError::RawWithSchema {
                name: name.to_owned(),
            });
        }
        let document = parse(format, content)?;
        if let (Some(schema), Some(document)) = (schema, &document) {
            let violations = schema.check(document);
            if !violations.is_empty() {
                return Err(WriteError::Schema(violations));
            }
        }
        Ok(document)
    }

    /// Writes a new revision (`latest + 1`), current unless it is a draft.
    pub fn write(
        &mut self,
        request: WriteRequest,
        now_ms: u64,
    ) -> Result<Applied<RevisionMeta>, WriteError> {
        let WriteRequest {
            name,
            format,
            content,
            message,
            draft,
            writer,
            max_bytes,
        } = request;
        if message.len() > MAX_MESSAGE_LEN {
            return Err(WriteError::MessageTooLong {
                len: message.len(),
                max: MAX_MESSAGE_LEN,
            });
        }
        self.validate(&name, format, &content, max_bytes)?;
        let config = self
            .configs
            .entry(name.clone())
            .or_insert_with(|| Config::empty(&name));
        let meta = RevisionMeta {
            rev: config.head.latest + 1,
            sha256: sha256_hex(&content),
            size: content.len() as u64,
            format,
            message,
            draft,
            base: if draft { config.head.current } else { None },
            kind: RevisionKind::Written,
            ..stamp(&name, &writer, now_ms)
        };
        Ok(self.append(meta, Some(content), EVENT_WRITTEN))
    }

    /// Makes draft `rev` current, as a new revision with its content (`content`, which the
    /// caller read from the draft's blob), checked against the schema in force now.
    pub fn promote(
        &mut self,
        name: &str,
        rev: u64,
        content: &[u8],
        writer: &Writer,
        now_ms: u64,
    ) -> Result<Applied<RevisionMeta>, PromoteError> {
        validate_name(name)?;
        let config = self
            .configs
            .get(name)
            .ok_or_else(|| PromoteError::NoSuchConfig {
                name: name.to_owned(),
            })?;
        let draft = config
            .revision(rev)
            .ok_or_else(|| PromoteError::NoSuchRevision {
                name: name.to_owned(),
                rev,
            })?;
        if !draft.draft {
            return Err(PromoteError::NotADraft {
                name: name.to_owned(),
                rev,
            });
        }
        if let Some(current) = config.head.current {
            let promoted = config.revision(current).map(|m| m.kind)
                == Some(RevisionKind::Promoted { from: rev });
            if promoted {
                return Err(PromoteError::AlreadyPromoted {
                    name: name.to_owned(),
                    rev,
                    current,
                });
            }
            if Some(current) != draft.base {
                return Err(PromoteError::DraftOutdated {
                    name: name.to_owned(),
                    rev,
                    base: draft.base,
                    current,
                });
            }
        }
        verify(draft, content)?;
        if let Some(schema) = &config.schema {
            let violations = check_stored(schema, draft.format, content);
            if !violations.is_empty() {
                return Err(PromoteError::Schema {
                    name: name.to_owned(),
                    rev,
                    violations,
                });
            }
        }
        let meta = RevisionMeta {
            message: format!("promote draft {rev}"),
            kind: RevisionKind::Promoted { from: rev },
            ..successor(config, draft, writer, now_ms)
        };
        Ok(self.append(meta, None, EVENT_PROMOTED))
    }

    /// Makes the content of revision `to` current again, as a new revision (`content` is
    /// revision `to`'s, which the caller read from its blob), checked against the schema in
    /// force now.
    pub fn rollback(
        &mut self,
        name: &str,
        to: u64,
        content: &[u8],
        writer: &Writer,
        now_ms: u64,
    ) -> Result<Applied<RevisionMeta>, RollbackError> {
        validate_name(name)?;
        let config = self
            .configs
            .get(name)
            .ok_or_else(|| RollbackError::NoSuchConfig {
                name: name.to_owned(),
            })?;
        let target = config
            .revision(to)
            .ok_or_else(|| RollbackError::NoSuchRevision {
                name: name.to_owned(),
                rev: to,
            })?;
        if target.draft {
            return Err(RollbackError::IsADraft {
                name: name.to_owned(),
                rev: to,
            });
        }
        verify(target, content)?;
        if let Some(schema) = &config.schema {
            let violations = check_stored(schema, target.format, content);
            if !violations.is_empty() {
                return Err(RollbackError::Schema {
                    name: name.to_owned(),
                    rev: to,
                    violations,
                });
            }
        }
        let meta = RevisionMeta {
            message: format!("roll back to rev {to}"),
            kind: RevisionKind::RolledBack { from: to },
            ..successor(config, target, writer, now_ms)
        };
        Ok(self.append(meta, None, EVENT_ROLLED_BACK))
    }

    /// Sets the schema of `name` (creating the config if it has no revision yet). Refused if
    /// the current revision fails it — `current` is the current revision's content, which
    /// the caller read from its blob (`None` when there is no current revision) — so the
    /// current revision always passes the schema in force. Drafts are not checked: a
    /// promotion checks them against the schema in force then.
    pub fn set_schema(
        &mut self,
        name: &str,
        schema: &[u8],
        current: Option<&[u8]>,
        by: &Author,
        now_ms: u64,
    ) -> Result<Applied<Head>, SetSchemaError> {
        validate_name(name)?;
        if schema.len() > MAX_SCHEMA_BYTES {
            return Err(SetSchemaError::TooLarge {
                size: schema.len(),
                max: MAX_SCHEMA_BYTES,
            });
        }
        let compiled = Schema::compile(schema)?;
        if let Some(config) = self.configs.get(name) {
            if config.head.format == Some(Format::Raw) {
                return Err(SetSchemaError::RawConfig {
                    name: name.to_owned(),
                });
            }
            if let Some(meta) = config.head.current.and_then(|rev| config.revision(rev)) {
                verify(meta, current.unwrap_or_default())?;
                let violations = check_stored(&compiled, meta.format, current.unwrap_or_default());
                if !violations.is_empty() {
                    return Err(SetSchemaError::CurrentFails {
                        name: name.to_owned(),
                        rev: meta.rev,
                        violations,
                    });
                }
            }
        }
        let config = self
            .configs
            .entry(name.to_owned())
            .or_insert_with(|| Config::empty(name));
        let reference = SchemaRef {
            sha256: compiled.sha256().to_owned(),
            set_at_ms: now_ms,
            by: by.clone(),
        };
        config.head.schema = Some(reference.clone());
        config.schema = Some(compiled);
        let head = config.head.clone();
        let mutations = vec![
            put(SCHEMAS, name.to_owned(), schema.to_vec()),
            put(HEADS, name.to_owned(), encode(&head)),
        ];
        let detail = serde_json::json!({ "name": name, "schema": reference });
        Ok(Applied {
            value: head,
            mutations,
            event: event(EVENT_SCHEMA_SET, detail),
        })
    }

    /// Adds `meta` as its config's newest revision (current unless a draft) and returns the
    /// records: the content's blob if its SHA-256 is new, the revision, the head.
    fn append(
        &mut self,
        meta: RevisionMeta,
        content: Option<Vec<u8>>,
        kind: &str,
    ) -> Applied<RevisionMeta> {
        let mut mutations = Vec::with_capacity(3);
        if let Some(content) = content {
            if self.blobs.insert(meta.sha256.clone()) {
                mutations.push(put(BLOBS, meta.sha256.clone(), content));
            }
        }
        let config = self
            .configs
            .entry(meta.name.clone())
            .or_insert_with(|| Config::empty(&meta.name));
        config.head.latest = meta.rev;
        config.head.format = Some(meta.format);
        if !meta.draft {
            config.head.current = Some(meta.rev);
        }
        config.revisions.push(meta.clone());
        mutations.push(put(
            REVISIONS,
            revision_key(&meta.name, meta.rev),
            encode(&meta),
        ));
        mutations.push(put(HEADS, meta.name.clone(), encode(&config.head)));
        let detail = serde_json::to_value(&meta).unwrap_or_default();
        Applied {
            value: meta,
            mutations,
            event: event(kind, detail),
        }
    }
}

impl Config {
    fn empty(name: &str) -> Self {
        Config {
            head: Head {
                name: name.to_owned(),
                format: None,
                current: None,
                latest: 0,
                schema: None,
            },
            revisions: Vec::new(),
            schema: None,
        }
    }
}

/// The provenance of a new revision of `name`: who, from where, when, under which token.
/// The content fields are placeholders for the caller to fill in.
fn stamp(name: &str, writer: &Writer, now_ms: u64) -> RevisionMeta {
    RevisionMeta {
        name: name.to_owned(),
        rev: 0,
        sha256: String::new(),
        size: 0,
        format: Format::Raw,
        message: String::new(),
        author: writer.author.clone(),
        owner_node: writer.owner.node.clone(),
        owner: writer.owner.to_string(),
        at_ms: now_ms,
        token: writer.token,
        draft: false,
        base: None,
        kind: RevisionKind::Written,
    }
}

/// The next revision of `config`, current, with the content of `source`.
fn successor(config: &Config, source: &RevisionMeta, writer: &Writer, now_ms: u64) -> RevisionMeta {
    RevisionMeta {
        rev: config.head.latest + 1,
        sha256: source.sha256.clone(),
        size: source.size,
        format: source.format,
        ..stamp(&config.head.name, writer, now_ms)
    }
}
