//! One session's life: started on its backend (a PTY on the host or in the
//! container), then three concurrent jobs (read its output into the
//! scrollback while the window allows, write queued input to it, reap the
//! `podman exec` client), then its end, named for `terminal.exited`. Also
//! the hang-up (SIGHUP, then SIGKILL after a short grace) and the grace
//! timer that hangs up a session left without a link.

use std::fs::File;
use std::io;
use std::process::ExitStatus;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_lite::FutureExt;
use nix::sys::signal::Signal;
use protocol::container::ContainerState;
use protocol::Envelope;
use smol::channel::{Receiver, Sender};
use smol::process::Child;
use smol::{Async, Timer};

use super::backend::{self, Way};
use super::scrollback::{Flow, Scrollback, SCROLLBACK};
use super::state::{Ending, Input, Io, Session};
use super::{Shared, TerminalError, MAX_SESSIONS};
use crate::podman::process::new_mark;

/// Between the hang-up's SIGHUP and the SIGKILL for whatever ignored it.
const HANGUP_GRACE: Duration = Duration::from_secs(2);
/// Largest read from the PTY, and so the largest output frame.
const READ_CHUNK: usize = protocol::MAX_BINARY_PAYLOAD;
/// A read of at least this much output is a flood's ([`pump`]).
const FLOOD: usize = 8 * 1024;
/// How long a flood's partly filled frame waits for more output.
const FLOOD_WAIT: Duration = Duration::from_micros(500);
/// Largest write of input to the PTY at once.
const WRITE_CHUNK: usize = 64 * 1024;
/// Once the `podman exec` client has ended: output still taken, at most,
/// and how long the terminal may stay silent before the session ends. A
/// background job that kept the terminal open (`server &` then `exit`)
/// never ends the PTY's stream; the session ends with its command.
const DRAIN_BYTES: usize = 4 * 1024 * 1024;
const DRAIN_IDLE: Duration = Duration::from_millis(250);
/// Session ids stay below 2^53, so JavaScript holds them exactly.
const ID_LIMIT: u64 = 1 << 53;

/// Spawn the session and register it (see [`super::Terminals::open`]).
pub(super) async fn open(
    shared: &Arc<Shared>,
    container_id: &str,
    engine_id: &str,
    way: Way,
    argv: &[String],
    (cols, rows): (u16, u16),
    origin: &Sender<Envelope>,
) -> Result<u64, TerminalError> {
    if shared.lock().sessions.len() >= MAX_SESSIONS {
        return Err(TerminalError::TooMany(MAX_SESSIONS));
    }
    let mark = new_mark();
    let started = backend::start(&shared.podman, way, engine_id, argv, (cols, rows), &mark).await?;
    let (child, diag) = (started.child, started.diag);
    let (wake_reader, reader_bell) = smol::channel::bounded(1);
    let (wake_input, input_bell) = smol::channel::bounded(1);
    let io = Arc::new(Io {
        backend: started.backend,
        pid: child.id(),
        mark,
        reaped: false.into(),
        wake_reader,
        wake_input,
    });
    let (id, link) = {
        let mut reg = shared.lock();
        let id = loop {
            let id = fastrand::u64(1..ID_LIMIT);
            if !reg.sessions.contains_key(&id) {
                break id;
            }
        };
        let link = reg.link_of(origin);
        reg.sessions.insert(
            id,
            Session {
                container_id: container_id.to_owned(),
                output: Scrollback::new(SCROLLBACK),
                flow: Flow::default(),
                input: Input::default(),
                link,
                detached: 0,
                queued: false,
                held: link.is_some(),
                hangup: None,
                stopping: false,
                ended: None,
                io: io.clone(),
            },
        );
        (id, link)
    };
    tracing::info!(session_id = id, %container_id, pid = io.pid, way = way.name(), ?argv, cols, rows, linked = link.is_some(), "terminal opened");
    if link.is_none() {
        start_grace(shared, id, 0);
    }
    smol::spawn(drive(
        shared.clone(),
        id,
        io,
        (child, diag),
        reader_bell,
        input_bell,
    ))
    .detach();
    Ok(id)
}

/// Run the session to its end, then record how it ended.
async fn drive(
    shared: Arc<Shared>,
    id: u64,
    io: Arc<Io>,
    (mut child, diag): (Child, Option<Async<File>>),
    reader_bell: Receiver<()>,
    input_bell: Receiver<()>,
) {
    let writer = smol::spawn(feed(shared.clone(), id, io.clone(), input_bell));
    let (client_ended, ended_bell) = smol::channel::bounded::<()>(1);
    let reaped = async {
        let status = child.status().await;
        // From here on its pid may be another process's: never signal it.
        io.reaped.store(true, Ordering::SeqCst);
        drop(client_ended);
        status
    };
    let diag_line = async {
        match diag {
            Some(mut d) => Some(backend::last_diag_line(&mut d).await),
            None => None,
        }
    };
    let ((read_error, status), diag_line) = futures_lite::future::zip(
        futures_lite::future::zip(pump(&shared, id, &io, reader_bell, ended_bell), reaped),
        diag_line,
    )
    .await;
    drop(writer);
    finish(&shared, id, read_error, status, diag_line).await;
}

/// Read the PTY into the scrollback while the window has room. Ends at the
/// PTY's end, on a read error (returned), when the session was hung up
/// with the window shut (nobody will take that output), or once the
/// client has ended (`client_ended` closes) and the terminal has been
/// silent for [`DRAIN_IDLE`] or given [`DRAIN_BYTES`] more.
async fn pump(
    shared: &Shared,
    id: u64,
    io: &Io,
    bell: Receiver<()>,
    client_ended: Receiver<()>,
) -> Option<io::Error> {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut drain_left: Option<usize> = None;
    loop {
        if drain_left == Some(0) {
            return None;
        }
        let room = loop {
            let room = {
                let reg = shared.lock();
                let s = reg.sessions.get(&id)?;
                let room = s.flow.room(s.output.end());
                if room == 0 && s.hangup.is_some() {
                    return None;
                }
                room
            };
            if room > 0 {
                break room;
            }
            // Woken by an ack, an attach or a hang-up.
            bell.recv().await.ok()?;
        };
        let want = usize::try_from(room).unwrap_or(READ_CHUNK).min(READ_CHUNK);
        let read = async { Some(io.backend.read(&mut buf[..want]).await) };
        let got = match drain_left {
            None => {
                read.or(async {
                    let _ = client_ended.recv().await;
                    None
                })
                .await
            }
            Some(_) => {
                read.or(async {
                    Timer::after(DRAIN_IDLE).await;
                    Some(Ok(0))
                })
                .await
            }
        };
        let Some(got) = got else {
            // The client ended: from here on, a bounded drain.
            drain_left = Some(DRAIN_BYTES);
            continue;
        };
        match got {
            Ok(0) => return None,
            Ok(mut n) => {
                // Take what else is there already: a flood then moves in
                // frames of up to 64 KiB instead of the tty's 4 KiB steps,
                // while a keystroke's echo still goes out at once. A read
                // that brought a flood's worth waits a moment for the rest
                // of its frame: fewer, fuller frames cost every hop less.
                let mut waited = false;
                loop {
                    while n < want {
                        match io.backend.try_read(&mut buf[n..want]) {
                            Ok(0) | Err(_) => break,
                            Ok(m) => n += m,
                        }
                    }
                    if waited || n >= want || n < FLOOD {
                        break;
                    }
                    waited = true;
                    io.backend.readable_within(FLOOD_WAIT).await;
                }
                tracing::trace!(session_id = id, bytes = n, "terminal output");
                drain_left = drain_left.map(|left| left.saturating_sub(n));
                let mut reg = shared.lock();
                reg.sessions.get_mut(&id)?.output.push(&buf[..n]);
                reg.mark_ready(id);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Some(e),
        }
    }
}

/// Write queued input to the PTY, in order.
async fn feed(shared: Arc<Shared>, id: u64, io: Arc<Io>, bell: Receiver<()>) {
    loop {
        let chunk = {
            let mut reg = shared.lock();
            let Some(s) = reg.sessions.get_mut(&id) else {
                return;
            };
            s.input.take(WRITE_CHUNK)
        };
        if chunk.is_empty() {
            if bell.recv().await.is_err() {
                return;
            }
            continue;
        }
        tracing::trace!(session_id = id, bytes = chunk.len(), "terminal input");
        if let Err(e) = io.backend.send(&chunk).await {
            tracing::debug!(session_id = id, error = %e, "writing terminal input");
            return;
        }
    }
}

/// Name the end and hand it to the link (or drop an orphan's quietly).
async fn finish(
    shared: &Shared,
    id: u64,
    read_error: Option<io::Error>,
    status: io::Result<ExitStatus>,
    diag_line: Option<String>,
) {
    let Some((hangup, stopping, container_id, last_line)) =
        shared.lock().sessions.get(&id).map(|s| {
            (
                s.hangup,
                s.stopping,
                s.container_id.clone(),
                // Podman's own last words: its diagnostics pipe on the
                // helper's way, the terminal itself on a host PTY.
                diag_line.unwrap_or_else(|| s.output.last_line()),
            )
        })
    else {
        return;
    };
    let ending = match hangup {
        Some(reason) => Ending {
            exit_code: None,
            reason: reason.to_owned(),
        },
        None if stopping => stopped(),
        None if !running(shared, &container_id).await => stopped(),
        None => ended(read_error, status, &last_line),
    };
    tracing::info!(session_id = id, %container_id, exit_code = ?ending.exit_code, reason = %ending.reason, "terminal ended");
    let mut reg = shared.lock();
    let orphaned = hangup == Some("orphaned");
    let Some(s) = reg.sessions.get_mut(&id) else {
        return;
    };
    s.ended = Some(ending);
    if orphaned {
        // Its link is gone for good: nobody is left to tell.
        reg.sessions.remove(&id);
    } else {
        reg.mark_ready(id);
    }
}

fn stopped() -> Ending {
    Ending {
        exit_code: None,
        reason: "container stopped".into(),
    }
}

/// The process ended by itself: its exit code, or why there is none.
fn ended(read_error: Option<io::Error>, status: io::Result<ExitStatus>, last_line: &str) -> Ending {
    let failed = |why: String| Ending {
        exit_code: None,
        reason: format!("failed: {why}"),
    };
    if let Some(e) = read_error {
        return failed(format!("reading the terminal: {e}"));
    }
    match status {
        // Podman's own failure (not the command's) ends with its error line.
        Ok(st) if st.code() == Some(125) && last_line.starts_with("Error:") => {
            failed(last_line.to_owned())
        }
        Ok(st) => match st.code() {
            Some(code) => Ending {
                exit_code: Some(code),
                reason: "exited".into(),
            },
            None => failed(format!("podman exec ended by {st}")),
        },
        Err(e) => failed(format!("waiting for podman exec: {e}")),
    }
}

/// Whether the container still runs; when Podman cannot tell, assume so.
async fn running(shared: &Shared, container_id: &str) -> bool {
    match shared.podman.find(container_id).await {
        Ok(Some(c)) => c.state == ContainerState::Running,
        Ok(None) => false,
        Err(e) => {
            tracing::debug!(%container_id, error = %e, "cannot tell whether the container runs");
            true
        }
    }
}

/// Hang session `id` up with `reason`: SIGHUP to the client's group and the
/// session's processes in the container, SIGKILL to what is left after
/// [`HANGUP_GRACE`]. False if there is no such session.
pub(super) fn hangup(shared: &Arc<Shared>, id: u64, reason: &'static str) -> bool {
    let io = {
        let mut reg = shared.lock();
        let Some(s) = reg.sessions.get_mut(&id) else {
            return false;
        };
        if s.ended.is_some() || s.hangup.is_some() {
            return true;
        }
        s.hangup = Some(reason);
        s.io.clone()
    };
    tracing::info!(session_id = id, reason, "hanging up terminal");
    Io::ring(&io.wake_reader);
    smol::spawn(async move {
        io.signal(Signal::SIGHUP).await;
        Timer::after(HANGUP_GRACE).await;
        io.signal(Signal::SIGKILL).await;
    })
    .detach();
    true
}

/// Session `id` lost its link (detachment number `generation`): unless it is
/// attached again within the grace period, hang it up as orphaned, or drop
/// it if it already ended.
pub(super) fn start_grace(shared: &Arc<Shared>, id: u64, generation: u64) {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let grace = shared.grace;
    smol::spawn(async move {
        Timer::after(grace).await;
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let orphan = {
            let mut reg = shared.lock();
            match reg.sessions.get(&id) {
                Some(s) if s.link.is_none() && s.detached == generation => {
                    if s.ended.is_some() {
                        reg.sessions.remove(&id);
                        false
                    } else {
                        true
                    }
                }
                _ => false,
            }
        };
        if orphan {
            tracing::info!(
                session_id = id,
                grace_secs = grace.as_secs(),
                "terminal without a link past the grace period"
            );
            hangup(&shared, id, "orphaned");
        }
    })
    .detach();
}
