//! A fast wall clock for the hot path. Reading the system's wall clock costs about 40 ns
//! on our machines; the TSC (through quanta) about a quarter of that. Each task's clock is
//! anchored to the system wall clock and re-anchored every time the task ships a report
//! (every 200 ms), so it never strays from the wall clock by more than the drift of that
//! interval (microseconds at worst). Latencies across hosts still rest on the wall clocks.

use std::sync::OnceLock;

fn calibrated() -> &'static quanta::Clock {
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

/// Nanoseconds since the Unix epoch from the system clock (slow path).
#[inline]
pub fn system_now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// A task's wall clock: TSC ticks mapped onto the system wall clock.
#[derive(Debug, Clone)]
pub struct WallClock {
    clock: quanta::Clock,
    base_raw: u64,
    base_wall: i64,
}

impl Default for WallClock {
    fn default() -> Self {
        let clock = calibrated().clone();
        let mut c = Self {
            base_raw: clock.raw(),
            clock,
            base_wall: 0,
        };
        c.anchor();
        c
    }
}

impl WallClock {
    /// Re-reads the system wall clock.
    pub fn anchor(&mut self) {
        self.base_raw = self.clock.raw();
        self.base_wall = system_now_ns();
    }

    /// Now, in ns since the Unix epoch.
    #[inline]
    pub fn now_ns(&self) -> i64 {
        let raw = self.clock.raw();
        self.base_wall + self.clock.delta_as_nanos(self.base_raw, raw) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_the_system_clock() {
        let c = WallClock::default();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let diff = (c.now_ns() - system_now_ns()).abs();
        assert!(
            diff < 1_000_000,
            "fast clock {diff} ns away from the system clock"
        );
    }
}
