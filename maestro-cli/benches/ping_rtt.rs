//! Benchmark: control-plane ping round trip with many worker processes.
//!
//! Starts the real `maestro-broker` and N real `maestro-worker` processes on a free port,
//! then pings them all from one controller, round after round, and prints the round-trip
//! percentiles over every (round, worker) sample. As a baseline measured in the same run,
//! it first times a bare MQTT echo through the same broker (one client publishing to a
//! topic it subscribes to), so the figures read as "x times a bare broker round trip".
//!
//! ```text
//! cargo build --release --workspace
//! cargo bench -p maestro-cli --bench ping_rtt -- [--workers 10,100] [--rounds 200] [--interval 20ms]
//! ```

use hdrhistogram::Histogram;
use maestro_cli::Controller;
use maestro_control::ControlUrl;
use maestro_protocol::{Body, Ping, Target};
use maestro_testkit::{Proc, TestBroker, spawn_peer, unique_cluster};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

struct Options {
    workers: Vec<usize>,
    rounds: usize,
    interval: Duration,
}

fn options() -> Options {
    let mut o = Options {
        workers: vec![10, 100],
        rounds: 200,
        interval: Duration::from_millis(20),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--workers" => {
                o.workers = value
                    .split(',')
                    .map(|v| v.parse().expect("--workers takes numbers like 10,100"))
                    .collect();
                i += 1;
            }
            "--interval" => {
                o.interval =
                    humantime::parse_duration(&value).expect("--interval takes a duration");
                i += 1;
            }
            "--rounds" => {
                o.rounds = value.parse().expect("--rounds takes a number");
                i += 1;
            }
            // cargo bench passes --bench; ignore what is not ours.
            _ => {}
        }
        i += 1;
    }
    o
}

fn main() -> anyhow::Result<()> {
    let o = options();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        println!(
            "ping round trip: {} rounds per size, one controller, real processes",
            o.rounds
        );
        for &n in &o.workers {
            bench(n, &o).await?;
        }
        Ok(())
    })
}

fn us(h: &Histogram<u64>, q: f64) -> String {
    format!("{:.2} ms", h.value_at_quantile(q) as f64 / 1000.0)
}

async fn bench(n: usize, o: &Options) -> anyhow::Result<()> {
    let broker = TestBroker::start(&[])?;
    let url: ControlUrl = broker.url().parse()?;
    let baseline = mqtt_echo(broker.port, o.rounds).await?;

    let cluster = unique_cluster();
    let mut workers: Vec<Proc> = Vec::with_capacity(n);
    for i in 0..n {
        workers.push(spawn_peer(
            "worker",
            &broker.url(),
            &cluster,
            &["--name", &format!("w{i}")],
        )?);
    }
    let mut controller = Controller::connect(&url, &cluster, Duration::from_secs(10)).await?;
    let never = CancellationToken::new();
    let started = Instant::now();
    loop {
        let ex = controller
            .request(
                &Target::All,
                Body::Ping(Ping {}),
                Duration::from_secs(2),
                &never,
            )
            .await?;
        if ex.replies.len() == n {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "only {} of {n} workers answered after 60 s",
            ex.replies.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pids: Vec<u32> = workers.iter().map(Proc::pid).collect();
    let cpu_before = (
        cpu_ns(std::process::id()),
        cpu_ns(broker.proc.pid()),
        pids.iter().map(|p| cpu_ns(*p)).sum::<u64>(),
    );
    let mut rtt = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut round_time = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut missing = 0;
    for round in 0..o.rounds + 10 {
        let t = Instant::now();
        let ex = controller
            .request(
                &Target::All,
                Body::Ping(Ping {}),
                Duration::from_secs(5),
                &never,
            )
            .await?;
        let took = t.elapsed();
        if round < 10 {
            continue; // warm-up
        }
        round_time.record(took.as_micros() as u64)?;
        missing += n - ex.replies.len();
        for outcome in maestro_controller::outcome::outcomes(&ex) {
            if let Some(r) = outcome.rtt_us {
                rtt.record(r.max(1) as u64)?;
            }
        }
        tokio::time::sleep(o.interval).await;
    }
    let cpu_after = (
        cpu_ns(std::process::id()),
        cpu_ns(broker.proc.pid()),
        pids.iter().map(|p| cpu_ns(*p)).sum::<u64>(),
    );
    let rounds = (o.rounds + 10) as u64;
    println!(
        "workers={n:<4} cpu per round: controller {} us, broker {} us, all workers {} us ({} us each)",
        (cpu_after.0 - cpu_before.0) / rounds / 1000,
        (cpu_after.1 - cpu_before.1) / rounds / 1000,
        (cpu_after.2 - cpu_before.2) / rounds / 1000,
        (cpu_after.2 - cpu_before.2) / rounds / 1000 / n as u64,
    );
    controller.close().await;
    println!(
        "workers={n:<4} samples={:<6} rtt p50={} p99={} max={} | all {n} answered p50={} p99={} | missing={missing} | baseline bare MQTT echo p50={} p99={} | rtt p50/baseline p50 = {:.1}x",
        rtt.len(),
        us(&rtt, 0.5),
        us(&rtt, 0.99),
        us(&rtt, 1.0),
        us(&round_time, 0.5),
        us(&round_time, 0.99),
        us(&baseline, 0.5),
        us(&baseline, 0.99),
        rtt.value_at_quantile(0.5) as f64 / baseline.value_at_quantile(0.5).max(1) as f64,
    );
    drop(workers);
    Ok(())
}

/// CPU time of every thread of a process, in ns (from /proc/PID/task/*/schedstat).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

/// Round trip of a QoS 1 publish to a topic the same client subscribes to.
async fn mqtt_echo(port: u16, rounds: usize) -> anyhow::Result<Histogram<u64>> {
    use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS};
    let mut options = MqttOptions::new("bench-echo", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    client.subscribe("bench/echo", QoS::AtLeastOnce).await?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await? {
            break;
        }
    }
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    for _ in 0..rounds + 10 {
        let t = Instant::now();
        client
            .publish("bench/echo", QoS::AtLeastOnce, false, vec![0u8; 200])
            .await?;
        loop {
            if let Event::Incoming(Packet::Publish(_)) = eventloop.poll().await? {
                break;
            }
        }
        h.record(t.elapsed().as_micros().max(1) as u64)?;
    }
    Ok(h)
}
