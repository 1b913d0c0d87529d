//! `maestro-protocol` owns the language the cluster speaks on the control broker: the note
//! envelope and its typed bodies, the topic tree, the codec (with its error classification
//! for bad input), identities and timestamps, the test spec and result types, and the
//! system under test's URL as a typed value ([`SutUrl`]).
//!
//! It does no I/O: no sockets, no MQTT client, no runtime. Every other crate depends on it;
//! it depends on nothing of ours. Topics are only ever built by [`topic::Topics`].

pub mod arrival;
pub mod codec;
pub mod fault;
pub mod fleet;
pub mod histogram;
pub mod ids;
pub mod inspect;
pub mod note;
pub mod payload;
pub mod run;
pub mod signing;
pub mod sut;
pub mod time;
pub mod topic;

pub use arrival::{Arrival, ArrivalError, Profile};
pub use codec::{
    DecodeError, DecodeFailure, MAX_NOTE_BYTES, MAX_PACKET_BYTES, PACKET_OVERHEAD_BYTES, decode,
    encode,
};
pub use fault::{FaultHealed, Inject, Injected};
pub use fleet::{FleetError, FleetSpec, Template, TemplateKind};
pub use ids::{ActionName, ClusterId, NoteId, PeerId, Segment, SegmentError};
pub use inspect::names as metric_names;
pub use inspect::{Metric, MetricKind, SourceKind, SourceSample, SutRequest, SutStats};
pub use note::*;
pub use payload::{HEADER_LEN, PayloadError, PayloadHeader};
pub use run::*;
pub use sut::{Capabilities, Scheme, SutOptions, SutUrl, SutUrlError, TlsOptions};
pub use time::{ClockSample, UnixMicros};
pub use topic::{Target, Topics};

/// The protocol version this build speaks. A note with a higher major version is refused
/// with an [`ErrorCode::UnsupportedVersion`] error note; a higher minor version is accepted
/// (minor versions only add optional fields).
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion { major: 1, minor: 0 };
