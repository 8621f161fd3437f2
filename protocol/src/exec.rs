//! Exec commands: run to completion, or in the background with capture and kill.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `container.exec`: run `command` inside a running container to completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exec {
    pub container_id: String,
    /// argv; never interpreted by a shell on the worker.
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Kill the command after this long (default 60 s, at most 3600 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
}

/// Result of `container.exec`. Output is decoded as UTF-8 with invalid
/// sequences replaced, and capped at [`EXEC_OUTPUT_CAP`] bytes per stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecResult {
    /// The command's exit code; absent when it was killed by the timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    #[serde(default)]
    pub stdout_truncated: bool,
    #[serde(default)]
    pub stderr_truncated: bool,
    #[serde(default)]
    pub timed_out: bool,
}

/// Bytes of stdout and of stderr kept per exec; the rest is dropped and flagged.
pub const EXEC_OUTPUT_CAP: usize = 256 * 1024;

/// `container.exec.background`: start a command and return at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecBackground {
    pub container_id: String,
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
}

/// Result of `container.exec.background`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackgroundStarted {
    /// Names the command in capture and kill.
    pub handle: String,
}

/// `container.exec.background.capture`: output (stdout and stderr
/// interleaved) from byte `offset` on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackgroundCapture {
    pub container_id: String,
    pub handle: String,
    #[serde(default)]
    pub offset: u64,
}

/// Result of `container.exec.background.capture`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackgroundOutput {
    pub output: String,
    /// The offset to ask for next time.
    pub next_offset: u64,
    /// Bytes before this offset are no longer kept (the buffer is bounded).
    pub first_offset: u64,
    pub running: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// `container.exec.background.kill`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackgroundKill {
    pub container_id: String,
    pub handle: String,
}

/// Result of `container.exec.background.kill`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackgroundKilled {
    /// False when the command had already exited.
    pub killed: bool,
}
