//! A worker's two-step credential rotation, and the credential check that
//! completes one.
//!
//! Rotation keeps a worker reachable whatever fails: [`Store::begin_rotation`]
//! commits the new credential as *pending* (accepted beside the current one)
//! before the agent is told; [`Store::finish_rotation`] makes it the only one
//! once the agent says it stored it, or when the agent first connects with
//! it (the orchestrator may have crashed before recording the reply);
//! [`Store::abandon_rotation`] drops it when the agent refused.

use super::{encode, failed, get_json, Store, StoreError, Worker, CREDENTIALS, WORKERS};

impl Store {
    /// Record `new_hash` as the worker's pending credential, accepted
    /// beside the current one (a pending one from an earlier rotation is
    /// dropped). Refused for a revoked worker.
    pub fn begin_rotation(&self, id: &str, new_hash: &str) -> Result<Worker, StoreError> {
        self.write("commit a pending credential", |txn| {
            let mut workers = txn.open_table(WORKERS).map_err(failed("open workers"))?;
            let mut creds = txn
                .open_table(CREDENTIALS)
                .map_err(failed("open credentials"))?;
            let mut worker = get_json::<Worker>(&workers, "workers", id)?.ok_or_else(|| {
                StoreError::NotFound {
                    what: "worker",
                    id: id.to_owned(),
                }
            })?;
            if worker.revoked {
                return Err(StoreError::Revoked { id: id.to_owned() });
            }
            if let Some(old) = worker.pending_credential_hash.take() {
                creds
                    .remove(old.as_str())
                    .map_err(failed("drop a stale pending credential"))?;
            }
            creds
                .insert(new_hash, id)
                .map_err(failed("insert a pending credential"))?;
            worker.pending_credential_hash = Some(new_hash.to_owned());
            workers
                .insert(id, encode(&worker).as_str())
                .map_err(failed("record a pending credential"))?;
            Ok(worker)
        })
    }

    /// Make the pending credential `new_hash` the worker's only one: the
    /// old credential is refused from this commit on. `None` when
    /// `new_hash` is not (or no longer) pending and not already current.
    pub fn finish_rotation(&self, id: &str, new_hash: &str) -> Result<Option<Worker>, StoreError> {
        self.write("commit a credential swap", |txn| {
            let mut workers = txn.open_table(WORKERS).map_err(failed("open workers"))?;
            let mut creds = txn
                .open_table(CREDENTIALS)
                .map_err(failed("open credentials"))?;
            let Some(mut worker) = get_json::<Worker>(&workers, "workers", id)? else {
                return Ok(None);
            };
            if worker.credential_hash == new_hash {
                return Ok(Some(worker));
            }
            if worker.pending_credential_hash.as_deref() != Some(new_hash) {
                return Ok(None);
            }
            creds
                .remove(worker.credential_hash.as_str())
                .map_err(failed("drop the old credential"))?;
            worker.credential_hash = new_hash.to_owned();
            worker.pending_credential_hash = None;
            workers
                .insert(id, encode(&worker).as_str())
                .map_err(failed("swap a credential"))?;
            Ok(Some(worker))
        })
    }

    /// Forget the pending credential `new_hash` (the agent refused it).
    pub fn abandon_rotation(&self, id: &str, new_hash: &str) -> Result<(), StoreError> {
        self.write("commit a refused rotation", |txn| {
            let mut workers = txn.open_table(WORKERS).map_err(failed("open workers"))?;
            let mut creds = txn
                .open_table(CREDENTIALS)
                .map_err(failed("open credentials"))?;
            let Some(mut worker) = get_json::<Worker>(&workers, "workers", id)? else {
                return Ok(());
            };
            if worker.pending_credential_hash.as_deref() != Some(new_hash) {
                return Ok(());
            }
            creds
                .remove(new_hash)
                .map_err(failed("drop a refused credential"))?;
            worker.pending_credential_hash = None;
            workers
                .insert(id, encode(&worker).as_str())
                .map_err(failed("forget a refused credential"))?;
            Ok(())
        })
    }

    /// The worker presenting the credential `hash_hex`, revoked or not. A
    /// pending credential presented by its agent completes its rotation.
    pub fn authenticate_worker(&self, hash_hex: &str) -> Result<Option<Worker>, StoreError> {
        let Some(worker) = self.worker_by_credential(hash_hex)? else {
            return Ok(None);
        };
        if worker.revoked || worker.pending_credential_hash.as_deref() != Some(hash_hex) {
            return Ok(Some(worker));
        }
        tracing::info!(worker_id = %worker.id, "agent presented its pending credential; rotation complete");
        let id = worker.id.clone();
        Ok(self.finish_rotation(&id, hash_hex)?.or(Some(worker)))
    }
}
