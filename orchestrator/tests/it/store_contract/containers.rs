//! Container records on both engines: create idempotent by id, plan limits
//! under concurrent admitted creates, state updates, the inventory
//! reconcile, and usage counters that equal a recount.

use orchestrator::store::{
    Admitted, AdmittedCreate, ContainerRecord, ContainerState, CreateOutcome, InventoryItem, Plan,
    Reconciled, Store, TenantUsage,
};

use super::{each_engine, race, tenant};
use crate::harness::now_ms;

fn record(id: &str, tenant_id: &str, worker_id: &str) -> ContainerRecord {
    let now = now_ms();
    ContainerRecord {
        id: id.to_owned(),
        tenant_id: tenant_id.to_owned(),
        worker_id: worker_id.to_owned(),
        name: format!("name-{id}"),
        image: "busybox".to_owned(),
        profile: "standard".to_owned(),
        state: ContainerState::Creating,
        engine_id: None,
        created_at: now,
        updated_at: now,
        last_error: None,
        allowed_domains: Vec::new(),
        rev: 0,
    }
}

fn held(u: &TenantUsage) -> u32 {
    u.creating + u.created + u.running + u.exited
}

/// Create as the API does: decide on the tenant's usage (the plan's
/// concurrent containers), insert only on that usage; decide again if it
/// changed. `None` when the plan refuses.
fn create_like_the_api(store: &Store, rec: &ContainerRecord, limit: u32) -> Option<CreateOutcome> {
    let mut usage = store.tenant_usage(&rec.tenant_id).unwrap();
    for _ in 0..1000 {
        if held(&usage) >= limit {
            return None;
        }
        let admitted = Admitted {
            usage: &usage,
            decision: None,
        };
        match store.create_admitted(rec, admitted).unwrap() {
            AdmittedCreate::Done(outcome) => return Some(outcome),
            AdmittedCreate::Changed(now) => usage = now,
        }
    }
    panic!("create never settled")
}

/// The counters as kept, then as recounted from the records: equal.
fn assert_counters_match_a_recount(store: &Store, tenant_id: &str) -> TenantUsage {
    let kept = store.tenant_usage(tenant_id).unwrap();
    store.recount_usage().unwrap();
    assert_eq!(
        kept,
        store.tenant_usage(tenant_id).unwrap(),
        "counters drifted"
    );
    kept
}

#[test]
fn a_create_is_idempotent_by_id_even_when_raced() {
    each_engine(|engine, store| {
        let t = tenant(&store, "acme", Plan::Enterprise);
        let rec = record("c1", &t.id, "w1");
        let outcomes = race(6, |_| store.create_container(&rec).unwrap());
        let created = outcomes
            .iter()
            .filter(|o| **o == CreateOutcome::Created)
            .count();
        assert_eq!(created, 1, "{engine:?}: {outcomes:?}");
        for o in &outcomes {
            if let CreateOutcome::Exists(existing) = o {
                assert_eq!(existing.name, rec.name, "{engine:?}");
            }
        }
        let other = ContainerRecord {
            name: "another".into(),
            ..rec.clone()
        };
        assert!(matches!(
            store.create_container(&other).unwrap(),
            CreateOutcome::Exists(_)
        ));
        let listed = store.list_containers(&t.id).unwrap();
        assert_eq!(listed.len(), 1, "{engine:?}");
        assert_eq!(
            listed[0].name, rec.name,
            "{engine:?}: an existing record was overwritten"
        );
        assert_eq!(assert_counters_match_a_recount(&store, &t.id).creating, 1);
    });
}

#[test]
fn concurrent_admitted_creates_never_exceed_the_plan() {
    each_engine(|engine, store| {
        let t = tenant(&store, "acme", Plan::Free);
        let limit = Plan::Free.limits().concurrent_containers.unwrap();
        let outcomes = race(8, |i| {
            create_like_the_api(&store, &record(&format!("c{i}"), &t.id, "w1"), limit)
        });
        let created = outcomes.iter().filter(|o| o.is_some()).count();
        assert_eq!(created, limit as usize, "{engine:?}: {outcomes:?}");
        assert_eq!(store.list_containers(&t.id).unwrap().len(), limit as usize);
        let usage = assert_counters_match_a_recount(&store, &t.id);
        assert_eq!(held(&usage), limit, "{engine:?}");
        // A stale usage is refused with the usage as it is, nothing written.
        let stale = TenantUsage::default();
        let refused = store
            .create_admitted(
                &record("late", &t.id, "w1"),
                Admitted {
                    usage: &stale,
                    decision: None,
                },
            )
            .unwrap();
        assert_eq!(refused, AdmittedCreate::Changed(usage), "{engine:?}");
        assert!(store.get_container("late").unwrap().is_none(), "{engine:?}");
    });
}

/// Two orchestrators are two pools on one database: the plan holds
/// across them as within one (PostgreSQL only: redb has one process).
#[test]
fn admitted_creates_through_two_replicas_never_exceed_the_plan() {
    let url = crate::postgres::database();
    let stores: Vec<Store> = (0..2).map(|_| Store::connect(&url, 8).unwrap()).collect();
    let t = tenant(&stores[0], "acme", Plan::Free);
    let limit = Plan::Free.limits().concurrent_containers.unwrap();
    let outcomes = race(8, |i| {
        let store = &stores[i % 2];
        create_like_the_api(store, &record(&format!("c{i}"), &t.id, "w1"), limit)
    });
    let created = outcomes.iter().filter(|o| o.is_some()).count();
    assert_eq!(created, limit as usize, "{outcomes:?}");
    for store in &stores {
        assert_eq!(store.list_containers(&t.id).unwrap().len(), limit as usize);
    }
    assert_eq!(
        held(&assert_counters_match_a_recount(&stores[1], &t.id)),
        limit
    );
}

/// Writers of two replicas side by side on one tenant's counters (every
/// state change moves them): a write that loses a conflict is run again,
/// so every call succeeds (none answered 503), no change is lost, and the
/// counters equal a recount.
#[test]
fn racing_state_changes_through_two_replicas_all_land() {
    let url = crate::postgres::database();
    let stores: Vec<Store> = (0..2).map(|_| Store::connect(&url, 16).unwrap()).collect();
    let t = tenant(&stores[0], "acme", Plan::Enterprise);
    let failures = race(16, |i| {
        let store = &stores[i % 2];
        let id = format!("c{i}");
        let mut failures = Vec::new();
        if let Err(e) = store.create_container(&record(&id, &t.id, "w1")) {
            failures.push(e.to_string());
        }
        for state in [
            ContainerState::Running,
            ContainerState::Exited,
            ContainerState::Running,
        ] {
            if let Err(e) = store.update_container(&id, now_ms(), |r| r.state = state) {
                failures.push(e.to_string());
            }
        }
        failures
    });
    let failures: Vec<String> = failures.into_iter().flatten().collect();
    assert!(failures.is_empty(), "writes failed: {failures:?}");
    let records = stores[1].list_containers(&t.id).unwrap();
    assert_eq!(records.len(), 16);
    assert!(records.iter().all(|r| r.state == ContainerState::Running));
    let usage = assert_counters_match_a_recount(&stores[1], &t.id);
    assert_eq!(usage.running, 16, "{usage:?}");
    let retried: u64 = stores.iter().map(|s| s.conflicts().0).sum();
    assert!(
        retried > 0,
        "the race ran writes side by side: some conflicted"
    );
}

#[test]
fn state_updates_are_kept_and_counted() {
    each_engine(|engine, store| {
        let t = tenant(&store, "acme", Plan::Enterprise);
        store.create_container(&record("c1", &t.id, "w1")).unwrap();
        let (before, after) = store
            .update_container("c1", now_ms(), |r| {
                r.state = ContainerState::Running;
                r.engine_id = Some("engine-1".into());
            })
            .unwrap();
        assert_eq!(before, ContainerState::Creating, "{engine:?}");
        assert_eq!(after.state, ContainerState::Running);
        let read = store.get_container("c1").unwrap().unwrap();
        assert_eq!(read.state, ContainerState::Running, "{engine:?}");
        assert_eq!(read.engine_id.as_deref(), Some("engine-1"));
        assert!(read.rev > 0, "{engine:?}");
        let usage = assert_counters_match_a_recount(&store, &t.id);
        assert_eq!((usage.creating, usage.running), (0, 1), "{engine:?}");
        let missing = store.update_container("nope", now_ms(), |_| {});
        assert!(missing.is_err(), "{engine:?}");
    });
}

#[test]
fn a_reconcile_adopts_updates_and_marks_lost_in_one_step() {
    each_engine(|engine, store| {
        let t = tenant(&store, "acme", Plan::Enterprise);
        for id in ["running", "vanished"] {
            store.create_container(&record(id, &t.id, "w1")).unwrap();
            store
                .update_container(id, now_ms(), |r| {
                    r.state = ContainerState::Running;
                    r.engine_id = Some(format!("engine-{id}"));
                })
                .unwrap();
        }
        let item = |id: &str, state| InventoryItem {
            container_id: id.to_owned(),
            tenant_id: t.id.clone(),
            engine_id: format!("engine-{id}"),
            name: format!("name-{id}"),
            image: "busybox".into(),
            state: Some(state),
            profile: None,
            created_at: None,
            allowed_domains: None,
        };
        let epoch = super::registered(&store, &t.id, "w1", "r1");
        let since = orchestrator::store::stamp();
        let items = [
            item("running", ContainerState::Exited),
            InventoryItem {
                allowed_domains: Some(vec!["pypi.org".into()]),
                ..item("adopted", ContainerState::Running)
            },
        ];
        let mut report = store
            .reconcile("w1", epoch, &items, since, now_ms())
            .unwrap();
        report.sort_by_key(|r| format!("{r:?}"));
        let expected = [
            Reconciled::Adopted {
                id: "adopted".into(),
                state: ContainerState::Running,
            },
            Reconciled::Lost {
                id: "vanished".into(),
                from: ContainerState::Running,
            },
            Reconciled::Updated {
                id: "running".into(),
                from: ContainerState::Running,
                to: ContainerState::Exited,
            },
        ];
        assert_eq!(report, expected, "{engine:?}");
        let state = |id| store.get_container(id).unwrap().unwrap().state;
        assert_eq!(state("running"), ContainerState::Exited, "{engine:?}");
        assert_eq!(state("adopted"), ContainerState::Running, "{engine:?}");
        let adopted = store.get_container("adopted").unwrap().unwrap();
        assert_eq!(
            adopted.allowed_domains,
            ["pypi.org"],
            "the list its gate enforces: {engine:?}"
        );
        assert_eq!(state("vanished"), ContainerState::Lost, "{engine:?}");
        let usage = assert_counters_match_a_recount(&store, &t.id);
        assert_eq!(
            (usage.running, usage.exited, usage.lost),
            (1, 1, 1),
            "{engine:?}"
        );
    });
}
