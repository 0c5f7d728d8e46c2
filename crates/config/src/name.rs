//! Config names: `aim_lock_config.conf`, `fleet/eu-west/limits.toml`.
//!
//! A name is 1–[`MAX_NAME_LEN`] bytes of `[A-Za-z0-9._/-]`, split by `/` into segments, none
//! of them empty (`a//b`, a trailing `/`), `.` or `..`, and it does not start with `/`. Names
//! are paths an agent may write a config to on disk, so none can climb out of its directory or
//! name one file two ways; and `#`, which the revision keys use as a separator, is never in one.
//!
//! Each config is guarded by the lock [`resource_of`] its name, `configs/NAME`; the longest name
//! is the longest that keeps that lock name within the lock table's 255 bytes
//! ([`locksmith_core::resource::MAX_RESOURCE_LEN`]).

use locksmith_core::resource::MAX_RESOURCE_LEN;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The prefix of the lock that guards a config.
pub const LOCK_PREFIX: &str = "configs/";

/// Longest config name, in bytes: 247, so that `configs/NAME` is a valid lock name.
pub const MAX_NAME_LEN: usize = MAX_RESOURCE_LEN - LOCK_PREFIX.len();

/// Why a config name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum InvalidName {
    /// The name is empty.
    #[error("a config name must not be empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("config name is {len} bytes; at most {max} are allowed")]
    TooLong {
        /// Its length, in bytes.
        len: usize,
        /// [`MAX_NAME_LEN`].
        max: usize,
    },
    /// A character outside `[A-Za-z0-9._/-]`.
    #[error("config name {name:?}: {found:?} is not allowed; use letters, digits and . _ - /")]
    Character {
        /// The name.
        name: String,
        /// The first character refused.
        found: char,
    },
    /// It starts with `/`.
    #[error("config name {name:?} must not start with '/': names are relative")]
    LeadingSlash {
        /// The name.
        name: String,
    },
    /// An empty segment: `a//b`, or a trailing `/`.
    #[error("config name {name:?} has an empty segment (`//` or a trailing '/')")]
    EmptySegment {
        /// The name.
        name: String,
    },
    /// A `.` or `..` segment.
    #[error("config name {name:?} has a {segment:?} segment; names are not relative paths")]
    DotSegment {
        /// The name.
        name: String,
        /// `.` or `..`.
        segment: String,
    },
}

/// Checks a config name (see the module docs).
pub fn validate_name(name: &str) -> Result<(), InvalidName> {
    if name.is_empty() {
        return Err(InvalidName::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(InvalidName::TooLong {
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    if let Some(found) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
    {
        return Err(InvalidName::Character {
            name: name.to_owned(),
            found,
        });
    }
    if name.starts_with('/') {
        return Err(InvalidName::LeadingSlash {
            name: name.to_owned(),
        });
    }
    for segment in name.split('/') {
        match segment {
            "" => {
                return Err(InvalidName::EmptySegment {
                    name: name.to_owned(),
                });
            }
            "." | ".." => {
                return Err(InvalidName::DotSegment {
                    name: name.to_owned(),
                    segment: segment.to_owned(),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// The lock that guards config `name`: `configs/NAME`.
pub fn resource_of(name: &str) -> String {
    format!("{LOCK_PREFIX}{name}")
}
