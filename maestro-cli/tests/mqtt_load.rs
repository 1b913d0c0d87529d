//! Load tests with MQTT as the protocol under test, against real brokers: the embedded
//! rumqttd broker and a private Mosquitto. Real binaries on free ports.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_testkit::{
    Cluster, Mosquitto, Subscriber, TestBroker, assert_split_roles, signal, wait_for,
};
use serde_json::Value;
use std::time::{Duration, Instant};

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

#[test]
fn embedded_rumqttd_sut_counts_exactly_with_fan_out() {
    let c = Cluster::start(2);
    // A second maestro-broker is the system under test.
    let sut = TestBroker::start(&[]).unwrap();
    let url = format!("mqtt://127.0.0.1:{}/bench?qos=1", sut.port);
    let (run, s) = c.run_test(
        &url,
        &[
            "--rate",
            "2000",
            "--duration",
            "3s",
            "--producers",
            "2",
            "--consumers",
            "3",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    // 2 producers x 1000/s x 3 s; each of 3 consumers gets every message.
    assert_eq!(u(&s, "sent"), 6000, "{s:#}");
    assert_eq!(u(&s, "received"), 18000, "{s:#}");
    for field in ["lost", "duplicated", "out_of_order", "errors"] {
        assert_eq!(u(&s, field), 0, "{field}: {s:#}");
    }
    assert_eq!(s["degraded"], false);
    for h in ["response_time_us", "service_time_us", "send_lag_us"] {
        for p in ["p50", "p90", "p99", "p999", "max"] {
            assert!(s[h][p].is_u64(), "{h}.{p} in {s:#}");
        }
    }
    assert_eq!(u(&s["response_time_us"], "count"), 18000, "{s:#}");
    // The rate is measured over the real send span, which is the 3 s window.
    let measured = s["measured_s"].as_f64().unwrap();
    assert!((2.95..=3.2).contains(&measured), "{s:#}");
    let achieved = s["achieved_rate"].as_f64().unwrap();
    assert!(
        (achieved - 6000.0 / measured).abs() < 1.0 && (1850.0..=2050.0).contains(&achieved),
        "{s:#}"
    );
    assert_eq!(u(&s, "unsent"), 0, "{s:#}");
    // The results folder.
    let folder = c.results.join(s["run_id"].as_str().unwrap());
    for file in [
        "summary.json",
        "spec.json",
        "timeseries.csv",
        "w0.hlog",
        "w1.hlog",
    ] {
        assert!(
            folder.join(file).exists(),
            "{file} missing in {}",
            folder.display()
        );
    }
    let csv = std::fs::read_to_string(folder.join("timeseries.csv")).unwrap();
    assert!(csv.lines().count() >= 3, "{csv}");
    let hlog = std::fs::read_to_string(folder.join("w0.hlog")).unwrap();
    assert!(
        hlog.contains("Tag=response_time_us,") && hlog.contains("HISTF"),
        "{hlog}"
    );
}

#[test]
fn mosquitto_and_an_independent_subscriber_agree_with_the_summary() {
    let c = Cluster::start(2);
    let mq = Mosquitto::start().unwrap();
    let sub = Subscriber::start(mq.port, "agree/#").unwrap();
    assert!(wait_for(Duration::from_secs(5), || mq
        .proc
        .log_text()
        .contains("maestro-test-sub")));
    let (run, s) = c.run_test(
        &mq.url("agree", "qos=1"),
        &[
            "--rate",
            "3000",
            "--count",
            "9000",
            "--producers",
            "3",
            "--consumers",
            "2",
            "--topics",
            "1",
            "--size",
            "~200",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(u(&s, "sent"), 9000, "{s:#}");
    assert_eq!(u(&s, "received"), 18000, "{s:#}");
    assert_eq!(u(&s, "lost"), 0, "{s:#}");
    assert!(
        wait_for(Duration::from_secs(5), || sub.count() == 9000),
        "mosquitto_sub counted {}",
        sub.count()
    );
    assert_eq!(sub.count(), u(&s, "sent"));
    // The time series counts every event in the run second it happened: the open-loop
    // schedule puts exactly 3,000 sends in each of the 3 seconds (a send due just before
    // a boundary may go out just after it), the first second included, and the
    // rows add up to the totals.
    let folder = c.results.join(s["run_id"].as_str().unwrap());
    let rows = timeseries(&folder);
    eprintln!("timeseries (second, sent, received): {rows:?}");
    let sent: Vec<u64> = rows.iter().map(|r| r.1).collect();
    assert_eq!(rows.iter().map(|r| r.1).sum::<u64>(), 9000, "{rows:?}");
    assert_eq!(rows.iter().map(|r| r.2).sum::<u64>(), 18000, "{rows:?}");
    assert_eq!(rows[0].0, 0, "seconds count from 0: {rows:?}");
    assert!(
        sent.len() >= 3 && sent[..3].iter().all(|n| n.abs_diff(3000) <= 15),
        "3,000 sends in each second: {rows:?}"
    );
    assert!(sent[3..].iter().all(|n| *n <= 15), "{rows:?}");
    // Received within 1 % of 6,000 in each full second (latency moves a few over a boundary).
    assert!(
        rows[..3].iter().all(|r| r.2.abs_diff(6000) <= 60),
        "{rows:?}"
    );
}

#[test]
fn slow_producers_send_spread_over_their_interval_not_in_lockstep() {
    // 50 producers, one message every 5 s each (10/s in all), for 10 s: without spread
    // phases every producer would send in seconds 0 and 5 only (50 each, 5x the mean).
    let c = Cluster::start(2);
    let mq = Mosquitto::start().unwrap();
    let (run, s) = c.run_test(
        &mq.url("spread", "qos=1"),
        &[
            "--rate",
            "10",
            "--duration",
            "10s",
            "--producers",
            "50",
            "--consumers",
            "1",
            "--size",
            "100",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(u(&s, "sent"), 100, "{s:#}");
    assert_eq!(u(&s, "lost"), 0, "{s:#}");
    let rows = timeseries(&c.results.join(s["run_id"].as_str().unwrap()));
    let sent: Vec<u64> = rows.iter().take(10).map(|r| r.1).collect();
    let mean = 100.0 / 10.0;
    assert!(
        sent.iter().all(|n| (*n as f64) <= 2.0 * mean),
        "no second above twice the mean of {mean}: {rows:?}"
    );
    assert!(sent.iter().all(|n| *n >= 5), "every second sends: {rows:?}");
}

#[test]
fn a_start_refused_by_one_worker_frees_the_workers_it_configured_at_once() {
    // w0 takes its share; w1's open-files limit refuses its share, so the start fails.
    let c = Cluster::start(1);
    let url = c.broker.url();
    let _small = maestro_testkit::Proc::spawn_with_open_files(
        "worker",
        "maestro-worker",
        &["-m", &url, "--cluster", &c.cluster, "--name", "w1"],
        150,
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(15), || {
        c.cli(&["ping", "-o", "json"], Duration::from_secs(10))
            .json()
            .ok()
            .and_then(|v| v.as_array().map(|a| a.len()))
            == Some(2)
    }));
    let mq = Mosquitto::start().unwrap();
    let sut = mq.url("refused", "qos=0");
    let results = c.results.to_str().unwrap().to_owned();
    let run = c.cli(
        &[
            "start",
            "--sut",
            &sut,
            "--results",
            &results,
            "--producers",
            "300",
            "--consumers",
            "1",
            "--rate",
            "300",
            "--duration",
            "5s",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("open-files limit"), "{}", run.stderr);
    // w0 was configured before w1 refused: the failed start's stop reaches it, and it is
    // idle well before its controller's 3 s offline grace would have ended the run.
    let ended = Instant::now();
    assert!(
        wait_for(Duration::from_secs(10), || {
            c.cli(&["stats", "-o", "json"], Duration::from_secs(10))
                .json()
                .ok()
                .and_then(|v| v.as_array().map(|a| a.iter().all(|w| w["state"] == "idle")))
                == Some(true)
        }),
        "the workers did not become idle"
    );
    let took = ended.elapsed();
    let log = c.workers[0].log_text();
    assert!(log.contains("stopping"), "w0 was told to stop:\n{log}");
    assert!(
        log.contains("ended_because=\"the controller stopped it\""),
        "w0 was left to its controller's offline grace:\n{log}"
    );
    assert!(took < Duration::from_secs(2), "idle after {took:?}");
}

#[test]
fn a_worker_says_when_its_open_files_limit_caps_its_share() {
    let broker = maestro_testkit::TestBroker::start(&[]).unwrap();
    let cluster = maestro_testkit::unique_cluster();
    let c = cluster.to_string();
    let url = broker.url();
    let _worker = maestro_testkit::Proc::spawn_with_open_files(
        "worker",
        "maestro-worker",
        &["-m", &url, "--cluster", &c, "--name", "small"],
        200,
    )
    .unwrap();
    let mq = Mosquitto::start().unwrap();
    let sut = mq.url("limit", "");
    let results = maestro_testkit::test_dir(&format!("limit-{c}"));
    let run_with = |producers: &str| {
        maestro_testkit::run_cli(
            &[
                "-m",
                &url,
                "--cluster",
                &c,
                "start",
                "--sut",
                &sut,
                "--producers",
                producers,
                "--consumers",
                "0",
                "--rate",
                "100",
                "--duration",
                "1s",
                "--results",
                results.to_str().unwrap(),
            ],
            Duration::from_secs(60),
        )
        .unwrap()
    };
    assert!(wait_for(Duration::from_secs(15), || {
        maestro_testkit::run_cli(
            &["-m", &url, "--cluster", &c, "ping"],
            Duration::from_secs(10),
        )
        .is_ok_and(|r| r.code == Some(0))
    }));
    // 300 connections do not fit 200 files: refused before connecting, with the numbers.
    let run = run_with("300");
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("open-files limit is 200"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("at most 136 clients"), "{}", run.stderr);
    // 100 do.
    let run = run_with("100");
    assert_eq!(run.code, Some(0), "{run:?}");
}

#[test]
fn clients_connect_at_the_asked_rate() {
    // 600 clients over 2 workers at 200 connections per second: a 3 s ramp.
    let c = Cluster::start(2);
    let mq = Mosquitto::start_with("log_dest stderr\nconnection_messages true").unwrap();
    let (run, s) = c.run_test(
        &mq.url("ramp", ""),
        &[
            "--producers",
            "600",
            "--consumers",
            "0",
            "--connect-rate",
            "200",
            "--rate",
            "600",
            "--duration",
            "1s",
            "--size",
            "64",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(u(&s, "sent"), 600, "{s:#}");
    // Mosquitto's log stamps each new connection with its second.
    let mut per_second: std::collections::BTreeMap<u64, u64> = Default::default();
    for line in mq.proc.log_text().lines() {
        if line.contains("New client connected") && line.contains(" as maestro-") {
            let second: u64 = line.split(':').next().unwrap().trim().parse().unwrap();
            *per_second.entry(second).or_default() += 1;
        }
    }
    let counts: Vec<u64> = per_second.values().copied().collect();
    assert_eq!(counts.iter().sum::<u64>(), 600, "{per_second:?}");
    let (first, last) = (
        *per_second.keys().next().unwrap(),
        *per_second.keys().last().unwrap(),
    );
    assert!(
        (2..=4).contains(&(last - first)),
        "a 3 s ramp: {per_second:?}"
    );
    // Every full second (not the first or the last) within 10 % of 200.
    let full = &counts[1..counts.len() - 1];
    assert!(!full.is_empty(), "{per_second:?}");
    assert!(
        full.iter().all(|n| n.abs_diff(200) <= 20),
        "connections per second: {per_second:?}"
    );
}

/// `timeseries.csv` rows as (second, sent, received).
fn timeseries(folder: &std::path::Path) -> Vec<(u64, u64, u64)> {
    let csv = std::fs::read_to_string(folder.join("timeseries.csv")).unwrap();
    csv.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<u64> = l.split(',').take(3).map(|v| v.parse().unwrap()).collect();
            (f[0], f[1], f[2])
        })
        .collect()
}

#[test]
fn coordinated_omission_a_stalled_broker_shows_in_response_time_not_service_time() {
    let c = Cluster::start(1);
    let mq = Mosquitto::start().unwrap();
    let cli = c.run_in_background(
        &mq.url("co", "qos=1"),
        &["--rate", "2000", "--duration", "10s"],
    );
    // In the middle of the run (4 s after it started), freeze the broker for one second.
    assert!(
        c.wait_until_running(1, Duration::from_secs(20)),
        "never running"
    );
    std::thread::sleep(Duration::from_secs(4));
    mq.proc.signal(signal::SIGSTOP);
    std::thread::sleep(Duration::from_secs(1));
    mq.proc.signal(signal::SIGCONT);
    let run = cli.join().unwrap();
    assert_eq!(run.code, Some(0), "{run:?}");
    let s = run.json().unwrap();
    eprintln!(
        "response {} service {} lag {}",
        s["response_time_us"], s["service_time_us"], s["send_lag_us"]
    );
    assert_eq!(u(&s, "lost"), 0, "QoS 1 loses nothing: {s:#}");
    assert_eq!(u(&s, "sent"), 20000, "{s:#}");
    assert!(
        u(&s["response_time_us"], "p99") >= 500_000,
        "the stall is visible: {s:#}"
    );
    assert!(
        u(&s["service_time_us"], "p50") < 50_000,
        "service time stays small: {s:#}"
    );
}

#[test]
fn an_unreachable_sut_fails_fast_and_names_it() {
    let c = Cluster::start(1);
    let closed = maestro_testkit::free_port();
    let sut = format!("mqtt://127.0.0.1:{closed}/x");
    let t = Instant::now();
    let run = c.cli(
        &["start", "--sut", &sut, "--duration", "5s"],
        Duration::from_secs(30),
    );
    assert_eq!(run.code, Some(5), "{run:?}");
    assert!(
        run.stderr.contains(&sut) && run.stderr.contains("connection refused"),
        "{}",
        run.stderr
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    // A bad parameter is a usage error, before anything starts.
    let run = c.cli(
        &["start", "--sut", "mqtt://127.0.0.1:1/x?qos=7"],
        Duration::from_secs(30),
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("qos=\"7\""), "{}", run.stderr);
    // The worker is idle again and takes the next run.
    let sut = TestBroker::start(&[]).unwrap();
    let (run, s) = c.run_test(
        &format!("mqtt://127.0.0.1:{}/x", sut.port),
        &["--count", "100"],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(u(&s, "sent"), 100);
}

/// A test that cannot run is a usage error (exit 2) that names the problem, before the
/// CLI looks for a cluster: here there is none.
#[test]
fn an_invalid_test_is_a_usage_error_before_any_connection() {
    let control = format!("mqtt://127.0.0.1:{}", maestro_testkit::free_port());
    for (args, needle) in [
        (
            [
                "--sut",
                "mqtt://127.0.0.1:1/x",
                "--consumers",
                "2",
                "--subscriptions",
                "2",
            ],
            "gives every consumer every message",
        ),
        (
            [
                "--sut",
                "kafka://127.0.0.1:1",
                "--consumers",
                "2",
                "--subscriptions",
                "3",
            ],
            "2 consumers are too few",
        ),
        (
            [
                "--sut",
                "stomp://127.0.0.1:1",
                "--consumers",
                "2",
                "--subscriptions",
                "2",
            ],
            "stomp:// has one queue per topic",
        ),
        (
            [
                "--sut",
                "mqtt://127.0.0.1:1/x",
                "--size",
                "10",
                "--topics",
                "1",
            ],
            "header",
        ),
    ] {
        let mut all = vec!["-m", control.as_str(), "start", "--timeout", "3s"];
        all.extend_from_slice(&args);
        let run = maestro_testkit::run_cli(&all, Duration::from_secs(20)).unwrap();
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
        assert!(!run.stderr.contains("control broker"), "{}", run.stderr);
    }
}

#[test]
fn a_worker_killed_mid_run_degrades_the_run_without_hanging_it() {
    let mut c = Cluster::start(2);
    let sut = TestBroker::start(&[]).unwrap();
    let cli = c.run_in_background(
        &format!("mqtt://127.0.0.1:{}/x", sut.port),
        &[
            "--rate",
            "1000",
            "--duration",
            "6s",
            "--producers",
            "2",
            "--consumers",
            "2",
        ],
    );
    // Two seconds into the run, one worker dies.
    assert!(
        c.wait_until_running(2, Duration::from_secs(20)),
        "never running"
    );
    std::thread::sleep(Duration::from_secs(2));
    let victim = c.workers.remove(1);
    victim.signal(signal::SIGKILL);
    let t = Instant::now();
    let run = cli.join().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(run.code, Some(4), "{run:?}");
    let s = run.json().unwrap();
    assert_eq!(s["degraded"], true, "{s:#}");
    let reasons = s["degraded_reasons"].to_string();
    assert!(
        reasons.contains("w1") && reasons.contains("disconnected"),
        "{reasons}"
    );
}

#[test]
fn stop_ends_a_run_early_with_its_results() {
    let c = Cluster::start(1);
    let sut = TestBroker::start(&[]).unwrap();
    let t = Instant::now();
    let cli = c.run_in_background(
        &format!("mqtt://127.0.0.1:{}/x", sut.port),
        &["--rate", "500", "--duration", "60s"],
    );
    // Stop once the run is under way.
    let running = wait_for(Duration::from_secs(20), || {
        let s = c.cli(&["stats", "-o", "json"], Duration::from_secs(10));
        s.stdout.contains("\"running\"")
    });
    assert!(running);
    // A worker is "running" from the start note on; it sends from the run's start time,
    // 300 ms after that note. Half a second on, the run is sending (a time in the run,
    // not a wait for readiness).
    std::thread::sleep(Duration::from_millis(500));
    let stop = c.cli(&["stop"], Duration::from_secs(10));
    assert_eq!(stop.code, Some(0), "{stop:?}");
    assert!(stop.stdout.contains("stopping run"), "{}", stop.stdout);
    let run = cli.join().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let s = run.json().unwrap();
    assert!(u(&s, "sent") > 0 && u(&s, "sent") < 30_000, "{s:#}");
    assert_eq!(u(&s, "lost"), 0, "{s:#}");
    // The worker is idle again.
    let stats = c.cli(&["stats", "-o", "json"], Duration::from_secs(10));
    assert!(stats.stdout.contains("\"idle\""), "{}", stats.stdout);
}

#[test]
fn ctrl_c_stops_the_run_and_still_writes_its_results() {
    let c = Cluster::start(1);
    let sut = TestBroker::start(&[]).unwrap();
    let results = c.results.to_str().unwrap().to_owned();
    let sut_url = format!("mqtt://127.0.0.1:{}/x", sut.port);
    let url = c.broker.url();
    let child = std::process::Command::new(maestro_testkit::binary("maestro-cli").unwrap())
        .args([
            "-m",
            &url,
            "--cluster",
            &c.cluster,
            "start",
            "--sut",
            &sut_url,
        ])
        .args([
            "--rate",
            "500",
            "--duration",
            "60s",
            "--results",
            &results,
            "-o",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let running = wait_for(Duration::from_secs(20), || {
        c.cli(&["stats", "-o", "json"], Duration::from_secs(10))
            .stdout
            .contains("\"running\"")
    });
    assert!(running);
    // The scenario: Ctrl-C half a second into the sending (a time in the run, not a wait
    // for readiness: the run is known to be running).
    std::thread::sleep(Duration::from_millis(500));
    maestro_testkit::signal_pid(child.id(), signal::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["interrupted"], true, "{s:#}");
    assert!(u(&s, "sent") > 0, "{s:#}");
    assert_eq!(u(&s, "lost"), 0, "a graceful stop drains: {s:#}");
    assert!(
        c.results
            .join(s["run_id"].as_str().unwrap())
            .join("summary.json")
            .exists()
    );
}

#[test]
fn workers_reconnect_after_the_broker_restarts_mid_run() {
    let c = Cluster::start(1);
    let mut mq = Mosquitto::start().unwrap();
    let cli = c.run_in_background(
        &mq.url("restart", "qos=1"),
        &["--rate", "500", "--duration", "8s"],
    );
    let running = wait_for(Duration::from_secs(20), || {
        c.cli(&["stats", "-o", "json"], Duration::from_secs(10))
            .stdout
            .contains("\"running\"")
    });
    assert!(running);
    // The scenario: the broker restarts 2 s into the 8 s run.
    std::thread::sleep(Duration::from_secs(2));
    mq.restart().unwrap();
    let run = cli.join().unwrap();
    let s = run.json().unwrap();
    assert_eq!(run.code, Some(4), "degraded: {run:?}");
    assert_eq!(s["degraded"], true);
    assert!(u(&s, "errors") > 0, "{s:#}");
    // Sending and receiving resumed after the restart: most of the 4000 messages arrived.
    assert_eq!(u(&s, "sent"), 4000, "{s:#}");
    assert!(u(&s, "received") > 2500, "{s:#}");
    eprintln!(
        "received {} of {}, lost {}, errors {}",
        u(&s, "received"),
        u(&s, "sent"),
        u(&s, "lost"),
        u(&s, "errors")
    );
}

/// Offering far more than the SUT takes: the achieved rate is what was really sent over
/// the real span (near the capacity), not the offer; the rest is `unsent`, and the run
/// ends at its window, not long after.
#[test]
fn overload_reports_the_capacity_not_the_offer() {
    let c = Cluster::start(1);
    let mq = Mosquitto::start().unwrap();
    let url = mq.url("cap", "qos=1");
    let shape = ["--producers", "1", "--consumers", "1", "--size", "100"];
    let mut args = vec!["--rate", "0", "--duration", "3s"];
    args.extend_from_slice(&shape);
    let (run, max) = c.run_test(&url, &args);
    assert_eq!(run.code, Some(0), "{run:?}");
    let capacity = max["achieved_rate"].as_f64().unwrap();
    assert!(capacity > 500.0, "{max:#}");
    assert!(max["achieved_fraction"].is_null(), "{max:#}");

    let offer = (capacity * 4.0).round();
    let offer_arg = offer.to_string();
    let mut args = vec!["--rate", offer_arg.as_str(), "--duration", "3s"];
    args.extend_from_slice(&shape);
    let began = Instant::now();
    let (run, s) = c.run_test(&url, &args);
    let took = began.elapsed();
    assert_eq!(run.code, Some(0), "{run:?}");
    let achieved = s["achieved_rate"].as_f64().unwrap();
    assert!(
        achieved < capacity * 1.6 && achieved > capacity * 0.4,
        "achieved {achieved} should be near the capacity {capacity}, not the offer {offer}: {s:#}"
    );
    assert!(s["achieved_fraction"].as_f64().unwrap() < 0.5, "{s:#}");
    let (sent, unsent) = (u(&s, "sent"), u(&s, "unsent"));
    assert!(unsent > sent, "{s:#}");
    // Everything the window had due is either sent or unsent.
    assert_eq!(sent + unsent, (offer * 3.0) as u64, "{s:#}");
    let measured = s["measured_s"].as_f64().unwrap();
    assert!((2.9..=3.3).contains(&measured), "{s:#}");
    // Window 3 s, then a drain (1 s quiet, at most 15 s), never 1.5 x window + 10 s.
    assert!(took < Duration::from_secs(14), "the run took {took:?}");
    assert_eq!(u(&s, "lost"), 0, "{s:#}");
}

/// `kill -9` of the CLI mid-run: its last will tells the workers, which end the run and
/// take a new one at once.
#[test]
fn killing_the_cli_mid_run_frees_the_workers() {
    let c = Cluster::start(2);
    let mq = Mosquitto::start().unwrap();
    let url = mq.url("k9", "qos=1");
    let results = c.results.to_str().unwrap().to_owned();
    let mut cli = c.spawn_start(
        &url,
        &[
            "--rate",
            "500",
            "--duration",
            "60s",
            "--producers",
            "2",
            "--consumers",
            "2",
        ],
    );
    let running = c.wait_until_running(2, Duration::from_secs(20));
    assert!(running, "the run did not start: {}", cli.log_text());
    cli.signal(signal::SIGKILL);
    let killed = Instant::now();
    let _ = cli.wait_exit(Duration::from_secs(5));
    // Both workers are idle again within 10 s. (Watched with `stats`, not with attempts
    // to start: an attempt that finds one worker still busy fails, and the other worker,
    // configured by it, is then held for the offline grace of that attempt's controller.)
    let mut looks = 0;
    let freed = wait_for(Duration::from_secs(10), || {
        looks += 1;
        c.cli(&["stats", "-o", "json"], Duration::from_secs(10))
            .json()
            .ok()
            .and_then(|v| {
                v.as_array()
                    .map(|a| a.iter().filter(|w| w["state"] == "idle").count())
            })
            == Some(2)
    });
    assert!(
        freed,
        "workers still busy 10 s after the CLI was killed ({looks} looks)"
    );
    eprintln!(
        "both workers idle {:?} after kill -9 of the CLI",
        killed.elapsed()
    );
    // And they take a new run at once.
    let run = c.cli(
        &[
            "start",
            "--sut",
            &url,
            "--results",
            &results,
            "-o",
            "json",
            "--rate",
            "1000",
            "--count",
            "500",
            "--producers",
            "2",
            "--consumers",
            "2",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.json().unwrap()["sent"], 500, "{run:?}");
    let log = std::fs::read_to_string(&c.workers[0].log).unwrap();
    assert!(log.contains("went offline"), "{log}");
    assert!(log.contains("run finished"), "{log}");
}

/// A CLI frozen mid-run (SIGSTOP: its connection stays open, no last will) stops renewing
/// its lease, and the workers end the run by themselves.
#[test]
fn a_frozen_cli_loses_its_lease_and_the_workers_end_the_run() {
    let c = Cluster::start(1);
    let mq = Mosquitto::start().unwrap();
    let url = mq.url("frozen", "qos=0");
    let cli = c.spawn_start(&url, &["--rate", "200", "--duration", "120s"]);
    let state = || {
        c.cli(&["stats", "-o", "json"], Duration::from_secs(10))
            .json()
            .ok()
            .and_then(|v| v[0]["state"].as_str().map(str::to_owned))
    };
    assert!(
        wait_for(Duration::from_secs(20), || state().as_deref()
            == Some("running")),
        "the run did not start"
    );
    cli.signal(signal::SIGSTOP);
    let frozen = Instant::now();
    assert!(
        wait_for(Duration::from_secs(25), || state().as_deref()
            == Some("idle")),
        "the worker kept the run of a frozen controller"
    );
    eprintln!(
        "the worker ended the run {:?} after the CLI froze",
        frozen.elapsed()
    );
    let log = std::fs::read_to_string(&c.workers[0].log).unwrap();
    assert!(
        log.contains("has not renewed") || log.contains("went offline"),
        "{log}"
    );
    cli.signal(signal::SIGKILL);
}

/// Response time of a run whose producers and consumers sit on different workers: two
/// workers with one clock, and two where one runs 300 ms ahead (libfaketime). The ping
/// offsets correct cross-worker latencies, so the p99 stays within a few ms.
#[test]
fn clock_offsets_correct_cross_worker_latency() {
    const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
    assert!(
        std::path::Path::new(FAKETIME).exists(),
        "{FAKETIME} missing: apt-get install faketime (.ci/test does)"
    );
    let mq = Mosquitto::start().unwrap();
    let url = mq.url("clock", "qos=1");
    let run = |shift: &str| -> Value {
        let broker = TestBroker::start(&[]).unwrap();
        let cluster = maestro_testkit::unique_cluster();
        let c = cluster.to_string();
        let b = broker.url();
        let args =
            |name: &'static str| vec!["-m", b.as_str(), "--cluster", c.as_str(), "--name", name];
        let _w0 = maestro_testkit::Proc::spawn("worker", "maestro-worker", &args("w0")).unwrap();
        let env = [
            ("LD_PRELOAD", FAKETIME),
            ("FAKETIME", shift),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ];
        let _w1 =
            maestro_testkit::Proc::spawn_with_env("worker", "maestro-worker", &args("w1"), &env)
                .unwrap();
        let results = maestro_testkit::test_dir(&format!("results-{c}"));
        assert!(wait_for(Duration::from_secs(15), || {
            maestro_testkit::run_cli(
                &[
                    "-m",
                    &b,
                    "--cluster",
                    &c,
                    "ping",
                    "-o",
                    "json",
                    "--timeout",
                    "2s",
                ],
                Duration::from_secs(10),
            )
            .ok()
            .and_then(|r| r.json().ok())
            .and_then(|v| v.as_array().map(Vec::len))
                == Some(2)
        }));
        let out = maestro_testkit::run_cli(
            &[
                "-m",
                &b,
                "--cluster",
                &c,
                "start",
                "--sut",
                &url,
                "--rate",
                "1000",
                "--duration",
                "3s",
                "--producers",
                "2",
                "--consumers",
                "2",
                "--results",
                results.to_str().unwrap(),
                "-o",
                "json",
            ],
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(out.code, Some(0), "{out:?}");
        out.json().unwrap()
    };
    let same = run("+0");
    let shifted = run("+0.3");
    let p99 = |s: &Value| s["response_time_us"]["p99"].as_i64().unwrap();
    eprintln!(
        "response-time p99: one clock {} µs, one worker 300 ms ahead {} µs; correction used {} µs ± {} µs",
        p99(&same),
        p99(&shifted),
        shifted["clock"]["max_offset_us"],
        shifted["clock"]["error_bound_us"]
    );
    let used = shifted["clock"]["max_offset_us"].as_i64().unwrap();
    assert!((295_000..=305_000).contains(&used), "{shifted:#}");
    assert!(
        shifted["clock"]["error_bound_us"].as_i64().unwrap() < 5_000,
        "{shifted:#}"
    );
    assert!(
        (p99(&shifted) - p99(&same)).abs() < 10_000,
        "p99 {} vs {} µs: {shifted:#}",
        p99(&shifted),
        p99(&same)
    );
    // 1000/s for 3 s, and both consumers get every message; every one of them is timed.
    assert_eq!(u(&shifted, "received"), 6_000, "{shifted:#}");
    assert_eq!(
        u(&shifted["response_time_us"], "count"),
        6_000,
        "{shifted:#}"
    );
}

/// OpenMessaging Benchmark's `-x`: producers on the first half of the workers, consumers
/// on the others, and nothing lost across them.
#[test]
fn split_roles_put_producers_and_consumers_on_separate_workers() {
    let c = Cluster::start(2);
    let m = Mosquitto::start().unwrap();
    let (run, s) = c.run_test(
        &m.url("split", "qos=1"),
        &[
            "-x",
            "--rate",
            "1000",
            "--count",
            "2000",
            "--producers",
            "2",
            "--consumers",
            "2",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        (u(&s, "sent"), u(&s, "received"), u(&s, "lost")),
        (2000, 4000, 0),
        "{s:#}"
    );
    assert_split_roles(&s, 2, 2);
    // A single worker cannot be split: a clear error before anything starts.
    let one = Cluster::start(1);
    let run = one.cli(
        &[
            "start",
            "--sut",
            &m.url("split", "qos=1"),
            "-x",
            "--count",
            "10",
        ],
        Duration::from_secs(30),
    );
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains("at least 2 workers"), "{}", run.stderr);
}

/// The control broker restarts mid-run (SIGTERM, 3 s down, a new broker on the same port):
/// peers and the controller reconnect and subscribe again, the lease rides over the
/// outage, and the run finishes with every message accounted for and its results written.
#[test]
fn a_restart_of_the_control_broker_mid_run_loses_nothing() {
    let mut c = Cluster::start(2);
    let mq = Mosquitto::start().unwrap();
    let url = mq.url("control-restart", "qos=1");
    let run = c.run_in_background(
        &url,
        &[
            "--rate",
            "500",
            "--count",
            "6000",
            "--producers",
            "2",
            "--consumers",
            "2",
        ],
    );
    assert!(
        c.wait_until_running(2, Duration::from_secs(30)),
        "the run did not start"
    );
    let port = c.broker.port;
    c.broker.proc.signal(signal::SIGTERM);
    let gone = c.broker.proc.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(gone.is_some(), "the control broker did not stop");
    let down = Instant::now();
    // An outage of 3 s: every client retries with backoff meanwhile (a deliberate wait,
    // not a guess at timing).
    std::thread::sleep(Duration::from_secs(3));
    c.broker = TestBroker::start_on(port, &[]).unwrap();
    eprintln!("control broker down for {:?}", down.elapsed());
    let run = run.join().unwrap();
    assert_eq!(run.code, Some(0), "{run:?}");
    let s = run.json().unwrap();
    assert_eq!(
        (
            u(&s, "sent"),
            u(&s, "received"),
            u(&s, "lost"),
            u(&s, "duplicated")
        ),
        // Two consumers each read the one topic.
        (6000, 12000, 0, 0),
        "{s:#}"
    );
    assert!(
        run.stderr.contains("control broker reachable again"),
        "{}",
        run.stderr
    );
    let file = c
        .results
        .join(s["run_id"].as_str().unwrap())
        .join("summary.json");
    let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert_eq!(on_disk["sent"], 6000, "{on_disk:#}");
    for w in &c.workers {
        let log = std::fs::read_to_string(&w.log).unwrap();
        assert!(
            !log.contains("ending the run without its controller"),
            "{log}"
        );
    }
}

/// One worker with 9,000 producers, 9,000 consumers and 9,000 topics (18,000 SUT
/// connections, under its open-files limit): its result is larger than one note, goes in
/// parts, and every message is accounted for. (It used to be thrown off the control broker
/// for an oversize result, and the run reported `sent 0`.)
#[test]
fn a_worker_with_9000_producers_and_consumers_reports_every_message() {
    let c = Cluster::start(1);
    let mq = Mosquitto::start().unwrap();
    let url = mq.url("wide", "qos=0");
    let (run, s) = c.run_test(
        &url,
        &[
            "--producers",
            "9000",
            "--consumers",
            "9000",
            "--topics",
            "9000",
            "--rate",
            "9000",
            "--count",
            "18000",
            "--connect-rate",
            "1000",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        (
            u(&s, "sent"),
            u(&s, "received"),
            u(&s, "lost"),
            u(&s, "duplicated")
        ),
        (18_000, 18_000, 0, 0),
        "{}",
        run.stderr
    );
    let log = std::fs::read_to_string(&c.workers[0].log).unwrap();
    assert!(log.contains("result split to fit the note limit"), "{log}");
}
