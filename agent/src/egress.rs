//! Egress allow-lists, enforced: what a Standard or Strict container may
//! reach is decided here, outside the container, by name.
//!
//! How it works:
//!
//! * A Standard or Strict container has **no network** but `lo`
//!   (`--network none`): no address to route from, no resolver to ask, so
//!   no raw IP, no DNS query and no UDP gets out, whatever runs inside,
//!   root included.
//! * Its only way out is the agent's **gate** ([`gate`]), an HTTP proxy
//!   on the container's own `127.0.0.1:3128`. The container's entrypoint
//!   is the agent's static executable under the name `crops-egress`
//!   ([`relay`]): it binds that port inside the container, hands the
//!   listening socket to the agent over a Unix socket the agent serves,
//!   one per container (`<data_dir>/egress/<containerId>/gate.sock`,
//!   bind-mounted with its directory read-only at `/.crops/egress`), and
//!   `exec`s the image's own entrypoint and command, which so keeps PID 1
//!   and its signals. The agent accepts on the handed socket itself: a
//!   connection is one hop from the container's client to the agent, and
//!   the agent's connection to the destination is in the host's network.
//! * The gate speaks HTTP proxy ([`proxy`]): `CONNECT host:port` for
//!   HTTPS (TLS stays end to end) and absolute-form requests for plain
//!   HTTP. It answers a name not on the container's list, or an IP
//!   address, with `403` and a body starting `crops egress:`, resolves
//!   allowed names itself, and never connects to a loopback, link-local,
//!   multicast or unspecified address (a name pointed at the host's
//!   `127.0.0.1` reaches nothing).
//! * The container's environment names the port in `HTTP_PROXY`,
//!   `HTTPS_PROXY` and their lowercase forms, with `NO_PROXY` for
//!   `localhost`. A process that kills the relay, binds the port first or
//!   ignores the variables loses its way out; it gains none: the relay is
//!   plumbing, the list is enforced by the gate.
//! * The list comes with `container.create` (the orchestrator resolves it
//!   from the request and the tenant's default) and is written next to the
//!   socket as `allow`, one pattern a line, so a restarted agent serves the
//!   gates of the containers it already has ([`Egress::restore`]), and a
//!   process in the container can read what it may reach.
//!
//! Who else may connect: the gates' directory `<data_dir>/egress` is the
//! agent's own (0700, made so again at start if an older agent left it
//! open), so no other user of the host reaches a gate's socket, whatever
//! the data dir's own mode. A container reaches its gate through the mount,
//! which does not pass through that directory: each gate's directory is
//! 0755 and its socket 0666, for whatever user the container runs as.
//!
//! A gate lives from the create to the remove; one a previous run served
//! for a container since removed behind the agent's back is closed when
//! the agent first lists its containers ([`Egress::retain`]).
//!
//! What it does not cover: clients that ignore the proxy variables
//! (BusyBox `wget` for HTTPS, for one) reach nothing; protocols other than
//! HTTP and TCP through `CONNECT` (UDP, QUIC, ICMP) reach nothing; any port
//! of an allowed name is allowed; a wildcard allows every name under it,
//! so data can be carried out in the names of queries the gate resolves
//! for allowed wildcards; an allowed name that resolves to an address on
//! the worker's own network (a NAS's LAN) is reached: the list is by name.
//! Not tested: SELinux-enforcing hosts, where the unrelabelled socket may
//! be refused to the container. Open containers use the host's network;
//! Offline ones have no gate.

pub mod gate;
mod proxy;
pub mod relay;
mod splice;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where a container sees its gate's directory.
pub const MOUNT: &str = "/.crops/egress";
/// The gate's socket in that directory.
pub const SOCKET: &str = "gate.sock";
/// The allow-list file in that directory, one pattern a line.
pub const ALLOW: &str = "allow";

/// Why a gate could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error(
        "this agent cannot serve an allow-list: it is not a static build, so it has no \
         egress relay to put in the container (run the static crops-agent)"
    )]
    NoRelay,
    #[error("data dir {path} cannot be mounted: it must not contain ':' or ','")]
    Unmountable { path: PathBuf },
    #[error("setting up the egress gate in {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The gates of this agent's containers, by container id.
#[derive(Debug)]
pub struct Egress {
    root: PathBuf,
    gates: Mutex<HashMap<String, smol::Task<()>>>,
}

impl Egress {
    /// Gates under `<data_dir>/egress`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("egress"),
            gates: Mutex::new(HashMap::new()),
        }
    }

    /// The gate directory of `container_id` (a validated id).
    pub fn dir(&self, container_id: &str) -> PathBuf {
        self.root.join(container_id)
    }

    /// Write `list` for `container_id` and serve its gate; the directory to
    /// mount at [`MOUNT`] (refused, before anything is made, when its path
    /// cannot be a `--volume` source). Serving again replaces the socket.
    pub fn open(&self, container_id: &str, list: &[String]) -> Result<PathBuf, EgressError> {
        let dir = self.dir(container_id);
        if dir.to_string_lossy().contains([':', ',']) {
            return Err(EgressError::Unmountable { path: dir });
        }
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| EgressError::Io { path, source }
        };
        self.private_root().map_err(io(&self.root))?;
        gate_dir(&dir).map_err(io(&dir))?;
        let allow = dir.join(ALLOW);
        let mut text = list.join("\n");
        text.push('\n');
        std::fs::write(&allow, text).map_err(io(&allow))?;
        self.serve(container_id, &dir, list.to_vec())?;
        Ok(dir)
    }

    fn serve(&self, container_id: &str, dir: &Path, list: Vec<String>) -> Result<(), EgressError> {
        let socket = dir.join(SOCKET);
        let io = |source| EgressError::Io {
            path: socket.clone(),
            source,
        };
        match std::fs::remove_file(&socket) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        let listener =
            smol::Async::<std::os::unix::net::UnixListener>::bind(&socket).map_err(io)?;
        // Whatever user the container's processes run as may connect.
        std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .map_err(io)?;
        let task = smol::spawn(gate::serve(
            listener,
            container_id.to_owned(),
            Arc::from(list),
        ));
        self.lock().insert(container_id.to_owned(), task);
        tracing::debug!(container_id, socket = %socket.display(), "egress gate serving");
        Ok(())
    }

    /// Stop serving `container_id`'s gate and remove its directory.
    pub fn close(&self, container_id: &str) {
        self.lock().remove(container_id);
        let dir = self.dir(container_id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove an egress gate");
            }
        }
    }

    /// Serve again every gate a previous run left (its containers outlive
    /// the agent); returns how many.
    pub fn restore(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return 0;
        };
        if let Err(e) = self.private_root() {
            tracing::warn!(dir = %self.root.display(), error = %e, "could not make the egress gates' directory private");
        }
        let mut served = 0;
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            let dir = entry.path();
            let Ok(text) = std::fs::read_to_string(dir.join(ALLOW)) else {
                continue;
            };
            let list: Vec<String> = text
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            match self.serve(&id, &dir, list) {
                Ok(()) => served += 1,
                Err(e) => {
                    tracing::warn!(container_id = %id, error = %e, "could not serve an egress gate again")
                }
            }
        }
        served
    }

    /// Close the gate of every container `keep` says is gone (removed
    /// behind the agent's back while it was down); returns how many.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> usize {
        let gone: Vec<String> = self.lock().keys().filter(|id| !keep(id)).cloned().collect();
        for id in &gone {
            self.close(id);
        }
        gone.len()
    }

    /// The gates' directory, made and kept the agent's own (0700).
    fn private_root(&self) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, smol::Task<()>>> {
        self.gates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Raise this process's soft limit of open descriptors to its hard limit
/// (as Go programs do at start): a gate connection holds two sockets and
/// two pipes, and the common soft limit of 1,024 would cap every
/// container's connections together near 170. Returns the new limit.
pub fn raise_descriptor_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).ok()?;
    }
    Some(hard.max(soft))
}

/// A gate's directory, searchable by all, whatever the umask: the
/// container's user may not be the agent's.
fn gate_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
}

#[cfg(test)]
mod tests;
