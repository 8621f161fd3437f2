//! `GET /openapi.json`: the API's OpenAPI 3 document, hand-written in
//! `openapi.json` next to this file and served as it is.
//!
//! The document must match the route table (`router::ROUTES`): the
//! tests below fail on a route without an operation, an operation without
//! a route, an operation whose `x-crops-rule` is not its route's rule or
//! whose `security` disagrees with it, a path parameter left undocumented,
//! or a `$ref` to nothing. Adding a route means adding its line there.

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

/// How the document spells a route's rule in `x-crops-rule`.
pub fn rule_name(rule: crate::http::Rule) -> String {
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
