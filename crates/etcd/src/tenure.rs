//! How long this process can be *sure* that its election lease is alive — and so that no other
//! server can have been elected — measured on its own clock, with no round trip.
//!
//! A leader answers from its in-memory table, and most answers (a fence check, a renewal)
//! involve no etcd write that the [`Guard`](crate::Guard) could refuse. So a leader paused
//! past its election TTL (SIGSTOP, a long GC-like stall, a frozen VM) would, on resuming,
//! answer from a table a successor has since overruled — vouching for a token the successor
//! revoked — until it noticed. The rule that prevents it: **a leader answers only while its
//! [`Tenure`] holds**, checked when a request arrives and again when its answer is ready.
//!
//! The arithmetic ([`TenureRule`]): a keep-alive *sent* at `s` and answered by etcd extends
//! the tenure to `s + ttl - margin`. etcd starts the lease's TTL afresh when the keep-alive
//! *reaches* it, which is after `s`, and only ever lengthens a lease (its own leader changes
//! extend every lease), so the lease cannot expire — and no successor can win the election key
//! — before `s + ttl` on etcd's clock. The margin ([`TenureRule::margin`], a tenth of the TTL)
//! covers a difference in clock rate between this machine and etcd's, and the short gap
//! between the last check and the answer leaving the process: an answer that leaves within
//! the margin after its check still leaves before etcd could expire the lease. Only a stall of
//! more than the margin in those few instructions is not covered; nothing short of etcd
//! fencing the answer itself could cover it.
//!
//! The clock is `CLOCK_BOOTTIME` on Linux ([`boot_clock`]): monotonic like `Instant` (no
//! wall-clock jumps) but, unlike it, still running while the machine is suspended — a leader
//! whose whole machine slept must not count its lease as alive on waking.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The validity arithmetic, sans IO: instants are readings of [`boot_clock`] (or of a test's
/// clock), passed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenureRule {
    ttl: Duration,
    margin: Duration,
}

impl TenureRule {
    /// The rule for an election lease of `ttl` (what was asked of etcd; etcd may round it up,
    /// never down).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            margin: ttl / 10,
        }
    }

    /// The election lease's TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How much earlier than etcd's earliest possible expiry the tenure ends: a tenth of the
    /// TTL (200 ms for a 2 s TTL) — far more than any clock-rate difference between two
    /// machines, and room for an answer checked just in time to leave the process.
    pub fn margin(&self) -> Duration {
        self.margin
    }

    /// Until when a keep-alive (or the lease grant) sent at `sent`, and answered, makes sure
    /// the lease is alive.
    pub fn until(&self, sent: Duration) -> Duration {
        sent + self.ttl - self.margin
    }
}

/// The shared "valid until" of one election lease: extended by the keep-alive task, read by
/// every request (one atomic load and one clock read). Once [ended](Tenure::end) it never
/// holds again. Clones share it.
#[derive(Debug, Clone)]
pub struct Tenure {
    rule: TenureRule,
    /// Nanoseconds on [`boot_clock`] until which the lease is surely alive; [`ENDED`] once
    /// over. Never [`ENDED`] otherwise: `until` is always past `ttl - margin > 0`.
    until: Arc<AtomicU64>,
}

/// The value of [`Tenure::until`] once the tenure has ended.
const ENDED: u64 = 0;

impl Tenure {
    /// A tenure starting with a lease granted by a request sent at `granted` (the grant counts
    /// as the first renewal).
    pub fn new(rule: TenureRule, granted: Duration) -> Self {
        Self {
            rule,
            until: Arc::new(AtomicU64::new(nanos(rule.until(granted)))),
        }
    }

    /// The rule it follows.
    pub fn rule(&self) -> TenureRule {
        self.rule
    }

    /// A keep-alive sent at `sent` was answered: the lease is alive until at least
    /// [`TenureRule::until`]`(sent)`. Never shortens the tenure (answers can arrive out of
    /// order) and never revives an ended one.
    pub fn renewed(&self, sent: Duration) {
        let until = nanos(self.rule.until(sent));
        let _ = self
            .until
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                (current != ENDED && current < until).then_some(until)
            });
    }

    /// Ends the tenure for good (the lease is lost, revoked or given up).
    pub fn end(&self) {
        self.until.store(ENDED, Ordering::Release);
    }

    /// Whether the lease is surely alive at `now`.
    pub fn holds_at(&self, now: Duration) -> bool {
        self.left_at(now).is_some()
    }

    /// Whether the lease is surely alive now (on [`boot_clock`]).
    pub fn holds(&self) -> bool {
        self.holds_at(boot_clock())
    }

    /// How long the lease is still surely alive after `now`; `None` if not at all.
    pub fn left_at(&self, now: Duration) -> Option<Duration> {
        let until = self.until.load(Ordering::Acquire);
        let now = nanos(now);
        (until != ENDED && now < until).then(|| Duration::from_nanos(until - now))
    }

    /// Resolves once the tenure no longer holds: ended, or not extended in time.
    pub async fn lapsed(&self) {
        while let Some(left) = self.left_at(boot_clock()) {
            // Sleeps on tokio's (monotonic) clock, then looks again on the boot clock: a
            // renewal meanwhile moves the end; a suspend makes the sleep end late, not early.
            tokio::time::sleep(left).await;
        }
    }
}

/// The clock tenures are kept on: time since boot, suspend included (`CLOCK_BOOTTIME`). If it
/// cannot be read, a time so late that no tenure holds.
pub fn boot_clock() -> Duration {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use nix::time::{ClockId, clock_gettime};
        match clock_gettime(ClockId::CLOCK_BOOTTIME) {
            Ok(t) => Duration::new(
                u64::try_from(t.tv_sec()).unwrap_or(0),
                u32::try_from(t.tv_nsec()).unwrap_or(0),
            ),
            Err(_) => Duration::MAX,
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        // Elsewhere, the monotonic clock since first use (it may not count a suspend).
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed() + Duration::from_secs(1)
    }
}

/// `d` in nanoseconds, saturating (a clock past 584 years reads as the end of time).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_keep_alive_answered_makes_the_lease_sure_until_its_send_time_plus_ttl_less_the_margin() {
        let rule = TenureRule::new(2 * S);
        assert_eq!(rule.margin(), 200 * MS);
        assert_eq!(rule.until(100 * S), 100 * S + 1800 * MS);
        let tenure = Tenure::new(rule, 100 * S);
        assert!(tenure.holds_at(100 * S));
        assert_eq!(tenure.left_at(101 * S), Some(800 * MS));
        assert!(tenure.holds_at(101 * S + 799 * MS));
        assert!(!tenure.holds_at(101 * S + 800 * MS), "ends at the bound");
    }

    #[test]
    fn a_leader_paused_past_its_ttl_finds_its_tenure_lapsed_on_resuming() {
        // Renewed at 10 s, SIGSTOPped at 10.5 s, resumed at 15 s (etcd expired the lease at
        // 12 s at the earliest): the first request after resuming must be refused.
        let tenure = Tenure::new(TenureRule::new(2 * S), 9 * S);
        tenure.renewed(10 * S);
        assert!(tenure.holds_at(10 * S + 500 * MS));
        assert!(!tenure.holds_at(15 * S));
        // A keep-alive sent before the pause and answered after it extends nothing useful.
        tenure.renewed(10 * S + 400 * MS);
        assert!(!tenure.holds_at(15 * S));
    }

    #[test]
    fn renewals_never_shorten_the_tenure_and_never_revive_an_ended_one() {
        let tenure = Tenure::new(TenureRule::new(5 * S), Duration::ZERO);
        tenure.renewed(3 * S);
        tenure.renewed(S); // an older keep-alive's answer, arriving late
        assert_eq!(tenure.left_at(3 * S), Some(4500 * MS));
        tenure.end();
        assert!(!tenure.holds_at(3 * S));
        tenure.renewed(4 * S);
        assert!(!tenure.holds_at(4 * S), "an ended tenure stays ended");
        assert_eq!(tenure.left_at(Duration::ZERO), None);
    }

    #[test]
    fn clones_share_one_tenure() {
        let tenure = Tenure::new(TenureRule::new(2 * S), Duration::ZERO);
        let seen_by_a_request = tenure.clone();
        tenure.renewed(10 * S);
        assert!(seen_by_a_request.holds_at(11 * S));
        tenure.end();
        assert!(!seen_by_a_request.holds_at(11 * S));
    }

    #[test]
    fn the_boot_clock_is_monotonic_and_a_fresh_tenure_on_it_holds() {
        let a = boot_clock();
        let b = boot_clock();
        assert!(b >= a);
        assert!(Tenure::new(TenureRule::new(2 * S), boot_clock()).holds());
    }
}
