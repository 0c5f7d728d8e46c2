//! TLS to etcd: `https://` endpoints, the CA that signs the members' certificates, and this
//! client's own certificate for a cluster run with `--client-cert-auth`.
//!
//! The endpoints' scheme decides: `https://` endpoints are spoken to over TLS (rustls, through
//! tonic), trusting [`EtcdTls::ca_file`] — or, without one, the system's roots; `http://`
//! endpoints in plain text, and then no TLS file may be given (it would be ignored, and a
//! cluster the operator meant to reach over TLS would be reached without). Mixing the two in
//! one list is refused for the same reason.

use std::path::{Path, PathBuf};

use etcd_client::{Certificate, Identity, TlsOptions};

/// TLS settings for etcd (`--etcd-ca-file`, `--etcd-cert`, `--etcd-key`). The default trusts
/// the system's roots and shows no certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// PEM file of the CA certificate(s) that sign etcd's member certificates (etcd's
    /// `--trusted-ca-file` side); `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM file of this client's certificate, for a cluster that requires one
    /// (`--client-cert-auth`).
    pub cert: Option<PathBuf>,
    /// PEM file of that certificate's private key.
    pub key: Option<PathBuf>,
}

impl EtcdTls {
    /// Whether any file is given.
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert.is_none() && self.key.is_none()
    }

    /// The TLS options of the etcd client for `endpoints`: `None` for `http://` ones (when no
    /// file is given); the error says what does not fit (a file that cannot be read, TLS files
    /// for plain endpoints, a certificate without its key).
    pub(crate) fn options_for(
        tls: Option<&EtcdTls>,
        endpoints: &[String],
    ) -> Result<Option<TlsOptions>, String> {
        let https = endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        let given = tls.filter(|t| !t.is_empty());
        if https == 0 {
            return match given {
                Some(_) => Err(format!(
                    "TLS files (--etcd-ca-file, --etcd-cert, --etcd-key) are given but the etcd \
                     endpoints {} are not https:// — use https:// endpoints, or drop the files",
                    endpoints.join(",")
                )),
                None => Ok(None),
            };
        }
        if https != endpoints.len() {
            return Err(format!(
                "the etcd endpoints {} mix https:// and plain ones: give every member's \
                 https:// URL",
                endpoints.join(",")
            ));
        }
        let default = EtcdTls::default();
        let tls = given.unwrap_or(&default);
        let mut options = match &tls.ca_file {
            Some(ca) => {
                TlsOptions::new().ca_certificate(Certificate::from_pem(read("--etcd-ca-file", ca)?))
            }
            None => TlsOptions::new().with_native_roots(),
        };
        match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => {
                options = options.identity(Identity::from_pem(
                    read("--etcd-cert", cert)?,
                    read("--etcd-key", key)?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(
                    "--etcd-cert and --etcd-key go together: give both or neither".to_owned(),
                );
            }
        }
        Ok(Some(options))
    }
}

/// The bytes of the PEM file `path` given as `what`, checked to hold a PEM block (tonic reads
/// them only when it connects, and would then say less).
fn read(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(format!(
            "{what} {}: not a PEM file (no -----BEGIN line)",
            path.display()
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(urls: &[&str]) -> Vec<String> {
        urls.iter().map(|&u| u.to_owned()).collect()
    }

    #[test]
    fn plain_endpoints_take_no_tls_files_and_https_ones_do() {
        let plain = endpoints(&["http://127.0.0.1:2379"]);
        assert!(matches!(EtcdTls::options_for(None, &plain), Ok(None)));
        let ca = EtcdTls {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..EtcdTls::default()
        };
        let err = EtcdTls::options_for(Some(&ca), &plain).expect_err("files for http");
        assert!(err.contains("not https://"), "{err}");

        let mixed = endpoints(&["https://127.0.0.1:2379", "http://127.0.0.1:2380"]);
        let err = EtcdTls::options_for(None, &mixed).expect_err("mixed");
        assert!(err.contains("mix"), "{err}");

        let https = endpoints(&["https://127.0.0.1:2379"]);
        assert!(matches!(EtcdTls::options_for(None, &https), Ok(Some(_))));
        let err = EtcdTls::options_for(Some(&ca), &https).expect_err("missing file");
        assert!(
            err.starts_with("--etcd-ca-file /nonexistent/ca.pem: "),
            "{err}"
        );
        let half = EtcdTls {
            cert: Some("/nonexistent/cert.pem".into()),
            ..EtcdTls::default()
        };
        let err = EtcdTls::options_for(Some(&half), &https).expect_err("cert alone");
        assert!(err.contains("go together"), "{err}");
    }
}
