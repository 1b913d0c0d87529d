//! RabbitMQ's stream protocol (`rabbitmq-stream://`, `rabbitmq-stream+tls://`): its
//! options, how its URL is parsed, and what it can do.

use super::*;

pub(super) const PROTOCOL: Protocol = Protocol {
    name: "rabbitmq-stream",
    title: "RabbitMQ streams",
    tls_name: Some("rabbitmq-stream+tls"),
    aliases: &[],
    port: 5552,
    tls_port: 5551,
    capabilities: Capabilities {
        // Every consumer of a stream reads all of it.
        competing_consumers: false,
        several_subscriptions: true,
        reliable_acks: true,
        backlog: true,
        partitions: false,
        keys: false,
        several_hosts: false,
        tls: true,
        // The client reads its certificate from files, one for all its connections.
        per_client_certificates: false,
        fleet: false,
        files_per_client: 1,
    },
    tls_asked: tls_by_scheme,
    tls_keys: STREAM_TLS_KEYS,
    tls_hint: None,
    url_form: "rabbitmq-stream[+tls]://[user:pass@]host[:port][/vhost][?options]",
    url_options: OPTIONS,
    options,
};

/// The TLS options the stream client takes: it reads its files itself and checks the
/// server's name against the host.
const STREAM_TLS_KEYS: &[&str] = &["ca", "cert", "key", "insecure"];

/// The options this protocol's URL takes (TLS ones aside).
const OPTIONS: &[UrlOption] = &[
    UrlOption {
        key: "stream",
        default: "maestro",
        meaning: "stream-name prefix: topic `i` is the stream `<stream>.<run-id>.<i>`",
    },
    UrlOption {
        key: "offset",
        default: "first",
        meaning: "where consumers start: first (the run's stream is its own: all of it), last, next, an offset, or a time (RFC 3339, or a duration ago like 10m)",
    },
    UrlOption {
        key: "window",
        default: "1000",
        meaning: "unconfirmed publishes in flight per producer (every publish is confirmed)",
    },
    UrlOption {
        key: "batch_size",
        default: "100",
        meaning: "the most messages the client puts in one publish frame",
    },
    UrlOption {
        key: "max_length",
        default: "none",
        meaning: "the streams' retention by size (`x-max-length-bytes`): bytes, or with kB, MB, GB",
    },
    UrlOption {
        key: "keep",
        default: "false",
        meaning: "keep the run's streams afterwards",
    },
];

fn options(
    p: &Parser,
    path: &str,
    query: &[(String, String)],
    _credentials: bool,
) -> Result<SutOptions, SutUrlError> {
    p.stream(path, query).map(SutOptions::Stream)
}

/// RabbitMQ stream protocol options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOptions {
    /// The virtual host, percent-decoded (`/` when the URL has no path or `%2f`).
    pub vhost: String,
    /// Streams are `<stream>.<run-id>.<i>`.
    pub stream: String,
    /// Where consumers start.
    pub offset: StreamOffset,
    /// Unconfirmed publishes in flight per producer.
    pub window: u32,
    /// Messages per publish frame, at most.
    pub batch_size: u32,
    /// Retention by size, in bytes.
    pub max_length_bytes: Option<u64>,
    /// Keep the run's streams afterwards.
    pub keep: bool,
}

impl Parser {
    pub(super) fn stream(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<StreamOptions, SutUrlError> {
        let vhost = match path.strip_prefix('/').unwrap_or(path) {
            "" => "/".to_owned(),
            v => decode(v),
        };
        let mut o = StreamOptions {
            vhost,
            stream: "maestro".into(),
            // The run's stream is its own: all of it is what the run sent.
            offset: StreamOffset::First,
            window: 1000,
            batch_size: 100,
            max_length_bytes: None,
            keep: false,
        };
        for (key, v) in query {
            let (key, v) = (key.as_str(), v.as_str());
            match key {
                "stream" => {
                    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                        return Err(self.value(key, v, "is not a stream name"));
                    }
                    o.stream = v.to_owned();
                }
                "offset" => o.offset = self.stream_offset(key, v)?,
                "window" => o.window = self.number(key, v, 1_000_000)? as u32,
                "batch_size" => o.batch_size = self.number(key, v, 10_000)? as u32,
                "max_length" => o.max_length_bytes = Some(self.bytes(key, v)?),
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
        Ok(o)
    }

    /// A size: bytes, or a number with kB, MB or GB (powers of 1000, as RabbitMQ reads them).
    fn bytes(&self, key: &str, v: &str) -> Result<u64, SutUrlError> {
        let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
        let (n, unit) = v.split_at(split);
        let scale: u64 = match unit {
            "" | "B" => 1,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => 0,
        };
        n.parse::<u64>()
            .ok()
            .filter(|n| *n > 0 && scale > 0)
            .and_then(|n| n.checked_mul(scale))
            .ok_or_else(|| self.value(key, v, "is not a size (bytes, or a number with kB, MB, GB)"))
    }
}
