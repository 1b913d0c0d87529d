//! `maestro-inspector` owns the inspector daemon: it joins the cluster on the control broker
//! and answers control notes. Polling the system under test for broker-side metrics plugs
//! in here.
//!
//! It must not act on the SUT beyond reading it, and talks to the others only through
//! notes.

use maestro_control::{IdleHandler, PeerConfig, PeerError};
use tokio_util::sync::CancellationToken;

/// What this peer announces it can do.
pub const CAPABILITIES: &[&str] = &["ping", "stats", "halt"];

/// Runs the inspector until `shutdown` is cancelled or a halt note arrives.
pub async fn run(config: PeerConfig, shutdown: CancellationToken) -> Result<(), PeerError> {
    maestro_control::peer::run(config, IdleHandler, shutdown).await
}
