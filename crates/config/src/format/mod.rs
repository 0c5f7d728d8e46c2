//! The formats a config is stored in, and turning content into a [`Document`] a schema can check.
//!
//! Every parsed format (conf, TOML, JSON) must be UTF-8, may start with a UTF-8 byte-order mark
//! (editors on Windows add one; it is skipped, never part of a key or a value, and columns count
//! from after it), and ends its lines with `\n` or `\r\n`. A parse error names the 1-based line
//! and column where it was found; columns count characters, not bytes. `raw` is never parsed.

mod conf;
mod json;
mod toml;

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::document::Document;

/// How a config's content is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `key = value` lines with `#` comments and typed values (see the crate docs).
    Conf,
    /// TOML 1.0.
    Toml,
    /// JSON (RFC 8259), with duplicate keys refused.
    Json,
    /// Bytes, stored as given and never parsed (so never checked against a schema).
    Raw,
}

/// A format name that is none of `conf`, `toml`, `json`, `raw`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown format {given:?}: use conf, toml, json or raw")]
pub struct UnknownFormat {
    /// What was given.
    pub given: String,
}

impl Format {
    /// Every format, in the order they are documented.
    pub const ALL: [Format; 4] = [Format::Conf, Format::Toml, Format::Json, Format::Raw];

    /// The format named `name` (`conf`, `toml`, `json`, `raw`; exactly, in lowercase — the
    /// same spelling as the JSON form).
    pub fn parse(name: &str) -> Result<Format, UnknownFormat> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == name)
            .ok_or_else(|| UnknownFormat {
                given: name.to_owned(),
            })
    }

    /// Its name, as [`Format::parse`] and the JSON form spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Conf => "conf",
            Format::Toml => "toml",
            Format::Json => "json",
            Format::Raw => "raw",
        }
    }

    /// Whether the format has `#` line comments, so a [`stamp`](crate::stamp()) line can lead it.
    pub fn has_comments(self) -> bool {
        matches!(self, Format::Conf | Format::Toml)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why content could not be parsed, and where: 1-based line and column (in characters).
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    /// The line, from 1.
    pub line: u32,
    /// The column, from 1, counted in characters.
    pub column: u32,
    /// What is wrong, in plain words, with the fix where there is an obvious one.
    pub message: String,
    /// What kind of error, for callers that treat some differently.
    #[serde(flatten)]
    pub kind: ParseErrorKind,
}

/// The kinds of [`ParseError`] a caller may want to tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ParseErrorKind {
    /// Not valid in the format.
    Syntax,
    /// A byte sequence that is not UTF-8, at `line`/`column` (the column counts the valid
    /// characters before it on its line).
    NotUtf8,
    /// A key defined twice (or a key that is both a value and a table of keys): `line` is the
    /// second definition, `first_line` the first.
    DuplicateKey {
        /// Where the key was first defined.
        first_line: u32,
    },
}

impl ParseError {
    pub(crate) fn syntax(line: u32, column: u32, message: impl Into<String>) -> Self {
        Self {
            line,
            column,
            message: message.into(),
            kind: ParseErrorKind::Syntax,
        }
    }
}

/// Parses `content` as `format`: `Ok(None)` for [`Format::Raw`] (never parsed), the
/// [`Document`] otherwise.
pub fn parse(format: Format, content: &[u8]) -> Result<Option<Document>, ParseError> {
    let parser = match format {
        Format::Raw => return Ok(None),
        Format::Conf => conf::parse,
        Format::Toml => toml::parse,
        Format::Json => json::parse,
    };
    let text = utf8(content)?;
    parser(text.strip_prefix('\u{feff}').unwrap_or(text)).map(Some)
}

/// `content` as text, or where its first non-UTF-8 byte is.
fn utf8(content: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(content).map_err(|e| {
        let at = e.valid_up_to();
        let before = content.get(..at).unwrap_or_default();
        // Everything before `at` is valid UTF-8, so the column counts characters.
        let line_start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let column = std::str::from_utf8(before.get(line_start..).unwrap_or_default())
            .map_or(0, |s| s.chars().count());
        let line = before.iter().filter(|b| **b == b'\n').count();
        let byte = content.get(at).copied().unwrap_or_default();
        ParseError {
            line: to_u32(line.saturating_add(1)),
            column: to_u32(column.saturating_add(1)),
            message: format!(
                "byte 0x{byte:02x} is not UTF-8; conf, toml and json content must be UTF-8 \
                 (store other bytes with --format raw)"
            ),
            kind: ParseErrorKind::NotUtf8,
        }
    })
}

/// A count as a line or column number (content is at most a few MiB, so it always fits).
pub(crate) fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Byte offsets → line and column, for parsers that report offsets (TOML spans, JSON keys).
#[derive(Debug)]
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    /// Byte offset where each line starts; the first is 0.
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { text, starts }
    }

    /// The 1-based line of byte `offset`.
    pub(crate) fn line(&self, offset: usize) -> u32 {
        to_u32(self.starts.partition_point(|s| *s <= offset))
    }

    /// The 1-based line and column (in characters) of byte `offset`.
    pub(crate) fn position(&self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.text.len());
        let line = self.line(offset);
        let start = self
            .starts
            .get(line.saturating_sub(1) as usize)
            .copied()
            .unwrap_or_default();
        let column = self
            .text
            .get(start..offset)
            .map_or(0, |s| s.chars().count());
        (line, to_u32(column + 1))
    }

    /// The byte offset of a 1-based line and a 1-based column counted in *bytes*, as
    /// serde_json reports them: the column of the byte it stopped at, or 0 when that was the
    /// line break before `line` — then the offset is the end of the previous line, where the
    /// writer would look. Clamped to the text.
    pub(crate) fn offset_of_byte_column(&self, line: usize, byte_column: usize) -> usize {
        let start = self
            .starts
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or(self.text.len());
        let mut offset = if byte_column == 0 {
            let end = start.saturating_sub(1);
            if end > 0 && self.text.as_bytes().get(end - 1) == Some(&b'\r') {
                end - 1
            } else {
                end
            }
        } else {
            start.saturating_add(byte_column - 1)
        };
        offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        offset
    }
}
