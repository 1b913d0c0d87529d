//! `maestro-cli` is the command line of the controller: arguments (clap), dispatch,
//! rendering (tables for people, JSON for machines) and exit codes ([`exit`]). What it
//! runs lives in `maestro-controller` (runs, plans, the control client) and
//! `maestro-report` (results folder, report, JUnit, compare). It also owns the local
//! cluster of `quickstart` and `--local` ([`local`]), which composes the broker, worker
//! and inspector libraries in this process: the default feature `local`. Without it
//! (`--no-default-features`) the CLI links no SUT driver, and those two refuse clearly.

pub mod cli;
pub mod compare;
pub mod history;
pub mod live;
#[cfg(feature = "local")]
pub mod local;
/// Without the `local` feature: the same API, refusing with a clear error.
#[cfg(not(feature = "local"))]
#[path = "local_off.rs"]
pub mod local;
pub mod output;
pub mod quickstart;
pub mod report;
pub mod run;
pub mod serve;
pub mod start;

pub use cli::{Cli, Outcome, run};
pub use maestro_controller::{ControlError, Controller, Exchange};

/// The CLI's exit codes. [`exit::TABLE`] is the one list: `--help` and the docs'
/// reference are made from it.
pub mod exit {
    /// Everything asked for was done and every peer answered.
    pub const OK: u8 = 0;
    /// A test condition failed (test runs).
    pub const CONDITION_FAILED: u8 = 1;
    /// Bad command line or configuration.
    pub const USAGE: u8 = 2;
    /// The control broker cannot be reached, refused us, or dropped us.
    pub const CLUSTER_UNREACHABLE: u8 = 3;
    /// Some peers did not answer, are offline, or answered with an error; or there are no
    /// peers at all.
    pub const PEERS_MISSING: u8 = 4;
    /// The system under test cannot be reached (test runs).
    pub const SUT_UNREACHABLE: u8 = 5;
    /// An internal failure (for example the results folder cannot be written).
    pub const INTERNAL: u8 = 70;
    /// Stopped by SIGINT or SIGTERM.
    pub const INTERRUPTED: u8 = 130;

    /// Every exit code with what it means.
    pub const TABLE: &[(u8, &str)] = &[
        (OK, "done; every addressed peer answered"),
        (
            CONDITION_FAILED,
            "a plan condition failed (`run`), or NEW is worse than BASE or than its history (`compare`)",
        ),
        (
            USAGE,
            "usage error: a bad flag, URL, value, plan or results folder",
        ),
        (
            CLUSTER_UNREACHABLE,
            "the control broker is unreachable, refused the credentials, or dropped the connection",
        ),
        (
            PEERS_MISSING,
            "peers missing: no reply, offline, answered with an error, none at all; no workers for a run, or a run degraded (a worker disconnected, the SUT returned errors)",
        ),
        (
            SUT_UNREACHABLE,
            "the system under test is unreachable or refusing (`start`, `run`)",
        ),
        (
            INTERNAL,
            "internal failure: the runtime cannot start, a results folder cannot be written",
        ),
        (INTERRUPTED, "interrupted by SIGINT or SIGTERM"),
    ];

    /// The exit codes for `--help`.
    pub fn help() -> String {
        let mut out = String::from("Exit codes:");
        for (code, meaning) in TABLE {
            out.push_str(&format!("\n  {code:>3}  {meaning}"));
        }
        out
    }
}
