//! The records the store keeps for tenants, join tokens, workers and their
//! heartbeats: plain data, serialized as JSON inside redb. Not the wire
//! types (`protocol`) nor the HTTP views (`api`): conversion happens there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: u64,
    /// The organisation owning the tenant. Records written before
    /// organisations existed read as empty and are moved into the `default`
    /// organisation when the store is opened (`Store::ensure_default_org`).
    #[serde(default)]
    pub org_id: String,
    /// The tenant's plan; records written before plans existed read as Free.
    #[serde(default)]
    pub plan: super::Plan,
    /// The tenant's default egress allow-list (`protocol::domains`):
    /// what its Standard containers reach when a create names none, and
    /// the most its Strict containers may reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_domains: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinToken {
    /// The tenant a byom worker enrolled with this token belongs to; empty
    /// for a fleet token.
    pub tenant_id: String,
    pub created_at: u64,
    pub expires_at: u64,
    pub used: bool,
    /// Set on an operator's fleet token: enrolment makes a fleet worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<super::FleetEnrolment>,
}

/// The system facts of the last `worker.register`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterInfo {
    pub protocol_version: u32,
    pub platform: String,
    pub arch: Option<String>,
    pub cpu_count: u32,
    pub memory_total: u64,
    pub container_engines: Vec<String>,
    pub agent_version: String,
    pub mode: String,
    /// The operator's labels for the machine (agent `--label`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The weakest profile the agent runs (`open` ... `offline`); `None`
    /// from agents that predate the field, which means `open`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_floor: Option<String>,
    /// The agent drives rootless Podman; `false` from agents that predate
    /// the field (which ran as root or did not say).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rootless: bool,
    /// What the worker cannot do that it could as root (limits ignored,
    /// no stats), one sentence each, as the agent found it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limitations: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Worker {
    pub id: String,
    /// The tenant a byom worker enrolled for; empty for a fleet worker.
    pub tenant_id: String,
    pub name: String,
    pub hostname: Option<String>,
    /// SHA-256 of the credential, hex.
    pub credential_hash: String,
    pub revoked: bool,
    pub enrolled_at: u64,
    /// When the last accepted register happened.
    pub connected_at: Option<u64>,
    pub register: Option<RegisterInfo>,
    /// What enrolment made this worker (never the agent's own claim).
    /// Records written before fleet enrolment existed read as byom.
    #[serde(default)]
    pub mode: super::WorkerMode,
    /// A fleet worker's region, from its join token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A fleet worker's platform as its join token declared it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolled_platform: Option<String>,
    /// No new containers are placed here; everything else works.
    #[serde(default)]
    pub cordoned: bool,
    /// No new work of any kind; running containers stay.
    #[serde(default)]
    pub draining: bool,
    /// When the worker was deleted (it is then also revoked); kept for audit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<u64>,
    /// SHA-256 (hex) of a credential sent to the agent by a rotation whose
    /// answer is not recorded yet; accepted beside the current one, and
    /// made the only one by the agent's success reply or by its first use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_credential_hash: Option<String>,
    /// The replica and epoch of the newest registered connection
    /// (`store::replicas`); `None` before the first register.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<super::Ownership>,
}

impl Worker {
    /// The only tenant this worker may serve, or `None` for a fleet worker
    /// (shared by tenants). The mode is the enrolment's: a byom worker
    /// serves only the tenant it enrolled for, whatever it registers as.
    pub fn tenant_scope(&self) -> Option<&str> {
        match self.mode {
            super::WorkerMode::Fleet => None,
            super::WorkerMode::Byom => Some(&self.tenant_id),
        }
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatRecord {
    pub at: u64,
    pub cpu_usage: f64,
    pub memory_free: u64,
    pub disk_total: Option<u64>,
    pub disk_free: Option<u64>,
    pub containers_running: u32,
    pub gateway_status: Option<String>,
    pub gateway_status_detail: Option<String>,
}

/// A new worker as enrolment creates it.
#[derive(Debug, Clone)]
pub struct NewWorker {
    pub id: String,
    pub name: String,
    pub hostname: Option<String>,
    pub credential_hash: String,
}

/// Where a container is in its life, as the orchestrator records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    /// Committed before `container.create` was sent; its outcome is not known yet.
    Creating,
    Created,
    Running,
    Exited,
    Removed,
    /// Absent from its worker's inventory: vanished while we were not looking.
    Lost,
    /// The worker refused or failed the create (see `last_error`).
    Failed,
}

impl ContainerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Created => "created",
            Self::Running => "running",
            Self::Exited => "exited",
            Self::Removed => "removed",
            Self::Lost => "lost",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ContainerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One container the orchestrator asked for (or adopted from an inventory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// The orchestrator's id; also the container's `crops.container-id` label.
    pub id: String,
    pub tenant_id: String,
    pub worker_id: String,
    pub name: String,
    pub image: String,
    /// `open`, `standard`, `strict` or `offline`.
    pub profile: String,
    pub state: ContainerState,
    /// The engine's own id, once the worker reported it.
    pub engine_id: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
    /// The last failure a command on this container met, for humans.
    pub last_error: Option<String>,
    /// The egress allow-list the container was created with (Standard and
    /// Strict; empty otherwise, or for none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_domains: Vec<String>,
    /// The [`super::stamp`] of the last write, set by the store: orders a
    /// record's changes against a connection's accept, clock-jitter free.
    #[serde(default)]
    pub rev: u64,
}

impl ContainerRecord {
    /// Never reached the engine and counts against no plan: `lost` or
    /// `failed` without an engine id. A create of the same id makes it
    /// `creating` again, admitted like a new one
    /// ([`super::CreateOutcome::Revived`]).
    pub fn revivable(&self) -> bool {
        matches!(self.state, ContainerState::Lost | ContainerState::Failed)
            && self.engine_id.is_none()
    }
}

/// One managed container as a worker's inventory reports it, already
/// checked and converted from the wire by the agent socket.
#[derive(Debug, Clone, PartialEq)]
pub struct InventoryItem {
    pub container_id: String,
    pub tenant_id: String,
    pub engine_id: String,
    pub name: String,
    pub image: String,
    /// `None` when the engine's state is unknown: the record keeps its own.
    pub state: Option<ContainerState>,
    pub profile: Option<String>,
    pub created_at: Option<u64>,
    /// The allow-list the agent's gate enforces, checked; `None` when the
    /// entry carries none (Open, Offline, an older agent).
    pub allowed_domains: Option<Vec<String>>,
}

/// A change a reconcile made (or refused to make), for the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Reconciled {
    /// An existing record took the state the inventory reports.
    Updated {
        id: String,
        from: ContainerState,
        to: ContainerState,
    },
    /// A managed container without a record became one.
    Adopted { id: String, state: ContainerState },
    /// A record of this worker absent from its inventory.
    Lost { id: String, from: ContainerState },
    /// An inventory entry left alone, and why.
    Skipped { id: String, reason: String },
}
