//! `maestro-inspector` owns the SUT side of the cluster: it reads the system under test
//! (Mosquitto `$SYS`, the RabbitMQ management API, Kafka offsets and lag, the host and a
//! process; [`sources`]) and publishes a `sut_stats` event every second, and it runs the
//! fault actions declared in its own local file ([`faults`]) when a controller names them.
//!
//! It acts on the SUT only through those declared actions, heals every fault by itself
//! (at the end of its duration, on a `stop` for its run, when the controller that asked
//! for it is gone for [`CONTROLLER_GRACE`], and on shutdown), registers each heal in a
//! state file before the action runs and heals what an earlier inspector left there when
//! it starts, and talks to the others only through notes.

pub mod args;
pub mod faults;
pub mod sources;

use faults::FaultBook;
use maestro_control::peer::{Outbox, ReplyTo};
use maestro_control::{Handler, PeerConfig, PeerError};
use maestro_protocol::{
    Body, ErrorCode, ErrorNote, FaultHealed, Inject, Injected, Note, RunId, Stopping, SutStats,
};
use sources::{Source, SourceSpec};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// What this peer announces it can do (each declared fault action adds `fault:<name>`).
pub const CAPABILITIES: &[&str] = &["ping", "stats", "halt", "sut_stats"];

/// How often the inspector samples its sources.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How long the inspector waits for its tasks (heals first) when it stops.
const STOP_GRACE: Duration = Duration::from_secs(25);

/// How long a controller may be gone (its last will fired) before the inspector heals
/// the faults it asked for; a controller that comes back within it keeps them.
pub const CONTROLLER_GRACE: Duration = Duration::from_secs(5);

/// The inspector's configuration beyond its identity.
#[derive(Debug, Clone, Default)]
pub struct InspectorConfig {
    pub sources: Vec<SourceSpec>,
    pub faults: FaultBook,
    /// Where the faults not healed yet are kept [default: [`default_state_file`]].
    pub state_file: Option<std::path::PathBuf>,
}

/// `<temporary folder>/maestro-inspector-<cluster>-<name>.faults.json`: one per cluster
/// and inspector name, so an inspector started again under its name finds what it left,
/// and inspectors of other clusters on the host never see it.
pub fn default_state_file(cluster: &str, name: &str) -> std::path::PathBuf {
    let name: String = format!("{cluster}-{name}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    std::env::temp_dir().join(format!("maestro-inspector-{name}.faults.json"))
}

/// Heals the faults an earlier inspector left in the state file, then empties it.
async fn heal_leftovers(state: &faults::StateFile, leftovers: Vec<faults::Pending>) {
    if leftovers.is_empty() {
        return;
    }
    warn!(
        faults = leftovers.len(),
        state_file = %state.path().display(),
        "an earlier inspector left faults in place; healing them"
    );
    for p in leftovers {
        match p.heal.clone().heal().await {
            Ok(()) => info!(action = %p.action, "healed a fault left by an earlier inspector"),
            Err(e) => warn!(action = %p.action, error = %e, heal = ?p.heal,
                "could not heal a fault left by an earlier inspector; undo it by hand"),
        }
    }
    if let Err(e) = state.clear() {
        warn!(error = %e, "cannot empty the state file");
    }
}

/// Runs the inspector until `shutdown` is cancelled or a halt note arrives.
pub async fn run(
    mut config: PeerConfig,
    inspector: InspectorConfig,
    shutdown: CancellationToken,
) -> Result<(), PeerError> {
    for name in inspector.faults.actions.keys() {
        config
            .info
            .capabilities
            .push(maestro_protocol::fault::capability(name));
    }
    let default = default_state_file(config.cluster.as_str(), &config.info.name);
    let state_path = inspector
        .state_file
        .clone()
        .unwrap_or_else(|| default.clone());
    let opened = match faults::StateFile::open(state_path.clone()) {
        // The default file is another running inspector's (same cluster and name on this
        // host, for example two `run --local` at once): this one keeps its own.
        Err(e) if inspector.state_file.is_none() && e.contains("in use by another") => {
            let own = default.with_extension(format!("{}.json", std::process::id()));
            warn!(state_file = %own.display(), "the default state file is another running inspector's; using this one");
            faults::StateFile::open(own)
        }
        other => other,
    };
    let (state, leftovers) = match opened {
        Ok(opened) => opened,
        // Kept aside as PATH.bad and named: start afresh.
        Err(e) if e.contains("healed by hand") => {
            warn!(error = %e, "state file unreadable");
            faults::StateFile::open(state_path)
                .map_err(|e| PeerError::Io(std::io::Error::other(e)))?
        }
        Err(e) => return Err(PeerError::Io(std::io::Error::other(e))),
    };
    heal_leftovers(&state, leftovers).await;
    let tasks = TaskTracker::new();
    // The peer's own token: a halt cancels it, and everything here stops with it.
    let stop = shutdown.child_token();
    info!(
        sources = inspector.sources.len(),
        faults = inspector.faults.actions.len(),
        "inspector ready"
    );
    let handler = Inspector {
        sources: Some(inspector.sources),
        book: Arc::new(inspector.faults),
        tasks: tasks.clone(),
        stop: stop.clone(),
        outbox: None,
        runs: Arc::new(Mutex::new(HashMap::new())),
        latest: Arc::new(Mutex::new(Latest::default())),
        state: Arc::new(state),
        gone: HashMap::new(),
    };
    let result = maestro_control::peer::run(config, handler, stop.clone()).await;
    // Heal whatever is still injected, then wait for every task.
    stop.cancel();
    tasks.close();
    if tokio::time::timeout(STOP_GRACE, tasks.wait())
        .await
        .is_err()
    {
        warn!("some inspector tasks did not finish in time");
    }
    result
}

/// A fault in progress: its reply (kept for a repeated request), what heals it now, and
/// the controller that asked for it.
struct Active {
    heal_now: CancellationToken,
    injected: Option<Injected>,
    controller: maestro_protocol::PeerId,
}

struct Inspector {
    sources: Option<Vec<SourceSpec>>,
    book: Arc<FaultBook>,
    tasks: TaskTracker,
    stop: CancellationToken,
    outbox: Option<Outbox>,
    /// Per run, its faults in progress.
    runs: Arc<Mutex<HashMap<RunId, HashMap<u32, Active>>>>,
    /// The latest figures of each source, for a [`Body::SutRequest`].
    latest: Arc<Mutex<Latest>>,
    /// The faults not healed yet, on disk.
    state: Arc<faults::StateFile>,
    /// Controllers gone offline: cancelled when one comes back within the grace.
    gone: HashMap<maestro_protocol::PeerId, CancellationToken>,
}

/// The latest figures of each source (samples with an error are not figures), and when
/// the latest sample was taken.
#[derive(Debug, Default)]
struct Latest {
    at_us: Option<maestro_protocol::UnixMicros>,
    figures: std::collections::BTreeMap<String, maestro_protocol::SourceSample>,
}

impl Latest {
    fn record(
        &mut self,
        at_us: maestro_protocol::UnixMicros,
        samples: &[maestro_protocol::SourceSample],
    ) {
        self.at_us = Some(at_us);
        for s in samples.iter().filter(|s| s.error.is_none()) {
            self.figures.insert(s.source.to_string(), s.clone());
        }
    }

    /// What a [`Body::SutRequest`] gets (no samples before the first one is taken).
    fn stats(&self) -> SutStats {
        SutStats {
            at_us: self.at_us.unwrap_or_else(maestro_control::now),
            samples: self.figures.values().cloned().collect(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Handler for Inspector {
    fn attach(&mut self, outbox: Outbox) {
        let specs = self.sources.take().unwrap_or_default();
        if !specs.is_empty() {
            self.tasks.spawn(sample_loop(
                specs,
                outbox.clone(),
                self.latest.clone(),
                self.tasks.clone(),
                self.stop.clone(),
            ));
        }
        self.outbox = Some(outbox);
    }

    fn on_controller(&mut self, controller: &maestro_protocol::PeerId, online: bool) {
        if online {
            if let Some(back) = self.gone.remove(controller) {
                info!(%controller, "the controller is back; its faults go on");
                back.cancel();
            }
            return;
        }
        let owns_faults = lock(&self.runs)
            .values()
            .flat_map(|f| f.values())
            .any(|a| a.controller == *controller);
        if !owns_faults || self.gone.contains_key(controller) {
            return;
        }
        warn!(%controller, grace = ?CONTROLLER_GRACE,
            "the controller of faults in place went offline; healing them unless it comes back");
        let back = CancellationToken::new();
        self.gone.insert(controller.clone(), back.clone());
        let (runs, stop, controller) = (self.runs.clone(), self.stop.clone(), controller.clone());
        self.tasks.spawn(async move {
            tokio::select! {
                _ = back.cancelled() => return,
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(CONTROLLER_GRACE) => {}
            }
            warn!(%controller, "the controller did not come back; healing its faults");
            for a in lock(&runs).values().flat_map(|f| f.values()) {
                if a.controller == controller {
                    a.heal_now.cancel();
                }
            }
        });
    }

    fn handle(&mut self, note: &Note, reply: ReplyTo) -> Option<Body> {
        match &note.body {
            Body::Inject(i) => self.inject(i, &note.sender.id, reply),
            Body::SutRequest(_) => Some(Body::SutStats(lock(&self.latest).stats())),
            Body::Stop(s) => {
                // Heal this run's faults now.
                if let Some(faults) = lock(&self.runs).get(&s.run) {
                    for a in faults.values() {
                        a.heal_now.cancel();
                    }
                }
                Some(Body::Stopping(Stopping { run: s.run.clone() }))
            }
            other => Some(Body::Error(ErrorNote {
                code: ErrorCode::Unsupported,
                message: format!("an inspector does not handle {:?} notes", other.kind()),
            })),
        }
    }
}

impl Inspector {
    fn inject(
        &mut self,
        i: &Inject,
        controller: &maestro_protocol::PeerId,
        reply: ReplyTo,
    ) -> Option<Body> {
        let Some(action) = self.book.actions.get(&i.action).cloned() else {
            let declared: Vec<&str> = self.book.actions.keys().map(|a| a.as_str()).collect();
            warn!(action = %i.action, run = %i.run, "refused an undeclared fault action");
            return Some(Body::Error(ErrorNote {
                code: ErrorCode::UnknownAction,
                message: format!(
                    "this inspector has not declared the fault action {:?} (declared: {})",
                    i.action.as_str(),
                    if declared.is_empty() {
                        "none; see --faults".to_owned()
                    } else {
                        declared.join(", ")
                    }
                ),
            }));
        };
        // A duration beyond any run's window is a bad note (and would overflow the timer).
        if i.duration_ms > maestro_protocol::MAX_DURATION_MS {
            return Some(Body::Error(ErrorNote {
                code: ErrorCode::InvalidSpec,
                message: format!(
                    "fault duration of {} ms is above the limit of {} ms",
                    i.duration_ms,
                    maestro_protocol::MAX_DURATION_MS
                ),
            }));
        }
        let outbox = self.outbox.clone()?;
        let heal_now = self.stop.child_token();
        {
            let mut runs = lock(&self.runs);
            let faults = runs.entry(i.run.clone()).or_default();
            if let Some(active) = faults.get(&i.fault) {
                // A repeated request: the same answer, never a second injection.
                return active.injected.clone().map(Body::Injected);
            }
            faults.insert(
                i.fault,
                Active {
                    heal_now: heal_now.clone(),
                    injected: None,
                    controller: controller.clone(),
                },
            );
        }
        // Its presence tells when it is gone (see `on_controller`).
        outbox.watch(controller);
        let (runs, state) = (self.runs.clone(), self.state.clone());
        let (i, controller) = (i.clone(), controller.clone());
        self.tasks.spawn(async move {
            let issued = maestro_control::now();
            info!(action = %i.action, run = %i.run, fault = i.fault, duration_ms = i.duration_ms, "injecting");
            let key = format!("{}/{}", i.run, i.fault);
            // The heal is known, and on disk, before the action runs.
            let prepared = action.prepare().and_then(|heal| {
                let pending = faults::Pending {
                    action: i.action.to_string(),
                    heal: heal.clone(),
                };
                state.register(&key, pending).map(|()| heal)
            });
            let (outcome, heal) = match prepared {
                Ok(heal) => (action.apply(&heal).await, Some(heal)),
                Err(e) => (
                    faults::Outcome {
                        confirmed: None,
                        error: Some(e),
                        undo: None,
                    },
                    None,
                ),
            };
            let injected = Injected {
                run: i.run.clone(),
                fault: i.fault,
                issued_at_us: issued,
                confirmed_at_us: outcome.confirmed,
                error: outcome.error.clone(),
            };
            if let Some(e) = &injected.error {
                warn!(action = %i.action, error = %e, "fault injection failed");
            }
            if let Some(a) = lock(&runs).get_mut(&i.run).and_then(|f| f.get_mut(&i.fault)) {
                a.injected = Some(injected.clone());
            }
            outbox.reply(&reply, Body::Injected(injected));
            let Some(injection) = heal.filter(|_| outcome.error.is_none()) else {
                // What a failed action did is undone at once.
                if let Some(undo) = outcome.undo {
                    match undo.heal().await {
                        Ok(()) => info!(action = %i.action, "undid what the failed action did"),
                        Err(e) => warn!(action = %i.action, error = %e, "could not undo what the failed action did"),
                    }
                }
                if let Err(e) = state.remove(&key) {
                    warn!(error = %e, "cannot update the state file");
                }
                return;
            };
            let ends = tokio::time::Instant::now() + Duration::from_millis(i.duration_ms);
            tokio::select! {
                _ = tokio::time::sleep_until(ends) => {}
                _ = heal_now.cancelled() => {}
            }
            let result = injection.heal().await;
            if let Err(e) = state.remove(&key) {
                warn!(error = %e, "cannot update the state file");
            }
            let healed_at = maestro_control::now();
            match &result {
                Ok(()) => info!(action = %i.action, run = %i.run, fault = i.fault, "healed"),
                Err(e) => warn!(action = %i.action, error = %e, "heal failed"),
            }
            outbox.event(
                "fault",
                Body::FaultHealed(FaultHealed {
                    run: i.run.clone(),
                    fault: i.fault,
                    action: i.action.clone(),
                    healed_at_us: healed_at,
                    error: result.err(),
                }),
                true,
            );
            // Forget the run's record a while later (repeated requests stay answered).
            let mut runs = lock(&runs);
            if let Some(f) = runs.get_mut(&i.run) {
                f.remove(&i.fault);
                if f.is_empty() {
                    runs.remove(&i.run);
                }
            }
            let controller_has_more = runs
                .values()
                .flat_map(|f| f.values())
                .any(|a| a.controller == controller);
            if !controller_has_more {
                outbox.unwatch(&controller);
            }
        });
        None
    }
}

/// Samples every source once a second and publishes the samples as one event.
async fn sample_loop(
    specs: Vec<SourceSpec>,
    outbox: Outbox,
    latest: Arc<Mutex<Latest>>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let mut sources: Vec<(SourceSpec, Source)> = specs
        .iter()
        .map(|s| (s.clone(), Source::open(s, &tasks, &stop)))
        .collect();
    // One sample at once, kept as the latest figures only (not an event: the series stay
    // on whole seconds): a run that starts before the first whole-second tick still gets
    // every source's baseline (without it, the quickstart's run, started right after its
    // inspector, warned "host had no sample before the start").
    let at_us = maestro_control::now();
    let first = tokio::select! {
        _ = stop.cancelled() => return,
        s = sources::sample_all(&mut sources) => s,
    };
    lock(&latest).record(at_us, &first);
    // Ticks on whole wall-clock seconds, so samples line up across inspectors.
    let now_us = maestro_control::now().0;
    let to_next = 1_000_000 - now_us.rem_euclid(1_000_000);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_micros(to_next as u64),
        SAMPLE_EVERY,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failing: HashMap<String, bool> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let at_us = maestro_control::now();
        let samples = tokio::select! {
            _ = stop.cancelled() => break,
            s = sources::sample_all(&mut sources) => s,
        };
        for s in &samples {
            let was = failing
                .insert(s.source.clone(), s.error.is_some())
                .unwrap_or(false);
            match (&s.error, was) {
                (Some(e), false) => {
                    warn!(source = %s.source, error = %e, "source not answering (a gap until it does)")
                }
                (None, true) => info!(source = %s.source, "source answering again"),
                _ => {}
            }
        }
        lock(&latest).record(at_us, &samples);
        outbox.event("sut", Body::SutStats(SutStats { at_us, samples }), false);
    }
}
