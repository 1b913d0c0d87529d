//! The peer runtime shared by workers and the inspector.
//!
//! A peer connects to the control broker (retrying with backoff, one log line while it is
//! unreachable), subscribes to its request topics, publishes a retained `online` presence
//! and leaves a retained `offline` presence as its last will. It answers ping, stats and
//! halt itself and passes every other request to its role's [`Handler`]. Bad input is
//! counted, answered with an error note when it has a reply address, and logged once per
//! kind. On shutdown it clears its presence and disconnects.

use crate::session::{self, now};
use crate::url::ControlUrl;
use maestro_protocol::signing::{ReplayGuard, SignatureError};
use maestro_protocol::{
    Body, ClusterId, DecodeFailure, ErrorCode, ErrorNote, Halted, Note, NoteId, PeerId, PeerInfo,
    PeerState, Pong, Presence, PresenceStatus, Sender, Stats, Topics, UnixMicros, decode,
};
use rumqttc::{AsyncClient, Event, LastWill, Packet, Publish};
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long a peer waits before asking again for subscriptions the broker refused.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// How a peer joins the cluster.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub url: ControlUrl,
    pub cluster: ClusterId,
    pub info: PeerInfo,
    /// Signs this peer's notes and makes it refuse requests not signed by a controller
    /// (`--keys`).
    pub signer: session::Signer,
    /// Serve the peer's health metrics here (`--metrics-listen`).
    pub metrics_listen: Option<crate::metrics::MetricsListen>,
}

/// A peer's health as Prometheus gauges (`--metrics-listen`), set as its loop runs.
#[derive(Debug, Default)]
struct Health {
    connected: prometheus_client::metrics::gauge::Gauge,
    reconnects: prometheus_client::metrics::gauge::Gauge,
    notes_received: prometheus_client::metrics::gauge::Gauge,
    bad_notes: prometheus_client::metrics::gauge::Gauge,
    refused_notes: prometheus_client::metrics::gauge::Gauge,
}

impl Health {
    fn registry(&self, info: &PeerInfo) -> prometheus_client::registry::Registry {
        let mut r = prometheus_client::registry::Registry::with_prefix_and_labels(
            "maestro_peer",
            [
                ("role".into(), info.role.as_str().into()),
                ("name".into(), info.name.clone().into()),
            ]
            .into_iter(),
        );
        let started = prometheus_client::metrics::gauge::Gauge::<i64>::default();
        started.set(info.started_at_us.0 / 1_000_000);
        r.register(
            "started_seconds",
            "When the peer started (Unix time)",
            started,
        );
        r.register(
            "connected",
            "1 while connected to the control broker",
            self.connected.clone(),
        );
        r.register(
            "reconnects",
            "Control connections after the first",
            self.reconnects.clone(),
        );
        r.register(
            "notes_received",
            "Notes received on the request topics",
            self.notes_received.clone(),
        );
        r.register(
            "bad_notes",
            "Notes that could not be handled",
            self.bad_notes.clone(),
        );
        r.register(
            "refused_notes",
            "Notes refused as unsigned, wrongly signed, replayed or stale",
            self.refused_notes.clone(),
        );
        r
    }
}

impl PeerConfig {
    pub fn keep_alive(&self) -> Duration {
        Duration::from_millis(self.info.keep_alive_ms)
    }
}

/// Where a reply to one request goes.
#[derive(Debug, Clone)]
pub struct ReplyTo {
    pub topic: String,
    pub request: NoteId,
}

/// Publishes a peer's notes from any task or thread: late replies and events. Publishing
/// never blocks; a note that does not fit the client's queue is dropped with a warning.
#[derive(Debug, Clone)]
pub struct Outbox {
    client: AsyncClient,
    sender: Sender,
    topics: Topics,
    /// Controllers whose liveness this peer watches (subscribed again on reconnect).
    watched: Arc<Mutex<BTreeSet<PeerId>>>,
    signer: session::Signer,
}

impl Outbox {
    /// Answers a request.
    pub fn reply(&self, to: &ReplyTo, body: Body) {
        let mut note = Note::new(self.sender.clone(), body, now());
        note.correlation_id = Some(to.request);
        self.publish(&to.topic, &note, session::NOTE_QOS);
    }

    /// Publishes an event of this peer (`event/<peer>/<kind>`). `reliable` events (results)
    /// go at QoS 1.
    pub fn event(&self, kind: &str, body: Body, reliable: bool) {
        let note = Note::new(self.sender.clone(), body, now());
        let qos = if reliable {
            session::PRESENCE_QOS
        } else {
            session::NOTE_QOS
        };
        self.publish(&self.topics.event(&self.sender.id, kind), &note, qos);
    }

    /// Watches a controller's liveness topic: its last will reaches
    /// [`Handler::on_controller`]. Kept across reconnects until [`Outbox::unwatch`].
    pub fn watch(&self, controller: &PeerId) {
        lock(&self.watched).insert(controller.clone());
        let topic = self.topics.controller(controller);
        if let Err(e) = self.client.try_subscribe(&topic, session::PRESENCE_QOS) {
            warn!(topic, error = %e, "could not queue the controller subscription");
        }
    }

    pub fn unwatch(&self, controller: &PeerId) {
        if lock(&self.watched).remove(controller) {
            let _ = self
                .client
                .try_unsubscribe(self.topics.controller(controller));
        }
    }

    fn publish(&self, topic: &str, note: &Note, qos: rumqttc::QoS) {
        let bytes = self.signer.encode(topic, note);
        if bytes.len() > maestro_protocol::MAX_NOTE_BYTES {
            // The broker would drop the connection over it, and no peer would read it.
            error!(
                topic,
                kind = note.body.kind(),
                size = bytes.len(),
                max = maestro_protocol::MAX_NOTE_BYTES,
                "note over the limit not sent"
            );
            return;
        }
        if let Err(e) = self.client.try_publish(topic, qos, false, bytes) {
            warn!(topic, kind = note.body.kind(), error = %e, "note dropped: control client queue full");
        }
    }
}

/// The part of a peer that depends on its role.
pub trait Handler: Send {
    /// Called once, before any request, with the handle for late replies and events.
    fn attach(&mut self, _outbox: Outbox) {}

    /// What the peer is doing, for stats.
    fn state(&self) -> PeerState {
        PeerState::Idle
    }

    /// The run the peer is part of, for stats.
    fn run(&self) -> Option<maestro_protocol::RunId> {
        None
    }

    /// A watched controller's liveness changed (`false`: its last will fired, or it said
    /// goodbye).
    fn on_controller(&mut self, _controller: &PeerId, _online: bool) {}

    /// Any request other than ping, stats and halt. Returns the reply body now, or `None`
    /// when it will answer later through the [`Outbox`].
    fn handle(&mut self, note: &Note, _reply: ReplyTo) -> Option<Body> {
        Some(Body::Error(ErrorNote {
            code: ErrorCode::Unsupported,
            message: format!("this peer does not handle {:?} notes", note.body.kind()),
        }))
    }
}

/// A peer with no role-specific requests (yet): always idle.
#[derive(Debug, Default)]
pub struct IdleHandler;

impl Handler for IdleHandler {}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("keep-alive of {0:?} is out of range: use 1 s to 65535 s")]
    KeepAlive(Duration),
    #[error("cannot start the peer: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Url(#[from] crate::url::UrlError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

/// Runs a peer until `shutdown` is cancelled or a halt note arrives (which cancels it).
pub async fn run(
    config: PeerConfig,
    mut handler: impl Handler,
    shutdown: CancellationToken,
) -> Result<(), PeerError> {
    let keep_alive = config.keep_alive();
    if keep_alive < Duration::from_secs(1) || keep_alive > Duration::from_secs(u16::MAX.into()) {
        return Err(PeerError::KeepAlive(keep_alive));
    }
    let topics = Topics::new(&config.cluster);
    let info = &config.info;
    let presence_topic = topics.presence(&info.id);
    let sender = Sender {
        id: info.id.clone(),
        role: info.role,
        name: info.name.clone(),
    };
    let signer = config.signer.clone();
    let presence = |status| {
        signer.encode(
            &presence_topic,
            &Note::new(
                sender.clone(),
                Body::Presence(Presence {
                    status,
                    peer: info.clone(),
                }),
                now(),
            ),
        )
    };
    let will = LastWill::new(
        presence_topic.clone(),
        presence(PresenceStatus::Offline),
        session::PRESENCE_QOS,
        true,
    );
    let (client, mut eventloop) = session::open(&config.url, &info.id, keep_alive, Some(will))?;
    let watched = Arc::new(Mutex::new(BTreeSet::new()));
    handler.attach(Outbox {
        client: client.clone(),
        sender: sender.clone(),
        topics: topics.clone(),
        watched: watched.clone(),
        signer: signer.clone(),
    });
    let health = Health::default();
    if let Some(addr) = config.metrics_listen {
        let registry = std::sync::Arc::new(Mutex::new(health.registry(info)));
        // The server stops with the peer (its task ends with the token).
        let _ = crate::metrics::serve(addr, registry, shutdown.clone()).await?;
    }
    let mut peer = PeerLoop {
        health,
        handler,
        client,
        topics,
        sender: sender.clone(),
        info: info.clone(),
        started: Instant::now(),
        connected_since: now(),
        connections: 0,
        notes_received: 0,
        bad_notes: 0,
        logged_bad: HashSet::new(),
        shutdown: shutdown.clone(),
        watched,
        refused_subscriptions: 0,
        signer: signer.clone(),
        replays: ReplayGuard::default(),
        refused_notes: 0,
    };
    let mut link = Link::default();

    info!(peer = %info.id, name = %info.name, role = %info.role, url = %config.url,
        cluster = %config.cluster, "starting");
    let mut resubscribe_at: Option<tokio::time::Instant> = None;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = async {
                match resubscribe_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                resubscribe_at = None;
                if link.connected {
                    peer.subscribe();
                }
                continue;
            }
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if peer.on_suback(&ack) {
                    resubscribe_at = Some(tokio::time::Instant::now() + RESUBSCRIBE_AFTER);
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                link.up(&config.url);
                peer.health.connected.set(1);
                peer.connections += 1;
                peer.connected_since = now();
                peer.on_connected(&presence_topic, presence(PresenceStatus::Online));
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => peer.on_publish(publish),
            Ok(_) => {}
            Err(error) => {
                peer.health.connected.set(0);
                let delay = link.down(&config.url, &error);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    if link.connected {
        // Clear the retained presence: a peer that left on purpose is not "offline".
        let _ = peer
            .client
            .try_publish(&presence_topic, session::PRESENCE_QOS, true, Vec::new());
        if !session::goodbye(&peer.client, &mut eventloop).await {
            warn!("control broker did not take the goodbye in time");
        }
    }
    info!(peer = %info.id, "stopped");
    Ok(())
}

/// The peer's connection to the control broker: up, or down since when (said once),
/// and the backoff of its reconnects.
struct Link {
    connected: bool,
    unreachable_since: Option<Instant>,
    backoff: session::Backoff,
}

impl Default for Link {
    fn default() -> Self {
        Self {
            connected: false,
            unreachable_since: None,
            backoff: session::backoff(),
        }
    }
}

impl Link {
    fn up(&mut self, url: &impl std::fmt::Display) {
        self.connected = true;
        self.backoff = session::backoff();
        match self.unreachable_since.take() {
            Some(since) => info!(url = %url, down_for = ?since.elapsed(),
                "control broker reachable again; re-announcing"),
            None => info!(url = %url, "connected to control broker"),
        }
    }

    /// The connection failed: how long to wait before the next try.
    fn down(&mut self, url: &impl std::fmt::Display, error: &rumqttc::ConnectionError) -> Duration {
        self.connected = false;
        if self.unreachable_since.is_none() {
            self.unreachable_since = Some(Instant::now());
            let reason = crate::tls::explain(error);
            warn!(url = %url, %reason, "control broker unreachable; retrying with backoff");
        } else {
            debug!(url = %url, %error, "control broker still unreachable");
        }
        self.backoff.next().unwrap_or(Duration::from_secs(5))
    }
}

struct PeerLoop<H> {
    health: Health,
    handler: H,
    client: AsyncClient,
    topics: Topics,
    sender: Sender,
    info: PeerInfo,
    started: Instant,
    connected_since: UnixMicros,
    connections: u64,
    notes_received: u64,
    bad_notes: u64,
    /// Bad-input kinds already logged at warn level.
    logged_bad: HashSet<ErrorCode>,
    shutdown: CancellationToken,
    watched: Arc<Mutex<BTreeSet<PeerId>>>,
    /// Subscription attempts refused in a row.
    refused_subscriptions: u32,
    signer: session::Signer,
    /// Refuses replayed and stale requests (signed clusters).
    replays: ReplayGuard,
    /// Notes refused as unsigned, wrongly signed, replayed or stale.
    refused_notes: u64,
}

impl<H: Handler> PeerLoop<H> {
    /// A subscription acknowledgement: true when the broker refused some (the peer tries
    /// again later).
    fn on_suback(&mut self, ack: &rumqttc::SubAck) -> bool {
        let refused = ack
            .return_codes
            .iter()
            .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
            .count();
        if refused > 0 {
            self.refused_subscriptions += 1;
            if self.refused_subscriptions == 1 {
                warn!(
                    refused,
                    "the control broker refused subscriptions; retrying until it grants them"
                );
            } else {
                debug!(refused, "subscriptions refused again; retrying");
            }
            return true;
        }
        if self.refused_subscriptions > 0 {
            info!(
                attempts = self.refused_subscriptions + 1,
                "subscriptions granted"
            );
            self.refused_subscriptions = 0;
        }
        false
    }

    /// Subscribes to the request topics and to every watched controller.
    fn subscribe(&mut self) {
        let mut filters: Vec<rumqttc::SubscribeFilter> = self
            .topics
            .requests_for(&self.info.id, self.info.role, &self.info.group)
            .into_iter()
            .map(|t| rumqttc::SubscribeFilter::new(t, session::NOTE_QOS))
            .collect();
        filters.extend(lock(&self.watched).iter().map(|c| {
            rumqttc::SubscribeFilter::new(self.topics.controller(c), session::PRESENCE_QOS)
        }));
        if let Err(e) = self.client.try_subscribe_many(filters) {
            warn!(error = %e, "could not queue the request subscriptions");
        }
    }

    fn on_connected(&mut self, presence_topic: &str, online: Vec<u8>) {
        self.subscribe();
        if let Err(e) = self
            .client
            .try_publish(presence_topic, session::PRESENCE_QOS, true, online)
        {
            warn!(error = %e, "could not queue the presence note");
        }
    }

    fn on_publish(&mut self, publish: Publish) {
        self.on_publish_inner(publish);
        let h = &self.health;
        h.notes_received.set(self.notes_received as i64);
        h.bad_notes.set(self.bad_notes as i64);
        h.refused_notes.set(self.refused_notes as i64);
        h.reconnects.set(self.connections.saturating_sub(1) as i64);
    }

    fn on_publish_inner(&mut self, publish: Publish) {
        let received_at = now();
        self.notes_received += 1;
        let note = match decode(&publish.payload) {
            Ok(note) => note,
            Err(failure) => return self.on_bad_note(&publish, failure),
        };
        let is_controller = self.topics.controller_peer(&publish.topic).is_some();
        if let Err(why) = self
            .signer
            .verify(&publish.topic, &publish.payload)
            .and_then(|()| {
                // A controller's presence is retained: it may be old, and is seen again.
                if is_controller || !self.signer.is_on() {
                    Ok(())
                } else {
                    self.replays.check(note.id, note.sent_at_us, received_at)
                }
            })
        {
            return self.refuse(&publish, &note, why);
        }
        if let Some(controller) = self.topics.controller_peer(&publish.topic) {
            if let Body::Presence(p) = &note.body
                && p.peer.id == controller
            {
                let online = p.status == PresenceStatus::Online;
                self.handler.on_controller(&controller, online);
            }
            return;
        }
        let Some(reply_to) = note.reply_to.as_deref() else {
            debug!(
                kind = note.body.kind(),
                "request without reply address; ignored"
            );
            return;
        };
        if !self.topics.is_reply_topic(reply_to) {
            self.bad_notes += 1;
            self.log_bad(
                ErrorCode::Malformed,
                &publish,
                &format!("reply_to {reply_to:?} is not a reply topic of this cluster"),
            );
            return;
        }
        let mut halt = false;
        let body = match &note.body {
            Body::Ping(_) => Body::Pong(Pong {
                ping_sent_at_us: note.sent_at_us,
                received_at_us: received_at,
            }),
            Body::StatsRequest(_) => Body::Stats(self.stats()),
            Body::Halt(_) => {
                halt = true;
                info!(from = %note.sender.id, "halt requested");
                Body::Halted(Halted {})
            }
            _ => {
                let reply = ReplyTo {
                    topic: reply_to.to_owned(),
                    request: note.id,
                };
                match self.handler.handle(&note, reply) {
                    Some(body) => body,
                    None => return,
                }
            }
        };
        self.reply(&note, reply_to, body);
        if halt {
            self.shutdown.cancel();
        }
    }

    /// Refuses a note that failed the signature checks: counts it and logs it (the first,
    /// then at powers of two), and answers nothing. A signed answer to a note anyone could
    /// have written, carrying its correlation id to its reply topic, would be a signing
    /// oracle; a controller without the key learns from `ping` that the peers sign.
    fn refuse(&mut self, publish: &Publish, note: &Note, why: SignatureError) {
        self.refused_notes += 1;
        if self.refused_notes == 1 || self.refused_notes.is_power_of_two() {
            warn!(topic = %publish.topic, kind = note.body.kind(), from = %note.sender.id,
                reason = %why, total_refused = self.refused_notes, "note refused");
        } else {
            debug!(reason = %why, total_refused = self.refused_notes, "note refused");
        }
    }

    fn stats(&self) -> Stats {
        Stats {
            peer: self.info.clone(),
            state: self.handler.state(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            connected_since_us: self.connected_since,
            reconnects: self.connections.saturating_sub(1),
            notes_received: self.notes_received,
            bad_notes: self.bad_notes,
            refused_notes: self.refused_notes,
            signed: self.signer.is_on(),
            run: self.handler.run(),
        }
    }

    fn on_bad_note(&mut self, publish: &Publish, failure: DecodeFailure) {
        self.bad_notes += 1;
        let code = failure.error.code();
        self.log_bad(code, publish, &failure.error.to_string());
        // In a signed cluster a bad note, which no one signed, gets no (signed) answer.
        if self.signer.is_on() {
            return;
        }
        let Some(reply_to) = failure.reply_to.filter(|t| self.topics.is_reply_topic(t)) else {
            return;
        };
        let mut reply = Note::new(
            self.sender.clone(),
            Body::Error(ErrorNote {
                code,
                message: failure.error.to_string(),
            }),
            now(),
        );
        reply.correlation_id = failure.note_id;
        self.publish(&reply_to, &reply);
    }

    fn log_bad(&mut self, code: ErrorCode, publish: &Publish, reason: &str) {
        if self.logged_bad.insert(code) {
            warn!(topic = %publish.topic, bytes = publish.payload.len(),
                ?code, reason, total_bad = self.bad_notes,
                "bad note on a control topic (further ones of this kind are logged at debug)");
        } else {
            debug!(?code, reason, total_bad = self.bad_notes, "bad note");
        }
    }

    fn reply(&mut self, request: &Note, reply_to: &str, body: Body) {
        let reply = request.reply(self.sender.clone(), body, now());
        self.publish(reply_to, &reply);
    }

    fn publish(&mut self, topic: &str, note: &Note) {
        if let Err(e) = self.client.try_publish(
            topic,
            session::NOTE_QOS,
            false,
            self.signer.encode(topic, note),
        ) {
            warn!(topic, error = %e, "reply dropped: control client queue full");
        }
    }
}
