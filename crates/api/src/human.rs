//! How a refusal reads to a person: one line naming the resource, the holder, and their health.

use std::time::{Duration, UNIX_EPOCH};

use locksmith_core::{HoldState, HoldView, HolderView, NO_EXPIRY_TTL_MS, Owner};

use crate::fleetlock;

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

/// How a lease owner is named to people: `orchestrator@node-7 (pid 4121)`; a FleetLock holder,
/// whose pid is a placeholder, is `FleetLock client ID`.
pub fn owner_name(owner: &Owner) -> String {
    if fleetlock::is_client(owner) {
        format!("FleetLock client {}", owner.node)
    } else {
        owner.to_string()
    }
}

/// Whether a holder's lease can expire by itself: not a FleetLock slot, which has no TTL
/// (unless the server's `--fleetlock-stale-after` gives it one) and is held until released.
pub fn expires(h: &HolderView) -> bool {
    h.ttl_ms < NO_EXPIRY_TTL_MS
}

/// The time a holder's lease has left: `13s`, or `-` for one that never expires.
pub fn ttl_left(h: &HolderView) -> String {
    if expires(h) {
        format_age(h.ttl_left_ms)
    } else {
        "-".to_string()
    }
}

/// `orchestrator@node-7 (pid 4121) since 2026-11-23T03:12:00Z, last heartbeat 2s ago`, or
/// `FleetLock client c0ffee since …, held until it reports steady state` (it sends no
/// heartbeats).
pub fn describe_holder(h: &HolderView, now_ms: u64) -> String {
    let stale = if h.stale {
        " (STALE: heartbeat overdue, reclaimed when its TTL runs out)"
    } else {
        ""
    };
    let health = if fleetlock::is_client(&h.owner) && !expires(h) {
        "held until it reports steady state".to_string()
    } else {
        format!(
            "last heartbeat {} ago",
            format_age(now_ms.saturating_sub(h.last_heartbeat_ms))
        )
    };
    format!(
        "{} since {}, {health}, lease {} token {}{}",
        owner_name(&h.owner),
        format_wall(h.granted_at_ms),
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
    fn a_fleetlock_holder_reads_as_a_client_with_no_pid_heartbeat_or_ttl() {
        let h = HolderView {
            lease: locksmith_core::LeaseId(4),
            token: locksmith_core::FenceToken(9),
            owner: fleetlock::owner("c0ffee", "workers"),
            granted_at_ms: 0,
            last_heartbeat_ms: 0,
            ttl_ms: NO_EXPIRY_TTL_MS,
            ttl_left_ms: NO_EXPIRY_TTL_MS,
            stale: false,
        };
        assert_eq!(owner_name(&h.owner), "FleetLock client c0ffee");
        assert_eq!(ttl_left(&h), "-");
        let line = describe_holder(&h, 60_000);
        assert_eq!(
            line,
            "FleetLock client c0ffee since 1970-01-01T00:00:00Z, held until it reports steady \
             state, lease 4 token 9"
        );
        // With --fleetlock-stale-after, its slot has a TTL like any lease.
        let stale_after = HolderView {
            ttl_ms: 7_200_000,
            ttl_left_ms: 3_600_000,
            ..h
        };
        assert_eq!(ttl_left(&stale_after), "1h00m");
        assert!(describe_holder(&stale_after, 60_000).contains("last heartbeat 1m00s ago"));
    }

    #[test]
    fn wall_time_is_rfc3339() {
        assert_eq!(format_wall(0), "1970-01-01T00:00:00Z");
    }
}
