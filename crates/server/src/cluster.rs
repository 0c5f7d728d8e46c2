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
//!
//! **A leader answers only while it knows it still leads.** Most answers (a fence check, a
//! renewal) are read from the in-memory table with no etcd write the guard could refuse, so a
//! leader paused past its election TTL — and deposed meanwhile — would otherwise answer from a
//! stale table when it resumes, before it notices: vouch for a token its successor revoked.
//! So `dispatch` asks the leadership's [`Tenure`] — is the election lease surely alive, on
//! this process's own clock (one atomic load and one clock read) — when a request arrives, and
//! again when its answer is ready. If not, the request is forwarded to a leader this server
//! knows of or refused with `no_leader` (503), and an answer computed meanwhile is withheld
//! (`no_leader`: its outcome is unknown, retry); a streamed body (the event stream) ends at
//! the first chunk past the tenure. See `locksmith_etcd::Tenure` for why the tenure ends before
//! etcd can expire the lease. Cluster mode serves HTTP only (no wire protocol), so this is the
//! one door answers leave by.
//!
//! **TLS.** etcd is reached over TLS when its endpoints are `https://` ([`ClusterConfig::etcd_tls`]:
//! the CA that signs the members' certificates, and this server's client certificate for a
//! cluster run with `--client-cert-auth`). The listener speaks TLS with `--tls-cert` as a
//! single server's does, and followers forward to the leader's `https://` URL trusting
//! [`ClusterConfig::peer_tls`]. Mutual TLS (`--tls-client-ca`) is refused in cluster mode: a
//! follower forwards its clients' requests over its own connection, so the leader would see
//! the follower's certificate, not the client's, and could not bind the client's node.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody as _};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt as _;
use locksmith_client::TlsOptions;
use locksmith_etcd::{EtcdOptions, EtcdStore, Guard, Tenure};

pub use locksmith_etcd::EtcdTls;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::app::{App, Settings};
use crate::proxy::{Forwarder, no_leader};
use crate::tls::Tls;
use crate::{
    EngineTasks, NodeIdentity, ServerConfig, ServerError, Timeouts, bind_listener, http, load_tls,
    log_tls, recover, router, start_auth,
};

/// Where the cluster lives.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// etcd client URLs.
    pub endpoints: Vec<String>,
    /// Key prefix for everything Locksmith stores (default `/locksmith/`).
    pub prefix: String,
    /// The URL other servers forward to when this one leads (default `http://<listen addr>`,
    /// `https://` with TLS).
    pub advertise: Option<String>,
    /// Election lease TTL: how long a dead leader keeps the cluster leaderless.
    pub election_ttl: Duration,
    /// TLS to etcd's `https://` endpoints (`--etcd-ca-file`, `--etcd-cert`, `--etcd-key`).
    pub etcd_tls: Option<EtcdTls>,
    /// How a follower trusts the leader's `https://` URL when it forwards (the CA of the
    /// servers' certificates: the global `--ca-file`).
    pub peer_tls: TlsOptions,
}

impl ClusterConfig {
    /// A cluster on `endpoints` with the default prefix and a 5 s election TTL.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            prefix: "/locksmith/".into(),
            advertise: None,
            election_ttl: Duration::from_secs(5),
            etcd_tls: None,
            peer_tls: TlsOptions::default(),
        }
    }
}

/// What a server is doing right now.
#[derive(Debug, Clone)]
enum Role {
    /// Forwarding to the leader.
    Follower,
    /// Serving with its own engine — while `tenure` holds.
    Leader { router: Router, tenure: Tenure },
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
    settings: Arc<Settings>,
    me: String,
    tls: Option<Tls>,
    forwarder: Forwarder,
}

impl ClusterServer {
    /// Binds the listener; the election starts in [`ClusterServer::serve`].
    pub async fn bind(config: ServerConfig, cluster: ClusterConfig) -> Result<Self, ServerError> {
        let settings = Arc::new(Settings::of(&config)?);
        if config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()) {
            return Err(ServerError::Cluster(
                "--tls-client-ca (mutual TLS) is not available in cluster mode: followers \
                 forward requests to the leader over their own connections, so the leader \
                 could not tell which node's certificate a request came with — drop \
                 --tls-client-ca, or run a single server"
                    .to_owned(),
            ));
        }
        let tls = load_tls(&config)?;
        let forwarder = Forwarder::with_tls(&cluster.peer_tls)
            .map_err(|e| ServerError::Cluster(format!("--ca-file: {e}")))?
            .with_max_body(crate::domains::configs::routes::body_limit(
                config.max_config_bytes,
            ));
        let identity = NodeIdentity::of(&config)?;
        let listener = bind_listener(config.listen).await?;
        let addr = listener.local_addr().unwrap_or(config.listen);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let me = cluster
            .advertise
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{addr}"));
        Ok(Self {
            listener,
            config,
            cluster,
            identity,
            settings,
            me,
            tls,
            forwarder,
        })
    }

    /// The server's base URL: `http://` or `https://` and the address bound.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr())
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
            settings,
            me,
            tls,
            forwarder,
        } = self;
        log_tls(&config);
        let client = locksmith_etcd::connect(
            &cluster.endpoints,
            Duration::from_secs(2),
            cluster.etcd_tls.as_ref(),
        )
        .await
        .map_err(|e| ServerError::Cluster(e.to_string()))?;
        let state = ClusterState {
            role: Arc::new(RwLock::new(Role::Follower)),
            forwarder,
            me: me.clone(),
        };
        let app = Router::new()
            .route("/v1/cluster", get(cluster_info))
            .fallback(dispatch)
            .with_state(state.clone());
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let http_task = tokio::spawn(http::serve(
            listener,
            app,
            Timeouts::of(&config),
            config.max_connections,
            tls,
            stop_rx.clone(),
        ));
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
            let options = EtcdOptions {
                tls: cluster.etcd_tls.clone(),
                ..EtcdOptions::default()
            };
            let opened = tokio::task::spawn_blocking(move || {
                EtcdStore::open_with(&endpoints, &prefix, Some(guard), options)
            })
            .await;
            let engine = match opened {
                Ok(Ok(store)) => recover(Box::new(store), &identity, config.engine_clock()).await,
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(ServerError::Cluster(e.to_string())),
            };
            // The tokens are etcd records, restored with the rest; the first leader to find
            // none makes the admin token (see `domains::tokens::bootstrap`).
            let engine = match engine {
                Ok(engine) => match start_auth(&engine, &config).await {
                    Ok(()) => Ok(engine),
                    Err(e) => {
                        let closer = engine.clone();
                        let _ = tokio::task::spawn_blocking(move || closer.close()).await;
                        Err(e)
                    }
                },
                Err(e) => Err(e),
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
            let router = router(App::new(engine.clone(), Arc::clone(&settings), &identity));
            let tenure = leadership.tenure.clone();
            *state.role.write().unwrap_or_else(|p| p.into_inner()) =
                Role::Leader { router, tenure };
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

/// Every request: served by this server's engine while it leads and its tenure holds — on
/// arrival and when the answer is ready — else forwarded to the leader (see the module docs).
async fn dispatch(State(state): State<ClusterState>, req: Request) -> Response {
    let role = state.role.read().unwrap_or_else(|p| p.into_inner()).clone();
    match role {
        Role::Leader { router, tenure } if tenure.holds() => {
            use tower::ServiceExt;
            let response = match router.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            if !tenure.holds() {
                return no_leader(
                    "this server's leadership lapsed while it worked on the request — its \
                     election lease was not confirmed in time: paused, or etcd unreachable — so \
                     its answer is withheld and whether the request took effect is unknown",
                );
            }
            within_tenure(response, tenure)
        }
        Role::Leader { .. } => match state.forwarder.leader() {
            Some(leader) if leader != state.me => state.forwarder.forward(req).await,
            _ => no_leader(
                "this server's leadership lapsed — its election lease was not confirmed in \
                 time: paused, or etcd unreachable — and the next leader is not known yet",
            ),
        },
        Role::Follower => {
            if state.forwarder.leader().as_deref() == Some(state.me.as_str()) {
                // Our own stale record: we are not serving as leader (yet, or any more).
                state.forwarder.set_leader(None);
            }
            state.forwarder.forward(req).await
        }
    }
}

/// `response` as it is if its body is already whole; a streamed body (the event stream) is cut
/// at the first chunk that would leave after the tenure.
fn within_tenure(response: Response, tenure: Tenure) -> Response {
    if response.body().size_hint().exact().is_some() {
        return response;
    }
    response.map(|body| {
        Body::from_stream(
            body.into_data_stream()
                .take_while(move |_| std::future::ready(tenure.holds())),
        )
    })
}

async fn cluster_info(State(state): State<ClusterState>) -> impl IntoResponse {
    let leading = matches!(
        &*state.role.read().unwrap_or_else(|p| p.into_inner()),
        Role::Leader { tenure, .. } if tenure.holds()
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::http::StatusCode;
    use futures_util::stream;
    use locksmith_etcd::{TenureRule, boot_clock};

    use super::*;

    fn leading(router: Router, tenure: &Tenure) -> ClusterState {
        ClusterState {
            role: Arc::new(RwLock::new(Role::Leader {
                router,
                tenure: tenure.clone(),
            })),
            forwarder: Forwarder::new(),
            me: "http://127.0.0.1:1".into(),
        }
    }

    fn fresh_tenure() -> Tenure {
        Tenure::new(TenureRule::new(Duration::from_secs(60)), boot_clock())
    }

    async fn call(state: &ClusterState) -> (StatusCode, String) {
        let req = Request::builder()
            .uri("/v1/fence/check")
            .body(Body::empty())
            .expect("request");
        let response = dispatch(State(state.clone()), req).await;
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_leader_whose_tenure_holds_answers_from_its_table() {
        let tenure = fresh_tenure();
        let router = Router::new().fallback(|| async { "vouched" });
        assert_eq!(
            call(&leading(router, &tenure)).await,
            (StatusCode::OK, "vouched".into())
        );
    }

    #[tokio::test]
    async fn a_leader_whose_tenure_lapsed_does_not_consult_its_table() {
        let tenure = fresh_tenure();
        let consulted = Arc::new(AtomicBool::new(false));
        let seen = consulted.clone();
        let router = Router::new().fallback(move || async move {
            seen.store(true, Ordering::SeqCst);
            "stale"
        });
        tenure.end();
        let (status, body) = call(&leading(router, &tenure)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("\"error\":\"no_leader\""), "{body}");
        assert!(!consulted.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn an_answer_computed_by_a_leader_whose_tenure_lapsed_meanwhile_is_withheld() {
        // The pause comes while the table is consulted: the answer is ready only after.
        let tenure = fresh_tenure();
        let pausing = tenure.clone();
        let router = Router::new().fallback(move || async move {
            pausing.end();
            "stale"
        });
        let (status, body) = call(&leading(router, &tenure)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("\"error\":\"no_leader\""), "{body}");
        assert!(body.contains("withheld"), "{body}");
    }

    #[tokio::test]
    async fn a_stream_from_a_leader_ends_at_the_first_chunk_past_its_tenure() {
        let tenure = fresh_tenure();
        let pausing = tenure.clone();
        let router = Router::new().fallback(move || async move {
            let chunks = stream::iter(["first;", "after the lapse;"]).then(move |chunk| {
                let pausing = pausing.clone();
                async move {
                    if chunk != "first;" {
                        pausing.end();
                    }
                    Ok::<_, Infallible>(chunk)
                }
            });
            Body::from_stream(chunks)
        });
        assert_eq!(
            call(&leading(router, &tenure)).await,
            (StatusCode::OK, "first;".into())
        );
    }
}
