//! Start-up with a Python policy active: the orchestrator listens before
//! the stored activations are loaded (`/readyz` answers 503 until they
//! are, `/healthz` at once), a decision arriving meanwhile waits for them
//! (never the stock default standing in), and the compiled module comes
//! from the cache under the data directory: a cache file changed on disk
//! is refused and the module compiled again.
//!
//! Uses the Python example (policies/dist/examples/python.wasm, built by
//! `make policy-examples`): a missing example fails with what to run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;

/// A cold compile of the 18 MB Python component in a debug build on a
/// busy machine: minutes, not seconds.
const LOAD_DEADLINE: Duration = Duration::from_secs(900);

fn python() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/dist/examples/python.wasm");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: build the example policies first with `make policy-examples`",
            path.display()
        )
    })
}

/// The cache's artefacts (not the files being written).
fn cached(data: &Path) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(data.join("policy-cache")) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = dir
        .map(|e| e.expect("a cache entry").path())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

async fn readyz(server: &Server) -> (u16, Value) {
    http(server.addr, "GET", "/readyz", &[], None).await
}

/// Both slots of the global scope as the registry has them.
async fn registry(server: &Server) -> Vec<Value> {
    let (status, list) = server.admin("GET", "/v1/policies", None).await;
    assert_eq!(status, 200, "{list}");
    let active = list["active"].as_array().expect("active slots");
    active
        .iter()
        .map(|a| a["registry"]["module"].clone())
        .collect()
}

/// Store `bytes` as global policy `py` version 1, active in both roles,
/// as an upload and an activation would (without the upload's compile,
/// which takes longer than the harness's HTTP exchange allows in a debug
/// build).
fn stored_active(data: &Path, bytes: &[u8]) {
    let store = orchestrator::store::Store::open(data).expect("the store");
    let record = orchestrator::store::PolicyRecord {
        id: "00000000-0000-4000-8000-0000000000aa".into(),
        scope: "global".into(),
        tenant_id: None,
        name: "py".into(),
        kind: "policy".into(),
        version: 0,
        size_bytes: bytes.len() as u64,
        sha256: String::new(),
        uploaded_at: 1,
    };
    let stored = store.put_policy(record, bytes).expect("stored");
    let roles = orchestrator::policy::Role::ALL;
    store
        .activate_policy(&stored.id, &roles, "closed", 2)
        .expect("activated");
}

/// The first `/readyz` answer after a start: 503, the policies loading.
async fn loading(server: &Server) {
    let (status, body) = readyz(server).await;
    assert_eq!(status, 503, "ready before the policies were loaded: {body}");
    assert_eq!(body["error"]["code"], "not_ready", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("loading"), "{body}");
    let (status, _) = http(server.addr, "GET", "/healthz", &[], None).await;
    assert_eq!(status, 200);
}

#[test]
fn a_restart_listens_first_and_loads_the_python_policy_from_its_cache() {
    smol::block_on(async {
        let server = Server::start("policy-startup").await;
        let tenant = server.tenant("startup").await;
        let data = server.stop().await;
        stored_active(&data, &python());
        let both = [json!("global:py@1"), json!("global:py@1")];

        // Nothing cached: the orchestrator listens while it compiles.
        let server = Server::start_in(data, Options::default()).await;
        loading(&server).await;
        server.until_ready(LOAD_DEADLINE).await;
        assert_eq!(registry(&server).await, both);
        let files = cached(&server.data);
        assert_eq!(
            files.len(),
            1,
            "the load left no compiled module: {files:?}"
        );
        let good = std::fs::read(&files[0]).expect("the cache file");
        let data = server.stop().await;

        // Warm cache: an enrolment arriving at once is decided by the
        // Python module, once loaded; the cache file is left as it was.
        let server = Server::start_in(data, Options::default()).await;
        let token = server.join_token(&tenant, None).await;
        let (status, body) = server.enroll(token["token"].as_str().unwrap(), "w1").await;
        assert_eq!(status, 201, "{body}");
        let path = format!("/v1/tenants/{tenant}/decisions?limit=1");
        let (_, list) = server.admin("GET", &path, None).await;
        let admission = &list["decisions"][0]["explanation"]["admission"];
        assert_eq!(admission["module"], "global:py@1", "{list}");
        server.until_ready(LOAD_DEADLINE).await;
        assert_eq!(cached(&server.data), files);
        assert_eq!(std::fs::read(&files[0]).expect("the cache file"), good);
        let data = server.stop().await;

        // A cache file changed on disk: refused, the module compiled again
        // while the orchestrator already answers, and the file rewritten.
        let mut bad = good.clone();
        let middle = bad.len() / 2;
        bad[middle] ^= 0x55;
        std::fs::write(&files[0], &bad).expect("tamper with the cache");
        let server = Server::start_in(data, Options::default()).await;
        loading(&server).await;
        server.until_ready(LOAD_DEADLINE).await;
        assert_eq!(registry(&server).await, both);
        assert_eq!(std::fs::read(&files[0]).expect("the cache file"), good);
        server.stop().await;
    });
}
