//! Test runs: the spec a user asks for, what each worker is assigned, and the notes of a
//! run's lifecycle (configure, start, stop, interval stats, result).

use crate::ids::{PeerId, SegmentError, validate_segment};
use crate::payload::HEADER_LEN;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A run's id; also a topic segment (SUT topics are named after it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunId(String);

impl RunId {
    pub fn new(value: impl Into<String>) -> Result<Self, SegmentError> {
        let value = value.into();
        validate_segment("run id", &value)?;
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RunId {
    type Error = SegmentError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<RunId> for String {
    fn from(value: RunId) -> String {
        value.0
    }
}

impl FromStr for RunId {
    type Err = SegmentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Message size: exactly `N` bytes, or `~N`: uniformly spread over N/2 ..= 3N/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageSize {
    Fixed(u32),
    Around(u32),
}

impl MessageSize {
    /// The smallest and largest size this produces.
    pub fn bounds(self) -> (u32, u32) {
        match self {
            MessageSize::Fixed(n) => (n, n),
            MessageSize::Around(n) => (n / 2, n + n / 2),
        }
    }
}

impl FromStr for MessageSize {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (around, digits) = match s.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let n: u32 = digits
            .trim()
            .parse()
            .map_err(|_| SpecError::Size(s.to_owned()))?;
        Ok(if around {
            MessageSize::Around(n)
        } else {
            MessageSize::Fixed(n)
        })
    }
}

impl fmt::Display for MessageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageSize::Fixed(n) => write!(f, "{n}"),
            MessageSize::Around(n) => write!(f, "~{n}"),
        }
    }
}

/// What a user asks for: one phase of a test. Rates and counts are totals for the whole
/// test, split across producers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    /// The system under test, with protocol options as query parameters.
    pub sut: String,
    /// Total messages per second over all producers; 0 means as fast as possible.
    pub rate: f64,
    /// How long producers send, in ms (exactly one of `duration_ms` and `count`).
    pub duration_ms: Option<u64>,
    /// How many messages producers send in total.
    pub count: Option<u64>,
    /// The first part of the run, excluded from latency and rates.
    pub warmup_ms: u64,
    pub size: MessageSize,
    pub producers: u32,
    pub consumers: u32,
    pub topics: u32,
    /// Message content, base64: repeated to each message's size, with the first 32 bytes
    /// replaced by the header (default: letters). From a plan's `payload_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("message size {0:?} is not N or ~N (a number of bytes)")]
    Size(String),
    #[error("message size {size} is below the {HEADER_LEN}-byte maestro header")]
    SizeTooSmall { size: String },
    #[error("rate {0} must be a finite number >= 0 (0 = as fast as possible)")]
    Rate(f64),
    #[error("give exactly one of duration and count")]
    Length,
    #[error("{what} must be at least 1, not 0")]
    Zero { what: &'static str },
    #[error("warm-up of {warmup_ms} ms is not shorter than the duration of {duration_ms} ms")]
    Warmup { warmup_ms: u64, duration_ms: u64 },
    #[error("as-fast-as-possible (rate 0) needs a duration, not a count")]
    MaxRateNeedsDuration,
    #[error("payload is not base64, or is empty or larger than 256 KiB")]
    Payload,
}

impl TestSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        let (min, _) = self.size.bounds();
        if (min as usize) < HEADER_LEN {
            return Err(SpecError::SizeTooSmall {
                size: self.size.to_string(),
            });
        }
        if !self.rate.is_finite() || self.rate < 0.0 {
            return Err(SpecError::Rate(self.rate));
        }
        match (self.duration_ms, self.count) {
            (Some(0), None) => return Err(SpecError::Zero { what: "duration" }),
            (None, Some(0)) => return Err(SpecError::Zero { what: "count" }),
            (Some(_), None) | (None, Some(_)) => {}
            _ => return Err(SpecError::Length),
        }
        if self.rate == 0.0 && self.count.is_some() {
            return Err(SpecError::MaxRateNeedsDuration);
        }
        if let Some(d) = self.duration_ms
            && self.warmup_ms >= d
        {
            return Err(SpecError::Warmup {
                warmup_ms: self.warmup_ms,
                duration_ms: d,
            });
        }
        if self.producers == 0 {
            return Err(SpecError::Zero { what: "producers" });
        }
        if let Some(p) = &self.payload
            && self
                .payload_bytes()
                .is_none_or(|b| b.is_empty() || b.len() > 256 * 1024 || p.is_empty())
        {
            return Err(SpecError::Payload);
        }
        if self.topics == 0 {
            return Err(SpecError::Zero { what: "topics" });
        }
        Ok(())
    }
}

impl TestSpec {
    /// The decoded payload filler, when one is given and valid.
    pub fn payload_bytes(&self) -> Option<Vec<u8>> {
        use base64::Engine;
        let p = self.payload.as_ref()?;
        base64::engine::general_purpose::STANDARD.decode(p).ok()
    }
}

/// One producer of a run, as assigned to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProducerPlan {
    /// Unique in the run; written into every message.
    pub id: u32,
    /// Index of the topic it sends to (0 ..< topics).
    pub topic: u32,
    /// Its share of the rate, messages per second (0: as fast as possible).
    pub rate: f64,
    /// Its share of the count, when the run is bounded by count.
    pub count: Option<u64>,
}

/// One consumer of a run, as assigned to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerPlan {
    pub id: u32,
    pub topic: u32,
    /// Consumers of one subscription share the topic's messages (an AMQP queue, a Kafka
    /// consumer group); every subscription expects every message of its topic.
    pub subscription: u32,
}

/// Everything one worker needs for a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Configure {
    pub run: RunId,
    pub spec: TestSpec,
    pub producers: Vec<ProducerPlan>,
    pub consumers: Vec<ConsumerPlan>,
}

/// The run is configured: connections to the SUT are open and consumers subscribed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configured {
    pub run: RunId,
}

/// Start sending at a common wall-clock time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    pub run: RunId,
    pub start_at_us: crate::UnixMicros,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    pub run: RunId,
}

/// Stop producing now; consumers drain, then the worker publishes its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    pub run: RunId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopping {
    pub run: RunId,
}

/// Counters of one interval, or of a whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub sent: u64,
    pub received: u64,
    pub errors: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Messages received that were not maestro messages (bad header).
    pub foreign: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.sent += o.sent;
        self.received += o.received;
        self.errors += o.errors;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
        self.foreign += o.foreign;
    }
}

/// Latency histograms (HdrHistogram V2, deflate-compressed, base64), in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedHistograms {
    /// Receive time minus intended send time (coordinated-omission free).
    pub response_time_us: String,
    /// Receive time minus actual send time.
    pub service_time_us: String,
    /// Actual minus intended send time, at the producer.
    pub send_lag_us: String,
}

/// A worker's stats for one interval (about a second), published as an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStats {
    pub run: RunId,
    pub interval_start_us: crate::UnixMicros,
    pub interval_end_us: crate::UnixMicros,
    pub counters: Counters,
    pub histograms: EncodedHistograms,
    /// Producers of this worker still sending.
    pub active_producers: u32,
    /// Consumers of this worker still receiving.
    pub active_consumers: u32,
}

/// What one consumer received from one producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub consumer: u32,
    pub producer: u32,
    /// Distinct sequence numbers received.
    pub unique: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
}

/// What one producer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub producer: u32,
    pub topic: u32,
    /// Messages handed to the SUT client (sequence numbers 0 ..< sent).
    pub sent: u64,
    pub errors: u64,
}

/// A worker's final result for a run, published as an event once its consumers drained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResult {
    pub run: RunId,
    pub worker: PeerId,
    /// Totals over the whole run (warm-up included in counters, excluded from histograms).
    pub counters: Counters,
    pub histograms: EncodedHistograms,
    pub sent: Vec<Sent>,
    pub deliveries: Vec<Delivery>,
    /// Consumers of this worker, with their topic, so the controller knows who expects what.
    pub consumers: Vec<ConsumerPlan>,
    /// Distinct errors seen, with how often (at most a few).
    pub errors: Vec<ErrorCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCount {
    pub message: String,
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TestSpec {
        TestSpec {
            sut: "mqtt://127.0.0.1:1884/bench".into(),
            rate: 1000.0,
            duration_ms: Some(10_000),
            count: None,
            warmup_ms: 1000,
            size: MessageSize::Fixed(256),
            producers: 2,
            consumers: 2,
            topics: 1,
            payload: None,
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(
            "256".parse::<MessageSize>().unwrap(),
            MessageSize::Fixed(256)
        );
        assert_eq!(
            "~1000".parse::<MessageSize>().unwrap(),
            MessageSize::Around(1000)
        );
        assert_eq!(MessageSize::Around(1000).bounds(), (500, 1500));
        assert!("big".parse::<MessageSize>().is_err());
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(spec().validate().is_ok());
        let bad = |f: fn(&mut TestSpec)| {
            let mut s = spec();
            f(&mut s);
            s.validate().unwrap_err().to_string()
        };
        assert!(bad(|s| s.size = MessageSize::Fixed(10)).contains("header"));
        assert!(bad(|s| s.size = MessageSize::Around(40)).contains("~40"));
        assert!(bad(|s| s.rate = -1.0).contains("-1"));
        assert!(bad(|s| s.count = Some(5)).contains("exactly one"));
        assert!(bad(|s| s.warmup_ms = 10_000).contains("warm-up"));
        assert!(bad(|s| s.producers = 0).contains("producers"));
        assert!(
            bad(|s| {
                s.rate = 0.0;
                s.duration_ms = None;
                s.count = Some(10)
            })
            .contains("duration")
        );
    }
}
