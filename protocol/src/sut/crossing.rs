//! Runs that publish in one protocol and consume in another, on one broker: the pairs
//! whose topics the broker maps, and how.

use super::*;

/// How one broker carries a run's messages from its producers' protocol to its
/// consumers' protocol: RabbitMQ's own mappings, and ActiveMQ's between STOMP and MQTT
/// (the same: `/` and `.` swapped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crossing {
    /// MQTT in, AMQP 0-9-1 out: RabbitMQ's MQTT plugin publishes topic `a/b` to the
    /// exchange `amq.topic` with routing key `a.b`; each topic's queue is bound there.
    MqttToAmqp,
    /// AMQP 0-9-1 in, MQTT out: producers publish to `amq.topic` with routing key `a.b`,
    /// which the MQTT plugin delivers to subscribers of `a/b`.
    AmqpToMqtt,
    /// AMQP 0-9-1 in, RabbitMQ's stream protocol out: producers publish to the default
    /// exchange with the stream's name as routing key; the stream protocol reads it.
    AmqpToStream,
    /// AMQP 1.0 in, RabbitMQ's stream protocol out: producers send to the address
    /// `/amq/queue/<stream>` (the default exchange, the stream's name as routing key).
    Amqp10ToStream,
    /// STOMP in, MQTT out (RabbitMQ or ActiveMQ): producers send to `/topic/a.b`, which
    /// the broker delivers to MQTT subscribers of `a/b`.
    StompToMqtt,
    /// MQTT in, STOMP out (RabbitMQ or ActiveMQ): MQTT topic `a/b` reaches STOMP
    /// subscribers of `/topic/a.b`.
    MqttToStomp,
}

/// The pairs [`Crossing::of`] maps, for messages.
pub const CROSSINGS: &str = "mqtt -> amqp, amqp -> mqtt, amqp -> rabbitmq-stream and amqp10 -> rabbitmq-stream on one RabbitMQ; stomp -> mqtt and mqtt -> stomp (dest=topic) on one RabbitMQ or ActiveMQ";

impl Crossing {
    /// The crossing from `producers`' protocol to `consumers'`, or why there is none.
    pub fn of(producers: &SutUrl, consumers: &SutUrl) -> Result<Self, CrossingError> {
        let pair = || {
            format!(
                "{} -> {}",
                producers.scheme().as_str(),
                consumers.scheme().as_str()
            )
        };
        let crossing = match (&producers.options, &consumers.options) {
            (SutOptions::Mqtt(_), SutOptions::Amqp(a)) => {
                Self::amqp_untouched(a, "consumers")?;
                Crossing::MqttToAmqp
            }
            (SutOptions::Amqp(a), SutOptions::Mqtt(_)) => {
                Self::amqp_untouched(a, "producers")?;
                Crossing::AmqpToMqtt
            }
            (SutOptions::Amqp(a), SutOptions::Stream(_)) => {
                Self::amqp_untouched(a, "producers")?;
                Crossing::AmqpToStream
            }
            (SutOptions::Amqp10(_), SutOptions::Stream(_)) => Crossing::Amqp10ToStream,
            (SutOptions::Stomp(s), SutOptions::Mqtt(_)) => {
                Self::stomp_topics(s, "producers")?;
                Crossing::StompToMqtt
            }
            (SutOptions::Mqtt(_), SutOptions::Stomp(s)) => {
                Self::stomp_topics(s, "consumers")?;
                Crossing::MqttToStomp
            }
            _ if producers.scheme() == consumers.scheme() => {
                return Err(CrossingError::Same {
                    protocol: producers.scheme().as_str(),
                });
            }
            _ => return Err(CrossingError::Unmapped { pair: pair() }),
        };
        let (p, c) = (&producers.host().name, &consumers.host().name);
        if p != c {
            return Err(CrossingError::TwoBrokers {
                producers: p.clone(),
                consumers: c.clone(),
            });
        }
        Ok(crossing)
    }

    /// The STOMP side speaks to topics (`dest=topic`): the destinations the broker maps
    /// to MQTT topics.
    fn stomp_topics(s: &StompOptions, side: &'static str) -> Result<(), CrossingError> {
        if s.dest == StompDestination::Topic {
            Ok(())
        } else {
            Err(CrossingError::StompQueue { side })
        }
    }

    /// The AMQP side routes through the broker's mapping: it names no exchange, routing
    /// key or fanout of its own.
    fn amqp_untouched(a: &AmqpOptions, side: &'static str) -> Result<(), CrossingError> {
        let own = [
            (!a.exchange.is_empty()).then_some("exchange"),
            a.routing_key.as_ref().map(|_| "routing_key"),
            a.fanout.then_some("fanout"),
        ];
        match own.into_iter().flatten().next() {
            Some(key) => Err(CrossingError::OwnRouting { side, key }),
            None => Ok(()),
        }
    }
}

/// RabbitMQ's routing key for MQTT topic `topic`: `/` becomes `.` and `.` becomes `/`.
pub fn mqtt_topic_to_routing_key(topic: &str) -> String {
    topic
        .chars()
        .map(|c| match c {
            '/' => '.',
            '.' => '/',
            c => c,
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrossingError {
    #[error(
        "--consumer-sut: {pair}: maestro cannot map topics between these protocols (it maps {CROSSINGS})"
    )]
    Unmapped { pair: String },
    #[error("--consumer-sut: both sides speak {protocol}: give one --sut")]
    Same { protocol: &'static str },
    #[error(
        "--consumer-sut: producers reach {producers:?}, consumers {consumers:?}: a crossing is one broker's mapping, so both URLs name the same host"
    )]
    TwoBrokers {
        producers: String,
        consumers: String,
    },
    #[error(
        "--consumer-sut: the AMQP {side}' URL sets {key}=, but crossing protocols the broker's mapping routes the messages (amq.topic, or the default exchange to a stream)"
    )]
    OwnRouting {
        side: &'static str,
        key: &'static str,
    },
    #[error(
        "--consumer-sut: the STOMP {side}' URL needs dest=topic: the broker maps MQTT topics to STOMP /topic/ destinations only"
    )]
    StompQueue { side: &'static str },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> SutUrl {
        SutUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn rabbitmq_pairs_map_and_others_are_named() {
        let mqtt = url("mqtt://h:1883/t?qos=1");
        let amqp = url("amqp://guest:guest@h/%2f?confirms=true");
        let stream = url("rabbitmq-stream://guest:guest@h");
        assert_eq!(Crossing::of(&mqtt, &amqp), Ok(Crossing::MqttToAmqp));
        assert_eq!(Crossing::of(&amqp, &mqtt), Ok(Crossing::AmqpToMqtt));
        assert_eq!(Crossing::of(&amqp, &stream), Ok(Crossing::AmqpToStream));
        let e = Crossing::of(&mqtt, &url("kafka://h:9092/x")).unwrap_err();
        assert!(e.to_string().contains("mqtt -> kafka"), "{e}");
        assert!(e.to_string().contains("amqp -> mqtt"), "{e}");
        let e = Crossing::of(&mqtt, &url("mqtt://h/u")).unwrap_err();
        assert!(e.to_string().contains("both sides speak mqtt"), "{e}");
        let e = Crossing::of(&mqtt, &url("amqp://other/%2f")).unwrap_err();
        assert!(e.to_string().contains("\"other\""), "{e}");
        let e = Crossing::of(&mqtt, &url("amqp://h/%2f?exchange=x")).unwrap_err();
        assert!(e.to_string().contains("sets exchange="), "{e}");
        let amqp10 = url("amqp10://guest:guest@h/queue/x");
        assert_eq!(Crossing::of(&amqp10, &stream), Ok(Crossing::Amqp10ToStream));
        let stomp = url("stomp://h?dest=topic");
        assert_eq!(Crossing::of(&stomp, &mqtt), Ok(Crossing::StompToMqtt));
        assert_eq!(Crossing::of(&mqtt, &stomp), Ok(Crossing::MqttToStomp));
        let e = Crossing::of(&url("stomp://h"), &mqtt).unwrap_err();
        assert!(e.to_string().contains("needs dest=topic"), "{e}");
        let e = Crossing::of(&stomp, &amqp).unwrap_err();
        assert!(e.to_string().contains("stomp -> amqp"), "{e}");
    }

    #[test]
    fn rabbitmq_swaps_slashes_and_dots() {
        assert_eq!(mqtt_topic_to_routing_key("maestro/r.1/0"), "maestro.r/1.0");
    }
}
