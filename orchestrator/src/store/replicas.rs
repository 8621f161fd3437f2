//! Replicas and who owns each worker: the facts several orchestrators on one
//! database share so that exactly one of them drives a worker at a time.
//!
//! A replica registers itself at start and heartbeats; one whose beat is
//! fresh holds its identity, so a second process started with the same
//! identity is refused before it writes anything else.
//!
//! A worker is owned by the replica its newest connection registered on:
//! each accepted register bumps the worker's ownership epoch in the same
//! transaction that records it ([`Store::record_register`]). Every later
//! write made for that connection names the epoch it was given, and is
//! refused with [`StoreError::Fenced`] in its own transaction once a newer
//! connection (on any replica) has taken the worker: an old owner that has
//! not noticed yet cannot overwrite what the new one stored.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use super::{decode, encode, failed, get_json, Store, StoreError, Worker, WORKERS};
use crate::store::engine::TextTable;

/// Replica id -> [`ReplicaRecord`] (JSON).
const REPLICAS: TableDefinition<&str, &str> = TableDefinition::new("replicas");

/// One orchestrator process serving from the shared store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaRecord {
    pub id: String,
    /// Where the other replicas reach it, if it said.
    #[serde(default)]
    pub address: Option<String>,
    /// Unix ms of this process's start: tells two processes of one id apart.
    pub started_ms: u64,
    /// Unix ms of its last beat.
    pub beat_ms: u64,
}

/// The replica a worker's newest connection registered on, and the epoch
/// that connection's writes must name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ownership {
    pub replica: String,
    pub epoch: u64,
}

/// Refused unless the connection holding `epoch` still owns `worker`.
pub(super) fn check_owner(worker: &Worker, epoch: u64) -> Result<(), StoreError> {
    match &worker.owner {
        Some(owner) if owner.epoch == epoch => Ok(()),
        owner => Err(StoreError::Fenced {
            id: worker.id.clone(),
            epoch,
            owner: owner.clone(),
        }),
    }
}

/// The worker `id` as stored in `workers`, checked for ownership.
pub(super) fn owned_worker(
    workers: &TextTable<'_>,
    id: &str,
    epoch: u64,
) -> Result<Worker, StoreError> {
    let worker =
        get_json::<Worker>(workers, "workers", id)?.ok_or_else(|| StoreError::NotFound {
            what: "worker",
            id: id.to_owned(),
        })?;
    check_owner(&worker, epoch)?;
    Ok(worker)
}

impl Store {
    /// Take the identity `record.id` for this process. Refused with
    /// [`StoreError::ReplicaTaken`] while another process holding it beat
    /// less than `fresh_ms` ago.
    pub fn register_replica(
        &self,
        record: &ReplicaRecord,
        fresh_ms: u64,
    ) -> Result<(), StoreError> {
        self.write("commit a replica", |txn| {
            let mut table = txn.open_table(REPLICAS).map_err(failed("open replicas"))?;
            if let Some(held) = get_json::<ReplicaRecord>(&table, "replicas", &record.id)? {
                let alive = record.beat_ms.saturating_sub(held.beat_ms) < fresh_ms;
                if alive && held.started_ms != record.started_ms {
                    return Err(StoreError::ReplicaTaken {
                        id: record.id.clone(),
                        beat_ms: held.beat_ms,
                    });
                }
            }
            table
                .insert(record.id.as_str(), encode(record).as_str())
                .map_err(failed("register a replica"))?;
            Ok(())
        })
    }

    /// A replica's beat. Refused with [`StoreError::ReplicaTaken`] if
    /// another process has taken its identity since (this one was
    /// presumed dead).
    pub fn beat_replica(&self, id: &str, started_ms: u64, now_ms: u64) -> Result<(), StoreError> {
        // Frequent and replaceable, like a worker's heartbeat.
        let durability = super::engine::Durability::None;
        self.write_with(durability, "commit a replica beat", |txn| {
            let mut table = txn.open_table(REPLICAS).map_err(failed("open replicas"))?;
            let mut record =
                get_json::<ReplicaRecord>(&table, "replicas", id)?.ok_or_else(|| {
                    StoreError::NotFound {
                        what: "replica",
                        id: id.to_owned(),
                    }
                })?;
            if record.started_ms != started_ms {
                return Err(StoreError::ReplicaTaken {
                    id: id.to_owned(),
                    beat_ms: record.beat_ms,
                });
            }
            record.beat_ms = now_ms;
            table
                .insert(id, encode(&record).as_str())
                .map_err(failed("beat a replica"))?;
            Ok(())
        })
    }

    /// Every replica that ever registered, by id.
    pub fn replicas(&self) -> Result<Vec<ReplicaRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let table = txn.open_table(REPLICAS).map_err(failed("open replicas"))?;
        table
            .all()
            .map_err(failed("list replicas"))?
            .into_iter()
            .map(|(k, v)| decode("replicas", &k, &v))
            .collect()
    }

    /// Who owns worker `id` now, if any connection ever registered.
    pub fn worker_owner(&self, id: &str) -> Result<Option<Ownership>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let workers = txn.open_table(WORKERS).map_err(failed("open workers"))?;
        Ok(get_json::<Worker>(&workers, "workers", id)?.and_then(|w| w.owner))
    }

    /// Who owns worker `id` now and that replica's record, read together:
    /// where a call for the worker goes. `None` before the first register.
    pub fn worker_route(
        &self,
        id: &str,
    ) -> Result<Option<(Ownership, Option<ReplicaRecord>)>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let workers = txn.open_table(WORKERS).map_err(failed("open workers"))?;
        let Some(owner) = get_json::<Worker>(&workers, "workers", id)?.and_then(|w| w.owner) else {
            return Ok(None);
        };
        let replicas = txn.open_table(REPLICAS).map_err(failed("open replicas"))?;
        let replica = get_json::<ReplicaRecord>(&replicas, "replicas", &owner.replica)?;
        Ok(Some((owner, replica)))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::store::{HeartbeatRecord, RegisterInfo};

    pub(in crate::store) fn info() -> RegisterInfo {
        RegisterInfo {
            protocol_version: 1,
            platform: "linux".into(),
            arch: None,
            cpu_count: 1,
            memory_total: 1 << 30,
            container_engines: vec!["podman".into()],
            agent_version: "test".into(),
            mode: "byom".into(),
            labels: Default::default(),
            security_floor: None,
            rootless: false,
            limitations: Vec::new(),
        }
    }

    /// A store holding tenant `t` and its enrolled worker `w`.
    fn store(name: &str) -> Store {
        use crate::store::usage::tests::{store_with_tenant, token};
        let s = store_with_tenant(name);
        token(&s, "j");
        let worker = crate::store::usage::tests::worker("w");
        let usage = crate::store::TenantUsage::default();
        let admitted = crate::store::Admitted {
            usage: &usage,
            decision: None,
        };
        s.enroll("j", 2, &worker, Some(admitted)).unwrap();
        s
    }

    fn beat() -> HeartbeatRecord {
        HeartbeatRecord {
            at: 5,
            cpu_usage: 1.0,
            memory_free: 1,
            disk_total: None,
            disk_free: None,
            containers_running: 0,
            gateway_status: None,
            gateway_status_detail: None,
        }
    }

    #[test]
    fn a_newer_register_fences_every_write_of_the_older_connection() {
        let s = store("fence");
        let first = s.record_register("w", "a", "w", "h", info(), 3).unwrap();
        let old = first.owner.unwrap();
        assert_eq!((old.replica.as_str(), old.epoch), ("a", 1));
        s.record_heartbeat("w", old.epoch, &beat()).unwrap();
        // The agent reconnects to replica b: b owns the worker now.
        let new = s
            .record_register("w", "b", "w", "h", info(), 4)
            .unwrap()
            .owner
            .unwrap();
        assert_eq!((new.replica.as_str(), new.epoch), ("b", 2));
        let fenced = s.record_heartbeat("w", old.epoch, &beat()).unwrap_err();
        assert!(
            matches!(fenced, StoreError::Fenced { epoch: 1, .. }),
            "{fenced}"
        );
        let fenced = s.reconcile("w", old.epoch, &[], 0, 6).unwrap_err();
        assert!(matches!(fenced, StoreError::Fenced { .. }), "{fenced}");
        s.record_heartbeat("w", new.epoch, &beat()).unwrap();
        assert_eq!(s.worker_owner("w").unwrap(), Some(new));
    }

    #[test]
    fn a_live_identity_is_refused_to_a_second_process_and_free_once_stale() {
        let s = store("identity");
        let first = ReplicaRecord {
            id: "r1".into(),
            address: Some("https://10.0.0.1:8443".into()),
            started_ms: 1_000,
            beat_ms: 1_000,
        };
        s.register_replica(&first, 30_000).unwrap();
        s.beat_replica("r1", 1_000, 10_000).unwrap();
        let second = ReplicaRecord {
            started_ms: 20_000,
            beat_ms: 20_000,
            ..first.clone()
        };
        let taken = s.register_replica(&second, 30_000).unwrap_err();
        assert!(taken.to_string().contains("--replica-id"), "{taken}");
        assert_eq!(
            s.replicas().unwrap()[0].started_ms,
            1_000,
            "nothing written"
        );
        // Stale: the first stopped beating; a new process takes the id, and
        // the old one, should it wake, is told it lost it.
        let third = ReplicaRecord {
            started_ms: 50_000,
            beat_ms: 50_000,
            ..first
        };
        s.register_replica(&third, 30_000).unwrap();
        let lost = s.beat_replica("r1", 1_000, 50_001).unwrap_err();
        assert!(matches!(lost, StoreError::ReplicaTaken { .. }), "{lost}");
    }
}
