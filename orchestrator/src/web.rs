//! The static files of the terminal page, compiled in from
//! `orchestrator/web/` (xterm.js and its fit addon are vendored there with
//! their licence): `GET /ui/terminal` and the scripts and styles it loads.
//! They carry no secret and need no token (the page asks for one and
//! presents it on the terminal socket); every answer is `nosniff`, never
//! framed, and sends no referrer.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use hyper::{Response, StatusCode};

use crate::http::Resp;

/// One compiled-in file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The file served at `path`, if it is one.
pub fn asset(path: &str) -> Option<Asset> {
    let (content_type, body): (&'static str, &'static [u8]) = match path {
        "/ui/terminal" => (HTML, include_bytes!("../web/terminal.html")),
        "/ui/terminal.js" => (JS, include_bytes!("../web/terminal.js")),
        "/ui/xterm.js" => (JS, include_bytes!("../web/vendor/xterm.js")),
        "/ui/xterm.css" => (CSS, include_bytes!("../web/vendor/xterm.css")),
        "/ui/addon-fit.js" => (JS, include_bytes!("../web/vendor/addon-fit.js")),
        _ => return None,
    };
    Some(Asset { content_type, body })
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
            assert!(!asset(endpoint).unwrap().body.is_empty(), "{endpoint:?}");
        }
        assert_eq!(asset("/healthz"), None);
        assert_eq!(response("/healthz").status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_vendored_code_comes_with_its_licence() {
        let licence = include_str!("../web/vendor/LICENSE.xterm");
        assert!(licence.contains("MIT") || licence.contains("Permission is hereby granted"));
    }

    #[test]
    fn the_page_loads_what_is_served() {
        let page = String::from_utf8_lossy(asset("/ui/terminal").unwrap().body);
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
