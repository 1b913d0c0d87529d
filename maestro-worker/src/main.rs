//! `maestro-worker` binary; see the crate docs.

use clap::Parser;
use maestro_protocol::Role;
use maestro_worker::args::Args;
use std::process::ExitCode;

fn main() -> ExitCode {
    maestro_control::init_tracing("info,rumqttc=warn,lapin=off,rdkafka=warn");
    let args = Args::parse();
    let files = match &args.files_dir {
        Some(dir) => match maestro_worker::files::FilesDir::new(dir) {
            Ok(files) => files,
            Err(e) => {
                eprintln!("maestro-worker: error: --files-dir {}: {e}", dir.display());
                return ExitCode::from(2);
            }
        },
        None => maestro_worker::files::FilesDir::none(),
    };
    maestro_control::daemon_main(
        args.peer,
        Role::Worker,
        maestro_worker::CAPABILITIES,
        |config, shutdown| maestro_worker::run_with_files(config, files, shutdown),
    )
}
