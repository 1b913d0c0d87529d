//! Turning an [`Exchange`] into one outcome per peer: who answered, who did not, who is
//! offline, with round trips, clock offsets and stats.

use crate::client::Exchange;
use maestro_protocol::{Body, ClockSample, PeerId, PeerInfo, PresenceStatus, Role, UnixMicros};
use serde::Serialize;

/// How one peer fared in an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerStatus {
    /// It answered.
    Ok,
    /// It answered with an error note.
    Error,
    /// Presence says online, but no answer came before the deadline.
    NoReply,
    /// Its last will fired: it disconnected abnormally (crash, kill, network loss).
    Offline,
}

/// One peer's line of a ping, stats or halt report.
#[derive(Debug, Clone, Serialize)]
pub struct PeerOutcome {
    pub id: PeerId,
    pub name: String,
    pub role: Role,
    pub host: String,
    pub group: String,
    pub member: String,
    pub version: String,
    /// Its machine, as its presence said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<maestro_protocol::Machine>,
    pub status: PeerStatus,
    /// The reply's note type (`pong`, `stats`, `halted`, `error`), if any.
    pub reply: Option<&'static str>,
    /// Round-trip time without the peer's processing time (ping only).
    pub rtt_us: Option<i64>,
    /// How far the peer's clock is ahead of this controller's (ping only).
    pub clock_offset_us: Option<i64>,
    pub error: Option<String>,
    /// The peer's stats (stats only).
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub stats: Option<StatsFields>,
}

/// The stats fields of a stats reply, flattened into the outcome.
#[derive(Debug, Clone, Serialize)]
pub struct StatsFields {
    pub state: &'static str,
    pub uptime_ms: u64,
    pub connected_since_us: UnixMicros,
    pub reconnects: u64,
    pub notes_received: u64,
    pub bad_notes: u64,
    /// Notes refused as unsigned, wrongly signed, replayed or stale.
    pub refused_notes: u64,
    /// The peer signs its notes and refuses unsigned requests.
    pub signed: bool,
}

impl PeerOutcome {
    fn new(
        id: PeerId,
        info: Option<&PeerInfo>,
        name: &str,
        role: Role,
        status: PeerStatus,
    ) -> Self {
        Self {
            id,
            name: info.map_or_else(|| name.to_owned(), |i| i.name.clone()),
            role: info.map_or(role, |i| i.role),
            host: info.map(|i| i.host.clone()).unwrap_or_default(),
            group: info.map(|i| i.group.to_string()).unwrap_or_default(),
            member: info.map(|i| i.member.clone()).unwrap_or_default(),
            version: info.map(|i| i.version.clone()).unwrap_or_default(),
            machine: info.and_then(|i| i.machine.clone()),
            status,
            reply: None,
            rtt_us: None,
            clock_offset_us: None,
            error: None,
            stats: None,
        }
    }
}

/// One outcome per peer the request was meant for: every peer that answered, every
/// online peer that did not, and every offline peer (unless a peer with the same role and
/// name is online now, i.e. it was restarted). Sorted by role, then name.
pub fn outcomes(exchange: &Exchange) -> Vec<PeerOutcome> {
    let mut out = Vec::new();
    for (id, (note, received)) in &exchange.replies {
        let info = exchange
            .presence
            .get(id)
            .map(|p| &p.peer)
            .or(exchange.known.get(id));
        let stats_info = match &note.body {
            Body::Stats(s) => Some(&s.peer),
            _ => None,
        };
        let mut o = PeerOutcome::new(
            id.clone(),
            info.or(stats_info),
            &note.sender.name,
            note.sender.role,
            PeerStatus::Ok,
        );
        o.reply = Some(note.body.kind());
        match &note.body {
            Body::Pong(pong) => {
                let sample = ClockSample {
                    controller_sent: pong.ping_sent_at_us,
                    peer_received: pong.received_at_us,
                    peer_sent: note.sent_at_us,
                    controller_received: *received,
                };
                o.rtt_us = Some(sample.rtt_us());
                o.clock_offset_us = Some(sample.clock_offset_us());
            }
            Body::Stats(s) => {
                o.stats = Some(StatsFields {
                    state: s.state.as_str(),
                    uptime_ms: s.uptime_ms,
                    connected_since_us: s.connected_since_us,
                    reconnects: s.reconnects,
                    notes_received: s.notes_received,
                    bad_notes: s.bad_notes,
                    refused_notes: s.refused_notes,
                    signed: s.signed,
                })
            }
            Body::Error(e) => {
                o.status = PeerStatus::Error;
                o.error = Some(format!("{:?}: {}", e.code, e.message));
            }
            _ => {}
        }
        out.push(o);
    }
    let alive: Vec<(Role, String)> = exchange
        .presence
        .values()
        .filter(|p| p.status == PresenceStatus::Online || exchange.replies.contains_key(&p.peer.id))
        .map(|p| (p.peer.role, p.peer.name.clone()))
        .collect();
    for (id, presence) in &exchange.presence {
        if exchange.replies.contains_key(id) {
            continue;
        }
        let info = &presence.peer;
        let status = match presence.status {
            PresenceStatus::Online => PeerStatus::NoReply,
            PresenceStatus::Offline if alive.contains(&(info.role, info.name.clone())) => continue,
            PresenceStatus::Offline => PeerStatus::Offline,
        };
        out.push(PeerOutcome::new(
            id.clone(),
            Some(info),
            &info.name,
            info.role,
            status,
        ));
    }
    out.sort_by(|a, b| (a.role, &a.name, &a.id).cmp(&(b.role, &b.name, &b.id)));
    out
}
