//! Reading the server-sent event stream (`GET /v1/events`): one audit record per event.

use locksmith_core::AuditRecord;

use crate::error::ClientError;

/// A stream of audit records from `GET /v1/events`.
#[derive(Debug)]
pub struct EventStream {
    resp: reqwest::Response,
    server: String,
    buf: String,
}

impl EventStream {
    pub(crate) fn new(resp: reqwest::Response, server: String) -> Self {
        Self {
            resp,
            server,
            buf: String::new(),
        }
    }

    /// The next record, or `None` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<AuditRecord>, ClientError> {
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
                let record =
                    serde_json::from_str(&data.join("\n")).map_err(|e| ClientError::Decode {
                        server: self.server.clone(),
                        reason: format!("bad event: {e}"),
                    })?;
                return Ok(Some(record));
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
