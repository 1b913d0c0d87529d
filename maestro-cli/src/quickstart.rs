//! `maestro-cli quickstart`: a whole cluster in this process, with nothing installed. An
//! embedded control broker and an embedded MQTT broker as the system under test, each on a
//! free loopback port; in-process workers and an inspector (each a real peer on its own
//! MQTT connection); then ping, a short load test with its summary and results folder,
//! and halt, as a user would run them against a real cluster.

use crate::exit;
use crate::local::TIMEOUT;
use crate::output::{CliError, MaestroCommand, Outcome, Output};
use crate::report::outcome;
use maestro_protocol::Target;
use std::time::Duration;
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

pub async fn run(
    args: QuickstartArgs,
    output: Output,
    shutdown: &CancellationToken,
) -> Result<Outcome, CliError> {
    let (local, mut controller) = crate::local::LocalCluster::start(
        "quickstart",
        args.workers,
        true,
        crate::local::files_dir(None)
            .map_err(|e| CliError::Start(maestro_controller::run::RunError::option(e)))?,
        shutdown,
    )
    .await?;
    let (listen, cluster) = (local.url.clone(), local.cluster.clone());
    let sut = local
        .sut
        .unwrap_or_else(|| unreachable!("started with an embedded SUT"));

    let mut text = vec![format!(
        "embedded control broker on {listen}, embedded MQTT broker (the SUT) on mqtt://{sut}, cluster {cluster}, {} workers and 1 inspector in this process\n",
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
        size: maestro_protocol::MessageSize::Fixed(256),
        producers: u32::from(args.workers),
        consumers: u32::from(args.workers),
        ..maestro_protocol::TestSpec::new(
            sut_url
                .parse()
                .map_err(maestro_controller::run::RunError::from)?,
            args.rate,
            args.duration,
        )
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
    let options = maestro_controller::run::RunOptions {
        roles: Default::default(),
        group: None,
        results: args.results.clone(),
        timeout: TIMEOUT,
        faults: Vec::new(),
        watchers: crate::cli::watchers(None, None, output),
    };
    let finished =
        maestro_controller::run::run_test(&mut controller, spec, &options, shutdown).await?;
    let run = crate::report::finished_outcome(&finished, output);
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
    local.stop().await;
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
