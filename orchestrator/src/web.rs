//! The static files of the web pages, compiled in from `orchestrator/web/`:
//! the dashboard (`GET /ui`, its modules and stylesheet at `/ui/{file}`,
//! from `web/ui/`) and the terminal page (`GET /ui/terminal`, with xterm.js
//! and its fit addon vendored with their licence). They carry no secret and
//! need no token (the pages ask for one and present it in headers); every
//! answer is `nosniff`, never framed, sends no referrer, and carries a
//! Content-Security-Policy: [`DASHBOARD_CSP`] for the dashboard's files
//! (scripts and styles from this origin only, none inline, no plugin, no
//! form posted anywhere), [`TERMINAL_CSP`] for the terminal page's. Nothing is built:
//! the browser loads the modules as they are in the repository.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{Response, StatusCode};

use crate::http::Resp;

/// One compiled-in file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// Served with [`DASHBOARD_CSP`] (the dashboard's files).
    pub strict: bool,
}

/// The dashboard's Content-Security-Policy.
pub const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The terminal page's: the same, but styles may be inline, because
/// xterm.js writes its own `<style>` elements and style attributes. No
/// inline script either way.
pub const TERMINAL_CSP: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The file served at `path`, if it is one.
pub fn asset(path: &str) -> Option<Asset> {
    if let Some(body) = dashboard(path) {
        let content_type = match path.rsplit_once('.') {
            Some((_, "css")) => CSS,
            Some((_, "js")) => JS,
            _ => HTML,
        };
        return Some(Asset {
            content_type,
            body,
            strict: true,
        });
    }
    let (content_type, body): (&'static str, &'static [u8]) = match path {
        "/ui/terminal" => (HTML, include_bytes!("../web/terminal.html")),
        "/ui/terminal.js" => (JS, include_bytes!("../web/terminal.js")),
        "/ui/xterm.js" => (JS, include_bytes!("../web/vendor/xterm.js")),
        "/ui/xterm.css" => (CSS, include_bytes!("../web/vendor/xterm.css")),
        "/ui/addon-fit.js" => (JS, include_bytes!("../web/vendor/addon-fit.js")),
        _ => return None,
    };
    Some(Asset {
        content_type,
        body,
        strict: false,
    })
}

/// The dashboard's files, by the path they are served at.
fn dashboard(path: &str) -> Option<&'static [u8]> {
    Some(match path {
        "/ui" => include_bytes!("../web/ui/index.html"),
        "/ui/ui.css" => include_bytes!("../web/ui/ui.css"),
        "/ui/app.js" => include_bytes!("../web/ui/app.js"),
        "/ui/api.js" => include_bytes!("../web/ui/api.js"),
        "/ui/dom.js" => include_bytes!("../web/ui/dom.js"),
        "/ui/workers.js" => include_bytes!("../web/ui/workers.js"),
        "/ui/containers.js" => include_bytes!("../web/ui/containers.js"),
        "/ui/scheduling.js" => include_bytes!("../web/ui/scheduling.js"),
        "/ui/team.js" => include_bytes!("../web/ui/team.js"),
        "/ui/allowlist.js" => include_bytes!("../web/ui/allowlist.js"),
        _ => return None,
    })
}

/// `GET /ui/{file}`: the dashboard's file `file` (404 for any other).
pub fn file(name: &str) -> Resp {
    response(&format!("/ui/{name}"))
}

/// The response for the file at `path` (404 for any other).
pub fn response(path: &str) -> Resp {
    let Some(asset) = asset(path) else {
        return crate::http::ApiError::not_found("no such file").into_response();
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(asset.body)));
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    // Revalidated on every load: a new orchestrator serves the page it ships.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    let policy = if asset.strict {
        DASHBOARD_CSP
    } else {
        TERMINAL_CSP
    };
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(policy));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_static_endpoint_serves_its_file_with_its_type() {
        for (endpoint, ty) in [
            ("/ui/terminal", HTML),
            ("/ui/terminal.js", JS),
            ("/ui/xterm.js", JS),
            ("/ui/xterm.css", CSS),
            ("/ui/addon-fit.js", JS),
        ] {
            let resp = response(endpoint);
            assert_eq!(resp.status(), StatusCode::OK, "{endpoint:?}");
            assert_eq!(resp.headers()[CONTENT_TYPE], ty, "{endpoint:?}");
            assert_eq!(resp.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(resp.headers()[CONTENT_SECURITY_POLICY], TERMINAL_CSP);
            assert!(!asset(endpoint).unwrap().body.is_empty(), "{endpoint:?}");
        }
        assert_eq!(asset("/healthz"), None);
        assert_eq!(response("/healthz").status(), StatusCode::NOT_FOUND);
    }

    /// Every dashboard file, by path.
    const DASHBOARD: &[&str] = &[
        "/ui",
        "/ui/ui.css",
        "/ui/app.js",
        "/ui/api.js",
        "/ui/dom.js",
        "/ui/workers.js",
        "/ui/containers.js",
        "/ui/scheduling.js",
        "/ui/team.js",
        "/ui/allowlist.js",
    ];

    fn text(path: &str) -> String {
        String::from_utf8_lossy(asset(path).unwrap().body).into_owned()
    }

    #[test]
    fn the_dashboard_is_served_under_its_strict_policy() {
        for path in DASHBOARD {
            let resp = response(path);
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            assert_eq!(resp.headers()[CONTENT_SECURITY_POLICY], DASHBOARD_CSP);
            assert_eq!(resp.headers()[X_FRAME_OPTIONS], "DENY");
            let routed = crate::router::find(&hyper::Method::GET, path);
            assert!(routed.is_ok(), "{path} is routed");
        }
        assert_eq!(response("/ui").headers()[CONTENT_TYPE], HTML);
        assert_eq!(response("/ui/app.js").headers()[CONTENT_TYPE], JS);
        assert_eq!(file("ui.css").headers()[CONTENT_TYPE], CSS);
        for missing in ["nope.js", "..%2Fsrc", "terminal.html"] {
            assert_eq!(file(missing).status(), StatusCode::NOT_FOUND, "{missing}");
        }
        // The policy allows nothing inline and nothing from elsewhere.
        assert!(!DASHBOARD_CSP.contains("unsafe"));
        assert!(DASHBOARD_CSP.starts_with("default-src 'none'"));
    }

    #[test]
    fn the_dashboard_writes_text_never_markup() {
        // Names from agents and users are rendered with textContent and text
        // nodes only; no inline script or style would run under the policy.
        for path in DASHBOARD {
            let source = text(path);
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "<script>",
                "<style",
                " style=",
                ".style.",
                " onclick=",
            ] {
                assert!(!source.contains(banned), "{path} uses {banned}");
            }
        }
    }

    #[test]
    fn the_dashboard_imports_only_what_is_served() {
        for path in DASHBOARD.iter().filter(|p| p.ends_with(".js")) {
            for line in text(path).lines() {
                let Some(rest) = line.strip_prefix("import ") else {
                    continue;
                };
                let from = rest.rsplit_once("from \"./").expect("a relative import").1;
                let name = from.trim_end_matches(['"', ';']);
                assert!(
                    DASHBOARD.contains(&format!("/ui/{name}").as_str()),
                    "{path} imports {name}"
                );
            }
        }
        let page = text("/ui");
        for path in ["/ui/ui.css", "/ui/app.js"] {
            assert!(page.contains(path), "the page loads {path}");
        }
    }

    #[test]
    fn the_vendored_code_comes_with_its_licence() {
        let licence = include_str!("../web/vendor/LICENSE.xterm");
        assert!(licence.contains("MIT") || licence.contains("Permission is hereby granted"));
    }

    #[test]
    fn the_page_loads_what_is_served() {
        let page = String::from_utf8_lossy(asset("/ui/terminal").unwrap().body);
        // No inline script: every script element loads a file.
        let scripts = page.matches("<script").count();
        assert_eq!(page.matches("<script src=\"/ui/").count(), scripts);
        for path in [
            "/ui/xterm.css",
            "/ui/xterm.js",
            "/ui/addon-fit.js",
            "/ui/terminal.js",
        ] {
            assert!(page.contains(path), "the page loads {path}");
            let routed = crate::router::find(&hyper::Method::GET, path);
            assert!(routed.is_ok(), "{path} is routed");
        }
    }
}
