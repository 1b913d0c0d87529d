//! The inspector's host (CPU, memory, network, disk) and one chosen process (CPU and
//! RSS), through `sysinfo`. An inspector beside the SUT shows what the broker costs.

use super::Target;
use maestro_protocol::Metric;
use maestro_protocol::inspect::names;
use std::sync::{Arc, Mutex};
use sysinfo::{Disks, Networks, Pid, ProcessRefreshKind, ProcessesToUpdate};

#[derive(Debug)]
pub struct System {
    target: Target,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    system: sysinfo::System,
    networks: Option<Networks>,
    disks: Option<Disks>,
}

impl System {
    pub fn new(target: Target) -> Self {
        Self {
            target,
            state: Arc::new(Mutex::new(State {
                system: sysinfo::System::new(),
                networks: None,
                disks: None,
            })),
        }
    }

    pub async fn sample(&mut self) -> Result<Vec<Metric>, String> {
        let (target, state) = (self.target.clone(), self.state.clone());
        tokio::task::spawn_blocking(move || {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            match target {
                Target::Host => Ok(s.host()),
                Target::Pid(pid) => s.process(Some(pid), None),
                Target::ProcessName(name) => s.process(None, Some(&name)),
                Target::Url(u) => Err(format!("{u} is not a host or a process")),
                Target::Bootstrap(b) => Err(format!("{b} is not a host or a process")),
            }
        })
        .await
        .map_err(|e| format!("reader failed: {e}"))?
    }
}

impl State {
    fn host(&mut self) -> Vec<Metric> {
        let sys = &mut self.system;
        sys.refresh_cpu_usage();
        sys.refresh_memory();
        let mut m = vec![
            Metric::gauge("cpu_percent", f64::from(sys.global_cpu_usage())),
            Metric::gauge("cpus", sys.cpus().len() as f64),
            Metric::gauge("memory_used_bytes", sys.used_memory() as f64),
            Metric::gauge("memory_total_bytes", sys.total_memory() as f64),
        ];
        let networks = self
            .networks
            .get_or_insert_with(Networks::new_with_refreshed_list);
        networks.refresh(true);
        let (rx, tx) = networks
            .iter()
            .filter(|(name, _)| name.as_str() != "lo")
            .fold((0u64, 0u64), |(r, t), (_, d)| {
                (r + d.total_received(), t + d.total_transmitted())
            });
        let (lo_rx, lo_tx) = networks
            .iter()
            .filter(|(name, _)| name.as_str() == "lo")
            .fold((0u64, 0u64), |(r, t), (_, d)| {
                (r + d.total_received(), t + d.total_transmitted())
            });
        m.push(Metric::counter("net_received_bytes", rx as f64));
        m.push(Metric::counter("net_sent_bytes", tx as f64));
        m.push(Metric::counter("loopback_bytes", lo_rx.max(lo_tx) as f64));
        let disks = self
            .disks
            .get_or_insert_with(Disks::new_with_refreshed_list);
        disks.refresh(true);
        let (read, written) = disks.iter().fold((0u64, 0u64), |(r, w), d| {
            let u = d.usage();
            (r + u.total_read_bytes, w + u.total_written_bytes)
        });
        m.push(Metric::counter("disk_read_bytes", read as f64));
        m.push(Metric::counter("disk_written_bytes", written as f64));
        m
    }

    /// One process by pid, or every process with this exact name (summed).
    fn process(&mut self, pid: Option<u32>, name: Option<&str>) -> Result<Vec<Metric>, String> {
        let kind = ProcessRefreshKind::nothing().with_cpu().with_memory();
        let sys = &mut self.system;
        let found: Vec<&sysinfo::Process> = match (pid, name) {
            (Some(pid), _) => {
                let pid = Pid::from_u32(pid);
                sys.refresh_processes_specifics(ProcessesToUpdate::Some(&[pid]), true, kind);
                sys.process(pid).into_iter().collect()
            }
            (None, Some(name)) => {
                sys.refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
                sys.processes_by_exact_name(name.as_ref()).collect()
            }
            (None, None) => Vec::new(),
        };
        if found.is_empty() {
            return Err(match (pid, name) {
                (Some(pid), _) => format!("no process with pid {pid}"),
                (_, name) => format!("no process named {:?}", name.unwrap_or("")),
            });
        }
        let cpu: f64 = found.iter().map(|p| f64::from(p.cpu_usage())).sum();
        let cpu_ms: u64 = found.iter().map(|p| p.accumulated_cpu_time()).sum();
        let rss: u64 = found.iter().map(|p| p.memory()).sum();
        let stopped = found
            .iter()
            .filter(|p| p.status() == sysinfo::ProcessStatus::Stop)
            .count();
        Ok(vec![
            Metric::gauge("cpu_percent", cpu),
            Metric::counter("cpu_seconds", cpu_ms as f64 / 1000.0),
            Metric::gauge(names::MEMORY_BYTES, rss as f64),
            Metric::gauge("processes", found.len() as f64),
            Metric::gauge("stopped", stopped as f64),
        ])
    }
}
