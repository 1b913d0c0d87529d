//! `maestro-cli compare BASE NEW`: the regression gate. Compares two plan results folders
//! phase by phase (matched by index and kind) and fails when NEW is worse than BASE beyond
//! the thresholds: response-time p50 and p99 growth, achieved rate or knee drop, loss growth.

use crate::cli::{CliError, Outcome, Output};
use crate::exit;
use crate::plan::CompareThresholds;
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

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

#[derive(Debug, Clone, Serialize)]
pub struct Delta {
    pub phase: String,
    pub metric: String,
    pub base: f64,
    pub new: f64,
    /// (new - base) / base in percent, when base is not 0.
    pub change_pct: Option<f64>,
    pub regressed: bool,
}

fn load(folder: &Path) -> Result<Value, CliError> {
    let path = folder.join("summary.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| CliError::Report(crate::html::ReportError::Read(path.clone(), e)))?;
    serde_json::from_str(&text)
        .map_err(|e| CliError::Report(crate::html::ReportError::Summary(path, e.to_string())))
}

/// The numbers a phase is compared by: its deciding probe's latency, rate and loss.
fn metrics(phase: &Value) -> Option<(f64, f64, f64, f64, f64)> {
    let probes = phase["probes"].as_array()?;
    let probe = match phase["kind"].as_str()? {
        // The knee's probe for searches, else the last one.
        "ramp" | "max-rate" => {
            let knee = phase["knee_rate"].as_f64();
            probes
                .iter()
                .find(|p| p["rate"].as_f64() == knee)
                .or(probes.last())?
        }
        _ => probes.last()?,
    };
    let s = &probe["summary"];
    let r = &s["response_time_us"];
    let ms = |k: &str| r[k].as_f64().unwrap_or(0.0) / 1000.0;
    let rate = match phase["kind"].as_str()? {
        "ramp" | "max-rate" => phase["knee_rate"].as_f64().unwrap_or(0.0),
        _ => s["achieved_rate"].as_f64().unwrap_or(0.0),
    };
    Some((
        ms("p50"),
        ms("p99"),
        ms("p999"),
        rate,
        s["lost"].as_f64().unwrap_or(0.0),
    ))
}

pub fn compare(args: &CompareArgs, output: Output) -> Result<Outcome, CliError> {
    let (base, new) = (load(&args.base)?, load(&args.new)?);
    // Thresholds: flags, else the new plan's [compare], else defaults.
    let plan_thresholds = std::fs::read_to_string(args.new.join("plan.toml"))
        .ok()
        .and_then(|t| toml::from_str::<Value>(&t).ok())
        .and_then(|v| serde_json::from_value::<CompareThresholds>(v["compare"].clone()).ok())
        .unwrap_or_default();
    let latency = args
        .max_latency_increase
        .or(plan_thresholds.max_latency_increase_pct)
        .unwrap_or(10.0);
    let rate_drop = args
        .max_rate_decrease
        .or(plan_thresholds.max_rate_decrease_pct)
        .unwrap_or(5.0);
    let lost_growth = args
        .max_lost_increase
        .or(plan_thresholds.max_lost_increase)
        .unwrap_or(0);

    let mut deltas = Vec::new();
    let empty = Vec::new();
    let base_phases = base["phases"].as_array().unwrap_or(&empty);
    for np in new["phases"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter(|p| p["judged"] == true)
    {
        let Some(bp) = base_phases
            .iter()
            .find(|b| b["index"] == np["index"] && b["kind"] == np["kind"])
        else {
            continue;
        };
        let (Some(b), Some(n)) = (metrics(bp), metrics(np)) else {
            continue;
        };
        let phase = format!("{} {}", np["index"], np["kind"].as_str().unwrap_or(""));
        let pct = |b: f64, n: f64| (b != 0.0).then(|| (n - b) / b * 100.0);
        let mut add = |metric: &str, bv: f64, nv: f64, regressed: bool| {
            deltas.push(Delta {
                phase: phase.clone(),
                metric: metric.to_owned(),
                base: bv,
                new: nv,
                change_pct: pct(bv, nv),
                regressed,
            });
        };
        add(
            "response_time_p50_ms",
            b.0,
            n.0,
            pct(b.0, n.0).is_some_and(|p| p > latency),
        );
        add(
            "response_time_p99_ms",
            b.1,
            n.1,
            pct(b.1, n.1).is_some_and(|p| p > latency),
        );
        add("response_time_p999_ms", b.2, n.2, false);
        add(
            "rate",
            b.3,
            n.3,
            pct(b.3, n.3).is_some_and(|p| -p > rate_drop),
        );
        add("lost", b.4, n.4, n.4 > b.4 + lost_growth as f64);
    }
    let regressions: Vec<String> = deltas
        .iter()
        .filter(|d| d.regressed)
        .map(|d| {
            format!(
                "phase {}: {} {:.3} -> {:.3}{}",
                d.phase,
                d.metric,
                d.base,
                d.new,
                d.change_pct
                    .map(|p| format!(" ({p:+.1} %)"))
                    .unwrap_or_default()
            )
        })
        .collect();
    let stdout = match output {
        Output::Json => serde_json::to_string_pretty(&deltas).unwrap_or_default(),
        Output::Table => {
            let mut lines = vec![format!(
                "thresholds: latency +{latency} %, rate -{rate_drop} %, lost +{lost_growth}"
            )];
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
