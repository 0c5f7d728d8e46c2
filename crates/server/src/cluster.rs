//! Cluster mode: several Locksmith servers in front of one etcd cluster.
//!
//! Exactly one server — the leader, elected through etcd — runs the lock table; every commit it
//! makes is an etcd transaction guarded by its election key's create revision, so a deposed
//! leader's writes are refused by etcd itself (the election is the fence). The other servers
//! forward every request to the leader ([`crate::proxy`]). Fencing tokens stay strictly
//! increasing across leaders because each new leader loads the high-water mark from etcd before
//! serving. A leader that loses its election lease (or whose write etcd refuses) steps down at
//! once — stops serving, drops its table — and campaigns again; clients see a short `no_leader`
//! window, shorter than their leases' TTLs, and the next leader treats every lease as renewed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use locksmith_etcd::{EtcdStore, Guard};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::proxy::Forwarder;
use crate::{
    EngineTasks, NodeIdentity, ServerConfig, ServerError, app_state, bind_listener, http, recover,
};

/// Where the cluster lives.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// etcd client URLs.
    pub endpoints: Vec<String>,
    /// Key prefix for everything Locksmith stores (default `/locksmith/`).
    pub prefix: String,
    /// The URL other servers forward to when this one leads (default `http://<listen addr>`).
    pub advertise: Option<String>,
    /// Election lease TTL: how long a dead leader keeps the cluster leaderless.
    pub election_ttl: Duration,
}

impl ClusterConfig {
    /// A cluster on `endpoints` with the default prefix and a 5 s election TTL.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            prefix: "/locksmith/".into(),
            advertise: None,
            election_ttl: Duration::from_secs(5),
        }
    }
}

/// What a server is doing right now.
#[derive(Debug, Clone)]
enum Role {
    /// Forwarding to the leader.
    Follower,
    /// Serving with its own engine.
    Leader(Router),
}

#[derive(Debug, Clone)]
struct ClusterState {
    role: Arc<RwLock<Role>>,
    forwarder: Forwarder,
    me: String,
}

#[derive(Debug, Serialize)]
struct ClusterInfo {
    role: &'static str,
    me: String,
    leader: Option<String>,
}

/// A bound cluster-mode server.
#[derive(Debug)]
pub struct ClusterServer {
    listener: TcpListener,
    config: ServerConfig,
    cluster: ClusterConfig,
    identity: NodeIdentity,
    me: String,
}

impl ClusterServer {
    /// Binds the listener; the election starts in [`ClusterServer::serve`].
    pub async fn bind(config: ServerConfig, cluster: ClusterConfig) -> Result<Self, ServerError> {
        let identity = NodeIdentity::of(&config)?;
        let listener = bind_listener(config.listen).await?;
        let addr = listener.local_addr().unwrap_or(config.listen);
        let me = cluster
            .advertise
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        Ok(Self {
            listener,
            config,
            cluster,
            identity,
            me,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// Serves until `shutdown` resolves, then resigns and stops.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let ClusterServer {
            listener,
            config,
            cluster,
            identity,
            me,
        } = self;
        let client = locksmith_etcd::connect(&cluster.endpoints, Duration::from_secs(2))
            .await
            .map_err(|e| ServerError::Cluster(e.to_string()))?;
        let state = ClusterState {
            role: Arc::new(RwLock::new(Role::Follower)),
            forwarder: Forwarder::new(),
            me: me.clone(),
        };
        let app = Router::new()
            .route("/v1/cluster", get(cluster_info))
            .fallback(dispatch)
            .with_state(state.clone());
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let listener = crate::accept::HttpListener::new(listener);
        let mut http_stop = stop_rx.clone();
        let http_task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = http_stop.wait_for(|s| *s).await;
                })
                .await
        });
        let watcher = tokio::spawn(watch_leader(
            client.clone(),
            cluster.prefix.clone(),
            state.forwarder.clone(),
            stop_rx.clone(),
        ));
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });

        let ttl = cluster.election_ttl.as_secs().max(1) as i64;
        let outcome = loop {
            if *stop_rx.borrow() {
                break Ok(());
            }
            tracing::info!(me = %me, "campaigning for leadership");
            let won = tokio::select! {
                l = locksmith_etcd::campaign(&client, &cluster.prefix, &me, ttl) => l,
                _ = stop_rx.wait_for(|s| *s) => break Ok(()),
            };
            let mut leadership = match won {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "campaign failed (etcd unreachable?); retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                        _ = stop_rx.wait_for(|s| *s) => break Ok(()),
                    }
                }
            };
            tracing::info!(me = %me, revision = leadership.create_revision, "elected leader");
            let guard = Guard {
                key: leadership.key.clone(),
                create_revision: leadership.create_revision,
            };
            let endpoints = cluster.endpoints.clone();
            let prefix = cluster.prefix.clone();
            let opened = tokio::task::spawn_blocking(move || {
                EtcdStore::open(&endpoints, &prefix, Some(guard))
            })
            .await;
            let engine = match opened {
                Ok(Ok(store)) => recover(Box::new(store), &identity).await,
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(ServerError::Cluster(e.to_string())),
            };
            let engine = match engine {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "could not recover as leader; resigning");
                    let _ = leadership.resign().await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let tasks = EngineTasks::start(&engine, &config, &identity);
            let router = http::router(app_state(&engine, &config));
            *state.role.write().unwrap_or_else(|p| p.into_inner()) = Role::Leader(router);
            let stopping = tokio::select! {
                _ = leadership.lost.wait_for(|l| *l) => false,
                _ = engine_failed(&engine) => false,
                _ = stop_rx.wait_for(|s| *s) => true,
            };
            // Step down: stop serving as leader before anything else, so no request reaches an
            // engine whose writes etcd would refuse.
            *state.role.write().unwrap_or_else(|p| p.into_inner()) = Role::Follower;
            engine.shut_down_waiters();
            tasks.stop().await;
            let closer = engine.clone();
            let _ = tokio::task::spawn_blocking(move || closer.close()).await;
            if let Err(e) = leadership.resign().await {
                tracing::warn!(error = %e, "could not resign; the election lease will expire");
            }
            if stopping {
                break Ok(());
            }
            tracing::warn!(
                "stepped down (election lease lost or etcd refused a write); campaigning again"
            );
        };
        // Stop serving (for a lost leader too: a supervisor restarts it as a follower).
        watcher.abort();
        http_task.abort();
        let _ = http_task.await;
        outcome
    }
}

/// Keeps the forwarder pointed at the current leader.
async fn watch_leader(
    client: locksmith_etcd::etcd_client::Client,
    prefix: String,
    forwarder: Forwarder,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let leader = locksmith_etcd::current_leader(&client, &prefix)
            .await
            .ok()
            .flatten();
        forwarder.set_leader(leader);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn dispatch(State(state): State<ClusterState>, req: Request) -> Response {
    let role = state.role.read().unwrap_or_else(|p| p.into_inner()).clone();
    match role {
        Role::Leader(router) => {
            use tower::ServiceExt;
            match router.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        }
        Role::Follower => {
            if state.forwarder.leader().as_deref() == Some(state.me.as_str()) {
                // Our own stale record: we are not serving as leader (yet, or any more).
                state.forwarder.set_leader(None);
            }
            state.forwarder.forward(req).await
        }
    }
}

async fn cluster_info(State(state): State<ClusterState>) -> impl IntoResponse {
    let leading = matches!(
        *state.role.read().unwrap_or_else(|p| p.into_inner()),
        Role::Leader(_)
    );
    axum::Json(ClusterInfo {
        role: if leading { "leader" } else { "follower" },
        me: state.me.clone(),
        leader: if leading {
            Some(state.me.clone())
        } else {
            state.forwarder.leader()
        },
    })
}

/// Resolves when the engine's store has latched a failure (e.g. etcd refused a write because
/// this server is no longer the leader).
async fn engine_failed(engine: &crate::engine::Engine) {
    loop {
        if engine.health().store_error.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
