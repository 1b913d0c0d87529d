//! Test plans with the real binaries: a local plan that needs nothing installed, a failing
//! condition with its JUnit failure, validation errors that point at the line, a
//! max-rate search against Mosquitto, and one plan through two protocols on one RabbitMQ.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_report::{
    Environment, Percentiles, PhaseKind, PhaseResult, PlanResult, Probe, RunSummary,
    SCHEMA_VERSION, Thresholds,
};
use maestro_testkit::{Cluster, Mosquitto, ScriptedSut, plan_summary, run_cli};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn plans_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plans")
}

fn temp_dir(name: &str) -> maestro_testkit::TestDir {
    maestro_testkit::test_dir(&format!("plans-{name}"))
}

/// (test cases, failures with their messages) of a JUnit file, read with an XML parser.
fn junit(path: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let cases = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .count();
    let failures = doc
        .descendants()
        .filter(|n| n.has_tag_name("failure"))
        .map(|n| n.attribute("message").unwrap_or_default().to_owned())
        .collect();
    (cases, failures)
}

#[test]
fn the_quick_plan_runs_locally_with_nothing_installed() {
    let dir = temp_dir("quick");
    let junit_path = dir.join("junit.xml");
    let results = dir.join("results");
    let plan = plans_dir().join("quick.toml");
    let run = run_cli(
        &[
            "run",
            plan.to_str().unwrap(),
            "--local",
            "--results",
            results.to_str().unwrap(),
            "--junit",
            junit_path.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(run.code, Some(0), "{run:?}");
    let (folder, s) = plan_summary(&results);
    assert_eq!(s["passed"], true, "{s:#}");
    assert_eq!(s["phases"].as_array().unwrap().len(), 2);
    assert_eq!(s["phases"][1]["probes"][0]["summary"]["lost"], 0);
    for file in ["plan.toml", "environment.json", "junit.xml"] {
        assert!(folder.join(file).exists(), "{file}");
    }
    let env: Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("environment.json")).unwrap())
            .unwrap();
    assert_eq!(env["workers"].as_array().unwrap().len(), 2, "{env:#}");
    assert!(env["workers"][0]["clock_offset_us"].is_i64(), "{env:#}");
    let (cases, failures) = junit(&junit_path);
    // Its cases include "not generator-bound".
    assert_eq!((cases, failures.len()), (5, 0), "{failures:?}");
}

#[test]
fn the_fleet_plan_runs_locally_with_nothing_installed() {
    let dir = temp_dir("fleet");
    let results = dir.join("results");
    let plan = plans_dir().join("fleet.toml");
    let run = run_cli(
        &[
            "run",
            plan.to_str().unwrap(),
            "--local",
            "--results",
            results.to_str().unwrap(),
        ],
        Duration::from_secs(90),
    )
    .unwrap();
    assert_eq!(run.code, Some(0), "{run:?}");
    let (folder, s) = plan_summary(&results);
    let summary = &s["phases"][0]["probes"][0]["summary"];
    // 1,000 devices, one JSON message each every 2 s for 6 s, all accounted for.
    assert_eq!(summary["sent"], 3000, "{s:#}");
    assert_eq!(summary["lost"], 0, "{s:#}");
    assert_eq!(summary["foreign"], 0, "{s:#}");
    // 1,000 devices and the consumers connected, each device subscribed on its own
    // connection.
    let opened = summary["connections"]["opened"].as_u64().unwrap();
    assert!(opened >= 1001, "{s:#}");
    assert!(
        summary["subscribe_us"]["count"].as_u64().unwrap() >= 1000,
        "{s:#}"
    );
    // The report shows the clients connected over time and how connecting went.
    let html = std::fs::read_to_string(folder.join("report.html")).unwrap();
    assert!(html.contains("chart-connections"), "no connections chart");
    assert!(
        html.contains(r#"<table id="connections">"#),
        "no connections table"
    );
}

#[test]
fn a_failing_latency_condition_exits_1_and_says_why() {
    let dir = temp_dir("fail");
    let plan = std::fs::read_to_string(plans_dir().join("quick.toml"))
        .unwrap()
        .replace(
            "response_time_p99_ms = 250.0",
            // This test is about the latency condition: the generator's verdict is turned
            // off (tests run side by side on a small machine, which may starve a worker).
            "response_time_p99_ms = 0.001\nfail_when_generator_bound = false",
        );
    let path = dir.join("strict.toml");
    std::fs::write(&path, plan).unwrap();
    let junit_path = dir.join("junit.xml");
    let results = dir.join("results");
    let run = run_cli(
        &[
            "run",
            path.to_str().unwrap(),
            "--local",
            "--results",
            results.to_str().unwrap(),
            "--junit",
            junit_path.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("response_time_p99_ms <= 0.001 failed"),
        "{}",
        run.stderr
    );
    let (_, s) = plan_summary(&results);
    assert_eq!(s["passed"], false);
    assert!(
        s["phases"][1]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("response_time_p99_ms"),
        "{s:#}"
    );
    let (cases, failures) = junit(&junit_path);
    // The quick plan's 5 cases less the generator's, turned off.
    assert_eq!((cases, failures.len()), (4, 1), "{failures:?}");
    assert!(
        failures[0].contains("response_time_p99_ms <= 0.001 failed at 2000 msg/s"),
        "{failures:?}"
    );
}

#[test]
fn validation_errors_point_at_the_line_and_field() {
    let dir = temp_dir("invalid");
    let good = std::fs::read_to_string(plans_dir().join("quick.toml")).unwrap();
    for (from, to, field) in [
        (
            "producers_per_topic = 2",
            "producers_per_topic = 2\nproducer_per_topic = 3",
            "workload.producer_per_topic",
        ),
        ("rate = 2000", "rate = \"lots\"", "phase[1].rate"),
        ("topics = 1", "topics = 0", "workload.topics"),
    ] {
        let text = good.replacen(from, to, 1);
        let line = text
            .lines()
            .position(|l| l.contains(to.lines().last().unwrap()))
            .unwrap()
            + 1;
        let path = dir.join("bad.toml");
        std::fs::write(&path, &text).unwrap();
        let run = run_cli(
            &["run", path.to_str().unwrap(), "--check"],
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(run.code, Some(2), "{run:?}");
        let expected = format!("{}:{line}: {field}:", path.display());
        assert!(
            run.stderr.contains(&expected),
            "expected {expected:?} in {}",
            run.stderr
        );
    }
}

#[test]
fn the_example_max_rate_plan_converges_on_a_knee_against_mosquitto() {
    let c = Cluster::start(1);
    let mq = Mosquitto::start().unwrap();
    let dir = temp_dir("maxrate");
    // The example plan, pointed at this test's private Mosquitto.
    let path = plans_dir().join("mqtt-qos1-max-rate.toml");
    let results = dir.join("results");
    let sut = mq.url("knee", "qos=1");
    let run = c.cli(
        &[
            "run",
            path.to_str().unwrap(),
            "--sut",
            &sut,
            "--results",
            results.to_str().unwrap(),
            "-o",
            "json",
        ],
        Duration::from_secs(240),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let s: Value = run.json().unwrap();
    assert_eq!(s["phases"][0]["kind"], "warmup");
    let phase = &s["phases"][1];
    let knee = phase["knee_rate"]
        .as_f64()
        .unwrap_or_else(|| panic!("no knee: {phase:#}"));
    let probes = phase["probes"].as_array().unwrap();
    assert!(probes.len() >= 3, "{phase:#}");
    // The knee is a passing probe, some probe above it failed, and the bracket is narrow.
    assert!(
        probes
            .iter()
            .any(|p| p["rate"] == knee && p["passed"] == true),
        "{phase:#}"
    );
    let lowest_fail = probes
        .iter()
        .filter(|p| p["passed"] == false)
        .filter_map(|p| p["rate"].as_f64())
        .fold(f64::INFINITY, f64::min);
    assert!(
        lowest_fail > knee && (lowest_fail - knee) / knee <= 0.25 + 1e-9,
        "knee {knee}, first failure {lowest_fail}: {phase:#}"
    );
    eprintln!("knee {knee:.0} msg/s after {} probes", probes.len());
}

/// The example plan that runs one workload through every protocol of one broker:
/// RabbitMQ's five and ActiveMQ's STOMP. Every run accounts for every message, and
/// `compare` shows them side by side, a column per protocol.
#[test]
fn one_workload_through_every_protocol_compares_side_by_side() {
    let c = Cluster::start(2);
    let rabbit = ScriptedSut::rabbitmq_every_protocol().unwrap();
    let activemq = ScriptedSut::activemq().unwrap();
    let dir = temp_dir("protocols");
    // The plan as shipped, shorter: its warm-up and a 4-second fixed phase (the max-rate
    // search is the plan's own business, not this test's).
    let text = std::fs::read_to_string(plans_dir().join("one-workload-every-protocol.toml"))
        .unwrap()
        .replace("duration = \"10s\"", "duration = \"4s\"");
    let cut = text.find("[[phase]]\nkind = \"max-rate\"").unwrap();
    let path = dir.join("every-protocol.toml");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&path, &text[..cut]).unwrap();
    let suts = [
        format!("{}?confirms=true&ack=manual", rabbit.url),
        format!(
            "{}/queue/bench?settle=at_least_once",
            rabbit.amqp10_url.as_deref().unwrap()
        ),
        format!("{}/bench?qos=1", rabbit.mqtt_url.as_deref().unwrap()),
        rabbit.stomp_url.clone().unwrap(),
        format!("{}/%2f", rabbit.stream_url.as_deref().unwrap()),
        activemq.url.clone(),
    ];
    let mut folders = Vec::new();
    for (i, sut) in suts.iter().enumerate() {
        let results = dir.join(format!("r{i}"));
        let run = c.cli(
            &[
                "run",
                path.to_str().unwrap(),
                "--sut",
                sut,
                "--results",
                results.to_str().unwrap(),
                "-o",
                "json",
            ],
            Duration::from_secs(240),
        );
        // Conditions may fail on a slow machine (exit 1); the run itself must not.
        assert!(matches!(run.code, Some(0 | 1)), "{sut}: {run:?}");
        let (folder, s) = plan_summary(&results);
        let phases = s["phases"].as_array().unwrap();
        assert_eq!(phases.len(), 2, "{sut}: {s:#}");
        let fixed = &phases[1]["probes"][0]["summary"];
        assert_eq!(
            fixed["sut"],
            sut.replace(":guest@", ":***@"),
            "{sut}: {fixed:#}"
        );
        assert!(fixed["sent"].as_u64().unwrap() >= 3_500, "{sut}: {fixed:#}");
        assert_eq!(fixed["received"], fixed["sent"], "{sut}: {fixed:#}");
        assert_eq!(fixed["lost"], 0, "{sut}: {fixed:#}");
        assert_eq!(
            fixed["response_time_us"]["count"], fixed["received"],
            "{sut}: every message timed: {fixed:#}"
        );
        folders.push(folder);
    }
    let args: Vec<&str> = std::iter::once("compare")
        .chain(folders.iter().map(|f| f.to_str().unwrap()))
        .collect();
    let run = run_cli(&args, Duration::from_secs(20)).unwrap();
    assert!(matches!(run.code, Some(0 | 1)), "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("base:  amqp://"), "{}", run.stdout);
    for (i, scheme) in ["amqp10", "mqtt", "stomp", "rabbitmq-stream", "stomp"]
        .iter()
        .enumerate()
    {
        assert!(
            lines[i + 1].starts_with(&format!("new {}: {scheme}://", i + 1)),
            "{}",
            run.stdout
        );
    }
    let head = lines
        .iter()
        .find(|l| l.starts_with("phase"))
        .unwrap_or_else(|| panic!("{}", run.stdout));
    let columns: Vec<&str> = head.split_whitespace().skip(2).collect();
    assert_eq!(
        columns,
        [
            "amqp",
            "amqp10",
            "mqtt",
            "stomp",
            "rabbitmq-stream",
            "stomp"
        ],
        "{}",
        run.stdout
    );
    for row in ["1 fixed        response_time_p99_ms", "1 fixed        rate"] {
        let line = lines
            .iter()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no {row:?} row:\n{}", run.stdout));
        // A value for BASE and one per NEW folder.
        assert_eq!(
            line[row.len()..]
                .split_whitespace()
                .filter(|c| c.parse::<f64>().is_ok())
                .count(),
            6,
            "{line}"
        );
    }
    eprintln!("{}", run.stdout);
}

#[test]
fn the_html_report_has_every_chart_and_the_verdict_table() {
    let dir = temp_dir("report");
    // A ramp that passes two steps, then a fixed phase whose condition cannot hold, so the
    // report has a curve, passes and a failure to show. The ramp's own conditions are loose:
    // this test is about the report, and on a loaded CI machine the quick plan's limits
    // once ended the ramp at its first step (a curve of 1 point).
    let plan = std::fs::read_to_string(plans_dir().join("quick.toml"))
        .unwrap()
        .replace(
            "[[phase]]\nkind = \"fixed\"\nrate = 2000\nduration = \"2s\"",
            "[[phase]]\nkind = \"ramp\"\nstart_rate = 1000\nstep = 1000\nstep_duration = \"1s\"\nceiling = 2000\nconditions = { response_time_p99_ms = 5000.0, min_achieved_fraction = 0.5, fail_when_generator_bound = false }\n\n[[phase]]\nkind = \"fixed\"\nrate = 2000\nduration = \"2s\"\nconditions = { response_time_p99_ms = 0.001 }",
        );
    assert!(plan.contains("ramp"), "the replacement applied");
    let path = dir.join("report.toml");
    std::fs::write(&path, plan).unwrap();
    let results = dir.join("results");
    let run = run_cli(
        &[
            "run",
            path.to_str().unwrap(),
            "--local",
            "--results",
            results.to_str().unwrap(),
        ],
        Duration::from_secs(90),
    )
    .unwrap();
    assert_eq!(
        run.code,
        Some(1),
        "the fixed phase's condition fails: {run:?}"
    );
    let (folder, _) = plan_summary(&results);
    // Rebuild it from the folder alone, as `maestro-cli report` does.
    std::fs::remove_file(folder.join("report.html")).unwrap();
    let rebuilt = run_cli(
        &["report", folder.to_str().unwrap()],
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(rebuilt.code, Some(0), "{rebuilt:?}");
    let html = std::fs::read_to_string(folder.join("report.html")).unwrap();
    let doc = scraper::Html::parse_document(&html);
    let select = |css: &str| scraper::Selector::parse(css).unwrap();
    for chart in [
        "chart-throughput",
        "chart-latency",
        "chart-distribution",
        "chart-curve",
    ] {
        let svg = doc.select(&select(&format!("svg#{chart}"))).next();
        let svg = svg.unwrap_or_else(|| panic!("no {chart}"));
        let lines = svg.select(&select("polyline.series")).count();
        assert!(lines >= 1, "{chart} has no data series");
        let points: usize = svg
            .select(&select("polyline.series"))
            .map(|p| {
                p.value()
                    .attr("points")
                    .unwrap_or("")
                    .split_whitespace()
                    .count()
            })
            .sum();
        assert!(points >= 2, "{chart} has {points} points");
    }
    let rows: Vec<String> = doc
        .select(&select("table#verdicts tbody tr"))
        .map(|r| r.text().collect::<Vec<_>>().join("|"))
        .collect();
    assert!(
        rows.iter()
            .any(|r| r.contains("FAIL: response_time_p99_ms <= 0.001")),
        "{rows:#?}"
    );
    assert!(rows.iter().any(|r| r.contains("pass")), "{rows:#?}");
    assert!(doc.select(&select("table#workers tbody tr")).count() >= 2);
    let status = doc
        .select(&select("#status"))
        .next()
        .unwrap()
        .text()
        .collect::<String>();
    assert_eq!(status, "FAILED");
    // Self-contained: no scripts, and no address it would fetch (the SVG namespace is a
    // name, not a fetch, so it is the only http:// allowed).
    assert!(!html.contains("<script"), "a script in the report");
    let fetched = html
        .replace("xmlns=\"http://www.w3.org/2000/svg\"", "")
        .matches("http://")
        .count()
        + html.matches("https://").count()
        + html.matches(" src=").count();
    assert_eq!(fetched, 0, "the report refers to outside resources");
}

/// A plan results folder with one fixed phase of the given p99 (µs), rate and loss,
/// written through the results model (as `maestro-cli run` writes it).
fn fake_results(
    dir: &Path,
    name: &str,
    p99_us: u64,
    rate: f64,
    lost: u64,
    compare: Thresholds,
) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    let summary = RunSummary {
        measured_s: 10.0,
        sent: (rate * 10.0) as u64,
        received: (rate * 10.0) as u64 - lost,
        lost,
        offered_rate: rate,
        achieved_rate: rate,
        achieved_fraction: Some(1.0),
        receive_rate: rate,
        achieved_bytes_rate: Some(rate * 256.0),
        receive_bytes_rate: Some(rate * 256.0),
        response_time_us: Percentiles {
            count: 1,
            p50: 1000,
            p90: 2000,
            p95: Some(3000),
            p99: p99_us,
            p999: p99_us * 2,
            p9999: p99_us * 3,
            max: p99_us * 4,
        },
        ..RunSummary::new(
            format!("{name}-run"),
            "mqtt://h/x?qos=1",
            "2026-11-28T00:00:00Z",
        )
    };
    let plan = PlanResult {
        schema_version: SCHEMA_VERSION,
        plan: "p".into(),
        description: String::new(),
        tags: vec![],
        run_id: name.into(),
        started_at: "2026-11-28T00:00:00Z".into(),
        passed: true,
        interrupted: false,
        phases: vec![PhaseResult {
            index: 1,
            kind: PhaseKind::Fixed,
            judged: true,
            passed: true,
            probes: vec![Probe {
                rate,
                passed: true,
                verdicts: vec![],
                summary,
            }],
            knee_rate: None,
            reasons: vec![],
        }],
        environment: Environment {
            schema_version: SCHEMA_VERSION,
            maestro_version: "0.1.0".into(),
            control_url: "mqtt://127.0.0.1:1883".into(),
            cluster: "default".into(),
            local: false,
            sut: "mqtt://h/x?qos=1".into(),
            sut_name: String::new(),
            sut_version: String::new(),
            workers: vec![],
        },
        compare,
    };
    maestro_report::folder::write(&folder.join("summary.json"), &plan).unwrap();
    folder
}

#[test]
fn compare_fails_when_new_is_worse_beyond_the_thresholds() {
    let dir = temp_dir("compare");
    let none = Thresholds::default();
    let base = fake_results(&dir, "base", 10_000, 5000.0, 0, none);
    let same = fake_results(&dir, "same", 10_500, 4900.0, 0, none);
    let worse = fake_results(&dir, "worse", 13_000, 5000.0, 0, none);
    let lossy = fake_results(&dir, "lossy", 10_000, 5000.0, 3, none);
    let lenient = fake_results(
        &dir,
        "lenient",
        13_000,
        5000.0,
        0,
        Thresholds {
            max_latency_increase_pct: Some(50.0),
            ..none
        },
    );
    let cmp = |a: &Path, b: &Path, extra: &[&str]| {
        let mut args = vec!["compare", a.to_str().unwrap(), b.to_str().unwrap()];
        args.extend_from_slice(extra);
        run_cli(&args, Duration::from_secs(20)).unwrap()
    };
    assert_eq!(cmp(&base, &same, &[]).code, Some(0), "within 10 % and 5 %");
    let run = cmp(&base, &worse, &[]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr
            .contains("response_time_p99_ms 10.000 -> 13.000 (+30.0 %)"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("WORSE"), "{}", run.stdout);
    assert_eq!(
        cmp(&base, &worse, &["--max-latency-increase", "40"]).code,
        Some(0),
        "a looser flag"
    );
    assert_eq!(
        cmp(&base, &lenient, &[]).code,
        Some(0),
        "the plan's own threshold"
    );
    let run = cmp(&base, &lossy, &[]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("lost 0.000 -> 3.000"), "{}", run.stderr);

    // A results file with a missing field is an error naming the file and the field,
    // never a 0 that passes the gate.
    let broken = fake_results(&dir, "broken", 13_000, 5000.0, 0, none);
    let path = broken.join("summary.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["phases"][0]["probes"][0]["summary"]
        .as_object_mut()
        .unwrap()
        .remove("response_time_us");
    std::fs::write(&path, v.to_string()).unwrap();
    let run = cmp(&base, &broken, &[]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("broken/summary.json")
            && run.stderr.contains("phases[0].probes[0].summary")
            && run.stderr.contains("missing field `response_time_us`"),
        "{}",
        run.stderr
    );
    // A renamed field too.
    let renamed = fake_results(&dir, "renamed", 10_000, 5000.0, 0, none);
    let path = renamed.join("summary.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"lost\"", "\"lost_messages\"");
    std::fs::write(&path, text).unwrap();
    let run = cmp(&renamed, &base, &[]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("missing field `lost`"),
        "{}",
        run.stderr
    );
}

#[test]
fn every_example_plan_is_valid_and_payload_files_are_checked() {
    for entry in std::fs::read_dir(plans_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let run = run_cli(
                &["run", path.to_str().unwrap(), "--check"],
                Duration::from_secs(20),
            )
            .unwrap();
            assert_eq!(run.code, Some(0), "{}: {run:?}", path.display());
        }
    }
    let dir = temp_dir("payload");
    let good = std::fs::read_to_string(plans_dir().join("quick.toml")).unwrap();
    let text = good.replacen(
        "message_size = 256",
        "message_size = 256\npayload_file = \"missing.bin\"",
        1,
    );
    let path = dir.join("p.toml");
    std::fs::write(&path, &text).unwrap();
    let run = run_cli(
        &["run", path.to_str().unwrap(), "--check"],
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(run.code, Some(2), "{run:?}");
    let line = text
        .lines()
        .position(|l| l.contains("payload_file"))
        .unwrap()
        + 1;
    assert!(
        run.stderr.contains(&format!(
            "p.toml:{line}: workload.payload_file: cannot read"
        )),
        "{}",
        run.stderr
    );
    std::fs::write(dir.join("missing.bin"), b"{\"sensor\":42}").unwrap();
    let results = dir.join("results");
    let run = run_cli(
        &[
            "run",
            path.to_str().unwrap(),
            "--local",
            "--results",
            results.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(run.code, Some(0), "{run:?}");
    let (folder, _) = plan_summary(&results);
    let plan: String = std::fs::read_to_string(folder.join("plan.toml")).unwrap();
    assert!(plan.contains("payload_file"));
}

/// A plan whose SUT cannot keep up with its rate fails `min_achieved_fraction`, naming
/// the fraction it reached.
#[test]
fn an_unreachable_rate_fails_min_achieved_fraction_naming_it() {
    let c = Cluster::start(1);
    let mq = Mosquitto::start().unwrap();
    let dir = temp_dir("fraction");
    let plan = format!(
        r#"[plan]
name = "too-fast"
[sut]
url = "{}"
[workload]
topics = 1
producers_per_topic = 1
subscriptions_per_topic = 1
message_size = 100
[conditions]
min_achieved_fraction = 0.9
[[phase]]
kind = "fixed"
rate = 5000000
duration = "2s"
"#,
        mq.url("fraction", "qos=1")
    );
    let path = dir.join("too-fast.toml");
    std::fs::write(&path, plan).unwrap();
    let results = dir.join("results");
    let run = c.cli(
        &[
            "run",
            path.to_str().unwrap(),
            "--results",
            results.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("min_achieved_fraction >= 0.9")
            && run.stderr.contains("achieved/offered 0.0"),
        "{}",
        run.stderr
    );
    let (_, s) = plan_summary(&results);
    let summary = &s["phases"][0]["probes"][0]["summary"];
    assert!(summary["unsent"].as_u64().unwrap() > 0, "{summary:#}");
    assert!(
        summary["achieved_fraction"].as_f64().unwrap() < 0.9,
        "{summary:#}"
    );
}
