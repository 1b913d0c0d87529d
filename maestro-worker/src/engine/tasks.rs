//! The producer and consumer tasks. Each owns its connection and its recorder; it talks to
//! the rest of the worker only a few times a second (snapshots) and once at the end.

use super::accounting::{Accounting, Seen};
use super::pacing::Schedule;
use super::recorder::Recorder;
use crate::driver::{Consumer, Driver, DriverError, Producer, TrySendError};
use maestro_protocol::{
    ConsumerPlan, Delivery, MessageSize, PayloadHeader, ProducerPlan, Sent, TestSpec,
};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// How often a task ships what it recorded.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// After a stop, a consumer ends once nothing arrived for this long...
pub const DRAIN_QUIET: Duration = Duration::from_millis(1000);
/// ...or at the latest after this long.
pub const DRAIN_MAX: Duration = Duration::from_secs(15);
/// How long a failed connection waits before the driver tries again.
const RETRY: Duration = Duration::from_millis(200);

/// The wall clock in ns since the Unix epoch (vDSO, about 25 ns).
#[inline]
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// What tasks send to the worker's aggregator.
#[derive(Debug)]
pub enum Report {
    /// Recorded since the previous report.
    Interval(Recorder),
    /// The task's last report.
    Final(Final),
}

#[derive(Debug, Default)]
pub struct Final {
    pub recorder: Recorder,
    pub sent: Option<Sent>,
    pub deliveries: Vec<Delivery>,
    pub errors: BTreeMap<String, u64>,
    pub producer: bool,
}

/// How the engine steers one task.
#[derive(Debug, Clone)]
pub struct Control {
    /// The common start time in ns, once known.
    pub start: watch::Receiver<Option<i64>>,
    /// Stop producing (producers) / start draining (consumers).
    pub stop: CancellationToken,
    /// Give up at once (worker shutting down, configure failed).
    pub abort: CancellationToken,
    pub reports: mpsc::UnboundedSender<Report>,
}

/// Shared shape of both tasks' report flushing.
struct Flusher {
    next: tokio::time::Instant,
}

impl Flusher {
    fn new() -> Self {
        Self {
            next: tokio::time::Instant::now() + FLUSH_EVERY,
        }
    }

    #[inline]
    fn due(&mut self, recorder: &mut Recorder, reports: &mpsc::UnboundedSender<Report>) {
        let now = tokio::time::Instant::now();
        if now >= self.next {
            self.next = now + FLUSH_EVERY;
            let _ = reports.send(Report::Interval(recorder.take()));
        }
    }
}

fn note_error(errors: &mut BTreeMap<String, u64>, e: &DriverError) {
    if errors.len() < 16 || errors.contains_key(&e.to_string()) {
        *errors.entry(e.to_string()).or_default() += 1;
    }
}

/// Makes message bodies: a filler template, sized per message.
struct Bodies {
    template: Vec<u8>,
    size: MessageSize,
    rng: fastrand::Rng,
}

impl Bodies {
    fn new(size: MessageSize, seed: u64) -> Self {
        let (_, max) = size.bounds();
        Self {
            template: (0..max).map(|i| b'a' + (i % 26) as u8).collect(),
            size,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    #[inline]
    fn make(&mut self, header: &PayloadHeader) -> Vec<u8> {
        let len = match self.size {
            MessageSize::Fixed(n) => n,
            MessageSize::Around(_) => {
                let (lo, hi) = self.size.bounds();
                self.rng.u32(lo..=hi)
            }
        } as usize;
        let mut body = self.template[..len].to_vec();
        header.write(&mut body);
        body
    }
}

/// Connects, reports ready, waits for the start, then sends on schedule until done.
pub async fn producer<D: Driver>(
    driver: D,
    plan: ProducerPlan,
    spec: TestSpec,
    ready: oneshot::Sender<Result<(), DriverError>>,
    mut control: Control,
) {
    let mut conn = match driver.producer(&plan).await {
        Ok(c) => {
            let _ = ready.send(Ok(()));
            c
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut recorder = Recorder::default();
    let mut errors = BTreeMap::new();
    // Keep the connection alive until the start (or the end).
    let start_ns = loop {
        if let Some(t) = *control.start.borrow() {
            break Some(t);
        }
        tokio::select! {
            _ = control.abort.cancelled() => break None,
            _ = control.stop.cancelled() => break None,
            changed = control.start.changed() => if changed.is_err() { break None },
            r = conn.drive() => if let Err(e) = r { note_error(&mut errors, &e); tokio::time::sleep(RETRY).await; },
        }
    };
    let mut seq: u64 = 0;
    if let Some(start_ns) = start_ns {
        let schedule = Schedule::new(
            start_ns,
            plan.rate,
            plan.count,
            spec.duration_ms.map(|d| d as i64 * 1_000_000),
        );
        let warmup_end = start_ns + spec.warmup_ms as i64 * 1_000_000;
        let mut bodies = Bodies::new(spec.size, u64::from(plan.id) + 1);
        let mut flusher = Flusher::new();
        let wall_to_tokio = |ns: i64| {
            let d = ns - now_ns();
            tokio::time::Instant::now() + Duration::from_nanos(d.max(0) as u64)
        };
        // Wait for the start without busy-looping (and keep the connection alive).
        loop {
            if now_ns() >= start_ns {
                break;
            }
            tokio::select! {
                _ = control.abort.cancelled() => break,
                _ = control.stop.cancelled() => break,
                _ = tokio::time::sleep_until(wall_to_tokio(start_ns)) => {}
                r = conn.drive() => if let Err(e) = r { note_error(&mut errors, &e); },
            }
        }
        'run: loop {
            if control.stop.is_cancelled() || control.abort.is_cancelled() {
                break;
            }
            let now = now_ns();
            if schedule.finished_at(now, seq) {
                break;
            }
            let due = schedule.due_until(now);
            let mut full = false;
            // Send every due message as one batch; at full speed, a batch at a time.
            let batch_end = if schedule.paced() { due } else { seq + 64 };
            while seq < batch_end {
                let actual = now_ns();
                let intended = if schedule.paced() {
                    schedule.intended_ns(seq)
                } else {
                    actual
                };
                let header = PayloadHeader {
                    producer: plan.id,
                    sequence: seq,
                    intended_ns: intended,
                    actual_ns: actual,
                };
                match conn.try_send(bodies.make(&header)) {
                    Ok(()) => {
                        recorder.sent(actual - intended, intended >= warmup_end);
                        seq += 1;
                    }
                    Err(TrySendError::Full) => {
                        full = true;
                        break;
                    }
                    Err(TrySendError::Closed(reason)) => {
                        note_error(&mut errors, &DriverError::Sut(reason));
                        recorder.counters.errors += 1;
                        break 'run;
                    }
                }
            }
            flusher.due(&mut recorder, &control.reports);
            if full || !schedule.paced() {
                // Let the connection write out what is queued, then carry on at once.
                tokio::select! {
                    biased;
                    _ = control.abort.cancelled() => break,
                    r = conn.drive() => if let Err(e) = r {
                        recorder.counters.errors += 1;
                        note_error(&mut errors, &e);
                        tokio::time::sleep(RETRY).await;
                    },
                }
                continue;
            }
            let wake = wall_to_tokio(schedule.intended_ns(seq));
            tokio::select! {
                biased;
                _ = control.abort.cancelled() => break,
                _ = control.stop.cancelled() => break,
                r = conn.drive() => if let Err(e) = r {
                    recorder.counters.errors += 1;
                    note_error(&mut errors, &e);
                    tokio::time::sleep(RETRY).await;
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        // Write out what is still queued (QoS 1/2: until acknowledged), briefly.
        let _ = tokio::time::timeout(DRAIN_MAX, async {
            while !conn.idle() && !control.abort.is_cancelled() {
                if let Err(e) = conn.drive().await {
                    note_error(&mut errors, &e);
                    break;
                }
            }
        })
        .await;
    }
    let _ = control.reports.send(Report::Final(Final {
        recorder,
        sent: Some(Sent {
            producer: plan.id,
            topic: plan.topic,
            sent: seq,
            errors: errors.values().sum(),
        }),
        deliveries: Vec::new(),
        errors,
        producer: true,
    }));
    conn.close().await;
}

/// Connects and subscribes, reports ready, then receives until drained after a stop.
pub async fn consumer<D: Driver>(
    driver: D,
    plan: ConsumerPlan,
    spec: TestSpec,
    ready: oneshot::Sender<Result<(), DriverError>>,
    control: Control,
) {
    let mut conn = match driver.consumer(&plan).await {
        Ok(c) => {
            let _ = ready.send(Ok(()));
            c
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut recorder = Recorder::default();
    let mut accounting = Accounting::new(plan.id, spec.producers);
    let mut errors = BTreeMap::new();
    let mut flusher = Flusher::new();
    let warmup_ns = spec.warmup_ms as i64 * 1_000_000;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    // Known once the run starts; read from the watch (a lock) only until then.
    let mut start_ns: Option<i64> = None;
    loop {
        let event = match drain_deadline {
            None => tokio::select! {
                biased;
                _ = control.abort.cancelled() => break,
                _ = control.stop.cancelled() => {
                    drain_deadline = Some(tokio::time::Instant::now() + DRAIN_MAX);
                    continue;
                }
                r = conn.recv() => r,
            },
            Some(deadline) => {
                let quiet = tokio::time::Instant::now() + DRAIN_QUIET;
                tokio::select! {
                    biased;
                    _ = control.abort.cancelled() => break,
                    _ = tokio::time::sleep_until(quiet.min(deadline)) => break,
                    r = conn.recv() => r,
                }
            }
        };
        match event {
            Ok(Some(payload)) => {
                let now = now_ns();
                match PayloadHeader::read(&payload) {
                    Ok(h) => {
                        match accounting.record(h.producer, h.sequence) {
                            Seen::Duplicate => recorder.counters.duplicated += 1,
                            Seen::OutOfOrder => recorder.counters.out_of_order += 1,
                            Seen::Foreign => {
                                recorder.counters.foreign += 1;
                                continue;
                            }
                            Seen::New => {}
                        }
                        if start_ns.is_none() {
                            start_ns = *control.start.borrow();
                        }
                        let measured =
                            start_ns.is_some_and(|s| h.intended_ns >= s.saturating_add(warmup_ns));
                        recorder.received(now - h.intended_ns, now - h.actual_ns, measured);
                    }
                    Err(_) => recorder.counters.foreign += 1,
                }
                flusher.due(&mut recorder, &control.reports);
            }
            Ok(None) => flusher.due(&mut recorder, &control.reports),
            Err(e) => {
                recorder.counters.errors += 1;
                note_error(&mut errors, &e);
                tokio::time::sleep(RETRY).await;
            }
        }
    }
    let _ = control.reports.send(Report::Final(Final {
        recorder,
        sent: None,
        deliveries: accounting.deliveries(),
        errors,
        producer: false,
    }));
    conn.close().await;
}
