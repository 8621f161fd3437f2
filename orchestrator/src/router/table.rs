//! The route table: every route of the API in one row (the endpoint's
//! name, method, path pattern, rule, handler and summary), in documentation
//! order; and what the audit middleware needs to know of each endpoint.
//!
//! A row's handler is `|c| <expression>`: `c` is the [`Call`], the
//! expression the route's answer (`Result<Resp, ApiError>`), usually one
//! call of a function of `crate::api`: finding a route's code is one hop.

use super::{Call, Handler, Reply, RouteDef};
use crate::api;
use crate::http::Rule::*;
use crate::http::Target as T;

macro_rules! routes {
    ($( $endpoint:ident = $method:ident $path:literal, $rule:expr,
        |$c:ident| $handler:expr, $summary:literal; )*) => {
        /// The name of each route.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Endpoint { $( $endpoint, )* }

        /// Every route of the API, in documentation order.
        pub static ROUTES: &[RouteDef] = &[ $( RouteDef {
            endpoint: Endpoint::$endpoint,
            method: stringify!($method),
            path: $path,
            rule: $rule,
            handler: {
                #[allow(unused_variables)]
                fn handler($c: Call) -> Reply {
                    Box::pin(async move { $handler })
                }
                handler as Handler
            },
            summary: $summary,
        }, )* ];
    };
}

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

    /// A call on a worker's container whose handler queues its audit
    /// intent itself ([`Call::intent`]), once its own store writes are
    /// done (a create: admission and its record; see `crate::audit`).
    pub fn defers_intent(self) -> bool {
        matches!(self, Self::CreateContainer)
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

/// A change of cordon and drain flags (`None`: unchanged).
fn flags(cordoned: Option<bool>, draining: Option<bool>) -> crate::store::WorkerFlags {
    crate::store::WorkerFlags { cordoned, draining }
}

routes! {
    Healthz = GET "/healthz", Public,
        |c| Ok(crate::health::healthz()),
        "Liveness: the process answers";
    Readyz = GET "/readyz", Public,
        |c| Ok(crate::health::readyz(&c.app).await),
        "Readiness: the store answers and the listener accepts (503 once shutdown begins)";
    Metrics = GET "/metrics", Public,
        |c| Ok(crate::health::metrics(&c.app)),
        "Prometheus metrics (text exposition format 0.0.4)";
    OpenApi = GET "/openapi.json", Public,
        |c| Ok(crate::openapi::response()),
        "This API's OpenAPI 3 document";
    Ui = GET "/ui", Public,
        |c| Ok(crate::web::response(c.route.path)),
        "The dashboard (sign in with an API token)";
    UiFile = GET "/ui/{file}", Public,
        |c| Ok(crate::web::file(c.params.get("file"))),
        "The dashboard's modules and stylesheet";
    DownloadAgent = GET "/download/agent/{arch}", Public,
        |c| crate::downloads::agent(&c.app, c.params.get("arch")).await,
        "The static agent binary for x86_64 or aarch64 (from serve --agent-dir)";
    UiTerminal = GET "/ui/terminal", Public,
        |c| Ok(crate::web::response(c.route.path)),
        "The live terminal page (query container; the token in the fragment)";
    UiTerminalJs = GET "/ui/terminal.js", Public,
        |c| Ok(crate::web::response(c.route.path)),
        "The terminal page's script";
    UiXtermJs = GET "/ui/xterm.js", Public,
        |c| Ok(crate::web::response(c.route.path)),
        "xterm.js, vendored";
    UiXtermCss = GET "/ui/xterm.css", Public,
        |c| Ok(crate::web::response(c.route.path)),
        "xterm.js's stylesheet, vendored";
    UiAddonFitJs = GET "/ui/addon-fit.js", Public,
        |c| Ok(crate::web::response(c.route.path)),
        "xterm.js's fit addon, vendored";
    Me = GET "/v1/me", SignedIn,
        |c| api::orgs::me(&c.caller).await,
        "Who the presented token belongs to";
    CreateOrg = POST "/v1/orgs", Operator,
        |c| api::orgs::create(&c.app, &c.caller, c.req).await,
        "Create an organisation";
    ListOrgs = GET "/v1/orgs", SignedIn,
        |c| api::orgs::list(&c.app, &c.caller).await,
        "Organisations the caller may see";
    GetOrg = GET "/v1/orgs/{orgId}", OrgMember(T::Org),
        |c| api::orgs::get(&c.app, &c.caller, c.params.get("orgId")).await,
        "One organisation";
    CreateMember = POST "/v1/orgs/{orgId}/members", OrgAdmin(T::Org),
        |c| api::members::create(&c.app, &c.caller, c.req, c.params.get("orgId")).await,
        "Add a member";
    ListMembers = GET "/v1/orgs/{orgId}/members", OrgAdmin(T::Org),
        |c| api::members::list(&c.app, c.req, c.params.get("orgId")).await,
        "An organisation's members";
    GetMember = GET "/v1/members/{memberId}", SelfOrOrgAdmin(T::Member),
        |c| api::members::get(&c.app, &c.caller, c.params.get("memberId")).await,
        "One member";
    UpdateMember = PATCH "/v1/members/{memberId}", OrgAdmin(T::Member),
        |c| api::members::update(&c.app, &c.caller, c.req, c.params.get("memberId")).await,
        "Change a member's role";
    DeleteMember = DELETE "/v1/members/{memberId}", OrgAdmin(T::Member),
        |c| api::members::delete(&c.app, &c.caller, c.params.get("memberId")).await,
        "Delete a member and revoke their tokens";
    AssignTenant = PUT "/v1/members/{memberId}/tenants/{tenantId}", OrgAdmin(T::Member),
        |c| api::members::assign(&c.app, &c.caller, c.params.get("memberId"), c.params.get("tenantId"), true).await,
        "Assign a tenant to a member";
    UnassignTenant = DELETE "/v1/members/{memberId}/tenants/{tenantId}", OrgAdmin(T::Member),
        |c| api::members::assign(&c.app, &c.caller, c.params.get("memberId"), c.params.get("tenantId"), false).await,
        "Unassign a tenant";
    CreateToken = POST "/v1/members/{memberId}/tokens", SelfOrOrgAdmin(T::Member),
        |c| api::members::create_token(&c.app, &c.caller, c.req, c.params.get("memberId")).await,
        "Mint an API token (shown once)";
    ListTokens = GET "/v1/members/{memberId}/tokens", SelfOrOrgAdmin(T::Member),
        |c| api::members::list_tokens(&c.app, c.req, c.params.get("memberId")).await,
        "A member's tokens, without secrets";
    RevokeToken = DELETE "/v1/tokens/{tokenId}", SelfOrOrgAdmin(T::Token),
        |c| api::members::revoke_token(&c.app, &c.caller, c.params.get("tokenId")).await,
        "Revoke an API token";
    CreateTenant = POST "/v1/tenants", OrgAdmin(T::Body),
        |c| api::tenants::create_tenant(&c.app, &c.caller, c.req).await,
        "Create a tenant in an organisation";
    ListTenants = GET "/v1/tenants", SignedIn,
        |c| api::tenants::list_tenants(&c.app, &c.caller).await,
        "Tenants the caller may use";
    GetTenant = GET "/v1/tenants/{tenantId}", TenantMember(T::Tenant),
        |c| api::orgs::get_tenant(&c.app, &c.caller, c.params.get("tenantId")).await,
        "One tenant";
    CreateJoinToken = POST "/v1/tenants/{tenantId}/join-tokens", OrgAdmin(T::Tenant),
        |c| api::enrolment::create_join_token(&c.app, c.req, c.params.get("tenantId")).await,
        "Mint a single-use join token";
    SetAllowedDomains = PUT "/v1/tenants/{tenantId}/allowed-domains", OrgAdmin(T::Tenant),
        |c| api::allowlist::set(&c.app, c.req, c.params.get("tenantId")).await,
        "Set a tenant's default egress allow-list";
    SetPlan = PUT "/v1/tenants/{tenantId}/plan", Operator,
        |c| api::plans::set(&c.app, c.req, c.params.get("tenantId")).await,
        "Put a tenant on a stock or custom plan";
    CreateFleetJoinToken = POST "/v1/fleet/join-tokens", Operator,
        |c| api::workers::create_fleet_join_token(&c.app, c.req).await,
        "Mint a join token that enrols a fleet worker";
    Enroll = POST "/v1/enroll", JoinToken,
        |c| api::enrolment::enroll(&c.app, &c.caller, c.req).await,
        "Exchange a join token for a worker credential";
    Agent = GET "/v1/agent", Worker,
        |c| crate::agent_socket::accept(c.app, c.req).await,
        "The agent's WebSocket";
    ListWorkers = GET "/v1/workers", SignedIn,
        |c| api::workers::list_workers(&c.app, &c.caller).await,
        "Workers the caller may see";
    RevokeWorker = POST "/v1/workers/{workerId}/revoke", OrgAdmin(T::Worker),
        |c| api::workers::revoke_worker(&c.app, c.req, c.params.get("workerId")).await,
        "Revoke a worker's credential";
    DeleteWorker = DELETE "/v1/workers/{workerId}", OrgAdmin(T::Worker),
        |c| api::workers::delete(&c.app, c.params.get("workerId")).await,
        "Delete a worker: revoke it, close its socket, keep its record";
    CordonWorker = POST "/v1/workers/{workerId}/cordon", OrgAdmin(T::Worker),
        |c| api::workers::set_flags(&c.app, c.params.get("workerId"), flags(Some(true), None)).await,
        "Place no new containers on a worker";
    UncordonWorker = POST "/v1/workers/{workerId}/uncordon", OrgAdmin(T::Worker),
        |c| api::workers::set_flags(&c.app, c.params.get("workerId"), flags(Some(false), None)).await,
        "Place containers on a worker again";
    DrainWorker = POST "/v1/workers/{workerId}/drain", OrgAdmin(T::Worker),
        |c| api::workers::set_flags(&c.app, c.params.get("workerId"), flags(None, Some(true))).await,
        "Give a worker no new work; running containers stay";
    UndrainWorker = POST "/v1/workers/{workerId}/undrain", OrgAdmin(T::Worker),
        |c| api::workers::set_flags(&c.app, c.params.get("workerId"), flags(None, Some(false))).await,
        "Give a worker new work again";
    RotateWorkerCredential = POST "/v1/workers/{workerId}/rotate-credential", OrgAdmin(T::Worker),
        |c| api::workers::rotate_credential(&c.app, c.params.get("workerId")).await,
        "Rotate a worker's credential over its live connection";
    WorkerContainers = GET "/v1/workers/{workerId}/containers", TenantMember(T::Worker),
        |c| api::images::worker_containers(&c.app, c.req, c.params.get("workerId")).await,
        "Every container on a worker, live";
    WorkerImages = GET "/v1/workers/{workerId}/images", TenantMember(T::Worker),
        |c| api::images::list(&c.app, c.req, c.params.get("workerId")).await,
        "Images on a worker, live";
    BuildImage = POST "/v1/workers/{workerId}/images", TenantMember(T::Body),
        |c| api::images::build(&c.app, &c.caller, c.req, c.params.get("workerId")).await,
        "Build an image on a worker";
    CreateContainer = POST "/v1/containers", TenantMember(T::Body),
        |c| api::containers::create(&c.app, &c.caller, c.req, c.intent).await,
        "Create a container on a worker";
    ListContainers = GET "/v1/containers", TenantMember(T::QueryTenant),
        |c| api::containers::list(&c.app, c.req).await,
        "A tenant's containers";
    GetContainer = GET "/v1/containers/{containerId}", TenantMember(T::Container),
        |c| api::containers::get(&c.app, c.req, c.params.get("containerId")).await,
        "One container";
    RemoveContainer = DELETE "/v1/containers/{containerId}", TenantMember(T::Container),
        |c| api::containers::remove(&c.app, c.req, c.params.get("containerId")).await,
        "Remove a container";
    ContainerSetup = POST "/v1/containers/{containerId}/setup", TenantMember(T::Container),
        |c| api::ops::setup(&c.app, c.req, c.params.get("containerId")).await,
        "Clone a repository, write task files";
    ContainerStart = POST "/v1/containers/{containerId}/start", TenantMember(T::Container),
        |c| api::ops::start(&c.app, c.req, c.params.get("containerId")).await,
        "Start a container";
    ContainerStop = POST "/v1/containers/{containerId}/stop", TenantMember(T::Container),
        |c| api::ops::stop(&c.app, c.req, c.params.get("containerId")).await,
        "Stop a container";
    ContainerExec = POST "/v1/containers/{containerId}/exec", TenantMember(T::Container),
        |c| api::ops::exec(&c.app, c.req, c.params.get("containerId")).await,
        "Run a command to completion";
    ContainerBackground = POST "/v1/containers/{containerId}/background", TenantMember(T::Container),
        |c| api::ops::background(&c.app, c.req, c.params.get("containerId")).await,
        "Start a background command";
    ContainerStats = GET "/v1/containers/{containerId}/stats", TenantMember(T::Container),
        |c| api::ops::stats(&c.app, c.params.get("containerId")).await,
        "A container's resource use";
    ContainerTerminal = GET "/v1/containers/{containerId}/terminal", TenantMember(T::Container),
        |c| crate::terminal::accept(c.app, &c.caller, c.req, c.params.get("containerId")).await,
        "A live terminal in the container: WebSocket upgrade (PROTOCOL.md section 7)";
    BackgroundCapture = GET "/v1/containers/{containerId}/background/{handle}", TenantMember(T::Container),
        |c| api::ops::capture(&c.app, c.req, c.params.get("containerId"), c.params.get("handle")).await,
        "Read a background command's output";
    BackgroundKill = POST "/v1/containers/{containerId}/background/{handle}/kill", TenantMember(T::Container),
        |c| api::ops::kill(&c.app, c.req, c.params.get("containerId"), c.params.get("handle")).await,
        "Kill a background command";
    ListDecisions = GET "/v1/tenants/{tenantId}/decisions", TenantMember(T::Tenant),
        |c| api::decisions::list(&c.app, c.req, c.params.get("tenantId")).await,
        "A tenant's policy decisions, newest first";
    GetDecision = GET "/v1/tenants/{tenantId}/decisions/{decisionId}", TenantMember(T::Tenant),
        |c| api::decisions::get(&c.app, c.params.get("tenantId"), c.params.get("decisionId")).await,
        "One policy decision with its explanation";
    UploadPolicy = POST "/v1/policies", OrgAdmin(T::Body),
        |c| api::policies::upload(&c.app, &c.caller, c.req).await,
        "Upload a policy component (application/wasm; query kind, name, tenantId for a tenant's)";
    ListPolicies = GET "/v1/policies", OrgAdmin(T::Body),
        |c| api::policies::list(&c.app, &c.caller, c.req).await,
        "Uploaded policy versions and what is active (query tenantId for a tenant's)";
    ActivatePolicy = POST "/v1/policies/{policyId}/activate", OrgAdmin(T::Body),
        |c| api::policies::activate(&c.app, &c.caller, c.req, c.params.get("policyId")).await,
        "Make a policy version the active one of its scope";
    RollbackPolicy = POST "/v1/policies/{policyId}/rollback", OrgAdmin(T::Body),
        |c| api::policies::rollback(&c.app, &c.caller, c.params.get("policyId")).await,
        "Back to the version active before this one";
    SimulatePolicy = POST "/v1/policies/{policyId}/simulate", OrgAdmin(T::Body),
        |c| api::policies::simulate(&c.app, &c.caller, c.req, c.params.get("policyId")).await,
        "Replay the last N decisions of the policy's scope and report where it differs";
    Audit = GET "/v1/audit", OrgAdmin(T::AuditQuery),
        |c| api::audit::list(&c.app, c.req).await,
        "The audit log, newest first";
    PeerRelay = POST "/internal/v1/relay", Peer,
        |c| api::peers::relay(&c.app, c.req).await,
        "Between replicas: send a command to a worker whose agent is connected here";
    PeerClose = POST "/internal/v1/close", Peer,
        |c| api::peers::close(&c.app, c.req).await,
        "Between replicas: close a worker's socket here";
    PeerTerminal = GET "/internal/v1/terminal/{containerId}", Peer,
        |c| crate::terminal::accept_carried(c.app, c.req, c.params.get("containerId")).await,
        "Between replicas: a browser's terminal carried to the replica holding the worker's agent (WebSocket upgrade)";
}

#[cfg(test)]
mod tests {
    use hyper::Method;

    use super::super::find;
    use super::*;
    use crate::http::route::{param_name, PARAM_NAMES};
    use crate::http::{ApiError, Params};

    const ID: &str = "0b4f6a0e-3c1d-4e2a-9f00-1234567890ab";

    fn get(path: &str) -> Result<Endpoint, ApiError> {
        find(&Method::GET, path).map(|(d, _)| d.endpoint)
    }

    fn post(path: &str) -> Result<(Endpoint, Params), ApiError> {
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
                    assert!(PARAM_NAMES.contains(&name), "{def:?}: {name}");
                }
            }
        }
    }
}
