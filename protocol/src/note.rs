//! Notes: the envelope every control message travels in, and its typed bodies.

use crate::ids::{NoteId, PeerId, Segment};
use crate::time::UnixMicros;
use serde::{Deserialize, Serialize};

/// `major.minor`; see [`crate::PROTOCOL_VERSION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolVersion {
    pub major: u16,
    pub minor: u16,
}

/// What a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Worker,
    Inspector,
    Controller,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Inspector => "inspector",
            Role::Controller => "controller",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who sent a note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    pub id: PeerId,
    pub role: Role,
    pub name: String,
}

/// The envelope of every note on the control broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub version: ProtocolVersion,
    pub id: NoteId,
    /// On a reply: the id of the request it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<NoteId>,
    /// On a request: the topic replies go to (a reply topic of the same cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    pub sender: Sender,
    /// When the sender published the note (sender's wall clock).
    pub sent_at_us: UnixMicros,
    pub body: Body,
}

impl Note {
    /// A new note from `sender`, stamped `now`.
    pub fn new(sender: Sender, body: Body, now: UnixMicros) -> Self {
        Self {
            version: crate::PROTOCOL_VERSION,
            id: NoteId::random(),
            correlation_id: None,
            reply_to: None,
            sender,
            sent_at_us: now,
            body,
        }
    }

    /// The same note, asking for replies on `topic`.
    pub fn with_reply_to(mut self, topic: impl Into<String>) -> Self {
        self.reply_to = Some(topic.into());
        self
    }

    /// A reply to this note: correlated with it, stamped `now`.
    pub fn reply(&self, sender: Sender, body: Body, now: UnixMicros) -> Note {
        let mut reply = Note::new(sender, body, now);
        reply.correlation_id = Some(self.id);
        reply
    }
}

/// The typed content of a note. The `type` field names the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    /// Retained on the presence topic: online when a peer connects, offline as its last
    /// will (abnormal disconnect).
    Presence(Presence),
    Ping(Ping),
    Pong(Pong),
    StatsRequest(StatsRequest),
    Stats(Stats),
    /// Asks peers to shut down; they answer [`Body::Halted`] and exit.
    Halt(Halt),
    Halted(Halted),
    /// The answer to a request that could not be handled.
    Error(ErrorNote),
    /// A worker's part of a run: connect to the SUT, subscribe, get ready.
    Configure(crate::run::Configure),
    Configured(crate::run::Configured),
    Start(crate::run::Start),
    Started(crate::run::Started),
    Stop(crate::run::Stop),
    Stopping(crate::run::Stopping),
    /// A backlog run's consumers may read now (they were held from the start).
    Resume(crate::run::Resume),
    Resumed(crate::run::Resumed),
    /// The controller still owns the run: extends the run's lease on a worker (no reply).
    Renew(crate::run::Renew),
    /// Event: a worker's interval stats.
    RunStats(crate::run::RunStats),
    /// Event: a worker's final result for a run.
    RunResult(crate::run::RunResult),
    /// Event: an inspector's reading of the SUT, once a second; also the answer to a
    /// [`Body::SutRequest`].
    SutStats(crate::inspect::SutStats),
    /// Request to an inspector: its latest figures (a run's baseline).
    SutRequest(crate::inspect::SutRequest),
    /// Request to an inspector: run one of its declared fault actions.
    Inject(crate::fault::Inject),
    Injected(crate::fault::Injected),
    /// Event: an inspector healed a fault.
    FaultHealed(crate::fault::FaultHealed),
}

impl Body {
    /// The `type` of every body this version knows.
    pub const TYPES: &'static [&'static str] = &[
        "presence",
        "ping",
        "pong",
        "stats_request",
        "stats",
        "halt",
        "halted",
        "error",
        "configure",
        "configured",
        "start",
        "started",
        "stop",
        "stopping",
        "resume",
        "resumed",
        "renew",
        "run_stats",
        "run_result",
        "sut_stats",
        "sut_request",
        "inject",
        "injected",
        "fault_healed",
    ];

    /// The body's `type` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Presence(_) => "presence",
            Body::Ping(_) => "ping",
            Body::Pong(_) => "pong",
            Body::StatsRequest(_) => "stats_request",
            Body::Stats(_) => "stats",
            Body::Halt(_) => "halt",
            Body::Halted(_) => "halted",
            Body::Error(_) => "error",
            Body::Configure(_) => "configure",
            Body::Configured(_) => "configured",
            Body::Start(_) => "start",
            Body::Started(_) => "started",
            Body::Stop(_) => "stop",
            Body::Stopping(_) => "stopping",
            Body::Resume(_) => "resume",
            Body::Resumed(_) => "resumed",
            Body::Renew(_) => "renew",
            Body::RunStats(_) => "run_stats",
            Body::RunResult(_) => "run_result",
            Body::SutStats(_) => "sut_stats",
            Body::SutRequest(_) => "sut_request",
            Body::Inject(_) => "inject",
            Body::Injected(_) => "injected",
            Body::FaultHealed(_) => "fault_healed",
        }
    }
}

/// A peer's identity, as announced in its presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub id: PeerId,
    pub name: String,
    pub role: Role,
    pub host: String,
    pub group: Segment,
    pub member: String,
    /// The peer's software version.
    pub version: String,
    /// What the peer can do, for example `ping`, `stats`, `halt`.
    pub capabilities: Vec<String>,
    /// The MQTT keep-alive of its control connection: the broker declares it offline after
    /// 1.5 times this without traffic.
    pub keep_alive_ms: u64,
    pub pid: u32,
    pub started_at_us: UnixMicros,
    /// The machine it runs on (workers and inspectors; absent from older peers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<Machine>,
}

/// What a peer's machine is: what a result's environment records, so that runs on
/// different machines are not taken for like ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// CPUs this process may run on.
    pub cores: u32,
    /// The kernel's release (`uname -r`).
    pub kernel: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    Online,
    Offline,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub status: PresenceStatus,
    pub peer: PeerInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ping {}

/// The answer to a ping. With the ping's `sent_at_us` (t0), this pong's `sent_at_us` (t2)
/// and the controller's receive time (t3) it gives the four NTP timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// t0, echoed from the ping.
    pub ping_sent_at_us: UnixMicros,
    /// t1: when the peer received the ping (peer clock).
    pub received_at_us: UnixMicros,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatsRequest {}

/// What a peer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    Idle,
    Configured,
    Running,
    Stopping,
}

impl PeerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Idle => "idle",
            PeerState::Configured => "configured",
            PeerState::Running => "running",
            PeerState::Stopping => "stopping",
        }
    }
}

/// A peer's state and control-plane counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub peer: PeerInfo,
    pub state: PeerState,
    pub uptime_ms: u64,
    /// When the current control connection was established.
    pub connected_since_us: UnixMicros,
    /// Control connections established after the first.
    pub reconnects: u64,
    /// Notes received on the request topics.
    pub notes_received: u64,
    /// Notes that could not be handled (malformed, unknown type, newer version, oversize).
    pub bad_notes: u64,
    /// Notes refused as unsigned, wrongly signed, replayed or stale (signed clusters).
    pub refused_notes: u64,
    /// The peer signs its notes and refuses unsigned requests.
    pub signed: bool,
    /// The run the peer is configured for or running, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<crate::run::RunId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Halt {}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Halted {}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not a note.
    Malformed,
    /// A note whose body type this version does not know.
    UnknownType,
    /// A note of a newer major protocol version.
    UnsupportedVersion,
    /// A note larger than [`crate::MAX_NOTE_BYTES`].
    Oversize,
    /// A valid note that this peer does not handle (for example a reply sent to a worker).
    Unsupported,
    /// The worker is busy with another run.
    Busy,
    /// The test spec or assignment is invalid.
    InvalidSpec,
    /// The system under test cannot be reached or refused us.
    SutUnreachable,
    /// A start or stop for a run this worker was not configured for.
    UnknownRun,
    /// A request that is unsigned, wrongly signed, replayed or stale, in a cluster that
    /// requires signed notes.
    Unauthenticated,
    /// A fault action this inspector has not declared in its local file.
    UnknownAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorNote {
    pub code: ErrorCode,
    pub message: String,
}
