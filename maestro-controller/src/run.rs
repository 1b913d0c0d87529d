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
use maestro_report::timeseries::LiveResults;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("invalid test: {0}")]
    Spec(#[from] Invalid),
    #[error("the SUT {sut} cannot be reached: {reason}")]
    Sut { sut: String, reason: String },
    #[error("no workers{0} answered; start some with maestro-worker")]
    NoWorkers(String),
    /// Workers that did not take their share, each with why.
    #[error("workers not ready: {}", .0.join("; "))]
    Workers(Vec<String>),
    #[error(
        "producers and consumers on separate workers need at least {need} workers, found {found}"
    )]
    TooFewWorkers { need: usize, found: usize },
    #[error("workers not ready: the run finished before it started")]
    NeverStarted,
    #[error("cannot write results to {path}: {source}")]
    Results {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Report(#[from] maestro_report::ResultsError),
}

/// Why a test cannot run as asked (exit 2); each says which value is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error(transparent)]
    Spec(#[from] maestro_protocol::SpecError),
    #[error(transparent)]
    Url(#[from] maestro_protocol::SutUrlError),
    #[error(transparent)]
    Fleet(#[from] maestro_protocol::FleetError),
    #[error(transparent)]
    Faults(#[from] crate::faults::AssignError),
    #[error("fault {action:?} at {at} for {lasts} ends after the send window of {window}")]
    FaultAfterWindow {
        action: String,
        at: humantime::FormattedDuration,
        lasts: humantime::FormattedDuration,
        window: humantime::FormattedDuration,
    },
    /// A worker refused its share of the spec (its reason, from its note).
    #[error("{0}")]
    Refused(String),
    /// A command-line option or plan value out of range or unreadable (the message names
    /// the option and the value).
    #[error("{0}")]
    Option(String),
}

macro_rules! invalid_from {
    ($($t:ty),*) => {$(
        impl From<$t> for RunError {
            fn from(e: $t) -> Self {
                RunError::Spec(e.into())
            }
        }
    )*};
}
invalid_from!(
    maestro_protocol::SpecError,
    maestro_protocol::SutUrlError,
    maestro_protocol::FleetError,
    crate::faults::AssignError
);

impl RunError {
    /// A command-line option or plan value that cannot be used, in words that name it.
    pub fn option(message: impl Into<String>) -> Self {
        RunError::Spec(Invalid::Option(message.into()))
    }
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
            Roles::Split if workers.len() < 2 => Err(RunError::TooFewWorkers {
                need: 2,
                found: workers.len(),
            }),
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
/// consumers of a topic compete (an AMQP queue, a Kafka group), they share the topic's
/// subscriptions ([`TestSpec::subscription`]); otherwise each consumer is its own (fan-out).
pub fn split(
    spec: &TestSpec,
    run: &RunId,
    (workers, consumer_workers): (&[PeerId], &[PeerId]),
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
                subscription: spec.subscription(j),
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

/// An online inspector that answered the run's ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspector {
    pub id: PeerId,
    pub name: String,
    /// How far its clock is ahead of the controller's, µs (0 within the ping's error).
    pub clock_offset_us: i64,
    /// What it announced (`fault:ACTION` for the faults it declared, its sources).
    pub capabilities: Vec<String>,
}

/// The online inspectors that answer a ping, by id.
pub async fn inspectors(
    controller: &mut Controller,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<Vec<Inspector>, RunError> {
    let online = controller
        .presence()
        .values()
        .any(|p| p.status == PresenceStatus::Online && p.peer.role == Role::Inspector);
    if !online {
        return Ok(Vec::new());
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
            Inspector {
                capabilities: capabilities.get(&o.id).cloned().unwrap_or_default(),
                clock_offset_us: significant_offset(o.clock_offset_us, rtt),
                id: o.id,
                name: o.name,
            }
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

/// Who takes part in a run: found and given their shares before it is configured.
struct Cast {
    /// Every participant's name.
    names: BTreeMap<PeerId, String>,
    /// The workers with a share, in order.
    participants: Vec<PeerId>,
    shares: BTreeMap<PeerId, Configure>,
    /// Each worker's clock offset and ping round trip, µs (ahead of the controller).
    clocks: BTreeMap<PeerId, (i64, i64)>,
    /// Each worker's clock offset alone.
    offsets: BTreeMap<PeerId, i64>,
}

impl Cast {
    /// Finds the workers (by group, or the two groups of split roles), assigns the roles
    /// and splits the spec over them.
    async fn find(
        controller: &mut Controller,
        spec: &TestSpec,
        run: &RunId,
        options: &RunOptions,
        shutdown: &CancellationToken,
    ) -> Result<Self, RunError> {
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
        let mut shares = split(spec, run, (&producing, &consuming));
        let offsets: BTreeMap<PeerId, i64> =
            clocks.iter().map(|(id, c)| (id.clone(), c.0)).collect();
        apply_clock_skews(&mut shares, &offsets);
        Ok(Self {
            names: named.into_iter().collect(),
            participants: shares.keys().cloned().collect(),
            shares,
            clocks,
            offsets,
        })
    }

    fn name(&self, id: &PeerId) -> String {
        self.names.get(id).cloned().unwrap_or_default()
    }

    /// Every participant with its share, for the summary.
    fn rows(&self) -> Vec<summary::Participant> {
        self.participants
            .iter()
            .map(|id| summary::Participant {
                id: id.clone(),
                name: self.name(id),
                producers: self.shares.get(id).map_or(0, |s| s.producers.len()),
                consumers: self.shares.get(id).map_or(0, |s| s.consumers.len()),
            })
            .collect()
    }
}

/// The inspectors' side of a run: its faults (each given to an inspector that can
/// inject it) and the recorder of the SUT's figures, holding their baseline.
struct Inspection {
    faults: Vec<FaultRecord>,
    /// Each inspector's name and clock offset, µs.
    clocks: BTreeMap<PeerId, (String, i64)>,
    recorder: SutRecorder,
}

impl Inspection {
    async fn find(
        controller: &mut Controller,
        options: &RunOptions,
        folder: &std::path::Path,
        shutdown: &CancellationToken,
    ) -> Result<Self, RunError> {
        let inspectors = inspectors(controller, options.timeout, shutdown).await?;
        let faults = crate::faults::assign(&options.faults, &inspectors)?
            .into_iter()
            .zip(&options.faults)
            .map(|(who, plan)| FaultRecord::new(plan.clone(), who))
            .collect();
        let clocks: BTreeMap<PeerId, (String, i64)> = inspectors
            .into_iter()
            .map(|i| (i.id, (i.name, i.clock_offset_us)))
            .collect();
        // From now on the inspectors' samples are baselines; the start makes them the run's.
        let mut recorder = SutRecorder::new(clocks.clone());
        if !clocks.is_empty() {
            sut_baseline(controller, &mut recorder, folder, options.timeout, shutdown).await?;
        }
        Ok(Self {
            faults,
            clocks,
            recorder,
        })
    }
}

/// Copies each message should reach: one per subscription.
fn fanout(spec: &TestSpec) -> f64 {
    spec.subscription_count() as f64 / f64::from(spec.topics)
}

/// Checks a spec and the faults planned for it, and marks the faults' times in it (the
/// CLI checks before it connects, so bad input is a usage error whatever the cluster).
pub fn prepare(spec: &mut TestSpec, faults: &[FaultPlan]) -> Result<(), RunError> {
    spec.marks_ms = crate::faults::marks(faults);
    spec.validate()?;
    let window = spec.send_window();
    if let Some(f) = faults.iter().find(|f| f.at + f.duration > window) {
        return Err(Invalid::FaultAfterWindow {
            action: f.action.as_str().to_owned(),
            at: humantime::format_duration(f.at),
            lasts: humantime::format_duration(f.duration),
            window: humantime::format_duration(window),
        }
        .into());
    }
    Ok(())
}

/// Runs one test and writes its results folder.
pub async fn run_test(
    controller: &mut Controller,
    mut spec: TestSpec,
    options: &RunOptions,
    shutdown: &CancellationToken,
) -> Result<Finished, RunError> {
    prepare(&mut spec, &options.faults)?;
    let run = new_run_id();
    let cast = Cast::find(controller, &spec, &run, options, shutdown).await?;
    let folder = options.results.join(run.as_str());
    let inspection = Inspection::find(controller, options, &folder, shutdown).await?;
    tracing::info!(run = %run, workers = cast.participants.len(), "configuring");
    let (machine, first) = Run::new(
        &cast
            .participants
            .iter()
            .map(|id| {
                (
                    id.clone(),
                    cast.name(id),
                    !cast.shares[id].producers.is_empty(),
                )
            })
            .collect::<Vec<_>>(),
    );
    let roster: Vec<(PeerId, String)> = cast
        .participants
        .iter()
        .map(|id| (id.clone(), cast.name(id)))
        .collect();
    for w in &options.watchers {
        w.run_begins(&run, &spec, &roster);
        w.step(&run, machine.step());
    }
    // The run is ours while this lives: workers end it when renewals stop.
    let lease = controller.lease(&run, &cast.participants);
    let fanout = fanout(&spec);
    let shell = Shell {
        backlog: spec
            .consumer_backlog_bytes
            .map(|bytes| crate::backlog::Backlog::new(bytes, f64::from(spec.size.mean()), fanout)),
        fanout,
        controller,
        options,
        spec,
        run,
        cast,
        folder,
        machine,
        faults: inspection.faults,
        fault_replies: HashMap::new(),
        inspector_clocks: inspection.clocks,
        sut: Some(inspection.recorder),
        start_at: UnixMicros(0),
        started_at: SystemTime::now(),
        stream: None,
        stream_error: None,
        pending: HashMap::new(),
        deadline: Instant::now() + options.timeout,
        totals: (0, 0),
        refused_senders: BTreeSet::new(),
        result_parts: BTreeMap::new(),
        interrupt: shutdown.clone(),
        running: false,
        exported_second: None,
        backlog_second: None,
        max_backlog: None,
    };
    let finished = shell.drive(first).await;
    drop(lease);
    finished
}

/// The I/O shell of one run: it carries out the state machine's actions, turns what
/// arrives into its inputs, and does what the clock asks for (faults due, the backlog's
/// resume, the watchers' seconds). Decisions are the machine's, the fault records' and
/// the backlog's; the shell only dispatches.
struct Shell<'a> {
    controller: &'a mut Controller,
    options: &'a RunOptions,
    spec: TestSpec,
    run: RunId,
    cast: Cast,
    folder: PathBuf,
    machine: Run,
    faults: Vec<FaultRecord>,
    /// Inject requests awaiting their reply: note id -> fault index.
    fault_replies: HashMap<NoteId, usize>,
    inspector_clocks: BTreeMap<PeerId, (String, i64)>,
    /// The SUT's figures (taken when the run finishes).
    sut: Option<SutRecorder>,
    /// The common start, set when `start` is sent: far enough ahead for every worker to
    /// get the note; each worker gets it on its own clock.
    start_at: UnixMicros,
    started_at: SystemTime,
    stream: Option<LiveResults>,
    stream_error: Option<std::io::Error>,
    /// Configure or start requests awaiting their reply: note id -> worker.
    pending: HashMap<NoteId, PeerId>,
    deadline: Instant,
    /// Messages sent and received so far, over all workers.
    totals: (u64, u64),
    refused_senders: BTreeSet<PeerId>,
    /// Results too large for one note arrive in parts, collected per worker.
    result_parts: BTreeMap<PeerId, maestro_protocol::PartsCollector>,
    fanout: f64,
    /// Ctrl-C: the shutdown token until the stop, then one that never fires.
    interrupt: CancellationToken,
    running: bool,
    exported_second: Option<u32>,
    backlog: Option<crate::backlog::Backlog>,
    backlog_second: Option<u32>,
    max_backlog: Option<u64>,
}

impl Shell<'_> {
    async fn drive(mut self, first: Action) -> Result<Finished, RunError> {
        let mut action = Some(first);
        loop {
            if let Some(a) = action.take()
                && let Some(finished) = self.carry_out(a).await?
            {
                return Ok(finished);
            }
            let incoming = match self.controller.next(self.until(), &self.interrupt).await {
                Ok(i) => i,
                Err(ControlError::Interrupted) => {
                    action = self.machine.on(Input::Interrupt);
                    continue;
                }
                Err(e) => {
                    if self.stream.is_none() {
                        release(self.controller, &self.run, &self.cast.participants).await;
                    }
                    return Err(e.into());
                }
            };
            if let Some(input) = self.input(incoming) {
                action = self.feed(input);
            }
            if self.machine.step() == crate::lifecycle::Step::Running {
                if !self.running {
                    self.running = true;
                    if let Some(d) = run_deadline(&self.spec, self.start_at) {
                        self.deadline = d;
                    }
                }
                self.inject_due_faults().await?;
            }
            self.follow_backlog().await?;
            self.export_second();
        }
    }

    /// When to stop waiting: the step's deadline, or the next fault due.
    fn until(&self) -> Instant {
        let next_fault = self
            .running
            .then(|| crate::faults::next_due(&self.faults))
            .flatten()
            .map(|at| wall_instant(self.start_at.0 + at.as_micros() as i64));
        next_fault.map_or(self.deadline, |f| self.deadline.min(f))
    }

    /// Carries out what the machine asked for; the finished run at the end.
    async fn carry_out(&mut self, action: Action) -> Result<Option<Finished>, RunError> {
        match action {
            Action::Configure => self.send_each(false).await?,
            Action::Start => {
                self.open_results().await?;
                self.send_each(true).await?;
            }
            Action::Stop(live) => {
                tracing::info!(run = %self.run, reason = self.machine.stop_reason().unwrap_or(""), "stopping");
                self.pending.clear();
                for id in live {
                    self.controller
                        .send(
                            &Target::Peer(id),
                            Body::Stop(Stop {
                                run: self.run.clone(),
                            }),
                        )
                        .await?;
                }
                heal_now(self.controller, &self.run, &self.faults).await;
                self.deadline = Instant::now() + maestro_protocol::DRAIN_MAX + self.options.timeout;
                // From here, a Ctrl-C only makes the shell's second-signal handler exit.
                self.interrupt = CancellationToken::new();
            }
            Action::Fail(failure) => {
                release(self.controller, &self.run, &self.cast.participants).await;
                heal_now(self.controller, &self.run, &self.faults).await;
                return Err(match failure {
                    Failure::Sut(reason) => RunError::Sut {
                        sut: self.spec.sut.redacted(),
                        reason,
                    },
                    Failure::Spec(reason) => Invalid::Refused(reason).into(),
                    Failure::Workers(w) => RunError::Workers(w),
                    Failure::Interrupted => ControlError::Interrupted.into(),
                });
            }
            Action::Finish => return self.finish().await.map(Some),
        }
        Ok(None)
    }

    /// Sets the common start, and opens the results folder and its stream (a folder
    /// that cannot be written releases the workers at once).
    async fn open_results(&mut self) -> Result<(), RunError> {
        self.start_at = UnixMicros(maestro_control::now().0 + START_AHEAD_US);
        self.started_at = SystemTime::now() + Duration::from_micros(START_AHEAD_US as u64);
        if let Some(r) = self.sut.as_mut() {
            r.begin(self.start_at.0);
        }
        for w in &self.options.watchers {
            w.starts_at(&self.run, self.start_at.0);
        }
        let created = LiveResults::create(
            self.folder.clone(),
            self.start_at.0,
            self.cast.names.clone(),
        )
        .and_then(|live| {
            begin_folder(
                &self.folder,
                &self.run,
                &self.spec,
                (self.started_at, self.start_at),
                &self.cast,
                self.fanout,
            )?;
            Ok(live)
        });
        match created {
            Ok(mut live) => {
                if !self.faults.is_empty() {
                    live.keep_rows();
                }
                self.stream = Some(live);
                Ok(())
            }
            Err(source) => {
                // Configured workers are released, not left to their lease.
                release(self.controller, &self.run, &self.cast.participants).await;
                Err(RunError::Results {
                    path: self.folder.clone(),
                    source,
                })
            }
        }
    }

    /// Sends every participant its `configure` (its share) or its `start`.
    async fn send_each(&mut self, start: bool) -> Result<(), RunError> {
        self.pending.clear();
        for (id, share) in &self.cast.shares {
            let body = if start {
                Body::Start(Start {
                    run: self.run.clone(),
                    start_at_us: UnixMicros(
                        self.start_at.0 + self.cast.offsets.get(id).copied().unwrap_or(0),
                    ),
                })
            } else {
                Body::Configure(share.clone())
            };
            let note = self
                .controller
                .send(&Target::Peer(id.clone()), body)
                .await?;
            self.pending.insert(note.id, id.clone());
        }
        // Configuring at a connect rate takes as long as the ramp.
        let ramp = if start {
            Duration::ZERO
        } else {
            self.spec.connect_span()
        };
        self.deadline = Instant::now() + self.options.timeout + ramp;
        Ok(())
    }

    /// Every result is in: settles the faults and the SUT's figures, writes the summary.
    async fn finish(&mut self) -> Result<Finished, RunError> {
        let mut stream = self.stream.take().ok_or(RunError::NeverStarted)?;
        // Heals to hear about, and a SUT sample from after the last message (the SUT's
        // counters lag a little), briefly.
        settle(
            self.controller,
            &self.run,
            &self.folder,
            &mut self.faults,
            &self.inspector_clocks,
            self.sut.as_mut(),
        )
        .await;
        let written = match self.stream_error.take() {
            Some(e) => Err(e),
            None => stream.finish(),
        };
        written.map_err(|source| RunError::Results {
            path: self.folder.clone(),
            source,
        })?;
        let summary = self.summarize(&stream)?;
        for w in &self.options.watchers {
            for f in &self.faults {
                w.fault(&self.run, f);
            }
            if let Some(g) = &summary.generator {
                w.generator(&self.run, g);
            }
            w.finished(&self.run, summary.lost, 0);
        }
        maestro_report::folder::write(&self.folder.join("summary.json"), &summary)?;
        // spec.json was written at the start (`begin_folder`): the spec is fixed. The
        // summary is whole: the skeleton for a partial one goes.
        let _ = std::fs::remove_file(self.folder.join(maestro_report::partial::BEGUN));
        Ok(Finished {
            summary,
            folder: self.folder.clone(),
        })
    }

    /// The run's summary from the results, the backlog, the SUT's figures and the faults.
    fn summarize(&mut self, stream: &LiveResults) -> Result<RunSummary, RunError> {
        let mut collected = Collected {
            clocks: self.cast.clocks.clone(),
            results: self.machine.take_results(),
            degraded: self.machine.degraded().to_vec(),
            interrupted: self.machine.interrupted(),
        };
        collected.degraded.extend(
            stream
                .unreadable
                .iter()
                .map(|e| format!("unreadable stats: {e}")),
        );
        // The numbers: rates over the real send span, from the end of the warm-up.
        let measure_from_us = self.start_at.0 + self.spec.warmup_ms as i64 * 1000;
        let mut summary = summary::summarize(
            &self.run,
            &self.spec,
            self.started_at,
            measure_from_us,
            &self.cast.rows(),
            &collected,
        );
        summary.max_backlog = self.max_backlog;
        if let Some(b) = &self.backlog {
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
        if let Some(recorder) = self.sut.take() {
            summary.sut_metrics =
                recorder
                    .finish(summary.sent)
                    .map_err(|source| RunError::Results {
                        path: self.folder.clone(),
                        source,
                    })?;
        }
        if !self.faults.is_empty() {
            let segments =
                crate::faults::Segments::of(&collected.results, self.spec.marks_ms.len());
            let expected = (self.spec.rate > 0.0).then_some(self.spec.rate * self.fanout);
            summary.faults = crate::faults::summarize(
                &self.faults,
                &self.spec.marks_ms,
                &segments,
                stream.rows(),
                self.start_at.0,
                expected,
            );
        }
        Ok(summary)
    }

    /// What arrived, as the machine's input (if it is one); fault replies, SUT figures
    /// and heals are taken here.
    fn input(&mut self, incoming: Option<Incoming>) -> Option<Input> {
        match incoming {
            None if Instant::now() >= self.deadline => Some(Input::Deadline),
            None => None,
            // A reply counts only from the peer its request went to: anyone can write a
            // note with a request's correlation id (ids are in every note).
            Some(Incoming::Reply(note, _)) if !self.addressed(&note) => {
                self.refuse(
                    &note.sender.id,
                    "refused a reply from a peer the request did not go to",
                );
                None
            }
            Some(Incoming::Reply(note, _)) => {
                let c = note.correlation_id?;
                if let Some(i) = self.fault_replies.remove(&c) {
                    let f = &mut self.faults[i];
                    f.replied(
                        &note.body,
                        offset_of(&self.inspector_clocks, &f.inspector.0),
                    );
                    for w in &self.options.watchers {
                        w.fault(&self.run, f);
                    }
                    None
                } else {
                    self.pending
                        .remove(&c)
                        .map(|id| Input::Replied(id, Box::new(note.body)))
                }
            }
            Some(Incoming::Presence(id, p)) => p
                .is_none_or(|p| p.status == PresenceStatus::Offline)
                .then_some(Input::Offline(id)),
            Some(Incoming::Event(note)) => self.event(note),
        }
    }

    /// Whether a reply comes from the peer its request went to (or answers no request).
    fn addressed(&self, note: &maestro_protocol::Note) -> bool {
        note.correlation_id.is_none_or(|c| {
            let to = self.pending.get(&c).or_else(|| {
                self.fault_replies
                    .get(&c)
                    .map(|i| &self.faults[*i].inspector.0)
            });
            to.is_none_or(|id| *id == note.sender.id)
        })
    }

    /// Drops a note, said once per sender.
    fn refuse(&mut self, sender: &PeerId, why: &'static str) {
        if self.refused_senders.insert(sender.clone()) {
            tracing::warn!(run = %self.run, sender = %sender,
                participant = self.cast.participants.contains(sender), "{why}");
        }
    }

    /// An event: a worker's second or result, an inspector's figures or heal.
    fn event(&mut self, note: maestro_protocol::Note) -> Option<Input> {
        // Events count only from the run's participants, and only when their counts are
        // ones a real worker could have made: a stranger's (or a corrupt) note naming the
        // run is dropped.
        let plausible = match &note.body {
            Body::RunStats(s) => s.plausible(),
            Body::RunResult(r) => r.plausible(),
            _ => true,
        };
        if matches!(note.body, Body::RunStats(_) | Body::RunResult(_))
            && (!self.cast.participants.contains(&note.sender.id) || !plausible)
        {
            self.refuse(
                &note.sender.id,
                "refused a stats or result note: not from a participant, or counts no worker could have made",
            );
            return None;
        }
        match note.body {
            Body::RunStats(s) if s.run == self.run => {
                for w in &self.options.watchers {
                    w.worker_second(&self.run, &note.sender.id, &s);
                }
                self.totals.0 = self.totals.0.saturating_add(s.counters.sent);
                self.totals.1 = self.totals.1.saturating_add(s.counters.received);
                if let Some(out) = self.stream.as_mut() {
                    let live: Vec<PeerId> = self.machine.live().cloned().collect();
                    if let Err(e) = out.add(&note.sender.id, &s, &live) {
                        self.stream_error.get_or_insert(e);
                    }
                }
                Some(Input::ActiveProducers(note.sender.id, s.active_producers))
            }
            Body::RunResult(r) if r.run == self.run && r.worker == note.sender.id => {
                let parts = self.result_parts.entry(note.sender.id.clone()).or_default();
                match parts.add(r) {
                    Ok(Some(whole)) => {
                        self.result_parts.remove(&note.sender.id);
                        Some(Input::Result(note.sender.id, Box::new(whole)))
                    }
                    Ok(None) => None,
                    Err(e) => {
                        tracing::warn!(run = %self.run, worker = %note.sender.id, error = %e,
                            "refused a part of a result");
                        None
                    }
                }
            }
            Body::SutStats(s) => {
                if let Some(recorder) = self.sut.as_mut() {
                    recorder.add(&self.folder, &note.sender.id, &s);
                }
                if let Some((name, offset)) = self.inspector_clocks.get(&note.sender.id) {
                    for w in &self.options.watchers {
                        for sample in &s.samples {
                            w.sut(name, s.at_us.0 - offset, sample);
                        }
                    }
                }
                None
            }
            Body::FaultHealed(h) if h.run == self.run => {
                if let Some(f) = on_healed(&mut self.faults, &h, &self.inspector_clocks) {
                    for w in &self.options.watchers {
                        w.fault(&self.run, f);
                    }
                }
                None
            }
            _ => None,
        }
    }

    /// Hands an input to the machine, telling the watchers what changed.
    fn feed(&mut self, input: Input) -> Option<Action> {
        if let Some((id, state)) = worker_state(&input) {
            for w in &self.options.watchers {
                w.worker(&self.run, id, state);
            }
        }
        let before = self.machine.step();
        let action = self.machine.on(input);
        if self.machine.step() != before {
            for w in &self.options.watchers {
                w.step(&self.run, self.machine.step());
            }
        }
        action
    }

    /// Asks the inspectors for the faults whose time has come.
    async fn inject_due_faults(&mut self) -> Result<(), RunError> {
        let now_us = maestro_control::now().0;
        for i in crate::faults::due(&self.faults, now_us - self.start_at.0) {
            let f = &self.faults[i];
            let note = self
                .controller
                .send(
                    &Target::Peer(f.inspector.0.clone()),
                    Body::Inject(Inject {
                        run: self.run.clone(),
                        fault: i as u32,
                        action: f.plan.action.clone(),
                        duration_ms: f.plan.duration.as_millis() as u64,
                    }),
                )
                .await?;
            self.faults[i].requested(maestro_control::now().0);
            self.fault_replies.insert(note.id, i);
        }
        Ok(())
    }

    /// Once per written second: the largest backlog so far, and the consumers' resume
    /// once a backlog run's backlog is built.
    async fn follow_backlog(&mut self) -> Result<(), RunError> {
        let Some(out) = self.stream.as_ref() else {
            return Ok(());
        };
        let Some(row) = out.last_row() else {
            return Ok(());
        };
        if self.backlog_second == Some(row.second) {
            return Ok(());
        }
        self.backlog_second = Some(row.second);
        let totals = out.totals();
        let waiting = ((totals.sent as f64 * self.fanout) as u64).saturating_sub(totals.received);
        self.max_backlog = Some(self.max_backlog.map_or(waiting, |m| m.max(waiting)));
        let end_s = f64::from(row.second) + 1.0;
        let Some(b) = self.backlog.as_mut() else {
            return Ok(());
        };
        if b.row(end_s, totals.sent, totals.received) != crate::backlog::Step::Resume {
            return Ok(());
        }
        let waiting = b.summary().backlog_messages.unwrap_or(0);
        tracing::info!(run = %self.run, after_s = end_s, waiting, "backlog built: resuming the consumers");
        for w in &self.options.watchers {
            w.backlog_built(&self.run, waiting, end_s);
        }
        for (id, share) in &self.cast.shares {
            if !share.consumers.is_empty() && self.machine.is_live(id) {
                self.controller
                    .send(
                        &Target::Peer(id.clone()),
                        Body::Resume(Resume {
                            run: self.run.clone(),
                        }),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Once per written second: the run's second to the watchers.
    fn export_second(&mut self) {
        let Some(stream) = self.stream.as_ref() else {
            return;
        };
        let Some(row) = stream.last_row() else {
            return;
        };
        if self.options.watchers.is_empty() || self.exported_second == Some(row.second) {
            return;
        }
        self.exported_second = Some(row.second);
        let in_flight = (self.totals.0 as f64 * self.fanout) as i64 - self.totals.1 as i64;
        let active: Vec<&str> = self
            .faults
            .iter()
            .filter(|f| f.state == crate::faults::FaultState::Active)
            .map(|f| f.plan.action.as_str())
            .collect();
        let whole = stream.whole_run_response();
        let second = crate::watch::Second {
            second: row.second,
            sent: row.counters.sent,
            received: row.counters.received,
            errors: row.counters.errors,
            duplicated: row.counters.duplicated,
            response: row.response,
        };
        for w in &self.options.watchers {
            w.second(&self.run, &second, &whole, in_flight, &active.join(","));
            for f in &self.faults {
                w.fault(&self.run, f);
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

/// A heal for one of the faults (its index and action match): its record, moved on.
fn on_healed<'f>(
    faults: &'f mut [FaultRecord],
    h: &maestro_protocol::FaultHealed,
    clocks: &BTreeMap<PeerId, (String, i64)>,
) -> Option<&'f FaultRecord> {
    let f = faults.get_mut(h.fault as usize)?;
    if f.plan.action != h.action {
        return None;
    }
    let offset = offset_of(clocks, &f.inspector.0);
    f.healed(h, offset);
    Some(f)
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
                Body::FaultHealed(h) if h.run == *run => {
                    on_healed(faults, &h, clocks);
                }
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
fn begin_folder(
    folder: &std::path::Path,
    run: &RunId,
    spec: &TestSpec,
    (started_at, start_at): (SystemTime, UnixMicros),
    cast: &Cast,
    fanout: f64,
) -> std::io::Result<()> {
    let to_io = |e: maestro_report::ResultsError| std::io::Error::other(e.to_string());
    // The spec as the workers got it, less the SUT URL's secrets.
    let mut on_disk = serde_json::to_value(spec).unwrap_or_default();
    on_disk["sut"] = serde_json::Value::from(spec.sut.redacted());
    if let Some(consumers) = &spec.consumer_sut {
        on_disk["consumer_sut"] = serde_json::Value::from(consumers.redacted());
    }
    maestro_report::folder::write(&folder.join("spec.json"), &on_disk).map_err(to_io)?;
    let collected = summary::Collected {
        results: BTreeMap::new(),
        degraded: Vec::new(),
        interrupted: false,
        clocks: cast.clocks.clone(),
    };
    let measure_from_us = start_at.0 + spec.warmup_ms as i64 * 1000;
    let mut skeleton = summary::summarize(
        run,
        spec,
        started_at,
        measure_from_us,
        &cast.rows(),
        &collected,
    );
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
            duration_ms: None,
            count: Some(10),
            size: MessageSize::Fixed(64),
            producers: 3,
            consumers: 4,
            topics: 2,
            ..TestSpec::new(
                "mqtt://h".parse().unwrap(),
                1000.0,
                std::time::Duration::ZERO,
            )
        };
        let run = RunId::new("r").unwrap();
        let w: Vec<PeerId> = ["a", "b"]
            .iter()
            .map(|s| PeerId::new(*s).unwrap())
            .collect();
        let s = split(&spec, &run, (&w, &w));
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
        assert_eq!(fanout(&spec), 2.0, "each MQTT subscriber is a subscription");
        let shared = TestSpec {
            sut: "mqtt://h?shared=true".parse().unwrap(),
            ..spec.clone()
        };
        let s = split(&shared, &run, (&w, &w));
        assert_eq!(
            s[&w[0]]
                .consumers
                .iter()
                .map(|c| c.subscription)
                .collect::<Vec<_>>(),
            [0, 0]
        );
        assert_eq!(fanout(&shared), 1.0);
    }

    #[test]
    fn split_deals_competing_consumers_over_several_subscriptions_per_topic() {
        // OMB's 2 topics x 2 subscriptions x 3 consumers each, on Kafka.
        let spec = TestSpec {
            consumers: 12,
            topics: 2,
            subscriptions: Some(2),
            ..TestSpec::new(
                "kafka://h".parse().unwrap(),
                1000.0,
                std::time::Duration::from_secs(1),
            )
        };
        spec.validate().unwrap();
        let run = RunId::new("r").unwrap();
        let w: Vec<PeerId> = ["a", "b", "c"]
            .iter()
            .map(|s| PeerId::new(*s).unwrap())
            .collect();
        let s = split(&spec, &run, (&w, &w));
        let mut members: BTreeMap<(u32, u32), u32> = BTreeMap::new();
        for c in s.values().flat_map(|c| &c.consumers) {
            assert_eq!(c.subscription % spec.topics, c.topic, "{c:?}");
            *members.entry((c.topic, c.subscription)).or_default() += 1;
        }
        assert_eq!(
            members.into_iter().collect::<Vec<_>>(),
            [((0, 0), 3), ((0, 2), 3), ((1, 1), 3), ((1, 3), 3)]
        );
        assert_eq!(fanout(&spec), 2.0);
        // Fewer consumers than subscriptions: only those with a consumer count.
        let few = TestSpec {
            consumers: 3,
            ..spec.clone()
        };
        assert!(few.validate().is_err(), "a subscription without a consumer");
        assert_eq!(few.subscription_count(), 3);
        assert_eq!(fanout(&few), 1.5);
    }

    #[test]
    fn split_roles_put_producers_and_consumers_on_separate_workers() {
        let spec = TestSpec {
            size: MessageSize::Fixed(64),
            producers: 3,
            consumers: 4,
            ..TestSpec::new(
                "kafka://h".parse().unwrap(),
                1000.0,
                std::time::Duration::from_secs(1),
            )
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
        let s = split(&spec, &run, (&p, &c));
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
            Err(RunError::TooFewWorkers { need: 2, found: 1 })
        ));
        assert_eq!(Roles::Shared.assign(&w).unwrap(), (w.clone(), w.clone()));
    }
}
