//! The agent's network side, shared by `locksmith agent` and the simulated fleet: register,
//! hold the desired stream open (reconnecting with exponential backoff and jitter), heartbeat,
//! fetch content, post reports. Everything the agent's core needs goes to it as an [`Event`]
//! through an [`EventSink`] (a thread's channel in `locksmith agent`, a task's in the
//! simulator); everything it asks for comes back as an [`Outbound`].

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use locksmith_agent::Event;
use locksmith_api::agents::{AgentReport, RegisterAgentRequest};
use locksmith_client::{Client, ClientError};
use tokio::sync::{mpsc, watch};

/// What the agent's core asks of the network side.
#[derive(Debug)]
pub enum Outbound {
    /// Fetch a revision's content and answer [`Event::Fetched`] or [`Event::FetchFailed`].
    Fetch {
        /// The config.
        config: String,
        /// The revision.
        rev: u64,
    },
    /// Send this report.
    Report(AgentReport),
}

/// Where the network side delivers events for the agent's core. An error means the core has
/// stopped, and the network side stops with it.
pub trait EventSink: Clone + Send + Sync + 'static {
    /// Delivers `event`.
    fn send(&self, event: Event) -> Result<(), Stopped>;
}

/// The agent's core has stopped taking events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the agent has stopped")]
pub struct Stopped;

/// A tokio channel's sender as an [`EventSink`] (the simulator's agents run on tasks).
impl EventSink for mpsc::UnboundedSender<Event> {
    fn send(&self, event: Event) -> Result<(), Stopped> {
        mpsc::UnboundedSender::send(self, event).map_err(|_| Stopped)
    }
}

/// The first reconnect waits about this long; each failure doubles it, up to the maximum.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// The contents the desired stream carried inline, the newest per config, until the core asks
/// to fetch that revision: then it is answered at once instead of with a request. Shared by
/// [`stream_forever`] (which fills it) and [`serve`] (which takes from it).
#[derive(Debug, Clone, Default)]
pub struct Inline(Arc<Mutex<Stash>>);

/// By config: the revision and its content.
type Stash = HashMap<String, (u64, Vec<u8>)>;

impl Inline {
    fn put(&self, config: &str, rev: u64, content: Vec<u8>) {
        self.lock().insert(config.to_owned(), (rev, content));
    }

    fn take(&self, config: &str, rev: u64) -> Option<Vec<u8>> {
        let mut stash = self.lock();
        match stash.get(config) {
            Some((r, _)) if *r == rev => stash.remove(config).map(|(_, c)| c),
            _ => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stash> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Who the agent is, for the server.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The node.
    pub node: String,
    /// What it registers.
    pub register: RegisterAgentRequest,
}

/// Keeps the desired stream open for as long as the agent runs: register, stream, and on any
/// failure `Disconnected`, wait (backoff with jitter), again. `online` follows the stream.
pub async fn stream_forever(
    client: Client,
    who: Identity,
    events: impl EventSink,
    online: watch::Sender<bool>,
    max_backoff: Duration,
    inline: Inline,
) {
    let mut failures: u32 = 0;
    loop {
        match stream_once(&client, &who, &events, &online, &inline).await {
            // The stream was up, so the next try starts from the first backoff again.
            Ok(()) => failures = 0,
            Err(e) => {
                tracing::warn!(node = %who.node, "agent stream: {e}");
            }
        }
        if online.send_replace(false) {
            tracing::warn!(node = %who.node, "disconnected from {}", client.base());
        }
        if events.send(Event::Disconnected).is_err() {
            return; // the apply thread is gone
        }
        failures = failures.saturating_add(1);
        tokio::time::sleep(backoff(failures, max_backoff)).await;
    }
}

/// One connection: register, open the stream, feed its events until it ends.
async fn stream_once(
    client: &Client,
    who: &Identity,
    events: &impl EventSink,
    online: &watch::Sender<bool>,
    inline: &Inline,
) -> Result<(), ClientError> {
    client.register_agent(&who.node, &who.register).await?;
    let mut stream = client.desired_stream(&who.node).await?;
    online.send_replace(true);
    tracing::info!(node = %who.node, "connected to {}", client.base());
    if events.send(Event::Connected).is_err() {
        return Ok(());
    }
    while let Some(mut d) = stream.next().await? {
        if let Some(content) = d.content.take() {
            // Undecodable: left out, and the revision is fetched as without it.
            if let Ok(bytes) = locksmith_client::configs::bytes_of(&content, client.base()) {
                inline.put(&d.config, d.rev, bytes);
            }
        }
        if events.send(Event::Desired(d)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// The wait before reconnect attempt `failures` (1, 2, …): `FIRST_BACKOFF · 2^(n-1)` capped at
/// `max`, then "equal jitter" (half of it fixed, half random), so a fleet that lost its server
/// at the same moment does not come back in lockstep.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let exp = FIRST_BACKOFF.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let capped = exp.min(max);
    let half = capped / 2;
    let jitter = u64::try_from(half.as_micros()).unwrap_or(u64::MAX);
    let r = if jitter == 0 {
        0
    } else {
        RandomState::new().hash_one(failures) % jitter
    };
    half + Duration::from_micros(r)
}

/// Tells the server the agent is alive every `every` while the stream is up.
pub async fn heartbeat(
    client: Client,
    node: String,
    every: Duration,
    online: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if *online.borrow() {
            if let Err(e) = client.agent_heartbeat(&node).await {
                tracing::debug!("heartbeat: {e}");
            }
        }
    }
}

/// Serves the apply thread: fetches (from [`Inline`] when the stream carried the content,
/// else each on a task of its own) and reports (sent in order;
/// while they cannot be, the newest per config waits, and is sent once the stream is up).
pub async fn serve(
    client: Client,
    node: String,
    mut out: mpsc::UnboundedReceiver<Outbound>,
    events: impl EventSink,
    mut online: watch::Receiver<bool>,
    inline: Inline,
) {
    let mut waiting: BTreeMap<String, AgentReport> = BTreeMap::new();
    loop {
        tokio::select! {
            next = out.recv() => match next {
                None => return,
                Some(Outbound::Fetch { config, rev }) => {
                    if let Some(content) = inline.take(&config, rev) {
                        if events.send(Event::Fetched { config, rev, content }).is_err() {
                            return;
                        }
                        continue;
                    }
                    let client = client.clone();
                    let events = events.clone();
                    tokio::spawn(async move {
                        let _ = events.send(fetch(&client, config, rev).await);
                    });
                }
                Some(Outbound::Report(r)) => {
                    tracing::debug!(config = %r.config, rev = r.rev, state = ?r.state, "report");
                    waiting.insert(r.config.clone(), r);
                }
            },
            changed = online.changed() => if changed.is_err() { return },
        }
        if *online.borrow() {
            send_waiting(&client, &node, &mut waiting).await;
        }
    }
}

async fn send_waiting(client: &Client, node: &str, waiting: &mut BTreeMap<String, AgentReport>) {
    while let Some((config, report)) = waiting.pop_first() {
        tracing::debug!(%config, rev = report.rev, "sending the report");
        if let Err(e) = client.agent_report(node, &report).await {
            tracing::warn!(%config, "cannot send the report (kept until reconnected): {e}");
            waiting.insert(config, report);
            return;
        }
    }
}

async fn fetch(client: &Client, config: String, rev: u64) -> Event {
    let got = match client.config_revision(&config, rev, false).await {
        Ok(view) => locksmith_client::configs::bytes_of(&view.content, client.base()),
        Err(e) => Err(e),
    };
    match got {
        Ok(content) => Event::Fetched {
            config,
            rev,
            content,
        },
        Err(e) => Event::FetchFailed {
            config,
            rev,
            error: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_at_most_half_of_it_random() {
        let max = Duration::from_secs(30);
        for failures in 1..40 {
            let full = FIRST_BACKOFF
                .saturating_mul(1u32 << (failures - 1).min(16))
                .min(max);
            let d = backoff(failures, max);
            assert!(d >= full / 2 && d <= full, "{failures}: {d:?} vs {full:?}");
        }
        assert!(backoff(40, Duration::from_secs(2)) <= Duration::from_secs(2));
    }
}
