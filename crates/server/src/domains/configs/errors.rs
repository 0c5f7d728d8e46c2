//! How the config store's refusals become API errors: each names the config and the next
//! step. Fencing refusals are phrased exactly as a fence check or a renew phrases them.

use locksmith_api::{ErrorBody, ErrorCode};
use locksmith_config::{
    InvalidName, PromoteError, RollbackError, SetSchemaError, Violation, WriteError,
};
use locksmith_core::WriterError;

use crate::engine::Fenced;
use crate::request::Refusal;

impl Refusal for WriterError {
    fn body(&self) -> ErrorBody {
        match self {
            WriterError::Lease(e) => ErrorBody::from_lease(e),
            WriterError::Stale { fence, holders } => ErrorBody {
                holders: holders.clone(),
                ..ErrorBody::from_fence(fence)
            },
        }
    }
}

impl<E: Refusal> Refusal for Fenced<E> {
    fn body(&self) -> ErrorBody {
        match self {
            Fenced::Fence(e) => e.body(),
            Fenced::Refused(e) => e.body(),
        }
    }
}

/// `invalid_request` on the field `name`.
pub fn bad_name(e: &InvalidName) -> ErrorBody {
    ErrorBody::invalid("name", format!("is not a config name: {e}"))
}

fn not_found(name: &str) -> ErrorBody {
    ErrorBody {
        resource: Some(name.to_owned()),
        ..ErrorBody::new(
            ErrorCode::ConfigNotFound,
            format!(
                "no config named {name}; 'locksmith config ls' lists them, and \
                 'locksmith config put {name} FILE' makes it"
            ),
        )
    }
}

fn no_revision(name: &str, rev: u64) -> ErrorBody {
    ErrorBody {
        resource: Some(name.to_owned()),
        ..ErrorBody::new(
            ErrorCode::RevisionNotFound,
            format!("{name} has no revision {rev}; 'locksmith config history {name}' lists them"),
        )
    }
}

/// `config_not_found` for `name`.
pub fn config_not_found(name: &str) -> ErrorBody {
    not_found(name)
}

/// `revision_not_found` for `name` rev `rev`.
pub fn revision_not_found(name: &str, rev: u64) -> ErrorBody {
    no_revision(name, rev)
}

fn invalid_config(name: Option<&str>, message: String, violations: &[Violation]) -> ErrorBody {
    ErrorBody {
        resource: name.map(str::to_owned),
        violations: violations.to_vec(),
        ..ErrorBody::new(ErrorCode::InvalidConfig, message)
    }
}

/// A server bug (it handed the store the wrong blob): 500, never the client's fault.
fn bug(e: &impl std::fmt::Display) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::Internal,
        format!("{e}; nothing was stored — report it with the server log"),
    )
}

impl Refusal for WriteError {
    fn body(&self) -> ErrorBody {
        let nothing = "nothing was stored";
        match self {
            WriteError::InvalidName(e) => bad_name(e),
            WriteError::MessageTooLong { .. } => ErrorBody::invalid("message", self),
            WriteError::TooLarge { .. } => ErrorBody::new(
                ErrorCode::ConfigTooLarge,
                format!("{self}; {nothing} — split the config, or raise --max-config-bytes"),
            ),
            WriteError::FormatMismatch { name, format, .. } => ErrorBody {
                resource: Some(name.clone()),
                ..ErrorBody::invalid(
                    "format",
                    format!("is wrong: {self}; {nothing} — write it as --format {format}"),
                )
            },
            WriteError::RawWithSchema { name } => ErrorBody {
                resource: Some(name.clone()),
                ..ErrorBody::invalid("format", format!("is wrong: {self}; {nothing}"))
            },
            WriteError::NotUtf8 { line, column } => ErrorBody {
                parse_error: Some(locksmith_config::ParseError {
                    line: *line,
                    column: *column,
                    message: "the content is not UTF-8".to_owned(),
                    kind: locksmith_config::ParseErrorKind::NotUtf8,
                }),
                ..invalid_config(None, format!("{self}; {nothing}"), &[])
            },
            WriteError::Parse(e) => ErrorBody {
                parse_error: Some(e.clone()),
                ..invalid_config(
                    None,
                    format!("{e}; {nothing} — fix it and write again"),
                    &[],
                )
            },
            WriteError::Schema(violations) => invalid_config(
                None,
                format!("{self}; {nothing} — fix the content, or the schema"),
                violations,
            ),
        }
    }
}

impl Refusal for PromoteError {
    fn body(&self) -> ErrorBody {
        match self {
            PromoteError::InvalidName(e) => bad_name(e),
            PromoteError::NoSuchConfig { name } => not_found(name),
            PromoteError::NoSuchRevision { name, rev } => no_revision(name, *rev),
            PromoteError::NotADraft { name, .. }
            | PromoteError::AlreadyPromoted { name, .. }
            | PromoteError::DraftOutdated { name, .. } => ErrorBody {
                resource: Some(name.clone()),
                ..ErrorBody::new(ErrorCode::NotADraft, format!("{self}; nothing was stored"))
            },
            PromoteError::Schema {
                name, violations, ..
            } => invalid_config(
                Some(name),
                format!("{self}; nothing was stored — write a new draft that passes"),
                violations,
            ),
            PromoteError::WrongContent(e) => bug(e),
        }
    }
}

impl Refusal for RollbackError {
    fn body(&self) -> ErrorBody {
        match self {
            RollbackError::InvalidName(e) => bad_name(e),
            RollbackError::NoSuchConfig { name } => not_found(name),
            RollbackError::NoSuchRevision { name, rev } => no_revision(name, *rev),
            RollbackError::IsADraft { name, .. } => ErrorBody {
                resource: Some(name.clone()),
                ..ErrorBody::invalid("to", format!("is a draft: {self}; nothing was stored"))
            },
            RollbackError::Schema {
                name, violations, ..
            } => invalid_config(
                Some(name),
                format!("{self}; nothing was stored — write a revision that passes instead"),
                violations,
            ),
            RollbackError::WrongContent(e) => bug(e),
        }
    }
}

impl Refusal for SetSchemaError {
    fn body(&self) -> ErrorBody {
        match self {
            SetSchemaError::InvalidName(e) => bad_name(e),
            SetSchemaError::TooLarge { .. } | SetSchemaError::Invalid(_) => {
                ErrorBody::invalid("schema", format!("is not usable: {self}; nothing was set"))
            }
            SetSchemaError::RawConfig { name } => ErrorBody {
                resource: Some(name.clone()),
                ..ErrorBody::invalid("schema", format!("cannot apply: {self}"))
            },
            SetSchemaError::CurrentFails {
                name, violations, ..
            } => invalid_config(
                Some(name),
                format!("{self}; the schema was not set"),
                violations,
            ),
            SetSchemaError::WrongContent(e) => bug(e),
        }
    }
}
