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

    /// Hands over what was recorded since the last call and starts afresh.
    pub fn take(&mut self) -> Recorder {
        std::mem::take(self)
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
