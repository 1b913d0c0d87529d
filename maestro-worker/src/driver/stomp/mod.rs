//! STOMP 1.2 over TCP or TLS, with maestro's own frame codec ([`frame`]).
//!
//! `stomp[s]://[user:pass@]host[:port][/vhost][?options]` (the path is the CONNECT
//! frame's `host`, RabbitMQ's virtual host; default `/`), options:
//! - `dest=queue` (default): topic `i` is `/queue/<prefix>.<run-id>.<i>`, whose consumers
//!   compete; `dest=topic`: `/topic/...`, every subscriber gets every message;
//!   `dest=exchange` (RabbitMQ): `/exchange/<exchange>/...` (default `amq.topic`);
//! - `receipts=true` (default): every SEND asks for a RECEIPT, the publish latency (RabbitMQ
//!   sends it once the message is confirmed), up to `window` awaited per producer;
//! - `ack=client-individual` (default): an ACK per message, written before the next read;
//!   `client`: one ACK for everything before it; `auto`: none. `prefetch` bounds what a
//!   consumer holds unacknowledged (RabbitMQ's `prefetch-count`, ActiveMQ's
//!   `activemq.prefetchSize`);
//! - `persistent=true`: SEND with `persistent:true`; `auto_delete=true` (default):
//!   RabbitMQ declares a `/queue/` destination auto-delete (SEND and SUBSCRIBE both say
//!   so), so it goes with its last consumer.
//!
//! Each producer and consumer has its own connection, heart-beats off. A SUBSCRIBE asks for
//! a receipt: a consumer is ready once the broker has its subscription. The broker's
//! ERROR frame closes the connection: it is reported with its message, and the client
//! connects again at its next turn.

pub mod frame;

use super::tls::{HandshakeError, TlsClient};
use super::{AckTimes, Consumer, Driver, DriverError, Durations, Producer, SendQueue, Timings};
use super::{TrySendError, sent_ns};
use bytes::{Bytes, BytesMut};
use frame::{Command, Frame};
use maestro_protocol::sut::{StompAck, StompDestination, StompOptions};
use maestro_protocol::{ConsumerPlan, ProducerPlan, RunId, SutOptions, SutUrl};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages a producer may hold before `try_send` reports `Full`.
const QUEUE: usize = 1024;
/// How long a producer waits for a receipt before it counts the connection as lost.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// Bytes read at a time.
const READ: usize = 64 << 10;

/// A byte stream to the broker: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One STOMP connection: its stream and its buffers (kept across cancelled reads and
/// writes: nothing read or written is lost to a cancellation).
struct Conn {
    io: Box<dyn Io>,
    read: BytesMut,
    write: BytesMut,
}

impl Conn {
    /// Writes what the write buffer holds.
    async fn flush(&mut self) -> Result<(), DriverError> {
        while !self.write.is_empty() {
            let n = self.io.write_buf(&mut self.write).await.map_err(lost)?;
            if n == 0 {
                return Err(DriverError::ConnectionLost {
                    reason: "the broker closed the connection".into(),
                });
            }
        }
        self.io.flush().await.map_err(lost)
    }

    /// The next frame from the broker.
    async fn next(&mut self) -> Result<Frame, DriverError> {
        loop {
            if let Some(f) = self.buffered()? {
                return Ok(f);
            }
            self.read.reserve(READ);
            if self.io.read_buf(&mut self.read).await.map_err(lost)? == 0 {
                return Err(DriverError::ConnectionLost {
                    reason: "the broker closed the connection".into(),
                });
            }
        }
    }

    /// The next frame already read, if a whole one is (no I/O).
    fn buffered(&mut self) -> Result<Option<Frame>, DriverError> {
        frame::decode(&mut self.read).map_err(|e| DriverError::ConnectionLost {
            reason: e.to_string(),
        })
    }

    /// Waits for the RECEIPT `id`; an ERROR is the broker's refusal.
    async fn receipt(&mut self, id: &str) -> Result<(), String> {
        loop {
            let f = self.next().await.map_err(|e| e.reason())?;
            match f.command {
                Command::Receipt if f.receipt_id.as_deref() == Some(id.as_bytes()) => {
                    return Ok(());
                }
                Command::Error => return Err(f.reason()),
                _ => {}
            }
        }
    }
}

fn lost(e: std::io::Error) -> DriverError {
    DriverError::ConnectionLost {
        reason: e.to_string(),
    }
}

#[derive(Clone)]
pub struct StompDriver {
    /// The URL without password, for messages.
    url: String,
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
    tls: Option<Arc<TlsClient>>,
    o: StompOptions,
    run: RunId,
    /// Headers every SEND carries (escaped, each line ending in `\n`).
    send_headers: Arc<[u8]>,
    /// Each topic's destination when a crossing names them (another protocol's topics,
    /// as the broker maps them).
    routes: Option<Arc<[String]>>,
    connects: Durations,
    subscribes: Durations,
}

impl std::fmt::Debug for StompDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StompDriver")
            .field("url", &self.url)
            .field("o", &self.o)
            .finish_non_exhaustive()
    }
}

impl StompDriver {
    pub fn new(url: &SutUrl, o: &StompOptions, run: &RunId) -> Result<Self, DriverError> {
        let host = url.host();
        let credentials = url
            .credentials
            .as_ref()
            .map(|c| (c.user.clone(), c.password.clone()));
        // CONNECT's headers are not escaped: a line break or NUL cannot be sent.
        let unsendable = |s: &str| s.contains(['\n', '\r', '\0']);
        if credentials
            .as_ref()
            .is_some_and(|(u, p)| unsendable(u) || unsendable(p))
            || unsendable(&o.vhost)
        {
            return Err(DriverError::Setting {
                url: url.redacted(),
                reason: "STOMP's CONNECT cannot carry a line break or NUL in the user, password or virtual host".into(),
            });
        }
        let mut headers = Vec::new();
        if o.persistent {
            headers.extend_from_slice(b"persistent:true\n");
        }
        if o.auto_delete && o.dest == StompDestination::Queue {
            headers.extend_from_slice(b"auto-delete:true\n");
        }
        Ok(StompDriver {
            url: url.redacted(),
            host: host.name.clone(),
            port: host.port,
            credentials,
            tls: TlsClient::for_url(url)?,
            o: o.clone(),
            run: run.clone(),
            send_headers: headers.into(),
            routes: None,
            connects: Durations::default(),
            subscribes: Durations::default(),
        })
    }

    /// A driver for a `stomp://` URL (tests and benchmarks).
    pub fn from_url(raw: &str, run: &RunId) -> Result<Self, DriverError> {
        let url = SutUrl::parse(raw)?;
        match &url.options {
            SutOptions::Stomp(o) => Self::new(&url, o, run),
            _ => Err(DriverError::WrongScheme {
                url: url.to_string(),
                expected: "a STOMP",
            }),
        }
    }

    fn unreachable(&self, reason: impl ToString) -> DriverError {
        DriverError::Unreachable {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    /// Topic `topic`'s destination.
    pub fn destination(&self, topic: u32) -> String {
        match &self.routes {
            Some(r) => r.get(topic as usize).cloned().unwrap_or_default(),
            None => self.o.destination(self.run.as_str(), topic),
        }
    }

    /// This driver with each topic's destination given (a mixed run's: the broker's
    /// mapping of the other protocol's topics).
    pub fn routed(mut self, destinations: Vec<String>) -> Self {
        self.routes = Some(destinations.into());
        self
    }

    /// A connection the broker accepted (CONNECTED), for client `role` (`p<i>`, `c<i>`).
    async fn connect(&self, role: &str) -> Result<Conn, DriverError> {
        let began = Instant::now();
        let opening = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| self.unreachable(e))?;
            let _ = tcp.set_nodelay(true);
            let io: Box<dyn Io> = match &self.tls {
                None => Box::new(tcp),
                Some(tls) => {
                    let name = format!("maestro-{}-{role}", self.run);
                    Box::new(tls.handshake(&name, tcp).await.map_err(|e| match e {
                        HandshakeError::Setup(e) => DriverError::Tls {
                            url: self.url.clone(),
                            reason: e.to_string(),
                        },
                        HandshakeError::Handshake(e) => self.unreachable(super::tls::explain(&e)),
                    })?)
                }
            };
            let mut conn = Conn {
                io,
                read: BytesMut::with_capacity(READ),
                write: BytesMut::with_capacity(READ),
            };
            frame::connect(
                &mut conn.write,
                &self.o.vhost,
                self.credentials
                    .as_ref()
                    .map(|(u, p)| (u.as_str(), p.as_str())),
            );
            conn.flush()
                .await
                .map_err(|e| self.unreachable(e.reason()))?;
            let answer = conn
                .next()
                .await
                .map_err(|e| self.unreachable(e.reason()))?;
            match answer.command {
                Command::Connected => Ok(conn),
                Command::Error => Err(self.unreachable(format!(
                    "the broker refused the connection: {}",
                    answer.reason()
                ))),
                _ => Err(self.unreachable("the broker did not answer CONNECT with CONNECTED")),
            }
        };
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, opening)
            .await
            .map_err(|_| self.unreachable(format!("no CONNECTED within {CONNECT_TIMEOUT:?}")))??;
        self.connects.record(began.elapsed());
        Ok(conn)
    }

    /// A consumer's connection with its subscription in place (the broker's receipt).
    async fn subscribed(&self, plan: &ConsumerPlan) -> Result<Conn, DriverError> {
        let mut conn = self.connect(&format!("c{}", plan.id)).await?;
        let began = Instant::now();
        let destination = self.destination(plan.topic);
        let prefetch = (self.o.ack != StompAck::Auto).then_some(self.o.prefetch);
        let queue = self.o.dest == StompDestination::Queue;
        let extra: &[(&str, &str)] = if self.o.auto_delete && queue {
            &[("auto-delete", "true")]
        } else {
            &[]
        };
        frame::subscribe(
            &mut conn.write,
            plan.id,
            &destination,
            self.o.ack.as_str(),
            prefetch,
            extra,
        );
        let subscribing = async {
            conn.flush().await.map_err(|e| e.reason())?;
            conn.receipt(&frame::subscribe_receipt(plan.id)).await
        };
        tokio::time::timeout(CONNECT_TIMEOUT, subscribing)
            .await
            .map_err(|_| {
                self.unreachable(format!(
                    "no receipt for SUBSCRIBE {destination} within {CONNECT_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| self.unreachable(format!("SUBSCRIBE {destination}: {e}")))?;
        self.subscribes.record(began.elapsed());
        Ok(conn)
    }
}

impl Driver for StompDriver {
    type Producer = StompProducer;
    type Consumer = StompConsumer;

    fn timings(&self) -> Timings {
        Timings::of(self.tls.as_deref(), &self.connects, Some(&self.subscribes))
    }

    async fn producer(&self, plan: &ProducerPlan) -> Result<StompProducer, DriverError> {
        let role = format!("p{}", plan.id);
        let conn = self.connect(&role).await?;
        Ok(StompProducer {
            driver: self.clone(),
            role,
            destination: frame::escape(&self.destination(plan.topic)).into(),
            conn: Some(conn),
            queue: SendQueue::new(QUEUE),
            next_receipt: 0,
            in_flight: VecDeque::with_capacity(self.o.window as usize),
            acks: AckTimes::default(),
        })
    }

    async fn consumer(&self, plan: &ConsumerPlan) -> Result<StompConsumer, DriverError> {
        let conn = self.subscribed(plan).await?;
        Ok(StompConsumer {
            driver: self.clone(),
            plan: plan.clone(),
            conn: Some(conn),
            last_ack: None,
        })
    }
}

#[allow(missing_debug_implementations)]
pub struct StompProducer {
    driver: StompDriver,
    role: String,
    /// The destination, escaped.
    destination: Arc<[u8]>,
    conn: Option<Conn>,
    /// Messages handed over, not yet written.
    queue: SendQueue,
    next_receipt: u64,
    /// SENDs awaiting their receipt: (receipt, send time).
    in_flight: VecDeque<(u64, i64)>,
    acks: AckTimes,
}

impl StompProducer {
    fn lost(&mut self, e: DriverError) -> DriverError {
        self.conn = None;
        self.in_flight.clear();
        e
    }

    /// Takes the receipt `id`: every SEND up to it is acknowledged (receipts come in
    /// order).
    fn receipted(&mut self, id: u64) {
        let at = crate::engine::tasks::now_ns();
        while let Some(&(r, sent)) = self.in_flight.front() {
            if r > id {
                break;
            }
            self.in_flight.pop_front();
            if sent > 0 {
                self.acks.push(sent, at);
            }
        }
    }
}

impl Producer for StompProducer {
    #[inline]
    fn try_send(&mut self, payload: Bytes) -> Result<(), TrySendError> {
        self.queue.push(payload)
    }

    #[inline]
    fn room(&self) -> usize {
        self.queue.room()
    }

    async fn drive(&mut self) -> Result<(), DriverError> {
        let Some(conn) = self.conn.as_mut() else {
            self.conn = Some(self.driver.connect(&self.role).await?);
            return Ok(());
        };
        let receipts = self.driver.o.receipts;
        let window = self.driver.o.window as usize;
        while !receipts || self.in_flight.len() < window {
            let Some(payload) = self.queue.pop_front() else {
                break;
            };
            let receipt = receipts.then(|| {
                self.next_receipt += 1;
                self.next_receipt
            });
            frame::send(
                &mut conn.write,
                &self.destination,
                &self.driver.send_headers,
                receipt,
                &payload,
            );
            if let Some(r) = receipt {
                self.in_flight
                    .push_back((r, sent_ns(&payload).unwrap_or(0)));
            }
        }
        if !conn.write.is_empty() {
            return match conn.flush().await {
                Ok(()) => Ok(()),
                Err(e) => Err(self.lost(e)),
            };
        }
        if self.in_flight.is_empty() {
            return std::future::pending().await;
        }
        let answer = match tokio::time::timeout(REPLY_TIMEOUT, conn.next()).await {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return Err(self.lost(e)),
            Err(_) => {
                return Err(self.lost(DriverError::ConnectionLost {
                    reason: format!("no receipt within {REPLY_TIMEOUT:?}"),
                }));
            }
        };
        // This frame, and every one already read after it, at once.
        let mut next = Some(answer);
        while let Some(f) = next {
            match f.command {
                Command::Receipt => {
                    if let Some(id) = f.receipt_id.as_deref().and_then(frame::receipt_number) {
                        self.receipted(id);
                    }
                }
                Command::Error => {
                    return Err(self.lost(DriverError::ConnectionLost { reason: f.reason() }));
                }
                _ => {}
            }
            next = match self.conn.as_mut().map(Conn::buffered) {
                Some(Ok(f)) => f,
                Some(Err(e)) => return Err(self.lost(e)),
                None => None,
            };
        }
        Ok(())
    }

    fn idle(&self) -> bool {
        self.queue.is_empty()
            && self.in_flight.is_empty()
            && self.conn.as_ref().is_none_or(|c| c.write.is_empty())
    }

    fn take_acks(&mut self, f: impl FnMut(i64, i64)) {
        self.acks.take(f);
    }

    fn has_acks(&self) -> bool {
        !self.acks.is_empty()
    }

    async fn close(mut self) {
        if let Some(mut conn) = self.conn.take() {
            goodbye(&mut conn).await;
        }
    }
}

/// DISCONNECT, and its receipt (bounded): the broker has everything before it.
async fn goodbye(conn: &mut Conn) {
    frame::disconnect(&mut conn.write);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        conn.flush().await.map_err(|e| e.reason())?;
        conn.receipt("bye").await
    })
    .await;
}

#[allow(missing_debug_implementations)]
pub struct StompConsumer {
    driver: StompDriver,
    plan: ConsumerPlan,
    conn: Option<Conn>,
    /// ack=client: the latest message returned, acknowledged (with all before it) before
    /// the next read from the socket.
    last_ack: Option<Bytes>,
}

impl StompConsumer {
    fn lost(&mut self, e: DriverError) -> DriverError {
        self.conn = None;
        self.last_ack = None;
        e
    }
}

impl Consumer for StompConsumer {
    async fn recv(&mut self) -> Result<Option<Bytes>, DriverError> {
        let Some(conn) = self.conn.as_mut() else {
            self.conn = Some(self.driver.subscribed(&self.plan).await?);
            return Ok(None);
        };
        let f = match conn.buffered() {
            Ok(Some(f)) => f,
            Ok(None) => {
                // Before waiting: acknowledge what was returned.
                if let Some(id) = self.last_ack.take() {
                    frame::ack(&mut conn.write, &id);
                }
                let io = async {
                    conn.flush().await?;
                    conn.next().await
                };
                match io.await {
                    Ok(f) => f,
                    Err(e) => return Err(self.lost(e)),
                }
            }
            Err(e) => return Err(self.lost(e)),
        };
        match f.command {
            Command::Message => {
                match (self.driver.o.ack, f.ack) {
                    (StompAck::ClientIndividual, Some(id)) => {
                        if let Some(conn) = self.conn.as_mut() {
                            frame::ack(&mut conn.write, &id);
                        }
                    }
                    (StompAck::Client, Some(id)) => self.last_ack = Some(id),
                    _ => {}
                }
                Ok(Some(f.body))
            }
            Command::Error => Err(self.lost(DriverError::ConnectionLost { reason: f.reason() })),
            _ => Ok(None),
        }
    }

    async fn close(mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if let Some(id) = self.last_ack.take() {
            frame::ack(&mut conn.write, &id);
        }
        goodbye(&mut conn).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_from_the_typed_url() {
        let run = RunId::new("r1").unwrap_or_else(|e| panic!("{e}"));
        let d = StompDriver::from_url("stomp://u:pw@127.0.0.1/vh?dest=topic&prefix=b", &run)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.destination(3), "/topic/b.r1.3");
        assert!(!d.url.contains("pw"), "{}", d.url);
        assert!(d.send_headers.is_empty());
        let q = StompDriver::from_url("stomp://127.0.0.1?persistent=true", &run)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&q.send_headers[..], b"persistent:true\nauto-delete:true\n");
        let e = StompDriver::from_url("stomp://a%0Ab:pw@127.0.0.1", &run).unwrap_err();
        assert!(e.to_string().contains("line break"), "{e}");
    }
}
