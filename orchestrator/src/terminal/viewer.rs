//! One browser's terminal socket after the 101: a reader (input, acks,
//! resizes, close) and a writer (the session message, output from the
//! mirror at this viewer's own pace, worker status, the end) on one task.
//!
//! Close codes: 1000 once the session ended (after `exited`), 1001 when the
//! orchestrator shuts down, 1009 for a message over 64 KiB, 4000 after
//! [`MAX_STRIKES`] malformed messages in a row, 4008 when the viewer stopped
//! reading with its queue full for the stall limit (it may reattach by
//! offset), 4010 after [`SILENCE`] without a word (pongs included).
//! A malformed message gets `{"type":"error","message":…}` and the socket stays.
//! A viewer whose socket drops without a close frame (a network blip, not a
//! tab closed) is expected back: the session's ack waits for it a while.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures_lite::FutureExt;
use hyper::body::Bytes;
use protocol::terminal::TerminalResize;
use protocol::Body;
use smol::channel::{Receiver, Sender};

use super::control::{self, Control};
use super::session::{Exit, Joined, Next, Session};
use crate::socket::{Connection, Limits, ReadError, Reader, UpgradedIo, WriteError, Writer};
use crate::App;

/// Largest message a browser may send: one input message of 64 KiB.
const MAX_MESSAGE: usize = protocol::MAX_BINARY_PAYLOAD;
/// The socket's buffers and limits.
pub(super) const LIMITS: Limits = Limits {
    read_buffer: 4096,
    write_buffer: None,
    max_message: MAX_MESSAGE,
};
/// Malformed messages in a row before the socket is closed as hostile.
pub const MAX_STRIKES: u32 = 20;
/// How often the writer looks at the clock (stall, pings, silence).
const TICK: Duration = Duration::from_secs(1);
const PING_EVERY: Duration = Duration::from_secs(20);
/// No message at all (pongs count) for this long: the browser is gone.
pub const SILENCE: Duration = Duration::from_secs(60);
/// How long a resize may wait for the agent.
const RESIZE_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages handled (either way) before a loop yields to its task's
/// other half and the executor, even when its socket is always ready.
const BURST: u32 = 32;

type Sink = Writer;
type Source = Reader;

/// What the viewer's task starts with.
pub(crate) enum Start {
    Live {
        session: Arc<Session>,
        joined: Joined,
        woken: Receiver<()>,
    },
    /// The session asked for is over: say so and close.
    Ended { session_id: u64, exit: Exit },
}

impl Start {
    /// The upgrade never happened: leave the session.
    pub(crate) fn abandon(self, app: &App) {
        if let Self::Live {
            session, joined, ..
        } = self
        {
            if session.leave(joined.viewer_id) {
                app.terminals.notify_ack(&session);
            }
        }
    }
}

/// How a viewer's socket ends.
enum End {
    Close(u16, String),
    /// The browser closed it (a close frame): it is not coming back.
    PeerClosed,
    /// It dropped without a word: it may come back.
    PeerGone,
}

impl End {
    /// Whether the viewer is likely to reattach soon.
    fn expected_back(&self) -> bool {
        match self {
            Self::PeerGone => true,
            Self::Close(code, _) => *code == 4010,
            Self::PeerClosed => false,
        }
    }
}

fn close(code: u16, reason: impl Into<String>) -> End {
    End::Close(code, reason.into())
}

/// Why a viewer that stopped reading is disconnected (4008).
pub(super) const STALLED: &str = "the viewer stopped reading; reattach from its offset";

/// The close after [`SILENCE`] without a word (4010).
pub(super) fn silent() -> (u16, String) {
    (4010, format!("no message for {} s", SILENCE.as_secs()))
}

/// How a failed read of a browser's socket ends it: the close code and
/// reason, or `None` when the connection went without a close (a blip:
/// the viewer is expected back). A socket carried to another replica
/// (`carried`) ends by the same codes.
pub(super) fn read_failure(error: ReadError) -> Option<(u16, String)> {
    match error {
        ReadError::TooBig(detail) => {
            tracing::info!(%detail, "terminal socket message over the limit");
            Some((1009, format!("messages are at most {MAX_MESSAGE} bytes")))
        }
        ReadError::NotUtf8 => Some((1007, "text message is not UTF-8".into())),
        ReadError::Protocol(detail) => {
            tracing::info!(%detail, "terminal socket protocol violation");
            Some((1002, "WebSocket protocol violation".into()))
        }
        ReadError::Ended | ReadError::Reset | ReadError::Broken(_) => None,
    }
}

/// Close a browser's socket, split for its task, with `code` and `reason`.
pub(super) async fn close_socket(sink: Sink, source: Source, code: u16, reason: &str) {
    tracing::debug!(code, %reason, "closing a terminal socket");
    if let Some(ws) = Connection::reunite(sink, source) {
        ws.close(code, reason).await;
    }
}

/// Run one viewer's socket to its end.
pub(crate) async fn run(app: Arc<App>, start: Start, io: UpgradedIo) {
    let ws = Connection::accept(io, LIMITS).await;
    let (mut sink, mut source) = ws.split();
    let end = match start {
        Start::Ended { session_id, exit } => {
            tracing::debug!(session_id, "viewer of an ended session");
            let sent = send(
                &mut sink,
                Message::text(control::exited(&exit)),
                app.terminals.stall,
            )
            .await;
            sent.err().unwrap_or_else(|| close(1000, "session ended"))
        }
        Start::Live {
            session,
            joined,
            woken,
        } => {
            let id = joined.viewer_id;
            tracing::info!(worker_id = %session.worker_id, session_id = session.session_id, viewer = id, offset = joined.offset, "viewer attached");
            let end = serve(&app, &session, joined, woken, &mut sink, &mut source).await;
            if session.leave_expecting(id, end.expected_back()) {
                app.terminals.notify_ack(&session);
            }
            end
        }
    };
    if let End::Close(code, reason) = end {
        close_socket(sink, source, code, &reason).await;
    }
}

async fn serve(
    app: &Arc<App>,
    session: &Arc<Session>,
    joined: Joined,
    woken: Receiver<()>,
    sink: &mut Sink,
    source: &mut Source,
) -> End {
    let t0 = Instant::now();
    let heard = AtomicU64::new(0);
    let (notes, notes_rx) = smol::channel::bounded::<String>(8);
    let id = joined.viewer_id;
    let reader = read(app, session, id, source, &notes, &heard, t0);
    let writer = write(app, session, joined, &woken, &notes_rx, sink, &heard, t0);
    let stopping = app.life.stopping();
    reader
        .or(writer)
        .or(async {
            stopping.await;
            close(1001, "orchestrator shutting down")
        })
        .await
}

fn elapsed_ms(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Send one message, bounded by the stall limit.
async fn send(sink: &mut Sink, message: Message, limit: Duration) -> Result<(), End> {
    match sink.write(message, limit).await {
        Ok(()) => Ok(()),
        Err(WriteError::Failed(_)) => Err(End::PeerGone),
        Err(WriteError::TimedOut(_)) => Err(close(4008, STALLED)),
    }
}

/// Everything the browser sends, until it goes or misbehaves.
async fn read(
    app: &Arc<App>,
    session: &Arc<Session>,
    id: u64,
    source: &mut Source,
    notes: &Sender<String>,
    heard: &AtomicU64,
    t0: Instant,
) -> End {
    let note = |text: String| {
        let _ = notes.try_send(control::error(&text));
    };
    let mut strikes = 0u32;
    let mut burst = 0u32;
    let mut peer_closed = false;
    loop {
        burst += 1;
        if burst % BURST == 0 {
            futures_lite::future::yield_now().await;
        }
        let message = match source.read().await {
            Err(ReadError::Ended) if peer_closed => return End::PeerClosed,
            Ok(message) => message,
            // Without a close: a blip, not a goodbye.
            Err(error) => {
                return match read_failure(error) {
                    Some((code, reason)) => close(code, reason),
                    None => End::PeerGone,
                }
            }
        };
        heard.store(elapsed_ms(t0), Ordering::Relaxed);
        let text = match message {
            Message::Binary(bytes) => {
                if bytes.is_empty() {
                    continue;
                }
                // Sent, or held while the worker is away; else the viewer
                // is told what was not delivered.
                if let Err(refused) = app.terminals.send_input(session, bytes.to_vec()).await {
                    note(refused.to_string());
                }
                continue;
            }
            Message::Text(text) => text,
            // tungstenite answers a close, after which the next read ends
            // the stream.
            Message::Close(_) => {
                peer_closed = true;
                continue;
            }
            // Pings are answered by tungstenite.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        match Control::parse(text.as_str()) {
            Ok(control) => {
                strikes = 0;
                if let Err(text) = on_control(app, session, id, control).await {
                    note(text);
                }
            }
            Err(reason) => {
                strikes += 1;
                if strikes >= MAX_STRIKES {
                    return close(4000, "too many malformed messages");
                }
                note(reason);
            }
        }
    }
}

async fn on_control(
    app: &Arc<App>,
    session: &Arc<Session>,
    id: u64,
    control: Control,
) -> Result<(), String> {
    match control {
        Control::Ack { offset } => {
            if session.ack(id, offset) {
                app.terminals.notify_ack(session);
            }
            Ok(())
        }
        Control::Close => {
            super::link::close(app, session, "closed by a viewer");
            Ok(())
        }
        Control::Resize { cols, rows } => {
            let body = Body::TerminalResize(TerminalResize {
                session_id: session.session_id,
                cols,
                rows,
            });
            let timeout = app.timeouts.command.min(RESIZE_TIMEOUT);
            app.hub
                .request(&session.worker_id, body, timeout)
                .await
                .map(drop)
                .map_err(|e| format!("resize not delivered: {e}"))
        }
    }
}

enum Wake {
    Woken,
    Note(String),
    Tick,
}

/// The session message, then whatever is due, as it becomes due.
#[allow(clippy::too_many_arguments)]
async fn write(
    app: &Arc<App>,
    session: &Arc<Session>,
    joined: Joined,
    woken: &Receiver<()>,
    notes: &Receiver<String>,
    sink: &mut Sink,
    heard: &AtomicU64,
    t0: Instant,
) -> End {
    let limit = app.terminals.stall;
    let id = joined.viewer_id;
    let first = control::session(session.session_id, joined.offset, joined.end);
    if let Err(end) = send(sink, Message::text(first), limit).await {
        return end;
    }
    let mut next_ping = Instant::now() + PING_EVERY;
    loop {
        if let Err(end) = flush(session, id, notes, sink, limit).await {
            return end;
        }
        let wake = async {
            let _ = woken.recv().await;
            Wake::Woken
        }
        .or(async {
            match notes.recv().await {
                Ok(text) => Wake::Note(text),
                Err(_) => std::future::pending().await,
            }
        })
        .or(async {
            smol::Timer::after(TICK).await;
            Wake::Tick
        })
        .await;
        match wake {
            Wake::Woken => continue,
            Wake::Note(text) => {
                if let Err(end) = send(sink, Message::text(text), limit).await {
                    return end;
                }
                continue;
            }
            Wake::Tick => {}
        }
        let now = Instant::now();
        if session.stalled(id, now, limit) {
            tracing::info!(
                session_id = session.session_id,
                viewer = id,
                "viewer stalled; disconnecting it"
            );
            session.kick(id, STALLED);
            continue;
        }
        let silent_ms = elapsed_ms(t0).saturating_sub(heard.load(Ordering::Relaxed));
        if Duration::from_millis(silent_ms) >= SILENCE {
            let (code, reason) = silent();
            return close(code, reason);
        }
        if now >= next_ping {
            next_ping = now + PING_EVERY;
            if let Err(end) = send(sink, Message::Ping(Bytes::new()), limit).await {
                return end;
            }
        }
    }
}

/// Send the notes and everything the session has for this viewer now.
async fn flush(
    session: &Session,
    id: u64,
    notes: &Receiver<String>,
    sink: &mut Sink,
    limit: Duration,
) -> Result<(), End> {
    let mut burst = 0u32;
    loop {
        burst += 1;
        if burst % BURST == 0 {
            futures_lite::future::yield_now().await;
        }
        while let Ok(text) = notes.try_recv() {
            send(sink, Message::text(text), limit).await?;
        }
        let message = match session.next(id) {
            Next::Idle => return Ok(()),
            Next::Data { offset, bytes } => Message::binary(control::output(offset, &bytes)),
            Next::Status { online } => Message::text(control::status(online)),
            Next::Viewers(count) => Message::text(control::viewers(count)),
            Next::Note(text) => Message::text(control::error(&text)),
            Next::Exited(exit) => {
                send(sink, Message::text(control::exited(&exit)), limit).await?;
                return Err(close(1000, "session ended"));
            }
            Next::Kicked(reason) => return Err(close(4008, reason)),
        };
        send(sink, message, limit).await?;
    }
}
