//! Who watches a run while it goes on: the Prometheus exporter ([`crate::live`]), the
//! live terminal view's model ([`crate::view`]) and the progress lines on stderr
//! ([`crate::progress`]) implement [`Watch`]; a run calls every
//! watcher in its [`crate::run::RunOptions`] as things happen. A watcher only records:
//! it must return at once (it runs in the run's loop).

use crate::faults::FaultRecord;
use crate::lifecycle::Step;
use maestro_protocol::{PeerId, RunId, RunStats, SourceSample, TestSpec};
use maestro_report::Percentiles;

/// One written second of a run, over all workers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Second {
    pub second: u32,
    pub sent: u64,
    pub received: u64,
    pub errors: u64,
    pub duplicated: u64,
    pub response: Percentiles,
}

/// Where one worker of a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Connecting its clients to the SUT.
    Configuring,
    /// Connected, waiting for the start.
    Ready,
    Running,
    /// Its result is in.
    Done,
    /// Refused or failed its part.
    Failed,
    /// Gone from the control broker.
    Offline,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Configuring => "configuring",
            WorkerState::Ready => "ready",
            WorkerState::Running => "running",
            WorkerState::Done => "done",
            WorkerState::Failed => "failed",
            WorkerState::Offline => "offline",
        }
    }
}

/// What a run tells its watchers. Every method has a default that ignores it.
pub trait Watch: Send + Sync + std::fmt::Debug {
    /// The phase the next runs belong to: a plan's `01-fixed`; `start` otherwise.
    fn phase(&self, _phase: &str) {}
    /// A run is set up: its spec and its workers (id, name), in order.
    fn run_begins(&self, _run: &RunId, _spec: &TestSpec, _workers: &[(PeerId, String)]) {}
    /// The run moved on.
    fn step(&self, _run: &RunId, _step: Step) {}
    /// The run's common start, µs on the controller's clock (set as `start` is sent).
    fn starts_at(&self, _run: &RunId, _start_at_us: i64) {}
    /// A worker moved on.
    fn worker(&self, _run: &RunId, _worker: &PeerId, _state: WorkerState) {}
    /// A worker's second (its own counters and connections).
    fn worker_second(&self, _run: &RunId, _worker: &PeerId, _stats: &RunStats) {}
    /// A second of the run was written: `whole` is the response time so far, `faults`
    /// the actions in effect (empty: none).
    fn second(
        &self,
        _run: &RunId,
        _s: &Second,
        _whole: &Percentiles,
        _in_flight: i64,
        _faults: &str,
    ) {
    }
    /// A fault's record, after it changed (or once a second).
    fn fault(&self, _run: &RunId, _fault: &FaultRecord) {}
    /// An inspector's sample of one source, at `at_us` on the controller's clock.
    fn sut(&self, _inspector: &str, _at_us: i64, _sample: &SourceSample) {}
    /// The run ended: the generator's own verdict on it (whether the tool limited it).
    fn generator(&self, _run: &RunId, _verdict: &maestro_report::model::GeneratorVerdict) {}
    /// A backlog run's backlog is built (`waiting` messages after `after_s` seconds):
    /// its consumers are resumed.
    fn backlog_built(&self, _run: &RunId, _waiting: u64, _after_s: f64) {}
    /// The run ended: what was lost is known now.
    fn finished(&self, _run: &RunId, _lost: u64, _in_flight: i64) {}
    /// A plan's phase runs a test at `rate` (a warm-up, a fixed rate, a search's probe).
    fn probe_begins(&self, _kind: &str, _rate: f64) {}
    /// That test ended: passed (`None` for a warm-up, which is not judged) and its summary.
    fn probe_ended(&self, _passed: Option<bool>, _summary: &maestro_report::RunSummary) {}
    /// A plan's drain phase: no load for `duration`.
    fn draining(&self, _duration: std::time::Duration) {}
}

/// The watchers of a run.
pub type Watchers = Vec<std::sync::Arc<dyn Watch>>;
