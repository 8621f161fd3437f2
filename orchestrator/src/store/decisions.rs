//! Policy decisions with their explanation (which module decided, the
//! admission, every candidate's verdict, reason and score, the choice),
//! kept per tenant so they can be read back, listed and replayed by the
//! simulate endpoint. The explanation is typed (`policy::Explanation`);
//! one stored by an earlier build reads as it was, or, when it does not
//! read as one, is kept as stored and marked unreadable
//! (`policy::Recorded`).
//!
//! Tables are created by the first write; reads before it find nothing.

use redb::TableDefinition;

use super::engine::WriteTxn;
use serde::{Deserialize, Serialize};

use crate::policy::Recorded;

use super::{decode, encode, failed, get_json, Store, StoreError};

/// Decision id -> [`DecisionRecord`] (JSON).
const DECISIONS: TableDefinition<&str, &str> = TableDefinition::new("decisions");
/// `tenantId/<at, 20 digits>/decisionId` -> `""`: a tenant's decisions in time order.
const TENANT_DECISIONS: TableDefinition<&str, &str> = TableDefinition::new("tenant_decisions");

/// The most decisions one list answers.
pub const MAX_DECISION_PAGE: usize = 500;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionRecord {
    pub id: String,
    pub tenant_id: String,
    /// Unix ms.
    pub at: u64,
    /// `placed`, `admitted`, `denied`, `no_fit` or `failed`.
    pub outcome: String,
    /// The container the decision was for.
    pub container_id: Option<String>,
    /// Inputs, answers and modules (`policy::Explanation`).
    pub explanation: Recorded,
}

fn index_key(tenant_id: &str, at: u64, id: &str) -> String {
    format!("{tenant_id}/{at:020}/{id}")
}

/// Record `d` in `txn` (with the write its decision allowed).
pub(super) fn insert(txn: &WriteTxn, d: &DecisionRecord) -> Result<(), StoreError> {
    let mut table = txn
        .open_table(DECISIONS)
        .map_err(failed("open decisions"))?;
    table
        .insert(d.id.as_str(), encode(d).as_str())
        .map_err(failed("store a decision"))?;
    let mut index = txn
        .open_table(TENANT_DECISIONS)
        .map_err(failed("open tenant decisions"))?;
    index
        .insert(index_key(&d.tenant_id, d.at, &d.id).as_str(), "")
        .map_err(failed("index a decision"))?;
    Ok(())
}

impl Store {
    /// Record a decision (ids are unique; a second write replaces).
    /// Decisions are made while answering an API call
    /// (a create, an enrolment), so this commits without fsync like the
    /// call's other writes (`write_api`): a later durable commit
    /// carries it to disk before the answer goes out (see `store/durable`).
    pub fn put_decision(&self, d: &DecisionRecord) -> Result<(), StoreError> {
        self.write_api("commit a decision", |txn| insert(txn, d))
    }

    pub fn get_decision(&self, id: &str) -> Result<Option<DecisionRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let table = txn
            .open_table(DECISIONS)
            .map_err(failed("open decisions"))?;
        get_json(&table, "decisions", id)
    }

    /// The newest `limit` decisions of a tenant, newest first.
    pub fn list_decisions(
        &self,
        tenant_id: &str,
        limit: usize,
    ) -> Result<Vec<DecisionRecord>, StoreError> {
        self.list_decisions_before(tenant_id, None, limit)
    }

    /// As [`Store::list_decisions`], older than the decision `before` (a
    /// page's last), which must be the tenant's (else `NotFound`).
    pub fn list_decisions_before(
        &self,
        tenant_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DecisionRecord>, StoreError> {
        let limit = limit.min(MAX_DECISION_PAGE);
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let index = txn
            .open_table(TENANT_DECISIONS)
            .map_err(failed("open tenant decisions"))?;
        let table = txn
            .open_table(DECISIONS)
            .map_err(failed("open decisions"))?;
        let from = format!("{tenant_id}/");
        let to = match before {
            None => format!("{tenant_id}0"),
            Some(id) => {
                let found: Option<DecisionRecord> = get_json(&table, "decisions", id)?;
                match found.filter(|d| d.tenant_id == tenant_id) {
                    Some(d) => index_key(tenant_id, d.at, &d.id),
                    None => {
                        return Err(StoreError::NotFound {
                            what: "decision of this tenant",
                            id: id.to_owned(),
                        })
                    }
                }
            }
        };
        let mut out = Vec::new();
        for (key, _) in index
            .scan(from.as_str()..to.as_str(), true, limit)
            .map_err(failed("scan tenant decisions"))?
        {
            let Some(id) = key.rsplit('/').next().map(str::to_owned) else {
                continue;
            };
            if let Some(v) = table.get(id.as_str()).map_err(failed("read a decision"))? {
                out.push(decode("decisions", &id, &v)?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, tenant: &str, at: u64) -> DecisionRecord {
        DecisionRecord {
            id: id.into(),
            tenant_id: tenant.into(),
            at,
            outcome: "placed".into(),
            container_id: None,
            explanation: Recorded::from_json(serde_json::json!({"reason": id})),
        }
    }

    #[test]
    fn decisions_round_trip_and_list_newest_first_per_tenant() {
        let dir = std::env::temp_dir().join(format!("crops-decisions-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).expect("open");
        assert_eq!(store.get_decision("x").expect("read"), None);
        assert!(store.list_decisions("t", 10).expect("list").is_empty());
        for (id, tenant, at) in [("a", "t", 1), ("b", "t", 3), ("c", "u", 2), ("d", "t", 2)] {
            store.put_decision(&record(id, tenant, at)).expect("put");
        }
        assert_eq!(
            store.get_decision("c").expect("read"),
            Some(record("c", "u", 2))
        );
        let ids: Vec<_> = store
            .list_decisions("t", 10)
            .expect("list")
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(ids, ["b", "d", "a"]);
        assert_eq!(store.list_decisions("t", 1).expect("list").len(), 1);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
