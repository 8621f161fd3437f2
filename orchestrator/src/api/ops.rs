//! Commands on one recorded container, relayed to its worker: setup, start,
//! stop, exec, background commands (start, capture, kill) and stats.
//!
//! Start and stop answer the updated record; the others answer the agent's
//! result object as the protocol defines it (PROTOCOL.md section 4), since
//! the HTTP client wants exactly those fields. A container its worker no
//! longer has (agent `not_found` on start or stop) is marked `lost`.
//!
//! Every route here is `TenantMember(Container)`: the router has checked
//! that the caller may use the container record's tenant before these run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use protocol::container::{ContainerRef, ContainerSetup, ContainerStatsRequest, ContainerStop};
use protocol::container::{Repository, TaskFile};
use protocol::exec::{BackgroundCapture, BackgroundKill, Exec, ExecBackground};
use protocol::{Body, ErrorCode};
use serde::Deserialize;

use super::containers::view;
use super::relay::{agent_code, bad_reply, detached, fail, live_record, settle, worker_error};
use super::workers::check_admits;
use crate::http::{json, query, read_json, read_json_limited, ApiError, Resp};
use crate::scheduling::Work;
use crate::store::{ContainerRecord, ContainerState};
use crate::wire::record_state;
use crate::App;

/// A setup body may carry task files: up to 4 MiB.
const MAX_SETUP_BODY: usize = 4 * 1024 * 1024;
/// An exec or background command (argv and env): up to 1 MiB.
const MAX_EXEC_BODY: usize = 1024 * 1024;
/// An exec runs 60 s unless it asks otherwise (the agent's default too).
const DEFAULT_EXEC_SECS: u32 = 60;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SetupBody {
    #[serde(default)]
    repository: Option<Repository>,
    #[serde(default)]
    files: Vec<TaskFile>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StopBody {
    #[serde(default)]
    timeout_secs: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExecBody {
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    workdir: Option<String>,
    #[serde(default)]
    timeout_secs: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BackgroundBody {
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    workdir: Option<String>,
}

fn invalid(e: protocol::error::Invalid) -> ApiError {
    ApiError::bad_request(e.to_string())
}

/// Send `body` to the container's worker.
async fn send(
    app: &App,
    record: &ContainerRecord,
    body: Body,
    timeout: Duration,
) -> Result<Body, crate::hub::HubError> {
    app.hub.request(&record.worker_id, body, timeout).await
}

/// `POST /v1/containers/{id}/start`: answers the updated record.
pub(crate) async fn start(
    app: &Arc<App>,
    req: Request<Incoming>,
    id: &str,
) -> Result<Resp, ApiError> {
    lifecycle(app, req, id, false).await
}

/// `POST /v1/containers/{id}/stop`: answers the updated record.
pub(crate) async fn stop(
    app: &Arc<App>,
    req: Request<Incoming>,
    id: &str,
) -> Result<Resp, ApiError> {
    lifecycle(app, req, id, true).await
}

/// `POST /v1/containers/{id}/setup`.
pub(crate) async fn setup(app: &App, req: Request<Incoming>, id: &str) -> Result<Resp, ApiError> {
    let body: SetupBody = read_json_limited(req, MAX_SETUP_BODY).await?;
    let command = ContainerSetup {
        container_id: id.to_owned(),
        repository: body.repository,
        files: body.files,
    };
    command.validate().map_err(invalid)?;
    let record = live_record(app, id).await?;
    check_admits(app, &record.worker_id, Work::Other).await?;
    // A clone may take a while: setup gets the create deadline.
    let reply = send(
        app,
        &record,
        Body::ContainerSetup(command),
        app.timeouts.create,
    )
    .await;
    match reply {
        Ok(Body::ContainerSetupDone(done)) => Ok(json(StatusCode::OK, &done)),
        Ok(other) => Err(bad_reply(&record.worker_id, "container.setup", &other)),
        Err(error) => Err(fail(app, id, "setup failed", None, error).await),
    }
}

async fn lifecycle(
    app: &Arc<App>,
    req: Request<Incoming>,
    id: &str,
    stop: bool,
) -> Result<Resp, ApiError> {
    let (command, ty) = if stop {
        let body: StopBody = read_json(req).await?;
        if body.timeout_secs.is_some_and(|t| t > 3600) {
            return Err(ApiError::bad_request("timeoutSecs must be at most 3600"));
        }
        let stop = ContainerStop {
            container_id: id.to_owned(),
            timeout_secs: body.timeout_secs,
        };
        (Body::ContainerStop(stop), "container.stop")
    } else {
        let start = ContainerRef {
            container_id: id.to_owned(),
        };
        (Body::ContainerStart(start), "container.start")
    };
    let record = live_record(app, id).await?;
    let task_app = Arc::clone(app);
    detached(app, async move {
        lifecycle_sent(&task_app, record, command, ty).await
    })
    .await
}

/// Send a start or stop and record its outcome.
async fn lifecycle_sent(
    app: &App,
    record: ContainerRecord,
    command: Body,
    ty: &'static str,
) -> Result<Resp, ApiError> {
    let id = record.id.as_str();
    // A stop waits for its grace period before the kill.
    let timeout = match &command {
        Body::ContainerStop(s) => {
            app.timeouts.command + Duration::from_secs(u64::from(s.timeout_secs.unwrap_or(10)))
        }
        _ => app.timeouts.command,
    };
    match send(app, &record, command, timeout).await {
        Ok(Body::ContainerStarted(status) | Body::ContainerStopped(status)) => {
            let record = settle(app, id, ty, record_state(status.state), None).await?;
            Ok(view(StatusCode::OK, record))
        }
        Ok(other) => Err(bad_reply(&record.worker_id, ty, &other)),
        Err(error) if agent_code(&error) == Some(ErrorCode::NotFound) => {
            let lost = Some(ContainerState::Lost);
            Err(fail(app, id, "its worker does not have it", lost, error).await)
        }
        Err(error) => Err(fail(app, id, "lifecycle command failed", None, error).await),
    }
}

/// `POST /v1/containers/{id}/exec`.
pub(crate) async fn exec(app: &App, req: Request<Incoming>, id: &str) -> Result<Resp, ApiError> {
    let body: ExecBody = read_json_limited(req, MAX_EXEC_BODY).await?;
    let command = Exec {
        container_id: id.to_owned(),
        command: body.command,
        env: body.env,
        workdir: body.workdir,
        timeout_secs: body.timeout_secs,
    };
    command.validate().map_err(invalid)?;
    let record = live_record(app, id).await?;
    check_admits(app, &record.worker_id, Work::Other).await?;
    let secs = command.timeout_secs.unwrap_or(DEFAULT_EXEC_SECS);
    let timeout = Duration::from_secs(u64::from(secs)) + app.timeouts.exec_grace;
    match send(app, &record, Body::Exec(command), timeout).await {
        Ok(Body::ExecDone(result)) => Ok(json(StatusCode::OK, &result)),
        Ok(other) => Err(bad_reply(&record.worker_id, "container.exec", &other)),
        Err(error) => Err(worker_error(error)),
    }
}

/// `POST /v1/containers/{id}/background`.
pub(crate) async fn background(
    app: &App,
    req: Request<Incoming>,
    id: &str,
) -> Result<Resp, ApiError> {
    let body: BackgroundBody = read_json_limited(req, MAX_EXEC_BODY).await?;
    let command = ExecBackground {
        container_id: id.to_owned(),
        command: body.command,
        env: body.env,
        workdir: body.workdir,
    };
    command.validate().map_err(invalid)?;
    let record = live_record(app, id).await?;
    check_admits(app, &record.worker_id, Work::Other).await?;
    let body = Body::ExecBackground(command);
    match send(app, &record, body, app.timeouts.command).await {
        Ok(Body::BackgroundStarted(started)) => Ok(json(StatusCode::OK, &started)),
        Ok(other) => Err(bad_reply(
            &record.worker_id,
            "container.exec.background",
            &other,
        )),
        Err(error) => Err(worker_error(error)),
    }
}

/// `GET /v1/containers/{id}/background/{handle}?offset=N`.
pub(crate) async fn capture(
    app: &App,
    req: Request<Incoming>,
    id: &str,
    handle: &str,
) -> Result<Resp, ApiError> {
    let offset = match query(&req, "offset") {
        None => 0,
        Some(n) => n
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request("offset must be a non-negative integer"))?,
    };
    let record = live_record(app, id).await?;
    let command = Body::BackgroundCapture(BackgroundCapture {
        container_id: id.to_owned(),
        handle: handle.to_owned(),
        offset,
    });
    match send(app, &record, command, app.timeouts.command).await {
        Ok(Body::BackgroundOutput(output)) => Ok(json(StatusCode::OK, &output)),
        Ok(other) => Err(bad_reply(&record.worker_id, "capture", &other)),
        Err(error) => Err(worker_error(error)),
    }
}

/// `POST /v1/containers/{id}/background/{handle}/kill`.
pub(crate) async fn kill(
    app: &App,
    _req: Request<Incoming>,
    id: &str,
    handle: &str,
) -> Result<Resp, ApiError> {
    let record = live_record(app, id).await?;
    let command = Body::BackgroundKill(BackgroundKill {
        container_id: id.to_owned(),
        handle: handle.to_owned(),
    });
    match send(app, &record, command, app.timeouts.command).await {
        Ok(Body::BackgroundKilled(killed)) => Ok(json(StatusCode::OK, &killed)),
        Ok(other) => Err(bad_reply(&record.worker_id, "kill", &other)),
        Err(error) => Err(worker_error(error)),
    }
}

/// `GET /v1/containers/{id}/stats`: the container's entry of `container.stats`.
/// `GET /v1/containers/{id}/stats`.
pub(crate) async fn stats(app: &App, id: &str) -> Result<Resp, ApiError> {
    let record = live_record(app, id).await?;
    let command = Body::ContainerStats(ContainerStatsRequest {
        container_id: Some(id.to_owned()),
    });
    match send(app, &record, command, app.timeouts.command).await {
        Ok(Body::ContainerStatsResult(list)) => {
            match list.stats.into_iter().find(|s| s.container_id == id) {
                Some(entry) => Ok(json(StatusCode::OK, &entry)),
                None => Err(ApiError::conflict(format!(
                    "no stats for container {id}: is it running?"
                ))),
            }
        }
        Ok(other) => Err(bad_reply(&record.worker_id, "container.stats", &other)),
        Err(error) => Err(worker_error(error)),
    }
}
