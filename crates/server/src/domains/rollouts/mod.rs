//! The rollouts domain: the engine drives the sans-IO planner of `locksmith-rollout` — one
//! record per rollout in the `rollouts` space, its planner state and the effects of its
//! commands (per-node overrides of the desired revision) written together.

pub mod model;
pub mod prometheus;
