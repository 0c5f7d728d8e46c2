//! TLS for both transports: which servers a client trusts, and the certificate it shows when a
//! server asks for one (mutual TLS). One [`rustls::ClientConfig`] made here serves the HTTP
//! client ([`crate::Client`]) and the wire protocol's ([`crate::WireClient`]) alike, so the two
//! trust the same servers.
//!
//! - **Trust.** With [`TlsOptions::ca_file`], exactly the CA certificates in that file (like
//!   curl's `--cacert`: a Locksmith server's certificate is usually signed by a private CA, and
//!   trusting the public ones too would let any of them vouch for it); without it, the
//!   system's roots.
//! - **Client certificate.** [`TlsOptions::cert`] and [`TlsOptions::key`], both or neither:
//!   a server run with `--tls-client-ca` refuses a client without one, and binds the
//!   certificate's name as the node the client may act for.
//!
//! The crypto is rustls on the ring provider, named explicitly, so that no process-wide
//! default provider has to be installed (or can be picked wrongly).
//!
//! What it is not: the server's side (`locksmith_server::tls`), which reads its certificate
//! and key with [`read_certificates`] and [`read_private_key`] from here.

use std::error::Error as StdError;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, CertificateError, RootCertStore};

/// How a client speaks TLS to `https://` servers and to a TLS wire port. The default trusts
/// the system's roots and shows no certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the CA certificate(s) to trust instead of the system's roots (`--ca-file`).
    pub ca_file: Option<PathBuf>,
    /// PEM file of this client's certificate chain, for mutual TLS (`--cert`).
    pub cert: Option<PathBuf>,
    /// PEM file of that certificate's private key (`--key`).
    pub key: Option<PathBuf>,
}

/// Why TLS settings cannot be used. Each names the file and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsSetupError {
    /// A file cannot be read, or holds no PEM item of the kind expected.
    #[error("{what} {path}: {reason}")]
    File {
        /// Which setting (`--ca-file`, `--cert`, `--key`, `--tls-cert`, …).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A client certificate without its key, or a key without its certificate.
    #[error("--cert and --key go together: give both (mutual TLS) or neither")]
    CertWithoutKey,
    /// rustls refused the material (a key that does not match the certificate, …).
    #[error("{0}")]
    Refused(String),
}

/// The certificates in the PEM file `path` (at least one), for the setting `what`.
pub fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let file_error = |reason: String| TlsSetupError::File {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(pem_reason(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(pem_reason(&e)))?;
    if certs.is_empty() {
        return Err(file_error(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    Ok(certs)
}

/// The private key in the PEM file `path` (PKCS#8, PKCS#1 or SEC1), for the setting `what`.
pub fn read_private_key(
    what: &'static str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsSetupError::File {
        what,
        path: path.to_path_buf(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "holds no PEM private key (-----BEGIN PRIVATE KEY-----)".to_owned()
            }
            e => pem_reason(&e),
        },
    })
}

fn pem_reason(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        e => format!("not valid PEM: {e}"),
    }
}

/// The crypto every TLS config of Locksmith uses: rustls's ring provider — the one reqwest and
/// the etcd client (tonic) are built with here. rustls 0.23.48 deprecates it for lacking
/// post-quantum key exchange; aws-lc-rs has that, at the cost of a large C build, and two
/// providers in one process would leave rustls without a default for the libraries that use
/// it. Moving is one line here once the others move.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsOptions {
    /// The rustls client configuration these options describe: the roots to trust and the
    /// certificate to show. Reads the files now.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                for cert in read_certificates("--ca-file", path)? {
                    roots.add(cert).map_err(|e| TlsSetupError::File {
                        what: "--ca-file",
                        path: path.clone(),
                        reason: format!("not a usable CA certificate: {e}"),
                    })?;
                }
            }
            None => {
                // Unreadable entries of the system store are skipped: the ones that load
                // still verify, and a server none of them signed fails with "unknown issuer".
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::Refused(e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(
                    read_certificates("--cert", cert)?,
                    read_private_key("--key", key)?,
                )
                .map_err(|e| {
                    TlsSetupError::Refused(format!(
                        "--cert {} with --key {}: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?,
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(TlsSetupError::CertWithoutKey),
        };
        Ok(Arc::new(config))
    }
}

/// The name a TLS client checks the server's certificate against, from a `host:port` address
/// (`127.0.0.1:7401`, `[::1]:7401`, `locks.example:7401`): an IP address or a DNS name.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host:?} is not a host name or IP address: {e}"))
}

/// If `error` (or one of its causes) is a TLS failure, what it means and what to do — for a
/// [`ClientError::Tls`](crate::ClientError::Tls); `None` for any other failure.
pub(crate) fn tls_failure(error: &(dyn StdError + 'static)) -> Option<String> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(tls) = as_rustls(e) {
            return Some(explain(tls));
        }
        cause = e.source();
    }
    None
}

/// `e` as a rustls error. An `io::Error` wrapping one (as tokio-rustls makes them, and
/// hyper-rustls wraps again) does not list it among its sources, so it is looked into, through
/// every layer of `io::Error`.
fn as_rustls<'a>(mut e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    loop {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let inner = e.downcast_ref::<io::Error>()?.get_ref()?;
        e = inner;
    }
}

/// A rustls failure as a sentence with its next step.
fn explain(e: &rustls::Error) -> String {
    use rustls::Error as E;
    let what = match e {
        E::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the server's certificate is signed by a CA this client does not trust (unknown \
             issuer) — pass --ca-file (or set LOCKSMITH_CA_FILE) with the CA certificate that \
             signed it"
        }
        E::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => {
            "the server's certificate does not name the host in the address — connect by a \
             name (or IP address) its certificate lists"
        }
        E::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => {
            "the server's certificate is outside its validity period — renew it (or check \
             this machine's clock)"
        }
        E::AlertReceived(
            AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::AccessDenied,
        ) => {
            "the server requires a client certificate signed by its --tls-client-ca and \
             refused this one (or got none) — pass --cert and --key (or set LOCKSMITH_CERT and \
             LOCKSMITH_KEY)"
        }
        E::InvalidMessage(_) => {
            "the server did not answer in TLS — is it started with --tls-cert? If not, use \
             http:// (or a plain wire connection)"
        }
        _ => "the TLS handshake failed",
    };
    format!("{what} ({e})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_name_is_the_host_of_the_address() {
        let name = |a: &str| server_name(a).map(|n| n.to_str().into_owned());
        assert_eq!(name("127.0.0.1:7401").as_deref(), Ok("127.0.0.1"));
        assert_eq!(name("[::1]:7401").as_deref(), Ok("::1"));
        assert_eq!(name("locks.example:7401").as_deref(), Ok("locks.example"));
        assert_eq!(name("locks.example").as_deref(), Ok("locks.example"));
        assert!(server_name("bad name:1").is_err());
    }

    #[test]
    fn a_tls_failure_inside_an_io_error_is_explained() {
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = io::Error::new(io::ErrorKind::InvalidData, unknown);
        let why = tls_failure(&io).expect("a TLS failure");
        assert!(why.contains("--ca-file"), "{why}");
        let twice = io::Error::other(io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        ));
        assert!(tls_failure(&twice).is_some_and(|why| why.contains("--ca-file")));
        let plain = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(tls_failure(&plain), None);
    }

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let options = TlsOptions {
            cert: Some("/nonexistent/cert.pem".into()),
            ..TlsOptions::default()
        };
        assert_eq!(
            options.client_config().err(),
            Some(TlsSetupError::CertWithoutKey)
        );
        let missing = TlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        let err = missing
            .client_config()
            .expect_err("no such file")
            .to_string();
        assert!(err.starts_with("--ca-file /nonexistent/ca.pem: "), "{err}");
    }
}
