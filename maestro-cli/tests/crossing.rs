//! Runs that publish in one protocol and consume in another on one RabbitMQ
//! (`--consumer-sut`): every pair the broker maps delivers every message once per
//! consumer that should get it, with exact accounting; pairs it cannot map are usage
//! errors that name them.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_testkit::{Cluster, ScriptedSut};
use serde_json::Value;
use std::time::Duration;

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

fn crossed(c: &Cluster, producers: &str, consumers: &str) -> (maestro_testkit::CliRun, Value) {
    let run = c.cli(
        &[
            "start",
            "--sut",
            producers,
            "--consumer-sut",
            consumers,
            "--count",
            "2000",
            "--rate",
            "1000",
            "--producers",
            "2",
            "--consumers",
            "2",
            "--topics",
            "2",
            "-o",
            "json",
        ],
        Duration::from_secs(120),
    );
    let s = run.json().unwrap_or_else(|e| panic!("{e}: {run:?}"));
    (run, s)
}

#[test]
fn rabbitmq_carries_a_run_across_its_protocols() {
    let c = Cluster::start(2);
    let rabbit = ScriptedSut::rabbitmq_every_protocol().unwrap();
    let amqp = rabbit.url.clone();
    let mqtt = rabbit.mqtt_url.clone().unwrap();
    let stream = rabbit.stream_url.clone().unwrap();
    let stomp = rabbit.stomp_url.clone().unwrap();
    let amqp10 = rabbit.amqp10_url.clone().unwrap();
    // Two consumers on two topics: one consumer per topic, so each message arrives once
    // whether the consumers compete (AMQP queues) or each read everything (MQTT, streams).
    for (producers, consumers) in [
        (
            format!("{mqtt}/cross?qos=1"),
            format!("{amqp}?confirms=true&ack=manual&durable=true"),
        ),
        (
            format!("{amqp}?confirms=true"),
            format!("{mqtt}/cross?qos=1"),
        ),
        (format!("{amqp}?confirms=true"), format!("{stream}/%2f")),
        (
            format!("{amqp10}/queue/x?settle=at_least_once"),
            format!("{stream}/%2f"),
        ),
        (format!("{stomp}?dest=topic"), format!("{mqtt}/cross?qos=1")),
        (format!("{mqtt}/cross?qos=1"), format!("{stomp}?dest=topic")),
    ] {
        let (run, s) = crossed(&c, &producers, &consumers);
        assert_eq!(run.code, Some(0), "{producers} -> {consumers}: {run:?}");
        assert_eq!(
            (
                u(&s, "sent"),
                u(&s, "received"),
                u(&s, "lost"),
                u(&s, "duplicated")
            ),
            (2000, 2000, 0, 0),
            "{producers} -> {consumers}: {s:#}"
        );
        assert_eq!(u(&s, "errors"), 0, "{s:#}");
        let kept = s["consumer_sut"]
            .as_str()
            .unwrap_or_else(|| panic!("{s:#}"));
        assert!(
            kept.contains("***") && !kept.contains(":guest@"),
            "the consumers' URL is kept without its password: {kept}"
        );
        assert_eq!(
            u(&s["publish_latency_us"], "count"),
            2000,
            "every publish acknowledged: {s:#}"
        );
    }
    // A plan names the consumers' protocol in its [sut] table (`consumer_url`); its
    // summary keeps it without the password.
    let plan = c.results.join("crossing.toml");
    std::fs::create_dir_all(&c.results).unwrap();
    std::fs::write(
        &plan,
        format!(
            r#"
[plan]
name = "mqtt-in-amqp-out"

[sut]
url = "{mqtt}/plan?qos=1"
consumer_url = "{amqp}?ack=manual&durable=true"

[workload]
topics = 2
subscriptions_per_topic = 1

[[phase]]
kind = "fixed"
rate = 500
duration = "3s"
"#
        ),
    )
    .unwrap();
    let run = c.cli(
        &[
            "run",
            plan.to_str().unwrap(),
            "--results",
            c.results.to_str().unwrap(),
            "-o",
            "json",
        ],
        Duration::from_secs(120),
    );
    let result = run.json().unwrap_or_else(|e| panic!("{e}: {run:?}"));
    let s = &result["phases"][0]["probes"][0]["summary"];
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        (
            u(s, "sent"),
            u(s, "received"),
            u(s, "lost"),
            u(s, "duplicated")
        ),
        (1500, 1500, 0, 0),
        "{s:#}"
    );
    let kept = s["consumer_sut"]
        .as_str()
        .unwrap_or_else(|| panic!("{s:#}"));
    assert!(
        kept.starts_with("amqp://") && !kept.contains(":guest@"),
        "{kept}"
    );

    // Nothing of the runs stays on the broker: the AMQP consumers' queues went with them,
    // and the streams with their readers.
    let queues = rabbit.rabbitmqctl(&["list_queues", "name"]).unwrap();
    assert!(
        !queues.lines().any(|q| q.starts_with("maestro")),
        "left behind:\n{queues}"
    );

    // Pairs the broker cannot map, and a second broker, are usage errors naming them.
    for (consumers, says) in [
        ("kafka://127.0.0.1:9092/x".to_owned(), "mqtt -> kafka"),
        (
            amqp.replace("127.0.0.1", "localhost"),
            "both URLs name the same host",
        ),
        (format!("{amqp}?exchange=mine"), "sets exchange="),
        // A STOMP queue is not what the broker maps MQTT topics to.
        (stomp.clone(), "needs dest=topic"),
    ] {
        let run = c.cli(
            &[
                "start",
                "--sut",
                &format!("{mqtt}/cross?qos=1"),
                "--consumer-sut",
                &consumers,
                "--count",
                "10",
            ],
            Duration::from_secs(30),
        );
        assert_eq!(run.code, Some(2), "{consumers}: {run:?}");
        assert!(run.stderr.contains(says), "{consumers}: {}", run.stderr);
    }
}
