//! The config store's costs: a fenced put of a 10 KiB config over HTTP with the lock already
//! held ([`config_puts`], a row of `locksmith-bench --workloads configs`), and a store of many
//! configs with long histories ([`fill`], used by the `configs` binary for its size, RSS and
//! restart time).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::run::{finish, start_run};
use crate::stats::{Latencies, Row};
use crate::workload::{Target, request};

/// Bytes of each put's content.
pub const PUT_BYTES: usize = 10 * 1024;

/// `size` bytes of valid conf content that differs with `n` (so no put is a copy of the
/// last): `key = value` lines, then a comment line that pads it to exactly `size`.
pub fn content(n: u64, size: usize) -> String {
    let mut text = format!("# revision {n}\n");
    let mut i = 0u64;
    loop {
        let line = format!("key_{i:05} = {}\n", n.wrapping_mul(7919).wrapping_add(i));
        if text.len() + line.len() + 2 > size {
            break;
        }
        text.push_str(&line);
        i += 1;
    }
    if let Some(pad) = size.checked_sub(text.len() + 2) {
        text.push('#');
        text.push_str(&"-".repeat(pad));
        text.push('\n');
    }
    text
}

/// An HTTP client sending `token`, and the `PUT` of `content` to `name` under `(lease, token)`.
fn http(token: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse()?,
        );
    }
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

async fn put(
    http: &reqwest::Client,
    url: &str,
    name: &str,
    fence: (u64, u64),
    content: String,
) -> anyhow::Result<()> {
    let resp = http
        .put(format!("{url}/v1/configs/{}", name.replace('/', "%2F")))
        .json(&json!({"lease": fence.0, "token": fence.1, "format": "conf", "content": content}))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!(
            "put {name}: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// C clients, each holding the lock of its own config, put 10 KiB revisions of it in a loop,
/// one round trip at a time: the fence check, the validation (conf parse) and the durable
/// commit of the blob, revision and head records. HTTP only (the wire protocol has no config
/// frames).
pub async fn config_puts(
    target: &Target,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Row> {
    if target.tls.is_some() {
        bail!("the configs workload speaks plain HTTP only");
    }
    let (control, run) = start_run();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let conn = target.connect().await?;
        let name = format!("{}/bench-{i}.conf", target.prefix);
        let lease = conn
            .acquire(&request(format!("configs/{name}"), i, None))
            .await?;
        let http = http(target.token.as_deref())?;
        let url = target.url.clone();
        let run = run.clone();
        // Contents made before the run: the clock measures the server, not the formatting.
        let contents: Vec<String> = (0..64).map(|n| content(n, PUT_BYTES)).collect();
        tasks.push(tokio::spawn(async move {
            run.started().await;
            let mut lat = Latencies::default();
            let fence = (lease.lease.0, lease.token.0);
            let mut n = 0usize;
            while !run.stopped() {
                let body = contents[n % contents.len()].clone();
                n += 1;
                let t0 = Instant::now();
                match put(&http, &url, &name, fence, body).await {
                    Ok(()) => lat.record(t0.elapsed()),
                    Err(e) => {
                        if n == 1 {
                            eprintln!("config put: {e:#}");
                        }
                        run.error().await;
                    }
                }
            }
            let _ = conn.release(lease.lease).await;
            let count = lat.count();
            Ok((lat, count))
        }));
    }
    finish(
        "config put 10 KiB",
        clients,
        duration,
        control,
        &run,
        tasks,
        false,
    )
    .await
}

/// Writes `revisions` revisions of each of `configs` configs (`fill/NNNN.conf`, `size` bytes
/// each, every one different) to the server at `url`, from `writers` concurrent writers each
/// holding the locks of its share. Returns how long it took.
pub async fn fill(
    url: &str,
    token: Option<&str>,
    configs: usize,
    revisions: u64,
    size: usize,
    writers: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let client = locksmith_client::Client::new(url)?;
        let client = match token {
            Some(t) => client.with_token(t)?,
            None => client,
        };
        let http = http(token)?;
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            for c in (w..configs).step_by(writers) {
                let name = format!("fill/{c:04}.conf");
                let mut req = request(format!("configs/{name}"), w, None);
                req.ttl_ms = Some(600_000);
                let lease = client.acquire(&req).await.context("acquire")?;
                for rev in 0..revisions {
                    let body = content(c as u64 * 1_000_003 + rev, size);
                    put(&http, &url, &name, (lease.lease.0, lease.token.0), body).await?;
                }
                client.release(lease.lease, None).await.context("release")?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed())
}
