//! Organisations, members and their API tokens through the API: the
//! default organisation, roles and assignments, tokens shown once and
//! stored hashed, revocation, and bad input refused with nothing changed.

use serde_json::{json, Value};

use crate::fake::assert_error;
use crate::harness::*;
use crate::people::*;

#[test]
fn tenants_without_an_org_land_in_the_default_org() {
    smol::block_on(async {
        let server = Server::start("default-org").await;
        let default = default_org(&server).await;
        let tenant = server.tenant("legacy").await;
        let (status, body) = server
            .admin("GET", &format!("/v1/tenants/{tenant}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["orgId"], default.as_str());
        // An org admin's tenant lands in their own org.
        let acme = org(&server, "acme").await;
        let ada = person(&server, &acme, "ada", "admin", &[]).await;
        let (status, body) = ada
            .call(
                server.addr,
                "POST",
                "/v1/tenants",
                Some(json!({ "name": "mine" })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["orgId"], acme.as_str());
        let (_, listed) = ada.call(server.addr, "GET", "/v1/tenants", None).await;
        let names: Vec<&str> = listed["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert_eq!(names, ["mine"], "{listed}");
        server.stop().await;
    });
}

#[test]
fn members_roles_and_assignments_decide_what_a_member_sees() {
    smol::block_on(async {
        let server = Server::start("members").await;
        let addr = server.addr;
        let acme = org(&server, "acme").await;
        let t1 = tenant_in(&server, "t1", &acme).await;
        let t2 = tenant_in(&server, "t2", &acme).await;
        let ada = person(&server, &acme, "ada", "admin", &[]).await;
        let mo = person(&server, &acme, "mo", "member", &[&t1]).await;

        let tenants = |body: &Value| -> Vec<String> {
            body["tenants"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_owned())
                .collect()
        };
        let (_, seen) = mo.call(addr, "GET", "/v1/tenants", None).await;
        assert_eq!(tenants(&seen), std::slice::from_ref(&t1));
        let (status, _) = mo
            .call(addr, "GET", &format!("/v1/tenants/{t2}"), None)
            .await;
        assert_eq!(status, 404);

        // The admin assigns t2: mo sees it; unassigns: gone again.
        let assign = format!("/v1/members/{}/tenants/{t2}", mo.id);
        let (status, member) = ada.call(addr, "PUT", &assign, None).await;
        assert_eq!(status, 200, "{member}");
        assert_eq!(member["tenants"].as_array().unwrap().len(), 2, "{member}");
        let (status, _) = mo
            .call(addr, "GET", &format!("/v1/tenants/{t2}"), None)
            .await;
        assert_eq!(status, 200);
        let (status, _) = ada.call(addr, "DELETE", &assign, None).await;
        assert_eq!(status, 200);
        let (status, _) = mo
            .call(addr, "GET", &format!("/v1/tenants/{t2}"), None)
            .await;
        assert_eq!(status, 404);

        // A tenant of another org cannot be assigned, even by the operator.
        let other = tenant_in(&server, "elsewhere", &org(&server, "other").await).await;
        let path = format!("/v1/members/{}/tenants/{other}", mo.id);
        let (status, reply) = server.admin("PUT", &path, None).await;
        assert_error(status, &reply, 404, "not_found");

        // Promotion makes mo an admin: every tenant of the org.
        let (status, member) = ada
            .call(
                addr,
                "PATCH",
                &format!("/v1/members/{}", mo.id),
                Some(json!({ "role": "admin" })),
            )
            .await;
        assert_eq!(
            (status, &member["role"]),
            (200, &json!("admin")),
            "{member}"
        );
        let (_, seen) = mo.call(addr, "GET", "/v1/tenants", None).await;
        assert_eq!(tenants(&seen).len(), 2, "{seen}");

        // Deleting a member revokes their tokens at once.
        let (status, _) = ada
            .call(addr, "DELETE", &format!("/v1/members/{}", mo.id), None)
            .await;
        assert_eq!(status, 200);
        let (status, reply) = mo.call(addr, "GET", "/v1/me", None).await;
        assert_error(status, &reply, 401, "unauthorized");
        let (status, _) = server
            .admin("GET", &format!("/v1/members/{}", mo.id), None)
            .await;
        assert_eq!(status, 404);
        server.stop().await;
    });
}

#[test]
fn member_tokens_are_shown_once_stored_hashed_and_revocable() {
    smol::block_on(async {
        let server = Server::start("member-tokens").await;
        let addr = server.addr;
        let acme = org(&server, "acme").await;
        let ana = person(&server, &acme, "ana", "member", &[]).await;
        let (status, me) = ana.call(addr, "GET", "/v1/me", None).await;
        assert_eq!(status, 200, "{me}");
        assert_eq!(me["principal"], "member");
        assert_eq!(me["member"]["id"], ana.id.as_str());
        assert_eq!(me["tokenId"], ana.token_id.as_str());

        // A member mints a second token for themself; listings never show secrets.
        let tokens = format!("/v1/members/{}/tokens", ana.id);
        let (status, second) = ana.call(addr, "POST", &tokens, Some(json!({}))).await;
        assert_eq!(status, 201, "{second}");
        let second_secret = second["token"].as_str().unwrap().to_owned();
        let (status, list) = ana.call(addr, "GET", &tokens, None).await;
        assert_eq!(status, 200);
        assert_eq!(list["tokens"].as_array().unwrap().len(), 2, "{list}");
        assert!(!list.to_string().contains("crops_tok_"), "{list}");

        // Revoking one refuses it from then on; the other still works.
        let revoke = format!("/v1/tokens/{}", ana.token_id);
        let (status, revoked) = ana.call(addr, "DELETE", &revoke, None).await;
        assert_eq!(status, 200, "{revoked}");
        assert!(revoked["revokedAt"].as_u64().is_some(), "{revoked}");
        let (status, reply) = ana.call(addr, "GET", "/v1/me", None).await;
        assert_error(status, &reply, 401, "unauthorized");
        assert_eq!(reply["error"]["message"], "invalid or revoked token");
        let (status, _) = as_token(addr, &second_secret, "GET", "/v1/me", None).await;
        assert_eq!(status, 200);
        // Revoking again is harmless.
        let (status, _) = server.admin("DELETE", &revoke, None).await;
        assert_eq!(status, 200);

        let data = server.stop().await;
        let db = std::fs::read(data.join("crops.redb")).unwrap();
        for secret in [&ana.token, &second_secret] {
            assert!(
                !db.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "token stored in clear"
            );
        }
    });
}

#[test]
fn identity_routes_refuse_bad_input_and_change_nothing() {
    smol::block_on(async {
        let server = Server::start("identity-bad-input").await;
        let addr = server.addr;
        let acme = org(&server, "acme").await;
        let ada = person(&server, &acme, "ada", "admin", &[]).await;
        let members = format!("/v1/orgs/{acme}/members");
        let long = "a".repeat(70 * 1024);
        let cases: Vec<(&str, String, Option<String>, u16, &str)> = vec![
            (
                "POST",
                "/v1/orgs".into(),
                Some(r#"{"name":"#.into()),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/v1/orgs".into(),
                Some(r#"{"name":5}"#.into()),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/v1/orgs".into(),
                Some(r#"{"name":"x","plan":"free"}"#.into()),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/v1/orgs".into(),
                Some(r#""acme""#.into()),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/v1/orgs".into(),
                Some(r#"{"name":"acme"}"#.into()),
                409,
                "conflict",
            ),
            (
                "POST",
                "/v1/orgs".into(),
                Some(format!(r#"{{"name":"{long}"}}"#)),
                413,
                "payload_too_large",
            ),
            (
                "POST",
                members.clone(),
                Some(r#"{"name":"x","role":"owner"}"#.into()),
                400,
                "bad_request",
            ),
            (
                "POST",
                members.clone(),
                Some(r#"{"name":"x"}"#.into()),
                400,
                "bad_request",
            ),
            (
                "POST",
                members.clone(),
                Some(r#"{"name":"x","role":"admin","tenants":["../x"]}"#.into()),
                400,
                "bad_request",
            ),
            (
                "POST",
                members.clone(),
                Some(r#"{"name":"x","role":"admin","tenants":"t"}"#.into()),
                400,
                "bad_request",
            ),
            (
                "POST",
                members.clone(),
                Some(r#"{"name":"ada","role":"admin"}"#.into()),
                409,
                "conflict",
            ),
            (
                "POST",
                members.clone(),
                Some(r#"{"name":"","role":"admin"}"#.into()),
                400,
                "bad_request",
            ),
            (
                "PATCH",
                format!("/v1/members/{}", ada.id),
                Some(r#"{"role":"root"}"#.into()),
                400,
                "bad_request",
            ),
            (
                "PATCH",
                format!("/v1/members/{}", ada.id),
                Some(r#"{"role":"member","name":"x"}"#.into()),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/v1/orgs/../members".into(),
                Some("{}".into()),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/v1/orgs/..%2f..%2fetc/members".into(),
                Some("{}".into()),
                400,
                "bad_request",
            ),
            ("GET", "/v1/members/..".into(), None, 400, "bad_request"),
            (
                "DELETE",
                "/v1/tokens/%2e%2e".into(),
                None,
                400,
                "bad_request",
            ),
            (
                "PUT",
                format!("/v1/members/{}/tenants/..", ada.id),
                None,
                400,
                "bad_request",
            ),
            (
                "POST",
                format!("/v1/members/{}/tokens", ada.id),
                Some(r#"{"name":["x"]}"#.into()),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/v1/tenants".into(),
                Some(r#"{"name":"x","orgId":"../x"}"#.into()),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/v1/tenants".into(),
                Some(r#"{"name":"x","orgId":"0b4f6a0e-3c1d-4e2a-9f00-1234567890ab"}"#.into()),
                404,
                "not_found",
            ),
            (
                "GET",
                "/v1/audit?tenantId=../x".into(),
                None,
                400,
                "bad_request",
            ),
            ("GET", "/v1/audit?limit=0".into(), None, 400, "bad_request"),
            (
                "GET",
                "/v1/audit?before=-1".into(),
                None,
                400,
                "bad_request",
            ),
            ("PATCH", "/v1/orgs".into(), None, 405, "method_not_allowed"),
        ];
        let auth = format!("Bearer {ADMIN}");
        let headers = [("Authorization", auth.as_str())];
        for (method, path, body, want, code) in cases {
            let (status, reply) = http(addr, method, &path, &headers, body).await;
            assert_eq!(status, want, "{method} {path}: {reply}");
            assert_eq!(reply["error"]["code"], code, "{method} {path}: {reply}");
        }
        // Nothing was created or changed.
        let (_, orgs) = server.admin("GET", "/v1/orgs", None).await;
        assert_eq!(orgs["orgs"].as_array().unwrap().len(), 2, "{orgs}");
        let (_, listed) = server.admin("GET", &members, None).await;
        assert_eq!(listed["members"].as_array().unwrap().len(), 1, "{listed}");
        assert_eq!(listed["members"][0]["role"], "admin", "{listed}");
        let (_, tenants) = server.admin("GET", "/v1/tenants", None).await;
        assert_eq!(tenants["tenants"], json!([]), "{tenants}");
        server.stop().await;
    });
}

#[test]
fn the_cli_manages_orgs_members_tokens_and_reads_the_audit() {
    smol::block_on(async {
        let server = Server::start("cli-identity").await;
        let url = format!("http://{}", server.addr);
        let cli = |args: &[&str]| {
            let mut all = args.to_vec();
            all.extend(["--url", &url, "--admin-token", ADMIN]);
            crate::harness::cli(&all)
        };
        cli(&["org", "create", "--name", "acme"]).await.unwrap();
        let (_, orgs) = server.admin("GET", "/v1/orgs", None).await;
        let org = orgs["orgs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "acme")
            .expect("the org the CLI created")["id"]
            .as_str()
            .unwrap()
            .to_owned();
        cli(&["org", "list", "--json"]).await.unwrap();
        cli(&[
            "member", "add", "--org", &org, "--name", "ada", "--role", "admin",
        ])
        .await
        .unwrap();
        let (_, members) = server
            .admin("GET", &format!("/v1/orgs/{org}/members"), None)
            .await;
        let member = &members["members"][0];
        assert_eq!(
            (&member["name"], &member["role"]),
            (&json!("ada"), &json!("admin"))
        );
        let member_id = member["id"].as_str().unwrap().to_owned();
        cli(&[
            "token", "create", "--member", &member_id, "--name", "laptop",
        ])
        .await
        .unwrap();
        let (_, tokens) = server
            .admin("GET", &format!("/v1/members/{member_id}/tokens"), None)
            .await;
        let token_id = tokens["tokens"][0]["id"].as_str().unwrap().to_owned();
        cli(&["token", "list", "--member", &member_id])
            .await
            .unwrap();
        cli(&["token", "revoke", &token_id]).await.unwrap();
        let (_, tokens) = server
            .admin("GET", &format!("/v1/members/{member_id}/tokens"), None)
            .await;
        assert!(tokens["tokens"][0]["revokedAt"].is_u64(), "{tokens}");
        cli(&["audit", "--org", &org]).await.unwrap();
        cli(&["member", "remove", &member_id]).await.unwrap();
        let (_, members) = server
            .admin("GET", &format!("/v1/orgs/{org}/members"), None)
            .await;
        assert_eq!(members["members"], json!([]));
        let err = cli(&[
            "member", "add", "--org", &org, "--name", "bob", "--role", "king",
        ])
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("king") && err.to_string().contains("admin"),
            "{err}"
        );
        server.stop().await;
    });
}
