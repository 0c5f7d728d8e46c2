//! Making a stored revision current again: promoting a draft, rolling back. Both add a new
//! revision with the old content, re-checked against the schema in force now.

use super::Applied;
use super::error::{PromoteError, RollbackError, WrongContent};
use super::records::{RevisionKind, RevisionMeta, Writer};
use super::write::stamp;
use super::{Config, Configs, EVENT_PROMOTED, EVENT_ROLLED_BACK};
use crate::digest::sha256_hex;
use crate::format::{Format, parse};
use crate::name::validate_name;
use crate::schema::{Schema, Violation};

/// Checks stored content of `format` against `schema`: a revision that parsed when written
/// parses now, unless the parser grew stricter since — then that is the one violation.
pub(super) fn check_stored(schema: &Schema, format: Format, content: &[u8]) -> Vec<Violation> {
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
pub(super) fn verify(meta: &RevisionMeta, content: &[u8]) -> Result<(), WrongContent> {
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
