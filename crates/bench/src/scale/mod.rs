//! The scale targets of issue 5, measured against the real server binary (`scale`):
//!
//! - [`held`]: one server holding a million leases — its RSS, and its restart-to-serving time
//!   after a graceful stop and after `kill -9`;
//! - [`agents`]: ten thousand agents heartbeating every 5 s, each over its own keep-alive
//!   connection — the server's CPU, renew errors and renew latency.
//!
//! Each returns [`Measure`]s; [`markdown`] renders them with their targets and verdicts.

pub mod agents;
pub mod held;

use std::fmt::Write as _;

use locksmith_core::Owner;

/// How a measurement compares with its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Meets the target.
    Pass,
    /// Misses it.
    Fail,
    /// No target: context for the others.
    Info,
}

impl Verdict {
    /// `pass` when `ok`, else `FAIL`.
    pub fn of(ok: bool) -> Self {
        if ok { Verdict::Pass } else { Verdict::Fail }
    }

    fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "**FAIL**",
            Verdict::Info => "-",
        }
    }
}

/// One row of the result table.
#[derive(Debug, Clone)]
pub struct Measure {
    /// Which scenario: `1M held leases`, `10k agents`.
    pub scenario: String,
    /// What was measured.
    pub what: String,
    /// The measured value, formatted.
    pub value: String,
    /// The target, formatted (`-` when none).
    pub target: String,
    /// Pass, fail, or no target.
    pub verdict: Verdict,
}

impl Measure {
    /// A measurement without a target.
    pub fn info(scenario: &str, what: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            scenario: scenario.to_string(),
            what: what.into(),
            value: value.into(),
            target: "-".into(),
            verdict: Verdict::Info,
        }
    }

    /// A measurement against `target`.
    pub fn check(
        scenario: &str,
        what: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        ok: bool,
    ) -> Self {
        Self {
            scenario: scenario.to_string(),
            what: what.into(),
            value: value.into(),
            target: target.into(),
            verdict: Verdict::of(ok),
        }
    }
}

/// Renders the measurements as a Markdown table.
pub fn markdown(rows: &[Measure]) -> String {
    let mut s = String::from(
        "| scenario | measurement | value | target | result |\n|---|---|---:|---:|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            r.scenario,
            r.what,
            r.value,
            r.target,
            r.verdict.label()
        );
    }
    s
}

/// A boot-id-shaped string (like `/proc/sys/kernel/random/boot_id`) for simulated node `node`:
/// one per node, stable, so no grant looks like news of a reboot.
pub(crate) fn boot_id(node: u64) -> String {
    format!("{node:08x}-5ca1-4e00-8000-{node:012x}")
}

/// A simulated holder: node `node`'s process `pid`, shaped like what the CLI sends.
pub(crate) fn owner(node: &str, node_no: u64, pid: u32, purpose: &str) -> Owner {
    Owner {
        node: node.to_string(),
        pid,
        start_time: 1_000 + u64::from(pid),
        boot_id: boot_id(node_no),
        user: "svc-deploy".into(),
        purpose: purpose.into(),
        pid_ns: None,
    }
}

/// `12,345,678`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }
}
