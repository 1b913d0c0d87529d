//! The results index and the gate over history, with the real binaries against
//! Mosquitto: every finished plan and run is indexed, `maestro-cli index` rebuilds the
//! index from the folders, and `compare --history N` flags a run made slower on purpose
//! (the broker stopped for 600 ms mid-phase) against the noise band of the runs before.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_testkit::{Cluster, Mosquitto, run_cli, signal};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// Runs the plan into `results`; returns the plan results folder it made.
fn run_plan(c: &Cluster, plan: &Path, results: &Path) -> std::path::PathBuf {
    let before: Vec<_> = folders(results);
    let run = c.cli(
        &[
            "run",
            plan.to_str().unwrap(),
            "--results",
            results.to_str().unwrap(),
            "-o",
            "json",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let after = folders(results);
    let new: Vec<_> = after.iter().filter(|f| !before.contains(f)).collect();
    assert_eq!(new.len(), 1, "{new:?}");
    new[0].clone()
}

fn folders(results: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(results) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

fn gate(folder: &Path) -> (Option<i32>, Value, String) {
    let run = run_cli(
        &[
            "compare",
            "--history",
            "3",
            folder.to_str().unwrap(),
            "-o",
            "json",
        ],
        Duration::from_secs(30),
    )
    .unwrap();
    let v: Value = if run.stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"))
    };
    (run.code, v, run.stderr)
}

fn finding<'a>(v: &'a Value, metric: &str) -> &'a Value {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["metric"] == metric)
        .unwrap_or_else(|| panic!("no {metric} in {v:#}"))
}

#[test]
fn a_plan_slowed_on_purpose_is_flagged_against_its_history() {
    let c = Cluster::start(1);
    let mq = Mosquitto::start().unwrap();
    let dir = maestro_testkit::test_dir("history");
    let results = dir.join("results");
    let plan = dir.join("history.toml");
    std::fs::write(
        &plan,
        format!(
            "[plan]\nname = \"history\"\nsut_name = \"Mosquitto\"\n\n\
             [sut]\nurl = \"mqtt://127.0.0.1:{}/history?qos=1\"\n\n\
             [workload]\ntopics = 1\nmessage_size = 256\n\n\
             [conditions]\nfail_when_generator_bound = false\n\n\
             [[phase]]\nkind = \"warmup\"\nrate = 500\nduration = \"1s\"\n\n\
             [[phase]]\nkind = \"fixed\"\nrate = 1000\nduration = \"4s\"\n",
            mq.port
        ),
    )
    .unwrap();
    let mut made = Vec::new();
    for _ in 0..4 {
        made.push(run_plan(&c, &plan, &results));
    }
    // A single run is indexed too.
    let run = c.cli(
        &[
            "start",
            "--sut",
            &format!("mqtt://127.0.0.1:{}/single", mq.port),
            "--count",
            "200",
            "--results",
            results.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(results.join("index.sqlite").is_file());

    // An unchanged run against the three before it: every metric of the fixed phase has
    // a band of three runs, and it lost nothing more than they did. (Whether its latency
    // is inside theirs depends on the machine's noise: the false-alarm rate is measured
    // by scripts/bench/history, not asserted here.)
    let (code, v, stderr) = gate(made.last().unwrap());
    assert!(matches!(code, Some(0 | 1)), "{code:?} {stderr}");
    assert_eq!(v["history"].as_array().unwrap().len(), 3, "{v:#}");
    assert_eq!(v["findings"].as_array().unwrap().len(), 6, "{v:#}");
    for f in v["findings"].as_array().unwrap() {
        assert_eq!(f["band"]["runs"], 3, "{v:#}");
    }
    assert_eq!(finding(&v, "lost")["regressed"], false, "{v:#}");

    // The broker stopped for 600 ms in the fixed phase: its p99 is far outside the band.
    let pid = mq.proc.pid();
    let slowed = std::thread::scope(|scope| {
        let stopper = scope.spawn(move || {
            std::thread::sleep(Duration::from_millis(3000));
            maestro_testkit::signal_pid(pid, signal::SIGSTOP);
            std::thread::sleep(Duration::from_millis(600));
            maestro_testkit::signal_pid(pid, signal::SIGCONT);
        });
        let folder = run_plan(&c, &plan, &results);
        stopper.join().unwrap();
        folder
    });
    let (code, v, stderr) = gate(&slowed);
    assert_eq!(code, Some(1), "{v:#} {stderr}");
    let p99 = finding(&v, "response_time_p99_ms");
    assert_eq!(p99["regressed"], true, "{v:#}");
    assert!(p99["new"].as_f64().unwrap() > 100.0, "{v:#}");
    assert!(
        stderr.contains("phase 1 fixed: response_time_p99_ms")
            && stderr.contains("outside the band")
            && stderr.contains("of the last 3 runs"),
        "{stderr}"
    );
    assert_eq!(v["environment_changed"], false, "{v:#}");

    // The index is rebuilt from the folders: five plans and the single run.
    std::fs::remove_file(results.join("index.sqlite")).unwrap();
    let run = run_cli(
        &[
            "index",
            "--results",
            results.to_str().unwrap(),
            "-o",
            "json",
        ],
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(run.code, Some(0), "{run:?}");
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["indexed"], 6, "{v:#}");
    // The same verdict from the rebuilt index.
    let (code, _, _) = gate(&slowed);
    assert_eq!(code, Some(1));
    // Too little history is a usage error that says how much there is.
    let (code, _, stderr) = gate(&made[1]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("has 1 earlier runs"), "{stderr}");

    // The same plan with `[compare] history = 3`: `run` judges itself as it finishes,
    // and a run slowed the same way fails although its conditions pass.
    let gated = dir.join("gated.toml");
    let text = std::fs::read_to_string(&plan).unwrap();
    std::fs::write(&gated, format!("{text}\n[compare]\nhistory = 3\n")).unwrap();
    let run = std::thread::scope(|scope| {
        let stopper = scope.spawn(move || {
            std::thread::sleep(Duration::from_millis(3000));
            maestro_testkit::signal_pid(pid, signal::SIGSTOP);
            std::thread::sleep(Duration::from_millis(600));
            maestro_testkit::signal_pid(pid, signal::SIGCONT);
        });
        let run = c.cli(
            &[
                "run",
                gated.to_str().unwrap(),
                "--results",
                results.to_str().unwrap(),
                "-o",
                "json",
            ],
            Duration::from_secs(60),
        );
        stopper.join().unwrap();
        run
    });
    assert_eq!(run.code, Some(1), "{run:?}");
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["passed"], true, "its own conditions passed: {v:#}");
    assert!(
        run.stderr
            .contains("[compare] history: NEW is worse than its history")
            && run.stderr.contains("response_time_p99_ms"),
        "{}",
        run.stderr
    );
    // A history of fewer than 3 runs is a plan error.
    std::fs::write(&gated, format!("{text}\n[compare]\nhistory = 2\n")).unwrap();
    let run = c.cli(
        &["run", gated.to_str().unwrap(), "--check"],
        Duration::from_secs(30),
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("compare.history"), "{run:?}");

    // The index records each worker's machine in the fingerprint and the clock offset.
    let index = maestro_report::history::Index::open(&results).unwrap();
    let (row, _) = index
        .run(&slowed.file_name().unwrap().to_string_lossy())
        .unwrap()
        .unwrap();
    assert!(row.fingerprint.contains(" cores, "), "{row:?}");
    assert!(row.clock_offset_us.is_some(), "{row:?}");
}
