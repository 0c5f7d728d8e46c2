//! JSON, through serde_json; then one pass over the (now known valid) text for what serde_json
//! does not keep: the line of every key and array element, and duplicate keys — which RFC 8259
//! leaves to the reader and serde_json settles by keeping the last one silently. A config store
//! refuses them, as it does in conf and TOML: one of the two definitions would be ignored.

use std::collections::HashMap;

use serde_json::Value;

use super::{LineIndex, ParseError, ParseErrorKind};
use crate::document::{Document, push_index, push_key};

pub(super) fn parse(text: &str) -> Result<Document, ParseError> {
    let index = LineIndex::new(text);
    let value: Value = serde_json::from_str(text).map_err(|e| {
        // serde_json counts columns in bytes; report characters, like every other format.
        let offset = index.offset_of_byte_column(e.line(), e.column());
        let (line, column) = index.position(offset);
        let message = e.to_string();
        // Its Display appends " at line L column C"; the position is ours to give.
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(m, _)| m);
        ParseError::syntax(line, column, message)
    })?;
    let lines = Scan::new(text, &index).run()?;
    Ok(Document::new(value, lines))
}

/// An open object or array.
enum Frame {
    Object {
        /// Length of the key path of the object itself.
        base: usize,
        /// Its keys so far, with their lines.
        seen: HashMap<String, u32>,
        /// Whether the next string is a key (after `{` or `,`) or a value (after `:`).
        expect_key: bool,
    },
    Array {
        base: usize,
        next: usize,
    },
}

/// One pass over valid JSON text, following the key path of every value.
struct Scan<'a> {
    text: &'a str,
    index: &'a LineIndex<'a>,
    stack: Vec<Frame>,
    path: String,
    lines: HashMap<String, u32>,
}

impl<'a> Scan<'a> {
    fn new(text: &'a str, index: &'a LineIndex<'a>) -> Self {
        Self {
            text,
            index,
            stack: Vec::new(),
            path: String::new(),
            lines: HashMap::new(),
        }
    }

    fn run(mut self) -> Result<HashMap<String, u32>, ParseError> {
        let bytes = self.text.as_bytes();
        let mut at = 0;
        while let Some(&b) = bytes.get(at) {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' | b':' => at += 1,
                b',' => {
                    if let Some(Frame::Object { expect_key, .. }) = self.stack.last_mut() {
                        *expect_key = true;
                    }
                    at += 1;
                }
                b'{' | b'[' => {
                    self.value_at(at);
                    let base = self.path.len();
                    self.stack.push(if b == b'{' {
                        Frame::Object {
                            base,
                            seen: HashMap::new(),
                            expect_key: true,
                        }
                    } else {
                        Frame::Array { base, next: 0 }
                    });
                    at += 1;
                }
                b'}' | b']' => {
                    self.stack.pop();
                    at += 1;
                }
                b'"' => {
                    let end = string_end(bytes, at);
                    if let Some(Frame::Object {
                        expect_key: expect_key @ true,
                        ..
                    }) = self.stack.last_mut()
                    {
                        *expect_key = false;
                        let raw = self.text.get(at..end).unwrap_or_default();
                        self.key(raw, at)?;
                    } else {
                        self.value_at(at);
                    }
                    at = end;
                }
                _ => {
                    self.value_at(at);
                    at += bytes
                        .get(at..)
                        .unwrap_or_default()
                        .iter()
                        .position(|b| {
                            matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                        })
                        .unwrap_or(bytes.len() - at);
                }
            }
        }
        Ok(self.lines)
    }

    /// A key at byte `at` (`raw` with its quotes): its path is the value's that follows.
    fn key(&mut self, raw: &str, at: usize) -> Result<(), ParseError> {
        let key = if raw.contains('\\') {
            serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_owned())
        } else {
            raw.get(1..raw.len().saturating_sub(1))
                .unwrap_or_default()
                .to_owned()
        };
        let line = self.index.line(at);
        let Some(Frame::Object { base, seen, .. }) = self.stack.last_mut() else {
            return Ok(());
        };
        if let Some(first) = seen.get(&key) {
            let (line, column) = self.index.position(at);
            return Err(ParseError {
                line,
                column,
                message: format!("duplicate key {raw}: already defined on line {first}"),
                kind: ParseErrorKind::DuplicateKey { first_line: *first },
            });
        }
        self.path.truncate(*base);
        push_key(&mut self.path, &key);
        seen.insert(key, line);
        self.lines.entry(self.path.clone()).or_insert(line);
        Ok(())
    }

    /// A value starts at byte `at`: an array element gets its path and line here (an object
    /// member got them from its key).
    fn value_at(&mut self, at: usize) {
        if let Some(Frame::Array { base, next }) = self.stack.last_mut() {
            self.path.truncate(*base);
            push_index(&mut self.path, *next);
            *next += 1;
            let line = self.index.line(at);
            self.lines.entry(self.path.clone()).or_insert(line);
        }
    }
}

/// The offset just past the string starting with the `"` at `at`.
fn string_end(bytes: &[u8], at: usize) -> usize {
    let mut i = at + 1;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}
