//! Runs that publish in one protocol and consume in another on one broker
//! (`--consumer-sut`): producers come from one protocol's driver, consumers from the
//! other's, and the broker's mapping ([`Crossing`]) names each side's topics so that they
//! meet. Every message keeps its maestro header in its body, so accounting stays exact.
//!
//! [`AnyProducer`] and [`AnyConsumer`] dispatch with one `match` per call (no boxing):
//! the engine runs once more, over [`MixedDriver`], not once per pair of protocols.

use super::amqp::Route;
use super::{AnyDriver, Consumer, Driver, DriverError, Producer, Timings};
use super::{TrySendError, amqp, amqp10, kafka, mqtt, nats, redis, stomp, stream};
use bytes::Bytes;
use maestro_protocol::sut::{Crossing, mqtt_topic_to_routing_key};
use maestro_protocol::{ConsumerPlan, ProducerPlan, RunId, TestSpec};
use std::sync::Arc;

/// Producers of one protocol, consumers of another.
#[derive(Debug, Clone)]
pub struct MixedDriver {
    producers: Arc<AnyDriver>,
    consumers: Arc<AnyDriver>,
}

impl MixedDriver {
    /// The two sides of `spec` (whose `consumer_sut` is set), routed to meet.
    pub fn open(spec: &TestSpec, run: &RunId) -> Result<Self, DriverError> {
        let Some(consumer_sut) = &spec.consumer_sut else {
            return Err(DriverError::Setting {
                url: spec.sut.redacted(),
                reason: "a mixed run needs a consumer SUT".into(),
            });
        };
        let crossing = Crossing::of(&spec.sut, consumer_sut).map_err(|e| DriverError::Setting {
            url: consumer_sut.redacted(),
            reason: e.to_string(),
        })?;
        let producers = AnyDriver::open_one(spec, &spec.sut, run)?;
        let consumers = AnyDriver::open_one(spec, consumer_sut, run)?;
        let topics = spec.topics.max(1);
        let (producers, consumers) = match (crossing, producers, consumers) {
            (Crossing::MqttToAmqp, AnyDriver::Mqtt(m), AnyDriver::Amqp(a)) => {
                let route = Route {
                    exchange: "amq.topic".into(),
                    keys: (0..topics)
                        .map(|t| mqtt_topic_to_routing_key(&m.topic(t)))
                        .collect(),
                    consumes: true,
                };
                (AnyDriver::Mqtt(m), AnyDriver::Amqp(a.routed(route)))
            }
            (Crossing::AmqpToMqtt, AnyDriver::Amqp(a), AnyDriver::Mqtt(m)) => {
                let route = Route {
                    exchange: "amq.topic".into(),
                    keys: (0..topics)
                        .map(|t| mqtt_topic_to_routing_key(&m.topic(t)))
                        .collect(),
                    consumes: false,
                };
                (AnyDriver::Amqp(a.routed(route)), AnyDriver::Mqtt(m))
            }
            (Crossing::AmqpToStream, AnyDriver::Amqp(a), AnyDriver::Stream(s)) => {
                let route = Route {
                    exchange: String::new(),
                    keys: (0..topics).map(|t| s.stream(t)).collect(),
                    consumes: false,
                };
                (AnyDriver::Amqp(a.routed(route)), AnyDriver::Stream(s))
            }
            (Crossing::Amqp10ToStream, AnyDriver::Amqp10(a), AnyDriver::Stream(s)) => {
                // RabbitMQ's AMQP 1.0 address of an existing queue: the default exchange
                // with the queue's name as routing key.
                let routes = (0..topics)
                    .map(|t| format!("/amq/queue/{}", s.stream(t)))
                    .collect();
                (AnyDriver::Amqp10(a.routed(routes)), AnyDriver::Stream(s))
            }
            (Crossing::StompToMqtt, AnyDriver::Stomp(s), AnyDriver::Mqtt(m)) => {
                let routes = (0..topics).map(|t| stomp_topic(&m.topic(t))).collect();
                (AnyDriver::Stomp(s.routed(routes)), AnyDriver::Mqtt(m))
            }
            (Crossing::MqttToStomp, AnyDriver::Mqtt(m), AnyDriver::Stomp(s)) => {
                let routes = (0..topics).map(|t| stomp_topic(&m.topic(t))).collect();
                (AnyDriver::Mqtt(m), AnyDriver::Stomp(s.routed(routes)))
            }
            (crossing, _, _) => {
                return Err(DriverError::Setting {
                    url: consumer_sut.redacted(),
                    reason: format!("{crossing:?}: the drivers do not match the crossing"),
                });
            }
        };
        Ok(MixedDriver {
            producers: Arc::new(producers),
            consumers: Arc::new(consumers),
        })
    }
}

/// The STOMP destination the broker maps MQTT topic `topic` to (RabbitMQ and ActiveMQ:
/// `/topic/` and the topic with `/` and `.` swapped).
fn stomp_topic(topic: &str) -> String {
    format!("/topic/{}", mqtt_topic_to_routing_key(topic))
}

/// Runs `$body` with `$d` bound to the single-protocol driver inside `$any`; a mixed one
/// (never nested) is `$mixed`.
macro_rules! with_one {
    ($any:expr, $d:ident => $body:expr, $mixed:expr) => {
        match $any {
            AnyDriver::Mqtt($d) => $body,
            AnyDriver::Amqp($d) => $body,
            AnyDriver::Kafka($d) => $body,
            AnyDriver::Amqp10($d) => $body,
            AnyDriver::Stream($d) => $body,
            AnyDriver::Redis($d) => $body,
            AnyDriver::Nats($d) => $body,
            AnyDriver::Stomp($d) => $body,
            AnyDriver::Mixed(_) => $mixed,
        }
    };
}

fn nested() -> DriverError {
    DriverError::Setting {
        url: String::new(),
        reason: "a mixed run's sides are single protocols".into(),
    }
}

/// Adds `b`'s recordings to `a`'s.
fn merged(
    a: Option<hdrhistogram::Histogram<u64>>,
    b: Option<hdrhistogram::Histogram<u64>>,
) -> Option<hdrhistogram::Histogram<u64>> {
    match (a, b) {
        (Some(mut a), Some(b)) => {
            let _ = a.add(&b);
            Some(a)
        }
        (a, b) => a.or(b),
    }
}

impl Driver for MixedDriver {
    type Producer = AnyProducer;
    type Consumer = AnyConsumer;

    fn timings(&self) -> Timings {
        let p = with_one!(&*self.producers, d => d.timings(), Timings::default());
        let c = with_one!(&*self.consumers, d => d.timings(), Timings::default());
        Timings {
            tls_handshake: merged(p.tls_handshake, c.tls_handshake),
            connect: merged(p.connect, c.connect),
            subscribe: merged(p.subscribe, c.subscribe),
        }
    }

    async fn finish(&self, owner: bool) -> Result<(), DriverError> {
        let p = with_one!(&*self.producers, d => d.finish(owner).await, Ok(()));
        let c = with_one!(&*self.consumers, d => d.finish(owner).await, Ok(()));
        p.and(c)
    }

    async fn producer(&self, plan: &ProducerPlan) -> Result<AnyProducer, DriverError> {
        with_one!(&*self.producers, d => d.producer(plan).await.map(AnyProducer::from), Err(nested()))
    }

    async fn consumer(&self, plan: &ConsumerPlan) -> Result<AnyConsumer, DriverError> {
        with_one!(&*self.consumers, d => d.consumer(plan).await.map(AnyConsumer::from), Err(nested()))
    }
}

macro_rules! any_client {
    ($name:ident, $($variant:ident($ty:ty)),* $(,)?) => {
        /// A client of any single protocol. One per client, made once and never moved on
        /// the hot path: its size is the largest client's, without an indirection per call.
        #[allow(missing_debug_implementations, clippy::large_enum_variant)]
        pub enum $name {
            $($variant($ty),)*
        }
        $(impl From<$ty> for $name {
            fn from(c: $ty) -> Self {
                $name::$variant(c)
            }
        })*
    };
}

any_client!(
    AnyProducer,
    Mqtt(<mqtt::MqttDriver as Driver>::Producer),
    Amqp(amqp::AmqpProducer),
    Kafka(<kafka::KafkaDriver as Driver>::Producer),
    Amqp10(<amqp10::Amqp10Driver as Driver>::Producer),
    Stream(<stream::StreamDriver as Driver>::Producer),
    Redis(redis::RedisProducer),
    Nats(nats::NatsProducer),
    Stomp(stomp::StompProducer),
);

any_client!(
    AnyConsumer,
    Mqtt(<mqtt::MqttDriver as Driver>::Consumer),
    Amqp(amqp::AmqpConsumer),
    Kafka(<kafka::KafkaDriver as Driver>::Consumer),
    Amqp10(<amqp10::Amqp10Driver as Driver>::Consumer),
    Stream(<stream::StreamDriver as Driver>::Consumer),
    Redis(redis::RedisConsumer),
    Nats(nats::NatsConsumer),
    Stomp(stomp::StompConsumer),
);

/// Runs `$body` with `$c` bound to the client inside `$any`.
macro_rules! each {
    ($t:ident, $any:expr, $c:ident => $body:expr) => {
        match $any {
            $t::Mqtt($c) => $body,
            $t::Amqp($c) => $body,
            $t::Kafka($c) => $body,
            $t::Amqp10($c) => $body,
            $t::Stream($c) => $body,
            $t::Redis($c) => $body,
            $t::Nats($c) => $body,
            $t::Stomp($c) => $body,
        }
    };
}

impl Producer for AnyProducer {
    #[inline]
    fn try_send(&mut self, payload: Bytes) -> Result<(), TrySendError> {
        each!(AnyProducer, self, p => p.try_send(payload))
    }

    #[inline]
    fn room(&self) -> usize {
        each!(AnyProducer, self, p => p.room())
    }

    fn needs_drive(&self) -> bool {
        each!(AnyProducer, self, p => p.needs_drive())
    }

    async fn drive(&mut self) -> Result<(), DriverError> {
        each!(AnyProducer, self, p => p.drive().await)
    }

    fn idle(&self) -> bool {
        each!(AnyProducer, self, p => p.idle())
    }

    fn take_acks(&mut self, f: impl FnMut(i64, i64)) {
        each!(AnyProducer, self, p => p.take_acks(f))
    }

    fn has_acks(&self) -> bool {
        each!(AnyProducer, self, p => p.has_acks())
    }

    fn unreported_errors(&mut self) -> Option<DriverError> {
        each!(AnyProducer, self, p => p.unreported_errors())
    }

    async fn close(self) {
        each!(AnyProducer, self, p => p.close().await)
    }
}

impl Consumer for AnyConsumer {
    async fn recv(&mut self) -> Result<Option<Bytes>, DriverError> {
        each!(AnyConsumer, self, c => c.recv().await)
    }

    async fn caught_up(&mut self) -> bool {
        each!(AnyConsumer, self, c => c.caught_up().await)
    }

    async fn close(self) {
        each!(AnyConsumer, self, c => c.close().await)
    }
}
