//! `maestro-cli quickstart`: a whole cluster in this process, with nothing installed. An
//! embedded control broker and an embedded MQTT broker as the system under test, each on a
//! free loopback port; in-process workers and an inspector (each a real peer on its own
//! MQTT connection); then ping, a short load test with its summary and results folder,
//! and halt, as a user would run them against a real cluster.

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
    /// Total messages per second of the test.
    #[arg(long, env = "MAESTRO_RATE", default_value_t = 2000.0)]
    pub rate: f64,
    /// How long the test sends.
    #[arg(short, long, env = "MAESTRO_DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Where the results folder goes.
    #[arg(long, env = "MAESTRO_RESULTS", default_value = "results")]
    pub results: std::path::PathBuf,
}

/// A free loopback address for an embedded broker.
fn free_addr() -> Result<std::net::SocketAddr, maestro_broker::BrokerError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|source| maestro_broker::BrokerError::Listen {
            addr: ([127, 0, 0, 1], 0).into(),
            source,
        })
}

const TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(
    args: QuickstartArgs,
    output: Output,
    shutdown: &CancellationToken,
) -> Result<Outcome, CliError> {
    let listen = free_addr()?;
    maestro_broker::start(&maestro_broker::BrokerConfig {
        listen,
        ..Default::default()
    })
    .await?;
    let sut = free_addr()?;
    maestro_broker::start(&maestro_broker::BrokerConfig {
        listen: sut,
        ..Default::default()
    })
    .await?;
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
        "embedded control broker on mqtt://{listen}, embedded MQTT broker (the SUT) on mqtt://{sut}, cluster {cluster}, {} workers and 1 inspector in this process\n",
        args.workers
    )];
    let mut json = serde_json::Map::new();
    let mut code = exit::OK;
    let mut problems = Vec::new();

    let ping = controller
        .request(&Target::All, MaestroCommand::Ping.body(), TIMEOUT, shutdown)
        .await?;
    let o = outcome(
        MaestroCommand::Ping,
        &ping,
        output,
        cluster.as_str(),
        TIMEOUT,
    );
    text.push(format!("$ maestro-cli ping\n{}\n", o.stdout));
    json.insert(
        "ping".into(),
        serde_json::to_value(&o.peers).unwrap_or_default(),
    );
    code = code.max(o.code);
    problems.extend(o.problem);

    let sut_url = format!("mqtt://{sut}/quickstart?qos=1");
    let spec = maestro_protocol::TestSpec {
        sut: sut_url.clone(),
        rate: args.rate,
        duration_ms: Some(args.duration.as_millis() as u64),
        count: None,
        warmup_ms: 0,
        size: maestro_protocol::MessageSize::Fixed(256),
        producers: u32::from(args.workers),
        consumers: u32::from(args.workers),
        topics: 1,
    };
    let command = format!(
        "$ maestro-cli start --sut '{sut_url}' --rate {} --duration {} --producers {} --consumers {}",
        args.rate,
        humantime::format_duration(args.duration),
        args.workers,
        args.workers
    );
    if output == Output::Table {
        eprintln!("{command}");
    }
    let options = crate::start::RunOptions {
        group: None,
        results: args.results.clone(),
        timeout: TIMEOUT,
        progress: output == Output::Table,
    };
    let finished = crate::start::run_test(&mut controller, spec, &options, shutdown).await?;
    let run = crate::cli::finished_outcome(&finished, output);
    text.push(format!("{command}\n{}\n", run.stdout));
    json.insert(
        "summary".into(),
        serde_json::to_value(&finished.summary).unwrap_or_default(),
    );
    code = code.max(run.code);
    problems.extend(run.problem);

    let halt = controller
        .request(&Target::All, MaestroCommand::Halt.body(), TIMEOUT, shutdown)
        .await?;
    let o = outcome(
        MaestroCommand::Halt,
        &halt,
        output,
        cluster.as_str(),
        TIMEOUT,
    );
    text.push(format!("$ maestro-cli halt\n{}\n", o.stdout));
    json.insert(
        "halt".into(),
        serde_json::to_value(&o.peers).unwrap_or_default(),
    );
    code = code.max(o.code);
    problems.extend(o.problem);
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
        "Next: a real cluster with maestro-broker, maestro-worker and maestro-inspector, and your own broker as the SUT (see README.md)."
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
