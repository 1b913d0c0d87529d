//! Command-line arguments shared by the maestro binaries (clap derive; every flag is also
//! a `MAESTRO_<FLAG>` environment variable), and the common `main` of the daemons.

use crate::peer::{PeerConfig, PeerError};
use crate::session::{Signer, now};
use crate::url::{ControlUrl, DEFAULT_CONTROL_URL, UrlError};
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
    /// Folder of signing keys (`maestro-cli certs init DIR` writes one): notes are signed
    /// (Ed25519) and unsigned, wrongly signed, replayed or stale notes are refused.
    /// Controllers load controller.key and peer.pub; workers and inspectors load peer.key
    /// and controller.pub, so no peer can command another. [controller default: the
    /// folder remembered for the control URL, ~/.config/maestro/keys/HOST-PORT, if any]
    #[arg(long, env = "MAESTRO_KEYS", global = true, value_name = "DIR")]
    pub keys: Option<PathBuf>,
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
    /// Obey unsigned notes from a control broker beyond loopback (LAB ONLY: anyone who can
    /// reach the broker can then make this peer send traffic anywhere, inject faults or
    /// halt it). Without keys, a peer refuses to start unless its broker is on loopback or
    /// this is given.
    #[arg(long, env = "MAESTRO_INSECURE", conflicts_with = "keys")]
    pub insecure: bool,
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

    /// The signer of `role`'s notes: with the keys of `--keys`, or for a controller the
    /// folder remembered for the control URL when it exists; otherwise unsigned.
    pub fn signer(&self, role: Role) -> Result<Signer, ArgsError> {
        let dir = match &self.keys {
            Some(dir) => dir.clone(),
            None => match crate::keys::remembered_dir(&self.url)
                .filter(|d| role == Role::Controller && d.is_dir())
            {
                Some(dir) => {
                    tracing::debug!(folder = %dir.display(), "using the keys remembered for this control URL");
                    dir
                }
                None => return Ok(Signer::default()),
            },
        };
        Ok(Signer::new(Some(crate::keys::load(&dir, role)?)))
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
    #[error("keys: {0}")]
    Keys(#[from] crate::keys::KeysError),
    #[error(
        "the control broker {url} is not on this machine and this {role} has no keys: anyone who can reach the broker could command it. Give it --keys DIR (`maestro-cli certs init DIR` writes them), or --insecure for a lab network you trust"
    )]
    Insecure { url: Box<ControlUrl>, role: Role },
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
        let signer = self.control.signer(role)?;
        if !signer.is_on() {
            if !self.control.url.is_loopback() && !self.insecure {
                return Err(ArgsError::Insecure {
                    url: Box::new(self.control.url.clone()),
                    role,
                });
            }
            if self.insecure {
                tracing::warn!(url = %self.control.url,
                    "--insecure: this {role} obeys unsigned notes; anyone who can reach the control broker can command it (lab only)");
            }
        }
        Ok(PeerConfig {
            metrics_listen: self.metrics_listen,
            signer,
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
                machine: Some(this_machine()),
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

/// This machine: the CPUs this process may use and the kernel's release.
pub fn this_machine() -> maestro_protocol::Machine {
    maestro_protocol::Machine {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get() as u32),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_owned())
            .unwrap_or_else(|_| std::env::consts::OS.to_owned()),
    }
}
