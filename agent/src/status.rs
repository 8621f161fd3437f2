//! What the agent tells the orchestrator about its machine: the
//! `worker.register` facts, the `worker.inventory` (managed containers and
//! live terminal sessions) and each `worker.heartbeat`, gathered from
//! [`crate::sysinfo`], [`crate::podman`] and [`crate::terminal`].

use std::path::PathBuf;
use std::time::Duration;

use futures_lite::StreamExt;
use protocol::worker::{Heartbeat, Inventory, Mode, Platform, Register};
use protocol::{Body, Envelope};
use smol::channel::Sender;
use smol::{Task, Timer};

use crate::gateway::Gateway;
use crate::podman::Podman;
use crate::sysinfo::{self, CpuSampler};
use crate::terminal::Terminals;
use crate::usage::UsageHistory;

/// Why the machine's facts could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("reading the machine's memory: {0}")]
    Memory(#[source] sysinfo::SysinfoError),
}

/// The `worker.register` body for this machine, as of now. Engines are the
/// ones that actually ran (`podman --version` succeeded).
pub async fn register(name: &str, mode: Mode, podman: &Podman) -> Result<Register, StatusError> {
    let memory = sysinfo::memory().map_err(StatusError::Memory)?;
    let hostname = sysinfo::hostname().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the hostname");
        name.to_owned()
    });
    let container_engines = match podman.version().await {
        Ok(version) => {
            tracing::info!(%version, program = %podman.program().display(), "found podman");
            vec!["podman".to_owned()]
        }
        Err(e) => {
            tracing::warn!(error = %e, "podman is not usable; registering without a container engine");
            Vec::new()
        }
    };
    Ok(Register {
        protocol_version: protocol::PROTOCOL_VERSION,
        name: name.to_owned(),
        hostname,
        platform: Platform::Linux,
        arch: Some(std::env::consts::ARCH.to_owned()),
        cpu_count: sysinfo::cpu_count().clamp(1, 4096),
        memory_total: memory.total,
        container_engines,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        mode,
        // Settings, not facts: the session fills them in.
        labels: Default::default(),
        security_floor: None,
        rootless: false,
        limitations: Vec::new(),
    })
}

/// Produces heartbeats for one connection: owns the CPU sampler (so each
/// heartbeat's `cpuUsage` covers the time since the previous one) and the
/// storage path looked up once per connection.
#[derive(Debug)]
pub struct HeartbeatSource {
    podman: Podman,
    cpu: CpuSampler,
    /// Podman's `graphRoot`, whose filesystem `diskTotal`/`diskFree` describe.
    storage: Option<PathBuf>,
    /// The `memoryTotal` registered; `memoryFree` never exceeds it.
    memory_total: u64,
    /// This connection's path (`crate::gateway`), in every heartbeat.
    pub gateway: Option<Gateway>,
}

impl HeartbeatSource {
    /// Look up Podman's storage once; `cpu` measures from when it was started.
    pub async fn new(podman: Podman, cpu: CpuSampler, memory_total: u64) -> Self {
        let storage = match podman.graph_root().await {
            Ok(path) => Some(path),
            Err(e) => {
                tracing::warn!(error = %e, "cannot find podman's storage; heartbeats carry no disk figures");
                None
            }
        };
        Self {
            podman,
            cpu,
            storage,
            memory_total,
            gateway: None,
        }
    }

    /// One heartbeat, as of now. Facts that cannot be read are reported as
    /// zero or left out (and logged), never invented.
    pub async fn sample(&mut self) -> Heartbeat {
        let cpu_usage = self.cpu.sample();
        let memory_free = match sysinfo::memory() {
            Ok(m) => m.available.min(self.memory_total),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read free memory");
                0
            }
        };
        let disk = self.storage.as_deref().and_then(|path| {
            sysinfo::disk(path)
                .inspect_err(|e| tracing::warn!(error = %e, "cannot read disk space"))
                .ok()
        });
        let containers_running = match self.podman.running_count().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot count running containers");
                0
            }
        };
        Heartbeat {
            cpu_usage,
            memory_free,
            disk_total: disk.map(|d| d.total),
            disk_free: disk.map(|d| d.free),
            containers_running,
            gateway_status: self.gateway.as_ref().map(|g| g.status.to_owned()),
            gateway_status_detail: self.gateway.as_ref().map(|g| g.detail.clone()),
        }
    }
}

/// What one connection's reports are made of.
pub struct Reporting {
    pub podman: Podman,
    /// The sessions listed in the inventory.
    pub terminals: Terminals,
    /// Sampled after each heartbeat while containers run; `None` where
    /// `podman stats` cannot work (rootless on cgroup v1, see
    /// `crate::rootless`), so no heartbeat spends two Podman runs on it.
    pub usage: Option<UsageHistory>,
    /// This connection's path, in every heartbeat.
    pub gateway: Gateway,
    pub cpu: CpuSampler,
    pub memory_total: u64,
}

/// After `worker.accepted`: send `worker.inventory` (the managed containers
/// and the terminal sessions held, so the orchestrator can attach them
/// again), then a heartbeat at once and every `interval` after, into `out`.
/// The storage path is looked up once, here. Dropping the task stops it.
pub fn spawn_reports(r: Reporting, interval: Duration, out: Sender<Envelope>) -> Task<()> {
    let Reporting {
        podman,
        terminals,
        usage,
        gateway,
        cpu,
        memory_total,
    } = r;
    smol::spawn(async move {
        let mut source = HeartbeatSource::new(podman.clone(), cpu, memory_total).await;
        source.gateway = Some(gateway);
        match podman.list_managed(None).await {
            Ok(containers) => {
                let terminals = terminals.list();
                tracing::info!(
                    containers = containers.len(),
                    terminals = terminals.len(),
                    "sending inventory"
                );
                let inventory = Envelope::event(Body::Inventory(Inventory {
                    containers,
                    terminals,
                }));
                if out.send(inventory).await.is_err() {
                    return;
                }
            }
            // An empty inventory would claim the containers are gone: send none.
            Err(e) => {
                tracing::warn!(error = %e, "cannot list managed containers; no inventory sent")
            }
        }
        let mut tick = Timer::interval(interval);
        loop {
            let heartbeat = source.sample().await;
            tracing::debug!(?heartbeat, "heartbeat");
            let running = heartbeat.containers_running > 0;
            if out
                .send(Envelope::event(Body::Heartbeat(heartbeat)))
                .await
                .is_err()
            {
                return;
            }
            // After the heartbeat, so it is never late for the samples.
            match &usage {
                None => {}
                Some(usage) if !running => usage.clear(),
                Some(usage) => {
                    if let Err(e) = usage.sample(&podman).await {
                        tracing::debug!(error = %e, "cannot sample the containers' use");
                    }
                }
            }
            tick.next().await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::podman::RecordingRunner;
    use std::sync::Arc;

    #[test]
    fn register_carries_real_values_and_validates() {
        smol::block_on(async {
            let runner = Arc::new(RecordingRunner::new([RecordingRunner::ok(
                "podman version 4.3.1\n",
            )]));
            let podman = Podman::with_runner("podman", runner);
            let reg = register("nas", Mode::Byom, &podman).await.unwrap();
            reg.validate().unwrap();
            assert_eq!(reg.protocol_version, protocol::PROTOCOL_VERSION);
            assert_eq!(reg.container_engines, vec!["podman".to_owned()]);
            assert_eq!(reg.hostname, sysinfo::hostname().unwrap());
            assert_eq!(reg.memory_total, sysinfo::memory().unwrap().total);
            assert_eq!(reg.arch.as_deref(), Some(std::env::consts::ARCH));
        });
    }

    #[test]
    fn register_without_podman_lists_no_engine() {
        smol::block_on(async {
            let podman = Podman::new("/nonexistent/podman");
            let reg = register("nas", Mode::Fleet, &podman).await.unwrap();
            assert!(reg.container_engines.is_empty());
            assert_eq!(reg.mode, Mode::Fleet);
        });
    }

    #[test]
    fn heartbeat_reads_disk_of_the_graph_root_and_counts_running() {
        smol::block_on(async {
            let runner = Arc::new(RecordingRunner::new([
                RecordingRunner::ok(r#"{"store": {"graphRoot": "/"}}"#),
                RecordingRunner::ok("a\nb\nc\n"),
            ]));
            let podman = Podman::with_runner("podman", runner);
            let total = sysinfo::memory().unwrap().total;
            let mut source = HeartbeatSource::new(podman, CpuSampler::start(), total).await;
            let hb = source.sample().await;
            hb.validate(total).unwrap();
            assert_eq!(hb.containers_running, 3);
            assert!(hb.disk_total.is_some_and(|t| t > 0));
        });
    }
}
