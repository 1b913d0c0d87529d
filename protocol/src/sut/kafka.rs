//! Kafka (`kafka://`): its options, how its URL is parsed, and what it can do.

use super::*;

pub(super) const PROTOCOL: Protocol = Protocol {
    name: "kafka",
    title: "Kafka",
    tls_name: None,
    aliases: &[],
    port: 9092,
    tls_port: 9092,
    capabilities: Capabilities {
        competing_consumers: true,
        several_subscriptions: true,
        reliable_acks: true,
        backlog: true,
        partitions: true,
        keys: true,
        several_hosts: true,
        tls: true,
        per_client_certificates: true,
        fleet: false,
        files_per_client: 3,
    },
    tls_asked: tls_by_property,
    tls_keys: &["client_ca", "client_ca_key"],
    tls_hint: Some("add security.protocol=ssl (or sasl_ssl)"),
    url_form: "kafka://host[:port][,host[:port]...][/topic-prefix][?options]",
    url_options: OPTIONS,
    options,
};

/// The options this protocol's URL takes (TLS ones aside).
const OPTIONS: &[UrlOption] = &[
    UrlOption {
        key: "partitions",
        default: "consumers per topic, at least 1",
        meaning: "partitions of the topics the run creates",
    },
    UrlOption {
        key: "replication_factor",
        default: "1",
        meaning: "replication factor of the topics the run creates",
    },
    UrlOption {
        key: "acks",
        default: "all",
        meaning: "0, 1 or all",
    },
    UrlOption {
        key: "linger",
        default: "5",
        meaning: "the producers' linger, in ms",
    },
    UrlOption {
        key: "batch_size",
        default: "librdkafka's",
        meaning: "the producers' batch size, in bytes",
    },
    UrlOption {
        key: "compression",
        default: "none",
        meaning: "none, gzip, snappy, lz4 or zstd",
    },
    UrlOption {
        key: "group",
        default: "maestro",
        meaning: "consumer group prefix; the consumers of one subscription form one group",
    },
    UrlOption {
        key: "key",
        default: "none",
        meaning: "none, round_robin (message `i` to partition `i mod partitions`) or random",
    },
    UrlOption {
        key: "auto_commit",
        default: "true",
        meaning: "false: consumers commit what they consumed about once a second and when they close",
    },
    UrlOption {
        key: "offset_reset",
        default: "earliest",
        meaning: "earliest or latest",
    },
    UrlOption {
        key: "keep",
        default: "false",
        meaning: "keep the run's topics and consumer groups afterwards",
    },
    UrlOption {
        key: "<librdkafka.property>",
        default: "",
        meaning: "any librdkafka property, with its dots, for producers and consumers alike (properties that load code or run a command are refused)",
    },
    UrlOption {
        key: "producer.<property>",
        default: "",
        meaning: "a librdkafka property for producers only",
    },
    UrlOption {
        key: "consumer.<property>",
        default: "",
        meaning: "a librdkafka property for consumers only",
    },
    UrlOption {
        key: "topic.config.<name>",
        default: "",
        meaning: "configuration of the topics the run creates (`topic.config.min.insync.replicas=2`)",
    },
];

/// Kafka asks for TLS with `security.protocol=ssl` or `sasl_ssl` (librdkafka's property).
fn tls_by_property(_tls_scheme: bool, query: &[(String, String)]) -> bool {
    let protocol = query
        .iter()
        .rev()
        .find(|(k, _)| k == "security.protocol")
        .map(|(_, v)| v.to_ascii_lowercase());
    matches!(protocol.as_deref(), Some("ssl" | "sasl_ssl"))
}

fn options(
    p: &Parser,
    path: &str,
    query: &[(String, String)],
    _credentials: bool,
) -> Result<SutOptions, SutUrlError> {
    p.kafka(path, query).map(SutOptions::Kafka)
}

impl KafkaOptions {
    /// True when these options promise no loss in normal operation.
    pub fn reliable(&self) -> bool {
        self.acks == Acks::All
    }
}

/// Kafka producer acknowledgements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    None,
    Leader,
    All,
}

impl Acks {
    pub fn as_str(self) -> &'static str {
        match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        }
    }
}

/// Kafka compression codecs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// How Kafka records are keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDistribution {
    /// No key (the client's partitioner spreads them).
    None,
    /// Partitions in turn.
    RoundRobin,
    /// A random key per record.
    Random,
}

/// Kafka options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaOptions {
    /// Topics are `<prefix>-<run-id>-<i>` (default `maestro`).
    pub prefix: String,
    /// Partitions of a topic the run creates; `None`: one per consumer of the topic.
    pub partitions: Option<u32>,
    pub acks: Acks,
    /// How long a producer waits to fill a batch, ms (default 5).
    pub linger_ms: u32,
    pub batch_size: Option<u32>,
    pub compression: Compression,
    pub group: String,
    pub key: KeyDistribution,
    /// librdkafka properties given with their dots (`queue.buffering.max.ms=5`), passed
    /// through as they are to every client (librdkafka checks them when a worker
    /// connects).
    pub properties: Vec<(String, String)>,
    /// Properties for producers only (`producer.<property>=`), after the common ones.
    pub producer_properties: Vec<(String, String)>,
    /// Properties for consumers only (`consumer.<property>=`), after the common ones.
    pub consumer_properties: Vec<(String, String)>,
    /// Configuration of the topics a run creates (`topic.config.<name>=`, for example
    /// `topic.config.min.insync.replicas=2`).
    pub topic_config: Vec<(String, String)>,
    /// Replicas of each partition of a topic the run creates (default 1).
    pub replication_factor: u16,
    /// Consumers commit their offsets in the background (librdkafka's auto-commit,
    /// default); `false`: they commit what they consumed themselves, about once a second
    /// and when they close (as OpenMessaging Benchmark's consumers do).
    pub auto_commit: bool,
    /// Where a consumer group without committed offsets starts.
    pub offset_reset: OffsetReset,
    /// Keep the topics (and consumer groups) the run created; by default they are deleted
    /// once the run is over.
    pub keep: bool,
}

/// Where a Kafka consumer group without a committed offset starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
}

impl OffsetReset {
    pub fn as_str(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        }
    }
}

/// True for a librdkafka property whose value is a path on the client's host
/// (`ssl.ca.location`, `ssl.keystore.location`, `ssl.crl.location`, `sasl.kerberos.keytab`,
/// `sasl.oauthbearer.assertion.private.key.file`, `https.ca.location`, ...).
pub(super) fn names_a_file(property: &str) -> bool {
    [
        ".location",
        ".file",
        ".keytab",
        ".directory",
        ".path",
        ".paths",
    ]
    .iter()
    .any(|end| property.ends_with(end))
}

impl Parser {
    /// librdkafka properties that load code or run a command: never taken from a SUT URL,
    /// whichever client (`producer.`, `consumer.`, both) they would go to.
    pub(super) fn refuse_code(&self, key: &str) -> Result<(), SutUrlError> {
        let name = key
            .strip_prefix("producer.")
            .or_else(|| key.strip_prefix("consumer."))
            .unwrap_or(key);
        let does = match name {
            "plugin.library.paths" => "load a shared library",
            "sasl.kerberos.kinit.cmd" => "run a shell command",
            "ssl.engine.location" | "ssl.engine.id" | "ssl_engine_callback_data" => {
                "load an OpenSSL engine"
            }
            "ssl.providers" => "load OpenSSL providers",
            _ => return Ok(()),
        };
        Err(SutUrlError::Refused {
            url: self.url.clone(),
            key: key.to_owned(),
            does,
        })
    }

    pub(super) fn kafka(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<KafkaOptions, SutUrlError> {
        let prefix = path.trim_matches('/');
        if !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(SutUrlError::Path {
                url: self.url.clone(),
                what: format!(
                    "topic prefix {prefix:?} may only hold letters, digits, '.', '_', '-'"
                ),
            });
        }
        let mut o = KafkaOptions {
            prefix: if prefix.is_empty() {
                "maestro".into()
            } else {
                prefix.to_owned()
            },
            partitions: None,
            acks: Acks::All,
            // librdkafka's own default (and the Java client's since Kafka 4.0). 1 ms made
            // a batch of nearly every message at moderate rates, which brokers that store
            // and list batches one by one (tansu) pay for on every fetch.
            linger_ms: 5,
            batch_size: None,
            compression: Compression::None,
            group: "maestro".into(),
            key: KeyDistribution::None,
            properties: Vec::new(),
            producer_properties: Vec::new(),
            consumer_properties: Vec::new(),
            topic_config: Vec::new(),
            replication_factor: 1,
            auto_commit: true,
            offset_reset: OffsetReset::Earliest,
            keep: false,
        };
        let offset_reset = |key: &str, v: &str| match v {
            "earliest" | "smallest" | "beginning" => Ok(OffsetReset::Earliest),
            "latest" | "largest" | "end" => Ok(OffsetReset::Latest),
            _ => Err(self.value(key, v, "is not earliest or latest")),
        };
        for (key, v) in query {
            let (key, v) = (key.as_str(), v.as_str());
            self.refuse_code(key)?;
            match key {
                "partitions" => o.partitions = Some(self.number(key, v, i32::MAX as u64)? as u32),
                "replication_factor" => {
                    o.replication_factor = self.number(key, v, i16::MAX as u64)? as u16;
                    if o.replication_factor == 0 {
                        return Err(self.value(key, v, "must be at least 1"));
                    }
                }
                // The consumer's commit and reset are typed whichever way they are written,
                // because the consumer behaves differently without auto-commit.
                "auto_commit" | "enable.auto.commit" | "consumer.enable.auto.commit" => {
                    o.auto_commit = self.flag(key, v)?
                }
                "offset_reset" | "auto.offset.reset" | "consumer.auto.offset.reset" => {
                    o.offset_reset = offset_reset(key, v)?
                }
                "keep" => o.keep = self.flag(key, v)?,
                // Typed options, written either way (an OMB driver file writes the
                // client's property names), so that reliability reads them.
                "acks" | "producer.acks" => {
                    o.acks = match v {
                        "0" => Acks::None,
                        "1" => Acks::Leader,
                        "all" | "-1" => Acks::All,
                        _ => return Err(self.value(key, v, "is not 0, 1 or all")),
                    }
                }
                "linger" | "linger.ms" | "producer.linger.ms" => {
                    o.linger_ms = v
                        .parse()
                        .map_err(|_| self.value(key, v, "is not milliseconds"))?
                }
                "batch_size" | "batch.size" | "producer.batch.size" => {
                    o.batch_size = Some(v.parse().map_err(|_| self.value(key, v, "is not bytes"))?)
                }
                "compression" | "compression.type" | "producer.compression.type" => {
                    o.compression = match v {
                        "none" => Compression::None,
                        "gzip" => Compression::Gzip,
                        "snappy" => Compression::Snappy,
                        "lz4" => Compression::Lz4,
                        "zstd" => Compression::Zstd,
                        _ => {
                            return Err(self.value(
                                key,
                                v,
                                "is not none, gzip, snappy, lz4 or zstd",
                            ));
                        }
                    }
                }
                "group" => o.group = v.to_owned(),
                "key" => {
                    o.key = match v {
                        "none" => KeyDistribution::None,
                        "round_robin" => KeyDistribution::RoundRobin,
                        "random" => KeyDistribution::Random,
                        _ => return Err(self.value(key, v, "is not none, round_robin or random")),
                    }
                }
                k if k.starts_with("producer.")
                    || k.starts_with("consumer.")
                    || k.starts_with("topic.config.") =>
                {
                    let (list, name) = if let Some(name) = k.strip_prefix("producer.") {
                        (&mut o.producer_properties, name)
                    } else if let Some(name) = k.strip_prefix("consumer.") {
                        (&mut o.consumer_properties, name)
                    } else {
                        (&mut o.topic_config, &k["topic.config.".len()..])
                    };
                    if name.is_empty() {
                        return Err(self.value(key, v, "names no property after its prefix"));
                    }
                    list.push((name.to_owned(), v.to_owned()));
                }
                k if k.contains('.') => o.properties.push((k.to_owned(), v.to_owned())),
                _ => {
                    return Err(SutUrlError::Unknown {
                        url: self.url.clone(),
                        key: key.to_owned(),
                        known: PROTOCOL.known(),
                    });
                }
            }
        }
        Ok(o)
    }
}
