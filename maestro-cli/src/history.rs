//! `maestro-cli index` and `compare --history N`: the results index beside the results
//! folders (rebuilt from them, added to by every `start` and `run`) and the gate over a
//! plan's earlier runs.

use crate::exit;
use crate::output::{CliError, Outcome, Output};
use maestro_report::history::{Finding, Index, MIN_HISTORY};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct IndexArgs {
    /// The results folder whose runs and plans are indexed (into its index.sqlite).
    #[arg(long, env = "MAESTRO_RESULTS", default_value = "results")]
    pub results: PathBuf,
}

/// Adds a finished run's or plan's folder to its results folder's index. The folders are
/// the source of truth: a failure is logged, never the run's.
pub fn record(results: &Path, folder: &Path) {
    let added = Index::open(results).and_then(|mut index| {
        if index.created {
            // A first index takes in the folders already there.
            index.rebuild().map(|_| ())
        } else {
            index.add(folder).map(|_| ())
        }
    });
    if let Err(e) = added {
        tracing::warn!(folder = %folder.display(), error = %e, "not added to the results index (maestro-cli index rebuilds it)");
    }
}

/// `maestro-cli index`: rebuilds the index from every results folder.
pub fn index(args: &IndexArgs, output: Output) -> Result<Outcome, CliError> {
    if !args.results.is_dir() {
        return Ok(Outcome {
            stdout: String::new(),
            code: exit::USAGE,
            problem: Some(format!(
                "{} is not a results folder",
                args.results.display()
            )),
            peers: Vec::new(),
        });
    }
    let began = Instant::now();
    let mut index = Index::open(&args.results)?;
    let rebuilt = index.rebuild()?;
    let took = began.elapsed();
    let stdout = match output {
        Output::Json => serde_json::to_string_pretty(&serde_json::json!({
            "index": args.results.join(maestro_report::history::INDEX_FILE),
            "indexed": rebuilt.indexed,
            "skipped": rebuilt.skipped,
            "took_ms": took.as_millis() as u64,
        }))
        .unwrap_or_default(),
        Output::Table => {
            let mut lines = vec![format!(
                "indexed {} results folders of {} in {} ms ({})",
                rebuilt.indexed,
                args.results.display(),
                took.as_millis(),
                args.results
                    .join(maestro_report::history::INDEX_FILE)
                    .display()
            )];
            for (folder, why) in &rebuilt.skipped {
                lines.push(format!("skipped {folder}: {why}"));
            }
            lines.join("\n")
        }
    };
    Ok(Outcome {
        stdout,
        code: exit::OK,
        problem: None,
        peers: Vec::new(),
    })
}

/// `compare --history N NEW`: NEW's judged phases against the band of the last N runs of
/// its plan against the same SUT in its results folder.
pub fn gate(
    new_folder: &Path,
    n: usize,
    results: Option<&Path>,
    output: Output,
) -> Result<Outcome, CliError> {
    let usage = |problem: String| Outcome {
        stdout: String::new(),
        code: exit::USAGE,
        problem: Some(problem),
        peers: Vec::new(),
    };
    if n < MIN_HISTORY {
        return Ok(usage(format!(
            "--history {n}: a noise band needs at least {MIN_HISTORY} earlier runs"
        )));
    }
    let new = maestro_report::folder::read_plan(new_folder)?;
    let root = match results {
        Some(r) => r.to_owned(),
        None => new_folder
            .canonicalize()
            .ok()
            .and_then(|f| f.parent().map(Path::to_owned))
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let mut index = Index::open(&root)?;
    if index.created {
        index.rebuild()?;
    }
    let row = index.add(new_folder)?;
    let Some((_, new_phases)) = index.run(&row.folder)? else {
        return Ok(usage(format!(
            "{} is not in the index of {}",
            new_folder.display(),
            root.display()
        )));
    };
    let history = index.history((&new.plan, &row.sut_key), (&new.started_at, &row.folder), n)?;
    if history.len() < MIN_HISTORY {
        return Ok(usage(format!(
            "plan {:?} against {} has {} earlier runs in {} (a noise band needs {MIN_HISTORY}; `maestro-cli index` takes in folders made before the index)",
            new.plan,
            row.sut_key,
            history.len(),
            root.display()
        )));
    }
    let phases: Vec<Vec<_>> = history.iter().map(|(_, p)| p.clone()).collect();
    let findings = maestro_report::history::judge(&phases, &new_phases);
    let environments: std::collections::BTreeSet<&str> = history
        .iter()
        .map(|(r, _)| r.fingerprint.as_str())
        .collect();
    let changed = !environments.contains(row.fingerprint.as_str());
    let stdout = match output {
        Output::Json => serde_json::to_string_pretty(&serde_json::json!({
            "plan": new.plan,
            "sut": row.sut_key,
            "new": row.folder,
            "history": history.iter().map(|(r, _)| &r.folder).collect::<Vec<_>>(),
            "environment": row.fingerprint,
            "environment_changed": changed,
            "test": maestro_report::history::TEST,
            "findings": findings,
        }))
        .unwrap_or_default(),
        Output::Table => table(&new.plan, &row.folder, &history, &findings, changed),
    };
    let regressions: Vec<String> = findings
        .iter()
        .filter(|f| f.regressed)
        .map(Finding::describe)
        .collect();
    let inconclusive: Vec<String> = findings
        .iter()
        .filter_map(|f| {
            f.inconclusive
                .as_ref()
                .map(|why| format!("{}; {why}", f.describe()))
        })
        .collect();
    let (code, problem) = if findings.is_empty() {
        (
            exit::USAGE,
            Some("no judged phase of NEW has enough history to compare".to_owned()),
        )
    } else if regressions.is_empty() {
        (
            exit::OK,
            (!inconclusive.is_empty()).then(|| {
                format!(
                    "not judged, the machine was busy:\n  {}",
                    inconclusive.join("\n  ")
                )
            }),
        )
    } else {
        (
            exit::CONDITION_FAILED,
            Some(format!(
                "NEW is worse than its history:\n  {}",
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

fn table(
    plan: &str,
    new: &str,
    history: &[(
        maestro_report::history::RunRow,
        Vec<maestro_report::history::PhaseRow>,
    )],
    findings: &[Finding],
    changed: bool,
) -> String {
    let mut lines = vec![
        format!(
            "plan {plan}: {new} against the last {} runs ({} .. {})",
            history.len(),
            history.last().map_or("", |(r, _)| r.started_at.as_str()),
            history.first().map_or("", |(r, _)| r.started_at.as_str()),
        ),
        "band: median ± 3 scaled MADs (at least ±10 % latency, ±5 % rate); lost and errors: the most an earlier run had".to_owned(),
    ];
    if changed {
        lines.push("note: NEW ran in an environment none of these runs had".to_owned());
    }
    lines.push(format!(
        "{:<14} {:<22} {:>12} {:>12} {:>25}  verdict",
        "phase", "metric", "new", "median", "band"
    ));
    for f in findings {
        lines.push(format!(
            "{:<14} {:<22} {:>12.3} {:>12.3} {:>25}  {}",
            f.phase,
            f.metric.as_str(),
            f.new,
            f.band.median,
            format!("{:.3}..{:.3}", f.band.low, f.band.high),
            if f.regressed {
                "WORSE"
            } else if f.inconclusive.is_some() {
                "inconclusive (machine busy)"
            } else {
                "ok"
            }
        ));
    }
    lines.join("\n")
}
