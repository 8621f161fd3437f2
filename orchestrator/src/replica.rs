//! This process as one replica of several on a shared database: its
//! identity, taken at start, and its beat, which tells the others it lives.
//!
//! With the embedded store there is one replica and its identity is new at
//! every start; with PostgreSQL an operator may name each replica
//! (`--replica-id`), and a second live process with the same name is
//! refused at start, before it writes anything else (`store::replicas`).
//! The ownership of workers, and the fencing of what an older owner still
//! writes, hang off the identity: see `store::replicas`.

use std::sync::Arc;
use std::time::Duration;

use futures_lite::FutureExt;

use crate::store::{ReplicaRecord, Store, StoreError};
use crate::{auth, now_ms, App, Error};

/// How many heartbeat intervals a replica's beat stays fresh: its identity
/// is held that long after its last beat.
const FRESH_BEATS: u64 = 3;

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
    let fresh_ms = u64::from(heartbeat_secs) * FRESH_BEATS * 1000;
    store
        .call(move |s| s.register_replica(&record, fresh_ms))
        .await?;
    tracing::info!(replica = %replica.id, address = ?replica.address, "replica registered");
    Ok(replica)
}

/// Beat this replica's record every heartbeat interval. Should another
/// process take its identity (this one was presumed dead), it says so
/// loudly; its agents' writes are fenced by their epochs either way.
pub(crate) fn spawn_beat(app: &Arc<App>, started_ms: u64) {
    let store = Arc::clone(&app.store);
    let id = app.replica_id.clone();
    let every = Duration::from_secs(u64::from(app.heartbeat_secs));
    let stopping = app.life.stopping();
    app.life.spawn(async move {
        let run = async {
            loop {
                smol::Timer::after(every).await;
                let id = id.clone();
                match store
                    .call(move |s| s.beat_replica(&id, started_ms, now_ms()))
                    .await
                {
                    Ok(()) => {}
                    Err(error @ StoreError::ReplicaTaken { .. }) => {
                        tracing::error!(%error, "this replica's identity was taken over");
                    }
                    Err(error) => tracing::warn!(%error, "cannot beat this replica's record"),
                }
            }
        };
        run.or(stopping).await;
    });
}
