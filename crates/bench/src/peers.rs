//! The same three workloads as [`crate::workload`], against the peers of the side-by-side
//! comparison (`compare`): etcd's lock API with leases, and Redis `SET NX PX` locks.
//!
//! Every workload has the same shape as Locksmith's: C clients, each with its own connection,
//! run for a fixed duration; latency is per cycle (cycles), from asking to holding (handoff), or
//! per renewal (renew); every critical section goes through a fenced counter ([`Fence`]):
//!
//! - etcd: the token is the revision in the `Lock` response header — the revision at which the
//!   lock key was created, which is the order in which etcd's lock grants.
//! - Redis has no fencing token, so the client takes one after acquiring: `INCR` of a per-resource
//!   counter (one more round trip and, with `appendfsync always`, one more durable write).
//!
//! At the end of the duration, etcd lock waits in progress are drained (as Locksmith's are) and a
//! Redis client stops polling; then each client's lease (etcd) or key (Redis) is dropped. Every
//! run uses fresh names, so nothing carries over.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use locksmith_etcd::etcd_client::{self, LockOptions};
use redis::aio::MultiplexedConnection;

use crate::run::{Run, finish, start_run};
use crate::stats::{Latencies, Row, renew_label};
use crate::workload::Fence;

/// How long an etcd lock wait in progress at the end of a run may still take. Waits are drained,
/// not abandoned: cancelling dozens of waiting `Lock` calls at once left etcd 3.4's lock service
/// unable to grant the next lock on a fresh name (seen with 64 waiters).
const ETCD_DRAIN: Duration = Duration::from_secs(10);

/// Lease TTL every peer client uses (as Locksmith's workloads do): 15 s.
const TTL_SECS: i64 = 15;

/// Release only if the key still holds our token.
const REDIS_RELEASE: &str =
    "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end";

/// Extend only if the key still holds our token.
const REDIS_RENEW: &str = "if redis.call('get',KEYS[1])==ARGV[1] then return \
                           redis.call('pexpire',KEYS[1],ARGV[2]) else return 0 end";

/// An etcd endpoint (or several) to load.
#[derive(Debug, Clone)]
pub struct EtcdTarget {
    /// Client URLs.
    pub endpoints: Vec<String>,
    /// Prefix for lock names, so runs do not collide.
    pub prefix: String,
}

/// A Redis server to load.
#[derive(Debug, Clone)]
pub struct RedisTarget {
    /// `redis://127.0.0.1:PORT/`.
    pub url: String,
    /// Prefix for keys, so runs do not collide.
    pub prefix: String,
    /// Sleep between attempts while another client holds the lock (Redis has no wait queue).
    pub retry: Duration,
}

// ----------------------------------------------------------------------------------------------
// etcd

async fn etcd_connect(target: &EtcdTarget) -> anyhow::Result<etcd_client::Client> {
    etcd_client::Client::connect(&target.endpoints, None)
        .await
        .context("connect to etcd")
}

async fn etcd_session(target: &EtcdTarget) -> anyhow::Result<(etcd_client::Client, i64)> {
    let mut client = etcd_connect(target).await?;
    let lease = client
        .lease_grant(TTL_SECS, None)
        .await
        .context("etcd lease grant")?
        .id();
    Ok((client, lease))
}

/// `Lock` with the client's lease; returns the lock key and the fencing token (the revision
/// the key was created at). `None` when the run ended while waiting.
async fn etcd_lock(
    client: &mut etcd_client::Client,
    name: &str,
    lease: i64,
    run: &Run,
) -> Option<Result<(Vec<u8>, u64), etcd_client::Error>> {
    let options = LockOptions::new().with_lease(lease);
    tokio::select! {
        r = client.lock(name, Some(options)) => Some(r.map(|resp| {
            let token = resp.header().map_or(0, |h| h.revision()).max(0) as u64;
            (resp.key().to_vec(), token)
        })),
        () = async {
            run.until_stopped().await;
            tokio::time::sleep(ETCD_DRAIN).await;
        } => None,
    }
}

/// etcd: C clients each lock and unlock their own name in a loop (one lease per client, as an
/// etcd `concurrency.Session` does).
pub async fn etcd_cycles(
    target: &EtcdTarget,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Row> {
    let (control, run) = start_run();
    let violations = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (mut client, lease) = etcd_session(target).await?;
        let name = format!("{}/cycles/{i}", target.prefix);
        let (run, violations) = (run.clone(), violations.clone());
        tasks.push(tokio::spawn(async move {
            run.started().await;
            let fence = Fence::default();
            let mut lat = Latencies::default();
            while !run.stopped() {
                let t0 = Instant::now();
                match etcd_lock(&mut client, &name, lease, &run).await {
                    None => break,
                    Some(Ok((key, token))) => {
                        fence.enter(token);
                        fence.leave();
                        match client.unlock(key).await {
                            Ok(_) => lat.record(t0.elapsed()),
                            Err(_) => run.error().await,
                        }
                    }
                    Some(Err(_)) => run.error().await,
                }
            }
            violations.fetch_add(fence.violations(), Ordering::Relaxed);
            let _ = client.lease_revoke(lease).await;
            let n = lat.count();
            Ok((lat, n))
        }));
    }
    let mut row = finish("cycles", clients, duration, control, &run, tasks, false).await?;
    row.violations = violations.load(Ordering::Relaxed);
    Ok(row)
}

/// etcd: C clients contend for one name; etcd's lock queues waiters by key creation revision.
pub async fn etcd_handoff(
    target: &EtcdTarget,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Row> {
    let (control, run) = start_run();
    let fence = Arc::new(Fence::default());
    let name = format!("{}/handoff/{clients}", target.prefix);
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (mut client, lease) = etcd_session(target).await?;
        let (run, fence, name) = (run.clone(), fence.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            run.started().await;
            let mut lat = Latencies::default();
            let mut mine = 0u64;
            while !run.stopped() {
                let t0 = Instant::now();
                let asking = fence.asking(i);
                match etcd_lock(&mut client, &name, lease, &run).await {
                    None => break,
                    Some(Ok((key, token))) => {
                        lat.record(t0.elapsed());
                        asking.granted();
                        fence.enter(token);
                        fence.leave();
                        mine += 1;
                        if client.unlock(key).await.is_err() {
                            run.error().await;
                        }
                    }
                    Some(Err(_)) => run.error().await,
                }
            }
            // Revoking deletes a lock key left by an abandoned wait.
            let _ = client.lease_revoke(lease).await;
            Ok((lat, mine))
        }));
    }
    let mut row = finish("handoff", clients, duration, control, &run, tasks, true).await?;
    fence.judge(&mut row);
    Ok(row)
}

/// etcd: C clients (one connection each) each hold `in_flight` locks, each on a lease of its own,
/// and renew each lease in a loop, one keep-alive round trip (request, response on the lease's
/// keep-alive stream) per renewal; a client's streams share its connection (HTTP/2).
pub async fn etcd_renewals(
    target: &EtcdTarget,
    clients: usize,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<Row> {
    let (control, run) = start_run();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let connection = etcd_connect(target).await?;
        for j in 0..in_flight.max(1) {
            let mut client = connection.clone();
            let lease = client
                .lease_grant(TTL_SECS, None)
                .await
                .context("etcd lease grant")?
                .id();
            let name = format!("{}/renew/{i}/{j}", target.prefix);
            client
                .lock(name.as_str(), Some(LockOptions::new().with_lease(lease)))
                .await
                .context("etcd lock for renewals")?;
            let (mut keeper, mut stream) = client
                .lease_keep_alive(lease)
                .await
                .context("etcd keep-alive stream")?;
            let run = run.clone();
            tasks.push(tokio::spawn(async move {
                run.started().await;
                let mut lat = Latencies::default();
                while !run.stopped() {
                    let t0 = Instant::now();
                    let renewed = match keeper.keep_alive().await {
                        Ok(()) => matches!(stream.message().await, Ok(Some(r)) if r.ttl() > 0),
                        Err(_) => false,
                    };
                    if renewed {
                        lat.record(t0.elapsed());
                    } else {
                        run.error().await;
                    }
                }
                drop((keeper, stream));
                let _ = client.lease_revoke(lease).await;
                let n = lat.count();
                Ok((lat, n))
            }));
        }
    }
    finish(
        &renew_label(in_flight),
        clients,
        duration,
        control,
        &run,
        tasks,
        false,
    )
    .await
}

// ----------------------------------------------------------------------------------------------
// Redis

async fn redis_connection(target: &RedisTarget) -> anyhow::Result<MultiplexedConnection> {
    let client = redis::Client::open(target.url.as_str()).context("redis URL")?;
    // The default 500 ms response timeout would turn a slow fsync into an error.
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .context("connect to redis")
}

/// One `SET key token NX PX ttl`: true when acquired.
async fn redis_try_lock(
    con: &mut MultiplexedConnection,
    key: &str,
    token: &str,
) -> redis::RedisResult<bool> {
    let r: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(token)
        .arg("NX")
        .arg("PX")
        .arg(TTL_SECS * 1000)
        .query_async(con)
        .await?;
    Ok(r.is_some())
}

/// After acquiring: the fencing token (`INCR` of the resource's counter), the fenced critical
/// section, then the compare-and-delete release. True when all of it succeeded.
async fn redis_hold_and_release(
    con: &mut MultiplexedConnection,
    release: &redis::Script,
    key: &str,
    fence_key: &str,
    token: &str,
    fence: &Fence,
) -> bool {
    let fenced = match redis::cmd("INCR")
        .arg(fence_key)
        .query_async::<u64>(con)
        .await
    {
        Ok(t) => {
            fence.enter(t);
            fence.leave();
            true
        }
        Err(_) => false,
    };
    let released = matches!(
        release.key(key).arg(token).invoke_async::<i64>(con).await,
        Ok(1)
    );
    fenced && released
}

/// Redis: C clients each `SET NX PX` + `INCR` fence + compare-and-delete their own key.
pub async fn redis_cycles(
    target: &RedisTarget,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Row> {
    let (control, run) = start_run();
    let violations = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let mut con = redis_connection(target).await?;
        let key = format!("{}/cycles/{i}", target.prefix);
        let fence_key = format!("{key}/fence");
        let (run, violations) = (run.clone(), violations.clone());
        tasks.push(tokio::spawn(async move {
            run.started().await;
            let release = redis::Script::new(REDIS_RELEASE);
            let fence = Fence::default();
            let mut lat = Latencies::default();
            let mut n = 0u64;
            while !run.stopped() {
                n += 1;
                let token = format!("{i}-{n}");
                let t0 = Instant::now();
                match redis_try_lock(&mut con, &key, &token).await {
                    Ok(true) => {
                        if redis_hold_and_release(
                            &mut con, &release, &key, &fence_key, &token, &fence,
                        )
                        .await
                        {
                            lat.record(t0.elapsed());
                        } else {
                            run.error().await;
                        }
                    }
                    // Nobody else uses this key: a refusal is an error here.
                    Ok(false) | Err(_) => run.error().await,
                }
            }
            violations.fetch_add(fence.violations(), Ordering::Relaxed);
            let n = lat.count();
            Ok((lat, n))
        }));
    }
    let mut row = finish("cycles", clients, duration, control, &run, tasks, false).await?;
    row.violations = violations.load(Ordering::Relaxed);
    Ok(row)
}

/// Redis: C clients contend for one key. Redis has no wait queue: a refused `SET NX` sleeps
/// `retry` and tries again, so the wait includes polling and nothing orders the waiters.
pub async fn redis_handoff(
    target: &RedisTarget,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Row> {
    let (control, run) = start_run();
    let fence = Arc::new(Fence::default());
    let key = format!("{}/handoff/{clients}", target.prefix);
    let fence_key = format!("{key}/fence");
    let mut tasks = Vec::new();
    for i in 0..clients {
        let mut con = redis_connection(target).await?;
        let (run, fence, key, fence_key) =
            (run.clone(), fence.clone(), key.clone(), fence_key.clone());
        let retry = target.retry;
        tasks.push(tokio::spawn(async move {
            run.started().await;
            let release = redis::Script::new(REDIS_RELEASE);
            let mut lat = Latencies::default();
            let mut mine = 0u64;
            let mut n = 0u64;
            'run: while !run.stopped() {
                n += 1;
                let token = format!("{i}-{n}");
                let t0 = Instant::now();
                let asking = fence.asking(i);
                loop {
                    match redis_try_lock(&mut con, &key, &token).await {
                        Ok(true) => break,
                        Ok(false) => {}
                        Err(_) => run.error().await,
                    }
                    if run.stopped() {
                        break 'run;
                    }
                    tokio::time::sleep(retry).await;
                }
                lat.record(t0.elapsed());
                asking.granted();
                mine += 1;
                if !redis_hold_and_release(&mut con, &release, &key, &fence_key, &token, &fence)
                    .await
                {
                    run.error().await;
                }
            }
            Ok((lat, mine))
        }));
    }
    let mut row = finish("handoff", clients, duration, control, &run, tasks, true).await?;
    fence.judge(&mut row);
    Ok(row)
}

/// Redis: C clients (one multiplexed connection each) each hold `in_flight` keys and extend
/// each in a loop of its own with a compare-and-`PEXPIRE` script; a client's concurrent scripts
/// share its connection (pipelined).
pub async fn redis_renewals(
    target: &RedisTarget,
    clients: usize,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<Row> {
    let (control, run) = start_run();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let connection = redis_connection(target).await?;
        for j in 0..in_flight.max(1) {
            let mut con = connection.clone();
            let key = format!("{}/renew/{i}/{j}", target.prefix);
            let token = format!("{i}-{j}-renew");
            if !redis_try_lock(&mut con, &key, &token).await? {
                anyhow::bail!("redis: {key} is already held");
            }
            let run = run.clone();
            tasks.push(tokio::spawn(async move {
                run.started().await;
                let renew = redis::Script::new(REDIS_RENEW);
                let release = redis::Script::new(REDIS_RELEASE);
                let mut lat = Latencies::default();
                while !run.stopped() {
                    let t0 = Instant::now();
                    match renew
                        .key(&key)
                        .arg(&token)
                        .arg(TTL_SECS * 1000)
                        .invoke_async::<i64>(&mut con)
                        .await
                    {
                        Ok(1) => lat.record(t0.elapsed()),
                        _ => run.error().await,
                    }
                }
                let _ = release
                    .key(&key)
                    .arg(&token)
                    .invoke_async::<i64>(&mut con)
                    .await;
                let n = lat.count();
                Ok((lat, n))
            }));
        }
    }
    finish(
        &renew_label(in_flight),
        clients,
        duration,
        control,
        &run,
        tasks,
        false,
    )
    .await
}
