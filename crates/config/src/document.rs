//! A parsed config: its value as JSON (what a schema checks) and the line of every key.
//!
//! Key paths name a value the way a reader writes it: keys joined by `.`, array elements as
//! `[i]` — `servers[2].port`. A key that is not a bare word (`[A-Za-z0-9_-]+`) is written as a
//! JSON string, so a path is never ambiguous: `regions."eu.west".weight`. The whole document is
//! the empty path.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

/// A parsed config.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The content as JSON: a conf file or a TOML document is an object, a JSON document any
    /// value.
    pub value: Value,
    /// The line each key path was (first) defined on.
    lines: HashMap<String, u32>,
}

impl Document {
    pub(crate) fn new(value: Value, lines: HashMap<String, u32>) -> Self {
        Self { value, lines }
    }

    /// The line where the value at `path` (see the module docs) was defined: for conf always,
    /// for TOML and JSON for every key and array element. A table that only dotted keys
    /// created (`a.b = 1` creates `a`) is on the line of its first key. `None` for a path that
    /// is not in the document, and for the whole document (the empty path).
    pub fn line_of(&self, path: &str) -> Option<u32> {
        self.lines.get(path).copied()
    }
}

/// Whether `key` is written bare in a key path.
fn is_bare(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Appends `key` to `path`: `.key`, or `key` at the start, quoted unless bare.
pub(crate) fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    if is_bare(key) {
        path.push_str(key);
    } else {
        // A string always serializes; the fallback only keeps this infallible.
        path.push_str(&serde_json::to_string(key).unwrap_or_else(|_| format!("{key:?}")));
    }
}

/// Appends an array index to `path`: `[i]`.
pub(crate) fn push_index(path: &mut String, index: usize) {
    // Writing to a String cannot fail.
    let _ = write!(path, "[{index}]");
}

/// The key path of a JSON pointer (`/servers/2/port` → `servers[2].port`) into `value`: a
/// segment is an index only where `value` has an array, so a key named `2` stays a key.
pub(crate) fn path_of_pointer(value: &Value, pointer: &str) -> String {
    let mut path = String::new();
    let mut at = Some(value);
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        match at {
            Some(Value::Array(items)) => match segment.parse::<usize>() {
                Ok(i) => {
                    push_index(&mut path, i);
                    at = items.get(i);
                }
                Err(_) => {
                    push_key(&mut path, &segment);
                    at = None;
                }
            },
            Some(Value::Object(map)) => {
                push_key(&mut path, &segment);
                at = map.get(&segment);
            }
            _ => {
                push_key(&mut path, &segment);
                at = None;
            }
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_quote_keys_that_are_not_bare_words() {
        let mut p = String::new();
        push_key(&mut p, "regions");
        push_key(&mut p, "eu.west");
        push_index(&mut p, 2);
        push_key(&mut p, "weight");
        assert_eq!(p, r#"regions."eu.west"[2].weight"#);
        let mut q = String::new();
        push_key(&mut q, "");
        assert_eq!(q, r#""""#);
    }

    #[test]
    fn pointers_read_indices_only_in_arrays() {
        let v = serde_json::json!({"2": {"a/b": [0, {"x": 1}]}});
        assert_eq!(path_of_pointer(&v, "/2/a~1b/1/x"), r#"2."a/b"[1].x"#);
        assert_eq!(path_of_pointer(&v, ""), "");
    }
}
