//! `GET /openapi.json`: the API's OpenAPI 3 document, hand-written in
//! `openapi.json` next to this file and served as it is.
//!
//! The document must match the route table (`router::ROUTES`): the
//! tests below fail on a route without an operation, an operation without
//! a route, an operation whose `x-crops-rule` is not its route's rule or
//! whose `security` disagrees with it, a path parameter left undocumented,
//! or a `$ref` to nothing. Adding a route means adding its line there,
//! and its row to ARCHITECTURE.md's HTTP table (checked here too).

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use crate::http::Resp;

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// The response of `GET /openapi.json`.
pub fn response() -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from_static(DOCUMENT.as_bytes())));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// How the document spells a route's rule in `x-crops-rule` (the tests
/// hold the document to the route table with it).
#[cfg(test)]
fn rule_name(rule: crate::http::Rule) -> String {
    format!("{rule:?}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::http::Rule;
    use crate::router::ROUTES;

    fn doc() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
    }

    /// Every `(METHOD, path)` the document describes.
    fn documented(doc: &Value) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
        out
    }

    #[test]
    fn every_route_is_documented_and_every_operation_is_routed() {
        let doc = doc();
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        let routed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|d| (d.method.to_owned(), d.path.to_owned()))
            .collect();
        let documented = documented(&doc);
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from src/openapi.json: {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "documented but not routed: {unrouted:?}"
        );
    }

    #[test]
    fn operations_state_their_route_rule_security_and_parameters() {
        let doc = doc();
        for def in ROUTES {
            let op = &doc["paths"][def.path][def.method.to_lowercase()];
            let at = format!("{} {}", def.method, def.path);
            assert_eq!(
                op["x-crops-rule"].as_str(),
                Some(rule_name(def.rule).as_str()),
                "{at}: x-crops-rule"
            );
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{at}"
            );
            let open = matches!(def.rule, Rule::Public | Rule::JoinToken);
            let security = op["security"].as_array().expect("security");
            assert_eq!(security.is_empty(), open, "{at}: security");
            assert_eq!(
                op["responses"]["default"]["$ref"], "#/components/responses/Error",
                "{at}: errors use the one error shape"
            );
            let in_path: BTreeSet<&str> = def
                .path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let documented: BTreeSet<&str> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            assert_eq!(in_path, documented, "{at}: path parameters");
        }
    }

    /// The routes ARCHITECTURE.md's HTTP table lists, as `(METHOD, path
    /// with every parameter written {}, rule)`. A row may list several
    /// methods (`PUT, DELETE`) and paths (`/v1/workers/{id}/cordon`,
    /// `/uncordon`: a path without `/v1` or `/ui` continues its row's
    /// first); queries (`?limit=N`) and notes after the rule are dropped.
    fn architecture_table() -> BTreeSet<(String, String, String)> {
        let doc = include_str!("../../ARCHITECTURE.md");
        let section = doc
            .split("\n## HTTP API (v1)\n")
            .nth(1)
            .expect("ARCHITECTURE.md has its HTTP API section");
        let mut out = BTreeSet::new();
        let rows = section.lines().skip_while(|l| !l.starts_with('|'));
        for row in rows.take_while(|l| l.starts_with('|')).skip(2) {
            let cells: Vec<&str> = row.split(" | ").collect();
            let (methods, paths, who) = (cells[0].trim_start_matches("| "), cells[1], cells[2]);
            let rule = who.split(" (").next().unwrap_or(who).to_owned();
            let mut first: Option<String> = None;
            for path in paths.split('`').skip(1).step_by(2) {
                let path = path.split('?').next().unwrap_or(path);
                if !path.starts_with('/') {
                    continue;
                }
                let path = match &first {
                    Some(base) if !path.starts_with("/v1/") && !path.starts_with("/ui/") => {
                        let parent = &base[..base.rfind('/').unwrap_or(0)];
                        format!("{parent}{path}")
                    }
                    _ => path.to_owned(),
                };
                first.get_or_insert_with(|| path.clone());
                for method in methods.split(", ") {
                    out.insert((method.to_owned(), any_params(&path), rule.clone()));
                }
            }
        }
        out
    }

    /// `path` with every `{parameter}` written `{}`.
    fn any_params(path: &str) -> String {
        let parts = path.split('/').map(|part| {
            if part.starts_with('{') && part.ends_with('}') {
                "{}"
            } else {
                part
            }
        });
        parts.collect::<Vec<_>>().join("/")
    }

    /// ARCHITECTURE.md's table for readers lists every route with its
    /// rule, and nothing else (README points to it; openapi.json is
    /// checked above).
    #[test]
    fn the_architecture_table_lists_exactly_the_routes_and_their_rules() {
        let routed: BTreeSet<(String, String, String)> = ROUTES
            .iter()
            .map(|d| (d.method.to_owned(), any_params(d.path), rule_name(d.rule)))
            .collect();
        let listed = architecture_table();
        let missing: Vec<_> = routed.difference(&listed).collect();
        let extra: Vec<_> = listed.difference(&routed).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "ARCHITECTURE.md's HTTP table disagrees with the route table: \
             missing (or another rule) {missing:?}; not routed {extra:?}"
        );
    }

    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = doc();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let pointer = r.strip_prefix('#').expect("a local reference");
            assert!(doc.pointer(pointer).is_some(), "dangling {r}");
        }
        let error = &doc["components"]["schemas"]["Error"];
        assert_eq!(error["required"][0], "error");
    }
}
