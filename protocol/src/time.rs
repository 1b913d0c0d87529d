//! Wall-clock timestamps and the NTP-style clock arithmetic of ping.

use serde::{Deserialize, Serialize};

/// Microseconds since the Unix epoch, from the sender's wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMicros(pub i64);

/// The four timestamps of one ping exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSample {
    /// t0: the controller sent the ping (controller clock).
    pub controller_sent: UnixMicros,
    /// t1: the peer received it (peer clock).
    pub peer_received: UnixMicros,
    /// t2: the peer sent the pong (peer clock).
    pub peer_sent: UnixMicros,
    /// t3: the controller received the pong (controller clock).
    pub controller_received: UnixMicros,
}

impl ClockSample {
    /// Round-trip time on the wire, without the peer's processing time:
    /// `(t3 - t0) - (t2 - t1)`.
    pub fn rtt_us(&self) -> i64 {
        (self.controller_received.0 - self.controller_sent.0)
            - (self.peer_sent.0 - self.peer_received.0)
    }

    /// How far the peer's clock is ahead of the controller's:
    /// `((t1 - t0) + (t2 - t3)) / 2`.
    pub fn clock_offset_us(&self) -> i64 {
        ((self.peer_received.0 - self.controller_sent.0)
            + (self.peer_sent.0 - self.controller_received.0))
            / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_arithmetic() {
        // Peer clock 1000 µs ahead; 100 µs each way; 30 µs processing.
        let s = ClockSample {
            controller_sent: UnixMicros(10_000),
            peer_received: UnixMicros(11_100),
            peer_sent: UnixMicros(11_130),
            controller_received: UnixMicros(10_230),
        };
        assert_eq!(s.rtt_us(), 200);
        assert_eq!(s.clock_offset_us(), 1000);
    }
}
