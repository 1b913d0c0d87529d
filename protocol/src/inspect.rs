//! What an inspector reads from the system under test: one [`SutStats`] event per second,
//! holding a sample of every source it watches (a broker's own counters, the host, a
//! process).
//!
//! Counters are cumulative, exactly as the SUT reports them (the controller differences
//! them into per-second rates); gauges are current values. A source that did not answer
//! has an `error` and no metrics: a gap, never zeros.

use crate::time::UnixMicros;
use serde::{Deserialize, Serialize};

/// A source's name as the user gave it on the inspector (`--source NAME=URL`): a short
/// label such as `mqtt-sys`, `rabbitmq`, `host`.
pub type SourceName = String;

/// What kind of system a source reads.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// An MQTT broker's `$SYS` topics (Mosquitto).
    MqttSys,
    /// The RabbitMQ management HTTP API.
    Rabbitmq,
    /// A Kafka cluster's offsets and consumer-group lag (admin API).
    Kafka,
    /// The host the inspector runs on.
    Host,
    /// One process on the inspector's host (CPU, RSS).
    Process,
}

impl SourceKind {
    pub const ALL: [SourceKind; 5] = [
        SourceKind::MqttSys,
        SourceKind::Rabbitmq,
        SourceKind::Kafka,
        SourceKind::Host,
        SourceKind::Process,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::MqttSys => "mqtt-sys",
            SourceKind::Rabbitmq => "rabbitmq",
            SourceKind::Kafka => "kafka",
            SourceKind::Host => "host",
            SourceKind::Process => "process",
        }
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SourceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SourceKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown source kind {s:?}: use one of {}",
                    SourceKind::ALL.map(|k| k.as_str()).join(", ")
                )
            })
    }
}

/// A counter only grows (until the SUT restarts); a gauge is a current value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    Counter,
    Gauge,
}

/// Metric names with a meaning across sources (conditions and cross-checks use them).
pub mod names {
    /// Messages the SUT took in from publishers (counter).
    pub const MESSAGES_RECEIVED: &str = "messages_received";
    /// Messages the SUT handed to subscribers (counter).
    pub const MESSAGES_SENT: &str = "messages_sent";
    /// Messages waiting in a queue (gauge; label: the queue, or none for the total).
    pub const QUEUE_DEPTH: &str = "queue_depth";
    /// Messages a consumer group has not committed yet (gauge; label: `group/topic`).
    pub const CONSUMER_LAG: &str = "consumer_lag";
    /// Memory the SUT's process uses (gauge, bytes).
    pub const MEMORY_BYTES: &str = "memory_bytes";
    /// Client connections open at the SUT (gauge).
    pub const CLIENTS_CONNECTED: &str = "clients_connected";
}

/// One value read from a source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Lowercase with underscores, unit last (`memory_bytes`, `cpu_percent`).
    pub name: String,
    /// Which instance (a queue, `topic/partition`, `group/topic`); absent for a total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub kind: MetricKind,
    pub value: f64,
}

impl Metric {
    pub fn counter(name: &str, value: f64) -> Self {
        Self {
            name: name.to_owned(),
            label: None,
            kind: MetricKind::Counter,
            value,
        }
    }

    pub fn gauge(name: &str, value: f64) -> Self {
        Self {
            name: name.to_owned(),
            label: None,
            kind: MetricKind::Gauge,
            value,
        }
    }

    pub fn labelled(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
}

/// A source's reading at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSample {
    pub source: SourceName,
    pub kind: SourceKind,
    /// Why the source gave nothing this time (unreachable, refused, stale); then
    /// `metrics` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub metrics: Vec<Metric>,
}

/// An inspector's event, once a second: the sample of every source with news (a source
/// whose SUT publishes its figures on a slower beat is left out until they change; one
/// that fails is in, with its error), stamped with the
/// inspector's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SutStats {
    /// When the samples were taken (inspector's clock).
    pub at_us: UnixMicros,
    pub samples: Vec<SourceSample>,
}

/// Request to an inspector: the latest figures of each of its sources, answered with a
/// [`SutStats`] stamped with the time of its latest sample. A run takes them as the
/// baseline of the SUT's counters when it starts sooner than the next event.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SutRequest {}

/// The most metrics one source puts in a sample (queues, partitions and groups beyond it
/// are summed into the totals only), so an event stays far below the note limit.
pub const MAX_METRICS_PER_SOURCE: usize = 500;
