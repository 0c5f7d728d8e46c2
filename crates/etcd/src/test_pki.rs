//! Certificates made in the test (feature `testing`): a CA and the server and client
//! certificates it signs, written as PEM files in a temporary directory — for the TLS tests of
//! etcd, the server and the CLI. Nothing leaves the test: the CA's key lives in memory only.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key (PKCS#8).
    pub key: PathBuf,
}

/// A test certificate authority: its certificate in [`TestPki::ca_file`], and the
/// certificates it signs ([`TestPki::issue`]). Its files go when it is dropped.
pub struct TestPki {
    dir: TempDir,
    ca: Issuer<'static, KeyPair>,
    ca_file: PathBuf,
    issued: AtomicU64,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl TestPki {
    /// A new CA whose certificate's common name is `name`. Panics if the temporary directory
    /// or the key cannot be made: it is for tests.
    pub fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("locksmith-pki-")
            .tempdir()
            .expect("a temporary directory for the test PKI");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("the CA's key");
        let cert = params.self_signed(&key).expect("the CA's certificate");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, cert.pem()).expect("write the CA's certificate");
        Self {
            dir,
            ca: Issuer::new(params, key),
            ca_file,
            issued: AtomicU64::new(0),
        }
    }

    /// The PEM file of the CA's certificate: what a client trusts (`--ca-file`) or a server
    /// checks client certificates against (`--tls-client-ca`).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A certificate signed by this CA for `names` — each a DNS name or an IP address, the
    /// first also its common name — good for a TLS server and a TLS client alike.
    pub fn issue(&self, names: &[&str]) -> CertFiles {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let mut params = CertificateParams::new(
            names
                .iter()
                .map(|&name| name.to_owned())
                .collect::<Vec<_>>(),
        )
        .expect("certificate parameters");
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().expect("a key");
        let cert = params
            .signed_by(&key, &self.ca)
            .expect("a signed certificate");
        let stem = names
            .first()
            .copied()
            .unwrap_or("nameless")
            .replace(['/', ':'], "_");
        let files = CertFiles {
            cert: self.dir.path().join(format!("{n}-{stem}.pem")),
            key: self.dir.path().join(format!("{n}-{stem}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write a certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write a key");
        files
    }

    /// A server certificate for this machine's loopback: `localhost` and `127.0.0.1`.
    pub fn server(&self) -> CertFiles {
        self.issue(&["localhost", "127.0.0.1"])
    }

    /// A client certificate naming `node` (its DNS name: what mutual TLS binds).
    pub fn client(&self, node: &str) -> CertFiles {
        self.issue(&[node])
    }
}
