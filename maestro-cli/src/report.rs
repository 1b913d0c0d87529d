//! Rendering: peer outcomes as tables (`-o json` prints them as they are), and the
//! outcome (text, exit code, problem) of a request or a finished run.

use crate::exit;
use crate::output::{MaestroCommand, Outcome, Output};
use maestro_controller::outcome::{self, PeerOutcome, PeerStatus, StatsFields};
use maestro_controller::run::Finished;
use maestro_protocol::{Body, Halt, Ping, StatsRequest, Target};
use maestro_report::format::micros;
use std::time::Duration;

fn status_text(o: &PeerOutcome) -> String {
    match o.status {
        PeerStatus::Ok => "ok".into(),
        PeerStatus::Error => format!("error: {}", o.error.as_deref().unwrap_or("")),
        PeerStatus::NoReply => "NO REPLY".into(),
        PeerStatus::Offline => "OFFLINE".into(),
    }
}

fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    // Trailing spaces of the last column help nobody.
    t.to_string()
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

fn opt(v: Option<i64>, f: impl Fn(i64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

/// The ping table: Maestro's columns plus round trip and clock offset.
pub fn ping_table(outcomes: &[PeerOutcome]) -> String {
    table(
        &[
            "Command",
            "Name",
            "Host",
            "Group Name",
            "Member Name",
            "Role",
            "RTT",
            "Clock Offset",
            "Status",
        ],
        outcomes.iter().map(|o| {
            vec![
                o.reply.unwrap_or("-").to_owned(),
                o.name.clone(),
                o.host.clone(),
                o.group.clone(),
                o.member.clone(),
                o.role.to_string(),
                opt(o.rtt_us, micros),
                opt(o.clock_offset_us, |v| {
                    let s = micros(v);
                    if v >= 0 { format!("+{s}") } else { s }
                }),
                status_text(o),
            ]
        }),
    )
}

pub fn stats_table(outcomes: &[PeerOutcome]) -> String {
    table(
        &[
            "Name",
            "Host",
            "Group Name",
            "Role",
            "State",
            "Uptime",
            "Notes",
            "Bad Notes",
            "Refused",
            "Signed",
            "Reconnects",
            "Status",
        ],
        outcomes.iter().map(|o| {
            let s = o.stats.as_ref();
            let num =
                |f: fn(&StatsFields) -> u64| s.map(|s| f(s).to_string()).unwrap_or("-".into());
            vec![
                o.name.clone(),
                o.host.clone(),
                o.group.clone(),
                o.role.to_string(),
                s.map(|s| s.state.to_owned()).unwrap_or("-".into()),
                s.map(|s| {
                    humantime::format_duration(std::time::Duration::from_secs(s.uptime_ms / 1000))
                        .to_string()
                })
                .unwrap_or("-".into()),
                num(|s| s.notes_received),
                num(|s| s.bad_notes),
                num(|s| s.refused_notes),
                s.map(|s| if s.signed { "yes" } else { "no" }.to_owned())
                    .unwrap_or("-".into()),
                num(|s| s.reconnects),
                status_text(o),
            ]
        }),
    )
}

pub fn halt_table(outcomes: &[PeerOutcome]) -> String {
    table(
        &["Command", "Name", "Host", "Group Name", "Role", "Status"],
        outcomes.iter().map(|o| {
            vec![
                o.reply.unwrap_or("-").to_owned(),
                o.name.clone(),
                o.host.clone(),
                o.group.clone(),
                o.role.to_string(),
                status_text(o),
            ]
        }),
    )
}

/// Renders an exchange and judges it.
pub(crate) fn outcome(
    kind: MaestroCommand,
    exchange: &maestro_controller::Exchange,
    output: Output,
    cluster: &str,
    timeout: Duration,
) -> Outcome {
    let peers = outcome::outcomes(exchange);
    let stdout = match output {
        Output::Json => serde_json::to_string_pretty(&peers).unwrap_or_default(),
        Output::Table => match kind {
            MaestroCommand::Ping => ping_table(&peers),
            MaestroCommand::Stats => stats_table(&peers),
            MaestroCommand::Halt => halt_table(&peers),
        },
    };
    let (code, problem) = judge(&peers, cluster, &exchange.target, timeout);
    Outcome {
        stdout,
        code,
        problem,
        peers,
    }
}

/// How the control plane is protected, as this controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Security {
    pub tls: bool,
    pub client_certificate: bool,
    pub signed: bool,
    /// The control URL's host is a loopback address (or `localhost`).
    pub loopback: bool,
    /// Notes ignored for a missing or wrong signature.
    pub ignored: u64,
    pub host: String,
}

impl Security {
    pub fn of(c: &maestro_controller::Controller) -> Self {
        let url = c.url();
        let loopback = url.is_loopback();
        Security {
            tls: url.secure,
            client_certificate: url.tls.as_ref().is_some_and(|t| t.client_certificate()),
            signed: c.signs(),
            loopback,
            ignored: c.ignored_notes(),
            host: format!("{}:{}", url.host, url.port),
        }
    }

    /// `TLS on, client certificate off, signed notes on`.
    pub fn line(&self) -> String {
        let on = |b: bool| if b { "on" } else { "off" };
        format!(
            "security: TLS {}, client certificate {}, signed notes {}",
            on(self.tls),
            on(self.client_certificate),
            on(self.signed)
        )
    }

    /// Warnings: an open control plane beyond loopback, and notes ignored as unsigned.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if !self.tls && !self.signed && !self.loopback {
            w.push(format!(
                "warning: the control plane at {} has no TLS and no signed notes: anyone who can reach it can command these workers (use mqtts:// with maestro-broker --client-ca, or signed notes: --keys DIR from `maestro-cli certs init DIR` on every peer and controller)",
                self.host
            ));
        }
        if self.ignored > 0 {
            w.push(format!(
                "warning: {} notes were ignored for a missing or wrong signature (peers without this cluster's keys, or a stranger?)",
                self.ignored
            ));
        }
        w
    }

    /// Adds the security line (tables) and the warnings (stderr) to a ping's outcome.
    pub fn annotate(&self, outcome: &mut Outcome, output: Output) {
        if output == Output::Table {
            outcome.stdout = format!("{}\n{}", outcome.stdout, self.line());
        }
        let warnings = self.warnings();
        if !warnings.is_empty() {
            let mut lines: Vec<String> = outcome.problem.take().into_iter().collect();
            lines.extend(warnings);
            outcome.problem = Some(lines.join("\n"));
        }
    }
}

impl MaestroCommand {
    pub(crate) fn body(self) -> Body {
        match self {
            MaestroCommand::Ping => Body::Ping(Ping {}),
            MaestroCommand::Stats => Body::StatsRequest(StatsRequest {}),
            MaestroCommand::Halt => Body::Halt(Halt {}),
        }
    }
}

/// Exit code and message: every peer must have answered.
fn judge(
    peers: &[PeerOutcome],
    cluster: &str,
    target: &Target,
    timeout: Duration,
) -> (u8, Option<String>) {
    if peers.is_empty() {
        let whom = match target {
            Target::All => String::new(),
            Target::Role(r) => format!(" with role {r}"),
            Target::Group(g) => format!(" in group {g}"),
            Target::Peer(p) => format!(" with id {p}"),
        };
        return (
            exit::PEERS_MISSING,
            Some(format!("no peers{whom} in cluster {cluster:?}")),
        );
    }
    let missing: Vec<String> = peers
        .iter()
        .filter(|p| p.status != PeerStatus::Ok)
        .map(|p| {
            let why = match p.status {
                PeerStatus::NoReply => {
                    format!("no reply within {}", humantime::format_duration(timeout))
                }
                PeerStatus::Offline => "offline (disconnected abnormally)".into(),
                PeerStatus::Error => p.error.clone().unwrap_or_default(),
                PeerStatus::Ok => unreachable!(),
            };
            format!("  {} {} ({}, id {}): {why}", p.role, p.name, p.host, p.id)
        })
        .collect();
    if missing.is_empty() {
        return (exit::OK, None);
    }
    (
        exit::PEERS_MISSING,
        Some(format!(
            "{} of {} peers did not answer:\n{}",
            missing.len(),
            peers.len(),
            missing.join("\n")
        )),
    )
}

/// Output and exit code of a finished run.
pub(crate) fn finished_outcome(f: &Finished, output: Output) -> Outcome {
    let s = &f.summary;
    let stdout = match output {
        Output::Json => serde_json::to_string_pretty(s).unwrap_or_default(),
        Output::Table => crate::start::summary_table(s, &f.folder),
    };
    let (code, problem) = if s.partial.is_some() {
        (
            exit::PEERS_MISSING,
            Some("a partial summary: the run's controller ended before the run did".to_owned()),
        )
    } else if s.interrupted {
        (
            exit::INTERRUPTED,
            Some("interrupted; partial results written".to_owned()),
        )
    } else if s.degraded {
        (
            exit::PEERS_MISSING,
            Some(format!("run degraded: {}", s.degraded_reasons.join("; "))),
        )
    } else {
        (exit::OK, None)
    };
    Outcome {
        stdout,
        code,
        problem,
        peers: Vec::new(),
    }
}

/// What `certs init` wrote.
pub(crate) fn certs_outcome(w: &maestro_controller::certs::Written, output: Output) -> Outcome {
    let stdout = match output {
        Output::Json => serde_json::to_string_pretty(w).unwrap_or_default(),
        Output::Table => format!(
            "CA certificate      {}\nCA key              {}\nserver certificate  {}  ({})\nserver key          {}\n{}",
            w.ca.display(),
            w.ca_key.display(),
            w.server.display(),
            w.names.join(", "),
            w.server_key.display(),
            keys_table(&w.keys)
        ),
    };
    Outcome {
        stdout,
        code: exit::OK,
        problem: None,
        peers: Vec::new(),
    }
}

/// `maestro-cli certs init --keys-only DIR`.
pub(crate) fn keys_outcome(k: &maestro_controller::certs::KeyFiles, output: Output) -> Outcome {
    let stdout = match output {
        Output::Json => serde_json::to_string_pretty(k).unwrap_or_default(),
        Output::Table => keys_table(k),
    };
    Outcome {
        stdout,
        code: exit::OK,
        problem: None,
        peers: Vec::new(),
    }
}

/// `maestro-cli certs remember DIR`.
pub(crate) fn remembered_outcome(
    to: &std::path::Path,
    url: &maestro_control::ControlUrl,
    output: Output,
) -> Outcome {
    let stdout = match output {
        Output::Json => serde_json::json!({ "url": url.to_string(), "keys": to }).to_string(),
        Output::Table => format!(
            "controller keys for {url} remembered in {} (commands to it sign without --keys)",
            to.display()
        ),
    };
    Outcome {
        stdout,
        code: exit::OK,
        problem: None,
        peers: Vec::new(),
    }
}

fn keys_table(k: &maestro_controller::certs::KeyFiles) -> String {
    format!(
        "controller key      {}  (controllers only: it commands the cluster)\ncontroller public   {}  (workers and inspectors)\npeer key            {}  (workers and inspectors)\npeer public         {}  (controllers)",
        k.controller_key.display(),
        k.controller_pub.display(),
        k.peer_key.display(),
        k.peer_pub.display()
    )
}

/// `maestro-cli export`: a run's results in another tool's format.
pub fn export(args: &crate::cli::ExportArgs) -> Result<Outcome, crate::output::CliError> {
    let crate::cli::ExportFormat::Omb = args.format;
    let interval_s = u32::try_from(args.interval.as_secs().max(1)).unwrap_or(u32::MAX);
    let result = maestro_report::omb::export(&args.folder, interval_s)?;
    let (run, _) = maestro_report::omb::run_folder(&args.folder)?;
    let path = args.out.clone().unwrap_or_else(|| run.join("omb.json"));
    let text = serde_json::to_string_pretty(&result)
        .map_err(|e| maestro_report::ResultsError::Write(path.clone(), std::io::Error::other(e)))?;
    maestro_report::folder::write_atomic(&path, text.as_bytes())
        .map_err(|e| maestro_report::ResultsError::Write(path.clone(), e))?;
    Ok(Outcome {
        stdout: format!(
            "wrote {} ({} intervals of {} s)",
            path.display(),
            result.publish_rate.len(),
            interval_s
        ),
        code: exit::OK,
        problem: None,
        peers: Vec::new(),
    })
}

/// `maestro-cli report FOLDER`: a plan's HTML report; for a run or plan whose controller
/// ended mid-run, a partial `summary.json` for each unfinished run folder (exit 4, the
/// workers' results never arrived); for a finished run folder, its summary again.
pub(crate) fn report_folder(
    folder: &std::path::Path,
    output: Output,
) -> Result<Outcome, crate::output::CliError> {
    use maestro_report::partial;
    let unfinished = partial::unfinished_under(folder);
    if unfinished.is_empty() {
        // A run folder (of `start`): its summary, as `start` printed it. (A plan's
        // summary.json is not a run's, and goes on to the HTML report.)
        if let Ok(s) = maestro_report::folder::read_run(folder) {
            return Ok(finished_outcome(
                &Finished {
                    summary: s,
                    folder: folder.to_owned(),
                },
                output,
            ));
        }
        let path = maestro_report::html::write(folder)?;
        return Ok(Outcome {
            stdout: format!("wrote {}", path.display()),
            code: exit::OK,
            problem: None,
            peers: Vec::new(),
        });
    }
    let mut summaries = Vec::new();
    for run in &unfinished {
        let s = partial::summarize(run)?;
        maestro_report::folder::write(&run.join("summary.json"), &s)?;
        summaries.push((run.clone(), s));
    }
    let stdout = match output {
        Output::Json => {
            let all: Vec<&maestro_report::RunSummary> = summaries.iter().map(|(_, s)| s).collect();
            if all.len() == 1 {
                serde_json::to_string_pretty(all[0]).unwrap_or_default()
            } else {
                serde_json::to_string_pretty(&all).unwrap_or_default()
            }
        }
        Output::Table => summaries
            .iter()
            .map(|(f, s)| {
                format!(
                    "PARTIAL summary written to {}\n{}",
                    f.join("summary.json").display(),
                    crate::start::summary_table(s, f)
                )
            })
            .collect::<Vec<_>>()
            .join("\n\n"),
    };
    Ok(Outcome {
        stdout,
        code: exit::PEERS_MISSING,
        problem: Some(format!(
            "{} run(s) ended without their controller: partial summaries from the flushed time series (see degraded_reasons)",
            summaries.len()
        )),
        peers: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_warns_only_when_open_beyond_loopback() {
        let open = Security {
            tls: false,
            client_certificate: false,
            signed: false,
            loopback: false,
            ignored: 0,
            host: "10.0.0.5:1883".into(),
        };
        assert_eq!(open.warnings().len(), 1);
        assert!(open.warnings()[0].contains("10.0.0.5:1883"));
        assert_eq!(
            open.line(),
            "security: TLS off, client certificate off, signed notes off"
        );
        let local = Security {
            loopback: true,
            ..open.clone()
        };
        assert!(local.warnings().is_empty());
        let signed = Security {
            signed: true,
            ignored: 3,
            ..open
        };
        let w = signed.warnings();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("3 notes were ignored"), "{w:?}");
    }
}
