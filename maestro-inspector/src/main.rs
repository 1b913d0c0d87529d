//! `maestro-inspector` binary; see the crate docs.

use clap::Parser;
use maestro_inspector::InspectorConfig;
use maestro_inspector::faults::FaultBook;
use maestro_inspector::sources::{self, SourceSpec};
use maestro_protocol::Role;
use std::path::PathBuf;
use std::process::ExitCode;

/// A maestro inspector: reads the system under test and publishes what it reads every
/// second; runs the fault actions declared in its own file when a test plan names them.
///
/// Exit codes: 0 stopped (signal or halt), 2 bad arguments, 70 failure.
#[derive(Debug, Parser)]
#[command(name = "maestro-inspector", version)]
struct Args {
    #[command(flatten)]
    peer: maestro_control::PeerArgs,
    /// What to read, KIND[:NAME][=VALUE]; repeat for several (in the environment,
    /// separated by spaces): mqtt-sys=mqtt://127.0.0.1:1883 (Mosquitto $SYS),
    /// rabbitmq=http://guest:guest@127.0.0.1:15672 (management API),
    /// kafka=kafka://127.0.0.1:9092 (offsets and group lag), host (this machine),
    /// process=NAME or process=pid:N (one process's CPU and RSS)
    #[arg(
        long = "source",
        env = "MAESTRO_SOURCE",
        value_delimiter = ' ',
        value_name = "SOURCE"
    )]
    sources: Vec<SourceSpec>,
    /// The fault actions this inspector may run (TOML: [[action]] name, kind, target,
    /// ...); notes can only name them. Without it, every fault is refused.
    #[arg(long, env = "MAESTRO_FAULTS", value_name = "FILE")]
    faults: Option<PathBuf>,
    /// Where the faults not healed yet are kept (each heal is written before its action
    /// runs); an inspector started again heals what the file holds before it joins
    /// [default: <temporary folder>/maestro-inspector-<name>.faults.json]
    #[arg(long, env = "MAESTRO_STATE_FILE", value_name = "FILE")]
    state_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    maestro_control::init_tracing("info,rumqttc=warn");
    let args = Args::parse();
    if let Err(e) = sources::check_unique(&args.sources) {
        eprintln!("maestro-inspector: error: {e}");
        return ExitCode::from(2);
    }
    let faults = match args.faults.as_deref().map(FaultBook::load).transpose() {
        Ok(book) => book.unwrap_or_default(),
        Err(e) => {
            eprintln!("maestro-inspector: error: {e}");
            return ExitCode::from(2);
        }
    };
    let inspector = InspectorConfig {
        sources: args.sources,
        faults,
        state_file: args.state_file,
    };
    maestro_control::daemon_main(
        args.peer,
        Role::Inspector,
        maestro_inspector::CAPABILITIES,
        move |config, shutdown| maestro_inspector::run(config, inspector, shutdown),
    )
}
