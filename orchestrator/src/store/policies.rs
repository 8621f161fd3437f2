//! Uploaded policy components, versioned per scope and name, and which
//! one is active per scope (with the ones it replaced, for rollback).
//!
//! * `policies`: id -> [`PolicyRecord`] (JSON);
//! * `policy_modules`: id -> the component's bytes;
//! * `policy_versions`: `<scope>/<name>` -> the last version number given;
//! * `policy_active`: scope key (`global`, `tenant:<id>`) -> [`ActivePolicy`].
//!
//! Every method is one transaction. Tables are created by the first
//! write; reads before it find nothing.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{decode, encode, failed, get_json, Store, StoreError};

const POLICIES: TableDefinition<&str, &str> = TableDefinition::new("policies");
const POLICY_MODULES: TableDefinition<&str, &[u8]> = TableDefinition::new("policy_modules");
const POLICY_VERSIONS: TableDefinition<&str, &str> = TableDefinition::new("policy_versions");
const POLICY_ACTIVE: TableDefinition<&str, &str> = TableDefinition::new("policy_active");

/// One uploaded version of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRecord {
    pub id: String,
    /// `global` or `tenant:<id>`.
    pub scope: String,
    pub tenant_id: Option<String>,
    pub name: String,
    /// The world it was uploaded for: `admission` or `placement`.
    pub kind: String,
    /// 1, 2, ... per scope and name; set by [`Store::put_policy`].
    pub version: u64,
    pub size_bytes: u64,
    /// SHA-256 of the component, hex.
    pub sha256: String,
    /// Unix ms.
    pub uploaded_at: u64,
}

/// A policy version in force, and how its failures are handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveEntry {
    pub policy_id: String,
    /// `closed` or `lastGood`.
    pub fail_mode: String,
}

/// What is active for one scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivePolicy {
    pub scope: String,
    pub current: ActiveEntry,
    /// The entries it replaced, oldest first (rollback pops the last).
    pub previous: Vec<ActiveEntry>,
    /// Unix ms.
    pub activated_at: u64,
}

/// What a rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollback {
    /// The policy is not the active one of its scope: nothing changed.
    NotActive,
    /// The previous entry is active again.
    Restored(ActivePolicy),
    /// Nothing was active before: the scope is back to the stock defaults.
    Cleared,
}

impl Store {
    /// Store a new version of `record.name` in `record.scope`: its version
    /// is the next one of that scope and name. Returns the stored record.
    pub fn put_policy(
        &self,
        mut record: PolicyRecord,
        module: &[u8],
    ) -> Result<PolicyRecord, StoreError> {
        let txn = self.db.begin_write().map_err(failed("begin a write"))?;
        {
            let mut versions = txn
                .open_table(POLICY_VERSIONS)
                .map_err(failed("open policy versions"))?;
            let key = format!("{}/{}", record.scope, record.name);
            let last = versions
                .get(key.as_str())
                .map_err(failed("read a policy version"))?
                .and_then(|v| v.value().parse::<u64>().ok())
                .unwrap_or(0);
            record.version = last + 1;
            versions
                .insert(key.as_str(), record.version.to_string().as_str())
                .map_err(failed("store a policy version"))?;
            let mut table = txn.open_table(POLICIES).map_err(failed("open policies"))?;
            table
                .insert(record.id.as_str(), encode(&record).as_str())
                .map_err(failed("store a policy"))?;
            let mut modules = txn
                .open_table(POLICY_MODULES)
                .map_err(failed("open policy modules"))?;
            modules
                .insert(record.id.as_str(), module)
                .map_err(failed("store a policy module"))?;
        }
        txn.commit().map_err(failed("commit a policy"))?;
        Ok(record)
    }

    pub fn get_policy(&self, id: &str) -> Result<Option<PolicyRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        match txn.open_table(POLICIES) {
            Ok(table) => get_json(&table, "policies", id),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(failed("open policies")(e)),
        }
    }

    /// A policy's component bytes.
    pub fn policy_module(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let table = match txn.open_table(POLICY_MODULES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(failed("open policy modules")(e)),
        };
        let found = table
            .get(id)
            .map_err(failed("read a policy module"))?
            .map(|v| v.value().to_vec());
        Ok(found)
    }

    /// Every uploaded version, by scope, name and version.
    pub fn list_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let table = match txn.open_table(POLICIES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(failed("open policies")(e)),
        };
        let mut out: Vec<PolicyRecord> = Vec::new();
        for entry in table.iter().map_err(failed("scan policies"))? {
            let (k, v) = entry.map_err(failed("scan policies"))?;
            out.push(decode("policies", k.value(), v.value())?);
        }
        out.sort_by(|a, b| (&a.scope, &a.name, a.version).cmp(&(&b.scope, &b.name, b.version)));
        Ok(out)
    }

    /// What is active, every scope.
    pub fn active_policies(&self) -> Result<Vec<ActivePolicy>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let table = match txn.open_table(POLICY_ACTIVE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(failed("open active policies")(e)),
        };
        let mut out = Vec::new();
        for entry in table.iter().map_err(failed("scan active policies"))? {
            let (k, v) = entry.map_err(failed("scan active policies"))?;
            out.push(decode("policy_active", k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Make policy `id` the active one of its scope; the entry it replaces
    /// is kept for rollback. Activating the active one again only changes
    /// its fail mode.
    pub fn activate_policy(
        &self,
        id: &str,
        fail_mode: &str,
        now: u64,
    ) -> Result<ActivePolicy, StoreError> {
        let txn = self.db.begin_write().map_err(failed("begin a write"))?;
        let active = {
            let policies = txn.open_table(POLICIES).map_err(failed("open policies"))?;
            let record: PolicyRecord =
                get_json(&policies, "policies", id)?.ok_or_else(|| StoreError::NotFound {
                    what: "policy",
                    id: id.to_owned(),
                })?;
            let mut table = txn
                .open_table(POLICY_ACTIVE)
                .map_err(failed("open active policies"))?;
            let before: Option<ActivePolicy> = get_json(&table, "policy_active", &record.scope)?;
            let entry = ActiveEntry {
                policy_id: id.to_owned(),
                fail_mode: fail_mode.to_owned(),
            };
            let active = match before {
                Some(mut a) if a.current.policy_id == id => {
                    a.current = entry;
                    a.activated_at = now;
                    a
                }
                Some(mut a) => {
                    a.previous.push(a.current);
                    a.current = entry;
                    a.activated_at = now;
                    a
                }
                None => ActivePolicy {
                    scope: record.scope.clone(),
                    current: entry,
                    previous: Vec::new(),
                    activated_at: now,
                },
            };
            table
                .insert(record.scope.as_str(), encode(&active).as_str())
                .map_err(failed("store an activation"))?;
            active
        };
        txn.commit().map_err(failed("commit an activation"))?;
        Ok(active)
    }

    /// Back from policy `id` (the active one of its scope) to the entry
    /// active before it, or to the stock defaults when there was none.
    pub fn rollback_policy(&self, id: &str, now: u64) -> Result<Rollback, StoreError> {
        let txn = self.db.begin_write().map_err(failed("begin a write"))?;
        let outcome = {
            let policies = txn.open_table(POLICIES).map_err(failed("open policies"))?;
            let record: PolicyRecord =
                get_json(&policies, "policies", id)?.ok_or_else(|| StoreError::NotFound {
                    what: "policy",
                    id: id.to_owned(),
                })?;
            let mut table = txn
                .open_table(POLICY_ACTIVE)
                .map_err(failed("open active policies"))?;
            let before: Option<ActivePolicy> = get_json(&table, "policy_active", &record.scope)?;
            match before {
                Some(mut a) if a.current.policy_id == id => match a.previous.pop() {
                    Some(prev) => {
                        a.current = prev;
                        a.activated_at = now;
                        table
                            .insert(record.scope.as_str(), encode(&a).as_str())
                            .map_err(failed("store a rollback"))?;
                        Rollback::Restored(a)
                    }
                    None => {
                        table
                            .remove(record.scope.as_str())
                            .map_err(failed("store a rollback"))?;
                        Rollback::Cleared
                    }
                },
                _ => Rollback::NotActive,
            }
        };
        txn.commit().map_err(failed("commit a rollback"))?;
        Ok(outcome)
    }
}
