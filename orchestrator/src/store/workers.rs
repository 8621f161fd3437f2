//! Workers in the store: enrolment (a join token exchanged
//! for a worker, held to the tenant's plan), fleet join tokens, lookups,
//! revocation, what a live worker reports (register facts, heartbeats),
//! cordon and drain flags and deletion, each one write transaction
//! committed before the method returns. The credential rotation is in
//! `rotation`.

use super::engine::{Durability, TextTable};
use serde::{Deserialize, Serialize};

use super::{
    decisions, decode, encode, failed, get_json, usage, DecisionRecord, HeartbeatRecord,
    JoinRefusal, JoinToken, NewWorker, RegisterInfo, Store, StoreError, Tenant, TenantUsage,
    Worker, CREDENTIALS, HEARTBEATS, JOIN_TOKENS, TENANTS, WORKERS,
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

/// What [`Store::enroll`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Enrolment {
    /// The worker (with its tenant, for a tenant's token) was created.
    Enrolled(Box<Worker>, Option<Tenant>),
    /// The token was refused; nothing changed.
    Refused(JoinRefusal),
    /// A tenant's token, without an admission decided on the tenant's usage
    /// now: nothing changed; decide on `usage` and enrol again.
    Decide { tenant: Tenant, usage: TenantUsage },
}

/// An admission's verdict to apply in a write transaction: the usage it
/// was decided on (the transaction goes ahead only if it is still the
/// tenant's usage) and the decision, stored in the same transaction.
#[derive(Debug, Clone, Copy)]
pub struct Admitted<'a> {
    pub usage: &'a TenantUsage,
    /// `None` when the decision was stored already (placement's).
    pub decision: Option<&'a DecisionRecord>,
}

/// A change to a worker's scheduling flags; `None` leaves a flag alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerFlags {
    pub cordoned: Option<bool>,
    pub draining: Option<bool>,
}

impl Store {
    /// Exchange a join token for a new worker, atomically: the token is
    /// checked and marked used in the same write transaction that creates
    /// the worker, and redb serializes write transactions, so a token is
    /// used at most once even under concurrent enrolments. A tenant's token
    /// makes a byom worker of that tenant; a fleet token makes a fleet
    /// worker (no tenant) in its region.
    ///
    /// A tenant's token enrols only with `admitted`: the usage its
    /// admission decided on, which must be the tenant's usage in this
    /// transaction, and that decision, stored with the worker. Otherwise
    /// nothing changes and [`Enrolment::Decide`] names the usage to decide
    /// on: the plan's worker limit is checked and taken in one step, however
    /// many enrolments (or orchestrators) race for the last slot.
    pub fn enroll(
        &self,
        join_hash_hex: &str,
        now_ms: u64,
        new: &NewWorker,
        admitted: Option<Admitted<'_>>,
    ) -> Result<Enrolment, StoreError> {
        // Without fsync: the call's audit entry, appended durably before
        // the answer, carries it to disk, and concurrent enrolments share
        // that fsync in the audit writer's group commit.
        self.write_api("commit an enrolment", |txn| {
            let mut tokens = txn
                .open_table(JOIN_TOKENS)
                .map_err(failed("open join tokens"))?;
            let Some(mut token) = get_json::<JoinToken>(&tokens, "join_tokens", join_hash_hex)?
            else {
                return Ok(Enrolment::Refused(JoinRefusal::Unknown));
            };
            if token.used {
                return Ok(Enrolment::Refused(JoinRefusal::Used));
            }
            if now_ms >= token.expires_at {
                return Ok(Enrolment::Refused(JoinRefusal::Expired));
            }
            let mut counts = usage::Counts::open(txn)?;
            let tenant = match token.fleet {
                Some(_) => None,
                None => {
                    let tenants = txn.open_table(TENANTS).map_err(failed("open tenants"))?;
                    let tenant = get_json::<Tenant>(&tenants, "tenants", &token.tenant_id)?
                        .ok_or_else(|| StoreError::NotFound {
                            what: "tenant",
                            id: token.tenant_id.clone(),
                        })?;
                    let usage = counts.get(&tenant.id)?;
                    match &admitted {
                        Some(a) if *a.usage == usage => {
                            if let Some(decision) = a.decision {
                                decisions::insert(txn, decision)?;
                            }
                        }
                        _ => return Ok(Enrolment::Decide { tenant, usage }),
                    }
                    Some(tenant)
                }
            };
            token.used = true;
            tokens
                .insert(join_hash_hex, encode(&token).as_str())
                .map_err(failed("mark a join token used"))?;
            let fleet = token.fleet.clone();
            let worker = Worker {
                id: new.id.clone(),
                tenant_id: tenant.as_ref().map(|t| t.id.clone()).unwrap_or_default(),
                name: new.name.clone(),
                hostname: new.hostname.clone(),
                credential_hash: new.credential_hash.clone(),
                revoked: false,
                enrolled_at: now_ms,
                connected_at: None,
                register: None,
                mode: if fleet.is_some() {
                    WorkerMode::Fleet
                } else {
                    WorkerMode::Byom
                },
                region: fleet.as_ref().map(|f| f.region.clone()),
                enrolled_platform: fleet.and_then(|f| f.platform),
                cordoned: false,
                draining: false,
                deleted_at: None,
                pending_credential_hash: None,
                owner: None,
            };
            let mut workers = txn.open_table(WORKERS).map_err(failed("open workers"))?;
            workers
                .insert(worker.id.as_str(), encode(&worker).as_str())
                .map_err(failed("insert a worker"))?;
            counts.worker(None, Some(&worker))?;
            let mut creds = txn
                .open_table(CREDENTIALS)
                .map_err(failed("open credentials"))?;
            creds
                .insert(worker.credential_hash.as_str(), worker.id.as_str())
                .map_err(failed("insert a credential"))?;
            Ok(Enrolment::Enrolled(Box::new(worker), tenant))
        })
    }

    /// The join token stored under `hash_hex`, if any (used or not): read
    /// before an enrolment to find the tenant whose plan admits the worker.
    pub fn get_join_token(&self, hash_hex: &str) -> Result<Option<JoinToken>, StoreError> {
        let txn = self.db.begin_read_one().map_err(failed("begin a read"))?;
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
        self.write("commit a fleet join token", |txn| {
            let mut tokens = txn
                .open_table(JOIN_TOKENS)
                .map_err(failed("open join tokens"))?;
            tokens
                .insert(hash_hex, encode(token).as_str())
                .map_err(failed("insert a fleet join token"))?;
            Ok(())
        })
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

    /// The worker a credential (by hash) belongs to, revoked or not.
    ///
    /// Two point reads, each of the last commit (one round trip each on
    /// PostgreSQL, where a snapshot around them would cost two more): the
    /// worker read second must still hold `hash_hex`, as its credential or
    /// the one pending, or the credential changed between them and is
    /// not (or no longer) this worker's.
    pub fn worker_by_credential(&self, hash_hex: &str) -> Result<Option<Worker>, StoreError> {
        let id = {
            let txn = self.db.begin_read_one().map_err(failed("begin a read"))?;
            let creds = txn
                .open_table(CREDENTIALS)
                .map_err(failed("open credentials"))?;
            creds.get(hash_hex).map_err(failed("read a credential"))?
        };
        let Some(id) = id else {
            return Ok(None);
        };
        let worker = self.get_worker(&id)?;
        Ok(worker.filter(|w| {
            w.credential_hash == hash_hex || w.pending_credential_hash.as_deref() == Some(hash_hex)
        }))
    }

    pub fn get_worker(&self, id: &str) -> Result<Option<Worker>, StoreError> {
        let txn = self.db.begin_read_one().map_err(failed("begin a read"))?;
        let workers = txn.open_table(WORKERS).map_err(failed("open workers"))?;
        get_json(&workers, "workers", id)
    }

    /// Every worker with its last heartbeat, oldest enrolment first.
    pub fn list_workers(&self) -> Result<Vec<(Worker, Option<HeartbeatRecord>)>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let workers = txn.open_table(WORKERS).map_err(failed("open workers"))?;
        let beats = txn
            .open_table(HEARTBEATS)
            .map_err(failed("open heartbeats"))?;
        let mut out = Vec::new();
        for (key, value) in workers.all().map_err(failed("list workers"))? {
            let worker: Worker = decode("workers", &key, &value)?;
            let beat = get_json(&beats, "heartbeats", &worker.id)?;
            out.push((worker, beat));
        }
        out.sort_by(|a, b| (a.0.enrolled_at, &a.0.id).cmp(&(b.0.enrolled_at, &b.0.id)));
        Ok(out)
    }

    pub fn heartbeat(&self, id: &str) -> Result<Option<HeartbeatRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let beats = txn
            .open_table(HEARTBEATS)
            .map_err(failed("open heartbeats"))?;
        get_json(&beats, "heartbeats", id)
    }

    /// Mark a worker revoked; its credential is refused from this commit on.
    /// Revoking twice is not an error.
    pub fn revoke_worker(&self, id: &str) -> Result<Worker, StoreError> {
        self.update_worker(id, "revoke a worker", |w| {
            w.revoked = true;
            Ok(())
        })
    }

    /// Record an accepted register; refused if the worker was revoked
    /// meanwhile, or if the register's mode contradicts the enrolment's.
    ///
    /// The connection becomes the worker's owner: `replica` with the next
    /// epoch (in `owner` of the worker returned), which its later writes
    /// name (`store::replicas`).
    pub fn record_register(
        &self,
        id: &str,
        replica: &str,
        name: &str,
        hostname: &str,
        info: RegisterInfo,
        now_ms: u64,
    ) -> Result<Worker, StoreError> {
        self.update_worker(id, "record a register", |w| {
            if w.revoked {
                return Err(StoreError::Revoked { id: w.id.clone() });
            }
            if info.mode != w.mode.as_str() {
                return Err(StoreError::ModeMismatch {
                    id: w.id.clone(),
                    enrolled: w.mode.as_str(),
                    claimed: info.mode.clone(),
                });
            }
            w.name = name.to_owned();
            w.hostname = Some(hostname.to_owned());
            w.register = Some(info.clone());
            w.connected_at = Some(now_ms);
            let epoch = w.owner.as_ref().map_or(0, |o| o.epoch) + 1;
            w.owner = Some(super::Ownership {
                replica: replica.to_owned(),
                epoch,
            });
            Ok(())
        })
    }

    fn update_worker(
        &self,
        id: &str,
        op: &'static str,
        mut change: impl FnMut(&mut Worker) -> Result<(), StoreError>,
    ) -> Result<Worker, StoreError> {
        self.write(op, |txn| {
            let mut workers = txn.open_table(WORKERS).map_err(failed("open workers"))?;
            let mut worker = get_json::<Worker>(&workers, "workers", id)?.ok_or_else(|| {
                StoreError::NotFound {
                    what: "worker",
                    id: id.to_owned(),
                }
            })?;
            let before = worker.clone();
            change(&mut worker)?;
            workers
                .insert(id, encode(&worker).as_str())
                .map_err(failed(op))?;
            usage::Counts::open(txn)?.worker(Some(&before), Some(&worker))?;
            Ok(worker)
        })
    }

    /// Store the latest heartbeats of many workers, in one transaction with
    /// reduced durability (a replica's batch: `crate::heartbeats`). Each
    /// names the epoch of the connection it came on; those of connections
    /// no longer owning their worker are not stored and their worker ids
    /// returned, as are unknown workers' (deleted meanwhile).
    ///
    /// The owners are read in one statement and the beats written in one
    /// (on PostgreSQL), however many there are: a replica holding 15,000
    /// agents once held its transaction open through 30,000 round trips,
    /// seconds in which every writer that lost a conflict to it waited.
    pub fn record_heartbeats(
        &self,
        beats: &[(String, u64, HeartbeatRecord)],
    ) -> Result<Vec<String>, StoreError> {
        let encoded: Vec<String> = beats.iter().map(|(_, _, beat)| encode(beat)).collect();
        self.write_heartbeats(|workers, table| {
            let ids: Vec<&str> = beats.iter().map(|(id, _, _)| id.as_str()).collect();
            let owners = workers.get_many(&ids).map_err(failed("read workers"))?;
            let mut refused = Vec::new();
            let mut stored = Vec::with_capacity(beats.len());
            for (((id, epoch, _), owner), beat) in beats.iter().zip(owners).zip(&encoded) {
                let Some(text) = owner else {
                    refused.push(id.clone());
                    continue;
                };
                let worker: Worker = decode("workers", id, &text)?;
                match super::replicas::check_owner(&worker, *epoch) {
                    Ok(()) => stored.push((id.as_str(), beat.as_str())),
                    Err(StoreError::Fenced { .. }) => refused.push(id.clone()),
                    Err(error) => return Err(error),
                }
            }
            table
                .insert_many(&stored)
                .map_err(failed("store heartbeats"))?;
            Ok(refused)
        })
    }

    /// Store a worker's latest heartbeat with reduced durability.
    /// Refused with [`StoreError::Fenced`] unless the connection holding
    /// `epoch` still owns the worker.
    pub fn record_heartbeat(
        &self,
        id: &str,
        epoch: u64,
        beat: &HeartbeatRecord,
    ) -> Result<(), StoreError> {
        self.write_heartbeats(|workers, table| put_beat(workers, table, id, epoch, beat))
    }

    /// One heartbeat write transaction, without fsync (heartbeats are
    /// frequent and replaceable): `f` gets the workers and the heartbeats.
    fn write_heartbeats<T>(
        &self,
        mut f: impl FnMut(&TextTable<'_>, &mut TextTable<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.write_with(Durability::None, "commit heartbeats", |txn| {
            let workers = txn.open_table(WORKERS).map_err(failed("open workers"))?;
            let mut beats = txn
                .open_table(HEARTBEATS)
                .map_err(failed("open heartbeats"))?;
            f(&workers, &mut beats)
        })
    }
}

/// Store `beat` as worker `id`'s, if the connection holding `epoch` still
/// owns it.
fn put_beat(
    workers: &TextTable<'_>,
    beats: &mut TextTable<'_>,
    id: &str,
    epoch: u64,
    beat: &HeartbeatRecord,
) -> Result<(), StoreError> {
    super::replicas::owned_worker(workers, id, epoch)?;
    beats
        .insert(id, encode(beat).as_str())
        .map_err(failed("store a heartbeat"))
}
