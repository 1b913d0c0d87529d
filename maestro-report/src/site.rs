//! The pages of `maestro-cli serve`, as HTML built from the results index and the results
//! folders: the runs list with its filters, a run's page (its `report.html`), two runs side
//! by side, a plan's trends with their noise bands and flagged regressions, and the live
//! page (a shell that its script fills from `/api/live`). Pure: no I/O, no network, no
//! external assets; every value from a folder or a note is escaped.

use crate::compare::Delta;
use crate::history::{Band, PhaseRow, PlanCount, RunFilter, RunKind, RunRow, TEST, TrendSeries};
use html_escape::{encode_double_quoted_attribute as attr, encode_text as esc};
use std::fmt::Write as _;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1f2328}
header{background:#24292f;color:#fff;padding:8px 16px}header a{color:#fff;margin-right:16px;text-decoration:none;font-weight:600}
main{padding:12px 16px}table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;font-size:13px}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}.passed{color:#1a7f37}.failed{color:#cf222e;font-weight:600}
.worse{color:#cf222e;font-weight:600}.better{color:#1a7f37}form.filters input,form.filters select{margin-right:8px}
svg{display:block;margin:4px 0 16px}.chart-grid{display:flex;flex-wrap:wrap;gap:8px}.muted{color:#57606a}
.regressions li{color:#cf222e}.regressions li.none{color:#57606a}.box{border:1px solid #d0d7de;padding:8px;margin:8px 0}";

/// A whole page: the navigation, then `body`.
pub fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · maestro</title>\
         <style>{STYLE}</style></head><body><header><a href=\"/\">Runs</a><a href=\"/trends\">Trends</a>\
         <a href=\"/live\">Live</a><span class=\"muted\">maestro {v}</span></header><main><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title),
        v = env!("CARGO_PKG_VERSION"),
    )
}

fn verdict(passed: bool) -> &'static str {
    if passed {
        "<span class=\"passed\">passed</span>"
    } else {
        "<span class=\"failed\">failed</span>"
    }
}

/// The href of a run's page.
pub fn run_href(folder: &str) -> String {
    format!("/runs/{}", percent(folder))
}

/// Percent-encodes everything but unreserved characters (a query value or path segment).
pub fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn selected(yes: bool) -> &'static str {
    if yes { " selected" } else { "" }
}

/// The runs list: filters (plan, SUT, tag, verdict, dates), one row per run or plan
/// result, and two radio columns that pick the runs to compare.
pub fn runs_page(rows: &[RunRow], filter: &RunFilter, plans: &[PlanCount]) -> String {
    let mut b = String::new();
    let val = |v: &Option<String>| attr(v.as_deref().unwrap_or("")).into_owned();
    let _ = write!(
        b,
        "<form class=\"filters\" method=\"get\" action=\"/\"><label>plan <select name=\"plan\" id=\"filter-plan\"><option value=\"\">any</option>"
    );
    for p in plans {
        let _ = write!(
            b,
            "<option value=\"{v}\"{s}>{t} ({n})</option>",
            v = attr(&p.plan),
            s = selected(filter.plan.as_deref() == Some(p.plan.as_str())),
            t = esc(&p.plan),
            n = p.runs
        );
    }
    let _ = write!(
        b,
        "</select></label><label>SUT <input name=\"sut\" id=\"filter-sut\" value=\"{sut}\"></label>\
         <label>tag <input name=\"tag\" id=\"filter-tag\" value=\"{tag}\"></label>\
         <label>verdict <select name=\"verdict\" id=\"filter-verdict\"><option value=\"\">any</option>\
         <option value=\"passed\"{p}>passed</option><option value=\"failed\"{f}>failed</option></select></label>\
         <label>since <input name=\"since\" type=\"date\" value=\"{since}\"></label>\
         <label>until <input name=\"until\" type=\"date\" value=\"{until}\"></label>\
         <button type=\"submit\" id=\"filter\">Filter</button></form>",
        sut = val(&filter.sut),
        tag = val(&filter.tag),
        p = selected(filter.passed == Some(true)),
        f = selected(filter.passed == Some(false)),
        since = val(&filter.since),
        until = val(&filter.until),
    );
    let _ = write!(
        b,
        "<form method=\"get\" action=\"/compare\"><p class=\"muted\">{} shown, newest first. \
         Pick A and B, then <button type=\"submit\" id=\"compare\">Compare</button></p>\
         <table id=\"runs\"><tr><th>A</th><th>B</th><th>started</th><th>kind</th><th>plan or run</th>\
         <th>SUT</th><th>SUT name</th><th>tags</th><th>verdict</th><th>trend</th></tr>",
        rows.len()
    );
    for r in rows {
        let name = r.plan.as_deref().unwrap_or(&r.run_id);
        let trend = r
            .plan
            .as_deref()
            .map(|p| format!("<a href=\"/trends?plan={}\">trend</a>", percent(p)))
            .unwrap_or_default();
        let _ = write!(
            b,
            "<tr class=\"run\" data-folder=\"{f}\"><td><input type=\"radio\" name=\"a\" value=\"{f}\"></td>\
             <td><input type=\"radio\" name=\"b\" value=\"{f}\"></td><td>{started}</td><td>{kind}</td>\
             <td><a href=\"{href}\">{name}</a></td><td>{sut}</td><td>{sn} {sv}</td><td>{tags}</td><td>{v}</td><td>{trend}</td></tr>",
            f = attr(&r.folder),
            started = esc(&r.started_at),
            kind = if r.kind == RunKind::Plan {
                "plan"
            } else {
                "run"
            },
            href = attr(&run_href(&r.folder)),
            name = esc(name),
            sut = esc(&r.sut),
            sn = esc(&r.sut_name),
            sv = esc(&r.sut_version),
            tags = esc(&r.tags.join(", ")),
            v = verdict(r.passed),
        );
    }
    b.push_str("</table></form>");
    layout("Runs", &b)
}

fn phase_table(id: &str, phases: &[PhaseRow]) -> String {
    let mut b = format!(
        "<table id=\"{id}\"><tr><th>phase</th><th>judged</th><th>throughput /s</th><th>p50 ms</th>\
         <th>p99 ms</th><th>p99.9 ms</th><th>lost</th><th>errors</th></tr>"
    );
    for p in phases {
        let _ = write!(
            b,
            "<tr><td>{} {}</td><td>{}</td><td class=\"num\">{:.1}</td><td class=\"num\">{:.3}</td>\
             <td class=\"num\">{:.3}</td><td class=\"num\">{:.3}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            p.phase,
            esc(&p.kind),
            if p.judged { "yes" } else { "no" },
            p.rate,
            p.p50_ms,
            p.p99_ms,
            p.p999_ms,
            p.lost,
            p.errors
        );
    }
    b.push_str("</table>");
    b
}

fn facts(r: &RunRow) -> String {
    let mut b = String::from("<table class=\"facts\">");
    for (k, v) in [
        ("folder", r.folder.as_str()),
        ("run", r.run_id.as_str()),
        ("started", r.started_at.as_str()),
        ("SUT", r.sut.as_str()),
        ("SUT name", r.sut_name.as_str()),
        ("SUT version", r.sut_version.as_str()),
        ("maestro", r.maestro_version.as_str()),
        ("environment", r.fingerprint.as_str()),
    ] {
        let _ = write!(b, "<tr><th>{k}</th><td>{}</td></tr>", esc(v));
    }
    let _ = write!(
        b,
        "<tr><th>largest worker clock offset</th><td>{}</td></tr><tr><th>tags</th><td>{}</td></tr>\
         <tr><th>verdict</th><td id=\"verdict\">{}</td></tr></table>",
        r.clock_offset_us
            .map_or_else(|| "not measured".to_owned(), |o| format!("{o:+} µs")),
        esc(&r.tags.join(", ")),
        verdict(r.passed)
    );
    b
}

/// The part of a full HTML document between `<body>` and `</body>`, with its `<style>`.
fn inner(document: &str) -> String {
    if !document.contains("<body>") {
        // A fragment already.
        return document.to_owned();
    }
    let style = document
        .find("<style>")
        .and_then(|s| {
            document[s..]
                .find("</style>")
                .map(|e| &document[s..s + e + 8])
        })
        .unwrap_or("");
    let body = document
        .find("<body>")
        .map(|s| &document[s + 6..])
        .map(|rest| rest.rfind("</body>").map_or(rest, |e| &rest[..e]))
        .unwrap_or("");
    // The report styles its own page's body: here, its section.
    format!("{}{body}", style.replace("body{", "#report{"))
}

/// A run's page: its facts, its phases and `report`: for a plan, everything its
/// `report.html` shows (the whole document, whose body is taken); for a single run, its
/// charts.
pub fn run_page(run: &RunRow, phases: &[PhaseRow], report: Option<&str>) -> String {
    let name = run.plan.as_deref().unwrap_or(&run.run_id);
    let mut b = facts(run);
    let _ = write!(
        b,
        "<p><a href=\"/api/runs/{f}\">JSON</a>{trend}</p><h2>Phases</h2>{t}",
        f = percent(&run.folder),
        trend = run
            .plan
            .as_deref()
            .map(|p| format!(
                " · <a href=\"/trends?plan={}\">trends of {}</a>",
                percent(p),
                esc(p)
            ))
            .unwrap_or_default(),
        t = phase_table("phases", phases)
    );
    if let Some(r) = report {
        let _ = write!(
            b,
            "<section id=\"report\" class=\"box\">{}</section>",
            inner(r)
        );
    }
    layout(&format!("{} {}", name, run.started_at), &b)
}

/// Two runs side by side: every phase both have, metric by metric, with the change from
/// A to B; and `compare`'s verdicts when both are plan results.
pub fn compare_page(
    a: (&RunRow, &[PhaseRow]),
    b: (&RunRow, &[PhaseRow]),
    deltas: Option<&[Delta]>,
) -> String {
    let mut h = String::from("<div class=\"chart-grid\">");
    for (label, (r, _)) in [("A", a), ("B", b)] {
        let _ = write!(
            h,
            "<div><h2>{label}: <a href=\"{}\">{}</a></h2>{}</div>",
            attr(&run_href(&r.folder)),
            esc(r.plan.as_deref().unwrap_or(&r.run_id)),
            facts(r)
        );
    }
    h.push_str("</div><h2>Side by side</h2><table id=\"side-by-side\"><tr><th>phase</th><th>metric</th><th>A</th><th>B</th><th>change</th></tr>");
    for pa in a.1 {
        let Some(pb) =
            b.1.iter()
                .find(|p| p.phase == pa.phase && p.kind == pa.kind)
        else {
            continue;
        };
        for (metric, va, vb, higher_worse) in [
            ("throughput /s", pa.rate, pb.rate, false),
            ("p50 ms", pa.p50_ms, pb.p50_ms, true),
            ("p99 ms", pa.p99_ms, pb.p99_ms, true),
            ("p99.9 ms", pa.p999_ms, pb.p999_ms, true),
            ("lost", pa.lost, pb.lost, true),
            ("errors", pa.errors, pb.errors, true),
        ] {
            let change = if va.abs() > f64::EPSILON {
                (vb - va) / va * 100.0
            } else if vb.abs() > f64::EPSILON {
                f64::INFINITY
            } else {
                0.0
            };
            let class = if change.abs() < 5.0 {
                ""
            } else if (change > 0.0) == higher_worse {
                "worse"
            } else {
                "better"
            };
            let _ = write!(
                h,
                "<tr><td>{} {}</td><td>{metric}</td><td class=\"num\">{va:.3}</td><td class=\"num\">{vb:.3}</td>\
                 <td class=\"num {class}\">{}</td></tr>",
                pa.phase,
                esc(&pa.kind),
                if change.is_finite() {
                    format!("{change:+.1} %")
                } else {
                    "new".to_owned()
                }
            );
        }
    }
    h.push_str("</table>");
    if let Some(deltas) = deltas {
        let _ = write!(
            h,
            "<h2>Verdict (compare's limits)</h2><ul id=\"deltas\">{}</ul>",
            if deltas.is_empty() {
                "<li>B is not worse than A beyond the limits</li>".to_owned()
            } else {
                deltas
                    .iter()
                    .map(|d| format!("<li class=\"worse\">{}</li>", esc(&d.describe())))
                    .collect()
            }
        );
    }
    layout("Compare", &h)
}

/// The trends page: one chart per SUT, phase and metric, with the band each run was
/// judged against and the regressions flagged; the plans to pick from.
pub fn trends_page(
    plan: Option<&str>,
    n: usize,
    series: &[TrendSeries],
    plans: &[PlanCount],
) -> String {
    let mut b = String::from(
        "<form method=\"get\" action=\"/trends\"><label>plan <select name=\"plan\" id=\"trend-plan\">",
    );
    for p in plans {
        let _ = write!(
            b,
            "<option value=\"{v}\"{s}>{t} ({n})</option>",
            v = attr(&p.plan),
            s = selected(plan == Some(p.plan.as_str())),
            t = esc(&p.plan),
            n = p.runs
        );
    }
    let _ = write!(
        b,
        "</select></label> <label>band of the last <input name=\"n\" type=\"number\" min=\"3\" style=\"width:4em\" value=\"{n}\"> runs</label> \
         <button type=\"submit\">Show</button></form><p class=\"muted\">A point is a regression when it is {}.</p>",
        esc(TEST)
    );
    let Some(plan) = plan else {
        b.push_str("<p>Pick a plan.</p>");
        return layout("Trends", &b);
    };
    let flagged: Vec<String> = series
        .iter()
        .flat_map(|s| {
            s.regressions().map(move |p| {
                let band = p.band.as_ref().map_or(String::new(), |b| {
                    format!(
                        " outside {:.3}..{:.3} (median {:.3} of {} runs)",
                        b.low, b.high, b.median, b.runs
                    )
                });
                format!(
                    "<li class=\"regression\" data-folder=\"{f}\" data-metric=\"{m}\">{sut}, phase {ph}, {m}: \
                     <a href=\"{href}\">{started}</a> {v:.3}{band}{env}</li>",
                    f = attr(&p.folder),
                    m = s.metric.as_str(),
                    sut = esc(&s.sut_key),
                    ph = esc(&s.phase),
                    href = attr(&run_href(&p.folder)),
                    started = esc(&p.started_at),
                    v = p.value,
                    band = esc(&band),
                    env = if p.environment_changed {
                        " (in an environment its band's runs did not have)"
                    } else {
                        ""
                    }
                )
            })
        })
        .collect();
    let _ = write!(
        b,
        "<h2>Regressions</h2><ul id=\"regressions\" class=\"regressions\">{}</ul>",
        if flagged.is_empty() {
            "<li class=\"muted none\">none</li>".to_owned()
        } else {
            flagged.concat()
        }
    );
    let unjudged: Vec<String> = series
        .iter()
        .flat_map(|s| {
            s.points.iter().filter_map(move |p| {
                p.inconclusive.as_ref().map(|why| {
                    format!(
                        "<li class=\"inconclusive\" data-folder=\"{f}\" data-metric=\"{m}\">{sut}, phase {ph}, {m}: \
                         <a href=\"{href}\">{started}</a> {v:.3}: {why}</li>",
                        f = attr(&p.folder),
                        m = s.metric.as_str(),
                        sut = esc(&s.sut_key),
                        ph = esc(&s.phase),
                        href = attr(&run_href(&p.folder)),
                        started = esc(&p.started_at),
                        v = p.value,
                        why = esc(why),
                    )
                })
            })
        })
        .collect();
    if !unjudged.is_empty() {
        let _ = write!(
            b,
            "<h2>Outside the band, not judged</h2><ul id=\"inconclusive\">{}</ul>",
            unjudged.concat()
        );
    }
    let mut sut = "";
    for (i, s) in series.iter().enumerate() {
        if s.sut_key != sut {
            if !sut.is_empty() {
                b.push_str("</div>");
            }
            sut = &s.sut_key;
            let _ = write!(b, "<h2>{}</h2><div class=\"chart-grid\">", esc(sut));
        }
        b.push_str(&trend_chart(&format!("trend-{i}"), s));
    }
    if !sut.is_empty() {
        b.push_str("</div>");
    }
    layout(&format!("Trends of {plan}"), &b)
}

/// One series as SVG: the band each run was judged against (shaded), the values (a line
/// with a dot per run, coloured by environment) and the regressions (red rings).
fn trend_chart(id: &str, s: &TrendSeries) -> String {
    let (w, h, left, right, top, bottom) = (440.0, 200.0, 56.0, 12.0, 26.0, 30.0);
    let n = s.points.len().max(1);
    let mut y1 = s
        .points
        .iter()
        .flat_map(|p| std::iter::once(p.value).chain(p.band.as_ref().map(|b| b.high)))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    if y1 <= 0.0 {
        y1 = 1.0;
    }
    y1 *= 1.1;
    let px = |i: usize| left + (i as f64 + 0.5) / n as f64 * (w - left - right);
    let py = |y: f64| h - bottom - y.clamp(0.0, y1) / y1 * (h - top - bottom);
    let mut svg = format!(
        "<svg id=\"{id}\" class=\"trend\" data-metric=\"{m}\" data-phase=\"{ph}\" xmlns=\"http://www.w3.org/2000/svg\" \
         width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\"><title>phase {ph}: {m}</title>\
         <text x=\"{left}\" y=\"16\" font-size=\"13\" font-weight=\"bold\">phase {ph}: {m}{shown}</text>\
         <line x1=\"{left}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#888\"/>\
         <text x=\"{tl}\" y=\"{yt}\" font-size=\"10\" text-anchor=\"end\">{top:.3}</text>\
         <text x=\"{tl}\" y=\"{b}\" font-size=\"10\" text-anchor=\"end\">0</text>",
        m = s.metric.as_str(),
        ph = attr(&s.phase),
        shown = if s.gates { "" } else { " (not judged)" },
        b = h - bottom,
        r = w - right,
        tl = left - 4.0,
        yt = top + 4.0,
        top = y1,
    );
    // The band, as a polygon over the runs that have one.
    let banded: Vec<(usize, &Band)> = s
        .points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.band.as_ref().map(|b| (i, b)))
        .collect();
    if !banded.is_empty() {
        let half = (w - left - right) / n as f64 / 2.0;
        let mut pts = String::new();
        for (i, b) in &banded {
            let _ = write!(
                pts,
                "{:.1},{:.1} {:.1},{:.1} ",
                px(*i) - half,
                py(b.high),
                px(*i) + half,
                py(b.high)
            );
        }
        for (i, b) in banded.iter().rev() {
            let _ = write!(
                pts,
                "{:.1},{:.1} {:.1},{:.1} ",
                px(*i) + half,
                py(b.low.max(0.0)),
                px(*i) - half,
                py(b.low.max(0.0))
            );
        }
        let _ = write!(
            svg,
            "<polygon class=\"band\" points=\"{pts}\" fill=\"#1f77b4\" fill-opacity=\"0.15\"/>"
        );
    }
    let line: Vec<String> = s
        .points
        .iter()
        .enumerate()
        .filter(|(_, p)| p.value.is_finite())
        .map(|(i, p)| format!("{:.1},{:.1}", px(i), py(p.value)))
        .collect();
    let _ = write!(
        svg,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\"/>",
        line.join(" ")
    );
    let mut environments: Vec<&str> = Vec::new();
    for (i, p) in s.points.iter().enumerate() {
        if !environments.contains(&p.fingerprint.as_str()) {
            environments.push(&p.fingerprint);
        }
        let env = environments
            .iter()
            .position(|e| *e == p.fingerprint)
            .unwrap_or(0);
        let colour = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#ff7f0e"][env % 5];
        let _ = write!(
            svg,
            "<circle class=\"{c}\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"{r}\" fill=\"{colour}\"{ring} data-folder=\"{f}\">\
             <title>{started}: {v:.3} (environment {e})</title></circle>",
            c = if p.regressed {
                "point regression"
            } else if p.inconclusive.is_some() {
                "point inconclusive"
            } else {
                "point"
            },
            x = px(i),
            y = py(p.value),
            r = if p.regressed { 5 } else { 3 },
            ring = if p.regressed {
                " stroke=\"#cf222e\" stroke-width=\"3\""
            } else if p.inconclusive.is_some() {
                " stroke=\"#999\" stroke-width=\"2\" fill-opacity=\"0.2\""
            } else {
                ""
            },
            f = attr(&p.folder),
            started = esc(&p.started_at),
            v = p.value,
            e = env + 1,
        );
    }
    if let (Some(first), Some(last)) = (s.points.first(), s.points.last()) {
        let _ = write!(
            svg,
            "<text x=\"{left}\" y=\"{y}\" font-size=\"10\">{}</text><text x=\"{r}\" y=\"{y}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
            esc(&first.started_at),
            esc(&last.started_at),
            y = h - bottom + 14.0,
            r = w - right,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The live page: filled by its script from `/api/live` every second. `control` says
/// whether this server can start and stop runs (it holds the controller key).
pub fn live_page(control: bool) -> String {
    let controls = if control {
        "<div class=\"box\" id=\"controls\"><label>start a run: <code>maestro-cli start</code> \
         <input id=\"start-args\" size=\"80\" placeholder=\"--sut mqtt://host:1883/topic --rate 1000 --duration 30s\"></label>\
         <button id=\"start\">Start</button> <button id=\"stop\">Stop the run</button> \
         <span id=\"control-status\" class=\"muted\"></span><p class=\"muted\">Needs this server's token: open the \
         link <code>maestro-cli serve</code> printed (<code>?token=…</code>).</p></div>"
    } else {
        "<p class=\"muted\" id=\"controls-off\">Starting and stopping runs from here needs the controller key: \
         <code>maestro-cli serve --keys DIR</code>.</p>"
    };
    let body = format!(
        "{controls}<p>control broker: <span id=\"live-broker\">…</span>; peers online: <span id=\"live-peers\">0</span></p>\
         <table id=\"live-summary\"><tr><th>run</th><td id=\"live-run\">none yet</td></tr>\
         <tr><th>step</th><td id=\"live-step\"></td></tr><tr><th>second</th><td id=\"live-second\"></td></tr>\
         <tr><th>sent</th><td class=\"num\" id=\"live-sent\">0</td></tr><tr><th>received</th><td class=\"num\" id=\"live-received\">0</td></tr>\
         <tr><th>errors</th><td class=\"num\" id=\"live-errors\">0</td></tr>\
         <tr><th>last second: sent/s, received/s</th><td class=\"num\" id=\"live-rate\"></td></tr>\
         <tr><th>last second: p50, p99 ms</th><td class=\"num\" id=\"live-latency\"></td></tr>\
         <tr><th>whole run: p50, p99, p99.9 ms</th><td class=\"num\" id=\"live-whole\"></td></tr></table>\
         <p class=\"muted\">messages per second over the run: <span style=\"color:#1f77b4\">sent</span>, <span style=\"color:#d62728\">received</span></p>\
         <svg id=\"live-chart\" width=\"760\" height=\"160\" viewBox=\"0 0 760 160\" style=\"border:1px solid #d0d7de\"><polyline id=\"live-sent-line\" fill=\"none\" stroke=\"#1f77b4\" points=\"\"/>\
         <polyline id=\"live-received-line\" fill=\"none\" stroke=\"#d62728\" points=\"\"/></svg>\
         <h2>Workers</h2><table id=\"live-workers\"><thead><tr><th>worker</th><th>state</th><th>connected</th><th>sent</th><th>received</th><th>errors</th></tr></thead><tbody></tbody></table>\
         <h2>SUT</h2><table id=\"live-sut\"><thead><tr><th>inspector</th><th>source</th><th>metric</th><th>value</th><th>per second</th></tr></thead><tbody></tbody></table>\
         <h2>Faults healed</h2><table id=\"live-faults\"><thead><tr><th>inspector</th><th>action</th><th>state</th><th>error</th></tr></thead><tbody></tbody></table>\
         <script>{LIVE_SCRIPT}</script>"
    );
    layout("Live", &body)
}

const LIVE_SCRIPT: &str = r#"
const params = new URLSearchParams(location.search);
if (params.get('token')) { sessionStorage.setItem('maestro-token', params.get('token')); }
const token = () => sessionStorage.getItem('maestro-token') || '';
const $ = id => document.getElementById(id);
const text = (id, v) => { const e = $(id); if (e) e.textContent = v; };
const ms = us => (us / 1000).toFixed(3);
function rows(id, items, cells) {
  const body = $(id).querySelector('tbody');
  body.replaceChildren(...items.map(item => {
    const tr = document.createElement('tr');
    for (const c of cells(item)) { const td = document.createElement('td'); td.textContent = c; tr.appendChild(td); }
    return tr;
  }));
}
function line(id, values, max) {
  const n = values.length;
  $(id).setAttribute('points', values.map((v, i) => `${(i / Math.max(n - 1, 1) * 740 + 10).toFixed(1)},${(150 - v / max * 140).toFixed(1)}`).join(' '));
}
async function refresh() {
  try {
    const r = await fetch('/api/live', { headers: { 'X-Maestro-Token': token() } });
    const v = await r.json();
    text('live-broker', v.broker); text('live-peers', v.peers_online);
    if (v.run) {
      text('live-run', v.run); text('live-step', v.step || '');
      text('live-second', v.last ? v.last.second : '');
      text('live-sent', v.sent); text('live-received', v.received); text('live-errors', v.errors);
      if (v.last) {
        text('live-rate', `${v.last.sent} / ${v.last.received}`);
        text('live-latency', `${ms(v.last.p50_us)} / ${ms(v.last.p99_us)}`);
      }
      text('live-whole', `${ms(v.whole.p50_us)} / ${ms(v.whole.p99_us)} / ${ms(v.whole.p999_us)}`);
      const max = Math.max(1, ...v.sent_history, ...v.received_history);
      line('live-sent-line', v.sent_history, max); line('live-received-line', v.received_history, max);
    }
    rows('live-workers', v.workers, w => [w.name, w.state, w.connected ?? '', w.sent, w.received, w.errors]);
    rows('live-sut', v.sut, s => [s.inspector, s.source, s.metric, s.value, s.per_second == null ? '' : s.per_second.toFixed(1)]);
    rows('live-faults', v.faults, f => [f.inspector, f.action, f.state, f.error || '']);
  } catch (e) { text('live-broker', 'this page lost its server: ' + e); }
}
async function control(path, body) {
  text('control-status', '…');
  const r = await fetch(path, { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-Maestro-Token': token() }, body: JSON.stringify(body) });
  const v = await r.json().catch(() => ({}));
  text('control-status', r.ok ? (v.message || 'ok') : `refused (${r.status}): ${v.error || ''}`);
}
if ($('start')) {
  $('start').onclick = () => control('/api/start', { args: $('start-args').value.trim().split(/\s+/).filter(a => a) });
  $('stop').onclick = () => control('/api/stop', {});
}
refresh(); setInterval(refresh, 1000);
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Metric, TrendPoint};

    fn row(folder: &str) -> RunRow {
        RunRow {
            folder: folder.into(),
            run_id: "r".into(),
            kind: RunKind::Plan,
            plan: Some("p<x>".into()),
            started_at: "2026-12-01T00:00:00Z".into(),
            sut: "mqtt://h/<script>".into(),
            sut_key: "mqtt://h/".into(),
            sut_name: "Mosquitto".into(),
            sut_version: "2".into(),
            maestro_version: "0".into(),
            tags: vec!["nightly".into()],
            passed: false,
            fingerprint: "f".into(),
            clock_offset_us: Some(-42),
        }
    }

    #[test]
    fn what_a_folder_holds_is_escaped_and_links_are_encoded() {
        let page = runs_page(&[row("a b\"c")], &RunFilter::default(), &[]);
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("/runs/a%20b%22c"));
        assert!(page.contains("class=\"failed\""));
        assert_eq!(percent("p/1 ä"), "p%2F1%20%C3%A4");
    }

    #[test]
    fn a_regression_is_listed_and_ringed_in_its_chart() {
        let point = |v: f64, regressed: bool| TrendPoint {
            folder: format!("f{v}"),
            started_at: "t".into(),
            fingerprint: "e".into(),
            value: v,
            band: Some(Band {
                median: 1.0,
                low: 0.9,
                high: 1.1,
                runs: 3,
            }),
            regressed,
            inconclusive: None,
            environment_changed: false,
        };
        let s = TrendSeries {
            sut_key: "mqtt://local/x".into(),
            phase: "1 fixed".into(),
            metric: Metric::ResponseTimeP99Ms,
            gates: true,
            points: vec![point(1.0, false), point(9.0, true)],
        };
        let page = trends_page(Some("p"), 5, &[s], &[]);
        assert_eq!(page.matches("class=\"regression\"").count(), 1, "{page}");
        assert_eq!(page.matches("class=\"point regression\"").count(), 1);
        assert!(page.contains("class=\"band\""));
        let quiet = trends_page(Some("p"), 5, &[], &[]);
        assert!(quiet.contains("class=\"muted none\""));
    }

    #[test]
    fn a_report_is_embedded_without_its_document_shell() {
        let r =
            inner("<html><head><style>x{}</style></head><body><svg id=\"c\"></svg></body></html>");
        assert_eq!(r, "<style>x{}</style><svg id=\"c\"></svg>");
        let r = inner("<style>body{margin:0}</style><body>b</body>");
        assert_eq!(r, "<style>#report{margin:0}</style>b");
    }
}
