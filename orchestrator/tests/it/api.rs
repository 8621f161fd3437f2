//! The REST API: admin auth, enrolment and join tokens, the error shape.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

fn assert_error(status: u16, body: &serde_json::Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[test]
fn healthz_answers_anyone() {
    smol::block_on(async {
        let server = Server::start("healthz").await;
        let (status, body) = http(server.addr, "GET", "/healthz", &[], None).await;
        assert_eq!((status, body), (200, json!({ "status": "ok" })));
        server.stop().await;
    });
}

#[test]
fn admin_routes_refuse_missing_or_wrong_admin_token() {
    smol::block_on(async {
        let server = Server::start("admin-auth").await;
        let tenant = server.tenant("acme").await;
        let worker = "0b4f6a0e-3c1d-4e2a-9f00-1234567890ab";
        let routes = [
            (
                "POST",
                "/v1/tenants".to_owned(),
                Some(json!({ "name": "x" }).to_string()),
            ),
            ("GET", "/v1/tenants".to_owned(), None),
            (
                "POST",
                format!("/v1/tenants/{tenant}/join-tokens"),
                Some("{}".to_owned()),
            ),
            ("GET", "/v1/workers".to_owned(), None),
            ("POST", format!("/v1/workers/{worker}/revoke"), None),
        ];
        for (method, path, body) in &routes {
            let (status, reply) = http(server.addr, method, path, &[], body.clone()).await;
            assert_error(status, &reply, 401, "unauthorized");
            assert_eq!(reply["error"]["message"], "missing bearer token");
            let wrong = [("Authorization", "Bearer crops_adm_wrong")];
            let (status, reply) = http(server.addr, method, path, &wrong, body.clone()).await;
            assert_error(status, &reply, 401, "unauthorized");
            assert_eq!(reply["error"]["message"], "invalid token");
            let basic = [("Authorization", "Basic YWRtaW46YWRtaW4=")];
            let (status, reply) = http(server.addr, method, path, &basic, body.clone()).await;
            assert_error(status, &reply, 401, "unauthorized");
        }
        // Nothing was created by the refused requests.
        let (_, list) = server.admin("GET", "/v1/tenants", None).await;
        assert_eq!(list["tenants"].as_array().unwrap().len(), 1);
        server.stop().await;
    });
}

#[test]
fn tenants_are_created_and_listed() {
    smol::block_on(async {
        let server = Server::start("tenants").await;
        let before = now_ms();
        let (status, created) = server
            .admin("POST", "/v1/tenants", Some(json!({ "name": "acme" })))
            .await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["name"], "acme");
        assert!(created["createdAt"].as_u64().unwrap() >= before);
        let (status, dup) = server
            .admin("POST", "/v1/tenants", Some(json!({ "name": "acme" })))
            .await;
        assert_error(status, &dup, 409, "conflict");
        let (status, list) = server.admin("GET", "/v1/tenants", None).await;
        assert_eq!(status, 200);
        assert_eq!(list["tenants"], json!([created]));
        server.stop().await;
    });
}

#[test]
fn bad_requests_get_the_one_error_shape() {
    smol::block_on(async {
        let server = Server::start("bad-requests").await;
        let tenant = server.tenant("acme").await;
        let auth = format!("Bearer {ADMIN}");
        let admin = [("Authorization", auth.as_str())];
        let cases: Vec<(&str, String, Option<String>, u16, &str)> = vec![
            ("GET", "/nope".into(), None, 404, "not_found"),
            ("GET", "/v1/tenants/".into(), None, 404, "not_found"),
            (
                "DELETE",
                "/v1/tenants".into(),
                None,
                405,
                "method_not_allowed",
            ),
            ("GET", "/v1/enroll".into(), None, 405, "method_not_allowed"),
            (
                "POST",
                "/v1/tenants".into(),
                Some(r#"{"name":"a","extra":1}"#.into()),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/v1/tenants".into(),
                Some(r#"{"name":7}"#.into()),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/v1/tenants".into(),
                Some("{not json".into()),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/v1/tenants".into(),
                Some(r#"{"name":""}"#.into()),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/v1/tenants".into(),
                Some(r#"{"name":"a\u0007"}"#.into()),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/v1/tenants/../join-tokens".into(),
                Some("{}".into()),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/v1/tenants/..%2f..%2fetc/join-tokens".into(),
                Some("{}".into()),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/v1/tenants/0b4f6a0e-3c1d-4e2a-9f00-1234567890ab/join-tokens".into(),
                Some("{}".into()),
                404,
                "not_found",
            ),
            (
                "POST",
                format!("/v1/tenants/{tenant}/join-tokens"),
                Some(r#"{"ttlSecs":0}"#.into()),
                400,
                "bad_request",
            ),
            (
                "POST",
                format!("/v1/tenants/{tenant}/join-tokens"),
                Some(r#"{"ttlSecs":"x"}"#.into()),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/v1/workers/0b4f6a0e-3c1d-4e2a-9f00-1234567890ab/revoke".into(),
                None,
                404,
                "not_found",
            ),
            (
                "POST",
                "/v1/workers/not-an-id/revoke".into(),
                None,
                400,
                "bad_request",
            ),
        ];
        for (method, path, body, want, code) in cases {
            let (status, reply) = http(server.addr, method, &path, &admin, body).await;
            assert_eq!(status, want, "{method} {path}: {reply}");
            assert_eq!(reply["error"]["code"], code, "{method} {path}: {reply}");
        }
        // Oversized body: 413, whether or not the length is declared up front.
        let big = format!(r#"{{"name":"{}"}}"#, "a".repeat(70 * 1024));
        let (status, reply) = http(server.addr, "POST", "/v1/tenants", &admin, Some(big)).await;
        assert_error(status, &reply, 413, "payload_too_large");
        let (status, reply) = chunked_post(&server, &auth, 70 * 1024).await;
        assert_error(status, &reply, 413, "payload_too_large");
        server.assert_still_serves().await;
        server.stop().await;
    });
}

/// A POST whose body comes chunked, so its size is not known up front.
async fn chunked_post(server: &Server, auth: &str, size: usize) -> (u16, serde_json::Value) {
    let chunk = format!("{:x}\r\n{}\r\n0\r\n\r\n", size, "a".repeat(size));
    let headers = [("Authorization", auth), ("Transfer-Encoding", "chunked")];
    let (status, body) = http_raw(
        server.addr,
        "POST",
        "/v1/tenants",
        &headers,
        Some(chunk.as_bytes()),
    )
    .await;
    (status, serde_json::from_slice(&body).unwrap())
}

#[test]
fn a_join_token_works_once() {
    smol::block_on(async {
        let server = Server::start("join-once").await;
        let tenant = server.tenant("acme").await;
        let token = server.join_token(&tenant, None).await;
        assert_eq!(token["tenantId"], tenant.as_str());
        let expires = token["expiresAt"].as_u64().unwrap();
        assert!(
            expires > now_ms() + 3_500_000 && expires <= now_ms() + 3_600_000,
            "{token}"
        );
        let token = token["token"].as_str().unwrap();
        assert!(token.starts_with("crops_join_"));

        let (status, enrolled) = server.enroll(token, "nas").await;
        assert_eq!(status, 201, "{enrolled}");
        assert_eq!(enrolled["tenantName"], "acme");
        let (status, again) = server.enroll(token, "nas2").await;
        assert_error(status, &again, 401, "unauthorized");
        assert_eq!(again["error"]["message"], "join token already used");
        // Exactly one worker exists.
        assert_eq!(server.workers().await.len(), 1);

        // The free plan allows one self-hosted worker: a second token is
        // refused by the plan policy and stays unused.
        let second = server.join_token(&tenant, None).await["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, refused) = server.enroll(&second, "nas2").await;
        assert_error(status, &refused, 403, "plan_limit");
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(message.contains("self-hosted"), "{message}");
        let path = format!("/v1/tenants/{tenant}/plan");
        let (status, body) = server
            .admin("PUT", &path, Some(json!({ "name": "pro" })))
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, enrolled) = server.enroll(&second, "nas2").await;
        assert_eq!(status, 201, "the refused token still works: {enrolled}");

        // Under concurrency too: one winner among many.
        let token = server.join_token(&tenant, None).await["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let tries: Vec<_> = (0..8)
            .map(|i| {
                let (addr, token) = (server.addr, token.clone());
                smol::spawn(async move {
                    let body = json!({ "joinToken": token, "name": format!("racer-{i}") });
                    http(addr, "POST", "/v1/enroll", &[], Some(body.to_string()))
                        .await
                        .0
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for t in tries {
            statuses.push(t.await);
        }
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 401, 401, 401, 401, 401, 401, 401]);
        assert_eq!(server.workers().await.len(), 3);
        server.stop().await;
    });
}

#[test]
fn expired_and_unknown_join_tokens_are_refused() {
    smol::block_on(async {
        let server = Server::start("join-expired").await;
        let tenant = server.tenant("acme").await;
        let token = server.join_token(&tenant, Some(1)).await;
        let expires = token["expiresAt"].as_u64().unwrap();
        // Wait for the clock (not for the server) to pass the expiry.
        within(Duration::from_secs(5), "the token to expire", async {
            while now_ms() <= expires {
                smol::Timer::after(Duration::from_millis(50)).await;
            }
        })
        .await;
        let (status, reply) = server
            .enroll(token["token"].as_str().unwrap(), "late")
            .await;
        assert_error(status, &reply, 401, "unauthorized");
        assert_eq!(reply["error"]["message"], "join token expired");

        let unknown = "crops_join_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let (status, reply) = server.enroll(unknown, "x").await;
        assert_error(status, &reply, 401, "unauthorized");
        assert_eq!(reply["error"]["message"], "unknown join token");
        let (status, reply) = server.enroll("garbage", "x").await;
        assert_error(status, &reply, 401, "unauthorized");
        let (status, reply) = http(
            server.addr,
            "POST",
            "/v1/enroll",
            &[],
            Some(r#"{"name":"x"}"#.into()),
        )
        .await;
        assert_error(status, &reply, 400, "bad_request");
        assert!(server.workers().await.is_empty());
        server.stop().await;
    });
}

#[test]
fn a_generated_admin_token_is_reported_once_and_kept() {
    smol::block_on(async {
        let opts = || Options {
            admin_token: None,
            ..Options::default()
        };
        let server = Server::start_in(temp_dir("gen-admin"), opts()).await;
        let token = server
            .ready
            .generated_admin_token
            .clone()
            .expect("a generated token");
        assert!(token.starts_with("crops_adm_"), "{token}");
        assert!(server.ready.url().starts_with("http://127.0.0.1:"));
        let bearer = format!("Bearer {token}");
        let (status, _) = http(
            server.addr,
            "GET",
            "/v1/tenants",
            &[("Authorization", &bearer)],
            None,
        )
        .await;
        assert_eq!(status, 200);
        let data = server.stop().await;
        let db = std::fs::read(data.join("crops.redb")).unwrap();
        assert!(
            !db.windows(token.len()).any(|w| w == token.as_bytes()),
            "token stored in clear"
        );

        let server = Server::start_in(data, opts()).await;
        assert!(server.ready.generated_admin_token.is_none());
        let (status, _) = http(
            server.addr,
            "GET",
            "/v1/tenants",
            &[("Authorization", &bearer)],
            None,
        )
        .await;
        assert_eq!(status, 200);
        server.stop().await;
    });
}

/// Tenant and fleet join tokens live by one rule: an hour unless `ttlSecs`
/// says otherwise, 1 second to 30 days, anything else refused with the same
/// message.
#[test]
fn join_tokens_of_both_kinds_follow_one_lifetime_rule() {
    smol::block_on(async {
        let server = Server::start("join-ttl").await;
        let tenant = server.tenant("ttl").await;
        let tenant_path = format!("/v1/tenants/{tenant}/join-tokens");
        const MAX: u64 = 30 * 24 * 3600;
        for (path, base) in [
            (tenant_path.as_str(), json!({})),
            ("/v1/fleet/join-tokens", json!({ "region": "eu-west" })),
        ] {
            let ask = |ttl: Option<u64>| {
                let mut body = base.clone();
                if let Some(t) = ttl {
                    body["ttlSecs"] = json!(t);
                }
                server.admin("POST", path, Some(body))
            };
            for bad in [0, MAX + 1] {
                let (status, body) = ask(Some(bad)).await;
                assert_error(status, &body, 400, "bad_request");
                assert_eq!(
                    body["error"]["message"],
                    format!("ttlSecs must be between 1 and {MAX}"),
                    "{path}"
                );
            }
            for (ttl, lives) in [(None, 3600), (Some(1), 1), (Some(MAX), MAX)] {
                let before = now_ms();
                let (status, token) = ask(ttl).await;
                let after = now_ms();
                assert_eq!(status, 201, "{path}: {token}");
                let expires = token["expiresAt"].as_u64().unwrap();
                assert!(
                    (before + lives * 1000..=after + lives * 1000).contains(&expires),
                    "{path} {ttl:?}: {expires} not {lives} s after {before}..{after}"
                );
            }
        }
    });
}
