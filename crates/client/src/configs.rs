//! The config store's calls (`/v1/configs`): one method per route, and the content codec.
//!
//! A config's name may contain `/`; in a URL it is one path segment with each `/` written
//! `%2F` ([`name_segment`]), so `fleet/aim.conf` and `fleet` + `aim.conf` never meet. Every
//! method checks the name first, by the server's own rule ([`locksmith_config::validate_name`]):
//! a URL cannot carry some refused names at all (`..` is a dot segment even escaped, so it
//! would reach another route), and a refused one needs no round trip.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use locksmith_api::configs::{
    ConfigsResponse, Content, DiffResponse, HistoryResponse, PromoteConfigRequest, RevisionView,
    RollbackConfigRequest, SchemaView, SetSchemaRequest, ValidateConfigRequest,
    ValidateConfigResponse, WriteConfigRequest,
};

use crate::client::{CALL_TIMEOUT, Client};
use crate::error::ClientError;

impl Client {
    /// Every config, by name (`GET /v1/configs`).
    pub async fn configs(&self) -> Result<ConfigsResponse, ClientError> {
        self.send(self.http.get(self.url("/v1/configs")), CALL_TIMEOUT)
            .await
    }

    /// The current revision of `name`, with its content; with `stamp`, the provenance line
    /// first (for formats with comments).
    pub async fn config(&self, name: &str, stamp: bool) -> Result<RevisionView, ClientError> {
        let url = self.config_url(name, "")?;
        self.send(self.http.get(url).query(&stamp_query(stamp)), CALL_TIMEOUT)
            .await
    }

    /// Revision `rev` of `name`, draft or not, with its content.
    pub async fn config_revision(
        &self,
        name: &str,
        rev: u64,
        stamp: bool,
    ) -> Result<RevisionView, ClientError> {
        let url = self.config_url(name, &format!("/revisions/{rev}"))?;
        self.send(self.http.get(url).query(&stamp_query(stamp)), CALL_TIMEOUT)
            .await
    }

    /// Writes a new revision (or a draft) under the lease and token `req.fence` names: it lands
    /// only if that token is the current holder's of `configs/NAME` when it commits.
    pub async fn write_config(
        &self,
        name: &str,
        req: &WriteConfigRequest,
    ) -> Result<RevisionView, ClientError> {
        let url = self.config_url(name, "")?;
        self.send(self.http.put(url).json(req), CALL_TIMEOUT).await
    }

    /// Where `name` stands and every revision's metadata, oldest first.
    pub async fn config_history(&self, name: &str) -> Result<HistoryResponse, ClientError> {
        let url = self.config_url(name, "/revisions")?;
        self.send(self.http.get(url), CALL_TIMEOUT).await
    }

    /// A unified diff from revision `from` to revision `to`.
    pub async fn config_diff(
        &self,
        name: &str,
        from: u64,
        to: u64,
    ) -> Result<DiffResponse, ClientError> {
        let url = self.config_url(name, "/diff")?;
        self.send(
            self.http.get(url).query(&[("from", from), ("to", to)]),
            CALL_TIMEOUT,
        )
        .await
    }

    /// The checks a write of `req` would run (format, schema), without writing; a refusal is
    /// the `invalid_config` error, with `parse_error` or `violations`.
    pub async fn validate_config(
        &self,
        name: &str,
        req: &ValidateConfigRequest,
    ) -> Result<ValidateConfigResponse, ClientError> {
        let url = self.config_url(name, "/validate")?;
        self.send(self.http.post(url).json(req), CALL_TIMEOUT).await
    }

    /// Makes draft `req.rev` current (a new revision), fenced like a write.
    pub async fn promote_config(
        &self,
        name: &str,
        req: &PromoteConfigRequest,
    ) -> Result<RevisionView, ClientError> {
        let url = self.config_url(name, "/promote")?;
        self.send(self.http.post(url).json(req), CALL_TIMEOUT).await
    }

    /// A new current revision with revision `req.to`'s content, fenced like a write.
    pub async fn rollback_config(
        &self,
        name: &str,
        req: &RollbackConfigRequest,
    ) -> Result<RevisionView, ClientError> {
        let url = self.config_url(name, "/rollback")?;
        self.send(self.http.post(url).json(req), CALL_TIMEOUT).await
    }

    /// The JSON Schema in force for `name`.
    pub async fn config_schema(&self, name: &str) -> Result<SchemaView, ClientError> {
        let url = self.config_url(name, "/schema")?;
        self.send(self.http.get(url), CALL_TIMEOUT).await
    }

    /// Sets the JSON Schema every later revision of `name` must pass.
    pub async fn set_config_schema(
        &self,
        name: &str,
        req: &SetSchemaRequest,
    ) -> Result<SchemaView, ClientError> {
        let url = self.config_url(name, "/schema")?;
        self.send(self.http.put(url).json(req), CALL_TIMEOUT).await
    }

    /// `/v1/configs/{name}{rest}`, the name as one escaped segment; refused for a name the
    /// server would refuse.
    fn config_url(&self, name: &str, rest: &str) -> Result<reqwest::Url, ClientError> {
        locksmith_config::validate_name(name)?;
        Ok(self.url(&format!("/v1/configs/{}{rest}", name_segment(name))))
    }
}

/// `?stamp=true`, or no query at all.
fn stamp_query(stamp: bool) -> Vec<(&'static str, &'static str)> {
    if stamp {
        vec![("stamp", "true")]
    } else {
        Vec::new()
    }
}

/// A config name as one URL path segment: every byte but `A-Za-z0-9-._~` percent-encoded (`/`
/// is `%2F`).
pub fn name_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Content for a request: text when the bytes are UTF-8, else base64 (so any bytes arrive as
/// they are, and the server — not the client — says where a parsed format's bytes are not
/// UTF-8).
pub fn content_of(bytes: Vec<u8>) -> Content {
    match String::from_utf8(bytes) {
        Ok(text) => Content {
            content: Some(text),
            content_base64: None,
        },
        Err(e) => Content {
            content: None,
            content_base64: Some(STANDARD.encode(e.as_bytes())),
        },
    }
}

/// The bytes an answer's content carries (`content`, else `content_base64` decoded; none for
/// an answer without content).
pub fn bytes_of(content: &Content, server: &str) -> Result<Vec<u8>, ClientError> {
    match (&content.content, &content.content_base64) {
        (Some(text), _) => Ok(text.clone().into_bytes()),
        (None, Some(b64)) => STANDARD.decode(b64).map_err(|e| ClientError::Decode {
            server: server.to_string(),
            reason: format!("content_base64 is not base64: {e}"),
        }),
        (None, None) => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_with_slashes_is_one_segment() {
        assert_eq!(
            name_segment("fleet/aim_lock_config.conf"),
            "fleet%2Faim_lock_config.conf"
        );
        assert_eq!(name_segment("a b?#%"), "a%20b%3F%23%25");
        assert_eq!(name_segment("..x"), "..x");
    }

    #[test]
    fn the_url_keeps_the_escaped_segment_and_refuses_names_the_server_would() {
        let client = Client::new("http://127.0.0.1:7400/base/").expect("client");
        let url = client
            .config_url("fleet/a.conf", "/revisions/3")
            .expect("valid name");
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:7400/base/v1/configs/fleet%2Fa.conf/revisions/3"
        );
        // `..` would be a dot segment even as `%2E%2E`: the URL would climb to /v1/.
        for bad in ["..", ".", "a/../b", "/etc/passwd", "", "a b"] {
            assert!(
                matches!(
                    client.config_url(bad, ""),
                    Err(ClientError::InvalidConfigName(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn content_is_text_when_utf8_and_base64_otherwise_and_round_trips() {
        let text = content_of(b"a = 1\n".to_vec());
        assert_eq!(text.content.as_deref(), Some("a = 1\n"));
        assert_eq!(text.content_base64, None);
        let binary = vec![0xff, 0x00, 0xfe, b'\n'];
        let raw = content_of(binary.clone());
        assert_eq!(raw.content, None);
        assert_eq!(raw.content_base64.as_deref(), Some("/wD+Cg=="));
        assert_eq!(bytes_of(&raw, "s").expect("decodes"), binary);
        assert_eq!(bytes_of(&text, "s").expect("text"), b"a = 1\n");
        let bad = Content {
            content: None,
            content_base64: Some("not base64!".into()),
        };
        assert!(matches!(
            bytes_of(&bad, "s"),
            Err(ClientError::Decode { .. })
        ));
    }
}
