//! Progress lines for people: a [`Watch`] that writes what a run and a plan are doing
//! (connecting, one line per second, faults, the backlog, each phase's verdict) to
//! stderr, or to any writer. The CLI adds it when its output is a table and the live view
//! is off; the run itself prints nothing.

use crate::faults::{FaultRecord, FaultState};
use crate::watch::{Second, Watch};
use maestro_protocol::{PeerId, RunId, TestSpec};
use maestro_report::Percentiles;
use maestro_report::format::micros;
use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

/// What a fault line said; each is said once per fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Said {
    Failed,
    InEffect,
    Healed,
}

#[derive(Debug, Default)]
struct State {
    /// The current run's start, µs on the controller's clock.
    start_us: i64,
    /// (fault action, its time into the run in ms, what was said).
    said: BTreeSet<(String, u128, Said)>,
}

/// The progress lines' writer.
pub struct Progress {
    out: Mutex<Box<dyn Write + Send>>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").finish_non_exhaustive()
    }
}

impl Progress {
    /// Progress lines on stderr.
    pub fn stderr() -> Self {
        Self::to(Box::new(std::io::stderr()))
    }

    pub fn to(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: Mutex::new(out),
            state: Mutex::new(State::default()),
        }
    }

    fn line(&self, text: std::fmt::Arguments<'_>) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // Progress is best effort: a closed stderr must not end the run.
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    /// Whether `what` is new for this fault (and remembers it).
    fn first_time(&self, f: &FaultRecord, what: Said) -> (bool, i64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let key = (f.plan.action.to_string(), f.plan.at.as_millis(), what);
        (state.said.insert(key), state.start_us)
    }
}

/// Seconds since the start, as `+1.25 s`.
fn since(at_us: i64, start_us: i64) -> String {
    format!("+{:.2} s", (at_us - start_us) as f64 / 1e6)
}

impl Watch for Progress {
    fn run_begins(&self, _run: &RunId, spec: &TestSpec, workers: &[(PeerId, String)]) {
        // Connecting can take long (a fleet at its connect rate): say what is going on.
        let ramp = spec.connect_span();
        if ramp < Duration::from_secs(2) {
            return;
        }
        let clients = u64::from(spec.producers) + u64::from(spec.consumers);
        self.line(format_args!(
            "connecting {clients} clients on {} worker{} at {}/s: about {}",
            workers.len(),
            if workers.len() == 1 { "" } else { "s" },
            spec.connect_rate.unwrap_or_default(),
            humantime::format_duration(Duration::from_secs(ramp.as_secs()))
        ));
    }

    fn starts_at(&self, _run: &RunId, start_at_us: i64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.start_us = start_at_us;
        state.said.clear();
    }

    fn second(&self, _run: &RunId, s: &Second, _whole: &Percentiles, in_flight: i64, _: &str) {
        self.line(format_args!(
            "[{:>4}s] sent {:>8}/s  recv {:>8}/s  p50 {:>9}  p99 {:>9}  errors {}  lost/in-flight {}",
            s.second,
            s.sent,
            s.received,
            micros(s.response.p50 as i64),
            micros(s.response.p99 as i64),
            s.errors,
            in_flight.max(0),
        ));
    }

    fn fault(&self, _run: &RunId, f: &FaultRecord) {
        if f.state == FaultState::Failed {
            if self.first_time(f, Said::Failed).0 {
                self.line(format_args!(
                    "fault {}: {}",
                    f.plan.action,
                    f.errors.join("; ")
                ));
            }
            return;
        }
        if let Some(t) = f.confirmed_at_us
            && let (true, start) = self.first_time(f, Said::InEffect)
        {
            self.line(format_args!(
                "fault {}: in effect at {}",
                f.plan.action,
                since(t, start)
            ));
        }
        if let Some(t) = f.healed_at_us
            && let (true, start) = self.first_time(f, Said::Healed)
        {
            let failed = f
                .errors
                .iter()
                .find(|e| e.starts_with("heal failed"))
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            self.line(format_args!(
                "fault {}: healed at {}{failed}",
                f.plan.action,
                since(t, start)
            ));
        }
    }

    fn backlog_built(&self, _run: &RunId, waiting: u64, after_s: f64) {
        self.line(format_args!(
            "backlog of {waiting} messages built after {after_s} s: consumers resumed"
        ));
    }

    fn probe_begins(&self, kind: &str, rate: f64) {
        self.line(format_args!("-- {kind} at {rate:.0} msg/s"));
    }

    fn probe_ended(&self, passed: Option<bool>, s: &maestro_report::RunSummary) {
        self.line(format_args!(
            "   {} achieved {:.0}/s  p50 {}  p99 {}  lost {}  errors {}",
            match passed {
                None => "done",
                Some(true) => "PASS",
                Some(false) => "FAIL",
            },
            s.achieved_rate,
            micros(s.response_time_us.p50 as i64),
            micros(s.response_time_us.p99 as i64),
            s.lost,
            s.errors
        ));
    }

    fn draining(&self, duration: Duration) {
        self.line(format_args!(
            "-- drain: {} without load",
            humantime::format_duration(duration)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::FaultPlan;
    use maestro_protocol::{ActionName, FaultHealed, UnixMicros};
    use std::sync::Arc;

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into()
        }
    }

    fn run() -> RunId {
        RunId::new("r").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn each_fault_line_is_said_once_relative_to_the_start() {
        let buffer = Buffer::default();
        let p = Progress::to(Box::new(buffer.clone()));
        p.starts_at(&run(), 10_000_000);
        let mut f = FaultRecord::new(
            FaultPlan {
                action: ActionName::new("pause").unwrap_or_else(|e| panic!("{e}")),
                at: Duration::from_secs(1),
                duration: Duration::from_secs(1),
                inspector: None,
            },
            (
                PeerId::new("i").unwrap_or_else(|e| panic!("{e}")),
                "sut".into(),
            ),
        );
        p.fault(&run(), &f);
        f.requested(11_000_000);
        f.confirmed_at_us = Some(11_250_000);
        f.state = FaultState::Active;
        // Told once a second: said once.
        p.fault(&run(), &f);
        p.fault(&run(), &f);
        f.healed(
            &FaultHealed {
                run: run(),
                fault: 0,
                action: f.plan.action.clone(),
                healed_at_us: UnixMicros(12_500_000),
                error: Some("no such process".into()),
            },
            0,
        );
        p.fault(&run(), &f);
        p.fault(&run(), &f);
        assert_eq!(
            buffer.text(),
            "fault pause: in effect at +1.25 s\n\
             fault pause: healed at +2.50 s (heal failed: no such process)\n"
        );
    }

    #[test]
    fn a_second_is_one_line_with_what_is_in_flight() {
        let buffer = Buffer::default();
        let p = Progress::to(Box::new(buffer.clone()));
        let s = Second {
            second: 3,
            sent: 1000,
            received: 990,
            errors: 2,
            ..Second::default()
        };
        p.second(&run(), &s, &Percentiles::default(), -5, "");
        let text = buffer.text();
        assert!(
            text.starts_with("[   3s] sent     1000/s  recv      990/s"),
            "{text}"
        );
        assert!(text.ends_with("errors 2  lost/in-flight 0\n"), "{text}");
    }
}
