//! JSON Schema checks of a parsed config, with the `jsonschema` crate.
//!
//! A schema is one self-contained JSON document (any draft the crate knows; 2020-12 when it
//! names none). A `$ref` to another document is refused when the schema is compiled — resolving
//! it would mean IO, and a schema whose meaning depends on a URL that can change under it is
//! not a validator. `format` is asserted, not only annotated: a schema that says
//! `"format": "ipv4"` means it.
//!
//! Violations read in plain words and name the key path and, where known, the line:
//! `safety_threshold: 1.7 is greater than the maximum of 1 (line 4)`. They come sorted by line
//! (then key path), as a compiler lists errors.

use std::fmt;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{JsonType, ReferencingError, ValidationError, Validator};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::digest::sha256_hex;
use crate::document::{Document, path_of_pointer, push_key};
use crate::format::{Format, ParseError, parse};

/// A compiled JSON Schema.
#[derive(Clone)]
pub struct Schema {
    sha256: String,
    validator: Validator,
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// Two schemas are the same when their bytes are.
impl PartialEq for Schema {
    fn eq(&self, other: &Self) -> bool {
        self.sha256 == other.sha256
    }
}

impl Eq for Schema {}

/// Why a schema was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum InvalidSchema {
    /// The bytes are not JSON.
    #[error("the schema is not JSON: {0}")]
    NotJson(ParseError),
    /// JSON, but not a JSON Schema this crate can use.
    #[error(
        "the schema is not a valid JSON Schema: {}{message}",
        at_pointer(pointer)
    )]
    Invalid {
        /// Where in the schema (a JSON pointer; empty for the whole schema).
        pointer: String,
        /// What is wrong.
        message: String,
    },
}

fn at_pointer(pointer: &str) -> String {
    if pointer.is_empty() {
        String::new()
    } else {
        format!("at {pointer}: ")
    }
}

/// One way a document fails its schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The key path (`a.b[2]`; empty for the whole document).
    pub path: String,
    /// What is wrong, in plain words.
    pub message: String,
    /// The line the value is on, when the format tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "the document: {}", self.message)?;
        } else {
            write!(f, "{}: {}", self.path, self.message)?;
        }
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

impl Schema {
    /// Compiles a schema from its JSON bytes (UTF-8, duplicate keys refused, as for configs).
    pub fn compile(bytes: &[u8]) -> Result<Schema, InvalidSchema> {
        let document = parse(Format::Json, bytes)
            .map_err(InvalidSchema::NotJson)?
            .map(|d| d.value)
            .unwrap_or_default();
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&document)
            .map_err(|e| InvalidSchema::Invalid {
                pointer: e.instance_path().as_str().to_owned(),
                message: match e.kind() {
                    ValidationErrorKind::Referencing(ReferencingError::Unretrievable {
                        uri,
                        ..
                    }) => format!(
                        "$ref {uri:?} names another document; a schema must be one \
                         self-contained document (use \"$defs\" and \"#/$defs/…\" references)"
                    ),
                    _ => e.to_string(),
                },
            })?;
        Ok(Schema {
            sha256: sha256_hex(bytes),
            validator,
        })
    }

    /// The SHA-256 of the bytes it was compiled from, in hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Every violation of the schema by `document`, sorted by line (those with none last),
    /// then key path;
    /// empty when it passes.
    pub fn check(&self, document: &Document) -> Vec<Violation> {
        let mut out = Vec::new();
        for error in self.validator.iter_errors(&document.value) {
            violations(document, &error, &mut out);
        }
        // Stable, and by path within a line, so the order never depends on the schema's.
        out.sort_by(|a, b| {
            (a.line.unwrap_or(u32::MAX), &a.path).cmp(&(b.line.unwrap_or(u32::MAX), &b.path))
        });
        out
    }
}

/// A value as a message quotes it: its JSON, cut short when long.
fn shown(value: &Value) -> String {
    const MAX: usize = 60;
    let text = value.to_string();
    if text.chars().count() <= MAX {
        return text;
    }
    let cut: String = text.chars().take(MAX).collect();
    format!("{cut}…")
}

/// `a`/`an` and the type's name, as a sentence says it.
fn type_name(t: JsonType) -> &'static str {
    match t {
        JsonType::Array => "an array",
        JsonType::Boolean => "a boolean",
        JsonType::Integer => "an integer",
        JsonType::Null => "null",
        JsonType::Number => "a number",
        JsonType::Object => "an object (a table of keys)",
        JsonType::String => "a string",
    }
}

/// What a value is, as a sentence says it: `the string "high"`, `the number 1.5`.
fn described(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(_) => format!("the boolean {}", shown(value)),
        Value::Number(_) => format!("the number {}", shown(value)),
        Value::String(_) => format!("the string {}", shown(value)),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object (a table of keys)".to_owned(),
    }
}

/// The violations one validation error stands for (one per unexpected key, say).
fn violations(document: &Document, error: &ValidationError<'_>, out: &mut Vec<Violation>) {
    let path = path_of_pointer(&document.value, error.instance_path().as_str());
    let instance = error.instance();
    let at = |path: String, message: String| {
        let line = document.line_of(&path);
        Violation {
            path,
            message,
            line,
        }
    };
    match error.kind() {
        ValidationErrorKind::Required { property } => {
            let key = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_owned);
            let mut missing = path.clone();
            push_key(&mut missing, &key);
            out.push(Violation {
                path: missing,
                message: "is required but missing".to_owned(),
                // The object that lacks it, where it is on a line (the top level is not).
                line: document.line_of(&path),
            });
        }
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            for key in unexpected {
                let mut extra = path.clone();
                push_key(&mut extra, key);
                out.push(at(
                    extra,
                    "is not allowed here (the schema does not list it)".to_owned(),
                ));
            }
        }
        ValidationErrorKind::Type { kind } => {
            let expected: Vec<&str> = match kind {
                TypeKind::Single(t) => vec![type_name(*t)],
                TypeKind::Multiple(set) => set.iter().map(type_name).collect(),
            };
            out.push(at(
                path,
                format!(
                    "expected {}, found {}",
                    expected.join(" or "),
                    described(instance)
                ),
            ));
        }
        ValidationErrorKind::Enum { options } => {
            let allowed = match options.as_ref() {
                Value::Array(items) => items.iter().map(shown).collect::<Vec<_>>().join(", "),
                other => shown(other),
            };
            out.push(at(
                path,
                format!(
                    "{} is not one of the allowed values: {allowed}",
                    shown(instance)
                ),
            ));
        }
        ValidationErrorKind::Constant { expected_value } => {
            out.push(at(
                path,
                format!("must be {}, not {}", shown(expected_value), shown(instance)),
            ));
        }
        // The crate's own wording is plain already ("1.7 is greater than the maximum of 1",
        // "\"x\" is shorter than 3 characters").
        _ => out.push(at(path, error.to_string())),
    }
}
