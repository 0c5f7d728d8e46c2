//! kill -9 of the real `locksmith server` during a stream of config writes: after a restart on
//! the same data directory, every acknowledged revision is there, with the content it was
//! acknowledged with (by SHA-256), and every stored revision — acknowledged or not — is whole:
//! its content's SHA-256 and size are those its revision names. None is partial.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ServerProc, signal};
use locksmith_config::sha256_hex;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// Configs written at once, one writer (and one lease) each.
const WRITERS: usize = 4;

/// An acknowledged revision: (config, rev, sha256 of what was sent).
type Acked = Vec<(String, u64, String)>;

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let mut req = http.request(method, &url);
    if let Some(body) = body {
        req = req.json(&body);
    }
    // The server may die under any request: no answer is no acknowledgement.
    let resp = req.send().await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.json().await.ok()?;
    Some((status, body))
}

/// Content of `size` bytes that no other write sends.
fn content(writer: usize, n: u64, size: usize) -> String {
    let mut text = format!("# writer {writer} write {n}\n");
    let mut i = 0u64;
    while text.len() < size {
        text.push_str(&format!(
            "key_{i} = {}\n",
            n.wrapping_mul(2654435761).wrapping_add(i)
        ));
        i += 1;
    }
    text
}

/// Writes revisions of `configs/crash-W.conf` until `stop`; records each acknowledged one.
async fn writer(
    http: reqwest::Client,
    url: String,
    w: usize,
    acked: Arc<Mutex<Acked>>,
    target: usize,
) {
    let name = format!("crash-{w}.conf");
    let Some((200, lease)) = call(
        &http,
        reqwest::Method::POST,
        format!("{url}/v1/acquire"),
        Some(json!({"resource": format!("configs/{name}"),
                    "owner": {"node": "crash-node", "pid": 60_000 + w, "start_time": 7,
                              "boot_id": "crash-boot", "user": "tester", "purpose": "config crash"},
                    "ttl_ms": 120_000})),
    )
    .await
    else {
        panic!("acquire configs/{name}");
    };
    let (lease, token) = (lease["lease"].clone(), lease["token"].clone());
    for n in 0.. {
        let body = content(w, n, 2_000 + (n as usize % 7) * 1_500);
        let sha = sha256_hex(body.as_bytes());
        let answer = call(
            &http,
            reqwest::Method::PUT,
            format!("{url}/v1/configs/{name}"),
            Some(json!({"lease": lease, "token": token, "format": "conf", "content": body})),
        )
        .await;
        match answer {
            Some((200, meta)) => {
                assert_eq!(meta["sha256"], sha.as_str(), "{meta}");
                let rev = meta["rev"].as_u64().expect("rev");
                let mut acked = acked.lock().expect("acked");
                acked.push((name.clone(), rev, sha));
                if acked.len() >= target {
                    return;
                }
            }
            Some((status, body)) => panic!("write refused before the crash: {status} {body}"),
            None => return,
        }
    }
}

#[test]
fn kill_9_during_config_writes_keeps_every_acknowledged_revision_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let acked = Arc::new(Mutex::new(Acked::new()));
    let server = ServerProc::start(&data);
    let (http, url) = (server.http(), server.url().to_owned());
    // The writers run on while the server is killed: the kill lands mid-stream.
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| rt.spawn(writer(http.clone(), url.clone(), w, acked.clone(), 300)))
        .collect();
    while acked.lock().expect("acked").len() < 300 {
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(server.pid(), Signal::SIGKILL);
    drop(server);
    let acked: Acked = acked.lock().expect("acked").clone();
    for task in tasks {
        task.abort();
    }
    rt.shutdown_timeout(Duration::from_secs(1));

    let server = ServerProc::start(&data);
    let (http, url) = (server.http(), server.url().to_owned());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut stored = 0;
        for w in 0..WRITERS {
            let name = format!("crash-{w}.conf");
            let (status, history) = call(
                &http,
                reqwest::Method::GET,
                format!("{url}/v1/configs/{name}/revisions"),
                None,
            )
            .await
            .expect("history");
            assert_eq!(status, 200, "{history}");
            let revisions = history["revisions"].as_array().expect("revisions");
            for meta in revisions {
                let rev = meta["rev"].as_u64().expect("rev");
                let (status, got) = call(
                    &http,
                    reqwest::Method::GET,
                    format!("{url}/v1/configs/{name}/revisions/{rev}"),
                    None,
                )
                .await
                .expect("revision");
                assert_eq!(status, 200, "{got}");
                let text = got["content"].as_str().expect("content");
                assert_eq!(
                    sha256_hex(text.as_bytes()),
                    meta["sha256"].as_str().expect("sha"),
                    "{name} rev {rev} is not whole"
                );
                assert_eq!(
                    text.len() as u64,
                    meta["size"].as_u64().expect("size"),
                    "{name} rev {rev}"
                );
                stored += 1;
            }
            for (_, rev, sha) in acked.iter().filter(|(n, _, _)| *n == name) {
                let meta = revisions
                    .iter()
                    .find(|m| m["rev"] == *rev)
                    .unwrap_or_else(|| panic!("acknowledged {name} rev {rev} lost after kill -9"));
                assert_eq!(meta["sha256"], sha.as_str(), "{name} rev {rev} changed");
            }
        }
        assert!(
            stored >= acked.len(),
            "{stored} stored, {} acknowledged",
            acked.len()
        );
    });
}
