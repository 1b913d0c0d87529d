//! TLS to the system under test, with rustls (ring provider).
//!
//! A [`TlsClient`] is built once per run from the URL's [`TlsOptions`]: the trusted roots,
//! the server-certificate verifier and, for one shared client certificate, the whole
//! `ClientConfig` are made once and shared by every client of the worker. With
//! `client_ca=`/`client_ca_key=` every client gets its own certificate (CN = its client
//! id, ECDSA P-256, signed by that CA) when it connects, which is before the run's start
//! barrier; only its small `ClientConfig` differs, the verifier is shared.
//!
//! Handshake times go into one histogram per run ([`Handshakes`]). Session resumption is
//! off: every connection makes a full handshake, as a fleet of distinct devices does.

use maestro_protocol::TlsOptions;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

pub use maestro_control::tls::{TlsError, explain};
use maestro_control::tls::{certificates, private_key, read};

fn setup(e: impl fmt::Display) -> TlsError {
    TlsError::Setup(e.to_string())
}

/// The TLS handshake times of one run's clients, in µs.
pub type Handshakes = super::Durations;

/// Checks the server certificate (or, `insecure`, accepts any), against the `sni=` name
/// when one is given.
#[derive(Debug)]
struct Verifier {
    /// `None`: accept any certificate (handshake signatures are still checked).
    webpki: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    name: Option<ServerName<'static>>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.webpki {
            None => Ok(ServerCertVerified::assertion()),
            Some(v) => v.verify_server_cert(
                end_entity,
                intermediates,
                self.name.as_ref().unwrap_or(server_name),
                ocsp,
                now,
            ),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Offers the client's certificate, if it has one.
#[derive(Debug)]
struct ClientCert(Option<Arc<CertifiedKey>>);

impl ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.clone()
    }

    fn has_certs(&self) -> bool {
        self.0.is_some()
    }
}

/// A certificate authority that signs one certificate per client (`client_ca=`,
/// `client_ca_key=`).
pub struct ClientCa {
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for ClientCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientCa")
    }
}

/// A client's own certificate and key, PEM.
#[derive(Debug, Clone)]
pub struct ClientPem {
    pub cert: String,
    pub key: String,
}

impl ClientCa {
    /// Reads the CA certificate and its key (PEM).
    pub fn load(ca: &str, key: &str) -> Result<Self, TlsError> {
        let ca_pem = String::from_utf8_lossy(&read("client CA", ca)?).into_owned();
        let key_pem = String::from_utf8_lossy(&read("client CA key", key)?).into_owned();
        let key_pair = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::File {
            what: "client CA key",
            path: key.to_owned(),
            reason: e.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key_pair).map_err(|e| TlsError::File {
            what: "client CA",
            path: ca.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(ClientCa { issuer })
    }

    /// From the URL's options, when it names a client CA.
    pub fn from_options(o: &TlsOptions) -> Result<Option<Self>, TlsError> {
        match (&o.client_ca, &o.client_ca_key) {
            (Some(ca), Some(key)) => Self::load(ca, key).map(Some),
            _ => Ok(None),
        }
    }

    /// A new certificate for `client_id` (CN), with a new ECDSA P-256 key.
    pub fn issue(&self, client_id: &str) -> Result<ClientPem, TlsError> {
        let fail = |e: rcgen::Error| TlsError::ClientCert {
            client: client_id.to_owned(),
            reason: e.to_string(),
        };
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        params
            .distinguished_name
            .push(DnType::CommonName, client_id);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().map_err(fail)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(fail)?;
        Ok(ClientPem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// TLS for one run's clients (see the module docs).
#[derive(Debug)]
pub struct TlsClient {
    provider: Arc<CryptoProvider>,
    verifier: Arc<Verifier>,
    /// The config every client shares, when clients have no certificate of their own.
    shared: Option<Arc<ClientConfig>>,
    client_ca: Option<ClientCa>,
    /// The name to send as SNI and to check the certificate against.
    pub server_name: String,
    /// `server_name`, checked once.
    name: ServerName<'static>,
    pub handshakes: Handshakes,
}

/// Why a client's TLS connection failed: its config could not be made, or the handshake
/// itself failed.
#[derive(Debug)]
pub enum HandshakeError {
    Setup(TlsError),
    Handshake(std::io::Error),
}

impl TlsClient {
    /// The run's TLS for `url`'s clients: `None` without TLS; an error that names the URL
    /// when its files cannot be read.
    pub fn for_url(
        url: &maestro_protocol::SutUrl,
    ) -> Result<Option<Arc<Self>>, super::DriverError> {
        url.tls
            .as_ref()
            .map(|t| {
                TlsClient::new(t, &url.host().name)
                    .map(Arc::new)
                    .map_err(|e| super::DriverError::Tls {
                        url: url.redacted(),
                        reason: e.to_string(),
                    })
            })
            .transpose()
    }

    /// Reads the files `o` names and builds what every client shares. `host` is the
    /// URL's host (the server name unless `sni=` gives one).
    pub fn new(o: &TlsOptions, host: &str) -> Result<Self, TlsError> {
        let provider = maestro_control::tls::provider();
        let server_name = o.sni.clone().unwrap_or_else(|| host.to_owned());
        let name = ServerName::try_from(server_name.clone())
            .map_err(|_| TlsError::ServerName(server_name.clone()))?;
        let webpki = if o.insecure {
            None
        } else {
            let roots = maestro_control::tls::roots(o.ca.as_deref())?;
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(setup)?,
            )
        };
        let verifier = Arc::new(Verifier {
            webpki,
            provider: provider.clone(),
            name: o.sni.is_some().then(|| name.clone()),
        });
        let client_ca = ClientCa::from_options(o)?;
        let mut tls = TlsClient {
            provider,
            verifier,
            shared: None,
            client_ca,
            server_name,
            name,
            handshakes: Handshakes::default(),
        };
        if tls.client_ca.is_none() {
            let key = match (&o.cert, &o.key) {
                (Some(cert), Some(key)) => {
                    Some(tls.certified_key(certificates("certificate", cert)?, private_key(key)?)?)
                }
                _ => None,
            };
            tls.shared = Some(tls.config(key)?);
        }
        Ok(tls)
    }

    fn certified_key(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Arc<CertifiedKey>, TlsError> {
        let signer = self
            .provider
            .key_provider
            .load_private_key(key)
            .map_err(setup)?;
        Ok(Arc::new(CertifiedKey::new(chain, signer)))
    }

    fn config(&self, key: Option<Arc<CertifiedKey>>) -> Result<Arc<ClientConfig>, TlsError> {
        let mut c = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(setup)?
            .dangerous()
            .with_custom_certificate_verifier(self.verifier.clone())
            .with_client_cert_resolver(Arc::new(ClientCert(key)));
        c.resumption = Resumption::disabled();
        Ok(Arc::new(c))
    }

    /// The certificate and key of client `client_id`, made now and signed by the client
    /// CA; `None` when clients have no certificates of their own.
    pub fn client_pem(&self, client_id: &str) -> Result<Option<ClientPem>, TlsError> {
        self.client_ca
            .as_ref()
            .map(|ca| ca.issue(client_id))
            .transpose()
    }

    /// The rustls config for client `client_id`: the shared one, or one with the client's
    /// own certificate.
    pub fn config_for(&self, client_id: &str) -> Result<Arc<ClientConfig>, TlsError> {
        if let Some(shared) = &self.shared {
            return Ok(shared.clone());
        }
        let pem = self
            .client_pem(client_id)?
            .ok_or_else(|| TlsError::Setup("no shared config and no client CA".into()))?;
        let chain = CertificateDer::pem_slice_iter(pem.cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(setup)?;
        let key = PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).map_err(setup)?;
        let key = self.certified_key(chain, key)?;
        self.config(Some(key))
    }

    /// Client `client_id`'s TLS handshake over `tcp`, its time recorded in `handshakes`.
    pub async fn handshake(
        &self,
        client_id: &str,
        tcp: tokio::net::TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, HandshakeError> {
        let config = self.config_for(client_id).map_err(HandshakeError::Setup)?;
        let began = Instant::now();
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(self.name.clone(), tcp)
            .await
            .map_err(HandshakeError::Handshake)?;
        self.handshakes.record(began.elapsed());
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> (tempdir::Dir, String, String) {
        let dir = tempdir::Dir::new();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = ca.self_signed(&key).unwrap();
        let ca_path = dir.write("ca.pem", &cert.pem());
        let key_path = dir.write("ca.key", &key.serialize_pem());
        (dir, ca_path, key_path)
    }

    mod tempdir {
        /// A folder removed on drop.
        #[derive(Debug)]
        pub struct Dir(tempfile::TempDir);
        impl Dir {
            pub fn new() -> Self {
                Dir(tempfile::tempdir().unwrap())
            }
            pub fn write(&self, name: &str, text: &str) -> String {
                let p = self.0.path().join(name);
                std::fs::write(&p, text).unwrap();
                p.to_string_lossy().into_owned()
            }
        }
    }

    #[test]
    fn a_client_ca_signs_one_certificate_per_client() {
        let (_dir, ca, key) = lab();
        let o = TlsOptions {
            ca: Some(ca.clone()),
            client_ca: Some(ca.clone()),
            client_ca_key: Some(key),
            ..TlsOptions::default()
        };
        let tls = TlsClient::new(&o, "localhost").unwrap();
        assert!(tls.shared.is_none());
        let a = tls.client_pem("dev-1").unwrap().unwrap();
        let b = tls.client_pem("dev-2").unwrap().unwrap();
        assert_ne!(a.cert, b.cert);
        assert_ne!(a.key, b.key);
        // The leaf names its client (brokers check the chain: tests/tls.rs).
        let der = CertificateDer::from_pem_slice(a.cert.as_bytes()).unwrap();
        assert!(String::from_utf8_lossy(der.as_ref()).contains("dev-1"));
        assert!(tls.config_for("dev-1").is_ok());
    }

    #[test]
    fn one_config_is_shared_without_a_client_ca() {
        let (_dir, ca, _) = lab();
        let o = TlsOptions {
            ca: Some(ca),
            ..TlsOptions::default()
        };
        let tls = TlsClient::new(&o, "127.0.0.1").unwrap();
        let (a, b) = (tls.config_for("x").unwrap(), tls.config_for("y").unwrap());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(tls.client_pem("x").unwrap().is_none());
    }

    #[test]
    fn bad_files_are_named() {
        let missing = TlsOptions {
            ca: Some("/no/such/ca.pem".into()),
            ..TlsOptions::default()
        };
        let e = TlsClient::new(&missing, "h").unwrap_err().to_string();
        assert!(e.contains("CA file \"/no/such/ca.pem\""), "{e}");
        let dir = tempdir::Dir::new();
        let empty = dir.write("empty.pem", "hello");
        let o = TlsOptions {
            ca: Some(empty.clone()),
            ..TlsOptions::default()
        };
        let e = TlsClient::new(&o, "h").unwrap_err().to_string();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        let o = TlsOptions {
            insecure: true,
            client_ca: Some(empty.clone()),
            client_ca_key: Some(empty),
            ..TlsOptions::default()
        };
        let e = TlsClient::new(&o, "h").unwrap_err().to_string();
        assert!(e.contains("client CA key"), "{e}");
    }
}
