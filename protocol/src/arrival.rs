//! Arrival processes: when a run's messages are offered. A process is a cumulative
//! intensity `Λ(t)` (messages expected by `t` after the start) with a closed-form inverse;
//! the worker's pacer puts a regular producer's `k`-th message at `Λ⁻¹(k + phase)` and a
//! Poisson producer's at `Λ⁻¹(E_k)` (`E_k`: a sum of exponential gaps), so every message
//! has an intended send time and response times stay free of coordinated omission
//! whatever the shape. Pure: no I/O, no clock.
//!
//! Written `KIND[:PARAMS]`:
//! - `uniform`: message `k` at `k / rate` (the default);
//! - `poisson`: exponential gaps with mean `1 / rate`;
//! - `bursts:period=1s[,on=200ms][,messages=N]`: every period, its messages at once
//!   (`on=0`, the default) or spread over the first `on` of it; the mean is `--rate`, or
//!   `messages` per period;
//! - `sine:low=100,high=1000,period=60s`: a rate from `low` up to `high` and back over a
//!   period (a day compressed), starting low;
//! - `steps:100:10s,1000:20s`: rate:duration pairs, repeated over the run (PerfTest's
//!   `--variable-rate`).
//!
//! `sine`, `steps` and `bursts` with `messages` fix the mean rate themselves (over the
//! run's duration); the others take it from the spec's rate.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The most steps in a `steps` arrival.
pub const MAX_STEPS: usize = 1_000;

/// How a run's messages arrive over time.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Arrival {
    #[default]
    Uniform,
    Poisson,
    Bursts {
        period: Duration,
        /// The part of each period its messages are spread over (zero: all at once).
        on: Duration,
        /// Messages per period over the run; `None`: the spec's rate times the period.
        messages: Option<u64>,
    },
    Sine {
        low: f64,
        high: f64,
        period: Duration,
    },
    Steps(Vec<Step>),
}

/// One step of a `steps` arrival: `rate` messages per second for `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub rate: f64,
    pub duration: Duration,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArrivalError {
    #[error(
        "arrival {0:?} is not uniform, poisson, bursts:period=D[,on=D][,messages=N], sine:low=R,high=R,period=D or steps:R:D[,R:D...]"
    )]
    Kind(String),
    #[error("arrival {arrival:?}: {problem}")]
    Param { arrival: String, problem: String },
}

fn param(arrival: &str, problem: impl Into<String>) -> ArrivalError {
    ArrivalError::Param {
        arrival: arrival.to_owned(),
        problem: problem.into(),
    }
}

fn duration(arrival: &str, name: &str, value: &str) -> Result<Duration, ArrivalError> {
    humantime::parse_duration(value).map_err(|e| {
        param(
            arrival,
            format!("{name} {value:?} is not a duration like 500ms or 1m ({e})"),
        )
    })
}

fn rate(arrival: &str, name: &str, value: &str) -> Result<f64, ArrivalError> {
    match value.parse::<f64>() {
        Ok(r) if r.is_finite() && (0.0..=crate::MAX_RATE).contains(&r) => Ok(r),
        _ => Err(param(
            arrival,
            format!(
                "{name} {value:?} is not a rate between 0 and {} msg/s",
                crate::MAX_RATE
            ),
        )),
    }
}

/// `name=value` pairs, each name once and only among `known`.
fn pairs<'a>(
    arrival: &str,
    params: &'a str,
    known: &[&str],
) -> Result<Vec<(&'a str, &'a str)>, ArrivalError> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for item in params.split(',') {
        let Some((name, value)) = item.split_once('=') else {
            return Err(param(arrival, format!("{item:?} is not NAME=VALUE")));
        };
        let (name, value) = (name.trim(), value.trim());
        if !known.contains(&name) {
            return Err(param(
                arrival,
                format!("unknown parameter {name:?} (known: {})", known.join(", ")),
            ));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(param(arrival, format!("{name} is given twice")));
        }
        out.push((name, value));
    }
    Ok(out)
}

impl FromStr for Arrival {
    type Err = ArrivalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, params) = match s.trim().split_once(':') {
            Some((k, p)) => (k.trim(), Some(p)),
            None => (s.trim(), None),
        };
        let arrival = match (kind, params) {
            ("uniform", None) => Arrival::Uniform,
            ("poisson", None) => Arrival::Poisson,
            ("uniform" | "poisson", Some(_)) => {
                return Err(param(s, format!("{kind} takes no parameters")));
            }
            ("bursts", Some(p)) => {
                let (mut period, mut on, mut messages) = (None, Duration::ZERO, None);
                for (name, value) in pairs(s, p, &["period", "on", "messages"])? {
                    match name {
                        "period" => period = Some(duration(s, name, value)?),
                        "on" => on = duration(s, name, value)?,
                        _ => {
                            messages = Some(value.parse::<u64>().map_err(|_| {
                                param(s, format!("messages {value:?} is not a whole number"))
                            })?)
                        }
                    }
                }
                let period = period.ok_or_else(|| param(s, "bursts need a period=D"))?;
                Arrival::Bursts {
                    period,
                    on,
                    messages,
                }
            }
            ("sine", Some(p)) => {
                let (mut low, mut high, mut period) = (None, None, None);
                for (name, value) in pairs(s, p, &["low", "high", "period"])? {
                    match name {
                        "low" => low = Some(rate(s, name, value)?),
                        "high" => high = Some(rate(s, name, value)?),
                        _ => period = Some(duration(s, name, value)?),
                    }
                }
                match (low, high, period) {
                    (Some(low), Some(high), Some(period)) => Arrival::Sine { low, high, period },
                    _ => return Err(param(s, "sine needs low=R,high=R,period=D")),
                }
            }
            ("steps", Some(p)) => {
                let mut steps = Vec::new();
                for item in p.split(',') {
                    let Some((r, d)) = item.split_once(':') else {
                        return Err(param(s, format!("step {item:?} is not RATE:DURATION")));
                    };
                    steps.push(Step {
                        rate: rate(s, "rate", r.trim())?,
                        duration: duration(s, "duration", d.trim())?,
                    });
                }
                Arrival::Steps(steps)
            }
            _ => return Err(ArrivalError::Kind(s.to_owned())),
        };
        arrival.check().map_err(|problem| param(s, problem))?;
        Ok(arrival)
    }
}

impl Arrival {
    /// The shape's own limits (the spec's rate and duration are checked by the spec).
    fn check(&self) -> Result<(), String> {
        const MAX: Duration = Duration::from_secs(7 * 24 * 3600);
        match self {
            Arrival::Uniform | Arrival::Poisson => Ok(()),
            Arrival::Bursts {
                period,
                on,
                messages,
            } => {
                if period.is_zero() || *period > MAX {
                    Err(format!(
                        "period {} must be above 0 and at most 7 days",
                        humantime::format_duration(*period)
                    ))
                } else if on >= period {
                    Err(format!(
                        "on {} must be shorter than the period {}",
                        humantime::format_duration(*on),
                        humantime::format_duration(*period)
                    ))
                } else if *messages == Some(0) {
                    Err("messages must be at least 1 per period".into())
                } else {
                    Ok(())
                }
            }
            Arrival::Sine { low, high, period } => {
                if period.is_zero() || *period > MAX {
                    Err(format!(
                        "period {} must be above 0 and at most 7 days",
                        humantime::format_duration(*period)
                    ))
                } else if high <= low {
                    Err(format!("high {high} must be above low {low}"))
                } else {
                    Ok(())
                }
            }
            Arrival::Steps(steps) => {
                if steps.is_empty() || steps.len() > MAX_STEPS {
                    return Err(format!("1 to {MAX_STEPS} steps, not {}", steps.len()));
                }
                if let Some(s) = steps
                    .iter()
                    .find(|s| s.duration.is_zero() || s.duration > MAX)
                {
                    return Err(format!(
                        "step duration {} must be above 0 and at most 7 days",
                        humantime::format_duration(s.duration)
                    ));
                }
                if steps.iter().all(|s| s.rate == 0.0) {
                    return Err("at least one step needs a rate above 0".into());
                }
                Ok(())
            }
        }
    }

    pub fn is_uniform(&self) -> bool {
        matches!(self, Arrival::Uniform)
    }

    /// Gaps drawn at random (Poisson) rather than fixed by the shape.
    pub fn is_random(&self) -> bool {
        matches!(self, Arrival::Poisson)
    }

    /// The mean rate the arrival itself fixes over a run of `duration` (`None`: the rate
    /// is the spec's to choose).
    pub fn mean_rate(&self, duration: Duration) -> Option<f64> {
        match self {
            Arrival::Uniform | Arrival::Poisson => None,
            Arrival::Bursts {
                messages, period, ..
            } => messages.map(|m| m as f64 / period.as_secs_f64()),
            Arrival::Sine { .. } | Arrival::Steps(_) => {
                let d = duration.as_secs_f64();
                (d > 0.0).then(|| Shape::of(self).expected(d) / d)
            }
        }
    }

    /// The highest rate the shape reaches, as a multiple of its mean over `duration`
    /// (infinite for bursts sent at once).
    pub fn peak_ratio(&self, duration: Duration) -> f64 {
        match self {
            Arrival::Uniform | Arrival::Poisson => 1.0,
            Arrival::Bursts { period, on, .. } => {
                if on.is_zero() {
                    f64::INFINITY
                } else {
                    period.as_secs_f64() / on.as_secs_f64()
                }
            }
            Arrival::Sine { high, .. } => self.mean_rate(duration).map_or(1.0, |m| high / m),
            Arrival::Steps(steps) => {
                let top = steps.iter().map(|s| s.rate).fold(0.0, f64::max);
                self.mean_rate(duration).map_or(1.0, |m| top / m)
            }
        }
    }

    /// The cumulative intensity of this arrival at a mean of `rate` msg/s over a run of
    /// `duration` (for one producer: its share of the rate).
    pub fn profile(&self, rate: f64, duration: Duration) -> Profile {
        let shape = Shape::of(self);
        let d = duration.as_secs_f64();
        let scale = match self {
            // Absolute shapes, scaled so that their mean over the run is `rate`.
            Arrival::Sine { .. } | Arrival::Steps(_) if d > 0.0 => {
                let mean = shape.expected(d) / d;
                if mean > 0.0 { rate / mean } else { 0.0 }
            }
            _ => rate,
        };
        Profile { shape, scale }
    }
}

impl fmt::Display for Arrival {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |d: &Duration| humantime::format_duration(*d).to_string();
        match self {
            Arrival::Uniform => f.write_str("uniform"),
            Arrival::Poisson => f.write_str("poisson"),
            Arrival::Bursts {
                period,
                on,
                messages,
            } => {
                write!(f, "bursts:period={}", d(period))?;
                if !on.is_zero() {
                    write!(f, ",on={}", d(on))?;
                }
                if let Some(m) = messages {
                    write!(f, ",messages={m}")?;
                }
                Ok(())
            }
            Arrival::Sine { low, high, period } => {
                write!(f, "sine:low={low},high={high},period={}", d(period))
            }
            Arrival::Steps(steps) => {
                f.write_str("steps:")?;
                for (i, s) in steps.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "," };
                    write!(f, "{sep}{}:{}", s.rate, d(&s.duration))?;
                }
                Ok(())
            }
        }
    }
}

impl TryFrom<String> for Arrival {
    type Error = ArrivalError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Arrival> for String {
    fn from(a: Arrival) -> String {
        a.to_string()
    }
}

impl schemars::JsonSchema for Arrival {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Arrival".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "uniform, poisson, bursts:period=D[,on=D][,messages=N], sine:low=R,high=R,period=D or steps:R:D[,R:D...]",
        })
    }
}

/// A shape's cumulative intensity before scaling, in seconds.
#[derive(Debug, Clone)]
enum Shape {
    /// One message a second.
    Flat,
    /// One message a second on average: `period` of them per period, over `on`.
    Bursts { period: f64, on: f64 },
    /// `mean - amp cos(2πt / period)` messages a second.
    Sine { mean: f64, amp: f64, period: f64 },
    /// Steps repeated: each `(start, rate, before)` (`before`: messages in the cycle
    /// before the step); a cycle is `cycle` seconds with `per_cycle` messages.
    Steps {
        steps: Box<[(f64, f64, f64)]>,
        cycle: f64,
        per_cycle: f64,
    },
}

impl Shape {
    fn of(arrival: &Arrival) -> Shape {
        match arrival {
            Arrival::Uniform | Arrival::Poisson => Shape::Flat,
            Arrival::Bursts { period, on, .. } => Shape::Bursts {
                period: period.as_secs_f64(),
                on: on.as_secs_f64(),
            },
            Arrival::Sine { low, high, period } => Shape::Sine {
                mean: (low + high) / 2.0,
                amp: (high - low) / 2.0,
                period: period.as_secs_f64(),
            },
            Arrival::Steps(list) => {
                let (mut start, mut before) = (0.0, 0.0);
                let mut steps = Vec::with_capacity(list.len());
                for s in list {
                    steps.push((start, s.rate, before));
                    start += s.duration.as_secs_f64();
                    before += s.rate * s.duration.as_secs_f64();
                }
                Shape::Steps {
                    steps: steps.into(),
                    cycle: start,
                    per_cycle: before,
                }
            }
        }
    }

    /// Messages expected by `t` seconds (`t ≥ 0`).
    fn expected(&self, t: f64) -> f64 {
        let t = t.max(0.0);
        match self {
            Shape::Flat => t,
            Shape::Bursts { period, on } => {
                let n = (t / period).floor();
                let into = t - n * period;
                let part = if *on > 0.0 { (into / on).min(1.0) } else { 1.0 };
                (n + part) * period
            }
            Shape::Sine { mean, amp, period } => {
                let w = std::f64::consts::TAU / period;
                mean * t - amp / w * (w * t).sin()
            }
            Shape::Steps {
                steps,
                cycle,
                per_cycle,
            } => {
                let n = (t / cycle).floor();
                let into = t - n * cycle;
                let i = steps.partition_point(|s| s.0 <= into).saturating_sub(1);
                let (start, rate, before) = steps[i];
                n * per_cycle + before + rate * (into - start)
            }
        }
    }

    /// The time (seconds) of the message at cumulative position `x ≥ 0`: where `expected`
    /// reaches `x`, taken from the left (a burst sent at once holds exactly its messages).
    fn time_of(&self, x: f64) -> f64 {
        let x = x.max(0.0);
        match self {
            Shape::Flat => x,
            Shape::Bursts { period, on } => {
                let n = (x / period).floor();
                let frac = x / period - n;
                n * period + on * frac
            }
            Shape::Sine { mean, amp, period } => {
                let w = std::f64::consts::TAU / period;
                let swing = amp / w;
                let (mut lo, mut hi) = (((x - swing) / mean).max(0.0), (x + swing) / mean);
                let mut t = (x / mean).clamp(lo, hi);
                for _ in 0..100 {
                    let f = mean * t - swing * (w * t).sin() - x;
                    if f > 0.0 {
                        hi = t;
                    } else {
                        lo = t;
                    }
                    let slope = mean - amp * (w * t).cos();
                    let newton = t - f / slope;
                    let next = if slope > 0.0 && newton > lo && newton < hi {
                        newton
                    } else {
                        (lo + hi) / 2.0
                    };
                    if (next - t).abs() < 1e-10 * t.max(1.0) {
                        return next;
                    }
                    t = next;
                }
                t
            }
            Shape::Steps {
                steps,
                cycle,
                per_cycle,
            } => {
                let n = (x / per_cycle).floor();
                let into = x - n * per_cycle;
                // The first step that ends beyond `into` (steps at rate 0 end where they
                // begin, so this one has a rate above 0).
                let (mut lo, mut hi) = (0, steps.len() - 1);
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    if steps_end(steps, *per_cycle, mid) <= into {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                let i = lo;
                let (start, rate, before) = steps[i];
                let t = if rate > 0.0 {
                    start + (into - before) / rate
                } else {
                    start
                };
                n * cycle + t
            }
        }
    }

    fn rate_at(&self, t: f64) -> f64 {
        match self {
            Shape::Flat => 1.0,
            Shape::Bursts { period, on } => {
                let into = t - (t / period).floor() * period;
                if *on > 0.0 && into < *on {
                    period / on
                } else {
                    0.0
                }
            }
            Shape::Sine { mean, amp, period } => {
                mean - amp * (std::f64::consts::TAU * t / period).cos()
            }
            Shape::Steps { steps, cycle, .. } => {
                let into = t - (t / cycle).floor() * cycle;
                let i = steps.partition_point(|s| s.0 <= into).saturating_sub(1);
                steps[i].1
            }
        }
    }
}

/// Messages in the cycle before step `i` ends.
fn steps_end(steps: &[(f64, f64, f64)], per_cycle: f64, i: usize) -> f64 {
    steps.get(i + 1).map_or(per_cycle, |s| s.2)
}

/// An arrival at a given mean rate: the messages expected by any time, and the time of
/// any message.
#[derive(Debug, Clone)]
pub struct Profile {
    shape: Shape,
    /// Messages per second of the shape's unit intensity.
    scale: f64,
}

impl Profile {
    /// Messages expected in the first `t_ns` nanoseconds.
    pub fn expected(&self, t_ns: f64) -> f64 {
        self.scale * self.shape.expected(t_ns / 1e9)
    }

    /// When (ns after the start) the message at cumulative position `x` is due.
    pub fn time_ns(&self, x: f64) -> f64 {
        if self.scale <= 0.0 {
            return f64::INFINITY;
        }
        self.shape.time_of(x / self.scale) * 1e9
    }

    /// The offered rate `t_ns` after the start, msg/s (bursts sent at once: 0).
    pub fn rate_at(&self, t_ns: f64) -> f64 {
        self.scale * self.shape.rate_at(t_ns / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Arrival {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_and_prints_each_kind() {
        for s in [
            "uniform",
            "poisson",
            "bursts:period=1s",
            "bursts:period=1s,on=200ms",
            "bursts:period=2s,messages=500",
            "sine:low=100,high=1000,period=1m",
            "steps:100:10s,0:5s,1000:20s",
        ] {
            assert_eq!(a(s).to_string(), s);
            assert_eq!(a(&a(s).to_string()), a(s));
        }
        assert_eq!(Arrival::default(), a("uniform"));
    }

    #[test]
    fn bad_arrivals_name_the_problem() {
        for (s, want) in [
            ("gauss", "is not uniform"),
            ("poisson:rate=5", "takes no parameters"),
            ("bursts", "is not uniform"),
            ("bursts:on=1s", "need a period"),
            ("bursts:period=1s,on=1s", "shorter than the period"),
            ("bursts:period=0s", "above 0"),
            ("bursts:period=1s,width=2", "unknown parameter \"width\""),
            ("bursts:period=1s,period=2s", "given twice"),
            ("bursts:period=1s,messages=-3", "whole number"),
            ("sine:low=10,high=5,period=1s", "above low"),
            ("sine:low=10,high=50", "needs low"),
            ("sine:low=-1,high=5,period=1s", "not a rate"),
            ("sine:low=1,high=5,period=soon", "not a duration"),
            ("steps:100", "RATE:DURATION"),
            ("steps:0:1s,0:2s", "rate above 0"),
            ("steps:10:0s", "above 0"),
            ("steps:NaN:1s", "not a rate"),
        ] {
            let e = s.parse::<Arrival>().unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
    }

    #[test]
    fn time_of_inverts_expected_for_every_shape() {
        let d = Duration::from_secs(60);
        for s in [
            "uniform",
            "bursts:period=1s,on=250ms",
            "sine:low=0,high=1000,period=7s",
            "sine:low=100,high=1000,period=1m",
            "steps:100:10s,0:5s,1000:20s",
        ] {
            let p = a(s).profile(500.0, d);
            for x in [0.5, 1.0, 17.25, 999.0, 12_345.5, 29_999.0] {
                let t = p.time_ns(x);
                assert!(
                    (p.expected(t) - x).abs() < 1e-6 * x.max(1.0),
                    "{s}: x {x}, t {t}, back {}",
                    p.expected(t)
                );
            }
            // Monotone.
            let mut last = -1.0;
            for k in 0..30_000 {
                let t = p.time_ns(k as f64 + 0.5);
                assert!(t >= last, "{s}: {k}");
                last = t;
            }
        }
    }

    #[test]
    fn the_mean_over_the_run_is_the_rate() {
        let d = Duration::from_secs(60);
        for s in [
            "uniform",
            "poisson",
            "bursts:period=1s",
            "bursts:period=1s,on=100ms",
            "sine:low=100,high=1000,period=1m",
            "steps:100:10s,1000:20s",
        ] {
            let p = a(s).profile(400.0, d);
            // Messages before the end (a burst on the end is the next period's).
            let n = p.expected(60e9 - 1.0);
            assert!((n - 24_000.0).abs() < 1e-5, "{s}: {n}");
        }
        // Shapes that fix their own mean.
        let sine = a("sine:low=100,high=1000,period=1m");
        assert!((sine.mean_rate(d).unwrap() - 550.0).abs() < 1e-9);
        let steps = a("steps:100:10s,1000:20s");
        assert!((steps.mean_rate(d).unwrap() - 700.0).abs() < 1e-9);
        // 75 s: two and a half cycles, the last half at 100 then 1000 for 5 s.
        let m = steps.mean_rate(Duration::from_secs(75)).unwrap();
        assert!((m - (2.0 * 21_000.0 + 1_000.0 + 5_000.0) / 75.0).abs() < 1e-9);
        assert_eq!(a("bursts:period=2s,messages=500").mean_rate(d), Some(250.0));
        assert_eq!(a("poisson").mean_rate(d), None);
    }

    #[test]
    fn bursts_at_once_hold_exactly_their_messages() {
        // 100/s in bursts once a second: messages 0..100 at 0 s, 100..200 at 1 s.
        let p = a("bursts:period=1s").profile(100.0, Duration::from_secs(10));
        assert_eq!(p.time_ns(0.0), 0.0);
        assert_eq!(p.time_ns(99.9), 0.0);
        assert_eq!(p.time_ns(100.0), 1e9);
        assert_eq!(p.time_ns(250.0), 2e9);
        assert_eq!(p.rate_at(0.5e9), 0.0);
        // Spread over 200 ms: 500/s while on.
        let on = a("bursts:period=1s,on=200ms").profile(100.0, Duration::from_secs(10));
        assert_eq!(on.rate_at(0.1e9), 500.0);
        assert_eq!(on.rate_at(0.3e9), 0.0);
        assert!((on.time_ns(150.0) - 1.1e9).abs() < 1.0);
        assert_eq!(
            a("bursts:period=1s").peak_ratio(Duration::ZERO),
            f64::INFINITY
        );
    }

    #[test]
    fn sine_starts_low_and_peaks_half_way() {
        let p = a("sine:low=100,high=1000,period=1m").profile(550.0, Duration::from_secs(60));
        assert!((p.rate_at(0.0) - 100.0).abs() < 1e-9);
        assert!((p.rate_at(30e9) - 1000.0).abs() < 1e-9);
        let peak = a("sine:low=100,high=1000,period=1m").peak_ratio(Duration::from_secs(60));
        assert!((peak - 1000.0 / 550.0).abs() < 1e-9);
    }

    #[test]
    fn steps_repeat_and_skip_silent_steps() {
        let p = a("steps:100:10s,0:5s,1000:20s").profile(
            a("steps:100:10s,0:5s,1000:20s")
                .mean_rate(Duration::from_secs(35))
                .unwrap(),
            Duration::from_secs(35),
        );
        assert_eq!(p.rate_at(12e9), 0.0);
        // Message 1000 (the first after the first step) waits out the silent step.
        assert!((p.time_ns(1000.0) - 15e9).abs() < 1.0);
        // One cycle holds 21,000; the next begins again at 100/s.
        assert!((p.time_ns(21_000.0) - 35e9).abs() < 10.0);
        assert_eq!(p.rate_at(36e9), 100.0);
    }

    #[test]
    fn serde_is_the_written_form() {
        let json = serde_json::to_string(&a("bursts:period=1s,on=200ms")).unwrap();
        assert_eq!(json, "\"bursts:period=1s,on=200ms\"");
        let e = serde_json::from_str::<Arrival>("\"sine:low=1\"").unwrap_err();
        assert!(e.to_string().contains("needs low"), "{e}");
    }
}
