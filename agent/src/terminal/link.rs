//! The connection's side of the terminals: a [`Link`] is one live,
//! registered connection. Sessions streaming to it wait in one ready queue
//! and are served in turn, one frame each (at most 64 KiB), so a flooding
//! session never starves the others; the connection's writer asks for the
//! next frame only when its JSON outbox is empty, so no frame ever delays a
//! heartbeat or a reply by more than one frame. When the link goes away its
//! sessions keep running, detached, until attached again or orphaned.

use protocol::frame::{Frame, FrameKind};
use protocol::terminal::TerminalExited;
use protocol::{Body, Envelope};
use smol::channel::{Receiver, Sender};
use std::sync::Arc;

use super::session::start_grace;
use super::{LinkSlot, Registry, Shared, Terminals};

/// Something a link puts on the socket for its sessions.
#[derive(Debug)]
pub enum Outbound {
    /// A binary output frame, encoded.
    Frame(Vec<u8>),
    /// `terminal.exited`, after the session's last output frame.
    Event(Envelope),
}

/// One registered connection's claim on the terminals. Dropping it detaches
/// every session streaming to it.
pub struct Link {
    shared: Arc<Shared>,
    id: u64,
    bell: Receiver<()>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("id", &self.id).finish()
    }
}

impl Terminals {
    /// The connection whose outbox is `out` is now the live link. Sessions
    /// it opens stream to it; sessions from before wait for `terminal.attach`.
    pub fn connect(&self, out: Sender<Envelope>) -> Link {
        let (bell_tx, bell) = smol::channel::bounded(1);
        let mut reg = self.shared.lock();
        reg.next_link += 1;
        let id = reg.next_link;
        reg.link = Some(LinkSlot {
            id,
            out,
            bell: bell_tx,
        });
        reg.ready.clear();
        let held = reg.sessions.len();
        drop(reg);
        tracing::debug!(link = id, sessions = held, "terminal link up");
        Link {
            shared: self.shared.clone(),
            id,
            bell,
        }
    }
}

impl Link {
    /// The next thing to send for the sessions, round-robin, if any.
    pub fn pop(&self) -> Option<Outbound> {
        let mut reg = self.shared.lock();
        if reg.current() != Some(self.id) {
            return None;
        }
        let Registry {
            sessions, ready, ..
        } = &mut *reg;
        while let Some(id) = ready.pop_front() {
            let Some(s) = sessions.get_mut(&id) else {
                continue;
            };
            s.queued = false;
            if s.link != Some(self.id) || s.held {
                continue;
            }
            if s.flow.sent < s.output.end() {
                let (offset, payload) = s.output.read(s.flow.sent, protocol::MAX_BINARY_PAYLOAD);
                s.flow.sent = offset + payload.len() as u64;
                if s.has_news() {
                    s.queued = true;
                    ready.push_back(id);
                }
                let frame = Frame {
                    kind: FrameKind::TerminalOutput,
                    session_id: id,
                    offset,
                    payload: &payload,
                };
                match frame.encode() {
                    Ok(bytes) => return Some(Outbound::Frame(bytes)),
                    // Unreachable: reads are capped at the payload limit.
                    Err(e) => {
                        tracing::warn!(session_id = id, error = %e, "output frame not sent");
                        continue;
                    }
                }
            }
            if let Some(ending) = s.ended.take() {
                sessions.remove(&id);
                tracing::debug!(session_id = id, "terminal.exited sent");
                return Some(Outbound::Event(Envelope::event(Body::TerminalExited(
                    TerminalExited {
                        session_id: id,
                        exit_code: ending.exit_code,
                        reason: ending.reason,
                    },
                ))));
            }
        }
        None
    }

    /// Wait until a session may have something to send.
    pub async fn ready(&self) {
        if self.bell.recv().await.is_err() {
            // Replaced by a newer link: this one has nothing more to send.
            futures_lite::future::pending::<()>().await;
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let mut detached = Vec::new();
        {
            let mut reg = self.shared.lock();
            if reg.current() == Some(self.id) {
                reg.link = None;
                reg.ready.clear();
            }
            for (id, s) in reg.sessions.iter_mut() {
                if s.link == Some(self.id) {
                    s.link = None;
                    s.queued = false;
                    s.detached += 1;
                    detached.push((*id, s.detached));
                }
            }
        }
        if !detached.is_empty() {
            tracing::info!(
                sessions = detached.len(),
                grace_secs = self.shared.grace.as_secs(),
                "link lost; terminals keep running, detached, until attached again or the grace period ends"
            );
        }
        for (id, generation) in detached {
            start_grace(&self.shared, id, generation);
        }
    }
}
