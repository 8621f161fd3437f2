//! The registered part of a connection: what each message from the
//! orchestrator leads to. `worker.accepted` starts the reports (inventory,
//! heartbeats) and makes this connection the terminals' live [`Link`];
//! commands run in their own tasks and answer through the outbox;
//! `terminal.attach` and binary frames (terminal input and acks) are handled
//! at once, in the connection's own loop.

use std::time::Duration;

use protocol::terminal::TerminalAttach;
use protocol::worker::Accepted;
use protocol::{Body, Envelope};
use smol::channel::Sender;
use smol::Task;

use super::{Context, SessionError};
use crate::status;
use crate::sysinfo::CpuSampler;
use crate::terminal::Link;

/// What a message from the orchestrator asks of the connection's loop.
pub(super) enum Handled {
    /// It was the `worker.accepted`: the connection is registered, with
    /// this heartbeat interval (the orchestrator's, or the default).
    Accepted(Duration),
    /// Write this reply before anything else.
    Reply(Box<Envelope>),
    /// Nothing more (a command's reply will come through the outbox).
    Nothing,
}

/// The registered part of a session: the outbox, the heartbeat task and the
/// command tasks feed it.
pub(super) struct Serving<'a> {
    pub ctx: &'a Context,
    /// Every reply, heartbeat and inventory goes through here to the socket.
    pub out_tx: Sender<Envelope>,
    pub register_id: String,
    pub memory_total: u64,
    /// The certificate this connection was shown, for `gatewayStatus`.
    pub certificate_sha256: Option<String>,
    /// Handed to the heartbeat task at acceptance.
    pub cpu: Option<CpuSampler>,
    /// Inventory then heartbeats; cancelled when the session drops it.
    pub heartbeats: Option<Task<()>>,
    /// This connection as the terminals see it, from acceptance on.
    /// Dropped with the connection, which detaches its sessions.
    pub link: Option<Link>,
}

impl Serving<'_> {
    /// Handle one decoded message.
    pub fn on_message(&mut self, envelope: Envelope) -> Result<Handled, SessionError> {
        let registered = self.heartbeats.is_some();
        match envelope.body {
            Body::Accepted(accepted) if !registered => {
                return Ok(Handled::Accepted(self.accepted(accepted)));
            }
            Body::Error(e)
                if !registered
                    && envelope.request_id.as_deref() == Some(self.register_id.as_str()) =>
            {
                return Err(SessionError::Rejected {
                    code: e.code,
                    message: e.message,
                });
            }
            Body::Error(e) => {
                tracing::warn!(code = %e.code, message = %e.message, request_id = ?envelope.request_id, "orchestrator reported an error");
            }
            Body::RotateCredential(rotate) if registered => match envelope.request_id {
                Some(request_id) => self.rotate(request_id, rotate),
                None => tracing::warn!("worker.rotate-credential without requestId; ignored"),
            },
            Body::TerminalAttach(req) if registered => match envelope.request_id {
                Some(request_id) => {
                    return Ok(Handled::Reply(Box::new(self.attach(request_id, req))))
                }
                None => tracing::warn!("terminal.attach without requestId; ignored"),
            },
            body => match envelope.request_id {
                Some(request_id) => self.command(request_id, body),
                None => tracing::warn!(
                    ty = body.type_name(),
                    "unexpected event from orchestrator; ignored"
                ),
            },
        }
        Ok(Handled::Nothing)
    }

    /// One binary frame: terminal input or an ack. Returns the error to
    /// answer for a frame that is not one.
    pub fn on_frame(&self, bytes: &[u8]) -> Option<Envelope> {
        if self.link.is_none() {
            tracing::debug!(
                len = bytes.len(),
                "binary frame before registration; dropped"
            );
            return None;
        }
        let error = self.ctx.executor.terminals().on_frame(bytes)?;
        tracing::warn!(code = %error.code, message = %error.message, "bad binary frame from orchestrator");
        Some(Envelope::error(None, error))
    }

    /// Start the heartbeats at the dictated interval, which it returns.
    fn accepted(&mut self, accepted: Accepted) -> Duration {
        let secs = match accepted.heartbeat_interval_secs {
            0 => protocol::DEFAULT_HEARTBEAT_SECS,
            s => s,
        };
        tracing::info!(
            worker_id = %accepted.worker_id,
            protocol_version = accepted.protocol_version,
            heartbeat_secs = secs,
            "registered with orchestrator"
        );
        let terminals = self.ctx.executor.terminals().clone();
        self.link = Some(terminals.connect(self.out_tx.clone()));
        let cpu = self.cpu.take().unwrap_or_else(CpuSampler::start);
        let interval = Duration::from_secs(u64::from(secs));
        let gateway = crate::gateway::of(
            &self.ctx.endpoint,
            self.certificate_sha256.as_deref(),
            accepted.certificate_sha256.as_deref(),
        );
        if gateway.status == "intercepted" {
            tracing::warn!(detail = %gateway.detail, "the connection to the orchestrator is TLS-intercepted");
        }
        let reporting = status::Reporting {
            podman: self.ctx.podman.clone(),
            terminals,
            usage: Some(self.ctx.executor.usage().clone()).filter(|_| self.ctx.host.has_stats()),
            gateway,
            cpu,
            memory_total: self.memory_total,
        };
        self.heartbeats = Some(status::spawn_reports(
            reporting,
            interval,
            self.out_tx.clone(),
        ));
        interval
    }

    /// `terminal.attach`: answered here and written at once, so the reply
    /// reaches the orchestrator before the output it replays.
    fn attach(&self, request_id: String, req: TerminalAttach) -> Envelope {
        tracing::debug!(%request_id, session_id = req.session_id, offset = req.offset, "terminal.attach");
        self.ctx
            .executor
            .attach_reply(request_id, req, &self.out_tx)
    }

    /// Store a rotated credential (off the executor), then answer: the
    /// reply says the new credential is durable.
    fn rotate(&self, request_id: String, rotate: protocol::worker::RotateCredential) {
        let credential = self.ctx.credential.clone();
        let out = self.out_tx.clone();
        smol::spawn(async move {
            let reply = match credential.rotate_async(rotate).await {
                Ok(()) => Envelope::request(
                    request_id,
                    Body::CredentialRotated(protocol::container::Empty {}),
                ),
                Err(error) => {
                    tracing::warn!(%error, "credential rotation refused");
                    Envelope::error(Some(request_id), error.to_reply())
                }
            };
            let _ = out.send(reply).await;
        })
        .detach();
    }

    /// Run a command in its own task; its one reply goes through the outbox.
    fn command(&self, request_id: String, body: Body) {
        tracing::debug!(ty = body.type_name(), %request_id, "command received");
        self.ctx
            .executor
            .spawn(request_id, body, self.out_tx.clone());
    }
}
