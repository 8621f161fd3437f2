//! Policies: plan and placement decisions made by WebAssembly components
//! (`policies/wit`, `crops:policy@0.2.0`), the only module that touches
//! wasmtime, and through its public API only.
//!
//! * `bindings`: the contract's types and worlds, generated from the WIT
//!   by wasmtime's `bindgen!`, and the version check.
//! * `engine`: the engines (fuel; the pooling one grants nothing, the other
//!   the null WASI context), compile and validate a module, run one
//!   decision in a fresh instance.
//! * `wasi`: the null WASI context for guests whose toolchain imports WASI
//!   (Python, JavaScript): nothing granted, clocks fixed, random seeded,
//!   output captured and capped.
//! * `check`: caps and sanity rules applied to every answer.
//! * `types`: a decision's values as the API and the store speak them
//!   (serde), converted into the generated ones at the call.
//! * `explanation`: a decision's explanation, typed, as the scheduler
//!   writes it, the store keeps it and `simulate` replays it.
//! * `wire`: a placement's candidates packed for a guest (interned
//!   strings, one byte table; the SDKs in policies/sdk decode it).
//! * `stock`: the stock policies, embedded from `policies/dist`.
//! * `registry`: which module decides for whom (per scope and role), its
//!   health, fail-closed or last-good, and the decision calls the API
//!   makes.
//! * `cache`: compiled modules kept on disk (HMAC-tagged), so loading an
//!   uploaded module again does not compile it again.
//! * `load`: whether the stored activations are loaded yet (the
//!   orchestrator listens first; no decision is made before).
//! * `cases`: conformance cases (`policies/conformance/*.json`), run by the
//!   tests and by `crops-orchestrator policy test`.
//!
//! A module that traps, runs out of fuel, hits its memory cap or answers
//! nonsense fails that one decision with a [`PolicyError`] and is marked
//! unhealthy; every other decision, and the orchestrator, go on.

pub mod bindings;
pub mod cache;
pub mod cases;
pub mod check;
pub mod engine;
pub mod explanation;
pub mod load;
pub mod registry;
mod reuse;
pub mod stock;
pub mod types;
pub mod wasi;
mod wire;

pub use engine::{Compiled, Host, Limits};
pub use explanation::{Answer, EnrolmentAsked, Explanation, Recorded, RecordedPlacement};
pub use registry::{Decided, FailMode, Installed, Policies, Role, Scope, SlotStatus};
pub use types::{
    Admission, Placement, PlanInput, Profile, Request, Usage, Verdict, WorkerInput, WorkerMode,
};

/// Concurrent decisions the pooling allocator has instances for.
pub const DEFAULT_SLOTS: u32 = 64;

/// Which world a module implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `admit` and `admit-worker`.
    Admission,
    /// `place`.
    Placement,
    /// All three (the `policy` world).
    Both,
}

impl Kind {
    pub fn admits(self) -> bool {
        matches!(self, Self::Admission | Self::Both)
    }

    pub fn places(self) -> bool {
        matches!(self, Self::Placement | Self::Both)
    }

    /// The WIT world's name: `admission`, `placement` or `policy` (both),
    /// as the API stores and names it.
    pub fn world(self) -> &'static str {
        match self {
            Self::Admission => "admission",
            Self::Placement => "placement",
            Self::Both => "policy",
        }
    }

    /// The kind a world's name (or `both`) stands for.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admission" => Some(Self::Admission),
            "placement" => Some(Self::Placement),
            "policy" | "both" => Some(Self::Both),
            _ => None,
        }
    }

    /// Whether a module of this kind makes every decision `other` makes.
    pub fn covers(self, other: Kind) -> bool {
        (self.admits() || !other.admits()) && (self.places() || !other.places())
    }
}

/// Why a module was refused or a decision could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy engine failure: {0}")]
    Engine(String),
    #[error("invalid policy module: {0}")]
    Invalid(String),
    #[error("the module implements {kind:?}, which has no `{wanted}`")]
    WrongKind { wanted: &'static str, kind: Kind },
    #[error("`{call}` ran out of fuel ({fuel} units): the policy took too long")]
    OutOfFuel { call: &'static str, fuel: u64 },
    #[error("`{call}` exceeded the memory cap of {cap} bytes")]
    MemoryCap { call: &'static str, cap: usize },
    #[error("`{call}` trapped ({trap}): {detail}")]
    Trap {
        call: &'static str,
        trap: String,
        detail: String,
    },
    #[error("the policy answered nonsense: {0}")]
    Nonsense(String),
    #[error("policy module {0} not found")]
    NotFound(String),
    #[error("the stock policies are missing or broken: {0}")]
    Stock(String),
    #[error("{0}")]
    NotLoaded(String),
}

impl PolicyError {
    /// Short machine code for logs, stored decisions and the API.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Engine(_) => "engine",
            Self::Invalid(_) => "invalid_module",
            Self::WrongKind { .. } => "wrong_kind",
            Self::OutOfFuel { .. } => "out_of_fuel",
            Self::MemoryCap { .. } => "memory_cap",
            Self::Trap { .. } => "trap",
            Self::Nonsense(_) => "nonsense",
            Self::NotFound(_) => "not_found",
            Self::Stock(_) => "stock",
            Self::NotLoaded(_) => "not_loaded",
        }
    }
}

#[cfg(test)]
mod hostile;

/// One engine for every test (compiling the stock modules once), each
/// test with its own activations.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::OnceLock;

    pub fn policies() -> super::Policies {
        static BASE: OnceLock<super::Policies> = OnceLock::new();
        BASE.get_or_init(|| super::Policies::shared().expect("policy engine"))
            .fork()
    }
}
