//! The workloads. Each spawns its clients, runs for a fixed duration, and returns one [`Row`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use locksmith_api::{AcquireRequest, LeaseView};
use locksmith_client::{Client, ClientError, WireClient};
use locksmith_core::{FenceToken, LeaseId, Owner};

use crate::run::{finish, start_run};
use crate::stats::{Latencies, Row, renew_label};

/// Where to send load.
#[derive(Debug, Clone)]
pub struct Target {
    /// Server base URL.
    pub url: String,
    /// The server's wire-protocol address: when set, the load goes over the binary wire
    /// protocol (one connection per client) instead of HTTP.
    pub wire: Option<String>,
    /// Prefix for resource names, so runs do not collide.
    pub prefix: String,
}

impl Target {
    /// A client of its own, connected (its own connection), over the target's transport.
    /// Connecting happens here, before the run starts, as it does for the peers' clients.
    async fn connect(&self) -> anyhow::Result<Conn> {
        Ok(match &self.wire {
            Some(addr) => {
                let client = WireClient::new(addr.clone());
                client.connect().await?;
                Conn::Wire(client)
            }
            None => {
                let client = Client::new(&self.url)?;
                // Opens the pooled keep-alive connection the calls then use.
                client.health().await?;
                Conn::Http(client)
            }
        })
    }
}

/// One load-generating client: HTTP or the wire protocol.
#[derive(Debug, Clone)]
enum Conn {
    Http(Client),
    Wire(WireClient),
}

impl Conn {
    /// A handle for one more request in flight at a time: over the wire protocol the same
    /// connection (it pipelines); over HTTP/1.1, which cannot, a connection of its own, opened
    /// now. (Sharing one HTTP client's pool instead left the in-flight requests queued on the
    /// few connections it had when they all started at once.)
    async fn another(&self, target: &Target) -> anyhow::Result<Conn> {
        match self {
            Conn::Wire(_) => Ok(self.clone()),
            Conn::Http(_) => target.connect().await,
        }
    }

    async fn acquire(&self, req: &AcquireRequest) -> Result<LeaseView, ClientError> {
        match self {
            Conn::Http(c) => c.acquire(req).await,
            Conn::Wire(c) => c.acquire(req).await,
        }
    }

    async fn renew(&self, lease: LeaseId, token: FenceToken) -> Result<LeaseView, ClientError> {
        match self {
            Conn::Http(c) => c.renew(lease, Some(token)).await,
            Conn::Wire(c) => c.renew(lease, Some(token)).await,
        }
    }

    async fn release(&self, lease: LeaseId) -> Result<(), ClientError> {
        match self {
            Conn::Http(c) => c.release(lease, None).await.map(drop),
            Conn::Wire(c) => c.release(lease, None).await.map(drop),
        }
    }
}

fn owner(i: usize) -> Owner {
    Owner {
        node: "bench".into(),
        pid: 10_000 + i as u32,
        start_time: 1 + i as u64,
        boot_id: "bench-boot".into(),
        user: "bench".into(),
        purpose: "locksmith-bench".into(),
    }
}

/// A fenced register: accepts a write only with a token newer than any seen, and counts
/// overlapping critical sections. Mutual exclusion holds iff `violations` stays 0.
///
/// It also times **handoffs**: the gap from one holder leaving the critical section (just
/// before it sends its release) to the next holder entering it — release round trip, the
/// server's durable commit, and the grant's delivery to the waiter. Only meaningful when the
/// fence is shared by contending clients (the handoff workloads).
#[derive(Debug)]
pub struct Fence {
    newest: AtomicU64,
    inside: AtomicU64,
    violations: AtomicU64,
    base: Instant,
    /// Nanoseconds after `base` of the last `leave`, 0 before the first.
    left_at_ns: AtomicU64,
    gaps: Mutex<Latencies>,
}

impl Default for Fence {
    fn default() -> Self {
        Self {
            newest: AtomicU64::new(0),
            inside: AtomicU64::new(0),
            violations: AtomicU64::new(0),
            base: Instant::now(),
            left_at_ns: AtomicU64::new(0),
            gaps: Mutex::new(Latencies::default()),
        }
    }
}

impl Fence {
    /// Enters the critical section with `token`; a stale token or an overlap is a violation.
    pub fn enter(&self, token: u64) {
        if self.newest.fetch_max(token, Ordering::SeqCst) >= token {
            self.violations.fetch_add(1, Ordering::Relaxed);
        }
        if self.inside.fetch_add(1, Ordering::SeqCst) != 0 {
            self.violations.fetch_add(1, Ordering::Relaxed);
        }
        let left = self.left_at_ns.load(Ordering::SeqCst);
        if left != 0 {
            let now = self.since_base_ns();
            let gap = Duration::from_nanos(now.saturating_sub(left));
            self.gaps
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .record(gap);
        }
    }

    /// Leaves the critical section.
    pub fn leave(&self) {
        self.left_at_ns
            .store(self.since_base_ns().max(1), Ordering::SeqCst);
        self.inside.fetch_sub(1, Ordering::SeqCst);
    }

    /// Violations seen so far.
    pub fn violations(&self) -> u64 {
        self.violations.load(Ordering::Relaxed)
    }

    /// Handoff gaps so far: (p50, p99) in ms, `None` before the first handoff.
    pub fn handoff_ms(&self) -> Option<(f64, f64)> {
        let gaps = self
            .gaps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (gaps.count() > 0).then(|| (gaps.quantile_ms(0.5), gaps.quantile_ms(0.99)))
    }

    fn since_base_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// C clients each acquire+release their own resource in a loop for `duration`.
pub async fn cycles(target: &Target, clients: usize, duration: Duration) -> anyhow::Result<Row> {
    let (control, run) = start_run();
    let violations = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let client = target.connect().await?;
        let (run, violations) = (run.clone(), violations.clone());
        let req = AcquireRequest {
            resource: format!("{}/cycles/{i}", target.prefix),
            owner: owner(i),
            ttl_ms: Some(15_000),
            wait_ms: None,
            slots: None,
            lock_delay_ms: None,
        };
        tasks.push(tokio::spawn(async move {
            run.started().await;
            let fence = Fence::default();
            let mut lat = Latencies::default();
            while !run.stopped() {
                let t0 = Instant::now();
                match client.acquire(&req).await {
                    Ok(lease) => {
                        fence.enter(lease.token.0);
                        fence.leave();
                        match client.release(lease.lease).await {
                            Ok(()) => lat.record(t0.elapsed()),
                            Err(_) => run.error().await,
                        }
                    }
                    Err(_) => run.error().await,
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

/// C clients contend for one resource: acquire (waiting in the FIFO queue), enter the fenced
/// critical section, release. Latency is the time from asking to holding.
///
/// Fairness: every client re-queues as soon as it releases, so all of them are always waiting
/// (from 16 clients on; with 2, a client's next acquire may reach the server before the other's
/// does): under strict FIFO the grants rotate round-robin and per-client counts differ by at
/// most one. Any barging or LIFO wake-up shows up as a wider spread.
pub async fn handoff(target: &Target, clients: usize, duration: Duration) -> anyhow::Result<Row> {
    let (control, run) = start_run();
    let fence = Arc::new(Fence::default());
    let resource = format!("{}/handoff/{clients}", target.prefix);
    let mut tasks = Vec::new();
    for i in 0..clients {
        let client = target.connect().await?;
        let (run, fence) = (run.clone(), fence.clone());
        let req = AcquireRequest {
            resource: resource.clone(),
            owner: owner(i),
            ttl_ms: Some(15_000),
            wait_ms: Some(60_000),
            slots: None,
            lock_delay_ms: None,
        };
        tasks.push(tokio::spawn(async move {
            run.started().await;
            let mut lat = Latencies::default();
            let mut mine = 0u64;
            while !run.stopped() {
                let t0 = Instant::now();
                match client.acquire(&req).await {
                    Ok(lease) => {
                        lat.record(t0.elapsed());
                        fence.enter(lease.token.0);
                        fence.leave();
                        mine += 1;
                        if client.release(lease.lease).await.is_err() {
                            run.error().await;
                        }
                    }
                    Err(_) => run.error().await,
                }
            }
            Ok((lat, mine))
        }));
    }
    let mut row = finish("handoff", clients, duration, control, &run, tasks, true).await?;
    row.violations = fence.violations();
    row.handoff_ms = fence.handoff_ms();
    Ok(row)
}

/// C clients each hold `in_flight` leases and renew each in a loop of its own: with the wire
/// protocol all over the client's one connection (`in_flight` renewals share its writes and
/// reads: pipelining); over HTTP/1.1, which cannot pipeline, over `in_flight` connections.
pub async fn renewals(
    target: &Target,
    clients: usize,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<Row> {
    let (control, run) = start_run();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let connection = target.connect().await?;
        for j in 0..in_flight.max(1) {
            let client = if j == 0 {
                connection.clone()
            } else {
                connection.another(target).await?
            };
            let run = run.clone();
            let req = AcquireRequest {
                resource: format!("{}/renew/{i}/{j}", target.prefix),
                owner: owner(i),
                ttl_ms: Some(15_000),
                wait_ms: None,
                slots: None,
                lock_delay_ms: None,
            };
            let lease = client.acquire(&req).await?;
            tasks.push(tokio::spawn(async move {
                run.started().await;
                let mut lat = Latencies::default();
                while !run.stopped() {
                    let t0 = Instant::now();
                    match client.renew(lease.lease, lease.token).await {
                        Ok(_) => lat.record(t0.elapsed()),
                        Err(_) => run.error().await,
                    }
                }
                let _ = client.release(lease.lease).await;
                let n = lat.count();
                Ok((lat, n))
            }));
        }
    }
    let label = renew_label(in_flight);
    finish(&label, clients, duration, control, &run, tasks, false).await
}
