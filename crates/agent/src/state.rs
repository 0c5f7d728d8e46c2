//! The agent's persisted state: one JSON file in the state directory, written atomically.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fence::FenceState;

/// The state file's format version.
pub const STATE_VERSION: u32 = 1;

/// Everything the agent must remember across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// Per config name.
    pub configs: BTreeMap<String, ConfigState>,
}

impl Default for AgentState {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            configs: BTreeMap::new(),
        }
    }
}

/// One config's persisted state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigState {
    /// The fence record ([`FenceState`]).
    pub fence: FenceState,
    /// The last-known-good copy: what the target holds when no apply is in flight. `None`
    /// until the first apply adopts the file it found.
    pub lkg: Option<Lkg>,
    /// An apply that had started (its intent persisted) and not yet committed or been
    /// rolled back: recovery's hint.
    pub in_flight: Option<InFlight>,
    /// A last-known-good copy no longer referenced, to remove.
    pub stale_lkg: Option<String>,
}

/// A last-known-good copy in the state directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lkg {
    /// Its revision (0: the file found before the agent's first apply).
    pub rev: u64,
    /// The token it was written under (0 for the adopted file).
    pub token: u64,
    /// The copy's file name in the state directory.
    pub file: String,
    /// The content's SHA-256; `None` when the target did not exist (restoring removes it).
    pub sha256: Option<String>,
}

/// An apply that had started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    /// The revision being applied.
    pub rev: u64,
    /// Its content's SHA-256.
    pub sha256: String,
    /// Its last-known-good copy's file name, in case one was written before the crash.
    pub lkg_file: String,
}
