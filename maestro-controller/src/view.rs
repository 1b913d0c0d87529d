//! The live view's model: a [`Watch`] that keeps what a person watching a run wants to see
//! (rates, response times, workers, SUT figures, faults, the plan's phase) in one
//! [`ViewState`], which a renderer (the CLI's terminal view) copies and draws. Pure: no
//! I/O, no clock of its own.

use crate::faults::{FaultRecord, FaultState};
use crate::lifecycle::Step;
use crate::watch::{Second, Watch, WorkerState};
use maestro_protocol::{MetricKind, PeerId, RunId, RunStats, SourceSample, TestSpec};
use maestro_report::Percentiles;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// Seconds of rates kept for the sparklines.
pub const HISTORY_SECONDS: usize = 300;

/// SUT metrics the view shows, in this order (others are left to the report).
pub const SUT_SHOWN: &[&str] = &[
    maestro_protocol::inspect::names::MESSAGES_RECEIVED,
    maestro_protocol::inspect::names::MESSAGES_SENT,
    maestro_protocol::inspect::names::QUEUE_DEPTH,
    maestro_protocol::inspect::names::CONSUMER_LAG,
    maestro_protocol::inspect::names::CLIENTS_CONNECTED,
    maestro_protocol::inspect::names::MEMORY_BYTES,
    "cpu_percent",
];

/// One worker's row.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRow {
    pub id: PeerId,
    pub name: String,
    pub state: WorkerState,
    /// Clients connected to the SUT at the end of its last second (when its driver
    /// tracks them).
    pub connected: Option<u32>,
    pub sent: u64,
    pub received: u64,
    pub errors: u64,
}

/// The latest value of one SUT metric (unlabelled series only), and a counter's rate.
#[derive(Debug, Clone, PartialEq)]
pub struct SutRow {
    pub inspector: String,
    pub source: String,
    pub metric: String,
    pub kind: MetricKind,
    pub value: f64,
    /// A counter's increase per second since its previous sample.
    pub per_second: Option<f64>,
    /// When it was sampled (controller clock, µs).
    pub at_us: i64,
    /// The source's error, while it is not answering.
    pub error: Option<String>,
}

/// One fault of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRow {
    pub action: String,
    pub inspector: String,
    pub at: Duration,
    pub duration: Duration,
    pub state: FaultState,
    pub error: Option<String>,
}

/// Everything the live view shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ViewState {
    /// The plan's phase (`01-fixed`), or `start`.
    pub phase: Option<String>,
    /// Runs begun so far under this view (a plan has several).
    pub runs: u32,
    pub run: Option<RunId>,
    pub step: Option<Step>,
    pub sut: String,
    pub offered_rate: f64,
    /// The send window (warm-up included), when the run has one.
    pub window: Option<Duration>,
    pub last: Option<Second>,
    pub whole: Percentiles,
    pub in_flight: i64,
    pub sent: u64,
    pub received: u64,
    pub errors: u64,
    pub duplicated: u64,
    /// Sent and received per second, oldest first.
    pub sent_history: VecDeque<u64>,
    pub received_history: VecDeque<u64>,
    pub workers: Vec<WorkerRow>,
    pub sut_rows: Vec<SutRow>,
    pub faults: Vec<FaultRow>,
    /// The faults in effect now (comma-separated), from the last second.
    pub faults_now: String,
    /// Set when the person watching asked to stop.
    pub stopping: bool,
    /// What was lost, once the run ended.
    pub lost: Option<u64>,
    /// The generator's verdict in one line, once the run ended.
    pub generator: Option<String>,
}

/// The shared model: a watcher that the renderer reads.
#[derive(Debug, Default)]
pub struct LiveView {
    state: Mutex<ViewState>,
}

impl LiveView {
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self::default())
    }

    fn with<T>(&self, f: impl FnOnce(&mut ViewState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A copy to draw from.
    pub fn snapshot(&self) -> ViewState {
        self.with(|s| s.clone())
    }

    /// A run seen from outside begins ([`crate::observe`]): no spec, no workers yet.
    pub fn observed_run_begins(&self, run: &RunId) {
        self.with(|s| {
            let sut_rows = std::mem::take(&mut s.sut_rows);
            *s = ViewState {
                runs: s.runs + 1,
                run: Some(run.clone()),
                sut_rows,
                ..ViewState::default()
            };
        });
    }

    /// A worker of a run seen from outside published its first stats.
    pub fn observed_worker(&self, run: &RunId, id: &PeerId, name: &str) {
        self.with(|s| {
            if s.run.as_ref() == Some(run) && !s.workers.iter().any(|w| &w.id == id) {
                s.workers.push(WorkerRow {
                    id: id.clone(),
                    name: name.to_owned(),
                    state: WorkerState::Running,
                    connected: None,
                    sent: 0,
                    received: 0,
                    errors: 0,
                });
            }
        });
    }

    /// A fault of a run seen from outside was healed (or failed).
    pub fn observed_fault(&self, run: &RunId, row: FaultRow) {
        self.with(|s| {
            if s.run.as_ref() == Some(run) {
                s.faults.push(row);
            }
        });
    }

    /// The person watching asked to stop (the run is being stopped).
    pub fn set_stopping(&self) {
        self.with(|s| s.stopping = true);
    }
}

fn push(history: &mut VecDeque<u64>, v: u64) {
    if history.len() == HISTORY_SECONDS {
        history.pop_front();
    }
    history.push_back(v);
}

impl Watch for LiveView {
    fn phase(&self, phase: &str) {
        self.with(|s| s.phase = Some(phase.to_owned()));
    }

    fn run_begins(&self, run: &RunId, spec: &TestSpec, workers: &[(PeerId, String)]) {
        self.with(|s| {
            let keep = (s.phase.take(), s.runs, s.stopping, s.sut_rows.clone());
            *s = ViewState {
                phase: keep.0,
                runs: keep.1 + 1,
                stopping: keep.2,
                sut_rows: keep.3,
                run: Some(run.clone()),
                sut: spec.sut.redacted(),
                offered_rate: spec.rate,
                window: spec.duration_ms.map(|_| spec.send_window()),
                workers: workers
                    .iter()
                    .map(|(id, name)| WorkerRow {
                        id: id.clone(),
                        name: name.clone(),
                        state: WorkerState::Configuring,
                        connected: None,
                        sent: 0,
                        received: 0,
                        errors: 0,
                    })
                    .collect(),
                ..ViewState::default()
            };
        });
    }

    fn step(&self, run: &RunId, step: Step) {
        self.with(|s| {
            if s.run.as_ref() == Some(run) {
                s.step = Some(step);
            }
        });
    }

    fn worker(&self, run: &RunId, worker: &PeerId, state: WorkerState) {
        self.with(|s| {
            if s.run.as_ref() != Some(run) {
                return;
            }
            if let Some(w) = s.workers.iter_mut().find(|w| &w.id == worker) {
                // A late note never moves a finished or gone worker back.
                if !matches!(
                    w.state,
                    WorkerState::Done | WorkerState::Failed | WorkerState::Offline
                ) || state == WorkerState::Offline
                {
                    w.state = state;
                }
            }
        });
    }

    fn worker_second(&self, run: &RunId, worker: &PeerId, stats: &RunStats) {
        self.with(|s| {
            if s.run.as_ref() != Some(run) {
                return;
            }
            if let Some(w) = s.workers.iter_mut().find(|w| &w.id == worker) {
                w.sent = w.sent.saturating_add(stats.counters.sent);
                w.received = w.received.saturating_add(stats.counters.received);
                w.errors = w.errors.saturating_add(stats.counters.errors);
                if let Some(c) = stats.connections {
                    w.connected = Some(c.connected);
                }
                if w.state == WorkerState::Ready {
                    w.state = WorkerState::Running;
                }
            }
        });
    }

    fn second(
        &self,
        run: &RunId,
        second: &Second,
        whole: &Percentiles,
        in_flight: i64,
        faults: &str,
    ) {
        self.with(|s| {
            if s.run.as_ref() != Some(run) {
                return;
            }
            s.last = Some(*second);
            s.whole = *whole;
            s.in_flight = in_flight;
            s.sent = s.sent.saturating_add(second.sent);
            s.received = s.received.saturating_add(second.received);
            s.errors += second.errors;
            s.duplicated += second.duplicated;
            push(&mut s.sent_history, second.sent);
            push(&mut s.received_history, second.received);
            s.faults_now = faults.to_owned();
        });
    }

    fn fault(&self, run: &RunId, f: &FaultRecord) {
        self.with(|s| {
            if s.run.as_ref() != Some(run) {
                return;
            }
            let row = FaultRow {
                action: f.plan.action.to_string(),
                inspector: f.inspector.1.clone(),
                at: f.plan.at,
                duration: f.plan.duration,
                state: f.state,
                error: f.errors.first().cloned(),
            };
            match s
                .faults
                .iter_mut()
                .find(|r| r.action == row.action && r.at == row.at)
            {
                Some(r) => *r = row,
                None => s.faults.push(row),
            }
        });
    }

    fn sut(&self, inspector: &str, at_us: i64, sample: &SourceSample) {
        self.with(|s| {
            if let Some(error) = &sample.error {
                for r in s
                    .sut_rows
                    .iter_mut()
                    .filter(|r| r.inspector == inspector && r.source == sample.source.as_str())
                {
                    r.error = Some(error.clone());
                }
                return;
            }
            for m in sample
                .metrics
                .iter()
                .filter(|m| m.label.is_none() && SUT_SHOWN.contains(&m.name.as_str()))
            {
                let found = s.sut_rows.iter_mut().find(|r| {
                    r.inspector == inspector
                        && r.source == sample.source.as_str()
                        && r.metric == m.name
                });
                match found {
                    Some(r) => {
                        r.per_second = (m.kind == MetricKind::Counter
                            && at_us > r.at_us
                            && m.value >= r.value)
                            .then(|| (m.value - r.value) * 1e6 / (at_us - r.at_us) as f64);
                        r.value = m.value;
                        r.at_us = at_us;
                        r.error = None;
                    }
                    None => s.sut_rows.push(SutRow {
                        inspector: inspector.to_owned(),
                        source: sample.source.to_string(),
                        metric: m.name.clone(),
                        kind: m.kind,
                        value: m.value,
                        per_second: None,
                        at_us,
                        error: None,
                    }),
                }
            }
            s.sut_rows.sort_by_key(|r| {
                (
                    r.inspector.clone(),
                    r.source.clone(),
                    SUT_SHOWN.iter().position(|n| *n == r.metric),
                )
            });
        });
    }

    fn generator(&self, run: &RunId, verdict: &maestro_report::model::GeneratorVerdict) {
        self.with(|s| {
            if s.run.as_ref() == Some(run) {
                s.generator = Some(verdict.line());
            }
        });
    }

    fn finished(&self, run: &RunId, lost: u64, in_flight: i64) {
        self.with(|s| {
            if s.run.as_ref() == Some(run) {
                s.lost = Some(lost);
                s.in_flight = in_flight;
                s.step = Some(Step::Done);
                for w in &mut s.workers {
                    if matches!(w.state, WorkerState::Running | WorkerState::Ready) {
                        w.state = WorkerState::Done;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maestro_protocol::{Counters, Metric, SecondConnections, UnixMicros};

    fn spec() -> TestSpec {
        TestSpec {
            size: maestro_protocol::MessageSize::Fixed(64),
            consumers: 2,
            ..TestSpec::new(
                "mqtt://127.0.0.1:1883/t"
                    .parse()
                    .unwrap_or_else(|e| panic!("{e:?}")),
                500.0,
                std::time::Duration::from_secs(10),
            )
        }
    }

    fn peer(name: &str) -> PeerId {
        PeerId::new(name).unwrap_or_else(|e| panic!("{e}"))
    }

    fn run_id(s: &str) -> RunId {
        RunId::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn stats(run: &RunId, sent: u64, connected: u32) -> RunStats {
        RunStats {
            run: run.clone(),
            second: 0,
            interval_start_us: UnixMicros(0),
            interval_end_us: UnixMicros(1_000_000),
            counters: Counters {
                sent,
                received: sent * 2,
                ..Counters::default()
            },
            histograms: Default::default(),
            active_producers: 1,
            active_consumers: 2,
            connections: Some(SecondConnections {
                connected,
                opened: 0,
                failed: 0,
            }),
        }
    }

    #[test]
    fn a_run_fills_the_view_and_a_new_run_starts_it_afresh() {
        let v = LiveView::default();
        let r1 = run_id("r1");
        let (w1, w2) = (peer("w-1"), peer("w-2"));
        v.phase("01-fixed");
        v.run_begins(
            &r1,
            &spec(),
            &[(w1.clone(), "one".into()), (w2.clone(), "two".into())],
        );
        v.step(&r1, Step::Configuring);
        v.worker(&r1, &w1, WorkerState::Ready);
        v.worker_second(&r1, &w1, &stats(&r1, 100, 3));
        v.worker_second(&r1, &w1, &stats(&r1, 50, 3));
        // Another run's notes do not land here.
        v.worker_second(&run_id("other"), &w2, &stats(&r1, 7, 1));
        let second = Second {
            second: 0,
            sent: 150,
            received: 300,
            ..Second::default()
        };
        v.second(&r1, &second, &Percentiles::default(), 4, "pause");
        let s = v.snapshot();
        assert_eq!(s.phase.as_deref(), Some("01-fixed"));
        assert_eq!(s.step, Some(Step::Configuring));
        assert_eq!((s.sent, s.received, s.in_flight), (150, 300, 4));
        assert_eq!(s.faults_now, "pause");
        let one = &s.workers[0];
        assert_eq!(
            (one.state, one.sent, one.received, one.connected),
            (WorkerState::Running, 150, 300, Some(3))
        );
        assert_eq!(
            (s.workers[1].state, s.workers[1].sent),
            (WorkerState::Configuring, 0)
        );
        v.worker(&r1, &w2, WorkerState::Offline);
        v.finished(&r1, 2, 0);
        let s = v.snapshot();
        assert_eq!(s.lost, Some(2));
        assert_eq!(s.workers[0].state, WorkerState::Done);
        assert_eq!(s.workers[1].state, WorkerState::Offline);
        // The next phase's run: counts start over, the phase stays, the runs add up.
        v.phase("02-ramp");
        v.run_begins(&run_id("r2"), &spec(), &[(w1, "one".into())]);
        let s = v.snapshot();
        assert_eq!((s.sent, s.runs, s.lost), (0, 2, None));
        assert_eq!(s.phase.as_deref(), Some("02-ramp"));
        assert_eq!(s.window, Some(Duration::from_secs(10)));
    }

    #[test]
    fn sut_counters_get_a_rate_and_errors_mark_the_source() {
        let v = LiveView::default();
        let sample = |value: f64, error: Option<&str>| SourceSample {
            source: "broker".into(),
            kind: maestro_protocol::SourceKind::MqttSys,
            error: error.map(str::to_owned),
            metrics: if error.is_some() {
                vec![]
            } else {
                vec![
                    Metric::counter("messages_received", value),
                    Metric::gauge("bytes_stored", 1.0),
                ]
            },
        };
        v.sut("insp", 1_000_000, &sample(100.0, None));
        v.sut("insp", 3_000_000, &sample(1100.0, None));
        let rows = v.snapshot().sut_rows;
        assert_eq!(rows.len(), 1, "only the metrics the view shows: {rows:?}");
        assert_eq!(rows[0].per_second, Some(500.0));
        v.sut("insp", 4_000_000, &sample(0.0, Some("refused")));
        assert_eq!(v.snapshot().sut_rows[0].error.as_deref(), Some("refused"));
    }
}
