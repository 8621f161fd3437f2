//! Live terminals: one PTY per session, with a bounded scrollback addressed
//! by byte offsets, so a session outlives the link to the orchestrator and a
//! reconnect replays exactly what was missed.
//!
//! The PTY is made inside the container when the container has the helper
//! (every container a static agent creates: its own executable, mounted at
//! `/.crops/crops-pty`), which hands the master to the agent; otherwise on
//! the host, with `podman exec -it` on its slave. Either way the agent
//! holds the master; `backend` hides where it came from, so nothing else
//! here asks.
//!
//! [`Terminals`] is the registry, one per agent, shared by every connection.
//! A session streams to at most one [`Link`] (the live connection it was
//! opened on or attached from); without one it keeps running, its output
//! held in the scrollback (the flow-control window stops the reader long
//! before the ring overflows), until the grace period hangs it up.
//!
//! * `backend`: the two ways into a container's terminal, one interface.
//! * [`helper`]: `crops-pty`, the PTY helper run inside the container.
//! * [`handoff`]: the PTY master's way from the helper to the agent.
//! * `pty`: opening, resizing, reading and writing a PTY; signals.
//! * `scrollback`: the output ring and the window arithmetic.
//! * `state`: what the registry keeps per session; the input stream.
//! * `session`: a session's tasks (read, write, reap) and its end.
//! * `link`: the connection side, which sessions are served round-robin to.
//!
//! The default command is `/bin/sh` ([`DEFAULT_COMMAND`]): every image the
//! product runs has one, while bash or a login shell may be missing.

mod backend;
pub mod handoff;
pub mod helper;
mod link;
mod pty;
mod scrollback;
mod session;
mod state;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use protocol::frame::{Frame, FrameKind};
use protocol::terminal::{TerminalAttach, TerminalAttached, TerminalInfo};
use protocol::{Envelope, ErrorCode, ErrorReply};
use smol::channel::Sender;

pub use backend::Way;
pub use link::{Link, Outbound};
pub use pty::PtyError;

use crate::podman::{Podman, PodmanError};
use state::{Io, Session};

/// How long a session may stay without a link before it is hung up.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(300);
/// What `terminal.open` runs when it names no command.
pub const DEFAULT_COMMAND: &[&str] = &["/bin/sh"];
/// Sessions one agent runs at once.
pub const MAX_SESSIONS: usize = 256;

/// Why a terminal operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error("no terminal session {0} on this worker")]
    NoSession(u64),
    #[error("this worker already runs {0} terminal sessions")]
    TooMany(usize),
    #[error(transparent)]
    Pty(#[from] PtyError),
    #[error("starting the terminal: {0}")]
    Spawn(#[source] PodmanError),
    #[error(transparent)]
    Handoff(#[from] handoff::HandoffError),
    #[error(
        "podman exec ended (exit code {code:?}) before the terminal was handed over: {output}"
    )]
    NoHandoff { code: Option<i32>, output: String },
}

impl TerminalError {
    /// The wire code of this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NoSession(_) => ErrorCode::NotFound,
            Self::TooMany(_) => ErrorCode::Unavailable,
            Self::Pty(_) => ErrorCode::Internal,
            // The engine did not bring the helper up (in time).
            Self::Spawn(_) | Self::NoHandoff { .. } | Self::Handoff(_) => ErrorCode::EngineFailed,
        }
    }
}

/// Every terminal session of this agent. Cheap to clone.
#[derive(Clone)]
pub struct Terminals {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Terminals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminals")
            .field("grace", &self.shared.grace)
            .finish()
    }
}

/// What the sessions' tasks, the links and the registry share.
struct Shared {
    podman: Podman,
    grace: Duration,
    registry: Mutex<Registry>,
}

impl Shared {
    /// The registry; never held across an await.
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sessions, the live link and the sessions waiting to send on it.
#[derive(Default)]
struct Registry {
    sessions: HashMap<u64, Session>,
    link: Option<LinkSlot>,
    /// Sessions with something to send on the live link, served in turn.
    ready: VecDeque<u64>,
    next_link: u64,
}

/// The live link: its id, its outbox (which identifies it: a command's
/// replies go to the outbox of the connection it came on) and its doorbell.
struct LinkSlot {
    id: u64,
    out: Sender<Envelope>,
    bell: Sender<()>,
}

impl Registry {
    fn current(&self) -> Option<u64> {
        self.link.as_ref().map(|l| l.id)
    }

    /// The live link's id if `origin` is its outbox.
    fn link_of(&self, origin: &Sender<Envelope>) -> Option<u64> {
        self.link
            .as_ref()
            .filter(|l| l.out.same_channel(origin))
            .map(|l| l.id)
    }

    /// Queue session `id` on the live link if it streams there and has
    /// something to send; ring the link's doorbell.
    fn mark_ready(&mut self, id: u64) {
        let current = self.current();
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.queued || s.held || s.link.is_none() || s.link != current || !s.has_news() {
            return;
        }
        s.queued = true;
        self.ready.push_back(id);
        if let Some(l) = &self.link {
            Io::ring(&l.bell);
        }
    }
}

impl Terminals {
    /// No sessions yet; a session without a link for `grace` is hung up.
    pub fn new(podman: Podman, grace: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                podman,
                grace,
                registry: Mutex::new(Registry::default()),
            }),
        }
    }

    pub fn grace(&self) -> Duration {
        self.shared.grace
    }

    /// Start `argv` in the container `engine_id` on a `cols` x `rows` PTY,
    /// reached the `way` given (the helper if the container has it).
    /// A session opened from the live link's outbox (`origin`) streams there
    /// once [`Self::release`]d, i.e. once its open reply is queued ahead of
    /// its output; from anywhere else it starts detached.
    pub async fn open(
        &self,
        container_id: &str,
        engine_id: &str,
        way: Way,
        argv: &[String],
        (cols, rows): (u16, u16),
        origin: &Sender<Envelope>,
    ) -> Result<u64, TerminalError> {
        session::open(
            &self.shared,
            container_id,
            engine_id,
            way,
            argv,
            (cols, rows),
            origin,
        )
        .await
    }

    /// Let session `id` stream: its `terminal.open.result` is in the outbox.
    pub fn release(&self, id: u64) {
        let mut reg = self.shared.lock();
        if let Some(s) = reg.sessions.get_mut(&id) {
            s.held = false;
        }
        reg.mark_ready(id);
    }

    pub fn resize(&self, id: u64, cols: u16, rows: u16) -> Result<(), TerminalError> {
        let io = self.io(id)?;
        io.backend.resize(cols, rows)
    }

    /// Hang session `id` up; `terminal.exited` (reason `closed`) follows.
    pub fn close(&self, id: u64) -> Result<(), TerminalError> {
        if session::hangup(&self.shared, id, "closed") {
            Ok(())
        } else {
            Err(TerminalError::NoSession(id))
        }
    }

    /// Stream session `req.sessionId` to the link whose outbox is `origin`,
    /// from `req.offset` (or the oldest byte held).
    pub fn attach(
        &self,
        req: &TerminalAttach,
        origin: &Sender<Envelope>,
    ) -> Result<TerminalAttached, TerminalError> {
        let id = req.session_id;
        let mut reg = self.shared.lock();
        let link = reg.link_of(origin);
        let s = reg
            .sessions
            .get_mut(&id)
            .ok_or(TerminalError::NoSession(id))?;
        let (start, end) = (s.output.start(), s.output.end());
        let offset = s.flow.attach(req.offset, start, end);
        if link.is_some() {
            s.link = link;
            s.held = false;
        }
        let input_end = s.input.end();
        let io = s.io.clone();
        reg.mark_ready(id);
        drop(reg);
        Io::ring(&io.wake_reader);
        tracing::info!(session_id = id, offset, end, "terminal attached");
        Ok(TerminalAttached {
            session_id: id,
            offset,
            end,
            input_end: Some(input_end),
        })
    }

    /// One binary frame from the orchestrator: input or an ack. Returns the
    /// error to answer for a frame that is not one.
    pub fn on_frame(&self, bytes: &[u8]) -> Option<ErrorReply> {
        let frame = match Frame::decode(bytes) {
            Ok(f) => f,
            Err(e) => {
                let code = match e {
                    protocol::FrameError::TooLarge { .. } => ErrorCode::TooLarge,
                    _ => ErrorCode::MalformedMessage,
                };
                return Some(ErrorReply::new(code, e.to_string()));
            }
        };
        match frame.kind {
            FrameKind::TerminalInput => self.input(frame.session_id, frame.offset, frame.payload),
            FrameKind::TerminalAck => self.ack(frame.session_id, frame.offset),
            FrameKind::TerminalOutput => {
                return Some(ErrorReply::new(
                    ErrorCode::MalformedMessage,
                    "terminal output frames go from the agent to the orchestrator",
                ))
            }
        }
        None
    }

    /// Keyboard input for session `id`, starting at input byte `offset`.
    pub fn input(&self, id: u64, offset: u64, payload: &[u8]) {
        let mut reg = self.shared.lock();
        let Some(s) = reg.sessions.get_mut(&id) else {
            tracing::debug!(
                session_id = id,
                len = payload.len(),
                "input for no session; dropped"
            );
            return;
        };
        let got = s.input.accept(offset, payload);
        if got.queued > 0 {
            Io::ring(&s.io.wake_input);
        }
        if got.duplicate > 0 || got.gap > 0 {
            tracing::debug!(
                session_id = id,
                duplicate = got.duplicate,
                gap = got.gap,
                "input out of step"
            );
        }
        if got.overflow > 0 {
            tracing::warn!(
                session_id = id,
                dropped = got.overflow,
                "terminal input backlog full; input dropped"
            );
        }
    }

    /// The orchestrator consumed session `id`'s output below `offset`.
    pub fn ack(&self, id: u64, offset: u64) {
        let mut reg = self.shared.lock();
        let Some(s) = reg.sessions.get_mut(&id) else {
            tracing::debug!(session_id = id, offset, "ack for no session; dropped");
            return;
        };
        let end = s.output.end();
        if s.flow.ack(offset, end) {
            Io::ring(&s.io.wake_reader);
        }
    }

    /// Every session held, for `worker.inventory`, by id.
    pub fn list(&self) -> Vec<TerminalInfo> {
        let reg = self.shared.lock();
        let mut all: Vec<TerminalInfo> = reg
            .sessions
            .iter()
            .map(|(id, s)| TerminalInfo {
                session_id: *id,
                container_id: s.container_id.clone(),
                output_end: s.output.end(),
                input_end: s.input.end(),
            })
            .collect();
        all.sort_by_key(|t| t.session_id);
        all
    }

    /// This agent is stopping or removing `container_id` (`on`), or that
    /// failed (`!on`): sessions ending meanwhile end with "container stopped".
    pub fn container_stopping(&self, container_id: &str, on: bool) {
        let mut reg = self.shared.lock();
        for s in reg.sessions.values_mut() {
            if s.container_id == container_id {
                s.stopping = on;
            }
        }
    }

    /// The agent is going away: SIGHUP every session's processes, now.
    pub async fn hangup_all(&self) {
        let all: Vec<Arc<Io>> = {
            let mut reg = self.shared.lock();
            reg.sessions
                .values_mut()
                .filter(|s| s.ended.is_none())
                .map(|s| {
                    s.hangup.get_or_insert("closed");
                    s.io.clone()
                })
                .collect()
        };
        if !all.is_empty() {
            tracing::info!(sessions = all.len(), "hanging up every terminal");
        }
        for io in all {
            io.signal(nix::sys::signal::Signal::SIGHUP).await;
        }
    }

    fn io(&self, id: u64) -> Result<Arc<Io>, TerminalError> {
        let reg = self.shared.lock();
        reg.sessions
            .get(&id)
            .map(|s| s.io.clone())
            .ok_or(TerminalError::NoSession(id))
    }
}
