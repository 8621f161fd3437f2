//! Policy activation: which stored module decides each role (admission,
//! placement) of a scope (global, or one tenant's), kept in the store and
//! installed into the registry (`policy::Policies`).
//!
//! * [`activate`]: a stored policy becomes the current module of every
//!   role its world implements in its scope, leaving the scope's other
//!   role alone.
//! * [`rollback`]: in every role of its scope it is the current module
//!   of, that role's previous entry is current again (or the stock
//!   default when there was none).
//! * [`spawn_restore`]: at start (once the listener accepts: see
//!   `policy::load`), entries stored before roles (one module per scope)
//!   are upgraded into slots, then every slot is installed. Until then no
//!   decision is made (`scheduling::loaded`).
//!
//! An activation or rollback holds its scope's activation lock
//! (`Policies::activation_lock`) from the store write to the registry
//! update, so concurrent ones of one scope leave the registry as the store
//! has it. A module is compiled at most once per call ([`Modules`]), or
//! taken from the registry when a slot holds it already.

use std::collections::HashMap;
use std::sync::Arc;

use super::{loaded, SchedulingError};
use crate::policy::{Compiled, FailMode, Installed, Kind, Role, Scope};
use crate::store::{ActivePolicy, PolicyRecord, StoreError};
use crate::{now_ms, App};

fn scope_of(key: &str) -> Result<Scope, SchedulingError> {
    Scope::from_key(key).ok_or_else(|| SchedulingError::Refused(format!("unknown scope {key}")))
}

/// A stored policy's name in its scope: `scope:name@version`.
pub fn label(p: &PolicyRecord) -> String {
    format!("{}:{}@{}", p.scope, p.name, p.version)
}

/// Compile a stored policy's component on the blocking pool.
pub async fn compiled(app: &App, policy_id: &str) -> Result<Arc<Compiled>, SchedulingError> {
    let key = policy_id.to_owned();
    let bytes = app
        .store
        .call(move |s| s.policy_module(&key))
        .await?
        .ok_or_else(|| SchedulingError::NotFound(format!("policy {policy_id} has no module")))?;
    let policies = Arc::clone(&app.policies);
    smol::unblock(move || policies.compile(&bytes))
        .await
        .map_err(|e| SchedulingError::Refused(format!("policy {policy_id} does not compile: {e}")))
}

/// A stored policy's label and module: the registry's when a slot holds
/// it already, else compiled.
async fn module(app: &App, policy_id: &str) -> Result<(String, Arc<Compiled>), SchedulingError> {
    let key = policy_id.to_owned();
    let record = app
        .store
        .call(move |s| s.get_policy(&key))
        .await?
        .ok_or_else(|| SchedulingError::NotFound(format!("policy {policy_id} not found")))?;
    let label = label(&record);
    let module = match app.policies.holding(&label) {
        Some(m) => m,
        None => compiled(app, policy_id).await?,
    };
    Ok((label, module))
}

/// The modules one activation, rollback or restore loads, by policy id:
/// each compiled at most once (or taken from the registry).
#[derive(Default)]
pub(super) struct Modules(HashMap<String, (String, Arc<Compiled>)>);

impl Modules {
    async fn get(
        &mut self,
        app: &App,
        policy_id: &str,
    ) -> Result<(String, Arc<Compiled>), SchedulingError> {
        if let Some(found) = self.0.get(policy_id) {
            return Ok(found.clone());
        }
        let loaded = module(app, policy_id).await?;
        self.0.insert(policy_id.to_owned(), loaded.clone());
        Ok(loaded)
    }
}

fn fail_mode(s: &str) -> FailMode {
    if s == "lastGood" {
        FailMode::LastGood
    } else {
        FailMode::Closed
    }
}

/// Put one stored slot (and its last-good) into the registry. A last-good
/// that no longer compiles is left out (the stock default stands in).
async fn install(
    app: &App,
    slot: &ActivePolicy,
    modules: &mut Modules,
) -> Result<(), SchedulingError> {
    let scope = scope_of(&slot.scope)?;
    let (label, current) = modules.get(app, &slot.current.policy_id).await?;
    let previous = match slot.previous.last() {
        None => None,
        Some(p) => match modules.get(app, &p.policy_id).await {
            Ok(m) => Some(m),
            Err(error) => {
                tracing::warn!(scope = %slot.scope, role = %slot.role, policy_id = %p.policy_id, %error, "last-good policy not loaded; the stock default stands in");
                None
            }
        },
    };
    let installed = Installed {
        label,
        module: current,
        fail_mode: fail_mode(&slot.current.fail_mode),
        previous,
    };
    app.policies
        .install(scope, slot.role, Some(installed))
        .map_err(|e| SchedulingError::Refused(format!("policy {}: {e}", slot.current.policy_id)))
}

/// Install `slot`; when that fails, its role of the scope goes back to
/// the stock default (as a restart would leave it), and the error stands.
pub(super) async fn install_or_clear(
    app: &App,
    slot: &ActivePolicy,
    modules: &mut Modules,
) -> Result<(), SchedulingError> {
    let result = install(app, slot, modules).await;
    if let Err(error) = &result {
        tracing::error!(scope = %slot.scope, role = %slot.role, %error, "stored policy activation not installed; stock default decides");
        if let Some(scope) = Scope::from_key(&slot.scope) {
            // Clearing a slot cannot fail.
            let _ = app.policies.install(scope, slot.role, None);
        }
    }
    result
}

/// The roles a stored policy's module takes: its compiled world's, or
/// (when it no longer compiles) the world it was uploaded for.
async fn roles_of(app: &App, modules: &mut Modules, policy_id: &str) -> Vec<Role> {
    if let Ok((_, m)) = modules.get(app, policy_id).await {
        return Role::of(m.kind());
    }
    let key = policy_id.to_owned();
    match app.store.call(move |s| s.get_policy(&key)).await {
        Ok(Some(record)) => Kind::parse(&record.kind).map(Role::of).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The policy registry, caching compiled modules under the data directory
/// and making no decision until the stored activations are loaded.
pub async fn registry(
    store: &Arc<crate::store::Store>,
    data_dir: &std::path::Path,
) -> Result<crate::policy::Policies, crate::Error> {
    let mut fresh = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut fresh)
        .map_err(|_| crate::auth::AuthError::Random)?;
    let secret = store.call(move |s| s.policy_cache_secret(&fresh)).await?;
    let cache = crate::policy::cache::Cache::in_data_dir(data_dir, &secret);
    Ok(crate::policy::Policies::shared()?
        .with_cache(cache)
        .loading())
}

/// Restore the stored activations in a task of its own (the listener
/// accepts meanwhile), then mark the registry loaded, or failed with the
/// store's error (decisions then fail closed; `/readyz` says why).
pub fn spawn_restore(app: &Arc<App>) {
    let task_app = Arc::clone(app);
    app.life.spawn(async move {
        let started = std::time::Instant::now();
        let result = restore(&task_app).await.map_err(|e| e.to_string());
        if result.is_ok() {
            tracing::info!(elapsed = ?started.elapsed(), "stored policy activations loaded");
        }
        task_app.policies.loaded(result);
    });
}

/// At start: turn entries stored before roles into slots, then make every
/// stored slot the registry's. A module that no longer compiles leaves its
/// slot on the stock default (logged).
async fn restore(app: &App) -> Result<(), StoreError> {
    let mut modules = Modules::default();
    for old in app.store.call(|s| s.legacy_active()).await? {
        let mut roles = HashMap::new();
        for entry in old.previous.iter().chain([&old.current]) {
            let id = entry.policy_id.clone();
            let of = roles_of(app, &mut modules, &id).await;
            roles.insert(id, of);
        }
        let scope = old.scope.clone();
        let slots = app
            .store
            .call(move |s| {
                s.upgrade_active(&scope, |id| roles.get(id).cloned().unwrap_or_default())
            })
            .await?;
        let roles: Vec<Role> = slots.iter().map(|s| s.role).collect();
        tracing::info!(scope = %old.scope, ?roles, policy_id = %old.current.policy_id, "policy activation stored before roles upgraded");
    }
    for slot in app.store.call(|s| s.active_policies()).await? {
        let _ = install_or_clear(app, &slot, &mut modules).await;
    }
    Ok(())
}

/// Make `record` (a stored policy; the caller may manage its scope) the
/// current module of every role its world implements in its scope, with
/// `fail_mode` (`closed` or `lastGood`): compiled before anything changes
/// (a module that no longer compiles is refused with nothing activated),
/// stored, then installed. The scope's slots it is now current in.
pub async fn activate(
    app: &App,
    record: &PolicyRecord,
    fail_mode: &str,
) -> Result<Vec<ActivePolicy>, SchedulingError> {
    // A restore still under way would install the slots as it read them.
    loaded(app).await?;
    let id = record.id.as_str();
    let mut modules = Modules::default();
    let (_, module) = modules.get(app, id).await?;
    let roles = Role::of(module.kind());
    let scope = scope_of(&record.scope)?;
    let lock = app.policies.activation_lock(&scope);
    let _held = lock.lock().await;
    let (key, mode_s, written) = (id.to_owned(), fail_mode.to_owned(), roles.clone());
    let slots = app
        .store
        .call(move |s| s.activate_policy(&key, &written, &mode_s, now_ms()))
        .await?;
    for slot in &slots {
        install_or_clear(app, slot, &mut modules).await?;
    }
    tracing::info!(policy_id = %id, module = %label(record), ?roles, fail_mode, "policy activated");
    Ok(slots)
}

/// A role a rollback changed: its slot now, or `None` when the stock
/// default decides again.
pub type RolledBack = (Role, Option<ActivePolicy>);

/// Roll `record` back in every role of its scope it is current in
/// ([`SchedulingError::NotActive`] when none), at `now`.
pub async fn rollback(
    app: &App,
    record: &PolicyRecord,
    now: u64,
) -> Result<Vec<RolledBack>, SchedulingError> {
    loaded(app).await?;
    let id = record.id.as_str();
    let scope = scope_of(&record.scope)?;
    let lock = app.policies.activation_lock(&scope);
    let _held = lock.lock().await;
    let key = id.to_owned();
    let done = app
        .store
        .call(move |s| s.rollback_policy(&key, now))
        .await?;
    if done.is_empty() {
        return Err(SchedulingError::NotActive(format!(
            "policy {id} is not the active one of any role of {}",
            record.scope
        )));
    }
    let (mut left, mut modules) = (Vec::new(), Modules::default());
    for r in done {
        match r.active {
            Some(slot) => {
                install_or_clear(app, &slot, &mut modules).await?;
                left.push((r.role, Some(slot)));
            }
            None => {
                // Clearing a slot cannot fail.
                let _ = app.policies.install(scope.clone(), r.role, None);
                left.push((r.role, None));
            }
        }
    }
    tracing::info!(policy_id = %id, module = %label(record), "policy rolled back");
    Ok(left)
}
