//! TLS for both listeners (`--tls-cert`, `--tls-key`), and mutual TLS (`--tls-client-ca`)
//! whose client certificate names the node a connection may act for.
//!
//! - **Both listeners or neither.** With a certificate, the HTTP and the wire-protocol
//!   listeners speak only TLS; there is no plain port beside them to forget about.
//! - **The handshake is the connection's first request.** It runs on the connection's own task
//!   (after the connection cap admitted it), within the header timeout, and stops with the
//!   server. A failed one — an untrusted or missing client certificate, a client that gave up
//!   — closes the connection and is logged at most once every 10 s per listener, with a count
//!   of the rest, like failed accepts: a scanner cannot flood the log.
//! - **A plain client gets an answer, not a hang.** A connection whose first byte is not a TLS
//!   handshake record is sent the listener's plaintext refusal (HTTP: a `400` whose JSON says
//!   to use `https://`; wire: the preamble and an error frame) and closed.
//! - **Mutual TLS binds the node.** A client certificate signed by `--tls-client-ca` is
//!   required; its name — the first DNS subject alternative name, else the subject's common
//!   name — is the node the connection acts for ([`PeerIdentity`]). Every request of the
//!   connection carries it: HTTP requests in their extensions (the route handlers take it as
//!   an extractor), wire requests in the connection's state — and authentication binds the
//!   request's principal to it (`App::authenticate`), so the principal's checks refuse a
//!   request that acts for another node (403 `forbidden`): acquiring with another
//!   `owner.node`, reporting liveness for another node.
//!
//! What it is not: the client's side (`locksmith_client::tls`), from which the PEM reading is
//! shared, or authentication by token.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use locksmith_client::tls::{TlsSetupError, provider, read_certificates, read_private_key};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::accept::{LOG_EVERY, linger, stopped};

/// The TLS settings of a server: its certificate and key, and — for mutual TLS — the CA that
/// signs its clients' certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file of the server's certificate chain (`--tls-cert`), leaf first.
    pub cert: PathBuf,
    /// PEM file of its private key (`--tls-key`).
    pub key: PathBuf,
    /// PEM file of the CA certificate(s) that sign client certificates (`--tls-client-ca`):
    /// when set, every client must show one, and its name binds the node it acts for.
    pub client_ca: Option<PathBuf>,
}

/// Who is at the other end of a connection, as its TLS session proves it.
///
/// Present on every request of a TLS connection (in an HTTP request's extensions; in a wire
/// connection's state); a request over plain TCP, or from in-process, has the default: no
/// node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The node the client certificate names (mutual TLS): the only node this connection may
    /// act for. `None`: no client certificate, or one that names nothing — bound to no node.
    pub node: Option<String>,
}

/// A route handler's `PeerIdentity`: the connection's (see [`crate::http`]'s listener); the
/// default when the request did not come over TLS.
impl<S: Send + Sync> FromRequestParts<S> for PeerIdentity {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<PeerIdentity>()
            .cloned()
            .unwrap_or_default())
    }
}

/// A server's TLS, loaded and checked: what both listeners hand their connections to.
#[derive(Clone)]
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    mutual: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the certificate, the key and the client CA of `config`; the error names the file
    /// and what is wrong with it (or that the key is not the certificate's).
    pub(crate) fn load(config: &TlsConfig) -> Result<Self, TlsSetupError> {
        let chain = read_certificates("--tls-cert", &config.cert)?;
        let key = read_private_key("--tls-key", &config.key)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::Refused(e.to_string()))?;
        let builder = match &config.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certificates("--tls-client-ca", ca)? {
                    roots.add(cert).map_err(|e| TlsSetupError::File {
                        what: "--tls-client-ca",
                        path: ca.clone(),
                        reason: format!("not a usable CA certificate: {e}"),
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| TlsSetupError::File {
                            what: "--tls-client-ca",
                            path: ca.clone(),
                            reason: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let server = builder.with_single_cert(chain, key).map_err(|e| {
            TlsSetupError::Refused(format!(
                "--tls-cert {} with --tls-key {}: {e}",
                config.cert.display(),
                config.key.display()
            ))
        })?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            mutual: config.client_ca.is_some(),
        })
    }

    /// The handshakes of the listener `listener` (`http`, `wire`), which answers a plain
    /// client with `plain_answer` before it closes the connection.
    pub(crate) fn handshakes(&self, listener: &'static str, plain_answer: Vec<u8>) -> Handshakes {
        Handshakes {
            tls: self.clone(),
            listener,
            plain_answer: plain_answer.into(),
            failures: Arc::new(Mutex::new(Failures::default())),
        }
    }
}

/// One listener's TLS handshakes. Cheap to clone: every connection's task has one.
#[derive(Debug, Clone)]
pub(crate) struct Handshakes {
    tls: Tls,
    listener: &'static str,
    plain_answer: Arc<[u8]>,
    failures: Arc<Mutex<Failures>>,
}

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

impl Handshakes {
    /// Runs the TLS handshake of `tcp`, within `within` and until `stop`: the session and who
    /// the peer is, or `None` once the connection is closed (a plain client answered, a failure
    /// logged, a timeout).
    pub(crate) async fn accept(
        &self,
        tcp: TcpStream,
        within: Option<Duration>,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<(TlsStream<TcpStream>, PeerIdentity)> {
        tokio::select! {
            done = self.handshake(tcp, within) => done,
            () = stopped(stop) => None,
        }
    }

    /// Sends `answer` inside a TLS session and closes it: how a TLS listener refuses a
    /// connection over its cap. The handshake, the answer and the client's goodbye take at
    /// most `within` together.
    pub(crate) async fn refuse(&self, tcp: TcpStream, answer: &[u8], within: Duration) {
        let _ = tokio::time::timeout(within, async {
            let Some((mut session, _)) = self.handshake(tcp, None).await else {
                return;
            };
            if session.write_all(answer).await.is_ok() && session.shutdown().await.is_ok() {
                let mut sink = [0u8; 4096];
                while matches!(session.read(&mut sink).await, Ok(n) if n > 0) {}
            }
        })
        .await;
    }

    /// The handshake of [`Handshakes::accept`], without the stop signal.
    async fn handshake(
        &self,
        tcp: TcpStream,
        within: Option<Duration>,
    ) -> Option<(TlsStream<TcpStream>, PeerIdentity)> {
        let peer = tcp.peer_addr().ok();
        let handshake = async {
            let mut first = [0u8; 1];
            if tcp.peek(&mut first).await? == 0 {
                return Ok(None);
            }
            if first[0] != TLS_HANDSHAKE_RECORD {
                return Ok(Some(Err(tcp)));
            }
            self.tls.acceptor.accept(tcp).await.map(|s| Some(Ok(s)))
        };
        let done = match within {
            Some(within) => tokio::time::timeout(within, handshake).await.ok(),
            None => Some(handshake.await),
        };
        match done {
            // Timed out, or closed before a byte: like a request head never sent.
            None => {
                tracing::debug!(listener = self.listener, ?peer, "TLS handshake timed out");
                None
            }
            Some(Ok(None)) => None,
            Some(Ok(Some(Err(plain)))) => {
                self.log(
                    peer,
                    &"the client does not speak TLS (plaintext on a TLS listener)",
                );
                let _ = plain.try_write(&self.plain_answer);
                linger(plain).await;
                None
            }
            Some(Ok(Some(Ok(session)))) => {
                let identity = if self.tls.mutual {
                    let node = session
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(|leaf| certificate_node(leaf));
                    PeerIdentity { node }
                } else {
                    PeerIdentity::default()
                };
                Some((session, identity))
            }
            Some(Err(error)) => {
                self.log(peer, &error);
                None
            }
        }
    }

    /// Logs a failed handshake, at most once per [`LOG_EVERY`] for this listener.
    fn log(&self, peer: Option<SocketAddr>, error: &dyn std::fmt::Display) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        failures.unlogged += 1;
        if failures
            .logged_at
            .is_none_or(|at| at.elapsed() >= LOG_EVERY)
        {
            tracing::warn!(
                listener = self.listener,
                peer = ?peer,
                %error,
                failures = failures.unlogged,
                "TLS handshake failed; the connection was closed (this line is repeated at \
                 most every {} s) — check the client's --ca-file{}",
                LOG_EVERY.as_secs(),
                if self.tls.mutual {
                    " and that its --cert is signed by this server's --tls-client-ca"
                } else {
                    ""
                }
            );
            failures.logged_at = Some(Instant::now());
            failures.unlogged = 0;
        }
    }
}

/// The failed handshakes of one listener, for rate-limited logging.
#[derive(Debug, Default)]
struct Failures {
    /// When the last line was logged.
    logged_at: Option<Instant>,
    /// Failures since the last line.
    unlogged: u64,
}

/// The node a client certificate names: its first DNS subject alternative name, else its
/// subject's common name; `None` if it names neither (or cannot be read — rustls has
/// verified it, so that would be a certificate this parser does not understand).
pub(crate) fn certificate_node(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let dns = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                _ => None,
            })
        });
    dns.or_else(|| {
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
    })
    .filter(|node| !node.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_der(params: rcgen::CertificateParams) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("sign").der().to_vec()
    }

    #[test]
    fn a_certificate_names_its_first_dns_name_else_its_common_name() {
        let mut both = rcgen::CertificateParams::new(vec![
            "127.0.0.1".to_owned(),
            "node-a".to_owned(),
            "node-b".to_owned(),
        ])
        .expect("params");
        both.distinguished_name
            .push(rcgen::DnType::CommonName, "common");
        assert_eq!(certificate_node(&cert_der(both)).as_deref(), Some("node-a"));

        let mut cn_only = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        cn_only
            .distinguished_name
            .push(rcgen::DnType::CommonName, "node-c");
        assert_eq!(
            certificate_node(&cert_der(cn_only)).as_deref(),
            Some("node-c")
        );

        let mut nameless = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        // rcgen names a certificate "rcgen self signed cert" unless told otherwise.
        nameless.distinguished_name = rcgen::DistinguishedName::new();
        assert_eq!(certificate_node(&cert_der(nameless)), None);
        assert_eq!(certificate_node(b"not a certificate"), None);
    }
}
