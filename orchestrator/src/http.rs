//! HTTP plumbing: routing by method and path, JSON bodies with a size limit,
//! and the one error shape `{"error": {"code", "message"}}` of every failure.

use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

mod route;

pub use route::{ContainerOp, Route};

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
        allow: &'static str,
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
            StoreError::TenantNameTaken { .. } | StoreError::Revoked { .. } => Self::Conflict {
                message: e.to_string(),
            },
            other => Self::Store(other),
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

    fn status_and_code(&self) -> (StatusCode, &'static str) {
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
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
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

/// Read a JSON body of at most [`MAX_BODY`] bytes. An empty body reads as
/// `{}`; unknown fields and wrong types are 400, oversize is 413.
pub async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    read_json_limited(req, MAX_BODY).await
}

/// [`read_json`] with another size limit, for routes carrying files.
pub async fn read_json_limited<T: DeserializeOwned>(
    req: Request<Incoming>,
    limit: usize,
) -> Result<T, ApiError> {
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
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(text)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
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

/// Answer one request: route it, check the method, call the handler.
pub(crate) async fn handle(app: Arc<App>, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let result = dispatch(app, req, &method, &path).await;
    let resp = result.unwrap_or_else(ApiError::into_response);
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "request");
    resp
}

async fn dispatch(
    app: Arc<App>,
    req: Request<Incoming>,
    method: &Method,
    path: &str,
) -> Result<Resp, ApiError> {
    use crate::api;
    let route = Route::parse(path)?;
    match (route, method) {
        (Route::Healthz, &Method::GET) => {
            Ok(json(StatusCode::OK, &serde_json::json!({ "status": "ok" })))
        }
        (Route::Tenants, &Method::POST) => api::create_tenant(&app, req).await,
        (Route::Tenants, &Method::GET) => api::list_tenants(&app, req).await,
        (Route::JoinTokens { tenant_id }, &Method::POST) => {
            api::create_join_token(&app, req, tenant_id).await
        }
        (Route::Enroll, &Method::POST) => api::enroll(&app, req).await,
        (Route::Workers, &Method::GET) => api::list_workers(&app, req).await,
        (Route::Revoke { worker_id }, &Method::POST) => {
            api::revoke_worker(&app, req, worker_id).await
        }
        (Route::Agent, &Method::GET) => crate::agent_socket::accept(app, req).await,
        (Route::Containers, &Method::POST) => api::containers::create(&app, req).await,
        (Route::Containers, &Method::GET) => api::containers::list(&app, req).await,
        (Route::Container { id }, &Method::GET) => api::containers::get(&app, req, id).await,
        (Route::Container { id }, &Method::DELETE) => api::containers::remove(&app, req, id).await,
        (Route::ContainerOp { id, op }, m) if route.allowed() == m.as_str() => {
            api::ops::run(&app, req, id, op).await
        }
        (Route::Background { id, handle }, &Method::GET) => {
            api::ops::capture(&app, req, id, handle).await
        }
        (Route::BackgroundKill { id, handle }, &Method::POST) => {
            api::ops::kill(&app, req, id, handle).await
        }
        (Route::WorkerContainers { worker_id }, &Method::GET) => {
            api::images::worker_containers(&app, req, worker_id).await
        }
        (Route::WorkerImages { worker_id }, &Method::GET) => {
            api::images::list(&app, req, worker_id).await
        }
        (Route::WorkerImages { worker_id }, &Method::POST) => {
            api::images::build(&app, req, worker_id).await
        }
        (route, _) => Err(ApiError::MethodNotAllowed {
            method: method.clone(),
            path: path.to_owned(),
            allow: route.allowed(),
        }),
    }
}
