//! Organisations over HTTP, and who-am-I: `GET /v1/me`, `POST|GET
//! /v1/orgs`, `GET /v1/orgs/{id}`, and `GET /v1/tenants/{id}`.
//!
//! The route table's rule has been checked before a handler here runs
//! (`authz::check`); listings show only what the caller may see.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};

use super::check_name;
use super::tenants::TenantView;
use crate::authz::{Caller, Need, Principal};
use crate::http::{json, read_json, ApiError, Resp};
use crate::store::{Member, Org, Role};
use crate::{auth, now_ms, App};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateOrg {
    name: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrgView {
    pub id: String,
    pub name: String,
    pub created_at: u64,
}

impl From<Org> for OrgView {
    fn from(o: Org) -> Self {
        Self {
            id: o.id,
            name: o.name,
            created_at: o.created_at,
        }
    }
}

/// A member as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    pub id: String,
    pub org_id: String,
    pub name: String,
    /// `admin` or `member`.
    pub role: String,
    /// Tenant ids a `member` may use (an `admin` uses every tenant of the org).
    pub tenants: Vec<String>,
    pub created_at: u64,
}

pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Member => "member",
    }
}

impl From<Member> for MemberView {
    fn from(m: Member) -> Self {
        Self {
            role: role_name(m.role).to_owned(),
            id: m.id,
            org_id: m.org_id,
            name: m.name,
            tenants: m.tenants,
            created_at: m.created_at,
        }
    }
}

/// What `GET /v1/me` answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeView {
    /// `operator` or `member`.
    pub principal: String,
    pub member: Option<MemberView>,
    /// The id of the token presented (members only).
    pub token_id: Option<String>,
}

/// `GET /v1/me`.
pub(crate) async fn me(caller: &Caller) -> Result<Resp, ApiError> {
    let view = match &caller.principal {
        Principal::Member { member, token_id } => MeView {
            principal: "member".into(),
            member: Some(MemberView::from(Member::clone(member))),
            token_id: Some(token_id.clone()),
        },
        Principal::Operator => MeView {
            principal: "operator".into(),
            member: None,
            token_id: None,
        },
        // Not a route's caller (the rule is `SignedIn`): nobody to show.
        Principal::JoinToken | Principal::Anonymous => {
            return Err(ApiError::unauthorized(
                "this needs a member's or the operator's token",
            ))
        }
    };
    Ok(json(StatusCode::OK, &view))
}

/// `POST /v1/orgs` (operator).
pub(crate) async fn create(
    app: &App,
    caller: &Caller,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let body: CreateOrg = read_json(req).await?;
    check_name("name", &body.name, 64)?;
    let org = Org {
        id: auth::uuid_v4()?,
        name: body.name,
        created_at: now_ms(),
    };
    let stored = org.clone();
    app.store.call(move |s| s.create_org(&stored)).await?;
    caller.noted(None, Some(&org.id), Some(&format!("org:{}", org.id)));
    tracing::info!(org_id = %org.id, name = %org.name, "organisation created");
    Ok(json(StatusCode::CREATED, &OrgView::from(org)))
}

/// `GET /v1/orgs`: every organisation for the operator, a member's own
/// otherwise (and none for anyone else).
pub(crate) async fn list(app: &App, caller: &Caller) -> Result<Resp, ApiError> {
    let orgs = app.store.call(|s| s.list_orgs()).await?;
    let operator = caller.is_operator();
    let own = caller.member().map(|m| m.org_id.clone());
    let views: Vec<OrgView> = orgs
        .into_iter()
        .filter(|o| operator || own.as_ref() == Some(&o.id))
        .map(OrgView::from)
        .collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "orgs": views })))
}

/// `GET /v1/orgs/{id}`.
pub(crate) async fn get(app: &App, caller: &Caller, id: &str) -> Result<Resp, ApiError> {
    let org = caller.org(app, id, Need::Use).await?;
    Ok(json(StatusCode::OK, &OrgView::from(org)))
}

/// One tenant with what it holds against its plan (`GET /v1/tenants/{id}`).
#[derive(Debug, Serialize)]
struct TenantDetail {
    #[serde(flatten)]
    tenant: TenantView,
    usage: crate::store::TenantUsage,
}

/// `GET /v1/tenants/{id}`.
pub(crate) async fn get_tenant(app: &App, caller: &Caller, id: &str) -> Result<Resp, ApiError> {
    let tenant = caller.tenant(app, id, Need::Use).await?;
    let tid = tenant.id.clone();
    let usage = app.store.call(move |s| s.tenant_usage(&tid)).await?;
    let view = TenantDetail {
        tenant: TenantView::from(tenant),
        usage,
    };
    Ok(json(StatusCode::OK, &view))
}

/// The organisation a new tenant goes into: the one named (the caller must
/// administer it), else the caller's own, else (the operator) `default`.
pub(crate) async fn org_for_new_tenant(
    app: &App,
    caller: &Caller,
    named: Option<&str>,
) -> Result<String, ApiError> {
    if let Some(id) = named {
        if !auth::is_uuid(id) {
            return Err(ApiError::bad_request(
                "invalid orgId: must be a lowercase UUID",
            ));
        }
        return Ok(caller.org(app, id, Need::Admin).await?.id);
    }
    if let Some(member) = caller.member() {
        let id = member.org_id.clone();
        return Ok(caller.org(app, &id, Need::Admin).await?.id);
    }
    caller.operator_only()?;
    Ok(app.store.call(|s| s.default_org_id()).await?)
}
