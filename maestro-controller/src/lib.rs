//! `maestro-controller` is the controller as a library: the control client ([`client`]),
//! peer outcomes of a request ([`outcome`]), a run's lifecycle as a pure state machine
//! ([`lifecycle`]) driven by its I/O shell ([`run`]), the numbers of a run ([`summary`]),
//! test plans (model and validation in [`plan`]; phases, ramp and max-rate search,
//! verdicts in [`plans`], the searches as pure state machines in [`search`]), and lab
//! certificates ([`certs`]). Watchers of a run ([`watch`]): the Prometheus exporter
//! ([`live`]) and the live view's model ([`view`]). The CLI, `quickstart`, `--local`, the tests and the benchmarks
//! all call this one API.
//!
//! It talks to workers only through notes on the control broker, and never calls driver
//! or engine code: what it needs to know about a protocol is a property of the typed SUT
//! URL ([`maestro_protocol::SutUrl`]). Results are written through `maestro-report`'s
//! model. It prints nothing but progress lines (when asked); rendering is the CLI's.

pub mod backlog;
pub mod certs;
pub mod client;
pub mod faults;
pub mod fleet;
pub mod lifecycle;
pub mod live;
pub mod observe;
pub mod omb;
pub mod outcome;
pub mod plan;
pub mod plans;
pub mod progress;
pub mod run;
pub mod search;
pub mod summary;
pub mod sut;
pub mod view;
pub mod watch;

pub use client::{ControlError, Controller, Exchange, Incoming};
