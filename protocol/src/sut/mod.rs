//! The system under test's URL as one typed value, parsed once: the protocol (scheme),
//! its hosts, credentials, and typed options per protocol. What the controller needs to
//! know about a protocol (is it reliable, do consumers of a topic compete, how to show
//! the URL without its password) is a property of this value, so the controller never
//! calls driver code. On the wire (in a [`crate::TestSpec`]) it stays the URL string.
//!
//! ```text
//! mqtt[s]://[user:pass@]host[:port][/base-topic]?qos=&retain=&clean_session=&keep_alive=&client_id_prefix=&inflight=
//!        &version=5&shared=&user_properties=&message_expiry=&content_type=&response_topic=&topic_alias=&session_expiry=
//! ws[s]://[user:pass@]host[:port][/websocket-path]?topic=<base-topic>&<the MQTT options>
//! amqp[s]://[user:pass@]host[:port][/vhost]?exchange=&exchange_type=&routing_key=&queue=&durable=&persistent=
//!        &confirms=&confirm_window=&mandatory=&prefetch=&ack=&ack_batch=&fanout=&keep=
//! amqp10[s]://[user:pass@]host[:port][/address]?address=&settle=at_least_once|at_most_once
//!        &fanout=&durable=&credit=&window=&sasl=plain|anonymous
//! kafka://host[:port][,host[:port]...][/prefix]?partitions=&replication_factor=&acks=&linger=
//!        &batch_size=&compression=&group=&key=&auto_commit=&offset_reset=&keep=
//!        &<librdkafka.property>=&producer.<property>=&consumer.<property>=&topic.config.<config>=
//! ```
//!
//! TLS: `mqtts://` (port 8883), `amqps://` and `amqp10s://` (port 5671) take `ca=` (PEM file of the CAs to
//! trust), `cert=` and `key=` (one client certificate for every client), `insecure=true`
//! (accept any server certificate: lab only), `sni=` (the name the server certificate must
//! carry, when the host is an address), and `client_ca=` with `client_ca_key=` (a CA and
//! its key: every client gets its own certificate, CN = its client id). Kafka uses TLS with
//! `security.protocol=ssl` or `sasl_ssl` and librdkafka's `ssl.*` properties; `client_ca=`
//! and `client_ca_key=` work there too. Files are read on the worker's host.
//!
//! Passwords are percent-decoded (`%2B` is `+`; a literal `+` stays a plus).

mod amqp;
mod amqp10;
mod crossing;
mod kafka;
mod mqtt;
mod nats;
mod redis;
mod stomp;
mod stream;
mod tls;

pub use amqp::*;
pub use amqp10::*;
pub use crossing::*;
pub use kafka::*;
pub use mqtt::*;
pub use nats::*;
pub use redis::*;
pub use stomp::*;
pub use stream::*;
pub use tls::*;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The protocol under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Mqtt,
    Amqp,
    Kafka,
    /// AMQP 1.0 (`amqp10://`, `amqp10s://`).
    Amqp10,
    /// RabbitMQ's stream protocol (`rabbitmq-stream://`).
    Stream,
    /// Redis pub/sub and Streams (`redis://`).
    Redis,
    /// NATS core and JetStream (`nats://`).
    Nats,
    /// STOMP 1.2 (`stomp://`, `stomps://`).
    Stomp,
}

impl Scheme {
    pub const ALL: [Scheme; 8] = [
        Scheme::Mqtt,
        Scheme::Amqp,
        Scheme::Kafka,
        Scheme::Amqp10,
        Scheme::Stream,
        Scheme::Redis,
        Scheme::Nats,
        Scheme::Stomp,
    ];

    /// The registry: the one place that maps a scheme to its protocol's module.
    fn protocol(self) -> &'static Protocol {
        match self {
            Scheme::Mqtt => &mqtt::PROTOCOL,
            Scheme::Amqp => &amqp::PROTOCOL,
            Scheme::Kafka => &kafka::PROTOCOL,
            Scheme::Amqp10 => &amqp10::PROTOCOL,
            Scheme::Stream => &stream::PROTOCOL,
            Scheme::Redis => &redis::PROTOCOL,
            Scheme::Nats => &nats::PROTOCOL,
            Scheme::Stomp => &stomp::PROTOCOL,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.protocol().name
    }

    /// The name people use (`MQTT`, `AMQP 1.0`), for messages.
    pub fn title(self) -> &'static str {
        self.protocol().title
    }

    /// The form of this protocol's URLs (`mqtt[s]://[user:pass@]host...`).
    pub fn url_form(self) -> &'static str {
        self.protocol().url_form
    }

    /// The options this protocol's URLs take (TLS ones aside: [`TLS_OPTIONS`]).
    pub fn url_options(self) -> &'static [UrlOption] {
        self.protocol().url_options
    }

    /// The TLS options this protocol's URLs take.
    pub fn tls_keys(self) -> &'static [&'static str] {
        self.protocol().tls_keys
    }

    /// What this protocol can do.
    pub fn capabilities(self) -> Capabilities {
        self.protocol().capabilities
    }

    /// The protocols that can do what `can` asks, by name (`"mqtt, kafka"`): for
    /// messages that say where an option works.
    pub fn names_where(can: impl Fn(&Capabilities) -> bool) -> String {
        Self::ALL
            .iter()
            .filter(|s| can(&s.capabilities()))
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The scheme a URL names (`mqtts` is MQTT over TLS, `wss` MQTT over WebSockets over
    /// TLS), whether it asks for TLS, and its default port.
    fn from_url_scheme(name: &str) -> Option<(Scheme, bool, u16)> {
        Self::ALL.into_iter().find_map(|s| {
            let p = s.protocol();
            if p.name == name {
                Some((s, false, p.port))
            } else if p.tls_name == Some(name) {
                Some((s, true, p.tls_port))
            } else {
                p.aliases
                    .iter()
                    .find(|a| a.name == name)
                    .map(|a| (s, a.tls, a.port))
            }
        })
    }

    /// Every URL scheme of every protocol (`mqtt, mqtts, ws, wss, amqp, ...`).
    pub fn url_schemes() -> Vec<&'static str> {
        Self::ALL
            .iter()
            .flat_map(|s| {
                let p = s.protocol();
                std::iter::once(p.name)
                    .chain(p.tls_name)
                    .chain(p.aliases.iter().map(|a| a.name))
            })
            .collect()
    }
}

/// What a protocol can do. Validation, plans, the OMB import and reports ask this rather
/// than matching on the scheme; each protocol's module declares its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The consumers of one topic can share its messages (one queue, one consumer group):
    /// more than one consumer per subscription.
    pub competing_consumers: bool,
    /// A topic can have several subscriptions, each of them getting every message: its
    /// subscribers, or where consumers compete, several queues or groups of them
    /// ([`crate::TestSpec::subscriptions`]).
    pub several_subscriptions: bool,
    /// The protocol can confirm every message (MQTT QoS 1, publisher confirms, acks=all).
    pub reliable_acks: bool,
    /// The broker keeps messages for consumers that do not read: a consumer backlog.
    pub backlog: bool,
    /// Topics have partitions.
    pub partitions: bool,
    /// Messages carry keys (a workload's `key_distribution`).
    pub keys: bool,
    /// One URL may list several hosts (the nodes of one SUT).
    pub several_hosts: bool,
    /// TLS to the SUT.
    pub tls: bool,
    /// Every client can get a certificate of its own (`client_ca=`).
    pub per_client_certificates: bool,
    /// Fleets: tens of thousands of clients with a connection each (`TestSpec.fleet`).
    pub fleet: bool,
    /// Open files one client takes on the worker (its connections).
    pub files_per_client: u8,
}

/// Whether the URL asks for TLS, for protocols that ask by their scheme.
pub(super) fn tls_by_scheme(tls_scheme: bool, _query: &[(String, String)]) -> bool {
    tls_scheme
}

/// A protocol's own options from a URL's path, its query (TLS options taken out) and
/// whether it names a user.
type ParseOptions = fn(
    &Parser,
    path: &str,
    query: &[(String, String)],
    credentials: bool,
) -> Result<SutOptions, SutUrlError>;

/// Another URL scheme of a protocol: MQTT over WebSockets (`ws`, `wss`).
struct SchemeAlias {
    name: &'static str,
    /// The scheme asks for TLS.
    tls: bool,
    port: u16,
}

/// One protocol's entry in the registry ([`Scheme::protocol`]).
struct Protocol {
    /// The URL scheme without TLS, and the name everywhere else (`mqtt`).
    name: &'static str,
    /// The name people use (`MQTT`, `AMQP 1.0`), for messages.
    title: &'static str,
    /// The URL scheme with TLS, when TLS is asked for by the scheme (`mqtts`).
    tls_name: Option<&'static str>,
    /// Other schemes of the protocol (a transport of its own: WebSockets).
    aliases: &'static [SchemeAlias],
    port: u16,
    tls_port: u16,
    capabilities: Capabilities,
    /// Whether a URL asks for TLS: by its scheme (`tls_scheme`), or by an option (Kafka's
    /// `security.protocol`).
    tls_asked: fn(tls_scheme: bool, query: &[(String, String)]) -> bool,
    /// The TLS options the URL takes (the rest are the protocol's own properties).
    tls_keys: &'static [&'static str],
    /// The URL's form, for the reference.
    url_form: &'static str,
    /// The options the URL takes (TLS ones aside), for the reference and for messages.
    url_options: &'static [UrlOption],
    /// What to tell a user who gave a TLS option without asking for TLS (default: use
    /// the TLS scheme).
    tls_hint: Option<&'static str>,
    /// The protocol's own options, from the URL's path and the query left after TLS.
    options: ParseOptions,
}

impl Protocol {
    /// The options a URL of this protocol takes, for a message about one it does not.
    fn known(&self) -> String {
        let own: Vec<&str> = self.url_options.iter().map(|o| o.key).collect();
        let tls: Vec<&str> = self.tls_keys.to_vec();
        match self.tls_name {
            Some(name) => format!("{}, and with {name}:// {}", own.join(", "), tls.join(", ")),
            None if tls.is_empty() => own.join(", "),
            None => format!("{}, {}", own.join(", "), tls.join(", ")),
        }
    }
}

/// One option a SUT URL takes: for the generated reference and for the parser's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlOption {
    /// The query key (`qos`), or a pattern (`producer.<property>`).
    pub key: &'static str,
    /// What it is when not given (empty: nothing).
    pub default: &'static str,
    pub meaning: &'static str,
}

/// Every TLS option, for protocols that ask for TLS by their scheme.
pub(super) const TLS_KEYS: &[&str] = &[
    "ca",
    "cert",
    "key",
    "insecure",
    "sni",
    "client_ca",
    "client_ca_key",
];

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bad SUT URL; the message names the URL (password hidden) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SutUrlError {
    #[error(
        "SUT URL {url:?}: no scheme (expected mqtt://, mqtts://, ws://, wss://, amqp://, amqps://, amqp10://, amqp10s:// or kafka://)"
    )]
    NoScheme { url: String },
    #[error(
        "SUT URL {url:?}: scheme {scheme:?} is not supported (supported: mqtt, mqtts, ws, wss, amqp, amqps, amqp10, amqp10s, kafka)"
    )]
    Scheme { url: String, scheme: String },
    #[error("SUT URL {url:?}: no host")]
    NoHost { url: String },
    #[error("SUT URL {url:?}: port {port:?} is not a number from 1 to 65535")]
    Port { url: String, port: String },
    #[error("SUT URL {url:?}: {scheme} takes one host, not {hosts}")]
    Hosts {
        url: String,
        scheme: Scheme,
        hosts: usize,
    },
    #[error("SUT URL {url:?}: {what}")]
    Path { url: String, what: String },
    #[error("SUT URL {url:?}: {key}={value:?} {expected}")]
    Value {
        url: String,
        key: String,
        value: String,
        expected: String,
    },
    #[error("SUT URL {url:?}: {what}")]
    Tls { url: String, what: String },
    #[error(
        "SUT URL {url:?}: {key} is refused: it makes librdkafka {does} on the worker's host, and a SUT URL comes from whoever commands the cluster"
    )]
    Refused {
        url: String,
        key: String,
        does: &'static str,
    },
    #[error(
        "SUT URL {url:?}: names no user, so a password given apart from it (--sut-password, --sut-password-file) has no account to go with; write user@host"
    )]
    PasswordWithoutUser { url: String },
    #[error(
        "SUT URL {url:?}: already holds a password; give it either in the URL or apart from it (--sut-password, --sut-password-file), not both"
    )]
    PasswordTwice { url: String },
    #[error("SUT URL {url:?}: unknown parameter {key:?} (known: {known})")]
    Unknown {
        url: String,
        key: String,
        known: String,
    },
}

/// One host of the SUT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// A name or an address (IPv6 without brackets).
    pub name: String,
    pub port: u16,
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.contains(':') {
            write!(f, "[{}]:{}", self.name, self.port)
        } else {
            write!(f, "{}:{}", self.name, self.port)
        }
    }
}

/// A user name and password, percent-decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({:?}, ***)", self.user)
    }
}

/// The options of one protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SutOptions {
    Mqtt(MqttOptions),
    Amqp(AmqpOptions),
    Kafka(KafkaOptions),
    Amqp10(Amqp10Options),
    Stream(StreamOptions),
    Redis(RedisOptions),
    Nats(NatsOptions),
    Stomp(StompOptions),
}

/// A parsed SUT URL. `Debug` and `Display` hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SutUrl {
    /// The URL as given (with its password): what goes on the wire.
    raw: String,
    pub hosts: Vec<Host>,
    pub credentials: Option<Credentials>,
    pub options: SutOptions,
    /// TLS to the SUT (`mqtts://`, `amqps://`, Kafka `security.protocol=ssl|sasl_ssl`).
    pub tls: Option<Box<TlsOptions>>,
}

fn decode(v: &str) -> String {
    percent_encoding::percent_decode_str(v)
        .decode_utf8_lossy()
        .into_owned()
}

/// The URL with its password replaced by `***` (works on any URL-like string, also one
/// that does not parse).
pub fn redact(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return raw.to_owned();
    };
    // The userinfo ends at an '@': the last one before the first '?' or, when a password
    // holds an unencoded '?', the last one of all unless a query ('=') comes before it.
    let first_q = rest.find('?').unwrap_or(rest.len());
    let userinfo_end = rest[..first_q]
        .rfind('@')
        .or_else(|| rest.rfind('@').filter(|at| !rest[..*at].contains('=')));
    let (head, after) = match userinfo_end {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            if rest[..at].contains(':') {
                (format!("{user}:***@"), &rest[at + 1..])
            } else {
                (format!("{user}@"), &rest[at + 1..])
            }
        }
        None => (String::new(), rest),
    };
    let (path, query) = match after.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (after, None),
    };
    let head = format!("{head}{path}");
    let Some(query) = query else {
        return format!("{scheme}://{head}");
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if secret_key(k) => format!("{k}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{scheme}://{head}?{}", query.join("&"))
}

/// Whether a SUT URL option holds a secret (a password, a key, a token), whose value is
/// never written or shown.
fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "jaas.config",
        "oauthbearer.config",
        ".pem",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// Parses the options of one protocol; `url` is the redacted URL for messages, `scheme`
/// the URL's scheme as written (`wss`).
struct Parser {
    url: String,
    scheme: String,
}

impl Parser {
    fn value(&self, key: &str, value: &str, expected: &str) -> SutUrlError {
        SutUrlError::Value {
            url: self.url.clone(),
            key: key.to_owned(),
            value: value.to_owned(),
            expected: expected.to_owned(),
        }
    }

    fn flag(&self, key: &str, v: &str) -> Result<bool, SutUrlError> {
        match v {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(self.value(key, v, "is not true or false")),
        }
    }

    fn number(&self, key: &str, v: &str, max: u64) -> Result<u64, SutUrlError> {
        v.parse::<u64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| self.value(key, v, &format!("is not a number from 1 to {max}")))
    }
}

fn host(url: &str, default_port: u16, h: &str) -> Result<Host, SutUrlError> {
    let (name, port) = if let Some(rest) = h.strip_prefix('[') {
        let (name, after) = rest.split_once(']').ok_or_else(|| SutUrlError::NoHost {
            url: url.to_owned(),
        })?;
        (name, after.strip_prefix(':'))
    } else {
        match h.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (h, None),
        }
    };
    if name.is_empty() {
        return Err(SutUrlError::NoHost {
            url: url.to_owned(),
        });
    }
    let bracketed = h.starts_with('[');
    let valid = if bracketed {
        name.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
    };
    if !valid {
        return Err(SutUrlError::Path {
            url: url.to_owned(),
            what: format!("host {name:?} is not a host name or an IP address"),
        });
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| SutUrlError::Port {
                url: url.to_owned(),
                port: p.to_owned(),
            })?,
    };
    Ok(Host {
        name: name.to_owned(),
        port,
    })
}

impl SutUrl {
    /// Several URLs of one SUT's nodes as one URL with their hosts in order (`--sut A
    /// --sut B`): they must differ only in `host:port`.
    pub fn nodes(urls: &[SutUrl]) -> Result<Self, SutUrlError> {
        let Some(first) = urls.first() else {
            return Err(SutUrlError::NoScheme { url: String::new() });
        };
        if urls.len() == 1 {
            return Ok(first.clone());
        }
        // The raw URL split around its host list: scheme://[userinfo@] HOSTS /path?query.
        fn parts(raw: &str) -> Option<(&str, &str, &str)> {
            let (scheme, rest) = raw.split_once("://")?;
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(end);
            let (head, hosts) = match authority.rsplit_once('@') {
                Some((user, hosts)) => (&raw[..scheme.len() + 3 + user.len() + 1], hosts),
                None => (&raw[..scheme.len() + 3], authority),
            };
            Some((head, hosts, tail))
        }
        let (head, _, tail) = parts(&first.raw).ok_or_else(|| SutUrlError::NoScheme {
            url: first.redacted(),
        })?;
        let mut hosts = Vec::new();
        for u in urls {
            match parts(&u.raw) {
                Some((h, list, t)) if h == head && t == tail => hosts.push(list),
                _ => {
                    return Err(SutUrlError::Path {
                        url: u.redacted(),
                        what: format!(
                            "differs from {} in more than host:port (several SUT URLs are the nodes of one SUT)",
                            first.redacted()
                        ),
                    });
                }
            }
        }
        SutUrl::parse(&format!("{head}{}{tail}", hosts.join(",")))
    }

    pub fn parse(raw: &str) -> Result<Self, SutUrlError> {
        let url = redact(raw);
        let Some((scheme, rest)) = raw.split_once("://") else {
            return Err(SutUrlError::NoScheme { url });
        };
        let scheme_name = scheme;
        let Some((scheme, tls_scheme, default_port)) = Scheme::from_url_scheme(scheme) else {
            return Err(SutUrlError::Scheme {
                url,
                scheme: scheme.to_owned(),
            });
        };
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match before_query.find('/') {
            Some(i) => before_query.split_at(i),
            None => (before_query, ""),
        };
        let (userinfo, hostlist) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let credentials = userinfo.map(|u| {
            let (user, password) = u.split_once(':').unwrap_or((u, ""));
            Credentials {
                user: decode(user),
                password: decode(password),
            }
        });
        let hosts = hostlist
            .split(',')
            .map(|h| host(&url, default_port, h))
            .collect::<Result<Vec<_>, _>>()?;
        let protocol = scheme.protocol();
        if hosts.len() > 1 && !protocol.capabilities.several_hosts {
            return Err(SutUrlError::Hosts {
                url,
                scheme,
                hosts: hosts.len(),
            });
        }
        let mut query: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let p = Parser {
            url,
            scheme: scheme_name.to_owned(),
        };
        let tls = p.tls(
            scheme,
            (protocol.tls_asked)(tls_scheme, &query),
            protocol.tls_keys,
            &mut query,
        )?;
        let options = (protocol.options)(&p, path, &query, credentials.is_some())?;
        Ok(SutUrl {
            raw: raw.to_owned(),
            hosts,
            credentials,
            options,
            tls,
        })
    }

    /// This URL with `password` for its user, when the password is kept out of the URL
    /// (a file or the environment, so it shows neither in `ps` nor in a shell history).
    /// The URL must name a user and hold no password of its own.
    pub fn with_password(&self, password: &str) -> Result<SutUrl, SutUrlError> {
        let url = self.redacted();
        let Some((scheme, rest)) = self.raw.split_once("://") else {
            return Err(SutUrlError::NoScheme { url });
        };
        let before_query = rest.split_once('?').map_or(rest, |(b, _)| b);
        let authority = before_query
            .find('/')
            .map_or(before_query, |i| &before_query[..i]);
        let Some((userinfo, _)) = authority.rsplit_once('@') else {
            return Err(SutUrlError::PasswordWithoutUser { url });
        };
        if userinfo.contains(':') {
            return Err(SutUrlError::PasswordTwice { url });
        }
        if userinfo.is_empty() {
            return Err(SutUrlError::PasswordWithoutUser { url });
        }
        let encoded =
            percent_encoding::utf8_percent_encode(password, percent_encoding::NON_ALPHANUMERIC);
        let at = scheme.len() + 3 + userinfo.len();
        let raw = format!("{}:{encoded}{}", &self.raw[..at], &self.raw[at..]);
        SutUrl::parse(&raw)
    }

    /// Every file this URL makes a worker read, as `(parameter, path)`: the TLS files
    /// (`ca=`, `cert=`, `key=`, `client_ca=`, `client_ca_key=`) and librdkafka
    /// properties that name a file or a folder (`ssl.ca.location`, `sasl.kerberos.keytab`,
    /// `*.file`, ...). A worker reads them only under its `--files-dir`.
    pub fn files(&self) -> Vec<(String, String)> {
        let mut files = Vec::new();
        if let Some(t) = &self.tls {
            for (key, path) in [
                ("ca", &t.ca),
                ("cert", &t.cert),
                ("key", &t.key),
                ("client_ca", &t.client_ca),
                ("client_ca_key", &t.client_ca_key),
            ] {
                if let Some(path) = path {
                    files.push((key.to_owned(), path.clone()));
                }
            }
        }
        if let SutOptions::Kafka(k) = &self.options {
            let lists = [
                ("", &k.properties),
                ("producer.", &k.producer_properties),
                ("consumer.", &k.consumer_properties),
            ];
            for (prefix, list) in lists {
                for (name, value) in list {
                    if names_a_file(name) {
                        files.push((format!("{prefix}{name}"), value.clone()));
                    }
                }
            }
        }
        files
    }

    pub fn scheme(&self) -> Scheme {
        match self.options {
            SutOptions::Mqtt(_) => Scheme::Mqtt,
            SutOptions::Amqp(_) => Scheme::Amqp,
            SutOptions::Kafka(_) => Scheme::Kafka,
            SutOptions::Amqp10(_) => Scheme::Amqp10,
            SutOptions::Stream(_) => Scheme::Stream,
            SutOptions::Redis(_) => Scheme::Redis,
            SutOptions::Nats(_) => Scheme::Nats,
            SutOptions::Stomp(_) => Scheme::Stomp,
        }
    }

    /// The URL as given, password included (for the wire and the drivers only).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The URL as given without its options (`?...`), password included: what a
    /// client library connects to.
    pub fn without_options(&self) -> &str {
        self.raw.split_once('?').map_or(&self.raw, |(u, _)| u)
    }

    /// The URL with its password replaced by `***`, for messages and results.
    pub fn redacted(&self) -> String {
        redact(&self.raw)
    }

    /// The URL as given, secrets and all: for the wire to the workers only, never for a
    /// file, a log or a message (use [`SutUrl::redacted`]).
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The first host (MQTT and AMQP have exactly one).
    pub fn host(&self) -> &Host {
        // Parsing guarantees at least one host.
        &self.hosts[0]
    }

    /// `host:port,host:port` (Kafka's bootstrap servers).
    pub fn host_list(&self) -> String {
        self.hosts
            .iter()
            .map(Host::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// True when the protocol options promise no loss in normal operation: MQTT QoS 1 or 2,
    /// AMQP publisher confirms, Kafka acks=all. A plan's `max_lost` defaults to 0 for these.
    pub fn reliable(&self) -> bool {
        match &self.options {
            SutOptions::Mqtt(o) => o.reliable(),
            SutOptions::Amqp(o) => o.reliable(),
            SutOptions::Kafka(o) => o.reliable(),
            SutOptions::Amqp10(o) => o.reliable(),
            // Every publish is confirmed.
            SutOptions::Stream(_) => true,
            SutOptions::Redis(o) => o.reliable(),
            SutOptions::Nats(o) => o.reliable(),
            SutOptions::Stomp(o) => o.reliable(),
        }
    }

    /// True when the consumers of one topic share its messages (one AMQP queue, one Kafka
    /// consumer group per topic); false when each consumer gets every message (MQTT
    /// subscribers, AMQP `fanout=true`, readers of a RabbitMQ stream).
    pub fn consumers_compete(&self) -> bool {
        match &self.options {
            SutOptions::Mqtt(o) => o.share_group.is_some(),
            SutOptions::Amqp(o) => o.consumers_compete(),
            SutOptions::Kafka(_) => true,
            SutOptions::Amqp10(o) => !o.fanout,
            SutOptions::Stream(_) => false,
            SutOptions::Redis(o) => o.consumers_compete(),
            SutOptions::Nats(o) => o.consumers_compete(),
            SutOptions::Stomp(o) => o.consumers_compete(),
        }
    }

    /// What this URL's protocol can do with its options: MQTT consumers compete with a
    /// shared subscription, Redis Streams compete in a group and keep a backlog.
    pub fn capabilities(&self) -> Capabilities {
        let mut can = self.scheme().capabilities();
        can.competing_consumers |= self.consumers_compete();
        // Redis Streams keep what a consumer group has not read; pub/sub keeps nothing.
        if let SutOptions::Redis(o) = &self.options {
            can.backlog = o.mode == RedisMode::Streams;
        }
        // A JetStream stream keeps what its consumers have not read.
        if let SutOptions::Nats(o) = &self.options {
            can.backlog = o.jetstream;
        }
        // A STOMP queue keeps what its consumers have not read, and its subscribers all
        // compete; topics and exchanges give each subscriber every message.
        if let SutOptions::Stomp(o) = &self.options {
            can.competing_consumers = o.consumers_compete();
            can.backlog = o.consumers_compete();
            can.several_subscriptions = !o.consumers_compete();
        }
        can
    }

    /// The partitions per topic this URL asks for, where topics have partitions and the
    /// URL says how many.
    pub fn partitions(&self) -> Option<u32> {
        match &self.options {
            SutOptions::Kafka(o) => o.partitions,
            _ => None,
        }
    }

    /// The prefix of the run's topic names the URL gives (MQTT's base topic), if any.
    pub fn base_topic(&self) -> Option<&str> {
        match &self.options {
            SutOptions::Mqtt(o) => Some(&o.base_topic),
            _ => None,
        }
    }
}

impl FromStr for SutUrl {
    type Err = SutUrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SutUrl::parse(s)
    }
}

impl fmt::Debug for SutUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SutUrl")
            .field("url", &self.redacted())
            .field("hosts", &self.hosts)
            .field("credentials", &self.credentials)
            .field("options", &self.options)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Shows the URL without its password.
impl fmt::Display for SutUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl serde::Serialize for SutUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> serde::Deserialize<'de> for SutUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        SutUrl::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_protocol_in_the_registry_parses_its_own_schemes_and_ports() {
        for scheme in Scheme::ALL {
            let p = scheme.protocol();
            let u: SutUrl = format!("{}://h", p.name).parse().unwrap();
            assert_eq!(u.scheme(), scheme);
            assert_eq!(u.host().port, p.port);
            assert_eq!(u.capabilities(), scheme.capabilities());
            if let Some(tls) = p.tls_name {
                let u: SutUrl = format!("{tls}://h").parse().unwrap();
                assert_eq!((u.scheme(), u.host().port), (scheme, p.tls_port));
                assert!(u.tls.is_some(), "{tls}");
            }
            for alias in p.aliases {
                let u: SutUrl = format!("{}://h", alias.name).parse().unwrap();
                assert_eq!((u.scheme(), u.host().port), (scheme, alias.port));
                assert_eq!(u.tls.is_some(), alias.tls, "{}", alias.name);
            }
            // A URL's protocol options are its own protocol's.
            assert_eq!(scheme.as_str(), p.name);
        }
        assert_eq!(Scheme::names_where(|c| c.partitions), "kafka");
        assert_eq!(Scheme::names_where(|c| c.fleet), "mqtt");
        assert_eq!(
            Scheme::names_where(|c| c.backlog),
            "amqp, kafka, amqp10, rabbitmq-stream, stomp",
            "MQTT brokers keep nothing for a connected subscriber that does not read"
        );
        assert!(matches!(
            "pulsar://h".parse::<SutUrl>(),
            Err(SutUrlError::Scheme { .. })
        ));
    }

    #[test]
    fn every_option_in_the_reference_is_one_the_parser_takes() {
        for scheme in Scheme::ALL {
            for o in scheme.url_options() {
                // Patterns (`producer.<property>`) stand for many keys: one of each.
                let key = o.key.replace("<librdkafka.property>", "socket.timeout.ms");
                let key = key
                    .replace("<property>", "socket.timeout.ms")
                    .replace("<name>", "retention.ms");
                let url = format!("{scheme}://h?{key}=1");
                let parsed = url.parse::<SutUrl>();
                assert!(
                    !matches!(parsed, Err(SutUrlError::Unknown { .. })),
                    "{url}: {parsed:?}"
                );
            }
            let unknown = format!("{scheme}://h?colour=blue").parse::<SutUrl>();
            let Err(SutUrlError::Unknown { known, .. }) = unknown else {
                panic!("{scheme}: {unknown:?}")
            };
            for o in scheme.url_options() {
                assert!(known.contains(o.key), "{scheme}: {known} lacks {}", o.key);
            }
        }
    }

    #[test]
    fn several_hosts_only_where_the_protocol_takes_them() {
        for scheme in Scheme::ALL {
            let url = format!("{scheme}://a:1,b:2");
            let parsed = url.parse::<SutUrl>();
            if scheme.capabilities().several_hosts {
                assert_eq!(parsed.unwrap().hosts.len(), 2, "{url}");
            } else {
                assert!(
                    matches!(parsed, Err(SutUrlError::Hosts { hosts: 2, .. })),
                    "{url}: {parsed:?}"
                );
            }
        }
    }

    #[test]
    fn every_file_a_url_makes_a_worker_read_is_listed() {
        let url = SutUrl::parse("mqtts://h:8883/t?ca=/c/ca.pem&cert=c.pem&key=/k.pem").unwrap();
        let keys: Vec<String> = url.files().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["ca", "cert", "key"]);
        let url = SutUrl::parse("amqps://h/t?client_ca=/x/ca&client_ca_key=/x/ca.key").unwrap();
        let keys: Vec<String> = url.files().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["client_ca", "client_ca_key"]);
        let kafka = SutUrl::parse(
            "kafka://h:9092/p?security.protocol=ssl&ssl.ca.location=/a&consumer.ssl.key.location=/b&sasl.kerberos.keytab=/c&sasl.oauthbearer.assertion.private.key.file=/d&linger.ms=1&client_ca=/e&client_ca_key=/f",
        )
        .unwrap();
        let mut files = kafka.files();
        files.sort();
        let paths: Vec<&str> = files.iter().map(|(_, p)| p.as_str()).collect();
        assert_eq!(paths, ["/e", "/f", "/b", "/c", "/d", "/a"], "{files:?}");
        assert!(SutUrl::parse("mqtt://h/t").unwrap().files().is_empty());
    }

    #[test]
    fn a_password_kept_apart_joins_the_user_and_stays_hidden() {
        let url = SutUrl::parse("amqp://bench@127.0.0.1:5672/%2f?exchange=x").unwrap();
        let with = url.with_password("p@ss/w?rd#:%").unwrap();
        let c = with.credentials.as_ref().unwrap();
        assert_eq!(
            (c.user.as_str(), c.password.as_str()),
            ("bench", "p@ss/w?rd#:%")
        );
        assert_eq!(with.hosts, url.hosts);
        assert_eq!(with.options, url.options);
        assert!(!with.redacted().contains("p@ss"), "{}", with.redacted());
        assert!(!format!("{with:?}").contains("rd#"));

        let none = SutUrl::parse("mqtt://127.0.0.1:1883/t").unwrap();
        assert!(matches!(
            none.with_password("x"),
            Err(SutUrlError::PasswordWithoutUser { .. })
        ));
        let twice = SutUrl::parse("mqtt://u:p@127.0.0.1:1883/t").unwrap();
        let e = twice.with_password("x").unwrap_err();
        assert!(matches!(e, SutUrlError::PasswordTwice { .. }));
        assert!(!e.to_string().contains(":p@"), "{e}");
    }

    use super::*;

    #[test]
    fn secrets_never_show_in_a_redacted_url() {
        let u = "kafka://h:9092/p?sasl.username=u&sasl.password=hunter2&ssl.key.password=k3y\
                 &consumer.sasl.oauthbearer.client.secret=s3c&ssl.key.pem=PEM&acks=all&key=round_robin";
        let r = redact(u);
        for secret in ["hunter2", "k3y", "s3c", "PEM"] {
            assert!(!r.contains(secret), "{secret} in {r}");
        }
        assert!(
            r.contains("sasl.username=u") && r.contains("key=round_robin"),
            "{r}"
        );
        // A password holding '/', '?' or '#' unencoded.
        let r = redact("amqp://user:pa/ss?w#rd@host:5672/vhost?confirms=true");
        assert_eq!(r, "amqp://user:***@host:5672/vhost?confirms=true");
        assert_eq!(redact("mqtt://h:1883/t?qos=1"), "mqtt://h:1883/t?qos=1");
        let r = redact("amqp://user:pa?ss@host/v?x=1");
        assert_eq!(r, "amqp://user:***@host/v?x=1");
        // An '@' in a query value is not a userinfo.
        let r = redact("kafka://h:9092/p?sasl.username=a@b&sasl.password=x");
        assert_eq!(r, "kafka://h:9092/p?sasl.username=a@b&sasl.password=***");
    }

    #[test]
    fn kafka_properties_that_run_code_are_refused_by_name() {
        for (key, does) in [
            ("plugin.library.paths", "load a shared library"),
            ("consumer.plugin.library.paths", "load a shared library"),
            ("sasl.kerberos.kinit.cmd", "run a shell command"),
            ("producer.sasl.kerberos.kinit.cmd", "run a shell command"),
            ("ssl.engine.location", "load an OpenSSL engine"),
            ("ssl.providers", "load OpenSSL providers"),
        ] {
            let e = SutUrl::parse(&format!("kafka://h:9092/p?{key}=/tmp/x"))
                .err()
                .unwrap_or_else(|| panic!("{key} accepted"))
                .to_string();
            assert!(e.contains(key) && e.contains(does), "{e}");
        }
        // Ordinary properties with dots still pass through.
        assert!(SutUrl::parse("kafka://h:9092/p?socket.keepalive.enable=true").is_ok());
    }

    fn parse(s: &str) -> SutUrl {
        SutUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn mqtt_options_credentials_and_redaction() {
        let u = parse(
            "mqtt://u:p%40w@127.0.0.1:1884/bench?qos=1&retain=true&keep_alive=10s&inflight=20&client_id_prefix=x",
        );
        assert_eq!(u.scheme(), Scheme::Mqtt);
        assert_eq!(u.host().to_string(), "127.0.0.1:1884");
        let c = u
            .credentials
            .clone()
            .unwrap_or_else(|| panic!("credentials"));
        assert_eq!((c.user.as_str(), c.password.as_str()), ("u", "p@w"));
        let SutOptions::Mqtt(o) = &u.options else {
            panic!("mqtt")
        };
        assert_eq!(o.qos, Qos::AtLeastOnce);
        assert!(o.retain);
        assert_eq!(o.keep_alive, Duration::from_secs(10));
        assert_eq!((o.inflight, o.base_topic.as_str()), (20, "bench"));
        assert_eq!(
            u.redacted(),
            "mqtt://u:***@127.0.0.1:1884/bench?qos=1&retain=true&keep_alive=10s&inflight=20&client_id_prefix=x"
        );
        assert!(!format!("{u} {u:?}").contains("p%40w") && !format!("{u:?}").contains("p@w"));
        assert!(u.reliable() && !u.consumers_compete());
        let awkward = parse("mqtt://u:a%2Bb%26c%25d%40e%3Af%2Fg@h");
        assert_eq!(
            awkward.credentials.map(|c| c.password),
            Some("a+b&c%d@e:f/g".into())
        );
        let plain = parse("mqtt://h");
        assert_eq!(plain.host().port, 1883);
        assert!(!plain.reliable());
        let v6 = parse("mqtt://[::1]:1999/x");
        assert_eq!((v6.host().name.as_str(), v6.host().port), ("::1", 1999));
    }

    #[test]
    fn amqp10_addresses_settle_modes_and_sasl() {
        let q = parse("amqp10://u:p@h/queue/bench?settle=at_least_once&durable=true&credit=50");
        let SutOptions::Amqp10(o) = &q.options else {
            panic!("amqp10")
        };
        assert_eq!(q.scheme(), Scheme::Amqp10);
        assert_eq!(
            (o.address.as_str(), o.credit, o.durable),
            ("/queue/bench", 50, true)
        );
        assert_eq!(
            (o.settle, o.sasl, o.fanout),
            (Settle::AtLeastOnce, Sasl::Plain, false)
        );
        assert!(q.reliable() && q.consumers_compete());
        assert_eq!(q.host().port, 5672);
        let t = parse("amqp10://h?address=topic://bench&settle=at_most_once");
        let SutOptions::Amqp10(o) = &t.options else {
            panic!("amqp10")
        };
        assert_eq!(
            (o.address.as_str(), o.fanout, o.sasl),
            ("topic://bench", true, Sasl::Anonymous)
        );
        assert!(!t.reliable() && !t.consumers_compete());
        let d = parse("amqp10://h");
        let SutOptions::Amqp10(o) = &d.options else {
            panic!("amqp10")
        };
        assert_eq!(o.address, "/queue/maestro");
        assert_eq!(parse("amqp10s://h").host().port, 5671);
        for (url, says) in [
            ("amqp10://h?settle=maybe", "settle=\"maybe\""),
            ("amqp10://h?sasl=plain", "needs user:password"),
            ("amqp10://h?colour=blue", "colour"),
            ("amqp10://h?credit=0", "credit"),
        ] {
            let e = SutUrl::parse(url).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn kafka_client_options_per_role_and_the_typed_ones_either_way() {
        let k = parse(
            "kafka://k1:9092,k2:9093/b?replication_factor=3&producer.acks=1&producer.enable.idempotence=true\
             &consumer.max.partition.fetch.bytes=1048576&topic.config.min.insync.replicas=2\
             &consumer.enable.auto.commit=false&auto.offset.reset=latest&linger.ms=7&keep=true\
             &socket.keepalive.enable=true",
        );
        assert_eq!(k.host_list(), "k1:9092,k2:9093");
        let SutOptions::Kafka(o) = &k.options else {
            panic!("kafka")
        };
        assert_eq!(o.replication_factor, 3);
        assert_eq!(o.acks, Acks::Leader);
        assert!(!k.reliable(), "producer.acks=1 is not reliable");
        assert_eq!(o.linger_ms, 7);
        assert!(!o.auto_commit);
        assert_eq!(o.offset_reset, OffsetReset::Latest);
        assert!(o.keep);
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(
            o.producer_properties,
            vec![pair("enable.idempotence", "true")]
        );
        assert_eq!(
            o.consumer_properties,
            vec![pair("max.partition.fetch.bytes", "1048576")]
        );
        assert_eq!(o.topic_config, vec![pair("min.insync.replicas", "2")]);
        assert_eq!(o.properties, vec![pair("socket.keepalive.enable", "true")]);
        let d = parse("kafka://h");
        let SutOptions::Kafka(o) = &d.options else {
            panic!("kafka")
        };
        assert!(o.auto_commit && !o.keep);
        assert_eq!(
            (o.replication_factor, o.offset_reset),
            (1, OffsetReset::Earliest)
        );
    }

    #[test]
    fn amqp_and_kafka_options() {
        let a = parse(
            "amqp://guest:guest@127.0.0.1:5673/%2f?confirms=true&ack=manual&prefetch=10&ack_batch=50&fanout=true",
        );
        let SutOptions::Amqp(o) = &a.options else {
            panic!("amqp")
        };
        assert_eq!(o.vhost, "/");
        assert_eq!((o.ack, o.ack_batch, o.prefetch), (AckMode::Manual, 5, 10));
        assert!(a.reliable() && !a.consumers_compete());
        assert_eq!(a.without_options(), "amqp://guest:guest@127.0.0.1:5673/%2f");
        let k = parse(
            "kafka://k1:9093,k2/bench?acks=1&partitions=3&queue.buffering.max.ms=5&key=random",
        );
        assert_eq!(k.host_list(), "k1:9093,k2:9092");
        let SutOptions::Kafka(o) = &k.options else {
            panic!("kafka")
        };
        assert_eq!(
            (o.acks, o.partitions, o.key),
            (Acks::Leader, Some(3), KeyDistribution::Random)
        );
        assert_eq!(
            o.properties,
            [("queue.buffering.max.ms".to_owned(), "5".to_owned())]
        );
        assert!(!k.reliable() && k.consumers_compete());
        assert!(parse("kafka://h").reliable());
    }

    #[test]
    fn amqp_queue_types_and_stream_offsets() {
        let amqp = |s: &str| match parse(s).options {
            SutOptions::Amqp(o) => o,
            _ => panic!("amqp"),
        };
        let c = amqp("amqp://h");
        assert_eq!((c.queue_type, c.durable), (QueueType::Classic, false));
        let q = amqp("amqp://h?queue_type=quorum");
        assert_eq!(
            (q.queue_type, q.durable, q.ack),
            (QueueType::Quorum, true, AckMode::Auto)
        );
        assert!(q.consumers_compete());
        let s = amqp("amqp://h?queue_type=stream&prefetch=100");
        assert_eq!(
            (s.queue_type, s.durable, s.ack, s.stream_offset, s.ack_batch),
            (
                QueueType::Stream,
                true,
                AckMode::Manual,
                StreamOffset::First,
                50
            )
        );
        assert!(!s.consumers_compete());
        assert!(!parse("amqp://h?queue_type=stream").consumers_compete());
        for (v, want) in [
            ("first", StreamOffset::First),
            ("last", StreamOffset::Last),
            ("42", StreamOffset::Offset(42)),
            ("10m", StreamOffset::Ago(Duration::from_secs(600))),
            (
                "2026-12-06T10:00:00Z",
                StreamOffset::Timestamp(std::time::UNIX_EPOCH + Duration::from_secs(1_796_551_200)),
            ),
        ] {
            let o = amqp(&format!("amqp://h?queue_type=stream&stream_offset={v}"));
            assert_eq!(o.stream_offset, want, "{v}");
        }
    }

    #[test]
    fn rabbitmq_stream_urls() {
        let u =
            parse("rabbitmq-stream://u:p@h/vh?stream=bench&offset=first&max_length=5MB&keep=true");
        let SutOptions::Stream(o) = &u.options else {
            panic!("stream")
        };
        assert_eq!(
            (
                o.vhost.as_str(),
                o.stream.as_str(),
                o.offset,
                o.max_length_bytes,
                o.keep
            ),
            ("vh", "bench", StreamOffset::First, Some(5_000_000), true)
        );
        assert_eq!((o.window, o.batch_size), (1000, 100));
        assert!(u.reliable() && !u.consumers_compete());
        let t = parse("rabbitmq-stream+tls://h?ca=/c.pem");
        assert_eq!((t.host().port, t.tls.is_some()), (5551, true));
        let SutOptions::Stream(o) = &parse("rabbitmq-stream://h").options else {
            panic!("stream")
        };
        assert_eq!((o.vhost.as_str(), o.offset), ("/", StreamOffset::First));
    }

    #[test]
    fn redis_urls() {
        let u = parse("redis://:pw@h/3?mode=streams&maxlen=5000&count=10&prefix=bench");
        let SutOptions::Redis(o) = &u.options else {
            panic!("redis")
        };
        assert_eq!(
            (o.db, o.mode, o.maxlen, o.count, o.prefix.as_str()),
            (3, RedisMode::Streams, Some(5000), 10, "bench")
        );
        assert!(u.reliable() && u.consumers_compete());
        assert!(u.capabilities().backlog && u.capabilities().competing_consumers);
        let p = parse("redis://h");
        assert_eq!(p.host().port, 6379);
        assert!(!p.reliable() && !p.consumers_compete() && !p.capabilities().backlog);
    }

    #[test]
    fn nats_urls() {
        let u = parse(
            "nats://u:pw@h?jetstream=true&consumer=push&batch=10&replicas=3&storage=memory&prefix=b",
        );
        let SutOptions::Nats(o) = &u.options else {
            panic!("nats")
        };
        assert_eq!(
            (
                o.consumer,
                o.batch,
                o.replicas,
                o.storage,
                o.prefix.as_str()
            ),
            (NatsConsumerKind::Push, 10, 3, NatsStorage::Memory, "b")
        );
        assert!(u.reliable() && u.consumers_compete() && u.capabilities().backlog);
        let core = parse("nats://h");
        assert_eq!((core.host().port, core.scheme()), (4222, Scheme::Nats));
        assert!(!core.reliable() && !core.consumers_compete() && !core.capabilities().backlog);
        let grouped = parse("nats://h?group=true");
        assert!(!grouped.reliable() && grouped.capabilities().competing_consumers);
        let tls = parse("nats+tls://h?ca=/c.pem&jetstream=true");
        assert_eq!((tls.host().port, tls.scheme()), (4222, Scheme::Nats));
        assert!(tls.tls.is_some() && core.tls.is_none());
    }

    #[test]
    fn stomp_urls() {
        let u = parse(
            "stomp://u:pw@h/vh?dest=exchange&exchange=ex&ack=client&prefetch=10&window=5&persistent=true&prefix=b",
        );
        let SutOptions::Stomp(o) = &u.options else {
            panic!("stomp")
        };
        assert_eq!(
            (o.vhost.as_str(), o.ack, o.prefetch, o.window, o.persistent),
            ("vh", StompAck::Client, 10, 5, true)
        );
        assert_eq!(o.destination("r1", 3), "/exchange/ex/b.r1.3");
        assert!(u.reliable() && !u.consumers_compete() && !u.capabilities().backlog);
        assert!(u.capabilities().several_subscriptions);
        let q = parse("stomp://h");
        let SutOptions::Stomp(o) = &q.options else {
            panic!("stomp")
        };
        assert_eq!((q.host().port, q.scheme()), (61613, Scheme::Stomp));
        assert_eq!(
            (o.vhost.as_str(), o.destination("r", 0)),
            ("/", "/queue/maestro.r.0".into())
        );
        assert!(q.reliable() && q.consumers_compete() && q.capabilities().backlog);
        assert!(!q.capabilities().several_subscriptions);
        let t = parse("stomp://h?dest=topic&ack=auto&receipts=false");
        assert!(!t.reliable() && !t.consumers_compete());
        let tls = parse("stomps://h?ca=/c.pem");
        assert_eq!((tls.host().port, tls.scheme()), (61614, Scheme::Stomp));
        assert!(tls.tls.is_some() && q.tls.is_none());
    }

    #[test]
    fn several_urls_are_the_nodes_of_one_sut() {
        let a = parse("mqtt://u:p@127.0.0.1:1883/t?qos=1");
        let b = parse("mqtt://u:p@127.0.0.2:1884/t?qos=1");
        let both = SutUrl::nodes(&[a.clone(), b]).unwrap();
        assert_eq!(both.hosts.len(), 2);
        assert_eq!(both.hosts[1].port, 1884);
        assert_eq!(
            both.redacted(),
            "mqtt://u:***@127.0.0.1:1883,127.0.0.2:1884/t?qos=1"
        );
        let other = parse("mqtt://u:p@127.0.0.2:1884/t?qos=0");
        let e = SutUrl::nodes(&[a, other]).unwrap_err().to_string();
        assert!(
            e.contains("more than host:port") && !e.contains(":p@"),
            "{e}"
        );
    }

    #[test]
    fn mqtt_takes_nodes_and_source_addresses() {
        let u = parse("mqtt://127.0.0.1:1883,127.0.0.1:1884/t?source_ips=127.0.0.2-127.0.0.4,::1");
        assert_eq!(u.hosts.len(), 2);
        let SutOptions::Mqtt(o) = &u.options else {
            panic!("not mqtt")
        };
        let ips: Vec<String> = o.source_ips.iter().map(|i| i.to_string()).collect();
        assert_eq!(ips, ["127.0.0.2", "127.0.0.3", "127.0.0.4", "::1"]);
    }

    #[test]
    fn mqtt_5_and_websockets() {
        let u = parse(
            "wss://u:p@h/ws?topic=fleet/a&version=5&qos=1&user_properties=site:lab,k:v\
             &message_expiry=1m&content_type=application/json&response_topic=r/1\
             &topic_alias=true&session_expiry=1h&shared=true&share_group=g",
        );
        assert!(u.tls.is_some());
        assert_eq!(u.host().port, 443);
        assert!(u.consumers_compete() && u.capabilities().competing_consumers);
        let SutOptions::Mqtt(o) = &u.options else {
            panic!("not mqtt")
        };
        assert_eq!(o.version, MqttVersion::V5);
        assert_eq!(o.transport, MqttTransport::WebSocket { path: "/ws".into() });
        assert_eq!(o.base_topic, "fleet/a");
        assert_eq!(o.subscription("fleet/a/r/0"), "$share/g/fleet/a/r/0");
        assert_eq!(
            o.v5,
            Mqtt5Options {
                user_properties: vec![("site".into(), "lab".into()), ("k".into(), "v".into())],
                message_expiry_s: Some(60),
                content_type: Some("application/json".into()),
                response_topic: Some("r/1".into()),
                topic_alias: true,
                session_expiry_s: Some(3600),
                receive_maximum: None,
            }
        );
        let ws = parse("ws://h");
        assert!(ws.tls.is_none() && !ws.consumers_compete());
        assert_eq!(ws.host().port, 80);
        let SutOptions::Mqtt(o) = &ws.options else {
            panic!("not mqtt")
        };
        assert_eq!(
            (o.base_topic.as_str(), &o.transport, o.version),
            (
                "maestro",
                &MqttTransport::WebSocket {
                    path: "/mqtt".into()
                },
                MqttVersion::V311
            )
        );
        assert_eq!(o.subscription("t"), "t");
        let shared = parse("mqtt://h/t?shared=true");
        let SutOptions::Mqtt(o) = &shared.options else {
            panic!("not mqtt")
        };
        assert_eq!(o.subscription("t/r/1"), "$share/maestro/t/r/1");
        assert!(Scheme::url_schemes().starts_with(&["mqtt", "mqtts", "ws", "wss"]));
    }

    #[test]
    fn bad_urls_name_what_is_wrong() {
        for (url, needle) in [
            ("mqtt://h?qos=3", "qos=\"3\" is not 0, 1 or 2"),
            ("mqtt://h?colour=blue", "unknown parameter \"colour\""),
            ("mqtt://h?retain=maybe", "retain=\"maybe\""),
            ("http://h", "scheme \"http\" is not supported"),
            ("h:1883", "no scheme"),
            ("mqtt://h/a/+", "wildcard"),
            ("mqtt://:pw@", "no host"),
            ("mqtt://u:secret@h:99999", "port \"99999\""),
            ("amqp://a,b", "amqp takes one host, not 2"),
            ("mqtt://h?source_ips=127.0.0.9-127.0.0.2", "source_ips"),
            ("mqtt://h?source_ips=10.0.0.0-10.1.0.0", "at most 4096"),
            ("mqtt://exa mple", "host \"exa mple\" is not a host name"),
            ("mqtt://[::zz]:1", "is not a host name or an IP address"),
            (
                "amqp://h?prefetch=0",
                "prefetch=\"0\" is not a number from 1 to 65535",
            ),
            ("kafka://h/a b", "topic prefix"),
            ("kafka://h?acks=2", "acks=\"2\""),
            ("kafka://h?replication_factor=0", "replication_factor=\"0\""),
            ("kafka://h?offset_reset=middle", "offset_reset=\"middle\""),
            (
                "kafka://h?consumer.enable.auto.commit=maybe",
                "consumer.enable.auto.commit",
            ),
            ("kafka://h?producer.=1", "names no property"),
            ("mqtt://h?version=6", "version=\"6\" is not 3.1.1"),
            (
                "mqtt://h?user_properties=a:1",
                "user_properties=\"a:1\" is an MQTT 5 property: add version=5",
            ),
            ("mqtt://h?version=5&message_expiry=1.5s", "whole seconds"),
            ("mqtt://h?version=5&user_properties=a", "key:value"),
            ("mqtt://h?topic=x", "is for ws:// and wss://"),
            ("ws://h?topic=a/%23", "wildcard"),
            (
                "mqtt://h?shared=true&share_group=a/b",
                "is not a group name",
            ),
            (
                "amqp://h?queue_type=lazy",
                "queue_type=\"lazy\" is not classic",
            ),
            (
                "amqp://h?queue_type=quorum&durable=false",
                "durable=\"false\" cannot go with queue_type=quorum",
            ),
            (
                "amqp://h?queue_type=stream&ack=auto",
                "ack=\"auto\" cannot go with queue_type=stream",
            ),
            ("amqp://h?queue_type=stream&fanout=true", "fanout=\"true\""),
            ("amqp://h?stream_offset=first", "needs queue_type=stream"),
            (
                "amqp://h?queue_type=stream&stream_offset=middle",
                "stream_offset=\"middle\" is not first",
            ),
            ("rabbitmq-stream://h?offset=middle", "offset=\"middle\""),
            (
                "rabbitmq-stream://h?max_length=2TB",
                "max_length=\"2TB\" is not a size",
            ),
            ("rabbitmq-stream://h?window=0", "window=\"0\""),
            ("rabbitmq-stream://h?stream=a%20b", "is not a stream name"),
            ("rabbitmq-stream://h?sni=x", "sni"),
            (
                "redis://h?mode=queue",
                "mode=\"queue\" is not pubsub or streams",
            ),
            ("redis://h?maxlen=10", "maxlen=\"10\" needs mode=streams"),
            ("redis://h/x", "db=\"x\" is not a database number"),
            ("redis://h?ca=/c.pem", "unknown parameter \"ca\""),
            ("nats://h?batch=10", "batch=\"10\" needs jetstream=true"),
            (
                "nats://h?jetstream=true&group=true",
                "group=\"true\" is for core NATS",
            ),
            ("nats://h?jetstream=true&consumer=both", "consumer=\"both\""),
            ("nats://h?prefix=a.b", "prefix=\"a.b\""),
            ("nats://h/sub", "path=\"sub\""),
            ("nats://h?queue=x", "unknown parameter \"queue\""),
            ("nats://h?ca=/c.pem", "nats+tls"),
            (
                "stomp://h?dest=fanout",
                "dest=\"fanout\" is not queue, topic",
            ),
            ("stomp://h?exchange=x", "exchange=\"x\" needs dest=exchange"),
            (
                "stomp://h?ack=auto&prefetch=5",
                "prefetch=\"5\" needs ack=client",
            ),
            (
                "stomp://h?receipts=false&window=5",
                "window=\"5\" needs receipts=true",
            ),
            ("stomp://h?ack=none", "ack=\"none\""),
            ("stomp://h?prefix=a/b", "prefix=\"a/b\""),
            ("stomp://h?queue=x", "unknown parameter \"queue\""),
            ("stomp://h?ca=/c.pem", "stomps"),
        ] {
            let e = SutUrl::parse(url).map(|_| ()).unwrap_err().to_string();
            assert!(e.contains(needle), "{url}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn tls_options() {
        let m = parse("mqtts://h?ca=/x/ca.pem&sni=broker.lab&qos=1");
        assert_eq!(m.host().port, 8883);
        assert_eq!(m.scheme(), Scheme::Mqtt);
        let t = m.tls.clone().unwrap_or_default();
        assert_eq!(
            (t.ca.as_deref(), t.sni.as_deref(), t.insecure),
            (Some("/x/ca.pem"), Some("broker.lab"), false)
        );
        assert!(m.reliable());
        assert!(parse("mqtt://h").tls.is_none());
        let a = parse("amqps://h?insecure=true&client_ca=ca.pem&client_ca_key=ca.key");
        assert_eq!(a.host().port, 5671);
        assert!(a.tls.as_ref().is_some_and(|t| t.insecure && t.per_client()));
        let k = parse(
            "kafka://h?security.protocol=SSL&ssl.ca.location=ca.pem&client_ca=c&client_ca_key=k&key=random",
        );
        assert!(k.tls.as_ref().is_some_and(|t| t.per_client()));
        let SutOptions::Kafka(o) = &k.options else {
            panic!("kafka")
        };
        assert_eq!(o.key, KeyDistribution::Random);
        assert_eq!(o.properties.len(), 2);
        assert!(parse("kafka://h?security.protocol=sasl_ssl").tls.is_some());
        assert!(parse("kafka://h").tls.is_none());
        for (url, needle) in [
            (
                "mqtt://h?ca=x",
                "ca= needs TLS: use mqtts:// instead of mqtt://",
            ),
            ("amqp://h?insecure=true", "use amqps://"),
            (
                "rabbitmq-stream://h?ca=x",
                "use rabbitmq-stream+tls:// instead of rabbitmq-stream://",
            ),
            (
                "kafka://h?client_ca=c&client_ca_key=k",
                "security.protocol=ssl",
            ),
            ("mqtts://h?cert=c", "cert= and key= go together"),
            (
                "mqtts://h?client_ca=c",
                "client_ca= and client_ca_key= go together",
            ),
            (
                "mqtts://h?cert=c&key=k&client_ca=a&client_ca_key=b",
                "exclude each other",
            ),
            ("mqtts://h?insecure=true&ca=x", "would be ignored"),
            ("mqtts://h?insecure=perhaps", "insecure=\"perhaps\""),
            ("mqtts://h?sni=a%20b", "sni=\"a b\" is not a host name"),
            ("mqtts://h?ca=", "ca=\"\" is not a file name"),
            ("kafkas://h", "scheme \"kafkas\" is not supported"),
        ] {
            let e = SutUrl::parse(url).map(|_| ()).unwrap_err().to_string();
            assert!(e.contains(needle), "{url}: {e}");
        }
    }

    #[test]
    fn the_wire_form_is_the_url_string() {
        let u = parse("mqtt://u:pw@h:1/t?qos=2");
        let json = serde_json::to_string(&u).unwrap_or_default();
        assert_eq!(json, "\"mqtt://u:pw@h:1/t?qos=2\"");
        let back: SutUrl = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, u);
        let bad = serde_json::from_str::<SutUrl>("\"mqtt://h?qos=9\"").map(|_| ());
        assert!(bad.unwrap_err().to_string().contains("qos"));
    }
}
