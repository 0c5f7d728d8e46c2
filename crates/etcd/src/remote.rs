//! The async side: etcd requests with retries, and the windowed walks over the audit log.
//!
//! Everything here runs inside the store's own runtime (see [`crate::EtcdStore`]); nothing is
//! shared with the caller's runtime.

use std::future::Future;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions, GetResponse, KvClient};
use locksmith_store::StoreError;

use crate::keys::{Keys, parse_id, prefix_end, range_end};
use crate::tls::EtcdTls;

/// Records per range request when walking the audit log or loading leases and holds: about
/// half a megabyte of JSON, far below gRPC's 4 MiB message cap.
pub(crate) const PAGE: u64 = 1_000;

/// Keys per range request when scanning a domain's records, at most: their values are the
/// domain's, up to 16 MiB each, so a page too large for one response is asked again smaller
/// (see [`Remote::records`]).
pub(crate) const RECORD_PAGE: u64 = 256;

/// The client options every connection of this crate uses, with TLS for `https://`
/// `endpoints` (see [`EtcdTls`]); the error says why the TLS settings do not fit.
pub(crate) fn connect_options(
    request_timeout: Duration,
    endpoints: &[String],
    tls: Option<&EtcdTls>,
) -> Result<ConnectOptions, String> {
    let options = ConnectOptions::new()
        .with_timeout(request_timeout)
        .with_connect_timeout(request_timeout)
        // A member cut off from its cluster answers at once instead of hanging, and the
        // retry goes to another member.
        .with_require_leader(true)
        .with_keep_alive(Duration::from_secs(10), request_timeout);
    Ok(match EtcdTls::options_for(tls, endpoints)? {
        Some(tls) => options.with_tls(tls),
        None => options,
    })
}

/// Whether a failed request may simply be sent again: the member was unreachable, had no
/// leader, timed out, was overloaded, or the connection broke mid-request (`Unknown`,
/// `Internal`: an HTTP/2 stream reset). Rejections (too many operations, request too large,
/// no space, permission denied, …) are final. Every request this crate retries is safe to
/// resend (see `store.rs`), so a wrong guess here costs time, never correctness.
pub(crate) fn transient(error: &etcd_client::Error) -> bool {
    use tonic::Code;
    match error {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal => true,
            Code::ResourceExhausted => status.message().contains("too many requests"),
            _ => false,
        },
        _ => false,
    }
}

/// Whether a request failed for its size or its response's: larger than the client decodes
/// (`OutOfRange`), than gRPC takes (`ResourceExhausted`, "larger than max"), or than etcd
/// takes in one request (`InvalidArgument`, "request is too large"). Final, never retried:
/// nothing was read or written.
pub(crate) fn too_large(error: &etcd_client::Error) -> bool {
    use tonic::Code;
    let etcd_client::Error::GRpcStatus(status) = error else {
        return false;
    };
    let message = status.message();
    match status.code() {
        Code::OutOfRange => true,
        Code::ResourceExhausted => message.contains("larger than max"),
        Code::InvalidArgument => message.contains("request is too large"),
        _ => false,
    }
}

/// An etcd failure as a store error.
pub(crate) fn io(context: &str, error: etcd_client::Error) -> StoreError {
    StoreError::Io(format!("etcd {context}: {error}"))
}

/// Runs `op` until it succeeds, fails for good, or `deadline` passes, backing off between
/// tries. Only for requests that are safe to repeat (reads, and commits guarded by their
/// compare; see `store.rs`).
pub(crate) async fn retry<T, F, Fut>(
    deadline: Instant,
    what: &str,
    mut op: F,
) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let mut backoff = Duration::from_millis(25);
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(error) if transient(&error) && Instant::now() + backoff < deadline => {
                tracing::debug!(%error, what, "etcd request failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(800));
            }
            Err(error) => return Err(error),
        }
    }
}

/// A connection and the key layout: what the async code needs, without the runtime.
#[derive(Clone)]
pub(crate) struct Remote {
    pub(crate) client: Client,
    pub(crate) keys: Keys,
    pub(crate) retry_for: Duration,
}

/// How to read a range.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Read {
    /// The revision to read at; 0 for the newest.
    pub(crate) revision: i64,
    /// At most this many keys (the lowest ones); 0 for all.
    pub(crate) limit: u64,
    pub(crate) keys_only: bool,
    pub(crate) count_only: bool,
}

impl Remote {
    pub(crate) fn kv(&self) -> KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(64 * 1024 * 1024)
    }

    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.retry_for
    }

    /// Reads the keys in `[start, end)` (or only `start` if `end` is empty), in ascending
    /// order, retrying transient failures.
    pub(crate) async fn range(
        &self,
        start: &[u8],
        end: &[u8],
        read: Read,
    ) -> Result<GetResponse, StoreError> {
        self.range_raw(start, end, read)
            .await
            .map_err(|e| io(&format!("read of {}", String::from_utf8_lossy(start)), e))
    }

    /// [`range`](Self::range), with etcd's own error.
    async fn range_raw(
        &self,
        start: &[u8],
        end: &[u8],
        read: Read,
    ) -> Result<GetResponse, etcd_client::Error> {
        let kv = self.kv();
        let mut options = GetOptions::new()
            .with_revision(read.revision)
            .with_limit(i64::try_from(read.limit).unwrap_or(i64::MAX));
        if !end.is_empty() {
            options = options.with_range(end.to_vec());
        }
        if read.keys_only {
            options = options.with_keys_only();
        }
        if read.count_only {
            options = options.with_count_only();
        }
        retry(self.deadline(), "range", || {
            let mut kv = kv.clone();
            let options = options.clone();
            async move { kv.get(start.to_vec(), Some(options)).await }
        })
        .await
    }

    /// The first `limit` records of `space` whose keys start with `prefix` and sort after
    /// `after`, ascending, read at one revision (see `Store::records`).
    ///
    /// In pages of at most [`RECORD_PAGE`] keys — fewer when a page is too large for one
    /// response (values are up to 16 MiB; a response, at most 64 MiB): a page refused for its
    /// size is asked again at a quarter of the keys, down to one.
    pub(crate) async fn records(
        &self,
        space: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let dir = self.keys.records_dir(space);
        let mut start = format!("{dir}{prefix}").into_bytes();
        let end = prefix_end(&start);
        if let Some(after) = after {
            // The least key above `after` is `after` followed by a NUL.
            let past = format!("{dir}{after}\0").into_bytes();
            start = start.max(past);
        }
        let mut found = Vec::new();
        let mut page = RECORD_PAGE;
        let mut revision = 0;
        while found.len() < limit {
            let want = page.min(u64::try_from(limit - found.len()).unwrap_or(u64::MAX));
            let read = Read {
                revision,
                limit: want,
                ..Read::default()
            };
            let response = match self.range_raw(&start, &end, read).await {
                Ok(response) => response,
                Err(error) if page > 1 && too_large(&error) => {
                    page = (page / 4).max(1);
                    continue;
                }
                Err(error) => return Err(io(&format!("scan of records/{space}/{prefix}"), error)),
            };
            if revision == 0 {
                revision = header_revision(&response)?;
            }
            for kv in response.kvs() {
                let key = kv
                    .key()
                    .strip_prefix(dir.as_bytes())
                    .and_then(|key| std::str::from_utf8(key).ok())
                    .ok_or_else(|| unexpected_key(kv.key()))?;
                found.push((key.to_owned(), kv.value().to_vec()));
            }
            match response.kvs().last() {
                Some(last) if response.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok(found)
    }

    /// Reads one key; `None` if absent.
    pub(crate) async fn get(
        &self,
        key: &str,
        revision: i64,
    ) -> Result<(Option<etcd_client::KeyValue>, i64), StoreError> {
        let response = self
            .range(
                key.as_bytes(),
                &[],
                Read {
                    revision,
                    ..Read::default()
                },
            )
            .await?;
        let revision = header_revision(&response)?;
        Ok((response.kvs().first().cloned(), revision))
    }

    /// Calls `visit` with every key-value under `dir`, in ascending key order, in pages, all
    /// at `revision` (which must be set, so that the pages form one snapshot).
    pub(crate) async fn scan_dir(
        &self,
        dir: &str,
        revision: i64,
        keys_only: bool,
        mut visit: impl FnMut(&etcd_client::KeyValue) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let end = range_end(dir).into_bytes();
        let mut start = dir.as_bytes().to_vec();
        loop {
            let response = self
                .range(
                    &start,
                    &end,
                    Read {
                        revision,
                        limit: PAGE,
                        keys_only,
                        count_only: false,
                    },
                )
                .await?;
            for kv in response.kvs() {
                visit(kv)?;
            }
            match response.kvs().last() {
                Some(last) if response.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok(()),
            }
        }
    }

    /// Walks the stored audit records from the newest down, calling `visit(seq, json)` until
    /// it returns true or the walk reaches `floor`.
    ///
    /// Why windows of seqs and not a descending range: etcd 3.4 serves any sorted range
    /// request by reading the *whole* range and sorting it, so "the newest 10 of a million"
    /// would read a million records. An ascending range over a window of seqs reads only that
    /// window. Seqs are dense in practice (the lock table numbers records one by one; retention
    /// deletes the oldest), so a window of `span` seqs holds about `span` records; a window
    /// that holds more than [`PAGE`] is shrunk, a sparse one is widened.
    ///
    /// `top` is the highest seq to expect (the first window is open upwards anyway, so a
    /// higher record is still seen) and `low` the lowest stored seq (below it, the last window
    /// reaches down to `floor` in one request). All windows read at one revision.
    pub(crate) async fn walk_audit_down(
        &self,
        bounds: Bounds,
        mut visit: impl FnMut(u64, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let Bounds {
            floor,
            low,
            top,
            first_span,
        } = bounds;
        let dir = self.keys.audit_dir();
        let mut top = top.max(floor);
        let mut end = range_end(&dir).into_bytes();
        let mut span = first_span.clamp(1, PAGE);
        let mut stop_at = floor.max(low);
        let mut revision = 0;
        loop {
            let natural = top.saturating_sub(span - 1);
            let start = if natural <= stop_at { floor } else { natural };
            let response = self
                .range(
                    self.keys.audit(start).as_bytes(),
                    &end,
                    Read {
                        revision,
                        limit: PAGE,
                        ..Read::default()
                    },
                )
                .await?;
            if revision == 0 {
                revision = header_revision(&response)?;
            }
            if response.more() {
                // More than a page in this window: narrow it to about 3/4 of a page and try
                // again. If the window reached down to `floor` because of `low`, `low` was
                // wrong; stop trusting it.
                let width = u128::from(top - start) + 1;
                if width == 1 {
                    return Err(StoreError::Corrupt(format!(
                        "more than {PAGE} audit records above seq {top}, the audit high-water"
                    )));
                }
                let count = u128::try_from(response.count()).unwrap_or(1).max(1);
                let narrower = (width * u128::from(PAGE) * 3 / 4 / count).clamp(1, width - 1);
                span = u64::try_from(narrower).unwrap_or(1);
                stop_at = floor;
                continue;
            }
            for kv in response.kvs().iter().rev() {
                let seq = parse_id(&dir, kv.key()).ok_or_else(|| unexpected_key(kv.key()))?;
                if visit(seq, kv.value())? {
                    return Ok(());
                }
            }
            if start <= floor {
                return Ok(());
            }
            end = self.keys.audit(start).into_bytes();
            top = start - 1;
            if (response.kvs().len() as u64) < PAGE / 4 {
                span = span.saturating_mul(2);
            } else {
                span = span.min(PAGE);
            }
        }
    }

    /// The `want` lowest stored audit seqs at or above `low` (fewer if fewer are stored),
    /// ascending, read in windows that start small and double; the window that passes `top`
    /// (the highest seq expected) is open upwards and ends the walk.
    pub(crate) async fn lowest_audit_seqs(
        &self,
        low: u64,
        top: u64,
        want: u64,
    ) -> Result<Vec<u64>, StoreError> {
        let dir = self.keys.audit_dir();
        let mut found = Vec::new();
        let mut bottom = low;
        let mut span = want.max(16);
        let mut revision = 0;
        loop {
            let window_end = bottom.checked_add(span).filter(|&end| end <= top);
            let end = window_end.map_or_else(|| range_end(&dir), |seq| self.keys.audit(seq));
            let response = self
                .range(
                    self.keys.audit(bottom).as_bytes(),
                    end.as_bytes(),
                    Read {
                        revision,
                        limit: want - found.len() as u64,
                        keys_only: true,
                        count_only: false,
                    },
                )
                .await?;
            if revision == 0 {
                revision = header_revision(&response)?;
            }
            for kv in response.kvs() {
                found.push(parse_id(&dir, kv.key()).ok_or_else(|| unexpected_key(kv.key()))?);
            }
            match window_end {
                Some(next) if (found.len() as u64) < want => {
                    bottom = next;
                    span = span.saturating_mul(2);
                }
                _ => return Ok(found),
            }
        }
    }
}

/// Where [`Remote::walk_audit_down`] walks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// The lowest seq a match may have.
    pub(crate) floor: u64,
    /// No record is stored below this (a hint; `u64::MAX` when none is stored).
    pub(crate) low: u64,
    /// The highest seq expected.
    pub(crate) top: u64,
    /// The first window's width in seqs.
    pub(crate) first_span: u64,
}

pub(crate) fn header_revision(response: &GetResponse) -> Result<i64, StoreError> {
    response
        .header()
        .map(etcd_client::ResponseHeader::revision)
        .ok_or_else(|| StoreError::Io("etcd answered without a response header".to_owned()))
}

pub(crate) fn unexpected_key(key: &[u8]) -> StoreError {
    StoreError::Corrupt(format!(
        "unexpected key {} in the store's keyspace",
        String::from_utf8_lossy(key)
    ))
}
