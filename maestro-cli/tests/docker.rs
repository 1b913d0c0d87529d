//! The docker-compose deployment on a real Docker Engine, the way a user runs it:
//! `docker-compose/build`, `up` with 3 workers and Mosquitto, `maestro-cli ping` and
//! `start` from the host through the published port, faults (a killed worker, a restarted
//! SUT, a worker cut off the network), and `down` leaving nothing behind.
//!
//! Docker is required: a missing engine fails this test loudly, it is never skipped.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_testkit::{free_port, output_text, repo_root, run_cli, tool, wait_for};
use serde_json::Value;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A compose project of its own (name, published port, profiles, variables), taken down
/// on drop.
struct Deployment {
    project: String,
    port: u16,
    profiles: Vec<&'static str>,
    env: Vec<(&'static str, String)>,
}

impl Deployment {
    fn compose(&self, args: &[&str]) -> Output {
        let port = self.port.to_string();
        let mut command = Command::new("docker-compose");
        command.args([
            "-p",
            &self.project,
            "-f",
            "docker-compose/docker-compose.yml",
        ]);
        for p in &self.profiles {
            command.args(["--profile", p]);
        }
        command
            .args(args)
            .env("MAESTRO_PORT", &port)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(repo_root())
            .output()
            .unwrap_or_else(|e| panic!("cannot run docker-compose: {e}"))
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The peer keys `docker-compose/build` left for a worker or inspector on the host.
    fn host_peer_keys() -> String {
        maestro_testkit::repo_root()
            .join("docker-compose/keys/host-peer")
            .to_string_lossy()
            .into_owned()
    }

    /// The controller keys `docker-compose/build` left for the host's CLI.
    fn keys() -> String {
        repo_root()
            .join("docker-compose/keys/host")
            .to_string_lossy()
            .into_owned()
    }

    fn cli(&self, args: &[&str], timeout: Duration) -> maestro_testkit::CliRun {
        let url = self.url();
        let keys = Self::keys();
        let mut all = vec!["-m", url.as_str(), "--keys", keys.as_str()];
        all.extend_from_slice(args);
        run_cli(&all, timeout).unwrap()
    }

    /// Peers by role and status, from `ping -o json`.
    fn ping(&self) -> Vec<(String, String, String)> {
        let run = self.cli(
            &["ping", "-o", "json", "--timeout", "3s"],
            Duration::from_secs(20),
        );
        run.json()
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|p| {
                (
                    p["role"].as_str().unwrap_or("").to_owned(),
                    p["host"].as_str().unwrap_or("").to_owned(),
                    p["status"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    fn workers_ok(&self) -> usize {
        self.ping()
            .iter()
            .filter(|p| p.0 == "worker" && p.2 == "ok")
            .count()
    }

    /// Waits until `n` workers report a run in progress (the run has started on them).
    fn wait_running(&self, n: usize) -> bool {
        wait_for(Duration::from_secs(30), || {
            self.cli(&["stats", "-o", "json"], Duration::from_secs(20))
                .json()
                .ok()
                .and_then(|v| {
                    v.as_array()
                        .map(|a| a.iter().filter(|w| w["state"] == "running").count())
                })
                == Some(n)
        })
    }

    /// Container ids of a service.
    fn containers(&self, service: &str) -> Vec<String> {
        let o = self.compose(&["ps", "-q", service]);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `maestro-cli start ... -o json` in the background.
    fn start(&self, args: &[&str]) -> std::thread::JoinHandle<(Option<i32>, Value, String)> {
        let mut all: Vec<String> = vec![
            "-m".into(),
            self.url(),
            "--keys".into(),
            Self::keys(),
            "start".into(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        all.extend(["-o".into(), "json".into()]);
        std::thread::spawn(move || {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            let run = run_cli(&refs, Duration::from_secs(120)).unwrap();
            let summary = run.json().unwrap_or(Value::Null);
            (run.code, summary, run.stderr)
        })
    }

    /// A QoS 1 run against the mosquitto service: `clients` producers and as many
    /// consumers, on topic base `topic`.
    fn mqtt_run(
        &self,
        topic: &str,
        rate: u32,
        duration: &str,
        clients: u32,
    ) -> std::thread::JoinHandle<(Option<i32>, Value, String)> {
        let sut = format!("mqtt://mosquitto:1883/{topic}?qos=1");
        let (rate, clients) = (rate.to_string(), clients.to_string());
        self.start(&[
            "--sut",
            &sut,
            "--rate",
            &rate,
            "--duration",
            duration,
            "--producers",
            &clients,
            "--consumers",
            &clients,
        ])
    }

    /// Labels of what is left of this project: containers, networks, volumes.
    fn leftovers(&self) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.project);
        let mut left = Vec::new();
        for kind in [
            &["ps", "-a", "-q", "--filter"][..],
            &["network", "ls", "-q", "--filter"][..],
            &["volume", "ls", "-q", "--filter"][..],
        ] {
            let mut args = kind.to_vec();
            args.push(&label);
            let o = tool("docker", &args);
            left.extend(
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(|l| format!("{} {l}", kind[0])),
            );
        }
        left
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--remove-orphans", "--timeout", "2"]);
    }
}

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

#[test]
fn docker_compose_cluster_runs_tests_and_survives_faults() {
    let began = Instant::now();
    let build = tool("docker-compose/build", &[]);
    assert!(
        build.status.success(),
        "build failed: {}",
        output_text(&build)
    );
    let built = began.elapsed();

    let d = Deployment {
        project: format!("maestrotest{}", std::process::id()),
        port: free_port(),
        profiles: vec!["mqtt"],
        env: Vec::new(),
    };
    let up = d.compose(&["up", "-d", "--scale", "worker=3"]);
    assert!(up.status.success(), "up failed: {}", output_text(&up));

    // ping from the host, through the published port: exactly 3 workers and the inspector.
    assert!(
        wait_for(Duration::from_secs(60), || {
            let peers = d.ping();
            peers
                .iter()
                .filter(|p| p.0 == "worker" && p.2 == "ok")
                .count()
                == 3
                && peers
                    .iter()
                    .filter(|p| p.0 == "inspector" && p.2 == "ok")
                    .count()
                    == 1
        }),
        "not 3 workers and 1 inspector: {:?}",
        d.ping()
    );
    // The cluster ships with keys: ping says notes are signed, a controller without the
    // keys gets no answer, and the cli service (keys/controller) commands the cluster.
    let table = d.cli(&["ping", "--timeout", "3s"], Duration::from_secs(20));
    assert!(table.stdout.contains("signed notes on"), "{table:?}");
    let url = d.url();
    let stranger = run_cli(
        &["-m", &url, "ping", "-o", "json", "--timeout", "2s"],
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(stranger.code, Some(4), "{stranger:?}");
    assert!(!stranger.stdout.contains("\"ok\""), "{stranger:?}");
    let inside = d.compose(&["run", "--rm", "cli", "ping", "--timeout", "3s"]);
    let text = output_text(&inside);
    assert!(inside.status.success(), "{text}");
    assert!(text.contains("signed notes on"), "{text}");

    // Each worker is named after its container.
    let hosts: Vec<String> = d.ping().into_iter().map(|p| p.1).collect();
    for id in d.containers("worker") {
        assert!(
            hosts.iter().any(|h| id.starts_with(h.as_str())),
            "{id} not in {hosts:?}"
        );
    }

    // A 10 s QoS 1 run against the mosquitto service loses nothing.
    let (code, s, err) = d.mqtt_run("demo", 1200, "10s", 3).join().unwrap();
    assert_eq!(code, Some(0), "{err}\n{s:#}");
    // 3 producers at 400/s for 10 s; every one of 3 subscribers gets every message.
    assert_eq!(u(&s, "sent"), 12_000, "{s:#}");
    assert_eq!(u(&s, "received"), 36_000, "{s:#}");
    assert_eq!(u(&s, "lost"), 0, "{s:#}");
    // The compose inspector read its host all along (MAESTRO_INSPECTOR_SOURCE, default
    // `host`), on the run's timeline.
    let sources: Vec<&str> = s["sut_metrics"]["sources"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["source"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(sources, ["host"], "{s:#}");

    // docker kill of one worker mid-run: offline, the run degraded (exit 4), the other
    // workers' numbers kept.
    let run = d.mqtt_run("kill", 600, "8s", 3);
    assert!(d.wait_running(3), "the run never started");
    let victim = d.containers("worker").remove(0);
    let kill = tool("docker", &["kill", &victim]);
    assert!(kill.status.success(), "{}", output_text(&kill));
    let (code, s, err) = run.join().unwrap();
    assert_eq!(code, Some(4), "{err}\n{s:#}");
    assert_eq!(s["degraded"], true, "{s:#}");
    let reported: Vec<&Value> = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["reported"] == true)
        .collect();
    assert_eq!(reported.len(), 2, "{s:#}");
    assert!(reported.iter().all(|w| u(w, "sent") > 0), "{s:#}");
    // The killed worker shows offline (its last will fired).
    let short: String = victim.chars().take(12).collect();
    assert!(
        d.ping()
            .iter()
            .any(|p| p.0 == "worker" && p.1 == short && p.2 == "offline"),
        "{short} not offline: {:?}",
        d.ping()
    );
    // Started again, the worker announces itself again (a `docker kill` counts as a manual
    // stop, so the restart policy leaves it down).
    let again = tool("docker", &["start", &victim]);
    assert!(again.status.success(), "{}", output_text(&again));
    assert!(
        wait_for(Duration::from_secs(60), || d.workers_ok() == 3),
        "{:?}",
        d.ping()
    );

    // A restart of mosquitto mid-run: errors are counted and the workers reconnect.
    let run = d.mqtt_run("restart", 600, "8s", 3);
    assert!(d.wait_running(3), "the run never started");
    let restart = d.compose(&["restart", "--timeout", "1", "mosquitto"]);
    assert!(restart.status.success(), "{}", output_text(&restart));
    let (code, s, err) = run.join().unwrap();
    assert_eq!(code, Some(4), "{err}\n{s:#}");
    assert!(u(&s, "errors") > 0, "{s:#}");
    assert!(u(&s, "sent") > 0, "{s:#}");
    let (code, s, err) = d.mqtt_run("after", 300, "3s", 3).join().unwrap();
    assert_eq!(code, Some(0), "the workers reconnected: {err}\n{s:#}");
    assert_eq!(u(&s, "lost"), 0, "{s:#}");

    // A fault from a plan's vocabulary on a compose service: an inspector on the host
    // declares `docker pause` of the mosquitto container; the run names it.
    let container = d.containers("mosquitto").remove(0);
    // In a folder of its own, removed when the test ends, passed or failed.
    let faults_dir = maestro_testkit::test_dir("docker-faults");
    let faults = faults_dir.join("faults.toml");
    std::fs::write(
        &faults,
        format!(
            "[[action]]\nname = \"freeze-broker\"\nkind = \"docker-pause\"\ncontainer = \"{container}\"\n\
             [[action]]\nname = \"kill-broker\"\nkind = \"docker-kill\"\ncontainer = \"{container}\"\n\
             [[action]]\nname = \"bounce-broker\"\nkind = \"docker-restart\"\ncontainer = \"{container}\"\n"
        ),
    )
    .unwrap();
    let cluster: maestro_protocol::ClusterId = "default".parse().unwrap();
    let inspector = maestro_testkit::spawn_peer(
        "inspector",
        &d.url(),
        &cluster,
        &[
            "--name",
            "host-inspector",
            "--faults",
            faults.to_str().unwrap(),
            // The compose cluster is signed: a peer on the host joins with the peer keys
            // `docker-compose/build` left for it.
            "--keys",
            &Deployment::host_peer_keys(),
        ],
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || d
            .ping()
            .iter()
            .filter(|p| p.0 == "inspector" && p.2 == "ok")
            .count()
            == 2),
        "{:?}",
        d.ping()
    );
    let (code, s, err) = d
        .start(&[
            "--sut",
            "mqtt://mosquitto:1883/freeze?qos=1",
            "--rate",
            "300",
            "--duration",
            "8s",
            "--producers",
            "3",
            "--consumers",
            "3",
            "--fault",
            "2s+2s:freeze-broker",
        ])
        .join()
        .unwrap();
    assert_eq!(code, Some(0), "{err}\n{s:#}");
    let f = &s["faults"][0];
    assert_eq!(f["inspector"], "host-inspector", "{s:#}");
    assert!(f["errors"].as_array().unwrap().is_empty(), "{f}");
    let frozen_ms =
        (f["healed_at_us"].as_i64().unwrap() - f["confirmed_at_us"].as_i64().unwrap()) / 1000;
    assert!(
        (1900..=3000).contains(&frozen_ms),
        "frozen for {frozen_ms} ms: {f}"
    );
    assert!(
        f["during"]["response_time_us"]["p50"].as_u64().unwrap() > 400_000,
        "{f}"
    );
    assert_eq!(u(&s, "lost"), 0, "{s:#}");
    let status = tool(
        "docker",
        &["inspect", "-f", "{{.State.Status}}", &container],
    );
    assert_eq!(String::from_utf8_lossy(&status.stdout).trim(), "running");
    // docker kill (healed by docker start) and docker restart (a bounce) of the broker:
    // the clients see errors, both faults are carried out and healed, the broker runs.
    let (code, s, err) = d
        .start(&[
            "--sut",
            "mqtt://mosquitto:1883/kill?qos=1",
            "--rate",
            "100",
            "--duration",
            "8s",
            "--fault",
            "1s+2s:kill-broker",
            "--fault",
            "5s+1s:bounce-broker",
        ])
        .join()
        .unwrap();
    assert!(matches!(code, Some(0) | Some(4)), "{err}\n{s:#}");
    for (i, action) in [(0, "kill-broker"), (1, "bounce-broker")] {
        let f = &s["faults"][i];
        assert_eq!(f["action"], action, "{s:#}");
        assert!(f["errors"].as_array().unwrap().is_empty(), "{f}");
        assert!(
            f["confirmed_at_us"].as_i64().is_some() && f["healed_at_us"].as_i64().is_some(),
            "{f}"
        );
    }
    assert!(u(&s, "errors") > 0, "the clients saw the broker go: {s:#}");
    let status = tool(
        "docker",
        &["inspect", "-f", "{{.State.Status}}", &container],
    );
    assert_eq!(String::from_utf8_lossy(&status.stdout).trim(), "running");
    drop(inspector);

    // A worker cut off the network is reported: `no_reply` at once, `offline` once the
    // broker gives up on it (rumqttd restarts a client's keep-alive timer whenever it
    // writes to it, so pings can keep it from doing so; ARCHITECTURE.md).
    let cut = d.containers("worker").remove(0);
    let network = format!("{}_default", d.project);
    let disconnect = tool("docker", &["network", "disconnect", &network, &cut]);
    assert!(disconnect.status.success(), "{}", output_text(&disconnect));
    assert!(
        wait_for(Duration::from_secs(30), || {
            let peers = d.ping();
            peers
                .iter()
                .any(|p| p.0 == "worker" && (p.2 == "offline" || p.2 == "no_reply"))
                && peers
                    .iter()
                    .filter(|p| p.0 == "worker" && p.2 == "ok")
                    .count()
                    == 2
        }),
        "{:?}",
        d.ping()
    );

    // A run then uses the workers that answer, and loses nothing.
    let (code, s, err) = d.mqtt_run("cut", 300, "3s", 2).join().unwrap();
    assert_eq!(code, Some(0), "{err}\n{s:#}");
    assert_eq!(s["workers"].as_array().map(Vec::len), Some(2), "{s:#}");
    assert_eq!(u(&s, "lost"), 0, "{s:#}");

    // down leaves no container, network or volume.
    let down = d.compose(&["down", "-v", "--timeout", "2"]);
    assert!(down.status.success(), "{}", output_text(&down));
    assert_eq!(d.leftovers(), Vec::<String>::new());
    eprintln!(
        "docker-compose test: {:.0} s in all ({:.0} s building the image)",
        began.elapsed().as_secs_f64(),
        built.as_secs_f64()
    );
}

/// `GET path` on 127.0.0.1:port: the status line and the body.
fn http_get(port: u16, path: &str) -> Option<(String, String)> {
    let text = maestro_testkit::http_get(port, path)?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_owned(), body.to_owned()))
}

/// The samples of an instant query on Prometheus' API: (labels, value).
fn query(port: u16, expr_encoded: &str) -> Vec<(Value, f64)> {
    let Some((status, body)) = http_get(port, &format!("/api/v1/query?query={expr_encoded}"))
    else {
        return Vec::new();
    };
    if !status.contains(" 200") {
        return Vec::new();
    }
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| {
            let value = r["value"][1].as_str()?.parse().ok()?;
            Some((r["metric"].clone(), value))
        })
        .collect()
}

#[test]
fn the_monitoring_profile_scrapes_a_runs_sent_rate() {
    let build = tool("docker-compose/build", &[]);
    assert!(
        build.status.success(),
        "build failed: {}",
        output_text(&build)
    );
    let (metrics_port, prometheus_port) = (free_port(), free_port());
    let d = Deployment {
        project: format!("maestromon{}", std::process::id()),
        port: free_port(),
        profiles: vec!["mqtt", "monitoring"],
        env: vec![
            ("MAESTRO_PROMETHEUS_PORT", prometheus_port.to_string()),
            (
                "MAESTRO_CLI_METRICS",
                format!("host.docker.internal:{metrics_port}"),
            ),
        ],
    };
    let up = d.compose(&["up", "-d", "--build", "--scale", "worker=2"]);
    assert!(up.status.success(), "up failed: {}", output_text(&up));
    assert!(
        wait_for(Duration::from_secs(60), || d.workers_ok() == 2),
        "{:?}",
        d.ping()
    );
    assert!(
        wait_for(Duration::from_secs(60), || http_get(
            prometheus_port,
            "/-/ready"
        )
        .is_some_and(|(status, _)| status.contains(" 200"))),
        "Prometheus did not get ready"
    );
    // The host CLI serves its run metrics on the address Prometheus reaches the Docker
    // host by (host.docker.internal: the host gateway).
    let hosts = d.compose(&["exec", "-T", "prometheus", "cat", "/etc/hosts"]);
    let gateway = String::from_utf8_lossy(&hosts.stdout)
        .lines()
        .find(|l| l.contains("host.docker.internal"))
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| panic!("no host.docker.internal in {}", output_text(&hosts)));
    // The daemons' health, found through Docker's DNS: both workers and the broker.
    assert!(
        wait_for(Duration::from_secs(30), || {
            query(prometheus_port, "up%7Bjob%3D%22maestro-worker%22%7D")
                .iter()
                .filter(|(_, v)| *v == 1.0)
                .count()
                == 2
                && query(prometheus_port, "maestro_broker_up")
                    .first()
                    .is_some_and(|(_, v)| *v == 1.0)
        }),
        "workers: {:?}, broker: {:?}",
        query(prometheus_port, "up%7Bjob%3D%22maestro-worker%22%7D"),
        query(prometheus_port, "maestro_broker_up")
    );
    // During a run at 200/s, Prometheus has its sent rate, labelled by run and phase.
    let listen = format!("{gateway}:{metrics_port}");
    let run = d.start(&[
        "--sut",
        "mqtt://mosquitto:1883/monitored?qos=1",
        "--rate",
        "200",
        "--duration",
        "20s",
        "--producers",
        "2",
        "--consumers",
        "2",
        "--metrics-listen",
        &listen,
    ]);
    let mut seen = Vec::new();
    let scraped = wait_for(Duration::from_secs(40), || {
        seen = query(prometheus_port, "maestro_run_send_rate");
        seen.iter().any(|(_, v)| (150.0..=250.0).contains(v))
    });
    assert!(scraped, "Prometheus' sent rate: {seen:?}");
    let labels = &seen[0].0;
    assert_eq!(labels["phase"], "start", "{labels}");
    assert_eq!(labels["fault"], "none", "{labels}");
    let sent = query(prometheus_port, "maestro_run_sent_total");
    assert!(sent.first().is_some_and(|(_, v)| *v > 0.0), "{sent:?}");
    let (code, s, err) = run.join().unwrap();
    assert_eq!(code, Some(0), "{err}\n{s:#}");
    assert_eq!(labels["run"], s["run_id"], "{labels} {s:#}");
    assert_eq!(u(&s, "lost"), 0, "{s:#}");
    let down = d.compose(&["down", "-v", "--timeout", "2"]);
    assert!(down.status.success(), "{}", output_text(&down));
    assert_eq!(d.leftovers(), Vec::<String>::new());
}
