//! The agents domain's state: who registered, what each reported, which shadows are out, and
//! who is connected — and the one function that says what a node should run ([`desired`]).
//!
//! Invariants (pinned by the tests below and `crates/server/tests/agents.rs`):
//! - A registration and the last report of each of its configs are durable: every change to
//!   them is a record (`agents/NODE`, `agent_reports/NODE/CONFIG`) in the same batch as its
//!   audit event, and [`Agents::restore`] rebuilds exactly this state from those records.
//! - A node has reports only for configs it registered: registering again without a config
//!   deletes that config's report record in the same batch.
//! - Presence (last seen, open streams) and shadows are in memory only: a restart forgets
//!   them, and every agent reconnects (its stream) within its backoff.
//! - A shadow is an override of one config for one node, valid only while the revision that was
//!   current when it was sent is still current: a new current revision ends it without any
//!   write ([`desired`] ignores it; the next shadow of the config drops it).

use std::collections::{BTreeMap, HashMap};

use locksmith_api::agents::{AgentReport, AgentView, ApplyState, DesiredRevision, EndpointConfig};
use locksmith_config::{Configs, resource_of};
use locksmith_core::{InvalidRequest, LockTable, Mutation, Now};

use crate::domains::rollouts::model::Rollouts;
use serde::{Deserialize, Serialize};

/// The record space of registrations, keyed by node.
pub const AGENTS: &str = "agents";
/// The record space of last reports, keyed `NODE/CONFIG` (a node name has no `/`).
pub const REPORTS: &str = "agent_reports";
/// How long after it was last heard from a node without an open stream still counts as online:
/// three heartbeats at the agent's 10 s interval.
pub const ONLINE_WINDOW_MS: u64 = 30_000;
/// The longest `error` a report keeps, bytes; longer ones keep their tail (where hooks'
/// output ends).
pub const MAX_ERROR: usize = 8 * 1024;
/// The longest `diff` a report keeps, bytes; longer ones keep their head.
pub const MAX_DIFF: usize = 64 * 1024;
/// At most this many labels and configs per registration.
pub const MAX_ITEMS: usize = 256;
/// The longest label, boot id or version, bytes.
pub const MAX_TEXT: usize = 256;

/// A registration, as stored in `agents/NODE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The node.
    pub node: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its boot id when it registered.
    pub boot_id: String,
    /// The agent's version.
    pub version: String,
    /// The configs it applies, sorted, no duplicates.
    pub configs: Vec<String>,
    /// When, Unix ms.
    pub registered_at_ms: u64,
}

/// A last report, as stored in `agent_reports/NODE/CONFIG`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredReport {
    /// The report.
    pub report: AgentReport,
    /// When it came, Unix ms.
    pub at_ms: u64,
}

/// A shadow sent to one node: revision `rev`, valid while `while_current` is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shadow {
    /// The revision sent as a shadow.
    pub rev: u64,
    /// The current revision when it was sent.
    pub while_current: Option<u64>,
}

#[derive(Debug, Clone)]
struct Entry {
    reg: Registration,
    reports: BTreeMap<String, StoredReport>,
    /// The last report about a shadow, by config (in memory, like the shadows): kept apart so
    /// that a shadow's outcome never hides what the endpoint runs.
    shadow_reports: BTreeMap<String, StoredReport>,
    /// Wall ms it was last heard from (in memory).
    last_seen_ms: u64,
    /// Its open desired streams (in memory).
    streams: u32,
}

/// Every registered agent, its reports, presence and shadows.
#[derive(Debug, Default)]
pub struct Agents {
    nodes: BTreeMap<String, Entry>,
    /// By config, then node.
    shadows: HashMap<String, BTreeMap<String, Shadow>>,
}

/// A node name: 1–253 bytes of `A-Z a-z 0-9 . _ -` (a host name, and never a `/`, which the
/// report keys use as a separator).
pub fn validate_node(node: &str) -> Result<(), InvalidRequest> {
    let ok = !node.is_empty()
        && node.len() <= 253
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidRequest::new(
            "node",
            format!("{node:?} is not a node name (1–253 of A-Z a-z 0-9 . _ -)"),
        ))
    }
}

fn text(field: &str, value: &str, empty_ok: bool) -> Result<(), InvalidRequest> {
    if (!empty_ok && value.trim().is_empty()) || value.len() > MAX_TEXT {
        return Err(InvalidRequest::new(
            field,
            format!("must be 1–{MAX_TEXT} bytes (got {})", value.len()),
        ));
    }
    Ok(())
}

/// Checks a label pair: a key without `=`, `,` or spaces, a value without `,`.
pub fn validate_label(key: &str, value: &str) -> Result<(), InvalidRequest> {
    text("labels", key, false)?;
    text("labels", value, true)?;
    if key.contains(['=', ',', ' ']) || value.contains(',') {
        return Err(InvalidRequest::new(
            "labels",
            format!("{key}={value} may not contain ',' (nor '=' or a space in its key)"),
        ));
    }
    Ok(())
}

/// A label selector `k=v,k2=v2`: every pair must match. Empty: everything.
pub fn parse_selector(selector: &str) -> Result<Vec<(String, String)>, InvalidRequest> {
    selector
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
            _ => Err(InvalidRequest::new(
                "selector",
                format!("{pair:?} is not key=value (a selector is k=v,k2=v2)"),
            )),
        })
        .collect()
}

/// Whether `labels` has every pair of `selector`.
pub fn matches(labels: &BTreeMap<String, String>, selector: &[(String, String)]) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// What the desired stream sends `node` for `config` now: the config's current revision,
/// unless an override targets the node — a running rollout's (or an ended one's, while the
/// config's current revision is the one current when it ended), else a shadow — and nowhere
/// else. `None` while the config has no current revision and nothing overrides it.
///
/// `fence` is the fence of `configs/NAME`: the newest token of its live holders, or — with no
/// holder now — the highest token any revision of the config was written under. The lock
/// table keeps no per-resource high-water once a lease ends, and a tenure that wrote nothing
/// cannot make a revision the agent must refuse.
pub fn desired(
    configs: &Configs,
    locks: &LockTable,
    agents: &Agents,
    rollouts: &Rollouts,
    node: &str,
    config: &str,
    now: Now,
) -> Option<DesiredRevision> {
    let current = configs.current(config);
    let current_rev = current.map(|m| m.rev);
    let by_rollout = rollouts.override_of(config, node, current_rev);
    let rollout = by_rollout.and_then(|(_, rev)| configs.revision(config, rev));
    let shadow = agents
        .shadows
        .get(config)
        .and_then(|by_node| by_node.get(node))
        .filter(|s| s.while_current == current_rev)
        .and_then(|s| configs.revision(config, s.rev));
    // A rollout's override first: it holds the config's lock, and its planner counts on
    // each node it reached running what it sent.
    let (meta, is_shadow) = match (rollout, shadow) {
        (Some(meta), _) => (meta, false),
        (None, Some(meta)) => (meta, true),
        (None, None) => (current?, false),
    };
    let holders = locks.resource(&resource_of(config), now).holders;
    let live = holders.iter().map(|h| h.token.0).max();
    let fence = live.unwrap_or_else(|| {
        configs
            .revisions(config)
            .iter()
            .map(|r| r.token.0)
            .max()
            .unwrap_or(0)
    });
    Some(DesiredRevision {
        config: config.to_owned(),
        rev: meta.rev,
        sha256: meta.sha256.clone(),
        size: meta.size,
        format: meta.format,
        token: meta.token.0,
        fence,
        shadow: is_shadow,
        base_rev: if is_shadow { meta.base } else { None },
        rollout: by_rollout
            .filter(|_| !is_shadow)
            .map(|(id, _)| id.to_owned()),
        content: None,
    })
}

/// Cuts `s` to at most `max` bytes on a char boundary, keeping its head or its tail.
fn cut(s: &mut String, max: usize, keep_tail: bool) {
    if s.len() <= max {
        return;
    }
    let marker = "… (cut) …";
    let room = max.saturating_sub(marker.len());
    if keep_tail {
        let mut start = s.len() - room;
        while !s.is_char_boundary(start) {
            start += 1;
        }
        *s = format!("{marker}{}", &s[start..]);
    } else {
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str(marker);
    }
}

impl Agents {
    /// No agents.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the state from its record spaces: `regs` from [`AGENTS`], `reports` from
    /// [`REPORTS`]. Every node counts as last heard from at its newest durable time. A report
    /// of a node or config not registered is dropped (the registration that dropped it was
    /// durable first).
    pub fn restore(regs: Vec<Registration>, reports: Vec<(String, StoredReport)>) -> Self {
        let mut nodes: BTreeMap<String, Entry> = regs
            .into_iter()
            .map(|reg| {
                let entry = Entry {
                    last_seen_ms: reg.registered_at_ms,
                    reg,
                    reports: BTreeMap::new(),
                    shadow_reports: BTreeMap::new(),
                    streams: 0,
                };
                (entry.reg.node.clone(), entry)
            })
            .collect();
        for (node, stored) in reports {
            if let Some(entry) = nodes.get_mut(&node)
                && entry.reg.configs.contains(&stored.report.config)
            {
                entry.last_seen_ms = entry.last_seen_ms.max(stored.at_ms);
                entry.reports.insert(stored.report.config.clone(), stored);
            }
        }
        Self {
            nodes,
            shadows: HashMap::new(),
        }
    }

    /// The registration of `node`.
    pub fn registration(&self, node: &str) -> Option<&Registration> {
        self.nodes.get(node).map(|e| &e.reg)
    }

    /// Every registration, by node.
    pub fn registrations(&self) -> impl Iterator<Item = &Registration> {
        self.nodes.values().map(|e| &e.reg)
    }

    /// Registers `reg` (replacing an earlier one), heard from at `now_ms`; returns the
    /// records to write: the registration, and the deletion of reports of configs it dropped.
    pub fn register(&mut self, reg: Registration, now_ms: u64) -> Vec<Mutation> {
        let mut mutations = vec![Mutation::PutRecord {
            space: AGENTS.to_owned(),
            key: reg.node.clone(),
            value: serde_json::to_vec(&reg).unwrap_or_default(),
        }];
        let entry = self.nodes.entry(reg.node.clone()).or_insert_with(|| Entry {
            reg: reg.clone(),
            reports: BTreeMap::new(),
            shadow_reports: BTreeMap::new(),
            last_seen_ms: now_ms,
            streams: 0,
        });
        let dropped: Vec<String> = entry
            .reports
            .keys()
            .filter(|c| !reg.configs.contains(c))
            .cloned()
            .collect();
        for config in dropped {
            entry.reports.remove(&config);
            entry.shadow_reports.remove(&config);
            mutations.push(Mutation::DeleteRecord {
                space: REPORTS.to_owned(),
                key: format!("{}/{config}", reg.node),
            });
        }
        entry.reg = reg;
        entry.last_seen_ms = now_ms;
        // A registration is an agent (re)starting: what it reported of shadows before is
        // reported again if the shadow still stands.
        entry.shadow_reports.clear();
        mutations
    }

    /// Stores `report` from `node` at `now_ms`. Returns the record to write (none for a
    /// report about a shadow: shadows and their outcomes live in memory) and whether the
    /// config's state changed (its state or revision differs from the last report's of the
    /// same kind), or `None` if the node is not registered or does not apply the config.
    ///
    /// A report is about a shadow when its state is `shadow_ok`/`shadow_failed`, or when it
    /// names the revision sent to this node as a shadow and not the one it runs (a shadow the
    /// local fence check refused): it is kept apart from the report of what the endpoint runs,
    /// which a shadow never changes.
    pub fn report(
        &mut self,
        node: &str,
        mut report: AgentReport,
        now_ms: u64,
    ) -> Option<(Option<Mutation>, bool)> {
        let shadow_rev = self
            .shadows
            .get(&report.config)
            .and_then(|by_node| by_node.get(node))
            .map(|s| s.rev);
        let entry = self.nodes.get_mut(node)?;
        if !entry.reg.configs.contains(&report.config) {
            return None;
        }
        if let Some(error) = &mut report.error {
            cut(error, MAX_ERROR, true);
        }
        if let Some(diff) = &mut report.diff {
            cut(diff, MAX_DIFF, false);
        }
        let about_shadow = matches!(
            report.state,
            ApplyState::ShadowOk | ApplyState::ShadowFailed
        ) || (shadow_rev == Some(report.rev)
            && report.applied_rev != report.rev);
        let kept = if about_shadow {
            &mut entry.shadow_reports
        } else {
            &mut entry.reports
        };
        let changed = kept
            .get(&report.config)
            .is_none_or(|old| (old.report.state, old.report.rev) != (report.state, report.rev));
        let stored = StoredReport {
            report,
            at_ms: now_ms,
        };
        let mutation = (!about_shadow).then(|| Mutation::PutRecord {
            space: REPORTS.to_owned(),
            key: format!("{node}/{}", stored.report.config),
            value: serde_json::to_vec(&stored).unwrap_or_default(),
        });
        kept.insert(stored.report.config.clone(), stored);
        entry.last_seen_ms = now_ms;
        Some((mutation, changed))
    }

    /// `node` was heard from at `now_ms`. False if it is not registered.
    pub fn touch(&mut self, node: &str, now_ms: u64) -> bool {
        match self.nodes.get_mut(node) {
            Some(entry) => {
                entry.last_seen_ms = entry.last_seen_ms.max(now_ms);
                true
            }
            None => false,
        }
    }

    /// A desired stream of `node` opened (`+1`) or closed (`-1`) at `now_ms`.
    pub fn stream(&mut self, node: &str, opened: bool, now_ms: u64) {
        if let Some(entry) = self.nodes.get_mut(node) {
            entry.streams = if opened {
                entry.streams.saturating_add(1)
            } else {
                entry.streams.saturating_sub(1)
            };
            entry.last_seen_ms = entry.last_seen_ms.max(now_ms);
        }
    }

    /// Sends revision `rev` of `config` as a shadow to `nodes`, valid while `while_current` is
    /// current; drops the config's shadows that are no longer valid.
    pub fn shadow(&mut self, config: &str, rev: u64, while_current: Option<u64>, nodes: &[String]) {
        let by_node = self.shadows.entry(config.to_owned()).or_default();
        by_node.retain(|_, s| s.while_current == while_current);
        for node in nodes {
            by_node.insert(node.clone(), Shadow { rev, while_current });
        }
    }

    fn online(entry: &Entry, now_ms: u64) -> bool {
        entry.streams > 0 || now_ms.saturating_sub(entry.last_seen_ms) <= ONLINE_WINDOW_MS
    }

    /// The endpoints that apply `config`, as a rollout plans them at `now_ms`: labels,
    /// presence, and the revision each has applied (its last report's; 0: none) — which is
    /// also its last-known-good, where a rollback returns it.
    pub fn endpoints(&self, config: &str, now_ms: u64) -> Vec<locksmith_rollout::Endpoint> {
        self.nodes
            .values()
            .filter(|e| e.reg.configs.iter().any(|c| c == config))
            .map(|e| {
                let applied = e.reports.get(config).map_or(0, |r| r.report.applied_rev);
                locksmith_rollout::Endpoint {
                    node: e.reg.node.clone(),
                    labels: e.reg.labels.clone(),
                    online: Self::online(e, now_ms),
                    applied_rev: applied,
                    last_known_good: applied,
                }
            })
            .collect()
    }

    /// Whether `node` is registered and online at `now_ms`.
    pub fn is_online(&self, node: &str, now_ms: u64) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|e| Self::online(e, now_ms))
    }

    /// `node`'s last report about what it runs of `config` (never a shadow's).
    pub fn last_report(&self, node: &str, config: &str) -> Option<&StoredReport> {
        self.nodes.get(node)?.reports.get(config)
    }

    /// How many agents are online at `now_ms`.
    pub fn online_count(&self, now_ms: u64) -> usize {
        self.nodes
            .values()
            .filter(|e| Self::online(e, now_ms))
            .count()
    }

    /// The view of `node`, or `None` if it is not registered.
    pub fn view(
        &self,
        configs: &Configs,
        locks: &LockTable,
        rollouts: &Rollouts,
        node: &str,
        now: Now,
    ) -> Option<AgentView> {
        let entry = self.nodes.get(node)?;
        let endpoint = |config: &String| {
            let stored = entry.reports.get(config);
            let desired_rev = match desired(configs, locks, self, rollouts, node, config, now) {
                Some(d) if !d.shadow => Some(d.rev),
                _ => configs.current(config).map(|m| m.rev),
            };
            EndpointConfig {
                config: config.clone(),
                desired_rev,
                report: stored.map(|s| s.report.clone()),
                reported_at_ms: stored.map(|s| s.at_ms),
                shadow_report: entry.shadow_reports.get(config).map(|s| s.report.clone()),
            }
        };
        Some(AgentView {
            node: entry.reg.node.clone(),
            labels: entry.reg.labels.clone(),
            boot_id: entry.reg.boot_id.clone(),
            version: entry.reg.version.clone(),
            online: Self::online(entry, now.wall_ms),
            last_seen_ms: entry.last_seen_ms,
            registered_at_ms: entry.reg.registered_at_ms,
            configs: entry.reg.configs.iter().map(endpoint).collect(),
        })
    }

    /// Every node whose labels match `selector`, by node.
    pub fn matching<'a>(
        &'a self,
        selector: &'a [(String, String)],
    ) -> impl Iterator<Item = &'a Registration> + 'a {
        self.registrations()
            .filter(move |r| matches(&r.labels, selector))
    }
}

#[cfg(test)]
mod tests;
