//! OpenMessaging Benchmark (OMB) files, run as they are: a workload YAML and a driver YAML
//! (Kafka, RabbitMQ or MQTT 5) become one test plan, the same [`LoadedPlan`] a TOML plan is, so
//! they run, check, report and compare like any plan. The plan made from them is kept in
//! the results folder as `plan.toml`.
//!
//! OMB's semantics:
//! - `producerRate` > 0: a warm-up of `warmupDurationMinutes` at that rate (excluded from
//!   verdicts), then a fixed phase of `testDurationMinutes`.
//! - `producerRate` 0 ("as fast as possible while keeping backlog under control"): a
//!   max-rate search from 10,000 msg/s whose probes pass while consumers keep up (at most
//!   [`ACCEPTABLE_BACKLOG`] messages waiting at the end of any second, producers at 95 % of
//!   the offer, nothing lost), then `testDurationMinutes` at the highest passing rate.
//! - `consumerBacklogSizeGB` > 0: the fixed phase is a backlog test (consumers held until
//!   that many GiB wait, then resumed while producers go on).
//! - `keyDistributor`: `NO_KEY`, `KEY_ROUND_ROBIN`, `RANDOM_NANO`.
//!
//! Every key of either file is known or an error that names it (file, line, key). Driver
//! properties are Java client properties: those librdkafka shares are passed on (it checks
//! them), the Java-only ones (serializers, `default.api.timeout.ms`, ...) are left out,
//! with a warning that names them.

use crate::plan::{
    Conditions, HumanDuration, LoadedPlan, Metadata, Plan, PlanError, RawPhase, SizeValue,
    Sut as PlanSut, Workload as PlanWorkload,
};
use maestro_report::PhaseKind;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// At most this many messages may wait at the end of a second for a max-rate probe to
/// pass (OMB's acceptable backlog).
pub const ACCEPTABLE_BACKLOG: u64 = 10_000;
/// Where OMB's search for the highest sustainable rate starts.
pub const START_RATE: u64 = 10_000;
/// How long each probe of that search runs.
const PROBE_SECONDS: u64 = 10;

/// Java client properties librdkafka does not have; left out, with a warning.
const JAVA_ONLY: &[&str] = &[
    "key.serializer",
    "value.serializer",
    "key.deserializer",
    "value.deserializer",
    "default.api.timeout.ms",
    "buffer.memory",
    "max.block.ms",
    "max.poll.records",
    "interceptor.classes",
    "partitioner.class",
    "metric.reporters",
];

/// An OMB workload file (`workloads/*.yaml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Workload {
    pub name: String,
    pub topics: u32,
    #[serde(default)]
    pub partitions_per_topic: Option<u32>,
    #[serde(default)]
    pub key_distributor: Option<KeyDistributor>,
    pub message_size: u32,
    #[serde(default)]
    pub use_randomized_payloads: bool,
    #[serde(default)]
    pub random_bytes_ratio: Option<f64>,
    #[serde(default)]
    pub randomized_payload_pool_size: Option<u32>,
    #[serde(default)]
    pub payload_file: Option<String>,
    pub subscriptions_per_topic: u32,
    pub producers_per_topic: u32,
    pub consumer_per_subscription: u32,
    pub producer_rate: f64,
    #[serde(default, rename = "consumerBacklogSizeGB")]
    pub consumer_backlog_size_gb: Option<f64>,
    #[serde(default)]
    pub backlog_drain_ratio: Option<f64>,
    pub test_duration_minutes: f64,
    #[serde(default)]
    pub warmup_duration_minutes: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyDistributor {
    NoKey,
    KeyRoundRobin,
    RandomNano,
}

/// An OMB driver file (`driver-kafka/*.yaml`, `driver-rabbitmq/*.yaml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Driver {
    pub name: String,
    pub driver_class: String,
    // Kafka.
    #[serde(default)]
    pub replication_factor: Option<u16>,
    /// OMB deletes existing topics first; a maestro run's topics are its own.
    #[serde(default)]
    pub reset: Option<bool>,
    #[serde(default)]
    pub topic_config: Option<String>,
    #[serde(default)]
    pub common_config: Option<String>,
    #[serde(default)]
    pub producer_config: Option<String>,
    #[serde(default)]
    pub consumer_config: Option<String>,
    // RabbitMQ.
    #[serde(default)]
    pub amqp_uris: Option<Vec<String>>,
    #[serde(default)]
    pub message_persistence: Option<bool>,
    #[serde(default)]
    pub exchange_type: Option<String>,
    #[serde(default)]
    pub queue_type: Option<String>,
    /// OMB's client creation pacing; maestro connects its clients itself.
    #[serde(default)]
    pub producer_creation_delay: Option<u64>,
    #[serde(default)]
    pub producer_creation_batch_size: Option<u32>,
    #[serde(default)]
    pub consumer_creation_delay: Option<u64>,
    #[serde(default)]
    pub consumer_creation_batch_size: Option<u32>,
    // Redis.
    #[serde(default)]
    pub redis_host: Option<String>,
    #[serde(default)]
    pub redis_port: Option<u16>,
    #[serde(default)]
    pub redis_user: Option<String>,
    #[serde(default)]
    pub redis_pass: Option<String>,
    /// NATS: `host:port` or `nats://host:port` (its `replicationFactor` is the stream's
    /// replicas).
    #[serde(default)]
    pub nats_host_url: Option<String>,
    /// Jedis's connection pool; maestro's clients have a connection each.
    #[serde(default)]
    pub jedis_pool_max_total: Option<u32>,
    #[serde(default)]
    pub jedis_pool_max_idle: Option<u32>,
    // MQTT 5.
    #[serde(default)]
    pub client: Option<MqttClient>,
    #[serde(default)]
    pub consumer: Option<MqttConsumer>,
}

/// `driver-mqtt5`'s `client:` section; a key not given is OMB's default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct MqttClient {
    pub server_uri: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub qos: u8,
    pub topic_prefix: String,
}

impl Default for MqttClient {
    fn default() -> Self {
        MqttClient {
            server_uri: "tcp://localhost:1883".into(),
            username: None,
            password: None,
            qos: 1,
            topic_prefix: "benchmark".into(),
        }
    }
}

/// `driver-mqtt5`'s `consumer:` section; a key not given is OMB's default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct MqttConsumer {
    pub clean_session: bool,
    pub session_expiry_interval_seconds: Option<u32>,
    pub receive_maximum: Option<u16>,
}

impl Default for MqttConsumer {
    fn default() -> Self {
        MqttConsumer {
            clean_session: true,
            session_expiry_interval_seconds: None,
            receive_maximum: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Kafka,
    RabbitMq,
    Mqtt5,
    Redis,
    Nats,
}

/// The plan made from an OMB workload and driver, with warnings about what was left out.
#[derive(Debug)]
pub struct Loaded {
    pub plan: LoadedPlan,
    pub warnings: Vec<String>,
}

fn problem(file: &Path, line: usize, field: &str, reason: impl Into<String>) -> PlanError {
    PlanError {
        file: file.display().to_string(),
        line,
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Reads one YAML file into `T`; an error names the file, the line and the key.
fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, PlanError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| problem(path, 0, "(file)", e.to_string()))?;
    let de = serde_yaml_ng::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.location().map_or(0, |l| l.line());
        problem(
            path,
            line,
            if field == "." { "(file)" } else { &field },
            inner.to_string(),
        )
    })
}

/// Java properties (`key=value` lines) in order.
fn properties(
    file: &Path,
    field: &str,
    text: Option<&str>,
) -> Result<Vec<(String, String)>, PlanError> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    java_properties::PropertiesIter::new(text.as_bytes())
        .read_into(|k, v| out.push((k, v)))
        .map_err(|e| problem(file, 0, field, format!("not Java properties: {e}")))?;
    Ok(out)
}

/// Where the plan's load goes: the SUT URL, and how many subscriptions a topic has and
/// how many consumers share each. OMB's subscriptions are Kafka consumer groups, RabbitMQ
/// queues, NATS durable consumers, Redis consumer groups and MQTT shared subscriptions,
/// each getting every message and shared by its consumers.
struct Target {
    url: String,
    subscriptions_per_topic: u32,
    consumers_per_subscription: u32,
}

/// The checked workload's durations: (test, warm-up), seconds.
fn durations(w: &Workload, workload_path: &Path) -> Result<(u64, u64), PlanError> {
    let wfield = |field: &str, reason: String| problem(workload_path, 0, field, reason);
    for (field, value) in [
        ("topics", w.topics),
        ("producersPerTopic", w.producers_per_topic),
        ("subscriptionsPerTopic", w.subscriptions_per_topic),
        ("consumerPerSubscription", w.consumer_per_subscription),
    ] {
        if value == 0 {
            return Err(wfield(field, "must be at least 1".into()));
        }
    }
    if w.use_randomized_payloads {
        return Err(wfield(
            "useRandomizedPayloads",
            "is not supported: maestro's messages are a payloadFile or letters, with its header"
                .into(),
        ));
    }
    if !(w.producer_rate.is_finite() && w.producer_rate >= 0.0) {
        return Err(wfield(
            "producerRate",
            format!("{} must be 0 or more", w.producer_rate),
        ));
    }
    let minutes = |field: &str, m: f64| -> Result<u64, PlanError> {
        if m.is_finite() && m >= 0.0 {
            Ok((m * 60.0).round() as u64)
        } else {
            Err(wfield(field, format!("{m} must be minutes, 0 or more")))
        }
    };
    let test_s = minutes("testDurationMinutes", w.test_duration_minutes)?;
    if test_s == 0 {
        return Err(wfield(
            "testDurationMinutes",
            "must be longer than 0".into(),
        ));
    }
    let warmup_s = minutes(
        "warmupDurationMinutes",
        w.warmup_duration_minutes.unwrap_or(1.0),
    )?;
    Ok((test_s, warmup_s))
}

/// A Kafka driver's bootstrap servers and client properties as a `kafka://` URL.
fn kafka_target(
    w: &Workload,
    d: &Driver,
    driver_path: &Path,
    warnings: &mut Vec<String>,
) -> Result<Target, PlanError> {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    let common = properties(driver_path, "commonConfig", d.common_config.as_deref())?;
    let mut bootstrap = None;
    let mut dropped = Vec::new();
    let mut add = |prefix: &str, (k, v): (String, String), dropped: &mut Vec<String>| {
        if JAVA_ONLY.contains(&k.as_str()) {
            dropped.push(k);
        } else {
            query.append_pair(&format!("{prefix}{k}"), &v);
        }
    };
    for (k, v) in common {
        if k == "bootstrap.servers" {
            bootstrap = Some(v);
        } else {
            add("", (k, v), &mut dropped);
        }
    }
    for kv in properties(driver_path, "producerConfig", d.producer_config.as_deref())? {
        add("producer.", kv, &mut dropped);
    }
    for kv in properties(driver_path, "consumerConfig", d.consumer_config.as_deref())? {
        add("consumer.", kv, &mut dropped);
    }
    for kv in properties(driver_path, "topicConfig", d.topic_config.as_deref())? {
        add("topic.config.", kv, &mut dropped);
    }
    if !dropped.is_empty() {
        warnings.push(format!(
            "Java client properties librdkafka does not have, left out: {}",
            dropped.join(", ")
        ));
    }
    if let Some(r) = d.replication_factor {
        query.append_pair("replication_factor", &r.to_string());
    }
    let bootstrap =
        bootstrap.ok_or_else(|| problem(driver_path, 0, "commonConfig", "no bootstrap.servers"))?;
    let hosts: Vec<&str> = bootstrap
        .split(',')
        .map(|h| {
            h.trim()
                .trim_start_matches("PLAINTEXT://")
                .trim_start_matches("SSL://")
        })
        .filter(|h| !h.is_empty())
        .collect();
    if hosts.is_empty() {
        return Err(problem(
            driver_path,
            0,
            "commonConfig",
            "bootstrap.servers is empty",
        ));
    }
    Ok(Target {
        url: with_query(format!("kafka://{}/omb", hosts.join(",")), query.finish()),
        subscriptions_per_topic: w.subscriptions_per_topic,
        consumers_per_subscription: w.consumer_per_subscription,
    })
}

/// A Redis driver's host, port and credentials as a `redis://` URL in Streams mode, as
/// OMB's Redis driver works: XADD, a consumer group per subscription (its consumers
/// compete), XREADGROUP and XACK.
fn redis_target(w: &Workload, d: &Driver) -> Result<Target, PlanError> {
    let host = d.redis_host.as_deref().unwrap_or("localhost");
    let port = d.redis_port.unwrap_or(6379);
    let enc = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    let credentials = match (&d.redis_user, &d.redis_pass) {
        (Some(u), Some(p)) => format!("{}:{}@", enc(u), enc(p)),
        (None, Some(p)) => format!(":{}@", enc(p)),
        _ => String::new(),
    };
    Ok(Target {
        url: format!("redis://{credentials}{host}:{port}?mode=streams"),
        subscriptions_per_topic: w.subscriptions_per_topic,
        consumers_per_subscription: w.consumer_per_subscription,
    })
}

/// A RabbitMQ driver's URI, exchange and persistence as an `amqp://` URL.
fn rabbitmq_target(
    w: &Workload,
    d: &Driver,
    paths: (&Path, &Path),
    warnings: &mut Vec<String>,
) -> Result<Target, PlanError> {
    let (workload_path, driver_path) = paths;
    let uris = d.amqp_uris.clone().unwrap_or_default();
    let [uri] = uris.as_slice() else {
        return Err(problem(
            driver_path,
            0,
            "amqpUris",
            format!(
                "give one URI (maestro's AMQP clients connect to one node), not {}",
                uris.len()
            ),
        ));
    };
    // OMB's RabbitMQ driver declares its queues with `x-queue-type` (CLASSIC, QUORUM or
    // STREAM; upstream's file says QUORUM).
    let queue_type = match d.queue_type.as_deref().map(str::to_ascii_lowercase) {
        None => "classic".to_owned(),
        Some(q) if ["classic", "quorum", "stream"].contains(&q.as_str()) => q,
        Some(q) => {
            return Err(problem(
                driver_path,
                0,
                "queueType",
                format!("{q:?} is not CLASSIC, QUORUM or STREAM"),
            ));
        }
    };
    let exchange_type = d
        .exchange_type
        .as_deref()
        .unwrap_or("FANOUT")
        .to_ascii_lowercase();
    if !["fanout", "direct", "topic", "headers"].contains(&exchange_type.as_str()) {
        return Err(problem(
            driver_path,
            0,
            "exchangeType",
            format!("{exchange_type:?} is not FANOUT, DIRECT, TOPIC or HEADERS"),
        ));
    }
    // OMB's producers wait for publisher confirms; its queues are one per subscription,
    // consumers of a subscription sharing it. OMB has an exchange per topic; maestro has
    // one exchange with a routing key per topic, so with several topics it routes
    // directly (each topic's messages reach its own subscriptions, as with OMB).
    let exchange_type = if w.topics > 1 && exchange_type != "direct" {
        warnings.push(format!(
            "exchangeType {exchange_type}: with {} topics, one direct exchange routes each topic to its own queues",
            w.topics
        ));
        "direct".to_owned()
    } else {
        exchange_type
    };
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("exchange", "omb");
    query.append_pair("exchange_type", &exchange_type);
    query.append_pair("confirms", "true");
    let persistent = d.message_persistence.unwrap_or(false);
    query.append_pair("persistent", &persistent.to_string());
    if queue_type == "classic" {
        query.append_pair("durable", &persistent.to_string());
    } else {
        // Quorum queues and streams are durable whatever the messages are.
        query.append_pair("queue_type", &queue_type);
        query.append_pair("durable", "true");
    }
    let (subscriptions, per_subscription) = match (
        w.subscriptions_per_topic,
        w.consumer_per_subscription,
    ) {
        // Every reader of a stream reads all of it: a subscription each, never shared.
        (s, 1) if queue_type == "stream" => (1, s),
        (_, c) if queue_type == "stream" => {
            return Err(problem(
                workload_path,
                0,
                "consumerPerSubscription",
                format!(
                    "{c} consumers of one subscription: on a stream every consumer reads every message, so they cannot share one"
                ),
            ));
        }
        (1, c) => (1, c),
        (s, 1) => {
            query.append_pair("fanout", "true");
            (1, s)
        }
        // A queue per subscription, bound to the exchange, shared by its consumers.
        (s, c) => (s, c),
    };
    let base = uri.trim_end_matches('/');
    Ok(Target {
        url: with_query(
            base.split('?').next().unwrap_or(base).to_owned(),
            query.finish(),
        ),
        subscriptions_per_topic: subscriptions,
        consumers_per_subscription: per_subscription,
    })
}

/// An MQTT 5 driver's server, credentials, QoS and consumer session as an `mqtt://` URL
/// with `version=5`. OMB's consumers of a subscription share it (`$share/<subscription>/`):
/// several consumers of one subscription are a maestro shared subscription
/// (`shared=true`, `$share/omb-<n>/` for a topic's n-th); several subscriptions of one
/// consumer each are subscribers of their own.
fn mqtt5_target(w: &Workload, d: &Driver, driver_path: &Path) -> Result<Target, PlanError> {
    let client = d.client.clone().unwrap_or_default();
    let field = |f: &str, reason: String| problem(driver_path, 0, f, reason);
    let (scheme, rest) = client
        .server_uri
        .split_once("://")
        .unwrap_or(("tcp", client.server_uri.as_str()));
    if !scheme.eq_ignore_ascii_case("tcp") && !scheme.eq_ignore_ascii_case("mqtt") {
        return Err(field(
            "client.serverUri",
            format!(
                "{:?}: OMB's MQTT 5 driver connects over TCP (tcp://host:port)",
                client.server_uri
            ),
        ));
    }
    let host_port = rest.trim_end_matches('/');
    if host_port.is_empty() || host_port.contains(['/', '?', '@']) {
        return Err(field(
            "client.serverUri",
            format!("{:?} is not tcp://host:port", client.server_uri),
        ));
    }
    if client.qos > 2 {
        return Err(field(
            "client.qos",
            format!("{} is not 0, 1 or 2", client.qos),
        ));
    }
    let prefix = client.topic_prefix.trim_matches('/');
    if prefix.is_empty() || prefix.contains(['+', '#']) {
        return Err(field(
            "client.topicPrefix",
            format!("{:?} is not a topic prefix", client.topic_prefix),
        ));
    }
    let credentials = match (client.username.as_deref(), client.password.as_deref()) {
        (Some(u), p) if !u.is_empty() => {
            let enc = |s: &str| {
                percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            };
            format!("{}:{}@", enc(u), enc(p.unwrap_or_default()))
        }
        _ => String::new(),
    };
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("version", "5");
    query.append_pair("qos", &client.qos.to_string());
    let (subscriptions, per_subscription) =
        match (w.subscriptions_per_topic, w.consumer_per_subscription) {
            (1, c) => {
                query.append_pair("shared", "true");
                query.append_pair("share_group", "omb");
                (1, c)
            }
            (s, 1) => (s, 1),
            // A shared subscription each (`$share/omb-<n>/...`), its consumers competing.
            (s, c) => {
                query.append_pair("shared", "true");
                query.append_pair("share_group", "omb");
                (s, c)
            }
        };
    if let Some(c) = &d.consumer {
        query.append_pair("clean_session", &c.clean_session.to_string());
        // OMB asks for a session expiry only without a clean session.
        if !c.clean_session
            && let Some(s) = c.session_expiry_interval_seconds
        {
            query.append_pair("session_expiry", &format!("{s}s"));
        }
        if let Some(r) = c.receive_maximum {
            if r == 0 {
                return Err(field("consumer.receiveMaximum", "must be 1 or more".into()));
            }
            query.append_pair("receive_maximum", &r.to_string());
        }
    }
    let prefix = prefix
        .split('/')
        .map(|p| {
            percent_encoding::utf8_percent_encode(p, percent_encoding::NON_ALPHANUMERIC).to_string()
        })
        .collect::<Vec<_>>()
        .join("/");
    Ok(Target {
        url: with_query(
            format!("mqtt://{credentials}{host_port}/{prefix}"),
            query.finish(),
        ),
        subscriptions_per_topic: subscriptions,
        consumers_per_subscription: per_subscription,
    })
}

fn with_query(base: String, query: String) -> String {
    if query.is_empty() {
        base
    } else {
        format!("{base}?{query}")
    }
}

/// The workload's phases: a warm-up and a fixed rate, or OMB's search for the highest
/// rate consumers keep up with, then a fixed phase at it.
fn phases(w: &Workload, (test_s, warmup_s): (u64, u64)) -> Vec<RawPhase> {
    let secs = |n: u64| Some(unspanned(HumanDuration(Duration::from_secs(n))));
    let mut phases = Vec::new();
    if w.producer_rate > 0.0 {
        if warmup_s > 0 {
            let mut warmup = RawPhase::of(PhaseKind::Warmup);
            warmup.rate = Some(unspanned(w.producer_rate));
            warmup.duration = secs(warmup_s);
            phases.push(warmup);
        }
        let mut fixed = RawPhase::of(PhaseKind::Fixed);
        fixed.rate = Some(unspanned(w.producer_rate));
        fixed.duration = secs(test_s);
        phases.push(fixed);
    } else {
        let mut search = RawPhase::of(PhaseKind::MaxRate);
        search.start_rate = Some(unspanned(START_RATE as f64));
        search.step_duration = secs(PROBE_SECONDS);
        search.ceiling = Some(unspanned(maestro_protocol::MAX_RATE));
        search.precision = Some(unspanned(0.1));
        search.conditions = Some(unspanned(Conditions {
            max_backlog: Some(ACCEPTABLE_BACKLOG),
            min_achieved_fraction: Some(0.95),
            max_lost: Some(0),
            ..Conditions::default()
        }));
        phases.push(search);
        let mut fixed = RawPhase::of(PhaseKind::Fixed);
        fixed.at_knee = Some(unspanned(true));
        fixed.duration = secs(test_s);
        phases.push(fixed);
    }
    phases
}

/// The workload section: topics, clients, message size, keys, payload, backlog.
/// A NATS driver's server and replication factor as a `nats://` URL with JetStream, as
/// OMB's NATS driver works: a file stream with `replicationFactor` replicas, and per
/// subscription a durable push consumer whose deliver group its consumers share, each
/// message acknowledged. maestro makes one stream per run (every topic a subject of it).
fn nats_target(w: &Workload, d: &Driver, driver_path: &Path) -> Result<Target, PlanError> {
    let given = d.nats_host_url.as_deref().unwrap_or("localhost:4222");
    let host_port = given
        .strip_prefix("nats://")
        .unwrap_or(given)
        .trim_end_matches('/');
    if host_port.is_empty() || host_port.contains(['/', '?', '@', ',']) || host_port.contains("://")
    {
        return Err(problem(
            driver_path,
            0,
            "natsHostUrl",
            format!("{given:?} is not host:port or nats://host:port"),
        ));
    }
    let replicas = d.replication_factor.unwrap_or(1);
    if !(1..=5).contains(&replicas) {
        return Err(problem(
            driver_path,
            0,
            "replicationFactor",
            format!("{replicas}: a JetStream stream has 1 to 5 replicas"),
        ));
    }
    Ok(Target {
        url: format!("nats://{host_port}?jetstream=true&consumer=push&replicas={replicas}"),
        subscriptions_per_topic: w.subscriptions_per_topic,
        consumers_per_subscription: w.consumer_per_subscription,
    })
}

fn workload_table(
    w: &Workload,
    kind: Kind,
    target: &Target,
    workload_path: &Path,
    warnings: &mut Vec<String>,
) -> PlanWorkload {
    let mut key_distribution = None;
    if kind == Kind::Kafka {
        key_distribution = Some(
            match w.key_distributor.unwrap_or(KeyDistributor::NoKey) {
                KeyDistributor::NoKey => "none",
                KeyDistributor::KeyRoundRobin => "round_robin",
                KeyDistributor::RandomNano => "random",
            }
            .to_owned(),
        );
    } else if w
        .key_distributor
        .is_some_and(|k| k != KeyDistributor::NoKey)
    {
        let protocol = match kind {
            Kind::Mqtt5 => "MQTT",
            Kind::Redis => "Redis",
            Kind::Nats => "NATS",
            Kind::Kafka | Kind::RabbitMq => "RabbitMQ",
        };
        warnings.push(format!(
            "keyDistributor: {protocol} messages have no keys; left out"
        ));
    }
    PlanWorkload {
        topics: w.topics,
        partitions_per_topic: w
            .partitions_per_topic
            .filter(|p| *p > 0 && kind == Kind::Kafka),
        producers_per_topic: w.producers_per_topic,
        subscriptions_per_topic: target.subscriptions_per_topic,
        consumers_per_subscription: target.consumers_per_subscription,
        message_size: SizeValue::Bytes(w.message_size),
        payload_file: w
            .payload_file
            .as_ref()
            .map(|file| payload_path(workload_path, file)),
        key_distribution,
        warmup: None,
        consumer_backlog_size_gb: w.consumer_backlog_size_gb.filter(|g| *g > 0.0),
    }
}

/// A value made here, not read from a file (it has no position).
fn unspanned<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

/// Loads an OMB workload and driver as a plan.
pub fn load(workload_path: &Path, driver_path: &Path) -> Result<Loaded, PlanError> {
    let w: Workload = read_yaml(workload_path)?;
    let d: Driver = read_yaml(driver_path)?;
    let mut warnings = Vec::new();
    let kind = if d.driver_class.ends_with(".KafkaBenchmarkDriver") {
        Kind::Kafka
    } else if d.driver_class.ends_with(".RabbitMqBenchmarkDriver") {
        Kind::RabbitMq
    } else if d.driver_class == "io.openmessaging.benchmark.driver.mqtt5.MqttBenchmarkDriver" {
        Kind::Mqtt5
    } else if d.driver_class == "io.openmessaging.benchmark.driver.redis.RedisBenchmarkDriver" {
        Kind::Redis
    } else if d.driver_class == "io.openmessaging.benchmark.driver.nats.NatsBenchmarkDriver" {
        Kind::Nats
    } else {
        return Err(problem(
            driver_path,
            0,
            "driverClass",
            format!(
                "{:?} is not a driver maestro runs (io.openmessaging.benchmark.driver.kafka.KafkaBenchmarkDriver, io.openmessaging.benchmark.driver.rabbitmq.RabbitMqBenchmarkDriver, io.openmessaging.benchmark.driver.mqtt5.MqttBenchmarkDriver, io.openmessaging.benchmark.driver.redis.RedisBenchmarkDriver or io.openmessaging.benchmark.driver.nats.NatsBenchmarkDriver)",
                d.driver_class
            ),
        ));
    };
    let durations = durations(&w, workload_path)?;
    if let Some(ratio) = w.backlog_drain_ratio
        && ratio != 1.0
    {
        warnings.push(format!(
            "backlogDrainRatio {ratio}: maestro reports the time to drain the whole backlog (to what is in flight)"
        ));
    }
    let paths = (workload_path, driver_path);
    let target = match kind {
        Kind::Kafka => kafka_target(&w, &d, driver_path, &mut warnings)?,
        Kind::RabbitMq => rabbitmq_target(&w, &d, paths, &mut warnings)?,
        Kind::Mqtt5 => mqtt5_target(&w, &d, driver_path)?,
        Kind::Redis => redis_target(&w, &d)?,
        Kind::Nats => nats_target(&w, &d, driver_path)?,
    };
    let plan = Plan {
        plan: Metadata {
            name: w.name.clone(),
            description: format!(
                "OpenMessaging Benchmark workload {} with driver {}",
                workload_path.display(),
                driver_path.display()
            ),
            tags: vec![
                "omb".into(),
                match kind {
                    Kind::Kafka => "kafka",
                    Kind::RabbitMq => "rabbitmq",
                    Kind::Mqtt5 => "mqtt5",
                    Kind::Redis => "redis",
                    Kind::Nats => "nats",
                }
                .into(),
            ],
            sut_name: d.name.clone(),
            sut_version: String::new(),
            cooldown: None,
            workers: 1,
            roles: None,
            producer_group: None,
            consumer_group: None,
        },
        sut: PlanSut {
            url: unspanned(target.url.clone()),
            consumer_url: None,
        },
        workload: unspanned(workload_table(
            &w,
            kind,
            &target,
            workload_path,
            &mut warnings,
        )),
        conditions: None,
        compare: None,
        phases: phases(&w, durations),
        fleet: None,
        faults: Vec::new(),
    };
    // The plan as TOML, kept with the results and read like any plan.
    let text = format!(
        "# Made by maestro from the OpenMessaging Benchmark files\n#   workload: {}\n#   driver:   {}\n\n{}",
        workload_path.display(),
        driver_path.display(),
        toml::to_string(&plan).map_err(|e| problem(workload_path, 0, "(plan)", e.to_string()))?
    );
    let plan = LoadedPlan::parse(&format!("{} (as a plan)", workload_path.display()), text)?;
    Ok(Loaded { plan, warnings })
}

/// OMB resolves a payload file from where it runs; maestro also tries beside the workload.
fn payload_path(workload: &Path, file: &str) -> PathBuf {
    let given = PathBuf::from(file);
    if given.is_absolute() || given.exists() {
        return std::path::absolute(&given).unwrap_or(given);
    }
    let beside = workload.parent().unwrap_or(Path::new(".")).join(file);
    std::path::absolute(&beside).unwrap_or(beside)
}

/// True when `path` looks like an OMB YAML file rather than a TOML plan.
pub fn is_yaml(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KAFKA: &str = "name: Kafka\ndriverClass: io.openmessaging.benchmark.driver.kafka.KafkaBenchmarkDriver\n\
        replicationFactor: 3\ncommonConfig: |\n  bootstrap.servers=k1:9092,k2:9092\n\
        producerConfig: |\n  acks=1\n";
    const RABBIT: &str = "name: RabbitMQ\ndriverClass: io.openmessaging.benchmark.driver.rabbitmq.RabbitMqBenchmarkDriver\n\
        amqpUris:\n  - amqp://u:p@r1:5672\nmessagePersistence: true\n";

    /// `driver-mqtt5/mqtt5.yaml` as upstream has it.
    const MQTT5: &str = "name: MQTT\ndriverClass: io.openmessaging.benchmark.driver.mqtt5.MqttBenchmarkDriver\n\n\
        client:\n  serverUri: tcp://localhost:1883\n  username:\n  password:\n  topicPrefix: benchmark\n\n\
        consumer:\n  cleanSession: true\n  sessionExpiryIntervalSeconds: 259200\n  receiveMaximum: 256\n";

    #[test]
    fn the_upstream_mqtt5_driver_becomes_shared_subscriptions_over_mqtt_5() {
        // Consumers of one subscription compete in a shared subscription.
        let l = load_texts("mqtt5", &workload(1, 3, 1000), MQTT5).unwrap();
        let sut = l.plan.sut(None).unwrap();
        assert_eq!(
            sut.redacted(),
            "mqtt://localhost:1883/benchmark?version=5&qos=1&shared=true&share_group=omb&clean_session=true&receive_maximum=256"
        );
        assert!(sut.consumers_compete());
        let w = l.plan.plan.workload.get_ref();
        assert_eq!(
            (w.subscriptions_per_topic, w.consumers_per_subscription),
            (1, 3)
        );
        // Subscriptions of one consumer each get every message.
        let l = load_texts("mqtt5-fan", &workload(2, 1, 1000), MQTT5).unwrap();
        assert!(!l.plan.sut(None).unwrap().consumers_compete());
        let w = l.plan.plan.workload.get_ref();
        assert_eq!(
            (w.subscriptions_per_topic, w.consumers_per_subscription),
            (2, 1)
        );
        // Several subscriptions of competing consumers: a shared subscription each.
        let l = load_texts("mqtt5-both", &workload(2, 2, 1000), MQTT5).unwrap();
        let sut = l.plan.sut(None).unwrap();
        assert!(sut.consumers_compete());
        let spec = l.plan.spec(&sut, 1000.0, None, Some(1));
        assert_eq!((spec.consumers, spec.subscriptions), (8, Some(2)));
        spec.validate().unwrap();
        // A kept session asks for OMB's expiry; credentials go into the URL.
        let kept = MQTT5
            .replace("cleanSession: true", "cleanSession: false")
            .replace("username:\n  password:", "username: u\n  password: p@ss");
        let l = load_texts("mqtt5-kept", &workload(1, 1, 1000), &kept).unwrap();
        let sut = l.plan.sut(None).unwrap();
        assert!(
            sut.as_str()
                .starts_with("mqtt://u:p%40ss@localhost:1883/benchmark?")
                && sut.as_str().contains("session_expiry=259200s"),
            "{}",
            sut.redacted()
        );
        // Another transport is named.
        let ssl = MQTT5.replace("tcp://", "ssl://");
        let e = load_texts("mqtt5-ssl", &workload(1, 1, 1000), &ssl).unwrap_err();
        assert!(e.to_string().contains("client.serverUri"), "{e}");
    }

    fn workload(subscriptions: u32, consumers: u32, rate: u32) -> String {
        format!(
            "name: w\ntopics: 2\npartitionsPerTopic: 3\nmessageSize: 100\nsubscriptionsPerTopic: {subscriptions}\n\
             consumerPerSubscription: {consumers}\nproducersPerTopic: 1\nproducerRate: {rate}\n\
             testDurationMinutes: 1\nwarmupDurationMinutes: 0.5\n"
        )
    }

    /// Loads a workload and a driver written to a folder of the test's own.
    fn load_texts(name: &str, workload: &str, driver: &str) -> Result<Loaded, PlanError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("maestro-omb-unit-{name}-"))
            .tempdir()
            .unwrap();
        let dir = dir.path();
        std::fs::write(dir.join("w.yaml"), workload).unwrap();
        std::fs::write(dir.join("d.yaml"), driver).unwrap();
        load(&dir.join("w.yaml"), &dir.join("d.yaml"))
    }

    #[test]
    fn a_kafka_workload_becomes_a_warmup_and_a_fixed_phase_on_every_bootstrap_server() {
        let l = load_texts("kafka", &workload(1, 2, 1000), KAFKA).unwrap();
        let sut = l.plan.sut(None).unwrap();
        assert_eq!(sut.host_list(), "k1:9092,k2:9092");
        // The plan kept with the results reads like one a person wrote.
        let text = &l.plan.text;
        for line in [
            "[plan]\nname = \"w\"",
            "tags = [\"omb\", \"kafka\"]",
            "[workload]\ntopics = 2\npartitions_per_topic = 3",
            "key_distribution = \"none\"",
            "[[phase]]\nkind = \"warmup\"\nrate = 1000.0\nduration = \"30s\"",
            "[[phase]]\nkind = \"fixed\"\nrate = 1000.0\nduration = \"1m\"",
        ] {
            assert!(text.contains(line), "{line:?} not in:\n{text}");
        }
        assert!(!text.contains("fault"), "{text}");
        let maestro_protocol::SutOptions::Kafka(o) = &sut.options else {
            panic!("kafka")
        };
        assert_eq!((o.replication_factor, o.partitions), (3, Some(3)));
        assert_eq!(o.acks, maestro_protocol::sut::Acks::Leader);
        let spec = l.plan.spec(&sut, 1000.0, None, Some(1));
        assert_eq!((spec.producers, spec.consumers, spec.topics), (2, 4, 2));
        assert!(matches!(
            l.plan.phases[..],
            [
                crate::plan::Phase::Warmup { duration: w, .. },
                crate::plan::Phase::Fixed { duration: Some(d), at_knee: false, .. }
            ] if w.as_secs() == 30 && d.as_secs() == 60
        ));
    }

    #[test]
    fn the_redis_driver_file_runs_streams_with_a_group_per_topic() {
        // `driver-redis/redis.yaml` as upstream has it.
        let redis = "name: Redis\ndriverClass: io.openmessaging.benchmark.driver.redis.RedisBenchmarkDriver\n\
            redisPort: 6379\nredisHost: 127.0.0.1\njedisPoolMaxTotal: 8\njedisPoolMaxIdle: 8\n";
        let l = load_texts("redis", &workload(1, 2, 500), redis).unwrap();
        let sut = l.plan.sut(None).unwrap();
        assert_eq!(sut.as_str(), "redis://127.0.0.1:6379?mode=streams");
        assert!(sut.consumers_compete() && sut.reliable());
        let spec = l.plan.spec(&sut, 500.0, None, Some(1));
        assert_eq!(spec.consumers, 4, "2 topics, a group of 2 each: {spec:?}");
        let l = load_texts("redis3", &workload(2, 2, 500), redis).unwrap();
        let spec = l.plan.spec(&sut, 500.0, None, Some(1));
        assert_eq!((spec.consumers, spec.subscriptions), (8, Some(2)));
        spec.validate().unwrap();
        let with_pass = format!("{redis}redisPass: \"p@ss\"\n");
        let l = load_texts("redis2", &workload(1, 1, 500), &with_pass).unwrap();
        assert_eq!(
            l.plan.sut(None).unwrap().as_str(),
            "redis://:p%40ss@127.0.0.1:6379?mode=streams"
        );
    }

    #[test]
    fn the_nats_driver_file_runs_jetstream_with_a_durable_per_subscription() {
        // `driver-nats/nats.yaml` as upstream has it.
        let nats = "name: NATS\ndriverClass: io.openmessaging.benchmark.driver.nats.NatsBenchmarkDriver\n\n\
            natsHostUrl: localhost:4222\n\nreplicationFactor: 1\n";
        let l = load_texts("nats", &workload(1, 2, 500), nats).unwrap();
        let sut = l.plan.sut(None).unwrap();
        assert_eq!(
            sut.as_str(),
            "nats://localhost:4222?jetstream=true&consumer=push&replicas=1"
        );
        assert!(sut.consumers_compete() && sut.reliable());
        let spec = l.plan.spec(&sut, 500.0, None, Some(1));
        assert_eq!(spec.consumers, 4, "2 topics, 2 consumers each: {spec:?}");
        let l = load_texts("nats4", &workload(2, 2, 500), nats).unwrap();
        let spec = l.plan.spec(&sut, 500.0, None, Some(1));
        assert_eq!((spec.consumers, spec.subscriptions), (8, Some(2)));
        spec.validate().unwrap();
        let older = nats.replace("localhost:4222", "nats://10.0.0.5:4222");
        let l = load_texts("nats2", &workload(1, 1, 500), &older).unwrap();
        assert!(
            l.plan
                .sut(None)
                .unwrap()
                .as_str()
                .starts_with("nats://10.0.0.5:4222?"),
        );
        for (bad, field) in [
            (
                nats.replace("localhost:4222", "tls://h:4222"),
                "natsHostUrl",
            ),
            (
                nats.replace("replicationFactor: 1", "replicationFactor: 7"),
                "replicationFactor",
            ),
        ] {
            let e = load_texts("nats3", &workload(1, 1, 500), &bad).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn rabbitmq_queue_types_map_to_x_queue_type() {
        let quorum = format!("{RABBIT}queueType: QUORUM\n");
        let l = load_texts("quorum", &workload(1, 2, 500), &quorum).unwrap();
        let sut = l.plan.sut(None).unwrap();
        assert!(sut.as_str().contains("queue_type=quorum"), "{sut}");
        assert!(
            sut.consumers_compete(),
            "a quorum queue's consumers share it"
        );
        let stream = format!("{RABBIT}queueType: STREAM\n");
        let l = load_texts("stream", &workload(3, 1, 500), &stream).unwrap();
        let sut = l.plan.sut(None).unwrap();
        assert!(
            sut.as_str().contains("queue_type=stream") && !sut.as_str().contains("fanout"),
            "{sut}"
        );
        assert!(!sut.consumers_compete());
        assert_eq!(l.plan.spec(&sut, 500.0, None, Some(1)).consumers, 6);
        let e = load_texts("stream2", &workload(1, 2, 500), &stream).unwrap_err();
        assert_eq!(e.field, "consumerPerSubscription", "{e}");
        let e = load_texts(
            "lazy",
            &workload(1, 1, 500),
            &format!("{RABBIT}queueType: LAZY\n"),
        )
        .unwrap_err();
        assert_eq!(e.field, "queueType", "{e}");
        assert!(e.reason.contains("\"lazy\""), "{e}");
    }

    #[test]
    fn subscriptions_become_queues_and_groups_and_what_cannot_map_is_named() {
        let l = load_texts("rabbit", &workload(3, 1, 500), RABBIT).unwrap();
        let sut = l.plan.sut(None).unwrap();
        assert!(
            sut.as_str().contains("fanout=true") && sut.as_str().contains("persistent=true"),
            "{sut}"
        );
        let spec = l.plan.spec(&sut, 500.0, None, Some(1));
        assert_eq!(spec.consumers, 6, "three queues per topic");
        // Two queues per topic, shared by two consumers each.
        let l = load_texts("rabbit2", &workload(2, 2, 500), RABBIT).unwrap();
        let sut = l.plan.sut(None).unwrap();
        assert!(!sut.as_str().contains("fanout"), "{sut}");
        let spec = l.plan.spec(&sut, 500.0, None, Some(1));
        assert_eq!((spec.consumers, spec.subscriptions), (8, Some(2)));
        spec.validate().unwrap();
        // Two consumer groups of one consumer, or of three.
        for (consumers, total) in [(1, 4), (3, 12)] {
            let l = load_texts("kafka2", &workload(2, consumers, 500), KAFKA).unwrap();
            let sut = l.plan.sut(None).unwrap();
            let spec = l.plan.spec(&sut, 500.0, None, Some(1));
            assert_eq!((spec.consumers, spec.subscriptions), (total, Some(2)));
            spec.validate().unwrap();
        }
        // A stream's readers never share, so neither can a subscription's consumers.
        let stream = format!("{RABBIT}queueType: STREAM\n");
        let e = load_texts("stream3", &workload(2, 2, 500), &stream).unwrap_err();
        assert_eq!(e.field, "consumerPerSubscription", "{e}");
        let e = load_texts(
            "class",
            &workload(1, 1, 500),
            &KAFKA.replace("kafka.KafkaBenchmarkDriver", "pulsar.PulsarBenchmarkDriver"),
        )
        .unwrap_err();
        assert!(e.reason.contains("PulsarBenchmarkDriver"), "{e}");
        let e = load_texts(
            "random",
            &(workload(1, 1, 500) + "useRandomizedPayloads: true\n"),
            KAFKA,
        )
        .unwrap_err();
        assert_eq!(e.field, "useRandomizedPayloads", "{e}");
        let e = load_texts(
            "boot",
            &workload(1, 1, 500),
            &KAFKA.replace("bootstrap.servers", "x.y"),
        )
        .unwrap_err();
        assert!(e.reason.contains("bootstrap.servers"), "{e}");
    }
}
