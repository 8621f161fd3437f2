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

/// A placement's candidates as they are lowered into a guest (WIT
/// `candidates`): every distinct string once in one `text`, label and
/// image sets shared, so each worker record is mostly scalars and the whole
/// call costs a handful of guest allocations instead of ten per worker.
pub(crate) mod wire {
    use std::collections::HashMap;

    use wasmtime::component::{ComponentType, Lower};

    use super::{Profile, WorkerInput, WorkerMode};

    #[derive(Clone, Copy, PartialEq, Eq, ComponentType, Lower)]
    #[component(record)]
    pub struct TextRef {
        pub start: u32,
        pub len: u32,
    }

    #[derive(ComponentType, Lower)]
    #[component(record)]
    pub struct Worker {
        pub id: TextRef,
        pub mode: WorkerMode,
        #[component(name = "tenant-id")]
        pub tenant_id: TextRef,
        pub platform: TextRef,
        pub arch: TextRef,
        pub region: TextRef,
        pub labels: u32,
        #[component(name = "cpu-count")]
        pub cpu_count: u32,
        #[component(name = "memory-total")]
        pub memory_total: u64,
        #[component(name = "memory-free")]
        pub memory_free: u64,
        #[component(name = "disk-free")]
        pub disk_free: Option<u64>,
        #[component(name = "cpu-load-permille")]
        pub cpu_load_permille: u32,
        #[component(name = "containers-running")]
        pub containers_running: u32,
        pub images: u32,
        #[component(name = "security-floor")]
        pub security_floor: Profile,
        pub drained: bool,
        pub cordoned: bool,
        pub online: bool,
    }

    #[derive(ComponentType, Lower)]
    #[component(record)]
    pub struct Candidates {
        pub text: String,
        #[component(name = "label-sets")]
        pub label_sets: Vec<Vec<(TextRef, TextRef)>>,
        #[component(name = "image-sets")]
        pub image_sets: Vec<Vec<TextRef>>,
        pub workers: Vec<Worker>,
    }

    /// How many distinct values are compared one by one before hashing.
    const LINEAR: usize = 8;

    /// Numbers distinct values: the first few by comparison (the usual
    /// case: a handful of platforms, regions, label sets), then a map.
    struct Interner<'a, K: ?Sized> {
        seen: Vec<&'a K>,
        more: HashMap<&'a K, u32>,
    }

    impl<'a, K: ?Sized + Eq + std::hash::Hash> Interner<'a, K> {
        fn new() -> Self {
            Self {
                seen: Vec::new(),
                more: HashMap::new(),
            }
        }

        /// The number of `k`, and whether it is new.
        fn get(&mut self, k: &'a K) -> (u32, bool) {
            if let Some(i) = self.seen.iter().position(|s| *s == k) {
                return (i as u32, false);
            }
            let next = (self.seen.len() + self.more.len()) as u32;
            if self.seen.len() < LINEAR {
                self.seen.push(k);
                return (next, true);
            }
            match self.more.entry(k) {
                std::collections::hash_map::Entry::Occupied(e) => (*e.get(), false),
                std::collections::hash_map::Entry::Vacant(e) => (*e.insert(next), true),
            }
        }
    }

    struct Text {
        text: String,
    }

    /// One field's distinct values (each field has few, so its own list
    /// finds them in a comparison or two).
    struct Field<'a> {
        ids: Interner<'a, str>,
        refs: Vec<TextRef>,
    }

    impl<'a> Field<'a> {
        fn new() -> Self {
            Self {
                ids: Interner::new(),
                refs: Vec::new(),
            }
        }

        /// `s`, sent once however many workers use it.
        fn get(&mut self, t: &mut Text, s: &'a str) -> TextRef {
            let (i, new) = self.ids.get(s);
            if new {
                self.refs.push(t.push(s));
            }
            self.refs[i as usize]
        }
    }

    impl Text {
        /// Append `s` without looking for it (worker ids are unique).
        fn push(&mut self, s: &str) -> TextRef {
            let r = TextRef {
                start: self.text.len() as u32,
                len: s.len() as u32,
            };
            self.text.push_str(s);
            r
        }
    }

    impl Candidates {
        pub fn new(workers: &[WorkerInput]) -> Self {
            let mut t = Text {
                text: String::with_capacity(workers.len() * 40),
            };
            let (mut tenants, mut platforms, mut arches, mut regions, mut other) = (
                Field::new(),
                Field::new(),
                Field::new(),
                Field::new(),
                Field::new(),
            );
            let mut labels = Interner::<[(String, String)]>::new();
            let mut label_sets = Vec::new();
            let mut images = Interner::<[String]>::new();
            let mut image_sets = Vec::new();
            let mut out = Vec::with_capacity(workers.len());
            for w in workers {
                let (l, new) = labels.get(&w.labels);
                if new {
                    let set = w
                        .labels
                        .iter()
                        .map(|(k, v)| (other.get(&mut t, k), other.get(&mut t, v)));
                    label_sets.push(set.collect());
                }
                let (i, new) = images.get(&w.images);
                if new {
                    image_sets.push(w.images.iter().map(|s| other.get(&mut t, s)).collect());
                }
                out.push(Worker {
                    id: t.push(&w.id),
                    mode: w.mode,
                    tenant_id: tenants.get(&mut t, &w.tenant_id),
                    platform: platforms.get(&mut t, &w.platform),
                    arch: arches.get(&mut t, &w.arch),
                    region: regions.get(&mut t, &w.region),
                    labels: l,
                    cpu_count: w.cpu_count,
                    memory_total: w.memory_total,
                    memory_free: w.memory_free,
                    disk_free: w.disk_free,
                    cpu_load_permille: w.cpu_load_permille,
                    containers_running: w.containers_running,
                    images: i,
                    security_floor: w.security_floor,
                    drained: w.drained,
                    cordoned: w.cordoned,
                    online: w.online,
                });
            }
            Self {
                text: t.text,
                label_sets,
                image_sets,
                workers: out,
            }
        }
    }
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
