//! `maestro-cli compare BASE NEW`: the regression gate's flags and rendering. The
//! comparison reads both folders through the results model (a missing or mistyped field
//! is an error naming the file and field, never a 0) and is `maestro_report::compare`.

use crate::exit;
use crate::output::{CliError, Outcome, Output};
use maestro_report::Thresholds;
use maestro_report::compare::{Limits, compare as deltas_of};
use maestro_report::folder::read_plan;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// The baseline plan results folder.
    pub base: PathBuf,
    /// The new plan results folder.
    pub new: PathBuf,
    /// Response-time p50/p99 may grow by this many percent [default: the plan's, else 10].
    #[arg(long, env = "MAESTRO_MAX_LATENCY_INCREASE")]
    pub max_latency_increase: Option<f64>,
    /// The achieved rate or knee may drop by this many percent [default: the plan's, else 5].
    #[arg(long, env = "MAESTRO_MAX_RATE_DECREASE")]
    pub max_rate_decrease: Option<f64>,
    /// Lost messages may grow by this many [default: the plan's, else 0].
    #[arg(long, env = "MAESTRO_MAX_LOST_INCREASE")]
    pub max_lost_increase: Option<u64>,
}

pub fn compare(args: &CompareArgs, output: Output) -> Result<Outcome, CliError> {
    let (base, new) = (read_plan(&args.base)?, read_plan(&args.new)?);
    // Thresholds: flags, else the new plan's [compare], else defaults.
    let flags = Thresholds {
        max_latency_increase_pct: args.max_latency_increase,
        max_rate_decrease_pct: args.max_rate_decrease,
        max_lost_increase: args.max_lost_increase,
    };
    let limits = Limits::resolve(&flags, &new.compare);
    let (latency, rate_drop, lost_growth) = (
        limits.max_latency_increase_pct,
        limits.max_rate_decrease_pct,
        limits.max_lost_increase,
    );
    let deltas = deltas_of(&base, &new, &limits);
    let regressions: Vec<String> = deltas
        .iter()
        .filter(|d| d.regressed)
        .map(|d| d.describe())
        .collect();
    let stdout = match output {
        Output::Json => serde_json::to_string_pretty(&deltas).unwrap_or_default(),
        Output::Table => {
            // Which run is which: the same plan against two SUTs (two brokers, or one
            // broker through two protocols) reads side by side.
            let mut lines = vec![
                format!(
                    "base: {} ({}, {})",
                    base.environment.sut,
                    base.plan,
                    args.base.display()
                ),
                format!(
                    "new:  {} ({}, {})",
                    new.environment.sut,
                    new.plan,
                    args.new.display()
                ),
                format!(
                    "thresholds: latency +{latency} %, rate -{rate_drop} %, lost +{lost_growth}"
                ),
            ];
            lines.push(format!(
                "{:<14} {:<22} {:>12} {:>12} {:>9}  verdict",
                "phase", "metric", "base", "new", "change"
            ));
            for d in &deltas {
                lines.push(format!(
                    "{:<14} {:<22} {:>12.3} {:>12.3} {:>9}  {}",
                    d.phase,
                    d.metric,
                    d.base,
                    d.new,
                    d.change_pct
                        .map(|p| format!("{p:+.1}%"))
                        .unwrap_or_else(|| "-".into()),
                    if d.regressed { "WORSE" } else { "ok" }
                ));
            }
            lines.join("\n")
        }
    };
    let (code, problem) = if deltas.is_empty() {
        (
            exit::USAGE,
            Some("no phases in common to compare".to_owned()),
        )
    } else if regressions.is_empty() {
        (exit::OK, None)
    } else {
        (
            exit::CONDITION_FAILED,
            Some(format!(
                "NEW is worse than BASE:\n  {}",
                regressions.join("\n  ")
            )),
        )
    };
    Ok(Outcome {
        stdout,
        code,
        problem,
        peers: Vec::new(),
    })
}
