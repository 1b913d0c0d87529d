//! Process-level tests: the real broker, worker, inspector and CLI binaries on free ports,
//! each test in its own cluster.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_testkit::{
    CliRun, Proc, TestBroker, run_cli, signal, spawn_peer, unique_cluster, wait_for,
};
use serde_json::Value;
use std::time::{Duration, Instant};

const CLI_TIMEOUT: Duration = Duration::from_secs(20);

fn cli(broker_url: &str, cluster: &str, args: &[&str]) -> CliRun {
    let mut all = vec!["-m", broker_url, "--cluster", cluster];
    all.extend_from_slice(args);
    run_cli(&all, CLI_TIMEOUT).expect("maestro-cli ran")
}

fn peers(run: &CliRun) -> Vec<Value> {
    run.json()
        .expect("json output")
        .as_array()
        .cloned()
        .expect("an array of peers")
}

fn count(peers: &[Value], field: &str, value: &str) -> usize {
    peers.iter().filter(|p| p[field] == value).count()
}

/// Pings until `ok` peers answer (peers need a moment to connect after starting).
fn ping_until(url: &str, cluster: &str, ok: usize) -> Vec<Value> {
    let mut last = Vec::new();
    let found = wait_for(Duration::from_secs(15), || {
        let run = cli(
            url,
            cluster,
            &["ping", "--output", "json", "--timeout", "2s"],
        );
        last = run
            .json()
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        count(&last, "status", "ok") == ok
    });
    assert!(found, "never saw {ok} peers answer; last ping: {last:#?}");
    last
}

#[test]
fn ping_lists_exactly_the_workers_and_inspector_of_the_cluster() {
    let broker = TestBroker::start(&[]).unwrap();
    let url = broker.url();
    let cluster = unique_cluster();
    let c = cluster.to_string();
    let _w1 = spawn_peer(
        "worker",
        &url,
        &cluster,
        &["--name", "w1", "--group", "g1", "--member", "m1"],
    )
    .unwrap();
    let _w2 = spawn_peer("worker", &url, &cluster, &["--name", "w2", "--group", "g1"]).unwrap();
    let _w3 = spawn_peer("worker", &url, &cluster, &["--name", "w3", "--group", "g2"]).unwrap();
    let _insp = spawn_peer("inspector", &url, &cluster, &["--name", "insp"]).unwrap();
    // A worker of another cluster on the same broker must not show up.
    let _other = spawn_peer("worker", &url, &unique_cluster(), &["--name", "stranger"]).unwrap();

    ping_until(&url, &c, 4);
    let run = cli(&url, &c, &["ping", "--output", "json"]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let list = peers(&run);
    assert_eq!(list.len(), 4, "{list:#?}");
    assert_eq!(count(&list, "role", "worker"), 3);
    assert_eq!(count(&list, "role", "inspector"), 1);
    for p in &list {
        for field in ["id", "name", "role", "host", "group", "member", "version"] {
            assert!(p[field].is_string(), "{field} missing in {p}");
        }
        let rtt = p["rtt_us"].as_i64().expect("rtt_us");
        assert!(rtt > 0 && rtt < 1_000_000, "implausible rtt {rtt}");
        // One host, one clock: the offset is small.
        assert!(
            p["clock_offset_us"].as_i64().expect("offset").abs() < 100_000,
            "{p}"
        );
    }
    let w1 = list.iter().find(|p| p["name"] == "w1").unwrap();
    assert_eq!(
        (w1["group"].as_str(), w1["member"].as_str()),
        (Some("g1"), Some("m1"))
    );

    // The original Maestro spelling, as a table with Maestro's columns.
    let run = cli(&url, &c, &["maestro", "-c", "ping"]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    for column in [
        "Command",
        "Name",
        "Host",
        "Group Name",
        "Member Name",
        "RTT",
        "Clock Offset",
    ] {
        assert!(
            run.stdout.contains(column),
            "no {column:?} in\n{}",
            run.stdout
        );
    }
    assert_eq!(run.stdout.matches("pong").count(), 4, "{}", run.stdout);

    // Addressing a group and a role.
    let run = cli(&url, &c, &["ping", "--group", "g1", "-o", "json"]);
    let names: Vec<_> = peers(&run)
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["w1", "w2"]);
    let run = cli(&url, &c, &["stats", "--role", "inspector", "-o", "json"]);
    let list = peers(&run);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["state"], "idle");

    // Environment variables work like flags.
    let out = std::process::Command::new(maestro_testkit::binary("maestro-cli").unwrap())
        .args(["ping", "-o", "json"])
        .env("MAESTRO_URL", &url)
        .env("MAESTRO_CLUSTER", &c)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 4);
}

#[test]
fn empty_cluster_and_unreachable_broker_have_their_exit_codes() {
    let broker = TestBroker::start(&[]).unwrap();
    let run = cli(&broker.url(), "nobody-here", &["ping"]);
    assert_eq!(run.code, Some(4), "{run:?}");
    assert!(run.stderr.contains("no peers"), "{}", run.stderr);

    let closed = maestro_testkit::free_port();
    let run = cli(
        &format!("mqtt://127.0.0.1:{closed}"),
        "x",
        &["ping", "--timeout", "2s"],
    );
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(run.stderr.contains("connection refused"), "{}", run.stderr);

    let run = run_cli(&["ping", "-m", "http://nope"], CLI_TIMEOUT).unwrap();
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("expected mqtt://"), "{}", run.stderr);
}

#[test]
fn broker_refuses_a_taken_port_with_a_clear_error() {
    let broker = TestBroker::start(&[]).unwrap();
    let listen = format!("127.0.0.1:{}", broker.port);
    let mut second = Proc::spawn("broker2", "maestro-broker", &["--listen", &listen]).unwrap();
    assert_eq!(second.wait_exit(Duration::from_secs(10)).unwrap(), Some(3));
    let log = second.log_text();
    assert!(log.contains(&listen) && log.contains("in use"), "{log}");
}

#[test]
fn auth_refuses_wrong_password_and_anonymous_and_accepts_the_right_one() {
    let dir = maestro_testkit::test_dir("auth");
    let users = dir.join("users");
    std::fs::write(&users, "# test users\nalice:s3cret\ncarol:p+&%@:/w\n").unwrap();
    let broker = TestBroker::start(&["--auth-file", users.to_str().unwrap()]).unwrap();
    let cluster = unique_cluster();
    let c = cluster.to_string();
    let good = broker.url_as("alice", "s3cret");
    let _w = spawn_peer("worker", &good, &cluster, &["--name", "authed"]).unwrap();
    let list = ping_until(&good, &c, 1);
    assert_eq!(list[0]["name"], "authed");
    // A password with every URL-special character, percent-encoded in the URL.
    let awkward = broker.url_as("carol", "p%2B%26%25%40%3A%2Fw");
    let run = cli(&awkward, &c, &["ping", "--timeout", "3s", "-o", "json"]);
    assert_eq!(run.code, Some(0), "{run:?}");

    let run = cli(
        &broker.url_as("alice", "wrong"),
        &c,
        &["ping", "--timeout", "3s"],
    );
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(
        run.stderr.contains("wrong username or password"),
        "{}",
        run.stderr
    );
    let run = cli(&broker.url(), &c, &["ping", "--timeout", "3s"]);
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(
        run.stderr.contains("username and password"),
        "{}",
        run.stderr
    );
    // A worker with a wrong password never joins, and says so once.
    let bad = spawn_peer(
        "worker",
        &broker.url_as("alice", "nope"),
        &cluster,
        &["--name", "intruder"],
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(10), || bad
        .log_text()
        .contains("unreachable")));
    let run = cli(&good, &c, &["ping", "-o", "json"]);
    assert_eq!(peers(&run).len(), 1, "{}", run.stdout);
    assert_eq!(
        bad.log_text().matches("unreachable").count(),
        1,
        "{}",
        bad.log_text()
    );
}

#[test]
fn kill_9_shows_the_worker_offline_within_one_and_a_half_keep_alives() {
    let broker = TestBroker::start(&[]).unwrap();
    let url = broker.url();
    let cluster = unique_cluster();
    let c = cluster.to_string();
    let keep_alive = Duration::from_secs(2);
    let victim = spawn_peer(
        "worker",
        &url,
        &cluster,
        &["--name", "victim", "--keep-alive", "2s"],
    )
    .unwrap();
    let hung = spawn_peer(
        "worker",
        &url,
        &cluster,
        &["--name", "hung", "--keep-alive", "2s"],
    )
    .unwrap();
    let _ok = spawn_peer("worker", &url, &cluster, &["--name", "survivor"]).unwrap();
    ping_until(&url, &c, 3);

    // kill -9: the kernel closes the socket, the broker fires the last will at once.
    let killed_at = Instant::now();
    victim.signal(signal::SIGKILL);
    let status_of = |run: &CliRun, name: &str| {
        peers(run)
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["status"].clone())
    };
    let mut last = None;
    let seen = wait_for(keep_alive * 3 / 2, || {
        let run = cli(&url, &c, &["ping", "-o", "json", "--timeout", "1s"]);
        last = Some(run.stdout.clone());
        status_of(&run, "victim") == Some(Value::from("offline"))
    });
    let took = killed_at.elapsed();
    assert!(seen, "victim not offline after {took:?}: {last:?}");
    // SIGSTOP: the socket stays open and only the keep-alive can tell. A request to the
    // hung peer reports it at once as not answering...
    hung.signal(signal::SIGSTOP);
    let stopped_at = Instant::now();
    let run = cli(&url, &c, &["ping", "-o", "json", "--timeout", "500ms"]);
    assert_eq!(run.code, Some(4), "{run:?}");
    assert_eq!(
        status_of(&run, "hung"),
        Some(Value::from("no_reply")),
        "{}",
        run.stdout
    );
    // ...and the broker declares it offline 1.5 keep-alives after its last packet. rumqttd
    // restarts that timer whenever it writes to the client, so nothing is sent to the
    // peer meanwhile: this wait is the quiet period itself, not a guess at readiness.
    std::thread::sleep(
        (keep_alive * 3 / 2).saturating_sub(stopped_at.elapsed()) + Duration::from_millis(200),
    );
    let run = cli(&url, &c, &["stats", "-o", "json", "--timeout", "500ms"]);
    let hung_took = stopped_at.elapsed();
    hung.signal(signal::SIGCONT);
    assert_eq!(
        status_of(&run, "hung"),
        Some(Value::from("offline")),
        "after {hung_took:?}: {}",
        run.stdout
    );
    eprintln!("offline after kill -9: {took:?}; after SIGSTOP: {hung_took:?}");

    let run = cli(&url, &c, &["ping", "--timeout", "1s"]);
    assert_eq!(run.code, Some(4), "{run:?}");
    assert!(run.stdout.contains("OFFLINE"), "{}", run.stdout);
    assert!(
        run.stderr.contains("victim") && run.stderr.contains("offline"),
        "{}",
        run.stderr
    );

    // `forget` removes the crashed one; a restarted peer with the same name replaces it.
    let run = cli(&url, &c, &["forget"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("victim"), "{}", run.stdout);
}

#[test]
fn peers_reconnect_and_reannounce_after_the_broker_restarts() {
    let broker = TestBroker::start(&[]).unwrap();
    let port = broker.port;
    let url = broker.url();
    let cluster = unique_cluster();
    let c = cluster.to_string();
    let w = spawn_peer("worker", &url, &cluster, &["--name", "phoenix"]).unwrap();
    let _i = spawn_peer("inspector", &url, &cluster, &[]).unwrap();
    ping_until(&url, &c, 2);
    drop(broker);
    assert!(wait_for(Duration::from_secs(5), || w
        .log_text()
        .contains("unreachable")));
    let _broker = TestBroker::start_on(port, &[]).unwrap();
    ping_until(&url, &c, 2);
    let run = cli(&url, &c, &["stats", "-o", "json"]);
    let list = peers(&run);
    assert!(list.iter().all(|p| p["reconnects"] == 1), "{list:#?}");
    let log = w.log_text();
    assert_eq!(
        log.matches("unreachable").count(),
        1,
        "one line while down:\n{log}"
    );
    assert!(log.contains("re-announcing"), "{log}");
}

#[test]
fn halt_stops_the_addressed_peers_only() {
    let broker = TestBroker::start(&[]).unwrap();
    let url = broker.url();
    let cluster = unique_cluster();
    let c = cluster.to_string();
    let mut a = spawn_peer(
        "worker",
        &url,
        &cluster,
        &["--name", "a", "--group", "doomed"],
    )
    .unwrap();
    let mut b = spawn_peer(
        "worker",
        &url,
        &cluster,
        &["--name", "b", "--group", "doomed"],
    )
    .unwrap();
    let _c = spawn_peer("worker", &url, &cluster, &["--name", "c"]).unwrap();
    ping_until(&url, &c, 3);
    let run = cli(&url, &c, &["halt", "--group", "doomed"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout.matches("halted").count(), 2, "{}", run.stdout);
    assert_eq!(a.wait_exit(Duration::from_secs(5)).unwrap(), Some(0));
    assert_eq!(b.wait_exit(Duration::from_secs(5)).unwrap(), Some(0));
    // Halted peers left on purpose: they are gone, not offline.
    let run = cli(&url, &c, &["ping", "-o", "json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let list = peers(&run);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "c");
}

#[test]
fn quickstart_needs_nothing_installed() {
    let results = maestro_testkit::test_dir("qs");
    let results_arg = results.to_str().unwrap();
    let run = run_cli(
        &[
            "quickstart",
            "--workers",
            "3",
            "--rate",
            "1500",
            "--duration",
            "2s",
            "--results",
            results_arg,
            "-o",
            "json",
        ],
        CLI_TIMEOUT,
    )
    .unwrap();
    assert_eq!(run.code, Some(0), "{run:?}");
    let v = run.json().unwrap();
    for step in ["ping", "halt"] {
        let peers = v[step]
            .as_array()
            .unwrap_or_else(|| panic!("no {step} in {v}"));
        assert_eq!(peers.len(), 4, "{step}: {peers:#?}");
        assert!(
            peers.iter().all(|p| p["status"] == "ok"),
            "{step}: {peers:#?}"
        );
    }
    let s = &v["summary"];
    assert_eq!(s["sent"], 3000, "{s:#}");
    assert_eq!(
        s["received"], 9000,
        "3 consumers each get every message: {s:#}"
    );
    assert_eq!(s["lost"], 0, "{s:#}");
    assert!(
        results
            .join(s["run_id"].as_str().unwrap())
            .join("summary.json")
            .exists()
    );
    assert!(run.stderr.is_empty(), "quiet on success: {}", run.stderr);
}
