//! `maestro-control` owns the client side of the control plane that workers, the inspector
//! and the CLI share: the control URL, MQTT session settings (TCP_NODELAY, keep-alive,
//! last will, credentials), reconnect backoff, the wall clock, and the peer runtime that
//! announces presence and answers ping, stats and halt. Process plumbing (logs, signals,
//! metrics endpoint, TLS files) is `maestro-process`, re-exported here for the peers.
//!
//! Control traffic runs on its own connection and never shares it with load.
//!
//! It must not know about runs, plans or results: those are the worker's and the
//! controller's.

pub mod args;
pub mod keys;
pub mod peer;
pub mod session;
pub mod tls;
pub mod url;

pub use args::{ArgsError, ControlArgs, PeerArgs, daemon_main};
pub use maestro_process::{cancel_on_signals, init_tracing, metrics, run_until_signal};
pub use peer::{Handler, IdleHandler, Outbox, PeerConfig, PeerError, ReplyTo};
/// Process plumbing, as it was named here before it moved to `maestro-process`.
pub mod process {
    pub use maestro_process::{LogTap, cancel_on_signals, init_tracing, run_until_signal};
}
pub use session::{MAX_PACKET_BYTES, NOTE_QOS, PRESENCE_QOS, backoff, now, open};
pub use url::{ControlTls, ControlUrl, DEFAULT_CONTROL_URL, UrlError};
