//! Unified diffs between contents, and the provenance stamp line.

use locksmith_config::{Format, StampInfo, diff, sha256_hex, stamp};
use locksmith_core::FenceToken;

#[test]
fn a_unified_diff_with_headers_and_three_lines_of_context() {
    let a = "a = 1\nb = 2\nc = 3\nd = 4\ne = 5\nf = 6\ng = 7\nh = 8\n";
    let b = "a = 1\nb = 2\nc = 3\nd = 4\ne = 50\nf = 6\ng = 7\nh = 8\n";
    assert_eq!(
        diff("cfg rev 1", a.as_bytes(), "cfg rev 2", b.as_bytes()),
        "--- cfg rev 1\n+++ cfg rev 2\n@@ -2,7 +2,7 @@\n b = 2\n c = 3\n d = 4\n-e = 5\n+e = 50\n f = 6\n g = 7\n h = 8\n"
    );
}

#[test]
fn a_missing_final_newline_is_shown() {
    assert_eq!(
        diff("a", b"x\ny\n", "b", b"x\nz"),
        "--- a\n+++ b\n@@ -1,2 +1,2 @@\n x\n-y\n+z\n\\ No newline at end of file\n"
    );
}

#[test]
fn identical_inputs_give_an_empty_diff() {
    assert_eq!(diff("a", b"same\n", "b", b"same\n"), "");
    assert_eq!(diff("a", b"", "b", b""), "");
    assert_eq!(diff("a", b"\xff\x00", "b", b"\xff\x00"), "");
}

#[test]
fn binary_inputs_give_one_line_with_sizes_and_digests() {
    let a = b"\xff\xfe binary";
    let b = b"text\n";
    assert_eq!(
        diff("cfg rev 1", a, "cfg rev 2", b),
        format!(
            "Binary contents cfg rev 1 (9 bytes, sha256 {}) and cfg rev 2 (5 bytes, sha256 {}) differ\n",
            sha256_hex(a),
            sha256_hex(b)
        )
    );
}

fn info() -> StampInfo {
    StampInfo {
        name: "aim_lock_config.conf".to_owned(),
        rev: 12,
        author: "alice".to_owned(),
        node: "node-7".to_owned(),
        at_ms: 1_796_613_120_000 + 59_999, // 2026-12-07T03:12:59.999Z
        token: FenceToken(4711),
        sha256: sha256_hex(b"aim_sensitivity = 0.7\n"),
    }
}

#[test]
fn the_stamp_line_for_formats_with_comments() {
    let sha = sha256_hex(b"aim_sensitivity = 0.7\n");
    let expected = format!(
        "# locksmith: aim_lock_config.conf rev 12 by alice@node-7 2026-12-07T03:12Z token 4711 sha256 {}",
        &sha[..12]
    );
    assert_eq!(
        stamp(Format::Conf, &info()).as_deref(),
        Some(expected.as_str())
    );
    assert_eq!(
        stamp(Format::Toml, &info()).as_deref(),
        Some(expected.as_str())
    );
    // It is a comment: the stamped file still parses, to the same document.
    let content = "aim_sensitivity = 0.7\n";
    for format in [Format::Conf, Format::Toml] {
        let stamped = format!("{expected}\n{content}");
        assert_eq!(
            locksmith_config::parse(format, stamped.as_bytes()).map(|d| d.map(|d| d.value)),
            locksmith_config::parse(format, content.as_bytes()).map(|d| d.map(|d| d.value)),
        );
    }
}

#[test]
fn no_stamp_for_json_or_raw() {
    assert_eq!(stamp(Format::Json, &info()), None);
    assert_eq!(stamp(Format::Raw, &info()), None);
}

#[test]
fn a_stamp_stays_one_line() {
    let mut odd = info();
    odd.author = "mallory\n[evil]".to_owned();
    let line = stamp(Format::Conf, &odd).expect("a stamp");
    assert!(!line.contains('\n'), "{line}");
    assert!(line.contains("by mallory?[evil]@node-7 "), "{line}");
}
