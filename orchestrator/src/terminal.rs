//! Live terminals: the relay between a browser's terminal socket
//! (`GET /v1/containers/{id}/terminal`, PROTOCOL.md section 7) and the
//! agent's session (binary frames on the agent socket, sections 5 and 6).
//!
//! * [`Terminals`] holds the sessions by worker and session id. The agent
//!   connections they use are the hub's: input goes on a connection's
//!   terminal lane, ack notices on its queue, and the hub tells the relay
//!   when a connection ends ([`ConnectionEnds`]). In memory; the records in
//!   the store (`store::terminals`) bring the live ones back after a restart.
//! * `session`: one session's state (mirror, viewers, acks, input offset,
//!   link state, end); `mirror`: its 1 MiB output ring.
//! * `link`: what the agent connection hands over (output frames,
//!   `terminal.exited`, the inventory's live sessions) and the commands the
//!   relay sends (`terminal.attach`, `terminal.close`), the ends of
//!   sessions with their records and audit entries, and the reaper (no
//!   viewer for the grace period: closed).
//! * `browser`: the HTTP side (checks, open or attach, the upgrade);
//!   `viewer`: one browser socket's task; `control`: its JSON messages;
//!   `carried`: a browser's socket copied to and from the replica that
//!   holds the worker's agent, when another one does.
//!
//! Nothing here blocks the agent connection: it copies output into the
//! mirror and wakes viewers; every viewer writes on its own task.

mod browser;
mod carried;
mod control;
mod link;
mod mirror;
mod session;
mod viewer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::hub::{ConnectionEnds, Hub, LaneMsg};

pub(crate) use browser::{accept, accept_carried, subprotocol_bearer};
pub(crate) use link::{on_exited, on_inventory, spawn_reaper};
pub use mirror::MIRROR_CAPACITY;
pub(crate) use session::Session;

/// How long a session may have no viewer before it is closed.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5 * 60);
/// How long a viewer may hold a full queue without reading before it is
/// disconnected (it may reattach by offset).
pub const DEFAULT_STALL: Duration = Duration::from_secs(60);
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
    /// `terminal.open` requests in flight, per worker.
    opening: HashMap<String, usize>,
}

/// Every live terminal session.
pub struct Terminals {
    inner: Mutex<Registry>,
    /// The live agent connections the sessions use.
    hub: Arc<Hub>,
    /// No viewer for this long: the session is closed.
    pub grace: Duration,
    /// A viewer stalled this long is disconnected.
    pub stall: Duration,
    /// How long viewers expected back hold a session's ack (at most the
    /// grace period).
    pub rejoin: Duration,
}

impl Terminals {
    /// The relay over `hub`'s connections, told by it when one ends.
    pub fn new(hub: Arc<Hub>, grace: Duration, stall: Duration) -> Arc<Self> {
        let terminals = Arc::new(Self {
            inner: Mutex::default(),
            hub,
            grace,
            stall,
            rejoin: session::REJOIN_GRACE.min(grace),
        });
        let ends: Arc<dyn ConnectionEnds> = terminals.clone();
        terminals.hub.set_ends(Arc::downgrade(&ends));
        terminals
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
        self.hub.conn_id(worker_id)
    }

    /// Queue an ack notice for `session` on its worker's connection.
    pub(crate) fn notify_ack(&self, session: &Session) {
        if !self.hub.notify_ack(&session.worker_id, session.session_id) {
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
            .hub
            .conn_id(&session.worker_id)
            .filter(|conn_id| session.accepts_input(*conn_id))
            .and_then(|conn_id| self.hub.lane(&session.worker_id, conn_id));
        let bytes = match link {
            Some(tx) => {
                let msg = LaneMsg::Input {
                    session_id: session.session_id,
                    bytes,
                };
                match tx.send(msg).await {
                    Ok(()) => return Ok(()),
                    // The link went meanwhile: hold them instead.
                    Err(smol::channel::SendError(LaneMsg::Input { bytes, .. })) => bytes,
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

/// A connection that ends takes its sessions offline (their viewers are
/// told and stay); input still queued on its lane is held for the next.
impl ConnectionEnds for Terminals {
    fn ended(&self, worker_id: &str, conn_id: u64, unsent: Vec<LaneMsg>) {
        for session in self.of_worker(worker_id) {
            session.link_down(conn_id);
        }
        for msg in unsent {
            let LaneMsg::Input { session_id, bytes } = msg else {
                continue;
            };
            if let Some(session) = self.find(worker_id, session_id) {
                // Offline now, so this holds it (or tells the viewers).
                session.input(conn_id, bytes);
            }
        }
    }
}
