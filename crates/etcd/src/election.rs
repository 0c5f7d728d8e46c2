//! Leader election for cluster mode: several Locksmith servers share one etcd keyspace, one of
//! them — the leader — owns the lock table and writes; the others wait (and point clients at
//! the leader's advertised URL, [`current_leader`]).
//!
//! The election key is `<prefix>leader`; its value is the leader's advertised URL, and it is
//! attached to an etcd lease that the winner keeps alive. Winning is a put-if-absent
//! (`create_revision(key) == 0`), so exactly one contender holds the key at a time; the
//! winner's [`Guard`] (the key and its `create_revision`) then rides on every commit of its
//! store, so a leader that lost the key — lease expired during a pause, key deleted by an
//! operator — cannot write even before it notices.
//!
//! What it does not do: decide *when* to step down. [`Leadership::lost`] flips to `true` when
//! the lease could not be renewed for two thirds of its TTL, its [`Tenure`] lapsed (the process
//! was paused), etcd says the lease is gone, or the key is no longer this leadership's; the
//! server reacts (stops serving as leader, campaigns again). Between two looks at `lost`, the
//! server asks [`Leadership::tenure`] before every answer: it says, on this process's own clock
//! and with no round trip, whether the lease is surely still alive.

use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Guard;
use crate::remote::{connect_options, transient};
use crate::tenure::{Tenure, TenureRule, boot_clock};

/// An election failure.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// etcd refused or could not be reached.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// The campaign's lease could not be kept alive while waiting (etcd unreachable for a
    /// whole TTL); campaign again.
    #[error("the election lease expired before the campaign was won")]
    LeaseLost,
    /// The TTL must be at least one second (etcd rounds it up to its own minimum, about
    /// 1.5 × the election timeout).
    #[error("invalid election TTL {0}s: must be at least 1")]
    InvalidTtl(i64),
}

/// Connects to the etcd cluster at `endpoints` with the options every part of this crate
/// uses: `request_timeout` per request and per connection attempt, requests refused at once
/// by a member without a leader, and TLS for `https://` endpoints as `tls` says (see
/// [`EtcdTls`](crate::EtcdTls)). Does not wait for a member to answer.
pub async fn connect(
    endpoints: &[String],
    request_timeout: Duration,
    tls: Option<&crate::EtcdTls>,
) -> Result<Client, etcd_client::Error> {
    let options = connect_options(request_timeout, endpoints, tls)
        .map_err(etcd_client::Error::InvalidArgs)?;
    Client::connect(endpoints, Some(options)).await
}

/// The election key under `prefix`: `<prefix>leader`.
pub fn leader_key(prefix: &str) -> String {
    crate::keys::leader_key(prefix)
}

/// A won election. Dropping it stops the keep-alive (the key then disappears one TTL later);
/// [`resign`](Self::resign) gives it up at once.
pub struct Leadership {
    /// The election key.
    pub key: String,
    /// The key's `create_revision`: with `key`, the [`Guard`] of this leadership.
    pub create_revision: i64,
    /// The etcd lease the key is attached to.
    pub lease_id: i64,
    /// Flips to `true` when this leadership is over or can no longer be trusted: the lease
    /// was not renewed for two thirds of its TTL, the [`tenure`](Self::tenure) lapsed (this
    /// process was paused), etcd reports the lease gone, or the key was deleted or re-created
    /// by someone else. It never flips back.
    pub lost: watch::Receiver<bool>,
    /// Until when the election lease is surely alive — so no one else can lead — on this
    /// process's clock: ask it before every answer given as leader. It ends when `lost` flips.
    pub tenure: Tenure,
    client: Client,
    keep_alive: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("key", &self.key)
            .field("create_revision", &self.create_revision)
            .field("lease_id", &self.lease_id)
            .field("lost", &*self.lost.borrow())
            .field("tenure_holds", &self.tenure.holds())
            .finish()
    }
}

impl Leadership {
    /// The guard to open the leader's [`EtcdStore`](crate::EtcdStore) with.
    pub fn guard(&self) -> Guard {
        Guard {
            key: self.key.clone(),
            create_revision: self.create_revision,
        }
    }

    /// Whether [`lost`](Self::lost) has flipped.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Gives the leadership up now: stops the keep-alive, deletes the key if it is still this
    /// leadership's, and revokes the lease, so that another contender wins at once.
    pub async fn resign(mut self) -> Result<(), ElectionError> {
        self.tenure.end();
        if let Some(task) = self.keep_alive.take() {
            task.abort();
        }
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.key.clone(),
                CompareOp::Equal,
                self.create_revision,
            )])
            .and_then([TxnOp::delete(self.key.clone(), None)]);
        self.client.txn(txn).await?;
        self.client.lease_revoke(self.lease_id).await?;
        Ok(())
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.tenure.end();
        if let Some(task) = self.keep_alive.take() {
            task.abort();
        }
    }
}

/// Aborts a task when dropped (a campaign that fails or is cancelled stops its keep-alive).
struct AbortOnDrop(Option<JoinHandle<()>>);

impl AbortOnDrop {
    fn disarm(mut self) -> Option<JoinHandle<()>> {
        self.0.take()
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Campaigns for leadership under `prefix` with `value` (the advertised URL) and a lease of
/// `ttl_secs`, waiting for as long as someone else leads: returns when this contender holds
/// the key. Must be called inside a tokio runtime (it spawns the keep-alive task).
///
/// While waiting it watches the key and tries again when it is deleted (resignation, or the
/// leader's lease expiring), and also every second in case the watch missed it. Its own lease
/// is kept alive meanwhile; if that fails for a whole TTL it returns
/// [`ElectionError::LeaseLost`]. Cancel it by dropping the future (the lease then expires).
pub async fn campaign(
    client: &Client,
    prefix: &str,
    value: &str,
    ttl_secs: i64,
) -> Result<Leadership, ElectionError> {
    if ttl_secs < 1 {
        return Err(ElectionError::InvalidTtl(ttl_secs));
    }
    let mut client = client.clone();
    let key = leader_key(prefix);
    let ttl = Duration::from_secs(ttl_secs.unsigned_abs());
    // Read before the grant is sent: etcd starts the TTL when the grant reaches it, later.
    let granted = boot_clock();
    let lease_id = client.lease_grant(ttl_secs, None).await?.id();
    let tenure = Tenure::new(TenureRule::new(ttl), granted);
    let (lost_tx, lost) = watch::channel(false);
    let (won_tx, won) = watch::channel(0i64);
    let task = AbortOnDrop(Some(tokio::spawn(keep_alive(KeepAlive {
        client: client.clone(),
        lease_id,
        ttl,
        key: key.clone(),
        won,
        lost: lost_tx,
        tenure: tenure.clone(),
    }))));

    match contend(&mut client, &key, value, lease_id, &lost).await {
        Ok(create_revision) => {
            let _ = won_tx.send(create_revision);
            Ok(Leadership {
                key,
                create_revision,
                lease_id,
                lost,
                tenure,
                client,
                keep_alive: task.disarm(),
            })
        }
        Err(error) => {
            tenure.end();
            drop(task);
            let _ = client.lease_revoke(lease_id).await;
            Err(error)
        }
    }
}

/// The current leader's value (its advertised URL), if anyone leads under `prefix`.
pub async fn current_leader(
    client: &Client,
    prefix: &str,
) -> Result<Option<String>, ElectionError> {
    let mut client = client.clone();
    let response = client.get(leader_key(prefix), None).await?;
    Ok(response
        .kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
}

/// Tries to create the key until it succeeds; returns its `create_revision`.
async fn contend(
    client: &mut Client,
    key: &str,
    value: &str,
    lease_id: i64,
    lost: &watch::Receiver<bool>,
) -> Result<i64, ElectionError> {
    loop {
        if *lost.borrow() {
            return Err(ElectionError::LeaseLost);
        }
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease_id)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let response = match client.txn(txn).await {
            Ok(response) => response,
            Err(error) if transient(&error) => {
                tracing::debug!(%error, "election request failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        let revision = response.header().map_or(0, |h| h.revision());
        if response.succeeded() {
            return Ok(revision);
        }
        let holder = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().cloned(),
            _ => None,
        });
        if let Some(kv) = &holder
            && kv.lease() == lease_id
        {
            // An earlier attempt of ours created it (its answer was lost).
            return Ok(kv.create_revision());
        }
        wait_for_delete(client, key, revision + 1).await;
    }
}

/// Returns when `key` is deleted at or after `revision`, the watch ends, or a second passes.
async fn wait_for_delete(client: &mut Client, key: &str, revision: i64) {
    let watch = async {
        let options = WatchOptions::new().with_start_revision(revision);
        let Ok(mut stream) = client.watch(key, Some(options)).await else {
            return;
        };
        while let Ok(Some(response)) = stream.message().await {
            if response.canceled()
                || response
                    .events()
                    .iter()
                    .any(|event| event.event_type() == EventType::Delete)
            {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), watch).await;
}

struct KeepAlive {
    client: Client,
    lease_id: i64,
    ttl: Duration,
    key: String,
    /// The key's `create_revision` once the campaign is won; 0 before.
    won: watch::Receiver<i64>,
    lost: watch::Sender<bool>,
    tenure: Tenure,
}

/// Renews the lease every third of its TTL, extending the tenure with each answered renewal;
/// then ends the tenure, flips `lost` and revokes the lease (best effort) — when renewing has
/// failed for two thirds of the TTL, etcd says the lease is gone, the won key is no longer this
/// leadership's, or the tenure lapsed. The last is what a process paused past its TTL meets
/// first on resuming, wherever in its loop the renewing was paused.
async fn keep_alive(mut task: KeepAlive) {
    let tenure = task.tenure.clone();
    tokio::select! {
        () = renew_until_lost(&mut task) => {}
        () = tenure.lapsed() => tracing::warn!(
            lease = task.lease_id,
            "election lease not confirmed alive in time (was this process paused?)"
        ),
    }
    task.tenure.end();
    let _ = task.lost.send(true);
    let _ = task.client.lease_revoke(task.lease_id).await;
}

/// The renewal loop of [`keep_alive`]; returns when the lease is lost.
async fn renew_until_lost(task: &mut KeepAlive) {
    let interval = (task.ttl / 3).max(Duration::from_millis(100));
    // The lease was granted just before this task started: that counts as a renewal.
    let mut renewed = Instant::now();
    let mut stream = None;
    loop {
        let sent = Instant::now();
        let sent_at = boot_clock();
        match tokio::time::timeout(interval, renew(task, &mut stream)).await {
            Ok(Ok(true)) => {
                renewed = sent;
                task.tenure.renewed(sent_at);
            }
            Ok(Ok(false)) => {
                tracing::warn!(lease = task.lease_id, "election lease expired");
                return;
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, lease = task.lease_id, "election lease renewal failed");
                stream = None;
            }
            Err(_) => stream = None,
        }
        // Give up with a third of the TTL to spare: etcd expires the lease at the earliest one
        // TTL after our last renewal reached it, and the leader must have stopped serving
        // (its in-memory renewals included) before a successor can be elected.
        if renewed.elapsed() >= task.ttl * 2 / 3 {
            tracing::warn!(
                lease = task.lease_id,
                "election lease not renewed for two thirds of its TTL"
            );
            return;
        }
        let won = *task.won.borrow();
        if won != 0 {
            if let Ok(response) = task.client.get(task.key.clone(), None).await {
                let now = response.kvs().first().map(|kv| kv.create_revision());
                if now != Some(won) {
                    tracing::warn!(key = %task.key, "the election key is no longer ours");
                    return;
                }
            }
        }
        let pause = if renewed == sent {
            interval
        } else {
            Duration::from_millis(100)
        };
        tokio::time::sleep(pause).await;
    }
}

/// One renewal; `Ok(false)` when etcd says the lease no longer exists.
async fn renew(
    task: &mut KeepAlive,
    stream: &mut Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)>,
) -> Result<bool, etcd_client::Error> {
    match stream {
        None => match task.client.lease_keep_alive(task.lease_id).await {
            // Opening the stream sends one renewal and reads its answer.
            Ok(opened) => {
                *stream = Some(opened);
                Ok(true)
            }
            Err(etcd_client::Error::LeaseKeepAliveError(message))
                if message.contains("not found") =>
            {
                Ok(false)
            }
            Err(error) => Err(error),
        },
        Some((keeper, responses)) => {
            keeper.keep_alive().await?;
            match responses.message().await? {
                Some(response) => Ok(response.ttl() > 0),
                None => Err(etcd_client::Error::LeaseKeepAliveError(
                    "keep-alive stream closed".to_owned(),
                )),
            }
        }
    }
}
