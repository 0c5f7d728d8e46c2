//! # locksmith-config
//!
//! Versioned configs that only the lock holder writes, validated before they land — the
//! sans-IO half of Locksmith's config store. Like `locksmith-core` it touches no socket, file
//! or clock: operations take `now_ms` and the writer the server has already verified, and
//! return the records to persist and the audit event; the server's engine runs them in its
//! step, in the same critical section and durable batch as the fence check.
//!
//! - [`validate_name`]: which names are configs, and [`resource_of`] a name — the lock
//!   (`configs/NAME`) whose current fencing token a write must carry.
//! - [`parse`]: content of a [`Format`] into a [`Document`] (`raw` is never parsed), with
//!   errors that name line and column ([`ParseError`]).
//! - [`Schema`]: a JSON Schema, and the [`Violation`]s of a document, each with its key path
//!   and line: `safety_threshold: 1.7 is greater than the maximum of 1 (line 4)`.
//! - [`diff`]: a unified diff of two contents; [`stamp`]: the provenance comment line;
//!   [`sha256_hex`]: content addresses.
//! - [`Configs`]: the revision store — heads, immutable numbered revisions, drafts,
//!   promotion, rollback, schemas — and its records ([`store`]).
//!
//! ## Decisions
//!
//! Where the plan left a choice, the store takes the side of the operator who must trust what
//! it serves (Configerator, AppConfig and etcd users), and refuses rather than guesses:
//!
//! - **conf values are typed, never guessed.** A bare word other than `true`/`false` (`on`,
//!   `fast`, `'x'`, `007`, `.5`) is refused with the quoted fix; `fast` might be a string or a
//!   typo of `false`. **Dotted keys nest** (`db.port = 1` is `{"db": {"port": 1}}`), as in TOML,
//!   so one schema fits the config in either format; `a = 1` with `a.b = 2` is a duplicate.
//! - **A UTF-8 byte-order mark is skipped** at the start of conf, TOML and JSON (editors add
//!   it; it is never part of a key), and the stored bytes keep it. `\r\n` ends lines like `\n`.
//! - **Duplicate keys are refused in every format**, JSON included (serde_json would keep the
//!   last silently).
//! - **TOML `nan`/`inf` are refused** (no JSON number, so no schema could check them);
//!   date-times become their RFC 3339 text.
//! - **Schemas are validated on write, and current always passes the schema in force**:
//!   setting a schema that the current revision fails is refused with the violations; a
//!   promotion or rollback re-checks the content against the schema in force then. Drafts are
//!   checked when written and again when promoted. A schema may be set before the first write.
//!   `$ref`s to other documents are refused (resolving them would be IO), and `format` is
//!   asserted.
//! - **Promotion and rollback are new revisions** (kinds `promoted { from }`,
//!   `rolled_back { from }`), fenced and attributed like writes, so a revision never changes
//!   and `current` is never a draft. A draft records the revision it was written on
//!   (`base`); promoting it after another revision became current is refused
//!   (`DraftOutdated`): it would undo that change unseen (Configerator's landing strip
//!   refuses such a diff too). Rolling back to a draft is refused: it was never current.
//! - **A config keeps its first revision's format**: readers parse it as that.
//! - **Names** are at most 247 bytes, so `configs/NAME` fits the lock table's 255; `.`
//!   segments are refused like `..` (names may become paths on an agent's disk).
//! - **Identical content is a new revision** (as in etcd and AppConfig; the message and
//!   author may differ), and costs no storage: content is stored once per SHA-256.
//!
//! ## Invariants
//!
//! Of the revision store (module [`store`], pinned by `tests/model.rs`): revisions of a
//! config are numbered 1, 2, 3… with no gap or reuse; a revision never changes once written;
//! current is always a non-draft revision that passed the schema in force when it became
//! current (and passes the one in force now); every revision's content is stored, once per
//! SHA-256; restoring the persisted records gives back the same state.
//!
//! What it is not: a server, a store, or a lock. The fence check is the server's (this crate
//! records the verified token); content is read from the store by the server on demand.

mod diff;
mod digest;
pub mod document;
pub mod format;
pub mod name;
pub mod schema;
mod stamp;
pub mod store;

pub use diff::diff;
pub use digest::sha256_hex;
pub use document::Document;
pub use format::{Format, ParseError, ParseErrorKind, UnknownFormat, parse};
pub use name::{InvalidName, MAX_NAME_LEN, resource_of, validate_name};
pub use schema::{InvalidSchema, Schema, Violation};
pub use stamp::{STAMP_SHA_LEN, StampInfo, stamp};
pub use store::{
    Applied, Author, Configs, DEFAULT_MAX_BYTES, Head, MAX_MESSAGE_LEN, MAX_SCHEMA_BYTES,
    PromoteError, RestoreError, Restorer, RevisionKind, RevisionMeta, RollbackError, SchemaRef,
    SetSchemaError, WriteError, WriteRequest, Writer, WrongContent,
};
