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

use crate::client::{ControlError, Controller};
use crate::outcome::{self, PeerStatus};
use crate::plan::{Conditions, LoadedPlan, Phase, PlanError};
use crate::run::{RunError, RunOptions, run_test};
use crate::search::{self, Search};
use maestro_protocol::{Body, Ping, Role, Segment, SutUrl, Target, metric_names};
use maestro_report::{
    Environment, PhaseResult, PlanResult, Probe, ResultsError, RunSummary, SCHEMA_VERSION, Verdict,
    WorkerInfo,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum PlanRunError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("invalid plan: {0}")]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error("cannot write {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("the plan needs {needed} workers{whom}, {found} answered")]
    NotEnoughWorkers {
        needed: usize,
        found: usize,
        whom: String,
    },
}

/// How a plan is run, beyond the plan itself.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// The SUT every phase runs against (the plan's, or another).
    pub sut: SutUrl,
    /// The consumers' SUT when they speak another protocol (the plan's
    /// `consumer_url`, or another).
    pub consumer_sut: Option<SutUrl>,
    /// Where the plan's results folder goes.
    pub results: PathBuf,
    pub group: Option<Segment>,
    /// Which workers produce and which consume; `None`: as the plan says.
    pub roles: Option<crate::run::Roles>,
    /// How long to wait for workers at each step.
    pub timeout: Duration,
    /// Whether the cluster is this process's own (`--local`).
    pub local: bool,
    /// The control broker's URL (redacted) and the cluster, for `environment.json`.
    pub control_url: String,
    pub cluster: String,
    /// Who watches the plan's runs as they go on (told each phase).
    pub watchers: crate::watch::Watchers,
}

/// Checks a run against conditions. A degraded or interrupted run always fails.
pub fn judge(s: &RunSummary, c: &Conditions) -> Vec<Verdict> {
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
    if let Some(limit) = c.max_backlog {
        // Unknown (older results) fails, saying so.
        let actual = s.max_backlog.map_or(f64::INFINITY, |b| b as f64);
        check(
            &format!("max_backlog <= {limit}"),
            limit as f64,
            actual,
            actual <= limit as f64,
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
    // Conditions on what inspectors read: a metric nobody reported fails, saying so.
    for (name, limit, metric, scale) in [
        (
            "sut_max_queue_depth",
            c.sut_max_queue_depth,
            metric_names::QUEUE_DEPTH,
            1.0,
        ),
        (
            "sut_max_consumer_lag",
            c.sut_max_consumer_lag,
            metric_names::CONSUMER_LAG,
            1.0,
        ),
        (
            "sut_max_memory_mb",
            c.sut_max_memory_mb,
            metric_names::MEMORY_BYTES,
            1.0 / (1024.0 * 1024.0),
        ),
    ] {
        let Some(limit) = limit else { continue };
        match crate::sut::max_of(s.sut_metrics.as_ref(), metric) {
            Some(max) => {
                let actual = max * scale;
                check(
                    &format!("{name} <= {limit}"),
                    limit,
                    actual,
                    actual <= limit,
                );
            }
            None => check(
                &format!("{name} <= {limit} (no inspector reported {metric})"),
                limit,
                -1.0,
                false,
            ),
        }
    }
    if c.fail_when_generator_bound.unwrap_or(true)
        && let Some(g) = &s.generator
    {
        check(
            &if g.bound {
                format!("not generator-bound ({})", g.reasons.join("; "))
            } else {
                "not generator-bound".to_owned()
            },
            0.0,
            f64::from(u8::from(g.bound)),
            !g.bound,
        );
    }
    check(
        "not degraded",
        0.0,
        f64::from(u8::from(s.degraded)),
        !s.degraded,
    );
    if s.interrupted {
        check("not interrupted", 0.0, 1.0, false);
    }
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
    /// The knee of the last max-rate phase, for a fixed phase `at_knee`.
    knee: Option<f64>,
    /// The faults of the phase being run.
    faults: Vec<crate::faults::FaultPlan>,
    controller: &'a mut Controller,
    plan: &'a LoadedPlan,
    sut: SutUrl,
    consumer_sut: Option<SutUrl>,
    options: RunOptions,
    shutdown: &'a CancellationToken,
}

impl Runner<'_> {
    /// Probes what the search asks for until it is over; keeps every probe, the knee, and
    /// the reasons of the last failing probe.
    async fn search(
        &mut self,
        phase: &Phase,
        search: &mut impl Search,
        step_duration: Duration,
        dir: &Path,
        result: &mut PhaseResult,
    ) -> Result<(), PlanRunError> {
        while let Some(rate) = search.next_rate() {
            let p = self
                .probe(phase, rate, Some(step_duration), None, dir)
                .await?;
            if !p.passed {
                result.reasons = reasons(&p.verdicts, rate);
            }
            let interrupted = p.summary.interrupted;
            if !interrupted {
                search.record(rate, p.passed);
            }
            result.probes.push(p);
            if interrupted {
                break;
            }
        }
        result.knee_rate = search.knee();
        Ok(())
    }

    async fn probe(
        &mut self,
        phase: &Phase,
        rate: f64,
        duration: Option<Duration>,
        count: Option<u64>,
        dir: &Path,
    ) -> Result<Probe, PlanRunError> {
        let mut spec = self.plan.spec(&self.sut, rate, duration, count);
        spec.arrival = phase.arrival().clone();
        spec.consumer_sut = self.consumer_sut.clone().map(Box::new);
        spec.subscriptions = self.plan.subscriptions_for(spec.consumer_side());
        // A backlog test is a measured run at one rate: never a warm-up or a search probe.
        if !matches!(phase, Phase::Fixed { .. }) {
            spec.consumer_backlog_bytes = None;
        }
        let options = RunOptions {
            results: dir.to_owned(),
            faults: self.faults.clone(),
            ..self.options.clone()
        };
        for w in &self.options.watchers {
            w.probe_begins(phase.kind().as_str(), rate);
        }
        let finished = run_test(self.controller, spec, &options, self.shutdown).await?;
        let conditions = self.plan.conditions(phase, &self.sut);
        let verdicts = judge(&finished.summary, &conditions);
        let passed = verdicts.iter().all(|v| v.passed);
        let judged = (!matches!(phase, Phase::Warmup { .. })).then_some(passed);
        for w in &self.options.watchers {
            w.probe_ended(judged, &finished.summary);
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
    ) -> Result<PhaseResult, PlanRunError> {
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
                for w in &self.options.watchers {
                    w.draining(*duration);
                }
                // Interrupted, the plan ends after this phase.
                tokio::select! {
                    _ = self.shutdown.cancelled() => {}
                    _ = tokio::time::sleep(*duration) => {}
                }
            }
            Phase::Warmup { rate, duration, .. } => {
                let p = self.probe(phase, *rate, Some(*duration), None, dir).await?;
                result.probes.push(p);
            }
            Phase::Fixed {
                rate,
                at_knee,
                duration,
                count,
                ..
            } => {
                let rate = if *at_knee {
                    match self.knee {
                        Some(knee) => knee,
                        None => {
                            // The max-rate phase before found no passing rate.
                            result.passed = false;
                            result.reasons =
                                vec!["the max-rate phase before found no knee to run at".into()];
                            return Ok(result);
                        }
                    }
                } else {
                    *rate
                };
                let p = self.probe(phase, rate, *duration, *count, dir).await?;
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
                let mut ramp = search::Ramp::new(*start_rate, *step, *ceiling);
                self.search(phase, &mut ramp, *step_duration, dir, &mut result)
                    .await?;
                // A ramp fails when a step fails before its ceiling.
                result.passed = !ramp.failed();
            }
            Phase::MaxRate {
                start_rate,
                step_duration,
                ceiling,
                precision,
                ..
            } => {
                let mut max = search::MaxRate::new(*start_rate, *ceiling, *precision);
                self.search(phase, &mut max, *step_duration, dir, &mut result)
                    .await?;
                result.passed = result.knee_rate.is_some();
                self.knee = result.knee_rate;
                if result.passed {
                    result.reasons.clear();
                }
            }
        }
        Ok(result)
    }
}

/// Runs a plan's phases in order, judges each measured one, and writes the plan's results
/// folder (plan, environment, summaries; not the report or JUnit, see `maestro-report`).
pub async fn run_plan(
    controller: &mut Controller,
    plan: &LoadedPlan,
    options: &PlanOptions,
    shutdown: &CancellationToken,
) -> Result<(PlanResult, PathBuf), PlanRunError> {
    let run_id = crate::run::new_run_id();
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
    let folder = options.results.join(format!("{name}-{run_id}"));
    std::fs::create_dir_all(&folder).map_err(|e| PlanRunError::Io(folder.clone(), e))?;
    // The copy keeps the plan as written, less the SUT URLs' secrets: the one the plan
    // holds and the one the run used (--sut, a password given apart).
    let mut copy = plan.text.clone();
    let consumers = [
        plan.plan
            .sut
            .consumer_url
            .as_ref()
            .map(|c| c.get_ref().as_str()),
        options.consumer_sut.as_ref().map(|c| c.raw()),
    ];
    let raws = [plan.plan.sut.url.get_ref().as_str(), options.sut.raw()]
        .into_iter()
        .chain(consumers.into_iter().flatten());
    for raw in raws {
        if !raw.is_empty() {
            copy = copy.replace(raw, &maestro_protocol::sut::redact(raw));
        }
    }
    maestro_report::folder::write_atomic(&folder.join("plan.toml"), copy.as_bytes())
        .map_err(|e| PlanRunError::Io(folder.clone(), e))?;
    let environment = environment(controller, plan, options, shutdown).await?;
    maestro_report::folder::write(&folder.join("environment.json"), &environment)?;
    let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    // Every fault's action must have its inspector before the first phase runs.
    let all: Vec<crate::faults::FaultPlan> = plan.faults.values().flatten().cloned().collect();
    if !all.is_empty() {
        let online = crate::run::inspectors(controller, options.timeout, shutdown).await?;
        crate::faults::assign(&all, &online).map_err(RunError::from)?;
    }
    let mut runner = Runner {
        knee: None,
        faults: Vec::new(),
        controller,
        plan,
        sut: options.sut.clone(),
        consumer_sut: options.consumer_sut.clone(),
        options: RunOptions {
            group: options.group.clone(),
            roles: options.roles.clone().unwrap_or_else(|| plan.roles()),
            results: folder.clone(),
            timeout: options.timeout,
            faults: Vec::new(),
            watchers: options.watchers.clone(),
        },
        shutdown,
    };
    let mut phases = Vec::new();
    for (i, phase) in plan.phases.iter().enumerate() {
        if i > 0
            && let Some(pause) = plan.plan.plan.cooldown
        {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
        // Stopped (Ctrl-C, SIGTERM, `q`): the phases so far are the plan's results.
        if shutdown.is_cancelled() {
            break;
        }
        let dir = folder.join(format!("{i:02}-{}", phase.kind()));
        runner.faults = plan.faults.get(&i).cloned().unwrap_or_default();
        for w in &options.watchers {
            w.phase(&format!("{i:02}-{}", phase.kind()));
        }
        let result = match runner.phase(i, phase, &dir).await {
            Ok(r) => r,
            // Stopped before a run of this phase started: the phases so far stand.
            Err(
                PlanRunError::Control(ControlError::Interrupted)
                | PlanRunError::Run(RunError::Control(ControlError::Interrupted)),
            ) if shutdown.is_cancelled() => break,
            Err(e) => return Err(e),
        };
        if !result.probes.is_empty() {
            maestro_report::folder::write_phase(&dir, &result)?;
        }
        phases.push(result);
    }
    let interrupted = shutdown.is_cancelled();
    let result = PlanResult {
        schema_version: SCHEMA_VERSION,
        plan: plan.plan.plan.name.clone(),
        description: plan.plan.plan.description.clone(),
        tags: plan.plan.plan.tags.clone(),
        run_id: run_id.to_string(),
        started_at,
        passed: !interrupted && phases.iter().filter(|p| p.judged).all(|p| p.passed),
        interrupted,
        phases,
        environment,
        compare: plan.compare_thresholds(),
    };
    maestro_report::folder::write(&folder.join("summary.json"), &result)?;
    Ok((result, folder))
}

async fn environment(
    controller: &mut Controller,
    plan: &LoadedPlan,
    options: &PlanOptions,
    shutdown: &CancellationToken,
) -> Result<Environment, PlanRunError> {
    let target = match &options.group {
        Some(g) => Target::Group(g.clone()),
        None => Target::Role(Role::Worker),
    };
    let ping = controller
        .request(&target, Body::Ping(Ping {}), options.timeout, shutdown)
        .await?;
    let workers: Vec<WorkerInfo> = outcome::outcomes(&ping)
        .into_iter()
        .filter(|o| o.role == Role::Worker && o.status == PeerStatus::Ok)
        .map(|o| WorkerInfo {
            id: o.id.to_string(),
            name: o.name,
            host: o.host,
            version: o.version,
            rtt_us: o.rtt_us,
            clock_offset_us: o.clock_offset_us,
            cores: o.machine.as_ref().map(|m| m.cores),
            kernel: o.machine.map(|m| m.kernel),
        })
        .collect();
    let needed = plan.plan.plan.workers as usize;
    if workers.len() < needed {
        let whom = options
            .group
            .as_ref()
            .map(|g| format!(" in group {g}"))
            .unwrap_or_default();
        return Err(PlanRunError::NotEnoughWorkers {
            needed,
            found: workers.len(),
            whom,
        });
    }
    Ok(Environment {
        schema_version: SCHEMA_VERSION,
        maestro_version: env!("CARGO_PKG_VERSION").to_owned(),
        control_url: if options.local {
            "embedded".into()
        } else {
            options.control_url.clone()
        },
        cluster: options.cluster.clone(),
        local: options.local,
        sut: options.sut.redacted(),
        sut_name: plan.plan.plan.sut_name.clone(),
        sut_version: plan.plan.plan.sut_version.clone(),
        workers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use maestro_protocol::{MessageSize, MetricKind, RunId, SourceKind, TestSpec};
    use maestro_report::sut::{MetricSummary, SourceSummary, SutSummary};

    fn summary() -> RunSummary {
        let spec = TestSpec {
            size: MessageSize::Fixed(64),
            ..TestSpec::new(
                "mqtt://h/t".parse().unwrap_or_else(|e| panic!("{e}")),
                10.0,
                std::time::Duration::from_secs(1),
            )
        };
        crate::summary::summarize(
            &RunId::new("r").unwrap_or_else(|e| panic!("{e}")),
            &spec,
            std::time::SystemTime::now(),
            0,
            &[],
            &Default::default(),
        )
    }

    fn metric(name: &str, max: f64) -> MetricSummary {
        MetricSummary {
            name: name.into(),
            label: Some("q".into()),
            kind: MetricKind::Gauge,
            first: 0.0,
            last: 0.0,
            min: 0.0,
            max,
            increase: None,
            max_per_second: None,
        }
    }

    #[test]
    fn sut_conditions_judge_what_inspectors_reported() {
        let conditions = Conditions {
            sut_max_queue_depth: Some(100.0),
            sut_max_memory_mb: Some(64.0),
            sut_max_consumer_lag: Some(10.0),
            ..Default::default()
        };
        let mut s = summary();
        s.sut_metrics = Some(SutSummary {
            sources: vec![SourceSummary {
                inspector: "i".into(),
                source: "rabbitmq".into(),
                kind: SourceKind::Rabbitmq,
                samples: 3,
                gaps: vec![],
                metrics: vec![
                    metric(metric_names::QUEUE_DEPTH, 250.0),
                    metric(metric_names::MEMORY_BYTES, 32.0 * 1024.0 * 1024.0),
                ],
            }],
            ..Default::default()
        });
        let v = judge(&s, &conditions);
        let find = |c: &str| {
            v.iter()
                .find(|x| x.condition.starts_with(c))
                .unwrap_or_else(|| panic!("no verdict {c}: {v:?}"))
        };
        let depth = find("sut_max_queue_depth");
        assert!(!depth.passed && depth.actual == 250.0, "{depth:?}");
        let memory = find("sut_max_memory_mb");
        assert!(memory.passed && memory.actual == 32.0, "{memory:?}");
        // Nobody reported a lag: the condition fails and says why.
        let lag = find("sut_max_consumer_lag");
        assert!(!lag.passed && lag.condition.contains("no inspector reported consumer_lag"));
    }
}
