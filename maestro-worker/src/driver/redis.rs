//! Redis with the redis crate: pub/sub and Streams.
//!
//! `redis://[user:pass@]host[:port][/db][?options]`, options:
//! - `mode=pubsub` (default): producers PUBLISH to the channel `<prefix>.<run-id>.<i>`,
//!   every consumer SUBSCRIBEs to it and gets every message; Redis keeps nothing for a
//!   subscriber that is not connected, and the PUBLISH reply is the publish latency;
//! - `mode=streams`: producers XADD to the stream key `<prefix>.<run-id>.<i>` (`maxlen=`:
//!   `MAXLEN ~ n`), and the reply (the entry's id) is the publish latency; a topic's
//!   consumers form a consumer group (`<prefix>.<run-id>.g<subscription>`, reading the
//!   stream from its start) and compete: XREADGROUP `count` entries at a
//!   time, acknowledged with XACK before the next read;
//! - `window`: commands in flight per producer (pipelined), `keep`: keep the run's stream
//!   keys afterwards (Streams; the worker with producer 0 deletes them once every consumer
//!   has left its group, 30 s at most).
//!
//! Each producer and consumer has its own connection. A message is one field `d` of a
//! stream entry, or a pub/sub message's payload.

use super::{
    AckTimes, Consumer, Driver, DriverError, Durations, LEAVE_TIMEOUT, Producer, SendQueue, Timings,
};
use super::{TrySendError, sent_ns};
use bytes::Bytes;
use futures_util::StreamExt;
use maestro_protocol::sut::{RedisMode, RedisOptions};
use maestro_protocol::{ConsumerPlan, ProducerPlan, RunId, SutOptions, SutUrl};
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages a producer may hold before `try_send` reports `Full`.
const QUEUE: usize = 1024;
/// How long a producer waits for its pipeline's replies before it counts the connection
/// as lost.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a streams consumer blocks in one XREADGROUP.
const BLOCK_MS: usize = 1000;

#[derive(Clone)]
pub struct RedisDriver {
    /// The URL without password, for messages.
    url: String,
    client: redis::Client,
    o: RedisOptions,
    run: RunId,
    topics: u32,
    connects: Durations,
}

impl std::fmt::Debug for RedisDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDriver")
            .field("url", &self.url)
            .field("o", &self.o)
            .finish_non_exhaustive()
    }
}

impl RedisDriver {
    pub fn new(
        url: &SutUrl,
        o: &RedisOptions,
        run: &RunId,
        topics: u32,
    ) -> Result<Self, DriverError> {
        let host = url.host();
        let mut info = redis::ConnectionInfo {
            addr: redis::ConnectionAddr::Tcp(host.name.clone(), host.port),
            redis: redis::RedisConnectionInfo {
                db: i64::from(o.db),
                ..Default::default()
            },
        };
        if let Some(c) = &url.credentials {
            info.redis.username = (!c.user.is_empty()).then(|| c.user.clone());
            info.redis.password = Some(c.password.clone());
        }
        let client = redis::Client::open(info).map_err(|e| DriverError::Setting {
            url: url.redacted(),
            reason: e.to_string(),
        })?;
        Ok(RedisDriver {
            url: url.redacted(),
            client,
            o: o.clone(),
            run: run.clone(),
            topics,
            connects: Durations::default(),
        })
    }

    /// A driver for a `redis://` URL (tests and benchmarks).
    pub fn from_url(raw: &str, run: &RunId) -> Result<Self, DriverError> {
        let url = SutUrl::parse(raw)?;
        match &url.options {
            SutOptions::Redis(o) => Self::new(&url, o, run, 1),
            _ => Err(DriverError::WrongScheme {
                url: url.to_string(),
                expected: "a Redis",
            }),
        }
    }

    fn unreachable(&self, reason: impl ToString) -> DriverError {
        DriverError::Unreachable {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    /// Topic `i`'s channel or stream key.
    fn key(&self, topic: u32) -> String {
        format!("{}.{}.{topic}", self.o.prefix, self.run)
    }

    /// A subscription's consumer group (Streams).
    fn group(&self, subscription: u32) -> String {
        format!("{}.{}.g{subscription}", self.o.prefix, self.run)
    }

    async fn connect(&self) -> Result<MultiplexedConnection, DriverError> {
        let began = Instant::now();
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| self.unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| self.unreachable(e))?;
        self.connects.record(began.elapsed());
        Ok(conn)
    }

    /// Creates a subscription's group (and the stream) unless it exists, reading from the
    /// stream's start: the key is the run's own.
    async fn ensure_group(
        &self,
        conn: &mut MultiplexedConnection,
        topic: u32,
        subscription: u32,
    ) -> Result<(), DriverError> {
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.key(topic))
            .arg(self.group(subscription))
            .arg("0")
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(self.unreachable(e)),
        }
    }

    async fn open_consumer(&self, plan: &ConsumerPlan) -> Result<Subscription, DriverError> {
        match self.o.mode {
            RedisMode::PubSub => {
                let began = Instant::now();
                let mut pubsub =
                    tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub())
                        .await
                        .map_err(|_| {
                            self.unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))
                        })?
                        .map_err(|e| self.unreachable(e))?;
                pubsub
                    .subscribe(self.key(plan.topic))
                    .await
                    .map_err(|e| self.unreachable(e))?;
                self.connects.record(began.elapsed());
                Ok(Subscription::PubSub(pubsub.into_on_message()))
            }
            RedisMode::Streams => {
                let mut conn = self.connect().await?;
                self.ensure_group(&mut conn, plan.topic, plan.subscription)
                    .await?;
                Ok(Subscription::Group(conn))
            }
        }
    }

    /// Waits until no consumer of the run is left in its topics' groups (bounded).
    async fn wait_for_consumers(&self, conn: &mut MultiplexedConnection) {
        let deadline = tokio::time::Instant::now() + LEAVE_TIMEOUT;
        loop {
            let mut left = 0u64;
            for topic in 0..self.topics.max(1) {
                let groups: redis::RedisResult<Vec<redis::Value>> = redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(self.key(topic))
                    .query_async(conn)
                    .await;
                for g in groups.unwrap_or_default() {
                    if let Ok(map) = redis::from_redis_value::<
                        std::collections::HashMap<String, redis::Value>,
                    >(&g)
                        && let Some(n) = map.get("consumers")
                    {
                        left += redis::from_redis_value::<u64>(n).unwrap_or(0);
                    }
                }
            }
            if left == 0 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(run = %self.run, left, "consumers still in the run's groups after {LEAVE_TIMEOUT:?}: deleting the streams anyway");
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Driver for RedisDriver {
    type Producer = RedisProducer;
    type Consumer = RedisConsumer;

    fn timings(&self) -> Timings {
        Timings::of(None, &self.connects, None)
    }

    async fn finish(&self, owner: bool) -> Result<(), DriverError> {
        if !owner || self.o.keep || self.o.mode != RedisMode::Streams {
            return Ok(());
        }
        let mut conn = self.connect().await?;
        self.wait_for_consumers(&mut conn).await;
        let keys: Vec<String> = (0..self.topics.max(1)).map(|t| self.key(t)).collect();
        redis::cmd("DEL")
            .arg(&keys)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| DriverError::Cleanup {
                what: format!("{}: {e}", keys.join(", ")),
            })
    }

    async fn producer(&self, plan: &ProducerPlan) -> Result<RedisProducer, DriverError> {
        let conn = self.connect().await?;
        Ok(RedisProducer {
            driver: self.clone(),
            key: self.key(plan.topic),
            conn: Some(conn),
            queue: SendQueue::new(QUEUE),
            pending: None,
            acks: AckTimes::default(),
        })
    }

    async fn consumer(&self, plan: &ConsumerPlan) -> Result<RedisConsumer, DriverError> {
        let subscription = self.open_consumer(plan).await?;
        Ok(RedisConsumer {
            driver: self.clone(),
            plan: plan.clone(),
            key: self.key(plan.topic),
            group: self.group(plan.subscription),
            name: format!("c{}", plan.id),
            subscription: Some(subscription),
            reading: None,
            entries: VecDeque::new(),
            unacked: Vec::new(),
        })
    }
}

/// A pipeline under way: its replies, with the send times of its messages.
type Pending =
    Pin<Box<dyn Future<Output = (redis::RedisResult<Vec<redis::Value>>, Vec<i64>)> + Send>>;

#[allow(missing_debug_implementations)]
pub struct RedisProducer {
    driver: RedisDriver,
    key: String,
    conn: Option<MultiplexedConnection>,
    /// Messages handed over, not yet sent.
    queue: SendQueue,
    /// One pipeline at a time (kept across a cancelled drive).
    pending: Option<Pending>,
    acks: AckTimes,
}

impl Producer for RedisProducer {
    #[inline]
    fn try_send(&mut self, payload: Bytes) -> Result<(), TrySendError> {
        self.queue.push(payload)
    }

    #[inline]
    fn room(&self) -> usize {
        self.queue.room()
    }

    async fn drive(&mut self) -> Result<(), DriverError> {
        let Some(conn) = self.conn.as_ref() else {
            self.conn = Some(self.driver.connect().await?);
            return Ok(());
        };
        if self.pending.is_none() && !self.queue.is_empty() {
            let mut conn = conn.clone();
            let batch: Vec<Bytes> = self.queue.take(self.driver.o.window as usize).collect();
            let mut pipe = redis::pipe();
            for payload in &batch {
                match self.driver.o.mode {
                    RedisMode::PubSub => pipe.cmd("PUBLISH").arg(&self.key).arg(&payload[..]),
                    RedisMode::Streams => {
                        let c = pipe.cmd("XADD").arg(&self.key);
                        if let Some(n) = self.driver.o.maxlen {
                            c.arg("MAXLEN").arg("~").arg(n);
                        }
                        c.arg("*").arg("d").arg(&payload[..])
                    }
                };
            }
            let sent: Vec<i64> = batch.iter().map(|p| sent_ns(p).unwrap_or(0)).collect();
            self.pending = Some(Box::pin(async move {
                let replies = pipe.query_async::<Vec<redis::Value>>(&mut conn).await;
                (replies, sent)
            }));
        }
        let Some(pending) = self.pending.as_mut() else {
            return std::future::pending().await;
        };
        let replied = tokio::time::timeout(REPLY_TIMEOUT, pending).await;
        self.pending = None;
        match replied {
            Ok((Ok(_), sent)) => {
                let at = crate::engine::tasks::now_ns();
                for s in sent.into_iter().filter(|s| *s > 0) {
                    self.acks.push(s, at);
                }
                Ok(())
            }
            Ok((Err(e), _)) => {
                if e.is_connection_dropped() || e.is_io_error() || e.is_timeout() {
                    self.conn = None;
                    Err(DriverError::ConnectionLost {
                        reason: e.to_string(),
                    })
                } else {
                    Err(DriverError::client(e))
                }
            }
            Err(_) => {
                self.conn = None;
                Err(DriverError::ConnectionLost {
                    reason: format!("no reply within {REPLY_TIMEOUT:?}"),
                })
            }
        }
    }

    fn idle(&self) -> bool {
        self.queue.is_empty() && self.pending.is_none()
    }

    fn take_acks(&mut self, f: impl FnMut(i64, i64)) {
        self.acks.take(f);
    }

    fn has_acks(&self) -> bool {
        !self.acks.is_empty()
    }

    async fn close(self) {}
}

/// A consumer's connection: a pub/sub subscription, or a connection reading its group.
enum Subscription {
    PubSub(redis::aio::PubSubStream),
    Group(MultiplexedConnection),
}

/// An XREADGROUP under way (kept across a cancelled `recv`: what it takes is in the
/// group's pending list, and must be counted).
type Reading = Pin<Box<dyn Future<Output = redis::RedisResult<StreamReadReply>> + Send>>;

#[allow(missing_debug_implementations)]
pub struct RedisConsumer {
    driver: RedisDriver,
    plan: ConsumerPlan,
    key: String,
    group: String,
    name: String,
    subscription: Option<Subscription>,
    reading: Option<Reading>,
    /// Entries read, not yet returned.
    entries: VecDeque<Bytes>,
    /// Ids returned, not yet acknowledged.
    unacked: Vec<String>,
}

impl RedisConsumer {
    fn lost(&mut self, reason: String) -> DriverError {
        self.subscription = None;
        self.reading = None;
        DriverError::ConnectionLost { reason }
    }
}

impl Consumer for RedisConsumer {
    async fn recv(&mut self) -> Result<Option<Bytes>, DriverError> {
        if let Some(payload) = self.entries.pop_front() {
            return Ok(Some(payload));
        }
        let conn = match self.subscription.as_mut() {
            None => {
                self.subscription = Some(self.driver.open_consumer(&self.plan).await?);
                return Ok(None);
            }
            Some(Subscription::PubSub(messages)) => {
                return match messages.next().await {
                    Some(m) => Ok(Some(Bytes::copy_from_slice(m.get_payload_bytes()))),
                    None => Err(self.lost("the subscription's connection closed".into())),
                };
            }
            Some(Subscription::Group(conn)) => conn.clone(),
        };
        if self.reading.is_none() {
            // What was returned so far is acknowledged with the next read, in one pipeline.
            let acks = std::mem::take(&mut self.unacked);
            let (key, group, name) = (self.key.clone(), self.group.clone(), self.name.clone());
            let count = self.driver.o.count as usize;
            let mut conn = conn;
            self.reading = Some(Box::pin(async move {
                if !acks.is_empty() {
                    redis::cmd("XACK")
                        .arg(&key)
                        .arg(&group)
                        .arg(&acks)
                        .query_async::<()>(&mut conn)
                        .await?;
                }
                let options = StreamReadOptions::default()
                    .group(&group, &name)
                    .count(count)
                    .block(BLOCK_MS);
                redis::AsyncCommands::xread_options(&mut conn, &[&key], &[">"], &options).await
            }));
        }
        let Some(reading) = self.reading.as_mut() else {
            return Ok(None);
        };
        let read = reading.await;
        self.reading = None;
        match read {
            Ok(reply) => {
                for mut id in reply.keys.into_iter().flat_map(|k| k.ids) {
                    // The reply's buffer becomes the message: no copy.
                    if let Some(redis::Value::BulkString(d)) = id.map.remove("d") {
                        self.entries.push_back(Bytes::from(d));
                    }
                    self.unacked.push(id.id);
                }
                Ok(self.entries.pop_front())
            }
            Err(e) => Err(self.lost(e.to_string())),
        }
    }

    async fn close(mut self) {
        let Some(Subscription::Group(mut conn)) = self.subscription.take() else {
            return;
        };
        // A read under way may hold entries: they are not counted, so not acknowledged.
        if !self.unacked.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("XACK")
                .arg(&self.key)
                .arg(&self.group)
                .arg(&self.unacked)
                .query_async(&mut conn)
                .await;
        }
        // Leaving the group tells the run's owner this consumer is done.
        let _: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("DELCONSUMER")
            .arg(&self.key)
            .arg(&self.group)
            .arg(&self.name)
            .query_async(&mut conn)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_typed_url() {
        let run = RunId::new("r1").unwrap_or_else(|e| panic!("{e}"));
        let d = RedisDriver::from_url(
            "redis://:pw@127.0.0.1/2?mode=streams&prefix=b&maxlen=1000",
            &run,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (d.key(3), d.group(1)),
            ("b.r1.3".to_owned(), "b.r1.g1".to_owned())
        );
        assert_eq!(
            (d.o.db, d.o.maxlen, d.o.mode),
            (2, Some(1000), RedisMode::Streams)
        );
        assert!(!d.url.contains("pw"), "{}", d.url);
    }
}
