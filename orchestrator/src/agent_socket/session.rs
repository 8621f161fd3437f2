//! One upgraded agent connection: its limits (socket buffers, message
//! size, the text message allowance), the event loop over socket, hub
//! queue, shutdown and deadlines; message dispatch; and the goodbye.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures_lite::FutureExt;
use hyper::body::Bytes;
use protocol::{close, Body, Envelope, ErrorCode, ErrorReply, MessageKind};
use smol::channel::{Receiver, Sender};

use crate::hub::{Hub, LaneMsg, LaneRx, Outbound};
use crate::socket::{Connection, Limits, ReadError, UpgradedIo, WriteError};
use crate::App;

/// How long one write to the agent may take before the connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The socket's buffers: tungstenite's read buffer is allocated and zeroed
/// per connection up front (128 KiB by default, which was most of an idle
/// agent's memory). A heartbeat is ~250 bytes; bigger messages grow the
/// buffer as they come. Writes are not buffered.
const LIMITS: Limits = Limits {
    read_buffer: 1024,
    write_buffer: Some(0),
    max_message: protocol::MAX_TEXT_FRAME,
};
/// Sustained text messages per second an agent may send.
const RATE_PER_SEC: f64 = 50.0;
/// Text messages an agent may send in one burst.
const RATE_BURST: f64 = 200.0;

/// Allowance of text messages: [`RATE_BURST`] at once, [`RATE_PER_SEC`] sustained.
pub(super) struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(now: Instant) -> Self {
        Self {
            tokens: RATE_BURST,
            last: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * RATE_PER_SEC).min(RATE_BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Run one upgraded connection to its end.
pub(super) async fn run(app: Arc<App>, worker_id: String, io: UpgradedIo) {
    let ws = Connection::accept(io, LIMITS).await;
    let conn_id = app.hub.next_conn_id();
    // Counted in `crops_agent_sockets_open` until this task ends.
    let _socket = app.metrics.socket_opened();
    tracing::info!(%worker_id, conn_id, "agent connected");
    let (tx, rx) = smol::channel::unbounded();
    let now = Instant::now();
    let mut conn = Conn {
        worker_id,
        conn_id,
        ws,
        tx,
        rx,
        registered: None,
        link: None,
        bucket: TokenBucket::new(now),
        opened: now,
        last_message: now,
        next_ping: now + heartbeat(&app),
        app,
    };
    let end = conn.serve().await;
    // Boxed: the goodbye holds a second `Conn`; inline, every connection's
    // task would carry room for it its whole life.
    Box::pin(conn.finish(end)).await;
}

pub(super) fn heartbeat(app: &App) -> Duration {
    Duration::from_secs(u64::from(app.heartbeat_secs))
}

/// How a connection ends.
pub(super) enum End {
    /// We close with this code and reason.
    Close { code: u16, reason: String },
    /// The agent sent a message over the size limit: close 1009, then drain.
    TooBig,
    /// The agent closed or the connection broke: nothing left to say.
    PeerGone,
}

pub(super) fn close_with(code: u16, reason: impl Into<String>) -> End {
    End::Close {
        code,
        reason: reason.into(),
    }
}

enum Event {
    Stop,
    Outbound(Option<Outbound>),
    Incoming(Result<Message, ReadError>),
    /// Input from the terminal relay on the connection's lane (its ack
    /// notices come as `Outbound::TerminalAck`); `None` once the lane is
    /// gone (a newer connection of the worker replaced this one).
    Link(Option<LaneMsg>),
    Tick,
}

/// Removes the connection from the hub however the task ends (even dropped).
pub(super) struct HubGuard {
    pub(super) hub: Arc<Hub>,
    pub(super) worker_id: String,
    pub(super) conn_id: u64,
}

impl Drop for HubGuard {
    fn drop(&mut self) {
        self.hub.unregister(&self.worker_id, self.conn_id);
    }
}

pub(super) struct Registered {
    pub(super) memory_total: u64,
    /// The store stamp of the accept: the inventory sent after it is
    /// older than any command result of this connection.
    pub(super) accepted_rev: u64,
    /// The worker's ownership epoch this connection registered with: its
    /// writes name it and are refused once a newer connection owns the
    /// worker (`store::replicas`).
    pub(super) epoch: u64,
    pub(super) _guard: HubGuard,
}

pub(super) struct Conn {
    pub(super) app: Arc<App>,
    pub(super) worker_id: String,
    pub(super) conn_id: u64,
    pub(super) ws: Connection,
    /// Given to the hub at registration; kept so `rx` never closes.
    pub(super) tx: Sender<Outbound>,
    pub(super) rx: Receiver<Outbound>,
    pub(super) registered: Option<Registered>,
    /// The connection's terminal lane, once a session opened it.
    pub(super) link: Option<LaneRx>,
    pub(super) bucket: TokenBucket,
    pub(super) opened: Instant,
    pub(super) last_message: Instant,
    pub(super) next_ping: Instant,
}

impl Conn {
    async fn serve(&mut self) -> End {
        let mut stopping: Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
            Box::pin(self.app.life.stopping());
        loop {
            let deadline = self.next_deadline();
            let event = {
                let (ws, rx, link) = (&mut self.ws, &self.rx, &self.link);
                // The agent's messages and the relay's frames race fairly:
                // neither a flood of output nor of input starves the other.
                let traffic = async { Event::Incoming(ws.read().await) }.race(async {
                    match link {
                        Some(l) => Event::Link(l.0.recv().await.ok()),
                        None => std::future::pending().await,
                    }
                });
                async {
                    stopping.as_mut().await;
                    Event::Stop
                }
                .or(async { Event::Outbound(rx.recv().await.ok()) })
                .or(traffic)
                .or(async {
                    smol::Timer::at(deadline).await;
                    Event::Tick
                })
                .await
            };
            let step = match event {
                Event::Stop => Err(close_with(1001, "orchestrator shutting down")),
                Event::Outbound(Some(Outbound::Text(text))) => self.send_text(text).await,
                Event::Outbound(Some(Outbound::Close { code, reason })) => {
                    Err(close_with(code, reason))
                }
                Event::Outbound(Some(Outbound::TerminalAck { session_id })) => {
                    self.on_link(LaneMsg::Ack { session_id }).await
                }
                Event::Outbound(Some(Outbound::Lane(lane))) => {
                    self.link = Some(lane);
                    Ok(())
                }
                Event::Outbound(None) => Ok(()),
                Event::Link(Some(msg)) => self.on_link(msg).await,
                Event::Link(None) => {
                    self.link = None;
                    Ok(())
                }
                Event::Incoming(Err(error)) => Err(self.read_failed(error)),
                Event::Incoming(Ok(message)) => {
                    self.last_message = Instant::now();
                    self.on_message(message).await
                }
                Event::Tick => self.on_tick().await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let limit = if self.registered.is_some() {
            self.last_message + self.app.offline_after()
        } else {
            self.opened + self.app.register_timeout
        };
        limit.min(self.next_ping)
    }

    async fn on_tick(&mut self) -> Result<(), End> {
        let now = Instant::now();
        if self.registered.is_none() && now >= self.opened + self.app.register_timeout {
            let secs = self.app.register_timeout.as_secs();
            return Err(close_with(
                close::REGISTER_TIMEOUT,
                format!("no worker.register within {secs} s"),
            ));
        }
        if self.registered.is_some() && now >= self.last_message + self.app.offline_after() {
            let secs = self.app.offline_after().as_secs();
            return Err(close_with(
                close::TIMEOUT,
                format!("no message for {secs} s"),
            ));
        }
        if now >= self.next_ping {
            self.next_ping = now + heartbeat(&self.app);
            self.send(Message::Ping(Bytes::new())).await?;
        }
        Ok(())
    }

    fn read_failed(&self, error: ReadError) -> End {
        let worker_id = &self.worker_id;
        match error {
            ReadError::TooBig(detail) => {
                tracing::warn!(%worker_id, %detail, "message over the size limit");
                End::TooBig
            }
            ReadError::Protocol(_) | ReadError::Reset => {
                tracing::info!(%worker_id, %error, "WebSocket protocol violation");
                close_with(1002, "WebSocket protocol violation")
            }
            ReadError::NotUtf8 => close_with(1007, "text message is not UTF-8"),
            ReadError::Ended => End::PeerGone,
            ReadError::Broken(_) => {
                tracing::debug!(%worker_id, %error, "connection broke");
                End::PeerGone
            }
        }
    }

    pub(super) async fn send(&mut self, message: Message) -> Result<(), End> {
        match self.ws.write(message, WRITE_TIMEOUT).await {
            Ok(()) => Ok(()),
            Err(error @ WriteError::Failed(_)) => {
                tracing::debug!(worker_id = %self.worker_id, %error, "write failed");
                Err(End::PeerGone)
            }
            Err(WriteError::TimedOut(_)) => {
                tracing::info!(worker_id = %self.worker_id, "write timed out");
                Err(End::PeerGone)
            }
        }
    }

    pub(super) async fn send_text(&mut self, text: String) -> Result<(), End> {
        self.send(Message::text(text)).await
    }

    pub(super) async fn reply_error(
        &mut self,
        request_id: Option<String>,
        error: ErrorReply,
    ) -> Result<(), End> {
        self.send_text(Envelope::error(request_id, error).encode())
            .await
    }

    async fn on_message(&mut self, message: Message) -> Result<(), End> {
        match message {
            // Boxed: handling a message is the biggest state of this
            // task's future, which every idle connection would otherwise
            // carry for its whole life.
            Message::Text(text) => Box::pin(self.on_text(text.as_str())).await,
            Message::Binary(bytes) => Box::pin(self.on_binary(&bytes)).await,
            // Pings are answered by tungstenite; a peer's close is answered
            // there too, and the next read then ends the stream.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => Ok(()),
        }
    }

    /// Count an unsolicited message against the allowance; close when spent.
    fn charge(&mut self) -> Result<(), End> {
        if self.bucket.take(Instant::now()) {
            return Ok(());
        }
        tracing::warn!(worker_id = %self.worker_id, "rate limit exceeded");
        Err(close_with(close::RATE_LIMITED, "rate limit exceeded"))
    }

    /// Replies and events for a request this orchestrator still awaits were
    /// asked for: they never count against the allowance, so a busy caller
    /// cannot get its own worker disconnected.
    fn solicited(&self, envelope: &Envelope) -> bool {
        let kind = envelope.body.kind();
        (kind.ends_request() || kind == MessageKind::Progress)
            && envelope
                .request_id
                .as_deref()
                .is_some_and(|id| self.app.hub.is_pending(&self.worker_id, id))
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        let decoded = Envelope::decode(text);
        if !decoded.as_ref().is_ok_and(|e| self.solicited(e)) {
            self.charge()?;
        }
        let envelope = match decoded {
            Ok(envelope) => envelope,
            Err(error) => {
                tracing::info!(worker_id = %self.worker_id, %error, "undecodable message");
                // A broken reply to a request still waiting ends it now,
                // instead of leaving its caller to the deadline.
                if let Some(id) = error.request_id().filter(|_| self.registered.is_some()) {
                    self.app
                        .hub
                        .fail_undecodable(&self.worker_id, id, error.to_string());
                }
                self.reply_error(error.request_id().map(str::to_owned), error.to_reply())
                    .await?;
                if self.registered.is_none() {
                    return Err(close_with(
                        close::PROTOCOL_ERROR,
                        "expected worker.register",
                    ));
                }
                return Ok(());
            }
        };
        let request_id = envelope.request_id;
        match (self.registered.is_some(), envelope.body) {
            (false, Body::Register(register)) => self.on_register(request_id, register).await,
            (false, body) => {
                let message = format!("{} before worker.register", body.type_name());
                self.reply_error(
                    request_id,
                    ErrorReply::new(ErrorCode::NotRegistered, message),
                )
                .await?;
                Err(close_with(
                    close::PROTOCOL_ERROR,
                    "message before worker.register",
                ))
            }
            (true, Body::Register(_)) => {
                let error = ErrorReply::new(
                    ErrorCode::AlreadyRegistered,
                    "this connection is already registered",
                );
                self.reply_error(request_id, error).await
            }
            (true, Body::Heartbeat(beat)) => self.on_heartbeat(request_id, beat).await,
            (true, Body::Inventory(inventory)) => self.on_inventory(inventory).await,
            (true, Body::TerminalExited(exited)) => {
                self.on_terminal_exited(exited);
                Ok(())
            }
            (true, body) if body.kind() == MessageKind::Progress => {
                self.on_event(request_id, body);
                Ok(())
            }
            (true, body) if body.kind().ends_request() => {
                self.on_reply(request_id, body);
                Ok(())
            }
            (true, body) => {
                let message = format!("{} is not a message an agent sends", body.type_name());
                self.reply_error(request_id, ErrorReply::new(ErrorCode::Unsupported, message))
                    .await
            }
        }
    }

    fn on_reply(&self, request_id: Option<String>, body: Body) {
        let worker_id = &self.worker_id;
        let ty = body.type_name();
        self.terminal_reply(request_id.as_deref(), &body);
        match request_id {
            Some(id) if self.app.hub.resolve(worker_id, &id, body) => {
                tracing::debug!(%worker_id, request_id = %id, ty, "reply delivered");
            }
            Some(id) => {
                tracing::info!(%worker_id, request_id = %id, ty, "reply to no pending request")
            }
            None => tracing::info!(%worker_id, ty, "reply without requestId"),
        }
    }

    /// Say goodbye as `end` asks, bounded in time, then drop the socket.
    async fn finish(mut self, end: End) {
        // Leave the hub first: requests waiting on this connection fail now,
        // not after the close handshake.
        drop(self.registered.take());
        let worker_id = self.worker_id.clone();
        match end {
            End::PeerGone => {
                tracing::info!(%worker_id, conn_id = self.conn_id, "agent disconnected")
            }
            End::Close { code, reason } => {
                tracing::info!(%worker_id, conn_id = self.conn_id, code, %reason, "closing agent connection");
                self.ws.close(code, &reason).await;
            }
            // The reader is mid-message: drain raw bytes so the agent can
            // finish writing and read our close frame.
            End::TooBig => {
                let max = 2 * protocol::MAX_TEXT_FRAME;
                self.ws.close_draining(1009, "message too big", max).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_sustained_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0);
        assert!((0..200).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        let t1 = t0 + Duration::from_millis(100);
        assert!((0..5).all(|_| b.take(t1)));
        assert!(!b.take(t1));
    }
}
