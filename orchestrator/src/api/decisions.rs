//! Stored policy decisions over HTTP, per tenant:
//! `GET /v1/tenants/{tenantId}/decisions?limit=N` (newest first) and
//! `GET /v1/tenants/{tenantId}/decisions/{decisionId}`. The dispatcher has
//! checked that the caller may use the tenant; a decision of another
//! tenant is not found here.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use crate::http::{json, query, ApiError, Resp};
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
    let key = tenant_id.to_owned();
    let decisions = app
        .store
        .call(move |s| s.list_decisions(&key, limit))
        .await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "decisions": decisions }),
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
