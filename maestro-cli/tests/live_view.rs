//! The live terminal view, driven the way a person uses it: `maestro-cli` in a real
//! terminal (tmux), keys sent with `send-keys`, the screen read with `capture-pane`.
//! Against Mosquitto, a two-worker cluster and an inspector with a declared fault.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_testkit::{Cluster, Mosquitto, Proc, binary, wait_for};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tmux server of this test's own (its own socket file), killed and its socket
/// removed on drop.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// Runs `command` in a 140x50 window; its exit code lands in `exit_file`.
    fn run(command: &[String], exit_file: &Path) -> Self {
        let socket = std::env::temp_dir().join(format!(
            "maestro-live-{}-{}.tmux",
            std::process::id(),
            fastrand::u32(..)
        ));
        let quoted: Vec<String> = command
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
            .collect();
        let line = format!(
            "{}; echo $? > '{}'; sleep 600",
            quoted.join(" "),
            exit_file.display()
        );
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(["new-session", "-d", "-s", "live", "-x", "140"])
            .args(["-y", "50", &line])
            .output()
            .expect("tmux is installed (.ci/test installs it)");
        assert!(out.status.success(), "tmux: {out:?}");
        Self { socket }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["capture-pane", "-p", "-t", "live"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["send-keys", "-t", "live", keys])
            .output()
            .unwrap();
        assert!(out.status.success(), "send-keys: {out:?}");
    }

    /// Waits until the screen shows all of `wanted`; returns it.
    fn until(&self, wanted: &[&str], timeout: Duration) -> String {
        let mut last = String::new();
        let ok = wait_for(timeout, || {
            last = self.screen();
            wanted.iter().all(|w| last.contains(w))
        });
        assert!(ok, "the screen never showed {wanted:?}:\n{last}");
        last
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn exit_code(file: &Path) -> Option<i32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn cli_command(c: &Cluster, args: &[&str]) -> Vec<String> {
    let mut all = vec![
        binary("maestro-cli").unwrap().display().to_string(),
        "-m".into(),
        c.broker.url(),
        "--cluster".into(),
        c.cluster.clone(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    all
}

/// An inspector reading Mosquitto's `$SYS`, with a declared pause of it.
fn inspector(c: &Cluster, mq: &Mosquitto, dir: &Path) -> Proc {
    let faults = dir.join("faults.toml");
    std::fs::write(
        &faults,
        format!(
            "[[action]]\nname = \"pause-broker\"\nkind = \"pause\"\ntarget = \"pid:{}\"\n",
            mq.proc.pid()
        ),
    )
    .unwrap();
    let sys = format!("mqtt-sys=mqtt://127.0.0.1:{}", mq.port);
    c.spawn_inspector(
        "insp",
        &["--source", &sys, "--faults", faults.to_str().unwrap()],
    )
}

fn summary_of(results: &Path) -> serde_json::Value {
    let run = std::fs::read_dir(results)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.join("summary.json").exists())
        .unwrap_or_else(|| panic!("no results folder in {}", results.display()));
    serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn start_shows_the_run_live_and_q_stops_it_with_its_results() {
    let mq = Mosquitto::start_with("sys_interval 1").unwrap();
    let c = Cluster::start(2);
    let dir = c.results.join("live");
    std::fs::create_dir_all(&dir).unwrap();
    let _inspector = inspector(&c, &mq, &dir);
    let results: PathBuf = dir.join("results");
    let exit_file = dir.join("exit");
    let sut = mq.url("live", "qos=1");
    let tmux = Tmux::run(
        &cli_command(
            &c,
            &[
                "start",
                "--sut",
                &sut,
                "--rate",
                "200",
                "--duration",
                "60s",
                "--producers",
                "2",
                "--consumers",
                "2",
                "--fault",
                "3s+2s:pause-broker",
                "--results",
                results.to_str().unwrap(),
            ],
        ),
        &exit_file,
    );
    // The view: the run, its rates, both workers, the SUT's figures and the fault.
    tmux.until(
        &[
            "┌ maestro",
            "running",
            "sent/s",
            "received/s",
            "w0",
            "w1",
            "insp/mqtt-sys",
            "messages_received",
            "pause-broker",
            "q or Ctrl-C",
        ],
        Duration::from_secs(30),
    );
    // The fault shows while it is in effect, and its end.
    tmux.until(
        &["IN EFFECT", "FAULT pause-broker"],
        Duration::from_secs(15),
    );
    let healed = tmux.until(&["healed"], Duration::from_secs(15));
    assert!(healed.contains("phase start"), "{healed}");
    // The rate comes back after the pause: a second with sends after the heal.
    tmux.until(&["sent/s 200"], Duration::from_secs(15));
    tmux.keys("q");
    let ok = wait_for(Duration::from_secs(30), || exit_code(&exit_file).is_some());
    let screen = tmux.screen();
    assert!(ok, "maestro-cli did not exit after q:\n{screen}");
    // Stopped like Ctrl-C: exit 130, the summary table on the normal screen, results kept.
    assert_eq!(exit_code(&exit_file), Some(130), "{screen}");
    assert!(!screen.contains("┌ maestro"), "the view is gone:\n{screen}");
    assert!(screen.contains("interrupted"), "{screen}");
    let s = summary_of(&results);
    assert_eq!(s["interrupted"], true, "{s}");
    let sent = s["sent"].as_u64().unwrap();
    assert!(sent > 0 && sent < 200 * 60, "{s}");
    assert_eq!(s["lost"], 0, "{s}");
    assert_eq!(s["faults"][0]["action"], "pause-broker", "{s}");
}

#[test]
fn a_plan_shows_its_phase_and_ctrl_c_ends_it_with_the_phases_so_far() {
    let mq = Mosquitto::start_with("sys_interval 1").unwrap();
    let c = Cluster::start(1);
    let dir = c.results.join("plan");
    std::fs::create_dir_all(&dir).unwrap();
    let plan = dir.join("plan.toml");
    std::fs::write(
        &plan,
        format!(
            r#"[plan]
name = "live"
[sut]
url = "{}"
[workload]
topics = 1
producers_per_topic = 1
subscriptions_per_topic = 1
[[phase]]
kind = "warmup"
rate = 100
duration = "1s"
[[phase]]
kind = "fixed"
rate = 300
duration = "60s"
"#,
            mq.url("plan", "qos=1")
        ),
    )
    .unwrap();
    let results = dir.join("results");
    let exit_file = dir.join("exit");
    let tmux = Tmux::run(
        &cli_command(
            &c,
            &[
                "run",
                plan.to_str().unwrap(),
                "--results",
                results.to_str().unwrap(),
            ],
        ),
        &exit_file,
    );
    tmux.until(
        &["phase 01-fixed (run 2)", "running", "sent/s 300"],
        Duration::from_secs(40),
    );
    tmux.keys("C-c");
    let ok = wait_for(Duration::from_secs(30), || exit_code(&exit_file).is_some());
    let screen = tmux.screen();
    assert!(ok, "maestro-cli did not exit after Ctrl-C:\n{screen}");
    assert_eq!(exit_code(&exit_file), Some(130), "{screen}");
    assert!(screen.contains("plan live  INTERRUPTED"), "{screen}");
    let s = summary_of(&results);
    assert_eq!(s["interrupted"], true, "{s}");
    assert_eq!(s["passed"], false, "{s}");
    assert_eq!(s["phases"].as_array().unwrap().len(), 2, "{s}");
}

#[test]
fn no_tui_keeps_the_progress_lines() {
    let mq = Mosquitto::start().unwrap();
    let c = Cluster::start(1);
    let dir = c.results.join("plain");
    std::fs::create_dir_all(&dir).unwrap();
    let exit_file = dir.join("exit");
    let sut = mq.url("plain", "qos=1");
    let tmux = Tmux::run(
        &cli_command(
            &c,
            &[
                "start",
                "--sut",
                &sut,
                "--rate",
                "100",
                "--duration",
                "3s",
                "--no-tui",
                "--results",
                dir.join("results").to_str().unwrap(),
            ],
        ),
        &exit_file,
    );
    let ok = wait_for(Duration::from_secs(40), || exit_code(&exit_file).is_some());
    let screen = tmux.screen();
    assert!(ok, "{screen}");
    assert_eq!(exit_code(&exit_file), Some(0), "{screen}");
    assert!(!screen.contains("┌ maestro"), "{screen}");
    // The per-second progress lines on stderr, e.g. `[   1s] sent      100/s`.
    assert!(screen.contains("s] sent "), "{screen}");
}
