//! Prometheus metrics (`GET /metrics`, text exposition format via prometheus-client).
//!
//! Counters are driven by the durable audit records (one place that sees every grant, end,
//! hold and break); gauges describing current state are set from a table snapshot at scrape
//! time, so they can never drift from the table.

use std::sync::Mutex;
use std::time::Duration;

use locksmith_core::{AuditKind, AuditRecord, HoldState, LockState, ResourceView};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: String,
}

/// The lock states with a gauge. FREE resources are not counted: their number is unbounded.
const GAUGED_STATES: [LockState; 4] = [
    LockState::Hot,
    LockState::Stale,
    LockState::Frozen,
    LockState::Delayed,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LockLabel {
    state: Labelled<LockState>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HoldLabel {
    state: Labelled<HoldState>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: Labelled<HoldEvent>,
}

/// Another domain's audit event, by its kind (`config_written`, `rollout_started`, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DomainEventLabel {
    event: String,
}

/// A refused config change: the operation (`write`, `promote`, `rollback`, `schema`) and the
/// error code it was answered with (`stale_token`, `invalid_config`, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConfigRefusalLabel {
    op: &'static str,
    error: &'static str,
}

/// An agent's report, by the state it reported (`applied`, `failed`, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReportLabel {
    state: &'static str,
}

/// What happened to a hold, as its counter's label says it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum HoldEvent {
    Placed,
    Acked,
    Lifted,
    Expired,
}

/// A label value written as the API writes it (`HOT`, `pending_ack`, `placed`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Labelled<T>(T);

impl EncodeLabelValue for Labelled<LockState> {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, locksmith_api::state_name(self.0))
    }
}

impl EncodeLabelValue for Labelled<HoldState> {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        let name = match self.0 {
            HoldState::Active => "active",
            HoldState::PendingAck => "pending_ack",
        };
        std::fmt::Write::write_str(encoder, name)
    }
}

impl EncodeLabelValue for Labelled<HoldEvent> {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        let name = match self.0 {
            HoldEvent::Placed => "placed",
            HoldEvent::Acked => "acked",
            HoldEvent::Lifted => "lifted",
            HoldEvent::Expired => "expired",
        };
        std::fmt::Write::write_str(encoder, name)
    }
}

/// Everything exported at `/metrics`.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    grants: Counter,
    ends: Family<CauseLabel, Counter>,
    hold_events: Family<EventLabel, Counter>,
    domain_events: Family<DomainEventLabel, Counter>,
    config_refusals: Family<ConfigRefusalLabel, Counter>,
    agent_reports: Family<ReportLabel, Counter>,
    agents_online: Gauge,
    breaks: Counter,
    grant_latency: Histogram,
    commit_latency: Histogram,
    locks: Family<LockLabel, Gauge>,
    holds: Family<HoldLabel, Gauge>,
    leases: Gauge,
    waiters: Gauge,
    fence: Gauge,
    heartbeat: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Self {
            registry: Mutex::new(Registry::with_prefix("locksmith")),
            grants: Counter::default(),
            ends: Family::default(),
            hold_events: Family::default(),
            domain_events: Family::default(),
            config_refusals: Family::default(),
            agent_reports: Family::default(),
            agents_online: Gauge::default(),
            breaks: Counter::default(),
            // 50 µs .. ~26 s
            grant_latency: Histogram::new(exponential_buckets(0.00005, 2.0, 20)),
            commit_latency: Histogram::new(exponential_buckets(0.00005, 2.0, 20)),
            locks: Family::default(),
            holds: Family::default(),
            leases: Gauge::default(),
            waiters: Gauge::default(),
            fence: Gauge::default(),
            heartbeat: Gauge::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|p| p.into_inner());
            r.register("grants", "Leases granted", m.grants.clone());
            r.register(
                "lease_ends",
                "Leases ended, by cause (released, expired, node_rebooted, process_died, broken)",
                m.ends.clone(),
            );
            r.register(
                "hold_events",
                "Hold events (placed, acked, lifted, expired)",
                m.hold_events.clone(),
            );
            r.register(
                "domain_events",
                "Audit events of the other domains, by kind (config_written, …)",
                m.domain_events.clone(),
            );
            r.register(
                "config_refusals",
                "Config changes refused, by operation (write, promote, rollback, schema) and \
                 error code (stale_token, broken, invalid_config, …); the changes that landed \
                 are domain_events (config_written, …)",
                m.config_refusals.clone(),
            );
            r.register(
                "agent_reports",
                "Reports of endpoint agents, by state (applied, failed, refused, deferred, \
                 shadow_ok, shadow_failed): every report, not only changes",
                m.agent_reports.clone(),
            );
            r.register(
                "agents_online",
                "Registered agents online: a desired stream open, or heard from within 30 s",
                m.agents_online.clone(),
            );
            r.register("breaks", "Locks broken by an operator", m.breaks.clone());
            r.register(
                "grant_latency_seconds",
                "Time from acquire request to durable grant (including queue wait)",
                m.grant_latency.clone(),
            );
            r.register(
                "store_commit_seconds",
                "Time a request waited for its batch to be durable",
                m.commit_latency.clone(),
            );
            r.register("locks", "Resources by state", m.locks.clone());
            r.register(
                "holds",
                "Holds by state (active, pending_ack)",
                m.holds.clone(),
            );
            r.register("leases", "Live leases", m.leases.clone());
            r.register("waiters", "Queued acquire requests", m.waiters.clone());
            r.register(
                "fence_high_water",
                "Highest fencing token durably issued",
                m.fence.clone(),
            );
            r.register(
                "heartbeat_timestamp_seconds",
                "Unix time of the server's own last reaper run: if this stops moving, the server is stuck",
                m.heartbeat.clone(),
            );
        }
        m
    }
}

/// The table state a scrape reports.
#[derive(Debug)]
pub struct Snapshot<'a> {
    /// The table's census, once durable; `None` when it could not be read (storage failed or
    /// stalled): its gauges then keep their last values.
    pub table: Option<TableSnapshot<'a>>,
    /// Live leases.
    pub leases: u64,
    /// Queued waiters.
    pub waiters: u64,
    /// Highest token durable.
    pub fence: u64,
    /// Reaper's last run, Unix ms.
    pub heartbeat_ms: u64,
    /// Agents online.
    pub agents_online: u64,
}

/// What the state gauges are set from.
#[derive(Debug)]
pub struct TableSnapshot<'a> {
    /// Resources that are HOT with nothing else to say (no waiter, hold or lock-delay): only
    /// counted (see `LockTable::census`).
    pub plain_hot: u64,
    /// Every other held, awaited, frozen or delayed resource.
    pub resources: &'a [ResourceView],
    /// Holds: (active, pending).
    pub holds: (u64, u64),
}

impl Metrics {
    /// Counts one durable audit record.
    pub fn count(&self, record: &AuditRecord) {
        match &record.kind {
            AuditKind::Granted => {
                self.grants.inc();
            }
            AuditKind::Ended { cause } => {
                self.ends
                    .get_or_create(&CauseLabel {
                        cause: cause.label().to_string(),
                    })
                    .inc();
            }
            AuditKind::Broke => {
                self.breaks.inc();
            }
            AuditKind::HoldPlaced => self.count_hold(HoldEvent::Placed),
            AuditKind::HoldAcked => self.count_hold(HoldEvent::Acked),
            AuditKind::HoldLifted => self.count_hold(HoldEvent::Lifted),
            AuditKind::HoldExpired => self.count_hold(HoldEvent::Expired),
            AuditKind::Domain(event) => {
                self.domain_events
                    .get_or_create(&DomainEventLabel {
                        event: event.kind.clone(),
                    })
                    .inc();
            }
        }
    }

    /// Counts a refused config change: `op` is the operation, `error` the code answered.
    pub fn count_config_refusal(&self, op: &'static str, error: &'static str) {
        self.config_refusals
            .get_or_create(&ConfigRefusalLabel { op, error })
            .inc();
    }

    /// Counts an agent's report by its state.
    pub fn count_agent_report(&self, state: locksmith_api::agents::ApplyState) {
        use locksmith_api::agents::ApplyState as S;
        let state = match state {
            S::Applied => "applied",
            S::Failed => "failed",
            S::Refused => "refused",
            S::Deferred => "deferred",
            S::ShadowOk => "shadow_ok",
            S::ShadowFailed => "shadow_failed",
        };
        self.agent_reports
            .get_or_create(&ReportLabel { state })
            .inc();
    }

    fn count_hold(&self, event: HoldEvent) {
        self.hold_events
            .get_or_create(&EventLabel {
                event: Labelled(event),
            })
            .inc();
    }

    /// Records a successful acquire's latency.
    pub fn observe_grant(&self, d: Duration) {
        self.grant_latency.observe(d.as_secs_f64());
    }

    /// Records a commit wait.
    pub fn observe_commit(&self, d: Duration) {
        self.commit_latency.observe(d.as_secs_f64());
    }

    /// Renders the text exposition, setting the state gauges from `snap` first.
    /// FREE resources are not listed: their number is unbounded.
    pub fn render(&self, snap: &Snapshot<'_>) -> String {
        if let Some(table) = &snap.table {
            self.set_table(table);
        }
        self.leases.set(snap.leases as i64);
        self.waiters.set(snap.waiters as i64);
        self.fence.set(snap.fence as i64);
        self.heartbeat.set((snap.heartbeat_ms / 1000) as i64);
        self.agents_online.set(snap.agents_online as i64);
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if encode(&mut out, &registry).is_err() {
            out.push_str("# encoding failed\n");
        }
        out
    }
}

impl Metrics {
    fn set_table(&self, table: &TableSnapshot<'_>) {
        for state in GAUGED_STATES {
            let listed = table.resources.iter().filter(|r| r.state == state).count() as u64;
            let plain = if state == LockState::Hot {
                table.plain_hot
            } else {
                0
            };
            self.locks
                .get_or_create(&LockLabel {
                    state: Labelled(state),
                })
                .set((listed + plain) as i64);
        }
        let (active, pending) = table.holds;
        for (state, n) in [
            (HoldState::Active, active),
            (HoldState::PendingAck, pending),
        ] {
            self.holds
                .get_or_create(&HoldLabel {
                    state: Labelled(state),
                })
                .set(n as i64);
        }
    }
}

/// Counts holds by state.
pub fn hold_counts(holds: &[locksmith_core::HoldView]) -> (u64, u64) {
    let active = holds
        .iter()
        .filter(|h| h.state == HoldState::Active)
        .count() as u64;
    (active, holds.len() as u64 - active)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state gauges keep the label values they had as strings: the API's state names and
    /// the holds' snake_case states.
    #[test]
    fn state_gauges_are_labelled_as_the_api_names_the_states() {
        let frozen = ResourceView {
            resource: "res/frozen".into(),
            state: LockState::Frozen,
            slots: 1,
            holders: Vec::new(),
            waiters: Vec::new(),
            holds: Vec::new(),
            delay_left_ms: 0,
        };
        let text = Metrics::default().render(&Snapshot {
            table: Some(TableSnapshot {
                plain_hot: 4,
                resources: &[frozen],
                holds: (1, 2),
            }),
            leases: 4,
            waiters: 0,
            fence: 9,
            heartbeat_ms: 0,
            agents_online: 0,
        });
        for line in [
            "locksmith_locks{state=\"HOT\"} 4",
            "locksmith_locks{state=\"STALE\"} 0",
            "locksmith_locks{state=\"FROZEN\"} 1",
            "locksmith_locks{state=\"DELAYED\"} 0",
            "locksmith_holds{state=\"active\"} 1",
            "locksmith_holds{state=\"pending_ack\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    /// Another domain's audit events are counted by their kind, beside the lock table's.
    #[test]
    fn domain_events_are_counted_by_kind() {
        let metrics = Metrics::default();
        let event = |kind: &str| {
            let event = locksmith_core::DomainEvent::new(kind, serde_json::Value::Null)
                .unwrap_or_else(|e| panic!("{e}"));
            AuditRecord::new("fleet/app.conf", AuditKind::Domain(event))
        };
        for kind in ["config_written", "config_written", "rollout_started"] {
            metrics.count(&event(kind));
        }
        let text = metrics.render(&Snapshot {
            table: None,
            leases: 0,
            waiters: 0,
            fence: 0,
            heartbeat_ms: 0,
            agents_online: 0,
        });
        assert!(
            text.contains("locksmith_domain_events_total{event=\"config_written\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("locksmith_domain_events_total{event=\"rollout_started\"} 1"),
            "{text}"
        );
    }
}
