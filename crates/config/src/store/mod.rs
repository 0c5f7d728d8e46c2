//! The revision store: every config's head, revisions and schema, as a plain state machine.
//!
//! The server keeps one [`Configs`] in its engine state. An operation is called inside the
//! engine's step, after the step has checked the writer's fencing token against the lock
//! table (same critical section, so the check and the append are one atomic step); it checks
//! the request, changes the state, and returns the [`Applied`] change: the records to persist
//! (`Mutation::PutRecord`s, in the step's batch) and the audit event. A refused operation
//! changes nothing and returns no record.
//!
//! Invariants (pinned by `tests/model.rs`):
//! - a config's revisions are numbered 1, 2, 3… with no gap and no reuse, and `latest` is the
//!   newest;
//! - a revision never changes once written (its record is written once, and never again);
//! - `current`, when set, is a revision that is not a draft and that passed the schema in
//!   force when it became current; setting a schema the current revision fails is refused, so
//!   current also passes the schema in force now;
//! - every revision's content is stored, once per SHA-256: a blob record is emitted the first
//!   time a SHA-256 is written and never again;
//! - a config keeps the format of its first revision;
//! - [`Configs::restore`] of the persisted records gives back the same state.
//!
//! Content is not kept in memory: the server reads a blob when a reader asks, and hands the
//! operations that re-check old content against a schema (promote, rollback, set_schema) the
//! content of the revision concerned, which they verify by its SHA-256.

mod current;
mod error;
mod records;
mod restore;
mod set_schema;
mod write;

use std::collections::{BTreeMap, HashSet};

use locksmith_core::{DomainEvent, Mutation};

pub use error::{PromoteError, RollbackError, SetSchemaError, WriteError, WrongContent};
pub use records::{
    Author, BLOBS, HEADS, Head, REVISIONS, RevisionKind, RevisionMeta, SCHEMAS, SchemaRef, Writer,
    revision_key, revisions_prefix,
};
pub use restore::{RestoreError, Restorer};
pub use write::WriteRequest;

use crate::schema::Schema;

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

/// Default largest content, in bytes (`--max-config-bytes`): 1 MiB.
pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;

/// Longest revision message, in bytes.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// A change made to the state, for the caller to make durable.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied<T> {
    /// What the operation produced (the new revision, the new head).
    pub value: T,
    /// The records to persist, in the same batch as the audit record.
    pub mutations: Vec<Mutation>,
    /// The audit event, for the record of resource [`resource_of`](crate::resource_of) the
    /// config, with the writer's token and owner: kind `config_written` (a draft too),
    /// `config_promoted` or `config_rolled_back` with the new [`RevisionMeta`] as detail, or
    /// `config_schema_set` with `{"name", "schema": SchemaRef}`.
    pub event: DomainEvent,
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

/// One config: its head, every revision, and its compiled schema.
#[derive(Debug, Clone, PartialEq)]
struct Config {
    head: Head,
    /// Revision `n` is at index `n - 1`.
    revisions: Vec<RevisionMeta>,
    schema: Option<Schema>,
}

impl Config {
    fn revision(&self, rev: u64) -> Option<&RevisionMeta> {
        let index = usize::try_from(rev.checked_sub(1)?).ok()?;
        self.revisions.get(index)
    }
}

/// Every config the server keeps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Configs {
    configs: BTreeMap<String, Config>,
    /// The SHA-256 of every content stored (every revision's).
    blobs: HashSet<String>,
}

impl Configs {
    /// No configs.
    pub fn new() -> Self {
        Self::default()
    }

    /// The head of config `name`.
    pub fn head(&self, name: &str) -> Option<&Head> {
        self.configs.get(name).map(|c| &c.head)
    }

    /// Every revision of `name`, oldest first (empty if there is no such config).
    pub fn revisions(&self, name: &str) -> &[RevisionMeta] {
        self.configs
            .get(name)
            .map_or(&[][..], |c| c.revisions.as_slice())
    }

    /// Revision `rev` of `name`.
    pub fn revision(&self, name: &str, rev: u64) -> Option<&RevisionMeta> {
        self.configs.get(name)?.revision(rev)
    }

    /// The current revision of `name`.
    pub fn current(&self, name: &str) -> Option<&RevisionMeta> {
        let config = self.configs.get(name)?;
        config.revision(config.head.current?)
    }

    /// The schema in force for `name`.
    pub fn schema(&self, name: &str) -> Option<&Schema> {
        self.configs.get(name)?.schema.as_ref()
    }

    /// Every config's head, by name.
    pub fn list(&self) -> impl Iterator<Item = &Head> {
        self.configs.values().map(|c| &c.head)
    }

    /// How many configs there are.
    pub fn len(&self) -> usize {
        self.configs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }

    /// Whether content with this SHA-256 is stored.
    pub fn has_blob(&self, sha256: &str) -> bool {
        self.blobs.contains(sha256)
    }
}
