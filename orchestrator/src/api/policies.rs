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
//!   decisions of its scope (or `?decisionId=ID`: that one decision, 404
//!   when it is not in the scope; inputs as stored in each decision's
//!   explanation) through the candidate, in every role it implements,
//!   without activating it or marking its health, and reports where it
//!   would decide differently, and which recorded decisions do not read
//!   (`unreadable`, with the reason).
//!
//! A slot is `{scope, role, current: {policyId, failMode}, previous,
//! activatedAt}` (`store::ActivePolicy`). Activation, rollback, the restore
//! at start and simulation are the domain's (`scheduling::activation`,
//! `scheduling::simulate`); this module authorises, parses and answers.
//! Until the stored activations are loaded, activations, rollbacks,
//! listings and decisions wait for them (up to `policy::load::WAIT`, then
//! 503 `not_ready`).

use std::collections::HashMap;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};

use crate::authz::{query_id, Caller, Need};
use crate::http::{json, query, read_bytes_limited, ApiError, Resp};
use crate::policy::{Kind, Role, Scope};
use crate::scheduling::activation::{self, label};
use crate::scheduling::{loaded, simulate};
use crate::store::{PolicyRecord, StoreError, MAX_DECISION_PAGE};
use crate::{auth, now_ms, App};

/// Decisions replayed by a simulation when `last` is not given.
const DEFAULT_LAST: usize = 20;

/// Largest component accepted on upload (componentize-py's output, which
/// embeds CPython, is about 18 MB; componentize-js's about 12 MB).
pub const MAX_MODULE: usize = 32 << 20;

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

pub(crate) async fn upload(
    app: &App,
    caller: &Caller,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let tenant_id = query_id(&req, "tenantId")?;
    may_manage(app, caller, tenant_id.as_deref()).await?;
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

pub(crate) async fn list(
    app: &App,
    caller: &Caller,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
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
    caller: &Caller,
    req: Request<Incoming>,
    id: &str,
) -> Result<Resp, ApiError> {
    let record = policy_for(app, caller, id).await?;
    let mode = match query(&req, "failMode") {
        None | Some("closed") => "closed",
        Some("lastGood") => "lastGood",
        Some(_) => return Err(ApiError::bad_request("failMode must be closed or lastGood")),
    };
    let slots = activation::activate(app, &record, mode).await?;
    Ok(json(
        StatusCode::OK,
        &json!({ "scope": record.scope, "policyId": id, "active": slots }),
    ))
}

pub(crate) async fn rollback(app: &App, caller: &Caller, id: &str) -> Result<Resp, ApiError> {
    let record = policy_for(app, caller, id).await?;
    let now = now_ms();
    let active: Vec<Value> = activation::rollback(app, &record, now)
        .await?
        .into_iter()
        .map(|(role, slot)| match slot {
            Some(slot) => serde_json::to_value(&slot).unwrap_or_default(),
            None => json!({
                "scope": record.scope, "role": role, "current": null,
                "previous": [], "activatedAt": now,
            }),
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({ "scope": record.scope, "policyId": id, "active": active }),
    ))
}

/// `POST /v1/policies/{id}/simulate?last=N` or `?decisionId=ID`
/// (`scheduling::simulate`): the
/// findings, with the policy, its module and the roles replayed.
pub(crate) async fn simulate(
    app: &App,
    caller: &Caller,
    req: Request<Incoming>,
    id: &str,
) -> Result<Resp, ApiError> {
    let record = policy_for(app, caller, id).await?;
    let pick = match (query(&req, "last"), query_id(&req, "decisionId")?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give last or decisionId, not both"))
        }
        (None, Some(decision)) => simulate::Pick::One(decision),
        (None, None) => simulate::Pick::Last(DEFAULT_LAST),
        (Some(n), None) => simulate::Pick::Last(
            n.parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_DECISION_PAGE).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(format!("last must be 1..={MAX_DECISION_PAGE}"))
                })?,
        ),
    };
    let module = activation::compiled(app, id).await?;
    let roles = Role::of(module.kind());
    let found = simulate::simulate(app, module, record.tenant_id.clone(), pick).await?;
    let mut answer = serde_json::to_value(&found).unwrap_or_default();
    answer["policyId"] = json!(record.id);
    answer["module"] = json!(label(&record));
    answer["roles"] = json!(roles);
    Ok(json(StatusCode::OK, &answer))
}
