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
}
