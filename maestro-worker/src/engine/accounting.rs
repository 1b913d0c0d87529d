//! Exact delivery accounting at a consumer: per producer, the set of sequence numbers
//! received (a compressed bitmap), so duplicates are counted exactly and losses follow from
//! what the producer says it sent.

use maestro_protocol::Delivery;
use roaring::RoaringTreemap;

#[derive(Debug, Default)]
struct Track {
    /// Every sequence below this was received (the in-order fast path: no bitmap work).
    contiguous: u64,
    /// Sequences received at or above `contiguous`.
    seen: RoaringTreemap,
    /// Highest sequence seen so far, plus one (0: none yet).
    next: u64,
    duplicated: u64,
    out_of_order: u64,
}

/// What one consumer received, per producer.
#[derive(Debug)]
pub struct Accounting {
    consumer: u32,
    tracks: Vec<Track>,
}

/// Outcome of recording one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    New,
    OutOfOrder,
    Duplicate,
    /// A producer id outside the run.
    Foreign,
}

impl Accounting {
    pub fn new(consumer: u32, producers: u32) -> Self {
        Self {
            consumer,
            tracks: (0..producers).map(|_| Track::default()).collect(),
        }
    }

    #[inline]
    pub fn record(&mut self, producer: u32, sequence: u64) -> Seen {
        let Some(t) = self.tracks.get_mut(producer as usize) else {
            return Seen::Foreign;
        };
        // The common case: the next message in order, nothing pending.
        if sequence == t.contiguous && t.seen.is_empty() {
            t.contiguous += 1;
            t.next = t.contiguous;
            return Seen::New;
        }
        if sequence < t.contiguous || !t.seen.insert(sequence) {
            t.duplicated += 1;
            return Seen::Duplicate;
        }
        if sequence == t.contiguous {
            // A gap closed: fold the bitmap's run into the contiguous prefix.
            while t.seen.remove(t.contiguous) {
                t.contiguous += 1;
            }
        }
        if sequence.saturating_add(1) < t.next {
            t.out_of_order += 1;
            return Seen::OutOfOrder;
        }
        t.next = sequence.saturating_add(1);
        Seen::New
    }

    /// One entry per producer this consumer heard from.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.tracks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.contiguous > 0 || !t.seen.is_empty())
            .map(|(p, t)| Delivery {
                consumer: self.consumer,
                producer: p as u32,
                producers: 1,
                unique: t.contiguous + t.seen.len(),
                duplicated: t.duplicated,
                out_of_order: t.out_of_order,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_close_and_late_duplicates_are_caught() {
        let mut a = Accounting::new(0, 1);
        for s in [0, 1, 3, 4] {
            assert_eq!(a.record(0, s), Seen::New);
        }
        assert_eq!(a.record(0, 2), Seen::OutOfOrder);
        assert_eq!(a.record(0, 5), Seen::New, "back on the fast path");
        for s in [0, 2, 4, 5] {
            assert_eq!(a.record(0, s), Seen::Duplicate);
        }
        let d = a.deliveries()[0];
        assert_eq!((d.unique, d.duplicated, d.out_of_order), (6, 4, 1));
    }

    #[test]
    fn duplicates_reorders_and_foreign() {
        let mut a = Accounting::new(3, 2);
        for s in [0, 1, 2, 4, 3, 4, 5] {
            a.record(0, s);
        }
        assert_eq!(a.record(1, 0), Seen::New);
        assert_eq!(a.record(9, 0), Seen::Foreign);
        let d = a.deliveries();
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[0],
            Delivery {
                consumer: 3,
                producer: 0,
                producers: 1,
                unique: 6,
                duplicated: 1,
                out_of_order: 1
            }
        );
    }
}
