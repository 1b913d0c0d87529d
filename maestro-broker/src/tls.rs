//! TLS on the control broker's listener (`--tls-cert`, `--tls-key`, `--client-ca`).
//!
//! rumqttd 0.20 can verify client certificates only when built with its
//! `verify-client-cert` feature, and then it requires them on every TLS listener; it also
//! completes each TLS handshake inside its accept loop, one connection at a time. So the
//! broker terminates TLS itself: it accepts on the public address, makes each handshake
//! in a task of its own (with a deadline), verifies the client certificate when a client
//! CA is given, and relays the plain MQTT bytes to rumqttd, which listens on a private
//! loopback port.

use maestro_control::tls::{TlsError, certificates, private_key, provider};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// How long a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most TLS handshakes under way at once; a connection beyond them is closed at once
/// (each handshake costs memory and CPU, and clients that never finish one hold it for
/// [`HANDSHAKE_TIMEOUT`]).
pub const MAX_HANDSHAKES: usize = 256;

/// The broker's TLS files.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BrokerTls {
    /// The server certificate (PEM, with its chain).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// When given, every client must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

impl BrokerTls {
    /// The rustls server configuration (files read now).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        let chain = certificates("server certificate", &path(&self.cert))?;
        let key = private_key(&path(&self.key))?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let roots = maestro_control::tls::roots(Some(&path(ca)))?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| TlsError::Setup(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::File {
                what: "server certificate and key",
                path: format!("{} + {}", path(&self.cert), path(&self.key)),
                reason: e.to_string(),
            })?;
        Ok(Arc::new(config))
    }
}

/// Accepts TLS connections on `listener` and relays each to the plain broker at
/// `inner`, until `stop`.
pub async fn terminate(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    inner: SocketAddr,
    stop: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(config);
    let connections = TaskTracker::new();
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let mut refused: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: wait a little, keep serving.
                warn!(error = %e, "control broker: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            refused += 1;
            if refused == 1 || refused.is_power_of_two() {
                warn!(%peer, refused, "control broker: {MAX_HANDSHAKES} TLS handshakes under way; connection closed");
            }
            drop(stream);
            continue;
        };
        let (acceptor, stop) = (acceptor.clone(), stop.clone());
        connections.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = relay(acceptor, stream, peer, inner, permit) => {}
            }
        });
    }
    connections.close();
    connections.wait().await;
}

async fn relay(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    inner: SocketAddr,
    handshake: tokio::sync::OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
    // The handshake is over (or gave up): its slot is free for the next client.
    drop(handshake);
    let mut tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "control broker: TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!(%peer, "control broker: no TLS handshake within the deadline");
            return;
        }
    };
    let mut plain = match TcpStream::connect(inner).await {
        Ok(s) => s,
        Err(e) => {
            warn!(%peer, error = %e, "control broker: cannot reach the inner listener");
            return;
        }
    };
    let _ = plain.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
}
