//! The regression gate: two plan results compared phase by phase (matched by index and
//! kind), by each phase's deciding probe. NEW is worse than BASE when response-time p50 or
//! p99 grew, the achieved rate or knee dropped, or loss grew, beyond the thresholds.

use crate::model::{PhaseResult, PlanResult, Thresholds};
use serde::Serialize;

/// Thresholds with their defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Limits {
    pub max_latency_increase_pct: f64,
    pub max_rate_decrease_pct: f64,
    pub max_lost_increase: u64,
}

impl Limits {
    /// `first` overrides `second` field by field; then the defaults (10 %, 5 %, 0).
    pub fn resolve(first: &Thresholds, second: &Thresholds) -> Self {
        Self {
            max_latency_increase_pct: first
                .max_latency_increase_pct
                .or(second.max_latency_increase_pct)
                .unwrap_or(10.0),
            max_rate_decrease_pct: first
                .max_rate_decrease_pct
                .or(second.max_rate_decrease_pct)
                .unwrap_or(5.0),
            max_lost_increase: first
                .max_lost_increase
                .or(second.max_lost_increase)
                .unwrap_or(0),
        }
    }
}

/// One metric of one phase, BASE against NEW.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delta {
    pub phase: String,
    pub metric: String,
    pub base: f64,
    pub new: f64,
    /// (new - base) / base in percent, when base is not 0.
    pub change_pct: Option<f64>,
    pub regressed: bool,
}

impl Delta {
    /// One line for people.
    pub fn describe(&self) -> String {
        format!(
            "phase {}: {} {:.3} -> {:.3}{}",
            self.phase,
            self.metric,
            self.base,
            self.new,
            self.change_pct
                .map(|p| format!(" ({p:+.1} %)"))
                .unwrap_or_default()
        )
    }
}

/// The numbers a phase is compared by (its deciding probe's; the knee for searches).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub rate: f64,
    pub lost: f64,
    /// Errors the SUT returned (failed sends and receives).
    pub errors: f64,
}

/// A phase's [`Metrics`], when it has a probe.
pub fn metrics(phase: &PhaseResult) -> Option<Metrics> {
    let probe = phase.deciding_probe()?;
    let s = &probe.summary;
    let ms = |us: u64| us as f64 / 1000.0;
    let rate = if phase.kind.searches() {
        phase.knee_rate.unwrap_or(0.0)
    } else {
        s.achieved_rate
    };
    Some(Metrics {
        p50_ms: ms(s.response_time_us.p50),
        p99_ms: ms(s.response_time_us.p99),
        p999_ms: ms(s.response_time_us.p999),
        rate,
        lost: s.lost as f64,
        errors: s.errors as f64,
    })
}

/// Every judged phase of NEW that BASE has too, metric by metric.
pub fn compare(base: &PlanResult, new: &PlanResult, limits: &Limits) -> Vec<Delta> {
    let mut deltas = Vec::new();
    for np in new.phases.iter().filter(|p| p.judged) {
        let Some(bp) = base
            .phases
            .iter()
            .find(|b| b.index == np.index && b.kind == np.kind)
        else {
            continue;
        };
        let (Some(b), Some(n)) = (metrics(bp), metrics(np)) else {
            continue;
        };
        let phase = format!("{} {}", np.index, np.kind);
        let pct = |b: f64, n: f64| (b != 0.0).then(|| (n - b) / b * 100.0);
        let mut add = |metric: &str, bv: f64, nv: f64, regressed: bool| {
            deltas.push(Delta {
                phase: phase.clone(),
                metric: metric.to_owned(),
                base: bv,
                new: nv,
                change_pct: pct(bv, nv),
                regressed,
            });
        };
        let latency = limits.max_latency_increase_pct;
        add(
            "response_time_p50_ms",
            b.p50_ms,
            n.p50_ms,
            pct(b.p50_ms, n.p50_ms).is_some_and(|p| p > latency),
        );
        add(
            "response_time_p99_ms",
            b.p99_ms,
            n.p99_ms,
            pct(b.p99_ms, n.p99_ms).is_some_and(|p| p > latency),
        );
        add("response_time_p999_ms", b.p999_ms, n.p999_ms, false);
        add(
            "rate",
            b.rate,
            n.rate,
            pct(b.rate, n.rate).is_some_and(|p| -p > limits.max_rate_decrease_pct),
        );
        add(
            "lost",
            b.lost,
            n.lost,
            n.lost > b.lost + limits.max_lost_increase as f64,
        );
    }
    deltas
}
