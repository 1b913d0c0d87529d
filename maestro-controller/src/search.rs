//! The rate searches of ramp and max-rate phases as pure state machines: each says which
//! rate to probe next, is told whether the probe passed, and knows the knee. The plan
//! runner ([`crate::plans`]) carries out the probes; the searches do no I/O, so their
//! convergence is tested against synthetic systems here.

/// Probes a max-rate search makes at most.
pub const MAX_PROBES: usize = 24;

/// What a search wants next.
pub trait Search {
    /// The rate to probe next, or `None` when the search is over.
    fn next_rate(&self) -> Option<f64>;
    /// The probe at `rate` passed or failed.
    fn record(&mut self, rate: f64, passed: bool);
    /// The highest passing rate found.
    fn knee(&self) -> Option<f64>;
}

/// A ramp: from `start` by `step` up to `ceiling`; it stops at the first failing step.
#[derive(Debug, Clone)]
pub struct Ramp {
    step: f64,
    ceiling: f64,
    next: Option<f64>,
    knee: Option<f64>,
    failed: bool,
}

impl Ramp {
    pub fn new(start: f64, step: f64, ceiling: f64) -> Self {
        Self {
            step,
            ceiling,
            next: (start <= ceiling + f64::EPSILON).then_some(start),
            knee: None,
            failed: false,
        }
    }

    /// True when a step failed before the ceiling.
    pub fn failed(&self) -> bool {
        self.failed
    }
}

impl Search for Ramp {
    fn next_rate(&self) -> Option<f64> {
        self.next
    }

    fn record(&mut self, rate: f64, passed: bool) {
        if passed {
            self.knee = Some(rate);
            let next = rate + self.step;
            self.next = (next <= self.ceiling + f64::EPSILON).then_some(next);
        } else {
            self.failed = true;
            self.next = None;
        }
    }

    fn knee(&self) -> Option<f64> {
        self.knee
    }
}

/// A max-rate search: doubles from `start` until a probe fails (or the ceiling passes),
/// then bisects between the last pass and the first failure until the bracket is narrower
/// than `precision` of the passing rate, with at most [`MAX_PROBES`] probes.
#[derive(Debug, Clone)]
pub struct MaxRate {
    ceiling: f64,
    precision: f64,
    pass: Option<f64>,
    fail: Option<f64>,
    next: Option<f64>,
    probes: usize,
}

impl MaxRate {
    pub fn new(start: f64, ceiling: f64, precision: f64) -> Self {
        Self {
            ceiling,
            precision,
            pass: None,
            fail: None,
            next: Some(start),
            probes: 0,
        }
    }
}

impl Search for MaxRate {
    fn next_rate(&self) -> Option<f64> {
        self.next
    }

    fn record(&mut self, rate: f64, passed: bool) {
        self.probes += 1;
        if passed {
            self.pass = Some(rate);
        } else {
            self.fail = Some(rate);
        }
        self.next = if self.probes >= MAX_PROBES {
            None
        } else {
            match (self.pass, self.fail) {
                // Stepping up: double, up to the ceiling.
                (Some(p), None) if p >= self.ceiling => None,
                (Some(p), None) => Some((p * 2.0).min(self.ceiling)),
                // Bisecting, until the bracket is narrow enough.
                (Some(p), Some(f)) if (f - p) / p <= self.precision => None,
                (Some(p), Some(f)) => Some((p + f) / 2.0),
                // The very first probe failed: there is no knee.
                (None, _) => None,
            }
        };
    }

    fn knee(&self) -> Option<f64> {
        self.pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against a system that passes every rate up to `capacity`.
    fn against(mut s: impl Search, capacity: f64) -> (Option<f64>, Vec<f64>) {
        let mut probes = Vec::new();
        while let Some(rate) = s.next_rate() {
            assert!(probes.len() < 100, "the search does not end: {probes:?}");
            probes.push(rate);
            s.record(rate, rate <= capacity);
        }
        (s.knee(), probes)
    }

    #[test]
    fn max_rate_doubles_then_bisects_to_within_its_precision() {
        for capacity in [1_234.0, 5_000.0, 77_777.0, 99_999.0] {
            let (knee, probes) = against(MaxRate::new(1_000.0, 100_000.0, 0.05), capacity);
            let knee = knee.unwrap_or_else(|| panic!("no knee for {capacity}: {probes:?}"));
            assert!(knee <= capacity, "{knee} above {capacity}");
            assert!(
                (capacity - knee) / knee <= 0.05,
                "{knee} not within 5 % of {capacity}: {probes:?}"
            );
            assert!(probes.len() <= MAX_PROBES, "{probes:?}");
            // Doubling first: 1000, 2000, 4000, ... until the first failure.
            assert_eq!(probes[..2], [1_000.0, 2_000.0]);
        }
    }

    #[test]
    fn max_rate_stops_at_the_ceiling_and_has_no_knee_when_the_start_fails() {
        let (knee, probes) = against(MaxRate::new(1_000.0, 6_000.0, 0.05), 1e9);
        assert_eq!(knee, Some(6_000.0));
        assert_eq!(probes, [1_000.0, 2_000.0, 4_000.0, 6_000.0]);
        let (knee, probes) = against(MaxRate::new(1_000.0, 6_000.0, 0.05), 10.0);
        assert_eq!((knee, probes), (None, vec![1_000.0]));
    }

    #[test]
    fn max_rate_makes_at_most_its_probe_budget() {
        let (knee, probes) = against(MaxRate::new(1.0, 1e12, 1e-12), 3.3e6);
        assert_eq!(probes.len(), MAX_PROBES, "{probes:?}");
        assert!(knee.is_some_and(|k| k <= 3.3e6));
    }

    #[test]
    fn ramp_steps_until_the_first_failure_or_the_ceiling() {
        let mut ramp = Ramp::new(100.0, 100.0, 1_000.0);
        let mut probes = Vec::new();
        while let Some(rate) = ramp.next_rate() {
            probes.push(rate);
            ramp.record(rate, rate <= 350.0);
        }
        assert_eq!(probes, [100.0, 200.0, 300.0, 400.0]);
        assert_eq!(ramp.knee(), Some(300.0));
        assert!(ramp.failed());
        let (knee, probes) = against(Ramp::new(100.0, 300.0, 700.0), 1e9);
        assert_eq!((knee, probes), (Some(700.0), vec![100.0, 400.0, 700.0]));
    }
}
