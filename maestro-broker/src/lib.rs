//! `maestro-broker` owns the embedded MQTT control broker (rumqttd): its configuration,
//! username/password authentication from a file, the connection limit, and telling the
//! caller when it is really ready (the listener accepts connections) or why it is not.
//!
//! rumqttd has no shutdown API: once started, the broker lives on its own thread until the
//! process exits.
//!
//! It must not read or interpret notes: it only carries them.
//!
//! With TLS ([`tls`]) the broker terminates TLS itself and relays to rumqttd on a private
//! loopback address whose port the kernel picked when rumqttd bound it, and which takes
//! only the relay's own login (its password never leaves this process): another local
//! user who finds the port cannot use it to skip TLS and client certificates.

pub mod args;
pub mod tls;

pub use tls::BrokerTls;

use serde::Serialize;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Where the broker listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1883";
/// Default limit of concurrent client connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default largest MQTT packet: the control plane's one limit, which control clients
/// share (`maestro_protocol::MAX_PACKET_BYTES`); every note fits it with its topic.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = maestro_protocol::MAX_PACKET_BYTES;
/// How long to wait for rumqttd's listener to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The broker's effective configuration (what `--print-config` shows).
#[derive(Debug, Clone, Serialize)]
pub struct BrokerConfig {
    pub listen: SocketAddr,
    /// Users and passwords; when set, anonymous clients are refused.
    #[serde(serialize_with = "users_only")]
    pub users: Option<HashMap<String, String>>,
    pub auth_file: Option<PathBuf>,
    pub max_connections: usize,
    pub max_payload_bytes: usize,
    /// How long a client has to send CONNECT after the TCP handshake.
    pub connect_timeout_ms: u16,
    /// TLS on the listener (`None`: plain MQTT).
    pub tls: Option<BrokerTls>,
    /// Where to serve the broker's health metrics for Prometheus (`None`: nowhere).
    pub metrics_listen: Option<SocketAddr>,
}

fn users_only<S: serde::Serializer>(
    users: &Option<HashMap<String, String>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut names: Option<Vec<&String>> = users.as_ref().map(|u| u.keys().collect());
    if let Some(names) = names.as_mut() {
        names.sort();
    }
    serde::Serialize::serialize(&names, s)
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().unwrap_or_else(|_| unreachable!()),
            users: None,
            auth_file: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            connect_timeout_ms: 5_000,
            tls: None,
            metrics_listen: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Metrics(#[from] maestro_process::metrics::MetricsError),
    #[error("cannot listen on {addr} (another broker there? choose another address with --listen)")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the broker did not accept MQTT connections on {addr} within {timeout:?}")]
    NotReady { addr: SocketAddr, timeout: Duration },
    #[error("cannot read auth file {path}")]
    AuthFileRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("auth file {path}, line {line}: {reason}")]
    AuthFileSyntax {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
    #[error("TLS: {0}")]
    Tls(#[from] maestro_process::tls::TlsError),
    #[error("max connections must be at least 1")]
    NoConnections,
    #[error("cannot start the broker thread: {0}")]
    Thread(std::io::Error),
    #[error("the control broker stopped serving: {0}")]
    Stopped(String),
}

impl BrokerError {
    /// The process exit code for this error: 3 when the broker cannot listen or start,
    /// 70 when it stopped while serving.
    pub fn exit_code(&self) -> u8 {
        match self {
            BrokerError::Stopped(_) => 70,
            _ => 3,
        }
    }
}

/// Runs `body` on a named thread; the receiver learns why the thread ended (it returned,
/// or panicked), so a broker whose thread dies is never left serving nothing.
fn spawn_watched(
    name: &str,
    body: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> std::io::Result<tokio::sync::oneshot::Receiver<String>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
            let reason = match outcome {
                Ok(Ok(())) => "rumqttd's server threads ended".to_owned(),
                Ok(Err(e)) => format!("rumqttd failed: {e}"),
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    format!("rumqttd panicked: {message}")
                }
            };
            let _ = tx.send(reason);
        })?;
    Ok(rx)
}

/// How often a serving broker checks that it still completes an MQTT handshake.
const HEALTH_EVERY: Duration = Duration::from_secs(2);
/// Failed health checks in a row after which the broker gives up.
const HEALTH_FAILURES: u32 = 3;

/// Reads an auth file: one `username:password` per line; blank lines and lines starting
/// with `#` are ignored. The password is everything after the first `:`.
pub fn load_users(path: &Path) -> Result<HashMap<String, String>, BrokerError> {
    let text = std::fs::read_to_string(path).map_err(|source| BrokerError::AuthFileRead {
        path: path.to_owned(),
        source,
    })?;
    let mut users = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let syntax = |reason| BrokerError::AuthFileSyntax {
            path: path.to_owned(),
            line: index + 1,
            reason,
        };
        let (user, password) = line
            .split_once(':')
            .ok_or_else(|| syntax("expected username:password"))?;
        if user.is_empty() {
            return Err(syntax("empty username"));
        }
        if users.insert(user.to_owned(), password.to_owned()).is_some() {
            return Err(syntax("username listed twice"));
        }
    }
    if users.is_empty() {
        return Err(BrokerError::AuthFileSyntax {
            path: path.to_owned(),
            line: 0,
            reason: "no users: an empty auth file would refuse every client",
        });
    }
    Ok(users)
}

/// The rumqttd configuration for `config`: one MQTT 3.1.1 listener on `listen`.
/// rumqttd's configuration: one plain listener on `listen` that takes the logins in
/// `auth` (the broker's users; with TLS, only the relay's own account).
pub fn rumqttd_config(
    config: &BrokerConfig,
    listen: SocketAddr,
    auth: Option<HashMap<String, String>>,
) -> rumqttd::Config {
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: config.connect_timeout_ms,
        max_payload_size: config.max_payload_bytes,
        max_inflight_count: 1000,
        auth,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "control".to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections,
    };
    rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: config.max_connections,
            // Also bounds how many retained notes (presences) one QoS 0 subscription gets.
            max_outgoing_packet_count: config.max_connections.max(1000) as u64,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("control".to_owned(), server)])),
        ..Default::default()
    }
}

/// A started broker.
#[derive(Debug)]
pub struct RunningBroker {
    pub addr: SocketAddr,
    stopped: tokio::sync::oneshot::Receiver<String>,
    config: BrokerConfig,
    /// Stops the TLS terminator (when there is one) when the broker is dropped.
    _tls: Option<tokio_util::sync::DropGuard>,
    /// Health metrics the health checks keep current, when they are served.
    health: Option<health::BrokerHealth>,
}

/// Starts the broker on its own thread and returns once it completes an MQTT handshake.
pub async fn start(config: &BrokerConfig) -> Result<RunningBroker, BrokerError> {
    if config.max_connections == 0 {
        return Err(BrokerError::NoConnections);
    }
    let listen_error = |source| BrokerError::Listen {
        addr: config.listen,
        source,
    };
    // With TLS, this process holds the public listener and rumqttd a private one: on a
    // loopback address of its own, on a port the kernel picks when rumqttd binds it (found
    // among this process's descriptors, so it cannot be anyone else's), taking only the
    // relay's login, whose password never leaves this process.
    let (bind, terminator) = match &config.tls {
        Some(tls) => {
            let server = tls.server_config()?;
            let public = TcpListener::bind(config.listen).map_err(listen_error)?;
            public.set_nonblocking(true).map_err(listen_error)?;
            let login = tls::InnerLogin::random();
            let bind = SocketAddr::new(inner::private_ip().into(), 0);
            (bind, Some((public, server, login)))
        }
        None => {
            // rumqttd only logs a bind failure; find out first so the caller gets a
            // clear error.
            drop(TcpListener::bind(config.listen).map_err(listen_error)?);
            (config.listen, None)
        }
    };
    // Many clients need many descriptors: raise the soft limit to the hard one.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "could not raise the open-files limit");
    }
    let auth = match &terminator {
        Some((_, _, login)) => Some(login.accounts()),
        None => config.users.clone(),
    };
    let probe_login = auth
        .as_ref()
        .and_then(|a| a.iter().next())
        .map(|(u, p)| (u.clone(), p.clone()));
    let rumqttd_config = rumqttd_config(config, bind, auth);
    let mut stopped = spawn_watched("control-broker", move || {
        let mut broker = rumqttd::Broker::new(rumqttd_config);
        broker.start().map_err(|e| e.to_string())
    })
    .map_err(BrokerError::Thread)?;
    let not_ready = || BrokerError::NotReady {
        addr: config.listen,
        timeout: READY_TIMEOUT,
    };
    let inner = if terminator.is_some() {
        tokio::select! {
            found = tokio::time::timeout(READY_TIMEOUT, inner::bound(bind.ip())) => found.map_err(|_| not_ready())?,
            reason = &mut stopped => return Err(BrokerError::Stopped(reason.unwrap_or_default())),
        }
    } else {
        bind
    };
    let probe = probe_mqtt(probe_login, inner);
    tokio::select! {
        ready = tokio::time::timeout(READY_TIMEOUT, probe) => ready.map_err(|_| not_ready())?,
        reason = &mut stopped => return Err(BrokerError::Stopped(reason.unwrap_or_default())),
    }
    nodelay::set_on_listener(inner);
    let guard = match terminator {
        Some((public, server, login)) => {
            let public = tokio::net::TcpListener::from_std(public).map_err(listen_error)?;
            let stop = CancellationToken::new();
            let relay = tls::Relay {
                inner,
                login,
                users: config.users.clone(),
                max_packet_bytes: config.max_payload_bytes,
            };
            tokio::spawn(tls::terminate(public, server, relay, stop.clone()));
            Some(stop.drop_guard())
        }
        None => None,
    };
    Ok(RunningBroker {
        addr: config.listen,
        stopped,
        config: config.clone(),
        _tls: guard,
        health: None,
    })
}

impl RunningBroker {
    /// Returns when the broker stops serving: its thread ended, or its listener refused
    /// [`HEALTH_FAILURES`] TCP connections in a row. (A TCP check, not an MQTT one, so a
    /// broker at its connection limit is not mistaken for a dead one.) Never returns
    /// while it is healthy.
    pub async fn failed(&mut self) -> String {
        let mut failures = 0;
        let mut tick = tokio::time::interval(HEALTH_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                reason = &mut self.stopped => return reason.unwrap_or_else(|_| "the broker thread vanished".into()),
                _ = tick.tick() => {
                    let began = std::time::Instant::now();
                    let ok = matches!(
                        tokio::time::timeout(HEALTH_EVERY * 2, tokio::net::TcpStream::connect(self.config.listen)).await,
                        Ok(Ok(_))
                    );
                    if let Some(h) = &self.health {
                        h.checked(ok, if ok { 0 } else { failures + 1 }, began.elapsed(), self.addr.port());
                    }
                    if ok {
                        failures = 0;
                    } else {
                        failures += 1;
                        tracing::warn!(failures, "the control broker's listener did not accept a health-check connection");
                        if failures >= HEALTH_FAILURES {
                            return format!("its listener refused {failures} health-check connections in a row");
                        }
                    }
                }
            }
        }
    }
}

/// Waits until rumqttd, listening on `addr`, answers an MQTT CONNECT (as one of its users,
/// when it has any).
async fn probe_mqtt(login: Option<(String, String)>, addr: SocketAddr) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
    let host = addr.ip().to_string();
    let port = addr.port();
    loop {
        let mut options = MqttOptions::new("maestro-broker-ready-probe", host.clone(), port);
        options.set_keep_alive(Duration::from_secs(5));
        if let Some((user, password)) = &login {
            options.set_credentials(user.clone(), password.clone());
        }
        let (client, mut eventloop) = AsyncClient::new(options, 4);
        if let Ok(Event::Incoming(Packet::ConnAck(_))) = eventloop.poll().await {
            // Leave so the broker closes the connection: then the probe's slot is free
            // before start() returns, and rumqttd's second disconnect of a closed socket
            // cannot throw out the first client to connect after it.
            maestro_process::goodbye::goodbye(&client, &mut eventloop).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts the broker, prints the ready line on stdout, and serves until `shutdown`.
pub async fn run(config: BrokerConfig, shutdown: CancellationToken) -> Result<(), BrokerError> {
    let mut broker = start(&config).await?;
    let _metrics = match config.metrics_listen {
        Some(addr) => {
            let (health, registry) = health::BrokerHealth::register(&config);
            broker.health = Some(health);
            let stop = shutdown.child_token();
            maestro_process::metrics::serve(
                maestro_process::metrics::MetricsListen(addr),
                registry,
                stop.clone(),
            )
            .await?;
            Some(stop.drop_guard())
        }
        None => None,
    };
    let scheme = if config.tls.is_some() {
        "mqtts"
    } else {
        "mqtt"
    };
    println!(
        "maestro-broker ready listen={} url={scheme}://{}",
        broker.addr, broker.addr
    );
    info!(listen = %broker.addr, tls = config.tls.is_some(), client_certificates = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()), "control broker ready");
    tokio::select! {
        _ = shutdown.cancelled() => {}
        reason = broker.failed() => {
            tracing::error!(%reason, "control broker stopped serving");
            return Err(BrokerError::Stopped(reason));
        }
    }
    info!("control broker stopping");
    Ok(())
}

mod health {
    //! The broker's health for Prometheus: whether its listener answers, how fast, and
    //! how many connections it holds (established TCP connections on its port, from
    //! `/proc/net/tcp{,6}` of its network namespace).

    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    #[derive(Debug, Clone, Default)]
    pub struct BrokerHealth {
        up: Gauge,
        failures: Gauge,
        check_seconds: Gauge<f64, AtomicU64>,
        connections: Gauge,
    }

    impl BrokerHealth {
        pub fn register(
            config: &super::BrokerConfig,
        ) -> (Self, maestro_process::metrics::SharedRegistry) {
            let h = Self::default();
            let mut r = Registry::with_prefix("maestro_broker");
            r.register(
                "up",
                "1 while the listener accepts connections",
                h.up.clone(),
            );
            r.register(
                "health_check_failures",
                "Health checks failed in a row (the broker stops at 3)",
                h.failures.clone(),
            );
            r.register(
                "health_check_seconds",
                "How long the last health-check connection took",
                h.check_seconds.clone(),
            );
            r.register(
                "connections",
                "Established connections on the listener's port",
                h.connections.clone(),
            );
            let max: Gauge = Gauge::default();
            max.set(i64::try_from(config.max_connections).unwrap_or(i64::MAX));
            r.register("max_connections", "The connection limit", max);
            let started: Gauge = Gauge::default();
            started.set(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64),
            );
            r.register(
                "started_seconds",
                "When the broker started (Unix time)",
                started,
            );
            h.up.set(1);
            (h, std::sync::Arc::new(std::sync::Mutex::new(r)))
        }

        pub fn checked(&self, ok: bool, failures: u32, took: Duration, port: u16) {
            self.up.set(i64::from(ok));
            self.failures.set(i64::from(failures));
            self.check_seconds.set(took.as_secs_f64());
            if let Some(n) = established(port) {
                self.connections.set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
    }

    /// Established TCP connections whose local port is `port`.
    fn established(port: u16) -> Option<usize> {
        let v4 = procfs::net::tcp().ok()?;
        let v6 = procfs::net::tcp6().unwrap_or_default();
        Some(
            v4.iter()
                .chain(v6.iter())
                .filter(|e| {
                    e.local_address.port() == port && e.state == procfs::net::TcpState::Established
                })
                .count(),
        )
    }
}

mod inner {
    //! rumqttd's private listener behind the TLS relay. rumqttd binds an address itself,
    //! so rather than reserve a port and hand it over (bind, drop, rebind: a window in
    //! which anyone may take it), the broker gives rumqttd a loopback address of its own
    //! with port 0 and finds the port among this process's own descriptors.

    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::time::Duration;

    /// A random address in 127.0.0.0/8 other than 127.0.0.x, which Linux routes to the
    /// loopback device like 127.0.0.1.
    pub fn private_ip() -> Ipv4Addr {
        let r = uuid::Uuid::new_v4().as_u128();
        let (a, b, c) = (r as u8, (r >> 8) as u8, (r >> 16) as u8);
        Ipv4Addr::new(127, a.max(1), b, c.clamp(1, 254))
    }

    /// The address of the listener this process holds on `ip`, once there is one.
    pub async fn bound(ip: IpAddr) -> SocketAddr {
        loop {
            if let Some(addr) = super::nodelay::own_listeners()
                .into_iter()
                .find(|a| a.ip() == ip)
            {
                return addr;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

mod nodelay {
    //! rumqttd does not set TCP_NODELAY on the connections it accepts, so a small note
    //! behind another un-acknowledged one waits for the peer's delayed ACK (~40 ms).
    //! Linux copies TCP_NODELAY from a listening socket to the sockets it accepts, so
    //! setting it once on rumqttd's listener (found among this process's descriptors)
    //! covers every control connection.

    use std::net::SocketAddr;

    pub fn set_on_listener(addr: SocketAddr) {
        let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
            tracing::warn!("cannot list /proc/self/fd: control connections keep Nagle's algorithm");
            return;
        };
        let mut done = false;
        for entry in entries.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            done |= set_if_listener(fd, addr);
        }
        if !done {
            tracing::warn!(%addr, "listener not found: control connections keep Nagle's algorithm");
        }
    }

    /// The addresses of the TCP listeners among this process's descriptors.
    pub fn own_listeners() -> Vec<SocketAddr> {
        let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
            .filter_map(listener_addr)
            .collect()
    }

    #[allow(unsafe_code)]
    fn listener_addr(fd: i32) -> Option<SocketAddr> {
        use std::os::fd::BorrowedFd;
        // SAFETY: as in `set_if_listener`: listed in /proc/self/fd, only borrowed here,
        // never closed; a descriptor closed meanwhile makes the calls fail with EBADF.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        if !socket.is_listener().unwrap_or(false) {
            return None;
        }
        socket.local_addr().ok().and_then(|a| a.as_socket())
    }

    #[allow(unsafe_code)]
    fn set_if_listener(fd: i32, addr: SocketAddr) -> bool {
        use std::os::fd::BorrowedFd;
        // SAFETY: `fd` was just listed in /proc/self/fd; it is only borrowed for the
        // duration of this call and never closed here. A descriptor closed meanwhile makes
        // the calls below fail with EBADF, which is handled.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let listening = socket.is_listener().unwrap_or(false);
        let same = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|a| a == addr);
        listening && same && socket.set_tcp_nodelay(true).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn auth_file_parses() {
        let (_d, p) = write("# users\nalice:s3cret:with:colons\n\n bob:pw \n");
        let users = load_users(&p).unwrap();
        assert_eq!(users["alice"], "s3cret:with:colons");
        assert_eq!(users["bob"], "pw");
    }

    #[test]
    fn auth_file_errors_name_file_and_line() {
        let (_d, p) = write("alice:x\nnocolon\n");
        let e = load_users(&p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("users"), "{e}");
        let (_d, p) = write("# nobody\n");
        assert!(load_users(&p).unwrap_err().to_string().contains("no users"));
    }

    #[tokio::test]
    async fn port_in_use_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let config = BrokerConfig {
            listen: taken.local_addr().unwrap(),
            ..Default::default()
        };
        let e = start(&config).await.unwrap_err();
        assert!(matches!(e, BrokerError::Listen { .. }), "{e}");
        assert!(e.to_string().contains(&config.listen.to_string()), "{e}");
    }

    #[test]
    fn print_config_hides_passwords() {
        let config = BrokerConfig {
            users: Some(HashMap::from([("alice".into(), "s3cret".into())])),
            ..Default::default()
        };
        let json = serde_json::to_string(&config).unwrap();
        assert!(json.contains("alice") && !json.contains("s3cret"), "{json}");
    }
}

#[cfg(test)]
mod watched_thread_tests {
    use super::spawn_watched;

    #[tokio::test]
    async fn a_thread_that_ends_or_panics_is_reported() {
        let ended = spawn_watched("t-ok", || Ok(())).unwrap();
        assert!(ended.await.unwrap().contains("ended"));
        let failed = spawn_watched("t-err", || Err("bind failed".into())).unwrap();
        assert!(failed.await.unwrap().contains("bind failed"));
        let panicked = spawn_watched("t-panic", || panic!("router gone")).unwrap();
        assert!(panicked.await.unwrap().contains("router gone"));
    }
}
