//! Container records over HTTP: create (persisted `creating` first, then
//! `container.create` on the chosen worker), list per tenant, read, remove.
//!
//! Without a `workerId`, `scheduling::choose` runs the admission and
//! placement policies first and the create goes to the worker they chose;
//! either way `scheduling::insert` admits the record as it is written.
//! The tenant is authorised once, and a record the id has already is
//! looked up once, before placement (a retry goes where it went).
//!
//! Create is idempotent on a client-chosen `id`: a retry of the same
//! container (same tenant, worker, name and image) answers 200 with the
//! record; if that record never reached the engine (still `creating`, an
//! earlier attempt got no answer; or `lost` or `failed` without an engine
//! id) the create is sent again, which the agent answers idempotently.

use std::collections::BTreeMap;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use protocol::container::{ContainerCreate, ContainerRemove, Profile};
use protocol::{domains, Body, ErrorCode};
use serde::{Deserialize, Serialize};

use super::allowlist;
use super::relay::{self, agent_code, bad_reply, fail, settle, worker_error};
use crate::audit::Deferred;
use crate::authz::{Caller, Need};
use crate::http::{json, query, read_json, ApiError, Resp};
use crate::hub::HubError;
use crate::scheduling::{self, Wishes};
use crate::store::{ContainerRecord, ContainerState, CreateOutcome};
use crate::wire::{profile_name, record_state};
use crate::{auth, now_ms, App};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateContainer {
    #[serde(default)]
    id: Option<String>,
    tenant_id: String,
    /// Omitted: the policies choose (`scheduling::choose`).
    #[serde(default)]
    worker_id: Option<String>,
    /// Placement wishes, only without `worker_id`.
    #[serde(default)]
    platform: Option<String>,
    #[serde(default)]
    arch: Option<String>,
    #[serde(default)]
    region: Option<String>,
    name: String,
    image: String,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    profile: Option<Profile>,
    #[serde(default)]
    workspace: Option<bool>,
    /// The domains it may reach (Standard, Strict): `super::allowlist`.
    #[serde(default)]
    allowed_domains: Option<Vec<String>>,
}

/// A container record as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView {
    pub id: String,
    pub tenant_id: String,
    pub worker_id: String,
    pub name: String,
    pub image: String,
    pub profile: String,
    /// `creating`, `created`, `running`, `exited`, `removed`, `lost` or `failed`.
    pub state: String,
    pub engine_id: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
    pub last_error: Option<String>,
    /// The egress allow-list it was created with (`super::allowlist`).
    #[serde(default)]
    pub allowed_domains: Vec<String>,
}

impl From<ContainerRecord> for ContainerView {
    fn from(r: ContainerRecord) -> Self {
        Self {
            state: r.state.as_str().to_owned(),
            id: r.id,
            tenant_id: r.tenant_id,
            worker_id: r.worker_id,
            name: r.name,
            image: r.image,
            profile: r.profile,
            engine_id: r.engine_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_error: r.last_error,
            allowed_domains: r.allowed_domains,
        }
    }
}

pub(crate) fn view(status: StatusCode, record: ContainerRecord) -> Resp {
    json(status, &ContainerView::from(record))
}

/// `POST /v1/containers`: the caller must be able to use the body's
/// tenant, and see the worker (a byom worker of a tenant they use, or a
/// fleet worker).
/// `intent` is the call's audit intent, to queue once admission and the
/// record are written (`crate::router::Call::intent`).
pub(crate) async fn create(
    app: &Arc<App>,
    caller: &Caller,
    req: Request<Incoming>,
    intent: Option<Deferred>,
) -> Result<Resp, ApiError> {
    let body: CreateContainer = read_json(req).await?;
    let requested = body
        .allowed_domains
        .map(|list| domains::check_list(&list))
        .transpose();
    let requested = requested.map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut command = ContainerCreate {
        container_id: match body.id {
            Some(id) => id,
            None => auth::uuid_v4()?,
        },
        tenant_id: body.tenant_id,
        name: body.name,
        image: body.image,
        env: body.env,
        labels: body.labels,
        command: body.command,
        workspace: body.workspace.unwrap_or(true),
        profile: body.profile.unwrap_or_default(),
        allowed_domains: Vec::new(),
    };
    command
        .validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    // The audit entry names the container (placed or not) by its path,
    // as the entries of every later call on it do.
    let target = format!("/v1/containers/{}", command.container_id);
    caller.noted(None, None, Some(&target));
    // Authorise the tenant once, before anything (placement included)
    // looks further.
    let tenant = caller.tenant(app, &command.tenant_id, Need::Use).await?;
    command.allowed_domains = allowlist::resolve(command.profile, requested, &tenant)?;
    let wishes = Wishes {
        platform: body.platform,
        arch: body.arch,
        region: body.region,
    };
    // The one look-up of a record the id may have already.
    let id = command.container_id.clone();
    let existing = app.store.read_now(move |s| s.get_container(&id)).await?;
    let (worker_id, placed) = match body.worker_id {
        Some(id) if wishes.is_empty() => (id, None),
        Some(_) => {
            return Err(ApiError::bad_request(
                "platform, arch and region are placement wishes: give them without workerId",
            ))
        }
        // A retry of a create that was placed already goes where it went.
        None => match &existing {
            Some(record) => (record.worker_id.clone(), None),
            None => {
                let placed = scheduling::choose(app, &tenant, &command, wishes).await?;
                (placed.worker_id.clone(), Some(placed))
            }
        },
    };
    if !auth::is_uuid(&worker_id) {
        return Err(ApiError::bad_request(
            "invalid workerId: must be a lowercase UUID",
        ));
    }
    let worker = relay::worker(app, &worker_id).await?;
    if worker.tenant_scope().is_some() && !caller.is_operator() {
        // Another tenant's machine stays hidden from those who cannot see it.
        caller.worker(app, &worker_id, Need::Use).await?;
    }
    if worker.revoked {
        return Err(ApiError::conflict(format!("worker {worker_id} is revoked")));
    }
    if worker
        .tenant_scope()
        .is_some_and(|t| t != command.tenant_id)
    {
        return Err(ApiError::forbidden(format!(
            "worker {worker_id} is a tenant's own machine and serves only that tenant"
        )));
    }

    if let Some(existing) = existing {
        // A record that never reached the engine and counts against no
        // plan is admitted again like a new one (the insert below revives
        // it); every other one is answered or sent again as it stands.
        if !existing.revivable() {
            return retried(app, existing, &worker_id, command, intent).await;
        }
    }
    // A retry above may settle its record; anything new must be admitted.
    scheduling::admits(&worker, scheduling::Work::Create)?;
    // Nothing is recorded for a worker that cannot be reached now.
    if !crate::presence::reachable(app, &worker).await {
        return Err(worker_error(HubError::Offline { worker_id }));
    }
    let now = now_ms();
    let record = ContainerRecord {
        id: command.container_id.clone(),
        tenant_id: command.tenant_id.clone(),
        worker_id: worker_id.clone(),
        name: command.name.clone(),
        image: command.image.clone(),
        profile: profile_name(command.profile).to_owned(),
        state: ContainerState::Creating,
        engine_id: None,
        created_at: now,
        updated_at: now,
        last_error: None,
        allowed_domains: command.allowed_domains.clone(),
        rev: 0,
    };
    let stored = record.clone();
    // Admission and the insert it allows, one step (placement's admission
    // is re-checked there).
    let inserted = scheduling::insert(app, &tenant, &command, stored, placed).await?;
    let status = match inserted {
        CreateOutcome::Created => StatusCode::CREATED,
        // A retry of a create that never reached the engine, admitted again.
        CreateOutcome::Revived => StatusCode::OK,
        // A concurrent create of the same id won the insert, or the id
        // names another container.
        CreateOutcome::Exists(existing) => {
            return retried(app, *existing, &worker_id, command, intent).await
        }
    };
    tracing::info!(
        container_id = %record.id,
        tenant_id = %record.tenant_id,
        %worker_id,
        state = "creating",
        "container recorded"
    );
    send_create(app, &worker_id, command, status, intent).await
}

/// A create naming an id that already has a record.
async fn retried(
    app: &Arc<App>,
    existing: ContainerRecord,
    worker_id: &str,
    command: ContainerCreate,
    intent: Option<Deferred>,
) -> Result<Resp, ApiError> {
    let same = existing.tenant_id == command.tenant_id
        && existing.worker_id == worker_id
        && existing.name == command.name
        && existing.image == command.image;
    if !same {
        return Err(ApiError::conflict(format!(
            "container id {} is already used by another container",
            existing.id
        )));
    }
    // Only a `creating` record may never have reached the engine here (a
    // revivable one was admitted again on the create path): its create is
    // sent again, the agent answering a create of an id it has
    // idempotently. Every other record, `removed` included, is final.
    if existing.state != ContainerState::Creating {
        return Ok(view(StatusCode::OK, existing));
    }
    tracing::info!(container_id = %existing.id, worker_id, state = %existing.state, "create retried; sending it again");
    send_create(app, worker_id, command, StatusCode::OK, intent).await
}

/// [`create_sent`] on its own task (see [`relay::detached`]), after
/// queuing the call's audit intent (see [`Deferred`]).
async fn send_create(
    app: &Arc<App>,
    worker_id: &str,
    command: ContainerCreate,
    status: StatusCode,
    intent: Option<Deferred>,
) -> Result<Resp, ApiError> {
    if let Some(intent) = intent {
        intent.queue(app).await?;
    }
    let task_app = Arc::clone(app);
    let worker_id = worker_id.to_owned();
    relay::detached(app, async move {
        create_sent(&task_app, &worker_id, command, status).await
    })
    .await
}

/// Send `container.create` for a record committed as `creating`, and
/// record the outcome: the worker's state on success, `failed` on an agent
/// error; without an answer (offline, disconnected, timeout) the record
/// stays `creating` for a retry or the next reconcile to settle.
async fn create_sent(
    app: &App,
    worker_id: &str,
    command: ContainerCreate,
    status: StatusCode,
) -> Result<Resp, ApiError> {
    let id = command.container_id.clone();
    let reply = app
        .hub
        .request(
            worker_id,
            Body::ContainerCreate(command),
            app.timeouts.create,
        )
        .await;
    match reply {
        Ok(Body::ContainerCreated(created)) => {
            let info = created.container;
            if info.container_id != id {
                tracing::warn!(container_id = %id, reported = %info.container_id, "create answered for another id");
            }
            let state = record_state(info.state).or(Some(ContainerState::Created));
            let record = settle(app, &id, "created", state, Some(info.engine_id)).await?;
            Ok(view(status, record))
        }
        Ok(other) => {
            let error = bad_reply(worker_id, "container.create", &other);
            let message = error.to_string();
            relay::update(app, &id, "create failed", move |r| {
                r.state = ContainerState::Failed;
                r.last_error = Some(message.clone());
            })
            .await?;
            Err(error)
        }
        Err(error @ HubError::Agent { .. }) => Err(fail(
            app,
            &id,
            "create failed",
            Some(ContainerState::Failed),
            error,
        )
        .await),
        Err(error) => Err(fail(app, &id, "create unanswered", None, error).await),
    }
}

/// `GET /v1/containers?tenantId=T` (the dispatcher checked the tenant).
pub(crate) async fn list(app: &App, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let tenant_id = query(&req, "tenantId")
        .ok_or_else(|| ApiError::bad_request("the tenantId query parameter is required"))?
        .to_owned();
    if !auth::is_uuid(&tenant_id) {
        return Err(ApiError::bad_request(
            "invalid tenantId: must be a lowercase UUID",
        ));
    }
    let key = tenant_id.clone();
    let (tenant, records) = app
        .store
        .call(move |s| {
            Ok::<_, crate::store::StoreError>((s.get_tenant(&key)?, s.list_containers(&key)?))
        })
        .await?;
    if tenant.is_none() {
        return Err(ApiError::not_found(format!("tenant {tenant_id} not found")));
    }
    let views: Vec<ContainerView> = records.into_iter().map(ContainerView::from).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "containers": views }),
    ))
}

pub(crate) async fn get(app: &App, _req: Request<Incoming>, id: &str) -> Result<Resp, ApiError> {
    Ok(view(StatusCode::OK, relay::record(&app.store, id).await?))
}

/// `DELETE /v1/containers/{id}[?force=true]`. Removing a removed container,
/// or one its worker no longer has, answers 200 with the `removed` record.
pub(crate) async fn remove(
    app: &Arc<App>,
    req: Request<Incoming>,
    id: &str,
) -> Result<Resp, ApiError> {
    let force = match query(&req, "force") {
        None | Some("false") => false,
        Some("true" | "") => true,
        Some(_) => return Err(ApiError::bad_request("force must be true or false")),
    };
    let record = relay::record(&app.store, id).await?;
    if record.state == ContainerState::Removed {
        return Ok(view(StatusCode::OK, record));
    }
    let task_app = Arc::clone(app);
    relay::detached(app, async move { removed(&task_app, record, force).await }).await
}

/// Send `container.remove` and record its outcome.
async fn removed(app: &App, record: ContainerRecord, force: bool) -> Result<Resp, ApiError> {
    let id = record.id.as_str();
    let command = Body::ContainerRemove(ContainerRemove {
        container_id: id.to_owned(),
        force,
    });
    let worker_id = &record.worker_id;
    match app
        .hub
        .request(worker_id, command, app.timeouts.command)
        .await
    {
        Ok(Body::ContainerRemoved(status)) => {
            let state = record_state(status.state).or(Some(ContainerState::Removed));
            let record = settle(app, id, "removed", state, None).await?;
            Ok(view(StatusCode::OK, record))
        }
        Ok(other) => Err(bad_reply(worker_id, "container.remove", &other)),
        Err(error) if agent_code(&error) == Some(ErrorCode::NotFound) => {
            tracing::info!(container_id = id, %worker_id, "remove: the worker no longer has it");
            let state = Some(ContainerState::Removed);
            let record = settle(app, id, "already gone from its worker", state, None).await?;
            Ok(view(StatusCode::OK, record))
        }
        Err(error) => Err(fail(app, id, "remove failed", None, error).await),
    }
}
