//! The command line of `maestro-inspector`: here so that the docs' reference is generated from it.

use crate::sources::SourceSpec;
use std::path::PathBuf;

/// A maestro inspector: reads the system under test and publishes what it reads every
/// second; runs the fault actions declared in its own file when a test plan names them.
///
/// Exit codes: 0 stopped (signal or halt), 2 bad arguments, 70 failure.
#[derive(Debug, clap::Parser)]
#[command(name = "maestro-inspector", version)]
pub struct Args {
    #[command(flatten)]
    pub peer: maestro_control::PeerArgs,
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
    pub sources: Vec<SourceSpec>,
    /// The fault actions this inspector may run (TOML: [[action]] name, kind, target,
    /// ...); notes can only name them. Without it, every fault is refused.
    #[arg(long, env = "MAESTRO_FAULTS", value_name = "FILE")]
    pub faults: Option<PathBuf>,
    /// Where the faults not healed yet are kept (each heal is written before its action
    /// runs); an inspector started again heals what the file holds before it joins
    /// [default: <temporary folder>/maestro-inspector-<name>.faults.json]
    #[arg(long, env = "MAESTRO_STATE_FILE", value_name = "FILE")]
    pub state_file: Option<PathBuf>,
}
