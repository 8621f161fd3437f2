//! Worker administration over HTTP: fleet join tokens, cordon and drain,
//! deletion, credential rotation over the live connection, and the
//! admission check every new piece of work passes (`scheduling::admits`).
//!
//! Definitions (ARCHITECTURE.md repeats them):
//! * **cordoned**: no *new containers* are created or placed on the worker;
//!   everything else (setup, exec, background, builds, stop, remove, lists)
//!   works.
//! * **draining**: no *new work* of any kind: create, setup, exec,
//!   background and build are refused with 409 `worker_draining`; running
//!   containers stay, and start, stop, remove, stats, captures, kills and
//!   listings work.
//! * **deleted**: revoked (the credential is refused with 401), the live
//!   socket closed with 4001 at once, the record kept (flagged `deleted`)
//!   for audit.

use std::collections::BTreeMap;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use protocol::worker::RotateCredential;
use protocol::Body;
use serde::{Deserialize, Serialize};

use super::enrolment::join_ttl;
use super::relay::{self, bad_reply, detached, worker_error};
use crate::auth::{self, TokenKind};
use crate::authz::Caller;
use crate::http::{json, read_json, ApiError, Resp};
use crate::hub::HubError;
use crate::scheduling::{admits, Work};
use crate::store::{self, FleetEnrolment, HeartbeatRecord, JoinToken, Worker, WorkerFlags};
use crate::{now_ms, App};

/// `scheduling::admits` for the worker with id `worker_id` (404 if unknown).
pub(crate) async fn check_admits(app: &App, worker_id: &str, work: Work) -> Result<(), ApiError> {
    Ok(admits(&relay::worker(app, worker_id).await?, work)?)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateFleetToken {
    region: String,
    #[serde(default)]
    platform: Option<String>,
    #[serde(default)]
    ttl_secs: Option<u64>,
}

/// What `POST /v1/fleet/join-tokens` answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetTokenView {
    pub token: String,
    /// Always `fleet`.
    pub mode: String,
    pub region: String,
    pub platform: Option<String>,
    pub expires_at: u64,
}

/// A region is 1 to 64 of `[a-z0-9-]`, starting with a letter or digit.
fn check_region(region: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&region.len())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !region.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "region must be 1 to 64 of a-z, 0-9 and '-', not starting with '-'",
        ))
    }
}

/// `POST /v1/fleet/join-tokens` (operator): a single-use token whose
/// enrolment makes a fleet worker in `region`.
pub(crate) async fn create_fleet_join_token(
    app: &App,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let body: CreateFleetToken = read_json(req).await?;
    check_region(&body.region)?;
    if let Some(p) = &body.platform {
        if !["linux", "darwin", "windows"].contains(&p.as_str()) {
            return Err(ApiError::bad_request(
                "platform must be linux, darwin or windows",
            ));
        }
    }
    let ttl = join_ttl(body.ttl_secs)?;
    let token = auth::mint(TokenKind::Join)?;
    let now = now_ms();
    let record = JoinToken {
        tenant_id: String::new(),
        created_at: now,
        expires_at: now + ttl * 1000,
        used: false,
        fleet: Some(FleetEnrolment {
            region: body.region.clone(),
            platform: body.platform.clone(),
        }),
    };
    let hash = auth::hash_hex(&token);
    app.store
        .call(move |s| s.create_fleet_join_token(&hash, &record))
        .await?;
    tracing::info!(region = %body.region, platform = ?body.platform, ttl_secs = ttl, "fleet join token created");
    Ok(json(
        StatusCode::CREATED,
        &FleetTokenView {
            token,
            mode: "fleet".into(),
            region: body.region,
            platform: body.platform,
            expires_at: now + ttl * 1000,
        },
    ))
}

/// The worker as the API shows it, after a change.
async fn answer(app: &App, worker: Worker) -> Result<Resp, ApiError> {
    let id = worker.id.clone();
    let beat = app.store.call(move |s| s.heartbeat(&id)).await?;
    Ok(json(
        StatusCode::OK,
        &worker_view(app, worker, beat, now_ms()),
    ))
}

/// `POST /v1/workers/{id}/cordon|uncordon|drain|undrain`.
pub(crate) async fn set_flags(
    app: &App,
    worker_id: &str,
    flags: WorkerFlags,
) -> Result<Resp, ApiError> {
    let id = worker_id.to_owned();
    let worker = app
        .store
        .call(move |s| s.set_worker_flags(&id, flags))
        .await?;
    tracing::info!(
        worker_id,
        cordoned = worker.cordoned,
        draining = worker.draining,
        "worker scheduling flags changed"
    );
    answer(app, worker).await
}

/// `DELETE /v1/workers/{id}`: revoke, close the live socket with 4001, keep
/// the record flagged deleted.
pub(crate) async fn delete(app: &App, worker_id: &str) -> Result<Resp, ApiError> {
    let id = worker_id.to_owned();
    let now = now_ms();
    let worker = app.store.call(move |s| s.delete_worker(&id, now)).await?;
    let closed = app
        .hub
        .close_anywhere(worker_id, protocol::close::REVOKED, "worker deleted")
        .await;
    tracing::info!(worker_id, live_socket_closed = closed, "worker deleted");
    answer(app, worker).await
}

/// `POST /v1/workers/{id}/rotate-credential`: send a new credential over
/// the live connection; once the agent says it stored it, it is the only
/// one (the old is refused; the current connection stays). Offline: 503,
/// nothing changed.
pub(crate) async fn rotate_credential(app: &Arc<App>, worker_id: &str) -> Result<Resp, ApiError> {
    let worker = relay::worker(app, worker_id).await?;
    if worker.revoked {
        return Err(ApiError::conflict(format!("worker {worker_id} is revoked")));
    }
    if !crate::presence::reachable(app, &worker).await {
        return Err(worker_error(HubError::Offline {
            worker_id: worker_id.to_owned(),
        }));
    }
    let credential = auth::mint(TokenKind::Worker)?;
    let hash = auth::hash_hex(&credential);
    let (id, key) = (worker_id.to_owned(), hash.clone());
    app.store.call(move |s| s.begin_rotation(&id, &key)).await?;
    let task_app = Arc::clone(app);
    let id = worker_id.to_owned();
    detached(app, async move {
        rotation_sent(&task_app, &id, credential, hash).await
    })
    .await
}

/// Send the new credential and record the agent's answer. Without an
/// answer the credential stays pending: the agent may have stored it, and
/// its next connection with it completes the rotation.
async fn rotation_sent(
    app: &App,
    worker_id: &str,
    credential: String,
    hash: String,
) -> Result<Resp, ApiError> {
    let command = Body::RotateCredential(RotateCredential { credential });
    let reply = app
        .hub
        .request(worker_id, command, app.timeouts.command)
        .await;
    let id = worker_id.to_owned();
    match reply {
        Ok(Body::CredentialRotated(_)) => {
            let swapped = app
                .store
                .call(move |s| s.finish_rotation(&id, &hash))
                .await?;
            let Some(worker) = swapped else {
                return Err(ApiError::conflict(format!(
                    "worker {worker_id}: a newer rotation superseded this one"
                )));
            };
            tracing::info!(worker_id, "worker credential rotated");
            answer(app, worker).await
        }
        Ok(other) => Err(bad_reply(worker_id, "worker.rotate-credential", &other)),
        Err(error @ HubError::Agent { .. }) => {
            tracing::warn!(worker_id, %error, "agent refused a credential rotation");
            app.store
                .call(move |s| s.abandon_rotation(&id, &hash))
                .await?;
            Err(worker_error(error))
        }
        Err(error) => {
            tracing::warn!(worker_id, %error, "credential rotation unanswered; the new credential stays pending");
            Err(worker_error(error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_plain_names() {
        for ok in ["eu-west-1", "us1", "a"] {
            assert!(check_region(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-eu", "EU", "eu west", "eu/../x", &"a".repeat(65)] {
            assert!(check_region(bad).is_err(), "{bad}");
        }
    }
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
    /// Whether the agent drives rootless Podman, as it registered;
    /// `null` before the first registration.
    #[serde(default)]
    pub rootless: Option<bool>,
    /// What the worker cannot do that it could as root (e.g. memory, CPU
    /// and PIDs limits ignored on cgroup v1), as its agent registered it:
    /// the profiles' limits of a container placed here do not all hold.
    #[serde(default)]
    pub limitations: Vec<String>,
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

/// `GET /v1/workers`: every worker for the operator; for a member, the
/// fleet workers and those of the tenants they may see.
pub(crate) async fn list_workers(app: &App, caller: &Caller) -> Result<Resp, ApiError> {
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
        .close_anywhere(worker_id, protocol::close::REVOKED, "credential revoked")
        .await;
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
    let status = crate::presence::presence(app, &w, beat.as_ref(), now);
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
        rootless: reg.as_ref().map(|r| r.rootless),
        limitations: reg
            .as_ref()
            .map(|r| r.limitations.clone())
            .unwrap_or_default(),
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
