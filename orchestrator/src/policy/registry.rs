//! Which module decides for whom, and how a failing one is handled.
//!
//! A decision has a role: `admission` (`admit`, `admit-worker`) or
//! `placement` (`place`). Each scope (global, or one tenant) has one slot
//! per role, so a tenant may run its own plan limits and its own placement
//! side by side. Activating a module fills every slot its world implements
//! (a `policy`-world module takes both), the one it replaces in each
//! becoming that slot's last-good.
//!
//! Lookup per decision: the tenant's slot for the role, else the global
//! one, else the stock default (`plan-limits` for admission,
//! `least-loaded` for placement). Stock policies may also be activated by
//! name (`stock:binpack`).
//!
//! A module whose call fails (trap, fuel, memory, nonsense) marks its slot
//! unhealthy with the error. Its operator chose per slot: `closed` (the
//! decision fails with the error) or `lastGood` (the module active in that
//! slot before it decides instead, or the stock default when there was
//! none; the stored decision says so).
//!
//! The API writes activations to the store first and then here; it holds
//! the scope's [`Policies::activation_lock`] across both, so two
//! activations of one scope cannot leave the registry and the store
//! disagreeing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use serde::Serialize;

use super::cache::Cache;
use super::engine::{Compiled, Host, Limits};
use super::load::Load;
use super::stock;
use super::types::{Admission, Placement, PlanInput, Request, Usage, WorkerInput};
use super::PolicyError;

mod slot;
pub use slot::{FailMode, Role, Scope};

/// A module's health as the last decisions of its slot saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub healthy: bool,
    pub failures: u64,
    pub last_error: Option<String>,
}

/// A labelled module: `global:mine@3`, `stock:binpack`.
pub type Labelled = (String, Arc<Compiled>);

/// What to put into one slot ([`Policies::install`]).
#[derive(Debug, Clone)]
pub struct Installed {
    pub label: String,
    pub module: Arc<Compiled>,
    pub fail_mode: FailMode,
    /// Its last-good: the slot's previous module.
    pub previous: Option<Labelled>,
}

/// One slot as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotStatus {
    pub module: String,
    pub fail_mode: FailMode,
    pub health: Health,
    /// Who stands in under `lastGood` (the stock default when `None`).
    pub last_good: Option<String>,
}

/// The module active in one (scope, role) slot.
struct Slot {
    label: String,
    module: Arc<Compiled>,
    fail_mode: FailMode,
    previous: Option<Labelled>,
    health: Mutex<Health>,
}

/// A decision's outcome with who made it.
#[derive(Debug, Clone)]
pub struct Decided<T> {
    pub value: Result<T, PolicyError>,
    /// `stock:least-loaded`, `global:mine@3`, `tenant:<id>:mine@1`.
    pub module: String,
    /// Set when a failing module's last-good stood in: what failed.
    pub fallback: Option<String>,
}

/// The stock modules, each compiled on first use (a debug build's
/// Cranelift is slow, and most orchestrator starts never place anything).
type StockSet = HashMap<&'static str, OnceLock<Result<Arc<Compiled>, PolicyError>>>;

/// Every compiled module and who it decides for. Shared by the API.
pub struct Policies {
    host: Arc<Host>,
    stock: Arc<StockSet>,
    active: RwLock<HashMap<(Scope, Role), Arc<Slot>>>,
    locks: Mutex<HashMap<Scope, Arc<smol::lock::Mutex<()>>>>,
    /// Compiled uploaded modules on disk (none: every load compiles).
    cache: Option<Arc<Cache>>,
    /// Whether the stored activations are in `active` yet.
    load: Load,
    /// Uploaded modules compiled and still held somewhere, by SHA-256.
    held: Mutex<HashMap<[u8; 32], Weak<Compiled>>>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies").finish_non_exhaustive()
    }
}

impl Policies {
    /// The engine with `slots` pooled instances; the stock policies are
    /// compiled once each, on first use.
    pub fn new(slots: u32) -> Result<Self, PolicyError> {
        let stock = stock::MODULES
            .iter()
            .map(|(name, _)| (*name, OnceLock::new()))
            .collect();
        Ok(Self::with(Arc::new(Host::new(slots)?), Arc::new(stock)))
    }

    fn with(host: Arc<Host>, stock: Arc<StockSet>) -> Self {
        Self {
            host,
            stock,
            active: RwLock::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            cache: None,
            load: Load::default(),
            held: Mutex::new(HashMap::new()),
        }
    }

    /// The same, loading uploaded modules through `cache`.
    pub fn with_cache(mut self, cache: Cache) -> Self {
        self.cache = Some(Arc::new(cache));
        self
    }

    /// The same, making no decision until [`Policies::loaded`] (see
    /// `policy::load`).
    pub fn loading(mut self) -> Self {
        self.load = Load::loading();
        self
    }

    /// The stored activations are installed (`Ok`), or could not be
    /// (`Err`: every decision fails closed with that reason).
    pub fn loaded(&self, result: Result<(), String>) {
        if let Err(error) = &result {
            tracing::error!(%error, "stored policy activations not loaded; decisions fail closed");
        }
        self.load.finish(result);
    }

    /// `Ok` once the stored activations are loaded, waiting up to `bound`;
    /// else why no decision can be made.
    pub async fn until_loaded(&self, bound: std::time::Duration) -> Result<(), PolicyError> {
        self.load.wait(bound).await
    }

    /// Whether the stored activations are loaded (for `/readyz`).
    pub fn load_state(&self) -> Result<(), PolicyError> {
        self.load.check()
    }

    /// Compile an uploaded module with the default limits, through the
    /// cache when there is one. A module of the same bytes still held
    /// (by a slot, or a call under way) is that one: its code is in
    /// memory once however many policies or tenants upload it.
    pub fn compile(&self, bytes: &[u8]) -> Result<Arc<Compiled>, PolicyError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let key: [u8; 32] = digest.as_ref().try_into().unwrap_or_default();
        let held = |m: &HashMap<[u8; 32], Weak<Compiled>>| m.get(&key).and_then(Weak::upgrade);
        if let Some(m) = held(&self.held.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(m);
        }
        let compiled = self
            .host
            .compile_cached(bytes, Limits::default(), self.cache.as_deref())
            .map(Arc::new)?;
        let mut all = self.held.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|_, m| m.strong_count() > 0);
        Ok(held(&all).unwrap_or_else(|| {
            all.insert(key, Arc::downgrade(&compiled));
            compiled
        }))
    }

    /// A fork of one process-wide engine with [`super::DEFAULT_SLOTS`]
    /// instances, so every server in a process (tests start many) compiles
    /// each stock module once.
    pub fn shared() -> Result<Self, PolicyError> {
        static BASE: OnceLock<Result<Policies, PolicyError>> = OnceLock::new();
        match BASE.get_or_init(|| Self::new(super::DEFAULT_SLOTS)) {
            Ok(base) => Ok(base.fork()),
            Err(e) => Err(e.clone()),
        }
    }

    /// The same engine and stock modules with nothing activated.
    pub fn fork(&self) -> Self {
        Self::with(Arc::clone(&self.host), Arc::clone(&self.stock))
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    /// A stock module by name (`least-loaded`, or `stock:least-loaded`).
    pub fn stock(&self, name: &str) -> Option<Arc<Compiled>> {
        self.stock_module(name).ok()
    }

    fn stock_module(&self, name: &str) -> Result<Arc<Compiled>, PolicyError> {
        let name = name.strip_prefix("stock:").unwrap_or(name);
        let (cell, bytes) = self
            .stock
            .get(name)
            .zip(stock::bytes(name))
            .ok_or_else(|| PolicyError::NotFound(format!("stock:{name}")))?;
        cell.get_or_init(|| {
            self.host
                .compile(bytes, Limits::default())
                .map(Arc::new)
                .map_err(|e| PolicyError::Stock(format!("{name}: {e}")))
        })
        .clone()
    }

    /// The lock the API holds across an activation's store write and its
    /// registry update, one per scope.
    pub fn activation_lock(&self, scope: &Scope) -> Arc<smol::lock::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(locks.entry(scope.clone()).or_default())
    }

    /// Make `module` the active one of every role it implements in
    /// `scope`; the module each slot held becomes its last-good.
    pub fn activate(
        &self,
        scope: Scope,
        label: String,
        module: Arc<Compiled>,
        fail_mode: FailMode,
    ) {
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        for role in Role::of(module.kind()) {
            let key = (scope.clone(), role);
            let previous = active
                .get(&key)
                .map(|s| (s.label.clone(), Arc::clone(&s.module)));
            tracing::info!(scope = %scope.key(), %role, module = %label, ?fail_mode, "policy activated");
            active.insert(
                key,
                Arc::new(Slot::new(
                    label.clone(),
                    Arc::clone(&module),
                    fail_mode,
                    previous,
                )),
            );
        }
    }

    /// Fill one slot as stored (`None`: back to the stock default). A
    /// module that does not make `role`'s decision is refused; a last-good
    /// that does not is dropped (the stock default stands in instead).
    pub fn install(
        &self,
        scope: Scope,
        role: Role,
        slot: Option<Installed>,
    ) -> Result<(), PolicyError> {
        let slot = match slot {
            None => None,
            Some(s) if !role.implemented_by(s.module.kind()) => {
                return Err(PolicyError::WrongKind {
                    wanted: match role {
                        Role::Admission => "admit",
                        Role::Placement => "place",
                    },
                    kind: s.module.kind(),
                })
            }
            Some(s) => {
                let previous = s.previous.filter(|(_, m)| role.implemented_by(m.kind()));
                Some(Arc::new(Slot::new(
                    s.label,
                    s.module,
                    s.fail_mode,
                    previous,
                )))
            }
        };
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        match slot {
            Some(slot) => active.insert((scope, role), slot),
            None => active.remove(&(scope, role)),
        };
        Ok(())
    }

    /// Back to the stock defaults for every role of `scope`.
    pub fn deactivate(&self, scope: &Scope) {
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        active.retain(|(s, _), _| s != scope);
    }

    /// One slot's module, fail mode, health and last-good.
    pub fn slot(&self, scope: &Scope, role: Role) -> Option<SlotStatus> {
        let active = self.active.read().unwrap_or_else(|e| e.into_inner());
        active.get(&(scope.clone(), role)).map(|s| SlotStatus {
            module: s.label.clone(),
            fail_mode: s.fail_mode,
            health: s.health.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            last_good: s.previous.as_ref().map(|(l, _)| l.clone()),
        })
    }

    /// The first filled slot of `scope` (placement, then admission): its
    /// label, fail mode and health. For a scope with one module active.
    pub fn status(&self, scope: &Scope) -> Option<(String, FailMode, Health)> {
        [Role::Placement, Role::Admission]
            .into_iter()
            .find_map(|role| self.slot(scope, role))
            .map(|s| (s.module, s.fail_mode, s.health))
    }

    /// Who decides `role` for `tenant_id` now (a slot's label, or the
    /// stock default's).
    pub fn effective(&self, tenant_id: &str, role: Role) -> String {
        self.pick(tenant_id, role).map_or_else(
            || format!("stock:{}", role.stock_default()),
            |s| s.label.clone(),
        )
    }

    /// A module some slot holds (as its current one or its last-good), by
    /// label: what an activation installs need not be compiled again.
    pub fn holding(&self, label: &str) -> Option<Arc<Compiled>> {
        let active = self.active.read().unwrap_or_else(|e| e.into_inner());
        active.values().find_map(|s| {
            if s.label == label {
                return Some(Arc::clone(&s.module));
            }
            s.previous
                .as_ref()
                .filter(|(l, _)| l == label)
                .map(|(_, m)| Arc::clone(m))
        })
    }

    fn pick(&self, tenant_id: &str, role: Role) -> Option<Arc<Slot>> {
        let active = self.active.read().unwrap_or_else(|e| e.into_inner());
        [Scope::Tenant(tenant_id.to_owned()), Scope::Global]
            .into_iter()
            .find_map(|scope| active.get(&(scope, role)))
            .cloned()
    }

    fn run<T>(
        &self,
        tenant_id: &str,
        role: Role,
        call: impl Fn(&Compiled) -> Result<T, PolicyError>,
    ) -> Decided<T> {
        let default = role.stock_default();
        if let Err(error) = self.load.check() {
            return Decided {
                value: Err(error),
                module: "(not loaded)".into(),
                fallback: None,
            };
        }
        let Some(slot) = self.pick(tenant_id, role) else {
            let value = self.stock_module(default).and_then(|m| call(&m));
            return Decided {
                value,
                module: format!("stock:{default}"),
                fallback: None,
            };
        };
        let value = labelled(&slot.label, &slot.module, &call);
        let mut health = slot.health.lock().unwrap_or_else(|e| e.into_inner());
        let error = match value {
            Ok(value) => {
                health.healthy = true;
                return Decided {
                    value: Ok(value),
                    module: slot.label.clone(),
                    fallback: None,
                };
            }
            Err(error) => error,
        };
        health.healthy = false;
        health.failures += 1;
        health.last_error = Some(error.to_string());
        drop(health);
        tracing::warn!(module = %slot.label, %role, code = error.code(), %error, "policy failed; module marked unhealthy");
        if slot.fail_mode == FailMode::Closed {
            return Decided {
                value: Err(error),
                module: slot.label.clone(),
                fallback: None,
            };
        }
        // `install` and `activate` keep only a last-good making this decision.
        let (label, module) = match &slot.previous {
            Some((label, m)) => (label.clone(), Arc::clone(m)),
            None => match self.stock_module(default) {
                Ok(m) => (format!("stock:{default}"), m),
                Err(_) => {
                    return Decided {
                        value: Err(error),
                        module: slot.label.clone(),
                        fallback: None,
                    }
                }
            },
        };
        Decided {
            value: labelled(&label, &module, &call),
            module: label,
            fallback: Some(format!(
                "{} failed ({error}); its last-good decided",
                slot.label
            )),
        }
    }

    /// May `req` start, given the tenant's plan and usage?
    pub fn admit(&self, req: &Request, plan: &PlanInput, usage: &Usage) -> Decided<Admission> {
        self.run(&req.tenant_id, Role::Admission, |m| {
            self.host.admit(m, req, plan, usage)
        })
    }

    /// May the tenant enrol one more self-hosted worker?
    pub fn admit_worker(
        &self,
        tenant_id: &str,
        plan: &PlanInput,
        usage: &Usage,
    ) -> Decided<Admission> {
        self.run(tenant_id, Role::Admission, |m| {
            self.host.admit_worker(m, tenant_id, plan, usage)
        })
    }

    /// Where does `req` run among `workers`?
    pub fn place(&self, req: &Request, workers: &[WorkerInput]) -> Decided<Placement> {
        self.run(&req.tenant_id, Role::Placement, |m| {
            self.host.place(m, req, workers)
        })
    }
}

impl Slot {
    fn new(
        label: String,
        module: Arc<Compiled>,
        fail_mode: FailMode,
        previous: Option<Labelled>,
    ) -> Self {
        Self {
            label,
            module,
            fail_mode,
            previous,
            health: Mutex::new(Health {
                healthy: true,
                ..Health::default()
            }),
        }
    }
}

/// Run `call` on `m`; for a WASI module inside a `policy` span naming it,
/// so the output it writes (logged by the engine) says whose it is.
fn labelled<T>(label: &str, m: &Compiled, call: impl Fn(&Compiled) -> T) -> T {
    if !m.wasi() {
        return call(m);
    }
    let _span = tracing::info_span!("policy", module = %label).entered();
    call(m)
}

#[cfg(test)]
mod tests;
