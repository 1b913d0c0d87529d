//! The backlog test (OpenMessaging Benchmark's `consumerBacklogSizeGB`) as a pure state
//! machine: consumers are held from the start while producers go on; once the run's
//! written seconds show the backlog (messages sent times the copies each should reach,
//! minus messages received) at the target size, the shell resumes the consumers; the
//! backlog is drained when it is back to about what is in flight. The figures come from
//! the same per-second rows as `timeseries.csv`.

use maestro_report::BacklogSummary;

/// Drained means at most this many messages still waiting (OMB's threshold), or a tenth of
/// a second of the copies produced at the latest second's rate, whichever is larger.
const MIN_BACKLOG: u64 = 1000;

#[derive(Debug, Clone, PartialEq)]
enum State {
    Building,
    Draining {
        /// Run seconds at the end of the row that reached the target.
        resumed_s: f64,
        received_then: u64,
        backlog: u64,
    },
    Drained {
        resumed_s: f64,
        received_then: u64,
        backlog: u64,
        drained_s: f64,
        received_now: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Backlog {
    target_bytes: u64,
    /// Mean message size in bytes (the spec's).
    mean_size: f64,
    /// Copies each message should reach (subscriptions per topic, on average).
    copies: f64,
    state: State,
    /// The last row's totals, for the rate of the latest second.
    last: Option<(f64, u64)>,
}

/// What the shell does after a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// Tell the consumers to read.
    Resume,
}

impl Backlog {
    pub fn new(target_bytes: u64, mean_size: f64, copies: f64) -> Self {
        Self {
            target_bytes,
            mean_size: mean_size.max(1.0),
            copies,
            state: State::Building,
            last: None,
        }
    }

    fn waiting(&self, sent: u64, received: u64) -> u64 {
        ((sent as f64 * self.copies) as u64).saturating_sub(received)
    }

    /// A second of the run was written: `end_s` seconds after the start, with the run's
    /// totals so far.
    pub fn row(&mut self, end_s: f64, sent: u64, received: u64) -> Step {
        let sent_rate = self
            .last
            .filter(|(at, _)| end_s > *at)
            .map_or(0.0, |(at, before)| {
                sent.saturating_sub(before) as f64 / (end_s - at)
            });
        self.last = Some((end_s, sent));
        let waiting = self.waiting(sent, received);
        match self.state {
            State::Building => {
                if waiting as f64 * self.mean_size >= self.target_bytes as f64 {
                    self.state = State::Draining {
                        resumed_s: end_s,
                        received_then: received,
                        backlog: waiting,
                    };
                    return Step::Resume;
                }
            }
            State::Draining {
                resumed_s,
                received_then,
                backlog,
            } => {
                let in_flight = (sent_rate * self.copies / 10.0) as u64;
                if end_s > resumed_s && waiting <= MIN_BACKLOG.max(in_flight) {
                    self.state = State::Drained {
                        resumed_s,
                        received_then,
                        backlog,
                        drained_s: end_s,
                        received_now: received,
                    };
                }
            }
            State::Drained { .. } => {}
        }
        Step::Nothing
    }

    pub fn summary(&self) -> BacklogSummary {
        let mut s = BacklogSummary {
            target_bytes: self.target_bytes,
            built_s: None,
            backlog_messages: None,
            backlog_bytes: None,
            catch_up_s: None,
            drain_rate: None,
            drain_bytes_rate: None,
        };
        match self.state {
            State::Building => {}
            State::Draining {
                resumed_s, backlog, ..
            } => {
                s.built_s = Some(resumed_s);
                s.backlog_messages = Some(backlog);
                s.backlog_bytes = Some((backlog as f64 * self.mean_size) as u64);
            }
            State::Drained {
                resumed_s,
                received_then,
                backlog,
                drained_s,
                received_now,
            } => {
                let took = drained_s - resumed_s;
                let rate = received_now.saturating_sub(received_then) as f64 / took;
                s.built_s = Some(resumed_s);
                s.backlog_messages = Some(backlog);
                s.backlog_bytes = Some((backlog as f64 * self.mean_size) as u64);
                s.catch_up_s = Some(took);
                s.drain_rate = Some(rate);
                s.drain_bytes_rate = Some(rate * self.mean_size);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumers_resume_at_the_target_and_catch_up_later() {
        // 1000 msg/s of 1000 bytes, one copy each; target 3 MB: 3000 messages waiting.
        let mut b = Backlog::new(3_000_000, 1000.0, 1.0);
        assert_eq!(b.row(1.0, 1000, 0), Step::Nothing);
        assert_eq!(b.row(2.0, 2000, 0), Step::Nothing);
        assert_eq!(b.summary().built_s, None);
        assert_eq!(b.row(3.0, 3000, 0), Step::Resume, "3000 waiting: 3 MB");
        // Consumers read 2500/s while producers go on at 1000/s: 1500/s net.
        assert_eq!(b.row(4.0, 4000, 2500), Step::Nothing);
        let s = b.summary();
        assert_eq!(
            (s.built_s, s.backlog_messages, s.catch_up_s),
            (Some(3.0), Some(3000), None)
        );
        b.row(5.0, 5000, 5000);
        let s = b.summary();
        assert_eq!(s.catch_up_s, Some(2.0));
        assert_eq!(s.drain_rate, Some(2500.0));
        assert_eq!(s.drain_bytes_rate, Some(2_500_000.0));
        assert_eq!(s.backlog_bytes, Some(3_000_000));
        // Later rows change nothing.
        b.row(6.0, 6000, 6000);
        assert_eq!(b.summary(), s);
    }

    #[test]
    fn fan_out_counts_every_copy_and_a_small_remainder_is_drained() {
        // Two copies of each message; target 100 KB of 100-byte messages: 1000 waiting.
        let mut b = Backlog::new(100_000, 100.0, 2.0);
        assert_eq!(b.row(1.0, 400, 0), Step::Nothing, "800 copies waiting");
        assert_eq!(b.row(2.0, 500, 0), Step::Resume);
        // 900 of the 1000 copies waiting are left: still more than in flight at a
        // 100 msg/s rate... but within OMB's 1000 messages.
        b.row(3.0, 600, 300);
        assert_eq!(b.summary().catch_up_s, Some(1.0));
    }

    #[test]
    fn a_backlog_never_reached_has_no_figures() {
        let mut b = Backlog::new(u64::MAX, 1000.0, 1.0);
        for k in 1u32..10 {
            assert_eq!(b.row(f64::from(k), u64::from(k) * 1000, 0), Step::Nothing);
        }
        let s = b.summary();
        assert_eq!((s.built_s, s.catch_up_s, s.drain_rate), (None, None, None));
    }
}
