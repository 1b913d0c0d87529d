//! `maestro-broker`: the embedded MQTT control broker. See the crate docs.

use clap::Parser;
use maestro_broker::args::Args;
use maestro_broker::{BrokerConfig, DEFAULT_MAX_PAYLOAD_BYTES};
use std::process::ExitCode;

fn main() -> ExitCode {
    maestro_process::init_tracing("info,rumqttd=off");
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
    maestro_process::run_until_signal(|shutdown| maestro_broker::run(config, shutdown))??;
    // rumqttd has no shutdown: leaving main ends its threads.
    Ok(())
}
