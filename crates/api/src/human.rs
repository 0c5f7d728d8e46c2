//! How a refusal reads to a person: one line naming the resource, the holder, and their health.

use std::time::{Duration, UNIX_EPOCH};

use locksmith_core::{HoldState, HoldView, HolderView};

/// Formats a wall-clock Unix-ms time as RFC 3339 (UTC, seconds).
pub fn format_wall(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Formats a duration in ms compactly: `850ms`, `12s`, `31m`, `2h05m`, `3d04h`.
pub fn format_age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// `orchestrator@node-7 (pid 4121) since 2026-11-23T03:12:00Z, last heartbeat 2s ago`
pub fn describe_holder(h: &HolderView, now_ms: u64) -> String {
    let stale = if h.stale {
        " (STALE: heartbeat overdue, reclaimed when its TTL runs out)"
    } else {
        ""
    };
    format!(
        "{} since {}, last heartbeat {} ago, lease {} token {}{}",
        h.owner,
        format_wall(h.granted_at_ms),
        format_age(now_ms.saturating_sub(h.last_heartbeat_ms)),
        h.lease,
        h.token,
        stale
    )
}

/// `aim_lock_config.conf: HOT — held by orchestrator@node-7 (pid 4121) since …`
pub fn hot_line(resource: &str, holders: &[HolderView], now_ms: u64) -> String {
    if holders.is_empty() {
        return format!(
            "{resource}: HOT — every slot is promised to queued waiters; retry with --wait"
        );
    }
    let held: Vec<String> = holders.iter().map(|h| describe_holder(h, now_ms)).collect();
    format!("{resource}: HOT — held by {}", held.join("; and by "))
}

/// `aim_lock_config.conf: FROZEN — hold 12 by alice@ops: "clearing stale lock" (1m29s left)`
pub fn frozen_line(resource: &str, holds: &[HoldView]) -> String {
    let held: Vec<String> = holds
        .iter()
        .filter(|h| h.state == HoldState::Active)
        .map(|h| {
            format!(
                "hold {} by {}: {:?} ({} left)",
                h.record.hold,
                h.record.by,
                h.record.reason,
                format_age(h.ends_in_ms)
            )
        })
        .collect();
    format!(
        "{resource}: FROZEN — {}; wait for the hold to end (or 'locksmith unhold ID')",
        held.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(format_age(850), "850ms");
        assert_eq!(format_age(12_000), "12s");
        assert_eq!(format_age(31 * 60_000), "31m00s");
        assert_eq!(format_age(2 * 3_600_000 + 5 * 60_000), "2h05m");
    }

    #[test]
    fn wall_time_is_rfc3339() {
        assert_eq!(format_wall(0), "1970-01-01T00:00:00Z");
    }
}
