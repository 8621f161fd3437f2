//! The API's router: one table ([`ROUTES`], in `router/table.rs`) whose
//! every row names a route's method, path pattern, rule (who may call it),
//! handler and summary, and the one way into a handler: [`handle`] finds
//! the request's row, authenticates and authorises the caller by its rule,
//! and calls its handler with a [`Call`], wrapped in the audit middleware
//! (`router/audited.rs`) that appends the entry of every mutating call.
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

/// What a handler gets: the request, its checked path parameters and the
/// route it came by. The caller, once authenticated, is in the request's
/// extensions (`Caller::of`).
pub struct Call {
    pub(crate) app: Arc<App>,
    pub(crate) req: Request<Incoming>,
    pub(crate) params: Params,
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
    let caller = match def.rule {
        Rule::Public | Rule::Worker => None,
        Rule::JoinToken => Some(Caller::new(Principal::JoinToken)),
        _ => {
            let principal = crate::authz::authenticate(&app, req.headers()).await?;
            crate::connections::authenticated(&req);
            Some(Caller::new(principal))
        }
    };
    let mut intent = None;
    if let Some(caller) = caller {
        if method != Method::GET {
            audit.mutating(def, &caller);
        }
        crate::authz::check(&app, &caller, def.rule, &params, &req).await?;
        intent = audit.authorised().await?;
        req.extensions_mut().insert(caller);
    }
    let call = Call {
        app,
        req,
        params,
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
}
