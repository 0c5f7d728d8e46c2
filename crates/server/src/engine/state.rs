//! What the engine's step works on: every domain's state in one bundle, behind one mutex.
//!
//! One bundle, so that an operation of any domain sees — and changes — every domain in one
//! critical section and one durable batch: a fenced config write checks the lock table's fence
//! and appends its revision together, and nothing can come between the check and the write.
//! A domain adds a field here (its state, restored at boot), its deadlines to
//! [`State::next_deadline`] and [`State::advance`], and its operations as closures handed to
//! [`step`](super::step()).

use locksmith_auth::TokenTable;
use locksmith_core::{Effects, LockTable, Mono, Now};

use super::acquirers::Acquirers;

/// Every domain's state, and the audit sequence they share.
#[derive(Debug)]
pub struct State {
    /// Leases, waiters, holds and fencing.
    pub locks: LockTable,
    /// Every API token (revoked ones too), restored at boot from the `tokens` record space.
    /// Requests are authenticated against a published copy of it, not under the state lock
    /// (see `Engine::tokens`).
    pub tokens: TokenTable,
    /// Every config's head, revisions and schema (not their content: blobs are read from the
    /// store on demand), restored at boot from the config record spaces.
    pub configs: locksmith_config::Configs,
    /// Registered endpoint agents and their last reports (restored at boot from the `agents`
    /// and `agent_reports` record spaces), with their presence and shadows (in memory only).
    pub agents: crate::domains::agents::model::Agents,
    /// Every rollout and the overrides of the running ones (restored at boot from the
    /// `rollouts` record space).
    pub rollouts: crate::domains::rollouts::model::Rollouts,
    /// Which token acquired each lease (in memory; see `Acquirers`).
    pub acquirers: Acquirers,
    /// The last audit `seq` issued. One sequence for every domain's records — the audit log and
    /// its event stream are one history — numbered by the step as it seals each batch, in batch
    /// order. Starts at the highest seq the store holds (`Snapshot::audit_seq`).
    pub audit_seq: u64,
}

impl State {
    /// The state over a restored lock table, numbering audit records after `audit_seq` (the
    /// highest the store holds).
    pub fn new(locks: LockTable, audit_seq: u64) -> Self {
        Self {
            locks,
            tokens: TokenTable::new(),
            configs: locksmith_config::Configs::new(),
            agents: crate::domains::agents::model::Agents::new(),
            rollouts: crate::domains::rollouts::model::Rollouts::new(),
            acquirers: Acquirers::default(),
            audit_seq,
        }
    }

    /// The same state with the tokens restored from the store.
    pub fn with_tokens(self, tokens: TokenTable) -> Self {
        Self { tokens, ..self }
    }

    /// The same state with the configs restored from the store.
    pub fn with_configs(self, configs: locksmith_config::Configs) -> Self {
        Self { configs, ..self }
    }

    /// The same state with the agents restored from the store.
    pub fn with_agents(self, agents: crate::domains::agents::model::Agents) -> Self {
        Self { agents, ..self }
    }

    /// The same state with the rollouts restored from the store.
    pub fn with_rollouts(self, rollouts: crate::domains::rollouts::model::Rollouts) -> Self {
        Self { rollouts, ..self }
    }

    /// When something of any domain next runs out (a lease, a wait, a lock-delay, a hold): the
    /// instant the driver must step with nothing asked ([`advance`](Self::advance)).
    pub fn next_deadline(&self) -> Option<Mono> {
        let locks = self.locks.next_deadline();
        let rollouts = self.rollouts.next_deadline();
        let renewal = self.rollouts.renewal_due(super::rollouts::LEASE_TTL_MS / 3);
        locks.into_iter().chain(rollouts).chain(renewal).min()
    }

    /// Runs every domain's clock forward to `now`: whatever is due runs out. Returns how many
    /// leases expired.
    pub fn advance(&mut self, now: Now, fx: &mut Effects) -> usize {
        // Rollouts first: their leases are renewed before the table runs expiries.
        super::rollouts::advance(self, now, fx);
        self.locks.advance(now, fx)
    }
}
