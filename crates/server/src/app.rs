//! What every request function shares, whichever transport it came by: the engine, the
//! server's settings, and what the server knows first-hand of its own node.
//!
//! One struct for every domain. A domain's durable state lives in the engine (its state
//! bundle); its settings go in [`Settings`]; neither adds a field here, so handlers of every
//! domain take the same `App`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use locksmith_auth::{AuthError, Principal, Role};

use crate::domains::fleetlock::{FleetLock, InvalidFleetLock};
use crate::engine::{Actor, Engine};
use crate::request::{ApiError, forbidden, unauthenticated};
use crate::tls::PeerIdentity;
use crate::{AuthMode, NodeIdentity, ServerConfig};

/// The state handlers share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct App {
    /// The engine.
    pub engine: Engine,
    /// The server's settings, as every domain reads them.
    pub settings: Arc<Settings>,
    /// This server's node, boot id and PID namespace: claims about its own node are checked
    /// against them (see `crate::own_node`).
    pub(crate) own: Arc<NodeIdentity>,
}

/// The server's settings that requests read, by domain. Made once from the [`ServerConfig`],
/// checked: a setting that is not valid refuses the start instead of being repaired.
#[derive(Debug)]
pub struct Settings {
    /// The reaper's longest sleep: `status` judges the server's heartbeat by it.
    pub gc_interval: Duration,
    /// Lock-delay for acquires that name none, ms.
    pub default_lock_delay_ms: u64,
    /// FleetLock's settings, and the group sizes operators changed since the start.
    pub fleetlock: FleetLock,
    /// Whether requests must authenticate (`--auth`).
    pub auth: AuthMode,
    /// Whether `/healthz` and `/metrics` need a token too (`--metrics-auth`).
    pub metrics_auth: bool,
    /// Largest config content accepted, bytes (`--max-config-bytes`).
    pub max_config_bytes: usize,
    /// Prometheus' base URL for rollouts' `prom:` gates (`--prometheus-url`).
    pub prometheus_url: Option<String>,
}

impl Settings {
    /// The settings of `config`; the error names the setting that is not valid.
    pub fn of(config: &ServerConfig) -> Result<Self, InvalidFleetLock> {
        Ok(Self {
            gc_interval: config.gc_interval,
            default_lock_delay_ms: u64::try_from(config.default_lock_delay.as_millis())
                .unwrap_or(u64::MAX),
            fleetlock: FleetLock::new(config.fleetlock.clone())?,
            auth: config.auth,
            metrics_auth: config.metrics_auth,
            max_config_bytes: config.max_config_bytes,
            prometheus_url: config.prometheus_url.clone(),
        })
    }
}

impl App {
    /// The state of a server running `engine` with `settings` on the node `own`.
    pub(crate) fn new(engine: Engine, settings: Arc<Settings>, own: &NodeIdentity) -> Self {
        Self {
            engine,
            settings,
            own: Arc::new(own.clone()),
        }
    }
}

/// The principal every request acts as with `--auth off`: an administrator nobody
/// authenticated, named so in the audit trail.
pub fn lab_principal() -> Principal {
    Principal {
        token: String::new(),
        name: "anonymous".to_owned(),
        role: Role::Admin,
        node: None,
        prefixes: Vec::new(),
    }
}

impl App {
    /// Who presents `bearer` (the secret, without `Bearer `) over a connection whose TLS peer is
    /// `peer`: 401 `unauthenticated` for a missing, malformed, unknown, revoked or expired
    /// token. A client certificate that names a node binds the principal to it: a token bound
    /// to no node takes that node, and one bound to another node is refused (403). With
    /// `--auth off` every request is [`lab_principal`] (bound to the certificate's node, if
    /// any) and nothing is refused.
    ///
    /// Reads the published token table (the last durable one), never the engine's lock.
    pub fn authenticate(
        &self,
        bearer: Option<&str>,
        peer: Option<&PeerIdentity>,
    ) -> Result<Principal, ApiError> {
        if self.settings.auth == AuthMode::Off {
            // Nobody authenticated, but a client certificate still binds its node.
            return Ok(Principal {
                node: peer.and_then(|p| p.node.clone()),
                ..lab_principal()
            });
        }
        let bearer = bearer.ok_or_else(|| unauthenticated(&AuthError::Missing))?;
        let now_ms = self.engine.clock().now().wall_ms;
        let mut principal = self
            .engine
            .tokens()
            .authenticate(bearer, now_ms)
            .map_err(|e| unauthenticated(&e))?;
        if let Some(node) = peer.and_then(|p| p.node.as_deref()) {
            match &principal.node {
                None => principal.node = Some(node.to_owned()),
                Some(bound) if bound == node => {}
                Some(bound) => {
                    return Err(forbidden(&locksmith_auth::Forbidden::Node {
                        name: principal.name.clone(),
                        bound: bound.clone(),
                        asked: node.to_owned(),
                    }));
                }
            }
        }
        Ok(principal)
    }

    /// The engine acting for `who` (see `Engine::acting_as`): its audit records name `who`,
    /// and its renewals and releases are checked against `who`'s prefixes, node and leases.
    /// With `--auth off`, the engine as it is: nobody authenticated, nobody to name.
    pub fn engine_for(&self, who: &Principal) -> Engine {
        if self.settings.auth == AuthMode::Off || who.token.is_empty() {
            return self.engine.clone();
        }
        let any_lease = who.allows(locksmith_auth::Permission::Operate).is_ok();
        self.engine
            .acting_as(Arc::new(Actor::new(who.clone(), any_lease)))
    }

    /// The operator name an operator's act (hold, acknowledgement, lift, break) is recorded
    /// under: with authentication on, the token's name — a body field cannot impersonate, so
    /// `sent` is ignored; with `--auth off`, `sent` as before (or `anonymous` if empty).
    pub fn operator_name(&self, who: &Principal, sent: &str) -> String {
        if self.settings.auth == AuthMode::On || sent.trim().is_empty() {
            who.name.clone()
        } else {
            sent.to_owned()
        }
    }

    /// Whether token `id` still works (not revoked, not expired): what a long-lived response
    /// checks on every token change and at least once a second. Always true with `--auth off`.
    pub fn token_live(&self, id: &str) -> bool {
        self.settings.auth == AuthMode::Off
            || self
                .engine
                .tokens()
                .is_live(id, self.engine.clock().now().wall_ms)
    }
}

impl FromRef<App> for Engine {
    fn from_ref(app: &App) -> Engine {
        app.engine.clone()
    }
}
