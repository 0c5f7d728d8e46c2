//! Unified diffs between two revisions' content.

use similar::TextDiff;

use crate::digest::sha256_hex;

/// Lines of unchanged context around each change, as `diff -u` and git show.
const CONTEXT: usize = 3;

/// The unified diff from `a` to `b` (`--- a_label` / `+++ b_label` headers, 3 lines of
/// context, `\ No newline at end of file` where one side lacks it): empty when the contents
/// are equal. When either side is not UTF-8 there are no lines to compare, and the diff is
/// one line saying the contents differ, with their sizes and SHA-256s (as `diff` says of
/// binary files).
pub fn diff(a_label: &str, a: &[u8], b_label: &str, b: &[u8]) -> String {
    if a == b {
        return String::new();
    }
    match (std::str::from_utf8(a), std::str::from_utf8(b)) {
        (Ok(a), Ok(b)) => TextDiff::from_lines(a, b)
            .unified_diff()
            .context_radius(CONTEXT)
            .header(a_label, b_label)
            .to_string(),
        _ => format!(
            "Binary contents {a_label} ({} bytes, sha256 {}) and {b_label} ({} bytes, sha256 {}) differ\n",
            a.len(),
            sha256_hex(a),
            b.len(),
            sha256_hex(b),
        ),
    }
}
