//! Worker-wide views and image builds, live from the agent:
//! `GET /v1/workers/{id}/containers` (`container.list-all`),
//! `GET /v1/workers/{id}/images` (`images.list`) and
//! `POST /v1/workers/{id}/images` (`images.build`, whose progress events
//! are collected into a bounded log returned with the result).

use std::collections::VecDeque;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use protocol::container::Empty;
use protocol::image::ImageBuild;
use protocol::Body;
use serde::{Deserialize, Serialize};

use super::relay::{self, bad_reply, worker_error};
use crate::authz::{Caller, Need};
use crate::http::{json, read_json_limited, ApiError, Resp};
use crate::App;

/// A build body carries a Containerfile of up to 256 KiB, JSON-escaped.
const MAX_BUILD_BODY: usize = 1024 * 1024;
/// Lines of build output kept: the last ones, where failures show.
pub const MAX_LOG_LINES: usize = 1000;
/// Bytes kept of one line of build output.
pub const MAX_LOG_LINE: usize = 2048;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BuildBody {
    tag: String,
    containerfile: String,
    #[serde(default)]
    tenant_id: Option<String>,
}

/// What `POST /v1/workers/{id}/images` answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuiltView {
    pub image_id: String,
    pub tag: String,
    /// The last [`MAX_LOG_LINES`] lines of build output.
    pub log: Vec<String>,
    /// True when earlier lines (or the ends of long lines) were dropped.
    pub log_truncated: bool,
}

/// The last lines of a build's output, bounded in count and width.
#[derive(Debug, Default)]
struct BuildLog {
    lines: VecDeque<String>,
    truncated: bool,
}

impl BuildLog {
    fn push(&mut self, mut line: String) {
        if line.len() > MAX_LOG_LINE {
            let mut end = MAX_LOG_LINE;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
            self.truncated = true;
        }
        if self.lines.len() == MAX_LOG_LINES {
            self.lines.pop_front();
            self.truncated = true;
        }
        self.lines.push_back(line);
    }
}

/// `GET /v1/workers/{id}/containers`: every container on the worker.
pub(crate) async fn worker_containers(
    app: &App,
    _req: Request<Incoming>,
    worker_id: &str,
) -> Result<Resp, ApiError> {
    relay::worker(app, worker_id).await?;
    let command = Body::ContainerListAll(Empty {});
    match app
        .hub
        .request(worker_id, command, app.timeouts.command)
        .await
    {
        Ok(Body::ContainerListedAll(listing)) => Ok(json(StatusCode::OK, &listing)),
        Ok(other) => Err(bad_reply(worker_id, "container.list-all", &other)),
        Err(error) => Err(worker_error(error)),
    }
}

/// `GET /v1/workers/{id}/images`.
pub(crate) async fn list(
    app: &App,
    _req: Request<Incoming>,
    worker_id: &str,
) -> Result<Resp, ApiError> {
    relay::worker(app, worker_id).await?;
    let command = Body::ImagesList(Empty {});
    match app
        .hub
        .request(worker_id, command, app.timeouts.command)
        .await
    {
        Ok(Body::ImagesListed(listing)) => Ok(json(StatusCode::OK, &listing)),
        Ok(other) => Err(bad_reply(worker_id, "images.list", &other)),
        Err(error) => Err(worker_error(error)),
    }
}

/// `POST /v1/workers/{id}/images`: build an image on that worker. A build
/// for a tenant must be on a worker that serves the tenant. Members build
/// on a byom worker of a tenant they use, or on a fleet worker for a
/// tenant they use (naming it); other builds are the operator's.
pub(crate) async fn build(
    app: &App,
    caller: &Caller,
    req: Request<Incoming>,
    worker_id: &str,
) -> Result<Resp, ApiError> {
    let body: BuildBody = read_json_limited(req, MAX_BUILD_BODY).await?;
    let command = ImageBuild {
        tag: body.tag,
        containerfile: body.containerfile,
        tenant_id: body.tenant_id,
    };
    command
        .validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let worker = relay::worker(app, worker_id).await?;
    if !caller.is_operator() {
        match (worker.tenant_scope(), &command.tenant_id) {
            (Some(_), _) => drop(caller.worker(app, worker_id, Need::Use).await?),
            (None, None) => {
                return Err(ApiError::forbidden(
                    "a build on a fleet worker must name the tenantId it is for",
                ))
            }
            (None, Some(_)) => {}
        }
    }
    crate::scheduling::admits(&worker, crate::scheduling::Work::Other)?;
    if let Some(tenant_id) = command.tenant_id.clone() {
        caller.tenant(app, &tenant_id, Need::Use).await?;
        if worker.tenant_scope().is_some_and(|t| t != tenant_id) {
            return Err(ApiError::forbidden(format!(
                "worker {worker_id} is a tenant's own machine and serves only that tenant"
            )));
        }
    }
    let tag = command.tag.clone();
    let mut log = BuildLog::default();
    let reply = app
        .hub
        .request_with_events(
            worker_id,
            Body::ImageBuild(command),
            app.timeouts.build,
            |event| {
                if let Body::BuildProgress(progress) = event {
                    // One event may carry several lines (agents batch them).
                    for line in progress.line.lines() {
                        log.push(line.to_owned());
                    }
                }
            },
        )
        .await;
    match reply {
        Ok(Body::ImageBuilt(built)) => {
            tracing::info!(worker_id, tag = %built.tag, image_id = %built.image_id, lines = log.lines.len(), "image built");
            let view = BuiltView {
                image_id: built.image_id,
                tag: built.tag,
                log: log.lines.into(),
                log_truncated: log.truncated,
            };
            Ok(json(StatusCode::OK, &view))
        }
        Ok(other) => Err(bad_reply(worker_id, "images.build", &other)),
        Err(error) => {
            tracing::info!(worker_id, %tag, %error, last_lines = ?log.lines.iter().rev().take(5).collect::<Vec<_>>(), "image build failed");
            Err(worker_error(error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_log_keeps_the_last_lines_and_cuts_long_ones() {
        let mut log = BuildLog::default();
        for n in 0..MAX_LOG_LINES + 5 {
            log.push(format!("line {n}"));
        }
        assert!(log.truncated);
        assert_eq!(log.lines.len(), MAX_LOG_LINES);
        assert_eq!(log.lines.front().map(String::as_str), Some("line 5"));

        let mut log = BuildLog::default();
        log.push("é".repeat(MAX_LOG_LINE));
        assert!(log.truncated);
        assert!(log.lines[0].len() <= MAX_LOG_LINE);
    }
}
