//! `maestro-report` owns the results folder: its files as typed serde types
//! ([`model`]), written and read only through them ([`folder`], with a
//! `schema_version`, and errors that name the file and the field), the per-second time
//! series and interval logs streamed during a run ([`timeseries`]), and what is built from
//! a results folder alone: the HTML report ([`html`]), JUnit XML ([`junit`]), the
//! regression gate ([`compare`]), and the results index with the gate over history
//! ([`history`], `index.sqlite` beside the folders, rebuilt from them at will).
//!
//! It must not touch the network or the control plane: it knows files, not peers. It
//! computes no run's numbers either (the controller does); it stores and presents them.

pub mod compare;
pub mod folder;
pub mod format;
pub mod history;
pub mod html;
pub mod junit;
pub mod model;
pub mod omb;
pub mod partial;
pub mod site;
pub mod sut;
pub mod timeseries;

pub use folder::ResultsError;
pub use model::*;
pub use sut::{FaultSummary, SutSummary, WindowStats};
