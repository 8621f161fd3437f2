//! Which module decides for whom, and how a failing one is handled.
//!
//! Lookup per decision: the tenant's active module if it implements the
//! decision, else the global one, else the stock default (`plan-limits`
//! for admission, `least-loaded` for placement). Stock policies may also be
//! activated by name (`stock:binpack`).
//!
//! A module whose call fails (trap, fuel, memory, nonsense) is marked
//! unhealthy with the error. Its operator chose per module: `closed` (the
//! decision fails with the error) or `lastGood` (the module active before
//! it decides instead, or the stock default when there was none; the stored
//! decision says so).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use serde::{Deserialize, Serialize};

use super::engine::{Compiled, Host, Limits};
use super::stock;
use super::types::{Admission, Placement, PlanInput, Request, Usage, WorkerInput};
use super::PolicyError;

/// Who a module decides for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "scope", content = "tenantId")]
pub enum Scope {
    Global,
    Tenant(String),
}

impl Scope {
    /// `global` or `tenant:<id>`: the store's key.
    pub fn key(&self) -> String {
        match self {
            Self::Global => "global".into(),
            Self::Tenant(id) => format!("tenant:{id}"),
        }
    }
}

/// What happens to a decision when its module fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailMode {
    /// The decision fails, with the module's error.
    #[default]
    Closed,
    /// The previously active module (or the stock default) decides.
    LastGood,
}

/// A module's health as the last decisions saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub healthy: bool,
    pub failures: u64,
    pub last_error: Option<String>,
}

/// The module active for one scope.
struct Slot {
    label: String,
    module: Arc<Compiled>,
    fail_mode: FailMode,
    previous: Option<(String, Arc<Compiled>)>,
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
    active: RwLock<HashMap<Scope, Arc<Slot>>>,
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
        Ok(Self {
            host: Arc::new(Host::new(slots)?),
            stock: Arc::new(stock),
            active: RwLock::new(HashMap::new()),
        })
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
        Self {
            host: Arc::clone(&self.host),
            stock: Arc::clone(&self.stock),
            active: RwLock::new(HashMap::new()),
        }
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

    /// Make `module` the active one for `scope`; the one it replaces
    /// becomes its last-good.
    pub fn activate(
        &self,
        scope: Scope,
        label: String,
        module: Arc<Compiled>,
        fail_mode: FailMode,
    ) {
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        let previous = active
            .get(&scope)
            .map(|s| (s.label.clone(), Arc::clone(&s.module)));
        tracing::info!(scope = %scope.key(), module = %label, ?fail_mode, "policy activated");
        active.insert(
            scope,
            Arc::new(Slot {
                label,
                module,
                fail_mode,
                previous,
                health: Mutex::new(Health {
                    healthy: true,
                    ..Health::default()
                }),
            }),
        );
    }

    /// Back to the stock defaults for `scope`.
    pub fn deactivate(&self, scope: &Scope) {
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        active.remove(scope);
    }

    /// The active module's label and health for `scope`, if any.
    pub fn status(&self, scope: &Scope) -> Option<(String, FailMode, Health)> {
        let active = self.active.read().unwrap_or_else(|e| e.into_inner());
        active.get(scope).map(|s| {
            let health = s.health.lock().unwrap_or_else(|e| e.into_inner()).clone();
            (s.label.clone(), s.fail_mode, health)
        })
    }

    fn pick(&self, tenant_id: &str, wanted: fn(super::Kind) -> bool) -> Option<Arc<Slot>> {
        let active = self.active.read().unwrap_or_else(|e| e.into_inner());
        [Scope::Tenant(tenant_id.to_owned()), Scope::Global]
            .iter()
            .filter_map(|scope| active.get(scope))
            .find(|slot| wanted(slot.module.kind()))
            .cloned()
    }

    fn run<T>(
        &self,
        tenant_id: &str,
        wanted: fn(super::Kind) -> bool,
        default: &'static str,
        call: impl Fn(&Compiled) -> Result<T, PolicyError>,
    ) -> Decided<T> {
        let Some(slot) = self.pick(tenant_id, wanted) else {
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
        tracing::warn!(module = %slot.label, code = error.code(), %error, "policy failed; module marked unhealthy");
        if slot.fail_mode == FailMode::Closed {
            return Decided {
                value: Err(error),
                module: slot.label.clone(),
                fallback: None,
            };
        }
        let (label, module) = match &slot.previous {
            Some((label, m)) if wanted(m.kind()) => (label.clone(), Arc::clone(m)),
            _ => match self.stock_module(default) {
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
        self.run(
            &req.tenant_id,
            super::Kind::admits,
            stock::DEFAULT_ADMISSION,
            |m| self.host.admit(m, req, plan, usage),
        )
    }

    /// May the tenant enrol one more self-hosted worker?
    pub fn admit_worker(
        &self,
        tenant_id: &str,
        plan: &PlanInput,
        usage: &Usage,
    ) -> Decided<Admission> {
        self.run(
            tenant_id,
            super::Kind::admits,
            stock::DEFAULT_ADMISSION,
            |m| self.host.admit_worker(m, tenant_id, plan, usage),
        )
    }

    /// Where does `req` run among `workers`?
    pub fn place(&self, req: &Request, workers: &[WorkerInput]) -> Decided<Placement> {
        self.run(
            &req.tenant_id,
            super::Kind::places,
            stock::DEFAULT_PLACEMENT,
            |m| self.host.place(m, req, workers),
        )
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
