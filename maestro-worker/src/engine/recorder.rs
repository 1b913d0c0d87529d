//! Per-task measurement: three latency histograms and the counters, owned by one task (no
//! lock, no channel per message) and shipped as a whole a few times a second.

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
    pub counters: Counters,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            response: latency_histogram(),
            service: latency_histogram(),
            lag: latency_histogram(),
            counters: Counters::default(),
        }
    }
}

#[inline]
fn us(ns: i64) -> u64 {
    (ns.max(0) / 1_000) as u64
}

impl Recorder {
    /// A producer sent a message `lag_ns` after its intended time.
    #[inline]
    pub fn sent(&mut self, lag_ns: i64, measured: bool) {
        self.counters.sent += 1;
        if measured {
            self.lag.saturating_record(us(lag_ns));
        }
    }

    /// A consumer received a message.
    #[inline]
    pub fn received(&mut self, response_ns: i64, service_ns: i64, measured: bool) {
        self.counters.received += 1;
        if measured {
            self.response.saturating_record(us(response_ns));
            self.service.saturating_record(us(service_ns));
        }
    }

    /// True when nothing was recorded since the last reset.
    pub fn is_empty(&self) -> bool {
        self.counters == Counters::default() && self.response.is_empty() && self.lag.is_empty()
    }

    /// Forgets everything recorded, keeping the histograms' memory.
    pub fn reset(&mut self) {
        self.response.reset();
        self.service.reset();
        self.lag.reset();
        self.counters = Counters::default();
    }

    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds everywhere: adding cannot fail.
        let _ = self.response.add(&other.response);
        let _ = self.service.add(&other.service);
        let _ = self.lag.add(&other.lag);
        self.counters.add(&other.counters);
    }

    pub fn encode(&self) -> EncodedHistograms {
        EncodedHistograms {
            response_time_us: histogram::encode(&self.response),
            service_time_us: histogram::encode(&self.service),
            send_lag_us: histogram::encode(&self.lag),
        }
    }
}

/// Spare recorders of one run: tasks take a fresh one when they ship theirs, and the
/// aggregator gives shipped ones back once merged, so a run allocates recorders only
/// while it warms up (three histograms of about 190 KB each), never every flush. The
/// lock is taken a few times a second per task, never per message.
#[derive(Debug, Clone, Default)]
pub struct RecorderPool {
    spare: std::sync::Arc<std::sync::Mutex<Vec<Recorder>>>,
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

    /// How many spare recorders wait for reuse.
    pub fn spare(&self) -> usize {
        self.spare.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_reuses_reset_recorders() {
        let pool = RecorderPool::default();
        let mut r = pool.take();
        r.sent(5_000, true);
        r.received(7_000, 6_000, true);
        assert!(!r.is_empty());
        pool.give(r);
        assert_eq!(pool.spare(), 1);
        let again = pool.take();
        assert!(again.is_empty(), "a reused recorder starts empty");
        assert_eq!(pool.spare(), 0);
    }
}
