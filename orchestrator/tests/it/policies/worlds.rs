//! A `policy`-world module (admit, admit-worker and place) is stored as
//! kind `policy`, whatever world its upload named, and a simulation
//! replays it in both roles: a create's admission, an enrolment's, and a
//! placement.

use serde_json::{json, Value};

use super::roles::both_module;
use super::{upload, worker};
use crate::fake::assert_error;
use crate::harness::*;

fn decision(tenant: &str, i: u64, explanation: Value) -> orchestrator::store::DecisionRecord {
    orchestrator::store::DecisionRecord {
        id: format!("00000000-0000-4000-8000-00000000010{i}"),
        tenant_id: tenant.to_owned(),
        at: 1000 + i,
        outcome: "recorded".into(),
        container_id: None,
        explanation: orchestrator::policy::Recorded::from_json(explanation),
    }
}

#[test]
fn a_policy_world_module_is_stored_as_such_and_simulated_in_both_roles() {
    smol::block_on(async {
        let server = Server::start("policy-worlds").await;
        let tenant = server.tenant("worlds").await;
        let data = server.stop().await;
        let store = orchestrator::store::Store::open(&data).unwrap();
        let request = json!({
            "tenantId": tenant, "name": "x", "image": "busybox", "profile": "open",
            "memoryBytes": 512u64 << 20, "cpus": 1,
        });
        let plan = json!({ "name": "free", "selfHostedWorkers": 1, "concurrentContainers": 3 });
        let usage = json!({ "running": 3 });
        let deny = json!({ "decision": "deny", "reason": "the plan is full" });
        let allow = json!({ "decision": "allow" });
        let recorded = [
            // A create refused by admission: `both` allows it.
            json!({ "request": request, "plan": plan, "usage": usage,
                    "admission": { "module": "stock:plan-limits", "result": deny } }),
            // A create admitted but placed nowhere: `both` admits it too,
            // and places it on the only worker.
            json!({ "request": request, "plan": plan, "usage": usage,
                    "admission": { "module": "stock:plan-limits", "result": allow },
                    "workers": [worker("w-a", 1 << 30)],
                    "placement": { "module": "stock:least-loaded", "result": { "chosen": null } } }),
            // An enrolment refused: `both` allows it.
            json!({ "enrolment": { "tenantId": tenant }, "plan": plan, "usage": usage,
                    "admission": { "module": "stock:plan-limits", "result": deny } }),
        ];
        for (i, e) in recorded.into_iter().enumerate() {
            store.put_decision(&decision(&tenant, i as u64, e)).unwrap();
        }
        drop(store);

        let server = Server::start_in(data, Options::default()).await;
        // Uploaded naming one of its worlds: stored as what it is.
        let query = format!("kind=placement&name=both&tenantId={tenant}");
        let (status, p) = upload(&server, &query, &both_module()).await;
        assert_eq!(status, 201, "{p}");
        assert_eq!(p["kind"], "policy", "{p}");
        let (status, list) = server.admin("GET", "/v1/policies", None).await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["policies"][0]["kind"], "policy", "{list}");
        // A module of one world is stored as that world.
        let binpack = super::BINPACK;
        let (status, bp) = upload(&server, "kind=placement&name=bp", binpack).await;
        assert_eq!(
            (status, bp["kind"].clone()),
            (201, json!("placement")),
            "{bp}"
        );
        let (status, reply) = upload(&server, "kind=policy&name=bp", binpack).await;
        assert_error(status, &reply, 400, "bad_request");

        let path = format!(
            "/v1/policies/{}/simulate?last=10",
            p["id"].as_str().unwrap()
        );
        let (status, sim) = server.admin("POST", &path, None).await;
        assert_eq!(status, 200, "{sim}");
        assert_eq!(sim["roles"], json!(["admission", "placement"]), "{sim}");
        assert_eq!(
            (sim["evaluated"].clone(), sim["skipped"].clone()),
            (json!(3), json!(0)),
            "{sim}"
        );
        let mut calls: Vec<(String, Value)> = sim["differences"]
            .as_array()
            .expect("differences")
            .iter()
            .map(|d| {
                let call = d["call"].as_str().unwrap_or("?").to_owned();
                let answer = match call.as_str() {
                    "place" => json!({ "chosenWorkerId": d["candidate"]["chosenWorkerId"] }),
                    _ => d["candidate"].clone(),
                };
                (call, answer)
            })
            .collect();
        calls.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            calls,
            [
                ("admit".to_owned(), allow.clone()),
                ("admit-worker".to_owned(), allow),
                ("place".to_owned(), json!({ "chosenWorkerId": "w-a" })),
            ],
            "{sim}"
        );
        server.stop().await;
    });
}
