//! Peer outcomes as tables for people (`-o json` prints them as they are).

use maestro_controller::outcome::{PeerOutcome, PeerStatus, StatsFields};
use maestro_report::format::micros;

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
