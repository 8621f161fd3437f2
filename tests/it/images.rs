//! Images on a worker: listed, and built offline from a Containerfile that
//! starts FROM the local test image, with progress.

use serde_json::json;

use crate::fleet::*;

#[test]
fn images_are_listed_and_built_offline_with_progress() {
    let f = Fleet::start("images");
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
    let cleanup = Cleanup(tag.clone());
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

struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("podman")
            .args(["rmi", "-f", &self.0])
            .env("CONTAINERS_CONF", crate::harness::containers_conf())
            .output();
    }
}
