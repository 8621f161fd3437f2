//! Images on a worker: listed, and built offline from a Containerfile that
//! starts FROM the local test image, with progress; on root's Podman and
//! on a rootless agent's own.

use serde_json::json;

use crate::fleet::*;
use crate::harness::{AgentCmd, AgentKind};

#[test]
fn images_are_listed_and_built_offline_with_progress() {
    listed_and_built(AgentKind::Root);
}

#[test]
fn images_are_listed_and_built_offline_on_rootless_podman() {
    listed_and_built(AgentKind::Rootless);
}

fn listed_and_built(kind: AgentKind) {
    let f = Fleet::start_as("images", kind);
    let listed = f.api.get(&format!("/v1/workers/{}/images", f.worker));
    assert_eq!(listed.status, 200, "{listed:?}");
    let names: Vec<String> = listed.body["images"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["names"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect();
    assert!(names.contains(&test_image()), "{names:?}");

    let tag = format!("localhost/crops-e2e/built:{}", std::process::id());
    let built = f.api.post(
        &format!("/v1/workers/{}/images", f.worker),
        json!({
            "tag": tag,
            "containerfile": format!("FROM {}\nRUN echo built-here > /built\n", test_image()),
        }),
    );
    let cleanup = Cleanup(f.cmd.clone(), tag.clone());
    assert_eq!(built.status, 200, "{built:?}");
    assert!(
        built.body["imageId"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{built:?}"
    );
    let log = built.body["log"].to_string();
    assert!(
        log.contains("RUN echo built-here"),
        "progress lines reach the caller: {log}"
    );

    let id = f.running("e2e-built", json!({"image": tag}));
    let cat = f.exec(&id, &["cat", "/built"]);
    assert_eq!(cat.body["stdout"], "built-here\n", "{cat:?}");

    let bad = f.api.post(
        &format!("/v1/workers/{}/images", f.worker),
        json!({"tag": tag, "containerfile": "FROM localhost/crops-test/absent:1\n"}),
    );
    assert!(
        bad.status >= 400,
        "a build from a missing base fails clearly: {bad:?}"
    );
    drop(f);
    drop(cleanup);
}

/// Removes the built image from the agent's Podman.
struct Cleanup(AgentCmd, String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.0.podman().args(["rmi", "-f", &self.1]).output();
    }
}
