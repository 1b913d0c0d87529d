//! The load engine: a run's lifecycle on one worker (idle, configured, running, stopping),
//! the data-plane threads its producers and consumers run on, and the aggregator that
//! merges their reports into per-second stats notes and the final result.
//!
//! Control and load never share a thread: the worker's control plane runs on the main
//! runtime, every producer and consumer on one of the data-plane threads (a
//! single-threaded runtime per core, each connection pinned to one).

pub mod accounting;
pub mod clock;
pub mod pacing;
pub mod recorder;
pub mod tasks;
pub mod timer;

use crate::driver::{AnyDriver, Driver, DriverError};
use maestro_control::{Outbox, ReplyTo};
use maestro_protocol::{
    Body, Configure, Configured, ErrorCode, ErrorCount, ErrorNote, PeerId, PeerState, Renew,
    Resume, Resumed, RunId, RunResult, RunStats, Start, Started, Stop, Stopping, UnixMicros,
};
use maestro_protocol::{ConsumerSegments, Delivery, SegmentTallies, Sent, TopicSegments};
use recorder::{Recorder, RecorderPool};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tasks::{Control, Report};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long connecting every producer and consumer to the SUT may take.
const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the clients of a run may take to close after their final reports (a task still
/// closing then is aborted).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// File descriptors a worker keeps for itself (control connection, data-plane threads,
/// results, logs).
const SPARE_FILES: u64 = 64;

/// Raises this process's open-files soft limit to the hard limit (once, at start), and
/// returns the soft limit.
pub fn open_files_limit() -> u64 {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        rlimit::increase_nofile_limit(u64::MAX).unwrap_or_else(|_| {
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        })
    })
}

/// Checks that this worker's share of a run fits its open-files limit: one descriptor per
/// MQTT or AMQP connection, about three per Kafka client (librdkafka connects to the
/// bootstrap and the partition leaders).
fn fits_open_files(c: &Configure) -> Result<(), String> {
    let clients = (c.producers.len() + c.consumers.len()) as u64;
    let per_client = u64::from(c.spec.sut.capabilities().files_per_client);
    let limit = open_files_limit();
    let needed = clients * per_client + SPARE_FILES;
    if needed > limit {
        let fits = limit.saturating_sub(SPARE_FILES) / per_client;
        return Err(format!(
            "this worker's share is {clients} clients ({needed} open files with its own), but its open-files limit is {limit} (the hard limit: the worker raised its soft limit to it): it holds at most {fits} clients; use more workers, or raise the limit (ulimit -Hn, systemd LimitNOFILE=, docker --ulimit nofile=)"
        ));
    }
    Ok(())
}

/// Messages per second (sent and received) a run gives one data-plane thread before it
/// spreads over another: a tenth of what a thread handles (about 500,000 sends a second in
/// the engine benchmark), so a run's threads are never its bottleneck.
const EVENTS_PER_THREAD: f64 = 50_000.0;

/// How many of `available` data-plane threads this worker's share of a run needs: one per
/// [`EVENTS_PER_THREAD`] of its sends and receives (each consumer counted as receiving its
/// whole topic), all of them at full speed. Spreading a light run over every core only
/// adds wake-ups: 5,000 clients at one message a second each cost 1.25x the CPU of one
/// thread on two threads.
fn threads_for(c: &Configure, available: usize) -> usize {
    let spec = &c.spec;
    if spec.rate <= 0.0 {
        return available.max(1);
    }
    let sends = spec.rate / f64::from(spec.producers.max(1)) * c.producers.len() as f64;
    let receives = spec.rate / f64::from(spec.topics.max(1)) * c.consumers.len() as f64;
    let needed = ((sends + receives) / EVENTS_PER_THREAD).ceil();
    (needed as usize).clamp(1, available.max(1))
}

/// The connect ramp of this worker's clients: with a cluster-wide connect rate `R` over
/// `N` clients, this worker's `n` connect at `R * n / N` per second (all workers together
/// at `R`), client `k` at `k * N / (R * n)` seconds after configure began.
#[derive(Debug, Clone, Copy)]
struct Ramp {
    began: tokio::time::Instant,
    /// Seconds between two of this worker's connections; 0: all at once.
    every_s: f64,
}

impl Ramp {
    fn new(spec: &maestro_protocol::TestSpec, here: usize) -> Self {
        let total = f64::from(spec.producers.saturating_add(spec.consumers)).max(1.0);
        let every_s = match spec.connect_rate {
            Some(r) if r > 0.0 && here > 0 => total / (r * here as f64),
            _ => 0.0,
        };
        Ramp {
            began: tokio::time::Instant::now(),
            every_s,
        }
    }

    /// `task` (client `k` of this worker), started at its turn unless aborted first.
    fn connect_at<F: std::future::Future<Output = ()> + Send + 'static>(
        self,
        k: usize,
        abort: &CancellationToken,
        task: F,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let at = self.began + Duration::from_secs_f64(self.every_s * k as f64);
        let abort = abort.clone();
        async move {
            if self.every_s > 0.0 {
                tokio::select! {
                    _ = abort.cancelled() => return,
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            task.await;
        }
    }
}

/// Threads that run producers and consumers, one single-threaded runtime each.
#[derive(Debug)]
pub struct DataPlane {
    handles: Vec<tokio::runtime::Handle>,
    /// The threads' kernel ids, for their CPU figures ([`LoadMeter`]).
    tids: Vec<i32>,
    stop: CancellationToken,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl DataPlane {
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        let mut joins = Vec::new();
        let mut tids = Vec::new();
        for i in 0..threads.max(1) {
            let (tid_tx, tid_rx) = std::sync::mpsc::channel();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let stop = stop.clone();
            joins.push(
                std::thread::Builder::new()
                    .name(format!("data-plane-{i}"))
                    .spawn(move || {
                        let _ = tid_tx.send(nix::unistd::gettid().as_raw());
                        rt.block_on(async {
                            // The thread's microsecond timer (see `timer`): without it,
                            // its tasks fall back to tokio's millisecond one.
                            let timers = match timer::install() {
                                Ok(driver) => Some(tokio::spawn(driver.run())),
                                Err(e) => {
                                    warn!(error = %e, "no precise timer on a data-plane thread: pacing falls back to 1 ms");
                                    None
                                }
                            };
                            stop.cancelled().await;
                            if let Some(t) = timers {
                                t.abort();
                            }
                        })
                    })?,
            );
            tids.push(tid_rx.recv().unwrap_or(0));
        }
        Ok(Self {
            handles,
            tids,
            stop,
            threads: joins,
        })
    }

    /// One thread per core.
    pub fn per_core() -> std::io::Result<Self> {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.stop.cancel();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[derive(Debug)]
struct ActiveRun {
    id: RunId,
    start: watch::Sender<Option<i64>>,
    stop: CancellationToken,
    abort: CancellationToken,
    /// Cancelled once consumers may read: at once, or for a backlog run on `resume`.
    resume: CancellationToken,
    /// The controller that owns the run, and how long its lease lasts unrenewed.
    controller: PeerId,
    lease: Duration,
    /// When the lease runs out, unless renewed.
    lease_until: watch::Sender<tokio::time::Instant>,
    /// Its controller's last will arrived and no renewal since.
    controller_offline: bool,
    /// Why the run ended before its controller stopped it, if it did.
    ended_because: Arc<Mutex<Option<String>>>,
}

impl ActiveRun {
    /// Ends the run without its controller: a configured run is aborted, a running one
    /// stops and drains like after a stop note. Its result is still published.
    fn end(&self, reason: String) {
        let mut because = self.ended_because.lock().unwrap_or_else(|p| p.into_inner());
        if because.is_some() || self.stop.is_cancelled() {
            return;
        }
        warn!(run = %self.id, controller = %self.controller, %reason, "ending the run without its controller");
        *because = Some(reason);
        if self.start.borrow().is_none() {
            self.abort.cancel();
        } else {
            self.stop.cancel();
        }
    }
}

/// The most JSON a result's body may take in one note: the note limit less room for the
/// envelope (id, sender, times) and the signature.
const RESULT_BUDGET: usize = maestro_protocol::MAX_NOTE_BYTES - 4096;

/// How long a run outlives its controller's last will: long enough for a controller whose
/// connection dropped to reconnect (its first retries come within a second).
const OFFLINE_GRACE: Duration = Duration::from_secs(3);

/// The shortest lease a controller may ask for.
const MIN_LEASE: Duration = Duration::from_millis(500);
/// The longest lease a controller may ask for.
const MAX_LEASE: Duration = Duration::from_secs(600);

#[derive(Debug)]
struct Inner {
    state: PeerState,
    run: Option<ActiveRun>,
}

/// The worker's engine: answers configure, start and stop.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Mutex<Inner>>,
    /// Started on the first run, so an idle worker has no data-plane threads.
    data_plane: Arc<std::sync::OnceLock<std::io::Result<DataPlane>>>,
    worker: PeerId,
    /// The only folder files named in a SUT URL may be read from.
    files: crate::files::FilesDir,
    /// Cancelled when the worker shuts down: aborts any run.
    shutdown: CancellationToken,
}

fn error(code: ErrorCode, message: impl Into<String>) -> Body {
    Body::Error(ErrorNote {
        code,
        message: message.into(),
    })
}

impl Engine {
    pub fn new(worker: PeerId, files: crate::files::FilesDir, shutdown: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                state: PeerState::Idle,
                run: None,
            })),
            data_plane: Arc::new(std::sync::OnceLock::new()),
            worker,
            files,
            shutdown,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> PeerState {
        self.lock().state
    }

    pub fn run_id(&self) -> Option<RunId> {
        self.lock().run.as_ref().map(|r| r.id.clone())
    }

    /// Configure: validates, connects every producer and consumer, answers when ready.
    /// The run belongs to `controller` (the note's sender).
    pub fn configure(
        &self,
        c: &Configure,
        controller: &PeerId,
        reply: ReplyTo,
        outbox: &Outbox,
    ) -> Option<Body> {
        let mut inner = self.lock();
        if let Some(run) = &inner.run {
            return Some(if run.id == c.run {
                Body::Configured(Configured { run: c.run.clone() })
            } else {
                error(
                    ErrorCode::Busy,
                    format!("busy with run {} ({})", run.id, inner.state.as_str()),
                )
            });
        }
        if let Err(e) = c.spec.validate() {
            return Some(error(ErrorCode::InvalidSpec, e.to_string()));
        }
        let lease = Duration::from_millis(c.lease_ms);
        if !(MIN_LEASE..=MAX_LEASE).contains(&lease) {
            return Some(error(
                ErrorCode::InvalidSpec,
                format!(
                    "lease of {} ms is outside {MIN_LEASE:?}..={MAX_LEASE:?}",
                    c.lease_ms
                ),
            ));
        }
        if let Some(bad) = c
            .producers
            .iter()
            .chain(c.producer_skews.iter().flat_map(|s| s.producers.iter()))
            .find(|p| *p >= c.spec.producers)
        {
            return Some(error(
                ErrorCode::InvalidSpec,
                format!(
                    "producer {bad} is not one of the run's {} producers",
                    c.spec.producers
                ),
            ));
        }
        // Every connection takes a file descriptor: say so before connecting, not with
        // "too many open files" half-way through.
        if let Err(message) = fits_open_files(c) {
            return Some(error(ErrorCode::InvalidSpec, message));
        }
        let sut = &c.spec.sut;
        if let Err(e) = std::iter::once(sut)
            .chain(c.spec.consumer_sut.as_deref())
            .try_for_each(|u| self.files.check(u))
        {
            warn!(error = %e, controller = %controller, "configure refused: a file outside --files-dir");
            return Some(error(ErrorCode::InvalidSpec, e.to_string()));
        }
        let driver = match AnyDriver::open(&c.spec, &c.run) {
            Ok(d) => d,
            Err(e) => return Some(error(ErrorCode::InvalidSpec, e.to_string())),
        };
        let (start, _) = watch::channel(None);
        let (lease_until, lease_rx) = watch::channel(tokio::time::Instant::now() + lease);
        let resume = CancellationToken::new();
        if c.spec.consumer_backlog_bytes.is_none() {
            resume.cancel();
        }
        let run = ActiveRun {
            id: c.run.clone(),
            start,
            stop: CancellationToken::new(),
            abort: self.shutdown.child_token(),
            resume: resume.clone(),
            controller: controller.clone(),
            lease,
            lease_until,
            controller_offline: false,
            ended_because: Arc::new(Mutex::new(None)),
        };
        let control_template = Signals {
            start: run.start.subscribe(),
            stop: run.stop.clone(),
            abort: run.abort.clone(),
            resume,
        };
        let ended_because = run.ended_because.clone();
        inner.run = Some(run);
        inner.state = PeerState::Configured;
        drop(inner);
        outbox.watch(controller);
        tokio::spawn(self.clone().guard_lease(c.run.clone(), lease_rx));
        info!(run = %c.run, producers = c.producers.len(), consumers = c.consumers.len(), sut = %c.spec.sut, "configuring");
        let (engine, c, outbox) = (self.clone(), c.clone(), outbox.clone());
        let controller = controller.clone();
        tokio::spawn(async move {
            let run = c.run.clone();
            crate::with_driver!(driver, d => {
                engine
                    .clone()
                    .run(d, c, control_template, reply, &outbox, &ended_because)
                    .await
            });
            outbox.unwatch(&controller);
            let mut inner = engine.lock();
            if inner.run.as_ref().is_some_and(|r| r.id == run) {
                inner.run = None;
                inner.state = PeerState::Idle;
            }
        });
        None
    }

    /// Ends the run when its lease runs out; returns when the run is over.
    async fn guard_lease(self, run: RunId, mut lease: watch::Receiver<tokio::time::Instant>) {
        loop {
            let until = *lease.borrow_and_update();
            tokio::select! {
                changed = lease.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(until) => {
                    let inner = self.lock();
                    let Some(active) = inner.run.as_ref().filter(|r| r.id == run) else { return };
                    if *active.lease_until.borrow() <= tokio::time::Instant::now() {
                        active.end(if active.controller_offline {
                            format!(
                                "its controller {} went offline and did not come back within {OFFLINE_GRACE:?}",
                                active.controller
                            )
                        } else {
                            format!(
                                "its controller {} has not renewed the run's lease for {:?}",
                                active.controller, active.lease
                            )
                        });
                        return;
                    }
                }
            }
        }
    }

    /// The controller still owns the run: extend the lease.
    pub fn renew(&self, r: &Renew, from: &PeerId) {
        let mut inner = self.lock();
        if let Some(run) = inner
            .run
            .as_mut()
            .filter(|a| a.id == r.run && a.controller == *from)
        {
            if run.controller_offline {
                info!(run = %run.id, controller = %from, "the run's controller is back");
                run.controller_offline = false;
            }
            run.lease_until
                .send_replace(tokio::time::Instant::now() + run.lease);
        }
    }

    /// A watched controller's liveness changed. Its last will (`online` false) shortens
    /// the lease of a run it owns to [`OFFLINE_GRACE`]: a controller that was killed ends
    /// the run at once, one whose connection blipped renews it after reconnecting.
    pub fn on_controller(&self, controller: &PeerId, online: bool) {
        if online {
            return;
        }
        let mut inner = self.lock();
        if let Some(run) = inner.run.as_mut().filter(|a| a.controller == *controller) {
            warn!(run = %run.id, %controller,
                "its controller went offline; the run ends in {OFFLINE_GRACE:?} unless it comes back");
            run.controller_offline = true;
            let grace = tokio::time::Instant::now() + OFFLINE_GRACE.min(run.lease);
            run.lease_until.send_if_modified(|until| {
                let shorter = grace < *until;
                if shorter {
                    *until = grace;
                }
                shorter
            });
        }
    }

    /// Connects the tasks, answers the configure, then aggregates until every task ended.
    async fn run<D: Driver>(
        self,
        driver: D,
        c: Configure,
        signals: Signals,
        reply: ReplyTo,
        outbox: &Outbox,
        ended_because: &Mutex<Option<String>>,
    ) {
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let pool = RecorderPool::default();
        let start = signals.start.clone();
        let abort = signals.abort.clone();
        let control = Control {
            start: signals.start,
            stop: signals.stop,
            abort: signals.abort,
            resume: signals.resume,
            reports: reports_tx,
            pool: pool.clone(),
            run: c.run.as_str().into(),
        };
        let (handles, tids) = match self.data_plane.get_or_init(DataPlane::per_core) {
            Ok(plane) => (plane.handles.clone(), plane.tids.clone()),
            Err(e) => {
                outbox.reply(
                    &reply,
                    error(
                        ErrorCode::SutUnreachable,
                        format!("cannot start data-plane threads: {e}"),
                    ),
                );
                return;
            }
        };
        // As many data-plane threads as the run's message rate needs (all of them at full
        // speed): a light run, a slow fleet, wakes one thread instead of every core.
        let handles = &handles[..threads_for(&c, handles.len())];
        let mut meter = LoadMeter::new(tids.get(..handles.len()).unwrap_or(&[]));
        info!(run = %c.run, threads = handles.len(), "data-plane threads for this run");
        // One ticker per data-plane thread of the run ships its recorder at each slot's end.
        let tickers = CancellationToken::new();
        let _stop_tickers = tickers.clone().drop_guard();
        for h in handles {
            h.spawn(tasks::ticker(control.clone(), tickers.clone()));
        }
        let (mut clients, ready) = spawn_clients(&driver, &c, &control, handles, &abort);
        drop(control);
        if let Some(reason) = connected(ready, &c, &abort).await {
            warn!(run = %c.run, %reason, "configure failed");
            abort.cancel();
            outbox.reply(&reply, error(ErrorCode::SutUnreachable, reason));
            return;
        }
        outbox.reply(&reply, Body::Configured(Configured { run: c.run.clone() }));
        info!(run = %c.run, "configured");

        let mut gathered = Gathered::new(&c, self.worker.clone(), pool, driver.connections());
        gathered.gather(reports, &start, &mut meter, outbox).await;
        close(&mut clients, &c.run).await;
        let start_ns = (*start.borrow()).unwrap_or_else(tasks::now_ns);
        let last = gathered.seconds.finish(start_ns);
        gathered.publish(last, outbox);
        meter.end(tasks::now_ns());
        let mut result = gathered.result(&driver.timings(), meter);
        // What the run created on the SUT goes before the result does, so that the next
        // run of a plan finds this worker idle and the SUT clean.
        if let Err(e) = driver.finish(c.producers.contains(0)).await {
            warn!(run = %c.run, error = %e, "cleaning up after the run failed");
            let message = e.reason();
            match result.errors.iter_mut().find(|e| e.message == message) {
                Some(known) => known.count += 1,
                None => result.errors.push(ErrorCount { message, count: 1 }),
            }
        }
        let because = ended_because
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        info!(run = %c.run, sent = result.counters.sent, received = result.counters.received,
            errors = result.counters.errors, lost_or_unsent = result.sent.iter().map(|s| s.unsent).sum::<u64>(),
            ended_because = because.as_deref().unwrap_or("the controller stopped it"), "run finished");
        ship(result, outbox);
    }

    pub fn start(&self, s: &Start) -> Body {
        let mut inner = self.lock();
        let Some(run) = inner.run.as_ref().filter(|r| r.id == s.run) else {
            return error(
                ErrorCode::UnknownRun,
                format!("run {} is not configured here", s.run),
            );
        };
        if run.start.borrow().is_none() {
            run.start
                .send_replace(Some(s.start_at_us.0.saturating_mul(1000)));
            inner.state = PeerState::Running;
            info!(run = %s.run, start_at_us = s.start_at_us.0, "started");
        }
        Body::Started(Started { run: s.run.clone() })
    }

    /// A backlog run's consumers read from now on (idempotent).
    pub fn resume(&self, r: &Resume) -> Body {
        let inner = self.lock();
        match inner.run.as_ref().filter(|run| run.id == r.run) {
            Some(run) => {
                if !run.resume.is_cancelled() {
                    run.resume.cancel();
                    info!(run = %r.run, "consumers resumed");
                }
                Body::Resumed(Resumed { run: r.run.clone() })
            }
            None => error(
                ErrorCode::UnknownRun,
                format!("run {} is not configured here", r.run),
            ),
        }
    }

    pub fn stop(&self, s: &Stop) -> Body {
        let mut inner = self.lock();
        if let Some(run) = inner.run.as_ref().filter(|r| r.id == s.run) {
            if !run.stop.is_cancelled() {
                run.stop.cancel();
                info!(run = %s.run, "stopping");
            }
            inner.state = PeerState::Stopping;
        }
        // Idempotent: stopping a run that already ended is fine.
        Body::Stopping(Stopping { run: s.run.clone() })
    }
}

/// What steers a run's tasks, as the engine's `configure` made it.
#[derive(Debug)]
struct Signals {
    /// The common start time in ns, once known.
    start: watch::Receiver<Option<i64>>,
    stop: CancellationToken,
    abort: CancellationToken,
    resume: CancellationToken,
}

/// Where a client task says it is connected (or why it is not).
type Ready = oneshot::Receiver<Result<(), DriverError>>;

/// Spawns the run's producers, then its consumers, round robin over the data-plane
/// threads, each connecting at its turn of the ramp; their handles, and the channels on
/// which each says it is ready.
fn spawn_clients<D: Driver>(
    driver: &D,
    c: &Configure,
    control: &Control,
    handles: &[tokio::runtime::Handle],
    abort: &CancellationToken,
) -> (Vec<tokio::task::JoinHandle<()>>, Vec<Ready>) {
    let threads = handles.len();
    let ramp = Ramp::new(&c.spec, c.producers.len() + c.consumers.len());
    let mut clients = Vec::with_capacity(c.producers.len() + c.consumers.len());
    let mut ready = Vec::with_capacity(clients.capacity());
    for p in c.producers.iter() {
        let (tx, rx) = oneshot::channel();
        ready.push(rx);
        let task = tasks::producer(
            driver.clone(),
            c.spec.producer(p),
            c.spec.clone(),
            tx,
            control.clone(),
        );
        let next = clients.len();
        clients.push(handles[next % threads].spawn(ramp.connect_at(next, abort, task)));
    }
    let skews = skews(c);
    for k in &c.consumers {
        let (tx, rx) = oneshot::channel();
        ready.push(rx);
        let task = tasks::consumer(
            driver.clone(),
            k.clone(),
            c.spec.clone(),
            skews.clone(),
            tx,
            control.clone(),
        );
        let next = clients.len();
        clients.push(handles[next % threads].spawn(ramp.connect_at(next, abort, task)));
    }
    (clients, ready)
}

/// Per producer id: how far this worker's clock is ahead of its worker's (empty when all
/// are 0), shared by this worker's consumers.
fn skews(c: &Configure) -> Arc<[i64]> {
    if c.producer_skews.is_empty() {
        return Arc::from([]);
    }
    let mut dense = vec![0i64; c.spec.producers as usize];
    for s in &c.producer_skews {
        for p in s.producers.iter() {
            dense[p as usize] = s.skew_us;
        }
    }
    dense.into()
}

/// Waits until every client is connected (and subscribed); why not, if one failed, the
/// run was aborted, or the configure timeout (plus the connect ramp) passed.
async fn connected(ready: Vec<Ready>, c: &Configure, abort: &CancellationToken) -> Option<String> {
    let all_ready = async {
        for rx in ready {
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(DriverError::TaskEnded),
            }
        }
        Ok(())
    };
    let configure_timeout = CONFIGURE_TIMEOUT + c.spec.connect_span();
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(configure_timeout, all_ready) => outcome,
        _ = abort.cancelled() => Ok(Err(DriverError::Aborted)),
    };
    match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.reason()),
        Err(_) => Some(format!(
            "not every connection to the SUT was ready within {configure_timeout:?}"
        )),
    }
}

/// Every client closes before the run's SUT objects go and before the result does: a
/// consumer still leaving its group asks for the topic's metadata, and a topic deleted
/// under it crashed librdkafka (with tansu's answer for a missing topic).
async fn close(clients: &mut [tokio::task::JoinHandle<()>], run: &RunId) {
    let closing = async {
        for t in clients.iter_mut() {
            let _ = t.await;
        }
    };
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        warn!(run = %run, "clients still closing after {CLOSE_TIMEOUT:?}: aborted");
        for t in clients.iter() {
            t.abort();
        }
    }
}

/// Sends a run's result; one too large for one note (thousands of topics and consumers)
/// goes in parts, which the controller puts together.
fn ship(result: RunResult, outbox: &Outbox) {
    let run = result.run.clone();
    match result.split(RESULT_BUDGET) {
        Ok(parts) => {
            if parts.len() > 1 {
                info!(run = %run, parts = parts.len(), "result split to fit the note limit");
            }
            for part in parts {
                outbox.event("result", Body::RunResult(part), true);
            }
        }
        Err(e) => warn!(run = %run, error = %e, "the run's result cannot be sent"),
    }
}

/// What the worker gathers from its tasks' reports while a run goes on.
struct Gathered {
    run: RunId,
    worker: PeerId,
    consumers: Vec<maestro_protocol::ConsumerPlan>,
    seconds: Seconds,
    /// (done, all) producers and consumers.
    producers_done: (u32, u32),
    consumers_done: (u32, u32),
    sent: Vec<Sent>,
    deliveries: Vec<Delivery>,
    segments: Option<SegmentMerge>,
    errors: BTreeMap<String, u64>,
    tracker: Option<Arc<crate::driver::ConnectionTracker>>,
    /// Connections opened and failed up to the last published second.
    counted: (u64, u64),
}

impl Gathered {
    fn new(
        c: &Configure,
        worker: PeerId,
        pool: RecorderPool,
        tracker: Option<Arc<crate::driver::ConnectionTracker>>,
    ) -> Self {
        Self {
            run: c.run.clone(),
            worker,
            consumers: c.consumers.clone(),
            seconds: Seconds::new(c.run.clone(), pool),
            producers_done: (0, c.producers.len() as u32),
            consumers_done: (0, c.consumers.len() as u32),
            sent: Vec::new(),
            deliveries: Vec::new(),
            segments: SegmentMerge::new(c.spec.marks_ms.len()),
            errors: BTreeMap::new(),
            tracker,
            counted: (0, 0),
        }
    }

    /// Aggregates until every task has sent its final report, publishing each second
    /// once it is due.
    async fn gather(
        &mut self,
        mut reports: mpsc::UnboundedReceiver<Report>,
        start: &watch::Receiver<Option<i64>>,
        meter: &mut LoadMeter,
        outbox: &Outbox,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while self.producers_done.0 < self.producers_done.1
            || self.consumers_done.0 < self.consumers_done.1
        {
            tokio::select! {
                report = reports.recv() => match report {
                    Some(Report::Interval { second, recorder }) => self.seconds.add(second, recorder),
                    Some(Report::Final(f)) => self.on_final(f, meter),
                    None => break,
                },
                _ = tick.tick() => {
                    if let Some(start_ns) = *start.borrow() {
                        meter.begin(start_ns, tasks::now_ns());
                        let active = (
                            self.producers_done.1 - self.producers_done.0,
                            self.consumers_done.1 - self.consumers_done.0,
                        );
                        let due = self.seconds.due(start_ns, tasks::now_ns(), active);
                        self.publish(due, outbox);
                    }
                }
            }
        }
    }

    /// A task's last report.
    fn on_final(&mut self, f: tasks::Final, meter: &mut LoadMeter) {
        if f.producer {
            self.producers_done.0 += 1;
            if self.producers_done.0 == self.producers_done.1 {
                meter.end(tasks::now_ns());
            }
        } else {
            self.consumers_done.0 += 1;
        }
        self.sent.extend(f.sent);
        self.deliveries.extend(f.deliveries);
        if let (Some(m), Some((id, s))) = (self.segments.as_mut(), f.segments) {
            m.add(f.producer, id, s);
        }
        for (e, n) in f.errors {
            *self.errors.entry(e).or_default() += n;
        }
    }

    /// Publishes seconds, each with the connections of that second.
    fn publish(&mut self, seconds: Vec<RunStats>, outbox: &Outbox) {
        for mut stats in seconds {
            stats.connections = self
                .tracker
                .as_ref()
                .map(|t| second_connections(t, &mut self.counted));
            outbox.event("stats", Body::RunStats(stats), false);
        }
    }

    /// The run's result from everything gathered.
    fn result(self, timings: &crate::driver::Timings, meter: LoadMeter) -> RunResult {
        let total = &self.seconds.total;
        let encode = |h: &Option<hdrhistogram::Histogram<u64>>| {
            h.as_ref().map(maestro_protocol::histogram::encode)
        };
        RunResult {
            run: self.run,
            worker: self.worker,
            counters: total.counters,
            histograms: total.encode(),
            // One row per topic and per consumer, not per producer: a worker with 15,000
            // producers must still fit its result in one note.
            sent: Sent::per_topic(&self.sent),
            deliveries: Delivery::per_consumer(&self.deliveries),
            consumers: self.consumers,
            errors: self
                .errors
                .into_iter()
                .map(|(message, count)| ErrorCount { message, count })
                .collect(),
            tls_handshake_us: encode(&timings.tls_handshake),
            connect_us: encode(&timings.connect),
            subscribe_us: encode(&timings.subscribe),
            connections: self.tracker.map(|t| t.stats()),
            segments: self.segments.map(SegmentMerge::finish),
            data_plane: meter.finish(),
            part: None,
        }
    }
}

/// (ns on a CPU, ns waiting for one, times put on a CPU) of a thread.
type SchedStat = (u64, u64, u64);

/// CPU and run-queue time of a thread of this process, ns, from the kernel's
/// `/proc/self/task/TID/schedstat` (time on a CPU, time waiting for one, timeslices).
fn schedstat(tid: i32) -> Option<SchedStat> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??, fields.next()??))
}

/// Measures a run's data-plane threads from the start until its producers stopped: the
/// generator's own share of the run ([`maestro_protocol::DataPlaneLoad`]).
#[derive(Debug)]
struct LoadMeter {
    tids: Vec<i32>,
    /// When measuring began (wall ns), and each thread's figures then.
    from: Option<(i64, Vec<Option<SchedStat>>)>,
    load: Option<maestro_protocol::DataPlaneLoad>,
}

impl LoadMeter {
    fn new(tids: &[i32]) -> Self {
        Self {
            tids: tids.to_vec(),
            from: None,
            load: None,
        }
    }

    /// Begins once the run's start has come.
    fn begin(&mut self, start_ns: i64, now_ns: i64) {
        if self.from.is_none() && now_ns >= start_ns {
            self.from = Some((now_ns, self.tids.iter().map(|t| schedstat(*t)).collect()));
        }
    }

    /// Ends (once; nothing when it never began).
    fn end(&mut self, now_ns: i64) {
        let Some((began, before)) = self.from.as_ref() else {
            return;
        };
        if self.load.is_some() {
            return;
        }
        let threads = self
            .tids
            .iter()
            .zip(before)
            .filter_map(|(tid, before)| {
                let ((cpu0, wait0, wakes0), (cpu1, wait1, wakes1)) = ((*before)?, schedstat(*tid)?);
                Some(maestro_protocol::ThreadLoad {
                    cpu_us: cpu1.saturating_sub(cpu0) / 1_000,
                    waited_us: wait1.saturating_sub(wait0) / 1_000,
                    wakes: Some(wakes1.saturating_sub(wakes0)),
                })
            })
            .collect::<Vec<_>>();
        if !threads.is_empty() {
            self.load = Some(maestro_protocol::DataPlaneLoad {
                wall_us: (now_ns.saturating_sub(*began) / 1_000).max(0) as u64,
                threads,
            });
        }
    }

    fn finish(self) -> Option<maestro_protocol::DataPlaneLoad> {
        self.load
    }
}

/// A run second's connections: open now, and opened and failed since the last second
/// (`counted` holds the totals up to then). The first second also counts the connect ramp
/// before the start.
fn second_connections(
    t: &crate::driver::ConnectionTracker,
    counted: &mut (u64, u64),
) -> maestro_protocol::SecondConnections {
    let (connected, opened, failed) = t.gauges();
    let delta =
        |now: u64, before: u64| u32::try_from(now.saturating_sub(before)).unwrap_or(u32::MAX);
    let s = maestro_protocol::SecondConnections {
        connected,
        opened: delta(opened, counted.0),
        failed: delta(failed, counted.1),
    };
    *counted = (opened, failed);
    s
}

/// How long after a run second ends the worker waits for late shipments of it (tasks ship
/// at the first event after a slot ends, or at the slot's end when idle) before it
/// publishes that second.
pub const SECOND_GRACE: Duration = Duration::from_millis(250);

/// The aggregator's run seconds: what tasks shipped, by the run second it happened in,
/// published once each second is over (plus [`SECOND_GRACE`]). A shipment for a second
/// already published (a task that was silent for longer than the grace) is counted in the
/// oldest unpublished second. Recorders are reused through the run's pool.
#[derive(Debug)]
struct Seconds {
    run: RunId,
    pool: RecorderPool,
    /// The oldest second not yet published.
    next: u32,
    pending: BTreeMap<u32, Recorder>,
    /// Everything published so far.
    total: Recorder,
}

impl Seconds {
    fn new(run: RunId, pool: RecorderPool) -> Self {
        Self {
            run,
            pool,
            next: 0,
            pending: BTreeMap::new(),
            total: Recorder::default(),
        }
    }

    fn add(&mut self, second: u32, recorder: Recorder) {
        let second = second.max(self.next);
        let pool = &self.pool;
        self.pending
            .entry(second)
            .or_insert_with(|| pool.take())
            .merge(&recorder);
        self.pool.give(recorder);
    }

    /// The stats of second `k`, and forgets it.
    fn publish(&mut self, k: u32, start_ns: i64, (ap, ac): (u32, u32)) -> RunStats {
        let start_us = start_ns / 1_000 + i64::from(k) * 1_000_000;
        let bucket = self.pending.remove(&k).unwrap_or_else(|| self.pool.take());
        self.total.merge(&bucket);
        let stats = RunStats {
            run: self.run.clone(),
            second: k,
            interval_start_us: UnixMicros(start_us),
            interval_end_us: UnixMicros(start_us + 1_000_000),
            counters: bucket.counters,
            histograms: bucket.encode(),
            active_producers: ap,
            active_consumers: ac,
            connections: None,
        };
        self.pool.give(bucket);
        self.next = k.saturating_add(1);
        stats
    }

    /// The seconds that ended (plus the grace) by `now_ns`.
    fn due(&mut self, start_ns: i64, now_ns: i64, active: (u32, u32)) -> Vec<RunStats> {
        let mut out = Vec::new();
        let grace = SECOND_GRACE.as_nanos() as i64;
        while start_ns + (i64::from(self.next) + 1) * 1_000_000_000 + grace <= now_ns {
            let k = self.next;
            out.push(self.publish(k, start_ns, active));
        }
        out
    }

    /// Every task has ended: publishes what is left, the last one with nothing active.
    fn finish(&mut self, start_ns: i64) -> Vec<RunStats> {
        let last = self
            .pending
            .keys()
            .next_back()
            .copied()
            .unwrap_or(self.next)
            .max(self.next);
        (self.next..=last)
            .map(|k| self.publish(k, start_ns, (0, 0)))
            .collect()
    }
}

/// Sums the tasks' per-segment tallies into a run result's [`SegmentTallies`].
struct SegmentMerge {
    sent: BTreeMap<u32, Vec<u64>>,
    received: BTreeMap<u32, (Vec<u64>, Vec<u64>)>,
    response: Vec<hdrhistogram::Histogram<u64>>,
}

impl SegmentMerge {
    /// `None` without marks.
    fn new(marks: usize) -> Option<Self> {
        (marks > 0).then(|| Self {
            sent: BTreeMap::new(),
            received: BTreeMap::new(),
            response: (0..=marks)
                .map(|_| maestro_protocol::histogram::latency_histogram())
                .collect(),
        })
    }

    fn add(&mut self, producer: bool, id: u32, s: tasks::Segments) {
        let add = |into: &mut Vec<u64>, from: &[u64]| {
            into.resize(from.len().max(into.len()), 0);
            for (a, b) in into.iter_mut().zip(from) {
                *a += b;
            }
        };
        if producer {
            add(self.sent.entry(id).or_default(), &s.sent);
        } else {
            let (unique, duplicated) = self.received.entry(id).or_default();
            add(unique, &s.unique);
            add(duplicated, &s.duplicated);
            for (into, h) in self.response.iter_mut().zip(&s.response) {
                let _ = into.add(h);
            }
        }
    }

    fn finish(self) -> SegmentTallies {
        SegmentTallies {
            sent: self
                .sent
                .into_iter()
                .map(|(topic, sent)| TopicSegments { topic, sent })
                .collect(),
            received: self
                .received
                .into_iter()
                .map(|(consumer, (unique, duplicated))| ConsumerSegments {
                    consumer,
                    unique,
                    duplicated,
                })
                .collect(),
            response_time_us: self
                .response
                .iter()
                .map(maestro_protocol::histogram::encode)
                .collect(),
        }
    }
}

#[cfg(test)]
mod seconds_tests {
    use super::*;

    fn sent(n: u64) -> Recorder {
        let mut r = Recorder::default();
        for _ in 0..n {
            r.sent(1_000, 100, true);
        }
        r
    }

    #[test]
    fn events_land_in_their_own_second_and_late_ones_in_the_oldest_open() {
        let run = RunId::new("r").unwrap_or_else(|_| unreachable!());
        let mut s = Seconds::new(run, RecorderPool::default());
        let start = 1_000_000_000_000;
        s.add(0, sent(3));
        s.add(1, sent(5));
        s.add(0, sent(2));
        // 1.2 s in: second 0 is not over plus the grace yet.
        assert!(s.due(start, start + 1_200_000_000, (1, 1)).is_empty());
        let out = s.due(start, start + 1_300_000_000, (1, 1));
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].second, out[0].counters.sent), (0, 5));
        assert_eq!(out[0].interval_start_us.0, start / 1000);
        assert_eq!(out[0].interval_end_us.0, start / 1000 + 1_000_000);
        // Late: second 0 is published, so it counts in second 1.
        s.add(0, sent(1));
        let out = s.finish(start);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].second, out[0].counters.sent), (1, 6));
        assert_eq!((out[0].active_producers, out[0].active_consumers), (0, 0));
        assert_eq!(s.total.counters.sent, 11);
    }

    #[test]
    fn a_quiet_second_is_published_empty_and_finish_always_says_done() {
        let run = RunId::new("r").unwrap_or_else(|_| unreachable!());
        let mut s = Seconds::new(run, RecorderPool::default());
        let start = 0;
        s.add(2, sent(1));
        let out = s.due(start, 3_300_000_000, (1, 0));
        assert_eq!(
            out.iter()
                .map(|o| (o.second, o.counters.sent))
                .collect::<Vec<_>>(),
            [(0, 0), (1, 0), (2, 1)]
        );
        let out = s.finish(start);
        assert_eq!(out.len(), 1, "the last note says nothing is active");
        assert_eq!((out[0].second, out[0].active_producers), (3, 0));
    }
}

#[cfg(test)]
mod thread_tests {
    use maestro_protocol::{Configure, IdRange, RunId};

    fn configure(rate: f64, producers: u32, consumers: u32) -> Configure {
        let spec = maestro_protocol::TestSpec {
            producers,
            consumers,
            ..maestro_protocol::TestSpec::new(
                "mqtt://h/x".parse().unwrap_or_else(|e| panic!("{e}")),
                rate,
                std::time::Duration::from_secs(1),
            )
        };
        Configure {
            run: RunId::new("r").unwrap_or_else(|e| panic!("{e}")),
            producers: IdRange::round_robin(producers, 0, 1),
            consumers: (0..consumers)
                .map(|id| maestro_protocol::ConsumerPlan {
                    id,
                    topic: 0,
                    subscription: id,
                })
                .collect(),
            spec,
            lease_ms: 5000,
            producer_skews: Vec::new(),
        }
    }

    #[test]
    fn a_run_takes_the_threads_its_rate_needs() {
        // A slow fleet: 5,000 clients at one message a second, one thread.
        assert_eq!(super::threads_for(&configure(5000.0, 5000, 0), 8), 1);
        // 40,000 sent and 40,000 received a second: two.
        assert_eq!(super::threads_for(&configure(40_000.0, 4, 1), 8), 2);
        // Fan-out to 10 consumers of 100,000 msg/s: every thread there is.
        assert_eq!(super::threads_for(&configure(100_000.0, 4, 10), 8), 8);
        // As fast as possible: all of them.
        assert_eq!(super::threads_for(&configure(0.0, 1, 1), 4), 4);
    }
}
