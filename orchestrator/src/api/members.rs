//! Members and their API tokens over HTTP: add, list, read, change role,
//! delete, assign and unassign tenants; mint (shown once), list (without
//! secrets) and revoke tokens.
//!
//! The route's rule has been checked before a handler here runs (an admin
//! of the member's organisation, or for tokens also the member); handlers
//! check what the body names (a tenant must be in the member's organisation).

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};

use super::check_name;
use super::orgs::MemberView;
use crate::auth::{self, TokenKind};
use crate::authz::{Caller, Need};
use crate::http::{json, read_json, ApiError, Resp};
use crate::store::{Member, MemberChange, MemberToken, Role};
use crate::{now_ms, App};

/// The most tenants one request may assign at creation.
const MAX_ASSIGNED: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateMember {
    name: String,
    role: Role,
    #[serde(default)]
    tenants: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateMember {
    role: Role,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateToken {
    #[serde(default)]
    name: Option<String>,
}

/// A token as listed: never its secret.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    pub id: String,
    pub member_id: String,
    pub name: String,
    pub created_at: u64,
    pub revoked_at: Option<u64>,
}

/// A token just minted: the secret, shown this once.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewTokenView {
    #[serde(flatten)]
    pub view: TokenView,
    pub token: String,
}

impl From<MemberToken> for TokenView {
    fn from(t: MemberToken) -> Self {
        Self {
            id: t.id,
            member_id: t.member_id,
            name: t.name,
            created_at: t.created_at,
            revoked_at: t.revoked_at,
        }
    }
}

fn member_json(status: StatusCode, member: Member) -> Resp {
    json(status, &MemberView::from(member))
}

/// `POST /v1/orgs/{orgId}/members`.
pub(crate) async fn create(
    app: &App,
    caller: &Caller,
    req: Request<Incoming>,
    org_id: &str,
) -> Result<Resp, ApiError> {
    let body: CreateMember = read_json(req).await?;
    check_name("name", &body.name, 64)?;
    if body.tenants.len() > MAX_ASSIGNED {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_ASSIGNED} tenants may be assigned at once"
        )));
    }
    if let Some(bad) = body.tenants.iter().find(|t| !auth::is_uuid(t)) {
        return Err(ApiError::bad_request(format!(
            "invalid tenant id {bad:?}: must be a lowercase UUID"
        )));
    }
    let mut tenants = body.tenants;
    tenants.sort();
    tenants.dedup();
    let member = Member {
        id: auth::uuid_v4()?,
        org_id: org_id.to_owned(),
        name: body.name,
        role: body.role,
        tenants,
        created_at: now_ms(),
    };
    let stored = member.clone();
    app.store.call(move |s| s.create_member(&stored)).await?;
    caller.noted(None, Some(org_id), Some(&format!("member:{}", member.id)));
    tracing::info!(member_id = %member.id, org_id, role = ?member.role, "member created");
    Ok(member_json(StatusCode::CREATED, member))
}

/// `GET /v1/orgs/{orgId}/members`.
pub(crate) async fn list(
    app: &App,
    _req: Request<Incoming>,
    org_id: &str,
) -> Result<Resp, ApiError> {
    let key = org_id.to_owned();
    let members = app.store.call(move |s| s.list_members(&key)).await?;
    let views: Vec<MemberView> = members.into_iter().map(MemberView::from).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "members": views }),
    ))
}

/// `GET /v1/members/{id}`.
pub(crate) async fn get(app: &App, caller: &Caller, id: &str) -> Result<Resp, ApiError> {
    let member = caller.member_record(app, id, true).await?;
    Ok(member_json(StatusCode::OK, member))
}

/// `PATCH /v1/members/{id}`: change the role.
pub(crate) async fn update(
    app: &App,
    caller: &Caller,
    req: Request<Incoming>,
    id: &str,
) -> Result<Resp, ApiError> {
    let body: UpdateMember = read_json(req).await?;
    let key = id.to_owned();
    let member = app
        .store
        .call(move |s| s.update_member(&key, MemberChange::Role(body.role)))
        .await?;
    caller.noted(None, None, Some(&format!("member:{id}")));
    tracing::info!(member_id = id, role = ?member.role, "member role changed");
    Ok(member_json(StatusCode::OK, member))
}

/// `DELETE /v1/members/{id}`: the member goes, their tokens are revoked.
pub(crate) async fn delete(app: &App, caller: &Caller, id: &str) -> Result<Resp, ApiError> {
    let key = id.to_owned();
    let member = app
        .store
        .call(move |s| s.delete_member(&key, now_ms()))
        .await?;
    caller.noted(None, None, Some(&format!("member:{id}")));
    tracing::info!(member_id = id, "member deleted; their tokens are revoked");
    Ok(member_json(StatusCode::OK, member))
}

/// `PUT|DELETE /v1/members/{id}/tenants/{tenantId}`. The tenant must be
/// one the caller administers, in the member's organisation.
pub(crate) async fn assign(
    app: &App,
    caller: &Caller,
    id: &str,
    tenant_id: &str,
    on: bool,
) -> Result<Resp, ApiError> {
    let tenant = caller.tenant(app, tenant_id, Need::Admin).await?;
    let key = id.to_owned();
    let change = if on {
        MemberChange::Assign(tenant.id)
    } else {
        MemberChange::Unassign(tenant.id)
    };
    let member = app
        .store
        .call(move |s| s.update_member(&key, change))
        .await?;
    caller.noted(None, None, Some(&format!("member:{id}")));
    tracing::info!(
        member_id = id,
        tenant_id,
        assigned = on,
        "member tenants changed"
    );
    Ok(member_json(StatusCode::OK, member))
}

/// `POST /v1/members/{id}/tokens`: a new token, shown once.
pub(crate) async fn create_token(
    app: &App,
    caller: &Caller,
    req: Request<Incoming>,
    member_id: &str,
) -> Result<Resp, ApiError> {
    let body: CreateToken = read_json(req).await?;
    let name = body.name.unwrap_or_else(|| "api".to_owned());
    check_name("name", &name, 64)?;
    let secret = auth::mint(TokenKind::Member)?;
    let token = MemberToken {
        id: auth::uuid_v4()?,
        member_id: member_id.to_owned(),
        name,
        hash: auth::hash_hex(&secret),
        created_at: now_ms(),
        revoked_at: None,
    };
    let stored = token.clone();
    app.store
        .call(move |s| s.create_member_token(&stored))
        .await?;
    caller.noted(None, None, Some(&format!("token:{}", token.id)));
    tracing::info!(member_id, token_id = %token.id, "member token created");
    let view = NewTokenView {
        view: TokenView::from(token),
        token: secret,
    };
    Ok(json(StatusCode::CREATED, &view))
}

/// `GET /v1/members/{id}/tokens`.
pub(crate) async fn list_tokens(
    app: &App,
    _req: Request<Incoming>,
    member_id: &str,
) -> Result<Resp, ApiError> {
    let key = member_id.to_owned();
    let tokens = app.store.call(move |s| s.list_member_tokens(&key)).await?;
    let views: Vec<TokenView> = tokens.into_iter().map(TokenView::from).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "tokens": views }),
    ))
}

/// `DELETE /v1/tokens/{id}`: refused from this commit on.
pub(crate) async fn revoke_token(app: &App, caller: &Caller, id: &str) -> Result<Resp, ApiError> {
    let key = id.to_owned();
    let token = app
        .store
        .call(move |s| s.revoke_member_token(&key, now_ms()))
        .await?;
    caller.noted(None, None, Some(&format!("token:{id}")));
    tracing::info!(token_id = id, member_id = %token.member_id, "member token revoked");
    Ok(json(StatusCode::OK, &TokenView::from(token)))
}
