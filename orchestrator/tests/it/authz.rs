//! Authorisation over every route of the table: each declares a rule and
//! refuses callers without valid credentials; a member of one tenant is
//! refused every route on another tenant's objects and nothing of that
//! tenant changes; admin-only operations refuse a `member`.

use orchestrator::http::Rule;
use orchestrator::router::{RouteDef, ROUTES};
use serde_json::{json, Value};

use crate::fake::*;
use crate::harness::*;
use crate::people::*;

const SOME_ID: &str = "0b4f6a0e-3c1d-4e2a-9f00-1234567890ab";

/// A body that passes validation for the route's endpoint, aimed at the
/// objects in `ids`, so only authorisation can refuse it.
fn body_for(def: &RouteDef, ids: &[(&str, &str)]) -> Option<Value> {
    let id = |name: &str| ids.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let tenant = id("tenantId").unwrap_or(SOME_ID);
    let body = match format!("{:?}", def.endpoint).as_str() {
        "CreateOrg" => json!({ "name": "evil-org" }),
        "CreateTenant" => json!({ "name": "evil", "orgId": id("orgId").unwrap_or(SOME_ID) }),
        "CreateMember" => json!({ "name": "mallory", "role": "admin" }),
        "UpdateMember" => json!({ "role": "member" }),
        "CreateContainer" => json!({
            "id": "evil-1", "tenantId": tenant, "workerId": id("workerId").unwrap_or(SOME_ID),
            "name": "evil", "image": IMAGE
        }),
        "BuildImage" => {
            json!({ "tag": "localhost/evil:1", "containerfile": "FROM scratch\n", "tenantId": tenant })
        }
        "ContainerExec" | "ContainerBackground" => json!({ "command": ["true"] }),
        "SetPlan" => json!({ "plan": "enterprise" }),
        "Enroll" => json!({ "joinToken": "crops_join_nope", "name": "x" }),
        _ => return (def.method != "GET").then(|| json!({})),
    };
    Some(body)
}

/// The path of `def` on the objects in `ids`, with a query naming the tenant.
fn path_for(def: &RouteDef, ids: &[(&str, &str)]) -> String {
    let tenant = ids
        .iter()
        .find(|(k, _)| *k == "tenantId")
        .map_or(SOME_ID, |(_, v)| *v);
    format!("{}?tenantId={tenant}&force=true", fill(def.path, ids))
}

#[test]
fn every_route_declares_a_rule_and_refuses_callers_without_valid_credentials() {
    smol::block_on(async {
        let server = Server::start("rules").await;
        let org = default_org(&server).await;
        let gone = person(&server, &org, "gone", "admin", &[]).await;
        let (status, _) = server
            .admin("DELETE", &format!("/v1/tokens/{}", gone.token_id), None)
            .await;
        assert_eq!(status, 200);
        let ids = [
            ("tenantId", SOME_ID),
            ("workerId", SOME_ID),
            ("orgId", SOME_ID),
            ("memberId", SOME_ID),
            ("tokenId", SOME_ID),
            ("containerId", "c1"),
            ("handle", "h1"),
            ("file", "app.js"),
            ("arch", "x86_64"),
        ];
        assert!(ROUTES.len() > 30, "the table lists every route");
        for def in ROUTES {
            let rule = format!("{:?}", def.rule);
            assert!(!rule.is_empty(), "{def:?}");
            let path = path_for(def, &ids);
            let body = body_for(def, &ids).map(|b| b.to_string());
            let at = format!("{} {path} ({rule})", def.method);
            let bad_headers: [&[(&str, &str)]; 4] = [
                &[],
                &[("Authorization", "Bearer nope")],
                &[("Authorization", "Basic YWRtaW46YWRtaW4=")],
                &[(
                    "Authorization",
                    "Bearer crops_tok_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                )],
            ];
            match def.rule {
                // This server has no `--agent-dir`: the download says so (404).
                Rule::Public if def.path == "/download/agent/{arch}" => {
                    let (status, reply) = http(server.addr, def.method, &path, &[], None).await;
                    assert_eq!(status, 404, "{at}: {reply}");
                    let message = reply["error"]["message"].as_str().unwrap_or_default();
                    assert!(message.contains("--agent-dir"), "{at}: {reply}");
                }
                Rule::Public => {
                    let (status, _) = http_raw(server.addr, def.method, &path, &[], None).await;
                    assert!(
                        status < 400,
                        "{at}: public routes answer anyone, got {status}"
                    );
                }
                Rule::JoinToken | Rule::Worker | Rule::Peer => {
                    let (status, reply) = http(server.addr, def.method, &path, &[], body).await;
                    assert_eq!(status, 401, "{at}: {reply}");
                    assert_eq!(reply["error"]["code"], "unauthorized", "{at}");
                }
                _ => {
                    for headers in bad_headers {
                        let (status, reply) =
                            http(server.addr, def.method, &path, headers, body.clone()).await;
                        assert_eq!(status, 401, "{at} {headers:?}: {reply}");
                        assert_eq!(reply["error"]["code"], "unauthorized", "{at}");
                    }
                    let (status, reply) = gone.call(server.addr, def.method, &path, None).await;
                    assert_eq!(status, 401, "{at}: revoked token: {reply}");
                    assert_eq!(reply["error"]["message"], "invalid or revoked token");
                }
            }
        }
        // Nothing was created by any refused call.
        let (_, tenants) = server.admin("GET", "/v1/tenants", None).await;
        assert_eq!(tenants["tenants"], json!([]), "{tenants}");
        let (_, orgs) = server.admin("GET", "/v1/orgs", None).await;
        assert_eq!(orgs["orgs"].as_array().unwrap().len(), 1, "{orgs}");
        server.stop().await;
    });
}

/// What the operator sees of tenant B, minus what changes on its own
/// (a worker's liveness).
async fn snapshot(fx: &Fixture, org: &str, owner: &Person) -> Vec<Value> {
    let server = &fx.server;
    let mut worker = server.worker(&fx.worker_id).await;
    for volatile in ["status", "heartbeat", "lastHeartbeatAt", "connectedAt"] {
        worker.as_object_mut().unwrap().remove(volatile);
    }
    let mut out = vec![worker];
    for path in [
        format!("/v1/tenants/{}", fx.tenant_id),
        format!("/v1/containers?tenantId={}", fx.tenant_id),
        format!("/v1/orgs/{org}/members"),
        format!("/v1/members/{}/tokens", owner.id),
        format!("/v1/audit?tenantId={}", fx.tenant_id),
    ] {
        let (status, body) = server.admin("GET", &path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        out.push(body);
    }
    out
}

#[test]
fn a_member_of_one_tenant_is_refused_every_route_on_another_tenants_objects() {
    smol::block_on(async {
        // Tenant B (default org): a worker, a container, an admin with a token.
        let mut fx = Fixture::start("cross-tenant").await;
        fx.create("bjob-secret", "b-job").await;
        let addr = fx.server.addr;
        let b_org = default_org(&fx.server).await;
        let bea = person(&fx.server, &b_org, "bea", "admin", &[]).await;
        // The callers: a member and an admin of another org, and a member
        // of B's org assigned only another tenant.
        let acme = org(&fx.server, "acme").await;
        let tenant_a = tenant_in(&fx.server, "tenant-a", &acme).await;
        let b2 = tenant_in(&fx.server, "tenant-b2", &b_org).await;
        let callers = [
            (
                "ana",
                person(&fx.server, &acme, "ana", "member", &[&tenant_a]).await,
            ),
            ("ada", person(&fx.server, &acme, "ada", "admin", &[]).await),
            (
                "bob",
                person(&fx.server, &b_org, "bob", "member", &[&b2]).await,
            ),
        ];
        let before = snapshot(&fx, &b_org, &bea).await;

        let ids = [
            ("tenantId", fx.tenant_id.as_str()),
            ("workerId", fx.worker_id.as_str()),
            ("orgId", b_org.as_str()),
            ("memberId", bea.id.as_str()),
            ("tokenId", bea.token_id.as_str()),
            ("containerId", "bjob-secret"),
            ("handle", "h1"),
        ];
        let secrets = [
            fx.tenant_id.as_str(),
            fx.worker_id.as_str(),
            "bjob-secret",
            bea.id.as_str(),
        ];
        for (name, caller) in &callers {
            for def in ROUTES {
                let path = path_for(def, &ids);
                let body = body_for(def, &ids);
                let at = format!("{name}: {} {path} ({:?})", def.method, def.rule);
                match def.rule {
                    Rule::Public => continue,
                    Rule::JoinToken | Rule::Worker | Rule::Peer => {
                        let (status, reply) = caller.call(addr, def.method, &path, body).await;
                        assert_eq!(status, 401, "{at}: {reply}");
                    }
                    Rule::SignedIn => {
                        let (status, reply) = caller.call(addr, def.method, &path, body).await;
                        assert_eq!(status, 200, "{at}: {reply}");
                        let text = reply.to_string();
                        for secret in secrets {
                            assert!(!text.contains(secret), "{at} shows {secret}: {reply}");
                        }
                    }
                    _ => {
                        let (status, reply) = caller.call(addr, def.method, &path, body).await;
                        let own_org = *name == "bob" && format!("{:?}", def.endpoint) == "GetOrg";
                        if own_org {
                            assert_eq!(status, 200, "{at}: {reply}");
                            continue;
                        }
                        assert!(matches!(status, 403 | 404), "{at}: {status} {reply}");
                        let code = if status == 403 {
                            "forbidden"
                        } else {
                            "not_found"
                        };
                        assert_error(status, &reply, status, code);
                    }
                }
            }
        }

        assert_eq!(
            snapshot(&fx, &b_org, &bea).await,
            before,
            "tenant B changed"
        );
        let (status, me) = bea.call(addr, "GET", "/v1/me", None).await;
        assert_eq!((status, &me["member"]["id"]), (200, &json!(bea.id)), "{me}");
        // No command reached B's worker.
        fx.assert_nothing_sent().await;
        fx.stop().await;
    });
}

#[test]
fn admin_only_operations_refuse_a_member_and_admit_an_admin() {
    smol::block_on(async {
        let mut fx = Fixture::start("admin-only").await;
        fx.create("c-1", "job").await;
        let addr = fx.server.addr;
        let org = default_org(&fx.server).await;
        let tenant = fx.tenant_id.clone();
        let al = person(&fx.server, &org, "al", "admin", &[]).await;
        let mo = person(&fx.server, &org, "mo", "member", &[&tenant]).await;
        let ids = [
            ("tenantId", tenant.as_str()),
            ("workerId", fx.worker_id.as_str()),
            ("orgId", org.as_str()),
            ("memberId", al.id.as_str()),
            ("tokenId", al.token_id.as_str()),
            ("containerId", "c-1"),
            ("handle", "h1"),
        ];
        let mut refused = 0;
        for def in ROUTES {
            if !matches!(def.rule, Rule::OrgAdmin(_) | Rule::Operator) {
                continue;
            }
            let path = path_for(def, &ids);
            let (status, reply) = mo.call(addr, def.method, &path, body_for(def, &ids)).await;
            let at = format!("{} {path} ({:?})", def.method, def.rule);
            assert_error(status, &reply, 403, "forbidden");
            assert!(!at.is_empty());
            refused += 1;
        }
        assert!(refused >= 10, "{refused} admin-only routes");
        // What a member may do on their tenant works.
        for path in [
            format!("/v1/tenants/{tenant}"),
            format!("/v1/containers?tenantId={tenant}"),
            "/v1/containers/c-1".to_owned(),
            format!("/v1/members/{}/tokens", mo.id),
        ] {
            let (status, reply) = mo.call(addr, "GET", &path, None).await;
            assert_eq!(status, 200, "{path}: {reply}");
        }
        let (status, workers) = mo.call(addr, "GET", "/v1/workers", None).await;
        assert_eq!(status, 200);
        assert_eq!(
            workers["workers"][0]["id"],
            fx.worker_id.as_str(),
            "{workers}"
        );
        // The same operations admit an admin of the organisation.
        let join = format!("/v1/tenants/{tenant}/join-tokens");
        let (status, reply) = al.call(addr, "POST", &join, Some(json!({}))).await;
        assert_eq!(status, 201, "{reply}");
        let members = format!("/v1/orgs/{org}/members");
        let (status, reply) = al.call(addr, "GET", &members, None).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["members"].as_array().unwrap().len(), 2, "{reply}");
        let audit = format!("/v1/audit?tenantId={tenant}");
        let (status, reply) = al.call(addr, "GET", &audit, None).await;
        assert_eq!(status, 200, "{reply}");
        // The worker was never revoked and got no command.
        assert_eq!(fx.server.worker(&fx.worker_id).await["revoked"], false);
        fx.assert_nothing_sent().await;
        fx.stop().await;
    });
}
