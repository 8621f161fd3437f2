//! One orchestrator with one enrolled, running agent on this machine's Podman
//! (as root, or rootless as [`crate::rootless::NAME`]: [`AgentKind`]), an
//! HTTPS client of its API, and clean-up of every container the test's
//! tenant left behind.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;
use crate::http::{Answer, Https};

pub fn test_image() -> String {
    std::env::var("CROPS_TEST_IMAGE")
        .unwrap_or_else(|_| "localhost/crops-test/busybox:latest".into())
}

pub struct Fleet {
    pub agent: Option<Agent>,
    pub orch: Orchestrator,
    pub api: Https,
    pub tenant: String,
    pub worker: String,
    pub config: std::path::PathBuf,
    pub cmd: AgentCmd,
    pub dir: TestDir,
    /// Kept alive for the certificate files the orchestrator serves.
    pub _tls: Tls,
    pub agent_env: Vec<(String, String)>,
}

impl Fleet {
    pub fn start(name: &str) -> Self {
        Self::start_as(name, AgentKind::Root)
    }

    /// As [`Fleet::start`], the agent running as `kind` says.
    pub fn start_as(name: &str, kind: AgentKind) -> Self {
        Self::start_with_env_as(name, Vec::new(), kind)
    }

    /// As [`Fleet::start`], with extra environment for the agent (and so for
    /// the Podman and git it spawns).
    pub fn start_with_env(name: &str, agent_env: Vec<(String, String)>) -> Self {
        Self::start_with_env_as(name, agent_env, AgentKind::Root)
    }

    /// As [`Fleet::start_with_env`], the agent running as `kind` says.
    pub fn start_with_env_as(
        name: &str,
        agent_env: Vec<(String, String)>,
        kind: AgentKind,
    ) -> Self {
        Self::start_with(name, agent_env, false, kind)
    }

    /// As [`Fleet::start`], the orchestrator also serving the static agent
    /// at `/download/agent/x86_64` (`serve --agent-dir`), as `make up` does.
    pub fn start_serving_agent(name: &str) -> Self {
        Self::start_with(name, Vec::new(), true, AgentKind::Root)
    }

    fn start_with(
        name: &str,
        agent_env: Vec<(String, String)>,
        serve_agent: bool,
        kind: AgentKind,
    ) -> Self {
        require_podman();
        let dir = TestDir::new(name);
        let tls = Tls::new(&dir);
        let mut serve = Vec::new();
        if serve_agent {
            let agents = dir.path("agents");
            std::fs::create_dir_all(&agents).unwrap();
            std::os::unix::fs::symlink(agent_bin(), agents.join("crops-agent-x86_64")).unwrap();
            serve = vec!["--agent-dir".into(), agents.display().to_string()];
        }
        let orch = Orchestrator::start_named(&dir, &tls, "orchestrator", &serve);
        let tenant = orch.create_tenant(name);
        let token = orch.join_token(&tenant);
        let cmd = AgentCmd::of(kind);
        let config = dir.path("agent/worker.json");
        let worker = cmd.enroll_ok(&orch, &token, &config)["workerId"]
            .as_str()
            .unwrap()
            .to_string();
        let api = Https::new(&tls.ca, orch.port, &orch.admin_token);
        let mut fleet = Fleet {
            agent: None,
            orch,
            api,
            tenant,
            worker,
            config,
            cmd,
            dir,
            _tls: tls,
            agent_env,
        };
        fleet.start_agent();
        fleet
    }

    pub fn start_agent(&mut self) {
        assert!(self.agent.is_none(), "agent already running");
        let n = std::fs::read_dir(&self.dir.0).unwrap().count();
        let mut cmd = self.cmd.clone();
        cmd.env = self.agent_env.clone();
        let agent = cmd.run(&self.config, self.dir.path(&format!("agent-{n}.log")), &[]);
        self.agent = Some(agent);
        self.orch
            .wait_worker(&self.worker, "the worker online", |w| {
                w["lastHeartbeatAt"].as_u64().is_some()
            });
    }

    /// SIGKILL the agent: no goodbye, containers stay as they are.
    pub fn kill_agent(&mut self) {
        let mut agent = self.agent.take().expect("agent running");
        agent.signal(nix::sys::signal::Signal::SIGKILL);
        agent.wait_exit(Duration::from_secs(10));
    }

    pub fn agent_log(&self) -> String {
        self.agent.as_ref().map(Agent::log_text).unwrap_or_default()
    }

    pub fn orch_log(&self) -> String {
        std::fs::read_to_string(&self.orch.log).unwrap_or_default()
    }

    /// Put the tenant on the stock plan `name` (operator).
    pub fn set_plan(&self, name: &str) {
        let path = format!("/v1/tenants/{}/plan", self.tenant);
        let plan = self
            .api
            .request("PUT", &path, Some(json!({ "name": name })));
        assert_eq!(plan.status, 200, "{plan:?}");
    }

    /// POST /v1/containers for this tenant and worker; `extra` adds or overrides fields.
    pub fn create(&self, name: &str, extra: Value) -> Answer {
        let mut body = json!({
            "tenantId": self.tenant,
            "workerId": self.worker,
            "name": name,
            "image": test_image(),
            "command": ["sleep", "3600"],
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        self.api.post("/v1/containers", body)
    }

    /// Create and start; returns the container's id.
    pub fn running(&self, name: &str, extra: Value) -> String {
        let a = self.create(name, extra);
        assert_eq!(a.status, 201, "{a:?}");
        let id = a.body["id"].as_str().unwrap().to_string();
        let s = self
            .api
            .post(&format!("/v1/containers/{id}/start"), json!({}));
        assert_eq!(s.status, 200, "{s:?}");
        id
    }

    pub fn exec(&self, id: &str, argv: &[&str]) -> Answer {
        self.api.post(
            &format!("/v1/containers/{id}/exec"),
            json!({ "command": argv }),
        )
    }

    /// The managed containers Podman itself holds for this tenant.
    pub fn podman_ids(&self, container_id: &str) -> Vec<String> {
        lines(
            self.cmd.podman(),
            &[
                "ps",
                "-aq",
                "--filter",
                &format!("label=crops.container-id={container_id}"),
            ],
        )
    }

    /// `podman inspect` of one container on the agent's Podman, as JSON.
    pub fn inspect(&self, engine_or_name: &str) -> Value {
        inspect(self.cmd.podman(), engine_or_name)
    }
}

pub fn podman_lines(args: &[&str]) -> Vec<String> {
    lines(AgentCmd::native().podman(), args)
}

fn lines(mut podman: Command, args: &[&str]) -> Vec<String> {
    podman.args(args);
    run_ok(podman)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// `podman inspect` of one container, as JSON.
pub fn podman_inspect(engine_or_name: &str) -> Value {
    inspect(AgentCmd::native().podman(), engine_or_name)
}

fn inspect(mut podman: Command, engine_or_name: &str) -> Value {
    podman.args(["inspect", engine_or_name]);
    let v: Value = serde_json::from_str(&run_ok(podman)).unwrap();
    v[0].clone()
}

impl Drop for Fleet {
    fn drop(&mut self) {
        remove_containers(&self.cmd, &self.tenant);
    }
}

/// Remove every container Podman holds for `tenant` (its managed label).
pub fn remove_tenant_containers(tenant: &str) {
    remove_containers(&AgentCmd::native(), tenant);
}

/// Remove every container `agent`'s Podman holds for `tenant`.
fn remove_containers(agent: &AgentCmd, tenant: &str) {
    let label = format!("label=crops.tenant={tenant}");
    let ids = lines(agent.podman(), &["ps", "-aq", "--filter", &label]);
    if !ids.is_empty() {
        let mut c = agent.podman();
        c.args(["rm", "-f", "-t", "0"]).args(&ids);
        let _ = c.output();
    }
}

/// Removes what a tenant left on Podman when dropped, on a panic too.
pub struct TenantCleanup(pub String);

impl Drop for TenantCleanup {
    fn drop(&mut self) {
        remove_tenant_containers(&self.0);
    }
}
