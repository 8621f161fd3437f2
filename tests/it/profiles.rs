//! Security profiles as the container sees them, the worker's floor, and
//! container.setup cloning a private repository without leaking its token.

use serde_json::json;

use crate::fleet::*;
use crate::gitserve::GitServer;
use crate::harness::AgentKind;

#[test]
fn profiles_reach_podman_and_hold_inside_the_container() {
    let f = Fleet::start("profiles");

    let strict = f.running("e2e-strict", json!({"profile": "strict"}));
    let engine = f.podman_ids(&strict).remove(0);
    let host = &podman_inspect(&engine)["HostConfig"];
    assert_eq!(host["ReadonlyRootfs"], true, "{host}");
    assert_eq!(host["Memory"].as_u64(), Some(2 << 30));
    assert_eq!(host["PidsLimit"].as_u64(), Some(128));
    assert!(
        host["CapDrop"].as_array().is_some_and(|c| !c.is_empty()),
        "{host}"
    );
    let write_root = f.exec(&strict, &["touch", "/not-allowed"]);
    assert_ne!(
        write_root.body["exitCode"], 0,
        "writing to / fails under strict: {write_root:?}"
    );
    let scratch = f.exec(&strict, &["touch", "/tmp/scratch"]);
    assert_eq!(
        scratch.body["exitCode"], 0,
        "tmpfs scratch is writable: {scratch:?}"
    );
    let workspace = f.exec(&strict, &["touch", "/workspace/work"]);
    assert_eq!(
        workspace.body["exitCode"], 0,
        "the workspace stays writable: {workspace:?}"
    );
    // The pids limit holds: 200 sleepers cannot all start under a limit of 128.
    let fork = f.exec(
        &strict,
        &[
            "sh",
            "-c",
            "n=0; for i in $(seq 200); do sleep 30 & n=$((n+1)); done 2>/dev/null; echo $n",
        ],
    );
    assert!(
        fork.body["stderr"].as_str().unwrap_or("").contains("fork")
            || fork.body["stdout"]
                .as_str()
                .unwrap_or("")
                .trim()
                .parse::<u32>()
                .unwrap_or(200)
                < 200
            || fork.body["exitCode"] != 0,
        "the pids limit did not bite: {fork:?}"
    );

    let offline = f.running("e2e-offline", json!({"profile": "offline"}));
    let net = f.exec(&offline, &["ls", "/sys/class/net"]);
    assert_eq!(
        net.body["stdout"], "lo\n",
        "no network but loopback: {net:?}"
    );
    let engine = f.podman_ids(&offline).remove(0);
    assert_eq!(podman_inspect(&engine)["HostConfig"]["NetworkMode"], "none");

    let standard = f.running("e2e-standard", json!({}));
    let engine = f.podman_ids(&standard).remove(0);
    let host = &podman_inspect(&engine)["HostConfig"];
    assert_eq!(host["PidsLimit"].as_u64(), Some(256), "{host}");
    assert_eq!(host["NanoCpus"].as_u64(), Some(2_000_000_000), "{host}");
    let opts = host["SecurityOpt"].to_string();
    assert!(opts.contains("no-new-privileges"), "{opts}");
}

#[test]
fn setup_clones_a_private_repository_without_leaking_the_token() {
    setup_clones(AgentKind::Root);
}

/// Rootless, the clone and the task files belong to the agent's user,
/// which is root in the container: readable and writable there.
#[test]
fn setup_clones_a_private_repository_on_rootless_podman() {
    setup_clones(AgentKind::Rootless);
}

fn setup_clones(kind: AgentKind) {
    let token = "ghp_e2eSecretToken0123456789";
    let dir = crate::harness::TestDir::new("git");
    let tls = crate::harness::Tls::new(&dir);
    let git = GitServer::start(&dir.0, &tls, token);
    let ca = tls.ca.to_string_lossy().to_string();
    let f = Fleet::start_with_env_as("setup", vec![("GIT_SSL_CAINFO".into(), ca)], kind);
    let id = f.running("e2e-setup", json!({}));

    let setup = f.api.post(
        &format!("/v1/containers/{id}/setup"),
        json!({
            "repository": {"url": git.url, "branch": "main", "token": token},
            "files": [{"path": "tasks/TASK.md", "content": "fix the build\n"}],
        }),
    );
    assert_eq!(setup.status, 200, "{setup:?}");
    assert_eq!(setup.body["commit"], git.head.as_str());
    assert_eq!(setup.body["filesWritten"], 1);
    let readme = f.exec(&id, &["cat", "/workspace/README.md"]);
    assert_eq!(readme.body["stdout"], "hello from the repo\n", "{readme:?}");
    let task = f.exec(&id, &["cat", "/workspace/tasks/TASK.md"]);
    assert_eq!(task.body["stdout"], "fix the build\n", "{task:?}");
    // Container root owns the workspace and may change what was written.
    let owned = f.exec(
        &id,
        &["sh", "-c", "stat -c %u:%g /workspace/tasks/TASK.md && echo done >> /workspace/tasks/TASK.md && mkdir /workspace/out"],
    );
    assert_eq!(
        (
            owned.body["exitCode"].as_i64(),
            owned.body["stdout"].as_str()
        ),
        (Some(0), Some("0:0\n")),
        "{owned:?}"
    );

    assert!(
        !git.seen_auth.lock().unwrap().is_empty(),
        "the token reached the git server"
    );
    assert!(
        !f.agent_log().contains(token),
        "the token is in the agent's log"
    );
    assert!(
        !f.orch_log().contains(token),
        "the token is in the orchestrator's log"
    );

    let traversal = f.api.post(
        &format!("/v1/containers/{id}/setup"),
        json!({"files": [{"path": "../../etc/evil", "content": "x"}]}),
    );
    assert_eq!(traversal.status, 400, "{traversal:?}");

    let without = f.running("e2e-setup-2", json!({}));
    let refused = f.api.post(
        &format!("/v1/containers/{without}/setup"),
        json!({"repository": {"url": git.url}}),
    );
    assert!(
        refused.status >= 400,
        "a private repo without a token fails: {refused:?}"
    );
}
