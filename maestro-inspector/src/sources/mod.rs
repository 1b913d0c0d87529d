//! What the inspector reads: one [`Source`] per `--source` flag, sampled once a second.
//!
//! A flag is `KIND[:NAME][=VALUE]`: `mqtt-sys=mqtt://127.0.0.1:1884`,
//! `rabbitmq=http://guest:guest@127.0.0.1:15672`, `kafka=kafka://127.0.0.1:9092`, `host`,
//! `process=mosquitto` (or `process=pid:1234`). `NAME` tells two sources of one kind
//! apart (`rabbitmq:node2=http://...`); it defaults to the kind.

mod kafka;
mod mqtt_sys;
mod rabbitmq;
mod system;

use maestro_protocol::{Metric, SourceKind, SourceSample};
use std::str::FromStr;
use std::time::Duration;

/// How long one source may take to answer before its sample is a gap.
pub const SAMPLE_TIMEOUT: Duration = Duration::from_millis(800);

/// A `--source` flag, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    pub kind: SourceKind,
    pub name: String,
    pub target: Target,
}

/// What a source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A URL (mqtt-sys, rabbitmq).
    Url(url::Url),
    /// Kafka bootstrap servers, `host:port,host:port`.
    Bootstrap(String),
    /// The inspector's host.
    Host,
    /// Processes with this exact name.
    ProcessName(String),
    /// One process.
    Pid(u32),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    #[error("source {0:?}: {1}")]
    Spec(String, String),
}

impl FromStr for SourceSpec {
    type Err = SourceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| SourceError::Spec(s.to_owned(), why);
        let (head, value) = match s.split_once('=') {
            Some((h, v)) => (h.trim(), Some(v.trim())),
            None => (s.trim(), None),
        };
        let (kind, name) = match head.split_once(':') {
            Some((k, n)) => (k, Some(n)),
            None => (head, None),
        };
        let kind: SourceKind = kind.parse().map_err(bad)?;
        let name = match name {
            Some(n)
                if !n.is_empty() && n.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c)) =>
            {
                n.to_owned()
            }
            Some(n) => {
                return Err(bad(format!(
                    "name {n:?} must be letters, digits, '-', '_' or '.'"
                )));
            }
            None => kind.as_str().to_owned(),
        };
        let url = |schemes: &[&str], example: &str| -> Result<Target, SourceError> {
            let v = value.ok_or_else(|| bad(format!("needs a URL: {kind}={example}")))?;
            let u = url::Url::parse(v).map_err(|e| bad(format!("{v:?} is not a URL: {e}")))?;
            if !schemes.contains(&u.scheme()) {
                return Err(bad(format!(
                    "{v:?}: the scheme must be one of {}",
                    schemes.join(", ")
                )));
            }
            if u.host_str().is_none_or(str::is_empty) {
                return Err(bad(format!("{v:?} has no host")));
            }
            Ok(Target::Url(u))
        };
        let target = match kind {
            SourceKind::MqttSys => url(&["mqtt", "tcp"], "mqtt://127.0.0.1:1883")?,
            SourceKind::Rabbitmq => url(&["http", "https"], "http://guest:guest@127.0.0.1:15672")?,
            SourceKind::Kafka => {
                let v =
                    value.ok_or_else(|| bad("needs a URL: kafka=kafka://127.0.0.1:9092".into()))?;
                Target::Bootstrap(bootstrap(v).map_err(bad)?)
            }
            SourceKind::Host => match value {
                None => Target::Host,
                Some(v) => return Err(bad(format!("host takes no value, not {v:?}"))),
            },
            SourceKind::Process => match value {
                None | Some("") => {
                    return Err(bad("needs a process: process=NAME or process=pid:N".into()));
                }
                Some(v) => match v.strip_prefix("pid:") {
                    Some(pid) => Target::Pid(
                        pid.parse()
                            .map_err(|_| bad(format!("pid {pid:?} is not a number")))?,
                    ),
                    None => Target::ProcessName(v.to_owned()),
                },
            },
        };
        Ok(SourceSpec { kind, name, target })
    }
}

/// The bootstrap servers of `kafka://host[:port][,host[:port]...]` (port 9092 unless
/// given), as librdkafka takes them.
fn bootstrap(v: &str) -> Result<String, String> {
    let rest = v
        .strip_prefix("kafka://")
        .or_else(|| v.strip_prefix("tcp://"))
        .ok_or_else(|| format!("{v:?}: the scheme must be one of kafka, tcp"))?;
    let hosts = rest.split(['/', '?']).next().unwrap_or_default();
    let servers = hosts
        .split(',')
        .map(|h| {
            let u = url::Url::parse(&format!("kafka://{h}"))
                .map_err(|e| format!("{v:?}: {h:?} is not HOST[:PORT]: {e}"))?;
            match u.host_str() {
                Some(host) if !host.is_empty() => {
                    Ok(format!("{host}:{}", u.port().unwrap_or(9092)))
                }
                _ => Err(format!("{v:?} has no host")),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(servers.join(","))
}

/// Checks that no two sources share a name.
pub fn check_unique(specs: &[SourceSpec]) -> Result<(), SourceError> {
    let mut seen = std::collections::BTreeSet::new();
    for s in specs {
        if !seen.insert(&s.name) {
            return Err(SourceError::Spec(
                s.name.clone(),
                "two sources have this name: give one another with KIND:NAME=...".into(),
            ));
        }
    }
    Ok(())
}

/// A source, ready to sample.
#[derive(Debug)]
pub enum Source {
    MqttSys(mqtt_sys::MqttSys),
    Rabbitmq(rabbitmq::Rabbitmq),
    Kafka(kafka::Kafka),
    System(system::System),
}

impl Source {
    /// Opens a source (background connections start here; nothing fails yet: a SUT that
    /// is not there is a gap in the samples).
    pub fn open(
        spec: &SourceSpec,
        tasks: &tokio_util::task::TaskTracker,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Self {
        match (&spec.kind, &spec.target) {
            (SourceKind::MqttSys, Target::Url(u)) => {
                Source::MqttSys(mqtt_sys::MqttSys::open(u, tasks, shutdown))
            }
            (SourceKind::Rabbitmq, Target::Url(u)) => Source::Rabbitmq(rabbitmq::Rabbitmq::new(u)),
            (SourceKind::Kafka, Target::Bootstrap(b)) => Source::Kafka(kafka::Kafka::new(b)),
            (_, target) => Source::System(system::System::new(target.clone())),
        }
    }

    /// Reads the source now; `None` when it has no news since the last sample (a broker
    /// that publishes its figures on its own beat, slower than ours).
    pub async fn sample(&mut self) -> Result<Option<Vec<Metric>>, String> {
        match self {
            Source::MqttSys(s) => s.sample(),
            Source::Rabbitmq(s) => s.sample().await.map(Some),
            Source::Kafka(s) => s.sample().await.map(Some),
            Source::System(s) => s.sample().await.map(Some),
        }
    }
}

/// Samples every source at once, each within [`SAMPLE_TIMEOUT`]; a source without news
/// is left out.
pub async fn sample_all(sources: &mut [(SourceSpec, Source)]) -> Vec<SourceSample> {
    let reads = sources.iter_mut().map(|(spec, source)| async move {
        let result = match tokio::time::timeout(SAMPLE_TIMEOUT, source.sample()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {SAMPLE_TIMEOUT:?}")),
        };
        let (error, mut metrics) = match result {
            Ok(Some(m)) => (None, m),
            Ok(None) => return None,
            Err(e) => (Some(e), Vec::new()),
        };
        metrics.truncate(maestro_protocol::inspect::MAX_METRICS_PER_SOURCE);
        Some(SourceSample {
            source: spec.name.clone(),
            kind: spec.kind,
            error,
            metrics,
        })
    });
    futures_util::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// A URL's user name and password, percent-decoded, if it has a user.
fn credentials(u: &url::Url) -> Option<(String, String)> {
    if u.username().is_empty() {
        return None;
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    Some((decode(u.username()), decode(u.password().unwrap_or(""))))
}

/// Basic-auth header value from a URL's user info, if any.
fn basic_auth(u: &url::Url) -> Option<String> {
    use base64::Engine;
    let (user, password) = credentials(u)?;
    let pair = format!("{user}:{password}");
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    ))
}

/// A URL without its credentials, for messages.
pub fn redacted(u: &url::Url) -> String {
    let mut u = u.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_flags_parse_with_names_and_clear_errors() {
        let s: SourceSpec = "mqtt-sys=mqtt://127.0.0.1:1884"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s.kind, s.name.as_str()), (SourceKind::MqttSys, "mqtt-sys"));
        let s: SourceSpec = "rabbitmq:node2=http://guest:guest@127.0.0.1:15672"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.name, "node2");
        assert_eq!(
            basic_auth(match &s.target {
                Target::Url(u) => u,
                _ => panic!("not a url"),
            })
            .as_deref(),
            Some("Basic Z3Vlc3Q6Z3Vlc3Q=")
        );
        assert_eq!(
            "host".parse::<SourceSpec>().map(|s| s.target),
            Ok(Target::Host)
        );
        assert_eq!(
            "process=pid:42".parse::<SourceSpec>().map(|s| s.target),
            Ok(Target::Pid(42))
        );
        assert_eq!(
            "process=mosquitto".parse::<SourceSpec>().map(|s| s.target),
            Ok(Target::ProcessName("mosquitto".into()))
        );
        // Kafka takes several bootstrap servers, the way SUT URLs write them.
        assert_eq!(
            "kafka=kafka://k1:9093,k2,10.0.0.3:9094/ignored"
                .parse::<SourceSpec>()
                .map(|s| s.target),
            Ok(Target::Bootstrap("k1:9093,k2:9092,10.0.0.3:9094".into()))
        );
        for (bad, says) in [
            ("redis=tcp://x", "unknown source kind \"redis\""),
            ("mqtt-sys", "needs a URL"),
            ("rabbitmq=amqp://h", "scheme must be one of http, https"),
            ("process", "needs a process"),
            ("process=pid:x", "pid \"x\" is not a number"),
            ("host=1", "host takes no value"),
            ("kafka:a/b=kafka://h:1", "name \"a/b\""),
            ("kafka=http://h:1", "scheme must be one of kafka, tcp"),
            ("kafka=kafka://h:1,", "has no host"),
            ("kafka=kafka://h:x", "is not HOST[:PORT]"),
        ] {
            let e = bad
                .parse::<SourceSpec>()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let two = [
            "host".parse().unwrap_or_else(|e| panic!("{e}")),
            "host".parse().unwrap_or_else(|e| panic!("{e}")),
        ];
        assert!(check_unique(&two).is_err());
    }
}
