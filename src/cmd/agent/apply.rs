//! The apply thread: the phase-1 [`Driver`] is synchronous (it fsyncs and runs hooks that may
//! take their whole timeout), so it runs on a thread of its own, fed events over a channel; it
//! keeps the core's wake-ups itself and hands fetches and reports to the async side.

use std::collections::BTreeSet;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use locksmith_agent::{
    Action, AgentSpec, Clock, Driver, Event, RealFs, ShellHooks, Step, StepObserver, SystemClock,
};
use locksmith_sim::net::Outbound;
use tokio::sync::mpsc::UnboundedSender;

/// What the apply thread is fed.
#[derive(Debug)]
pub enum Input {
    /// An event for the core.
    Event(Event),
    /// Finish what is under way and stop.
    Stop,
}

/// Sends events to the apply thread; an error means it has stopped.
#[derive(Debug, Clone)]
pub struct Events(mpsc::Sender<Input>);

impl Events {
    /// A channel to the apply thread.
    pub fn channel() -> (Self, Receiver<Input>) {
        let (tx, rx) = mpsc::channel();
        (Self(tx), rx)
    }

    /// Sends `event`.
    pub fn send(&self, event: Event) -> Result<(), ()> {
        self.0.send(Input::Event(event)).map_err(|_| ())
    }

    /// Asks the thread to stop once the event in hand is handled.
    pub fn stop(&self) {
        let _ = self.0.send(Input::Stop);
    }
}

/// The fault-injection hook for tests: `LOCKSMITH_AGENT_CRASH_AT=STEP` makes the agent
/// SIGKILL itself just before it executes apply step STEP (see [`apply_step_name`]).
pub const CRASH_ENV: &str = "LOCKSMITH_AGENT_CRASH_AT";

/// Opens the driver (running its crash recovery) and starts the apply thread. Returns once
/// recovery is done, or why the state could not be opened.
pub fn start(
    spec: AgentSpec,
    events: Receiver<Input>,
    out: UnboundedSender<Outbound>,
) -> anyhow::Result<thread::JoinHandle<()>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = thread::Builder::new()
        .name("agent-apply".into())
        .spawn(move || {
            let clock = SystemClock::default();
            let observer = std::env::var(CRASH_ENV).ok().map(crash_observer);
            let opened = Driver::open_observed(spec, RealFs, ShellHooks, clock, observer);
            let (driver, first) = match opened {
                Ok(opened) => {
                    let _ = ready_tx.send(Ok(()));
                    opened
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            run(driver, clock, first, &events, &out);
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(anyhow::Error::new(e)),
        Err(_) => anyhow::bail!("the apply thread stopped while opening the state"),
    }
}

/// The thread's loop: deliver each event (or a tick when a wake-up is due), route the actions.
fn run(
    mut driver: Driver<RealFs, ShellHooks, SystemClock>,
    clock: SystemClock,
    first: Vec<Action>,
    events: &Receiver<Input>,
    out: &UnboundedSender<Outbound>,
) {
    let mut wakes: BTreeSet<u64> = BTreeSet::new();
    route(first, &mut wakes, out);
    loop {
        let event = match wakes.first() {
            Some(&at) => {
                let wait = at.saturating_sub(clock.now_ms());
                match events.recv_timeout(Duration::from_millis(wait)) {
                    Ok(Input::Event(e)) => e,
                    Ok(Input::Stop) => return,
                    Err(RecvTimeoutError::Timeout) => {
                        let now = clock.now_ms();
                        wakes.retain(|&w| w > now);
                        Event::Tick
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            None => match events.recv() {
                Ok(Input::Event(e)) => e,
                Ok(Input::Stop) | Err(_) => return,
            },
        };
        let actions = driver.handle(event);
        route(actions, &mut wakes, out);
    }
}

fn route(actions: Vec<Action>, wakes: &mut BTreeSet<u64>, out: &UnboundedSender<Outbound>) {
    for action in actions {
        let sent = match action {
            Action::Fetch { config, rev, .. } => out.send(Outbound::Fetch { config, rev }),
            Action::Report(r) => out.send(Outbound::Report(r)),
            Action::Wake { at_ms } => {
                wakes.insert(at_ms);
                Ok(())
            }
            // The driver executes steps and apply-lock checks itself.
            Action::Step { .. } | Action::CheckApplyLock => Ok(()),
        };
        // The network side has stopped: the agent is shutting down.
        if sent.is_err() {
            return;
        }
    }
}

/// The apply steps' names, in order, as [`CRASH_ENV`] takes them: `adopt` (first apply only),
/// `persist-intent`, `stage`, `validate`, `rename`, `fsync-dir`, `reload`, `health`,
/// `save-lkg`, `commit`, `remove-old-lkg`. `previous` is the step before this one.
pub fn apply_step_name(config: &str, step: &Step, previous: &str) -> &'static str {
    match step {
        Step::Persist(state) => {
            let in_flight = state
                .configs
                .get(config)
                .is_some_and(|c| c.in_flight.is_some());
            if in_flight {
                "persist-intent"
            } else if previous == "save-lkg" {
                "commit"
            } else {
                "persist"
            }
        }
        Step::Remove { .. } if previous == "commit" => "remove-old-lkg",
        other => other.name(),
    }
}

/// Kills the process (SIGKILL: no cleanup, like a power cut to the agent) just before the
/// step named `at` — a test hook, see [`CRASH_ENV`].
fn crash_observer(at: String) -> StepObserver {
    let mut previous: &'static str = "";
    StepObserver::new(move |config, step| {
        let name = apply_step_name(config, step, previous);
        previous = name;
        if name == at {
            eprintln!("{CRASH_ENV}={at}: killing the agent before step {name} of {config}");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    })
}
