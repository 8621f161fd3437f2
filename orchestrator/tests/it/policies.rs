//! The operator side of policies: upload (validated), list, activate,
//! rollback, simulate; one active module per scope and role (admission,
//! placement), each rolled back alone; activations surviving a restart,
//! also those stored before roles.

use serde_json::{json, Value};

use crate::fake::*;
use crate::harness::*;

mod roles;
mod startup;
mod worlds;

const BINPACK: &[u8] = include_bytes!("../../../policies/dist/binpack.wasm");
const PLAN_LIMITS: &[u8] = include_bytes!("../../../policies/dist/plan-limits.wasm");

async fn upload(server: &Server, query: &str, bytes: &[u8]) -> (u16, Value) {
    let auth = format!("Bearer {ADMIN}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/wasm"),
    ];
    let path = format!("/v1/policies?{query}");
    let (status, body) = http_raw(server.addr, "POST", &path, &headers, Some(bytes)).await;
    (
        status,
        serde_json::from_slice(&body).expect("a JSON answer"),
    )
}

/// A scheduled create of `id` on the fixture's only worker; its decision's
/// admission and placement modules.
async fn scheduled(fx: &mut Fixture, id: &str) -> (Value, Value) {
    let body = json!({ "id": id, "tenantId": fx.tenant_id, "name": id, "image": IMAGE });
    let task = fx.spawn("POST", "/v1/containers", Some(body));
    let cmd = next_command(&mut fx.agent).await;
    assert_eq!(cmd.ty, "images.list", "{cmd:?}");
    let image = json!({ "id": "sha", "names": [IMAGE], "sizeBytes": 1 });
    answer(&mut fx.agent, &cmd, json!({ "images": [image] })).await;
    let cmd = next_command(&mut fx.agent).await;
    assert_eq!(cmd.ty, "container.create", "{cmd:?}");
    let created = json!({ "container": info(id, &fx.tenant_id, id, "created"), "created": true });
    answer(&mut fx.agent, &cmd, created).await;
    let (status, reply) = task.await;
    assert_eq!(status, 201, "{reply}");
    let path = format!("/v1/tenants/{}/decisions?limit=1", fx.tenant_id);
    let (_, list) = fx.server.admin("GET", &path, None).await;
    let explanation = &list["decisions"][0]["explanation"];
    (
        explanation["admission"]["module"].clone(),
        explanation["placement"]["module"].clone(),
    )
}

#[test]
fn a_bad_module_is_refused_with_400_and_a_stock_one_is_stored_versioned() {
    smol::block_on(async {
        let server = Server::start("policy-upload").await;
        let (status, reply) = upload(&server, "kind=placement&name=junk", b"\0asm junk").await;
        assert_error(status, &reply, 400, "bad_request");
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains("refused"),
            "{reply}"
        );
        // A valid core module, but no component implementing the world.
        let core = wat::parse_str("(module (func (export \"place\")))").unwrap();
        let (status, reply) = upload(&server, "kind=placement&name=core", &core).await;
        assert_error(status, &reply, 400, "bad_request");
        // A component importing something we do not grant.
        let importing =
            wat::parse_str("(component (import \"wasi:cli/environment@0.2.0\" (instance)))")
                .unwrap();
        let (status, reply) = upload(&server, "kind=placement&name=imp", &importing).await;
        assert_error(status, &reply, 400, "bad_request");
        // A module built for the previous contract: refused, naming both
        // versions.
        let old = include_bytes!("../fixtures/least-loaded-0.1.0.wasm");
        let (status, reply) = upload(&server, "kind=placement&name=old", old).await;
        assert_error(status, &reply, 400, "bad_request");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("crops:policy@0.1.0") && message.contains("crops:policy@0.2.0"),
            "{reply}"
        );
        // binpack implements placement, not admission.
        let (status, reply) = upload(&server, "kind=admission&name=bp", BINPACK).await;
        assert_error(status, &reply, 400, "bad_request");
        let (status, reply) = upload(&server, "kind=nope&name=bp", BINPACK).await;
        assert_error(status, &reply, 400, "bad_request");

        let (status, one) = upload(&server, "kind=placement&name=bp", BINPACK).await;
        assert_eq!(status, 201, "{one}");
        assert_eq!(
            (one["version"].clone(), one["scope"].clone()),
            (json!(1), json!("global"))
        );
        let (status, two) = upload(&server, "kind=placement&name=bp", BINPACK).await;
        assert_eq!(status, 201, "{two}");
        assert_eq!(two["version"], 2);
        let (status, list) = server.admin("GET", "/v1/policies", None).await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["policies"].as_array().unwrap().len(), 2, "{list}");
        server.stop().await;
    });
}

#[test]
fn an_activated_policy_places_the_next_create_and_rollback_restores_the_stock_one() {
    smol::block_on(async {
        let mut fx = Fixture::start("policy-activate").await;
        let plan = format!("/v1/tenants/{}/plan", fx.tenant_id);
        let (status, reply) = fx
            .server
            .admin("PUT", &plan, Some(json!({ "name": "enterprise" })))
            .await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(scheduled(&mut fx, "a-1").await.1, "stock:least-loaded");

        let query = format!("kind=placement&name=bp&tenantId={}", fx.tenant_id);
        let (status, p) = upload(&fx.server, &query, BINPACK).await;
        assert_eq!(status, 201, "{p}");
        let id = p["id"].as_str().unwrap().to_owned();
        let (status, reply) = fx
            .server
            .admin("POST", &format!("/v1/policies/{id}/rollback"), None)
            .await;
        assert_error(status, &reply, 409, "conflict");
        let (status, active) = fx
            .server
            .admin("POST", &format!("/v1/policies/{id}/activate"), None)
            .await;
        assert_eq!(status, 200, "{active}");
        assert_eq!(active["active"][0]["current"]["policyId"], id.as_str());
        assert_eq!(active["active"][0]["role"], "placement");
        let label = format!("tenant:{}:bp@1", fx.tenant_id);
        assert_eq!(scheduled(&mut fx, "a-2").await.1, label.as_str());

        let (status, reply) = fx
            .server
            .admin("POST", &format!("/v1/policies/{id}/rollback"), None)
            .await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["active"][0]["current"], Value::Null, "{reply}");
        assert_eq!(scheduled(&mut fx, "a-3").await.1, "stock:least-loaded");
        // Three decisions, a page at a time: a-3's, then a-2's and a-1's.
        let server = &fx.server;
        let tenant = fx.tenant_id.clone();
        let page = |q: String| {
            let path = format!("/v1/tenants/{tenant}/decisions?{q}");
            async move { server.admin("GET", &path, None).await }
        };
        let (status, first) = page("limit=1".into()).await;
        assert_eq!(status, 200, "{first}");
        let next = first["nextBefore"]
            .as_str()
            .expect("a next page")
            .to_owned();
        assert_eq!(first["decisions"][0]["id"], next.as_str());
        let (_, rest) = page(format!("limit=10&before={next}")).await;
        let containers: Vec<&str> = rest["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["containerId"].as_str())
            .collect();
        assert_eq!(containers, ["a-2", "a-1"], "{rest}");
        assert_eq!(rest["nextBefore"], Value::Null, "{rest}");
        let unknown = "00000000-0000-4000-8000-000000000009";
        let (status, reply) = page(format!("before={unknown}")).await;
        assert_error(status, &reply, 404, "not_found");
        fx.stop().await;
    });
}

#[test]
fn rollback_returns_to_the_previous_version_and_activation_survives_a_restart() {
    smol::block_on(async {
        let server = Server::start("policy-restart").await;
        let (_, one) = upload(&server, "kind=placement&name=bp", BINPACK).await;
        let (_, two) = upload(&server, "kind=placement&name=bp", BINPACK).await;
        for p in [&one, &two] {
            let path = format!("/v1/policies/{}/activate", p["id"].as_str().unwrap());
            let (status, reply) = server.admin("POST", &path, None).await;
            assert_eq!(status, 200, "{reply}");
        }
        let path = format!("/v1/policies/{}/rollback", two["id"].as_str().unwrap());
        let (status, reply) = server.admin("POST", &path, None).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(
            reply["active"][0]["current"]["policyId"], one["id"],
            "{reply}"
        );

        let data = server.stop().await;
        let server = Server::start_in(data, Options::default()).await;
        let (status, list) = server.admin("GET", "/v1/policies", None).await;
        assert_eq!(status, 200, "{list}");
        let active = &list["active"][0];
        assert_eq!(active["role"], "placement", "{list}");
        assert_eq!(active["current"]["policyId"], one["id"], "{list}");
        assert_eq!(active["registry"]["module"], "global:bp@1", "{list}");
        server.stop().await;
    });
}

fn worker(id: &str, free: u64) -> Value {
    json!({
        "id": id, "mode": "fleet", "platform": "linux", "cpuCount": 4,
        "memoryTotal": 8u64 << 30, "memoryFree": free, "securityFloor": "open", "online": true,
    })
}

#[test]
fn simulate_replays_recorded_decisions_and_reports_the_differences() {
    smol::block_on(async {
        let server = Server::start("policy-simulate").await;
        let tenant = server.tenant("sim").await;
        let data = server.stop().await;
        // Two recorded placements over the same candidates, choosing
        // differently: a candidate agrees with at most one of them.
        let store = orchestrator::store::Store::open(&data).unwrap();
        let workers = json!([worker("w-a", 1 << 30), worker("w-b", 7u64 << 30)]);
        let request = json!({
            "tenantId": tenant, "name": "x", "image": "busybox", "profile": "open",
            "memoryBytes": 512u64 << 20, "cpus": 1,
        });
        for (i, chosen) in [0, 1].into_iter().enumerate() {
            store
                .put_decision(&orchestrator::store::DecisionRecord {
                    id: format!("00000000-0000-4000-8000-00000000000{i}"),
                    tenant_id: tenant.clone(),
                    at: 1000 + i as u64,
                    outcome: "placed".into(),
                    container_id: None,
                    explanation: orchestrator::policy::Recorded::from_json(json!({
                        "request": request, "workers": workers,
                        "placement": { "module": "stock:least-loaded", "result": { "chosen": chosen } },
                    })),
                })
                .unwrap();
        }
        drop(store);
        let server = Server::start_in(data, Options::default()).await;
        let (status, p) = upload(
            &server,
            &format!("kind=placement&name=bp&tenantId={tenant}"),
            BINPACK,
        )
        .await;
        assert_eq!(status, 201, "{p}");
        let path = format!(
            "/v1/policies/{}/simulate?last=10",
            p["id"].as_str().unwrap()
        );
        let (status, sim) = server.admin("POST", &path, None).await;
        assert_eq!(status, 200, "{sim}");
        assert_eq!(sim["evaluated"], 2, "{sim}");
        assert_eq!(sim["differing"], 1, "{sim}");
        let d = &sim["differences"][0];
        assert_eq!(d["call"], "place", "{sim}");
        assert_ne!(
            d["recorded"]["chosenWorkerId"], d["candidate"]["chosenWorkerId"],
            "{sim}"
        );
        let (status, reply) = server.admin("POST", &format!("{path}0000"), None).await;
        assert_error(status, &reply, 400, "bad_request");
        // One recorded decision at a time: the two differ once between them.
        let one = |i: u32| {
            format!(
                "/v1/policies/{}/simulate?decisionId=00000000-0000-4000-8000-00000000000{i}",
                p["id"].as_str().unwrap()
            )
        };
        let mut differing = 0;
        for i in [0, 1] {
            let (status, sim) = server.admin("POST", &one(i), None).await;
            assert_eq!(status, 200, "{sim}");
            assert_eq!(sim["evaluated"], 1, "{sim}");
            differing += sim["differing"].as_u64().unwrap();
        }
        assert_eq!(differing, 1);
        let (status, reply) = server.admin("POST", &one(9), None).await;
        assert_error(status, &reply, 404, "not_found");
        let both = format!("{}&last=2", one(0));
        let (status, reply) = server.admin("POST", &both, None).await;
        assert_error(status, &reply, 400, "bad_request");
        server.stop().await;
    });
}

#[test]
fn simulate_reports_a_recorded_decision_it_cannot_read() {
    smol::block_on(async {
        let server = Server::start("policy-unreadable").await;
        let tenant = server.tenant("unreadable").await;
        let data = server.stop().await;
        // One placement that reads, and one whose candidates do not (a
        // hand-written or foreign explanation): written as stored JSON.
        let store = orchestrator::store::Store::open(&data).unwrap();
        let request = json!({
            "tenantId": tenant, "name": "x", "image": "busybox", "profile": "open",
            "memoryBytes": 512u64 << 20, "cpus": 1,
        });
        let placement = json!({ "module": "stock:least-loaded", "result": { "chosen": 0 } });
        let unreadable = json!({
            "request": request, "workers": "every worker", "placement": placement,
        });
        let explanations = [
            json!({ "request": request, "workers": [worker("w-a", 1 << 30)], "placement": placement }),
            unreadable.clone(),
        ];
        let ids = [
            "00000000-0000-4000-8000-000000000200",
            "00000000-0000-4000-8000-000000000201",
        ];
        for (i, (id, explanation)) in ids.iter().zip(explanations).enumerate() {
            let record = json!({
                "id": id, "tenantId": tenant, "at": 1000 + i, "outcome": "placed",
                "containerId": null, "explanation": explanation,
            });
            let record: orchestrator::store::DecisionRecord =
                serde_json::from_value(record).unwrap();
            store.put_decision(&record).unwrap();
        }
        drop(store);

        let server = Server::start_in(data, Options::default()).await;
        // Listed as stored, the unreadable one included.
        let path = format!("/v1/tenants/{tenant}/decisions/{}", ids[1]);
        let (status, shown) = server.admin("GET", &path, None).await;
        assert_eq!(status, 200, "{shown}");
        assert_eq!(shown["explanation"], unreadable, "{shown}");
        let query = format!("kind=placement&name=bp&tenantId={tenant}");
        let (status, p) = upload(&server, &query, BINPACK).await;
        assert_eq!(status, 201, "{p}");
        let path = format!(
            "/v1/policies/{}/simulate?last=10",
            p["id"].as_str().unwrap()
        );
        let (status, sim) = server.admin("POST", &path, None).await;
        assert_eq!(status, 200, "{sim}");
        // Replayed: the readable one; reported, not skipped: the other.
        assert_eq!(
            (sim["evaluated"].clone(), sim["skipped"].clone()),
            (json!(1), json!(0)),
            "{sim}"
        );
        let reported = sim["unreadable"].as_array().expect("unreadable listed");
        assert_eq!(reported.len(), 1, "{sim}");
        assert_eq!(reported[0]["decisionId"], ids[1], "{sim}");
        let error = reported[0]["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty(), "{sim}");
        server.stop().await;
    });
}
