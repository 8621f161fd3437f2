//! Reading the audit log: a scope (everything, a tenant, an organisation),
//! an optional filter, a page. Entries come newest first; a page ends at
//! `limit` matches or after [`SCAN_BUDGET`] entries examined, whichever
//! comes first, and says where the next one starts, so a filter matching
//! little never makes one request read the whole log.

use super::audit::{index_key, AuditEntry, AUDIT, AUDIT_BY_ORG, AUDIT_BY_TENANT};
use super::{decode, failed, Store, StoreError};

/// The most entries one query returns.
pub const MAX_AUDIT_PAGE: usize = 1000;
/// The most entries one query examines (matching or not).
pub const SCAN_BUDGET: usize = 10_000;
/// Entries read from the table at a time.
const CHUNK: usize = 500;

/// Which entries a query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditScope {
    All,
    Tenant(String),
    Org(String),
}

/// What an entry must match; `None` matches anything. Text matches are
/// exact, but `action` also matches as a prefix ending in `.` or ` `
/// (`container.` matches `container.start`; `POST` every POST).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub principal: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    /// Entries at or after this Unix ms.
    pub since: Option<u64>,
    /// Entries before this Unix ms.
    pub until: Option<u64>,
}

impl AuditFilter {
    pub fn admits(&self, e: &AuditEntry) -> bool {
        let action = |want: &String| {
            e.action == *want
                || ((want.ends_with('.') || want.ends_with(' '))
                    && e.action.starts_with(want.as_str()))
        };
        self.principal.as_ref().is_none_or(|p| e.principal == *p)
            && self.action.as_ref().is_none_or(action)
            && self.outcome.as_ref().is_none_or(|o| e.outcome == *o)
            && self.since.is_none_or(|t| e.at >= t)
            && self.until.is_none_or(|t| e.at < t)
    }
}

/// One page of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Where the next (older) page starts: the seq to pass as `before`;
    /// `None` when the scope has nothing older.
    pub next_before: Option<u64>,
}

impl Store {
    /// Up to `limit` entries of `scope` with `seq < before`, newest first.
    pub fn query_audit(
        &self,
        scope: &AuditScope,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(self
            .search_audit(scope, &AuditFilter::default(), before, limit)?
            .entries)
    }

    /// Up to `limit` entries of `scope` matching `filter` with
    /// `seq < before`, newest first, examining at most [`SCAN_BUDGET`].
    pub fn search_audit(
        &self,
        scope: &AuditScope,
        filter: &AuditFilter,
        before: Option<u64>,
        limit: usize,
    ) -> Result<AuditPage, StoreError> {
        let limit = limit.clamp(1, MAX_AUDIT_PAGE);
        let mut cursor = before.unwrap_or(u64::MAX);
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let log = txn
            .open_table(AUDIT)
            .map_err(failed("open the audit log"))?;
        let index = match scope {
            AuditScope::All => None,
            AuditScope::Tenant(id) => Some((AUDIT_BY_TENANT, id)),
            AuditScope::Org(id) => Some((AUDIT_BY_ORG, id)),
        };
        let index = match index {
            None => None,
            Some((table, owner)) => Some((
                txn.open_table(table)
                    .map_err(failed("open an audit index"))?,
                owner,
            )),
        };
        let mut entries = Vec::new();
        let mut examined = 0;
        loop {
            // The next chunk of (seq, entry), newest first, below the cursor.
            let chunk: Vec<(u64, AuditEntry)> = match &index {
                None => log
                    .scan(..cursor, true, CHUNK)
                    .map_err(failed("scan the audit log"))?
                    .into_iter()
                    .map(|(seq, v)| Ok((seq, decode("audit", &seq.to_string(), &v)?)))
                    .collect::<Result<_, StoreError>>()?,
                Some((index, owner)) => {
                    let (from, to) = (format!("{owner}/"), index_key(owner, cursor));
                    let mut out = Vec::new();
                    for (key, _) in index
                        .scan(from.as_str()..to.as_str(), true, CHUNK)
                        .map_err(failed("scan an audit index"))?
                    {
                        let Some(seq) = key.rsplit('/').next().and_then(|n| n.parse().ok()) else {
                            continue;
                        };
                        // An index entry names a log entry of the same transaction.
                        if let Some(v) = log.get(seq).map_err(failed("read an audit entry"))? {
                            out.push((seq, decode("audit", &seq.to_string(), &v)?));
                        }
                    }
                    out
                }
            };
            let Some(&(oldest, _)) = chunk.last() else {
                return Ok(AuditPage {
                    entries,
                    next_before: None,
                });
            };
            for (seq, entry) in chunk {
                examined += 1;
                if filter.admits(&entry) {
                    entries.push(entry);
                }
                if entries.len() == limit || examined == SCAN_BUDGET {
                    return Ok(AuditPage {
                        entries,
                        next_before: (seq > 1).then_some(seq),
                    });
                }
            }
            cursor = oldest;
        }
    }
}
