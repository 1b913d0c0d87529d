//! `maestro-worker` binary; see the crate docs.

use clap::Parser;
use maestro_protocol::Role;
use std::process::ExitCode;

/// A maestro worker: joins the cluster on the control broker and answers its notes.
///
/// Exit codes: 0 stopped (signal or halt), 2 bad arguments, 70 failure.
#[derive(Debug, Parser)]
#[command(name = "maestro-worker", version)]
struct Args {
    #[command(flatten)]
    peer: maestro_control::PeerArgs,
    /// The folder files named in a SUT URL (ca=, cert=, key=, client_ca=, librdkafka's
    /// ssl.*.location, ...) must be under; links and '..' are followed first. Without it
    /// the worker reads no file a SUT URL names: a SUT URL comes in a note.
    #[arg(long, env = "MAESTRO_FILES_DIR", value_name = "DIR")]
    files_dir: Option<std::path::PathBuf>,
}

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
