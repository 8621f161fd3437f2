//! One relayed session's live state: its mirror of the output, its viewers
//! (each a cursor into the mirror with its own acknowledged offset), the
//! input offset, the state of its agent link and how it ended.
//!
//! Flow control, end to end: the agent keeps at most `OUTPUT_WINDOW` bytes
//! of output un-acked; the ack the orchestrator gives it is the lowest
//! offset any viewer has acknowledged (or, with no viewer, what arrived).
//! So a viewer's queue is the part of the mirror between its acked offset
//! and the end: bounded by the window, held once in the mirror for every
//! viewer. A slow viewer slows its session; the agent link and other
//! sessions never wait for it, because the link task only ever copies into
//! the mirror and wakes the viewers, and a viewer's task does its own
//! writing. A viewer whose queue stays full without progress is kicked
//! (it may reattach by offset).
//!
//! Viewers expected back hold the ack too (see [`Hold`]): one whose socket
//! dropped (no close frame) until it rejoins or [`REJOIN_GRACE`] passes;
//! and, after an orchestrator restart, every viewer it had (their
//! positions died with it, and the agent's last ack was the slowest's),
//! so no ack at all leaves for [`REJOIN_GRACE`] after the session is
//! attached again. A flood then waits (the program blocks), never skips.
//!
//! Input typed while the worker is away or the session attaches is held
//! here (bounded) and sent once the agent says where its input stream
//! stands; the last input sent is kept too, so what a dropped link lost in
//! flight is sent again from the agent's `inputEnd` (see `input`).
//!
//! Everything here is synchronous, under one mutex per session, and never
//! held across an await.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use smol::channel::Sender;

use super::mirror::Mirror;

/// Largest output message sent to a browser.
pub const CHUNK: usize = 64 * 1024;
/// A viewer this far behind the output it has acknowledged, with no
/// progress for the stall limit, is disconnected.
pub const STALL_BYTES: u64 = protocol::frame::OUTPUT_WINDOW / 2;
/// How long the ack waits for viewers expected back.
pub const REJOIN_GRACE: Duration = Duration::from_secs(20);

/// Who opened a session, on what, and when; `None` on a session the agent
/// announced whose opener has not claimed it yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub container_id: String,
    pub tenant_id: String,
    pub opened_by: String,
    pub opened_at: u64,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub exit_code: Option<i32>,
    pub reason: String,
}

/// The session's agent link, by connection id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Offline,
    /// `terminal.attach` sent on this connection, its result awaited.
    Attaching(u64),
    Online(u64),
}

/// Most input held while a session is away or attaches (a paste's worth);
/// also how much input already sent is kept to send again.
pub(super) const MAX_HELD_INPUT: usize = protocol::MAX_BINARY_PAYLOAD;

/// What becomes of input handed to the link (see [`Session::input`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// Frames to send: (offset, bytes), in order.
    Send(Vec<(u64, Vec<u8>)>),
    /// Kept until the session is attached (again).
    Held,
    /// Not delivered (the session ended, or too much is held already);
    /// the viewers were told.
    Dropped(&'static str),
}

/// What a viewer's writer should send next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Status {
        online: bool,
    },
    /// How many viewers the session has now.
    Viewers(usize),
    /// Something the viewer must be told (an `error` message).
    Note(String),
    Data {
        offset: u64,
        bytes: Vec<u8>,
    },
    Exited(Exit),
    Kicked(&'static str),
    Idle,
}

/// A viewer just joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub viewer_id: u64,
    /// Where its output starts.
    pub offset: u64,
    /// Output the orchestrator has received so far.
    pub end: u64,
    /// Send `terminal.attach {offset}` on this connection now (the link is
    /// up but the session was not attached on it).
    pub attach: Option<(u64, u64)>,
}

struct Slot {
    id: u64,
    /// The next byte to send it.
    pos: u64,
    /// What it said it consumed (at most `pos`).
    acked: u64,
    wake: Sender<()>,
    /// The worker status it was last told.
    told_online: bool,
    /// When its acked offset last moved, or it was last not behind.
    progress_at: Instant,
    kicked: Option<&'static str>,
    /// The viewer count it was last told.
    told_viewers: usize,
    /// Notes waiting to be sent to it.
    notes: Vec<String>,
}

/// A viewer expected back: the ack stays at or below `acked` until it
/// rejoins (a viewer joining at or below `pos`) or `until` passes. `pos`
/// is `None` after a restart, where nothing says who is coming back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Hold {
    pub pos: Option<u64>,
    pub acked: u64,
    pub until: Instant,
}

struct State {
    meta: Option<Meta>,
    mirror: Mirror,
    /// False after a restart until the first output arrives: where the
    /// mirror starts is unknown until then.
    placed: bool,
    /// The last ack handed to the link.
    ack_sent: u64,
    /// Send the ack even if unchanged (a new connection may have lost one).
    ack_force: bool,
    /// An ack notice is queued on the link.
    ack_noticed: bool,
    /// The next input frame's offset.
    input_offset: u64,
    /// Input typed while the link is away or attaching (and input a link
    /// lost in flight), sent once the agent said where its input stream
    /// stands (after a restart this orchestrator cannot know).
    held_input: Vec<u8>,
    /// The newest input sent (at most [`MAX_HELD_INPUT`], ending at
    /// `sent_end`): sent again if a link lost it in flight.
    sent_input: VecDeque<u8>,
    /// The offset just past the newest input sent.
    sent_end: u64,
    /// Restored after a restart and not attached since.
    restored: bool,
    /// Viewers expected back.
    holds: Vec<Hold>,
    link: Link,
    slots: Vec<Slot>,
    next_viewer: u64,
    exit: Option<Exit>,
    /// Since when no viewer is attached (`None` while some are).
    idle_since: Option<Instant>,
    /// `terminal.close` is wanted (sent, or to send once the link is back).
    closing: bool,
}

/// One live session, shared by the registry, the link and its viewers.
pub struct Session {
    pub worker_id: String,
    pub session_id: u64,
    pub created: Instant,
    /// The connection a `terminal.open` made it on (its inventory, sent
    /// before, may not list it yet).
    pub opened_on: Option<u64>,
    /// Its record is in the store (its end is then recorded too).
    persisted: AtomicBool,
    /// Its end was recorded (or is being): once only.
    end_recorded: AtomicBool,
    /// How long viewers expected back hold the ack.
    rejoin: Duration,
    state: Mutex<State>,
}

impl Session {
    fn with(
        worker_id: &str,
        session_id: u64,
        meta: Option<Meta>,
        placed: bool,
        link: Link,
    ) -> Self {
        let now = Instant::now();
        let opened_on = match link {
            Link::Online(conn) if placed => Some(conn),
            _ => None,
        };
        Self {
            worker_id: worker_id.to_owned(),
            session_id,
            created: now,
            opened_on,
            persisted: AtomicBool::new(meta.is_some()),
            end_recorded: AtomicBool::new(false),
            rejoin: REJOIN_GRACE,
            state: Mutex::new(State {
                meta,
                mirror: Mirror::new(0),
                placed,
                ack_sent: 0,
                ack_force: false,
                ack_noticed: false,
                input_offset: 0,
                held_input: Vec::new(),
                sent_input: VecDeque::new(),
                sent_end: 0,
                restored: !placed,
                holds: Vec::new(),
                link,
                slots: Vec::new(),
                next_viewer: 1,
                exit: None,
                idle_since: Some(now),
                closing: false,
            }),
        }
    }

    /// A session the agent just opened on connection `conn` (if known).
    pub fn opened(worker_id: &str, session_id: u64, conn: Option<u64>) -> Self {
        let link = conn.map_or(Link::Offline, Link::Online);
        Self::with(worker_id, session_id, None, true, link)
    }

    /// A session restored from its record after a restart: no output yet.
    pub fn restored(worker_id: &str, session_id: u64, meta: Meta) -> Self {
        Self::with(worker_id, session_id, Some(meta), false, Link::Offline)
    }

    /// The same session, its viewers expected back for `rejoin`.
    pub fn with_rejoin(mut self, rejoin: Duration) -> Self {
        self.rejoin = rejoin;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Each change below leaves the state whole; poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Its record is stored.
    pub fn mark_persisted(&self) {
        self.persisted.store(true, Ordering::SeqCst);
    }

    pub fn is_persisted(&self) -> bool {
        self.persisted.load(Ordering::SeqCst)
    }

    /// True the first time only: the caller records the end.
    pub fn take_end_record(&self) -> bool {
        !self.end_recorded.swap(true, Ordering::SeqCst)
    }

    pub fn meta(&self) -> Option<Meta> {
        self.lock().meta.clone()
    }

    /// Give an announced session its opener; false if it already had one.
    pub fn claim(&self, meta: Meta) -> bool {
        let mut st = self.lock();
        if st.meta.is_some() {
            return false;
        }
        st.meta = Some(meta);
        true
    }

    pub fn exit(&self) -> Option<Exit> {
        self.lock().exit.clone()
    }

    /// Output received so far.
    #[cfg(test)]
    pub fn end(&self) -> u64 {
        self.lock().received()
    }

    /// Output arrived on connection `conn`; the ack to send, if one is due.
    pub fn output(&self, conn: u64, offset: u64, bytes: &[u8]) -> Option<u64> {
        let mut st = self.lock();
        if st.exit.is_some() {
            return None;
        }
        if !st.placed {
            st.mirror.reset(offset);
            st.placed = true;
        }
        if let super::mirror::Pushed::Gap { lost } = st.mirror.push(offset, bytes) {
            tracing::info!(worker_id = %self.worker_id, session_id = self.session_id, lost, "output skipped bytes the agent no longer had");
        }
        st.wake_all();
        st.take_ack(conn)
    }

    /// The ack to send on `conn` now, if any (the link's answer to a notice).
    pub fn ack_due(&self, conn: u64) -> Option<u64> {
        let mut st = self.lock();
        st.ack_noticed = false;
        st.take_ack(conn)
    }

    /// What becomes of input `bytes` leaving on `conn` now: frames with
    /// their offsets (any held input first), held while the session is
    /// away or attaching, or dropped (the viewers told).
    pub fn input(&self, conn: u64, bytes: Vec<u8>) -> Input {
        let mut st = self.lock();
        if st.exit.is_some() {
            return Input::Dropped("the session has ended");
        }
        if !matches!(st.link, Link::Online(c) if c == conn) {
            return match st.hold_input(bytes) {
                Ok(()) => Input::Held,
                Err(lost) => {
                    st.note_all(input::not_delivered(&lost));
                    Input::Dropped("too much typed while the session was away")
                }
            };
        }
        Input::Send(st.send_input(bytes))
    }

    /// Keep input typed while the link is away; `Err` gives back the bytes
    /// not kept (beyond [`MAX_HELD_INPUT`], or the session is over).
    pub fn hold_input(&self, bytes: Vec<u8>) -> Result<(), Vec<u8>> {
        let mut st = self.lock();
        if st.exit.is_some() {
            return Err(bytes);
        }
        st.hold_input(bytes)
    }

    /// Whether input can go out on `conn` now.
    pub fn accepts_input(&self, conn: u64) -> bool {
        let st = self.lock();
        st.exit.is_none() && st.on(conn)
    }

    /// A connection is up and its inventory lists this session: attach on
    /// it. Returns the offset to attach from (see `State::attach_from`).
    pub fn attaching(&self, conn: u64, input_end: u64) -> u64 {
        let mut st = self.lock();
        st.link = Link::Attaching(conn);
        st.resume_input(input_end);
        st.attach_from()
    }

    /// `terminal.attach` on `conn` succeeded: online, input continues at
    /// the agent's `input_end` (when it says), and the ack is to be sent
    /// again. Returns (the link should get an ack notice, input is held).
    pub fn attached(&self, conn: u64, input_end: Option<u64>) -> (bool, bool) {
        let mut st = self.lock();
        if st.link != Link::Attaching(conn) {
            return (false, false);
        }
        st.link = Link::Online(conn);
        if let Some(end) = input_end {
            st.resume_input(end);
        }
        st.settle_input();
        if std::mem::take(&mut st.restored) {
            // Who watched before the restart, and from where, died with
            // the old process: wait for them before acking anything.
            let until = Instant::now() + self.rejoin;
            st.holds.push(Hold {
                pos: None,
                acked: 0,
                until,
            });
        }
        st.ack_force = true;
        st.wake_all();
        (st.wants_notice(), !st.held_input.is_empty())
    }

    /// The attach on `conn` failed: offline until a viewer or the next
    /// inventory tries again.
    pub fn attach_failed(&self, conn: u64) {
        let mut st = self.lock();
        if st.link == Link::Attaching(conn) {
            st.link = Link::Offline;
        }
    }

    /// Connection `conn` went away.
    pub fn link_down(&self, conn: u64) {
        let mut st = self.lock();
        if st.on(conn) {
            st.link = Link::Offline;
            st.ack_noticed = false;
            st.wake_all();
        }
    }

    /// The session is over; false if it already was.
    pub fn end_with(&self, exit: Exit) -> bool {
        let mut st = self.lock();
        if st.exit.is_some() {
            return false;
        }
        st.exit = Some(exit);
        st.link = Link::Offline;
        st.holds.clear();
        let held = std::mem::take(&mut st.held_input);
        if !held.is_empty() {
            st.note_all(input::ended_with(&held));
        }
        st.wake_all();
        true
    }

    /// Mark `terminal.close` as wanted; false if it already was or the
    /// session is over.
    pub fn begin_close(&self) -> bool {
        let mut st = self.lock();
        if st.closing || st.exit.is_some() {
            return false;
        }
        st.closing = true;
        true
    }

    pub fn closing(&self) -> bool {
        self.lock().closing
    }

    /// How long the session has had no viewer (`None` while it has one or is over).
    pub fn idle_for(&self, now: Instant) -> Option<Duration> {
        let st = self.lock();
        if st.exit.is_some() {
            return None;
        }
        st.idle_since
            .map(|since| now.saturating_duration_since(since))
    }
}

mod viewers;

mod input;
pub(crate) use input::not_delivered;

#[cfg(test)]
mod tests;
