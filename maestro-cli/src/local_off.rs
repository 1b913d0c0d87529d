//! The local cluster when this CLI was built without the `local` feature: `quickstart`
//! and `run --local` say so (exit 2) instead of linking the broker and the SUT drivers.

use crate::output::CliError;
use maestro_control::ControlUrl;
use maestro_controller::Controller;
use maestro_protocol::ClusterId;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long the local cluster may take to come up.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// No folder: nothing runs in process.
#[derive(Debug, Clone, Copy)]
pub struct FilesDir;

/// `--files-dir` has nothing to give a folder to.
pub fn files_dir(_dir: Option<&std::path::Path>) -> Result<FilesDir, String> {
    Ok(FilesDir)
}

#[derive(Debug)]
pub struct LocalCluster {
    pub url: ControlUrl,
    pub cluster: ClusterId,
    pub sut: Option<SocketAddr>,
    pub workers: u16,
}

impl LocalCluster {
    /// Refuses: this build has no in-process broker, workers or inspector.
    pub async fn start(
        _cluster: &str,
        _workers: u16,
        _with_sut: bool,
        _files: FilesDir,
        _shutdown: &CancellationToken,
    ) -> Result<(Self, Controller), CliError> {
        Err(CliError::NotBuilt(
            "a local cluster (quickstart, run --local)",
        ))
    }

    pub async fn stop(self) {}

    pub async fn abort(self) {}
}
