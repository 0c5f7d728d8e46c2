//! [`SimHooks`]: the agent's hooks, in memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use locksmith_agent::{HookKind, HookResult, HookRun, HookStatus, Hooks};

/// Validate and reload always pass. The health hook passes, unless the agent `fails`: then it
/// passes for the first revision of each config it applies (the fleet comes up healthy on
/// what it already runs) and fails for every later one — a bad change, caught by health.
///
/// Slowness is not here: a hook runs inline on a tokio worker shared by thousands of agents,
/// so a slow agent waits (asynchronously) before it starts an apply instead (see `agent`).
#[derive(Debug, Clone)]
pub struct SimHooks {
    fails: bool,
    /// Per config, the revision whose health passed first; shared by clones, so it survives
    /// the agent's reboots as a real service's good state would.
    healthy: Arc<Mutex<HashMap<String, u64>>>,
}

/// What a failing agent's health hook prints (its report's error carries it).
pub const HEALTH_FAILURE: &str = "health check failed (simulated: this agent's --fail-rate lot)";

impl SimHooks {
    /// Hooks of an agent that `fails` or not.
    pub fn new(fails: bool) -> Self {
        Self {
            fails,
            healthy: Arc::default(),
        }
    }

    fn health_passes(&self, run: &HookRun) -> bool {
        let mut healthy = self.healthy.lock().unwrap_or_else(|e| e.into_inner());
        let first = *healthy.entry(run.config.clone()).or_insert(run.rev);
        !self.fails || run.rev <= first
    }
}

impl Hooks for SimHooks {
    fn run(&mut self, run: &HookRun) -> HookResult {
        let ok = match run.kind {
            HookKind::Validate | HookKind::Reload => true,
            HookKind::Health => self.health_passes(run),
        };
        let (status, tail) = if ok {
            (HookStatus::Ok, String::new())
        } else {
            (HookStatus::Exit { code: 1 }, format!("{HEALTH_FAILURE}\n"))
        };
        HookResult {
            status,
            tail,
            metrics: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(config: &str, rev: u64) -> HookRun {
        HookRun {
            kind: HookKind::Health,
            command: "sim".into(),
            timeout_ms: 1_000,
            config: config.into(),
            rev,
            file: "/etc/sim/x".into(),
        }
    }

    #[test]
    fn a_failing_agent_is_healthy_on_its_first_revision_only() {
        let mut hooks = SimHooks::new(true);
        assert_eq!(hooks.run(&health("a", 3)).status, HookStatus::Ok);
        assert_eq!(hooks.run(&health("a", 3)).status, HookStatus::Ok);
        assert_eq!(
            hooks.run(&health("a", 4)).status,
            HookStatus::Exit { code: 1 }
        );
        assert_eq!(hooks.clone().run(&health("b", 9)).status, HookStatus::Ok);
        let mut fine = SimHooks::new(false);
        assert_eq!(fine.run(&health("a", 1)).status, HookStatus::Ok);
        assert_eq!(fine.run(&health("a", 2)).status, HookStatus::Ok);
    }
}
