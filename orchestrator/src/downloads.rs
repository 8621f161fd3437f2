//! `GET /download/agent/{arch}`: the static agent binary, so the
//! dashboard's "Add a worker" can show a command that fetches it from the
//! orchestrator the box will enrol with.
//!
//! The binaries come from `serve --agent-dir DIR` (`ServeConfig::agent_dir`),
//! looked up as `DIR/crops-agent-ARCH`, else in cargo's layout
//! `DIR/ARCH-unknown-linux-musl/agent/crops-agent` (so `make up` passes its
//! `target` directory). `ARCH` is `x86_64` or `aarch64`, nothing else: the
//! path parameter never names a file itself. No directory configured, or no
//! binary there: 404 saying what the operator must do. The binary is public
//! (it holds no secret; enrolment needs a join token).

use std::path::{Path, PathBuf};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use crate::http::{ApiError, Resp};
use crate::App;

/// The architectures served, as `uname -m` names them.
pub const ARCHES: &[&str] = &["x86_64", "aarch64"];

/// Where the binary for `arch` may be under `dir`, in order.
fn candidates(dir: &Path, arch: &str) -> [PathBuf; 2] {
    [
        dir.join(format!("crops-agent-{arch}")),
        dir.join(format!("{arch}-unknown-linux-musl/agent/crops-agent")),
    ]
}

/// The response of `GET /download/agent/{arch}`.
pub(crate) async fn agent(app: &App, arch: &str) -> Result<Resp, ApiError> {
    let Some(arch) = ARCHES.iter().copied().find(|a| *a == arch) else {
        return Err(ApiError::not_found(format!(
            "no agent for {arch:?}: ask for one of {}",
            ARCHES.join(", ")
        )));
    };
    let Some(dir) = app.agent_dir.clone() else {
        return Err(ApiError::not_found(
            "this orchestrator serves no agent binaries: start it with --agent-dir DIR",
        ));
    };
    let found = smol::unblock(move || {
        candidates(&dir, arch)
            .into_iter()
            .find_map(|p| std::fs::read(&p).ok())
    })
    .await;
    let Some(body) = found else {
        tracing::warn!(
            arch,
            "agent binary requested but not found under --agent-dir"
        );
        return Err(ApiError::not_found(format!(
            "no {arch} agent under --agent-dir: put crops-agent-{arch} there"
        )));
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"crops-agent\""),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_is_found_flat_or_in_cargo_layout() {
        let dir = Path::new("/srv/agents");
        let [flat, cargo] = candidates(dir, "aarch64");
        assert_eq!(flat, Path::new("/srv/agents/crops-agent-aarch64"));
        assert_eq!(
            cargo,
            Path::new("/srv/agents/aarch64-unknown-linux-musl/agent/crops-agent")
        );
        assert!(!ARCHES.contains(&"../etc"));
    }
}
