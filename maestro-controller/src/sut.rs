//! The SUT side of a run, as the controller sees it: inspectors' samples put on the run's
//! timeline (`sut.csv`, streamed) and summed up per series (`summary.json`'s
//! `sut_metrics`), with the cross-check of the SUT's own count against maestro's.
//!
//! Samples are placed by the inspector's clock corrected by its ping offset. The last
//! sample before the start is the baseline counters grow from; it is not written.

use maestro_protocol::inspect::names;
use maestro_protocol::{MetricKind, PeerId, SourceKind, SutStats};
use maestro_report::sut::{
    CROSS_CHECK_TOLERANCE_PCT, CrossCheck, Gap, MetricSummary, SourceSummary, SutCsv, SutRow,
    SutSummary,
};
use std::collections::BTreeMap;
use std::path::Path;

/// Samples taken this long before the start are not the run's baseline: long enough for
/// a broker that publishes its figures every two seconds, sampled each whole second.
const BASELINE_WINDOW_US: i64 = 5_000_000;

type SeriesKey = (String, String, String, Option<String>);

#[derive(Debug)]
struct Series {
    kind: MetricKind,
    first: Option<f64>,
    last: f64,
    min: f64,
    max: f64,
    /// The previous sample: (time µs, value).
    prev: Option<(i64, f64)>,
    /// Whether a sample from before the start is its baseline: without one, a counter's
    /// increase over the run is unknown.
    baseline: bool,
    increase: f64,
    max_per_second: Option<f64>,
}

#[derive(Debug)]
struct SourceState {
    kind: SourceKind,
    samples: u32,
    gaps: Vec<Gap>,
    /// When its latest sample with figures was taken (controller clock, µs).
    latest_us: Option<i64>,
}

impl SourceState {
    fn reads_sut(&self) -> bool {
        matches!(
            self.kind,
            SourceKind::MqttSys | SourceKind::Rabbitmq | SourceKind::Kafka
        )
    }
}

/// Records inspectors' samples for one run.
#[derive(Debug)]
pub struct SutRecorder {
    /// The run's start (controller clock, µs), once it is set; until then samples are
    /// only baselines.
    start_us: Option<i64>,
    /// Each inspector's name and clock offset (how far ahead of the controller), µs.
    inspectors: BTreeMap<PeerId, (String, i64)>,
    csv: Option<SutCsv>,
    series: BTreeMap<SeriesKey, Series>,
    sources: BTreeMap<(String, String), SourceState>,
    pub error: Option<std::io::Error>,
}

impl SutRecorder {
    /// A recorder for a run about to be configured: samples from now on are baselines,
    /// until [`SutRecorder::begin`] sets the start.
    pub fn new(inspectors: BTreeMap<PeerId, (String, i64)>) -> Self {
        Self {
            start_us: None,
            inspectors,
            csv: None,
            series: BTreeMap::new(),
            sources: BTreeMap::new(),
            error: None,
        }
    }

    /// Whether a source reads the SUT itself (not only a host or a process): its numbers
    /// lag the run (RabbitMQ refreshes them on its own beat, Mosquitto every
    /// `sys_interval`), so the run's end waits for a later sample.
    pub fn reads_sut(&self) -> bool {
        self.sources.values().any(SourceState::reads_sut)
    }

    /// Whether every source that reads the SUT has figures taken at `at_us` or later
    /// (a source that never gave any is not waited for).
    pub fn sut_sampled_since(&self, at_us: i64) -> bool {
        self.sources
            .values()
            .filter(|s| s.reads_sut())
            .filter_map(|s| s.latest_us)
            .all(|t| t >= at_us)
    }

    /// Whether samples from this peer belong to the run.
    pub fn knows(&self, peer: &PeerId) -> bool {
        self.inspectors.contains_key(peer)
    }

    /// The run starts at `start_us`: baselines older than [`BASELINE_WINDOW_US`] are
    /// dropped (a counter without one starts at its first sample in the run).
    pub fn begin(&mut self, start_us: i64) {
        self.start_us = Some(start_us);
        self.series.retain(|_, s| {
            s.first.is_some()
                || s.prev
                    .is_some_and(|(t, _)| t >= start_us - BASELINE_WINDOW_US)
        });
    }

    /// Takes one inspector event.
    pub fn add(&mut self, folder: &Path, from: &PeerId, stats: &SutStats) {
        let Some((inspector, offset)) = self.inspectors.get(from).cloned() else {
            return;
        };
        let t = stats.at_us.0 - offset;
        if let Some(start) = self.start_us
            && t < start - BASELINE_WINDOW_US
        {
            return;
        }
        let second = self
            .start_us
            .filter(|start| t >= *start)
            .map(|start| ((t - start) / 1_000_000) as u32);
        if second.is_some() && self.csv.is_none() && self.error.is_none() {
            match SutCsv::create(folder) {
                Ok(c) => self.csv = Some(c),
                Err(e) => self.error = Some(e),
            }
        }
        for sample in &stats.samples {
            let source = self
                .sources
                .entry((inspector.clone(), sample.source.clone()))
                .or_insert(SourceState {
                    kind: sample.kind,
                    samples: 0,
                    gaps: Vec::new(),
                    latest_us: None,
                });
            let Some(second) = second else {
                // Before the start: only the baseline of each series.
                for m in &sample.metrics {
                    let s = series_entry(&mut self.series, &inspector, &sample.source, m);
                    s.prev = Some((t, m.value));
                    s.baseline = true;
                }
                continue;
            };
            if let Some(error) = &sample.error {
                match source.gaps.last_mut() {
                    Some(g) if g.to_second + 1 >= second && g.error == *error => {
                        g.to_second = second;
                    }
                    _ => source.gaps.push(Gap {
                        from_second: second,
                        to_second: second,
                        error: error.clone(),
                    }),
                }
                continue;
            }
            source.samples += 1;
            source.latest_us = Some(t);
            for m in &sample.metrics {
                let s = series_entry(&mut self.series, &inspector, &sample.source, m);
                let per_second = match (m.kind, s.prev) {
                    (MetricKind::Counter, Some((pt, pv))) if t > pt => {
                        if m.value >= pv {
                            s.increase += m.value - pv;
                            Some((m.value - pv) * 1e6 / (t - pt) as f64)
                        } else {
                            // The counter went back: the SUT restarted and counts anew.
                            s.increase += m.value;
                            None
                        }
                    }
                    _ => None,
                };
                if let Some(r) = per_second {
                    s.max_per_second = Some(s.max_per_second.map_or(r, |x: f64| x.max(r)));
                }
                if s.first.is_none() {
                    s.first = Some(m.value);
                    s.min = m.value;
                    s.max = m.value;
                }
                s.min = s.min.min(m.value);
                s.max = s.max.max(m.value);
                s.last = m.value;
                s.prev = Some((t, m.value));
                if let Some(csv) = self.csv.as_mut()
                    && self.error.is_none()
                    && let Err(e) = csv.write(&SutRow {
                        second,
                        time_us: t,
                        inspector: inspector.clone(),
                        source: sample.source.clone(),
                        metric: m.name.clone(),
                        label: m.label.clone().unwrap_or_default(),
                        kind: m.kind,
                        value: m.value,
                        per_second,
                    })
                {
                    self.error = Some(e);
                }
            }
        }
    }

    /// Flushes `sut.csv` and sums up the run; `sent` is maestro's count of messages sent.
    pub fn finish(mut self, sent: u64) -> Result<Option<SutSummary>, std::io::Error> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if let Some(csv) = self.csv.as_mut() {
            csv.finish()?;
        }
        if self.sources.is_empty() {
            return Ok(None);
        }
        let mut summary = SutSummary::default();
        for ((inspector, source), state) in &self.sources {
            let metrics = self
                .series
                .iter()
                .filter(|((i, s, _, _), series)| {
                    i == inspector && s == source && series.first.is_some()
                })
                .map(|((_, _, name, label), s)| MetricSummary {
                    name: name.clone(),
                    label: label.clone(),
                    kind: s.kind,
                    first: s.first.unwrap_or(s.last),
                    last: s.last,
                    min: s.min,
                    max: s.max,
                    increase: (s.kind == MetricKind::Counter && s.baseline).then_some(s.increase),
                    max_per_second: s.max_per_second,
                })
                .collect();
            let unknown = self.series.iter().any(|((i, src, _, _), series)| {
                i == inspector
                    && src == source
                    && series.kind == MetricKind::Counter
                    && series.first.is_some()
                    && !series.baseline
            });
            if unknown {
                summary.warnings.push(format!(
                    "{inspector}/{source} had no sample before the start: its counters' increase over the run is unknown"
                ));
            }
            for g in &state.gaps {
                summary.warnings.push(format!(
                    "{inspector}/{source} did not answer in seconds {}..={}: {}",
                    g.from_second, g.to_second, g.error
                ));
            }
            summary.sources.push(SourceSummary {
                inspector: inspector.clone(),
                source: source.clone(),
                kind: state.kind,
                samples: state.samples,
                gaps: state.gaps.clone(),
                metrics,
            });
        }
        // The SUT's own count of what it took in, against what maestro sent.
        let checks: Vec<CrossCheck> = summary
            .sources
            .iter()
            .flat_map(|s| {
                s.metrics
                    .iter()
                    .filter(|m| m.name == names::MESSAGES_RECEIVED && m.label.is_none())
                    .filter_map(|m| {
                        let received = m.increase?;
                        let difference_pct = if sent == 0 {
                            if received == 0.0 { 0.0 } else { 100.0 }
                        } else {
                            (received - sent as f64) * 100.0 / sent as f64
                        };
                        Some(CrossCheck {
                            inspector: s.inspector.clone(),
                            source: s.source.clone(),
                            sut_received: received,
                            maestro_sent: sent,
                            difference_pct,
                            agrees: difference_pct.abs() <= CROSS_CHECK_TOLERANCE_PCT,
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        for c in &checks {
            if !c.agrees {
                summary.warnings.push(format!(
                    "{}/{} counted {:.0} messages received, maestro sent {} ({:+.2} %, more than {CROSS_CHECK_TOLERANCE_PCT} % apart)",
                    c.inspector, c.source, c.sut_received, c.maestro_sent, c.difference_pct
                ));
            }
        }
        summary.cross_check = checks.into_iter().next();
        Ok(Some(summary))
    }
}

fn series_entry<'a>(
    series: &'a mut BTreeMap<SeriesKey, Series>,
    inspector: &str,
    source: &str,
    m: &maestro_protocol::Metric,
) -> &'a mut Series {
    series
        .entry((
            inspector.to_owned(),
            source.to_owned(),
            m.name.clone(),
            m.label.clone(),
        ))
        .or_insert(Series {
            kind: m.kind,
            first: None,
            last: m.value,
            min: m.value,
            max: m.value,
            prev: None,
            baseline: false,
            increase: 0.0,
            max_per_second: None,
        })
}

/// The largest value any source reported for a metric (any label), for conditions.
pub fn max_of(summary: Option<&SutSummary>, metric: &str) -> Option<f64> {
    summary?
        .sources
        .iter()
        .flat_map(|s| &s.metrics)
        .filter(|m| m.name == metric)
        .map(|m| m.max)
        .reduce(f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use maestro_protocol::{Metric, SourceSample, UnixMicros};

    fn stats(at_us: i64, received: Option<f64>, depth: f64) -> SutStats {
        SutStats {
            at_us: UnixMicros(at_us),
            samples: vec![SourceSample {
                source: "broker".into(),
                kind: SourceKind::MqttSys,
                error: received.is_none().then(|| "refused".into()),
                metrics: received
                    .map(|r| {
                        vec![
                            Metric::counter(names::MESSAGES_RECEIVED, r),
                            Metric::gauge(names::QUEUE_DEPTH, depth),
                        ]
                    })
                    .unwrap_or_default(),
            }],
        }
    }

    #[test]
    fn samples_land_on_the_run_timeline_with_gaps_and_a_cross_check() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = tmp.path().to_path_buf();
        let peer = PeerId::new("inspector-1").unwrap_or_else(|e| panic!("{e}"));
        let start = 1_700_000_000_000_000;
        // The inspector's clock is 250 ms ahead.
        let ahead = 250_000;
        let mut r = SutRecorder::new([(peer.clone(), ("insp".to_owned(), ahead))].into());
        r.begin(start);
        // Baseline before the start: 1000 received already.
        r.add(
            &dir,
            &peer,
            &stats(start - 500_000 + ahead, Some(1000.0), 0.0),
        );
        r.add(
            &dir,
            &peer,
            &stats(start + 500_000 + ahead, Some(1500.0), 5.0),
        );
        r.add(&dir, &peer, &stats(start + 1_500_000 + ahead, None, 0.0));
        r.add(&dir, &peer, &stats(start + 2_500_000 + ahead, None, 0.0));
        r.add(
            &dir,
            &peer,
            &stats(start + 3_500_000 + ahead, Some(3000.0), 2.0),
        );
        let s = r
            .finish(2000)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_default();
        let src = &s.sources[0];
        assert_eq!(src.samples, 2);
        assert_eq!(
            src.gaps,
            vec![Gap {
                from_second: 1,
                to_second: 2,
                error: "refused".into()
            }]
        );
        let received = src
            .metrics
            .iter()
            .find(|m| m.name == names::MESSAGES_RECEIVED)
            .unwrap_or_else(|| panic!("no series"));
        assert_eq!(received.increase, Some(2000.0));
        assert_eq!(received.max_per_second, Some(500.0));
        let c = s
            .cross_check
            .clone()
            .unwrap_or_else(|| panic!("no cross-check"));
        assert!(c.agrees && c.difference_pct == 0.0);
        assert_eq!(max_of(Some(&s), names::QUEUE_DEPTH), Some(5.0));
        let rows =
            maestro_report::sut::read_sut(&dir.join("sut.csv")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.len(), 4);
        assert_eq!((rows[0].second, rows[0].per_second), (0, Some(500.0)));
        // After the gap the rate spans the whole gap: (3000 - 1500) / 3 s.
        assert_eq!((rows[2].second, rows[2].per_second), (3, Some(500.0)));
        assert!(s.warnings.iter().any(|w| w.contains("seconds 1..=2")));
    }

    #[test]
    fn the_baseline_is_the_last_sample_before_the_start_if_recent() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = tmp.path().to_path_buf();
        let peer = PeerId::new("inspector-1").unwrap_or_else(|e| panic!("{e}"));
        let start = 1_700_000_000_000_000;
        let increase = |samples: &[(i64, f64)]| {
            let mut r = SutRecorder::new([(peer.clone(), ("insp".to_owned(), 0))].into());
            // Samples that come while the workers connect, before the start is set.
            for (at, v) in samples.iter().filter(|s| s.0 < start) {
                r.add(&dir, &peer, &stats(*at, Some(*v), 0.0));
            }
            r.begin(start);
            for (at, v) in samples.iter().filter(|s| s.0 >= start) {
                r.add(&dir, &peer, &stats(*at, Some(*v), 0.0));
            }
            let s = r.finish(0).unwrap_or_else(|e| panic!("{e}"));
            let s = s.unwrap_or_else(|| panic!("no summary"));
            s.sources[0]
                .metrics
                .iter()
                .find(|m| m.name == names::MESSAGES_RECEIVED)
                .and_then(|m| m.increase)
        };
        // A beat two seconds before the start (a broker on a slower beat) is the baseline.
        assert_eq!(
            increase(&[(start - 2_000_000, 100.0), (start + 1_500_000, 600.0)]),
            Some(500.0)
        );
        // One from long before is not: what the counter did over the run is unknown.
        assert_eq!(
            increase(&[
                (start - 9_000_000, 100.0),
                (start + 1_500_000, 600.0),
                (start + 2_500_000, 900.0)
            ]),
            None
        );
    }

    #[test]
    fn the_end_waits_for_figures_from_every_source_that_reads_the_sut() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = tmp.path().to_path_buf();
        let peer = PeerId::new("inspector-1").unwrap_or_else(|e| panic!("{e}"));
        let start = 1_700_000_000_000_000;
        let mut r = SutRecorder::new([(peer.clone(), ("insp".to_owned(), 0))].into());
        r.begin(start);
        assert!(!r.reads_sut());
        r.add(&dir, &peer, &stats(start + 1_000_000, Some(10.0), 0.0));
        assert!(r.reads_sut());
        assert!(r.sut_sampled_since(start + 1_000_000));
        // A later event without this source (no news on its beat) or with its error does
        // not count as figures taken later.
        r.add(
            &dir,
            &peer,
            &SutStats {
                at_us: UnixMicros(start + 2_000_000),
                samples: vec![],
            },
        );
        r.add(&dir, &peer, &stats(start + 3_000_000, None, 0.0));
        assert!(!r.sut_sampled_since(start + 2_000_000));
        r.add(&dir, &peer, &stats(start + 4_000_000, Some(20.0), 0.0));
        assert!(r.sut_sampled_since(start + 2_000_000));
    }

    #[test]
    fn a_sut_count_more_than_one_percent_off_is_a_warning() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = tmp.path().to_path_buf();
        let peer = PeerId::new("inspector-1").unwrap_or_else(|e| panic!("{e}"));
        let start = 1_700_000_000_000_000;
        let mut r = SutRecorder::new([(peer.clone(), ("insp".to_owned(), 0))].into());
        r.begin(start);
        r.add(&dir, &peer, &stats(start - 100_000, Some(0.0), 0.0));
        r.add(&dir, &peer, &stats(start + 900_000, Some(1000.0), 0.0));
        // The broker restarted: its counter began again, and the run's increase goes on.
        r.add(&dir, &peer, &stats(start + 1_900_000, Some(970.0), 0.0));
        let s = r
            .finish(2000)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_default();
        let c = s
            .cross_check
            .clone()
            .unwrap_or_else(|| panic!("no cross-check"));
        assert_eq!(c.sut_received, 1970.0);
        assert!(!c.agrees && (c.difference_pct + 1.5).abs() < 1e-9, "{c:?}");
        assert!(
            s.warnings
                .iter()
                .any(|w| w.contains("counted 1970 messages received, maestro sent 2000 (-1.50 %")),
            "{:?}",
            s.warnings
        );
    }
}
