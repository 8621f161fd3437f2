//! Authorisation: who a request comes from ([`authenticate`]) and whether
//! the route's [`Rule`] lets them act on the object the path, query or
//! body names ([`check`] in the dispatcher, the [`Caller`] methods in
//! handlers that read the object from the body). The dispatcher hands the
//! checked [`Caller`] to the handler as an argument (`crate::router::Call`).
//!
//! Deny by default: the dispatcher reaches a handler only through the
//! route table, every route carries a rule, and a rule allows only what it
//! names. Owners are resolved from the store, never from the client: a
//! container's tenant is its record's, a worker's its enrolment tenant's,
//! a tenant's organisation the tenant record's.
//!
//! What a refusal says (the policy, also in ARCHITECTURE.md):
//! * no or unknown credentials: 401 `unauthorized`;
//! * an object the caller may not even see (another organisation's, or a
//!   tenant a `member` is not assigned): 404 `not_found`, word for word what
//!   a missing object gets, so ids reveal nothing;
//! * an object the caller may see but an operation their role lacks (a
//!   `member` minting a join token, anyone but the operator changing a
//!   fleet worker): 403 `forbidden`.

use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::{HeaderMap, Request};

use crate::auth::{self, TokenKind};
use crate::http::route::{Params, Rule, Target};
use crate::http::{query, ApiError};
use crate::store::{ContainerRecord, Member, Org, Role, StoreError, Tenant, Worker};
use crate::App;

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// The operator: the admin token. May do everything.
    Operator,
    /// A member, by one of their API tokens.
    Member {
        member: Box<Member>,
        token_id: String,
    },
    /// Someone presenting a join token (only `/v1/enroll`).
    JoinToken,
    /// Nobody authenticated by the router: a public route, or the agent's
    /// socket, which authenticates its worker itself. Sees nothing.
    Anonymous,
}

impl Principal {
    /// How the audit log names this principal.
    pub fn label(&self) -> String {
        match self {
            Self::Operator => "operator".into(),
            Self::Member { member, .. } => format!("member:{}", member.id),
            Self::JoinToken => "join-token".into(),
            Self::Anonymous => "anonymous".into(),
        }
    }
}

/// What an authorisation check needs of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// See and use: a member assigned the tenant, or an org admin.
    Use,
    /// Manage: an admin of the owning organisation.
    Admin,
}

/// What the audit entry of a request says about its object, filled in by
/// successful checks (and handlers that create objects).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Note {
    pub tenant_id: Option<String>,
    pub org_id: Option<String>,
    pub target: Option<String>,
}

/// The caller of one request, as the dispatcher authorised it, handed to
/// its handler; its clones share one [`Note`] (the audit middleware holds
/// one, and reads what the handler noted).
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    note: Arc<Mutex<Note>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allow,
    Hidden,
    Forbidden,
}

/// The decision for a principal on an object owned by `org_id` (and
/// `tenant_id`, for tenant-scoped objects).
fn verdict(p: &Principal, org_id: &str, tenant_id: Option<&str>, need: Need) -> Verdict {
    let member = match p {
        Principal::Operator => return Verdict::Allow,
        Principal::JoinToken | Principal::Anonymous => return Verdict::Hidden,
        Principal::Member { member, .. } => member,
    };
    if member.org_id != org_id {
        return Verdict::Hidden;
    }
    if member.role == Role::Admin {
        return Verdict::Allow;
    }
    let sees = tenant_id.is_none_or(|t| member.tenants.iter().any(|m| m == t));
    match (sees, need) {
        (false, _) => Verdict::Hidden,
        (true, Need::Use) => Verdict::Allow,
        (true, Need::Admin) => Verdict::Forbidden,
    }
}

fn refuse(verdict: Verdict, what: &str, id: &str) -> Result<(), ApiError> {
    match verdict {
        Verdict::Allow => Ok(()),
        Verdict::Hidden => Err(ApiError::not_found(format!("{what} {id} not found"))),
        Verdict::Forbidden => Err(ApiError::forbidden(format!(
            "this needs an admin of the organisation owning {what} {id}"
        ))),
    }
}

fn missing(what: &'static str, id: &str) -> ApiError {
    ApiError::from(StoreError::NotFound {
        what,
        id: id.to_owned(),
    })
}

/// Who presents the request's `Authorization: Bearer` token: the operator
/// or a member with a live token. Anything else is 401.
pub async fn authenticate(app: &App, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let token = auth::bearer(headers)
        .map_err(|e| ApiError::unauthorized(e.to_string()))?
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    if auth::constant_time_eq(&auth::hash(token), &app.admin_hash) {
        return Ok(Principal::Operator);
    }
    if !token.starts_with(TokenKind::Member.prefix()) {
        return Err(ApiError::unauthorized("invalid token"));
    }
    let hash = auth::hash_hex(token);
    match app
        .store
        .read_now(move |s| s.member_by_token(&hash))
        .await?
    {
        Some((member, token_id)) => Ok(Principal::Member {
            member: Box::new(member),
            token_id,
        }),
        None => Err(ApiError::unauthorized("invalid or revoked token")),
    }
}

impl Caller {
    pub fn new(principal: Principal) -> Self {
        Self {
            principal,
            note: Arc::default(),
        }
    }

    pub fn is_operator(&self) -> bool {
        self.principal == Principal::Operator
    }

    /// The member behind the request, if it is one.
    pub fn member(&self) -> Option<&Member> {
        match &self.principal {
            Principal::Member { member, .. } => Some(member),
            _ => None,
        }
    }

    /// What the audit entry will say about the object.
    pub fn note(&self) -> Note {
        self.note.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Record the object of this request for its audit entry.
    pub fn noted(&self, tenant_id: Option<&str>, org_id: Option<&str>, target: Option<&str>) {
        let mut note = self.note.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = tenant_id.filter(|t| !t.is_empty()) {
            note.tenant_id = Some(t.to_owned());
        }
        if let Some(o) = org_id.filter(|o| !o.is_empty()) {
            note.org_id = Some(o.to_owned());
        }
        if let Some(t) = target {
            note.target = Some(t.to_owned());
        }
    }

    /// Whether the caller may see and use `tenant` (listings filter by it).
    pub fn sees_tenant(&self, tenant: &Tenant) -> bool {
        verdict(&self.principal, &tenant.org_id, Some(&tenant.id), Need::Use) == Verdict::Allow
    }

    /// Apply a verdict on an object owned by `tenant`/`org`: the audit
    /// entry names the object unless it stays hidden from the caller.
    fn judge(
        &self,
        v: Verdict,
        (what, id): (&str, &str),
        tenant: Option<&str>,
        org: Option<&str>,
    ) -> Result<(), ApiError> {
        if v != Verdict::Hidden {
            self.noted(tenant, org, None);
        }
        refuse(v, what, id)
    }

    /// Refuse anyone but the operator.
    pub fn operator_only(&self) -> Result<(), ApiError> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(ApiError::forbidden("only the operator may do this"))
        }
    }

    /// A tenant the caller may act on with `need`.
    pub async fn tenant(&self, app: &App, id: &str, need: Need) -> Result<Tenant, ApiError> {
        let key = id.to_owned();
        let tenant = app
            .store
            .read_now(move |s| s.get_tenant(&key))
            .await?
            .ok_or_else(|| missing("tenant", id))?;
        let v = verdict(&self.principal, &tenant.org_id, Some(&tenant.id), need);
        self.judge(v, ("tenant", id), Some(&tenant.id), Some(&tenant.org_id))?;
        Ok(tenant)
    }

    /// An organisation the caller may act on with `need`.
    pub async fn org(&self, app: &App, id: &str, need: Need) -> Result<Org, ApiError> {
        let key = id.to_owned();
        let org = app
            .store
            .read_now(move |s| s.get_org(&key))
            .await?
            .ok_or_else(|| missing("organisation", id))?;
        let v = verdict(&self.principal, &org.id, None, need);
        self.judge(v, ("organisation", id), None, Some(&org.id))?;
        Ok(org)
    }

    /// A container record the caller may act on with `need`.
    pub async fn container(
        &self,
        app: &App,
        id: &str,
        need: Need,
    ) -> Result<ContainerRecord, ApiError> {
        let key = id.to_owned();
        let found = app
            .store
            .read_now(move |s| -> Result<_, StoreError> {
                let Some(record) = s.get_container(&key)? else {
                    return Ok(None);
                };
                let tenant = s.get_tenant(&record.tenant_id)?;
                Ok(Some((record, tenant)))
            })
            .await?;
        let Some((record, tenant)) = found else {
            return Err(missing("container", id));
        };
        let org = tenant.map(|t| t.org_id).unwrap_or_default();
        let v = verdict(&self.principal, &org, Some(&record.tenant_id), need);
        self.judge(v, ("container", id), Some(&record.tenant_id), Some(&org))?;
        Ok(record)
    }

    /// A worker the caller may act on with `need`. A fleet worker belongs
    /// to no tenant: members see it listed, but only the operator acts on it.
    pub async fn worker(&self, app: &App, id: &str, need: Need) -> Result<Worker, ApiError> {
        let key = id.to_owned();
        let found = app
            .store
            .read_now(move |s| -> Result<_, StoreError> {
                let Some(worker) = s.get_worker(&key)? else {
                    return Ok(None);
                };
                let tenant = match worker.tenant_scope() {
                    Some(t) => s.get_tenant(t)?,
                    None => None,
                };
                Ok(Some((worker, tenant)))
            })
            .await?;
        let Some((worker, tenant)) = found else {
            return Err(missing("worker", id));
        };
        if self.is_operator() {
            self.noted(tenant.as_ref().map(|t| t.id.as_str()), None, None);
            return Ok(worker);
        }
        let Some(tenant) = tenant.filter(|_| worker.tenant_scope().is_some()) else {
            return Err(ApiError::forbidden(format!(
                "worker {id} is a fleet worker: only the operator may do this"
            )));
        };
        let v = verdict(&self.principal, &tenant.org_id, Some(&tenant.id), need);
        self.judge(v, ("worker", id), Some(&tenant.id), Some(&tenant.org_id))?;
        Ok(worker)
    }

    /// A member the caller may manage (`self_ok`: or who is the caller).
    pub async fn member_record(
        &self,
        app: &App,
        id: &str,
        self_ok: bool,
    ) -> Result<Member, ApiError> {
        let key = id.to_owned();
        let member = app
            .store
            .read_now(move |s| s.get_member(&key))
            .await?
            .ok_or_else(|| missing("member", id))?;
        let is_self = self.member().is_some_and(|m| m.id == member.id);
        if !(self_ok && is_self) {
            // Another member's record: only their organisation's admins.
            let v = verdict(&self.principal, &member.org_id, None, Need::Admin);
            self.judge(v, ("member", id), None, Some(&member.org_id))?;
        }
        self.noted(None, Some(&member.org_id), None);
        Ok(member)
    }
}

/// Check `rule` for the caller on the path and query of `req`. Targets
/// named by the body pass here on the caller's kind and role alone; their
/// handler checks the object.
pub async fn check(
    app: &App,
    caller: &Caller,
    rule: Rule,
    params: &Params,
    req: &Request<Incoming>,
) -> Result<(), ApiError> {
    let (target, need) = match rule {
        Rule::Public | Rule::JoinToken | Rule::Worker | Rule::Peer | Rule::SignedIn => {
            return Ok(())
        }
        Rule::Operator => return caller.operator_only(),
        Rule::OrgAdmin(t) => (t, Need::Admin),
        Rule::OrgMember(t) | Rule::TenantMember(t) => (t, Need::Use),
        Rule::SelfOrOrgAdmin(Target::Member) => {
            caller
                .member_record(app, params.get("memberId"), true)
                .await?;
            return Ok(());
        }
        Rule::SelfOrOrgAdmin(Target::Token) => {
            let id = params.get("tokenId").to_owned();
            let key = id.clone();
            let token = app
                .store
                .read_now(move |s| s.get_member_token(&key))
                .await?
                .ok_or_else(|| missing("token", &id))?;
            let owner = caller.member_record(app, &token.member_id, true).await;
            // Whose token it is stays hidden from those who may not see it.
            return owner.map(drop).map_err(|e| match e {
                ApiError::NotFound { .. } => missing("token", &id),
                other => other,
            });
        }
        Rule::SelfOrOrgAdmin(t) => (t, Need::Admin),
    };
    match target {
        Target::Org => caller.org(app, params.get("orgId"), need).await.map(drop),
        Target::Tenant => caller
            .tenant(app, params.get("tenantId"), need)
            .await
            .map(drop),
        Target::Container => caller
            .container(app, params.get("containerId"), need)
            .await
            .map(drop),
        Target::Worker => caller
            .worker(app, params.get("workerId"), need)
            .await
            .map(drop),
        Target::Member => caller
            .member_record(app, params.get("memberId"), false)
            .await
            .map(drop),
        Target::Token => Err(ApiError::forbidden("no rule for a token target")),
        Target::QueryTenant => {
            let id = query_id(req, "tenantId")?
                .ok_or_else(|| ApiError::bad_request("the tenantId query parameter is required"))?;
            caller.tenant(app, &id, need).await.map(drop)
        }
        Target::AuditQuery => match (query_id(req, "tenantId")?, query_id(req, "orgId")?) {
            (Some(t), None) => caller.tenant(app, &t, need).await.map(drop),
            (None, Some(o)) => caller.org(app, &o, need).await.map(drop),
            (None, None) if caller.is_operator() => Ok(()),
            _ => Err(ApiError::bad_request(
                "give exactly one of the tenantId and orgId query parameters",
            )),
        },
        Target::Body => match caller.member() {
            Some(m) if need == Need::Admin && m.role != Role::Admin => Err(ApiError::forbidden(
                "this needs an admin of the organisation",
            )),
            _ => Ok(()),
        },
    }
}

/// A UUID query parameter, if present; malformed is 400.
pub fn query_id(req: &Request<Incoming>, name: &str) -> Result<Option<String>, ApiError> {
    match query(req, name) {
        None => Ok(None),
        Some(v) if auth::is_uuid(v) => Ok(Some(v.to_owned())),
        Some(_) => Err(ApiError::bad_request(format!(
            "invalid {name}: must be a lowercase UUID"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(role: Role, tenants: &[&str]) -> Principal {
        Principal::Member {
            member: Box::new(Member {
                id: "m".into(),
                org_id: "o1".into(),
                name: "m".into(),
                role,
                tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
                created_at: 0,
            }),
            token_id: "k".into(),
        }
    }

    #[test]
    fn verdicts_follow_org_role_and_assignment() {
        use Verdict::*;
        let admin = member(Role::Admin, &[]);
        let user = member(Role::Member, &["t1"]);
        let op = Principal::Operator;
        let cases = [
            (&op, "o2", Some("t9"), Need::Admin, Allow),
            (&admin, "o1", Some("t2"), Need::Admin, Allow),
            (&admin, "o2", Some("t9"), Need::Use, Hidden),
            (&user, "o1", Some("t1"), Need::Use, Allow),
            (&user, "o1", Some("t1"), Need::Admin, Forbidden),
            (&user, "o1", Some("t2"), Need::Use, Hidden),
            (&user, "o1", Some("t2"), Need::Admin, Hidden),
            (&user, "o1", None, Need::Use, Allow),
            (&user, "o1", None, Need::Admin, Forbidden),
            (&user, "o2", None, Need::Use, Hidden),
            (&Principal::JoinToken, "o1", None, Need::Use, Hidden),
            (&Principal::Anonymous, "o1", None, Need::Use, Hidden),
        ];
        for (p, org, tenant, need, want) in cases {
            assert_eq!(
                verdict(p, org, tenant, need),
                want,
                "{p:?} {org} {tenant:?} {need:?}"
            );
        }
    }
}
