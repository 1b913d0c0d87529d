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
    /// The baseline plan results folder (with --history: the new one).
    pub base: PathBuf,
    /// The new plan results folder; with several, each is judged against BASE and the
    /// table shows them side by side, a column each (one plan through several protocols
    /// or brokers).
    #[arg(required_unless_present = "history", conflicts_with = "history", num_args = 1..)]
    pub new: Vec<PathBuf>,
    /// Judge the one folder given against the last N runs of its plan against the same
    /// SUT in the results index: exit 1 when a phase's p50, p99, rate or loss is outside
    /// their noise band (median ± 3 scaled MADs, at least ±10 % latency, ±5 % rate).
    #[arg(long, env = "MAESTRO_HISTORY", value_name = "N")]
    pub history: Option<usize>,
    /// The results folder whose index holds the history [default: the folder's parent].
    #[arg(long, env = "MAESTRO_RESULTS", requires = "history")]
    pub results: Option<PathBuf>,
    /// Response-time p50/p99 may grow by this many percent [default: the plan's, else 10].
    #[arg(long, env = "MAESTRO_MAX_LATENCY_INCREASE", conflicts_with = "history")]
    pub max_latency_increase: Option<f64>,
    /// The achieved rate or knee may drop by this many percent [default: the plan's, else 5].
    #[arg(long, env = "MAESTRO_MAX_RATE_DECREASE", conflicts_with = "history")]
    pub max_rate_decrease: Option<f64>,
    /// Lost messages may grow by this many [default: the plan's, else 0].
    #[arg(long, env = "MAESTRO_MAX_LOST_INCREASE", conflicts_with = "history")]
    pub max_lost_increase: Option<u64>,
}

/// One NEW folder judged against BASE (`--output json` with several NEW folders).
#[derive(Debug, serde::Serialize)]
struct Judged<'a> {
    folder: String,
    sut: &'a str,
    deltas: &'a [maestro_report::compare::Delta],
}

pub fn compare(args: &CompareArgs, output: Output) -> Result<Outcome, CliError> {
    if let Some(n) = args.history {
        return crate::history::gate(&args.base, n, args.results.as_deref(), output);
    }
    let base = read_plan(&args.base)?;
    let news = args
        .new
        .iter()
        .map(|f| read_plan(f))
        .collect::<Result<Vec<_>, _>>()?;
    // Thresholds: flags, else the new plan's [compare], else defaults.
    let flags = Thresholds {
        max_latency_increase_pct: args.max_latency_increase,
        max_rate_decrease_pct: args.max_rate_decrease,
        max_lost_increase: args.max_lost_increase,
        history: None,
    };
    let judged: Vec<(Limits, Vec<maestro_report::compare::Delta>)> = news
        .iter()
        .map(|new| {
            let limits = Limits::resolve(&flags, &new.compare);
            let deltas = deltas_of(&base, new, &limits);
            (limits, deltas)
        })
        .collect();
    let regressions: Vec<String> = judged
        .iter()
        .zip(&args.new)
        .flat_map(|((_, deltas), folder)| {
            deltas
                .iter()
                .filter(|d| d.regressed)
                .map(move |d| match args.new.len() {
                    1 => d.describe(),
                    _ => format!("{}: {}", folder.display(), d.describe()),
                })
        })
        .collect();
    let stdout = match (output, &judged[..]) {
        (Output::Json, [(_, deltas)]) => serde_json::to_string_pretty(deltas).unwrap_or_default(),
        (Output::Json, _) => {
            let all: Vec<Judged> = judged
                .iter()
                .zip(&args.new)
                .zip(&news)
                .map(|(((_, deltas), folder), new)| Judged {
                    folder: folder.display().to_string(),
                    sut: &new.environment.sut,
                    deltas,
                })
                .collect();
            serde_json::to_string_pretty(&all).unwrap_or_default()
        }
        (Output::Table, [(limits, deltas)]) => {
            // Which run is which: the same plan against two SUTs (two brokers, or one
            // broker through two protocols) reads side by side.
            let new = &news[0];
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
                    args.new[0].display()
                ),
                thresholds(limits),
            ];
            lines.push(format!(
                "{:<14} {:<22} {:>12} {:>12} {:>9}  verdict",
                "phase", "metric", "base", "new", "change"
            ));
            for d in deltas {
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
        (Output::Table, _) => side_by_side(args, &base, &news, &judged),
    };
    let (code, problem) = if judged.iter().all(|(_, d)| d.is_empty()) {
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

fn thresholds(limits: &Limits) -> String {
    format!(
        "thresholds: latency +{} %, rate -{} %, lost +{}",
        limits.max_latency_increase_pct, limits.max_rate_decrease_pct, limits.max_lost_increase
    )
}

/// BASE and every NEW folder in columns, each headed by its SUT's protocol: a value per
/// phase and metric, and for a NEW its change against BASE (`!` where it is worse).
fn side_by_side(
    args: &CompareArgs,
    base: &maestro_report::model::PlanResult,
    news: &[maestro_report::model::PlanResult],
    judged: &[(Limits, Vec<maestro_report::compare::Delta>)],
) -> String {
    let scheme = |sut: &str| sut.split("://").next().unwrap_or(sut).to_owned();
    let mut lines = vec![format!(
        "base:  {} ({}, {})",
        base.environment.sut,
        base.plan,
        args.base.display()
    )];
    let mut heads = vec![scheme(&base.environment.sut)];
    for (i, (new, folder)) in news.iter().zip(&args.new).enumerate() {
        lines.push(format!(
            "new {}: {} ({}, {})",
            i + 1,
            new.environment.sut,
            new.plan,
            folder.display()
        ));
        heads.push(scheme(&new.environment.sut));
    }
    if let Some((limits, _)) = judged.first() {
        lines.push(thresholds(limits));
    }
    let mut head = format!("{:<14} {:<22}", "phase", "metric");
    for h in &heads {
        head.push_str(&format!(" {h:>20}"));
    }
    lines.push(head);
    // The rows: every (phase, metric) any NEW has in common with BASE, in BASE's order.
    let mut rows: Vec<(&str, &str, f64)> = Vec::new();
    for (_, deltas) in judged {
        for d in deltas {
            if !rows.iter().any(|(p, m, _)| *p == d.phase && *m == d.metric) {
                rows.push((&d.phase, &d.metric, d.base));
            }
        }
    }
    for (phase, metric, base_value) in rows {
        let mut line = format!("{phase:<14} {metric:<22} {base_value:>20.3}");
        for (_, deltas) in judged {
            let cell = match deltas
                .iter()
                .find(|d| d.phase == phase && d.metric == metric)
            {
                Some(d) => format!(
                    "{:.3} ({}){}",
                    d.new,
                    d.change_pct
                        .map(|p| format!("{p:+.0}%"))
                        .unwrap_or_else(|| "-".into()),
                    if d.regressed { "!" } else { "" }
                ),
                None => "-".into(),
            };
            line.push_str(&format!(" {cell:>20}"));
        }
        lines.push(line);
    }
    lines.join("\n")
}
