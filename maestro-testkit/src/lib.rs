//! `maestro-testkit` (not published) owns what the tests and benchmarks share: free ports,
//! unique cluster ids, the real binaries as children that are killed on drop, waiting for
//! a printed ready line, and `wait_for(condition)` instead of sleeps.
//!
//! It must never be a dependency of anything but tests and benchmarks.

use anyhow::{Context, Result, anyhow, bail};
use maestro_protocol::ClusterId;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How much of a process's log a failing test prints.
const LOG_TAIL_LINES: usize = 60;

/// Signal numbers for [`Proc::signal`].
pub mod signal {
    pub use nix::sys::signal::Signal::{SIGCONT, SIGINT, SIGKILL, SIGSTOP, SIGTERM};
}

/// Sends `signal` to a process this test started (and has not reaped).
pub fn signal_pid(pid: u32, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
    // A process that is gone already has nothing left to signal.
    let _ = nix::sys::signal::kill(pid, signal);
}

/// Asserts that a run summary's two workers split the roles: one ran every producer
/// (`producers`) and no consumer, the other every consumer and no producer.
pub fn assert_split_roles(summary: &serde_json::Value, producers: u64, consumers: u64) {
    let roles: Vec<(Option<u64>, Option<u64>)> = summary["workers"]
        .as_array()
        .unwrap_or_else(|| panic!("no workers in {summary:#}"))
        .iter()
        .map(|w| (w["producers"].as_u64(), w["consumers"].as_u64()))
        .collect();
    assert_eq!(roles.len(), 2, "{summary:#}");
    assert!(
        roles.contains(&(Some(producers), Some(0))) && roles.contains(&(Some(0), Some(consumers))),
        "roles not split: {roles:?}"
    );
}

/// The one plan results folder inside `results`, and its `summary.json`.
pub fn plan_summary(results: &Path) -> (PathBuf, serde_json::Value) {
    let folder = std::fs::read_dir(results)
        .expect("a results folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_dir())
        .expect("a plan folder in the results folder");
    let text = std::fs::read_to_string(folder.join("summary.json")).expect("summary.json");
    (
        folder,
        serde_json::from_str(&text).expect("summary.json is JSON"),
    )
}

/// `GET path` over HTTP/1.0 on 127.0.0.1:port: the whole reply (status line, headers,
/// body), or `None` when nothing answers within 5 s.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A cluster id no other test uses.
pub fn unique_cluster() -> ClusterId {
    ClusterId::new(format!("t{}", &uuid_hex()[..12])).unwrap_or_default()
}

fn uuid_hex() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
    .chars()
    .rev()
    .collect()
}

/// The workspace's root folder.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a tool (docker, kubectl, ...) in the workspace's root and returns its output; a
/// tool that cannot be started fails the test with its name.
pub fn tool(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (.ci/test installs it)"))
}

/// A tool's exit code, stdout and stderr, for assertion messages.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A temporary folder for one test, removed when it is dropped: when the test ends, and
/// when it fails too (a panic unwinds through it). Derefs to its path.
#[derive(Debug)]
pub struct TestDir(tempfile::TempDir);

impl std::ops::Deref for TestDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

/// A new empty [`TestDir`] named `maestro-<name>-<random>` under the system's temporary
/// folder.
pub fn test_dir(name: &str) -> TestDir {
    TestDir(
        tempfile::Builder::new()
            .prefix(&format!("maestro-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot make a temporary folder: {e}")),
    )
}

/// The folder holding the workspace's binaries (`target/debug` or `target/release`),
/// found from the running test or benchmark executable.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The path of one of the workspace's binaries, as cargo built it for this test run: the
/// one in the target folder when it is newer than every source it is built from, else
/// cargo builds it now (through escargot, with the workspace's feature set, so the next
/// `cargo build --workspace` has nothing to redo). A test never runs stale code, and
/// needs no build step of its own before it.
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir().join(name);
    let stale = match std::fs::metadata(&path).and_then(|m| m.modified()) {
        Err(_) => Some(format!("{} is not built", path.display())),
        Ok(built) => newest_source(name)
            .filter(|(newest, _)| built < *newest)
            .map(|(_, file)| format!("{} is older than {}", path.display(), file.display())),
    };
    let Some(why) = stale else {
        return Ok(path);
    };
    // One build per binary per process (cargo's own lock orders builds across processes).
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, p)) = built.iter().find(|(n, _)| n == name) {
        return Ok(p.clone());
    }
    eprintln!("{why}: building it with cargo");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut build = escargot::CargoBuild::new();
    // What cargo set for this test's own crate (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...) is
    // not the build's: a build script that watches such a variable (ring's) would rebuild,
    // and so would the next `cargo build --workspace`.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let ours = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_BIN_",
            "CARGO_CRATE_NAME",
        ]
        .iter()
        .any(|p| key.starts_with(p))
            || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&&*key);
        if ours {
            build = build.env_remove(&*key);
        }
    }
    let run = build
        .manifest_path(root.join("Cargo.toml"))
        .arg("--workspace")
        .bin(name)
        .current_release()
        .target_dir(bin_dir().parent().context("the target folder")?)
        .run()
        .with_context(|| format!("cargo could not build {name}"))?;
    let fresh = run.path().to_path_buf();
    built.push((name.to_owned(), fresh.clone()));
    Ok(fresh)
}

/// The folders of the workspace crates a binary is built from: its own crate (named like
/// the binary) and, recursively, every workspace crate in its `[dependencies]`, read from
/// the manifests so that no crate is left out (a hand-kept list missed the controller and
/// the report crates). Without a manifest to read: every workspace crate.
fn sources_of(binary: &str, root: &Path) -> Vec<PathBuf> {
    let manifest = |dir: &Path| -> Option<toml::Table> {
        std::fs::read_to_string(dir.join("Cargo.toml"))
            .ok()?
            .parse()
            .ok()
    };
    // Workspace crates by package name, from `[workspace.dependencies]` entries with a path.
    let members: std::collections::BTreeMap<String, PathBuf> = manifest(root)
        .and_then(|t| t.get("workspace")?.get("dependencies")?.as_table().cloned())
        .into_iter()
        .flatten()
        .filter_map(|(name, spec)| Some((name, root.join(spec.get("path")?.as_str()?))))
        .collect();
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut todo = vec![root.join(binary)];
    while let Some(dir) = todo.pop() {
        if seen.contains(&dir) {
            continue;
        }
        let Some(deps) = manifest(&dir).and_then(|t| {
            t.get("dependencies")
                .and_then(toml::Value::as_table)
                .cloned()
        }) else {
            return members.into_values().collect();
        };
        todo.extend(deps.keys().filter_map(|name| members.get(name).cloned()));
        seen.push(dir);
    }
    seen
}

/// The most recently changed Rust source file (under `src`) of the crates
/// `binary` is built from.
fn newest_source(binary: &str) -> Option<(std::time::SystemTime, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .to_path_buf();
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    let mut consider = |p: PathBuf| {
        if let Ok(t) = std::fs::metadata(&p).and_then(|m| m.modified())
            && newest.as_ref().is_none_or(|(n, _)| t > *n)
        {
            newest = Some((t, p));
        }
    };
    for krate in sources_of(binary, &root) {
        // Only `src`: test and bench code does not go into the binaries.
        let mut dirs = vec![krate.join("src")];
        while let Some(dir) = dirs.pop() {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    consider(p);
                }
            }
        }
    }
    newest
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process that is killed when dropped. Its stderr goes to a log file, kept for
/// the test to read; stdout lines are available through [`Proc::wait_for_line`].
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `binary` (a workspace binary name) with `args`.
    pub fn spawn(name: &str, binary_name: &str, args: &[&str]) -> Result<Self> {
        Self::spawn_with_env(name, binary_name, args, &[])
    }

    pub fn spawn_with_env(
        name: &str,
        binary_name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        Self::spawn_command(
            name,
            binary_name,
            Command::new(binary(binary_name)?),
            args,
            env,
        )
    }

    /// Starts `binary` with its open-files limit (soft and hard) set to `files`
    /// (util-linux's `prlimit`).
    pub fn spawn_with_open_files(
        name: &str,
        binary_name: &str,
        args: &[&str],
        files: u64,
    ) -> Result<Self> {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={files}:{files}"))
            .arg(binary(binary_name)?);
        Self::spawn_command(name, binary_name, command, args, &[])
    }

    fn spawn_command(
        name: &str,
        binary_name: &str,
        mut command: Command,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let log = std::env::temp_dir().join(format!("maestro-test-{name}-{}.log", uuid_hex()));
        let stderr = std::fs::File::create(&log).context("creating a log file")?;
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .env("RUST_LOG", "info,rumqttc=warn,rumqttd=off");
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {binary_name}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name: name.to_owned(),
            child,
            lines,
            log,
        })
    }

    /// Waits for a stdout line containing `needle`.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(_) => bail!(
                    "{}: no line with {needle:?} within {timeout:?}; its log:\n{}",
                    self.name,
                    self.log_text()
                ),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (for example `signal::SIGKILL`, `signal::SIGSTOP`).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        // A pid we started and have not reaped yet: it is ours.
        signal_pid(self.child.id(), signal);
    }

    /// Waits for the process to exit, up to `timeout`; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() >= deadline {
                bail!("{} did not exit within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the process wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let exited = self.child.try_wait().ok().flatten();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what its processes logged: the log file goes with it.
        if std::thread::panicking() {
            if let Some(status) = exited {
                eprintln!("--- {} had exited by itself: {status} ---", self.name);
            }
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(LOG_TAIL_LINES).collect();
            eprintln!("--- last {} lines of {}'s log ---", tail.len(), self.name);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A control broker started from the real binary on a free port.
#[derive(Debug)]
pub struct TestBroker {
    pub proc: Proc,
    pub port: u16,
    /// Started with `--tls-cert`: its URL is `mqtts://`.
    pub secure: bool,
}

impl TestBroker {
    pub fn start(extra: &[&str]) -> Result<Self> {
        Self::start_on(free_port(), extra)
    }

    pub fn start_on(port: u16, extra: &[&str]) -> Result<Self> {
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["--listen", &listen];
        args.extend_from_slice(extra);
        let mut proc = Proc::spawn("broker", "maestro-broker", &args)?;
        proc.wait_for_line("maestro-broker ready", Duration::from_secs(20))?;
        let secure = extra.contains(&"--tls-cert");
        Ok(Self { proc, port, secure })
    }

    fn scheme(&self) -> &'static str {
        if self.secure { "mqtts" } else { "mqtt" }
    }

    /// `mqtt://127.0.0.1:PORT` (`mqtts://` with TLS).
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.port)
    }

    /// The URL with credentials.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!(
            "{}://{user}:{password}@127.0.0.1:{}",
            self.scheme(),
            self.port
        )
    }
}

/// Starts a worker or inspector (`role`) in `cluster`, with extra arguments.
pub fn spawn_peer(role: &str, url: &str, cluster: &ClusterId, extra: &[&str]) -> Result<Proc> {
    let cluster = cluster.to_string();
    let mut args = vec!["-m", url, "--cluster", &cluster];
    args.extend_from_slice(extra);
    Proc::spawn(role, &format!("maestro-{role}"), &args)
}

/// What one run of the CLI binary produced.
#[derive(Debug)]
pub struct CliRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    /// The stdout parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.stdout).with_context(|| {
            format!(
                "stdout is not JSON:\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs `maestro-cli` with `args`; kills it if it takes longer than `timeout`.
pub fn run_cli(args: &[&str], timeout: Duration) -> Result<CliRun> {
    let child = Command::new(binary("maestro-cli")?)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    // Read the pipes while the child runs, so a large output cannot block it.
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(out) => out?,
        Err(_) => {
            // The child is not reaped until the thread above finishes waiting: still ours.
            signal_pid(pid, signal::SIGKILL);
            bail!("maestro-cli {args:?} did not finish within {timeout:?}");
        }
    };
    Ok(CliRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A private Mosquitto (the system under test) on a free loopback port, with its own
/// config and data folder; killed on drop. Fails loudly when Mosquitto is not installed
/// (`.ci/test` installs it): a test never skips silently.
#[derive(Debug)]
pub struct Mosquitto {
    pub proc: Proc,
    pub port: u16,
    /// Its WebSockets listener, when started with one.
    pub ws_port: Option<u16>,
    dir: PathBuf,
}

impl Mosquitto {
    pub fn start() -> Result<Self> {
        Self::start_on(free_port())
    }

    /// Mosquitto with more configuration lines after its listener (for example `cafile`,
    /// `certfile` and `keyfile`, which make that listener TLS).
    pub fn start_with(extra: &str) -> Result<Self> {
        Self::start_configured(free_port(), extra)
    }

    /// Mosquitto with a WebSockets listener (`ws_port`) beside its MQTT one, and `extra`
    /// configuration lines after the WebSockets listener (TLS files make it `wss://`).
    pub fn start_with_websockets(extra: &str) -> Result<Self> {
        let ws_port = free_port();
        let mut m = Self::start_configured(
            free_port(),
            &format!("listener {ws_port} 127.0.0.1\nprotocol websockets\n{extra}"),
        )?;
        let ready = wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", ws_port)).is_ok()
        });
        if !ready {
            bail!(
                "mosquitto did not listen for WebSockets on {ws_port}: {}",
                std::fs::read_to_string(&m.proc.log).unwrap_or_default()
            );
        }
        m.ws_port = Some(ws_port);
        Ok(m)
    }

    /// `ws://127.0.0.1:WS_PORT/mqtt?topic=<base>&<query>` (`wss` with TLS).
    pub fn ws_url(&self, scheme: &str, base: &str, query: &str) -> String {
        let port = self.ws_port.expect("started without WebSockets");
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("&{query}")
        };
        format!("{scheme}://127.0.0.1:{port}/mqtt?topic={base}{q}")
    }

    /// Kills this Mosquitto and starts a new one on the same port (a broker restart).
    pub fn restart(&mut self) -> Result<()> {
        self.proc.signal(signal::SIGKILL);
        let _ = self.proc.wait_exit(Duration::from_secs(5));
        let fresh = Self::start_on(self.port)?;
        let old = std::mem::replace(self, fresh);
        drop(old);
        Ok(())
    }

    fn start_on(port: u16) -> Result<Self> {
        Self::start_configured(port, "")
    }

    fn start_configured(port: u16, extra: &str) -> Result<Self> {
        let exe = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .context("mosquitto is not installed: run .ci/test, which installs it (apt-get install mosquitto mosquitto-clients)")?;
        let dir = std::env::temp_dir().join(format!("maestro-mosquitto-{}", uuid_hex()));
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\nmax_queued_messages 100000\n{extra}\n"
            ),
        )?;
        let log = dir.join("mosquitto.log");
        let stderr = std::fs::File::create(&log)?;
        let mut child = Command::new(exe)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("starting mosquitto")?;
        let ready = wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        if !ready {
            let _ = child.kill();
            bail!(
                "mosquitto did not listen on {port}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let (_tx, lines) = mpsc::channel();
        Ok(Self {
            proc: Proc {
                name: "mosquitto".into(),
                child,
                lines,
                log,
            },
            port,
            ws_port: None,
            dir,
        })
    }

    /// The distinct user names its log shows for new connections, of those starting with
    /// `prefix` (with `use_identity_as_username`: each client certificate's CN). The log
    /// needs `log_dest stderr` and `connection_messages true`.
    pub fn logged_users(&self, prefix: &str) -> std::collections::BTreeSet<String> {
        self.proc
            .log_text()
            .lines()
            .filter(|l| l.contains("New client connected"))
            .filter_map(|l| l.split(", u'").nth(1)?.split('\'').next())
            .filter(|u| u.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    }

    /// `mqtt://127.0.0.1:PORT/<base>?<query>`.
    pub fn url(&self, base: &str, query: &str) -> String {
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("mqtt://127.0.0.1:{}/{base}{q}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `mosquitto_sub` subscribed to `filter` at QoS 1, counting what reaches the broker.
#[derive(Debug)]
pub struct Subscriber {
    proc: Proc,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// With [`Subscriber::start_timed`]: each message's arrival.
    heard: std::sync::Arc<std::sync::Mutex<Vec<Heard>>>,
}

/// One message as `mosquitto_sub` saw it: when (Unix seconds, its own clock), on which
/// topic, how many bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Heard {
    pub at_s: f64,
    pub topic: String,
    pub len: u64,
}

impl Subscriber {
    pub fn start(port: u16, filter: &str) -> Result<Self> {
        Self::spawn(port, filter, false)
    }

    /// A subscriber that also keeps each message's arrival time, topic and length.
    pub fn start_timed(port: u16, filter: &str) -> Result<Self> {
        Self::spawn(port, filter, true)
    }

    /// What arrived so far (empty unless started timed).
    pub fn heard(&self) -> Vec<Heard> {
        self.heard.lock().map(|h| h.clone()).unwrap_or_default()
    }

    fn spawn(port: u16, filter: &str, timed: bool) -> Result<Self> {
        let port = port.to_string();
        let mut child = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-q",
                "1",
                "-t",
                filter,
                "-F",
                if timed { "%U %t %l" } else { "%t" },
                "-i",
            ])
            .arg(format!("maestro-test-sub-{}", uuid_hex()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto_sub (apt-get install mosquitto-clients)")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = count.clone();
        let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = heard.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if timed {
                    let mut parts = line.split(' ');
                    let at_s = parts.next().and_then(|t| t.parse().ok());
                    let len = parts.next_back().and_then(|l| l.parse().ok());
                    let topic = parts.collect::<Vec<_>>().join(" ");
                    if let (Some(at_s), Some(len), Ok(mut h)) = (at_s, len, keep.lock()) {
                        h.push(Heard { at_s, topic, len });
                    }
                }
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let (_tx, lines) = mpsc::channel();
        let log = std::env::temp_dir().join(format!("maestro-test-sub-{}.log", uuid_hex()));
        Ok(Self {
            proc: Proc {
                name: "mosquitto_sub".into(),
                child,
                lines,
                log,
            },
            count,
            heard,
        })
    }

    pub fn count(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// A system under test started by one of the project's scripts (`scripts/sut/<name>`):
/// `rabbitmq` or `tansu`. Stopped (by the script, by PID) on drop. Fails loudly when the
/// broker is not installed or does not come up: tests never skip silently.
#[derive(Debug)]
pub struct ScriptedSut {
    script: PathBuf,
    dir: PathBuf,
    /// The SUT's base URL, for example `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub url: String,
    /// Its TLS listener's URL, when started with certificates (RabbitMQ).
    pub tls_url: Option<String>,
    /// Its management API, when started with it (RabbitMQ):
    /// `http://guest:guest@127.0.0.1:PORT`.
    pub management_url: Option<String>,
    /// Its AMQP 1.0 and MQTT URLs, when started with those plugins (RabbitMQ).
    pub amqp10_url: Option<String>,
    pub mqtt_url: Option<String>,
    /// AMQP 1.0 over its TLS listener, when started with certificates and that plugin.
    pub amqp10s_url: Option<String>,
    /// MQTT over WebSockets (`ws://guest:guest@127.0.0.1:PORT/ws`), when started with the
    /// web MQTT plugin (RabbitMQ).
    pub ws_url: Option<String>,
    /// The stream protocol (`rabbitmq-stream://guest:guest@127.0.0.1:PORT`), and over TLS
    /// when started with certificates, with the stream plugin (RabbitMQ).
    pub stream_url: Option<String>,
    pub streams_url: Option<String>,
    /// STOMP (`stomp://guest:guest@127.0.0.1:PORT`), and over TLS when started with
    /// certificates, with the STOMP plugin (RabbitMQ).
    pub stomp_url: Option<String>,
    pub stomps_url: Option<String>,
    pub pid: u32,
}

impl ScriptedSut {
    pub fn rabbitmq() -> Result<Self> {
        Self::start("rabbitmq", None)
    }

    /// RabbitMQ with its management API (statistics every second).
    pub fn rabbitmq_with_management() -> Result<Self> {
        Self::start_with("rabbitmq", None, true)
    }

    pub fn tansu() -> Result<Self> {
        Self::start("tansu", None)
    }

    /// A private Redis server (`url` is `redis://127.0.0.1:PORT`).
    pub fn redis() -> Result<Self> {
        Self::start("redis", None)
    }

    /// A private NATS server with JetStream (`url` is `nats://127.0.0.1:PORT`,
    /// `management_url` its monitoring endpoints).
    pub fn nats() -> Result<Self> {
        Self::start("nats", None)
    }

    /// A private NATS server whose port also takes TLS connections with a client
    /// certificate signed by `certs/ca.pem` (`tls_url` is `nats+tls://127.0.0.1:PORT`).
    pub fn nats_tls(certs: &Path) -> Result<Self> {
        Self::start("nats", Some(certs))
    }

    /// The JetStream streams a NATS server has now (`$JS.API.STREAM.NAMES`, spoken over a
    /// plain socket).
    pub fn nats_streams(&self) -> Result<Vec<String>> {
        use std::io::{BufRead, BufReader, Read, Write};
        let addr = self
            .url
            .strip_prefix("nats://")
            .ok_or_else(|| anyhow!("{} is not a NATS URL", self.url))?;
        let stream = std::net::TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?; // INFO
        (&stream).write_all(
            b"CONNECT {\"verbose\":false}\r\nSUB _INBOX.maestro 1\r\nPUB $JS.API.STREAM.NAMES _INBOX.maestro 0\r\n\r\n",
        )?;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                bail!("the NATS server closed the connection");
            }
            if line.starts_with("PING") {
                (&stream).write_all(b"PONG\r\n")?;
            } else if line.starts_with("-ERR") {
                bail!("NATS: {}", line.trim());
            } else if let Some(rest) = line.strip_prefix("MSG ") {
                let len: usize = rest
                    .split_whitespace()
                    .last()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| anyhow!("bad MSG line {line:?}"))?;
                let mut body = vec![0; len + 2];
                reader.read_exact(&mut body)?;
                let reply: serde_json::Value = serde_json::from_slice(&body[..len])?;
                return Ok(reply["streams"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default());
            }
        }
    }

    /// The topics a Kafka broker has now (metadata through librdkafka).
    pub fn kafka_topics(&self) -> Result<Vec<String>> {
        use rdkafka::consumer::Consumer as _;
        let bootstrap = self
            .url
            .strip_prefix("kafka://")
            .ok_or_else(|| anyhow!("{} is not a Kafka URL", self.url))?;
        let client: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap.trim_end_matches('/'))
            .set("log_level", "3")
            .create()?;
        let metadata = client.fetch_metadata(None, Duration::from_secs(10))?;
        Ok(metadata
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .collect())
    }

    /// RabbitMQ with a TLS listener that requires client certificates; `certs` holds
    /// `ca.pem`, `server.pem` and `server.key`.
    pub fn rabbitmq_tls(certs: &Path) -> Result<Self> {
        Self::start("rabbitmq", Some(certs))
    }

    /// tansu behind stunnel (TLS, client certificates required); `url` is stunnel's.
    pub fn tansu_tls(certs: &Path) -> Result<Self> {
        Self::start("tansu", Some(certs))
    }

    /// RabbitMQ with its AMQP 1.0 and MQTT plugins: one broker, three protocols.
    pub fn rabbitmq_multiprotocol() -> Result<Self> {
        Self::start_env(
            "rabbitmq",
            None,
            &[("MAESTRO_SUT_PROTOCOLS", "amqp10,mqtt")],
        )
    }

    /// RabbitMQ with its stream plugin (the stream protocol on a port of its own).
    pub fn rabbitmq_stream() -> Result<Self> {
        Self::start_env("rabbitmq", None, &[("MAESTRO_SUT_PROTOCOLS", "stream")])
    }

    /// RabbitMQ with its stream plugin and TLS listeners that require client certificates.
    pub fn rabbitmq_stream_tls(certs: &Path) -> Result<Self> {
        Self::start_env(
            "rabbitmq",
            Some(certs),
            &[("MAESTRO_SUT_PROTOCOLS", "stream")],
        )
    }

    /// RabbitMQ with every protocol it speaks: AMQP 0-9-1 (`url`), and its AMQP 1.0, MQTT,
    /// STOMP and stream plugins.
    pub fn rabbitmq_every_protocol() -> Result<Self> {
        Self::start_env(
            "rabbitmq",
            None,
            &[("MAESTRO_SUT_PROTOCOLS", "amqp10,mqtt,stomp,stream")],
        )
    }

    /// RabbitMQ with its STOMP plugin (`stomp_url`).
    pub fn rabbitmq_stomp() -> Result<Self> {
        Self::start_env("rabbitmq", None, &[("MAESTRO_SUT_PROTOCOLS", "stomp")])
    }

    /// RabbitMQ with its STOMP plugin and TLS listeners that require client certificates
    /// (`stomps_url`).
    pub fn rabbitmq_stomp_tls(certs: &Path) -> Result<Self> {
        Self::start_env(
            "rabbitmq",
            Some(certs),
            &[("MAESTRO_SUT_PROTOCOLS", "stomp")],
        )
    }

    /// A private ActiveMQ 5 broker: `url` is `stomp://127.0.0.1:PORT`, `mqtt_url` its MQTT
    /// listener.
    pub fn activemq() -> Result<Self> {
        Self::start("activemq", None)
    }

    /// ActiveMQ with a STOMP TLS listener that requires a client certificate signed by
    /// `certs/ca.pem` (`tls_url` is `stomps://127.0.0.1:PORT`).
    pub fn activemq_tls(certs: &Path) -> Result<Self> {
        Self::start("activemq", Some(certs))
    }

    /// RabbitMQ with its web MQTT plugin (MQTT over WebSockets).
    pub fn rabbitmq_web_mqtt() -> Result<Self> {
        Self::start_env("rabbitmq", None, &[("MAESTRO_SUT_PROTOCOLS", "web_mqtt")])
    }

    /// RabbitMQ with its AMQP 1.0 plugin and a TLS listener that requires client
    /// certificates (AMQP 0-9-1 and 1.0 on it).
    pub fn rabbitmq_amqp10_tls(certs: &Path) -> Result<Self> {
        Self::start_env(
            "rabbitmq",
            Some(certs),
            &[("MAESTRO_SUT_PROTOCOLS", "amqp10")],
        )
    }

    fn start(name: &str, tls: Option<&Path>) -> Result<Self> {
        Self::start_with(name, tls, false)
    }

    fn start_with(name: &str, tls: Option<&Path>, management: bool) -> Result<Self> {
        let env: &[(&str, &str)] = if management {
            &[("MAESTRO_SUT_MANAGEMENT", "1")]
        } else {
            &[]
        };
        Self::start_env(name, tls, env)
    }

    fn start_env(name: &str, tls: Option<&Path>, env: &[(&str, &str)]) -> Result<Self> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../scripts/sut")
            .join(name);
        let dir = std::env::temp_dir().join(format!("maestro-{name}-{}", uuid_hex()));
        std::fs::create_dir_all(&dir)?;
        let mut command = Command::new(&script);
        if let Some(certs) = tls {
            command.env("MAESTRO_SUT_TLS", certs);
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command
            .arg("start")
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find(|l| l.starts_with("ready "))
            .with_context(|| {
                format!(
                    "{name} did not start ({}):\n{}{}",
                    out.status,
                    stdout,
                    String::from_utf8_lossy(&out.stderr)
                )
            })?;
        let mut parts = line.split_whitespace().skip(1);
        let url = parts.next().context("no URL")?.to_owned();
        let (mut pid, mut tls_url, mut management_url) = (0, None, None);
        let (mut amqp10_url, mut mqtt_url, mut amqp10s_url, mut ws_url) = (None, None, None, None);
        let (mut stream_url, mut streams_url) = (None, None);
        let (mut stomp_url, mut stomps_url) = (None, None);
        for part in parts {
            if let Some(p) = part.strip_prefix("pid=") {
                pid = p.parse().unwrap_or(0);
            } else if let Some(u) = part.strip_prefix("tls=") {
                tls_url = Some(u.to_owned());
            } else if let Some(u) = part.strip_prefix("mgmt=") {
                management_url = Some(u.to_owned());
            } else if let Some(u) = part.strip_prefix("amqp10=") {
                amqp10_url = Some(u.to_owned());
            } else if let Some(u) = part.strip_prefix("mqtt=") {
                mqtt_url = Some(u.to_owned());
            } else if let Some(u) = part.strip_prefix("amqp10s=") {
                amqp10s_url = Some(u.to_owned());
            } else if let Some(u) = part.strip_prefix("ws=") {
                ws_url = Some(u.to_owned());
            } else if let Some(u) = part.strip_prefix("stream=") {
                stream_url = Some(u.to_owned());
            } else if let Some(u) = part.strip_prefix("streams=") {
                streams_url = Some(u.to_owned());
            } else if let Some(u) = part.strip_prefix("stomp=") {
                stomp_url = Some(u.to_owned());
            } else if let Some(u) = part.strip_prefix("stomps=") {
                stomps_url = Some(u.to_owned());
            }
        }
        Ok(Self {
            script,
            dir,
            url,
            tls_url,
            management_url,
            amqp10_url,
            mqtt_url,
            amqp10s_url,
            ws_url,
            stream_url,
            streams_url,
            stomp_url,
            stomps_url,
            pid,
        })
    }

    /// Runs `rabbitmqctl -q` against this node (RabbitMQ only) and returns its output.
    pub fn rabbitmqctl(&self, args: &[&str]) -> Result<String> {
        let env = std::fs::read_to_string(self.dir.join("env")).context("no node env")?;
        let mut command = Command::new("rabbitmqctl");
        let mut node = String::new();
        for (key, value) in env.lines().filter_map(|l| l.split_once('=')) {
            command.env(key, value);
            if key == "RABBITMQ_NODENAME" {
                node = value.to_owned();
            }
        }
        let out = command
            .args(["-q", "-n", &node])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running rabbitmqctl")?;
        if !out.status.success() {
            bail!(
                "rabbitmqctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops the SUT now (to test a broker that goes away mid-run).
    pub fn stop(&self) {
        let _ = Command::new(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output();
    }
}

impl Drop for ScriptedSut {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A control broker and `n` workers in a cluster of their own.
#[derive(Debug)]
pub struct Cluster {
    pub broker: TestBroker,
    pub cluster: String,
    pub workers: Vec<Proc>,
    /// Where this cluster's runs write their results (removed on drop).
    pub results: std::path::PathBuf,
}

impl Cluster {
    /// A control broker and `n` workers named w0, w1, ...; returns once all answer ping.
    pub fn start(n: usize) -> Self {
        Self::start_with(n, &[])
    }

    /// [`Cluster::start`] with more arguments for every worker (`--files-dir DIR`, ...).
    pub fn start_with(n: usize, worker_args: &[&str]) -> Self {
        let broker = TestBroker::start(&[]).expect("test setup");
        let cluster = unique_cluster();
        let workers = (0..n)
            .map(|i| {
                let name = format!("w{i}");
                let mut args = vec!["--name", name.as_str()];
                args.extend_from_slice(worker_args);
                spawn_peer("worker", &broker.url(), &cluster, &args).expect("test setup")
            })
            .collect();
        let c = Cluster {
            cluster: cluster.to_string(),
            broker,
            workers,
            results: std::env::temp_dir().join(format!("maestro-results-{}", cluster)),
        };
        let ok = wait_for(Duration::from_secs(15), || {
            let run = c.cli(
                &["ping", "-o", "json", "--timeout", "2s"],
                Duration::from_secs(10),
            );
            run.json().ok().and_then(|v| v.as_array().map(|a| a.len())) == Some(n)
        });
        assert!(ok, "workers did not come up");
        c
    }

    /// Starts an inspector named `name` in this cluster and waits until ping lists it.
    pub fn spawn_inspector(&self, name: &str, args: &[&str]) -> Proc {
        let cluster: ClusterId = self.cluster.parse().expect("test setup");
        let mut all = vec!["--name", name];
        all.extend_from_slice(args);
        let p = spawn_peer("inspector", &self.broker.url(), &cluster, &all).expect("test setup");
        let up = wait_for(Duration::from_secs(15), || {
            self.cli(&["ping", "-o", "json"], Duration::from_secs(10))
                .json()
                .ok()
                .and_then(|v| {
                    v.as_array()
                        .map(|a| a.iter().any(|p| p["role"] == "inspector"))
                })
                == Some(true)
        });
        assert!(up, "the inspector did not come up");
        p
    }

    /// Runs `maestro-cli` against this cluster.
    pub fn cli(&self, args: &[&str], timeout: Duration) -> CliRun {
        let url = self.broker.url();
        let mut all = vec!["-m", url.as_str(), "--cluster", self.cluster.as_str()];
        all.extend_from_slice(args);
        run_cli(&all, timeout).expect("test setup")
    }

    /// Waits until `n` workers report the state `running` (a run has started on them).
    pub fn wait_until_running(&self, n: usize, timeout: Duration) -> bool {
        wait_for(timeout, || {
            self.cli(&["stats", "-o", "json"], Duration::from_secs(10))
                .json()
                .ok()
                .and_then(|v| {
                    v.as_array()
                        .map(|a| a.iter().filter(|w| w["state"] == "running").count())
                })
                == Some(n)
        })
    }

    /// `maestro-cli start --sut SUT ARGS` as a child process this test can signal.
    pub fn spawn_start(&self, sut: &str, args: &[&str]) -> Proc {
        let (broker, results) = (
            self.broker.url(),
            self.results.to_str().expect("test setup"),
        );
        let mut all = vec![
            "-m",
            &broker,
            "--cluster",
            &self.cluster,
            "start",
            "--sut",
            sut,
            "--results",
            results,
        ];
        all.extend_from_slice(args);
        Proc::spawn("cli", "maestro-cli", &all).expect("test setup")
    }

    /// `maestro-cli start ... -o json` in the background (owned arguments).
    pub fn run_in_background(&self, sut: &str, args: &[&str]) -> std::thread::JoinHandle<CliRun> {
        let mut all: Vec<String> = vec![
            "-m".into(),
            self.broker.url(),
            "--cluster".into(),
            self.cluster.clone(),
            "start".into(),
            "--sut".into(),
            sut.into(),
            "--results".into(),
            self.results.to_str().expect("test setup").into(),
            "-o".into(),
            "json".into(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        std::thread::spawn(move || {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            run_cli(&refs, Duration::from_secs(90)).expect("test setup")
        })
    }

    /// `maestro-cli start ... -o json`, returning the run and its summary.
    pub fn run_test(&self, sut: &str, args: &[&str]) -> (CliRun, serde_json::Value) {
        let results = self.results.to_str().expect("test setup").to_owned();
        let mut all = vec![
            "start",
            "--sut",
            sut,
            "--results",
            results.as_str(),
            "-o",
            "json",
        ];
        all.extend_from_slice(args);
        let run = self.cli(&all, Duration::from_secs(90));
        let summary = run.json().unwrap_or_else(|e| panic!("{e}\n{run:?}"));
        (run, summary)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.results);
    }
}

/// Lab certificates from `maestro-cli certs init` (CA, server certificate, cluster key) in
/// a fresh folder, removed on drop. The keys are made readable to brokers that drop to
/// their own user.
#[derive(Debug)]
pub struct Lab {
    pub dir: PathBuf,
}

impl Lab {
    pub fn new(tag: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("maestro-lab-{tag}-{}", uuid_hex()));
        let out = run_cli(
            &["certs", "init", dir.to_str().context("temp dir")?],
            Duration::from_secs(20),
        )?;
        if out.code != Some(0) {
            bail!("certs init failed: {out:?}");
        }
        use std::os::unix::fs::PermissionsExt;
        for f in ["server.key", "ca.key"] {
            std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644))?;
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        Ok(Lab { dir })
    }

    /// The path of one of its files, as a string for arguments and URLs.
    pub fn file(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// SUT URL parameters: trust the lab CA, and a certificate per client signed by it.
    pub fn per_client(&self) -> String {
        format!(
            "ca={}&client_ca={}&client_ca_key={}",
            self.file("ca.pem"),
            self.file("ca.pem"),
            self.file("ca.key")
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A folder removed when the test ends, passed or failed.
#[derive(Debug)]
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod staleness_tests {
    use super::*;

    fn crates_of(binary: &str) -> Vec<String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or_else(|| unreachable!())
            .to_path_buf();
        let mut names: Vec<String> = sources_of(binary, &root)
            .iter()
            .filter_map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_binary_is_stale_when_any_crate_it_is_built_from_changed() {
        let cli = crates_of("maestro-cli");
        for krate in [
            "protocol",
            "maestro-control",
            "maestro-controller",
            "maestro-report",
            "maestro-broker",
            "maestro-worker",
            "maestro-inspector",
            "maestro-cli",
        ] {
            assert!(cli.contains(&krate.to_owned()), "{krate} missing: {cli:?}");
        }
        assert!(!cli.contains(&"maestro-testkit".to_owned()), "{cli:?}");
        assert_eq!(
            crates_of("maestro-broker"),
            ["maestro-broker", "maestro-process", "protocol"]
        );
        assert_eq!(
            crates_of("maestro-worker"),
            [
                "maestro-control",
                "maestro-process",
                "maestro-worker",
                "protocol"
            ]
        );
    }
}
