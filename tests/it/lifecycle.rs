//! A NAS owner's first day: enrol, come online, heartbeat, ride out an
//! orchestrator crash, shut down cleanly; as root, and as an unprivileged
//! user on rootless Podman, whose worker says so and names what rootless
//! Podman cannot do on this host.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::harness::*;

fn heartbeat_at(w: &Value) -> u64 {
    w["lastHeartbeatAt"].as_u64().unwrap_or(0)
}

/// Whether this host mounts cgroup v1 (no `cgroup.controllers` at the root).
pub fn cgroup_v1() -> bool {
    !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// What the worker of an agent of `kind` must say about rootless Podman.
fn check_rootless_report(kind: AgentKind, w: &Value) {
    let limitations: Vec<&str> = w["limitations"]
        .as_array()
        .unwrap_or_else(|| panic!("limitations listed: {w}"))
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    match kind {
        AgentKind::Root => {
            assert_eq!(w["rootless"], false, "{w}");
            assert!(limitations.is_empty(), "root has no limitations: {w}");
        }
        AgentKind::Rootless => {
            assert_eq!(w["rootless"], true, "{w}");
            if cgroup_v1() {
                assert!(
                    limitations.contains(
                        &"memory, CPU and PIDs limits are ignored: rootless Podman on cgroup v1"
                    ),
                    "the ignored limits are reported: {limitations:?}"
                );
                assert!(
                    limitations.iter().any(|l| l.contains("use is unavailable")),
                    "the missing stats are reported: {limitations:?}"
                );
            }
        }
    }
}

#[test]
fn agent_enrols_reports_real_facts_and_survives_an_orchestrator_kill9() {
    first_day(AgentKind::Root);
}

#[test]
fn a_rootless_agent_enrols_reports_what_it_cannot_do_and_survives_a_kill9() {
    first_day(AgentKind::Rootless);
}

fn first_day(kind: AgentKind) {
    require_podman();
    let dir = TestDir::new("lifecycle");
    let tls = Tls::new(&dir);
    let mut orch = Orchestrator::start(&dir, &tls);
    let tenant = orch.create_tenant("attic");
    let token = orch.join_token(&tenant);

    let agent_cmd = AgentCmd::of(kind);
    let config_path = dir.path("home/.cropscode/worker.json");
    let config = agent_cmd.enroll_ok(&orch, &token, &config_path);
    let worker_id = config["workerId"]
        .as_str()
        .expect("workerId in config")
        .to_string();
    assert_eq!(config["tenantId"], tenant.as_str());
    assert_eq!(config["tenantName"], "attic");
    assert_eq!(
        config["url"],
        format!("wss://127.0.0.1:{}/v1/agent", orch.port)
    );
    assert!(config["credential"].as_str().is_some_and(|c| c.len() >= 32));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&config_path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the config holds a credential");

    let mut agent = agent_cmd.run(&config_path, dir.path("agent.log"), &[]);
    let w = orch.wait_worker(&worker_id, "the worker online with a heartbeat", |w| {
        heartbeat_at(w) > 0
    });
    assert_eq!(w["cpuCount"].as_u64(), Some(host_cpu_count()), "{w}");
    assert_eq!(w["memoryTotal"].as_u64(), Some(host_memory_total()), "{w}");
    assert_eq!(w["containerEngines"], serde_json::json!(["podman"]), "{w}");
    assert_eq!(w["platform"], "linux");
    assert_eq!(w["mode"], "byom");
    assert_eq!(w["tenantId"], tenant.as_str());
    check_rootless_report(kind, &w);
    let hb = &w["heartbeat"];
    let cpu = hb["cpuUsage"].as_f64().expect("cpuUsage");
    assert!((0.0..=100.0).contains(&cpu), "{hb}");
    let free = hb["memoryFree"].as_u64().expect("memoryFree");
    assert!(free > 0 && free <= host_memory_total(), "{hb}");
    let (total, dfree) = (hb["diskTotal"].as_u64(), hb["diskFree"].as_u64());
    assert!(
        total.is_some_and(|t| t > 0) && dfree <= total,
        "disk of Podman's storage: {hb}"
    );

    // Heartbeats advance.
    let first = heartbeat_at(&w);
    orch.wait_worker(&worker_id, "a later heartbeat", |w| heartbeat_at(w) > first);

    // kill -9 the orchestrator, start it on the same data dir and port: the
    // agent comes back by itself, same worker id, online again.
    let connected_before = w["connectedAt"].as_u64().expect("connectedAt");
    orch.kill9();
    orch.spawn();
    let after = orch
        .worker(&worker_id)
        .expect("the worker survived the restart");
    assert_eq!(after["name"], w["name"]);
    let back = orch.wait_worker(&worker_id, "the agent to reconnect after kill -9", |w| {
        w["connectedAt"].as_u64() > Some(connected_before) && heartbeat_at(w) > first
    });
    assert_eq!(back["id"], worker_id.as_str());
    assert_eq!(
        orch.workers().len(),
        1,
        "no duplicate worker after the reconnect"
    );
    let log = agent.log_text();
    assert!(
        log.contains("connecting to orchestrator"),
        "the agent logs its attempts:\n{log}"
    );

    // SIGTERM: a close frame and exit 0; the worker goes offline at once.
    agent.signal(Signal::SIGTERM);
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "agent exit status {status}");
    wait_until(
        "the worker offline after SIGTERM",
        Duration::from_secs(10),
        || orch.worker(&worker_id).filter(|w| w["status"] == "offline"),
    );
}

#[test]
fn sigint_in_backoff_exits_zero() {
    let dir = TestDir::new("sigint");
    let tls = Tls::new(&dir);
    let orch = Orchestrator::start(&dir, &tls);
    let tenant = orch.create_tenant("t");
    let token = orch.join_token(&tenant);
    let cmd = AgentCmd::native();
    let config = dir.path("worker.json");
    cmd.enroll_ok(&orch, &token, &config);
    drop(orch); // nobody to talk to: the agent sits in its backoff
    let mut agent = cmd.run(&config, dir.path("agent.log"), &[]);
    wait_until("a failed attempt", Duration::from_secs(20), || {
        agent.log_text().contains("retrying in").then_some(())
    });
    agent.signal(Signal::SIGINT);
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "agent exit status {status}");
}
