//! Container records: create-if-absent (held to the plan's admission when
//! asked), read, list per tenant, update, and the reconcile of a worker's
//! inventory, each one redb write transaction that also keeps the tenant's
//! usage counters (`store::usage`).
//!
//! Two index tables keep listings cheap: `tenantId/containerId` and
//! `workerId/containerId` keys, scanned by prefix. A record's tenant and
//! worker never change, so the indexes are written once, at insert.

use std::collections::HashSet;

use super::engine::TextTable;

use super::usage::Counts;
use super::{
    decisions, decode, encode, failed, get_json, Admitted, ContainerRecord, ContainerState,
    InventoryItem, Reconciled, Store, StoreError, Tenant, TenantUsage, CONTAINERS, TENANTS,
    TENANT_CONTAINERS, WORKERS, WORKER_CONTAINERS,
};

/// The note on a `creating` record that its worker's inventory lacks.
const NEVER_CREATED: &str = "the worker does not have this container: its create never \
     reached the engine; retry the create with the same id to send it again";

/// What [`Store::create_container`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    /// The record was inserted.
    Created,
    /// A record with that id already existed; it is returned unchanged.
    Exists(Box<ContainerRecord>),
    /// A record with that id, of the same tenant, worker, name and image,
    /// that never reached the engine and counts against no plan (`lost` or
    /// `failed` without an engine id) was made `creating` again, admitted
    /// like a new one: a retried create sends it again.
    Revived,
}

/// Whether `existing` may be made `creating` again by a create of
/// `record` (see [`CreateOutcome::Revived`]).
fn revivable(existing: &ContainerRecord, record: &ContainerRecord) -> bool {
    existing.revivable()
        && existing.tenant_id == record.tenant_id
        && existing.worker_id == record.worker_id
        && existing.name == record.name
        && existing.image == record.image
}

/// What [`Store::create_admitted`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum AdmittedCreate {
    /// Inserted, or found (see [`CreateOutcome`]).
    Done(CreateOutcome),
    /// Nothing changed: the tenant's usage is no longer the one admission
    /// decided on; this is it now.
    Changed(TenantUsage),
}

/// The `[from, to)` key range of every index key starting with `prefix/`.
fn prefix_range(prefix: &str) -> (String, String) {
    // '0' is the byte after '/', so the range holds exactly `prefix/...`.
    (format!("{prefix}/"), format!("{prefix}0"))
}

/// The ids listed under `prefix` in an index table.
fn ids_under(table: &TextTable<'_>, prefix: &str) -> Result<Vec<String>, StoreError> {
    let (from, to) = prefix_range(prefix);
    let mut ids = Vec::new();
    for (key, _) in table
        .scan(from.as_str()..to.as_str(), false, usize::MAX)
        .map_err(failed("scan an index"))?
    {
        if let Some(id) = key.strip_prefix(from.as_str()) {
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}

fn insert_record(
    containers: &mut TextTable<'_>,
    by_tenant: &mut TextTable<'_>,
    by_worker: &mut TextTable<'_>,
    counts: &mut Counts<'_>,
    record: &ContainerRecord,
) -> Result<(), StoreError> {
    counts.container(&record.tenant_id, None, Some(record.state))?;
    containers
        .insert(record.id.as_str(), encode(record).as_str())
        .map_err(failed("insert a container"))?;
    let tenant_key = format!("{}/{}", record.tenant_id, record.id);
    by_tenant
        .insert(tenant_key.as_str(), "")
        .map_err(failed("index a container by tenant"))?;
    let worker_key = format!("{}/{}", record.worker_id, record.id);
    by_worker
        .insert(worker_key.as_str(), "")
        .map_err(failed("index a container by worker"))?;
    Ok(())
}

impl Store {
    /// Insert `record` unless a record with its id exists (then return that
    /// one, untouched): one transaction, so concurrent creates of one id
    /// insert at most once. Not held to the tenant's plan: API creates go
    /// through [`Store::create_admitted`].
    pub fn create_container(&self, record: &ContainerRecord) -> Result<CreateOutcome, StoreError> {
        match self.insert_container(record, None)? {
            AdmittedCreate::Done(outcome) => Ok(outcome),
            AdmittedCreate::Changed(_) => unreachable!("no usage to compare without admission"),
        }
    }

    /// [`Store::create_container`] for a create admission allowed: inserted
    /// only if the tenant's usage in this transaction is `admitted.usage`
    /// (else [`AdmittedCreate::Changed`], nothing written), with the
    /// decision stored beside it. The count admission checked and the
    /// insert it allowed are one serialisable step, whoever else inserts.
    pub fn create_admitted(
        &self,
        record: &ContainerRecord,
        admitted: Admitted<'_>,
    ) -> Result<AdmittedCreate, StoreError> {
        self.insert_container(record, Some(admitted))
    }

    fn insert_container(
        &self,
        record: &ContainerRecord,
        admitted: Option<Admitted<'_>>,
    ) -> Result<AdmittedCreate, StoreError> {
        self.write_api("commit a container", |txn| {
            let mut containers = txn
                .open_table(CONTAINERS)
                .map_err(failed("open containers"))?;
            let existing = get_json::<ContainerRecord>(&containers, "containers", &record.id)?;
            if let Some(existing) = existing.as_ref().filter(|e| !revivable(e, record)) {
                return Ok(AdmittedCreate::Done(CreateOutcome::Exists(Box::new(
                    existing.clone(),
                ))));
            }
            let mut counts = Counts::open(txn)?;
            if let Some(admitted) = &admitted {
                let now = counts.get(&record.tenant_id)?;
                if now != *admitted.usage {
                    return Ok(AdmittedCreate::Changed(now));
                }
                if let Some(decision) = admitted.decision {
                    decisions::insert(txn, decision)?;
                }
            }
            if let Some(existing) = existing {
                let before = existing.state;
                let revived = ContainerRecord {
                    state: ContainerState::Creating,
                    last_error: None,
                    updated_at: record.updated_at,
                    allowed_domains: record.allowed_domains.clone(),
                    rev: super::stamp(),
                    ..existing
                };
                containers
                    .insert(revived.id.as_str(), encode(&revived).as_str())
                    .map_err(failed("revive a container"))?;
                counts.container(&revived.tenant_id, Some(before), Some(revived.state))?;
                return Ok(AdmittedCreate::Done(CreateOutcome::Revived));
            }
            let record = &ContainerRecord {
                rev: super::stamp(),
                ..record.clone()
            };
            let mut by_tenant = txn
                .open_table(TENANT_CONTAINERS)
                .map_err(failed("open the tenant index"))?;
            let mut by_worker = txn
                .open_table(WORKER_CONTAINERS)
                .map_err(failed("open the worker index"))?;
            insert_record(
                &mut containers,
                &mut by_tenant,
                &mut by_worker,
                &mut counts,
                record,
            )?;
            Ok(AdmittedCreate::Done(CreateOutcome::Created))
        })
    }

    pub fn get_container(&self, id: &str) -> Result<Option<ContainerRecord>, StoreError> {
        let txn = self.db.begin_read_one().map_err(failed("begin a read"))?;
        let containers = txn
            .open_table(CONTAINERS)
            .map_err(failed("open containers"))?;
        get_json(&containers, "containers", id)
    }

    /// Every record of a tenant (whatever its state), oldest first.
    pub fn list_containers(&self, tenant_id: &str) -> Result<Vec<ContainerRecord>, StoreError> {
        let mut out: Vec<ContainerRecord> = self.tenant_records(tenant_id)?;
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// Each of `tenant_id`'s records decoded as `T` (the whole record or
    /// the fields `T` names), in index order.
    fn tenant_records<T: serde::de::DeserializeOwned>(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<T>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let index = txn
            .open_table(TENANT_CONTAINERS)
            .map_err(failed("open the tenant index"))?;
        let containers = txn
            .open_table(CONTAINERS)
            .map_err(failed("open containers"))?;
        let mut out = Vec::new();
        for id in ids_under(&index, tenant_id)? {
            match containers
                .get(id.as_str())
                .map_err(failed("read a container"))?
            {
                Some(v) => out.push(decode::<T>("containers", &id, &v)?),
                None => tracing::warn!(container_id = %id, "tenant index names a missing record"),
            }
        }
        Ok(out)
    }

    /// Change one record with `change`, stamp `updated_at = now_ms` and a
    /// fresh `rev`, durably: this write settles a call on a worker's
    /// container, whose answer reports it (and must survive kill -9), and
    /// its commit carries the call's earlier API writes to disk with it.
    /// Returns the state before the change and the record after it.
    pub fn update_container(
        &self,
        id: &str,
        now_ms: u64,
        mut change: impl FnMut(&mut ContainerRecord),
    ) -> Result<(ContainerState, ContainerRecord), StoreError> {
        let (out, covered) = self.write("commit a container update", |txn| {
            // Inside the transaction: on redb, under its one write lock.
            let covered = self.api_writes.covered();
            let mut containers = txn
                .open_table(CONTAINERS)
                .map_err(failed("open containers"))?;
            let mut record = get_json::<ContainerRecord>(&containers, "containers", id)?
                .ok_or_else(|| StoreError::NotFound {
                    what: "container",
                    id: id.to_owned(),
                })?;
            let before = record.state;
            let engine_before = record.engine_id.clone();
            change(&mut record);
            record.updated_at = now_ms;
            // Only a change of what the engine holds is newer than an
            // inventory; a note (lastError) alone must not shield a record
            // from the reconcile (a create cut off by a disconnect would
            // otherwise stay `creating` after the agent reported it running).
            if record.state != before || record.engine_id != engine_before {
                record.rev = super::stamp();
            }
            containers
                .insert(id, encode(&record).as_str())
                .map_err(failed("update a container"))?;
            Counts::open(txn)?.container(&record.tenant_id, Some(before), Some(record.state))?;
            Ok(((before, record), covered))
        })?;
        self.api_writes.synced(covered);
        Ok(out)
    }

    /// Reconcile the records of `worker_id` with its inventory, in one
    /// transaction, and say what changed.
    ///
    /// * Records present in the inventory take its state and engine id
    ///   (this adopts what runs, including records left `creating`).
    /// * Records absent from it become `lost`, unless `removed`, `failed`
    ///   or `creating` without an engine id (a create that never reached
    ///   the engine: it stays `creating`, noted, for a retry to send).
    /// * A `removed` record is final: an entry naming it is skipped.
    /// * Entries without a record are adopted when their tenant exists and
    ///   the worker serves it (a byom worker serves only its own tenant:
    ///   [`Worker::tenant_scope`], of the record read in this transaction);
    ///   otherwise skipped.
    /// * Entries naming a record of another worker or tenant are skipped.
    /// * Records written after `since_rev` (the [`super::stamp`] of this
    ///   connection's accept) are left alone: a command's result on this
    ///   connection is newer than the inventory, taken at the accept.
    ///
    /// Refused with [`StoreError::Fenced`] unless the connection holding
    /// `epoch` still owns the worker (`store::replicas`).
    pub fn reconcile(
        &self,
        worker_id: &str,
        epoch: u64,
        items: &[InventoryItem],
        since_rev: u64,
        now_ms: u64,
    ) -> Result<Vec<Reconciled>, StoreError> {
        self.write("commit a reconcile", |txn| {
            let mut report = Vec::new();
            let workers = txn.open_table(WORKERS).map_err(failed("open workers"))?;
            let worker = super::replicas::owned_worker(&workers, worker_id, epoch)?;
            let allowed_tenant = worker.tenant_scope();
            let mut containers = txn
                .open_table(CONTAINERS)
                .map_err(failed("open containers"))?;
            let mut by_tenant = txn
                .open_table(TENANT_CONTAINERS)
                .map_err(failed("open the tenant index"))?;
            let mut by_worker = txn
                .open_table(WORKER_CONTAINERS)
                .map_err(failed("open the worker index"))?;
            let tenants = txn.open_table(TENANTS).map_err(failed("open tenants"))?;
            let mut counts = Counts::open(txn)?;
            let known = ids_under(&by_worker, worker_id)?;
            let skip = |id: &str, reason: String| Reconciled::Skipped {
                id: id.to_owned(),
                reason,
            };

            for item in items {
                let id = item.container_id.as_str();
                let Some(mut record) = get_json::<ContainerRecord>(&containers, "containers", id)?
                else {
                    if allowed_tenant.is_some_and(|t| t != item.tenant_id) {
                        report.push(skip(id, "tenant is not the worker's own".into()));
                        continue;
                    }
                    if get_json::<Tenant>(&tenants, "tenants", &item.tenant_id)?.is_none() {
                        let reason = format!("unknown tenant {}", item.tenant_id);
                        report.push(skip(id, reason));
                        continue;
                    }
                    let state = item.state.unwrap_or(ContainerState::Exited);
                    let record = ContainerRecord {
                        id: item.container_id.clone(),
                        tenant_id: item.tenant_id.clone(),
                        worker_id: worker_id.to_owned(),
                        name: item.name.clone(),
                        image: item.image.clone(),
                        profile: item.profile.clone().unwrap_or_else(|| "standard".into()),
                        state,
                        engine_id: Some(item.engine_id.clone()),
                        created_at: item.created_at.unwrap_or(now_ms),
                        updated_at: now_ms,
                        last_error: None,
                        // What the agent's gate enforces (none: Open,
                        // Offline, or an agent that does not say).
                        allowed_domains: item.allowed_domains.clone().unwrap_or_default(),
                        rev: super::stamp(),
                    };
                    insert_record(
                        &mut containers,
                        &mut by_tenant,
                        &mut by_worker,
                        &mut counts,
                        &record,
                    )?;
                    report.push(Reconciled::Adopted {
                        id: record.id,
                        state,
                    });
                    continue;
                };
                if record.worker_id != worker_id || record.tenant_id != item.tenant_id {
                    let reason = format!(
                        "the record belongs to worker {} and tenant {}",
                        record.worker_id, record.tenant_id
                    );
                    report.push(skip(id, reason));
                    continue;
                }
                if record.rev > since_rev {
                    report.push(skip(id, "changed since this connection began".into()));
                    continue;
                }
                if record.state == ContainerState::Removed {
                    // An acknowledged remove is final: an engine container
                    // still listed under this id is not brought back.
                    report.push(skip(id, "the record is removed".into()));
                    continue;
                }
                let from = record.state;
                let to = item.state.unwrap_or(from);
                if from == to && record.engine_id.as_deref() == Some(item.engine_id.as_str()) {
                    continue;
                }
                record.state = to;
                record.engine_id = Some(item.engine_id.clone());
                record.updated_at = now_ms;
                record.rev = super::stamp();
                containers
                    .insert(id, encode(&record).as_str())
                    .map_err(failed("update a container"))?;
                counts.container(&record.tenant_id, Some(from), Some(to))?;
                report.push(Reconciled::Updated {
                    id: id.to_owned(),
                    from,
                    to,
                });
            }

            let present: HashSet<&str> = items.iter().map(|i| i.container_id.as_str()).collect();
            for id in known {
                if present.contains(id.as_str()) {
                    continue;
                }
                let Some(mut record) = get_json::<ContainerRecord>(&containers, "containers", &id)?
                else {
                    continue;
                };
                let from = record.state;
                let settled = matches!(
                    from,
                    ContainerState::Removed | ContainerState::Failed | ContainerState::Lost
                );
                if settled || record.rev > since_rev {
                    continue;
                }
                if from == ContainerState::Creating && record.engine_id.is_none() {
                    // Its create never reached the engine (or is still on
                    // its way): nothing was lost. It stays `creating`, so
                    // a retry of the create sends it again.
                    if record.last_error.as_deref() != Some(NEVER_CREATED) {
                        record.last_error = Some(NEVER_CREATED.to_owned());
                        containers
                            .insert(id.as_str(), encode(&record).as_str())
                            .map_err(failed("note a create not on the engine"))?;
                    }
                    let reason = "its create never reached the engine; kept creating".into();
                    report.push(Reconciled::Skipped { id, reason });
                    continue;
                }
                record.state = ContainerState::Lost;
                record.updated_at = now_ms;
                record.rev = super::stamp();
                containers
                    .insert(id.as_str(), encode(&record).as_str())
                    .map_err(failed("mark a container lost"))?;
                counts.container(&record.tenant_id, Some(from), Some(ContainerState::Lost))?;
                report.push(Reconciled::Lost { id, from });
            }
            Ok(report)
        })
    }
}
