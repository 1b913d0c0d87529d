//! Encoding notes to bytes and decoding bytes to notes, with the classification of bad
//! input that peers answer with error notes.

use crate::ids::NoteId;
use crate::note::{Body, ErrorCode, Note, ProtocolVersion};
use serde_json::Value;

/// The one size limit of the control plane: the largest MQTT packet a control client
/// sends or accepts, and the control broker's default limit. Everything else derives
/// from it.
pub const MAX_PACKET_BYTES: usize = 2 * 1024 * 1024;

/// Room in a packet for its MQTT header and topic (topic levels are at most 64
/// characters each, so a control topic is well under 1 KiB).
pub const PACKET_OVERHEAD_BYTES: usize = 16 * 1024;

/// The largest note (JSON and signature) a peer accepts and a sender may send: what fits a
/// [`MAX_PACKET_BYTES`] packet with its header and topic. A note between this and the
/// packet limit still reaches the peer, which answers it with an `oversize` error.
pub const MAX_NOTE_BYTES: usize = MAX_PACKET_BYTES - PACKET_OVERHEAD_BYTES;

/// Why bytes are not a note this version can handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("note of {size} bytes is larger than the limit of {max} bytes")]
    Oversize { size: usize, max: usize },
    #[error("malformed note: {0}")]
    Malformed(String),
    #[error("unknown note type {0:?}")]
    UnknownType(String),
    #[error("note of protocol version {}.{} is newer than the supported {}.{}", .0.major, .0.minor, crate::PROTOCOL_VERSION.major, crate::PROTOCOL_VERSION.minor)]
    UnsupportedVersion(ProtocolVersion),
}

impl DecodeError {
    /// The error code an error note carries for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Oversize { .. } => ErrorCode::Oversize,
            DecodeError::Malformed(_) => ErrorCode::Malformed,
            DecodeError::UnknownType(_) => ErrorCode::UnknownType,
            DecodeError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
        }
    }
}

/// A failed decode, with whatever could be read of the sender's reply address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeFailure {
    pub error: DecodeError,
    /// The note's `reply_to`, when the bytes were JSON and had one.
    pub reply_to: Option<String>,
    /// The note's `id`, when readable: the error reply's correlation id.
    pub note_id: Option<NoteId>,
}

/// Serializes a note to JSON bytes.
pub fn encode(note: &Note) -> Vec<u8> {
    // Every field of a note serializes infallibly (no maps with non-string keys, no
    // custom serializers that fail), so an error here is a bug in this crate.
    serde_json::to_vec(note).unwrap_or_else(|e| panic!("note failed to serialize: {e}"))
}

/// Parses bytes as a note of a supported version and a known type. A signature trailer
/// ([`crate::signing`]) is skipped: checking it is the receiver's business.
pub fn decode(payload: &[u8]) -> Result<Note, DecodeFailure> {
    let (bytes, _signature) = crate::signing::split(payload);
    // Fast path: a valid note is parsed once. Anything else takes the slow path below,
    // which parses leniently to classify the failure and recover the reply address.
    if bytes.len() <= MAX_NOTE_BYTES
        && let Ok(note) = serde_json::from_slice::<Note>(bytes)
        && note.version.major <= crate::PROTOCOL_VERSION.major
    {
        return Ok(note);
    }
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            let error = if bytes.len() > MAX_NOTE_BYTES {
                DecodeError::Oversize {
                    size: bytes.len(),
                    max: MAX_NOTE_BYTES,
                }
            } else {
                DecodeError::Malformed(e.to_string())
            };
            return Err(DecodeFailure {
                error,
                reply_to: None,
                note_id: None,
            });
        }
    };
    let fail = |error| DecodeFailure {
        error,
        reply_to: value
            .get("reply_to")
            .and_then(Value::as_str)
            .map(str::to_owned),
        note_id: value
            .get("id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .map(NoteId),
    };
    if bytes.len() > MAX_NOTE_BYTES {
        return Err(fail(DecodeError::Oversize {
            size: bytes.len(),
            max: MAX_NOTE_BYTES,
        }));
    }
    if let Some(version) = value
        .get("version")
        .and_then(|v| serde_json::from_value::<ProtocolVersion>(v.clone()).ok())
        && version.major > crate::PROTOCOL_VERSION.major
    {
        return Err(fail(DecodeError::UnsupportedVersion(version)));
    }
    if let Some(kind) = value
        .get("body")
        .and_then(|b| b.get("type"))
        .and_then(Value::as_str)
        && !Body::TYPES.contains(&kind)
    {
        return Err(fail(DecodeError::UnknownType(kind.to_owned())));
    }
    match Note::deserialize_value(&value) {
        Ok(note) => Ok(note),
        Err(e) => Err(fail(DecodeError::Malformed(e.to_string()))),
    }
}

impl Note {
    fn deserialize_value(value: &Value) -> Result<Note, serde_json::Error> {
        serde::Deserialize::deserialize(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PeerId, Ping, Role, Sender, UnixMicros};

    fn ping() -> Note {
        Note::new(
            Sender {
                id: PeerId::new("cli-1").unwrap(),
                role: Role::Controller,
                name: "cli".into(),
            },
            Body::Ping(Ping {}),
            UnixMicros(1),
        )
        .with_reply_to("maestro/v1/default/reply/cli-1")
    }

    fn value(note: &Note) -> Value {
        serde_json::to_value(note).unwrap()
    }

    #[test]
    fn garbage_is_malformed_without_reply() {
        let f = decode(b"\x00\xffnot json").unwrap_err();
        assert_eq!(f.error.code(), ErrorCode::Malformed);
        assert_eq!(f.reply_to, None);
    }

    #[test]
    fn unknown_type_keeps_reply_address() {
        let note = ping();
        let mut v = value(&note);
        v["body"]["type"] = "launch_rockets".into();
        let f = decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(f.error, DecodeError::UnknownType("launch_rockets".into()));
        assert_eq!(f.reply_to.as_deref(), note.reply_to.as_deref());
        assert_eq!(f.note_id, Some(note.id));
    }

    #[test]
    fn newer_major_version_is_refused() {
        let mut v = value(&ping());
        v["version"]["major"] = 2.into();
        v["body"]["type"] = "something_new".into();
        let f = decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(f.error.code(), ErrorCode::UnsupportedVersion);
        assert!(f.error.to_string().contains("2.0"), "{}", f.error);
        assert!(f.reply_to.is_some());
    }

    #[test]
    fn newer_minor_version_with_extra_fields_is_accepted() {
        let mut v = value(&ping());
        v["version"]["minor"] = 7.into();
        v["future_field"] = 1.into();
        v["body"]["future_field"] = "x".into();
        assert!(decode(&serde_json::to_vec(&v).unwrap()).is_ok());
    }

    #[test]
    fn wrong_field_type_is_malformed_with_reply() {
        let mut v = value(&ping());
        v["sent_at_us"] = "yesterday".into();
        let f = decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(f.error.code(), ErrorCode::Malformed);
        assert!(f.error.to_string().contains("yesterday"), "{}", f.error);
        assert!(f.reply_to.is_some());
    }

    #[test]
    fn oversize_is_refused_with_reply() {
        let mut v = value(&ping());
        v["padding"] = "x".repeat(MAX_NOTE_BYTES).into();
        let bytes = serde_json::to_vec(&v).unwrap();
        let f = decode(&bytes).unwrap_err();
        assert_eq!(
            f.error,
            DecodeError::Oversize {
                size: bytes.len(),
                max: MAX_NOTE_BYTES
            }
        );
        assert!(f.reply_to.is_some());
    }
}
