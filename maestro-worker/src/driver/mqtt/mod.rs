//! MQTT 3.1.1 and 5, the one driver for producers, consumers and device fleets: a client
//! of our own per connection, one task each, no event loop or queue of a client library
//! per connection (rumqttc stays the control plane's client and the benchmarks' baseline).
//!
//! `mqtt[s]://[user:pass@]host[:port][,host2:port2...][/base-topic][?options]`, and over
//! WebSockets `ws[s]://host[:port][/path]?topic=<base-topic>&...`; the options are typed in
//! `maestro_protocol::sut::mqtt` (`qos`, `retain`, `clean_session`, `keep_alive`,
//! `client_id_prefix`, `inflight`, `source_ips`, `version`, `shared`, the MQTT 5
//! properties, TLS). Topic `i` of a run is `<base-topic>/<run-id>/<i>`; a fleet names its
//! clients and topics by its templates. With `shared=true` consumers subscribe to
//! `$share/<group>/<topic>` and compete for its messages.
//!
//! MQTT 5: the publish properties are encoded once per client ([`wire::PublishForm`]); with
//! `topic_alias=true` a producer names its topic once per connection and then sends alias 1
//! (when the CONNACK allows aliases); the CONNACK's receive maximum bounds the window; reason
//! codes other than success are counted by packet and reason in the connections' stats,
//! and refused publishes are errors.
//! Several nodes: clients go to them round robin by index. `source_ips=`: clients connect
//! from those local addresses round robin, past the 64k ports per destination (the socket
//! is bound with `IP_BIND_ADDRESS_NO_PORT` so a port is shared per 4-tuple).
//!
//! Making the connection ourselves lets every step be timed on its own (TCP connect, TLS
//! handshake, CONNACK, SUBACK) and every failure be counted by reason
//! ([`ConnectFailure`]). QoS 1 and 2 publishes are timed to their PUBACK or PUBCOMP. A
//! client dropped by the broker reconnects with exponential backoff (100 ms to 5 s,
//! jittered), subscribes again and resends what was not acknowledged; with churn, each
//! fleet client disconnects and reconnects every period.
//!
//! Packets are encoded with `rumqttc::mqttbytes` (PUBLISH by hand, into the connection's
//! write buffer: no allocation per message): see [`wire`].

mod wire;

use super::tls::{HandshakeError, TlsClient};
use super::{
    AckTimes, ConnectError, ConnectFailure, ConnectionTracker, Consumer, Driver, DriverError,
    Durations, Producer, Timings, TrySendError, sent_ns,
};
use bytes::{Bytes, BytesMut};
use maestro_protocol::fleet::FleetSpec;
use maestro_protocol::sut::{MqttOptions, MqttTransport, MqttVersion, Qos};
use maestro_protocol::{ConsumerPlan, ProducerPlan, RunId, SutOptions, SutUrl};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::either::Either;
use wire::{Ack, Incoming, PublishForm};

/// The WebSocket read buffer of a client.
const WS_READ_BUFFER: usize = 8 * 1024;
/// How long each step of connecting (TCP, TLS, WebSocket, CONNACK, SUBACK) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes a client buffers for writing before `try_send` reports `Full`.
const WRITE_LIMIT: usize = 64 * 1024;
/// Tries at the first connection before the client (and the configure) fails.
const FIRST_TRIES: u32 = 3;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// TCP, or TLS over TCP.
type Transport = Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;
/// MQTT over a WebSocket (binary frames) over TCP or TLS.
type WebSocket = ws_stream_tungstenite::WsStream<async_tungstenite::tokio::TokioAdapter<Transport>>;
/// A connection's bytes: straight on TCP/TLS, or in WebSocket frames.
type Stream = Either<Transport, Box<WebSocket>>;

/// What the broker granted in its CONNACK (MQTT 5; MQTT 3.1.1 grants no aliases).
#[derive(Debug, Clone, Copy, Default)]
struct Granted {
    topic_alias_max: u16,
    receive_max: Option<u16>,
}

#[derive(Debug)]
struct Inner {
    /// The URL without password, for messages.
    url: String,
    nodes: Vec<(String, u16)>,
    source_ips: Vec<IpAddr>,
    credentials: Option<(String, String)>,
    qos: u8,
    /// How publishes are written (the version, QoS, retain, MQTT 5 properties).
    form: PublishForm,
    /// The URL's options: the version, the transport, MQTT 5's connect properties and
    /// whether consumers share a subscription.
    options: MqttOptions,
    clean_session: bool,
    keep_alive: Duration,
    inflight: usize,
    run: RunId,
    base: String,
    client_id_prefix: String,
    fleet: Option<FleetSpec>,
    clients: u32,
    /// The run's topics: subscription numbers go topic first
    /// ([`maestro_protocol::TestSpec::subscription`]).
    topics: u32,
    tls: Option<Arc<TlsClient>>,
    connects: Durations,
    subscribes: Durations,
    tracker: Arc<ConnectionTracker>,
}

/// The driver; clones share everything.
#[derive(Debug, Clone)]
pub struct MqttDriver(Arc<Inner>);

impl MqttDriver {
    /// A driver for `url`, whose options are `o` (parsed once, in [`SutUrl`]), for a run
    /// of `clients` producers, a fleet's when `fleet` is given. Fails when the TLS files
    /// cannot be read.
    pub fn new(
        url: &SutUrl,
        o: &MqttOptions,
        run: &RunId,
        fleet: Option<FleetSpec>,
        (clients, topics): (u32, u32),
    ) -> Result<Self, DriverError> {
        let tls = TlsClient::for_url(url)?;
        let qos = match o.qos {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
            Qos::ExactlyOnce => 2,
        };
        Ok(MqttDriver(Arc::new(Inner {
            url: url.redacted(),
            nodes: url.hosts.iter().map(|h| (h.name.clone(), h.port)).collect(),
            source_ips: o.source_ips.clone(),
            credentials: url
                .credentials
                .as_ref()
                .map(|c| (c.user.clone(), c.password.clone())),
            qos,
            form: PublishForm::new(o, qos),
            options: o.clone(),
            clean_session: o.clean_session,
            keep_alive: o.keep_alive,
            inflight: usize::from(o.inflight.max(1)),
            run: run.clone(),
            base: o.base_topic.clone(),
            client_id_prefix: o.client_id_prefix.clone(),
            fleet,
            topics: topics.max(1),
            clients,
            tls,
            connects: Durations::default(),
            subscribes: Durations::default(),
            tracker: Arc::default(),
        })))
    }

    /// A driver for an MQTT URL, producers and consumers of a run without a fleet (tests
    /// and benchmarks).
    pub fn from_url(raw: &str, run: &RunId) -> Result<Self, DriverError> {
        let url = SutUrl::parse(raw)?;
        match &url.options {
            SutOptions::Mqtt(o) => Self::new(&url, o, run, None, (1, 1)),
            _ => Err(DriverError::WrongScheme {
                url: url.to_string(),
                expected: "an MQTT",
            }),
        }
    }

    /// The SUT topic of topic index `i` (without a fleet).
    pub fn topic(&self, i: u32) -> String {
        format!("{}/{}/{}", self.0.base, self.0.run, i)
    }

    /// The topic filter consumer `plan` subscribes to: the fleet's topic with `+` for the
    /// client index, or the run's topic of its index; `$share/<group>/...` with a shared
    /// subscription (`<group>-<n>` for a topic's n-th of several).
    pub fn consumer_topic(&self, plan: &ConsumerPlan) -> String {
        let d = &self.0;
        let topic = match &d.fleet {
            Some(f) => f.topic.wildcard(d.run.as_str()),
            None => self.topic(plan.topic),
        };
        d.options
            .nth_subscription(&topic, plan.subscription / d.topics)
    }

    /// A producer: a fleet client named by the templates, or a plain producer that
    /// publishes to its topic index (`<base>/<run>/<topic>`, where consumers listen).
    fn producer_identity(&self, plan: &ProducerPlan) -> Identity {
        let d = &self.0;
        let (index, run) = (plan.id, d.run.as_str());
        match &d.fleet {
            Some(f) => Identity {
                index,
                client_id: f.client_id.render(index, run),
                topic: f.topic.render(index, run),
                subscribe: f.subscribe.as_ref().map(|s| s.render(index, run)),
                churns: true,
            },
            None => Identity {
                index,
                client_id: format!("{}-{}-p{index}", d.client_id_prefix, run),
                topic: self.topic(plan.topic),
                subscribe: None,
                churns: false,
            },
        }
    }

    /// A consumer: subscribes to [`Self::consumer_topic`], never churns.
    fn consumer_identity(&self, plan: &ConsumerPlan) -> Identity {
        let d = &self.0;
        Identity {
            index: plan.id,
            client_id: format!("{}-{}-c{}", d.client_id_prefix, d.run, plan.id),
            topic: String::new(),
            subscribe: Some(self.consumer_topic(plan)),
            churns: false,
        }
    }

    fn unreachable(&self, e: ConnectError) -> DriverError {
        DriverError::Unreachable {
            url: self.0.url.clone(),
            reason: format!("{} ({})", e.reason, e.why.as_str()),
        }
    }

    /// One attempt at a connection: TCP (from the client's source address), TLS, CONNECT,
    /// and SUBSCRIBE when the client subscribes. Each step is timed and bounded.
    async fn open(&self, who: &Identity) -> Result<(Stream, Granted), ConnectError> {
        let d = &self.0;
        let began = Instant::now();
        let (host, port) = &d.nodes[who.index as usize % d.nodes.len().max(1)];
        // Round robin over the source addresses within each node's share, so that every
        // node sees clients from every address.
        let per_node = who.index as usize / d.nodes.len().max(1);
        let source =
            (!d.source_ips.is_empty()).then(|| d.source_ips[per_node % d.source_ips.len()]);
        let addr = resolve(host, *port, source).await?;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| {
            ConnectError::new(ConnectFailure::Other, format!("cannot make a socket: {e}"))
        })?;
        if let Some(ip) = source {
            nix::sys::socket::setsockopt(
                &socket,
                nix::sys::socket::sockopt::IpBindAddressNoPort,
                &true,
            )
            .map_err(std::io::Error::from)
            .and_then(|()| socket.bind(SocketAddr::new(ip, 0)))
            .map_err(|e| {
                ConnectError::new(
                    ConnectFailure::Other,
                    format!("cannot bind source address {ip}: {e}"),
                )
            })?;
        }
        let _ = socket.set_nodelay(true);
        let tcp = match tokio::time::timeout(STEP_TIMEOUT, socket.connect(addr)).await {
            Err(_) => {
                return Err(ConnectError::new(
                    ConnectFailure::Timeout,
                    format!("no TCP connection to {addr} within {STEP_TIMEOUT:?}"),
                ));
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(ConnectError::new(
                    ConnectFailure::Refused,
                    format!("connection refused by {addr}"),
                ));
            }
            Ok(Err(e)) => {
                return Err(ConnectError::new(
                    ConnectFailure::Other,
                    format!("cannot connect to {addr}: {e}"),
                ));
            }
            Ok(Ok(s)) => s,
        };
        d.tracker.tcp_connect.record(began.elapsed());
        let transport: Transport = match &d.tls {
            None => Either::Left(tcp),
            Some(tls) => {
                match tokio::time::timeout(STEP_TIMEOUT, tls.handshake(&who.client_id, tcp)).await {
                    Err(_) => {
                        return Err(ConnectError::new(
                            ConnectFailure::Timeout,
                            format!("no TLS handshake within {STEP_TIMEOUT:?}"),
                        ));
                    }
                    Ok(Err(HandshakeError::Setup(e))) => {
                        return Err(ConnectError::new(ConnectFailure::Tls, e.to_string()));
                    }
                    Ok(Err(HandshakeError::Handshake(e))) => {
                        return Err(ConnectError::new(
                            ConnectFailure::Tls,
                            super::tls::explain(&e),
                        ));
                    }
                    Ok(Ok(s)) => Either::Right(Box::new(s)),
                }
            }
        };
        let mut stream: Stream = match &d.options.transport {
            MqttTransport::Tcp => Either::Left(transport),
            MqttTransport::WebSocket { path } => Either::Right(Box::new(
                upgrade(transport, host, *port, path, d.tls.is_some()).await?,
            )),
        };
        let mut buf = BytesMut::with_capacity(128);
        let hello = wire::Hello {
            client_id: &who.client_id,
            keep_alive_s: u16::try_from(d.keep_alive.as_secs()).unwrap_or(u16::MAX),
            clean: d.clean_session,
            credentials: d.credentials.as_ref(),
            session_expiry_s: d.options.v5.session_expiry_s,
            receive_maximum: d.options.v5.receive_maximum,
        };
        buf.clear();
        wire::connect(d.options.version, &hello, &mut buf);
        let granted = match ask(&mut stream, &mut buf, d.options.version).await? {
            Incoming::ConnAck(wire::ConnAck {
                refused: None,
                topic_alias_max,
                receive_max,
            }) => Granted {
                topic_alias_max,
                receive_max,
            },
            Incoming::ConnAck(wire::ConnAck {
                refused: Some((why, code)),
                ..
            }) => {
                return Err(ConnectError::new(
                    match why {
                        wire::Refusal::Auth => ConnectFailure::Auth,
                        wire::Refusal::Other => ConnectFailure::Other,
                    },
                    format!("the broker refused the connection: {code}"),
                ));
            }
            other => {
                return Err(ConnectError::new(
                    ConnectFailure::Other,
                    format!("expected CONNACK, got {other:?}"),
                ));
            }
        };
        d.connects.record(began.elapsed());
        if let Some(filter) = &who.subscribe {
            let at = Instant::now();
            buf.clear();
            wire::subscribe(d.options.version, filter, d.qos, &mut buf);
            match ask(&mut stream, &mut buf, d.options.version).await? {
                Incoming::SubAck(Ok(())) => d.subscribes.record(at.elapsed()),
                Incoming::SubAck(Err(code)) => {
                    return Err(ConnectError::new(
                        ConnectFailure::Auth,
                        format!("the broker refused the subscription to {filter}: {code}"),
                    ));
                }
                other => {
                    return Err(ConnectError::new(
                        ConnectFailure::Other,
                        format!("expected SUBACK, got {other:?}"),
                    ));
                }
            }
        }
        Ok((stream, granted))
    }

    /// The first connection of a client: a few tries, then the run cannot have it.
    async fn first(&self, who: Identity) -> Result<Client, DriverError> {
        let mut last = None;
        for attempt in 0..FIRST_TRIES {
            match self.open(&who).await {
                Ok((stream, granted)) => {
                    self.0.tracker.opened(false);
                    return Ok(Client::new(self.clone(), who, stream, granted));
                }
                Err(e) => {
                    self.0.tracker.failed(e.why);
                    // A refused login or a certificate nobody trusts stays so: no retry.
                    if matches!(e.why, ConnectFailure::Auth | ConnectFailure::Tls) {
                        return Err(self.unreachable(e));
                    }
                    last = Some(e);
                    if attempt + 1 < FIRST_TRIES {
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                }
            }
        }
        let e = last.unwrap_or(ConnectError::new(ConnectFailure::Other, "no attempt"));
        Err(self.unreachable(e))
    }
}

async fn resolve(
    host: &str,
    port: u16,
    source: Option<IpAddr>,
) -> Result<SocketAddr, ConnectError> {
    let addrs = tokio::net::lookup_host((host, port)).await.map_err(|e| {
        ConnectError::new(ConnectFailure::Other, format!("cannot resolve {host}: {e}"))
    })?;
    let mut first = None;
    for a in addrs {
        // Same family as the source address, when one is given.
        if source.is_none_or(|s| s.is_ipv4() == a.is_ipv4()) {
            return Ok(a);
        }
        first.get_or_insert(a);
    }
    first.ok_or_else(|| ConnectError::new(ConnectFailure::Other, format!("{host} has no address")))
}

/// One bounded step of the MQTT handshake.
async fn step<T>(f: impl Future<Output = std::io::Result<T>>) -> Result<T, ConnectError> {
    match tokio::time::timeout(STEP_TIMEOUT, f).await {
        Err(_) => Err(ConnectError::new(
            ConnectFailure::Timeout,
            format!("no answer from the broker within {STEP_TIMEOUT:?}"),
        )),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ConnectError::new(
            ConnectFailure::Closed,
            "the broker closed the connection during the handshake",
        )),
        Ok(Err(e)) => Err(io_failure(&e)),
        Ok(Ok(t)) => Ok(t),
    }
}

/// A failed read or write during the handshake: a TLS alert (TLS 1.3 sends a refused
/// client certificate after the handshake, at the first read) or another I/O error.
fn io_failure(e: &std::io::Error) -> ConnectError {
    if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
        ConnectError::new(ConnectFailure::Tls, super::tls::explain(e))
    } else {
        ConnectError::new(ConnectFailure::Other, e.to_string())
    }
}

/// Sends the handshake packet in `buf` and reads the answer, within [`STEP_TIMEOUT`].
async fn ask(
    stream: &mut Stream,
    buf: &mut BytesMut,
    version: MqttVersion,
) -> Result<Incoming, ConnectError> {
    step(async {
        stream.write_all(buf).await?;
        stream.flush().await?;
        buf.clear();
        loop {
            match wire::read(version, buf) {
                Ok(Some(p)) => return Ok(p),
                Ok(None) => {
                    if stream.read_buf(buf).await? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
    })
    .await
}

/// The WebSocket upgrade (subprotocol `mqtt`) on a TCP or TLS connection, within
/// [`STEP_TIMEOUT`].
async fn upgrade(
    transport: Transport,
    host: &str,
    port: u16,
    path: &str,
    tls: bool,
) -> Result<WebSocket, ConnectError> {
    use async_tungstenite::tungstenite::client::IntoClientRequest;
    let scheme = if tls { "wss" } else { "ws" };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let url = format!("{scheme}://{host}:{port}{path}");
    let mut request = url.as_str().into_client_request().map_err(|e| {
        ConnectError::new(
            ConnectFailure::Other,
            format!("bad WebSocket URL {url}: {e}"),
        )
    })?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        async_tungstenite::tungstenite::http::HeaderValue::from_static("mqtt"),
    );
    // tungstenite's default buffers are 128 KiB each way: 150 KiB a client, which a fleet
    // of 100,000 cannot have. The client writes its batches (at most `WRITE_LIMIT`) as one
    // frame each, so frames go out as they are made.
    let config = async_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(wire::MAX_PACKET))
        .max_frame_size(Some(wire::MAX_PACKET));
    match tokio::time::timeout(
        STEP_TIMEOUT,
        async_tungstenite::tokio::client_async_with_config(request, transport, Some(config)),
    )
    .await
    {
        Err(_) => Err(ConnectError::new(
            ConnectFailure::Timeout,
            format!("no WebSocket upgrade at {url} within {STEP_TIMEOUT:?}"),
        )),
        Ok(Err(e)) => Err(ConnectError::new(
            ConnectFailure::Other,
            format!("WebSocket upgrade at {url} failed: {e}"),
        )),
        Ok(Ok((ws, _response))) => Ok(ws_stream_tungstenite::WsStream::new(ws)),
    }
}

/// Exponential backoff with jitter for attempt `n` (from 0).
fn backoff(n: u32) -> Duration {
    let base = BACKOFF_MIN
        .saturating_mul(1u32 << n.min(10))
        .min(BACKOFF_MAX);
    base.mul_f64(0.5 + fastrand::f64())
}

/// Who a connection is.
#[derive(Debug, Clone)]
struct Identity {
    index: u32,
    client_id: String,
    topic: String,
    subscribe: Option<String>,
    /// Fleet clients churn (when the fleet asks for it); consumers never do.
    churns: bool,
}

/// One client's connection, reconnecting when it is lost.
pub struct Client {
    driver: MqttDriver,
    who: Identity,
    io: Option<Stream>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    next_pkid: u16,
    /// QoS 1/2 publishes not yet acknowledged, in order (resent after a reconnect).
    inflight: VecDeque<InFlight>,
    /// The most QoS 1/2 publishes in flight: the URL's `inflight`, at most the broker's
    /// receive maximum (MQTT 5).
    window: usize,
    /// MQTT 5 topic aliases: `None` without them (not asked for, or the broker takes
    /// none); else whether this connection has set alias 1 yet.
    alias_set: Option<bool>,
    /// MQTT 5 reason codes other than success, counted until the close.
    reasons: Vec<(wire::Reason, u64)>,
    /// Publishes the broker refused (a reason code of 0x80 or more) since the last drive,
    /// and the first one's reason.
    refused: u64,
    last_refusal: Option<String>,
    /// Acknowledgements not yet taken by the engine.
    acks: AckTimes,
    /// Keep-alive: the last write, and when the unanswered PINGREQ went out.
    last_write: tokio::time::Instant,
    ping_sent: Option<tokio::time::Instant>,
    /// One timer for keep-alive and churn, re-armed only when it fires (a new timer per
    /// wake-up would register with the runtime's timer wheel each time).
    timer: Pin<Box<tokio::time::Sleep>>,
    /// The next reconnect attempt, while disconnected.
    retry_at: tokio::time::Instant,
    /// The reconnect under way (after a churn: the goodbye first). Kept here, not in a
    /// `drive` future, so that a `drive` cancelled by a due send does not abandon an
    /// attempt half-way: the broker would count a connection the client never did.
    opening: Option<Opening>,
    attempt: u32,
    /// The next churn (disconnect and reconnect), when churning.
    churn_at: Option<tokio::time::Instant>,
    /// Messages that arrived on the client's own subscription.
    received: u64,
    /// Publishes a consumer took from the read buffer, in order.
    incoming: VecDeque<Bytes>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("who", &self.who)
            .field("connected", &self.io.is_some())
            .finish()
    }
}

/// A QoS 1/2 publish awaiting its acknowledgement.
#[derive(Debug)]
struct InFlight {
    pkid: u16,
    /// Its actual send time (ns, from its header; 0 when it has none).
    sent_ns: i64,
    payload: Bytes,
}

/// A connection being made, boxed so it outlives a cancelled `drive`.
type Opening =
    Pin<Box<dyn std::future::Future<Output = Result<(Stream, Granted), ConnectError>> + Send>>;

/// What one turn of driving the socket did.
enum Io {
    Wrote,
    Read,
}

impl Client {
    fn new(driver: MqttDriver, who: Identity, io: Stream, granted: Granted) -> Self {
        let now = tokio::time::Instant::now();
        let churn_at = who
            .churns
            .then(|| driver.churn_after(who.index, true))
            .flatten()
            .map(|d| now + d);
        let keep_alive = driver.0.keep_alive;
        let (window, alias_set) = driver.granted(granted);
        Client {
            driver,
            who,
            io: Some(io),
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            next_pkid: 0,
            inflight: VecDeque::new(),
            window,
            alias_set,
            reasons: Vec::new(),
            refused: 0,
            last_refusal: None,
            acks: AckTimes::default(),
            last_write: now,
            ping_sent: None,
            timer: Box::pin(tokio::time::sleep_until(
                churn_at.map_or(now + keep_alive, |c| c.min(now + keep_alive)),
            )),
            retry_at: now,
            opening: None,
            attempt: 0,
            churn_at,
            received: 0,
            incoming: VecDeque::new(),
        }
    }

    /// The SUT acknowledged the publish `pkid` (PUBACK at QoS 1, PUBCOMP at QoS 2): it
    /// leaves the window, timed from its actual send (a resent one: from its first).
    fn acked(&mut self, pkid: u16) {
        // Acknowledgements come in order: the oldest is almost always the one.
        if let Some(k) = self.inflight.iter().position(|s| s.pkid == pkid)
            && let Some(sent) = self.inflight.remove(k)
            && sent.sent_ns > 0
        {
            self.acks.push(sent.sent_ns, crate::engine::tasks::now_ns());
        }
    }

    fn pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
        self.next_pkid
    }

    /// The connection is gone: count it, and try again soon.
    fn lost(&mut self, reason: String) -> DriverError {
        self.io = None;
        self.rbuf.clear();
        self.wbuf.clear();
        self.ping_sent = None;
        self.driver.0.tracker.closed(true, false);
        self.retry_at = tokio::time::Instant::now() + backoff(0);
        self.attempt = 1;
        DriverError::ConnectionLost { reason }
    }

    /// Reconnects (when the retry time came) and resends what was not acknowledged.
    /// Cancel-safe: an attempt once begun goes on in [`Client::opening`].
    async fn reconnect(&mut self) -> Result<(), DriverError> {
        if self.opening.is_none() {
            tokio::time::sleep_until(self.retry_at).await;
            let (driver, who) = (self.driver.clone(), self.who.clone());
            self.opening = Some(Box::pin(async move { driver.open(&who).await }));
        }
        let Some(opening) = self.opening.as_mut() else {
            return Ok(());
        };
        let outcome = opening.await;
        self.opening = None;
        match outcome {
            Ok((io, granted)) => {
                self.reconnected(io, granted);
                Ok(())
            }
            Err(ConnectError { why, .. }) => {
                self.driver.0.tracker.failed(why);
                self.retry_at = tokio::time::Instant::now() + backoff(self.attempt);
                self.attempt = self.attempt.saturating_add(1);
                Ok(())
            }
        }
    }

    /// Connected again: counts it, resends what was not acknowledged, and sets the next
    /// churn.
    fn reconnected(&mut self, io: Stream, granted: Granted) {
        self.driver.0.tracker.opened(true);
        self.io = Some(io);
        self.attempt = 0;
        (self.window, self.alias_set) = self.driver.granted(granted);
        let now = tokio::time::Instant::now();
        self.last_write = now;
        self.ping_sent = None;
        for k in 0..self.inflight.len() {
            let alias = self.alias();
            let sent = &self.inflight[k];
            self.driver.0.form.put(
                &mut self.wbuf,
                &self.who.topic,
                alias,
                true,
                sent.pkid,
                &sent.payload,
            );
        }
        if self.who.churns {
            self.churn_at = self
                .driver
                .churn_after(self.who.index, false)
                .map(|d| now + d);
        }
        self.arm(now);
    }

    /// The topic alias of the next publish on this connection (see [`PublishForm::put`]):
    /// the first one sets alias 1, the next ones use it.
    #[inline]
    fn alias(&mut self) -> Option<bool> {
        let set = self.alias_set.as_mut()?;
        let first = !*set;
        *set = true;
        Some(first)
    }

    /// Counts an MQTT 5 reason code; a refused publish is also an error.
    fn reason(&mut self, reason: wire::Reason) {
        if reason.failed && reason.packet != "DISCONNECT" {
            self.refused += 1;
            if self.last_refusal.is_none() {
                self.last_refusal = Some(reason.name());
            }
        }
        match self
            .reasons
            .iter_mut()
            .find(|(r, _)| r.packet == reason.packet && r.key == reason.key)
        {
            Some((_, n)) => *n += 1,
            None => self.reasons.push((reason, 1)),
        }
    }

    /// Handles every whole packet in the read buffer; publishes are kept for a consumer
    /// (`keep`) or counted.
    fn handle(&mut self, keep: bool) -> Result<(), String> {
        let version = self.driver.0.options.version;
        loop {
            let Some(packet) =
                wire::read(version, &mut self.rbuf).map_err(|e| format!("{e} from the broker"))?
            else {
                return Ok(());
            };
            match packet {
                Incoming::Done { pkid, reason } => {
                    if let Some(r) = reason {
                        self.reason(r);
                    }
                    self.acked(pkid);
                }
                Incoming::Received { pkid, reason } => match reason {
                    // A refused QoS 2 publish ends at its PUBREC.
                    Some(r) if r.failed => {
                        self.reason(r);
                        self.acked(pkid);
                    }
                    other => {
                        if let Some(r) = other {
                            self.reason(r);
                        }
                        wire::ack(Ack::Pubrel, pkid, &mut self.wbuf);
                    }
                },
                Incoming::Release { pkid } => wire::ack(Ack::Pubcomp, pkid, &mut self.wbuf),
                Incoming::Publish { qos, pkid, payload } => {
                    match qos {
                        1 => wire::ack(Ack::Puback, pkid, &mut self.wbuf),
                        2 => wire::ack(Ack::Pubrec, pkid, &mut self.wbuf),
                        _ => {}
                    }
                    if keep {
                        self.incoming.push_back(payload);
                    } else {
                        self.received += 1;
                    }
                }
                Incoming::PingResp => self.ping_sent = None,
                Incoming::Disconnect(reason) => {
                    let why = reason.as_ref().map(wire::Reason::name);
                    if let Some(r) = reason {
                        self.reason(r);
                    }
                    return Err(match why {
                        Some(why) => format!("the broker sent DISCONNECT ({why})"),
                        None => "the broker sent DISCONNECT".into(),
                    });
                }
                Incoming::ConnAck(_) | Incoming::SubAck(_) | Incoming::Other => {}
            }
        }
    }

    /// Publishes the broker refused since the last call, as one error.
    fn refusals(&mut self) -> Result<(), DriverError> {
        if self.refused == 0 {
            return Ok(());
        }
        let failed = std::mem::take(&mut self.refused);
        let reason = self.last_refusal.take().unwrap_or_default();
        Err(DriverError::Rejected(super::Rejection::Refused {
            failed,
            reason,
        }))
    }

    /// Drives the connection until something happened: bytes written or read (and
    /// handled), a keep-alive ping, a churn, or a reconnect attempt.
    async fn turn(&mut self, keep: bool) -> Result<(), DriverError> {
        let Some(io) = self.io.as_mut() else {
            return self.reconnect().await;
        };
        let (rbuf, wbuf) = (&mut self.rbuf, &mut self.wbuf);
        let io_turn = std::future::poll_fn(|cx| {
            if !wbuf.is_empty() {
                match tokio_util::io::poll_write_buf(Pin::new(&mut *io), cx, wbuf) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(_)) => return Poll::Ready(Ok(Io::Wrote)),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            // TLS keeps records it could not write yet: push them out (a no-op for TCP).
            if let Poll::Ready(Err(e)) = tokio::io::AsyncWrite::poll_flush(Pin::new(&mut *io), cx) {
                return Poll::Ready(Err(e));
            }
            if rbuf.capacity() - rbuf.len() < 1024 {
                rbuf.reserve(4096);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, rbuf) {
                Poll::Ready(Ok(0)) => Poll::Ready(Err(std::io::ErrorKind::UnexpectedEof.into())),
                Poll::Ready(Ok(_)) => Poll::Ready(Ok(Io::Read)),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        });
        let event = tokio::select! {
            r = io_turn => Some(r),
            _ = self.timer.as_mut() => None,
        };
        match event {
            Some(Ok(Io::Wrote)) => {
                self.last_write = tokio::time::Instant::now();
                Ok(())
            }
            Some(Ok(Io::Read)) => {
                self.handle(keep).map_err(|reason| self.lost(reason))?;
                self.refusals()
            }
            Some(Err(e)) => Err(self.lost(e.to_string())),
            None => self.on_timer().await,
        }
    }

    /// The timer fired: churn, a keep-alive ping, or a ping that got no answer; then it
    /// is armed for what comes next.
    async fn on_timer(&mut self) -> Result<(), DriverError> {
        let now = tokio::time::Instant::now();
        let keep_alive = self.driver.0.keep_alive;
        if self.churn_at.is_some_and(|c| c <= now) {
            self.churn();
            self.arm(now);
            return Ok(());
        }
        match self.ping_sent {
            Some(sent) if now >= sent + keep_alive => {
                let e = self.lost(format!(
                    "no PINGRESP within the keep-alive of {keep_alive:?}"
                ));
                self.arm(now);
                return Err(e);
            }
            None if now >= self.last_write + keep_alive => {
                wire::ping(&mut self.wbuf);
                self.ping_sent = Some(now);
            }
            _ => {}
        }
        self.arm(now);
        Ok(())
    }

    /// Arms the timer for the next keep-alive check or churn.
    fn arm(&mut self, now: tokio::time::Instant) {
        let keep_alive = self.driver.0.keep_alive;
        let ping = match self.ping_sent {
            Some(sent) => sent + keep_alive,
            None => self.last_write + keep_alive,
        }
        .max(now + Duration::from_millis(10));
        let at = self.churn_at.map_or(ping, |c| c.min(ping));
        self.timer.as_mut().reset(at);
    }

    /// Disconnects politely and reconnects at once (counted as churn). Both go on in
    /// [`Client::opening`], driven by the next turns.
    fn churn(&mut self) {
        // The next churn is set when the connection is back.
        self.churn_at = None;
        let Some(io) = self.io.take() else {
            return;
        };
        self.driver.0.tracker.closed(false, true);
        wire::disconnect(&mut self.wbuf);
        let farewell = std::mem::take(&mut self.wbuf);
        self.rbuf.clear();
        self.ping_sent = None;
        let (driver, who) = (self.driver.clone(), self.who.clone());
        self.opening = Some(Box::pin(async move {
            say_goodbye(io, farewell).await;
            driver.open(&who).await
        }));
    }

    /// Sends DISCONNECT after what is buffered and lets the broker close the connection.
    async fn goodbye(&mut self) {
        if let Some(io) = self.io.take() {
            wire::disconnect(&mut self.wbuf);
            say_goodbye(io, std::mem::take(&mut self.wbuf)).await;
        }
        self.rbuf.clear();
        self.wbuf.clear();
    }

    async fn end(mut self) {
        let t = self.driver.0.tracker.clone();
        // A reconnect under way is seen through (briefly), so that every connection the
        // broker saw is counted.
        if let Some(opening) = self.opening.take() {
            match tokio::time::timeout(maestro_control::session::GOODBYE_TIMEOUT, opening).await {
                Ok(Ok((io, _))) => {
                    t.opened(true);
                    self.io = Some(io);
                }
                Ok(Err(ConnectError { why, .. })) => t.failed(why),
                Err(_) => t.failed(ConnectFailure::Timeout),
            }
        }
        let was_open = self.io.is_some();
        self.goodbye().await;
        if was_open {
            t.closed(false, false);
        }
        t.received(self.received);
        for (reason, n) in &self.reasons {
            t.reason(reason.name(), *n);
        }
    }
}

/// Writes `farewell` (ending in DISCONNECT), then lets the broker close the connection
/// (at most `session::GOODBYE_TIMEOUT`). Closing first would let rumqttd throw out the
/// next client to connect: see `maestro_control::session::goodbye`.
async fn say_goodbye(mut io: Stream, farewell: BytesMut) {
    let _ = tokio::time::timeout(maestro_control::session::GOODBYE_TIMEOUT, async {
        io.write_all(&farewell).await?;
        io.flush().await?;
        let mut discard = [0u8; 1024];
        while io.read(&mut discard).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

impl MqttDriver {
    /// A connection's window and topic aliases from what the broker granted.
    fn granted(&self, g: Granted) -> (usize, Option<bool>) {
        let d = &self.0;
        let window = g
            .receive_max
            .map_or(d.inflight, |max| d.inflight.min(usize::from(max.max(1))));
        let aliases = (d.form.aliases() && g.topic_alias_max >= 1).then_some(false);
        (window, aliases)
    }

    /// When client `index` churns next: its first churn is spread over one period by
    /// index (so the fleet does not reconnect at once).
    fn churn_after(&self, index: u32, first: bool) -> Option<Duration> {
        let period = Duration::from_millis(self.0.fleet.as_ref()?.churn_ms?);
        if first {
            let clients = f64::from(self.0.clients.max(1));
            Some(period + period.mul_f64(f64::from(index % self.0.clients.max(1)) / clients))
        } else {
            Some(period)
        }
    }
}

impl Producer for Client {
    #[inline]
    fn try_send(&mut self, payload: Bytes) -> Result<(), TrySendError> {
        if self.io.is_none() || self.wbuf.len() >= WRITE_LIMIT {
            return Err(TrySendError::Full);
        }
        let qos = self.driver.0.qos;
        let pkid = if qos > 0 {
            if self.inflight.len() >= self.window {
                return Err(TrySendError::Full);
            }
            self.pkid()
        } else {
            0
        };
        let alias = self.alias();
        self.driver.0.form.put(
            &mut self.wbuf,
            &self.who.topic,
            alias,
            false,
            pkid,
            &payload,
        );
        if qos > 0 {
            self.inflight.push_back(InFlight {
                pkid,
                sent_ns: sent_ns(&payload).unwrap_or(0),
                payload,
            });
        }
        Ok(())
    }

    fn room(&self) -> usize {
        if self.io.is_none() || self.wbuf.len() >= WRITE_LIMIT {
            return 0;
        }
        if self.driver.0.qos > 0 {
            self.window.saturating_sub(self.inflight.len())
        } else {
            // Bytes left to buffer, over a small message: enough for a batch.
            (WRITE_LIMIT - self.wbuf.len()) / 64 + 1
        }
    }

    async fn drive(&mut self) -> Result<(), DriverError> {
        self.turn(false).await
    }

    fn idle(&self) -> bool {
        self.wbuf.is_empty() && self.inflight.is_empty()
    }

    fn take_acks(&mut self, f: impl FnMut(i64, i64)) {
        self.acks.take(f);
    }

    fn has_acks(&self) -> bool {
        !self.acks.is_empty()
    }

    async fn close(self) {
        self.end().await
    }
}

/// A consumer: a client that subscribes and hands over what arrives.
#[derive(Debug)]
pub struct MqttConsumer(Client);

impl Consumer for MqttConsumer {
    async fn recv(&mut self) -> Result<Option<Bytes>, DriverError> {
        loop {
            // Taken from the buffer only here, so a cancelled `recv` loses nothing.
            if let Some(p) = self.0.incoming.pop_front() {
                return Ok(Some(p));
            }
            self.0.turn(true).await?;
        }
    }

    async fn close(self) {
        self.0.end().await
    }
}

impl Driver for MqttDriver {
    type Producer = Client;
    type Consumer = MqttConsumer;

    fn timings(&self) -> Timings {
        Timings {
            tls_handshake: self.0.tls.as_ref().and_then(|t| t.handshakes.snapshot()),
            connect: self.0.connects.snapshot(),
            subscribe: self.0.subscribes.snapshot(),
        }
    }

    fn connections(&self) -> Option<Arc<ConnectionTracker>> {
        Some(self.0.tracker.clone())
    }

    async fn producer(&self, plan: &ProducerPlan) -> Result<Client, DriverError> {
        self.first(self.producer_identity(plan)).await
    }

    async fn consumer(&self, plan: &ConsumerPlan) -> Result<MqttConsumer, DriverError> {
        Ok(MqttConsumer(
            self.first(self.consumer_identity(plan)).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap() {
        assert!(backoff(0) <= BACKOFF_MIN.mul_f64(1.5));
        assert!(backoff(20) <= BACKOFF_MAX.mul_f64(1.5));
        assert!(backoff(20) >= BACKOFF_MAX.mul_f64(0.5));
    }
}
