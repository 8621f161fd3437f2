//! Join tokens work once; wrong and revoked credentials are refused with a
//! reason, and the agent backs off instead of hammering the orchestrator.

use std::time::Duration;

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

/// The least time four refused attempts can span: 1 + 2 + 4 s of backoff,
/// each shortened by at most 20 % jitter.
const MIN_BACKOFF_1_TO_4: Duration = Duration::from_millis(5600);

/// Seconds of the day of a log line's RFC 3339 timestamp (`…T16:22:40.029Z`).
fn log_seconds(line: &str) -> Option<f64> {
    let time = line
        .split_whitespace()
        .next()?
        .split_once('T')?
        .1
        .trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// Wait until the agent has logged `n` refusals; return the time from the
/// first to the n-th, as the agent's own log timestamps tell it.
fn time_between_refusals(agent: &Agent, n: usize) -> Duration {
    let refusals = || -> Vec<f64> {
        agent
            .log_text()
            .lines()
            .filter(|l| l.contains("refused the connection"))
            .filter_map(log_seconds)
            .collect()
    };
    let times = wait_until("refused attempts", Duration::from_secs(60), || {
        let t = refusals();
        (t.len() >= n).then_some(t)
    });
    let mut secs = times[n - 1] - times[0];
    if secs < 0.0 {
        secs += 86_400.0; // the test ran across midnight
    }
    Duration::from_secs_f64(secs)
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
    // A hot loop would show four refusals within milliseconds.
    let elapsed = time_between_refusals(&agent, 4);
    assert!(
        elapsed >= MIN_BACKOFF_1_TO_4,
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
    let elapsed = time_between_refusals(&agent, 4);
    assert!(
        elapsed >= MIN_BACKOFF_1_TO_4,
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
