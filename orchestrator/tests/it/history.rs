//! Plans and history: a tenant's plan over the API, and removed containers
//! kept for the plan's retention, then pruned. The prune is driven with a
//! chosen clock (`history::prune_once(store, now)`), never by waiting.

use std::path::Path;

use orchestrator::history::prune_once;
use orchestrator::store::{ContainerRecord, ContainerState, Plan, Store, Tenant};
use serde_json::json;

use crate::fake::assert_error;
use crate::harness::*;

const DAY: u64 = 24 * 3600 * 1000;

#[test]
fn a_tenants_plan_is_shown_set_and_kept_across_a_restart() {
    smol::block_on(async {
        let server = Server::start("plans").await;
        let tenant = server.tenant("acme").await;
        let plan_of = |tenants: &serde_json::Value| {
            tenants["tenants"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["id"] == tenant.as_str())
                .map(|t| t["plan"].clone())
                .unwrap()
        };
        let (_, tenants) = server.admin("GET", "/v1/tenants", None).await;
        assert_eq!(
            plan_of(&tenants),
            json!({ "name": "free", "workers": 1, "concurrentContainers": 3, "historyDays": 1 })
        );
        let path = format!("/v1/tenants/{tenant}/plan");
        for (body, want) in [
            (
                json!({ "name": "starter" }),
                json!({ "name": "starter", "workers": 2, "concurrentContainers": 5, "historyDays": 14 }),
            ),
            (
                json!({ "name": "pro" }),
                json!({ "name": "pro", "workers": 10, "concurrentContainers": 15, "historyDays": 90 }),
            ),
            (
                json!({ "name": "enterprise" }),
                json!({ "name": "enterprise", "workers": null, "concurrentContainers": null, "historyDays": 365 }),
            ),
            (
                json!({ "name": "custom", "workers": 4, "historyDays": 30 }),
                json!({ "name": "custom", "workers": 4, "concurrentContainers": null, "historyDays": 30 }),
            ),
        ] {
            let (status, t) = server.admin("PUT", &path, Some(body)).await;
            assert_eq!((status, &t["plan"]), (200, &want), "{t}");
        }
        for bad in [
            json!({ "name": "gold" }),
            json!({ "name": "pro", "historyDays": 2 }),
            json!({ "name": "custom", "historyDays": 0 }),
            json!({ "name": "custom", "historyDays": "long" }),
            json!({ "name": "pro", "discount": 1 }),
        ] {
            let (status, body) = server.admin("PUT", &path, Some(bad)).await;
            assert_error(status, &body, 400, "bad_request");
        }
        let unknown = "/v1/tenants/0b4f6a0e-3c1d-4e2a-9f00-1234567890ab/plan";
        let (status, body) = server
            .admin("PUT", unknown, Some(json!({ "name": "pro" })))
            .await;
        assert_error(status, &body, 404, "not_found");
        let (status, body) = http(
            server.addr,
            "PUT",
            &path,
            &[],
            Some(json!({ "name": "enterprise" }).to_string()),
        )
        .await;
        assert_error(status, &body, 401, "unauthorized");

        let data = server.stop().await;
        let server = Server::start_in(data, Options::default()).await;
        let (_, tenants) = server.admin("GET", "/v1/tenants", None).await;
        assert_eq!(plan_of(&tenants)["name"], "custom", "{tenants}");
        assert_eq!(plan_of(&tenants)["historyDays"], 30);
        server.stop().await;
    });
}

fn tenant(id: &str, plan: Plan) -> Tenant {
    let mut t: Tenant =
        serde_json::from_value(json!({ "id": id, "name": id, "created_at": 1 })).unwrap();
    t.plan = plan;
    t
}

fn record(id: &str, tenant: &str, state: ContainerState, updated_at: u64) -> ContainerRecord {
    ContainerRecord {
        id: id.into(),
        tenant_id: tenant.into(),
        worker_id: "w-1".into(),
        name: id.into(),
        image: "localhost/busybox:latest".into(),
        profile: "standard".into(),
        state,
        engine_id: None,
        created_at: updated_at,
        updated_at,
        last_error: None,
        allowed_domains: Vec::new(),
        rev: 0,
    }
}

fn ids(store: &Store, tenant: &str) -> Vec<String> {
    let mut ids: Vec<String> = store
        .list_containers(tenant)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    ids
}

fn seed(dir: &Path, removed_at: u64) -> Store {
    let store = Store::open(dir).unwrap();
    store.create_tenant(&tenant("free", Plan::Free)).unwrap();
    store
        .create_tenant(&tenant("starter", Plan::Starter))
        .unwrap();
    for (id, t, state) in [
        ("free-removed", "free", ContainerState::Removed),
        ("free-exited", "free", ContainerState::Exited),
        ("free-lost", "free", ContainerState::Lost),
        ("starter-removed", "starter", ContainerState::Removed),
    ] {
        store
            .create_container(&record(id, t, state, removed_at))
            .unwrap();
    }
    store
}

#[test]
fn removed_containers_stay_for_the_plans_retention_then_are_pruned() {
    let dir = temp_dir("history");
    let t0 = 1_700_000_000_000;
    let store = seed(&dir, t0);

    // Inside the Free plan's day: everything stays.
    assert!(prune_once(&store, t0 + DAY - 1).unwrap().is_empty());
    assert_eq!(
        ids(&store, "free"),
        ["free-exited", "free-lost", "free-removed"]
    );

    // A day on: the Free tenant's removed record goes, nothing else.
    let pruned = prune_once(&store, t0 + DAY).unwrap();
    assert_eq!(pruned.len(), 1, "{pruned:?}");
    assert_eq!(
        (pruned[0].id.as_str(), pruned[0].removed_at),
        ("free-removed", t0)
    );
    assert_eq!(ids(&store, "free"), ["free-exited", "free-lost"]);
    assert!(store.get_container("free-removed").unwrap().is_none());
    assert_eq!(ids(&store, "starter"), ["starter-removed"]);

    // The Starter tenant keeps its removed record for 14 days.
    assert!(prune_once(&store, t0 + 14 * DAY - 1).unwrap().is_empty());
    assert_eq!(prune_once(&store, t0 + 14 * DAY).unwrap().len(), 1);
    assert!(ids(&store, "starter").is_empty());
    // A plan change applies to what is already removed.
    store
        .create_container(&record("late", "starter", ContainerState::Removed, t0))
        .unwrap();
    store.set_plan("starter", Plan::Enterprise).unwrap();
    assert!(prune_once(&store, t0 + 364 * DAY).unwrap().is_empty());
    assert_eq!(prune_once(&store, t0 + 365 * DAY).unwrap().len(), 1);
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_pruner_runs_at_start() {
    smol::block_on(async {
        let dir = temp_dir("history-start");
        // Removed two days ago on the Free plan: due.
        drop(seed(&dir, now_ms() - 2 * DAY));
        let server = Server::start_in(dir, Options::default()).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let (status, _) = server
                .admin("GET", "/v1/containers/free-removed", None)
                .await;
            if status == 404 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never pruned");
            smol::Timer::after(std::time::Duration::from_millis(20)).await;
        }
        let (status, body) = server
            .admin("GET", "/v1/containers/free-exited", None)
            .await;
        assert_eq!((status, &body["state"]), (200, &json!("exited")), "{body}");
        server.stop().await;
    });
}
