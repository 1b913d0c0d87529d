//! Random and mutated notes through everything a peer or a controller does with a note's
//! bytes before trusting it: decode, signature check, histogram decode, plausibility, and
//! the collection of result parts. No input may panic, and no note may make the heap grow
//! beyond a bound set by the note limit (a header's claimed size is never believed).
//!
//! 20,000 cases by default; the million: `MAESTRO_FUZZ_CASES=1000000 cargo test
//! --release -p maestro-protocol --test fuzz_notes -- --nocapture` (prints its figures).

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_protocol::signing::{SigningKey, VerifyingKey};
use maestro_protocol::{Body, MAX_NOTE_BYTES, MAX_PACKET_BYTES, PartsCollector, decode, histogram};
use peak_alloc::PeakAlloc;

/// Counts the heap in use and its peak, so that each note's cost can be measured.
#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

fn fixtures() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    out
}

/// Values that break naive code: huge numbers, negative ones, long strings, deep nesting,
/// a histogram header that claims 4 GiB.
const HOSTILE: &[&str] = &[
    "18446744073709551615",
    "9223372036854775808",
    "-1",
    "1e308",
    "null",
    "[]",
    "{}",
    "\"HISTFAAAACh4nJNpmSzMwMDAxQABzFCaEUzOfNg1MSHoAACrPQVr\"",
    "\"HISTFAAAAAD/////\"",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "{\"index\":0,\"count\":4294967295}",
    "{\"index\":4294967295,\"count\":64}",
];

const NUMBERS: &[&str] = &[
    "18446744073709551615",
    "9223372036854775807",
    "1125899906842624",
    "4294967295",
    "0",
    "1",
];

const STRINGS: &[&str] = &[
    "\"\"",
    "\"HISTFAAAACh4nJNpmSzMwMDAxQABzFCaEUzOfNg1MSHoAACrPQVr\"",
    "\"HISTFAAAAAD/////\"",
    "\"////////////////////////////////////////////////\"",
    "\"a/b/#/+\"",
];

fn mutate(rng: &mut fastrand::Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    let n = rng.usize(1..=2);
    for _ in 0..n {
        match rng.u8(0..16) {
            // Flip a byte.
            0 if !b.is_empty() => {
                let i = rng.usize(..b.len());
                b[i] = rng.u8(..);
            }
            // Cut.
            1 if !b.is_empty() => b.truncate(rng.usize(..b.len())),
            // Insert random bytes.
            2 | 3 => {
                let i = rng.usize(..=b.len());
                let extra: Vec<u8> = (0..rng.usize(1..16)).map(|_| rng.u8(..)).collect();
                b.splice(i..i, extra);
            }
            // Replace a JSON value (after a ':') with a hostile one.
            4..=12 => {
                let colons: Vec<usize> = b
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c == b':')
                    .map(|(i, _)| i + 1)
                    .collect();
                if let Some(&colon) = colons.get(rng.usize(..colons.len().max(1))) {
                    let start = b[colon..]
                        .iter()
                        .position(|c| !c.is_ascii_whitespace())
                        .map_or(b.len(), |p| colon + p);
                    let end = b[start..]
                        .iter()
                        .position(|c| matches!(c, b',' | b'}' | b']'))
                        .map_or(b.len(), |p| start + p);
                    // Mostly a value of the same type (so that the note still decodes
                    // and reaches what comes after), sometimes anything.
                    let pool: &[&str] = match b.get(start) {
                        _ if rng.u8(0..4) == 0 => HOSTILE,
                        Some(c) if c.is_ascii_digit() => NUMBERS,
                        Some(b'"') => STRINGS,
                        _ => HOSTILE,
                    };
                    let value = pool[rng.usize(..pool.len())].as_bytes();
                    b.splice(start..end, value.iter().copied());
                }
            }
            // Duplicate a span (repeated fields, long arrays).
            13 | 14 if !b.is_empty() => {
                let i = rng.usize(..b.len());
                let j = (i + rng.usize(1..256)).min(b.len());
                let span = b[i..j].to_vec();
                for _ in 0..rng.usize(1..64) {
                    b.splice(j..j, span.iter().copied());
                }
            }
            // Pure noise.
            _ => b = (0..rng.usize(0..512)).map(|_| rng.u8(..)).collect(),
        }
    }
    b.truncate(MAX_PACKET_BYTES);
    b
}

/// What a peer and a controller do with bytes from the broker before trusting them.
fn ingest(bytes: &[u8], verifier: &VerifyingKey, parts: &mut PartsCollector) -> bool {
    let _ = verifier.open("maestro/v1/c/event/w/result", bytes);
    let Ok(note) = decode(bytes) else {
        return false;
    };
    match &note.body {
        Body::RunStats(s) => {
            let _ = s.plausible();
            for h in [
                &s.histograms.response_time_us,
                &s.histograms.service_time_us,
            ] {
                let _ = histogram::decode(h);
            }
        }
        Body::RunResult(r) if r.plausible() => {
            for h in [&r.histograms.response_time_us, &r.histograms.send_lag_us] {
                let _ = histogram::decode(h);
            }
            if parts.add(r.clone()).is_err() {
                *parts = PartsCollector::default();
            }
        }
        _ => {}
    }
    true
}

#[test]
fn a_flood_of_random_and_mutated_notes_neither_panics_nor_allocates_beyond_a_bound() {
    let cases: u64 = std::env::var("MAESTRO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed = std::env::var("MAESTRO_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let corpus = fixtures();
    let verifier = SigningKey::generate().verifying_key();
    let mut parts = PartsCollector::default();
    let started = std::time::Instant::now();
    let mut decoded = 0u64;
    // The most the heap grew while one note was ingested.
    let mut worst = 0usize;
    for i in 0..cases {
        let seed_note = &corpus[(i as usize) % corpus.len()];
        let bytes = mutate(&mut rng, seed_note);
        let before = HEAP.current_usage();
        HEAP.reset_peak_usage();
        if ingest(&bytes, &verifier, &mut parts) {
            decoded += 1;
        }
        worst = worst.max(HEAP.peak_usage().saturating_sub(before));
    }
    let bound = 4 * MAX_NOTE_BYTES;
    eprintln!(
        "{cases} notes (seed {seed}) in {:?}: {decoded} decoded, the heap grew by at most {worst} bytes for one note (bound {bound})",
        started.elapsed(),
    );
    assert!(
        worst <= bound,
        "one note took {worst} bytes of heap (seed {seed})"
    );
    assert!(
        decoded > 0,
        "no mutated note decoded: the mutations are too coarse"
    );
}
