//! `maestro-cli quickstart`: a whole cluster in this process, with nothing installed. An
//! embedded control broker on a free loopback port, in-process workers and an inspector
//! (each a real peer on its own MQTT connection), then ping, stats and halt, as a user
//! would run them against a real cluster.

use crate::cli::{CliError, MaestroCommand, Outcome, Output, outcome};
use crate::controller::Controller;
use crate::exit;
use maestro_control::{ControlArgs, ControlUrl, PeerArgs};
use maestro_protocol::{Body, ClusterId, Ping, Role, Segment, Target};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Args)]
pub struct QuickstartArgs {
    /// How many in-process workers to start.
    #[arg(long, env = "MAESTRO_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
}

const TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(
    args: QuickstartArgs,
    output: Output,
    shutdown: &CancellationToken,
) -> Result<Outcome, CliError> {
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|source| maestro_broker::BrokerError::Listen {
            addr: ([127, 0, 0, 1], 0).into(),
            source,
        })?;
    let broker = maestro_broker::BrokerConfig {
        listen,
        ..Default::default()
    };
    maestro_broker::start(&broker).await?;
    let url = ControlUrl {
        host: listen.ip().to_string(),
        port: listen.port(),
        username: None,
        password: None,
    };
    let cluster = ClusterId::new("quickstart").unwrap_or_default();

    let peers = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let peer_args = |name: String| PeerArgs {
        control: ControlArgs {
            url: url.clone(),
            cluster: cluster.clone(),
        },
        name: Some(name),
        group: Segment::new("all").unwrap_or_else(|_| unreachable!()),
        member: None,
        host: None,
        keep_alive: Duration::from_secs(5),
    };
    for i in 1..=args.workers {
        let config = peer_args(format!("worker-{i}"))
            .into_config(Role::Worker, maestro_worker::CAPABILITIES)?;
        tasks.spawn(maestro_worker::run(config, peers.child_token()));
    }
    let config = peer_args("inspector-1".into())
        .into_config(Role::Inspector, maestro_inspector::CAPABILITIES)?;
    tasks.spawn(maestro_inspector::run(config, peers.child_token()));
    let expected = usize::from(args.workers) + 1;

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

    let mut text = vec![format!(
        "embedded control broker on mqtt://{listen}, cluster {cluster}, {} workers and 1 inspector in this process\n",
        args.workers
    )];
    let mut json = serde_json::Map::new();
    let mut code = exit::OK;
    let mut problems = Vec::new();
    for kind in [
        MaestroCommand::Ping,
        MaestroCommand::Stats,
        MaestroCommand::Halt,
    ] {
        let ex = controller
            .request(&Target::All, kind.body(), TIMEOUT, shutdown)
            .await?;
        let o = outcome(kind, &ex, output, cluster.as_str(), TIMEOUT);
        let name = format!("{kind:?}").to_lowercase();
        text.push(format!("$ maestro-cli {name}\n{}\n", o.stdout));
        json.insert(name, serde_json::to_value(&o.peers).unwrap_or_default());
        code = code.max(o.code);
        problems.extend(o.problem);
    }
    controller.close().await;
    // Halted peers stop by themselves; make sure every task has ended.
    let drained = tokio::time::timeout(TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        peers.cancel();
        while tasks.join_next().await.is_some() {}
    }
    text.push(
        "Next: start a real cluster with maestro-broker, maestro-worker and maestro-inspector (see README.md)."
            .to_owned(),
    );
    Ok(Outcome {
        stdout: match output {
            Output::Table => text.join("\n"),
            Output::Json => serde_json::to_string_pretty(&json).unwrap_or_default(),
        },
        code,
        problem: (!problems.is_empty()).then(|| problems.join("\n")),
        peers: Vec::new(),
    })
}
