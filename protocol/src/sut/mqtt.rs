//! MQTT 3.1.1 (`mqtt://`, `mqtts://`): its options, how its URL is parsed, and what it can do.

use super::*;

pub(super) const PROTOCOL: Protocol = Protocol {
    name: "mqtt",
    title: "MQTT",
    tls_name: Some("mqtts"),
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
    url_form: "mqtt[s]://[user:pass@]host[:port][,host[:port]...][/base-topic][?options]",
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

impl Parser {
    pub(super) fn mqtt(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<MqttOptions, SutUrlError> {
        let base = decode(path.trim_matches('/'));
        let mut o = MqttOptions {
            base_topic: if base.is_empty() {
                "maestro".into()
            } else {
                base
            },
            qos: Qos::AtMostOnce,
            retain: false,
            clean_session: true,
            keep_alive: Duration::from_secs(30),
            client_id_prefix: "maestro".into(),
            inflight: 100,
            source_ips: Vec::new(),
        };
        if o.base_topic.contains(['+', '#']) {
            return Err(SutUrlError::Path {
                url: self.url.clone(),
                what: format!("base topic {:?} contains a wildcard", o.base_topic),
            });
        }
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
