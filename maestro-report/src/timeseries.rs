//! A run's per-second results (`timeseries.csv` and the interval logs), streamed to its folder while the run goes on, so the
//! controller's memory does not grow with the length of a run: each worker's stats note
//! goes to that worker's HdrHistogram interval log at once, and is merged into its run
//! second; a second is written to `timeseries.csv` (and forgotten) as soon as every live
//! worker has published it. Only the seconds not yet written are held.

use crate::folder::ResultsError;
use crate::model::Percentiles;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use maestro_protocol::histogram::{self, latency_histogram};
use maestro_protocol::{Counters, EncodedHistograms, PeerId, RunStats};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// One row of `timeseries.csv`: one run second, merged over workers (written and read
/// through this type only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondRow {
    /// The run second (0 is the first second after the start).
    pub second: u32,
    pub sent: u64,
    pub received: u64,
    pub errors: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub response_time_p50_us: u64,
    pub response_time_p99_us: u64,
    pub response_time_max_us: u64,
    pub service_time_p50_us: u64,
    pub service_time_p99_us: u64,
    pub send_lag_p99_us: u64,
    /// Clients connected to the SUT at the end of the second, connections opened and
    /// connection attempts failed during it; empty when the driver does not track
    /// connections (only fleets' own clients do).
    #[serde(default)]
    pub connected: Option<u32>,
    #[serde(default)]
    pub connections_opened: Option<u32>,
    #[serde(default)]
    pub connect_failures: Option<u32>,
    /// Payload bytes sent and received (after the warm-up); empty in files written before
    /// they were added.
    #[serde(default)]
    pub sent_bytes: Option<u64>,
    #[serde(default)]
    pub received_bytes: Option<u64>,
    /// Publish latency p99 (send to the SUT's acknowledgement); empty without
    /// acknowledgements.
    #[serde(default)]
    pub publish_latency_p99_us: Option<u64>,
}

/// Reads `timeseries.csv`; a bad row is an error naming the file, the line and the field.
pub fn read_timeseries(path: &Path) -> Result<Vec<SecondRow>, ResultsError> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| csv_error(path, e))?;
    reader
        .deserialize()
        .map(|row| row.map_err(|e| csv_error(path, e)))
        .collect()
}

pub(crate) fn csv_error(path: &Path, e: csv::Error) -> ResultsError {
    if e.is_io_error() {
        let reason = e.to_string();
        return match e.into_kind() {
            csv::ErrorKind::Io(io) => ResultsError::Read(path.into(), io),
            _ => ResultsError::Read(path.into(), std::io::Error::other(reason)),
        };
    }
    let field = match e.kind() {
        csv::ErrorKind::Deserialize { pos, err } => format!(
            "line {}{}",
            pos.as_ref().map_or(0, csv::Position::line),
            err.field()
                .map(|f| format!(", field {f}"))
                .unwrap_or_default()
        ),
        _ => "(row)".into(),
    };
    ResultsError::Field {
        path: path.into(),
        field,
        reason: e.to_string(),
    }
}

/// The latency histograms, merged losslessly (percentiles are never averaged).
#[derive(Debug, Clone)]
pub struct Latencies {
    pub response: Histogram<u64>,
    pub service: Histogram<u64>,
    pub lag: Histogram<u64>,
    /// Empty when the SUT acknowledged nothing (no reliable mode).
    pub publish: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            response: latency_histogram(),
            service: latency_histogram(),
            lag: latency_histogram(),
            publish: latency_histogram(),
        }
    }
}

impl Latencies {
    /// Adds encoded histograms; a histogram that does not decode is reported.
    pub fn add(&mut self, h: &EncodedHistograms) -> Result<(), String> {
        for (into, from) in [
            (&mut self.response, &h.response_time_us),
            (&mut self.service, &h.service_time_us),
            (&mut self.lag, &h.send_lag_us),
        ] {
            let decoded = histogram::decode(from).map_err(|e| e.to_string())?;
            into.add(&decoded).map_err(|e| format!("{e:?}"))?;
        }
        if let Some(publish) = &h.publish_latency_us {
            let decoded = histogram::decode(publish).map_err(|e| e.to_string())?;
            self.publish.add(&decoded).map_err(|e| format!("{e:?}"))?;
        }
        Ok(())
    }
}

/// A second is written at the latest once a worker is this many seconds past it, even if
/// another live worker has not published it (a worker that stalls does not hold memory).
const MAX_OPEN: u32 = 5;

/// One run second, merged over workers.
#[derive(Debug, Default)]
struct Second {
    counters: Counters,
    latencies: Latencies,
    connections: Option<maestro_protocol::SecondConnections>,
}

/// One worker's interval log.
struct Hlog {
    file: BufWriter<File>,
    serializer: V2DeflateSerializer,
}

impl std::fmt::Debug for Hlog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hlog")
    }
}

/// The latest written second, for the progress line.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub second: u32,
    pub counters: Counters,
    pub response: Percentiles,
}

/// The streaming half of a results folder.
#[derive(Debug)]
pub struct LiveResults {
    folder: PathBuf,
    /// The run's start (controller clock), the base time of the interval logs.
    start_us: i64,
    names: BTreeMap<PeerId, String>,
    hlogs: BTreeMap<PeerId, Hlog>,
    csv: csv::Writer<BufWriter<File>>,
    open: BTreeMap<u32, Second>,
    /// Seconds below this are written.
    written_below: u32,
    /// The latest second each worker published.
    latest: BTreeMap<PeerId, u32>,
    last_row: Option<Row>,
    /// Totals of the seconds written so far.
    totals: Counters,
    /// Every written row, when asked to keep them ([`LiveResults::keep_rows`]).
    rows: Option<Vec<SecondRow>>,
    /// Response times of every written second, merged (for live quantiles).
    whole: Histogram<u64>,
    /// Stats notes that could not be read (a histogram that does not decode).
    pub unreadable: Vec<String>,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{}: {e}", path.display()))
}

/// A file name made of a worker's name.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl LiveResults {
    /// Creates `folder` with the header of `timeseries.csv`.
    pub fn create(
        folder: PathBuf,
        start_us: i64,
        names: BTreeMap<PeerId, String>,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&folder).map_err(|e| io_err(&folder, e))?;
        let path = folder.join("timeseries.csv");
        let csv = csv::Writer::from_writer(BufWriter::new(
            File::create(&path).map_err(|e| io_err(&path, e))?,
        ));
        Ok(Self {
            folder,
            start_us,
            names,
            hlogs: BTreeMap::new(),
            csv,
            open: BTreeMap::new(),
            written_below: 0,
            latest: BTreeMap::new(),
            last_row: None,
            totals: Counters::default(),
            rows: None,
            whole: latency_histogram(),
            unreadable: Vec::new(),
        })
    }

    /// Keeps every written row in memory (a run with faults looks at the seconds around
    /// each one); without this, written rows are forgotten.
    pub fn keep_rows(&mut self) {
        self.rows.get_or_insert_with(Vec::new);
    }

    /// Response times of the seconds written so far.
    pub fn whole_run_response(&self) -> Percentiles {
        Percentiles::of(&self.whole)
    }

    /// The rows kept since [`LiveResults::keep_rows`].
    pub fn rows(&self) -> &[SecondRow] {
        self.rows.as_deref().unwrap_or(&[])
    }

    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// Totals of the seconds written to the time series so far.
    pub fn totals(&self) -> Counters {
        self.totals
    }

    /// The latest second written to the time series.
    pub fn last_row(&self) -> Option<Row> {
        self.last_row
    }

    fn hlog(&mut self, worker: &PeerId) -> std::io::Result<&mut Hlog> {
        if !self.hlogs.contains_key(worker) {
            let name = self
                .names
                .get(worker)
                .map_or(worker.as_str(), String::as_str);
            let path = self.folder.join(sanitize(name) + ".hlog");
            let mut file = BufWriter::new(File::create(&path).map_err(|e| io_err(&path, e))?);
            let mut serializer = V2DeflateSerializer::new();
            let base = UNIX_EPOCH + Duration::from_micros(self.start_us.max(0) as u64);
            IntervalLogWriterBuilder::new()
                .add_comment("maestro interval histograms, values in microseconds; tags: response_time_us, service_time_us, send_lag_us, publish_latency_us")
                .with_start_time(base)
                .with_base_time(base)
                .begin_log_with(&mut file, &mut serializer)?;
            self.hlogs.insert(worker.clone(), Hlog { file, serializer });
        }
        self.hlogs
            .get_mut(worker)
            .ok_or_else(|| std::io::Error::other("interval log vanished"))
    }

    /// Takes one worker's stats note: appends it to the worker's interval log, merges it
    /// into its second, and writes every second that the `live` workers have all
    /// published.
    pub fn add(&mut self, worker: &PeerId, s: &RunStats, live: &[PeerId]) -> std::io::Result<()> {
        let start = Duration::from_secs(u64::from(s.second));
        let length = Duration::from_secs(1);
        let mut decoded = Vec::with_capacity(4);
        for (tag, encoded) in [
            ("response_time_us", Some(&s.histograms.response_time_us)),
            ("service_time_us", Some(&s.histograms.service_time_us)),
            ("send_lag_us", Some(&s.histograms.send_lag_us)),
            (
                "publish_latency_us",
                s.histograms.publish_latency_us.as_ref(),
            ),
        ] {
            let Some(encoded) = encoded else { continue };
            match histogram::decode(encoded) {
                Ok(h) => decoded.push((tag, h)),
                Err(e) => {
                    self.unreadable
                        .push(format!("worker {worker}: second {}: {tag}: {e}", s.second));
                    return Ok(());
                }
            }
        }
        let log = self.hlog(worker)?;
        let mut writer =
            IntervalLogWriterBuilder::new().begin_log_with(&mut log.file, &mut log.serializer)?;
        for (tag, h) in &decoded {
            writer
                .write_histogram(h, start, length, Tag::new(tag))
                .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        }
        // A second already written takes late numbers into the oldest open one.
        let second = s.second.max(self.written_below);
        let bucket = self.open.entry(second).or_default();
        bucket.counters.add(&s.counters);
        if let Some(c) = s.connections {
            let into = bucket
                .connections
                .get_or_insert(maestro_protocol::SecondConnections {
                    connected: 0,
                    opened: 0,
                    failed: 0,
                });
            into.connected = into.connected.saturating_add(c.connected);
            into.opened = into.opened.saturating_add(c.opened);
            into.failed = into.failed.saturating_add(c.failed);
        }
        for ((_, h), into) in decoded.iter().zip([
            &mut bucket.latencies.response,
            &mut bucket.latencies.service,
            &mut bucket.latencies.lag,
        ]) {
            // Same bounds everywhere: adding cannot fail.
            let _ = into.add(h);
        }
        let latest = self.latest.entry(worker.clone()).or_default();
        *latest = (*latest).max(s.second);
        self.write_complete(live)
    }

    /// Writes the seconds every live worker has published (or that one worker is far past).
    fn write_complete(&mut self, live: &[PeerId]) -> std::io::Result<()> {
        let newest = self.latest.values().copied().max().unwrap_or(0);
        let all = live
            .iter()
            .map(|w| self.latest.get(w).copied())
            .try_fold(u32::MAX, |m, l| l.map(|l| m.min(l)));
        while let Some((&k, _)) = self.open.first_key_value() {
            let complete = all.is_some_and(|all| k <= all) || k.saturating_add(MAX_OPEN) <= newest;
            if !complete {
                break;
            }
            self.write_first()?;
        }
        Ok(())
    }

    fn write_first(&mut self) -> std::io::Result<()> {
        let Some((k, b)) = self.open.pop_first() else {
            return Ok(());
        };
        let r = Percentiles::of(&b.latencies.response);
        let _ = self.whole.add(&b.latencies.response);
        let s = Percentiles::of(&b.latencies.service);
        let l = Percentiles::of(&b.latencies.lag);
        let row = SecondRow {
            second: k,
            sent: b.counters.sent,
            received: b.counters.received,
            errors: b.counters.errors,
            duplicated: b.counters.duplicated,
            out_of_order: b.counters.out_of_order,
            response_time_p50_us: r.p50,
            response_time_p99_us: r.p99,
            response_time_max_us: r.max,
            service_time_p50_us: s.p50,
            service_time_p99_us: s.p99,
            send_lag_p99_us: l.p99,
            connected: b.connections.map(|c| c.connected),
            connections_opened: b.connections.map(|c| c.opened),
            connect_failures: b.connections.map(|c| c.failed),
            sent_bytes: Some(b.counters.sent_bytes),
            received_bytes: Some(b.counters.received_bytes),
            publish_latency_p99_us: (!b.latencies.publish.is_empty())
                .then(|| b.latencies.publish.value_at_quantile(0.99)),
        };
        self.csv.serialize(row).map_err(std::io::Error::other)?;
        // Once a second: what a killed controller leaves behind is whole up to here.
        self.csv.flush()?;
        for log in self.hlogs.values_mut() {
            log.file.flush()?;
        }
        if let Some(rows) = self.rows.as_mut() {
            rows.push(row);
        }
        self.written_below = k.saturating_add(1);
        self.totals.add(&b.counters);
        self.last_row = Some(Row {
            second: k,
            counters: b.counters,
            response: r,
        });
        Ok(())
    }

    /// The run is over: writes what is left and flushes every file.
    pub fn finish(&mut self) -> std::io::Result<()> {
        while !self.open.is_empty() {
            self.write_first()?;
        }
        self.csv.flush()?;
        for log in self.hlogs.values_mut() {
            log.file.flush()?;
        }
        Ok(())
    }

    /// Seconds held in memory (not yet written).
    pub fn held(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maestro_protocol::{EncodedHistograms, RunId, UnixMicros};

    fn stats(second: u32, sent: u64, latency_us: u64) -> RunStats {
        let mut h = maestro_protocol::histogram::latency_histogram();
        h.saturating_record(latency_us);
        let e = maestro_protocol::histogram::encode(&h);
        RunStats {
            run: RunId::new("r").unwrap_or_else(|_| unreachable!()),
            second,
            interval_start_us: UnixMicros(0),
            interval_end_us: UnixMicros(0),
            counters: Counters {
                sent,
                received: sent,
                ..Counters::default()
            },
            histograms: EncodedHistograms {
                response_time_us: e.clone(),
                service_time_us: e.clone(),
                send_lag_us: e,
                publish_latency_us: None,
            },
            active_producers: 1,
            active_consumers: 1,
            connections: (second == 1).then_some(maestro_protocol::SecondConnections {
                connected: 5,
                opened: 2,
                failed: 1,
            }),
        }
    }

    #[test]
    fn seconds_are_written_once_every_live_worker_published_them() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = tmp.path().to_path_buf();
        let (a, b) = (
            PeerId::new("a").unwrap_or_else(|_| unreachable!()),
            PeerId::new("b").unwrap_or_else(|_| unreachable!()),
        );
        let live = [a.clone(), b.clone()];
        let mut out =
            LiveResults::create(dir.clone(), 0, BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
        out.add(&a, &stats(0, 10, 100), &live)
            .unwrap_or_else(|e| panic!("{e}"));
        out.add(&a, &stats(1, 11, 100), &live)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.held(), 2, "b has not published second 0");
        out.add(&b, &stats(0, 5, 300), &live)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.held(), 1);
        let row = out.last_row().unwrap_or_else(|| panic!("a row"));
        assert_eq!((row.second, row.counters.sent), (0, 15));
        // Late numbers for a written second count in the oldest open one.
        out.add(&b, &stats(0, 1, 300), &live)
            .unwrap_or_else(|e| panic!("{e}"));
        // A worker gone from the live set is no longer waited for.
        out.add(&a, &stats(2, 1, 100), std::slice::from_ref(&a))
            .unwrap_or_else(|e| panic!("{e}"));
        out.finish().unwrap_or_else(|e| panic!("{e}"));
        let rows = read_timeseries(&dir.join("timeseries.csv")).unwrap_or_else(|e| panic!("{e}"));
        let counts: Vec<(u32, u64, u64)> = rows
            .iter()
            .map(|r| (r.second, r.sent, r.received))
            .collect();
        assert_eq!(counts, [(0, 15, 15), (1, 12, 12), (2, 1, 1)]);
        assert_eq!(rows[0].response_time_max_us, 300);
        // A bad row is an error that names the file and the field.
        std::fs::write(dir.join("bad.csv"), "second,sent\n0,many\n").unwrap_or_default();
        let e = read_timeseries(&dir.join("bad.csv"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.csv"), "{e}");
        let hlog = std::fs::read_to_string(dir.join("a.hlog")).unwrap_or_default();
        assert_eq!(hlog.matches("Tag=response_time_us,").count(), 3, "{hlog}");
    }
}
