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
    /// The replica holding the worker's connection could not be asked:
    /// it refused this one (e.g. another admin token), answered with an
    /// error, or with more than a replica ever answers.
    #[error("worker {worker_id}: its replica could not be asked: {detail}")]
    Replica { worker_id: String, detail: String },
    /// Which replica holds the worker's connection could not be read (the
    /// database is unreachable...): the store's error, not "offline".
    #[error("worker {worker_id}: its replica could not be read: {source}")]
    Store {
        worker_id: String,
        #[source]
        source: crate::store::StoreError,
    },
}

pub(super) struct Pending {
    worker_id: String,
    pub(super) conn_id: u64,
    /// Events tagged with the requestId, then the one reply. Unbounded, but
    /// drained by the waiting caller as it arrives, and fed no faster than
    /// the connection's rate limit allows.
    reply: Sender<Delivery>,
}

/// Why [`Hub::exchange`] has no reply: no connection here to send on
/// (the command given back, for another replica), or a failure after it
/// was sent.
enum Unsent {
    Offline(Body),
    Failed(HubError),
}

/// What became of a request relayed from another replica.
#[derive(Debug)]
pub enum Relayed {
    /// The worker's answer, or why there is none.
    Done(Result<Body, HubError>),
    /// The connection the other replica named is not here (anymore).
    Moved,
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
    ///
    /// A worker whose agent is connected to another replica is reached
    /// through it ([`super::Remote`]); the request is audited and counted
    /// here, where it was made.
    pub async fn request_with_events(
        &self,
        worker_id: &str,
        body: Body,
        timeout: Duration,
        mut on_event: impl FnMut(Body) + Send,
    ) -> Result<Body, HubError> {
        let ty = body.type_name();
        let audited = self.audit.get().map(|_| CommandSent::of(worker_id, &body));
        let started = Instant::now();
        let result = match self
            .exchange(worker_id, None, body, timeout, &mut on_event)
            .await
        {
            Err(Unsent::Offline(body)) => match self.remote.get() {
                Some(remote) => {
                    remote
                        .forward(worker_id, body, timeout, &mut on_event)
                        .await
                }
                None => Err(HubError::Offline {
                    worker_id: worker_id.to_owned(),
                }),
            },
            Err(Unsent::Failed(error)) => Err(error),
            Ok(reply) => Ok(reply),
        };
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(HubError::Agent { .. }) => Outcome::AgentError,
            Err(HubError::Timeout { .. }) => Outcome::Timeout,
            Err(HubError::Offline { .. }) => Outcome::Offline,
            Err(HubError::Disconnected { .. }) => Outcome::Disconnected,
            Err(HubError::RequestId(_) | HubError::Replica { .. } | HubError::Store { .. }) => {
                Outcome::Internal
            }
            Err(HubError::BadReply { .. }) => Outcome::BadReply,
        };
        self.metrics.command(ty, outcome, started.elapsed());
        if let (Some(hook), Some(sent)) = (self.audit.get(), audited) {
            hook(sent.done(&result)).await;
        }
        result
    }

    /// A request relayed by another replica, which read that the
    /// connection registered with `epoch` owns the worker: sent only on
    /// this hub's connection of that epoch (never on to a third replica),
    /// and neither audited nor counted here (the replica that took the
    /// call does both). [`Relayed::Moved`] when this hub holds no such
    /// connection.
    pub async fn relay(
        &self,
        worker_id: &str,
        epoch: u64,
        body: Body,
        timeout: Duration,
        mut on_event: impl FnMut(Body) + Send,
    ) -> Relayed {
        match self
            .exchange(worker_id, Some(epoch), body, timeout, &mut on_event)
            .await
        {
            Ok(reply) => Relayed::Done(Ok(reply)),
            Err(Unsent::Failed(error)) => Relayed::Done(Err(error)),
            Err(Unsent::Offline(_)) => Relayed::Moved,
        }
    }

    async fn exchange(
        &self,
        worker_id: &str,
        epoch: Option<u64>,
        body: Body,
        timeout: Duration,
        on_event: &mut (dyn FnMut(Body) + Send),
    ) -> Result<Body, Unsent> {
        let ty = body.type_name();
        let request_id =
            crate::auth::uuid_v4().map_err(|e| Unsent::Failed(HubError::RequestId(e)))?;
        let (reply_tx, reply_rx): (Sender<Delivery>, Receiver<Delivery>) =
            smol::channel::unbounded();
        let tx = {
            let mut inner = self.lock();
            let live = inner
                .live
                .get(worker_id)
                .filter(|l| epoch.is_none_or(|e| e == l.epoch));
            let Some(live) = live else {
                return Err(Unsent::Offline(body));
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
            // The connection is closing: its worker is as good as offline.
            return Err(Unsent::Failed(HubError::Offline {
                worker_id: worker_id.to_owned(),
            }));
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
        let result = match outcome {
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
        };
        result.map_err(Unsent::Failed)
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
            Err(HubError::Replica { .. }) => "replica_error",
            Err(HubError::BadReply { .. }) => "bad_reply",
            Err(HubError::Store { source, .. }) if source.is_unavailable() => "store_unavailable",
            Err(HubError::Store { .. }) => "internal",
        };
        CommandDone {
            sent: self,
            outcome: outcome.to_owned(),
            at: crate::now_ms(),
        }
    }
}
