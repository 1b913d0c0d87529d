//! TLS to the system under test, against real brokers and the real binaries: Mosquitto
//! with mutual TLS (one certificate per client, the broker takes each certificate's CN as
//! the user name), RabbitMQ with a TLS listener that requires client certificates (AMQP
//! 0-9-1 and AMQP 1.0 on it), and the Kafka-compatible broker behind stunnel. A server
//! certificate the workers do not trust fails the start with exit 5 and says why.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_testkit::{Cluster, Lab, Mosquitto, ScriptedSut};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

/// Mosquitto whose listener wants a client certificate signed by the lab CA and takes
/// its CN as the user name.
fn mutual_tls_mosquitto(lab: &Lab) -> Mosquitto {
    Mosquitto::start_with(&format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true\nlog_dest stderr\nlog_type all\nconnection_messages true",
        lab.file("ca.pem"),
        lab.file("server.pem"),
        lab.file("server.key")
    ))
    .unwrap()
}

/// A short run that is expected to fail.
fn start(c: &Cluster, sut: &str) -> maestro_testkit::CliRun {
    c.cli(
        &[
            "start",
            "--sut",
            sut,
            "--count",
            "10",
            "--results",
            c.results.to_str().unwrap(),
        ],
        Duration::from_secs(90),
    )
}

fn run_args(count: &str) -> Vec<&str> {
    vec![
        "--rate",
        "1000",
        "--count",
        count,
        "--producers",
        "2",
        "--consumers",
        "2",
        "--size",
        "200",
    ]
}

/// Worker arguments that let it read the labs' files (`Lab` folders are under the
/// temporary folder): a worker reads files a SUT URL names only under --files-dir.
fn reading_labs() -> [&'static str; 2] {
    let dir: &'static str = std::env::temp_dir().to_string_lossy().into_owned().leak();
    ["--files-dir", dir]
}

#[test]
fn mqtts_gives_every_client_its_own_certificate() {
    let lab = Lab::new("mqtt").unwrap();
    let mq = mutual_tls_mosquitto(&lab);
    let c = Cluster::start_with(2, &reading_labs());
    let sut = format!(
        "mqtts://localhost:{}/tls?qos=1&{}",
        mq.port,
        lab.per_client()
    );
    let (run, s) = c.run_test(&sut, &run_args("2000"));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(u(&s, "sent"), 2000, "{s:#}");
    // Two subscribers each get every message.
    assert_eq!(u(&s, "received"), 4000, "{s:#}");
    assert_eq!(u(&s, "lost"), 0, "{s:#}");
    assert_eq!(s["degraded"], false, "{s:#}");
    // Four connections, each handshake timed; each connection to its CONNACK (which
    // takes longer than the handshake alone), and the two subscriptions to their SUBACK.
    let hs = &s["tls_handshake_us"];
    assert_eq!(u(hs, "count"), 4, "{s:#}");
    assert!(u(hs, "p50") > 0 && u(hs, "max") < 10_000_000, "{s:#}");
    let connect = &s["connect_us"];
    assert_eq!(u(connect, "count"), 4, "{s:#}");
    assert!(u(connect, "max") >= u(hs, "max"), "{s:#}");
    assert_eq!(u(&s["subscribe_us"], "count"), 2, "{s:#}");

    // The broker saw one distinct user name per client: the CN of its own certificate.
    let log = mq.proc.log_text();
    let users = mq.logged_users("maestro-");
    assert_eq!(users.len(), 4, "{users:?}\n{log}");
    for role in ["-p0", "-p1", "-c0", "-c1"] {
        assert!(users.iter().any(|u| u.ends_with(role)), "{role}: {users:?}");
    }
}

#[test]
fn an_untrusted_server_certificate_fails_the_start() {
    let lab = Lab::new("trusted").unwrap();
    let other = Lab::new("other").unwrap();
    let mq = mutual_tls_mosquitto(&lab);
    let c = Cluster::start_with(1, &reading_labs());
    // The workers trust another CA.
    let sut = format!(
        "mqtts://localhost:{}/tls?ca={}&client_ca={}&client_ca_key={}",
        mq.port,
        other.file("ca.pem"),
        lab.file("ca.pem"),
        lab.file("ca.key")
    );
    let run = start(&c, &sut);
    assert_eq!(run.code, Some(5), "{run:?}");
    assert!(
        run.stderr.contains("certificate is not trusted"),
        "{}",
        run.stderr
    );

    // Trusted server, but no client certificate: the broker ends the handshake.
    let sut = format!(
        "mqtts://localhost:{}/tls?ca={}",
        mq.port,
        lab.file("ca.pem")
    );
    let run = start(&c, &sut);
    assert_eq!(run.code, Some(5), "{run:?}");
    assert!(
        run.stderr.contains("requires a client certificate"),
        "{}",
        run.stderr
    );

    // A missing CA file is named.
    let sut = format!("mqtts://localhost:{}/tls?ca=/no/such/ca.pem", mq.port);
    let run = start(&c, &sut);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains("/no/such/ca.pem"), "{}", run.stderr);
}

/// A 4-second run of one producer and one consumer over TLS at 500 msg/s: it passed,
/// lost nothing, and timed both clients' handshakes and connects.
fn assert_two_clients_over_tls(run: &maestro_testkit::CliRun, s: &Value) {
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(u(s, "sent") > 1000, "{s:#}");
    assert_eq!(u(s, "lost"), 0, "{s:#}");
    assert_eq!(u(s, "received"), u(s, "sent"), "{s:#}");
    assert_eq!(u(&s["tls_handshake_us"], "count"), 2, "{s:#}");
    assert_eq!(u(&s["connect_us"], "count"), 2, "{s:#}");
}

#[test]
fn amqps_to_rabbitmq_with_client_certificates() {
    let lab = Lab::new("amqp").unwrap();
    let rabbit = ScriptedSut::rabbitmq_tls(&lab.dir).unwrap();
    let tls_url = rabbit.tls_url.clone().expect("a TLS listener");
    let c = Cluster::start_with(2, &reading_labs());
    let sut = format!("{tls_url}?confirms=true&{}", lab.per_client());
    // Connections stay open for the whole run: list them while it runs.
    let handle = c.run_in_background(&sut, &["--rate", "500", "--duration", "4s"]);
    if !c.wait_until_running(1, Duration::from_secs(30)) {
        panic!("the run did not start: {:?}", handle.join());
    }
    let subjects = rabbit
        .rabbitmqctl(&["list_connections", "name", "peer_cert_subject"])
        .unwrap();
    let run = handle.join().unwrap();
    let s = run.json().unwrap_or_else(|e| panic!("{e}\n{run:?}"));
    assert_two_clients_over_tls(&run, &s);
    // RabbitMQ saw each connection's own certificate.
    let cns: BTreeSet<&str> = subjects
        .lines()
        .filter_map(|l| l.split("CN=").nth(1))
        .map(|cn| cn.split([',', '\t', ' ']).next().unwrap_or(cn))
        .filter(|cn| cn.starts_with("maestro-"))
        .collect();
    assert_eq!(cns.len(), 2, "{subjects}");
}

/// AMQP 1.0 over RabbitMQ's TLS listener, one client certificate per connection; a worker
/// without a certificate is refused (exit 5).
#[test]
fn amqp10s_to_rabbitmq_with_client_certificates() {
    let lab = Lab::new("amqp10").unwrap();
    let rabbit = ScriptedSut::rabbitmq_amqp10_tls(&lab.dir).unwrap();
    let url = rabbit
        .amqp10s_url
        .clone()
        .expect("AMQP 1.0 on the TLS listener");
    let c = Cluster::start_with(2, &reading_labs());
    let sut = format!("{url}?{}", lab.per_client());
    // RabbitMQ 3.10 does not list AMQP 1.0 connections (rabbitmqctl list_connections):
    // the handshakes counted and the refusal below show the certificates at work.
    let (run, s) = c.run_test(&sut, &["--rate", "500", "--duration", "4s"]);
    assert_two_clients_over_tls(&run, &s);

    // Trusting the CA but showing no certificate: the broker refuses the handshake.
    let bare = format!("{url}?ca={}", lab.file("ca.pem"));
    let run = start(&c, &bare);
    assert_eq!(run.code, Some(5), "{run:?}");
}

#[test]
fn kafka_over_tls_through_stunnel() {
    let lab = Lab::new("kafka").unwrap();
    let kafka = ScriptedSut::tansu_tls(&lab.dir).unwrap();
    let c = Cluster::start_with(2, &reading_labs());
    let sut = format!(
        "{}/tls?security.protocol=ssl&ssl.ca.location={}&client_ca={}&client_ca_key={}",
        kafka.url,
        lab.file("ca.pem"),
        lab.file("ca.pem"),
        lab.file("ca.key")
    );
    let (run, s) = c.run_test(&sut, &run_args("2000"));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(u(&s, "sent"), 2000, "{s:#}");
    assert_eq!(u(&s, "received"), 2000, "{s:#}");
    assert_eq!(u(&s, "lost"), 0, "{s:#}");

    // stunnel requires a client certificate: without one, nothing gets through.
    let bare = format!(
        "{}/tls?security.protocol=ssl&ssl.ca.location={}",
        kafka.url,
        lab.file("ca.pem")
    );
    let run = start(&c, &bare);
    assert_eq!(run.code, Some(5), "{run:?}");
}

/// NATS over TLS on the server's port, a certificate per client: both clients' connections
/// are TLS ones under their own names (the server's monitoring lists them), nothing is
/// lost; a worker that trusts the CA but shows no certificate is refused (exit 5).
#[test]
fn nats_tls_with_a_certificate_per_client() {
    let lab = Lab::new("nats").unwrap();
    let nats = ScriptedSut::nats_tls(&lab.dir).unwrap();
    let url = nats.tls_url.clone().expect("the TLS URL");
    let monitor: u16 = nats
        .management_url
        .as_deref()
        .and_then(|m| m.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("the monitoring port");
    let c = Cluster::start_with(2, &reading_labs());
    let sut = format!("{url}?jetstream=true&{}", lab.per_client());
    let handle = c.run_in_background(&sut, &["--rate", "500", "--duration", "4s"]);
    if !c.wait_until_running(1, Duration::from_secs(30)) {
        panic!("the run did not start: {:?}", handle.join());
    }
    let connz = maestro_testkit::http_get(monitor, "/connz").unwrap_or_default();
    let run = handle.join().unwrap();
    let s = run.json().unwrap_or_else(|e| panic!("{e}\n{run:?}"));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(u(&s, "sent") > 1000, "{s:#}");
    assert_eq!(
        (u(&s, "lost"), u(&s, "received")),
        (0, u(&s, "sent")),
        "{s:#}"
    );
    let body = connz.split("\r\n\r\n").nth(1).unwrap_or_default();
    let connz: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {connz}"));
    let over_tls: BTreeSet<&str> = connz["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["tls_version"]
                .as_str()
                .is_some_and(|v| v.starts_with("1."))
        })
        .filter_map(|c| c["name"].as_str())
        .collect();
    let run_id = s["run_id"].as_str().unwrap();
    for client in ["p0", "c0"] {
        assert!(
            over_tls.contains(format!("maestro-{run_id}-{client}").as_str()),
            "{client} not over TLS: {over_tls:?}"
        );
    }

    // Trusting the CA but showing no certificate: the server refuses the handshake.
    let bare = format!("{url}?ca={}", lab.file("ca.pem"));
    let run = start(&c, &bare);
    assert_eq!(run.code, Some(5), "{run:?}");
}

/// STOMP over TLS with a certificate per client, on RabbitMQ and on ActiveMQ
/// (`needClientAuth`): both require a client certificate, so a client without one is
/// refused (exit 5), and every client's handshake is timed.
#[test]
fn stomps_to_rabbitmq_and_activemq_with_client_certificates() {
    let lab = Lab::new("stomp").unwrap();
    let c = Cluster::start_with(2, &reading_labs());
    let rabbit = ScriptedSut::rabbitmq_stomp_tls(&lab.dir).unwrap();
    let activemq = ScriptedSut::activemq_tls(&lab.dir).unwrap();
    for url in [
        rabbit
            .stomps_url
            .clone()
            .expect("STOMP on RabbitMQ's TLS listener"),
        activemq
            .tls_url
            .clone()
            .expect("STOMP on ActiveMQ's TLS listener"),
    ] {
        let (run, s) = c.run_test(
            &format!("{url}?{}", lab.per_client()),
            &["--rate", "500", "--duration", "4s"],
        );
        assert_two_clients_over_tls(&run, &s);
        let bare = format!("{url}?ca={}", lab.file("ca.pem"));
        let run = start(&c, &bare);
        assert_eq!(run.code, Some(5), "{url}: {run:?}");
    }
}
