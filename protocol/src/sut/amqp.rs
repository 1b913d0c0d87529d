//! AMQP 0-9-1 (`amqp://`, `amqps://`): its options, how its URL is parsed, and what it can do.

use super::*;

pub(super) const PROTOCOL: Protocol = Protocol {
    name: "amqp",
    title: "AMQP 0-9-1",
    tls_name: Some("amqps"),
    aliases: &[],
    port: 5672,
    tls_port: 5671,
    capabilities: Capabilities {
        competing_consumers: true,
        several_subscriptions: true,
        reliable_acks: true,
        backlog: true,
        partitions: false,
        keys: false,
        several_hosts: false,
        tls: true,
        per_client_certificates: true,
        fleet: false,
        files_per_client: 1,
    },
    tls_asked: tls_by_scheme,
    tls_keys: TLS_KEYS,
    tls_hint: None,
    url_form: "amqp[s]://[user:pass@]host[:port][/vhost][?options]",
    url_options: OPTIONS,
    options,
};

/// The options this protocol's URL takes (TLS ones aside).
const OPTIONS: &[UrlOption] = &[
    UrlOption {
        key: "exchange",
        default: "the default exchange",
        meaning: "the exchange producers publish to (routing by queue name on the default one)",
    },
    UrlOption {
        key: "exchange_type",
        default: "direct",
        meaning: "direct, fanout, topic or headers",
    },
    UrlOption {
        key: "routing_key",
        default: "the topic",
        meaning: "the routing key of publishes",
    },
    UrlOption {
        key: "queue",
        default: "maestro",
        meaning: "queue-name prefix: topic `i` is queue `<queue>.<run-id>.<i>`",
    },
    UrlOption {
        key: "durable",
        default: "false",
        meaning: "declare durable queues and exchanges",
    },
    UrlOption {
        key: "persistent",
        default: "false",
        meaning: "publish persistent messages (delivery mode 2)",
    },
    UrlOption {
        key: "confirms",
        default: "false",
        meaning: "publisher confirms: a message is sent when the broker confirms it",
    },
    UrlOption {
        key: "confirm_window",
        default: "1000",
        meaning: "unconfirmed publishes in flight per producer",
    },
    UrlOption {
        key: "mandatory",
        default: "false",
        meaning: "publish with the mandatory flag",
    },
    UrlOption {
        key: "prefetch",
        default: "1000",
        meaning: "the consumers' prefetch count",
    },
    UrlOption {
        key: "ack",
        default: "auto",
        meaning: "`auto` or `manual` acknowledgements",
    },
    UrlOption {
        key: "ack_batch",
        default: "100",
        meaning: "manual acks: one `multiple` ack per this many deliveries",
    },
    UrlOption {
        key: "fanout",
        default: "false",
        meaning: "each consumer gets its own queue bound to the exchange (every consumer gets every message)",
    },
    UrlOption {
        key: "keep",
        default: "false",
        meaning: "keep the run's exchanges and queues afterwards",
    },
    UrlOption {
        key: "queue_type",
        default: "classic",
        meaning: "classic, quorum or stream (`x-queue-type`); quorum and stream queues are durable, a stream's consumers acknowledge manually and each reads the whole stream",
    },
    UrlOption {
        key: "stream_offset",
        default: "first",
        meaning: "queue_type=stream: where consumers start (`x-stream-offset`): first (the run's stream is its own: all of it), last, next, an offset, or a time (RFC 3339, or a duration ago like 10m)",
    },
];

fn options(
    p: &Parser,
    path: &str,
    query: &[(String, String)],
    _credentials: bool,
) -> Result<SutOptions, SutUrlError> {
    p.amqp(path, query).map(SutOptions::Amqp)
}

impl AmqpOptions {
    /// True when these options promise no loss in normal operation.
    pub fn reliable(&self) -> bool {
        self.confirms
    }

    /// True when the consumers of a topic share one queue's messages: not with a queue
    /// per consumer (`fanout=true`), nor on a stream, which every consumer reads whole.
    pub fn consumers_compete(&self) -> bool {
        !self.fanout && self.queue_type != QueueType::Stream
    }
}

/// AMQP exchange types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeType {
    Direct,
    Fanout,
    Topic,
    Headers,
}

/// The kind of queue declared (`x-queue-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    Classic,
    /// Replicated (Raft); always durable.
    Quorum,
    /// An append-only log: consumers read it without removing, from an offset.
    Stream,
}

impl QueueType {
    /// The `x-queue-type` argument's value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }
    }
}

/// Where a stream queue's consumer starts (`x-stream-offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamOffset {
    First,
    Last,
    Next,
    /// An absolute offset in the stream.
    Offset(u64),
    /// The first message stored at or after this time.
    Timestamp(std::time::SystemTime),
    /// The first message stored at or after this long before the consumer attaches.
    Ago(std::time::Duration),
}

impl StreamOffset {
    /// The time a consumer starts from, for the offsets that are times (`now` resolves
    /// "this long ago"); `None` for the others.
    pub fn time(self, now: std::time::SystemTime) -> Option<std::time::SystemTime> {
        match self {
            StreamOffset::Timestamp(t) => Some(t),
            StreamOffset::Ago(d) => Some(now.checked_sub(d).unwrap_or(std::time::UNIX_EPOCH)),
            _ => None,
        }
    }
}

/// AMQP consumer acknowledgements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    Auto,
    Manual,
}

/// AMQP 0-9-1 options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpOptions {
    /// The virtual host, percent-decoded (`/` when the URL has no path or `%2f`).
    pub vhost: String,
    /// Empty: the default exchange.
    pub exchange: String,
    pub exchange_type: ExchangeType,
    pub routing_key: Option<String>,
    /// Queues are `<queue>.<run-id>.<i>`.
    pub queue: String,
    pub durable: bool,
    pub persistent: bool,
    /// Publisher confirms, pipelined up to `confirm_window`.
    pub confirms: bool,
    pub confirm_window: u32,
    pub mandatory: bool,
    pub prefetch: u16,
    pub ack: AckMode,
    /// Manual acks: one `multiple` ack per this many deliveries (kept under half the
    /// prefetch).
    pub ack_batch: u32,
    /// Every consumer gets its own queue (fan-out); otherwise consumers of a topic share
    /// its queue.
    pub fanout: bool,
    /// Keep the run's queues and exchanges afterwards.
    pub keep: bool,
    pub queue_type: QueueType,
    /// Stream queues: where consumers start.
    pub stream_offset: StreamOffset,
}

impl Parser {
    pub(super) fn amqp(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<AmqpOptions, SutUrlError> {
        let vhost = match path.strip_prefix('/').unwrap_or(path) {
            "" => "/".to_owned(),
            v => decode(v),
        };
        let mut o = AmqpOptions {
            vhost,
            exchange: String::new(),
            exchange_type: ExchangeType::Direct,
            routing_key: None,
            queue: "maestro".into(),
            durable: false,
            persistent: false,
            confirms: false,
            confirm_window: 1000,
            mandatory: false,
            prefetch: 1000,
            ack: AckMode::Auto,
            ack_batch: 100,
            fanout: false,
            keep: false,
            queue_type: QueueType::Classic,
            // The run's stream is its own: from the first message is everything it sent,
            // whenever a consumer's reader attaches (with `next` one that attached late
            // would miss the first messages).
            stream_offset: StreamOffset::First,
        };
        let (mut durable_given, mut ack_given, mut offset_given) = (None, None, None);
        for (key, v) in query {
            let (key, v) = (key.as_str(), v.as_str());
            match key {
                "exchange" => o.exchange = v.to_owned(),
                "exchange_type" => {
                    o.exchange_type = match v {
                        "direct" => ExchangeType::Direct,
                        "fanout" => ExchangeType::Fanout,
                        "topic" => ExchangeType::Topic,
                        "headers" => ExchangeType::Headers,
                        _ => {
                            return Err(self.value(
                                key,
                                v,
                                "is not direct, fanout, topic or headers",
                            ));
                        }
                    }
                }
                "routing_key" => o.routing_key = Some(v.to_owned()),
                "queue" => o.queue = v.to_owned(),
                "durable" => {
                    o.durable = self.flag(key, v)?;
                    durable_given = Some(v);
                }
                "persistent" => o.persistent = self.flag(key, v)?,
                "confirms" => o.confirms = self.flag(key, v)?,
                "confirm_window" => o.confirm_window = self.number(key, v, 1_000_000)? as u32,
                "mandatory" => o.mandatory = self.flag(key, v)?,
                "prefetch" => o.prefetch = self.number(key, v, u16::MAX.into())? as u16,
                "ack" => {
                    ack_given = Some(v);
                    o.ack = match v {
                        "auto" => AckMode::Auto,
                        "manual" => AckMode::Manual,
                        _ => return Err(self.value(key, v, "is not auto or manual")),
                    }
                }
                "ack_batch" => o.ack_batch = self.number(key, v, 1_000_000)? as u32,
                "fanout" => o.fanout = self.flag(key, v)?,
                "keep" => o.keep = self.flag(key, v)?,
                "queue_type" => {
                    o.queue_type = match v {
                        "classic" => QueueType::Classic,
                        "quorum" => QueueType::Quorum,
                        "stream" => QueueType::Stream,
                        _ => return Err(self.value(key, v, "is not classic, quorum or stream")),
                    }
                }
                "stream_offset" => {
                    offset_given = Some(v);
                    o.stream_offset = self.stream_offset(key, v)?;
                }
                _ => {
                    return Err(SutUrlError::Unknown {
                        url: self.url.clone(),
                        key: key.to_owned(),
                        known: PROTOCOL.known(),
                    });
                }
            }
        }
        if o.queue_type != QueueType::Classic {
            // RabbitMQ refuses a quorum or stream queue that is not durable.
            if let Some(v) = durable_given.filter(|_| !o.durable) {
                return Err(self.value(
                    "durable",
                    v,
                    &format!(
                        "cannot go with queue_type={}: such queues are always durable",
                        o.queue_type.as_str()
                    ),
                ));
            }
            o.durable = true;
        }
        if o.queue_type == QueueType::Stream {
            // A stream's consumers must acknowledge, and need a prefetch to be given credit.
            if let Some(v) = ack_given.filter(|_| o.ack == AckMode::Auto) {
                return Err(self.value(
                    "ack",
                    v,
                    "cannot go with queue_type=stream: a stream's consumers acknowledge manually",
                ));
            }
            o.ack = AckMode::Manual;
            if o.fanout {
                return Err(self.value(
                    "fanout",
                    "true",
                    "cannot go with queue_type=stream: every consumer of a stream reads all of it already",
                ));
            }
        } else if let Some(v) = offset_given {
            return Err(self.value("stream_offset", v, "needs queue_type=stream"));
        }
        // The broker stops delivering at `prefetch` unacknowledged messages: ack well before.
        o.ack_batch = o.ack_batch.min((u32::from(o.prefetch) / 2).max(1));
        Ok(o)
    }

    pub(super) fn stream_offset(&self, key: &str, v: &str) -> Result<StreamOffset, SutUrlError> {
        Ok(match v {
            "first" => StreamOffset::First,
            "last" => StreamOffset::Last,
            "next" => StreamOffset::Next,
            _ if v.bytes().all(|b| b.is_ascii_digit()) => StreamOffset::Offset(
                v.parse()
                    .map_err(|_| self.value(key, v, "is too large an offset"))?,
            ),
            _ => {
                if let Ok(t) = humantime::parse_rfc3339_weak(v) {
                    StreamOffset::Timestamp(t)
                } else if let Ok(d) = humantime::parse_duration(v) {
                    StreamOffset::Ago(d)
                } else {
                    return Err(self.value(
                        key,
                        v,
                        "is not first, last, next, an offset, a time (2026-12-06T10:00:00Z) or a duration ago (10m)",
                    ));
                }
            }
        })
    }
}
