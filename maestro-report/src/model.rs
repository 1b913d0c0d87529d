//! The results folder's files as types: each is written and read through these, and only
//! these. Every field is required when reading (a missing or mistyped one is an error that
//! names the file and the field, never a silent 0); `schema_version` says which shape a
//! file has.
//!
//! ```text
//! results/<run-id>/                   one run (`maestro-cli start`)
//!   summary.json                      RunSummary
//!   spec.json                         the TestSpec as run
//!   timeseries.csv                    one SecondRow per run second
//!   <worker>.hlog                     HdrHistogram interval log per worker
//! results/<plan>-<run-id>/            one plan (`maestro-cli run`)
//!   plan.toml, environment.json       the plan as run; Environment
//!   summary.json                      PlanResult
//!   NN-<kind>/summary.json            PhaseResult
//!   NN-<kind>/<run-id>/...            each probe's run folder, as above
//!   junit.xml, report.html
//! ```

use maestro_protocol::ErrorCount;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The shape of the JSON files written by this build. A file with another version is
/// refused with a message that names it.
pub const SCHEMA_VERSION: u32 = 1;

/// Percentiles of one latency, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    /// Absent from results written before it was added (never read as 0).
    #[serde(default)]
    pub p95: Option<u64>,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p95: Some(h.value_at_quantile(0.95)),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
        }
    }
}

/// One worker's part of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkerSummary {
    pub id: String,
    pub name: String,
    pub producers: usize,
    pub consumers: usize,
    pub sent: u64,
    pub received: u64,
    pub errors: u64,
    /// False when the worker never delivered its result (it disconnected).
    pub reported: bool,
}

/// The generator's own verdict on a run: whether maestro, not the SUT, limited it, why,
/// and the figures behind it. A run the tool limited measured the tool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GeneratorVerdict {
    /// True when the tool limited the run (any of `reasons`).
    pub bound: bool,
    /// Each reason in words, with its figure and limit (empty when not bound).
    pub reasons: Vec<String>,
    /// The producers' lateness against their schedule, µs.
    pub send_lag_p50_us: u64,
    pub send_lag_p99_us: u64,
    pub send_lag_p999_us: u64,
    /// The SUT's part, for comparison: receive minus actual send time, p99, µs.
    pub service_time_p99_us: u64,
    /// Messages the schedule had due that were never sent, as a fraction of those due.
    pub unsent_fraction: f64,
    /// Messages sent late because the client had no room for them when due and the
    /// producer waited 1 ms or more for it (the SUT's window or socket stayed full: its
    /// back-pressure), as a fraction of those sent (absent from results written before it
    /// was added).
    #[serde(default)]
    pub held_back_fraction: f64,
    /// Per worker: its data-plane threads while its producers sent.
    pub workers: Vec<GeneratorWorker>,
}

impl GeneratorVerdict {
    /// One line for people: `bound` and why, or the figures that say it was not.
    pub fn line(&self) -> String {
        let busiest = self
            .workers
            .iter()
            .map(|w| w.busy_max)
            .fold(0.0_f64, f64::max);
        let waited = self
            .workers
            .iter()
            .map(|w| w.waited_max)
            .fold(0.0_f64, f64::max);
        let mut figures = format!(
            "send lag p99 {} µs, busiest data-plane thread {:.0} %, waited for CPU {:.0} %",
            self.send_lag_p99_us,
            busiest * 100.0,
            waited * 100.0
        );
        if self.held_back_fraction > 0.0 {
            figures += &format!(
                ", {:.1} % held back by the SUT",
                self.held_back_fraction * 100.0
            );
        }
        if self.bound {
            format!(
                "BOUND: the tool limited this run ({}; {figures})",
                self.reasons.join("; ")
            )
        } else {
            format!("not bound ({figures})")
        }
    }
}

/// One worker's data-plane threads over a run (from the kernel's scheduler statistics).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GeneratorWorker {
    pub worker: String,
    pub threads: usize,
    /// CPU seconds the threads used, all together.
    pub cpu_s: f64,
    /// The busiest thread's CPU time as a fraction of the span (1.0: a whole core).
    pub busy_max: f64,
    /// The longest any thread waited for a CPU while ready to run, as a fraction of the
    /// span (other processes, a CPU quota).
    pub waited_max: f64,
    /// The longest mean wait for a CPU per wake-up of any thread, µs: what starvation
    /// added to each message (absent when the worker did not count wake-ups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_per_wake_us: Option<f64>,
}

/// How the workers' clocks were reconciled (from the controller's ping before the run).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClockSummary {
    /// Each participating worker's clock offset (how far ahead of the controller), µs.
    pub offsets_us: BTreeMap<String, i64>,
    /// The largest correction applied between a producer's and a consumer's worker, µs.
    pub max_offset_us: i64,
    /// The error bound of that correction (half of each worker's ping round trip), µs.
    pub error_bound_us: i64,
}

/// `summary.json` of one run; latencies in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RunSummary {
    pub schema_version: u32,
    pub run_id: String,
    /// The SUT URL without its password.
    pub sut: String,
    /// The consumers' SUT URL without its password, when they spoke another protocol
    /// (`--consumer-sut`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_sut: Option<String>,
    /// Subscriptions per topic, when the run's competing consumers had several (each
    /// got every message once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriptions: Option<u32>,
    /// How the messages arrived over time, when not on a uniform clock (`poisson`,
    /// `bursts:period=1s`, ...; `offered_rate` is its mean).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival: Option<String>,
    pub started_at: String,
    /// The measured send span in seconds: from the end of the warm-up until the producers
    /// stopped (the end of their window, or earlier when stopped).
    pub measured_s: f64,
    pub sent: u64,
    /// Messages the schedule had due by the end of the window that were never sent.
    pub unsent: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub errors: u64,
    /// Messages that were not maestro messages of this run.
    pub foreign: u64,
    /// The rate asked for (messages/s over all producers); 0 = as fast as possible.
    pub offered_rate: f64,
    /// Messages sent per second over the measured send span.
    pub achieved_rate: f64,
    /// achieved_rate / offered_rate; null when the offer was "as fast as possible".
    pub achieved_fraction: Option<f64>,
    /// Messages received per second over the measured send span (all consumers).
    pub receive_rate: f64,
    /// Payload bytes sent and received per second over the measured send span (absent
    /// from results written before they were added).
    #[serde(default)]
    pub achieved_bytes_rate: Option<f64>,
    #[serde(default)]
    pub receive_bytes_rate: Option<f64>,
    pub degraded: bool,
    pub degraded_reasons: Vec<String>,
    pub interrupted: bool,
    pub response_time_us: Percentiles,
    pub service_time_us: Percentiles,
    pub send_lag_us: Percentiles,
    /// From sending until the SUT acknowledged (MQTT PUBACK/PUBCOMP, AMQP publisher
    /// confirm, Kafka delivery report); absent without acknowledgements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_latency_us: Option<Percentiles>,
    /// TLS handshake times of the connections to the SUT; absent without TLS (and for
    /// Kafka, whose client does its handshakes out of sight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_handshake_us: Option<Percentiles>,
    /// Time from starting a connection until the SUT accepted the session (MQTT CONNACK;
    /// AMQP connection and channel open); absent when not measured (Kafka).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_us: Option<Percentiles>,
    /// Time from subscribing until the SUT confirmed it (MQTT SUBACK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe_us: Option<Percentiles>,
    /// Connections opened, lost and failed, and the connect ramp (fleets' own clients;
    /// absent for drivers that do not track them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<ConnectionSummary>,
    pub clock: ClockSummary,
    /// What inspectors read from the SUT during the run (absent without inspector
    /// sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sut_metrics: Option<crate::sut::SutSummary>,
    /// The most messages waiting in the SUT at the end of a run second (messages sent
    /// times the copies each should reach, minus messages received, over the seconds
    /// written): how far consumers fell behind. Absent from older results.
    #[serde(default)]
    pub max_backlog: Option<u64>,
    /// A backlog test's figures (absent for other runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<BacklogSummary>,
    /// The faults injected during the run, in plan order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<crate::sut::FaultSummary>,
    pub workers: Vec<WorkerSummary>,
    pub error_messages: Vec<ErrorCount>,
    /// Whether the tool itself limited the run (absent from results written before it
    /// was added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorVerdict>,
    /// Set when the summary was made from what a run's folder held after its controller
    /// ended mid-run (`maestro-cli report`), not from the workers' results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<Partial>,
}

/// What a partial summary is made of, and what it cannot know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Partial {
    /// In words: why it is partial and how its figures were made.
    pub reason: String,
    /// Seconds of the time series it was made from (0 when none was written).
    pub seconds: u32,
    /// Copies each message should reach (one per subscription): what `lost` is counted
    /// against.
    pub copies_per_message: f64,
    /// Seconds of warm-up, left out of rates and latencies.
    pub warmup_s: u32,
}

/// A backlog test (OpenMessaging Benchmark's `consumerBacklogSizeGB`): consumers were
/// held from the start until the backlog reached the target, then resumed while producers
/// went on. Times are run seconds, at the resolution of the per-second rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BacklogSummary {
    pub target_bytes: u64,
    /// Seconds from the start until the backlog reached the target and consumers were
    /// resumed; null when it never did within the run.
    pub built_s: Option<f64>,
    /// What was waiting then (copies, for fan-out), and its size.
    pub backlog_messages: Option<u64>,
    pub backlog_bytes: Option<u64>,
    /// Seconds from the resume until the consumers had caught up (the backlog back to
    /// what is in flight); null when they had not by the end of the run.
    pub catch_up_s: Option<f64>,
    /// Messages (and bytes) consumed per second while catching up.
    pub drain_rate: Option<f64>,
    pub drain_bytes_rate: Option<f64>,
}

/// What the run's clients did with their connections, over all workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ConnectionSummary {
    /// Connections opened, first ones and again.
    pub opened: u64,
    /// Of those, opened again after a drop or by churn.
    pub reconnects: u64,
    /// Connections the SUT or the network closed.
    pub dropped: u64,
    /// Closed and reopened on purpose (churn).
    pub churned: u64,
    /// Failed attempts by reason: refused, timeout, auth, tls, closed, other.
    pub failures: std::collections::BTreeMap<String, u64>,
    /// Messages that arrived on the clients' own subscriptions.
    pub received_by_clients: u64,
    /// MQTT 5 reason codes other than success the clients got, by packet and reason
    /// (`PUBACK NoMatchingSubscribers`, `PUBACK NotAuthorized`, `DISCONNECT ...`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub reason_codes: std::collections::BTreeMap<String, u64>,
    /// Time to establish the TCP connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_connect_us: Option<Percentiles>,
    /// Connections completed per wall-clock second, `(Unix second, count)` in order.
    pub per_second: Vec<(i64, u32)>,
    /// The most connections completed in one second.
    pub peak_per_s: u32,
}

impl ConnectionSummary {
    /// The connect ramp: connections per second over its full seconds (the first and last
    /// wall-clock seconds are partial; with fewer than 3 seconds, over all of them), and
    /// how many wall-clock seconds it touched.
    pub fn ramp(&self) -> Option<(f64, i64)> {
        let (first, last) = (self.per_second.first()?.0, self.per_second.last()?.0);
        let span = last - first + 1;
        let by_second: std::collections::BTreeMap<i64, u32> =
            self.per_second.iter().copied().collect();
        let counts: Vec<u64> = (first..=last)
            .map(|s| by_second.get(&s).map_or(0, |n| u64::from(*n)))
            .collect();
        let full = if counts.len() >= 3 {
            &counts[1..counts.len() - 1]
        } else {
            &counts[..]
        };
        Some((full.iter().sum::<u64>() as f64 / full.len() as f64, span))
    }
}

/// Below this fraction of the offered rate, the summary says the SUT (or the load
/// generator) did not keep up.
pub const SHORTFALL: f64 = 0.95;

impl RunSummary {
    /// The summary of run `run_id` against `sut` (already redacted), started at
    /// `started_at` (RFC 3339), in which nothing was sent, received or measured: a starting
    /// point that tests set the figures they need on, instead of spelling out every field.
    pub fn new(
        run_id: impl Into<String>,
        sut: impl Into<String>,
        started_at: impl Into<String>,
    ) -> Self {
        RunSummary {
            schema_version: SCHEMA_VERSION,
            run_id: run_id.into(),
            sut: sut.into(),
            consumer_sut: None,
            subscriptions: None,
            arrival: None,
            started_at: started_at.into(),
            measured_s: 0.0,
            sent: 0,
            unsent: 0,
            received: 0,
            lost: 0,
            duplicated: 0,
            out_of_order: 0,
            errors: 0,
            foreign: 0,
            offered_rate: 0.0,
            achieved_rate: 0.0,
            achieved_fraction: None,
            receive_rate: 0.0,
            achieved_bytes_rate: None,
            receive_bytes_rate: None,
            degraded: false,
            degraded_reasons: vec![],
            interrupted: false,
            response_time_us: Percentiles::default(),
            service_time_us: Percentiles::default(),
            send_lag_us: Percentiles::default(),
            publish_latency_us: None,
            tls_handshake_us: None,
            connect_us: None,
            subscribe_us: None,
            connections: None,
            clock: ClockSummary::default(),
            sut_metrics: None,
            backlog: None,
            max_backlog: None,
            faults: Vec::new(),
            workers: vec![],
            error_messages: vec![],
            generator: None,
            partial: None,
        }
    }

    /// A plain sentence when the achieved rate fell short of the offer.
    pub fn shortfall(&self) -> Option<String> {
        let f = self.achieved_fraction?;
        (f < SHORTFALL).then(|| {
            format!(
                "achieved {:.1}/s is {:.1} % of the offered {:.1}/s: the SUT did not keep up ({} messages due were never sent)",
                self.achieved_rate,
                f * 100.0,
                self.offered_rate,
                self.unsent
            )
        })
    }
}

/// One condition checked against one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Verdict {
    pub condition: String,
    pub limit: f64,
    pub actual: f64,
    pub passed: bool,
}

/// One run of a phase at one rate, and how it was judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Probe {
    pub rate: f64,
    pub passed: bool,
    pub verdicts: Vec<Verdict>,
    pub summary: RunSummary,
}

/// The kinds of plan phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PhaseKind {
    Warmup,
    Fixed,
    Ramp,
    MaxRate,
    Drain,
}

impl PhaseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseKind::Warmup => "warmup",
            PhaseKind::Fixed => "fixed",
            PhaseKind::Ramp => "ramp",
            PhaseKind::MaxRate => "max-rate",
            PhaseKind::Drain => "drain",
        }
    }

    /// Ramp and max-rate phases search for a knee.
    pub fn searches(self) -> bool {
        matches!(self, PhaseKind::Ramp | PhaseKind::MaxRate)
    }
}

impl std::fmt::Display for PhaseKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `NN-<kind>/summary.json`: one phase of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PhaseResult {
    pub index: usize,
    pub kind: PhaseKind,
    /// Warm-up phases are never judged.
    pub judged: bool,
    pub passed: bool,
    pub probes: Vec<Probe>,
    /// Ramp: the highest passing step; max-rate: the highest passing rate found.
    pub knee_rate: Option<f64>,
    /// Why the phase failed, one line per failed condition.
    pub reasons: Vec<String>,
}

impl PhaseResult {
    /// The folder of this phase inside its plan's folder.
    pub fn folder_name(&self) -> String {
        format!("{:02}-{}", self.index, self.kind)
    }

    /// The probe a phase is judged and compared by: the knee's for searches, else the last.
    pub fn deciding_probe(&self) -> Option<&Probe> {
        let knee = if self.kind.searches() {
            self.knee_rate
                .and_then(|k| self.probes.iter().find(|p| p.rate == k))
        } else {
            None
        };
        knee.or(self.probes.last())
    }
}

/// A worker as the controller saw it before a plan ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkerInfo {
    pub id: String,
    pub name: String,
    pub host: String,
    pub version: String,
    pub rtt_us: Option<i64>,
    pub clock_offset_us: Option<i64>,
    /// CPUs the worker could use (absent from results of older workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// The worker's kernel release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
}

/// `environment.json`: where a plan ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Environment {
    pub schema_version: u32,
    pub maestro_version: String,
    pub control_url: String,
    pub cluster: String,
    pub local: bool,
    /// The SUT URL without its password.
    pub sut: String,
    pub sut_name: String,
    pub sut_version: String,
    pub workers: Vec<WorkerInfo>,
}

/// The regression gate's thresholds (a plan's `[compare]`, or flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Response-time p50 and p99 may grow by this many percent (default 10).
    pub max_latency_increase_pct: Option<f64>,
    /// The achieved rate or knee may drop by this many percent (default 5).
    pub max_rate_decrease_pct: Option<f64>,
    /// Lost messages may grow by this many (default 0).
    pub max_lost_increase: Option<u64>,
    /// `run` fails (exit 1) when a judged phase is worse than the noise band of this plan's
    /// last N runs against the same SUT in the results folder (`compare --history N`);
    /// with fewer than 3 earlier runs it says so and judges nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<u32>,
}

/// `summary.json` of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PlanResult {
    pub schema_version: u32,
    pub plan: String,
    pub description: String,
    pub tags: Vec<String>,
    pub run_id: String,
    pub started_at: String,
    pub passed: bool,
    /// Stopped before its last phase (Ctrl-C, SIGTERM, `q` in the live view): the phases
    /// so far are its results.
    #[serde(default)]
    pub interrupted: bool,
    pub phases: Vec<PhaseResult>,
    pub environment: Environment,
    /// The plan's `[compare]` thresholds, for `compare`.
    pub compare: Thresholds,
}
