//! STOMP 1.2 (`stomp://`, `stomps://`): queue, topic and (RabbitMQ) exchange destinations,
//! receipts and acknowledgement modes, its options, how its URL is parsed, and what it can
//! do.

use super::*;

pub(super) const PROTOCOL: Protocol = Protocol {
    name: "stomp",
    title: "STOMP",
    tls_name: Some("stomps"),
    aliases: &[],
    port: 61613,
    tls_port: 61614,
    capabilities: Capabilities {
        // The default destination, a queue: its consumers compete and it keeps what they
        // have not read. Topic and exchange subscribers each get every message, and
        // nothing is kept for them (see `SutUrl::capabilities`).
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
    url_form: "stomp[s]://[user:pass@]host[:port][/vhost][?options]",
    url_options: OPTIONS,
    options,
};

/// The options this protocol's URL takes (TLS ones aside).
const OPTIONS: &[UrlOption] = &[
    UrlOption {
        key: "dest",
        default: "queue",
        meaning: "`queue`: topic `i` is `/queue/<prefix>.<run-id>.<i>`, whose consumers compete; `topic`: `/topic/<prefix>.<run-id>.<i>`, every subscriber gets every message; `exchange` (RabbitMQ): `/exchange/<exchange>/<prefix>.<run-id>.<i>`, every subscriber gets every message",
    },
    UrlOption {
        key: "exchange",
        default: "amq.topic",
        meaning: "dest=exchange: the RabbitMQ exchange of the destinations",
    },
    UrlOption {
        key: "prefix",
        default: "maestro",
        meaning: "the destinations' names start with it",
    },
    UrlOption {
        key: "ack",
        default: "client-individual",
        meaning: "`auto` (the broker forgets a message once sent), `client` (one ACK covers every message before it) or `client-individual` (an ACK per message)",
    },
    UrlOption {
        key: "prefetch",
        default: "1000",
        meaning: "ack=client or client-individual: unacknowledged messages a consumer may hold (RabbitMQ's `prefetch-count`, ActiveMQ's `activemq.prefetchSize`)",
    },
    UrlOption {
        key: "receipts",
        default: "true",
        meaning: "every SEND asks for a RECEIPT: the broker took the message (the publish latency; RabbitMQ sends it once the message is confirmed)",
    },
    UrlOption {
        key: "window",
        default: "1000",
        meaning: "receipts=true: SENDs awaiting their receipt per producer",
    },
    UrlOption {
        key: "persistent",
        default: "false",
        meaning: "SEND with `persistent:true` (the broker keeps the message on disk)",
    },
    UrlOption {
        key: "auto_delete",
        default: "true",
        meaning: "dest=queue on RabbitMQ: SEND and SUBSCRIBE declare the queue `auto-delete` (it goes with its last consumer); `false` leaves RabbitMQ's durable queues behind. ActiveMQ ignores it",
    },
];

fn options(
    p: &Parser,
    path: &str,
    query: &[(String, String)],
    _credentials: bool,
) -> Result<SutOptions, SutUrlError> {
    p.stomp(path, query).map(SutOptions::Stomp)
}

/// Where a run's messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StompDestination {
    /// `/queue/...`: a subscription's consumers compete.
    Queue,
    /// `/topic/...`: every subscriber gets every message.
    Topic,
    /// RabbitMQ's `/exchange/<name>/...`: every subscriber gets every message.
    Exchange,
}

/// How a STOMP consumer acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StompAck {
    Auto,
    Client,
    ClientIndividual,
}

impl StompAck {
    /// The SUBSCRIBE header's value.
    pub fn as_str(self) -> &'static str {
        match self {
            StompAck::Auto => "auto",
            StompAck::Client => "client",
            StompAck::ClientIndividual => "client-individual",
        }
    }
}

/// STOMP options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StompOptions {
    /// The CONNECT frame's `host` header (RabbitMQ's virtual host).
    pub vhost: String,
    pub dest: StompDestination,
    /// dest=exchange: the exchange.
    pub exchange: String,
    pub prefix: String,
    pub ack: StompAck,
    pub prefetch: u32,
    pub receipts: bool,
    pub window: u32,
    pub persistent: bool,
    pub auto_delete: bool,
}

impl StompOptions {
    /// True when the options promise no loss: every SEND receipted, every message
    /// acknowledged by its consumer.
    pub fn reliable(&self) -> bool {
        self.receipts && self.ack != StompAck::Auto
    }

    /// A queue's consumers share its messages.
    pub fn consumers_compete(&self) -> bool {
        self.dest == StompDestination::Queue
    }

    /// Topic `topic`'s destination in run `run`.
    pub fn destination(&self, run: &str, topic: u32) -> String {
        let name = format!("{}.{run}.{topic}", self.prefix);
        match self.dest {
            StompDestination::Queue => format!("/queue/{name}"),
            StompDestination::Topic => format!("/topic/{name}"),
            StompDestination::Exchange => format!("/exchange/{}/{name}", self.exchange),
        }
    }
}

impl Parser {
    pub(super) fn stomp(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<StompOptions, SutUrlError> {
        let vhost = match path.strip_prefix('/').unwrap_or(path) {
            "" => "/".to_owned(),
            v => decode(v),
        };
        let mut o = StompOptions {
            vhost,
            dest: StompDestination::Queue,
            exchange: "amq.topic".into(),
            prefix: "maestro".into(),
            ack: StompAck::ClientIndividual,
            prefetch: 1000,
            receipts: true,
            window: 1000,
            persistent: false,
            auto_delete: true,
        };
        let mut exchange = None;
        let mut prefetch = None;
        let mut window = None;
        for (key, v) in query {
            let (key, v) = (key.as_str(), v.as_str());
            // A destination name's part: no slashes, wildcards or spaces.
            let name = |v: &str| {
                if v.is_empty()
                    || !v
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    Err(self.value(key, v, "is not letters, digits, -, _ and ."))
                } else {
                    Ok(v.to_owned())
                }
            };
            match key {
                "dest" => {
                    o.dest = match v {
                        "queue" => StompDestination::Queue,
                        "topic" => StompDestination::Topic,
                        "exchange" => StompDestination::Exchange,
                        _ => return Err(self.value(key, v, "is not queue, topic or exchange")),
                    }
                }
                "exchange" => {
                    o.exchange = name(v)?;
                    exchange = Some(v);
                }
                "prefix" => o.prefix = name(v)?,
                "ack" => {
                    o.ack = match v {
                        "auto" => StompAck::Auto,
                        "client" => StompAck::Client,
                        "client-individual" | "client_individual" => StompAck::ClientIndividual,
                        _ => {
                            return Err(self.value(
                                key,
                                v,
                                "is not auto, client or client-individual",
                            ));
                        }
                    }
                }
                "prefetch" => {
                    o.prefetch = self.number(key, v, 65_535)? as u32;
                    prefetch = Some(v);
                }
                "receipts" => o.receipts = self.flag(key, v)?,
                "window" => {
                    o.window = self.number(key, v, 1_000_000)? as u32;
                    window = Some(v);
                }
                "persistent" => o.persistent = self.flag(key, v)?,
                "auto_delete" => o.auto_delete = self.flag(key, v)?,
                _ => {
                    return Err(SutUrlError::Unknown {
                        url: self.url.clone(),
                        key: key.to_owned(),
                        known: PROTOCOL.known(),
                    });
                }
            }
        }
        if let Some(v) = exchange.filter(|_| o.dest != StompDestination::Exchange) {
            return Err(self.value("exchange", v, "needs dest=exchange"));
        }
        if let Some(v) = prefetch.filter(|_| o.ack == StompAck::Auto) {
            return Err(self.value(
                "prefetch",
                v,
                "needs ack=client or ack=client-individual (with ack=auto the broker does not wait)",
            ));
        }
        if let Some(v) = window.filter(|_| !o.receipts) {
            return Err(self.value(
                "window",
                v,
                "needs receipts=true (without receipts nothing is awaited)",
            ));
        }
        Ok(o)
    }
}
