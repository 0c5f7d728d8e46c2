//! What the config store persists, where, and in which encoding.
//!
//! Four record spaces (`locksmith_core::keyspace`), each record JSON unless said otherwise:
//!
//! | space | key | value |
//! |---|---|---|
//! | [`HEADS`] `config_heads` | `NAME` | [`Head`] |
//! | [`REVISIONS`] `config_revs` | `NAME#{rev:020}` ([`revision_key`]) | [`RevisionMeta`] |
//! | [`BLOBS`] `config_blobs` | SHA-256 hex | the content's bytes, as written |
//! | [`SCHEMAS`] `config_schemas` | `NAME` | the schema's bytes, as set |
//!
//! `#` is never in a name and the revision is zero-padded, so the keys with prefix
//! [`revisions_prefix`]`(NAME)` are exactly one config's revisions, in order.

use locksmith_core::{FenceToken, Owner};
use serde::{Deserialize, Serialize};

use crate::format::Format;

/// Space of the configs' heads.
pub const HEADS: &str = "config_heads";
/// Space of the revisions' metadata.
pub const REVISIONS: &str = "config_revs";
/// Space of the contents, one record per SHA-256.
pub const BLOBS: &str = "config_blobs";
/// Space of the schemas in force.
pub const SCHEMAS: &str = "config_schemas";

/// The key of revision `rev` of `name` in [`REVISIONS`].
pub fn revision_key(name: &str, rev: u64) -> String {
    format!("{name}#{rev:020}")
}

/// The prefix of every key of `name`'s revisions in [`REVISIONS`].
pub fn revisions_prefix(name: &str) -> String {
    format!("{name}#")
}

/// Who wrote: the authenticated principal (an API token), as issue 17's `Principal` names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Author {
    /// The token's id.
    pub token: String,
    /// The token's name: the person or service acting.
    pub name: String,
}

/// Who writes, as the server verified it before calling: the principal, the lock holder whose
/// fencing token the write carries, and that token (checked current by the server in the same
/// critical section; this crate records it and does not check it again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    /// The authenticated principal.
    pub author: Author,
    /// The holder of `configs/NAME`.
    pub owner: Owner,
    /// The holder's fencing token.
    pub token: FenceToken,
}

/// The schema in force for a config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaRef {
    /// The SHA-256 of its bytes (stored under the config's name in [`SCHEMAS`]).
    pub sha256: String,
    /// When it was set, Unix ms.
    pub set_at_ms: u64,
    /// Who set it.
    pub by: Author,
}

/// A config: where its history stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Its name.
    pub name: String,
    /// Its format, fixed by its first revision (readers parse it so); `None` while it has
    /// none (a schema may be set before the first write).
    pub format: Option<Format>,
    /// The revision readers get; `None` until one that is not a draft is written.
    pub current: Option<u64>,
    /// The newest revision, draft or not; 0 when there is none.
    pub latest: u64,
    /// The schema in force, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaRef>,
}

/// How a revision came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RevisionKind {
    /// Written with new content.
    Written,
    /// A rollback: the content of revision `from`.
    RolledBack {
        /// The revision whose content it has.
        from: u64,
    },
    /// A promotion: the content of draft `from`, now current.
    Promoted {
        /// The draft.
        from: u64,
    },
}

/// One revision of a config, immutable once written. Its content is in [`BLOBS`] under
/// `sha256`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionMeta {
    /// The config.
    pub name: String,
    /// Its number: 1, 2, 3… per config.
    pub rev: u64,
    /// The SHA-256 of its content, in hex.
    pub sha256: String,
    /// The content's size in bytes.
    pub size: u64,
    /// Its format.
    pub format: Format,
    /// Why it was written.
    pub message: String,
    /// Who wrote it.
    pub author: Author,
    /// The node the lock holder ran on.
    pub owner_node: String,
    /// The lock holder, `user@node (pid N)`.
    pub owner: String,
    /// When, Unix ms.
    pub at_ms: u64,
    /// The fencing token it was written under.
    pub token: FenceToken,
    /// A draft is stored but not current; it becomes current only by a promotion (a new
    /// revision).
    pub draft: bool,
    /// For a draft: the revision that was current when it was written (what it was meant to
    /// replace); a promotion is refused once another has become current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<u64>,
    /// How it came to be.
    #[serde(flatten)]
    pub kind: RevisionKind,
}

/// Encodes a record value. Records are structs of strings, numbers and enums, whose
/// serialization cannot fail.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}
