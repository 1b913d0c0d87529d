//! The command line: clap types and [`run`], which tests call in process.

use crate::exit;
pub use crate::output::{CliError, MaestroCommand, Outcome, Output};
use crate::report::{finished_outcome, outcome};
use maestro_control::ControlArgs;
use maestro_controller::run::{RunOptions, run_test};
use maestro_controller::{ControlError, Controller};
use maestro_protocol::{Body, PeerId, PresenceStatus, Role, Segment, StatsRequest, Target};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Controls a maestro cluster through its control broker.
#[derive(Debug, clap::Parser)]
#[command(name = "maestro-cli", version, after_help = crate::exit::help())]
pub struct Cli {
    #[command(flatten)]
    pub control: ControlArgs,
    /// Output format: a table for people, JSON for machines.
    #[arg(short = 'o', long, env = "MAESTRO_OUTPUT", value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
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
    /// Compare two plan results folders; exit 1 when NEW is worse than BASE (or, with
    /// --history N, than the noise band of its plan's last N runs).
    Compare(crate::compare::CompareArgs),
    /// Rebuild the results index (index.sqlite) from every results folder; `start` and
    /// `run` add their results to it as they finish.
    Index(crate::history::IndexArgs),
    /// A web UI over the results folder (runs, reports, comparisons, trends with their
    /// noise bands) and a live page of the cluster's runs, with a JSON API for each.
    Serve(crate::serve::ServeArgs),
    /// Write a run's results in another tool's format (OpenMessaging Benchmark's result
    /// JSON), so its charts read them.
    Export(ExportArgs),
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
    /// Lab certificates for TLS.
    Certs(CertsArgs),
}

#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Write ca.pem, ca.key, server.pem and server.key into DIR: a lab CA and a server
    /// certificate it signed, for localhost, 127.0.0.1 and every --san; and the cluster's
    /// signing keys (--keys DIR): controller.key and peer.key (owner-only) and their
    /// public halves controller.pub and peer.pub. Controllers need controller.key and
    /// peer.pub; workers and inspectors need peer.key and controller.pub.
    Init {
        /// Where the files go (made if missing).
        dir: std::path::PathBuf,
        /// Another name (host name or IP address) the server certificate covers.
        #[arg(
            long = "san",
            env = "MAESTRO_SAN",
            value_delimiter = ',',
            conflicts_with = "keys_only"
        )]
        sans: Vec<String>,
        /// Only the signing keys, no certificates.
        #[arg(long, env = "MAESTRO_KEYS_ONLY")]
        keys_only: bool,
        /// Replace files that exist.
        #[arg(long, env = "MAESTRO_FORCE")]
        force: bool,
    },
    /// Remember DIR's controller keys for the control URL (-m): later commands to that
    /// URL sign with them without --keys. Copies controller.key and peer.pub to
    /// ~/.config/maestro/keys/HOST-PORT ($XDG_CONFIG_HOME/maestro/keys/HOST-PORT).
    Remember {
        /// A keys folder with controller.key and peer.pub.
        dir: std::path::PathBuf,
    },
}

/// The SUT's password kept out of the command line (`start` and `run`): from the
/// environment or a file, for the user the SUT URL names.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SutPasswordArgs {
    /// Password for the user of the SUT URL (best from the environment: a flag shows in
    /// `ps`). The URL must name a user and hold no password.
    #[arg(
        long,
        env = "MAESTRO_SUT_PASSWORD",
        hide_env_values = true,
        conflicts_with = "sut_password_file",
        value_name = "PASSWORD"
    )]
    pub sut_password: Option<String>,
    /// File holding the password for the user of the SUT URL (one line; a final newline
    /// is dropped).
    #[arg(long, env = "MAESTRO_SUT_PASSWORD_FILE", value_name = "FILE")]
    pub sut_password_file: Option<std::path::PathBuf>,
}

impl SutPasswordArgs {
    /// `url` with the password these flags give, or as it is when they give none.
    pub fn apply(&self, url: maestro_protocol::SutUrl) -> Result<maestro_protocol::SutUrl, String> {
        let password = match (&self.sut_password, &self.sut_password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(file)) => {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    format!("cannot read the SUT password file {}: {e}", file.display())
                })?;
                let line = text.strip_suffix('\n').unwrap_or(&text);
                let line = line.strip_suffix('\r').unwrap_or(line);
                if line.is_empty() || line.contains('\n') {
                    return Err(format!(
                        "SUT password file {} must hold one non-empty line",
                        file.display()
                    ));
                }
                line.to_owned()
            }
            (None, None) => return Ok(url),
        };
        url.with_password(&password).map_err(|e| e.to_string())
    }
}

/// Which workers produce and which consume (`start` and `run`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RoleArgs {
    /// Producers on the first half of the workers, consumers on the others
    /// (OpenMessaging Benchmark's -x)
    #[arg(short = 'x', long = "split-roles", env = "MAESTRO_SPLIT_ROLES", conflicts_with_all = ["producer_group", "group"])]
    pub split_roles: bool,
    /// Producers only on the workers of this group (with --consumer-group)
    #[arg(
        long,
        env = "MAESTRO_PRODUCER_GROUP",
        requires = "consumer_group",
        conflicts_with = "group"
    )]
    pub producer_group: Option<Segment>,
    /// Consumers only on the workers of this group (with --producer-group)
    #[arg(
        long,
        env = "MAESTRO_CONSUMER_GROUP",
        requires = "producer_group",
        conflicts_with = "group"
    )]
    pub consumer_group: Option<Segment>,
}

impl RoleArgs {
    /// The roles these flags ask for; `None` when they ask for nothing.
    pub fn roles(&self) -> Option<maestro_controller::run::Roles> {
        use maestro_controller::run::Roles;
        match (&self.producer_group, &self.consumer_group) {
            (Some(p), Some(c)) => Some(Roles::Groups {
                producers: p.clone(),
                consumers: c.clone(),
            }),
            _ if self.split_roles => Some(Roles::Split),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct RequestArgs {
    /// How long to wait for every peer to answer.
    #[arg(short, long, env = "MAESTRO_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Only the peers of this group.
    #[arg(long, env = "MAESTRO_TARGET_GROUP", conflicts_with_all = ["role", "peer"])]
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
    #[arg(short, long, env = "MAESTRO_FORGET_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Formats `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// OpenMessaging Benchmark's result JSON (`TestResult`).
    Omb,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// A run's results folder (results/<run-id>), or a plan's (its last fixed phase's run).
    pub folder: std::path::PathBuf,
    /// The format to write.
    #[arg(long, env = "MAESTRO_FORMAT", value_enum)]
    pub format: ExportFormat,
    /// Where to write it [default: <run folder>/omb.json].
    #[arg(long = "out", env = "MAESTRO_OUT")]
    pub out: Option<std::path::PathBuf>,
    /// The length of the series' intervals (OMB's statsPeriod; its charts expect 10 s).
    #[arg(long, env = "MAESTRO_EXPORT_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// A plan results folder (results/<plan>-<run-id>): writes report.html. A run or plan
    /// folder whose controller ended mid-run (kill -9): writes a partial summary.json for
    /// each unfinished run from its flushed time series and prints it (exit 4).
    pub folder: std::path::PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StopArgs {
    /// Only this run [default: every run in progress].
    #[arg(long, env = "MAESTRO_RUN")]
    pub run: Option<maestro_protocol::RunId>,
    /// How long to wait for the workers to stop.
    #[arg(short, long, env = "MAESTRO_STOP_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
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
        Command::Report(r) => return crate::report::report_folder(&r.folder, cli.output),
        Command::Compare(c) => return crate::compare::compare(&c, cli.output),
        Command::Index(i) => return crate::history::index(&i, cli.output),
        Command::Serve(s) => return crate::serve::serve(&cli.control, s, &shutdown).await,
        Command::Export(e) => return crate::report::export(&e),
        Command::Certs(CertsArgs {
            command:
                CertsCommand::Init {
                    dir,
                    sans,
                    keys_only,
                    force,
                },
        }) => {
            if keys_only {
                let keys = maestro_controller::certs::init_keys(&dir, force)?;
                return Ok(crate::report::keys_outcome(&keys, cli.output));
            }
            let written = maestro_controller::certs::init(&dir, &sans, force)?;
            return Ok(crate::report::certs_outcome(&written, cli.output));
        }
        Command::Certs(CertsArgs {
            command: CertsCommand::Remember { dir },
        }) => {
            let to = maestro_control::keys::remember(&dir, &cli.control.url)
                .map_err(maestro_control::ArgsError::from)?;
            return Ok(crate::report::remembered_outcome(
                &to,
                &cli.control.url,
                cli.output,
            ));
        }
    };
    let mut controller = connect(&cli.control, args.timeout, &shutdown).await?;
    let target = args.target();
    let exchange = controller
        .request(&target, kind.body(), args.timeout, &shutdown)
        .await?;
    let security = crate::report::Security::of(&controller);
    controller.close().await;
    let mut outcome = outcome(
        kind,
        &exchange,
        cli.output,
        cli.control.cluster.as_str(),
        args.timeout,
    );
    if kind == MaestroCommand::Ping {
        security.annotate(&mut outcome, cli.output);
    }
    Ok(outcome)
}

/// Connects to the control broker, unless interrupted first.
async fn connect(
    control: &ControlArgs,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<Controller, CliError> {
    let url = control
        .endpoint()
        .map_err(maestro_control::ArgsError::from)?;
    let signer = control.signer(maestro_protocol::Role::Controller)?;
    tokio::select! {
        _ = shutdown.cancelled() => Err(ControlError::Interrupted.into()),
        c = Controller::connect_signed(&url, &control.cluster, signer, timeout) => Ok(c?),
    }
}

pub(crate) async fn start(
    control: &ControlArgs,
    output: Output,
    args: crate::start::StartArgs,
    shutdown: &CancellationToken,
) -> Result<Outcome, CliError> {
    let spec = args.spec()?;
    maestro_controller::run::prepare(&mut spec.clone(), &args.faults)?;
    let mut controller = connect(control, args.timeout, shutdown).await?;
    let exporter = match args.metrics_listen {
        Some(addr) => Some(Exporter::start(addr, shutdown).await?),
        None => None,
    };
    let live = if crate::live::wanted(args.no_tui, output) {
        Some(crate::live::LiveTerminal::start(shutdown).map_err(CliError::Terminal)?)
    } else {
        None
    };
    if let Some(l) = &live {
        maestro_controller::watch::Watch::phase(l.view.as_ref(), "start");
    }
    let options = RunOptions {
        group: args.group.clone(),
        roles: args.roles.roles().unwrap_or_default(),
        results: args.results.clone(),
        timeout: args.timeout,
        faults: args.faults.clone(),
        watchers: watchers(exporter.as_ref(), live.as_ref(), output),
    };
    let finished = run_test(&mut controller, spec, &options, shutdown).await;
    if let Some(l) = live {
        l.finish().await;
    }
    if let Some(e) = exporter {
        e.stop().await;
    }
    // Closed before a failure is returned too: a failed start has just sent `stop` to the
    // workers it configured, and only a clean close delivers it (dropped, the connection
    // went with the notes still queued, and those workers held the run until their
    // controller's offline grace ran out).
    controller.close().await;
    let finished = finished?;
    crate::history::record(&options.results, &finished.folder);
    Ok(finished_outcome(&finished, output))
}

pub(crate) async fn stop(
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

/// The watchers of a `start` or `run`: the Prometheus exporter and the live view, each
/// when it is on.
/// Who watches a `start` or a `run`: the Prometheus exporter, the live view, and the
/// progress lines on stderr for table output without the live view.
pub fn watchers(
    exporter: Option<&Exporter>,
    live: Option<&crate::live::LiveTerminal>,
    output: Output,
) -> maestro_controller::watch::Watchers {
    let mut all: maestro_controller::watch::Watchers = Vec::new();
    if let Some(e) = exporter {
        all.push(e.metrics.clone());
    }
    match live {
        Some(l) => all.push(l.view.clone()),
        None if output == Output::Table => {
            all.push(std::sync::Arc::new(
                maestro_controller::progress::Progress::stderr(),
            ));
        }
        None => {}
    }
    all
}

/// The Prometheus endpoint of one `start` or `run` (`--metrics-listen`).
#[derive(Debug)]
pub struct Exporter {
    pub metrics: std::sync::Arc<maestro_controller::live::LiveMetrics>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Exporter {
    pub async fn start(
        addr: maestro_control::metrics::MetricsListen,
        shutdown: &CancellationToken,
    ) -> Result<Self, CliError> {
        let metrics = maestro_controller::live::LiveMetrics::new();
        let stop = shutdown.child_token();
        let (bound, task) =
            maestro_control::metrics::serve(addr, metrics.registry(), stop.clone()).await?;
        eprintln!("metrics on http://{bound}/metrics");
        Ok(Self {
            metrics,
            stop,
            task,
        })
    }

    /// Stops serving (after the run: a last scrape sees its final numbers until now).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.task).await;
    }
}
