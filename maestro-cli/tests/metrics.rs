//! `--metrics-listen`: a run's numbers for Prometheus while it goes on, against a real
//! Mosquitto.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_testkit::{Cluster, Mosquitto, free_port, wait_for};
use std::time::Duration;

/// `GET /metrics` (headers and body), or `None` when nothing listens.
fn scrape(port: u16) -> Option<String> {
    maestro_testkit::http_get(port, "/metrics")
}

/// The value of the first sample line starting with `prefix`.
fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_run_serves_its_metrics_while_it_goes_on() {
    let mq = Mosquitto::start().unwrap();
    let c = Cluster::start(1);
    let port = free_port();
    let listen = port.to_string();
    let run = c.run_in_background(
        &mq.url("prom", "qos=1"),
        &[
            "--rate",
            "200",
            "--duration",
            "6s",
            "--metrics-listen",
            &listen,
        ],
    );
    let mut seen = String::new();
    let got = wait_for(Duration::from_secs(30), || {
        seen = scrape(port).unwrap_or_default();
        value(&seen, "maestro_run_sent_total{").is_some_and(|v| v >= 400.0)
    });
    assert!(got, "{seen}");
    assert!(seen.contains("application/openmetrics-text"), "{seen}");
    // Rates of the last second, and quantiles from the merged histograms.
    let rate = value(&seen, "maestro_run_send_rate{").unwrap();
    assert!((150.0..=250.0).contains(&rate), "{seen}");
    let p99 = value(&seen, "maestro_run_response_time_seconds{").unwrap();
    assert!(p99 > 0.0 && p99 < 1.0, "{seen}");
    assert!(
        seen.contains(r#"phase="start""#) && seen.contains(r#"fault="none""#),
        "{seen}"
    );
    let done = run.join().unwrap();
    assert_eq!(done.code, Some(0), "{done:?}");
    // The endpoint goes away with the run, on loopback only.
    assert!(scrape(port).is_none());
    let s = done.json().unwrap();
    assert_eq!(s["sent"], 1200);
}

#[test]
fn a_daemon_serves_its_health() {
    let c = Cluster::start(1);
    let port = free_port();
    let listen = port.to_string();
    let cluster: maestro_protocol::ClusterId = c.cluster.parse().unwrap();
    let _inspector = maestro_testkit::spawn_peer(
        "inspector",
        &c.broker.url(),
        &cluster,
        &["--name", "watched", "--metrics-listen", &listen],
    )
    .unwrap();
    let mut seen = String::new();
    let connected = wait_for(Duration::from_secs(15), || {
        seen = scrape(port).unwrap_or_default();
        value(&seen, "maestro_peer_connected{").is_some_and(|v| v == 1.0)
    });
    assert!(connected, "{seen}");
    assert!(
        seen.contains(r#"role="inspector",name="watched""#),
        "{seen}"
    );
    let ping = c.cli(&["ping"], Duration::from_secs(10));
    assert_eq!(ping.code, Some(0), "{ping:?}");
    assert!(
        wait_for(Duration::from_secs(10), || {
            seen = scrape(port).unwrap_or_default();
            value(&seen, "maestro_peer_notes_received{").is_some_and(|v| v >= 1.0)
        }),
        "{seen}"
    );
    assert_eq!(value(&seen, "maestro_peer_bad_notes{"), Some(0.0), "{seen}");
}

#[test]
fn the_control_broker_serves_its_health() {
    let port = free_port();
    let listen = port.to_string();
    let broker = maestro_testkit::TestBroker::start(&["--metrics-listen", &listen]).unwrap();
    // Two workers connected to it, and a ping through it.
    let cluster = maestro_testkit::unique_cluster();
    let _w: Vec<_> = (0..2)
        .map(|i| {
            maestro_testkit::spawn_peer(
                "worker",
                &broker.url(),
                &cluster,
                &["--name", &format!("w{i}")],
            )
            .unwrap()
        })
        .collect();
    let mut seen = String::new();
    let counted = wait_for(Duration::from_secs(20), || {
        seen = scrape(port).unwrap_or_default();
        value(&seen, "maestro_broker_connections").is_some_and(|v| v >= 2.0)
    });
    assert!(counted, "{seen}");
    assert_eq!(value(&seen, "maestro_broker_up"), Some(1.0), "{seen}");
    assert_eq!(
        value(&seen, "maestro_broker_health_check_failures"),
        Some(0.0),
        "{seen}"
    );
    assert!(
        value(&seen, "maestro_broker_max_connections").is_some_and(|v| v >= 1.0),
        "{seen}"
    );
}
