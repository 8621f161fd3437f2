//! This process as one replica of several on a shared database: its
//! identity, taken at start, and its beat, which tells the others it lives.
//!
//! With the embedded store there is one replica and its identity is new at
//! every start; with PostgreSQL an operator may name each replica
//! (`--replica-id`), and a second live process with the same name is
//! refused at start, before it writes anything else (`store::replicas`).
//! The ownership of workers, and the fencing of what an older owner still
//! writes, hang off the identity: see `store::replicas`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_lite::FutureExt;

use crate::store::{ReplicaRecord, Store, StoreError};
use crate::{auth, now_ms, App, Error};

/// How many heartbeat intervals a replica's beat stays fresh: its identity
/// is held that long after its last beat.
const FRESH_BEATS: u64 = 3;

/// The other replicas' last beats as this one last read them (every
/// heartbeat interval, on a shared store): whether a worker's owner has
/// stopped, for its presence (`presence`).
pub(crate) struct Known {
    beats: Mutex<HashMap<String, u64>>,
    /// A replica is taken to have stopped once its beat is this old: one
    /// and a half intervals (its beats come every interval; this view is
    /// at most one interval old).
    stopped_after_ms: u64,
}

impl Known {
    pub(crate) fn new(heartbeat_secs: u32) -> Self {
        Self {
            beats: Mutex::new(HashMap::new()),
            stopped_after_ms: u64::from(heartbeat_secs) * 1500,
        }
    }

    fn set(&self, replicas: Vec<ReplicaRecord>) {
        let beats = replicas.into_iter().map(|r| (r.id, r.beat_ms)).collect();
        *self.beats.lock().unwrap_or_else(PoisonError::into_inner) = beats;
    }

    /// The last beat of replica `id`, if it has stopped beating.
    pub(crate) fn gone_since(&self, id: &str, now_ms: u64) -> Option<u64> {
        let beats = self.beats.lock().unwrap_or_else(PoisonError::into_inner);
        let last = *beats.get(id)?;
        (now_ms.saturating_sub(last) > self.stopped_after_ms).then_some(last)
    }
}

/// How long a replica's beat is fresh, in ms: it is taken for dead after.
pub(crate) fn fresh_ms(heartbeat_secs: u32) -> u64 {
    u64::from(heartbeat_secs) * FRESH_BEATS * 1000
}

/// Take the identity `id` (a new one if `None`) for this process, which
/// the other replicas reach at `address`.
pub(crate) async fn register(
    store: &Arc<Store>,
    id: Option<String>,
    address: Option<String>,
    heartbeat_secs: u32,
) -> Result<ReplicaRecord, Error> {
    let now = now_ms();
    let id = match id {
        Some(id) => id,
        None => auth::uuid_v4()?,
    };
    let replica = ReplicaRecord {
        id,
        address,
        started_ms: now,
        beat_ms: now,
    };
    let record = replica.clone();
    let fresh_ms = fresh_ms(heartbeat_secs);
    store
        .call(move |s| s.register_replica(&record, fresh_ms))
        .await?;
    tracing::info!(replica = %replica.id, address = ?replica.address, "replica registered");
    Ok(replica)
}

/// Close code for the agents of a replica cut off from the database:
/// WebSocket's "try again later". They reconnect (through the balancer,
/// which this replica's failing `/readyz` steers elsewhere).
pub(crate) const FENCED_CLOSE: u16 = 1013;

/// Beat this replica's record every heartbeat interval. Should another
/// process take its identity (this one was presumed dead), it says so
/// loudly; its agents' writes are fenced by their epochs either way.
///
/// A replica that cannot reach the database for two heartbeat intervals
/// fences itself: it closes its agents' sockets with [`FENCED_CLOSE`], so
/// that they register on a replica that can store their heartbeats before
/// they would look offline there (three intervals), and before the others
/// take this one for dead (also three). It keeps serving what needs no
/// database; when a beat succeeds again it is a replica like any other,
/// without a restart.
pub(crate) fn spawn_beat(app: &Arc<App>, started_ms: u64) {
    let store = Arc::clone(&app.store);
    let hub = Arc::clone(&app.hub);
    let app_task = Arc::clone(app);
    let id = app.replica_id.clone();
    let every = Duration::from_secs(u64::from(app.heartbeat_secs));
    let fence_after = 2 * u64::from(app.heartbeat_secs) * 1000;
    let stopping = app.life.stopping();
    app.life.spawn(async move {
        let run = async {
            let mut last_ok = now_ms();
            let mut fenced = false;
            loop {
                smol::Timer::after(every).await;
                let id = id.clone();
                match store
                    .call(move |s| s.beat_replica(&id, started_ms, now_ms()))
                    .await
                {
                    Ok(()) => {
                        if fenced {
                            tracing::info!("the database answers again: serving agents again");
                        }
                        (last_ok, fenced) = (now_ms(), false);
                        if store.is_shared() {
                            match store.call(|s| s.replicas()).await {
                                Ok(replicas) => app_task.replicas.set(replicas),
                                Err(error) => tracing::warn!(%error, "cannot read the replicas"),
                            }
                        }
                    }
                    Err(error @ StoreError::ReplicaTaken { .. }) => {
                        tracing::error!(%error, "this replica's identity was taken over");
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot beat this replica's record");
                        // A busy pool times out too: only a server that
                        // refuses a connection of its own means a cut.
                        let cut_off = error.is_unavailable()
                            && now_ms().saturating_sub(last_ok) >= fence_after
                            && store.call(|s| s.probe()).await.is_err();
                        if cut_off {
                            let closed = hub.close_all(
                                FENCED_CLOSE,
                                "this orchestrator cannot reach its database",
                            );
                            if !fenced || closed > 0 {
                                tracing::error!(
                                    closed,
                                    "cut off from the database: agents sent to other replicas"
                                );
                            }
                            fenced = true;
                        }
                    }
                }
            }
        };
        run.or(stopping).await;
    });
}
