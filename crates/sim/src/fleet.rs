//! [`Fleet`]: thousands of [`SimAgent`]s in one process, with node tokens made through the API.

use std::collections::BTreeMap;

use locksmith_api::{CreateTokenRequest, Role};
use locksmith_client::{Client, ClientError};
use tokio::task::JoinSet;

use crate::agent::{AgentIdentity, SimAgent};
use crate::behaviour::{Behaviour, Rates, agent_rng};

/// How many node tokens are made at once: the server commits them in batches, so a few dozen
/// in flight make 10,000 in seconds without a connection each.
const TOKENS_IN_FLIGHT: usize = 64;

/// How many agents share one loopback source address (and one connection pool) when the
/// server is on `127.0.0.1`: each holds a desired stream and, at a burst of reports, another
/// connection, so a few hundred agents keep an address's ephemeral ports sparse.
const AGENTS_PER_ADDRESS: usize = 250;

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSpec {
    /// How many agents.
    pub agents: usize,
    /// Draws which agents fail, go offline, are slow or reboot, and their timings: the same
    /// seed, the same agents.
    pub seed: u64,
    /// The chance an agent's health hook fails (for every revision after its first).
    pub fail_rate: f64,
    /// The chance an agent drops its stream now and then.
    pub offline_rate: f64,
    /// The chance an agent's hooks take longer (0.5–3 s).
    pub slow_rate: f64,
    /// The chance an agent reboots now and then (every 20–60 s).
    pub reboot_rate: f64,
    /// The configs every agent applies.
    pub configs: Vec<String>,
    /// Node names are `PREFIX-00000`…; tokens are named `sim@NODE`.
    pub prefix: String,
}

impl Default for FleetSpec {
    fn default() -> Self {
        Self {
            agents: 100,
            seed: 0,
            fail_rate: 0.0,
            offline_rate: 0.0,
            slow_rate: 0.0,
            reboot_rate: 0.0,
            configs: Vec::new(),
            prefix: "sim".into(),
        }
    }
}

impl FleetSpec {
    /// Refuses a rate outside 0..=1 and a fleet with no config, before anything is made.
    pub fn check(&self) -> Result<(), SimError> {
        check(self)
    }

    fn rates(&self) -> Rates {
        Rates {
            fail: self.fail_rate,
            offline: self.offline_rate,
            slow: self.slow_rate,
            reboot: self.reboot_rate,
        }
    }
}

/// Why a fleet could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A rate outside 0..=1, or no config.
    #[error("invalid fleet: {0}")]
    Invalid(String),
    /// The server refused or could not be reached.
    #[error("{what}: {source}")]
    Server {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: ClientError,
    },
}

/// What the fleet is doing, from the agents' own state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetStatus {
    /// Agents.
    pub agents: usize,
    /// Agents whose desired stream is up.
    pub online: usize,
    /// Per config, per revision applied: how many agents.
    pub applied: BTreeMap<String, BTreeMap<u64, usize>>,
    /// Agents whose last report of some config is `failed`.
    pub failed: usize,
}

/// A running fleet. Dropping it stops every agent.
#[derive(Debug)]
pub struct Fleet {
    agents: Vec<SimAgent>,
}

impl Fleet {
    /// Makes a node token per agent (`POST /v1/tokens`, role node, bound to its node) with
    /// `admin_token`, then starts the agents against `server_url`. They share one connection
    /// pool; each holds a desired stream (one connection) of its own.
    pub async fn start(
        server_url: &str,
        admin_token: &str,
        spec: FleetSpec,
    ) -> Result<Self, SimError> {
        let admin = Client::new(server_url)
            .and_then(|c| c.with_token(admin_token))
            .map_err(|source| SimError::Server {
                what: format!("cannot make a client of {server_url}"),
                source,
            })?;
        Self::start_with(&admin, spec).await
    }

    /// [`Fleet::start`] with an admin client of the server (whose pool the agents share).
    pub async fn start_with(admin: &Client, spec: FleetSpec) -> Result<Self, SimError> {
        check(&spec)?;
        let rates = spec.rates();
        let nodes: Vec<String> = (0..spec.agents)
            .map(|i| format!("{}-{i:05}", spec.prefix))
            .collect();
        let tokens = make_tokens(admin, &nodes).await?;
        let pools = pools(admin, spec.agents)?;
        let mut agents = Vec::with_capacity(spec.agents);
        for (i, (node, token)) in nodes.into_iter().zip(tokens).enumerate() {
            let mut rng = agent_rng(spec.seed, i);
            let behaviour = Behaviour::draw(spec.seed, i, &rates);
            // Past the four draws `Behaviour::draw` made from the same stream.
            for _ in 0..4 {
                rng.next_u64();
            }
            let identity = AgentIdentity {
                labels: labels(i),
                node,
                token,
                behaviour,
            };
            let pool = &pools[i / AGENTS_PER_ADDRESS % pools.len()];
            let agent = SimAgent::start(identity, &spec.configs, pool, rng).map_err(|source| {
                SimError::Server {
                    what: "cannot make an agent's client".into(),
                    source,
                }
            })?;
            agents.push(agent);
        }
        Ok(Self { agents })
    }

    /// The agents, in node order.
    pub fn agents(&self) -> &[SimAgent] {
        &self.agents
    }

    /// How many agents report revision `rev` of `config` applied (their own state: no server
    /// round trip).
    pub fn applied(&self, config: &str, rev: u64) -> usize {
        self.agents
            .iter()
            .filter(|a| a.applied(config).0 == rev)
            .count()
    }

    /// Counts what the agents are doing.
    pub fn status(&self, configs: &[String]) -> FleetStatus {
        let mut status = FleetStatus {
            agents: self.agents.len(),
            ..FleetStatus::default()
        };
        for a in &self.agents {
            status.online += usize::from(a.is_online());
            let mut failed = false;
            for c in configs {
                let (rev, _) = a.applied(c);
                *status
                    .applied
                    .entry(c.clone())
                    .or_default()
                    .entry(rev)
                    .or_default() += 1;
                failed |= a.failed(c);
            }
            status.failed += usize::from(failed);
        }
        status
    }

    /// Takes the agents at `which` (indexes, in node order) offline ([`SimAgent::go_offline`]):
    /// returns once each one's desired stream is closed.
    pub async fn go_offline(&self, which: &[usize]) {
        for agent in which.iter().filter_map(|&i| self.agents.get(i)) {
            agent.go_offline().await;
        }
    }

    /// Brings the agents at `which` back ([`SimAgent::come_back`]).
    pub fn come_back(&self, which: &[usize]) {
        for agent in which.iter().filter_map(|&i| self.agents.get(i)) {
            agent.come_back();
        }
    }

    /// Stops every agent (their connections close).
    pub fn stop(&self) {
        for a in &self.agents {
            a.stop();
        }
    }
}

fn check(spec: &FleetSpec) -> Result<(), SimError> {
    let rates = [
        ("fail", spec.fail_rate),
        ("offline", spec.offline_rate),
        ("slow", spec.slow_rate),
        ("reboot", spec.reboot_rate),
    ];
    for (name, rate) in rates {
        if !(0.0..=1.0).contains(&rate) {
            return Err(SimError::Invalid(format!(
                "the {name} rate {rate} is not between 0 and 1"
            )));
        }
    }
    if spec.configs.is_empty() {
        return Err(SimError::Invalid("no config to apply".into()));
    }
    Ok(())
}

/// A mix of endpoints: 70 % drones, 20 % arms, 10 % research rigs, over four sites.
fn labels(i: usize) -> BTreeMap<String, String> {
    let role = match i % 10 {
        0..=6 => "drone",
        7 | 8 => "arm",
        _ => "rig",
    };
    BTreeMap::from([
        ("role".to_string(), role.to_string()),
        ("site".to_string(), format!("site-{}", i % 4 + 1)),
    ])
}

/// One node token per node, in order.
/// The clients the agents share, a pool each. For a server on `127.0.0.1` over plain HTTP,
/// one per [`AGENTS_PER_ADDRESS`] agents, leaving from `127.0.0.2`, `127.0.0.3`, … (all
/// loopback): one source address for 10,000 agents' connections filled its range of
/// ephemeral ports, and every new connection's search for a free port took longer than the
/// server's answer. Elsewhere the admin client's pool, as before.
fn pools(admin: &Client, agents: usize) -> Result<Vec<Client>, SimError> {
    let base = admin.base();
    let on_loopback = base
        .strip_prefix("http://127.0.0.1:")
        .is_some_and(|port| port.trim_end_matches('/').parse::<u16>().is_ok());
    if !on_loopback {
        return Ok(vec![admin.clone()]);
    }
    let addresses = agents.div_ceil(AGENTS_PER_ADDRESS).clamp(1, 250);
    (0..addresses)
        .map(|k| {
            let address =
                std::net::Ipv4Addr::new(127, 0, 0, u8::try_from(k + 2).unwrap_or(u8::MAX));
            Client::bound_to(base, address.into()).map_err(|source| SimError::Server {
                what: format!("cannot make a client from {address}"),
                source,
            })
        })
        .collect()
}

async fn make_tokens(admin: &Client, nodes: &[String]) -> Result<Vec<String>, SimError> {
    let mut tokens = vec![String::new(); nodes.len()];
    let mut next = 0;
    let mut in_flight = JoinSet::new();
    loop {
        while in_flight.len() < TOKENS_IN_FLIGHT && next < nodes.len() {
            let admin = admin.clone();
            let node = nodes[next].clone();
            let i = next;
            in_flight.spawn(async move {
                let req = CreateTokenRequest {
                    name: format!("sim@{node}"),
                    role: Role::Node,
                    node: Some(node.clone()),
                    prefixes: Vec::new(),
                    ttl_ms: None,
                };
                (i, node, admin.create_token(&req).await)
            });
            next += 1;
        }
        let Some(done) = in_flight.join_next().await else {
            return Ok(tokens);
        };
        let Ok((i, node, made)) = done else {
            return Err(SimError::Invalid("a token task stopped".into()));
        };
        let made = made.map_err(|source| SimError::Server {
            what: format!("cannot make a node token for {node} (an admin token is needed)"),
            source,
        })?;
        tokens[i] = made.token;
    }
}
