//! `maestro-worker` owns the worker daemon: it joins the cluster on the control broker and
//! answers control notes. The load engine and the protocol-under-test drivers (MQTT, AMQP
//! 0-9-1, Kafka) plug in here; until then a worker is always idle.

use maestro_control::{IdleHandler, PeerConfig, PeerError};
use tokio_util::sync::CancellationToken;

/// What this peer announces it can do.
pub const CAPABILITIES: &[&str] = &["ping", "stats", "halt"];

/// Runs the worker until `shutdown` is cancelled or a halt note arrives.
pub async fn run(config: PeerConfig, shutdown: CancellationToken) -> Result<(), PeerError> {
    maestro_control::peer::run(config, IdleHandler, shutdown).await
}
