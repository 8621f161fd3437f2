//! The API's router: one table ([`ROUTES`], in `router/table.rs`) whose
//! every row names a route's method, path pattern, rule (who may call it),
//! handler and summary, and the one way into a handler: [`handle`] finds
//! the request's row, authenticates and authorises the caller by its rule,
//! and calls its handler with a [`Call`] (which carries that caller as a
//! value: no handler reads it from the request), wrapped in the audit
//! middleware (`router/audited.rs`) that appends the entry of every
//! mutating call.
//!
//! The table is the router: a request reaches a handler only through a
//! [`RouteDef`], and every `RouteDef` carries a [`Rule`], so a route
//! without a rule cannot exist (authorisation denies by default: see
//! `crate::authz`). `/openapi.json` documents exactly these routes (a test
//! compares them). Matching and the HTTP plumbing are `crate::http`'s,
//! which knows no handler.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request};

use crate::authz::{Caller, Principal};
use crate::http::route::Pattern;
use crate::http::{ApiError, Params, Resp, Rule};
use crate::App;

mod audited;
mod table;

pub use table::{Endpoint, ROUTES};

/// What a handler gets: the request, its checked path parameters, the
/// caller its route's rule admitted and the route it came by.
pub struct Call {
    pub(crate) app: Arc<App>,
    pub(crate) req: Request<Incoming>,
    pub(crate) params: Params,
    /// Who calls, authenticated and authorised by the route's rule
    /// ([`Principal::Anonymous`] on a public route and the agent's socket,
    /// which authenticates its worker itself). The audit middleware holds a
    /// clone: what the handler notes on it goes into the call's entry.
    pub(crate) caller: Caller,
    pub(crate) route: &'static RouteDef,
    /// For a route whose handler queues its audit intent itself
    /// ([`Endpoint::defers_intent`]: a create), the intent to queue once
    /// its own store writes are done (`crate::audit`); `None` otherwise.
    pub(crate) intent: Option<crate::audit::Deferred>,
}

/// A handler's answer, to be awaited.
pub type Reply = Pin<Box<dyn Future<Output = Result<Resp, ApiError>> + Send>>;

/// Every handler's signature (the table's rows adapt the functions of
/// `crate::api` and friends to it).
pub type Handler = fn(Call) -> Reply;

/// One route: a method on a path pattern (`{name}` segments are parameters).
#[derive(Debug)]
pub struct RouteDef {
    pub endpoint: Endpoint,
    pub method: &'static str,
    pub path: &'static str,
    pub rule: Rule,
    pub handler: Handler,
    pub summary: &'static str,
}

impl Pattern for RouteDef {
    fn method(&self) -> &'static str {
        self.method
    }

    fn path(&self) -> &'static str {
        self.path
    }
}

impl RouteDef {
    /// How the audit log names this route.
    pub fn audit_route(&self) -> crate::audit::Route {
        crate::audit::Route {
            method: self.method,
            path: self.path,
        }
    }
}

/// Find the route of `method` on `path` (see [`crate::http::route::find`]).
pub fn find(method: &Method, path: &str) -> Result<(&'static RouteDef, Params), ApiError> {
    crate::http::route::find(ROUTES, method, path)
}

/// Answer one request: route it, authorise it, call the handler, and
/// append the audit entry of a mutating call before answering.
pub(crate) async fn handle(app: Arc<App>, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut audit = audited::Slot::new(&app, &path);
    let result = dispatch(Arc::clone(&app), req, &method, &path, &mut audit).await;
    let resp = audit.answer(result).await;
    let route = find(&method, &path).ok().map(|(def, _)| def.path);
    app.metrics
        .http_request(route, &method, resp.status().as_u16());
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "request");
    resp
}

/// Find the route, authenticate and authorise by its rule, then call its
/// handler. Only the route table leads to a handler (deny by default).
async fn dispatch(
    app: Arc<App>,
    mut req: Request<Incoming>,
    method: &Method,
    path: &str,
    audit: &mut audited::Slot,
) -> Result<Resp, ApiError> {
    let (def, params) = find(method, path)?;
    if def.endpoint == Endpoint::ContainerTerminal {
        bearer_from_subprotocol(&mut req);
    }
    let principal = match def.rule {
        Rule::Public | Rule::Worker => Principal::Anonymous,
        Rule::JoinToken => Principal::JoinToken,
        Rule::Peer => {
            crate::peer::authenticate(&app, req.headers())?;
            crate::connections::authenticated(&req);
            Principal::Anonymous
        }
        _ => {
            let verifying = crate::connections::verifying(&req);
            let principal = crate::authz::authenticate(&app, req.headers()).await?;
            drop(verifying);
            crate::connections::authenticated(&req);
            principal
        }
    };
    let caller = Caller::new(principal);
    let mut intent = None;
    if caller.principal != Principal::Anonymous {
        if method != Method::GET {
            audit.mutating(def, &caller);
        }
        crate::authz::check(&app, &caller, def.rule, &params, &req).await?;
        intent = audit.authorised().await?;
    }
    let call = Call {
        app,
        req,
        params,
        caller,
        route: def,
        intent,
    };
    (def.handler)(call).await
}

/// A browser cannot set headers on a WebSocket: it offers its token as the
/// subprotocol `bearer.<token>`, which stands in for a missing
/// `Authorization` header (a header, when present, wins).
fn bearer_from_subprotocol(req: &mut Request<Incoming>) {
    if req.headers().contains_key(hyper::header::AUTHORIZATION) {
        return;
    }
    let Some(token) = crate::terminal::subprotocol_bearer(req.headers()) else {
        return;
    };
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
        req.headers_mut()
            .insert(hyper::header::AUTHORIZATION, value);
    }
}

#[cfg(test)]
mod tests {
    /// The HTTP plumbing knows no handler, nor the router that calls them:
    /// nothing in `http` names a module that answers a route.
    #[test]
    fn http_knows_no_handler() {
        let sources = [
            ("http.rs", include_str!("http.rs")),
            ("http/route.rs", include_str!("http/route.rs")),
        ];
        let handlers = [
            "api",
            "router",
            "audit",
            "authz",
            "health",
            "openapi",
            "web",
            "terminal",
            "agent_socket",
            "hub",
        ];
        for (file, source) in sources {
            for module in handlers {
                let named = format!("crate::{module}::");
                let code = source.lines().filter(|l| !l.trim_start().starts_with("//"));
                let uses: Vec<&str> = code.filter(|l| l.contains(&named)).collect();
                assert!(uses.is_empty(), "{file} uses {named}: {uses:?}");
            }
        }
    }

    /// The caller reaches a handler as a value of its [`super::Call`],
    /// never through the request's extensions: neither the dispatcher, nor
    /// authorisation, nor any handler module touches them (test code aside).
    #[test]
    fn the_caller_is_an_argument() {
        let sources = [
            ("router.rs", include_str!("router.rs")),
            ("router/table.rs", include_str!("router/table.rs")),
            ("router/audited.rs", include_str!("router/audited.rs")),
            ("authz.rs", include_str!("authz.rs")),
            ("api.rs", include_str!("api.rs")),
            ("api/audit.rs", include_str!("api/audit.rs")),
            ("api/containers.rs", include_str!("api/containers.rs")),
            ("api/decisions.rs", include_str!("api/decisions.rs")),
            ("api/enrolment.rs", include_str!("api/enrolment.rs")),
            ("api/images.rs", include_str!("api/images.rs")),
            ("api/members.rs", include_str!("api/members.rs")),
            ("api/ops.rs", include_str!("api/ops.rs")),
            ("api/orgs.rs", include_str!("api/orgs.rs")),
            ("api/plans.rs", include_str!("api/plans.rs")),
            ("api/policies.rs", include_str!("api/policies.rs")),
            ("api/relay.rs", include_str!("api/relay.rs")),
            ("api/tenants.rs", include_str!("api/tenants.rs")),
            ("api/workers.rs", include_str!("api/workers.rs")),
            ("terminal/browser.rs", include_str!("terminal/browser.rs")),
        ];
        for (file, source) in sources {
            let code = source.split("#[cfg(test)]").next().unwrap_or_default();
            let uses: Vec<&str> = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .filter(|l| l.contains("extensions"))
                .collect();
            assert!(uses.is_empty(), "{file} reads request extensions: {uses:?}");
        }
    }
}
