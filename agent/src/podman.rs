//! The Podman seam: the only code that spawns `podman`. Every call is an argv
//! array (never a shell) with stdin closed, a deadline, and output capped;
//! output is read as `--format json`. A [`Runner`] trait sits in front of the
//! process so unit tests can record the argv (and environment) that would run.
//!
//! Submodules: [`process`] (the real runner, streaming children, killing
//! exec'd processes by marker), [`container`] (argv builders and the container
//! verbs), [`env`] (a request's env, through a private env file: never the
//! podman process's environment), [`profile`] (security profile -> flags),
//! `parse` (Podman's JSON).
//!
//! Concurrency: every call waits for a permit of one of two lanes
//! ([`Lane::Work`] for exec, build, create, queries; [`Lane::Lifecycle`] for
//! start, stop, remove and kill), so a worker full of slow execs still stops a
//! container at once. Calls beyond the allowance queue on the semaphore.

pub mod container;
pub mod env;
mod parse;
pub mod process;
pub mod profile;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use protocol::container::ContainerInfo;
use protocol::image::ImageInfo;
use smol::lock::Semaphore;

pub use process::ProcessRunner;

/// Label every container the agent manages carries (`true`).
pub const LABEL_MANAGED: &str = "crops.managed";
/// Label naming the tenant that owns a managed container.
pub const LABEL_TENANT: &str = "crops.tenant";
/// Label holding the orchestrator's id for a managed container.
pub const LABEL_CONTAINER_ID: &str = "crops.container-id";
/// Label holding a managed container's security profile.
pub const LABEL_PROFILE: &str = "crops.profile";
/// Label holding the allow-list a Standard or Strict container's gate
/// enforces, its patterns joined by `,` (none: empty), so an inventory
/// reports it.
pub const LABEL_ALLOWED: &str = "crops.allowed-domains";

/// How much of a failed call's stderr is kept.
const STDERR_TAIL: usize = 2048;
/// Output kept from an ordinary (JSON) call; more is an error, not a truncation.
const JSON_CAP: usize = 16 * 1024 * 1024;
const QUICK: Duration = Duration::from_secs(15);
const LIST: Duration = Duration::from_secs(30);

/// Why a Podman call failed. `verb` is the subcommand (`ps`, `create` …).
#[derive(Debug, thiserror::Error)]
pub enum PodmanError {
    #[error("cannot run {program} {verb}: {source}")]
    Spawn {
        program: PathBuf,
        verb: String,
        #[source]
        source: io::Error,
    },
    #[error("podman {verb} did not finish within {}s and was killed", .timeout.as_secs())]
    Timeout { verb: String, timeout: Duration },
    #[error("podman {verb} failed ({status}): {stderr}")]
    Failed {
        verb: String,
        /// The exit status as the OS describes it, e.g. `exit status: 125`.
        status: String,
        /// The last ~2 KiB of stderr.
        stderr: String,
    },
    #[error("cannot read the output of podman {verb}: {source}")]
    Parse {
        verb: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("podman {verb} printed something unexpected: {detail}")]
    Unexpected { verb: String, detail: String },
}

impl PodmanError {
    /// Podman's stderr says the container (or exec target) does not exist.
    pub fn is_no_such_container(&self) -> bool {
        matches!(self, Self::Failed { stderr, .. } if stderr.contains("no such container"))
    }

    /// Podman's stderr says an image is not on this worker.
    pub fn is_image_unknown(&self) -> bool {
        matches!(self, Self::Failed { stderr, .. }
            if stderr.contains("image not known") || stderr.contains("no such image"))
    }

    /// The object exists in a state that refuses the verb (e.g. removing a
    /// running container without force, exec in a stopped one).
    pub fn is_state_conflict(&self) -> bool {
        matches!(self, Self::Failed { stderr, .. }
            if stderr.contains("state improper") || stderr.contains("cannot be removed without force"))
    }
}

/// Which allowance a call draws from (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Work,
    Lifecycle,
}

/// One process to run: argv (without the program), extra environment for the
/// child (the agent's own pairs, e.g. the exec mark; never a tenant's, which
/// travel in an env file, see [`env`]), deadline and output cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    /// Bytes of stdout and of stderr kept each; the rest is read and dropped.
    pub cap: usize,
    pub lane: Lane,
}

impl Call {
    pub fn new(args: Vec<String>, timeout: Duration) -> Self {
        Self {
            args,
            env: Vec::new(),
            timeout,
            cap: JSON_CAP,
            lane: Lane::Work,
        }
    }

    pub fn lifecycle(mut self) -> Self {
        self.lane = Lane::Lifecycle;
        self
    }

    /// The subcommand, for errors and logs.
    pub fn verb(&self) -> String {
        self.args.first().cloned().unwrap_or_default()
    }
}

/// What a finished (or killed) process left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOutput {
    pub success: bool,
    /// The exit code, when the process exited (not killed by a signal).
    pub code: Option<i32>,
    /// The exit status in words (`exit status: 0`, `signal: 9 (SIGKILL)`).
    pub status: String,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// The deadline passed and the process was killed; output is what came before.
    pub timed_out: bool,
}

/// The boxed future a [`Runner`] returns.
pub type RunFuture<'a> = Pin<Box<dyn Future<Output = Result<RunOutput, PodmanError>> + Send + 'a>>;

/// Runs one program to completion. The real one spawns processes; the
/// recording one answers from a script.
pub trait Runner: Send + Sync + 'static {
    /// Run `program call.args…` with stdin closed and `call.env` added,
    /// capturing stdout and stderr up to `call.cap`; kill it if it outlives
    /// `call.timeout` (then `timed_out` is set, not an error).
    fn run<'a>(&'a self, program: &'a Path, call: &'a Call) -> RunFuture<'a>;
}

/// A fake runner that records every call and answers from a script, for
/// unit tests of what would run.
#[cfg(test)]
pub struct RecordingRunner {
    calls: std::sync::Mutex<Vec<Call>>,
    answers: std::sync::Mutex<std::collections::VecDeque<RunOutput>>,
    /// The text of each call's `--env-file`, read while the call ran.
    env_files: std::sync::Mutex<Vec<String>>,
}

#[cfg(test)]
impl RecordingRunner {
    /// Answers each call with the next of `answers` (then with empty success).
    pub fn new(answers: impl IntoIterator<Item = RunOutput>) -> Self {
        Self {
            calls: std::sync::Mutex::new(Vec::new()),
            answers: std::sync::Mutex::new(answers.into_iter().collect()),
            env_files: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A successful answer printing `stdout`.
    pub fn ok(stdout: &str) -> RunOutput {
        RunOutput {
            success: true,
            code: Some(0),
            status: "exit status: 0".into(),
            stdout: stdout.as_bytes().to_vec(),
            ..RunOutput::default()
        }
    }

    /// A failed answer: exit `code` with `stderr`.
    pub fn fail(code: i32, stderr: &str) -> RunOutput {
        RunOutput {
            success: false,
            code: Some(code),
            status: format!("exit status: {code}"),
            stderr: stderr.as_bytes().to_vec(),
            ..RunOutput::default()
        }
    }

    /// Every argv run so far (without the program).
    pub fn calls(&self) -> Vec<Vec<String>> {
        self.full_calls().into_iter().map(|c| c.args).collect()
    }

    /// Every call run so far, with environment, deadline and lane.
    pub fn full_calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// The contents of every `--env-file` passed so far, in call order
    /// (the agent removes the files once the call ends).
    pub fn env_files(&self) -> Vec<String> {
        self.env_files.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
impl Runner for RecordingRunner {
    fn run<'a>(&'a self, _program: &'a Path, call: &'a Call) -> RunFuture<'a> {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call.clone());
        }
        let file = call.args.iter().position(|a| a == "--env-file");
        if let Some(path) = file.and_then(|i| call.args.get(i + 1)) {
            let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("<{e}>"));
            if let Ok(mut files) = self.env_files.lock() {
                files.push(text);
            }
        }
        let answer = self
            .answers
            .lock()
            .ok()
            .and_then(|mut a| a.pop_front())
            .unwrap_or_else(|| Self::ok(""));
        Box::pin(async move { Ok(answer) })
    }
}

/// How many podman processes may run at once, per lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub work: usize,
    pub lifecycle: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            work: 8,
            lifecycle: 4,
        }
    }
}

/// A handle on the Podman CLI. Cheap to clone; shared by every task.
#[derive(Clone)]
pub struct Podman {
    program: PathBuf,
    runner: Arc<dyn Runner>,
    /// Environment added to every podman child (e.g. `CONTAINERS_CONF`).
    base_env: Arc<Vec<(String, String)>>,
    /// Permits for [`Lane::Work`] calls; released when the call ends.
    work: Arc<Semaphore>,
    /// Permits for [`Lane::Lifecycle`] calls.
    lifecycle: Arc<Semaphore>,
}

impl std::fmt::Debug for Podman {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Podman")
            .field("program", &self.program)
            .finish()
    }
}

impl Podman {
    /// The real CLI at `program` (a path, or a name looked up in `PATH`).
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self::with_runner(program, Arc::new(ProcessRunner))
    }

    pub fn with_runner(program: impl Into<PathBuf>, runner: Arc<dyn Runner>) -> Self {
        let limits = Limits::default();
        Self {
            program: program.into(),
            runner,
            base_env: Arc::new(Vec::new()),
            work: Arc::new(Semaphore::new(limits.work)),
            lifecycle: Arc::new(Semaphore::new(limits.lifecycle)),
        }
    }

    /// Bound concurrent podman processes per lane (at least one each).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.work = Arc::new(Semaphore::new(limits.work.max(1)));
        self.lifecycle = Arc::new(Semaphore::new(limits.lifecycle.max(1)));
        self
    }

    /// Add `env` to every podman child's environment.
    pub fn with_env(mut self, env: Vec<(String, String)>) -> Self {
        self.base_env = Arc::new(env);
        self
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    pub(crate) fn base_env(&self) -> &[(String, String)] {
        &self.base_env
    }

    /// Run one call in its lane, waiting for a permit first. Returns the
    /// output whatever the exit status; only spawn failures are errors.
    pub async fn run(&self, mut call: Call) -> Result<RunOutput, PodmanError> {
        let lane = match call.lane {
            Lane::Work => &self.work,
            Lane::Lifecycle => &self.lifecycle,
        };
        let _permit = lane.acquire().await;
        let mut env = self.base_env.to_vec();
        env.append(&mut call.env);
        call.env = env;
        tracing::debug!(program = %self.program.display(), args = ?call.args, lane = ?call.lane, "running podman");
        let started = std::time::Instant::now();
        let out = self.runner.run(&self.program, &call).await;
        tracing::debug!(verb = %call.verb(), elapsed_us = started.elapsed().as_micros(), "podman done");
        out
    }

    /// Run `call`; its stdout when it exits 0, a typed error otherwise.
    pub async fn checked(&self, call: Call) -> Result<Vec<u8>, PodmanError> {
        let verb = call.verb();
        let timeout = call.timeout;
        let out = self.run(call).await?;
        if out.timed_out {
            tracing::warn!(%verb, timeout_secs = timeout.as_secs(), "podman call timed out; killed");
            return Err(PodmanError::Timeout { verb, timeout });
        }
        if out.success {
            return Ok(out.stdout);
        }
        Err(PodmanError::Failed {
            verb,
            status: out.status,
            stderr: tail(&out.stderr),
        })
    }

    /// Run `podman args…` in the work lane; its stdout when it exits 0.
    async fn call(&self, args: &[&str], timeout: Duration) -> Result<Vec<u8>, PodmanError> {
        self.checked(Call::new(strings(args), timeout)).await
    }

    async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        args: &[&str],
        timeout: Duration,
    ) -> Result<T, PodmanError> {
        let out = self.call(args, timeout).await?;
        parse_json(args.first().copied().unwrap_or_default(), &out)
    }

    /// `podman --version`: the version number, e.g. `4.3.1`. Succeeds only
    /// when Podman actually runs.
    pub async fn version(&self) -> Result<String, PodmanError> {
        let out = self.call(&["--version"], QUICK).await?;
        let text = String::from_utf8_lossy(&out);
        text.split_whitespace()
            .last()
            .map(str::to_owned)
            .ok_or_else(|| PodmanError::Unexpected {
                verb: "--version".into(),
                detail: "empty output".into(),
            })
    }

    /// `podman unshare rm -rf -- PATH`: delete a directory (a removed
    /// workspace, an agent-made path) holding files of the rootless
    /// user's subordinate ids, as root of its user namespace.
    pub async fn unshare_remove(&self, path: &Path) -> Result<(), PodmanError> {
        let path = path.to_string_lossy();
        self.call(&["unshare", "rm", "-rf", "--", &path], LIST)
            .await
            .map(drop)
    }

    /// Where Podman keeps images and containers (`store.graphRoot`).
    pub async fn graph_root(&self) -> Result<PathBuf, PodmanError> {
        let info: serde_json::Value = self.call_json(&["info", "--format", "json"], LIST).await?;
        info.pointer("/store/graphRoot")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| PodmanError::Unexpected {
                verb: "info".into(),
                detail: "no store.graphRoot".into(),
            })
    }

    /// How many containers are running, managed or not.
    pub async fn running_count(&self) -> Result<u32, PodmanError> {
        let out = self.call(&["ps", "--quiet", "--no-trunc"], LIST).await?;
        let n = String::from_utf8_lossy(&out)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count();
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// The managed containers (label `crops.managed=true`), of one tenant or all.
    pub async fn list_managed(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<ContainerInfo>, PodmanError> {
        let mut args = vec!["ps", "--all", "--format", "json", "--filter"];
        let managed = format!("label={LABEL_MANAGED}=true");
        args.push(&managed);
        // The tenant id passed protocol validation ([a-zA-Z0-9_-]); Podman
        // filters on it, and we filter again on the parsed labels.
        let by_tenant = tenant.map(|t| format!("label={LABEL_TENANT}={t}"));
        if let Some(f) = &by_tenant {
            args.extend(["--filter", f.as_str()]);
        }
        let entries: Option<Vec<parse::PsEntry>> = self.call_json(&args, LIST).await?;
        Ok(entries
            .unwrap_or_default()
            .into_iter()
            .filter_map(parse::PsEntry::into_info)
            .filter(|c| tenant.is_none_or(|t| c.tenant_id == t))
            .collect())
    }

    /// Every managed container on the worker, of every tenant.
    pub async fn list_all(&self) -> Result<Vec<ContainerInfo>, PodmanError> {
        self.list_managed(None).await
    }

    /// The images on the worker.
    pub async fn images(&self) -> Result<Vec<ImageInfo>, PodmanError> {
        let entries: Option<Vec<parse::ImageEntry>> = self
            .call_json(&["images", "--format", "json"], LIST)
            .await?;
        Ok(entries
            .unwrap_or_default()
            .into_iter()
            .map(parse::ImageEntry::into_info)
            .collect())
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

fn parse_json<T: serde::de::DeserializeOwned>(verb: &str, out: &[u8]) -> Result<T, PodmanError> {
    serde_json::from_slice(out).map_err(|source| PodmanError::Parse {
        verb: verb.to_owned(),
        source,
    })
}

/// The last [`STDERR_TAIL`] bytes of `stderr`, as trimmed text.
pub(crate) fn tail(stderr: &[u8]) -> String {
    let start = stderr.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&stderr[start..]).trim().to_owned()
}

#[cfg(test)]
mod tests;
