//! The control broker URL: `mqtt://[user[:password]@]host[:port]`.

use std::fmt;
use std::str::FromStr;

/// Where the control broker listens unless told otherwise.
pub const DEFAULT_CONTROL_URL: &str = "mqtt://127.0.0.1:1883";

/// Default MQTT port when the URL names none.
pub const DEFAULT_PORT: u16 = 1883;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("control URL {url:?} is not a URL: {reason}")]
    Parse { url: String, reason: String },
    #[error("control URL {url:?} has scheme {scheme:?}; expected mqtt://")]
    Scheme { url: String, scheme: String },
    #[error("control URL {url:?} names no host")]
    NoHost { url: String },
    #[error(
        "control URL {url:?} has a path, query or fragment; expected mqtt://[user:pass@]host[:port]"
    )]
    Extra { url: String },
}

/// A parsed control broker URL. `Display` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ControlUrl {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl FromStr for ControlUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed = ::url::Url::parse(s).map_err(|e| UrlError::Parse {
            url: s.to_owned(),
            reason: e.to_string(),
        })?;
        if parsed.scheme() != "mqtt" {
            return Err(UrlError::Scheme {
                url: s.to_owned(),
                scheme: parsed.scheme().to_owned(),
            });
        }
        let host = match parsed.host_str() {
            Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']'),
            _ => return Err(UrlError::NoHost { url: s.to_owned() }),
        };
        if !matches!(parsed.path(), "" | "/")
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            return Err(UrlError::Extra { url: s.to_owned() });
        }
        // Percent-decoding (RFC 3986), not form decoding: `+` stays a plus.
        let decode = |v: &str| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        };
        let username = (!parsed.username().is_empty()).then(|| decode(parsed.username()));
        let password = parsed.password().map(decode);
        Ok(Self {
            host: host.to_owned(),
            port: parsed.port().unwrap_or(DEFAULT_PORT),
            username,
            password,
        })
    }
}

impl fmt::Display for ControlUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mqtt://")?;
        if let Some(user) = &self.username {
            write!(f, "{user}")?;
            if self.password.is_some() {
                write!(f, ":***")?;
            }
            write!(f, "@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for ControlUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ControlUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_and_credentials() {
        let u: ControlUrl = "mqtt://alice:p%40ss@10.0.0.1:2883".parse().unwrap();
        assert_eq!(u.host, "10.0.0.1");
        assert_eq!(u.port, 2883);
        assert_eq!(u.username.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(u.to_string(), "mqtt://alice:***@10.0.0.1:2883");
        // Every awkward character, percent-encoded, comes back as typed.
        let u: ControlUrl = "mqtt://bob:a%2Bb%26c%25d%40e%3Af%2Fg@h".parse().unwrap();
        assert_eq!(u.password.as_deref(), Some("a+b&c%d@e:f/g"));
        let u: ControlUrl = "mqtt://bob:a+b@h".parse().unwrap();
        assert_eq!(u.password.as_deref(), Some("a+b"), "a literal + is a plus");
    }

    #[test]
    fn default_port_and_ipv6() {
        let u: ControlUrl = "mqtt://[::1]".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1883));
        assert_eq!(u.to_string(), "mqtt://[::1]:1883");
        assert_eq!(
            DEFAULT_CONTROL_URL.parse::<ControlUrl>().unwrap().port,
            1883
        );
    }

    #[test]
    fn clear_errors() {
        let e = "http://h:1".parse::<ControlUrl>().unwrap_err().to_string();
        assert!(e.contains("\"http\""), "{e}");
        let e = "mqtt://h:1/topic"
            .parse::<ControlUrl>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("path"), "{e}");
        assert!("127.0.0.1:1883".parse::<ControlUrl>().is_err());
        assert!("mqtt://h:99999".parse::<ControlUrl>().is_err());
    }
}
