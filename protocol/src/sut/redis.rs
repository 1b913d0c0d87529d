//! Redis (`redis://`): pub/sub and Streams, its options, how its URL is parsed, and what
//! it can do.

use super::*;

pub(super) const PROTOCOL: Protocol = Protocol {
    name: "redis",
    title: "Redis",
    tls_name: None,
    aliases: &[],
    port: 6379,
    tls_port: 6379,
    capabilities: Capabilities {
        // With mode=streams a topic's consumers compete in its group (see
        // `SutUrl::capabilities`); pub/sub subscribers each get every message.
        competing_consumers: false,
        several_subscriptions: true,
        reliable_acks: true,
        // Pub/sub keeps nothing for a subscriber that does not read.
        backlog: false,
        partitions: false,
        keys: false,
        several_hosts: false,
        tls: false,
        per_client_certificates: false,
        fleet: false,
        files_per_client: 1,
    },
    tls_asked: tls_by_scheme,
    tls_keys: &[],
    tls_hint: Some("maestro's Redis client speaks plain TCP only"),
    url_form: "redis://[user:pass@]host[:port][/db][?options]",
    url_options: OPTIONS,
    options,
};

/// The options this protocol's URL takes.
const OPTIONS: &[UrlOption] = &[
    UrlOption {
        key: "mode",
        default: "pubsub",
        meaning: "`pubsub` (PUBLISH and SUBSCRIBE: every subscriber gets every message, none kept) or `streams` (XADD, a consumer group per topic with XREADGROUP and XACK: its consumers compete, nothing is lost)",
    },
    UrlOption {
        key: "prefix",
        default: "maestro",
        meaning: "topic `i` is the channel or stream key `<prefix>.<run-id>.<i>`",
    },
    UrlOption {
        key: "maxlen",
        default: "none",
        meaning: "mode=streams: XADD MAXLEN ~ this many entries",
    },
    UrlOption {
        key: "window",
        default: "1000",
        meaning: "commands in flight per producer (pipelined)",
    },
    UrlOption {
        key: "count",
        default: "100",
        meaning: "mode=streams: entries a consumer reads (and acknowledges) at a time",
    },
    UrlOption {
        key: "keep",
        default: "false",
        meaning: "mode=streams: keep the run's stream keys afterwards",
    },
];

fn options(
    p: &Parser,
    path: &str,
    query: &[(String, String)],
    _credentials: bool,
) -> Result<SutOptions, SutUrlError> {
    p.redis(path, query).map(SutOptions::Redis)
}

/// How Redis carries the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    PubSub,
    Streams,
}

/// Redis options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// The database number (the URL's path).
    pub db: u32,
    pub mode: RedisMode,
    /// Channels and stream keys are `<prefix>.<run-id>.<i>`.
    pub prefix: String,
    /// Streams: XADD MAXLEN ~ this.
    pub maxlen: Option<u64>,
    /// Commands in flight per producer.
    pub window: u32,
    /// Streams: entries per XREADGROUP.
    pub count: u32,
    pub keep: bool,
}

impl RedisOptions {
    /// True when the options promise no loss: Streams with consumer groups.
    pub fn reliable(&self) -> bool {
        self.mode == RedisMode::Streams
    }

    /// A topic's consumers share a consumer group (Streams); pub/sub subscribers do not.
    pub fn consumers_compete(&self) -> bool {
        self.mode == RedisMode::Streams
    }
}

impl Parser {
    pub(super) fn redis(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<RedisOptions, SutUrlError> {
        let db = match path.trim_matches('/') {
            "" => 0,
            d => d
                .parse()
                .map_err(|_| self.value("db", d, "is not a database number (the URL's path)"))?,
        };
        let mut o = RedisOptions {
            db,
            mode: RedisMode::PubSub,
            prefix: "maestro".into(),
            maxlen: None,
            window: 1000,
            count: 100,
            keep: false,
        };
        let mut streams_only = None;
        for (key, v) in query {
            let (key, v) = (key.as_str(), v.as_str());
            match key {
                "mode" => {
                    o.mode = match v {
                        "pubsub" => RedisMode::PubSub,
                        "streams" => RedisMode::Streams,
                        _ => return Err(self.value(key, v, "is not pubsub or streams")),
                    }
                }
                "prefix" => {
                    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                        return Err(self.value(key, v, "is not a key prefix"));
                    }
                    o.prefix = v.to_owned();
                }
                "maxlen" => {
                    o.maxlen = Some(self.number(key, v, u64::MAX)?);
                    streams_only = Some((key, v));
                }
                "window" => o.window = self.number(key, v, 1_000_000)? as u32,
                "count" => {
                    o.count = self.number(key, v, 100_000)? as u32;
                    streams_only = Some((key, v));
                }
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
        if let Some((key, v)) = streams_only.filter(|_| o.mode != RedisMode::Streams) {
            return Err(self.value(key, v, "needs mode=streams"));
        }
        Ok(o)
    }
}
