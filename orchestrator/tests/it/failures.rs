//! No HTTP request hangs: an offline worker is 503 at once, silence is 504
//! after the command's timeout, a dropped connection is 503 promptly, agent
//! errors map to their statuses, and a slow command never blocks another
//! on the same worker.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::fake::*;
use crate::harness::*;

fn short_timeouts() -> Options {
    Options {
        timeouts: orchestrator::Timeouts {
            create: Duration::from_millis(400),
            exec_grace: Duration::from_millis(400),
            build: Duration::from_millis(400),
            command: Duration::from_millis(400),
        },
        ..Options::default()
    }
}

#[test]
fn an_offline_worker_answers_503_at_once_and_records_nothing() {
    smol::block_on(async {
        let server = Server::start("offline").await;
        let (worker_id, _) = server.enrolled("never-connected").await;
        let tenant_id = server.worker(&worker_id).await["tenantId"].clone();
        let body = json!({
            "id": "job-1", "tenantId": tenant_id, "workerId": worker_id,
            "name": "dev", "image": IMAGE
        });
        let started = Instant::now();
        let (code, reply) = server.admin("POST", "/v1/containers", Some(body)).await;
        assert_error(code, &reply, 503, "worker_offline");
        let path = format!("/v1/workers/{worker_id}/images");
        let (code, reply) = server.admin("GET", &path, None).await;
        assert_error(code, &reply, 503, "worker_offline");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let path = format!("/v1/containers?tenantId={}", tenant_id.as_str().unwrap());
        let (code, list) = server.admin("GET", &path, None).await;
        assert_eq!((code, list), (200, json!({ "containers": [] })));
        server.stop().await;
    });
}

#[test]
fn an_agent_that_never_answers_gets_504_after_the_timeout() {
    smol::block_on(async {
        let mut fx = Fixture::start_with("silent-agent", short_timeouts()).await;
        // A create without an answer: 504, and the record stays `creating`.
        let task = fx.spawn(
            "POST",
            "/v1/containers",
            Some(fx.create_body("job-1", "dev")),
        );
        let cmd = next_command(&mut fx.agent).await;
        assert_eq!(cmd.ty, "container.create");
        let (code, body) = task.await;
        assert_error(code, &body, 504, "timeout");
        let record = fx.container("job-1").await;
        assert_eq!(record["state"], "creating");
        assert!(
            record["lastError"]
                .as_str()
                .unwrap()
                .contains("did not answer"),
            "{record}"
        );

        // A late answer is dropped harmlessly; a retry completes the create.
        let created = json!({ "container": info("job-1", &fx.tenant_id, "dev", "created"), "created": false });
        answer(&mut fx.agent, &cmd, created.clone()).await;
        let task = fx.spawn(
            "POST",
            "/v1/containers",
            Some(fx.create_body("job-1", "dev")),
        );
        let cmd = next_command(&mut fx.agent).await;
        assert_eq!(cmd.ty, "container.create");
        answer(&mut fx.agent, &cmd, created).await;
        let (code, body) = task.await;
        assert_eq!(
            (code, body["state"].as_str()),
            (200, Some("created")),
            "{body}"
        );
        assert_eq!(body["lastError"], serde_json::Value::Null);

        // Other commands: 504 after their own timeout.
        let started = Instant::now();
        let task = fx.spawn("POST", "/v1/containers/job-1/start", None);
        let _ignored = next_command(&mut fx.agent).await;
        let (code, body) = task.await;
        assert_error(code, &body, 504, "timeout");
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(fx.container("job-1").await["state"], "created");
        fx.stop().await;
    });
}

#[test]
fn an_agent_disconnecting_mid_request_gets_503_promptly() {
    smol::block_on(async {
        // Default timeouts (60 s and more): only the disconnect can end these.
        let mut fx = Fixture::start("disconnect").await;
        fx.create("job-1", "dev").await;
        let started = Instant::now();
        let exec = fx.spawn(
            "POST",
            "/v1/containers/job-1/exec",
            Some(json!({ "command": ["sleep", "30"] })),
        );
        let start = fx.spawn("POST", "/v1/containers/job-1/start", None);
        let first = next_command(&mut fx.agent).await;
        let second = next_command(&mut fx.agent).await;
        let mut types = [first.ty, second.ty];
        types.sort();
        assert_eq!(types, ["container.exec", "container.start"]);
        let Fixture { server, agent, .. } = fx;
        drop(agent);
        let (code, body) = exec.await;
        assert_error(code, &body, 503, "worker_disconnected");
        let (code, body) = start.await;
        assert_error(code, &body, 503, "worker_disconnected");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );

        // A create cut off the same way stays `creating` for the reconcile.
        let mut fx = Fixture::on(server, "second").await;
        let task = fx.spawn(
            "POST",
            "/v1/containers",
            Some(fx.create_body("job-2", "dev")),
        );
        let cmd = next_command(&mut fx.agent).await;
        assert_eq!(cmd.ty, "container.create");
        let Fixture { server, agent, .. } = fx;
        drop(agent);
        let (code, body) = task.await;
        assert_error(code, &body, 503, "worker_disconnected");
        let (_, record) = server.admin("GET", "/v1/containers/job-2", None).await;
        assert_eq!(record["state"], "creating", "{record}");
        server.stop().await;
    });
}

#[test]
fn agent_error_replies_map_to_http_statuses() {
    smol::block_on(async {
        let mut fx = Fixture::start("agent-errors").await;
        // A create the agent refuses: the record is `failed` with the reason.
        let task = fx.spawn(
            "POST",
            "/v1/containers",
            Some(fx.create_body("job-0", "dev")),
        );
        let cmd = next_command(&mut fx.agent).await;
        answer_error(
            &mut fx.agent,
            &cmd,
            "not_found",
            "image localhost/busybox:latest is not on this worker",
        )
        .await;
        let (code, body) = task.await;
        assert_error(code, &body, 404, "not_found");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is not on this worker"));
        let record = fx.container("job-0").await;
        assert_eq!(record["state"], "failed");
        assert!(record["lastError"]
            .as_str()
            .unwrap()
            .contains("is not on this worker"));

        fx.create("job-1", "dev").await;
        let cases = [
            ("invalid_argument", 400),
            ("forbidden", 403),
            ("conflict", 409),
            ("engine_failed", 502),
            ("unavailable", 503),
            ("timeout", 504),
            ("internal", 502),
        ];
        for (code_name, status) in cases {
            let task = fx.spawn(
                "POST",
                "/v1/containers/job-1/exec",
                Some(json!({ "command": ["true"] })),
            );
            let cmd = next_command(&mut fx.agent).await;
            answer_error(&mut fx.agent, &cmd, code_name, "podman said no").await;
            let (code, body) = task.await;
            assert_error(code, &body, status, code_name);
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("podman said no"),
                "{body}"
            );
        }
        // A start the worker cannot find: 404, and the record is `lost`.
        let task = fx.spawn("POST", "/v1/containers/job-1/start", None);
        let cmd = next_command(&mut fx.agent).await;
        answer_error(&mut fx.agent, &cmd, "not_found", "no such container").await;
        let (code, body) = task.await;
        assert_error(code, &body, 404, "not_found");
        assert_eq!(fx.container("job-1").await["state"], "lost");
        // A reply of the wrong type is a bad gateway, not a crash.
        let task = fx.spawn("POST", "/v1/containers/job-1/start", None);
        let cmd = next_command(&mut fx.agent).await;
        let wrong =
            json!({ "type": "images.list.result", "requestId": cmd.id, "data": { "images": [] } });
        fx.agent.send_json(&wrong).await;
        let (code, body) = task.await;
        assert_error(code, &body, 502, "bad_reply");
        fx.server.assert_still_serves().await;
        fx.stop().await;
    });
}

#[test]
fn a_slow_exec_does_not_block_a_stop_on_the_same_worker() {
    smol::block_on(async {
        let mut fx = Fixture::start("concurrency").await;
        fx.create("job-1", "dev").await;
        let exec = fx.spawn(
            "POST",
            "/v1/containers/job-1/exec",
            Some(json!({ "command": ["sleep", "600"], "timeoutSecs": 600 })),
        );
        let slow = next_command(&mut fx.agent).await;
        assert_eq!(slow.ty, "container.exec");
        let stopped = json!({ "containerId": "job-1", "state": "exited" });
        let (code, body, _) = fx
            .relay(
                "POST",
                "/v1/containers/job-1/stop",
                Some(json!({})),
                "container.stop",
                stopped,
            )
            .await;
        assert_eq!(
            (code, body["state"].as_str()),
            (200, Some("exited")),
            "{body}"
        );
        assert!(
            !exec.is_finished(),
            "the exec was answered before its reply"
        );
        let result = json!({ "exitCode": 137, "stdout": "", "stderr": "" });
        answer(&mut fx.agent, &slow, result).await;
        let (code, body) = exec.await;
        assert_eq!(
            (code, body["exitCode"].as_i64()),
            (200, Some(137)),
            "{body}"
        );
        fx.stop().await;
    });
}

#[test]
fn a_byom_worker_serves_only_its_own_tenant() {
    smol::block_on(async {
        let mut fx = Fixture::start("byom").await;
        let stranger = fx.server.tenant("stranger").await;
        let mut body = fx.create_body("job-1", "dev");
        body["tenantId"] = json!(stranger);
        let (code, reply) = fx.server.admin("POST", "/v1/containers", Some(body)).await;
        assert_error(code, &reply, 403, "forbidden");
        let path = format!("/v1/workers/{}/images", fx.worker_id);
        let build = json!({ "tag": "localhost/x:1", "containerfile": "FROM scratch\n", "tenantId": stranger });
        let (code, reply) = fx.server.admin("POST", &path, Some(build)).await;
        assert_error(code, &reply, 403, "forbidden");
        fx.assert_nothing_sent().await;
        fx.stop().await;
    });
}

/// Replies the orchestrator asked for never count against the agent's
/// message allowance: 400 answered requests (twice the burst) in a row keep
/// the connection, where 400 unsolicited messages would close it (4008).
#[test]
fn solicited_replies_never_trip_the_rate_limit() {
    smol::block_on(async {
        let mut fx = Fixture::start("solicited").await;
        fx.create("job-1", "dev").await;
        let calls: Vec<_> = (0..400)
            .map(|_| fx.spawn("GET", "/v1/containers/job-1/stats", None))
            .collect();
        for _ in 0..400 {
            let cmd = next_command(&mut fx.agent).await;
            assert_eq!(cmd.ty, "container.stats");
            let stats = json!({ "stats": [{
                "containerId": "job-1", "cpuPercent": 1.0, "memoryUsed": 4096, "pids": 1
            }] });
            answer(&mut fx.agent, &cmd, stats).await;
        }
        for call in calls {
            let (code, body) = call.await;
            assert_eq!(code, 200, "{body}");
        }
        // Still the same connection: one more request is relayed.
        let (code, body, _) = fx
            .relay("GET", "/v1/containers/job-1/stats", None, "container.stats",
                json!({ "stats": [{ "containerId": "job-1", "cpuPercent": 1.0, "memoryUsed": 1, "pids": 1 }] }))
            .await;
        assert_eq!(code, 200, "{body}");
        fx.stop().await;
    });
}

/// A reply naming a pending request that does not decode (a field missing,
/// no `type`, an unknown `type`) fails that request at once with 502
/// `bad_reply` naming what was wrong, instead of leaving it to its
/// deadline; the agent is told too, and the connection stays.
#[test]
fn an_undecodable_reply_fails_its_request_at_once() {
    smol::block_on(async {
        // Deadlines of an hour: an answer within the HTTP helper's 10 s
        // can only be the broken reply's doing.
        let hour = Duration::from_secs(3600);
        let opts = Options {
            timeouts: orchestrator::Timeouts {
                create: hour,
                exec_grace: hour,
                build: hour,
                command: hour,
            },
            ..Options::default()
        };
        let mut fx = Fixture::start_with("undecodable", opts).await;
        fx.create("job-1", "dev").await;
        // Each broken reply (its requestId filled in) and what the error names.
        let broken = [
            (
                json!({ "type": "container.exec.result",
                    "data": { "exitCode": 0, "stderr": "" } }),
                "stdout",
            ),
            (
                json!({ "data": { "stdout": "" } }),
                "not a protocol envelope",
            ),
            (
                json!({ "type": "container.exec.outcome", "data": {} }),
                "container.exec.outcome",
            ),
        ];
        for (mut reply, named) in broken {
            let exec = Some(json!({ "command": ["true"] }));
            let task = fx.spawn("POST", "/v1/containers/job-1/exec", exec);
            let cmd = next_command(&mut fx.agent).await;
            assert_eq!(cmd.ty, "container.exec");
            reply["requestId"] = json!(cmd.id);
            fx.agent.send_json(&reply).await;
            let (code, body) = task.await;
            assert_error(code, &body, 502, "bad_reply");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(named), "{message}");
            assert!(message.contains("container.exec"), "{message}");
            // The agent hears why its message was refused.
            let told = fx.agent.recv_json().await;
            assert_eq!(
                (&told["type"], &told["requestId"]),
                (&json!("error"), &json!(cmd.id)),
                "{told}"
            );
        }
        // The same connection still carries commands.
        let result = json!({ "exitCode": 0, "stdout": "ok\n", "stderr": "" });
        let exec = Some(json!({ "command": ["echo", "ok"] }));
        let (code, body, _) = fx
            .relay(
                "POST",
                "/v1/containers/job-1/exec",
                exec,
                "container.exec",
                result,
            )
            .await;
        assert_eq!((code, &body["stdout"]), (200, &json!("ok\n")), "{body}");
        fx.stop().await;
    });
}
