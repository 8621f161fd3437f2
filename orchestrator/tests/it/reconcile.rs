//! `worker.inventory` reconciles container records after a (re)connect:
//! what runs is adopted, what vanished is `lost`, unknown managed
//! containers of the worker's tenant become records, and nothing is ever
//! sent to the agent because of it.

use serde_json::{json, Value};

use crate::fake::*;

fn inventory(containers: Vec<Value>) -> Value {
    json!({ "type": "worker.inventory", "data": { "containers": containers } })
}

fn state_of(list: &[Value], id: &str) -> Option<String> {
    find(list, id).and_then(|c| c["state"].as_str().map(str::to_owned))
}

#[test]
fn inventory_adopts_marks_lost_and_adopts_unknown_without_sending_anything() {
    smol::block_on(async {
        let mut fx = Fixture::start("reconcile").await;
        let stranger_tenant = fx.server.tenant("stranger").await;
        fx.create("job-run", "run").await;
        fx.create("job-gone", "gone").await;
        let running = json!({ "containerId": "job-gone", "state": "running" });
        fx.relay(
            "POST",
            "/v1/containers/job-gone/start",
            None,
            "container.start",
            running,
        )
        .await;
        fx.create("job-removed", "removed").await;
        let removed = json!({ "containerId": "job-removed", "state": "removed" });
        fx.relay(
            "DELETE",
            "/v1/containers/job-removed",
            None,
            "container.remove",
            removed,
        )
        .await;
        // A create cut off by a disconnect stays `creating`.
        let task = fx.spawn(
            "POST",
            "/v1/containers",
            Some(fx.create_body("job-pending", "pending")),
        );
        let cmd = next_command(&mut fx.agent).await;
        assert_eq!(cmd.ty, "container.create");
        fx.reconnect().await;
        let (code, body) = task.await;
        assert_error(code, &body, 503, "worker_disconnected");
        assert_eq!(fx.container("job-pending").await["state"], "creating");

        let tenant = fx.tenant_id.clone();
        // What the agent's gate enforces comes with an entry, checked.
        let mut foreign = info("job-foreign", &tenant, "foreign", "paused");
        foreign["allowedDomains"] = json!(["PyPI.org"]);
        let mut wide = info("job-wide", &tenant, "wide", "running");
        wide["allowedDomains"] = json!(["*.com"]);
        let entries = vec![
            info("job-run", &tenant, "run", "running"),
            info("job-pending", &tenant, "pending", "running"),
            foreign,
            wide,
            info("job-stranger", &stranger_tenant, "stranger", "running"),
            info("job-ghost", "no-such-tenant", "ghost", "running"),
            info("job-hostile", &tenant, "--privileged", "running"),
        ];
        fx.agent.send_json(&inventory(entries)).await;
        let list = fx
            .wait_containers("the reconcile", |l| {
                state_of(l, "job-gone").as_deref() == Some("lost")
                    && find(l, "job-foreign").is_some()
            })
            .await;
        assert_eq!(state_of(&list, "job-run").as_deref(), Some("running"));
        assert_eq!(state_of(&list, "job-removed").as_deref(), Some("removed"));
        let pending = find(&list, "job-pending").unwrap();
        assert_eq!(pending["state"], "running", "{pending}");
        assert_eq!(pending["engineId"], "eng-job-pending");
        let foreign = find(&list, "job-foreign").unwrap();
        assert_eq!(foreign["state"], "running", "{foreign}");
        assert_eq!(foreign["workerId"], fx.worker_id.as_str());
        assert_eq!(foreign["name"], "foreign");
        assert_eq!(foreign["image"], IMAGE);
        assert_eq!(foreign["createdAt"], 1_700_000_000_000u64);
        assert_eq!(foreign["allowedDomains"], json!(["pypi.org"]));
        for refused in ["job-stranger", "job-ghost", "job-hostile", "job-wide"] {
            assert!(find(&list, refused).is_none(), "{refused} adopted");
        }
        let path = format!("/v1/containers?tenantId={stranger_tenant}");
        let (code, body) = fx.server.admin("GET", &path, None).await;
        assert_eq!((code, body), (200, json!({ "containers": [] })));
        assert_eq!(list.len(), 5, "{list:?}");

        // The reconcile sent the agent nothing: no stop, remove or create.
        fx.assert_nothing_sent().await;
        fx.stop().await;
    });
}

#[test]
fn an_inventory_never_overrides_what_this_connection_has_since_done() {
    smol::block_on(async {
        let mut fx = Fixture::start("reconcile-order").await;
        fx.create("job-1", "dev").await;
        fx.reconnect().await;
        // A stop answered on the new connection is newer than its inventory.
        let exited = json!({ "containerId": "job-1", "state": "exited" });
        fx.relay(
            "POST",
            "/v1/containers/job-1/stop",
            Some(json!({})),
            "container.stop",
            exited,
        )
        .await;
        let tenant = fx.tenant_id.clone();
        let stale = vec![
            info("job-1", &tenant, "dev", "running"),
            info("job-2", &tenant, "new", "exited"),
        ];
        fx.agent.send_json(&inventory(stale)).await;
        let list = fx
            .wait_containers("the adoption", |l| find(l, "job-2").is_some())
            .await;
        assert_eq!(state_of(&list, "job-1").as_deref(), Some("exited"));
        assert_eq!(state_of(&list, "job-2").as_deref(), Some("exited"));

        // An empty inventory after the next reconnect: both vanished.
        fx.reconnect().await;
        fx.agent.send_json(&inventory(vec![])).await;
        let list = fx
            .wait_containers("both lost", |l| l.iter().all(|c| c["state"] == "lost"))
            .await;
        assert_eq!(list.len(), 2);
        // And they come back when they reappear.
        fx.reconnect().await;
        fx.agent
            .send_json(&inventory(vec![info("job-1", &tenant, "dev", "running")]))
            .await;
        fx.wait_containers("job-1 back", |l| {
            state_of(l, "job-1").as_deref() == Some("running")
        })
        .await;
        fx.assert_nothing_sent().await;
        fx.stop().await;
    });
}

#[test]
fn an_inventory_cannot_claim_another_workers_containers() {
    smol::block_on(async {
        let mut first = Fixture::start("reconcile-claims").await;
        first.create("job-a", "a").await;
        let mut second = Fixture::on(first.server, "second").await;
        let claims = vec![
            info("job-a", &first.tenant_id, "a", "exited"),
            info("job-b", &first.tenant_id, "b", "running"),
        ];
        second.agent.send_json(&inventory(claims)).await;
        // Its own (empty) part of the inventory is still reconciled: prove
        // the message was handled by a round trip, then look.
        second.assert_nothing_sent().await;
        let path = format!("/v1/containers?tenantId={}", first.tenant_id);
        let (code, body) = second.server.admin("GET", &path, None).await;
        assert_eq!(code, 200);
        let list = body["containers"].as_array().unwrap();
        assert_eq!(list.len(), 1, "{body}");
        assert_eq!(list[0]["id"], "job-a");
        assert_eq!(list[0]["state"], "created");
        assert!(second.containers().await.is_empty());
        drop(first.agent);
        second.stop().await;
    });
}

#[test]
fn a_create_that_never_reached_the_engine_is_sent_again_when_retried() {
    smol::block_on(async {
        let mut fx = Fixture::start("reconcile-unsent").await;
        let tenant = fx.tenant_id.clone();
        let created = |id: &str, name: &str| json!({ "container": info(id, &tenant, name, "created"), "created": true });
        // The agent dies holding the create, and comes back without it.
        let body = fx.create_body("job-unsent", "unsent");
        let task = fx.spawn("POST", "/v1/containers", Some(body.clone()));
        let cmd = next_command(&mut fx.agent).await;
        assert_eq!(cmd.ty, "container.create");
        fx.reconnect().await;
        let (code, reply) = task.await;
        assert_error(code, &reply, 503, "worker_disconnected");
        fx.agent.send_json(&inventory(vec![])).await;
        fx.assert_nothing_sent().await;
        // Nothing was lost: the record still waits for its create.
        let record = fx.container("job-unsent").await;
        assert_eq!(record["state"], "creating", "{record}");
        assert!(
            record["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("retry the create")),
            "{record}"
        );
        // The retry sends the create again and answers the container.
        let (code, reply, cmd) = fx
            .relay(
                "POST",
                "/v1/containers",
                Some(body),
                "container.create",
                created("job-unsent", "unsent"),
            )
            .await;
        assert_eq!(cmd.data["containerId"], "job-unsent");
        assert_eq!(
            (code, reply["state"].as_str()),
            (200, Some("created")),
            "{reply}"
        );
        assert_eq!(reply["engineId"], "eng-job-unsent");

        // A record marked `lost` without an engine id (a start of it found
        // nothing on the worker) never existed there either: a retried
        // create sends it too.
        let body = fx.create_body("job-lost", "lost");
        let task = fx.spawn("POST", "/v1/containers", Some(body.clone()));
        let _held = next_command(&mut fx.agent).await;
        fx.reconnect().await;
        let (code, reply) = task.await;
        assert_error(code, &reply, 503, "worker_disconnected");
        let task = fx.spawn("POST", "/v1/containers/job-lost/start", None);
        let cmd = next_command(&mut fx.agent).await;
        answer_error(&mut fx.agent, &cmd, "not_found", "no such container").await;
        assert_eq!(task.await.0, 404);
        let record = fx.container("job-lost").await;
        assert_eq!(
            (record["state"].as_str(), &record["engineId"]),
            (Some("lost"), &Value::Null)
        );
        let (code, reply, _) = fx
            .relay(
                "POST",
                "/v1/containers",
                Some(body),
                "container.create",
                created("job-lost", "lost"),
            )
            .await;
        assert_eq!(
            (code, reply["state"].as_str()),
            (200, Some("created")),
            "{reply}"
        );
        fx.stop().await;
    });
}
