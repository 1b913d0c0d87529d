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
    /// The mean size in bytes (`~N` spreads evenly around N).
    pub fn mean(self) -> u32 {
        match self {
            MessageSize::Fixed(n) | MessageSize::Around(n) => n,
        }
    }

    pub fn bounds(self) -> (u32, u32) {
        match self {
            MessageSize::Fixed(n) => (n, n),
            MessageSize::Around(n) => (n / 2, n.saturating_add(n / 2)),
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
    /// The system under test, with protocol options as query parameters (on the wire:
    /// the URL string; parsed once, when the spec is read).
    pub sut: crate::SutUrl,
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
    /// Connections opened per second across the cluster while configuring (the hatch
    /// rate); `None`: every client connects at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_rate: Option<f64>,
    /// A device fleet (MQTT): the producers are its clients, named by templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<crate::FleetSpec>,
    /// Instants (ms after the start, ascending) that cut the run into segments by intended
    /// send time, for example the edges of fault windows. Workers then count sends,
    /// receptions and response times per segment ([`RunResult::segments`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub marks_ms: Vec<u64>,
    /// A backlog test (OpenMessaging Benchmark's `consumerBacklogSizeGB`, in bytes):
    /// consumers are held from the start until this much has built up, then resumed
    /// ([`crate::Body::Resume`]) while producers go on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_backlog_bytes: Option<u64>,
    /// Consumers on another protocol of the same broker (`--consumer-sut`): producers
    /// speak `sut`'s, consumers this one's ([`crate::sut::Crossing`] says how the broker
    /// maps the topics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_sut: Option<Box<crate::SutUrl>>,
    /// Subscriptions per topic where consumers compete (OpenMessaging Benchmark's
    /// `subscriptionsPerTopic` with several consumers each): a topic's consumers are dealt
    /// round robin over this many queues, consumer groups or shared subscriptions, each of
    /// which gets every message once. `None`: one per topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriptions: Option<u32>,
    /// How messages arrive over time (see [`crate::arrival`]); `rate` is its mean.
    #[serde(default, skip_serializing_if = "crate::Arrival::is_uniform")]
    pub arrival: crate::Arrival,
}

/// The most marks a spec may have (two per fault).
pub const MAX_MARKS: usize = 64;

/// The highest connect rate a spec may ask for (connections per second, cluster-wide).
pub const MAX_CONNECT_RATE: f64 = 1_000_000.0;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("message size {0:?} is not N or ~N (a number of bytes)")]
    Size(String),
    #[error("message size {size} is below the {HEADER_LEN}-byte maestro header")]
    SizeTooSmall { size: String },
    #[error(
        "connect rate {0} must be a number of connections per second above 0 and at most {MAX_CONNECT_RATE}"
    )]
    ConnectRate(f64),
    #[error("rate {0} must be a finite number >= 0 (0 = as fast as possible)")]
    Rate(f64),
    #[error("give exactly one of duration and count")]
    Length,
    #[error(
        "a consumer backlog needs a broker that keeps messages for consumers that do not read (AMQP queues, Kafka topics); {0}:// cannot"
    )]
    BacklogProtocol(String),
    #[error("a consumer backlog needs consumers and a size above 0 bytes")]
    Backlog,
    #[error("{what} must be at least 1, not 0")]
    Zero { what: &'static str },
    #[error("warm-up of {warmup_ms} ms is not shorter than the duration of {duration_ms} ms")]
    Warmup { warmup_ms: u64, duration_ms: u64 },
    #[error("as-fast-as-possible (rate 0) needs a duration, not a count")]
    MaxRateNeedsDuration,
    #[error("payload is not base64, or is empty or larger than 256 KiB")]
    Payload,
    #[error("{what} {value} is above the limit of {limit}")]
    TooLarge {
        what: &'static str,
        value: String,
        limit: String,
    },
    #[error("marks {0:?} must be ascending, distinct and within 7 days of the start")]
    Marks(Vec<u64>),
    #[error(transparent)]
    Fleet(#[from] crate::FleetError),
    #[error("a fleet is MQTT clients: its SUT URL must be mqtt:// or mqtts://, not {0}://")]
    FleetProtocol(String),
    #[error(
        "a fleet's clients send at a rate (one message per interval each), not as fast as possible"
    )]
    FleetNeedsRate,
    #[error(
        "rate {0} msg/s is below the smallest rate of {MIN_RATE} msg/s (0 = as fast as possible)"
    )]
    RateTooSmall(f64),
    #[error(
        "sending {count} messages at {rate} msg/s would take {} (more than the limit of {})",
        humanize_secs(*window_s), humanize_secs(MAX_DURATION_MS as f64 / 1000.0)
    )]
    WindowTooLong {
        count: u64,
        rate: f64,
        window_s: f64,
    },
    #[error(transparent)]
    Crossing(#[from] crate::sut::CrossingError),
    #[error("--consumer-sut: a device fleet's clients publish and subscribe on one protocol")]
    CrossingFleet,
    #[error(
        "{subscriptions} subscriptions per topic need consumers that compete in each (a queue, a consumer group or a shared subscription); {sut} gives every consumer every message"
    )]
    SubscriptionsNeedCompeting { subscriptions: u32, sut: String },
    #[error(
        "{subscriptions} subscriptions per topic: {scheme}:// has one queue per topic that its consumers share"
    )]
    SubscriptionsProtocol { subscriptions: u32, scheme: String },
    #[error(
        "{subscriptions} subscriptions on each of {topics} topics need a consumer each: {consumers} consumers are too few"
    )]
    SubscriptionsWithoutConsumers {
        subscriptions: u32,
        topics: u32,
        consumers: u32,
    },
    #[error(
        "arrival {arrival} needs a duration and a rate above 0 (a count or as-fast-as-possible has no shape to follow)"
    )]
    ArrivalNeedsDuration { arrival: String },
    #[error(
        "arrival {arrival} has a mean of {mean:.3} msg/s over the run, not the rate {rate}: leave the rate out, or give this one"
    )]
    ArrivalRate {
        arrival: String,
        rate: f64,
        mean: f64,
    },
    #[error("a fleet's jitter moves a uniform schedule; arrival {arrival} has its own times")]
    ArrivalJitter { arrival: String },
}

/// The largest total rate a spec may ask for, in messages per second.
pub const MAX_RATE: f64 = 100_000_000.0;
/// The smallest non-zero total rate, in messages per second.
pub const MIN_RATE: f64 = 0.001;
/// The longest send window (duration, warm-up, or count / rate): 7 days.
pub const MAX_DURATION_MS: u64 = 7 * 24 * 3600 * 1000;
/// The largest total count.
pub const MAX_COUNT: u64 = 1_000_000_000_000;
/// The most producers or consumers in one run.
pub const MAX_CLIENTS: u32 = 1_000_000;
/// The most topics in one run.
pub const MAX_TOPICS: u32 = 100_000;
/// The largest message, in bytes.
pub const MAX_SIZE: u32 = 16 * 1024 * 1024;
/// After a stop, a worker's producers write out what they queued and its consumers drain
/// for at most this long before the worker sends its result: how long a controller waits
/// for results beyond its step timeout.
pub const DRAIN_MAX: std::time::Duration = std::time::Duration::from_secs(15);

fn humanize_secs(s: f64) -> String {
    if s.is_finite() && s < 1e12 {
        humantime::format_duration(std::time::Duration::from_secs(s as u64)).to_string()
    } else {
        format!("{s:e} s")
    }
}

impl TestSpec {
    /// One producer and one consumer on one topic, sending `rate` msg/s of 100-byte
    /// messages to `sut` for `duration`, without warm-up, count, payload template, fleet,
    /// connect rate, backlog or fault marks. A starting point that callers (tests, the
    /// quickstart) set other fields on, instead of spelling out every field.
    pub fn new(sut: crate::SutUrl, rate: f64, duration: std::time::Duration) -> Self {
        TestSpec {
            sut,
            rate,
            duration_ms: Some(duration.as_millis() as u64),
            count: None,
            warmup_ms: 0,
            size: MessageSize::Fixed(100),
            producers: 1,
            consumers: 1,
            topics: 1,
            payload: None,
            connect_rate: None,
            fleet: None,
            marks_ms: Vec::new(),
            consumer_backlog_bytes: None,
            consumer_sut: None,
            subscriptions: None,
            arrival: crate::Arrival::Uniform,
        }
    }

    /// How long connecting `clients` takes at the connect rate (zero without one).
    pub fn connect_span(&self) -> std::time::Duration {
        match self.connect_rate {
            Some(r) if r > 0.0 => std::time::Duration::from_secs_f64(
                f64::from(self.producers.saturating_add(self.consumers)) / r,
            ),
            _ => std::time::Duration::ZERO,
        }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        let too_large = |what, value: &dyn fmt::Display, limit: &dyn fmt::Display| {
            Err(SpecError::TooLarge {
                what,
                value: value.to_string(),
                limit: limit.to_string(),
            })
        };
        if let Some(consumers) = &self.consumer_sut {
            if self.fleet.is_some() {
                return Err(SpecError::CrossingFleet);
            }
            crate::sut::Crossing::of(&self.sut, consumers)?;
        }
        let (min, max) = self.size.bounds();
        if (min as usize) < HEADER_LEN {
            return Err(SpecError::SizeTooSmall {
                size: self.size.to_string(),
            });
        }
        if max > MAX_SIZE {
            return too_large("message size", &self.size, &MAX_SIZE);
        }
        if !self.rate.is_finite() || self.rate < 0.0 {
            return Err(SpecError::Rate(self.rate));
        }
        if let Some(r) = self.connect_rate
            && !(r.is_finite() && r > 0.0 && r <= MAX_CONNECT_RATE)
        {
            return Err(SpecError::ConnectRate(r));
        }
        if self.rate > MAX_RATE {
            return too_large("rate", &self.rate, &MAX_RATE);
        }
        if self.rate > 0.0 && self.rate < MIN_RATE {
            return Err(SpecError::RateTooSmall(self.rate));
        }
        if let Some(b) = self.consumer_backlog_bytes {
            if b == 0 || self.consumers == 0 {
                return Err(SpecError::Backlog);
            }
            if !self.sut.capabilities().backlog {
                return Err(SpecError::BacklogProtocol(
                    self.sut.scheme().as_str().into(),
                ));
            }
        }
        self.check_subscriptions()?;
        if let Some(d) = self.duration_ms
            && d > MAX_DURATION_MS
        {
            return too_large("duration (ms)", &d, &MAX_DURATION_MS);
        }
        if let Some(c) = self.count
            && c > MAX_COUNT
        {
            return too_large("count", &c, &MAX_COUNT);
        }
        if self.warmup_ms > MAX_DURATION_MS {
            return too_large("warm-up (ms)", &self.warmup_ms, &MAX_DURATION_MS);
        }
        if self.producers > MAX_CLIENTS {
            return too_large("producers", &self.producers, &MAX_CLIENTS);
        }
        if self.consumers > MAX_CLIENTS {
            return too_large("consumers", &self.consumers, &MAX_CLIENTS);
        }
        if self.topics > MAX_TOPICS {
            return too_large("topics", &self.topics, &MAX_TOPICS);
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
        if self.marks_ms.len() > MAX_MARKS {
            return too_large("marks", &self.marks_ms.len(), &MAX_MARKS);
        }
        if self.marks_ms.windows(2).any(|w| w[0] >= w[1])
            || self.marks_ms.last().is_some_and(|m| *m > MAX_DURATION_MS)
        {
            return Err(SpecError::Marks(self.marks_ms.clone()));
        }
        if let Some(fleet) = &self.fleet {
            if !self.sut.capabilities().fleet {
                return Err(SpecError::FleetProtocol(self.sut.scheme().to_string()));
            }
            if self.rate == 0.0 {
                return Err(SpecError::FleetNeedsRate);
            }
            fleet.validate(self.producers, self.interval_ms())?;
        }
        self.check_arrival()?;
        if let (Some(count), None) = (self.count, self.duration_ms) {
            let window_s = self.count_window_s(count);
            // NaN (impossible here) counts as too long, too.
            if window_s.is_nan() || window_s > MAX_DURATION_MS as f64 / 1000.0 {
                return Err(SpecError::WindowTooLong {
                    count,
                    rate: self.rate,
                    window_s,
                });
            }
        }
        Ok(())
    }

    /// A shaped arrival needs a window to shape, a rate to spread, the rate its shape
    /// fixes (if any), and no fleet jitter on top.
    fn check_arrival(&self) -> Result<(), SpecError> {
        if self.arrival.is_uniform() {
            return Ok(());
        }
        let arrival = self.arrival.to_string();
        let Some(d) = self.duration_ms.filter(|_| self.rate > 0.0) else {
            return Err(SpecError::ArrivalNeedsDuration { arrival });
        };
        if let Some(mean) = self.arrival.mean_rate(std::time::Duration::from_millis(d))
            && (mean - self.rate).abs() > 1e-9 * mean.max(1.0)
        {
            return Err(SpecError::ArrivalRate {
                arrival,
                rate: self.rate,
                mean,
            });
        }
        if self.fleet.as_ref().is_some_and(|f| f.jitter_ms > 0) {
            return Err(SpecError::ArrivalJitter { arrival });
        }
        Ok(())
    }

    /// Several subscriptions per topic need consumers that compete, a protocol with a
    /// queue or group per subscription, and a consumer for each.
    fn check_subscriptions(&self) -> Result<(), SpecError> {
        let Some(s) = self.subscriptions else {
            return Ok(());
        };
        let side = self.consumer_side();
        if s == 0 {
            return Err(SpecError::Zero {
                what: "subscriptions",
            });
        }
        if s > MAX_CLIENTS {
            return Err(SpecError::TooLarge {
                what: "subscriptions",
                value: s.to_string(),
                limit: MAX_CLIENTS.to_string(),
            });
        }
        if s > 1 && !side.consumers_compete() {
            return Err(SpecError::SubscriptionsNeedCompeting {
                subscriptions: s,
                sut: side.redacted(),
            });
        }
        if s > 1 && !side.capabilities().several_subscriptions {
            return Err(SpecError::SubscriptionsProtocol {
                subscriptions: s,
                scheme: side.scheme().as_str().into(),
            });
        }
        if u64::from(s) * u64::from(self.topics) > u64::from(self.consumers) {
            return Err(SpecError::SubscriptionsWithoutConsumers {
                subscriptions: s,
                topics: self.topics,
                consumers: self.consumers,
            });
        }
        Ok(())
    }

    /// Each producer's time between two messages, in ms (infinite at full speed).
    pub fn interval_ms(&self) -> f64 {
        if self.rate > 0.0 {
            f64::from(self.producers.max(1)) * 1000.0 / self.rate
        } else {
            f64::INFINITY
        }
    }

    /// Producer `id`'s part of the run: its topic and its share of the rate and count
    /// (counts split exactly: the first `count % producers` send one more).
    pub fn producer(&self, id: u32) -> ProducerPlan {
        let producers = u64::from(self.producers.max(1));
        ProducerPlan {
            id,
            topic: id % self.topics.max(1),
            rate: self.rate / producers as f64,
            count: self
                .count
                .map(|c| c / producers + u64::from(u64::from(id) < c % producers)),
        }
    }

    /// Seconds the busiest producer needs for its share of `count` at its share of the rate.
    fn count_window_s(&self, count: u64) -> f64 {
        let producers = u64::from(self.producers.max(1));
        let per_producer = count.div_ceil(producers) as f64;
        let rate = self.rate / producers as f64;
        if rate > 0.0 {
            per_producer / rate
        } else {
            f64::INFINITY
        }
    }

    /// How long producers send: the duration, or (for a count) the time the busiest
    /// producer's share takes at its rate. Only for validated specs.
    pub fn send_window(&self) -> std::time::Duration {
        match (self.duration_ms, self.count) {
            (Some(d), _) => std::time::Duration::from_millis(d),
            (None, Some(c)) => {
                let s = self.count_window_s(c);
                std::time::Duration::try_from_secs_f64(s).unwrap_or(std::time::Duration::ZERO)
            }
            (None, None) => std::time::Duration::ZERO,
        }
    }

    /// An upper bound on the sequence numbers any producer of this spec can send; a
    /// message with a higher one is not from this run (a forged or foreign header).
    pub fn max_sequence(&self) -> u64 {
        match (self.count, self.duration_ms) {
            (Some(c), _) => c,
            (None, Some(d)) => {
                let rate = if self.rate > 0.0 { self.rate } else { MAX_RATE };
                let window = std::time::Duration::from_millis(d);
                // Shaped: what the shape holds by the end (a burst on it included);
                // Poisson: its count is random, and stays under 8 deviations more.
                let n = if self.arrival.is_uniform() {
                    (d as f64 / 1000.0) * rate
                } else {
                    self.arrival.profile(rate, window).expected(d as f64 * 1e6)
                };
                let n = if self.arrival.is_random() {
                    n + 8.0 * n.sqrt() + 64.0
                } else {
                    n
                };
                n.ceil().min(u64::MAX as f64 / 2.0) as u64 + 1
            }
            (None, None) => 0,
        }
    }
}

impl TestSpec {
    /// The SUT the consumers speak to: `consumer_sut`, or `sut`.
    pub fn consumer_side(&self) -> &crate::SutUrl {
        self.consumer_sut.as_deref().unwrap_or(&self.sut)
    }

    /// The subscription consumer `consumer` reads from. Consumer j is on topic
    /// `j mod topics`; where consumers compete, the k-th consumer of a topic is in its
    /// subscription `k mod subscriptions`, numbered `topic + topics * that` (so with one
    /// subscription per topic, a subscription is its topic's number); otherwise every
    /// consumer is its own subscription.
    pub fn subscription(&self, consumer: u32) -> u32 {
        let topics = self.topics.max(1);
        if !self.consumer_side().consumers_compete() {
            return consumer;
        }
        let per_topic = self.subscriptions.unwrap_or(1).max(1);
        let topic = consumer % topics;
        topic + topics * ((consumer / topics) % per_topic)
    }

    /// How many subscriptions the run's consumers make, over all topics: each gets every
    /// message of its topic once.
    pub fn subscription_count(&self) -> u64 {
        if self.consumer_side().consumers_compete() {
            let groups = u64::from(self.topics) * u64::from(self.subscriptions.unwrap_or(1));
            groups.min(u64::from(self.consumers))
        } else {
            u64::from(self.consumers)
        }
    }

    /// True when both sides promise no loss (see [`crate::SutUrl::reliable`]).
    pub fn reliable(&self) -> bool {
        self.sut.reliable() && self.consumer_side().reliable()
    }

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

/// Client ids `first`, `first + stride`, ... (`count` of them): a worker's share of a
/// run's producers, so that a note never lists clients one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub first: u32,
    pub stride: u32,
    pub count: u32,
}

impl IdRange {
    pub const EMPTY: IdRange = IdRange {
        first: 0,
        stride: 1,
        count: 0,
    };

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The ids, in order (ids past `u32::MAX` are not there).
    pub fn iter(&self) -> impl Iterator<Item = u32> + use<> {
        let IdRange {
            first,
            stride,
            count,
        } = *self;
        (0..count).map_while(move |k| first.checked_add(k.checked_mul(stride.max(1))?))
    }

    pub fn contains(&self, id: u32) -> bool {
        let stride = self.stride.max(1);
        id >= self.first
            && (id - self.first).is_multiple_of(stride)
            && (id - self.first) / stride < self.count
    }

    /// The ids of worker `w` of `n` when ids `0 ..< total` go to workers round robin.
    pub fn round_robin(total: u32, w: u32, n: u32) -> IdRange {
        let n = n.max(1);
        IdRange {
            first: w,
            stride: n,
            count: if w < total {
                (total - w).div_ceil(n)
            } else {
                0
            },
        }
    }
}

/// How far a worker's clock is ahead of the clock of the worker that runs `producers`, µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerSkew {
    pub producers: IdRange,
    pub skew_us: i64,
}

/// Everything one worker needs for a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Configure {
    pub run: RunId,
    pub spec: TestSpec,
    /// This worker's producers (each one's plan is [`TestSpec::producer`]).
    pub producers: IdRange,
    pub consumers: Vec<ConsumerPlan>,
    /// The run belongs to the controller that sent this note. The worker ends the run
    /// when that controller's last will fires, or when it has not renewed the run
    /// ([`Renew`]) for this long.
    pub lease_ms: u64,
    /// Clock correction per producer range, for this worker's consumers: how far this
    /// worker's clock is ahead of the clock of the worker that runs those producers (from
    /// the controller's ping). Latencies of their messages are reduced by it. Empty when
    /// this worker has no consumers or every skew is 0.
    pub producer_skews: Vec<ProducerSkew>,
}

/// The controller still owns the run; sent every second or so, never answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renew {
    pub run: RunId,
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

/// A run with a consumer backlog: its consumers, held since the start, read from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub run: RunId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumed {
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
    /// Payload bytes of the messages sent and received after the warm-up (a newer minor
    /// version's fields: absent from an older worker's notes).
    #[serde(default)]
    pub sent_bytes: u64,
    #[serde(default)]
    pub received_bytes: u64,
}

/// Most payload bytes a note's counters may claim: [`crate::histogram::MAX_COUNT`]
/// messages of a kilobyte.
pub const MAX_BYTES: u64 = crate::histogram::MAX_COUNT << 10;

impl Counters {
    /// Adds `o`; never wraps (a forged note cannot overflow a total, and
    /// [`Counters::plausible`] keeps such notes out in the first place).
    pub fn add(&mut self, o: &Counters) {
        self.sent_bytes = self.sent_bytes.saturating_add(o.sent_bytes);
        self.received_bytes = self.received_bytes.saturating_add(o.received_bytes);
        self.sent = self.sent.saturating_add(o.sent);
        self.received = self.received.saturating_add(o.received);
        self.errors = self.errors.saturating_add(o.errors);
        self.duplicated = self.duplicated.saturating_add(o.duplicated);
        self.out_of_order = self.out_of_order.saturating_add(o.out_of_order);
        self.foreign = self.foreign.saturating_add(o.foreign);
    }

    /// Whether every counter is one a real worker could have counted: messages at most
    /// [`crate::histogram::MAX_COUNT`], bytes at most [`MAX_BYTES`].
    pub fn plausible(&self) -> bool {
        let max = crate::histogram::MAX_COUNT;
        [
            self.sent,
            self.received,
            self.errors,
            self.duplicated,
            self.out_of_order,
            self.foreign,
        ]
        .iter()
        .all(|c| *c <= max)
            && self.sent_bytes <= MAX_BYTES
            && self.received_bytes <= MAX_BYTES
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
    /// Acknowledgement by the SUT minus actual send time, at the producer (MQTT PUBACK or
    /// PUBCOMP, AMQP publisher confirm, Kafka delivery report): only in reliable modes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_latency_us: Option<String>,
}

/// A worker's stats for one second of the run, published as an event. Seconds are
/// aligned to the run's start on the worker's clock: second `k` covers
/// `[start + k s, start + (k + 1) s)`, and every event is counted in the second it happened
/// (producers by send time, consumers by receive time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStats {
    pub run: RunId,
    /// The run second this note covers (0 is the first second after the start).
    pub second: u32,
    pub interval_start_us: crate::UnixMicros,
    pub interval_end_us: crate::UnixMicros,
    pub counters: Counters,
    pub histograms: EncodedHistograms,
    /// Producers of this worker still sending.
    pub active_producers: u32,
    /// Consumers of this worker still receiving.
    pub active_consumers: u32,
    /// This worker's clients connected to the SUT at the end of the second, and
    /// connections it opened during the second (absent when the driver does not track
    /// connections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<SecondConnections>,
}

impl RunStats {
    /// Whether the second's counters are ones a real worker could have counted.
    pub fn plausible(&self) -> bool {
        self.counters.plausible()
    }
}

/// A worker's connections to the SUT in one run second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondConnections {
    /// Open at the end of the second.
    pub connected: u32,
    /// Opened during the second (first connections, reconnects, churn).
    pub opened: u32,
    /// Connection attempts that failed during the second.
    pub failed: u32,
}

/// How a worker's connections to the SUT went over a whole run (drivers that make their
/// own connections: fleets).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionStats {
    /// Connections opened, first ones and again.
    pub opened: u64,
    /// Of those, opened again after a drop or by churn.
    pub reconnects: u64,
    /// Connections the SUT (or the network) closed.
    pub dropped: u64,
    /// Closed and reopened on purpose (churn).
    pub churned: u64,
    /// Failed attempts by reason (refused, timeout, auth, tls, closed, other).
    pub failures: std::collections::BTreeMap<String, u64>,
    /// Connections completed per wall-clock second: `(Unix second, count)` in time order,
    /// over the whole run (the connect ramp, reconnects, churn).
    pub per_second: Vec<(i64, u32)>,
    /// Messages that arrived on clients' own subscriptions.
    pub received_by_clients: u64,
    /// MQTT 5 reason codes other than success the clients got, by packet and reason
    /// (`PUBACK NoMatchingSubscribers`, `DISCONNECT ServerShuttingDown`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub reason_codes: std::collections::BTreeMap<String, u64>,
    /// Time from starting a TCP connection until it was established (encoded like the
    /// latency histograms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_connect_us: Option<String>,
}

impl ConnectionStats {
    pub fn add(&mut self, o: &ConnectionStats) {
        self.opened += o.opened;
        self.reconnects += o.reconnects;
        self.dropped += o.dropped;
        self.churned += o.churned;
        for (k, v) in &o.failures {
            *self.failures.entry(k.clone()).or_default() += v;
        }
        let mut merged: std::collections::BTreeMap<i64, u32> =
            self.per_second.iter().copied().collect();
        for (k, v) in &o.per_second {
            *merged.entry(*k).or_default() += v;
        }
        self.per_second = merged.into_iter().collect();
        self.received_by_clients += o.received_by_clients;
        for (k, v) in &o.reason_codes {
            *self.reason_codes.entry(k.clone()).or_default() += v;
        }
    }
}

/// What one consumer received: from one producer, or summed over `producers` of them
/// (a worker sums its rows per consumer, so a result stays small with many producers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub consumer: u32,
    /// The producer, or the first of those summed.
    pub producer: u32,
    /// How many producers this row sums.
    pub producers: u32,
    /// Distinct sequence numbers received.
    pub unique: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
}

/// What one producer sent, or `producers` of them summed (a worker sums its rows per
/// topic, so a result stays small with many producers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// The producer, or the first of those summed.
    pub producer: u32,
    /// How many producers this row sums.
    pub producers: u32,
    pub topic: u32,
    /// Messages handed to the SUT client (sequence numbers 0 ..< sent).
    pub sent: u64,
    /// Messages the schedule had due by the end of the send window that were never sent
    /// (the client or the SUT could not keep up).
    pub unsent: u64,
    /// Messages sent late because the client had no room for them when they were due and
    /// the producer waited 1 ms or more for it: the SUT's window or socket stayed full, so
    /// their lateness is the SUT's back-pressure, not the tool's (absent from an older
    /// worker's notes).
    #[serde(default)]
    pub held_back: u64,
    pub errors: u64,
    /// When the producer stopped sending (its clock): the end of its window, or earlier
    /// when stopped; the latest of those summed. `None` when none started.
    pub stopped_at_us: Option<crate::UnixMicros>,
}

impl Sent {
    /// Sums rows per topic (in topic order).
    pub fn per_topic(rows: &[Sent]) -> Vec<Sent> {
        let mut by_topic: std::collections::BTreeMap<u32, Sent> = Default::default();
        for r in rows {
            by_topic
                .entry(r.topic)
                .and_modify(|t| {
                    t.producer = t.producer.min(r.producer);
                    t.producers += r.producers;
                    t.sent += r.sent;
                    t.unsent += r.unsent;
                    t.held_back += r.held_back;
                    t.errors += r.errors;
                    t.stopped_at_us = t.stopped_at_us.max(r.stopped_at_us);
                })
                .or_insert(*r);
        }
        by_topic.into_values().collect()
    }
}

impl Delivery {
    /// Sums rows per consumer (in consumer order).
    pub fn per_consumer(rows: &[Delivery]) -> Vec<Delivery> {
        let mut by_consumer: std::collections::BTreeMap<u32, Delivery> = Default::default();
        for r in rows {
            by_consumer
                .entry(r.consumer)
                .and_modify(|t| {
                    t.producer = t.producer.min(r.producer);
                    t.producers += r.producers;
                    t.unique += r.unique;
                    t.duplicated += r.duplicated;
                    t.out_of_order += r.out_of_order;
                })
                .or_insert(*r);
        }
        by_consumer.into_values().collect()
    }
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
    /// TLS handshake times of this worker's connections to the SUT (encoded like the
    /// latency histograms); absent without TLS or when the client library hides them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_handshake_us: Option<String>,
    /// Time from starting a connection until the SUT accepted the session (MQTT CONNACK;
    /// AMQP connection and channel open), encoded like the latency histograms; absent
    /// when not measured (Kafka).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_us: Option<String>,
    /// Time from subscribing until the SUT confirmed it (MQTT SUBACK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe_us: Option<String>,
    /// Connections opened, lost and failed (fleets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<ConnectionStats>,
    /// Counts per segment of the run, when the spec has marks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<SegmentTallies>,
    /// How busy the worker's data-plane threads were while its producers sent (absent
    /// from older workers, and where the kernel does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_plane: Option<DataPlaneLoad>,
    /// Set when the result was too large for one note and was split ([`RunResult::split`]):
    /// which part this is. Absent for a result in one note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<ResultPart>,
}

/// Part `index` of `count` of a split result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultPart {
    pub index: u32,
    pub count: u32,
}

/// The most parts a result may be split into: 64 notes of 2 MiB hold the rows of a few
/// million topics and consumers, far beyond a worker's open-files limit.
pub const MAX_RESULT_PARTS: u32 = 64;

/// Why parts of a result do not make one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartsError {
    #[error("a result in {count} parts: at most {MAX_RESULT_PARTS} are accepted")]
    TooMany { count: u32 },
    #[error("part {index} of {count} does not exist")]
    OutOfRange { index: u32, count: u32 },
    #[error("the parts disagree on their count ({0} and {1})")]
    CountMismatch(u32, u32),
    #[error("the parts disagree on their run or worker")]
    Mixed,
    #[error("a result that fits in {budget} bytes cannot be made: its fixed fields take {fixed}")]
    TooLarge { fixed: usize, budget: usize },
}

/// Collects the parts of split results until one is complete (a controller keeps one per
/// worker). Duplicates (QoS 1 may deliver a part twice) are ignored.
#[derive(Debug, Default)]
pub struct PartsCollector {
    parts: Vec<Option<RunResult>>,
}

impl PartsCollector {
    /// Adds a part; returns the whole result once every part is in.
    pub fn add(&mut self, result: RunResult) -> Result<Option<RunResult>, PartsError> {
        let Some(part) = result.part else {
            return Ok(Some(result));
        };
        if part.count == 0 || part.count > MAX_RESULT_PARTS {
            return Err(PartsError::TooMany { count: part.count });
        }
        if part.index >= part.count {
            return Err(PartsError::OutOfRange {
                index: part.index,
                count: part.count,
            });
        }
        if self.parts.is_empty() {
            self.parts = vec![None; part.count as usize];
        } else if self.parts.len() != part.count as usize {
            return Err(PartsError::CountMismatch(
                self.parts.len() as u32,
                part.count,
            ));
        }
        if let Some(first) = self.parts.iter().flatten().next()
            && (first.run != result.run || first.worker != result.worker)
        {
            return Err(PartsError::Mixed);
        }
        let slot = &mut self.parts[part.index as usize];
        if slot.is_none() {
            *slot = Some(result);
        }
        if self.parts.iter().any(Option::is_none) {
            return Ok(None);
        }
        let mut parts = std::mem::take(&mut self.parts).into_iter().flatten();
        let Some(mut whole) = parts.next() else {
            return Ok(None);
        };
        for p in parts {
            whole.sent.extend(p.sent);
            whole.deliveries.extend(p.deliveries);
            whole.consumers.extend(p.consumers);
        }
        whole.part = None;
        Ok(Some(whole))
    }
}

impl RunResult {
    /// The result as notes' bodies of at most `budget` bytes of JSON each: itself when it
    /// fits, or else parts. The first part carries everything but a share of the rows
    /// (`sent`, `deliveries`, `consumers`), the others carry rows only; a
    /// [`PartsCollector`] puts them together again.
    pub fn split(mut self, budget: usize) -> Result<Vec<RunResult>, PartsError> {
        let size = |r: &RunResult| serde_json::to_vec(r).map_or(usize::MAX, |v| v.len());
        if size(&self) <= budget {
            return Ok(vec![self]);
        }
        let sent = std::mem::take(&mut self.sent);
        let deliveries = std::mem::take(&mut self.deliveries);
        let consumers = std::mem::take(&mut self.consumers);
        // The most a part's own fields and its `part` marker take.
        self.part = Some(ResultPart {
            index: MAX_RESULT_PARTS,
            count: MAX_RESULT_PARTS,
        });
        let head = self.clone();
        let tail = RunResult {
            run: self.run.clone(),
            worker: self.worker.clone(),
            counters: Counters::default(),
            histograms: EncodedHistograms::default(),
            sent: Vec::new(),
            deliveries: Vec::new(),
            consumers: Vec::new(),
            errors: Vec::new(),
            tls_handshake_us: None,
            connect_us: None,
            subscribe_us: None,
            connections: None,
            segments: None,
            data_plane: None,
            part: self.part,
        };
        let fixed = size(&head);
        if fixed + 64 > budget {
            return Err(PartsError::TooLarge { fixed, budget });
        }
        let row =
            |json: Result<Vec<u8>, serde_json::Error>| json.map_or(usize::MAX, |v| v.len() + 1);
        let mut parts = vec![head];
        let mut used = fixed;
        macro_rules! pack {
            ($rows:expr, $field:ident) => {
                for r in $rows {
                    let n = row(serde_json::to_vec(&r));
                    if used.saturating_add(n) > budget {
                        parts.push(tail.clone());
                        used = size(&tail);
                    }
                    if let Some(last) = parts.last_mut() {
                        last.$field.push(r);
                    }
                    used = used.saturating_add(n);
                }
            };
        }
        pack!(sent, sent);
        pack!(deliveries, deliveries);
        pack!(consumers, consumers);
        let count = parts.len() as u32;
        if count > MAX_RESULT_PARTS {
            return Err(PartsError::TooMany { count });
        }
        for (index, p) in parts.iter_mut().enumerate() {
            p.part = Some(ResultPart {
                index: index as u32,
                count,
            });
        }
        Ok(parts)
    }

    /// Whether every count in the result is one a real worker could have made (see
    /// [`Counters::plausible`]); a result that fails is forged or corrupt, and counts for
    /// nothing.
    pub fn plausible(&self) -> bool {
        let max = crate::histogram::MAX_COUNT;
        self.counters.plausible()
            && self.sent.iter().all(|s| {
                s.sent <= max && s.unsent <= max && s.errors <= max && s.held_back <= s.sent
            })
            && self
                .deliveries
                .iter()
                .all(|d| d.unique <= max && d.duplicated <= max && d.out_of_order <= max)
            && self.errors.iter().all(|e| e.count <= max)
    }
}

/// A worker's data-plane threads over a run's send window, from the kernel's per-thread
/// scheduler statistics: how long each ran on a CPU, and how long it was ready to run but
/// waited for one (other processes, a CPU quota). The generator's own share of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPlaneLoad {
    /// The span measured, µs (from the start until the worker's producers stopped).
    pub wall_us: u64,
    /// One entry per data-plane thread the run used.
    pub threads: Vec<ThreadLoad>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadLoad {
    /// CPU time the thread used, µs.
    pub cpu_us: u64,
    /// Time the thread was runnable but not running, µs.
    pub waited_us: u64,
    /// How many times the thread was put on a CPU (each wake-up waits its share of
    /// `waited_us`); absent from workers that did not count it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wakes: Option<u64>,
}

impl DataPlaneLoad {
    /// The busiest thread's CPU time as a fraction of the span (0 when nothing measured).
    pub fn busy_max(&self) -> f64 {
        self.fraction(|t| t.cpu_us)
    }

    /// The longest any thread waited for a CPU, as a fraction of the span.
    pub fn waited_max(&self) -> f64 {
        self.fraction(|t| t.waited_us)
    }

    /// The longest mean wait for a CPU per wake-up of any thread, µs: what starvation
    /// added to each message the thread handled. `None` when no thread counted its wake-ups.
    pub fn wait_per_wake_max_us(&self) -> Option<f64> {
        self.threads
            .iter()
            .filter_map(|t| {
                t.wakes
                    .filter(|w| *w > 0)
                    .map(|w| t.waited_us as f64 / w as f64)
            })
            .reduce(f64::max)
    }

    fn fraction(&self, f: impl Fn(&ThreadLoad) -> u64) -> f64 {
        if self.wall_us == 0 {
            return 0.0;
        }
        self.threads.iter().map(f).max().unwrap_or(0) as f64 / self.wall_us as f64
    }
}

/// What a worker counted per segment of a run: segment `k` holds the messages whose
/// intended send time lies between mark `k - 1` and mark `k` (segment 0 starts with the
/// run, the last one ends with it). Every vector has `marks + 1` entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentTallies {
    /// Per topic: messages sent, by segment.
    pub sent: Vec<TopicSegments>,
    /// Per consumer: distinct and duplicated messages received, by segment.
    pub received: Vec<ConsumerSegments>,
    /// Response time per segment, over the worker's consumers (warm-up excluded;
    /// encoded like the latency histograms).
    pub response_time_us: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSegments {
    pub topic: u32,
    pub sent: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerSegments {
    pub consumer: u32,
    pub unique: Vec<u64>,
    pub duplicated: Vec<u64>,
}

/// The segment of an instant `offset_ns` after the start, given marks in ms.
#[inline]
pub fn segment_of(marks_ms: &[u64], offset_ns: i64) -> usize {
    marks_ms.partition_point(|m| (*m as i64).saturating_mul(1_000_000) <= offset_ns)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorCount {
    pub message: String,
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TestSpec {
        TestSpec {
            warmup_ms: 1000,
            size: MessageSize::Fixed(256),
            producers: 2,
            consumers: 2,
            ..TestSpec::new(
                "mqtt://127.0.0.1:1884/bench".parse().unwrap(),
                1000.0,
                std::time::Duration::from_secs(10),
            )
        }
    }

    #[test]
    fn marks_cut_the_run_into_segments() {
        let marks = [2000, 4000];
        assert_eq!(segment_of(&marks, -1), 0);
        assert_eq!(segment_of(&marks, 1_999_999_999), 0);
        assert_eq!(segment_of(&marks, 2_000_000_000), 1);
        assert_eq!(segment_of(&marks, 3_999_999_999), 1);
        assert_eq!(segment_of(&marks, 4_000_000_000), 2);
        assert_eq!(segment_of(&[], 5), 0);
        let mut s = spec();
        s.marks_ms = vec![3000, 2000];
        assert!(matches!(s.validate(), Err(SpecError::Marks(_))));
        s.marks_ms = vec![2000, 3000];
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn id_ranges_are_round_robin_shares() {
        let shares: Vec<Vec<u32>> = (0..3)
            .map(|w| IdRange::round_robin(8, w, 3).iter().collect())
            .collect();
        assert_eq!(shares, vec![vec![0, 3, 6], vec![1, 4, 7], vec![2, 5]]);
        assert!(IdRange::round_robin(8, 1, 3).contains(7));
        assert!(!IdRange::round_robin(8, 1, 3).contains(10));
        assert!(IdRange::round_robin(2, 3, 4).is_empty());
        let mut s = spec();
        s.count = Some(5);
        s.duration_ms = None;
        assert_eq!(s.producer(0).count, Some(3));
        assert_eq!(s.producer(1).count, Some(2));
    }

    #[test]
    fn rows_sum_per_topic_and_per_consumer() {
        let sent = |producer, topic, n, stop| Sent {
            producer,
            producers: 1,
            topic,
            sent: n,
            unsent: 1,
            held_back: 0,
            errors: 0,
            stopped_at_us: stop,
        };
        let rows = [
            sent(4, 1, 10, Some(crate::UnixMicros(5))),
            sent(2, 0, 7, None),
            sent(1, 1, 5, Some(crate::UnixMicros(9))),
        ];
        let t = Sent::per_topic(&rows);
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].topic, t[0].producers, t[0].sent), (0, 1, 7));
        assert_eq!(
            (t[1].producer, t[1].producers, t[1].sent, t[1].unsent),
            (1, 2, 15, 2)
        );
        assert_eq!(t[1].stopped_at_us, Some(crate::UnixMicros(9)));
        let d = |consumer, producer, unique| Delivery {
            consumer,
            producer,
            producers: 1,
            unique,
            duplicated: 1,
            out_of_order: 0,
        };
        let c = Delivery::per_consumer(&[d(0, 3, 5), d(1, 0, 2), d(0, 1, 4)]);
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].producer, c[0].producers, c[0].unique, c[0].duplicated),
            (1, 2, 9, 2)
        );
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
        assert!(bad(|s| s.connect_rate = Some(0.0)).contains("connect rate 0"));
        assert!(bad(|s| s.connect_rate = Some(f64::NAN)).contains("connect rate"));
        let mut ramped = spec();
        ramped.connect_rate = Some(2.0);
        assert!(ramped.validate().is_ok());
        // 2 producers and 2 consumers at 2 a second: 2 s of connecting.
        assert_eq!(ramped.connect_span(), std::time::Duration::from_secs(2));
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

    #[test]
    fn several_subscriptions_need_competing_consumers_and_a_consumer_each() {
        let on = |url: &str, subscriptions: u32, consumers: u32| {
            let s = TestSpec {
                sut: url.parse().unwrap(),
                consumers,
                subscriptions: Some(subscriptions),
                ..spec()
            };
            s.validate().map_err(|e| e.to_string())
        };
        for url in [
            "kafka://h",
            "amqp://h?queue_type=quorum",
            "mqtt://h?shared=true",
            "nats://h?jetstream=true",
            "redis://h?mode=streams",
        ] {
            on(url, 2, 4).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        let e = on("mqtt://h", 2, 4).unwrap_err();
        assert!(e.contains("gives every consumer every message"), "{e}");
        let e = on("amqp10://h", 2, 4).unwrap_err();
        assert!(e.contains("amqp10://"), "{e}");
        let e = on("stomp://h", 2, 4).unwrap_err();
        assert!(e.contains("stomp://"), "{e}");
        let e = on("kafka://h", 3, 2).unwrap_err();
        assert!(e.contains("2 consumers are too few"), "{e}");
        let e = on("kafka://h", 0, 2).unwrap_err();
        assert!(e.contains("subscriptions"), "{e}");
        // Consumer j of a topic: its subscription, topic first.
        let s = TestSpec {
            sut: "kafka://h".parse().unwrap(),
            topics: 2,
            consumers: 8,
            subscriptions: Some(2),
            ..spec()
        };
        let subs: Vec<u32> = (0..8).map(|j| s.subscription(j)).collect();
        assert_eq!(subs, [0, 1, 2, 3, 0, 1, 2, 3]);
        assert_eq!(s.subscription_count(), 4);
    }

    #[test]
    fn shaped_arrivals_need_a_window_their_own_mean_and_a_bound_that_fits() {
        let with = |arrival: &str, f: &dyn Fn(&mut TestSpec)| {
            let mut s = TestSpec {
                arrival: arrival.parse().unwrap(),
                ..spec()
            };
            f(&mut s);
            s.validate().map(|()| s).map_err(|e| e.to_string())
        };
        let ok = with("poisson", &|_| {}).unwrap();
        // 10,000 expected; a random count is bounded 8 deviations above.
        assert_eq!(ok.max_sequence(), 10_000 + 800 + 64 + 1);
        // Bursts at once: the burst on the window's end counts in the bound.
        let bursts = with("bursts:period=3s", &|_| {}).unwrap();
        assert_eq!(bursts.max_sequence(), 12_000 + 1);
        let e = with("poisson", &|s| {
            s.duration_ms = None;
            s.count = Some(100);
        })
        .unwrap_err();
        assert!(e.contains("needs a duration"), "{e}");
        let e = with("bursts:period=1s", &|s| s.rate = 0.0).unwrap_err();
        assert!(e.contains("rate above 0"), "{e}");
        let e = with("sine:low=100,high=300,period=5s", &|_| {}).unwrap_err();
        assert!(
            e.contains("mean of 200.000") && e.contains("not the rate 1000"),
            "{e}"
        );
        with("sine:low=100,high=300,period=5s", &|s| s.rate = 200.0).unwrap();
        // Uniform specs are unchanged, in JSON too.
        assert!(!serde_json::to_string(&spec()).unwrap().contains("arrival"));
        let json = serde_json::to_string(&ok).unwrap();
        assert!(json.contains(r#""arrival":"poisson""#), "{json}");
        assert_eq!(serde_json::from_str::<TestSpec>(&json).unwrap(), ok);
    }
}
