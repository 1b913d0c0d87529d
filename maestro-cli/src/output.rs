//! What every command produces: the output format, an [`Outcome`] (text, exit code,
//! problem), and the errors with their exit codes ([`crate::exit`]).

use crate::exit;
use maestro_controller::ControlError;
use maestro_controller::outcome::PeerOutcome;
use maestro_controller::run::RunError;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MaestroCommand {
    Ping,
    Stats,
    Halt,
}

/// What a command produced: text for stdout, an exit code, and a problem for stderr.
#[derive(Debug)]
pub struct Outcome {
    pub stdout: String,
    pub code: u8,
    pub problem: Option<String>,
    /// One entry per peer, for callers that want the data rather than the text.
    pub peers: Vec<PeerOutcome>,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Start(#[from] RunError),
    #[cfg(feature = "local")]
    #[error("embedded control broker: {0}")]
    Broker(#[from] maestro_broker::BrokerError),
    #[error("this maestro-cli was built without the `local` feature, which {0} needs")]
    NotBuilt(&'static str),
    #[error(transparent)]
    Args(#[from] maestro_control::ArgsError),
    #[error("invalid plan: {0}")]
    Plan(#[from] maestro_controller::plan::PlanError),
    #[error("cannot write {0}: {1}")]
    Io(std::path::PathBuf, std::io::Error),
    #[error(transparent)]
    Results(#[from] maestro_report::ResultsError),
    #[error(transparent)]
    PlanRun(#[from] maestro_controller::plans::PlanRunError),
    #[error(transparent)]
    Certs(#[from] maestro_controller::certs::CertsError),
    #[error("embedded peers did not all answer within {0:?}")]
    EmbeddedPeers(Duration),
    #[error(transparent)]
    Metrics(#[from] maestro_control::metrics::MetricsError),
    #[error("cannot draw the live view (use --no-tui): {0}")]
    Terminal(std::io::Error),
    #[error(transparent)]
    History(#[from] maestro_report::history::HistoryError),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Control(ControlError::Interrupted) => exit::INTERRUPTED,
            CliError::Control(ControlError::Oversize { .. }) => exit::USAGE,
            CliError::Control(_) => exit::CLUSTER_UNREACHABLE,
            #[cfg(feature = "local")]
            CliError::Broker(_) => exit::CLUSTER_UNREACHABLE,
            CliError::NotBuilt(_) => exit::USAGE,
            CliError::EmbeddedPeers(_) => exit::PEERS_MISSING,
            CliError::Args(_) | CliError::Plan(_) | CliError::Metrics(_) => exit::USAGE,
            CliError::Io(..) | CliError::Terminal(_) => exit::INTERNAL,
            CliError::Results(e) => results_code(e),
            CliError::History(e) => {
                use maestro_report::history::HistoryError as H;
                match e {
                    H::Results(e) => results_code(e),
                    H::List(..) | H::Outside { .. } => exit::USAGE,
                    H::Db { .. } => exit::INTERNAL,
                }
            }
            CliError::Certs(e) => {
                use maestro_controller::certs::CertsError as C;
                match e {
                    C::Name { .. } | C::Exists(_) => exit::USAGE,
                    C::Make(_) | C::Write(..) => exit::INTERNAL,
                }
            }
            CliError::Start(e) => run_code(e),
            CliError::PlanRun(e) => {
                use maestro_controller::plans::PlanRunError as P;
                match e {
                    P::Control(ControlError::Interrupted) => exit::INTERRUPTED,
                    P::Control(ControlError::Oversize { .. }) => exit::USAGE,
                    P::Control(_) => exit::CLUSTER_UNREACHABLE,
                    P::Run(e) => run_code(e),
                    P::Plan(_) => exit::USAGE,
                    P::Results(e) => results_code(e),
                    P::Io(..) => exit::INTERNAL,
                    P::NotEnoughWorkers { .. } => exit::PEERS_MISSING,
                }
            }
        }
    }
}

/// Reading a results folder that is not one is a usage error; failing to write is internal.
fn results_code(e: &maestro_report::ResultsError) -> u8 {
    use maestro_report::ResultsError as R;
    match e {
        R::Read(..) | R::Field { .. } | R::Schema { .. } => exit::USAGE,
        R::Write(..) => exit::INTERNAL,
    }
}

fn run_code(e: &RunError) -> u8 {
    match e {
        RunError::Control(ControlError::Interrupted) => exit::INTERRUPTED,
        RunError::Control(ControlError::Oversize { .. }) => exit::USAGE,
        RunError::Control(_) => exit::CLUSTER_UNREACHABLE,
        RunError::Spec(_) => exit::USAGE,
        RunError::Sut { .. } => exit::SUT_UNREACHABLE,
        RunError::NoWorkers(_)
        | RunError::Workers(_)
        | RunError::TooFewWorkers { .. }
        | RunError::NeverStarted => exit::PEERS_MISSING,
        RunError::Results { .. } => exit::INTERNAL,
        RunError::Report(e) => results_code(e),
    }
}
