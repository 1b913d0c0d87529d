//! MQTT (3.1.1) with rumqttc.
//!
//! `mqtt[s]://[user:pass@]host[:port][/base-topic][?options]`, options:
//! `qos` (0, 1, 2; default 0), `retain` (default false), `clean_session` (default true),
//! `keep_alive` (default 30s), `client_id_prefix` (default `maestro`), `inflight`
//! (QoS 1/2 window, default 100). Topic `i` of a run is `<base-topic>/<run-id>/<i>`
//! (base default `maestro`). `mqtts://` connects with TLS ([`super::tls`]); the handshake
//! of each connection is timed from inside rustls, since rumqttc makes the TCP
//! connection, the TLS handshake and the MQTT CONNECT in one call.

use super::tls::{TlsClient, timed};
use super::{
    AckTimes, Consumer, Driver, DriverError, Durations, Producer, Timings, TrySendError, sent_ns,
};
use bytes::Bytes;
use futures_util::Stream;
use maestro_protocol::sut::{MqttOptions as Options, Qos};
use maestro_protocol::{ConsumerPlan, ProducerPlan, RunId, SutOptions, SutUrl};
use rumqttc::{
    AsyncClient, ClientError, ConnectionError, Event, EventLoop, MqttOptions, NetworkOptions,
    Packet, QoS, TlsConfiguration, Transport,
};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// How long connecting and subscribing may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests a client may queue before `try_send` reports `Full`.
const QUEUE: usize = 1024;

#[derive(Debug, Clone)]
pub struct MqttDriver {
    /// The URL without password, for messages.
    url: String,
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
    base: String,
    run: RunId,
    pub qos: QoS,
    retain: bool,
    clean_session: bool,
    keep_alive: Duration,
    client_id_prefix: String,
    inflight: u16,
    /// TLS (`mqtts://`), built once for all clients of the run.
    tls: Option<Arc<TlsClient>>,
    /// Time to CONNACK and to SUBACK of this run's clients.
    connects: Durations,
    subscribes: Durations,
}

impl MqttDriver {
    /// A driver for `url`, whose options are `o` (parsed once, in [`SutUrl`]). Fails when
    /// the TLS files cannot be read.
    pub fn new(url: &SutUrl, o: &Options, run: &RunId) -> Result<Self, DriverError> {
        let host = url.host();
        let tls = TlsClient::for_url(url)?;
        Ok(MqttDriver {
            url: url.redacted(),
            host: host.name.clone(),
            port: host.port,
            credentials: url
                .credentials
                .as_ref()
                .map(|c| (c.user.clone(), c.password.clone())),
            base: o.base_topic.clone(),
            run: run.clone(),
            qos: match o.qos {
                Qos::AtMostOnce => QoS::AtMostOnce,
                Qos::AtLeastOnce => QoS::AtLeastOnce,
                Qos::ExactlyOnce => QoS::ExactlyOnce,
            },
            retain: o.retain,
            clean_session: o.clean_session,
            keep_alive: o.keep_alive,
            client_id_prefix: o.client_id_prefix.clone(),
            inflight: o.inflight,
            tls,
            connects: Durations::default(),
            subscribes: Durations::default(),
        })
    }

    /// A driver for an MQTT URL (tests and benchmarks).
    pub fn from_url(raw: &str, run: &RunId) -> Result<Self, DriverError> {
        let url = SutUrl::parse(raw).map_err(DriverError::from)?;
        match &url.options {
            SutOptions::Mqtt(o) => Self::new(&url, o, run),
            _ => Err(DriverError::Sut(format!("{url} is not an MQTT URL"))),
        }
    }

    /// The SUT topic of topic index `i`.
    pub fn topic(&self, i: u32) -> String {
        format!("{}/{}/{}", self.base, self.run, i)
    }

    fn options(&self, client_id: String) -> Result<MqttOptions, DriverError> {
        let transport = match &self.tls {
            Some(tls) => Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.config_for(&client_id).map_err(|e| DriverError::Tls {
                    url: self.url.clone(),
                    reason: e.to_string(),
                })?,
            )),
            None => Transport::tcp(),
        };
        let mut o = MqttOptions::new(client_id, self.host.clone(), self.port);
        o.set_transport(transport);
        o.set_keep_alive(self.keep_alive)
            .set_clean_session(self.clean_session)
            // rumqttc keeps a slot per in-flight publish (about 7 KiB for 100); QoS 0 has
            // nothing in flight, so a fleet of QoS 0 producers needs none.
            .set_inflight(if self.qos == QoS::AtMostOnce {
                1
            } else {
                self.inflight
            })
            .set_max_packet_size(16 << 20, 16 << 20);
        if let Some((u, p)) = &self.credentials {
            o.set_credentials(u.clone(), p.clone());
        }
        Ok(o)
    }

    async fn connect(&self, client_id: String) -> Result<(AsyncClient, EventLoop), DriverError> {
        let (client, mut eventloop) = AsyncClient::new(self.options(client_id)?, QUEUE);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
        eventloop.set_network_options(net);
        let unreachable = |reason: String| DriverError::Unreachable {
            url: self.url.clone(),
            reason,
        };
        let began = std::time::Instant::now();
        let (first, handshake) =
            timed(tokio::time::timeout(CONNECT_TIMEOUT, eventloop.poll())).await;
        if let (Some(tls), Some(took)) = (&self.tls, handshake) {
            tls.handshakes.record(took);
        }
        match first {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                self.connects.record(began.elapsed());
                Ok((client, eventloop))
            }
            Ok(Ok(other)) => Err(unreachable(format!("unexpected first packet {other:?}"))),
            Ok(Err(e)) => Err(unreachable(describe(&e))),
            Err(_) => Err(unreachable(format!(
                "no MQTT handshake within {CONNECT_TIMEOUT:?}"
            ))),
        }
    }
}

/// Disconnects politely: writes out what is queued, sends DISCONNECT and lets the broker
/// close the connection (see `session::goodbye`; 2 s at most).
async fn disconnect(client: &AsyncClient, eventloop: &mut EventLoop) {
    maestro_control::session::goodbye(client, eventloop).await;
}

/// Percent-decoding (RFC 3986), not form decoding: `+` in a password stays a plus.
fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused".into()
        }
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the connection: {code:?}")
        }
        other => super::tls::explain(other),
    }
}

impl Driver for MqttDriver {
    type Producer = MqttProducer;
    type Consumer = MqttConsumer;

    fn timings(&self) -> Timings {
        Timings::of(self.tls.as_deref(), &self.connects, Some(&self.subscribes))
    }

    async fn producer(&self, plan: &ProducerPlan) -> Result<MqttProducer, DriverError> {
        let id = format!("{}-{}-p{}", self.client_id_prefix, self.run, plan.id);
        let (client, eventloop) = self.connect(id).await?;
        Ok(MqttProducer {
            client,
            poller: Poller::new(eventloop),
            topic: self.topic(plan.topic),
            qos: self.qos,
            retain: self.retain,
            queued: 0,
            handed: VecDeque::with_capacity(QUEUE),
            in_flight: Vec::new(),
            acks: AckTimes::default(),
        })
    }

    async fn consumer(&self, plan: &ConsumerPlan) -> Result<MqttConsumer, DriverError> {
        let id = format!("{}-{}-c{}", self.client_id_prefix, self.run, plan.id);
        let (client, mut eventloop) = self.connect(id).await?;
        let topic = self.topic(plan.topic);
        let sut = |reason: String| DriverError::Unreachable {
            url: self.url.clone(),
            reason,
        };
        let began = std::time::Instant::now();
        client
            .subscribe(topic.clone(), self.qos)
            .await
            .map_err(|e| sut(e.to_string()))?;
        let subscribed = async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        return match ack.return_codes.first() {
                            Some(rumqttc::SubscribeReasonCode::Failure) | None => {
                                Err(sut(format!("subscription to {topic:?} refused")))
                            }
                            Some(_) => Ok(()),
                        };
                    }
                    Ok(_) => {}
                    Err(e) => return Err(sut(describe(&e))),
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, subscribed)
            .await
            .map_err(|_| sut(format!("no SUBACK within {CONNECT_TIMEOUT:?}")))??;
        self.subscribes.record(began.elapsed());
        Ok(MqttConsumer {
            client,
            eventloop,
            topic,
            qos: self.qos,
        })
    }
}

/// rumqttc's `EventLoop::poll` is not cancel-safe: it takes a request from its queue,
/// gives a QoS 1/2 publish its packet id, then waits for room to write it. Dropped while
/// it waits (a partition, a stopped broker: the socket's buffer is full), the publish is
/// lost with its packet id still taken; that id is never acknowledged, the next publish
/// that needs it "collides", and the client sends nothing more. The engine races
/// `drive` against its timers, so the poll lives here across calls: a `drive` that is
/// dropped leaves it to be resumed by the next one. (Seen with a 2 s iptables partition:
/// 17 publishes vanished and the producer stalled for the rest of the run.)
///
/// The event loop is polled by one long-lived stream, boxed once, that owns it: an event
/// costs a resumption of that stream, no allocation and no move. (A boxed future per poll
/// cost the producer ~15 % of its publish rate; a reused box that a new 1.7 KB poll
/// future was written into per event still cost a few percent.)
struct Poller {
    events: Pin<Box<dyn Stream<Item = Polled> + Send>>,
    /// Publishes awaiting their acknowledgement, as of the last completed poll.
    inflight: u16,
    /// Events rumqttc has read and not yet handed out, as of the last completed poll. It
    /// reads packets in batches: the last PUBACK can wait here after `inflight` is 0.
    pending: usize,
}

/// One `EventLoop::poll`'s result, with the event loop's state after it.
struct Polled {
    result: Result<Event, ConnectionError>,
    inflight: u16,
    pending: usize,
}

impl Poller {
    fn new(mut eventloop: EventLoop) -> Self {
        let (inflight, pending) = (eventloop.state.inflight(), eventloop.state.events.len());
        let events = Box::pin(async_stream::stream! {
            loop {
                let result = eventloop.poll().await;
                yield Polled {
                    result,
                    inflight: eventloop.state.inflight(),
                    pending: eventloop.state.events.len(),
                };
            }
        });
        Self {
            events,
            inflight,
            pending,
        }
    }

    /// `EventLoop::poll`, resumed where a dropped call left it.
    async fn poll(&mut self) -> Result<Event, ConnectionError> {
        use futures_util::StreamExt;
        let Some(polled) = self.events.next().await else {
            return Err(ConnectionError::RequestsDone);
        };
        self.inflight = polled.inflight;
        self.pending = polled.pending;
        polled.result
    }
}

#[allow(missing_debug_implementations)] // rumqttc's EventLoop has no Debug
pub struct MqttProducer {
    client: AsyncClient,
    poller: Poller,
    topic: String,
    qos: QoS,
    retain: bool,
    /// Publishes handed over and not yet written out.
    queued: usize,
    /// QoS 1/2: the actual send times of the publishes handed over and not yet written
    /// out, in order (rumqttc gives each its packet id as it writes it).
    handed: VecDeque<i64>,
    /// Per packet id: the actual send time of the publish in flight with it.
    in_flight: Vec<i64>,
    acks: AckTimes,
}

impl MqttProducer {
    /// The SUT acknowledged the publish with packet id `pkid`.
    fn acked(&mut self, pkid: u16) {
        if let Some(sent) = self.in_flight.get_mut(usize::from(pkid)) {
            if *sent > 0 {
                self.acks.push(*sent, crate::engine::tasks::now_ns());
            }
            *sent = 0;
        }
    }
}

impl Producer for MqttProducer {
    #[inline]
    fn try_send(&mut self, payload: Bytes) -> Result<(), TrySendError> {
        use futures_util::FutureExt;
        // QoS 1/2: its send time, for the acknowledgement.
        let sent = (self.qos != QoS::AtMostOnce).then(|| sent_ns(&payload).unwrap_or(0));
        // rumqttc's `try_publish` copies the payload into a Vec; `publish_bytes` keeps the
        // `Bytes`. Its send completes at once while the request queue has room (`room`
        // keeps it so); when it does not, the message is dropped unsent, as Full.
        match self
            .client
            .publish_bytes(self.topic.as_str(), self.qos, self.retain, payload)
            .now_or_never()
        {
            Some(Ok(())) => {
                self.queued += 1;
                if let Some(sent) = sent {
                    self.handed.push_back(sent);
                }
                Ok(())
            }
            None | Some(Err(ClientError::TryRequest(_))) => Err(TrySendError::Full),
            Some(Err(e)) => Err(TrySendError::Closed(e.to_string())),
        }
    }

    #[inline]
    fn room(&self) -> usize {
        QUEUE.saturating_sub(self.queued)
    }

    async fn drive(&mut self) -> Result<(), DriverError> {
        match self.poller.poll().await {
            Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => {
                self.queued = self.queued.saturating_sub(1);
                // Retransmissions after a reconnect were not handed over again: they find
                // the queue empty (cleared at the error) and go unmeasured.
                if let Some(sent) = self.handed.pop_front()
                    && pkid > 0
                {
                    let i = usize::from(pkid);
                    if self.in_flight.len() <= i {
                        self.in_flight.resize(i + 1, 0);
                    }
                    self.in_flight[i] = sent;
                }
                Ok(())
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) if self.qos == QoS::AtLeastOnce => {
                self.acked(ack.pkid);
                Ok(())
            }
            Ok(Event::Incoming(Packet::PubComp(ack))) if self.qos == QoS::ExactlyOnce => {
                self.acked(ack.pkid);
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => {
                // A new clean session drops what was queued without telling: start over.
                self.queued = 0;
                self.handed.clear();
                self.in_flight.iter_mut().for_each(|t| *t = 0);
                Err(DriverError::Sut(describe(&e)))
            }
        }
    }

    fn take_acks(&mut self, f: impl FnMut(i64, i64)) {
        self.acks.take(f);
    }

    fn has_acks(&self) -> bool {
        !self.acks.is_empty()
    }

    /// Nothing to write and nothing to hear: the last acknowledgements are timed too.
    fn idle(&self) -> bool {
        self.queued == 0 && self.poller.inflight == 0 && self.poller.pending == 0
    }

    /// Says goodbye through the poller: a poll in progress (an idle connection always has
    /// one, waiting for the network) takes the DISCONNECT from the queue and completes
    /// with it. Waiting for that poll to end by itself first held every idle producer for
    /// its whole limit (2 s) when a run was stopped before its start.
    async fn close(mut self) {
        use maestro_control::session::GOODBYE_TIMEOUT;
        if self.client.try_disconnect().is_err() {
            return;
        }
        let deadline = tokio::time::Instant::now() + GOODBYE_TIMEOUT;
        let sent = tokio::time::timeout_at(deadline, async {
            loop {
                match self.poller.poll().await {
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return true,
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
        })
        .await
        .unwrap_or(false);
        // The broker closes the connection once it has read the DISCONNECT.
        if sent {
            let _ = tokio::time::timeout_at(deadline, async {
                while self.poller.poll().await.is_ok() {}
            })
            .await;
        }
    }
}

#[allow(missing_debug_implementations)] // rumqttc's EventLoop has no Debug
pub struct MqttConsumer {
    client: AsyncClient,
    eventloop: EventLoop,
    topic: String,
    qos: QoS,
}

impl Consumer for MqttConsumer {
    #[inline]
    async fn recv(&mut self) -> Result<Option<Bytes>, DriverError> {
        match self.eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => Ok(Some(p.payload)),
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                // Reconnected: a clean session lost the subscription.
                if !ack.session_present {
                    let _ = self.client.try_subscribe(self.topic.clone(), self.qos);
                }
                Ok(None)
            }
            Ok(_) => Ok(None),
            Err(e) => Err(DriverError::Sut(describe(&e))),
        }
    }

    async fn close(mut self) {
        disconnect(&self.client, &mut self.eventloop).await;
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
        let d = MqttDriver::from_url(
            "mqtt://u:p%40w@127.0.0.1:1884/bench?qos=1&retain=true&keep_alive=10s&inflight=20&client_id_prefix=x",
            &run(),
        )
        .unwrap();
        assert_eq!((d.host.as_str(), d.port), ("127.0.0.1", 1884));
        assert_eq!(d.credentials, Some(("u".into(), "p@w".into())));
        assert_eq!(d.qos, QoS::AtLeastOnce);
        assert!(d.retain);
        assert_eq!(d.keep_alive, Duration::from_secs(10));
        assert_eq!(d.inflight, 20);
        assert_eq!(d.topic(3), "bench/r1/3");
        assert_eq!(
            d.url,
            "mqtt://u:***@127.0.0.1:1884/bench?qos=1&retain=true&keep_alive=10s&inflight=20&client_id_prefix=x"
        );
        assert_eq!(
            MqttDriver::from_url("mqtt://h", &run()).unwrap().topic(0),
            "maestro/r1/0"
        );
        assert!(MqttDriver::from_url("amqp://h", &run()).is_err());
    }
}
