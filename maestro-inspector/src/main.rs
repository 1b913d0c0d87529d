//! `maestro-inspector` binary; see the crate docs.

use clap::Parser;
use maestro_inspector::InspectorConfig;
use maestro_inspector::args::Args;
use maestro_inspector::faults::FaultBook;
use maestro_inspector::sources;
use maestro_protocol::Role;
use std::process::ExitCode;

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
