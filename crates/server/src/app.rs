//! What every request function shares, whichever transport it came by: the engine, the
//! server's settings, and what the server knows first-hand of its own node.
//!
//! One struct for every domain. A domain's durable state lives in the engine (its state
//! bundle); its settings go in [`Settings`]; neither adds a field here, so handlers of every
//! domain take the same `App`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;

use crate::domains::fleetlock::{FleetLock, InvalidFleetLock};
use crate::engine::Engine;
use crate::{NodeIdentity, ServerConfig};

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
}

impl Settings {
    /// The settings of `config`; the error names the setting that is not valid.
    pub fn of(config: &ServerConfig) -> Result<Self, InvalidFleetLock> {
        Ok(Self {
            gc_interval: config.gc_interval,
            default_lock_delay_ms: u64::try_from(config.default_lock_delay.as_millis())
                .unwrap_or(u64::MAX),
            fleetlock: FleetLock::new(config.fleetlock.clone())?,
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

impl FromRef<App> for Engine {
    fn from_ref(app: &App) -> Engine {
        app.engine.clone()
    }
}
