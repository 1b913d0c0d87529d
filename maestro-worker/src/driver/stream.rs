//! RabbitMQ's stream protocol with rabbitmq-stream-client.
//!
//! `rabbitmq-stream[+tls]://[user:pass@]host[:port][/vhost][?options]` (default ports
//! 5552 and 5551), options:
//! - `stream` (stream-name prefix, default `maestro`): topic `i` of a run is the stream
//!   `<stream>.<run-id>.<i>`, created by the first client that needs it (with
//!   `max_length=` as `x-max-length-bytes`) and deleted after the run unless `keep=true`;
//! - `offset`: where consumers start (`first` (default: the run's stream is its own), `last`, `next`, an offset, or a
//!   time); every consumer reads the whole stream (they never compete);
//! - `window` (unconfirmed publishes in flight per producer, default 1000) and
//!   `batch_size` (messages per publish frame, default 100).
//!
//! Every publish is confirmed: the confirm's time is the publish latency. Consumers get
//! credit a chunk at a time (the client's own policy).
//!
//! Each producer and consumer has its own connection; a producer hands the client its
//! messages a frame at a time (`batch_size`), published at once. A consumer is a named consumer, `maestro-<run>-c<i>`: when it leaves it stores
//! its last offset under that name, and the worker that removes the run's streams waits
//! until every consumer of the run has (or [`LEAVE_TIMEOUT`] passed), so that none is cut
//! off while it still drains.
//!
//! With TLS the client reads the URL's `ca` (or trusts any server with `insecure=true`)
//! and one `cert`/`key` for all its connections.

use super::{AckTimes, Consumer, Driver, DriverError, Durations, Producer, SendQueue, Timings};
use super::{TrySendError, sent_ns};
use bytes::Bytes;
use futures_util::StreamExt;
use maestro_protocol::sut::{StreamOffset, StreamOptions};
use maestro_protocol::{ConsumerPlan, ProducerPlan, RunId, SutOptions, SutUrl};
use rabbitmq_stream_client::types::{Message, OffsetSpecification, ResponseCode};
use rabbitmq_stream_client::{Client, ClientOptions, Environment, NoDedup, TlsConfiguration};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
// rabbitmq-stream-client is held at 0.4: from 0.5 it asks the broker for its command
// versions at every connect, which RabbitMQ before 3.11 (Debian's 3.10) does not know.
use tokio::sync::{OnceCell, mpsc};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages a producer may hold before `try_send` reports `Full`.
const QUEUE: usize = 1024;
/// How long a producer waits for a confirm before it counts the connection as lost.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone)]
pub struct StreamDriver {
    /// The URL without password, for messages.
    url: String,
    o: StreamOptions,
    run: RunId,
    /// The run's topics and consumers (to remove its streams once every consumer left).
    topics: u32,
    consumers: u32,
    client: ClientSettings,
    /// The driver's own connection (made when first needed): creates, watches and deletes
    /// the run's streams.
    admin: Arc<OnceCell<Arc<Client>>>,
    /// Connection and publisher or subscription set-up, per client.
    connects: Durations,
}

/// Where and how the clients connect.
#[derive(Clone)]
struct ClientSettings {
    host: String,
    port: u16,
    user: String,
    password: String,
    tls: TlsConfiguration,
}

impl std::fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl StreamDriver {
    /// A driver for `url`, whose options are `o`. Fails when the TLS options cannot be
    /// met by the client (it needs `ca` or `insecure=true`).
    pub fn new(
        url: &SutUrl,
        o: &StreamOptions,
        run: &RunId,
        topics: u32,
        consumers: u32,
    ) -> Result<Self, DriverError> {
        let host = url.host();
        let tls = match &url.tls {
            None => TlsConfiguration::builder().enable(false).build(),
            Some(t) if t.insecure => TlsConfiguration::builder()
                .enable(true)
                .trust_certificates(true)
                .build(),
            Some(t) => {
                let Some(ca) = &t.ca else {
                    return Err(DriverError::Tls {
                        url: url.redacted(),
                        reason: "the stream client needs ca= (the CA of the broker's certificate) or insecure=true".into(),
                    });
                };
                let mut b = TlsConfiguration::builder()
                    .enable(true)
                    .add_root_certificates(ca.clone());
                if let (Some(cert), Some(key)) = (&t.cert, &t.key) {
                    b = b.add_client_certificates_keys(cert.clone(), key.clone());
                }
                b.build()
            }
        };
        let (user, password) = url
            .credentials
            .as_ref()
            .map_or(("guest".into(), "guest".into()), |c| {
                (c.user.clone(), c.password.clone())
            });
        Ok(StreamDriver {
            url: url.redacted(),
            o: o.clone(),
            run: run.clone(),
            topics,
            consumers,
            client: ClientSettings {
                host: host.name.clone(),
                port: host.port,
                user,
                password,
                tls,
            },
            admin: Arc::new(OnceCell::new()),
            connects: Durations::default(),
        })
    }

    /// A driver for a `rabbitmq-stream://` URL (tests and benchmarks).
    pub fn from_url(raw: &str, run: &RunId) -> Result<Self, DriverError> {
        let url = SutUrl::parse(raw)?;
        match &url.options {
            SutOptions::Stream(o) => Self::new(&url, o, run, 1, 1),
            _ => Err(DriverError::WrongScheme {
                url: url.to_string(),
                expected: "a RabbitMQ stream",
            }),
        }
    }

    fn unreachable(&self, reason: impl ToString) -> DriverError {
        DriverError::Unreachable {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    /// Topic `i`'s stream.
    pub fn stream(&self, topic: u32) -> String {
        format!("{}.{}.{topic}", self.o.stream, self.run)
    }

    /// A consumer's name: its offset is stored under it when it leaves.
    fn consumer_name(&self, id: u32) -> String {
        format!("maestro-{}-c{id}", self.run)
    }

    fn options(&self) -> ClientOptions {
        let c = &self.client;
        ClientOptions::builder()
            .host(&c.host)
            .port(c.port)
            .user(&c.user)
            .password(&c.password)
            .v_host(&self.o.vhost)
            .tls(c.tls.clone())
            .build()
    }

    async fn environment(&self) -> Result<Environment, DriverError> {
        let c = &self.client;
        let build = Environment::builder()
            .host(&c.host)
            .port(c.port)
            .username(&c.user)
            .password(&c.password)
            .virtual_host(&self.o.vhost)
            .tls(c.tls.clone())
            .build();
        tokio::time::timeout(CONNECT_TIMEOUT, build)
            .await
            .map_err(|_| {
                self.unreachable(format!("no stream handshake within {CONNECT_TIMEOUT:?}"))
            })?
            .map_err(|e| self.unreachable(e))
    }

    /// The driver's own connection, for creating, watching and deleting streams.
    async fn admin(&self) -> Result<Arc<Client>, DriverError> {
        self.admin
            .get_or_try_init(|| async {
                let connect = Client::connect(self.options());
                tokio::time::timeout(CONNECT_TIMEOUT, connect)
                    .await
                    .map_err(|_| {
                        self.unreachable(format!("no stream handshake within {CONNECT_TIMEOUT:?}"))
                    })?
                    .map(Arc::new)
                    .map_err(|e| self.unreachable(e))
            })
            .await
            .cloned()
    }

    /// Creates topic `topic`'s stream unless it exists.
    async fn ensure_stream(&self, topic: u32) -> Result<String, DriverError> {
        let stream = self.stream(topic);
        let admin = self.admin().await?;
        let mut arguments = HashMap::new();
        if let Some(bytes) = self.o.max_length_bytes {
            arguments.insert("max-length-bytes".to_owned(), bytes.to_string());
        }
        let response = admin
            .create_stream(&stream, arguments)
            .await
            .map_err(|e| self.unreachable(e))?;
        match response.code() {
            ResponseCode::Ok | ResponseCode::StreamAlreadyExists => Ok(stream),
            code => Err(DriverError::Setting {
                url: self.url.clone(),
                reason: format!("cannot create the stream {stream}: {code:?}"),
            }),
        }
    }

    async fn open_producer(
        &self,
        plan: &ProducerPlan,
    ) -> Result<StreamProducerClient, DriverError> {
        let began = Instant::now();
        let stream = self.ensure_stream(plan.topic).await?;
        let env = self.environment().await?;
        let build = env
            .producer()
            .batch_size(self.o.batch_size as usize)
            .build(&stream);
        let producer = tokio::time::timeout(CONNECT_TIMEOUT, build)
            .await
            .map_err(|_| self.unreachable(format!("no publisher within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| self.unreachable(e))?;
        self.connects.record(began.elapsed());
        Ok(producer)
    }

    async fn open_consumer(
        &self,
        plan: &ConsumerPlan,
    ) -> Result<rabbitmq_stream_client::Consumer, DriverError> {
        let began = Instant::now();
        let stream = self.ensure_stream(plan.topic).await?;
        let env = self.environment().await?;
        let name = self.consumer_name(plan.id);
        let build = env
            .consumer()
            .name(&name)
            .offset(offset(self.o.offset))
            .build(&stream);
        let consumer = tokio::time::timeout(CONNECT_TIMEOUT, build)
            .await
            .map_err(|_| self.unreachable(format!("no subscription within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| self.unreachable(e))?;
        self.connects.record(began.elapsed());
        Ok(consumer)
    }

    /// Waits until every consumer of the run stored its offset on leaving (bounded).
    async fn wait_for_consumers(&self, admin: &Client) {
        super::wait_until_left(&self.run, self.consumers, |id| async move {
            for topic in 0..self.topics.max(1) {
                if admin
                    .query_offset(self.consumer_name(id), &self.stream(topic))
                    .await
                    .is_ok()
                {
                    return true;
                }
            }
            false
        })
        .await;
    }
}

impl std::fmt::Debug for StreamDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamDriver")
            .field("url", &self.url)
            .field("o", &self.o)
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

type StreamProducerClient = rabbitmq_stream_client::Producer<NoDedup>;

/// The stream client's offset specification.
fn offset(o: StreamOffset) -> OffsetSpecification {
    if let Some(at) = o.time(SystemTime::now()) {
        let ms = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        return OffsetSpecification::Timestamp(ms);
    }
    match o {
        StreamOffset::First => OffsetSpecification::First,
        StreamOffset::Last => OffsetSpecification::Last,
        StreamOffset::Offset(n) => OffsetSpecification::Offset(n),
        _ => OffsetSpecification::Next,
    }
}

impl Driver for StreamDriver {
    type Producer = StreamProducer;
    type Consumer = StreamConsumer;

    fn timings(&self) -> Timings {
        Timings::of(None, &self.connects, None)
    }

    async fn finish(&self, owner: bool) -> Result<(), DriverError> {
        if !owner || self.o.keep {
            return Ok(());
        }
        let admin = self.admin().await?;
        self.wait_for_consumers(&admin).await;
        let mut failed = Vec::new();
        for topic in 0..self.topics.max(1) {
            let stream = self.stream(topic);
            match admin.delete_stream(&stream).await {
                Ok(r)
                    if matches!(
                        r.code(),
                        ResponseCode::Ok | ResponseCode::StreamDoesNotExist
                    ) => {}
                Ok(r) => failed.push(format!("{stream}: {:?}", r.code())),
                Err(e) => failed.push(format!("{stream}: {e}")),
            }
        }
        let _ = admin.close().await;
        if failed.is_empty() {
            Ok(())
        } else {
            Err(DriverError::Cleanup {
                what: failed.join(", "),
            })
        }
    }

    async fn producer(&self, plan: &ProducerPlan) -> Result<StreamProducer, DriverError> {
        let producer = self.open_producer(plan).await?;
        let (confirms_tx, confirms) = mpsc::unbounded_channel();
        Ok(StreamProducer {
            driver: self.clone(),
            plan: plan.clone(),
            producer: Some(producer),
            queue: SendQueue::new(QUEUE),
            sending: None,
            in_flight: 0,
            confirms_tx,
            confirms,
            acks: AckTimes::default(),
            refused: 0,
        })
    }

    async fn consumer(&self, plan: &ConsumerPlan) -> Result<StreamConsumer, DriverError> {
        let consumer = self.open_consumer(plan).await?;
        Ok(StreamConsumer {
            driver: self.clone(),
            plan: plan.clone(),
            consumer: Some(consumer),
            last_offset: None,
        })
    }
}

/// A confirm: (actual send time, confirm time, whether the broker stored it).
type Confirm = (i64, i64, bool);

/// Publishes under way: handed to the client in order, a batch at a time.
type Sending = Pin<Box<dyn Future<Output = Result<usize, DriverError>> + Send>>;

#[allow(missing_debug_implementations)]
pub struct StreamProducer {
    driver: StreamDriver,
    plan: ProducerPlan,
    producer: Option<StreamProducerClient>,
    /// Messages handed over, not yet given to the client.
    queue: SendQueue,
    /// A batch being given to the client (kept across a cancelled drive).
    sending: Option<Sending>,
    /// Given to the client, not confirmed yet.
    in_flight: usize,
    confirms_tx: mpsc::UnboundedSender<Confirm>,
    confirms: mpsc::UnboundedReceiver<Confirm>,
    acks: AckTimes,
    /// Publishes the broker did not store, since the last report.
    refused: u64,
}

impl StreamProducer {
    /// Counts a confirm.
    fn confirmed(&mut self, (sent, at, stored): Confirm) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if !stored {
            self.refused += 1;
        } else if sent > 0 {
            self.acks.push(sent, at);
        }
    }

    /// Reports the refused publishes counted so far, if any.
    fn refusals(&mut self) -> Result<(), DriverError> {
        match std::mem::take(&mut self.refused) {
            0 => Ok(()),
            failed => Err(DriverError::Rejected(super::Rejection::Refused {
                failed,
                reason: "publish error".into(),
            })),
        }
    }

    /// Gives up on the connection: what was in flight will never be confirmed.
    async fn lost(&mut self, reason: String) -> DriverError {
        self.sending = None;
        self.in_flight = 0;
        if let Some(p) = self.producer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), p.close()).await;
        }
        DriverError::ConnectionLost { reason }
    }
}

impl Producer for StreamProducer {
    #[inline]
    fn try_send(&mut self, payload: Bytes) -> Result<(), TrySendError> {
        self.queue.push(payload)
    }

    #[inline]
    fn room(&self) -> usize {
        self.queue.room()
    }

    async fn drive(&mut self) -> Result<(), DriverError> {
        let Some(producer) = self.producer.as_ref() else {
            let producer = self.driver.open_producer(&self.plan).await?;
            self.producer = Some(producer);
            return Ok(());
        };
        if producer.is_closed() {
            return Err(self.lost("the stream publisher was closed".into()).await);
        }
        // Confirms that came in meanwhile are progress: say so (the engine's drain checks
        // `idle` only when `drive` returns, and there may be nothing left to wait for).
        let mut progressed = false;
        while let Ok(c) = self.confirms.try_recv() {
            self.confirmed(c);
            progressed = true;
        }
        self.refusals()?;
        let room = (self.driver.o.window as usize).saturating_sub(self.in_flight);
        if self.sending.is_none()
            && !self.queue.is_empty()
            && room > 0
            && let Some(producer) = self.producer.clone()
        {
            let batch: Vec<Bytes> = self.queue.take(room).collect();
            self.in_flight += batch.len();
            let tx = self.confirms_tx.clone();
            let batch_size = self.driver.o.batch_size as usize;
            self.sending = Some(Box::pin(async move {
                let n = batch.len();
                for frame in batch.chunks(batch_size) {
                    let messages = frame
                        .iter()
                        .map(|payload| Message::builder().body(payload.to_vec()).build())
                        .collect();
                    let tx = tx.clone();
                    // The confirm carries its message: its header says when it was sent.
                    producer
                        .batch_send(messages, move |r| {
                            let at = crate::engine::tasks::now_ns();
                            let confirm = match r {
                                Ok(c) => (
                                    c.message().data().and_then(sent_ns).unwrap_or(0),
                                    at,
                                    c.confirmed(),
                                ),
                                Err(_) => (0, at, false),
                            };
                            let _ = tx.send(confirm);
                            std::future::ready(())
                        })
                        .await
                        .map_err(|e| DriverError::ConnectionLost {
                            reason: e.to_string(),
                        })?;
                }
                Ok(n)
            }));
        }
        if let Some(sending) = self.sending.as_mut() {
            let done = sending.await;
            self.sending = None;
            return match done {
                Ok(_) => Ok(()),
                Err(e) => Err(self.lost(e.to_string()).await),
            };
        }
        if progressed {
            return Ok(());
        }
        if self.in_flight > 0 {
            return match tokio::time::timeout(CONFIRM_TIMEOUT, self.confirms.recv()).await {
                Ok(Some(c)) => {
                    self.confirmed(c);
                    self.refusals()
                }
                Ok(None) => Err(self.lost("the confirm channel closed".into()).await),
                Err(_) => Err(self
                    .lost(format!(
                        "{} publishes not confirmed within {CONFIRM_TIMEOUT:?}",
                        self.in_flight
                    ))
                    .await),
            };
        }
        std::future::pending().await
    }

    fn idle(&self) -> bool {
        self.queue.is_empty() && self.sending.is_none() && self.in_flight == 0
    }

    fn take_acks(&mut self, f: impl FnMut(i64, i64)) {
        self.acks.take(f);
    }

    fn has_acks(&self) -> bool {
        !self.acks.is_empty()
    }

    fn unreported_errors(&mut self) -> Option<DriverError> {
        while let Ok(c) = self.confirms.try_recv() {
            self.confirmed(c);
        }
        self.refusals().err()
    }

    async fn close(mut self) {
        if let Some(p) = self.producer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), p.close()).await;
        }
    }
}

#[allow(missing_debug_implementations)]
pub struct StreamConsumer {
    driver: StreamDriver,
    plan: ConsumerPlan,
    consumer: Option<rabbitmq_stream_client::Consumer>,
    /// The offset of the last message read.
    last_offset: Option<u64>,
}

impl Consumer for StreamConsumer {
    async fn recv(&mut self) -> Result<Option<Bytes>, DriverError> {
        let Some(consumer) = self.consumer.as_mut() else {
            self.consumer = Some(self.driver.open_consumer(&self.plan).await?);
            return Ok(None);
        };
        match consumer.next().await {
            Some(Ok(delivery)) => {
                self.last_offset = Some(delivery.offset());
                let data = delivery.message().data().unwrap_or_default();
                Ok(Some(Bytes::copy_from_slice(data)))
            }
            Some(Err(e)) => {
                self.consumer = None;
                Err(DriverError::client(e))
            }
            None => {
                self.consumer = None;
                Err(DriverError::ConnectionLost {
                    reason: "the stream subscription was closed".into(),
                })
            }
        }
    }

    async fn close(mut self) {
        if let Some(consumer) = self.consumer.take() {
            // The owner of the run deletes its streams once every consumer said it left.
            let _ = consumer.store_offset(self.last_offset.unwrap_or(0)).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), consumer.handle().close()).await;
        } else if let Ok(admin) = self.driver.admin().await {
            // Lost its connection: it leaves all the same.
            let _ = admin
                .store_offset(
                    &self.driver.consumer_name(self.plan.id),
                    &self.driver.stream(self.plan.topic),
                    self.last_offset.unwrap_or(0),
                )
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_from_the_typed_url() {
        let run = RunId::new("r1").unwrap_or_else(|e| panic!("{e}"));
        let d = StreamDriver::from_url(
            "rabbitmq-stream://u:p@127.0.0.1/%2f?stream=bench&offset=first&window=50&batch_size=10&max_length=2GB",
            &run,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.stream(3), "bench.r1.3");
        assert_eq!(d.consumer_name(2), "maestro-r1-c2");
        assert_eq!((d.client.port, d.client.user.as_str()), (5552, "u"));
        assert_eq!(
            (d.o.window, d.o.batch_size, d.o.max_length_bytes, d.o.offset),
            (50, 10, Some(2_000_000_000), StreamOffset::First)
        );
        assert!(!d.url.contains(":p@"), "{}", d.url);
        let e = StreamDriver::from_url("rabbitmq-stream+tls://h", &run)
            .map(|_| ())
            .unwrap_err();
        assert!(e.to_string().contains("ca="), "{e}");
        assert!(StreamDriver::from_url("rabbitmq-stream+tls://h?insecure=true", &run).is_ok());
        assert!(matches!(
            offset(StreamOffset::Ago(Duration::from_secs(60))),
            OffsetSpecification::Timestamp(ms) if ms > 1_700_000_000_000
        ));
    }
}
