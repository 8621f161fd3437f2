//! Policy modules for operators (issue 5, point 5):
//!
//! * `POST /v1/policies?kind=admission|placement&name=N[&tenantId=T]`:
//!   upload a component (`Content-Type: application/wasm`, at most
//!   [`MAX_MODULE`] bytes). Global (no `tenantId`): the operator only; for
//!   a tenant: an admin of its organisation. It is compiled and validated
//!   first (a valid component, importing nothing but the contract's types
//!   and WASI, which gets the null context of `policy::wasi`,
//!   implementing the named world); a refusal is 400 `bad_request` saying
//!   why. Stored as the next version of that name in that scope (201).
//! * `GET /v1/policies[?tenantId=T]`: the versions and the active entries
//!   of the scopes the caller may manage, with the registry's health.
//! * `POST /v1/policies/{id}/activate[?failMode=closed|lastGood]`: the
//!   next decision of its scope uses it; stored, so a restart keeps it.
//! * `POST /v1/policies/{id}/rollback`: the version active before it is
//!   active again (or the stock defaults when there was none); 409 when
//!   it is not the active one.
//! * `POST /v1/policies/{id}/simulate?last=N`: replays the last N recorded
//!   decisions of its scope (inputs as stored in each decision's
//!   explanation) through the candidate, without activating it or marking
//!   its health, and reports where it would decide differently.
//!
//! The registry holds one active module per scope (`policy::registry`):
//! activating a placement module for a scope replaces an admission module
//! active there (decisions it does not implement fall to the global scope,
//! then the stock default).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};

use crate::authz::{query_id, Caller, Need};
use crate::http::{json, query, read_bytes_limited, ApiError, Resp};
use crate::policy::{
    Compiled, FailMode, Limits, PlanInput, Policies, Request as PolicyRequest, Scope, Usage,
    WorkerInput,
};
use crate::store::{ActivePolicy, PolicyRecord, Rollback, MAX_DECISION_PAGE};
use crate::{auth, now_ms, App};

/// Largest component accepted on upload (componentize-py's output, which
/// embeds CPython, is about 18 MB; componentize-js's about 12 MB).
pub const MAX_MODULE: usize = 32 << 20;

/// Decisions replayed by a simulation when `last` is not given.
const DEFAULT_LAST: usize = 20;

fn scope_of(key: &str) -> Option<Scope> {
    match key {
        "global" => Some(Scope::Global),
        other => other
            .strip_prefix("tenant:")
            .map(|t| Scope::Tenant(t.to_owned())),
    }
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
    smol::unblock(move || policies.host().compile(&bytes, Limits::default()))
        .await
        .map(Arc::new)
        .map_err(|e| ApiError::bad_request(format!("policy {policy_id} does not compile: {e}")))
}

fn fail_mode(s: &str) -> FailMode {
    if s == "lastGood" {
        FailMode::LastGood
    } else {
        FailMode::Closed
    }
}

/// Put `active` (and its last-good) into the registry for its scope.
async fn install(app: &App, active: &ActivePolicy) -> Result<(), ApiError> {
    let scope = scope_of(&active.scope)
        .ok_or_else(|| ApiError::bad_request(format!("unknown scope {}", active.scope)))?;
    let mut chain = Vec::new();
    for entry in active.previous.last().into_iter().chain([&active.current]) {
        let key = entry.policy_id.clone();
        let record = app
            .store
            .call(move |s| s.get_policy(&key))
            .await?
            .ok_or_else(|| ApiError::not_found(format!("policy {} not found", entry.policy_id)))?;
        chain.push((
            label(&record),
            compiled(app, &entry.policy_id).await?,
            entry,
        ));
    }
    app.policies.deactivate(&scope);
    for (label, module, entry) in chain {
        app.policies
            .activate(scope.clone(), label, module, fail_mode(&entry.fail_mode));
    }
    Ok(())
}

/// At start: make the stored activations the registry's. A module that no
/// longer compiles leaves its scope on the stock defaults (logged).
pub(crate) async fn restore(app: &App) -> Result<(), crate::store::StoreError> {
    let active = app.store.call(|s| s.active_policies()).await?;
    for a in active {
        if let Err(error) = install(app, &a).await {
            tracing::error!(scope = %a.scope, %error, "stored policy activation not restored; stock defaults decide");
        }
    }
    Ok(())
}

pub(crate) async fn upload(app: &App, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let caller = Caller::of(&req)?;
    let tenant_id = query_id(&req, "tenantId")?;
    may_manage(app, &caller, tenant_id.as_deref()).await?;
    let kind = match query(&req, "kind") {
        Some(k @ ("admission" | "placement")) => k.to_owned(),
        _ => {
            return Err(ApiError::bad_request(
                "the kind query parameter must be admission or placement",
            ))
        }
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
    let compiled = smol::unblock(move || policies.host().compile(&module, Limits::default()))
        .await
        .map_err(|e| ApiError::bad_request(format!("policy module refused: {e}")))?;
    let implements = compiled.kind();
    let fits = if kind == "admission" {
        implements.admits()
    } else {
        implements.places()
    };
    if !fits {
        return Err(ApiError::bad_request(format!(
            "policy module refused: it implements {implements:?}, not the {kind} world"
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
        kind,
        version: 0,
        size_bytes: bytes.len() as u64,
        sha256: auth::hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref()),
        uploaded_at: now_ms(),
    };
    caller.noted(tenant_id.as_deref(), None, Some(&record.id));
    let stored = app
        .store
        .call(move |s| s.put_policy(record, &bytes))
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
    let (records, active) = app
        .store
        .call(|s| Ok::<_, crate::store::StoreError>((s.list_policies()?, s.active_policies()?)))
        .await?;
    let wanted = |scope: &str| match &tenant_id {
        Some(t) => scope == Scope::Tenant(t.clone()).key(),
        None => true,
    };
    let policies: Vec<&PolicyRecord> = records.iter().filter(|p| wanted(&p.scope)).collect();
    let active: Vec<Value> = active
        .iter()
        .filter(|a| wanted(&a.scope))
        .map(|a| {
            let health = scope_of(&a.scope)
                .and_then(|s| app.policies.status(&s))
                .map(|(module, mode, health)| json!({ "module": module, "failMode": mode, "health": health }));
            json!({
                "scope": a.scope,
                "current": a.current,
                "previous": a.previous,
                "activatedAt": a.activated_at,
                "registry": health,
            })
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({ "policies": policies, "active": active }),
    ))
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
    // Compile before anything changes: a module that no longer compiles
    // (an engine upgrade) is refused with nothing activated.
    compiled(app, id).await?;
    let (key, mode_s) = (id.to_owned(), mode.to_owned());
    let active = app
        .store
        .call(move |s| s.activate_policy(&key, &mode_s, now_ms()))
        .await?;
    install(app, &active).await?;
    tracing::info!(policy_id = %id, module = %label(&record), fail_mode = mode, "policy activated");
    Ok(json(StatusCode::OK, &active))
}

pub(crate) async fn rollback(
    app: &App,
    req: Request<Incoming>,
    id: &str,
) -> Result<Resp, ApiError> {
    let caller = Caller::of(&req)?;
    let record = policy_for(app, &caller, id).await?;
    let key = id.to_owned();
    let outcome = app
        .store
        .call(move |s| s.rollback_policy(&key, now_ms()))
        .await?;
    match outcome {
        Rollback::NotActive => Err(ApiError::conflict(format!(
            "policy {id} is not the active one of {}",
            record.scope
        ))),
        Rollback::Restored(active) => {
            install(app, &active).await?;
            Ok(json(StatusCode::OK, &active))
        }
        Rollback::Cleared => {
            if let Some(scope) = scope_of(&record.scope) {
                app.policies.deactivate(&scope);
            }
            Ok(json(
                StatusCode::OK,
                &json!({ "scope": record.scope, "current": null, "previous": [] }),
            ))
        }
    }
}

/// One recorded decision replayed through the candidate.
fn replay(
    policies: &Policies,
    module: &Compiled,
    kind: &str,
    e: &Value,
) -> Option<(&'static str, Value, Value)> {
    let req: PolicyRequest = serde_json::from_value(e["request"].clone()).ok()?;
    if kind == "admission" {
        let plan: PlanInput = serde_json::from_value(e["plan"].clone()).ok()?;
        let usage: Usage = serde_json::from_value(e["usage"].clone()).ok()?;
        let recorded = e["admission"]["result"].clone();
        let candidate = match policies.host().admit(module, &req, &plan, &usage) {
            Ok(a) => serde_json::to_value(a).unwrap_or_default(),
            Err(err) => json!({ "error": err.to_string() }),
        };
        return Some(("admit", recorded, candidate));
    }
    let workers: Vec<WorkerInput> = serde_json::from_value(e["workers"].clone()).ok()?;
    let chosen = |index: Option<u64>| {
        index
            .and_then(|i| workers.get(i as usize))
            .map_or(Value::Null, |w| Value::String(w.id.clone()))
    };
    let recorded = if e["placement"]["result"].is_null() {
        json!({ "error": e["placement"]["error"] })
    } else {
        json!({ "chosenWorkerId": chosen(e["placement"]["result"]["chosen"].as_u64()) })
    };
    let candidate = match policies.host().place(module, &req, &workers) {
        Ok(p) => json!({ "chosenWorkerId": chosen(p.chosen.map(u64::from)), "reason": p.reason }),
        Err(err) => json!({ "error": err.to_string() }),
    };
    Some(("place", recorded, candidate))
}

pub(crate) async fn simulate(
    app: &App,
    req: Request<Incoming>,
    id: &str,
) -> Result<Resp, ApiError> {
    let caller = Caller::of(&req)?;
    let record = policy_for(app, &caller, id).await?;
    let last = match query(&req, "last") {
        None => DEFAULT_LAST,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_DECISION_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("last must be 1..={MAX_DECISION_PAGE}"))
            })?,
    };
    let module = compiled(app, id).await?;
    let tenant = record.tenant_id.clone();
    let decisions = app
        .store
        .call(move |s| {
            let tenants = match tenant {
                Some(t) => vec![t],
                None => s.list_tenants()?.into_iter().map(|t| t.id).collect(),
            };
            let mut all = Vec::new();
            for t in tenants {
                all.extend(s.list_decisions(&t, last)?);
            }
            all.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| b.id.cmp(&a.id)));
            all.truncate(last);
            Ok::<_, crate::store::StoreError>(all)
        })
        .await?;
    let policies = Arc::clone(&app.policies);
    let kind = record.kind.clone();
    let (evaluated, skipped, differences) = smol::unblock(move || {
        let (mut evaluated, mut skipped, mut differences) = (0usize, 0usize, Vec::new());
        for d in &decisions {
            match replay(&policies, &module, &kind, &d.explanation) {
                None => skipped += 1,
                Some((call, recorded, candidate)) => {
                    evaluated += 1;
                    let same = match (&recorded, &candidate) {
                        (r, c) if call == "place" => {
                            r["chosenWorkerId"] == c["chosenWorkerId"]
                                && r.get("error").is_none()
                                && c.get("error").is_none()
                        }
                        (r, c) => r == c,
                    };
                    if !same {
                        differences.push(json!({
                            "decisionId": d.id,
                            "tenantId": d.tenant_id,
                            "at": d.at,
                            "call": call,
                            "recorded": recorded,
                            "candidate": candidate,
                        }));
                    }
                }
            }
        }
        (evaluated, skipped, differences)
    })
    .await;
    Ok(json(
        StatusCode::OK,
        &json!({
            "policyId": record.id,
            "module": label(&record),
            "evaluated": evaluated,
            "skipped": skipped,
            "differing": differences.len(),
            "differences": differences,
        }),
    ))
}
