//! `report.html`: a self-contained report of a plan run (inline SVG, no script, no network),
//! built from the results folder alone, so `maestro-cli report FOLDER` can rebuild it.
//!
//! Charts: throughput over time, response-time p50/p99 over time, the response-time
//! distribution per phase, and the ramp or search curve (rate vs p99). Tables: verdicts
//! with the reason of each failure, and the per-worker numbers.
//!
//! The charts are drawn here: plotting crates lay out text with system fonts, and a report
//! must open anywhere, offline.

use crate::folder::{self, ResultsError};
use crate::model::{PhaseResult, PlanResult, SHORTFALL};
use crate::timeseries::read_timeseries;
use html_escape::encode_text as esc;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// One series of a line chart.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// A shaded x range of a time chart (a fault window), with its legend text.
struct Shade {
    from: f64,
    to: f64,
    label: String,
}

/// Time charts break a line where seconds are missing (a source that did not answer).
const GAP_OVER: f64 = 1.5;

/// A line chart as inline SVG. `x_labels` replaces numeric x ticks when given.
fn line_chart(
    id: &str,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    x_labels: Option<&[String]>,
) -> String {
    time_chart(id, title, x_label, y_label, series, x_labels, &[], false)
}

/// The x range and the y maximum (with 10 % headroom) a chart of `series` shows; a
/// chart without points shows 0 to 1.
fn bounds(series: &[Series]) -> (f64, f64, f64) {
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= 0.0 {
        y1 = 1.0;
    }
    (x0, x1, y1 * 1.1)
}

/// A line chart over time: fault windows shaded (with a legend entry each), and lines
/// broken where seconds are missing when `breaks`.
#[allow(clippy::too_many_arguments)]
fn time_chart(
    id: &str,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    x_labels: Option<&[String]>,
    shades: &[Shade],
    breaks: bool,
) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 280.0, 64.0, 150.0, 28.0, 40.0);
    let (x0, x1, y1) = bounds(series);
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| h - bottom - y / y1 * (h - top - bottom);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg id="{id}" class="chart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><title>{t}</title><text x="{left}" y="18" font-size="14" font-weight="bold">{t}</text>"##,
        t = esc(title)
    );
    // Axes, grid and ticks.
    let _ = write!(
        svg,
        r##"<line x1="{left}" y1="{b}" x2="{r}" y2="{b}" stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" y2="{b}" stroke="#333"/>"##,
        b = h - bottom,
        r = w - right
    );
    for i in 0..=4 {
        let y = y1 * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{p:.1}" x2="{r}" y2="{p:.1}" stroke="#eee"/><text x="{tx}" y="{ty:.1}" font-size="10" text-anchor="end">{v}</text>"##,
            p = py(y),
            r = w - right,
            tx = left - 4.0,
            ty = py(y) + 3.0,
            v = short(y)
        );
    }
    match x_labels {
        Some(labels) => {
            for (i, l) in labels.iter().enumerate() {
                let _ = write!(
                    svg,
                    r##"<text x="{x:.1}" y="{y}" font-size="10" text-anchor="middle">{l}</text>"##,
                    x = px(i as f64),
                    y = h - bottom + 14.0,
                    l = esc(l)
                );
            }
        }
        None => {
            for i in 0..=5 {
                let x = x0 + (x1 - x0) * f64::from(i) / 5.0;
                let _ = write!(
                    svg,
                    r##"<text x="{p:.1}" y="{y}" font-size="10" text-anchor="middle">{v}</text>"##,
                    p = px(x),
                    y = h - bottom + 14.0,
                    v = short(x)
                );
            }
        }
    }
    let _ = write!(
        svg,
        r##"<text x="{x}" y="{y}" font-size="11" text-anchor="middle">{l}</text><text x="12" y="{m}" font-size="11" transform="rotate(-90 12 {m})" text-anchor="middle">{yl}</text>"##,
        x = (left + w - right) / 2.0,
        y = h - 6.0,
        l = esc(x_label),
        m = (top + h - bottom) / 2.0,
        yl = esc(y_label)
    );
    for (i, shade) in shades.iter().enumerate() {
        let (a, b) = (px(shade.from.max(x0)), px(shade.to.min(x1)));
        let _ = write!(
            svg,
            r##"<rect class="fault" data-name="{n}" x="{a:.1}" y="{top}" width="{wd:.1}" height="{ht}" fill="#f4a261" fill-opacity="0.25"/>"##,
            n = esc(&shade.label),
            wd = (b - a).max(1.0),
            ht = h - top - bottom
        );
        let ly = top + 14.0 * (series.len() + i) as f64 + 8.0;
        let _ = write!(
            svg,
            r##"<rect x="{lx}" y="{ry:.1}" width="10" height="8" fill="#f4a261" fill-opacity="0.5"/><text x="{tx}" y="{ty:.1}" font-size="11">{n}</text>"##,
            lx = w - right + 10.0,
            ry = ly - 6.0,
            tx = w - right + 24.0,
            ty = ly + 1.0,
            n = esc(&shade.label)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        // One polyline per run of points without a gap.
        let mut runs: Vec<Vec<String>> = vec![Vec::new()];
        let mut prev: Option<f64> = None;
        for &(x, y) in &s.points {
            if breaks && prev.is_some_and(|p| x - p > GAP_OVER) {
                runs.push(Vec::new());
            }
            prev = Some(x);
            if let Some(run) = runs.last_mut() {
                run.push(format!("{:.1},{:.1}", px(x), py(y)));
            }
        }
        for points in runs.iter().filter(|r| !r.is_empty()) {
            let _ = write!(
                svg,
                r##"<polyline class="series" data-name="{n}" fill="none" stroke="{color}" stroke-width="1.6" points="{p}"/>"##,
                n = esc(&s.name),
                p = points.join(" ")
            );
        }
        for &(x, y) in &s.points {
            let _ = write!(
                svg,
                r##"<circle cx="{:.1}" cy="{:.1}" r="2" fill="{color}"/>"##,
                px(x),
                py(y)
            );
        }
        let ly = top + 14.0 * i as f64 + 8.0;
        let _ = write!(
            svg,
            r##"<rect x="{lx}" y="{ry:.1}" width="10" height="3" fill="{color}"/><text x="{tx}" y="{ty:.1}" font-size="11">{n}</text>"##,
            lx = w - right + 10.0,
            ry = ly - 3.0,
            tx = w - right + 24.0,
            ty = ly + 1.0,
            n = esc(&s.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn short(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v.abs() >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v.abs() >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// What the plan's probes add up to over time, probe after probe on one axis.
#[derive(Default)]
struct Timeline {
    sent: Vec<(f64, f64)>,
    received: Vec<(f64, f64)>,
    p50: Vec<(f64, f64)>,
    p99: Vec<(f64, f64)>,
    connected: Vec<(f64, f64)>,
    opened: Vec<(f64, f64)>,
    shades: Vec<Shade>,
    /// SUT metrics: per chart, per series name, points over the plan.
    sut: BTreeMap<String, BTreeMap<String, Vec<(f64, f64)>>>,
    fault_rows: String,
    sut_warnings: String,
}

impl Timeline {
    /// Reads every probe's time series, SUT figures and faults.
    fn read(folder: &Path, phases: &[PhaseResult]) -> Result<Self, ResultsError> {
        let mut t = Self::default();
        let mut offset = 0.0;
        for phase in phases {
            let dir = folder.join(phase.folder_name());
            for probe in &phase.probes {
                let run_dir = dir.join(&probe.summary.run_id);
                for f in &probe.summary.faults {
                    t.shades.push(Shade {
                        from: offset + f.at_ms as f64 / 1000.0,
                        to: offset + (f.at_ms + f.duration_ms) as f64 / 1000.0,
                        label: format!("fault: {}", f.action),
                    });
                    t.fault_rows.push_str(&fault_row(phase, probe.rate, f));
                }
                if let Some(m) = &probe.summary.sut_metrics {
                    for w in &m.warnings {
                        let _ = write!(
                            t.sut_warnings,
                            r#"<p class="shortfall">Phase {} {}: {}</p>"#,
                            phase.index,
                            phase.kind,
                            esc(w)
                        );
                    }
                }
                let sut_csv = run_dir.join("sut.csv");
                if sut_csv.exists() {
                    t.add_sut(&sut_csv, offset)?;
                }
                offset += t.add_rows(&run_dir.join("timeseries.csv"), offset)? + 1.0;
            }
        }
        Ok(t)
    }

    /// One probe's SUT figures, charted ones only (at most 8 series a chart).
    fn add_sut(&mut self, csv: &Path, offset: f64) -> Result<(), ResultsError> {
        for r in crate::sut::read_sut(csv)? {
            let Some((chart, scale)) = charted(&r.metric) else {
                continue;
            };
            let value = match r.kind {
                maestro_protocol::MetricKind::Counter => match r.per_second {
                    Some(v) => v,
                    None => continue,
                },
                maestro_protocol::MetricKind::Gauge => r.value,
            };
            let name = if r.label.is_empty() {
                format!("{} {}", r.source, r.metric)
            } else {
                format!("{} {}", r.source, r.label)
            };
            let series = self.sut.entry(chart.to_owned()).or_default();
            if series.len() < 8 || series.contains_key(&name) {
                series
                    .entry(name)
                    .or_default()
                    .push((offset + f64::from(r.second), value * scale));
            }
        }
        Ok(())
    }

    /// One probe's seconds; its last second.
    fn add_rows(&mut self, csv: &Path, offset: f64) -> Result<f64, ResultsError> {
        let mut last = 0.0f64;
        for r in &read_timeseries(csv)? {
            let x = offset + f64::from(r.second);
            self.sent.push((x, r.sent as f64));
            self.received.push((x, r.received as f64));
            self.p50.push((x, r.response_time_p50_us as f64 / 1000.0));
            self.p99.push((x, r.response_time_p99_us as f64 / 1000.0));
            if let (Some(c), Some(o)) = (r.connected, r.connections_opened) {
                self.connected.push((x, f64::from(c)));
                self.opened.push((x, f64::from(o)));
            }
            last = last.max(f64::from(r.second));
        }
        Ok(last)
    }
}

/// Two named series for one chart.
fn pair(a: &str, a_points: Vec<(f64, f64)>, b: &str, b_points: Vec<(f64, f64)>) -> [Series; 2] {
    [
        Series {
            name: a.into(),
            points: a_points,
        },
        Series {
            name: b.into(),
            points: b_points,
        },
    ]
}

/// The page's sections, each HTML.
struct Sections {
    throughput: String,
    latency: String,
    distribution: String,
    faults: String,
    sut_charts: String,
    connections: String,
    curve: String,
    generator: String,
    shortfalls: String,
    verdicts: String,
    workers: String,
}

/// Messages a shaped arrival offered in each second of the run (its expectation, for
/// Poisson); `None` for the uniform clock.
pub fn offered_per_second(spec: &maestro_protocol::TestSpec) -> Option<Vec<(f64, f64)>> {
    let duration_ms = spec.duration_ms.filter(|_| !spec.arrival.is_uniform())?;
    let profile = spec
        .arrival
        .profile(spec.rate, std::time::Duration::from_millis(duration_ms));
    let seconds = duration_ms.div_ceil(1000).min(7 * 24 * 3600);
    let end_ns = duration_ms as f64 * 1e6;
    // Messages before `t` (a burst on `t` is the next second's).
    let before = |t: f64| {
        if t <= 0.0 {
            0.0
        } else {
            profile.expected(t.min(end_ns) - 1.0)
        }
    };
    Some(
        (0..seconds)
            .map(|s| {
                let t = s as f64 * 1e9;
                (s as f64, before(t + 1e9) - before(t))
            })
            .collect(),
    )
}

/// The charts of a single run's folder (`maestro-cli start`): throughput and response time
/// over time, from its `timeseries.csv`.
pub fn run_charts(folder: &Path) -> Result<String, ResultsError> {
    let rows = read_timeseries(&folder.join("timeseries.csv"))?;
    let at = |f: fn(&crate::timeseries::SecondRow) -> f64| -> Vec<(f64, f64)> {
        rows.iter().map(|r| (f64::from(r.second), f(r))).collect()
    };
    let mut series: Vec<Series> = pair(
        "sent/s",
        at(|r| r.sent as f64),
        "received/s",
        at(|r| r.received as f64),
    )
    .into();
    // A shaped arrival: what its process offered in each second, beside what was sent.
    if folder.join("spec.json").is_file() {
        let spec = crate::folder::read_spec(folder)?;
        if let Some(points) = offered_per_second(&spec) {
            series.push(Series {
                name: format!("offered/s ({})", spec.arrival),
                points,
            });
        }
    }
    let throughput = time_chart(
        "chart-throughput",
        "Throughput over time",
        "seconds",
        "messages/s",
        &series,
        None,
        &[],
        true,
    );
    let latency = time_chart(
        "chart-latency",
        "Response time over time",
        "seconds",
        "ms",
        &pair(
            "p50",
            at(|r| r.response_time_p50_us as f64 / 1000.0),
            "p99",
            at(|r| r.response_time_p99_us as f64 / 1000.0),
        ),
        None,
        &[],
        true,
    );
    Ok(format!("{throughput}{latency}"))
}

/// Builds the report from a plan results folder (its typed files only).
pub fn render(folder: &Path) -> Result<String, ResultsError> {
    let plan: PlanResult = folder::read_plan(folder)?;
    let phases = &plan.phases;
    let t = Timeline::read(folder, phases)?;
    let (shortfalls, generator) = probe_notes(phases);
    let sections = Sections {
        throughput: time_chart(
            "chart-throughput",
            "Throughput over time",
            "seconds",
            "messages/s",
            &pair("sent/s", t.sent, "received/s", t.received),
            None,
            &t.shades,
            false,
        ),
        latency: time_chart(
            "chart-latency",
            "Response time over time",
            "seconds",
            "ms",
            &pair("p50", t.p50, "p99", t.p99),
            None,
            &t.shades,
            false,
        ),
        distribution: distribution(phases),
        faults: faults_table(&t.fault_rows),
        sut_charts: sut_charts(t.sut, &t.sut_warnings, &t.shades),
        connections: connections(phases, t.connected, t.opened, &t.shades),
        curve: curve(phases),
        generator,
        shortfalls,
        verdicts: verdict_rows(phases),
        workers: worker_rows(phases),
    };
    Ok(page(&plan, &sections))
}

/// The SUT's own numbers, one chart per metric, on the same time axis.
fn sut_charts(
    sut: BTreeMap<String, BTreeMap<String, Vec<(f64, f64)>>>,
    warnings: &str,
    shades: &[Shade],
) -> String {
    let mut charts = String::new();
    for (i, (chart, series)) in sut.into_iter().enumerate() {
        let series: Vec<Series> = series
            .into_iter()
            .map(|(name, points)| Series { name, points })
            .collect();
        charts.push_str(&time_chart(
            &format!("chart-sut-{i}"),
            &chart,
            "seconds",
            "",
            &series,
            None,
            shades,
            true,
        ));
    }
    if charts.is_empty() && warnings.is_empty() {
        return charts;
    }
    format!("<h2>System under test</h2>{warnings}{charts}")
}

fn faults_table(rows: &str) -> String {
    if rows.is_empty() {
        return String::new();
    }
    format!(
        r#"<h2>Faults</h2><table id="faults"><thead><tr><th>phase</th><th>rate</th><th>action</th><th>inspector</th><th>window</th><th>in effect after</th><th>lasted</th><th>sent before / during / after</th><th>lost before / during / after</th><th>duplicated</th><th>p50 before / during / after</th><th>p99 before / during / after</th><th>first error</th><th>recovered</th><th>errors</th></tr></thead><tbody>{rows}</tbody></table>"#
    )
}

/// Connections (fleets): clients connected, and connections opened, per second; and per
/// probe, how connecting went.
fn connections(
    phases: &[PhaseResult],
    connected: Vec<(f64, f64)>,
    opened: Vec<(f64, f64)>,
    shades: &[Shade],
) -> String {
    let mut out = String::new();
    if !connected.is_empty() {
        out.push_str("<h2>Connections</h2>");
        out.push_str(&time_chart(
            "chart-connections",
            "Clients connected and connections opened per second",
            "seconds",
            "clients",
            &pair("connected", connected, "opened/s", opened),
            None,
            shades,
            false,
        ));
    }
    let mut rows = String::new();
    for p in phases {
        for probe in &p.probes {
            let Some(c) = &probe.summary.connections else {
                continue;
            };
            let failures: Vec<String> =
                c.failures.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let ramp = c
                .ramp()
                .map_or(String::new(), |(rate, _)| format!("{rate:.0}/s"));
            let _ = write!(
                rows,
                "<tr><td>{i} {k}</td><td>{rate:.0}</td><td>{o}</td><td>{ramp}</td><td>{peak}/s</td><td>{re}</td><td>{d}</td><td>{ch}</td><td>{f}</td><td>{tcp}</td><td>{con}</td></tr>",
                i = p.index,
                k = p.kind,
                rate = probe.rate,
                o = c.opened,
                peak = c.peak_per_s,
                re = c.reconnects,
                d = c.dropped,
                ch = c.churned,
                f = esc(&failures.join(", ")),
                tcp = c
                    .tcp_connect_us
                    .map_or(String::new(), |t| crate::format::micros(t.p99 as i64)),
                con = probe
                    .summary
                    .connect_us
                    .map_or(String::new(), |t| crate::format::micros(t.p99 as i64)),
            );
        }
    }
    if !rows.is_empty() {
        let _ = write!(
            out,
            r#"<table id="connections"><thead><tr><th>phase</th><th>rate</th><th>opened</th><th>ramp</th><th>peak</th><th>reconnects</th><th>dropped</th><th>churned</th><th>failed</th><th>TCP connect p99</th><th>to CONNACK p99</th></tr></thead><tbody>{rows}</tbody></table>"#
        );
    }
    out
}

/// The response-time distribution per phase (its last probe).
fn distribution(phases: &[PhaseResult]) -> String {
    let labels: Vec<String> = ["p50", "p90", "p95", "p99", "p99.9", "p99.99", "max"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let dist: Vec<Series> = phases
        .iter()
        .filter_map(|p| {
            let r = &p.probes.last()?.summary.response_time_us;
            Some(Series {
                name: format!("{} {}", p.index, p.kind),
                // (results written before p95 was added have none: no point there)
                points: [
                    Some(r.p50),
                    Some(r.p90),
                    r.p95,
                    Some(r.p99),
                    Some(r.p999),
                    Some(r.p9999),
                    Some(r.max),
                ]
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i as f64, v as f64 / 1000.0)))
                .collect(),
            })
        })
        .collect();
    line_chart(
        "chart-distribution",
        "Response time distribution per phase",
        "percentile",
        "ms",
        &dist,
        Some(&labels),
    )
}

/// Ramp and search curves: rate vs p99, probes sorted by rate.
fn curve(phases: &[PhaseResult]) -> String {
    let curves: Vec<Series> = phases
        .iter()
        .filter(|p| p.kind.searches())
        .map(|p| {
            let mut points: Vec<(f64, f64)> = p
                .probes
                .iter()
                .map(|probe| {
                    (
                        probe.rate,
                        probe.summary.response_time_us.p99 as f64 / 1000.0,
                    )
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                name: format!("{} {}", p.index, p.kind),
                points,
            }
        })
        .collect();
    line_chart(
        "chart-curve",
        "Ramp / search: offered rate vs response-time p99",
        "messages/s",
        "p99 ms",
        &curves,
        None,
    )
}

/// One row per verdict of the judged phases.
fn verdict_rows(phases: &[PhaseResult]) -> String {
    let mut verdicts = String::new();
    for p in phases.iter().filter(|p| p.judged) {
        for probe in &p.probes {
            for v in &probe.verdicts {
                let _ = write!(
                    verdicts,
                    r#"<tr class="{c}"><td>{i} {k}</td><td>{rate:.0}</td><td>{cond}</td><td>{actual:.3}</td><td>{res}</td></tr>"#,
                    c = if v.passed { "pass" } else { "fail" },
                    i = p.index,
                    k = p.kind,
                    rate = probe.rate,
                    cond = esc(&v.condition),
                    actual = v.actual,
                    res = if v.passed {
                        "pass".to_owned()
                    } else {
                        format!("FAIL: {} (actual {:.3})", esc(&v.condition), v.actual)
                    },
                );
            }
        }
    }
    verdicts
}

/// One row per worker, per probe.
fn worker_rows(phases: &[PhaseResult]) -> String {
    let mut workers = String::new();
    for p in phases {
        for probe in &p.probes {
            for w in &probe.summary.workers {
                let _ = write!(
                    workers,
                    "<tr><td>{i} {k}</td><td>{rate:.0}</td><td>{n}</td><td>{pr}</td><td>{co}</td><td>{s}</td><td>{r}</td><td>{e}</td></tr>",
                    i = p.index,
                    k = p.kind,
                    rate = probe.rate,
                    n = esc(&w.name),
                    pr = w.producers,
                    co = w.consumers,
                    s = w.sent,
                    r = w.received,
                    e = w.errors,
                );
            }
        }
    }
    workers
}

/// Per probe: (probes whose achieved rate fell short of the offer, said plainly; the
/// generator's own verdict, whether maestro, not the SUT, limited it).
fn probe_notes(phases: &[PhaseResult]) -> (String, String) {
    let mut shortfalls = String::new();
    let mut generator = String::new();
    for p in phases {
        for probe in &p.probes {
            let s = &probe.summary;
            let bound = s.generator.as_ref().filter(|g| g.bound);
            if let Some(fraction) = s.achieved_fraction
                && fraction < SHORTFALL
            {
                let _ = write!(
                    shortfalls,
                    r#"<p class="shortfall">Phase {i} {k} at {rate:.0} msg/s: achieved {a:.1} msg/s, {pct:.1} % of the offered rate; {u} messages due were never sent. {who}</p>"#,
                    i = p.index,
                    k = p.kind,
                    rate = probe.rate,
                    a = s.achieved_rate,
                    pct = fraction * 100.0,
                    u = s.unsent,
                    who = if bound.is_some() {
                        "The tool limited the run (see below)."
                    } else {
                        "The SUT did not keep up."
                    },
                );
            }
            if let Some(g) = &s.generator {
                let _ = write!(
                    generator,
                    r#"<p class="{class}">Phase {i} {k} at {rate:.0} msg/s: generator {line}</p>"#,
                    class = if g.bound {
                        "generator-bound"
                    } else {
                        "generator"
                    },
                    i = p.index,
                    k = p.kind,
                    rate = probe.rate,
                    line = esc(&g.line()),
                );
            }
        }
    }
    (shortfalls, generator)
}

/// The whole page around its sections.
fn page(plan: &PlanResult, s: &Sections) -> String {
    let env = &plan.environment;
    let status = if plan.interrupted {
        "INTERRUPTED"
    } else if plan.passed {
        "PASSED"
    } else {
        "FAILED"
    };
    let mut html = String::new();
    let _ = write!(
        html,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>maestro: {name}</title><style>
body{{font-family:sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse;margin:8px 0 24px}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}} .shortfall{{color:#cf222e;font-weight:bold}} tr.fail{{background:#fde2e2}} tr.pass{{background:#e6f4ea}}
.status-PASSED{{color:#1a7f37}} .status-FAILED{{color:#cf222e}} svg{{display:block;margin:8px 0 20px}}
</style></head><body>
<h1>{name} <span id="status" class="status-{status}">{status}</span></h1>
<p>{desc}</p>
<p>run <code>{run}</code>, started {started}; SUT <code>{sut}</code> ({sut_name} {sut_version}); {nw} workers; maestro {ver}</p>
{shortfalls}<h2>Throughput</h2>{throughput}
<h2>Response time</h2>{latency}{distribution}
{faults}{sut_charts}{connections}<h2>Ramp and search</h2>{curve}
<h2>Generator</h2>{generator}
<h2>Verdicts</h2><table id="verdicts"><thead><tr><th>phase</th><th>rate</th><th>condition</th><th>actual</th><th>result</th></tr></thead><tbody>{verdicts}</tbody></table>
<h2>Workers</h2><table id="workers"><thead><tr><th>phase</th><th>rate</th><th>worker</th><th>producers</th><th>consumers</th><th>sent</th><th>received</th><th>errors</th></tr></thead><tbody>{workers}</tbody></table>
</body></html>"#,
        name = esc(&plan.plan),
        desc = esc(&plan.description),
        run = esc(&plan.run_id),
        started = esc(&plan.started_at),
        sut = esc(&env.sut),
        sut_name = esc(&env.sut_name),
        sut_version = esc(&env.sut_version),
        nw = env.workers.len(),
        ver = esc(&env.maestro_version),
        shortfalls = s.shortfalls,
        throughput = s.throughput,
        latency = s.latency,
        distribution = s.distribution,
        faults = s.faults,
        sut_charts = s.sut_charts,
        connections = s.connections,
        curve = s.curve,
        generator = s.generator,
        verdicts = s.verdicts,
        workers = s.workers,
    );
    html
}

/// Which SUT metrics get a chart, its title, and the scale of its values.
fn charted(metric: &str) -> Option<(&'static str, f64)> {
    use maestro_protocol::metric_names as m;
    Some(match metric {
        m::MESSAGES_RECEIVED => ("SUT: messages received/s", 1.0),
        m::MESSAGES_SENT => ("SUT: messages sent/s", 1.0),
        m::QUEUE_DEPTH => ("SUT: queue depth", 1.0),
        m::CONSUMER_LAG => ("SUT: consumer-group lag", 1.0),
        m::MEMORY_BYTES => ("SUT: memory (MiB)", 1.0 / (1024.0 * 1024.0)),
        m::CLIENTS_CONNECTED => ("SUT: clients connected", 1.0),
        "cpu_percent" => ("SUT: CPU %", 1.0),
        _ => return None,
    })
}

/// One row of the fault table.
fn fault_row(phase: &crate::model::PhaseResult, rate: f64, f: &crate::sut::FaultSummary) -> String {
    use crate::format::micros;
    let ms = |v: Option<i64>| v.map_or("-".to_owned(), micros);
    let three = |get: &dyn Fn(&crate::sut::WindowStats) -> String| {
        format!(
            "{} / {} / {}",
            get(&f.before),
            get(&f.during),
            get(&f.after)
        )
    };
    format!(
        "<tr><td>{i} {k}</td><td>{rate:.0}</td><td>{a}</td><td>{ins}</td><td>{at} + {d}</td><td>{eff}</td><td>{lasted}</td><td>{sent}</td><td>{lost}</td><td>{dup}</td><td>{p50}</td><td>{p99}</td><td>{fe}</td><td>{rec}</td><td>{err}</td></tr>",
        i = phase.index,
        k = phase.kind,
        a = esc(&f.action),
        ins = esc(&f.inspector),
        at = micros(f.at_ms as i64 * 1000),
        d = micros(f.duration_ms as i64 * 1000),
        eff = ms(f.requested_at_us.zip(f.confirmed_at_us).map(|(r, c)| c - r)),
        lasted = ms(f.confirmed_at_us.zip(f.healed_at_us).map(|(c, h)| h - c)),
        sent = three(&|w| w.sent.to_string()),
        lost = three(&|w| w.lost.to_string()),
        dup = three(&|w| w.duplicated.to_string()),
        p50 = three(&|w| micros(w.response_time_us.p50 as i64)),
        p99 = three(&|w| micros(w.response_time_us.p99 as i64)),
        fe = ms(f.first_error_after_ms.map(|v| v as i64 * 1000)),
        rec = ms(f.recovered_after_ms.map(|v| v as i64 * 1000)),
        err = esc(&f.errors.join("; ")),
    )
}

/// Writes `report.html` into the results folder and returns its path.
pub fn write(folder: &Path) -> Result<PathBuf, ResultsError> {
    let html = render(folder)?;
    let path = folder.join("report.html");
    crate::folder::write_atomic(&path, html.as_bytes())
        .map_err(|e| ResultsError::Write(path.clone(), e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::offered_per_second;
    use maestro_protocol::TestSpec;

    fn spec(arrival: &str, rate: f64, secs: u64) -> TestSpec {
        TestSpec {
            arrival: arrival.parse().unwrap_or_else(|e| panic!("{e}")),
            ..TestSpec::new(
                "mqtt://127.0.0.1:1883/t"
                    .parse()
                    .unwrap_or_else(|e| panic!("{e}")),
                rate,
                std::time::Duration::from_secs(secs),
            )
        }
    }

    #[test]
    fn a_shaped_arrival_offers_its_shape_second_by_second() {
        assert_eq!(offered_per_second(&spec("uniform", 100.0, 3)), None);
        let round = |a: &str, rate: f64, secs: u64| -> Vec<f64> {
            offered_per_second(&spec(a, rate, secs))
                .unwrap_or_default()
                .iter()
                .map(|p| (p.1 * 1000.0).round() / 1000.0)
                .collect()
        };
        // One burst every 2 s, at its start: the whole period's messages in one second.
        assert_eq!(
            round("bursts:period=2s", 100.0, 6),
            [200.0, 0.0, 200.0, 0.0, 200.0, 0.0]
        );
        assert_eq!(
            round("steps:100:2s,400:1s", 200.0, 6),
            [100.0, 100.0, 400.0, 100.0, 100.0, 400.0]
        );
        assert_eq!(round("poisson", 50.0, 2), [50.0, 50.0]);
    }
}
