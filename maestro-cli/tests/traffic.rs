//! Traffic shapes against a real broker: runs with each arrival process against a private
//! Mosquitto, with an independent subscriber (`mosquitto_sub`) timing what arrived. The
//! shape is judged from the subscriber's clock, never from maestro's own figures.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_testkit::{Cluster, Heard, Mosquitto, Subscriber, wait_for};
use serde_json::Value;
use std::time::Duration;

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

/// Messages per `bin_s` from the first arrival on, over `bins` whole bins.
fn counts(heard: &[Heard], bin_s: f64, bins: usize) -> Vec<u64> {
    let origin = heard.iter().map(|h| h.at_s).fold(f64::INFINITY, f64::min);
    let mut out = vec![0; bins];
    for h in heard {
        let i = ((h.at_s - origin) / bin_s) as usize;
        if i < bins {
            out[i] += 1;
        }
    }
    out
}

/// Variance over mean: 1 for Poisson counts, 0 for a perfectly regular clock.
fn dispersion(counts: &[u64]) -> f64 {
    let n = counts.len() as f64;
    let mean = counts.iter().sum::<u64>() as f64 / n;
    counts
        .iter()
        .map(|&c| (c as f64 - mean).powi(2))
        .sum::<f64>()
        / n
        / mean
}

/// One run of `args` on topic `name`, every message heard by the independent subscriber
/// and accounted for exactly; what it heard, and the summary.
fn shaped_run(c: &Cluster, mq: &Mosquitto, name: &str, args: &[&str]) -> (Vec<Heard>, Value) {
    let sub = Subscriber::start_timed(mq.port, &format!("{name}/#")).unwrap();
    assert!(wait_for(Duration::from_secs(5), || mq
        .proc
        .log_text()
        .contains("maestro-test-sub")));
    let (run, s) = c.run_test(&mq.url(name, "qos=1"), args);
    assert_eq!(run.code, Some(0), "{run:?}");
    for field in ["lost", "duplicated", "errors", "unsent"] {
        assert_eq!(u(&s, field), 0, "{field}: {s:#}");
    }
    assert_eq!(u(&s, "received"), u(&s, "sent"), "{s:#}");
    assert!(
        wait_for(Duration::from_secs(5), || sub.count() == u(&s, "sent")),
        "mosquitto_sub heard {} of {}",
        sub.count(),
        u(&s, "sent")
    );
    (sub.heard(), s)
}

#[test]
fn arrival_processes_shape_what_the_broker_sees() {
    let c = Cluster::start(1);
    let mq = Mosquitto::start().unwrap();
    let common = ["--duration", "10s", "--producers", "2", "--size", "64"];

    // Uniform: 100 messages in every 100 ms, give or take one at a boundary.
    let (heard, s) = shaped_run(
        &c,
        &mq,
        "uniform",
        &[&["--rate", "1000"], &common[..]].concat(),
    );
    assert_eq!(u(&s, "sent"), 10_000, "{s:#}");
    assert!(s.get("arrival").is_none(), "{s:#}");
    let uniform = dispersion(&counts(&heard, 0.1, 95));
    eprintln!("uniform: variance/mean of 100 ms counts {uniform:.3}");
    assert!(uniform < 0.3, "uniform {uniform}");

    // Poisson at the same mean: counts vary as much as their mean.
    let (heard, s) = shaped_run(
        &c,
        &mq,
        "poisson",
        &[&["--rate", "1000", "--arrival", "poisson"], &common[..]].concat(),
    );
    assert_eq!(s["arrival"], "poisson", "{s:#}");
    let sent = u(&s, "sent");
    assert!((9_500..10_500).contains(&sent), "{s:#}");
    let poisson = dispersion(&counts(&heard, 0.1, 95));
    eprintln!("poisson: variance/mean of 100 ms counts {poisson:.3}, sent {sent}");
    assert!((0.6..1.6).contains(&poisson), "poisson {poisson}");
    // Its response times start from each message's intended time, as for the uniform clock.
    assert_eq!(
        u(&s["response_time_us"], "count"),
        sent,
        "every message measured: {s:#}"
    );

    // Bursts: each second's 1,000 messages within its first 100 ms.
    let (heard, s) = shaped_run(
        &c,
        &mq,
        "bursts",
        &[
            &["--rate", "1000", "--arrival", "bursts:period=1s,on=100ms"],
            &common[..],
        ]
        .concat(),
    );
    assert_eq!(u(&s, "sent"), 10_000, "{s:#}");
    let tenths = counts(&heard, 0.1, 100);
    eprintln!("bursts: 100 ms counts {tenths:?}");
    let in_bursts: u64 =
        tenths.iter().step_by(10).sum::<u64>() + tenths.iter().skip(1).step_by(10).sum::<u64>();
    assert!(
        in_bursts >= 9_500,
        "{in_bursts} of 10,000 in the on-time: {tenths:?}"
    );
    assert!(dispersion(&tenths) > 5.0, "{tenths:?}");
    // The run's page charts the offered process beside what was sent, from its folder.
    let folder = c.results.join(s["run_id"].as_str().unwrap());
    let charts = maestro_report::html::run_charts(&folder).unwrap();
    assert!(
        charts.contains("offered/s (bursts:period=1s,on=100ms)"),
        "{charts}"
    );

    // Steps: 200/s then 1,000/s, twice; the mean is the steps', not --rate's default.
    let (heard, s) = shaped_run(
        &c,
        &mq,
        "steps",
        &[
            &["--arrival", "steps:200:2s,1000:3s", "--duration", "10s"],
            &common[2..],
        ]
        .concat(),
    );
    assert_eq!(u(&s, "sent"), 6_800, "{s:#}");
    assert!(
        (s["offered_rate"].as_f64().unwrap() - 680.0).abs() < 1e-6,
        "{s:#}"
    );
    let seconds = counts(&heard, 1.0, 10);
    eprintln!("steps: per-second counts {seconds:?}");
    for (i, n) in seconds.iter().enumerate() {
        let want = if i % 5 < 2 { 200 } else { 1000 };
        assert!(n.abs_diff(want) <= want / 20, "second {i}: {seconds:?}");
    }
}

#[test]
fn shaped_arrivals_refuse_what_they_cannot_shape() {
    let c = Cluster::start(1);
    let mq = Mosquitto::start().unwrap();
    let url = mq.url("refused", "qos=0");
    for (args, want) in [
        (
            &["--arrival", "poisson", "--count", "100"][..],
            "needs a duration",
        ),
        (
            &["--arrival", "steps:100:1s", "--rate", "500"][..],
            "leave the rate out",
        ),
        (&["--arrival", "bursts:on=1s"][..], "bursts need a period"),
        (&["--arrival", "gauss"][..], "is not uniform, poisson"),
    ] {
        let run = c.cli(
            &[&["start", "--sut", url.as_str()], args].concat(),
            Duration::from_secs(30),
        );
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert!(run.stderr.contains(want), "{args:?}: {}", run.stderr);
    }
}
