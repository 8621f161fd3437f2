//! What the README tells an operator to export works for both binaries:
//! `CROPS_URL` is the API's https base URL to the CLI and to the agent (which
//! derives its socket URL as `enroll` does), `CROPS_CA_FILE` is the CLI's CA
//! for an orchestrator with a private CA, and a URL the agent cannot use
//! stops it at start with the reason instead of failing every attempt.

use std::process::Command;
use std::time::Duration;

use crate::harness::*;

/// The CLI with nothing but the README's exports (no flags).
fn cli_from_env(orch: &Orchestrator, ca: Option<&std::path::Path>, args: &[&str]) -> Command {
    let mut cmd = Command::new(orchestrator_bin());
    cmd.args(args)
        .env("CROPS_URL", &orch.url)
        .env("CROPS_ADMIN_TOKEN", &orch.admin_token)
        .env_remove("CROPS_CA_FILE")
        .env("NO_COLOR", "1");
    if let Some(ca) = ca {
        cmd.env("CROPS_CA_FILE", ca);
    }
    cmd
}

#[test]
fn the_cli_trusts_the_ca_named_by_crops_ca_file() {
    let dir = TestDir::new("ca-env");
    let tls = Tls::new(&dir);
    let orch = Orchestrator::start(&dir, &tls);
    let id = run_ok(cli_from_env(
        &orch,
        Some(&tls.ca),
        &["tenant", "create", "--name", "from-env"],
    ));
    assert!(!id.trim().is_empty(), "a tenant id");
    // Without it, the private CA is (rightly) not trusted.
    let mut cmd = cli_from_env(&orch, None, &["tenant", "list"]);
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{}", describe(&cmd, &out));
}

#[test]
fn the_agent_takes_the_https_base_url_from_crops_url() {
    require_podman();
    let dir = TestDir::new("url-env");
    let tls = Tls::new(&dir);
    let orch = Orchestrator::start(&dir, &tls);
    let tenant = orch.create_tenant("t");
    let token = orch.join_token(&tenant);
    let config = dir.path("worker.json");
    let id = AgentCmd::native().enroll_ok(&orch, &token, &config)["workerId"]
        .as_str()
        .unwrap()
        .to_string();
    // The config holds the socket URL; the environment overrides it with
    // the base URL the CLI uses (trailing slash and all).
    let cmd = AgentCmd {
        env: vec![("CROPS_URL".into(), format!("{}/", orch.url))],
        ..AgentCmd::native()
    };
    let agent = cmd.run(&config, dir.path("agent.log"), &[]);
    orch.wait_worker(&id, "the worker online through the base URL", |_| true);
    let log = agent.log_text();
    let socket = format!("url={}/v1/agent", orch.url.replace("https://", "wss://"));
    assert!(log.contains(&socket), "dials the derived socket:\n{log}");
    assert!(!log.contains("not supported"), "{log}");
}

#[test]
fn the_agent_refuses_a_url_it_cannot_use_at_start() {
    let dir = TestDir::new("url-bad");
    let config = dir.path("none.json");
    for url in ["https://127.0.0.1:1/api", "ftp://127.0.0.1:1"] {
        let cmd = AgentCmd {
            env: vec![
                ("CROPS_URL".into(), url.into()),
                ("CROPS_CREDENTIAL".into(), "crops_wkr_unused".into()),
            ],
            ..AgentCmd::native()
        };
        let log = dir.path("agent.log");
        let mut agent = cmd.run(&config, log.clone(), &[]);
        let status = agent.wait_exit(Duration::from_secs(20));
        assert!(!status.success(), "{url}: {status:?}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains(url) && text.contains("bad URL"),
            "{url}: the reason is printed:\n{text}"
        );
    }
}
