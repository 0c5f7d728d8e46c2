//! The agents' request functions: typed request in, typed answer or [`ApiError`] out.
//!
//! Node scoping comes first: a principal bound to a node (a `node` token, or a client
//! certificate's name) registers, heartbeats, reports, streams and sees only that node —
//! `Principal::may(Access::Report { node })` — before anything of the request is looked at.

use locksmith_api::ErrorBody;
use locksmith_api::agents::{
    AgentReport, AgentView, FleetResponse, RegisterAgentRequest, ShadowRequest, ShadowResponse,
};
use locksmith_auth::{Access, Principal};
use locksmith_config::validate_name;

use super::errors::agent_not_found;
use super::model::{
    MAX_ITEMS, Registration, matches, parse_selector, validate_label, validate_node,
};
use crate::app::App;
use crate::domains::configs::errors::bad_name;
use crate::engine::{AgentRefusal, EngineError, Targets};
use crate::request::{ApiError, forbidden};

/// 403 unless `who` may act for `node`; 400 unless `node` is a node name.
pub fn may_act_for(who: &Principal, node: &str) -> Result<(), ApiError> {
    who.may(Access::Report { node })
        .map_err(|e| forbidden(&e))?;
    validate_node(node)?;
    Ok(())
}

fn refused(e: EngineError<AgentRefusal>) -> ApiError {
    ApiError::from(e)
}

/// `POST /v1/agents/{node}/register`.
pub async fn register(
    app: &App,
    who: &Principal,
    node: &str,
    req: RegisterAgentRequest,
) -> Result<AgentView, ApiError> {
    may_act_for(who, node)?;
    if req.labels.len() > MAX_ITEMS || req.configs.len() > MAX_ITEMS {
        return Err(ApiError::from(ErrorBody::invalid(
            "configs",
            format!("and labels may have at most {MAX_ITEMS} entries each"),
        )));
    }
    for (key, value) in &req.labels {
        validate_label(key, value)?;
    }
    for (field, value) in [("boot_id", &req.boot_id), ("version", &req.version)] {
        if value.trim().is_empty() || value.len() > super::model::MAX_TEXT {
            return Err(ApiError::from(ErrorBody::invalid(
                field,
                format!("must be 1–{} bytes", super::model::MAX_TEXT),
            )));
        }
    }
    // A registration under a new boot id reclaims the node's older-boot leases (first
    // contact): one claiming this server's own node under another boot id is forged.
    app.own.check_boot("boot_id", node, &req.boot_id)?;
    let mut configs = req.configs;
    for name in &configs {
        validate_name(name).map_err(|e| {
            let mut body = bad_name(&e);
            body.field = Some("configs".to_owned());
            ApiError::from(body)
        })?;
    }
    configs.sort();
    configs.dedup();
    let reg = Registration {
        node: node.to_owned(),
        labels: req.labels,
        boot_id: req.boot_id,
        version: req.version,
        configs,
        registered_at_ms: 0,
    };
    app.engine_for(who)
        .agent_register(reg)
        .await
        .map_err(refused)
}

/// `POST /v1/agents/{node}/heartbeat`.
pub async fn heartbeat(app: &App, who: &Principal, node: &str) -> Result<AgentView, ApiError> {
    may_act_for(who, node)?;
    app.engine.agent_heartbeat(node).await.map_err(refused)
}

/// `POST /v1/agents/{node}/reports`.
pub async fn report(
    app: &App,
    who: &Principal,
    node: &str,
    report: AgentReport,
) -> Result<AgentView, ApiError> {
    may_act_for(who, node)?;
    validate_name(&report.config).map_err(|e| {
        let mut body = bad_name(&e);
        body.field = Some("config".to_owned());
        ApiError::from(body)
    })?;
    let state = report.state;
    let view = app
        .engine_for(who)
        .agent_report(node, report)
        .await
        .map_err(refused)?;
    app.engine.metrics().count_agent_report(state);
    Ok(view)
}

/// `GET /v1/fleet`: the agents `who` may see whose labels match `selector`.
pub async fn fleet(app: &App, who: &Principal, selector: &str) -> Result<FleetResponse, ApiError> {
    let selector = parse_selector(selector)?;
    let agents = app
        .engine
        .fleet(|r| {
            matches(&r.labels, &selector) && who.may(Access::Report { node: &r.node }).is_ok()
        })
        .await?;
    Ok(FleetResponse { agents })
}

/// `GET /v1/fleet/{node}`.
pub async fn show(app: &App, who: &Principal, node: &str) -> Result<AgentView, ApiError> {
    may_act_for(who, node)?;
    app.engine
        .agent(node)
        .await?
        .ok_or_else(|| ApiError::from(agent_not_found(node)))
}

/// `POST /v1/configs/{name}/shadow`.
pub async fn shadow(
    app: &App,
    who: &Principal,
    name: &str,
    req: ShadowRequest,
) -> Result<ShadowResponse, ApiError> {
    validate_name(name).map_err(|e| ApiError::from(bad_name(&e)))?;
    let targets = if req.nodes.is_empty() {
        Targets::Selector(parse_selector(&req.selector)?)
    } else if req.selector.trim().is_empty() {
        for node in &req.nodes {
            validate_node(node)?;
        }
        Targets::Nodes(req.nodes)
    } else {
        return Err(ApiError::from(ErrorBody::invalid(
            "nodes",
            "and selector cannot both be given: name the nodes, or select them by label",
        )));
    };
    let nodes = app
        .engine_for(who)
        .agent_shadow(name, req.rev, targets)
        .await
        .map_err(refused)?;
    Ok(ShadowResponse {
        config: name.to_owned(),
        rev: req.rev,
        nodes,
    })
}
