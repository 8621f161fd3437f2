//! Tenants over HTTP: `POST /v1/tenants` (operator, or an organisation's
//! admin for their organisation) and `GET /v1/tenants` (what the caller
//! may see), and the tenant's JSON view, which carries its plan
//! (`super::plans`).

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};

use super::{check_name, orgs, plans};
use crate::auth;
use crate::authz::Caller;
use crate::http::{json, read_json, ApiError, Resp};
use crate::store::{self, Tenant};
use crate::{now_ms, App};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateTenant {
    name: String,
    /// The owning organisation; default: the caller's (the operator's: `default`).
    #[serde(default)]
    org_id: Option<String>,
    /// The default egress allow-list (`super::allowlist`).
    #[serde(default)]
    allowed_domains: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub created_at: u64,
    pub org_id: String,
    pub plan: plans::PlanView,
    /// The default egress allow-list (`super::allowlist`).
    pub allowed_domains: Vec<String>,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        Self {
            id: t.id,
            name: t.name,
            created_at: t.created_at,
            org_id: t.org_id,
            plan: t.plan.into(),
            allowed_domains: t.allowed_domains,
        }
    }
}

pub(crate) async fn create_tenant(
    app: &App,
    caller: &Caller,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let body: CreateTenant = read_json(req).await?;
    check_name("name", &body.name, 64)?;
    let allowed_domains = protocol::domains::check_list(&body.allowed_domains)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let org_id = orgs::org_for_new_tenant(app, caller, body.org_id.as_deref()).await?;
    let tenant = Tenant {
        id: auth::uuid_v4()?,
        name: body.name,
        created_at: now_ms(),
        org_id,
        plan: store::Plan::default(),
        allowed_domains,
    };
    let stored = tenant.clone();
    app.store.call(move |s| s.create_tenant(&stored)).await?;
    caller.noted(Some(&tenant.id), Some(&tenant.org_id), None);
    tracing::info!(tenant_id = %tenant.id, name = %tenant.name, org_id = %tenant.org_id, "tenant created");
    Ok(json(StatusCode::CREATED, &TenantView::from(tenant)))
}

/// `GET /v1/tenants`: the tenants the caller may see and use.
pub(crate) async fn list_tenants(app: &App, caller: &Caller) -> Result<Resp, ApiError> {
    let tenants = app.store.call(|s| s.list_tenants()).await?;
    let tenants: Vec<TenantView> = tenants
        .into_iter()
        .filter(|t| caller.sees_tenant(t))
        .map(TenantView::from)
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "tenants": tenants }),
    ))
}
