//! Test plans: TOML files that name the system under test, the workload (in OpenMessaging
//! Benchmark's vocabulary) and a sequence of phases with pass/fail conditions.
//!
//! ```toml
//! [plan]
//! name = "mqtt-qos1"
//! description = "QoS 1 through Mosquitto"
//! tags = ["mqtt", "ci"]
//! sut_name = "mosquitto"
//! sut_version = "2.0.11"
//!
//! [sut]
//! url = "mqtt://127.0.0.1:1884/bench?qos=1"     # mqtt://embedded/<topic> with --local
//!
//! [workload]
//! topics = 1
//! producers_per_topic = 2
//! subscriptions_per_topic = 2          # each gets every message (a subscriber, queue or group)
//! consumers_per_subscription = 1       # AMQP / Kafka: consumers of one queue / group share it
//! message_size = "~256"                # N or ~N bytes
//!
//! [conditions]                          # for every measured phase unless it overrides
//! response_time_p99_ms = 50.0
//! max_lost = 0
//!
//! [[phase]]
//! kind = "warmup"                      # excluded from verdicts
//! rate = 500
//! duration = "2s"
//!
//! [[phase]]
//! kind = "fixed"
//! rate = 2000
//! duration = "10s"
//! arrival = "poisson"                  # or bursts:..., sine:..., steps:... [default: uniform]
//!
//! [[phase]]
//! kind = "ramp"                        # step up until a step fails
//! start_rate = 1000
//! step = 1000
//! step_duration = "3s"
//! ceiling = 10000
//!
//! [[phase]]
//! kind = "max-rate"                    # highest rate that meets the conditions
//! start_rate = 1000
//! step_duration = "3s"
//! ceiling = 50000
//! precision = 0.05
//! ```
//!
//! Between phases the plan may pause: `cooldown = "2s"` under `[plan]`.
//!
//! Faults during a fixed phase, run by the inspector that declared the action in its own
//! `--faults` file (a plan only names it):
//!
//! ```toml
//! [[fault]]
//! at = "5s"                            # after the phase's start
//! duration = "2s"                      # healed by the inspector when it is over
//! action = "pause-broker"
//! phase = 2                            # which [[phase]] (1 = the first) [default: the
//!                                      # first fixed phase]
//! inspector = "sut-inspector"          # [default: the one that declared the action]
//! ```

use maestro_protocol::Arrival;
use maestro_protocol::{MessageSize, Scheme, SutUrl, TestSpec};
use maestro_report::PhaseKind;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A problem in a plan file, with where it is.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}:{line}: {field}: {reason}")]
pub struct PlanError {
    pub file: String,
    pub line: usize,
    pub field: String,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub plan: Metadata,
    pub sut: Sut,
    pub workload: Spanned<Workload>,
    #[serde(default)]
    pub conditions: Option<Spanned<Conditions>>,
    /// Regression thresholds for `maestro-cli compare` (command-line flags override them).
    #[serde(default)]
    pub compare: Option<CompareThresholds>,
    /// The phases as written, each field with its position; see [`RawPhase`].
    #[serde(rename = "phase", default)]
    pub phases: Vec<RawPhase>,
    /// A device fleet (MQTT) instead of the workload's producers: its clients send one
    /// message per interval each, so its phases are `fixed` (or `warmup`) at that rate.
    #[serde(default)]
    pub fleet: Option<Spanned<FleetTable>>,
    /// Faults, each during one fixed phase.
    #[serde(rename = "fault", default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Spanned<FaultTable>>,
}

/// A plan's `[[fault]]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultTable {
    #[serde(with = "duration")]
    pub at: Duration,
    #[serde(with = "duration")]
    pub duration: Duration,
    pub action: maestro_protocol::ActionName,
    /// 1-based index of the `[[phase]]` it happens in.
    #[serde(default)]
    pub phase: Option<usize>,
    #[serde(default)]
    pub inspector: Option<String>,
}

/// A plan's `[fleet]` table: the flags of `start --clients`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FleetTable {
    pub clients: u32,
    #[serde(with = "duration")]
    pub interval: Duration,
    #[serde(default, with = "opt_duration")]
    pub jitter: Option<Duration>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub subscribe: Option<String>,
    /// A JSON file with placeholders, relative to the plan file.
    #[serde(default)]
    pub payload_template: Option<PathBuf>,
    #[serde(default, with = "opt_duration")]
    pub churn: Option<Duration>,
    /// Clients connected per second across the cluster while configuring.
    #[serde(default)]
    pub connect_rate: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub sut_name: String,
    #[serde(default)]
    pub sut_version: String,
    /// A pause between phases.
    #[serde(default, with = "opt_duration")]
    pub cooldown: Option<Duration>,
    /// Workers the plan needs at least; checked before anything starts.
    #[serde(default = "one")]
    pub workers: u32,
    /// `"split"`: producers on the first half of the workers, consumers on the others
    /// (OpenMessaging Benchmark's `-x`); `"shared"` (default): every worker does both.
    #[serde(default)]
    pub roles: Option<RolesName>,
    /// Producers on the workers of this group and consumers on those of
    /// `consumer_group` (both or neither; not with `roles`).
    #[serde(default)]
    pub producer_group: Option<maestro_protocol::Segment>,
    #[serde(default)]
    pub consumer_group: Option<maestro_protocol::Segment>,
}

/// A plan's `roles`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RolesName {
    Shared,
    Split,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Sut {
    pub url: Spanned<String>,
    /// Consumers on another protocol of the same broker (`start --consumer-sut`): the
    /// producers speak `url`'s protocol, the consumers this one's.
    #[serde(default, alias = "consumer_sut")]
    pub consumer_url: Option<Spanned<String>>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    #[serde(default = "one")]
    pub topics: u32,
    /// Kafka: partitions of each topic the run creates.
    #[serde(default)]
    pub partitions_per_topic: Option<u32>,
    #[serde(default = "one")]
    pub producers_per_topic: u32,
    #[serde(default = "one")]
    pub subscriptions_per_topic: u32,
    #[serde(default = "one")]
    pub consumers_per_subscription: u32,
    /// `N` or `~N` bytes (a number is N).
    #[serde(default = "default_size")]
    pub message_size: SizeValue,
    /// A file whose bytes are every message's content (repeated to the size), with the
    /// first 32 bytes replaced by maestro's header; relative to the plan file.
    #[serde(default)]
    pub payload_file: Option<PathBuf>,
    /// Kafka message keys: none, round_robin or random.
    #[serde(default)]
    pub key_distribution: Option<String>,
    /// Excluded from each measured phase's numbers, at its start.
    #[serde(default, with = "opt_duration")]
    pub warmup: Option<Duration>,
    /// A backlog test in each measured run (OpenMessaging Benchmark's
    /// consumerBacklogSizeGB, in GiB): consumers are held until this much waits in the
    /// SUT, then resumed while producers go on. AMQP and Kafka.
    #[serde(default)]
    pub consumer_backlog_size_gb: Option<f64>,
}

fn default_size() -> SizeValue {
    SizeValue::Bytes(256)
}

/// A size written as a number or as a string (`"~256"`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(u32),
    Text(String),
}

/// How much worse a new run may be than its baseline before `compare` fails: the results
/// model's thresholds, so that the plan's `[compare]` table and the results folder share
/// one type.
pub use maestro_report::Thresholds as CompareThresholds;

/// Pass/fail conditions. Every field is optional; a phase's own conditions override the
/// plan's field by field.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    pub response_time_p50_ms: Option<f64>,
    pub response_time_p90_ms: Option<f64>,
    pub response_time_p99_ms: Option<f64>,
    pub response_time_p999_ms: Option<f64>,
    pub response_time_max_ms: Option<f64>,
    /// Messages lost (0 by default when the SUT URL asks for a reliable mode).
    pub max_lost: Option<u64>,
    /// Errors per message sent.
    pub max_error_rate: Option<f64>,
    /// Achieved send rate as a fraction of the offered rate (for example 0.95).
    pub min_achieved_fraction: Option<f64>,
    /// The most messages that may wait in the SUT at the end of any second (consumers
    /// keep up): `max_backlog` in the summary.
    pub max_backlog: Option<u64>,
    /// The deepest queue an inspector saw (`queue_depth`, any queue).
    pub sut_max_queue_depth: Option<f64>,
    /// The largest consumer-group lag an inspector saw (`consumer_lag`).
    pub sut_max_consumer_lag: Option<f64>,
    /// The most memory an inspector saw the SUT use (`memory_bytes`), MiB.
    pub sut_max_memory_mb: Option<f64>,
    /// A run the tool itself limited (`generator.bound` in the summary) fails, unless
    /// this is `false`: such a run measured maestro, not the SUT, and a max-rate search
    /// must find the SUT's knee, never the tool's. Absent: true.
    pub fail_when_generator_bound: Option<bool>,
}

impl Conditions {
    /// `self`, with `over`'s fields where `over` sets them.
    pub fn overridden_by(&self, over: Option<&Conditions>) -> Conditions {
        let Some(o) = over else {
            return self.clone();
        };
        Conditions {
            response_time_p50_ms: o.response_time_p50_ms.or(self.response_time_p50_ms),
            response_time_p90_ms: o.response_time_p90_ms.or(self.response_time_p90_ms),
            response_time_p99_ms: o.response_time_p99_ms.or(self.response_time_p99_ms),
            response_time_p999_ms: o.response_time_p999_ms.or(self.response_time_p999_ms),
            response_time_max_ms: o.response_time_max_ms.or(self.response_time_max_ms),
            max_lost: o.max_lost.or(self.max_lost),
            max_error_rate: o.max_error_rate.or(self.max_error_rate),
            min_achieved_fraction: o.min_achieved_fraction.or(self.min_achieved_fraction),
            max_backlog: o.max_backlog.or(self.max_backlog),
            sut_max_queue_depth: o.sut_max_queue_depth.or(self.sut_max_queue_depth),
            sut_max_consumer_lag: o.sut_max_consumer_lag.or(self.sut_max_consumer_lag),
            sut_max_memory_mb: o.sut_max_memory_mb.or(self.sut_max_memory_mb),
            fail_when_generator_bound: o
                .fail_when_generator_bound
                .or(self.fail_when_generator_bound),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Phase {
    /// Load before the measured phases; never judged.
    Warmup {
        rate: f64,
        #[serde(with = "duration")]
        duration: Duration,
        #[serde(default, skip_serializing_if = "Arrival::is_uniform")]
        arrival: Arrival,
    },
    /// One rate for a duration (or a count).
    Fixed {
        /// 0 when `at_knee`.
        rate: f64,
        /// The rate is the knee of the max-rate phase before this one.
        #[serde(default)]
        at_knee: bool,
        #[serde(default, with = "opt_duration")]
        duration: Option<Duration>,
        #[serde(default)]
        count: Option<u64>,
        #[serde(default)]
        conditions: Option<Conditions>,
        #[serde(default, skip_serializing_if = "Arrival::is_uniform")]
        arrival: Arrival,
    },
    /// Steps from `start_rate` by `step` up to `ceiling`; stops at the first failing step.
    Ramp {
        start_rate: f64,
        step: f64,
        #[serde(with = "duration")]
        step_duration: Duration,
        ceiling: f64,
        #[serde(default)]
        conditions: Option<Conditions>,
        #[serde(default, skip_serializing_if = "Arrival::is_uniform")]
        arrival: Arrival,
    },
    /// No load for `duration`, while the SUT settles (queues empty, compactions finish).
    /// Every run already drains its own consumers; this is a pause between phases.
    Drain {
        #[serde(with = "duration")]
        duration: Duration,
    },
    /// Doubles from `start_rate` until a probe fails (or `ceiling`), then bisects until
    /// the bracket is narrower than `precision` (a fraction) of the passing rate.
    MaxRate {
        start_rate: f64,
        #[serde(with = "duration")]
        step_duration: Duration,
        ceiling: f64,
        #[serde(default = "default_precision")]
        precision: f64,
        #[serde(default)]
        conditions: Option<Conditions>,
        #[serde(default, skip_serializing_if = "Arrival::is_uniform")]
        arrival: Arrival,
    },
}

fn default_precision() -> f64 {
    0.05
}

impl Phase {
    pub fn kind(&self) -> PhaseKind {
        match self {
            Phase::Warmup { .. } => PhaseKind::Warmup,
            Phase::Drain { .. } => PhaseKind::Drain,
            Phase::Fixed { .. } => PhaseKind::Fixed,
            Phase::Ramp { .. } => PhaseKind::Ramp,
            Phase::MaxRate { .. } => PhaseKind::MaxRate,
        }
    }

    /// How the phase's messages arrive (uniform for a drain).
    pub fn arrival(&self) -> &Arrival {
        static UNIFORM: Arrival = Arrival::Uniform;
        match self {
            Phase::Drain { .. } => &UNIFORM,
            Phase::Warmup { arrival, .. }
            | Phase::Fixed { arrival, .. }
            | Phase::Ramp { arrival, .. }
            | Phase::MaxRate { arrival, .. } => arrival,
        }
    }

    pub fn conditions(&self) -> Option<&Conditions> {
        match self {
            Phase::Warmup { .. } | Phase::Drain { .. } => None,
            Phase::Fixed { conditions, .. }
            | Phase::Ramp { conditions, .. }
            | Phase::MaxRate { conditions, .. } => conditions.as_ref(),
        }
    }
}

/// A duration written for people (`"10s"`, `"1m 30s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HumanDuration(#[serde(with = "duration")] pub Duration);

/// One `[[phase]]` table as written: every field a phase of any kind takes, each with its
/// position in the file. This is the phase schema, declared once: serde checks names and
/// types against it (an unknown or mistyped field is an error at its own line, named by
/// its path), and [`RawPhase::phase`] destructures it completely into the [`Phase`] that
/// runs, so a field added here must be placed there (the compiler says so). serde's
/// internally tagged enums cannot keep positions, hence this flat form.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPhase {
    pub kind: Spanned<PhaseKind>,
    #[serde(default)]
    pub rate: Option<Spanned<f64>>,
    #[serde(default)]
    pub duration: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    pub count: Option<Spanned<u64>>,
    #[serde(default)]
    pub start_rate: Option<Spanned<f64>>,
    #[serde(default)]
    pub step: Option<Spanned<f64>>,
    #[serde(default)]
    pub step_duration: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    pub ceiling: Option<Spanned<f64>>,
    #[serde(default)]
    pub precision: Option<Spanned<f64>>,
    /// A fixed phase at the knee of the max-rate phase before it, instead of a `rate`.
    #[serde(default)]
    pub at_knee: Option<Spanned<bool>>,
    #[serde(default)]
    pub conditions: Option<Spanned<Conditions>>,
    /// How messages arrive: `poisson`, `bursts:period=1s`, ... (see `--arrival`).
    #[serde(default)]
    pub arrival: Option<Spanned<Arrival>>,
}

/// Why a phase table does not make a phase: where, which field, what is wrong.
type PhaseProblem = (std::ops::Range<usize>, &'static str, String);

impl RawPhase {
    /// A phase of `kind` with no field set (for plans made from other files).
    pub fn of(kind: PhaseKind) -> Self {
        Self {
            kind: Spanned::new(0..0, kind),
            rate: None,
            duration: None,
            count: None,
            start_rate: None,
            step: None,
            step_duration: None,
            ceiling: None,
            precision: None,
            at_knee: None,
            conditions: None,
            arrival: None,
        }
    }

    /// Where the field is written (the kind's position for a missing one).
    pub fn span_of<T>(&self, field: &Option<Spanned<T>>) -> std::ops::Range<usize> {
        field
            .as_ref()
            .map_or_else(|| self.kind.span(), Spanned::span)
    }

    /// A field this kind does not take is a problem at that field.
    fn check_fields(&self) -> Result<(), PhaseProblem> {
        // Destructured completely: a field added to the table must be listed here.
        let RawPhase {
            kind,
            rate,
            duration,
            count,
            start_rate,
            step,
            step_duration,
            ceiling,
            precision,
            at_knee,
            conditions,
            arrival,
        } = self;
        let kind_name = kind.get_ref().as_str();
        let unused: Vec<(&'static str, Option<std::ops::Range<usize>>)> = vec![
            ("rate", rate.as_ref().map(Spanned::span)),
            ("duration", duration.as_ref().map(Spanned::span)),
            ("count", count.as_ref().map(Spanned::span)),
            ("start_rate", start_rate.as_ref().map(Spanned::span)),
            ("step", step.as_ref().map(Spanned::span)),
            ("step_duration", step_duration.as_ref().map(Spanned::span)),
            ("ceiling", ceiling.as_ref().map(Spanned::span)),
            ("precision", precision.as_ref().map(Spanned::span)),
            ("at_knee", at_knee.as_ref().map(Spanned::span)),
            ("conditions", conditions.as_ref().map(Spanned::span)),
            ("arrival", arrival.as_ref().map(Spanned::span)),
        ];
        let takes: &[&str] = match kind.get_ref() {
            PhaseKind::Warmup => &["rate", "duration", "arrival"],
            PhaseKind::Drain => &["duration"],
            PhaseKind::Fixed => &[
                "rate",
                "at_knee",
                "duration",
                "count",
                "conditions",
                "arrival",
            ],
            PhaseKind::Ramp => &[
                "start_rate",
                "step",
                "step_duration",
                "ceiling",
                "conditions",
                "arrival",
            ],
            PhaseKind::MaxRate => &[
                "start_rate",
                "step_duration",
                "ceiling",
                "precision",
                "conditions",
                "arrival",
            ],
        };
        if let Some((name, Some(at))) = unused
            .into_iter()
            .find(|(n, at)| at.is_some() && !takes.contains(n))
        {
            return Err((
                at,
                name,
                format!(
                    "not a field of a {kind_name} phase (it takes: kind, {})",
                    takes.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// The phase this table describes; a field its kind does not take, or a missing one,
    /// is a problem at that field.
    pub fn phase(&self) -> Result<Phase, PhaseProblem> {
        let RawPhase {
            kind,
            rate,
            duration,
            count,
            start_rate,
            step,
            step_duration,
            ceiling,
            precision,
            at_knee,
            conditions,
            arrival,
        } = self;
        let kind_name = kind.get_ref().as_str();
        let missing = |name: &'static str| -> PhaseProblem {
            (
                kind.span(),
                name,
                format!("missing for a {kind_name} phase"),
            )
        };
        let need = |name: &'static str, v: &Option<Spanned<f64>>| {
            v.as_ref()
                .map(|v| *v.get_ref())
                .ok_or_else(|| missing(name))
        };
        let need_duration = |name: &'static str, v: &Option<Spanned<HumanDuration>>| {
            v.as_ref()
                .map(|v| v.get_ref().0)
                .ok_or_else(|| missing(name))
        };
        self.check_fields()?;
        let conditions = conditions.as_ref().map(|c| c.get_ref().clone());
        let arrival_span = arrival.as_ref().map_or_else(|| kind.span(), Spanned::span);
        let arrival = arrival
            .as_ref()
            .map_or(Arrival::Uniform, |a| a.get_ref().clone());
        let rate_of = |duration: Option<Duration>| -> Result<f64, PhaseProblem> {
            implied_rate(&arrival, rate, duration)?.map_or_else(|| need("rate", rate), Ok)
        };
        let searched = |what: &str| unsearchable(&arrival, &arrival_span, what);
        Ok(match kind.get_ref() {
            PhaseKind::Warmup => {
                let duration = need_duration("duration", duration)?;
                Phase::Warmup {
                    rate: rate_of(Some(duration))?,
                    duration,
                    arrival: arrival.clone(),
                }
            }
            PhaseKind::Drain => Phase::Drain {
                duration: need_duration("duration", duration)?,
            },
            PhaseKind::Fixed => {
                let at_knee = at_knee.as_ref().is_some_and(|k| *k.get_ref());
                if at_knee && let Some(r) = rate {
                    return Err((
                        r.span(),
                        "rate",
                        "a phase at_knee takes its rate from the max-rate phase before it".into(),
                    ));
                }
                if at_knee {
                    searched("at_knee")?;
                }
                let duration = duration.as_ref().map(|d| d.get_ref().0);
                Phase::Fixed {
                    rate: if at_knee { 0.0 } else { rate_of(duration)? },
                    at_knee,
                    duration,
                    count: count.as_ref().map(|c| *c.get_ref()),
                    conditions,
                    arrival: arrival.clone(),
                }
            }
            PhaseKind::Ramp => {
                searched("ramp")?;
                Phase::Ramp {
                    start_rate: need("start_rate", start_rate)?,
                    step: need("step", step)?,
                    step_duration: need_duration("step_duration", step_duration)?,
                    ceiling: need("ceiling", ceiling)?,
                    conditions,
                    arrival: arrival.clone(),
                }
            }
            PhaseKind::MaxRate => {
                searched("max-rate")?;
                Phase::MaxRate {
                    start_rate: need("start_rate", start_rate)?,
                    step_duration: need_duration("step_duration", step_duration)?,
                    ceiling: need("ceiling", ceiling)?,
                    precision: precision
                        .as_ref()
                        .map_or_else(default_precision, |p| *p.get_ref()),
                    conditions,
                    arrival: arrival.clone(),
                }
            }
        })
    }
}

/// The rate of a phase whose arrival fixes its own mean (sine, steps): that mean, or a
/// written rate that agrees with it; `None` when the rate is the phase's to give.
fn implied_rate(
    arrival: &Arrival,
    rate: &Option<Spanned<f64>>,
    duration: Option<Duration>,
) -> Result<Option<f64>, PhaseProblem> {
    let Some(mean) = duration.and_then(|d| arrival.mean_rate(d)) else {
        return Ok(None);
    };
    match rate {
        Some(r) if (r.get_ref() - mean).abs() > 1e-9 * mean.max(1.0) => Err((
            r.span(),
            "rate",
            format!(
                "arrival {arrival} has a mean of {mean:.3} msg/s over this phase: leave the rate out, or give that"
            ),
        )),
        _ => Ok(Some(mean)),
    }
}

/// A phase that searches for its rate (`what`: ramp, max-rate, at_knee) cannot take an
/// arrival that fixes its own.
fn unsearchable(
    arrival: &Arrival,
    span: &std::ops::Range<usize>,
    what: &str,
) -> Result<(), PhaseProblem> {
    if arrival.mean_rate(Duration::from_secs(1)).is_some() {
        return Err((
            span.clone(),
            "arrival",
            format!(
                "arrival {arrival} fixes its own rate; a {what} phase sets the rate (use uniform, poisson or bursts without messages)"
            ),
        ));
    }
    Ok(())
}

mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("{s:?} is not a duration like \"10s\": {e}"))
        })
    }
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

mod opt_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| {
                humantime::parse_duration(&s).map_err(|e| {
                    serde::de::Error::custom(format!("{s:?} is not a duration like \"10s\": {e}"))
                })
            })
            .transpose()
    }
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

/// A loaded, validated plan.
#[derive(Debug, Clone)]
pub struct LoadedPlan {
    pub path: PathBuf,
    pub text: String,
    pub plan: Plan,
    /// The phases, in order.
    pub phases: Vec<Phase>,
    /// The payload file's bytes, base64.
    pub payload: Option<String>,
    /// The `[fleet]` table, with its templates checked, and its spec part.
    pub fleet: Option<(
        crate::fleet::Fleet,
        maestro_protocol::FleetSpec,
        Option<f64>,
    )>,
    /// Per phase (by index), its faults.
    pub faults: std::collections::BTreeMap<usize, Vec<crate::faults::FaultPlan>>,
}

/// `workload.topics`, `phase[1].rate`: the path of a field, without the toml crate's
/// private names for positions.
fn field_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Map { key } if key.starts_with("$__") => {}
            Segment::Map { key } if out.rsplit('.').next() == Some(key.as_str()) => {}
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    if out.is_empty() { "(plan)".into() } else { out }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl LoadedPlan {
    /// Reads and validates a plan; every error names the file, the line and the field.
    pub fn load(path: &Path) -> Result<Self, PlanError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PlanError {
            file: file.clone(),
            line: 0,
            field: "(file)".into(),
            reason: e.to_string(),
        })?;
        Self::parse(&file, text)
    }

    pub fn parse(file: &str, text: String) -> Result<Self, PlanError> {
        let de = toml::Deserializer::new(&text);
        let plan: Plan = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = field_path(e.path());
            let e = e.into_inner();
            let line = e.span().map_or(0, |s| line_of(&text, s.start));
            let message = e.message().to_owned();
            PlanError {
                file: file.to_owned(),
                line,
                field,
                reason: message,
            }
        })?;
        let mut loaded = LoadedPlan {
            path: PathBuf::from(file),
            text,
            plan,
            phases: Vec::new(),
            payload: None,
            fleet: None,
            faults: Default::default(),
        };
        loaded.payload = loaded.read_payload()?;
        loaded.fleet = loaded.read_fleet()?;
        loaded.phases = loaded.check_phases()?;
        loaded.faults = loaded.check_faults()?;
        loaded.validate()?;
        Ok(loaded)
    }

    fn error(
        &self,
        span: std::ops::Range<usize>,
        field: &str,
        reason: impl Into<String>,
    ) -> PlanError {
        PlanError {
            file: self.path.display().to_string(),
            line: line_of(&self.text, span.start),
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    /// Where `key` is written inside `span` (for a precise line), else the span's start.
    fn key_span(&self, span: std::ops::Range<usize>, key: &str) -> std::ops::Range<usize> {
        let section = &self.text[span.clone()];
        section
            .lines()
            .scan(span.start, |pos, line| {
                let start = *pos;
                *pos += line.len() + 1;
                Some((start, line))
            })
            .find(|(_, line)| {
                // The key itself, not a longer one that starts with it (`step_duration`).
                line.trim_start()
                    .strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            })
            .map_or(span, |(start, _)| start..start)
    }

    /// Reads the workload's payload file (relative to the plan), at most 256 KiB.
    fn read_payload(&self) -> Result<Option<String>, PlanError> {
        use base64::Engine;
        let ws = self.plan.workload.span();
        let Some(file) = &self.plan.workload.get_ref().payload_file else {
            return Ok(None);
        };
        let path = self.path.parent().unwrap_or(Path::new(".")).join(file);
        let bytes = std::fs::read(&path).map_err(|e| {
            self.error(
                self.key_span(ws.clone(), "payload_file"),
                "workload.payload_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        if bytes.is_empty() || bytes.len() > 256 * 1024 {
            return Err(self.error(
                self.key_span(ws.clone(), "payload_file"),
                "workload.payload_file",
                format!(
                    "{} has {} bytes; use 1 byte to 256 KiB",
                    path.display(),
                    bytes.len()
                ),
            ));
        }
        Ok(Some(
            base64::engine::general_purpose::STANDARD.encode(bytes),
        ))
    }

    /// The `[fleet]` table as a fleet (reading its payload template relative to the plan).
    #[allow(clippy::type_complexity)]
    fn read_fleet(
        &self,
    ) -> Result<
        Option<(
            crate::fleet::Fleet,
            maestro_protocol::FleetSpec,
            Option<f64>,
        )>,
        PlanError,
    > {
        let Some(table) = &self.plan.fleet else {
            return Ok(None);
        };
        let (t, span) = (table.get_ref(), table.span());
        let payload = match &t.payload_template {
            Some(file) => {
                let path = self.path.parent().unwrap_or(Path::new(".")).join(file);
                Some(std::fs::read_to_string(&path).map_err(|e| {
                    self.error(
                        self.key_span(span.clone(), "payload_template"),
                        "fleet.payload_template",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?)
            }
            None => None,
        };
        let fleet = crate::fleet::Fleet {
            clients: t.clients,
            interval: t.interval,
            jitter: t.jitter.unwrap_or_default(),
            client_id: t
                .client_id
                .clone()
                .unwrap_or_else(|| "maestro-{run}-{i}".into()),
            topic: t.topic.clone(),
            subscribe: t.subscribe.clone(),
            payload,
            churn: t.churn,
        };
        let sut = self
            .plan
            .sut
            .url
            .get_ref()
            .parse::<SutUrl>()
            .map_err(|e| self.error(self.plan.sut.url.span(), "sut.url", e.to_string()))?;
        let built = fleet
            .build(&sut)
            .map_err(|e| self.error(span.clone(), "fleet", e.to_string()))?;
        Ok(Some((fleet, built, t.connect_rate)))
    }

    /// The phases to run, from their tables as written.
    /// Places each `[[fault]]` in its phase: a fixed phase, and within its send window.
    fn check_faults(
        &self,
    ) -> Result<std::collections::BTreeMap<usize, Vec<crate::faults::FaultPlan>>, PlanError> {
        let mut out: std::collections::BTreeMap<usize, Vec<crate::faults::FaultPlan>> =
            Default::default();
        for (i, f) in self.plan.faults.iter().enumerate() {
            let (t, span) = (f.get_ref(), f.span());
            let field = |name: &str| format!("fault[{i}].{name}");
            let index = match t.phase {
                Some(0) => {
                    return Err(self.error(
                        self.key_span(span.clone(), "phase"),
                        &field("phase"),
                        "phases count from 1",
                    ));
                }
                Some(n) => n - 1,
                None => self
                    .phases
                    .iter()
                    .position(|p| matches!(p, Phase::Fixed { .. }))
                    .ok_or_else(|| {
                        self.error(
                            span.clone(),
                            &field("phase"),
                            "the plan has no fixed phase for it",
                        )
                    })?,
            };
            let window = match self.phases.get(index) {
                Some(Phase::Fixed {
                    rate,
                    duration,
                    count,
                    ..
                }) => duration.unwrap_or_else(|| {
                    Duration::from_secs_f64(count.unwrap_or(0) as f64 / rate.max(f64::MIN_POSITIVE))
                }),
                Some(other) => {
                    return Err(self.error(
                        self.key_span(span.clone(), "phase"),
                        &field("phase"),
                        format!(
                            "phase {} is {}: faults go in fixed phases",
                            index + 1,
                            other.kind()
                        ),
                    ));
                }
                None => {
                    return Err(self.error(
                        self.key_span(span.clone(), "phase"),
                        &field("phase"),
                        format!("the plan has {} phases", self.phases.len()),
                    ));
                }
            };
            if t.duration.is_zero() {
                return Err(self.error(
                    self.key_span(span.clone(), "duration"),
                    &field("duration"),
                    "must be above 0",
                ));
            }
            if t.at + t.duration > window {
                return Err(self.error(
                    self.key_span(span.clone(), "at"),
                    &field("at"),
                    format!(
                        "{} + {} ends after the phase's {}",
                        humantime::format_duration(t.at),
                        humantime::format_duration(t.duration),
                        humantime::format_duration(window)
                    ),
                ));
            }
            out.entry(index)
                .or_default()
                .push(crate::faults::FaultPlan {
                    action: t.action.clone(),
                    at: t.at,
                    duration: t.duration,
                    inspector: t.inspector.clone(),
                });
        }
        Ok(out)
    }

    fn check_phases(&self) -> Result<Vec<Phase>, PlanError> {
        self.plan
            .phases
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                raw.phase().map_err(|(at, name, reason)| {
                    self.error(at, &format!("phase[{i}].{name}"), reason)
                })
            })
            .collect()
    }

    fn validate(&self) -> Result<(), PlanError> {
        let p = &self.plan;
        self.validate_roles()?;
        self.validate_workload()?;
        let ws = p.workload.span();
        let sut = self.sut(None)?;
        self.validate_consumer_sut(&sut)?;
        self.size().map_err(|reason| {
            self.error(
                self.key_span(ws.clone(), "message_size"),
                "workload.message_size",
                reason,
            )
        })?;
        if p.phases.is_empty() {
            return Err(self.error(0..0, "phase", "a plan needs at least one [[phase]]"));
        }
        if let Some(n) = p.compare.and_then(|c| c.history)
            && (n as usize) < maestro_report::history::MIN_HISTORY
        {
            return Err(self.error(
                0..0,
                "compare.history",
                format!(
                    "{n}: a noise band needs at least {} earlier runs",
                    maestro_report::history::MIN_HISTORY
                ),
            ));
        }
        for (i, (phase, raw)) in self.phases.iter().zip(&p.phases).enumerate() {
            self.validate_phase(i, phase, raw, &sut)?;
        }
        Ok(())
    }

    /// `workers`, the name, and who produces and consumes.
    fn validate_roles(&self) -> Result<(), PlanError> {
        let p = &self.plan;
        if p.plan.workers == 0 {
            return Err(self.error(
                self.key_span(0..self.text.len(), "workers"),
                "plan.workers",
                "must be at least 1",
            ));
        }
        if p.plan.name.trim().is_empty() {
            return Err(self.error(0..0, "plan.name", "must not be empty"));
        }
        let groups = (&p.plan.producer_group, &p.plan.consumer_group);
        if groups.0.is_some() != groups.1.is_some() {
            let missing = if groups.0.is_some() {
                "consumer_group"
            } else {
                "producer_group"
            };
            return Err(self.error(
                self.key_span(
                    0..self.text.len(),
                    if groups.0.is_some() {
                        "producer_group"
                    } else {
                        "consumer_group"
                    },
                ),
                &format!("plan.{missing}"),
                "producer_group and consumer_group go together",
            ));
        }
        if groups.0.is_some() && p.plan.roles.is_some() {
            return Err(self.error(
                self.key_span(0..self.text.len(), "roles"),
                "plan.roles",
                "give either roles or producer_group and consumer_group",
            ));
        }
        Ok(())
    }

    /// The workload against what the SUT's protocol can express.
    fn validate_workload(&self) -> Result<(), PlanError> {
        let p = &self.plan;
        // The plan's own URL first (the workload's options are checked below, each at
        // its own line), then the URL with them.
        let url = self
            .plan
            .sut
            .url
            .get_ref()
            .parse::<SutUrl>()
            .map_err(|e| self.error(p.sut.url.span(), "sut.url", e.to_string()))?;
        let scheme = url.scheme();
        // With its options: MQTT consumers compete with `shared=true`.
        let can = url.capabilities();
        let w = p.workload.get_ref();
        let ws = p.workload.span();
        for (field, value) in [
            ("topics", w.topics),
            ("producers_per_topic", w.producers_per_topic),
            ("subscriptions_per_topic", w.subscriptions_per_topic),
            ("consumers_per_subscription", w.consumers_per_subscription),
        ] {
            if value == 0 {
                return Err(self.error(
                    self.key_span(ws.clone(), field),
                    &format!("workload.{field}"),
                    "must be at least 1",
                ));
            }
        }
        // What each protocol can express (see ARCHITECTURE.md, subscriptions).
        if !can.competing_consumers && w.consumers_per_subscription > 1 {
            return Err(self.error(self.key_span(ws.clone(), "consumers_per_subscription"), "workload.consumers_per_subscription",
                format!("{} subscribers each get every message: use subscriptions_per_topic for more consumers{}", scheme.title(),
                    if scheme == maestro_protocol::Scheme::Mqtt { ", or a shared subscription (shared=true)" } else { "" })));
        }
        if !can.several_subscriptions && w.subscriptions_per_topic > 1 {
            return Err(self.error(self.key_span(ws.clone(), "subscriptions_per_topic"), "workload.subscriptions_per_topic",
                format!("{} runs have one queue per topic that its consumers share: use consumers_per_subscription", scheme.title())));
        }
        if let Some(gib) = w.consumer_backlog_size_gb {
            let span = self.key_span(ws.clone(), "consumer_backlog_size_gb");
            let field = "workload.consumer_backlog_size_gb";
            if !(gib.is_finite() && gib * 1024.0 * 1024.0 * 1024.0 >= 1.0) {
                return Err(self.error(
                    span,
                    field,
                    format!("{gib} must be a size in GiB above 0"),
                ));
            }
            if !can.backlog {
                return Err(self.error(span, field,
                    format!("a backlog needs a broker that keeps messages for consumers that do not read ({}), not {}", Scheme::names_where(|c| c.backlog), scheme.title())));
            }
        }
        if w.partitions_per_topic.is_some() && !can.partitions {
            return Err(self.error(
                self.key_span(ws.clone(), "partitions_per_topic"),
                "workload.partitions_per_topic",
                format!(
                    "{} topics have no partitions (these do: {})",
                    scheme.title(),
                    Scheme::names_where(|c| c.partitions)
                ),
            ));
        }
        if let Some(k) = &w.key_distribution
            && (!can.keys || !["none", "round_robin", "random"].contains(&k.as_str()))
        {
            return Err(self.error(
                self.key_span(ws.clone(), "key_distribution"),
                "workload.key_distribution",
                format!(
                    "{k:?}: one of none, round_robin, random, for a protocol whose messages have keys ({}; this is {})",
                    Scheme::names_where(|c| c.keys),
                    scheme.title()
                ),
            ));
        }
        Ok(())
    }

    /// One phase, and the spec its steps build.
    fn validate_phase(
        &self,
        i: usize,
        phase: &Phase,
        raw: &RawPhase,
        sut: &SutUrl,
    ) -> Result<(), PlanError> {
        let span = raw.kind.span();
        let field = |name: &str| format!("phase[{i}].{name}");
        let positive = |name: &str, v: f64, at: &Option<Spanned<f64>>| -> Result<(), PlanError> {
            if !(v.is_finite() && v > 0.0) {
                return Err(self.error(
                    raw.span_of(at),
                    &field(name),
                    format!("{v} must be a rate above 0"),
                ));
            }
            Ok(())
        };
        match phase {
            Phase::Drain { duration } => {
                if duration.is_zero() {
                    return Err(self.error(
                        raw.span_of(&raw.duration),
                        &field("duration"),
                        "must be longer than 0",
                    ));
                }
            }
            Phase::Warmup { rate, duration, .. } => {
                positive("rate", *rate, &raw.rate)?;
                if duration.is_zero() {
                    return Err(self.error(
                        raw.span_of(&raw.duration),
                        &field("duration"),
                        "must be longer than 0",
                    ));
                }
            }
            Phase::Fixed {
                rate,
                at_knee,
                duration,
                count,
                ..
            } => {
                if *at_knee {
                    if !self.phases[..i]
                        .iter()
                        .any(|p| matches!(p, Phase::MaxRate { .. }))
                    {
                        return Err(self.error(
                            raw.span_of(&raw.at_knee),
                            &field("at_knee"),
                            "no max-rate phase before this one to take the knee of",
                        ));
                    }
                    if count.is_some() {
                        return Err(self.error(
                            raw.span_of(&raw.count),
                            &field("count"),
                            "a phase at_knee runs for a duration (its rate is not known before)",
                        ));
                    }
                } else {
                    positive("rate", *rate, &raw.rate)?;
                }
                if duration.is_some() == count.is_some() {
                    return Err(self.error(
                        span.clone(),
                        &field("duration"),
                        "give exactly one of duration and count",
                    ));
                }
            }
            Phase::Ramp {
                start_rate,
                step,
                ceiling,
                step_duration,
                ..
            } => {
                positive("start_rate", *start_rate, &raw.start_rate)?;
                positive("step", *step, &raw.step)?;
                if ceiling < start_rate {
                    return Err(self.error(
                        raw.span_of(&raw.ceiling),
                        &field("ceiling"),
                        format!("{ceiling} is below start_rate {start_rate}"),
                    ));
                }
                if step_duration.is_zero() {
                    return Err(self.error(
                        raw.span_of(&raw.step_duration),
                        &field("step_duration"),
                        "must be longer than 0",
                    ));
                }
            }
            Phase::MaxRate {
                start_rate,
                ceiling,
                precision,
                step_duration,
                ..
            } => {
                positive("start_rate", *start_rate, &raw.start_rate)?;
                if ceiling < start_rate {
                    return Err(self.error(
                        raw.span_of(&raw.ceiling),
                        &field("ceiling"),
                        format!("{ceiling} is below start_rate {start_rate}"),
                    ));
                }
                if !(*precision > 0.0 && *precision < 1.0) {
                    return Err(self.error(
                        raw.span_of(&raw.precision),
                        &field("precision"),
                        format!("{precision} must be between 0 and 1 (a fraction)"),
                    ));
                }
                if step_duration.is_zero() {
                    return Err(self.error(
                        raw.span_of(&raw.step_duration),
                        &field("step_duration"),
                        "must be longer than 0",
                    ));
                }
            }
        }
        self.validate_fleet_phase(i, phase, raw)?;
        // The spec each step builds must be valid (size vs header, warm-up vs duration).
        let spec = self.spec(sut, 1.0, Some(Duration::from_secs(3600)), None);
        if let Err(e) = spec.validate() {
            return Err(self.error(span.clone(), &field("kind"), e.to_string()));
        }
        self.validate_arrival(i, phase, raw, sut)
    }

    /// A shaped arrival needs a duration (a count has no window to shape) and no fleet
    /// jitter: the spec the phase builds with it must be valid.
    fn validate_arrival(
        &self,
        i: usize,
        phase: &Phase,
        raw: &RawPhase,
        sut: &SutUrl,
    ) -> Result<(), PlanError> {
        if phase.arrival().is_uniform() {
            return Ok(());
        }
        let (rate, duration, count) = match phase {
            Phase::Fixed {
                rate,
                duration,
                count,
                ..
            } => (rate.max(1.0), *duration, *count),
            Phase::Warmup { rate, duration, .. } => (*rate, Some(*duration), None),
            _ => (1.0, Some(Duration::from_secs(3600)), None),
        };
        let mut spec = self.spec(sut, rate, duration, count);
        spec.arrival = phase.arrival().clone();
        spec.validate().map_err(|e| {
            self.error(
                raw.span_of(&raw.arrival),
                &format!("phase[{i}].arrival"),
                e.to_string(),
            )
        })
    }

    /// A fleet sends one message per client per interval: its phases are fixed or warmup
    /// at exactly that rate.
    fn validate_fleet_phase(
        &self,
        i: usize,
        phase: &Phase,
        raw: &RawPhase,
    ) -> Result<(), PlanError> {
        let Some((fleet, _, _)) = &self.fleet else {
            return Ok(());
        };
        let span = raw.kind.span();
        let field = |name: &str| format!("phase[{i}].{name}");
        let rate = match phase {
            Phase::Fixed { rate, .. } | Phase::Warmup { rate, .. } => Some(*rate),
            _ => None,
        };
        match rate {
            None => {
                return Err(self.error(
                    span.clone(),
                    &field("kind"),
                    "a fleet sends at one message per client per interval: its phases are fixed or warmup",
                ));
            }
            Some(r) if (r - fleet.rate()).abs() > fleet.rate() * 1e-3 => {
                return Err(self.error(
                    raw.span_of(&raw.rate),
                    &field("rate"),
                    format!(
                        "is {r}, but the fleet sends {} msg/s ({} clients, one message per {})",
                        fleet.rate(),
                        fleet.clients,
                        humantime::format_duration(fleet.interval)
                    ),
                ));
            }
            Some(_) => {}
        }
        Ok(())
    }

    pub fn size(&self) -> Result<MessageSize, String> {
        match &self.plan.workload.get_ref().message_size {
            SizeValue::Bytes(n) => Ok(MessageSize::Fixed(*n)),
            SizeValue::Text(t) => t.parse::<MessageSize>().map_err(|e| e.to_string()),
        }
    }

    /// The SUT URL with the workload's protocol options added (and `embedded` replaced
    /// by `embedded_host` when running locally), parsed; an error points at `sut.url`.
    pub fn sut(&self, embedded_host: Option<&str>) -> Result<SutUrl, PlanError> {
        self.sut_text(embedded_host)
            .parse()
            .map_err(|e: maestro_protocol::SutUrlError| {
                self.error(self.plan.sut.url.span(), "sut.url", e.to_string())
            })
    }

    /// The consumers' SUT URL (`[sut] consumer_url`), parsed, with `embedded` replaced
    /// as in [`Self::sut`]; an error points at `sut.consumer_url`.
    pub fn consumer_sut(&self, embedded_host: Option<&str>) -> Result<Option<SutUrl>, PlanError> {
        let Some(raw) = &self.plan.sut.consumer_url else {
            return Ok(None);
        };
        with_embedded_host(raw.get_ref(), embedded_host)
            .parse()
            .map(Some)
            .map_err(|e: maestro_protocol::SutUrlError| {
                self.error(raw.span(), "sut.consumer_url", e.to_string())
            })
    }

    /// The consumers' URL against the producers' one: a pair the broker maps, and no
    /// fleet (a fleet's devices are both sides at once).
    fn validate_consumer_sut(&self, sut: &SutUrl) -> Result<(), PlanError> {
        let Some(consumers) = self.consumer_sut(None)? else {
            return Ok(());
        };
        let span = self
            .plan
            .sut
            .consumer_url
            .as_ref()
            .map_or(0..0, |c| c.span());
        if self.plan.fleet.is_some() {
            return Err(self.error(
                span,
                "sut.consumer_url",
                "a [fleet] cannot have consumers on another protocol (its devices both publish and subscribe)",
            ));
        }
        maestro_protocol::sut::Crossing::of(sut, &consumers)
            .map(|_| ())
            .map_err(|e| self.error(span, "sut.consumer_url", e.to_string()))
    }

    fn sut_text(&self, embedded_host: Option<&str>) -> String {
        let mut url = with_embedded_host(self.plan.sut.url.get_ref(), embedded_host);
        let w = self.plan.workload.get_ref();
        let mut extra = Vec::new();
        if let Some(p) = w.partitions_per_topic {
            extra.push(format!("partitions={p}"));
        }
        if let Some(k) = &w.key_distribution {
            extra.push(format!("key={k}"));
        }
        for e in extra {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&e);
        }
        url
    }

    /// The test spec of one run at `rate`, for `duration` or `count` messages.
    pub fn spec(
        &self,
        sut: &SutUrl,
        rate: f64,
        duration: Option<Duration>,
        count: Option<u64>,
    ) -> TestSpec {
        let w = self.plan.workload.get_ref();
        let mut spec = TestSpec {
            sut: sut.clone(),
            rate,
            duration_ms: duration.map(|d| d.as_millis() as u64),
            count,
            warmup_ms: w.warmup.map_or(0, |d| d.as_millis() as u64),
            size: self.size().unwrap_or(MessageSize::Fixed(256)),
            producers: w.topics * w.producers_per_topic,
            consumers: w.topics * w.subscriptions_per_topic * w.consumers_per_subscription,
            topics: w.topics,
            payload: self.payload.clone(),
            connect_rate: None,
            fleet: None,
            marks_ms: Vec::new(),
            consumer_backlog_bytes: w
                .consumer_backlog_size_gb
                .map(|gib| (gib * 1024.0 * 1024.0 * 1024.0) as u64),
            consumer_sut: None,
            subscriptions: None,
            arrival: Arrival::Uniform,
        };
        spec.subscriptions = self.subscriptions_for(sut);
        if let Some((fleet, built, connect_rate)) = &self.fleet {
            fleet.shape(&mut spec, built.clone());
            spec.connect_rate = *connect_rate;
        }
        spec
    }

    /// The spec's subscriptions per topic when its consumers speak `consumers`: where
    /// they compete, each of the workload's subscriptions is a queue or group of its own;
    /// otherwise every consumer already is a subscription.
    pub fn subscriptions_for(&self, consumers: &SutUrl) -> Option<u32> {
        let s = self.plan.workload.get_ref().subscriptions_per_topic;
        (s > 1 && consumers.consumers_compete()).then_some(s)
    }

    /// Which workers produce and which consume.
    pub fn roles(&self) -> crate::run::Roles {
        let p = &self.plan.plan;
        match (&p.producer_group, &p.consumer_group, p.roles) {
            (Some(producers), Some(consumers), _) => crate::run::Roles::Groups {
                producers: producers.clone(),
                consumers: consumers.clone(),
            },
            (_, _, Some(RolesName::Split)) => crate::run::Roles::Split,
            _ => crate::run::Roles::Shared,
        }
    }

    /// The plan's `[compare]` thresholds (none set: the defaults apply).
    pub fn compare_thresholds(&self) -> CompareThresholds {
        self.plan.compare.unwrap_or_default()
    }

    /// The conditions a phase is judged by: the plan's, overridden by the phase's, and
    /// no loss by default when the SUT's options make it reliable.
    pub fn conditions(&self, phase: &Phase, sut: &SutUrl) -> Conditions {
        let base = self
            .plan
            .conditions
            .as_ref()
            .map(|c| c.get_ref().clone())
            .unwrap_or_default();
        let mut c = base.overridden_by(phase.conditions());
        if c.max_lost.is_none() && sut.reliable() {
            c.max_lost = Some(0);
        }
        c
    }
}

/// `url` with the host `embedded` replaced by `host` (a local run's embedded broker).
fn with_embedded_host(url: &str, host: Option<&str>) -> String {
    match host {
        Some(host) => url.replacen("://embedded", &format!("://{host}"), 1),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[plan]
name = "t"
cooldown = "1s"

[sut]
url = "mqtt://127.0.0.1:1884/x?qos=1"

[workload]
topics = 2
producers_per_topic = 2
subscriptions_per_topic = 2
message_size = "~300"
warmup = "1s"

[conditions]
response_time_p99_ms = 20.0

[[phase]]
kind = "warmup"
rate = 100
duration = "2s"

[[phase]]
kind = "fixed"
rate = 1000
duration = "5s"
conditions = { response_time_p99_ms = 50.0 }

[[phase]]
kind = "max-rate"
start_rate = 1000
step_duration = "3s"
ceiling = 100000
"#;

    #[test]
    fn a_good_plan_loads() {
        let p = LoadedPlan::parse("good.toml", GOOD.into()).unwrap();
        assert_eq!(p.plan.phases.len(), 3);
        let fixed = &p.phases[1];
        let sut = p.sut(None).unwrap();
        let spec = p.spec(&sut, 1000.0, Some(Duration::from_secs(5)), None);
        assert_eq!((spec.producers, spec.consumers, spec.topics), (4, 4, 2));
        assert_eq!(spec.size, MessageSize::Around(300));
        let c = p.conditions(fixed, &sut);
        assert_eq!(c.response_time_p99_ms, Some(50.0), "phase overrides plan");
        assert_eq!(c.max_lost, Some(0), "QoS 1 means no loss by default");
        let qos0 = "mqtt://h/x".parse().unwrap();
        assert_eq!(p.conditions(fixed, &qos0).max_lost, None, "QoS 0 may lose");
    }

    fn error(text: &str) -> PlanError {
        LoadedPlan::parse("bad.toml", text.into()).unwrap_err()
    }

    #[test]
    fn consumers_on_another_protocol_are_checked_where_the_plan_names_them() {
        let mixed = GOOD.replace(
            "url = \"mqtt://127.0.0.1:1884/x?qos=1\"",
            "url = \"mqtt://127.0.0.1:1884/x?qos=1\"\nconsumer_url = \"amqp://127.0.0.1:5672/%2f\"",
        );
        let p = LoadedPlan::parse("mixed.toml", mixed.clone()).unwrap();
        let consumers = p.consumer_sut(None).unwrap().expect("a consumers' URL");
        assert_eq!(consumers.scheme().as_str(), "amqp");
        assert_eq!(p.consumer_sut(Some("10.0.0.1")).unwrap(), Some(consumers));
        // The flag's spelling works as a key too.
        let alias = mixed.replace("consumer_url", "consumer_sut");
        assert!(LoadedPlan::parse("alias.toml", alias).is_ok());
        // A pair the broker does not map, named at its line.
        let e = error(&mixed.replace("amqp://127.0.0.1:5672/%2f", "kafka://127.0.0.1:9092"));
        assert_eq!((e.field.as_str(), e.line), ("sut.consumer_url", 8), "{e}");
        assert!(e.reason.contains("mqtt -> kafka"), "{e}");
        // Another broker.
        let e = error(&mixed.replace("amqp://127.0.0.1", "amqp://10.1.1.1"));
        assert_eq!(e.field, "sut.consumer_url", "{e}");
        // Not a URL.
        let e = error(&mixed.replace("amqp://127.0.0.1:5672/%2f", "nope://x"));
        assert_eq!((e.field.as_str(), e.line), ("sut.consumer_url", 8), "{e}");
        let no = GOOD;
        assert_eq!(
            LoadedPlan::parse("no.toml", no.into())
                .unwrap()
                .consumer_sut(None)
                .unwrap(),
            None
        );
    }

    #[test]
    fn roles_come_from_the_plan_and_groups_go_together() {
        use crate::run::Roles;
        let p = LoadedPlan::parse("good.toml", GOOD.into()).unwrap();
        assert_eq!(p.roles(), Roles::Shared);
        let split = GOOD.replace("cooldown = \"1s\"", "roles = \"split\"");
        let p = LoadedPlan::parse("split.toml", split).unwrap();
        assert_eq!(p.roles(), Roles::Split);
        let groups = GOOD.replace(
            "cooldown = \"1s\"",
            "producer_group = \"load\"\nconsumer_group = \"sink\"",
        );
        let p = LoadedPlan::parse("groups.toml", groups).unwrap();
        assert!(matches!(p.roles(), Roles::Groups { producers, consumers }
            if producers.as_str() == "load" && consumers.as_str() == "sink"));
        let half = GOOD.replace("cooldown = \"1s\"", "producer_group = \"load\"");
        let e = error(&half);
        assert_eq!(
            (e.field.as_str(), e.line),
            ("plan.consumer_group", 4),
            "{e}"
        );
        let both = GOOD.replace(
            "cooldown = \"1s\"",
            "roles = \"split\"\nproducer_group = \"a\"\nconsumer_group = \"b\"",
        );
        assert_eq!(error(&both).field, "plan.roles");
        let bad = GOOD.replace("cooldown = \"1s\"", "roles = \"half\"");
        assert!(error(&bad).reason.contains("half"), "{}", error(&bad));
    }

    #[test]
    fn phases_take_an_arrival_and_refuse_one_they_cannot_shape() {
        let base = "[plan]\nname = \"a\"\n[sut]\nurl = \"mqtt://h:1/t\"\n[workload]\n[[phase]]\n";
        let load = |phase: &str| LoadedPlan::parse("a.toml", format!("{base}{phase}"));
        let p = load("kind = \"fixed\"\nrate = 10\nduration = \"10s\"\narrival = \"poisson\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.phases[0].arrival(), &Arrival::Poisson);
        // Steps fix their own mean: the rate may be left out.
        let p =
            load("kind = \"fixed\"\nduration = \"30s\"\narrival = \"steps:100:10s,1000:20s\"\n")
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(p.phases[0], Phase::Fixed { rate, .. } if (rate - 700.0).abs() < 1e-9),
            "{:?}",
            p.phases[0]
        );
        let p = load("kind = \"max-rate\"\nstart_rate = 10\nstep_duration = \"2s\"\nceiling = 100\narrival = \"bursts:period=1s\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(p.phases[0].arrival(), Arrival::Bursts { .. }));
        for (phase, field, says) in [
            (
                "kind = \"fixed\"\nrate = 500\nduration = \"30s\"\narrival = \"steps:100:10s,1000:20s\"\n",
                "phase[0].rate",
                "mean of 700.000",
            ),
            (
                "kind = \"ramp\"\nstart_rate = 10\nstep = 10\nstep_duration = \"2s\"\nceiling = 100\narrival = \"sine:low=1,high=9,period=1s\"\n",
                "phase[0].arrival",
                "fixes its own rate",
            ),
            (
                "kind = \"fixed\"\nrate = 10\ncount = 100\narrival = \"poisson\"\n",
                "phase[0].arrival",
                "needs a duration",
            ),
            (
                "kind = \"fixed\"\nrate = 10\nduration = \"1s\"\narrival = \"bursts\"\n",
                "phase[0].arrival",
                "is not uniform",
            ),
            (
                "kind = \"drain\"\nduration = \"1s\"\narrival = \"poisson\"\n",
                "phase[0].arrival",
                "not a field of a drain phase",
            ),
        ] {
            let e = load(phase).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains(says), "{phase}: {e}");
        }
    }

    #[test]
    fn faults_go_in_fixed_phases_within_their_window() {
        let base = "[plan]\nname = \"f\"\n[sut]\nurl = \"mqtt://h:1/t\"\n[workload]\n[[phase]]\nkind = \"warmup\"\nrate = 10\nduration = \"2s\"\n[[phase]]\nkind = \"fixed\"\nrate = 10\nduration = \"10s\"\n";
        let ok = LoadedPlan::parse(
            "f.toml",
            format!("{base}[[fault]]\nat = \"5s\"\nduration = \"2s\"\naction = \"pause\"\n"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.faults[&1][0].at, Duration::from_secs(5));
        for (fault, says) in [
            (
                "phase = 1\nat = \"1s\"\nduration = \"1s\"",
                "phase 1 is warmup: faults go in fixed phases",
            ),
            (
                "at = \"9s\"\nduration = \"2s\"",
                "9s + 2s ends after the phase's 10s",
            ),
            (
                "phase = 3\nat = \"1s\"\nduration = \"1s\"",
                "the plan has 2 phases",
            ),
            ("at = \"1s\"\nduration = \"0s\"", "must be above 0"),
        ] {
            let e = error(&format!("{base}[[fault]]\naction = \"pause\"\n{fault}\n"));
            assert!(e.to_string().contains(says), "{fault}: {e}");
        }
    }

    const FLEET: &str = r#"
[plan]
name = "devices"

[sut]
url = "mqtt://127.0.0.1:1883/d?qos=1"

[workload]

[fleet]
clients = 3000
interval = "30s"
jitter = "1s"
client_id = "dev-{i}"
topic = "tenant/{i}/attrs"
connect_rate = 500

[[phase]]
kind = "fixed"
rate = 100
duration = "2m"
"#;

    #[test]
    fn a_fleet_plan_makes_fleet_specs() {
        let p = LoadedPlan::parse("fleet.toml", FLEET.into()).unwrap();
        let sut = p.sut(None).unwrap();
        let spec = p.spec(&sut, 100.0, Some(Duration::from_secs(120)), None);
        assert_eq!((spec.producers, spec.topics, spec.rate), (3000, 1, 100.0));
        assert_eq!(spec.connect_rate, Some(500.0));
        let f = spec.fleet.as_ref().unwrap();
        assert_eq!((f.client_id.as_str(), f.jitter_ms), ("dev-{i}", 1000));
        spec.validate().unwrap();
        // A phase rate other than clients / interval, a ramp, a bad template: errors
        // that name the line and the field.
        let e = error(&FLEET.replace("rate = 100", "rate = 200"));
        assert!(e.to_string().contains("fleet sends 100 msg/s"), "{e}");
        assert_eq!(e.line, line(FLEET, "rate = 100"));
        let e = error(&FLEET.replace(
            "kind = \"fixed\"\nrate = 100\nduration = \"2m\"",
            "kind = \"ramp\"\nstart_rate = 10\nstep = 10\nstep_duration = \"5s\"\nceiling = 100",
        ));
        assert!(e.to_string().contains("fixed or warmup"), "{e}");
        let e = error(&FLEET.replace("dev-{i}", "dev-{x}"));
        assert!(e.to_string().contains("{x}") && e.field == "fleet", "{e}");
    }

    /// The 1-based line of the first line containing `needle`.
    fn line(text: &str, needle: &str) -> usize {
        text.lines().position(|l| l.contains(needle)).unwrap() + 1
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let text = GOOD.replace(
            "producers_per_topic = 2",
            "producers_per_topic = 2\nproducers_per_topik = 3",
        );
        let e = error(&text);
        assert_eq!(
            (e.line, e.field.as_str()),
            (line(&text, "topik"), "workload.producers_per_topik"),
            "{e}"
        );
        assert!(
            e.to_string().starts_with(&format!("bad.toml:{}: ", e.line)),
            "{e}"
        );
        let text = GOOD.replace("rate = 1000\n", "rate = \"fast\"\n");
        let e = error(&text);
        assert_eq!(e.line, line(&text, "\"fast\""), "{e}");
        let text = GOOD.replace("ceiling = 100000", "ceiling = 10");
        let e = error(&text);
        assert_eq!(
            (e.line, e.field.as_str()),
            (line(&text, "ceiling = 10"), "phase[2].ceiling"),
            "{e}"
        );
        let text = GOOD.replace("subscriptions_per_topic = 2", "subscriptions_per_topic = 0");
        let e = error(&text);
        assert_eq!(
            (e.line, e.field.as_str()),
            (
                line(&text, "subscriptions_per_topic"),
                "workload.subscriptions_per_topic"
            ),
            "{e}"
        );
        let e = error(&GOOD.replace("duration = \"5s\"", "duration = \"soon\""));
        assert!(e.reason.contains("soon"), "{e}");
        let e = error(&GOOD.replace("message_size = \"~300\"", "message_size = 8"));
        assert!(e.reason.contains("header"), "{e}");
        let e = error(&GOOD.replace("kind = \"fixed\"", "kind = \"sprint\""));
        assert!(e.reason.contains("sprint"), "{e}");
        let e = error(&GOOD.replace(
            "subscriptions_per_topic = 2",
            "consumers_per_subscription = 2",
        ));
        assert!(e.reason.contains("MQTT"), "{e}");
    }

    #[test]
    fn phase_errors_come_from_the_schema_with_their_own_line() {
        let check = |text: &str, needle: &str, field: &str, reason: &str| {
            let e = error(text);
            assert_eq!(
                (e.line, e.field.as_str()),
                (line(text, needle), field),
                "{e}"
            );
            assert!(e.reason.contains(reason), "{e}");
        };
        // A mistyped value: its path and its line.
        let text = GOOD.replace("rate = 1000\n", "rate = \"fast\"\n");
        check(&text, "\"fast\"", "phase[1].rate", "invalid type");
        // An unknown field: named with its phase.
        let text = GOOD.replace("duration = \"5s\"", "duration = \"5s\"\nstepp = 3");
        check(&text, "stepp", "phase[1].stepp", "unknown field");
        // A field of another kind.
        let text = GOOD.replace("duration = \"5s\"", "duration = \"5s\"\nceiling = 9");
        check(
            &text,
            "ceiling = 9",
            "phase[1].ceiling",
            "not a field of a fixed phase",
        );
        // A missing field: at the phase's kind.
        let text = GOOD.replace("ceiling = 100000\n", "");
        check(
            &text,
            "kind = \"max-rate\"",
            "phase[2].ceiling",
            "missing for a max-rate phase",
        );
        // `step` and `step_duration`: each error at its own key, never the other's.
        let ramp = GOOD.replace(
            "kind = \"max-rate\"\nstart_rate = 1000\nstep_duration = \"3s\"",
            "kind = \"ramp\"\nstart_rate = 1000\nstep = 500\nstep_duration = \"0s\"",
        );
        check(
            &ramp,
            "step_duration = \"0s\"",
            "phase[2].step_duration",
            "longer than 0",
        );
        let ramp = ramp
            .replace("step = 500", "step = -1")
            .replace("step_duration = \"0s\"", "step_duration = \"2s\"");
        check(&ramp, "step = -1", "phase[2].step", "above 0");
    }
}
