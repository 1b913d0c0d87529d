//! AMQP 0-9-1 with lapin.
//!
//! `amqp[s]://[user:pass@]host[:port][/vhost][?options]`; vhost `%2f` (the default) is `/`.
//! `amqps://` connects with TLS ([`super::tls`]): the driver makes the TCP connection and
//! the handshake itself (timed) and hands the stream to lapin. Each connection is named
//! `maestro-<run>-p<i>` or `-c<i>` (its client id, and the CN of its own certificate with
//! `client_ca=`).
//! Options:
//! - `exchange` (default: the default exchange, routing by queue name), `exchange_type`
//!   (direct, fanout, topic, headers; default direct), `routing_key` (default: the topic);
//! - `queue` (queue-name prefix, default `maestro`), `durable` (default false),
//!   `persistent` (delivery mode 2, default false);
//! - `confirms` (publisher confirms, default false), `confirm_window` (unconfirmed
//!   publishes in flight, default 1000), `mandatory` (default false);
//! - `prefetch` (default 1000), `ack` (`auto` or `manual`, default auto), `ack_batch`
//!   (manual acks: one `multiple` ack per this many deliveries, default 100);
//! - `fanout` (each consumer gets its own queue bound to the exchange, so every consumer
//!   gets every message; default false: one queue per topic, consumers compete);
//! - `keep` (keep the exchange and queues after the run; default false: delete them);
//! - `queue_type` (`classic`, `quorum` or `stream`, declared with `x-queue-type`; quorum
//!   and stream queues are durable), `stream_offset` (a stream consumer's
//!   `x-stream-offset`: first, last, next, an offset or a time; default first: the run's stream is its own). A stream's
//!   consumers acknowledge manually and each reads the whole stream (they do not compete).
//!
//! Topic `i` of a run is queue `<queue>.<run-id>.<i>` (or routing key `<run-id>.<i>`
//! on a named exchange).

use super::tls::TlsClient;
use super::{
    AckTimes, Consumer, Driver, DriverError, Durations, LEAVE_TIMEOUT, Producer, SendQueue,
    Timings, TrySendError, sent_ns,
};
use bytes::Bytes;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use maestro_protocol::sut::{AckMode, AmqpOptions, ExchangeType, QueueType, StreamOffset};
use maestro_protocol::{ConsumerPlan, ProducerPlan, RunId, SutOptions, SutUrl};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// A batch of publishes under way. Kept in the producer so that a `drive` cancelled
/// half-way resumes it instead of publishing the batch again.
/// A batch being published: each publish's outcome with the message's actual send time.
type Publishing =
    Pin<Box<dyn Future<Output = Vec<(lapin::Result<lapin::PublisherConfirm>, i64)>> + Send>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages a producer may hold before `try_send` reports `Full`.
const QUEUE: usize = 1024;

#[derive(Debug, Clone)]
pub struct AmqpDriver {
    /// The URL for lapin (no query).
    connect_url: String,
    /// The URL without password, for messages.
    url: String,
    run: RunId,
    /// The exchange producers publish to (the run's own with `fanout=true` and none named).
    exchange: String,
    exchange_kind: ExchangeKind,
    /// The URL's options, as parsed.
    o: AmqpOptions,
    /// The run's topics (the owner deletes a run's streams once their readers left).
    topics: u32,
    /// Queues per topic, each shared by its consumers and getting every message
    /// ([`maestro_protocol::TestSpec::subscriptions`]).
    subscriptions: u32,
    /// TLS (`amqps://`), built once for all connections of the run.
    tls: Option<Arc<TlsClient>>,
    /// Time to an open connection and channel, of this run's connections.
    connects: Durations,
    /// Set when the run crosses protocols: the broker's routing for this side.
    route: Option<Route>,
}

/// How a run that crosses protocols routes this side's messages through the broker's own
/// mapping ([`maestro_protocol::sut::Crossing`]).
#[derive(Debug, Clone)]
pub struct Route {
    /// The broker's exchange (`""`: the default exchange), never declared or deleted.
    pub exchange: String,
    /// Topic `i`'s routing key.
    pub keys: Arc<[String]>,
    /// This side consumes: each topic's queue is declared and bound to the exchange; a
    /// producing side declares nothing (the other protocol's consumers hold the messages).
    pub consumes: bool,
}

impl AmqpDriver {
    /// A driver for `url`, whose options are `o` (parsed once, in [`SutUrl`]), for a run of
    /// `topics` with `subscriptions` queues each. Fails when the TLS files cannot be read.
    pub fn new(
        url: &SutUrl,
        o: &AmqpOptions,
        run: &RunId,
        (topics, subscriptions): (u32, u32),
    ) -> Result<Self, DriverError> {
        // Several queues of a topic (a consumer's own, or a subscription's) need an
        // exchange to copy its messages to each: the run's own when none is named.
        let exchange = if (o.fanout || subscriptions > 1) && o.exchange.is_empty() {
            format!("maestro.{run}")
        } else {
            o.exchange.clone()
        };
        let tls = TlsClient::for_url(url)?;
        Ok(AmqpDriver {
            connect_url: url.without_options().to_owned(),
            url: url.redacted(),
            run: run.clone(),
            exchange,
            exchange_kind: match o.exchange_type {
                ExchangeType::Direct => ExchangeKind::Direct,
                ExchangeType::Fanout => ExchangeKind::Fanout,
                ExchangeType::Topic => ExchangeKind::Topic,
                ExchangeType::Headers => ExchangeKind::Headers,
            },
            o: o.clone(),
            topics,
            subscriptions: subscriptions.max(1),
            tls,
            connects: Durations::default(),
            route: None,
        })
    }

    /// This driver routed through the broker's mapping to or from another protocol.
    pub fn routed(mut self, route: Route) -> Self {
        self.exchange = route.exchange.clone();
        self.route = Some(route);
        self
    }

    /// A driver for an AMQP URL (tests and benchmarks).
    pub fn from_url(raw: &str, run: &RunId) -> Result<Self, DriverError> {
        let url = SutUrl::parse(raw)?;
        match &url.options {
            SutOptions::Amqp(o) => Self::new(&url, o, run, (1, 1)),
            _ => Err(DriverError::WrongScheme {
                url: url.to_string(),
                expected: "an AMQP",
            }),
        }
    }

    /// Consumers of one topic compete unless each has its own queue.
    pub fn consumers_compete(&self) -> bool {
        self.o.consumers_compete()
    }

    fn routing_key(&self, topic: u32) -> String {
        if let Some(r) = &self.route {
            return r.keys[topic as usize % r.keys.len().max(1)].clone();
        }
        match (&self.o.routing_key, self.exchange.is_empty()) {
            (Some(k), _) => k.clone(),
            (None, true) => self.topic_queue(topic),
            (None, false) => format!("{}.{topic}", self.run),
        }
    }

    /// The queue of a topic's first subscription: `<queue>.<run>.<topic>`.
    fn topic_queue(&self, topic: u32) -> String {
        format!("{}.{}.{topic}", self.o.queue, self.run)
    }

    /// A topic's queues, one per subscription: the first is [`Self::topic_queue`], the
    /// others `<queue>.<run>.<topic>.s<index>`.
    fn topic_queues(&self, topic: u32) -> impl Iterator<Item = String> + '_ {
        (0..self.subscriptions).map(move |s| self.subscription_queue(topic, s))
    }

    fn subscription_queue(&self, topic: u32, index: u32) -> String {
        match index {
            0 => self.topic_queue(topic),
            s => format!("{}.s{s}", self.topic_queue(topic)),
        }
    }

    fn consumer_queue(&self, plan: &ConsumerPlan) -> String {
        if self.o.fanout {
            format!("{}.{}.{}.c{}", self.o.queue, self.run, plan.topic, plan.id)
        } else {
            // Competing consumers' subscriptions go topic first
            // ([`maestro_protocol::TestSpec::subscription`]); a stream's readers all read
            // the topic's one queue.
            let index = if self.o.consumers_compete() {
                plan.subscription / self.topics.max(1)
            } else {
                0
            };
            self.subscription_queue(plan.topic, index)
        }
    }

    /// True when the topics' queues are deleted by the run's owner at the end, not by
    /// their last consumer: quorum queues and streams shared by a topic's consumers.
    fn owner_deletes_queues(&self) -> bool {
        !self.o.fanout && self.o.queue_type != QueueType::Classic
    }

    fn unreachable(&self, reason: impl ToString) -> DriverError {
        DriverError::Unreachable {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    /// Connects over TLS: TCP, then the handshake (timed), then AMQP over that stream.
    async fn connect_tls(
        &self,
        tls: &TlsClient,
        client: &str,
        properties: ConnectionProperties,
    ) -> Result<Connection, DriverError> {
        let uri: lapin::uri::AMQPUri = self
            .connect_url
            .parse()
            .map_err(|e: String| self.unreachable(e))?;
        let config = tls.config_for(client).map_err(|e| DriverError::Tls {
            url: self.url.clone(),
            reason: e.to_string(),
        })?;
        let connector = lapin::tcp::RustlsConnector::from(config);
        let server_name = tls.server_name.clone();
        let handshakes = tls.handshakes.clone();
        let runtime = lapin::runtime::default_runtime().map_err(|e| self.unreachable(e))?;
        Connection::connector(
            uri,
            runtime,
            async move |uri, runtime| {
                let addrs: Vec<std::net::SocketAddr> =
                    tokio::net::lookup_host((uri.authority.host.as_str(), uri.authority.port))
                        .await?
                        .collect();
                let tcp = lapin::tcp::AsyncTcpStream::connect(&runtime, addrs).await?;
                let began = Instant::now();
                let stream = tcp.into_rustls(&connector, &server_name).await?;
                handshakes.record(began.elapsed());
                Ok(stream)
            },
            properties,
        )
        .await
        .map_err(|e| self.unreachable(super::tls::explain(&e)))
    }

    async fn channel(&self, client: &str) -> Result<(Connection, Channel), DriverError> {
        let began = Instant::now();
        let connect = async {
            let properties = ConnectionProperties::default().with_connection_name(client.into());
            let conn = match &self.tls {
                Some(tls) => self.connect_tls(tls, client, properties).await?,
                None => Connection::connect(&self.connect_url, properties)
                    .await
                    .map_err(|e| self.unreachable(e))?,
            };
            let channel = conn
                .create_channel()
                .await
                .map_err(|e| self.unreachable(e))?;
            Ok::<_, DriverError>((conn, channel))
        };
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| {
                self.unreachable(format!("no AMQP handshake within {CONNECT_TIMEOUT:?}"))
            })??;
        self.connects.record(began.elapsed());
        Ok(opened)
    }

    /// Declares the exchange (if named) and, for the queue-per-topic layout, the topic's
    /// queue, so messages published before a consumer starts are kept.
    async fn declare(&self, channel: &Channel, topic: u32) -> Result<(), DriverError> {
        let sut = |e: lapin::Error| self.unreachable(e);
        if let Some(route) = &self.route {
            if !route.consumes {
                return Ok(());
            }
            // (a routed driver's exchange is the route's)
            return self.declare_topic_queues(channel, topic, true).await;
        }
        if !self.exchange.is_empty() {
            channel
                .exchange_declare(
                    self.exchange.as_str().into(),
                    self.exchange_kind.clone(),
                    ExchangeDeclareOptions {
                        durable: self.o.durable,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(sut)?;
        }
        if !self.o.fanout {
            self.declare_topic_queues(channel, topic, !self.exchange.is_empty())
                .await?;
        }
        Ok(())
    }

    /// Declares a topic's queues, one per subscription, each bound to the exchange with
    /// the topic's routing key when `bind`.
    async fn declare_topic_queues(
        &self,
        channel: &Channel,
        topic: u32,
        bind: bool,
    ) -> Result<(), DriverError> {
        for queue in self.topic_queues(topic) {
            self.declare_queue(channel, &queue).await?;
            if bind {
                channel
                    .queue_bind(
                        queue.as_str().into(),
                        self.exchange.as_str().into(),
                        self.routing_key(topic).as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| self.unreachable(e))?;
            }
        }
        Ok(())
    }

    async fn declare_queue(&self, channel: &Channel, queue: &str) -> Result<(), DriverError> {
        let mut arguments = FieldTable::default();
        if self.o.queue_type != QueueType::Classic {
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString(self.o.queue_type.as_str().into()),
            );
        }
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: self.o.durable,
                    ..Default::default()
                },
                arguments,
            )
            .await
            .map(|_| ())
            .map_err(|e| self.unreachable(e))
    }

    /// Deletes the run's exchange, if it has one and nothing uses it any more (the last
    /// producer or consumer to leave succeeds; the others are refused, harmlessly).
    async fn delete_exchange(&self, channel: &Channel) {
        if self.exchange.is_empty() || self.route.is_some() {
            return;
        }
        let options = ExchangeDeleteOptions {
            if_unused: true,
            ..Default::default()
        };
        let _ = channel
            .exchange_delete(self.exchange.as_str().into(), options)
            .await;
    }

    /// Runs `open` again (twice at most) when it fails for a quorum queue or a stream:
    /// RabbitMQ 3.10 sometimes fails concurrent declares of one new quorum queue with
    /// INTERNAL_ERROR (closing the connection), and a topic's clients declare it at once.
    async fn retried<T, F: Future<Output = Result<T, DriverError>>>(
        &self,
        mut open: impl FnMut() -> F,
    ) -> Result<T, DriverError> {
        let mut attempt = 0;
        loop {
            match open().await {
                Err(e) if self.o.queue_type != QueueType::Classic && attempt < 2 => {
                    attempt += 1;
                    tracing::debug!(run = %self.run, error = %e, attempt, "declaring again");
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                done => return done,
            }
        }
    }

    async fn open_producer(
        &self,
        plan: &ProducerPlan,
    ) -> Result<(Connection, Channel), DriverError> {
        self.retried(|| self.open_producer_once(plan)).await
    }

    async fn open_consumer(
        &self,
        plan: &ConsumerPlan,
    ) -> Result<(Connection, Channel, lapin::Consumer), DriverError> {
        self.retried(|| self.open_consumer_once(plan)).await
    }

    async fn open_producer_once(
        &self,
        plan: &ProducerPlan,
    ) -> Result<(Connection, Channel), DriverError> {
        let (conn, channel) = self
            .channel(&format!("maestro-{}-p{}", self.run, plan.id))
            .await?;
        self.declare(&channel, plan.topic).await?;
        if self.o.confirms {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| self.unreachable(e))?;
        }
        Ok((conn, channel))
    }

    async fn open_consumer_once(
        &self,
        plan: &ConsumerPlan,
    ) -> Result<(Connection, Channel, lapin::Consumer), DriverError> {
        let (conn, channel) = self
            .channel(&format!("maestro-{}-c{}", self.run, plan.id))
            .await?;
        let sut = |e: lapin::Error| self.unreachable(e);
        self.declare(&channel, plan.topic).await?;
        let queue = self.consumer_queue(plan);
        if self.o.fanout {
            self.declare_queue(&channel, &queue).await?;
            channel
                .queue_bind(
                    queue.as_str().into(),
                    self.exchange.as_str().into(),
                    self.routing_key(plan.topic).as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(sut)?;
        }
        channel
            .basic_qos(self.o.prefetch, BasicQosOptions::default())
            .await
            .map_err(sut)?;
        let mut arguments = FieldTable::default();
        if self.o.queue_type == QueueType::Stream {
            arguments.insert(
                "x-stream-offset".into(),
                stream_offset(self.o.stream_offset),
            );
        }
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                format!("maestro-{}-c{}", self.run, plan.id).as_str().into(),
                BasicConsumeOptions {
                    no_ack: self.o.ack == AckMode::Auto,
                    ..Default::default()
                },
                arguments,
            )
            .await
            .map_err(sut)?;
        Ok((conn, channel, consumer))
    }
}

/// A stream consumer's `x-stream-offset` argument.
fn stream_offset(offset: StreamOffset) -> AMQPValue {
    if let Some(at) = offset.time(SystemTime::now()) {
        let seconds = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        return AMQPValue::Timestamp(seconds);
    }
    match offset {
        StreamOffset::First => AMQPValue::LongString("first".into()),
        StreamOffset::Last => AMQPValue::LongString("last".into()),
        StreamOffset::Offset(n) => AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX)),
        _ => AMQPValue::LongString("next".into()),
    }
}

impl Driver for AmqpDriver {
    type Producer = AmqpProducer;
    type Consumer = AmqpConsumer;

    fn timings(&self) -> Timings {
        Timings::of(self.tls.as_deref(), &self.connects, None)
    }

    /// The owner deletes the topics' quorum queues and streams once no consumer reads them
    /// (30 s at most); classic queues go with their last consumer.
    async fn finish(&self, owner: bool) -> Result<(), DriverError> {
        let declared = self.route.as_ref().is_none_or(|r| r.consumes);
        if !owner || self.o.keep || !self.owner_deletes_queues() || !declared {
            return Ok(());
        }
        let (conn, channel) = self.channel(&format!("maestro-{}-admin", self.run)).await?;
        let deadline = tokio::time::Instant::now() + LEAVE_TIMEOUT;
        let mut failed = Vec::new();
        let queues: Vec<String> = (0..self.topics.max(1))
            .flat_map(|topic| self.topic_queues(topic))
            .collect();
        for queue in queues {
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            loop {
                match channel
                    .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                    .await
                {
                    Ok(q) if q.consumer_count() > 0 && tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    _ => break,
                }
            }
            if let Err(e) = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
            {
                failed.push(format!("{queue}: {e}"));
            }
        }
        self.delete_exchange(&channel).await;
        let _ = conn.close(200, "maestro run done".into()).await;
        if failed.is_empty() {
            Ok(())
        } else {
            Err(DriverError::Cleanup {
                what: failed.join(", "),
            })
        }
    }

    async fn producer(&self, plan: &ProducerPlan) -> Result<AmqpProducer, DriverError> {
        let (conn, channel) = self.open_producer(plan).await?;
        Ok(AmqpProducer {
            driver: self.clone(),
            plan: plan.clone(),
            conn: Some(conn),
            channel: Some(channel),
            exchange: self.exchange.clone(),
            routing_key: self.routing_key(plan.topic),
            properties: if self.o.persistent {
                BasicProperties::default().with_delivery_mode(2)
            } else {
                BasicProperties::default()
            },
            queue: SendQueue::new(QUEUE),
            publishing: None,
            confirms: VecDeque::new(),
            acks: AckTimes::default(),
        })
    }

    async fn consumer(&self, plan: &ConsumerPlan) -> Result<AmqpConsumer, DriverError> {
        let (conn, channel, consumer) = self.open_consumer(plan).await?;
        Ok(AmqpConsumer {
            driver: self.clone(),
            plan: plan.clone(),
            conn: Some(conn),
            channel: Some(channel),
            consumer: Some(consumer),
            unacked: 0,
            last: None,
        })
    }
}

#[allow(missing_debug_implementations)]
pub struct AmqpProducer {
    driver: AmqpDriver,
    plan: ProducerPlan,
    conn: Option<Connection>,
    channel: Option<Channel>,
    exchange: String,
    routing_key: String,
    properties: BasicProperties,
    /// Messages handed over, not yet published.
    queue: SendQueue,
    publishing: Option<Publishing>,
    /// Publishes waiting for their confirm (confirm mode only), with their send times.
    confirms: VecDeque<(lapin::PublisherConfirm, i64)>,
    acks: AckTimes,
}

impl AmqpProducer {
    async fn reconnect(&mut self) -> Result<(), DriverError> {
        self.channel = None;
        self.conn = None;
        let (conn, channel) = self.driver.open_producer(&self.plan).await?;
        self.conn = Some(conn);
        self.channel = Some(channel);
        Ok(())
    }
}

impl AmqpProducer {
    /// A publish's confirm came in (or failed).
    fn confirmed(
        &mut self,
        outcome: lapin::Result<lapin::Confirmation>,
        sent: i64,
    ) -> Result<(), DriverError> {
        match outcome {
            Ok(c) if c.is_nack() => Err(DriverError::Rejected(super::Rejection::Nack)),
            Ok(c) => match c.take_message() {
                Some(_) => Err(DriverError::Rejected(super::Rejection::Unroutable)),
                None => {
                    if sent > 0 {
                        self.acks.push(sent, crate::engine::tasks::now_ns());
                    }
                    Ok(())
                }
            },
            Err(e) => Err(DriverError::client(e)),
        }
    }
}

impl Producer for AmqpProducer {
    #[inline]
    fn try_send(&mut self, payload: Bytes) -> Result<(), TrySendError> {
        self.queue.push(payload)
    }

    #[inline]
    fn room(&self) -> usize {
        self.queue.room()
    }

    async fn drive(&mut self) -> Result<(), DriverError> {
        let Some(channel) = self.channel.as_ref().filter(|c| c.status().connected()) else {
            // Lost the channel (queue deleted, connection closed, broker restarted).
            self.confirms.clear();
            self.publishing = None;
            self.reconnect().await?;
            return Err(DriverError::ChannelReopened);
        };
        let confirms = self.driver.o.confirms;
        let room = if confirms {
            (self.driver.o.confirm_window as usize).saturating_sub(self.confirms.len())
        } else {
            usize::MAX
        };
        if self.publishing.is_none() && !self.queue.is_empty() && room > 0 {
            let batch: Vec<Bytes> = self.queue.take(room).collect();
            let (channel, exchange, key) = (
                channel.clone(),
                self.exchange.clone(),
                self.routing_key.clone(),
            );
            let (properties, mandatory) = (self.properties.clone(), self.driver.o.mandatory);
            self.publishing = Some(Box::pin(async move {
                let mut out = Vec::with_capacity(batch.len());
                for payload in &batch {
                    let options = BasicPublishOptions {
                        mandatory,
                        ..Default::default()
                    };
                    let published = channel
                        .basic_publish(
                            exchange.as_str().into(),
                            key.as_str().into(),
                            options,
                            payload,
                            properties.clone(),
                        )
                        .await;
                    out.push((published, sent_ns(payload).unwrap_or(0)));
                }
                out
            }));
        }
        if let Some(publishing) = self.publishing.as_mut() {
            let results = publishing.await;
            self.publishing = None;
            let mut failure = None;
            for (r, sent) in results {
                match r {
                    Ok(confirm) if confirms => self.confirms.push_back((confirm, sent)),
                    Ok(_) => {}
                    Err(e) => failure = Some(DriverError::client(e)),
                }
            }
            return failure.map_or(Ok(()), Err);
        }
        if let Some((confirm, sent)) = self.confirms.front_mut() {
            // Awaited in place: a cancelled drive leaves it queued.
            let outcome = Pin::new(confirm).await;
            let sent = *sent;
            self.confirms.pop_front();
            return self.confirmed(outcome, sent);
        }
        std::future::pending().await
    }

    fn idle(&self) -> bool {
        self.queue.is_empty() && self.publishing.is_none() && self.confirms.is_empty()
    }

    fn take_acks(&mut self, f: impl FnMut(i64, i64)) {
        self.acks.take(f);
    }

    fn has_acks(&self) -> bool {
        !self.acks.is_empty()
    }

    async fn close(mut self) {
        if let Some(channel) = self.channel.take()
            && !self.driver.o.keep
        {
            self.driver.delete_exchange(&channel).await;
        }
        if let Some(conn) = self.conn.take() {
            let _ = conn.close(200, "maestro run done".into()).await;
        }
    }
}

#[allow(missing_debug_implementations)]
pub struct AmqpConsumer {
    driver: AmqpDriver,
    plan: ConsumerPlan,
    conn: Option<Connection>,
    channel: Option<Channel>,
    consumer: Option<lapin::Consumer>,
    /// Manual acks: deliveries not acknowledged yet, and the last one's acker.
    unacked: u32,
    last: Option<lapin::Acker>,
}

impl AmqpConsumer {
    /// Acknowledges every delivery so far (one `multiple` ack). Cancel-safe: the acker is
    /// kept until the ack completes, and lapin queues the ack before its first await and
    /// refuses to send it twice (a retried ack of a used acker is a no-op).
    async fn ack_pending(&mut self) {
        if let Some(acker) = self.last.as_ref() {
            let _ = acker.ack(BasicAckOptions { multiple: true }).await;
        }
        self.last = None;
        self.unacked = 0;
    }
}

impl Consumer for AmqpConsumer {
    async fn recv(&mut self) -> Result<Option<Bytes>, DriverError> {
        if self.consumer.is_none() {
            let (conn, channel, consumer) = self.driver.open_consumer(&self.plan).await?;
            self.conn = Some(conn);
            self.channel = Some(channel);
            self.consumer = Some(consumer);
            self.unacked = 0;
            self.last = None;
            return Ok(None);
        }
        // A full ack batch is acknowledged before the next delivery is taken, never
        // between taking a delivery and returning it: the engine may cancel `recv` (at a
        // stop), and a delivery taken but not returned would be neither counted nor lost.
        // (It was: a reliable run once received 111,903 of 111,904 messages.)
        if self.unacked >= self.driver.o.ack_batch {
            self.ack_pending().await;
        }
        let Some(consumer) = self.consumer.as_mut() else {
            return Ok(None);
        };
        match consumer.next().await {
            Some(Ok(delivery)) => {
                if self.driver.o.ack == AckMode::Manual {
                    self.unacked += 1;
                    self.last = Some(delivery.acker);
                }
                Ok(Some(Bytes::from(delivery.data)))
            }
            Some(Err(e)) => {
                self.consumer = None;
                Err(DriverError::client(e))
            }
            None => {
                // Cancelled by the broker (queue deleted) or the channel closed.
                self.consumer = None;
                Err(DriverError::ConsumerCancelled)
            }
        }
    }

    async fn close(mut self) {
        self.ack_pending().await;
        // Detach first, so the last consumer of a shared queue finds it unused.
        if let (Some(channel), Some(consumer)) = (self.channel.as_ref(), self.consumer.take()) {
            let _ = channel
                .basic_cancel(
                    consumer.tag(),
                    lapin::options::BasicCancelOptions::default(),
                )
                .await;
        }
        // A topic's quorum queue or stream is deleted by the run's owner once nobody
        // reads it (`finish`): RabbitMQ 3.10 refuses `if_unused` deletes of them, and a
        // stream is read by every consumer to its end.
        if let Some(channel) = self.channel.take()
            && !self.driver.o.keep
            && !self.driver.owner_deletes_queues()
        {
            let queue = self.driver.consumer_queue(&self.plan);
            // Only the last consumer of a shared queue deletes it (if_unused).
            let _ = channel
                .queue_delete(
                    queue.as_str().into(),
                    QueueDeleteOptions {
                        if_unused: !self.driver.o.fanout,
                        ..Default::default()
                    },
                )
                .await;
            // Whoever leaves last (producer or consumer) removes the exchange; the delete
            // above may have closed that channel, so use a fresh one.
            if let Some(conn) = self.conn.as_ref()
                && let Ok(channel) = conn.create_channel().await
            {
                self.driver.delete_exchange(&channel).await;
            }
        }
        if let Some(conn) = self.conn.take() {
            let _ = conn.close(200, "maestro run done".into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> RunId {
        RunId::new("r1").unwrap()
    }

    #[test]
    fn options_from_the_typed_url() {
        let d = AmqpDriver::from_url(
            "amqp://u:p@127.0.0.1:5672/%2f?exchange=ex&exchange_type=topic&durable=true&persistent=true&confirms=true&confirm_window=50&prefetch=10&ack=manual&ack_batch=5&mandatory=true",
            &run(),
        )
        .unwrap();
        assert_eq!(d.connect_url, "amqp://u:p@127.0.0.1:5672/%2f");
        assert_eq!(
            d.url,
            "amqp://u:***@127.0.0.1:5672/%2f?exchange=ex&exchange_type=topic&durable=true&persistent=true&confirms=true&confirm_window=50&prefetch=10&ack=manual&ack_batch=5&mandatory=true"
        );
        assert!(d.o.durable && d.o.persistent && d.o.confirms && d.o.mandatory);
        assert_eq!(
            (d.o.confirm_window, d.o.prefetch, d.o.ack, d.o.ack_batch),
            (50, 10, AckMode::Manual, 5)
        );
        assert_eq!(d.routing_key(3), "r1.3");
        let small = AmqpDriver::from_url("amqp://h?prefetch=50&ack=manual", &run()).unwrap();
        assert_eq!(small.o.ack_batch, 25, "acks come before the prefetch limit");
        assert!(d.consumers_compete());
        let plain = AmqpDriver::from_url("amqp://h", &run()).unwrap();
        assert_eq!(plain.routing_key(2), "maestro.r1.2");
        let fan = AmqpDriver::from_url("amqp://h?fanout=true", &run()).unwrap();
        assert!(!fan.consumers_compete());
        assert_eq!(fan.exchange, "maestro.r1");
    }
}
