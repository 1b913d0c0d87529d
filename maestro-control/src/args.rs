//! Command-line arguments shared by the maestro binaries (clap derive; every flag is also
//! a `MAESTRO_<FLAG>` environment variable), and the common `main` of the daemons.

use crate::peer::{PeerConfig, PeerError};
use crate::session::{Signer, now};
use crate::url::{ControlUrl, DEFAULT_CONTROL_URL, UrlError};
use maestro_protocol::signing::ClusterKey;
use maestro_protocol::{ClusterId, PeerId, PeerInfo, Role, Segment, SegmentError};
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where the control broker is and which cluster to join.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlArgs {
    /// Control broker URL; credentials go in it: mqtt://user:pass@host:port (mqtts:// for
    /// TLS, default port 8883)
    #[arg(short = 'm', long = "maestro-url", env = "MAESTRO_URL", default_value = DEFAULT_CONTROL_URL, global = true)]
    pub url: ControlUrl,
    /// CA certificate (PEM) to trust for an mqtts:// control broker [default: the
    /// system's CAs]
    #[arg(long, env = "MAESTRO_CA", global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for an mqtts:// control broker that wants one
    #[arg(
        long,
        env = "MAESTRO_CERT",
        global = true,
        value_name = "FILE",
        requires = "key"
    )]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM)
    #[arg(
        long,
        env = "MAESTRO_KEY",
        global = true,
        value_name = "FILE",
        requires = "cert"
    )]
    pub key: Option<PathBuf>,
    /// The cluster's shared secret: notes are signed with it (HMAC-SHA256), and unsigned,
    /// wrongly signed, replayed or stale requests are refused. Every peer and controller
    /// of the cluster needs the same file (`maestro-cli certs init` writes one).
    #[arg(
        long,
        env = "MAESTRO_CLUSTER_KEY_FILE",
        global = true,
        value_name = "FILE"
    )]
    pub cluster_key_file: Option<PathBuf>,
    /// Cluster namespace on the control broker.
    #[arg(
        long,
        env = "MAESTRO_CLUSTER",
        default_value = "default",
        global = true
    )]
    pub cluster: ClusterId,
}

/// Identity of a worker or inspector.
#[derive(Debug, Clone, clap::Args)]
pub struct PeerArgs {
    #[command(flatten)]
    pub control: ControlArgs,
    /// Peer name shown by ping [default: ROLE-PID@HOST]
    #[arg(long, env = "MAESTRO_NAME")]
    pub name: Option<String>,
    /// Group this peer belongs to; requests can address a group.
    #[arg(long, env = "MAESTRO_GROUP", default_value = "all")]
    pub group: Segment,
    /// Member name within the group [default: the peer name]
    #[arg(long, env = "MAESTRO_MEMBER")]
    pub member: Option<String>,
    /// Host name to report [default: this machine's host name]
    #[arg(long, env = "MAESTRO_HOST")]
    pub host: Option<String>,
    /// MQTT keep-alive of the control connection (whole seconds); the broker declares the
    /// peer offline after 1.5 times this without traffic.
    #[arg(long, env = "MAESTRO_KEEP_ALIVE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub keep_alive: Duration,
    /// Serve this peer's health metrics for Prometheus on PORT or HOST:PORT (`/metrics`;
    /// a bare port binds to 127.0.0.1)
    #[arg(long, env = "MAESTRO_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<crate::metrics::MetricsListen>,
}

impl ControlArgs {
    /// The control URL with its TLS settings, built once (files read now).
    pub fn endpoint(&self) -> Result<ControlUrl, UrlError> {
        self.url
            .clone()
            .with_tls(self.ca.clone(), self.cert.clone(), self.key.clone())
    }

    /// The signer of this process's notes: with the cluster key, when a file is given.
    pub fn signer(&self) -> Result<Signer, ArgsError> {
        let Some(path) = &self.cluster_key_file else {
            return Ok(Signer::default());
        };
        let secret = std::fs::read(path).map_err(|e| ArgsError::KeyFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let key = ClusterKey::from_secret(&secret).map_err(|e| ArgsError::KeyFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Signer::new(Some(std::sync::Arc::new(key))))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("keep-alive {0:?} must be whole seconds from 1 s to 65535 s")]
    KeepAlive(Duration),
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error("cluster key file {path:?}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
}

impl PeerArgs {
    /// The peer's configuration, with a fresh id.
    pub fn into_config(self, role: Role, capabilities: &[&str]) -> Result<PeerConfig, ArgsError> {
        let ka = self.keep_alive;
        if ka.subsec_nanos() != 0 || ka < Duration::from_secs(1) || ka.as_secs() > u16::MAX.into() {
            return Err(ArgsError::KeepAlive(ka));
        }
        let host = self
            .host
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
        let pid = std::process::id();
        let name = self.name.unwrap_or_else(|| format!("{role}-{pid}@{host}"));
        Ok(PeerConfig {
            metrics_listen: self.metrics_listen,
            signer: self.control.signer()?,
            url: self.control.endpoint()?,
            cluster: self.control.cluster,
            info: PeerInfo {
                id: PeerId::random(role.as_str()),
                member: self.member.unwrap_or_else(|| name.clone()),
                name,
                role,
                host,
                group: self.group,
                version: env!("CARGO_PKG_VERSION").to_owned(),
                capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
                keep_alive_ms: ka.as_millis() as u64,
                pid,
                started_at_us: now(),
            },
        })
    }
}

/// The `main` of a daemon: logs to stderr, runs `run` on a single-threaded runtime until
/// SIGINT, SIGTERM or a halt note. Exit codes: 0 stopped, 2 bad arguments, 70 failure.
pub fn daemon_main<F, Fut>(args: PeerArgs, role: Role, capabilities: &[&str], run: F) -> ExitCode
where
    F: FnOnce(PeerConfig, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), PeerError>>,
{
    let binary = format!("maestro-{role}");
    let config = match args.into_config(role, capabilities) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{binary}: error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match crate::run_until_signal(|shutdown| run(config, shutdown)) {
        Ok(result) => result,
        Err(e) => {
            eprintln!("{binary}: error: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{binary}: error: {e}");
            ExitCode::from(70)
        }
    }
}
