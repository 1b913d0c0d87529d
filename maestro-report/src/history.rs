//! The results index and the gate over history. `index.sqlite` (SQLite, bundled) sits
//! beside the results folders, which stay the source of truth: the index is rebuilt from
//! them at any time ([`Index::rebuild`]), and every finished run or plan adds its row
//! ([`Index::add`]). A plan's history is its earlier runs against the same SUT; a new
//! plan result is judged against the noise band of the last N of them ([`judge`]).

use crate::compare::metrics;
use crate::folder::{ResultsError, read_plan, read_run};
use crate::model::{PlanResult, RunSummary};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The index's file name, in the results folder.
pub const INDEX_FILE: &str = "index.sqlite";

/// The fewest earlier runs a noise band is drawn from.
pub const MIN_HISTORY: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("results index {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot list the results folder {0}: {1}")]
    List(PathBuf, std::io::Error),
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error("{folder} is not a folder inside the results folder {root}")]
    Outside { folder: PathBuf, root: PathBuf },
}

/// What an indexed folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    /// A plan's results (`maestro-cli run`).
    Plan,
    /// One run (`maestro-cli start`).
    Run,
}

impl RunKind {
    fn as_str(self) -> &'static str {
        match self {
            RunKind::Plan => "plan",
            RunKind::Run => "run",
        }
    }
}

/// One indexed results folder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    /// The folder, relative to the results folder.
    pub folder: String,
    pub run_id: String,
    pub kind: RunKind,
    /// The plan's name (plans only).
    pub plan: Option<String>,
    pub started_at: String,
    /// The SUT URL without its password.
    pub sut: String,
    /// The SUT as history matches it: its URL, with `local` for the host of an embedded
    /// broker (a new port each run).
    pub sut_key: String,
    pub sut_name: String,
    pub sut_version: String,
    pub maestro_version: String,
    pub tags: Vec<String>,
    /// The plan's verdict; a run passes when it was neither degraded nor lost messages.
    pub passed: bool,
    /// The environment it ran in, as text: maestro's version, the SUT, its name and
    /// version, the workers' hosts with their cores and kernel. Runs with the same
    /// fingerprint are alike.
    pub fingerprint: String,
    /// The largest clock offset of a worker from the controller, either way, µs (plans;
    /// none when no worker's offset was measured).
    pub clock_offset_us: Option<i64>,
}

/// One phase of an indexed folder (a single run is one phase, `0 run`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseRow {
    pub phase: u32,
    pub kind: String,
    pub judged: bool,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// The achieved rate, or the knee of a search.
    pub rate: f64,
    pub lost: f64,
    pub errors: f64,
    /// The largest share of the run a worker's data-plane threads waited for a CPU (the
    /// generator's `waited_max`); none when the result has no generator figures.
    pub cpu_wait: Option<f64>,
    /// The share of messages the SUT held back (its window or socket stayed full: its
    /// back-pressure); none without generator figures.
    pub held_back: Option<f64>,
}

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rebuilt {
    pub indexed: usize,
    /// Folders that are not results (or unreadable ones), with why.
    pub skipped: Vec<(String, String)>,
}

/// Which runs a list shows; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub plan: Option<String>,
    /// A part of the SUT URL.
    pub sut: Option<String>,
    pub tag: Option<String>,
    pub passed: Option<bool>,
    /// Started at or after this (RFC 3339, or its date part).
    pub since: Option<String>,
    /// Started before this.
    pub until: Option<String>,
    /// The newest this many (default 100).
    pub limit: Option<usize>,
}

/// The layout of the tables below; an index of another one is rebuilt.
const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    folder TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    plan TEXT,
    started_at TEXT NOT NULL,
    sut TEXT NOT NULL,
    sut_key TEXT NOT NULL,
    sut_name TEXT NOT NULL,
    sut_version TEXT NOT NULL,
    maestro_version TEXT NOT NULL,
    tags TEXT NOT NULL,
    passed INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    clock_offset_us INTEGER
);
CREATE TABLE IF NOT EXISTS phases (
    folder TEXT NOT NULL REFERENCES runs(folder) ON DELETE CASCADE,
    phase INTEGER NOT NULL,
    kind TEXT NOT NULL,
    judged INTEGER NOT NULL,
    p50_ms REAL NOT NULL,
    p99_ms REAL NOT NULL,
    p999_ms REAL NOT NULL,
    rate REAL NOT NULL,
    lost REAL NOT NULL,
    errors REAL NOT NULL,
    cpu_wait REAL,
    held_back REAL,
    PRIMARY KEY (folder, phase)
);
CREATE INDEX IF NOT EXISTS runs_by_plan ON runs (plan, sut_key, started_at);
CREATE INDEX IF NOT EXISTS runs_by_start ON runs (started_at);
PRAGMA foreign_keys = ON;
";

/// The results index of one results folder.
#[derive(Debug)]
pub struct Index {
    conn: Connection,
    root: PathBuf,
    path: PathBuf,
    /// True when the file did not exist before [`Index::open`].
    pub created: bool,
}

/// A folder's rows, read from its files.
struct Entry {
    run: RunRow,
    phases: Vec<PhaseRow>,
}

impl Index {
    /// Opens (or creates) `<root>/index.sqlite`.
    pub fn open(root: &Path) -> Result<Self, HistoryError> {
        let path = root.join(INDEX_FILE);
        let created = !path.exists();
        let db = |source| HistoryError::Db {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db)?;
        // The index is a cache of the folders: one of another layout is dropped and
        // built again (the caller rebuilds an index it is told was created).
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(db)?;
        let stale = !created && version != SCHEMA_VERSION;
        if stale {
            conn.execute_batch("DROP TABLE IF EXISTS phases; DROP TABLE IF EXISTS runs;")
                .map_err(db)?;
        }
        conn.execute_batch(SCHEMA).map_err(db)?;
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .map_err(db)?;
        Ok(Index {
            conn,
            root: root.to_owned(),
            path,
            created: created || stale,
        })
    }

    fn db(&self, source: rusqlite::Error) -> HistoryError {
        HistoryError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// Forgets everything and indexes every results folder directly inside the root.
    pub fn rebuild(&mut self) -> Result<Rebuilt, HistoryError> {
        let mut folders: Vec<PathBuf> = std::fs::read_dir(&self.root)
            .map_err(|e| HistoryError::List(self.root.clone(), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        folders.sort();
        let mut entries = Vec::new();
        let mut skipped = Vec::new();
        for folder in &folders {
            let name = folder
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !folder.join("summary.json").is_file() {
                skipped.push((name, "no summary.json".to_owned()));
                continue;
            }
            match entry(folder, name.clone()) {
                Ok(e) => entries.push(e),
                Err(e) => skipped.push((name, e.to_string())),
            }
        }
        let tx = self.conn.transaction().map_err(|e| HistoryError::Db {
            path: self.path.clone(),
            source: e,
        })?;
        let result = (|| {
            tx.execute("DELETE FROM phases", [])?;
            tx.execute("DELETE FROM runs", [])?;
            for e in &entries {
                insert(&tx, e)?;
            }
            tx.commit()
        })();
        result.map_err(|e| self.db(e))?;
        Ok(Rebuilt {
            indexed: entries.len(),
            skipped,
        })
    }

    /// Adds (or replaces) one results folder inside the root.
    pub fn add(&mut self, folder: &Path) -> Result<RunRow, HistoryError> {
        let name = self.relative(folder)?;
        let e = entry(folder, name)?;
        let tx = self.conn.transaction().map_err(|e| HistoryError::Db {
            path: self.path.clone(),
            source: e,
        })?;
        let result = (|| {
            insert(&tx, &e)?;
            tx.commit()
        })();
        result.map_err(|err| self.db(err))?;
        Ok(e.run)
    }

    /// `folder`'s name when it is directly inside the root.
    fn relative(&self, folder: &Path) -> Result<String, HistoryError> {
        let outside = || HistoryError::Outside {
            folder: folder.to_owned(),
            root: self.root.clone(),
        };
        let canon = |p: &Path| std::fs::canonicalize(p).map_err(|_| outside());
        let (f, r) = (canon(folder)?, canon(&self.root)?);
        if f.parent() != Some(r.as_path()) {
            return Err(outside());
        }
        Ok(f.file_name()
            .ok_or_else(outside)?
            .to_string_lossy()
            .into_owned())
    }

    /// How many folders are indexed.
    pub fn len(&self) -> Result<usize, HistoryError> {
        self.conn
            .query_row("SELECT count(*) FROM runs", [], |r| r.get::<_, i64>(0))
            .map(|n| n as usize)
            .map_err(|e| self.db(e))
    }

    pub fn is_empty(&self) -> Result<bool, HistoryError> {
        self.len().map(|n| n == 0)
    }

    /// The runs `filter` lets through, newest first.
    pub fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>, HistoryError> {
        let mut sql = String::from("SELECT * FROM runs WHERE 1 = 1");
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
        if let Some(p) = &filter.plan {
            sql.push_str(" AND plan = ?");
            args.push(Box::new(p.clone()));
        }
        if let Some(s) = &filter.sut {
            sql.push_str(" AND instr(sut, ?) > 0");
            args.push(Box::new(s.clone()));
        }
        if let Some(t) = &filter.tag {
            sql.push_str(" AND instr(',' || tags || ',', ?) > 0");
            args.push(Box::new(format!(",{t},")));
        }
        if let Some(p) = filter.passed {
            sql.push_str(" AND passed = ?");
            args.push(Box::new(p));
        }
        if let Some(s) = &filter.since {
            sql.push_str(" AND started_at >= ?");
            args.push(Box::new(s.clone()));
        }
        if let Some(u) = &filter.until {
            sql.push_str(" AND started_at < ?");
            args.push(Box::new(u.clone()));
        }
        sql.push_str(" ORDER BY started_at DESC, folder DESC LIMIT ?");
        args.push(Box::new(filter.limit.unwrap_or(100) as i64));
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), run_row)
            .map_err(|e| self.db(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db(e))
    }

    /// One folder's row and phases, when it is indexed.
    pub fn run(&self, folder: &str) -> Result<Option<(RunRow, Vec<PhaseRow>)>, HistoryError> {
        let run = self
            .conn
            .query_row("SELECT * FROM runs WHERE folder = ?", [folder], run_row)
            .optional()
            .map_err(|e| self.db(e))?;
        match run {
            Some(r) => {
                let phases = self.phases(folder)?;
                Ok(Some((r, phases)))
            }
            None => Ok(None),
        }
    }

    fn phases(&self, folder: &str) -> Result<Vec<PhaseRow>, HistoryError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT phase, kind, judged, p50_ms, p99_ms, p999_ms, rate, lost, errors, cpu_wait, held_back
                 FROM phases WHERE folder = ? ORDER BY phase",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map([folder], |r| {
                Ok(PhaseRow {
                    phase: r.get(0)?,
                    kind: r.get(1)?,
                    judged: r.get(2)?,
                    p50_ms: r.get(3)?,
                    p99_ms: r.get(4)?,
                    p999_ms: r.get(5)?,
                    rate: r.get(6)?,
                    lost: r.get(7)?,
                    errors: r.get(8)?,
                    cpu_wait: r.get(9)?,
                    held_back: r.get(10)?,
                })
            })
            .map_err(|e| self.db(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db(e))
    }

    /// The last `n` runs of `plan` against the SUT `sut_key` ([`RunRow::sut_key`]) that
    /// started before `before` (not `folder` itself), newest first, with their phases:
    /// the history a new result is judged against.
    pub fn history(
        &self,
        (plan, sut_key): (&str, &str),
        (before, folder): (&str, &str),
        n: usize,
    ) -> Result<Vec<(RunRow, Vec<PhaseRow>)>, HistoryError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT * FROM runs WHERE plan = ? AND sut_key = ? AND started_at <= ? AND folder != ?
                 ORDER BY started_at DESC, folder DESC LIMIT ?",
            )
            .map_err(|e| self.db(e))?;
        let runs: Vec<RunRow> = stmt
            .query_map(params![plan, sut_key, before, folder, n as i64], run_row)
            .map_err(|e| self.db(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.db(e))?;
        runs.into_iter()
            .map(|r| {
                let phases = self.phases(&r.folder)?;
                Ok((r, phases))
            })
            .collect()
    }

    /// A plan's phase metric over its runs against `sut` (all SUTs when `None`), oldest
    /// first: (started_at, folder, fingerprint, value).
    pub fn trend(
        &self,
        plan: &str,
        sut: Option<&str>,
        (phase, metric): (u32, Metric),
    ) -> Result<Vec<(String, String, String, f64)>, HistoryError> {
        let sql = format!(
            "SELECT r.started_at, r.folder, r.fingerprint, p.{}
             FROM runs r JOIN phases p ON p.folder = r.folder
             WHERE r.plan = ?1 AND p.phase = ?2 AND (?3 IS NULL OR r.sut_key = ?3)
             ORDER BY r.started_at, r.folder",
            metric.column()
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map(params![plan, phase, sut], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .map_err(|e| self.db(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db(e))
    }
}

impl Index {
    /// Every plan in the index with how many runs it has and when it last ran, by name.
    pub fn plans(&self) -> Result<Vec<PlanCount>, HistoryError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT plan, count(*), max(started_at) FROM runs WHERE plan IS NOT NULL
                 GROUP BY plan ORDER BY plan",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(PlanCount {
                    plan: r.get(0)?,
                    runs: r.get::<_, i64>(1)? as usize,
                    last: r.get(2)?,
                })
            })
            .map_err(|e| self.db(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db(e))
    }

    /// Every run of `plan` (against `sut_key` only, when given) with its phases, oldest
    /// first: what a trend is drawn from. One query, however many runs.
    pub fn plan_runs(
        &self,
        plan: &str,
        sut_key: Option<&str>,
    ) -> Result<Vec<(RunRow, Vec<PhaseRow>)>, HistoryError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT r.*, p.phase AS p_phase, p.kind AS p_kind, p.judged AS p_judged,
                        p.p50_ms AS p_p50, p.p99_ms AS p_p99, p.p999_ms AS p_p999,
                        p.rate AS p_rate, p.lost AS p_lost, p.errors AS p_errors, p.cpu_wait AS p_cpu_wait, p.held_back AS p_held_back
                 FROM runs r LEFT JOIN phases p ON p.folder = r.folder
                 WHERE r.plan = ?1 AND (?2 IS NULL OR r.sut_key = ?2)
                 ORDER BY r.started_at, r.folder, p.phase",
            )
            .map_err(|e| self.db(e))?;
        let mut rows = stmt.query(params![plan, sut_key]).map_err(|e| self.db(e))?;
        let mut out: Vec<(RunRow, Vec<PhaseRow>)> = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.db(e))? {
            let folder: String = r.get("folder").map_err(|e| self.db(e))?;
            if out.last().is_none_or(|(last, _)| last.folder != folder) {
                out.push((run_row(r).map_err(|e| self.db(e))?, Vec::new()));
            }
            let phase: Option<u32> = r.get("p_phase").map_err(|e| self.db(e))?;
            if let (Some(phase), Some((_, phases))) = (phase, out.last_mut()) {
                let row = (|| {
                    Ok::<_, rusqlite::Error>(PhaseRow {
                        phase,
                        kind: r.get("p_kind")?,
                        judged: r.get("p_judged")?,
                        p50_ms: r.get("p_p50")?,
                        p99_ms: r.get("p_p99")?,
                        p999_ms: r.get("p_p999")?,
                        rate: r.get("p_rate")?,
                        lost: r.get("p_lost")?,
                        errors: r.get("p_errors")?,
                        cpu_wait: r.get("p_cpu_wait")?,
                        held_back: r.get("p_held_back")?,
                    })
                })()
                .map_err(|e| self.db(e))?;
                phases.push(row);
            }
        }
        Ok(out)
    }
}

/// A plan of the index.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanCount {
    pub plan: String,
    pub runs: usize,
    /// When its newest run started.
    pub last: String,
}

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    let kind: String = r.get("kind")?;
    let tags: String = r.get("tags")?;
    Ok(RunRow {
        folder: r.get("folder")?,
        run_id: r.get("run_id")?,
        kind: if kind == "plan" {
            RunKind::Plan
        } else {
            RunKind::Run
        },
        plan: r.get("plan")?,
        started_at: r.get("started_at")?,
        sut: r.get("sut")?,
        sut_key: r.get("sut_key")?,
        sut_name: r.get("sut_name")?,
        sut_version: r.get("sut_version")?,
        maestro_version: r.get("maestro_version")?,
        tags: tags
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        passed: r.get("passed")?,
        fingerprint: r.get("fingerprint")?,
        clock_offset_us: r.get("clock_offset_us")?,
    })
}

fn insert(tx: &rusqlite::Transaction<'_>, e: &Entry) -> rusqlite::Result<()> {
    let r = &e.run;
    tx.execute("DELETE FROM phases WHERE folder = ?", [&r.folder])?;
    tx.execute(
        "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        params![
            r.folder,
            r.run_id,
            r.kind.as_str(),
            r.plan,
            r.started_at,
            r.sut,
            r.sut_key,
            r.sut_name,
            r.sut_version,
            r.maestro_version,
            r.tags.join(","),
            r.passed,
            r.fingerprint,
            r.clock_offset_us
        ],
    )?;
    let mut stmt =
        tx.prepare_cached("INSERT INTO phases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")?;
    for p in &e.phases {
        stmt.execute(params![
            r.folder,
            p.phase,
            p.kind,
            p.judged,
            p.p50_ms,
            p.p99_ms,
            p.p999_ms,
            p.rate,
            p.lost,
            p.errors,
            p.cpu_wait,
            p.held_back
        ])?;
    }
    Ok(())
}

/// Reads a folder: a plan's results, or (with its `spec.json`) a single run.
fn entry(folder: &Path, name: String) -> Result<Entry, HistoryError> {
    if folder.join("spec.json").is_file() {
        let s = read_run(folder)?;
        return Ok(run_entry(&s, name));
    }
    let p = read_plan(folder)?;
    Ok(plan_entry(&p, name))
}

fn plan_entry(p: &PlanResult, folder: String) -> Entry {
    let env = &p.environment;
    // A host with its machine: `vm (2 cores, 6.1.0-18-amd64)`.
    let mut hosts: Vec<String> = env
        .workers
        .iter()
        .map(|w| match (w.cores, &w.kernel) {
            (Some(c), Some(k)) => format!("{} ({c} cores, {k})", w.host),
            (Some(c), None) => format!("{} ({c} cores)", w.host),
            (None, Some(k)) => format!("{} ({k})", w.host),
            (None, None) => w.host.clone(),
        })
        .collect();
    hosts.sort_unstable();
    hosts.dedup();
    let clock_offset_us = env
        .workers
        .iter()
        .filter_map(|w| w.clock_offset_us)
        .max_by_key(|o| o.unsigned_abs());
    let sut_key = if env.local {
        local_key(&env.sut)
    } else {
        env.sut.clone()
    };
    let fingerprint = format!(
        "maestro {} | {} {} | {} | workers on {}",
        env.maestro_version,
        env.sut_name,
        env.sut_version,
        sut_key,
        hosts.join(",")
    );
    let phases = p
        .phases
        .iter()
        .filter_map(|ph| {
            let m = metrics(ph)?;
            Some(PhaseRow {
                phase: ph.index as u32,
                kind: ph.kind.to_string(),
                judged: ph.judged,
                p50_ms: m.p50_ms,
                p99_ms: m.p99_ms,
                p999_ms: m.p999_ms,
                rate: m.rate,
                lost: m.lost,
                errors: m.errors,
                cpu_wait: cpu_wait(ph),
                held_back: ph
                    .deciding_probe()
                    .and_then(|p| p.summary.generator.as_ref())
                    .map(|g| g.held_back_fraction),
            })
        })
        .collect();
    Entry {
        run: RunRow {
            folder,
            run_id: p.run_id.clone(),
            kind: RunKind::Plan,
            plan: Some(p.plan.clone()),
            started_at: p.started_at.clone(),
            sut: env.sut.clone(),
            sut_key,
            sut_name: env.sut_name.clone(),
            sut_version: env.sut_version.clone(),
            maestro_version: env.maestro_version.clone(),
            tags: p.tags.clone(),
            passed: p.passed,
            fingerprint,
            clock_offset_us,
        },
        phases,
    }
}

fn run_entry(s: &RunSummary, folder: String) -> Entry {
    let ms = |us: u64| us as f64 / 1000.0;
    let mut hosts: Vec<&str> = s.workers.iter().map(|w| w.name.as_str()).collect();
    hosts.sort_unstable();
    Entry {
        run: RunRow {
            folder,
            run_id: s.run_id.clone(),
            kind: RunKind::Run,
            plan: None,
            started_at: s.started_at.clone(),
            sut: s.sut.clone(),
            sut_key: s.sut.clone(),
            sut_name: String::new(),
            sut_version: String::new(),
            maestro_version: String::new(),
            tags: Vec::new(),
            passed: !s.degraded && s.lost == 0,
            fingerprint: format!("{} | workers {}", s.sut, hosts.join(",")),
            clock_offset_us: None,
        },
        phases: vec![PhaseRow {
            phase: 0,
            kind: "run".to_owned(),
            judged: true,
            p50_ms: ms(s.response_time_us.p50),
            p99_ms: ms(s.response_time_us.p99),
            p999_ms: ms(s.response_time_us.p999),
            rate: s.achieved_rate,
            lost: s.lost as f64,
            errors: s.errors as f64,
            cpu_wait: s.generator.as_ref().and_then(waited),
            held_back: s.generator.as_ref().map(|g| g.held_back_fraction),
        }],
    }
}

/// The largest CPU wait of a generator's workers.
fn waited(g: &crate::model::GeneratorVerdict) -> Option<f64> {
    g.workers.iter().map(|w| w.waited_max).reduce(f64::max)
}

/// A phase's CPU wait: its deciding probe's generator's.
fn cpu_wait(phase: &crate::model::PhaseResult) -> Option<f64> {
    phase
        .deciding_probe()
        .and_then(|p| p.summary.generator.as_ref())
        .and_then(waited)
}

/// Why a new run's latency and rate cannot be judged: its workers waited for a CPU well
/// beyond what they did in its history (at least twice as long, and 5 points more), so
/// the machine, not the SUT, may have slowed it; unless the SUT held the producers back
/// (`held_back` above 1 %): its back-pressure says the SUT was slow, whatever else the
/// machine did. Lost messages and errors are judged all the same.
pub fn busy_machine(history: &[f64], new: Option<f64>, held_back: Option<f64>) -> Option<String> {
    let new = new?;
    if held_back.is_some_and(|h| h > 0.01) {
        return None;
    }
    if history.len() < MIN_HISTORY {
        return None;
    }
    let usual = median(history);
    (new > (2.0 * usual).max(usual + 0.05)).then(|| {
        format!(
            "inconclusive: its workers waited for a CPU {:.0} % of the run against {:.0} % in its history (the machine was busy; it may have slowed the run, not the SUT)",
            new * 100.0,
            usual * 100.0
        )
    })
}

/// `scheme://local/path?query` for an embedded broker's `scheme://host:port/path?query`.
fn local_key(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let tail = rest.find(['/', '?']).map_or("", |i| &rest[i..]);
    format!("{scheme}://local{tail}")
}

/// A metric a phase is trended and judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    ResponseTimeP50Ms,
    ResponseTimeP99Ms,
    ResponseTimeP999Ms,
    Rate,
    Lost,
    Errors,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Metric::ResponseTimeP50Ms,
        Metric::ResponseTimeP99Ms,
        Metric::ResponseTimeP999Ms,
        Metric::Rate,
        Metric::Lost,
        Metric::Errors,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::ResponseTimeP50Ms => "response_time_p50_ms",
            Metric::ResponseTimeP99Ms => "response_time_p99_ms",
            Metric::ResponseTimeP999Ms => "response_time_p999_ms",
            Metric::Rate => "rate",
            Metric::Lost => "lost",
            Metric::Errors => "errors",
        }
    }

    fn column(self) -> &'static str {
        match self {
            Metric::ResponseTimeP50Ms => "p50_ms",
            Metric::ResponseTimeP99Ms => "p99_ms",
            Metric::ResponseTimeP999Ms => "p999_ms",
            Metric::Rate => "rate",
            Metric::Lost => "lost",
            Metric::Errors => "errors",
        }
    }

    fn of(self, p: &PhaseRow) -> f64 {
        match self {
            Metric::ResponseTimeP50Ms => p.p50_ms,
            Metric::ResponseTimeP99Ms => p.p99_ms,
            Metric::ResponseTimeP999Ms => p.p999_ms,
            Metric::Rate => p.rate,
            Metric::Lost => p.lost,
            Metric::Errors => p.errors,
        }
    }

    /// Higher is worse (latency, loss); lower is worse for the rate.
    fn higher_is_worse(self) -> bool {
        self != Metric::Rate
    }

    /// The band never narrows below this fraction of the median: a history of nearly
    /// equal runs must not flag a change the machine's noise makes, nor one within what
    /// `compare` tolerates between two runs by default (10 % latency, 5 % rate).
    fn floor(self) -> f64 {
        match self {
            Metric::Rate => 0.05,
            Metric::Lost | Metric::Errors => 0.0,
            _ => 0.10,
        }
    }

    /// The tail beyond p99 is too noisy on short runs to gate on: shown, not judged.
    fn gates(self) -> bool {
        self != Metric::ResponseTimeP999Ms
    }

    pub fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// Where earlier runs put a metric: their median and the band around it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Band {
    pub median: f64,
    pub low: f64,
    pub high: f64,
    /// Earlier runs it was drawn from.
    pub runs: usize,
}

/// The band of `values`: the median ± 3 scaled median absolute deviations (a robust
/// z-score of 3: outliers in the history do not widen it the way a standard deviation
/// would), at least ± the metric's floor of the median; lost messages and errors have a
/// band up to the most an earlier run had.
pub fn band(metric: Metric, values: &[f64]) -> Option<Band> {
    if values.len() < MIN_HISTORY {
        return None;
    }
    let med = median(values);
    if matches!(metric, Metric::Lost | Metric::Errors) {
        let max = values.iter().copied().fold(0.0, f64::max);
        return Some(Band {
            median: med,
            low: 0.0,
            high: max,
            runs: values.len(),
        });
    }
    let deviations: Vec<f64> = values.iter().map(|v| (v - med).abs()).collect();
    let mad = median(&deviations) * 1.4826;
    let half = (3.0 * mad).max(metric.floor() * med.abs());
    Some(Band {
        median: med,
        low: med - half,
        high: med + half,
        runs: values.len(),
    })
}

fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One metric of one phase of a new result against its history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// `<index> <kind>`.
    pub phase: String,
    pub metric: Metric,
    pub new: f64,
    pub band: Band,
    /// Outside the band on the worse side, for a metric that gates.
    pub regressed: bool,
    /// Outside on the worse side, but not judged: why (the machine was busy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inconclusive: Option<String>,
}

impl Finding {
    /// One line for people.
    pub fn describe(&self) -> String {
        format!(
            "phase {}: {} {:.3} is outside the band {:.3}..{:.3} of the last {} runs (median {:.3})",
            self.phase,
            self.metric.as_str(),
            self.new,
            self.band.low,
            self.band.high,
            self.band.runs,
            self.band.median
        )
    }
}

/// Judges `new`'s judged phases against the same phases (index and kind) of `history`:
/// one finding per phase and metric that has at least [`MIN_HISTORY`] earlier values.
pub fn judge(history: &[Vec<PhaseRow>], new: &[PhaseRow]) -> Vec<Finding> {
    let mut out = Vec::new();
    for np in new.iter().filter(|p| p.judged) {
        let earlier: Vec<&PhaseRow> = history
            .iter()
            .filter_map(|phases| {
                phases
                    .iter()
                    .find(|p| p.phase == np.phase && p.kind == np.kind)
            })
            .collect();
        let waits: Vec<f64> = earlier.iter().filter_map(|p| p.cpu_wait).collect();
        let busy = busy_machine(&waits, np.cpu_wait, np.held_back);
        for metric in Metric::ALL {
            let values: Vec<f64> = earlier.iter().map(|p| metric.of(p)).collect();
            let Some(band) = band(metric, &values) else {
                continue;
            };
            let v = metric.of(np);
            let (regressed, inconclusive) = verdict(metric, v, &band, busy.as_ref());
            out.push(Finding {
                phase: format!("{} {}", np.phase, np.kind),
                metric,
                new: v,
                regressed,
                inconclusive,
                band,
            });
        }
    }
    out
}

/// (regressed, inconclusive) of a value against its band, when the machine may have been
/// `busy`: latency and rate outside their band then are not judged.
fn verdict(metric: Metric, v: f64, band: &Band, busy: Option<&String>) -> (bool, Option<String>) {
    let outside = metric.gates() && worse(metric, v, band);
    match busy {
        Some(why) if outside && !matches!(metric, Metric::Lost | Metric::Errors) => {
            (false, Some(why.clone()))
        }
        _ => (outside, None),
    }
}

/// Whether `v` is outside `band` on the metric's worse side.
fn worse(metric: Metric, v: f64, band: &Band) -> bool {
    if metric.higher_is_worse() {
        v > band.high
    } else {
        v < band.low
    }
}

/// What the trends and the gate call a regression, in one line.
pub const TEST: &str = "outside the band of the last N runs of the same plan against the same SUT: their median ± 3 scaled median absolute deviations (a robust z-score of 3), at least ±10 % for latency and ±5 % for the rate; lost and errors: above the most an earlier run had; p99.9 is shown, not judged; latency and rate are not judged (inconclusive) when the run's workers waited for a CPU at least twice as long as in its history and 5 points more while the SUT held no producer back";

/// One run's value of a trended metric, judged against the runs before it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrendPoint {
    pub folder: String,
    pub started_at: String,
    pub fingerprint: String,
    pub value: f64,
    /// The band of the up to N runs before this one (none with fewer than
    /// [`MIN_HISTORY`]).
    pub band: Option<Band>,
    /// Outside its band on the worse side (for a metric that gates).
    pub regressed: bool,
    /// Outside on the worse side, but not judged: why (the machine was busy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inconclusive: Option<String>,
    /// None of the runs its band was drawn from ran in this run's environment.
    pub environment_changed: bool,
}

/// One metric of one phase of a plan against one SUT, over its runs, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrendSeries {
    pub sut_key: String,
    /// `<index> <kind>`.
    pub phase: String,
    pub metric: Metric,
    /// Whether a point outside its band is a regression (p99.9 is only shown).
    pub gates: bool,
    pub points: Vec<TrendPoint>,
}

impl TrendSeries {
    /// The points flagged as regressions.
    pub fn regressions(&self) -> impl Iterator<Item = &TrendPoint> {
        self.points.iter().filter(|p| p.regressed)
    }
}

/// A plan's trends: for each SUT, judged phase and metric, every run's value against the
/// band of the `n` runs before it (the same test as [`judge`]). `runs` are one plan's,
/// oldest first ([`Index::plan_runs`]).
pub fn trends(runs: &[(RunRow, Vec<PhaseRow>)], n: usize) -> Vec<TrendSeries> {
    let mut suts: Vec<&str> = Vec::new();
    for (r, _) in runs {
        if !suts.contains(&r.sut_key.as_str()) {
            suts.push(&r.sut_key);
        }
    }
    let mut out = Vec::new();
    for sut in suts {
        let of_sut: Vec<&(RunRow, Vec<PhaseRow>)> =
            runs.iter().filter(|(r, _)| r.sut_key == sut).collect();
        let mut phases: Vec<(u32, &str)> = of_sut
            .iter()
            .flat_map(|(_, ps)| ps.iter().filter(|p| p.judged))
            .map(|p| (p.phase, p.kind.as_str()))
            .collect();
        phases.sort_unstable();
        phases.dedup();
        for (phase, kind) in phases {
            let values: Vec<(&RunRow, &PhaseRow)> = of_sut
                .iter()
                .filter_map(|(r, ps)| {
                    ps.iter()
                        .find(|p| p.phase == phase && p.kind == kind)
                        .map(|p| (r, p))
                })
                .collect();
            for metric in Metric::ALL {
                let points = values
                    .iter()
                    .enumerate()
                    .map(|(i, (r, p))| {
                        let before = &values[i.saturating_sub(n)..i];
                        let history: Vec<f64> = before.iter().map(|(_, p)| metric.of(p)).collect();
                        let value = metric.of(p);
                        let band = band(metric, &history);
                        let waits: Vec<f64> =
                            before.iter().filter_map(|(_, p)| p.cpu_wait).collect();
                        let busy = busy_machine(&waits, p.cpu_wait, p.held_back);
                        let (regressed, inconclusive) = band
                            .as_ref()
                            .map_or((false, None), |b| verdict(metric, value, b, busy.as_ref()));
                        TrendPoint {
                            folder: r.folder.clone(),
                            started_at: r.started_at.clone(),
                            fingerprint: r.fingerprint.clone(),
                            value,
                            regressed,
                            inconclusive,
                            environment_changed: !before.is_empty()
                                && before.iter().all(|(b, _)| b.fingerprint != r.fingerprint),
                            band,
                        }
                    })
                    .collect();
                out.push(TrendSeries {
                    sut_key: sut.to_owned(),
                    phase: format!("{phase} {kind}"),
                    metric,
                    gates: metric.gates(),
                    points,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(p99: f64, rate: f64, lost: f64) -> PhaseRow {
        PhaseRow {
            phase: 1,
            kind: "fixed".into(),
            judged: true,
            p50_ms: p99 / 2.0,
            p99_ms: p99,
            p999_ms: p99 * 2.0,
            rate,
            lost,
            errors: 0.0,
            cpu_wait: Some(0.04),
            held_back: Some(0.0),
        }
    }

    #[test]
    fn an_embedded_broker_is_one_sut_whatever_its_port() {
        assert_eq!(
            local_key("mqtt://127.0.0.1:44997/quick?qos=1"),
            "mqtt://local/quick?qos=1"
        );
        assert_eq!(local_key("mqtt://u@h:1"), "mqtt://local");
        assert_eq!(local_key("nonsense"), "nonsense");
    }

    #[test]
    fn the_band_is_robust_to_an_outlier_and_never_narrower_than_its_floor() {
        let b = band(Metric::ResponseTimeP99Ms, &[1.0, 1.1, 0.9, 1.0, 50.0]).unwrap();
        assert_eq!(b.median, 1.0);
        assert!(b.high < 1.5, "one slow run must not widen the band: {b:?}");
        // Identical history: the band is the floor, 10 % of the median.
        let b = band(Metric::ResponseTimeP99Ms, &[2.0; 5]).unwrap();
        assert!(
            (b.high - 2.2).abs() < 1e-9 && (b.low - 1.8).abs() < 1e-9,
            "{b:?}"
        );
        let b = band(Metric::Rate, &[1000.0; 4]).unwrap();
        assert!((b.low - 950.0).abs() < 1e-9, "{b:?}");
        assert!(band(Metric::Rate, &[1.0, 2.0]).is_none(), "too few runs");
        let b = band(Metric::Lost, &[0.0, 0.0, 3.0]).unwrap();
        assert_eq!(b.high, 3.0);
    }

    #[test]
    fn a_slower_or_lossier_new_run_is_flagged_and_a_like_one_is_not() {
        let history: Vec<Vec<PhaseRow>> = [1.0, 1.05, 0.97, 1.02, 0.99]
            .iter()
            .map(|p99| vec![phase(*p99, 1000.0, 0.0)])
            .collect();
        let like = judge(&history, &[phase(1.03, 998.0, 0.0)]);
        assert_eq!(like.len(), Metric::ALL.len());
        assert!(like.iter().all(|f| !f.regressed), "{like:#?}");
        let slow = judge(&history, &[phase(3.0, 1000.0, 0.0)]);
        let flagged: Vec<&str> = slow
            .iter()
            .filter(|f| f.regressed)
            .map(|f| f.metric.as_str())
            .collect();
        // p999 is shown, not gated.
        assert_eq!(flagged, ["response_time_p50_ms", "response_time_p99_ms"]);
        let d = slow[1].describe();
        assert!(
            d.contains("phase 1 fixed") && d.contains("last 5 runs"),
            "{d}"
        );
        let lossy = judge(&history, &[phase(1.0, 900.0, 2.0)]);
        let flagged: Vec<&str> = lossy
            .iter()
            .filter(|f| f.regressed)
            .map(|f| f.metric.as_str())
            .collect();
        assert_eq!(flagged, ["rate", "lost"]);
        // A faster run is never a regression.
        let fast = judge(&history, &[phase(0.2, 1500.0, 0.0)]);
        assert!(fast.iter().all(|f| !f.regressed), "{fast:#?}");
        // Another phase has no history: nothing to judge.
        let mut other = phase(9.0, 1.0, 9.0);
        other.phase = 2;
        assert!(judge(&history, &[other]).is_empty());
    }

    fn run(folder: &str, sut: &str, fingerprint: &str) -> RunRow {
        RunRow {
            folder: folder.into(),
            run_id: folder.into(),
            kind: RunKind::Plan,
            plan: Some("p".into()),
            started_at: folder.into(),
            sut: sut.into(),
            sut_key: sut.into(),
            sut_name: String::new(),
            sut_version: String::new(),
            maestro_version: String::new(),
            tags: Vec::new(),
            passed: true,
            fingerprint: fingerprint.into(),
            clock_offset_us: None,
        }
    }

    #[test]
    fn a_trend_judges_each_run_against_the_runs_before_it_per_sut() {
        let mut runs: Vec<(RunRow, Vec<PhaseRow>)> = [1.0, 1.05, 0.97, 1.02, 4.0, 1.0]
            .iter()
            .enumerate()
            .map(|(i, p99)| {
                (
                    run(&format!("t{i}"), "a", "e1"),
                    vec![phase(*p99, 1000.0, 0.0)],
                )
            })
            .collect();
        // Another SUT is its own trend, and too short for a band.
        runs.push((run("t9", "b", "e1"), vec![phase(50.0, 10.0, 0.0)]));
        // A run in another environment.
        runs.push((run("t10", "a", "e2"), vec![phase(1.0, 1000.0, 0.0)]));
        let series = trends(&runs, 3);
        assert_eq!(series.len(), 2 * Metric::ALL.len());
        let p99 = series
            .iter()
            .find(|s| s.sut_key == "a" && s.metric == Metric::ResponseTimeP99Ms)
            .unwrap();
        assert_eq!(p99.points.len(), 7);
        assert!(
            p99.points[..3].iter().all(|p| p.band.is_none()),
            "fewer than 3 before"
        );
        let flagged: Vec<&str> = p99.regressions().map(|p| p.folder.as_str()).collect();
        assert_eq!(flagged, ["t4"]);
        // The run after the slow one is judged against a band the slow one is in, and
        // the median keeps it in.
        assert!(!p99.points[5].regressed);
        assert!(p99.points[6].environment_changed && !p99.points[5].environment_changed);
        let b = series.iter().find(|s| s.sut_key == "b").unwrap();
        assert!(b.points.iter().all(|p| p.band.is_none() && !p.regressed));
        // p99.9 is drawn, never flagged.
        let p999 = series
            .iter()
            .find(|s| s.sut_key == "a" && s.metric == Metric::ResponseTimeP999Ms)
            .unwrap();
        assert!(!p999.gates && p999.regressions().count() == 0);
    }

    #[test]
    fn an_index_of_another_layout_is_dropped_and_reported_as_new() {
        let dir = tempfile::tempdir().unwrap();
        let first = Index::open(dir.path()).unwrap();
        assert!(first.created);
        drop(first);
        assert!(!Index::open(dir.path()).unwrap().created);
        let conn = Connection::open(dir.path().join(INDEX_FILE)).unwrap();
        conn.execute_batch("PRAGMA user_version = 1").unwrap();
        drop(conn);
        let again = Index::open(dir.path()).unwrap();
        assert!(again.created, "an older layout is rebuilt by its caller");
        assert!(again.is_empty().unwrap());
    }

    #[test]
    fn a_run_on_a_busy_machine_is_inconclusive_on_latency_but_judged_on_loss() {
        let history: Vec<Vec<PhaseRow>> = [1.0, 1.05, 0.97, 1.02, 0.99]
            .iter()
            .map(|p99| vec![phase(*p99, 1000.0, 0.0)])
            .collect();
        let mut busy = phase(6.0, 1000.0, 2.0);
        busy.cpu_wait = Some(0.12);
        let findings = judge(&history, std::slice::from_ref(&busy));
        let p99 = findings
            .iter()
            .find(|f| f.metric == Metric::ResponseTimeP99Ms)
            .unwrap();
        assert!(!p99.regressed);
        assert!(
            p99.inconclusive.as_deref().unwrap().contains("12 %"),
            "{p99:?}"
        );
        let lost = findings.iter().find(|f| f.metric == Metric::Lost).unwrap();
        assert!(lost.regressed && lost.inconclusive.is_none());
        // As busy as usual: judged.
        busy.cpu_wait = Some(0.06);
        let findings = judge(&history, &[busy]);
        assert!(
            findings
                .iter()
                .any(|f| f.metric == Metric::ResponseTimeP99Ms && f.regressed)
        );
        assert_eq!(
            busy_machine(&[0.04; 3], None, None),
            None,
            "no figures: judged"
        );
        assert_eq!(
            busy_machine(&[0.04; 2], Some(0.5), None),
            None,
            "too little history"
        );
        assert!(busy_machine(&[0.04; 3], Some(0.3), Some(0.0)).is_some());
        assert_eq!(
            busy_machine(&[0.04; 3], Some(0.3), Some(0.15)),
            None,
            "the SUT held the producers back: it was the SUT"
        );
    }
}
