//! MQTT 3.1.1 and 5 (`version=5`), over TCP (`mqtt://`), TLS (`mqtts://`) and WebSockets
//! (`ws://`, `wss://`): its options, how its URL is parsed, and what it can do.

use super::*;

pub(super) const PROTOCOL: Protocol = Protocol {
    name: "mqtt",
    title: "MQTT",
    tls_name: Some("mqtts"),
    aliases: &[
        SchemeAlias {
            name: "ws",
            tls: false,
            port: 80,
        },
        SchemeAlias {
            name: "wss",
            tls: true,
            port: 443,
        },
    ],
    port: 1883,
    tls_port: 8883,
    capabilities: Capabilities {
        competing_consumers: false,
        several_subscriptions: true,
        reliable_acks: true,
        backlog: false,
        partitions: false,
        keys: false,
        several_hosts: true,
        tls: true,
        per_client_certificates: true,
        fleet: true,
        files_per_client: 1,
    },
    tls_asked: tls_by_scheme,
    tls_keys: TLS_KEYS,
    tls_hint: None,
    url_form: "mqtt[s]://[user:pass@]host[:port][,host[:port]...][/base-topic][?options]\nws[s]://[user:pass@]host[:port][,host[:port]...][/websocket-path][?topic=base-topic&options]",
    url_options: OPTIONS,
    options,
};

/// The options this protocol's URL takes (TLS ones aside).
const OPTIONS: &[UrlOption] = &[
    UrlOption {
        key: "qos",
        default: "0",
        meaning: "0, 1 or 2: MQTT quality of service of publishes and subscriptions",
    },
    UrlOption {
        key: "retain",
        default: "false",
        meaning: "publish with the retain flag",
    },
    UrlOption {
        key: "clean_session",
        default: "true",
        meaning: "connect with a clean session",
    },
    UrlOption {
        key: "keep_alive",
        default: "30s",
        meaning: "the MQTT keep-alive (a duration: 30s, 1m)",
    },
    UrlOption {
        key: "client_id_prefix",
        default: "maestro",
        meaning: "client ids are `<prefix>-<run>-p<i>` and `-c<i>`",
    },
    UrlOption {
        key: "inflight",
        default: "100",
        meaning: "unacknowledged QoS 1/2 publishes in flight per client",
    },
    UrlOption {
        key: "source_ips",
        default: "the system picks",
        meaning: "local addresses clients connect from, round robin: `127.0.0.2-127.0.0.9,10.0.0.5`",
    },
    UrlOption {
        key: "version",
        default: "3.1.1",
        meaning: "the MQTT version: `3.1.1` (or `4`) or `5`",
    },
    UrlOption {
        key: "topic",
        default: "maestro",
        meaning: "ws[s]:// only (their path is the WebSocket path, default `/mqtt`): the base topic",
    },
    UrlOption {
        key: "shared",
        default: "false",
        meaning: "consumers of a topic compete through a shared subscription `$share/<share_group>/<topic>` (each message reaches one of them)",
    },
    UrlOption {
        key: "share_group",
        default: "maestro",
        meaning: "the shared subscription's group (with `shared=true`)",
    },
    UrlOption {
        key: "user_properties",
        default: "none",
        meaning: "MQTT 5: user properties on every publish, `key:value,key2:value2`",
    },
    UrlOption {
        key: "message_expiry",
        default: "none",
        meaning: "MQTT 5: the message expiry interval of every publish (a duration in whole seconds)",
    },
    UrlOption {
        key: "content_type",
        default: "none",
        meaning: "MQTT 5: the content type of every publish",
    },
    UrlOption {
        key: "response_topic",
        default: "none",
        meaning: "MQTT 5: the response topic of every publish",
    },
    UrlOption {
        key: "topic_alias",
        default: "false",
        meaning: "MQTT 5: a producer names its topic once and then sends a topic alias (when the broker allows aliases)",
    },
    UrlOption {
        key: "receive_maximum",
        default: "65535",
        meaning: "MQTT 5: the most unacknowledged QoS 1/2 messages a client takes from the broker (1-65535)",
    },
    UrlOption {
        key: "session_expiry",
        default: "0s",
        meaning: "MQTT 5: the session expiry interval asked for at connect (a duration in whole seconds)",
    },
];

fn options(
    p: &Parser,
    path: &str,
    query: &[(String, String)],
    _credentials: bool,
) -> Result<SutOptions, SutUrlError> {
    p.mqtt(path, query).map(SutOptions::Mqtt)
}

impl MqttOptions {
    /// True when these options promise no loss in normal operation.
    pub fn reliable(&self) -> bool {
        self.qos != Qos::AtMostOnce
    }

    /// The topic filter a consumer of `topic` subscribes to: `$share/<group>/<topic>` with
    /// a shared subscription (the consumers of a topic compete), else the topic itself.
    pub fn subscription(&self, topic: &str) -> String {
        match &self.share_group {
            Some(group) => format!("$share/{group}/{topic}"),
            None => topic.to_owned(),
        }
    }

    /// The filter of the `index`-th of a topic's shared subscriptions
    /// ([`crate::TestSpec::subscriptions`]): the first is [`Self::subscription`], the
    /// others share as `<group>-<index>`.
    pub fn nth_subscription(&self, topic: &str, index: u32) -> String {
        match (&self.share_group, index) {
            (Some(group), 1..) => format!("$share/{group}-{index}/{topic}"),
            _ => self.subscription(topic),
        }
    }
}

/// The MQTT version a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MqttVersion {
    /// MQTT 3.1.1 (protocol level 4).
    #[default]
    V311,
    V5,
}

impl MqttVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            MqttVersion::V311 => "3.1.1",
            MqttVersion::V5 => "5",
        }
    }
}

/// How MQTT packets travel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MqttTransport {
    /// TCP, or TLS over TCP (`mqtt://`, `mqtts://`).
    #[default]
    Tcp,
    /// WebSocket binary frames (`ws://`, `wss://`) at this HTTP path (`/mqtt`).
    WebSocket { path: String },
}

/// The MQTT 5 properties a run's clients send (empty with MQTT 3.1.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mqtt5Options {
    /// User properties of every publish.
    pub user_properties: Vec<(String, String)>,
    /// The message expiry interval of every publish, in seconds.
    pub message_expiry_s: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    /// Producers send a topic alias instead of the topic after the first publish.
    pub topic_alias: bool,
    /// The session expiry interval asked for at connect, in seconds.
    pub session_expiry_s: Option<u32>,
    /// The most QoS 1/2 publishes a client takes from the broker at once (CONNECT's
    /// receive maximum).
    pub receive_maximum: Option<u16>,
}

/// MQTT quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
}

/// MQTT options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttOptions {
    /// Topic `i` of a run is `<base_topic>/<run-id>/<i>` (default `maestro`).
    pub base_topic: String,
    pub qos: Qos,
    pub retain: bool,
    pub clean_session: bool,
    pub keep_alive: Duration,
    pub client_id_prefix: String,
    /// Unacknowledged QoS 1/2 publishes in flight.
    pub inflight: u16,
    /// Local addresses clients connect from, round robin (`source_ips=127.0.0.2-127.0.0.9`;
    /// empty: the system picks).
    pub source_ips: Vec<std::net::IpAddr>,
    pub version: MqttVersion,
    pub transport: MqttTransport,
    /// `shared=true`: the group of the shared subscription the consumers of a topic
    /// compete in (`$share/<group>/<topic>`).
    pub share_group: Option<String>,
    /// MQTT 5 properties (`version=5` only).
    pub v5: Mqtt5Options,
}

/// The most source addresses a URL may list.
pub const MAX_SOURCE_IPS: usize = 4096;

/// `a-b` ranges (IPv4) and single addresses, comma-separated.
pub(super) fn source_ips(v: &str) -> Option<Vec<std::net::IpAddr>> {
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: std::net::Ipv4Addr = a.trim().parse().ok()?;
                let b: std::net::Ipv4Addr = b.trim().parse().ok()?;
                let (a, b) = (u32::from(a), u32::from(b));
                if b < a || (b - a) as usize >= MAX_SOURCE_IPS {
                    return None;
                }
                out.extend((a..=b).map(|ip| std::net::IpAddr::V4(ip.into())));
            }
            None => out.push(part.parse().ok()?),
        }
        if out.len() > MAX_SOURCE_IPS {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The keys only MQTT 5 has.
const V5_ONLY: &[&str] = &[
    "user_properties",
    "message_expiry",
    "content_type",
    "response_topic",
    "topic_alias",
    "session_expiry",
    "receive_maximum",
];

impl Parser {
    /// A duration in whole seconds that fits MQTT's 32-bit intervals.
    fn seconds(&self, key: &str, v: &str) -> Result<u32, SutUrlError> {
        humantime::parse_duration(v)
            .ok()
            .filter(|d| d.subsec_nanos() == 0)
            .and_then(|d| u32::try_from(d.as_secs()).ok())
            .ok_or_else(|| self.value(key, v, "is not a duration in whole seconds (30s, 1h)"))
    }

    pub(super) fn mqtt(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<MqttOptions, SutUrlError> {
        let websocket = matches!(self.scheme.as_str(), "ws" | "wss");
        let mut o = MqttOptions {
            base_topic: "maestro".into(),
            qos: Qos::AtMostOnce,
            retain: false,
            clean_session: true,
            keep_alive: Duration::from_secs(30),
            client_id_prefix: "maestro".into(),
            inflight: 100,
            source_ips: Vec::new(),
            version: MqttVersion::V311,
            transport: MqttTransport::Tcp,
            share_group: None,
            v5: Mqtt5Options::default(),
        };
        if websocket {
            let path = if path.is_empty() || path == "/" {
                "/mqtt".to_owned()
            } else {
                path.to_owned()
            };
            o.transport = MqttTransport::WebSocket { path };
        } else {
            let base = decode(path.trim_matches('/'));
            if !base.is_empty() {
                o.base_topic = base;
            }
        }
        let mut shared = false;
        let mut share_group = "maestro".to_owned();
        for (key, v) in query {
            let (key, v) = (key.as_str(), v.as_str());
            match key {
                "qos" => {
                    o.qos = match v {
                        "0" => Qos::AtMostOnce,
                        "1" => Qos::AtLeastOnce,
                        "2" => Qos::ExactlyOnce,
                        _ => return Err(self.value(key, v, "is not 0, 1 or 2")),
                    }
                }
                "retain" => o.retain = self.flag(key, v)?,
                "clean_session" => o.clean_session = self.flag(key, v)?,
                "keep_alive" => {
                    o.keep_alive = humantime::parse_duration(v)
                        .ok()
                        .filter(|k| k.as_secs() >= 1 && k.as_secs() <= u16::MAX.into())
                        .ok_or_else(|| self.value(key, v, "is not a duration of 1s..18h"))?
                }
                "client_id_prefix" => o.client_id_prefix = v.to_owned(),
                "inflight" => o.inflight = self.number(key, v, u16::MAX.into())? as u16,
                "source_ips" => {
                    o.source_ips = source_ips(v).ok_or_else(|| {
                        self.value(
                            key,
                            v,
                            "is not a list of addresses and ranges (127.0.0.2-127.0.0.9) of at most 4096",
                        )
                    })?
                }
                "version" => {
                    o.version = match v {
                        "3.1.1" | "4" => MqttVersion::V311,
                        "5" | "5.0" => MqttVersion::V5,
                        _ => return Err(self.value(key, v, "is not 3.1.1 (or 4) or 5")),
                    }
                }
                "topic" if websocket => o.base_topic = v.to_owned(),
                "topic" => {
                    return Err(self.value(
                        key,
                        v,
                        "is for ws:// and wss:// URLs: the base topic of an mqtt:// URL is its path",
                    ));
                }
                "shared" => shared = self.flag(key, v)?,
                "share_group" => {
                    if v.is_empty() || v.contains(['/', '+', '#']) {
                        return Err(self.value(key, v, "is not a group name (no /, + or #)"));
                    }
                    share_group = v.to_owned();
                }
                "user_properties" => {
                    o.v5.user_properties = v
                        .split(',')
                        .map(|pair| {
                            pair.split_once(':')
                                .filter(|(k, _)| !k.is_empty())
                                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        })
                        .collect::<Option<_>>()
                        .ok_or_else(|| {
                            self.value(key, v, "is not a list of key:value pairs (a:1,b:2)")
                        })?
                }
                "message_expiry" => o.v5.message_expiry_s = Some(self.seconds(key, v)?),
                "content_type" => o.v5.content_type = Some(v.to_owned()),
                "response_topic" => {
                    if v.is_empty() || v.contains(['+', '#']) {
                        return Err(self.value(key, v, "is not a topic name (no wildcards)"));
                    }
                    o.v5.response_topic = Some(v.to_owned())
                }
                "topic_alias" => o.v5.topic_alias = self.flag(key, v)?,
                "session_expiry" => o.v5.session_expiry_s = Some(self.seconds(key, v)?),
                "receive_maximum" => {
                    o.v5.receive_maximum = Some(self.number(key, v, u16::MAX.into())? as u16)
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
        if o.base_topic.is_empty() || o.base_topic.contains(['+', '#']) {
            return Err(SutUrlError::Path {
                url: self.url.clone(),
                what: format!(
                    "base topic {:?} is empty or contains a wildcard",
                    o.base_topic
                ),
            });
        }
        if o.version == MqttVersion::V311
            && let Some((key, v)) = query.iter().find(|(k, _)| V5_ONLY.contains(&k.as_str()))
        {
            return Err(self.value(key, v, "is an MQTT 5 property: add version=5"));
        }
        o.share_group = shared.then_some(share_group);
        Ok(o)
    }
}
