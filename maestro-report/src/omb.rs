//! A run in OpenMessaging Benchmark's result format (`TestResult` JSON), so the charts
//! OMB users have read maestro's runs: rate and backlog series and latency series per
//! interval (10 s by default, as OMB's `statsPeriod`), and the aggregates.
//!
//! Where the numbers come from, all measured:
//! - `publishRate`, `consumeRate`, `publishErrorRate`, `backlog`: the run's
//!   `timeseries.csv` (sent, received and errors per second; the backlog is what was sent
//!   times the copies each message should reach, minus what was received, at each
//!   interval's end);
//! - latency series: the workers' interval logs (`<worker>.hlog`), merged per interval,
//!   and the aggregates over the whole run:
//!   - `publishLatency*` (ms): send to the SUT's acknowledgement (empty without one);
//!   - `publishDelayLatency*` (µs): how late sends were against their schedule (maestro's
//!     send lag);
//!   - `endToEndLatency*` (ms): OMB measures from the message's publish timestamp, that is
//!     maestro's service time. maestro's response time (from the intended send time,
//!     free of coordinated omission) stays in its own `summary.json`.

use crate::folder::ResultsError;
use crate::timeseries::read_timeseries;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use maestro_protocol::TestSpec;
use maestro_protocol::histogram::{self, latency_histogram};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// OMB's `TestResult`, field for field.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OmbResult {
    pub workload: String,
    pub driver: String,
    pub message_size: u64,
    pub topics: u32,
    pub partitions: u32,
    pub producers_per_topic: u32,
    pub consumers_per_topic: u32,

    pub publish_rate: Vec<f64>,
    pub publish_error_rate: Vec<f64>,
    pub consume_rate: Vec<f64>,
    pub backlog: Vec<i64>,

    pub publish_latency_avg: Vec<f64>,
    #[serde(rename = "publishLatency50pct")]
    pub publish_latency_50pct: Vec<f64>,
    #[serde(rename = "publishLatency75pct")]
    pub publish_latency_75pct: Vec<f64>,
    #[serde(rename = "publishLatency95pct")]
    pub publish_latency_95pct: Vec<f64>,
    #[serde(rename = "publishLatency99pct")]
    pub publish_latency_99pct: Vec<f64>,
    #[serde(rename = "publishLatency999pct")]
    pub publish_latency_999pct: Vec<f64>,
    #[serde(rename = "publishLatency9999pct")]
    pub publish_latency_9999pct: Vec<f64>,
    pub publish_latency_max: Vec<f64>,

    pub publish_delay_latency_avg: Vec<f64>,
    #[serde(rename = "publishDelayLatency50pct")]
    pub publish_delay_latency_50pct: Vec<u64>,
    #[serde(rename = "publishDelayLatency75pct")]
    pub publish_delay_latency_75pct: Vec<u64>,
    #[serde(rename = "publishDelayLatency95pct")]
    pub publish_delay_latency_95pct: Vec<u64>,
    #[serde(rename = "publishDelayLatency99pct")]
    pub publish_delay_latency_99pct: Vec<u64>,
    #[serde(rename = "publishDelayLatency999pct")]
    pub publish_delay_latency_999pct: Vec<u64>,
    #[serde(rename = "publishDelayLatency9999pct")]
    pub publish_delay_latency_9999pct: Vec<u64>,
    pub publish_delay_latency_max: Vec<u64>,

    pub aggregated_publish_latency_avg: f64,
    #[serde(rename = "aggregatedPublishLatency50pct")]
    pub aggregated_publish_latency_50pct: f64,
    #[serde(rename = "aggregatedPublishLatency75pct")]
    pub aggregated_publish_latency_75pct: f64,
    #[serde(rename = "aggregatedPublishLatency95pct")]
    pub aggregated_publish_latency_95pct: f64,
    #[serde(rename = "aggregatedPublishLatency99pct")]
    pub aggregated_publish_latency_99pct: f64,
    #[serde(rename = "aggregatedPublishLatency999pct")]
    pub aggregated_publish_latency_999pct: f64,
    #[serde(rename = "aggregatedPublishLatency9999pct")]
    pub aggregated_publish_latency_9999pct: f64,
    pub aggregated_publish_latency_max: f64,

    pub aggregated_publish_delay_latency_avg: f64,
    #[serde(rename = "aggregatedPublishDelayLatency50pct")]
    pub aggregated_publish_delay_latency_50pct: u64,
    #[serde(rename = "aggregatedPublishDelayLatency75pct")]
    pub aggregated_publish_delay_latency_75pct: u64,
    #[serde(rename = "aggregatedPublishDelayLatency95pct")]
    pub aggregated_publish_delay_latency_95pct: u64,
    #[serde(rename = "aggregatedPublishDelayLatency99pct")]
    pub aggregated_publish_delay_latency_99pct: u64,
    #[serde(rename = "aggregatedPublishDelayLatency999pct")]
    pub aggregated_publish_delay_latency_999pct: u64,
    #[serde(rename = "aggregatedPublishDelayLatency9999pct")]
    pub aggregated_publish_delay_latency_9999pct: u64,
    pub aggregated_publish_delay_latency_max: u64,

    /// Percentile ("50.0") to ms, as OMB's Jackson writes a `Map<Double, Double>`.
    pub aggregated_publish_latency_quantiles: Quantiles<f64>,
    pub aggregated_publish_delay_latency_quantiles: Quantiles<u64>,

    pub end_to_end_latency_avg: Vec<f64>,
    #[serde(rename = "endToEndLatency50pct")]
    pub end_to_end_latency_50pct: Vec<f64>,
    #[serde(rename = "endToEndLatency75pct")]
    pub end_to_end_latency_75pct: Vec<f64>,
    #[serde(rename = "endToEndLatency95pct")]
    pub end_to_end_latency_95pct: Vec<f64>,
    #[serde(rename = "endToEndLatency99pct")]
    pub end_to_end_latency_99pct: Vec<f64>,
    #[serde(rename = "endToEndLatency999pct")]
    pub end_to_end_latency_999pct: Vec<f64>,
    #[serde(rename = "endToEndLatency9999pct")]
    pub end_to_end_latency_9999pct: Vec<f64>,
    pub end_to_end_latency_max: Vec<f64>,

    pub aggregated_end_to_end_latency_quantiles: Quantiles<f64>,

    pub aggregated_end_to_end_latency_avg: f64,
    #[serde(rename = "aggregatedEndToEndLatency50pct")]
    pub aggregated_end_to_end_latency_50pct: f64,
    #[serde(rename = "aggregatedEndToEndLatency75pct")]
    pub aggregated_end_to_end_latency_75pct: f64,
    #[serde(rename = "aggregatedEndToEndLatency95pct")]
    pub aggregated_end_to_end_latency_95pct: f64,
    #[serde(rename = "aggregatedEndToEndLatency99pct")]
    pub aggregated_end_to_end_latency_99pct: f64,
    #[serde(rename = "aggregatedEndToEndLatency999pct")]
    pub aggregated_end_to_end_latency_999pct: f64,
    #[serde(rename = "aggregatedEndToEndLatency9999pct")]
    pub aggregated_end_to_end_latency_9999pct: f64,
    pub aggregated_end_to_end_latency_max: f64,
}

/// A JSON object from percentile to value, in ascending percentile order (as OMB's
/// `TreeMap<Double, _>`), keys written as Java writes a double (`"50.0"`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quantiles<T>(pub Vec<(f64, T)>);

impl<T: Serialize> Serialize for Quantiles<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (percentile, value) in &self.0 {
            map.serialize_entry(&format!("{percentile:?}"), value)?;
        }
        map.end()
    }
}

/// OMB's quantiles: 50, 75, 95, 99, 99.9, 99.99 and the maximum.
const QUANTILES: [f64; 6] = [0.5, 0.75, 0.95, 0.99, 0.999, 0.9999];

/// The summary statistics of one histogram, in µs: mean, the six quantiles and the max
/// (all 0 for an empty histogram, as OMB writes an empty interval).
fn stats(h: &Histogram<u64>) -> (f64, [u64; 6], u64) {
    if h.is_empty() {
        return (0.0, [0; 6], 0);
    }
    (h.mean(), QUANTILES.map(|q| h.value_at_quantile(q)), h.max())
}

/// The run folder to export: `folder` itself, or in a plan's folder the run of its last
/// measured fixed phase (with the plan's name).
pub fn run_folder(folder: &Path) -> Result<(PathBuf, Option<String>), ResultsError> {
    if folder.join("spec.json").exists() {
        return Ok((folder.to_owned(), None));
    }
    let plan = crate::folder::read_plan(folder)?;
    let name = plan.plan.clone();
    plan.phases
        .iter()
        .rev()
        .filter(|p| p.kind == crate::PhaseKind::Fixed)
        .find_map(|p| {
            let probe = p.probes.last()?;
            Some((
                folder
                    .join(format!("{:02}-{}", p.index, p.kind))
                    .join(&probe.summary.run_id),
                Some(name.clone()),
            ))
        })
        .ok_or_else(|| ResultsError::Field {
            path: folder.join("summary.json"),
            field: "phases".into(),
            reason: "no fixed phase with a run to export (give a run's folder instead)".into(),
        })
}

/// Reads one run folder (or a plan's, see [`run_folder`]) as an OMB result with
/// `interval_s`-second intervals.
pub fn export(folder: &Path, interval_s: u32) -> Result<OmbResult, ResultsError> {
    let (folder, plan_name) = run_folder(folder)?;
    let interval_s = interval_s.max(1);
    let summary = crate::folder::read_run(&folder)?;
    let spec: TestSpec = crate::folder::read_spec(&folder)?;
    let rows = read_timeseries(&folder.join("timeseries.csv"))?;
    let warmup_s = (spec.warmup_ms / 1000) as u32;
    let topics = spec.topics.max(1);
    let compete = spec.sut.consumers_compete();
    let copies = if compete {
        f64::from(spec.consumers.min(topics)) / f64::from(topics)
    } else {
        f64::from(spec.consumers) / f64::from(topics)
    };
    let mut out = OmbResult {
        workload: plan_name.unwrap_or_else(|| summary.run_id.clone()),
        driver: spec.sut.scheme().as_str().to_owned(),
        message_size: u64::from(spec.size.mean()),
        topics,
        partitions: if spec.sut.capabilities().partitions {
            spec.sut
                .partitions()
                .unwrap_or_else(|| spec.consumers.div_ceil(topics).max(1))
        } else {
            1
        },
        producers_per_topic: spec.producers / topics,
        consumers_per_topic: spec.consumers / topics,
        ..OmbResult::default()
    };
    // Rates and backlog, per interval, from the rows after the warm-up.
    let (mut sent, mut received) = (0u64, 0u64);
    // Per interval: sent, received, errors, and the seconds it covers (the last one may
    // be shorter: rates are over the seconds there are).
    let mut by_interval: BTreeMap<u32, (u64, u64, u64, u32)> = BTreeMap::new();
    // The backlog at each interval's end (its last row).
    let mut waiting_at: BTreeMap<u32, i64> = BTreeMap::new();
    // OMB's series cover the test; receptions after the producers' window (the drain)
    // are one last, shorter interval of their own.
    let window_s = spec.send_window().as_secs_f64().ceil() as u32;
    let last_busy = rows
        .iter()
        .filter(|r| r.sent > 0 || r.received > 0)
        .map(|r| r.second)
        .max()
        .unwrap_or(0);
    let drain_k = window_s.saturating_sub(warmup_s).div_ceil(interval_s);
    for r in rows.iter().filter(|r| r.second <= last_busy) {
        sent += r.sent;
        received += r.received;
        if r.second < warmup_s {
            continue;
        }
        let k = if r.second < window_s {
            (r.second - warmup_s) / interval_s
        } else {
            drain_k
        };
        let e = by_interval.entry(k).or_default();
        e.0 += r.sent;
        e.1 += r.received;
        e.2 += r.errors;
        e.3 += 1;
        waiting_at.insert(k, (sent as f64 * copies) as i64 - received as i64);
    }
    let intervals = by_interval.keys().next_back().map_or(0, |k| k + 1);
    let mut waiting = 0;
    for k in 0..intervals {
        let (s, r, e, seconds) = by_interval.get(&k).copied().unwrap_or_default();
        let span = f64::from(seconds.max(1));
        out.publish_rate.push(s as f64 / span);
        out.consume_rate.push(r as f64 / span);
        out.publish_error_rate.push(e as f64 / span);
        waiting = waiting_at.get(&k).copied().unwrap_or(waiting);
        out.backlog.push(waiting);
    }

    // Latencies from the interval logs, merged per interval and over the run.
    let (series, whole) = read_latencies(&folder, |second| {
        (second >= warmup_s && second <= last_busy).then(|| {
            if second < window_s {
                (second - warmup_s) / interval_s
            } else {
                drain_k
            }
        })
    })?;
    push_interval_latencies(&mut out, &series, intervals);
    set_aggregated_latencies(&mut out, &whole);
    Ok(out)
}

/// Latency histograms by (tag, interval) and by tag over the run.
type Latencies = (
    BTreeMap<(&'static str, u32), Histogram<u64>>,
    BTreeMap<&'static str, Histogram<u64>>,
);

/// Reads the folder's interval logs (`*.hlog`): publish latency, send lag ("delay") and
/// service time ("e2e"), merged by the interval `interval_of` gives each second (`None`:
/// outside the measured seconds).
fn read_latencies(
    folder: &Path,
    interval_of: impl Fn(u32) -> Option<u32>,
) -> Result<Latencies, ResultsError> {
    let mut series: BTreeMap<(&'static str, u32), Histogram<u64>> = BTreeMap::new();
    let mut whole: BTreeMap<&'static str, Histogram<u64>> = BTreeMap::new();
    let entries =
        std::fs::read_dir(folder).map_err(|e| ResultsError::Read(folder.to_path_buf(), e))?;
    for entry in entries {
        let path = entry
            .map_err(|e| ResultsError::Read(folder.to_path_buf(), e))?
            .path();
        if path.extension().is_none_or(|e| e != "hlog") {
            continue;
        }
        let bad = |reason: String| ResultsError::Field {
            path: path.clone(),
            field: "(interval log)".into(),
            reason,
        };
        let text = std::fs::read(&path).map_err(|e| ResultsError::Read(path.clone(), e))?;
        for item in IntervalLogIterator::new(&text) {
            let LogEntry::Interval(h) = item.map_err(|e| bad(format!("{e:?}")))? else {
                continue;
            };
            let tag: &'static str = match h.tag().map(|t| t.as_str()) {
                Some("publish_latency_us") => "publish",
                Some("send_lag_us") => "delay",
                Some("service_time_us") => "e2e",
                _ => continue,
            };
            let Some(k) = interval_of(h.start_timestamp().as_secs() as u32) else {
                continue;
            };
            let decoded =
                histogram::decode(h.encoded_histogram()).map_err(|e| bad(e.to_string()))?;
            let merge =
                |into: &mut Histogram<u64>| into.add(&decoded).map_err(|e| bad(format!("{e:?}")));
            merge(series.entry((tag, k)).or_insert_with(latency_histogram))?;
            merge(whole.entry(tag).or_insert_with(latency_histogram))?;
        }
    }
    Ok((series, whole))
}

/// Each interval's latency figures, in OMB's units (ms; the delay in µs).
fn push_interval_latencies(
    out: &mut OmbResult,
    series: &BTreeMap<(&'static str, u32), Histogram<u64>>,
    intervals: u32,
) {
    let empty = latency_histogram();
    let ms = |us: u64| us as f64 / 1000.0;
    for k in 0..intervals {
        let get = |tag| series.get(&(tag, k)).unwrap_or(&empty);
        let (avg, q, max) = stats(get("publish"));
        out.publish_latency_avg.push(avg / 1000.0);
        out.publish_latency_50pct.push(ms(q[0]));
        out.publish_latency_75pct.push(ms(q[1]));
        out.publish_latency_95pct.push(ms(q[2]));
        out.publish_latency_99pct.push(ms(q[3]));
        out.publish_latency_999pct.push(ms(q[4]));
        out.publish_latency_9999pct.push(ms(q[5]));
        out.publish_latency_max.push(ms(max));
        let (avg, q, max) = stats(get("delay"));
        out.publish_delay_latency_avg.push(avg);
        out.publish_delay_latency_50pct.push(q[0]);
        out.publish_delay_latency_75pct.push(q[1]);
        out.publish_delay_latency_95pct.push(q[2]);
        out.publish_delay_latency_99pct.push(q[3]);
        out.publish_delay_latency_999pct.push(q[4]);
        out.publish_delay_latency_9999pct.push(q[5]);
        out.publish_delay_latency_max.push(max);
        let (avg, q, max) = stats(get("e2e"));
        out.end_to_end_latency_avg.push(avg / 1000.0);
        out.end_to_end_latency_50pct.push(ms(q[0]));
        out.end_to_end_latency_75pct.push(ms(q[1]));
        out.end_to_end_latency_95pct.push(ms(q[2]));
        out.end_to_end_latency_99pct.push(ms(q[3]));
        out.end_to_end_latency_999pct.push(ms(q[4]));
        out.end_to_end_latency_9999pct.push(ms(q[5]));
        out.end_to_end_latency_max.push(ms(max));
    }
}

/// Percentile -> value pairs of a histogram, one per percentile.
fn quantiles(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<(f64, u64)> = Vec::new();
    for v in h.iter_quantiles(100) {
        let percentile = v.quantile_iterated_to() * 100.0;
        // One entry per percentile (the iteration may repeat the last).
        if out.last().is_none_or(|(p, _)| *p < percentile) {
            out.push((percentile, v.value_iterated_to()));
        }
    }
    out
}

/// The run's aggregated latency figures.
fn set_aggregated_latencies(out: &mut OmbResult, whole: &BTreeMap<&'static str, Histogram<u64>>) {
    let empty = latency_histogram();
    let ms = |us: u64| us as f64 / 1000.0;
    let p = whole.get("publish").unwrap_or(&empty);
    let (avg, q, max) = stats(p);
    out.aggregated_publish_latency_avg = avg / 1000.0;
    [
        out.aggregated_publish_latency_50pct,
        out.aggregated_publish_latency_75pct,
        out.aggregated_publish_latency_95pct,
        out.aggregated_publish_latency_99pct,
        out.aggregated_publish_latency_999pct,
        out.aggregated_publish_latency_9999pct,
    ] = q.map(ms);
    out.aggregated_publish_latency_max = ms(max);
    out.aggregated_publish_latency_quantiles =
        Quantiles(quantiles(p).into_iter().map(|(k, v)| (k, ms(v))).collect());
    let d = whole.get("delay").unwrap_or(&empty);
    let (avg, q, max) = stats(d);
    out.aggregated_publish_delay_latency_avg = avg;
    [
        out.aggregated_publish_delay_latency_50pct,
        out.aggregated_publish_delay_latency_75pct,
        out.aggregated_publish_delay_latency_95pct,
        out.aggregated_publish_delay_latency_99pct,
        out.aggregated_publish_delay_latency_999pct,
        out.aggregated_publish_delay_latency_9999pct,
    ] = q;
    out.aggregated_publish_delay_latency_max = max;
    out.aggregated_publish_delay_latency_quantiles = Quantiles(quantiles(d));
    let e = whole.get("e2e").unwrap_or(&empty);
    let (avg, q, max) = stats(e);
    out.aggregated_end_to_end_latency_avg = avg / 1000.0;
    [
        out.aggregated_end_to_end_latency_50pct,
        out.aggregated_end_to_end_latency_75pct,
        out.aggregated_end_to_end_latency_95pct,
        out.aggregated_end_to_end_latency_99pct,
        out.aggregated_end_to_end_latency_999pct,
        out.aggregated_end_to_end_latency_9999pct,
    ] = q.map(ms);
    out.aggregated_end_to_end_latency_max = ms(max);
    out.aggregated_end_to_end_latency_quantiles =
        Quantiles(quantiles(e).into_iter().map(|(k, v)| (k, ms(v))).collect());
}
