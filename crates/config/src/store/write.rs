//! Writing new content: a revision (or a draft), and the checks a write runs.

use locksmith_core::keyspace::MAX_RECORD_VALUE_LEN;

use super::error::WriteError;
use super::records::{
    HEADS, Head, REVISIONS, RevisionKind, RevisionMeta, Writer, encode, revision_key,
};
use super::{Applied, BLOBS, Config, Configs, EVENT_WRITTEN, MAX_MESSAGE_LEN, event, put};
use crate::digest::sha256_hex;
use crate::document::Document;
use crate::format::{Format, parse};
use crate::name::validate_name;

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

    /// Adds `meta` as its config's newest revision (current unless a draft) and returns the
    /// records: the content's blob if its SHA-256 is new, the revision, the head.
    pub(super) fn append(
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
    pub(super) fn empty(name: &str) -> Self {
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
pub(super) fn stamp(name: &str, writer: &Writer, now_ms: u64) -> RevisionMeta {
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
