//! `maestro-cli` owns the controller: it finds the cluster's peers by their presence on the
//! control broker and sends them requests (ping, stats, halt), waiting for exactly the
//! peers that are there, with a deadline, and naming the ones that did not answer.
//!
//! Exit codes are in [`exit`].

pub mod cli;
pub mod compare;
pub mod controller;
pub mod html;
pub mod local;
pub mod plan;
pub mod quickstart;
pub mod report;
pub mod runplan;
pub mod start;
pub mod stream;
pub mod summary;

pub use cli::{Cli, Outcome, run};
pub use controller::{ControlError, Controller, Exchange};

/// The CLI's exit codes.
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
}
