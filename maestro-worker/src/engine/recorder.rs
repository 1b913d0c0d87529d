//! Measurement: four latency histograms and the counters. Every task of a data-plane
//! thread records into that thread's [`Recorder`] for the current slot ([`thread`]: a
//! thread-local, so no lock and no channel per message, and no recorder per task), which
//! is shipped as a whole once per slot. Histograms start small and grow with the values
//! they see (a few milliseconds of latency fit in 16 KiB each).

use hdrhistogram::Histogram;
use maestro_protocol::histogram::{self, latency_histogram};
use maestro_protocol::{Counters, EncodedHistograms};

#[derive(Debug, Clone)]
pub struct Recorder {
    /// Receive time minus intended send time.
    pub response: Histogram<u64>,
    /// Receive time minus actual send time.
    pub service: Histogram<u64>,
    /// Actual minus intended send time.
    pub lag: Histogram<u64>,
    /// The SUT's acknowledgement minus actual send time (reliable modes).
    pub publish: Histogram<u64>,
    pub counters: Counters,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            response: compact_latency_histogram(),
            service: compact_latency_histogram(),
            lag: compact_latency_histogram(),
            publish: compact_latency_histogram(),
            counters: Counters::default(),
        }
    }
}

/// A latency histogram (µs, 3 significant digits) that starts small and grows up to the
/// values recorded (`record`, not `saturating_record`, which would clamp to the current
/// range): values are clamped to [`histogram::MAX_US`] first, so it merges into
/// [`latency_histogram`]s.
pub fn compact_latency_histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 2, 3).unwrap_or_else(|_| latency_histogram());
    h.auto(true);
    h
}

#[inline]
fn us(ns: i64) -> u64 {
    ((ns.max(0) / 1_000) as u64).min(histogram::MAX_US)
}

impl Recorder {
    /// A producer sent a message of `bytes` `lag_ns` after its intended time. Bytes
    /// count after the warm-up only (`measured`), as rates do.
    #[inline]
    pub fn sent(&mut self, lag_ns: i64, bytes: usize, measured: bool) {
        self.counters.sent += 1;
        if measured {
            self.counters.sent_bytes += bytes as u64;
            let _ = self.lag.record(us(lag_ns));
        }
    }

    /// The SUT acknowledged a message `latency_ns` after it was sent.
    #[inline]
    pub fn published(&mut self, latency_ns: i64) {
        let _ = self.publish.record(us(latency_ns).max(1));
    }

    /// A consumer received a message of `bytes`.
    #[inline]
    pub fn received(&mut self, response_ns: i64, service_ns: i64, bytes: usize, measured: bool) {
        self.counters.received += 1;
        if measured {
            self.counters.received_bytes += bytes as u64;
            let _ = self.response.record(us(response_ns));
            let _ = self.service.record(us(service_ns));
        }
    }

    /// True when nothing was recorded since the last reset.
    pub fn is_empty(&self) -> bool {
        self.counters == Counters::default()
            && self.response.is_empty()
            && self.lag.is_empty()
            && self.publish.is_empty()
    }

    /// Forgets everything recorded, keeping the histograms' memory.
    pub fn reset(&mut self) {
        self.response.reset();
        self.service.reset();
        self.lag.reset();
        self.publish.reset();
        self.counters = Counters::default();
    }

    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds everywhere: adding cannot fail.
        let _ = self.response.add(&other.response);
        let _ = self.service.add(&other.service);
        let _ = self.lag.add(&other.lag);
        let _ = self.publish.add(&other.publish);
        self.counters.add(&other.counters);
    }

    pub fn encode(&self) -> EncodedHistograms {
        EncodedHistograms {
            response_time_us: histogram::encode(&self.response),
            service_time_us: histogram::encode(&self.service),
            send_lag_us: histogram::encode(&self.lag),
            publish_latency_us: (!self.publish.is_empty())
                .then(|| histogram::encode(&self.publish)),
        }
    }
}

/// Spare recorders of one run: tasks take a fresh one when they ship theirs, and the
/// aggregator gives shipped ones back once merged, so a run allocates recorders only
/// while it warms up (three histograms of about 190 KB each), never every flush. The
/// lock is taken a few times a second per task, never per message.
#[derive(Debug, Clone)]
pub struct RecorderPool {
    spare: std::sync::Arc<std::sync::Mutex<Vec<Recorder>>>,
    /// Unique per pool (one per run): tells a run's thread recorders from a past run's.
    id: u64,
}

impl Default for RecorderPool {
    fn default() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        RecorderPool {
            spare: Default::default(),
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// The pool keeps at most this many spare recorders.
const POOL_MAX: usize = 256;

impl RecorderPool {
    /// A reset recorder: a spare one, or a new one when none is left.
    pub fn take(&self) -> Recorder {
        self.spare
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default()
    }

    /// Gives a recorder back for reuse (it is reset here).
    pub fn give(&self, mut r: Recorder) {
        r.reset();
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < POOL_MAX {
            spare.push(r);
        }
    }

    /// This pool's (and so its run's) id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// How many spare recorders wait for reuse.
    pub fn spare(&self) -> usize {
        self.spare.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The recorder of the current thread: every task of a run on one data-plane thread
/// records into it. It holds the events of one slot at a time; the first task to see that
/// slot over ships it (to the run's aggregator, tagged with its run second), and the last
/// task of the thread to finish ships what is left. Tasks must run on a current-thread
/// runtime (the engine's data plane), so that a task's events stay on its thread; nothing
/// is held across an await.
pub mod thread {
    use super::{Recorder, RecorderPool};
    use std::cell::RefCell;

    /// Where a shipped recorder goes: (run second, recorder).
    pub trait Ship {
        fn ship(&self, second: u32, recorder: Recorder);
    }

    #[derive(Debug, Default)]
    struct Slot {
        /// The pool id of the run this recorder belongs to.
        run: u64,
        /// The end of the slot the events belong to, and its run second.
        slot_end_ns: i64,
        second: u32,
        recorder: Option<Recorder>,
    }

    thread_local! {
        static SLOT: RefCell<Slot> = RefCell::new(Slot::default());
    }

    fn ship_out(slot: &mut Slot, to: &impl Ship) {
        if let Some(r) = slot.recorder.take()
            && !r.is_empty()
        {
            to.ship(slot.second, r);
        }
    }

    /// Records into this thread's recorder for the slot ending at `slot_end_ns` (run
    /// second `second`). A recorder of an earlier slot is shipped first; one of another
    /// run is dropped. An event of an earlier slot than the one held (a task whose clock
    /// read a little behind) goes into the one held.
    #[inline]
    pub fn record<T>(
        pool: &RecorderPool,
        slot_end_ns: i64,
        second: u32,
        to: &impl Ship,
        f: impl FnOnce(&mut Recorder) -> T,
    ) -> T {
        SLOT.with_borrow_mut(|s| {
            if s.run != pool.id() {
                s.run = pool.id();
                s.recorder = None;
            }
            if s.recorder.is_some() && s.slot_end_ns < slot_end_ns {
                ship_out(s, to);
            }
            let recorder = s.recorder.get_or_insert_with(|| pool.take());
            if recorder.is_empty() {
                s.slot_end_ns = slot_end_ns;
                s.second = second;
            }
            f(recorder)
        })
    }

    /// Ships this thread's recorder of `pool`'s run if its slot ended by `now_ns`.
    pub fn ship_ended(pool: &RecorderPool, now_ns: i64, to: &impl Ship) {
        SLOT.with_borrow_mut(|s| {
            if s.run == pool.id() && s.slot_end_ns <= now_ns {
                ship_out(s, to);
            }
        })
    }

    /// Ships whatever this thread's recorder of `pool`'s run holds (a task ends).
    pub fn ship_all(pool: &RecorderPool, to: &impl Ship) {
        SLOT.with_borrow_mut(|s| {
            if s.run == pool.id() {
                ship_out(s, to);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_reuses_reset_recorders() {
        let pool = RecorderPool::default();
        let mut r = pool.take();
        r.sent(5_000, 100, true);
        r.received(7_000, 6_000, 100, true);
        assert!(!r.is_empty());
        pool.give(r);
        assert_eq!(pool.spare(), 1);
        let again = pool.take();
        assert!(again.is_empty(), "a reused recorder starts empty");
        assert_eq!(pool.spare(), 0);
    }

    #[test]
    fn histograms_start_small_and_grow_to_what_they_see() {
        let mut r = Recorder::default();
        let small = r.lag.distinct_values();
        r.sent(3_000_000_000_000, 100, true); // 50 minutes
        assert!(r.lag.distinct_values() > small);
        r.sent(i64::MAX, 100, true); // clamped to an hour: still merges into full histograms
        let mut full = latency_histogram();
        assert!(full.add(&r.lag).is_ok());
        assert_eq!(full.len(), 2);
        assert!(full.max() >= 2_990_000_000, "{}", full.max());
    }

    #[derive(Default)]
    struct Shipped(std::cell::RefCell<Vec<(u32, u64)>>);

    impl thread::Ship for Shipped {
        fn ship(&self, second: u32, recorder: Recorder) {
            self.0.borrow_mut().push((second, recorder.counters.sent));
        }
    }

    #[test]
    fn a_thread_recorder_is_shipped_once_per_slot_and_at_the_end() {
        let pool = RecorderPool::default();
        let to = Shipped::default();
        // Two tasks of one thread record into slot 1 (second 0).
        for _ in 0..3 {
            thread::record(&pool, 200, 0, &to, |r| r.sent(1_000, 100, true));
        }
        thread::ship_ended(&pool, 199, &to);
        assert!(to.0.borrow().is_empty(), "the slot is not over");
        // An event of the next slot ships the first.
        thread::record(&pool, 400, 0, &to, |r| r.sent(1_000, 100, true));
        assert_eq!(*to.0.borrow(), [(0, 3)]);
        // A late reading of the old slot joins the slot held.
        thread::record(&pool, 200, 0, &to, |r| r.sent(1_000, 100, true));
        thread::ship_ended(&pool, 400, &to);
        assert_eq!(*to.0.borrow(), [(0, 3), (0, 2)]);
        // Another run's pool starts afresh; what is left is shipped at the end.
        thread::record(&pool, 1_200, 1, &to, |r| r.sent(1_000, 100, true));
        let other = RecorderPool::default();
        thread::ship_all(&other, &to);
        assert_eq!(
            to.0.borrow().len(),
            2,
            "another run ships nothing of this one"
        );
        thread::ship_all(&pool, &to);
        assert_eq!(to.0.borrow().last(), Some(&(1, 1)));
    }
}
