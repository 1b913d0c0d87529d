//! MQTT sessions on the control broker: one place that sets TCP_NODELAY, keep-alive,
//! packet limits and credentials, plus the reconnect backoff and the wall clock.

use crate::keys::Keys;
use crate::url::{ControlUrl, UrlError};
use maestro_protocol::signing::SignatureError;
use maestro_protocol::{Note, PeerId, UnixMicros, encode};
use rumqttc::{
    AsyncClient, EventLoop, LastWill, MqttOptions, NetworkOptions, QoS, TlsConfiguration, Transport,
};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest MQTT packet a control client sends or accepts: the control plane's one limit
/// ([`maestro_protocol::MAX_PACKET_BYTES`]), which the control broker shares.
pub use maestro_protocol::MAX_PACKET_BYTES;

/// QoS of requests and replies. Control connections are loopback or LAN TCP with clean
/// sessions: a note is lost only when its connection drops, and then QoS 1 would not
/// redeliver it either (the session is gone). Every request has a deadline and names the
/// peers that did not answer, so QoS 0 loses nothing the controller would not report,
/// and it halves the packets the broker handles per exchange (no PUBACKs).
pub const NOTE_QOS: QoS = QoS::AtMostOnce;

/// QoS of presence notes (retained, and the last will): the broker must have them.
pub const PRESENCE_QOS: QoS = QoS::AtLeastOnce;

/// Requests the client may queue before the event loop sends them.
const REQUEST_CAPACITY: usize = 1024;

/// The MQTT client id of a session of `peer`: its peer id plus a random part. Peer ids are
/// in every note; a client id that could be read from them would let anyone connect with
/// it and throw this session off the broker (MQTT gives a client id to its newest
/// connection).
pub fn client_id(peer: &PeerId) -> String {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    format!("{peer}-{}", &nonce[..12])
}

/// Opens an MQTT session (not yet connected: the event loop connects when polled), with a
/// [`client_id`] that keeps its random part across reconnects. Fails only when an
/// `mqtts://` URL has no usable TLS settings.
pub fn open(
    url: &ControlUrl,
    peer: &PeerId,
    keep_alive: Duration,
    last_will: Option<LastWill>,
) -> Result<(AsyncClient, EventLoop), UrlError> {
    let mut options = MqttOptions::new(client_id(peer), url.host.clone(), url.port);
    if let Some(config) = url.tls_config()? {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    }
    options
        .set_keep_alive(keep_alive.max(Duration::from_secs(1)))
        .set_clean_session(true)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    if let Some(user) = &url.username {
        options.set_credentials(user.clone(), url.password.clone().unwrap_or_default());
    }
    if let Some(will) = last_will {
        options.set_last_will(will);
    }
    let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    let mut network = NetworkOptions::new();
    // Nagle plus delayed ACK adds ~40 ms to small request/reply exchanges.
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(5);
    eventloop.set_network_options(network);
    Ok((client, eventloop))
}

/// Signs what this process publishes and checks what it receives, when it has keys
/// (`--keys DIR`, [`crate::keys`]); without them it encodes plainly and accepts everything.
#[derive(Debug, Clone, Default)]
pub struct Signer(Option<Arc<Keys>>);

impl Signer {
    pub fn new(keys: Option<Keys>) -> Self {
        Signer(keys.map(Arc::new))
    }

    /// True when notes are signed and checked.
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// The keys in use.
    pub fn keys(&self) -> Option<&Keys> {
        self.0.as_deref()
    }

    /// The note's bytes for `topic`, signed when there are keys.
    pub fn encode(&self, topic: &str, note: &Note) -> Vec<u8> {
        match &self.0 {
            Some(keys) => keys.own.seal(topic, encode(note)),
            None => encode(note),
        }
    }

    /// Checks the signature of a payload received on `topic` (always fine without keys).
    pub fn verify(&self, topic: &str, payload: &[u8]) -> Result<(), SignatureError> {
        match &self.0 {
            Some(keys) => keys.trusted.open(topic, payload).map(|_| ()),
            None => Ok(()),
        }
    }
}

/// The reconnect delays of [`backoff`].
pub type Backoff = backon::ExponentialBackoff;

/// Reconnect delays: 100 ms doubling to 5 s, with jitter so a fleet of peers does not
/// reconnect in lock step after the broker restarts.
pub fn backoff() -> Backoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

pub use maestro_process::goodbye::{GOODBYE_TIMEOUT, closed_by_broker, goodbye};

/// The wall clock, in microseconds since the Unix epoch.
pub fn now() -> UnixMicros {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_else(|e| -(e.duration().as_micros() as i64));
    UnixMicros(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let delays: Vec<_> = backoff().take(12).collect();
        assert!(delays[0] >= Duration::from_millis(100) && delays[0] < Duration::from_millis(300));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(10)));
        assert!(delays[11] >= Duration::from_secs(5));
    }
}
