//! The header at the start of every test message. Fixed layout, little-endian:
//!
//! ```text
//! offset size field
//!      0    2 magic "MQ"
//!      2    1 version (1)
//!      3    1 flags (0)
//!      4    4 producer id
//!      8    8 sequence number (from 0, per producer)
//!     16    8 intended send time, ns since the Unix epoch
//!     24    8 actual send time, ns since the Unix epoch
//! ```
//!
//! The rest of the message is filler up to the requested size.

/// Bytes of the header; the smallest possible message.
pub const HEADER_LEN: usize = 32;
const MAGIC: [u8; 2] = *b"MQ";
const VERSION: u8 = 1;

/// The decoded header of a test message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadHeader {
    pub producer: u32,
    pub sequence: u64,
    pub intended_ns: i64,
    pub actual_ns: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("message of {0} bytes is shorter than the {HEADER_LEN}-byte maestro header")]
    TooShort(usize),
    #[error("message does not start with the maestro header magic")]
    BadMagic,
    #[error("maestro header version {0} is not supported")]
    Version(u8),
}

impl PayloadHeader {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `buf`.
    ///
    /// # Panics
    /// When `buf` is shorter than [`HEADER_LEN`]; sizes are validated up front.
    #[inline]
    pub fn write(&self, buf: &mut [u8]) {
        let buf = &mut buf[..HEADER_LEN];
        buf[0..2].copy_from_slice(&MAGIC);
        buf[2] = VERSION;
        buf[3] = 0;
        buf[4..8].copy_from_slice(&self.producer.to_le_bytes());
        buf[8..16].copy_from_slice(&self.sequence.to_le_bytes());
        buf[16..24].copy_from_slice(&self.intended_ns.to_le_bytes());
        buf[24..32].copy_from_slice(&self.actual_ns.to_le_bytes());
    }

    /// Rewrites only the actual send time of a header already in `buf`.
    #[inline]
    pub fn stamp_actual(buf: &mut [u8], actual_ns: i64) {
        buf[24..32].copy_from_slice(&actual_ns.to_le_bytes());
    }

    /// Reads the header at the start of `buf`.
    #[inline]
    pub fn read(buf: &[u8]) -> Result<Self, PayloadError> {
        if buf.len() < HEADER_LEN {
            return Err(PayloadError::TooShort(buf.len()));
        }
        if buf[0..2] != MAGIC {
            return Err(PayloadError::BadMagic);
        }
        if buf[2] != VERSION {
            return Err(PayloadError::Version(buf[2]));
        }
        let u32_at = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[i..i + 8]);
            u64::from_le_bytes(b)
        };
        Ok(Self {
            producer: u32_at(4),
            sequence: u64_at(8),
            intended_ns: u64_at(16) as i64,
            actual_ns: u64_at(24) as i64,
        })
    }
}

/// Length of the header's text form (for text payloads such as JSON): `mq1` and the 28
/// bytes after the binary header's first 4, in lowercase hex.
pub const TEXT_LEN: usize = 3 + 56;
const TEXT_MAGIC: &[u8; 3] = b"mq1";

impl PayloadHeader {
    /// Writes the header's text form into `out` (exactly [`TEXT_LEN`] bytes).
    #[inline]
    pub fn write_text(&self, out: &mut [u8; TEXT_LEN]) {
        let mut bin = [0u8; HEADER_LEN];
        self.write(&mut bin);
        out[..3].copy_from_slice(TEXT_MAGIC);
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (k, b) in bin[4..].iter().enumerate() {
            out[3 + 2 * k] = HEX[usize::from(b >> 4)];
            out[4 + 2 * k] = HEX[usize::from(b & 15)];
        }
    }

    /// Reads the header at the start of `buf`, or else its text form anywhere in `buf`.
    #[inline]
    pub fn read_any(buf: &[u8]) -> Result<Self, PayloadError> {
        match Self::read(buf) {
            Err(PayloadError::BadMagic | PayloadError::TooShort(_)) => {
                Self::find_text(buf).ok_or(PayloadError::BadMagic)
            }
            other => other,
        }
    }

    /// The first valid text-form header in `buf`.
    pub fn find_text(buf: &[u8]) -> Option<Self> {
        let mut from = 0;
        while from + TEXT_LEN <= buf.len() {
            let at = from + buf[from..].windows(3).position(|w| w == TEXT_MAGIC)?;
            if let Some(text) = buf.get(at..at + TEXT_LEN)
                && let Some(h) = Self::parse_text(text)
            {
                return Some(h);
            }
            from = at + 1;
        }
        None
    }

    fn parse_text(text: &[u8]) -> Option<Self> {
        let mut bin = [0u8; HEADER_LEN];
        bin[0..2].copy_from_slice(&MAGIC);
        bin[2] = VERSION;
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        for k in 0..28 {
            bin[4 + k] = digit(text[3 + 2 * k])? << 4 | digit(text[4 + 2 * k])?;
        }
        Self::read(&bin).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let h = PayloadHeader {
            producer: 7,
            sequence: u64::MAX - 3,
            intended_ns: 1_700_000_000_000_000_123,
            actual_ns: -5,
        };
        let mut buf = vec![0xAA; 100];
        h.write(&mut buf);
        assert_eq!(PayloadHeader::read(&buf), Ok(h));
        PayloadHeader::stamp_actual(&mut buf, 42);
        assert_eq!(PayloadHeader::read(&buf).unwrap().actual_ns, 42);
        assert_eq!(buf[HEADER_LEN], 0xAA, "filler untouched");
        assert_eq!(
            PayloadHeader::read(&buf[..10]),
            Err(PayloadError::TooShort(10))
        );
        buf[0] = b'X';
        assert_eq!(PayloadHeader::read(&buf), Err(PayloadError::BadMagic));
    }

    #[test]
    fn the_text_form_is_found_inside_json() {
        let h = PayloadHeader {
            producer: 12,
            sequence: 99,
            intended_ns: 1_700_000_000_000_000_123,
            actual_ns: 1_700_000_000_000_000_456,
        };
        let mut text = [0u8; TEXT_LEN];
        h.write_text(&mut text);
        let text = std::str::from_utf8(&text).unwrap();
        let json = format!(r#"{{"id":"mq1x","maestro":"{text}","t":1}}"#);
        assert_eq!(PayloadHeader::read_any(json.as_bytes()), Ok(h));
        assert_eq!(
            PayloadHeader::read_any(b"{\"no\":1}"),
            Err(PayloadError::BadMagic)
        );
    }
}
