//! The audit log: append-only entries numbered by a sequence, indexed by
//! tenant and by organisation. There is no method to change or delete an
//! entry; the store's interface is append and query.
//!
//! An entry naming a tenant gets that tenant's organisation from the
//! tenant record, in the same transaction that appends it.
//!
//! Beside the log, a journal of **intents**: a call's entry recorded
//! (durably) before its outcome is known, so the call can run while the
//! disk syncs (see `crate::audit`). The call's real entry, appended later,
//! clears its intent in the same transaction; an intent still there at
//! start-up (the orchestrator stopped in between) becomes an entry with
//! outcome `interrupted` ([`Store::recover_audit_intents`]). The journal is
//! never read by queries: the log alone is the record.

use redb::TableDefinition;

use super::engine::{Durability, SeqTable, TextTable, WriteTxn};
use serde::{Deserialize, Serialize};

use super::{decode, encode, failed, get_json, Store, StoreError, Tenant, TENANTS};

/// Sequence number -> [`AuditEntry`] (JSON).
pub(super) const AUDIT: TableDefinition<u64, &str> = TableDefinition::new("audit");
/// `tenantId/<seq, 20 digits>` -> `""`.
pub(super) const AUDIT_BY_TENANT: TableDefinition<&str, &str> =
    TableDefinition::new("audit_by_tenant");
/// `orgId/<seq, 20 digits>` -> `""`.
pub(super) const AUDIT_BY_ORG: TableDefinition<&str, &str> = TableDefinition::new("audit_by_org");
/// Intent id -> the call's [`AuditEntry`] as known before its outcome (JSON).
const AUDIT_INTENTS: TableDefinition<u64, &str> = TableDefinition::new("audit_intents");
/// The outcome of an intent whose call never finished.
pub const INTERRUPTED: &str = "interrupted";

/// One thing that happened: who did what to which object, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Set by the store when appended: strictly increasing.
    pub seq: u64,
    /// Unix milliseconds.
    pub at: u64,
    /// `operator`, `member:<id>`, `join-token` or `worker:<id>`.
    pub principal: String,
    /// `api` (an HTTP call), `command` (sent to an agent) or `terminal`.
    pub kind: String,
    /// What was asked, e.g. `container.start` or `POST /v1/tenants`.
    pub action: String,
    /// The object acted on (a path, a container or worker id).
    pub target: String,
    pub tenant_id: Option<String>,
    pub org_id: Option<String>,
    /// `ok`, or the error code the caller got.
    pub outcome: String,
    /// The HTTP status answered (API calls only).
    pub status: Option<u16>,
}

/// One write of an audit batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditWrite {
    /// Append an entry, clearing the intent it completes, if any.
    Append {
        entry: AuditEntry,
        clears: Option<u64>,
    },
    /// Record an intent; it gets the next intent id.
    Intent(AuditEntry),
}

/// What a write of an audit batch became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditWritten {
    Appended(AuditEntry),
    Intent(u64),
}

pub(super) fn index_key(owner: &str, seq: u64) -> String {
    format!("{owner}/{seq:020}")
}

/// The log's tables, open in one write transaction.
struct Log<'t> {
    log: SeqTable<'t>,
    tenants: TextTable<'t>,
    by_tenant: TextTable<'t>,
    by_org: TextTable<'t>,
    last: u64,
}

impl<'t> Log<'t> {
    fn open(txn: &'t WriteTxn) -> Result<Self, StoreError> {
        let log = txn
            .open_table(AUDIT)
            .map_err(failed("open the audit log"))?;
        let last = log
            .last()
            .map_err(failed("read the audit log's end"))?
            .map_or(0, |(k, _)| k);
        Ok(Self {
            log,
            tenants: txn.open_table(TENANTS).map_err(failed("open tenants"))?,
            by_tenant: txn
                .open_table(AUDIT_BY_TENANT)
                .map_err(failed("open the audit tenant index"))?,
            by_org: txn
                .open_table(AUDIT_BY_ORG)
                .map_err(failed("open the audit org index"))?,
            last,
        })
    }

    /// Append `entry` with the next sequence number, indexed; as stored.
    fn append(&mut self, entry: AuditEntry) -> Result<AuditEntry, StoreError> {
        self.last += 1;
        let mut entry = AuditEntry {
            seq: self.last,
            ..entry
        };
        if let (Some(tenant_id), None) = (&entry.tenant_id, &entry.org_id) {
            entry.org_id = get_json::<Tenant>(&self.tenants, "tenants", tenant_id)?
                .map(|t| t.org_id)
                .filter(|o| !o.is_empty());
        }
        self.log
            .insert(entry.seq, encode(&entry).as_str())
            .map_err(failed("append to the audit log"))?;
        if let Some(tenant_id) = &entry.tenant_id {
            self.by_tenant
                .insert(index_key(tenant_id, entry.seq).as_str(), "")
                .map_err(failed("index an audit entry"))?;
        }
        if let Some(org_id) = &entry.org_id {
            self.by_org
                .insert(index_key(org_id, entry.seq).as_str(), "")
                .map_err(failed("index an audit entry"))?;
        }
        Ok(entry)
    }
}

impl Store {
    /// Append `entry` (its `seq` is assigned) and return the stored entry.
    /// `durable: false` commits without fsync (the next durable commit, or
    /// closing the database, makes it durable): for entries that record no
    /// acknowledged write of their own.
    pub fn append_audit(&self, entry: AuditEntry, durable: bool) -> Result<AuditEntry, StoreError> {
        match self.append_audit_batch(vec![entry], durable)?.pop() {
            Some(stored) => Ok(stored),
            None => unreachable!("a batch stores one entry per entry given"),
        }
    }

    /// Append `entries` in order, in one transaction, and return them as
    /// stored.
    pub fn append_audit_batch(
        &self,
        entries: Vec<AuditEntry>,
        durable: bool,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let writes = entries
            .into_iter()
            .map(|entry| AuditWrite::Append {
                entry,
                clears: None,
            })
            .collect();
        Ok(self
            .write_audit_batch(writes, durable)?
            .into_iter()
            .filter_map(|w| match w {
                AuditWritten::Appended(e) => Some(e),
                AuditWritten::Intent(_) => None,
            })
            .collect())
    }

    /// Apply `writes` in order, in one transaction (the audit writer's
    /// group commit); one result per write.
    pub fn write_audit_batch(
        &self,
        writes: Vec<AuditWrite>,
        durable: bool,
    ) -> Result<Vec<AuditWritten>, StoreError> {
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        let (written, covered) = self.write_with(durability, "commit an audit entry", |txn| {
            // Inside the transaction: on redb, under its one write lock.
            let covered = self.api_writes.covered();
            let mut log = Log::open(txn)?;
            let mut intents = txn
                .open_table(AUDIT_INTENTS)
                .map_err(failed("open the audit intents"))?;
            // Read only by a batch that records an intent (a round trip
            // on PostgreSQL).
            let mut next_intent = None;
            let mut written = Vec::with_capacity(writes.len());
            for write in &writes {
                match write {
                    AuditWrite::Append { entry, clears } => {
                        if let Some(id) = *clears {
                            intents
                                .remove(id)
                                .map_err(failed("clear an audit intent"))?;
                        }
                        written.push(AuditWritten::Appended(log.append(entry.clone())?));
                    }
                    AuditWrite::Intent(entry) => {
                        let id = match next_intent {
                            Some(id) => id,
                            None => {
                                intents
                                    .last()
                                    .map_err(failed("read the audit intents' end"))?
                                    .map_or(0, |(k, _)| k)
                                    + 1
                            }
                        };
                        next_intent = Some(id + 1);
                        intents
                            .insert(id, encode(entry).as_str())
                            .map_err(failed("record an audit intent"))?;
                        written.push(AuditWritten::Intent(id));
                    }
                }
            }
            Ok((written, covered))
        })?;
        if durable {
            self.api_writes.synced(covered);
        }
        Ok(written)
    }

    /// Turn every intent left by a stopped orchestrator into an entry with
    /// outcome [`INTERRUPTED`] (in intent order), durably; how many.
    pub fn recover_audit_intents(&self) -> Result<usize, StoreError> {
        self.write("commit recovered audit intents", |txn| {
            let mut log = Log::open(txn)?;
            let mut intents = txn
                .open_table(AUDIT_INTENTS)
                .map_err(failed("open the audit intents"))?;
            let left = intents.all().map_err(failed("scan the audit intents"))?;
            for (id, value) in &left {
                let entry: AuditEntry = decode("audit intent", &id.to_string(), value)?;
                log.append(AuditEntry {
                    outcome: INTERRUPTED.into(),
                    status: None,
                    ..entry
                })?;
                intents
                    .remove(*id)
                    .map_err(failed("clear an audit intent"))?;
            }
            Ok(left.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AuditScope;

    fn entry(tenant: Option<&str>) -> AuditEntry {
        AuditEntry {
            seq: 0,
            at: 1,
            principal: "operator".into(),
            kind: "api".into(),
            action: "tenant.create".into(),
            target: "/v1/tenants".into(),
            tenant_id: tenant.map(str::to_owned),
            org_id: None,
            outcome: "ok".into(),
            status: Some(201),
        }
    }

    #[test]
    fn entries_are_numbered_indexed_and_paged_newest_first() {
        let dir = std::env::temp_dir().join(format!(
            "crops-audit-{}-{}",
            std::process::id(),
            crate::now_ms()
        ));
        let s = Store::open(&dir).unwrap();
        assert!(s
            .query_audit(&AuditScope::All, None, 10)
            .unwrap()
            .is_empty());
        // Built from JSON so fields other modules add keep their defaults.
        let tenant: Tenant = serde_json::from_value(serde_json::json!({
            "id": "t1", "name": "a", "created_at": 0, "org_id": "o1"
        }))
        .unwrap();
        s.create_tenant(&tenant).unwrap();
        for n in 0..5 {
            let t = if n % 2 == 0 { Some("t1") } else { None };
            let stored = s.append_audit(entry(t), n % 3 == 0).unwrap();
            assert_eq!(stored.seq, n + 1);
        }
        let all = s.query_audit(&AuditScope::All, None, 10).unwrap();
        let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [5, 4, 3, 2, 1]);
        let t1 = s
            .query_audit(&AuditScope::Tenant("t1".into()), None, 10)
            .unwrap();
        assert_eq!(t1.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 3, 1]);
        assert!(t1.iter().all(|e| e.org_id.as_deref() == Some("o1")));
        let page = s
            .query_audit(&AuditScope::Org("o1".into()), Some(5), 1)
            .unwrap();
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
        assert!(s
            .query_audit(&AuditScope::Tenant("t".into()), None, 10)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn an_intent_is_cleared_by_its_entry_or_recovered_as_interrupted() {
        let dir = std::env::temp_dir().join(format!(
            "crops-audit-intents-{}-{}",
            std::process::id(),
            crate::now_ms()
        ));
        let s = Store::open(&dir).unwrap();
        let pending = |action: &str| AuditEntry {
            action: action.into(),
            outcome: "pending".into(),
            status: None,
            ..entry(None)
        };
        let written = s
            .write_audit_batch(
                vec![
                    AuditWrite::Intent(pending("finished")),
                    AuditWrite::Intent(pending("cut short")),
                ],
                true,
            )
            .unwrap();
        assert_eq!(written, [AuditWritten::Intent(1), AuditWritten::Intent(2)]);
        // Intents are not entries: the log is still empty.
        assert!(s
            .query_audit(&AuditScope::All, None, 10)
            .unwrap()
            .is_empty());
        let done = AuditEntry {
            action: "finished".into(),
            ..entry(None)
        };
        s.write_audit_batch(
            vec![AuditWrite::Append {
                entry: done,
                clears: Some(1),
            }],
            false,
        )
        .unwrap();
        // A restart: the intent that never got its entry becomes one.
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.recover_audit_intents().unwrap(), 1);
        assert_eq!(s.recover_audit_intents().unwrap(), 0, "once only");
        let all = s.query_audit(&AuditScope::All, None, 10).unwrap();
        let got: Vec<(&str, &str, Option<u16>)> = all
            .iter()
            .map(|e| (e.action.as_str(), e.outcome.as_str(), e.status))
            .collect();
        assert_eq!(
            got,
            [
                ("cut short", INTERRUPTED, None),
                ("finished", "ok", Some(201))
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
