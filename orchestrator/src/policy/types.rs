//! A decision's inputs and checked answers as the API, the stored
//! decisions and the conformance cases speak them (serde, camelCase).
//! The contract's own types are generated from the WIT
//! (`policy::bindings`); these convert into them at the call (the request,
//! plan and usage: a few strings each; the workers are packed by
//! `policy::wire`).
//!
//! Answers are lifted into the generated types and checked by
//! `policy::check`. Lifting copies (wasmtime runs the guest's post-return,
//! which frees its memory, before `call` returns), and wasmtime charges the
//! guest's fuel for every lifted byte and element, so an enormous answer
//! runs out of fuel or hits the memory cap before it costs the host much.

use serde::{Deserialize, Serialize};

use super::bindings::types as wit;

/// Security profiles, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Profile {
    Open,
    Standard,
    Strict,
    Offline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum WorkerMode {
    Byom,
    Fleet,
}

/// The container asked for (WIT `request`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub tenant_id: String,
    pub name: String,
    pub image: String,
    pub profile: Profile,
    #[serde(default)]
    pub pinned_worker: Option<String>,
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub arch: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub memory_bytes: u64,
    #[serde(default)]
    pub cpus: u32,
    #[serde(default)]
    pub labels: Vec<(String, String)>,
}

/// A plan's numbers (WIT `plan`); `None` is unlimited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanInput {
    pub name: String,
    pub self_hosted_workers: Option<u32>,
    pub concurrent_containers: Option<u32>,
}

/// What the tenant holds (WIT `usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Usage {
    pub creating: u32,
    pub created: u32,
    pub running: u32,
    pub exited: u32,
    pub lost: u32,
    pub failed: u32,
    pub self_hosted_workers: u32,
}

/// One candidate worker (WIT `worker`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerInput {
    pub id: String,
    pub mode: WorkerMode,
    #[serde(default)]
    pub tenant_id: String,
    pub platform: String,
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub labels: Vec<(String, String)>,
    pub cpu_count: u32,
    pub memory_total: u64,
    pub memory_free: u64,
    #[serde(default)]
    pub disk_free: Option<u64>,
    #[serde(default)]
    pub cpu_load_permille: u32,
    #[serde(default)]
    pub containers_running: u32,
    #[serde(default)]
    pub images: Vec<String>,
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

impl From<Profile> for wit::Profile {
    fn from(p: Profile) -> Self {
        match p {
            Profile::Open => Self::Open,
            Profile::Standard => Self::Standard,
            Profile::Strict => Self::Strict,
            Profile::Offline => Self::Offline,
        }
    }
}

impl From<&Request> for wit::Request {
    fn from(r: &Request) -> Self {
        Self {
            tenant_id: r.tenant_id.clone(),
            name: r.name.clone(),
            image: r.image.clone(),
            profile: r.profile.into(),
            pinned_worker: r.pinned_worker.clone(),
            platform: r.platform.clone(),
            arch: r.arch.clone(),
            region: r.region.clone(),
            memory_bytes: r.memory_bytes,
            cpus: r.cpus,
            labels: r.labels.clone(),
        }
    }
}

impl From<&PlanInput> for wit::Plan {
    fn from(p: &PlanInput) -> Self {
        Self {
            name: p.name.clone(),
            self_hosted_workers: p.self_hosted_workers,
            concurrent_containers: p.concurrent_containers,
        }
    }
}

impl From<&Usage> for wit::Usage {
    fn from(u: &Usage) -> Self {
        Self {
            creating: u.creating,
            created: u.created,
            running: u.running,
            exited: u.exited,
            lost: u.lost,
            failed: u.failed,
            self_hosted_workers: u.self_hosted_workers,
        }
    }
}
