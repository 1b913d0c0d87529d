//! AMQP 1.0 with fe2o3-amqp.
//!
//! `amqp10[s]://[user:pass@]host[:port][/address][?options]`, options:
//! - `address` (default: the URL's path, `/queue/maestro` without one): topic `i` of a run
//!   is `<address>.<run-id>.<i>` (ActiveMQ: `queue://bench`, `topic://bench`; RabbitMQ's
//!   AMQP 1.0 plugin: `/queue/bench`, `/topic/bench`);
//! - `settle`: `at_least_once` (default: unsettled, settled when the broker's disposition
//!   comes back, up to `window` in flight per sender) or `at_most_once` (pre-settled);
//! - `fanout`: every consumer gets every message (default for topic and exchange
//!   addresses); otherwise consumers of an address share it;
//! - `durable` (the header's durable flag), `credit` (link credit a receiver keeps
//!   granting, default 1000), `sasl` (`plain` with the URL's credentials, the default when
//!   it has some, or `anonymous`).
//!
//! Each producer and consumer has its own connection (container id
//! `maestro-<run>-p<i>` / `-c<i>`), one session and one link.
//!
//! `amqp10s://` (default port 5671) is TLS from the first byte, as RabbitMQ's and
//! ActiveMQ's TLS listeners speak it, with the URL's TLS options (`ca`, `cert`/`key`,
//! `client_ca`/`client_ca_key`, `insecure`, `sni`; [`super::tls`]): the driver makes the
//! TCP connection and the handshake (timed), then hands fe2o3-amqp the encrypted stream.

use super::tls::{HandshakeError, TlsClient};
use super::{
    AckTimes, Consumer, Driver, DriverError, Durations, Producer, SendQueue, Timings, TrySendError,
    sent_ns,
};
use bytes::Bytes;
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::delivery::DeliveryFut;
use fe2o3_amqp::link::{SendError, Sender as Link};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::SenderSettleMode;
use fe2o3_amqp::types::messaging::{Body, Data, Header, Message, Outcome};
use fe2o3_amqp::types::primitives::{Binary, Value};
use fe2o3_amqp::{Connection, Receiver, Sendable, Session};
use futures_util::FutureExt;
use maestro_protocol::sut::{Amqp10Options, Sasl, Settle};
use maestro_protocol::{ConsumerPlan, ProducerPlan, RunId, SutOptions, SutUrl};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages a producer may hold before `try_send` reports `Full`.
const QUEUE: usize = 1024;

#[derive(Debug, Clone)]
pub struct Amqp10Driver {
    host: String,
    port: u16,
    url: String,
    o: Amqp10Options,
    credentials: Option<(String, String)>,
    run: RunId,
    tls: Option<Arc<TlsClient>>,
    /// TCP, TLS, SASL and the AMQP open, per client.
    connects: Durations,
    /// Each topic's address when a crossing names them (another protocol's queues, as
    /// the broker addresses them).
    routes: Option<Arc<[String]>>,
}

impl Amqp10Driver {
    pub fn new(url: &SutUrl, o: &Amqp10Options, run: &RunId) -> Result<Self, DriverError> {
        let host = url.host();
        Ok(Self {
            host: host.name.clone(),
            port: host.port,
            tls: TlsClient::for_url(url)?,
            connects: Durations::default(),
            routes: None,
            url: url.redacted(),
            o: o.clone(),
            credentials: url
                .credentials
                .as_ref()
                .map(|c| (c.user.clone(), c.password.clone())),
            run: run.clone(),
        })
    }

    /// A driver for an `amqp10://` URL (tests and benchmarks).
    pub fn from_url(raw: &str, run: &RunId) -> Result<Self, DriverError> {
        let url = SutUrl::parse(raw)?;
        match &url.options {
            SutOptions::Amqp10(o) => Self::new(&url, o, run),
            _ => Err(DriverError::WrongScheme {
                url: url.to_string(),
                expected: "an AMQP 1.0",
            }),
        }
    }

    pub fn address(&self, topic: u32) -> String {
        match &self.routes {
            Some(r) => r.get(topic as usize).cloned().unwrap_or_default(),
            None => format!("{}.{}.{topic}", self.o.address, self.run),
        }
    }

    /// This driver with each topic's address given (a mixed run's: the broker's address
    /// of the other protocol's queues).
    pub fn routed(mut self, addresses: Vec<String>) -> Self {
        self.routes = Some(addresses.into());
        self
    }

    fn unreachable(&self, reason: impl ToString) -> DriverError {
        DriverError::Unreachable {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    /// A link once the broker has attached it, within the connect timeout.
    async fn attached<L, E: std::fmt::Display>(
        &self,
        attach: impl Future<Output = Result<L, E>>,
    ) -> Result<L, DriverError> {
        tokio::time::timeout(CONNECT_TIMEOUT, attach)
            .await
            .map_err(|_| self.unreachable(format!("no attach within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| self.unreachable(e))
    }

    /// A connection and a session for client `role` (`p<i>` or `c<i>`).
    async fn open(
        &self,
        role: &str,
    ) -> Result<(ConnectionHandle<()>, SessionHandle<()>), DriverError> {
        let container = format!("maestro-{}-{role}", self.run);
        let sasl = match (self.o.sasl, &self.credentials) {
            (Sasl::Plain, Some((user, password))) => SaslProfile::Plain {
                username: user.clone(),
                password: password.clone(),
            },
            _ => SaslProfile::Anonymous,
        };
        let began = Instant::now();
        let opening = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| self.unreachable(e))?;
            let _ = tcp.set_nodelay(true);
            let builder = Connection::builder()
                .container_id(container.clone())
                .hostname(self.host.as_str())
                .sasl_profile(sasl);
            let mut conn = match &self.tls {
                None => builder.open_with_stream(tcp).await,
                Some(tls) => {
                    let stream = tls.handshake(&container, tcp).await.map_err(|e| match e {
                        HandshakeError::Setup(e) => DriverError::Tls {
                            url: self.url.clone(),
                            reason: e.to_string(),
                        },
                        HandshakeError::Handshake(e) => self.unreachable(super::tls::explain(&e)),
                    })?;
                    builder.open_with_stream(stream).await
                }
            }
            .map_err(|e| self.unreachable(e))?;
            let session = Session::begin(&mut conn)
                .await
                .map_err(|e| self.unreachable(e))?;
            Ok::<_, DriverError>((conn, session))
        };
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, opening)
            .await
            .map_err(|_| {
                self.unreachable(format!("no AMQP 1.0 session within {CONNECT_TIMEOUT:?}"))
            })??;
        self.connects.record(began.elapsed());
        Ok(opened)
    }
}

impl Driver for Amqp10Driver {
    type Producer = Amqp10Producer;
    type Consumer = Amqp10Consumer;

    fn timings(&self) -> Timings {
        Timings::of(self.tls.as_deref(), &self.connects, None)
    }

    async fn producer(&self, plan: &ProducerPlan) -> Result<Amqp10Producer, DriverError> {
        let (conn, mut session) = self.open(&format!("p{}", plan.id)).await?;
        let settled = self.o.settle == Settle::AtMostOnce;
        let link = Link::builder()
            .name(format!("maestro-{}-p{}", self.run, plan.id))
            .target(self.address(plan.topic))
            .sender_settle_mode(if settled {
                SenderSettleMode::Settled
            } else {
                SenderSettleMode::Unsettled
            })
            .attach(&mut session);
        let link = self.attached(link).await?;
        Ok(Amqp10Producer {
            conn: Some(conn),
            session: Some(session),
            link: Some(link),
            durable: self.o.durable,
            settled,
            window: self.o.window as usize,
            queue: SendQueue::new(QUEUE),
            in_flight: VecDeque::new(),
            acks: AckTimes::default(),
        })
    }

    async fn consumer(&self, plan: &ConsumerPlan) -> Result<Amqp10Consumer, DriverError> {
        let (conn, mut session) = self.open(&format!("c{}", plan.id)).await?;
        let link = Receiver::builder()
            .name(format!("maestro-{}-c{}", self.run, plan.id))
            .source(self.address(plan.topic))
            .credit_mode(fe2o3_amqp::link::receiver::CreditMode::Auto(self.o.credit))
            .auto_accept(true)
            .attach(&mut session);
        let link = self.attached(link).await?;
        Ok(Amqp10Consumer {
            conn: Some(conn),
            session: Some(session),
            link: Some(link),
        })
    }
}

/// One transfer: the payload as a data section, with a header only for durable messages
/// (durable false is the header's default).
fn message(payload: &Bytes, durable: bool, settled: bool) -> Sendable<Data> {
    let mut message = Message::builder()
        .data(Binary::from(payload.to_vec()))
        .build();
    if durable {
        message.header = Some(Header {
            durable,
            ..Default::default()
        });
    }
    Sendable::builder()
        .message(message)
        .settled(settled)
        .build()
}

/// Ends a client's session, then closes its connection (after its link is closed).
async fn end(session: Option<SessionHandle<()>>, conn: Option<ConnectionHandle<()>>) {
    if let Some(mut session) = session {
        let _ = session.end().await;
    }
    if let Some(mut conn) = conn {
        let _ = conn.close().await;
    }
}

#[allow(missing_debug_implementations)]
pub struct Amqp10Producer {
    conn: Option<ConnectionHandle<()>>,
    session: Option<SessionHandle<()>>,
    link: Option<Link>,
    durable: bool,
    settled: bool,
    window: usize,
    /// Messages handed over, not yet transferred.
    queue: SendQueue,
    /// Unsettled transfers waiting for their disposition, with their send times.
    in_flight: VecDeque<(DeliveryFut<Result<Outcome, SendError>>, i64)>,
    acks: AckTimes,
}

impl Producer for Amqp10Producer {
    #[inline]
    fn try_send(&mut self, payload: Bytes) -> Result<(), TrySendError> {
        self.queue.push(payload)
    }

    #[inline]
    fn room(&self) -> usize {
        self.queue.room()
    }

    async fn drive(&mut self) -> Result<(), DriverError> {
        let (durable, settled, window) = (self.durable, self.settled, self.window);
        let Some(link) = self.link.as_mut() else {
            return Err(DriverError::Closed {
                what: "the AMQP 1.0 link",
            });
        };
        // Every transfer the queue and the window allow, in one go: the engine hands over
        // messages between two drives.
        let mut transferred = false;
        while let Some(payload) = self.queue.front()
            && (settled || self.in_flight.len() < window)
        {
            let sent = sent_ns(payload).unwrap_or(0);
            let sendable = message(payload, durable, settled);
            // A message leaves the queue only once transferred: a cancelled drive sends
            // it again (fe2o3's send is cancel-safe).
            let fut = link
                .send_batchable(sendable)
                .await
                .map_err(DriverError::client)?;
            self.queue.pop_front();
            if !settled {
                self.in_flight.push_back((fut, sent));
            }
            transferred = true;
        }
        if transferred {
            return Ok(());
        }
        let Some((fut, _)) = self.in_flight.front_mut() else {
            return std::future::pending().await;
        };
        // The oldest disposition, then those already in with it (fe2o3's delivery future
        // is a oneshot receiver: polling it once more is safe).
        let mut outcome = std::pin::Pin::new(fut).await;
        loop {
            let Some((_, sent)) = self.in_flight.pop_front() else {
                break;
            };
            match outcome {
                Ok(Outcome::Accepted(_)) => {
                    if sent > 0 {
                        self.acks.push(sent, crate::engine::tasks::now_ns());
                    }
                }
                Ok(other) => {
                    return Err(DriverError::Rejected(super::Rejection::Outcome(format!(
                        "{other:?}"
                    ))));
                }
                Err(e) => return Err(DriverError::client(e)),
            }
            match self
                .in_flight
                .front_mut()
                .and_then(|(f, _)| f.now_or_never())
            {
                Some(next) => outcome = next,
                None => break,
            }
        }
        Ok(())
    }

    fn idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight.is_empty()
    }

    fn take_acks(&mut self, f: impl FnMut(i64, i64)) {
        self.acks.take(f);
    }

    fn has_acks(&self) -> bool {
        !self.acks.is_empty()
    }

    async fn close(mut self) {
        if let Some(link) = self.link.take() {
            let _ = link.close().await;
        }
        end(self.session.take(), self.conn.take()).await;
    }
}

#[allow(missing_debug_implementations)]
pub struct Amqp10Consumer {
    conn: Option<ConnectionHandle<()>>,
    session: Option<SessionHandle<()>>,
    link: Option<Receiver>,
}

impl Consumer for Amqp10Consumer {
    async fn recv(&mut self) -> Result<Option<Bytes>, DriverError> {
        let Some(link) = self.link.as_mut() else {
            return Err(DriverError::Closed {
                what: "the AMQP 1.0 link",
            });
        };
        let delivery = link
            .recv::<Body<Value>>()
            .await
            .map_err(DriverError::client)?;
        Ok(match delivery.body() {
            Body::Data(batch) => batch.iter().next().map(|d| Bytes::copy_from_slice(&d.0)),
            _ => None,
        })
    }

    async fn close(mut self) {
        if let Some(link) = self.link.take() {
            let _ = link.close().await;
        }
        end(self.session.take(), self.conn.take()).await;
    }
}
