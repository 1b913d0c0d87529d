//! Helpers shared by the benchmarks: threads with their own runtime and CPU time, and
//! the engine's producer and consumer tasks driven directly.

#![allow(dead_code)] // each benchmark uses a part

use maestro_protocol::{MessageSize, TestSpec};
use maestro_worker::engine::recorder::Recorder;
use maestro_worker::engine::tasks::{Control, Report};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub const SIZE: usize = 256;

/// CPU time of the whole process (all threads, also those that ended), in ns.
pub fn process_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is 14th, stime 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    // `rest` starts at field 3 (the state), so utime (14) and stime (15) are at 11 and 12.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let ticks = field(11) + field(12);
    ticks * 10_000_000 // 100 ticks per second
}

/// CPU time of the calling thread, in ns.
pub fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Runs `f` on its own thread with a current-thread runtime; returns its result and the
/// thread's CPU time.
pub fn on_thread<T, F, M>(make: M) -> std::thread::JoinHandle<(T, Duration)>
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + 'static,
    M: FnOnce() -> F + Send + 'static,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cpu0 = thread_cpu_ns();
        let out = rt.block_on(make());
        (out, Duration::from_nanos(thread_cpu_ns() - cpu0))
    })
}

pub fn spec(sut: &str, rate: f64, duration: Duration) -> TestSpec {
    TestSpec {
        size: MessageSize::Fixed(SIZE as u32),
        ..TestSpec::new(sut.parse().unwrap(), rate, duration)
    }
}

pub struct Engine {
    pub start: watch::Sender<Option<i64>>,
    pub control: Control,
    pub reports: mpsc::UnboundedReceiver<Report>,
}

pub fn engine() -> Engine {
    let (start, start_rx) = watch::channel(None);
    let (tx, reports) = mpsc::unbounded_channel();
    Engine {
        start,
        control: Control {
            start: start_rx,
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            // Consumers read at once (no backlog).
            resume: {
                let t = CancellationToken::new();
                t.cancel();
                t
            },
            reports: tx,
            pool: Default::default(),
            run: "bench".into(),
        },
        reports,
    }
}

/// What one engine run produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every task's recorder, merged.
    pub recorder: Recorder,
    /// Messages the producers sent (their sequence numbers).
    pub sent: u64,
    /// Distinct messages the consumers received, by their accounting.
    pub unique: u64,
    /// Errors the tasks reported, with their messages.
    pub errors: Vec<String>,
    /// Response time by run second (where the latency was).
    pub per_second: std::collections::BTreeMap<u32, Recorder>,
}

impl Outcome {
    /// Response-time p99 of each run second, in ms.
    pub fn p99_by_second_ms(&self) -> Vec<f64> {
        self.per_second
            .values()
            .map(|r| (r.response.value_at_quantile(0.99) as f64 / 100.0).round() / 10.0)
            .collect()
    }

    /// Response-time p99 in ms over the run seconds from `from` on (the run without its
    /// first seconds).
    pub fn p99_from_second_ms(&self, from: u32) -> f64 {
        let mut merged = Recorder::default();
        for (_, r) in self.per_second.range(from..) {
            merged.merge(r);
        }
        merged.response.value_at_quantile(0.99) as f64 / 1000.0
    }

    /// Sent but never received (one subscription).
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.unique)
    }
}

/// Drains an engine's reports.
pub fn drain(e: &mut Engine) -> Outcome {
    let mut out = Outcome::default();
    while let Ok(r) = e.reports.try_recv() {
        match r {
            Report::Interval { second, recorder } => {
                out.recorder.merge(&recorder);
                out.per_second.entry(second).or_default().merge(&recorder);
            }
            Report::Final(f) => {
                out.sent += f.sent.map_or(0, |s| s.sent);
                out.unique += f.deliveries.iter().map(|d| d.unique).sum::<u64>();
                out.errors
                    .extend(f.errors.iter().map(|(m, n)| format!("{m} x{n}")));
            }
        }
    }
    out
}

/// Runs the engine's producer task for `duration` (rate 0: as fast as it goes) on its own
/// thread; returns (messages sent, the thread's CPU time, recorder).
pub fn run_producer<D: maestro_worker::driver::Driver>(
    driver: D,
    sut: &str,
    rate: f64,
    duration: Duration,
) -> (u64, Duration, Recorder) {
    use maestro_protocol::ProducerPlan;
    use maestro_worker::engine::tasks::{self, now_ns};
    let mut e = engine();
    let control = e.control.clone();
    let spec = spec(sut, rate, duration);
    let plan = ProducerPlan {
        id: 0,
        topic: 0,
        rate,
        count: None,
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let handle = on_thread(move || tasks::producer(driver, plan, spec, ready_tx, control));
    ready_rx.blocking_recv().unwrap().unwrap();
    e.start.send_replace(Some(now_ns() + 50_000_000));
    let ((), cpu) = handle.join().unwrap();
    let out = drain(&mut e);
    (out.sent, cpu, out.recorder)
}

/// Rounds (3, or `MAESTRO_BENCH_ROUNDS`) of (baseline messages, baseline CPU-s, maestro
/// messages, maestro CPU-s); prints messages per CPU-second for each and the median ratio
/// against `target`. On a shared 2-core machine one round's ratio moves by ±0.15x: give
/// several (7 or more) for a figure to compare.
pub fn ratio_rounds(
    label: &str,
    target: f64,
    mut round: impl FnMut(usize) -> (u64, f64, u64, f64),
) {
    let rounds: usize = std::env::var("MAESTRO_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(3);
    let mut ratios = Vec::new();
    for r in 0..rounds {
        let (n_min, cpu_min, n_ours, cpu_ours) = round(r);
        let (base, ours) = (n_min as f64 / cpu_min, n_ours as f64 / cpu_ours);
        ratios.push(ours / base);
        println!(
            "{label} round {r}: minimal {base:.0} msg/CPU-s ({n_min} msgs, {cpu_min:.2} CPU-s) | maestro {ours:.0} msg/CPU-s ({n_ours} msgs, {cpu_ours:.2} CPU-s) | ratio {:.2}x",
            ours / base
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "{label}: median ratio maestro/minimal over {rounds} rounds = {:.2}x (target >= {target}x)",
        ratios[rounds / 2]
    );
}

/// Runs one producer and one consumer task (one subscription) on two threads for
/// `duration`; returns what they recorded and counted.
pub fn run_pair<D: maestro_worker::driver::Driver>(
    driver: D,
    sut: &str,
    rate: f64,
    duration: Duration,
) -> Outcome {
    use maestro_protocol::{ConsumerPlan, ProducerPlan};
    use maestro_worker::engine::tasks::{self, now_ns};
    let mut e = engine();
    let spec = spec(sut, rate, duration);
    let (ptx, prx) = tokio::sync::oneshot::channel();
    let (ctx, crx) = tokio::sync::oneshot::channel();
    let (pd, cd) = (driver.clone(), driver);
    let (ps, cs) = (spec.clone(), spec);
    let (pc, cc) = (e.control.clone(), e.control.clone());
    let consumer = ConsumerPlan {
        id: 0,
        topic: 0,
        subscription: 0,
    };
    let cons =
        on_thread(move || tasks::consumer(cd, consumer, cs, std::sync::Arc::from([]), ctx, cc));
    crx.blocking_recv().unwrap().unwrap();
    let plan = ProducerPlan {
        id: 0,
        topic: 0,
        rate,
        count: None,
    };
    let prod = on_thread(move || tasks::producer(pd, plan, ps, ptx, pc));
    prx.blocking_recv().unwrap().unwrap();
    e.start.send_replace(Some(now_ns() + 50_000_000));
    prod.join().unwrap();
    e.control.stop.cancel();
    cons.join().unwrap();
    drain(&mut e)
}

/// A rumqttc client of the benchmark's own, on `127.0.0.1:port`; with `tls`, over TLS
/// (the host name `localhost`, which lab certificates cover).
pub fn client(
    port: u16,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    id: &str,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let host = if tls.is_some() {
        "localhost"
    } else {
        "127.0.0.1"
    };
    let mut o = rumqttc::MqttOptions::new(id, host, port);
    o.set_keep_alive(Duration::from_secs(30));
    if let Some(config) = tls {
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(config),
        ));
    }
    let (c, mut e) = rumqttc::AsyncClient::new(o, 1024);
    let mut n = rumqttc::NetworkOptions::new();
    n.set_tcp_nodelay(true);
    e.set_network_options(n);
    (c, e)
}

/// The minimal rumqttc publisher: one task publishing, one polling, one thread. It reuses
/// one payload (`Bytes` are reference counted), so it allocates nothing per message: the
/// strongest baseline a publish loop can have.
pub async fn minimal_publisher(
    port: u16,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    topic: String,
    duration: Duration,
) -> u64 {
    let (client, eventloop) = client(port, tls, "bench-minimal-pub");
    publish_minimal(client, eventloop, topic, duration).await
}

/// The minimal publish loop on a connected-to-be rumqttc client: waits for its CONNACK,
/// then publishes one reused payload at QoS 0 for `duration`; returns what went out.
pub async fn publish_minimal(
    client: rumqttc::AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    topic: String,
    duration: Duration,
) -> u64 {
    use rumqttc::{Event, Outgoing, Packet, QoS};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;
    let connected = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Event::Incoming(Packet::ConnAck(_))) = eventloop.poll().await {
                break;
            }
        }
    });
    connected.await.expect("no CONNACK within 10 s");
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let payload = bytes::Bytes::from(vec![b'x'; SIZE]);
    let publisher = tokio::spawn(async move {
        while !s.load(Ordering::Relaxed) {
            if client
                .publish_bytes(topic.as_str(), QoS::AtMostOnce, false, payload.clone())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let end = Instant::now() + duration;
    let mut sent = 0u64;
    while Instant::now() < end {
        if let Ok(Event::Outgoing(Outgoing::Publish(_))) = eventloop.poll().await {
            sent += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    publisher.abort();
    sent
}
