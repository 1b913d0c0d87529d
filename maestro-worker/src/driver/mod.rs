//! Protocol-under-test drivers. A driver opens producers and consumers on the system under
//! test; the engine paces, stamps and measures. [`AnyDriver`] is the registry: the one
//! place that picks a driver for a SUT URL's options; [`with_driver!`](crate::with_driver)
//! dispatches statically to it (no boxing on the hot path).

pub mod amqp;
pub mod amqp10;
pub mod kafka;
pub mod mixed;
pub mod mqtt;
pub mod nats;
pub mod redis;
pub mod stomp;
pub mod stream;
pub mod tls;

use bytes::Bytes;
use hdrhistogram::Histogram;
use maestro_protocol::{ConsumerPlan, ProducerPlan};
use maestro_protocol::{RunId, SutOptions, TestSpec};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the worker that removes what a run created (on RabbitMQ quorum queues and
/// streams, RabbitMQ's stream protocol, Redis Streams, NATS JetStream) waits for every consumer to leave
/// before it removes it anyway.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until `left(id)` says each of the run's `consumers` has left (asked again every
/// 200 ms for those that have not), or [`LEAVE_TIMEOUT`] passed: the owner then removes
/// what the run created anyway.
pub async fn wait_until_left<F: Future<Output = bool>>(
    run: &RunId,
    consumers: u32,
    mut left: impl FnMut(u32) -> F,
) {
    let deadline = tokio::time::Instant::now() + LEAVE_TIMEOUT;
    let mut gone = vec![false; consumers as usize];
    loop {
        for (id, gone) in (0u32..).zip(gone.iter_mut()).filter(|(_, g)| !**g) {
            *gone = left(id).await;
        }
        let waiting = gone.iter().filter(|g| !**g).count();
        if waiting == 0 {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(%run, waiting, "consumers still reading after {LEAVE_TIMEOUT:?}: removing what the run created anyway");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The drivers, one per protocol.
#[derive(Debug)]
pub enum AnyDriver {
    Mqtt(mqtt::MqttDriver),
    Amqp(amqp::AmqpDriver),
    Kafka(kafka::KafkaDriver),
    Amqp10(amqp10::Amqp10Driver),
    Stream(stream::StreamDriver),
    Redis(redis::RedisDriver),
    Nats(nats::NatsDriver),
    Stomp(stomp::StompDriver),
    /// Producers of one protocol, consumers of another (`consumer_sut`).
    Mixed(mixed::MixedDriver),
}

impl AnyDriver {
    /// The driver for a run of `spec` (its SUT URL was parsed once, into typed options).
    pub fn open(spec: &TestSpec, run: &RunId) -> Result<Self, DriverError> {
        if spec.consumer_sut.is_some() {
            return Ok(AnyDriver::Mixed(mixed::MixedDriver::open(spec, run)?));
        }
        Self::open_one(spec, &spec.sut, run)
    }

    /// The driver of one protocol for `sut` (the spec's, or its consumers').
    fn open_one(
        spec: &TestSpec,
        sut: &maestro_protocol::SutUrl,
        run: &RunId,
    ) -> Result<Self, DriverError> {
        Ok(match &sut.options {
            SutOptions::Mqtt(o) => AnyDriver::Mqtt(mqtt::MqttDriver::new(
                sut,
                o,
                run,
                spec.fleet.clone(),
                (spec.producers, spec.topics),
            )?),
            SutOptions::Amqp(o) => AnyDriver::Amqp(amqp::AmqpDriver::new(
                sut,
                o,
                run,
                (spec.topics, spec.subscriptions.unwrap_or(1)),
            )?),
            SutOptions::Amqp10(o) => AnyDriver::Amqp10(amqp10::Amqp10Driver::new(sut, o, run)?),
            SutOptions::Redis(o) => {
                AnyDriver::Redis(redis::RedisDriver::new(sut, o, run, spec.topics)?)
            }
            SutOptions::Nats(o) => {
                AnyDriver::Nats(nats::NatsDriver::new(sut, o, run, spec.consumers)?)
            }
            SutOptions::Stomp(o) => AnyDriver::Stomp(stomp::StompDriver::new(sut, o, run)?),
            SutOptions::Stream(o) => AnyDriver::Stream(stream::StreamDriver::new(
                sut,
                o,
                run,
                spec.topics,
                spec.consumers,
            )?),
            SutOptions::Kafka(o) => {
                // A partition for each consumer of a subscription (a consumer group).
                let groups = spec.topics.max(1) * spec.subscriptions.unwrap_or(1).max(1);
                let per_topic = spec.consumers.div_ceil(groups);
                AnyDriver::Kafka(kafka::KafkaDriver::new(
                    sut,
                    o,
                    run,
                    per_topic,
                    spec.topics,
                )?)
            }
        })
    }
}

/// Evaluates `$body` with `$d` bound to the driver inside `$any` (an [`AnyDriver`]),
/// whatever its type: code generic over [`Driver`] runs once per protocol, statically.
#[macro_export]
macro_rules! with_driver {
    ($any:expr, $d:ident => $body:expr) => {
        match $any {
            $crate::driver::AnyDriver::Mqtt($d) => $body,
            $crate::driver::AnyDriver::Amqp($d) => $body,
            $crate::driver::AnyDriver::Kafka($d) => $body,
            $crate::driver::AnyDriver::Amqp10($d) => $body,
            $crate::driver::AnyDriver::Stream($d) => $body,
            $crate::driver::AnyDriver::Redis($d) => $body,
            $crate::driver::AnyDriver::Nats($d) => $body,
            $crate::driver::AnyDriver::Stomp($d) => $body,
            $crate::driver::AnyDriver::Mixed($d) => $body,
        }
    };
}

/// Durations of connection set-up (never the message path) of one run's clients, in µs;
/// clones share the histogram.
#[derive(Debug, Clone)]
pub struct Durations(Arc<Mutex<Histogram<u64>>>);

impl Default for Durations {
    fn default() -> Self {
        Durations(Arc::new(Mutex::new(
            maestro_protocol::histogram::latency_histogram(),
        )))
    }
}

impl Durations {
    pub fn record(&self, took: Duration) {
        let us = (took.as_micros() as u64).clamp(1, maestro_protocol::histogram::MAX_US);
        if let Ok(mut h) = self.0.lock() {
            let _ = h.record(us);
        }
    }

    /// A copy of what was recorded so far; `None` when nothing was.
    pub fn snapshot(&self) -> Option<Histogram<u64>> {
        self.0
            .lock()
            .ok()
            .filter(|h| !h.is_empty())
            .map(|h| h.clone())
    }
}

/// Why a connection attempt failed, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConnectFailure {
    /// Nothing listens there (TCP RST).
    Refused,
    /// No answer in time (TCP, TLS or the protocol's handshake).
    Timeout,
    /// The broker refused the credentials or the client (MQTT CONNACK code).
    Auth,
    /// The TLS handshake failed.
    Tls,
    /// The connection closed during the handshake.
    Closed,
    /// Anything else (unreachable network, no source address, a protocol error).
    Other,
}

impl ConnectFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectFailure::Refused => "refused",
            ConnectFailure::Timeout => "timeout",
            ConnectFailure::Auth => "auth",
            ConnectFailure::Tls => "tls",
            ConnectFailure::Closed => "closed",
            ConnectFailure::Other => "other",
        }
    }
}

/// A failed connection attempt: why, for counting, and what happened, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ConnectError {
    pub why: ConnectFailure,
    pub reason: String,
}

impl ConnectError {
    pub fn new(why: ConnectFailure, reason: impl Into<String>) -> Self {
        ConnectError {
            why,
            reason: reason.into(),
        }
    }
}

/// What a run's own-connection clients (a fleet) did with their connections: counted at
/// each connect, drop and failure (never per message), read by the aggregator each second.
#[derive(Debug, Default)]
pub struct ConnectionTracker {
    counts: Mutex<Counts>,
    pub tcp_connect: Durations,
}

#[derive(Debug, Default)]
struct Counts {
    /// Open now.
    connected: u32,
    /// Failed attempts, all reasons.
    failed: u64,
    /// Totals for the result (`per_second` is kept in `by_second` until then).
    stats: maestro_protocol::ConnectionStats,
    by_second: std::collections::BTreeMap<i64, u32>,
}

impl ConnectionTracker {
    fn with(&self, f: impl FnOnce(&mut Counts)) {
        if let Ok(mut c) = self.counts.lock() {
            f(&mut c);
        }
    }

    /// A connection opened (`again`: after a drop or churn).
    pub fn opened(&self, again: bool) {
        let second = crate::engine::tasks::now_ns().div_euclid(1_000_000_000);
        self.with(|c| {
            c.connected = c.connected.saturating_add(1);
            c.stats.opened += 1;
            c.stats.reconnects += u64::from(again);
            *c.by_second.entry(second).or_default() += 1;
        });
    }

    /// A connection closed: by the SUT or the network (`dropped`), by churn, or at the end.
    pub fn closed(&self, dropped: bool, churned: bool) {
        self.with(|c| {
            c.connected = c.connected.saturating_sub(1);
            c.stats.dropped += u64::from(dropped);
            c.stats.churned += u64::from(churned);
        });
    }

    pub fn failed(&self, why: ConnectFailure) {
        self.with(|c| {
            c.failed += 1;
            *c.stats.failures.entry(why.as_str().to_owned()).or_default() += 1;
        });
    }

    /// Messages that arrived on a client's own subscription (added at its close).
    pub fn received(&self, n: u64) {
        self.with(|c| c.stats.received_by_clients += n);
    }

    /// MQTT 5 reason codes other than success a client got, `n` of `reason` (added at
    /// its close).
    pub fn reason(&self, reason: String, n: u64) {
        self.with(|c| *c.stats.reason_codes.entry(reason).or_default() += n);
    }

    /// Connected now, opened so far, failed so far.
    pub fn gauges(&self) -> (u32, u64, u64) {
        self.counts
            .lock()
            .map(|c| (c.connected, c.stats.opened, c.failed))
            .unwrap_or_default()
    }

    /// The run's totals, with the connections per second and the TCP connect histogram.
    pub fn stats(&self) -> maestro_protocol::ConnectionStats {
        let mut s = self
            .counts
            .lock()
            .map(|c| {
                let mut s = c.stats.clone();
                s.per_second = c.by_second.iter().map(|(k, v)| (*k, *v)).collect();
                s
            })
            .unwrap_or_default();
        s.tcp_connect_us = self
            .tcp_connect
            .snapshot()
            .map(|h| maestro_protocol::histogram::encode(&h));
        s
    }
}

/// How long a run's connections took to set up, per step (`None`: not measured).
#[derive(Debug, Default)]
pub struct Timings {
    /// The TLS handshake.
    pub tls_handshake: Option<Histogram<u64>>,
    /// From starting to connect until the SUT accepted the session (MQTT CONNACK; AMQP
    /// connection and channel open): TCP, TLS and the protocol's handshake.
    pub connect: Option<Histogram<u64>>,
    /// From subscribing until the SUT confirmed it (MQTT SUBACK).
    pub subscribe: Option<Histogram<u64>>,
}

impl Timings {
    /// What a driver timed: its TLS handshakes (with TLS), its connects and, where it
    /// times them, its subscribes.
    pub fn of(
        tls: Option<&tls::TlsClient>,
        connects: &Durations,
        subscribes: Option<&Durations>,
    ) -> Self {
        Timings {
            tls_handshake: tls.and_then(|t| t.handshakes.snapshot()),
            connect: connects.snapshot(),
            subscribe: subscribes.and_then(Durations::snapshot),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Url(#[from] maestro_protocol::SutUrlError),
    /// A setting the client library refuses (a librdkafka property).
    #[error("SUT URL {url:?}: {reason}")]
    Setting { url: String, reason: String },
    #[error("cannot reach the SUT at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("SUT URL {url:?}: {reason}")]
    Tls { url: String, reason: String },
    /// A driver was handed the URL of another protocol.
    #[error("{url} is not {expected} URL")]
    WrongScheme { url: String, expected: &'static str },
    /// The client library failed an operation; its error is kept as the source.
    #[error("{0}")]
    Client(#[source] ClientError),
    /// The SUT closed the connection, or it broke (the client reconnects).
    #[error("connection lost: {reason}")]
    ConnectionLost { reason: String },
    /// A link or channel the client needs is gone.
    #[error("{what} is closed")]
    Closed { what: &'static str },
    /// The AMQP channel was lost and opened again: what was in flight on it is gone.
    #[error("AMQP channel was closed; reconnected")]
    ChannelReopened,
    /// The broker cancelled the consumer (its queue was deleted, or its channel closed).
    #[error("AMQP consumer was cancelled by the broker")]
    ConsumerCancelled,
    /// The SUT did not take a message it was sent.
    #[error("{0}")]
    Rejected(Rejection),
    /// Kafka delivery reports that failed since the last drive, with the last reason.
    #[error("{failed} deliveries failed: {last}")]
    DeliveriesFailed { failed: u64, last: String },
    /// What the run created on the SUT could not be removed.
    #[error("cannot delete what the run created (keep=true keeps it): {what}")]
    Cleanup { what: String },
    /// The SUT did not answer an administrative request in time.
    #[error("no answer to {request} within {waited:?}")]
    NoAnswer {
        request: &'static str,
        waited: std::time::Duration,
    },
    /// The run was aborted while its clients were connecting.
    #[error("the run was aborted while connecting")]
    Aborted,
    /// A client's task ended before it said whether it connected.
    #[error("a task ended while connecting")]
    TaskEnded,
}

/// A client library's error, shared so that [`DriverError`] stays `Clone` (errors are
/// counted by message, and the first of each kept).
#[derive(Debug, Clone)]
pub struct ClientError(Arc<dyn std::error::Error + Send + Sync>);

impl ClientError {
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        ClientError(Arc::new(e))
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

impl DriverError {
    /// A client library's error.
    pub fn client(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        DriverError::Client(ClientError::new(e))
    }
}

/// Why the SUT did not take a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// AMQP 0-9-1: the broker nacked the publish.
    #[error("publish not confirmed (nack)")]
    Nack,
    /// AMQP 0-9-1: a mandatory publish no queue took came back.
    #[error("message returned as unroutable (mandatory)")]
    Unroutable,
    /// AMQP 1.0: the disposition was not `accepted` (rejected, released, modified).
    #[error("the broker did not accept a message: {0}")]
    Outcome(String),
    /// MQTT 5: `failed` acknowledgements with a failure reason code, the first `reason`.
    #[error("the broker refused a publish: {reason}")]
    Refused { failed: u64, reason: String },
}

impl DriverError {
    /// How many errors this is: the publishes refused at once, else one.
    pub fn count(&self) -> u64 {
        match self {
            DriverError::Rejected(Rejection::Refused { failed, .. }) => *failed,
            _ => 1,
        }
    }

    /// True when the SUT refused messages and the connection is as it was.
    pub fn is_refusal(&self) -> bool {
        matches!(self, DriverError::Rejected(_))
    }

    /// The reason alone, without the URL (for messages that name the URL already).
    pub fn reason(&self) -> String {
        match self {
            DriverError::Unreachable { reason, .. }
            | DriverError::Setting { reason, .. }
            | DriverError::Tls { reason, .. } => reason.clone(),
            other => other.to_string(),
        }
    }
}

/// Messages handed to a producer that writes them from `drive` (AMQP 0-9-1 and 1.0), up
/// to a bound: at the bound, `push` says [`TrySendError::Full`].
#[derive(Debug)]
pub struct SendQueue {
    queue: std::collections::VecDeque<Bytes>,
    bound: usize,
}

impl SendQueue {
    pub fn new(bound: usize) -> Self {
        Self {
            queue: std::collections::VecDeque::with_capacity(bound),
            bound,
        }
    }

    #[inline]
    pub fn push(&mut self, payload: Bytes) -> Result<(), TrySendError> {
        if self.queue.len() >= self.bound {
            return Err(TrySendError::Full);
        }
        self.queue.push_back(payload);
        Ok(())
    }

    #[inline]
    pub fn room(&self) -> usize {
        self.bound.saturating_sub(self.queue.len())
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The oldest message, still queued.
    pub fn front(&self) -> Option<&Bytes> {
        self.queue.front()
    }

    pub fn pop_front(&mut self) -> Option<Bytes> {
        self.queue.pop_front()
    }

    /// Up to `n` of the oldest messages, out of the queue.
    pub fn take(&mut self, n: usize) -> std::collections::vec_deque::Drain<'_, Bytes> {
        let n = n.min(self.queue.len());
        self.queue.drain(..n)
    }
}

/// Acknowledgements the SUT gave for sends, kept by a producer until the engine takes
/// them: (actual send time, acknowledgement time) in ns on the worker's wall clock. The
/// buffer keeps its capacity across takes: no allocation per message once warm.
#[derive(Debug, Default)]
pub struct AckTimes(Vec<(i64, i64)>);

impl AckTimes {
    #[inline]
    pub fn push(&mut self, sent_ns: i64, acked_ns: i64) {
        self.0.push((sent_ns, acked_ns));
    }

    /// Hands every kept pair to `f`, and forgets them.
    #[inline]
    pub fn take(&mut self, mut f: impl FnMut(i64, i64)) {
        for (sent, acked) in self.0.drain(..) {
            f(sent, acked);
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The actual send time in a message maestro made (its header), for acknowledgements.
#[inline]
pub fn sent_ns(payload: &[u8]) -> Option<i64> {
    maestro_protocol::PayloadHeader::read_any(payload)
        .ok()
        .map(|h| h.actual_ns)
}

/// Why a message could not be handed to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrySendError {
    /// The client's queue is full: drive the connection, then try again.
    Full,
    /// The client is gone; this producer cannot send any more.
    Closed(String),
}

pub trait Producer: Send + 'static {
    /// Hands one message to the client without waiting. `Bytes` so that bodies can share
    /// one buffer (no allocation per message).
    fn try_send(&mut self, payload: bytes::Bytes) -> Result<(), TrySendError>;
    /// How many more messages `try_send` takes now (so no payload is built in vain).
    fn room(&self) -> usize;
    /// False when the client needs no driving while it waits for the next message (its
    /// own threads do the I/O); the engine then only sleeps until the next send time.
    fn needs_drive(&self) -> bool {
        true
    }
    /// Drives the connection (writes, acks, reconnects) until something happened.
    fn drive(&mut self) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// True when nothing handed over is still waiting to be written or acknowledged.
    fn idle(&self) -> bool;
    /// Hands the acknowledgements the SUT gave since the last call to `f`, as (actual send
    /// time, acknowledgement time) in ns: MQTT PUBACK (QoS 1) or PUBCOMP (QoS 2), AMQP
    /// publisher confirms, Kafka delivery reports. Modes without acknowledgements give
    /// none.
    fn take_acks(&mut self, f: impl FnMut(i64, i64)) {
        let _ = f;
    }
    /// True when `take_acks` has something to give (cheap: checked every loop turn).
    fn has_acks(&self) -> bool {
        false
    }
    /// Failures the client learned about but `drive` has not reported yet (for example
    /// delivery reports that arrived during the final drain).
    fn unreported_errors(&mut self) -> Option<DriverError> {
        None
    }
    /// Closes the connection politely.
    fn close(self) -> impl Future<Output = ()> + Send;
}

pub trait Consumer: Send + 'static {
    /// Waits for the next event: a message payload, or `None` for anything else. Must be
    /// cancel-safe: the engine drops it at a stop or a timeout, and a message taken from
    /// the client must never be dropped before it is returned.
    fn recv(&mut self) -> impl Future<Output = Result<Option<Bytes>, DriverError>> + Send;
    /// Asked in the drain after a stop, when nothing arrived for a while: whether this
    /// consumer may have everything the SUT holds for it. One that can ask again (Kafka:
    /// each assigned partition, from the offset it expects) does so and says false, so the
    /// drain goes on, until asking again brought nothing new; one that cannot says true.
    fn caught_up(&mut self) -> impl Future<Output = bool> + Send {
        async { true }
    }
    fn close(self) -> impl Future<Output = ()> + Send;
}

pub trait Driver: Clone + Send + Sync + 'static {
    type Producer: Producer;
    type Consumer: Consumer;
    /// How long this run's connections took to set up, so far; steps the client library
    /// does out of sight (librdkafka's) are `None`.
    fn timings(&self) -> Timings {
        Timings::default()
    }
    /// Connections opened, dropped and failed, when the driver makes its own (fleets).
    fn connections(&self) -> Option<Arc<ConnectionTracker>> {
        None
    }
    /// Called once when this worker's part of the run is over (every producer and consumer
    /// has reported), before its result goes out. `owner`: this worker has the run's
    /// producer 0, so it is the one worker that removes what the run created on the SUT
    /// (unless the URL says to keep it). An error is reported with the run's errors.
    fn finish(&self, owner: bool) -> impl Future<Output = Result<(), DriverError>> + Send {
        let _ = owner;
        async { Ok(()) }
    }
    /// Connects a producer (returns once the SUT accepted the connection).
    fn producer(
        &self,
        plan: &ProducerPlan,
    ) -> impl Future<Output = Result<Self::Producer, DriverError>> + Send;
    /// Connects a consumer and subscribes (returns once the subscription is acknowledged).
    fn consumer(
        &self,
        plan: &ConsumerPlan,
    ) -> impl Future<Output = Result<Self::Consumer, DriverError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_client_error_keeps_its_source_and_its_message() {
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "pipe broke");
        let e = DriverError::client(io);
        assert_eq!(e.to_string(), "pipe broke");
        let source = e.source().and_then(|s| s.source());
        assert!(
            source.is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some()),
            "{e:?}"
        );
        // Clones share the source; the engine counts errors by message.
        assert_eq!(e.clone().to_string(), e.reason());
    }

    #[test]
    fn typed_errors_say_what_happened() {
        let cases = [
            (
                DriverError::WrongScheme {
                    url: "amqp://h".into(),
                    expected: "an MQTT",
                },
                "amqp://h is not an MQTT URL",
            ),
            (
                DriverError::Rejected(Rejection::Nack),
                "publish not confirmed (nack)",
            ),
            (
                DriverError::DeliveriesFailed {
                    failed: 3,
                    last: "timed out".into(),
                },
                "3 deliveries failed: timed out",
            ),
            (
                DriverError::NoAnswer {
                    request: "DeleteTopics",
                    waited: Duration::from_secs(10),
                },
                "no answer to DeleteTopics within 10s",
            ),
            (
                DriverError::Closed {
                    what: "the AMQP 1.0 link",
                },
                "the AMQP 1.0 link is closed",
            ),
        ];
        for (e, says) in cases {
            assert_eq!(e.to_string(), says);
        }
    }
}
