//! Open-loop pacing. Message `i` of a producer is due at `t0 + phase + i / rate`, whatever
//! happened to the messages before it: a late message keeps its intended time, and the
//! lag is recorded. The schedule never shifts. Producers' phases are spread evenly over
//! one interval (producer `p` of `P` starts `p / P` of an interval late), so slow
//! producers (one message every 30 s) never send in lockstep; every producer's window
//! still starts and ends with the run's.
//!
//! A shaped arrival (Poisson, bursts, sine, steps: [`maestro_protocol::arrival`]) keeps
//! the same rules: message `k` is due at `Λ⁻¹(k + phase)` of the producer's cumulative
//! intensity (a Poisson producer's at `Λ⁻¹(E_k)`, `E_k` a sum of seeded exponential
//! gaps), fixed before the run; late messages keep their intended times.

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
    /// A shaped arrival's times; `None` for the uniform clock above.
    shaped: Option<Box<Shaped>>,
}

/// A shaped producer's arrival: positions on its cumulative intensity, and for Poisson
/// two cursors (the next message to send, the next not yet due) over its random gaps.
#[derive(Debug, Clone)]
struct Shaped {
    profile: maestro_protocol::Profile,
    /// Regular shapes: message `k` is at position `k + phase`.
    phase: f64,
    /// Poisson: the seed of its exponential gaps.
    random: Option<u64>,
    /// `(k, position of message k)`: the send side's and the due side's cursors.
    send: (u64, f64),
    due: (u64, f64),
    /// The latest time the due side was asked about.
    due_seen: i64,
}

/// When the message at position `x` of `profile` is due, for a window from `start_ns`
/// (`as` saturates: an infinite time, with no rate, is never due).
#[inline]
fn shaped_at(start_ns: i64, profile: &maestro_protocol::Profile, x: f64) -> i64 {
    start_ns.saturating_add(profile.time_ns(x).ceil() as i64)
}

impl Shaped {
    #[inline]
    fn time(&self, start_ns: i64, x: f64) -> i64 {
        shaped_at(start_ns, &self.profile, x)
    }

    /// The exponential gap before message `k` (mean 1), from a counter-based draw.
    #[inline]
    fn gap(seed: u64, k: u64) -> f64 {
        let u = ((mix(seed ^ k) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        -u.ln()
    }

    /// Message `k`'s position on the intensity, moving `cursor` (a rewind starts over).
    #[inline]
    fn position(&self, cursor: &mut (u64, f64), k: u64) -> f64 {
        let Some(seed) = self.random else {
            return k as f64 + self.phase;
        };
        if k < cursor.0 {
            *cursor = (0, Self::gap(seed, 0));
        }
        while cursor.0 < k {
            cursor.0 += 1;
            cursor.1 += Self::gap(seed, cursor.0);
        }
        cursor.1
    }
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
            shaped: None,
        }
    }

    /// A shaped arrival from `start_ns` for `duration_ns`: `profile` is this producer's
    /// share of it, `phase` (0 ≤ f < 1) its offset among regular producers, `random` the
    /// seed of a Poisson producer's gaps; never more than `cap` messages.
    pub fn shaped(
        start_ns: i64,
        profile: maestro_protocol::Profile,
        duration_ns: i64,
        phase: f64,
        random: Option<u64>,
        cap: u64,
    ) -> Self {
        let mean = profile.expected(duration_ns as f64) / (duration_ns.max(1) as f64 / 1e9);
        let first = random.map_or(0.0, |seed| Shaped::gap(mix(seed), 0));
        let mut s = Self {
            start_ns,
            // Only what `paced()` says: a shaped schedule has no fixed interval.
            interval_ns: if mean > 0.0 { 1e9 / mean } else { f64::MAX },
            limit: Some(cap),
            end_ns: start_ns.saturating_add(duration_ns.max(0)),
            window_start_ns: start_ns,
            jitter_ns: 0,
            seed: 0,
            shaped: Some(Box::new(Shaped {
                profile,
                phase: if (0.0..1.0).contains(&phase) {
                    phase
                } else {
                    0.0
                },
                random: random.map(mix),
                send: (0, first),
                due: (0, first),
                due_seen: i64::MIN,
            })),
        };
        // A regular shape's count is known: those due before the window ends.
        if random.is_none() && s.end_ns > s.start_ns {
            let fits = s.due_until(s.end_ns - 1);
            s.limit = Some(fits.min(cap));
        }
        s
    }

    /// The same schedule with each intended time moved at random by up to `jitter_ns`
    /// either way (kept under half an interval, and inside the window); `seed` makes one
    /// producer's jitter differ from another's.
    pub fn with_jitter(mut self, jitter_ns: i64, seed: u64) -> Self {
        if self.paced() && self.shaped.is_none() {
            let max = ((self.interval_ns / 2.0) as i64 - 1).max(0);
            self.jitter_ns = jitter_ns.clamp(0, max);
            self.seed = mix(seed);
        }
        self
    }

    /// The same schedule with its first message `fraction` (0 ≤ f < 1) of an interval
    /// after the start; the window stays the run's.
    pub fn with_phase(mut self, fraction: f64) -> Self {
        if !self.paced() || !(0.0..1.0).contains(&fraction) || self.shaped.is_some() {
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
    pub fn intended_ns(&mut self, seq: u64) -> i64 {
        if let Some(shaped) = self.shaped.as_deref_mut() {
            let mut cursor = shaped.send;
            let x = shaped.position(&mut cursor, seq);
            shaped.send = cursor;
            return self.shaped_time(x);
        }
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
    pub fn due_until(&mut self, now_ns: i64) -> u64 {
        if self.shaped.is_some() {
            return self.shaped_due(now_ns);
        }
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
    pub fn unsent(&mut self, now_ns: i64, seq: u64) -> u64 {
        if !self.paced() {
            return 0;
        }
        if self.shaped.is_some() {
            let due = self.due_until(now_ns.min(self.end_ns.saturating_sub(1)));
            return due.saturating_sub(seq);
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

    /// The intended time of the message at position `x` of a shaped arrival.
    #[inline]
    fn shaped_time(&self, x: f64) -> i64 {
        self.shaped
            .as_deref()
            .map_or(self.start_ns, |s| s.time(self.start_ns, x))
    }

    /// How many messages of a shaped arrival are due at `now` (at most the limit).
    fn shaped_due(&mut self, now_ns: i64) -> u64 {
        let limit = self.limit.unwrap_or(u64::MAX);
        let Some(shaped) = self.shaped.as_deref_mut() else {
            return 0;
        };
        if now_ns < self.start_ns {
            return 0;
        }
        // Nothing is due at or after the window's end.
        let now_ns = now_ns.min(self.end_ns.saturating_sub(1));
        let due = if let Some(seed) = shaped.random {
            // Walk the due cursor to the first message not yet due (from the start
            // again if `now` went back).
            if now_ns < shaped.due_seen {
                shaped.due = (0, Shaped::gap(seed, 0));
            }
            shaped.due_seen = now_ns;
            let (start, profile) = (self.start_ns, &shaped.profile);
            let time = |x: f64| shaped_at(start, profile, x);
            let mut cursor = shaped.due;
            while cursor.0 < limit && time(cursor.1) <= now_ns {
                cursor.0 += 1;
                cursor.1 += Shaped::gap(seed, cursor.0);
            }
            shaped.due = cursor;
            cursor.0
        } else {
            // From the intensity, then exact against the intended times (rounding, and
            // bursts sent at once, can put the estimate a message out).
            let x = shaped.profile.expected((now_ns - self.start_ns) as f64) - shaped.phase;
            let mut due = if x < 0.0 {
                0
            } else {
                (x.floor() as u64).saturating_add(1)
            };
            let phase = shaped.phase;
            let (start, profile) = (self.start_ns, &shaped.profile);
            let time = |k: u64| shaped_at(start, profile, k as f64 + phase);
            while due > 0 && time(due - 1) > now_ns {
                due -= 1;
            }
            while due < limit && time(due) <= now_ns {
                due += 1;
            }
            due
        };
        due.min(limit)
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
            let mut s = Schedule::new(S, rate, None, Some(6 * S)).with_phase(f64::from(p) / 10.0);
            assert_eq!(s.unsent(8 * S, 0), 2, "producer {p}");
        }
    }

    #[test]
    fn jitter_moves_each_message_within_bounds_and_keeps_order() {
        // One message a second for 60 s, jitter ±300 ms.
        let j = 300_000_000;
        let mut s = Schedule::new(S, 1.0, None, Some(60 * S)).with_jitter(j, 7);
        let mut plain = Schedule::new(S, 1.0, None, Some(60 * S));
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
        let mut s = Schedule::new(S, 1000.0, None, Some(1_000_000_000));
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
        let mut s = Schedule::new(S, 100.0, Some(10), None);
        assert_eq!(s.due_until(S + 10_000_000_000), 10);
        // Ten messages at 100/s: the window is 100 ms.
        assert_eq!(s.end_ns(), S + 100_000_000);
        let mut m = Schedule::new(S, 0.0, None, Some(1_000));
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
                let mut s = Schedule::new(S, 0.25, None, Some(8 * S)).with_phase(p as f64 / 4.0);
                (0..s.due_until(i64::MAX)).map(move |i| s.intended_ns(i))
            })
            .collect();
        let mut per_second = [0; 8];
        for t in &sends {
            per_second[((t - S) / S) as usize] += 1;
        }
        assert_eq!(per_second, [1; 8]);
        // The window is the run's; a count still fits in it.
        let mut s = Schedule::new(S, 100.0, Some(10), None).with_phase(0.9);
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
        let mut s = Schedule::new(i64::MAX - 10, 1e-9, Some(u64::MAX), None);
        assert_eq!(s.intended_ns(u64::MAX), i64::MAX);
        assert_eq!(s.end_ns(), i64::MAX);
        assert_eq!(s.due_until(i64::MIN), 0);
        assert_eq!(s.due_until(i64::MAX), 1);
    }

    #[test]
    fn fractional_rates_stay_exact_over_long_runs() {
        let mut s = Schedule::new(0, 3.0, None, Some(3_600_000_000_000));
        assert_eq!(s.due_until(3_600_000_000_000), 10_800);
        assert_eq!(s.intended_ns(3), 1_000_000_000);
    }

    fn shaped(arrival: &str, rate: f64, secs: u64, producer: u32, of: u32) -> Schedule {
        let arrival: maestro_protocol::Arrival = arrival.parse().unwrap();
        let d = std::time::Duration::from_secs(secs);
        Schedule::shaped(
            S,
            arrival.profile(rate / f64::from(of), d),
            secs as i64 * S,
            f64::from(producer) / f64::from(of),
            arrival.is_random().then_some(u64::from(producer)),
            u64::MAX,
        )
    }

    /// Per-second counts of a schedule's intended times, and each message's due
    /// moment checked against `due_until`.
    fn per_second(s: &mut Schedule, secs: usize) -> Vec<u64> {
        let mut counts = vec![0; secs];
        let all = s.due_until(i64::MAX);
        for k in 0..all.min(10_000_000) {
            let t = s.intended_ns(k);
            if k % 97 == 0 {
                assert!(s.due_until(t) > k, "message {k} not due at its time");
                assert!(s.due_until(t - 1) <= k, "message {k} due early");
            }
            counts[((t - S) / S) as usize] += 1;
        }
        counts
    }

    fn dispersion(counts: &[u64]) -> f64 {
        let n = counts.len() as f64;
        let mean = counts.iter().sum::<u64>() as f64 / n;
        counts
            .iter()
            .map(|&c| (c as f64 - mean).powi(2))
            .sum::<f64>()
            / n
            / mean
    }

    #[test]
    fn poisson_counts_vary_as_much_as_their_mean() {
        let mut s = shaped("poisson", 1000.0, 60, 0, 1);
        let counts = per_second(&mut s, 60);
        let total: u64 = counts.iter().sum();
        assert!((57_000..63_000).contains(&total), "{total}");
        let d = dispersion(&counts);
        assert!((0.6..1.5).contains(&d), "variance/mean {d}");
        // Uniform: none at all.
        let mut u = Schedule::new(S, 1000.0, None, Some(60 * S));
        assert_eq!(dispersion(&per_second(&mut u, 60)), 0.0);
        // Two Poisson producers are independent: their times differ.
        let (mut a, mut b) = (
            shaped("poisson", 10.0, 10, 0, 2),
            shaped("poisson", 10.0, 10, 1, 2),
        );
        assert_ne!(a.intended_ns(0), b.intended_ns(0));
        // Asked again, or back in time, the cursors give the same answers.
        let (t5, t2) = (s.intended_ns(5), s.intended_ns(2));
        assert_eq!((s.intended_ns(5), s.intended_ns(2)), (t5, t2));
        assert_eq!(s.due_until(t5), 6);
        assert_eq!(s.due_until(t2), 3);
        assert_eq!(s.unsent(70 * S, 0), total);
    }

    #[test]
    fn bursts_at_once_are_due_together_and_hold_their_period() {
        // 100/s over 4 producers, in one burst a second for 5 s.
        let mut all = Vec::new();
        for p in 0..4 {
            let mut s = shaped("bursts:period=1s", 100.0, 5, p, 4);
            assert_eq!(s.due_until(S - 1), 0);
            assert_eq!(s.due_until(S), 25, "producer {p}");
            assert_eq!(s.due_until(2 * S - 1), 25);
            assert_eq!(s.due_until(2 * S), 50);
            assert!(s.exhausted(125) && !s.exhausted(124));
            assert_eq!(s.unsent(9 * S, 100), 25);
            all.extend(per_second(&mut s, 5));
        }
        assert!(all.iter().all(|&c| c == 25), "{all:?}");
        // Spread over the first 200 ms: 500/s then nothing.
        let mut on = shaped("bursts:period=1s,on=200ms", 100.0, 2, 0, 1);
        assert_eq!(on.intended_ns(99), S + 198_000_000);
        assert_eq!(on.intended_ns(100), 2 * S);
        assert_eq!(on.due_until(S + 500_000_000), 100);
    }

    #[test]
    fn sine_and_steps_follow_their_rate() {
        let mut s = shaped("sine:low=100,high=1000,period=20s", 550.0, 40, 0, 1);
        let c = per_second(&mut s, 40);
        assert_eq!(c.iter().sum::<u64>(), 22_000);
        // Low at the start of each period, high half-way.
        assert!(c[0] < 120 && c[20] < 120, "{c:?}");
        assert!(c[9] > 970 && c[10] > 970 && c[29] > 970, "{c:?}");
        let steps: maestro_protocol::Arrival = "steps:100:2s,0:1s,400:1s".parse().unwrap();
        let mean = steps.mean_rate(std::time::Duration::from_secs(8)).unwrap();
        let mut s = shaped("steps:100:2s,0:1s,400:1s", mean, 8, 0, 1);
        assert_eq!(per_second(&mut s, 8), [100, 100, 0, 400, 100, 100, 0, 400]);
    }
}
