//! The REST handlers of ARCHITECTURE.md's table, and the API's JSON shapes:
//! tenants, join tokens, enrolment and workers here; containers in
//! `containers`, commands on one container in `ops`, worker-wide views and
//! image builds in `images`, and what they share to reach a worker in `relay`.
//!
//! Request and response types here are the HTTP wire (camelCase); the
//! stored records live in `store`, and conversion happens in these modules
//! only. Every write is committed by the store before the handler answers.

pub mod audit;
pub mod containers;
pub mod decisions;
pub mod images;
pub mod members;
pub mod ops;
pub mod orgs;
pub mod plans;
pub mod policies;
mod relay;
pub(crate) use relay::{detached, worker_error};
pub mod workers;

use std::collections::BTreeMap;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};

use crate::auth::{self, TokenKind};
use crate::authz::Caller;
use crate::http::{json, read_json, ApiError, Resp};
use crate::store::{self, HeartbeatRecord, JoinRefusal, JoinToken, NewWorker, Tenant};
use crate::{now_ms, App};

/// Join tokens live one hour unless asked otherwise, and at most 30 days.
const DEFAULT_JOIN_TTL_SECS: u64 = 3600;
const MAX_JOIN_TTL_SECS: u64 = 30 * 24 * 3600;

/// The lifetime in seconds of a join token asked for with `ttlSecs`: the one
/// rule for tenant and fleet join tokens alike.
fn join_ttl(ttl_secs: Option<u64>) -> Result<u64, ApiError> {
    let ttl = ttl_secs.unwrap_or(DEFAULT_JOIN_TTL_SECS);
    if !(1..=MAX_JOIN_TTL_SECS).contains(&ttl) {
        return Err(ApiError::bad_request(format!(
            "ttlSecs must be between 1 and {MAX_JOIN_TTL_SECS}"
        )));
    }
    Ok(ttl)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateTenant {
    name: String,
    /// The owning organisation; default: the caller's (the operator's: `default`).
    #[serde(default)]
    org_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub created_at: u64,
    pub org_id: String,
    pub plan: plans::PlanView,
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
    /// The worker's tenant; `null` for a fleet worker (it serves every tenant).
    pub tenant_id: Option<String>,
    pub tenant_name: Option<String>,
    pub credential: String,
    /// `byom` or `fleet`: what the agent must register as.
    pub mode: String,
    /// A fleet worker's region.
    pub region: Option<String>,
}

/// A worker as `GET /v1/workers` shows it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerView {
    pub id: String,
    /// The tenant a byom worker serves; `null` for a fleet worker.
    pub tenant_id: Option<String>,
    pub name: String,
    /// `online`, `reconnecting` (after an orchestrator restart, within the
    /// offline grace) or `offline`.
    pub status: String,
    pub revoked: bool,
    /// Deleted workers stay listed, for audit.
    pub deleted: bool,
    pub deleted_at: Option<u64>,
    /// No new containers are placed here.
    pub cordoned: bool,
    /// No new work of any kind is taken here.
    pub draining: bool,
    /// A fleet worker's region.
    pub region: Option<String>,
    pub hostname: Option<String>,
    pub platform: Option<String>,
    pub arch: Option<String>,
    pub cpu_count: Option<u32>,
    pub memory_total: Option<u64>,
    pub container_engines: Option<Vec<String>>,
    pub agent_version: Option<String>,
    /// The operator's labels for the machine, as its agent registered them.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The weakest security profile the worker runs (`open`: any), as its
    /// agent registered it; `null` before the first registration.
    #[serde(default)]
    pub security_floor: Option<String>,
    /// `byom` or `fleet`, from enrolment.
    pub mode: String,
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
            org_id: t.org_id,
            plan: t.plan.into(),
        }
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
    let caller = Caller::of(&req)?;
    let body: CreateTenant = read_json(req).await?;
    check_name("name", &body.name, 64)?;
    let org_id = orgs::org_for_new_tenant(app, &caller, body.org_id.as_deref()).await?;
    let tenant = Tenant {
        id: auth::uuid_v4()?,
        name: body.name,
        created_at: now_ms(),
        org_id,
        plan: store::Plan::default(),
    };
    let stored = tenant.clone();
    app.store.call(move |s| s.create_tenant(&stored)).await?;
    caller.noted(Some(&tenant.id), Some(&tenant.org_id), None);
    tracing::info!(tenant_id = %tenant.id, name = %tenant.name, org_id = %tenant.org_id, "tenant created");
    Ok(json(StatusCode::CREATED, &TenantView::from(tenant)))
}

/// `GET /v1/tenants`: the tenants the caller may see and use.
pub(crate) async fn list_tenants(app: &App, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let caller = Caller::of(&req)?;
    let tenants = app.store.call(|s| s.list_tenants()).await?;
    let tenants: Vec<TenantView> = tenants
        .into_iter()
        .filter(|t| caller.sees_tenant(t))
        .map(TenantView::from)
        .collect();
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
    let body: CreateJoinToken = read_json(req).await?;
    let ttl = join_ttl(body.ttl_secs)?;
    let token = auth::mint(TokenKind::Join)?;
    let now = now_ms();
    let record = JoinToken {
        tenant_id: tenant_id.to_owned(),
        created_at: now,
        expires_at: now + ttl * 1000,
        used: false,
        fleet: None,
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

/// `POST /v1/enroll`: a join token becomes a worker credential, once. A
/// byom token's tenant must have room in its plan for one more self-hosted
/// worker (`scheduling::enrol`); a refusal leaves the token unused.
pub(crate) async fn enroll(
    app: &std::sync::Arc<App>,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let caller = Caller::of(&req)?;
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
    let outcome = crate::scheduling::enrol(app, join_hash, new).await?;
    let (worker, tenant) = match outcome {
        Ok(pair) => pair,
        Err(refusal) => {
            tracing::info!(%refusal, "enrolment refused");
            return Err(ApiError::unauthorized(refusal.to_string()));
        }
    };
    let tenant_id = tenant.as_ref().map(|t| t.id.clone());
    let target = format!("worker:{}", worker.id);
    caller.noted(tenant_id.as_deref(), None, Some(&target));
    tracing::info!(worker_id = %worker.id, ?tenant_id, mode = worker.mode.as_str(), region = ?worker.region, name = %worker.name, "worker enrolled");
    Ok(json(
        StatusCode::CREATED,
        &Enrolled {
            worker_id: worker.id,
            tenant_id,
            tenant_name: tenant.map(|t| t.name),
            credential,
            mode: worker.mode.as_str().to_owned(),
            region: worker.region,
        },
    ))
}

/// `GET /v1/workers`: every worker for the operator; for a member, the
/// fleet workers and those of the tenants they may see.
pub(crate) async fn list_workers(app: &App, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let caller = Caller::of(&req)?;
    let (workers, tenants) = app
        .store
        .call(|s| Ok::<_, store::StoreError>((s.list_workers()?, s.list_tenants()?)))
        .await?;
    let visible: std::collections::HashSet<String> = tenants
        .into_iter()
        .filter(|t| caller.sees_tenant(t))
        .map(|t| t.id)
        .collect();
    let now = now_ms();
    let views: Vec<WorkerView> = workers
        .into_iter()
        .filter(|(w, _)| w.tenant_scope().is_none_or(|t| visible.contains(t)))
        .map(|(w, beat)| worker_view(app, w, beat, now))
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "workers": views }),
    ))
}

pub(crate) async fn revoke_worker(
    app: &App,
    _req: Request<Incoming>,
    worker_id: &str,
) -> Result<Resp, ApiError> {
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
    let status = crate::presence::presence(app, &w, now);
    let reg = w.register;
    WorkerView {
        status: status.as_str().to_owned(),
        revoked: w.revoked,
        deleted: w.deleted_at.is_some(),
        deleted_at: w.deleted_at,
        cordoned: w.cordoned,
        draining: w.draining,
        region: w.region,
        hostname: w.hostname,
        platform: reg
            .as_ref()
            .map(|r| r.platform.clone())
            .or(w.enrolled_platform),
        arch: reg.as_ref().and_then(|r| r.arch.clone()),
        cpu_count: reg.as_ref().map(|r| r.cpu_count),
        memory_total: reg.as_ref().map(|r| r.memory_total),
        container_engines: reg.as_ref().map(|r| r.container_engines.clone()),
        agent_version: reg.as_ref().map(|r| r.agent_version.clone()),
        labels: reg.as_ref().map(|r| r.labels.clone()).unwrap_or_default(),
        security_floor: reg
            .as_ref()
            .map(|r| r.security_floor.clone().unwrap_or_else(|| "open".into())),
        mode: w.mode.as_str().to_owned(),
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
        tenant_id: (w.mode == store::WorkerMode::Byom).then_some(w.tenant_id),
        id: w.id,
        name: w.name,
    }
}
