//! The workloads. Each spawns its clients, runs for a fixed duration, and returns one [`Row`].

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use locksmith_api::{AcquireRequest, LeaseView};
use locksmith_client::{Client, ClientError, TlsOptions, WireClient};
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
    /// The API token every client sends (`Authorization: Bearer` over HTTP, the auth frame
    /// over the wire protocol); `None` for a server with `--auth off`.
    pub token: Option<String>,
    /// How to speak TLS to a server that speaks it (an `https://` URL; the wire port then
    /// too); `None`: plain TCP.
    pub tls: Option<TlsOptions>,
}

impl Target {
    /// A client of its own, connected (its own connection), over the target's transport.
    /// Connecting happens here, before the run starts, as it does for the peers' clients.
    pub(crate) async fn connect(&self) -> anyhow::Result<Conn> {
        Ok(match &self.wire {
            Some(addr) => {
                let mut client = match &self.tls {
                    Some(tls) => WireClient::with_tls(addr.clone(), tls)?,
                    None => WireClient::new(addr.clone()),
                };
                if let Some(token) = &self.token {
                    client = client.with_token(token);
                }
                // Connecting authenticates too: not part of the run.
                client.connect().await?;
                Conn::Wire(client)
            }
            None => {
                let mut client =
                    Client::with_tls(&self.url, &self.tls.clone().unwrap_or_default())?;
                if let Some(token) = &self.token {
                    client = client.with_token(token)?;
                }
                // Opens the pooled keep-alive connection the calls then use.
                client.health().await?;
                Conn::Http(client)
            }
        })
    }
}

/// One load-generating client: HTTP or the wire protocol.
#[derive(Debug, Clone)]
pub(crate) enum Conn {
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

    pub(crate) async fn acquire(&self, req: &AcquireRequest) -> Result<LeaseView, ClientError> {
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

    async fn check_fence(&self, resource: &str, token: FenceToken) -> Result<(), ClientError> {
        match self {
            Conn::Http(c) => c.check_fence(resource, token).await.map(drop),
            Conn::Wire(c) => c.check_fence(resource, token).await.map(drop),
        }
    }

    pub(crate) async fn release(&self, lease: LeaseId) -> Result<(), ClientError> {
        match self {
            Conn::Http(c) => c.release(lease, None).await.map(drop),
            Conn::Wire(c) => c.release(lease, None).await.map(drop),
        }
    }
}

/// Client `i`'s acquire of `resource`: a 15 s lease, waiting up to `wait_ms` in the queue.
pub fn request(resource: String, i: usize, wait_ms: Option<u64>) -> AcquireRequest {
    AcquireRequest {
        resource,
        owner: owner(i),
        ttl_ms: Some(15_000),
        wait_ms,
        slots: None,
        lock_delay_ms: None,
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
        pid_ns: None,
    }
}

/// A fenced register: accepts a write only with a token newer than any seen, and counts
/// overlapping critical sections. Mutual exclusion holds iff `violations` stays 0.
///
/// It also times **handoffs**: the gap from one holder leaving the critical section (just
/// before it sends its release) to the next holder entering it — release round trip, the
/// server's durable commit, and the grant's delivery to the waiter. Only meaningful when the
/// fence is shared by contending clients (the handoff workloads).
///
/// And it judges **FIFO order**: each contending client registers as asking just before it
/// sends its acquire ([`Fence::asking`]) and reports its grant; a grant that goes to a client
/// while another has been asking for more than [`OVERTAKE_TOLERANCE`] longer is an overtake.
/// The tolerance covers requests crossing in flight; a client that is late to ask again (its
/// task stalled) is simply not waiting yet, and losing its turn is not an overtake.
#[derive(Debug)]
pub struct Fence {
    newest: AtomicU64,
    inside: AtomicU64,
    violations: AtomicU64,
    base: Instant,
    /// Nanoseconds after `base` of the last `leave`, 0 before the first.
    left_at_ns: AtomicU64,
    gaps: Mutex<Latencies>,
    /// Clients asking now: (nanoseconds after `base` when they asked, client).
    asking: Mutex<BTreeSet<(u64, usize)>>,
    overtakes: AtomicU64,
}

/// How much longer another client must have been asking for a grant to count as overtaking it.
pub const OVERTAKE_TOLERANCE: Duration = Duration::from_millis(1);

impl Default for Fence {
    fn default() -> Self {
        Self {
            newest: AtomicU64::new(0),
            inside: AtomicU64::new(0),
            violations: AtomicU64::new(0),
            base: Instant::now(),
            left_at_ns: AtomicU64::new(0),
            gaps: Mutex::new(Latencies::default()),
            asking: Mutex::new(BTreeSet::new()),
            overtakes: AtomicU64::new(0),
        }
    }
}

/// A client's place in line from the moment it asks; see [`Fence::asking`]. Dropped without
/// [`granted`](Self::granted) (the run ended while it waited), it just leaves the line.
#[derive(Debug)]
pub struct Asking<'a> {
    fence: &'a Fence,
    key: (u64, usize),
}

impl Asking<'_> {
    /// The client got the lock: it leaves the line, and if someone else had been asking for
    /// more than [`OVERTAKE_TOLERANCE`] longer, that is an overtake.
    pub fn granted(self) {
        let mut line = self.fence.line();
        line.remove(&self.key);
        let tolerance = u64::try_from(OVERTAKE_TOLERANCE.as_nanos()).unwrap_or(u64::MAX);
        if line
            .first()
            .is_some_and(|&(asked, _)| asked.saturating_add(tolerance) < self.key.0)
        {
            self.fence.overtakes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        self.fence.line().remove(&self.key);
    }
}

impl Fence {
    /// Registers `client` as asking for the lock from now (call just before sending the
    /// acquire); report the grant on the returned [`Asking`].
    pub fn asking(&self, client: usize) -> Asking<'_> {
        let key = (self.since_base_ns(), client);
        self.line().insert(key);
        Asking { fence: self, key }
    }

    /// Grants that overtook a client asking for longer (0 under FIFO).
    pub fn overtakes(&self) -> u64 {
        self.overtakes.load(Ordering::Relaxed)
    }

    fn line(&self) -> std::sync::MutexGuard<'_, BTreeSet<(u64, usize)>> {
        self.asking
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

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

    /// Fills a handoff row's fence columns: violations, handoff gaps, overtakes and FIFO.
    pub fn judge(&self, row: &mut Row) {
        row.violations = self.violations();
        row.handoff_ms = self.handoff_ms();
        row.overtakes = Some(self.overtakes());
        row.fifo = Some(self.overtakes() == 0);
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
        let req = request(format!("{}/cycles/{i}", target.prefix), i, None);
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
/// Fairness: FIFO is judged by the fence's overtakes ([`Fence::asking`]); the per-client counts
/// are reported too (every client re-queues as soon as it releases, so under FIFO they differ
/// by about one — by more when a client's task stalls and it asks late).
pub async fn handoff(target: &Target, clients: usize, duration: Duration) -> anyhow::Result<Row> {
    let (control, run) = start_run();
    let fence = Arc::new(Fence::default());
    let resource = format!("{}/handoff/{clients}", target.prefix);
    let mut tasks = Vec::new();
    for i in 0..clients {
        let client = target.connect().await?;
        let (run, fence) = (run.clone(), fence.clone());
        let req = request(resource.clone(), i, Some(60_000));
        tasks.push(tokio::spawn(async move {
            run.started().await;
            let mut lat = Latencies::default();
            let mut mine = 0u64;
            while !run.stopped() {
                let t0 = Instant::now();
                let asking = fence.asking(i);
                match client.acquire(&req).await {
                    Ok(lease) => {
                        lat.record(t0.elapsed());
                        asking.granted();
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
    fence.judge(&mut row);
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
            let req = request(format!("{}/renew/{i}/{j}", target.prefix), i, None);
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

/// C clients, each holding one lock, check their fencing token in a loop, one round trip at a
/// time: what a protected write's check costs (it waits for the commits before it to be
/// durable, so that it never vouches for a grant the disk may lack).
pub async fn fence_checks(
    target: &Target,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Row> {
    let (control, run) = start_run();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let client = target.connect().await?;
        let run = run.clone();
        let resource = format!("{}/fence/{i}", target.prefix);
        let req = request(resource.clone(), i, None);
        let lease = client.acquire(&req).await?;
        tasks.push(tokio::spawn(async move {
            run.started().await;
            let mut lat = Latencies::default();
            while !run.stopped() {
                let t0 = Instant::now();
                match client.check_fence(&resource, lease.token).await {
                    Ok(()) => lat.record(t0.elapsed()),
                    Err(_) => run.error().await,
                }
            }
            let _ = client.release(lease.lease).await;
            let n = lat.count();
            Ok((lat, n))
        }));
    }
    finish(
        "fence check",
        clients,
        duration,
        control,
        &run,
        tasks,
        false,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_past_tolerance() {
        std::thread::sleep(OVERTAKE_TOLERANCE * 2);
    }

    #[test]
    fn a_grant_past_someone_asking_longer_is_an_overtake() {
        let fence = Fence::default();
        let first = fence.asking(1);
        wait_past_tolerance();
        let second = fence.asking(2);
        second.granted();
        assert_eq!(fence.overtakes(), 1);
        first.granted();
        assert_eq!(
            fence.overtakes(),
            1,
            "the first asker had nobody ahead of it"
        );
    }

    #[test]
    fn grants_in_asking_order_or_within_the_tolerance_are_fifo() {
        let fence = Fence::default();
        let first = fence.asking(1);
        wait_past_tolerance();
        let second = fence.asking(2);
        first.granted();
        second.granted();
        // Crossing in flight: asked within the tolerance of each other, granted in reverse.
        let a = fence.asking(3);
        let b = fence.asking(4);
        b.granted();
        a.granted();
        assert_eq!(fence.overtakes(), 0);
    }

    #[test]
    fn a_client_that_stops_waiting_leaves_the_line() {
        let fence = Fence::default();
        drop(fence.asking(1));
        wait_past_tolerance();
        fence.asking(2).granted();
        assert_eq!(fence.overtakes(), 0);
    }
}
