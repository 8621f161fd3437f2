//! Worker administration in the store: fleet join tokens, cordon and drain
//! flags, deletion, and the two-step credential rotation, each one redb
//! write transaction committed before the method returns.
//!
//! Rotation keeps a worker reachable whatever fails: [`Store::begin_rotation`]
//! commits the new credential as *pending* (accepted beside the current one)
//! before the agent is told; [`Store::finish_rotation`] makes it the only one
//! once the agent says it stored it, or when the agent first connects with
//! it (the orchestrator may have crashed before recording the reply);
//! [`Store::abandon_rotation`] drops it when the agent refused.

use serde::{Deserialize, Serialize};

use super::{
    encode, failed, get_json, JoinToken, Store, StoreError, Worker, CREDENTIALS, JOIN_TOKENS,
    WORKERS,
};

/// What enrolment made a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerMode {
    /// A tenant's own machine: serves only the tenant it enrolled for.
    #[default]
    Byom,
    /// A managed Greenhouse worker: serves every tenant.
    Fleet,
}

impl WorkerMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Byom => "byom",
            Self::Fleet => "fleet",
        }
    }
}

/// What a fleet join token makes of the worker that enrols with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetEnrolment {
    pub region: String,
    /// `linux`, `darwin` or `windows`, when the operator named one.
    pub platform: Option<String>,
}

/// A change to a worker's scheduling flags; `None` leaves a flag alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerFlags {
    pub cordoned: Option<bool>,
    pub draining: Option<bool>,
}

impl Store {
    /// The join token stored under `hash_hex`, if any (used or not): read
    /// before an enrolment to find the tenant whose plan admits the worker.
    pub fn get_join_token(&self, hash_hex: &str) -> Result<Option<JoinToken>, StoreError> {
        use redb::ReadableDatabase;
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let tokens = txn
            .open_table(JOIN_TOKENS)
            .map_err(failed("open join tokens"))?;
        get_json::<JoinToken>(&tokens, "join_tokens", hash_hex)
    }

    /// Store an operator's fleet join token (no tenant: its worker is shared).
    pub fn create_fleet_join_token(
        &self,
        hash_hex: &str,
        token: &JoinToken,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(failed("begin a write"))?;
        {
            let mut tokens = txn
                .open_table(JOIN_TOKENS)
                .map_err(failed("open join tokens"))?;
            tokens
                .insert(hash_hex, encode(token).as_str())
                .map_err(failed("insert a fleet join token"))?;
        }
        txn.commit().map_err(failed("commit a fleet join token"))
    }

    /// Set or clear cordon and drain. A deleted worker is refused.
    pub fn set_worker_flags(&self, id: &str, flags: WorkerFlags) -> Result<Worker, StoreError> {
        self.update_worker(id, "change a worker's flags", |w| {
            if w.is_deleted() {
                return Err(StoreError::Revoked { id: w.id.clone() });
            }
            if let Some(c) = flags.cordoned {
                w.cordoned = c;
            }
            if let Some(d) = flags.draining {
                w.draining = d;
            }
            Ok(())
        })
    }

    /// Delete a worker: revoked (its credentials are refused from this
    /// commit on) and marked deleted, the record kept for audit. Deleting
    /// twice keeps the first deletion time.
    pub fn delete_worker(&self, id: &str, now_ms: u64) -> Result<Worker, StoreError> {
        self.update_worker(id, "delete a worker", |w| {
            w.revoked = true;
            w.deleted_at.get_or_insert(now_ms);
            Ok(())
        })
    }

    /// Record `new_hash` as the worker's pending credential, accepted
    /// beside the current one (a pending one from an earlier rotation is
    /// dropped). Refused for a revoked worker.
    pub fn begin_rotation(&self, id: &str, new_hash: &str) -> Result<Worker, StoreError> {
        let txn = self.db.begin_write().map_err(failed("begin a write"))?;
        let worker = {
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
            worker
        };
        txn.commit()
            .map_err(failed("commit a pending credential"))?;
        Ok(worker)
    }

    /// Make the pending credential `new_hash` the worker's only one: the
    /// old credential is refused from this commit on. `None` when
    /// `new_hash` is not (or no longer) pending and not already current.
    pub fn finish_rotation(&self, id: &str, new_hash: &str) -> Result<Option<Worker>, StoreError> {
        let txn = self.db.begin_write().map_err(failed("begin a write"))?;
        let worker = {
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
            worker
        };
        txn.commit().map_err(failed("commit a credential swap"))?;
        Ok(Some(worker))
    }

    /// Forget the pending credential `new_hash` (the agent refused it).
    pub fn abandon_rotation(&self, id: &str, new_hash: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(failed("begin a write"))?;
        {
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
        }
        txn.commit().map_err(failed("commit a refused rotation"))
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
