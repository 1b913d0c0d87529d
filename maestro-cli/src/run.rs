//! `maestro-cli run PLAN`: loads and checks a plan, connects (or starts a local cluster),
//! runs it with `maestro_controller::plans::run_plan`, then writes JUnit and the HTML
//! report and renders the result.
//!
//! ```text
//! results/<plan>-<run-id>/
//!   plan.toml           the plan as run
//!   environment.json    versions, control broker, SUT, workers with host and clock offset
//!   summary.json        every phase: probes (rate, summary, verdicts), knee, pass/fail
//!   00-warmup/<run-id>/ 01-fixed/<run-id>/ ...   each run's own results (see `start`)
//!   junit.xml, report.html
//! ```
//!
//! Exit codes: 0 every condition passed; 1 a condition failed; 2 the plan is invalid;
//! 3 the cluster is unreachable; 4 not enough workers; 5 the SUT is unreachable.

use crate::exit;
use crate::output::{CliError, Outcome, Output};
use maestro_control::ControlArgs;
use maestro_controller::plan::{LoadedPlan, PlanError};
use maestro_controller::plans::{PlanOptions, run_plan};
use maestro_controller::{ControlError, Controller};
use maestro_protocol::{Segment, SutUrl};
use maestro_report::PlanResult;
use maestro_report::format::micros;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The plan file (TOML), or an OpenMessaging Benchmark workload (YAML) with --driver.
    pub plan: PathBuf,
    /// An OpenMessaging Benchmark driver file (YAML: Kafka or RabbitMQ) for a workload
    /// YAML given as the plan.
    #[arg(long, env = "MAESTRO_DRIVER")]
    pub driver: Option<PathBuf>,
    /// Run on this machine: an embedded control broker, in-process workers, and an
    /// embedded MQTT broker when the plan's SUT is mqtt://embedded/...
    #[arg(long, env = "MAESTRO_LOCAL")]
    pub local: bool,
    /// For --local: the folder the in-process workers may read files a SUT URL names
    /// from (ca=, cert=, ssl.ca.location=, ...) [default: none]
    #[arg(
        long,
        env = "MAESTRO_FILES_DIR",
        value_name = "DIR",
        requires = "local"
    )]
    pub files_dir: Option<PathBuf>,
    /// In-process workers for --local.
    #[arg(long, env = "MAESTRO_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// Use this SUT URL instead of the plan's.
    #[arg(long, env = "MAESTRO_SUT")]
    pub sut: Option<SutUrl>,
    /// Use this consumers' SUT URL instead of the plan's `consumer_url` (consumers on
    /// another protocol of the same broker).
    #[arg(long, env = "MAESTRO_CONSUMER_SUT", value_parser = crate::start::boxed_sut)]
    pub consumer_sut: Option<Box<SutUrl>>,
    #[command(flatten)]
    pub sut_password: crate::cli::SutPasswordArgs,
    /// Also write JUnit XML here (one test case per phase and condition).
    #[arg(long, env = "MAESTRO_JUNIT")]
    pub junit: Option<PathBuf>,
    /// Where results folders go.
    #[arg(long, env = "MAESTRO_RESULTS", default_value = "results")]
    pub results: PathBuf,
    /// Only the peers of this group.
    #[arg(long, env = "MAESTRO_TARGET_GROUP")]
    pub group: Option<Segment>,
    /// Which workers produce and which consume [default: as the plan says].
    #[command(flatten)]
    pub roles: crate::cli::RoleArgs,
    /// How long to wait for workers at each step.
    #[arg(short, long, env = "MAESTRO_STEP_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Only check the plan, then exit.
    #[arg(long)]
    pub check: bool,
    /// Print progress lines instead of the live view (which is shown when stdout is a
    /// terminal and the output is a table).
    #[arg(long, env = "MAESTRO_NO_TUI")]
    pub no_tui: bool,
    /// Serve the plan's metrics for Prometheus on PORT or HOST:PORT (`/metrics`,
    /// OpenMetrics; a bare port binds to 127.0.0.1) while it runs
    #[arg(long, env = "MAESTRO_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<maestro_control::metrics::MetricsListen>,
}

/// The plan: a TOML file, or an OMB workload with its driver (warnings go to the log).
fn load(args: &RunArgs) -> Result<LoadedPlan, CliError> {
    let yaml = maestro_controller::omb::is_yaml(&args.plan);
    let usage = |reason: &str| {
        CliError::Plan(PlanError {
            file: args.plan.display().to_string(),
            line: 0,
            field: "(file)".into(),
            reason: reason.into(),
        })
    };
    match (&args.driver, yaml) {
        (Some(driver), true) => {
            let loaded = maestro_controller::omb::load(&args.plan, driver)?;
            for w in &loaded.warnings {
                tracing::warn!(workload = %args.plan.display(), driver = %driver.display(), "{w}");
            }
            Ok(loaded.plan)
        }
        (None, true) => Err(usage(
            "an OpenMessaging Benchmark workload needs its driver file: --driver DRIVER.yaml",
        )),
        (Some(_), false) => Err(usage(
            "--driver goes with an OpenMessaging Benchmark workload (.yaml), not a TOML plan",
        )),
        (None, false) => Ok(LoadedPlan::load(&args.plan)?),
    }
}

/// Runs a plan (or only checks it).
pub async fn run(
    control: &ControlArgs,
    output: Output,
    args: RunArgs,
    shutdown: &CancellationToken,
) -> Result<Outcome, CliError> {
    let plan = load(&args)?;
    if args.check {
        // A plan made from OMB files is shown: it is what will run.
        let made = if args.driver.is_some() {
            format!("\n{}", plan.text)
        } else {
            String::new()
        };
        return Ok(Outcome {
            stdout: format!(
                "{}: plan {:?} is valid ({} phases){made}",
                args.plan.display(),
                plan.plan.plan.name,
                plan.phases.len()
            ),
            code: exit::OK,
            problem: None,
            peers: Vec::new(),
        });
    }
    let embedded = plan.plan.sut.url.get_ref().contains("://embedded");
    let control_url = control.url.to_string();
    let (local, mut controller) = if args.local {
        let files = crate::local::files_dir(args.files_dir.as_deref())
            .map_err(|e| CliError::Start(maestro_controller::run::RunError::option(e)))?;
        let (local, controller) =
            crate::local::LocalCluster::start("local", args.workers, embedded, files, shutdown)
                .await?;
        (Some(local), controller)
    } else {
        let url = control
            .endpoint()
            .map_err(maestro_control::ArgsError::from)?;
        let signer = control.signer(maestro_protocol::Role::Controller)?;
        let controller = tokio::select! {
            _ = shutdown.cancelled() => return Err(ControlError::Interrupted.into()),
            c = Controller::connect_signed(&url, &control.cluster, signer, args.timeout) => c?,
        };
        (None, controller)
    };
    let sut = match (&args.sut, local.as_ref().and_then(|l| l.sut)) {
        (Some(url), _) => url.clone(),
        (None, Some(addr)) => plan.sut(Some(&addr.to_string()))?,
        (None, None) => plan.sut(None)?,
    };
    let sut = args
        .sut_password
        .apply(sut)
        .map_err(|e| CliError::Start(maestro_controller::run::RunError::option(e)))?;
    let consumer_sut = match (&args.consumer_sut, local.as_ref().and_then(|l| l.sut)) {
        (Some(url), _) => Some((**url).clone()),
        (None, Some(addr)) => plan.consumer_sut(Some(&addr.to_string()))?,
        (None, None) => plan.consumer_sut(None)?,
    };
    let consumer_sut = consumer_sut
        .map(|c| args.sut_password.apply(c))
        .transpose()
        .map_err(|e| CliError::Start(maestro_controller::run::RunError::option(e)))?;
    if sut.host().name == "embedded" {
        return Err(CliError::Plan(PlanError {
            file: args.plan.display().to_string(),
            line: 0,
            field: "sut.url".into(),
            reason: "mqtt://embedded/... needs --local".into(),
        }));
    }
    let exporter = match args.metrics_listen {
        Some(addr) => Some(crate::cli::Exporter::start(addr, shutdown).await?),
        None => None,
    };
    let live = if crate::live::wanted(args.no_tui, output) {
        Some(crate::live::LiveTerminal::start(shutdown).map_err(CliError::Terminal)?)
    } else {
        None
    };
    let options = PlanOptions {
        sut,
        consumer_sut,
        results: args.results.clone(),
        group: args.group.clone(),
        roles: args.roles.roles(),
        timeout: args.timeout,
        local: local.is_some(),
        control_url,
        cluster: control.cluster.to_string(),
        watchers: crate::cli::watchers(exporter.as_ref(), live.as_ref(), output),
    };
    let result = run_plan(&mut controller, &plan, &options, shutdown).await;
    if let Some(l) = live {
        l.finish().await;
    }
    if let Some(e) = exporter {
        e.stop().await;
    }
    controller.close().await;
    if let Some(local) = local {
        local.abort().await;
    }
    let (result, folder) = result?;
    let junit = maestro_report::junit::junit_xml(&result);
    maestro_report::folder::write_atomic(&folder.join("junit.xml"), junit.as_bytes())
        .map_err(|e| CliError::Io(folder.join("junit.xml"), e))?;
    if let Some(path) = &args.junit {
        maestro_report::folder::write_atomic(path, junit.as_bytes())
            .map_err(|e| CliError::Io(path.clone(), e))?;
    }
    maestro_report::html::write(&folder)?;
    crate::history::record(&args.results, &folder);
    let history = history_verdict(&result, &folder, &args.results)?;
    let stdout = match output {
        Output::Json => serde_json::to_string_pretty(&result).unwrap_or_default(),
        Output::Table => plan_table(&result, &folder),
    };
    let failed: Vec<String> = result
        .phases
        .iter()
        .filter(|p| p.judged && !p.passed)
        .flat_map(|p| {
            p.reasons
                .iter()
                .map(move |r| format!("phase {} ({}): {r}", p.index, p.kind))
        })
        .collect();
    let (code, problem) = if result.interrupted {
        (
            exit::INTERRUPTED,
            Some("interrupted; the phases so far are written".to_owned()),
        )
    } else if result.passed && history.is_none() {
        (exit::OK, None)
    } else {
        let mut problems = Vec::new();
        if !failed.is_empty() {
            problems.push(format!("conditions failed:\n  {}", failed.join("\n  ")));
        }
        problems.extend(history.map(|h| format!("[compare] history: {h}")));
        (
            exit::CONDITION_FAILED,
            (!problems.is_empty()).then(|| problems.join("\n")),
        )
    };
    Ok(Outcome {
        stdout,
        code,
        problem,
        peers: Vec::new(),
    })
}

/// The plan's own gate over its history (`[compare] history = N`): why it fails, if it
/// does. Too little history, or a busy machine, is logged and fails nothing.
fn history_verdict(
    result: &PlanResult,
    folder: &Path,
    results: &Path,
) -> Result<Option<String>, CliError> {
    Ok(match result.compare.history {
        Some(n) if !result.interrupted => {
            let judged = crate::history::gate(folder, n as usize, Some(results), Output::Json)?;
            match judged.code {
                exit::OK => {
                    if let Some(why) = judged.problem.as_deref() {
                        tracing::warn!(problem = why, "[compare] history");
                    }
                    None
                }
                exit::CONDITION_FAILED => Some(judged.problem.unwrap_or_default()),
                _ => {
                    // Too little history yet: said, not failed (a plan's first runs).
                    tracing::warn!(
                        problem = judged.problem.as_deref().unwrap_or(""),
                        "[compare] history: nothing judged"
                    );
                    None
                }
            }
        }
        _ => None,
    })
}

fn plan_table(result: &PlanResult, folder: &Path) -> String {
    let mut lines = vec![format!(
        "plan {}  {}",
        result.plan,
        if result.interrupted {
            "INTERRUPTED"
        } else if result.passed {
            "PASSED"
        } else {
            "FAILED"
        }
    )];
    for p in &result.phases {
        let status = if !p.judged {
            "ran"
        } else if p.passed {
            "passed"
        } else {
            "FAILED"
        };
        let knee = p
            .knee_rate
            .map(|k| format!("  knee {k:.0} msg/s"))
            .unwrap_or_default();
        lines.push(format!(
            "  phase {} {:<8} {status}  {} probe(s){knee}",
            p.index,
            p.kind,
            p.probes.len()
        ));
        for probe in &p.probes {
            let s = &probe.summary;
            lines.push(format!(
                "    {:>9.0} msg/s  {}  achieved {:.0}/s  p99 {}  lost {}  errors {}",
                probe.rate,
                if !p.judged {
                    "    "
                } else if probe.passed {
                    "pass"
                } else {
                    "FAIL"
                },
                s.achieved_rate,
                micros(s.response_time_us.p99 as i64),
                s.lost,
                s.errors
            ));
        }
        for r in &p.reasons {
            lines.push(format!("    {r}"));
        }
    }
    lines.push(format!("results in {}", folder.display()));
    lines.join("\n")
}
