//! Open-loop pacing. Message `i` of a producer is due at `t0 + phase + i / rate`, whatever
//! happened to the messages before it: a late message keeps its intended time, and the
//! lag is recorded. The schedule never shifts. Producers' phases are spread evenly over
//! one interval (producer `p` of `P` starts `p / P` of an interval late), so slow
//! producers (one message every 30 s) never send in lockstep; every producer's window
//! still starts and ends with the run's.

/// A producer's send schedule. All arithmetic saturates: no spec value can make it wrap.
#[derive(Debug, Clone)]
pub struct Schedule {
    start_ns: i64,
    /// Nanoseconds between messages; 0 when sending as fast as possible.
    interval_ns: f64,
    /// How many messages in total (from the count, or from duration x rate).
    limit: Option<u64>,
    /// When the send window ends: the duration, or `count / rate` after the start.
    end_ns: i64,
    /// The run's start (before any phase): no message is due earlier.
    window_start_ns: i64,
    /// Each intended time moves by a fixed random amount in `-jitter_ns ..= jitter_ns`
    /// (under half an interval, so messages keep their order).
    jitter_ns: i64,
    seed: u64,
}

/// How many messages `k = 0, 1, ...` have `k < x` (x: the window over the interval): the
/// ceiling of `x`, less a rounding error (a window of exactly 2 intervals computed as
/// 2.0000000000000004 holds 2 messages, not 3: the third would fall on its end).
fn ceil_fit(x: f64) -> u64 {
    (x * (1.0 - 1e-12)).ceil().max(0.0) as u64
}

/// A well-mixed 64-bit hash (splitmix64): each message's jitter, with no state.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Schedule {
    /// `rate` in messages per second (0: as fast as possible), bounded by `count`
    /// messages or `duration_ns`.
    pub fn new(start_ns: i64, rate: f64, count: Option<u64>, duration_ns: Option<i64>) -> Self {
        let interval_ns = if rate > 0.0 { 1e9 / rate } else { 0.0 };
        let from_duration = match (duration_ns, rate > 0.0) {
            // Messages whose intended time falls inside the duration.
            (Some(d), true) => Some(ceil_fit(d as f64 * rate / 1e9)),
            _ => None,
        };
        let limit = match (count, from_duration) {
            (Some(c), Some(d)) => Some(c.min(d)),
            (c, d) => c.or(d),
        };
        let window_ns = match (duration_ns, count) {
            (Some(d), _) => d,
            // `as` saturates: an absurd count cannot wrap.
            (None, Some(c)) if interval_ns > 0.0 => (c as f64 * interval_ns).ceil() as i64,
            _ => i64::MAX,
        };
        Self {
            start_ns,
            interval_ns,
            limit,
            end_ns: start_ns.saturating_add(window_ns.max(0)),
            window_start_ns: start_ns,
            jitter_ns: 0,
            seed: 0,
        }
    }

    /// The same schedule with each intended time moved at random by up to `jitter_ns`
    /// either way (kept under half an interval, and inside the window); `seed` makes one
    /// producer's jitter differ from another's.
    pub fn with_jitter(mut self, jitter_ns: i64, seed: u64) -> Self {
        if self.paced() {
            let max = ((self.interval_ns / 2.0) as i64 - 1).max(0);
            self.jitter_ns = jitter_ns.clamp(0, max);
            self.seed = mix(seed);
        }
        self
    }

    /// The same schedule with its first message `fraction` (0 ≤ f < 1) of an interval
    /// after the start; the window stays the run's.
    pub fn with_phase(mut self, fraction: f64) -> Self {
        if !self.paced() || !(0.0..1.0).contains(&fraction) {
            return self;
        }
        let phase = (fraction * self.interval_ns) as i64;
        self.start_ns = self.start_ns.saturating_add(phase);
        // Only messages whose intended time falls inside the window.
        if let Some(limit) = self.limit {
            let fits =
                ceil_fit((self.end_ns.saturating_sub(self.start_ns)) as f64 / self.interval_ns);
            self.limit = Some(limit.min(fits));
        }
        self
    }

    pub fn paced(&self) -> bool {
        self.interval_ns > 0.0
    }

    /// When message `seq` is due (paced schedules only).
    #[inline]
    pub fn intended_ns(&self, seq: u64) -> i64 {
        let base = self
            .start_ns
            .saturating_add((seq as f64 * self.interval_ns) as i64);
        if self.jitter_ns == 0 {
            return base;
        }
        let span = 2 * self.jitter_ns as u64 + 1;
        let offset = (mix(self.seed ^ seq) % span) as i64 - self.jitter_ns;
        base.saturating_add(offset).clamp(
            self.window_start_ns,
            self.end_ns.saturating_sub(1).max(self.window_start_ns),
        )
    }

    /// Messages `0 .. due_until(now)` are due at `now` (`u64::MAX` at full speed while
    /// the window is open).
    #[inline]
    pub fn due_until(&self, now_ns: i64) -> u64 {
        if !self.paced() {
            return if now_ns >= self.end_ns { 0 } else { u64::MAX };
        }
        let base_due = |now_ns: i64| {
            let elapsed = now_ns.saturating_sub(self.start_ns);
            let due = if elapsed < 0 {
                0
            } else {
                ((elapsed as f64 / self.interval_ns) as u64).saturating_add(1)
            };
            self.limit.map_or(due, |l| due.min(l))
        };
        if self.jitter_ns == 0 {
            return base_due(now_ns);
        }
        // Jittered times keep their order: count those due by `now` among the messages
        // whose unjittered time is at most one jitter later.
        let mut due = base_due(now_ns.saturating_add(self.jitter_ns));
        while due > 0 && self.intended_ns(due - 1) > now_ns {
            due -= 1;
        }
        due
    }

    /// True when every message of the schedule has been sent (`seq` of them).
    #[inline]
    pub fn exhausted(&self, seq: u64) -> bool {
        self.limit.is_some_and(|l| seq >= l)
    }

    /// When the send window ends; a producer stops sending then, whatever is left.
    pub fn end_ns(&self) -> i64 {
        self.end_ns
    }

    /// Messages due by `now` (at most the window's end) that were not sent, when `seq`
    /// were. Always 0 at full speed: nothing is ever due there.
    pub fn unsent(&self, now_ns: i64, seq: u64) -> u64 {
        if !self.paced() {
            return 0;
        }
        // Once the window is over, everything the schedule holds was due: the limit,
        // exactly (not `due_until` of the window's last nanosecond, which float
        // rounding can put one short at tens of millions of messages per second).
        let due = match self.limit {
            Some(limit) if now_ns >= self.end_ns => limit,
            _ => self.due_until(now_ns.min(self.end_ns.saturating_sub(1))),
        };
        due.saturating_sub(seq)
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
    fn a_window_of_whole_intervals_holds_no_message_on_its_end() {
        // 10 clients at 10/3 msg/s in total: one message each every 3 s, for 6 s.
        let rate = (10.0 / 3.0) / 10.0;
        for p in 0..10 {
            let s = Schedule::new(S, rate, None, Some(6 * S)).with_phase(f64::from(p) / 10.0);
            assert_eq!(s.unsent(8 * S, 0), 2, "producer {p}");
        }
    }

    #[test]
    fn jitter_moves_each_message_within_bounds_and_keeps_order() {
        // One message a second for 60 s, jitter ±300 ms.
        let j = 300_000_000;
        let s = Schedule::new(S, 1.0, None, Some(60 * S)).with_jitter(j, 7);
        let plain = Schedule::new(S, 1.0, None, Some(60 * S));
        let mut moved = 0;
        for seq in 0..60 {
            let (a, b) = (s.intended_ns(seq), plain.intended_ns(seq));
            assert!(
                (a - b).abs() <= j && (S..61 * S).contains(&a),
                "{seq}: {a} {b}"
            );
            moved += i32::from(a != b);
            if seq > 0 {
                assert!(a > s.intended_ns(seq - 1));
            }
            // Due exactly from its jittered time on.
            assert_eq!(s.due_until(a), seq + 1);
            assert_eq!(s.due_until(a - 1), seq);
        }
        assert!(moved > 50, "{moved}");
        assert_eq!(s.unsent(62 * S, 60), 0);
    }

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
        assert!(s.exhausted(1000));
        assert!(!s.exhausted(999));
        assert_eq!(s.end_ns(), S + 1_000_000_000);
        // At the end of the window, 600 of 1000 sent: 400 unsent; half-way, 100 behind.
        assert_eq!(s.unsent(S + 5_000_000_000, 600), 400);
        assert_eq!(s.unsent(S + 499_999_999, 400), 100);
    }

    #[test]
    fn count_and_max_rate() {
        let s = Schedule::new(S, 100.0, Some(10), None);
        assert_eq!(s.due_until(S + 10_000_000_000), 10);
        // Ten messages at 100/s: the window is 100 ms.
        assert_eq!(s.end_ns(), S + 100_000_000);
        let m = Schedule::new(S, 0.0, None, Some(1_000));
        assert!(!m.paced());
        assert_eq!(m.due_until(S), u64::MAX);
        assert_eq!(m.due_until(S + 1_000), 0);
        assert_eq!(m.end_ns(), S + 1_000);
        assert_eq!(m.unsent(S + 5_000, 7), 0);
    }

    #[test]
    fn phases_spread_producers_over_one_interval() {
        // Four producers, one message every 4 s each, for 8 s: one a second in all.
        let sends: Vec<i64> = (0..4)
            .flat_map(|p| {
                let s = Schedule::new(S, 0.25, None, Some(8 * S)).with_phase(p as f64 / 4.0);
                (0..s.due_until(i64::MAX)).map(move |i| s.intended_ns(i))
            })
            .collect();
        let mut per_second = [0; 8];
        for t in &sends {
            per_second[((t - S) / S) as usize] += 1;
        }
        assert_eq!(per_second, [1; 8]);
        // The window is the run's; a count still fits in it.
        let s = Schedule::new(S, 100.0, Some(10), None).with_phase(0.9);
        assert_eq!(s.end_ns(), S + 100_000_000);
        assert_eq!(s.intended_ns(0), S + 9_000_000);
        assert_eq!(s.due_until(i64::MAX), 10);
        assert!(s.intended_ns(9) < s.end_ns());
        // Out of range or unpaced: unchanged.
        assert_eq!(
            Schedule::new(S, 0.0, None, Some(S))
                .with_phase(0.5)
                .end_ns(),
            2 * S
        );
        assert_eq!(
            Schedule::new(S, 1.0, None, Some(S))
                .with_phase(1.5)
                .intended_ns(0),
            S
        );
    }

    #[test]
    fn absurd_values_saturate() {
        let s = Schedule::new(i64::MAX - 10, 1e-9, Some(u64::MAX), None);
        assert_eq!(s.intended_ns(u64::MAX), i64::MAX);
        assert_eq!(s.end_ns(), i64::MAX);
        assert_eq!(s.due_until(i64::MIN), 0);
        assert_eq!(s.due_until(i64::MAX), 1);
    }

    #[test]
    fn fractional_rates_stay_exact_over_long_runs() {
        let s = Schedule::new(0, 3.0, None, Some(3_600_000_000_000));
        assert_eq!(s.due_until(3_600_000_000_000), 10_800);
        assert_eq!(s.intended_ns(3), 1_000_000_000);
    }
}
