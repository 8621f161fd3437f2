//! The route table: every route of the API as data (method, path pattern,
//! the endpoint that answers it, who may call it, a summary), and the
//! matcher that finds a request's route, its path parameters checked.
//!
//! The table is the router: a request reaches a handler only through a
//! [`RouteDef`], and every `RouteDef` carries a [`Rule`], so a route
//! without a rule cannot exist (authorisation denies by default: see
//! `crate::authz`). `/openapi.json` documents exactly these routes (a test
//! compares them).
//!
//! Path parameters are checked here, by name, before any handler runs:
//! `tenantId`, `workerId`, `orgId`, `memberId`, `tokenId`, `decisionId` and
//! `policyId` are the UUIDs
//! we mint; `containerId` and `handle` follow `protocol::validate::id`
//! (a client may choose a container's id). A pattern naming any other
//! parameter matches nothing (a unit test keeps the table honest).

use hyper::Method;

use super::ApiError;

/// What a `POST`/`GET /v1/containers/{id}/<op>` route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerOp {
    Setup,
    Start,
    Stop,
    Exec,
    Background,
    Stats,
}

/// Whose object a rule is about: where the owning tenant or organisation
/// of a request is found. Resolved from the store, never from the client's
/// claims (a container's tenant is its record's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The `orgId` path parameter.
    Org,
    /// The `tenantId` path parameter.
    Tenant,
    /// The `containerId` path parameter: its record's tenant.
    Container,
    /// The `workerId` path parameter: its enrolment tenant (a fleet worker
    /// belongs to no tenant: only the operator passes).
    Worker,
    /// The `memberId` path parameter: the member's organisation.
    Member,
    /// The `tokenId` path parameter: the token's member.
    Token,
    /// The `tenantId` query parameter (required).
    QueryTenant,
    /// The `tenantId` or `orgId` query parameter; the operator may give neither.
    AuditQuery,
    /// The request body names it: the dispatcher checks the principal's
    /// kind and role, the handler checks the object after reading the body.
    Body,
}

/// Who may call a route. Every route has exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone, no credentials.
    Public,
    /// Presents a join token in the body (checked by the handler, in the
    /// same transaction that uses it up).
    JoinToken,
    /// Presents a worker credential (checked before the upgrade).
    Worker,
    /// Only the operator (the admin token).
    Operator,
    /// Any operator or member; the handler shows only what the caller may see.
    SignedIn,
    /// The operator, or an admin of the organisation owning the target.
    OrgAdmin(Target),
    /// The operator, or any member of the target organisation.
    OrgMember(Target),
    /// The operator, an admin of the owning organisation, or a member
    /// assigned to the target's tenant.
    TenantMember(Target),
    /// The operator, an admin of the member's organisation, or the member.
    SelfOrOrgAdmin(Target),
}

impl Rule {
    /// Whether the dispatcher authenticates the caller (a bearer token of
    /// the operator or a member) before the handler runs.
    pub fn needs_principal(self) -> bool {
        !matches!(self, Self::Public | Self::JoinToken | Self::Worker)
    }
}

/// One route: a method on a path pattern (`{name}` segments are parameters).
#[derive(Debug)]
pub struct RouteDef {
    pub endpoint: Endpoint,
    pub method: &'static str,
    pub path: &'static str,
    pub rule: Rule,
    pub summary: &'static str,
}

macro_rules! routes {
    ($( $endpoint:ident = $method:ident $path:literal, $rule:expr, $summary:literal; )*) => {
        /// The handler of each route; `http::dispatch` matches it exhaustively.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Endpoint { $( $endpoint, )* }

        /// Every route of the API, in documentation order.
        pub static ROUTES: &[RouteDef] = &[ $( RouteDef {
            endpoint: Endpoint::$endpoint,
            method: stringify!($method),
            path: $path,
            rule: $rule,
            summary: $summary,
        }, )* ];
    };
}

use Rule::*;
use Target as T;

impl Endpoint {
    /// A mutating call on a worker's container: its effects live on the
    /// worker (whose inventory restores the records after a crash), and it
    /// waits for Podman, so its audit entry goes ahead as an intent
    /// (`crate::audit`).
    pub fn on_worker(self) -> bool {
        matches!(
            self,
            Self::CreateContainer
                | Self::RemoveContainer
                | Self::ContainerSetup
                | Self::ContainerStart
                | Self::ContainerStop
                | Self::ContainerExec
                | Self::ContainerBackground
                | Self::BackgroundKill
        )
    }

    /// A call on a worker's container whose answer reports the state it
    /// wrote to the container's record (create, start, stop, remove): its
    /// answer goes out only once that write is durable (`crate::audit`).
    pub fn settles_record(self) -> bool {
        matches!(
            self,
            Self::CreateContainer
                | Self::RemoveContainer
                | Self::ContainerStart
                | Self::ContainerStop
        )
    }
}

routes! {
    Healthz = GET "/healthz", Public, "Liveness: the process answers";
    Readyz = GET "/readyz", Public, "Readiness: the store answers and the listener accepts (503 once shutdown begins)";
    Metrics = GET "/metrics", Public, "Prometheus metrics (text exposition format 0.0.4)";
    OpenApi = GET "/openapi.json", Public, "This API's OpenAPI 3 document";
    UiTerminal = GET "/ui/terminal", Public, "The live terminal page (query container; the token in the fragment)";
    UiTerminalJs = GET "/ui/terminal.js", Public, "The terminal page's script";
    UiXtermJs = GET "/ui/xterm.js", Public, "xterm.js, vendored";
    UiXtermCss = GET "/ui/xterm.css", Public, "xterm.js's stylesheet, vendored";
    UiAddonFitJs = GET "/ui/addon-fit.js", Public, "xterm.js's fit addon, vendored";
    Me = GET "/v1/me", SignedIn, "Who the presented token belongs to";
    CreateOrg = POST "/v1/orgs", Operator, "Create an organisation";
    ListOrgs = GET "/v1/orgs", SignedIn, "Organisations the caller may see";
    GetOrg = GET "/v1/orgs/{orgId}", OrgMember(T::Org), "One organisation";
    CreateMember = POST "/v1/orgs/{orgId}/members", OrgAdmin(T::Org), "Add a member";
    ListMembers = GET "/v1/orgs/{orgId}/members", OrgAdmin(T::Org), "An organisation's members";
    GetMember = GET "/v1/members/{memberId}", SelfOrOrgAdmin(T::Member), "One member";
    UpdateMember = PATCH "/v1/members/{memberId}", OrgAdmin(T::Member), "Change a member's role";
    DeleteMember = DELETE "/v1/members/{memberId}", OrgAdmin(T::Member), "Delete a member and revoke their tokens";
    AssignTenant = PUT "/v1/members/{memberId}/tenants/{tenantId}", OrgAdmin(T::Member), "Assign a tenant to a member";
    UnassignTenant = DELETE "/v1/members/{memberId}/tenants/{tenantId}", OrgAdmin(T::Member), "Unassign a tenant";
    CreateToken = POST "/v1/members/{memberId}/tokens", SelfOrOrgAdmin(T::Member), "Mint an API token (shown once)";
    ListTokens = GET "/v1/members/{memberId}/tokens", SelfOrOrgAdmin(T::Member), "A member's tokens, without secrets";
    RevokeToken = DELETE "/v1/tokens/{tokenId}", SelfOrOrgAdmin(T::Token), "Revoke an API token";
    CreateTenant = POST "/v1/tenants", OrgAdmin(T::Body), "Create a tenant in an organisation";
    ListTenants = GET "/v1/tenants", SignedIn, "Tenants the caller may use";
    GetTenant = GET "/v1/tenants/{tenantId}", TenantMember(T::Tenant), "One tenant";
    CreateJoinToken = POST "/v1/tenants/{tenantId}/join-tokens", OrgAdmin(T::Tenant), "Mint a single-use join token";
    SetPlan = PUT "/v1/tenants/{tenantId}/plan", Operator, "Put a tenant on a stock or custom plan";
    CreateFleetJoinToken = POST "/v1/fleet/join-tokens", Operator, "Mint a join token that enrols a fleet worker";
    Enroll = POST "/v1/enroll", JoinToken, "Exchange a join token for a worker credential";
    Agent = GET "/v1/agent", Worker, "The agent's WebSocket";
    ListWorkers = GET "/v1/workers", SignedIn, "Workers the caller may see";
    RevokeWorker = POST "/v1/workers/{workerId}/revoke", OrgAdmin(T::Worker), "Revoke a worker's credential";
    DeleteWorker = DELETE "/v1/workers/{workerId}", OrgAdmin(T::Worker), "Delete a worker: revoke it, close its socket, keep its record";
    CordonWorker = POST "/v1/workers/{workerId}/cordon", OrgAdmin(T::Worker), "Place no new containers on a worker";
    UncordonWorker = POST "/v1/workers/{workerId}/uncordon", OrgAdmin(T::Worker), "Place containers on a worker again";
    DrainWorker = POST "/v1/workers/{workerId}/drain", OrgAdmin(T::Worker), "Give a worker no new work; running containers stay";
    UndrainWorker = POST "/v1/workers/{workerId}/undrain", OrgAdmin(T::Worker), "Give a worker new work again";
    RotateWorkerCredential = POST "/v1/workers/{workerId}/rotate-credential", OrgAdmin(T::Worker), "Rotate a worker's credential over its live connection";
    WorkerContainers = GET "/v1/workers/{workerId}/containers", TenantMember(T::Worker), "Every container on a worker, live";
    WorkerImages = GET "/v1/workers/{workerId}/images", TenantMember(T::Worker), "Images on a worker, live";
    BuildImage = POST "/v1/workers/{workerId}/images", TenantMember(T::Body), "Build an image on a worker";
    CreateContainer = POST "/v1/containers", TenantMember(T::Body), "Create a container on a worker";
    ListContainers = GET "/v1/containers", TenantMember(T::QueryTenant), "A tenant's containers";
    GetContainer = GET "/v1/containers/{containerId}", TenantMember(T::Container), "One container";
    RemoveContainer = DELETE "/v1/containers/{containerId}", TenantMember(T::Container), "Remove a container";
    ContainerSetup = POST "/v1/containers/{containerId}/setup", TenantMember(T::Container), "Clone a repository, write task files";
    ContainerStart = POST "/v1/containers/{containerId}/start", TenantMember(T::Container), "Start a container";
    ContainerStop = POST "/v1/containers/{containerId}/stop", TenantMember(T::Container), "Stop a container";
    ContainerExec = POST "/v1/containers/{containerId}/exec", TenantMember(T::Container), "Run a command to completion";
    ContainerBackground = POST "/v1/containers/{containerId}/background", TenantMember(T::Container), "Start a background command";
    ContainerStats = GET "/v1/containers/{containerId}/stats", TenantMember(T::Container), "A container's resource use";
    ContainerTerminal = GET "/v1/containers/{containerId}/terminal", TenantMember(T::Container), "A live terminal in the container: WebSocket upgrade (PROTOCOL.md section 7)";
    BackgroundCapture = GET "/v1/containers/{containerId}/background/{handle}", TenantMember(T::Container), "Read a background command's output";
    BackgroundKill = POST "/v1/containers/{containerId}/background/{handle}/kill", TenantMember(T::Container), "Kill a background command";
    ListDecisions = GET "/v1/tenants/{tenantId}/decisions", TenantMember(T::Tenant), "A tenant's policy decisions, newest first";
    GetDecision = GET "/v1/tenants/{tenantId}/decisions/{decisionId}", TenantMember(T::Tenant), "One policy decision with its explanation";
    UploadPolicy = POST "/v1/policies", OrgAdmin(T::Body), "Upload a policy component (application/wasm; query kind, name, tenantId for a tenant's)";
    ListPolicies = GET "/v1/policies", OrgAdmin(T::Body), "Uploaded policy versions and what is active (query tenantId for a tenant's)";
    ActivatePolicy = POST "/v1/policies/{policyId}/activate", OrgAdmin(T::Body), "Make a policy version the active one of its scope";
    RollbackPolicy = POST "/v1/policies/{policyId}/rollback", OrgAdmin(T::Body), "Back to the version active before this one";
    SimulatePolicy = POST "/v1/policies/{policyId}/simulate", OrgAdmin(T::Body), "Replay the last N decisions of the policy's scope and report where it differs";
    Audit = GET "/v1/audit", OrgAdmin(T::AuditQuery), "The audit log, newest first";
}

/// A matched route's path parameters, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params<'p> {
    pairs: Vec<(&'static str, &'p str)>,
}

impl<'p> Params<'p> {
    /// The parameter `name`; empty if the route has none of that name
    /// (a table bug the route tests catch, never a client's doing).
    pub fn get(&self, name: &str) -> &'p str {
        self.pairs
            .iter()
            .find_map(|(k, v)| (*k == name).then_some(*v))
            .unwrap_or_default()
    }
}

/// The parameter names of a pattern segment, if it is one.
fn param_name(segment: &str) -> Option<&str> {
    segment.strip_prefix('{')?.strip_suffix('}')
}

/// Match `segments` against `pattern`: literal segments equal, parameter
/// segments non-empty. Returns the number of literal segments on a match.
fn matches(pattern: &str, segments: &[&str]) -> Option<usize> {
    let parts: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut literals = 0;
    for (part, seg) in parts.iter().zip(segments) {
        match param_name(part) {
            Some(_) if !seg.is_empty() => {}
            Some(_) => return None,
            None if part == seg => literals += 1,
            None => return None,
        }
    }
    Some(literals)
}

/// Check one path parameter by its name. Unknown names are refused.
pub fn check_param(name: &str, value: &str) -> Result<(), ApiError> {
    match name {
        "tenantId" | "workerId" | "orgId" | "memberId" | "tokenId" | "decisionId" | "policyId" => {
            if crate::auth::is_uuid(value) {
                Ok(())
            } else {
                let what = name.trim_end_matches("Id");
                Err(ApiError::bad_request(format!(
                    "{what} id must be a lowercase UUID"
                )))
            }
        }
        "containerId" => protocol::validate::id("container id", value)
            .map_err(|e| ApiError::bad_request(e.to_string())),
        "handle" => protocol::validate::id("handle", value)
            .map_err(|e| ApiError::bad_request(e.to_string())),
        other => Err(ApiError::not_found(format!("no route parameter {other}"))),
    }
}

/// Find the route of `method` on `path`. Unknown paths are 404, a
/// malformed id 400, a known path with another method 405 (with the
/// methods it answers). The most specific pattern (most literal segments) wins.
pub fn find<'p>(
    method: &Method,
    path: &'p str,
) -> Result<(&'static RouteDef, Params<'p>), ApiError> {
    let segments: Vec<&'p str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let best = ROUTES
        .iter()
        .filter_map(|def| matches(def.path, &segments).map(|n| (n, def.path)))
        .max_by_key(|(n, _)| *n)
        .map(|(_, pattern)| pattern)
        .ok_or_else(|| ApiError::not_found(format!("no route for {path}")))?;
    let mut params = Params::default();
    let parts = best.trim_start_matches('/').split('/');
    for (part, seg) in parts.zip(&segments) {
        if let Some(name) = param_name(part) {
            check_param(name, seg)?;
            let name = ROUTES_PARAM_NAMES
                .iter()
                .copied()
                .find(|n| *n == name)
                .unwrap_or("");
            params.pairs.push((name, seg));
        }
    }
    let same = || ROUTES.iter().filter(move |d| d.path == best);
    let Some(def) = same().find(|d| d.method == method.as_str()) else {
        let allow: Vec<&str> = same().map(|d| d.method).collect();
        return Err(ApiError::MethodNotAllowed {
            method: method.clone(),
            path: path.to_owned(),
            allow: allow.join(", "),
        });
    };
    Ok((def, params))
}

/// Every parameter name a pattern may use (as `'static` keys for [`Params`]).
const ROUTES_PARAM_NAMES: &[&str] = &[
    "tenantId",
    "workerId",
    "orgId",
    "memberId",
    "tokenId",
    "containerId",
    "handle",
    "decisionId",
    "policyId",
];

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b4f6a0e-3c1d-4e2a-9f00-1234567890ab";

    fn get(path: &str) -> Result<Endpoint, ApiError> {
        find(&Method::GET, path).map(|(d, _)| d.endpoint)
    }

    fn post(path: &str) -> Result<(Endpoint, Params<'_>), ApiError> {
        find(&Method::POST, path).map(|(d, p)| (d.endpoint, p))
    }

    #[test]
    fn routes_and_ids() {
        assert_eq!(get("/healthz").unwrap(), Endpoint::Healthz);
        let path = format!("/v1/workers/{ID}/revoke");
        let (endpoint, params) = post(&path).unwrap();
        assert_eq!(endpoint, Endpoint::RevokeWorker);
        assert_eq!(params.get("workerId"), ID);
        for (path, bad) in [
            ("/v1/workers/../revoke", true),
            ("/v1/tenants/x/join-tokens", true),
            ("/v1/tenants/", false),
            ("/nope", false),
            ("//v1/tenants", false),
        ] {
            let err = post(path).unwrap_err();
            assert_eq!(
                matches!(err, ApiError::BadRequest { .. }),
                bad,
                "{path}: {err:?}"
            );
            assert!(
                matches!(err, ApiError::BadRequest { .. } | ApiError::NotFound { .. }),
                "{path}"
            );
        }
    }

    #[test]
    fn container_routes() {
        let (endpoint, params) = post("/v1/containers/job-7/exec").unwrap();
        assert_eq!(endpoint, Endpoint::ContainerExec);
        assert_eq!(params.get("containerId"), "job-7");
        let (endpoint, params) = post("/v1/containers/c1/background/h2/kill").unwrap();
        assert_eq!(endpoint, Endpoint::BackgroundKill);
        assert_eq!(
            (params.get("containerId"), params.get("handle")),
            ("c1", "h2")
        );
        match find(&Method::PUT, "/v1/containers/c1") {
            Err(ApiError::MethodNotAllowed { allow, .. }) => assert_eq!(allow, "GET, DELETE"),
            other => panic!("{other:?}"),
        }
        for path in [
            "/v1/containers/-rf/start",
            "/v1/containers/c1/background/..%2f",
            "/v1/workers/w/images",
        ] {
            assert!(
                matches!(post(path), Err(ApiError::BadRequest { .. })),
                "{path}"
            );
        }
        assert!(matches!(
            post("/v1/containers/c1/reboot"),
            Err(ApiError::NotFound { .. })
        ));
    }

    #[test]
    fn every_pattern_is_well_formed_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for def in ROUTES {
            assert!(def.path.starts_with('/'), "{def:?}");
            assert!(
                ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&def.method),
                "{def:?}"
            );
            assert!(seen.insert((def.method, def.path)), "duplicate {def:?}");
            assert!(!def.summary.is_empty(), "{def:?}");
            for part in def.path.split('/') {
                if let Some(name) = param_name(part) {
                    assert!(ROUTES_PARAM_NAMES.contains(&name), "{def:?}: {name}");
                }
            }
        }
    }
}
