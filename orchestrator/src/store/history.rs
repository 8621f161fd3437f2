//! History retention: removed container records stay listed for their
//! tenant plan's `historyDays`, counted from the record's last change
//! (`updated_at`, which is when it became `removed`: nothing changes a
//! removed record afterwards), and are deleted by [`Store::prune_history`].
//!
//! Only `removed` records are pruned: `lost` and `failed` ones describe
//! something an operator may still need to act on.

use std::collections::HashMap;

use super::{
    decode, failed, get_json, ContainerRecord, ContainerState, Plan, Store, StoreError, Tenant,
    CONTAINERS, TENANTS, TENANT_CONTAINERS, WORKER_CONTAINERS,
};

/// One record a prune deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub id: String,
    pub tenant_id: String,
    /// When it was removed (its last `updated_at`).
    pub removed_at: u64,
}

impl Store {
    /// Delete every `removed` container record older than its tenant's
    /// retention at `now_ms`, with its index entries, in one transaction.
    /// A record whose tenant is gone keeps the Free plan's retention.
    pub fn prune_history(&self, now_ms: u64) -> Result<Vec<Pruned>, StoreError> {
        self.write("commit a prune", |txn| {
            let mut pruned = Vec::new();
            let tenants = txn.open_table(TENANTS).map_err(failed("open tenants"))?;
            let mut containers = txn
                .open_table(CONTAINERS)
                .map_err(failed("open containers"))?;
            let mut plans: HashMap<String, Plan> = HashMap::new();
            for (key, value) in containers.all().map_err(failed("scan containers"))? {
                let record: ContainerRecord = decode("containers", &key, &value)?;
                if record.state != ContainerState::Removed {
                    continue;
                }
                let plan = match plans.get(&record.tenant_id) {
                    Some(plan) => *plan,
                    None => {
                        let plan = get_json::<Tenant>(&tenants, "tenants", &record.tenant_id)?
                            .map_or(Plan::Free, |t| t.plan);
                        plans.insert(record.tenant_id.clone(), plan);
                        plan
                    }
                };
                if now_ms.saturating_sub(record.updated_at) >= plan.history_ms() {
                    pruned.push(Pruned {
                        id: record.id,
                        tenant_id: record.tenant_id,
                        removed_at: record.updated_at,
                    });
                }
            }
            let mut by_tenant = txn
                .open_table(TENANT_CONTAINERS)
                .map_err(failed("open the tenant index"))?;
            let mut by_worker = txn
                .open_table(WORKER_CONTAINERS)
                .map_err(failed("open the worker index"))?;
            for p in &pruned {
                let Some(guard) = containers
                    .remove(p.id.as_str())
                    .map_err(failed("prune a container"))?
                else {
                    continue;
                };
                let record: ContainerRecord = decode("containers", &p.id, &guard)?;
                let tenant_key = format!("{}/{}", record.tenant_id, record.id);
                by_tenant
                    .remove(tenant_key.as_str())
                    .map_err(failed("unindex a pruned container"))?;
                let worker_key = format!("{}/{}", record.worker_id, record.id);
                by_worker
                    .remove(worker_key.as_str())
                    .map_err(failed("unindex a pruned container"))?;
            }
            Ok(pruned)
        })
    }
}
