//! Device fleets against real Mosquittos: `start --clients` with templates, the connect
//! ramp, spread sends, JSON payloads, reconnects after a broker restart, source
//! addresses, several broker nodes, one certificate per client, and bad templates.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_testkit::{Cluster, Lab, Mosquitto};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

/// `timeseries.csv` of a run, as header -> column of values.
fn columns(c: &Cluster, s: &Value) -> BTreeMap<String, Vec<String>> {
    let folder = c.results.join(s["run_id"].as_str().unwrap());
    let text = std::fs::read_to_string(folder.join("timeseries.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in lines {
        for (h, v) in header.iter().zip(l.split(',')) {
            out.entry(h.clone()).or_default().push(v.to_owned());
        }
    }
    out
}

/// Client ids of the connections Mosquitto logged, by the address they came from.
fn connections(mq: &Mosquitto) -> Vec<(String, String)> {
    mq.proc
        .log_text()
        .lines()
        .filter(|l| l.contains("New client connected from "))
        .filter_map(|l| {
            let rest = l.split("New client connected from ").nth(1)?;
            let (from, rest) = rest.split_once(' ')?;
            let id = rest.strip_prefix("as ")?.split([' ', ',']).next()?;
            let ip = from.rsplit_once(':')?.0.to_owned();
            Some((ip, id.to_owned()))
        })
        .collect()
}

fn logging_mosquitto(extra: &str) -> Mosquitto {
    Mosquitto::start_with(&format!(
        "log_dest stderr\nconnection_messages true\n{extra}"
    ))
    .unwrap()
}

#[test]
fn a_fleet_ramps_up_at_the_asked_rate_and_spreads_its_sends() {
    // 600 clients on 2 workers, 200 connections a second (a 3 s ramp), one JSON message
    // every 2 s each for 6 s: 1,800 messages, 300 a second.
    let c = Cluster::start(2);
    let mq = logging_mosquitto("");
    let dir = c.results.join("templates");
    std::fs::create_dir_all(&dir).unwrap();
    let payload = dir.join("device.json");
    std::fs::write(
        &payload,
        r#"{"device": "d{i}", "seq": {seq}, "ts": {ts}, "temp": 21.5}"#,
    )
    .unwrap();
    let (run, s) = c.run_test(
        &mq.url("", "qos=1"),
        &[
            "--clients",
            "600",
            "--connect-rate",
            "200",
            "--interval",
            "2s",
            "--jitter",
            "200ms",
            "--duration",
            "6s",
            "--client-id",
            "dev-{i}",
            "--topic",
            "tenant/{run}/{i}/attrs",
            "--payload-template",
            payload.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(u(&s, "sent"), 1800, "{s:#}");
    assert_eq!(u(&s, "received"), 1800, "{s:#}");
    assert_eq!(u(&s, "lost"), 0, "{s:#}");
    assert_eq!(
        u(&s, "foreign"),
        0,
        "JSON payloads carry their timing: {s:#}"
    );

    // The broker saw the templated client ids.
    let ids: BTreeSet<String> = connections(&mq).into_iter().map(|(_, id)| id).collect();
    for i in [0, 299, 599] {
        assert!(ids.contains(&format!("dev-{i}")), "dev-{i}: {ids:?}");
    }

    // The ramp, from the workers' own connection records: every full second within
    // 10 % of 200.
    let conns = &s["connections"];
    assert_eq!(u(conns, "opened"), 601, "600 clients and 1 consumer: {s:#}");
    assert_eq!(u(conns, "reconnects"), 0, "{s:#}");
    let per_second: Vec<u64> = conns["per_second"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_u64().unwrap())
        .collect();
    assert!((3..=5).contains(&per_second.len()), "{per_second:?}");
    let full = &per_second[1..per_second.len() - 1];
    assert!(
        full.iter().all(|n| n.abs_diff(200) <= 20),
        "connections per second: {per_second:?}"
    );
    assert!(u(&conns["tcp_connect_us"], "count") >= 601, "{s:#}");
    assert!(u(&s["connect_us"], "count") >= 601, "{s:#}");

    // Sends are spread: no second above twice the mean; the time series says how many
    // clients were connected.
    let cols = columns(&c, &s);
    let sent: Vec<u64> = cols["sent"].iter().map(|v| v.parse().unwrap()).collect();
    let mean = 1800.0 / 6.0;
    assert!(
        sent.iter().all(|n| (*n as f64) <= 2.0 * mean),
        "sends per second: {sent:?}"
    );
    let connected: Vec<u64> = cols["connected"]
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(connected[0], 601, "{connected:?}");
}

#[test]
fn fleet_clients_reconnect_after_a_broker_restart() {
    let c = Cluster::start(1);
    let mut mq = Mosquitto::start().unwrap();
    let cli = c.run_in_background(
        &mq.url("restart", "qos=1"),
        &[
            "--clients",
            "50",
            "--interval",
            "500ms",
            "--duration",
            "10s",
        ],
    );
    assert!(
        c.wait_until_running(1, Duration::from_secs(30)),
        "never running"
    );
    std::thread::sleep(Duration::from_secs(3));
    mq.restart().unwrap();
    let run = cli.join().unwrap();
    let s = run.json().unwrap_or_else(|e| panic!("{e}: {run:?}"));
    let conns = &s["connections"];
    // Every client and the consumer lost its connection once and came back.
    assert!(u(conns, "dropped") >= 51, "{s:#}");
    assert!(u(conns, "reconnects") >= 51, "{s:#}");
    // Sending went on after the restart: the schedule's 1,000 messages were all sent
    // (late ones with their lag), and most arrived.
    assert_eq!(u(&s, "sent") + u(&s, "unsent"), 1000, "{s:#}");
    assert!(u(&s, "sent") >= 950, "{s:#}");
    assert!(u(&s, "received") > 600, "{s:#}");
}

#[test]
fn clients_spread_over_source_addresses_and_broker_nodes() {
    // Two Mosquittos bridged into one cluster: the second forwards everything to the
    // first, so the consumer on node 0 sees every client's messages.
    let a = logging_mosquitto("");
    let b = logging_mosquitto(&format!(
        "connection to-a\naddress 127.0.0.1:{}\ntopic fleet/# out 1\n",
        a.port
    ));
    // The bridge is up once node 0 has seen its connection.
    assert!(
        maestro_testkit::wait_for(Duration::from_secs(10), || a
            .proc
            .log_text()
            .contains(".to-a")),
        "the bridge never connected: {}",
        b.proc.log_text()
    );
    let c = Cluster::start(1);
    // Two URLs that differ only in the port: the nodes of one SUT.
    let node =
        |port: u16| format!("mqtt://127.0.0.1:{port}/x?qos=1&source_ips=127.0.0.2-127.0.0.5");
    let second = node(b.port);
    let (run, s) = c.run_test(
        &node(a.port),
        &[
            "--sut",
            &second,
            "--clients",
            "40",
            "--interval",
            "1s",
            "--duration",
            "3s",
            "--topic",
            "fleet/{i}",
            "--client-id",
            "dev-{i}",
            "--consumers",
            "1",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(u(&s, "sent"), 120, "{s:#}");
    assert_eq!(u(&s, "received"), 120, "{s:#}");
    let on_a = connections(&a);
    let on_b = connections(&b);
    let clients = |v: &[(String, String)]| {
        v.iter()
            .filter(|(_, id)| id.starts_with("dev-"))
            .map(|(ip, _)| ip.clone())
            .collect::<Vec<_>>()
    };
    // Half the clients on each node...
    assert_eq!(clients(&on_a).len(), 20, "{on_a:?}");
    assert_eq!(clients(&on_b).len(), 20, "{on_b:?}");
    // ...from the four source addresses.
    let ips: BTreeSet<String> = clients(&on_a).into_iter().chain(clients(&on_b)).collect();
    let want: BTreeSet<String> = (2..=5).map(|k| format!("127.0.0.{k}")).collect();
    assert_eq!(ips, want);
}

#[test]
fn a_fleet_with_a_certificate_per_client_against_mosquitto_requiring_them() {
    let lab = Lab::new("fleet").unwrap();
    let mq = Mosquitto::start_with(&format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true\nlog_dest stderr\nconnection_messages true",
        lab.file("ca.pem"),
        lab.file("server.pem"),
        lab.file("server.key")
    ))
    .unwrap();
    // Workers read the files a SUT URL names only under --files-dir.
    let c = Cluster::start_with(2, &["--files-dir", lab.dir.to_str().unwrap()]);
    let sut = format!(
        "mqtts://localhost:{}/tls?qos=1&{}",
        mq.port,
        lab.per_client()
    );
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
            "tls/cmd/{i}",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(u(&s, "sent"), 200, "{s:#}");
    assert_eq!(u(&s, "received"), 200, "{s:#}");
    // 101 handshakes (100 clients and the consumer); each client subscribed on its own
    // connection.
    assert_eq!(u(&s["tls_handshake_us"], "count"), 101, "{s:#}");
    assert_eq!(u(&s["subscribe_us"], "count"), 101, "{s:#}");
    // The broker took each client's name from its own certificate.
    let log = mq.proc.log_text();
    assert_eq!(mq.logged_users("meter-").len(), 100, "{log}");
}

#[test]
fn bad_templates_are_usage_errors_that_name_them() {
    let c = Cluster::start(1);
    let mq = Mosquitto::start().unwrap();
    let sut = mq.url("bad", "");
    let bad_json = c.results.join("bad.json");
    std::fs::create_dir_all(&c.results).unwrap();
    std::fs::write(&bad_json, r#"{"t": {maestro}"#).unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["--client-id", "dev"], "\"dev\""),
        (&["--topic", "t/{id}"], "{id}"),
        (&["--topic", "t/+/{i}"], "wildcard"),
        (&["--subscribe", "cmd/{seq}"], "{seq}"),
        (
            &["--payload-template", bad_json.to_str().unwrap()],
            "not valid JSON",
        ),
        (
            &["--payload-template", "/nonexistent/x.json"],
            "/nonexistent/x.json",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec!["start", "--sut", sut.as_str(), "--clients", "10"];
        all.extend_from_slice(args);
        let run = c.cli(&all, Duration::from_secs(30));
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
    // A fleet is MQTT.
    let run = c.cli(
        &["start", "--sut", "amqp://127.0.0.1:1", "--clients", "2"],
        Duration::from_secs(30),
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("mqtt://"), "{}", run.stderr);
}

#[test]
fn churning_clients_disconnect_and_reconnect_every_period() {
    let c = Cluster::start(1);
    let mq = logging_mosquitto("");
    let (run, s) = c.run_test(
        &mq.url("churn", "qos=1"),
        &[
            "--clients",
            "20",
            "--interval",
            "500ms",
            "--churn",
            "1s",
            "--duration",
            "4s",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let conns = &s["connections"];
    // Each client churns about once a second (its first churn spread over one period).
    let churned = u(conns, "churned");
    assert!((40..=100).contains(&churned), "{s:#}");
    assert_eq!(u(conns, "reconnects"), churned, "{s:#}");
    assert_eq!(u(conns, "dropped"), 0, "{s:#}");
    // Nothing is lost across a churn: what was written goes out before DISCONNECT.
    assert_eq!(u(&s, "sent"), 160, "{s:#}");
    assert_eq!(u(&s, "lost"), 0, "{s:#}");
    // The broker saw every reconnect.
    let seen = connections(&mq);
    assert_eq!(seen.len() as u64, 21 + churned, "{seen:?}\n{s:#}");
}

/// A TCP relay to `target` that holds back the broker's first bytes on each connection
/// (its CONNACK) for `delay`: a broker slow to accept connections. Runs until the test
/// process ends.
fn slow_connack_relay(target: u16, delay: Duration) -> u16 {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let pipe = |mut from: TcpStream, mut to: TcpStream, hold: Option<Duration>| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            let mut hold = hold;
            while let Ok(n @ 1..) = from.read(&mut buf) {
                if let Some(d) = hold.take() {
                    std::thread::sleep(d);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    };
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(broker) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            let _ = (client.set_nodelay(true), broker.set_nodelay(true));
            pipe(
                client.try_clone().unwrap(),
                broker.try_clone().unwrap(),
                None,
            );
            pipe(broker, client, Some(delay));
        }
    });
    port
}

#[test]
fn a_broker_slow_to_accept_does_not_keep_churning_clients_from_reconnecting() {
    // Each CONNACK takes 300 ms; each client has a send due every 50 ms. A reconnect must
    // survive the sends that fall due while it waits (it once started over at each one,
    // so a churned client never came back and the broker counted connections the summary
    // did not).
    let c = Cluster::start(1);
    let mq = logging_mosquitto("");
    let relay = slow_connack_relay(mq.port, Duration::from_millis(300));
    let (run, s) = c.run_test(
        &format!("mqtt://127.0.0.1:{relay}/slow?qos=1"),
        &[
            "--clients",
            "5",
            "--interval",
            "50ms",
            "--churn",
            "1s",
            "--duration",
            "4s",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let conns = &s["connections"];
    let churned = u(conns, "churned");
    // Each client churns two or three times (a period, then a period plus the slow CONNACK).
    assert!((8..=20).contains(&churned), "{s:#}");
    assert_eq!(u(conns, "reconnects"), churned, "{s:#}");
    assert_eq!(u(conns, "dropped"), 0, "{s:#}");
    assert_eq!(u(&s, "lost"), 0, "{s:#}");
    // The broker saw every connection the summary counts, and no other: 5 clients and a
    // consumer, then the reconnects.
    let seen = connections(&mq);
    assert_eq!(seen.len() as u64, 6 + churned, "{seen:?}\n{s:#}");
}

#[test]
fn a_fleet_that_cannot_connect_says_why() {
    let c = Cluster::start(1);
    // A free port with nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let run = c.cli(
        &[
            "start",
            "--sut",
            &format!("mqtt://127.0.0.1:{port}/x"),
            "--clients",
            "3",
            "--duration",
            "1s",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(5), "{run:?}");
    assert!(
        run.stderr.contains("refused") && run.stderr.contains(&port.to_string()),
        "{}",
        run.stderr
    );
}

#[test]
fn a_fleet_refused_by_the_broker_says_auth() {
    // Mosquitto with a password file: the right password connects, a wrong one is an
    // authentication failure, said as such.
    let dir = maestro_testkit::test_dir("fleet-auth");
    let passwords = dir.join("passwords");
    let made = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c", passwords.to_str().unwrap(), "meter", "s3cret"])
        .status()
        .unwrap();
    assert!(made.success());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&*dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&passwords, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mq = Mosquitto::start_with(&format!(
        "allow_anonymous false\npassword_file {}",
        passwords.display()
    ))
    .unwrap();
    let c = Cluster::start(1);
    let url = |password: &str| format!("mqtt://meter:{password}@127.0.0.1:{}/auth", mq.port);
    let args = ["--clients", "5", "--interval", "1s", "--duration", "1s"];
    let (run, s) = c.run_test(&url("s3cret"), &args);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(u(&s, "sent"), 5, "{s:#}");
    let mut all = vec!["start", "--sut"];
    let wrong = url("wrong");
    all.push(&wrong);
    all.extend_from_slice(&args);
    let run = c.cli(&all, Duration::from_secs(60));
    assert_eq!(run.code, Some(5), "{run:?}");
    assert!(run.stderr.contains("(auth)"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("wrong"),
        "the password stays secret: {}",
        run.stderr
    );
}

#[test]
fn quiet_clients_stay_connected_by_their_keep_alive() {
    // One message every 3 s with a keep-alive of 1 s: Mosquitto drops a client that is
    // silent for 1.5 keep-alives, so only the clients' PINGREQs keep them connected.
    let c = Cluster::start(1);
    let mq = Mosquitto::start().unwrap();
    let (run, s) = c.run_test(
        &mq.url("quiet", "qos=1&keep_alive=1s"),
        &["--clients", "10", "--interval", "3s", "--duration", "6s"],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let conns = &s["connections"];
    assert_eq!(u(conns, "dropped"), 0, "{s:#}");
    assert_eq!(u(conns, "reconnects"), 0, "{s:#}");
    assert_eq!(u(&s, "sent"), 20, "{s:#}");
    assert_eq!(u(&s, "lost"), 0, "{s:#}");
}

#[test]
fn producers_over_source_addresses_reach_their_topics_consumers() {
    // `source_ips=` puts plain producers on maestro's own clients too: 4 producers on 2
    // topics, each consumer gets every message of its topic.
    let c = Cluster::start(1);
    let mq = Mosquitto::start().unwrap();
    let (run, s) = c.run_test(
        &mq.url("src", "qos=1&source_ips=127.0.0.2-127.0.0.3"),
        &[
            "--producers",
            "4",
            "--consumers",
            "2",
            "--topics",
            "2",
            "--rate",
            "200",
            "--count",
            "400",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(u(&s, "sent"), 400, "{s:#}");
    assert_eq!(u(&s, "received"), 400, "{s:#}");
    assert_eq!(u(&s, "lost"), 0, "{s:#}");
    assert!(s["connections"]["opened"].as_u64().unwrap() >= 6, "{s:#}");
}
