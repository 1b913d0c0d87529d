//! Open-loop pacing. Message `i` of a producer is due at `t0 + i / rate`, whatever happened
//! to the messages before it: a late message keeps its intended time, and the lag is
//! recorded. The schedule never shifts.

/// A producer's send schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    start_ns: i64,
    /// Nanoseconds between messages; 0 when sending as fast as possible.
    interval_ns: f64,
    /// How many messages in total (from the count, or from duration x rate).
    limit: Option<u64>,
    /// When sending stops (from the duration).
    end_ns: Option<i64>,
}

impl Schedule {
    /// `rate` in messages per second (0: as fast as possible), bounded by `count`
    /// messages or `duration_ns`.
    pub fn new(start_ns: i64, rate: f64, count: Option<u64>, duration_ns: Option<i64>) -> Self {
        let interval_ns = if rate > 0.0 { 1e9 / rate } else { 0.0 };
        let from_duration = match (duration_ns, rate > 0.0) {
            // Messages whose intended time falls inside the duration.
            (Some(d), true) => Some((d as f64 * rate / 1e9).ceil() as u64),
            _ => None,
        };
        let limit = match (count, from_duration) {
            (Some(c), Some(d)) => Some(c.min(d)),
            (c, d) => c.or(d),
        };
        Self {
            start_ns,
            interval_ns,
            limit,
            end_ns: duration_ns.map(|d| start_ns + d),
        }
    }

    pub fn paced(&self) -> bool {
        self.interval_ns > 0.0
    }

    /// When message `seq` is due (paced schedules only).
    #[inline]
    pub fn intended_ns(&self, seq: u64) -> i64 {
        self.start_ns + (seq as f64 * self.interval_ns) as i64
    }

    /// Messages `0 .. due_until(now)` are due at `now`.
    #[inline]
    pub fn due_until(&self, now_ns: i64) -> u64 {
        if !self.paced() {
            return if self.finished_at(now_ns, 0) {
                0
            } else {
                u64::MAX
            };
        }
        let elapsed = now_ns - self.start_ns;
        let due = if elapsed < 0 {
            0
        } else {
            (elapsed as f64 / self.interval_ns) as u64 + 1
        };
        self.limit.map_or(due, |l| due.min(l))
    }

    /// True when no message at or after `seq` will ever be due.
    #[inline]
    pub fn finished_at(&self, now_ns: i64, seq: u64) -> bool {
        if self.limit.is_some_and(|l| seq >= l) {
            return true;
        }
        !self.paced() && self.end_ns.is_some_and(|end| now_ns >= end)
    }

    pub fn start_ns(&self) -> i64 {
        self.start_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn open_loop_schedule_never_shifts() {
        let s = Schedule::new(S, 1000.0, None, Some(1_000_000_000));
        assert_eq!(s.due_until(S - 1), 0);
        assert_eq!(s.due_until(S), 1);
        assert_eq!(s.intended_ns(1), S + 1_000_000);
        // Asleep for 50 ms: 50 more are due at once, each with its own intended time.
        assert_eq!(s.due_until(S + 50_000_000), 51);
        assert_eq!(s.intended_ns(50), S + 50_000_000);
        // 1000 messages in one second, never more.
        assert_eq!(s.due_until(S + 10_000_000_000), 1000);
        assert!(s.finished_at(0, 1000));
        assert!(!s.finished_at(0, 999));
    }

    #[test]
    fn count_and_max_rate() {
        let s = Schedule::new(S, 100.0, Some(10), None);
        assert_eq!(s.due_until(S + 10_000_000_000), 10);
        let m = Schedule::new(S, 0.0, None, Some(1_000));
        assert!(!m.paced());
        assert_eq!(m.due_until(S), u64::MAX);
        assert!(m.finished_at(S + 1_000, 12345));
        assert!(!m.finished_at(S + 999, 12345));
    }

    #[test]
    fn fractional_rates_stay_exact_over_long_runs() {
        let s = Schedule::new(0, 3.0, None, Some(3_600_000_000_000));
        assert_eq!(s.due_until(3_600_000_000_000), 10_800);
        assert_eq!(s.intended_ns(3), 1_000_000_000);
    }
}
