//! TOML, through the `toml` crate's span-keeping parser, so that errors and keys have lines.
//!
//! A TOML document becomes the JSON object a schema checks: integers and floats become
//! numbers, a date-time its RFC 3339 text. A float that is `nan` or `inf` is refused: JSON has
//! no such number, so no schema could check it (write it as a string if it is meant).

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{LineIndex, ParseError};
use crate::document::{Document, push_index, push_key};

pub(super) fn parse(text: &str) -> Result<Document, ParseError> {
    let index = LineIndex::new(text);
    let table = DeTable::parse(text).map_err(|e| {
        let (line, column) = index.position(e.span().map_or(0, |s| s.start));
        ParseError::syntax(line, column, e.message().trim_end())
    })?;
    let mut walk = Walk {
        index: &index,
        lines: HashMap::new(),
        path: String::new(),
    };
    let value = walk.table(table.get_ref())?;
    Ok(Document::new(Value::Object(value), walk.lines))
}

/// Converts the parsed document, noting the line of every key path on the way.
struct Walk<'a> {
    index: &'a LineIndex<'a>,
    lines: HashMap<String, u32>,
    /// The key path of the value being converted.
    path: String,
}

impl Walk<'_> {
    fn table(&mut self, table: &DeTable<'_>) -> Result<Map<String, Value>, ParseError> {
        let mut out = Map::new();
        let base = self.path.len();
        for (key, value) in table.iter() {
            push_key(&mut self.path, key.get_ref());
            let line = self.index.line(key.span().start);
            self.lines.entry(self.path.clone()).or_insert(line);
            out.insert(key.get_ref().to_string(), self.value(value)?);
            self.path.truncate(base);
        }
        Ok(out)
    }

    fn value(&mut self, value: &Spanned<DeValue<'_>>) -> Result<Value, ParseError> {
        let refuse = |message: String| {
            let (line, column) = self.index.position(value.span().start);
            ParseError::syntax(line, column, message)
        };
        Ok(match value.get_ref() {
            DeValue::String(s) => Value::String(s.to_string()),
            DeValue::Boolean(b) => Value::Bool(*b),
            DeValue::Datetime(d) => Value::String(d.to_string()),
            DeValue::Integer(i) => {
                let digits = i.as_str();
                let number = i64::from_str_radix(digits, i.radix())
                    .map(Number::from)
                    .or_else(|_| u64::from_str_radix(digits, i.radix()).map(Number::from));
                match number {
                    Ok(n) => Value::Number(n),
                    Err(_) => {
                        return Err(refuse(format!("{i} is out of range for a 64-bit integer")));
                    }
                }
            }
            DeValue::Float(f) => match f.as_str().parse::<f64>().ok().and_then(Number::from_f64) {
                Some(n) => Value::Number(n),
                None => {
                    return Err(refuse(format!(
                        "{f} has no JSON equivalent, so no schema can check it; \
                             write a finite number, or a string"
                    )));
                }
            },
            DeValue::Array(items) => {
                let base = self.path.len();
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    push_index(&mut self.path, i);
                    let line = self.index.line(item.span().start);
                    self.lines.entry(self.path.clone()).or_insert(line);
                    out.push(self.value(item)?);
                    self.path.truncate(base);
                }
                Value::Array(out)
            }
            DeValue::Table(table) => Value::Object(self.table(table)?),
        })
    }
}
