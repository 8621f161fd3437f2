//! Calls across replicas (`peer`): two orchestrators on one PostgreSQL
//! database (a real server), the worker's agent connected to replica B,
//! every call made on replica A. A answers as if the agent were its own,
//! and audits and counts the call; B only relays.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fake::*;
use crate::harness::*;
use crate::postgres;

fn on(url: &str) -> Options {
    Options {
        database: Some(url.to_owned()),
        ..Options::default()
    }
}

/// A call on `server` that the agent answers with `result` of type `ty`.
async fn relayed(
    server: &Server,
    agent: &mut Agent,
    (method, path, body): (&'static str, String, Option<Value>),
    ty: &str,
    result: Value,
) -> (u16, Value, Cmd) {
    let task = spawn_admin(server.addr, method, path, body);
    let cmd = next_command(agent).await;
    assert_eq!(cmd.ty, ty, "{cmd:?}");
    answer(agent, &cmd, result).await;
    let (status, body) = task.await;
    (status, body, cmd)
}

async fn metrics(server: &Server) -> String {
    let (_, text) = http_raw(server.addr, "GET", "/metrics", &[], None).await;
    String::from_utf8(text).unwrap()
}

#[test]
fn a_call_on_one_replica_drives_the_worker_connected_to_another() {
    smol::block_on(async {
        let url = postgres::database();
        let a = Server::start_in(temp_dir("routing-a"), on(&url)).await;
        let b = Server::start_in(temp_dir("routing-b"), on(&url)).await;
        let mut fx = Fixture::on(b, "routed").await;
        let (worker, tenant) = (fx.worker_id.clone(), fx.tenant_id.clone());
        a.wait_worker(&worker, "the worker online, seen from a", |w| {
            w["status"] == "online"
        })
        .await;

        let create = fx.create_body("job-1", "job");
        let created =
            json!({ "container": info("job-1", &tenant, "job", "created"), "created": true });
        let (status, body, _) = relayed(
            &a,
            &mut fx.agent,
            ("POST", "/v1/containers".into(), Some(create)),
            "container.create",
            created,
        )
        .await;
        assert_eq!(
            (status, body["state"].as_str()),
            (201, Some("created")),
            "{body}"
        );

        let started = json!({ "containerId": "job-1", "state": "running" });
        let (status, body, _) = relayed(
            &a,
            &mut fx.agent,
            ("POST", "/v1/containers/job-1/start".into(), None),
            "container.start",
            started,
        )
        .await;
        assert_eq!(
            (status, body["state"].as_str()),
            (200, Some("running")),
            "{body}"
        );

        let exec = json!({ "command": ["echo", "hi"] });
        let result = json!({ "exitCode": 0, "stdout": "hi\n", "stderr": "", "stdoutTruncated": false, "stderrTruncated": false, "timedOut": false });
        let (status, body, cmd) = relayed(
            &a,
            &mut fx.agent,
            ("POST", "/v1/containers/job-1/exec".into(), Some(exec)),
            "container.exec",
            result.clone(),
        )
        .await;
        assert_eq!((status, &body), (200, &result));
        assert_eq!(cmd.data["command"], json!(["echo", "hi"]));

        // A setup whose files are 1.5 MiB of quotes: 3 MiB as a protocol
        // message, which crosses as it is (escaped once more it would not).
        let quotes = "\"".repeat(3 << 19);
        let setup = json!({ "files": [{ "path": "q.txt", "content": quotes }] });
        let (status, body, cmd) = relayed(
            &a,
            &mut fx.agent,
            ("POST", "/v1/containers/job-1/setup".into(), Some(setup)),
            "container.setup",
            json!({ "filesWritten": 1 }),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            cmd.data["files"][0]["content"].as_str().map(str::len),
            Some(3 << 19)
        );

        // A build: its progress events cross with the reply, in order.
        let path = format!("/v1/workers/{worker}/images");
        let build = json!({ "tag": "localhost/tool:1", "containerfile": "FROM scratch\n", "tenantId": tenant });
        let task = spawn_admin(a.addr, "POST", path, Some(build));
        let cmd = next_command(&mut fx.agent).await;
        assert_eq!(cmd.ty, "images.build");
        for line in ["STEP 1/1: FROM scratch", "COMMIT localhost/tool:1"] {
            let event = json!({ "type": "images.build.progress", "requestId": cmd.id, "data": { "line": line } });
            fx.agent.send_json(&event).await;
        }
        answer(
            &mut fx.agent,
            &cmd,
            json!({ "imageId": "sha-1", "tag": "localhost/tool:1" }),
        )
        .await;
        let (status, body) = task.await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["log"],
            json!(["STEP 1/1: FROM scratch", "COMMIT localhost/tool:1"])
        );

        // The agent's own error crosses as its status and code.
        let stop = Some(json!({}));
        let task = spawn_admin(a.addr, "POST", "/v1/containers/job-1/stop".into(), stop);
        let cmd = next_command(&mut fx.agent).await;
        answer_error(&mut fx.agent, &cmd, "engine_failed", "podman said no").await;
        let (status, body) = task.await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (502, Some("engine_failed")),
            "{body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("podman said no"),
            "{body}"
        );

        // The replica that took the calls audits and counts them; b relays.
        let (status, audit) = a
            .admin("GET", &format!("/v1/audit?tenantId={tenant}"), None)
            .await;
        assert_eq!(status, 200, "{audit}");
        let commands: Vec<&str> = audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "command")
            .filter_map(|e| e["action"].as_str())
            .collect();
        for ty in [
            "container.create",
            "container.start",
            "container.exec",
            "container.stop",
        ] {
            assert!(commands.contains(&ty), "no {ty} in {audit}");
        }
        let series = "crops_commands_total{type=\"container.exec\",outcome=\"ok\"}";
        assert_eq!(metric(&metrics(&a).await, series), 1);
        let on_b = metrics(&fx.server).await;
        assert!(
            !on_b.contains(series),
            "b counted a relayed command: {on_b}"
        );

        // A credential rotation made on a reaches the agent through b.
        let path = format!("/v1/workers/{worker}/rotate-credential");
        let (status, body, cmd) = relayed(
            &a,
            &mut fx.agent,
            ("POST", path, None),
            "worker.rotate-credential",
            json!({}),
        )
        .await;
        assert_eq!((status, &body["id"]), (200, &json!(worker)), "{body}");
        assert!(cmd.data["credential"]
            .as_str()
            .unwrap()
            .starts_with("crops_wkr_"));

        // A revoke on a closes the socket on b, at once.
        let (status, _) = a
            .admin("POST", &format!("/v1/workers/{worker}/revoke"), None)
            .await;
        assert_eq!(status, 200);
        let (code, _) = fx.agent.expect_close(Duration::from_secs(1)).await;
        assert_eq!(code, 4001);
        a.stop().await;
        fx.server.stop().await;
    });
}

#[test]
fn peer_routes_refuse_anyone_without_the_peer_key() {
    smol::block_on(async {
        let url = postgres::database();
        let a = Server::start_in(temp_dir("routing-key"), on(&url)).await;
        let single = Server::start("routing-single").await;
        let body = json!({ "workerId": "w", "code": 4001, "reason": "x" }).to_string();
        for server in [&a, &single] {
            let admin = format!("Bearer {ADMIN}");
            for auth in [None, Some(admin.as_str()), Some("Bearer crops_peer_00")] {
                let headers: Vec<(&str, &str)> =
                    auth.iter().map(|a| ("Authorization", *a)).collect();
                let (status, reply) = http(
                    server.addr,
                    "POST",
                    "/internal/v1/close",
                    &headers,
                    Some(body.clone()),
                )
                .await;
                assert_eq!(status, 401, "{auth:?}: {reply}");
            }
        }
        a.stop().await;
        single.stop().await;
    });
}

#[test]
fn a_worker_that_left_another_replica_is_offline_here_and_nothing_is_recorded() {
    smol::block_on(async {
        let url = postgres::database();
        let quick = || Options {
            database: Some(url.clone()),
            heartbeat_secs: 1,
            ..Options::default()
        };
        let a = Server::start_in(temp_dir("routing-left-a"), quick()).await;
        let b = Server::start_in(temp_dir("routing-left-b"), quick()).await;
        let fx = Fixture::on(b, "left").await;
        let (worker, tenant) = (fx.worker_id.clone(), fx.tenant_id.clone());
        // The agent goes; b lives on, and still reads as the owner.
        fx.agent.close().await;
        a.wait_worker(&worker, "the worker offline, seen from a", |w| {
            w["status"] == "offline"
        })
        .await;
        let create = json!({ "id": "never", "tenantId": tenant, "workerId": worker, "name": "n", "image": IMAGE });
        let (status, body) = a.admin("POST", "/v1/containers", Some(create)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("worker_offline")),
            "{body}"
        );
        let (status, _) = a.admin("GET", "/v1/containers/never", None).await;
        assert_eq!(
            status, 404,
            "a create for an unreachable worker left a record"
        );
        a.stop().await;
        fx.server.stop().await;
    });
}

#[test]
fn a_replica_that_refuses_the_relay_is_named_not_taken_for_an_offline_worker() {
    smol::block_on(async {
        let url = postgres::database();
        let a = Server::start_in(temp_dir("routing-key-a"), on(&url)).await;
        // b was started with another admin token: its peer key differs.
        let other = Options {
            admin_token: Some("crops_adm_another_token_for_b".into()),
            ..on(&url)
        };
        let b = Server::start_in(temp_dir("routing-key-b"), other).await;
        // Enrolled through a (whose admin token the harness holds), then
        // connected to b.
        let (worker, credential) = a.enrolled("keyed").await;
        let mut agent = Agent::connect(b.addr, &credential).await;
        agent.register("keyed").await;
        a.wait_worker(&worker, "the worker online, seen from a", |w| {
            w["status"] == "online"
        })
        .await;
        let path = format!("/v1/workers/{worker}/images");
        let (status, body) = a.admin("GET", &path, None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (502, Some("replica_error")),
            "{body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("401"), "{message}");
        agent.close().await;
        a.stop().await;
        b.stop().await;
    });
}
