//! Helpers for the identity tests: organisations, tenants in them, members
//! with tokens, and requests made with a member's token.

use std::net::SocketAddr;

use serde_json::{json, Value};

use crate::harness::*;

/// A member and the API token minted for them.
#[derive(Debug, Clone)]
pub struct Person {
    pub id: String,
    pub token: String,
    pub token_id: String,
}

impl Person {
    /// A request with this member's token.
    pub async fn call(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        as_token(addr, &self.token, method, path, body).await
    }
}

/// A request with any bearer token.
pub async fn as_token(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let bearer = format!("Bearer {token}");
    http(
        addr,
        method,
        path,
        &[("Authorization", &bearer)],
        body.map(|b| b.to_string()),
    )
    .await
}

/// The operator creates an organisation; its id.
pub async fn org(server: &Server, name: &str) -> String {
    let (status, body) = server
        .admin("POST", "/v1/orgs", Some(json!({ "name": name })))
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// The id of the `default` organisation.
pub async fn default_org(server: &Server) -> String {
    let (status, body) = server.admin("GET", "/v1/orgs", None).await;
    assert_eq!(status, 200, "{body}");
    let orgs = body["orgs"].as_array().unwrap();
    let default = orgs
        .iter()
        .find(|o| o["name"] == "default")
        .expect("default org");
    default["id"].as_str().unwrap().to_owned()
}

/// The operator creates a tenant in `org`; its id.
pub async fn tenant_in(server: &Server, name: &str, org: &str) -> String {
    let body = json!({ "name": name, "orgId": org });
    let (status, body) = server.admin("POST", "/v1/tenants", Some(body)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["orgId"], org, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// The operator adds a member to `org` and mints them a token.
pub async fn person(
    server: &Server,
    org: &str,
    name: &str,
    role: &str,
    tenants: &[&str],
) -> Person {
    let body = json!({ "name": name, "role": role, "tenants": tenants });
    let (status, member) = server
        .admin("POST", &format!("/v1/orgs/{org}/members"), Some(body))
        .await;
    assert_eq!(status, 201, "{member}");
    assert_eq!(member["role"], role, "{member}");
    let id = member["id"].as_str().unwrap().to_owned();
    let (status, token) = server
        .admin(
            "POST",
            &format!("/v1/members/{id}/tokens"),
            Some(json!({ "name": "laptop" })),
        )
        .await;
    assert_eq!(status, 201, "{token}");
    let secret = token["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("crops_tok_"), "{token}");
    Person {
        id,
        token: secret,
        token_id: token["id"].as_str().unwrap().to_owned(),
    }
}

/// Fill a route pattern's parameters from `values` (name -> value); a
/// parameter not listed gets a well-formed id of nothing.
pub fn fill(pattern: &str, values: &[(&str, &str)]) -> String {
    pattern
        .split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => values
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map_or(NOBODY, |(_, v)| *v)
                    .to_owned(),
                None => seg.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// A UUID no object has.
pub const NOBODY: &str = "0b4f6a0e-3c1d-4e2a-9f00-1234567890ab";
