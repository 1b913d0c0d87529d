//! Identifiers: peer and note ids, cluster names, and validated topic segments.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Longest accepted topic segment (cluster, group, name, member, peer id).
pub const MAX_SEGMENT_LEN: usize = 64;

/// Why a string cannot be used as one level of the topic tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} {value:?} is longer than {MAX_SEGMENT_LEN} characters")]
    TooLong { what: &'static str, value: String },
    #[error(
        "{what} {value:?} contains {bad:?}; allowed are letters, digits and '-', '_', '.', '@', ':'"
    )]
    BadChar {
        what: &'static str,
        value: String,
        bad: char,
    },
}

/// Checks that `value` can stand as one topic level: non-empty, at most
/// [`MAX_SEGMENT_LEN`] characters, and only letters, digits, `-`, `_`, `.`, `@`, `:`
/// (so never the MQTT separators and wildcards `/`, `+`, `#`).
pub fn validate_segment(what: &'static str, value: &str) -> Result<(), SegmentError> {
    if value.is_empty() {
        return Err(SegmentError::Empty { what });
    }
    if value.chars().count() > MAX_SEGMENT_LEN {
        return Err(SegmentError::TooLong {
            what,
            value: value.to_owned(),
        });
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':')))
    {
        return Err(SegmentError::BadChar {
            what,
            value: value.to_owned(),
            bad,
        });
    }
    Ok(())
}

macro_rules! segment_newtype {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `value` as a topic segment.
            pub fn new(value: impl Into<String>) -> Result<Self, SegmentError> {
                let value = value.into();
                validate_segment($what, &value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = SegmentError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl FromStr for $name {
            type Err = SegmentError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

segment_newtype!(
    /// A peer's unique id (workers, inspectors and controllers alike). It is a topic
    /// segment; the peer's MQTT client id is this plus a random part, so that reading the
    /// id in a note does not let anyone take over the peer's session.
    PeerId,
    "peer id"
);
segment_newtype!(
    /// The cluster namespace: peers of different clusters share a broker without seeing
    /// each other.
    ClusterId,
    "cluster"
);
segment_newtype!(
    /// Any other name that appears in a topic (a group, for example).
    Segment,
    "name"
);
segment_newtype!(
    /// The name of a fault action declared in an inspector's local file.
    ActionName,
    "fault action name"
);

impl PeerId {
    /// A fresh random id with a readable prefix, for example `worker-3f2a...`.
    pub fn random(prefix: &str) -> Self {
        Self(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()))
    }
}

impl Default for ClusterId {
    fn default() -> Self {
        Self("default".to_owned())
    }
}

/// A note's unique id; replies carry the request's id as their correlation id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NoteId(pub uuid::Uuid);

impl NoteId {
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

impl fmt::Display for NoteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_reject_topic_syntax() {
        for bad in ["", "a/b", "a+", "#", "with space", &"x".repeat(65)] {
            assert!(Segment::new(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["default", "worker-1", "host.example:1", "me@host", "Grüppe"] {
            assert!(Segment::new(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn error_names_the_value() {
        let err = ClusterId::new("a/b").unwrap_err().to_string();
        assert!(
            err.contains("cluster") && err.contains("\"a/b\"") && err.contains("'/'"),
            "{err}"
        );
    }

    #[test]
    fn ids_deserialize_with_validation() {
        assert!(serde_json::from_str::<PeerId>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<PeerId>("\"bad/1\"").is_err());
    }
}
