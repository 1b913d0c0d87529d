//! `maestro-cli start`: one test across the cluster's workers.
//!
//! 1. Find the workers (ping), split producers and consumers over them round robin, and
//!    send each its share (`configure`). Every worker connects to the SUT and subscribes;
//!    a SUT that cannot be reached fails the start here, fast, with its reason.
//! 2. `start` with one common start time, a little in the future.
//! 3. Merge the workers' per-second stats into a progress line; end when every producer
//!    is done (or on Ctrl-C, `maestro-cli stop`, or a deadline); send `stop`.
//! 4. Wait for every worker's result (never for a worker that disconnected), compute the
//!    summary, and write the results folder.

use crate::controller::{ControlError, Controller, Incoming};
use crate::stream::{self, LiveResults};
use crate::summary::{self, Collected, Summary};
use maestro_protocol::{
    Body, Configure, ConsumerPlan, ErrorCode, MessageSize, Note, NoteId, PeerId, Ping,
    PresenceStatus, ProducerPlan, Role, RunId, Segment, Start, Stop, Target, TestSpec, UnixMicros,
};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// The flags of `maestro-cli start`; they build a [`TestSpec`].
#[derive(Debug, Clone, clap::Args)]
pub struct StartArgs {
    /// System under test, e.g. mqtt://127.0.0.1:1884/bench?qos=1
    #[arg(long, env = "MAESTRO_SUT")]
    pub sut: String,
    /// Total messages per second over all producers (0 = as fast as possible).
    #[arg(long, env = "MAESTRO_RATE", default_value_t = 1000.0)]
    pub rate: f64,
    /// How long to send [default: 10s unless --count is given].
    #[arg(short, long, env = "MAESTRO_DURATION", value_parser = humantime::parse_duration, conflicts_with = "count")]
    pub duration: Option<Duration>,
    /// How many messages to send in total.
    #[arg(long, env = "MAESTRO_COUNT")]
    pub count: Option<u64>,
    /// Excluded from latency and rates at the start of the run.
    #[arg(long, env = "MAESTRO_WARMUP", value_parser = humantime::parse_duration, default_value = "0s")]
    pub warmup: Duration,
    /// Message size in bytes: N, or ~N for sizes spread over N/2..=3N/2.
    #[arg(long, env = "MAESTRO_SIZE", default_value = "256")]
    pub size: MessageSize,
    /// Producers in total.
    #[arg(long, env = "MAESTRO_PRODUCERS", default_value_t = 1)]
    pub producers: u32,
    /// Consumers in total; each gets every message of its topic.
    #[arg(long, env = "MAESTRO_CONSUMERS", default_value_t = 1)]
    pub consumers: u32,
    /// Topics; producers and consumers are spread over them round robin.
    #[arg(long, env = "MAESTRO_TOPICS", default_value_t = 1)]
    pub topics: u32,
    /// Only the workers of this group.
    #[arg(long, env = "MAESTRO_GROUP")]
    pub group: Option<Segment>,
    /// Where results folders go.
    #[arg(long, env = "MAESTRO_RESULTS", default_value = "results")]
    pub results: PathBuf,
    /// How long to wait for workers at each step.
    #[arg(short, long, env = "MAESTRO_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl StartArgs {
    pub fn spec(&self) -> TestSpec {
        let duration = match (self.duration, self.count) {
            (None, None) => Some(Duration::from_secs(10)),
            (d, _) => d,
        };
        TestSpec {
            sut: self.sut.clone(),
            rate: self.rate,
            duration_ms: duration.map(|d| d.as_millis() as u64),
            count: self.count,
            warmup_ms: self.warmup.as_millis() as u64,
            size: self.size,
            producers: self.producers,
            consumers: self.consumers,
            topics: self.topics,
            payload: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("invalid test: {0}")]
    Spec(String),
    #[error("the SUT {sut} cannot be reached: {reason}")]
    Sut { sut: String, reason: String },
    #[error("no workers{0} answered; start some with maestro-worker")]
    NoWorkers(String),
    #[error("workers not ready: {0}")]
    Workers(String),
    #[error("cannot write results to {path}: {source}")]
    Results {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How a run is carried out, beyond its spec.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub group: Option<Segment>,
    pub results: PathBuf,
    pub timeout: Duration,
    /// Print a progress line every second (stderr).
    pub progress: bool,
}

/// What a finished run produced.
#[derive(Debug)]
pub struct Finished {
    pub summary: Summary,
    pub folder: PathBuf,
}

/// A run id that sorts by time: `20261121T222509Z-3f2a`.
pub fn new_run_id() -> RunId {
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(['-', ':'], "");
    let suffix: String = NoteId::random().to_string().chars().take(4).collect();
    RunId::new(format!("{stamp}-{suffix}")).unwrap_or_else(|_| unreachable!("valid id"))
}

/// Splits a spec over workers: producer i and consumer j go to workers round robin, to
/// topics round robin; rates and counts are split evenly (counts exactly). When the
/// protocol's consumers of a topic `compete` (one AMQP queue, one Kafka group per topic),
/// they share one subscription; otherwise each consumer is its own (fan-out).
pub fn split(
    spec: &TestSpec,
    run: &RunId,
    workers: &[PeerId],
    compete: bool,
) -> BTreeMap<PeerId, Configure> {
    let mut out: BTreeMap<PeerId, Configure> = BTreeMap::new();
    let n = workers.len().max(1);
    for i in 0..spec.producers {
        let w = &workers[i as usize % n];
        let count = spec.count.map(|c| {
            let base = c / u64::from(spec.producers);
            base + u64::from(u64::from(i) < c % u64::from(spec.producers))
        });
        out.entry(w.clone())
            .or_insert_with(|| empty(spec, run))
            .producers
            .push(ProducerPlan {
                id: i,
                topic: i % spec.topics,
                rate: spec.rate / f64::from(spec.producers),
                count,
            });
    }
    for j in 0..spec.consumers {
        let w = &workers[j as usize % n];
        out.entry(w.clone())
            .or_insert_with(|| empty(spec, run))
            .consumers
            .push(ConsumerPlan {
                id: j,
                topic: j % spec.topics,
                subscription: if compete { j % spec.topics } else { j },
            });
    }
    out
}

fn empty(spec: &TestSpec, run: &RunId) -> Configure {
    Configure {
        run: run.clone(),
        spec: spec.clone(),
        producers: Vec::new(),
        consumers: Vec::new(),
        lease_ms: crate::controller::LEASE.as_millis() as u64,
        producer_skew_us: Vec::new(),
    }
}

/// Tells each worker with consumers how far its clock is ahead of each producer's
/// worker (from the ping offsets), so cross-host latencies are corrected.
pub fn apply_clock_skews(
    shares: &mut BTreeMap<PeerId, Configure>,
    offsets: &BTreeMap<PeerId, i64>,
) {
    let producers = shares.values().next().map_or(0, |c| c.spec.producers) as usize;
    let mut producer_offset = vec![0i64; producers];
    for (worker, c) in shares.iter() {
        let offset = offsets.get(worker).copied().unwrap_or(0);
        for p in &c.producers {
            if let Some(slot) = producer_offset.get_mut(p.id as usize) {
                *slot = offset;
            }
        }
    }
    for (worker, c) in shares.iter_mut() {
        if c.consumers.is_empty() {
            continue;
        }
        let own = offsets.get(worker).copied().unwrap_or(0);
        c.producer_skew_us = producer_offset.iter().map(|p| own - p).collect();
    }
}

/// A ping's clock offset, or 0 when it is within the measurement's error bound (half the
/// round trip): on one host, offsets are noise and correcting by them would add noise.
pub fn significant_offset(offset_us: Option<i64>, rtt_us: i64) -> i64 {
    match offset_us {
        Some(o) if o.abs() > rtt_us / 2 => o,
        _ => 0,
    }
}

/// Stops whatever `participants` set up for `run` (after a failed or interrupted start).
async fn release(controller: &mut Controller, run: &RunId, participants: &[PeerId]) {
    let stops = participants
        .iter()
        .map(|id| (id.clone(), Body::Stop(Stop { run: run.clone() })))
        .collect();
    let _ = request_each(
        controller,
        stops,
        Duration::from_secs(2),
        &CancellationToken::new(),
        &mut Vec::new(),
    )
    .await;
}

/// Producers stop at the end of their window by themselves; the controller stops a run
/// this long after the window if a worker still reports active producers.
pub const END_GRACE: Duration = Duration::from_secs(5);

/// Sends one request to each peer and collects the replies until `timeout`. Events that
/// arrive meanwhile are kept in `backlog`; a peer that goes offline is not waited for.
async fn request_each(
    controller: &mut Controller,
    requests: Vec<(PeerId, Body)>,
    timeout: Duration,
    interrupt: &CancellationToken,
    backlog: &mut Vec<Note>,
) -> Result<BTreeMap<PeerId, Note>, ControlError> {
    let mut pending: HashMap<NoteId, PeerId> = HashMap::new();
    for (peer, body) in requests {
        let note = controller.send(&Target::Peer(peer.clone()), body).await?;
        pending.insert(note.id, peer);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut replies = BTreeMap::new();
    while !pending.is_empty() {
        match controller.next(deadline, interrupt).await? {
            None => break,
            Some(Incoming::Reply(note, _)) => {
                if let Some(peer) = note.correlation_id.and_then(|c| pending.remove(&c)) {
                    replies.insert(peer, note);
                }
            }
            Some(Incoming::Presence(id, p)) => {
                if p.is_none_or(|p| p.status == PresenceStatus::Offline) {
                    pending.retain(|_, peer| *peer != id);
                }
            }
            Some(Incoming::Event(e)) => backlog.push(e),
        }
    }
    Ok(replies)
}

/// Runs one test and writes its results folder.
pub async fn run_test(
    controller: &mut Controller,
    spec: TestSpec,
    options: &RunOptions,
    shutdown: &CancellationToken,
) -> Result<Finished, StartError> {
    spec.validate()
        .map_err(|e| StartError::Spec(e.to_string()))?;
    let run = new_run_id();
    let compete = maestro_worker::driver::consumers_compete(&spec.sut, &run)
        .map_err(|e| StartError::Spec(e.to_string()))?;

    // 1. The workers, and their shares.
    let target = match &options.group {
        Some(g) => Target::Group(g.clone()),
        None => Target::Role(Role::Worker),
    };
    let ping = controller
        .request(&target, Body::Ping(Ping {}), options.timeout, shutdown)
        .await?;
    let outcomes: Vec<_> = crate::report::outcomes(&ping)
        .into_iter()
        .filter(|o| o.status == crate::report::PeerStatus::Ok && o.role == Role::Worker)
        .collect();
    let clocks: BTreeMap<PeerId, (i64, i64)> = outcomes
        .iter()
        .map(|o| {
            let rtt = o.rtt_us.unwrap_or(0).max(0);
            (
                o.id.clone(),
                (significant_offset(o.clock_offset_us, rtt), rtt),
            )
        })
        .collect();
    let mut workers: Vec<(PeerId, String)> = outcomes.into_iter().map(|o| (o.id, o.name)).collect();
    workers.sort_by(|a, b| a.1.cmp(&b.1));
    if workers.is_empty() {
        let whom = options
            .group
            .as_ref()
            .map(|g| format!(" in group {g}"))
            .unwrap_or_default();
        return Err(StartError::NoWorkers(whom));
    }
    let ids: Vec<PeerId> = workers.iter().map(|w| w.0.clone()).collect();
    let mut shares = split(&spec, &run, &ids, compete);
    let offsets: BTreeMap<PeerId, i64> = clocks.iter().map(|(id, c)| (id.clone(), c.0)).collect();
    apply_clock_skews(&mut shares, &offsets);
    let names: BTreeMap<PeerId, String> = workers.iter().cloned().collect();
    let participants: Vec<PeerId> = shares.keys().cloned().collect();
    tracing::info!(run = %run, workers = participants.len(), "configuring");
    // The run is ours while this lives: workers end it when renewals stop.
    let _lease = controller.lease(&run, &participants);

    let mut backlog = Vec::new();
    let configure: Vec<(PeerId, Body)> = shares
        .iter()
        .map(|(id, c)| (id.clone(), Body::Configure(c.clone())))
        .collect();
    let replies = match request_each(
        controller,
        configure,
        options.timeout,
        shutdown,
        &mut backlog,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            release(controller, &run, &participants).await;
            return Err(e.into());
        }
    };
    let mut problems = Vec::new();
    let mut sut_problem = None;
    for id in &participants {
        let name = &names[id];
        match replies.get(id).map(|n| &n.body) {
            Some(Body::Configured(_)) => {}
            Some(Body::Error(e)) if e.code == ErrorCode::SutUnreachable => {
                sut_problem.get_or_insert_with(|| e.message.clone());
            }
            Some(Body::Error(e)) if e.code == ErrorCode::InvalidSpec => {
                return Err(StartError::Spec(e.message.clone()));
            }
            Some(Body::Error(e)) => problems.push(format!("{name}: {:?}: {}", e.code, e.message)),
            Some(other) => problems.push(format!("{name}: unexpected {}", other.kind())),
            None => problems.push(format!(
                "{name}: no answer within {}",
                humantime::format_duration(options.timeout)
            )),
        }
    }
    if sut_problem.is_some() || !problems.is_empty() {
        release(controller, &run, &participants).await;
        if let Some(reason) = sut_problem {
            return Err(StartError::Sut {
                sut: maestro_worker::driver::mqtt::redact(&spec.sut),
                reason,
            });
        }
        return Err(StartError::Workers(problems.join("; ")));
    }

    // 2. A common start, far enough ahead for every worker to get the note; each worker
    //    gets it on its own clock.
    let start_at = UnixMicros(maestro_control::now().0 + 300_000);
    let started_at = SystemTime::now() + Duration::from_millis(300);
    let starts = participants
        .iter()
        .map(|id| {
            (
                id.clone(),
                Body::Start(Start {
                    run: run.clone(),
                    start_at_us: UnixMicros(start_at.0 + offsets.get(id).copied().unwrap_or(0)),
                }),
            )
        })
        .collect();
    let replies =
        match request_each(controller, starts, options.timeout, shutdown, &mut backlog).await {
            Ok(r) => r,
            Err(e) => {
                release(controller, &run, &participants).await;
                return Err(e.into());
            }
        };
    let mut collected = Collected {
        clocks,
        ..Collected::default()
    };
    for id in &participants {
        if !matches!(replies.get(id).map(|n| &n.body), Some(Body::Started(_))) {
            collected
                .degraded
                .push(format!("worker {} ({id}) did not start", names[id]));
        }
    }

    // 3. Watch until every producer is done.
    let started = Instant::now() + Duration::from_millis(300);
    let send_window = spec.send_window();
    // Producers stop at the end of their window by themselves.
    let deadline = started + send_window + END_GRACE;
    // Copies each message should reach: one per subscription.
    let fanout = if compete {
        f64::from(spec.consumers.min(spec.topics)) / f64::from(spec.topics)
    } else {
        f64::from(spec.consumers) / f64::from(spec.topics)
    };
    let folder = options.results.join(run.as_str());
    let live = LiveResults::create(folder.clone(), start_at.0, names.clone()).map_err(|source| {
        StartError::Results {
            path: folder.clone(),
            source,
        }
    });
    let live = match live {
        Ok(l) => l,
        Err(e) => {
            release(controller, &run, &participants).await;
            return Err(e);
        }
    };
    let mut watch = Watch {
        run: &run,
        names: &names,
        live: participants.clone(),
        active: BTreeMap::new(),
        results: Vec::new(),
        sent_total: 0,
        received_total: 0,
        collected,
        stream: live,
        stream_error: None,
    };
    for note in std::mem::take(&mut backlog) {
        watch.on_note(note);
    }
    let mut next_progress = tokio::time::Instant::now() + Duration::from_secs(1);
    let stop_reason = loop {
        let producing = watch
            .live
            .iter()
            .filter(|id| !shares[*id].producers.is_empty())
            .any(|id| watch.active.get(id).is_none_or(|a| *a > 0));
        if !producing && Instant::now() >= started {
            break "every producer is done";
        }
        if Instant::now() >= deadline {
            watch.collected.degraded.push(format!(
                "producers still sending {} after the planned end",
                humantime::format_duration(
                    deadline.saturating_duration_since(started + send_window)
                )
            ));
            break "deadline";
        }
        let until = next_progress.min(tokio::time::Instant::from_std(deadline));
        match controller.next(until, shutdown).await {
            Ok(incoming) => watch.on(incoming, "during the run"),
            Err(ControlError::Interrupted) => {
                watch.collected.interrupted = true;
                break "interrupted";
            }
            Err(e) => return Err(e.into()),
        }
        if tokio::time::Instant::now() >= next_progress {
            next_progress += Duration::from_secs(1);
            if options.progress {
                let outstanding =
                    (watch.sent_total as f64 * fanout) as i64 - watch.received_total as i64;
                if let Some(row) = watch.stream.last_row() {
                    eprintln!("{}", stream::progress_line(&row, outstanding));
                }
            }
        }
    };
    tracing::info!(run = %run, reason = stop_reason, "stopping");

    // 4. Stop, drain, collect every live worker's result.
    let never = CancellationToken::new();
    let stops = watch
        .live
        .iter()
        .map(|id| (id.clone(), Body::Stop(Stop { run: run.clone() })))
        .collect();
    let mut backlog = Vec::new();
    let _ = request_each(controller, stops, options.timeout, &never, &mut backlog).await?;
    for note in backlog {
        watch.on_note(note);
    }
    let collect_deadline =
        tokio::time::Instant::now() + maestro_worker::engine::tasks::DRAIN_MAX + options.timeout;
    while watch.waiting_for_results() {
        match controller.next(collect_deadline, &never).await? {
            None => break,
            incoming => watch.on(incoming, "before sending its result"),
        }
    }
    let mut stream = watch.stream;
    let written = match watch.stream_error.take() {
        Some(e) => Err(e),
        None => stream.finish(),
    };
    written.map_err(|source| StartError::Results {
        path: folder.clone(),
        source,
    })?;
    let mut collected = watch.collected;
    collected.degraded.extend(stream.unreadable.iter().map(|e| format!("unreadable stats: {e}")));
    for note in watch.results {
        if let Body::RunResult(r) = note.body {
            collected.results.insert(note.sender.id.clone(), r);
        }
    }

    // 5. The numbers: rates over the real send span, from the end of the warm-up.
    let measure_from_us = start_at.0 + spec.warmup_ms as i64 * 1000;
    let worker_rows: Vec<(PeerId, String, usize, usize)> = participants
        .iter()
        .map(|id| {
            (
                id.clone(),
                names[id].clone(),
                shares[id].producers.len(),
                shares[id].consumers.len(),
            )
        })
        .collect();
    let summary = summary::summarize(
        &run,
        &spec,
        started_at,
        measure_from_us,
        &worker_rows,
        &collected,
    );
    summary::write_results(&folder, &summary, &spec).map_err(|source| {
        StartError::Results {
            path: folder.clone(),
            source,
        }
    })?;
    Ok(Finished { summary, folder })
}

/// What the controller learns while a run goes on.
struct Watch<'a> {
    run: &'a RunId,
    names: &'a BTreeMap<PeerId, String>,
    /// Participants still connected.
    live: Vec<PeerId>,
    /// Active producers per worker, from its latest stats.
    active: BTreeMap<PeerId, u32>,
    results: Vec<Note>,
    sent_total: u64,
    received_total: u64,
    collected: Collected,
    /// The time series and interval logs, written as the stats arrive.
    stream: LiveResults,
    /// The first error writing them (the run goes on; it is reported at the end).
    stream_error: Option<std::io::Error>,
}

impl Watch<'_> {
    fn on_note(&mut self, note: Note) {
        match &note.body {
            Body::RunStats(s) if s.run == *self.run => {
                self.active
                    .insert(note.sender.id.clone(), s.active_producers);
                self.sent_total += s.counters.sent;
                self.received_total += s.counters.received;
                if let Err(e) = self.stream.add(&note.sender.id, s, &self.live) {
                    self.stream_error.get_or_insert(e);
                }
            }
            Body::RunResult(r) if r.run == *self.run => self.results.push(note),
            _ => {}
        }
    }

    /// Takes an event or a presence change; a participant that went offline is no longer
    /// waited for, and the run is degraded (`when` says at what point).
    fn on(&mut self, incoming: Option<Incoming>, when: &str) {
        match incoming {
            Some(Incoming::Event(note)) => self.on_note(note),
            Some(Incoming::Presence(id, p))
                if self.live.contains(&id)
                    && p.as_ref()
                        .is_none_or(|p| p.status == PresenceStatus::Offline) =>
            {
                self.live.retain(|w| *w != id);
                self.collected.degraded.push(format!(
                    "worker {} ({id}) disconnected {when}",
                    self.names[&id]
                ));
            }
            _ => {}
        }
    }

    fn waiting_for_results(&self) -> bool {
        self.live
            .iter()
            .any(|id| !self.results.iter().any(|n| n.sender.id == *id))
    }
}

/// The summary for people.
pub fn summary_table(s: &Summary, folder: &std::path::Path) -> String {
    use crate::report::micros;
    let p = |p: &summary::Percentiles| {
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            micros(p.p50 as i64),
            micros(p.p90 as i64),
            micros(p.p99 as i64),
            micros(p.p999 as i64),
            micros(p.max as i64)
        )
    };
    let mut lines = vec![
        format!("run {}  sut {}", s.run_id, s.sut),
        format!(
            "sent {}  unsent {}  received {}  lost {}  duplicated {}  out of order {}  errors {}",
            s.sent, s.unsent, s.received, s.lost, s.duplicated, s.out_of_order, s.errors
        ),
        format!(
            "rate offered {}  achieved {:.1}/s  received {:.1}/s  (measured over {:.1} s)",
            if s.offered_rate > 0.0 {
                format!("{:.1}/s", s.offered_rate)
            } else {
                "max".into()
            },
            s.achieved_rate,
            s.receive_rate,
            s.measured_s
        ),
        format!("response time  {}", p(&s.response_time_us)),
        format!("service time   {}", p(&s.service_time_us)),
        format!("send lag       {}", p(&s.send_lag_us)),
    ];
    if let Some(shortfall) = s.shortfall() {
        lines.push(format!("BELOW OFFER: {shortfall}"));
    }
    if s.clock.max_offset_us > 0 {
        lines.push(format!(
            "clocks: latencies corrected by up to {} (error bound ± {})",
            micros(s.clock.max_offset_us),
            micros(s.clock.error_bound_us)
        ));
    }
    if s.degraded {
        lines.push(format!("DEGRADED: {}", s.degraded_reasons.join("; ")));
    }
    if s.interrupted {
        lines.push("INTERRUPTED: the run was stopped early".into());
    }
    for e in &s.error_messages {
        lines.push(format!("error x{}: {}", e.count, e.message));
    }
    lines.push(format!("results in {}", folder.display()));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_round_robin_and_exact() {
        let spec = TestSpec {
            sut: "mqtt://h".into(),
            rate: 1000.0,
            duration_ms: None,
            count: Some(10),
            warmup_ms: 0,
            size: MessageSize::Fixed(64),
            producers: 3,
            consumers: 4,
            topics: 2,
            payload: None,
        };
        let run = RunId::new("r").unwrap();
        let w: Vec<PeerId> = ["a", "b"]
            .iter()
            .map(|s| PeerId::new(*s).unwrap())
            .collect();
        let s = split(&spec, &run, &w, false);
        let a = &s[&w[0]];
        let b = &s[&w[1]];
        assert_eq!(a.producers.iter().map(|p| p.id).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(b.producers.iter().map(|p| p.id).collect::<Vec<_>>(), [1]);
        let counts: u64 = s
            .values()
            .flat_map(|c| &c.producers)
            .filter_map(|p| p.count)
            .sum();
        assert_eq!(counts, 10);
        assert_eq!(a.producers[0].count, Some(4));
        assert_eq!(
            a.consumers
                .iter()
                .map(|c| (c.id, c.topic))
                .collect::<Vec<_>>(),
            [(0, 0), (2, 0)]
        );
        assert_eq!(
            b.consumers
                .iter()
                .map(|c| (c.id, c.topic))
                .collect::<Vec<_>>(),
            [(1, 1), (3, 1)]
        );
        assert!((a.producers[0].rate - 333.333).abs() < 0.01);
        assert_eq!(
            a.consumers
                .iter()
                .map(|c| c.subscription)
                .collect::<Vec<_>>(),
            [0, 2]
        );
        let s = split(&spec, &run, &w, true);
        assert_eq!(
            s[&w[0]]
                .consumers
                .iter()
                .map(|c| c.subscription)
                .collect::<Vec<_>>(),
            [0, 0]
        );
    }
}
