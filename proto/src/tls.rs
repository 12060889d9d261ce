//! TLS for the engine's TCP listener and for clients of `https://`
//! addresses: PEM files read and checked up front, so that a wrong path or
//! a key in the certificate's place is reported naming the file and the
//! flag or setting it came from, before any connection is tried.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A TLS file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "[tls] cert and key do not make a server identity ({0}): check that the key belongs to the certificate"
    )]
    Rejected(String),
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {} {why}", path.display())]
    Invalid {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("{0}")]
    Incomplete(&'static str),
}

/// What a client presents and trusts on an `https://` address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM certificates of the CA that signed the engine's certificate
    /// (`--ca`); without it the system's trusted roots are used.
    pub ca: Option<PathBuf>,
    /// PEM certificate (chain) shown to an engine that requires client
    /// certificates (`--cert`), with its private key (`--key`).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientTls {
    /// Reads and checks the files, giving tonic's client TLS settings.
    pub fn load(&self) -> Result<ClientTlsConfig, TlsError> {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca {
            Some(path) => config.ca_certificate(Certificate::from_pem(certificates(
                path,
                "the CA file (--ca)",
            )?)),
            None => config.with_native_roots(),
        };
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let cert = certificates(cert, "the client certificate (--cert)")?;
                let key = private_key(key, "the client key (--key)")?;
                config = config.identity(Identity::from_pem(cert, key));
            }
            (None, None) => {}
            _ => {
                return Err(TlsError::Incomplete(
                    "a client certificate needs both --cert and --key (OPSDECK_CERT, \
                     OPSDECK_KEY): give both, or neither",
                ));
            }
        }
        Ok(config)
    }
}

/// What the engine's TCP listener presents and, for mutual TLS, which CA
/// its clients' certificates must chain to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Set: every TCP client must show a certificate this CA signed.
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    /// Reads and checks the files, giving tonic's server TLS settings.
    pub fn load(&self) -> Result<ServerTlsConfig, TlsError> {
        let cert = certificates(&self.cert, "[tls] cert")?;
        let key = private_key(&self.key, "[tls] key")?;
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = &self.client_ca {
            config = config
                .client_ca_root(Certificate::from_pem(certificates(ca, "[tls] client_ca")?))
                .client_auth_optional(false);
        }
        // rustls checks the pair only when a server is set up with it: do it
        // now, so that a key that is not the certificate's stops the start
        // (and `check-config`) instead of leaving the engine without an API.
        tonic::transport::Server::builder()
            .tls_config(config.clone())
            .map_err(|e| TlsError::Rejected(format!("{e}")))?;
        Ok(config)
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// The file's bytes, once it is known to hold at least one PEM certificate.
fn certificates(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    let pem = read(path, what)?;
    let invalid = |why: String| TlsError::Invalid {
        what,
        path: path.to_owned(),
        why,
    };
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| invalid(format!("has a certificate that cannot be read: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(invalid(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(pem)
}

/// The file's bytes, once it is known to hold a PEM private key.
fn private_key(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    let pem = read(path, what)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Invalid {
        what,
        path: path.to_owned(),
        why: format!("holds no usable PEM private key ({e})"),
    })?;
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused_when_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["engine".into()]).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, other.serialize_pem()).unwrap();
        let tls = ServerTls {
            cert: cert_path,
            key: key_path.clone(),
            client_ca: None,
        };
        let err = tls.load().unwrap_err().to_string();
        assert!(err.contains("belongs to the certificate"), "{err}");
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        tls.load().expect("the certificate's own key");
    }

    #[test]
    fn a_missing_or_wrong_file_is_named_with_its_flag() {
        let dir = std::env::temp_dir().join(format!("opsdeck-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let err = ClientTls {
            ca: Some(not_pem.clone()),
            ..ClientTls::default()
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--ca") && err.contains("no PEM certificate"),
            "{err}"
        );
        let err = ClientTls {
            cert: Some(dir.join("missing.pem")),
            key: Some(not_pem.clone()),
            ..ClientTls::default()
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--cert") && err.contains("missing.pem"),
            "{err}"
        );
        let err = ClientTls {
            cert: Some(not_pem),
            ..ClientTls::default()
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(err.contains("--key"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
