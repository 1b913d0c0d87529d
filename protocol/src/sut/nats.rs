//! NATS (`nats://`, `nats+tls://`): core subjects (plain or queue-group subscriptions) and JetStream, its
//! options, how its URL is parsed, and what it can do.

use super::*;

pub(super) const PROTOCOL: Protocol = Protocol {
    name: "nats",
    title: "NATS",
    tls_name: Some("nats+tls"),
    aliases: &[],
    port: 4222,
    tls_port: 4222,
    capabilities: Capabilities {
        // With group=true or jetstream=true a subscription's consumers compete (see
        // `SutUrl::capabilities`); plain subscribers each get every message.
        competing_consumers: false,
        several_subscriptions: true,
        reliable_acks: true,
        // Core NATS keeps nothing for a subscriber that does not read.
        backlog: false,
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
    url_form: "nats[+tls]://[user:pass@]host[:port][?options]",
    url_options: OPTIONS,
    options,
};

/// The options this protocol's URL takes.
const OPTIONS: &[UrlOption] = &[
    UrlOption {
        key: "jetstream",
        default: "false",
        meaning: "`true`: a JetStream stream per run takes the run's subjects, every publish is acknowledged by the stream, and each subscription is a durable consumer whose consumers compete and acknowledge every message",
    },
    UrlOption {
        key: "group",
        default: "false",
        meaning: "core NATS: `true` puts a subscription's consumers in one queue group (they compete); `false`: every consumer gets every message",
    },
    UrlOption {
        key: "prefix",
        default: "maestro",
        meaning: "topic `i` is the subject `<prefix>.<run-id>.<i>` (JetStream: the stream is `<prefix>-<run-id>`)",
    },
    UrlOption {
        key: "consumer",
        default: "pull",
        meaning: "jetstream=true: `pull` (consumers fetch `batch` messages at a time) or `push` (the server pushes to a deliver group)",
    },
    UrlOption {
        key: "batch",
        default: "100",
        meaning: "jetstream=true: messages a pull consumer asks for at a time; a push consumer's unacknowledged messages at most",
    },
    UrlOption {
        key: "replicas",
        default: "1",
        meaning: "jetstream=true: the stream's replicas",
    },
    UrlOption {
        key: "storage",
        default: "file",
        meaning: "jetstream=true: `file` or `memory`",
    },
    UrlOption {
        key: "window",
        default: "1000",
        meaning: "per producer: JetStream publishes awaiting their acknowledgement; core NATS: messages written before a flush (PING, PONG) confirms the server took them (the publish latency)",
    },
    UrlOption {
        key: "keep",
        default: "false",
        meaning: "jetstream=true: keep the run's stream afterwards",
    },
];

fn options(
    p: &Parser,
    path: &str,
    query: &[(String, String)],
    _credentials: bool,
) -> Result<SutOptions, SutUrlError> {
    p.nats(path, query).map(SutOptions::Nats)
}

/// How a JetStream consumer gets its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsConsumerKind {
    Pull,
    Push,
}

/// Where a JetStream stream keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsStorage {
    File,
    Memory,
}

/// NATS options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    pub jetstream: bool,
    /// Core NATS: a subscription's consumers share a queue group.
    pub group: bool,
    /// Subjects are `<prefix>.<run-id>.<i>`.
    pub prefix: String,
    pub consumer: NatsConsumerKind,
    /// Messages per pull request; a push consumer's max_ack_pending.
    pub batch: u32,
    pub replicas: u32,
    pub storage: NatsStorage,
    /// Per producer: JetStream publishes awaiting their acknowledgement; core NATS
    /// messages written before a flush.
    pub window: u32,
    pub keep: bool,
}

impl NatsOptions {
    /// True when the options promise no loss: JetStream.
    pub fn reliable(&self) -> bool {
        self.jetstream
    }

    /// A subscription's consumers share its messages: a queue group or a durable consumer.
    pub fn consumers_compete(&self) -> bool {
        self.jetstream || self.group
    }
}

impl Parser {
    pub(super) fn nats(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<NatsOptions, SutUrlError> {
        let path = path.trim_matches('/');
        if !path.is_empty() {
            return Err(self.value(
                "path",
                path,
                "is not taken: NATS URLs have none (prefix= names the subjects)",
            ));
        }
        let mut o = NatsOptions {
            jetstream: false,
            group: false,
            prefix: "maestro".into(),
            consumer: NatsConsumerKind::Pull,
            batch: 100,
            replicas: 1,
            storage: NatsStorage::File,
            window: 1000,
            keep: false,
        };
        let mut jetstream_only = None;
        for (key, v) in query {
            let (key, v) = (key.as_str(), v.as_str());
            match key {
                "jetstream" => o.jetstream = self.flag(key, v)?,
                "group" => o.group = self.flag(key, v)?,
                "prefix" => {
                    // A subject token and a stream name: no dots, wildcards or spaces.
                    if v.is_empty()
                        || !v
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    {
                        return Err(self.value(key, v, "is not letters, digits, - and _"));
                    }
                    o.prefix = v.to_owned();
                }
                "consumer" => {
                    o.consumer = match v {
                        "pull" => NatsConsumerKind::Pull,
                        "push" => NatsConsumerKind::Push,
                        _ => return Err(self.value(key, v, "is not pull or push")),
                    };
                    jetstream_only = Some((key, v));
                }
                "batch" => {
                    o.batch = self.number(key, v, 100_000)? as u32;
                    jetstream_only = Some((key, v));
                }
                "replicas" => {
                    o.replicas = self.number(key, v, 5)? as u32;
                    jetstream_only = Some((key, v));
                }
                "storage" => {
                    o.storage = match v {
                        "file" => NatsStorage::File,
                        "memory" => NatsStorage::Memory,
                        _ => return Err(self.value(key, v, "is not file or memory")),
                    };
                    jetstream_only = Some((key, v));
                }
                "window" => o.window = self.number(key, v, 1_000_000)? as u32,
                "keep" => {
                    o.keep = self.flag(key, v)?;
                    jetstream_only = Some((key, v));
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
        if let Some((key, v)) = jetstream_only.filter(|_| !o.jetstream) {
            return Err(self.value(key, v, "needs jetstream=true"));
        }
        if o.jetstream && o.group {
            return Err(self.value(
                "group",
                "true",
                "is for core NATS: with jetstream=true a subscription's consumers always compete",
            ));
        }
        Ok(o)
    }
}
