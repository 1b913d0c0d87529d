//! Device fleets: many MQTT clients, each one connection that publishes on its own
//! schedule (and may subscribe on the same connection), named by templates.
//!
//! Templates hold placeholders in braces: `{i}` (the client's index), `{run}` (the run
//! id), and in payloads also `{seq}` (the message's sequence number), `{ts}` (its intended
//! send time, ms since the Unix epoch) and `{maestro}` (the timing header as text, see
//! [`crate::payload::TEXT_LEN`]). Anything else in braces that looks like a name is an
//! error; other braces (JSON's) are text.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One piece of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Index,
    Run,
    Sequence,
    Timestamp,
    Header,
}

/// Where a template is used: which placeholders it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    ClientId,
    Topic,
    Subscribe,
    Payload,
}

impl TemplateKind {
    fn name(self) -> &'static str {
        match self {
            TemplateKind::ClientId => "client id",
            TemplateKind::Topic => "topic",
            TemplateKind::Subscribe => "subscribe topic",
            TemplateKind::Payload => "payload",
        }
    }

    fn known(self) -> &'static str {
        match self {
            TemplateKind::Payload => "{i}, {run}, {seq}, {ts}, {maestro}",
            _ => "{i}, {run}",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FleetError {
    #[error("{kind} template {template:?}: unknown placeholder {{{name}}} (known: {known})")]
    Placeholder {
        kind: &'static str,
        template: String,
        name: String,
        known: &'static str,
    },
    #[error("{kind} template {template:?}: {reason}")]
    Invalid {
        kind: &'static str,
        template: String,
        reason: String,
    },
}

/// A template, checked once when read ([`Template::parse`]); on the wire its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub struct Template(String);

impl From<Template> for String {
    fn from(t: Template) -> String {
        t.0
    }
}

impl From<String> for Template {
    /// Unchecked: a spec's templates are checked by [`FleetSpec::validate`].
    fn from(s: String) -> Self {
        Template(s)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Template {
    /// Checks that every placeholder is one `kind` knows.
    pub fn parse(kind: TemplateKind, text: &str) -> Result<Self, FleetError> {
        let t = Template(text.to_owned());
        t.check(kind)?;
        Ok(t)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn check(&self, kind: TemplateKind) -> Result<(), FleetError> {
        for piece in self.raw_pieces() {
            if let Err(name) = piece {
                return Err(self.placeholder(kind, name));
            }
            if let Ok(p) = piece {
                let allowed = match p {
                    Piece::Text(_) | Piece::Index | Piece::Run => true,
                    Piece::Sequence | Piece::Timestamp | Piece::Header => {
                        kind == TemplateKind::Payload
                    }
                };
                if !allowed {
                    let name = match p {
                        Piece::Sequence => "seq",
                        Piece::Timestamp => "ts",
                        _ => "maestro",
                    };
                    return Err(self.placeholder(kind, name));
                }
            }
        }
        Ok(())
    }

    fn placeholder(&self, kind: TemplateKind, name: &str) -> FleetError {
        FleetError::Placeholder {
            kind: kind.name(),
            template: self.0.clone(),
            name: name.to_owned(),
            known: kind.known(),
        }
    }

    fn invalid(&self, kind: TemplateKind, reason: impl Into<String>) -> FleetError {
        FleetError::Invalid {
            kind: kind.name(),
            template: self.0.clone(),
            reason: reason.into(),
        }
    }

    /// The pieces, in order; `Err(name)` for a placeholder nobody knows.
    fn raw_pieces(&self) -> impl Iterator<Item = Result<Piece<'_>, &str>> {
        let s = self.0.as_str();
        let mut at = 0;
        std::iter::from_fn(move || {
            if at >= s.len() {
                return None;
            }
            let rest = &s[at..];
            // A placeholder: `{` then a name of lowercase letters and `_`, then `}`.
            let name_len = rest.strip_prefix('{').map(|r| {
                r.bytes()
                    .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
                    .count()
            });
            if let Some(n) = name_len
                && n > 0
                && rest.as_bytes().get(n + 1) == Some(&b'}')
            {
                at += n + 2;
                let name = &rest[1..=n];
                return Some(match name {
                    "i" => Ok(Piece::Index),
                    "run" => Ok(Piece::Run),
                    "seq" => Ok(Piece::Sequence),
                    "ts" => Ok(Piece::Timestamp),
                    "maestro" => Ok(Piece::Header),
                    other => Err(other),
                });
            }
            // Text up to the next `{` (a `{` that starts no placeholder is text).
            let end = rest[1..].find('{').map_or(rest.len(), |k| k + 1);
            at += end;
            Some(Ok(Piece::Text(&rest[..end])))
        })
    }

    /// The pieces of a checked template.
    pub fn pieces(&self) -> impl Iterator<Item = Piece<'_>> {
        self.raw_pieces().filter_map(Result::ok)
    }

    pub fn has(&self, piece: Piece<'_>) -> bool {
        self.pieces().any(|p| p == piece)
    }

    /// The text for client `i` of run `run` (a client id or topic).
    pub fn render(&self, i: u32, run: &str) -> String {
        let mut out = String::with_capacity(self.0.len() + 8);
        for p in self.pieces() {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Index => out.push_str(&i.to_string()),
                Piece::Run => out.push_str(run),
                // Not in ids and topics (checked).
                Piece::Sequence | Piece::Timestamp | Piece::Header => {}
            }
        }
        out
    }

    /// A subscription that matches every client's topic: each level with `{i}` becomes `+`.
    pub fn wildcard(&self, run: &str) -> String {
        self.render(0, run)
            .split('/')
            .zip(self.level_has_index())
            .map(|(level, has)| if has { "+" } else { level })
            .collect::<Vec<_>>()
            .join("/")
    }

    fn level_has_index(&self) -> Vec<bool> {
        // Levels of the template, in order: does each hold {i}?
        let mut levels = vec![false];
        for p in self.pieces() {
            match p {
                Piece::Text(t) => levels.extend(std::iter::repeat_n(false, t.matches('/').count())),
                Piece::Index => {
                    if let Some(last) = levels.last_mut() {
                        *last = true;
                    }
                }
                _ => {}
            }
        }
        levels
    }
}

/// The fleet part of a test spec: producers are the fleet's clients (`producers` counts
/// them), each sending at the spec's rate divided by their number, with its phase spread
/// over the interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSpec {
    /// Client id of client `i`.
    pub client_id: Template,
    /// Topic client `i` publishes to. Consumers subscribe to its wildcard form.
    pub topic: Template,
    /// Topic client `i` subscribes to on its own connection (none: it only publishes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Template>,
    /// Message body of client `i` (JSON with placeholders; holds `{maestro}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Template>,
    /// Each send time moves by up to this much, at random, either way (ms).
    pub jitter_ms: u64,
    /// Each client disconnects and reconnects this often (ms); none: it stays connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub churn_ms: Option<u64>,
}

/// The shortest churn period.
pub const MIN_CHURN_MS: u64 = 100;

/// What a sample `{maestro}` renders to in validation (the header's text length).
fn sample_header() -> String {
    "0".repeat(crate::payload::TEXT_LEN)
}

impl FleetSpec {
    /// Checks the templates for `clients` clients sending every `interval_ms`.
    pub fn validate(&self, clients: u32, interval_ms: f64) -> Result<(), FleetError> {
        self.client_id.check(TemplateKind::ClientId)?;
        self.topic.check(TemplateKind::Topic)?;
        if clients > 1 && !self.client_id.has(Piece::Index) {
            return Err(self.client_id.invalid(
                TemplateKind::ClientId,
                "has no {i}: every client would have the same id and the broker would drop all but one",
            ));
        }
        let sample = self.client_id.render(0, "r");
        if sample.is_empty() || sample.len() > 65535 {
            return Err(self
                .client_id
                .invalid(TemplateKind::ClientId, "renders empty or too long"));
        }
        let topic = self.topic.render(0, "r");
        if topic.is_empty() || topic.contains(['+', '#']) {
            return Err(self.topic.invalid(
                TemplateKind::Topic,
                "must render to a topic without wildcards (+, #)",
            ));
        }
        if let Some(s) = &self.subscribe {
            s.check(TemplateKind::Subscribe)?;
            if s.render(0, "r").is_empty() {
                return Err(s.invalid(TemplateKind::Subscribe, "renders empty"));
            }
        }
        if let Some(p) = &self.payload {
            p.check(TemplateKind::Payload)?;
            if !p.has(Piece::Header) {
                return Err(p.invalid(
                    TemplateKind::Payload,
                    "has no {maestro} (where the timing data goes, inside a JSON string)",
                ));
            }
            let header = sample_header();
            let mut filled = String::new();
            for piece in p.pieces() {
                match piece {
                    Piece::Text(t) => filled.push_str(t),
                    Piece::Index | Piece::Sequence | Piece::Timestamp => filled.push('7'),
                    Piece::Run => filled.push('r'),
                    Piece::Header => filled.push_str(&header),
                }
            }
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&filled) {
                return Err(p.invalid(
                    TemplateKind::Payload,
                    format!("is not valid JSON once filled in ({e})"),
                ));
            }
            if filled.len() > 256 * 1024 {
                return Err(p.invalid(TemplateKind::Payload, "is larger than 256 KiB"));
            }
        }
        let interval_ms = interval_ms.max(0.0);
        if self.jitter_ms as f64 * 2.0 >= interval_ms {
            return Err(FleetError::Invalid {
                kind: "jitter",
                template: format!("{} ms", self.jitter_ms),
                reason: format!(
                    "must be under half the interval ({} ms), so a client's messages keep their order",
                    interval_ms.round()
                ),
            });
        }
        if let Some(c) = self.churn_ms
            && c < MIN_CHURN_MS
        {
            return Err(FleetError::Invalid {
                kind: "churn",
                template: format!("{c} ms"),
                reason: format!("is below the shortest churn period of {MIN_CHURN_MS} ms"),
            });
        }
        Ok(())
    }

    /// The payload template with `{maestro}` added as the first member when a JSON object
    /// lacks it (so a user's device payload file works as it is).
    pub fn with_header(text: &str) -> String {
        if text.contains("{maestro}") {
            return text.to_owned();
        }
        let trimmed = text.trim_start();
        match trimmed.strip_prefix('{') {
            Some(rest) if rest.trim_start().starts_with('}') => {
                format!("{{\"maestro\":\"{{maestro}}\"{rest}")
            }
            Some(rest) => format!("{{\"maestro\":\"{{maestro}}\",{rest}"),
            None => text.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet() -> FleetSpec {
        FleetSpec {
            client_id: "dev-{i}".to_owned().into(),
            topic: "tenant/{i}/attrs".to_owned().into(),
            subscribe: None,
            payload: None,
            jitter_ms: 0,
            churn_ms: None,
        }
    }

    #[test]
    fn templates_render_and_wildcard() {
        let f = fleet();
        assert_eq!(f.client_id.render(42, "r1"), "dev-42");
        assert_eq!(f.topic.render(7, "r1"), "tenant/7/attrs");
        assert_eq!(f.topic.wildcard("r1"), "tenant/+/attrs");
        let t = Template::parse(TemplateKind::Topic, "m/{run}/d{i}x").unwrap();
        assert_eq!(t.wildcard("r1"), "m/r1/+");
        assert_eq!(t.render(3, "r1"), "m/r1/d3x");
        let shared = Template::parse(TemplateKind::Topic, "all/{run}").unwrap();
        assert_eq!(shared.wildcard("r"), "all/r");
    }

    #[test]
    fn bad_templates_name_the_problem() {
        let e = Template::parse(TemplateKind::Topic, "t/{id}").unwrap_err();
        assert!(e.to_string().contains("{id}"), "{e}");
        let e = Template::parse(TemplateKind::ClientId, "c{seq}").unwrap_err();
        assert!(e.to_string().contains("{seq}"), "{e}");
        let mut f = fleet();
        f.client_id = "dev".to_owned().into();
        let e = f.validate(2, 1000.0).unwrap_err().to_string();
        assert!(e.contains("\"dev\"") && e.contains("{i}"), "{e}");
        let mut f = fleet();
        f.topic = "t/+/{i}".to_owned().into();
        assert!(
            f.validate(2, 1000.0)
                .unwrap_err()
                .to_string()
                .contains("wildcard")
        );
        let mut f = fleet();
        f.payload = Some(r#"{"t": {maestro}}"#.to_owned().into());
        let e = f.validate(2, 1000.0).unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
        let mut f = fleet();
        f.jitter_ms = 500;
        assert!(
            f.validate(2, 1000.0)
                .unwrap_err()
                .to_string()
                .contains("jitter")
        );
        assert!(fleet().validate(2, 1000.0).is_ok());
    }

    #[test]
    fn json_braces_are_text_and_the_header_is_added() {
        let p = FleetSpec::with_header(r#"{"temp": {i}, "id": "d{i}"}"#);
        assert_eq!(p, r#"{"maestro":"{maestro}","temp": {i}, "id": "d{i}"}"#);
        let t = Template::parse(TemplateKind::Payload, &p).unwrap();
        let mut f = fleet();
        f.payload = Some(t.clone());
        f.validate(2, 1000.0).unwrap();
        assert_eq!(t.pieces().filter(|p| *p == Piece::Index).count(), 2);
        assert_eq!(FleetSpec::with_header("{}"), r#"{"maestro":"{maestro}"}"#);
    }
}
