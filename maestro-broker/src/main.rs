//! `maestro-broker`: the embedded MQTT control broker. See the crate docs.

use clap::Parser;
use maestro_broker::{
    BrokerConfig, DEFAULT_LISTEN, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PAYLOAD_BYTES,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// The maestro control broker (MQTT 3.1.1). Workers, inspectors and the CLI meet here.
///
/// Prints `maestro-broker ready listen=ADDR url=mqtt[s]://ADDR` on stdout once it accepts
/// connections.
/// Exit codes: 0 stopped by a signal, 2 usage error, 3 cannot listen or not ready,
/// 70 stopped serving (rumqttd's thread ended or health checks failed).
#[derive(Debug, Parser)]
#[command(name = "maestro-broker", version)]
struct Args {
    /// Address to listen on.
    #[arg(short, long, env = "MAESTRO_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// File of `username:password` lines; when given, anonymous clients are refused.
    #[arg(long, env = "MAESTRO_AUTH_FILE")]
    auth_file: Option<PathBuf>,
    /// Largest number of concurrent connections.
    #[arg(long, env = "MAESTRO_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Server certificate (PEM): the listener speaks TLS (mqtts://).
    #[arg(
        long,
        env = "MAESTRO_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The server certificate's private key (PEM).
    #[arg(
        long,
        env = "MAESTRO_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// CA certificate (PEM): every client must present a certificate it signed.
    #[arg(
        long,
        env = "MAESTRO_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    client_ca: Option<PathBuf>,
    /// Largest MQTT packet, in bytes (default: the control plane's note limit plus room
    /// for the topic).
    #[arg(long, env = "MAESTRO_MAX_PAYLOAD", default_value_t = DEFAULT_MAX_PAYLOAD_BYTES)]
    max_payload: usize,
    /// Serve the broker's health metrics for Prometheus on PORT or HOST:PORT (`/metrics`,
    /// OpenMetrics; a bare port binds to 127.0.0.1).
    #[arg(long, env = "MAESTRO_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<maestro_control::metrics::MetricsListen>,
    /// Print the effective configuration as JSON and exit.
    #[arg(long, env = "MAESTRO_PRINT_CONFIG")]
    print_config: bool,
}

fn main() -> ExitCode {
    maestro_control::init_tracing("info,rumqttd=off");
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("maestro-broker: error: {e:#}");
            let code = e
                .downcast_ref::<maestro_broker::BrokerError>()
                .map_or(3, maestro_broker::BrokerError::exit_code);
            ExitCode::from(code)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.max_payload < DEFAULT_MAX_PAYLOAD_BYTES {
        tracing::warn!(
            max_payload = args.max_payload,
            control_limit = DEFAULT_MAX_PAYLOAD_BYTES,
            "packets are capped below the control plane's limit: as a control broker, large notes (a big run's results) will cost their sender its connection"
        );
    }
    let users = args
        .auth_file
        .as_deref()
        .map(maestro_broker::load_users)
        .transpose()?;
    let config = BrokerConfig {
        listen: args.listen,
        users,
        auth_file: args.auth_file,
        max_connections: args.max_connections,
        max_payload_bytes: args.max_payload,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(maestro_broker::BrokerTls {
                cert,
                key,
                client_ca: args.client_ca,
            }),
            _ => None,
        },
        metrics_listen: args.metrics_listen.map(|m| m.0),
        ..Default::default()
    };
    if args.print_config {
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(());
    }
    maestro_control::run_until_signal(|shutdown| maestro_broker::run(config, shutdown))??;
    // rumqttd has no shutdown: leaving main ends its threads.
    Ok(())
}
