//! Reading server-sent event streams: `GET /v1/events` (one audit record per event) and an
//! agent's desired stream (`GET /v1/agents/{node}/desired`, one desired revision per event).

use locksmith_api::agents::DesiredRevision;
use locksmith_core::AuditRecord;
use serde::de::DeserializeOwned;

use crate::error::ClientError;

/// The events of one `text/event-stream` answer, decoded as `T` (keep-alive comments skipped).
#[derive(Debug)]
struct SseReader {
    resp: reqwest::Response,
    server: String,
    buf: String,
}

impl SseReader {
    /// The next event's data as a `T`, or `None` when the server closed the stream.
    async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ClientError> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                let item =
                    serde_json::from_str(&data.join("\n")).map_err(|e| ClientError::Decode {
                        server: self.server.clone(),
                        reason: format!("bad event: {e}"),
                    })?;
                return Ok(Some(item));
            }
            let chunk = self
                .resp
                .chunk()
                .await
                .map_err(|e| ClientError::Transport {
                    server: self.server.clone(),
                    reason: e.to_string(),
                })?;
            match chunk {
                Some(bytes) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                None => return Ok(None),
            }
        }
    }
}

/// A stream of audit records from `GET /v1/events`.
#[derive(Debug)]
pub struct EventStream(SseReader);

impl EventStream {
    pub(crate) fn new(resp: reqwest::Response, server: String) -> Self {
        Self(SseReader {
            resp,
            server,
            buf: String::new(),
        })
    }

    /// The next record, or `None` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<AuditRecord>, ClientError> {
        self.0.next().await
    }
}

/// An agent's desired stream (`GET /v1/agents/{node}/desired`): one [`DesiredRevision`] per
/// registered config on connect, then one per change.
#[derive(Debug)]
pub struct DesiredStream(SseReader);

impl DesiredStream {
    pub(crate) fn new(resp: reqwest::Response, server: String) -> Self {
        Self(SseReader {
            resp,
            server,
            buf: String::new(),
        })
    }

    /// The next desired revision, or `None` when the server closed the stream (it was
    /// revoked, or the server is stopping).
    pub async fn next(&mut self) -> Result<Option<DesiredRevision>, ClientError> {
        self.0.next().await
    }
}
