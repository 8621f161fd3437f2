//! A real agent as a child process of a test: how to start it (natively,
//! under qemu-user, or as the unprivileged user of [`crate::rootless`] on
//! its rootless Podman), enrol it, run it, and its log when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::harness::*;
use super::rootless::User;

/// Which user an agent of the suite runs as, and so which Podman it drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentKind {
    /// root, on the machine's Podman.
    Root,
    /// The unprivileged [`crate::rootless::NAME`], on its rootless Podman.
    Rootless,
}

/// How to start an agent binary: natively, under qemu-user, or rootless.
#[derive(Clone)]
pub struct AgentCmd {
    pub program: PathBuf,
    pub prefix: Vec<PathBuf>,
    /// Extra environment for the agent process.
    pub env: Vec<(String, String)>,
    /// The user the agent runs as; `None`: root, as the tests run.
    pub user: Option<&'static User>,
}

impl AgentCmd {
    pub fn native() -> Self {
        AgentCmd {
            program: agent_bin(),
            prefix: vec![],
            env: vec![],
            user: None,
        }
    }

    /// The agent under test as [`crate::rootless::NAME`] (prepared on first use).
    pub fn rootless() -> Self {
        let user = crate::rootless::user();
        AgentCmd {
            program: user.agent.clone(),
            prefix: vec![],
            env: vec![],
            user: Some(user),
        }
    }

    pub fn of(kind: AgentKind) -> Self {
        match kind {
            AgentKind::Root => Self::native(),
            AgentKind::Rootless => Self::rootless(),
        }
    }

    /// `podman` as the agent's user: the Podman the agent drives.
    pub fn podman(&self) -> Command {
        match self.user {
            Some(user) => user.podman(),
            None => {
                let mut c = Command::new("podman");
                c.env("CONTAINERS_CONF", containers_conf());
                c
            }
        }
    }

    /// Create `dir` for the agent's config or data, writable by its user.
    pub fn own_dir(&self, dir: &Path) {
        match self.user {
            Some(user) => user.own_dir(dir),
            None => std::fs::create_dir_all(dir).unwrap(),
        }
    }

    pub fn arm64_under_qemu() -> Self {
        let qemu = PathBuf::from("/usr/bin/qemu-aarch64-static");
        assert!(
            qemu.is_file(),
            "qemu-aarch64-static missing (apt-get install qemu-user-static)"
        );
        AgentCmd {
            program: agent_arm64_bin(),
            prefix: vec![qemu],
            env: vec![],
            user: None,
        }
    }

    pub fn command(&self) -> Command {
        let mut cmd = match self.prefix.first() {
            Some(q) => {
                let mut c = Command::new(q);
                c.arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        cmd.env("CONTAINERS_CONF", containers_conf())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .env_remove("CROPS_CREDENTIAL")
            .env_remove("CROPS_URL")
            // A proxy of the machine's must not carry the tests' traffic:
            // the proxy tests give theirs explicitly.
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy");
        if let Some(user) = self.user {
            user.apply(&mut cmd);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    /// `crops-agent enroll`; returns the command's output, successful or not.
    pub fn enroll(&self, o: &Orchestrator, token: &str, config: &Path) -> (Command, Output) {
        if let Some(dir) = config.parent() {
            self.own_dir(dir);
        }
        let mut cmd = self.command();
        cmd.arg("enroll")
            .arg("--url")
            .arg(&o.url)
            .arg("--token")
            .arg(token)
            .arg("--config")
            .arg(config)
            .arg("--ca-file")
            .arg(&o.ca);
        let out = cmd.output().expect("spawning crops-agent enroll");
        (cmd, out)
    }

    /// Enrol and insist on success; returns the written config.
    pub fn enroll_ok(&self, o: &Orchestrator, token: &str, config: &Path) -> Value {
        let (cmd, out) = self.enroll(o, token, config);
        assert!(out.status.success(), "{}", describe(&cmd, &out));
        serde_json::from_str(&std::fs::read_to_string(config).unwrap()).unwrap()
    }

    pub fn run(&self, config: &Path, log: PathBuf, extra: &[&str]) -> Agent {
        let file = std::fs::File::create(&log).unwrap();
        let child = self
            .command()
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(extra)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawning crops-agent run");
        Agent {
            child: Some(child),
            log,
        }
    }
}

/// A running `crops-agent run`, its stdout and stderr in one log file.
pub struct Agent {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Agent {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = self.child.as_ref().expect("agent not running").id();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
    }

    /// Whether the process is still there (it has not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Wait for the agent to exit by itself within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("agent not running");
        let status = wait_until("the agent to exit", timeout, || child.try_wait().unwrap());
        self.child = None;
        status
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- agent log {} ---\n{}",
                self.log.display(),
                tail(&self.log, 8000)
            );
        }
    }
}
