//! A run's numbers as Prometheus metrics while it goes on (`maestro-cli start|run
//! --metrics-listen ADDR`), labelled by run and phase (and by the fault in effect, for
//! the per-second values). Response-time quantiles are computed from the merged
//! HdrHistograms, never from Prometheus buckets, which lose the tail.

use maestro_control::metrics::SharedRegistry;
use maestro_report::Percentiles;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// The controller's run metrics.
#[derive(Debug)]
pub struct LiveMetrics {
    registry: SharedRegistry,
    phase: Mutex<String>,
    sent: Family<Labels, Counter>,
    received: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    duplicated: Family<Labels, Counter>,
    send_rate: Family<Labels, FloatGauge>,
    receive_rate: Family<Labels, FloatGauge>,
    in_flight: Family<Labels, Gauge>,
    second: Family<Labels, Gauge>,
    response: Family<Labels, FloatGauge>,
    response_last: Family<Labels, FloatGauge>,
    lost: Family<Labels, Gauge>,
    generator_bound: Family<Labels, Gauge>,
    generator_send_lag: Family<Labels, FloatGauge>,
    generator_busy: Family<Labels, FloatGauge>,
    fault_active: Family<Labels, Gauge>,
    sut: Family<Labels, FloatGauge>,
}

pub use crate::watch::Second;

fn quantiles(p: &Percentiles) -> impl Iterator<Item = (&'static str, u64)> {
    [
        ("0.5", Some(p.p50)),
        ("0.9", Some(p.p90)),
        ("0.95", p.p95),
        ("0.99", Some(p.p99)),
        ("0.999", Some(p.p999)),
        ("1", Some(p.max)),
    ]
    .into_iter()
    .filter_map(|(q, v)| v.map(|v| (q, v)))
}

impl LiveMetrics {
    pub fn new() -> Arc<Self> {
        let mut r = Registry::with_prefix("maestro");
        let m = Self {
            registry: Arc::new(Mutex::new(Registry::default())),
            phase: Mutex::new("start".to_owned()),
            sent: Family::default(),
            received: Family::default(),
            errors: Family::default(),
            duplicated: Family::default(),
            send_rate: Family::default(),
            receive_rate: Family::default(),
            in_flight: Family::default(),
            second: Family::default(),
            response: Family::default(),
            response_last: Family::default(),
            lost: Family::default(),
            generator_bound: Family::default(),
            generator_send_lag: Family::default(),
            generator_busy: Family::default(),
            fault_active: Family::default(),
            sut: Family::default(),
        };
        r.register("run_sent", "Messages sent (all workers)", m.sent.clone());
        r.register(
            "run_received",
            "Messages received (all consumers)",
            m.received.clone(),
        );
        r.register("run_errors", "Errors seen by workers", m.errors.clone());
        r.register(
            "run_duplicated",
            "Messages received twice",
            m.duplicated.clone(),
        );
        r.register(
            "run_send_rate",
            "Messages sent in the last written second, per second",
            m.send_rate.clone(),
        );
        r.register(
            "run_receive_rate",
            "Messages received in the last written second, per second",
            m.receive_rate.clone(),
        );
        r.register(
            "run_in_flight",
            "Copies sent and not received yet (lost ones stay here until the run ends)",
            m.in_flight.clone(),
        );
        r.register(
            "run_second",
            "The last run second written",
            m.second.clone(),
        );
        r.register(
            "run_response_time_seconds",
            "Response time over the run so far (from the merged HdrHistograms)",
            m.response.clone(),
        );
        r.register(
            "run_response_time_last_second_seconds",
            "Response time of the last written second",
            m.response_last.clone(),
        );
        r.register(
            "run_lost",
            "Messages lost (known when the run ends)",
            m.lost.clone(),
        );
        r.register(
            "run_generator_bound",
            "1 when the tool itself limited the run (known when the run ends; see summary.json's generator.reasons)",
            m.generator_bound.clone(),
        );
        r.register(
            "run_generator_send_lag_seconds",
            "The producers' lateness against their schedule over the run (known when the run ends)",
            m.generator_send_lag.clone(),
        );
        r.register(
            "run_generator_busy_ratio",
            "The busiest data-plane thread's CPU time over the run, per worker (1: a whole core)",
            m.generator_busy.clone(),
        );
        r.register(
            "fault_active",
            "1 while a fault is in effect",
            m.fault_active.clone(),
        );
        r.register(
            "sut_value",
            "The latest value an inspector read from the SUT",
            m.sut.clone(),
        );
        *m.registry.lock().unwrap_or_else(|p| p.into_inner()) = r;
        Arc::new(m)
    }

    pub fn registry(&self) -> SharedRegistry {
        self.registry.clone()
    }

    /// The phase the next runs belong to (a plan's `01-fixed`; `start` otherwise).
    pub fn set_phase(&self, phase: &str) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase.to_owned();
    }

    fn labels(&self, run: &str, extra: &[(&str, &str)]) -> Labels {
        let phase = self.phase.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut l = vec![
            ("run".to_owned(), run.to_owned()),
            ("phase".to_owned(), phase),
        ];
        l.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        l
    }

    /// A second of the run was written; `whole` is the response time so far, `fault` the
    /// faults in effect (empty: none).
    fn set_second(&self, run: &str, s: &Second, whole: &Percentiles, in_flight: i64, fault: &str) {
        let base = self.labels(run, &[]);
        self.sent.get_or_create(&base).inc_by(s.sent);
        self.received.get_or_create(&base).inc_by(s.received);
        self.errors.get_or_create(&base).inc_by(s.errors);
        self.duplicated.get_or_create(&base).inc_by(s.duplicated);
        self.second.get_or_create(&base).set(i64::from(s.second));
        self.in_flight.get_or_create(&base).set(in_flight);
        let fault = if fault.is_empty() { "none" } else { fault };
        let with_fault = self.labels(run, &[("fault", fault)]);
        // One series per fault state: clear the others, so a rate is never stale.
        self.send_rate.clear();
        self.receive_rate.clear();
        self.response_last.clear();
        self.send_rate.get_or_create(&with_fault).set(s.sent as f64);
        self.receive_rate
            .get_or_create(&with_fault)
            .set(s.received as f64);
        for (q, us) in quantiles(&s.response) {
            let l = self.labels(run, &[("fault", fault), ("quantile", q)]);
            self.response_last.get_or_create(&l).set(us as f64 / 1e6);
        }
        for (q, us) in quantiles(whole) {
            let l = self.labels(run, &[("quantile", q)]);
            self.response.get_or_create(&l).set(us as f64 / 1e6);
        }
    }

    fn set_fault(&self, run: &str, action: &str, active: bool) {
        self.fault_active
            .get_or_create(&self.labels(run, &[("action", action)]))
            .set(i64::from(active));
    }

    fn set_sut(&self, inspector: &str, source: &str, metric: &str, label: Option<&str>, v: f64) {
        let l: Labels = [
            ("inspector", inspector),
            ("source", source),
            ("metric", metric),
            ("label", label.unwrap_or("")),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        self.sut.get_or_create(&l).set(v);
    }

    fn set_generator(&self, run: &str, g: &maestro_report::model::GeneratorVerdict) {
        self.generator_bound
            .get_or_create(&self.labels(run, &[]))
            .set(i64::from(g.bound));
        for (q, us) in [
            ("0.5", g.send_lag_p50_us),
            ("0.99", g.send_lag_p99_us),
            ("0.999", g.send_lag_p999_us),
        ] {
            self.generator_send_lag
                .get_or_create(&self.labels(run, &[("quantile", q)]))
                .set(us as f64 / 1e6);
        }
        for w in &g.workers {
            self.generator_busy
                .get_or_create(&self.labels(run, &[("worker", &w.worker)]))
                .set(w.busy_max);
        }
    }

    fn set_finished(&self, run: &str, lost: u64, in_flight: i64) {
        let base = self.labels(run, &[]);
        self.lost
            .get_or_create(&base)
            .set(i64::try_from(lost).unwrap_or(i64::MAX));
        self.in_flight.get_or_create(&base).set(in_flight);
    }

    /// The text a scrape gets.
    pub fn render(&self) -> String {
        maestro_control::metrics::render(&self.registry.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl crate::watch::Watch for LiveMetrics {
    fn phase(&self, phase: &str) {
        self.set_phase(phase);
    }

    fn second(
        &self,
        run: &maestro_protocol::RunId,
        s: &Second,
        whole: &Percentiles,
        in_flight: i64,
        faults: &str,
    ) {
        self.set_second(run.as_str(), s, whole, in_flight, faults);
    }

    fn fault(&self, run: &maestro_protocol::RunId, fault: &crate::faults::FaultRecord) {
        self.set_fault(
            run.as_str(),
            fault.plan.action.as_str(),
            fault.state == crate::faults::FaultState::Active,
        );
    }

    fn sut(&self, inspector: &str, _at_us: i64, sample: &maestro_protocol::SourceSample) {
        for m in &sample.metrics {
            self.set_sut(
                inspector,
                &sample.source,
                &m.name,
                m.label.as_deref(),
                m.value,
            );
        }
    }

    fn generator(
        &self,
        run: &maestro_protocol::RunId,
        verdict: &maestro_report::model::GeneratorVerdict,
    ) {
        self.set_generator(run.as_str(), verdict);
    }

    fn finished(&self, run: &maestro_protocol::RunId, lost: u64, in_flight: i64) {
        self.set_finished(run.as_str(), lost, in_flight);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_becomes_counters_rates_and_quantiles() {
        let m = LiveMetrics::new();
        m.set_phase("01-fixed");
        let p = Percentiles {
            count: 10,
            p50: 1_000,
            p90: 2_000,
            p95: Some(4_000),
            p99: 5_000,
            p999: 7_000,
            p9999: 7_000,
            max: 9_000,
        };
        let s = Second {
            second: 3,
            sent: 100,
            received: 200,
            errors: 0,
            duplicated: 1,
            response: p,
        };
        m.set_second("r1", &s, &p, 5, "");
        m.set_second("r1", &s, &p, 0, "pause");
        m.set_fault("r1", "pause", true);
        let text = m.render();
        for line in [
            r#"maestro_run_sent_total{run="r1",phase="01-fixed"} 200"#,
            r#"maestro_run_send_rate{run="r1",phase="01-fixed",fault="pause"} 100.0"#,
            r#"maestro_run_response_time_seconds{run="r1",phase="01-fixed",quantile="0.99"} 0.005"#,
            r#"maestro_fault_active{run="r1",phase="01-fixed",action="pause"} 1"#,
            r#"maestro_run_in_flight{run="r1",phase="01-fixed"} 0"#,
        ] {
            assert!(text.contains(line), "no {line} in\n{text}");
        }
        // The rate is one series, of the fault state now.
        assert!(!text.contains(r#"fault="none""#), "{text}");
    }

    /// The Grafana dashboard in the repository queries only metrics this serves.
    #[test]
    fn the_dashboard_uses_only_exported_metrics() {
        let m = LiveMetrics::new();
        let p = Percentiles::default();
        let s = Second {
            second: 0,
            sent: 1,
            received: 1,
            errors: 0,
            duplicated: 0,
            response: p,
        };
        m.set_second("r", &s, &p, 0, "");
        m.set_fault("r", "pause", false);
        m.set_sut("i", "rabbitmq", "queue_depth", None, 1.0);
        m.set_finished("r", 0, 0);
        let text = m.render();
        let exported: std::collections::BTreeSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let dashboard: serde_json::Value = serde_json::from_str(include_str!(
            "../../docker-compose/monitoring/grafana-dashboard.json"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let mut queried = 0;
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_default();
                for word in expr.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
                    if word.starts_with("maestro_") {
                        queried += 1;
                        assert!(
                            exported.contains(word),
                            "{word} (in {expr}) is not exported: {exported:?}"
                        );
                    }
                }
            }
        }
        assert!(queried >= 10, "{queried}");
    }
}
