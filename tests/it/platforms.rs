//! The static binaries: fully static on x86_64, and the aarch64 build running
//! under qemu-user against a local orchestrator (still driving host Podman).

use std::process::Command;

use crate::harness::*;

fn file_says(path: &std::path::Path) -> String {
    run_ok({
        let mut c = Command::new("file");
        c.arg("-b").arg(path);
        c
    })
}

#[test]
fn the_agent_under_test_is_fully_static() {
    let what = file_says(&agent_bin());
    assert!(
        what.contains("statically linked") || what.contains("static-pie"),
        "{what}"
    );
    let what = file_says(&agent_arm64_bin());
    assert!(
        what.contains("aarch64") && what.contains("statically linked"),
        "{what}"
    );
}

#[test]
fn aarch64_agent_under_qemu_enrols_and_heartbeats() {
    require_podman();
    let dir = TestDir::new("arm64");
    let tls = Tls::new(&dir);
    let orch = Orchestrator::start(&dir, &tls);
    let tenant = orch.create_tenant("pi");
    let token = orch.join_token(&tenant);
    let cmd = AgentCmd::arm64_under_qemu();
    let config = dir.path("worker.json");
    let id = cmd.enroll_ok(&orch, &token, &config)["workerId"]
        .as_str()
        .unwrap()
        .to_string();
    let _agent = cmd.run(&config, dir.path("agent.log"), &[]);
    let w = orch.wait_worker(&id, "the emulated worker online", |w| {
        w["lastHeartbeatAt"].as_u64().is_some()
    });
    assert_eq!(w["arch"], "aarch64", "{w}");
    assert_eq!(w["containerEngines"], serde_json::json!(["podman"]), "{w}");
    assert_eq!(w["memoryTotal"].as_u64(), Some(host_memory_total()));
    let first = w["lastHeartbeatAt"].as_u64().unwrap();
    orch.wait_worker(&id, "a later heartbeat", |w| {
        w["lastHeartbeatAt"].as_u64() > Some(first)
    });
}
