//! Plan limits under concurrency: simultaneous creates of a free-plan
//! tenant (3 concurrent containers), placed or naming their worker, and
//! simultaneous enrolments with several join tokens (1 self-hosted worker):
//! exactly the plan's number get through, every other one is 403
//! `plan_limit`, and nothing beyond the limit is recorded.

use serde_json::{json, Value};

use crate::fake::*;
use crate::harness::*;

/// Creates fired at once, so several are admitted while the others are.
const AT_ONCE: usize = 8;

/// A pullable image: placement asks no worker for its image list.
const PULLED: &str = "docker.io/library/busybox:1";

/// Fire `bodies` as simultaneous creates, the fake agent creating whatever
/// reaches it; every call's status and body.
async fn at_once(fx: &mut Fixture, bodies: Vec<Value>) -> Vec<(u16, Value)> {
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|b| fx.spawn("POST", "/v1/containers", Some(b)))
        .collect();
    let tenant = fx.tenant_id.clone();
    let agent = &mut fx.agent;
    let answering = async {
        loop {
            let cmd = next_command(agent).await;
            assert_eq!(cmd.ty, "container.create", "{cmd:?}");
            let id = cmd.data["containerId"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let container = info(&id, &tenant, &id, "created");
            answer(
                agent,
                &cmd,
                json!({ "container": container, "created": true }),
            )
            .await;
        }
    };
    let finished = async {
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await);
        }
        out
    };
    smol::future::or(finished, answering).await
}

/// Exactly `allowed` of `answers` created (201), every other one refused
/// by the plan (403 `plan_limit`); the tenant has exactly `allowed`
/// containers.
async fn exactly(fx: &Fixture, answers: &[(u16, Value)], allowed: usize) {
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    for (status, body) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_error(*status, body, 403, "plan_limit");
    }
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(created, allowed, "statuses: {statuses:?}");
    assert_eq!(fx.containers().await.len(), allowed);
    // The tenant's usage, as the dashboard shows it against the plan.
    let path = format!("/v1/tenants/{}", fx.tenant_id);
    let (status, tenant) = fx.server.admin("GET", &path, None).await;
    assert_eq!(status, 200, "{tenant}");
    assert_eq!(tenant["usage"]["created"], allowed, "{tenant}");
    assert_eq!(tenant["usage"]["workers"], 1, "{tenant}");
    assert_eq!(tenant["plan"]["concurrentContainers"], 3, "{tenant}");
}

#[test]
fn simultaneous_placed_creates_stop_at_the_plan_limit() {
    smol::block_on(async {
        let mut fx = Fixture::start("admit-placed").await;
        let bodies = (0..AT_ONCE)
            .map(|i| json!({ "id": format!("ap-{i}"), "tenantId": fx.tenant_id, "name": format!("ap-{i}"), "image": PULLED }))
            .collect();
        let answers = at_once(&mut fx, bodies).await;
        exactly(&fx, &answers, 3).await;
        fx.stop().await;
    });
}

#[test]
fn simultaneous_creates_naming_their_worker_stop_at_the_plan_limit() {
    smol::block_on(async {
        let mut fx = Fixture::start("admit-pinned").await;
        let bodies = (0..AT_ONCE)
            .map(|i| fx.create_body(&format!("an-{i}"), &format!("an-{i}")))
            .collect();
        let answers = at_once(&mut fx, bodies).await;
        exactly(&fx, &answers, 3).await;
        // Every refusal is a stored decision on the full usage.
        let path = format!("/v1/tenants/{}/decisions", fx.tenant_id);
        let (_, list) = fx.server.admin("GET", &path, None).await;
        let denied: Vec<&Value> = list["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["outcome"] == "denied")
            .collect();
        assert_eq!(denied.len(), AT_ONCE - 3, "{list}");
        for d in denied {
            let usage = &d["explanation"]["usage"];
            let held = ["creating", "created", "running"]
                .iter()
                .map(|k| usage[k].as_u64().unwrap_or(0))
                .sum::<u64>();
            assert_eq!(held, 3, "{d}");
        }
        fx.stop().await;
    });
}

#[test]
fn simultaneous_enrolments_stop_at_the_plan_limit() {
    smol::block_on(async {
        let server = Server::start("admit-enrol").await;
        let tenant = server.tenant("admit-enrol").await;
        let mut tokens = Vec::new();
        for _ in 0..AT_ONCE {
            let token = server.join_token(&tenant, None).await;
            tokens.push(token["token"].as_str().unwrap().to_owned());
        }
        let tries: Vec<_> = tokens
            .iter()
            .enumerate()
            .map(|(i, token)| {
                let (addr, token) = (server.addr, token.clone());
                smol::spawn(async move {
                    let body = json!({ "joinToken": token, "name": format!("racer-{i}") });
                    http(addr, "POST", "/v1/enroll", &[], Some(body.to_string())).await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for t in tries {
            answers.push(t.await);
        }
        let enrolled = answers.iter().filter(|(s, _)| *s == 201).count();
        for (status, body) in answers.iter().filter(|(s, _)| *s != 201) {
            assert_error(*status, body, 403, "plan_limit");
        }
        let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
        assert_eq!(enrolled, 1, "statuses: {statuses:?}");
        assert_eq!(server.workers().await.len(), 1);
        server.stop().await;
    });
}

/// A retried create of a record that never reached the engine (the agent
/// refused it: `failed`, no engine id) counts against the plan again only
/// once admitted: with the tenant at its limit, the retry is 403
/// `plan_limit` and nothing reaches the worker; with room, it is sent.
#[test]
fn a_retried_create_that_never_reached_the_engine_is_admitted_again() {
    smol::block_on(async {
        let mut fx = Fixture::start("admission-retry").await;
        let body = fx.create_body("job-refused", "refused");
        let task = fx.spawn("POST", "/v1/containers", Some(body.clone()));
        let cmd = next_command(&mut fx.agent).await;
        answer_error(&mut fx.agent, &cmd, "engine_failed", "no space left").await;
        let (code, reply) = task.await;
        assert_eq!(code, 502, "{reply}");
        assert_eq!(fx.container("job-refused").await["state"], "failed");
        for i in 0..3 {
            fx.create(&format!("job-{i}"), &format!("full-{i}")).await;
        }
        // At the limit: refused by the plan, nothing sent, still `failed`.
        let (code, reply) = fx
            .server
            .admin("POST", "/v1/containers", Some(body.clone()))
            .await;
        assert_error(code, &reply, 403, "plan_limit");
        fx.assert_nothing_sent().await;
        assert_eq!(fx.container("job-refused").await["state"], "failed");
        // With room again, the retry is admitted and sent.
        let removed = json!({ "containerId": "job-0", "state": "removed" });
        let (code, _, _) = fx
            .relay(
                "DELETE",
                "/v1/containers/job-0",
                None,
                "container.remove",
                removed,
            )
            .await;
        assert_eq!(code, 200);
        let tenant = fx.tenant_id.clone();
        let created = json!({ "container": info("job-refused", &tenant, "refused", "created"), "created": true });
        let (code, reply, _) = fx
            .relay(
                "POST",
                "/v1/containers",
                Some(body),
                "container.create",
                created,
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
