//! How the agents' refusals become API errors, each naming the node or config and the next
//! step.

use locksmith_api::{ErrorBody, ErrorCode};

use crate::domains::configs::errors::{config_not_found, revision_not_found};
use crate::engine::AgentRefusal;
use crate::request::Refusal;

/// `agent_not_found` for `node`.
pub fn agent_not_found(node: &str) -> ErrorBody {
    ErrorBody {
        resource: Some(node.to_owned()),
        ..ErrorBody::new(
            ErrorCode::AgentNotFound,
            format!(
                "no agent has registered as node {node}; start 'locksmith agent --node {node}' \
                 there, and 'locksmith fleet ls' lists the registered ones"
            ),
        )
    }
}

impl Refusal for AgentRefusal {
    fn body(&self) -> ErrorBody {
        match self {
            AgentRefusal::NotRegistered(node) => agent_not_found(node),
            AgentRefusal::NotItsConfig { node, config } => ErrorBody {
                resource: Some(config.clone()),
                ..ErrorBody::invalid(
                    "config",
                    format!(
                        "{config} is not one of the configs node {node} registered; the agent \
                         applies only the configs it registers (--config NAME=PATH)"
                    ),
                )
            },
            AgentRefusal::ConfigNotFound(name) => config_not_found(name),
            AgentRefusal::RevisionNotFound(name, rev) => revision_not_found(name, *rev),
        }
    }
}
