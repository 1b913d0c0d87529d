//! The controller's side of the control plane: one MQTT session that tracks every peer's
//! presence and sends requests whose replies come back on this controller's own reply
//! topic (two controllers on one broker never see each other's replies).
//!
//! A request waits for exactly the peers that presence says are online (and match the
//! target), until a deadline; it never waits "until replies stop coming".

use maestro_control::session::Signer;
use maestro_control::{ControlUrl, now, session};
use maestro_protocol::signing::{ReplayGuard, SignatureError};
use maestro_protocol::{
    Body, ClusterId, Note, PeerId, PeerInfo, Presence, PresenceStatus, Renew, Role, RunId, Sender,
    Target, Topics, UnixMicros, decode,
};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Packet, QoS, SubscribeFilter};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Retained presences arrive right after the subscription is acknowledged. To know when
/// all of them have, the controller then publishes an empty, unretained note on its own
/// presence topic: the broker sends a subscription's retained notes before anything
/// published to it later, so once that note comes back every presence has been seen. A
/// request is never complete before then, or before this much time has passed since the
/// subscription (a broker that refuses the note, or drops it).
pub const PRESENCE_SETTLE: Duration = Duration::from_secs(3);
/// How long a request waits for the reply of a peer that went offline while it was asked
/// (its offline presence may overtake its reply).
pub const GONE_REPLY_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot reach the control broker at {url}: {reason}")]
    Unreachable {
        url: Box<ControlUrl>,
        reason: String,
    },
    #[error("lost the connection to the control broker at {url}: {reason}")]
    Lost {
        url: Box<ControlUrl>,
        reason: String,
    },
    #[error("interrupted")]
    Interrupted,
    #[error(
        "a {kind} note would be {size} bytes, over the {max}-byte limit of a note: nothing was sent (for a run: fewer producers, consumers or topics per worker, or more workers)"
    )]
    Oversize {
        kind: &'static str,
        size: usize,
        max: usize,
    },
}

enum ControlEvent {
    /// A peer's retained presence; `None` when it was cleared.
    Presence(PeerId, Option<Presence>),
    Reply(Note, UnixMicros),
    /// A peer's event (stats, results).
    Event(Note),
}

/// What [`Controller::next`] hands to a caller driving its own loop.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// A peer's presence changed (`None`: cleared).
    Presence(PeerId, Option<Presence>),
    /// A reply to one of this controller's requests, with its arrival time.
    Reply(Note, UnixMicros),
    /// A peer's event.
    Event(Note),
}

/// A connected controller.
#[derive(Debug)]
pub struct Controller {
    client: AsyncClient,
    events: mpsc::Receiver<ControlEvent>,
    topics: Topics,
    me: Sender,
    liveness: Liveness,
    url: ControlUrl,
    reply_topic: String,
    presence: BTreeMap<PeerId, Presence>,
    /// Every identity seen in this session, kept after a peer clears its presence (a
    /// halted peer still has a name in the halt report).
    known: BTreeMap<PeerId, PeerInfo>,
    subscribed_at: Instant,
    /// This controller's own presence note came back: every retained presence arrived.
    settled: bool,
    stop: CancellationToken,
    pump: Option<JoinHandle<()>>,
    signer: Signer,
    /// Presence, replies and events ignored for a missing or wrong signature.
    ignored: Arc<AtomicU64>,
}

impl std::fmt::Debug for ControlEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlEvent::Presence(id, _) => write!(f, "Presence({id})"),
            ControlEvent::Reply(n, _) => write!(f, "Reply({})", n.id),
            ControlEvent::Event(n) => write!(f, "Event({})", n.body.kind()),
        }
    }
}

/// The replies to one request, and the presence of the peers it was meant for.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub request: Note,
    pub target: Target,
    /// Replies by peer, with the time each arrived (controller clock).
    pub replies: BTreeMap<PeerId, (Note, UnixMicros)>,
    /// Presence of every peer the target matches, online or offline.
    pub presence: BTreeMap<PeerId, Presence>,
    /// Identity of every peer that replied, as last announced.
    pub known: BTreeMap<PeerId, PeerInfo>,
}

impl Controller {
    /// Connects, subscribes to presence and to this controller's reply topic.
    pub async fn connect(
        url: &ControlUrl,
        cluster: &ClusterId,
        timeout: Duration,
    ) -> Result<Self, ControlError> {
        Self::connect_signed(url, cluster, Signer::default(), timeout).await
    }

    /// [`Controller::connect`] in a cluster whose notes are signed: this controller signs
    /// what it sends and ignores presence, replies and events not signed with the key.
    pub async fn connect_signed(
        url: &ControlUrl,
        cluster: &ClusterId,
        signer: Signer,
        timeout: Duration,
    ) -> Result<Self, ControlError> {
        let id = PeerId::random("cli");
        let topics = Topics::new(cluster);
        let reply_topic = topics.reply(&id);
        let me = Sender {
            id: id.clone(),
            role: Role::Controller,
            name: format!("maestro-cli@{}", std::process::id()),
        };
        let liveness = Liveness::new(&topics, &me, signer.clone());
        let ignored = Arc::new(AtomicU64::new(0));
        // Workers in this controller's runs watch this: a run never outlives its controller.
        let will = rumqttc::LastWill::new(
            liveness.topic.clone(),
            liveness.note(PresenceStatus::Offline),
            session::PRESENCE_QOS,
            false,
        );
        let (client, eventloop) = session::open(url, &id, Duration::from_secs(5), Some(will))
            .map_err(|e| ControlError::Unreachable {
                url: Box::new(url.clone()),
                reason: e.to_string(),
            })?;
        let (ready_tx, ready_rx) = oneshot::channel();
        let (events_tx, events) = mpsc::channel(4096);
        let stop = CancellationToken::new();
        let pump = tokio::spawn(pump(
            eventloop,
            client.clone(),
            topics.clone(),
            (reply_topic.clone(), topics.presence(&id)),
            url.clone(),
            ready_tx,
            events_tx,
            stop.clone(),
            liveness.clone(),
            (signer.clone(), ignored.clone()),
        ));
        let unreachable = |reason: String| ControlError::Unreachable {
            url: Box::new(url.clone()),
            reason,
        };
        match tokio::time::timeout(timeout, ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(reason))) => return Err(unreachable(reason)),
            Ok(Err(_)) => return Err(unreachable("the session ended".into())),
            Err(_) => {
                stop.cancel();
                return Err(unreachable(format!("no MQTT handshake within {timeout:?}")));
            }
        }
        Ok(Self {
            client,
            events,
            topics,
            me,
            liveness,
            url: url.clone(),
            reply_topic,
            presence: BTreeMap::new(),
            known: BTreeMap::new(),
            subscribed_at: Instant::now(),
            settled: false,
            stop,
            pump: Some(pump),
            signer,
            ignored,
        })
    }

    /// True when this controller signs its notes and checks its peers'.
    pub fn signs(&self) -> bool {
        self.signer.is_on()
    }

    /// Notes from peers ignored so far for a missing or wrong signature.
    pub fn ignored_notes(&self) -> u64 {
        self.ignored.load(Ordering::Relaxed)
    }

    /// The control URL this controller is connected to.
    pub fn url(&self) -> &ControlUrl {
        &self.url
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Every peer's presence seen so far.
    pub fn presence(&self) -> &BTreeMap<PeerId, Presence> {
        &self.presence
    }

    /// Sends `body` to `target` and collects the replies of every online peer it matches,
    /// until all have answered or `timeout` passes.
    pub async fn request(
        &mut self,
        target: &Target,
        body: Body,
        timeout: Duration,
        interrupt: &CancellationToken,
    ) -> Result<Exchange, ControlError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let request = self.send(target, body).await?;
        let mut replies = BTreeMap::new();
        let settle_by = self.settle_by();
        // Peers that went offline during the request, and when. A peer's offline presence
        // and its reply travel on different topics and may arrive in either order (a
        // halted peer replies, then leaves): its reply gets a moment to arrive.
        let mut went_offline: BTreeMap<PeerId, tokio::time::Instant> = BTreeMap::new();
        loop {
            // What already arrived counts before deciding whether everyone answered.
            while let Ok(event) = self.events.try_recv() {
                self.on_request_event(event, &request, target, &mut replies, &mut went_offline);
            }
            let now_t = tokio::time::Instant::now();
            let settled = self.settled || now_t >= settle_by;
            let everyone_answered = self
                .presence
                .values()
                .filter(|p| p.status == maestro_protocol::PresenceStatus::Online)
                .filter(|p| target.matches(&p.peer))
                .all(|p| replies.contains_key(&p.peer.id));
            let gone_grace = went_offline
                .iter()
                .filter(|(id, _)| !replies.contains_key(*id))
                .map(|(_, at)| *at + GONE_REPLY_GRACE)
                .max()
                .filter(|until| *until > now_t);
            if settled && everyone_answered && gone_grace.is_none() {
                break;
            }
            // Before the presence has settled, wake up when it must have.
            let wake = if !settled {
                settle_by.min(deadline)
            } else {
                gone_grace.map_or(deadline, |g| g.min(deadline))
            };
            let event = tokio::select! {
                _ = interrupt.cancelled() => return Err(ControlError::Interrupted),
                _ = tokio::time::sleep_until(wake) => {
                    if wake >= deadline { break; }
                    continue;
                }
                event = self.events.recv() => event,
            };
            match event {
                Some(event) => {
                    self.on_request_event(event, &request, target, &mut replies, &mut went_offline)
                }
                None => return Err(self.lost("the session ended".into())),
            }
        }
        let presence = self
            .presence
            .iter()
            .filter(|(_, p)| target.matches(&p.peer))
            .map(|(id, p)| (id.clone(), p.clone()))
            .collect();
        let known = replies
            .keys()
            .filter_map(|id| self.known.get(id).map(|i| (id.clone(), i.clone())))
            .collect();
        Ok(Exchange {
            request,
            target: target.clone(),
            replies,
            presence,
            known,
        })
    }

    /// When the retained presences must have arrived, barrier or not.
    fn settle_by(&self) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.subscribed_at + PRESENCE_SETTLE)
    }

    /// Applies one event that arrived while `request` waited for its replies.
    fn on_request_event(
        &mut self,
        event: ControlEvent,
        request: &Note,
        target: &Target,
        replies: &mut BTreeMap<PeerId, (Note, UnixMicros)>,
        went_offline: &mut BTreeMap<PeerId, tokio::time::Instant>,
    ) {
        match event {
            ControlEvent::Presence(id, p) => {
                let was_online = self.presence.get(&id).is_some_and(|p| {
                    p.status == maestro_protocol::PresenceStatus::Online && target.matches(&p.peer)
                });
                let now_offline = p
                    .as_ref()
                    .is_none_or(|p| p.status != maestro_protocol::PresenceStatus::Online);
                if was_online && now_offline {
                    went_offline.insert(id.clone(), tokio::time::Instant::now());
                }
                self.on_presence(id, p);
            }
            ControlEvent::Reply(note, at) => {
                if note.correlation_id != Some(request.id) {
                    debug!(from = %note.sender.id, "reply to an earlier request; ignored");
                } else if self.addressed(&note.sender.id, target) {
                    replies.insert(note.sender.id.clone(), (note, at));
                } else {
                    // A stranger can copy the request's id into a note of its own.
                    warn!(from = %note.sender.id, "reply from a peer the request did not go to; ignored");
                }
            }
            ControlEvent::Event(_) => {}
        }
    }

    /// Whether a request to `target` went to `peer` (by its presence, or what was last
    /// known of it).
    fn addressed(&self, peer: &PeerId, target: &Target) -> bool {
        self.presence
            .get(peer)
            .map(|p| &p.peer)
            .or_else(|| self.known.get(peer))
            .is_some_and(|info| target.matches(info))
    }

    /// Waits until retained presences have arrived, then returns them.
    pub async fn settle_presence(&mut self) -> Result<&BTreeMap<PeerId, Presence>, ControlError> {
        let settle_by = self.settle_by();
        while !self.settled {
            tokio::select! {
                _ = tokio::time::sleep_until(settle_by) => break,
                event = self.events.recv() => match event {
                    Some(ControlEvent::Presence(id, p)) => self.on_presence(id, p),
                    Some(ControlEvent::Reply(..) | ControlEvent::Event(_)) => {}
                    None => return Err(self.lost("the session ended".into())),
                }
            }
        }
        Ok(&self.presence)
    }

    /// Publishes a request to `target` and returns it (its id correlates the replies).
    pub async fn send(&mut self, target: &Target, body: Body) -> Result<Note, ControlError> {
        let request = Note::new(self.me.clone(), body, now()).with_reply_to(&self.reply_topic);
        let topic = self.topics.request(target);
        let bytes = self.signer.encode(&topic, &request);
        // A note over the limit would be refused by the peer (or cost the connection at
        // the broker): say so here, with the numbers, before anything is sent.
        if bytes.len() > maestro_protocol::MAX_NOTE_BYTES {
            return Err(ControlError::Oversize {
                kind: request.body.kind(),
                size: bytes.len(),
                max: maestro_protocol::MAX_NOTE_BYTES,
            });
        }
        self.client
            .publish(topic, session::NOTE_QOS, false, bytes)
            .await
            .map_err(|e| self.lost(e.to_string()))?;
        Ok(request)
    }

    /// The next reply, event or presence change, or `None` when `until` passes first.
    /// Presence changes are also applied to [`Controller::presence`].
    pub async fn next(
        &mut self,
        until: tokio::time::Instant,
        interrupt: &CancellationToken,
    ) -> Result<Option<Incoming>, ControlError> {
        let event = loop {
            let event = tokio::select! {
                _ = interrupt.cancelled() => return Err(ControlError::Interrupted),
                _ = tokio::time::sleep_until(until) => return Ok(None),
                event = self.events.recv() => event,
            };
            match event {
                // This controller's own barrier: nobody else's news.
                Some(ControlEvent::Presence(id, _)) if id == self.me.id => {
                    self.on_presence(id, None)
                }
                event => break event,
            }
        };
        match event {
            Some(ControlEvent::Presence(id, p)) => {
                self.on_presence(id.clone(), p.clone());
                Ok(Some(Incoming::Presence(id, p)))
            }
            Some(ControlEvent::Reply(note, at)) => Ok(Some(Incoming::Reply(note, at))),
            Some(ControlEvent::Event(note)) => Ok(Some(Incoming::Event(note))),
            None => Err(self.lost("the session ended".into())),
        }
    }

    /// Removes a peer's retained presence from the broker.
    pub async fn forget(&mut self, peer: &PeerId) -> Result<(), ControlError> {
        self.client
            .publish(
                self.topics.presence(peer),
                session::PRESENCE_QOS,
                true,
                Vec::new(),
            )
            .await
            .map_err(|e| self.lost(e.to_string()))?;
        self.presence.remove(peer);
        Ok(())
    }

    /// This controller's id.
    pub fn id(&self) -> &PeerId {
        &self.me.id
    }

    /// Renews `run`'s lease on `peers` every [`LEASE_RENEW`] until the returned guard is
    /// dropped. Runs beside the caller, so a controller busy elsewhere still renews; a
    /// controller that stops (killed, frozen, cut off) stops renewing.
    pub fn lease(&self, run: &RunId, peers: &[PeerId]) -> LeaseGuard {
        let stop = self.stop.child_token();
        let (client, topics, me, reply, signer) = (
            self.client.clone(),
            self.topics.clone(),
            self.me.clone(),
            self.reply_topic.clone(),
            self.signer.clone(),
        );
        let (run, peers) = (run.clone(), peers.to_vec());
        let guard = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LEASE_RENEW);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                for peer in &peers {
                    let note =
                        Note::new(me.clone(), Body::Renew(Renew { run: run.clone() }), now())
                            .with_reply_to(&reply);
                    let topic = topics.request(&Target::Peer(peer.clone()));
                    let bytes = signer.encode(&topic, &note);
                    if client
                        .try_publish(topic, session::NOTE_QOS, false, bytes)
                        .is_err()
                    {
                        debug!(%peer, "lease renewal not queued");
                    }
                }
            }
        });
        LeaseGuard(guard)
    }

    /// Disconnects cleanly, after everything queued has been sent. Says goodbye on the
    /// liveness topic first, so no run of this controller outlives it.
    pub async fn close(mut self) {
        let _ = self
            .client
            .publish(
                self.liveness.topic.clone(),
                session::PRESENCE_QOS,
                false,
                self.liveness.note(PresenceStatus::Offline),
            )
            .await;
        let _ = self.client.disconnect().await;
        if let Some(pump) = self.pump.take()
            && tokio::time::timeout(session::GOODBYE_TIMEOUT + Duration::from_secs(1), pump)
                .await
                .is_err()
        {
            self.stop.cancel();
        }
    }

    fn on_presence(&mut self, id: PeerId, presence: Option<Presence>) {
        if id == self.me.id {
            // The barrier published after subscribing came back (see PRESENCE_SETTLE).
            self.settled = true;
            return;
        }
        match presence {
            Some(p) => {
                self.known.insert(id.clone(), p.peer.clone());
                self.presence.insert(id, p);
            }
            None => {
                self.presence.remove(&id);
            }
        }
    }

    fn lost(&self, reason: String) -> ControlError {
        ControlError::Lost {
            url: Box::new(self.url.clone()),
            reason,
        }
    }
}

/// How long a worker keeps a run whose controller stopped renewing it: long enough to ride
/// over a restart of the control broker (the controller reconnects with backoff, then
/// renews), short enough that a frozen controller's run does not linger.
pub const LEASE: Duration = Duration::from_secs(10);
/// How often a controller renews its runs' leases.
pub const LEASE_RENEW: Duration = Duration::from_secs(1);

/// Stops renewing a lease when dropped.
#[derive(Debug)]
pub struct LeaseGuard(CancellationToken);

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// A controller's liveness notes: online at connect, offline as its last will and goodbye.
#[derive(Debug, Clone)]
struct Liveness {
    topic: String,
    sender: Sender,
    info: PeerInfo,
    signer: Signer,
}

impl Liveness {
    fn new(topics: &Topics, me: &Sender, signer: Signer) -> Self {
        Self {
            signer,
            topic: topics.controller(&me.id),
            sender: me.clone(),
            info: PeerInfo {
                id: me.id.clone(),
                name: me.name.clone(),
                role: Role::Controller,
                host: gethostname::gethostname().to_string_lossy().into_owned(),
                group: maestro_protocol::Segment::new("controllers")
                    .unwrap_or_else(|_| unreachable!("a valid segment")),
                member: me.name.clone(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                capabilities: Vec::new(),
                keep_alive_ms: 5000,
                pid: std::process::id(),
                started_at_us: now(),
                machine: None,
            },
        }
    }

    fn note(&self, status: PresenceStatus) -> Vec<u8> {
        self.signer.encode(
            &self.topic,
            &Note::new(
                self.sender.clone(),
                Body::Presence(Presence {
                    status,
                    peer: self.info.clone(),
                }),
                now(),
            ),
        )
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[allow(clippy::too_many_arguments)]
async fn pump(
    mut eventloop: EventLoop,
    client: AsyncClient,
    topics: Topics,
    (reply_topic, barrier_topic): (String, String),
    url: ControlUrl,
    ready: oneshot::Sender<Result<(), String>>,
    events: mpsc::Sender<ControlEvent>,
    stop: CancellationToken,
    liveness: Liveness,
    (signer, ignored): (Signer, Arc<AtomicU64>),
) {
    let mut ready = Some(ready);
    let mut replays = ReplayGuard::default();
    let mut backoff = session::backoff();
    // Since when the connection is down, once it was up.
    let mut outage: Option<Instant> = None;
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => break,
            event = eventloop.poll() => event,
        };
        let forward = match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = session::backoff();
                if let Some(since) = outage.take() {
                    // A warning too: whoever saw the loss should see it end.
                    warn!(url = %url, down_for = ?since.elapsed(),
                        "control broker reachable again; subscribed anew");
                }
                let filters = [
                    SubscribeFilter::new(topics.presence_filter(), QoS::AtMostOnce),
                    SubscribeFilter::new(reply_topic.clone(), session::NOTE_QOS),
                    // Results are published at QoS 1; subscribe at 1 so they stay so.
                    SubscribeFilter::new(topics.event_filter(), session::PRESENCE_QOS),
                ];
                if let Err(e) = client.try_subscribe_many(filters) {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(e.to_string()));
                    }
                    break;
                }
                let _ = client.try_publish(
                    liveness.topic.clone(),
                    session::PRESENCE_QOS,
                    false,
                    liveness.note(PresenceStatus::Online),
                );
                None
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                // Comes back after every retained presence (see PRESENCE_SETTLE).
                let _ =
                    client.try_publish(barrier_topic.clone(), QoS::AtMostOnce, false, Vec::new());
                if let Some(r) = ready.take() {
                    let _ = r.send(Ok(()));
                }
                None
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                // An empty retained payload clears a presence: nothing to sign.
                let checked = if p.payload.is_empty() {
                    Ok(())
                } else {
                    signer.verify(&p.topic, &p.payload)
                };
                match checked.and_then(|()| fresh(&mut replays, &signer, &topics, &p)) {
                    Err(why) => {
                        let n = ignored.fetch_add(1, Ordering::Relaxed) + 1;
                        if n == 1 || n.is_power_of_two() {
                            tracing::warn!(topic = %p.topic, reason = %why, total_ignored = n,
                                "note ignored (peers without this cluster's keys, or a stranger?)");
                        }
                        None
                    }
                    Ok(()) => classify(&topics, &reply_topic, &p),
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                // Let the broker close the connection (see `session::goodbye`).
                let deadline = tokio::time::Instant::now() + session::GOODBYE_TIMEOUT;
                session::closed_by_broker(&mut eventloop, deadline).await;
                break;
            }
            Ok(_) => None,
            Err(e) => {
                if let Some(r) = ready.take() {
                    // Never connected: the caller says why and stops.
                    let _ = r.send(Err(describe(&e, &url)));
                    break;
                }
                let reason = maestro_control::tls::explain(&e);
                // Connected before: the broker restarted or the connection dropped. Keep
                // the session's state (pending replies, the run, its lease) and reconnect;
                // the ConnAck above subscribes again and says this controller is online.
                match &outage {
                    None => {
                        warn!(url = %url, %reason,
                            "control broker connection lost; reconnecting with backoff");
                        outage = Some(Instant::now());
                    }
                    Some(_) => debug!(url = %url, %reason, "control broker still unreachable"),
                }
                let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                None
            }
        };
        if let Some(event) = forward
            && events.send(event).await.is_err()
        {
            break;
        }
    }
}

/// In a signed cluster, a reply or event must be recent and seen once: a note captured
/// from the broker and published again is refused. (Presence is retained, so it may be old
/// and is seen again on every subscription.)
fn fresh(
    replays: &mut ReplayGuard,
    signer: &Signer,
    topics: &Topics,
    p: &rumqttc::Publish,
) -> Result<(), SignatureError> {
    if !signer.is_on() || topics.presence_peer(&p.topic).is_some() {
        return Ok(());
    }
    match decode(&p.payload) {
        Ok(note) => replays.check(note.id, note.sent_at_us, now()),
        // Undecodable: classify says so.
        Err(_) => Ok(()),
    }
}

fn classify(topics: &Topics, reply_topic: &str, p: &rumqttc::Publish) -> Option<ControlEvent> {
    if let Some(peer) = topics.presence_peer(&p.topic) {
        if p.payload.is_empty() {
            return Some(ControlEvent::Presence(peer, None));
        }
        return match decode(&p.payload) {
            Ok(Note {
                body: Body::Presence(presence),
                ..
            }) if presence.peer.id == peer => Some(ControlEvent::Presence(peer, Some(presence))),
            Ok(other) => {
                debug!(topic = %p.topic, kind = other.body.kind(), "not a presence note; ignored");
                None
            }
            Err(f) => {
                debug!(topic = %p.topic, error = %f.error, "bad presence note; ignored");
                None
            }
        };
    }
    if let Some((peer, _)) = topics.event_peer(&p.topic) {
        return match decode(&p.payload) {
            Ok(note) if note.sender.id == peer => Some(ControlEvent::Event(note)),
            Ok(note) => {
                debug!(topic = %p.topic, sender = %note.sender.id, "event of another peer's topic; ignored");
                None
            }
            Err(f) => {
                debug!(topic = %p.topic, error = %f.error, "bad event; ignored");
                None
            }
        };
    }
    if p.topic == reply_topic {
        return match decode(&p.payload) {
            Ok(note) => Some(ControlEvent::Reply(note, now())),
            Err(f) => {
                debug!(error = %f.error, "bad reply; ignored");
                None
            }
        };
    }
    None
}

/// Says why a connection failed in words a user can act on.
fn describe(error: &ConnectionError, url: &ControlUrl) -> String {
    // A TLS failure (untrusted certificate, missing client certificate) says so.
    let tls = maestro_control::tls::explain(error);
    if tls != error.to_string() {
        return tls;
    }
    match error {
        ConnectionError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused (is maestro-broker running there?)".into()
        }
        ConnectionError::ConnectionRefused(
            code @ (rumqttc::ConnectReturnCode::BadUserNamePassword
            | rumqttc::ConnectReturnCode::NotAuthorized),
        ) => {
            let hint = if url.username.is_some() {
                "wrong username or password"
            } else {
                "it wants a username and password: put them in the URL"
            };
            format!("the broker refused the session ({hint}): {code:?}")
        }
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the session: {code:?}")
        }
        ConnectionError::MqttState(_) | ConnectionError::Io(_) => {
            let hint = if url.username.is_some() {
                "wrong username or password?"
            } else {
                "does the broker require a username and password (put them in the URL), or TLS (use mqtts://)?"
            };
            format!("the broker closed the connection during the MQTT handshake ({hint}): {error}")
        }
        other => other.to_string(),
    }
}
