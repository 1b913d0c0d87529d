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
        several_subscriptions: false,
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
}

/// AMQP exchange types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeType {
    Direct,
    Fanout,
    Topic,
    Headers,
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
        };
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
                "durable" => o.durable = self.flag(key, v)?,
                "persistent" => o.persistent = self.flag(key, v)?,
                "confirms" => o.confirms = self.flag(key, v)?,
                "confirm_window" => o.confirm_window = self.number(key, v, 1_000_000)? as u32,
                "mandatory" => o.mandatory = self.flag(key, v)?,
                "prefetch" => o.prefetch = self.number(key, v, u16::MAX.into())? as u16,
                "ack" => {
                    o.ack = match v {
                        "auto" => AckMode::Auto,
                        "manual" => AckMode::Manual,
                        _ => return Err(self.value(key, v, "is not auto or manual")),
                    }
                }
                "ack_batch" => o.ack_batch = self.number(key, v, 1_000_000)? as u32,
                "fanout" => o.fanout = self.flag(key, v)?,
                "keep" => o.keep = self.flag(key, v)?,
                _ => {
                    return Err(SutUrlError::Unknown {
                        url: self.url.clone(),
                        key: key.to_owned(),
                        known: PROTOCOL.known(),
                    });
                }
            }
        }
        // The broker stops delivering at `prefetch` unacknowledged messages: ack well before.
        o.ack_batch = o.ack_batch.min((u32::from(o.prefetch) / 2).max(1));
        Ok(o)
    }
}
