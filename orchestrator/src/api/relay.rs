//! Talking to a worker on behalf of an HTTP request: the hub's failures as
//! HTTP answers, the records the container routes share, and logged state
//! transitions.
//!
//! How a failure reads to the client:
//!
//! | failure | status | code |
//! |---|---|---|
//! | worker not connected | 503 | `worker_offline` |
//! | connection dropped before the reply | 503 | `worker_disconnected` |
//! | no reply within the command's timeout | 504 | `timeout` |
//! | agent `invalid_argument` | 400 | `invalid_argument` |
//! | agent `not_found` | 404 | `not_found` |
//! | agent `forbidden` | 403 | `forbidden` |
//! | agent `conflict` | 409 | `conflict` |
//! | agent `rate_limited` | 429 | `rate_limited` |
//! | agent `unsupported` | 501 | `unsupported` |
//! | agent `engine_failed` | 502 | `engine_failed` |
//! | agent `unavailable` | 503 | `unavailable` |
//! | agent `timeout` | 504 | `timeout` |
//! | any other agent code, or a reply of the wrong type | 502 | the code, or `bad_reply` |
//! | a message naming the request that does not decode | 502 | `bad_reply` |
//! | the replica holding the worker refused to relay (another admin token, a body it would not take) or answered past the bound | 502 | `replica_error` |
//! | which replica holds the worker could not be read | as any store failure: 503 | `store_unavailable` when the database is unreachable |

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::StatusCode;
use protocol::{Body, ErrorCode};

use crate::http::ApiError;
use crate::hub::HubError;
use crate::store::{ContainerRecord, ContainerState, Store, Worker};
use crate::{now_ms, App};

/// The HTTP answer to a failed worker request.
pub(crate) fn worker_error(error: HubError) -> ApiError {
    // As the store's own errors read (503 `store_unavailable`...).
    if let HubError::Store { source, .. } = error {
        return source.into();
    }
    let (status, code) = match &error {
        HubError::Store { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        HubError::Offline { .. } => (StatusCode::SERVICE_UNAVAILABLE, "worker_offline"),
        HubError::Disconnected { .. } => (StatusCode::SERVICE_UNAVAILABLE, "worker_disconnected"),
        HubError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        HubError::RequestId(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        HubError::Replica { .. } => (StatusCode::BAD_GATEWAY, "replica_error"),
        HubError::BadReply { .. } => (StatusCode::BAD_GATEWAY, "bad_reply"),
        HubError::Agent { error: reply, .. } => {
            let status = match reply.code {
                ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
                ErrorCode::NotFound => StatusCode::NOT_FOUND,
                ErrorCode::Forbidden => StatusCode::FORBIDDEN,
                ErrorCode::Conflict => StatusCode::CONFLICT,
                ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::Unsupported => StatusCode::NOT_IMPLEMENTED,
                ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            };
            (status, reply.code.as_str())
        }
    };
    ApiError::Worker {
        status,
        code,
        message: error.to_string(),
    }
}

/// The agent answered with a result of another command.
pub(super) fn bad_reply(worker_id: &str, expected: &str, got: &Body) -> ApiError {
    ApiError::Worker {
        status: StatusCode::BAD_GATEWAY,
        code: "bad_reply",
        message: format!(
            "worker {worker_id} answered {expected} with {}",
            got.type_name()
        ),
    }
}

/// The agent's error code, when `error` is an error reply from the agent.
pub(super) fn agent_code(error: &HubError) -> Option<ErrorCode> {
    match error {
        HubError::Agent { error, .. } => Some(error.code),
        _ => None,
    }
}

/// Run `work` to its end even if the request is abandoned: a client
/// hanging up mid-request must not cut short the recording of the worker's
/// answer (hyper drops a request's future when its connection ends).
///
/// `work` runs right here, in the request's own task (handing it to
/// another task and waiting for its answer would cost two thread wake-ups
/// per call); only if the request's future is dropped before `work` ends
/// does the rest of it move, still boxed and pinned, onto a tracked task of
/// its own ([`Finish`]). During shutdown nothing new starts: `work` is then
/// dropped as the orchestrator's other tasks are.
pub(crate) async fn detached<T: Send + 'static>(
    app: &Arc<App>,
    work: impl Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    Finish {
        work: Some(Box::pin(work)),
        app: Arc::clone(app),
    }
    .await
}

/// See [`detached`].
struct Finish<T: 'static> {
    work: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
    app: Arc<App>,
}

impl<T: 'static> Future for Finish<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let Some(work) = self.work.as_mut() else {
            return Poll::Pending;
        };
        let out = work.as_mut().poll(cx);
        if out.is_ready() {
            self.work = None;
        }
        out
    }
}

impl<T: 'static> Drop for Finish<T> {
    fn drop(&mut self) {
        // A `work` that panicked is not run again.
        if std::thread::panicking() {
            return;
        }
        if let Some(work) = self.work.take() {
            tracing::debug!("request abandoned; its worker's answer is still recorded");
            self.app.life.spawn(async move {
                let _ = work.await;
            });
        }
    }
}

/// A container's record, or 404.
pub(super) async fn record(store: &Arc<Store>, id: &str) -> Result<ContainerRecord, ApiError> {
    let key = id.to_owned();
    store
        .read_now(move |s| s.get_container(&key))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("container {id} not found")))
}

/// A container's record for a command: 404 if unknown, 409 once removed.
pub(super) async fn live_record(app: &App, id: &str) -> Result<ContainerRecord, ApiError> {
    let record = record(&app.store, id).await?;
    if record.state == ContainerState::Removed {
        return Err(ApiError::conflict(format!("container {id} is removed")));
    }
    Ok(record)
}

/// A worker's record, or 404.
pub(super) async fn worker(app: &App, id: &str) -> Result<Worker, ApiError> {
    let key = id.to_owned();
    app.store
        .read_now(move |s| s.get_worker(&key))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("worker {id} not found")))
}

/// Change a record (committed before returning) and log its transition.
pub(super) async fn update(
    app: &App,
    id: &str,
    why: &'static str,
    change: impl FnMut(&mut ContainerRecord) + Send + 'static,
) -> Result<ContainerRecord, ApiError> {
    let key = id.to_owned();
    let (from, record) = app
        .store
        .call(move |s| s.update_container(&key, now_ms(), change))
        .await?;
    if from != record.state {
        tracing::info!(
            container_id = %record.id,
            worker_id = %record.worker_id,
            %from,
            to = %record.state,
            why,
            "container state changed"
        );
    }
    Ok(record)
}

/// Set a record's state from a command's result, clearing its last error.
pub(super) async fn settle(
    app: &App,
    id: &str,
    why: &'static str,
    state: Option<ContainerState>,
    engine_id: Option<String>,
) -> Result<ContainerRecord, ApiError> {
    update(app, id, why, move |r| {
        if let Some(state) = state {
            r.state = state;
        }
        if engine_id.is_some() {
            r.engine_id = engine_id.clone();
        }
        r.last_error = None;
    })
    .await
}

/// Note a command's failure on the record (state unchanged unless given),
/// then hand back the HTTP error for it. A failure to write the note is
/// logged; the client still learns what the worker said.
pub(super) async fn fail(
    app: &App,
    id: &str,
    why: &'static str,
    state: Option<ContainerState>,
    error: HubError,
) -> ApiError {
    let message = error.to_string();
    let noted = update(app, id, why, move |r| {
        if let Some(state) = state {
            r.state = state;
        }
        r.last_error = Some(message.clone());
    })
    .await;
    if let Err(store_error) = noted {
        tracing::error!(container_id = id, error = %store_error, "cannot note a failure");
    }
    worker_error(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::ErrorReply;

    fn agent(code: ErrorCode) -> HubError {
        HubError::Agent {
            worker_id: "w".into(),
            ty: "container.start",
            error: ErrorReply::new(code, "why"),
        }
    }

    fn status_code(e: ApiError) -> (u16, String) {
        match e {
            ApiError::Worker { status, code, .. } => (status.as_u16(), code.to_owned()),
            other => panic!("not a worker error: {other:?}"),
        }
    }

    #[test]
    fn agent_codes_map_to_http() {
        let cases = [
            (ErrorCode::InvalidArgument, 400),
            (ErrorCode::NotFound, 404),
            (ErrorCode::Forbidden, 403),
            (ErrorCode::Conflict, 409),
            (ErrorCode::EngineFailed, 502),
            (ErrorCode::Timeout, 504),
            (ErrorCode::Unavailable, 503),
            (ErrorCode::Internal, 502),
        ];
        for (code, status) in cases {
            let (got, name) = status_code(worker_error(agent(code)));
            assert_eq!((got, name.as_str()), (status, code.as_str()));
        }
        let offline = HubError::Offline {
            worker_id: "w".into(),
        };
        assert_eq!(
            status_code(worker_error(offline)),
            (503, "worker_offline".into())
        );
    }
}
