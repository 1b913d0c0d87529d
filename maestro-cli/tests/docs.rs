//! The docs' generated pages are made from the code: the command-line reference and the
//! man pages (clap), the exit codes (`maestro_cli::exit::TABLE`), the environment
//! variables (clap, with one meaning each), the SUT URL reference (the protocol
//! registry) and the results files' reference (the types, through `schemars`). This test fails when a page in `docs/` is out of date;
//! `MAESTRO_BLESS=1 cargo test -p maestro-cli --test docs` writes them.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use clap::CommandFactory;
use maestro_protocol::Scheme;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

/// The four binaries' command lines.
fn commands() -> Vec<clap::Command> {
    vec![
        maestro_cli::Cli::command(),
        maestro_broker::args::Args::command(),
        maestro_worker::args::Args::command(),
        maestro_inspector::args::Args::command(),
    ]
}

const GENERATED: &str = "<!-- Generated from the code by maestro-cli/tests/docs.rs: do not edit; \
run `MAESTRO_BLESS=1 cargo test -p maestro-cli --test docs` after changing the code. -->\n\n";

fn cli_pages(out: &mut BTreeMap<PathBuf, String>) {
    for cmd in commands() {
        let name = cmd.get_name().to_owned();
        let options = clap_markdown::MarkdownOptions::new()
            .show_footer(false)
            .title(format!("`{name}`"));
        let md = clap_markdown::help_markdown_command_custom(&cmd, &options);
        out.insert(
            PathBuf::from(format!("src/reference/cli/{name}.md")),
            format!("{GENERATED}{md}"),
        );
    }
}

fn man_pages(out: &mut BTreeMap<PathBuf, String>) {
    fn render(cmd: clap::Command, prefix: &str, out: &mut BTreeMap<PathBuf, String>) {
        let name = if prefix.is_empty() {
            cmd.get_name().to_owned()
        } else {
            format!("{prefix}-{}", cmd.get_name())
        };
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            render(sub, &name, out);
        }
        let mut buf = Vec::new();
        let static_name: &'static str = Box::leak(name.clone().into_boxed_str());
        clap_mangen::Man::new(cmd.name(static_name))
            .render(&mut buf)
            .unwrap();
        out.insert(
            PathBuf::from(format!("man/{name}.1")),
            String::from_utf8(buf).unwrap(),
        );
    }
    for cmd in commands() {
        let mut cmd = cmd.disable_help_subcommand(true);
        cmd.build();
        render(cmd, "", out);
    }
}

fn exit_codes() -> String {
    let mut s =
        format!("{GENERATED}# Exit codes\n\n## `maestro-cli`\n\n| code | meaning |\n|---|---|\n");
    for (code, meaning) in maestro_cli::exit::TABLE {
        writeln!(s, "| {code} | {meaning} |").unwrap();
    }
    s.push_str(
        "\nThe daemons say theirs in `--help` (see their [command lines](cli/maestro-broker.md)).\n",
    );
    for cmd in commands().into_iter().skip(1) {
        let about = cmd
            .get_long_about()
            .or(cmd.get_about())
            .map(|a| a.to_string());
        if let Some(line) = about
            .as_deref()
            .and_then(|a| a.lines().find(|l| l.starts_with("Exit codes")))
        {
            writeln!(s, "- `{}`: {}", cmd.get_name(), line.trim_end_matches('.')).unwrap();
        }
    }
    s
}

/// Every environment variable of every (sub)command, with the flags that read it.
fn environment() -> (String, Vec<String>) {
    type Uses = BTreeMap<String, Vec<(String, String)>>;
    fn walk(cmd: &clap::Command, path: &str, uses: &mut Uses) {
        let path = if path.is_empty() {
            cmd.get_name().to_owned()
        } else {
            format!("{path} {}", cmd.get_name())
        };
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                let help = arg
                    .get_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default()
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let flag = arg
                    .get_long()
                    .map_or_else(|| arg.get_id().to_string(), |l| format!("--{l}"));
                uses.entry(env.to_string_lossy().into_owned())
                    .or_default()
                    .push((format!("{path} {flag}"), help));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &path, uses);
        }
    }
    let mut uses = Uses::new();
    for cmd in commands() {
        let mut cmd = cmd;
        cmd.build();
        walk(&cmd, "", &mut uses);
    }
    let mut s = format!(
        "{GENERATED}# Environment variables\n\nEvery flag is also an environment variable; each variable has one meaning wherever it is read.\n\n| variable | read by | meaning |\n|---|---|---|\n"
    );
    let mut clashes = Vec::new();
    for (env, list) in &uses {
        let mut helps: Vec<&str> = list.iter().map(|(_, h)| h.as_str()).collect();
        helps.sort_unstable();
        helps.dedup();
        if helps.len() > 1 {
            clashes.push(format!(
                "{env}: {}",
                list.iter()
                    .map(|(w, h)| format!("{w} ({h})"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        let mut by: Vec<&str> = list.iter().map(|(w, _)| w.as_str()).collect();
        by.dedup();
        writeln!(
            s,
            "| `{env}` | {} | {} |",
            by.iter()
                .map(|b| format!("`{b}`"))
                .collect::<Vec<_>>()
                .join(", "),
            helps.join(" / ").replace('|', "\\|")
        )
        .unwrap();
    }
    (s, clashes)
}

fn sut_urls() -> String {
    let mut s = format!(
        "{GENERATED}# SUT URLs\n\nThe system under test is one URL (`--sut`, a plan's `sut.url`), parsed once into typed options. \
Several URLs (or hosts separated by commas) are the nodes of one SUT where the protocol takes several hosts.\n\n## What each protocol can do\n\n"
    );
    type Row = (&'static str, fn(&maestro_protocol::Capabilities) -> String);
    let caps: [Row; 11] = [
        ("competing consumers", |c| yes(c.competing_consumers)),
        ("several subscriptions per topic", |c| {
            yes(c.several_subscriptions)
        }),
        ("reliable acks", |c| yes(c.reliable_acks)),
        ("consumer backlog", |c| yes(c.backlog)),
        ("partitions", |c| yes(c.partitions)),
        ("keys", |c| yes(c.keys)),
        ("several hosts", |c| yes(c.several_hosts)),
        ("TLS", |c| yes(c.tls)),
        ("a certificate per client", |c| {
            yes(c.per_client_certificates)
        }),
        ("fleets", |c| yes(c.fleet)),
        ("open files per client", |c| c.files_per_client.to_string()),
    ];
    s.push_str("| |");
    for scheme in Scheme::ALL {
        write!(s, " {} |", scheme.title()).unwrap();
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(Scheme::ALL.len()));
    s.push('\n');
    for (name, get) in caps {
        write!(s, "| {name} |").unwrap();
        for scheme in Scheme::ALL {
            write!(s, " {} |", get(&scheme.capabilities())).unwrap();
        }
        s.push('\n');
    }
    s.push_str(
        "\nMQTT consumers of a topic compete through a shared subscription (`shared=true`), \
         and its URL says how MQTT travels: `mqtt://` (TCP), `mqtts://` (TLS), `ws://` and \
         `wss://` (WebSockets), with `version=3.1.1` or `version=5`.\n",
    );
    for scheme in Scheme::ALL {
        write!(
            s,
            "\n## {}\n\n```text\n{}\n```\n\n| option | default | meaning |\n|---|---|---|\n",
            scheme.title(),
            scheme.url_form()
        )
        .unwrap();
        for o in scheme.url_options() {
            writeln!(s, "| `{}` | {} | {} |", o.key, o.default, o.meaning).unwrap();
        }
        let tls = scheme.tls_keys();
        if !tls.is_empty() {
            writeln!(
                s,
                "\nTLS options: {}.",
                tls.iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
            .unwrap();
        }
    }
    s.push_str("\n## TLS options\n\n| option | default | meaning |\n|---|---|---|\n");
    for o in maestro_protocol::sut::TLS_OPTIONS {
        writeln!(s, "| `{}` | {} | {} |", o.key, o.default, o.meaning).unwrap();
    }
    s
}

/// The results files' reference, from the types they are read and written with
/// (`schemars`): `summary.json` (a run) and `plan-result.json` (a plan), each type a table
/// of its fields.
fn results() -> String {
    let mut out = String::from(GENERATED);
    out.push_str(
        "# Results files\n\nEvery run writes `summary.json`, every plan `plan-result.json`, in its \
results folder (beside `timeseries.csv`, the `.hlog` histograms, `report.html` and \
`junit.xml`). Their fields, from the types maestro reads and writes them with; latencies \
are in microseconds. Fields marked *optional* may be absent or `null`; a results file \
that lacks a required field is refused with the file and the field named.\n",
    );
    let roots = [
        (
            "summary.json",
            schemars::schema_for!(maestro_report::RunSummary),
        ),
        (
            "plan-result.json",
            schemars::schema_for!(maestro_report::PlanResult),
        ),
    ];
    let mut defs = BTreeMap::new();
    for (file, schema) in &roots {
        let v = schema.as_value();
        let title = v["title"].as_str().unwrap();
        writeln!(out, "\n## `{file}`: {}\n", anchor_link(title)).unwrap();
        for (name, def) in v["$defs"].as_object().into_iter().flatten() {
            defs.insert(name.clone(), def.clone());
        }
        let mut root = v.clone();
        root.as_object_mut().unwrap().remove("$defs");
        defs.insert(title.to_owned(), root);
    }
    for (name, def) in &defs {
        writeln!(out, "\n### {name}\n").unwrap();
        if let Some(d) = def["description"].as_str() {
            writeln!(out, "{}\n", one_line(d)).unwrap();
        }
        match def["properties"].as_object() {
            Some(fields) => {
                let required: Vec<&str> = def["required"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.as_str())
                    .collect();
                out.push_str("| Field | Type | Meaning |\n|---|---|---|\n");
                for (field, f) in fields {
                    let optional = if required.contains(&field.as_str()) {
                        ""
                    } else {
                        " *optional*"
                    };
                    writeln!(
                        out,
                        "| `{field}` | {}{optional} | {} |",
                        type_of(f),
                        f["description"].as_str().map(one_line).unwrap_or_default()
                    )
                    .unwrap();
                }
            }
            None => writeln!(out, "{}", type_of(def)).unwrap(),
        }
    }
    out
}

fn anchor_link(name: &str) -> String {
    format!("[{name}](#{})", name.to_lowercase())
}

fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// A field's type in words: a link to a type of the page, a JSON type with its format,
/// a list or map of those, or the values an enum takes.
fn type_of(f: &serde_json::Value) -> String {
    if let Some(r) = f["$ref"].as_str() {
        return anchor_link(r.rsplit('/').next().unwrap());
    }
    if let Some(values) = f["enum"].as_array() {
        let v: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
        return format!("one of {}", v.join(", "));
    }
    if let Some(c) = f.get("const") {
        return format!("`{c}`");
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = f[key].as_array() {
            let kinds: Vec<String> = options
                .iter()
                .filter(|o| o["type"] != "null")
                .map(|o| {
                    let t = type_of(o);
                    match o["description"].as_str() {
                        Some(d) if o.get("const").is_some() => format!("{t} ({})", one_line(d)),
                        _ => t,
                    }
                })
                .collect();
            return kinds.join(", or ");
        }
    }
    let kind = match &f["type"] {
        serde_json::Value::Array(t) => t
            .iter()
            .filter_map(|t| t.as_str())
            .find(|t| *t != "null")
            .unwrap_or("any")
            .to_owned(),
        t => t.as_str().unwrap_or("any").to_owned(),
    };
    match kind.as_str() {
        "array" => match f["prefixItems"].as_array() {
            Some(tuple) => {
                let parts: Vec<String> = tuple.iter().map(type_of).collect();
                format!("[{}]", parts.join(", "))
            }
            None => format!("list of {}", type_of(&f["items"])),
        },
        "object" => match f.get("additionalProperties") {
            Some(v) if v.is_object() => format!("map of {}", type_of(v)),
            _ => "object".into(),
        },
        _ => match f["format"].as_str() {
            Some(format) => format!("{kind} ({format})"),
            None => kind,
        },
    }
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

#[test]
fn generated_pages_are_current() {
    let mut pages = BTreeMap::new();
    cli_pages(&mut pages);
    man_pages(&mut pages);
    pages.insert(PathBuf::from("src/reference/exit-codes.md"), exit_codes());
    let (env, _) = environment();
    pages.insert(PathBuf::from("src/reference/environment.md"), env);
    pages.insert(PathBuf::from("src/reference/sut-urls.md"), sut_urls());
    pages.insert(PathBuf::from("src/reference/results.md"), results());
    let bless = std::env::var_os("MAESTRO_BLESS").is_some();
    let mut stale = Vec::new();
    for (path, text) in &pages {
        let file = docs().join(path);
        if std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
            if bless {
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(&file, text).unwrap();
            } else {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "out of date in docs/: {}; run `MAESTRO_BLESS=1 cargo test -p maestro-cli --test docs`",
        stale.join(", ")
    );
}

/// Variables read by several commands whose help differs in wording or scope, not in
/// meaning (reviewed: each is the same setting wherever it is read).
const ONE_MEANING_IN_OTHER_WORDS: &[&str] = &[
    "MAESTRO_CONSUMER_SUT", // the consumers' SUT URL (start; run: instead of the plan's)
    "MAESTRO_DURATION",     // how long a test sends (start, quickstart)
    "MAESTRO_FILES_DIR",    // the folder workers read SUT URL files from (worker, run --local)
    "MAESTRO_METRICS_LISTEN", // where this process serves Prometheus metrics
    "MAESTRO_RATE",         // messages per second of a test (start, quickstart)
    "MAESTRO_RESULTS",      // where results folders go
    "MAESTRO_SUT",          // the SUT URL (start; run: instead of the plan's)
    "MAESTRO_WORKERS",      // in-process workers (run --local, quickstart)
];

#[test]
fn every_environment_variable_has_one_meaning() {
    let (_, clashes) = environment();
    let clashes: Vec<&String> = clashes
        .iter()
        .filter(|c| {
            !ONE_MEANING_IN_OTHER_WORDS
                .iter()
                .any(|v| c.starts_with(&format!("{v}:")))
        })
        .collect();
    assert!(
        clashes.is_empty(),
        "one variable, several meanings:\n{}",
        clashes
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn relative_links_in_the_docs_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    let mut dirs = vec![docs().join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        // `](target)` and `](target#anchor)`: the target, relative to the file.
        for piece in text.split("](").skip(1) {
            let Some(end) = piece.find(')') else { continue };
            let target = piece[..end].split('#').next().unwrap_or("");
            if target.is_empty() || target.contains("://") || target.contains(' ') {
                continue;
            }
            if !file.parent().unwrap().join(target).exists() {
                broken.push(format!("{}: {target}", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_crate_graph_in_architecture_md_is_the_manifests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let arch = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let members: toml::Table = toml::from_str(&workspace).unwrap();
    let members = members["workspace"]["members"].as_array().unwrap();
    let mut wrong = Vec::new();
    for dir in members {
        let dir = dir.as_str().unwrap();
        let manifest: toml::Table =
            toml::from_str(&std::fs::read_to_string(root.join(dir).join("Cargo.toml")).unwrap())
                .unwrap();
        let name = manifest["package"]["name"].as_str().unwrap();
        let mut ours: Vec<&str> = manifest
            .get("dependencies")
            .and_then(|d| d.as_table())
            .map(|d| {
                d.keys()
                    .map(String::as_str)
                    .filter(|k| k.starts_with("maestro-"))
                    .collect()
            })
            .unwrap_or_default();
        ours.sort_by_key(|k| ORDER.iter().position(|o| o == k).unwrap_or(usize::MAX));
        let deps = if ours.is_empty() {
            "(none)".to_owned()
        } else {
            ours.join(" ")
        };
        let line = format!("{name:<19} <- {deps}");
        if !arch.lines().any(|l| l == line) {
            wrong.push(line);
        }
    }
    assert!(
        wrong.is_empty(),
        "ARCHITECTURE.md's crate graph lacks these lines (the manifests say so):\n{}",
        wrong.join("\n")
    );
}

/// The order crates are listed in, in the graph's lines.
const ORDER: &[&str] = &[
    "maestro-protocol",
    "maestro-process",
    "maestro-control",
    "maestro-controller",
    "maestro-report",
    "maestro-broker",
    "maestro-worker",
    "maestro-inspector",
];
