//! Live terminals: the relay between a browser's terminal socket
//! (`GET /v1/containers/{id}/terminal`, PROTOCOL.md section 7) and the
//! agent's session (binary frames on the agent socket, sections 5 and 6).
//!
//! * [`Terminals`] is the registry: sessions by worker and session id, and
//!   each worker's link (the queues its agent connection task reads to send
//!   input and ack frames). In memory; the records in the store
//!   (`store::terminals`) bring the live ones back after a restart.
//! * `session`: one session's state (mirror, viewers, acks, input offset,
//!   link state, end); `mirror`: its 1 MiB output ring.
//! * `link`: what the agent connection hands over (output frames,
//!   `terminal.exited`, the inventory's live sessions) and the commands the
//!   relay sends (`terminal.attach`, `terminal.close`), the ends of
//!   sessions with their records and audit entries, and the reaper (no
//!   viewer for the grace period: closed).
//! * `browser`: the HTTP side (checks, open or attach, the upgrade);
//!   `viewer`: one browser socket's task; `control`: its JSON messages.
//!
//! Nothing here blocks the agent connection: it copies output into the
//! mirror and wakes viewers; every viewer writes on its own task.

mod browser;
mod control;
mod link;
mod mirror;
mod session;
mod viewer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use smol::channel::{Receiver, Sender};

use crate::hub::Outbound;

pub(crate) use browser::{accept, subprotocol_bearer};
pub(crate) use link::{on_exited, on_inventory, spawn_reaper};
pub use mirror::MIRROR_CAPACITY;
pub(crate) use session::Session;

/// How long a session may have no viewer before it is closed.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5 * 60);
/// How long a viewer may hold a full queue without reading before it is
/// disconnected (it may reattach by offset).
pub const DEFAULT_STALL: Duration = Duration::from_secs(60);
/// Input messages a link queues before viewers wait to hand over more.
/// Every registered agent connection has this queue, terminal or not, and
/// a bounded channel allocates all its slots up front (40 bytes each): 32
/// cost 1.3 KiB per idle agent. A queue of one is a single inline slot
/// (nothing allocated); the connection task takes each message as it
/// comes, so a viewer waits only while the previous one is handed over.
const INPUT_QUEUE: usize = 1;

/// What a viewer asks the agent connection task to send.
#[derive(Debug)]
pub(crate) enum LinkMsg {
    /// Input bytes for a session; the connection gives them their offset.
    Input { session_id: u64, bytes: Vec<u8> },
    /// A session's ack may have moved: send it if so.
    Ack { session_id: u64 },
}

/// The receiving end an agent connection task reads (ack notices come
/// through the connection's hub queue, as [`Outbound::TerminalAck`]).
pub(crate) struct LinkRx {
    pub input: Receiver<LinkMsg>,
}

struct LinkTx {
    conn_id: u64,
    /// Bounded: a viewer typing faster than the link sends waits.
    input: Sender<LinkMsg>,
    /// The same queue's reading end: what is left in it when the link
    /// goes is held for the next one, not lost.
    input_left: Receiver<LinkMsg>,
    /// The connection's own hub queue, for ack notices: unbounded, but at
    /// most one notice per session is queued. A channel of their own would
    /// cost every agent connection ~0.7 KiB (each channel is cache-padded).
    notices: Sender<Outbound>,
}

/// Why input was not handed to the agent (nor held for it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InputRefused {
    #[error("{0}")]
    NotDelivered(String),
    #[error("the session has ended: input not delivered")]
    Ended,
}

#[derive(Default)]
struct Registry {
    /// Worker id -> session id -> session.
    sessions: HashMap<String, HashMap<u64, Arc<Session>>>,
    /// Worker id -> its registered connection's queues.
    links: HashMap<String, LinkTx>,
    /// `terminal.open` requests in flight, per worker.
    opening: HashMap<String, usize>,
}

/// Every live terminal session and the agent links they use.
pub struct Terminals {
    inner: Mutex<Registry>,
    /// No viewer for this long: the session is closed.
    pub grace: Duration,
    /// A viewer stalled this long is disconnected.
    pub stall: Duration,
    /// How long viewers expected back hold a session's ack (at most the
    /// grace period).
    pub rejoin: Duration,
}

impl Terminals {
    pub fn new(grace: Duration, stall: Duration) -> Self {
        Self {
            inner: Mutex::default(),
            grace,
            stall,
            rejoin: session::REJOIN_GRACE.min(grace),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Every change is one insert or remove: poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live session `session_id` of `worker_id`.
    pub(crate) fn find(&self, worker_id: &str, session_id: u64) -> Option<Arc<Session>> {
        self.lock()
            .sessions
            .get(worker_id)?
            .get(&session_id)
            .cloned()
    }

    /// The session as registered: `session` if new, else the one already there.
    fn insert(&self, session: Arc<Session>) -> Arc<Session> {
        let mut reg = self.lock();
        let map = reg.sessions.entry(session.worker_id.clone()).or_default();
        Arc::clone(map.entry(session.session_id).or_insert(session))
    }

    fn remove(&self, session: &Session) {
        let mut reg = self.lock();
        if let Some(map) = reg.sessions.get_mut(&session.worker_id) {
            map.remove(&session.session_id);
            if map.is_empty() {
                reg.sessions.remove(&session.worker_id);
            }
        }
    }

    fn of_worker(&self, worker_id: &str) -> Vec<Arc<Session>> {
        self.lock()
            .sessions
            .get(worker_id)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    fn all(&self) -> Vec<Arc<Session>> {
        self.lock()
            .sessions
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// How many sessions are live (for tests and diagnostics).
    pub fn count(&self) -> usize {
        self.lock().sessions.values().map(HashMap::len).sum()
    }

    /// The worker's registered connection, if any.
    pub(crate) fn link_conn(&self, worker_id: &str) -> Option<u64> {
        self.lock().links.get(worker_id).map(|l| l.conn_id)
    }

    /// Connection `conn_id` of `worker_id` is registered: the queues it reads.
    /// `notices` is the connection's hub queue.
    pub(crate) fn link_up(
        &self,
        worker_id: &str,
        conn_id: u64,
        notices: Sender<Outbound>,
    ) -> LinkRx {
        let (input, input_rx) = smol::channel::bounded(INPUT_QUEUE);
        let old = self.lock().links.insert(
            worker_id.to_owned(),
            LinkTx {
                conn_id,
                input,
                input_left: input_rx.clone(),
                notices,
            },
        );
        if let Some(old) = old {
            // The replaced connection's sessions are offline until the new
            // one's inventory attaches them again.
            for session in self.of_worker(worker_id) {
                session.link_down(old.conn_id);
            }
            self.hold_left(worker_id, &old);
        }
        LinkRx { input: input_rx }
    }

    /// Connection `conn_id` of `worker_id` is gone: its sessions go offline
    /// (their viewers are told and stay).
    pub(crate) fn link_down(&self, worker_id: &str, conn_id: u64) {
        let gone = {
            let mut reg = self.lock();
            if reg
                .links
                .get(worker_id)
                .is_some_and(|l| l.conn_id == conn_id)
            {
                reg.links.remove(worker_id)
            } else {
                None
            }
        };
        for session in self.of_worker(worker_id) {
            session.link_down(conn_id);
        }
        if let Some(gone) = gone {
            self.hold_left(worker_id, &gone);
        }
    }

    /// Input still queued on a link that went: held for the next one.
    fn hold_left(&self, worker_id: &str, link: &LinkTx) {
        while let Ok(msg) = link.input_left.try_recv() {
            let LinkMsg::Input { session_id, bytes } = msg else {
                continue;
            };
            if let Some(session) = self.find(worker_id, session_id) {
                // Offline now, so this holds it (or tells the viewers).
                session.input(link.conn_id, bytes);
            }
        }
    }

    /// Queue an ack notice for `session` on its worker's link.
    pub(crate) fn notify_ack(&self, session: &Session) {
        let tx = self
            .lock()
            .links
            .get(&session.worker_id)
            .map(|l| l.notices.clone());
        let sent = tx.is_some_and(|tx| {
            tx.try_send(Outbound::TerminalAck {
                session_id: session.session_id,
            })
            .is_ok()
        });
        if !sent {
            session.notice_lost();
        }
    }

    /// Hand input to the session's agent link, waiting while its queue is
    /// full; while the worker is away, hold it (bounded) for its return.
    pub(crate) async fn send_input(
        &self,
        session: &Session,
        bytes: Vec<u8>,
    ) -> Result<(), InputRefused> {
        if session.exit().is_some() {
            return Err(InputRefused::Ended);
        }
        let link = self
            .lock()
            .links
            .get(&session.worker_id)
            .map(|l| (l.conn_id, l.input.clone()))
            .filter(|(conn_id, _)| session.accepts_input(*conn_id));
        let bytes = match link {
            Some((_, tx)) => {
                let msg = LinkMsg::Input {
                    session_id: session.session_id,
                    bytes,
                };
                match tx.send(msg).await {
                    Ok(()) => return Ok(()),
                    // The link went meanwhile: hold them instead.
                    Err(smol::channel::SendError(LinkMsg::Input { bytes, .. })) => bytes,
                    Err(_) => return Ok(()),
                }
            }
            None => bytes,
        };
        session.hold_input(bytes).map_err(|lost| {
            if session.exit().is_some() {
                InputRefused::Ended
            } else {
                InputRefused::NotDelivered(session::not_delivered(&lost))
            }
        })
    }

    /// Send input held while `session` attached (an empty input flushes it).
    pub(crate) async fn flush_input(&self, session: &Session) {
        if let Err(refused) = self.send_input(session, Vec::new()).await {
            tracing::info!(
                session_id = session.session_id,
                ?refused,
                "held input not sent"
            );
        }
    }

    /// Count a `terminal.open` in flight on `worker_id` until the guard drops
    /// (an inventory then leaves unknown sessions alone: one may be it).
    pub(crate) fn opening(self: &Arc<Self>, worker_id: &str) -> OpeningGuard {
        *self.lock().opening.entry(worker_id.to_owned()).or_default() += 1;
        OpeningGuard {
            terminals: Arc::clone(self),
            worker_id: worker_id.to_owned(),
        }
    }

    fn is_opening(&self, worker_id: &str) -> bool {
        self.lock().opening.get(worker_id).is_some_and(|n| *n > 0)
    }
}

/// See [`Terminals::opening`].
pub(crate) struct OpeningGuard {
    terminals: Arc<Terminals>,
    worker_id: String,
}

impl Drop for OpeningGuard {
    fn drop(&mut self) {
        let mut reg = self.terminals.lock();
        if let Some(n) = reg.opening.get_mut(&self.worker_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                reg.opening.remove(&self.worker_id);
            }
        }
    }
}

impl Terminals {
    /// Bring back the sessions stored as live (after a restart): offline,
    /// their mirrors empty, until their agents' inventories attach them.
    pub(crate) async fn restore(
        &self,
        store: &Arc<crate::store::Store>,
    ) -> Result<usize, crate::store::StoreError> {
        let live = store.call(|s| s.live_terminals()).await?;
        let count = live.len();
        for r in live {
            let meta = session::Meta {
                container_id: r.container_id,
                tenant_id: r.tenant_id,
                opened_by: r.opened_by,
                opened_at: r.opened_at,
            };
            let session = Session::restored(&r.worker_id, r.session_id, meta);
            self.insert(Arc::new(session.with_rejoin(self.rejoin)));
        }
        if count > 0 {
            tracing::info!(
                sessions = count,
                "terminal sessions restored; waiting for their agents"
            );
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_link_preallocates_only_a_few_input_slots() {
        let terminals = Terminals::new(DEFAULT_GRACE, DEFAULT_STALL);
        let (hub_tx, _hub_rx) = smol::channel::unbounded();
        let link = terminals.link_up("w1", 1, hub_tx);
        let slots = link.input.capacity();
        assert!(
            slots.is_some_and(|n| (1..=4).contains(&n)),
            "every agent connection allocates its input queue's slots up front: {slots:?}"
        );
    }
}
