//! Signed notes: with a cluster key shared by every peer and controller, each note carries
//! an HMAC-SHA256 over its bytes (which hold its sender, id and send time), so the control
//! plane obeys only its own controllers whatever the broker lets through.
//!
//! Wire form: the note's JSON, then the trailer `\n#hmac-sha256:` and 64 hex digits.
//! Compact JSON never holds a raw newline, so the trailer is unambiguous, and a peer
//! without a key still reads a signed note. Requests are also refused when stale (sent
//! more than [`MAX_AGE`] before or after the receiver's clock) or replayed (a note id
//! already seen within that window): [`ReplayGuard`].

use crate::ids::NoteId;
use crate::time::UnixMicros;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// What separates a note's JSON from its signature.
pub const TRAILER: &[u8] = b"\n#hmac-sha256:";
/// How far a request's send time may be from the receiver's clock.
pub const MAX_AGE: Duration = Duration::from_secs(30);
/// The shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// A bad cluster key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "the cluster key has {0} bytes; it needs at least {MIN_KEY_BYTES} (make one with `maestro-cli certs init DIR`, which writes DIR/cluster.key, or `openssl rand -hex 32`)"
    )]
    TooShort(usize),
}

/// Why a note was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignatureError {
    #[error("the note is not signed (this cluster requires signed notes)")]
    Unsigned,
    #[error("the note's signature is wrong (signed with another cluster key, or altered)")]
    BadSignature,
    #[error(
        "the note was sent {age_s:.1} s from this peer's clock, more than the {max_s} s allowed (replayed, or clocks apart?)"
    )]
    Stale { age_s: f64, max_s: u64 },
    #[error("the note {0} was seen before (replayed)")]
    Replayed(NoteId),
}

/// The secret every peer and controller of a cluster shares. `Debug` hides it.
#[derive(Clone)]
pub struct ClusterKey {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(***)")
    }
}

impl ClusterKey {
    /// A key from a key file's contents: the bytes without surrounding whitespace.
    pub fn from_secret(secret: &[u8]) -> Result<Self, KeyError> {
        let trimmed = secret.trim_ascii();
        if trimmed.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort(trimmed.len()));
        }
        // HMAC takes keys of any length.
        let mac = Hmac::<Sha256>::new_from_slice(trimmed)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        Ok(ClusterKey { mac })
    }

    /// Appends the signature of `note` (its encoded bytes).
    pub fn seal(&self, mut note: Vec<u8>) -> Vec<u8> {
        let mut mac = self.mac.clone();
        mac.update(&note);
        let tag = mac.finalize().into_bytes();
        note.reserve(TRAILER.len() + 64);
        note.extend_from_slice(TRAILER);
        note.extend_from_slice(hex::encode(tag).as_bytes());
        note
    }

    /// The note's bytes when `payload` carries a valid signature of them.
    pub fn open<'a>(&self, payload: &'a [u8]) -> Result<&'a [u8], SignatureError> {
        let (note, signature) = split(payload);
        let signature = signature.ok_or(SignatureError::Unsigned)?;
        let tag = hex::decode(signature).map_err(|_| SignatureError::BadSignature)?;
        let mut mac = self.mac.clone();
        mac.update(note);
        mac.verify_slice(&tag)
            .map_err(|_| SignatureError::BadSignature)?;
        Ok(note)
    }
}

/// A payload's note bytes and its signature (hex), if it has one.
pub fn split(payload: &[u8]) -> (&[u8], Option<&[u8]>) {
    // The trailer is at most 14 + 64 bytes from the end: look there only.
    let tail_from = payload.len().saturating_sub(TRAILER.len() + 64);
    match payload[tail_from..]
        .windows(TRAILER.len())
        .position(|w| w == TRAILER)
    {
        Some(i) => {
            let at = tail_from + i;
            (&payload[..at], Some(&payload[at + TRAILER.len()..]))
        }
        None => (payload, None),
    }
}

/// Refuses stale and replayed requests: remembers the ids of the notes of the last
/// [`MAX_AGE`] (pure: the caller passes the clock).
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: HashMap<NoteId, i64>,
    /// Size of `seen` after the last prune.
    kept: usize,
}

impl ReplayGuard {
    /// Accepts a request sent at `sent_at` with id `id`, received at `now`, once.
    pub fn check(
        &mut self,
        id: NoteId,
        sent_at: UnixMicros,
        now: UnixMicros,
    ) -> Result<(), SignatureError> {
        let max = MAX_AGE.as_micros() as i64;
        let age = now.0 - sent_at.0;
        if age.abs() > max {
            return Err(SignatureError::Stale {
                age_s: age as f64 / 1e6,
                max_s: MAX_AGE.as_secs(),
            });
        }
        if self.seen.insert(id, sent_at.0).is_some() {
            return Err(SignatureError::Replayed(id));
        }
        // Forget what can no longer pass the age check: amortized, when the map doubled.
        if self.seen.len() > 2 * self.kept.max(512) {
            self.seen.retain(|_, sent| (now.0 - *sent).abs() <= max);
            self.kept = self.seen.len();
        }
        Ok(())
    }

    /// Ids remembered (for tests).
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ClusterKey {
        ClusterKey::from_secret(s.as_bytes()).unwrap()
    }

    #[test]
    fn sealed_notes_open_with_the_same_key_only() {
        let k = key("0123456789abcdef0123");
        let sealed = k.seal(br#"{"a":1}"#.to_vec());
        assert!(sealed.starts_with(br#"{"a":1}"#));
        assert_eq!(k.open(&sealed).unwrap(), br#"{"a":1}"#);
        // Surrounding whitespace of the key file does not matter.
        assert_eq!(
            key("  0123456789abcdef0123\n").open(&sealed).unwrap(),
            br#"{"a":1}"#
        );
        assert_eq!(
            key("another key, 20 chars").open(&sealed),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(k.open(br#"{"a":1}"#), Err(SignatureError::Unsigned));
        let mut altered = sealed.clone();
        altered[5] = b'2';
        assert_eq!(k.open(&altered), Err(SignatureError::BadSignature));
        let mut bad_hex = sealed;
        let n = bad_hex.len();
        bad_hex[n - 1] = b'z';
        assert_eq!(k.open(&bad_hex), Err(SignatureError::BadSignature));
        assert!(format!("{k:?}").contains("***"));
        assert_eq!(
            ClusterKey::from_secret(b"short\n").map(|_| ()),
            Err(KeyError::TooShort(5))
        );
    }

    #[test]
    fn split_finds_the_trailer_at_the_end_only() {
        assert_eq!(split(b"{}"), (&b"{}"[..], None));
        let sealed = key("0123456789abcdef").seal(b"{}".to_vec());
        let (note, sig) = split(&sealed);
        assert_eq!(note, b"{}");
        assert_eq!(sig.map(<[u8]>::len), Some(64));
    }

    #[test]
    fn stale_and_replayed_requests_are_refused() {
        let mut g = ReplayGuard::default();
        let now = UnixMicros(1_000_000_000_000);
        let (a, b) = (NoteId::random(), NoteId::random());
        assert!(g.check(a, UnixMicros(now.0 - 1_000_000), now).is_ok());
        assert_eq!(
            g.check(a, UnixMicros(now.0 - 1_000_000), now),
            Err(SignatureError::Replayed(a))
        );
        let stale = g.check(b, UnixMicros(now.0 - 31_000_000), now).unwrap_err();
        assert!(matches!(stale, SignatureError::Stale { .. }), "{stale}");
        assert!(stale.to_string().contains("31.0 s"), "{stale}");
        // From the future, too far: refused as well.
        assert!(g.check(b, UnixMicros(now.0 + 31_000_000), now).is_err());
        assert!(g.check(b, UnixMicros(now.0 + 1_000), now).is_ok());
    }

    #[test]
    fn the_guard_forgets_what_is_too_old_to_pass() {
        let mut g = ReplayGuard::default();
        let start = 1_000_000_000_000i64;
        for i in 0..5_000i64 {
            // One note every 10 ms: 3,000 fit in the 30 s window.
            let now = UnixMicros(start + i * 10_000);
            g.check(NoteId::random(), now, now).unwrap();
        }
        assert!(g.remembered() <= 2 * 3_001 + 1, "{}", g.remembered());
    }
}
