//! `maestro-testkit` (not published) owns what the tests and benchmarks share: free ports,
//! unique cluster ids, the real binaries as children that are killed on drop, waiting for
//! a printed ready line, and `wait_for(condition)` instead of sleeps.

use anyhow::{Context, Result, bail};
use maestro_protocol::ClusterId;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Signal numbers for [`Proc::signal`].
pub mod signal {
    pub use libc::{SIGCONT, SIGINT, SIGKILL, SIGSTOP, SIGTERM};
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

/// The path of one of the workspace's binaries; fails clearly when it was not built.
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir().join(name);
    if !path.exists() {
        bail!(
            "{} not found: build the workspace binaries first (cargo build --workspace)",
            path.display()
        );
    }
    Ok(path)
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
        let log = std::env::temp_dir().join(format!("maestro-test-{name}-{}.log", uuid_hex()));
        let stderr = std::fs::File::create(&log).context("creating a log file")?;
        let mut command = Command::new(binary(binary_name)?);
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

    /// Sends a signal (for example `libc::SIGKILL`, `libc::SIGSTOP`).
    pub fn signal(&self, signal: i32) {
        // A pid we started and have not reaped yet: it is ours.
        let pid = i32::try_from(self.child.id()).unwrap_or(i32::MAX);
        // SAFETY: kill(2) has no memory-safety preconditions.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, signal);
        }
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
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A control broker started from the real binary on a free port.
#[derive(Debug)]
pub struct TestBroker {
    pub proc: Proc,
    pub port: u16,
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
        Ok(Self { proc, port })
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The URL with credentials.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("mqtt://{user}:{password}@127.0.0.1:{}", self.port)
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
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    let (tx, rx) = mpsc::channel();
    // Read the pipes while the child runs, so a large output cannot block it.
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(out) => out?,
        Err(_) => {
            // SAFETY: kill(2) has no memory-safety preconditions; the child is not reaped
            // until the thread above finishes waiting, so the pid is still ours.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            bail!("maestro-cli {args:?} did not finish within {timeout:?}");
        }
    };
    Ok(CliRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
