//! The control broker URL: `mqtt[s]://[user[:password]@]host[:port]`. With `mqtts://`
//! the connection uses TLS ([`ControlTls`]: the CA to trust and the client certificate,
//! from `--ca`, `--cert`, `--key`).

use crate::tls::{TlsError, control_client_config};
use rustls::ClientConfig;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// Where the control broker listens unless told otherwise.
pub const DEFAULT_CONTROL_URL: &str = "mqtt://127.0.0.1:1883";

/// Default MQTT port when the URL names none.
pub const DEFAULT_PORT: u16 = 1883;
/// Default MQTT-over-TLS port.
pub const DEFAULT_TLS_PORT: u16 = 8883;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("control URL {url:?} is not a URL: {reason}")]
    Parse { url: String, reason: String },
    #[error("control URL {url:?} has scheme {scheme:?}; expected mqtt:// or mqtts://")]
    Scheme { url: String, scheme: String },
    #[error("control URL {url:?} names no host")]
    NoHost { url: String },
    #[error(
        "control URL {url:?} has a path, query or fragment; expected mqtt[s]://[user:pass@]host[:port]"
    )]
    Extra { url: String },
    #[error("{flag} needs an mqtts:// control URL (the control URL is {url})")]
    TlsFlagWithoutTls { flag: &'static str, url: String },
    #[error("--cert and --key go together")]
    CertWithoutKey,
    #[error("control connection TLS: {0}")]
    Tls(#[from] TlsError),
}

/// TLS of a control connection: the files it was built from, and the rustls config,
/// built once and shared by every session of the process.
#[derive(Clone)]
pub struct ControlTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub config: Arc<ClientConfig>,
}

impl ControlTls {
    /// Reads the files and builds the config (`ca` `None`: the system's CAs).
    pub fn new(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Self, UrlError> {
        let cert_key = match (&cert, &key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            _ => return Err(UrlError::CertWithoutKey),
        };
        let config = control_client_config(ca.as_deref(), cert_key)?;
        Ok(ControlTls {
            ca,
            cert,
            key,
            config,
        })
    }

    /// True when the client presents a certificate.
    pub fn client_certificate(&self) -> bool {
        self.cert.is_some()
    }
}

impl PartialEq for ControlTls {
    fn eq(&self, o: &Self) -> bool {
        (&self.ca, &self.cert, &self.key) == (&o.ca, &o.cert, &o.key)
    }
}

impl Eq for ControlTls {}

impl fmt::Debug for ControlTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlTls")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// A parsed control broker URL. `Display` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ControlUrl {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `mqtts://`: the connection uses TLS.
    pub secure: bool,
    /// The TLS settings (`None` with `mqtts://`: trust the system's CAs, no client
    /// certificate; see [`ControlUrl::with_tls`]).
    pub tls: Option<Arc<ControlTls>>,
}

impl ControlUrl {
    /// This URL with TLS files: `--ca`, `--cert`, `--key`. Without any, an `mqtts://` URL
    /// trusts the system's CAs. Files given with an `mqtt://` URL are an error, not
    /// silently ignored.
    pub fn with_tls(
        mut self,
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Self, UrlError> {
        if !self.secure {
            let flag = match (&ca, &cert, &key) {
                (Some(_), _, _) => Some("--ca"),
                (_, Some(_), _) => Some("--cert"),
                (_, _, Some(_)) => Some("--key"),
                _ => None,
            };
            return match flag {
                Some(flag) => Err(UrlError::TlsFlagWithoutTls {
                    flag,
                    url: self.to_string(),
                }),
                None => Ok(self),
            };
        }
        self.tls = Some(Arc::new(ControlTls::new(ca, cert, key)?));
        Ok(self)
    }

    /// True when the broker is on this machine: `localhost` or a loopback address.
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The rustls config of this URL's connections (`None`: plain MQTT).
    pub fn tls_config(&self) -> Result<Option<Arc<ClientConfig>>, UrlError> {
        if !self.secure {
            return Ok(None);
        }
        Ok(Some(match &self.tls {
            Some(t) => t.config.clone(),
            None => control_client_config(None, None)?,
        }))
    }
}

impl FromStr for ControlUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed = ::url::Url::parse(s).map_err(|e| UrlError::Parse {
            url: s.to_owned(),
            reason: e.to_string(),
        })?;
        let secure = match parsed.scheme() {
            "mqtt" => false,
            "mqtts" => true,
            scheme => {
                return Err(UrlError::Scheme {
                    url: s.to_owned(),
                    scheme: scheme.to_owned(),
                });
            }
        };
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
            port: parsed.port().unwrap_or(if secure {
                DEFAULT_TLS_PORT
            } else {
                DEFAULT_PORT
            }),
            username,
            password,
            secure,
            tls: None,
        })
    }
}

impl fmt::Display for ControlUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", if self.secure { "mqtts" } else { "mqtt" })?;
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
    fn tls_scheme_and_files() {
        let u: ControlUrl = "mqtts://h".parse().unwrap();
        assert!(u.secure && u.tls.is_none());
        assert_eq!((u.port, u.to_string().as_str()), (8883, "mqtts://h:8883"));
        let plain: ControlUrl = "mqtt://h".parse().unwrap();
        let e = plain
            .clone()
            .with_tls(Some("ca.pem".into()), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--ca needs an mqtts://"), "{e}");
        assert!(plain.with_tls(None, None, None).is_ok());
        let e = u
            .clone()
            .with_tls(None, Some("c.pem".into()), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--cert and --key go together"), "{e}");
        let e = u
            .with_tls(Some("/no/such/ca.pem".into()), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/no/such/ca.pem"), "{e}");
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
