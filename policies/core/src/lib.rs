//! The stock Crops policies as plain Rust, independent of WebAssembly.
//!
//! The types mirror `policies/wit/policy.wit` (`crops:policy@0.2.0`) field
//! for field; each guest crate moves the generated bindings' values into
//! these (strings are moved, not copied) and back. [`packed`] is the Rust
//! SDK for a placement's packed candidates: plain [`Worker`]s from them. Everything here is a
//! pure function of its arguments, so it unit-tests on the host and every
//! decision can be replayed.

pub mod filter;
pub mod packed;
pub mod place;
pub mod plan;

/// Security profiles, weakest first (derived order = strength).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Profile {
    Open,
    Standard,
    Strict,
    Offline,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Standard => "standard",
            Self::Strict => "strict",
            Self::Offline => "offline",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Byom,
    Fleet,
}

/// The container asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub tenant_id: String,
    pub name: String,
    pub image: String,
    pub profile: Profile,
    pub pinned_worker: Option<String>,
    pub platform: Option<String>,
    pub arch: Option<String>,
    pub region: Option<String>,
    pub memory_bytes: u64,
    pub cpus: u32,
    pub labels: Vec<(String, String)>,
}

/// A plan's numbers; `None` is unlimited.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub name: String,
    pub self_hosted_workers: Option<u32>,
    pub concurrent_containers: Option<u32>,
}

/// What a tenant holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub creating: u32,
    pub created: u32,
    pub running: u32,
    pub exited: u32,
    pub lost: u32,
    pub failed: u32,
    pub self_hosted_workers: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    Allow,
    Deny(String),
}

/// One candidate worker (WIT `worker`). It borrows its strings and sets
/// (from the call's packed candidates: [`packed::workers`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Worker<'a> {
    pub id: &'a str,
    pub mode: Mode,
    pub tenant_id: &'a str,
    pub platform: &'a str,
    pub arch: &'a str,
    pub region: &'a str,
    pub labels: packed::Pairs<'a>,
    pub cpu_count: u32,
    pub memory_total: u64,
    pub memory_free: u64,
    pub disk_free: Option<u64>,
    pub cpu_load_permille: u32,
    pub containers_running: u32,
    pub images: packed::Strs<'a>,
    pub security_floor: Profile,
    pub drained: bool,
    pub cordoned: bool,
    pub online: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub feasible: bool,
    pub reason: String,
    pub score: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub verdicts: Vec<Verdict>,
    pub chosen: Option<u32>,
    pub reason: String,
}

#[cfg(test)]
pub(crate) mod fixture {
    use super::*;

    pub fn request(tenant: &str) -> Request {
        Request {
            tenant_id: tenant.into(),
            name: "dev".into(),
            image: "docker.io/library/alpine:3".into(),
            profile: Profile::Standard,
            pinned_worker: None,
            platform: None,
            arch: None,
            region: None,
            memory_bytes: 1 << 30,
            cpus: 2,
            labels: Vec::new(),
        }
    }

    pub fn worker(id: &str) -> Worker<'_> {
        Worker {
            id,
            mode: Mode::Fleet,
            tenant_id: "",
            platform: "linux",
            arch: "x86_64",
            region: "eu",
            labels: packed::Pairs::plain(&[]),
            cpu_count: 8,
            memory_total: 16 << 30,
            memory_free: 8 << 30,
            disk_free: None,
            cpu_load_permille: 500,
            containers_running: 2,
            images: packed::Strs::plain(&[]),
            security_floor: Profile::Open,
            drained: false,
            cordoned: false,
            online: true,
        }
    }
}
