//! The command line of `maestro-broker`: here so that the docs' reference is generated from it.

use crate::{DEFAULT_LISTEN, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PAYLOAD_BYTES};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The maestro control broker (MQTT 3.1.1). Workers, inspectors and the CLI meet here.
///
/// Prints `maestro-broker ready listen=ADDR url=mqtt[s]://ADDR` on stdout once it accepts
/// connections.
/// Exit codes: 0 stopped by a signal, 2 usage error, 3 cannot listen or not ready,
/// 70 stopped serving (rumqttd's thread ended or health checks failed).
#[derive(Debug, clap::Parser)]
#[command(name = "maestro-broker", version)]
pub struct Args {
    /// Address to listen on.
    #[arg(short, long, env = "MAESTRO_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// File of `username:password` lines; when given, anonymous clients are refused.
    #[arg(long, env = "MAESTRO_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
    /// Largest number of concurrent connections.
    #[arg(long, env = "MAESTRO_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Server certificate (PEM): the listener speaks TLS (mqtts://).
    #[arg(
        long,
        env = "MAESTRO_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The server certificate's private key (PEM).
    #[arg(
        long,
        env = "MAESTRO_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// CA certificate (PEM): every client must present a certificate it signed.
    #[arg(
        long,
        env = "MAESTRO_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub client_ca: Option<PathBuf>,
    /// Largest MQTT packet, in bytes (default: the control plane's note limit plus room
    /// for the topic).
    #[arg(long, env = "MAESTRO_MAX_PAYLOAD", default_value_t = DEFAULT_MAX_PAYLOAD_BYTES)]
    pub max_payload: usize,
    /// Serve the broker's health metrics for Prometheus on PORT or HOST:PORT (`/metrics`,
    /// OpenMetrics; a bare port binds to 127.0.0.1).
    #[arg(long, env = "MAESTRO_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<maestro_process::metrics::MetricsListen>,
    /// Print the effective configuration as JSON and exit.
    #[arg(long, env = "MAESTRO_PRINT_CONFIG")]
    pub print_config: bool,
}
