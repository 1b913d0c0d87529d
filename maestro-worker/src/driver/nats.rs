//! NATS with the async-nats crate: core subjects and JetStream.
//!
//! `nats[+tls]://[user:pass@]host[:port][?options]`, options:
//! - core NATS (default): producers publish to the subject `<prefix>.<run-id>.<i>`; every
//!   consumer subscribes to it and gets every message, or with `group=true` a subscription's
//!   consumers share the queue group `<prefix>-<run-id>-g<subscription>` and compete. NATS
//!   keeps nothing for a subscriber that is not there and acknowledges no publish: a
//!   producer writes up to `window` messages, then flushes (PING); the PONG says the
//!   server took them, and is their publish latency;
//! - `jetstream=true`: the stream `<prefix>-<run-id>` (`storage=`, `replicas=`) takes the
//!   run's subjects; every publish is acknowledged by the stream (the publish latency; up
//!   to `window` in flight per producer); each subscription of a topic is the durable
//!   consumer `t<topic>-g<subscription>` reading the stream from its start with explicit
//!   acks, whose consumers compete: `consumer=pull` (default: each fetches `batch` at a
//!   time) or `consumer=push` (the server pushes to a deliver group, `batch`
//!   unacknowledged at most). A consumer that leaves stores a record on
//!   `<prefix>.<run-id>.left.<consumer>`; the worker with producer 0 deletes the stream once
//!   every consumer of the run has (or [`LEAVE_TIMEOUT`] passed), unless `keep=true`.
//!
//! TLS (`nats+tls://`, the server's port): `ca=`, `cert=` and `key=`, `insecure=`, `sni=`,
//! and `client_ca=` with `client_ca_key=` for a certificate per client (CN = its client
//! name, `maestro-<run-id>-<p|c><id>`); async-nats does the handshake with maestro's rustls
//! config.
//!
//! Each producer and consumer has its own connection. The client reconnects by itself:
//! a producer reports the disconnection once, as an error, and waits for it to come back.

use super::tls::TlsClient;
use super::{AckTimes, Consumer, Driver, DriverError, Durations, Producer, SendQueue, Timings};
use super::{TrySendError, sent_ns};
use async_nats::jetstream::{self, consumer, stream};
use async_nats::{Client, Subject};
use bytes::Bytes;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use maestro_protocol::sut::{NatsConsumerKind, NatsOptions, NatsStorage};
use maestro_protocol::{ConsumerPlan, ProducerPlan, RunId, SutOptions, SutUrl};
use rustls::ClientConfig;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages a producer may hold before `try_send` reports `Full`.
const QUEUE: usize = 1024;
/// How long JetStream requests and publish acknowledgements may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a producer waits between looks at a lost connection.
const DOWN_POLL: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub struct NatsDriver {
    /// The URL without password, for messages.
    url: String,
    /// `host:port`.
    addr: String,
    credentials: Option<(String, String)>,
    tls: Option<Arc<TlsClient>>,
    o: NatsOptions,
    run: RunId,
    /// The run's consumers (to delete its stream once every one of them left).
    consumers: u32,
    connects: Durations,
}

impl std::fmt::Debug for NatsDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsDriver")
            .field("url", &self.url)
            .field("o", &self.o)
            .finish_non_exhaustive()
    }
}

impl NatsDriver {
    pub fn new(
        url: &SutUrl,
        o: &NatsOptions,
        run: &RunId,
        consumers: u32,
    ) -> Result<Self, DriverError> {
        let host = url.host();
        Ok(NatsDriver {
            url: url.redacted(),
            addr: format!("{}:{}", host.name, host.port),
            credentials: url
                .credentials
                .as_ref()
                .map(|c| (c.user.clone(), c.password.clone())),
            tls: TlsClient::for_url(url)?,
            o: o.clone(),
            run: run.clone(),
            consumers,
            connects: Durations::default(),
        })
    }

    /// A driver for a `nats://` URL (tests and benchmarks).
    pub fn from_url(raw: &str, run: &RunId) -> Result<Self, DriverError> {
        let url = SutUrl::parse(raw)?;
        match &url.options {
            SutOptions::Nats(o) => Self::new(&url, o, run, 1),
            _ => Err(DriverError::WrongScheme {
                url: url.to_string(),
                expected: "a NATS",
            }),
        }
    }

    fn unreachable(&self, reason: impl ToString) -> DriverError {
        DriverError::Unreachable {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    /// Topic `i`'s subject.
    fn subject(&self, topic: u32) -> String {
        format!("{}.{}.{topic}", self.o.prefix, self.run)
    }

    /// The run's JetStream stream (stream names take no dots).
    fn stream_name(&self) -> String {
        format!("{}-{}", self.o.prefix, self.run)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }

    /// A subscription's queue group (core NATS).
    fn group(&self, subscription: u32) -> String {
        format!("{}-g{subscription}", self.stream_name())
    }

    /// A topic's subscription's durable consumer (JetStream).
    fn durable(topic: u32, subscription: u32) -> String {
        format!("t{topic}-g{subscription}")
    }

    /// Where the server pushes a push consumer's messages: outside the stream's subjects.
    fn deliver_subject(&self, topic: u32, subscription: u32) -> String {
        format!(
            "{}-deliver.{}.{topic}.{subscription}",
            self.o.prefix, self.run
        )
    }

    /// The record a consumer leaves when it is done (JetStream).
    fn left_subject(&self, consumer: u32) -> String {
        format!("{}.{}.left.{consumer}", self.o.prefix, self.run)
    }

    async fn connect(&self, role: &str) -> Result<Client, DriverError> {
        let began = Instant::now();
        let name = format!("maestro-{}-{role}", self.run);
        let mut options = async_nats::ConnectOptions::new()
            .name(&name)
            .connection_timeout(CONNECT_TIMEOUT)
            .request_timeout(Some(REPLY_TIMEOUT));
        if let Some(tls) = &self.tls {
            let config = tls.config_for(&name).map_err(|e| DriverError::Tls {
                url: self.url.clone(),
                reason: e.to_string(),
            })?;
            options = options
                .require_tls(true)
                .tls_client_config(ClientConfig::clone(&config));
        }
        if let Some((user, password)) = &self.credentials {
            options = options.user_and_password(user.clone(), password.clone());
        }
        let client = tokio::time::timeout(CONNECT_TIMEOUT, options.connect(self.addr.as_str()))
            .await
            .map_err(|_| self.unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| self.unreachable(e))?;
        self.connects.record(began.elapsed());
        Ok(client)
    }

    fn jetstream(&self, client: Client) -> jetstream::Context {
        jetstream::ContextBuilder::new()
            .timeout(REPLY_TIMEOUT)
            .max_ack_inflight(self.o.window as usize)
            .build(client)
    }

    /// The run's stream, created unless it exists: it takes every subject of the run.
    async fn stream(&self, js: &jetstream::Context) -> Result<stream::Stream, DriverError> {
        let config = stream::Config {
            name: self.stream_name(),
            subjects: vec![format!("{}.{}.>", self.o.prefix, self.run)],
            storage: match self.o.storage {
                NatsStorage::File => stream::StorageType::File,
                NatsStorage::Memory => stream::StorageType::Memory,
            },
            num_replicas: self.o.replicas as usize,
            ..Default::default()
        };
        match js.get_or_create_stream(config).await {
            Ok(stream) => Ok(stream),
            // Clients of one run create its stream at once: the server may refuse all but
            // one (nats-server 2.9 answers "subjects overlap with an existing stream" to a
            // second create of the same stream). The stream is there: take it.
            Err(e) => js
                .get_stream(self.stream_name())
                .await
                .map_err(|_| self.unreachable(format!("stream {}: {e}", self.stream_name()))),
        }
    }

    async fn open_source(
        &self,
        client: &Client,
        plan: &ConsumerPlan,
    ) -> Result<Source, DriverError> {
        let subject = self.subject(plan.topic);
        if !self.o.jetstream {
            let subscribed = if self.o.group {
                client
                    .queue_subscribe(subject, self.group(plan.subscription))
                    .await
            } else {
                client.subscribe(subject).await
            };
            let subscriber = subscribed.map_err(|e| self.unreachable(e))?;
            // The server has the subscription once it answered the flush's PING.
            client
                .flush()
                .await
                .map_err(|e| self.unreachable(format!("subscribing: {e}")))?;
            return Ok(Source::Core(subscriber));
        }
        let js = self.jetstream(client.clone());
        let stream = self.stream(&js).await?;
        let durable = Self::durable(plan.topic, plan.subscription);
        let failed = |e: &dyn std::fmt::Display| {
            self.unreachable(format!("consumer {durable} of {}: {e}", self.stream_name()))
        };
        match self.o.consumer {
            NatsConsumerKind::Pull => {
                let config = consumer::pull::Config {
                    durable_name: Some(durable.clone()),
                    filter_subject: subject,
                    ack_policy: consumer::AckPolicy::Explicit,
                    deliver_policy: consumer::DeliverPolicy::All,
                    ..Default::default()
                };
                let c: consumer::PullConsumer = stream
                    .get_or_create_consumer(&durable, config)
                    .await
                    .map_err(|e| failed(&e))?;
                let messages = c
                    .stream()
                    .max_messages_per_batch(self.o.batch as usize)
                    .messages()
                    .await
                    .map_err(|e| failed(&e))?;
                Ok(Source::Pull(messages, js))
            }
            NatsConsumerKind::Push => {
                let config = consumer::push::Config {
                    durable_name: Some(durable.clone()),
                    deliver_subject: self.deliver_subject(plan.topic, plan.subscription),
                    deliver_group: Some(self.group(plan.subscription)),
                    filter_subject: subject,
                    ack_policy: consumer::AckPolicy::Explicit,
                    deliver_policy: consumer::DeliverPolicy::All,
                    max_ack_pending: i64::from(self.o.batch),
                    ..Default::default()
                };
                let c: consumer::PushConsumer = stream
                    .get_or_create_consumer(&durable, config)
                    .await
                    .map_err(|e| failed(&e))?;
                let messages = c.messages().await.map_err(|e| failed(&e))?;
                client
                    .flush()
                    .await
                    .map_err(|e| self.unreachable(format!("subscribing: {e}")))?;
                Ok(Source::Push(messages, js))
            }
        }
    }

    /// Waits until every consumer of the run left its record (bounded).
    async fn wait_for_consumers(&self, stream: &stream::Stream) {
        super::wait_until_left(&self.run, self.consumers, |id| async move {
            stream
                .get_last_raw_message_by_subject(&self.left_subject(id))
                .await
                .is_ok()
        })
        .await;
    }
}

impl Driver for NatsDriver {
    type Producer = NatsProducer;
    type Consumer = NatsConsumer;

    fn timings(&self) -> Timings {
        // async-nats does the TLS handshake out of sight: it is part of the connect time.
        Timings::of(None, &self.connects, None)
    }

    async fn finish(&self, owner: bool) -> Result<(), DriverError> {
        if !owner || self.o.keep || !self.o.jetstream {
            return Ok(());
        }
        let client = self.connect("cleanup").await?;
        let js = self.jetstream(client);
        let name = self.stream_name();
        let cleanup = |e: &dyn std::fmt::Display| DriverError::Cleanup {
            what: format!("stream {name}: {e}"),
        };
        let stream = match js.get_stream(&name).await {
            Ok(s) => s,
            // Nobody created it: nothing to delete.
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(ref js)
                        if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(cleanup(&e)),
        };
        self.wait_for_consumers(&stream).await;
        js.delete_stream(&name).await.map_err(|e| cleanup(&e))?;
        Ok(())
    }

    async fn producer(&self, plan: &ProducerPlan) -> Result<NatsProducer, DriverError> {
        let client = self.connect(&format!("p{}", plan.id)).await?;
        let js = if self.o.jetstream {
            let js = self.jetstream(client.clone());
            self.stream(&js).await?;
            Some(js)
        } else {
            None
        };
        Ok(NatsProducer {
            subject: Subject::from(self.subject(plan.topic)),
            window: self.o.window as usize,
            client,
            js,
            queue: SendQueue::new(QUEUE),
            pending: FuturesOrdered::new(),
            pending_sent: VecDeque::with_capacity(self.o.window as usize),
            flush: None,
            flushing: Vec::with_capacity(self.o.window as usize),
            acks: AckTimes::default(),
            down: false,
        })
    }

    async fn consumer(&self, plan: &ConsumerPlan) -> Result<NatsConsumer, DriverError> {
        let client = self.connect(&format!("c{}", plan.id)).await?;
        let source = self.open_source(&client, plan).await?;
        Ok(NatsConsumer {
            driver: self.clone(),
            plan: plan.clone(),
            client,
            source,
            unacked: None,
            ready: None,
        })
    }
}

/// A core NATS flush: the server's PONG.
type Flush = Pin<Box<dyn Future<Output = Result<(), async_nats::client::FlushError>> + Send>>;

/// A JetStream publish's acknowledgement (the client's own boxed future).
type Acked = <jetstream::context::PublishAckFuture as std::future::IntoFuture>::IntoFuture;

#[allow(missing_debug_implementations)]
pub struct NatsProducer {
    subject: Subject,
    window: usize,
    client: Client,
    js: Option<jetstream::Context>,
    /// Messages handed over, not yet published.
    queue: SendQueue,
    /// JetStream publishes waiting for their acknowledgements, oldest first, and their
    /// messages' send times in the same order.
    pending: FuturesOrdered<Acked>,
    pending_sent: VecDeque<i64>,
    /// Core NATS: the flush under way (kept across a cancelled drive), and the send times
    /// of the messages it confirms.
    flush: Option<Flush>,
    flushing: Vec<i64>,
    acks: AckTimes,
    /// The connection's loss was reported; waiting for the client to reconnect.
    down: bool,
}

impl NatsProducer {
    /// The oldest pending publish was acknowledged (or not).
    fn record(
        &mut self,
        acked: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    ) -> Result<(), DriverError> {
        let sent = self.pending_sent.pop_front().unwrap_or(0);
        acked.map_err(publish_failed)?;
        if sent > 0 {
            self.acks.push(sent, crate::engine::tasks::now_ns());
        }
        Ok(())
    }

    /// Core NATS: writes up to `window` messages, then waits for the flush that confirms
    /// the server took them.
    async fn drive_core(&mut self) -> Result<(), DriverError> {
        if self.flush.is_none() {
            while self.flushing.len() < self.window
                && let Some(payload) = self.queue.front().cloned()
            {
                let sent = sent_ns(&payload).unwrap_or(0);
                self.client
                    .publish(self.subject.clone(), payload)
                    .await
                    .map_err(DriverError::client)?;
                self.queue.pop_front();
                self.flushing.push(sent);
            }
            if self.flushing.is_empty() {
                return std::future::pending().await;
            }
            let client = self.client.clone();
            self.flush = Some(Box::pin(async move { client.flush().await }));
        }
        let Some(flush) = self.flush.as_mut() else {
            return Ok(());
        };
        let flushed = tokio::time::timeout(REPLY_TIMEOUT, flush).await;
        self.flush = None;
        match flushed {
            Ok(Ok(())) => {
                let at = crate::engine::tasks::now_ns();
                for sent in self.flushing.drain(..).filter(|s| *s > 0) {
                    self.acks.push(sent, at);
                }
                Ok(())
            }
            Ok(Err(e)) => {
                self.flushing.clear();
                Err(DriverError::ConnectionLost {
                    reason: format!("flush: {e}"),
                })
            }
            Err(_) => {
                self.flushing.clear();
                Err(DriverError::ConnectionLost {
                    reason: format!("no PONG within {REPLY_TIMEOUT:?}"),
                })
            }
        }
    }
}

fn publish_failed(e: jetstream::context::PublishError) -> DriverError {
    use jetstream::context::PublishErrorKind as Kind;
    match e.kind() {
        Kind::TimedOut | Kind::BrokenPipe => DriverError::ConnectionLost {
            reason: format!("JetStream publish: {e}"),
        },
        _ => DriverError::client(e),
    }
}

impl Producer for NatsProducer {
    #[inline]
    fn try_send(&mut self, payload: Bytes) -> Result<(), TrySendError> {
        self.queue.push(payload)
    }

    #[inline]
    fn room(&self) -> usize {
        self.queue.room()
    }

    async fn drive(&mut self) -> Result<(), DriverError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            if !self.down {
                self.down = true;
                return Err(DriverError::ConnectionLost {
                    reason: "disconnected from the NATS server; the client reconnects".into(),
                });
            }
            tokio::time::sleep(DOWN_POLL).await;
            return Ok(());
        }
        self.down = false;
        let Some(js) = self.js.as_ref() else {
            return self.drive_core().await;
        };
        while self.pending.len() < self.window
            && let Some(payload) = self.queue.front().cloned()
        {
            let sent = sent_ns(&payload).unwrap_or(0);
            let ack = js
                .publish(self.subject.clone(), payload)
                .await
                .map_err(publish_failed)?;
            self.queue.pop_front();
            self.pending.push_back(ack.into_future());
            self.pending_sent.push_back(sent);
        }
        let Some(first) = self.pending.next().await else {
            return std::future::pending().await;
        };
        self.record(first)?;
        while let Some(Some(acked)) = self.pending.next().now_or_never() {
            self.record(acked)?;
        }
        Ok(())
    }

    fn idle(&self) -> bool {
        self.queue.is_empty() && self.pending.is_empty() && self.flushing.is_empty()
    }

    fn take_acks(&mut self, f: impl FnMut(i64, i64)) {
        self.acks.take(f);
    }

    fn has_acks(&self) -> bool {
        !self.acks.is_empty()
    }

    async fn close(self) {
        let _ = tokio::time::timeout(REPLY_TIMEOUT, self.client.flush()).await;
    }
}

/// Where a consumer's messages come from.
enum Source {
    Core(async_nats::Subscriber),
    Pull(consumer::pull::Stream, jetstream::Context),
    Push(consumer::push::Messages, jetstream::Context),
}

#[allow(missing_debug_implementations)]
pub struct NatsConsumer {
    driver: NatsDriver,
    plan: ConsumerPlan,
    client: Client,
    source: Source,
    /// A JetStream message taken, whose acknowledgement is not written yet.
    unacked: Option<jetstream::Message>,
    /// Its payload, not returned yet (kept across a cancelled `recv`).
    ready: Option<Bytes>,
}

impl Consumer for NatsConsumer {
    async fn recv(&mut self) -> Result<Option<Bytes>, DriverError> {
        loop {
            // A JetStream message taken is acknowledged before it is returned; both the
            // acknowledgement and the payload survive a cancelled `recv`.
            if let Some(m) = &self.unacked {
                m.ack().await.map_err(|e| DriverError::ConnectionLost {
                    reason: format!("acknowledging: {e}"),
                })?;
                self.unacked = None;
            }
            if let Some(payload) = self.ready.take() {
                return Ok(Some(payload));
            }
            let next = match &mut self.source {
                Source::Core(subscriber) => {
                    return match subscriber.next().await {
                        Some(m) => Ok(Some(m.payload)),
                        None => Err(DriverError::ConnectionLost {
                            reason: "the subscription ended".into(),
                        }),
                    };
                }
                Source::Pull(messages, _) => {
                    messages.next().await.map(|m| m.map_err(|e| e.to_string()))
                }
                Source::Push(messages, _) => {
                    messages.next().await.map(|m| m.map_err(|e| e.to_string()))
                }
            };
            match next {
                Some(Ok(m)) => {
                    self.ready = Some(m.payload.clone());
                    self.unacked = Some(m);
                }
                // Heartbeats missed, a pull that failed: the stream goes on.
                Some(Err(reason)) => return Err(DriverError::ConnectionLost { reason }),
                None => {
                    return Err(DriverError::ConnectionLost {
                        reason: "the consumer's messages ended".into(),
                    });
                }
            }
        }
    }

    async fn close(self) {
        let js = match self.source {
            Source::Core(mut subscriber) => {
                let _ = subscriber.unsubscribe().await;
                let _ = tokio::time::timeout(REPLY_TIMEOUT, self.client.flush()).await;
                return;
            }
            Source::Pull(_, js) | Source::Push(_, js) => js,
        };
        if let Some(m) = &self.unacked {
            let _ = m.ack().await;
        }
        // The record tells the run's owner this consumer is done.
        let left = self.driver.left_subject(self.plan.id);
        let stored = async {
            js.publish(left, Bytes::new())
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        };
        if let Ok(Err(e)) | Err(e) = tokio::time::timeout(REPLY_TIMEOUT, stored)
            .await
            .map_err(|_| "timed out".to_owned())
        {
            tracing::warn!(run = %self.driver.run, consumer = self.plan.id, error = %e, "could not say this consumer left; the run's owner waits for it");
        }
        let _ = tokio::time::timeout(REPLY_TIMEOUT, self.client.flush()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_typed_url() {
        let run = RunId::new("r1.x").unwrap_or_else(|e| panic!("{e}"));
        let d = NatsDriver::from_url("nats://u:pw@127.0.0.1?jetstream=true&prefix=b", &run)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (
                d.subject(3),
                d.stream_name(),
                d.group(1),
                NatsDriver::durable(3, 1),
                d.left_subject(7)
            ),
            (
                "b.r1.x.3".to_owned(),
                "b-r1_x".to_owned(),
                "b-r1_x-g1".to_owned(),
                "t3-g1".to_owned(),
                "b.r1.x.left.7".to_owned()
            )
        );
        assert_eq!(d.addr, "127.0.0.1:4222");
        assert!(!d.url.contains("pw"), "{}", d.url);
    }
}
