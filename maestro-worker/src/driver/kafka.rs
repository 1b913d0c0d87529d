//! Kafka with rdkafka (librdkafka, bundled).
//!
//! `kafka://host:port[,host:port...][/topic-prefix][?options]`, options:
//! - `partitions` (for topics the run creates; default: consumers per topic, at least 1);
//! - `acks` (0, 1, all; default all), `linger` (ms, default 5), `batch_size` (bytes),
//!   `compression` (none, gzip, snappy, lz4, zstd; default none);
//! - `replication_factor` (of topics the run creates; default 1), `topic.config.<name>=`
//!   (their configuration, for example `topic.config.min.insync.replicas=2`);
//! - `group` (consumer group prefix, default `maestro`); `auto_commit` (default true;
//!   false: consumers commit what they consumed about once a second and when they close),
//!   `offset_reset` (earliest or latest; default earliest);
//! - `keep` (default false: the run's topics and consumer groups are deleted once the run's
//!   consumers have left, by the worker that has producer 0);
//! - `key` (none, round_robin, random; default none): round_robin sends message `i` to
//!   partition `i mod partitions`, random sets a random key;
//! - any librdkafka property, written with its dots (for example
//!   `queue.buffering.max.messages=200000`); it goes to producers and consumers alike;
//!   `producer.<property>=` and `consumer.<property>=` go to one of them only. Properties
//!   that load code or run a command are refused when the URL is parsed (see
//!   `maestro_protocol::sut`).
//!   TLS: `security.protocol=ssl` (or `sasl_ssl`) with `ssl.ca.location=`,
//!   `ssl.certificate.location=`, `ssl.key.location=`, ...; with `client_ca=` and
//!   `client_ca_key=` every client (producer, consumer, and the admin client that creates
//!   topics) gets its own certificate, CN = its `client.id` (`maestro-<run>-p<i>`,
//!   `-c<i>`, `-admin`), passed as `ssl.certificate.pem`/`ssl.key.pem`. librdkafka makes
//!   its TLS handshakes inside its own threads, so they are not timed.
//!
//! Topic `i` of a run is `<prefix>-<run-id>-<i>`; it is created with the requested
//! partitions when missing, and used as it is when it exists. Consumers of one
//! subscription form one consumer group.

use super::tls::ClientCa;
use super::{AckTimes, Consumer, Driver, DriverError, Producer, TrySendError, sent_ns};
use bytes::Bytes;
use maestro_protocol::sut::{Compression, KafkaOptions, KeyDistribution};
use maestro_protocol::{ConsumerPlan, ProducerPlan, RunId, SutOptions, SutUrl};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a consumer fetches a hole in a partition's offsets again before it accepts
/// the messages as lost.
const GAP_RETRIES: u32 = 3;
/// librdkafka's local queue limit (and so the producer's room).
const QUEUE: usize = 100_000;
/// How long a producer's `drive` waits while librdkafka's queue is more than half full.
const DRIVE_TICK: Duration = Duration::from_millis(1);
/// How often a consumer without auto-commit commits what it consumed.
const COMMIT_EVERY: Duration = Duration::from_secs(1);
/// How long the worker that deletes a run's topics waits for the run's consumers to leave
/// their groups first.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the owner waits, once the run's groups are empty, for the consumers that left
/// them to finish closing before it deletes their topics.
const LEAVE_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct KafkaDriver {
    url: String,
    bootstrap: String,
    prefix: String,
    run: RunId,
    partitions: i32,
    /// Consumers per group (subscription), to know when a group has settled.
    group_size: u32,
    group: String,
    keys: KeyDistribution,
    /// librdkafka properties for producers and consumers.
    properties: Vec<(String, String)>,
    producer_properties: Vec<(String, String)>,
    consumer_properties: Vec<(String, String)>,
    topic_config: Vec<(String, String)>,
    replication_factor: i32,
    /// Consumers commit by themselves (false: the consumer commits, see [`COMMIT_EVERY`]).
    auto_commit: bool,
    /// Delivery reports are timed (acks=1 or all).
    timed: bool,
    /// Topics this run uses, to delete at the end unless kept.
    topics: u32,
    keep: bool,
    /// Signs a certificate per client (`client_ca=`).
    client_ca: Option<Arc<ClientCa>>,
}

impl KafkaDriver {
    /// A driver for `url`, whose options are `o` (parsed once, in [`SutUrl`]).
    /// `default_partitions`: consumers per topic, so that every consumer of a group gets
    /// a partition unless the URL says otherwise. librdkafka checks the properties here:
    /// a typo fails the configure (an invalid spec), not the run.
    pub fn new(
        url: &SutUrl,
        o: &KafkaOptions,
        run: &RunId,
        default_partitions: u32,
        topics: u32,
    ) -> Result<Self, DriverError> {
        let mut producer_properties = vec![
            ("acks".to_owned(), o.acks.as_str().to_owned()),
            ("linger.ms".to_owned(), o.linger_ms.to_string()),
            ("queue.buffering.max.messages".to_owned(), QUEUE.to_string()),
        ];
        if let Some(b) = o.batch_size {
            producer_properties.push(("batch.size".into(), b.to_string()));
        }
        if o.compression != Compression::None {
            producer_properties.push(("compression.type".into(), o.compression.as_str().into()));
        }
        producer_properties.extend(o.producer_properties.iter().cloned());
        let mut consumer_properties = vec![
            (
                "auto.offset.reset".to_owned(),
                o.offset_reset.as_str().to_owned(),
            ),
            ("enable.auto.commit".to_owned(), o.auto_commit.to_string()),
            ("session.timeout.ms".to_owned(), "6000".to_owned()),
            ("fetch.wait.max.ms".to_owned(), "10".to_owned()),
        ];
        consumer_properties.extend(o.consumer_properties.iter().cloned());
        let d = KafkaDriver {
            url: url.redacted(),
            bootstrap: url.host_list(),
            prefix: o.prefix.clone(),
            run: run.clone(),
            partitions: o
                .partitions
                .map_or(default_partitions.max(1) as i32, |p| p as i32),
            group_size: default_partitions.max(1),
            group: o.group.clone(),
            keys: o.key,
            properties: o.properties.clone(),
            producer_properties,
            consumer_properties,
            topic_config: o.topic_config.clone(),
            replication_factor: i32::from(o.replication_factor),
            auto_commit: o.auto_commit,
            timed: o.acks != maestro_protocol::sut::Acks::None,
            topics,
            keep: o.keep,
            client_ca: match url.tls.as_deref() {
                Some(t) => ClientCa::from_options(t)
                    .map_err(|e| DriverError::Tls {
                        url: url.redacted(),
                        reason: e.to_string(),
                    })?
                    .map(Arc::new),
                None => None,
            },
        };
        // librdkafka checks each role's properties when its client is made.
        let setting = |e: KafkaError| DriverError::Setting {
            url: d.url.clone(),
            reason: e.to_string(),
        };
        d.config("check", &d.producer_properties)?
            .create::<rdkafka::producer::BaseProducer>()
            .map_err(setting)?;
        d.config("check", &d.consumer_properties)?
            .set("group.id", "check")
            .create::<rdkafka::consumer::BaseConsumer>()
            .map_err(setting)?;
        Ok(d)
    }

    /// A driver for a Kafka URL (tests and benchmarks).
    pub fn from_url(raw: &str, run: &RunId, default_partitions: u32) -> Result<Self, DriverError> {
        let url = SutUrl::parse(raw)?;
        match &url.options {
            SutOptions::Kafka(o) => Self::new(&url, o, run, default_partitions, 1),
            _ => Err(DriverError::WrongScheme {
                url: url.to_string(),
                expected: "a Kafka",
            }),
        }
    }

    pub fn topic(&self, i: u32) -> String {
        format!("{}-{}-{i}", self.prefix, self.run)
    }

    /// The librdkafka configuration of one client, `role` being `admin`, `p<i>` or `c<i>`.
    fn config(&self, role: &str, extra: &[(String, String)]) -> Result<ClientConfig, DriverError> {
        let client_id = format!("maestro-{}-{role}", self.run);
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("socket.nagle.disable", "true")
            .set("client.id", &client_id)
            .set("log_level", "3");
        for (k, v) in self.properties.iter().chain(extra) {
            c.set(k, v);
        }
        if let Some(ca) = &self.client_ca {
            let pem = ca.issue(&client_id).map_err(|e| DriverError::Tls {
                url: self.url.clone(),
                reason: e.to_string(),
            })?;
            c.set("ssl.certificate.pem", pem.cert)
                .set("ssl.key.pem", pem.key);
        }
        Ok(c)
    }

    fn unreachable(&self, reason: impl ToString) -> DriverError {
        DriverError::Unreachable {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    /// Creates the topic when missing; an existing topic is used as it is.
    async fn ensure_topic(&self, topic: &str) -> Result<(), DriverError> {
        let admin: AdminClient<DefaultClientContext> = self
            .config("admin", &[])?
            .create()
            .map_err(|e| self.unreachable(e))?;
        let mut new = NewTopic::new(
            topic,
            self.partitions,
            TopicReplication::Fixed(self.replication_factor),
        );
        for (k, v) in &self.topic_config {
            new = new.set(k, v);
        }
        let options = AdminOptions::new().operation_timeout(Some(CONNECT_TIMEOUT));
        let results = tokio::time::timeout(CONNECT_TIMEOUT, admin.create_topics([&new], &options))
            .await
            .map_err(|_| {
                self.unreachable(format!(
                    "no answer to CreateTopics within {CONNECT_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| self.unreachable(e))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => {
                    return Err(self.unreachable(format!("cannot create topic {t}: {code}")));
                }
            }
        }
        Ok(())
    }
}

/// Counts failed deliveries and times the good ones (reported on librdkafka's thread).
#[derive(Debug, Default)]
pub struct Deliveries {
    failed: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
    /// With acks: the good deliveries' send and report times, until the producer task
    /// takes them. librdkafka reports on its own thread, so this is one uncontended lock
    /// per report (the task takes the lot a few times per millisecond at most).
    acked: std::sync::Mutex<AckTimes>,
    /// acks=0 gives no acknowledgement worth timing.
    timed: bool,
    /// Set when `acked` has pairs the producer task has not taken.
    pending: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Clone, Default)]
pub struct CountingContext(Arc<Deliveries>);

impl rdkafka::ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut last) = self.0.last_error.lock() {
                    *last = Some(e.to_string());
                }
            }
            Ok(m) if self.0.timed => {
                if let Some(sent) = m.payload().and_then(sent_ns)
                    && let Ok(mut acked) = self.0.acked.lock()
                {
                    acked.push(sent, crate::engine::tasks::now_ns());
                    self.0.pending.store(true, Ordering::Relaxed);
                }
            }
            Ok(_) => {}
        }
    }
}

impl Driver for KafkaDriver {
    type Producer = KafkaProducer;
    type Consumer = KafkaConsumer;

    /// The owner deletes the run's topics and consumer groups, once no consumer of the
    /// run is a member of its group any more (every worker's consumers have closed), or
    /// after [`LEAVE_TIMEOUT`].
    async fn finish(&self, owner: bool) -> Result<(), DriverError> {
        if !owner || self.keep {
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = self
            .config("admin", &[])?
            .create()
            .map_err(|e| self.unreachable(e))?;
        let admin = Arc::new(admin);
        let prefix = format!("{}-{}-", self.group, self.run);
        let deadline = tokio::time::Instant::now() + LEAVE_TIMEOUT;
        let groups = loop {
            let (a, p) = (admin.clone(), prefix.clone());
            let listed = tokio::task::spawn_blocking(move || {
                a.inner()
                    .fetch_group_list(None, Duration::from_secs(2))
                    .map(|list| {
                        list.groups()
                            .iter()
                            .filter(|g| g.name().starts_with(&p))
                            .map(|g| (g.name().to_owned(), g.members().len()))
                            .collect::<Vec<_>>()
                    })
            })
            .await;
            match listed {
                Ok(Ok(groups)) if groups.iter().all(|(_, members)| *members == 0) => {
                    break groups.into_iter().map(|(g, _)| g).collect::<Vec<_>>();
                }
                Ok(Ok(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(Ok(groups)) => {
                    tracing::warn!(run = %self.run, ?groups, "consumers still in the run's groups after {LEAVE_TIMEOUT:?}: deleting the topics anyway");
                    break groups.into_iter().map(|(g, _)| g).collect();
                }
                // A broker that cannot list groups: the topics go without waiting.
                Ok(Err(e)) => {
                    tracing::debug!(run = %self.run, error = %e, "cannot list consumer groups");
                    break Vec::new();
                }
                Err(e) => return Err(DriverError::client(e)),
            }
        };
        if !groups.is_empty() {
            // A consumer of another worker asks for its topic's metadata while it closes,
            // just after leaving its group; tansu answers that request for a topic deleted
            // meanwhile with a topic without a name, which crashes librdkafka.
            tokio::time::sleep(LEAVE_GRACE).await;
        }
        let topics: Vec<String> = (0..self.topics).map(|i| self.topic(i)).collect();
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let options = AdminOptions::new().operation_timeout(Some(CONNECT_TIMEOUT));
        let deleted = tokio::time::timeout(CONNECT_TIMEOUT, admin.delete_topics(&names, &options))
            .await
            .map_err(|_| DriverError::NoAnswer {
                request: "DeleteTopics",
                waited: CONNECT_TIMEOUT,
            })?
            .map_err(|e| DriverError::Cleanup {
                what: format!("the run's topics ({e})"),
            })?;
        let mut failed: Vec<String> = deleted
            .into_iter()
            .filter_map(|r| match r {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => None,
                Err((t, code)) => Some(format!("topic {t}: {code}")),
            })
            .collect();
        if !groups.is_empty() {
            let names: Vec<&str> = groups.iter().map(String::as_str).collect();
            // Groups are the broker's bookkeeping: one it cannot delete is only noted.
            match tokio::time::timeout(CONNECT_TIMEOUT, admin.delete_groups(&names, &options)).await
            {
                Ok(Ok(results)) => failed.extend(results.into_iter().filter_map(|r| match r {
                    Err((g, code)) if code != RDKafkaErrorCode::GroupIdNotFound => {
                        Some(format!("group {g}: {code}"))
                    }
                    _ => None,
                })),
                Ok(Err(e)) => failed.push(format!("groups: {e}")),
                Err(_) => failed.push("groups: no answer".into()),
            }
        }
        tracing::info!(run = %self.run, topics = ?topics, groups = groups.len(), "deleted the run's topics");
        if failed.is_empty() {
            Ok(())
        } else {
            Err(DriverError::Cleanup {
                what: failed.join(", "),
            })
        }
    }

    async fn producer(&self, plan: &ProducerPlan) -> Result<KafkaProducer, DriverError> {
        let topic = self.topic(plan.topic);
        self.ensure_topic(&topic).await?;
        let context = CountingContext(Arc::new(Deliveries {
            timed: self.timed,
            ..Default::default()
        }));
        let producer: ThreadedProducer<CountingContext> = self
            .config(&format!("p{}", plan.id), &self.producer_properties)?
            .create_with_context(context.clone())
            .map_err(|e| self.unreachable(e))?;
        // Fail fast when the broker does not answer (metadata round trip).
        let metadata = {
            let p = producer.clone();
            let t = topic.clone();
            tokio::task::spawn_blocking(move || {
                p.client()
                    .fetch_metadata(Some(&t), CONNECT_TIMEOUT)
                    .map(|_| ())
            })
        };
        metadata
            .await
            .map_err(|e| self.unreachable(e))?
            .map_err(|e| self.unreachable(e))?;
        Ok(KafkaProducer {
            producer,
            context,
            topic,
            keys: self.keys,
            partitions: self.partitions,
            next: 0,
            rng: fastrand::Rng::new(),
            reported_failures: 0,
            acks: AckTimes::default(),
        })
    }

    async fn consumer(&self, plan: &ConsumerPlan) -> Result<KafkaConsumer, DriverError> {
        let topic = self.topic(plan.topic);
        self.ensure_topic(&topic).await?;
        let group = format!(
            "{}-{}-{}-{}",
            self.group, self.run, plan.topic, plan.subscription
        );
        let consumer: StreamConsumer = self
            .config(&format!("c{}", plan.id), &self.consumer_properties)?
            .set("group.id", group)
            .create()
            .map_err(|e| self.unreachable(e))?;
        consumer
            .subscribe(&[&topic])
            .map_err(|e| self.unreachable(e))?;
        // Wait until the group has settled: this consumer holds its share of the
        // partitions. Proceeding on the first assignment would let the group rebalance
        // during the run (the first member to join briefly owns every partition).
        let partitions = self.partitions.max(1) as usize;
        let members = self.group_size.max(1) as usize;
        let (low, high) = (partitions / members, partitions.div_ceil(members));
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        let mut first = None;
        loop {
            match tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await {
                Ok(Ok(m)) => {
                    first = m.payload().map(Bytes::copy_from_slice);
                    break;
                }
                Ok(Err(e)) => return Err(self.unreachable(e)),
                Err(_) => {}
            }
            let held = consumer.assignment().map_or(0, |a| a.count());
            let settled = (low..=high).contains(&held) && (held > 0 || low == 0);
            if settled || tokio::time::Instant::now() > deadline {
                break;
            }
        }
        Ok(KafkaConsumer {
            consumer: Arc::new(consumer),
            first,
            next: Vec::new(),
            commit: (!self.auto_commit).then(std::time::Instant::now),
            drain_rereads: 0,
            received_since_reread: false,
        })
    }
}

#[allow(missing_debug_implementations)]
pub struct KafkaProducer {
    producer: ThreadedProducer<CountingContext>,
    context: CountingContext,
    topic: String,
    keys: KeyDistribution,
    partitions: i32,
    next: u64,
    rng: fastrand::Rng,
    reported_failures: u64,
    /// Swapped with the context's buffer, so both keep their capacity.
    acks: AckTimes,
}

impl Producer for KafkaProducer {
    #[inline]
    fn try_send(&mut self, payload: bytes::Bytes) -> Result<(), TrySendError> {
        let key = self.rng.u64(..).to_le_bytes();
        let mut record: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(&self.topic).payload(&payload[..]);
        match self.keys {
            KeyDistribution::None => {}
            KeyDistribution::RoundRobin => {
                record = record.partition((self.next % self.partitions as u64) as i32)
            }
            KeyDistribution::Random => record = record.key(&key[..]),
        }
        match self.producer.send(record) {
            Ok(()) => {
                self.next += 1;
                Ok(())
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(TrySendError::Full)
            }
            Err((e, _)) => Err(TrySendError::Closed(e.to_string())),
        }
    }

    #[inline]
    fn room(&self) -> usize {
        QUEUE.saturating_sub(self.producer.in_flight_count().max(0) as usize)
    }

    /// librdkafka sends on its own threads: there is nothing to drive unless a delivery
    /// failure waits to be reported. So a paced producer sleeps between messages
    /// instead of spinning on `drive`.
    fn needs_drive(&self) -> bool {
        self.context.0.failed.load(Ordering::Relaxed) > self.reported_failures
    }

    async fn drive(&mut self) -> Result<(), DriverError> {
        // librdkafka sends on its own threads; report failed deliveries, then give it time.
        let failed = self.context.0.failed.load(Ordering::Relaxed);
        if failed > self.reported_failures {
            let n = failed - self.reported_failures;
            self.reported_failures = failed;
            let last = self
                .context
                .0
                .last_error
                .lock()
                .ok()
                .and_then(|l| l.clone())
                .unwrap_or_default();
            return Err(DriverError::DeliveriesFailed { failed: n, last });
        }
        // librdkafka sends on its own threads: wait only while its queue is filling up.
        // (Loops that merely wait for it, before the start and in the drain, do not call
        // `drive` while `needs_drive` is false: see the engine's producer.)
        if self.room() >= QUEUE / 2 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(DRIVE_TICK).await;
        }
        Ok(())
    }

    fn idle(&self) -> bool {
        self.producer.in_flight_count() == 0
    }

    fn take_acks(&mut self, f: impl FnMut(i64, i64)) {
        if let Ok(mut acked) = self.context.0.acked.lock() {
            self.context.0.pending.store(false, Ordering::Relaxed);
            std::mem::swap(&mut *acked, &mut self.acks);
        }
        self.acks.take(f);
    }

    fn has_acks(&self) -> bool {
        self.context.0.pending.load(Ordering::Relaxed)
    }

    async fn close(self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.producer.in_flight_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[allow(missing_debug_implementations)]
pub struct KafkaConsumer {
    /// Shared with blocking seeks, which run off the async threads.
    consumer: Arc<StreamConsumer>,
    /// Per partition (indexed by partition number): the next offset expected, and how
    /// often the current gap was fetched again.
    next: Vec<Option<(i64, u32)>>,
    /// A message received while waiting for the assignment.
    first: Option<Bytes>,
    /// Without auto-commit: when this consumer last committed.
    commit: Option<std::time::Instant>,
    /// In the drain: how often the partitions were read again from the expected offsets,
    /// and whether a new record arrived since.
    drain_rereads: u32,
    received_since_reread: bool,
}

impl KafkaConsumer {
    /// Without auto-commit: commits the consumed position in the background, at most
    /// every [`COMMIT_EVERY`].
    fn commit_if_due(&mut self) {
        if let Some(last) = self.commit.as_mut()
            && last.elapsed() >= COMMIT_EVERY
        {
            *last = std::time::Instant::now();
            // Nothing consumed yet is no error worth reporting; a failed commit is
            // retried a second later.
            let _ = self.consumer.commit_consumer_state(CommitMode::Async);
        }
    }
}

impl Consumer for KafkaConsumer {
    async fn recv(&mut self) -> Result<Option<Bytes>, DriverError> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        self.commit_if_due();
        match self.consumer.recv().await {
            Ok(m) => {
                let (partition, offset) = (m.partition(), m.offset());
                let payload = m.payload().map(Bytes::copy_from_slice);
                let index = partition.max(0) as usize;
                if self.next.len() <= index {
                    self.next.resize(index + 1, None);
                }
                let next = self.next[index].get_or_insert((offset, 0));
                if offset < next.0 {
                    // Already delivered (read again after a seek below).
                    return Ok(None);
                }
                if offset > next.0 && next.1 < GAP_RETRIES {
                    // A hole in a run's fresh topic: a fetch skipped records that the
                    // broker acknowledged (seen with tansu while producers still write).
                    // Read from the hole again; after a few tries, accept it as lost.
                    next.1 += 1;
                    let expected = next.0;
                    let topic = m.topic().to_owned();
                    drop(m);
                    // `seek` blocks for up to its timeout: never on an async thread.
                    let consumer = self.consumer.clone();
                    let sought = tokio::task::spawn_blocking(move || {
                        consumer.seek(
                            &topic,
                            partition,
                            rdkafka::Offset::Offset(expected),
                            Duration::from_secs(1),
                        )
                    })
                    .await;
                    if matches!(sought, Ok(Ok(()))) {
                        return Ok(None);
                    }
                    // The seek failed: take this message, and the hole stays a loss.
                    self.next[index] = Some((offset + 1, 0));
                    return Ok(payload);
                }
                self.next[index] = Some((offset + 1, 0));
                self.received_since_reread = true;
                Ok(payload)
            }
            Err(e) => Err(DriverError::client(e)),
        }
    }

    /// Reads each assigned partition again from the next offset this consumer expects
    /// there, until a re-read brings nothing new (at most [`GAP_RETRIES`] times). A fetch
    /// can skip a partition's last records (tansu, while producers still wrote), and no
    /// later record shows that hole. The broker's high watermark cannot tell instead:
    /// tansu's `ListOffsets` answered 1 for a partition holding 50 records.
    async fn caught_up(&mut self) -> bool {
        let progressed = std::mem::take(&mut self.received_since_reread);
        if self.drain_rereads >= GAP_RETRIES || (self.drain_rereads > 0 && !progressed) {
            return true;
        }
        self.drain_rereads += 1;
        let consumer = self.consumer.clone();
        let expected: Vec<Option<i64>> = self.next.iter().map(|n| n.map(|(at, _)| at)).collect();
        // Seeks block on the broker: never on an async thread.
        let sought = tokio::task::spawn_blocking(move || {
            let Ok(assignment) = consumer.assignment() else {
                return 0;
            };
            let mut sought = 0;
            for e in assignment.elements() {
                let partition = e.partition();
                if let Some(Some(at)) = expected.get(partition.max(0) as usize)
                    && consumer
                        .seek(
                            e.topic(),
                            partition,
                            rdkafka::Offset::Offset(*at),
                            Duration::from_secs(1),
                        )
                        .is_ok()
                {
                    sought += 1;
                }
            }
            sought
        })
        .await
        .unwrap_or(0);
        tracing::debug!(
            sought,
            rereads = self.drain_rereads,
            "drain: reading the partitions again from the expected offsets"
        );
        sought == 0
    }

    /// Commits the final position (without auto-commit), then leaves the group and closes
    /// (dropping the consumer does both), off the async threads: librdkafka blocks in both.
    async fn close(self) {
        let commit = self.commit.is_some();
        let consumer = self.consumer;
        let _ = tokio::task::spawn_blocking(move || {
            if commit {
                let _ = consumer.commit_consumer_state(CommitMode::Sync);
            }
            drop(consumer);
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> RunId {
        RunId::new("r1").unwrap()
    }

    #[test]
    fn options_from_url() {
        let d = KafkaDriver::from_url(
            "kafka://127.0.0.1:9092/bench?partitions=4&acks=1&linger=5&compression=lz4&key=round_robin&queue.buffering.max.ms=7",
            &run(),
            2,
        )
        .unwrap();
        assert_eq!(d.bootstrap, "127.0.0.1:9092");
        assert_eq!(d.partitions, 4);
        assert_eq!(d.topic(3), "bench-r1-3");
        assert_eq!(d.keys, KeyDistribution::RoundRobin);
        assert!(d.producer_properties.contains(&("acks".into(), "1".into())));
        assert!(
            d.producer_properties
                .contains(&("compression.type".into(), "lz4".into()))
        );
        assert!(
            d.properties
                .contains(&("queue.buffering.max.ms".into(), "7".into()))
        );
        assert_eq!(
            KafkaDriver::from_url("kafka://h", &run(), 3)
                .unwrap()
                .partitions,
            3
        );
    }

    #[test]
    fn librdkafka_checks_its_properties_when_the_driver_is_made() {
        let e = KafkaDriver::from_url("kafka://h?no.such.property=1", &run(), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no.such.property"), "{e}");
    }
}
