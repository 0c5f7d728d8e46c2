//! The rollouts domain: the engine drives the sans-IO planner of `locksmith-rollout` — one
//! record per rollout in the `rollouts` space, its planner state and the effects of its
//! commands (per-node overrides of the desired revision) written together. The driver does
//! what needs IO between steps (a promotion's content, a Prometheus query, the next queued
//! rollout); the routes are `/v1/rollouts`.

pub mod driver;
pub mod errors;
pub mod model;
pub mod ops;
pub mod prometheus;
pub mod routes;
pub mod stream;
pub mod view;
