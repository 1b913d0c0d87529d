//! Prometheus metrics over HTTP (`--metrics-listen ADDR`): `GET /metrics` answers with the
//! OpenMetrics text of a `prometheus_client` registry. Off unless asked for; an address
//! without a host (`9464`) binds to loopback.

use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// A registry the server renders on every scrape; the owner updates its metrics.
pub type SharedRegistry = Arc<Mutex<Registry>>;

/// Where to serve metrics: `HOST:PORT`, or a bare port on 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsListen(pub SocketAddr);

impl std::str::FromStr for MetricsListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(port) = s.parse::<u16>() {
            return Ok(Self(SocketAddr::from(([127, 0, 0, 1], port))));
        }
        s.parse::<SocketAddr>()
            .map(Self)
            .map_err(|_| format!("{s:?} is not PORT or HOST:PORT (for example 127.0.0.1:9464)"))
    }
}

impl std::fmt::Display for MetricsListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {source}")]
pub struct MetricsError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// The OpenMetrics text of a registry.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

/// Binds `addr` and serves `/metrics` until `shutdown`; returns the bound address (port 0
/// picks a free one) once listening.
pub async fn serve(
    addr: MetricsListen,
    registry: SharedRegistry,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), MetricsError> {
    let listener = tokio::net::TcpListener::bind(addr.0)
        .await
        .map_err(|source| MetricsError {
            addr: addr.0,
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| MetricsError {
        addr: addr.0,
        source,
    })?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                let text = render(&registry.lock().unwrap_or_else(|p| p.into_inner()));
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    );
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    });
    tracing::info!(addr = %bound, "serving metrics on /metrics");
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_is_loopback() {
        assert_eq!(
            "9464".parse::<MetricsListen>().map(|m| m.0),
            Ok(SocketAddr::from(([127, 0, 0, 1], 9464)))
        );
        assert_eq!(
            "0.0.0.0:9000"
                .parse::<MetricsListen>()
                .map(|m| m.0.to_string()),
            Ok("0.0.0.0:9000".to_owned())
        );
        assert!("nine".parse::<MetricsListen>().is_err());
    }
}
