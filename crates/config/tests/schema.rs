//! JSON Schema checks: violations in plain words with key paths and lines; bad schemas refused.

use locksmith_config::{Document, Format, InvalidSchema, Schema, Violation, parse};

fn doc(format: Format, text: &str) -> Document {
    parse(format, text.as_bytes())
        .expect("parses")
        .expect("a document")
}

fn schema(json: &str) -> Schema {
    Schema::compile(json.as_bytes()).expect("a valid schema")
}

fn messages(violations: &[Violation]) -> Vec<String> {
    violations.iter().map(ToString::to_string).collect()
}

const AIM_SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "aim_sensitivity": {"type": "number", "minimum": 0, "maximum": 1},
    "safety_threshold": {"type": "number", "maximum": 1},
    "mode": {"enum": ["slow", "medium"]},
    "enabled": {"type": "boolean"},
    "db": {
      "type": "object",
      "properties": {"port": {"type": "integer"}},
      "required": ["port", "host"]
    }
  },
  "required": ["aim_sensitivity", "safety_threshold"],
  "additionalProperties": false
}"#;

#[test]
fn the_issue_example_reads_exactly() {
    let config = doc(
        Format::Conf,
        "# aim lock config\naim_sensitivity = 0.7\n\nsafety_threshold = 1.7\n",
    );
    let violations = schema(AIM_SCHEMA).check(&config);
    assert_eq!(
        messages(&violations),
        ["safety_threshold: 1.7 is greater than the maximum of 1 (line 4)"]
    );
    assert_eq!(
        violations[0],
        Violation {
            path: "safety_threshold".to_owned(),
            message: "1.7 is greater than the maximum of 1".to_owned(),
            line: Some(4),
        }
    );
}

#[test]
fn required_type_enum_and_unknown_keys_read_in_plain_words() {
    let config = doc(
        Format::Conf,
        "aim_sensitivity = \"high\"\nmode = \"fast\"\nenabled = 1\ndb.port = 1.5\nextra = true\n",
    );
    let violations = schema(AIM_SCHEMA).check(&config);
    assert_eq!(
        messages(&violations),
        [
            r#"aim_sensitivity: expected a number, found the string "high" (line 1)"#,
            r#"mode: "fast" is not one of the allowed values: "slow", "medium" (line 2)"#,
            "enabled: expected a boolean, found the number 1 (line 3)",
            // A missing key is reported at the table that lacks it.
            "db.host: is required but missing (line 4)",
            "db.port: expected an integer, found the number 1.5 (line 4)",
            "extra: is not allowed here (the schema does not list it) (line 5)",
            "safety_threshold: is required but missing",
        ]
    );
}

#[test]
fn toml_and_json_violations_have_lines_too() {
    let s = schema(
        r#"{"properties": {"servers": {"type": "array", "items": {
            "properties": {"port": {"type": "integer", "maximum": 65535}}}}}}"#,
    );
    let toml = doc(
        Format::Toml,
        "[[servers]]\nport = 80\n\n[[servers]]\nport = 70000\n",
    );
    assert_eq!(
        messages(&s.check(&toml)),
        ["servers[1].port: 70000 is greater than the maximum of 65535 (line 5)"]
    );
    let json = doc(
        Format::Json,
        "{\"servers\": [\n  {\"port\": 80},\n  {\"port\": \"x\"}\n]}",
    );
    assert_eq!(
        messages(&s.check(&json)),
        [r#"servers[1].port: expected an integer, found the string "x" (line 3)"#]
    );
}

#[test]
fn whole_document_violations_say_so() {
    let s = schema(r#"{"type": "object"}"#);
    let v = s.check(&doc(Format::Json, "[1]"));
    assert_eq!(
        messages(&v),
        ["the document: expected an object (a table of keys), found an array"]
    );
    let s = schema(r#"{"type": ["object", "null"]}"#);
    let v = s.check(&doc(Format::Json, "3"));
    assert_eq!(
        messages(&v),
        ["the document: expected null or an object (a table of keys), found the number 3"]
    );
}

#[test]
fn keys_that_look_like_indices_or_hold_dots_keep_their_path() {
    let s = schema(r#"{"properties": {"0": {"type": "string"}, "a.b": {"const": 1}}}"#);
    let v = s.check(&doc(Format::Json, "{\"0\": 5,\n\"a.b\": 2}"));
    assert_eq!(
        messages(&v),
        [
            "0: expected a string, found the number 5 (line 1)",
            r#""a.b": must be 1, not 2 (line 2)"#,
        ]
    );
}

#[test]
fn formats_are_asserted() {
    let s = schema(r#"{"properties": {"addr": {"type": "string", "format": "ipv4"}}}"#);
    assert!(
        s.check(&doc(Format::Conf, "addr = \"10.0.0.1\""))
            .is_empty()
    );
    let v = s.check(&doc(Format::Conf, "addr = \"10.0.0.999\""));
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].line, Some(1));
}

#[test]
fn a_passing_document_has_no_violations() {
    let config = doc(
        Format::Conf,
        "aim_sensitivity = 0.7\nsafety_threshold = 0.9\nmode = \"slow\"\n",
    );
    assert!(schema(AIM_SCHEMA).check(&config).is_empty());
}

#[test]
fn an_invalid_schema_is_refused_clearly() {
    let e = Schema::compile(br#"{"type": "nope"}"#).expect_err("refused");
    assert!(
        matches!(&e, InvalidSchema::Invalid { pointer, .. } if pointer == "/type"),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("the schema is not a valid JSON Schema: at /type: "),
        "{e}"
    );
    let e = Schema::compile(br#"{"properties": {"a": {"maximum": "one"}}}"#).expect_err("refused");
    assert!(
        e.to_string().contains("/properties/a/maximum"),
        "names where: {e}"
    );
    let e = Schema::compile(b"{\n  \"type\": \"object\",\n}").expect_err("refused");
    assert!(
        matches!(&e, InvalidSchema::NotJson(p) if p.line == 3),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("the schema is not JSON: line 3, column 1: "),
        "{e}"
    );
    // A schema that points elsewhere would need IO to mean anything.
    let e = Schema::compile(br#"{"$ref": "https://example.com/s.json"}"#).expect_err("refused");
    assert!(matches!(e, InvalidSchema::Invalid { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("names another document; a schema must be one self-contained document"),
        "{e}"
    );
    let e = Schema::compile(br#"{"type": "object", "type": "array"}"#).expect_err("refused");
    assert!(
        matches!(e, InvalidSchema::NotJson(_)),
        "duplicate keys: {e:?}"
    );
    assert!(Schema::compile(b"\xff").is_err());
}

#[test]
fn local_refs_and_drafts_work() {
    let s = schema(
        r##"{"$schema": "http://json-schema.org/draft-07/schema#",
            "definitions": {"port": {"type": "integer", "minimum": 1}},
            "properties": {"port": {"$ref": "#/definitions/port"}}}"##,
    );
    assert_eq!(
        messages(&s.check(&doc(Format::Conf, "port = 0"))),
        ["port: 0 is less than the minimum of 1 (line 1)"]
    );
}

#[test]
fn a_schema_is_known_by_its_bytes() {
    let a = schema(r#"{"type": "object"}"#);
    let b = schema(r#"{"type":"object"}"#);
    assert_ne!(a, b);
    assert_eq!(a, schema(r#"{"type": "object"}"#));
    assert_eq!(
        a.sha256(),
        locksmith_config::sha256_hex(br#"{"type": "object"}"#)
    );
}
