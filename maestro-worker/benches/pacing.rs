//! The pacer's precision and cost, against a private Mosquitto started here (QoS 0, one
//! thread per case, as on a data-plane thread). For each case it prints:
//!
//! - **plain loop**: a `clock_nanosleep(TIMER_ABSTIME)` loop to each due time (default
//!   timer slack), measured in the same run: what the machine itself allows;
//! - **tokio timer**: the engine's producers on tokio's 1 ms timer (the pacer before);
//! - **precise**: the same producers on the data-plane thread's microsecond timer (now);
//!
//! with send lag p50/p99/p99.9 (µs), and CPU per message (µs) of the sending thread, each
//! as the median of the rounds. The figures to read: precise send lag p50 <= 20 µs and
//! p99 <= 100 µs at every rate; the CPU ratio precise / tokio timer.
//!
//! ```text
//! cargo bench -p maestro-worker --bench pacing [-- SECONDS [ROUNDS]]   # defaults: 5 3
//! ```
//!
//! `MAESTRO_BENCH_CASES` picks cases as `RATE:PRODUCERS` words (default all four, e.g.
//! `1000:1 5000:10`).

#![allow(clippy::unwrap_used)] // a benchmark that cannot unwrap has failed

use maestro_protocol::{ProducerPlan, RunId};
use maestro_testkit::Mosquitto;
use maestro_worker::driver::mqtt::MqttDriver;
use maestro_worker::engine::recorder::Recorder;
use maestro_worker::engine::tasks::{self, now_ns};
use maestro_worker::engine::timer;
use nix::sys::time::TimeSpec;
use nix::time::{ClockId, ClockNanosleepFlags, clock_nanosleep};
use std::time::Duration;

mod common;
use common::*;

/// (rate, producers)
const CASES: [(f64, u32); 4] = [(1_000.0, 1), (10_000.0, 1), (50_000.0, 1), (5_000.0, 10)];

#[derive(Debug, Clone, Copy)]
struct Figures {
    p50: f64,
    p99: f64,
    p999: f64,
    cpu_per_msg_us: f64,
}

fn figures(lag: &hdrhistogram::Histogram<u64>, cpu: Duration, sent: u64) -> Figures {
    Figures {
        p50: lag.value_at_quantile(0.5) as f64,
        p99: lag.value_at_quantile(0.99) as f64,
        p999: lag.value_at_quantile(0.999) as f64,
        cpu_per_msg_us: cpu.as_nanos() as f64 / 1_000.0 / sent.max(1) as f64,
    }
}

/// A plain `clock_nanosleep` loop to each due time; lag in µs like the engine's.
fn plain_loop(rate: f64, d: Duration) -> Figures {
    std::thread::spawn(move || {
        let mut lag = maestro_protocol::histogram::latency_histogram();
        let n = (rate * d.as_secs_f64()) as u64;
        let interval = 1e9 / rate;
        let t0 = now_ns() + 10_000_000;
        let cpu0 = thread_cpu_ns();
        let mut i = 0;
        while i < n {
            let due = t0 + (i as f64 * interval) as i64;
            let at = TimeSpec::from(Duration::from_nanos(due as u64));
            let _ = clock_nanosleep(
                ClockId::CLOCK_REALTIME,
                ClockNanosleepFlags::TIMER_ABSTIME,
                &at,
            );
            let now = now_ns();
            while i < n && t0 + (i as f64 * interval) as i64 <= now {
                let late = (now - (t0 + (i as f64 * interval) as i64)) / 1_000;
                let _ = lag.record(late.max(0) as u64);
                i += 1;
            }
        }
        figures(&lag, Duration::from_nanos(thread_cpu_ns() - cpu0), n)
    })
    .join()
    .unwrap()
}

/// The engine's producers, `producers` of them sharing `rate`, on one thread: with the
/// data-plane timer (`precise`) or tokio's.
fn engine_producers(
    mq: &Mosquitto,
    rate: f64,
    producers: u32,
    d: Duration,
    precise: bool,
) -> Figures {
    let run = RunId::new(format!("pace{}", now_ns() % 1_000_000)).unwrap();
    let sut = mq.url("pacing", "");
    let driver = MqttDriver::from_url(&sut, &run).unwrap();
    let mut e = engine();
    let mut spec = spec(&sut, rate, d);
    spec.producers = producers;
    spec.consumers = 0;
    let control = e.control.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = on_thread(move || async move {
        let driver_task = precise.then(|| tokio::spawn(timer::install().unwrap().run()));
        let mut tasks_ = Vec::new();
        for id in 0..producers {
            let plan = ProducerPlan {
                id,
                topic: 0,
                rate: rate / f64::from(producers),
                count: None,
            };
            let (tx, rx) = tokio::sync::oneshot::channel();
            tasks_.push(tokio::spawn(tasks::producer(
                driver.clone(),
                plan,
                spec.clone(),
                tx,
                control.clone(),
            )));
            rx.await.unwrap().unwrap();
        }
        ready_tx.send(()).unwrap();
        for t in tasks_ {
            t.await.unwrap();
        }
        if let Some(t) = driver_task {
            t.abort();
        }
    });
    ready_rx.recv().unwrap();
    e.start.send_replace(Some(now_ns() + 100_000_000));
    let ((), cpu) = handle.join().unwrap();
    let out = drain(&mut e);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let Recorder { lag, .. } = out.recorder;
    figures(&lag, cpu, out.sent)
}

fn median(mut v: Vec<Figures>) -> Figures {
    let pick = |f: fn(&Figures) -> f64, v: &mut Vec<Figures>| {
        let mut xs: Vec<f64> = v.iter().map(f).collect();
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    Figures {
        p50: pick(|f| f.p50, &mut v),
        p99: pick(|f| f.p99, &mut v),
        p999: pick(|f| f.p999, &mut v),
        cpu_per_msg_us: pick(|f| f.cpu_per_msg_us, &mut v),
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let secs: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(5);
    let rounds: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let d = Duration::from_secs(secs);
    let mq = Mosquitto::start().unwrap();
    println!(
        "pacing: {secs} s per case, median of {rounds} rounds; send lag in µs, CPU per message in µs of the sending thread"
    );
    println!(
        "{:<16} {:<12} {:>7} {:>7} {:>7} {:>9}",
        "case", "pacer", "p50", "p99", "p99.9", "CPU/msg"
    );
    let cases: Vec<(f64, u32)> = match std::env::var("MAESTRO_BENCH_CASES") {
        Ok(words) => words
            .split_whitespace()
            .map(|w| {
                let (r, p) = w
                    .split_once(':')
                    .unwrap_or_else(|| panic!("MAESTRO_BENCH_CASES: {w:?} is not RATE:PRODUCERS"));
                (r.parse().unwrap(), p.parse().unwrap())
            })
            .collect(),
        Err(_) => CASES.to_vec(),
    };
    for (rate, producers) in cases {
        let (mut plain, mut coarse, mut fine) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            plain.push(plain_loop(rate, d));
            coarse.push(engine_producers(&mq, rate, producers, d, false));
            fine.push(engine_producers(&mq, rate, producers, d, true));
        }
        let case = format!("{rate}/s x{producers}");
        let (plain, coarse, fine) = (median(plain), median(coarse), median(fine));
        for (name, f) in [
            ("plain loop", plain),
            ("tokio timer", coarse),
            ("precise", fine),
        ] {
            println!(
                "{case:<16} {name:<12} {:>7.0} {:>7.0} {:>7.0} {:>9.2}",
                f.p50, f.p99, f.p999, f.cpu_per_msg_us
            );
        }
        println!(
            "{case:<16} precise vs plain loop: p50 {:.2}x, p99 {:.2}x; precise vs tokio timer: p99 {:.3}x, CPU per message {:.2}x (targets: p50 <= 20 µs, p99 <= 100 µs)",
            fine.p50 / plain.p50.max(1.0),
            fine.p99 / plain.p99.max(1.0),
            fine.p99 / coarse.p99.max(1.0),
            fine.cpu_per_msg_us / coarse.cpu_per_msg_us.max(1e-9),
        );
    }
}
