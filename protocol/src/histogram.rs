//! The histogram wire format: HdrHistogram V2, deflate-compressed, base64, values in
//! microseconds from 1 µs to 1 hour with 3 significant digits. Percentiles are only ever
//! computed from merged histograms, never averaged.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};

/// Highest recordable latency: one hour, in microseconds.
pub const MAX_US: u64 = 3_600_000_000;

/// An empty latency histogram (µs, 1 µs ..= 1 h, 3 significant digits).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).unwrap_or_else(|_| unreachable!("valid bounds"))
}

/// Longest encoded histogram a note may carry (base64 characters). A full latency
/// histogram (every one of its ~23,000 buckets counted) compresses to far less.
pub const MAX_ENCODED: usize = 512 * 1024;
/// Largest V2 payload (the varint counts after the 40-byte header) accepted, bytes: a
/// latency histogram's every bucket at 9 bytes is about 210 KiB.
pub const MAX_PAYLOAD: usize = 256 * 1024;
/// Most values one histogram may hold: a million messages a second for 30 years is
/// about 2^50. A claim above it is forged or corrupt, never real.
pub const MAX_COUNT: u64 = 1 << 50;

// HdrHistogram's V2 cookies (its base cookies with the word-size bits, 0x10).
const V2_COOKIE: u32 = 0x1c84_9313;
const V2_DEFLATE_COOKIE: u32 = 0x1c84_9314;
const V2_HEADER: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    #[error("histogram is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("histogram is not HdrHistogram V2: {0}")]
    Format(String),
    #[error("histogram refused: {0}")]
    OutOfBounds(String),
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The uncompressed V2 bytes of a histogram, checked before anything is allocated for it:
/// the sizes its headers claim match the bytes present and stay under [`MAX_PAYLOAD`], its
/// bounds are a latency histogram's (1 µs ..= [`MAX_US`], at most 3 significant digits),
/// and its counts add up without overflow to at most [`MAX_COUNT`].
fn checked_v2(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, HistogramError> {
    use std::io::Read;
    let bad = |what: String| HistogramError::OutOfBounds(what);
    let raw: std::borrow::Cow<'_, [u8]> = match be32(bytes, 0) {
        Some(V2_DEFLATE_COOKIE) => {
            let claimed = be32(bytes, 4).ok_or_else(|| bad("truncated header".into()))? as usize;
            if claimed != bytes.len() - 8 {
                return Err(bad(format!(
                    "claims {claimed} compressed bytes, carries {}",
                    bytes.len() - 8
                )));
            }
            let mut out = Vec::with_capacity(4096);
            let limit = (V2_HEADER + MAX_PAYLOAD) as u64 + 1;
            flate2::read::ZlibDecoder::new(&bytes[8..])
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| HistogramError::Format(e.to_string()))?;
            if out.len() as u64 >= limit {
                return Err(bad(format!(
                    "inflates past {} bytes",
                    V2_HEADER + MAX_PAYLOAD
                )));
            }
            out.into()
        }
        Some(V2_COOKIE) => bytes.into(),
        Some(other) => return Err(HistogramError::Format(format!("cookie {other:#x}"))),
        None => return Err(bad("truncated header".into())),
    };
    if be32(&raw, 0) != Some(V2_COOKIE) || raw.len() < V2_HEADER {
        return Err(HistogramError::Format("no V2 header".into()));
    }
    let payload = be32(&raw, 4).unwrap_or(u32::MAX) as usize;
    if payload > MAX_PAYLOAD || payload != raw.len() - V2_HEADER {
        return Err(bad(format!(
            "claims a {payload}-byte payload, carries {} (at most {MAX_PAYLOAD})",
            raw.len() - V2_HEADER
        )));
    }
    let digits = be32(&raw, 12).unwrap_or(u32::MAX);
    let (low, high) = (
        be64(&raw, 16).unwrap_or(0),
        be64(&raw, 24).unwrap_or(u64::MAX),
    );
    if digits > 3 || low < 1 || high > MAX_US || low > high {
        return Err(bad(format!(
            "bounds {low}..={high} with {digits} digits are not a latency histogram's (1..={MAX_US}, at most 3)"
        )));
    }
    // The counts: zig-zag LEB128 numbers, a negative one a run of empty buckets.
    let mut total: u64 = 0;
    let mut rest = &raw[V2_HEADER..];
    while !rest.is_empty() {
        let mut value: u64 = 0;
        let mut shift = 0;
        loop {
            let Some((&byte, tail)) = rest.split_first() else {
                return Err(HistogramError::Format("a count is cut off".into()));
            };
            rest = tail;
            // The 9th byte carries 8 whole bits (HdrHistogram's LEB128 variant).
            if shift == 56 {
                value |= u64::from(byte) << 56;
                break;
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let decoded = ((value >> 1) as i64) ^ -((value & 1) as i64);
        if decoded > 0 {
            total = total
                .checked_add(decoded as u64)
                .filter(|t| *t <= MAX_COUNT)
                .ok_or_else(|| bad(format!("counts add up to more than {MAX_COUNT}")))?;
        }
    }
    Ok(raw)
}

/// Encodes a histogram for a note.
pub fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::with_capacity(256);
    // Serializing to a Vec cannot fail for a valid histogram.
    if V2DeflateSerializer::new().serialize(h, &mut bytes).is_err() {
        bytes.clear();
    }
    STANDARD.encode(bytes)
}

/// Decodes a histogram from a note; the empty string is an empty histogram. Whatever the
/// note claims, nothing larger than [`MAX_ENCODED`] is decoded, nothing is allocated
/// beyond [`MAX_PAYLOAD`] plus a latency histogram, and counts beyond [`MAX_COUNT`] are
/// refused (see `checked_v2`).
pub fn decode(s: &str) -> Result<Histogram<u64>, HistogramError> {
    if s.is_empty() {
        return Ok(latency_histogram());
    }
    if s.len() > MAX_ENCODED {
        return Err(HistogramError::OutOfBounds(format!(
            "{} base64 characters (at most {MAX_ENCODED})",
            s.len()
        )));
    }
    let bytes = STANDARD.decode(s)?;
    let raw = checked_v2(&bytes)?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut &raw[..])
        .map_err(|e| HistogramError::Format(format!("{e:?}")))?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_lossless_and_merges() {
        let mut a = latency_histogram();
        let mut b = latency_histogram();
        for v in 1..=1000u64 {
            a.record(v).unwrap();
            b.record(v * 1000).unwrap();
        }
        let a2 = decode(&encode(&a)).unwrap();
        assert_eq!(a2, a);
        let mut merged = latency_histogram();
        merged.add(&a2).unwrap();
        merged.add(decode(&encode(&b)).unwrap()).unwrap();
        assert_eq!(merged.len(), 2000);
        assert_eq!(merged.value_at_quantile(0.5), a.max());
        assert!(decode("").unwrap().is_empty());
        assert!(decode("not base64!").is_err());
    }

    /// A V2 histogram (uncompressed) with the given header fields and payload.
    fn forged(payload_len: u32, digits: u32, low: u64, high: u64, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(V2_COOKIE.to_be_bytes());
        b.extend(payload_len.to_be_bytes());
        b.extend(0u32.to_be_bytes());
        b.extend(digits.to_be_bytes());
        b.extend(low.to_be_bytes());
        b.extend(high.to_be_bytes());
        b.extend(1.0f64.to_be_bytes());
        b.extend(payload);
        b
    }

    fn deflated(raw: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(raw).unwrap();
        let body = z.finish().unwrap();
        let mut b = V2_DEFLATE_COOKIE.to_be_bytes().to_vec();
        b.extend((body.len() as u32).to_be_bytes());
        b.extend(body);
        b
    }

    fn refused(bytes: &[u8]) -> String {
        match decode(&STANDARD.encode(bytes)) {
            Ok(h) => panic!("accepted {} values", h.len()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn forged_headers_are_refused_before_allocation() {
        // A payload of 4 GiB claimed, a few bytes present.
        let e = refused(&forged(u32::MAX, 3, 1, MAX_US, &[2]));
        assert!(e.contains("payload"), "{e}");
        // The same claim inside a compressed histogram.
        let e = refused(&deflated(&forged(u32::MAX, 3, 1, MAX_US, &[2])));
        assert!(e.contains("payload"), "{e}");
        // A compressed length that does not match the bytes present.
        let mut lying = deflated(&forged(1, 3, 1, MAX_US, &[2]));
        lying[4..8].copy_from_slice(&1_000_000u32.to_be_bytes());
        assert!(refused(&lying).contains("compressed"));
        // A zip bomb: a small body that inflates past the limit.
        let e = refused(&deflated(&vec![0u8; 10 * MAX_PAYLOAD]));
        assert!(e.contains("inflates") || e.contains("header"), "{e}");
        // Bounds that would allocate a huge counts array.
        let e = refused(&forged(1, 5, 1, u64::MAX / 2, &[2]));
        assert!(e.contains("bounds"), "{e}");
        // Counts near 2^63 (zig-zag 2^62 twice): refused, never wrapped.
        let big = {
            let v: u64 = (1u64 << 62) << 1; // zig-zag of +2^62
            let mut out = Vec::new();
            let mut x = v;
            for _ in 0..8 {
                out.push((x as u8 & 0x7f) | 0x80);
                x >>= 7;
            }
            out.push(x as u8);
            out
        };
        let payload = [big.clone(), big].concat();
        let e = refused(&forged(payload.len() as u32, 3, 1, MAX_US, &payload));
        assert!(e.contains("counts"), "{e}");
        // Too long to decode at all.
        assert!(decode(&"A".repeat(MAX_ENCODED + 4)).is_err());
    }

    #[test]
    fn a_full_latency_histogram_fits_the_bounds() {
        let mut h = latency_histogram();
        let mut v = 1u64;
        while v <= MAX_US {
            h.record_n(v, 1_000_000).unwrap();
            v = v + v / 500 + 1;
        }
        let encoded = encode(&h);
        assert!(encoded.len() < MAX_ENCODED, "{}", encoded.len());
        assert_eq!(decode(&encoded).unwrap(), h);
    }
}
