//! The producer and consumer tasks. Each owns its connection; they record into their
//! thread's recorder ([`super::recorder::thread`]), which goes to the rest of the worker a
//! few times a second (snapshots); each task reports once more at the end.

use super::accounting::{Accounting, Seen};
use super::clock::WallClock;
use super::pacing::Schedule;
use super::recorder::{Recorder, RecorderPool, thread};
use super::timer::Deadline;
use crate::driver::{Consumer, Driver, DriverError, Producer, TrySendError};
use maestro_protocol::{
    ConsumerPlan, Delivery, MessageSize, PayloadHeader, ProducerPlan, Sent, TestSpec, UnixMicros,
};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// How often a task ships what it recorded: slots of this length, aligned to the run's
/// start, so that five slots make one run second and no slot straddles two seconds.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
const SLOT_NS: i64 = FLUSH_EVERY.as_nanos() as i64;
/// After a stop, a consumer ends once nothing arrived for this long...
pub const DRAIN_QUIET: Duration = Duration::from_millis(1000);
/// ...or at the latest after this long (the protocol's promise to the controller).
pub use maestro_protocol::DRAIN_MAX;
/// After a consumer asked the SUT again in the drain ([`Consumer::caught_up`]): how long
/// it waits for an answer before asking whether it has caught up once more.
pub const DRAIN_RECHECK: Duration = Duration::from_millis(500);
/// How long a failed connection waits before the driver tries again.
const RETRY: Duration = Duration::from_millis(200);
/// How often the drain looks at a client that sends on its own threads (`needs_drive`
/// false) until it is idle.
const IDLE_TICK: Duration = Duration::from_millis(1);
/// Messages handed over at a time when sending as fast as possible.
const BATCH: u64 = 64;
/// A paced producer that waited this long for room in its client (the SUT's window or
/// socket stayed full) was held back by the SUT: what it sends next is counted as held
/// back. A client that makes room at once after a burst (the tool's own lateness) is not.
const HELD_NS: i64 = 1_000_000;

/// The system wall clock in ns since the Unix epoch (off the hot path).
pub use super::clock::system_now_ns as now_ns;

/// What tasks send to the worker's aggregator. Intervals are the common report: kept
/// unboxed (no allocation per shipment).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Report {
    /// Recorded in one slot of run second `second` (nothing of any other second).
    Interval { second: u32, recorder: Recorder },
    /// The task's last report (what it recorded went out before, as intervals).
    Final(Final),
}

#[derive(Debug, Default)]
pub struct Final {
    pub sent: Option<Sent>,
    pub deliveries: Vec<Delivery>,
    pub errors: BTreeMap<String, u64>,
    pub producer: bool,
    /// Per-segment tallies (runs with marks): keyed by the producer's topic or the
    /// consumer's id.
    pub segments: Option<(u32, Segments)>,
}

/// One task's counts per segment of the run (by intended send time; see
/// [`maestro_protocol::SegmentTallies`]). Only runs with marks keep them.
#[derive(Debug, Clone)]
pub struct Segments {
    marks_ms: std::sync::Arc<[u64]>,
    pub sent: Vec<u64>,
    pub unique: Vec<u64>,
    pub duplicated: Vec<u64>,
    pub response: Vec<hdrhistogram::Histogram<u64>>,
}

impl Segments {
    /// `None` when the spec has no marks.
    pub fn new(marks_ms: &[u64]) -> Option<Box<Self>> {
        if marks_ms.is_empty() {
            return None;
        }
        let n = marks_ms.len() + 1;
        Some(Box::new(Self {
            marks_ms: marks_ms.into(),
            sent: vec![0; n],
            unique: vec![0; n],
            duplicated: vec![0; n],
            response: Vec::new(),
        }))
    }

    #[inline]
    pub fn of(&self, offset_ns: i64) -> usize {
        maestro_protocol::segment_of(&self.marks_ms, offset_ns)
    }

    /// A consumer received a message sent (intended) `offset_ns` after the start.
    #[inline]
    fn received(&mut self, offset_ns: i64, duplicate: bool, response_ns: Option<i64>) {
        let k = self.of(offset_ns);
        if duplicate {
            self.duplicated[k] += 1;
        } else {
            self.unique[k] += 1;
        }
        if let Some(ns) = response_ns {
            if self.response.is_empty() {
                self.response = (0..self.sent.len())
                    .map(|_| super::recorder::compact_latency_histogram())
                    .collect();
            }
            let us = ((ns.max(0) / 1_000) as u64).min(maestro_protocol::histogram::MAX_US);
            let _ = self.response[k].record(us);
        }
    }
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
    /// Cancelled once consumers may read (a backlog run holds them until `resume`).
    pub resume: CancellationToken,
    pub reports: mpsc::UnboundedSender<Report>,
    /// Spare recorders: a flush takes one instead of allocating. Its id tells this run's
    /// thread recorders from another's.
    pub pool: RecorderPool,
    /// The run (for `{run}` in a fleet's payload template).
    pub run: std::sync::Arc<str>,
}

impl thread::Ship for Control {
    fn ship(&self, second: u32, recorder: Recorder) {
        let _ = self.reports.send(Report::Interval { second, recorder });
    }
}

/// A task's view of the [`FLUSH_EVERY`] slots of the run (aligned to the start): it
/// records the task's events into its thread's recorder under the slot of the task's own
/// clock readings (no extra clock read per message), has that recorder shipped once the
/// slot is over (by an event of a later slot; a quiet thread's by its [`ticker`]), and
/// re-anchors the clock each slot.
#[derive(Debug)]
struct Flusher {
    start_ns: Option<i64>,
    /// The end of the task's current slot.
    slot_end_ns: i64,
    /// The run second of that slot.
    second: u32,
}

/// The run second of `t` (0 before the start).
#[inline]
pub fn run_second(start_ns: i64, t_ns: i64) -> u32 {
    u32::try_from(t_ns.saturating_sub(start_ns).max(0) / 1_000_000_000).unwrap_or(u32::MAX)
}

impl Flusher {
    fn new(start_ns: Option<i64>, now_ns: i64) -> Self {
        let mut f = Self {
            start_ns,
            slot_end_ns: 0,
            second: 0,
        };
        f.enter(now_ns);
        f
    }

    /// Moves to the slot that holds `now_ns`.
    fn enter(&mut self, now_ns: i64) {
        self.place(now_ns);
    }

    fn place(&mut self, now_ns: i64) {
        match self.start_ns {
            Some(start) => {
                let since = now_ns.saturating_sub(start).max(0);
                self.slot_end_ns = start.saturating_add((since / SLOT_NS + 1) * SLOT_NS);
                self.second = run_second(start, now_ns);
            }
            None => {
                self.slot_end_ns = now_ns.saturating_add(SLOT_NS);
                self.second = 0;
            }
        }
    }

    /// The run's start became known: slots align to it from now on.
    fn align(&mut self, start_ns: i64, now_ns: i64) {
        self.start_ns = Some(start_ns);
        self.enter(now_ns);
    }

    /// Call before recording an event at `now_ns`: when the slot is over, ships the
    /// thread's recorder if it holds a slot over by now, and moves on to the slot of
    /// `now_ns`.
    #[inline]
    fn due(&mut self, now_ns: i64, clock: &mut WallClock, to: &Control) {
        if now_ns < self.slot_end_ns {
            return;
        }
        clock.anchor();
        thread::ship_ended(&to.pool, now_ns, to);
        self.enter(now_ns);
    }

    /// Records into the thread's recorder, under this task's current slot.
    #[inline]
    fn record<T>(&mut self, to: &Control, f: impl FnOnce(&mut Recorder) -> T) -> T {
        thread::record(&to.pool, self.slot_end_ns, self.second, to, f)
    }

    /// The task ends: ships what the thread's recorder holds.
    fn finish(&mut self, to: &Control) {
        thread::ship_all(&to.pool, to);
    }
}

/// Where a ticker ships: the run's reports, held weakly, so that the aggregator still sees
/// the channel close once every task is gone.
struct WeakReports(mpsc::WeakUnboundedSender<Report>);

impl thread::Ship for WeakReports {
    fn ship(&self, second: u32, recorder: Recorder) {
        if let Some(tx) = self.0.upgrade() {
            let _ = tx.send(Report::Interval { second, recorder });
        }
    }
}

/// Ships this thread's recorder at the end of every slot of the run, so that a thread whose
/// tasks went quiet still delivers each second in time and no task wakes up for it. One
/// per data-plane thread per run, until `done` (or every task of the run is gone).
pub async fn ticker(control: Control, done: CancellationToken) {
    let Control {
        mut start,
        abort,
        reports,
        pool,
        ..
    } = control;
    let to = WeakReports(reports.downgrade());
    drop(reports);
    let start_ns = loop {
        if let Some(t) = *start.borrow_and_update() {
            break t;
        }
        tokio::select! {
            _ = done.cancelled() => return,
            _ = abort.cancelled() => return,
            changed = start.changed() => if changed.is_err() { return },
        }
    };
    // A little after each slot's end, so the slot's last events are in.
    const AFTER: i64 = 1_000_000;
    loop {
        let now = now_ns();
        let since = now.saturating_sub(start_ns).max(0);
        let slot_end = start_ns.saturating_add((since / SLOT_NS + 1) * SLOT_NS);
        let wait = Duration::from_nanos((slot_end + AFTER - now).max(0) as u64);
        tokio::select! {
            _ = done.cancelled() => return,
            _ = abort.cancelled() => return,
            _ = tokio::time::sleep(wait) => {
                if to.0.upgrade().is_none() {
                    return;
                }
                thread::ship_ended(&pool, now_ns(), &to);
            }
        }
    }
}

fn note_error(errors: &mut BTreeMap<String, u64>, e: &DriverError) {
    if errors.len() < 16 || errors.contains_key(&e.to_string()) {
        *errors.entry(e.to_string()).or_default() += e.count();
    }
}

/// Makes message bodies: a filler template, sized per message, written into a shared
/// buffer that is cut into messages (`Bytes` are reference counted), so a producer
/// allocates once per [`ARENA`] bytes, not once per message. A buffer is reused in place
/// once every message cut from it is gone.
struct Bodies {
    /// A fleet's JSON template, for this client (else the filler is used).
    text: Option<TextBody>,
    template: Vec<u8>,
    size: MessageSize,
    rng: fastrand::Rng,
    arena: bytes::BytesMut,
    /// How much buffer to reserve at a time.
    arena_size: usize,
}

/// A fleet's message template for one client: literal text and the per-message parts.
struct TextBody {
    literal: Vec<u8>,
    parts: Vec<Part>,
    /// The longest a message can render to.
    max_len: usize,
}

enum Part {
    Literal(std::ops::Range<usize>),
    Sequence,
    Timestamp,
    Header,
}

impl TextBody {
    #[inline]
    fn write(&self, h: &PayloadHeader, out: &mut bytes::BytesMut) {
        let mut num = itoa::Buffer::new();
        for p in &self.parts {
            match p {
                Part::Literal(r) => out.extend_from_slice(&self.literal[r.clone()]),
                Part::Sequence => out.extend_from_slice(num.format(h.sequence).as_bytes()),
                Part::Timestamp => {
                    out.extend_from_slice(num.format(h.intended_ns / 1_000_000).as_bytes())
                }
                Part::Header => {
                    let mut text = [0u8; maestro_protocol::payload::TEXT_LEN];
                    h.write_text(&mut text);
                    out.extend_from_slice(&text);
                }
            }
        }
    }
}

/// The most buffer messages are cut from at a time (a fast producer's).
const ARENA: usize = 64 * 1024;

impl Bodies {
    /// Messages are `payload` (repeated to the size; letters by default) with their
    /// first 32 bytes replaced by the header.
    /// `rate`: this producer's messages per second (0: as fast as it goes). A slow
    /// producer's buffer holds a few messages, not [`ARENA`] bytes: a fleet of thousands of
    /// one-message-a-second producers must not hold 64 KiB each.
    fn new(size: MessageSize, payload: Option<Vec<u8>>, seed: u64, rate: f64) -> Self {
        let (_, max) = size.bounds();
        // About 50 ms of messages, at least four, at most ARENA.
        let per_50ms = if rate > 0.0 {
            (rate * f64::from(max) / 20.0) as usize
        } else {
            ARENA
        };
        let arena_size = per_50ms.clamp(4 * max as usize, ARENA.max(max as usize));
        let filler = payload
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| (b'a'..=b'z').collect());
        Self {
            text: None,
            template: filler.iter().copied().cycle().take(max as usize).collect(),
            size,
            rng: fastrand::Rng::with_seed(seed),
            arena: bytes::BytesMut::new(),
            arena_size,
        }
    }

    /// Bodies from a fleet's payload template, for client `index`: `{i}` and `{run}` are
    /// filled in once, `{seq}`, `{ts}` and `{maestro}` per message.
    fn from_template(t: &maestro_protocol::Template, run: &str, index: u32, rate: f64) -> Self {
        use maestro_protocol::fleet::Piece;
        let mut text = TextBody {
            literal: Vec::new(),
            parts: Vec::new(),
            max_len: 0,
        };
        let lit = |text: &mut TextBody, s: &[u8]| {
            let from = text.literal.len();
            text.literal.extend_from_slice(s);
            match text.parts.last_mut() {
                Some(Part::Literal(r)) if r.end == from => r.end = text.literal.len(),
                _ => text.parts.push(Part::Literal(from..text.literal.len())),
            }
        };
        for p in t.pieces() {
            match p {
                Piece::Text(s) => lit(&mut text, s.as_bytes()),
                Piece::Index => lit(&mut text, index.to_string().as_bytes()),
                Piece::Run => lit(&mut text, run.as_bytes()),
                Piece::Sequence => text.parts.push(Part::Sequence),
                Piece::Timestamp => text.parts.push(Part::Timestamp),
                Piece::Header => text.parts.push(Part::Header),
            }
        }
        // Numbers take at most 20 digits, the header its text length.
        text.max_len = text.literal.len()
            + text
                .parts
                .iter()
                .map(|p| match p {
                    Part::Literal(_) => 0,
                    Part::Sequence | Part::Timestamp => 20,
                    Part::Header => maestro_protocol::payload::TEXT_LEN,
                })
                .sum::<usize>();
        let mut b = Self::new(MessageSize::Fixed(text.max_len as u32), None, 1, rate);
        b.text = Some(text);
        b
    }

    #[inline]
    fn make(&mut self, header: &PayloadHeader) -> bytes::Bytes {
        if let Some(text) = &self.text {
            let need = text.max_len;
            if self.arena.capacity() < need {
                self.arena.reserve(self.arena_size.max(need));
            }
            text.write(header, &mut self.arena);
            return self.arena.split().freeze();
        }
        let len = match self.size {
            MessageSize::Fixed(n) => n,
            MessageSize::Around(_) => {
                let (lo, hi) = self.size.bounds();
                self.rng.u32(lo..=hi)
            }
        } as usize;
        if self.arena.capacity() < len {
            // Reclaims the buffer in place when no message of it is alive any more.
            self.arena.reserve(self.arena_size.max(len));
        }
        self.arena.extend_from_slice(&self.template[..len]);
        header.write(&mut self.arena[..]);
        self.arena.split().freeze()
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
    // Phases that run once (connecting, waiting for the start, the final drain) are boxed:
    // their futures then take heap only while they run, instead of space in every
    // producer's task for its whole life (a fleet holds thousands of them).
    let mut conn = match Box::pin(driver.producer(&plan)).await {
        Ok(c) => {
            let _ = ready.send(Ok(()));
            c
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut errors = BTreeMap::new();
    let start_ns = Box::pin(start_time(&mut conn, &mut control, &mut errors)).await;
    let mut sent = Sent {
        producer: plan.id,
        producers: 1,
        topic: plan.topic,
        sent: 0,
        unsent: 0,
        held_back: 0,
        errors: 0,
        stopped_at_us: None,
    };
    let mut segments = Segments::new(&spec.marks_ms);
    if let Some(start_ns) = start_ns {
        let mut sending = Sending::new(&plan, &spec, start_ns, conn, control, errors, segments);
        Box::pin(sending.keep_until_start()).await;
        sending.run().await;
        let stopped = sending.clock.now_ns().max(sending.now);
        // What the drain records (errors) belongs to the second the producer stopped in.
        sending
            .flusher
            .due(stopped, &mut sending.clock, &sending.control);
        sent.unsent = sending.schedule.unsent(stopped, sending.seq);
        sent.stopped_at_us = Some(UnixMicros(stopped.min(sending.schedule.end_ns()) / 1_000));
        Box::pin(sending.drain()).await;
        sending.flusher.finish(&sending.control);
        sent.sent = sending.seq;
        sent.held_back = sending.held_back;
        (conn, control, errors, segments) = (
            sending.conn,
            sending.control,
            sending.errors,
            sending.segments,
        );
    }
    sent.errors = errors.values().sum();
    let _ = control.reports.send(Report::Final(Final {
        sent: Some(sent),
        deliveries: Vec::new(),
        errors,
        producer: true,
        segments: segments.map(|s| (plan.topic, *s)),
    }));
    Box::pin(conn.close()).await;
}

/// The common start, once the controller has sent it (`None`: stopped or aborted
/// before); the connection is kept alive meanwhile.
async fn start_time<P: Producer>(
    conn: &mut P,
    control: &mut Control,
    errors: &mut BTreeMap<String, u64>,
) -> Option<i64> {
    loop {
        if let Some(t) = *control.start.borrow() {
            break Some(t);
        }
        tokio::select! {
            _ = control.abort.cancelled() => break None,
            _ = control.stop.cancelled() => break None,
            changed = control.start.changed() => if changed.is_err() { break None },
            r = conn.drive(), if conn.needs_drive() => if let Err(e) = r { note_error(errors, &e); tokio::time::sleep(RETRY).await; },
        }
    }
}

/// A producer from its start: its schedule, bodies, clock and tallies.
struct Sending<P> {
    conn: P,
    control: Control,
    errors: BTreeMap<String, u64>,
    segments: Option<Box<Segments>>,
    producer: u32,
    schedule: Schedule,
    bodies: Bodies,
    clock: WallClock,
    flusher: Flusher,
    start_ns: i64,
    warmup_end: i64,
    /// The next message's sequence number (so far sent: `seq`).
    seq: u64,
    /// The clock's reading at the top of the send loop.
    now: i64,
    /// A fleet's producer keeps tokio's millisecond timer (see `Deadline::coarse`).
    coarse: bool,
    /// The last wait for room in the client, with messages due, took [`HELD_NS`] or more.
    held: bool,
    /// Messages sent late after the client had no room for them: the SUT held them back.
    held_back: u64,
}

impl<P: Producer> Sending<P> {
    fn new(
        plan: &ProducerPlan,
        spec: &TestSpec,
        start_ns: i64,
        conn: P,
        control: Control,
        errors: BTreeMap<String, u64>,
        segments: Option<Box<Segments>>,
    ) -> Self {
        let phase = f64::from(plan.id) / f64::from(spec.producers.max(1));
        let schedule = match spec.duration_ms {
            // A shaped arrival (validated: a duration and a rate): this producer's share.
            Some(d) if !spec.arrival.is_uniform() => {
                let window = std::time::Duration::from_millis(d);
                Schedule::shaped(
                    start_ns,
                    spec.arrival.profile(plan.rate, window),
                    d as i64 * 1_000_000,
                    phase,
                    spec.arrival.is_random().then_some(u64::from(plan.id)),
                    spec.max_sequence(),
                )
            }
            _ => Schedule::new(
                start_ns,
                plan.rate,
                plan.count,
                spec.duration_ms.map(|d| d as i64 * 1_000_000),
            ),
        }
        .with_phase(phase)
        .with_jitter(
            spec.fleet
                .as_ref()
                .map_or(0, |f| f.jitter_ms as i64 * 1_000_000),
            u64::from(plan.id),
        );
        let bodies = match spec.fleet.as_ref().and_then(|f| f.payload.as_ref()) {
            Some(t) => Bodies::from_template(t, &control.run, plan.id, plan.rate),
            None => Bodies::new(
                spec.size,
                spec.payload_bytes(),
                u64::from(plan.id) + 1,
                plan.rate,
            ),
        };
        let clock = WallClock::default();
        let now = clock.now_ns();
        Self {
            conn,
            control,
            errors,
            segments,
            producer: plan.id,
            schedule,
            bodies,
            flusher: Flusher::new(Some(start_ns), now),
            clock,
            start_ns,
            warmup_end: start_ns + spec.warmup_ms as i64 * 1_000_000,
            seq: 0,
            now,
            coarse: spec.fleet.is_some(),
            held: false,
            held_back: 0,
        }
    }

    /// Waits for the start without busy-looping (and keeps the connection alive); the
    /// clock starts then.
    async fn keep_until_start(&mut self) {
        let mut at_start = Deadline::at(self.start_ns);
        loop {
            if now_ns() >= self.start_ns {
                break;
            }
            tokio::select! {
                _ = self.control.abort.cancelled() => break,
                _ = self.control.stop.cancelled() => break,
                _ = &mut at_start => {}
                r = self.conn.drive(), if self.conn.needs_drive() => if let Err(e) = r { note_error(&mut self.errors, &e); },
            }
        }
        self.clock = WallClock::default();
        self.now = self.clock.now_ns();
        self.flusher = Flusher::new(Some(self.start_ns), self.now);
    }

    /// Sends on schedule until the window closes, everything is sent, or the run stops.
    async fn run(&mut self) {
        let window_end = self.schedule.end_ns();
        // Stop or abort, waited for by one future for the whole send loop: a new one per
        // wake-up would register with (and lock) the tokens' shared waiter lists each time,
        // which thousands of slow producers pay for on every message.
        let (stop, abort) = (self.control.stop.clone(), self.control.abort.clone());
        let ended = async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = abort.cancelled() => {}
            }
        };
        tokio::pin!(ended);
        // One timer for the loop, a microsecond one on a data-plane thread (tokio's timer
        // wheel wakes up to 2 ms late: that lateness was in every response time). Moving
        // it costs nothing until it is polled.
        let mut timer = if self.coarse {
            Deadline::coarse(self.now)
        } else {
            Deadline::at(self.now)
        };
        loop {
            if self.control.stop.is_cancelled() || self.control.abort.is_cancelled() {
                break;
            }
            self.now = self.clock.now_ns();
            self.flusher.due(self.now, &mut self.clock, &self.control);
            record_acks(
                &mut self.conn,
                &mut self.flusher,
                &self.control,
                self.warmup_end,
            );
            // Send every due message as one batch (at full speed, a batch at a time), but
            // never more than the client takes: no payload is built in vain.
            let due = if self.schedule.paced() {
                self.schedule.due_until(self.now)
            } else if self.now < window_end {
                self.seq + BATCH
            } else {
                self.seq
            };
            let batch_end = due.min(self.seq + self.conn.room() as u64);
            let before = self.seq;
            if self.send_until(batch_end).is_err() {
                break;
            }
            // Sent after a long wait for room: late by the SUT's doing.
            if std::mem::take(&mut self.held) {
                self.held_back += self.seq - before;
            }
            // The window is over: what was due and not sent stays unsent.
            if self.now >= window_end {
                break;
            }
            let woken = if self.schedule.exhausted(self.seq) {
                // Everything sent: keep the connection going until the window closes, so
                // the window (not the last message) is the span the rate is measured over.
                timer.reset(window_end);
                tokio::select! {
                    biased;
                    _ = &mut ended => break,
                    _ = &mut timer => Ok(()),
                    r = self.conn.drive(), if self.conn.needs_drive() => r,
                }
            } else if self.seq < due || !self.schedule.paced() {
                // Behind, or at full speed: let the connection write until a batch fits.
                let conn = &mut self.conn;
                let drained = async {
                    loop {
                        conn.drive().await?;
                        if conn.room() >= BATCH as usize {
                            return Ok::<(), DriverError>(());
                        }
                    }
                };
                timer.reset(window_end);
                let waiting_since = now_ns();
                let r = tokio::select! {
                    biased;
                    _ = &mut ended => break,
                    _ = &mut timer => Ok(()),
                    r = drained => r,
                };
                self.held = self.schedule.paced() && now_ns() - waiting_since >= HELD_NS;
                r
            } else {
                timer.reset(self.schedule.intended_ns(self.seq).min(window_end));
                tokio::select! {
                    biased;
                    _ = &mut ended => break,
                    r = self.conn.drive(), if self.conn.needs_drive() => r,
                    _ = &mut timer => Ok(()),
                }
            };
            if let Err(e) = woken {
                self.flusher
                    .record(&self.control, |r| r.counters.errors += e.count());
                note_error(&mut self.errors, &e);
                // Messages the SUT refused leave the connection as it was: go on at once.
                if !e.is_refusal() {
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// Hands the client the messages up to `batch_end` (fewer when its queue fills);
    /// `Err` when the client is gone.
    #[inline]
    fn send_until(&mut self, batch_end: u64) -> Result<(), ()> {
        while self.seq < batch_end {
            let actual = self.clock.now_ns();
            self.flusher.due(actual, &mut self.clock, &self.control);
            let intended = if self.schedule.paced() {
                self.schedule.intended_ns(self.seq)
            } else {
                actual
            };
            let header = PayloadHeader {
                producer: self.producer,
                sequence: self.seq,
                intended_ns: intended,
                actual_ns: actual,
            };
            let body = self.bodies.make(&header);
            let bytes = body.len();
            match self.conn.try_send(body) {
                Ok(()) => {
                    let measured = intended >= self.warmup_end;
                    self.flusher.record(&self.control, |r| {
                        r.sent(actual - intended, bytes, measured)
                    });
                    if let Some(s) = self.segments.as_mut() {
                        let k = s.of(intended - self.start_ns);
                        s.sent[k] += 1;
                    }
                    self.seq += 1;
                }
                Err(TrySendError::Full) => return Ok(()),
                Err(TrySendError::Closed(reason)) => {
                    note_error(&mut self.errors, &DriverError::ConnectionLost { reason });
                    self.flusher
                        .record(&self.control, |r| r.counters.errors += 1);
                    return Err(());
                }
            }
        }
        Ok(())
    }

    /// Writes out what is still queued (QoS 1/2: until acknowledged), briefly.
    async fn drain(&mut self) {
        let Self {
            conn,
            flusher,
            control,
            errors,
            warmup_end,
            ..
        } = self;
        let _ = tokio::time::timeout(DRAIN_MAX, async {
            while !conn.idle() && !control.abort.is_cancelled() {
                // A client that works on its own threads (needs_drive false) is waited
                // for, not driven back to back (that spun a core).
                if !conn.needs_drive() {
                    tokio::time::sleep(IDLE_TICK).await;
                } else if let Err(e) = conn.drive().await {
                    flusher.record(control, |r| r.counters.errors += e.count());
                    note_error(errors, &e);
                    if !e.is_refusal() {
                        break;
                    }
                }
                record_acks(conn, flusher, control, *warmup_end);
            }
        })
        .await;
        record_acks(conn, flusher, control, *warmup_end);
        if let Some(e) = conn.unreported_errors() {
            flusher.record(control, |r| r.counters.errors += 1);
            note_error(errors, &e);
        }
    }
}

/// Messages a consumer takes between two looks at its stop and abort signals.
const RECV_BATCH: usize = 256;

/// A consumer's measurement state.
struct Receiving {
    accounting: Accounting,
    errors: BTreeMap<String, u64>,
    clock: WallClock,
    flusher: Flusher,
    warmup_ns: i64,
    /// Per producer: how far this worker's clock is ahead of the producer's, µs.
    skew_us: std::sync::Arc<[i64]>,
    /// Sequence numbers at or above this are not from this run.
    max_sequence: u64,
    /// Known once the run starts; read from the watch (a lock) only until then.
    start_ns: Option<i64>,
    start: watch::Receiver<Option<i64>>,
    control: Control,
    segments: Option<Box<Segments>>,
}

impl Receiving {
    #[inline]
    fn record<T>(&mut self, f: impl FnOnce(&mut Recorder) -> T) -> T {
        self.flusher.record(&self.control, f)
    }
}

/// Send times further than this from the receiver's clock cannot be from this run.
const PLAUSIBLE_NS: i64 = 8 * 24 * 3600 * 1_000_000_000;

impl Receiving {
    /// False for headers no producer of this run can have written: a sequence number
    /// beyond what the spec allows, or send times days away. Such messages are foreign.
    #[inline]
    fn plausible(&self, h: &PayloadHeader, now: i64) -> bool {
        h.sequence < self.max_sequence
            && now.saturating_sub(h.intended_ns).unsigned_abs() < PLAUSIBLE_NS as u64
            && now.saturating_sub(h.actual_ns).unsigned_abs() < PLAUSIBLE_NS as u64
    }

    #[inline]
    async fn on(&mut self, event: Result<Option<bytes::Bytes>, DriverError>) {
        let now = self.clock.now_ns();
        if self.start_ns.is_none() {
            self.start_ns = *self.start.borrow();
            if let Some(start) = self.start_ns {
                self.flusher.align(start, now);
            }
        }
        self.flusher.due(now, &mut self.clock, &self.control);
        match event {
            Ok(Some(payload)) => match PayloadHeader::read_any(&payload) {
                Ok(h) if !self.plausible(&h, now) => self.record(|r| r.counters.foreign += 1),
                Ok(h) => {
                    let seen = self.accounting.record(h.producer, h.sequence);
                    match seen {
                        Seen::Duplicate => self.record(|r| r.counters.duplicated += 1),
                        Seen::OutOfOrder => self.record(|r| r.counters.out_of_order += 1),
                        Seen::Foreign => {
                            self.record(|r| r.counters.foreign += 1);
                            return;
                        }
                        Seen::New => {}
                    }
                    // The producer's clock may differ from ours: correct by the skew the
                    // controller measured (0 on one host).
                    let skew_ns = self
                        .skew_us
                        .get(h.producer as usize)
                        .map_or(0, |s| s.saturating_mul(1000));
                    let at = now.saturating_sub(skew_ns);
                    let measured = self.start_ns.is_some_and(|s| {
                        h.intended_ns.saturating_add(skew_ns) >= s.saturating_add(self.warmup_ns)
                    });
                    let bytes = payload.len();
                    self.record(|r| {
                        r.received(
                            at.saturating_sub(h.intended_ns),
                            at.saturating_sub(h.actual_ns),
                            bytes,
                            measured,
                        )
                    });
                    if let (Some(s), Some(start)) = (self.segments.as_mut(), self.start_ns) {
                        let offset = h.intended_ns.saturating_add(skew_ns).saturating_sub(start);
                        let response = at.saturating_sub(h.intended_ns);
                        s.received(
                            offset,
                            seen == Seen::Duplicate,
                            measured.then_some(response),
                        );
                    }
                }
                Err(_) => self.record(|r| r.counters.foreign += 1),
            },
            Ok(None) => {}
            Err(e) => {
                self.record(|r| r.counters.errors += 1);
                note_error(&mut self.errors, &e);
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Records the acknowledgements a producer collected (publish latency of the messages
/// sent after the warm-up), all in one visit to the thread's recorder.
#[inline]
fn record_acks<P: Producer>(
    conn: &mut P,
    flusher: &mut Flusher,
    control: &Control,
    warmup_end: i64,
) {
    if conn.has_acks() {
        flusher.record(control, |r| {
            conn.take_acks(|sent, acked| {
                if sent >= warmup_end {
                    r.published(acked - sent);
                }
            })
        });
    }
}

/// Connects and subscribes, reports ready, then receives until drained after a stop.
pub async fn consumer<D: Driver>(
    driver: D,
    plan: ConsumerPlan,
    spec: TestSpec,
    skew_us: std::sync::Arc<[i64]>,
    ready: oneshot::Sender<Result<(), DriverError>>,
    control: Control,
) {
    let mut conn = match Box::pin(driver.consumer(&plan)).await {
        Ok(c) => {
            let _ = ready.send(Ok(()));
            c
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let clock = WallClock::default();
    let mut rx = Receiving {
        accounting: Accounting::new(plan.id, spec.producers),
        errors: BTreeMap::new(),
        flusher: Flusher::new(None, clock.now_ns()),
        clock,
        warmup_ns: spec.warmup_ms as i64 * 1_000_000,
        skew_us,
        max_sequence: spec.max_sequence(),
        start_ns: None,
        start: control.start.clone(),
        control: control.clone(),
        segments: Segments::new(&spec.marks_ms),
    };
    // A backlog run: read nothing until resumed (or stopped), so the backlog builds up in
    // the SUT.
    tokio::select! {
        biased;
        _ = control.abort.cancelled() => {}
        _ = control.stop.cancelled() => {}
        _ = control.resume.cancelled() => {}
    }
    // Receive in batches; look at stop and abort between batches (and while waiting).
    let stopped = loop {
        let batch = async {
            for _ in 0..RECV_BATCH {
                let event = conn.recv().await;
                rx.on(event).await;
            }
        };
        tokio::select! {
            biased;
            _ = control.abort.cancelled() => break false,
            _ = control.stop.cancelled() => break true,
            _ = batch => {}
        }
    };
    // Drain: until nothing arrived for a while and the consumer has caught up, or the
    // drain limit.
    if stopped {
        let deadline = tokio::time::Instant::now() + DRAIN_MAX;
        let mut quiet = DRAIN_QUIET;
        loop {
            tokio::select! {
                biased;
                _ = control.abort.cancelled() => break,
                _ = tokio::time::sleep_until(deadline) => break,
                r = tokio::time::timeout(quiet, conn.recv()) => match r {
                    // The SUT is failing: nothing more will drain.
                    Ok(Err(e)) => {
                        rx.on(Err(e)).await;
                        break;
                    }
                    Ok(event) => rx.on(event).await,
                    // Quiet: done, unless the consumer asked the SUT again for what it
                    // may still hold (a fetch that skipped a partition's last records);
                    // the answer to that comes at once, or not at all.
                    Err(_) => {
                        if conn.caught_up().await {
                            break;
                        }
                        quiet = DRAIN_RECHECK;
                    }
                },
            }
        }
    }
    rx.flusher.finish(&control);
    let _ = control.reports.send(Report::Final(Final {
        sent: None,
        deliveries: rx.accounting.deliveries(),
        errors: rx.errors,
        producer: false,
        segments: rx.segments.map(|s| (plan.id, *s)),
    }));
    Box::pin(conn.close()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_repeat_the_payload_after_the_header() {
        let header = PayloadHeader {
            producer: 1,
            sequence: 2,
            intended_ns: 3,
            actual_ns: 4,
        };
        let mut b = Bodies::new(MessageSize::Fixed(40), Some(b"xyz".to_vec()), 1, 0.0);
        let body = b.make(&header);
        assert_eq!(body.len(), 40);
        // The file's bytes keep their offsets; the header replaces the first 32.
        assert_eq!(&body[32..], b"zxyzxyzx");
        assert_eq!(PayloadHeader::read(&body).unwrap(), header);
        // Bodies are cut from one buffer: the next starts where the last ended.
        let next = b.make(&header);
        assert_eq!(next.as_ptr() as usize, body.as_ptr() as usize + 40);
        assert_eq!(PayloadHeader::read(&next).unwrap(), header);
        let mut letters = Bodies::new(MessageSize::Around(100), None, 1, 0.0);
        for _ in 0..50 {
            let len = letters.make(&header).len();
            assert!((50..=150).contains(&len), "{len}");
        }
        // A slow producer reserves a few messages at a time, a fast one 64 KiB.
        let mut slow = Bodies::new(MessageSize::Fixed(100), None, 1, 1.0);
        slow.make(&header);
        assert!(slow.arena.capacity() < 1_000, "{}", slow.arena.capacity());
        let mut fast = Bodies::new(MessageSize::Fixed(100), None, 1, 100_000.0);
        fast.make(&header);
        assert!(fast.arena.capacity() > 60_000, "{}", fast.arena.capacity());
    }

    #[test]
    fn template_bodies_are_json_that_carries_the_header() {
        let t = maestro_protocol::Template::parse(
            maestro_protocol::TemplateKind::Payload,
            r#"{"id": "d{i}", "run": "{run}", "seq": {seq}, "ts": {ts}, "m": "{maestro}"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let header = PayloadHeader {
            producer: 7,
            sequence: 12,
            intended_ns: 1_700_000_000_123_000_000,
            actual_ns: 1_700_000_000_124_000_000,
        };
        let mut b = Bodies::from_template(&t, "r1", 7, 1.0);
        let body = b.make(&header);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["id"], "d7");
        assert_eq!(v["run"], "r1");
        assert_eq!(v["seq"], 12);
        assert_eq!(v["ts"], 1_700_000_000_123u64);
        assert_eq!(PayloadHeader::read_any(&body), Ok(header));
        assert!(body.len() <= b.text.as_ref().map_or(0, |t| t.max_len));
    }
}

#[cfg(test)]
mod task_size {
    /// A fleet holds thousands of producer tasks: each one's future is its memory for the
    /// whole run (it was 9 KiB before the once-only phases were boxed).
    #[test]
    fn a_producer_task_stays_small() {
        use crate::driver::mqtt::MqttDriver;
        let run = maestro_protocol::RunId::new("r").unwrap_or_else(|e| panic!("{e}"));
        let driver =
            MqttDriver::from_url("mqtt://127.0.0.1:1/x", &run).unwrap_or_else(|e| panic!("{e}"));
        let (reports, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (_tx, start) = tokio::sync::watch::channel(None);
        let control = super::Control {
            start,
            stop: Default::default(),
            abort: Default::default(),
            resume: {
                let t = tokio_util::sync::CancellationToken::new();
                t.cancel();
                t
            },
            reports,
            pool: Default::default(),
            run: "r".into(),
        };
        let plan = maestro_protocol::ProducerPlan {
            id: 0,
            topic: 0,
            rate: 1.0,
            count: None,
        };
        let spec = maestro_protocol::TestSpec {
            consumers: 0,
            ..maestro_protocol::TestSpec::new(
                "mqtt://h".parse().unwrap_or_else(|e| panic!("{e}")),
                1.0,
                std::time::Duration::from_secs(1),
            )
        };
        let (ready, _) = tokio::sync::oneshot::channel();
        let task = super::producer(driver, plan, spec, ready, control);
        let size = std::mem::size_of_val(&task);
        assert!(size < 6 * 1024, "a producer task takes {size} bytes");
    }
}
