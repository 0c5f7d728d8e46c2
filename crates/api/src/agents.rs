//! Bodies of the agents and fleet API: endpoint agents register, stay connected to a stream of
//! desired revisions, and report what they applied; operators list the fleet.
//!
//! | route | body → answer | permission |
//! |---|---|---|
//! | `POST /v1/agents/{node}/register` | [`RegisterAgentRequest`] → [`AgentView`] | report (a node token: its node only) |
//! | `POST /v1/agents/{node}/heartbeat` | — → [`AgentView`] | report (its node only) |
//! | `GET /v1/agents/{node}/desired` | server-sent events, `desired` → [`DesiredRevision`] | read (its node only) |
//! | `POST /v1/agents/{node}/reports` | [`AgentReport`] → [`AgentView`] | report (its node only) |
//! | `POST /v1/configs/{name}/shadow` | [`ShadowRequest`] → [`ShadowResponse`] | operate |
//! | `GET /v1/fleet?selector=k=v,k2=v2` | → [`FleetResponse`] | read (a node token sees its node only) |
//! | `GET /v1/fleet/{node}` | → [`AgentView`] | read (its node only) |
//!
//! The desired stream sends one `desired` event per config the agent registered when it
//! connects, and another whenever that config's desired revision changes (a new current
//! revision; a shadow sent to the node); a config with no current revision sends nothing. The
//! content is fetched from `GET /v1/configs/{name}/revisions/{rev}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use locksmith_config::Format;

/// `POST /v1/agents/{node}/register`: who the agent is and what it applies. Registering again
/// (a restart, a reboot, new labels) replaces the registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterAgentRequest {
    /// Labels selectors match (`role=drone`, `site=hangar-2`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The node's boot id (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// The agent's version.
    pub version: String,
    /// The configs it applies, by name.
    pub configs: Vec<String>,
}

/// A desired revision of one config for one node, as the stream sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DesiredRevision {
    /// The config.
    pub config: String,
    /// The revision.
    pub rev: u64,
    /// Its content's SHA-256 (lowercase hex).
    pub sha256: String,
    /// Its content's size in bytes.
    pub size: u64,
    /// The config's format.
    pub format: Format,
    /// The fencing token it was written under.
    pub token: u64,
    /// The fence of `configs/NAME` now: the highest token the lock has granted.
    pub fence: u64,
    /// A draft to validate and diff, never to activate.
    #[serde(default)]
    pub shadow: bool,
    /// For a draft: the revision that was current when it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_rev: Option<u64>,
    /// The rollout whose revision this is (`ro-3`), while a rollout's override decides it: a
    /// rollback to the revision the endpoint already runs is still told (and answered), even
    /// if the rolled one never reached it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    /// The revision's content, for one of at most [`INLINE_CONTENT_MAX`] bytes (as
    /// `GET /v1/configs/{name}/revisions/{rev}` has it): the agent applies it without fetching
    /// it — one request fewer per endpoint for every revision a fleet takes. The agent checks
    /// its size and SHA-256 against this event's either way. Absent for a larger one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<crate::configs::Content>,
}

/// The largest content a desired event carries inline, bytes.
pub const INLINE_CONTENT_MAX: u64 = 64 * 1024;

/// A config's state on an endpoint, as its agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ApplyState {
    /// The revision is applied (and healthy, when there is a health hook).
    Applied,
    /// Applying it failed; last-known-good is in place.
    Failed,
    /// Refused by the agent's local fence check; nothing was touched.
    Refused,
    /// Waiting for the endpoint's apply-lock file to go away.
    Deferred,
    /// A shadow revision that parses and passes validate.
    ShadowOk,
    /// A shadow revision that does not.
    ShadowFailed,
}

/// `POST /v1/agents/{node}/reports`: what happened to one config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentReport {
    /// The config.
    pub config: String,
    /// The revision this report is about.
    pub rev: u64,
    /// Its state.
    pub state: ApplyState,
    /// The revision applied now (0: none).
    pub applied_rev: u64,
    /// The highest fencing token applied.
    pub applied_token: u64,
    /// Why it failed, was refused or deferred (for `refused`: the `lock mismatch` line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For `applied`: milliseconds from receiving the desired revision to applying it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_to_applied_ms: Option<u64>,
    /// For shadow reports: the unified diff from the applied content to the shadow's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Numbers the health hook printed (`metric error_rate=0.002` lines), for rollout gates
    /// like `--gate 'error_rate < 0.01'`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

/// One config on one endpoint: what it should run and what it reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndpointConfig {
    /// The config.
    pub config: String,
    /// The revision the server wants it to run (none while the config has no current one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_rev: Option<u64>,
    /// The agent's last report about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<AgentReport>,
    /// When the last report came, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at_ms: Option<u64>,
    /// The agent's last report about a shadow of this config (validated and diffed, or
    /// refused; never activated), kept apart from `report`, which says what the endpoint runs.
    /// In memory on the server, like the shadows: gone after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_report: Option<AgentReport>,
}

/// An endpoint, as the fleet listing shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentView {
    /// The node.
    pub node: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its boot id when it last registered.
    pub boot_id: String,
    /// The agent's version.
    pub version: String,
    /// Whether it is connected now: its desired stream is open, or it was heard from within
    /// three heartbeat intervals.
    pub online: bool,
    /// When it was last heard from (register, heartbeat, report, stream), Unix ms.
    pub last_seen_ms: u64,
    /// When it registered, Unix ms.
    pub registered_at_ms: u64,
    /// Each config it applies.
    pub configs: Vec<EndpointConfig>,
}

/// `GET /v1/fleet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FleetResponse {
    /// The endpoints the selector matches, by node.
    pub agents: Vec<AgentView>,
}

/// `POST /v1/configs/{name}/shadow`: send revision `rev` (usually a draft) to the endpoints the
/// selector matches (or the nodes named) as a shadow: each validates it and reports the diff it
/// would make, and activates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ShadowRequest {
    /// The revision.
    pub rev: u64,
    /// Label selector (`role=drone,site=hangar-2`: every pair must match); empty: every
    /// endpoint that applies the config.
    #[serde(default)]
    pub selector: String,
    /// Or these nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
}

/// The answer to a shadow: where it was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShadowResponse {
    /// The config.
    pub config: String,
    /// The revision.
    pub rev: u64,
    /// The nodes it was sent to.
    pub nodes: Vec<String>,
}
