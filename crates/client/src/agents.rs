//! The agents and fleet calls (`/v1/agents`, `/v1/fleet`, `/v1/configs/{name}/shadow`): one
//! method per route. A node name is whatever the user typed, so it goes into a URL as one
//! escaped path segment.

use locksmith_api::agents::{
    AgentReport, AgentView, FleetResponse, RegisterAgentRequest, ShadowRequest, ShadowResponse,
};

use crate::client::{CALL_TIMEOUT, Client};
use crate::configs::name_segment;
use crate::error::ClientError;
use crate::events::DesiredStream;

impl Client {
    /// Registers (or re-registers) the agent of `node`: labels, boot id, version, configs.
    pub async fn register_agent(
        &self,
        node: &str,
        req: &RegisterAgentRequest,
    ) -> Result<AgentView, ClientError> {
        let url = self.agent_url(node, "register")?;
        self.send(self.http.post(url).json(req), CALL_TIMEOUT).await
    }

    /// Tells the server the agent of `node` is alive.
    pub async fn agent_heartbeat(&self, node: &str) -> Result<AgentView, ClientError> {
        let url = self.agent_url(node, "heartbeat")?;
        self.send(self.http.post(url), CALL_TIMEOUT).await
    }

    /// Reports what happened to one config on `node`.
    pub async fn agent_report(
        &self,
        node: &str,
        report: &AgentReport,
    ) -> Result<AgentView, ClientError> {
        let url = self.agent_url(node, "reports")?;
        self.send(self.http.post(url).json(report), CALL_TIMEOUT)
            .await
    }

    /// Opens `node`'s desired stream; read it with [`DesiredStream::next`]. While it is open
    /// the node is online.
    pub async fn desired_stream(&self, node: &str) -> Result<DesiredStream, ClientError> {
        let url = self.agent_url(node, "desired")?;
        let resp = self.open_stream(self.http.get(url)).await?;
        Ok(DesiredStream::new(resp, self.base().to_string()))
    }

    /// The endpoints whose labels match `selector` (`role=drone,site=hangar-2`; empty: all).
    pub async fn fleet(&self, selector: &str) -> Result<FleetResponse, ClientError> {
        let mut rb = self.http.get(self.url("/v1/fleet"));
        if !selector.is_empty() {
            rb = rb.query(&[("selector", selector)]);
        }
        self.send(rb, CALL_TIMEOUT).await
    }

    /// One endpoint.
    pub async fn fleet_node(&self, node: &str) -> Result<AgentView, ClientError> {
        check_node(node)?;
        let mut url = self.url("/v1/fleet");
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(node);
        }
        self.send(self.http.get(url), CALL_TIMEOUT).await
    }

    /// Sends revision `req.rev` of `name` to endpoints as a shadow: validated and diffed there,
    /// never activated.
    pub async fn shadow_config(
        &self,
        name: &str,
        req: &ShadowRequest,
    ) -> Result<ShadowResponse, ClientError> {
        locksmith_config::validate_name(name)?;
        let url = self.url(&format!("/v1/configs/{}/shadow", name_segment(name)));
        self.send(self.http.post(url).json(req), CALL_TIMEOUT).await
    }

    /// `/v1/agents/{node}/{what}`, the node as one escaped segment.
    fn agent_url(&self, node: &str, what: &str) -> Result<reqwest::Url, ClientError> {
        check_node(node)?;
        let mut url = self.url("/v1/agents");
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(node).push(what);
        }
        Ok(url)
    }
}

/// Refuses a node name that would not stay one path segment (`..` is a dot segment even
/// escaped, so it would reach another route).
fn check_node(node: &str) -> Result<(), ClientError> {
    if node.is_empty() || node == "." || node == ".." {
        return Err(ClientError::InvalidNode {
            node: node.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_name_is_one_escaped_segment() {
        let client = Client::new("http://127.0.0.1:7400/base/").expect("client");
        assert_eq!(
            client
                .agent_url("drone 7/x", "desired")
                .expect("a usable name")
                .as_str(),
            "http://127.0.0.1:7400/base/v1/agents/drone%207%2Fx/desired"
        );
        for bad in ["", ".", ".."] {
            assert!(
                matches!(
                    client.agent_url(bad, "register"),
                    Err(ClientError::InvalidNode { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
