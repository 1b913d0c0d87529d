//! Faults on the SUT side: a controller asks an inspector to run one of the actions the
//! inspector declared in its own local file ([`Inject`] names it, never carries a
//! command); the inspector confirms ([`Injected`]), heals it by itself when its duration
//! is over (or at once on a `stop` for the run), and reports the heal ([`FaultHealed`]).

pub use crate::ids::ActionName;
use crate::run::RunId;
use crate::time::UnixMicros;
use serde::{Deserialize, Serialize};

/// The capability an inspector announces in its presence for each declared action.
pub fn capability(action: &ActionName) -> String {
    format!("fault:{action}")
}

/// The actions an inspector's capabilities declare.
pub fn declared(capabilities: &[String]) -> impl Iterator<Item = &str> {
    capabilities.iter().filter_map(|c| c.strip_prefix("fault:"))
}

/// Request: run a declared action now, and heal it after `duration_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inject {
    pub run: RunId,
    /// The fault's index in the run's plan.
    pub fault: u32,
    pub action: ActionName,
    /// How long the fault lasts; the inspector heals it by itself when this is over,
    /// whether or not the controller is still there.
    pub duration_ms: u64,
}

/// Reply to [`Inject`]: when the action was issued and when the inspector saw it take
/// effect (a process stopped, a rule in place), or why it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Injected {
    pub run: RunId,
    pub fault: u32,
    pub issued_at_us: UnixMicros,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at_us: Option<UnixMicros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Event: a fault was healed (its duration was over, or the run stopped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultHealed {
    pub run: RunId,
    pub fault: u32,
    pub action: ActionName,
    pub healed_at_us: UnixMicros,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
