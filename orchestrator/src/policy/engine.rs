//! The wasmtime engines for policies and the run of one decision.
//!
//! A module is compiled once ([`Host::compile`]: validated against the
//! contract and pre-instantiated). Each decision then gets a fresh `Store`
//! with its own fuel and memory cap (`StoreLimits`) and a fresh instance,
//! and is dropped with it: no state survives from one decision to the next.
//!
//! Two engines, chosen by what a module imports:
//!
//! * **fast** (the pooling allocator): modules importing nothing but the
//!   type-only `crops:policy/types@0.2.0` instance, as the Rust stock
//!   policies do. Nothing is granted and nothing per decision is set up
//!   beyond the store.
//! * **wasi** (on-demand allocation, so a large guest never takes the
//!   stock policies' pool slots): modules importing `wasi:*` interfaces,
//!   as componentize-py and componentize-js output does. The linker
//!   grants WASI 0.2 backed by the null context of `policy::wasi`, made
//!   fresh per decision; its captured output is logged with the decision.
//!
//! Either way a module importing anything else is refused when compiled,
//! and one built for another version of the contract is refused naming
//! both versions. Modules are checked and called through the types and
//! exports wasmtime's `bindgen!` generated from the WIT (`policy::bindings`):
//! only wasmtime's public API.

use std::time::Instant;

use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder, Trap,
};

use super::bindings::{self, types as wit, AdmissionIndices, PlacementIndices, CONTRACT};
use super::cache::{self, Cache};
use super::check;
use super::reuse::Reuse;
use super::types::{Admission, Placement, PlanInput, Request, Usage, WorkerInput};
use super::wasi::{self, NullWasi};
use super::wire;
use super::{Kind, PolicyError};

pub use super::bindings::TYPES_INSTANCE;

/// Per-module budgets. Every decision starts from these afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Wasm fuel per call (about one unit per instruction).
    pub fuel: u64,
    /// Linear memory cap per instance, bytes.
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // A JavaScript policy (interpreted, as componentize-js builds
            // it) placing over 1,000 workers needs about 350 M; a Rust one
            // 1.5 M. A runaway module stops after about a second of CPU.
            fuel: 1_000_000_000,
            memory_bytes: 64 << 20,
        }
    }
}

/// The largest memory cap a module may ask for (also the pool's slot size).
pub const MAX_MEMORY_BYTES: usize = 256 << 20;
/// The most fuel a module may ask for per call.
pub const MAX_FUEL: u64 = 5_000_000_000;
/// Bytes of a pool slot's linear memory kept resident between decisions
/// (1, 2 and 4 MiB measured the same over 1,000 workers: BENCHMARKS.md).
const KEEP_RESIDENT: usize = 2 << 20;

/// What a decision's store holds.
pub(super) struct Ctx {
    limits: StoreLimits,
    /// The null WASI context, for a module that imports WASI.
    pub(super) wasi: Option<Box<NullWasi>>,
}

/// The engines and linkers every policy instance comes from.
pub struct Host {
    /// Pooling allocator; grants the contract's types only.
    engine: Engine,
    linker: Linker<Ctx>,
    /// On-demand allocator; also grants the null WASI context.
    wasi_engine: Engine,
    wasi_linker: Linker<Ctx>,
    /// The last placement's candidates, reused while the fleet's strings
    /// are unchanged.
    reuse: Reuse,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("policy::Host")
    }
}

/// A compiled, validated module, ready to instantiate per decision.
pub struct Compiled {
    pre: InstancePre<Ctx>,
    kind: Kind,
    /// Imports WASI: runs on the wasi engine with a null context.
    wasi: bool,
    /// `admit` and `admit-worker`, type-checked.
    admission: Option<AdmissionIndices>,
    /// `place`, type-checked.
    placement: Option<PlacementIndices>,
    limits: Limits,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("kind", &self.kind)
            .field("wasi", &self.wasi)
            .field("limits", &self.limits)
            .finish()
    }
}

impl Compiled {
    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether the module imports WASI (and so gets the null context).
    pub fn wasi(&self) -> bool {
        self.wasi
    }

    /// The same module with other budgets, without compiling it again.
    pub fn with_limits(&self, limits: Limits) -> Result<Compiled, PolicyError> {
        check_limits(limits)?;
        Ok(Compiled {
            pre: self.pre.clone(),
            kind: self.kind,
            wasi: self.wasi,
            admission: self.admission.clone(),
            placement: self.placement.clone(),
            limits,
        })
    }
}

fn check_limits(limits: Limits) -> Result<(), PolicyError> {
    if limits.memory_bytes > MAX_MEMORY_BYTES || limits.fuel > MAX_FUEL || limits.fuel == 0 {
        return Err(PolicyError::Invalid(format!(
            "limits out of range: fuel 1..={MAX_FUEL}, memory up to {MAX_MEMORY_BYTES} bytes"
        )));
    }
    Ok(())
}

impl Host {
    /// The fast engine (the pooling allocator with `slots` concurrent
    /// instances, nothing granted) and the wasi one (the null WASI context),
    /// both with fuel and the same memory and stack settings.
    pub fn new(slots: u32) -> Result<Self, PolicyError> {
        let engine_err = |e: wasmtime::Error| PolicyError::Engine(format!("{e:#}"));
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(4))
            .total_memories(slots.saturating_mul(2))
            .total_tables(slots.saturating_mul(4))
            .max_memory_size(MAX_MEMORY_BYTES)
            .max_core_instances_per_component(16)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            // A slot's dirty pages are reset with memset, found by the
            // PAGEMAP_SCAN ioctl (Linux 6.7+; else the lowest bytes), and
            // stay mapped: the next decision takes no page faults for them
            // and the reset needs no madvise (and its TLB flush).
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let engine =
            Engine::new(&config(InstanceAllocationStrategy::Pooling(pool))).map_err(engine_err)?;
        let mut linker = Linker::new(&engine);
        linker.instance(TYPES_INSTANCE).map_err(engine_err)?;
        let wasi_engine =
            Engine::new(&config(InstanceAllocationStrategy::OnDemand)).map_err(engine_err)?;
        let mut wasi_linker = Linker::new(&wasi_engine);
        wasi_linker.instance(TYPES_INSTANCE).map_err(engine_err)?;
        wasi::add_to_linker(&mut wasi_linker).map_err(engine_err)?;
        Ok(Self {
            engine,
            linker,
            wasi_engine,
            wasi_linker,
            reuse: Reuse::default(),
        })
    }

    /// Compile and validate a component: it must import nothing but the
    /// contract's types (of this version) and export `admit` +
    /// `admit-worker`, `place`, or all three, with the contract's
    /// signatures. One trial instance is made (within `limits`).
    pub fn compile(&self, bytes: &[u8], limits: Limits) -> Result<Compiled, PolicyError> {
        self.compile_cached(bytes, limits, None)
    }

    /// [`Host::compile`], taking the machine code from `cache` when it
    /// holds this module for this engine (see `policy::cache`), and
    /// leaving it there after a compile that validated.
    pub fn compile_cached(
        &self,
        bytes: &[u8],
        limits: Limits,
        cache: Option<&Cache>,
    ) -> Result<Compiled, PolicyError> {
        check_limits(limits)?;
        let started = Instant::now();
        let wasi = wasi::imports_wasi(bytes)?;
        let engine = match wasi {
            false => &self.engine,
            true => &self.wasi_engine,
        };
        let name = cache.map(|_| cache::name(engine, bytes));
        let hit = cache
            .zip(name.as_deref())
            .and_then(|(c, n)| cache::component(c, engine, n));
        let from_cache = hit.is_some();
        let component = match hit {
            Some(c) => Ok(c),
            None => Component::new(engine, bytes)
                .map_err(|e| PolicyError::Invalid(format!("not a valid component: {e:#}"))),
        };
        let compiled = component.and_then(|component| {
            let compiled = self.validate(&component, wasi, limits)?;
            if let (Some(c), Some(n), false) = (cache, &name, from_cache) {
                match component.serialize() {
                    Ok(artefact) => c.store(n, &artefact),
                    Err(error) => tracing::warn!(%error, "policy not cached: cannot serialise it"),
                }
            }
            Ok(compiled)
        });
        // Cranelift's working memory, the artefact read or written and the
        // trial instance, all freed, stay in glibc's arenas unless handed
        // back (measured, debug build, three tenants uploading and
        // activating the Python example: 427 MB resident without, 381 MB
        // with).
        trim_heap();
        let compiled = compiled?;
        tracing::debug!(kind = ?compiled.kind, wasi, bytes = bytes.len(), from_cache, elapsed = ?started.elapsed(), "policy compiled");
        Ok(compiled)
    }

    /// Check a component against the contract (see [`Host::compile`]).
    fn validate(
        &self,
        component: &Component,
        wasi: bool,
        limits: Limits,
    ) -> Result<Compiled, PolicyError> {
        let (engine, linker) = match wasi {
            false => (&self.engine, &self.linker),
            true => (&self.wasi_engine, &self.wasi_linker),
        };
        bindings::check_version(component, engine)?;
        let pre = linker
            .instantiate_pre(component)
            .map_err(|e| PolicyError::Invalid(format!("imports something not granted: {e:#}")))?;
        let has = |name| component.get_export_index(None, name).is_some();
        let wrong = |what: &str, e: wasmtime::Error| {
            PolicyError::Invalid(format!("`{what}` does not match {CONTRACT}: {e:#}"))
        };
        let admission = (has("admit") && has("admit-worker"))
            .then(|| AdmissionIndices::new(&pre).map_err(|e| wrong("admit", e)))
            .transpose()?;
        let placement = has("place")
            .then(|| PlacementIndices::new(&pre).map_err(|e| wrong("place", e)))
            .transpose()?;
        let kind = match (admission.is_some(), placement.is_some()) {
            (true, true) => Kind::Both,
            (true, false) => Kind::Admission,
            (false, true) => Kind::Placement,
            (false, false) => {
                return Err(PolicyError::Invalid(format!(
                    "implements no {CONTRACT} world: exports neither `admit` and `admit-worker` nor `place`"
                )))
            }
        };
        let compiled = Compiled {
            pre,
            kind,
            wasi,
            admission,
            placement,
            limits,
        };
        // A trial instance: it must instantiate within its limits.
        let (mut store, instance) = self.instance(&compiled)?;
        if let Some(a) = &compiled.admission {
            a.load(&mut store, &instance)
                .map_err(|e| wrong("admit", e))?;
        }
        if let Some(p) = &compiled.placement {
            p.load(&mut store, &instance)
                .map_err(|e| wrong("place", e))?;
        }
        Ok(compiled)
    }

    fn instance(
        &self,
        m: &Compiled,
    ) -> Result<(Store<Ctx>, wasmtime::component::Instance), PolicyError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(m.limits.memory_bytes)
            .trap_on_grow_failure(true)
            .build();
        let ctx = Ctx {
            limits,
            wasi: m.wasi.then(|| Box::new(NullWasi::new())),
        };
        let mut store = Store::new(m.pre.engine(), ctx);
        store.limiter(|ctx| &mut ctx.limits);
        store
            .set_fuel(m.limits.fuel)
            .map_err(|e| PolicyError::Engine(format!("{e:#}")))?;
        let instance = m
            .pre
            .instantiate(&mut store)
            .map_err(|e| failure(&store, m, "instantiate", e))?;
        Ok((store, instance))
    }

    /// Run `admit` in a fresh instance.
    pub fn admit(
        &self,
        m: &Compiled,
        req: &Request,
        plan: &PlanInput,
        usage: &Usage,
    ) -> Result<Admission, PolicyError> {
        let (req, plan, usage) = (req.into(), plan.into(), usage.into());
        let answer = self.admission(m, "admit", |world, store| {
            world.call_admit(store, &req, &plan, usage)
        })?;
        check::admission(answer)
    }

    /// Run `admit-worker` in a fresh instance.
    pub fn admit_worker(
        &self,
        m: &Compiled,
        tenant_id: &str,
        plan: &PlanInput,
        usage: &Usage,
    ) -> Result<Admission, PolicyError> {
        let (plan, usage) = (plan.into(), usage.into());
        let answer = self.admission(m, "admit-worker", |world, store| {
            world.call_admit_worker(store, tenant_id, &plan, usage)
        })?;
        check::admission(answer)
    }

    /// One call of the `admission` world in a fresh instance.
    fn admission(
        &self,
        m: &Compiled,
        call: &'static str,
        run: impl FnOnce(&bindings::AdmissionHost, &mut Store<Ctx>) -> wasmtime::Result<wit::Admission>,
    ) -> Result<wit::Admission, PolicyError> {
        let indices = m.admission.as_ref().ok_or(PolicyError::WrongKind {
            wanted: call,
            kind: m.kind,
        })?;
        let (mut store, instance) = self.instance(m)?;
        let world = indices
            .load(&mut store, &instance)
            .map_err(|e| failure(&store, m, call, e))?;
        let answer = run(&world, &mut store);
        wasi::log_output(&store, call);
        answer.map_err(|e| failure(&store, m, call, e))
    }

    /// Run `place` over every candidate in one call, in a fresh instance,
    /// and check the answer against the candidates.
    pub fn place(
        &self,
        m: &Compiled,
        req: &Request,
        workers: &[WorkerInput],
    ) -> Result<Placement, PolicyError> {
        let indices = m.placement.as_ref().ok_or(PolicyError::WrongKind {
            wanted: "place",
            kind: m.kind,
        })?;
        let candidates = self.reuse.candidates(workers);
        let answer = self.call_place(m, indices, &req.into(), &candidates);
        self.reuse.keep(candidates);
        check::placement(answer?, req, workers)
    }

    fn call_place(
        &self,
        m: &Compiled,
        indices: &PlacementIndices,
        req: &wit::Request,
        candidates: &wire::Candidates,
    ) -> Result<wit::Placement, PolicyError> {
        let (mut store, instance) = self.instance(m)?;
        let world = indices
            .load(&mut store, &instance)
            .map_err(|e| failure(&store, m, "place", e))?;
        let answer = world.call_place(&mut store, req, &candidates.wit);
        wasi::log_output(&store, "place");
        answer.map_err(|e| failure(&store, m, "place", e))
    }

    /// Instantiate only (for the fresh-instance benchmark).
    pub fn fresh_instance(&self, m: &Compiled) -> Result<(), PolicyError> {
        self.instance(m).map(drop)
    }
}

/// Virtual address space reserved per linear memory: the whole 32-bit
/// index space, so Cranelift can drop the explicit bounds check (and its
/// Spectre guard) from every load and store whose static offset fits in
/// the guard: the access traps on the unmapped reservation instead. Only
/// address space: nothing beyond a module's own pages is committed, and
/// growth stays capped by `max_memory_size` and each store's limits. 64
/// slots of two memories reserve 512 GiB of the 128 TiB a 64-bit process
/// has. (With the reservation at the 256 MiB cap instead, every access
/// was bounds-checked: about 10 % of a placement over 1,000 workers.)
const MEMORY_RESERVATION: u64 = 4 << 30;

/// Both engines' settings: fuel, the memory reservation and guard, the
/// stack; only the allocation strategy differs.
fn config(allocation: InstanceAllocationStrategy) -> Config {
    let mut config = Config::new();
    config
        .consume_fuel(true)
        .allocation_strategy(allocation)
        .memory_reservation(MEMORY_RESERVATION)
        .memory_guard_size(64 << 10)
        .max_wasm_stack(1 << 20);
    // A debug build's Cranelift is slow; its tests need correct code, not fast.
    #[cfg(debug_assertions)]
    config.cranelift_opt_level(wasmtime::OptLevel::None);
    config
}

/// Hand the heap's free memory back to the system (glibc keeps what a
/// compile, or an upload's body, freed in its arenas otherwise).
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases free memory of glibc's heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Name what stopped a call: fuel, the memory cap, a trap, or the host.
fn failure(
    store: &Store<Ctx>,
    m: &Compiled,
    call: &'static str,
    e: wasmtime::Error,
) -> PolicyError {
    let detail = format!("{e:#}");
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => PolicyError::OutOfFuel {
            call,
            fuel: m.limits.fuel,
        },
        _ if detail.contains("forcing trap when growing memory")
            || detail.contains("memory allocation") =>
        {
            PolicyError::MemoryCap {
                call,
                cap: m.limits.memory_bytes,
            }
        }
        Some(trap) => {
            let used = m.limits.fuel - store.get_fuel().unwrap_or(0);
            PolicyError::Trap {
                call,
                trap: trap.to_string(),
                detail: format!("{detail} (after {used} fuel)"),
            }
        }
        None => PolicyError::Trap {
            call,
            trap: "error".into(),
            detail,
        },
    }
}
