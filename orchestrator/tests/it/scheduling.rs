//! `POST /v1/containers` without a `workerId`: the stock plan-limits and
//! least-loaded policies decide, the create goes to the chosen worker, and
//! every decision (placed, denied, no fit) is stored with its explanation
//! and readable per tenant.

use serde_json::{json, Value};

use crate::fake::*;

fn unplaced(fx: &Fixture, id: &str, extra: Value) -> Value {
    let mut body = json!({ "id": id, "tenantId": fx.tenant_id, "name": id, "image": IMAGE });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

async fn decisions(fx: &Fixture) -> Vec<Value> {
    let path = format!("/v1/tenants/{}/decisions", fx.tenant_id);
    let (status, body) = fx.server.admin("GET", &path, None).await;
    assert_eq!(status, 200, "{body}");
    // Enrolment admissions are decisions too; these tests are about creates.
    let all = body["decisions"].as_array().cloned().unwrap_or_default();
    all.into_iter()
        .filter(|d| d["containerId"].is_string())
        .collect()
}

#[test]
fn a_create_without_a_worker_is_placed_and_its_decision_is_explained() {
    smol::block_on(async {
        let mut fx = Fixture::start("sched-placed").await;
        let task = fx.spawn(
            "POST",
            "/v1/containers",
            Some(unplaced(&fx, "p-1", json!({}))),
        );
        // A local image: placement asks the worker whether it has it.
        let cmd = next_command(&mut fx.agent).await;
        assert_eq!(cmd.ty, "images.list", "{cmd:?}");
        let image = json!({ "id": "sha", "names": [IMAGE], "sizeBytes": 1 });
        answer(&mut fx.agent, &cmd, json!({ "images": [image] })).await;
        let cmd = next_command(&mut fx.agent).await;
        assert_eq!(cmd.ty, "container.create", "{cmd:?}");
        let created =
            json!({ "container": info("p-1", &fx.tenant_id, "p-1", "created"), "created": true });
        answer(&mut fx.agent, &cmd, created).await;
        let (status, body) = task.await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["workerId"], fx.worker_id.as_str());

        let list = decisions(&fx).await;
        assert_eq!(list.len(), 1, "{list:?}");
        let d = &list[0];
        assert_eq!(d["outcome"], "placed");
        assert_eq!(d["containerId"], "p-1");
        let e = &d["explanation"];
        assert_eq!(e["admission"]["module"], "stock:plan-limits");
        assert_eq!(e["admission"]["result"]["decision"], "allow");
        assert_eq!(e["placement"]["module"], "stock:least-loaded");
        assert_eq!(e["placement"]["result"]["chosen"], 0);
        assert_eq!(e["placement"]["result"]["verdicts"][0]["feasible"], true);
        assert_eq!(e["chosenWorkerId"], fx.worker_id.as_str());
        assert_eq!(e["workers"][0]["images"], json!([IMAGE]));

        let path = format!(
            "/v1/tenants/{}/decisions/{}",
            fx.tenant_id,
            d["id"].as_str().unwrap()
        );
        let (status, one) = fx.server.admin("GET", &path, None).await;
        assert_eq!((status, &one), (200, d));
        fx.stop().await;
    });
}

#[test]
fn the_plan_limit_denies_with_the_policy_reason() {
    smol::block_on(async {
        let mut fx = Fixture::start("sched-denied").await;
        for i in 0..3 {
            fx.create(&format!("c-{i}"), &format!("c-{i}")).await;
        }
        let body = unplaced(&fx, "c-3", json!({}));
        let (status, body) = fx.server.admin("POST", "/v1/containers", Some(body)).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "plan_limit");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("plan free allows 3 concurrent containers"),
            "{message}"
        );
        let list = decisions(&fx).await;
        assert_eq!(list[0]["outcome"], "denied");
        assert_eq!(list[0]["explanation"]["usage"]["created"], 3);
        fx.stop().await;
    });
}

#[test]
fn no_fit_is_409_with_every_workers_reason_and_no_worker_online_is_503() {
    smol::block_on(async {
        let fx = Fixture::start("sched-nofit").await;
        // A pullable image: nothing to ask the worker.
        let pulled = "docker.io/library/busybox:1";
        let body = unplaced(
            &fx,
            "w-1",
            json!({ "platform": "windows", "image": pulled }),
        );
        let (status, body) = fx.server.admin("POST", "/v1/containers", Some(body)).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["code"], "no_worker_fits");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        let reason = format!("{}: platform linux (needs windows)", fx.worker_id);
        assert!(message.contains(&reason), "{message}");
        assert_eq!(decisions(&fx).await[0]["outcome"], "no_fit");

        // A tenant with no worker of its own sees only another tenant's byom worker.
        let lonely = fx.server.tenant("sched-lonely").await;
        let body = json!({ "tenantId": lonely, "name": "x", "image": pulled });
        let (status, body) = fx.server.admin("POST", "/v1/containers", Some(body)).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "no_worker_online");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("a self-hosted worker of another tenant"),
            "{message}"
        );

        let body = json!({ "tenantId": lonely, "workerId": fx.worker_id, "region": "eu", "name": "x", "image": IMAGE });
        let (status, _) = fx.server.admin("POST", "/v1/containers", Some(body)).await;
        assert_eq!(status, 400);
        fx.stop().await;
    });
}

#[test]
fn a_workers_registered_labels_and_floor_reach_the_api_and_placement() {
    smol::block_on(async {
        let server = crate::harness::Server::start_in(
            crate::harness::temp_dir("sched-floor"),
            crate::harness::Options::default(),
        )
        .await;
        let (worker_id, credential) = server.enrolled("sched-floor").await;
        let mut agent = crate::harness::Agent::connect(server.addr, &credential).await;
        let mut register = crate::harness::register_msg("r-1", 1);
        register["data"]["labels"] = json!({ "gpu": "a100", "disk": "ssd" });
        register["data"]["securityFloor"] = json!("strict");
        agent.send_json(&register).await;
        let accepted = agent.recv_json().await;
        assert_eq!(accepted["type"], "worker.accepted", "{accepted}");

        let shown = server.worker(&worker_id).await;
        assert_eq!(shown["labels"], json!({ "disk": "ssd", "gpu": "a100" }));
        assert_eq!(shown["securityFloor"], "strict");
        let tenant = shown["tenantId"].as_str().unwrap().to_owned();

        // Standard is weaker than the worker's floor: nowhere to run it.
        let pulled = "docker.io/library/busybox:1";
        let body =
            json!({ "tenantId": tenant, "name": "s", "image": pulled, "profile": "standard" });
        let (status, body) = server.admin("POST", "/v1/containers", Some(body)).await;
        assert_eq!(status, 409, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&worker_id) && message.contains("floor"),
            "{message}"
        );

        // Strict meets it: placed there, with the labels in the explanation.
        let body = json!({ "tenantId": tenant, "name": "t", "image": pulled, "profile": "strict" });
        let task = spawn_admin(server.addr, "POST", "/v1/containers".into(), Some(body));
        let cmd = next_command(&mut agent).await;
        assert_eq!(cmd.ty, "container.create", "{cmd:?}");
        let id = cmd.data["containerId"].as_str().unwrap().to_owned();
        let created = json!({ "container": info(&id, &tenant, "t", "created"), "created": true });
        answer(&mut agent, &cmd, created).await;
        let (status, body) = task.await;
        assert_eq!(status, 201, "{body}");
        let path = format!("/v1/tenants/{tenant}/decisions");
        let (_, list) = server.admin("GET", &path, None).await;
        let placed = list["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["outcome"] == "placed")
            .cloned()
            .expect("a placed decision");
        let worker = &placed["explanation"]["workers"][0];
        assert_eq!(worker["securityFloor"], "strict", "{worker}");
        assert!(worker["labels"].to_string().contains("a100"), "{worker}");
        server.stop().await;
    });
}

#[test]
fn a_create_naming_its_worker_is_held_to_the_plan_too() {
    smol::block_on(async {
        let mut fx = Fixture::start("sched-pinned").await;
        for i in 0..3 {
            fx.create(&format!("p-{i}"), &format!("p-{i}")).await;
        }
        // The free plan's fourth container, on the same worker by name.
        let body = fx.create_body("p-3", "p-3");
        let (status, body) = fx.server.admin("POST", "/v1/containers", Some(body)).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "plan_limit");
        // Nothing reached the agent and nothing was recorded.
        let (status, _) = fx.server.admin("GET", "/v1/containers/p-3", None).await;
        assert_eq!(status, 404);
        let list = decisions(&fx).await;
        let outcomes: Vec<&str> = list
            .iter()
            .map(|d| d["outcome"].as_str().unwrap())
            .collect();
        assert_eq!(outcomes, ["denied", "admitted", "admitted", "admitted"]);
        assert_eq!(
            list[0]["explanation"]["chosenWorkerId"],
            fx.worker_id.as_str()
        );
        assert_eq!(list[0]["explanation"]["usage"]["created"], 3);

        // Raising the plan lets the same create through.
        let path = format!("/v1/tenants/{}/plan", fx.tenant_id);
        let (status, body) = fx
            .server
            .admin("PUT", &path, Some(json!({ "name": "enterprise" })))
            .await;
        assert_eq!(status, 200, "{body}");
        fx.create("p-3", "p-3").await;
        fx.stop().await;
    });
}
