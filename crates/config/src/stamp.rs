//! The provenance line `config get --stamp` puts first, for formats with comments:
//!
//! `# locksmith: NAME rev 12 by alice@node-7 2026-12-07T03:12Z token 4711 sha256 ab12cd34ef56`
//!
//! so a file copied onto a machine still says which revision it is, who wrote it where and
//! when, under which fencing token, and its content's digest (the first 12 hex digits: enough
//! to tell revisions apart by eye; the full one is in `config history`). The digest is of the
//! stored content, without the stamp line.

use locksmith_core::FenceToken;

use crate::format::Format;

/// What a stamp says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampInfo {
    /// The config's name.
    pub name: String,
    /// The revision.
    pub rev: u64,
    /// Who wrote it (the authenticated principal's name).
    pub author: String,
    /// The node it was written from.
    pub node: String,
    /// When, Unix ms.
    pub at_ms: u64,
    /// The fencing token it was written under.
    pub token: FenceToken,
    /// Its content's SHA-256, in hex.
    pub sha256: String,
}

/// Hex digits of the SHA-256 a stamp shows.
pub const STAMP_SHA_LEN: usize = 12;

/// The stamp line for `format` (no line break; put one after it), or `None` for a format
/// without comments (JSON, raw), whose content a leading line would break. Control characters
/// in the author or node become `?`, so the stamp stays one comment line.
pub fn stamp(format: Format, info: &StampInfo) -> Option<String> {
    if !format.has_comments() {
        return None;
    }
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect()
    };
    let sha: String = info.sha256.chars().take(STAMP_SHA_LEN).collect();
    Some(format!(
        "# locksmith: {} rev {} by {}@{} {} token {} sha256 {sha}",
        clean(&info.name),
        info.rev,
        clean(&info.author),
        clean(&info.node),
        utc_minute(info.at_ms),
        info.token,
    ))
}

/// Unix ms as `YYYY-MM-DDTHH:MMZ` (UTC, to the minute).
pub(crate) fn utc_minute(at_ms: u64) -> String {
    let minutes = at_ms / 60_000;
    let days = minutes / (24 * 60);
    let minute_of_day = minutes % (24 * 60);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}Z",
        minute_of_day / 60,
        minute_of_day % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_in_utc() {
        assert_eq!(utc_minute(0), "1970-01-01T00:00Z");
        // 2000-02-29 23:59:59.999 (a leap day in a century leap year)
        assert_eq!(utc_minute(951_868_799_999), "2000-02-29T23:59Z");
        assert_eq!(utc_minute(1_796_613_120_000), "2026-12-07T03:12Z");
        assert_eq!(utc_minute(4_102_444_800_000), "2100-01-01T00:00Z");
    }
}
