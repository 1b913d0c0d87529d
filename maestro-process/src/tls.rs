//! TLS building blocks shared by the broker, the control plane and the load drivers:
//! rustls with the ring provider, PEM files read once with errors that name the file, and
//! plain sentences for failed handshakes.

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// Why TLS could not be set up; the message names the file or the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path:?}: {reason}")]
    File {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("{what} {path:?} holds no {expected}")]
    Empty {
        what: &'static str,
        path: String,
        expected: &'static str,
    },
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("TLS setup: {0}")]
    Setup(String),
    #[error("cannot make a certificate for client {client:?}: {reason}")]
    ClientCert { client: String, reason: String },
}

/// The crypto provider everything here uses (ring: no C build beyond ring's own).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A set-up error from anything rustls reports.
pub fn setup(e: impl std::fmt::Display) -> TlsError {
    TlsError::Setup(e.to_string())
}

/// Reads a file whole; `what` names it in the error.
pub fn read(what: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        what,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The PEM certificates of a file (at least one).
pub fn certificates(
    what: &'static str,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::File {
            what,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
            expected: "PEM certificate",
        });
    }
    Ok(certs)
}

/// The PEM private key of a file.
pub fn private_key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::File {
        what: "key",
        path: path.to_owned(),
        reason: format!("no PEM private key: {e}"),
    })
}

/// The CAs to trust: those of `ca` (a PEM file), or the system's.
pub fn roots(ca: Option<&str>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in certificates("CA file", path)? {
                roots.add(cert).map_err(|e| TlsError::File {
                    what: "CA file",
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if roots.is_empty() {
                return Err(TlsError::Setup(
                    "no system CA certificates found: name the CA file".into(),
                ));
            }
        }
    }
    Ok(roots)
}

/// A plain sentence for a failed TLS session: says when the server's certificate is not
/// trusted, or the server wants or refused the client's certificate.
pub fn explain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        // io::Error's `source` skips the error it wraps: look inside it first.
        if let Some(inner) = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            cause = Some(inner);
            continue;
        }
        if let Some(tls) = c.downcast_ref::<rustls::Error>() {
            use rustls::AlertDescription as A;
            return match tls {
                rustls::Error::InvalidCertificate(why) => format!(
                    "the server's TLS certificate is not trusted ({why:?}): trust the CA that signed it (ca=FILE for a SUT, --ca FILE for the control broker), or check the host name"
                ),
                rustls::Error::AlertReceived(A::CertificateRequired) => {
                    "the server requires a client certificate (cert= and key=, or client_ca= and client_ca_key= for a SUT; --cert and --key for the control broker)".to_owned()
                }
                rustls::Error::AlertReceived(
                    alert @ (A::BadCertificate | A::UnknownCA | A::CertificateUnknown),
                ) => format!(
                    "the server refused the client certificate (TLS alert {alert:?}): is it signed by a CA the server trusts?"
                ),
                rustls::Error::AlertReceived(alert) => {
                    format!("the server ended the TLS session with alert {alert:?}")
                }
                other => format!("TLS: {other}"),
            };
        }
        cause = c.source();
    }
    e.to_string()
}
