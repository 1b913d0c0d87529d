//! TLS on the control broker's listener (`--tls-cert`, `--tls-key`, `--client-ca`).
//!
//! rumqttd 0.20 can verify client certificates only when built with its
//! `verify-client-cert` feature, and then it requires them on every TLS listener; it also
//! completes each TLS handshake inside its accept loop, one connection at a time. So the
//! broker terminates TLS itself: it accepts on the public address, makes each handshake
//! in a task of its own (with a deadline), verifies the client certificate when a client
//! CA is given, and relays the plain MQTT bytes to rumqttd, which listens on a private
//! loopback address.
//!
//! That inner listener takes only the relay's own login ([`InnerLogin`], a random password
//! that never leaves the process): the relay reads each client's CONNECT, checks the
//! client's own login against the broker's users (when it has any), and passes it on
//! with its own. Another local user who finds the inner port gets "bad user name or
//! password" instead of a way around TLS and client certificates.

use bytes::BytesMut;
use maestro_process::tls::{TlsError, certificates, private_key, provider};
use rumqttd::protocol::{ConnAck, ConnectReturnCode, Login, Packet, Protocol, v4::V4};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
                let roots = maestro_process::tls::roots(Some(&path(ca)))?;
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

/// The account the relay logs in to the inner listener with: a random password made at
/// start, known only to this process.
#[derive(Clone)]
pub struct InnerLogin {
    user: String,
    password: String,
}

impl std::fmt::Debug for InnerLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InnerLogin({:?}, ***)", self.user)
    }
}

impl InnerLogin {
    /// A fresh login: 244 random bits (two v4 UUIDs) of password.
    pub fn random() -> Self {
        Self {
            user: "maestro-relay".to_owned(),
            password: format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            ),
        }
    }

    /// The inner listener's accounts: this one only.
    pub fn accounts(&self) -> HashMap<String, String> {
        HashMap::from([(self.user.clone(), self.password.clone())])
    }
}

/// Where and how the relay passes clients on.
#[derive(Debug, Clone)]
pub struct Relay {
    /// rumqttd's private listener.
    pub inner: SocketAddr,
    /// The relay's own login there.
    pub login: InnerLogin,
    /// The broker's users (`--auth-file`): a client's own login is checked against them.
    pub users: Option<HashMap<String, String>>,
    /// The largest CONNECT read.
    pub max_packet_bytes: usize,
}

/// Accepts TLS connections on `listener` and relays each to the plain broker behind
/// `relay`, until `stop`.
pub async fn terminate(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    relay: Relay,
    stop: CancellationToken,
) {
    let relay = Arc::new(relay);
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
        let (acceptor, stop, relay) = (acceptor.clone(), stop.clone(), relay.clone());
        connections.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = relay_one(acceptor, stream, peer, &relay, permit) => {}
            }
        });
    }
    connections.close();
    connections.wait().await;
}

async fn relay_one(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    relay: &Relay,
    handshake: tokio::sync::OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let accepted = tokio::time::timeout_at(deadline, acceptor.accept(stream)).await;
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
    // The client's CONNECT, under the same deadline.
    let mut buf = BytesMut::with_capacity(1024);
    let first = loop {
        match V4.read_mut(&mut buf, relay.max_packet_bytes) {
            Ok(packet) => break packet,
            Err(rumqttd::protocol::Error::InsufficientBytes(_)) => {}
            Err(e) => {
                debug!(%peer, error = ?e, "control broker: not an MQTT 3.1.1 CONNECT");
                if matches!(e, rumqttd::protocol::Error::InvalidProtocolLevel(_)) {
                    refuse(&mut tls, ConnectReturnCode::RefusedProtocolVersion).await;
                }
                return;
            }
        }
        match tokio::time::timeout_at(deadline, tls.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => {
                debug!(%peer, "control broker: no CONNECT within the deadline");
                return;
            }
        }
    };
    let Packet::Connect(connect, _, will, _, login) = first else {
        debug!(%peer, "control broker: the first packet was not CONNECT");
        return;
    };
    if let Some(users) = &relay.users {
        let known = login
            .as_ref()
            .is_some_and(|l| users.get(&l.username) == Some(&l.password));
        if !known {
            debug!(%peer, client = %connect.client_id, "control broker: bad user name or password");
            refuse(&mut tls, ConnectReturnCode::BadUserNamePassword).await;
            return;
        }
    }
    let mut out = BytesMut::with_capacity(buf.len() + 256);
    let ours = Login {
        username: relay.login.user.clone(),
        password: relay.login.password.clone(),
    };
    if let Err(e) = V4.write(
        Packet::Connect(connect, None, will, None, Some(ours)),
        &mut out,
    ) {
        debug!(%peer, error = ?e, "control broker: cannot pass the CONNECT on");
        return;
    }
    // Whatever the client sent after its CONNECT goes on behind it.
    out.extend_from_slice(&buf);
    let mut plain = match TcpStream::connect(relay.inner).await {
        Ok(s) => s,
        Err(e) => {
            warn!(%peer, error = %e, "control broker: cannot reach the inner listener");
            return;
        }
    };
    let _ = plain.set_nodelay(true);
    if plain.write_all(&out).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
}

/// Answers a CONNECT with a refusal and closes.
async fn refuse<S: tokio::io::AsyncWrite + Unpin>(stream: &mut S, code: ConnectReturnCode) {
    let mut out = BytesMut::with_capacity(4);
    let connack = ConnAck {
        session_present: false,
        code,
    };
    if V4.write(Packet::ConnAck(connack, None), &mut out).is_ok() {
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    }
}
