//! Request bodies: every route that takes a JSON body takes a JSON object.
//! An absent or empty body, `[]`, `null` or any other JSON value is 400
//! `bad_request` and changes nothing (no command reaches the worker); `{}`
//! asks for every default where every field is optional.

use std::time::Duration;

use serde_json::json;

use crate::fake::*;
use crate::harness::*;
use crate::people::*;

/// Every (method, path pattern) of the OpenAPI document with a JSON body.
async fn json_routes(server: &Server) -> Vec<(String, String)> {
    let (status, doc) = server.admin("GET", "/openapi.json", None).await;
    assert_eq!(status, 200, "{doc}");
    let mut routes = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        // Replicas' routes refuse the admin token before reading a body
        // (routing.rs); they parse bodies with the same reader.
        if path.starts_with("/internal/") {
            continue;
        }
        for (method, op) in ops.as_object().unwrap() {
            if op["requestBody"]["content"]["application/json"].is_object() {
                routes.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

#[test]
fn every_json_body_must_be_an_object() {
    smol::block_on(async {
        // Short deadlines: a body wrongly taken for `{}` would reach the
        // worker and answer 504 quickly, not hang the test.
        let quick = Duration::from_millis(400);
        let opts = Options {
            timeouts: orchestrator::Timeouts {
                create: quick,
                exec_grace: quick,
                build: quick,
                command: quick,
            },
            ..Options::default()
        };
        let mut fx = Fixture::start_with("bodies", opts).await;
        fx.create("job-1", "dev").await;
        let org = default_org(&fx.server).await;
        let member = person(&fx.server, &org, "bo", "member", &[]).await;
        let values = [
            ("containerId", "job-1"),
            ("tenantId", fx.tenant_id.as_str()),
            ("workerId", fx.worker_id.as_str()),
            ("orgId", org.as_str()),
            ("memberId", member.id.as_str()),
        ];
        let routes = json_routes(&fx.server).await;
        for stop in [
            "/v1/containers/{containerId}/stop",
            "/v1/tenants/{tenantId}/join-tokens",
        ] {
            assert!(routes.iter().any(|(_, p)| p == stop), "{routes:?}");
        }
        let auth = format!("Bearer {ADMIN}");
        let headers = [("Authorization", auth.as_str())];
        for (method, pattern) in &routes {
            let path = fill(pattern, &values);
            for bad in ["", " \n", "[]", "[{}]", "null", "\"{}\"", "1", "true"] {
                let (status, reply) =
                    http(fx.server.addr, method, &path, &headers, Some(bad.into())).await;
                assert_eq!(
                    (status, &reply["error"]["code"]),
                    (400, &json!("bad_request")),
                    "{method} {path} with {bad:?}: {reply}"
                );
                let message = reply["error"]["message"].as_str().unwrap();
                assert!(
                    message.contains("JSON object"),
                    "{method} {path}: {message}"
                );
            }
        }
        // None of it reached the worker.
        fx.assert_nothing_sent().await;

        // `{}` is every default where every field is optional.
        let stopped = json!({ "containerId": "job-1", "state": "exited" });
        let stop = Some(json!({}));
        let (status, body, _) = fx
            .relay(
                "POST",
                "/v1/containers/job-1/stop",
                stop,
                "container.stop",
                stopped,
            )
            .await;
        assert_eq!((status, &body["state"]), (200, &json!("exited")), "{body}");
        let path = format!("/v1/tenants/{}/join-tokens", fx.tenant_id);
        let (status, token) = fx.server.admin("POST", &path, Some(json!({}))).await;
        assert_eq!(status, 201, "{token}");
        fx.stop().await;
    });
}
