//! A summary from what a run's folder holds when its controller ended mid-run (`kill -9`,
//! a crash, a lost machine): the skeleton written at the start (`begun.json`: the run,
//! the SUT, the workers and their clocks) filled in from the time series and the interval
//! logs, which the controller flushes every second. Marked partial, and degraded.

use crate::folder::{self, ResultsError};
use crate::model::{Partial, Percentiles, RunSummary};
use crate::timeseries::read_timeseries;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use maestro_protocol::histogram::{self, latency_histogram};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The skeleton summary a run's folder gets at its start; gone once `summary.json` is
/// written.
pub const BEGUN: &str = "begun.json";

/// True for a run folder whose controller ended before writing its summary.
pub fn is_unfinished(folder: &Path) -> bool {
    folder.join(BEGUN).is_file() && !folder.join("summary.json").exists()
}

/// Every unfinished run folder at or under `folder`.
pub fn unfinished_under(folder: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![folder.to_path_buf()];
    while let Some(dir) = todo.pop() {
        if is_unfinished(&dir) {
            found.push(dir.clone());
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            todo.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
    found.sort();
    found
}

/// The partial summary of an unfinished run folder (nothing is written).
pub fn summarize(folder: &Path) -> Result<RunSummary, ResultsError> {
    let mut s: RunSummary = folder::read(&folder.join(BEGUN))?;
    let series = folder.join("timeseries.csv");
    let rows = if series.exists() {
        read_timeseries(&series)?
    } else {
        Vec::new()
    };
    let Some(begun) = s.partial.clone() else {
        return Err(ResultsError::Field {
            path: folder.join(BEGUN),
            field: "partial".into(),
            reason: "missing: not a run's skeleton".into(),
        });
    };
    let warmup_s = begun.warmup_s;
    let (mut measured_sent, mut measured_received) = (0u64, 0u64);
    let (mut sent, mut received, mut errors, mut duplicated, mut out_of_order) = (0, 0, 0, 0, 0);
    let (mut sent_bytes, mut received_bytes) = (0u64, 0u64);
    for r in &rows {
        sent += r.sent;
        received += r.received;
        errors += r.errors;
        duplicated += r.duplicated;
        out_of_order += r.out_of_order;
        if r.second >= warmup_s {
            measured_sent += r.sent;
            measured_received += r.received;
            sent_bytes += r.sent_bytes.unwrap_or(0);
            received_bytes += r.received_bytes.unwrap_or(0);
        }
    }
    let seconds = rows.iter().map(|r| r.second + 1).max().unwrap_or(0);
    let whole = interval_logs(folder, warmup_s)?;
    let percentiles = |tag: &str| whole.get(tag).map(Percentiles::of).unwrap_or_default();
    let measured_s = f64::from(seconds.saturating_sub(warmup_s));
    let per_s = |n: u64| {
        if measured_s > 0.0 {
            n as f64 / measured_s
        } else {
            0.0
        }
    };
    let expected = (sent as f64 * begun.copies_per_message).round() as u64;
    s.sent = sent;
    s.received = received;
    s.lost = expected.saturating_sub(received);
    s.duplicated = duplicated;
    s.out_of_order = out_of_order;
    s.errors = errors;
    s.measured_s = measured_s;
    s.achieved_rate = per_s(measured_sent);
    s.achieved_fraction = (s.offered_rate > 0.0).then(|| per_s(measured_sent) / s.offered_rate);
    s.receive_rate = per_s(measured_received);
    s.achieved_bytes_rate = Some(per_s(sent_bytes));
    s.receive_bytes_rate = Some(per_s(received_bytes));
    s.response_time_us = percentiles("response_time_us");
    s.service_time_us = percentiles("service_time_us");
    s.send_lag_us = percentiles("send_lag_us");
    s.publish_latency_us = whole.get("publish_latency_us").map(Percentiles::of);
    s.interrupted = true;
    s.generator = None;
    let reason = format!(
        "partial: the run ended without its summary (its controller was killed, lost its machine, or failed mid-run); made by `maestro-cli report` from the {seconds} seconds of time series and interval logs flushed by then. \
         lost counts every message not received by then, in flight ones included (at most); the workers' own results (exact loss, unsent, connections) never arrived"
    );
    s.degraded = true;
    s.degraded_reasons.retain(|r| !r.starts_with("partial:"));
    s.degraded_reasons.insert(0, reason.clone());
    s.partial = Some(Partial {
        reason,
        seconds,
        ..begun
    });
    Ok(s)
}

/// The interval logs (`*.hlog`) of the folder from `from_s` on, merged per tag.
fn interval_logs(
    folder: &Path,
    from_s: u32,
) -> Result<BTreeMap<String, Histogram<u64>>, ResultsError> {
    let mut whole: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let entries = std::fs::read_dir(folder).map_err(|e| ResultsError::Read(folder.into(), e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "hlog") {
            continue;
        }
        let text = std::fs::read(&path).map_err(|e| ResultsError::Read(path.clone(), e))?;
        for item in IntervalLogIterator::new(&text) {
            // A log cut mid-line by the kill ends there.
            let Ok(LogEntry::Interval(h)) = item else {
                continue;
            };
            let Some(tag) = h.tag().map(|t| t.as_str().to_owned()) else {
                continue;
            };
            if h.start_timestamp().as_secs() < u64::from(from_s) {
                continue;
            }
            let Ok(decoded) = histogram::decode(h.encoded_histogram()) else {
                continue;
            };
            let into = whole.entry(tag).or_insert_with(latency_histogram);
            into.add(&decoded).map_err(|e| ResultsError::Field {
                path: path.clone(),
                field: "(interval log)".into(),
                reason: format!("{e:?}"),
            })?;
        }
    }
    Ok(whole)
}
