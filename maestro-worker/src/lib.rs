//! `maestro-worker` owns the worker daemon: it joins the cluster on the control broker,
//! answers control notes, and runs its share of a test: the load engine ([`engine`]) with
//! the protocol-under-test drivers ([`driver`]).
//!
//! It must not know about controllers beyond the notes it receives: what a run is comes
//! in `configure` (a `TestSpec` with its typed SUT URL), and everything goes back as
//! notes. Nothing else calls its drivers or engine.

pub mod args;
pub mod driver;
pub mod engine;
pub mod files;

use engine::Engine;
use maestro_control::{Handler, Outbox, PeerConfig, PeerError, ReplyTo};
use maestro_protocol::{Body, Note, PeerState};
use tokio_util::sync::CancellationToken;

/// What this peer announces it can do.
pub const CAPABILITIES: &[&str] = &["ping", "stats", "halt", "run", "mqtt"];

struct WorkerHandler {
    engine: Engine,
    outbox: Option<Outbox>,
}

impl Handler for WorkerHandler {
    fn attach(&mut self, outbox: Outbox) {
        self.outbox = Some(outbox);
    }

    fn state(&self) -> PeerState {
        self.engine.state()
    }

    fn run(&self) -> Option<maestro_protocol::RunId> {
        self.engine.run_id()
    }

    fn on_controller(&mut self, controller: &maestro_protocol::PeerId, online: bool) {
        self.engine.on_controller(controller, online);
    }

    fn handle(&mut self, note: &Note, reply: ReplyTo) -> Option<Body> {
        match &note.body {
            Body::Configure(c) => {
                let outbox = self.outbox.as_ref()?;
                self.engine.configure(c, &note.sender.id, reply, outbox)
            }
            Body::Renew(r) => {
                self.engine.renew(r, &note.sender.id);
                None
            }
            Body::Start(s) => Some(self.engine.start(s)),
            Body::Stop(s) => Some(self.engine.stop(s)),
            Body::Resume(r) => Some(self.engine.resume(r)),
            other => Some(Body::Error(maestro_protocol::ErrorNote {
                code: maestro_protocol::ErrorCode::Unsupported,
                message: format!("a worker does not handle {:?} notes", other.kind()),
            })),
        }
    }
}

/// Runs the worker until `shutdown` is cancelled or a halt note arrives; it reads no file
/// a SUT URL names (see [`run_with_files`]).
pub async fn run(config: PeerConfig, shutdown: CancellationToken) -> Result<(), PeerError> {
    run_with_files(config, files::FilesDir::none(), shutdown).await
}

/// [`run`], reading files a SUT URL names (TLS certificates, librdkafka locations) only
/// under `files`.
pub async fn run_with_files(
    config: PeerConfig,
    files: files::FilesDir,
    shutdown: CancellationToken,
) -> Result<(), PeerError> {
    tracing::info!(
        files_dir = files.dir().map(|d| d.display().to_string()),
        "files a SUT URL names are read only under this folder"
    );
    tracing::info!(
        open_files = engine::open_files_limit(),
        "open-files limit (one per SUT connection)"
    );
    let engine = Engine::new(config.info.id.clone(), files, shutdown.child_token());
    let handler = WorkerHandler {
        engine,
        outbox: None,
    };
    // The engine (and its data-plane threads, if a run started them) ends with the peer.
    let result = maestro_control::peer::run(config, handler, shutdown.clone()).await;
    shutdown.cancel();
    result
}
