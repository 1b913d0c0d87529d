//! Fault actions: the only things this inspector does to the SUT, declared in its own
//! local file (`--faults FILE`). A note names an action; it never carries a command.
//!
//! ```toml
//! [[action]]
//! name = "pause-broker"            # what plans call it
//! kind = "pause"                   # SIGSTOP now, SIGCONT to heal
//! target = "pidfile:/run/mosquitto.pid"   # or "pid:1234", "name:mosquitto"
//!
//! [[action]]
//! name = "kill-broker"
//! kind = "kill"                    # SIGKILL now; to heal, run `command`
//! target = "pidfile:/run/mosquitto.pid"
//! command = ["mosquitto", "-d", "-c", "/etc/mosquitto/test.conf"]
//!
//! [[action]]
//! name = "bounce-broker"
//! kind = "restart"                 # SIGTERM, wait for the exit, run `command` at once
//! target = "pidfile:/run/mosquitto.pid"
//! command = ["mosquitto", "-d", "-c", "/etc/mosquitto/test.conf"]
//!
//! [[action]]
//! name = "slow-link"
//! kind = "delay"                   # tc netem on a device, in a network namespace
//! device = "veth-sut"
//! netns = "sut"                    # optional
//! delay = "100ms"
//! jitter = "10ms"                  # optional
//!
//! [[action]]
//! name = "lossy-link"
//! kind = "loss"                    # tc netem on a device, or with `port` instead of
//! device = "veth-sut"              # `device`: iptables drops that share of the port's
//! percent = 5.0                    # TCP packets, both ways
//!
//! [[action]]
//! name = "cut-broker"
//! kind = "partition"               # iptables: drop TCP to and from the port
//! port = 1883
//!
//! [[action]]
//! name = "freeze-container"
//! kind = "docker-pause"            # or docker-kill (healed by docker start),
//! container = "maestro_mosquitto_1"   # docker-restart (a bounce)
//! ```

use maestro_protocol::ActionName;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a command of an action may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the inspector watches for an action to take effect.
const CONFIRM_WITHIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FaultFileError {
    #[error("cannot read the fault file {path:?}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("fault file {path:?}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    action: Vec<Declared>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Declared {
    name: ActionName,
    kind: Kind,
    target: Option<String>,
    command: Option<Vec<String>>,
    device: Option<String>,
    netns: Option<String>,
    #[serde(default, with = "humantime_opt")]
    delay: Option<Duration>,
    #[serde(default, with = "humantime_opt")]
    jitter: Option<Duration>,
    percent: Option<f64>,
    port: Option<u16>,
    container: Option<String>,
}

mod humantime_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Pause,
    Kill,
    Restart,
    Delay,
    Loss,
    Partition,
    DockerPause,
    DockerKill,
    DockerRestart,
}

/// Which process an action acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessTarget {
    Pid(u32),
    /// Read at each injection, so it follows restarts.
    Pidfile(PathBuf),
    /// The one process with this exact name.
    Name(String),
}

/// A declared action, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Pause(ProcessTarget),
    Kill(ProcessTarget, Vec<String>),
    Restart(ProcessTarget, Vec<String>),
    /// `tc ... netem` arguments after `netem`.
    Netem {
        netns: Option<String>,
        device: String,
        netem: Vec<String>,
    },
    /// iptables rules that drop TCP to and from a port: all of it (a partition), or a
    /// random share (`probability`, 0..1).
    Drop {
        netns: Option<String>,
        port: u16,
        probability: Option<f64>,
    },
    Docker {
        kind: Kind,
        container: String,
    },
}

/// The actions of one fault file.
#[derive(Debug, Clone, Default)]
pub struct FaultBook {
    pub actions: BTreeMap<ActionName, Action>,
}

impl FaultBook {
    pub fn load(path: &Path) -> Result<Self, FaultFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| FaultFileError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::parse(&text).map_err(|reason| FaultFileError::Invalid {
            path: path.to_owned(),
            reason,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut actions = BTreeMap::new();
        for d in file.action {
            let name = d.name.clone();
            let action = check(d).map_err(|why| format!("action {name:?}: {why}"))?;
            if actions.insert(name.clone(), action).is_some() {
                return Err(format!("action {name:?} is declared twice"));
            }
        }
        Ok(Self { actions })
    }
}

fn check(d: Declared) -> Result<Action, String> {
    let need = |v: Option<String>, what: &str| v.ok_or_else(|| format!("needs `{what}`"));
    let target = |t: Option<String>| -> Result<ProcessTarget, String> {
        let t = need(t, "target")?;
        if let Some(p) = t.strip_prefix("pid:") {
            return p
                .parse()
                .map(ProcessTarget::Pid)
                .map_err(|_| format!("target {t:?}: pid is not a number"));
        }
        if let Some(p) = t.strip_prefix("pidfile:") {
            return Ok(ProcessTarget::Pidfile(PathBuf::from(p)));
        }
        if let Some(n) = t.strip_prefix("name:") {
            return Ok(ProcessTarget::Name(n.to_owned()));
        }
        Err(format!(
            "target {t:?} must be pid:N, pidfile:PATH or name:NAME"
        ))
    };
    let command = |c: Option<Vec<String>>| -> Result<Vec<String>, String> {
        match c {
            Some(c) if !c.is_empty() && !c[0].is_empty() => Ok(c),
            _ => Err("needs `command`, the program and arguments that start it again".into()),
        }
    };
    Ok(match d.kind {
        Kind::Pause => Action::Pause(target(d.target)?),
        Kind::Kill => Action::Kill(target(d.target)?, command(d.command)?),
        Kind::Restart => Action::Restart(target(d.target)?, command(d.command)?),
        Kind::Delay => {
            let delay = d.delay.ok_or("needs `delay`, for example \"100ms\"")?;
            let mut netem = vec!["delay".into(), format!("{}us", delay.as_micros())];
            if let Some(j) = d.jitter {
                netem.push(format!("{}us", j.as_micros()));
            }
            Action::Netem {
                netns: d.netns,
                device: need(d.device, "device")?,
                netem,
            }
        }
        Kind::Loss => {
            let p = d.percent.ok_or("needs `percent`")?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!("percent {p} must be above 0 and at most 100"));
            }
            match (d.device, d.port) {
                (Some(device), None) => Action::Netem {
                    netns: d.netns,
                    device,
                    netem: vec!["loss".into(), format!("{p}%")],
                },
                (None, Some(port)) => Action::Drop {
                    netns: d.netns,
                    port,
                    probability: Some(p / 100.0),
                },
                _ => return Err("needs either `device` (tc netem) or `port` (iptables)".into()),
            }
        }
        Kind::Partition => Action::Drop {
            netns: d.netns,
            port: d.port.ok_or("needs `port`")?,
            probability: None,
        },
        Kind::DockerPause | Kind::DockerKill | Kind::DockerRestart => Action::Docker {
            kind: d.kind,
            container: need(d.container, "container")?,
        },
    })
}

/// What heals an injection: known before the action runs, so it is registered (in
/// memory and in the state file) first, and an action that fails half-way (a SIGSTOP
/// not confirmed, an iptables rule added and the next refused) is still undone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Injection {
    /// SIGCONT, if the process is still the one stopped (same start time).
    Stopped {
        pid: u32,
        started: Option<u64>,
    },
    /// Start the SUT again, unless the killed process still runs.
    Killed {
        pid: u32,
        started: Option<u64>,
        command: Vec<String>,
    },
    Nothing,
    Commands(Vec<Vec<String>>),
}

/// The outcome of running an action: when it took effect, or why it failed and what of
/// it was done and must be undone now.
#[derive(Debug)]
pub struct Outcome {
    pub confirmed: Option<maestro_protocol::UnixMicros>,
    pub error: Option<String>,
    /// After a failure: the heal of the part that was done (a SIGSTOP sent but not
    /// confirmed, the first of two iptables rules). Never more: a `tc qdisc add` that
    /// failed leaves the device's own qdisc, which a `del` would remove.
    pub undo: Option<Injection>,
}

impl Action {
    /// What will heal this action, its targets resolved now; nothing is done yet.
    pub fn prepare(&self) -> Result<Injection, String> {
        Ok(match self {
            Action::Pause(t) => {
                let (pid, started) = t.running()?;
                Injection::Stopped { pid, started }
            }
            Action::Kill(t, command) => {
                let (pid, started) = t.running()?;
                Injection::Killed {
                    pid,
                    started,
                    command: command.clone(),
                }
            }
            Action::Restart(..) => Injection::Nothing,
            Action::Netem { netns, device, .. } => Injection::Commands(vec![in_netns(
                netns,
                &["tc", "qdisc", "del", "dev", device, "root"],
            )]),
            Action::Drop { .. } => Injection::Commands(self.drop_rules("-D").to_vec()),
            Action::Docker { kind, container } => {
                let docker = |verb: &str| vec!["docker".into(), verb.into(), container.clone()];
                match kind {
                    Kind::DockerPause => Injection::Commands(vec![docker("unpause")]),
                    Kind::DockerKill => Injection::Commands(vec![docker("start")]),
                    _ => Injection::Nothing,
                }
            }
        })
    }

    /// Runs the action whose heal is `heal` (from [`Action::prepare`]) and waits
    /// (briefly) to see it take effect.
    pub async fn apply(&self, heal: &Injection) -> Outcome {
        match self.run(heal).await {
            Ok(()) => Outcome {
                confirmed: Some(maestro_control::now()),
                error: None,
                undo: None,
            },
            Err((error, undo)) => Outcome {
                confirmed: None,
                error: Some(error),
                undo,
            },
        }
    }

    /// iptables rules that drop the port's TCP both ways (`verb`: -I adds, -D deletes).
    fn drop_rules(&self, verb: &str) -> [Vec<String>; 2] {
        let Action::Drop {
            netns,
            port,
            probability,
        } = self
        else {
            return [Vec::new(), Vec::new()];
        };
        let port = port.to_string();
        let share = probability.map(|p| format!("{p}"));
        [("INPUT", "--dport"), ("OUTPUT", "--sport")].map(|(chain, dir)| {
            let mut args = vec!["iptables", verb, chain, "-p", "tcp", dir, &port];
            if let Some(p) = &share {
                args.extend(["-m", "statistic", "--mode", "random", "--probability", p]);
            }
            args.extend(["-m", "comment", "--comment", "maestro-fault", "-j", "DROP"]);
            in_netns(netns, &args)
        })
    }

    /// Does the action; on failure, says why and what of it must be undone.
    async fn run(&self, heal: &Injection) -> Result<(), (String, Option<Injection>)> {
        // A signal sent (or a command that may have half-worked) leaves the whole heal
        // to run; a failure before any effect leaves nothing.
        let all = |e: String| (e, Some(heal.clone()));
        let none = |e: String| (e, None);
        match (self, heal) {
            (Action::Pause(_), Injection::Stopped { pid, .. }) => {
                let pid = *pid;
                signal(pid, nix::sys::signal::Signal::SIGSTOP).map_err(none)?;
                wait_until(|| proc_state(pid) == Some('T'), "the process to stop")
                    .await
                    .map_err(all)
            }
            (Action::Kill(..), Injection::Killed { pid, .. }) => {
                let pid = *pid;
                signal(pid, nix::sys::signal::Signal::SIGKILL).map_err(none)?;
                wait_until(|| !alive(pid), "the process to die")
                    .await
                    .map_err(all)
            }
            (Action::Restart(t, command), _) => {
                let pid = t.resolve().map_err(none)?;
                signal(pid, nix::sys::signal::Signal::SIGTERM).map_err(none)?;
                if wait_until(|| !alive(pid), "the process to exit")
                    .await
                    .is_err()
                {
                    signal(pid, nix::sys::signal::Signal::SIGKILL).map_err(none)?;
                    wait_until(|| !alive(pid), "the process to die")
                        .await
                        .map_err(none)?;
                }
                start(command).await.map_err(none)
            }
            (
                Action::Netem {
                    netns,
                    device,
                    netem,
                },
                _,
            ) => {
                let mut c = in_netns(netns, &["tc", "qdisc", "add", "dev", device, "root"]);
                c.push("netem".into());
                c.extend(netem.iter().cloned());
                run_command(&c).await.map_err(none)
            }
            (Action::Drop { .. }, _) => {
                let [first, second] = self.drop_rules("-I");
                run_command(&first).await.map_err(none)?;
                if let Err(e) = run_command(&second).await {
                    let [undo, _] = self.drop_rules("-D");
                    return Err((e, Some(Injection::Commands(vec![undo]))));
                }
                Ok(())
            }
            (Action::Docker { kind, container }, _) => {
                let verb = match kind {
                    Kind::DockerPause => "pause",
                    Kind::DockerKill => "kill",
                    _ => "restart",
                };
                run_command(&["docker".into(), verb.into(), container.clone()])
                    .await
                    .map_err(none)
            }
            (action, heal) => Err(none(format!(
                "internal: {action:?} cannot be applied with the heal {heal:?}"
            ))),
        }
    }
}

impl Injection {
    /// Undoes the injection (also one that was only partly done, or not at all: every
    /// step checks first).
    pub async fn heal(self) -> Result<(), String> {
        match self {
            Injection::Stopped { pid, started } => {
                if !same_process(pid, started) {
                    return Ok(());
                }
                signal(pid, nix::sys::signal::Signal::SIGCONT)?;
                wait_until(
                    || proc_state(pid).is_none_or(|s| s != 'T'),
                    "the process to resume",
                )
                .await
            }
            Injection::Killed {
                pid,
                started,
                command,
            } => {
                if same_process(pid, started) && alive(pid) {
                    // The kill never took: nothing to start.
                    return Ok(());
                }
                start(&command).await
            }
            Injection::Nothing => Ok(()),
            Injection::Commands(commands) => {
                let mut first_error = None;
                for c in commands {
                    if let Err(e) = run_command(&c).await {
                        first_error.get_or_insert(e);
                    }
                }
                first_error.map_or(Ok(()), Err)
            }
        }
    }
}

/// When the process started (clock ticks after boot, `/proc/PID/stat` field 22): with
/// the pid, it names one process, never a later one that reuses the pid.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, so the
    // start time (field 22) is the 20th after it.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// True while `pid` is still the process that started at `started`.
fn same_process(pid: u32, started: Option<u64>) -> bool {
    started.is_none() || start_time(pid) == started
}

/// The faults this inspector has injected and not healed yet, kept in a file so that an
/// inspector killed mid-fault heals them when it starts again. Written whole to a
/// temporary name and renamed, on every change.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    pending: std::sync::Mutex<BTreeMap<String, Pending>>,
    /// `PATH.lock`, locked while this inspector runs: a second inspector on the same state
    /// file would heal the first one's faults as leftovers. The kernel drops the lock when
    /// the process dies, however it dies.
    _lock: std::fs::File,
}

/// One fault not healed yet.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    pub action: String,
    pub heal: Injection,
}

impl StateFile {
    /// The state file at `path` and the faults an earlier inspector left there (read now;
    /// a file that does not parse is kept aside as `PATH.bad` and named in the error).
    pub fn open(path: PathBuf) -> Result<(Self, Vec<Pending>), String> {
        let lock_path = path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("state file lock {}: {e}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "state file {} is in use by another running inspector: give each inspector its own --state-file (or --name)",
                    path.display()
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("state file lock {}: {e}", lock_path.display()));
            }
        }
        let leftovers: BTreeMap<String, Pending> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                let bad = path.with_extension("bad");
                let _ = std::fs::rename(&path, &bad);
                format!(
                    "state file {}: {e} (kept as {}; its faults must be healed by hand)",
                    path.display(),
                    bad.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("state file {}: {e}", path.display())),
        };
        let state = Self {
            path,
            pending: std::sync::Mutex::new(leftovers.clone()),
            _lock: lock,
        };
        Ok((state, leftovers.into_values().collect()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a fault about to be injected.
    pub fn register(&self, key: &str, pending: Pending) -> Result<(), String> {
        let mut all = self.lock();
        all.insert(key.to_owned(), pending);
        self.write(&all)
    }

    /// Forgets a fault (healed).
    pub fn remove(&self, key: &str) -> Result<(), String> {
        let mut all = self.lock();
        all.remove(key);
        self.write(&all)
    }

    /// Forgets every fault (the leftovers were healed).
    pub fn clear(&self) -> Result<(), String> {
        let mut all = self.lock();
        all.clear();
        self.write(&all)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, all: &BTreeMap<String, Pending>) -> Result<(), String> {
        let fail = |e: std::io::Error| format!("state file {}: {e}", self.path.display());
        if all.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(fail(e)),
                _ => Ok(()),
            };
        }
        let bytes = serde_json::to_vec_pretty(all).map_err(|e| e.to_string())?;
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, bytes).map_err(fail)?;
        std::fs::rename(&tmp, &self.path).map_err(fail)
    }
}

fn in_netns(netns: &Option<String>, args: &[&str]) -> Vec<String> {
    let mut c: Vec<String> = match netns {
        Some(ns) => vec!["ip".into(), "netns".into(), "exec".into(), ns.clone()],
        None => Vec::new(),
    };
    c.extend(args.iter().map(|a| (*a).to_owned()));
    c
}

impl ProcessTarget {
    /// The target's pid, never one a signal must not reach: 0 (our own process group),
    /// 1 (init) or this inspector itself, whatever a pidfile or a name says.
    fn resolve(&self) -> Result<u32, String> {
        let pid = self.resolve_any()?;
        if pid <= 1 || pid == std::process::id() {
            return Err(format!(
                "{} resolves to pid {pid}: refused (0 is the inspector's process group, 1 is init, {} is the inspector)",
                self.describe(),
                std::process::id()
            ));
        }
        Ok(pid)
    }

    /// The target's pid and start time, when that process runs.
    fn running(&self) -> Result<(u32, Option<u64>), String> {
        let pid = self.resolve()?;
        match start_time(pid) {
            Some(started) if alive(pid) => Ok((pid, Some(started))),
            _ => Err(format!(
                "{} resolves to pid {pid}, which is not running",
                self.describe()
            )),
        }
    }

    fn describe(&self) -> String {
        match self {
            ProcessTarget::Pid(p) => format!("pid:{p}"),
            ProcessTarget::Pidfile(path) => format!("pidfile:{}", path.display()),
            ProcessTarget::Name(n) => format!("name:{n}"),
        }
    }

    fn resolve_any(&self) -> Result<u32, String> {
        match self {
            ProcessTarget::Pid(p) => Ok(*p),
            ProcessTarget::Pidfile(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("pidfile {}: {e}", path.display()))?;
                text.trim()
                    .parse()
                    .map_err(|_| format!("pidfile {} holds no pid", path.display()))
            }
            ProcessTarget::Name(name) => {
                let mut sys = sysinfo::System::new();
                sys.refresh_processes(sysinfo::ProcessesToUpdate::All, true);
                let pids: Vec<u32> = sys
                    .processes_by_exact_name(name.as_ref())
                    .map(|p| p.pid().as_u32())
                    .collect();
                match pids.as_slice() {
                    [pid] => Ok(*pid),
                    [] => Err(format!("no process named {name:?}")),
                    _ => Err(format!(
                        "{} processes are named {name:?}: declare pid: or pidfile: instead",
                        pids.len()
                    )),
                }
            }
        }
    }
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) -> Result<(), String> {
    let p = i32::try_from(pid).map_err(|_| format!("pid {pid} is out of range"))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), signal)
        .map_err(|e| format!("{signal} to pid {pid}: {e}"))
}

/// The process's state letter from `/proc/PID/stat` (`T` stopped, `Z` zombie, ...).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn alive(pid: u32) -> bool {
    proc_state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

async fn wait_until(mut done: impl FnMut() -> bool, what: &str) -> Result<(), String> {
    let started = Instant::now();
    while started.elapsed() < CONFIRM_WITHIN {
        if done() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Err(format!("waited {CONFIRM_WITHIN:?} for {what}"))
}

/// Starts a process again: a command that daemonizes must exit 0; one that stays in the
/// foreground must still be running after a moment (it is left running, detached). It
/// gets its own process group (a Ctrl-C to the inspector's terminal or a signal to its
/// group does not reach it) and writes its output to a log file, never to a pipe nobody
/// reads (a server that fills one blocks).
async fn start(command: &[String]) -> Result<(), String> {
    let name = std::path::Path::new(&command[0])
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sut".into());
    let log_path = std::env::temp_dir().join(format!(
        "maestro-inspector-{}-{name}.log",
        std::process::id()
    ));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut child = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{}: {e}", command.join(" ")))?;
    tracing::info!(command = %command.join(" "), log = %log_path.display(), "started the SUT again");
    match tokio::time::timeout(Duration::from_millis(500), child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(format!(
                "{}: {status}: {} (log: {})",
                command.join(" "),
                tail.join(" | "),
                log_path.display()
            ))
        }
        Ok(Err(e)) => Err(format!("{}: {e}", command.join(" "))),
        // Still running: a foreground server. Reap it in the background.
        Err(_) => {
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            Ok(())
        }
    }
}

async fn run_command(command: &[String]) -> Result<(), String> {
    let output = tokio::time::timeout(
        COMMAND_TIMEOUT,
        tokio::process::Command::new(&command[0])
            .args(&command[1..])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("{}: no exit within {COMMAND_TIMEOUT:?}", command.join(" ")))?
    .map_err(|e| format!("{}: {e}", command.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}: {}",
            command.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_a_signal_must_not_reach_are_refused() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = tmp.path().to_path_buf();
        for (name, text) in [
            ("zero", "0".to_owned()),
            ("init", "1".to_owned()),
            ("me", std::process::id().to_string()),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap_or_default();
            let e = ProcessTarget::Pidfile(path).resolve().unwrap_err();
            assert!(e.contains("refused"), "{e}");
        }
        assert!(ProcessTarget::Pid(1).resolve().is_err());
        assert!(ProcessTarget::Pid(std::process::id()).resolve().is_err());
    }

    #[test]
    fn a_fault_file_declares_checked_actions() {
        let book = FaultBook::parse(
            r#"
[[action]]
name = "pause-broker"
kind = "pause"
target = "pidfile:/tmp/m.pid"

[[action]]
name = "slow"
kind = "delay"
device = "veth0"
netns = "sut"
delay = "100ms"
jitter = "10ms"

[[action]]
name = "cut"
kind = "partition"
port = 1883
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(book.actions.len(), 3);
        let slow = &book.actions[&ActionName::new("slow").unwrap_or_else(|e| panic!("{e}"))];
        assert_eq!(
            slow,
            &Action::Netem {
                netns: Some("sut".into()),
                device: "veth0".into(),
                netem: vec!["delay".into(), "100000us".into(), "10000us".into()],
            }
        );
        for (text, says) in [
            (
                "[[action]]\nname = \"k\"\nkind = \"kill\"\ntarget = \"pid:1\"",
                "needs `command`",
            ),
            (
                "[[action]]\nname = \"p\"\nkind = \"pause\"\ntarget = \"1\"",
                "must be pid:N",
            ),
            (
                "[[action]]\nname = \"l\"\nkind = \"loss\"\ndevice = \"d\"\npercent = 0.0",
                "percent 0",
            ),
            (
                "[[action]]\nname = \"l\"\nkind = \"loss\"\ndevice = \"d\"\nport = 1\npercent = 5.0",
                "either `device`",
            ),
            (
                "[[action]]\nname = \"x\"\nkind = \"reboot\"",
                "unknown variant `reboot`",
            ),
            (
                "[[action]]\nname = \"a b\"\nkind = \"pause\"\ntarget = \"pid:1\"",
                "fault action name",
            ),
            (
                "[[action]]\nname = \"p\"\nkind = \"pause\"\ntarget = \"pid:1\"\nshell = \"rm\"",
                "unknown field `shell`",
            ),
            (
                "[[action]]\nname = \"p\"\nkind = \"pause\"\ntarget = \"pid:1\"\n[[action]]\nname = \"p\"\nkind = \"pause\"\ntarget = \"pid:2\"",
                "declared twice",
            ),
        ] {
            let e = FaultBook::parse(text).err().unwrap_or_default();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn the_example_fault_file_is_valid() {
        let text = include_str!("../../deploy/inspector/faults.example.toml");
        let book = FaultBook::parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(book.actions.len(), 8);
    }

    #[tokio::test]
    async fn pause_stops_a_process_and_heal_resumes_it() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let pid = child.id();
        let action = Action::Pause(ProcessTarget::Pid(pid));
        let heal = action.prepare().unwrap_or_else(|e| panic!("{e}"));
        let outcome = action.apply(&heal).await;
        assert!(outcome.confirmed.is_some());
        assert_eq!(proc_state(pid), Some('T'));
        heal.heal().await.unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(proc_state(pid), Some('T'));
        let _ = child.kill();
        let _ = child.wait();
        assert!(Action::Pause(ProcessTarget::Pid(pid)).prepare().is_err());
    }

    /// A SIGSTOP that is never confirmed (a zombie cannot stop) fails the injection,
    /// and the heal registered before it still runs.
    #[tokio::test]
    async fn an_unconfirmed_pause_still_has_its_heal() {
        let child = std::process::Command::new("true")
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let pid = child.id();
        // Not waited for: a zombie until this test ends.
        assert!(
            wait_until_sync(|| proc_state(pid) == Some('Z')),
            "no zombie"
        );
        let action = Action::Pause(ProcessTarget::Pid(pid));
        // prepare() refuses a process that is not running; this heal is what it would
        // have registered for one that was.
        assert!(action.prepare().is_err());
        let heal = Injection::Stopped {
            pid,
            started: start_time(pid),
        };
        let outcome = action.apply(&heal).await;
        assert!(outcome.confirmed.is_none());
        assert!(
            outcome
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("to stop"),
            "{outcome:?}"
        );
        assert_eq!(outcome.undo.as_ref(), Some(&heal));
        heal.heal().await.unwrap_or_else(|e| panic!("{e}"));
        drop(child);
    }

    fn wait_until_sync(mut done: impl FnMut() -> bool) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn the_state_file_keeps_faults_until_healed_and_a_reused_pid_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = tmp.path().join("state.json");
        let (state, leftovers) = StateFile::open(path.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert!(leftovers.is_empty());
        let second = StateFile::open(path.clone()).err().unwrap_or_default();
        assert!(
            second.contains("in use by another running inspector"),
            "{second}"
        );
        let pending = |pid| Pending {
            action: "pause-broker".into(),
            heal: Injection::Stopped {
                pid,
                started: start_time(std::process::id()),
            },
        };
        state
            .register("r/1", pending(1))
            .unwrap_or_else(|e| panic!("{e}"));
        state
            .register("r/2", pending(2))
            .unwrap_or_else(|e| panic!("{e}"));
        state.remove("r/1").unwrap_or_else(|e| panic!("{e}"));
        drop(state);
        let (state, leftovers) = StateFile::open(path.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(leftovers, vec![pending(2)]);
        state.clear().unwrap_or_else(|e| panic!("{e}"));
        assert!(!path.exists());
        // pid 2 did not start when this process did: not the process that was stopped.
        assert!(!same_process(2, start_time(std::process::id())));
        assert!(same_process(
            std::process::id(),
            start_time(std::process::id())
        ));
        drop(state);
        std::fs::write(&path, "{not json").unwrap_or_default();
        let e = StateFile::open(path.clone()).err().unwrap_or_default();
        assert!(e.contains("healed by hand"), "{e}");
        let _ = std::fs::remove_file(path.with_extension("bad"));
        let _ = std::fs::remove_file(path.with_extension("lock"));
    }
}
