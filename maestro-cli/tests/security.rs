//! A control plane that obeys only its own controllers, with the real binaries: signed
//! notes refuse unsigned, wrongly signed and replayed pings; a TLS control broker with a
//! client CA refuses clients without a certificate; and a whole run over a TLS control
//! plane with signed notes and a TLS system under test loses nothing.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_testkit::{
    CliRun, Cluster, Lab, Mosquitto, TestBroker, run_cli, spawn_peer, unique_cluster, wait_for,
};
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn cli(url: &str, cluster: &str, extra: &[&str], args: &[&str]) -> CliRun {
    let mut all = vec!["-m", url, "--cluster", cluster];
    all.extend_from_slice(extra);
    all.extend_from_slice(args);
    run_cli(&all, T).unwrap()
}

/// `maestro-cli start --sut SUT ARGS -o json` with its own results folder (removed);
/// asserts exit 0 and returns the summary.
fn start_json(url: &str, cluster: &str, extra: &[&str], sut: &str, args: &[&str]) -> Value {
    let results = maestro_testkit::test_dir(&format!("sec-results-{cluster}"));
    let mut all = vec![
        "start",
        "--sut",
        sut,
        "--results",
        results.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let run = cli(url, cluster, extra, &all);
    assert_eq!(run.code, Some(0), "{run:?}");
    run.json().unwrap()
}

/// Pings until `n` peers answer ok.
fn wait_until_answering(url: &str, cluster: &str, extra: &[&str], n: usize) -> bool {
    wait_for(T, || {
        let run = cli(
            url,
            cluster,
            extra,
            &["ping", "-o", "json", "--timeout", "2s"],
        );
        peers(&run).iter().filter(|p| p["status"] == "ok").count() == n
    })
}

fn peers(run: &CliRun) -> Vec<Value> {
    run.json()
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// Captures the payloads published on `filter` (a plain control broker) in a thread;
/// returns once the broker acknowledged the subscription.
fn capture(port: u16, filter: &str) -> std::sync::mpsc::Receiver<(String, Vec<u8>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (subscribed_tx, subscribed) = std::sync::mpsc::channel();
    let mut options =
        rumqttc::MqttOptions::new(format!("spy-{}", fastrand::u32(..)), "127.0.0.1", port);
    options.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut connection) = rumqttc::Client::new(options, 64);
    client.subscribe(filter, rumqttc::QoS::AtMostOnce).unwrap();
    std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    let _ = subscribed_tx.send(());
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    if tx.send((p.topic.clone(), p.payload.to_vec())).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        drop(client);
    });
    subscribed
        .recv_timeout(Duration::from_secs(10))
        .expect("the spy's subscription was acknowledged");
    rx
}

fn publish_raw(port: u16, topic: &str, payload: Vec<u8>) {
    let options =
        rumqttc::MqttOptions::new(format!("replayer-{}", fastrand::u32(..)), "127.0.0.1", port);
    let (client, mut connection) = rumqttc::Client::new(options, 8);
    client
        .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
        .unwrap();
    for event in connection.iter() {
        if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) = event {
            break;
        }
        if event.is_err() {
            break;
        }
    }
    let _ = client.disconnect();
}

#[test]
fn unsigned_wrongly_signed_and_replayed_pings_are_refused() {
    let lab = Lab::new("sign").unwrap();
    let other = Lab::new("other").unwrap();
    let broker = TestBroker::start(&[]).unwrap();
    let url = broker.url();
    let cluster = unique_cluster();
    let c = cluster.to_string();
    let key = lab.dir.to_string_lossy().into_owned();
    let signed = ["--keys", key.as_str()];
    let _worker = spawn_peer("worker", &url, &cluster, &["--name", "w0", "--keys", &key]).unwrap();

    // The right key: the worker answers, and ping says notes are signed.
    let ok = wait_until_answering(&url, &c, &signed, 1);
    assert!(ok, "the worker never answered a signed ping");
    let table = cli(&url, &c, &signed, &["ping", "--timeout", "2s"]);
    assert!(table.stdout.contains("signed notes on"), "{}", table.stdout);

    // Unsigned: refused in silence (a signed error would be a signing oracle): no reply.
    let run = cli(&url, &c, &[], &["ping", "-o", "json", "--timeout", "2s"]);
    assert_eq!(run.code, Some(4), "{run:?}");
    let p = peers(&run);
    assert_eq!(p.len(), 1, "{run:?}");
    assert_eq!(p[0]["status"], "no_reply", "{run:?}");

    // Another cluster's key: refused in silence too.
    let wrong = other.dir.to_string_lossy().into_owned();
    let run = cli(
        &url,
        &c,
        &["--keys", &wrong, "-o", "json"],
        &["ping", "--timeout", "2s"],
    );
    assert_eq!(run.code, Some(4), "{run:?}");
    assert!(peers(&run).iter().all(|p| p["status"] != "ok"), "{run:?}");
    assert!(run.stderr.contains("ignored"), "{run:?}");

    // Replayed: a signed ping captured on the wire and published again.
    let spy = capture(broker.port, &format!("maestro/v1/{c}/#"));
    let run = cli(&url, &c, &signed, &["ping", "--timeout", "2s"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let mut ping = None;
    while let Ok((topic, payload)) = spy.recv_timeout(Duration::from_secs(5)) {
        if topic.contains("/req/") && String::from_utf8_lossy(&payload).contains("\"ping\"") {
            ping = Some((topic, payload));
            break;
        }
    }
    let (topic, payload) = ping.expect("the spy saw the signed ping");
    assert!(String::from_utf8_lossy(&payload).contains("#ed25519:"));
    // The genuine ping's traffic (its pong) is over before the replay.
    while spy.recv_timeout(Duration::from_millis(500)).is_ok() {}
    publish_raw(broker.port, &topic, payload);
    // Nothing answers the replay (the worker counts it, below).
    let answered = wait_for(Duration::from_secs(2), || {
        while let Ok((topic, _)) = spy.recv_timeout(Duration::from_millis(200)) {
            if topic.contains("/reply/") {
                return true;
            }
        }
        false
    });
    assert!(!answered, "the worker answered a replayed ping");

    // A malformed note naming a reply topic gets no (signed) answer either.
    let garbage = format!(
        r#"{{"id":"00000000-0000-0000-0000-000000000001","reply_to":"maestro/v1/{c}/reply/attacker","body":{{"type":"no_such_type"}}}}"#
    );
    publish_raw(broker.port, &topic, garbage.into_bytes());
    let answered = wait_for(Duration::from_secs(2), || {
        while let Ok((topic, _)) = spy.recv_timeout(Duration::from_millis(200)) {
            if topic.contains("/reply/") {
                return true;
            }
        }
        false
    });
    assert!(
        !answered,
        "the worker answered a malformed note in a signed cluster"
    );

    // The worker counted every refusal.
    let stats = cli(
        &url,
        &c,
        &signed,
        &["stats", "-o", "json", "--timeout", "2s"],
    );
    let p = peers(&stats);
    let refused = p[0]["refused_notes"].as_u64().unwrap_or(0);
    assert!(refused >= 3, "{stats:?}");
    assert_eq!(p[0]["signed"], true, "{stats:?}");
}

fn tls_broker(lab: &Lab) -> TestBroker {
    TestBroker::start(&[
        "--tls-cert",
        &lab.file("server.pem"),
        "--tls-key",
        &lab.file("server.key"),
        "--client-ca",
        &lab.file("ca.pem"),
    ])
    .unwrap()
}

#[test]
fn a_tls_control_broker_with_a_client_ca_refuses_clients_without_certificates() {
    let lab = Lab::new("ctl").unwrap();
    let broker = tls_broker(&lab);
    let url = broker.url();
    assert!(url.starts_with("mqtts://"), "{url}");
    let cluster = unique_cluster();
    let c = cluster.to_string();
    let tls = [
        "--ca",
        &lab.file("ca.pem"),
        "--cert",
        &lab.file("server.pem"),
        "--key",
        &lab.file("server.key"),
    ];
    let _worker = spawn_peer(
        "worker",
        &url,
        &cluster,
        &[&["--name", "w0"][..], &tls].concat(),
    )
    .unwrap();
    let ok = wait_until_answering(&url, &c, &tls, 1);
    assert!(ok, "the worker never answered over TLS");
    let table = cli(&url, &c, &tls, &["ping", "--timeout", "2s"]);
    assert!(
        table
            .stdout
            .contains("security: TLS on, client certificate on, signed notes off"),
        "{}",
        table.stdout
    );

    // Trusting the CA is not enough: no client certificate, no connection.
    let run = cli(
        &url,
        &c,
        &["--ca", &lab.file("ca.pem")],
        &["ping", "--timeout", "2s"],
    );
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(
        run.stderr.contains("requires a client certificate"),
        "{}",
        run.stderr
    );
    // Plain MQTT to the TLS port gets nowhere either.
    let plain = url.replace("mqtts://", "mqtt://");
    let run = cli(&plain, &c, &[], &["ping", "--timeout", "2s"]);
    assert_eq!(run.code, Some(3), "{run:?}");
    // TLS flags with a plain URL are a usage error, not silently ignored.
    let run = cli(
        &plain,
        &c,
        &["--ca", &lab.file("ca.pem")],
        &["ping", "--timeout", "2s"],
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("--ca needs an mqtts://"), "{run:?}");

    // A local user who finds the broker's other listener (in /proc/net/tcp, readable by
    // all) and speaks plain MQTT to it, skipping TLS and the client certificate, gets a
    // refusal and no note: it takes only the relay's own login.
    let listeners = tcp_listeners_of(broker.proc.pid());
    let inner: Vec<_> = listeners
        .iter()
        .filter(|a| a.port() != broker.port)
        .collect();
    assert_eq!(inner.len(), 1, "{listeners:?}");
    let inner = inner[0];
    assert_ne!(inner.ip().octets()[..3], [127, 0, 0], "{inner}");
    for login in [&[][..], &["-u", "maestro-relay", "-P", "guess"][..]] {
        let port = inner.port().to_string();
        let host = inner.ip().to_string();
        let mut args = vec![
            "-d",
            "-h",
            host.as_str(),
            "-p",
            port.as_str(),
            "-t",
            "#",
            "-C",
            "1",
            "-W",
            "3",
        ];
        args.extend_from_slice(login);
        let out = maestro_testkit::tool("mosquitto_sub", &args);
        let text = maestro_testkit::output_text(&out);
        // It reached the listener, and rumqttd closed the connection without a CONNACK.
        assert!(!out.status.success(), "{text}");
        assert!(text.contains("sending CONNECT"), "{text}");
        assert!(
            !text.contains("received CONNACK (0)") && !text.contains("received PUBLISH"),
            "{text}"
        );
    }
}

/// The IPv4 TCP listeners of process `pid`: /proc/net/tcp (world-readable) joined with
/// the process's descriptors.
fn tcp_listeners_of(pid: u32) -> Vec<std::net::SocketAddrV4> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
            if *state != "0A" || !inodes.iter().any(|i| i == inode) {
                return None;
            }
            let (ip, port) = local.split_once(':')?;
            let ip = u32::from_str_radix(ip, 16).ok()?;
            let port = u16::from_str_radix(port, 16).ok()?;
            Some(std::net::SocketAddrV4::new(
                std::net::Ipv4Addr::from(ip.to_le_bytes()),
                port,
            ))
        })
        .collect()
}

#[test]
fn a_run_over_tls_control_and_signed_notes_to_a_tls_sut_loses_nothing() {
    let lab = Lab::new("full").unwrap();
    let broker = tls_broker(&lab);
    let url = broker.url();
    let cluster = unique_cluster();
    let c = cluster.to_string();
    let key = lab.dir.to_string_lossy().into_owned();
    let control = [
        "--ca",
        &lab.file("ca.pem"),
        "--cert",
        &lab.file("server.pem"),
        "--key",
        &lab.file("server.key"),
        "--keys",
        &key,
    ];
    let _workers: Vec<_> = (0..2)
        .map(|i| {
            let name = format!("w{i}");
            spawn_peer(
                "worker",
                &url,
                &cluster,
                &[
                    &["--name", name.as_str(), "--files-dir", key.as_str()][..],
                    &control,
                ]
                .concat(),
            )
            .unwrap()
        })
        .collect();
    let ready = wait_until_answering(&url, &c, &control, 2);
    assert!(ready, "workers did not come up over TLS");
    let mq = Mosquitto::start_with(&format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true",
        lab.file("ca.pem"),
        lab.file("server.pem"),
        lab.file("server.key")
    ))
    .unwrap();
    let sut = format!(
        "mqtts://localhost:{}/full?qos=1&ca={}&client_ca={}&client_ca_key={}",
        mq.port,
        lab.file("ca.pem"),
        lab.file("ca.pem"),
        lab.file("ca.key")
    );
    let s = start_json(
        &url,
        &c,
        &control,
        &sut,
        &[
            "--rate",
            "2000",
            "--count",
            "4000",
            "--producers",
            "2",
            "--consumers",
            "2",
        ],
    );
    assert_eq!(s["sent"], 4000, "{s:#}");
    assert_eq!(s["received"], 8000, "{s:#}");
    assert_eq!(s["lost"], 0, "{s:#}");
    assert_eq!(s["duplicated"], 0, "{s:#}");
    assert_eq!(s["degraded"], false, "{s:#}");
    assert_eq!(s["tls_handshake_us"]["count"], 4, "{s:#}");
}

#[test]
fn an_external_mosquitto_with_the_shipped_acl_carries_a_signed_cluster() {
    let lab = Lab::new("acl").unwrap();
    let passwords = lab.dir.join("passwords");
    let pw = passwords.to_str().unwrap();
    for (i, (user, password)) in [
        ("maestro-peer", "peer-pw"),
        ("maestro-controller", "ctl-pw"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut args = vec!["-b"];
        if i == 0 {
            args.push("-c");
        }
        args.extend([pw, user, password]);
        let out = maestro_testkit::tool("mosquitto_passwd", &args);
        assert!(
            out.status.success(),
            "{}",
            maestro_testkit::output_text(&out)
        );
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&passwords, std::fs::Permissions::from_mode(0o644)).unwrap();
    let acl = maestro_testkit::repo_root().join("deploy/mosquitto/maestro.acl");
    let control = Mosquitto::start_with(&format!(
        "allow_anonymous false\npassword_file {pw}\nacl_file {}",
        acl.display()
    ))
    .unwrap();
    let at =
        |user: &str, password: &str| format!("mqtt://{user}:{password}@127.0.0.1:{}", control.port);
    let cluster = unique_cluster();
    let c = cluster.to_string();
    let key = lab.dir.to_string_lossy().into_owned();
    let signed = ["--keys", key.as_str()];
    let _worker = spawn_peer(
        "worker",
        &at("maestro-peer", "peer-pw"),
        &cluster,
        &["--name", "w0", "--keys", &key],
    )
    .unwrap();
    let controller = at("maestro-controller", "ctl-pw");
    let ok = wait_until_answering(&controller, &c, &signed, 1);
    assert!(ok, "the worker never answered through Mosquitto's ACL");

    // A whole run: configure, start, stats, results all pass the ACL.
    let sut = Mosquitto::start().unwrap();
    let s = start_json(
        &controller,
        &c,
        &signed,
        &sut.url("acl", "qos=1"),
        &["--count", "500", "--rate", "1000"],
    );
    assert_eq!(
        (s["sent"].as_u64(), s["lost"].as_u64()),
        (Some(500), Some(0)),
        "{s:#}"
    );

    // The peer account cannot act as a controller: it reads no presence.
    let run = cli(
        &at("maestro-peer", "peer-pw"),
        &c,
        &signed,
        &["ping", "--timeout", "2s"],
    );
    assert_eq!(run.code, Some(4), "{run:?}");
}

/// Publishes `payload` with mosquitto_pub (a third-party client, as an attacker would).
fn mosquitto_pub(port: u16, topic: &str, payload: &[u8]) {
    let dir = maestro_testkit::test_dir("forged");
    let file = dir.join("forged.json");
    std::fs::write(&file, payload).unwrap();
    let out = std::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
        ])
        .arg("-f")
        .arg(&file)
        .output()
        .expect("mosquitto_pub (apt-get install mosquitto-clients)");
    let _ = std::fs::remove_file(&file);
    assert!(out.status.success(), "mosquitto_pub: {out:?}");
}

/// An HdrHistogram V2 header (compressed form) that claims a 4 GiB payload and carries 8
/// bytes: the deserializer used to allocate what the header claimed.
fn forged_histogram() -> String {
    use base64::Engine;
    let mut inner = Vec::new();
    inner.extend(0x1c84_9313u32.to_be_bytes());
    inner.extend(u32::MAX.to_be_bytes());
    inner.extend(0u32.to_be_bytes());
    inner.extend(3u32.to_be_bytes());
    inner.extend(1u64.to_be_bytes());
    inner.extend(3_600_000_000u64.to_be_bytes());
    inner.extend(1.0f64.to_be_bytes());
    inner.extend([0u8; 8]);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut z, &inner).unwrap();
    let body = z.finish().unwrap();
    let mut b = 0x1c84_9314u32.to_be_bytes().to_vec();
    b.extend((body.len() as u32).to_be_bytes());
    b.extend(body);
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// During a run, a stranger publishes ten `run_stats` notes naming it (sender "forger",
/// histograms whose headers claim 4 GiB, counters at 2^63), then the same as if from a
/// real worker. The controller used to grow to 4 GiB and exit 3 with no summary; now the
/// run finishes, its figures are the workers' own, and the controller stays small.
#[test]
fn forged_stats_notes_neither_crash_the_controller_nor_count() {
    let c = Cluster::start(1);
    let mq = Mosquitto::start().unwrap();
    let spy = capture(c.broker.port, "#");
    let cli = c.run_in_background(
        &mq.url("forged", "qos=1"),
        &["--rate", "500", "--duration", "5s"],
    );
    // A genuine stats note shows the topic and the shape to forge.
    let (topic, genuine) = loop {
        let (topic, payload) = spy
            .recv_timeout(Duration::from_secs(30))
            .expect("a run_stats note within 30 s");
        if String::from_utf8_lossy(&payload).contains("\"run_stats\"") {
            break (topic, payload);
        }
    };
    let genuine: Value = serde_json::from_slice(&genuine).unwrap();
    let histogram = forged_histogram();
    let forge = |sender: Option<&Value>| {
        let mut note = genuine.clone();
        if let Some(s) = sender {
            note["sender"] = s.clone();
        } else {
            note["sender"]["id"] = "forger".into();
            note["sender"]["name"] = "forger".into();
        }
        let body = note
            .as_object_mut()
            .unwrap()
            .values_mut()
            .find(|v| v.get("counters").is_some())
            .expect("the body with counters");
        for (_, v) in body["counters"].as_object_mut().unwrap() {
            *v = Value::from(1u64 << 63);
        }
        for (_, v) in body["histograms"].as_object_mut().unwrap() {
            if v.is_string() {
                *v = Value::from(histogram.clone());
            }
        }
        note["id"] = uuid_like().into();
        serde_json::to_vec(&note).unwrap()
    };
    let controller = controller_pid();
    for _ in 0..10 {
        mosquitto_pub(c.broker.port, &topic, &forge(None));
    }
    for _ in 0..10 {
        mosquitto_pub(c.broker.port, &topic, &forge(Some(&genuine["sender"])));
    }
    let rss_kb = controller
        .and_then(rss_kb)
        .expect("the controller's peak memory (VmHWM)");
    eprintln!("controller peak memory {rss_kb} KiB");
    let run = cli.join().unwrap();
    assert_eq!(run.code, Some(0), "{run:?}");
    let s = run.json().unwrap();
    // 500/s for 5 s: the workers' count, not 2^63.
    let sent = s["sent"].as_u64().unwrap();
    assert!((2_400..=2_600).contains(&sent), "sent {sent}: {s:#}");
    assert_eq!(s["lost"], 0, "{s:#}");
    assert!(rss_kb < 512 * 1024, "the controller grew to {rss_kb} KiB");
    assert!(
        run.stderr.contains("refused a stats or result note"),
        "the refusal is logged: {}",
        run.stderr
    );
}

fn uuid_like() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// The newest `maestro-cli start` of this process's children, if any.
fn controller_pid() -> Option<u32> {
    let me = std::process::id().to_string();
    let out = std::process::Command::new("pgrep")
        .args(["-n", "-P", &me, "-x", "maestro-cli"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// A stranger on an unsigned control broker replays a captured `configure` with a Kafka
/// SUT URL that would make librdkafka load a library (`plugin.library.paths`): the worker
/// refuses it by name, and nothing is loaded. Then with a SUT URL naming a file outside
/// the worker's --files-dir (`ca=/etc/passwd`): refused by name, the file is not read.
#[test]
fn a_configure_whose_sut_url_would_load_a_library_or_read_a_file_is_refused_by_the_worker() {
    let files = maestro_testkit::test_dir("files");
    let c = Cluster::start_with(1, &["--files-dir", files.to_str().unwrap()]);
    let mq = Mosquitto::start().unwrap();
    let spy = capture(c.broker.port, "#");
    let (run, _) = c.run_test(&mq.url("capture", "qos=0"), &["--count", "10"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let (topic, configure) = std::iter::from_fn(|| spy.recv_timeout(Duration::from_secs(5)).ok())
        .find(|(_, p)| String::from_utf8_lossy(p).contains("\"configure\""))
        .expect("the run's configure note");
    let mut note: Value = serde_json::from_slice(&configure).unwrap();
    let marker = std::env::temp_dir().join(format!("evil-{}.so", fastrand::u64(..)));
    let evil = format!(
        "kafka://127.0.0.1:9/x?plugin.library.paths={}",
        marker.display()
    );
    // Another run (the captured one is over), the same controller, the evil URL.
    let old_run = note["body"]["run"].as_str().unwrap().to_owned();
    let new_run = format!("{}-evil", &old_run);
    let text = serde_json::to_string(&note)
        .unwrap()
        .replace(&old_run, &new_run);
    note = serde_json::from_str(&text).unwrap();
    note["body"]["spec"]["sut"] = Value::from(evil);
    note["id"] = Value::from(uuid_like());
    if let Some(ts) = note.get("sent_at_us").and_then(Value::as_i64) {
        note["sent_at_us"] = Value::from(ts + 1);
    }
    mosquitto_pub(c.broker.port, &topic, &serde_json::to_vec(&note).unwrap());
    let reply = std::iter::from_fn(|| spy.recv_timeout(Duration::from_secs(10)).ok())
        .map(|(_, p)| String::from_utf8_lossy(&p).into_owned())
        .find(|p| p.contains("plugin.library.paths") && !p.contains("\"type\":\"configure\""))
        .expect("the worker's refusal, naming the property");
    assert!(reply.contains("refused"), "{reply}");
    assert!(!marker.exists());

    // A file outside --files-dir, and one inside it reached through '..'.
    for (i, path) in [
        "/etc/passwd".to_owned(),
        format!("{}/../../etc/passwd", files.display()),
    ]
    .into_iter()
    .enumerate()
    {
        let text = serde_json::to_string(&note)
            .unwrap()
            .replace(&new_run, &format!("{new_run}-file{i}"));
        let mut note: Value = serde_json::from_str(&text).unwrap();
        note["body"]["spec"]["sut"] = Value::from(format!("mqtts://127.0.0.1:9/x?ca={path}"));
        note["id"] = Value::from(uuid_like());
        if let Some(ts) = note.get("sent_at_us").and_then(Value::as_i64) {
            note["sent_at_us"] = Value::from(ts + 2 + i as i64);
        }
        mosquitto_pub(c.broker.port, &topic, &serde_json::to_vec(&note).unwrap());
        let reply = std::iter::from_fn(|| spy.recv_timeout(Duration::from_secs(10)).ok())
            .map(|(_, p)| String::from_utf8_lossy(&p).into_owned())
            .find(|p| p.contains("--files-dir") && !p.contains("\"type\":\"configure\""))
            .expect("the worker's refusal, naming the file");
        assert!(
            reply.contains("passwd") && reply.contains("not under"),
            "{reply}"
        );
    }
    // The worker is still idle and answers.
    let run = c.cli(&["stats", "-o", "json"], T);
    assert!(run.stdout.contains("idle"), "{run:?}");
}

/// Runs a test with many clients (so configuring takes a while) and, as soon as the
/// `configure` request shows on the broker, answers it with a forged `error` reply from
/// `sender` carrying the request's id. Returns the CLI's run.
fn run_with_forged_configure_reply(as_the_worker: bool) -> CliRun {
    let c = Cluster::start(1);
    let mq = Mosquitto::start().unwrap();
    let spy = capture(c.broker.port, "#");
    let cli = c.run_in_background(
        &mq.url("forged-reply", "qos=0"),
        &["--count", "200", "--producers", "100", "--consumers", "100"],
    );
    let configure = std::iter::from_fn(|| spy.recv_timeout(Duration::from_secs(30)).ok())
        .find(|(_, p)| String::from_utf8_lossy(p).contains("\"type\":\"configure\""))
        .expect("the run's configure note");
    let request: Value = serde_json::from_slice(&configure.1).unwrap();
    let reply_to = request["reply_to"].as_str().unwrap().to_owned();
    // The request's topic ends with the worker's id.
    let worker_id = configure.0.rsplit('/').next().unwrap().to_owned();
    let from = if as_the_worker {
        serde_json::json!({"id": worker_id, "name": "w0", "role": "worker"})
    } else {
        serde_json::json!({"id": "forger", "name": "forger", "role": "worker"})
    };
    let forged = serde_json::json!({
        "version": request["version"],
        "id": format!("{:08x}-0000-4000-8000-{:012x}", fastrand::u32(..), fastrand::u64(..) & 0xffff_ffff_ffff),
        "correlation_id": request["id"],
        "sender": from,
        "sent_at_us": request["sent_at_us"],
        "body": {"type": "error", "code": "sut_unreachable", "message": "forged by a stranger"},
    });
    publish_raw(
        c.broker.port,
        &reply_to,
        serde_json::to_vec(&forged).unwrap(),
    );
    cli.join().unwrap()
}

/// A stranger answers a run's `configure` with an error carrying the request's id: the
/// controller matched replies by correlation id alone and failed the run on it. Now a reply
/// counts only from the peer the request went to, and the run finishes. (The same note
/// with the worker's own id, which only signed notes can tell apart, still fails the run:
/// the forged note is one the controller would act on.)
#[test]
fn a_forged_reply_from_a_peer_the_request_did_not_go_to_is_ignored() {
    let run = run_with_forged_configure_reply(false);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains("did not go to"), "{}", run.stderr);
    let run = run_with_forged_configure_reply(true);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(
        run.stderr.contains("forged by a stranger"),
        "{}",
        run.stderr
    );
}

/// A SUT password (and any secret-valued option) never reaches a file of the results
/// folder: spec.json, summary.json, the report and the rest hold it as `***`.
#[test]
fn sut_secrets_stay_out_of_the_results_folder() {
    let c = Cluster::start(1);
    let mq = Mosquitto::start().unwrap();
    let url = mq
        .url("secret", "qos=1")
        .replacen("mqtt://", "mqtt://user:s3cr3t%2Fpw@", 1);
    let (run, s) = c.run_test(&url, &["--count", "50"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(s["lost"], 0, "{s:#}");
    let mut files = vec![c.results.clone()];
    let mut seen = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        } else {
            seen += 1;
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
            assert!(
                !text.contains("s3cr3t"),
                "{} holds the password",
                p.display()
            );
        }
    }
    assert!(seen >= 3, "only {seen} files written");
    assert!(!run.stdout.contains("s3cr3t") && !run.stderr.contains("s3cr3t"));
}

/// A `configure` too large for a note (100,000 consumers on one worker) is
/// refused before anything is sent, with the numbers: exit 2, and the worker stays idle.
#[test]
fn a_configure_over_the_note_limit_is_refused_before_sending() {
    let c = Cluster::start(1);
    let mq = Mosquitto::start().unwrap();
    let run = c.cli(
        &[
            "start",
            "--sut",
            &mq.url("huge", "qos=0"),
            "--count",
            "1",
            "--consumers",
            "100000",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("configure note would be")
            && run
                .stderr
                .contains(&maestro_protocol::MAX_NOTE_BYTES.to_string()),
        "{}",
        run.stderr
    );
    // Nothing reached the worker: it is idle and answers.
    let stats = c.cli(&["stats", "-o", "json"], Duration::from_secs(10));
    assert_eq!(stats.code, Some(0), "{stats:?}");
    assert!(stats.stdout.contains("idle"), "{}", stats.stdout);
}

/// A stranger opens 300 TCP connections to the TLS control broker and never starts a
/// handshake: beyond 256 under way, the broker closes new connections at once instead of
/// holding each for the 10 s handshake deadline; once the hogs leave, clients connect.
#[test]
fn tls_handshakes_under_way_are_capped() {
    use std::io::Read;
    let lab = Lab::new("hog").unwrap();
    let broker = tls_broker(&lab);
    let hogs: Vec<std::net::TcpStream> = (0..256)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", broker.port)).unwrap())
        .collect();
    let timed_out = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    };
    // Once the broker has taken the 256 in, a further connection is closed at once
    // (end of stream or a reset); before that it may get a slot and be held.
    let mut more = Vec::new();
    let mut buf = [0u8; 1];
    let closed = wait_for(Duration::from_secs(10), || {
        let mut extra = std::net::TcpStream::connect(("127.0.0.1", broker.port)).unwrap();
        extra
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let closed = match extra.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !timed_out(&e),
        };
        more.push(extra);
        closed
    });
    assert!(closed, "the 257th connection was held, not closed");
    drop(hogs);
    drop(more);
    // With the hogs gone, a TLS client is served again.
    let served = wait_for(Duration::from_secs(10), || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", broker.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        // A handshake is under way: the broker waits for the ClientHello (no EOF).
        matches!(s.read(&mut buf), Err(ref e) if timed_out(e))
    });
    assert!(served, "new connections are not served after the hogs left");
}

/// The id of the worker named `name`, from a signed ping.
fn peer_id(url: &str, cluster: &str, keys: &[&str], name: &str) -> String {
    let run = cli(
        url,
        cluster,
        keys,
        &["ping", "-o", "json", "--timeout", "3s"],
    );
    peers(&run)
        .into_iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no peer {name}: {run:?}"))
}

#[test]
fn a_peers_keys_cannot_command_the_cluster_and_readable_private_keys_are_refused() {
    let lab = Lab::new("roles").unwrap();
    let broker = TestBroker::start(&[]).unwrap();
    let url = broker.url();
    let cluster = unique_cluster();
    let c = cluster.to_string();
    let keys = lab.dir.to_string_lossy().into_owned();
    let signed = ["--keys", keys.as_str()];
    // The worker gets only what a worker needs.
    let peer_dir = lab.dir.join("peer-only");
    std::fs::create_dir(&peer_dir).unwrap();
    for f in ["peer.key", "controller.pub"] {
        std::fs::copy(lab.dir.join(f), peer_dir.join(f)).unwrap();
    }
    let peer_keys = peer_dir.to_string_lossy().into_owned();
    let mut worker = spawn_peer(
        "worker",
        &url,
        &cluster,
        &["--name", "w0", "--keys", &peer_keys],
    )
    .unwrap();
    assert!(wait_until_answering(&url, &c, &signed, 1), "no signed pong");

    // An attacker holding everything a worker holds: it signs with the peer key, as if
    // it were the controller key. The worker is not commanded.
    let stolen = lab.dir.join("stolen");
    std::fs::create_dir(&stolen).unwrap();
    std::fs::copy(peer_dir.join("peer.key"), stolen.join("controller.key")).unwrap();
    std::fs::copy(lab.dir.join("peer.pub"), stolen.join("peer.pub")).unwrap();
    let stolen = stolen.to_string_lossy().into_owned();
    let run = cli(&url, &c, &["--keys", &stolen], &["halt", "--timeout", "2s"]);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(
        worker.wait_exit(Duration::from_secs(2)).is_err(),
        "a halt signed with the peer key stopped the worker"
    );
    let stats = cli(
        &url,
        &c,
        &signed,
        &["stats", "-o", "json", "--timeout", "2s"],
    );
    let p = peers(&stats);
    assert!(
        p[0]["refused_notes"].as_u64().unwrap_or(0) >= 1,
        "{stats:?}"
    );

    // A private key its group can read: the worker refuses to start, and says why.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        peer_dir.join("peer.key"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let mut refused = spawn_peer(
        "worker",
        &url,
        &cluster,
        &["--name", "w1", "--keys", &peer_keys],
    )
    .unwrap();
    assert_eq!(refused.wait_exit(Duration::from_secs(10)).unwrap(), Some(2));
    let log = refused.log_text();
    assert!(log.contains("peer.key") && log.contains("0640"), "{log}");
    assert!(log.contains("chmod 600"), "{log}");
    // A controller that lacks peer.pub says which file a controller needs.
    let run = cli(
        &url,
        &c,
        &["--keys", &peer_keys],
        &["ping", "--timeout", "2s"],
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr
            .contains("controller needs controller.key and peer.pub"),
        "{run:?}"
    );
}

#[test]
fn a_signed_halt_for_one_peer_replayed_to_another_topic_is_refused() {
    let lab = Lab::new("bind").unwrap();
    let broker = TestBroker::start(&[]).unwrap();
    let url = broker.url();
    let cluster = unique_cluster();
    let c = cluster.to_string();
    let keys = lab.dir.to_string_lossy().into_owned();
    let signed = ["--keys", keys.as_str()];
    let mut a = spawn_peer("worker", &url, &cluster, &["--name", "a", "--keys", &keys]).unwrap();
    let mut b = spawn_peer("worker", &url, &cluster, &["--name", "b", "--keys", &keys]).unwrap();
    assert!(
        wait_until_answering(&url, &c, &signed, 2),
        "no signed pongs"
    );
    let a_id = peer_id(&url, &c, &signed, "a");

    // The controller halts A; a spy on the broker captures the signed note.
    let spy = capture(broker.port, &format!("maestro/v1/{c}/req/#"));
    let run = cli(
        &url,
        &c,
        &signed,
        &["halt", "--peer", &a_id, "--timeout", "3s"],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(a.wait_exit(Duration::from_secs(10)).unwrap(), Some(0));
    let (topic, payload) = spy
        .recv_timeout(Duration::from_secs(5))
        .expect("the spy saw the halt");
    assert!(topic.ends_with(&format!("/req/peer/{a_id}")), "{topic}");
    assert!(String::from_utf8_lossy(&payload).contains("\"halt\""));

    // Published again, at once (well inside the replay window), to everyone, to workers,
    // to B's group and to B itself, with a third-party client: B is not halted.
    let b_id = peer_id(&url, &c, &signed, "b");
    for target in [
        "req/all".to_owned(),
        "req/role/worker".to_owned(),
        "req/group/all".to_owned(),
        format!("req/peer/{b_id}"),
    ] {
        mosquitto_pub(broker.port, &format!("maestro/v1/{c}/{target}"), &payload);
    }
    assert!(
        b.wait_exit(Duration::from_secs(3)).is_err(),
        "a halt signed for A halted B"
    );
    let stats = cli(
        &url,
        &c,
        &signed,
        &["stats", "-o", "json", "--timeout", "2s"],
    );
    let p = peers(&stats);
    assert_eq!(p.len(), 1, "{stats:?}");
    assert_eq!(p[0]["name"], "b", "{stats:?}");
    assert!(
        p[0]["refused_notes"].as_u64().unwrap_or(0) >= 4,
        "{stats:?}"
    );
}

#[test]
fn a_peer_beyond_loopback_without_keys_refuses_to_start_unless_insecure() {
    let cluster = unique_cluster();
    // TEST-NET-1: never reached; the refusal comes before any connection.
    let far = "mqtt://192.0.2.1:1883";
    for role in ["worker", "inspector"] {
        let mut p = spawn_peer(role, far, &cluster, &["--name", "far"]).unwrap();
        assert_eq!(
            p.wait_exit(Duration::from_secs(10)).unwrap(),
            Some(2),
            "{role}"
        );
        let log = p.log_text();
        assert!(
            log.contains("not on this machine") && log.contains("--keys DIR"),
            "{log}"
        );
        assert!(log.contains("--insecure"), "{log}");
    }
    // --insecure: it starts, and says loudly what that means.
    let mut p = spawn_peer("worker", far, &cluster, &["--name", "far", "--insecure"]).unwrap();
    let warned = wait_for(Duration::from_secs(10), || {
        p.log_text().contains("obeys unsigned notes")
    });
    assert!(warned, "{}", p.log_text());
    assert!(
        p.wait_exit(Duration::from_millis(500)).is_err(),
        "it exited"
    );
    // Keys and --insecure together make no sense: refused by the argument parser.
    let lab = Lab::new("far").unwrap();
    let keys = lab.dir.to_string_lossy().into_owned();
    let mut both = spawn_peer("worker", far, &cluster, &["--insecure", "--keys", &keys]).unwrap();
    assert_eq!(both.wait_exit(Duration::from_secs(10)).unwrap(), Some(2));
}

/// Ids are in every note: an attacker reads the controller's and the worker's from the
/// topic tree and connects with them as MQTT client ids, again and again during a run.
/// MQTT gives a client id to its newest connection; the client ids carry a random part, so
/// nobody is thrown off and the run loses nothing.
#[test]
fn a_client_connecting_with_ids_read_from_notes_cuts_no_session() {
    let c = Cluster::start(1);
    let mq = Mosquitto::start().unwrap();
    let spy = capture(c.broker.port, &format!("maestro/v1/{}/#", c.cluster));
    let cli = c.run_in_background(
        &mq.url("takeover", "qos=1"),
        &["--rate", "500", "--count", "3000"],
    );
    // The controller announces itself on controller/<id>; the worker's presence names it.
    let (mut controller, mut worker) = (None, None);
    let deadline = std::time::Instant::now() + T;
    while (controller.is_none() || worker.is_none()) && std::time::Instant::now() < deadline {
        let Ok((topic, _)) = spy.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        let segments: Vec<&str> = topic.split('/').collect();
        match segments.get(3..) {
            Some(["controller", id]) => controller = Some(id.to_string()),
            Some(["presence", id]) => worker = Some(id.to_string()),
            _ => {}
        }
    }
    let ids = [
        controller.expect("the controller's id"),
        worker.expect("the worker's id"),
    ];
    // Six rounds of taking each id over for half a second, while the run goes on.
    for _ in 0..6 {
        for id in &ids {
            let _ = std::process::Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &c.broker.port.to_string()])
                .args(["-i", id, "-t", "nothing/here", "-W", "1"])
                .output()
                .expect("mosquitto_sub (apt-get install mosquitto-clients)");
        }
    }
    let run = cli.join().unwrap();
    assert_eq!(run.code, Some(0), "{run:?}");
    let s = run.json().unwrap();
    assert_eq!(
        (
            s["sent"].as_u64(),
            s["received"].as_u64(),
            s["lost"].as_u64()
        ),
        (Some(3000), Some(3000), Some(0)),
        "{s:#}"
    );
    assert!(
        !run.stderr.contains("connection lost"),
        "the controller was thrown off: {}",
        run.stderr
    );
    let log = std::fs::read_to_string(&c.workers[0].log).unwrap();
    assert!(
        !log.contains("unreachable"),
        "the worker was thrown off: {log}"
    );
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let (mut todo, mut files) = (vec![dir.to_path_buf()], Vec::new());
    while let Some(p) = todo.pop() {
        if p.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        } else {
            files.push(p);
        }
    }
    files
}

/// The SUT's password from a file or the environment, never on the command line: runs
/// against a Mosquitto that demands it pass with either, a wrong one fails naming the SUT,
/// a URL without a user is a usage error, and no file of the results holds the password.
#[test]
fn sut_credentials_come_from_a_file_or_the_environment() {
    let lab = Lab::new("sutpw").unwrap();
    let passwords = lab.dir.join("passwords");
    let pw = passwords.to_str().unwrap();
    let secret = "Pw/with?odd#chars:%";
    let out = maestro_testkit::tool("mosquitto_passwd", &["-b", "-c", pw, "bench", secret]);
    assert!(
        out.status.success(),
        "{}",
        maestro_testkit::output_text(&out)
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&passwords, std::fs::Permissions::from_mode(0o644)).unwrap();
    let sut = Mosquitto::start_with(&format!("allow_anonymous false\npassword_file {pw}")).unwrap();
    let url = sut
        .url("pw", "qos=1")
        .replacen("mqtt://", "mqtt://bench@", 1);
    let c = Cluster::start(1);
    let secret_file = lab.dir.join("sut-password");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();

    // From a file.
    let (run, s) = c.run_test(
        &url,
        &[
            "--count",
            "200",
            "--sut-password-file",
            secret_file.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        (s["sent"].as_u64(), s["lost"].as_u64()),
        (Some(200), Some(0)),
        "{s:#}"
    );

    // From the environment.
    let results = c.results.to_str().unwrap().to_owned();
    let broker = c.broker.url();
    let env_run = |password: &str| {
        std::process::Command::new(maestro_testkit::binary("maestro-cli").unwrap())
            .args([
                "-m",
                &broker,
                "--cluster",
                &c.cluster,
                "start",
                "--sut",
                &url,
                "--count",
                "200",
                "--results",
                &results,
                "-o",
                "json",
                "--timeout",
                "10s",
            ])
            .env("MAESTRO_SUT_PASSWORD", password)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = env_run(secret);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        maestro_testkit::output_text(&out)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (s["sent"].as_u64(), s["lost"].as_u64()),
        (Some(200), Some(0)),
        "{s:#}"
    );

    // A wrong password: the run fails and says which SUT refused it.
    let out = env_run("not-the-password");
    let text = maestro_testkit::output_text(&out);
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{}", sut.port)), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");

    // No user to go with the password: a usage error before anything is sent.
    let bare = sut.url("pw", "qos=1");
    let run = c.cli(
        &[
            "start",
            "--sut",
            &bare,
            "--count",
            "10",
            "--results",
            &results,
            "--sut-password-file",
            secret_file.to_str().unwrap(),
        ],
        T,
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("names no user"), "{}", run.stderr);

    // Nothing written holds the password, whole or in part.
    let files = walk(&c.results);
    assert!(files.len() >= 6, "only {} files written", files.len());
    for f in files {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert!(
            !text.contains("Pw/with") && !text.contains("Pw%2Fwith"),
            "{} holds the password",
            f.display()
        );
    }
}

/// Behind TLS the relay checks each client's own login against the broker's users
/// (rumqttd's inner listener takes only the relay's): right password in, wrong password and
/// anonymous refused with the broker's answer.
#[test]
fn a_tls_control_broker_with_users_checks_each_clients_login() {
    let lab = Lab::new("tlsauth").unwrap();
    let users = lab.dir.join("users");
    std::fs::write(&users, "alice:s3cret\n").unwrap();
    let broker = TestBroker::start(&[
        "--tls-cert",
        &lab.file("server.pem"),
        "--tls-key",
        &lab.file("server.key"),
        "--auth-file",
        users.to_str().unwrap(),
    ])
    .unwrap();
    let cluster = unique_cluster();
    let c = cluster.to_string();
    let tls = ["--ca", &lab.file("ca.pem")];
    let good = broker.url_as("alice", "s3cret");
    let _worker = spawn_peer(
        "worker",
        &good,
        &cluster,
        &[&["--name", "w0"][..], &tls].concat(),
    )
    .unwrap();
    assert!(
        wait_until_answering(&good, &c, &tls, 1),
        "the worker never answered"
    );
    for (url, says) in [
        (
            broker.url_as("alice", "wrong"),
            "wrong username or password",
        ),
        (broker.url(), "username and password"),
    ] {
        let run = cli(&url, &c, &tls, &["ping", "--timeout", "3s"]);
        assert_eq!(run.code, Some(3), "{run:?}");
        assert!(run.stderr.contains(says), "{}", run.stderr);
    }
}

/// Results survive a kill: `kill -9` of the controller mid-run leaves a folder with the
/// run's skeleton, its spec, and the time series and interval logs flushed each second;
/// `maestro-cli report` turns it into a summary marked partial (exit 4).
#[test]
fn a_controller_killed_mid_run_leaves_a_folder_report_makes_a_partial_summary_of() {
    let c = Cluster::start(1);
    let mq = Mosquitto::start().unwrap();
    let cli_proc = c.spawn_start(
        &mq.url("kill9", "qos=1"),
        &["--rate", "500", "--duration", "60s"],
    );
    let series_rows = || {
        std::fs::read_dir(&c.results)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.is_dir())
            .and_then(|run| {
                let text = std::fs::read_to_string(run.join("timeseries.csv")).ok()?;
                Some((run, text.lines().count().saturating_sub(1)))
            })
    };
    assert!(
        wait_for(Duration::from_secs(30), || series_rows()
            .is_some_and(|(_, n)| n >= 4)),
        "no time series: {}",
        cli_proc.log_text()
    );
    cli_proc.signal(maestro_testkit::signal::SIGKILL);
    let (run, rows) = series_rows().unwrap();
    assert!(!run.join("summary.json").exists());
    for f in ["begun.json", "spec.json", "timeseries.csv", "w0.hlog"] {
        assert!(run.join(f).is_file(), "{f} missing: {:?}", walk(&run));
    }
    assert!(
        walk(&run)
            .iter()
            .all(|f| !f.to_string_lossy().ends_with(".part")),
        "a half-written file: {:?}",
        walk(&run)
    );

    let report = run_cli(&["report", run.to_str().unwrap(), "-o", "json"], T).unwrap();
    assert_eq!(report.code, Some(4), "{report:?}");
    let s = report.json().unwrap();
    let seconds = s["partial"]["seconds"].as_u64().unwrap();
    assert!(seconds as usize >= rows, "{s:#}");
    assert!(s["sent"].as_u64().unwrap() >= 4 * 400, "{s:#}");
    assert!(s["received"].as_u64().unwrap() > 0, "{s:#}");
    assert!(
        s["response_time_us"]["count"].as_u64().unwrap() > 0,
        "{s:#}"
    );
    assert_eq!(s["degraded"], true);
    assert!(
        s["degraded_reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("partial:"),
        "{s:#}"
    );
    assert_eq!(s["workers"][0]["name"], "w0", "{s:#}");
    // Written whole, and read back by the strict reader.
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(written["partial"]["seconds"], s["partial"]["seconds"]);
    let again = run_cli(&["report", run.to_str().unwrap()], T).unwrap();
    assert_eq!(again.code, Some(4), "{again:?}");
    assert!(again.stdout.contains("sent"), "{again:?}");
}
