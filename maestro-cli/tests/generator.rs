//! The generator's own verdict (`generator` in summary.json): a run the tool limited says
//! so, and a run the SUT limited does not. Real binaries, a private Mosquitto, and a CPU
//! cgroup (v1) to starve a worker on purpose.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use maestro_testkit::{Cluster, Mosquitto, signal};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

/// A CPU cgroup of this test's own that holds one process to a share of a core; moves it
/// back to the root group and removes itself on drop.
struct CpuLimit {
    dir: PathBuf,
    pid: u32,
}

const CGROUP_CPU: &str = "/sys/fs/cgroup/cpu";

impl CpuLimit {
    /// `pid` gets `percent` % of one core.
    fn hold(pid: u32, percent: u32) -> Self {
        let dir =
            PathBuf::from(CGROUP_CPU).join(format!("maestro-test-{}-{pid}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "cannot make a CPU cgroup at {} ({e}): this test needs a writable cgroup v1 cpu controller",
                dir.display()
            )
        });
        let limit = Self { dir, pid };
        let write = |file: &str, value: String| {
            std::fs::write(limit.dir.join(file), value)
                .unwrap_or_else(|e| panic!("{}: {e}", limit.dir.join(file).display()))
        };
        write("cpu.cfs_period_us", "100000".into());
        write("cpu.cfs_quota_us", (percent * 1000).to_string());
        write("cgroup.procs", pid.to_string());
        limit
    }
}

impl Drop for CpuLimit {
    fn drop(&mut self) {
        let _ = std::fs::write(
            PathBuf::from(CGROUP_CPU).join("cgroup.procs"),
            self.pid.to_string(),
        );
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn a_worker_starved_of_cpu_is_generator_bound() {
    let c = Cluster::start(1);
    let mq = Mosquitto::start().unwrap();
    // 5 % of one core for the worker, and 20,000 msg/s asked of it.
    let _limit = CpuLimit::hold(c.workers[0].pid(), 5);
    let (run, s) = c.run_test(
        &mq.url("starved", "qos=0"),
        &["--rate", "20000", "--duration", "4s", "--consumers", "1"],
    );
    eprintln!("generator {:#}", s["generator"]);
    assert!(run.code.is_some(), "{run:?}");
    let g = &s["generator"];
    assert_eq!(g["bound"], true, "a starved worker limited the run: {s:#}");
    let reasons = g["reasons"].as_array().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().unwrap().contains("waited for a CPU")),
        "the reasons say it was starved: {g:#}"
    );
    let w = &g["workers"][0];
    assert!(w["waited_max"].as_f64().unwrap() >= 0.2, "{g:#}");
    assert!(w["threads"].as_u64().unwrap() >= 1, "{g:#}");
}

#[test]
fn a_paused_broker_is_not_generator_bound_and_shows_in_response_time() {
    let c = Cluster::start(1);
    let mq = Mosquitto::start().unwrap();
    let cli = c.run_in_background(
        &mq.url("paused", "qos=1"),
        &["--rate", "2000", "--duration", "8s"],
    );
    assert!(
        c.wait_until_running(1, Duration::from_secs(20)),
        "never running"
    );
    std::thread::sleep(Duration::from_secs(3));
    mq.proc.signal(signal::SIGSTOP);
    std::thread::sleep(Duration::from_secs(2));
    mq.proc.signal(signal::SIGCONT);
    let run = cli.join().unwrap();
    assert_eq!(run.code, Some(0), "{run:?}");
    let s = run.json().unwrap();
    eprintln!("generator {:#}", s["generator"]);
    assert!(
        u(&s["response_time_us"], "p99") >= 1_000_000,
        "the pause shows in the response time: {s:#}"
    );
    let g = &s["generator"];
    assert_eq!(g["bound"], false, "the SUT, not the tool, stalled: {s:#}");
    assert_eq!(g["reasons"].as_array().unwrap().len(), 0, "{g:#}");
    // The producer's window filled while the broker was paused: the messages due then
    // were held back by the SUT (2 s of 8 at 2,000/s).
    let held = g["held_back_fraction"].as_f64().unwrap();
    assert!((0.05..0.5).contains(&held), "{g:#}");
    let w = &g["workers"][0];
    assert!(w["busy_max"].as_f64().unwrap() < 0.9, "{g:#}");
    assert!(w["cpu_s"].as_f64().unwrap() > 0.0, "{g:#}");
}

#[test]
fn a_healthy_run_reports_its_pacer_precise_and_not_bound() {
    let c = Cluster::start(1);
    let mq = Mosquitto::start_with("set_tcp_nodelay true").unwrap();
    let (run, s) = c.run_test(
        &mq.url("healthy", "qos=0"),
        &["--rate", "1000", "--duration", "4s", "--warmup", "1s"],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let g = &s["generator"];
    eprintln!("send lag {:#} generator {g:#}", s["send_lag_us"]);
    assert_eq!(g["bound"], false, "{s:#}");
    // The microsecond pacer: tokio's 1 ms timer wheel put the median near 1 ms. Generous
    // against a noisy machine; the pacing benchmark measures the precision.
    assert!(
        u(&s["send_lag_us"], "p50") < 500,
        "the pacer wakes within microseconds: {s:#}"
    );
    assert_eq!(u(g, "send_lag_p50_us"), u(&s["send_lag_us"], "p50"));
}
