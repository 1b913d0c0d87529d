//! `maestro-process` owns what every maestro process (the broker, the peers, the CLI)
//! needs around its work, and nothing about the control plane's notes: logging to stderr
//! ([`init_tracing`], [`LogTap`]), the root cancellation token cancelled on SIGINT or
//! SIGTERM ([`run_until_signal`]), the Prometheus endpoint ([`metrics`]), TLS files and
//! rustls set-up ([`tls`]), and leaving an MQTT broker politely ([`goodbye`]).

pub mod goodbye;
pub mod metrics;
pub mod tls;

use std::future::Future;
use tokio_util::sync::CancellationToken;

/// Runs `main` on a single-threaded runtime, handing it the root cancellation token,
/// which SIGINT and SIGTERM cancel. Fails only when the runtime cannot be built.
pub fn run_until_signal<F, Fut>(main: F) -> std::io::Result<Fut::Output>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(async {
        let shutdown = CancellationToken::new();
        cancel_on_signals(shutdown.clone());
        main(shutdown).await
    }))
}

/// Logs to stderr with `tracing`; `RUST_LOG` overrides `default_filter`. While a
/// [`LogTap`] is open (a full-screen view owns the terminal), log lines go to it instead.
pub fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_writer(|| LogWriter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .try_init();
}

/// The lines kept while a tap is open; older ones are counted, not kept.
const TAP_KEEPS: usize = 1000;

#[derive(Debug, Default)]
struct Tapped {
    lines: std::collections::VecDeque<String>,
    dropped: u64,
}

type SharedTap = std::sync::Arc<std::sync::Mutex<Tapped>>;

static TAP: std::sync::Mutex<Option<SharedTap>> = std::sync::Mutex::new(None);

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where log lines go: stderr, or the open tap.
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let tap = lock(&TAP).clone();
        match tap {
            None => std::io::stderr().write(buf),
            Some(tap) => {
                let plain = strip_ansi_escapes::strip(buf);
                let text = String::from_utf8_lossy(&plain);
                let mut t = lock(&tap);
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    if t.lines.len() == TAP_KEEPS {
                        t.lines.pop_front();
                        t.dropped += 1;
                    }
                    t.lines.push_back(line.to_owned());
                }
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Log lines held back from stderr while it is open (a full-screen view owns the
/// terminal); when it closes they are written to stderr, so none is lost.
#[derive(Debug)]
pub struct LogTap {
    tapped: SharedTap,
}

impl LogTap {
    /// Sends log lines here until this is dropped.
    pub fn open() -> Self {
        let tapped = SharedTap::default();
        *lock(&TAP) = Some(tapped.clone());
        Self { tapped }
    }

    /// The last `n` lines, oldest first.
    pub fn recent(&self, n: usize) -> Vec<String> {
        let t = lock(&self.tapped);
        t.lines
            .iter()
            .skip(t.lines.len().saturating_sub(n))
            .cloned()
            .collect()
    }
}

impl Drop for LogTap {
    fn drop(&mut self) {
        *lock(&TAP) = None;
        let t = lock(&self.tapped);
        if t.dropped > 0 {
            eprintln!("({} earlier log lines were not kept)", t.dropped);
        }
        for line in &t.lines {
            eprintln!("{line}");
        }
    }
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM; a second one exits the process at
/// once with status 130. Call from inside a tokio runtime.
pub fn cancel_on_signals(shutdown: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            _ = shutdown.cancelled() => return,
        }
        shutdown.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("second signal: exiting now");
        std::process::exit(130);
    });
}
