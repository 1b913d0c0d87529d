//! `maestro-cli serve` in a real browser: headless Chromium (Debian's package) driven
//! through WebDriver (chromedriver), against the real binaries and Mosquitto. The runs
//! list and its filters, a run's page with its charts, two runs compared, a trend page
//! with a regression made by stopping the broker on purpose, and the live page updating
//! during a run that the browser starts and stops with the server's token and key.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use fantoccini::{Client, ClientBuilder, Locator};
use maestro_testkit::{
    Cluster, Lab, Mosquitto, Proc, TestBroker, free_port, run_cli, signal, spawn_peer,
    unique_cluster, wait_for,
};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
    profile: maestro_testkit::TestDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("chromedriver (Debian's chromium-driver) does not run: {e}")
            });
        let d = Driver {
            child,
            port,
            profile: maestro_testkit::test_dir("chromium"),
        };
        assert!(
            wait_for(Duration::from_secs(20), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "chromedriver did not listen"
        );
        d
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         format!("--user-data-dir={}", self.profile.join("profile").display())],
            }),
        );
        tokio::time::timeout(
            Duration::from_secs(60),
            ClientBuilder::native()
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{}", self.port)),
        )
        .await
        .expect("chromium started within 60 s")
        .expect("a WebDriver session")
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Waits for a CSS selector (10 s).
async fn find(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
}

async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css)).await.unwrap().len()
}

async fn text(c: &Client, css: &str) -> String {
    find(c, css).await.text().await.unwrap()
}

/// Polls `f` until it is true (every 200 ms, up to `timeout`).
async fn until<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// `maestro-cli serve` on a free port; returns it with its port and token.
fn serve(args: &[&str]) -> (Proc, u16, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut all = vec!["serve", "--listen", listen.as_str()];
    all.extend_from_slice(args);
    let mut p = Proc::spawn("serve", "maestro-cli", &all).unwrap();
    let line = p
        .wait_for_line("serving http://", Duration::from_secs(20))
        .unwrap();
    let token = line.rsplit("token=").next().unwrap().trim().to_owned();
    (p, port, token)
}

/// A raw HTTP/1.0 request: (status, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str("Host: localhost\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

fn get_json(port: u16, path: &str) -> Value {
    let (status, body) = http(port, "GET", path, &[], "");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn run_plan(c: &Cluster, plan: &Path, results: &Path) -> PathBuf {
    let before = folders(results);
    let run = c.cli(
        &[
            "run",
            plan.to_str().unwrap(),
            "--results",
            results.to_str().unwrap(),
            "-o",
            "json",
        ],
        Duration::from_secs(60),
    );
    assert!(matches!(run.code, Some(0 | 1)), "{run:?}");
    let new: Vec<_> = folders(results)
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    new[0].clone()
}

fn folders(results: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(results) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn the_runs_a_run_two_runs_and_a_flagged_regression_in_a_browser() {
    let c = Cluster::start(1);
    let mq = Mosquitto::start().unwrap();
    let dir = maestro_testkit::test_dir("web");
    let results = dir.join("results");
    let plan = dir.join("web.toml");
    std::fs::write(
        &plan,
        format!(
            "[plan]\nname = \"web\"\nsut_name = \"Mosquitto\"\ntags = [\"nightly\"]\n\n\
             [sut]\nurl = \"mqtt://127.0.0.1:{}/web?qos=1\"\n\n\
             [workload]\ntopics = 1\nmessage_size = 256\n\n\
             [conditions]\nfail_when_generator_bound = false\n\n\
             [[phase]]\nkind = \"warmup\"\nrate = 500\nduration = \"1s\"\n\n\
             [[phase]]\nkind = \"fixed\"\nrate = 1000\nduration = \"4s\"\n",
            mq.port
        ),
    )
    .unwrap();
    let mut made: Vec<PathBuf> = (0..3).map(|_| run_plan(&c, &plan, &results)).collect();
    // The broker stopped for 600 ms in the fixed phase.
    let pid = mq.proc.pid();
    let slowed = std::thread::scope(|scope| {
        let stopper = scope.spawn(move || {
            std::thread::sleep(Duration::from_millis(3000));
            maestro_testkit::signal_pid(pid, signal::SIGSTOP);
            std::thread::sleep(Duration::from_millis(600));
            maestro_testkit::signal_pid(pid, signal::SIGCONT);
        });
        let folder = run_plan(&c, &plan, &results);
        stopper.join().unwrap();
        folder
    });
    made.push(slowed.clone());
    let single = c.cli(
        &[
            "start",
            "--sut",
            &format!("mqtt://127.0.0.1:{}/single", mq.port),
            "--count",
            "100",
            "--results",
            results.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(single.code, Some(0), "{single:?}");

    let (_serve, port, _token) = serve(&[
        "--results",
        results.to_str().unwrap(),
        "--no-live",
        "--trend-runs",
        "3",
    ]);

    // The API first: five runs, the plan's trend with the slowed run flagged.
    let runs = get_json(port, "/api/runs");
    assert_eq!(runs["runs"].as_array().unwrap().len(), 5, "{runs:#}");
    let plans = get_json(port, "/api/runs?plan=web&verdict=passed");
    assert!(
        plans["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["plan"] == "web" && r["passed"] == true)
    );
    let single_folder = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "run")
        .unwrap()["folder"]
        .as_str()
        .unwrap()
        .to_owned();
    let one = get_json(port, &format!("/api/runs/{}", name(&slowed)));
    assert_eq!(one["run"]["plan"], "web");
    assert_eq!(one["summary"]["plan"], "web", "the whole typed result");
    let trends = get_json(port, "/api/trends?plan=web&n=3");
    let p99 = trends["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["metric"] == "response_time_p99_ms" && s["phase"] == "1 fixed")
        .unwrap();
    let flagged: Vec<&str> = p99["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["regressed"] == true)
        .map(|p| p["folder"].as_str().unwrap())
        .collect();
    assert_eq!(flagged, [name(&slowed).as_str()], "{p99:#}");
    let (status, body) = http(port, "GET", "/api/runs/..%2F..%2Fetc", &[], "");
    assert_eq!(status, 404, "{body}");
    let (status, _) = http(port, "GET", "/api/trends", &[], "");
    assert_eq!(status, 400);
    // A page of another site whose name resolves to 127.0.0.1 (DNS rebinding) reads nothing.
    let (status, body) = http(port, "GET", "/api/runs", &[("Host", "evil.example:80")], "");
    assert_eq!(status, 421, "{body}");

    let driver = Driver::start();
    runtime().block_on(async {
        let b = driver.browser().await;
        let base = format!("http://127.0.0.1:{port}");
        // The runs list and a filter.
        b.goto(&format!("{base}/")).await.unwrap();
        find(&b, "table#runs").await;
        assert_eq!(count(&b, "tr.run").await, 5);
        b.find(Locator::Css("#filter-plan"))
            .await
            .unwrap()
            .select_by_value("web")
            .await
            .unwrap();
        b.find(Locator::Css("#filter"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert!(
            until(Duration::from_secs(10), || async {
                count(&b, "tr.run").await == 4
            })
            .await
        );
        // A run's page, from its link: its report's charts.
        let link = find(
            &b,
            &format!("tr.run[data-folder='{}'] a[href^='/runs/']", name(&made[0])),
        )
        .await;
        link.click().await.unwrap();
        find(&b, "#report svg.chart").await;
        assert!(
            count(&b, "#report svg.chart").await >= 2,
            "the report's charts"
        );
        assert!(text(&b, "#phases").await.contains("1 fixed"));
        // A single run's page has its charts too.
        b.goto(&format!("{base}/runs/{single_folder}"))
            .await
            .unwrap();
        find(&b, "#report svg.chart").await;
        assert_eq!(count(&b, "#report svg.chart").await, 2);
        // Two runs side by side: A the first, B the slowed one.
        b.goto(&format!("{base}/?plan=web")).await.unwrap();
        find(&b, &format!("input[name='a'][value='{}']", name(&made[0])))
            .await
            .click()
            .await
            .unwrap();
        find(&b, &format!("input[name='b'][value='{}']", name(&slowed)))
            .await
            .click()
            .await
            .unwrap();
        b.find(Locator::Css("#compare"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let side = text(&b, "#side-by-side").await;
        assert!(
            side.contains("p99 ms") && side.contains("1 fixed"),
            "{side}"
        );
        assert!(
            count(&b, "#side-by-side td.worse").await >= 1,
            "the slowed run's p99 is worse"
        );
        assert!(
            text(&b, "#deltas").await.contains("p99"),
            "compare's verdict names p99"
        );
        // The trend page flags the slowed run, in its list and in its chart.
        b.goto(&format!("{base}/trends?plan=web&n=3"))
            .await
            .unwrap();
        let listed = find(
            &b,
            "#regressions li.regression[data-metric='response_time_p99_ms']",
        )
        .await;
        assert_eq!(
            listed.attr("data-folder").await.unwrap().as_deref(),
            Some(name(&slowed).as_str())
        );
        let ring = find(
            &b,
            "svg.trend[data-metric='response_time_p99_ms'] circle.point.regression",
        )
        .await;
        assert_eq!(
            ring.attr("data-folder").await.unwrap().as_deref(),
            Some(name(&slowed).as_str())
        );
        assert!(
            count(&b, "svg.trend polygon.band").await >= 1,
            "the noise band is drawn"
        );
        b.close().await.unwrap();
    });
}

#[test]
fn the_live_page_follows_a_run_the_browser_starts_and_stops_with_the_key() {
    let lab = Lab::new("web").unwrap();
    let keys = lab.dir.to_string_lossy().into_owned();
    let control = TestBroker::start(&[]).unwrap();
    let url = control.url();
    let cluster = unique_cluster();
    let c = cluster.to_string();
    let _worker = spawn_peer("worker", &url, &cluster, &["--name", "w0", "--keys", &keys]).unwrap();
    let mq = Mosquitto::start().unwrap();
    let dir = maestro_testkit::test_dir("web-live");
    let results = dir.join("results");
    let results_s = results.to_string_lossy().into_owned();

    // Off loopback, a server without keys refuses to start.
    // (This test's control URL: keys remembered for another one do not apply.)
    let off = run_cli(
        &[
            "serve",
            "-m",
            &url,
            "--listen",
            "0.0.0.0:0",
            "--results",
            &results_s,
        ],
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(off.code, Some(2), "{off:?}");
    assert!(off.stderr.contains("needs the cluster keys"), "{off:?}");

    // Without the controller key the page offers no controls and the API refuses.
    let (_plain, plain_port, plain_token) =
        serve(&["-m", &url, "--cluster", &c, "--results", &results_s]);
    let (status, body) = http(
        plain_port,
        "POST",
        "/api/stop",
        &[("X-Maestro-Token", &plain_token)],
        "{}",
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("controller key"), "{body}");

    let (_serve, port, token) = serve(&[
        "-m",
        &url,
        "--cluster",
        &c,
        "--keys",
        &keys,
        "--results",
        &results_s,
    ]);
    // With the key but without the token: refused.
    let start = json!({"args": ["--sut", format!("mqtt://127.0.0.1:{}/live", mq.port), "--rate", "200", "--duration", "60s"]}).to_string();
    let (status, body) = http(port, "POST", "/api/start", &[], &start);
    assert_eq!(status, 401, "{body}");
    let (status, _) = http(
        port,
        "POST",
        "/api/start",
        &[("X-Maestro-Token", "not-the-token-at-all")],
        &start,
    );
    assert_eq!(status, 401);
    // A bad start is a clear 400, and nothing runs.
    let (status, body) = http(
        port,
        "POST",
        "/api/start",
        &[("X-Maestro-Token", &token)],
        r#"{"args": ["--rate", "fast"]}"#,
    );
    assert_eq!(status, 400, "{body}");

    let driver = Driver::start();
    runtime().block_on(async {
        let b = driver.browser().await;
        let base = format!("http://127.0.0.1:{port}");
        b.goto(&format!("{base}/live?token={token}")).await.unwrap();
        find(&b, "#controls").await;
        assert!(
            until(Duration::from_secs(15), || async {
                text(&b, "#live-broker").await.contains("signed")
            })
            .await,
            "the page says it watches the signed cluster"
        );
        let args = find(&b, "#start-args").await;
        args.send_keys(&format!(
            "--sut mqtt://127.0.0.1:{}/live --rate 200 --duration 60s",
            mq.port
        ))
        .await
        .unwrap();
        b.find(Locator::Css("#start"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let sent = |b: &Client| {
            let b = b.clone();
            async move { text(&b, "#live-sent").await.parse::<u64>().unwrap_or(0) }
        };
        assert!(
            until(Duration::from_secs(30), || async { sent(&b).await > 0 }).await,
            "the live page shows the run: {}",
            text(&b, "main").await
        );
        let first = sent(&b).await;
        assert!(
            until(Duration::from_secs(10), || async {
                sent(&b).await > first + 100
            })
            .await,
            "the live page keeps updating"
        );
        assert!(text(&b, "#live-workers").await.contains("w0"));
        assert_eq!(text(&b, "#live-step").await, "running");
        // Stop from the browser: the run ends well before its 60 s, and is indexed.
        b.find(Locator::Css("#stop"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert!(
            until(Duration::from_secs(30), || async {
                text(&b, "#live-step").await == "done"
            })
            .await,
            "the run stopped: {}",
            text(&b, "main").await
        );
        assert!(
            text(&b, "#control-status").await.contains("stop sent"),
            "{}",
            text(&b, "#control-status").await
        );
        b.close().await.unwrap();
    });
    assert!(
        wait_for(Duration::from_secs(30), || {
            get_json(port, "/api/runs")["runs"]
                .as_array()
                .is_some_and(|r| r.len() == 1)
        }),
        "the run started from the browser is in the index"
    );
    let runs = get_json(port, "/api/runs");
    assert!(
        runs["runs"][0]["sut"].as_str().unwrap().contains("/live"),
        "{runs:#}"
    );
}
