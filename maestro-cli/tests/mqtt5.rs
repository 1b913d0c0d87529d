//! MQTT 5 and MQTT over WebSockets against real Mosquittos and the real binaries, checked by
//! what an independent client (`mosquitto_sub -V 5`) and the broker's own log saw:
//!
//! - the publish properties a URL asks for (user properties, message expiry, content type,
//!   response topic) reach a subscriber on every message, and a topic alias resolves to
//!   the full topic there;
//! - reason codes are counted by packet and reason: PUBACK "no matching subscribers" for a
//!   topic nobody reads, and publishes the broker refuses (an ACL) are errors, counted
//!   exactly;
//! - a fleet over `wss://` with MQTT 5 and a certificate per device, against Mosquitto's
//!   WebSockets listener requiring client certificates.
//!
//! The conformance suite (`conformance.rs`) runs MQTT 5 with a shared subscription, MQTT
//! over Mosquitto's WebSockets listener and RabbitMQ's web MQTT plugin through the same
//! checks as every protocol.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_testkit::{Cluster, Lab, Mosquitto, Proc};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

/// `mosquitto_sub -V 5` on `filter`, keeping every line it prints (`format` is its `-F`;
/// text only: a line that is not UTF-8 would end the reader, and mosquitto_sub with it).
struct Lines {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Lines {
    fn subscribe(port: u16, filter: &str, format: &str) -> Self {
        let mut child = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-V",
                "5",
                "-q",
                "1",
            ])
            .args(["-t", filter, "-F", format])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let keep = lines.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                keep.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The MQTT versions the broker logged for connections whose client id starts with
/// `prefix` ("p5" for MQTT 5).
fn versions(mq: &Proc, prefix: &str) -> BTreeSet<String> {
    mq.log_text()
        .lines()
        .filter(|l| l.contains("New client connected") && l.contains(&format!(" as {prefix}")))
        .filter_map(|l| l.split(" (").nth(1)?.split(',').next().map(str::to_owned))
        .collect()
}

#[test]
fn mqtt5_properties_reach_an_independent_subscriber_and_aliases_resolve() {
    let mq = Mosquitto::start_with(
        "log_dest stderr\nconnection_messages true\nlog_type notice\nlog_type subscribe",
    )
    .unwrap();
    let sub = Lines::subscribe(mq.port, "props/#", "%t|%P|%E|%C|%R");
    // mosquitto_sub is subscribed once the broker logged its subscription.
    assert!(maestro_testkit::wait_for(Duration::from_secs(10), || {
        mq.proc.log_text().contains(" props/#")
    }));
    let c = Cluster::start(1);
    let url = mq.url(
        "props",
        "version=5&qos=1&topic_alias=true&user_properties=site:lab,rack:7\
         &message_expiry=5m&content_type=text/x-maestro&response_topic=replies/maestro",
    );
    let (run, s) = c.run_test(
        &url,
        &[
            "--rate",
            "1000",
            "--count",
            "300",
            "--producers",
            "2",
            "--consumers",
            "1",
            "--size",
            "~100",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        (u(&s, "sent"), u(&s, "received"), u(&s, "lost")),
        (300, 300, 0),
        "{s:#}"
    );
    let run_id = s["run_id"].as_str().unwrap();
    let topic = format!("props/{run_id}/0");
    maestro_testkit::wait_for(Duration::from_secs(10), || sub.snapshot().len() >= 300);
    let lines = sub.snapshot();
    assert_eq!(lines.len(), 300, "{lines:?}\n{}", mq.proc.log_text());
    for line in &lines {
        let fields: Vec<&str> = line.split('|').collect();
        // Aliased publishes name no topic: the broker resolved alias 1 to the full topic.
        assert_eq!(fields[0], topic, "{line}");
        // mosquitto_sub prints user properties without a separator between them.
        assert!(
            fields[1].contains("site:lab") && fields[1].contains("rack:7"),
            "{line}"
        );
        // The expiry left when the broker sent it on: at most 300 s.
        let expiry: u32 = fields[2].parse().unwrap();
        assert!((290..=300).contains(&expiry), "{line}");
        assert_eq!(
            (fields[3], fields[4]),
            ("text/x-maestro", "replies/maestro"),
            "{line}"
        );
    }
    // Every maestro client spoke MQTT 5.
    assert_eq!(
        versions(&mq.proc, "maestro-"),
        BTreeSet::from(["p5".to_owned()]),
        "{}",
        mq.proc.log_text()
    );
    // A subscriber read every message: no reason codes other than success.
    assert!(s["connections"]["reason_codes"].is_null(), "{s:#}");
}

#[test]
fn mqtt5_reason_codes_are_counted_and_refused_publishes_are_errors() {
    let dir = maestro_testkit::test_dir("mqtt5-acl");
    let acl = dir.join("acl");
    std::fs::write(&acl, "topic readwrite open/#\n").unwrap();
    let mq = Mosquitto::start_with(&format!("acl_file {}", acl.display())).unwrap();
    let c = Cluster::start(1);
    // Nobody reads the topic: every PUBACK says so, and nothing is an error.
    let (run, s) = c.run_test(
        &mq.url("open", "version=5&qos=1"),
        &["--rate", "500", "--count", "200", "--consumers", "0"],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(u(&s, "sent"), 200, "{s:#}");
    assert_eq!(
        u(
            &s["connections"]["reason_codes"],
            "PUBACK NoMatchingSubscribers"
        ),
        200,
        "{s:#}"
    );
    assert_eq!(u(&s, "errors"), 0, "{s:#}");
    // The ACL refuses the topic: every publish is refused, counted by its reason, and
    // the run says so.
    let (run, s) = c.run_test(
        &mq.url("closed", "version=5&qos=1"),
        &["--rate", "500", "--count", "200", "--consumers", "0"],
    );
    assert_eq!(u(&s, "sent"), 200, "{run:?}");
    assert_eq!(
        u(&s["connections"]["reason_codes"], "PUBACK NotAuthorized"),
        200,
        "{s:#}"
    );
    // One error per refused publish, under one message.
    assert_eq!(u(&s, "errors"), 200, "{s:#}");
    assert_eq!(
        s["error_messages"][0]["message"], "the broker refused a publish: PUBACK NotAuthorized",
        "{s:#}"
    );
    assert_eq!(u(&s["error_messages"][0], "count"), 200, "{s:#}");
    assert_ne!(run.code, Some(0), "{run:?}");
}

#[test]
fn a_wss_mqtt5_fleet_with_a_certificate_per_device() {
    let lab = Lab::new("wss").unwrap();
    let mq = Mosquitto::start_with_websockets(&format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true\nlog_dest stderr\nconnection_messages true",
        lab.file("ca.pem"),
        lab.file("server.pem"),
        lab.file("server.key")
    ))
    .unwrap();
    let c = Cluster::start_with(2, &["--files-dir", lab.dir.to_str().unwrap()]);
    let sut = mq
        .ws_url(
            "wss",
            "wss",
            &format!("version=5&qos=1&{}", lab.per_client()),
        )
        .replace("127.0.0.1", "localhost");
    let (run, s) = c.run_test(
        &sut,
        &[
            "--clients",
            "100",
            "--connect-rate",
            "200",
            "--interval",
            "1s",
            "--duration",
            "2s",
            "--client-id",
            "meter-{i}",
            "--subscribe",
            "wss/cmd/{i}",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        (u(&s, "sent"), u(&s, "received"), u(&s, "lost")),
        (200, 200, 0),
        "{s:#}"
    );
    assert_eq!(u(&s["tls_handshake_us"], "count"), 101, "{s:#}");
    assert_eq!(u(&s["subscribe_us"], "count"), 101, "{s:#}");
    assert_eq!(u(&s["connections"], "opened"), 101, "{s:#}");
    // The broker saw each device over MQTT 5, named by its own certificate.
    let log = mq.proc.log_text();
    assert_eq!(
        versions(&mq.proc, "meter-"),
        BTreeSet::from(["p5".to_owned()]),
        "{log}"
    );
    assert_eq!(mq.logged_users("meter-").len(), 100, "{log}");
}
