//! Worker administration: fleet enrolment and who a worker serves, cordon
//! and drain, deletion, and credential rotation over the live connection,
//! each with the fake agent playing the worker.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fake::*;
use crate::harness::*;

/// What the agent endpoint says to `credential` without upgrade headers:
/// 400 for a good credential (checked first), 401 for a refused one.
async fn credential_status(server: &Server, credential: &str) -> (u16, Value) {
    let bearer = format!("Bearer {credential}");
    http(
        server.addr,
        "GET",
        "/v1/agent",
        &[("Authorization", &bearer)],
        None,
    )
    .await
}

async fn fleet_token(server: &Server, body: Value) -> (u16, Value) {
    server
        .admin("POST", "/v1/fleet/join-tokens", Some(body))
        .await
}

/// Register on `agent` with `mode`; the reply.
async fn register_as(agent: &mut Agent, mode: &str) -> Value {
    let mut msg = register_msg("r-mode", 1);
    msg["data"]["mode"] = json!(mode);
    agent.send_json(&msg).await;
    agent.recv_json().await
}

#[test]
fn fleet_tokens_enrol_fleet_workers_that_serve_every_tenant() {
    smol::block_on(async {
        let server = Server::start("fleet").await;
        for bad in [
            json!({ "region": "EU West" }),
            json!({ "region": "eu-west", "platform": "amiga" }),
            json!({ "region": "eu-west", "ttlSecs": 0 }),
            json!({ "region": "eu-west", "tenantId": "x" }),
            json!({}),
        ] {
            let (status, body) = fleet_token(&server, bad.clone()).await;
            assert_error(status, &body, 400, "bad_request");
        }
        let (status, body) = http(
            server.addr,
            "POST",
            "/v1/fleet/join-tokens",
            &[],
            Some(json!({ "region": "eu-west" }).to_string()),
        )
        .await;
        assert_error(status, &body, 401, "unauthorized");

        let (status, token) =
            fleet_token(&server, json!({ "region": "eu-west", "platform": "linux" })).await;
        assert_eq!(status, 201, "{token}");
        assert_eq!(
            (token["mode"].as_str(), token["region"].as_str()),
            (Some("fleet"), Some("eu-west"))
        );
        let (status, enrolled) = server
            .enroll(token["token"].as_str().unwrap(), "greenhouse-1")
            .await;
        assert_eq!(status, 201, "{enrolled}");
        assert_eq!(enrolled["mode"], "fleet");
        assert_eq!(enrolled["region"], "eu-west");
        assert_eq!(enrolled["tenantId"], Value::Null);
        let id = enrolled["workerId"].as_str().unwrap().to_owned();
        let credential = enrolled["credential"].as_str().unwrap().to_owned();
        let w = server.worker(&id).await;
        assert_eq!(
            (&w["mode"], &w["region"], &w["platform"], &w["tenantId"]),
            (
                &json!("fleet"),
                &json!("eu-west"),
                &json!("linux"),
                &Value::Null
            ),
            "{w}"
        );
        assert_eq!(
            (&w["cordoned"], &w["draining"], &w["deleted"]),
            (&json!(false), &json!(false), &json!(false))
        );
        // The token is single-use, like a tenant's.
        let (status, _) = server
            .enroll(token["token"].as_str().unwrap(), "greenhouse-2")
            .await;
        assert_eq!(status, 401);

        // The enrolment decides the mode: a register claiming byom is refused.
        let mut agent = Agent::connect(server.addr, &credential).await;
        let reply = register_as(&mut agent, "byom").await;
        assert_eq!(reply["data"]["code"], "forbidden", "{reply}");
        let (code, _) = agent.expect_close(Duration::from_secs(5)).await;
        assert_eq!(code, 4000);
        let mut agent = Agent::connect(server.addr, &credential).await;
        assert_eq!(
            register_as(&mut agent, "fleet").await["type"],
            "worker.accepted"
        );

        // It serves every tenant.
        for name in ["tenant-a", "tenant-b"] {
            let tenant = server.tenant(name).await;
            let body = json!({
                "id": format!("c-{name}"), "tenantId": tenant, "workerId": id,
                "name": name, "image": IMAGE,
            });
            let task = spawn_admin(server.addr, "POST", "/v1/containers".into(), Some(body));
            let cmd = next_command(&mut agent).await;
            assert_eq!(
                (cmd.ty.as_str(), &cmd.data["tenantId"]),
                ("container.create", &json!(tenant))
            );
            let id = cmd.data["containerId"].as_str().unwrap().to_owned();
            let created =
                json!({ "container": info(&id, &tenant, name, "created"), "created": true });
            answer(&mut agent, &cmd, created).await;
            let (status, body) = task.await;
            assert_eq!(status, 201, "{body}");
        }

        // A byom worker claiming fleet is refused too: it cannot widen its reach.
        let (byom_id, byom_credential) = server.enrolled("nas").await;
        let mut byom = Agent::connect(server.addr, &byom_credential).await;
        let reply = register_as(&mut byom, "fleet").await;
        assert_eq!(reply["data"]["code"], "forbidden", "{reply}");
        assert!(
            reply["data"]["message"].as_str().unwrap().contains("byom"),
            "{reply}"
        );
        let w = server.worker(&byom_id).await;
        assert_eq!(
            (&w["mode"], w["tenantId"].is_string()),
            (&json!("byom"), true),
            "{w}"
        );
        agent.close().await;
        server.stop().await;
    });
}

#[test]
fn cordon_refuses_new_containers_and_drain_refuses_all_new_work() {
    smol::block_on(async {
        let mut f = Fixture::start("cordon").await;
        f.create("c1", "one").await;
        let worker = format!("/v1/workers/{}", f.worker_id);

        let (status, w) = f
            .server
            .admin("POST", &format!("{worker}/cordon"), None)
            .await;
        assert_eq!(
            (status, &w["cordoned"], &w["draining"]),
            (200, &json!(true), &json!(false)),
            "{w}"
        );
        let (status, body) = f
            .server
            .admin("POST", "/v1/containers", Some(f.create_body("c2", "two")))
            .await;
        assert_error(status, &body, 409, "worker_cordoned");
        // Everything but placing containers still works on a cordoned worker.
        let exec = json!({ "command": ["true"] });
        let done = json!({ "exitCode": 0, "stdout": "", "stderr": "", "stdoutTruncated": false, "stderrTruncated": false, "timedOut": false });
        let (status, body, _) = f
            .relay(
                "POST",
                "/v1/containers/c1/exec",
                Some(exec.clone()),
                "container.exec",
                done.clone(),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, w) = f
            .server
            .admin("POST", &format!("{worker}/uncordon"), None)
            .await;
        assert_eq!((status, &w["cordoned"]), (200, &json!(false)), "{w}");
        f.create("c2", "two").await;

        let (status, w) = f
            .server
            .admin("POST", &format!("{worker}/drain"), None)
            .await;
        assert_eq!((status, &w["draining"]), (200, &json!(true)), "{w}");
        assert_eq!(f.server.worker(&f.worker_id).await["draining"], true);
        let refused: Vec<(&str, String, Value)> = vec![
            (
                "POST",
                "/v1/containers".into(),
                f.create_body("c3", "three"),
            ),
            (
                "POST",
                "/v1/containers/c1/setup".into(),
                json!({ "files": [] }),
            ),
            ("POST", "/v1/containers/c1/exec".into(), exec.clone()),
            (
                "POST",
                "/v1/containers/c1/background".into(),
                json!({ "command": ["sleep", "9"] }),
            ),
            (
                "POST",
                format!("{worker}/images"),
                json!({ "tag": "localhost/x:1", "containerfile": "FROM scratch\n" }),
            ),
        ];
        for (method, path, body) in refused {
            let (status, answer) = f.server.admin(method, &path, Some(body)).await;
            assert_error(status, &answer, 409, "worker_draining");
        }
        f.assert_nothing_sent().await;
        // Running containers stay, and stop, remove and listings still work.
        let stopped = json!({ "containerId": "c1", "state": "exited" });
        let (status, body, _) = f
            .relay(
                "POST",
                "/v1/containers/c1/stop",
                Some(json!({})),
                "container.stop",
                stopped,
            )
            .await;
        assert_eq!((status, &body["state"]), (200, &json!("exited")), "{body}");
        let removed = json!({ "containerId": "c2", "state": "removed" });
        let (status, body, _) = f
            .relay(
                "DELETE",
                "/v1/containers/c2",
                None,
                "container.remove",
                removed,
            )
            .await;
        assert_eq!((status, &body["state"]), (200, &json!("removed")), "{body}");
        assert_eq!(f.containers().await.len(), 2);
        let (status, w) = f
            .server
            .admin("POST", &format!("{worker}/undrain"), None)
            .await;
        assert_eq!((status, &w["draining"]), (200, &json!(false)), "{w}");
        let (status, body, _) = f
            .relay(
                "POST",
                "/v1/containers/c1/exec",
                Some(exec),
                "container.exec",
                done,
            )
            .await;
        assert_eq!(status, 200, "{body}");

        let unknown = "/v1/workers/0b4f6a0e-3c1d-4e2a-9f00-1234567890ab/drain";
        let (status, body) = f.server.admin("POST", unknown, None).await;
        assert_error(status, &body, 404, "not_found");
        f.stop().await;
    });
}

#[test]
fn deleting_a_worker_revokes_it_closes_its_socket_within_a_second_and_keeps_the_record() {
    smol::block_on(async {
        let mut f = Fixture::start("delete").await;
        let path = format!("/v1/workers/{}", f.worker_id);
        let (status, w) = f.server.admin("DELETE", &path, None).await;
        assert_eq!(status, 200, "{w}");
        assert_eq!(
            (&w["deleted"], &w["revoked"]),
            (&json!(true), &json!(true)),
            "{w}"
        );
        let deleted_at = w["deletedAt"].as_u64().expect("deletedAt");
        let (code, reason) = f.agent.expect_close(Duration::from_secs(1)).await;
        assert_eq!((code, reason.as_str()), (4001, "worker deleted"));

        let (status, body) = credential_status(&f.server, &f.credential).await;
        assert_error(status, &body, 401, "unauthorized");
        // Kept, for audit; deleting again changes nothing.
        let w = f.server.worker(&f.worker_id).await;
        assert_eq!(
            (&w["deleted"], &w["status"]),
            (&json!(true), &json!("offline")),
            "{w}"
        );
        let (status, again) = f.server.admin("DELETE", &path, None).await;
        assert_eq!(
            (status, again["deletedAt"].as_u64()),
            (200, Some(deleted_at))
        );
        let (status, body) = f
            .server
            .admin("POST", &format!("{path}/cordon"), None)
            .await;
        assert_error(status, &body, 409, "conflict");
        let (status, body) = f
            .server
            .admin("POST", "/v1/containers", Some(f.create_body("c1", "one")))
            .await;
        assert_error(status, &body, 409, "conflict");
        f.server.assert_still_serves().await;
        f.server.stop().await;
    });
}

/// Start a rotation and read the command the agent gets: (request, command).
async fn start_rotation(f: &mut Fixture) -> (smol::Task<(u16, Value)>, Cmd) {
    let path = format!("/v1/workers/{}/rotate-credential", f.worker_id);
    let task = f.spawn("POST", &path, None);
    let cmd = next_command(&mut f.agent).await;
    assert_eq!(cmd.ty, "worker.rotate-credential", "{cmd:?}");
    (task, cmd)
}

#[test]
fn a_rotation_swaps_the_credential_after_the_agents_reply_and_keeps_the_connection() {
    smol::block_on(async {
        let mut f = Fixture::start("rotate").await;
        let (task, cmd) = start_rotation(&mut f).await;
        let new = cmd.data["credential"].as_str().unwrap().to_owned();
        assert!(new.starts_with("crops_wkr_") && new != f.credential);
        // Until the agent answers, the old credential still works.
        let (status, _) = credential_status(&f.server, &f.credential).await;
        assert_eq!(status, 400);
        answer(&mut f.agent, &cmd, json!({})).await;
        let (status, w) = task.await;
        assert_eq!((status, &w["id"]), (200, &json!(f.worker_id)), "{w}");

        // The old credential is refused from now on; this connection stays.
        let (status, body) = credential_status(&f.server, &f.credential).await;
        assert_error(status, &body, 401, "unauthorized");
        f.assert_nothing_sent().await;
        assert_eq!(f.server.worker(&f.worker_id).await["status"], "online");
        // The agent's next connection uses the new one.
        f.credential = new;
        f.reconnect().await;
        f.assert_nothing_sent().await;
        f.stop().await;
    });
}

#[test]
fn a_rotation_of_an_offline_worker_is_503_and_changes_nothing() {
    smol::block_on(async {
        let server = Server::start("rotate-offline").await;
        let (id, credential) = server.enrolled("nas").await;
        let path = format!("/v1/workers/{id}/rotate-credential");
        let (status, body) = server.admin("POST", &path, None).await;
        assert_error(status, &body, 503, "worker_offline");
        let mut agent = Agent::connect(server.addr, &credential).await;
        assert_eq!(agent.register("r-1").await["type"], "worker.accepted");
        agent.close().await;
        let unknown = "/v1/workers/0b4f6a0e-3c1d-4e2a-9f00-1234567890ab/rotate-credential";
        let (status, body) = server.admin("POST", unknown, None).await;
        assert_error(status, &body, 404, "not_found");
        server.stop().await;
    });
}

#[test]
fn a_refused_rotation_keeps_the_old_credential_and_drops_the_new() {
    smol::block_on(async {
        let mut f = Fixture::start("rotate-refused").await;
        let (task, cmd) = start_rotation(&mut f).await;
        let new = cmd.data["credential"].as_str().unwrap().to_owned();
        answer_error(
            &mut f.agent,
            &cmd,
            "unsupported",
            "no config file to store it in",
        )
        .await;
        let (status, body) = task.await;
        assert_error(status, &body, 501, "unsupported");
        let (status, body) = credential_status(&f.server, &new).await;
        assert_error(status, &body, 401, "unauthorized");
        let (status, _) = credential_status(&f.server, &f.credential).await;
        assert_eq!(status, 400, "the old credential still works");
        f.stop().await;
    });
}

#[test]
fn an_unanswered_rotation_completes_when_the_agent_presents_the_new_credential() {
    smol::block_on(async {
        let opts = Options {
            timeouts: orchestrator::Timeouts {
                command: Duration::from_millis(300),
                ..orchestrator::Timeouts::default()
            },
            ..Options::default()
        };
        let mut f = Fixture::start_with("rotate-lost", opts).await;
        let (task, cmd) = start_rotation(&mut f).await;
        let new = cmd.data["credential"].as_str().unwrap().to_owned();
        // The agent stored it but its answer never came.
        let (status, body) = task.await;
        assert_error(status, &body, 504, "timeout");
        let old = std::mem::replace(&mut f.credential, new);
        f.reconnect().await;
        let (status, body) = credential_status(&f.server, &old).await;
        assert_error(status, &body, 401, "unauthorized");
        f.assert_nothing_sent().await;
        f.stop().await;
    });
}

#[test]
fn the_cli_drains_cordons_plans_and_mints_fleet_tokens() {
    smol::block_on(async {
        let server = Server::start("cli-workers").await;
        let (id, _) = server.enrolled("nas").await;
        let tenant = server.worker(&id).await["tenantId"]
            .as_str()
            .unwrap()
            .to_owned();
        let url = format!("http://{}", server.addr);
        let cli = |args: &[&str]| {
            let mut all = args.to_vec();
            all.extend(["--url", &url, "--admin-token", ADMIN]);
            crate::harness::cli(&all)
        };
        cli(&["worker", "drain", &id]).await.unwrap();
        cli(&["worker", "cordon", &id, "--json"]).await.unwrap();
        let w = server.worker(&id).await;
        assert_eq!(
            (&w["draining"], &w["cordoned"]),
            (&json!(true), &json!(true)),
            "{w}"
        );
        cli(&["tenant", "plan", &tenant, "--name", "pro"])
            .await
            .unwrap();
        let (_, tenants) = server.admin("GET", "/v1/tenants", None).await;
        assert!(tenants["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == tenant.as_str() && t["plan"]["name"] == "pro"));
        cli(&["fleet", "join-token", "--region", "eu-west-1"])
            .await
            .unwrap();
        cli(&["worker", "delete", &id]).await.unwrap();
        assert_eq!(server.worker(&id).await["deleted"], true);
        let err = cli(&["tenant", "plan", &tenant, "--name", "gold"])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("custom"), "{err}");
        server.stop().await;
    });
}
