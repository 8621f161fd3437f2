//! Heartbeats, stored in batches: each connection notes its agent's latest
//! heartbeat here, and one task writes every pending one in a single store
//! transaction each [`FLUSH`], so a heartbeat never costs a database round
//! trip of its own (30,000 agents at 10 s beat 3,000 times a second; on a
//! shared PostgreSQL that would be 3,000 serial write transactions).
//!
//! What a heartbeat means for presence is in the hub at once (`Hub::beat`);
//! the stored copy, which the worker views and other replicas read, follows
//! within [`FLUSH`]. A heartbeat is replaceable: only the latest per worker
//! is kept, and one lost to a crash is the next one's to restore. A beat
//! from a connection that no longer owns its worker (another connection,
//! on any replica, registered since: `store::replicas`) is refused in the
//! batch's transaction, and that connection is closed as replaced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::FutureExt;

use crate::store::HeartbeatRecord;
use crate::App;

/// How often the pending heartbeats are stored.
pub const FLUSH: Duration = Duration::from_millis(500);

/// The latest heartbeat of each worker, not stored yet.
#[derive(Debug, Default)]
pub struct Heartbeats {
    pending: Mutex<HashMap<String, Pending>>,
}

#[derive(Debug)]
struct Pending {
    conn_id: u64,
    epoch: u64,
    record: HeartbeatRecord,
}

impl Heartbeats {
    /// Keep `record` as `worker_id`'s latest, from connection `conn_id`
    /// registered with ownership `epoch`.
    pub fn note(&self, worker_id: &str, conn_id: u64, epoch: u64, record: HeartbeatRecord) {
        let pending = Pending {
            conn_id,
            epoch,
            record,
        };
        self.lock().insert(worker_id.to_owned(), pending);
    }

    fn take(&self) -> HashMap<String, Pending> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        // A panic elsewhere leaves plain data: keep going.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Store the pending heartbeats every [`FLUSH`], and once more when the
/// orchestrator stops.
pub(crate) fn spawn_flusher(app: &Arc<App>) {
    let app_task = Arc::clone(app);
    let stopping = app.life.stopping();
    app.life.spawn(async move {
        let mut stopping = Box::pin(stopping);
        loop {
            let stop = async {
                (&mut stopping).await;
                true
            }
            .or(async {
                smol::Timer::after(FLUSH).await;
                false
            })
            .await;
            flush(&app_task).await;
            if stop {
                break;
            }
        }
    });
}

async fn flush(app: &Arc<App>) {
    let pending = app.heartbeats.take();
    if pending.is_empty() {
        return;
    }
    let (conns, beats): (HashMap<_, _>, Vec<_>) = pending
        .into_iter()
        .map(|(id, p)| ((id.clone(), p.conn_id), (id, p.epoch, p.record)))
        .unzip();
    let count = beats.len();
    match app.store.call(move |s| s.record_heartbeats(&beats)).await {
        Ok(refused) => {
            for worker_id in refused {
                // Only the connection the refused beat came on.
                let conn_id = conns.get(&worker_id).copied();
                if conn_id.is_some() && app.hub.conn_id(&worker_id) == conn_id {
                    tracing::info!(%worker_id, "a newer connection owns the worker; closing this one");
                    app.hub.close(
                        &worker_id,
                        protocol::close::REPLACED,
                        "replaced by a newer connection",
                    );
                }
            }
        }
        Err(error) => tracing::error!(%error, count, "cannot store heartbeats"),
    }
}
