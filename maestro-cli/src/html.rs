//! `report.html`: a self-contained report of a plan run (inline SVG, no script, no network),
//! built from the results folder alone, so `maestro-cli report FOLDER` can rebuild it.
//!
//! Charts: throughput over time, response-time p50/p99 over time, the response-time
//! distribution per phase, and the ramp or search curve (rate vs p99). Tables: verdicts
//! with the reason of each failure, and the per-worker numbers.
//!
//! The charts are drawn here: plotting crates lay out text with system fonts, and a report
//! must open anywhere, offline.

use html_escape::encode_text as esc;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0} is not a plan summary: {1}")]
    Summary(PathBuf, String),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// One series of a line chart.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// A line chart as inline SVG. `x_labels` replaces numeric x ticks when given.
fn line_chart(
    id: &str,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    x_labels: Option<&[String]>,
) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 280.0, 64.0, 150.0, 28.0, 40.0);
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
    y1 *= 1.1;
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
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = write!(
            svg,
            r##"<polyline class="series" data-name="{n}" fill="none" stroke="{color}" stroke-width="1.6" points="{p}"/>"##,
            n = esc(&s.name),
            p = points.join(" ")
        );
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

/// One probe's time series: (second, sent, received, p50 µs, p99 µs) per row.
fn timeseries(path: &Path) -> Vec<[f64; 5]> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(s), Some(sent), Some(recv), Some(p50), Some(p99)) = (
        col("second"),
        col("sent"),
        col("received"),
        col("response_time_p50_us"),
        col("response_time_p99_us"),
    ) else {
        return Vec::new();
    };
    lines
        .filter_map(|l| {
            let f: Vec<f64> = l.split(',').map(|v| v.parse().unwrap_or(0.0)).collect();
            Some([
                *f.get(s)?,
                *f.get(sent)?,
                *f.get(recv)?,
                *f.get(p50)?,
                *f.get(p99)?,
            ])
        })
        .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// Builds the report from a plan results folder.
pub fn render(folder: &Path) -> Result<String, ReportError> {
    let path = folder.join("summary.json");
    let text = std::fs::read_to_string(&path).map_err(|e| ReportError::Read(path.clone(), e))?;
    let plan: Value = serde_json::from_str(&text)
        .map_err(|e| ReportError::Summary(path.clone(), e.to_string()))?;
    let phases = plan["phases"]
        .as_array()
        .ok_or_else(|| ReportError::Summary(path.clone(), "no phases".into()))?;

    // Time series over the whole plan, probe after probe.
    let (mut sent, mut received, mut p50, mut p99) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut offset = 0.0;
    for phase in phases {
        let dir = folder.join(format!(
            "{:02}-{}",
            phase["index"].as_u64().unwrap_or(0),
            phase["kind"].as_str().unwrap_or("")
        ));
        for probe in phase["probes"].as_array().into_iter().flatten() {
            let run = probe["summary"]["run_id"].as_str().unwrap_or("");
            let rows = timeseries(&dir.join(run).join("timeseries.csv"));
            let mut last = 0.0f64;
            for r in &rows {
                let x = offset + r[0];
                sent.push((x, r[1]));
                received.push((x, r[2]));
                p50.push((x, r[3] / 1000.0));
                p99.push((x, r[4] / 1000.0));
                last = last.max(r[0]);
            }
            offset += last + 1.0;
        }
    }
    let throughput = line_chart(
        "chart-throughput",
        "Throughput over time",
        "seconds",
        "messages/s",
        &[
            Series {
                name: "sent/s".into(),
                points: sent,
            },
            Series {
                name: "received/s".into(),
                points: received,
            },
        ],
        None,
    );
    let latency = line_chart(
        "chart-latency",
        "Response time over time",
        "seconds",
        "ms",
        &[
            Series {
                name: "p50".into(),
                points: p50,
            },
            Series {
                name: "p99".into(),
                points: p99,
            },
        ],
        None,
    );

    // Distribution per phase (its last probe).
    let labels: Vec<String> = ["p50", "p90", "p99", "p99.9", "p99.99", "max"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let keys = ["p50", "p90", "p99", "p999", "p9999", "max"];
    let dist: Vec<Series> = phases
        .iter()
        .filter_map(|p| {
            let probe = p["probes"].as_array()?.last()?;
            let r = &probe["summary"]["response_time_us"];
            Some(Series {
                name: format!("{} {}", p["index"], p["kind"].as_str().unwrap_or("")),
                points: keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| (i as f64, f(&r[*k]) / 1000.0))
                    .collect(),
            })
        })
        .collect();
    let distribution = line_chart(
        "chart-distribution",
        "Response time distribution per phase",
        "percentile",
        "ms",
        &dist,
        Some(&labels),
    );

    // Ramp and search curves: rate vs p99, probes sorted by rate.
    let curves: Vec<Series> = phases
        .iter()
        .filter(|p| matches!(p["kind"].as_str(), Some("ramp" | "max-rate")))
        .map(|p| {
            let mut points: Vec<(f64, f64)> = p["probes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|probe| {
                    (
                        f(&probe["rate"]),
                        f(&probe["summary"]["response_time_us"]["p99"]) / 1000.0,
                    )
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                name: format!("{} {}", p["index"], p["kind"].as_str().unwrap_or("")),
                points,
            }
        })
        .collect();
    let curve = line_chart(
        "chart-curve",
        "Ramp / search: offered rate vs response-time p99",
        "messages/s",
        "p99 ms",
        &curves,
        None,
    );

    // Verdicts.
    let mut verdicts = String::new();
    for p in phases.iter().filter(|p| p["judged"] == true) {
        for probe in p["probes"].as_array().into_iter().flatten() {
            for v in probe["verdicts"].as_array().into_iter().flatten() {
                let passed = v["passed"] == true;
                let _ = write!(
                    verdicts,
                    r#"<tr class="{c}"><td>{i} {k}</td><td>{rate:.0}</td><td>{cond}</td><td>{actual:.3}</td><td>{res}</td></tr>"#,
                    c = if passed { "pass" } else { "fail" },
                    i = p["index"],
                    k = esc(p["kind"].as_str().unwrap_or("")),
                    rate = f(&probe["rate"]),
                    cond = esc(v["condition"].as_str().unwrap_or("")),
                    actual = f(&v["actual"]),
                    res = if passed {
                        "pass".to_owned()
                    } else {
                        format!(
                            "FAIL: {} (actual {:.3})",
                            esc(v["condition"].as_str().unwrap_or("")),
                            f(&v["actual"])
                        )
                    },
                );
            }
        }
    }
    // Per worker, per probe.
    let mut workers = String::new();
    for p in phases {
        for probe in p["probes"].as_array().into_iter().flatten() {
            for w in probe["summary"]["workers"].as_array().into_iter().flatten() {
                let _ = write!(
                    workers,
                    "<tr><td>{i} {k}</td><td>{rate:.0}</td><td>{n}</td><td>{pr}</td><td>{co}</td><td>{s}</td><td>{r}</td><td>{e}</td></tr>",
                    i = p["index"],
                    k = esc(p["kind"].as_str().unwrap_or("")),
                    rate = f(&probe["rate"]),
                    n = esc(w["name"].as_str().unwrap_or("")),
                    pr = w["producers"],
                    co = w["consumers"],
                    s = w["sent"],
                    r = w["received"],
                    e = w["errors"],
                );
            }
        }
    }
    // Probes whose achieved rate fell short of the offer, said plainly.
    let mut shortfalls = String::new();
    for p in phases {
        for probe in p["probes"].as_array().into_iter().flatten() {
            let s = &probe["summary"];
            if let Some(fraction) = s["achieved_fraction"].as_f64()
                && fraction < crate::summary::SHORTFALL
            {
                let _ = write!(
                    shortfalls,
                    r#"<p class="shortfall">Phase {i} {k} at {rate:.0} msg/s: achieved {a:.1} msg/s, {pct:.1} % of the offered rate; {u} messages due were never sent. The SUT did not keep up.</p>"#,
                    i = p["index"],
                    k = esc(p["kind"].as_str().unwrap_or("")),
                    rate = f(&probe["rate"]),
                    a = f(&s["achieved_rate"]),
                    pct = fraction * 100.0,
                    u = s["unsent"],
                );
            }
        }
    }
    let env = &plan["environment"];
    let status = if plan["passed"] == true {
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
<h2>Ramp and search</h2>{curve}
<h2>Verdicts</h2><table id="verdicts"><thead><tr><th>phase</th><th>rate</th><th>condition</th><th>actual</th><th>result</th></tr></thead><tbody>{verdicts}</tbody></table>
<h2>Workers</h2><table id="workers"><thead><tr><th>phase</th><th>rate</th><th>worker</th><th>producers</th><th>consumers</th><th>sent</th><th>received</th><th>errors</th></tr></thead><tbody>{workers}</tbody></table>
</body></html>"#,
        name = esc(plan["plan"].as_str().unwrap_or("")),
        desc = esc(plan["description"].as_str().unwrap_or("")),
        run = esc(plan["run_id"].as_str().unwrap_or("")),
        started = esc(plan["started_at"].as_str().unwrap_or("")),
        sut = esc(env["sut"].as_str().unwrap_or("")),
        sut_name = esc(env["sut_name"].as_str().unwrap_or("")),
        sut_version = esc(env["sut_version"].as_str().unwrap_or("")),
        nw = env["workers"].as_array().map_or(0, Vec::len),
        ver = esc(env["maestro_version"].as_str().unwrap_or("")),
    );
    Ok(html)
}

/// Writes `report.html` into the results folder and returns its path.
pub fn write(folder: &Path) -> Result<PathBuf, ReportError> {
    let html = render(folder)?;
    let path = folder.join("report.html");
    std::fs::write(&path, html).map_err(|e| ReportError::Write(path.clone(), e))?;
    Ok(path)
}
