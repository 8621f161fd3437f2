//! Which API writes are durable: the writes made while answering an API
//! call commit without fsync ([`Store::write_api`]), and a durable
//! commit before the answer carries them to disk (a durable redb commit
//! makes every earlier commit durable with it). The watermark here tells
//! an answer whether it may go out without waiting for one
//! ([`Store::api_writes_durable`]).

use std::sync::atomic::{AtomicU64, Ordering};

use super::engine::{Durability, WriteTxn};
use super::{Store, StoreError};

/// How far the non-durable API writes ([`Store::write_api`]) are
/// durable: `begun` counts them (taken under redb's write lock, so in commit
/// order), `durable` is the count a durable commit has covered (a durable
/// redb commit makes every earlier commit durable with it).
#[derive(Debug, Default)]
pub(super) struct ApiWrites {
    begun: AtomicU64,
    durable: AtomicU64,
}

impl ApiWrites {
    /// Inside a write transaction: the API writes a durable commit of it
    /// will cover.
    pub(super) fn covered(&self) -> u64 {
        self.begun.load(Ordering::Acquire)
    }

    /// After a durable commit that covered `covered`.
    pub(super) fn synced(&self, covered: u64) {
        self.durable.fetch_max(covered, Ordering::AcqRel);
    }
}

impl Store {
    /// A write made while answering an API call: committed without fsync,
    /// because a durable commit before the answer goes out carries it to
    /// disk (a durable redb commit makes every earlier commit durable with
    /// it): the record update that settles a call on a worker's container
    /// ([`Store::update_container`]), else the call's audit entry (see
    /// `router::audited` and [`Store::api_writes_durable`]). One fsync per
    /// answer instead of three.
    ///
    /// A write whose caller went away before its answer (a tracked create
    /// whose client hung up) becomes durable at the next durable commit; a
    /// crash before that loses only a state the next inventory re-derives.
    ///
    /// On PostgreSQL writers run side by side (`write`): a durable commit
    /// carries only the commits before it in the log, not one still under
    /// way, so there an API write is durable itself (commits arriving
    /// together share the log's flush) and is not counted here.
    pub(super) fn write_api<T>(
        &self,
        op: &'static str,
        mut body: impl FnMut(&WriteTxn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.is_shared() {
            return self.write(op, body);
        }
        self.write_with(Durability::None, op, |txn| {
            // Under redb's write lock: counted in commit order.
            self.api_writes.begun.fetch_add(1, Ordering::AcqRel);
            body(txn)
        })
    }

    /// Every API write begun so far is durable: an answer reporting what
    /// such writes stored may go out without waiting for a durable commit.
    /// Errs on the safe side (a write begun and not yet covered, or rolled
    /// back, reads as not durable).
    pub fn api_writes_durable(&self) -> bool {
        let begun = self.api_writes.begun.load(Ordering::Acquire);
        self.api_writes.durable.load(Ordering::Acquire) >= begun
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditEntry, AuditWrite, ContainerRecord, ContainerState};

    fn entry() -> AuditEntry {
        AuditEntry {
            seq: 0,
            at: 1,
            principal: "operator".into(),
            kind: "command".into(),
            action: "container.start".into(),
            target: "w".into(),
            tenant_id: None,
            org_id: None,
            outcome: "ok".into(),
            status: None,
        }
    }

    #[test]
    fn an_api_write_is_durable_only_once_a_durable_commit_covers_it() {
        let dir = std::env::temp_dir().join(format!(
            "crops-audit-mark-{}-{}",
            std::process::id(),
            crate::now_ms()
        ));
        let s = Store::open(&dir).unwrap();
        let record = |id: &str| ContainerRecord {
            id: id.into(),
            tenant_id: "t".into(),
            worker_id: "w".into(),
            name: id.into(),
            image: "i".into(),
            profile: "standard".into(),
            state: ContainerState::Creating,
            engine_id: None,
            created_at: 1,
            updated_at: 1,
            last_error: None,
            allowed_domains: Vec::new(),
            rev: 0,
        };
        assert!(s.api_writes_durable(), "nothing written yet");
        // A create's record commits without fsync: an answer reporting it
        // must wait for a durable commit.
        s.create_container(&record("a")).unwrap();
        assert!(!s.api_writes_durable());
        // A batch of command entries (no fsync) covers nothing.
        let append = |durable| {
            let write = AuditWrite::Append {
                entry: entry(),
                clears: None,
            };
            s.write_audit_batch(vec![write], durable).unwrap();
        };
        append(false);
        assert!(!s.api_writes_durable());
        // The durable update that settles a call covers it.
        s.update_container("a", 2, |r| r.state = ContainerState::Running)
            .unwrap();
        assert!(s.api_writes_durable());
        s.create_container(&record("b")).unwrap();
        assert!(!s.api_writes_durable());
        // So does a durable audit entry.
        append(true);
        assert!(s.api_writes_durable());
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
