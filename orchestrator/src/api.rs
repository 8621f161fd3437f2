//! The REST handlers of ARCHITECTURE.md's table, and the API's JSON shapes:
//! tenants, join tokens, enrolment and workers here; containers in
//! `containers`, commands on one container in `ops`, worker-wide views and
//! image builds in `images`, and what they share to reach a worker in `relay`.
//!
//! Request and response types here are the HTTP wire (camelCase); the
//! stored records live in `store`, and conversion happens in these modules
//! only. Every write is committed by the store before the handler answers.

pub mod containers;
pub mod images;
pub mod ops;
mod relay;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};

use crate::auth::{self, TokenKind};
use crate::http::{json, read_json, ApiError, Resp};
use crate::store::{self, HeartbeatRecord, JoinRefusal, JoinToken, NewWorker, Tenant};
use crate::{now_ms, App};

/// Join tokens live one hour unless asked otherwise, and at most 30 days.
const DEFAULT_JOIN_TTL_SECS: u64 = 3600;
const MAX_JOIN_TTL_SECS: u64 = 30 * 24 * 3600;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateTenant {
    name: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub created_at: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateJoinToken {
    #[serde(default)]
    ttl_secs: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinTokenView {
    pub token: String,
    pub tenant_id: String,
    pub expires_at: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EnrollRequest {
    join_token: String,
    name: String,
    #[serde(default)]
    hostname: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Enrolled {
    pub worker_id: String,
    pub tenant_id: String,
    pub tenant_name: String,
    pub credential: String,
}

/// A worker as `GET /v1/workers` shows it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerView {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// `online` or `offline`.
    pub status: String,
    pub revoked: bool,
    pub hostname: Option<String>,
    pub platform: Option<String>,
    pub arch: Option<String>,
    pub cpu_count: Option<u32>,
    pub memory_total: Option<u64>,
    pub container_engines: Option<Vec<String>>,
    pub agent_version: Option<String>,
    pub mode: Option<String>,
    pub enrolled_at: u64,
    pub connected_at: Option<u64>,
    pub last_heartbeat_at: Option<u64>,
    pub heartbeat: Option<HeartbeatView>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatView {
    pub cpu_usage: f64,
    pub memory_free: u64,
    pub disk_total: Option<u64>,
    pub disk_free: Option<u64>,
    pub containers_running: u32,
    pub gateway_status: Option<String>,
    pub gateway_status_detail: Option<String>,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        Self {
            id: t.id,
            name: t.name,
            created_at: t.created_at,
        }
    }
}

/// Refuse the request unless it carries the admin token.
fn require_admin(app: &App, req: &Request<Incoming>) -> Result<(), ApiError> {
    let token = auth::bearer(req.headers())
        .map_err(|e| ApiError::unauthorized(e.to_string()))?
        .ok_or_else(|| ApiError::unauthorized("missing admin token"))?;
    if auth::constant_time_eq(&auth::hash(token), &app.admin_hash) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("invalid admin token"))
    }
}

/// A human-given name: 1 to `max` bytes, no control characters.
fn check_name(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{field} must be 1 to {max} bytes of printable text"
        )));
    }
    Ok(())
}

pub(crate) async fn create_tenant(app: &App, req: Request<Incoming>) -> Result<Resp, ApiError> {
    require_admin(app, &req)?;
    let body: CreateTenant = read_json(req).await?;
    check_name("name", &body.name, 64)?;
    let tenant = Tenant {
        id: auth::uuid_v4()?,
        name: body.name,
        created_at: now_ms(),
    };
    let stored = tenant.clone();
    app.store.call(move |s| s.create_tenant(&stored)).await?;
    tracing::info!(tenant_id = %tenant.id, name = %tenant.name, "tenant created");
    Ok(json(StatusCode::CREATED, &TenantView::from(tenant)))
}

pub(crate) async fn list_tenants(app: &App, req: Request<Incoming>) -> Result<Resp, ApiError> {
    require_admin(app, &req)?;
    let tenants = app.store.call(|s| s.list_tenants()).await?;
    let tenants: Vec<TenantView> = tenants.into_iter().map(TenantView::from).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "tenants": tenants }),
    ))
}

pub(crate) async fn create_join_token(
    app: &App,
    req: Request<Incoming>,
    tenant_id: &str,
) -> Result<Resp, ApiError> {
    require_admin(app, &req)?;
    let body: CreateJoinToken = read_json(req).await?;
    let ttl = body.ttl_secs.unwrap_or(DEFAULT_JOIN_TTL_SECS);
    if !(1..=MAX_JOIN_TTL_SECS).contains(&ttl) {
        return Err(ApiError::bad_request(format!(
            "ttlSecs must be between 1 and {MAX_JOIN_TTL_SECS}"
        )));
    }
    let token = auth::mint(TokenKind::Join)?;
    let now = now_ms();
    let record = JoinToken {
        tenant_id: tenant_id.to_owned(),
        created_at: now,
        expires_at: now + ttl * 1000,
        used: false,
    };
    let hash = auth::hash_hex(&token);
    let stored = record.clone();
    app.store
        .call(move |s| s.create_join_token(&hash, &stored))
        .await?;
    tracing::info!(tenant_id, ttl_secs = ttl, "join token created");
    Ok(json(
        StatusCode::CREATED,
        &JoinTokenView {
            token,
            tenant_id: record.tenant_id,
            expires_at: record.expires_at,
        },
    ))
}

pub(crate) async fn enroll(app: &App, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let body: EnrollRequest = read_json(req).await?;
    check_name("name", &body.name, 64)?;
    if let Some(hostname) = &body.hostname {
        check_name("hostname", hostname, 253)?;
    }
    if !body.join_token.starts_with(TokenKind::Join.prefix()) {
        return Err(ApiError::unauthorized(JoinRefusal::Unknown.to_string()));
    }
    let credential = auth::mint(TokenKind::Worker)?;
    let new = NewWorker {
        id: auth::uuid_v4()?,
        name: body.name,
        hostname: body.hostname,
        credential_hash: auth::hash_hex(&credential),
    };
    let join_hash = auth::hash_hex(&body.join_token);
    let now = now_ms();
    let outcome = app
        .store
        .call(move |s| s.enroll(&join_hash, now, new))
        .await?;
    let (worker, tenant) = match outcome {
        Ok(pair) => pair,
        Err(refusal) => {
            tracing::info!(%refusal, "enrolment refused");
            return Err(ApiError::unauthorized(refusal.to_string()));
        }
    };
    tracing::info!(worker_id = %worker.id, tenant_id = %tenant.id, name = %worker.name, "worker enrolled");
    Ok(json(
        StatusCode::CREATED,
        &Enrolled {
            worker_id: worker.id,
            tenant_id: tenant.id,
            tenant_name: tenant.name,
            credential,
        },
    ))
}

pub(crate) async fn list_workers(app: &App, req: Request<Incoming>) -> Result<Resp, ApiError> {
    require_admin(app, &req)?;
    let workers = app.store.call(|s| s.list_workers()).await?;
    let now = now_ms();
    let views: Vec<WorkerView> = workers
        .into_iter()
        .map(|(w, beat)| worker_view(app, w, beat, now))
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "workers": views }),
    ))
}

pub(crate) async fn revoke_worker(
    app: &App,
    req: Request<Incoming>,
    worker_id: &str,
) -> Result<Resp, ApiError> {
    require_admin(app, &req)?;
    let id = worker_id.to_owned();
    let worker = app.store.call(move |s| s.revoke_worker(&id)).await?;
    let closed = app
        .hub
        .close(worker_id, protocol::close::REVOKED, "credential revoked");
    tracing::info!(worker_id, live_socket_closed = closed, "worker revoked");
    let id = worker_id.to_owned();
    let beat = app.store.call(move |s| s.heartbeat(&id)).await?;
    Ok(json(
        StatusCode::OK,
        &worker_view(app, worker, beat, now_ms()),
    ))
}

/// The API's view of a stored worker, with its live status from the hub.
fn worker_view(app: &App, w: store::Worker, beat: Option<HeartbeatRecord>, now: u64) -> WorkerView {
    let offline_after = u64::try_from(app.offline_after().as_millis()).unwrap_or(u64::MAX);
    let online = !w.revoked
        && app
            .hub
            .live(&w.id)
            .is_some_and(|live| now.saturating_sub(live.last_beat_ms) < offline_after);
    let reg = w.register;
    WorkerView {
        status: if online { "online" } else { "offline" }.to_owned(),
        revoked: w.revoked,
        hostname: w.hostname,
        platform: reg.as_ref().map(|r| r.platform.clone()),
        arch: reg.as_ref().and_then(|r| r.arch.clone()),
        cpu_count: reg.as_ref().map(|r| r.cpu_count),
        memory_total: reg.as_ref().map(|r| r.memory_total),
        container_engines: reg.as_ref().map(|r| r.container_engines.clone()),
        agent_version: reg.as_ref().map(|r| r.agent_version.clone()),
        mode: reg.as_ref().map(|r| r.mode.clone()),
        enrolled_at: w.enrolled_at,
        connected_at: w.connected_at,
        last_heartbeat_at: beat.as_ref().map(|b| b.at),
        heartbeat: beat.map(|b| HeartbeatView {
            cpu_usage: b.cpu_usage,
            memory_free: b.memory_free,
            disk_total: b.disk_total,
            disk_free: b.disk_free,
            containers_running: b.containers_running,
            gateway_status: b.gateway_status,
            gateway_status_detail: b.gateway_status_detail,
        }),
        id: w.id,
        tenant_id: w.tenant_id,
        name: w.name,
    }
}
