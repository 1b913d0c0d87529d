//! Reading and writing the results folder's JSON files through the typed model.

use crate::model::{Environment, PhaseResult, PlanResult, RunSummary, SCHEMA_VERSION};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    /// A missing, mistyped or impossible field; `field` is its path (`phases[0].kind`).
    #[error("{path}: {field}: {reason}")]
    Field {
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error(
        "{path}: schema_version {found} is not {SCHEMA_VERSION} (written by another maestro version)"
    )]
    Schema { path: PathBuf, found: u32 },
}

/// A file of the results folder that carries a `schema_version`.
pub trait Versioned {
    fn schema_version(&self) -> u32;
}

impl Versioned for RunSummary {
    fn schema_version(&self) -> u32 {
        self.schema_version
    }
}

impl Versioned for PlanResult {
    fn schema_version(&self) -> u32 {
        self.schema_version
    }
}

impl Versioned for Environment {
    fn schema_version(&self) -> u32 {
        self.schema_version
    }
}

/// Reads one JSON file as `T`: every field must be there with its type; the error names
/// the file and the field.
pub fn read<T: DeserializeOwned + Versioned>(path: &Path) -> Result<T, ResultsError> {
    let text = std::fs::read_to_string(path).map_err(|e| ResultsError::Read(path.into(), e))?;
    let mut de = serde_json::Deserializer::from_str(&text);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        ResultsError::Field {
            path: path.into(),
            field: if field == "." { "(file)".into() } else { field },
            reason: e.into_inner().to_string(),
        }
    })?;
    if value.schema_version() != SCHEMA_VERSION {
        return Err(ResultsError::Schema {
            path: path.into(),
            found: value.schema_version(),
        });
    }
    Ok(value)
}

/// Writes `value` as pretty JSON (with a final newline).
pub fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), ResultsError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| ResultsError::Field {
        path: path.into(),
        field: "(file)".into(),
        reason: e.to_string(),
    })?;
    text.push('\n');
    write_atomic(path, text.as_bytes()).map_err(|e| ResultsError::Write(path.into(), e))
}

/// Writes `bytes` to `path` whole or not at all: into a temporary file in the same folder,
/// synced, then renamed over `path`. A kill mid-write leaves the old file (or none), never
/// half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".maestro-")
        .suffix(".part")
        .tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A phase's `summary.json` has no version of its own: it is the plan's `phases[i]`.
pub fn write_phase(folder: &Path, phase: &PhaseResult) -> Result<(), ResultsError> {
    write(&folder.join("summary.json"), phase)
}

/// Reads a plan results folder's `summary.json`.
pub fn read_plan(folder: &Path) -> Result<PlanResult, ResultsError> {
    read(&folder.join("summary.json"))
}

/// Reads a run folder's `summary.json`.
pub fn read_run(folder: &Path) -> Result<RunSummary, ResultsError> {
    read(&folder.join("summary.json"))
}

/// Reads a run folder's `spec.json` (the spec as run); the error names the field.
pub fn read_spec(folder: &Path) -> Result<maestro_protocol::TestSpec, ResultsError> {
    let path = folder.join("spec.json");
    let text = std::fs::read_to_string(&path).map_err(|e| ResultsError::Read(path.clone(), e))?;
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(&text)).map_err(|e| {
        ResultsError::Field {
            path: path.clone(),
            field: e.path().to_string(),
            reason: e.inner().to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn summary() -> RunSummary {
        RunSummary {
            measured_s: 3.0,
            sent: 10,
            received: 10,
            offered_rate: 10.0,
            achieved_rate: 3.3,
            achieved_fraction: Some(0.33),
            receive_rate: 3.3,
            achieved_bytes_rate: Some(330.0),
            receive_bytes_rate: Some(330.0),
            ..RunSummary::new("r1", "mqtt://h", "2026-11-28T00:00:00Z")
        }
    }

    fn dir(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("maestro-report-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_summary_round_trips_through_its_file() {
        let d = dir("round");
        let path = d.path().join("summary.json");
        write(&path, &summary()).unwrap();
        let back: RunSummary = read(&path).unwrap();
        assert_eq!(back, summary());
    }

    #[test]
    fn a_missing_or_mistyped_field_names_the_file_and_field() {
        let d = dir("bad");
        let path = d.path().join("summary.json");
        let mut v = serde_json::to_value(summary()).unwrap();
        v.as_object_mut().unwrap().remove("lost");
        std::fs::write(&path, v.to_string()).unwrap();
        let e = read::<RunSummary>(&path).unwrap_err().to_string();
        assert!(
            e.contains("summary.json") && e.contains("missing field `lost`"),
            "{e}"
        );

        let mut v = serde_json::to_value(summary()).unwrap();
        v["response_time_us"]["p99"] = serde_json::json!("fast");
        std::fs::write(&path, v.to_string()).unwrap();
        let e = read::<RunSummary>(&path).unwrap_err().to_string();
        assert!(e.contains("response_time_us.p99"), "{e}");

        let mut v = serde_json::to_value(summary()).unwrap();
        v["schema_version"] = serde_json::json!(99);
        std::fs::write(&path, v.to_string()).unwrap();
        let e = read::<RunSummary>(&path).unwrap_err().to_string();
        assert!(e.contains("schema_version 99"), "{e}");
    }
}
