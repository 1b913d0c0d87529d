//! Signed notes, with two key pairs and least privilege: controllers sign requests with
//! the **controller key** and peers (workers, inspectors) hold only its public half, so
//! nothing a peer holds can command another peer; peers sign replies, events and presence
//! with the **peer key**, whose public half controllers hold. Keys are Ed25519.
//!
//! What is signed is the note's JSON bound to the topic it is published on
//! ([`signed_message`]): the topic names the cluster and the target (a peer, role, group
//! or everyone) or the sender (events, presence), and the JSON holds the sender, id, send
//! time and the run. A note moved to another topic fails its signature; a note of another
//! run is refused by its receiver's run checks.
//!
//! Wire form: the note's JSON, then the trailer `\n#ed25519:` and 128 hex digits. Compact
//! JSON never holds a raw newline, so the trailer is unambiguous, and a process without
//! keys still reads a signed note. Requests (and, at controllers, replies and events) are
//! also refused when stale (sent more than [`MAX_AGE`] before or after the receiver's
//! clock) or replayed (a note id already seen within that window): [`ReplayGuard`].

use crate::ids::NoteId;
use crate::time::UnixMicros;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer as _, Verifier as _};
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// What separates a note's JSON from its signature.
pub const TRAILER: &[u8] = b"\n#ed25519:";
/// Hex digits of a signature.
const SIGNATURE_HEX: usize = 2 * ed25519_dalek::SIGNATURE_LENGTH;
/// How far a note's send time may be from the receiver's clock.
pub const MAX_AGE: Duration = Duration::from_secs(30);
/// What a signature is over, before the topic and the note: no signature made for
/// anything else verifies as a note's.
const DOMAIN: &[u8] = b"maestro/v1 note\0";

/// The key files of a keys folder (`maestro-cli certs init DIR`, `--keys DIR`).
pub mod files {
    /// The controllers' private key: signs requests. Only controllers hold it.
    pub const CONTROLLER_KEY: &str = "controller.key";
    /// Its public half: peers check requests with it.
    pub const CONTROLLER_PUB: &str = "controller.pub";
    /// The peers' private key: signs replies, events and presence. Workers and inspectors
    /// hold it.
    pub const PEER_KEY: &str = "peer.key";
    /// Its public half: controllers check peers' notes with it.
    pub const PEER_PUB: &str = "peer.pub";
}

/// A key file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "not an Ed25519 private key in PKCS#8 PEM ({0}); make one with `maestro-cli certs init DIR` or `openssl genpkey -algorithm ed25519`"
    )]
    Private(String),
    #[error(
        "not an Ed25519 public key in PEM ({0}); make one with `maestro-cli certs init DIR` or `openssl pkey -pubout`"
    )]
    Public(String),
}

/// Why a note was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignatureError {
    #[error("the note is not signed (this cluster requires signed notes)")]
    Unsigned,
    #[error(
        "the note's signature is wrong (signed with another key, for another topic, or altered)"
    )]
    BadSignature,
    #[error(
        "the note was sent {age_s:.1} s from this clock, more than the {max_s} s allowed (replayed, or clocks apart?)"
    )]
    Stale { age_s: f64, max_s: u64 },
    #[error("the note {0} was seen before (replayed)")]
    Replayed(NoteId),
}

/// A private key: signs notes. `Debug` hides it.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

/// A public key: checks notes.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey(ed25519_dalek::VerifyingKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", self.fingerprint())
    }
}

impl SigningKey {
    /// A new random key, from the operating system's generator.
    pub fn generate() -> Self {
        SigningKey(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng))
    }

    /// A key from a PKCS#8 PEM file's text (as `openssl genpkey -algorithm ed25519`
    /// writes it).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem.trim())
            .map(SigningKey)
            .map_err(|e| KeyError::Private(e.to_string()))
    }

    /// The key as PKCS#8 PEM.
    pub fn to_pem(&self) -> String {
        self.0
            .to_pkcs8_pem(Default::default())
            .map(|pem| pem.to_string())
            .unwrap_or_else(|e| unreachable!("an Ed25519 key always encodes: {e}"))
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.verifying_key())
    }

    /// Appends the signature of `note` (its encoded bytes) published on `topic`.
    pub fn seal(&self, topic: &str, mut note: Vec<u8>) -> Vec<u8> {
        let signature = self.0.sign(&signed_message(topic, &note));
        note.reserve(TRAILER.len() + SIGNATURE_HEX);
        note.extend_from_slice(TRAILER);
        note.extend_from_slice(hex::encode(signature.to_bytes()).as_bytes());
        note
    }
}

impl VerifyingKey {
    /// A key from a PEM file's text (SubjectPublicKeyInfo, as `openssl pkey -pubout`
    /// writes it).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        ed25519_dalek::VerifyingKey::from_public_key_pem(pem.trim())
            .map(VerifyingKey)
            .map_err(|e| KeyError::Public(e.to_string()))
    }

    /// The key as PEM.
    pub fn to_pem(&self) -> String {
        self.0
            .to_public_key_pem(Default::default())
            .unwrap_or_else(|e| unreachable!("an Ed25519 key always encodes: {e}"))
    }

    /// A short name of the key for logs and `ping`: its first 8 bytes in hex.
    pub fn fingerprint(&self) -> String {
        hex::encode(&self.0.as_bytes()[..8])
    }

    /// The note's bytes when `payload`, received on `topic`, carries a valid signature.
    pub fn open<'a>(&self, topic: &str, payload: &'a [u8]) -> Result<&'a [u8], SignatureError> {
        let (note, signature) = split(payload);
        let signature = signature.ok_or(SignatureError::Unsigned)?;
        let mut bytes = [0u8; ed25519_dalek::SIGNATURE_LENGTH];
        hex::decode_to_slice(signature, &mut bytes).map_err(|_| SignatureError::BadSignature)?;
        let signature = ed25519_dalek::Signature::from_bytes(&bytes);
        self.0
            .verify(&signed_message(topic, note), &signature)
            .map_err(|_| SignatureError::BadSignature)?;
        Ok(note)
    }
}

/// What a signature covers: a domain tag, the topic (length-prefixed) and the note.
pub fn signed_message(topic: &str, note: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(DOMAIN.len() + 4 + topic.len() + note.len());
    message.extend_from_slice(DOMAIN);
    message.extend_from_slice(&(topic.len() as u32).to_be_bytes());
    message.extend_from_slice(topic.as_bytes());
    message.extend_from_slice(note);
    message
}

/// A payload's note bytes and its signature (hex), if it has one.
pub fn split(payload: &[u8]) -> (&[u8], Option<&[u8]>) {
    // The trailer is at most its length plus 128 bytes from the end: look there only.
    let tail_from = payload.len().saturating_sub(TRAILER.len() + SIGNATURE_HEX);
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

/// Refuses stale and replayed notes: remembers the ids of the notes of the last
/// [`MAX_AGE`] (pure: the caller passes the clock).
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: HashMap<NoteId, i64>,
    /// Size of `seen` after the last prune.
    kept: usize,
}

impl ReplayGuard {
    /// Accepts a note sent at `sent_at` with id `id`, received at `now`, once.
    pub fn check(
        &mut self,
        id: NoteId,
        sent_at: UnixMicros,
        now: UnixMicros,
    ) -> Result<(), SignatureError> {
        let max = MAX_AGE.as_micros() as i64;
        let age = now.0.saturating_sub(sent_at.0);
        if age.saturating_abs() > max {
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
            self.seen
                .retain(|_, sent| now.0.saturating_sub(*sent).saturating_abs() <= max);
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

    const TOPIC: &str = "maestro/v1/default/req/peer/worker-1";

    #[test]
    fn sealed_notes_open_with_the_public_half_on_the_same_topic_only() {
        let k = SigningKey::generate();
        let public = k.verifying_key();
        let sealed = k.seal(TOPIC, br#"{"a":1}"#.to_vec());
        assert!(sealed.starts_with(br#"{"a":1}"#));
        assert_eq!(public.open(TOPIC, &sealed).unwrap(), br#"{"a":1}"#);
        // Another topic (another peer, role, group or cluster): refused.
        for other in [
            "maestro/v1/default/req/peer/worker-2",
            "maestro/v1/default/req/all",
            "maestro/v1/other/req/peer/worker-1",
        ] {
            assert_eq!(
                public.open(other, &sealed),
                Err(SignatureError::BadSignature)
            );
        }
        // Another key: refused.
        let other = SigningKey::generate().verifying_key();
        assert_eq!(
            other.open(TOPIC, &sealed),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            public.open(TOPIC, br#"{"a":1}"#),
            Err(SignatureError::Unsigned)
        );
        let mut altered = sealed.clone();
        altered[5] = b'2';
        assert_eq!(
            public.open(TOPIC, &altered),
            Err(SignatureError::BadSignature)
        );
        let mut bad_hex = sealed.clone();
        let n = bad_hex.len();
        bad_hex[n - 1] = b'z';
        assert_eq!(
            public.open(TOPIC, &bad_hex),
            Err(SignatureError::BadSignature)
        );
        let short = &sealed[..sealed.len() - 2];
        assert_eq!(public.open(TOPIC, short), Err(SignatureError::BadSignature));
        assert!(format!("{k:?}").contains("***"));
    }

    #[test]
    fn keys_round_trip_through_pem_and_bad_pem_says_what_it_wanted() {
        let k = SigningKey::generate();
        let pem = k.to_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
        let back = SigningKey::from_pem(&format!("\n{pem}\n")).unwrap();
        assert_eq!(back.verifying_key(), k.verifying_key());
        let public = k.verifying_key().to_pem();
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");
        assert_eq!(VerifyingKey::from_pem(&public).unwrap(), k.verifying_key());
        let e = SigningKey::from_pem(&public).unwrap_err().to_string();
        assert!(e.contains("Ed25519 private key"), "{e}");
        let e = VerifyingKey::from_pem("garbage").unwrap_err().to_string();
        assert!(e.contains("Ed25519 public key"), "{e}");
        // openssl genpkey -algorithm ed25519 (PKCS#8 v1), and its public half.
        let openssl = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAH/C8OLu24gzJ+EjGrQFCTcTDkfAFHj/Ju2DZ0NjGCC\n-----END PRIVATE KEY-----\n";
        let k = SigningKey::from_pem(openssl).unwrap();
        let sealed = k.seal(TOPIC, b"{}".to_vec());
        assert!(k.verifying_key().open(TOPIC, &sealed).is_ok());
    }

    #[test]
    fn split_finds_the_trailer_at_the_end_only() {
        assert_eq!(split(b"{}"), (&b"{}"[..], None));
        let sealed = SigningKey::generate().seal(TOPIC, b"{}".to_vec());
        let (note, sig) = split(&sealed);
        assert_eq!(note, b"{}");
        assert_eq!(sig.map(<[u8]>::len), Some(SIGNATURE_HEX));
    }

    #[test]
    fn stale_and_replayed_notes_are_refused() {
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
        // Absurd times neither overflow nor pass.
        assert!(
            g.check(NoteId::random(), UnixMicros(i64::MIN), now)
                .is_err()
        );
        assert!(
            g.check(NoteId::random(), UnixMicros(i64::MAX), now)
                .is_err()
        );
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
