//! The engine's agent operations: registrations, reports and shadows changed through the step
//! (their records and audit events in one durable batch), presence changed under the state
//! lock only (never durable), and reads of the fleet and of what a node should run.

use locksmith_api::agents::{AgentReport, AgentView, ApplyState, DesiredRevision};
use locksmith_config::resource_of;
use locksmith_core::{AuditKind, AuditRecord, DomainEvent, Effect, Effects, Mutation, Now};
use locksmith_store::StoreError;
use serde_json::json;

use super::{Engine, EngineError, State, lock};
use crate::domains::agents::model::{self, Registration};

/// The audit event of a registration.
pub const EVENT_REGISTERED: &str = "agent_registered";
/// The audit event of a shadow sent (resource `configs/NAME`).
pub const EVENT_SHADOWED: &str = "config_shadowed";

/// The audit resource of `node`'s records.
pub fn agent_resource(node: &str) -> String {
    format!("agents/{node}")
}

/// The audit event of a report that changed a config's state: `agent_applied`, …
pub fn report_event(state: ApplyState) -> &'static str {
    match state {
        ApplyState::Applied => "agent_applied",
        ApplyState::Failed => "agent_failed",
        ApplyState::Refused => "agent_refused",
        ApplyState::Deferred => "agent_deferred",
        ApplyState::ShadowOk => "agent_shadow_ok",
        ApplyState::ShadowFailed => "agent_shadow_failed",
    }
}

/// Why an agent operation was refused; nothing was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentRefusal {
    /// No agent registered as this node.
    NotRegistered(String),
    /// The node does not apply this config (it did not register it).
    NotItsConfig {
        /// The node.
        node: String,
        /// The config.
        config: String,
    },
    /// No such config.
    ConfigNotFound(String),
    /// The config has no such revision.
    RevisionNotFound(String, u64),
}

/// Where a shadow goes: the agents applying the config whose labels match, or named nodes.
#[derive(Debug, Clone)]
pub enum Targets {
    /// Label pairs, all of which must match (none: every agent applying the config).
    Selector(Vec<(String, String)>),
    /// These nodes.
    Nodes(Vec<String>),
}

fn audit(resource: &str, kind: &str, detail: serde_json::Value, now: Now, fx: &mut Effects) {
    // The kinds are constants of this module, valid by construction.
    if let Ok(event) = DomainEvent::new(kind, detail) {
        fx.push(Effect::Persist(Mutation::AppendAudit(AuditRecord {
            at_ms: now.wall_ms,
            ..AuditRecord::new(resource, AuditKind::Domain(event))
        })));
    }
}

fn view(state: &State, node: &str, now: Now) -> Option<AgentView> {
    state
        .agents
        .view(&state.configs, &state.locks, &state.rollouts, node, now)
}

impl Engine {
    /// Registers an agent (replacing its registration); durable before it returns.
    ///
    /// A registration is its node's first contact after a boot: the agent registers once per
    /// boot, with that boot's id. If the node holds leases granted under another boot id, their
    /// holders died with the old boot, so they are reclaimed here (cause `node_rebooted`, each
    /// audited), exactly as an acquire from the node would, and in the same durable batch as
    /// the registration — a rebooted endpoint frees its node's locks the moment it is back,
    /// not when their TTLs run out.
    pub async fn agent_register(
        &self,
        reg: Registration,
    ) -> Result<AgentView, EngineError<AgentRefusal>> {
        self.run(move |state, now, fx| {
            // As acquire does: expire what is due first, then end the node's older-boot leases;
            // their next holders are granted above the fence as any grant is.
            state.locks.advance(now, fx);
            state.locks.observe_boot(&reg.node, &reg.boot_id, now, fx);
            let node = reg.node.clone();
            let detail = json!({
                "node": reg.node, "labels": reg.labels, "boot_id": reg.boot_id,
                "version": reg.version, "configs": reg.configs,
            });
            let reg = Registration {
                registered_at_ms: now.wall_ms,
                ..reg
            };
            for mutation in state.agents.register(reg, now.wall_ms) {
                fx.push(Effect::Persist(mutation));
            }
            audit(&agent_resource(&node), EVENT_REGISTERED, detail, now, fx);
            view(state, &node, now).ok_or(AgentRefusal::NotRegistered(node))
        })
        .await
    }

    /// A heartbeat: `node` was heard from now (in memory only). Answered once what it shows is
    /// durable.
    pub async fn agent_heartbeat(
        &self,
        node: &str,
    ) -> Result<AgentView, EngineError<AgentRefusal>> {
        let (result, pending) = self.with_state(
            |_| true,
            |state, now, _| {
                if !state.agents.touch(node, now.wall_ms) {
                    return Err(AgentRefusal::NotRegistered(node.to_owned()));
                }
                view(state, node, now).ok_or_else(|| AgentRefusal::NotRegistered(node.to_owned()))
            },
        )?;
        self.finish(pending).await?;
        result.map_err(EngineError::Refused)
    }

    /// Stores `node`'s report; durable before it returns. An audit event only when the config's
    /// state changed.
    pub async fn agent_report(
        &self,
        node: &str,
        report: AgentReport,
    ) -> Result<AgentView, EngineError<AgentRefusal>> {
        self.run(move |state, now, fx| {
            if state.agents.registration(node).is_none() {
                return Err(AgentRefusal::NotRegistered(node.to_owned()));
            }
            let config = report.config.clone();
            let config_for_err = config.clone();
            let detail = json!({
                "node": node, "config": report.config, "rev": report.rev,
                "state": report.state, "applied_rev": report.applied_rev,
                "applied_token": report.applied_token, "error": report.error,
            });
            let event = report_event(report.state);
            let (rev, apply, applied_rev) = (report.rev, report.state, report.applied_rev);
            let (mutation, changed) =
                state
                    .agents
                    .report(node, report, now.wall_ms)
                    .ok_or_else(|| AgentRefusal::NotItsConfig {
                        node: node.to_owned(),
                        config: config_for_err,
                    })?;
            if let Some(mutation) = mutation {
                fx.push(Effect::Persist(mutation));
            }
            if changed {
                audit(&agent_resource(node), event, detail, now, fx);
            }
            // Every report goes to the rollout, changed or not: an endpoint told the rolled
            // revision and then, before it applied it, its last-known-good again (a rollback
            // started by another canary) answers exactly as it did before the rollout —
            // `applied` on the same revision — and that repeat is what tells the planner it is
            // restored. The planner takes a repeat of a known answer as a no-op.
            let report = locksmith_rollout::Event::Report {
                node: node.to_owned(),
                rev,
                state: super::rollouts::report_state(apply),
                applied_rev,
            };
            super::rollouts::on_report(state, &config, report, now, fx);
            view(state, node, now).ok_or_else(|| AgentRefusal::NotRegistered(node.to_owned()))
        })
        .await
    }

    /// Sends revision `rev` of `config` as a shadow to `targets` (only agents that apply the
    /// config); returns the nodes, sorted. The audit event (`config_shadowed` on
    /// `configs/NAME`) is durable before it returns, and is what wakes the streams.
    pub async fn agent_shadow(
        &self,
        config: &str,
        rev: u64,
        targets: Targets,
    ) -> Result<Vec<String>, EngineError<AgentRefusal>> {
        self.run(move |state, now, fx| {
            let Some(head) = state.configs.head(config) else {
                return Err(AgentRefusal::ConfigNotFound(config.to_owned()));
            };
            let current = head.current;
            if state.configs.revision(config, rev).is_none() {
                return Err(AgentRefusal::RevisionNotFound(config.to_owned(), rev));
            }
            let applies = |r: &Registration| r.configs.iter().any(|c| c == config);
            let nodes: Vec<String> = match targets {
                Targets::Selector(selector) => state
                    .agents
                    .matching(&selector)
                    .filter(|r| applies(r))
                    .map(|r| r.node.clone())
                    .collect(),
                Targets::Nodes(mut nodes) => {
                    nodes.sort();
                    nodes.dedup();
                    for node in &nodes {
                        match state.agents.registration(node) {
                            None => return Err(AgentRefusal::NotRegistered(node.clone())),
                            Some(r) if !applies(r) => {
                                return Err(AgentRefusal::NotItsConfig {
                                    node: node.clone(),
                                    config: config.to_owned(),
                                });
                            }
                            Some(_) => {}
                        }
                    }
                    nodes
                }
            };
            state.agents.shadow(config, rev, current, &nodes);
            let detail = json!({"config": config, "rev": rev, "nodes": nodes});
            audit(&resource_of(config), EVENT_SHADOWED, detail, now, fx);
            Ok(nodes)
        })
        .await
    }

    /// The views of every agent `keep` keeps, by node; durable.
    pub async fn fleet(
        &self,
        keep: impl Fn(&Registration) -> bool,
    ) -> Result<Vec<AgentView>, StoreError> {
        self.read(|state, now| {
            state
                .agents
                .registrations()
                .filter(|r| keep(r))
                .filter_map(|r| view(state, &r.node, now))
                .collect()
        })
        .await
    }

    /// The view of `node`, if registered; durable.
    pub async fn agent(&self, node: &str) -> Result<Option<AgentView>, StoreError> {
        self.read(|state, now| view(state, node, now)).await
    }

    /// The configs `node` registered, and what it should run of each that has a desired
    /// revision (see [`model::desired`]); `None` if it is not registered. Durable.
    #[allow(clippy::type_complexity)]
    pub async fn agent_desired(
        &self,
        node: &str,
    ) -> Result<Option<(Vec<String>, Vec<DesiredRevision>)>, StoreError> {
        self.read(|state, now| {
            let reg = state.agents.registration(node)?;
            let desired = reg
                .configs
                .iter()
                .filter_map(|c| {
                    model::desired(
                        &state.configs,
                        &state.locks,
                        &state.agents,
                        &state.rollouts,
                        node,
                        c,
                        now,
                    )
                })
                .collect();
            Some((reg.configs.clone(), desired))
        })
        .await
    }

    /// A desired stream of `node` opened or closed: presence, in memory only (no step, no
    /// batch).
    pub fn agent_stream(&self, node: &str, opened: bool) {
        let now = self.inner.clock.now();
        lock(&self.inner.state)
            .agents
            .stream(node, opened, now.wall_ms);
    }

    /// How many agents are online now (for the metrics' gauge).
    pub fn agents_online(&self) -> usize {
        let now = self.inner.clock.now();
        lock(&self.inner.state).agents.online_count(now.wall_ms)
    }
}
