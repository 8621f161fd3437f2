//! The one registry of live agent connections, by worker id: per
//! connection, its outbound queue (the text lane), its pending requests
//! (`request`) and, once a terminal session needs one, its terminal lane
//! (the binary frames). The API sends requests through it and the
//! terminal relay opens its lane through it and is told when a connection
//! ends ([`ConnectionEnds`]); neither keeps a map of connections of its
//! own. Its interface is the seam routing across replicas will use: look
//! up a worker's connection, send a request and await its reply, open a
//! terminal lane, be told when a connection ends.
//!
//! The hub is in-memory only: after a restart it is empty, so every worker
//! is offline until its agent reconnects and registers again. The
//! connection task (`agent_socket`) owns the socket and is the only reader
//! of the queues; the hub never touches a socket itself.
//!
//! Shutdown does not go through the hub: every connection task also watches
//! the serve-wide shutdown signal and closes its own socket with 1001; as it
//! ends it calls [`Hub::unregister`], which fails its pending requests.

mod request;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use protocol::Body;

use smol::channel::{Receiver, Sender};

use crate::metrics::Metrics;

#[cfg(test)]
pub(crate) use request::CommandSent;
pub use request::{CommandDone, CommandHook, HubError, Relayed};

/// Input messages a terminal lane queues before viewers wait to hand over
/// more. A bounded channel allocates all its slots up front (40 bytes
/// each); a queue of one is a single inline slot. The connection task
/// takes each message as it comes, so a viewer waits only while the
/// previous one is handed over.
const LANE_QUEUE: usize = 1;

/// What a connection task is asked to do by the rest of the orchestrator.
#[derive(Debug)]
pub enum Outbound {
    /// Send this text message.
    Text(String),
    /// Close the socket with this code and reason, then end.
    Close { code: u16, reason: String },
    /// A terminal session's ack may have moved: send it if so. Queued
    /// here by the terminal relay (at most one per session), so that an
    /// agent connection needs no second notice queue of its own.
    TerminalAck { session_id: u64 },
    /// The connection's terminal lane was opened: read it from now on.
    Lane(LaneRx),
}

/// What the terminal relay asks a connection task to send on its lane.
#[derive(Debug)]
pub enum LaneMsg {
    /// Input bytes for a session; the connection gives them their offset.
    Input { session_id: u64, bytes: Vec<u8> },
    /// A session's ack may have moved: send it if so.
    Ack { session_id: u64 },
}

/// The reading end of a connection's terminal lane (its task reads it).
#[derive(Debug)]
pub struct LaneRx(pub Receiver<LaneMsg>);

/// Told when a registered connection stops being its worker's live one
/// (it ended, or a newer one replaced it), with the terminal input still
/// queued on its lane, which was not sent.
pub trait ConnectionEnds: Send + Sync {
    fn ended(&self, worker_id: &str, conn_id: u64, unsent: Vec<LaneMsg>);
}

/// What the API shows about a live connection.
#[derive(Debug, Clone, Copy)]
pub struct LiveInfo {
    pub connected_at_ms: u64,
    /// The last sign of life that counts for the online status: the register,
    /// then each stored heartbeat.
    pub last_beat_ms: u64,
}

struct Live {
    conn_id: u64,
    /// The worker's ownership epoch this connection registered with
    /// (`store::replicas`): a command relayed from another replica names
    /// the epoch it read, and is refused here if it is not this one.
    epoch: u64,
    tx: Sender<Outbound>,
    info: LiveInfo,
    /// The terminal lane, opened when a session first sends input: an idle
    /// agent has none. Its reading end is kept too, so that what is still
    /// queued when the connection goes is handed on, not lost.
    lane: Option<(Sender<LaneMsg>, Receiver<LaneMsg>)>,
}

impl Live {
    /// Input still queued on this connection's lane.
    fn unsent(&self) -> Vec<LaneMsg> {
        let Some((_, rx)) = &self.lane else {
            return Vec::new();
        };
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }
}

#[derive(Default)]
struct Inner {
    /// Registered connections. Written by `register` (the connection task,
    /// after an accepted register) and `unregister` (the same task as it ends);
    /// read by the API and the terminal relay.
    live: HashMap<String, Live>,
    /// Requests awaiting a reply, by requestId. Written by `request` (the
    /// caller, who also removes its entry on timeout), `resolve` (the
    /// connection task, when the reply arrives) and `unregister` (which drops
    /// the entries of a closing connection, failing their callers).
    pending: HashMap<String, request::Pending>,
}

/// Live connections by worker id. Shared by every task through an `Arc`.
#[derive(Default)]
pub struct Hub {
    inner: Mutex<Inner>,
    /// Source of connection ids; only ever incremented.
    next_conn: AtomicU64,
    /// Where every request's outcome and latency is counted.
    metrics: Arc<Metrics>,
    /// Appends every command's outcome to the audit log; set once by `serve`.
    audit: OnceLock<CommandHook>,
    /// Told when a connection ends (the terminal relay); set once.
    ends: OnceLock<Weak<dyn ConnectionEnds>>,
    /// Where a request goes for a worker connected to another replica
    /// (`peer`); set once, on a shared store only.
    remote: OnceLock<Arc<dyn Remote>>,
}

/// Carries a request to the replica that holds the worker's connection,
/// and its reply back: the other half of [`Hub::request`] when several
/// replicas share a store. [`HubError::Offline`] when no other replica
/// owns the worker, or its owner cannot be reached.
pub trait Remote: Send + Sync {
    fn forward<'a>(
        &'a self,
        worker_id: &'a str,
        body: Body,
        timeout: Duration,
        on_event: &'a mut (dyn FnMut(Body) + Send),
    ) -> Pin<Box<dyn Future<Output = Result<Body, HubError>> + Send + 'a>>;

    /// Ask the replica that holds the worker's connection to close it;
    /// whether one did.
    fn close<'a>(
        &'a self,
        worker_id: &'a str,
        code: u16,
        reason: &'a str,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
}

impl Hub {
    /// A hub counting its requests in `metrics`.
    pub fn with_metrics(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            ..Self::default()
        }
    }

    /// Audit every request from now on through `hook` (set once; later
    /// calls are ignored).
    pub fn set_audit(&self, hook: CommandHook) {
        let _ = self.audit.set(hook);
    }

    /// Send requests for workers this hub does not hold to `remote` (set
    /// once; later calls are ignored).
    pub fn set_remote(&self, remote: Arc<dyn Remote>) {
        let _ = self.remote.set(remote);
    }

    /// Tell `ends` about every connection that ends from now on (set
    /// once; later calls are ignored). Held weakly: it may hold the hub.
    pub fn set_ends(&self, ends: Weak<dyn ConnectionEnds>) {
        let _ = self.ends.set(ends);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the maps inconsistent
        // (each change is one insert or remove), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ended(&self, worker_id: &str, conn_id: u64, unsent: Vec<LaneMsg>) {
        if let Some(ends) = self.ends.get().and_then(Weak::upgrade) {
            ends.ended(worker_id, conn_id, unsent);
        }
    }

    /// A fresh id for a new connection.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Make `conn_id` the worker's live connection, registered with the
    /// ownership `epoch`, `tx` its queue. A previous connection of the
    /// same worker is told to close with [`protocol::close::REPLACED`],
    /// and has ended from here on.
    pub fn register(
        &self,
        worker_id: &str,
        conn_id: u64,
        epoch: u64,
        tx: Sender<Outbound>,
        now_ms: u64,
    ) {
        let live = Live {
            conn_id,
            epoch,
            tx,
            info: LiveInfo {
                connected_at_ms: now_ms,
                last_beat_ms: now_ms,
            },
            lane: None,
        };
        let old = self.lock().live.insert(worker_id.to_owned(), live);
        if let Some(old) = old {
            tracing::info!(
                worker_id,
                old_conn = old.conn_id,
                new_conn = conn_id,
                "connection replaced"
            );
            let _ = old.tx.try_send(Outbound::Close {
                code: protocol::close::REPLACED,
                reason: "replaced by a newer connection".into(),
            });
            self.ended(worker_id, old.conn_id, old.unsent());
        }
    }

    /// Forget `conn_id` if it is still the worker's live connection, and fail
    /// the requests waiting on it.
    pub fn unregister(&self, worker_id: &str, conn_id: u64) {
        let gone = {
            let mut inner = self.lock();
            inner.pending.retain(|_, p| p.conn_id != conn_id);
            if inner
                .live
                .get(worker_id)
                .is_some_and(|l| l.conn_id == conn_id)
            {
                inner.live.remove(worker_id)
            } else {
                None
            }
        };
        if let Some(gone) = gone {
            self.ended(worker_id, conn_id, gone.unsent());
        }
    }

    /// Note a stored heartbeat of the live connection `conn_id`.
    pub fn beat(&self, worker_id: &str, conn_id: u64, now_ms: u64) {
        if let Some(live) = self.lock().live.get_mut(worker_id) {
            if live.conn_id == conn_id {
                live.info.last_beat_ms = now_ms;
            }
        }
    }

    /// The live connection of a worker, if any.
    pub fn live(&self, worker_id: &str) -> Option<LiveInfo> {
        self.lock().live.get(worker_id).map(|l| l.info)
    }

    /// The id of the worker's live connection, if any.
    pub fn conn_id(&self, worker_id: &str) -> Option<u64> {
        self.lock().live.get(worker_id).map(|l| l.conn_id)
    }

    /// Ask the worker's live connection to close. Returns whether there was one.
    pub fn close(&self, worker_id: &str, code: u16, reason: &str) -> bool {
        let tx = self.lock().live.get(worker_id).map(|l| l.tx.clone());
        match tx {
            Some(tx) => tx
                .try_send(Outbound::Close {
                    code,
                    reason: reason.to_owned(),
                })
                .is_ok(),
            None => false,
        }
    }

    /// Ask every live connection to close; how many were asked.
    pub fn close_all(&self, code: u16, reason: &str) -> usize {
        let txs: Vec<Sender<Outbound>> = self.lock().live.values().map(|l| l.tx.clone()).collect();
        txs.iter()
            .filter(|tx| {
                tx.try_send(Outbound::Close {
                    code,
                    reason: reason.to_owned(),
                })
                .is_ok()
            })
            .count()
    }

    /// [`Hub::close`], or else ask the replica holding the worker's
    /// connection to close it (a revoke on any replica closes the socket).
    pub async fn close_anywhere(&self, worker_id: &str, code: u16, reason: &str) -> bool {
        if self.close(worker_id, code, reason) {
            return true;
        }
        match self.remote.get() {
            Some(remote) => remote.close(worker_id, code, reason).await,
            None => false,
        }
    }

    /// The terminal lane of connection `conn_id` of `worker_id`, opened on
    /// first use; `None` once that is not the worker's live connection.
    /// The sender is bounded: a viewer typing faster than the connection
    /// sends waits.
    pub fn lane(&self, worker_id: &str, conn_id: u64) -> Option<Sender<LaneMsg>> {
        let mut inner = self.lock();
        let live = inner
            .live
            .get_mut(worker_id)
            .filter(|l| l.conn_id == conn_id)?;
        if let Some((tx, _)) = &live.lane {
            return Some(tx.clone());
        }
        let (tx, rx) = smol::channel::bounded(LANE_QUEUE);
        // The connection task learns of its lane through its queue, ahead
        // of anything sent on the lane.
        live.tx.try_send(Outbound::Lane(LaneRx(rx.clone()))).ok()?;
        live.lane = Some((tx.clone(), rx));
        Some(tx)
    }

    /// Queue an ack notice for `session_id` on the worker's live
    /// connection. False if there is none (the notice is lost).
    pub fn notify_ack(&self, worker_id: &str, session_id: u64) -> bool {
        let tx = self.lock().live.get(worker_id).map(|l| l.tx.clone());
        tx.is_some_and(|tx| tx.try_send(Outbound::TerminalAck { session_id }).is_ok())
    }

    /// Registered connections whose last sign of life is at most
    /// `window_ms` old, and all registered connections (for `/metrics`).
    pub fn online_counts(&self, now_ms: u64, window_ms: u64) -> (usize, usize) {
        let inner = self.lock();
        let online = inner
            .live
            .values()
            .filter(|l| now_ms.saturating_sub(l.info.last_beat_ms) <= window_ms)
            .count();
        (online, inner.live.len())
    }
}

#[cfg(test)]
mod tests;
