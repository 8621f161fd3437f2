//! The audit log, decisions and terminal sessions on both engines: paging
//! newest first, scopes, intents recovered as interrupted, live sessions.

use orchestrator::policy::Recorded;
use orchestrator::store::{
    AuditEntry, AuditFilter, AuditScope, AuditWrite, AuditWritten, DecisionRecord, TerminalRecord,
    INTERRUPTED, SCAN_BUDGET,
};

use super::each_engine;

fn entry(action: &str, tenant: Option<&str>, org: Option<&str>) -> AuditEntry {
    AuditEntry {
        seq: 0,
        at: 1,
        principal: "operator".into(),
        kind: "api".into(),
        action: action.into(),
        target: "/v1/x".into(),
        tenant_id: tenant.map(str::to_owned),
        org_id: org.map(str::to_owned),
        outcome: "ok".into(),
        status: Some(200),
    }
}

fn actions(entries: &[AuditEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.action.as_str()).collect()
}

#[test]
fn audit_entries_page_newest_first_by_scope() {
    each_engine(|engine, store| {
        let mut seqs = Vec::new();
        for i in 0..5 {
            let tenant = if i % 2 == 0 { Some("t1") } else { Some("t2") };
            let stored = store
                .append_audit(entry(&format!("a{i}"), tenant, Some("o1")), i % 2 == 0)
                .unwrap();
            seqs.push(stored.seq);
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{engine:?}: {seqs:?}");
        let all = store.query_audit(&AuditScope::All, None, 2).unwrap();
        assert_eq!(actions(&all), ["a4", "a3"], "{engine:?}");
        let next = store
            .query_audit(&AuditScope::All, Some(all[1].seq), 10)
            .unwrap();
        assert_eq!(actions(&next), ["a2", "a1", "a0"], "{engine:?}");
        let t1 = store
            .query_audit(&AuditScope::Tenant("t1".into()), None, 10)
            .unwrap();
        assert_eq!(actions(&t1), ["a4", "a2", "a0"], "{engine:?}");
        let t1_page = store
            .query_audit(&AuditScope::Tenant("t1".into()), Some(t1[0].seq), 1)
            .unwrap();
        assert_eq!(actions(&t1_page), ["a2"], "{engine:?}");
        let org = store
            .query_audit(&AuditScope::Org("o1".into()), None, 10)
            .unwrap();
        assert_eq!(org.len(), 5, "{engine:?}");
        let none = store
            .query_audit(&AuditScope::Tenant("nobody".into()), None, 10)
            .unwrap();
        assert!(none.is_empty(), "{engine:?}");
    });
}

#[test]
fn audit_filters_page_past_chunks_and_stop_at_the_scan_budget() {
    each_engine(|engine, store| {
        // SCAN_BUDGET + 500 entries: every third by member:m, at = its index.
        let total = SCAN_BUDGET + 500;
        for batch in (0..total).collect::<Vec<_>>().chunks(2_000) {
            let writes = batch
                .iter()
                .map(|&i| AuditWrite::Append {
                    entry: AuditEntry {
                        at: i as u64,
                        principal: if i % 3 == 0 {
                            "member:m".into()
                        } else {
                            "operator".into()
                        },
                        ..entry(
                            if i % 2 == 0 {
                                "container.start"
                            } else {
                                "POST /v1/tenants"
                            },
                            Some("t1"),
                            Some("o1"),
                        )
                    },
                    clears: None,
                })
                .collect();
            store.write_audit_batch(writes, false).unwrap();
        }
        let by_member = AuditFilter {
            principal: Some("member:m".into()),
            ..AuditFilter::default()
        };
        // Newest first, across the 500-entry chunks, then the next page.
        let first = store
            .search_audit(&AuditScope::All, &by_member, None, 400)
            .unwrap();
        assert_eq!(first.entries.len(), 400, "{engine:?}");
        assert!(first
            .entries
            .iter()
            .all(|e| e.principal == "member:m" && e.at % 3 == 0));
        assert_eq!(
            first.entries[0].at,
            (total - 1 - (total - 1) % 3) as u64,
            "{engine:?}"
        );
        let next = store
            .search_audit(
                &AuditScope::Tenant("t1".into()),
                &by_member,
                first.next_before,
                5,
            )
            .unwrap();
        assert_eq!(next.entries[0].at, first.entries[399].at - 3, "{engine:?}");
        // A prefix of the action and a time range.
        let starts = AuditFilter {
            action: Some("container.".into()),
            since: Some(total as u64 - 12),
            until: Some(total as u64 - 2),
            ..AuditFilter::default()
        };
        let ats: Vec<u64> = store
            .search_audit(&AuditScope::Org("o1".into()), &starts, None, 100)
            .unwrap()
            .entries
            .iter()
            .map(|e| e.at)
            .collect();
        let want: Vec<u64> = (total as u64 - 12..total as u64 - 2)
            .rev()
            .filter(|a| a % 2 == 0)
            .collect();
        assert_eq!(ats, want, "{engine:?}");
        // Nothing matches: the page stops at the budget and says where to go on.
        let never = AuditFilter {
            outcome: Some("never".into()),
            ..AuditFilter::default()
        };
        let page = store
            .search_audit(&AuditScope::All, &never, None, 10)
            .unwrap();
        assert!(page.entries.is_empty(), "{engine:?}");
        let rest = store
            .search_audit(&AuditScope::All, &never, page.next_before, 10)
            .unwrap();
        assert!(
            page.next_before.is_some() && rest.entries.is_empty(),
            "{engine:?}"
        );
        assert_eq!(rest.next_before, None, "{engine:?}: the log's start");
    });
}

#[test]
fn audit_intents_left_behind_are_recovered_as_interrupted() {
    each_engine(|engine, store| {
        let written = store
            .write_audit_batch(
                vec![
                    AuditWrite::Intent(entry("pending", Some("t1"), None)),
                    AuditWrite::Intent(entry("settled", Some("t1"), None)),
                ],
                true,
            )
            .unwrap();
        let [AuditWritten::Intent(_), AuditWritten::Intent(settled)] = written[..] else {
            panic!("{engine:?}: {written:?}");
        };
        store
            .write_audit_batch(
                vec![AuditWrite::Append {
                    entry: entry("settled", Some("t1"), None),
                    clears: Some(settled),
                }],
                true,
            )
            .unwrap();
        assert_eq!(store.recover_audit_intents().unwrap(), 1, "{engine:?}");
        assert_eq!(store.recover_audit_intents().unwrap(), 0, "{engine:?}");
        let log = store.query_audit(&AuditScope::All, None, 10).unwrap();
        let seen: Vec<_> = log
            .iter()
            .map(|e| (e.action.as_str(), e.outcome.as_str()))
            .collect();
        assert_eq!(
            seen,
            [("pending", INTERRUPTED), ("settled", "ok")],
            "{engine:?}"
        );
    });
}

fn decision(id: &str, tenant: &str, at: u64) -> DecisionRecord {
    DecisionRecord {
        id: id.into(),
        tenant_id: tenant.into(),
        at,
        outcome: "placed".into(),
        container_id: Some(format!("c-{id}")),
        explanation: Recorded::from_json(serde_json::json!({ "reason": id })),
    }
}

#[test]
fn decisions_round_trip_and_page_newest_first_per_tenant() {
    each_engine(|engine, store| {
        assert_eq!(store.get_decision("x").unwrap(), None, "{engine:?}");
        for (id, tenant, at) in [("a", "t", 1), ("b", "t", 3), ("c", "u", 2), ("d", "t", 2)] {
            store.put_decision(&decision(id, tenant, at)).unwrap();
        }
        assert_eq!(
            store.get_decision("c").unwrap(),
            Some(decision("c", "u", 2))
        );
        let ids = |limit| -> Vec<String> {
            let list = store.list_decisions("t", limit).unwrap();
            list.into_iter().map(|d| d.id).collect()
        };
        assert_eq!(ids(10), ["b", "d", "a"], "{engine:?}");
        assert_eq!(ids(1), ["b"], "{engine:?}");
        // Pages: older than a page's last, the tenant's own only.
        let older = |before: &str| -> Vec<String> {
            let list = store.list_decisions_before("t", Some(before), 10).unwrap();
            list.into_iter().map(|d| d.id).collect()
        };
        assert_eq!(older("b"), ["d", "a"], "{engine:?}");
        assert_eq!(older("d"), ["a"], "{engine:?}");
        assert!(older("a").is_empty(), "{engine:?}");
        assert!(
            store.list_decisions_before("t", Some("c"), 10).is_err(),
            "{engine:?}: u's"
        );
        // A tenant whose id is a prefix of another's sees only its own.
        store.put_decision(&decision("e", "tt", 9)).unwrap();
        assert_eq!(ids(10), ["b", "d", "a"], "{engine:?}");
    });
}

fn session(worker: &str, id: u64, container: &str) -> TerminalRecord {
    TerminalRecord {
        worker_id: worker.into(),
        session_id: id,
        container_id: container.into(),
        tenant_id: "t1".into(),
        opened_by: "operator".into(),
        opened_at: 100 + id,
        ended_at: None,
        exit_code: None,
        reason: None,
    }
}

#[test]
fn terminal_sessions_are_live_until_ended_and_keep_their_first_end() {
    each_engine(|engine, store| {
        store.put_terminal(&session("w1", 1, "c1")).unwrap();
        store.put_terminal(&session("w1", 2, "c1")).unwrap();
        store.put_terminal(&session("w2", 1, "c2")).unwrap();
        assert_eq!(store.live_terminals().unwrap().len(), 3, "{engine:?}");
        let ended = store.end_terminal("w1", 1, 500, Some(0), "exited").unwrap();
        assert_eq!(ended.duration_ms(), Some(399), "{engine:?}");
        let again = store.end_terminal("w1", 1, 900, Some(1), "late").unwrap();
        assert_eq!(
            again.ended_at,
            Some(500),
            "{engine:?}: the first end was replaced"
        );
        let live: Vec<_> = store
            .live_terminals()
            .unwrap()
            .into_iter()
            .map(|t| (t.worker_id, t.session_id))
            .collect();
        assert_eq!(live.len(), 2, "{engine:?}");
        assert!(!live.contains(&("w1".into(), 1)), "{engine:?}");
        let of_c1 = store.container_terminals("c1").unwrap();
        assert_eq!(of_c1.len(), 2, "{engine:?}");
        let read = store.get_terminal("w1", 1).unwrap().unwrap();
        assert_eq!(read.reason.as_deref(), Some("exited"), "{engine:?}");
        assert!(
            store.end_terminal("w9", 9, 1, None, "x").is_err(),
            "{engine:?}"
        );
    });
}
