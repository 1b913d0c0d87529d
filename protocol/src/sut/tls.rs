//! TLS to the SUT, shared by the protocols that take it: the options and their parser.

use super::*;

/// The TLS options of protocols that ask for TLS by their scheme (Kafka takes `client_ca`
/// and `client_ca_key`, and librdkafka's `ssl.*` properties).
pub const TLS_OPTIONS: &[UrlOption] = &[
    UrlOption {
        key: "ca",
        default: "the system's roots",
        meaning: "PEM file of the CAs to trust",
    },
    UrlOption {
        key: "cert",
        default: "",
        meaning: "one client certificate (PEM) for every client; with `key`",
    },
    UrlOption {
        key: "key",
        default: "",
        meaning: "the client certificate's key (PEM)",
    },
    UrlOption {
        key: "insecure",
        default: "false",
        meaning: "accept any server certificate (lab only)",
    },
    UrlOption {
        key: "sni",
        default: "the host",
        meaning: "the name the server certificate must carry, when the host is an address",
    },
    UrlOption {
        key: "client_ca",
        default: "",
        meaning: "a CA certificate: every client gets its own certificate, CN = its client id; with `client_ca_key`",
    },
    UrlOption {
        key: "client_ca_key",
        default: "",
        meaning: "the key of `client_ca`",
    },
];

/// TLS to the SUT. Paths are files on the worker's host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the CAs to trust (default: the system's roots).
    pub ca: Option<String>,
    /// One client certificate (PEM) and its key, for every client.
    pub cert: Option<String>,
    pub key: Option<String>,
    /// Accept any server certificate (lab certificates; never in production).
    pub insecure: bool,
    /// The name the server certificate must carry, when the URL's host is an address.
    pub sni: Option<String>,
    /// A CA certificate and its key: every client gets its own certificate, CN = its
    /// client id, made before the run starts.
    pub client_ca: Option<String>,
    pub client_ca_key: Option<String>,
}

impl TlsOptions {
    /// True when every client gets a certificate of its own.
    pub fn per_client(&self) -> bool {
        self.client_ca.is_some()
    }
}

impl Parser {
    pub(super) fn tls_error(&self, what: impl Into<String>) -> SutUrlError {
        SutUrlError::Tls {
            url: self.url.clone(),
            what: what.into(),
        }
    }

    /// Takes the TLS parameters out of `query`. `keys` are the ones this protocol takes
    /// in its URL; `tls` says whether the URL asked for TLS.
    pub(super) fn tls(
        &self,
        scheme: Scheme,
        tls: bool,
        keys: &[&str],
        query: &mut Vec<(String, String)>,
    ) -> Result<Option<Box<TlsOptions>>, SutUrlError> {
        let mut o = TlsOptions::default();
        let mut given = Vec::new();
        let mut rest = Vec::with_capacity(query.len());
        for (key, v) in query.drain(..) {
            if !keys.contains(&key.as_str()) {
                rest.push((key, v));
                continue;
            }
            let file = |v: &str| {
                if v.is_empty() {
                    Err(self.value(&key, v, "is not a file name"))
                } else {
                    Ok(Some(v.to_owned()))
                }
            };
            match key.as_str() {
                "ca" => o.ca = file(&v)?,
                "cert" => o.cert = file(&v)?,
                "key" => o.key = file(&v)?,
                "insecure" => o.insecure = self.flag(&key, &v)?,
                "sni" => {
                    if v.is_empty()
                        || !v
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
                    {
                        return Err(self.value(&key, &v, "is not a host name"));
                    }
                    o.sni = Some(v.clone())
                }
                "client_ca" => o.client_ca = file(&v)?,
                "client_ca_key" => o.client_ca_key = file(&v)?,
                _ => {}
            }
            given.push(key);
        }
        *query = rest;
        if !tls {
            return match given.first() {
                None => Ok(None),
                Some(k) => Err(self.tls_error(match scheme.protocol().tls_hint {
                    Some(hint) => format!("{k}= needs TLS: {hint}"),
                    None => format!(
                        "{k}= needs TLS: use {}:// instead of {scheme}://",
                        scheme.protocol().tls_name.unwrap_or(scheme.protocol().name)
                    ),
                })),
            };
        }
        if o.cert.is_some() != o.key.is_some() {
            return Err(self.tls_error("cert= and key= go together"));
        }
        if o.client_ca.is_some() != o.client_ca_key.is_some() {
            return Err(self.tls_error("client_ca= and client_ca_key= go together"));
        }
        if o.cert.is_some() && o.client_ca.is_some() {
            return Err(self.tls_error(
                "cert= (one certificate for all clients) and client_ca= (one per client) exclude each other",
            ));
        }
        if o.insecure && (o.ca.is_some() || o.sni.is_some()) {
            return Err(self.tls_error(
                "insecure=true checks no server certificate: ca= and sni= would be ignored",
            ));
        }
        Ok(Some(Box::new(o)))
    }
}
