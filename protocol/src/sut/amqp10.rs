//! AMQP 1.0 (`amqp10://`, `amqp10s://`): its options, how its URL is parsed, and what it can do.

use super::*;

pub(super) const PROTOCOL: Protocol = Protocol {
    name: "amqp10",
    title: "AMQP 1.0",
    tls_name: Some("amqp10s"),
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
    url_form: "amqp10[s]://[user:pass@]host[:port][/address][?options]",
    url_options: OPTIONS,
    options,
};

/// The options this protocol's URL takes (TLS ones aside).
const OPTIONS: &[UrlOption] = &[
    UrlOption {
        key: "address",
        default: "the URL's path, `/queue/maestro` without one",
        meaning: "topic `i` is the address `<address>.<run-id>.<i>`",
    },
    UrlOption {
        key: "settle",
        default: "at_least_once",
        meaning: "`at_least_once` (settled when the broker accepts) or `at_most_once` (pre-settled)",
    },
    UrlOption {
        key: "fanout",
        default: "true for topic and exchange addresses",
        meaning: "every consumer gets every message; otherwise consumers of an address share it",
    },
    UrlOption {
        key: "durable",
        default: "false",
        meaning: "the message header's durable flag",
    },
    UrlOption {
        key: "credit",
        default: "1000",
        meaning: "link credit a receiver keeps granting",
    },
    UrlOption {
        key: "window",
        default: "1000",
        meaning: "unsettled deliveries in flight per sender (at least once)",
    },
    UrlOption {
        key: "sasl",
        default: "plain with credentials, anonymous without",
        meaning: "`plain` or `anonymous`",
    },
];

fn options(
    p: &Parser,
    path: &str,
    query: &[(String, String)],
    credentials: bool,
) -> Result<SutOptions, SutUrlError> {
    p.amqp10(path, query, credentials).map(SutOptions::Amqp10)
}

impl Amqp10Options {
    /// True when these options promise no loss in normal operation.
    pub fn reliable(&self) -> bool {
        self.settle == Settle::AtLeastOnce
    }
}

/// How AMQP 1.0 senders settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Pre-settled: sent and forgotten (at most once).
    AtMostOnce,
    /// Settled when the broker's disposition (accepted) comes back (at least once).
    AtLeastOnce,
}

/// AMQP 1.0 options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amqp10Options {
    /// Topic `i` of a run is the address `<address>.<run-id>.<i>`: for example
    /// `queue://bench` or `topic://bench` (ActiveMQ), `/queue/bench` or `/topic/bench`
    /// (RabbitMQ's AMQP 1.0 plugin). Default: the URL's path (`/queue/maestro` without
    /// one).
    pub address: String,
    pub settle: Settle,
    /// Each consumer gets every message (topics); otherwise consumers of an address
    /// share it (queues). Default: true when the address names a topic or an exchange.
    pub fanout: bool,
    /// Messages are durable (the header's `durable`).
    pub durable: bool,
    /// Link credit a receiver keeps granting (its prefetch).
    pub credit: u32,
    /// SASL: PLAIN with the URL's credentials (the default when it has some), or
    /// ANONYMOUS.
    pub sasl: Sasl,
    /// Deliveries in flight per sender, unsettled (at least once).
    pub window: u32,
}

/// AMQP 1.0 SASL mechanisms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sasl {
    Plain,
    Anonymous,
}

impl Parser {
    pub(super) fn amqp10(
        &self,
        path: &str,
        query: &[(String, String)],
        credentials: bool,
    ) -> Result<Amqp10Options, SutUrlError> {
        let mut o = Amqp10Options {
            address: if path.is_empty() || path == "/" {
                "/queue/maestro".into()
            } else {
                decode(path)
            },
            settle: Settle::AtLeastOnce,
            fanout: false,
            durable: false,
            credit: 1000,
            sasl: if credentials {
                Sasl::Plain
            } else {
                Sasl::Anonymous
            },
            window: 1000,
        };
        let mut fanout = None;
        for (key, v) in query {
            let (key, v) = (key.as_str(), v.as_str());
            match key {
                "address" => o.address = v.to_owned(),
                "settle" => {
                    o.settle = match v {
                        "at_most_once" | "presettled" => Settle::AtMostOnce,
                        "at_least_once" => Settle::AtLeastOnce,
                        _ => {
                            return Err(self.value(key, v, "is not at_most_once or at_least_once"));
                        }
                    }
                }
                "fanout" => fanout = Some(self.flag(key, v)?),
                "durable" => o.durable = self.flag(key, v)?,
                "credit" => o.credit = self.number(key, v, 1_000_000)? as u32,
                "window" => o.window = self.number(key, v, 1_000_000)? as u32,
                "sasl" => {
                    o.sasl = match v {
                        "plain" => Sasl::Plain,
                        "anonymous" => Sasl::Anonymous,
                        _ => return Err(self.value(key, v, "is not plain or anonymous")),
                    }
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
        if o.address.is_empty()
            || o.address
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(self.value("address", &o.address, "is not an address"));
        }
        if o.sasl == Sasl::Plain && !credentials {
            return Err(self.value("sasl", "plain", "needs user:password@ in the URL"));
        }
        o.fanout = fanout.unwrap_or_else(|| {
            ["topic://", "/topic/", "/exchange/"]
                .iter()
                .any(|p| o.address.starts_with(p))
        });
        Ok(o)
    }
}
