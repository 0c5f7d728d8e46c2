//! Reading server-sent event streams: `GET /v1/events` (one audit record per event), an
//! agent's desired stream (`GET /v1/agents/{node}/desired`, one desired revision per event) and
//! a rollout's (`GET /v1/rollouts/{id}/events`, one view per change).

use locksmith_api::agents::DesiredRevision;
use locksmith_api::rollouts::RolloutView;
use locksmith_core::AuditRecord;
use serde::de::DeserializeOwned;

use crate::error::ClientError;

/// The events of one `text/event-stream` answer, decoded as `T` (keep-alive comments skipped).
#[derive(Debug)]
struct SseReader {
    resp: reqwest::Response,
    server: String,
    buf: String,
    /// Only events of this name (`event: NAME`) are decoded; others are skipped, so a server
    /// that adds another kind of event to the stream does not break an older client.
    only: Option<&'static str>,
}

impl SseReader {
    fn new(resp: reqwest::Response, server: String, only: Option<&'static str>) -> Self {
        Self {
            resp,
            server,
            buf: String::new(),
            only,
        }
    }

    /// The next event's data as a `T`, or `None` when the server closed the stream.
    async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ClientError> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                if let Some(only) = self.only
                    && !is_named(&event, only)
                {
                    continue;
                }
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
        Self(SseReader::new(resp, server, None))
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
        Self(SseReader::new(resp, server, None))
    }

    /// The next desired revision, or `None` when the server closed the stream (it was
    /// revoked, or the server is stopping).
    pub async fn next(&mut self) -> Result<Option<DesiredRevision>, ClientError> {
        self.0.next().await
    }
}

/// A rollout's stream (`GET /v1/rollouts/{id}/events`): its [`RolloutView`] on each change, the
/// last one when it ends (the server then closes the stream).
#[derive(Debug)]
pub struct RolloutStream(SseReader);

impl RolloutStream {
    pub(crate) fn new(resp: reqwest::Response, server: String) -> Self {
        Self(SseReader::new(resp, server, Some("rollout")))
    }

    /// The rollout as it is now, or `None` when the server closed the stream (the rollout
    /// ended, or the server is stopping).
    pub async fn next(&mut self) -> Result<Option<RolloutView>, ClientError> {
        self.0.next().await
    }
}

/// Whether an event (its lines, up to the blank line) is named `name`: `event: NAME`. An
/// event without an `event:` line is a `message`, as browsers read it.
fn is_named(event: &str, name: &str) -> bool {
    let named = event
        .lines()
        .find_map(|l| l.strip_prefix("event:"))
        .map_or("message", str::trim);
    named == name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_named_by_its_event_line_and_message_without_one() {
        assert!(is_named("event: rollout\ndata: {}\n\n", "rollout"));
        assert!(is_named("event:rollout\ndata: {}\n\n", "rollout"));
        assert!(!is_named("event: audit\ndata: {}\n\n", "rollout"));
        assert!(!is_named("data: {}\n\n", "rollout"));
        assert!(is_named("data: {}\n\n", "message"));
    }
}
