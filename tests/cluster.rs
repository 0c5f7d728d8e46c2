//! Cluster mode end to end: a real 3-member etcd cluster on loopback ports and several real
//! `locksmith server --etcd …` processes. Clients are spread over every server; mutual
//! exclusion is checked with a fenced counter while an etcd member and the leading Locksmith
//! server are killed with SIGKILL; a killed server's clients' leases are reclaimed by the
//! others; and the whole etcd cluster is restarted under a live lease.
#![cfg(feature = "etcd")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{ServerProc, signal};
use locksmith_client::Client;
use locksmith_client::api::AcquireRequest;
use locksmith_core::Owner;
use locksmith_etcd::testing::EtcdCluster;
use nix::sys::signal::Signal;

fn owner(pid: u32) -> Owner {
    Owner {
        node: "cluster-client".into(),
        pid,
        start_time: 1,
        boot_id: "cluster-boot".into(),
        user: "tester".into(),
        purpose: "cluster test".into(),
        pid_ns: None,
    }
}

fn request(resource: &str, pid: u32, ttl_ms: u64, wait_ms: u64) -> AcquireRequest {
    AcquireRequest {
        resource: resource.into(),
        owner: owner(pid),
        ttl_ms: Some(ttl_ms),
        wait_ms: Some(wait_ms),
        slots: None,
        lock_delay_ms: None,
    }
}

/// `n` Locksmith servers on the etcd cluster, each in its own temp dir (unused in etcd mode
/// but where its log goes), with a short election TTL so failover is quick.
///
/// With `--auth off`: these tests are about failover and mutual exclusion, driven by Rust
/// clients spread over every server; the admin token would be in the data directory of
/// whichever server led first, which is noise here. That tokens are shared through etcd and
/// survive failover is the server's own test.
fn servers(etcd: &EtcdCluster, n: usize, dir: &std::path::Path) -> Vec<ServerProc> {
    let endpoints = etcd.endpoints().join(",");
    (0..n)
        .map(|i| {
            ServerProc::start_with(
                &dir.join(format!("server{i}")),
                &[
                    "--etcd",
                    &endpoints,
                    "--election-ttl",
                    "2s",
                    "--probe-interval",
                    "0s",
                    "--auth",
                    "off",
                ],
            )
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Waits until one of `urls` serves as leader (elected and recovered); returns its URL.
async fn leader(urls: &[String], within: Duration) -> String {
    let start = Instant::now();
    let http = reqwest::Client::new();
    while start.elapsed() < within {
        for url in urls {
            if let Ok(r) = http.get(format!("{url}/v1/cluster")).send().await {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    if v["role"] == "leader" {
                        return url.clone();
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader serving within {within:?}");
}

/// Acquires through the first of `urls` that answers, retrying for up to 20 s while the
/// cluster settles (followers learn the leader within a quarter second of its election).
async fn acquire_anywhere(
    urls: &[String],
    req: &AcquireRequest,
) -> Option<locksmith_client::api::LeaseView> {
    for _ in 0..100 {
        for url in urls {
            if let Ok(l) = Client::new(url).expect("client").acquire(req).await {
                return Some(l);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

#[derive(Default)]
struct Fence {
    newest: AtomicU64,
    inside: AtomicU64,
    violations: std::sync::Mutex<Vec<String>>,
    cycles: AtomicU64,
    counter: AtomicU64,
}

impl Fence {
    fn note(&self, violation: String) {
        self.violations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(violation);
    }
}

#[test]
fn mutual_exclusion_holds_across_servers_through_kill_9_of_an_etcd_member_and_the_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdCluster::start(3);
    let mut procs = servers(&etcd, 3, dir.path());
    let urls: Vec<String> = procs.iter().map(|p| p.url().to_string()).collect();
    let rt = runtime();
    let lead = rt.block_on(leader(&urls, Duration::from_secs(20)));

    // An acknowledged grant, heartbeated through whichever server answers: it must survive.
    let held = rt
        .block_on(acquire_anywhere(&urls, &request("held", 7, 30_000, 0)))
        .expect("held grant");

    let fence = Arc::new(Fence::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..9u32 {
        let urls = urls.clone();
        let fence = fence.clone();
        let stop = stop.clone();
        tasks.push(rt.spawn(async move {
            let mut at = i as usize % urls.len();
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let c = Client::new(&urls[at]).expect("client");
                let lease = match c.acquire(&request("counter", 100 + i, 5_000, 10_000)).await {
                    Ok(l) => l,
                    Err(_) => {
                        errors += 1;
                        at = (at + 1) % urls.len(); // that server may be dead: try the next
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // A release lost in a failover leaves this client holding its lease; asking
                // again returns that same lease (recursive re-acquire), not a new grant.
                let newest = fence.newest.fetch_max(lease.token.0, Ordering::SeqCst);
                if newest >= lease.token.0 && !lease.reacquired {
                    fence.note(format!(
                        "token {} after {newest} via {}",
                        lease.token, urls[at]
                    ));
                }
                if fence.inside.fetch_add(1, Ordering::SeqCst) != 0 {
                    fence.note(format!("overlap at token {} via {}", lease.token, urls[at]));
                }
                let v = fence.counter.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                fence.counter.store(v + 1, Ordering::SeqCst);
                fence.inside.fetch_sub(1, Ordering::SeqCst);
                fence.cycles.fetch_add(1, Ordering::SeqCst);
                // A release lost to a failover is fine: the lease then expires (5 s).
                let _ = c.release(lease.lease, Some(lease.token)).await;
            }
            errors
        }));
    }
    let heartbeat = {
        let urls = urls.clone();
        let stop = stop.clone();
        rt.spawn(async move {
            let mut renewed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for url in &urls {
                    let c = Client::new(url).expect("client");
                    if c.renew(held.lease, Some(held.token)).await.is_ok() {
                        renewed += 1;
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            renewed
        })
    };

    std::thread::sleep(Duration::from_secs(2));
    let before_kills = fence.cycles.load(Ordering::SeqCst);
    etcd.kill_member(2);
    std::thread::sleep(Duration::from_millis(500));
    let leader_index = urls
        .iter()
        .position(|u| *u == lead)
        .expect("leader is one of ours");
    signal(procs[leader_index].pid(), Signal::SIGKILL);
    let survivors: Vec<String> = urls
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader_index)
        .map(|(_, u)| u.clone())
        .collect();
    let new_leader = rt.block_on(leader(&survivors, Duration::from_secs(30)));
    assert_ne!(new_leader, lead);
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        rt.block_on(t).expect("client task");
    }
    rt.block_on(heartbeat).expect("heartbeat");
    let after_kills = fence.cycles.load(Ordering::SeqCst);

    let violations = fence.violations.lock().expect("violations").clone();
    assert!(
        violations.is_empty(),
        "mutual exclusion violated: {violations:?}"
    );
    assert_eq!(
        fence.counter.load(Ordering::SeqCst),
        after_kills,
        "an increment was lost: two holders overlapped"
    );
    assert!(before_kills > 0, "no progress before the kills");
    assert!(after_kills > before_kills, "no progress after failover");
    // The acknowledged grant survived the leader's death, with its token.
    let view = rt
        .block_on(Client::new(&new_leader).expect("client").lock("held"))
        .expect("lock");
    assert_eq!(
        view.lock.holders.len(),
        1,
        "acknowledged grant lost in failover"
    );
    assert_eq!(view.lock.holders[0].token, held.token);
    drop(procs.remove(leader_index));
}

#[test]
fn a_killed_servers_clients_leases_expire_and_are_reclaimed_by_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdCluster::start(3);
    let procs = servers(&etcd, 2, dir.path());
    let urls: Vec<String> = procs.iter().map(|p| p.url().to_string()).collect();
    let rt = runtime();
    rt.block_on(leader(&urls, Duration::from_secs(20)));
    // Both servers take a grant each, then both die with their clients: whichever leads next
    // must reclaim the leases once their TTL passes with no heartbeat.
    let a = rt
        .block_on(acquire_anywhere(&urls[..1], &request("via-a", 1, 2_000, 0)))
        .expect("grant via a");
    let b = rt
        .block_on(acquire_anywhere(&urls[1..], &request("via-b", 2, 2_000, 0)))
        .expect("grant via b");
    assert!(b.token > a.token);
    signal(procs[0].pid(), Signal::SIGKILL);
    let start = Instant::now();
    let c = Client::new(&urls[1]).expect("client");
    let mut free = false;
    while start.elapsed() < Duration::from_secs(30) {
        let both = rt.block_on(async {
            let x = c.lock("via-a").await.ok()?;
            let y = c.lock("via-b").await.ok()?;
            Some(x.lock.holders.is_empty() && y.lock.holders.is_empty())
        });
        if both == Some(true) {
            free = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        free,
        "leases of the dead server's clients were not reclaimed"
    );
    let next = rt
        .block_on(c.acquire(&request("via-a", 3, 2_000, 0)))
        .expect("reacquire after reclaim");
    assert!(next.token > b.token, "fence went backwards across leaders");
}

#[test]
fn restarting_the_whole_etcd_cluster_keeps_leases_and_the_fence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdCluster::start(3);
    let procs = servers(&etcd, 2, dir.path());
    let urls: Vec<String> = procs.iter().map(|p| p.url().to_string()).collect();
    let rt = runtime();
    rt.block_on(leader(&urls, Duration::from_secs(20)));
    let held = rt
        .block_on(acquire_anywhere(&urls, &request("kept", 1, 60_000, 0)))
        .expect("grant");
    etcd.stop_all();
    std::thread::sleep(Duration::from_secs(1));
    etcd.restart_all();
    // Serving again once a leader is re-elected; the lease is there with its token.
    let start = Instant::now();
    let mut renewed = false;
    while start.elapsed() < Duration::from_secs(40) {
        for url in &urls {
            let c = Client::new(url).expect("client");
            if rt.block_on(c.renew(held.lease, Some(held.token))).is_ok() {
                renewed = true;
            }
        }
        if renewed {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(renewed, "the lease did not survive a full etcd restart");
    let next = rt
        .block_on(acquire_anywhere(&urls, &request("other", 2, 5_000, 0)))
        .expect("grant after restart");
    assert!(
        next.token > held.token,
        "fence went backwards after the restart"
    );
}

/// Waits until the server at `url` reports `leader` as the one it forwards to, so that a
/// request sent through it next reaches that leader (not a paused predecessor).
async fn follows(url: &str, leader: &str, within: Duration) {
    let start = Instant::now();
    let http = reqwest::Client::new();
    while start.elapsed() < within {
        if let Ok(r) = http.get(format!("{url}/v1/cluster")).send().await {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                if v["leader"] == leader {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} did not learn of the leader {leader} within {within:?}");
}

/// An HTTP/1.1 POST written whole to a server's socket at once, its answer read later: what
/// a server paused with SIGSTOP finds waiting when it resumes (the kernel completes the
/// connection and buffers the request meanwhile).
struct RawPost {
    stream: std::net::TcpStream,
    what: String,
}

impl RawPost {
    fn send(base: &str, path: &str, body: &impl serde::Serialize) -> RawPost {
        use std::io::Write as _;
        let addr = base.strip_prefix("http://").expect("http URL");
        let body = serde_json::to_string(body).expect("body");
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).expect("write request");
        RawPost {
            stream,
            what: format!("POST {path} {body} to {base}"),
        }
    }

    /// The status code and the whole answer as text.
    fn answer(mut self) -> (u16, String) {
        use std::io::Read as _;
        let mut raw = Vec::new();
        let _ = self.stream.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP answer to {}: {text:?}", self.what));
        (status, text)
    }

    /// Asserts the answer is a refusal: `no_leader` from the paused server itself, or the
    /// current leader's verdict forwarded (409 `stale_token`, 410 `broken`) — never a 200.
    fn assert_refused(self) {
        let what = self.what.clone();
        let (status, text) = self.answer();
        let refused = match status {
            503 => text.contains("no_leader"),
            409 => text.contains("stale_token"),
            410 => text.contains("broken") || text.contains("lease_expired"),
            _ => false,
        };
        assert!(
            refused,
            "a deposed leader answered from its stale table: {what} -> {status}\n{text}"
        );
    }
}

/// Retries `call` while the cluster settles (no leader yet, or a server unreachable).
async fn settled<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, locksmith_client::ClientError>>,
{
    let start = Instant::now();
    loop {
        match call().await {
            Ok(v) => return v,
            Err(e)
                if start.elapsed() < Duration::from_secs(20)
                    && matches!(
                        e.code(),
                        None | Some(locksmith_client::api::ErrorCode::NoLeader)
                    ) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("request failed: {e}"),
        }
    }
}

/// Issue 15 item 1: a leader paused (SIGSTOP) past its election TTL, deposed meanwhile, must
/// not answer from its stale table when it resumes — before it has even noticed — neither a
/// fence check vouching for a token that the new leader revoked nor a renewal of the broken
/// lease. The requests are in its socket buffers before it resumes, and more follow at once.
#[test]
fn a_paused_leader_after_failover_neither_vouches_for_a_revoked_token_nor_renews_a_broken_lease() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdCluster::start(3);
    let procs = servers(&etcd, 3, dir.path());
    let urls: Vec<String> = procs.iter().map(|p| p.url().to_string()).collect();
    let rt = runtime();
    let mut lead = rt.block_on(leader(&urls, Duration::from_secs(20)));
    for round in 0..3u32 {
        let resource = format!("paused-leader-{round}");
        let held = rt.block_on(settled(|| {
            let c = Client::new(&lead).expect("client");
            let req = request(&resource, 10 + round, 60_000, 0);
            async move { c.acquire(&req).await }
        }));
        let paused = &procs[urls.iter().position(|u| *u == lead).expect("ours")];
        signal(paused.pid(), Signal::SIGSTOP);

        let others: Vec<String> = urls.iter().filter(|u| **u != lead).cloned().collect();
        let next = rt.block_on(leader(&others, Duration::from_secs(30)));
        let follower = others.iter().find(|u| **u != next).expect("a follower");
        rt.block_on(follows(follower, &next, Duration::from_secs(10)));
        let via = Client::new(follower).expect("client");
        let broken = rt.block_on(settled(|| {
            let via = via.clone();
            let req = locksmith_client::api::BreakRequest {
                resource: resource.clone(),
                lease: None,
                operator: "oncall".into(),
                reason: "holder paused".into(),
                freeze_ms: Some(0),
            };
            async move { via.break_lock(&req).await }
        }));
        assert_eq!(broken.revoked.len(), 1, "{broken:?}");
        let successor = rt.block_on(settled(|| {
            let via = via.clone();
            let req = request(&resource, 50 + round, 60_000, 0);
            async move { via.acquire(&req).await }
        }));
        assert!(successor.token > held.token, "{successor:?} after {held:?}");

        let check = locksmith_client::api::FenceCheckRequest {
            resource: resource.clone(),
            token: held.token,
        };
        let renew_path = format!("/v1/leases/{}/renew", held.lease);
        let renew = locksmith_client::api::LeaseOpRequest {
            token: Some(held.token),
        };
        let waiting = [
            RawPost::send(&lead, "/v1/fence/check", &check),
            RawPost::send(&lead, &renew_path, &renew),
        ];
        signal(paused.pid(), Signal::SIGCONT);
        let at_once = [
            RawPost::send(&lead, "/v1/fence/check", &check),
            RawPost::send(&lead, &renew_path, &renew),
        ];
        for post in waiting.into_iter().chain(at_once) {
            post.assert_refused();
        }
        lead = next;
    }
}

/// One authenticated call through the first of `urls` that is not without a leader; returns
/// its status and body. Retries `no_leader` (503) and unreachable servers for up to 20 s.
async fn call_anywhere(
    urls: &[String],
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let http = reqwest::Client::new();
    for _ in 0..100 {
        for url in urls {
            let mut req = http
                .request(method.clone(), format!("{url}{path}"))
                .bearer_auth(token);
            if let Some(body) = &body {
                req = req.json(body);
            }
            let Ok(resp) = req.send().await else { continue };
            let status = resp.status().as_u16();
            if status == 503 {
                continue;
            }
            let json = resp.json().await.unwrap_or(serde_json::Value::Null);
            return (status, json);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no server answered {path}");
}

/// Issue 17: tokens are etcd records, so they survive the leader's death. The first leader
/// makes the admin token (in its own data directory, once); a token made through a follower
/// (which forwards the Authorization header) and a revocation are both in force under the next
/// leader, which makes no second admin token.
#[test]
fn tokens_survive_a_failover_and_the_admin_token_is_made_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdCluster::start(3);
    let endpoints = etcd.endpoints().join(",");
    let procs: Vec<ServerProc> = (0..3)
        .map(|i| {
            ServerProc::start_with(
                &dir.path().join(format!("server{i}")),
                &[
                    "--etcd",
                    &endpoints,
                    "--election-ttl",
                    "2s",
                    "--probe-interval",
                    "0s",
                    "--auth",
                    "on",
                ],
            )
        })
        .collect();
    let urls: Vec<String> = procs.iter().map(|p| p.url().to_string()).collect();
    let rt = runtime();
    let first = rt.block_on(leader(&urls, Duration::from_secs(20)));
    let leading = urls.iter().position(|u| *u == first).expect("a leader");
    let admin_files: Vec<usize> = (0..3)
        .filter(|i| dir.path().join(format!("server{i}/admin.token")).exists())
        .collect();
    assert_eq!(
        admin_files,
        [leading],
        "the first leader alone writes admin.token"
    );
    let admin = std::fs::read_to_string(dir.path().join(format!("server{leading}/admin.token")))
        .expect("admin.token")
        .trim()
        .to_owned();

    // Through a follower: it forwards the bearer token to the leader.
    let followers: Vec<String> = urls.iter().filter(|u| **u != first).cloned().collect();
    let (status, made) = rt.block_on(call_anywhere(
        &followers,
        reqwest::Method::POST,
        "/v1/tokens",
        &admin,
        Some(serde_json::json!({"name": "ci", "role": "client"})),
    ));
    assert_eq!(status, 200, "{made}");
    let ci = made["token"].as_str().expect("secret").to_owned();
    let (status, gone) = rt.block_on(call_anywhere(
        &followers,
        reqwest::Method::POST,
        "/v1/tokens",
        &admin,
        Some(serde_json::json!({"name": "gone", "role": "reader"})),
    ));
    assert_eq!(status, 200, "{gone}");
    let gone_id = gone["id"].as_str().expect("id").to_owned();
    let gone_secret = gone["token"].as_str().expect("secret").to_owned();
    let (status, _) = rt.block_on(call_anywhere(
        &followers,
        reqwest::Method::POST,
        &format!("/v1/tokens/{gone_id}/revoke"),
        &admin,
        None,
    ));
    assert_eq!(status, 200);
    let (status, refused) = rt.block_on(call_anywhere(
        &followers,
        reqwest::Method::GET,
        "/v1/locks",
        "lsm_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        None,
    ));
    assert_eq!(
        (status, refused["error"].as_str()),
        (401, Some("unauthenticated"))
    );

    signal(procs[leading].pid(), Signal::SIGKILL);
    let next = rt.block_on(leader(&followers, Duration::from_secs(30)));
    assert_ne!(next, first);
    let body = serde_json::json!({
        "resource": "after/failover",
        "owner": {"node": "cluster-client", "pid": 7, "start_time": 1, "boot_id": "b",
                  "user": "tester", "purpose": "auth failover"},
    });
    let (status, granted) = rt.block_on(call_anywhere(
        &followers,
        reqwest::Method::POST,
        "/v1/acquire",
        &ci,
        Some(body),
    ));
    assert_eq!(
        status, 200,
        "the client token works under the next leader: {granted}"
    );
    let (status, _) = rt.block_on(call_anywhere(
        &followers,
        reqwest::Method::GET,
        "/v1/tokens",
        &admin,
        None,
    ));
    assert_eq!(status, 200, "the admin token works under the next leader");
    let (status, _) = rt.block_on(call_anywhere(
        &followers,
        reqwest::Method::GET,
        "/v1/locks",
        &gone_secret,
        None,
    ));
    assert_eq!(
        status, 401,
        "a revoked token stays revoked under the next leader"
    );
    let admin_files: Vec<usize> = (0..3)
        .filter(|i| dir.path().join(format!("server{i}/admin.token")).exists())
        .collect();
    assert_eq!(
        admin_files,
        [leading],
        "the next leader made no admin token"
    );
}
