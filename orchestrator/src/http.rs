//! HTTP plumbing: routing by method and path, JSON bodies with a size limit,
//! and the one error shape `{"error": {"code", "message"}}` of every failure.

use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub mod route;

pub use route::{ContainerOp, Endpoint, RouteDef, Rule, Target, ROUTES};

use crate::authz::{Caller, Principal};
use crate::store::StoreError;
use crate::App;

/// Largest request body accepted, in bytes.
pub const MAX_BODY: usize = 64 * 1024;

pub type Resp = Response<Full<Bytes>>;

/// A failed request, as the client sees it (status, code and message).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { message: String },
    #[error("{message}")]
    Unauthorized { message: String },
    #[error("{message}")]
    NotFound { message: String },
    #[error("method {method} not allowed on {path}")]
    MethodNotAllowed {
        method: Method,
        path: String,
        allow: String,
    },
    #[error("{message}")]
    Forbidden { message: String },
    #[error("{message}")]
    Conflict { message: String },
    /// The worker could not be reached or answered with an error: the
    /// status and code say which (503 `worker_offline`, 504 `timeout`,
    /// or the agent's own code); the message is shown to the client.
    #[error("{message}")]
    Worker {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("store failure: {0}")]
    Store(#[source] StoreError),
    #[error("cannot mint a secret: {0}")]
    Auth(#[from] crate::auth::AuthError),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => Self::NotFound {
                message: e.to_string(),
            },
            StoreError::TenantNameTaken { .. }
            | StoreError::NameTaken { .. }
            | StoreError::Revoked { .. } => Self::Conflict {
                message: e.to_string(),
            },
            other => Self::Store(other),
        }
    }
}

/// An audit entry that could not be appended: the store's failure as 500,
/// a stopped writer (shutdown) as 503. Either way the call is not
/// acknowledged.
impl From<crate::audit::AuditError> for ApiError {
    fn from(e: crate::audit::AuditError) -> Self {
        match e {
            crate::audit::AuditError::Store(error) => Self::Store(error),
            other => Self::Worker {
                status: hyper::StatusCode::SERVICE_UNAVAILABLE,
                code: "unavailable",
                message: format!("the audit log cannot be written: {other}"),
            },
        }
    }
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::Unauthorized {
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound {
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden {
            message: message.into(),
        }
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict {
            message: message.into(),
        }
    }

    pub(crate) fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            Self::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            Self::Worker { status, code, .. } => (*status, code),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::Store(_) | Self::Auth(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The response for this error. Internal details are logged, not sent;
    /// a worker's failure is the client's to read.
    pub fn into_response(self) -> Resp {
        let (status, code) = self.status_and_code();
        let message = if let Self::Worker { .. } = self {
            tracing::info!(status = status.as_u16(), code, error = %self, "worker request failed");
            self.to_string()
        } else if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
            "internal error; see the orchestrator's log".to_owned()
        } else {
            self.to_string()
        };
        let body = serde_json::json!({ "error": { "code": code, "message": message } });
        let mut resp = json(status, &body);
        if let Self::MethodNotAllowed { allow, .. } = self {
            resp.headers_mut().insert(
                ALLOW,
                HeaderValue::from_str(&allow).unwrap_or_else(|_| HeaderValue::from_static("GET")),
            );
        }
        resp
    }
}

/// A JSON response.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Resp {
    // Our response types are plain data and always serialize.
    let body =
        serde_json::to_vec(value).unwrap_or_else(|e| unreachable!("response serializes: {e}"));
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Read a JSON body of at most [`MAX_BODY`] bytes. Every route that takes
/// a body takes a JSON object: an absent or empty body, or any other JSON
/// value (`[]`, `null`, a string), is 400 (`{}` asks for every default);
/// so are unknown fields and wrong types; oversize is 413.
pub async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    read_json_limited(req, MAX_BODY).await
}

/// [`read_json`] with another size limit, for routes carrying files.
pub async fn read_json_limited<T: DeserializeOwned>(
    req: Request<Incoming>,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = read_bytes_limited(req, limit).await?;
    parse_object(&bytes)
}

/// `bytes` as a JSON object of type `T`. Checked before serde sees it:
/// serde's derived structs also accept an array of their fields in order,
/// which would read `[]` as every default.
fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let refused = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => None,
        None => Some("a JSON object body is required (send {} for the defaults)"),
        Some(_) => Some("invalid JSON body: expected a JSON object"),
    };
    if let Some(message) = refused {
        return Err(ApiError::bad_request(message));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// The raw body, at most `limit` bytes (oversize is 413).
pub async fn read_bytes_limited(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let collected = Limited::new(req.into_body(), limit).collect().await;
    let bytes = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "cannot read the request body: {e}"
            )))
        }
    };
    Ok(bytes)
}

/// The raw value of query parameter `name`, if present. No percent-decoding:
/// our parameters are ids, numbers and booleans, whose patterns exclude `%`.
pub fn query<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// A mutating request past authentication: appended to the audit log once
/// answered; with its intent, queued once authorised, when it acts on a
/// worker's container (`crate::audit`).
type Audited = Option<(&'static RouteDef, Caller, Intended)>;

/// How a call on a worker's container announced itself to the audit log.
enum Intended {
    /// Not such a call: audited once answered.
    No,
    /// Its intent, queued once authorised.
    Queued(crate::audit::Intent),
    /// Its intent, for the handler to queue (a create; see `crate::audit`).
    Deferred(crate::audit::Deferred),
}

/// A request's audit state, which outlives the request: when hyper drops an
/// abandoned request (its client hung up) after the call's intent was
/// queued, the intent still gets its entry, outcome `client_closed` (499),
/// instead of lying in the journal until a restart calls it `interrupted`.
/// The handler's own work on the worker goes on ([`crate::api::relay`]).
struct AuditSlot {
    app: Arc<App>,
    path: String,
    audited: Audited,
}

impl Drop for AuditSlot {
    fn drop(&mut self) {
        let Some((def, caller, intended)) = self.audited.take() else {
            return;
        };
        let Some(intent) = intended.into_intent() else {
            return;
        };
        let (app, path) = (Arc::clone(&self.app), std::mem::take(&mut self.path));
        self.app.life.spawn(async move {
            if let Ok(id) = intent.recorded().await {
                let call = (def, &caller, path.as_str());
                let closed = (499, "client_closed");
                let _ = crate::audit::api_outcome(&app, id, call, closed, false).await;
            }
        });
    }
}

impl Intended {
    /// The queued intent, if there is one.
    fn into_intent(self) -> Option<crate::audit::Intent> {
        match self {
            Self::No => None,
            Self::Queued(intent) => Some(intent),
            Self::Deferred(deferred) => deferred.take(),
        }
    }
}

/// Answer one request: route it, authorise it, call the handler, and
/// append the audit entry of a mutating call before answering.
pub(crate) async fn handle(app: Arc<App>, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut slot = AuditSlot {
        app: Arc::clone(&app),
        path: path.clone(),
        audited: None,
    };
    let result = dispatch(Arc::clone(&app), req, &method, &path, &mut slot.audited).await;
    let audited = slot.audited.take();
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.status_and_code().1,
    };
    let mut resp = result.unwrap_or_else(ApiError::into_response);
    if let Some((def, caller, intent)) = audited {
        let status = resp.status().as_u16();
        let appended = match intent.into_intent() {
            // Durable by now, most likely: it was committed while the
            // worker ran Podman. The entry follows without a wait, unless
            // the answer reports a container state the call wrote and that
            // write is not durable yet (the durable record update that
            // settles a call carries it; a call that settled nothing, such
            // as a retried create answering the record another request
            // wrote, may not): then the answer waits for the entry's
            // durable commit, which carries it to disk (an answer's state
            // survives kill -9).
            Some(intent) => match intent.recorded().await {
                Ok(id) => {
                    let call = (def, &caller, path.as_str());
                    let settled = def.endpoint.settles_record() && !app.store.api_writes_durable();
                    crate::audit::api_outcome(&app, id, call, (status, outcome), settled).await
                }
                Err(error) => Err(error),
            },
            None => crate::audit::api_call(&app, def, &caller, &path, status, outcome).await,
        };
        if let Err(error) = appended {
            // Never acknowledge a call whose entry could not be written.
            tracing::error!(%error, "cannot audit a call");
            resp = ApiError::from(error).into_response();
        }
    }
    let route = route::find(&method, &path).ok().map(|(def, _)| def.path);
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
    audited: &mut Audited,
) -> Result<Resp, ApiError> {
    use crate::api;
    let (def, params) = route::find(method, path)?;
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
    if let Some(caller) = caller {
        let mutating = method != Method::GET;
        if mutating {
            *audited = Some((def, caller.clone(), Intended::No));
        }
        crate::authz::check(&app, &caller, def.rule, &params, &req).await?;
        if mutating && def.endpoint == Endpoint::CreateContainer {
            let deferred = crate::audit::Deferred::new(def, &caller, path);
            req.extensions_mut().insert(deferred.clone());
            *audited = Some((def, caller.clone(), Intended::Deferred(deferred)));
        } else if mutating && def.endpoint.on_worker() {
            let intent = crate::audit::api_intent(&app, def, &caller, path).await?;
            *audited = Some((def, caller.clone(), Intended::Queued(intent)));
        }
        req.extensions_mut().insert(caller);
    }
    let container = params.get("containerId");
    let worker = params.get("workerId");
    let member = params.get("memberId");
    let policy = params.get("policyId");
    match def.endpoint {
        Endpoint::Healthz => Ok(crate::health::healthz()),
        Endpoint::Readyz => Ok(crate::health::readyz(&app).await),
        Endpoint::Metrics => Ok(crate::health::metrics(&app)),
        Endpoint::OpenApi => Ok(crate::openapi::response()),
        Endpoint::UiTerminal
        | Endpoint::UiTerminalJs
        | Endpoint::UiXtermJs
        | Endpoint::UiXtermCss
        | Endpoint::UiAddonFitJs => Ok(crate::web::response(def.endpoint)),
        Endpoint::Me => api::orgs::me(&app, req).await,
        Endpoint::CreateOrg => api::orgs::create(&app, req).await,
        Endpoint::ListOrgs => api::orgs::list(&app, req).await,
        Endpoint::GetOrg => api::orgs::get(&app, req, params.get("orgId")).await,
        Endpoint::CreateMember => api::members::create(&app, req, params.get("orgId")).await,
        Endpoint::ListMembers => api::members::list(&app, req, params.get("orgId")).await,
        Endpoint::GetMember => api::members::get(&app, req, member).await,
        Endpoint::UpdateMember => api::members::update(&app, req, member).await,
        Endpoint::DeleteMember => api::members::delete(&app, req, member).await,
        Endpoint::AssignTenant => {
            api::members::assign(&app, req, member, params.get("tenantId"), true).await
        }
        Endpoint::UnassignTenant => {
            api::members::assign(&app, req, member, params.get("tenantId"), false).await
        }
        Endpoint::CreateToken => api::members::create_token(&app, req, member).await,
        Endpoint::ListTokens => api::members::list_tokens(&app, req, member).await,
        Endpoint::RevokeToken => api::members::revoke_token(&app, req, params.get("tokenId")).await,
        Endpoint::CreateTenant => api::create_tenant(&app, req).await,
        Endpoint::ListTenants => api::list_tenants(&app, req).await,
        Endpoint::GetTenant => api::orgs::get_tenant(&app, req, params.get("tenantId")).await,
        Endpoint::CreateJoinToken => {
            api::create_join_token(&app, req, params.get("tenantId")).await
        }
        Endpoint::Enroll => api::enroll(&app, req).await,
        Endpoint::Agent => crate::agent_socket::accept(app, req).await,
        Endpoint::ListWorkers => api::list_workers(&app, req).await,
        Endpoint::RevokeWorker => api::revoke_worker(&app, req, worker).await,
        Endpoint::SetPlan => api::plans::set(&app, req, params.get("tenantId")).await,
        Endpoint::CreateFleetJoinToken => api::workers::create_fleet_join_token(&app, req).await,
        Endpoint::DeleteWorker => api::workers::delete(&app, worker).await,
        Endpoint::CordonWorker => {
            api::workers::set_flags(&app, worker, flags(Some(true), None)).await
        }
        Endpoint::UncordonWorker => {
            api::workers::set_flags(&app, worker, flags(Some(false), None)).await
        }
        Endpoint::DrainWorker => {
            api::workers::set_flags(&app, worker, flags(None, Some(true))).await
        }
        Endpoint::UndrainWorker => {
            api::workers::set_flags(&app, worker, flags(None, Some(false))).await
        }
        Endpoint::RotateWorkerCredential => api::workers::rotate_credential(&app, worker).await,
        Endpoint::WorkerContainers => api::images::worker_containers(&app, req, worker).await,
        Endpoint::WorkerImages => api::images::list(&app, req, worker).await,
        Endpoint::BuildImage => api::images::build(&app, req, worker).await,
        Endpoint::CreateContainer => api::containers::create(&app, req).await,
        Endpoint::ListContainers => api::containers::list(&app, req).await,
        Endpoint::GetContainer => api::containers::get(&app, req, container).await,
        Endpoint::RemoveContainer => api::containers::remove(&app, req, container).await,
        Endpoint::ContainerSetup => api::ops::run(&app, req, container, ContainerOp::Setup).await,
        Endpoint::ContainerStart => api::ops::run(&app, req, container, ContainerOp::Start).await,
        Endpoint::ContainerStop => api::ops::run(&app, req, container, ContainerOp::Stop).await,
        Endpoint::ContainerExec => api::ops::run(&app, req, container, ContainerOp::Exec).await,
        Endpoint::ContainerBackground => {
            api::ops::run(&app, req, container, ContainerOp::Background).await
        }
        Endpoint::ContainerStats => api::ops::run(&app, req, container, ContainerOp::Stats).await,
        Endpoint::ContainerTerminal => crate::terminal::accept(app, req, container).await,
        Endpoint::BackgroundCapture => {
            api::ops::capture(&app, req, container, params.get("handle")).await
        }
        Endpoint::BackgroundKill => {
            api::ops::kill(&app, req, container, params.get("handle")).await
        }
        Endpoint::Audit => api::audit::list(&app, req).await,
        Endpoint::ListDecisions => api::decisions::list(&app, req, params.get("tenantId")).await,
        Endpoint::UploadPolicy => api::policies::upload(&app, req).await,
        Endpoint::ListPolicies => api::policies::list(&app, req).await,
        Endpoint::ActivatePolicy => api::policies::activate(&app, req, policy).await,
        Endpoint::RollbackPolicy => api::policies::rollback(&app, req, policy).await,
        Endpoint::SimulatePolicy => api::policies::simulate(&app, req, policy).await,
        Endpoint::GetDecision => {
            api::decisions::get(&app, params.get("tenantId"), params.get("decisionId")).await
        }
    }
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

/// A change of cordon and drain flags (`None`: unchanged).
fn flags(cordoned: Option<bool>, draining: Option<bool>) -> crate::store::WorkerFlags {
    crate::store::WorkerFlags { cordoned, draining }
}
