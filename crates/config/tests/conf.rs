//! The conf format: typed values, comments, strings, duplicates, and errors that say where.

use locksmith_config::{Document, Format, ParseError, ParseErrorKind, parse};
use serde_json::json;

fn conf(text: &str) -> Result<Document, ParseError> {
    parse(Format::Conf, text.as_bytes()).map(|d| d.expect("conf is parsed"))
}

fn refused(text: &str) -> ParseError {
    conf(text).expect_err("refused")
}

#[test]
fn the_incident_file_parses_to_typed_values() {
    let doc = conf(
        "# aim lock config\n\
         aim_sensitivity = 0.7\n\
         max_targets = 12\n\
         offset = -3\n\
         big = 18446744073709551615\n\
         exp = 1.5e-3\n\
         enabled = true\n\
         paused = false\n\
         label = \"fleet west\"\n",
    )
    .expect("parses");
    assert_eq!(
        doc.value,
        json!({
            "aim_sensitivity": 0.7, "max_targets": 12, "offset": -3,
            "big": 18_446_744_073_709_551_615_u64, "exp": 0.0015,
            "enabled": true, "paused": false, "label": "fleet west",
        })
    );
    assert!(doc.value["max_targets"].is_i64());
    assert!(doc.value["aim_sensitivity"].is_f64());
    assert_eq!(doc.line_of("aim_sensitivity"), Some(2));
    assert_eq!(doc.line_of("label"), Some(9));
    assert_eq!(doc.line_of("nope"), None);
}

#[test]
fn comments_whole_line_and_trailing_and_blank_lines() {
    let doc = conf(
        "\n   # indented comment\n#\nrate = 5 # per second\nname = \"a # not a comment\"   # but this is\n\t\nflag = true#tight\n",
    )
    .expect("parses");
    assert_eq!(
        doc.value,
        json!({"rate": 5, "name": "a # not a comment", "flag": true})
    );
    assert_eq!(doc.line_of("rate"), Some(4));
    assert_eq!(doc.line_of("flag"), Some(7));
}

#[test]
fn quoted_strings_with_escapes() {
    let doc = conf(r#"s = "say \"hi\"\\ then\nnew line\tand tab"  "#).expect("parses");
    assert_eq!(doc.value["s"], "say \"hi\"\\ then\nnew line\tand tab");
    let doc = conf("empty = \"\"\nunicode = \"ünï ✓\"\n").expect("parses");
    assert_eq!(doc.value, json!({"empty": "", "unicode": "ünï ✓"}));

    let e = refused(r#"s = "bad \q escape""#);
    assert_eq!((e.line, e.column), (1, 10));
    assert!(e.message.contains(r"unknown escape `\q`"), "{e}");
    let e = refused("ok = 1\ns = \"never closed\n");
    assert_eq!((e.line, e.column), (2, 5));
    assert!(e.message.contains("unterminated string"), "{e}");
    let e = refused("s = \"tab\tok but nul \u{0} is not\"");
    assert_eq!((e.line, e.column), (1, 21));
    assert!(e.message.contains("U+0000"), "{e}");
}

#[test]
fn dotted_keys_nest_and_remember_their_lines() {
    let doc = conf("db.host = \"h\"\ndb.port = 5432\ncache.ttl-s = 30\n").expect("parses");
    assert_eq!(
        doc.value,
        json!({"db": {"host": "h", "port": 5432}, "cache": {"ttl-s": 30}})
    );
    assert_eq!(doc.line_of("db"), Some(1));
    assert_eq!(doc.line_of("db.port"), Some(2));
    assert_eq!(doc.line_of("cache.ttl-s"), Some(3));
}

#[test]
fn duplicate_keys_name_both_lines() {
    let e = refused("a = 1\nb = 2\n\n  a = 3\n");
    assert_eq!((e.line, e.column), (4, 3));
    assert_eq!(e.kind, ParseErrorKind::DuplicateKey { first_line: 1 });
    assert_eq!(
        e.to_string(),
        "line 4, column 3: duplicate key `a`: already defined on line 1"
    );
    // A key that is both a value and a table of keys, either way round.
    let e = refused("a = 1\na.b = 2\n");
    assert_eq!(e.kind, ParseErrorKind::DuplicateKey { first_line: 1 });
    assert_eq!(e.line, 2);
    assert!(e.message.contains("line 1 set `a` to a value"), "{e}");
    let e = refused("a.b = 1\na = 2\n");
    assert_eq!(e.kind, ParseErrorKind::DuplicateKey { first_line: 1 });
    assert!(e.message.contains("already defined on line 1"), "{e}");
}

#[test]
fn bad_lines_name_line_and_column() {
    let cases: &[(&str, u32, u32, &str)] = &[
        (
            "ok = 1\nno equals here\n",
            2,
            4,
            "expected `=` after the key `no`",
        ),
        ("key\n", 1, 4, "expected `=` after the key `key`"),
        ("= 5\n", 1, 1, "expected a key"),
        ("[section]\n", 1, 1, "sections like `[name]` are not conf"),
        ("k = \n", 1, 5, "`k` has no value"),
        ("k = # nothing\n", 1, 5, "`k` has no value"),
        ("mode = fast\n", 1, 8, r#"quote strings ("fast")"#),
        ("msg = hello world # hi\n", 1, 7, r#"("hello world")"#),
        ("flag = yes\n", 1, 8, "`yes` is not a boolean"),
        ("flag = True\n", 1, 8, "`True` is not a boolean"),
        ("q = 'single'\n", 1, 5, "quote strings"),
        ("zip = 007\n", 1, 7, "leading zero"),
        ("half = .5\n", 1, 8, "`.5` is not a number"),
        ("whole = 1.\n", 1, 9, "`1.` is not a number"),
        ("dur = 10s\n", 1, 7, r#"quote it if it is a string: "10s""#),
        (
            "huge = 99999999999999999999\n",
            1,
            8,
            "out of range for a 64-bit integer",
        ),
        ("inf = 1e999\n", 1, 7, "out of range for a 64-bit float"),
        ("a = 1 2\n", 1, 7, "unexpected `2` after the value of `a`"),
        ("s = \"x\" y\n", 1, 9, "unexpected `y`"),
        ("a..b = 1\n", 1, 3, "empty part"),
        (".a = 1\n", 1, 1, "empty part"),
        ("my key = 1\n", 1, 4, "found `k`"),
        ("ключ = 1\n", 1, 1, "expected a key"),
        ("k = 1\u{1}\n", 1, 6, "U+0001 is not allowed"),
    ];
    for (text, line, column, needle) in cases {
        let e = refused(text);
        assert_eq!((e.line, e.column), (*line, *column), "{text:?} gave {e}");
        assert!(e.message.contains(needle), "{text:?} gave {e}");
        assert_eq!(e.kind, ParseErrorKind::Syntax, "{text:?}");
    }
    // Columns count characters, not bytes.
    let e = refused("label = \"ünï\" oops\n");
    assert_eq!((e.line, e.column), (1, 15));
}

#[test]
fn keys_nest_at_most_32_deep() {
    let ok = format!("{} = 1", vec!["k"; 32].join("."));
    assert!(conf(&ok).is_ok());
    let deep = format!("{} = 1", vec!["k"; 33].join("."));
    let e = refused(&deep);
    assert!(e.message.contains("more than 32"), "{e}");
}

#[test]
fn non_utf8_names_the_bad_byte() {
    let mut bytes = b"a = 1\nlabel = \"caf".to_vec();
    bytes.push(0xe9); // Latin-1 é
    bytes.extend_from_slice(b"\"\n");
    let e = parse(Format::Conf, &bytes).expect_err("refused");
    assert_eq!(e.kind, ParseErrorKind::NotUtf8);
    assert_eq!((e.line, e.column), (2, 13));
    assert!(e.message.contains("0xe9"), "{e}");
    // A valid multi-byte character before it counts as one column.
    let mut bytes = "ü = ".as_bytes().to_vec();
    bytes.push(0xff);
    let e = parse(Format::Conf, &bytes).expect_err("refused");
    assert_eq!((e.line, e.column), (1, 5));
    // Raw content is never parsed, so any bytes are fine.
    assert_eq!(parse(Format::Raw, &[0xff, 0xfe, 0]), Ok(None));
}

#[test]
fn an_empty_file_is_an_empty_table() {
    for text in ["", "\n", "# only a comment\n", "\r\n\r\n"] {
        assert_eq!(conf(text).expect("parses").value, json!({}), "{text:?}");
    }
}

#[test]
fn crlf_line_endings_are_line_endings() {
    let doc = conf("a = 1\r\nb = \"x\"\r\n# c\r\nc = true # t\r\n").expect("parses");
    assert_eq!(doc.value, json!({"a": 1, "b": "x", "c": true}));
    assert_eq!(doc.line_of("c"), Some(4));
    let e = refused("a = 1\r\nb = oops\r\n");
    assert_eq!((e.line, e.column), (2, 5));
    // A lone carriage return is not a line ending; it is refused where it stands.
    let e = refused("a = 1\rb = 2\n");
    assert_eq!((e.line, e.column), (1, 6));
}

#[test]
fn a_byte_order_mark_is_skipped() {
    let doc = conf("\u{feff}a = 1\nb = 2\n").expect("parses");
    assert_eq!(doc.value, json!({"a": 1, "b": 2}));
    assert_eq!(doc.line_of("a"), Some(1));
    // Columns on the first line count from after it.
    let e = refused("\u{feff}a = nope\n");
    assert_eq!((e.line, e.column), (1, 5));
    // Only at the very start: elsewhere it is an ordinary (refused) character.
    let e = refused("a = 1\n\u{feff}b = 2\n");
    assert_eq!((e.line, e.column), (2, 1));
}
