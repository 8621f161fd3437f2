//! Uploaded policy components, versioned per scope and name, and which
//! one is active per scope and role (with the ones it replaced, for
//! rollback).
//!
//! * `policies`: id -> [`PolicyRecord`] (JSON);
//! * `policy_modules`: id -> the component's bytes;
//! * `policy_versions`: `<scope>/<name>` -> the last version number given;
//! * `policy_active`: `<scope>/<role>` (`global/placement`,
//!   `tenant:<id>/admission`) -> [`ActivePolicy`], one slot per scope and
//!   role, each with its own rollback history;
//! * `policy_cache_secret`: `secret` -> the key tagging the compiled
//!   modules cached on disk (`policy::cache`), made once per database.
//!
//! Before roles, `policy_active` held one entry per scope under the bare
//! scope key (`global`, `tenant:<id>`). Such an entry ([`LegacyActive`])
//! is listed by [`Store::legacy_active`] and turned into one slot per role
//! its module implements by [`Store::upgrade_active`] (the orchestrator
//! does it at start); [`Store::active_policies`] lists slots only.
//!
//! Every method is one transaction. Tables are created by the first
//! write; reads before it find nothing.

use redb::TableDefinition;

use super::engine::TextTable;
use serde::{Deserialize, Serialize};

use super::{decode, encode, failed, get_json, Store, StoreError};
use crate::policy::Role;

const POLICIES: TableDefinition<&str, &str> = TableDefinition::new("policies");
const POLICY_MODULES: TableDefinition<&str, &[u8]> = TableDefinition::new("policy_modules");
const POLICY_VERSIONS: TableDefinition<&str, &str> = TableDefinition::new("policy_versions");
const POLICY_ACTIVE: TableDefinition<&str, &str> = TableDefinition::new("policy_active");
const POLICY_CACHE_SECRET: TableDefinition<&str, &[u8]> =
    TableDefinition::new("policy_cache_secret");

/// One uploaded version of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRecord {
    pub id: String,
    /// `global` or `tenant:<id>`.
    pub scope: String,
    pub tenant_id: Option<String>,
    pub name: String,
    /// The world it implements: `admission`, `placement` or `policy`
    /// (both). Records stored before the true world was kept say the
    /// world named at upload (`admission` or `placement`).
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

impl Store {
    /// Store a new version of `record.name` in `record.scope`: its version
    /// is the next one of that scope and name. Returns the stored record.
    pub fn put_policy(
        &self,
        mut record: PolicyRecord,
        module: &[u8],
    ) -> Result<PolicyRecord, StoreError> {
        self.write("commit a policy", |txn| {
            let mut versions = txn
                .open_table(POLICY_VERSIONS)
                .map_err(failed("open policy versions"))?;
            let key = format!("{}/{}", record.scope, record.name);
            let last = versions
                .get(key.as_str())
                .map_err(failed("read a policy version"))?
                .and_then(|v| v.parse::<u64>().ok())
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
            Ok(())
        })?;
        Ok(record)
    }

    /// The key tagging the policy cache's files: the stored one, else
    /// `fresh`, stored now (one transaction: two starts agree on one).
    pub fn policy_cache_secret(&self, fresh: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.write("commit the policy cache secret", |txn| {
            let mut table = txn
                .open_table(POLICY_CACHE_SECRET)
                .map_err(failed("open the policy cache secret"))?;
            let stored = table
                .get("secret")
                .map_err(failed("read the policy cache secret"))?;
            match stored {
                Some(s) => Ok(s),
                None => {
                    table
                        .insert("secret", fresh)
                        .map_err(failed("store the policy cache secret"))?;
                    Ok(fresh.to_vec())
                }
            }
        })
    }

    pub fn get_policy(&self, id: &str) -> Result<Option<PolicyRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let table = txn.open_table(POLICIES).map_err(failed("open policies"))?;
        get_json(&table, "policies", id)
    }

    /// A policy's component bytes.
    pub fn policy_module(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let table = txn
            .open_table(POLICY_MODULES)
            .map_err(failed("open policy modules"))?;
        let found = table.get(id).map_err(failed("read a policy module"))?;
        Ok(found)
    }

    /// Every uploaded version, by scope, name and version.
    pub fn list_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let table = txn.open_table(POLICIES).map_err(failed("open policies"))?;
        let mut out: Vec<PolicyRecord> = Vec::new();
        for (k, v) in table.all().map_err(failed("scan policies"))? {
            out.push(decode("policies", &k, &v)?);
        }
        out.sort_by(|a, b| (&a.scope, &a.name, a.version).cmp(&(&b.scope, &b.name, b.version)));
        Ok(out)
    }
}

/// What is active in one slot: a scope's admission or its placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivePolicy {
    pub scope: String,
    pub role: Role,
    pub current: ActiveEntry,
    /// The entries it replaced in this slot, oldest first (rollback pops
    /// the last).
    pub previous: Vec<ActiveEntry>,
    /// Unix ms.
    pub activated_at: u64,
}

/// An entry stored before roles: one module for the whole scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyActive {
    pub scope: String,
    pub current: ActiveEntry,
    pub previous: Vec<ActiveEntry>,
    pub activated_at: u64,
}

/// What a rollback did to one slot the policy was the current one of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledBack {
    pub role: Role,
    /// The slot with its previous entry active again; `None`: nothing was
    /// active before, the role is back to the stock default.
    pub active: Option<ActivePolicy>,
}

fn slot_key(scope: &str, role: Role) -> String {
    format!("{scope}/{role}")
}

fn policy(policies: &TextTable<'_>, id: &str) -> Result<PolicyRecord, StoreError> {
    get_json(policies, "policies", id)?.ok_or_else(|| StoreError::NotFound {
        what: "policy",
        id: id.to_owned(),
    })
}

impl Store {
    /// Every filled slot, by scope and role.
    pub fn active_policies(&self) -> Result<Vec<ActivePolicy>, StoreError> {
        self.active_entries()?
            .into_iter()
            .filter(|(k, _)| k.contains('/'))
            .map(|(k, v)| decode("policy_active", &k, &v))
            .collect()
    }

    /// Entries stored before roles (see the module docs).
    pub fn legacy_active(&self) -> Result<Vec<LegacyActive>, StoreError> {
        self.active_entries()?
            .into_iter()
            .filter(|(k, _)| !k.contains('/'))
            .map(|(k, v)| decode("policy_active", &k, &v))
            .collect()
    }

    fn active_entries(&self) -> Result<Vec<(String, String)>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let table = txn
            .open_table(POLICY_ACTIVE)
            .map_err(failed("open active policies"))?;
        let mut out = Vec::new();
        for (k, v) in table.all().map_err(failed("scan active policies"))? {
            out.push((k, v));
        }
        Ok(out)
    }

    /// Turn `scope`'s entry stored before roles into one slot per role its
    /// current module implements (`roles_of(policy id)`). Each slot keeps,
    /// as its history, the latest previous entries making that decision
    /// (up to the first that did not: rolling back past it gave the stock
    /// default then, and does now). A slot already filled is left alone.
    /// The old entry is removed. Returns the slots written.
    pub fn upgrade_active(
        &self,
        scope: &str,
        roles_of: impl Fn(&str) -> Vec<Role>,
    ) -> Result<Vec<ActivePolicy>, StoreError> {
        self.write("commit an upgrade", |txn| {
            let mut written = Vec::new();
            let mut table = txn
                .open_table(POLICY_ACTIVE)
                .map_err(failed("open active policies"))?;
            let Some(old) = get_json::<LegacyActive>(&table, "policy_active", scope)? else {
                return Ok(written);
            };
            for role in roles_of(&old.current.policy_id) {
                let key = slot_key(scope, role);
                if table
                    .get(key.as_str())
                    .map_err(failed("read an activation"))?
                    .is_some()
                {
                    continue;
                }
                let kept = old
                    .previous
                    .iter()
                    .rev()
                    .take_while(|e| roles_of(&e.policy_id).contains(&role))
                    .count();
                let slot = ActivePolicy {
                    scope: scope.to_owned(),
                    role,
                    current: old.current.clone(),
                    previous: old.previous[old.previous.len() - kept..].to_vec(),
                    activated_at: old.activated_at,
                };
                table
                    .insert(key.as_str(), encode(&slot).as_str())
                    .map_err(failed("store an activation"))?;
                written.push(slot);
            }
            table
                .remove(scope)
                .map_err(failed("remove an old activation"))?;
            Ok(written)
        })
    }

    /// Make policy `id` the current one of each of `roles` in its scope
    /// (the roles its module implements); each entry it replaces is kept
    /// for that slot's rollback. Activating the current one again only
    /// changes its fail mode. Returns the slots, in `roles` order.
    pub fn activate_policy(
        &self,
        id: &str,
        roles: &[Role],
        fail_mode: &str,
        now: u64,
    ) -> Result<Vec<ActivePolicy>, StoreError> {
        self.write("commit an activation", |txn| {
            let mut slots = Vec::new();
            let record = policy(
                &txn.open_table(POLICIES).map_err(failed("open policies"))?,
                id,
            )?;
            let mut table = txn
                .open_table(POLICY_ACTIVE)
                .map_err(failed("open active policies"))?;
            for &role in roles {
                let key = slot_key(&record.scope, role);
                let before: Option<ActivePolicy> = get_json(&table, "policy_active", &key)?;
                let entry = ActiveEntry {
                    policy_id: id.to_owned(),
                    fail_mode: fail_mode.to_owned(),
                };
                let slot = match before {
                    Some(mut a) => {
                        if a.current.policy_id != id {
                            a.previous.push(a.current);
                        }
                        a.current = entry;
                        a.activated_at = now;
                        a
                    }
                    None => ActivePolicy {
                        scope: record.scope.clone(),
                        role,
                        current: entry,
                        previous: Vec::new(),
                        activated_at: now,
                    },
                };
                table
                    .insert(key.as_str(), encode(&slot).as_str())
                    .map_err(failed("store an activation"))?;
                slots.push(slot);
            }
            Ok(slots)
        })
    }

    /// Back from policy `id`, in every slot of its scope it is the current
    /// one of, to that slot's previous entry (or the stock default when
    /// there was none). Empty: it is current nowhere, nothing changed.
    pub fn rollback_policy(&self, id: &str, now: u64) -> Result<Vec<RolledBack>, StoreError> {
        self.write("commit a rollback", |txn| {
            let mut done = Vec::new();
            let record = policy(
                &txn.open_table(POLICIES).map_err(failed("open policies"))?,
                id,
            )?;
            let mut table = txn
                .open_table(POLICY_ACTIVE)
                .map_err(failed("open active policies"))?;
            for role in Role::ALL {
                let key = slot_key(&record.scope, role);
                let before: Option<ActivePolicy> = get_json(&table, "policy_active", &key)?;
                let Some(mut a) = before.filter(|a| a.current.policy_id == id) else {
                    continue;
                };
                let active = match a.previous.pop() {
                    Some(prev) => {
                        a.current = prev;
                        a.activated_at = now;
                        table
                            .insert(key.as_str(), encode(&a).as_str())
                            .map_err(failed("store a rollback"))?;
                        Some(a)
                    }
                    None => {
                        table
                            .remove(key.as_str())
                            .map_err(failed("store a rollback"))?;
                        None
                    }
                };
                done.push(RolledBack { role, active });
            }
            Ok(done)
        })
    }
}

#[cfg(test)]
mod tests;
