//! Stored policy decisions over HTTP, per tenant:
//! `GET /v1/tenants/{tenantId}/decisions?limit=N&before=ID` (newest first,
//! older than decision ID; `nextBefore` names the next page's) and
//! `GET /v1/tenants/{tenantId}/decisions/{decisionId}`. The dispatcher has
//! checked that the caller may use the tenant; a decision of another
//! tenant is not found here. A decision's explanation is shown as stored
//! (`policy::Recorded`: typed, or as stored when it does not read).
//!
//! Also the edge between scheduling and HTTP: each [`SchedulingError`]
//! becomes one status and code, its message shown as it is:
//!
//! | error | status | code |
//! |---|---|---|
//! | `Denied` | 403 | `plan_limit` |
//! | `PolicyFailed` | 503 | `policy_failed` |
//! | `NoWorkerFits` | 409 | `no_worker_fits` |
//! | `NoWorkerOnline` | 503 | `no_worker_online` |
//! | `Contended` | 503 | `admission_contended` |
//! | `NotReady` | 503 | `not_ready` |
//! | `NotFound` | 404 | `not_found` |
//! | `Refused` | 400 | `bad_request` |
//! | `Draining` | 409 | `worker_draining` |
//! | `Cordoned` | 409 | `worker_cordoned` |
//! | `NotActive` | 409 | `conflict` |
//! | `Store`, `Auth` | as the store's and the secret's errors |

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use crate::authz::query_id;
use crate::http::{json, query, ApiError, Resp};
use crate::scheduling::SchedulingError;
use crate::store::MAX_DECISION_PAGE;
use crate::App;

const DEFAULT_PAGE: usize = 50;

pub(crate) async fn list(
    app: &App,
    req: Request<Incoming>,
    tenant_id: &str,
) -> Result<Resp, ApiError> {
    let limit = match query(&req, "limit") {
        None => DEFAULT_PAGE,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_DECISION_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("limit must be 1..={MAX_DECISION_PAGE}"))
            })?,
    };
    let before = query_id(&req, "before")?;
    let key = tenant_id.to_owned();
    let decisions = app
        .store
        .call(move |s| s.list_decisions_before(&key, before.as_deref(), limit))
        .await?;
    let next_before = (decisions.len() == limit)
        .then(|| decisions.last().map(|d| d.id.clone()))
        .flatten();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "decisions": decisions, "nextBefore": next_before }),
    ))
}

pub(crate) async fn get(app: &App, tenant_id: &str, decision_id: &str) -> Result<Resp, ApiError> {
    let key = decision_id.to_owned();
    let found = app.store.call(move |s| s.get_decision(&key)).await?;
    match found {
        Some(d) if d.tenant_id == tenant_id => Ok(json(StatusCode::OK, &d)),
        _ => Err(ApiError::not_found(format!(
            "decision {decision_id} not found"
        ))),
    }
}

fn refusal(status: StatusCode, code: &'static str, message: String) -> ApiError {
    ApiError::Worker {
        status,
        code,
        message,
    }
}

impl From<SchedulingError> for ApiError {
    fn from(e: SchedulingError) -> Self {
        let message = e.to_string();
        match e {
            SchedulingError::Denied { .. } => refusal(StatusCode::FORBIDDEN, "plan_limit", message),
            SchedulingError::PolicyFailed { .. } => {
                refusal(StatusCode::SERVICE_UNAVAILABLE, "policy_failed", message)
            }
            SchedulingError::NoWorkerFits(_) => {
                refusal(StatusCode::CONFLICT, "no_worker_fits", message)
            }
            SchedulingError::NoWorkerOnline(_) => {
                refusal(StatusCode::SERVICE_UNAVAILABLE, "no_worker_online", message)
            }
            SchedulingError::Contended { .. } => refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "admission_contended",
                message,
            ),
            SchedulingError::NotReady(_) => {
                refusal(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
            }
            SchedulingError::Draining(_) => {
                refusal(StatusCode::CONFLICT, "worker_draining", message)
            }
            SchedulingError::Cordoned(_) => {
                refusal(StatusCode::CONFLICT, "worker_cordoned", message)
            }
            SchedulingError::NotFound(message) => ApiError::not_found(message),
            SchedulingError::Refused(message) => ApiError::bad_request(message),
            SchedulingError::NotActive(message) => ApiError::conflict(message),
            SchedulingError::Store(e) => ApiError::from(e),
            SchedulingError::Auth(e) => ApiError::Auth(e),
        }
    }
}
