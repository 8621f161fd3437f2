//! Terminal session records: who opened which session on which container
//! and worker, when, and how it ended. The relay (`crate::terminal`) keeps
//! the live state in memory; these records are what survives a restart
//! (the live ones are relayed again once their agent is back) and what an
//! auditor reads afterwards.
//!
//! Keys are `workerId/<sessionId, 16 digits>`: a session id is the agent's,
//! unique per worker only. `terminals_live` indexes the records not ended
//! yet, so a start reads those without scanning the history. Tables are
//! created by the first write; reads before it find nothing.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use super::{decode, encode, failed, get_json, Store, StoreError};

/// `workerId/sessionId` -> [`TerminalRecord`] (JSON).
const TERMINALS: TableDefinition<&str, &str> = TableDefinition::new("terminals");
/// `workerId/sessionId` -> `""` for every record not ended yet.
const TERMINALS_LIVE: TableDefinition<&str, &str> = TableDefinition::new("terminals_live");

/// One terminal session, open or ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminalRecord {
    pub worker_id: String,
    /// The agent's id of the session (below 2^53).
    pub session_id: u64,
    pub container_id: String,
    pub tenant_id: String,
    /// The principal who opened it, as the audit log names it.
    pub opened_by: String,
    /// Unix ms.
    pub opened_at: u64,
    /// Unix ms; `None` while the session lives.
    #[serde(default)]
    pub ended_at: Option<u64>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Why it ended: `exited`, `closed`, `container stopped`, `orphaned`,
    /// `lost: agent restarted`, `failed: …`.
    #[serde(default)]
    pub reason: Option<String>,
}

impl TerminalRecord {
    /// How long the session lived, once ended (ms).
    pub fn duration_ms(&self) -> Option<u64> {
        self.ended_at.map(|end| end.saturating_sub(self.opened_at))
    }
}

fn key(worker_id: &str, session_id: u64) -> String {
    format!("{worker_id}/{session_id:016}")
}

impl Store {
    /// Record a session just opened (live). A second write of the same
    /// session replaces the first.
    pub fn put_terminal(&self, record: &TerminalRecord) -> Result<(), StoreError> {
        let k = key(&record.worker_id, record.session_id);
        self.write("commit a terminal session", |txn| {
            let mut all = txn
                .open_table(TERMINALS)
                .map_err(failed("open terminals"))?;
            all.insert(k.as_str(), encode(record).as_str())
                .map_err(failed("store a terminal session"))?;
            let mut live = txn
                .open_table(TERMINALS_LIVE)
                .map_err(failed("open live terminals"))?;
            if record.ended_at.is_none() {
                live.insert(k.as_str(), "")
                    .map_err(failed("index a live terminal session"))?;
            } else {
                live.remove(k.as_str())
                    .map_err(failed("unindex a terminal session"))?;
            }
            Ok(())
        })
    }

    /// Record the end of a session and return the record. Ending an ended
    /// session keeps its first end; an unknown one is `NotFound`.
    pub fn end_terminal(
        &self,
        worker_id: &str,
        session_id: u64,
        ended_at: u64,
        exit_code: Option<i32>,
        reason: &str,
    ) -> Result<TerminalRecord, StoreError> {
        let k = key(worker_id, session_id);
        self.write("commit a terminal's end", |txn| {
            let mut all = txn
                .open_table(TERMINALS)
                .map_err(failed("open terminals"))?;
            let mut record =
                get_json::<TerminalRecord>(&all, "terminals", &k)?.ok_or_else(|| {
                    StoreError::NotFound {
                        what: "terminal session",
                        id: k.clone(),
                    }
                })?;
            if record.ended_at.is_none() {
                record.ended_at = Some(ended_at.max(record.opened_at));
                record.exit_code = exit_code;
                record.reason = Some(reason.to_owned());
                all.insert(k.as_str(), encode(&record).as_str())
                    .map_err(failed("end a terminal session"))?;
            }
            let mut live = txn
                .open_table(TERMINALS_LIVE)
                .map_err(failed("open live terminals"))?;
            live.remove(k.as_str())
                .map_err(failed("unindex a terminal session"))?;
            Ok(record)
        })
    }

    /// One session's record.
    pub fn get_terminal(
        &self,
        worker_id: &str,
        session_id: u64,
    ) -> Result<Option<TerminalRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let all = txn
            .open_table(TERMINALS)
            .map_err(failed("open terminals"))?;
        get_json(&all, "terminals", &key(worker_id, session_id))
    }

    /// Every session not ended yet, oldest first.
    pub fn live_terminals(&self) -> Result<Vec<TerminalRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let live = txn
            .open_table(TERMINALS_LIVE)
            .map_err(failed("open live terminals"))?;
        let all = txn
            .open_table(TERMINALS)
            .map_err(failed("open terminals"))?;
        let mut out = Vec::new();
        for (k, _) in live.all().map_err(failed("list live terminals"))? {
            if let Some(record) = get_json::<TerminalRecord>(&all, "terminals", &k)? {
                out.push(record);
            }
        }
        out.sort_by_key(|r| (r.opened_at, r.session_id));
        Ok(out)
    }

    /// Every session of a container, open or ended, oldest first.
    pub fn container_terminals(
        &self,
        container_id: &str,
    ) -> Result<Vec<TerminalRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let all = txn
            .open_table(TERMINALS)
            .map_err(failed("open terminals"))?;
        let mut out = Vec::new();
        for (k, v) in all.all().map_err(failed("list terminals"))? {
            let record: TerminalRecord = decode("terminals", &k, &v)?;
            if record.container_id == container_id {
                out.push(record);
            }
        }
        out.sort_by_key(|r| (r.opened_at, r.session_id));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(worker: &str, session_id: u64, container: &str) -> TerminalRecord {
        TerminalRecord {
            worker_id: worker.into(),
            session_id,
            container_id: container.into(),
            tenant_id: "t1".into(),
            opened_by: "operator".into(),
            opened_at: 1_000,
            ended_at: None,
            exit_code: None,
            reason: None,
        }
    }

    fn store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "crops-store-terminals-{}-{}",
            std::process::id(),
            super::super::stamp()
        ));
        (Store::open(&dir).unwrap(), dir)
    }

    #[test]
    fn sessions_live_until_ended_once() {
        let (s, dir) = store();
        assert!(s.live_terminals().unwrap().is_empty());
        assert_eq!(s.get_terminal("w1", 7).unwrap(), None);
        s.put_terminal(&record("w1", 7, "c1")).unwrap();
        s.put_terminal(&record("w1", 8, "c2")).unwrap();
        s.put_terminal(&record("w2", 7, "c1")).unwrap();
        assert_eq!(s.live_terminals().unwrap().len(), 3);
        let ended = s.end_terminal("w1", 7, 4_500, Some(0), "exited").unwrap();
        assert_eq!(ended.duration_ms(), Some(3_500));
        assert_eq!(ended.reason.as_deref(), Some("exited"));
        // A second end keeps the first.
        let again = s.end_terminal("w1", 7, 9_000, None, "closed").unwrap();
        assert_eq!(again, ended);
        let live = s.live_terminals().unwrap();
        assert_eq!(live.len(), 2);
        assert!(live
            .iter()
            .all(|r| !(r.worker_id == "w1" && r.session_id == 7)));
        assert_eq!(s.container_terminals("c1").unwrap().len(), 2);
        assert!(matches!(
            s.end_terminal("w9", 1, 1, None, "x"),
            Err(StoreError::NotFound { .. })
        ));
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }
}
