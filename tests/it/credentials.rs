//! Join tokens work once; wrong and revoked credentials are refused with a
//! reason, and the agent backs off instead of hammering the orchestrator.

use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn a_join_token_works_once() {
    let dir = TestDir::new("join-once");
    let tls = Tls::new(&dir);
    let orch = Orchestrator::start(&dir, &tls);
    let tenant = orch.create_tenant("t");
    let token = orch.join_token(&tenant);
    let cmd = AgentCmd::native();
    cmd.enroll_ok(&orch, &token, &dir.path("a.json"));

    let (c, out) = cmd.enroll(&orch, &token, &dir.path("b.json"));
    assert!(
        !out.status.success(),
        "a reused join token enrolled again:\n{}",
        describe(&c, &out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("token"),
        "the refusal says why:\n{}",
        describe(&c, &out)
    );
    assert!(
        !dir.path("b.json").exists(),
        "no config written for a refused enrolment"
    );
    assert_eq!(orch.workers().len(), 1);
}

/// Count refusals in the log until `n` are seen; return the time from the
/// first to the n-th.
fn time_between_refusals(agent: &Agent, n: usize) -> Duration {
    let count = || agent.log_text().matches("refused the connection").count();
    wait_until("a first refusal", Duration::from_secs(30), || {
        (count() >= 1).then_some(())
    });
    let first = Instant::now();
    wait_until("more refusals", Duration::from_secs(60), || {
        (count() >= n).then_some(())
    });
    first.elapsed()
}

#[test]
fn a_wrong_credential_is_refused_with_a_reason_and_backoff() {
    let dir = TestDir::new("wrong-cred");
    let tls = Tls::new(&dir);
    let orch = Orchestrator::start(&dir, &tls);
    let tenant = orch.create_tenant("t");
    let token = orch.join_token(&tenant);
    let cmd = AgentCmd::native();
    let config = dir.path("worker.json");
    cmd.enroll_ok(&orch, &token, &config);

    let agent = cmd.run(
        &config,
        dir.path("agent.log"),
        &["--credential", "crops_wkr_this_is_not_a_credential"],
    );
    // Attempts 1, 2, 3 are separated by at least 2 s and 4 s of backoff (less
    // 20 % jitter): a hot loop would show three refusals in milliseconds.
    let elapsed = time_between_refusals(&agent, 3);
    assert!(
        elapsed >= Duration::from_millis(4500),
        "refusals came {elapsed:?} apart"
    );
    let log = agent.log_text();
    assert!(log.contains("401"), "{log}");
    assert!(
        log.contains("unknown credential"),
        "the reason reaches the log:\n{log}"
    );
}

#[test]
fn a_revoked_worker_is_disconnected_and_refused() {
    require_podman();
    let dir = TestDir::new("revoked");
    let tls = Tls::new(&dir);
    let orch = Orchestrator::start(&dir, &tls);
    let tenant = orch.create_tenant("t");
    let token = orch.join_token(&tenant);
    let cmd = AgentCmd::native();
    let config = dir.path("worker.json");
    let id = cmd.enroll_ok(&orch, &token, &config)["workerId"]
        .as_str()
        .unwrap()
        .to_string();
    let agent = cmd.run(&config, dir.path("agent.log"), &[]);
    orch.wait_worker(&id, "the worker online", |_| true);

    run_ok(orch.cli(&["worker", "revoke", &id]));
    wait_until(
        "the worker offline after revocation",
        Duration::from_secs(10),
        || orch.worker(&id).filter(|w| w["status"] == "offline"),
    );
    let elapsed = time_between_refusals(&agent, 3);
    assert!(
        elapsed >= Duration::from_millis(4500),
        "refusals came {elapsed:?} apart"
    );
    let log = agent.log_text();
    assert!(
        log.contains("credential revoked"),
        "the reason reaches the log:\n{log}"
    );
    let w = orch.worker(&id).unwrap();
    assert_eq!(w["revoked"], true);
    assert_eq!(w["status"], "offline");
}
