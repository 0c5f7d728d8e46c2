//! The config store in cluster mode: two real `locksmith server` processes on a real etcd.
//! A revision larger than an ordinary request body is written through the follower (which
//! forwards it to the leader), a stale token is refused there as on the leader, and after
//! `kill -9` of the leader the survivor serves the revision whole from etcd and its holder
//! writes on. A rollout started on the leader is resumed by the new leader after `kill -9`.

#![cfg(feature = "etcd")]

mod common;

use std::time::{Duration, Instant};

use common::{ServerProc, signal};
use locksmith_config::sha256_hex;
use locksmith_etcd::testing::EtcdCluster;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// Waits until one of `urls` serves as leader; returns its URL.
async fn leader(urls: &[String], within: Duration) -> String {
    let start = Instant::now();
    let http = reqwest::Client::new();
    while start.elapsed() < within {
        for url in urls {
            if let Ok(r) = http.get(format!("{url}/v1/cluster")).send().await {
                if let Ok(v) = r.json::<Value>().await {
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

/// One call to `url`, retrying `no_leader` (503) and refused connections for up to 20 s while
/// the cluster settles.
async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let http = reqwest::Client::new();
    for _ in 0..100 {
        let mut req = http.request(method.clone(), &url);
        if let Some(body) = &body {
            req = req.json(body);
        }
        if let Ok(resp) = req.send().await {
            let status = resp.status().as_u16();
            if status != 503 {
                return (status, resp.json().await.unwrap_or(Value::Null));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no answer from {url}");
}

/// `size` bytes of conf content.
fn content(size: usize) -> String {
    let mut text = String::new();
    let mut i = 0;
    while text.len() + 32 < size {
        text.push_str(&format!("key_{i:06} = {}\n", i * 7));
        i += 1;
    }
    text
}

#[test]
fn configs_are_written_through_a_follower_and_survive_kill_9_of_the_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdCluster::start(1);
    let procs = cluster(dir.path(), &etcd.endpoints().join(","));
    let urls: Vec<String> = procs.iter().map(|p| p.url().to_string()).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let first = leader(&urls, Duration::from_secs(20)).await;
        let leading = urls.iter().position(|u| *u == first).expect("leader");
        let follower = urls[1 - leading].clone();

        let (status, lease) = call(
            reqwest::Method::POST,
            format!("{follower}/v1/acquire"),
            Some(json!({"resource": "configs/fleet/big.conf",
                        "owner": {"node": "n1", "pid": 1, "start_time": 1, "boot_id": "b",
                                  "user": "u", "purpose": "config cluster test"},
                        "ttl_ms": 60_000})),
        )
        .await;
        assert_eq!(status, 200, "{lease}");
        let (id, token) = (
            lease["lease"].as_u64().expect("lease"),
            lease["token"].as_u64().expect("token"),
        );

        // 300 KiB: more than an ordinary request body (64 KiB), forwarded whole.
        let big = content(300 * 1024);
        let put = |token: u64, text: &str| {
            call(
                reqwest::Method::PUT,
                format!("{follower}/v1/configs/fleet%2Fbig.conf"),
                Some(json!({"lease": id, "token": token, "format": "conf", "content": text})),
            )
        };
        let (status, rev1) = put(token, &big).await;
        assert_eq!(status, 200, "{rev1}");
        assert_eq!(rev1["sha256"], sha256_hex(big.as_bytes()).as_str());
        let (status, refused) = put(token + 1, "a = 1\n").await;
        assert_eq!(status, 409, "{refused}");
        assert_eq!(refused["error"], "stale_token", "{refused}");

        signal(procs[leading].pid(), Signal::SIGKILL);
        let survivor = leader(std::slice::from_ref(&follower), Duration::from_secs(30)).await;
        let (status, got) = call(
            reqwest::Method::GET,
            format!("{survivor}/v1/configs/fleet%2Fbig.conf"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["rev"], 1);
        assert_eq!(
            got["content"].as_str().map(|c| sha256_hex(c.as_bytes())),
            Some(sha256_hex(big.as_bytes()))
        );

        // The lease survived the failover (it is in etcd): its holder writes on.
        let (status, rev2) = put(token, "a = 2\n").await;
        assert_eq!(status, 200, "{rev2}");
        assert_eq!(rev2["rev"], 2);
    });
    drop(procs);
}

/// Two servers on etcd, auth off.
fn cluster(dir: &std::path::Path, endpoints: &str) -> Vec<ServerProc> {
    (0..2)
        .map(|i| {
            ServerProc::start_with(
                &dir.join(format!("server{i}")),
                &[
                    "--etcd",
                    endpoints,
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

/// A rollout survives `kill -9` of the leader: the new leader restores it from etcd, keeps its
/// lease on `configs/NAME`, and finishes it as the endpoints report (simulated agents posting
/// what a real agent posts).
#[test]
fn a_new_leader_resumes_a_rollout_where_the_killed_leader_left_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = EtcdCluster::start(1);
    let procs = cluster(dir.path(), &etcd.endpoints().join(","));
    let urls: Vec<String> = procs.iter().map(|p| p.url().to_string()).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let first = leader(&urls, Duration::from_secs(20)).await;
        let leading = urls.iter().position(|u| *u == first).expect("leader");
        let follower = urls[1 - leading].clone();
        let post = |url: String, body: Value| call(reqwest::Method::POST, url, Some(body));
        let report = |url: String, node: &'static str, rev: u64| {
            post(
                format!("{url}/v1/agents/{node}/reports"),
                json!({"config": "app.conf", "rev": rev, "state": "applied",
                       "applied_rev": rev, "applied_token": 1}),
            )
        };
        for node in ["n0", "n1"] {
            let (status, v) = post(
                format!("{first}/v1/agents/{node}/register"),
                json!({"labels": {"role": "drone"}, "boot_id": "b", "version": "t",
                       "configs": ["app.conf"]}),
            )
            .await;
            assert_eq!(status, 200, "{v}");
        }
        let (_, lease) = post(
            format!("{first}/v1/acquire"),
            json!({"resource": "configs/app.conf",
                   "owner": {"node": "w", "pid": 1, "start_time": 1, "boot_id": "b",
                             "user": "u", "purpose": "rollout cluster test"},
                   "ttl_ms": 60_000}),
        )
        .await;
        let (id, token) = (lease["lease"].as_u64(), lease["token"].as_u64());
        for (text, draft) in [("a = 1\n", false), ("a = 2\n", true)] {
            let (status, v) = call(
                reqwest::Method::PUT,
                format!("{first}/v1/configs/app.conf"),
                Some(
                    json!({"lease": id, "token": token, "format": "conf", "content": text,
                            "draft": draft}),
                ),
            )
            .await;
            assert_eq!(status, 200, "{v}");
        }
        post(
            format!("{first}/v1/leases/{}/release", id.unwrap_or(0)),
            json!({}),
        )
        .await;
        for node in ["n0", "n1"] {
            report(first.clone(), node, 1).await;
        }
        let (status, started) = post(
            format!("{first}/v1/rollouts"),
            json!({"config": "app.conf", "rev": 2, "canary": "1", "deadline": "10m"}),
        )
        .await;
        assert_eq!(status, 201, "{started}");
        let rid = started["id"].as_str().expect("id").to_owned();
        let rolled = started["rolled_rev"].as_u64().expect("started at once");

        signal(procs[leading].pid(), Signal::SIGKILL);
        let survivor = leader(std::slice::from_ref(&follower), Duration::from_secs(30)).await;
        let (status, v) = call(
            reqwest::Method::GET,
            format!("{survivor}/v1/rollouts/{rid}"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["phase"], "running", "{v:#}");
        assert_eq!(v["state"]["applying"]["wave"], 0, "{v:#}");
        // The canary was told before the kill; only n0 has the override.
        let (_, n1) = call(
            reqwest::Method::GET,
            format!("{survivor}/v1/fleet/n1"),
            None,
        )
        .await;
        assert_eq!(n1["configs"][0]["desired_rev"], 1, "{n1}");
        report(survivor.clone(), "n0", rolled).await;
        let start = Instant::now();
        loop {
            let (_, n1) = call(
                reqwest::Method::GET,
                format!("{survivor}/v1/fleet/n1"),
                None,
            )
            .await;
            if n1["configs"][0]["desired_rev"] == rolled {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "wave 2 never sent: {n1}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        report(survivor.clone(), "n1", rolled).await;
        let start = Instant::now();
        loop {
            let (_, v) = call(
                reqwest::Method::GET,
                format!("{survivor}/v1/rollouts/{rid}"),
                None,
            )
            .await;
            if v["phase"] == "ended" && v["lease"].is_null() {
                assert_eq!(v["outcome"]["kind"], "succeeded", "{v:#}");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "never ended: {v:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (_, head) = call(
            reqwest::Method::GET,
            format!("{survivor}/v1/configs/app.conf"),
            None,
        )
        .await;
        assert_eq!(
            (&head["kind"], &head["from"]),
            (&json!("promoted"), &json!(rolled)),
            "{head}"
        );
    });
    drop(procs);
}
