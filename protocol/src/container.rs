//! Container commands: create, setup, start, stop, remove, list, list-all
//! and stats, with their results.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A container's security profile (SPEC "Security profiles"), weakest first:
/// the derived order is the strength order a worker's floor compares with.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Open,
    #[default]
    Standard,
    Strict,
    Offline,
}

impl Profile {
    /// The wire name: `open`, `standard`, `strict` or `offline`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Standard => "standard",
            Self::Strict => "strict",
            Self::Offline => "offline",
        }
    }
}

/// The lifecycle state of a container as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Exited,
    Removed,
    #[serde(other)]
    Unknown,
}

/// `container.create`: create (not start) a container from a local image.
///
/// Idempotent on `containerId`: a create retried after a reconnect finds the
/// container already carrying that id in its labels and returns it with
/// `created: false`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerCreate {
    /// The orchestrator's id for the container (a UUID); also its label.
    pub container_id: String,
    pub tenant_id: String,
    /// Engine name: `[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}`.
    pub name: String,
    /// Image reference present on the worker.
    pub image: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Extra labels; keys starting with `crops.` are reserved.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The command to run instead of the image's default, as argv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Mount the worker-side workspace directory at `/workspace`.
    #[serde(default = "yes")]
    pub workspace: bool,
    #[serde(default)]
    pub profile: Profile,
    /// The domains a Standard or Strict container may reach
    /// ([`crate::domains`]), as the orchestrator resolved them from the
    /// request and the tenant's default. Absent or empty: none. Ignored
    /// under Open (everything) and Offline (nothing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_domains: Vec<String>,
}

fn yes() -> bool {
    true
}

/// Result of `container.create`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerCreated {
    pub container: ContainerInfo,
    /// False when the container already existed (a retried create).
    pub created: bool,
}

/// `container.setup`: clone a repository into the workspace and write task files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSetup {
    pub container_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<Repository>,
    #[serde(default)]
    pub files: Vec<TaskFile>,
}

/// A git repository to clone. The token never reaches argv or logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Repository {
    /// `https://` URL without credentials.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// A token for a private repository (sent as HTTP basic auth by git).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A file written into the workspace, relative to its root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskFile {
    /// Relative path without `..` components.
    pub path: String,
    pub content: String,
    /// Unix permission bits; default 0644.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// Result of `container.setup`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSetupDone {
    /// The commit checked out, when a repository was cloned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub files_written: u32,
}

/// `container.start` and the target of other single-container commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRef {
    pub container_id: String,
}

/// `container.stop`: SIGTERM, then SIGKILL after `timeoutSecs` (default 10).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStop {
    pub container_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
}

/// `container.remove`: remove the container (and its workspace directory).
/// `force` stops a running container first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRemove {
    pub container_id: String,
    #[serde(default)]
    pub force: bool,
}

/// Result of start, stop and remove: the container's state afterwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub container_id: String,
    pub state: ContainerState,
}

/// `container.list`: the managed containers of one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerList {
    pub tenant_id: String,
}

/// `container.list-all`, `images.list`: commands without parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {}

/// Result of `container.list` and `container.list-all`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerListing {
    pub containers: Vec<ContainerInfo>,
}

/// What the agent knows of one managed container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInfo {
    pub container_id: String,
    pub tenant_id: String,
    /// The engine's own id.
    pub engine_id: String,
    pub name: String,
    pub image: String,
    pub state: ContainerState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// Creation time, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<u64>,
    /// The allow-list its egress gate enforces (Standard and Strict); absent
    /// for Open and Offline, and from agents that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_domains: Option<Vec<String>>,
}

/// `container.stats`: resource use of one container, or of every managed one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatsRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

/// Result of `container.stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatsList {
    pub stats: Vec<ContainerStats>,
}

/// Resource use of one running container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    pub container_id: String,
    /// Percent of one core (may exceed 100 on several cores).
    pub cpu_percent: f64,
    pub memory_used: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<u64>,
    /// Bytes in the container's writable layer (the workspace is not counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_used: Option<u64>,
    pub pids: u32,
    /// The agent's samples of the last minutes, oldest first: one per
    /// heartbeat while the container runs (absent from older agents).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<UsageSample>,
}

/// One sample of a running container's use, taken at a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageSample {
    /// Unix milliseconds, the agent's clock.
    pub at: u64,
    /// Percent of one core.
    pub cpu_percent: f64,
    pub memory_used: u64,
}
