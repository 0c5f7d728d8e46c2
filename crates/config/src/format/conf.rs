//! The conf format: `key = value` lines.
//!
//! - A line is blank, a comment (its first non-blank character is `#`), or `key = value`,
//!   optionally followed by blanks and a `# comment`. Blanks are spaces and tabs.
//! - A key is `[A-Za-z0-9_.-]+`; dots nest (`db.port = 5432` is `{"db": {"port": 5432}}`, as
//!   in TOML, so one schema fits a config in either format), with at most
//!   [`MAX_KEY_DEPTH`] parts and no empty part (`a..b`, `.a`, `a.`).
//! - A value is `true`/`false`, an integer (`42`, `-7`: 64-bit, no leading zero), a float
//!   (`0.7`, `-1.5e3`: digits on both sides of the dot), or a double-quoted string with the
//!   escapes `\"`, `\\`, `\n`, `\t` (no raw control characters). Anything else — a bare word
//!   such as `on` or `fast`, `'single quotes'`, `.5`, `007` — is refused with the fix, never
//!   guessed at: `fast` might be a string or a typo of `false`.
//! - A key defined twice, or both as a value and as a table (`a = 1` and `a.b = 2`), is refused
//!   naming both lines: one of them would otherwise win silently.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};

use super::{ParseError, ParseErrorKind, to_u32};
use crate::document::Document;

/// Most parts a dotted key may have (it nests that deep).
pub(crate) const MAX_KEY_DEPTH: usize = 32;

/// A refusal within one line: the byte offset in the line, and the message.
type LineError = (usize, String);

/// One `key = value` line.
struct Entry<'a> {
    key: &'a str,
    /// Byte offset of the key in its line.
    key_at: usize,
    value: Value,
}

pub(super) fn parse(text: &str) -> Result<Document, ParseError> {
    let mut root = Map::new();
    let mut lines = HashMap::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = to_u32(i + 1);
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let entry = entry(line)
            .map_err(|(at, message)| ParseError::syntax(line_no, column(line, at), message))?;
        if let Some(entry) = entry {
            insert(&mut root, &mut lines, entry, line_no, line)?;
        }
    }
    Ok(Document::new(Value::Object(root), lines))
}

/// The 1-based column, in characters, of byte `at` of `line`.
fn column(line: &str, at: usize) -> u32 {
    to_u32(line.get(..at).map_or(0, |s| s.chars().count()) + 1)
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// The offset of the first non-blank character of `line` at or after `at`.
fn skip_blank(line: &str, at: usize) -> usize {
    let rest = line.get(at..).unwrap_or_default();
    at + rest.find(|c| !is_blank(c)).unwrap_or(rest.len())
}

/// A character as messages show it: `x`, or its code point when it would not be visible.
fn show(c: char) -> String {
    if c.is_control() || c.is_whitespace() {
        format!("U+{:04X}", u32::from(c))
    } else {
        format!("`{c}`")
    }
}

fn next_char(line: &str, at: usize) -> Option<char> {
    line.get(at..).and_then(|s| s.chars().next())
}

/// Parses one line: `None` for a blank or comment line.
fn entry(line: &str) -> Result<Option<Entry<'_>>, LineError> {
    let start = skip_blank(line, 0);
    match next_char(line, start) {
        None | Some('#') => return Ok(None),
        Some('[') => {
            return Err((
                start,
                "sections like `[name]` are not conf: write dotted keys (`name.key = value`) \
                 or store the file as toml"
                    .to_owned(),
            ));
        }
        Some(_) => {}
    }
    let rest = line.get(start..).unwrap_or_default();
    let key_end = start + rest.find(|c| !is_key_char(c)).unwrap_or(rest.len());
    let key = line.get(start..key_end).unwrap_or_default();
    if key.is_empty() {
        let found = next_char(line, start).map(show).unwrap_or_default();
        return Err((
            start,
            format!("expected a key (letters, digits, `_`, `-`, `.`), found {found}"),
        ));
    }
    check_key(key, start)?;
    let eq = skip_blank(line, key_end);
    match next_char(line, eq) {
        Some('=') => {}
        None => return Err((eq, format!("expected `=` after the key `{key}`"))),
        Some(c) => {
            return Err((
                eq,
                format!("expected `=` after the key `{key}`, found {}", show(c)),
            ));
        }
    }
    let at = skip_blank(line, eq + 1);
    let (value, end) = value(line, at, key)?;
    let after = skip_blank(line, end);
    match next_char(line, after) {
        None | Some('#') => Ok(Some(Entry {
            key,
            key_at: start,
            value,
        })),
        Some(c) => Err((
            after,
            format!(
                "unexpected {} after the value of `{key}`: a value ends at the end of the \
                 line or at a `#` comment",
                show(c)
            ),
        )),
    }
}

/// Refuses empty parts (`a..b`) and keys nested too deep.
fn check_key(key: &str, start: usize) -> Result<(), LineError> {
    let mut offset = start;
    for (depth, part) in key.split('.').enumerate() {
        if part.is_empty() {
            return Err((
                offset,
                format!("the key `{key}` has an empty part: dots separate non-empty names"),
            ));
        }
        if depth >= MAX_KEY_DEPTH {
            return Err((
                offset,
                format!("the key `{key}` has more than {MAX_KEY_DEPTH} dotted parts"),
            ));
        }
        offset += part.len() + 1;
    }
    Ok(())
}

/// Parses the value starting at byte `at`: the value and the offset just past it.
fn value(line: &str, at: usize, key: &str) -> Result<(Value, usize), LineError> {
    let rest = line.get(at..).unwrap_or_default();
    match rest.chars().next() {
        None | Some('#') => Err((
            at,
            format!("`{key}` has no value: write \"\" for an empty string"),
        )),
        Some('"') => string(line, at),
        Some(_) => {
            let len = rest
                .find(|c: char| is_blank(c) || c == '#')
                .unwrap_or(rest.len());
            let token = rest.get(..len).unwrap_or_default();
            if let Some((i, c)) = token.char_indices().find(|(_, c)| c.is_control()) {
                return Err((
                    at + i,
                    format!("{} is not allowed outside a quoted string", show(c)),
                ));
            }
            // What the writer probably meant, quoted: the rest of the value up to a comment.
            let meant = rest.split('#').next().unwrap_or_default().trim_end();
            scalar(token, meant)
                .map(|v| (v, at + len))
                .map_err(|m| (at, m))
        }
    }
}

/// `s` as a conf string literal.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An unquoted value: a boolean or a number; `meant` is the text a quoted fix would hold.
fn scalar(token: &str, meant: &str) -> Result<Value, String> {
    match token {
        "true" => return Ok(Value::Bool(true)),
        "false" => return Ok(Value::Bool(false)),
        _ => {}
    }
    let lower = token.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n"
    ) {
        return Err(format!(
            "`{token}` is not a boolean: write true or false, or {} for a string",
            quoted(meant)
        ));
    }
    if token.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '.')) {
        return number(token);
    }
    Err(format!(
        "`{token}` is not a value: quote strings ({}); the only bare words are true and false",
        quoted(meant)
    ))
}

/// `[0-9]+` with no leading zero (except `0` itself).
fn is_int_part(digits: &str) -> bool {
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !(digits.len() > 1 && digits.starts_with('0'))
}

/// An integer (`-7`) or a float (`0.7`, `1e-3`); anything else is refused.
fn number(token: &str) -> Result<Value, String> {
    let unsigned = token.strip_prefix(['+', '-']).unwrap_or(token);
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        if !is_int_part(unsigned) {
            return Err(format!(
                "`{token}` has a leading zero: write it without, or {} for a string",
                quoted(token)
            ));
        }
        let plain = token.strip_prefix('+').unwrap_or(token);
        if let Ok(n) = plain.parse::<i64>() {
            return Ok(Value::Number(n.into()));
        }
        if let Ok(n) = plain.parse::<u64>() {
            return Ok(Value::Number(n.into()));
        }
        return Err(format!("`{token}` is out of range for a 64-bit integer"));
    }
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (
            unsigned.get(..i).unwrap_or_default(),
            Some(unsigned.get(i + 1..).unwrap_or_default()),
        ),
        None => (unsigned, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (mantissa, None),
    };
    let well_formed = is_int_part(int)
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
        && exponent.is_none_or(|e| {
            let e = e.strip_prefix(['+', '-']).unwrap_or(e);
            !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
        })
        && (frac.is_some() || exponent.is_some());
    if !well_formed {
        return Err(format!(
            "`{token}` is not a number (numbers look like 42, -7, 0.5, 1.5e-3); \
             quote it if it is a string: {}",
            quoted(token)
        ));
    }
    token
        .parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| format!("`{token}` is out of range for a 64-bit float"))
}

/// Parses a quoted string starting at the `"` at byte `at`.
fn string(line: &str, at: usize) -> Result<(Value, usize), LineError> {
    let body = line.get(at + 1..).unwrap_or_default();
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        let pos = at + 1 + i;
        match c {
            '"' => return Ok((Value::String(out), pos + 1)),
            '\\' => match chars.next() {
                Some((_, '"')) => out.push('"'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, other)) => {
                    return Err((
                        pos,
                        format!(
                            "unknown escape `\\{other}` in a string: the escapes are \\\" \\\\ \\n \\t"
                        ),
                    ));
                }
                None => break,
            },
            c if c.is_control() && c != '\t' => {
                return Err((
                    pos,
                    format!("{} in a string: write \\n or \\t for those", show(c)),
                ));
            }
            c => out.push(c),
        }
    }
    Err((
        at,
        "unterminated string: no closing `\"` on this line".to_owned(),
    ))
}

/// Adds a parsed line to the document, refusing a key defined before.
fn insert(
    root: &mut Map<String, Value>,
    lines: &mut HashMap<String, u32>,
    entry: Entry<'_>,
    line_no: u32,
    line: &str,
) -> Result<(), ParseError> {
    let key = entry.key;
    let duplicate = |first_line: u32, message: String| ParseError {
        line: line_no,
        column: column(line, entry.key_at),
        message,
        kind: ParseErrorKind::DuplicateKey { first_line },
    };
    let mut map = root;
    let mut parts = key.split('.').peekable();
    let mut end = 0;
    while let Some(part) = parts.next() {
        end += part.len();
        // Every part is a bare word, so the key path of a prefix is the key's prefix itself.
        let path = key.get(..end).unwrap_or(key);
        end += 1;
        if parts.peek().is_none() {
            if let Some(first) = lines.get(path) {
                return Err(duplicate(
                    *first,
                    format!("duplicate key `{path}`: already defined on line {first}"),
                ));
            }
            lines.insert(path.to_owned(), line_no);
            map.insert(part.to_owned(), entry.value);
            return Ok(());
        }
        // Look before inserting: most lines share their tables with the line before, and a
        // key is allocated only when it is new.
        let first = match lines.get(path) {
            Some(first) => *first,
            None => {
                lines.insert(path.to_owned(), line_no);
                line_no
            }
        };
        if !map.contains_key(part) {
            map.insert(part.to_owned(), Value::Object(Map::new()));
        }
        match map.get_mut(part) {
            Some(Value::Object(inner)) => map = inner,
            _ => {
                return Err(duplicate(
                    first,
                    format!(
                        "`{key}` makes `{path}` a table of keys, but line {first} set `{path}` \
                         to a value"
                    ),
                ));
            }
        }
    }
    Ok(())
}
