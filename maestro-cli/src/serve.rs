//! `maestro-cli serve`: the web UI over a results folder and its index (runs, a run's
//! report, two runs side by side, a plan's trends with their noise bands) and the live
//! page, fed by the control broker as an observer; a JSON API for each. Pages are built
//! by `maestro_report::site` (no external assets); this module is the HTTP shell (axum),
//! the observer's loop and the guard of start and stop: those need this server to hold
//! the controller key and the request to carry the server's token.
//!
//! Any address but loopback needs the cluster keys, and then every request needs the
//! token (a page takes it once as `?token=`, then from an HttpOnly, SameSite=Strict
//! cookie). Start and stop take it only from the `X-Maestro-Token` header (or
//! `Authorization: Bearer`), which a page of another site cannot send.

use crate::exit;
use crate::output::{CliError, Outcome, Output};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use maestro_control::ControlArgs;
use maestro_controller::observe::Observer;
use maestro_controller::view::LiveView;
use maestro_controller::{ControlError, Controller};
use maestro_report::history::{self, Index, RunFilter, RunKind};
use maestro_report::site;
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The default address of the UI.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8089";
const TOKEN_HEADER: &str = "x-maestro-token";
const TOKEN_COOKIE: &str = "maestro_token";

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The results folder whose runs the UI shows (its index.sqlite is built when missing).
    #[arg(long, env = "MAESTRO_RESULTS", default_value = "results")]
    pub results: PathBuf,
    /// Where the UI listens. Any address but loopback needs the cluster keys (--keys), and
    /// then every request needs the token.
    #[arg(long, env = "MAESTRO_UI_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// The token that starting and stopping runs need (and every request off loopback)
    /// [default: a new random one, printed at start].
    #[arg(long, env = "MAESTRO_TOKEN")]
    pub token: Option<String>,
    /// How many earlier runs a trend's noise band is drawn from.
    #[arg(long, env = "MAESTRO_TREND_RUNS", default_value_t = 10)]
    pub trend_runs: usize,
    /// Do not watch the control broker: the live page stays empty.
    #[arg(long, env = "MAESTRO_NO_LIVE")]
    pub no_live: bool,
}

/// What the handlers share.
#[derive(Debug)]
struct Shared {
    root: PathBuf,
    index: Mutex<Index>,
    token: String,
    /// Every request needs the token (listening off loopback).
    private: bool,
    /// This server holds the controller key: it may start and stop runs.
    control: Option<ControlArgs>,
    history: usize,
    view: Arc<LiveView>,
    broker: Mutex<String>,
    online: Mutex<usize>,
    /// The run this server started, while it goes on.
    started: Mutex<Option<CancellationToken>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

type App = Arc<Shared>;

fn usage(problem: String) -> Outcome {
    Outcome {
        stdout: String::new(),
        code: exit::USAGE,
        problem: Some(problem),
        peers: Vec::new(),
    }
}

/// A new random token: 128 bits, hex.
fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// `maestro-cli serve`: serves until `shutdown`.
pub async fn serve(
    control: &ControlArgs,
    args: ServeArgs,
    shutdown: &CancellationToken,
) -> Result<Outcome, CliError> {
    let signer = control.signer(maestro_protocol::Role::Controller)?;
    let keyed = signer.is_on();
    let private = !args.listen.ip().is_loopback();
    if private && !keyed {
        return Ok(usage(format!(
            "--listen {}: an address other than loopback needs the cluster keys (--keys DIR), and then every request needs the token",
            args.listen
        )));
    }
    if args.trend_runs < history::MIN_HISTORY {
        return Ok(usage(format!(
            "--trend-runs {}: a noise band needs at least {} earlier runs",
            args.trend_runs,
            history::MIN_HISTORY
        )));
    }
    if let Some(t) = &args.token
        && (t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Ok(usage(
            "--token: at least 16 printable characters, no spaces".to_owned(),
        ));
    }
    std::fs::create_dir_all(&args.results).map_err(|e| CliError::Io(args.results.clone(), e))?;
    let mut index = Index::open(&args.results)?;
    if index.created || index.is_empty()? {
        index.rebuild()?;
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => return Ok(usage(format!("cannot listen on {}: {e}", args.listen))),
    };
    let addr = listener.local_addr().unwrap_or(args.listen);
    let token = args.token.clone().unwrap_or_else(new_token);
    let app: App = Arc::new(Shared {
        root: args.results.clone(),
        index: Mutex::new(index),
        token,
        private,
        control: keyed.then(|| control.clone()),
        history: args.trend_runs,
        view: LiveView::new(),
        broker: Mutex::new(if args.no_live {
            "not watched (--no-live)".to_owned()
        } else {
            format!("connecting to {}", control.url)
        }),
        online: Mutex::new(0),
        started: Mutex::new(None),
        tasks: TaskTracker::new(),
        shutdown: shutdown.child_token(),
    });
    if !args.no_live {
        app.tasks
            .spawn(observe(control.clone(), app.clone(), app.shutdown.clone()));
    }
    let router = Router::new()
        .route("/", get(runs_page))
        .route("/runs/:folder", get(run_page))
        .route("/compare", get(compare_page))
        .route("/trends", get(trends_page))
        .route("/live", get(live_page))
        .route("/api/runs", get(api_runs))
        .route("/api/runs/:folder", get(api_run))
        .route("/api/compare", get(api_compare))
        .route("/api/trends", get(api_trends))
        .route("/api/plans", get(api_plans))
        .route("/api/live", get(api_live))
        .route("/api/start", post(api_start))
        .route("/api/stop", post(api_stop))
        .with_state(app.clone());
    let base = format!("http://{addr}/");
    println!(
        "serving {base} (results: {}); start and stop runs from {base}live?token={}",
        args.results.display(),
        app.token
    );
    tracing::info!(%addr, results = %args.results.display(), control = keyed, "serving");
    let stop = app.shutdown.clone();
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    app.shutdown.cancel();
    app.tasks.close();
    if tokio::time::timeout(Duration::from_secs(30), app.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("a task of the server did not end within 30 s");
    }
    if let Err(e) = served {
        return Ok(Outcome {
            stdout: String::new(),
            code: exit::INTERNAL,
            problem: Some(format!("the server on {addr} failed: {e}")),
            peers: Vec::new(),
        });
    }
    Ok(Outcome {
        stdout: String::new(),
        code: exit::OK,
        problem: None,
        peers: Vec::new(),
    })
}

/// Watches the control broker until `stop`: every event and presence change goes to the
/// observer; a lost connection is retried every 2 s.
async fn observe(control: ControlArgs, app: App, stop: CancellationToken) {
    let mut observer = Observer::new(app.view.clone());
    let set = |s: String| *app.broker.lock().unwrap_or_else(|p| p.into_inner()) = s;
    while !stop.is_cancelled() {
        let connected = async {
            let url = control.endpoint().map_err(|e| ControlError::Unreachable {
                url: Box::new(control.url.clone()),
                reason: e.to_string(),
            })?;
            let signer = control
                .signer(maestro_protocol::Role::Controller)
                .map_err(|e| ControlError::Unreachable {
                    url: Box::new(control.url.clone()),
                    reason: e.to_string(),
                })?;
            Controller::connect_signed(&url, &control.cluster, signer, Duration::from_secs(5)).await
        };
        let mut controller = tokio::select! {
            _ = stop.cancelled() => break,
            c = connected => match c {
                Ok(c) => c,
                Err(e) => {
                    set(format!("unreachable: {e}"));
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    }
                }
            },
        };
        set(format!(
            "{} (cluster {}{})",
            control.url,
            control.cluster,
            if controller.signs() { ", signed" } else { "" }
        ));
        loop {
            let until = tokio::time::Instant::now() + Duration::from_secs(3600);
            match controller.next(until, &stop).await {
                Ok(Some(maestro_controller::client::Incoming::Presence(id, p))) => {
                    observer.presence(&id, p.as_ref());
                    *app.online.lock().unwrap_or_else(|p| p.into_inner()) = observer.online();
                }
                Ok(Some(maestro_controller::client::Incoming::Event(note))) => observer.note(&note),
                Ok(_) => {}
                Err(ControlError::Interrupted) => break,
                Err(e) => {
                    set(format!("lost: {e}"));
                    break;
                }
            }
        }
        controller.close().await;
    }
}

/// Whether `given` is the token (compared in constant time).
fn token_is(app: &Shared, given: &str) -> bool {
    let (a, b) = (app.token.as_bytes(), given.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token a request carries in its header (start, stop, the API).
fn header_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(TOKEN_COOKIE)?.strip_prefix('='))
}

/// A request refused: its status and why, answered as `{"error": ...}`.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

fn forbidden() -> Refusal {
    error(
        StatusCode::UNAUTHORIZED,
        "this server listens beyond loopback: requests need its token (?token= once, or the X-Maestro-Token header)",
    )
}

/// A page or read of the API: open on loopback; elsewhere it needs the token (header,
/// cookie, or `?token=` which then sets the cookie).
fn may_read(app: &Shared, headers: &HeaderMap, query_token: Option<&str>) -> Result<bool, Refusal> {
    host_is_ours(app, headers)?;
    if !app.private {
        return Ok(false);
    }
    if header_token(headers).is_some_and(|t| token_is(app, t))
        || cookie_token(headers).is_some_and(|t| token_is(app, t))
    {
        return Ok(false);
    }
    if query_token.is_some_and(|t| token_is(app, t)) {
        return Ok(true);
    }
    Err(forbidden())
}

/// On loopback, a request must name this server by an address or `localhost`: a page of
/// another site whose name was made to resolve to 127.0.0.1 (DNS rebinding) sends its
/// own name, and reads nothing.
fn host_is_ours(app: &Shared, headers: &HeaderMap) -> Result<(), Refusal> {
    if app.private {
        return Ok(());
    }
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return Ok(());
    };
    if host_is_local(host) {
        Ok(())
    } else {
        Err(error(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "Host {host:?}: this server on loopback answers to an IP address or localhost only"
            ),
        ))
    }
}

/// `127.0.0.1:8089`, `[::1]:8089`, `localhost:8089` (with or without the port).
fn host_is_local(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// A page, with the token's cookie set when it came in the query.
fn page(app: &Shared, set_cookie: bool, html: String) -> Response {
    let mut r = Html(html).into_response();
    if set_cookie
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{TOKEN_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
            app.token
        ))
    {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

#[derive(Debug, Default, Deserialize)]
struct RunsQuery {
    plan: Option<String>,
    sut: Option<String>,
    tag: Option<String>,
    /// `passed` or `failed`.
    verdict: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    token: Option<String>,
}

impl RunsQuery {
    fn filter(&self) -> Result<RunFilter, Refusal> {
        let some = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let passed = match self.verdict.as_deref().map(str::trim) {
            None | Some("") => None,
            Some("passed") => Some(true),
            Some("failed") => Some(false),
            Some(other) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("verdict={other:?}: passed or failed"),
                ));
            }
        };
        Ok(RunFilter {
            plan: some(&self.plan),
            sut: some(&self.sut),
            tag: some(&self.tag),
            passed,
            since: some(&self.since),
            until: some(&self.until),
            limit: Some(self.limit.unwrap_or(200).min(10_000)),
        })
    }
}

fn with_index<T>(
    app: &Shared,
    f: impl FnOnce(&Index) -> Result<T, history::HistoryError>,
) -> Result<T, Refusal> {
    let index = app.index.lock().unwrap_or_else(|p| p.into_inner());
    f(&index).map_err(internal)
}

async fn runs_page(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> Response {
    let cookie = match may_read(&app, &headers, q.token.as_deref()) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let filter = match q.filter() {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    match with_index(&app, |i| Ok((i.runs(&filter)?, i.plans()?))) {
        Ok((rows, plans)) => page(&app, cookie, site::runs_page(&rows, &filter, &plans)),
        Err(r) => r.into_response(),
    }
}

async fn api_runs(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> Response {
    if let Err(r) = may_read(&app, &headers, None) {
        return r.into_response();
    }
    let filter = match q.filter() {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    match with_index(&app, |i| i.runs(&filter)) {
        Ok(rows) => Json(json!({ "runs": rows })).into_response(),
        Err(r) => r.into_response(),
    }
}

async fn api_plans(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(r) = may_read(&app, &headers, None) {
        return r.into_response();
    }
    match with_index(&app, |i| i.plans()) {
        Ok(plans) => Json(json!({ "plans": plans })).into_response(),
        Err(r) => r.into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn not_found(folder: &str) -> Refusal {
    error(
        StatusCode::NOT_FOUND,
        format!("no run {folder:?} in the index (maestro-cli index rebuilds it)"),
    )
}

async fn run_page(
    State(app): State<App>,
    headers: HeaderMap,
    UrlPath(folder): UrlPath<String>,
    Query(q): Query<TokenQuery>,
) -> Response {
    let cookie = match may_read(&app, &headers, q.token.as_deref()) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let found = match with_index(&app, |i| i.run(&folder)) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let Some((run, phases)) = found else {
        return not_found(&folder).into_response();
    };
    // The folder name comes from the index, never from the request.
    // A plan's report.html as it would be drawn now; a single run's charts.
    let dir = app.root.join(&run.folder);
    let kind = run.kind;
    let drawn = tokio::task::spawn_blocking(move || match kind {
        RunKind::Plan => maestro_report::html::render(&dir),
        RunKind::Run => maestro_report::html::run_charts(&dir),
    })
    .await;
    let report = match drawn {
        Ok(Ok(html)) => html,
        Ok(Err(e)) => format!(
            "<p class=\"failed\">the report cannot be drawn: {}</p>",
            html_escape::encode_text(&e.to_string())
        ),
        Err(e) => return internal(e).into_response(),
    };
    let report = Some(report);
    page(
        &app,
        cookie,
        site::run_page(&run, &phases, report.as_deref()),
    )
}

async fn api_run(
    State(app): State<App>,
    headers: HeaderMap,
    UrlPath(folder): UrlPath<String>,
) -> Response {
    if let Err(r) = may_read(&app, &headers, None) {
        return r.into_response();
    }
    let found = match with_index(&app, |i| i.run(&folder)) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let Some((run, phases)) = found else {
        return not_found(&folder).into_response();
    };
    let dir = app.root.join(&run.folder);
    // The whole typed result, as the folder holds it.
    let result: Result<Value, String> = match run.kind {
        RunKind::Plan => maestro_report::folder::read_plan(&dir)
            .map_err(|e| e.to_string())
            .and_then(|p| serde_json::to_value(p).map_err(|e| e.to_string())),
        RunKind::Run => maestro_report::folder::read_run(&dir)
            .map_err(|e| e.to_string())
            .and_then(|s| serde_json::to_value(s).map_err(|e| e.to_string())),
    };
    match result {
        Ok(summary) => {
            Json(json!({ "run": run, "phases": phases, "summary": summary })).into_response()
        }
        Err(e) => internal(e).into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct CompareQuery {
    a: Option<String>,
    b: Option<String>,
    token: Option<String>,
}

type Compared = (
    (history::RunRow, Vec<history::PhaseRow>),
    (history::RunRow, Vec<history::PhaseRow>),
    Option<Vec<maestro_report::compare::Delta>>,
);

fn compared(app: &Shared, q: &CompareQuery) -> Result<Compared, Refusal> {
    let (Some(a), Some(b)) = (q.a.as_deref(), q.b.as_deref()) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "compare needs two runs: ?a=FOLDER&b=FOLDER (pick A and B in the runs list)",
        ));
    };
    let (ra, rb) = with_index(app, |i| Ok((i.run(a)?, i.run(b)?)))?;
    let ra = ra.ok_or_else(|| not_found(a))?;
    let rb = rb.ok_or_else(|| not_found(b))?;
    let deltas = if ra.0.kind == RunKind::Plan && rb.0.kind == RunKind::Plan {
        let read = |f: &str| maestro_report::folder::read_plan(&app.root.join(f));
        match (read(&ra.0.folder), read(&rb.0.folder)) {
            (Ok(pa), Ok(pb)) => {
                let none = maestro_report::model::Thresholds::default();
                let limits = maestro_report::compare::Limits::resolve(&none, &pb.compare);
                Some(maestro_report::compare::compare(&pa, &pb, &limits))
            }
            (Err(e), _) | (_, Err(e)) => return Err(internal(e)),
        }
    } else {
        None
    };
    Ok((ra, rb, deltas))
}

async fn compare_page(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<CompareQuery>,
) -> Response {
    let cookie = match may_read(&app, &headers, q.token.as_deref()) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    match compared(&app, &q) {
        Ok((a, b, deltas)) => page(
            &app,
            cookie,
            site::compare_page((&a.0, &a.1), (&b.0, &b.1), deltas.as_deref()),
        ),
        Err(r) => r.into_response(),
    }
}

async fn api_compare(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<CompareQuery>,
) -> Response {
    if let Err(r) = may_read(&app, &headers, None) {
        return r.into_response();
    }
    match compared(&app, &q) {
        Ok((a, b, deltas)) => Json(json!({
            "a": {"run": a.0, "phases": a.1},
            "b": {"run": b.0, "phases": b.1},
            "worse": deltas,
        }))
        .into_response(),
        Err(r) => r.into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct TrendsQuery {
    plan: Option<String>,
    sut: Option<String>,
    n: Option<usize>,
    token: Option<String>,
}

fn trend_series(
    app: &Shared,
    q: &TrendsQuery,
) -> Result<(usize, Vec<history::TrendSeries>), Refusal> {
    let n = q.n.unwrap_or(app.history);
    if n < history::MIN_HISTORY {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "n={n}: a noise band needs at least {} earlier runs",
                history::MIN_HISTORY
            ),
        ));
    }
    let Some(plan) = q.plan.as_deref().filter(|p| !p.is_empty()) else {
        return Ok((n, Vec::new()));
    };
    let sut = q.sut.as_deref().filter(|s| !s.is_empty());
    let runs = with_index(app, |i| i.plan_runs(plan, sut))?;
    Ok((n, history::trends(&runs, n)))
}

async fn trends_page(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<TrendsQuery>,
) -> Response {
    let cookie = match may_read(&app, &headers, q.token.as_deref()) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let plans = match with_index(&app, |i| i.plans()) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let mut q = q;
    if q.plan.as_deref().is_none_or(str::is_empty) {
        q.plan = plans.first().map(|p| p.plan.clone());
    }
    match trend_series(&app, &q) {
        Ok((n, series)) => page(
            &app,
            cookie,
            site::trends_page(q.plan.as_deref(), n, &series, &plans),
        ),
        Err(r) => r.into_response(),
    }
}

async fn api_trends(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<TrendsQuery>,
) -> Response {
    if let Err(r) = may_read(&app, &headers, None) {
        return r.into_response();
    }
    if q.plan.as_deref().is_none_or(str::is_empty) {
        return error(
            StatusCode::BAD_REQUEST,
            "trends need a plan: /api/trends?plan=NAME",
        )
        .into_response();
    }
    match trend_series(&app, &q) {
        Ok((n, series)) => Json(json!({
            "plan": q.plan,
            "n": n,
            "test": history::TEST,
            "regressions": series.iter().map(|s| s.regressions().count()).sum::<usize>(),
            "inconclusive": series
                .iter()
                .map(|s| s.points.iter().filter(|p| p.inconclusive.is_some()).count())
                .sum::<usize>(),
            "series": series,
        }))
        .into_response(),
        Err(r) => r.into_response(),
    }
}

async fn live_page(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> Response {
    let cookie = match may_read(&app, &headers, q.token.as_deref()) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    page(&app, cookie, site::live_page(app.control.is_some()))
}

/// The live view as JSON.
fn live_json(app: &Shared) -> Value {
    let s = app.view.snapshot();
    let pct = |p: &maestro_report::Percentiles| json!({"p50_us": p.p50, "p99_us": p.p99, "p999_us": p.p999, "count": p.count});
    json!({
        "broker": *app.broker.lock().unwrap_or_else(|p| p.into_inner()),
        "peers_online": *app.online.lock().unwrap_or_else(|p| p.into_inner()),
        "can_control": app.control.is_some(),
        "started_here": app.started.lock().unwrap_or_else(|p| p.into_inner()).is_some(),
        "run": s.run,
        "step": s.step.map(|st| format!("{st:?}").to_lowercase()),
        "sent": s.sent,
        "received": s.received,
        "errors": s.errors,
        "duplicated": s.duplicated,
        "in_flight": s.in_flight,
        "last": s.last.map(|l| json!({
            "second": l.second, "sent": l.sent, "received": l.received, "errors": l.errors,
            "p50_us": l.response.p50, "p99_us": l.response.p99,
        })),
        "whole": pct(&s.whole),
        "sent_history": s.sent_history,
        "received_history": s.received_history,
        "workers": s.workers.iter().map(|w| json!({
            "id": w.id, "name": w.name, "state": w.state.as_str(), "connected": w.connected,
            "sent": w.sent, "received": w.received, "errors": w.errors,
        })).collect::<Vec<_>>(),
        "sut": s.sut_rows.iter().map(|r| json!({
            "inspector": r.inspector, "source": r.source, "metric": r.metric, "value": r.value,
            "per_second": r.per_second, "error": r.error,
        })).collect::<Vec<_>>(),
        "faults": s.faults.iter().map(|f| json!({
            "inspector": f.inspector, "action": f.action,
            "state": format!("{:?}", f.state).to_lowercase(), "error": f.error,
        })).collect::<Vec<_>>(),
    })
}

async fn api_live(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(r) = may_read(&app, &headers, None) {
        return r.into_response();
    }
    Json(live_json(&app)).into_response()
}

/// Start and stop: this server holds the controller key, and the request carries the
/// token in its header.
fn may_control(app: &Shared, headers: &HeaderMap) -> Result<ControlArgs, Refusal> {
    host_is_ours(app, headers)?;
    let Some(control) = app.control.clone() else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "this server has no controller key: starting and stopping runs needs `maestro-cli serve --keys DIR`",
        ));
    };
    if !header_token(headers).is_some_and(|t| token_is(app, t)) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "starting and stopping runs needs this server's token in the X-Maestro-Token header (open the page from the link `serve` printed)",
        ));
    }
    Ok(control)
}

#[derive(Debug, Deserialize)]
struct StartBody {
    /// `maestro-cli start`'s arguments.
    args: Vec<String>,
}

async fn api_start(
    State(app): State<App>,
    headers: HeaderMap,
    Json(body): Json<StartBody>,
) -> Response {
    let control = match may_control(&app, &headers) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let argv = ["maestro-cli", "start"]
        .into_iter()
        .map(str::to_owned)
        .chain(body.args.iter().cloned());
    let parsed = match <crate::Cli as clap::Parser>::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.render().to_string()).into_response(),
    };
    let crate::cli::Command::Start(mut start) = parsed.command else {
        return error(StatusCode::BAD_REQUEST, "not the arguments of start").into_response();
    };
    // Its results land where this server indexes, and it runs on this server's cluster.
    start.results = app.root.clone();
    start.no_tui = true;
    if let Err(e) = start
        .spec()
        .map(|mut spec| maestro_controller::run::prepare(&mut spec, &start.faults))
    {
        return error(StatusCode::BAD_REQUEST, e.to_string()).into_response();
    }
    let token = {
        let mut started = app.started.lock().unwrap_or_else(|p| p.into_inner());
        if started.is_some() {
            return error(
                StatusCode::CONFLICT,
                "a run started here is still going on: stop it first",
            )
            .into_response();
        }
        let t = app.shutdown.child_token();
        *started = Some(t.clone());
        t
    };
    let shared = app.clone();
    app.tasks.spawn(async move {
        let outcome = crate::cli::start(&control, Output::Json, start, &token).await;
        match outcome {
            Ok(o) if o.code == exit::OK => tracing::info!("the run started from the browser finished"),
            Ok(o) => tracing::warn!(code = o.code, problem = ?o.problem, "the run started from the browser did not pass"),
            Err(e) => tracing::warn!(error = %e, "the run started from the browser failed"),
        }
        *shared.started.lock().unwrap_or_else(|p| p.into_inner()) = None;
    });
    (
        StatusCode::ACCEPTED,
        Json(json!({"message": "started: watch it here; its results join the runs list when it ends"})),
    )
        .into_response()
}

async fn api_stop(State(app): State<App>, headers: HeaderMap) -> Response {
    let control = match may_control(&app, &headers) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let args = crate::cli::StopArgs {
        run: None,
        timeout: Duration::from_secs(5),
    };
    match crate::cli::stop(&control, Output::Json, args, &app.shutdown.child_token()).await {
        Ok(o) => {
            let stopped: Value = serde_json::from_str(&o.stdout).unwrap_or(Value::Null);
            let n = stopped.as_array().map_or(0, Vec::len);
            Json(json!({
                "message": if n == 0 { "no run in progress".to_owned() } else { format!("stop sent to {n} workers") },
                "stopped": stopped,
            }))
            .into_response()
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_comes_from_its_header_or_cookie_only() {
        let mut h = HeaderMap::new();
        assert_eq!(header_token(&h), None);
        h.insert(TOKEN_HEADER, HeaderValue::from_static("abc"));
        assert_eq!(header_token(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer xyz"),
        );
        assert_eq!(header_token(&h), Some("xyz"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; maestro_token=t0k"),
        );
        assert_eq!(cookie_token(&h), Some("t0k"));
        assert_eq!(new_token().len(), 32);
    }

    #[test]
    fn only_an_address_or_localhost_names_a_loopback_server() {
        for ok in [
            "127.0.0.1:8089",
            "localhost",
            "LOCALHOST:1",
            "[::1]:8089",
            "10.0.0.2",
        ] {
            assert!(host_is_local(ok), "{ok}");
        }
        for bad in [
            "evil.example:8089",
            "127.0.0.1.nip.io",
            "localhost.evil.example",
            "",
        ] {
            assert!(!host_is_local(bad), "{bad}");
        }
    }
}
