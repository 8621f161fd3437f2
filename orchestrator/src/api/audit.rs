//! `GET /v1/audit?tenantId=T|orgId=O[&limit=N][&before=SEQ]`: the audit
//! log, newest first, a page at a time; filtered by `principal`,
//! `action` (exact, or a prefix ending in `.` or a space), `outcome`,
//! `since` and `until` (Unix ms). A page examines at most
//! `store::SCAN_BUDGET` entries: with a filter it may hold fewer than
//! `limit` (even none) and still have a `nextBefore` to go on from.
//!
//! Who reads it (the route's rule, checked before this runs): the operator
//! (everything, or one tenant or organisation) and admins of the
//! organisation owning the tenant or organisation asked for. Members with
//! role `member` do not read the audit log.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};

use crate::authz::query_id;
use crate::http::{json, query, query_text, ApiError, Resp};
use crate::store::{AuditEntry, AuditFilter, AuditScope, MAX_AUDIT_PAGE};
use crate::App;

/// Entries per page unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 100;

/// One audit entry as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditView {
    pub seq: u64,
    pub at: u64,
    pub principal: String,
    pub kind: String,
    pub action: String,
    pub target: String,
    pub tenant_id: Option<String>,
    pub org_id: Option<String>,
    pub outcome: String,
    pub status: Option<u16>,
}

impl From<AuditEntry> for AuditView {
    fn from(e: AuditEntry) -> Self {
        Self {
            seq: e.seq,
            at: e.at,
            principal: e.principal,
            kind: e.kind,
            action: e.action,
            target: e.target,
            tenant_id: e.tenant_id,
            org_id: e.org_id,
            outcome: e.outcome,
            status: e.status,
        }
    }
}

/// A page of entries and where the next (older) one starts.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub entries: Vec<AuditView>,
    /// Pass as `before` for the next page; `null` at the start of the log.
    pub next_before: Option<u64>,
}

fn number(req: &Request<Incoming>, name: &str) -> Result<Option<u64>, ApiError> {
    query(req, name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("{name} must be a non-negative integer"))
            })
        })
        .transpose()
}

/// `GET /v1/audit`.
pub(crate) async fn list(app: &App, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let scope = match (query_id(&req, "tenantId")?, query_id(&req, "orgId")?) {
        (Some(t), _) => AuditScope::Tenant(t),
        (None, Some(o)) => AuditScope::Org(o),
        (None, None) => AuditScope::All,
    };
    let limit = number(&req, "limit")?.unwrap_or(DEFAULT_LIMIT as u64);
    if !(1..=MAX_AUDIT_PAGE as u64).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_AUDIT_PAGE}"
        )));
    }
    let before = number(&req, "before")?;
    let limit = usize::try_from(limit).unwrap_or(MAX_AUDIT_PAGE);
    let text = |name: &str| -> Result<Option<String>, ApiError> {
        match query_text(&req, name)? {
            Some(v) if v.is_empty() || v.chars().count() > 200 => Err(ApiError::bad_request(
                format!("{name} must be 1 to 200 characters"),
            )),
            v => Ok(v),
        }
    };
    let filter = AuditFilter {
        principal: text("principal")?,
        action: text("action")?,
        outcome: text("outcome")?,
        since: number(&req, "since")?,
        until: number(&req, "until")?,
    };
    // Entries still queued on the writer (commands) belong in the answer.
    app.audit.flush().await;
    let found = app
        .store
        .call(move |s| s.search_audit(&scope, &filter, before, limit))
        .await?;
    let page = AuditPage {
        entries: found.entries.into_iter().map(AuditView::from).collect(),
        next_before: found.next_before,
    };
    Ok(json(StatusCode::OK, &page))
}
