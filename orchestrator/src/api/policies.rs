//! Policy modules for operators (issue 5, point 5):
//!
//! * `POST /v1/policies?kind=admission|placement|policy&name=N[&tenantId=T]`:
//!   upload a component (`Content-Type: application/wasm`, at most
//!   [`MAX_MODULE`] bytes). Global (no `tenantId`): the operator only; for
//!   a tenant: an admin of its organisation. It is compiled and validated
//!   first (a valid component, importing nothing but the contract's types
//!   and WASI, which gets the null context of `policy::wasi`,
//!   implementing at least the named world); a refusal is 400
//!   `bad_request` saying why. Stored as the next version of that name in
//!   that scope (201), with the world it truly implements as its `kind`
//!   (`policy` for a module making both decisions, whatever was named).
//!   Its compiled code goes to the cache (`policy::cache`), so activating
//!   or simulating it later does not compile it again.
//! * `GET /v1/policies[?tenantId=T]`: the versions and the active slots
//!   (one per scope and role) of the scopes the caller may manage, each
//!   with the registry's health; with `tenantId`, also who decides each
//!   role for that tenant now (`effective`).
//! * `POST /v1/policies/{id}/activate[?failMode=closed|lastGood]`: it
//!   becomes the current module of every role its world implements in its
//!   scope (`admission`, `placement`, or both for a `policy`-world module),
//!   leaving the scope's other role alone. Stored, so a restart keeps it.
//!   Answers `{scope, policyId, active: [slot]}`.
//! * `POST /v1/policies/{id}/rollback`: in every role of its scope it is
//!   the current module of, that role's previous entry is current again
//!   (or the stock default when there was none; the slot's `current` is
//!   then null); 409 when it is current in none. Same answer shape.
//! * `POST /v1/policies/{id}/simulate?last=N`: replays the last N recorded
//!   decisions of its scope (inputs as stored in each decision's
//!   explanation) through the candidate, in every role it implements,
//!   without activating it or marking its health, and reports where it
//!   would decide differently.
//!
//! A slot is `{scope, role, current: {policyId, failMode}, previous,
//! activatedAt}` (`store::ActivePolicy`). An activation or rollback holds
//! its scope's activation lock (`Policies::activation_lock`) from the store
//! write to the registry update, so concurrent ones of one scope leave the
//! registry as the store has it. At start, [`spawn_restore`] (once the
//! listener accepts: see `policy::load`) first upgrades entries stored
//! before roles (one module per scope) into slots, then installs every
//! slot. Until it has, activations, rollbacks, listings and
//! decisions wait for it (up to `policy::load::WAIT`, then 503
//! `not_ready`).

use std::collections::HashMap;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};

use crate::authz::{query_id, Caller, Need};
use crate::http::{json, query, read_bytes_limited, ApiError, Resp};
use crate::policy::{Compiled, FailMode, Installed, Kind, Role, Scope};
use crate::store::{ActivePolicy, PolicyRecord, StoreError};
use crate::{auth, now_ms, App};

mod simulate;
pub(crate) use simulate::simulate;

/// Largest component accepted on upload (componentize-py's output, which
/// embeds CPython, is about 18 MB; componentize-js's about 12 MB).
pub const MAX_MODULE: usize = 32 << 20;

fn scope_of(key: &str) -> Result<Scope, ApiError> {
    Scope::from_key(key).ok_or_else(|| ApiError::bad_request(format!("unknown scope {key}")))
}

fn label(p: &PolicyRecord) -> String {
    format!("{}:{}@{}", p.scope, p.name, p.version)
}

/// The caller may manage `scope` (operator for global, org admin for a tenant's).
async fn may_manage(app: &App, caller: &Caller, tenant_id: Option<&str>) -> Result<(), ApiError> {
    match tenant_id {
        Some(t) => caller.tenant(app, t, Need::Admin).await.map(drop),
        None => caller.operator_only(),
    }
}

/// A stored policy the caller may manage (404 when hidden or missing).
async fn policy_for(app: &App, caller: &Caller, id: &str) -> Result<PolicyRecord, ApiError> {
    let key = id.to_owned();
    let found = app.store.call(move |s| s.get_policy(&key)).await?;
    let not_found = || ApiError::not_found(format!("policy {id} not found"));
    let record = found.ok_or_else(not_found)?;
    match may_manage(app, caller, record.tenant_id.as_deref()).await {
        Err(ApiError::NotFound { .. }) => Err(not_found()),
        other => other,
    }?;
    caller.noted(record.tenant_id.as_deref(), None, Some(id));
    Ok(record)
}

/// Compile a stored policy's component on the blocking pool.
async fn compiled(app: &App, policy_id: &str) -> Result<Arc<Compiled>, ApiError> {
    let key = policy_id.to_owned();
    let bytes = app
        .store
        .call(move |s| s.policy_module(&key))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("policy {policy_id} has no module")))?;
    let policies = Arc::clone(&app.policies);
    smol::unblock(move || policies.compile(&bytes))
        .await
        .map_err(|e| ApiError::bad_request(format!("policy {policy_id} does not compile: {e}")))
}

/// A stored policy's label and module: the registry's when a slot holds
/// it already, else compiled.
async fn module(app: &App, policy_id: &str) -> Result<(String, Arc<Compiled>), ApiError> {
    let key = policy_id.to_owned();
    let record = app
        .store
        .call(move |s| s.get_policy(&key))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("policy {policy_id} not found")))?;
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
struct Modules(HashMap<String, (String, Arc<Compiled>)>);

impl Modules {
    async fn get(
        &mut self,
        app: &App,
        policy_id: &str,
    ) -> Result<(String, Arc<Compiled>), ApiError> {
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
async fn install(app: &App, slot: &ActivePolicy, modules: &mut Modules) -> Result<(), ApiError> {
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
        .map_err(|e| ApiError::bad_request(format!("policy {}: {e}", slot.current.policy_id)))
}

/// Install `slot`; when that fails, its role of the scope goes back to
/// the stock default (as a restart would leave it), and the error stands.
async fn install_or_clear(
    app: &App,
    slot: &ActivePolicy,
    modules: &mut Modules,
) -> Result<(), ApiError> {
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
pub(crate) async fn registry(
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

/// Wait (up to `policy::load::WAIT`) until the stored activations are
/// loaded; 503 `not_ready` past that, or when they could not be.
pub(crate) async fn loaded(app: &App) -> Result<(), ApiError> {
    app.policies
        .until_loaded(crate::policy::load::WAIT)
        .await
        .map_err(|e| ApiError::Worker {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "not_ready",
            message: e.to_string(),
        })
}

/// Restore the stored activations in a task of its own (the listener
/// accepts meanwhile), then mark the registry loaded, or failed with the
/// store's error (decisions then fail closed; `/readyz` says why).
pub(crate) fn spawn_restore(app: &Arc<App>) {
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

pub(crate) async fn upload(app: &App, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let caller = Caller::of(&req)?;
    let tenant_id = query_id(&req, "tenantId")?;
    may_manage(app, &caller, tenant_id.as_deref()).await?;
    let Some(wanted) = query(&req, "kind").and_then(Kind::parse) else {
        return Err(ApiError::bad_request(
            "the kind query parameter must be admission, placement or policy",
        ));
    };
    let name = query(&req, "name").unwrap_or_default().to_owned();
    let name_ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !name_ok {
        return Err(ApiError::bad_request(
            "the name query parameter must be 1-64 of a-z, 0-9, - and _",
        ));
    }
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type != "application/wasm" {
        return Err(ApiError::bad_request(format!(
            "the body must be a component with Content-Type: application/wasm, not {content_type:?}"
        )));
    }
    let bytes = read_bytes_limited(req, MAX_MODULE).await?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "the body is empty: send the component",
        ));
    }
    let policies = Arc::clone(&app.policies);
    let module = bytes.clone();
    let compiled = smol::unblock(move || policies.compile(&module))
        .await
        .map_err(|e| ApiError::bad_request(format!("policy module refused: {e}")))?;
    let implements = compiled.kind();
    if !implements.covers(wanted) {
        return Err(ApiError::bad_request(format!(
            "policy module refused: it implements the {} world, not the {} world",
            implements.world(),
            wanted.world()
        )));
    }
    let scope = match &tenant_id {
        Some(t) => Scope::Tenant(t.clone()),
        None => Scope::Global,
    };
    let record = PolicyRecord {
        id: auth::uuid_v4()?,
        scope: scope.key(),
        tenant_id: tenant_id.clone(),
        name,
        kind: implements.world().to_owned(),
        version: 0,
        size_bytes: bytes.len() as u64,
        sha256: auth::hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref()),
        uploaded_at: now_ms(),
    };
    caller.noted(tenant_id.as_deref(), None, Some(&record.id));
    let stored = app
        .store
        .call(move |s| {
            let stored = s.put_policy(record, &bytes);
            // The body's copies, freed: back to the system, not the heap.
            drop(bytes);
            crate::policy::engine::trim_heap();
            stored
        })
        .await?;
    tracing::info!(policy_id = %stored.id, module = %label(&stored), "policy uploaded");
    Ok(json(StatusCode::CREATED, &stored))
}

pub(crate) async fn list(app: &App, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let caller = Caller::of(&req)?;
    let tenant_id = query_id(&req, "tenantId")?;
    if let Some(t) = &tenant_id {
        caller.tenant(app, t, Need::Admin).await?;
    } else {
        caller.operator_only()?;
    }
    // The registry's health and who decides: as loaded, not half-way.
    loaded(app).await?;
    let (records, active) = app
        .store
        .call(|s| Ok::<_, StoreError>((s.list_policies()?, s.active_policies()?)))
        .await?;
    let wanted = |scope: &str| match &tenant_id {
        Some(t) => scope == Scope::Tenant(t.clone()).key(),
        None => true,
    };
    let labels: HashMap<&str, String> = records.iter().map(|p| (p.id.as_str(), label(p))).collect();
    let policies: Vec<&PolicyRecord> = records.iter().filter(|p| wanted(&p.scope)).collect();
    let active: Vec<Value> = active
        .iter()
        .filter(|a| wanted(&a.scope))
        .map(|a| {
            let registry = Scope::from_key(&a.scope).and_then(|s| app.policies.slot(&s, a.role));
            json!({
                "scope": a.scope,
                "role": a.role,
                "module": labels.get(a.current.policy_id.as_str()),
                "current": a.current,
                "previous": a.previous,
                "activatedAt": a.activated_at,
                "registry": registry,
            })
        })
        .collect();
    let mut answer = json!({ "policies": policies, "active": active });
    if let Some(t) = &tenant_id {
        let effective: serde_json::Map<String, Value> = Role::ALL
            .into_iter()
            .map(|r| (r.to_string(), Value::String(app.policies.effective(t, r))))
            .collect();
        answer["effective"] = Value::Object(effective);
    }
    Ok(json(StatusCode::OK, &answer))
}

pub(crate) async fn activate(
    app: &App,
    req: Request<Incoming>,
    id: &str,
) -> Result<Resp, ApiError> {
    let caller = Caller::of(&req)?;
    let record = policy_for(app, &caller, id).await?;
    let mode = match query(&req, "failMode") {
        None | Some("closed") => "closed",
        Some("lastGood") => "lastGood",
        Some(_) => return Err(ApiError::bad_request("failMode must be closed or lastGood")),
    };
    // A restore still under way would install the slots as it read them.
    loaded(app).await?;
    // Compile before anything changes: a module that no longer compiles
    // (an engine upgrade) is refused with nothing activated.
    let mut modules = Modules::default();
    let (_, module) = modules.get(app, id).await?;
    let roles = Role::of(module.kind());
    let scope = scope_of(&record.scope)?;
    let lock = app.policies.activation_lock(&scope);
    let _held = lock.lock().await;
    let (key, mode_s, written) = (id.to_owned(), mode.to_owned(), roles.clone());
    let slots = app
        .store
        .call(move |s| s.activate_policy(&key, &written, &mode_s, now_ms()))
        .await?;
    for slot in &slots {
        install_or_clear(app, slot, &mut modules).await?;
    }
    tracing::info!(policy_id = %id, module = %label(&record), ?roles, fail_mode = mode, "policy activated");
    Ok(json(
        StatusCode::OK,
        &json!({ "scope": record.scope, "policyId": id, "active": slots }),
    ))
}

pub(crate) async fn rollback(
    app: &App,
    req: Request<Incoming>,
    id: &str,
) -> Result<Resp, ApiError> {
    let caller = Caller::of(&req)?;
    let record = policy_for(app, &caller, id).await?;
    loaded(app).await?;
    let scope = scope_of(&record.scope)?;
    let lock = app.policies.activation_lock(&scope);
    let _held = lock.lock().await;
    let key = id.to_owned();
    let now = now_ms();
    let done = app
        .store
        .call(move |s| s.rollback_policy(&key, now))
        .await?;
    if done.is_empty() {
        return Err(ApiError::conflict(format!(
            "policy {id} is not the active one of any role of {}",
            record.scope
        )));
    }
    let (mut active, mut modules) = (Vec::new(), Modules::default());
    for r in done {
        match r.active {
            Some(slot) => {
                install_or_clear(app, &slot, &mut modules).await?;
                active.push(serde_json::to_value(&slot).unwrap_or_default());
            }
            None => {
                // Clearing a slot cannot fail.
                let _ = app.policies.install(scope.clone(), r.role, None);
                active.push(json!({
                    "scope": record.scope, "role": r.role, "current": null,
                    "previous": [], "activatedAt": now,
                }));
            }
        }
    }
    tracing::info!(policy_id = %id, module = %label(&record), "policy rolled back");
    Ok(json(
        StatusCode::OK,
        &json!({ "scope": record.scope, "policyId": id, "active": active }),
    ))
}
