//! The results index at scale: a generated history of MAESTRO_BENCH_RUNS plan results
//! (default 10,000; five plans against two SUTs, a warm-up and a fixed phase each),
//! indexed from their folders; then the time of the runs list (the newest 100, unfiltered
//! and filtered by plan, tag and verdict), a plan's trend, and the gate's history query,
//! each asked 200 times; then the two pages of `maestro-cli serve` that read the most (the
//! runs list and a plan's trends, judged and drawn), 50 times each. Prints figures;
//! checks nothing about time.
//!   cargo bench -p maestro-report --bench history

use maestro_report::history::{self, Index, Metric, RunFilter};
use maestro_report::site;
use maestro_report::{
    Environment, Percentiles, PhaseKind, PhaseResult, PlanResult, Probe, RunSummary,
    SCHEMA_VERSION, Thresholds,
};
use std::path::Path;
use std::time::{Duration, Instant};

fn plan_result(i: usize) -> PlanResult {
    let plan = format!("plan-{}", i % 5);
    let sut = format!("mqtt://sut-{}:1883/x?qos=1", i % 2);
    // Mon 2026-01-05 plus i minutes: distinct, sortable start times.
    let minutes = i as u64;
    let started_at = format!(
        "2026-{:02}-{:02}T{:02}:{:02}:00Z",
        1 + (minutes / (28 * 24 * 60)) % 12,
        1 + (minutes / (24 * 60)) % 28,
        (minutes / 60) % 24,
        minutes % 60
    );
    let jitter = (i * 7919 % 100) as u64;
    let summary = RunSummary {
        measured_s: 10.0,
        sent: 10_000,
        received: 10_000,
        offered_rate: 1000.0,
        achieved_rate: 1000.0 - (jitter as f64) / 10.0,
        achieved_fraction: Some(1.0),
        receive_rate: 1000.0,
        achieved_bytes_rate: Some(256_000.0),
        receive_bytes_rate: Some(256_000.0),
        response_time_us: Percentiles {
            count: 10_000,
            p50: 500 + jitter,
            p90: 900 + jitter,
            p95: Some(1000 + jitter),
            p99: 2000 + 10 * jitter,
            p999: 4000 + 20 * jitter,
            p9999: 5000 + 20 * jitter,
            max: 9000,
        },
        ..RunSummary::new(format!("run-{i}"), sut.clone(), started_at.clone())
    };
    let phase = |index: usize, kind: PhaseKind, judged: bool| PhaseResult {
        index,
        kind,
        judged,
        passed: true,
        probes: vec![Probe {
            rate: 1000.0,
            passed: true,
            verdicts: vec![],
            summary: summary.clone(),
        }],
        knee_rate: None,
        reasons: vec![],
    };
    PlanResult {
        schema_version: SCHEMA_VERSION,
        plan,
        description: String::new(),
        tags: vec!["nightly".into(), format!("t{}", i % 3)],
        run_id: format!("r{i:06}"),
        started_at,
        passed: !i.is_multiple_of(17),
        interrupted: false,
        phases: vec![
            phase(0, PhaseKind::Warmup, false),
            phase(1, PhaseKind::Fixed, true),
        ],
        environment: Environment {
            schema_version: SCHEMA_VERSION,
            maestro_version: "0.1.0".into(),
            control_url: "mqtt://127.0.0.1:1883".into(),
            cluster: "default".into(),
            local: false,
            sut,
            sut_name: "Mosquitto".into(),
            sut_version: "2.0.11".into(),
            workers: vec![],
        },
        compare: Thresholds::default(),
    }
}

fn timed(times: &mut Vec<Duration>, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    times.push(t.elapsed());
}

fn print(what: &str, mut times: Vec<Duration>) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "{what:<44} p50 {:>8.3} ms   p99 {:>8.3} ms",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3
    );
}

fn main() {
    let runs: usize = std::env::var("MAESTRO_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::Builder::new()
        .prefix("maestro-bench-history-")
        .tempdir()
        .unwrap_or_else(|e| panic!("{e}"));
    let root = dir.path();
    let t = Instant::now();
    for i in 0..runs {
        let folder = root.join(format!("plan-{i:06}"));
        std::fs::create_dir_all(&folder).unwrap_or_else(|e| panic!("{e}"));
        maestro_report::folder::write(&folder.join("summary.json"), &plan_result(i))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    println!(
        "generated {runs} plan results folders in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut index = Index::open(root).unwrap_or_else(|e| panic!("{e}"));
    let rebuilt = index.rebuild().unwrap_or_else(|e| panic!("{e}"));
    println!(
        "index built from the folders: {} indexed in {:.2} s ({:.0} folders/s)",
        rebuilt.indexed,
        t.elapsed().as_secs_f64(),
        rebuilt.indexed as f64 / t.elapsed().as_secs_f64()
    );
    assert_eq!(rebuilt.indexed, runs);
    one_more(&mut index, root, runs);
    let (mut list, mut filtered, mut trend, mut history) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for k in 0..200 {
        timed(&mut list, || {
            let rows = index.runs(&RunFilter::default()).unwrap_or_default();
            assert_eq!(rows.len(), 100.min(runs));
        });
        timed(&mut filtered, || {
            let filter = RunFilter {
                plan: Some(format!("plan-{}", k % 5)),
                tag: Some("t1".into()),
                passed: Some(true),
                ..RunFilter::default()
            };
            let _ = index.runs(&filter).unwrap_or_default();
        });
        timed(&mut trend, || {
            let points = index
                .trend(
                    &format!("plan-{}", k % 5),
                    Some("mqtt://sut-0:1883/x?qos=1"),
                    (1, Metric::ResponseTimeP99Ms),
                )
                .unwrap_or_default();
            assert!(!points.is_empty());
        });
        timed(&mut history, || {
            let h = index
                .history(
                    (&format!("plan-{}", k % 5), "mqtt://sut-1:1883/x?qos=1"),
                    ("2027-01-01T00:00:00Z", ""),
                    20,
                )
                .unwrap_or_default();
            assert_eq!(h.len(), 20);
        });
    }
    print("runs list (newest 100)", list);
    print("runs list by plan, tag and verdict", filtered);
    print(
        &format!("trend of a plan's p99 (~{} points)", runs / 10),
        trend,
    );
    print("the gate's history (last 20 runs)", history);
    // What `maestro-cli serve` does per page: the queries, the judging and the HTML.
    let (mut runs_page, mut trends_page) = (Vec::new(), Vec::new());
    let plans = index.plans().unwrap_or_default();
    let mut points = 0;
    for k in 0..50 {
        timed(&mut runs_page, || {
            let rows = index.runs(&RunFilter::default()).unwrap_or_default();
            let plans = index.plans().unwrap_or_default();
            let html = site::runs_page(&rows, &RunFilter::default(), &plans);
            assert!(html.contains("table id=\"runs\""));
        });
        timed(&mut trends_page, || {
            let plan = format!("plan-{}", k % 5);
            let runs = index.plan_runs(&plan, None).unwrap_or_default();
            let series = history::trends(&runs, 10);
            points = series.iter().map(|s| s.points.len()).sum::<usize>();
            let html = site::trends_page(Some(&plan), 10, &series, &plans);
            assert!(html.contains("svg"));
        });
    }
    print("serve: the runs page (newest 100, HTML)", runs_page);
    print(
        &format!("serve: a plan's trends page ({points} judged points)"),
        trends_page,
    );
}

/// Adds one more folder to the full index, as a finished run does.
fn one_more(index: &mut Index, root: &Path, runs: usize) {
    let folder = root.join("plan-new");
    std::fs::create_dir_all(&folder).unwrap_or_else(|e| panic!("{e}"));
    maestro_report::folder::write(&folder.join("summary.json"), &plan_result(runs))
        .unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    index.add(&folder).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "one finished run added to the index of {runs}: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
}
