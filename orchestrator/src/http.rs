//! HTTP plumbing: matching a method and path against a route table
//! ([`route`]), JSON bodies with a size limit, query parameters, and the one
//! error shape `{"error": {"code", "message"}}` of every failure. It knows
//! no handler: the table and the dispatch into handlers are
//! `crate::router`'s.

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub mod route;

pub use route::{Params, Pattern, Rule, Target};

use crate::store::StoreError;

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
    /// The shared database cannot be reached now: 503, try again.
    #[error("the database cannot be reached; try again shortly ({0})")]
    StoreUnavailable(#[source] StoreError),
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
            other if other.is_retryable() => Self::StoreUnavailable(other),
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
            Self::StoreUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
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
        } else if let Self::StoreUnavailable(_) = self {
            tracing::warn!(error = %self, "request failed: the database cannot be reached");
            "the database cannot be reached; try again shortly".to_owned()
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

/// The query parameter `name`, percent-decoded (`+` is a space), as text
/// the client chose: a search term, never an id. A bad escape or bytes
/// that are not UTF-8: 400.
pub fn query_text(req: &Request<Incoming>, name: &str) -> Result<Option<String>, ApiError> {
    let Some(raw) = query(req, name) else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request(format!("{name} is not a well-formed query value"));
    let mut bytes = Vec::with_capacity(raw.len());
    let mut it = raw.bytes();
    while let Some(b) = it.next() {
        bytes.push(match b {
            b'+' => b' ',
            b'%' => {
                let hex = [it.next().ok_or_else(bad)?, it.next().ok_or_else(bad)?];
                let hex = std::str::from_utf8(&hex).map_err(|_| bad())?;
                u8::from_str_radix(hex, 16).map_err(|_| bad())?
            }
            other => other,
        });
    }
    String::from_utf8(bytes).map(Some).map_err(|_| bad())
}
