//! OpenMessaging Benchmark files run as they are: OMB workload and driver YAML files
//! (written here from OMB's documented format) against real brokers, tansu (Kafka) and
//! RabbitMQ, with the real binaries; OMB's `-x`, its backlog test, and the plan made
//! from the files.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_testkit::{Cluster, ScriptedSut, assert_split_roles, run_cli, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn temp_dir(name: &str) -> maestro_testkit::TestDir {
    maestro_testkit::test_dir(&format!("omb-{name}"))
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plans/omb")
}

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

/// Runs the folder's `workload.yaml` with its `driver.yaml` (and `extra` flags) into
/// `results`, and returns the plan's results folder and summary.
fn run_omb(c: &Cluster, dir: &Path, extra: &[&str]) -> (PathBuf, Value) {
    let results = dir.join("results");
    let (workload, driver) = (dir.join("workload.yaml"), dir.join("driver.yaml"));
    let mut args = vec![
        "run",
        workload.to_str().unwrap(),
        "--driver",
        driver.to_str().unwrap(),
        "--results",
        results.to_str().unwrap(),
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    let run = c.cli(&args, Duration::from_secs(120));
    assert_eq!(run.code, Some(0), "{run:?}");
    maestro_testkit::plan_summary(&results)
}

#[test]
fn the_example_omb_files_check_and_a_bad_key_is_named_with_its_line() {
    for workload in [
        "1-topic-4-partitions-1kb.yaml",
        "max-rate-100b.yaml",
        "backlog-1kb.yaml",
    ] {
        for driver in [
            "kafka.yaml",
            "rabbitmq.yaml",
            "mqtt5.yaml",
            "redis.yaml",
            "nats.yaml",
        ] {
            let run = run_cli(
                &[
                    "run",
                    examples().join(workload).to_str().unwrap(),
                    "--driver",
                    examples().join(driver).to_str().unwrap(),
                    "--check",
                ],
                Duration::from_secs(20),
            )
            .unwrap();
            if (workload, driver) == ("backlog-1kb.yaml", "mqtt5.yaml") {
                // An MQTT broker keeps no backlog for a subscriber that does not read.
                assert_eq!(run.code, Some(2), "{workload} {driver}: {run:?}");
                assert!(run.stderr.contains("consumer_backlog_size_gb"), "{run:?}");
            } else {
                assert_eq!(run.code, Some(0), "{workload} {driver}: {run:?}");
            }
        }
    }
    // producerRate 0: the highest rate at which consumers keep up, then the test there.
    let run = run_cli(
        &[
            "run",
            examples().join("max-rate-100b.yaml").to_str().unwrap(),
            "--driver",
            examples().join("kafka.yaml").to_str().unwrap(),
            "--check",
        ],
        Duration::from_secs(20),
    )
    .unwrap();
    for made in [
        "kind = \"max-rate\"",
        "max_backlog = 10000",
        "at_knee = true",
        "duration = \"1m\"",
        "producer.acks=all",
        "consumer.enable.auto.commit=false",
        "replication_factor=1",
    ] {
        assert!(run.stdout.contains(made), "{made}: {}", run.stdout);
    }
    assert!(
        run.stderr
            .contains("left out: default.api.timeout.ms, key.serializer"),
        "{}",
        run.stderr
    );
    let dir = temp_dir("bad");
    let text = std::fs::read_to_string(examples().join("1-topic-4-partitions-1kb.yaml")).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, text.replace("producersPerTopic", "producersPerTopc")).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("producersPerTopic"))
        .unwrap()
        + 1;
    let run = run_cli(
        &[
            "run",
            bad.to_str().unwrap(),
            "--driver",
            examples().join("kafka.yaml").to_str().unwrap(),
            "--check",
        ],
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("bad.yaml:{line}: producersPerTopc: unknown field")),
        "{}",
        run.stderr
    );
    // A workload without its driver is a usage error saying what is missing.
    let run = run_cli(
        &["run", bad.to_str().unwrap(), "--check"],
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("--driver"), "{}", run.stderr);
}

/// A Kafka workload and driver (acks=all, no auto-commit, round-robin keys, a payload
/// file) run as they are, with OMB's -x: producers on one worker, consumers on the other.
#[test]
fn an_omb_kafka_workload_runs_as_it_is_with_split_workers() {
    let c = Cluster::start(2);
    let tansu = ScriptedSut::tansu().unwrap();
    let dir = temp_dir("kafka");
    let bootstrap = tansu.url.trim_start_matches("kafka://");
    std::fs::write(dir.join("payload.data"), vec![b'x'; 512]).unwrap();
    std::fs::write(
        dir.join("workload.yaml"),
        "name: omb-kafka\ntopics: 1\npartitionsPerTopic: 2\nmessageSize: 512\npayloadFile: payload.data\n\
         subscriptionsPerTopic: 1\nconsumerPerSubscription: 2\nproducersPerTopic: 2\nproducerRate: 1000\n\
         consumerBacklogSizeGB: 0\ntestDurationMinutes: 0.1\nwarmupDurationMinutes: 0.05\n\
         keyDistributor: KEY_ROUND_ROBIN\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("driver.yaml"),
        format!(
            "name: Kafka\ndriverClass: io.openmessaging.benchmark.driver.kafka.KafkaBenchmarkDriver\n\
             replicationFactor: 1\nreset: true\ntopicConfig: |\n  retention.ms=600000\n\
             commonConfig: |\n  bootstrap.servers={bootstrap}\n  default.api.timeout.ms=120000\n\
             producerConfig: |\n  acks=all\n  linger.ms=1\n\
             consumerConfig: |\n  auto.offset.reset=earliest\n  enable.auto.commit=false\n"
        ),
    )
    .unwrap();
    let (folder, plan) = run_omb(&c, &dir, &["-x"]);
    assert_eq!(plan["phases"][0]["kind"], "warmup", "{plan:#}");
    let fixed = &plan["phases"][1];
    assert_eq!(
        (fixed["kind"].as_str(), fixed["passed"].as_bool()),
        (Some("fixed"), Some(true)),
        "{fixed:#}"
    );
    let s = &fixed["probes"][0]["summary"];
    // 1000/s for 6 s, the 3 s warm-up before it: every message arrives once.
    assert_eq!(u(s, "sent"), 6000, "{s:#}");
    assert_eq!(
        (u(s, "received"), u(s, "lost"), u(s, "duplicated")),
        (6000, 0, 0),
        "{s:#}"
    );
    assert!(
        u(&s["publish_latency_us"], "count") >= 5900,
        "delivery reports timed: {s:#}"
    );
    let per_message =
        s["achieved_bytes_rate"].as_f64().unwrap() / s["achieved_rate"].as_f64().unwrap();
    assert!(
        (per_message - 512.0).abs() < 1.0,
        "{per_message} bytes a message"
    );
    assert_split_roles(s, 2, 2);
    let made = std::fs::read_to_string(folder.join("plan.toml")).unwrap();
    assert!(
        made.contains("key_distribution = \"round_robin\""),
        "{made}"
    );

    // The plan's results in OMB's result format, in 2 s intervals.
    let out = dir.join("omb.json");
    let run = run_cli(
        &[
            "export",
            "--format",
            "omb",
            folder.to_str().unwrap(),
            "--interval",
            "2s",
            "--out",
            out.to_str().unwrap(),
        ],
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(run.code, Some(0), "{run:?}");
    let omb: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(omb["workload"], "omb-kafka");
    assert_eq!((u(&omb, "messageSize"), u(&omb, "partitions")), (512, 2));
    let series = |k: &str| -> Vec<f64> {
        omb[k]
            .as_array()
            .unwrap_or_else(|| panic!("no {k}"))
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    // Three 2 s intervals cover the 6 s test, and a last one the receptions after it
    // (the drain): each rate is what the run's time series has for its seconds.
    let run_folder = std::fs::read_dir(folder.join("01-fixed"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let rows =
        maestro_report::timeseries::read_timeseries(&run_folder.join("timeseries.csv")).unwrap();
    let last_busy = rows
        .iter()
        .filter(|r| r.sent > 0 || r.received > 0)
        .map(|r| r.second)
        .max()
        .unwrap();
    let interval = |range: std::ops::Range<u32>| {
        let rows: Vec<_> = rows.iter().filter(|r| range.contains(&r.second)).collect();
        let n = rows.len() as f64;
        (
            rows.iter().map(|r| r.sent).sum::<u64>() as f64 / n,
            rows.iter().map(|r| r.received).sum::<u64>() as f64 / n,
        )
    };
    let mut expected = vec![interval(0..2), interval(2..4), interval(4..6)];
    if last_busy >= 6 {
        expected.push(interval(6..last_busy + 1));
    }
    let rates = series("publishRate");
    let got: Vec<(f64, f64)> = rates.iter().copied().zip(series("consumeRate")).collect();
    assert_eq!(got, expected, "{omb:#}");
    let sent: f64 = rates[..3].iter().map(|r| r * 2.0).sum();
    // (a send due at the window's very end may land in the next second)
    assert!((5990.0..=6000.0).contains(&sent), "{omb:#}");
    assert_eq!(series("backlog").last(), Some(&0.0), "{omb:#}");
    for k in [
        "publishLatency99pct",
        "publishDelayLatency99pct",
        "endToEndLatency95pct",
        "endToEndLatencyAvg",
        "publishErrorRate",
        "consumeRate",
        "backlog",
    ] {
        assert_eq!(series(k).len(), rates.len(), "{k}");
    }
    assert!(series("publishLatency50pct")[0] > 0.0, "{omb:#}");
    let p99 = omb["aggregatedPublishLatency99pct"].as_f64().unwrap();
    let p50 = omb["aggregatedPublishLatency50pct"].as_f64().unwrap();
    assert!(p99 >= p50 && p50 > 0.0, "{omb:#}");
    // What OMB's chart script reads, read the same way: series plotted every 10 s, and
    // quantile maps whose keys are percentiles as text.
    let check = r#"
import json, math, sys
r = json.load(open(sys.argv[1]))
for k in ["publishLatency99pct", "publishDelayLatency99pct", "publishRate",
          "endToEndLatency95pct", "consumeRate", "endToEndLatencyAvg"]:
    points = [(10 * x, y) for x, y in enumerate(r[k])]
    assert points and max(y for _, y in points) > 0, k
for k in ["aggregatedPublishLatencyQuantiles", "aggregatedPublishDelayLatencyQuantiles",
          "aggregatedEndToEndLatencyQuantiles"]:
    values = sorted((float(x), y) for x, y in r[k].items())
    xy = [(math.log10(100 / (100 - x)), y) for x, y in values if x <= 99.999]
    assert len(xy) > 10 and all(b[1] >= a[1] for a, b in zip(xy, xy[1:])), k
print("charts ok", r["workload"])
"#;
    let py = std::process::Command::new("python3")
        .args(["-c", check, out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    // Two subscriptions: two consumer groups of two consumers on the topic's 2 partitions.
    let driver = std::fs::read_to_string(dir.join("driver.yaml")).unwrap();
    two_subscriptions_of_two(&c, "kafka", &driver);
}

/// OMB's backlog test against RabbitMQ: consumers wait until 1 MiB (1024 messages of 1 KiB,
/// 2 s at 500/s) is stored, then drain it while producers go on.
#[test]
fn an_omb_rabbitmq_backlog_workload_builds_and_drains() {
    let c = Cluster::start(1);
    let rabbit = ScriptedSut::rabbitmq().unwrap();
    let dir = temp_dir("rabbit");
    std::fs::write(
        dir.join("workload.yaml"),
        format!(
            "name: omb-backlog\ntopics: 1\npartitionsPerTopic: 1\nmessageSize: 1024\n\
             subscriptionsPerTopic: 1\nconsumerPerSubscription: 1\nproducersPerTopic: 1\nproducerRate: 500\n\
             consumerBacklogSizeGB: {}\ntestDurationMinutes: 0.15\nwarmupDurationMinutes: 0\n",
            1.0 / 1024.0
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("driver.yaml"),
        format!(
            "name: RabbitMQ\ndriverClass: io.openmessaging.benchmark.driver.rabbitmq.RabbitMqBenchmarkDriver\n\
             amqpUris:\n  - {}\nmessagePersistence: true\nexchangeType: FANOUT\n",
            rabbit.url
        ),
    )
    .unwrap();
    let (_, plan) = run_omb(&c, &dir, &[]);
    let phases = plan["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 1, "no warm-up asked for: {plan:#}");
    let s = &phases[0]["probes"][0]["summary"];
    assert_eq!((u(s, "lost"), u(s, "duplicated")), (0, 0), "{s:#}");
    assert_eq!(u(s, "received"), u(s, "sent"), "{s:#}");
    let b = &s["backlog"];
    assert_eq!(u(b, "target_bytes"), 1024 * 1024, "{b:#}");
    assert!(u(b, "backlog_messages") >= 1024, "{b:#}");
    assert!(
        b["built_s"].as_f64().is_some() && b["catch_up_s"].as_f64().is_some(),
        "{b:#}"
    );
    // Confirms give the publish latency; persistence made the queue durable.
    assert!(u(&s["publish_latency_us"], "count") > 0, "{s:#}");
    assert!(
        s["sut"].as_str().unwrap().contains("persistent=true"),
        "{s:#}"
    );
}

/// OMB's own `driver-rabbitmq/rabbitmq.yaml` (quorum queues; only its URI changed) against
/// RabbitMQ: two consumers of one subscription share a quorum queue, and nothing is lost.
#[test]
fn the_omb_rabbitmq_driver_runs_as_it_is_with_quorum_queues() {
    let c = Cluster::start(1);
    let rabbit = ScriptedSut::rabbitmq().unwrap();
    let dir = temp_dir("quorum");
    std::fs::write(
        dir.join("workload.yaml"),
        "name: omb-quorum\ntopics: 1\npartitionsPerTopic: 1\nmessageSize: 512\n\
         subscriptionsPerTopic: 1\nconsumerPerSubscription: 2\nproducersPerTopic: 1\nproducerRate: 500\n\
         testDurationMinutes: 0.05\nwarmupDurationMinutes: 0\n",
    )
    .unwrap();
    let upstream = std::fs::read_to_string(examples().join("rabbitmq.yaml")).unwrap();
    assert!(upstream.contains("queueType: QUORUM"), "{upstream}");
    std::fs::write(
        dir.join("driver.yaml"),
        upstream.replace("amqp://localhost", &rabbit.url),
    )
    .unwrap();
    // The queue is listed while the run goes on (it is deleted afterwards).
    let (plan, queues) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut seen = String::new();
            wait_for(Duration::from_secs(60), || {
                seen = rabbit
                    .rabbitmqctl(&["list_queues", "name", "type"])
                    .unwrap_or_default();
                seen.contains("quorum")
            });
            seen
        });
        let (_, plan) = run_omb(&c, &dir, &[]);
        (plan, watcher.join().unwrap())
    });
    let s = &plan["phases"][0]["probes"][0]["summary"];
    let sent = u(s, "sent");
    assert!(sent > 0, "{s:#}");
    assert_eq!(
        (u(s, "received"), u(s, "lost"), u(s, "duplicated")),
        (sent, 0, 0),
        "{s:#}"
    );
    assert_eq!(
        u(&s["publish_latency_us"], "count"),
        sent,
        "confirms: {s:#}"
    );
    assert!(
        s["sut"].as_str().unwrap().contains("queue_type=quorum"),
        "{s:#}"
    );
    assert!(
        queues.contains("quorum"),
        "no quorum queue during the run:\n{queues}"
    );
    // Two subscriptions: two quorum queues bound to the exchange, two consumers sharing
    // each (every message arrives twice, once in each), both gone afterwards.
    let driver = std::fs::read_to_string(dir.join("driver.yaml")).unwrap();
    two_subscriptions_of_two(&c, "quorum", &driver);
    assert!(
        wait_for(Duration::from_secs(30), || {
            rabbit
                .rabbitmqctl(&["list_queues", "name", "type"])
                .is_ok_and(|q| !q.contains("quorum"))
        }),
        "queues left behind: {:?}",
        rabbit.rabbitmqctl(&["list_queues", "name", "type"])
    );
}

/// Runs OMB's workload of one topic with two subscriptions of two consumers each (500
/// msg/s for 3 s) with `driver` on `c`: each subscription (a queue, a consumer group, a
/// shared subscription) gets every message once, its two consumers sharing them. Returns
/// the run's summary.
fn two_subscriptions_of_two(c: &Cluster, name: &str, driver: &str) -> Value {
    let dir = temp_dir(&format!("{name}-2x2"));
    std::fs::write(
        dir.join("workload.yaml"),
        format!(
            "name: omb-{name}-2x2\ntopics: 1\npartitionsPerTopic: 2\nmessageSize: 256\n\
             subscriptionsPerTopic: 2\nconsumerPerSubscription: 2\nproducersPerTopic: 1\nproducerRate: 500\n\
             testDurationMinutes: 0.05\nwarmupDurationMinutes: 0\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("driver.yaml"), driver).unwrap();
    let (_, plan) = run_omb(c, &dir, &[]);
    let s = plan["phases"][0]["probes"][0]["summary"].clone();
    let sent = u(&s, "sent");
    assert!(sent >= 1000, "{s:#}");
    assert_eq!(
        (u(&s, "received"), u(&s, "lost"), u(&s, "duplicated")),
        (2 * sent, 0, 0),
        "two subscriptions, each message once in each: {s:#}"
    );
    assert_eq!(u(&s, "subscriptions"), 2, "{s:#}");
    let consumers: u64 = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| u(w, "consumers"))
        .sum();
    assert_eq!(consumers, 4, "{s:#}");
    s
}

/// A folder with an OMB workload of one topic and one subscription of three consumers,
/// at 500 msg/s for 3 s, of `size`-byte messages; the test writes its driver beside it.
fn one_subscription_of_three(name: &str, size: u32) -> maestro_testkit::TestDir {
    let dir = temp_dir(name);
    std::fs::write(
        dir.join("workload.yaml"),
        format!(
            "name: omb-{name}\ntopics: 1\npartitionsPerTopic: 1\nmessageSize: {size}\n\
             subscriptionsPerTopic: 1\nconsumerPerSubscription: 3\nproducersPerTopic: 1\nproducerRate: 500\n\
             testDurationMinutes: 0.05\nwarmupDurationMinutes: 0\n"
        ),
    )
    .unwrap();
    dir
}

/// OMB's own `driver-redis/redis.yaml` (only its port changed) against Redis: one
/// subscription of three consumers is a consumer group whose consumers share the messages.
#[test]
fn the_omb_redis_driver_runs_as_it_is_with_a_consumer_group() {
    let c = Cluster::start(1);
    let redis = ScriptedSut::redis().unwrap();
    let port = redis.url.rsplit(':').next().unwrap().to_owned();
    let dir = one_subscription_of_three("redis", 512);
    let upstream = std::fs::read_to_string(examples().join("redis.yaml")).unwrap();
    std::fs::write(
        dir.join("driver.yaml"),
        upstream.replace("redisPort: 6379", &format!("redisPort: {port}")),
    )
    .unwrap();
    let (_, plan) = run_omb(&c, &dir, &[]);
    let s = &plan["phases"][0]["probes"][0]["summary"];
    let sent = u(s, "sent");
    assert!(sent > 0, "{s:#}");
    assert_eq!(
        (u(s, "received"), u(s, "lost"), u(s, "duplicated")),
        (sent, 0, 0),
        "{s:#}"
    );
    assert_eq!(
        u(&s["publish_latency_us"], "count"),
        sent,
        "XADD replies: {s:#}"
    );
    assert_eq!(u(&s["workers"][0], "consumers"), 3, "{s:#}");
    // Two subscriptions: two consumer groups on the topic's stream.
    let driver = std::fs::read_to_string(dir.join("driver.yaml")).unwrap();
    two_subscriptions_of_two(&c, "redis", &driver);
}

/// OMB's own `driver-mqtt5/mqtt5.yaml` (only its server changed) against Mosquitto: one
/// subscription of three consumers, a shared one, so each message reaches one of them.
#[test]
fn the_omb_mqtt5_driver_runs_as_it_is_with_shared_subscriptions() {
    let c = Cluster::start(1);
    let mq = maestro_testkit::Mosquitto::start().unwrap();
    let dir = one_subscription_of_three("mqtt5", 256);
    std::fs::write(
        dir.join("driver.yaml"),
        format!(
            "name: MQTT\ndriverClass: io.openmessaging.benchmark.driver.mqtt5.MqttBenchmarkDriver\n\n\
             client:\n  serverUri: tcp://127.0.0.1:{}\n  username:\n  password:\n  topicPrefix: benchmark\n\n\
             consumer:\n  cleanSession: true\n  sessionExpiryIntervalSeconds: 259200\n  receiveMaximum: 256\n",
            mq.port
        ),
    )
    .unwrap();
    let (_, plan) = run_omb(&c, &dir, &[]);
    let s = &plan["phases"][0]["probes"][0]["summary"];
    let sent = u(s, "sent");
    assert!(sent >= 1000, "{s:#}");
    assert_eq!((u(s, "lost"), u(s, "duplicated")), (0, 0), "{s:#}");
    // One shared subscription: each message once (three subscribers of their own would
    // have had three copies).
    assert_eq!(u(s, "received"), sent, "{s:#}");
    assert!(
        s["sut"]
            .as_str()
            .unwrap()
            .contains("version=5&qos=1&shared=true"),
        "{s:#}"
    );
    assert_eq!(u(&s["publish_latency_us"], "count"), sent, "{s:#}");
    // Two subscriptions: two shared ones, `$share/omb/` and `$share/omb-1/`.
    let driver = std::fs::read_to_string(dir.join("driver.yaml")).unwrap();
    let s = two_subscriptions_of_two(&c, "mqtt5", &driver);
    assert!(s["sut"].as_str().unwrap().contains("shared=true"), "{s:#}");
}

/// OMB's own `driver-nats/nats.yaml` (only its port changed) against NATS with JetStream:
/// one subscription of three consumers, a durable push consumer whose deliver group they
/// share, so each message reaches one of them, acknowledged; the run's stream is gone
/// afterwards.
#[test]
fn the_omb_nats_driver_runs_as_it_is_with_durable_consumers() {
    let c = Cluster::start(1);
    let nats = ScriptedSut::nats().unwrap();
    let port = nats.url.rsplit(':').next().unwrap().to_owned();
    let dir = one_subscription_of_three("nats", 512);
    let upstream = std::fs::read_to_string(examples().join("nats.yaml")).unwrap();
    std::fs::write(
        dir.join("driver.yaml"),
        upstream.replace("localhost:4222", &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    let (_, plan) = run_omb(&c, &dir, &[]);
    let s = &plan["phases"][0]["probes"][0]["summary"];
    let sent = u(s, "sent");
    assert!(sent > 0, "{s:#}");
    assert_eq!(
        (u(s, "received"), u(s, "lost"), u(s, "duplicated")),
        (sent, 0, 0),
        "every message once: {s:#}"
    );
    assert_eq!(
        u(&s["publish_latency_us"], "count"),
        sent,
        "JetStream publish acks: {s:#}"
    );
    assert_eq!(u(&s["workers"][0], "consumers"), 3, "{s:#}");
    // Two subscriptions: two durable consumers of the stream, each with its deliver group.
    let driver = std::fs::read_to_string(dir.join("driver.yaml")).unwrap();
    two_subscriptions_of_two(&c, "nats", &driver);
    assert!(
        nats.nats_streams().unwrap().is_empty(),
        "streams left behind: {:?}",
        nats.nats_streams()
    );
}
