//! The command line: clap types and [`run`], which tests call in process.

use crate::exit;
use crate::report;
use maestro_control::ControlArgs;
use maestro_controller::outcome::{self, PeerOutcome, PeerStatus};
use maestro_controller::run::{Finished, RunError, RunOptions, run_test};
use maestro_controller::{ControlError, Controller};
use maestro_protocol::{
    Body, Halt, PeerId, Ping, PresenceStatus, Role, Segment, StatsRequest, Target,
};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const EXIT_CODES: &str = "Exit codes: 0 ok; 2 usage error; 3 control broker unreachable; \
4 peers missing (no reply, offline, error, or none at all) or a run degraded; \
5 SUT unreachable; 130 interrupted.";

/// Controls a maestro cluster through its control broker.
#[derive(Debug, clap::Parser)]
#[command(name = "maestro-cli", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub control: ControlArgs,
    /// Output format: a table for people, JSON for machines.
    #[arg(short = 'o', long, env = "MAESTRO_OUTPUT", value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List the peers with round-trip time and clock offset.
    Ping(RequestArgs),
    /// Show each peer's state and counters.
    Stats(RequestArgs),
    /// Stop peers: they answer, clear their presence and exit.
    Halt(RequestArgs),
    /// Run a test across the cluster's workers and write its results folder.
    Start(crate::start::StartArgs),
    /// Run a test plan (TOML): phases, conditions, results, JUnit.
    Run(crate::run::RunArgs),
    /// Rebuild report.html in a plan's results folder.
    Report(ReportArgs),
    /// Compare two plan results folders; exit 1 when NEW is worse than BASE.
    Compare(crate::compare::CompareArgs),
    /// Stop the test that is running: producers stop, consumers drain, and the `start`
    /// that launched it finishes with its results.
    Stop(StopArgs),
    /// Remove offline peers (left behind by a crash) from the cluster's presence.
    Forget(ForgetArgs),
    /// The original Maestro spelling: `maestro-cli maestro -c ping`.
    Maestro(MaestroArgs),
    /// Try it with nothing installed: an embedded control broker, in-process workers and
    /// an inspector on this machine; ping, stats and halt them.
    Quickstart(crate::quickstart::QuickstartArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct RequestArgs {
    /// How long to wait for every peer to answer.
    #[arg(short, long, env = "MAESTRO_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Only the peers of this group.
    #[arg(long, env = "MAESTRO_GROUP", conflicts_with_all = ["role", "peer"])]
    pub group: Option<Segment>,
    /// Only the peers of this role.
    #[arg(long, env = "MAESTRO_ROLE", value_enum, conflicts_with = "peer")]
    pub role: Option<PeerRole>,
    /// Only this peer (by id).
    #[arg(long, env = "MAESTRO_PEER")]
    pub peer: Option<PeerId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PeerRole {
    Worker,
    Inspector,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ForgetArgs {
    /// Peers to forget (by id); without any, every offline peer.
    pub peers: Vec<PeerId>,
    /// How long to wait for the control broker.
    #[arg(short, long, env = "MAESTRO_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// A plan results folder (results/<plan>-<run-id>).
    pub folder: std::path::PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StopArgs {
    /// Only this run [default: every run in progress].
    #[arg(long, env = "MAESTRO_RUN")]
    pub run: Option<maestro_protocol::RunId>,
    /// How long to wait for the workers.
    #[arg(short, long, env = "MAESTRO_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, clap::Args)]
pub struct MaestroArgs {
    /// The command to send.
    #[arg(short = 'c', long = "command", env = "MAESTRO_COMMAND", value_enum)]
    pub command: MaestroCommand,
    #[command(flatten)]
    pub request: RequestArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MaestroCommand {
    Ping,
    Stats,
    Halt,
}

/// What a command produced: text for stdout, an exit code, and a problem for stderr.
#[derive(Debug)]
pub struct Outcome {
    pub stdout: String,
    pub code: u8,
    pub problem: Option<String>,
    /// One entry per peer, for callers that want the data rather than the text.
    pub peers: Vec<PeerOutcome>,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Start(#[from] RunError),
    #[error("embedded control broker: {0}")]
    Broker(#[from] maestro_broker::BrokerError),
    #[error(transparent)]
    Args(#[from] maestro_control::ArgsError),
    #[error("invalid plan: {0}")]
    Plan(#[from] maestro_controller::plan::PlanError),
    #[error("cannot write {0}: {1}")]
    Io(std::path::PathBuf, std::io::Error),
    #[error(transparent)]
    Results(#[from] maestro_report::ResultsError),
    #[error(transparent)]
    PlanRun(#[from] maestro_controller::plans::PlanRunError),
    #[error("embedded peers did not all answer within {0:?}")]
    EmbeddedPeers(Duration),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Control(ControlError::Interrupted) => exit::INTERRUPTED,
            CliError::Control(_) | CliError::Broker(_) => exit::CLUSTER_UNREACHABLE,
            CliError::EmbeddedPeers(_) => exit::PEERS_MISSING,
            CliError::Args(_) | CliError::Plan(_) => exit::USAGE,
            CliError::Io(..) => exit::INTERNAL,
            CliError::Results(e) => results_code(e),
            CliError::Start(e) => run_code(e),
            CliError::PlanRun(e) => {
                use maestro_controller::plans::PlanRunError as P;
                match e {
                    P::Control(ControlError::Interrupted) => exit::INTERRUPTED,
                    P::Control(_) => exit::CLUSTER_UNREACHABLE,
                    P::Run(e) => run_code(e),
                    P::Plan(_) => exit::USAGE,
                    P::Results(e) => results_code(e),
                    P::Io(..) => exit::INTERNAL,
                    P::NotEnoughWorkers { .. } => exit::PEERS_MISSING,
                }
            }
        }
    }
}

/// Reading a results folder that is not one is a usage error; failing to write is internal.
fn results_code(e: &maestro_report::ResultsError) -> u8 {
    use maestro_report::ResultsError as R;
    match e {
        R::Read(..) | R::Field { .. } | R::Schema { .. } => exit::USAGE,
        R::Write(..) => exit::INTERNAL,
    }
}

fn run_code(e: &RunError) -> u8 {
    match e {
        RunError::Control(ControlError::Interrupted) => exit::INTERRUPTED,
        RunError::Control(_) => exit::CLUSTER_UNREACHABLE,
        RunError::Spec(_) => exit::USAGE,
        RunError::Sut { .. } => exit::SUT_UNREACHABLE,
        RunError::NoWorkers(_) | RunError::Workers(_) => exit::PEERS_MISSING,
        RunError::Results { .. } => exit::INTERNAL,
        RunError::Report(e) => results_code(e),
    }
}

impl RequestArgs {
    fn target(&self) -> Target {
        if let Some(peer) = &self.peer {
            Target::Peer(peer.clone())
        } else if let Some(group) = &self.group {
            Target::Group(group.clone())
        } else {
            match self.role {
                Some(PeerRole::Worker) => Target::Role(Role::Worker),
                Some(PeerRole::Inspector) => Target::Role(Role::Inspector),
                None => Target::All,
            }
        }
    }
}

/// Runs one CLI command until it is done or `shutdown` is cancelled.
pub async fn run(cli: Cli, shutdown: CancellationToken) -> Result<Outcome, CliError> {
    let (kind, args) = match cli.command {
        Command::Ping(a) => (MaestroCommand::Ping, a),
        Command::Stats(a) => (MaestroCommand::Stats, a),
        Command::Halt(a) => (MaestroCommand::Halt, a),
        Command::Maestro(m) => (m.command, m.request),
        Command::Forget(f) => return forget(&cli.control, cli.output, f, &shutdown).await,
        Command::Quickstart(q) => return crate::quickstart::run(q, cli.output, &shutdown).await,
        Command::Start(s) => return start(&cli.control, cli.output, s, &shutdown).await,
        Command::Stop(s) => return stop(&cli.control, cli.output, s, &shutdown).await,
        Command::Run(r) => {
            return crate::run::run(&cli.control, cli.output, r, &shutdown).await;
        }
        Command::Report(r) => {
            let path = maestro_report::html::write(&r.folder)?;
            return Ok(Outcome {
                stdout: format!("wrote {}", path.display()),
                code: exit::OK,
                problem: None,
                peers: Vec::new(),
            });
        }
        Command::Compare(c) => return crate::compare::compare(&c, cli.output),
    };
    let mut controller = connect(&cli.control, args.timeout, &shutdown).await?;
    let target = args.target();
    let exchange = controller
        .request(&target, kind.body(), args.timeout, &shutdown)
        .await?;
    controller.close().await;
    Ok(outcome(
        kind,
        &exchange,
        cli.output,
        cli.control.cluster.as_str(),
        args.timeout,
    ))
}

/// Connects to the control broker, unless interrupted first.
async fn connect(
    control: &ControlArgs,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<Controller, CliError> {
    tokio::select! {
        _ = shutdown.cancelled() => Err(ControlError::Interrupted.into()),
        c = Controller::connect(&control.url, &control.cluster, timeout) => Ok(c?),
    }
}

/// Renders an exchange and judges it.
pub(crate) fn outcome(
    kind: MaestroCommand,
    exchange: &crate::Exchange,
    output: Output,
    cluster: &str,
    timeout: Duration,
) -> Outcome {
    let peers = outcome::outcomes(exchange);
    let stdout = match output {
        Output::Json => serde_json::to_string_pretty(&peers).unwrap_or_default(),
        Output::Table => match kind {
            MaestroCommand::Ping => report::ping_table(&peers),
            MaestroCommand::Stats => report::stats_table(&peers),
            MaestroCommand::Halt => report::halt_table(&peers),
        },
    };
    let (code, problem) = judge(&peers, cluster, &exchange.target, timeout);
    Outcome {
        stdout,
        code,
        problem,
        peers,
    }
}

impl MaestroCommand {
    pub(crate) fn body(self) -> Body {
        match self {
            MaestroCommand::Ping => Body::Ping(Ping {}),
            MaestroCommand::Stats => Body::StatsRequest(StatsRequest {}),
            MaestroCommand::Halt => Body::Halt(Halt {}),
        }
    }
}

/// Exit code and message: every peer must have answered.
fn judge(
    peers: &[PeerOutcome],
    cluster: &str,
    target: &Target,
    timeout: Duration,
) -> (u8, Option<String>) {
    if peers.is_empty() {
        let whom = match target {
            Target::All => String::new(),
            Target::Role(r) => format!(" with role {r}"),
            Target::Group(g) => format!(" in group {g}"),
            Target::Peer(p) => format!(" with id {p}"),
        };
        return (
            exit::PEERS_MISSING,
            Some(format!("no peers{whom} in cluster {cluster:?}")),
        );
    }
    let missing: Vec<String> = peers
        .iter()
        .filter(|p| p.status != PeerStatus::Ok)
        .map(|p| {
            let why = match p.status {
                PeerStatus::NoReply => {
                    format!("no reply within {}", humantime::format_duration(timeout))
                }
                PeerStatus::Offline => "offline (disconnected abnormally)".into(),
                PeerStatus::Error => p.error.clone().unwrap_or_default(),
                PeerStatus::Ok => unreachable!(),
            };
            format!("  {} {} ({}, id {}): {why}", p.role, p.name, p.host, p.id)
        })
        .collect();
    if missing.is_empty() {
        return (exit::OK, None);
    }
    (
        exit::PEERS_MISSING,
        Some(format!(
            "{} of {} peers did not answer:\n{}",
            missing.len(),
            peers.len(),
            missing.join("\n")
        )),
    )
}

async fn start(
    control: &ControlArgs,
    output: Output,
    args: crate::start::StartArgs,
    shutdown: &CancellationToken,
) -> Result<Outcome, CliError> {
    let mut controller = connect(control, args.timeout, shutdown).await?;
    let options = RunOptions {
        group: args.group.clone(),
        results: args.results.clone(),
        timeout: args.timeout,
        progress: output == Output::Table,
    };
    let finished = run_test(&mut controller, args.spec(), &options, shutdown).await?;
    controller.close().await;
    Ok(finished_outcome(&finished, output))
}

/// Output and exit code of a finished run.
pub(crate) fn finished_outcome(f: &Finished, output: Output) -> Outcome {
    let s = &f.summary;
    let stdout = match output {
        Output::Json => serde_json::to_string_pretty(s).unwrap_or_default(),
        Output::Table => crate::start::summary_table(s, &f.folder),
    };
    let (code, problem) = if s.interrupted {
        (
            exit::INTERRUPTED,
            Some("interrupted; partial results written".to_owned()),
        )
    } else if s.degraded {
        (
            exit::PEERS_MISSING,
            Some(format!("run degraded: {}", s.degraded_reasons.join("; "))),
        )
    } else {
        (exit::OK, None)
    };
    Outcome {
        stdout,
        code,
        problem,
        peers: Vec::new(),
    }
}

async fn stop(
    control: &ControlArgs,
    output: Output,
    args: StopArgs,
    shutdown: &CancellationToken,
) -> Result<Outcome, CliError> {
    let mut controller = connect(control, args.timeout, shutdown).await?;
    let stats = controller
        .request(
            &Target::Role(Role::Worker),
            Body::StatsRequest(StatsRequest {}),
            args.timeout,
            shutdown,
        )
        .await?;
    let mut stopped = Vec::new();
    for (id, (note, _)) in &stats.replies {
        let Body::Stats(s) = &note.body else { continue };
        let Some(run) = &s.run else { continue };
        if args.run.as_ref().is_some_and(|r| r != run) {
            continue;
        }
        let stop = Body::Stop(maestro_protocol::Stop { run: run.clone() });
        controller.send(&Target::Peer(id.clone()), stop).await?;
        stopped.push(serde_json::json!({"id": id, "name": s.peer.name, "run": run}));
    }
    controller.close().await;
    let stdout = match output {
        Output::Json => serde_json::to_string_pretty(&stopped).unwrap_or_default(),
        Output::Table if stopped.is_empty() => "no run in progress".to_owned(),
        Output::Table => stopped
            .iter()
            .map(|s| {
                format!(
                    "stopping run {} on {}",
                    s["run"].as_str().unwrap_or(""),
                    s["name"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
    };
    Ok(Outcome {
        stdout,
        code: exit::OK,
        problem: None,
        peers: Vec::new(),
    })
}

async fn forget(
    control: &ControlArgs,
    output: Output,
    args: ForgetArgs,
    shutdown: &CancellationToken,
) -> Result<Outcome, CliError> {
    let mut controller = connect(control, args.timeout, shutdown).await?;
    let presence = controller.settle_presence().await?;
    let chosen: Vec<(PeerId, String)> = presence
        .values()
        .filter(|p| {
            if args.peers.is_empty() {
                p.status == PresenceStatus::Offline
            } else {
                args.peers.contains(&p.peer.id)
            }
        })
        .map(|p| (p.peer.id.clone(), p.peer.name.clone()))
        .collect();
    let unknown: Vec<String> = args
        .peers
        .iter()
        .filter(|id| !presence.contains_key(*id))
        .map(|id| id.to_string())
        .collect();
    for (id, _) in &chosen {
        controller.forget(id).await?;
    }
    controller.close().await;
    let stdout = match output {
        Output::Json => serde_json::to_string_pretty(
            &chosen
                .iter()
                .map(|(id, name)| serde_json::json!({"id": id, "name": name}))
                .collect::<Vec<_>>(),
        )
        .unwrap_or_default(),
        Output::Table => chosen
            .iter()
            .map(|(id, name)| format!("forgot {name} ({id})"))
            .collect::<Vec<_>>()
            .join("\n"),
    };
    let (code, problem) = if unknown.is_empty() {
        (exit::OK, None)
    } else {
        (
            exit::PEERS_MISSING,
            Some(format!("no such peers: {}", unknown.join(", "))),
        )
    };
    Ok(Outcome {
        stdout,
        code,
        problem,
        peers: Vec::new(),
    })
}
