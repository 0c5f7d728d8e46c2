//! # locksmith-sim
//!
//! The endpoint agent's network side ([`net`]), shared by `locksmith agent` and by the fleet
//! simulator: thousands of real agent state machines (`locksmith_agent::Driver` over an
//! in-memory file system, [`SimHooks`]) in one process, run inline on tokio tasks, each with
//! its own node identity, boot id, node token and labels, speaking the real API to a real
//! server ([`Fleet`]). A seed draws which agents fail, go offline, are slow or reboot
//! ([`Behaviour`]), so a run is repeatable. A [`World`] runs a whole server in this process on
//! virtual time, for fast deterministic scenario tests.

mod agent;
mod behaviour;
mod fleet;
mod hooks;
mod link;
pub mod net;
pub mod ops;
mod world;

pub use agent::{AgentIdentity, AgentStatus, SimAgent, unix_ms};
pub use behaviour::{Behaviour, Rates, SplitMix64, agent_rng};
pub use fleet::{Fleet, FleetSpec, FleetStatus, SimError};
pub use hooks::{HEALTH_FAILURE, SimHooks};
pub use world::{Time, World, WorldError};
