//! Why a config operation was refused, one enum per operation so a caller's `match` lists
//! exactly what can happen. A refusal changes nothing.

use thiserror::Error;

use crate::format::{Format, ParseError, ParseErrorKind};
use crate::name::InvalidName;
use crate::schema::{InvalidSchema, Violation};

/// The violations, as one line: `a: …; b: … (line 4)`.
fn listed(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a write (or [`validate`](crate::Configs::validate)) was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WriteError {
    /// The name is not a valid config name.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// The message is longer than [`MAX_MESSAGE_LEN`](crate::MAX_MESSAGE_LEN).
    #[error("the message is {len} bytes; at most {max} are allowed")]
    MessageTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The content is larger than the limit.
    #[error("the content is {size} bytes; at most {max} are allowed (--max-config-bytes)")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// The config exists in another format.
    #[error("{name} is {format}, not {given}: a config keeps the format of its first revision")]
    FormatMismatch {
        /// The config.
        name: String,
        /// Its format.
        format: Format,
        /// The format the write named.
        given: Format,
    },
    /// Raw content for a config with a schema: raw is never parsed, so it cannot be checked.
    #[error("{name} has a schema, and raw content is never parsed, so it cannot be checked")]
    RawWithSchema {
        /// The config.
        name: String,
    },
    /// The content is not UTF-8 (conf, toml and json must be).
    #[error("line {line}, column {column}: the content is not UTF-8 (store other bytes as raw)")]
    NotUtf8 {
        /// Where the first bad byte is.
        line: u32,
        /// Its column (characters before it on its line, plus one).
        column: u32,
    },
    /// The content does not parse as its format.
    #[error(transparent)]
    Parse(ParseError),
    /// The content fails the config's schema.
    #[error("the content fails the schema: {}", listed(.0))]
    Schema(Vec<Violation>),
}

impl From<ParseError> for WriteError {
    fn from(e: ParseError) -> Self {
        match e.kind {
            ParseErrorKind::NotUtf8 => WriteError::NotUtf8 {
                line: e.line,
                column: e.column,
            },
            ParseErrorKind::Syntax | ParseErrorKind::DuplicateKey { .. } => WriteError::Parse(e),
        }
    }
}

/// The content handed to an operation is not that of the revision it names: a bug in the
/// caller (it read the wrong blob), never the client's fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "internal error (a bug): {name} rev {rev} has sha256 {expected}, but the content given has {given}"
)]
pub struct WrongContent {
    /// The config.
    pub name: String,
    /// The revision.
    pub rev: u64,
    /// Its SHA-256.
    pub expected: String,
    /// The SHA-256 of what was given.
    pub given: String,
}

/// Why a promotion was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PromoteError {
    /// The name is not a valid config name.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// No such config.
    #[error("no config named {name}")]
    NoSuchConfig {
        /// The name.
        name: String,
    },
    /// No such revision.
    #[error("{name} has no revision {rev}")]
    NoSuchRevision {
        /// The config.
        name: String,
        /// The revision asked for.
        rev: u64,
    },
    /// The revision is not a draft.
    #[error("{name} rev {rev} is not a draft; to make an older revision current, roll back to it")]
    NotADraft {
        /// The config.
        name: String,
        /// The revision.
        rev: u64,
    },
    /// The draft is what is current already: it was promoted as `current` (a retried
    /// promotion, say).
    #[error("{name} draft {rev} is already current, promoted as rev {current}")]
    AlreadyPromoted {
        /// The config.
        name: String,
        /// The draft.
        rev: u64,
        /// The revision it was promoted as, current now.
        current: u64,
    },
    /// Another revision became current after the draft was written: promoting it would undo
    /// that change unseen.
    #[error("{name} draft {rev} was written on top of {}, but rev {current} is current now; write a new draft on top of it (diff {rev} {current} shows what changed)", base.map_or_else(|| "no revision".to_owned(), |b| format!("rev {b}")))]
    DraftOutdated {
        /// The config.
        name: String,
        /// The draft.
        rev: u64,
        /// What was current when it was written.
        base: Option<u64>,
        /// What is current now.
        current: u64,
    },
    /// The draft fails the schema in force now.
    #[error("{name} draft {rev} fails the schema in force: {}", listed(.violations))]
    Schema {
        /// The config.
        name: String,
        /// The draft.
        rev: u64,
        /// How.
        violations: Vec<Violation>,
    },
    /// The caller passed the wrong content.
    #[error(transparent)]
    WrongContent(#[from] WrongContent),
}

/// Why a rollback was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RollbackError {
    /// The name is not a valid config name.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// No such config.
    #[error("no config named {name}")]
    NoSuchConfig {
        /// The name.
        name: String,
    },
    /// No such revision.
    #[error("{name} has no revision {rev}")]
    NoSuchRevision {
        /// The config.
        name: String,
        /// The revision asked for.
        rev: u64,
    },
    /// The target is a draft, which was never current: promote it instead.
    #[error("{name} rev {rev} is a draft and was never current; promote it instead")]
    IsADraft {
        /// The config.
        name: String,
        /// The revision.
        rev: u64,
    },
    /// The target fails the schema in force now.
    #[error("{name} rev {rev} fails the schema in force: {}", listed(.violations))]
    Schema {
        /// The config.
        name: String,
        /// The revision rolled back to.
        rev: u64,
        /// How.
        violations: Vec<Violation>,
    },
    /// The caller passed the wrong content.
    #[error(transparent)]
    WrongContent(#[from] WrongContent),
}

/// Why setting a schema was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SetSchemaError {
    /// The name is not a valid config name.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// The schema is larger than [`MAX_SCHEMA_BYTES`](crate::MAX_SCHEMA_BYTES).
    #[error("the schema is {size} bytes; at most {max} are allowed")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The schema does not compile.
    #[error(transparent)]
    Invalid(#[from] InvalidSchema),
    /// The config is raw, which is never parsed, so no schema can check it.
    #[error("{name} is raw, which is never parsed, so no schema can check it")]
    RawConfig {
        /// The config.
        name: String,
    },
    /// The current revision fails the new schema: setting it would make current invalid.
    #[error("{name} rev {rev} (current) fails the new schema; fix the config first: {}", listed(.violations))]
    CurrentFails {
        /// The config.
        name: String,
        /// The current revision.
        rev: u64,
        /// How.
        violations: Vec<Violation>,
    },
    /// The caller passed the wrong content for the current revision (or none).
    #[error(transparent)]
    WrongContent(#[from] WrongContent),
}
