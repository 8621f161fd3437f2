//! The Podman seam: the only code that spawns `podman`. Every call is an argv
//! array (never a shell) with stdin closed and a deadline; output is read as
//! `--format json`. A [`Runner`] trait sits in front of the process so unit
//! tests can record the argv that would run.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::FutureExt;
use protocol::container::{ContainerInfo, ContainerState, Profile};
use protocol::image::ImageInfo;
use serde::Deserialize;

/// Label every container the agent manages carries (`true`).
pub const LABEL_MANAGED: &str = "crops.managed";
/// Label naming the tenant that owns a managed container.
pub const LABEL_TENANT: &str = "crops.tenant";
/// Label holding the orchestrator's id for a managed container.
pub const LABEL_CONTAINER_ID: &str = "crops.container-id";
/// Label holding a managed container's security profile.
pub const LABEL_PROFILE: &str = "crops.profile";

/// How much of a failed call's stderr is kept.
const STDERR_TAIL: usize = 2048;
const QUICK: Duration = Duration::from_secs(15);
const LIST: Duration = Duration::from_secs(30);

/// Why a Podman call failed. `verb` is the subcommand (`ps`, `info` …).
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

/// What a finished process left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOutput {
    pub success: bool,
    /// The exit status in words (`exit status: 0`, `signal: 9 (SIGKILL)`).
    pub status: String,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// The boxed future a [`Runner`] returns.
pub type RunFuture<'a> = Pin<Box<dyn Future<Output = Result<RunOutput, PodmanError>> + Send + 'a>>;

/// Runs one program to completion. The real one spawns processes; the
/// recording one answers from a script.
pub trait Runner: Send + Sync + 'static {
    /// Run `program args…` with stdin closed, capturing stdout and stderr;
    /// kill it if it outlives `timeout`.
    fn run<'a>(&'a self, program: &'a Path, args: &'a [String], timeout: Duration)
        -> RunFuture<'a>;
}

/// The real runner: async-process, `kill_on_drop`, raced against a timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessRunner;

impl Runner for ProcessRunner {
    fn run<'a>(
        &'a self,
        program: &'a Path,
        args: &'a [String],
        timeout: Duration,
    ) -> RunFuture<'a> {
        Box::pin(async move {
            let verb = verb_of(args);
            let child = smol::process::Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| PodmanError::Spawn {
                    program: program.to_owned(),
                    verb: verb.clone(),
                    source,
                })?;
            // On timeout the `output()` future is dropped, which drops the
            // child, which `kill_on_drop` kills (and async-process reaps).
            let output = async { Ok(child.output().await) }
                .or(async {
                    smol::Timer::after(timeout).await;
                    Err(())
                })
                .await;
            match output {
                Ok(Ok(out)) => Ok(RunOutput {
                    success: out.status.success(),
                    status: out.status.to_string(),
                    stdout: out.stdout,
                    stderr: out.stderr,
                }),
                Ok(Err(source)) => Err(PodmanError::Spawn {
                    program: program.to_owned(),
                    verb,
                    source,
                }),
                Err(()) => {
                    tracing::warn!(%verb, timeout_secs = timeout.as_secs(), "podman call timed out; killed");
                    Err(PodmanError::Timeout { verb, timeout })
                }
            }
        })
    }
}

/// A fake runner that records every argv and answers from a script, for
/// unit tests of what would run.
pub struct RecordingRunner {
    calls: Mutex<Vec<Vec<String>>>,
    answers: Mutex<VecDeque<RunOutput>>,
}

impl RecordingRunner {
    /// Answers each call with the next of `answers` (then with empty success).
    pub fn new(answers: impl IntoIterator<Item = RunOutput>) -> Self {
        Self {
            calls: Mutex::new(Vec::new()),
            answers: Mutex::new(answers.into_iter().collect()),
        }
    }

    /// A successful answer printing `stdout`.
    pub fn ok(stdout: &str) -> RunOutput {
        RunOutput {
            success: true,
            status: "exit status: 0".into(),
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
        }
    }

    /// Every argv run so far (without the program).
    pub fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl Runner for RecordingRunner {
    fn run<'a>(
        &'a self,
        _program: &'a Path,
        args: &'a [String],
        _timeout: Duration,
    ) -> RunFuture<'a> {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(args.to_vec());
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

/// A handle on the Podman CLI. Cheap to clone; shared by every task of a session.
#[derive(Clone)]
pub struct Podman {
    program: PathBuf,
    runner: Arc<dyn Runner>,
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
        Self {
            program: program.into(),
            runner,
        }
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Run `podman args…`; its stdout when it exits 0.
    async fn call(&self, args: &[&str], timeout: Duration) -> Result<Vec<u8>, PodmanError> {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        tracing::debug!(program = %self.program.display(), ?args, "running podman");
        let out = self.runner.run(&self.program, &args, timeout).await?;
        if out.success {
            return Ok(out.stdout);
        }
        Err(PodmanError::Failed {
            verb: verb_of(&args),
            status: out.status,
            stderr: tail(&out.stderr),
        })
    }

    async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        args: &[&str],
        timeout: Duration,
    ) -> Result<T, PodmanError> {
        let out = self.call(args, timeout).await?;
        serde_json::from_slice(&out).map_err(|source| PodmanError::Parse {
            verb: verb_of_strs(args),
            source,
        })
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
        let filter = format!("label={LABEL_MANAGED}=true");
        let entries: Option<Vec<PsEntry>> = self
            .call_json(
                &["ps", "--all", "--format", "json", "--filter", &filter],
                LIST,
            )
            .await?;
        Ok(entries
            .unwrap_or_default()
            .into_iter()
            .filter_map(PsEntry::into_info)
            .filter(|c| tenant.is_none_or(|t| c.tenant_id == t))
            .collect())
    }

    /// Every managed container on the worker, of every tenant.
    pub async fn list_all(&self) -> Result<Vec<ContainerInfo>, PodmanError> {
        self.list_managed(None).await
    }

    /// The images on the worker.
    pub async fn images(&self) -> Result<Vec<ImageInfo>, PodmanError> {
        let entries: Option<Vec<ImageEntry>> = self
            .call_json(&["images", "--format", "json"], LIST)
            .await?;
        Ok(entries
            .unwrap_or_default()
            .into_iter()
            .map(ImageEntry::into_info)
            .collect())
    }
}

/// One element of `podman ps --format json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PsEntry {
    id: String,
    #[serde(default)]
    names: Option<Vec<String>>,
    #[serde(default)]
    image: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    created: serde_json::Value,
}

impl PsEntry {
    /// The container as the protocol describes it; `None` (logged) when a
    /// managed container lacks its id or tenant label.
    fn into_info(self) -> Option<ContainerInfo> {
        let labels = self.labels.unwrap_or_default();
        let (Some(container_id), Some(tenant_id)) =
            (labels.get(LABEL_CONTAINER_ID), labels.get(LABEL_TENANT))
        else {
            tracing::debug!(engine_id = %self.id, "managed container without id or tenant label; skipped");
            return None;
        };
        Some(ContainerInfo {
            container_id: container_id.clone(),
            tenant_id: tenant_id.clone(),
            name: self
                .names
                .unwrap_or_default()
                .into_iter()
                .next()
                .unwrap_or_default(),
            engine_id: self.id,
            image: self.image,
            state: parse_state(&self.state),
            profile: labels.get(LABEL_PROFILE).and_then(|p| {
                serde_json::from_value::<Profile>(serde_json::Value::String(p.clone())).ok()
            }),
            created_at: unix_millis(&self.created),
        })
    }
}

/// One element of `podman images --format json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImageEntry {
    id: String,
    #[serde(default)]
    names: Option<Vec<String>>,
    #[serde(default)]
    size: serde_json::Value,
    #[serde(default)]
    created: serde_json::Value,
}

impl ImageEntry {
    fn into_info(self) -> ImageInfo {
        ImageInfo {
            id: self.id,
            names: self.names.unwrap_or_default(),
            size_bytes: self.size.as_u64().unwrap_or(0),
            created_at: unix_millis(&self.created),
        }
    }
}

/// Podman's state words onto the protocol's states.
fn parse_state(state: &str) -> ContainerState {
    match state.to_ascii_lowercase().as_str() {
        "running" => ContainerState::Running,
        "created" | "configured" | "initialized" => ContainerState::Created,
        "paused" => ContainerState::Paused,
        "exited" | "stopped" | "stopping" | "dead" => ContainerState::Exited,
        "removing" => ContainerState::Removed,
        _ => ContainerState::Unknown,
    }
}

/// Podman's `Created` (Unix seconds) as Unix milliseconds; `None` if absent or odd.
fn unix_millis(v: &serde_json::Value) -> Option<u64> {
    v.as_u64()
        .filter(|s| *s > 0)
        .and_then(|s| s.checked_mul(1000))
}

fn verb_of(args: &[String]) -> String {
    args.first().cloned().unwrap_or_default()
}

fn verb_of_strs(args: &[&str]) -> String {
    args.first().map(|s| (*s).to_owned()).unwrap_or_default()
}

/// The last [`STDERR_TAIL`] bytes of `stderr`, as trimmed text.
fn tail(stderr: &[u8]) -> String {
    let start = stderr.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&stderr[start..]).trim().to_owned()
}

#[cfg(test)]
mod tests;
