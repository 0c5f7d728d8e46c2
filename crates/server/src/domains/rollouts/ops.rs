//! The rollouts' request functions: typed request in, typed answer or [`ApiError`] out.
//!
//! Starting one needs the principal's leave to hold `configs/NAME` (its prefixes) besides
//! the route's `operate`; approvals, pauses, resumes and aborts are by the request's
//! principal, whose name the planner counts (never the starter's own approval).

use std::collections::BTreeMap;

use locksmith_api::rollouts::{
    AbortRolloutRequest, PlanEndpoint, PlanWave, RolloutList, RolloutPlan, RolloutView,
    StartRolloutRequest,
};
use locksmith_auth::{Access, Principal};
use locksmith_config::resource_of;
use locksmith_rollout::Event;

use super::errors::{invalid_rollout, rollout_not_found};
use super::view::view;
use crate::app::App;
use crate::domains::configs::errors::revision_not_found;
use crate::domains::configs::ops::blob;
use crate::engine::RolloutRefusal;
use crate::request::{ApiError, Refusal, forbidden};

fn spec_of(
    who: &Principal,
    req: &StartRolloutRequest,
) -> Result<locksmith_rollout::RolloutSpec, ApiError> {
    who.may(Access::Lease {
        resource: &resource_of(&req.config),
        owner_node: None,
    })
    .map_err(|e| forbidden(&e))?;
    req.to_spec(&who.name)
        .map_err(|e| ApiError::from(invalid_rollout(&req.config, &e)))
}

/// One rollout's view.
pub async fn get(app: &App, id: &str) -> Result<RolloutView, ApiError> {
    app.engine
        .rollouts(|rollouts, state, _| rollouts.get(id).map(|e| view(state, e)))
        .await?
        .ok_or_else(|| ApiError::from(rollout_not_found(id)))
}

/// Queues (and, when it can, starts) a rollout.
pub async fn start(
    app: &App,
    who: &Principal,
    req: StartRolloutRequest,
) -> Result<RolloutView, ApiError> {
    let spec = spec_of(who, &req)?;
    let prometheus = app.settings.prometheus_url.is_some();
    let id = app.engine_for(who).rollout_start(spec, prometheus).await?;
    get(app, &id).await
}

/// What a rollout of `req` would do now; nothing is stored.
pub async fn plan(
    app: &App,
    who: &Principal,
    req: StartRolloutRequest,
) -> Result<RolloutPlan, ApiError> {
    let spec = spec_of(who, &req)?;
    let config = spec.config.clone();
    let planned = app
        .engine
        .rollouts(|rollouts, state, now| {
            let (rollout, endpoints) = crate::engine::check_rollout(state, &spec, now)?;
            let target = state.configs.revision(&config, spec.rev).cloned();
            let metas: BTreeMap<u64, _> = endpoints
                .iter()
                .filter_map(|e| {
                    Some((
                        e.applied_rev,
                        state.configs.revision(&config, e.applied_rev)?.clone(),
                    ))
                })
                .collect();
            let behind: Vec<String> = rollouts
                .all()
                .filter(|e| e.stored.spec.config == config && (e.queued() || e.running()))
                .map(|e| e.stored.id.clone())
                .collect();
            Ok::<_, RolloutRefusal>((rollout.plan().clone(), endpoints, target, metas, behind))
        })
        .await?
        .map_err(|e| ApiError::from(e.body()))?;
    let (plan, endpoints, target, metas, queued_behind) = planned;
    let target = target.ok_or_else(|| ApiError::from(revision_not_found(&config, spec.rev)))?;
    let new = blob(app, &target).await?;
    let mut diffs = BTreeMap::new();
    for e in &endpoints {
        let key = e.applied_rev.to_string();
        if diffs.contains_key(&key) {
            continue;
        }
        let old = match metas.get(&e.applied_rev) {
            Some(meta) => blob(app, meta).await?,
            None => Vec::new(),
        };
        let from = if e.applied_rev == 0 {
            format!("{config} (nothing applied)")
        } else {
            format!("{config} rev {}", e.applied_rev)
        };
        let to = format!("{config} rev {}", spec.rev);
        diffs.insert(key, locksmith_config::diff(&from, &old, &to, &new));
    }
    let by_node: BTreeMap<&str, _> = endpoints.iter().map(|e| (e.node.as_str(), e)).collect();
    let waves = plan
        .waves
        .iter()
        .enumerate()
        .map(|(index, w)| PlanWave {
            index,
            kind: w.kind,
            allowed_failures: w.allowed_failures,
            endpoints: w
                .nodes
                .iter()
                .map(|n| PlanEndpoint {
                    node: n.clone(),
                    online: by_node.get(n.as_str()).is_some_and(|e| e.online),
                    applied_rev: by_node.get(n.as_str()).map_or(0, |e| e.applied_rev),
                })
                .collect(),
        })
        .collect();
    Ok(RolloutPlan {
        spec,
        waves,
        not_selected: plan.not_selected,
        diffs,
        queued_behind,
    })
}

/// Rollouts, newest first: of `config` (or every config), active and queued ones, and with
/// `all` ended and cancelled ones too.
pub async fn list(app: &App, config: Option<&str>, all: bool) -> Result<RolloutList, ApiError> {
    let mut rollouts = app
        .engine
        .rollouts(|rollouts, state, _| {
            rollouts
                .all()
                .filter(|e| config.is_none_or(|c| e.stored.spec.config == c))
                .filter(|e| all || e.queued() || e.running())
                .map(|e| (e.stored.seq, view(state, e)))
                .collect::<Vec<_>>()
        })
        .await?;
    rollouts.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    Ok(RolloutList {
        rollouts: rollouts.into_iter().map(|(_, v)| v).collect(),
    })
}

/// What an operator asks of a running rollout.
#[derive(Debug, Clone, Copy)]
pub enum Act {
    Approve,
    Pause,
    Resume,
    Abort { rollback: bool },
}

/// Feeds an operator's act by `who` to rollout `id`.
pub async fn act(app: &App, who: &Principal, id: &str, act: Act) -> Result<RolloutView, ApiError> {
    let principal = who.name.clone();
    let event = match act {
        Act::Approve => Event::Approval { principal },
        Act::Pause => Event::Pause { principal },
        Act::Resume => Event::Resume { principal },
        Act::Abort { rollback } => Event::Abort {
            principal,
            rollback,
        },
    };
    app.engine_for(who).rollout_event(id, event).await?;
    get(app, id).await
}

/// Aborts rollout `id`.
pub async fn abort(
    app: &App,
    who: &Principal,
    id: &str,
    req: AbortRolloutRequest,
) -> Result<RolloutView, ApiError> {
    act(
        app,
        who,
        id,
        Act::Abort {
            rollback: req.rollback,
        },
    )
    .await
}

/// Cancels queued rollout `id`.
pub async fn cancel(app: &App, who: &Principal, id: &str) -> Result<RolloutView, ApiError> {
    app.engine_for(who).rollout_cancel(id, &who.name).await?;
    get(app, id).await
}
