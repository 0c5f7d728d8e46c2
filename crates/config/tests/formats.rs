//! TOML and JSON: documents, key lines, and errors that name line and column; the format names.

use locksmith_config::{Format, ParseErrorKind, parse};
use serde_json::json;

#[test]
fn format_names_round_trip() {
    for f in Format::ALL {
        assert_eq!(Format::parse(f.as_str()), Ok(f));
        assert_eq!(f.to_string(), f.as_str());
        assert_eq!(
            serde_json::to_string(&f).expect("serializes"),
            format!("\"{f}\"")
        );
    }
    assert!(Format::parse("yaml").is_err());
    assert!(Format::parse("JSON").is_err());
    assert_eq!(
        Format::parse("ini").map_err(|e| e.to_string()),
        Err(r#"unknown format "ini": use conf, toml, json or raw"#.to_owned())
    );
    assert!(Format::Conf.has_comments() && Format::Toml.has_comments());
    assert!(!Format::Json.has_comments() && !Format::Raw.has_comments());
}

const TOML: &str = r#"# limits
title = "fleet"
ratio = 0.5

[db]
port = 5432
hosts = [
  "a",
  "b",
]

[[servers]]
name = "x"

[[servers]]
name = "y"
when = 2026-12-07T03:12:00Z
inline = { k = 1 }
"#;

#[test]
fn toml_documents_and_key_lines() {
    let doc = parse(Format::Toml, TOML.as_bytes())
        .expect("parses")
        .expect("a document");
    assert_eq!(
        doc.value,
        json!({
            "title": "fleet", "ratio": 0.5,
            "db": {"port": 5432, "hosts": ["a", "b"]},
            "servers": [
                {"name": "x"},
                {"name": "y", "when": "2026-12-07T03:12:00Z", "inline": {"k": 1}},
            ],
        })
    );
    for (path, line) in [
        ("title", 2),
        ("ratio", 3),
        ("db", 5),
        ("db.port", 6),
        ("db.hosts", 7),
        ("db.hosts[1]", 9),
        ("servers[0].name", 13),
        ("servers[1].name", 16),
        ("servers[1].inline.k", 18),
    ] {
        assert_eq!(doc.line_of(path), Some(line), "{path}");
    }
    assert_eq!(doc.line_of("db.nope"), None);
}

#[test]
fn toml_errors_name_line_and_column() {
    let e = parse(Format::Toml, b"a = 1\nb = \n").expect_err("refused");
    assert_eq!((e.line, e.column), (2, 5), "{e}");
    let e = parse(Format::Toml, b"a = 1\n\nc = [1, 2\n").expect_err("refused");
    assert_eq!(e.line, 3, "{e}");
    let e = parse(Format::Toml, b"a = 1\na = 2\n").expect_err("refused");
    assert_eq!((e.line, e.column), (2, 1), "{e}");
    assert!(e.message.contains("duplicate key"), "{e}");
    // Columns count characters.
    let e = parse(Format::Toml, "s = \"ü\" x\n".as_bytes()).expect_err("refused");
    assert_eq!((e.line, e.column), (1, 9), "{e}");
    assert!(e.to_string().starts_with("line 1, column 9: "), "{e}");
}

#[test]
fn toml_numbers_json_cannot_hold_are_refused() {
    let e = parse(Format::Toml, b"ok = 1\nx = nan\n").expect_err("refused");
    assert_eq!((e.line, e.column), (2, 5), "{e}");
    assert!(e.message.contains("no JSON equivalent"), "{e}");
    assert!(parse(Format::Toml, b"x = -inf\n").is_err());
    let doc = parse(Format::Toml, b"hex = 0xff\nbig = 9223372036854775807\n")
        .expect("parses")
        .expect("a document");
    assert_eq!(doc.value, json!({"hex": 255, "big": i64::MAX}));
}

#[test]
fn toml_with_crlf_a_bom_or_nothing() {
    let doc = parse(Format::Toml, "\u{feff}a = 1\r\nb = 2\r\n".as_bytes())
        .expect("parses")
        .expect("a document");
    assert_eq!(doc.value, json!({"a": 1, "b": 2}));
    assert_eq!(doc.line_of("b"), Some(2));
    let empty = parse(Format::Toml, b"")
        .expect("parses")
        .expect("a document");
    assert_eq!(empty.value, json!({}));
}

#[test]
fn json_documents_and_key_lines() {
    let text = "{\n  \"a\": 1,\n  \"b\": {\n    \"c\": [\n      true,\n      {\"d\": \"x\"}\n    ]\n  },\n  \"e.f\": null,\n  \"esc\\u0061ped\": \"\\\"}\"\n}\n";
    let doc = parse(Format::Json, text.as_bytes())
        .expect("parses")
        .expect("a document");
    assert_eq!(
        doc.value,
        json!({"a": 1, "b": {"c": [true, {"d": "x"}]}, "e.f": null, "escaped": "\"}"})
    );
    for (path, line) in [
        ("a", 2),
        ("b", 3),
        ("b.c", 4),
        ("b.c[0]", 5),
        ("b.c[1]", 6),
        ("b.c[1].d", 6),
        (r#""e.f""#, 9),
        ("escaped", 10),
    ] {
        assert_eq!(doc.line_of(path), Some(line), "{path}");
    }
    // Any JSON value is a document, not only objects.
    let doc = parse(Format::Json, b"[1, 2]")
        .expect("parses")
        .expect("a document");
    assert_eq!(doc.line_of("[1]"), Some(1));
}

#[test]
fn json_errors_name_line_and_column() {
    let e = parse(Format::Json, b"{\n  \"a\": 1,\n  \"b\": tru\n}").expect_err("refused");
    // serde_json stops at the line break after `tru`: the end of line 3.
    assert_eq!((e.line, e.column), (3, 11), "{e}");
    assert!(
        !e.message.contains(" at line "),
        "the position is given once: {e}"
    );
    let e = parse(Format::Json, "{\"ü\": 1 \"x\"}".as_bytes()).expect_err("refused");
    assert_eq!((e.line, e.column), (1, 9), "{e}");
    let e = parse(Format::Json, b"").expect_err("refused");
    assert_eq!((e.line, e.column), (1, 1), "{e}");
    let e = parse(Format::Json, b"{\"a\": 1}\r\n\r\nx").expect_err("refused");
    assert_eq!((e.line, e.column), (3, 1), "{e}");
    let e = parse(Format::Json, b"{\"a\":\r\n").expect_err("refused");
    assert_eq!((e.line, e.column), (1, 6), "{e}");
    // A BOM is skipped.
    assert!(parse(Format::Json, "\u{feff}{\"a\": 1}".as_bytes()).is_ok());
}

#[test]
fn json_duplicate_keys_are_refused_naming_both_lines() {
    let e = parse(
        Format::Json,
        b"{\n  \"a\": 1,\n  \"b\": {\"a\": 2},\n  \"a\": 3\n}",
    )
    .expect_err("refused");
    assert_eq!((e.line, e.column), (4, 3), "{e}");
    assert_eq!(e.kind, ParseErrorKind::DuplicateKey { first_line: 2 });
    assert!(e.message.contains("already defined on line 2"), "{e}");
    // The same key in two objects of an array is no duplicate.
    assert!(parse(Format::Json, br#"[{"a": 1}, {"a": 2}]"#).is_ok());
    // An escaped spelling of the same key is the same key.
    assert!(parse(Format::Json, br#"{"a": 1, "\u0061": 2}"#).is_err());
}

#[test]
fn every_parsed_format_must_be_utf8() {
    for format in [Format::Conf, Format::Toml, Format::Json] {
        let e = parse(format, b"{\"a\": \"\xc3\x28\"}").expect_err("refused");
        assert_eq!(e.kind, ParseErrorKind::NotUtf8, "{format}");
        assert_eq!((e.line, e.column), (1, 8), "{format}");
    }
}
