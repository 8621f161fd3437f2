//! Per-tenant usage counters: what plan admission counts (containers by
//! state, self-hosted workers), kept in the store and changed in the same
//! write transaction as the record they count.
//!
//! Admission reads one key instead of scanning a tenant's containers and
//! the whole fleet (an enrolment among 10,000 workers read all 10,000), and
//! an admitted insert checks, inside its own transaction, that the usage
//! its policy decided on is still the usage now (`Store::create_admitted`,
//! `Store::enroll`): the count and the insert are one serialisable step.
//!
//! Every write that changes a container's state or a worker's standing goes
//! through [`Counts`]; the counters are also recounted from the records when
//! the store is opened ([`recount`]), so a database written by a build
//! without them, or any drift, is corrected at the next start.

use redb::TableDefinition;

use super::engine::{TextTable, WriteTxn};
use serde::{Deserialize, Serialize};

use super::{
    decode, encode, failed, get_json, ContainerState, Store, StoreError, Worker, WorkerMode,
    CONTAINERS, WORKERS,
};

/// Tenant id -> [`TenantUsage`] (JSON).
const TENANT_USAGE: TableDefinition<&str, &str> = TableDefinition::new("tenant_usage");

/// What a tenant holds, as admission counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TenantUsage {
    pub creating: u32,
    pub created: u32,
    pub running: u32,
    pub exited: u32,
    pub lost: u32,
    pub failed: u32,
    /// Byom workers of the tenant neither revoked nor deleted.
    pub workers: u32,
}

impl TenantUsage {
    /// The counter of `state` (`removed` is not counted).
    fn slot(&mut self, state: ContainerState) -> Option<&mut u32> {
        Some(match state {
            ContainerState::Creating => &mut self.creating,
            ContainerState::Created => &mut self.created,
            ContainerState::Running => &mut self.running,
            ContainerState::Exited => &mut self.exited,
            ContainerState::Lost => &mut self.lost,
            ContainerState::Failed => &mut self.failed,
            ContainerState::Removed => return None,
        })
    }

    fn moved(&mut self, from: Option<ContainerState>, to: Option<ContainerState>) {
        if let Some(slot) = from.and_then(|s| self.slot(s)) {
            *slot = slot.saturating_sub(1);
        }
        if let Some(slot) = to.and_then(|s| self.slot(s)) {
            *slot = slot.saturating_add(1);
        }
    }
}

/// The tenant a worker counts for: a byom worker neither revoked nor deleted.
pub(super) fn counted_for(worker: &Worker) -> Option<&str> {
    (worker.mode == WorkerMode::Byom && !worker.revoked && !worker.is_deleted())
        .then_some(worker.tenant_id.as_str())
}

/// The counters, open in a write transaction.
pub(super) struct Counts<'txn> {
    table: TextTable<'txn>,
}

impl<'txn> Counts<'txn> {
    pub(super) fn open(txn: &'txn WriteTxn) -> Result<Self, StoreError> {
        let table = txn
            .open_table(TENANT_USAGE)
            .map_err(failed("open tenant usage"))?;
        Ok(Self { table })
    }

    pub(super) fn get(&self, tenant_id: &str) -> Result<TenantUsage, StoreError> {
        Ok(get_json(&self.table, "tenant_usage", tenant_id)?.unwrap_or_default())
    }

    fn change(
        &mut self,
        tenant_id: &str,
        f: impl FnOnce(&mut TenantUsage),
    ) -> Result<(), StoreError> {
        let mut usage = self.get(tenant_id)?;
        let before = usage;
        f(&mut usage);
        if usage != before {
            self.table
                .insert(tenant_id, encode(&usage).as_str())
                .map_err(failed("count a tenant's usage"))?;
        }
        Ok(())
    }

    /// A container of `tenant_id` went from `from` to `to` (`None`: absent).
    pub(super) fn container(
        &mut self,
        tenant_id: &str,
        from: Option<ContainerState>,
        to: Option<ContainerState>,
    ) -> Result<(), StoreError> {
        if from == to {
            return Ok(());
        }
        self.change(tenant_id, |u| u.moved(from, to))
    }

    /// A worker changed from `before` to `after` (`None`: absent).
    pub(super) fn worker(
        &mut self,
        before: Option<&Worker>,
        after: Option<&Worker>,
    ) -> Result<(), StoreError> {
        let (was, is) = (before.and_then(counted_for), after.and_then(counted_for));
        if was == is {
            return Ok(());
        }
        if let Some(tenant) = was {
            self.change(tenant, |u| u.workers = u.workers.saturating_sub(1))?;
        }
        if let Some(tenant) = is {
            self.change(tenant, |u| u.workers = u.workers.saturating_add(1))?;
        }
        Ok(())
    }
}

/// Count every tenant's usage afresh from the records, in `txn`.
pub(super) fn recount(txn: &WriteTxn) -> Result<(), StoreError> {
    #[derive(Deserialize)]
    struct Counted {
        tenant_id: String,
        state: ContainerState,
    }
    let mut all: std::collections::BTreeMap<String, TenantUsage> = Default::default();
    {
        let containers = txn
            .open_table(CONTAINERS)
            .map_err(failed("open containers"))?;
        for (key, value) in containers.all().map_err(failed("count containers"))? {
            let c: Counted = decode("containers", &key, &value)?;
            all.entry(c.tenant_id)
                .or_default()
                .moved(None, Some(c.state));
        }
        let workers = txn.open_table(WORKERS).map_err(failed("open workers"))?;
        for (key, value) in workers.all().map_err(failed("count workers"))? {
            let w: Worker = decode("workers", &key, &value)?;
            if let Some(tenant) = counted_for(&w) {
                let u = all.entry(tenant.to_owned()).or_default();
                u.workers = u.workers.saturating_add(1);
            }
        }
    }
    txn.clear_table(TENANT_USAGE)
        .map_err(failed("reset tenant usage"))?;
    let mut table = txn
        .open_table(TENANT_USAGE)
        .map_err(failed("open tenant usage"))?;
    for (tenant, usage) in &all {
        table
            .insert(tenant.as_str(), encode(usage).as_str())
            .map_err(failed("count a tenant's usage"))?;
    }
    Ok(())
}

impl Store {
    /// What `tenant_id` holds now (one key; zero for an unknown tenant).
    pub fn tenant_usage(&self, tenant_id: &str) -> Result<TenantUsage, StoreError> {
        let txn = self.db.begin_read_one().map_err(failed("begin a read"))?;
        let table = txn
            .open_table(TENANT_USAGE)
            .map_err(failed("open tenant usage"))?;
        Ok(get_json(&table, "tenant_usage", tenant_id)?.unwrap_or_default())
    }

    /// Recount every tenant's usage from the records (what [`Store::open`]
    /// does); for tests that compare the counters with the records.
    pub fn recount_usage(&self) -> Result<(), StoreError> {
        self.write("commit a usage recount", recount)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn moves_between_states_keep_the_counts() {
        let mut u = TenantUsage::default();
        u.moved(None, Some(ContainerState::Creating));
        u.moved(
            Some(ContainerState::Creating),
            Some(ContainerState::Running),
        );
        u.moved(None, Some(ContainerState::Removed));
        assert_eq!((u.creating, u.running), (0, 1));
        u.moved(Some(ContainerState::Running), Some(ContainerState::Removed));
        assert_eq!(u, TenantUsage::default());
        // Never below zero, whatever a caller reports.
        u.moved(Some(ContainerState::Lost), None);
        assert_eq!(u, TenantUsage::default());
    }

    use crate::store::{
        stamp, Admitted, AdmittedCreate, ContainerRecord, CreateOutcome, DecisionRecord, Enrolment,
        InventoryItem, JoinToken, NewWorker, Tenant,
    };

    fn store(name: &str) -> Store {
        let dir = std::env::temp_dir().join(format!(
            "crops-usage-{name}-{}-{}",
            std::process::id(),
            crate::now_ms()
        ));
        Store::open(&dir).expect("open")
    }

    /// A fresh store holding tenant `t` (on the Free plan).
    pub(in crate::store) fn store_with_tenant(name: &str) -> Store {
        let s = store(name);
        let tenant = Tenant {
            id: "t".into(),
            name: "t".into(),
            created_at: 1,
            org_id: String::new(),
            plan: Default::default(),
            allowed_domains: Vec::new(),
        };
        s.create_tenant(&tenant).expect("tenant");
        s
    }

    fn record(id: &str, state: ContainerState) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            tenant_id: "t".into(),
            worker_id: "w".into(),
            name: id.into(),
            image: "i".into(),
            profile: "standard".into(),
            state,
            engine_id: None,
            created_at: 1,
            updated_at: 1,
            last_error: None,
            allowed_domains: Vec::new(),
            rev: 0,
        }
    }

    fn decision(id: &str) -> DecisionRecord {
        DecisionRecord {
            id: id.into(),
            tenant_id: "t".into(),
            at: 1,
            outcome: "admitted".into(),
            container_id: None,
            explanation: crate::policy::Explanation::default().into(),
        }
    }

    pub(in crate::store) fn token(s: &Store, hash: &str) {
        let token = JoinToken {
            tenant_id: "t".into(),
            created_at: 1,
            expires_at: u64::MAX,
            used: false,
            fleet: None,
        };
        s.create_join_token(hash, &token).expect("token");
    }

    pub(in crate::store) fn worker(id: &str) -> NewWorker {
        NewWorker {
            id: id.into(),
            name: id.into(),
            hostname: None,
            credential_hash: format!("cred-{id}"),
        }
    }

    #[test]
    fn admitted_writes_need_the_usage_they_were_decided_on() {
        let s = store_with_tenant("admitted");
        let zero = TenantUsage::default();
        let (d1, d2) = (decision("d1"), decision("d2"));
        let on = |usage, decision| Admitted {
            usage,
            decision: Some(decision),
        };

        // Enrolment: without a decision, or on a stale usage, nothing is
        // written and the usage to decide on is named.
        token(&s, "j1");
        token(&s, "j2");
        let enrol = |hash, id, admitted| s.enroll(hash, 2, &worker(id), admitted).expect("enrol");
        assert!(matches!(enrol("j1", "w", None), Enrolment::Decide { usage, .. } if usage == zero));
        assert!(matches!(
            enrol("j1", "w", Some(on(&zero, &d1))),
            Enrolment::Enrolled(..)
        ));
        let one = TenantUsage { workers: 1, ..zero };
        assert!(
            matches!(enrol("j2", "w2", Some(on(&zero, &d2))), Enrolment::Decide { usage, .. } if usage == one)
        );
        assert_eq!(s.tenant_usage("t").expect("usage"), one);
        assert!(s.get_decision("d2").expect("read").is_none());
        assert!(s.get_decision("d1").expect("read").is_some());

        // Creates likewise.
        let c1 = record("c1", ContainerState::Creating);
        let done = s.create_admitted(&c1, on(&one, &d2)).expect("create");
        assert_eq!(done, AdmittedCreate::Done(CreateOutcome::Created));
        let c2 = record("c2", ContainerState::Creating);
        let now = TenantUsage { creating: 1, ..one };
        let stale = s.create_admitted(&c2, on(&one, &d2)).expect("create");
        assert_eq!(stale, AdmittedCreate::Changed(now));
        assert!(s.get_container("c2").expect("read").is_none());
        // A retry of an existing id is found whatever the usage.
        let again = s.create_admitted(&c1, on(&zero, &d2)).expect("create");
        assert!(matches!(
            again,
            AdmittedCreate::Done(CreateOutcome::Exists(_))
        ));
    }

    #[test]
    fn counters_follow_every_write_and_match_a_recount() {
        let s = store_with_tenant("follow");
        let zero = TenantUsage::default();
        token(&s, "j1");
        let d = decision("d");
        let admitted = Some(Admitted {
            usage: &zero,
            decision: Some(&d),
        });
        let enrolled = s.enroll("j1", 2, &worker("w"), admitted).expect("enrol");
        assert!(matches!(enrolled, Enrolment::Enrolled(..)));
        for (id, state) in [
            ("a", ContainerState::Creating),
            ("b", ContainerState::Creating),
        ] {
            s.create_container(&record(id, state)).expect("create");
        }
        s.create_container(&record("gone", ContainerState::Removed))
            .expect("create");
        s.update_container("a", 3, |r| r.state = ContainerState::Running)
            .expect("update");
        // The inventory: `a` exited, `b` absent (still `creating`: it never
        // reached the engine, so nothing was lost), `x` adopted running.
        let item = |id: &str, state| InventoryItem {
            container_id: id.into(),
            tenant_id: "t".into(),
            engine_id: format!("e-{id}"),
            name: id.into(),
            image: "i".into(),
            state: Some(state),
            profile: None,
            created_at: None,
            allowed_domains: None,
        };
        let items = [
            item("a", ContainerState::Exited),
            item("x", ContainerState::Running),
        ];
        let epoch = s
            .record_register("w", "r", "w", "h", super::super::replicas::tests::info(), 3)
            .expect("register")
            .owner
            .expect("owned")
            .epoch;
        s.reconcile("w", epoch, &items, stamp(), 4)
            .expect("reconcile");
        let want = TenantUsage {
            creating: 1,
            exited: 1,
            running: 1,
            workers: 1,
            ..zero
        };
        assert_eq!(s.tenant_usage("t").expect("usage"), want);
        s.revoke_worker("w").expect("revoke");
        s.delete_worker("w", 5).expect("delete");
        let want = TenantUsage { workers: 0, ..want };
        assert_eq!(s.tenant_usage("t").expect("usage"), want);
        s.recount_usage().expect("recount");
        assert_eq!(s.tenant_usage("t").expect("usage"), want);
    }
}
