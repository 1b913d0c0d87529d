//! The live terminal view of `start` and `run` (ratatui), shown when stdout is a terminal
//! and the output is a table (`--no-tui` keeps the progress lines). It draws the
//! controller's [`LiveView`] four times a second: rates, response times of the last
//! second and of the whole run, workers, SUT figures, faults and the plan's phase. `q` or
//! Ctrl-C stops the run the way SIGINT does (a second one exits at once). Log lines are
//! held while it is up and written to stderr when it closes.

use maestro_control::process::LogTap;
use maestro_controller::faults::FaultState;
use maestro_controller::lifecycle::Step;
use maestro_controller::view::{LiveView, ViewState};
use maestro_report::format::micros;
use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Sparkline, Table};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the view is drawn.
const FRAME_EVERY: Duration = Duration::from_millis(250);
/// Log lines shown at the bottom.
const LOG_LINES: usize = 4;

/// Whether `start` or `run` shows the live view: a table output on a terminal that can
/// draw one, unless `--no-tui`.
pub fn wanted(no_tui: bool, output: crate::output::Output) -> bool {
    !no_tui
        && output == crate::output::Output::Table
        && std::io::stdout().is_terminal()
        && std::io::stdin().is_terminal()
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// The live view while it is on screen.
#[derive(Debug)]
pub struct LiveTerminal {
    pub view: Arc<LiveView>,
    done: CancellationToken,
    render: tokio::task::JoinHandle<()>,
    keys: std::thread::JoinHandle<()>,
    tap: Arc<LogTap>,
}

impl LiveTerminal {
    /// Takes over the terminal (raw mode, alternate screen). `stop` is cancelled when the
    /// person watching presses `q` or Ctrl-C.
    pub fn start(stop: &CancellationToken) -> std::io::Result<Self> {
        let view = LiveView::new();
        let tap = Arc::new(LogTap::open());
        let terminal = ratatui::try_init()?;
        let done = CancellationToken::new();
        let keys = {
            let (stop, done, view) = (stop.clone(), done.clone(), view.clone());
            let spawned = std::thread::Builder::new()
                .name("live-view-keys".into())
                .spawn(move || read_keys(&stop, &done, &view));
            match spawned {
                Ok(keys) => keys,
                Err(e) => {
                    // Give the terminal back before saying why.
                    let _ = ratatui::try_restore();
                    return Err(e);
                }
            }
        };
        let render = tokio::spawn(draw_until(
            terminal,
            view.clone(),
            tap.clone(),
            done.clone(),
        ));
        Ok(Self {
            view,
            done,
            render,
            keys,
            tap,
        })
    }

    /// Gives the terminal back (after a last frame) and writes the held log lines.
    pub async fn finish(self) {
        self.done.cancel();
        let _ = self.render.await;
        let _ = ratatui::try_restore();
        let _ = self.keys.join();
        drop(self.tap);
    }
}

fn read_keys(stop: &CancellationToken, done: &CancellationToken, view: &LiveView) {
    let mut asked = false;
    while !done.is_cancelled() {
        match event::poll(Duration::from_millis(100)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => return,
        }
        let Ok(Event::Key(key)) = event::read() else {
            continue;
        };
        let stop_key = key.kind == KeyEventKind::Press
            && (key.code == KeyCode::Char('q')
                || (key.code == KeyCode::Char('c')
                    && key.modifiers.contains(KeyModifiers::CONTROL)));
        if !stop_key {
            continue;
        }
        if asked {
            let _ = ratatui::try_restore();
            eprintln!("second stop: exiting now");
            std::process::exit(i32::from(crate::exit::INTERRUPTED));
        }
        asked = true;
        view.set_stopping();
        stop.cancel();
    }
}

async fn draw_until(
    mut terminal: ratatui::DefaultTerminal,
    view: Arc<LiveView>,
    tap: Arc<LogTap>,
    done: CancellationToken,
) {
    let since = Instant::now();
    let mut tick = tokio::time::interval(FRAME_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let last = tokio::select! {
            _ = done.cancelled() => true,
            _ = tick.tick() => false,
        };
        let state = view.snapshot();
        let logs = tap.recent(LOG_LINES);
        if terminal
            .draw(|f| draw(f, &state, &logs, since.elapsed()))
            .is_err()
            || last
        {
            return;
        }
    }
}

fn step_name(step: Option<Step>, stopping: bool) -> &'static str {
    if stopping && !matches!(step, Some(Step::Done | Step::Failed)) {
        return "stopping";
    }
    match step {
        None => "waiting for workers",
        Some(Step::Configuring) => "connecting",
        Some(Step::Starting) => "starting",
        Some(Step::Running) => "running",
        Some(Step::Collecting) => "collecting results",
        Some(Step::Done) => "done",
        Some(Step::Failed) => "failed",
    }
}

fn count(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2}G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e4 {
        format!("{:.1}k", n / 1e3)
    } else if n.fract() == 0.0 {
        format!("{n:.0}")
    } else {
        format!("{n:.2}")
    }
}

fn header(s: &ViewState, elapsed: Duration) -> Paragraph<'static> {
    let second = s.last.map(|l| l.second + 1).unwrap_or(0);
    let window = s
        .window
        .map(|w| format!(" / {} s", w.as_secs()))
        .unwrap_or_default();
    let run = s.run.as_ref().map(|r| r.to_string()).unwrap_or_default();
    let mut first = vec![
        Span::raw("run ").dim(),
        Span::raw(run).bold(),
        Span::raw("  "),
        Span::styled(
            step_name(s.step, s.stopping),
            Style::default().add_modifier(Modifier::REVERSED),
        ),
        Span::raw(format!("  second {second}{window}")),
    ];
    if let Some(phase) = &s.phase {
        first.push(Span::raw("  phase ").dim());
        first.push(Span::raw(format!("{phase} (run {})", s.runs)).bold());
    }
    let offered = if s.offered_rate > 0.0 {
        format!("{}/s", count(s.offered_rate))
    } else {
        "as fast as possible".to_owned()
    };
    let second_line = Line::from(vec![
        Span::raw("SUT ").dim(),
        Span::raw(s.sut.clone()),
        Span::raw("  offered ").dim(),
        Span::raw(offered),
        Span::raw(format!("  up {} s", elapsed.as_secs())).dim(),
    ]);
    Paragraph::new(vec![Line::from(first), second_line]).block(Block::bordered().title(" maestro "))
}

fn rates(s: &ViewState) -> Paragraph<'static> {
    let last = s.last.unwrap_or_default();
    let lost = s
        .lost
        .map_or_else(|| "at the end".to_owned(), |l| l.to_string());
    let numbers = vec![
        Span::raw("sent/s ").dim(),
        Span::raw(format!("{:<9}", count(last.sent as f64))).bold(),
        Span::raw("received/s ").dim(),
        Span::raw(format!("{:<9}", count(last.received as f64))).bold(),
        Span::raw("in flight ").dim(),
        Span::raw(format!("{:<8}", s.in_flight)),
        Span::raw("errors ").dim(),
        Span::raw(format!("{:<6}", s.errors)),
        Span::raw("dup ").dim(),
        Span::raw(format!("{:<6}", s.duplicated)),
        Span::raw("lost ").dim(),
        Span::raw(lost),
    ];
    let mut totals = vec![
        Span::raw("total sent ").dim(),
        Span::raw(count(s.sent as f64)),
        Span::raw("  received ").dim(),
        Span::raw(count(s.received as f64)),
    ];
    if !s.faults_now.is_empty() {
        totals.push(Span::raw("   FAULT ").red().bold());
        totals.push(Span::raw(s.faults_now.clone()).red());
    }
    let totals = Line::from(totals);
    let p = |us: u64| micros(i64::try_from(us).unwrap_or(i64::MAX));
    let response = Line::from(vec![
        Span::raw("response  last second ").dim(),
        Span::raw(format!(
            "p50 {}  p99 {}",
            p(last.response.p50),
            p(last.response.p99)
        )),
        Span::raw("   whole run ").dim(),
        Span::raw(format!(
            "p50 {}  p99 {}  max {}",
            p(s.whole.p50),
            p(s.whole.p99),
            p(s.whole.max)
        )),
    ]);
    let mut lines = vec![Line::from(numbers), response, totals];
    if let Some(g) = &s.generator {
        let span = Span::raw(format!("generator {g}"));
        lines.push(Line::from(if g.starts_with("BOUND") {
            span.red().bold()
        } else {
            span.dim()
        }));
    }
    Paragraph::new(lines).block(Block::bordered().title(" rates "))
}

fn workers(s: &ViewState) -> Table<'static> {
    let rows = s.workers.iter().map(|w| {
        Row::new(vec![
            w.name.clone(),
            w.state.as_str().to_owned(),
            w.connected
                .map_or_else(|| "-".to_owned(), |c| c.to_string()),
            w.sent.to_string(),
            w.received.to_string(),
            w.errors.to_string(),
        ])
    });
    table(
        " workers ",
        &["worker", "state", "connected", "sent", "received", "errors"],
        &[
            Constraint::Fill(2),
            Constraint::Length(12),
            Constraint::Length(10),
            Constraint::Length(12),
            Constraint::Length(12),
            Constraint::Length(8),
        ],
        rows,
    )
}

/// A bordered table with a bold header row.
fn table<'a>(
    title: &'static str,
    header: &[&'static str],
    widths: &[Constraint],
    rows: impl IntoIterator<Item = Row<'a>>,
) -> Table<'a> {
    Table::new(rows, widths.iter().copied())
        .header(Row::new(header.to_vec()).style(Style::default().add_modifier(Modifier::BOLD)))
        .block(Block::bordered().title(title))
}

fn sut(s: &ViewState) -> Table<'static> {
    let rows = s.sut_rows.iter().map(|r| {
        let value = match &r.error {
            Some(e) => format!("not answering: {e}"),
            None => match r.per_second {
                Some(rate) => format!("{}  ({}/s)", count(r.value), count(rate)),
                None => count(r.value),
            },
        };
        Row::new(vec![
            format!("{}/{}", r.inspector, r.source),
            r.metric.clone(),
            value,
        ])
    });
    table(
        " SUT ",
        &["source", "metric", "value"],
        &[
            Constraint::Fill(1),
            Constraint::Length(20),
            Constraint::Fill(2),
        ],
        rows,
    )
}

fn faults(s: &ViewState) -> Table<'static> {
    let rows = s.faults.iter().map(|f| {
        let state = match f.state {
            FaultState::Planned => "planned",
            FaultState::Requested => "requested",
            FaultState::Active => "IN EFFECT",
            FaultState::Healed => "healed",
            FaultState::Failed => "failed",
        };
        let row = Row::new(vec![
            f.action.clone(),
            f.inspector.clone(),
            format!(
                "at {} s for {} s",
                f.at.as_secs_f64(),
                f.duration.as_secs_f64()
            ),
            match &f.error {
                Some(e) => format!("{state}: {e}"),
                None => state.to_owned(),
            },
        ]);
        if f.state == FaultState::Active {
            row.style(Style::default().red().bold())
        } else {
            row
        }
    });
    table(
        " faults ",
        &["fault", "inspector", "when", "state"],
        &[
            Constraint::Fill(1),
            Constraint::Fill(1),
            Constraint::Length(22),
            Constraint::Fill(2),
        ],
        rows,
    )
}

/// Draws one frame of the view.
pub fn draw(frame: &mut Frame, s: &ViewState, logs: &[String], elapsed: Duration) {
    let rows_of =
        |n: usize| Constraint::Length(u16::try_from(n).unwrap_or(u16::MAX).saturating_add(3));
    let mut parts = vec![
        Constraint::Length(4),
        Constraint::Length(5),
        Constraint::Length(5),
        rows_of(s.workers.len().max(1)),
    ];
    if !s.sut_rows.is_empty() {
        parts.push(rows_of(s.sut_rows.len()));
    }
    if !s.faults.is_empty() {
        parts.push(rows_of(s.faults.len()));
    }
    if !logs.is_empty() {
        parts.push(rows_of(logs.len().saturating_sub(1)));
    }
    parts.push(Constraint::Min(0));
    parts.push(Constraint::Length(1));
    let areas = Layout::vertical(parts).split(frame.area());
    let mut at = areas.iter().copied();
    let mut next = || at.next().unwrap_or(Rect::ZERO);
    frame.render_widget(header(s, elapsed), next());
    frame.render_widget(rates(s), next());
    let spark = next();
    let halves = Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)]).split(spark);
    let tail = |h: &std::collections::VecDeque<u64>, width: u16| -> Vec<u64> {
        let w = usize::from(width.saturating_sub(2));
        h.iter().skip(h.len().saturating_sub(w)).copied().collect()
    };
    frame.render_widget(
        Sparkline::default()
            .data(tail(&s.sent_history, halves[0].width))
            .block(Block::bordered().title(" sent/s "))
            .style(Style::default().green()),
        halves[0],
    );
    frame.render_widget(
        Sparkline::default()
            .data(tail(&s.received_history, halves[1].width))
            .block(Block::bordered().title(" received/s "))
            .style(Style::default().cyan()),
        halves[1],
    );
    frame.render_widget(workers(s), next());
    if !s.sut_rows.is_empty() {
        frame.render_widget(sut(s), next());
    }
    if !s.faults.is_empty() {
        frame.render_widget(faults(s), next());
    }
    if !logs.is_empty() {
        frame.render_widget(
            Paragraph::new(
                logs.iter()
                    .map(|l| Line::from(l.clone()))
                    .collect::<Vec<_>>(),
            )
            .block(Block::bordered().title(" log ")),
            next(),
        );
    }
    let _space = next();
    let help = if s.stopping {
        "stopping: waiting for the workers' results (q or Ctrl-C again: exit now)"
    } else {
        "q or Ctrl-C: stop the run (results are kept)"
    };
    frame.render_widget(Paragraph::new(help).dim(), next());
}

#[cfg(test)]
mod tests {
    use super::*;
    use maestro_controller::watch::{Second, Watch, WorkerState};
    use maestro_protocol::{PeerId, RunId};
    use ratatui::backend::TestBackend;

    fn text(state: &ViewState, logs: &[String]) -> String {
        let mut t =
            ratatui::Terminal::new(TestBackend::new(110, 40)).unwrap_or_else(|e| panic!("{e}"));
        t.draw(|f| draw(f, state, logs, Duration::from_secs(7)))
            .unwrap_or_else(|e| panic!("{e}"));
        let buffer = t.backend().buffer().clone();
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_frame_shows_rates_workers_sut_faults_and_the_phase() {
        let view = LiveView::default();
        let run = RunId::new("20261129T010203Z-abcd").unwrap_or_else(|e| panic!("{e}"));
        let w = PeerId::new("worker-1").unwrap_or_else(|e| panic!("{e}"));
        view.phase("01-fixed");
        let spec: maestro_protocol::TestSpec = serde_json::from_value(serde_json::json!({
            "sut": "mqtt://127.0.0.1:1883/t", "rate": 500.0, "duration_ms": 10000,
            "count": null, "warmup_ms": 0, "size": {"fixed": 64}, "producers": 1, "consumers": 1,
            "topics": 1
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        view.run_begins(&run, &spec, &[(w.clone(), "w-east".into())]);
        view.step(&run, Step::Running);
        view.worker(&run, &w, WorkerState::Running);
        view.second(
            &run,
            &Second {
                second: 2,
                sent: 500,
                received: 498,
                ..Second::default()
            },
            &maestro_report::Percentiles {
                p50: 1200,
                p99: 3400,
                max: 9000,
                ..Default::default()
            },
            2,
            "pause-broker",
        );
        view.sut(
            "insp",
            1_000_000,
            &maestro_protocol::SourceSample {
                source: "broker".into(),
                kind: maestro_protocol::SourceKind::MqttSys,
                error: None,
                metrics: vec![maestro_protocol::Metric::gauge("queue_depth", 42.0)],
            },
        );
        let screen = text(&view.snapshot(), &["a warning".to_owned()]);
        for want in [
            "20261129T010203Z-abcd",
            "running",
            "second 3 / 10 s",
            "01-fixed",
            "sent/s 500",
            "received/s 498",
            "FAULT pause-broker",
            "p99 3.40 ms",
            "w-east",
            "queue_depth",
            "42",
            "a warning",
            "q or Ctrl-C",
        ] {
            assert!(screen.contains(want), "no {want:?} in\n{screen}");
        }
    }
}
