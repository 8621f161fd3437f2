//! One active module per scope and role: a tenant's admission and
//! placement modules side by side, each rolled back alone; a module of
//! both worlds taking both; slots surviving a restart, also those stored
//! before roles; concurrent activations of one scope.

use serde_json::{json, Value};

use super::{scheduled, upload, BINPACK, PLAN_LIMITS};
use crate::fake::*;
use crate::harness::*;

/// A `policy`-world component (admit, admit-worker and place): allows
/// everything and places on the first of exactly one candidate.
pub(super) fn both_module() -> Vec<u8> {
    wat::parse_str(include_str!("both.wat")).expect("the both-worlds WAT parses")
}

/// Upload; the stored policy's id.
async fn uploaded(server: &Server, query: &str, bytes: &[u8]) -> String {
    let (status, p) = upload(server, query, bytes).await;
    assert_eq!(status, 201, "{p}");
    p["id"].as_str().expect("an id").to_owned()
}

/// `POST /v1/policies/{id}/{action}`, expecting 200.
async fn act(server: &Server, id: &str, action: &str) -> Value {
    let (status, reply) = server
        .admin("POST", &format!("/v1/policies/{id}/{action}"), None)
        .await;
    assert_eq!(status, 200, "{action} {id}: {reply}");
    reply
}

/// `(role, current policy id or null)` of each slot an answer lists.
fn roles(reply: &Value) -> Vec<(String, Value)> {
    let slots = reply["active"].as_array().expect("active slots");
    let slot = |a: &Value| {
        (
            a["role"].as_str().unwrap_or("?").to_owned(),
            a["current"]["policyId"].clone(),
        )
    };
    slots.iter().map(slot).collect()
}

/// `(scope, role, module, registry's module, registry's last-good)` of
/// every active slot.
async fn slots(server: &Server) -> Vec<[Value; 5]> {
    let (status, list) = server.admin("GET", "/v1/policies", None).await;
    assert_eq!(status, 200, "{list}");
    let row = |a: &Value| {
        let r = &a["registry"];
        [
            a["scope"].clone(),
            a["role"].clone(),
            a["module"].clone(),
            r["module"].clone(),
            r["lastGood"].clone(),
        ]
    };
    list["active"]
        .as_array()
        .expect("active")
        .iter()
        .map(row)
        .collect()
}

fn pair(a: &str, b: &str) -> (Value, Value) {
    (json!(a), json!(b))
}

#[test]
fn a_tenant_runs_its_own_admission_and_placement_modules_and_rolls_each_back_alone() {
    smol::block_on(async {
        let mut fx = Fixture::start("policy-roles").await;
        let t = fx.tenant_id.clone();
        let plan = format!("/v1/tenants/{t}/plan");
        let (status, reply) = fx
            .server
            .admin("PUT", &plan, Some(json!({ "name": "enterprise" })))
            .await;
        assert_eq!(status, 200, "{reply}");
        let limits = uploaded(
            &fx.server,
            &format!("kind=admission&name=limits&tenantId={t}"),
            PLAN_LIMITS,
        )
        .await;
        let bp = uploaded(
            &fx.server,
            &format!("kind=placement&name=bp&tenantId={t}"),
            BINPACK,
        )
        .await;
        let both = uploaded(
            &fx.server,
            &format!("kind=admission&name=both&tenantId={t}"),
            &both_module(),
        )
        .await;
        let (l_limits, l_bp, l_both) = (
            format!("tenant:{t}:limits@1"),
            format!("tenant:{t}:bp@1"),
            format!("tenant:{t}:both@1"),
        );
        assert_eq!(
            roles(&act(&fx.server, &limits, "activate").await),
            [("admission".into(), json!(limits))]
        );
        assert_eq!(
            roles(&act(&fx.server, &bp, "activate").await),
            [("placement".into(), json!(bp))]
        );
        assert_eq!(scheduled(&mut fx, "r-1").await, pair(&l_limits, &l_bp));
        let (_, list) = fx
            .server
            .admin("GET", &format!("/v1/policies?tenantId={t}"), None)
            .await;
        assert_eq!(
            list["effective"],
            json!({ "admission": l_limits, "placement": l_bp }),
            "{list}"
        );
        assert_eq!(
            list["active"][0]["registry"]["health"]["healthy"], true,
            "{list}"
        );

        // Rolling back the admission module leaves the placement one.
        let reply = act(&fx.server, &limits, "rollback").await;
        assert_eq!(roles(&reply), [("admission".into(), Value::Null)]);
        assert_eq!(
            scheduled(&mut fx, "r-2").await,
            pair("stock:plan-limits", &l_bp)
        );

        // A module of both worlds replaces both; its rollback restores both.
        act(&fx.server, &limits, "activate").await;
        let reply = act(&fx.server, &both, "activate").await;
        let expected = [
            ("admission".to_owned(), json!(both)),
            ("placement".to_owned(), json!(both)),
        ];
        assert_eq!(roles(&reply), expected);
        assert_eq!(scheduled(&mut fx, "r-3").await, pair(&l_both, &l_both));
        let reply = act(&fx.server, &both, "rollback").await;
        let expected = [
            ("admission".to_owned(), json!(limits)),
            ("placement".to_owned(), json!(bp)),
        ];
        assert_eq!(roles(&reply), expected);
        assert_eq!(scheduled(&mut fx, "r-4").await, pair(&l_limits, &l_bp));
        let (status, reply) = fx
            .server
            .admin("POST", &format!("/v1/policies/{both}/rollback"), None)
            .await;
        assert_error(status, &reply, 409, "conflict");
        fx.stop().await;
    });
}

#[test]
fn slots_survive_a_restart_and_an_activation_stored_before_roles_still_loads() {
    smol::block_on(async {
        let server = Server::start("policy-roles-restart").await;
        let t = server.tenant("roles").await;
        let limits = uploaded(&server, "kind=admission&name=limits", PLAN_LIMITS).await;
        let bp = uploaded(&server, "kind=placement&name=bp", BINPACK).await;
        let both = uploaded(&server, "kind=placement&name=both", &both_module()).await;
        for id in [&limits, &bp, &both] {
            act(&server, id, "activate").await;
        }
        let old_both = uploaded(
            &server,
            &format!("kind=admission&name=both&tenantId={t}"),
            &both_module(),
        )
        .await;
        let old_bp = uploaded(
            &server,
            &format!("kind=placement&name=bp&tenantId={t}"),
            BINPACK,
        )
        .await;
        let before = slots(&server).await;
        assert_eq!(before.len(), 2, "{before:?}");
        assert_eq!(before[1][4], "global:bp@1", "{before:?}");
        let data = server.stop().await;

        // The tenant's activation as the code before roles stored it.
        {
            let db = redb::Database::create(data.join("crops.redb")).expect("open the store");
            let txn = db.begin_write().expect("write");
            let old = json!({
                "scope": format!("tenant:{t}"), "activatedAt": 1,
                "current": { "policyId": old_both, "failMode": "lastGood" },
                "previous": [{ "policyId": old_bp, "failMode": "closed" }],
            });
            {
                let table: redb::TableDefinition<&str, &str> =
                    redb::TableDefinition::new("policy_active");
                let mut table = txn.open_table(table).expect("table");
                table
                    .insert(format!("tenant:{t}").as_str(), old.to_string().as_str())
                    .expect("insert");
            }
            txn.commit().expect("commit");
        }
        let server = Server::start_in(data, Options::default()).await;
        let after = slots(&server).await;
        assert_eq!(after[..2], before[..], "{after:?}");
        let (scope, l_both, l_bp) = (
            format!("tenant:{t}"),
            format!("tenant:{t}:both@1"),
            format!("tenant:{t}:bp@1"),
        );
        // `both` decided both roles; only placement had a module before it.
        assert_eq!(
            after[2..],
            [
                [
                    json!(scope),
                    json!("admission"),
                    json!(l_both),
                    json!(l_both),
                    Value::Null
                ],
                [
                    json!(scope),
                    json!("placement"),
                    json!(l_both),
                    json!(l_both),
                    json!(l_bp)
                ],
            ],
            "{after:?}"
        );
        let reply = act(&server, &both, "rollback").await;
        let expected = [
            ("admission".to_owned(), json!(limits)),
            ("placement".to_owned(), json!(bp)),
        ];
        assert_eq!(roles(&reply), expected);
        let reply = act(&server, &old_both, "rollback").await;
        let expected = [
            ("admission".to_owned(), Value::Null),
            ("placement".to_owned(), json!(old_bp)),
        ];
        assert_eq!(roles(&reply), expected);
        server.stop().await;
    });
}

#[test]
fn concurrent_activations_of_one_scope_leave_the_registry_as_stored() {
    smol::block_on(async {
        let server = Server::start("policy-race").await;
        let mut ids = Vec::new();
        for name in ["a", "b", "c"] {
            ids.push(uploaded(&server, &format!("kind=placement&name={name}"), BINPACK).await);
        }
        for round in 0..8 {
            // Each round in another order; every activation succeeds.
            ids.rotate_left(1);
            let path = |i: usize| format!("/v1/policies/{}/activate", ids[i]);
            let (p0, p1, p2) = (path(0), path(1), path(2));
            let ((s0, _), ((s1, _), (s2, _))) = smol::future::zip(
                server.admin("POST", &p0, None),
                smol::future::zip(
                    server.admin("POST", &p1, None),
                    server.admin("POST", &p2, None),
                ),
            )
            .await;
            assert_eq!((s0, s1, s2), (200, 200, 200), "round {round}");
            let slots = slots(&server).await;
            assert_eq!(slots.len(), 1, "{slots:?}");
            assert_eq!(
                slots[0][2], slots[0][3],
                "round {round}: store and registry disagree: {slots:?}"
            );
        }
        server.stop().await;
    });
}
