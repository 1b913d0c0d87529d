//! The SUT side against real brokers: the inspector's sources (Mosquitto `$SYS`, the
//! RabbitMQ management API, Kafka offsets and lag, a process) on the run's timeline, and
//! faults from plans run by the inspector that declared them.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_protocol::{Body, SutStats, decode};
use maestro_testkit::{Cluster, Mosquitto, Proc, ScriptedSut, wait_for};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Starts an inspector in the cluster and waits until ping lists it.
fn inspector(c: &Cluster, args: &[&str]) -> Proc {
    c.spawn_inspector("sut-inspector", args)
}

/// The inspector events published on the control broker, as they come.
/// The watcher's thread ends when this is dropped.
struct Events {
    seen: Arc<Mutex<Vec<SutStats>>>,
    client: rumqttc::Client,
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Events {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.client.try_disconnect();
    }
}

impl Events {
    fn watch(c: &Cluster) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let port: u16 = c.broker.url().rsplit(':').next().unwrap().parse().unwrap();
        let mut options = rumqttc::MqttOptions::new(
            format!("sut-watch-{}", std::process::id()),
            "127.0.0.1",
            port,
        );
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut connection) = rumqttc::Client::new(options, 64);
        client
            .subscribe(
                format!("maestro/v1/{}/event/+/sut", c.cluster),
                rumqttc::QoS::AtMostOnce,
            )
            .unwrap();
        let into = seen.clone();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = done.clone();
        std::thread::spawn(move || {
            for event in connection.iter() {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match event {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        if let Ok(note) = decode(&p.payload)
                            && let Body::SutStats(s) = note.body
                        {
                            into.lock().unwrap().push(s);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        Self { seen, client, done }
    }

    /// The latest value of a metric (source, name, label) in any event.
    fn latest(&self, source: &str, name: &str, label: Option<&str>) -> Option<f64> {
        self.all(source, name, label).last().copied()
    }

    /// Every value of a metric, in the order the events came.
    fn all(&self, source: &str, name: &str, label: Option<&str>) -> Vec<f64> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|s| {
                s.samples
                    .iter()
                    .filter(|x| x.source == source)
                    .flat_map(|x| &x.metrics)
                    .find(|m| m.name == name && m.label.as_deref() == label)
                    .map(|m| m.value)
            })
            .collect()
    }

    /// Waits until the latest value of a metric satisfies `ok`; returns it.
    fn until(
        &self,
        source: &str,
        name: &str,
        label: Option<&str>,
        ok: impl Fn(f64) -> bool,
    ) -> f64 {
        let reached = wait_for(Duration::from_secs(30), || {
            self.latest(source, name, label).is_some_and(&ok)
        });
        let last = self.latest(source, name, label);
        let sample = self.seen.lock().unwrap().last().cloned();
        assert!(
            reached,
            "{source}/{name} {label:?} never got there (last {last:?}; latest event {sample:?})"
        );
        last.unwrap()
    }
}

fn source<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["sut_metrics"]["sources"]
        .as_array()
        .unwrap_or_else(|| panic!("no sut_metrics in {s}"))
        .iter()
        .find(|x| x["source"] == name)
        .unwrap_or_else(|| panic!("no source {name} in {}", s["sut_metrics"]))
}

fn metric<'a>(src: &'a Value, name: &str) -> &'a Value {
    src["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name && m["label"].is_null())
        .unwrap_or_else(|| panic!("no metric {name} in {src}"))
}

#[test]
fn mosquitto_sys_counts_agree_with_maestro() {
    let mq = Mosquitto::start_with("sys_interval 1").unwrap();
    let c = Cluster::start(1);
    let sys = format!("mqtt-sys=mqtt://127.0.0.1:{}", mq.port);
    let pid = format!("process=pid:{}", mq.proc.pid());
    let _i = inspector(
        &c,
        &["--source", &sys, "--source", &pid, "--source", "host"],
    );
    // The run's baseline is the inspector's last figures before the start: wait for them
    // (without, the increase over the run is unknown and there is no cross-check).
    let events = Events::watch(&c);
    events.until("mqtt-sys", "messages_received", None, |_| true);
    let (run, s) = c.run_test(
        &mq.url("sys", "qos=1"),
        &[
            "--rate",
            "500",
            "--duration",
            "4s",
            "--producers",
            "2",
            "--consumers",
            "2",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let sent = s["sent"].as_u64().unwrap();
    assert_eq!(sent, 2000, "{s}");
    // Mosquitto's own count of PUBLISH packets it took in, over the run.
    let folder = c.results.join(s["run_id"].as_str().unwrap());
    let rows = maestro_report::sut::read_sut(&folder.join("sut.csv")).unwrap();
    let received: Vec<(u32, i64, f64)> = rows
        .iter()
        .filter(|r| r.source == "mqtt-sys" && r.metric == "messages_received")
        .map(|r| (r.second, r.time_us, r.value))
        .collect();
    let check = &s["sut_metrics"]["cross_check"];
    assert_eq!(check["source"], "mqtt-sys", "{s}");
    assert_eq!(check["maestro_sent"].as_u64(), Some(sent));
    assert_eq!(
        check["sut_received"].as_f64(),
        Some(sent as f64),
        "{check}\nstarted {}, {received:?}\nrun: {run:?}",
        s["started_at"]
    );
    assert_eq!(check["agrees"], true);
    // And what it handed out: a copy to each of the two subscribers, and its own $SYS
    // messages to the inspector (about a dozen a second).
    let sys = source(&s, "mqtt-sys");
    let handed = metric(sys, "messages_sent")["increase"].as_f64().unwrap();
    assert!(
        (2.0 * sent as f64..2.0 * sent as f64 + 600.0).contains(&handed),
        "{sys}"
    );
    assert!(sys["gaps"].as_array().unwrap().is_empty(), "{sys}");
    let process = source(&s, "process");
    assert!(
        metric(process, "memory_bytes")["max"].as_f64().unwrap() > 1e5,
        "{process}"
    );
    assert!(
        metric(source(&s, "host"), "cpu_percent")["max"]
            .as_f64()
            .is_some()
    );
    // sut.csv puts the samples on the run's seconds, a counter's rate beside it.
    let rates: Vec<(u32, f64)> = rows
        .iter()
        .filter(|r| r.source == "mqtt-sys" && r.metric == "messages_received")
        .filter_map(|r| Some((r.second, r.per_second?)))
        .collect();
    assert!(rows.iter().any(|r| r.second >= 3), "{rows:?}");
    // Mosquitto updates $SYS on its own beat (every one or two seconds with
    // `sys_interval 1`); the inspector leaves out the seconds without news, so each rate is
    // taken over the beat and a steady 500/s reads as such (not as 0, 1000, 0, 1000).
    let inside: Vec<f64> = rates
        .iter()
        .filter(|(s, _)| (2..=3).contains(s))
        .map(|r| r.1)
        .collect();
    assert!(
        !inside.is_empty() && inside.iter().all(|r| (350.0..=650.0).contains(r)),
        "Mosquitto took in about 500/s: {rates:?}"
    );
}

#[test]
fn a_pause_of_mosquitto_in_a_plan_is_a_recorded_window() {
    let mq = Mosquitto::start_with("sys_interval 1").unwrap();
    let c = Cluster::start(1);
    let dir = c.results.join("setup");
    std::fs::create_dir_all(&dir).unwrap();
    let faults = dir.join("faults.toml");
    std::fs::write(
        &faults,
        format!(
            "[[action]]\nname = \"pause-broker\"\nkind = \"pause\"\ntarget = \"pid:{}\"\n",
            mq.proc.pid()
        ),
    )
    .unwrap();
    let pid = format!("process=pid:{}", mq.proc.pid());
    let _i = inspector(
        &c,
        &["--source", &pid, "--faults", faults.to_str().unwrap()],
    );
    let plan = dir.join("pause.toml");
    std::fs::write(
        &plan,
        format!(
            r#"
[plan]
name = "pause"

[sut]
url = "{}"

[workload]
topics = 1
producers_per_topic = 1
subscriptions_per_topic = 1
message_size = "128"

[conditions]
max_lost = 0

[[phase]]
kind = "fixed"
rate = 200
duration = "8s"

[[fault]]
at = "3s"
duration = "2s"
action = "pause-broker"
"#,
            mq.url("pause", "qos=1")
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
        Duration::from_secs(90),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let plan_result = run.json().unwrap();
    let s = &plan_result["phases"][0]["probes"][0]["summary"];
    let f = &s["faults"][0];
    assert_eq!(f["action"], "pause-broker", "{s}");
    assert_eq!(f["inspector"], "sut-inspector");
    assert!(f["errors"].as_array().unwrap().is_empty(), "{f}");
    let t = |k: &str| f[k].as_i64().unwrap_or_else(|| panic!("no {k} in {f}"));
    assert!(t("requested_at_us") <= t("confirmed_at_us") + 50_000, "{f}");
    let window_ms = (t("healed_at_us") - t("confirmed_at_us")) / 1000;
    assert!(
        (1900..=2600).contains(&window_ms),
        "paused for {window_ms} ms: {f}"
    );
    // By intended send time: messages sent into the pause waited for it; before and after
    // it they did not.
    let p = |w: &str, q: &str| f[w]["response_time_us"][q].as_u64().unwrap();
    assert!(p("during", "p50") > 400_000, "{f}");
    assert!(p("before", "p99") < 200_000, "{f}");
    assert!(p("after", "p99") < 200_000, "{f}");
    for w in ["before", "during", "after"] {
        assert_eq!(f[w]["lost"], 0, "{f}");
    }
    assert_eq!(f["during"]["sent"], 400, "{f}");
    assert_eq!(
        f["before"]["sent"].as_u64().unwrap()
            + f["during"]["sent"].as_u64().unwrap()
            + f["after"]["sent"].as_u64().unwrap(),
        s["sent"].as_u64().unwrap()
    );
    assert!(
        f["recovered_after_ms"].as_u64().is_some_and(|r| r <= 3000),
        "{f}"
    );
    // The report shades the window on every time chart and has a table of the fault.
    let folder = std::fs::read_dir(&c.results)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("pause-")
        })
        .unwrap();
    let html = std::fs::read_to_string(folder.join("report.html")).unwrap();
    let doc = scraper::Html::parse_document(&html);
    let shaded = |chart: &str| {
        let sel = scraper::Selector::parse(&format!("#{chart} rect.fault")).unwrap();
        doc.select(&sel).count()
    };
    assert_eq!(shaded("chart-throughput"), 1);
    assert_eq!(shaded("chart-latency"), 1);
    assert!(shaded("chart-sut-0") == 1, "the SUT charts are shaded too");
    let rows = scraper::Selector::parse("#faults tbody tr").unwrap();
    let row: String = doc
        .select(&rows)
        .next()
        .unwrap()
        .text()
        .collect::<Vec<_>>()
        .join("|");
    assert!(row.contains("pause-broker"), "{row}");
    // The inspector saw the broker stopped.
    let process = source(s, "process");
    assert_eq!(
        metric(process, "stopped")["max"].as_f64(),
        Some(1.0),
        "{process}"
    );
    // The broker runs again.
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{}/stat", mq.proc.pid()))
            .unwrap()
            .rsplit_once(')')
            .unwrap()
            .1
            .trim_start()
            .chars()
            .next(),
        Some('S')
    );
}

#[test]
fn an_undeclared_fault_action_is_refused() {
    let c = Cluster::start(1);
    let mq = Mosquitto::start().unwrap();
    let _i = inspector(&c, &[]);
    // The controller refuses a fault no inspector declared, before anything runs.
    let run = c.cli(
        &[
            "start",
            "--sut",
            &mq.url("f", ""),
            "--duration",
            "2s",
            "--fault",
            "1s+1s:rm-everything",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr
            .contains("\"rm-everything\": no online inspector has declared it"),
        "{run:?}"
    );
    // And the inspector itself refuses a note that names one it has not declared.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url: maestro_control::ControlUrl = c.broker.url().parse().unwrap();
        let cluster: maestro_protocol::ClusterId = c.cluster.parse().unwrap();
        let mut controller =
            maestro_controller::client::Controller::connect(&url, &cluster, Duration::from_secs(5))
                .await
                .unwrap();
        let ex = controller
            .request(
                &maestro_protocol::Target::Role(maestro_protocol::Role::Inspector),
                Body::Inject(maestro_protocol::Inject {
                    run: "r1".parse().unwrap(),
                    fault: 0,
                    action: "rm-everything".parse().unwrap(),
                    duration_ms: 1000,
                }),
                Duration::from_secs(5),
                &Default::default(),
            )
            .await
            .unwrap();
        let reply = ex
            .replies
            .values()
            .next()
            .unwrap_or_else(|| panic!("no reply"));
        match &reply.0.body {
            Body::Error(e) => {
                assert_eq!(e.code, maestro_protocol::ErrorCode::UnknownAction);
                assert!(e.message.contains("\"rm-everything\""), "{}", e.message);
            }
            other => panic!("not refused: {other:?}"),
        }
        controller.close().await;
    });
}

#[test]
fn rabbitmq_queue_depth_grows_while_consumers_are_missing() {
    let rabbit = ScriptedSut::rabbitmq_with_management().unwrap();
    let c = Cluster::start(1);
    let mgmt = format!("rabbitmq={}", rabbit.management_url.clone().unwrap());
    let _i = inspector(&c, &["--source", &mgmt]);
    let events = Events::watch(&c);
    let (run, s) = c.run_test(
        &format!("{}?keep=true", rabbit.url),
        &["--rate", "500", "--duration", "4s", "--consumers", "0"],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let run_id = s["run_id"].as_str().unwrap();
    let queue = format!("maestro.{run_id}.0");
    // Nobody consumes: the queue holds what was sent, and the inspector sees it grow.
    let depth = events.until("rabbitmq", "queue_depth", Some(&queue), |d| d >= 2000.0);
    assert_eq!(depth, 2000.0);
    let folder = c.results.join(run_id);
    let rows = maestro_report::sut::read_sut(&folder.join("sut.csv")).unwrap();
    let series: Vec<f64> = rows
        .iter()
        .filter(|r| r.metric == "queue_depth" && r.label == queue)
        .map(|r| r.value)
        .collect();
    // In sut.csv too, on the run's seconds (RabbitMQ's queue numbers lag the run, so
    // only the last seconds may have them; the events above show the growth).
    assert!(!series.is_empty(), "{rows:?}");
    assert!(
        series.windows(2).all(|w| w[1] >= w[0]),
        "depth only grows: {series:?}"
    );
    // Every reading the inspector published, from the run until now: it grew to 2000
    // (RabbitMQ refreshes a queue's numbers on its own beat, so some repeat).
    let seen = events.all("rabbitmq", "queue_depth", Some(&queue));
    assert!(seen.windows(2).all(|w| w[1] >= w[0]), "{seen:?}");
    assert!(seen.first().is_some_and(|d| *d < 2000.0), "{seen:?}");
    let consumers = rows
        .iter()
        .find(|r| r.metric == "consumers" && r.label == queue)
        .map(|r| r.value);
    assert_eq!(consumers, Some(0.0));
    assert!(
        metric(source(&s, "rabbitmq"), "memory_bytes")["max"]
            .as_f64()
            .unwrap()
            > 1e6
    );
}

#[test]
fn kafka_lag_grows_and_drains() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let tansu = ScriptedSut::tansu().unwrap();
    let c = Cluster::start(1);
    // Two bootstrap servers, the first one dead: the source reads through the other.
    let servers = format!(
        "kafka=kafka://127.0.0.1:{},{}",
        maestro_testkit::free_port(),
        tansu.url.trim_start_matches("kafka://")
    );
    let _i = inspector(&c, &["--source", &servers]);
    let events = Events::watch(&c);
    let bootstrap = tansu.url.trim_start_matches("kafka://").to_owned();
    let topic = format!("lag-{}", std::process::id());
    let group = format!("lag-group-{}", std::process::id());
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    // One record per batch, to partition 0: tansu counts a batch as one offset.
    let produce = |n: usize| {
        for i in 0..n {
            producer
                .send(
                    BaseRecord::<(), _>::to(&topic)
                        .partition(0)
                        .payload(&format!("m{i}")),
                )
                .unwrap();
            producer.flush(Duration::from_secs(10)).unwrap();
        }
    };
    produce(100);
    // A group that has read nothing yet: its offset is at the start.
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let commit = |offset: i64| {
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(offset))
            .unwrap();
        consumer.commit(&tpl, CommitMode::Sync).unwrap();
    };
    commit(0);
    let label = format!("{group}/{topic}");
    assert_eq!(
        events.until("kafka", "consumer_lag", Some(&label), |l| l == 100.0),
        100.0
    );
    produce(150);
    assert_eq!(
        events.until("kafka", "consumer_lag", Some(&label), |l| l == 250.0),
        250.0
    );
    commit(250);
    assert_eq!(
        events.until("kafka", "consumer_lag", Some(&label), |l| l == 0.0),
        0.0
    );
    let end = events.latest("kafka", "end_offset", Some(&format!("{topic}/0")));
    assert_eq!(end, Some(250.0));
}

/// A Mosquitto that runs as a daemon with a pid file (so a fault can kill it and start it
/// again); whatever runs from its pid file is killed on drop.
struct DaemonMosquitto {
    dir: maestro_testkit::TestDir,
    conf: std::path::PathBuf,
    port: u16,
}

impl DaemonMosquitto {
    fn start() -> Self {
        let port = maestro_testkit::free_port();
        let dir = maestro_testkit::test_dir(&format!("daemon-mq-{port}"));
        // Mosquitto drops to its own user before it writes the pid file.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nsys_interval 1\npid_file {}\n",
                dir.join("m.pid").display()
            ),
        )
        .unwrap();
        let m = Self { dir, conf, port };
        m.launch();
        m
    }

    fn command(&self) -> Vec<String> {
        vec![
            "mosquitto".into(),
            "-d".into(),
            "-c".into(),
            self.conf.display().to_string(),
        ]
    }

    fn launch(&self) {
        let c = self.command();
        let status = std::process::Command::new(&c[0])
            .args(&c[1..])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(wait_for(Duration::from_secs(10), || self.pid().is_some()
            && std::net::TcpStream::connect(("127.0.0.1", self.port))
                .is_ok()));
    }

    fn pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.dir.join("m.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        std::path::Path::new(&format!("/proc/{pid}"))
            .exists()
            .then_some(pid)
    }
}

impl Drop for DaemonMosquitto {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            maestro_testkit::signal_pid(pid, maestro_testkit::signal::SIGKILL);
        }
    }
}

#[test]
fn a_killed_or_bounced_mosquitto_is_started_again() {
    let mq = DaemonMosquitto::start();
    let first = mq.pid().unwrap();
    let c = Cluster::start(1);
    let pidfile = mq.dir.join("m.pid");
    let command = serde_json::to_string(&mq.command()).unwrap();
    let faults = mq.dir.join("faults.toml");
    std::fs::write(
        &faults,
        format!(
            "[[action]]\nname = \"kill-broker\"\nkind = \"kill\"\ntarget = \"pidfile:{p}\"\ncommand = {command}\n\n[[action]]\nname = \"bounce-broker\"\nkind = \"restart\"\ntarget = \"pidfile:{p}\"\ncommand = {command}\n",
            p = pidfile.display()
        ),
    )
    .unwrap();
    let _i = inspector(&c, &["--faults", faults.to_str().unwrap()]);
    let sut = format!("mqtt://127.0.0.1:{}/kb?qos=1", mq.port);
    let results = c.results.to_str().unwrap().to_owned();
    let run = c.cli(
        &[
            "start",
            "--sut",
            &sut,
            "--rate",
            "100",
            "--duration",
            "10s",
            "--fault",
            "2s+2s:kill-broker",
            "--fault",
            "6s+1s:bounce-broker",
            "--results",
            &results,
            "-o",
            "json",
        ],
        Duration::from_secs(90),
    );
    // The run may be degraded by the errors the broker's loss caused; it finishes.
    assert!(matches!(run.code, Some(0) | Some(4)), "{run:?}");
    let s = run.json().unwrap();
    let kill = &s["faults"][0];
    assert_eq!(kill["action"], "kill-broker", "{s}");
    assert!(kill["errors"].as_array().unwrap().is_empty(), "{kill}");
    let t = |f: &Value, k: &str| f[k].as_i64().unwrap_or_else(|| panic!("no {k} in {f}"));
    let down_ms = (t(kill, "healed_at_us") - t(kill, "confirmed_at_us")) / 1000;
    assert!(
        (1900..=2700).contains(&down_ms),
        "down for {down_ms} ms: {kill}"
    );
    let bounce = &s["faults"][1];
    assert_eq!(bounce["action"], "bounce-broker");
    assert!(bounce["errors"].as_array().unwrap().is_empty(), "{bounce}");
    assert!(bounce["confirmed_at_us"].as_i64().is_some(), "{bounce}");
    // Killed, started, bounced, started: another process serves the port now.
    let now = mq.pid().expect("mosquitto runs again");
    assert_ne!(now, first);
    // The restarted broker leads a process group of its own (not the inspector's).
    let stat = std::fs::read_to_string(format!("/proc/{now}/stat")).unwrap();
    let pgrp: u32 = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(2))
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("no process group in {stat}"));
    assert_eq!(pgrp, now, "the restarted broker's process group");
    assert!(std::net::TcpStream::connect(("127.0.0.1", mq.port)).is_ok());
    // The clients saw the broker go away, and a second after the heal all was well.
    assert!(
        kill["first_error_after_ms"].as_u64().is_some()
            || s["errors"].as_u64() > Some(0)
            || s["lost"].as_u64() > Some(0),
        "{s}"
    );
}

/// A network namespace of this test's own with a veth pair to it (`10.213.N.1` here,
/// `10.213.N.2` inside); removed on drop.
struct Netns {
    name: String,
    host_if: String,
    inside: String,
}

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn new() -> Self {
        let n = std::process::id() % 250 + 1;
        let name = format!("maestro-t{}", std::process::id());
        let (host_if, ns_if) = (format!("mv{n}h"), format!("mv{n}n"));
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &host_if])
            .output();
        ip(&["netns", "add", &name]);
        let ns = Self {
            name: name.clone(),
            host_if: host_if.clone(),
            inside: format!("10.213.{n}.2"),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        ip(&["addr", "add", &format!("10.213.{n}.1/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "netns",
            "exec",
            &name,
            "ip",
            "addr",
            "add",
            &format!("10.213.{n}.2/30"),
            "dev",
            &ns_if,
        ]);
        ip(&["netns", "exec", &name, "ip", "link", "set", &ns_if, "up"]);
        ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

#[test]
fn a_partition_in_a_namespace_cuts_the_broker_off_and_heals() {
    let ns = Netns::new();
    let port = 1883;
    let dir = maestro_testkit::test_dir("part");
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} {}\nallow_anonymous true\npersistence false\n",
            ns.inside
        ),
    )
    .unwrap();
    // Mosquitto inside the namespace (`ip netns exec` becomes it).
    let mut child = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "mosquitto",
            "-c",
            conf.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut child);
    assert!(wait_for(Duration::from_secs(10), || {
        std::net::TcpStream::connect((ns.inside.as_str(), port)).is_ok()
    }));
    let faults = dir.join("faults.toml");
    std::fs::write(
        &faults,
        format!(
            "[[action]]\nname = \"cut-broker\"\nkind = \"partition\"\nport = {port}\nnetns = \"{n}\"\n\
             [[action]]\nname = \"lossy-broker\"\nkind = \"loss\"\nport = {port}\nnetns = \"{n}\"\npercent = 30.0\n",
            n = ns.name
        ),
    )
    .unwrap();
    let c = Cluster::start(1);
    let _i = inspector(&c, &["--faults", faults.to_str().unwrap()]);
    let (run, s) = c.run_test(
        &format!("mqtt://{}:{port}/cut?qos=1", ns.inside),
        &[
            "--rate",
            "100",
            "--duration",
            "11s",
            "--fault",
            "2s+2s:cut-broker",
            "--fault",
            "7s+2s:lossy-broker",
        ],
    );
    // Nothing is lost: TCP carries the publishes over once the rules are gone (before the
    // MQTT producer kept rumqttc's poll across dropped calls, 17 vanished here and the
    // producer stalled).
    assert_eq!(run.code, Some(0), "{run:?}");
    let f = &s["faults"][0];
    assert!(f["errors"].as_array().unwrap().is_empty(), "{f}");
    let t = |k: &str| f[k].as_i64().unwrap_or_else(|| panic!("no {k} in {f}"));
    let cut_ms = (t("healed_at_us") - t("confirmed_at_us")) / 1000;
    assert!((1900..=2700).contains(&cut_ms), "cut for {cut_ms} ms: {f}");
    // Messages sent into the partition waited for it (TCP retransmitted them after).
    assert!(
        f["during"]["response_time_us"]["p50"].as_u64().unwrap() > 400_000,
        "{f}"
    );
    assert!(
        f["before"]["response_time_us"]["p99"].as_u64().unwrap() < 200_000,
        "{f}"
    );
    assert_eq!(s["lost"], 0, "{s}");
    // 30 % of the packets dropped both ways: TCP resends them, late.
    let lossy = &s["faults"][1];
    assert!(lossy["errors"].as_array().unwrap().is_empty(), "{lossy}");
    // (Its "before" is the stretch after the cut; the cut's own "before" is the clean one.)
    let clean_p99 = f["before"]["response_time_us"]["p99"].as_u64().unwrap();
    let during = &lossy["during"]["response_time_us"];
    assert!(during["p99"].as_u64().unwrap() > 150_000, "{lossy}");
    assert!(
        during["p50"].as_u64().unwrap() > 10 * clean_p99,
        "{lossy} vs {clean_p99}"
    );
    // The rules are gone.
    let rules = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "iptables", "-S"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&rules.stdout).contains("maestro-fault"));
}

/// The state letter of a process (`T` stopped), from /proc.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Faults heal, always: a run's controller killed with SIGKILL mid-fault (its last will
/// fires) gets its pause healed by the inspector; an inspector killed mid-fault leaves
/// the heal in its state file, and heals it when it starts again, before it joins.
#[test]
fn faults_heal_when_the_controller_or_the_inspector_is_killed() {
    let mq = Mosquitto::start().unwrap();
    let sut_pid = mq.proc.pid();
    let c = Cluster::start(1);
    let dir = c.results.join("setup");
    std::fs::create_dir_all(&dir).unwrap();
    let faults = dir.join("faults.toml");
    std::fs::write(
        &faults,
        format!(
            "[[action]]\nname = \"pause-broker\"\nkind = \"pause\"\ntarget = \"pid:{sut_pid}\"\n"
        ),
    )
    .unwrap();
    let state = dir.join("inspector-state.json");
    let args = [
        "--faults",
        faults.to_str().unwrap(),
        "--state-file",
        state.to_str().unwrap(),
    ];
    let mut inspector_proc = inspector(&c, &args);
    let stopped = || proc_state(sut_pid) == Some('T');
    let url = mq.url("heal", "qos=0");
    let run_args = [
        "--rate",
        "100",
        "--duration",
        "60s",
        "--fault",
        "1s+50s:pause-broker",
    ];

    // 1. The controller is killed while the broker is paused.
    let cli = c.spawn_start(&url, &run_args);
    assert!(
        wait_for(Duration::from_secs(30), stopped),
        "never paused: {}",
        cli.log_text()
    );
    assert!(state.exists(), "no state file while a fault is in place");
    cli.signal(maestro_testkit::signal::SIGKILL);
    let killed = std::time::Instant::now();
    assert!(
        wait_for(Duration::from_secs(40), || !stopped()),
        "still paused 40 s after its controller was killed: {}",
        inspector_proc.log_text()
    );
    let healed_after = killed.elapsed();
    eprintln!("healed {healed_after:?} after the controller's SIGKILL");
    assert!(inspector_proc.log_text().contains("did not come back"));
    assert!(
        wait_for(Duration::from_secs(10), || !state.exists()),
        "state file left"
    );

    // 2. The inspector is killed while the broker is paused.
    assert!(
        wait_for(Duration::from_secs(30), || c
            .cli(&["stats", "-o", "json"], Duration::from_secs(10))
            .stdout
            .contains("idle")),
        "the worker never went idle"
    );
    let cli = c.spawn_start(&url, &run_args);
    assert!(
        wait_for(Duration::from_secs(30), stopped),
        "never paused: {}",
        cli.log_text()
    );
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(
        text.contains("stopped") && text.contains(&sut_pid.to_string()),
        "{text}"
    );
    inspector_proc.signal(maestro_testkit::signal::SIGKILL);
    let _ = inspector_proc.wait_exit(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    assert!(stopped(), "paused until an inspector heals it");
    let again = inspector(&c, &args);
    assert!(
        !stopped(),
        "the new inspector joined before healing what it found"
    );
    assert!(
        again
            .log_text()
            .contains("healed a fault left by an earlier inspector")
    );
    assert!(!state.exists(), "state file left");
    cli.signal(maestro_testkit::signal::SIGKILL);
}
