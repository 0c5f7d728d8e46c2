//! A real server on 127.0.0.1:0 with the real embedded store, for the HTTP tests.
#![allow(dead_code)]

use std::time::Duration;

use locksmith_client::Client;
use locksmith_client::api::AcquireRequest;
use locksmith_core::Owner;
use locksmith_server::{Server, ServerConfig};

pub struct TestServer {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_tweaked(|_| {}).await
    }

    /// A server in its own temp dir, after letting `tweak` adjust its config.
    pub async fn start_tweaked(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Self::start_with(dir.path(), tweak).await;
        s._dir = Some(dir);
        s
    }

    pub async fn start_in(path: &std::path::Path) -> Self {
        Self::start_with(path, |_| {}).await
    }

    /// Starts a server in `path` after letting `tweak` adjust its config.
    pub async fn start_with(path: &std::path::Path, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let mut config = ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            data_dir: path.to_path_buf(),
            gc_interval: Duration::from_millis(200),
            ..ServerConfig::default()
        };
        tweak(&mut config);
        let server = Server::bind(config).await.expect("bind");
        let url = format!("http://{}", server.local_addr());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve(async move {
                    let _ = rx.await;
                })
                .await
                .expect("serve");
        });
        Self {
            url,
            stop: Some(tx),
            task: Some(task),
            _dir: None,
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url).expect("client")
    }
}

pub fn owner(pid: u32) -> Owner {
    Owner {
        node: "node-7".into(),
        pid,
        start_time: 1000 + u64::from(pid),
        boot_id: "boot-a".into(),
        user: "orchestrator".into(),
        purpose: "test".into(),
    }
}

pub fn req(resource: &str, pid: u32) -> AcquireRequest {
    AcquireRequest {
        resource: resource.into(),
        owner: owner(pid),
        ttl_ms: Some(5_000),
        wait_ms: None,
        slots: None,
        lock_delay_ms: None,
    }
}
