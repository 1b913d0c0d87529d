//! The SUT side of a run: what inspectors read (`sut.csv`, one row per metric per
//! sample, and a summary per source) and the faults injected (a record per fault).
//!
//! `sut.csv` is long: `second,time_us,inspector,source,metric,label,kind,value,per_second`.
//! `per_second` is a counter's increase over the previous sample of the same series,
//! divided by the time between them; empty for gauges, for a counter's first sample, and
//! after a counter went down (the SUT restarted). A source that did not answer has no
//! rows for that second (a gap), never zeros; its gaps are listed in the summary.

use crate::folder::ResultsError;
use crate::model::Percentiles;
use maestro_protocol::MetricKind;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// One row of `sut.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SutRow {
    /// The run second the sample was taken in (controller clock, corrected by the
    /// inspector's clock offset).
    pub second: u32,
    /// When, µs since the Unix epoch (controller clock).
    pub time_us: i64,
    pub inspector: String,
    pub source: String,
    pub metric: String,
    /// Which instance (a queue, `group/topic`); empty for a total.
    pub label: String,
    pub kind: MetricKind,
    pub value: f64,
    pub per_second: Option<f64>,
}

/// Streams `sut.csv`.
#[derive(Debug)]
pub struct SutCsv {
    path: PathBuf,
    csv: csv::Writer<BufWriter<File>>,
}

impl SutCsv {
    pub fn create(folder: &Path) -> std::io::Result<Self> {
        let path = folder.join("sut.csv");
        let file = File::create(&path)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
        Ok(Self {
            path,
            csv: csv::Writer::from_writer(BufWriter::new(file)),
        })
    }

    pub fn write(&mut self, row: &SutRow) -> std::io::Result<()> {
        self.csv
            .serialize(row)
            .and_then(|()| Ok(self.csv.flush()?))
            .map_err(|e| std::io::Error::other(format!("{}: {e}", self.path.display())))
    }

    pub fn finish(&mut self) -> std::io::Result<()> {
        self.csv.flush()
    }
}

/// Reads `sut.csv`; a bad row is an error naming the file, the line and the field.
pub fn read_sut(path: &Path) -> Result<Vec<SutRow>, ResultsError> {
    let mut reader =
        csv::Reader::from_path(path).map_err(|e| crate::timeseries::csv_error(path, e))?;
    reader
        .deserialize()
        .map(|row| row.map_err(|e| crate::timeseries::csv_error(path, e)))
        .collect()
}

/// `summary.json`'s `sut` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SutSummary {
    pub sources: Vec<SourceSummary>,
    /// The SUT's own count of messages it took in over the run, against maestro's sent
    /// count (absent without a source that counts them).
    pub cross_check: Option<CrossCheck>,
    /// Disagreements worth a look (printed with the results).
    pub warnings: Vec<String>,
}

/// One source of one inspector over a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SourceSummary {
    pub inspector: String,
    pub source: String,
    pub kind: maestro_protocol::SourceKind,
    /// Samples that answered.
    pub samples: u32,
    /// Runs of seconds the source did not answer.
    pub gaps: Vec<Gap>,
    pub metrics: Vec<MetricSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Gap {
    pub from_second: u32,
    pub to_second: u32,
    pub error: String,
}

/// One series over a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MetricSummary {
    pub name: String,
    pub label: Option<String>,
    pub kind: MetricKind,
    pub first: f64,
    pub last: f64,
    pub min: f64,
    pub max: f64,
    /// Counters: how much it grew over the run (from the last sample before the start;
    /// increases only, so a restart does not count backwards).
    pub increase: Option<f64>,
    /// Counters: the highest per-second rate seen.
    pub max_per_second: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CrossCheck {
    pub inspector: String,
    pub source: String,
    /// `messages_received` grew by this much over the run.
    pub sut_received: f64,
    pub maestro_sent: u64,
    /// (sut_received - maestro_sent) / maestro_sent, in percent.
    pub difference_pct: f64,
    /// Within 1 %.
    pub agrees: bool,
}

/// How far the SUT's count and maestro's may differ before a warning.
pub const CROSS_CHECK_TOLERANCE_PCT: f64 = 1.0;

/// `summary.json`'s record of one fault of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FaultSummary {
    /// Its index in the plan.
    pub index: u32,
    pub action: String,
    pub inspector: String,
    /// When it was planned, ms after the run's start, and for how long.
    pub at_ms: u64,
    pub duration_ms: u64,
    /// When the controller asked for it, when the inspector issued it, saw it take
    /// effect, and healed it (µs since the Unix epoch, controller clock); absent when it
    /// did not get that far.
    pub requested_at_us: Option<i64>,
    pub issued_at_us: Option<i64>,
    pub confirmed_at_us: Option<i64>,
    pub healed_at_us: Option<i64>,
    /// Why it failed (injection, heal, or no answer).
    pub errors: Vec<String>,
    /// Messages by intended send time: in the stretch before the fault (since the
    /// previous mark), during it, and after it (until the next mark or the end).
    pub before: WindowStats,
    pub during: WindowStats,
    pub after: WindowStats,
    /// From the fault taking effect to the first second in which workers saw errors.
    pub first_error_after_ms: Option<u64>,
    /// From the heal to the first second that looked like before again: no errors,
    /// receptions at the offered rate (within 10 %) and response p99 within twice the
    /// p99 before the fault.
    pub recovered_after_ms: Option<u64>,
}

/// Messages with an intended send time in one window, and how they fared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WindowStats {
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub response_time_us: Percentiles,
}
