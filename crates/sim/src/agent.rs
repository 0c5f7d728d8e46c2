//! [`SimAgent`]: one simulated endpoint — the real agent core and driver over an in-memory
//! file system, run inline on tokio tasks (no thread per agent), with the real network side
//! ([`crate::net`]) on a client that shares the fleet's connection pool.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use locksmith_agent::{
    Action, AgentSpec, Clock, ConfigSpec, Driver, Event, Hook, MemFs, OpenError, ReportState,
    SystemClock,
};
use locksmith_api::agents::RegisterAgentRequest;
use locksmith_client::Client;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use crate::behaviour::{Behaviour, SplitMix64};
use crate::hooks::SimHooks;
use crate::link::{self, Outage};
use crate::net::{self, Identity, Outbound};

/// Where each simulated agent keeps its state (in its own [`MemFs`]).
const STATE_DIR: &str = "/var/lib/locksmith";
/// Where it applies config `NAME`: `/etc/sim/NAME`.
const TARGET_DIR: &str = "/etc/sim";
/// How long a slow agent's hooks take, at least and at most (drawn per apply).
const SLOW: (Duration, Duration) = (Duration::from_millis(500), Duration::from_millis(3_000));
/// A rebooting agent runs this long between reboots.
const BOOT: (Duration, Duration) = (Duration::from_secs(20), Duration::from_secs(60));
/// Heartbeats, as `locksmith agent` sends them by default.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Who one simulated agent is.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    /// Its node.
    pub node: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its node token's secret.
    pub token: String,
    /// How it behaves.
    pub behaviour: Behaviour,
}

/// What one agent last reported, per config: read by [`crate::Fleet`] without a server round
/// trip.
#[derive(Debug, Default)]
pub struct AgentStatus {
    /// Per config: the revision applied, and when it became so (Unix ms, this process's clock).
    pub applied: BTreeMap<String, (u64, u64)>,
    /// Configs whose last report is `failed`.
    pub failed: BTreeSet<String>,
    /// Per config, every revision it ever applied.
    pub ever: BTreeMap<String, BTreeSet<u64>>,
    /// Per config, every revision it reported `failed`.
    pub failed_revs: BTreeMap<String, BTreeSet<u64>>,
    /// Boots so far (1 on the first).
    pub boots: u32,
    /// The boot id it registers under now.
    pub boot_id: String,
}

/// One simulated agent, running on tasks of the caller's runtime until dropped or stopped.
#[derive(Debug)]
pub struct SimAgent {
    identity: AgentIdentity,
    status: Arc<Mutex<AgentStatus>>,
    online: watch::Receiver<bool>,
    outage: Outage,
    reboot: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl SimAgent {
    /// Starts agent `identity` applying `configs`, against the server `client` (the fleet's,
    /// whose pool its own client shares), its timings drawn from `rng`.
    pub fn start(
        identity: AgentIdentity,
        configs: &[String],
        client: &Client,
        rng: SplitMix64,
    ) -> Result<Self, locksmith_client::ClientError> {
        let client = client.clone().with_token(&identity.token)?;
        let status = Arc::new(Mutex::new(AgentStatus::default()));
        let (online_tx, online) = watch::channel(false);
        let outage = Outage::new();
        let reboot = Arc::new(Notify::new());
        let run = Run {
            identity: identity.clone(),
            spec: spec(configs),
            fs: MemFs::new(),
            hooks: SimHooks::new(identity.behaviour.fails),
            client,
            status: Arc::clone(&status),
            online: online_tx,
            outage: outage.clone(),
            reboot: Arc::clone(&reboot),
            rng,
        };
        let task = tokio::spawn(run.forever());
        Ok(Self {
            identity,
            status,
            online,
            outage,
            reboot,
            task,
        })
    }

    /// Who it is.
    pub fn identity(&self) -> &AgentIdentity {
        &self.identity
    }

    /// Whether its desired stream is up.
    pub fn is_online(&self) -> bool {
        *self.online.borrow()
    }

    /// The revision of `config` it applied (0: none) and when (Unix ms).
    pub fn applied(&self, config: &str) -> (u64, u64) {
        self.lock().applied.get(config).copied().unwrap_or((0, 0))
    }

    /// Whether it ever applied revision `rev` of `config` (its first revision, while booting,
    /// included).
    pub fn ever_applied(&self, config: &str, rev: u64) -> bool {
        self.lock()
            .ever
            .get(config)
            .is_some_and(|revs| revs.contains(&rev))
    }

    /// Whether it ever reported revision `rev` of `config` `failed` (a later report, after a
    /// rollback sent it its previous revision again, does not clear this).
    pub fn ever_failed(&self, config: &str, rev: u64) -> bool {
        self.lock()
            .failed_revs
            .get(config)
            .is_some_and(|revs| revs.contains(&rev))
    }

    /// Whether its last report of `config` was `failed`.
    pub fn failed(&self, config: &str) -> bool {
        self.lock().failed.contains(config)
    }

    /// How many times it has booted.
    pub fn boots(&self) -> u32 {
        self.lock().boots
    }

    /// The boot id it runs (and registers) under now: `NODE-boot-N` on its N-th boot.
    pub fn boot_id(&self) -> String {
        self.lock().boot_id.clone()
    }

    /// Takes it offline, as an agent that goes offline now and then does: its desired stream
    /// closes, it stops heartbeating, and its reports wait (the newest per config) until it is
    /// back. Returns once the stream is closed, so nothing the server publishes after this
    /// reaches it; it stays offline — through reboots too — until [`come_back`](Self::come_back).
    pub async fn go_offline(&self) {
        self.outage.wanted.send_replace(false);
        let mut dark = self.outage.dark.subscribe();
        // The link's task outlives nothing but the agent: if it is gone, so is the stream.
        let _ = dark.wait_for(|dark| *dark).await;
    }

    /// Brings it back from [`go_offline`](Self::go_offline): it registers again, reopens its
    /// stream (which sends what it should run now) and sends the reports that waited.
    pub fn come_back(&self) {
        self.outage.wanted.send_replace(true);
    }

    /// Reboots it now: every connection drops, its agent restarts on the same files (the
    /// driver's crash recovery runs) and registers under a new boot id — its node's first
    /// contact after the boot.
    pub fn reboot(&self) {
        self.reboot.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AgentStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops it: its tasks and connections end.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for SimAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The agent's spec: each config at `/etc/sim/NAME`, with all three hooks (in memory).
fn spec(configs: &[String]) -> AgentSpec {
    let mut spec = AgentSpec::new(STATE_DIR);
    spec.configs = configs
        .iter()
        .map(|name| {
            let mut c = ConfigSpec::new(name, PathBuf::from(TARGET_DIR).join(name));
            c.validate = Some(Hook::new("sim validate"));
            c.reload = Some(Hook::new("sim reload"));
            c.health = Some(Hook::new("sim health"));
            c
        })
        .collect();
    spec
}

/// The agent's running parts.
struct Run {
    identity: AgentIdentity,
    spec: AgentSpec,
    fs: MemFs,
    hooks: SimHooks,
    client: Client,
    status: Arc<Mutex<AgentStatus>>,
    online: watch::Sender<bool>,
    outage: Outage,
    reboot: Arc<Notify>,
    rng: SplitMix64,
}

impl Run {
    /// Boots, runs until its next reboot (never, unless it reboots), boots again.
    async fn forever(mut self) {
        let mut boot: u32 = 0;
        loop {
            boot += 1;
            let lasts = self
                .identity
                .behaviour
                .reboots
                .then(|| self.rng.between(BOOT.0, BOOT.1));
            if let Err(e) = self.boot(boot, lasts).await {
                tracing::error!(node = %self.identity.node, "cannot open the agent: {e}");
                return;
            }
            // A reboot: every connection dropped, the driver gone; files (the MemFs) kept.
            self.online.send_replace(false);
        }
    }

    /// One boot: opens the driver on the same files (its crash recovery runs), registers with
    /// a new boot id, and runs for `lasts` (or for ever).
    async fn boot(&mut self, boot: u32, lasts: Option<Duration>) -> Result<(), OpenError> {
        let node = self.identity.node.clone();
        let boot_id = format!("{node}-boot-{boot}");
        self_status(&self.status, |s| {
            s.boots = boot;
            s.boot_id.clone_from(&boot_id);
        });
        let clock = SystemClock::default();
        let (mut driver, first) = Driver::open(
            self.spec.clone(),
            self.fs.clone(),
            self.hooks.clone(),
            clock,
        )?;
        let who = Identity {
            node: node.clone(),
            register: RegisterAgentRequest {
                labels: self.identity.labels.clone(),
                boot_id,
                version: env!("CARGO_PKG_VERSION").to_string(),
                configs: self.spec.configs.iter().map(|c| c.name.clone()).collect(),
            },
        };
        let (events, mut events_rx) = mpsc::unbounded_channel::<Event>();
        let (out, out_rx) = mpsc::unbounded_channel::<Outbound>();
        let mut tasks = JoinSet::new();
        let inline = net::Inline::default();
        tasks.spawn(net::serve(
            self.client.clone(),
            node.clone(),
            out_rx,
            events.clone(),
            self.online.subscribe(),
            inline.clone(),
        ));
        tasks.spawn(net::heartbeat(
            self.client.clone(),
            node.clone(),
            HEARTBEAT,
            self.online.subscribe(),
        ));
        tasks.spawn(link::run(
            self.client.clone(),
            who,
            events.clone(),
            self.online.clone(),
            inline,
            self.identity.behaviour.offline,
            self.outage.clone(),
            self.rng.clone(),
        ));
        let mut wakes = BTreeSet::new();
        self.route(first, &mut wakes, &out);
        let ends = lasts.map(|d| tokio::time::Instant::now() + d);
        loop {
            let wake = wakes.first().map(|&at: &u64| {
                tokio::time::Instant::now()
                    + Duration::from_millis(at.saturating_sub(clock.now_ms()))
            });
            let event = tokio::select! {
                e = events_rx.recv() => match e {
                    Some(e) => e,
                    None => return Ok(()),
                },
                () = sleep_until(wake) => {
                    let now = clock.now_ms();
                    wakes.retain(|&w| w > now);
                    Event::Tick
                }
                () = sleep_until(ends) => return Ok(()),
                () = self.reboot.notified() => return Ok(()),
            };
            if self.identity.behaviour.slow && matches!(event, Event::Fetched { .. }) {
                // Its hooks "take longer": the apply waits before it starts.
                tokio::time::sleep(self.rng.between(SLOW.0, SLOW.1)).await;
            }
            let actions = driver.handle(event);
            self.route(actions, &mut wakes, &out);
        }
    }

    /// Hands fetches and reports to the network side, keeps wake-ups, and notes what each
    /// report says for [`SimAgent::applied`].
    fn route(
        &self,
        actions: Vec<Action>,
        wakes: &mut BTreeSet<u64>,
        out: &mpsc::UnboundedSender<Outbound>,
    ) {
        for action in actions {
            match action {
                Action::Fetch { config, rev, .. } => {
                    let _ = out.send(Outbound::Fetch { config, rev });
                }
                Action::Report(r) => {
                    note(&self.status, &r);
                    let _ = out.send(Outbound::Report(r));
                }
                Action::Wake { at_ms } => {
                    wakes.insert(at_ms);
                }
                Action::Step { .. } | Action::CheckApplyLock => {}
            }
        }
    }
}

/// Notes a report in the agent's status.
fn note(status: &Mutex<AgentStatus>, r: &locksmith_agent::Report) {
    self_status(status, |s| {
        let changed = s.applied.get(&r.config).map(|&(rev, _)| rev) != Some(r.applied_rev);
        if changed {
            s.applied
                .insert(r.config.clone(), (r.applied_rev, unix_ms()));
            s.ever
                .entry(r.config.clone())
                .or_default()
                .insert(r.applied_rev);
        }
        match r.state {
            ReportState::Failed => {
                s.failed.insert(r.config.clone());
                s.failed_revs
                    .entry(r.config.clone())
                    .or_default()
                    .insert(r.rev);
            }
            ReportState::Applied => {
                s.failed.remove(&r.config);
            }
            _ => {}
        }
    });
}

fn self_status<T>(status: &Mutex<AgentStatus>, f: impl FnOnce(&mut AgentStatus) -> T) -> T {
    f(&mut status.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Now, Unix ms.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
