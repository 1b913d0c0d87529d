//! `maestro-cli run PLAN`: runs a test plan's phases in order, judges each measured phase
//! by its conditions, and writes one results folder for the whole plan:
//!
//! ```text
//! results/<plan>-<run-id>/
//!   plan.toml           the plan as run
//!   environment.json    versions, control broker, SUT, workers with host and clock offset
//!   summary.json        every phase: probes (rate, summary, verdicts), knee, pass/fail
//!   00-warmup/<run-id>/ 01-fixed/<run-id>/ ...   each run's own results (see `start`)
//!   junit.xml           with --junit (also written where --junit points)
//! ```
//!
//! Exit codes: 0 every condition passed; 1 a condition failed; 2 the plan is invalid;
//! 3 the cluster is unreachable; 4 not enough workers; 5 the SUT is unreachable.

use crate::cli::{CliError, Outcome, Output};
use crate::controller::Controller;
use crate::exit;
use crate::plan::{Conditions, LoadedPlan, Phase};
use crate::start::{RunOptions, run_test};
use crate::summary::Summary;
use maestro_control::ControlArgs;
use maestro_protocol::{Body, Ping, Role, Segment, Target};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Probes a max-rate search may make at most.
const MAX_PROBES: usize = 24;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The plan file (TOML).
    pub plan: PathBuf,
    /// Run on this machine: an embedded control broker, in-process workers, and an
    /// embedded MQTT broker when the plan's SUT is mqtt://embedded/...
    #[arg(long, env = "MAESTRO_LOCAL")]
    pub local: bool,
    /// In-process workers for --local.
    #[arg(long, env = "MAESTRO_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// Use this SUT URL instead of the plan's.
    #[arg(long, env = "MAESTRO_SUT")]
    pub sut: Option<String>,
    /// Also write JUnit XML here (one test case per phase and condition).
    #[arg(long, env = "MAESTRO_JUNIT")]
    pub junit: Option<PathBuf>,
    /// Where results folders go.
    #[arg(long, env = "MAESTRO_RESULTS", default_value = "results")]
    pub results: PathBuf,
    /// Only the workers of this group.
    #[arg(long, env = "MAESTRO_GROUP")]
    pub group: Option<Segment>,
    /// How long to wait for workers at each step.
    #[arg(short, long, env = "MAESTRO_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Only check the plan, then exit.
    #[arg(long)]
    pub check: bool,
}

/// One condition checked against one run.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub condition: String,
    pub limit: f64,
    pub actual: f64,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub rate: f64,
    pub passed: bool,
    pub verdicts: Vec<Verdict>,
    pub summary: Summary,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    pub index: usize,
    pub kind: &'static str,
    /// Warm-up phases are never judged.
    pub judged: bool,
    pub passed: bool,
    pub probes: Vec<Probe>,
    /// Ramp: the highest passing step; max-rate: the highest passing rate found.
    pub knee_rate: Option<f64>,
    /// Why the phase failed, one line per failed condition.
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerInfo {
    pub id: String,
    pub name: String,
    pub host: String,
    pub version: String,
    pub rtt_us: Option<i64>,
    pub clock_offset_us: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    pub maestro_version: &'static str,
    pub control_url: String,
    pub cluster: String,
    pub local: bool,
    pub sut: String,
    pub sut_name: String,
    pub sut_version: String,
    pub workers: Vec<WorkerInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanResult {
    pub plan: String,
    pub description: String,
    pub tags: Vec<String>,
    pub run_id: String,
    pub started_at: String,
    pub passed: bool,
    pub phases: Vec<PhaseResult>,
    pub environment: Environment,
}

/// Checks a run against conditions. A degraded run always fails.
pub fn judge(s: &Summary, c: &Conditions) -> Vec<Verdict> {
    let mut v = Vec::new();
    let mut check = |condition: &str, limit: f64, actual: f64, passed: bool| {
        v.push(Verdict {
            condition: condition.to_owned(),
            limit,
            actual,
            passed,
        });
    };
    let ms = |us: u64| us as f64 / 1000.0;
    let r = &s.response_time_us;
    for (name, limit, actual) in [
        ("response_time_p50_ms", c.response_time_p50_ms, ms(r.p50)),
        ("response_time_p90_ms", c.response_time_p90_ms, ms(r.p90)),
        ("response_time_p99_ms", c.response_time_p99_ms, ms(r.p99)),
        ("response_time_p999_ms", c.response_time_p999_ms, ms(r.p999)),
        ("response_time_max_ms", c.response_time_max_ms, ms(r.max)),
    ] {
        if let Some(limit) = limit {
            check(
                &format!("{name} <= {limit}"),
                limit,
                actual,
                actual <= limit,
            );
        }
    }
    if let Some(limit) = c.max_lost {
        check(
            &format!("lost <= {limit}"),
            limit as f64,
            s.lost as f64,
            s.lost <= limit,
        );
    }
    if let Some(limit) = c.max_error_rate {
        let rate = s.errors as f64 / s.sent.max(1) as f64;
        check(
            &format!("error_rate <= {limit}"),
            limit,
            rate,
            rate <= limit,
        );
    }
    if let Some(limit) = c.min_achieved_fraction
        && s.offered_rate > 0.0
    {
        let fraction = s.achieved_rate / s.offered_rate;
        check(
            &format!(
                "min_achieved_fraction >= {limit} (achieved/offered {fraction:.3}, {} unsent)",
                s.unsent
            ),
            limit,
            fraction,
            fraction >= limit,
        );
    }
    check(
        "not degraded",
        0.0,
        f64::from(u8::from(s.degraded)),
        !s.degraded,
    );
    v
}

fn reasons(verdicts: &[Verdict], rate: f64) -> Vec<String> {
    verdicts
        .iter()
        .filter(|v| !v.passed)
        .map(|v| {
            format!(
                "at {rate:.0} msg/s: {} failed (actual {:.3})",
                v.condition, v.actual
            )
        })
        .collect()
}

struct Runner<'a> {
    controller: &'a mut Controller,
    plan: &'a LoadedPlan,
    sut: String,
    options: RunOptions,
    shutdown: &'a CancellationToken,
    table: bool,
}

impl Runner<'_> {
    async fn probe(
        &mut self,
        phase: &Phase,
        rate: f64,
        duration: Option<Duration>,
        count: Option<u64>,
        dir: &Path,
    ) -> Result<Probe, CliError> {
        let mut spec = self.plan.spec(phase, rate, duration, count);
        spec.sut = self.sut.clone();
        let options = RunOptions {
            results: dir.to_owned(),
            ..self.options.clone()
        };
        if self.table {
            eprintln!("-- {} at {rate:.0} msg/s", phase.kind());
        }
        let finished = run_test(self.controller, spec, &options, self.shutdown).await?;
        let conditions = self.plan.conditions(phase);
        let verdicts = judge(&finished.summary, &conditions);
        let passed = verdicts.iter().all(|v| v.passed);
        if self.table {
            let s = &finished.summary;
            eprintln!(
                "   {} achieved {:.0}/s  p50 {}  p99 {}  lost {}  errors {}",
                match (phase, passed) {
                    (Phase::Warmup { .. }, _) => "done",
                    (_, true) => "PASS",
                    (_, false) => "FAIL",
                },
                s.achieved_rate,
                crate::report::micros(s.response_time_us.p50 as i64),
                crate::report::micros(s.response_time_us.p99 as i64),
                s.lost,
                s.errors
            );
        }
        Ok(Probe {
            rate,
            passed,
            verdicts,
            summary: finished.summary,
        })
    }

    async fn phase(
        &mut self,
        index: usize,
        phase: &Phase,
        dir: &Path,
    ) -> Result<PhaseResult, CliError> {
        let mut result = PhaseResult {
            index,
            kind: phase.kind(),
            judged: !matches!(phase, Phase::Warmup { .. } | Phase::Drain { .. }),
            passed: true,
            probes: Vec::new(),
            knee_rate: None,
            reasons: Vec::new(),
        };
        match phase {
            Phase::Drain { duration } => {
                if self.table {
                    eprintln!(
                        "-- drain: {} without load",
                        humantime::format_duration(*duration)
                    );
                }
                tokio::select! {
                    _ = self.shutdown.cancelled() => return Err(crate::controller::ControlError::Interrupted.into()),
                    _ = tokio::time::sleep(*duration) => {}
                }
            }
            Phase::Warmup { rate, duration } => {
                let p = self.probe(phase, *rate, Some(*duration), None, dir).await?;
                result.probes.push(p);
            }
            Phase::Fixed {
                rate,
                duration,
                count,
                ..
            } => {
                let p = self.probe(phase, *rate, *duration, *count, dir).await?;
                result.passed = p.passed;
                result.reasons = reasons(&p.verdicts, p.rate);
                result.probes.push(p);
            }
            Phase::Ramp {
                start_rate,
                step,
                step_duration,
                ceiling,
                ..
            } => {
                let mut rate = *start_rate;
                while rate <= *ceiling + f64::EPSILON {
                    let p = self
                        .probe(phase, rate, Some(*step_duration), None, dir)
                        .await?;
                    let passed = p.passed;
                    if passed {
                        result.knee_rate = Some(rate);
                    } else {
                        result.reasons = reasons(&p.verdicts, rate);
                    }
                    result.probes.push(p);
                    if !passed {
                        break;
                    }
                    rate += step;
                }
                // A ramp fails when it fails before its ceiling.
                result.passed = result.reasons.is_empty();
            }
            Phase::MaxRate {
                start_rate,
                step_duration,
                ceiling,
                precision,
                ..
            } => {
                let (mut pass, mut fail): (Option<f64>, Option<f64>) = (None, None);
                let mut rate = *start_rate;
                // Step up: double until a probe fails or the ceiling passes.
                while result.probes.len() < MAX_PROBES {
                    let p = self
                        .probe(phase, rate, Some(*step_duration), None, dir)
                        .await?;
                    let ok = p.passed;
                    if !ok {
                        result.reasons = reasons(&p.verdicts, rate);
                    }
                    result.probes.push(p);
                    if ok {
                        pass = Some(rate);
                        if rate >= *ceiling {
                            break;
                        }
                        rate = (rate * 2.0).min(*ceiling);
                    } else {
                        fail = Some(rate);
                        break;
                    }
                }
                // Bisect between the last pass and the first failure.
                while let (Some(p), Some(f)) = (pass, fail) {
                    if (f - p) / p <= *precision || result.probes.len() >= MAX_PROBES {
                        break;
                    }
                    let mid = (p + f) / 2.0;
                    let probe = self
                        .probe(phase, mid, Some(*step_duration), None, dir)
                        .await?;
                    if probe.passed {
                        pass = Some(mid);
                    } else {
                        fail = Some(mid);
                    }
                    result.probes.push(probe);
                }
                result.knee_rate = pass;
                result.passed = pass.is_some();
                if pass.is_some() {
                    result.reasons.clear();
                }
            }
        }
        Ok(result)
    }
}

/// Runs a plan (or only checks it).
pub async fn run(
    control: &ControlArgs,
    output: Output,
    args: RunArgs,
    shutdown: &CancellationToken,
) -> Result<Outcome, CliError> {
    let plan = LoadedPlan::load(&args.plan)?;
    if args.check {
        return Ok(Outcome {
            stdout: format!(
                "{}: plan {:?} is valid ({} phases)",
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
    let (local, mut controller) = if args.local {
        let (local, controller) =
            crate::local::LocalCluster::start("local", args.workers, embedded, shutdown).await?;
        (Some(local), controller)
    } else {
        let controller = tokio::select! {
            _ = shutdown.cancelled() => return Err(crate::controller::ControlError::Interrupted.into()),
            c = Controller::connect(&control.url, &control.cluster, args.timeout) => c?,
        };
        (None, controller)
    };
    let sut = match (&args.sut, local.as_ref().and_then(|l| l.sut)) {
        (Some(url), _) => url.clone(),
        (None, Some(addr)) => plan.sut_url(Some(&addr.to_string())),
        (None, None) => plan.sut_url(None),
    };
    if sut.contains("://embedded") {
        return Err(CliError::Plan(crate::plan::PlanError {
            file: args.plan.display().to_string(),
            line: 0,
            field: "sut.url".into(),
            reason: "mqtt://embedded/... needs --local".into(),
        }));
    }
    let result = run_phases(
        &mut controller,
        &plan,
        &args,
        control,
        sut,
        local.is_some(),
        output,
        shutdown,
    )
    .await;
    controller.close().await;
    if let Some(local) = local {
        local.abort().await;
    }
    let (result, folder) = result?;
    let junit = junit_xml(&result);
    std::fs::write(folder.join("junit.xml"), &junit)
        .map_err(|e| CliError::Io(folder.join("junit.xml"), e))?;
    if let Some(path) = &args.junit {
        std::fs::write(path, &junit).map_err(|e| CliError::Io(path.clone(), e))?;
    }
    crate::html::write(&folder)?;
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
    Ok(Outcome {
        stdout,
        code: if result.passed {
            exit::OK
        } else {
            exit::CONDITION_FAILED
        },
        problem: (!failed.is_empty())
            .then(|| format!("conditions failed:\n  {}", failed.join("\n  "))),
        peers: Vec::new(),
    })
}

#[allow(clippy::too_many_arguments)]
async fn run_phases(
    controller: &mut Controller,
    plan: &LoadedPlan,
    args: &RunArgs,
    control: &ControlArgs,
    sut: String,
    local: bool,
    output: Output,
    shutdown: &CancellationToken,
) -> Result<(PlanResult, PathBuf), CliError> {
    let run_id = crate::start::new_run_id();
    let name: String = plan
        .plan
        .plan
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let folder = args.results.join(format!("{name}-{run_id}"));
    std::fs::create_dir_all(&folder).map_err(|e| CliError::Io(folder.clone(), e))?;
    std::fs::write(folder.join("plan.toml"), &plan.text)
        .map_err(|e| CliError::Io(folder.clone(), e))?;
    let environment = environment(controller, plan, control, &sut, local, args, shutdown).await?;
    std::fs::write(
        folder.join("environment.json"),
        serde_json::to_string_pretty(&environment).unwrap_or_default(),
    )
    .map_err(|e| CliError::Io(folder.clone(), e))?;
    let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let mut runner = Runner {
        controller,
        plan,
        sut,
        options: RunOptions {
            group: args.group.clone(),
            results: folder.clone(),
            timeout: args.timeout,
            progress: output == Output::Table,
        },
        shutdown,
        table: output == Output::Table,
    };
    let mut phases = Vec::new();
    for (i, phase) in plan.phases.iter().enumerate() {
        if i > 0
            && let Some(pause) = plan.plan.plan.cooldown
        {
            tokio::select! {
                _ = shutdown.cancelled() => return Err(crate::controller::ControlError::Interrupted.into()),
                _ = tokio::time::sleep(pause) => {}
            }
        }
        let dir = folder.join(format!("{i:02}-{}", phase.kind()));
        let result = runner.phase(i, phase, &dir).await?;
        if !result.probes.is_empty() {
            std::fs::write(
                dir.join("summary.json"),
                serde_json::to_string_pretty(&result).unwrap_or_default(),
            )
            .map_err(|e| CliError::Io(dir.clone(), e))?;
        }
        phases.push(result);
    }
    let result = PlanResult {
        plan: plan.plan.plan.name.clone(),
        description: plan.plan.plan.description.clone(),
        tags: plan.plan.plan.tags.clone(),
        run_id: run_id.to_string(),
        started_at,
        passed: phases.iter().filter(|p| p.judged).all(|p| p.passed),
        phases,
        environment,
    };
    std::fs::write(
        folder.join("summary.json"),
        serde_json::to_string_pretty(&result).unwrap_or_default(),
    )
    .map_err(|e| CliError::Io(folder.clone(), e))?;
    Ok((result, folder))
}

async fn environment(
    controller: &mut Controller,
    plan: &LoadedPlan,
    control: &ControlArgs,
    sut: &str,
    local: bool,
    args: &RunArgs,
    shutdown: &CancellationToken,
) -> Result<Environment, CliError> {
    let target = match &args.group {
        Some(g) => Target::Group(g.clone()),
        None => Target::Role(Role::Worker),
    };
    let ping = controller
        .request(&target, Body::Ping(Ping {}), args.timeout, shutdown)
        .await?;
    let workers: Vec<WorkerInfo> = crate::report::outcomes(&ping)
        .into_iter()
        .filter(|o| o.role == Role::Worker && o.status == crate::report::PeerStatus::Ok)
        .map(|o| WorkerInfo {
            id: o.id.to_string(),
            name: o.name,
            host: o.host,
            version: o.version,
            rtt_us: o.rtt_us,
            clock_offset_us: o.clock_offset_us,
        })
        .collect();
    let needed = plan.plan.plan.workers as usize;
    if workers.len() < needed {
        let whom = args
            .group
            .as_ref()
            .map(|g| format!(" in group {g}"))
            .unwrap_or_default();
        return Err(CliError::Start(crate::start::StartError::Workers(format!(
            "the plan needs {needed} workers{whom}, {} answered",
            workers.len()
        ))));
    }
    Ok(Environment {
        maestro_version: env!("CARGO_PKG_VERSION"),
        control_url: if local {
            "embedded".into()
        } else {
            control.url.to_string()
        },
        cluster: control.cluster.to_string(),
        local,
        sut: maestro_worker::driver::mqtt::redact(sut),
        sut_name: plan.plan.plan.sut_name.clone(),
        sut_version: plan.plan.plan.sut_version.clone(),
        workers,
    })
}

/// JUnit XML: one suite per plan, one test case per phase and condition.
pub fn junit_xml(result: &PlanResult) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut report = Report::new(format!("maestro {}", result.plan));
    let mut suite = TestSuite::new(result.plan.clone());
    for phase in result.phases.iter().filter(|p| p.judged) {
        let classname = format!("{}.phase{}-{}", result.plan, phase.index, phase.kind);
        let decisive = match phase.kind {
            // Ramp and max-rate are judged by the probe that decided them.
            "fixed" => phase.probes.last(),
            _ => phase
                .probes
                .iter()
                .rev()
                .find(|p| !p.passed)
                .or(phase.probes.last()),
        };
        let Some(probe) = decisive else { continue };
        for v in &probe.verdicts {
            let passed = if phase.kind == "max-rate" {
                phase.passed || v.passed
            } else {
                v.passed
            };
            let status = if passed {
                TestCaseStatus::success()
            } else {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(format!(
                    "{} failed at {:.0} msg/s: actual {:.3}",
                    v.condition, probe.rate, v.actual
                ));
                s
            };
            let mut case = TestCase::new(v.condition.clone(), status);
            case.set_classname(classname.clone());
            suite.add_test_case(case);
        }
        if let Some(knee) = phase.knee_rate {
            let mut case =
                TestCase::new(format!("knee {knee:.0} msg/s"), TestCaseStatus::success());
            case.set_classname(classname.clone());
            suite.add_test_case(case);
        }
    }
    report.add_test_suite(suite);
    report.to_string().unwrap_or_default()
}

fn plan_table(result: &PlanResult, folder: &Path) -> String {
    let mut lines = vec![format!(
        "plan {}  {}",
        result.plan,
        if result.passed { "PASSED" } else { "FAILED" }
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
                crate::report::micros(s.response_time_us.p99 as i64),
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
