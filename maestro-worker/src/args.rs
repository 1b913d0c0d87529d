//! The command line of `maestro-worker`: here so that the docs' reference is generated from it.

/// A maestro worker: joins the cluster on the control broker and answers its notes.
///
/// Exit codes: 0 stopped (signal or halt), 2 bad arguments, 70 failure.
#[derive(Debug, clap::Parser)]
#[command(name = "maestro-worker", version)]
pub struct Args {
    #[command(flatten)]
    pub peer: maestro_control::PeerArgs,
    /// The folder files named in a SUT URL (ca=, cert=, key=, client_ca=, librdkafka's
    /// ssl.*.location, ...) must be under; links and '..' are followed first. Without it
    /// the worker reads no file a SUT URL names: a SUT URL comes in a note.
    #[arg(long, env = "MAESTRO_FILES_DIR", value_name = "DIR")]
    pub files_dir: Option<std::path::PathBuf>,
}
