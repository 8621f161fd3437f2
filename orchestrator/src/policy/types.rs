//! The values of `crops:policy@0.1.0` (policies/wit/policy.wit) on the host:
//! serde types (camelCase, for the API, stored decisions and conformance
//! cases) that also lower straight into a guest (wasmtime's derives, field
//! names in the WIT's kebab-case), so a decision's inputs are never copied
//! into a second set of types.
//!
//! Results are lifted into [`raw`] types and checked by `policy::check`.
//! Lifting copies (wasmtime runs the guest's post-return, which frees its
//! memory, before `call` returns), and wasmtime charges the guest's fuel
//! for every lifted byte and element, so an enormous answer runs out of
//! fuel or hits the memory cap before it costs the host much.

use serde::{Deserialize, Serialize};
use wasmtime::component::{ComponentType, Lower};

/// Security profiles, weakest first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ComponentType, Lower,
)]
#[serde(rename_all = "lowercase")]
#[component(enum)]
#[repr(u8)]
pub enum Profile {
    #[component(name = "open")]
    Open,
    #[component(name = "standard")]
    Standard,
    #[component(name = "strict")]
    Strict,
    #[component(name = "offline")]
    Offline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ComponentType, Lower)]
#[serde(rename_all = "lowercase")]
#[component(enum)]
#[repr(u8)]
pub enum WorkerMode {
    #[component(name = "byom")]
    Byom,
    #[component(name = "fleet")]
    Fleet,
}

/// The container asked for (WIT `request`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ComponentType, Lower)]
#[serde(rename_all = "camelCase")]
#[component(record)]
pub struct Request {
    #[component(name = "tenant-id")]
    pub tenant_id: String,
    pub name: String,
    pub image: String,
    pub profile: Profile,
    #[serde(default)]
    #[component(name = "pinned-worker")]
    pub pinned_worker: Option<String>,
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub arch: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    #[component(name = "memory-bytes")]
    pub memory_bytes: u64,
    #[serde(default)]
    pub cpus: u32,
    #[serde(default)]
    pub labels: Vec<(String, String)>,
}

/// A plan's numbers (WIT `plan`); `None` is unlimited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ComponentType, Lower)]
#[serde(rename_all = "camelCase")]
#[component(record)]
pub struct PlanInput {
    pub name: String,
    #[component(name = "self-hosted-workers")]
    pub self_hosted_workers: Option<u32>,
    #[component(name = "concurrent-containers")]
    pub concurrent_containers: Option<u32>,
}

/// What the tenant holds (WIT `usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ComponentType, Lower)]
#[serde(rename_all = "camelCase", default)]
#[component(record)]
pub struct Usage {
    pub creating: u32,
    pub created: u32,
    pub running: u32,
    pub exited: u32,
    pub lost: u32,
    pub failed: u32,
    #[component(name = "self-hosted-workers")]
    pub self_hosted_workers: u32,
}

/// One candidate worker (WIT `worker`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ComponentType, Lower)]
#[serde(rename_all = "camelCase")]
#[component(record)]
pub struct WorkerInput {
    pub id: String,
    pub mode: WorkerMode,
    #[serde(default)]
    #[component(name = "tenant-id")]
    pub tenant_id: String,
    pub platform: String,
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub labels: Vec<(String, String)>,
    #[component(name = "cpu-count")]
    pub cpu_count: u32,
    #[component(name = "memory-total")]
    pub memory_total: u64,
    #[component(name = "memory-free")]
    pub memory_free: u64,
    #[serde(default)]
    #[component(name = "disk-free")]
    pub disk_free: Option<u64>,
    #[serde(default)]
    #[component(name = "cpu-load-permille")]
    pub cpu_load_permille: u32,
    #[serde(default)]
    #[component(name = "containers-running")]
    pub containers_running: u32,
    #[serde(default)]
    pub images: Vec<String>,
    #[component(name = "security-floor")]
    pub security_floor: Profile,
    #[serde(default)]
    pub drained: bool,
    #[serde(default)]
    pub cordoned: bool,
    pub online: bool,
}

/// An admission decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "decision", content = "reason")]
pub enum Admission {
    Allow,
    Deny(String),
}

/// The verdict on one worker, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub feasible: bool,
    pub reason: String,
    pub score: i64,
}

/// A placement decision, checked: one verdict per candidate, and the
/// chosen index (if any) names a feasible candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    pub verdicts: Vec<Verdict>,
    pub chosen: Option<u32>,
    pub reason: String,
}

/// Results as the guest answered them, not yet checked.
pub(crate) mod raw {
    use wasmtime::component::{ComponentType, Lift};

    #[derive(ComponentType, Lift)]
    #[component(variant)]
    pub enum Admission {
        #[component(name = "allow")]
        Allow,
        #[component(name = "deny")]
        Deny(String),
    }

    #[derive(ComponentType, Lift)]
    #[component(record)]
    pub struct Verdict {
        pub feasible: bool,
        pub reason: String,
        pub score: i64,
    }

    #[derive(ComponentType, Lift)]
    #[component(record)]
    pub struct Placement {
        pub verdicts: Vec<Verdict>,
        pub chosen: Option<u32>,
        pub reason: String,
    }
}
