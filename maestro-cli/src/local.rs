//! A whole cluster in this process: an embedded control broker, optionally an embedded
//! MQTT broker as the system under test, in-process workers and an inspector (each a real
//! peer with its own MQTT connection). Used by `quickstart` and `run --local`.

use crate::output::CliError;
use maestro_control::{ControlArgs, ControlUrl, PeerArgs};
use maestro_controller::Controller;
use maestro_protocol::{Body, ClusterId, Ping, Role, Segment, Target};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The folder in-process workers may read files a SUT URL names from (`--files-dir`).
pub use maestro_worker::files::FilesDir;

/// `--files-dir` for in-process workers: `dir`, or no folder at all.
pub fn files_dir(dir: Option<&std::path::Path>) -> Result<FilesDir, String> {
    match dir {
        Some(dir) => FilesDir::new(dir).map_err(|e| format!("--files-dir {}: {e}", dir.display())),
        None => Ok(FilesDir::none()),
    }
}

/// How long the local cluster may take to come up.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A free loopback address for an embedded broker.
fn free_addr() -> Result<SocketAddr, maestro_broker::BrokerError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|source| maestro_broker::BrokerError::Listen {
            addr: ([127, 0, 0, 1], 0).into(),
            source,
        })
}

#[derive(Debug)]
pub struct LocalCluster {
    pub url: ControlUrl,
    pub cluster: ClusterId,
    /// The embedded SUT broker, when asked for.
    pub sut: Option<SocketAddr>,
    pub workers: u16,
    peers: CancellationToken,
    tasks: JoinSet<Result<(), maestro_control::PeerError>>,
}

impl LocalCluster {
    /// Starts the brokers and peers and returns once every peer answers a ping.
    pub async fn start(
        cluster: &str,
        workers: u16,
        with_sut: bool,
        files: FilesDir,
        shutdown: &CancellationToken,
    ) -> Result<(Self, Controller), CliError> {
        let listen = free_addr()?;
        maestro_broker::start(&maestro_broker::BrokerConfig {
            listen,
            ..Default::default()
        })
        .await?;
        let sut = if with_sut {
            let addr = free_addr()?;
            maestro_broker::start(&maestro_broker::BrokerConfig {
                listen: addr,
                ..Default::default()
            })
            .await?;
            Some(addr)
        } else {
            None
        };
        let url = ControlUrl {
            host: listen.ip().to_string(),
            port: listen.port(),
            username: None,
            password: None,
            secure: false,
            tls: None,
        };
        let cluster = ClusterId::new(cluster).unwrap_or_default();
        let peers = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let peer_args = |name: String| PeerArgs {
            control: ControlArgs {
                url: url.clone(),
                cluster: cluster.clone(),
                ca: None,
                cert: None,
                key: None,
                keys: None,
            },
            name: Some(name),
            group: Segment::new("all").unwrap_or_else(|_| unreachable!()),
            member: None,
            host: None,
            keep_alive: Duration::from_secs(5),
            metrics_listen: None,
            // The local control broker listens on loopback only.
            insecure: false,
        };
        for i in 1..=workers {
            let config = peer_args(format!("worker-{i}"))
                .into_config(Role::Worker, maestro_worker::CAPABILITIES)?;
            tasks.spawn(maestro_worker::run_with_files(
                config,
                files.clone(),
                peers.child_token(),
            ));
        }
        let config = peer_args("inspector-1".into())
            .into_config(Role::Inspector, maestro_inspector::CAPABILITIES)?;
        // The local SUT runs on this host: the inspector reads the host.
        let inspector = maestro_inspector::InspectorConfig {
            sources: vec![
                "host"
                    .parse()
                    .unwrap_or_else(|_| unreachable!("a valid source")),
            ],
            ..Default::default()
        };
        tasks.spawn(maestro_inspector::run(
            config,
            inspector,
            peers.child_token(),
        ));
        let expected = usize::from(workers) + 1;

        let mut controller = Controller::connect(&url, &cluster, TIMEOUT).await?;
        let started = Instant::now();
        loop {
            let ex = controller
                .request(&Target::All, Body::Ping(Ping {}), TIMEOUT, shutdown)
                .await?;
            if ex.replies.len() == expected {
                break;
            }
            if started.elapsed() > TIMEOUT {
                return Err(CliError::EmbeddedPeers(TIMEOUT));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let local = LocalCluster {
            url,
            cluster,
            sut,
            workers,
            peers,
            tasks,
        };
        Ok((local, controller))
    }

    /// Waits for the peers to end (after a halt), or stops them.
    pub async fn stop(mut self) {
        if tokio::time::timeout(TIMEOUT, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            self.peers.cancel();
            while self.tasks.join_next().await.is_some() {}
        }
    }

    /// Stops the peers now.
    pub async fn abort(mut self) {
        self.peers.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}
