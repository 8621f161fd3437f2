//! Worker lifecycle messages: `worker.register`, `worker.accepted`,
//! `worker.heartbeat`, `worker.inventory`, and the credential rotation
//! command `worker.rotate-credential`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::container::{ContainerInfo, Profile};
use crate::error::Invalid;

/// The operating system family of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Linux,
    Darwin,
    Windows,
}

/// Whose machine a worker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Bring your own machine: a tenant's own box, serving only that tenant.
    Byom,
    /// A managed Greenhouse worker, shared by tenants.
    Fleet,
}

/// `worker.register` (agent -> orchestrator), the first message on every
/// connection. The field names are the product's; `protocolVersion` and
/// `arch` are ours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Register {
    /// The protocol version the agent speaks ([`crate::PROTOCOL_VERSION`]).
    pub protocol_version: u32,
    /// Worker name: the environment, then the config, then the hostname.
    pub name: String,
    /// The system hostname.
    pub hostname: String,
    pub platform: Platform,
    /// CPU architecture as Rust spells it (`x86_64`, `aarch64`, `arm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// CPU cores available to the agent.
    pub cpu_count: u32,
    /// Total RAM, bytes.
    pub memory_total: u64,
    /// Engines found by actually running them (`podman`, `docker`).
    pub container_engines: Vec<String>,
    /// The agent's own version, e.g. `0.1.0`.
    pub agent_version: String,
    pub mode: Mode,
    /// The operator's labels for this machine (`crops-agent run --label
    /// gpu=a100`), offered to placement policies. Absent means none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The weakest security profile this worker runs (its local setting,
    /// which it enforces itself). Absent means `open`: any profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_floor: Option<Profile>,
    /// The agent drives rootless Podman (it runs as a user other than
    /// root). Absent means `false`: root, or an agent predating the field.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rootless: bool,
    /// What this worker cannot do that the same box could as root, one
    /// sentence each as the agent found it at start-up (e.g. memory, CPU
    /// and PIDs limits ignored by rootless Podman on cgroup v1), shown per
    /// worker so nothing is silently dropped. Absent means none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limitations: Vec<String>,
}

/// A worker reports at most this many limitations.
pub const MAX_LIMITATIONS: usize = 16;
/// Bytes of one limitation at most.
pub const MAX_LIMITATION_LEN: usize = 256;

/// A worker has at most this many labels.
pub const MAX_WORKER_LABELS: usize = 32;

/// One worker label as `worker.register` accepts it: a label key
/// (`[a-zA-Z0-9][a-zA-Z0-9_./-]*`, up to 128 bytes) and a value of up to
/// 256 bytes without control characters.
pub fn check_label(key: &str, value: &str) -> Result<(), Invalid> {
    crate::validate::label_key(key)?;
    check_text("labels", value, 0, 256)
}

impl Register {
    /// Reject values no real machine reports, before anything is stored.
    pub fn validate(&self) -> Result<(), Invalid> {
        check_text("name", &self.name, 1, 64)?;
        check_text("hostname", &self.hostname, 1, 253)?;
        if let Some(arch) = &self.arch {
            check_text("arch", arch, 1, 32)?;
        }
        check_text("agentVersion", &self.agent_version, 1, 32)?;
        if !(1..=4096).contains(&self.cpu_count) {
            return Err(Invalid::new("cpuCount", "must be between 1 and 4096"));
        }
        if self.memory_total == 0 || self.memory_total > 1 << 50 {
            return Err(Invalid::new(
                "memoryTotal",
                "must be between 1 byte and 1 PiB",
            ));
        }
        if self.container_engines.len() > 8 {
            return Err(Invalid::new("containerEngines", "at most 8 entries"));
        }
        for engine in &self.container_engines {
            check_text("containerEngines", engine, 1, 32)?;
        }
        if self.labels.len() > MAX_WORKER_LABELS {
            return Err(Invalid::new(
                "labels",
                format!("at most {MAX_WORKER_LABELS} labels"),
            ));
        }
        for (key, value) in &self.labels {
            check_label(key, value)?;
        }
        if self.limitations.len() > MAX_LIMITATIONS {
            return Err(Invalid::new(
                "limitations",
                format!("at most {MAX_LIMITATIONS} entries"),
            ));
        }
        for limitation in &self.limitations {
            check_text("limitations", limitation, 1, MAX_LIMITATION_LEN)?;
        }
        Ok(())
    }
}

/// `worker.accepted` (orchestrator -> agent): the answer to a good register,
/// carrying the register's `requestId`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    /// The worker's id, as enrolment assigned it.
    pub worker_id: String,
    /// The version both sides now speak.
    pub protocol_version: u32,
    /// How often the agent must send `worker.heartbeat`, in seconds.
    pub heartbeat_interval_secs: u32,
    /// SHA-256 (hex) of the leaf certificate this orchestrator serves, so
    /// the agent can tell whether the certificate it was shown is that one
    /// (if not, something re-signed the traffic on the way: `gatewayStatus`
    /// `intercepted`). Absent without TLS and from older orchestrators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_sha256: Option<String>,
}

/// `worker.heartbeat` (agent -> orchestrator), every `heartbeatIntervalSecs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// Whole-machine CPU use since the previous heartbeat, 0-100.
    pub cpu_usage: f64,
    /// Memory available to new work, bytes.
    pub memory_free: u64,
    /// Size of the filesystem holding the engine's storage, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_total: Option<u64>,
    /// Free space on that filesystem, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_free: Option<u64>,
    /// Containers the engine reports running (all of them, managed or not).
    pub containers_running: u32,
    /// The worker's view of its own network path, e.g. `ok` or `intercepted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_status_detail: Option<String>,
}

impl Heartbeat {
    /// Reject impossible values. `memory_total` is the registered total.
    pub fn validate(&self, memory_total: u64) -> Result<(), Invalid> {
        if !self.cpu_usage.is_finite() || !(0.0..=100.0).contains(&self.cpu_usage) {
            return Err(Invalid::new("cpuUsage", "must be a number from 0 to 100"));
        }
        if self.memory_free > memory_total {
            return Err(Invalid::new(
                "memoryFree",
                "exceeds the registered memoryTotal",
            ));
        }
        match (self.disk_total, self.disk_free) {
            (Some(total), Some(free)) if free > total => {
                return Err(Invalid::new("diskFree", "exceeds diskTotal"));
            }
            (None, Some(_)) => return Err(Invalid::new("diskFree", "given without diskTotal")),
            _ => {}
        }
        if self.containers_running > 100_000 {
            return Err(Invalid::new("containersRunning", "at most 100000"));
        }
        if let Some(s) = &self.gateway_status {
            check_text("gatewayStatus", s, 1, 64)?;
        }
        if let Some(s) = &self.gateway_status_detail {
            check_text("gatewayStatusDetail", s, 0, 1024)?;
        }
        Ok(())
    }
}

/// `worker.inventory` (agent -> orchestrator), sent after every
/// `worker.accepted`: the managed containers the engine knows, so the
/// orchestrator can reconcile after a disconnect without recreating anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    pub containers: Vec<ContainerInfo>,
    /// Live terminal sessions; absent from agents that predate terminals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub terminals: Vec<crate::terminal::TerminalInfo>,
}

/// `worker.rotate-credential` (orchestrator -> agent): replace this worker's
/// credential. The agent writes it where it read its credential from (its
/// config file, atomically, mode 0600) and answers
/// `worker.rotate-credential.result` (`{}`) only once it is stored; its next
/// connection presents the new one. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotateCredential {
    /// The new credential (`crops_wkr_…`).
    pub credential: String,
}

impl std::fmt::Debug for RotateCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotateCredential")
            .field("credential", &"<redacted>")
            .finish()
    }
}

impl RotateCredential {
    /// A credential is 1 to 256 visible ASCII characters (it travels in an
    /// HTTP header).
    pub fn validate(&self) -> Result<(), Invalid> {
        let c = &self.credential;
        if c.is_empty() || c.len() > 256 || !c.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Invalid::new(
                "credential",
                "must be 1 to 256 visible ASCII characters",
            ));
        }
        Ok(())
    }
}

/// A printable, bounded string: no control characters, `min..=max` bytes.
pub(crate) fn check_text(
    field: &'static str,
    s: &str,
    min: usize,
    max: usize,
) -> Result<(), Invalid> {
    if s.len() < min || s.len() > max {
        return Err(Invalid::new(
            field,
            format!("must be {min} to {max} bytes long"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(Invalid::new(field, "must not contain control characters"));
    }
    Ok(())
}
