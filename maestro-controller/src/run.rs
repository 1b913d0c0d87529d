//! One test across the cluster's workers: the I/O shell around the run's state machine
//! ([`crate::lifecycle`]).
//!
//! 1. Find the workers (ping, with clock offsets), split producers and consumers over them
//!    round robin ([`split`]), and send each its share (`configure`). Every worker
//!    connects to the SUT and subscribes; a SUT that cannot be reached fails here, fast.
//! 2. `start` with one common start time a little ahead, on each worker's own clock.
//! 3. Stream the per-second stats to the results folder and a progress line; stop when
//!    every producer is done (or on Ctrl-C, `maestro-cli stop`, or the deadline).
//! 4. Collect every live worker's result, compute the summary, write the results folder.

use crate::client::{ControlError, Controller, Incoming, LEASE};
use crate::faults::{FaultPlan, FaultRecord};
use crate::lifecycle::{Action, Failure, Input, Run};
use crate::outcome::{self, PeerStatus};
use crate::summary::{self, Collected};
use crate::sut::SutRecorder;
use maestro_protocol::{
    Body, Configure, ConsumerPlan, IdRange, Inject, NoteId, PeerId, Ping, PresenceStatus,
    ProducerSkew, Resume, Role, RunId, Segment, Start, Stop, Target, TestSpec, UnixMicros,
};
use maestro_report::RunSummary;
use maestro_report::timeseries::{self, LiveResults};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
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
    #[error(transparent)]
    Report(#[from] maestro_report::ResultsError),
}

/// Which workers produce and which consume.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Roles {
    /// Every worker has producers and consumers (the default).
    #[default]
    Shared,
    /// OpenMessaging Benchmark's `-x`: the first half of the workers (by name) produce,
    /// the others consume.
    Split,
    /// Producers on the workers of one group, consumers on those of another.
    Groups {
        producers: Segment,
        consumers: Segment,
    },
}

impl Roles {
    /// Producer and consumer workers out of the workers found (sorted by name).
    pub fn assign(&self, workers: &[PeerId]) -> Result<(Vec<PeerId>, Vec<PeerId>), RunError> {
        match self {
            Roles::Shared => Ok((workers.to_vec(), workers.to_vec())),
            Roles::Split if workers.len() < 2 => Err(RunError::Workers(format!(
                "producers and consumers on separate workers need at least 2 workers, found {}",
                workers.len()
            ))),
            Roles::Split => {
                let (p, c) = workers.split_at(workers.len() / 2);
                Ok((p.to_vec(), c.to_vec()))
            }
            // The groups' workers were found separately: see `workers`.
            Roles::Groups { .. } => Ok((workers.to_vec(), workers.to_vec())),
        }
    }
}

/// How a run is carried out, beyond its spec.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub group: Option<Segment>,
    /// Which workers produce and which consume.
    pub roles: Roles,
    pub results: PathBuf,
    pub timeout: Duration,
    /// Print a progress line every second (stderr).
    pub progress: bool,
    /// Faults to inject during the run (by the inspectors that declared them).
    pub faults: Vec<FaultPlan>,
    /// Who watches the run as it goes on (the Prometheus exporter, the live view).
    pub watchers: crate::watch::Watchers,
}

/// What a finished run produced.
#[derive(Debug)]
pub struct Finished {
    pub summary: RunSummary,
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

/// Splits a spec over workers: producer i goes to producer worker `i mod P`, consumer j
/// to consumer worker `j mod C` (the same workers unless roles are split), to topics round
/// robin; rates and counts are split evenly (counts exactly). When the protocol's
/// consumers of a topic `compete` (one AMQP queue, one Kafka group per topic), they share
/// one subscription; otherwise each consumer is its own (fan-out).
pub fn split(
    spec: &TestSpec,
    run: &RunId,
    (workers, consumer_workers): (&[PeerId], &[PeerId]),
    compete: bool,
) -> BTreeMap<PeerId, Configure> {
    let mut out: BTreeMap<PeerId, Configure> = BTreeMap::new();
    let n = workers.len().max(1);
    for (w, worker) in workers.iter().enumerate() {
        let range = IdRange::round_robin(spec.producers, w as u32, n as u32);
        if !range.is_empty() {
            out.entry(worker.clone())
                .or_insert_with(|| empty(spec, run))
                .producers = range;
        }
    }
    let n = consumer_workers.len().max(1);
    for j in 0..spec.consumers {
        let w = &consumer_workers[j as usize % n];
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
        producers: IdRange::EMPTY,
        consumers: Vec::new(),
        lease_ms: LEASE.as_millis() as u64,
        producer_skews: Vec::new(),
    }
}

/// Tells each worker with consumers how far its clock is ahead of each producer's
/// worker (from the ping offsets), so cross-host latencies are corrected.
pub fn apply_clock_skews(
    shares: &mut BTreeMap<PeerId, Configure>,
    offsets: &BTreeMap<PeerId, i64>,
) {
    let producers: Vec<(IdRange, i64)> = shares
        .iter()
        .filter(|(_, c)| !c.producers.is_empty())
        .map(|(w, c)| (c.producers, offsets.get(w).copied().unwrap_or(0)))
        .collect();
    for (worker, c) in shares.iter_mut() {
        if c.consumers.is_empty() {
            continue;
        }
        let own = offsets.get(worker).copied().unwrap_or(0);
        c.producer_skews = producers
            .iter()
            .filter(|(_, offset)| own != *offset)
            .map(|(range, offset)| ProducerSkew {
                producers: *range,
                skew_us: own - offset,
            })
            .collect();
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

/// How far ahead of the `start` notes the common start is.
const START_AHEAD_US: i64 = 300_000;

/// Producers stop at the end of their window by themselves; the controller stops a run
/// this long after the window if a worker still reports active producers.
pub const END_GRACE: Duration = Duration::from_secs(5);

/// Stops whatever `participants` set up for `run` (after a failed or interrupted start).
async fn release(controller: &mut Controller, run: &RunId, participants: &[PeerId]) {
    for id in participants {
        let _ = controller
            .send(
                &Target::Peer(id.clone()),
                Body::Stop(Stop { run: run.clone() }),
            )
            .await;
    }
}

/// The workers that answer a ping: (id, name) sorted by name, with each one's clock
/// offset (0 when within its error bound) and round trip, µs.
async fn workers(
    controller: &mut Controller,
    group: Option<&Segment>,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<(Vec<(PeerId, String)>, BTreeMap<PeerId, (i64, i64)>), RunError> {
    let target = match group {
        Some(g) => Target::Group(g.clone()),
        None => Target::Role(Role::Worker),
    };
    let ping = controller
        .request(&target, Body::Ping(Ping {}), timeout, shutdown)
        .await?;
    let ok: Vec<_> = outcome::outcomes(&ping)
        .into_iter()
        .filter(|o| o.status == PeerStatus::Ok && o.role == Role::Worker)
        .collect();
    let clocks = ok
        .iter()
        .map(|o| {
            let rtt = o.rtt_us.unwrap_or(0).max(0);
            (
                o.id.clone(),
                (significant_offset(o.clock_offset_us, rtt), rtt),
            )
        })
        .collect();
    let mut named: Vec<(PeerId, String)> = ok.into_iter().map(|o| (o.id, o.name)).collect();
    named.sort_by(|a, b| a.1.cmp(&b.1));
    if named.is_empty() {
        let whom = group.map(|g| format!(" in group {g}")).unwrap_or_default();
        return Err(RunError::NoWorkers(whom));
    }
    Ok((named, clocks))
}

/// The online inspectors that answer a ping: id -> (name, clock offset µs, capabilities).
pub async fn inspectors(
    controller: &mut Controller,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<BTreeMap<PeerId, (String, i64, Vec<String>)>, RunError> {
    let online = controller
        .presence()
        .values()
        .any(|p| p.status == PresenceStatus::Online && p.peer.role == Role::Inspector);
    if !online {
        return Ok(BTreeMap::new());
    }
    let ping = controller
        .request(
            &Target::Role(Role::Inspector),
            Body::Ping(Ping {}),
            timeout,
            shutdown,
        )
        .await?;
    let capabilities: BTreeMap<PeerId, Vec<String>> = controller
        .presence()
        .iter()
        .map(|(id, p)| (id.clone(), p.peer.capabilities.clone()))
        .collect();
    Ok(outcome::outcomes(&ping)
        .into_iter()
        .filter(|o| o.status == PeerStatus::Ok && o.role == Role::Inspector)
        .map(|o| {
            let rtt = o.rtt_us.unwrap_or(0).max(0);
            let caps = capabilities.get(&o.id).cloned().unwrap_or_default();
            (
                o.id.clone(),
                (o.name, significant_offset(o.clock_offset_us, rtt), caps),
            )
        })
        .collect())
}

/// Asks the inspectors for their latest figures, the baseline of the SUT's counters (a
/// run may start before their next event).
async fn sut_baseline(
    controller: &mut Controller,
    recorder: &mut SutRecorder,
    folder: &std::path::Path,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<(), RunError> {
    let asked = controller
        .request(
            &Target::Role(Role::Inspector),
            Body::SutRequest(maestro_protocol::SutRequest {}),
            timeout,
            shutdown,
        )
        .await;
    match asked {
        Ok(exchange) => {
            for (id, (note, _)) in &exchange.replies {
                if let Body::SutStats(s) = &note.body {
                    recorder.add(folder, id, s);
                }
            }
            Ok(())
        }
        Err(ControlError::Interrupted) => Err(ControlError::Interrupted.into()),
        Err(e) => {
            tracing::warn!(error = %e, "no baseline from the inspectors");
            Ok(())
        }
    }
}

/// Runs one test and writes its results folder.
pub async fn run_test(
    controller: &mut Controller,
    mut spec: TestSpec,
    options: &RunOptions,
    shutdown: &CancellationToken,
) -> Result<Finished, RunError> {
    spec.marks_ms = crate::faults::marks(&options.faults);
    spec.validate().map_err(|e| RunError::Spec(e.to_string()))?;
    let window = spec.send_window();
    if let Some(f) = options.faults.iter().find(|f| f.at + f.duration > window) {
        return Err(RunError::Spec(format!(
            "fault {:?} at {} for {} ends after the send window of {}",
            f.action.as_str(),
            humantime::format_duration(f.at),
            humantime::format_duration(f.duration),
            humantime::format_duration(window)
        )));
    }
    let run = new_run_id();
    let compete = spec.sut.consumers_compete();
    let (named, clocks, (producing, consuming)) = match &options.roles {
        Roles::Groups {
            producers,
            consumers,
        } => {
            let (mut p, mut clocks) =
                workers(controller, Some(producers), options.timeout, shutdown).await?;
            let (c, c_clocks) =
                workers(controller, Some(consumers), options.timeout, shutdown).await?;
            let roles = (
                p.iter().map(|w| w.0.clone()).collect(),
                c.iter().map(|w| w.0.clone()).collect(),
            );
            clocks.extend(c_clocks);
            for w in c {
                if !p.contains(&w) {
                    p.push(w);
                }
            }
            (p, clocks, roles)
        }
        roles => {
            let (named, clocks) = workers(
                controller,
                options.group.as_ref(),
                options.timeout,
                shutdown,
            )
            .await?;
            let ids: Vec<PeerId> = named.iter().map(|w| w.0.clone()).collect();
            let assigned = roles.assign(&ids)?;
            (named, clocks, assigned)
        }
    };
    let inspectors = inspectors(controller, options.timeout, shutdown).await?;
    let mut faults: Vec<FaultRecord> = {
        let list: Vec<(PeerId, String, Vec<String>)> = inspectors
            .iter()
            .map(|(id, (name, _, caps))| (id.clone(), name.clone(), caps.clone()))
            .collect();
        crate::faults::assign(&options.faults, &list)
            .map_err(RunError::Spec)?
            .into_iter()
            .zip(&options.faults)
            .map(|(who, plan)| FaultRecord::new(plan.clone(), who))
            .collect()
    };
    let inspector_clocks: BTreeMap<PeerId, (String, i64)> = inspectors
        .iter()
        .map(|(id, (name, offset, _))| (id.clone(), (name.clone(), *offset)))
        .collect();
    // From now on the inspectors' samples are baselines; the start makes them the run's.
    let mut recorder = SutRecorder::new(inspector_clocks.clone());
    if !inspector_clocks.is_empty() {
        let folder = options.results.join(run.as_str());
        sut_baseline(
            controller,
            &mut recorder,
            &folder,
            options.timeout,
            shutdown,
        )
        .await?;
    }
    let mut sut: Option<SutRecorder> = Some(recorder);
    let mut fault_replies: HashMap<NoteId, usize> = HashMap::new();
    let mut shares = split(&spec, &run, (&producing, &consuming), compete);
    let offsets: BTreeMap<PeerId, i64> = clocks.iter().map(|(id, c)| (id.clone(), c.0)).collect();
    apply_clock_skews(&mut shares, &offsets);
    let names: BTreeMap<PeerId, String> = named.into_iter().collect();
    let participants: Vec<PeerId> = shares.keys().cloned().collect();
    tracing::info!(run = %run, workers = participants.len(), "configuring");
    if options.progress {
        // Connecting can take long (a fleet at its connect rate): say what is going on.
        let clients = u64::from(spec.producers) + u64::from(spec.consumers);
        let ramp = spec.connect_span();
        if ramp >= Duration::from_secs(2) {
            let workers = participants.len();
            eprintln!(
                "connecting {clients} clients on {workers} worker{} at {}/s: about {}",
                if workers == 1 { "" } else { "s" },
                spec.connect_rate.unwrap_or_default(),
                humantime::format_duration(Duration::from_secs(ramp.as_secs()))
            );
        }
    }
    // The run is ours while this lives: workers end it when renewals stop.
    let _lease = controller.lease(&run, &participants);
    let (mut machine, first) = Run::new(
        &participants
            .iter()
            .map(|id| {
                (
                    id.clone(),
                    names[id].clone(),
                    !shares[id].producers.is_empty(),
                )
            })
            .collect::<Vec<_>>(),
    );

    let roster: Vec<(PeerId, String)> = participants
        .iter()
        .map(|id| (id.clone(), names[id].clone()))
        .collect();
    for w in &options.watchers {
        w.run_begins(&run, &spec, &roster);
        w.step(&run, machine.step());
    }

    // The common start, set when `start` is sent: far enough ahead for every worker to
    // get the note; each worker gets it on its own clock.
    let mut start_at = UnixMicros(0);
    let mut started_at = SystemTime::now();
    let folder = options.results.join(run.as_str());
    let mut stream: Option<LiveResults> = None;
    let mut stream_error: Option<std::io::Error> = None;
    let mut pending: HashMap<NoteId, PeerId> = HashMap::new();
    let mut action = Some(first);
    let mut deadline = Instant::now() + options.timeout;
    let mut next_progress = Instant::now() + Duration::from_secs(1);
    let (mut sent_total, mut received_total) = (0u64, 0u64);
    let mut refused_senders: std::collections::BTreeSet<PeerId> = std::collections::BTreeSet::new();
    // Results too large for one note arrive in parts, collected per worker.
    let mut result_parts: BTreeMap<PeerId, maestro_protocol::PartsCollector> = BTreeMap::new();
    // Copies each message should reach: one per subscription.
    let fanout = if compete {
        f64::from(spec.consumers.min(spec.topics)) / f64::from(spec.topics)
    } else {
        f64::from(spec.consumers) / f64::from(spec.topics)
    };
    let mut interrupt = shutdown.clone();
    let never = CancellationToken::new();
    let mut running = false;
    let mut exported_second: Option<u32> = None;
    let mut backlog = spec
        .consumer_backlog_bytes
        .map(|bytes| crate::backlog::Backlog::new(bytes, f64::from(spec.size.mean()), fanout));
    let mut backlog_second: Option<u32> = None;
    let mut max_backlog: Option<u64> = None;
    loop {
        // Carry out what the machine asked for.
        while let Some(a) = action.take() {
            match a {
                Action::Configure | Action::Start => {
                    let start = matches!(a, Action::Start);
                    if start {
                        start_at = UnixMicros(maestro_control::now().0 + START_AHEAD_US);
                        started_at =
                            SystemTime::now() + Duration::from_micros(START_AHEAD_US as u64);
                        if let Some(r) = sut.as_mut() {
                            r.begin(start_at.0);
                        }
                        let created =
                            LiveResults::create(folder.clone(), start_at.0, names.clone())
                                .and_then(|live| {
                                    begin_folder(
                                        &folder,
                                        &run,
                                        &spec,
                                        started_at,
                                        start_at,
                                        &participants,
                                        (&names, &shares),
                                        &clocks,
                                        fanout,
                                    )?;
                                    Ok(live)
                                });
                        match created {
                            Ok(mut live) => {
                                if !faults.is_empty() {
                                    live.keep_rows();
                                }
                                stream = Some(live);
                            }
                            Err(source) => {
                                // Configured workers are released, not left to their lease.
                                release(controller, &run, &participants).await;
                                return Err(RunError::Results {
                                    path: folder.clone(),
                                    source,
                                });
                            }
                        }
                    }
                    pending.clear();
                    for (id, share) in &shares {
                        let body = if start {
                            Body::Start(Start {
                                run: run.clone(),
                                start_at_us: UnixMicros(
                                    start_at.0 + offsets.get(id).copied().unwrap_or(0),
                                ),
                            })
                        } else {
                            Body::Configure(share.clone())
                        };
                        let note = controller.send(&Target::Peer(id.clone()), body).await?;
                        pending.insert(note.id, id.clone());
                    }
                    // Configuring at a connect rate takes as long as the ramp.
                    let ramp = if start {
                        Duration::ZERO
                    } else {
                        spec.connect_span()
                    };
                    deadline = Instant::now() + options.timeout + ramp;
                }
                Action::Stop(live) => {
                    tracing::info!(run = %run, reason = machine.stop_reason().unwrap_or(""), "stopping");
                    pending.clear();
                    for id in live {
                        controller
                            .send(&Target::Peer(id), Body::Stop(Stop { run: run.clone() }))
                            .await?;
                    }
                    heal_now(controller, &run, &faults).await;
                    deadline = Instant::now() + maestro_protocol::DRAIN_MAX + options.timeout;
                    // From here, a Ctrl-C only makes the shell's second-signal handler exit.
                    interrupt = never.clone();
                }
                Action::Fail(failure) => {
                    release(controller, &run, &participants).await;
                    heal_now(controller, &run, &faults).await;
                    return Err(match failure {
                        Failure::Sut(reason) => RunError::Sut {
                            sut: spec.sut.redacted(),
                            reason,
                        },
                        Failure::Spec(reason) => RunError::Spec(reason),
                        Failure::Workers(w) => RunError::Workers(w.join("; ")),
                        Failure::Interrupted => ControlError::Interrupted.into(),
                    });
                }
                Action::Finish => {
                    let mut stream = stream.take().ok_or_else(|| {
                        RunError::Workers("the run finished before it started".into())
                    })?;
                    // Heals to hear about, and a SUT sample from after the last message
                    // (the SUT's counters lag a little), briefly.
                    settle(
                        controller,
                        &run,
                        &folder,
                        &mut faults,
                        &inspector_clocks,
                        sut.as_mut(),
                    )
                    .await;
                    let written = match stream_error.take() {
                        Some(e) => Err(e),
                        None => stream.finish(),
                    };
                    written.map_err(|source| RunError::Results {
                        path: folder.clone(),
                        source,
                    })?;
                    let mut collected = Collected {
                        clocks,
                        results: machine.take_results(),
                        degraded: machine.degraded().to_vec(),
                        interrupted: machine.interrupted(),
                    };
                    collected.degraded.extend(
                        stream
                            .unreadable
                            .iter()
                            .map(|e| format!("unreadable stats: {e}")),
                    );
                    // The numbers: rates over the real send span, from the end of the warm-up.
                    let measure_from_us = start_at.0 + spec.warmup_ms as i64 * 1000;
                    let rows: Vec<(PeerId, String, usize, usize)> = participants
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
                        &rows,
                        &collected,
                    );
                    let mut summary = summary;
                    summary.max_backlog = max_backlog;
                    if let Some(b) = &backlog {
                        let figures = b.summary();
                        if figures.built_s.is_none() {
                            summary.degraded = true;
                            summary.degraded_reasons.push(format!(
                                "the consumer backlog never reached its {} bytes: consumers were held until the stop",
                                figures.target_bytes
                            ));
                        }
                        summary.backlog = Some(figures);
                    }
                    if let Some(recorder) = sut.take() {
                        summary.sut_metrics =
                            recorder
                                .finish(summary.sent)
                                .map_err(|source| RunError::Results {
                                    path: folder.clone(),
                                    source,
                                })?;
                    }
                    if !faults.is_empty() {
                        let segments =
                            crate::faults::Segments::of(&collected.results, spec.marks_ms.len());
                        let expected = (spec.rate > 0.0).then_some(spec.rate * fanout);
                        summary.faults = crate::faults::summarize(
                            &faults,
                            &spec.marks_ms,
                            &segments,
                            stream.rows(),
                            start_at.0,
                            expected,
                        );
                    }
                    for w in &options.watchers {
                        for f in &faults {
                            w.fault(&run, f);
                        }
                        if let Some(g) = &summary.generator {
                            w.generator(&run, g);
                        }
                        w.finished(&run, summary.lost, 0);
                    }
                    maestro_report::folder::write(&folder.join("summary.json"), &summary)?;
                    // spec.json was written at the start (`begin_folder`): the spec is fixed.
                    // The summary is whole: the skeleton for a partial one goes.
                    let _ = std::fs::remove_file(folder.join(maestro_report::partial::BEGUN));
                    return Ok(Finished { summary, folder });
                }
            }
        }
        // Wait for the next thing to happen (or the deadline, or a progress tick).
        let next_fault = running
            .then(|| {
                faults
                    .iter()
                    .filter(|f| f.state == crate::faults::FaultState::Planned)
                    .map(|f| f.plan.at)
                    .min()
            })
            .flatten()
            .map(|at| wall_instant(start_at.0 + at.as_micros() as i64));
        let until = if stream.is_some() {
            next_progress.min(deadline)
        } else {
            deadline
        };
        let until = next_fault.map_or(until, |f| until.min(f));
        let incoming = match controller.next(until, &interrupt).await {
            Ok(i) => i,
            Err(ControlError::Interrupted) => {
                action = machine.on(Input::Interrupt);
                continue;
            }
            Err(e) => {
                if stream.is_none() {
                    release(controller, &run, &participants).await;
                }
                return Err(e.into());
            }
        };
        let input = match incoming {
            None if Instant::now() >= deadline => Some(Input::Deadline),
            None => None,
            // A reply counts only from the peer its request went to: anyone can write a
            // note with a request's correlation id (ids are in every note).
            Some(Incoming::Reply(note, _))
                if note.correlation_id.is_some_and(|c| {
                    let addressed = pending
                        .get(&c)
                        .or_else(|| fault_replies.get(&c).map(|i| &faults[*i].inspector.0));
                    addressed.is_some_and(|id| *id != note.sender.id)
                }) =>
            {
                if refused_senders.insert(note.sender.id.clone()) {
                    tracing::warn!(run = %run, sender = %note.sender.id,
                        "refused a reply from a peer the request did not go to");
                }
                None
            }
            Some(Incoming::Reply(note, _)) => {
                if let Some(i) = note.correlation_id.and_then(|c| fault_replies.remove(&c)) {
                    on_fault_reply(
                        &mut faults[i],
                        &note.body,
                        &inspector_clocks,
                        options.progress,
                        start_at.0,
                    );
                    None
                } else {
                    note.correlation_id
                        .and_then(|c| pending.remove(&c))
                        .map(|id| Input::Replied(id, Box::new(note.body)))
                }
            }
            Some(Incoming::Presence(id, p)) => p
                .is_none_or(|p| p.status == PresenceStatus::Offline)
                .then_some(Input::Offline(id)),
            // Events count only from the run's participants, and only when their counts
            // are ones a real worker could have made: a stranger's (or a corrupt) note
            // naming the run is dropped, said once per sender.
            Some(Incoming::Event(note))
                if matches!(note.body, Body::RunStats(_) | Body::RunResult(_))
                    && (!participants.contains(&note.sender.id)
                        || !match &note.body {
                            Body::RunStats(s) => s.plausible(),
                            Body::RunResult(r) => r.plausible(),
                            _ => true,
                        }) =>
            {
                if refused_senders.insert(note.sender.id.clone()) {
                    tracing::warn!(
                        run = %run,
                        sender = %note.sender.id,
                        participant = participants.contains(&note.sender.id),
                        "refused a stats or result note: not from a participant, or counts no worker could have made"
                    );
                }
                None
            }
            Some(Incoming::Event(note)) => match note.body {
                Body::RunStats(s) if s.run == run => {
                    for w in &options.watchers {
                        w.worker_second(&run, &note.sender.id, &s);
                    }
                    sent_total = sent_total.saturating_add(s.counters.sent);
                    received_total = received_total.saturating_add(s.counters.received);
                    if let Some(out) = stream.as_mut() {
                        let live: Vec<PeerId> = machine.live().cloned().collect();
                        if let Err(e) = out.add(&note.sender.id, &s, &live) {
                            stream_error.get_or_insert(e);
                        }
                    }
                    Some(Input::ActiveProducers(note.sender.id, s.active_producers))
                }
                Body::RunResult(r) if r.run == run && r.worker == note.sender.id => {
                    match result_parts
                        .entry(note.sender.id.clone())
                        .or_default()
                        .add(r)
                    {
                        Ok(Some(whole)) => {
                            result_parts.remove(&note.sender.id);
                            Some(Input::Result(note.sender.id, Box::new(whole)))
                        }
                        Ok(None) => None,
                        Err(e) => {
                            tracing::warn!(run = %run, worker = %note.sender.id, error = %e,
                                "refused a part of a result");
                            None
                        }
                    }
                }
                Body::SutStats(s) => {
                    if let Some(recorder) = sut.as_mut() {
                        recorder.add(&folder, &note.sender.id, &s);
                    }
                    if let Some((name, offset)) = inspector_clocks.get(&note.sender.id) {
                        for w in &options.watchers {
                            for sample in &s.samples {
                                w.sut(name, s.at_us.0 - offset, sample);
                            }
                        }
                    }
                    None
                }
                Body::FaultHealed(h) if h.run == run => {
                    on_healed(
                        &mut faults,
                        &h,
                        &inspector_clocks,
                        options.progress,
                        start_at.0,
                    );
                    None
                }
                _ => None,
            },
        };
        if let Some(input) = input {
            if let Some((id, state)) = worker_state(&input) {
                for w in &options.watchers {
                    w.worker(&run, id, state);
                }
            }
            let before = machine.step();
            action = machine.on(input);
            if machine.step() != before {
                for w in &options.watchers {
                    w.step(&run, machine.step());
                }
            }
        }
        if machine.step() == crate::lifecycle::Step::Running && !running {
            running = true;
            if let Some(d) = run_deadline(&spec, start_at) {
                deadline = d;
            }
        }
        if running && machine.step() == crate::lifecycle::Step::Running {
            let now_us = maestro_control::now().0;
            for (i, f) in faults.iter_mut().enumerate() {
                if f.state != crate::faults::FaultState::Planned
                    || start_at.0 + f.plan.at.as_micros() as i64 > now_us
                {
                    continue;
                }
                let note = controller
                    .send(
                        &Target::Peer(f.inspector.0.clone()),
                        Body::Inject(Inject {
                            run: run.clone(),
                            fault: i as u32,
                            action: f.plan.action.clone(),
                            duration_ms: f.plan.duration.as_millis() as u64,
                        }),
                    )
                    .await?;
                f.requested(maestro_control::now().0);
                fault_replies.insert(note.id, i);
            }
        }
        if let Some(out) = stream.as_ref()
            && let Some(row) = out.last_row()
            && backlog_second != Some(row.second)
        {
            backlog_second = Some(row.second);
            let totals = out.totals();
            let waiting = ((totals.sent as f64 * fanout) as u64).saturating_sub(totals.received);
            max_backlog = Some(max_backlog.map_or(waiting, |m| m.max(waiting)));
            let end_s = f64::from(row.second) + 1.0;
            if let Some(b) = backlog.as_mut()
                && b.row(end_s, totals.sent, totals.received) == crate::backlog::Step::Resume
            {
                let waiting = b.summary().backlog_messages.unwrap_or(0);
                tracing::info!(run = %run, after_s = end_s, waiting, "backlog built: resuming the consumers");
                if options.progress {
                    eprintln!(
                        "backlog of {waiting} messages built after {end_s} s: consumers resumed"
                    );
                }
                let live: Vec<PeerId> = machine.live().cloned().collect();
                for (id, share) in &shares {
                    if !share.consumers.is_empty() && live.contains(id) {
                        controller
                            .send(
                                &Target::Peer(id.clone()),
                                Body::Resume(Resume { run: run.clone() }),
                            )
                            .await?;
                    }
                }
            }
        }
        if let Some(row) = stream.as_ref().and_then(LiveResults::last_row)
            && !options.watchers.is_empty()
            && exported_second != Some(row.second)
        {
            exported_second = Some(row.second);
            let in_flight = (sent_total as f64 * fanout) as i64 - received_total as i64;
            let active: Vec<&str> = faults
                .iter()
                .filter(|f| f.state == crate::faults::FaultState::Active)
                .map(|f| f.plan.action.as_str())
                .collect();
            let whole = stream
                .as_ref()
                .map(LiveResults::whole_run_response)
                .unwrap_or_default();
            let second = crate::watch::Second {
                second: row.second,
                sent: row.counters.sent,
                received: row.counters.received,
                errors: row.counters.errors,
                duplicated: row.counters.duplicated,
                response: row.response,
            };
            for w in &options.watchers {
                w.second(&run, &second, &whole, in_flight, &active.join(","));
                for f in &faults {
                    w.fault(&run, f);
                }
            }
        }
        if Instant::now() >= next_progress {
            next_progress += Duration::from_secs(1);
            if options.progress
                && let Some(row) = stream.as_ref().and_then(LiveResults::last_row)
            {
                let outstanding = (sent_total as f64 * fanout) as i64 - received_total as i64;
                eprintln!("{}", timeseries::progress_line(&row, outstanding));
            }
        }
    }
}

/// What an input says about one worker's state, for the watchers.
fn worker_state(input: &Input) -> Option<(&PeerId, crate::watch::WorkerState)> {
    use crate::watch::WorkerState;
    match input {
        Input::Replied(id, body) => match body.as_ref() {
            Body::Configured(_) => Some((id, WorkerState::Ready)),
            Body::Started(_) => Some((id, WorkerState::Running)),
            Body::Error(_) => Some((id, WorkerState::Failed)),
            _ => None,
        },
        Input::Offline(id) => Some((id, WorkerState::Offline)),
        Input::Result(id, _) => Some((id, WorkerState::Done)),
        _ => None,
    }
}

/// A tokio instant for a wall-clock time (controller clock), µs.
fn wall_instant(at_us: i64) -> Instant {
    let d = at_us - maestro_control::now().0;
    Instant::now() + Duration::from_micros(d.max(0) as u64)
}

/// Asks the inspectors of faults still open to heal them now.
async fn heal_now(controller: &mut Controller, run: &RunId, faults: &[FaultRecord]) {
    let mut asked = std::collections::BTreeSet::new();
    for f in faults.iter().filter(|f| f.open()) {
        if asked.insert(f.inspector.0.clone()) {
            let _ = controller
                .send(
                    &Target::Peer(f.inspector.0.clone()),
                    Body::Stop(Stop { run: run.clone() }),
                )
                .await;
        }
    }
}

fn offset_of(clocks: &BTreeMap<PeerId, (String, i64)>, id: &PeerId) -> i64 {
    clocks.get(id).map_or(0, |c| c.1)
}

fn on_fault_reply(
    f: &mut FaultRecord,
    body: &Body,
    clocks: &BTreeMap<PeerId, (String, i64)>,
    progress: bool,
    start_us: i64,
) {
    match body {
        Body::Injected(i) => f.injected(i, offset_of(clocks, &f.inspector.0)),
        Body::Error(e) => f.refused(format!("{}: {}", f.inspector.1, e.message)),
        other => f.refused(format!(
            "{}: unexpected {} reply",
            f.inspector.1,
            other.kind()
        )),
    }
    if progress {
        match (f.state, f.confirmed_at_us) {
            (crate::faults::FaultState::Failed, _) => {
                eprintln!("fault {}: {}", f.plan.action, f.errors.join("; "));
            }
            (_, Some(t)) => eprintln!(
                "fault {}: in effect at +{:.2} s",
                f.plan.action,
                (t - start_us) as f64 / 1e6
            ),
            _ => {}
        }
    }
}

fn on_healed(
    faults: &mut [FaultRecord],
    h: &maestro_protocol::FaultHealed,
    clocks: &BTreeMap<PeerId, (String, i64)>,
    progress: bool,
    start_us: i64,
) {
    let Some(f) = faults.get_mut(h.fault as usize) else {
        return;
    };
    if f.plan.action != h.action {
        return;
    }
    f.healed(h, offset_of(clocks, &f.inspector.0));
    if progress && let Some(t) = f.healed_at_us {
        eprintln!(
            "fault {}: healed at +{:.2} s{}",
            f.plan.action,
            (t - start_us) as f64 / 1e6,
            h.error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
}

/// How long the end of a run waits for heals and a last SUT sample: a `$SYS` beat comes
/// every two seconds at most with `sys_interval 1`, and is sampled within a second.
const SETTLE_MAX: Duration = Duration::from_millis(3500);

/// After the results are in: waits (at most [`SETTLE_MAX`]) for the heals of open faults
/// and, when a source reads the SUT itself, for its figures taken a second after now,
/// so the SUT's counters include the run's last messages.
async fn settle(
    controller: &mut Controller,
    run: &RunId,
    folder: &std::path::Path,
    faults: &mut [FaultRecord],
    clocks: &BTreeMap<PeerId, (String, i64)>,
    mut sut: Option<&mut SutRecorder>,
) {
    // A host or process source alone needs no wait.
    let want_sample = sut.as_ref().is_some_and(|s| s.reads_sut());
    let sample_after = maestro_control::now().0 + 1_000_000;
    let until = Instant::now() + SETTLE_MAX;
    let never = CancellationToken::new();
    loop {
        let sampled = !want_sample
            || sut
                .as_ref()
                .is_some_and(|s| s.sut_sampled_since(sample_after));
        if sampled && !faults.iter().any(FaultRecord::open) {
            return;
        }
        match controller.next(until, &never).await {
            Ok(Some(Incoming::Event(note))) => match note.body {
                Body::SutStats(s) => {
                    if let Some(r) = sut.as_deref_mut() {
                        r.add(folder, &note.sender.id, &s);
                    }
                }
                Body::FaultHealed(h) if h.run == *run => on_healed(faults, &h, clocks, false, 0),
                _ => {}
            },
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                if Instant::now() >= until {
                    for f in faults.iter_mut().filter(|f| f.open()) {
                        f.errors
                            .push(format!("{} did not report the heal in time", f.inspector.1));
                    }
                    return;
                }
            }
        }
    }
}

/// When a running run is stopped at the latest: the end of the send window plus
/// [`END_GRACE`] (producers stop at their window's end by themselves).
fn run_deadline(spec: &TestSpec, start_at: UnixMicros) -> Option<Instant> {
    let end_us = start_at
        .0
        .checked_add(i64::try_from(spec.send_window().as_micros()).ok()?)?;
    let from_now = end_us - maestro_control::now().0;
    Some(Instant::now() + Duration::from_micros(from_now.max(0) as u64) + END_GRACE)
}

/// What a run's folder holds from its start, so that a controller killed mid-run leaves
/// enough for `maestro-cli report` to make a partial summary: `spec.json` (less the SUT
/// URL's secrets) and `begun.json`, the summary's skeleton (run, SUT, workers, clocks)
/// marked partial.
#[allow(clippy::too_many_arguments)]
fn begin_folder(
    folder: &std::path::Path,
    run: &RunId,
    spec: &TestSpec,
    started_at: SystemTime,
    start_at: UnixMicros,
    participants: &[PeerId],
    (names, shares): (&BTreeMap<PeerId, String>, &BTreeMap<PeerId, Configure>),
    clocks: &BTreeMap<PeerId, (i64, i64)>,
    fanout: f64,
) -> std::io::Result<()> {
    let to_io = |e: maestro_report::ResultsError| std::io::Error::other(e.to_string());
    // The spec as the workers got it, less the SUT URL's secrets.
    let mut on_disk = serde_json::to_value(spec).unwrap_or_default();
    on_disk["sut"] = serde_json::Value::from(spec.sut.redacted());
    maestro_report::folder::write(&folder.join("spec.json"), &on_disk).map_err(to_io)?;
    let rows: Vec<(PeerId, String, usize, usize)> = participants
        .iter()
        .map(|id| {
            (
                id.clone(),
                names.get(id).cloned().unwrap_or_default(),
                shares.get(id).map_or(0, |s| s.producers.len()),
                shares.get(id).map_or(0, |s| s.consumers.len()),
            )
        })
        .collect();
    let collected = summary::Collected {
        results: BTreeMap::new(),
        degraded: Vec::new(),
        interrupted: false,
        clocks: clocks.clone(),
    };
    let measure_from_us = start_at.0 + spec.warmup_ms as i64 * 1000;
    let mut skeleton =
        summary::summarize(run, spec, started_at, measure_from_us, &rows, &collected);
    skeleton.generator = None;
    skeleton.partial = Some(maestro_report::Partial {
        reason: "the run is under way, or its controller ended before it did".into(),
        seconds: 0,
        copies_per_message: fanout,
        warmup_s: spec.warmup_ms.div_ceil(1000) as u32,
    });
    maestro_report::folder::write(&folder.join(maestro_report::partial::BEGUN), &skeleton)
        .map_err(to_io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use maestro_protocol::MessageSize;

    #[test]
    fn split_is_round_robin_and_exact() {
        let spec = TestSpec {
            sut: "mqtt://h".parse().unwrap(),
            rate: 1000.0,
            duration_ms: None,
            count: Some(10),
            warmup_ms: 0,
            size: MessageSize::Fixed(64),
            producers: 3,
            consumers: 4,
            topics: 2,
            payload: None,
            connect_rate: None,
            fleet: None,
            marks_ms: Vec::new(),
            consumer_backlog_bytes: None,
        };
        let run = RunId::new("r").unwrap();
        let w: Vec<PeerId> = ["a", "b"]
            .iter()
            .map(|s| PeerId::new(*s).unwrap())
            .collect();
        let s = split(&spec, &run, (&w, &w), false);
        let a = &s[&w[0]];
        let b = &s[&w[1]];
        assert_eq!(a.producers.iter().collect::<Vec<_>>(), [0, 2]);
        assert_eq!(b.producers.iter().collect::<Vec<_>>(), [1]);
        let counts: u64 = s
            .values()
            .flat_map(|c| c.producers.iter())
            .filter_map(|p| spec.producer(p).count)
            .sum();
        assert_eq!(counts, 10);
        assert_eq!(spec.producer(0).count, Some(4));
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
        assert!((spec.producer(0).rate - 333.333).abs() < 0.01);
        assert_eq!(
            a.consumers
                .iter()
                .map(|c| c.subscription)
                .collect::<Vec<_>>(),
            [0, 2]
        );
        let s = split(&spec, &run, (&w, &w), true);
        assert_eq!(
            s[&w[0]]
                .consumers
                .iter()
                .map(|c| c.subscription)
                .collect::<Vec<_>>(),
            [0, 0]
        );
    }

    #[test]
    fn split_roles_put_producers_and_consumers_on_separate_workers() {
        let spec = TestSpec {
            sut: "kafka://h".parse().unwrap(),
            rate: 1000.0,
            duration_ms: Some(1000),
            count: None,
            warmup_ms: 0,
            size: MessageSize::Fixed(64),
            producers: 3,
            consumers: 4,
            topics: 1,
            payload: None,
            connect_rate: None,
            fleet: None,
            marks_ms: Vec::new(),
            consumer_backlog_bytes: None,
        };
        let run = RunId::new("r").unwrap();
        let w: Vec<PeerId> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|s| PeerId::new(*s).unwrap())
            .collect();
        let (p, c) = Roles::Split.assign(&w).unwrap();
        assert_eq!(
            (p.len(), c.len()),
            (2, 3),
            "OMB's -x: the first half produces"
        );
        let s = split(&spec, &run, (&p, &c), true);
        for id in &p {
            assert!(
                !s[id].producers.is_empty() && s[id].consumers.is_empty(),
                "{id}"
            );
        }
        for id in &c[..1] {
            assert!(
                s[id].producers.is_empty() && !s[id].consumers.is_empty(),
                "{id}"
            );
        }
        let consumers: usize = s.values().map(|c| c.consumers.len()).sum();
        let producers: usize = s.values().map(|c| c.producers.len()).sum();
        assert_eq!((producers, consumers), (3, 4));
        assert!(matches!(
            Roles::Split.assign(&w[..1]),
            Err(RunError::Workers(m)) if m.contains("at least 2")
        ));
        assert_eq!(Roles::Shared.assign(&w).unwrap(), (w.clone(), w.clone()));
    }
}
