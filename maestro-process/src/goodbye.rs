//! Leaving an MQTT broker politely (rumqttc): DISCONNECT, then wait for the broker to
//! close. The control plane's clients and the broker's own readiness probe use it.

use rumqttc::{AsyncClient, EventLoop};
use std::time::Duration;

/// How long a client waits, after sending DISCONNECT, for the broker to close the
/// connection before it closes it itself.
pub const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// Leaves the broker: sends DISCONNECT after everything already queued, then waits up to
/// [`GOODBYE_TIMEOUT`] for the **broker** to close the connection. Returns whether it did
/// (false: the client closed it on timeout, or the connection was already gone).
///
/// Why not simply close after the DISCONNECT: rumqttd 0.20 (the control broker, and the
/// SUT of local runs) frees the client's slot on the DISCONNECT, and its link then
/// reports the closed socket as a second disconnect of the same slot. A client that
/// connected in between has been given that slot, and the second disconnect throws it
/// out (its connection is dropped; with a connection limit, one more client than the
/// limit gets in). When the broker closes first, its link knows the router dropped it
/// and reports nothing. Mosquitto and RabbitMQ close on DISCONNECT too, so the wait
/// costs one round trip.
pub async fn goodbye(client: &AsyncClient, eventloop: &mut EventLoop) -> bool {
    if client.try_disconnect().is_err() {
        return false;
    }
    let deadline = tokio::time::Instant::now() + GOODBYE_TIMEOUT;
    let sent = tokio::time::timeout_at(deadline, async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    sent && closed_by_broker(eventloop, deadline).await
}

/// After this client's DISCONNECT went out: polls until the broker closes the connection
/// or `deadline` passes, and returns whether the broker closed it. See [`goodbye`].
pub async fn closed_by_broker(eventloop: &mut EventLoop, deadline: tokio::time::Instant) -> bool {
    tokio::time::timeout_at(deadline, async { while eventloop.poll().await.is_ok() {} })
        .await
        .is_ok()
}
