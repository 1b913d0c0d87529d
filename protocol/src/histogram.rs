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

#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    #[error("histogram is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("histogram is not HdrHistogram V2: {0}")]
    Format(String),
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

/// Decodes a histogram from a note; the empty string is an empty histogram.
pub fn decode(s: &str) -> Result<Histogram<u64>, HistogramError> {
    if s.is_empty() {
        return Ok(latency_histogram());
    }
    let bytes = STANDARD.decode(s)?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
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
}
