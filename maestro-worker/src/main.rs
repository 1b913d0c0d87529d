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
}

fn main() -> ExitCode {
    maestro_control::init_tracing("info,rumqttc=warn,lapin=off,rdkafka=warn");
    let args = Args::parse();
    maestro_control::daemon_main(
        args.peer,
        Role::Worker,
        maestro_worker::CAPABILITIES,
        maestro_worker::run,
    )
}
