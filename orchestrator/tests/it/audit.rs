//! The audit log through the API: mutating calls and the commands they
//! send are recorded per tenant with who, what, when and outcome; reads
//! are not; who may read it; paging; entries survive a restart.

use serde_json::{json, Value};

use crate::fake::*;
use crate::harness::*;
use crate::people::*;

async fn entries(server: &Server, query: &str) -> Vec<Value> {
    let (status, body) = server
        .admin("GET", &format!("/v1/audit?{query}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["entries"].as_array().unwrap().clone()
}

fn find<'a>(list: &'a [Value], kind: &str, action: &str) -> Option<&'a Value> {
    list.iter()
        .find(|e| e["kind"] == kind && e["action"] == action)
}

#[test]
fn calls_and_commands_are_audited_per_tenant_with_their_outcome() {
    smol::block_on(async {
        let mut fx = Fixture::start("audit").await;
        let tenant = fx.tenant_id.clone();
        let started = now_ms();
        fx.create("a-1", "job").await;
        let status = json!({ "containerId": "a-1", "state": "running" });
        let (code, body, _) = fx
            .relay(
                "POST",
                "/v1/containers/a-1/start",
                None,
                "container.start",
                status,
            )
            .await;
        assert_eq!(code, 200, "{body}");
        // An agent error is recorded with its code, on the call and the command.
        let task = fx.spawn("POST", "/v1/containers/a-1/stop", Some(json!({})));
        let cmd = next_command(&mut fx.agent).await;
        answer_error(&mut fx.agent, &cmd, "engine_failed", "podman broke").await;
        let (code, _) = task.await;
        assert_eq!(code, 502);
        // A read is not audited.
        fx.container("a-1").await;

        let log = entries(&fx.server, &format!("tenantId={tenant}")).await;
        let create = find(&log, "api", "POST /v1/containers").expect("the create call");
        assert_eq!(create["principal"], "operator");
        assert_eq!(create["outcome"], "ok");
        assert_eq!(create["status"], 201);
        assert_eq!(create["tenantId"], tenant.as_str());
        assert!(create["at"].as_u64().unwrap() >= started, "{create}");
        let sent = find(&log, "command", "container.create").expect("the create command");
        assert_eq!(sent["outcome"], "ok");
        assert_eq!(
            sent["target"],
            format!("worker:{}/container:a-1", fx.worker_id)
        );
        let stop = find(&log, "api", "POST /v1/containers/{containerId}/stop").expect("stop");
        assert_eq!(
            (&stop["outcome"], &stop["status"]),
            (&json!("engine_failed"), &json!(502))
        );
        let stop_cmd = find(&log, "command", "container.stop").expect("stop command");
        assert_eq!(stop_cmd["outcome"], "engine_failed");
        assert!(
            find(&log, "command", "container.start").is_some(),
            "{log:?}"
        );
        assert!(
            log.iter()
                .all(|e| e["action"].as_str().is_some_and(|a| !a.starts_with("GET"))),
            "{log:?}"
        );
        // Newest first, strictly decreasing sequence numbers.
        let seqs: Vec<u64> = log.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");

        // Pages: limit and before walk the same entries.
        let path = format!("/v1/audit?tenantId={tenant}&limit=2");
        let (_, first) = fx.server.admin("GET", &path, None).await;
        assert_eq!(first["entries"].as_array().unwrap().len(), 2);
        let before = first["nextBefore"].as_u64().expect("a next page");
        let rest = entries(&fx.server, &format!("tenantId={tenant}&before={before}")).await;
        assert_eq!(rest.len(), log.len() - 2);
        assert_eq!(rest[0]["seq"], log[2]["seq"]);

        // Filters: an action's prefix or whole (percent-encoded), an outcome, a time.
        let q = |f: &str| format!("tenantId={tenant}&{f}");
        let commands = entries(&fx.server, &q("action=container.")).await;
        assert!(
            !commands.is_empty() && commands.iter().all(|e| e["kind"] == "command"),
            "{commands:?}"
        );
        let created = entries(&fx.server, &q("action=POST+%2Fv1%2Fcontainers")).await;
        assert_eq!(created.len(), 1, "{created:?}");
        assert_eq!(created[0]["seq"], create["seq"]);
        let failed = entries(&fx.server, &q("outcome=engine_failed")).await;
        let mut kinds: Vec<&str> = failed.iter().filter_map(|e| e["kind"].as_str()).collect();
        kinds.sort_unstable();
        assert_eq!(kinds, ["api", "command"], "{failed:?}");
        let by_operator = entries(&fx.server, &q("principal=operator")).await;
        assert!(
            by_operator.iter().all(|e| e["principal"] == "operator"),
            "{by_operator:?}"
        );
        assert!(
            by_operator.len() < log.len(),
            "commands are the worker's: {log:?}"
        );
        let later = now_ms() + 3_600_000;
        assert!(entries(&fx.server, &q(&format!("since={later}")))
            .await
            .is_empty());
        assert_eq!(
            entries(&fx.server, &q(&format!("until={later}")))
                .await
                .len(),
            log.len()
        );
        for bad in ["action=%zz", "outcome=", "since=soon"] {
            let (status, reply) = fx
                .server
                .admin("GET", &format!("/v1/audit?{bad}"), None)
                .await;
            assert_error(status, &reply, 400, "bad_request");
        }

        // Entries survive a restart.
        let data = fx.stop().await;
        let server = Server::start_in(data, Options::default()).await;
        let again = entries(&server, &format!("tenantId={tenant}")).await;
        assert_eq!(again.len(), log.len());
        server.stop().await;
    });
}

#[test]
fn org_admins_read_their_tenants_audit_and_nobody_else_does() {
    smol::block_on(async {
        let server = Server::start("audit-readers").await;
        let addr = server.addr;
        let acme = org(&server, "acme").await;
        let tenant = tenant_in(&server, "t1", &acme).await;
        let ada = person(&server, &acme, "ada", "admin", &[]).await;
        let mo = person(&server, &acme, "mo", "member", &[&tenant]).await;
        let other = org(&server, "other").await;
        let oz = person(&server, &other, "oz", "admin", &[]).await;

        // mo's refused call (a member may not mint join tokens) is audited.
        let join = format!("/v1/tenants/{tenant}/join-tokens");
        let (status, _) = mo.call(addr, "POST", &join, Some(json!({}))).await;
        assert_eq!(status, 403);
        // oz probing acme's tenant leaves nothing in acme's log.
        let (status, _) = oz.call(addr, "POST", &join, Some(json!({}))).await;
        assert_eq!(status, 404);
        let (status, _) = ada.call(addr, "POST", &join, Some(json!({}))).await;
        assert_eq!(status, 201);

        let path = format!("/v1/audit?tenantId={tenant}");
        let (status, page) = ada.call(addr, "GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        let log = page["entries"].as_array().unwrap();
        let who: Vec<&str> = log.iter().filter_map(|e| e["principal"].as_str()).collect();
        assert!(
            who.contains(&format!("member:{}", ada.id).as_str()),
            "{page}"
        );
        assert!(
            !who.contains(&format!("member:{}", oz.id).as_str()),
            "{page}"
        );
        let refused = log
            .iter()
            .find(|e| e["principal"] == format!("member:{}", mo.id))
            .expect("mo's refused call");
        assert_eq!(
            (&refused["outcome"], &refused["status"]),
            (&json!("forbidden"), &json!(403))
        );
        // oz's probe is in oz's own org's log.
        let (_, theirs) = oz
            .call(addr, "GET", &format!("/v1/audit?orgId={other}"), None)
            .await;
        assert!(theirs["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["outcome"] == "not_found"));

        // A member does not read the log; another org's admin does not see it.
        let (status, reply) = mo.call(addr, "GET", &path, None).await;
        assert_eq!(status, 403, "{reply}");
        let (status, reply) = oz.call(addr, "GET", &path, None).await;
        assert_eq!(status, 404, "{reply}");
        // Only the operator reads the whole log.
        let (status, _) = ada.call(addr, "GET", "/v1/audit", None).await;
        assert_eq!(status, 400);
        let (status, all) = server.admin("GET", "/v1/audit", None).await;
        assert_eq!(status, 200);
        assert!(all["entries"].as_array().unwrap().len() >= log.len());
        server.stop().await;
    });
}

/// A client that hangs up while its worker works: the worker's answer is
/// still recorded, and the call's entry (its intent, durable before) gets
/// outcome `client_closed` instead of waiting for a restart.
#[test]
fn a_call_whose_client_hangs_up_is_still_audited_and_recorded() {
    smol::block_on(async {
        let mut fx = Fixture::start("audit-hangup").await;
        let tenant = fx.tenant_id.clone();
        fx.create("h-1", "job").await;
        let call = fx.spawn("POST", "/v1/containers/h-1/start", None);
        let cmd = next_command(&mut fx.agent).await;
        assert_eq!(cmd.ty, "container.start");
        // Cancelling the task closes the client's connection.
        drop(call);
        let running = json!({ "containerId": "h-1", "state": "running" });
        answer(&mut fx.agent, &cmd, running).await;
        let action = "POST /v1/containers/{containerId}/start";
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let entry = loop {
            let log = entries(&fx.server, &format!("tenantId={tenant}")).await;
            if let Some(e) = find(&log, "api", action) {
                break e.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no entry for the abandoned call: {log:?}"
            );
            smol::Timer::after(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!(
            (&entry["outcome"], &entry["status"]),
            (&json!("client_closed"), &json!(499)),
            "{entry}"
        );
        assert_eq!(
            fx.container("h-1").await["state"],
            "running",
            "the worker's answer is recorded"
        );
        fx.stop().await;
    });
}

/// The entry of a create names the container it made by its path, as the
/// entries of later calls on it do, whether the caller named the worker or
/// placement chose one.
#[test]
fn a_create_is_audited_under_the_container_it_made() {
    smol::block_on(async {
        let mut fx = Fixture::start("audit-create").await;
        fx.create("pinned-1", "pinned").await;
        let placed = json!({
            "id": "placed-1", "tenantId": fx.tenant_id, "name": "placed", "image": IMAGE
        });
        let task = fx.spawn("POST", "/v1/containers", Some(placed));
        // A local image: placement asks the worker whether it has it.
        let cmd = next_command(&mut fx.agent).await;
        assert_eq!(cmd.ty, "images.list", "{cmd:?}");
        let image = json!({ "id": "sha", "names": [IMAGE], "sizeBytes": 1 });
        answer(&mut fx.agent, &cmd, json!({ "images": [image] })).await;
        let cmd = next_command(&mut fx.agent).await;
        assert_eq!(cmd.ty, "container.create", "{cmd:?}");
        let info = info("placed-1", &fx.tenant_id, "placed", "created");
        answer(
            &mut fx.agent,
            &cmd,
            json!({ "container": info, "created": true }),
        )
        .await;
        let (status, body) = task.await;
        assert_eq!(status, 201, "{body}");

        let log = entries(&fx.server, &format!("tenantId={}", fx.tenant_id)).await;
        let creates: Vec<_> = log
            .iter()
            .filter(|e| e["kind"] == "api" && e["action"] == "POST /v1/containers")
            .map(|e| (e["target"].clone(), e["outcome"].clone()))
            .collect();
        assert_eq!(
            creates,
            [
                (json!("/v1/containers/placed-1"), json!("ok")),
                (json!("/v1/containers/pinned-1"), json!("ok")),
            ],
            "{log:?}"
        );
        fx.stop().await;
    });
}
