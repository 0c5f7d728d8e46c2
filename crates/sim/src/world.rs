//! [`World`]: a whole Locksmith server in this process, on virtual time, for fast deterministic
//! scenario tests with a simulated [`Fleet`](crate::Fleet).
//!
//! The server is the real one (`locksmith_server::Server`, bound on 127.0.0.1:0, authentication
//! on, its store in a temporary directory) and the agents speak HTTP to it. Only its clock is
//! injected: a [`ManualClock`] that moves when the scenario calls [`World::advance`], so every
//! lease TTL, lock-delay, hold, rollout bake and deadline runs out then and only then — a test
//! of a five-minute TTL takes no five minutes, and nothing expires behind the scenario's back.
//! The reaper's periodic sweep is an hour of that clock apart, so only the clock's own
//! deadlines wake it (the same setting as the server's own virtual-time tests).
//!
//! The agents keep the real clock for their own timers (reconnect backoff, heartbeats, their
//! driver's wake-ups): those are the endpoint's business, and virtual server time does not
//! slow them down.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use locksmith_client::{Client, ClientError};
use locksmith_server::clock::ManualClock;
use locksmith_server::{AuthMode, Server, ServerConfig, ServerError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How far apart the reaper's periodic sweeps are on virtual time: far beyond any scenario, so
/// only the clock's deadlines wake it.
const GC_ON_VIRTUAL_TIME: Duration = Duration::from_secs(3_600);

/// Which clock the server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Time {
    /// A [`ManualClock`]: time moves only by [`World::advance`].
    #[default]
    Virtual,
    /// The system clock (for fleets measured in real time).
    Real,
}

/// Why a world could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// The temporary data directory, or the admin token in it.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The server refused to start.
    #[error("cannot start the server: {0}")]
    Server(#[from] ServerError),
    /// No admin client could be made.
    #[error("cannot make the admin client: {0}")]
    Client(#[from] ClientError),
}

/// A real server in this process with authentication on, on virtual (or real) time, its data in
/// a temporary directory removed when the world is dropped.
#[derive(Debug)]
pub struct World {
    url: String,
    admin: Client,
    admin_token: String,
    clock: Option<Arc<ManualClock>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
    dir: tempfile::TempDir,
}

impl World {
    /// A server on virtual time (a [`ManualClock`] at its fixed epoch), serving on a task of
    /// the caller's runtime.
    pub async fn start() -> Result<Self, WorldError> {
        Self::start_on(Time::Virtual).await
    }

    /// A server on `time`.
    pub async fn start_on(time: Time) -> Result<Self, WorldError> {
        let dir = tempfile::tempdir().map_err(|source| WorldError::Io {
            what: "cannot make the data directory",
            source,
        })?;
        let clock = (time == Time::Virtual).then(|| Arc::new(ManualClock::new()));
        let mut config = ServerConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            data_dir: dir.path().to_path_buf(),
            auth: AuthMode::On,
            ..ServerConfig::default()
        };
        if let Some(clock) = &clock {
            config.clock = Some(Arc::clone(clock) as Arc<dyn locksmith_server::clock::Clock>);
            config.gc_interval = GC_ON_VIRTUAL_TIME;
        }
        let server = Server::bind(config).await?;
        let url = server.url();
        let admin_token = admin_token(dir.path())?;
        let admin = Client::new(&url)?.with_token(&admin_token)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            url,
            admin,
            admin_token,
            clock,
            stop: Some(stop),
            task: Some(task),
            dir,
        })
    }

    /// The server's base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client of the server with the admin token (the bootstrap one the server wrote).
    pub fn admin(&self) -> &Client {
        &self.admin
    }

    /// The admin token's secret.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The server's data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The virtual clock, if the server runs on one.
    pub fn clock(&self) -> Option<&Arc<ManualClock>> {
        self.clock.as_ref()
    }

    /// Moves the server's virtual clock `by` forward: every lease, hold, lock-delay and rollout
    /// step due by then runs out (the reaper wakes for it at once; what it does is visible a
    /// moment later, through the API). Returns false, and does nothing, on real time.
    pub fn advance(&self, by: Duration) -> bool {
        match &self.clock {
            Some(clock) => {
                clock.advance(by);
                true
            }
            None => false,
        }
    }

    /// Stops the server (open streams end) and waits for it; its data goes with the world.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        self.shut().await
    }

    async fn shut(&mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn admin_token(dir: &Path) -> Result<String, WorldError> {
    std::fs::read_to_string(dir.join("admin.token"))
        .map(|s| s.trim().to_owned())
        .map_err(|source| WorldError::Io {
            what: "cannot read the server's admin token",
            source,
        })
}
