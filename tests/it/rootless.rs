//! What running the agent rootless changes for a worker's owner, beyond
//! the lifecycle, container, image, setup and terminal tests that run
//! both as root and rootless: a container whose user is not root writes
//! files of the rootless user's subordinate ids into its workspace, which
//! the agent's user may not delete by itself; removing the container must
//! still free that space, as it does as root.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::fleet::Fleet;
use crate::harness::{wait_until, AgentKind};

#[test]
fn a_workspace_holding_another_users_files_is_freed_as_root() {
    workspace_is_freed(AgentKind::Root);
}

#[test]
fn a_workspace_holding_another_users_files_is_freed_rootless() {
    workspace_is_freed(AgentKind::Rootless);
}

fn workspace_is_freed(kind: AgentKind) {
    let f = Fleet::start_as("ws-owner", kind);
    // Open keeps the capabilities, so container root may chown.
    let id = f.running(
        &format!("e2e-ws-owner-{kind:?}-{}", std::process::id()),
        json!({"profile": "open"}),
    );
    // A directory only its owner, container uid 1000, may change.
    let made = f.exec(
        &id,
        &[
            "sh",
            "-c",
            "mkdir -p /workspace/build/deep && echo x > /workspace/build/deep/f \
             && chown -R 1000:1000 /workspace/build && chmod -R go-w /workspace/build \
             && stat -c %u /workspace/build/deep/f",
        ],
    );
    assert_eq!(made.body["stdout"], "1000\n", "{made:?}");

    let removed = f.api.delete(&format!("/v1/containers/{id}?force=true"));
    assert_eq!(removed.status, 200, "{removed:?}");
    let data = f.config.parent().unwrap();
    assert!(
        !data.join("workspaces").join(&id).exists(),
        "the workspace leaves its path when the remove answers"
    );
    let trash = data.join("workspaces.trash");
    wait_until(
        "the removed workspace deleted from the trash",
        Duration::from_secs(30),
        || empty(&trash).then_some(()),
    );
}

/// Whether `dir` is missing or has no entries.
fn empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}
