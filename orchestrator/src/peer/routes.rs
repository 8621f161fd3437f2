//! Where a call for a worker goes: the owner this replica last read for
//! it, remembered, so that a call relayed to the same owner again costs
//! no read of the database (a thread hop and a transaction on
//! PostgreSQL, over a millisecond on a busy machine).
//!
//! A remembered route can only be stale, never wrong in effect: the
//! owner it names relays a command only on its connection of the
//! remembered epoch (`Hub::relay`), and answers "moved" otherwise, upon
//! which the caller forgets the route and reads the owner again. A
//! remembered owner that cannot be reached at all (it died; its agents
//! register elsewhere) is forgotten and read again as well, since the
//! command was never sent. A worker whose agent has come to this replica
//! is served by the local hub before any route is looked up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::now_ms;
use crate::store::{Ownership, ReplicaRecord, Store, StoreError};

/// Routes remembered at most; past it the memory starts again empty (a
/// route is one read away), so that workers long gone cannot grow it.
const MAX_ROUTES: usize = 65_536;

/// A worker's owner and where that replica listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Route {
    pub owner: Ownership,
    pub address: String,
}

/// The routes this replica has read, by worker.
pub(super) struct Routes {
    store: Arc<Store>,
    replica_id: String,
    /// A replica whose beat is older than this is taken for dead.
    fresh_ms: u64,
    known: Mutex<HashMap<String, Route>>,
}

impl Routes {
    pub(super) fn new(store: Arc<Store>, replica_id: String, fresh_ms: u64) -> Self {
        Self {
            store,
            replica_id,
            fresh_ms,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The route last read for `worker_id`, if any.
    pub(super) fn remembered(&self, worker_id: &str) -> Option<Route> {
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known.get(worker_id).cloned()
    }

    /// Forget `route` for `worker_id` (not a newer one read meanwhile).
    pub(super) fn forget(&self, worker_id: &str, route: &Route) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.get(worker_id) == Some(route) {
            known.remove(worker_id);
        }
    }

    /// Read `worker_id`'s owner from the store, and remember it: `None` if
    /// no other live replica with an address owns it; the store's error if
    /// the owner cannot be read (not "offline": the worker may be fine).
    pub(super) async fn read(&self, worker_id: &str) -> Result<Option<Route>, StoreError> {
        let id = worker_id.to_owned();
        let read = self.store.read_now(move |s| s.worker_route(&id)).await?;
        let route = read.and_then(|(owner, replica)| self.reachable(worker_id, owner, replica));
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        match &route {
            Some(route) => {
                if known.len() >= MAX_ROUTES {
                    known.clear();
                }
                known.insert(worker_id.to_owned(), route.clone());
            }
            None => {
                known.remove(worker_id);
            }
        }
        Ok(route)
    }

    /// The route to `owner`'s replica, if it is another, live, with an
    /// address.
    fn reachable(
        &self,
        worker_id: &str,
        owner: Ownership,
        replica: Option<ReplicaRecord>,
    ) -> Option<Route> {
        if owner.replica == self.replica_id {
            return None;
        }
        let Some(ReplicaRecord {
            address: Some(address),
            beat_ms,
            ..
        }) = replica
        else {
            tracing::warn!(worker_id, replica = %owner.replica, "the owning replica has no address");
            return None;
        };
        if now_ms().saturating_sub(beat_ms) > self.fresh_ms {
            return None;
        }
        Some(Route { owner, address })
    }
}
