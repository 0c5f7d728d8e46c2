//! A simulated agent's link to the server: its desired stream, kept up by the shared network
//! side ([`crate::net`]), dropped for an outage — drawn from the seed for an agent that goes
//! offline now and then, or ordered by a scenario ([`Outage`]) — and brought back.
//!
//! Both kinds of outage drop the link the same way ([`go_dark`]): the stream's task ends (its
//! connection closes), `online` turns false — so heartbeats stop and reports wait, the newest
//! per config, until the link is back — and the agent's core hears `Disconnected`.

use std::time::Duration;

use locksmith_agent::Event;
use locksmith_client::Client;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::behaviour::SplitMix64;
use crate::net::{self, Identity, Inline};

/// An agent that goes offline now and then stays up this long between outages, at least and
/// at most.
const UP: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(40));
/// And is away this long.
const DOWN: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(20));
/// The network side's longest reconnect wait.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A scenario's hold on an agent's link, shared by every boot of the agent (an agent kept
/// offline stays offline through a reboot).
#[derive(Debug, Clone)]
pub struct Outage {
    /// Whether the scenario wants the link up (the agent's handle writes it).
    pub wanted: watch::Sender<bool>,
    /// Whether the link is down because the scenario asked: set once the stream's task has
    /// ended, so a scenario that waits for it knows no revision can reach the agent any more.
    pub dark: watch::Sender<bool>,
}

impl Outage {
    /// Link up, nothing held.
    pub fn new() -> Self {
        Self {
            wanted: watch::Sender::new(true),
            dark: watch::Sender::new(false),
        }
    }
}

/// Keeps the link up — except during outages — until the agent's core stops.
#[allow(clippy::too_many_arguments)] // the stream's ends, then the outage's: one call site
pub async fn run(
    client: Client,
    who: Identity,
    events: mpsc::UnboundedSender<Event>,
    online: watch::Sender<bool>,
    inline: Inline,
    offline_now_and_then: bool,
    outage: Outage,
    mut rng: SplitMix64,
) {
    let mut wanted = outage.wanted.subscribe();
    loop {
        if !*wanted.borrow_and_update() {
            // Held offline, and no stream of this boot runs (a reboot ended the last one).
            outage.dark.send_replace(true);
        }
        if wanted.wait_for(|up| *up).await.is_err() {
            return;
        }
        outage.dark.send_replace(false);
        let mut stream = tokio::spawn(net::stream_forever(
            client.clone(),
            who.clone(),
            events.clone(),
            online.clone(),
            MAX_BACKOFF,
            inline.clone(),
        ));
        let drawn = async {
            if offline_now_and_then {
                tokio::time::sleep(rng.between(UP.0, UP.1)).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let ordered = tokio::select! {
            _ = &mut stream => return, // the core stopped
            () = drawn => false,
            down = wanted.wait_for(|up| !*up) => match down {
                Ok(_) => true,
                Err(_) => return,
            },
        };
        if !go_dark(stream, &online, &events).await {
            return;
        }
        if !ordered {
            // A drawn outage ends by itself; ordered meanwhile, it lasts until the scenario
            // brings the agent back (the loop's top says it is dark).
            tokio::select! {
                () = tokio::time::sleep(rng.between(DOWN.0, DOWN.1)) => {}
                down = wanted.wait_for(|up| !*up) => if down.is_err() { return },
            }
        }
    }
}

/// Drops the link: ends the stream's task (its connection closes), marks the agent offline (no
/// heartbeats, reports wait) and tells its core. False if the core has stopped.
async fn go_dark(
    stream: JoinHandle<()>,
    online: &watch::Sender<bool>,
    events: &mpsc::UnboundedSender<Event>,
) -> bool {
    stream.abort();
    let _ = stream.await;
    online.send_replace(false);
    events.send(Event::Disconnected).is_ok()
}
