//! Benchmarks of the load engine with MQTT, against a private Mosquitto started here.
//! Each prints figures, as ratios against a baseline measured in the same run:
//!
//! 1. QoS 0 publish cost: maestro's producer vs a minimal rumqttc publish loop, in
//!    messages per CPU-second of the publishing thread (target >= 0.95x).
//! 2. Measurement cost per message: stamping (producer) and recording (consumer), in ns
//!    (target <= 100 ns).
//! 3. Pacing at 10,000 msg/s for 20 s: every 1-second window of actual send times within
//!    1 % of the target; send-lag p99 (target <= 2 ms).
//! 4. Maximum end-to-end QoS 0 rate through Mosquitto, one worker producing and consuming,
//!    vs a minimal rumqttc publisher and subscriber (target >= 0.9x).
//!
//! ```text
//! cargo bench -p maestro-worker --bench engine [-- measure|publish|pacing|e2e]
//! ```

#![allow(clippy::unwrap_used)] // a benchmark that cannot unwrap has failed

use maestro_protocol::{PayloadHeader, ProducerPlan, RunId};
use maestro_testkit::Mosquitto;
use maestro_worker::driver::mqtt::MqttDriver;
use maestro_worker::engine::accounting::Accounting;
use maestro_worker::engine::clock::WallClock;
use maestro_worker::engine::recorder::Recorder;
use maestro_worker::engine::tasks::{self, now_ns};
use rumqttc::{Event, Packet, QoS};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

mod common;
use common::*;

fn bench_publish(mq: &Mosquitto) {
    let d = Duration::from_secs(5);
    let port = mq.port;
    ratio_rounds("publish QoS0", 0.95, |round| {
        let (sent_min, cpu_min) =
            on_thread(move || minimal_publisher(port, None, "bench/minimal".into(), d))
                .join()
                .unwrap();
        let run = RunId::new(format!("pub{round}")).unwrap();
        let sut = mq.url("bench", "");
        let (sent_m, cpu_m, _) =
            run_producer(MqttDriver::from_url(&sut, &run).unwrap(), &sut, 0.0, d);
        (sent_min, cpu_min.as_secs_f64(), sent_m, cpu_m.as_secs_f64())
    });
}

fn bench_measure() {
    const N: u64 = 5_000_000;
    let mut buf = vec![0u8; SIZE];
    let mut rec = Recorder::default();
    let clock = WallClock::default();
    let t = Instant::now();
    for seq in 0..N {
        let actual = clock.now_ns();
        let intended = actual - 1_000;
        PayloadHeader {
            producer: 0,
            sequence: seq,
            intended_ns: intended,
            actual_ns: actual,
        }
        .write(&mut buf);
        rec.sent(actual - intended, buf.len(), true);
        black_box(&buf);
    }
    let stamp = t.elapsed().as_nanos() as f64 / N as f64;
    black_box(&rec);
    let mut acc = Accounting::new(0, 1);
    let mut rec = Recorder::default();
    let t = Instant::now();
    for seq in 0..N {
        buf[8..16].copy_from_slice(&seq.to_le_bytes());
        let h = PayloadHeader::read(black_box(&buf)).unwrap();
        let now = clock.now_ns();
        acc.record(h.producer, h.sequence);
        rec.received(now - h.intended_ns, now - h.actual_ns, buf.len(), true);
    }
    let record = t.elapsed().as_nanos() as f64 / N as f64;
    black_box((&rec, &acc));
    let t = Instant::now();
    for _ in 0..N {
        black_box(clock.now_ns());
    }
    let fast = t.elapsed().as_nanos() as f64 / N as f64;
    let t = Instant::now();
    for _ in 0..N {
        black_box(now_ns());
    }
    let system = t.elapsed().as_nanos() as f64 / N as f64;
    println!(
        "measurement cost per message: stamp (clock + header + send-lag record) {stamp:.1} ns, record (header + clock + accounting + 2 histograms) {record:.1} ns, total {:.1} ns (target <= 100 ns); clock read {fast:.1} ns (system wall clock {system:.1} ns)",
        stamp + record
    );
}

fn bench_pacing(mq: &Mosquitto) {
    let rate = 10_000.0;
    let d = Duration::from_secs(20);
    // An independent subscriber buckets the producer's actual send times by second.
    let port = mq.port;
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..40).map(|_| AtomicU64::new(0)).collect());
    let start_ns = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (c2, s2, d2) = (counts.clone(), start_ns.clone(), done.clone());
    let sub = on_thread(move || async move {
        let (client, mut eventloop) = client(port, None, "bench-pacing-sub");
        client
            .subscribe("pacing/pace/0", QoS::AtMostOnce)
            .await
            .unwrap();
        while !d2.load(Ordering::Relaxed) {
            if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
                tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await
                && let Ok(h) = PayloadHeader::read(&p.payload)
            {
                let s = s2.load(Ordering::Relaxed) as i64;
                let sec = (h.actual_ns - s).div_euclid(1_000_000_000);
                if (0..40).contains(&sec) {
                    c2[sec as usize].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let run = RunId::new("pace").unwrap();
    let sut = mq.url("pacing", "");
    let driver = MqttDriver::from_url(&sut, &run).unwrap();
    let mut e = engine();
    let control = e.control.clone();
    let plan = ProducerPlan {
        id: 0,
        topic: 0,
        rate,
        count: None,
    };
    let spec = spec(&sut, rate, d);
    let (ready_tx, ready_rx) = oneshot::channel();
    let handle = on_thread(move || tasks::producer(driver, plan, spec, ready_tx, control));
    ready_rx.blocking_recv().unwrap().unwrap();
    let t0 = now_ns() + 100_000_000;
    start_ns.store(t0 as u64, Ordering::Relaxed);
    e.start.send_replace(Some(t0));
    handle.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    done.store(true, Ordering::Relaxed);
    sub.join().unwrap();
    let out = drain(&mut e);
    let (rec, sent) = (out.recorder, out.sent);
    let windows: Vec<u64> = counts
        .iter()
        .take(20)
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    let worst = windows
        .iter()
        .map(|c| (*c as f64 - rate).abs() / rate * 100.0)
        .fold(0.0, f64::max);
    println!(
        "pacing 10000 msg/s x 20 s: {sent} sent; per-second sends seen by a subscriber {windows:?}"
    );
    println!(
        "pacing: worst 1-second window off by {worst:.2} % (target <= 1 %); send lag p50 {} us p99 {} us max {} us (target p99 <= 2000 us)",
        rec.lag.value_at_quantile(0.5),
        rec.lag.value_at_quantile(0.99),
        rec.lag.max()
    );
}

fn bench_e2e(mq: &Mosquitto) {
    let d = Duration::from_secs(5);
    let port = mq.port;
    let mut ratios = Vec::new();
    for round in 0..3 {
        // Minimal: a rumqttc publisher thread and a rumqttc subscriber thread.
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r2, s2) = (received.clone(), stop.clone());
        let topic = format!("e2e/minimal{round}");
        let t2 = topic.clone();
        let sub = on_thread(move || async move {
            let (client, mut eventloop) = client(port, None, "bench-e2e-sub");
            client.subscribe(t2, QoS::AtMostOnce).await.unwrap();
            while !s2.load(Ordering::Relaxed) {
                if let Ok(Ok(Event::Incoming(Packet::Publish(_)))) =
                    tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await
                {
                    r2.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        let before = received.load(Ordering::Relaxed);
        on_thread(move || minimal_publisher(port, None, topic, d))
            .join()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let minimal = (received.load(Ordering::Relaxed) - before) as f64 / d.as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        sub.join().unwrap();

        // Maestro: a producer and a consumer task, each on its own data-plane thread.
        let run = RunId::new(format!("e2e{round}")).unwrap();
        let sut = mq.url("e2e", "");
        let out = run_pair(MqttDriver::from_url(&sut, &run).unwrap(), &sut, 0.0, d);
        let (sent, rec) = (out.sent, out.recorder);
        let ours = rec.counters.received as f64 / d.as_secs_f64();
        ratios.push(ours / minimal);
        println!(
            "e2e QoS0 round {round}: minimal rumqttc {minimal:.0} msg/s received | maestro {ours:.0} msg/s received ({sent} sent) | ratio {:.2}x",
            ours / minimal
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "e2e QoS0: median ratio maestro/minimal = {:.2}x (target >= 0.9x)",
        ratios[1]
    );
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let mq = Mosquitto::start().unwrap();
    println!(
        "against a private Mosquitto on 127.0.0.1:{}; {SIZE}-byte messages",
        mq.port
    );
    if want("measure") {
        bench_measure();
    }
    if want("publish") {
        bench_publish(&mq);
    }
    if want("pacing") {
        bench_pacing(&mq);
    }
    if want("e2e") {
        bench_e2e(&mq);
    }
}
