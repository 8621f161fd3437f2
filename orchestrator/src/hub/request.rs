//! Requests to a worker over its live connection, and their correlation:
//! each request gets a fresh `requestId`, any number may be in flight per
//! worker, and a slow one never delays another. Events carrying a pending
//! request's id (build progress) are routed to that request; its result
//! or `error` ends it. The connection task hands what arrives to
//! [`Hub::resolve`], [`Hub::event`] and [`Hub::fail_undecodable`].
//!
//! Every command's facts and outcome go to the [`CommandHook`] if one is
//! set (the audit log's): the hub knows nothing of what observes it.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use protocol::{Body, Envelope, ErrorReply};
use smol::channel::{Receiver, Sender};

use super::{Hub, Outbound};
use crate::metrics::Outcome;

/// Why a [`Hub::request`] got no result.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("worker {worker_id} is offline")]
    Offline { worker_id: String },
    #[error("worker {worker_id} did not answer {ty} within {after:?}")]
    Timeout {
        worker_id: String,
        ty: &'static str,
        after: Duration,
    },
    #[error("worker {worker_id} disconnected before answering {ty}")]
    Disconnected { worker_id: String, ty: &'static str },
    #[error("worker {worker_id} answered {ty} with an error: {error}")]
    Agent {
        worker_id: String,
        ty: &'static str,
        #[source]
        error: ErrorReply,
    },
    /// A message naming the request arrived but did not decode (e.g. a
    /// result missing a field): the request fails at once.
    #[error("worker {worker_id} answered {ty} with a message that does not decode: {detail}")]
    BadReply {
        worker_id: String,
        ty: &'static str,
        detail: String,
    },
    #[error("cannot make a request id: {0}")]
    RequestId(#[source] crate::auth::AuthError),
}

pub(super) struct Pending {
    worker_id: String,
    pub(super) conn_id: u64,
    /// Events tagged with the requestId, then the one reply. Unbounded, but
    /// drained by the waiting caller as it arrives, and fed no faster than
    /// the connection's rate limit allows.
    reply: Sender<Delivery>,
}

/// What the connection task hands to a waiting request.
enum Delivery {
    /// An event carrying the request's id (e.g. `images.build.progress`).
    Event(Body),
    /// The `*.result` or `error` that ends the request.
    Reply(Body),
    /// A message naming the request that did not decode (why): it ends
    /// the request too.
    Undecodable(String),
}

/// Removes a request's pending entry however the caller ends: answered,
/// timed out, or dropped because its HTTP client went away.
struct PendingGuard<'a> {
    hub: &'a Hub,
    request_id: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.hub.lock().pending.remove(&self.request_id);
    }
}

impl Hub {
    /// Send a command to a worker and wait for its `*.result` (or `error`).
    pub async fn request(
        &self,
        worker_id: &str,
        body: Body,
        timeout: Duration,
    ) -> Result<Body, HubError> {
        self.request_with_events(worker_id, body, timeout, |_| {})
            .await
    }

    /// Like [`Hub::request`], handing every event that carries the
    /// request's id to `on_event` as it arrives. `timeout` bounds the whole
    /// exchange, events included. Any number of requests may be in flight
    /// per worker; each waits only for its own reply. Every request is
    /// counted in the metrics by type and outcome, with its latency.
    pub async fn request_with_events(
        &self,
        worker_id: &str,
        body: Body,
        timeout: Duration,
        on_event: impl FnMut(Body),
    ) -> Result<Body, HubError> {
        let ty = body.type_name();
        let audited = self.audit.get().map(|_| CommandSent::of(worker_id, &body));
        let started = Instant::now();
        let result = self.exchange(worker_id, body, timeout, on_event).await;
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(HubError::Agent { .. }) => Outcome::AgentError,
            Err(HubError::Timeout { .. }) => Outcome::Timeout,
            Err(HubError::Offline { .. }) => Outcome::Offline,
            Err(HubError::Disconnected { .. }) => Outcome::Disconnected,
            Err(HubError::RequestId(_)) => Outcome::Internal,
            Err(HubError::BadReply { .. }) => Outcome::BadReply,
        };
        self.metrics.command(ty, outcome, started.elapsed());
        if let (Some(hook), Some(sent)) = (self.audit.get(), audited) {
            hook(sent.done(&result)).await;
        }
        result
    }

    async fn exchange(
        &self,
        worker_id: &str,
        body: Body,
        timeout: Duration,
        mut on_event: impl FnMut(Body),
    ) -> Result<Body, HubError> {
        let ty = body.type_name();
        let request_id = crate::auth::uuid_v4().map_err(HubError::RequestId)?;
        let (reply_tx, reply_rx): (Sender<Delivery>, Receiver<Delivery>) =
            smol::channel::unbounded();
        let tx = {
            let mut inner = self.lock();
            let Some(live) = inner.live.get(worker_id) else {
                return Err(HubError::Offline {
                    worker_id: worker_id.to_owned(),
                });
            };
            let (tx, conn_id) = (live.tx.clone(), live.conn_id);
            inner.pending.insert(
                request_id.clone(),
                Pending {
                    worker_id: worker_id.to_owned(),
                    conn_id,
                    reply: reply_tx,
                },
            );
            tx
        };
        let _guard = PendingGuard {
            hub: self,
            request_id: request_id.clone(),
        };
        let text = Envelope::request(request_id.clone(), body).encode();
        if tx.try_send(Outbound::Text(text)).is_err() {
            return Err(HubError::Offline {
                worker_id: worker_id.to_owned(),
            });
        }
        tracing::debug!(worker_id, request_id, ty, "request sent");
        let deadline = smol::Timer::after(timeout);
        let reply = async {
            loop {
                match reply_rx.recv().await {
                    Ok(Delivery::Event(event)) => on_event(event),
                    Ok(Delivery::Reply(body)) => return Some(Ok(body)),
                    Ok(Delivery::Undecodable(detail)) => return Some(Err(Some(detail))),
                    Err(_closed) => return Some(Err(None)),
                }
            }
        };
        let outcome = reply
            .or(async {
                deadline.await;
                None
            })
            .await;
        match outcome {
            Some(Ok(Body::Error(error))) => Err(HubError::Agent {
                worker_id: worker_id.to_owned(),
                ty,
                error,
            }),
            Some(Ok(body)) => Ok(body),
            Some(Err(Some(detail))) => Err(HubError::BadReply {
                worker_id: worker_id.to_owned(),
                ty,
                detail,
            }),
            Some(Err(None)) => Err(HubError::Disconnected {
                worker_id: worker_id.to_owned(),
                ty,
            }),
            None => Err(HubError::Timeout {
                worker_id: worker_id.to_owned(),
                ty,
                after: timeout,
            }),
        }
    }

    /// Deliver a reply from `worker_id` to the request it names. Returns
    /// false for an unknown, late or foreign `requestId` (the caller logs it).
    pub fn resolve(&self, worker_id: &str, request_id: &str, body: Body) -> bool {
        let mut inner = self.lock();
        match inner.pending.get(request_id) {
            Some(p) if p.worker_id == worker_id => {
                let pending = inner.pending.remove(request_id);
                drop(inner);
                pending.is_some_and(|p| p.reply.try_send(Delivery::Reply(body)).is_ok())
            }
            _ => false,
        }
    }

    /// End the pending request `request_id` of `worker_id` at once: a
    /// message naming it arrived but did not decode (`detail` says why).
    /// False for an unknown, late or foreign `requestId`.
    pub fn fail_undecodable(&self, worker_id: &str, request_id: &str, detail: String) -> bool {
        let mut inner = self.lock();
        match inner.pending.get(request_id) {
            Some(p) if p.worker_id == worker_id => {
                let pending = inner.pending.remove(request_id);
                drop(inner);
                pending.is_some_and(|p| p.reply.try_send(Delivery::Undecodable(detail)).is_ok())
            }
            _ => false,
        }
    }

    /// Hand an event from `worker_id` to the pending request it names,
    /// which stays pending. False for an unknown or foreign `requestId`.
    pub fn event(&self, worker_id: &str, request_id: &str, body: Body) -> bool {
        let inner = self.lock();
        match inner.pending.get(request_id) {
            Some(p) if p.worker_id == worker_id => p.reply.try_send(Delivery::Event(body)).is_ok(),
            _ => false,
        }
    }

    /// Whether `request_id` is a request this orchestrator sent `worker_id`
    /// and still awaits: replies and events for it were asked for.
    pub fn is_pending(&self, worker_id: &str, request_id: &str) -> bool {
        self.lock()
            .pending
            .get(request_id)
            .is_some_and(|p| p.worker_id == worker_id)
    }

    /// How many requests await a reply, for tests and diagnostics.
    pub fn pending_count(&self) -> usize {
        self.lock().pending.len()
    }
}

/// What the hub calls once a command's outcome is known.
pub type CommandHook =
    Box<dyn Fn(CommandDone) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A command as sent: what the audit entry needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSent {
    pub worker_id: String,
    pub ty: &'static str,
    pub container_id: Option<String>,
    pub tenant_id: Option<String>,
}

/// A command and its outcome: `ok` or the error code the API maps it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandDone {
    pub sent: CommandSent,
    pub outcome: String,
    /// When the outcome was known (Unix ms).
    pub at: u64,
}

impl CommandSent {
    /// The facts of `body` sent to `worker_id`.
    pub fn of(worker_id: &str, body: &Body) -> Self {
        let (container_id, tenant_id) = match body {
            Body::ContainerCreate(c) => (Some(&c.container_id), Some(&c.tenant_id)),
            Body::ContainerSetup(c) => (Some(&c.container_id), None),
            Body::ContainerStart(c) => (Some(&c.container_id), None),
            Body::ContainerStop(c) => (Some(&c.container_id), None),
            Body::ContainerRemove(c) => (Some(&c.container_id), None),
            Body::ContainerStats(c) => (c.container_id.as_ref(), None),
            Body::Exec(c) => (Some(&c.container_id), None),
            Body::ExecBackground(c) => (Some(&c.container_id), None),
            Body::BackgroundCapture(c) => (Some(&c.container_id), None),
            Body::BackgroundKill(c) => (Some(&c.container_id), None),
            Body::ImageBuild(c) => (None, c.tenant_id.as_ref()),
            Body::TerminalOpen(c) => (Some(&c.container_id), None),
            _ => (None, None),
        };
        Self {
            worker_id: worker_id.to_owned(),
            ty: body.type_name(),
            container_id: container_id.cloned(),
            tenant_id: tenant_id.cloned(),
        }
    }

    /// This command with the outcome of its request.
    pub fn done(self, result: &Result<Body, HubError>) -> CommandDone {
        let outcome = match result {
            Ok(Body::Error(e)) => e.code.as_str(),
            Ok(_) => "ok",
            Err(HubError::Offline { .. }) => "worker_offline",
            Err(HubError::Disconnected { .. }) => "worker_disconnected",
            Err(HubError::Timeout { .. }) => "timeout",
            Err(HubError::Agent { error, .. }) => error.code.as_str(),
            Err(HubError::RequestId(_)) => "internal",
            Err(HubError::BadReply { .. }) => "bad_reply",
        };
        CommandDone {
            sent: self,
            outcome: outcome.to_owned(),
            at: crate::now_ms(),
        }
    }
}
